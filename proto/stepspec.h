/*
 * stepspec.h - the keys of a step, declared once.
 *
 * A step is written twice in TestFarm: by the admin in master.json (a
 * builder's "steps") and by the master on the wire (build_start.steps[],
 * docs/protocol.md). Both have the same keys, kinds and caps, so they are
 * declared here once, as an X-macro list, and every reader expands it:
 * proto.c decodes and encodes build_start's steps by walking it, the
 * master's config loader (master/config/) validates configured steps by
 * walking it, and docs/config.md's table of step keys is generated from it
 * (the unit test config_doc fails when the page and the list disagree).
 * Adding a step key is adding one line here plus its handling per kind.
 *
 * TF_STEP_KEYS(X) calls, in the order steps are read, written and
 * documented:
 *
 *   X(ID, CONFIG_KEY, WIRE_KEY, KIND, MIN, MAX, DEFAULT, FIELD, DOC)
 *
 *   CONFIG_KEY  the key in master.json, or NULL for a wire-only key
 *   WIRE_KEY    the key in build_start; for TF_SK_MOD_* kinds a key of the
 *               step's "modifiers" object (in master.json the same keys
 *               sit in the step itself)
 *   KIND        how the value is read and checked (tf_step_kind_t)
 *   MIN, MAX    integers: the configuration's range; arrays: MAX is the
 *               entry cap (on the wire too)
 *   DEFAULT     the configuration's default for integers and bools (the
 *               flags' defaults are tf_step_flags_default()'s: -1 here)
 *   FIELD       the member of tf_step_spec_t, or of tf_modifiers_t for the
 *               TF_SK_MOD_* kinds (arrays: FIELD and n##FIELD)
 *   DOC         one line for docs/config.md
 *
 * The objects inside the modifiers have their keys listed the same way
 * (TF_STAT_RULE_KEYS, TF_SUCCESS_KEYS, TF_WARNINGS_KEYS below).
 */
#ifndef TF_STEPSPEC_H
#define TF_STEPSPEC_H

#include <stdint.h>

/* How a step key's value is read. The wire and the configuration agree
 * on everything but what the comments say. */
typedef enum tf_step_kind {
    TF_SK_NAME,     /* a name (names.h); required */
    TF_SK_COMMAND,  /* argv: non-empty array of strings, argv[0] non-empty;
                       in master.json also a shell string */
    TF_SK_ENV,      /* object of string -> string; master.json: names of
                       letters, digits and _; wire: no '=', not empty */
    TF_SK_WORKDIR,  /* a relative path (tf_relpath_valid), "" = here */
    TF_SK_SECONDS,  /* an integer number of seconds; wire: any u32 */
    TF_SK_FLAG,     /* true or false */
    TF_SK_BUILTIN,  /* wire only: "source" */
    TF_SK_MOD_MARKERS,  /* bool; wire default false, config default true */
    TF_SK_MOD_INFO,     /* array of at most MAX regexes */
    TF_SK_MOD_STATS,    /* array of at most MAX stat rules */
    TF_SK_MOD_SUCCESS,  /* object of pass_if / fail_if regexes */
    TF_SK_MOD_WARNINGS, /* object {regex, max}; master.json also a regex */
    TF_SK_TEST_RESULTS, /* object (TF_TEST_RESULTS_KEYS): which runner's
                           results the slave reads; read after the
                           modifiers (docs/protocol.md's order) */
    TF_SK_REGEX,        /* inside modifiers: a non-empty string of at most
                           TF_STEP_MAX_REGEX bytes; master.json: it must
                           also compile (POSIX extended) */
    TF_SK_COUNT,        /* inside modifiers: an integer >= 0 */
    TF_SK_TR_FORMAT,    /* inside test_results: a format name (testres.h) */
    TF_SK_TR_FILES,     /* inside test_results: 1..MAX relative globs, only
                           for formats that read files */
} tf_step_kind_t;

/* The caps the kinds above refer to (also in proto.h's terms). */
#define TF_STEP_MAX_RULES 32   /* = TF_PROTO_MAX_MOD_RULES */
#define TF_STEP_MAX_REGEX 1024 /* = TF_PROTO_MAX_REGEX */

#define TF_STEP_KEYS(X)                                                        \
    X(NAME, "name", "name", TF_SK_NAME, 0, 0, 0, name,                         \
      "unique within the builder")                                             \
    X(COMMAND, "command", "command", TF_SK_COMMAND, 0, 0, 0, argv,             \
      "what to run, see [command](#command)")                                  \
    X(ENV, "env", "env", TF_SK_ENV, 0, 0, 0, env,                              \
      "environment variables added for this step, see [env](#env)")            \
    X(WORKDIR, "workdir", "workdir", TF_SK_WORKDIR, 0, 0, 0, workdir,          \
      "directory to run in, relative to the builder's directory on the "       \
      "slave, see [workdir](#workdir)")                                        \
    X(TIMEOUT, "timeout", "timeout_s", TF_SK_SECONDS, 0, INT32_MAX, 1200,      \
      timeout_s,                                                               \
      "kill the step after this many seconds **without output**; 0 = never")   \
    X(MAX_TIME, "maxTime", "max_time_s", TF_SK_SECONDS, 0, INT32_MAX, 0,       \
      max_time_s, "kill the step after this many seconds in all; 0 = never")   \
    X(HALT_ON_FAILURE, "haltOnFailure", "haltOnFailure", TF_SK_FLAG, 0, 1,     \
      -1, flags.halt_on_failure,                                               \
      "a FAILURE of this step skips the later steps (except `alwaysRun` "      \
      "ones)")                                                                 \
    X(FLUNK_ON_FAILURE, "flunkOnFailure", "flunkOnFailure", TF_SK_FLAG, 0, 1,  \
      -1, flags.flunk_on_failure,                                              \
      "a FAILURE of this step makes the build FAILURE")                        \
    X(WARN_ON_FAILURE, "warnOnFailure", "warnOnFailure", TF_SK_FLAG, 0, 1, -1, \
      flags.warn_on_failure,                                                   \
      "a FAILURE of this step makes the build at least WARNINGS")              \
    X(FLUNK_ON_WARNINGS, "flunkOnWarnings", "flunkOnWarnings", TF_SK_FLAG, 0,  \
      1, -1, flags.flunk_on_warnings,                                          \
      "WARNINGS of this step make the build FAILURE")                          \
    X(WARN_ON_WARNINGS, "warnOnWarnings", "warnOnWarnings", TF_SK_FLAG, 0, 1,  \
      -1, flags.warn_on_warnings,                                              \
      "WARNINGS of this step make the build WARNINGS")                         \
    X(ALWAYS_RUN, "alwaysRun", "alwaysRun", TF_SK_FLAG, 0, 1, -1,              \
      flags.always_run, "run this step even after a halting failure")          \
    X(BUILTIN, NULL, "builtin", TF_SK_BUILTIN, 0, 0, 0, builtin,               \
      "what the slave does itself instead of running a command")               \
    X(MARKERS, "markers", "markers", TF_SK_MOD_MARKERS, 0, 1, 1, markers,      \
      "honour `@@@TF_STAT` / `@@@TF_INFO` marker lines "                       \
      "([Command modifiers](#command-modifiers))")                             \
    X(INFO, "info", "info", TF_SK_MOD_INFO, 0, TF_STEP_MAX_RULES, 0, info,     \
      "extract info text shown with the step")                                 \
    X(STATS, "stats", "stats", TF_SK_MOD_STATS, 0, TF_STEP_MAX_RULES, 0,       \
      stats, "extract named numbers, stored per build and plotted")            \
    X(SUCCESS, "success", "success", TF_SK_MOD_SUCCESS, 0, 0, 0, pass_if,      \
      "`pass_if` / `fail_if`: override the exit status")                       \
    X(WARNINGS, "warnings", "warnings", TF_SK_MOD_WARNINGS, 0, 0, 0, warnings, \
      "count warning lines; WARNINGS when over `max`")                        \
    X(TEST_RESULTS, "test_results", "test_results", TF_SK_TEST_RESULTS, 0, 0,  \
      0, test_results,                                                         \
      "which runner's results to read from the step ([Test "                   \
      "results](#test-results))")

/* A stats rule (an element of "stats"), "success", and "warnings" as an
 * object: X(CONFIG_KEY, WIRE_KEY, KIND, REQUIRED, MAX, FIELD, DOC), where
 * KIND is TF_SK_NAME, TF_SK_REGEX or TF_SK_COUNT, MAX the configuration's
 * upper bound of a count, and FIELD the member of tf_stat_rule_t (stats)
 * or of tf_modifiers_t (success, warnings). */
#define TF_STAT_RULE_KEYS(X)                                                   \
    X("name", "name", TF_SK_NAME, 0, 0, name,                                  \
      "the stat a matching line sets; without it the regex needs two groups: " \
      "the stat's name, then its value")                                       \
    X("regex", "regex", TF_SK_REGEX, 1, 0, regex,                              \
      "with a `name`, the stat's value is the number in the first group (or "  \
      "the whole match)")

#define TF_SUCCESS_KEYS(X)                                                     \
    X("pass_if", "pass_if", TF_SK_REGEX, 0, 0, pass_if,                        \
      "the step is SUCCESS if a line matched, else FAILURE")                   \
    X("fail_if", "fail_if", TF_SK_REGEX, 0, 0, fail_if,                        \
      "the step is FAILURE if any line matched")

#define TF_WARNINGS_KEYS(X)                                                    \
    X("regex", "regex", TF_SK_REGEX, 1, 0, warnings,                           \
      "the lines counted as warnings")                                         \
    X("max", "max", TF_SK_COUNT, 0, INT32_MAX, warnings_max,                   \
      "the step is WARNINGS when more lines than this matched")

/* "test_results": X(CONFIG_KEY, WIRE_KEY, KIND, REQUIRED, MAX, FIELD, DOC)
 * as above, FIELD a member of tf_test_spec_t (MAX: TF_TR_MAX_FILES). */
#define TF_TEST_RESULTS_KEYS(X)                                                \
    X("format", "format", TF_SK_TR_FORMAT, 1, 0, format,                       \
      "which runner's output: `ctest`, `gtest` (GoogleTest), `pytest`, "       \
      "`unittest` (Python), `automake` (`make check`), `tap` (TAP 12 to 14), " \
      "or `junit` (JUnit XML report files)")                                   \
    X("files", "files", TF_SK_TR_FILES, 0, TF_TR_MAX_FILES, files,             \
      "report files, relative to the step's `workdir`: required for "          \
      "`junit`; for `tap`, read these files instead of the output; for "       \
      "`automake`, `test-suite.log` files to read besides the ones the "       \
      "output names; not allowed for the other formats")

#endif
