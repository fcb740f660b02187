/*
 * testres.h - test results as data: parsers for test runners' output and
 * report files, and the collector that merges what they find per step.
 *
 * Everything here is pure C without I/O beyond the bytes handed in, so the
 * slave runs it on a step's output as it streams, the master could run it
 * on a stored log, and every parser has a fuzz driver (tests/fuzz).
 *
 * Two kinds of input:
 *
 *  - console output (ctest, GoogleTest, pytest, Python unittest, automake's
 *    `make check`, TAP): fed in pieces as the step writes them, per stream.
 *    A tf_tr_console_t splits each stream into lines (at most
 *    TF_TR_LINE_MAX bytes of a line are looked at; the rest of a longer
 *    line is skipped, never buffered), strips terminal colour codes, and
 *    hands the lines to the format's state machine together with their
 *    position in the step's log: the byte offset of the line's first byte
 *    in the concatenation of both streams (what the master stores) and its
 *    1-based line number there. Memory does not grow with the output: a
 *    200 MB log is parsed in the same few KiB.
 *  - files (JUnit XML, TAP files, automake's test-suite.log): whole buffers
 *    the caller read with its own caps.
 *
 * Parsers report through a tf_tr_emit_cb. An ATTEMPT is one run of a test;
 * a DETAIL adds what the runner printed about a test later (a failure
 * block, a summary line) to its latest attempt, or counts as its attempt
 * when the test was not seen before. The collector (tf_tr_collect_t)
 * merges both by (suite, name): a test that failed in one attempt and
 * passed in another is FLAKY (ctest --repeat until-pass, pytest
 * --reruns, --gtest_repeat). It holds at most TF_TR_MAX_TESTS tests and
 * TF_TR_MAX_HELD bytes; later new tests are counted as dropped.
 *
 * Statuses: pass, fail, skip, flaky. The runner's own word is kept as the
 * outcome ("XFAIL", "Timeout", "ERROR", ...). Expected failures map to
 * skip; an unexpected pass maps to fail where the runner fails the run for
 * it (unittest, automake, pytest strict) and to pass where it does not
 * (pytest's plain XPASS, TAP's "ok # TODO"). docs/protocol.md has the table.
 */
#ifndef TF_TESTRES_H
#define TF_TESTRES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TF_TR_MAX_NAME 1024     /* bytes of a suite or a test name */
#define TF_TR_MAX_MESSAGE 4096  /* bytes of a failure message */
#define TF_TR_MAX_OUTCOME 32    /* bytes of the runner's own word */
#define TF_TR_LINE_MAX 8192     /* bytes of a console line the parsers see */
#define TF_TR_MAX_TESTS 50000   /* distinct tests per step */
#define TF_TR_MAX_HELD (32u << 20) /* bytes the collector holds per step */
#define TF_TR_MAX_PROBLEMS 16   /* problem sentences per step */
#define TF_TR_MAX_PROBLEM 512   /* bytes of one problem sentence */
#define TF_TR_MAX_FILES 64      /* file globs of a step */
#define TF_TR_MAX_GLOB 256      /* bytes of one glob */
#define TF_TR_MAX_HINTS 16      /* report files a console names (automake) */

typedef enum {
    TF_TR_FMT_NONE = 0,
    TF_TR_FMT_CTEST,
    TF_TR_FMT_GTEST,
    TF_TR_FMT_PYTEST,
    TF_TR_FMT_UNITTEST,
    TF_TR_FMT_AUTOMAKE,
    TF_TR_FMT_TAP,
    TF_TR_FMT_JUNIT,
    TF_TR_FMT__COUNT
} tf_tr_format_t;

typedef enum {
    TF_TR_NONE = 0,
    TF_TR_PASS,
    TF_TR_FAIL,
    TF_TR_SKIP,
    TF_TR_FLAKY,
} tf_tr_status_t;

typedef enum {
    TF_TR_ATTEMPT, /* one run of the test */
    TF_TR_DETAIL,  /* more about its latest run (or its run, if unseen) */
} tf_tr_kind_t;

/* Where a result's failure output is in the step's log. */
typedef struct tf_tr_loc {
    bool has;
    uint64_t offset; /* byte offset of its first line, from 0 */
    uint64_t line;   /* line number of its first line, from 1 */
    uint64_t lines;  /* how many lines, >= 1 */
} tf_tr_loc_t;

/* One result as a parser reports it; everything borrowed for the call.
 * Strings are NUL-terminated bytes (not yet checked UTF-8). */
typedef struct tf_tr_res {
    const char *suite;   /* "" or NULL when none */
    const char *name;    /* non-empty */
    tf_tr_status_t status;
    const char *outcome; /* the runner's word, or NULL */
    int64_t duration_ms; /* -1 when unknown */
    const char *message; /* failure message, or NULL */
    tf_tr_loc_t log;
} tf_tr_res_t;

typedef void (*tf_tr_emit_cb)(void *arg, tf_tr_kind_t kind,
                              const tf_tr_res_t *r);

/* "ctest", "gtest", ...; NULL out of range. */
const char *tf_tr_format_name(tf_tr_format_t f);
/* TF_TR_FMT_NONE for an unknown name. */
tf_tr_format_t tf_tr_format_parse(const char *s);
/* Whether the format reads console output (all but junit). */
bool tf_tr_format_console(tf_tr_format_t f);
/* Whether `files` may be given for it (junit: required; tap, automake:
 * optional) */
bool tf_tr_format_files(tf_tr_format_t f);

/* "pass", "fail", "skip", "flaky"; NULL for others. */
const char *tf_tr_status_name(tf_tr_status_t s);
tf_tr_status_t tf_tr_status_parse(const char *s);

/* A file glob of a step: 1..TF_TR_MAX_GLOB bytes, relative ('/'-separated
 * components, none empty, "." or ".."), no backslash or control bytes.
 * '*', '?', '[...]' match within a component; a component "**" matches
 * any number of directories. */
bool tf_tr_glob_valid(const char *s);

/* Matches one path component against one glob component (fnmatch rules,
 * a leading '.' only matched by a leading '.'). */
bool tf_tr_glob_match(const char *pattern, const char *name);

/* ---- the collector -------------------------------------------------- */

/* A merged result, owned by the collector. Strings are valid UTF-8
 * without control characters (tab and newline allowed in message). */
typedef struct tf_tr_entry {
    char *suite;   /* "" when none */
    char *name;
    tf_tr_status_t status;
    char *outcome; /* or NULL */
    int64_t duration_ms; /* -1 unknown */
    char *message; /* or NULL */
    tf_tr_loc_t log;
    uint32_t attempts;
    uint32_t passes, failures, skips;
} tf_tr_entry_t;

typedef struct tf_tr_collect tf_tr_collect_t;

/* A new empty collector (caller frees with tf_tr_collect_free). Returns 0
 * or TF_ENOMEM. */
int tf_tr_collect_new(tf_tr_collect_t **out);
void tf_tr_collect_free(tf_tr_collect_t *c);

/* Adds a result (a tf_tr_emit_cb: arg is the collector). Out of memory or
 * over the caps, the test is counted as dropped. */
void tf_tr_collect_add(void *arg, tf_tr_kind_t kind, const tf_tr_res_t *r);

/* Records a sentence about something that went wrong (a malformed file, a
 * refused path). At most TF_TR_MAX_PROBLEMS are kept, each cut to
 * TF_TR_MAX_PROBLEM bytes and made valid UTF-8; later ones are counted. */
void tf_tr_collect_problem(tf_tr_collect_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The merged results in the order their tests were first seen. */
size_t tf_tr_collect_count(const tf_tr_collect_t *c);
const tf_tr_entry_t *tf_tr_collect_get(const tf_tr_collect_t *c, size_t i);
/* Tests not kept (over the caps or out of memory). */
uint64_t tf_tr_collect_dropped(const tf_tr_collect_t *c);
/* The problems so far; *n set to their count. */
char *const *tf_tr_collect_problems(const tf_tr_collect_t *c, size_t *n);
/* How many tests have each status. */
void tf_tr_collect_counts(const tf_tr_collect_t *c, uint64_t counts[5]);

/* ---- console parsers ------------------------------------------------ */

typedef struct tf_tr_console tf_tr_console_t;

/* A parser of fmt's console output (tf_tr_format_console(fmt)) reporting
 * to emit(arg, ...). Caller frees with tf_tr_console_free. Returns 0,
 * TF_EINVAL (not a console format) or TF_ENOMEM. */
int tf_tr_console_new(tf_tr_format_t fmt, tf_tr_emit_cb emit, void *arg,
                      tf_tr_console_t **out);

/* Reads a file's bytes rather than a step log: results get `suite_prefix`
 * (e.g. the file's path; may be NULL) before their suite and no log
 * position. Call before the first feed. Returns 0 or TF_ENOMEM. */
int tf_tr_console_file_mode(tf_tr_console_t *c, const char *suite_prefix);

/* Feeds n bytes the step wrote on stream 1 (stdout) or 2 (stderr), in the
 * order the slave read them (which is the order of the stored log). Any
 * split into calls gives the same results. */
void tf_tr_console_feed(tf_tr_console_t *c, int stream, const uint8_t *data,
                        size_t n);

/* The output is over: unterminated last lines are parsed and what the
 * parser still holds is reported. Later feeds are ignored. */
void tf_tr_console_finish(tf_tr_console_t *c);

/* Report files the output named (automake's "See tests/test-suite.log"):
 * the i-th path, relative to *dir when *dir is non-NULL (the absolute
 * directory make said it entered) or else to the step's directory. NULL
 * past the end. */
const char *tf_tr_console_hint(const tf_tr_console_t *c, size_t i,
                               const char **dir);

/* Bytes and lines seen so far (for tests and logs). */
uint64_t tf_tr_console_bytes(const tf_tr_console_t *c);

void tf_tr_console_free(tf_tr_console_t *c);

/* ---- file parsers --------------------------------------------------- */

/* Parses a JUnit XML report (len bytes; the caller caps len) and reports
 * each <testcase> as an attempt; `label` (may be NULL) names the file in
 * error sentences. Accepts the shapes JUnit, Ant, Maven surefire
 * (flakyFailure/rerunFailure), pytest, GoogleTest and ctest write.
 * Returns 0, TF_EINVAL with a sentence in err (not well-formed XML, a
 * DOCTYPE with declarations, an undefined entity, too deep; results before
 * the problem were reported) or TF_ENOMEM. */
int tf_tr_junit_parse(const char *buf, size_t len, const char *label,
                      tf_tr_emit_cb emit, void *arg, char *err,
                      size_t errlen);

/* Parses automake's test-suite.log: each section (FAIL: name, ERROR:,
 * XPASS:, SKIP:, XFAIL:) becomes a DETAIL with its text as the message.
 * Returns 0 or TF_ENOMEM. */
int tf_tr_automake_log_parse(const char *buf, size_t len, tf_tr_emit_cb emit,
                             void *arg);

#endif
