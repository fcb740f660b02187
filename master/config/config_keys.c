/*
 * config_keys.c - every key of master.json, declared once (docs/config.md
 * is generated from these rows and checked against them by the unit test
 * config_doc).
 *
 * A table is the keys of one kind of object, in the order they are read:
 * the order matters only for hooks that need what an earlier row stored
 * (builders need the slaves, a scheduler's source needs its builders).
 * A step's keys come from proto/stepspec.h, which the wire protocol reads
 * too, so a step key exists in one place for both.
 *
 * The functions here are the hooks: checks that span keys (a secret or a
 * secret file, heartbeat below lost_after_s, a branch needs a
 * repository), defaults computed from elsewhere (the public URL from
 * listen, a scheduler's source from its builders), and the few values no
 * kind describes (a step's command, a cron spec, path filters).
 */
#include "config/config_int.h"

#include <errno.h>
#include <inttypes.h>
#include <regex.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "buf.h"
#include "cron.h"
#include "crypto.h"
#include "email.h"
#include "names.h"
#include "tf_err.h"

#define CFG_PATH_MAX 1024
#define CFG_REPO_RULE                                                          \
    "a repository is a git URL or an absolute path without spaces, at most "   \
    "1024 bytes, not starting with '-'"
#define CFG_BRANCH_RULE                                                        \
    "letters, digits, '.', '_', '-' and '/', at most 200 bytes, no \"..\""

/* Row helpers: a field, an integer field, an array and its count. */
#define CFG_F(type, field) .off = offsetof(type, field)
#define CFG_I(type, field, lo, hi, d)                                          \
    .kind = CFG_INT, .off = offsetof(type, field),                             \
    .size = sizeof(((type *)0)->field), .min = (lo), .max = (hi), .def = (d)
#define CFG_A(type, field, count)                                              \
    .off = offsetof(type, field), .noff = offsetof(type, count)
#define CFG_TABLE(docname, rows, type)                                         \
    .name = (docname), .keys = (rows),                                         \
    .nkeys = sizeof(rows) / sizeof((rows)[0]), .size = sizeof(type)
#define CFG_FITS(rows)                                                         \
    _Static_assert(sizeof(rows) / sizeof((rows)[0]) <= CFG_MAX_ROWS,           \
                   #rows " has more rows than CFG_MAX_ROWS")

static char *cfg_buf_take(tf_buf_t *b)
{
    char *s = (char *)tf_buf_steal(b, NULL);
    return s ? s : strdup("");
}

/* ------------------------------------------------------------------ */
/* Steps (proto/stepspec.h) and their command modifiers                */
/* ------------------------------------------------------------------ */

static bool cfg_env_name_valid(const char *s)
{
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return false;
    for (s++; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
              (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* "command": an array of strings, or a shell string run as
 * ["/bin/sh", "-c", STRING]. */
static int cfg_command(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *cmd,
                       json_t *parent, const cfg_key_t *k, void *out)
{
    tf_cfg_step_t *st = out;
    static const char *const sh[] = {"/bin/sh", "-c"};
    (void)parent;
    (void)k;
    if (json_is_array(cmd))
        return cfg_argv_array(ctx, loc, cmd, &st->spec.argv, &st->spec.argc);
    if (!json_is_string(cmd))
        return cfg_bad(ctx, loc, "expected a string or an array of strings");
    if (json_string_length(cmd) == 0)
        return cfg_bad(ctx, loc, "must not be empty");
    char **argv = calloc(4, sizeof(*argv));
    if (!argv)
        return TF_ENOMEM;
    argv[0] = strdup(sh[0]);
    argv[1] = strdup(sh[1]);
    argv[2] = strdup(json_string_value(cmd));
    if (!argv[0] || !argv[1] || !argv[2]) {
        cfg_strv_free(argv, 3);
        return TF_ENOMEM;
    }
    st->spec.argv = argv;
    st->spec.argc = 3;
    st->shell = true;
    return CFG_OK;
}

/* "warnings": a regex, or an object read with the warnings table. */
static int cfg_warnings(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                        json_t *parent, const cfg_key_t *k, void *out)
{
    tf_modifiers_t *m = cfg_base(k, out);
    const char *re = NULL;
    int rc;
    (void)parent;
    if (json_is_string(v)) {
        rc = cfg_regex_value(ctx, loc, v, &re, NULL);
        if (rc == CFG_OK && !(m->warnings = strdup(re)))
            return TF_ENOMEM;
        return rc;
    }
    if (!json_is_object(v))
        return cfg_bad(ctx, loc, "expected a regular expression or an object "
                       "with \"regex\" and \"max\"");
    rc = cfg_walk(ctx, loc, v, k->sub, m);
    return rc < 0 ? rc : CFG_OK;
}

/* Without a "name", a stats rule's regex says the name itself: it needs
 * two groups. */
static int cfg_stat_end(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                        void *out, const int *st);
/* "success" says at least one of its keys. */
static int cfg_success_end(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                           void *out, const int *st)
{
    (void)out;
    (void)st;
    if (!obj || json_object_get(obj, "pass_if") ||
        json_object_get(obj, "fail_if"))
        return 0;
    int rc = cfg_bad(ctx, loc, "give \"pass_if\", \"fail_if\" or both");
    return rc < 0 ? rc : 0;
}

/* The rows of the objects inside the modifiers, from stepspec.h. */
#define CFG_SUB_TF_SK_NAME(T, CK, REQ, MAX, FIELD, DOC)                        \
    {.name = CK, .kind = CFG_NAME, .flags = (REQ) ? CFG_REQUIRED : 0,          \
     CFG_F(T, FIELD), .doc = DOC},
#define CFG_SUB_TF_SK_REGEX(T, CK, REQ, MAX, FIELD, DOC)                       \
    {.name = CK, .kind = CFG_REGEX, .flags = (REQ) ? CFG_REQUIRED : 0,         \
     CFG_F(T, FIELD), .doc = DOC},
#define CFG_SUB_TF_SK_COUNT(T, CK, REQ, MAX, FIELD, DOC)                       \
    {.name = CK, .flags = (REQ) ? CFG_REQUIRED : 0,                            \
     CFG_I(T, FIELD, 0, MAX, 0), .doc = DOC},
#define CFG_STAT_ROW(CK, WK, KIND, REQ, MAX, FIELD, DOC)                       \
    CFG_SUB_##KIND(tf_stat_rule_t, CK, REQ, MAX, FIELD, DOC)
#define CFG_MOD_ROW(CK, WK, KIND, REQ, MAX, FIELD, DOC)                        \
    CFG_SUB_##KIND(tf_modifiers_t, CK, REQ, MAX, FIELD, DOC)

static const cfg_key_t cfg_stat_keys[] = {TF_STAT_RULE_KEYS(CFG_STAT_ROW)};
static const cfg_table_t cfg_stat_table = {
    CFG_TABLE("steps.stats", cfg_stat_keys, tf_stat_rule_t),
    .end = cfg_stat_end,
};
static const cfg_key_t cfg_success_keys[] = {TF_SUCCESS_KEYS(CFG_MOD_ROW)};
static const cfg_table_t cfg_success_table = {
    CFG_TABLE("steps.success", cfg_success_keys, tf_modifiers_t),
    .end = cfg_success_end,
};
static const cfg_key_t cfg_warnings_keys[] = {TF_WARNINGS_KEYS(CFG_MOD_ROW)};
static const cfg_table_t cfg_warnings_table = {
    CFG_TABLE("steps.warnings", cfg_warnings_keys, tf_modifiers_t),
};

static int cfg_stat_end(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                        void *out, const int *st)
{
    tf_stat_rule_t *r = out;
    cfg_loc_t rl = CFG_MEMBER(loc, "regex");
    regex_t re;
    int rc;
    if (cfg_status(&cfg_stat_table, st, "regex") != CFG_OK ||
        cfg_status(&cfg_stat_table, st, "name") != CFG_ABSENT)
        return 0;
    (void)obj;
    rc = regcomp(&re, r->regex, REG_EXTENDED);
    if (rc == REG_ESPACE)
        return TF_ENOMEM;
    if (rc != 0)
        return 0; /* compiled once already: cannot happen */
    size_t groups = re.re_nsub;
    regfree(&re);
    if (groups >= 2)
        return 0;
    rc = cfg_bad(ctx, &rl, "without a \"name\", the regex needs two groups: "
                 "the stat's name, then its value");
    return rc < 0 ? rc : 0;
}

/* "test_results" (docs/config.md, "Test results"): which parser reads the
 * step's test output. The protocol's rules (proto.c reads the same rows),
 * checked here so that a bad glob is an error at its place in the file
 * rather than a refused build_start. */
static int cfg_tr_format(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                         json_t *parent, const cfg_key_t *k, void *out)
{
    tf_test_spec_t *t = out;
    char show[CFG_SHOW_BUF];
    const char *fmt = NULL;
    (void)parent;
    (void)k;
    int rc = cfg_string(ctx, loc, v, false, &fmt);
    if (rc != CFG_OK)
        return rc;
    t->format = tf_tr_format_parse(fmt);
    if (t->format != TF_TR_FMT_NONE)
        return CFG_OK;
    cfg_show(show, fmt);
    return cfg_bad(ctx, loc, "unknown format \"%s\" (known: ctest, gtest, "
                   "pytest, unittest, automake, tap, junit)", show);
}

/* Nothing else of test_results makes sense without its format. */
static int cfg_tr_format_check(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                               json_t *obj, void *out, int status)
{
    (void)ctx;
    (void)loc;
    (void)obj;
    (void)out;
    return status == CFG_OK ? 0 : CFG_STOP;
}

static int cfg_tr_files(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *files,
                        json_t *parent, const cfg_key_t *k, void *out)
{
    tf_test_spec_t *t = out;
    char show[CFG_SHOW_BUF];
    int rc = CFG_OK;
    (void)parent;
    if (!tf_tr_format_files(t->format))
        return cfg_bad(ctx, loc, "not allowed for %s: it reads the step's "
                       "output", tf_tr_format_name(t->format));
    if (!json_is_array(files) || json_array_size(files) == 0 ||
        json_array_size(files) > (size_t)k->max)
        return cfg_bad(ctx, loc, "expected an array of 1 to %lld globs",
                       k->max);
    size_t n = json_array_size(files);
    if (!(t->files = calloc(n + 1, sizeof(*t->files))))
        return TF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        cfg_loc_t el = CFG_ELEMENT(loc, i);
        json_t *g = json_array_get(files, i);
        int r;
        if (!json_is_string(g)) {
            r = cfg_bad(ctx, &el, "expected a string");
        } else if (!tf_tr_glob_valid(json_string_value(g)) ||
                   strlen(json_string_value(g)) != json_string_length(g)) {
            cfg_show(show, json_string_value(g));
            r = cfg_bad(ctx, &el, "invalid glob \"%s\": use a relative "
                        "path (at most %d bytes) whose parts are names or "
                        "patterns, without \".\" or \"..\": report files are "
                        "read only inside the workdir", show, TF_TR_MAX_GLOB);
        } else {
            if (!(t->files[t->nfiles] = strdup(json_string_value(g))))
                return TF_ENOMEM;
            t->nfiles++;
            continue;
        }
        if (r < 0)
            return r;
        rc = CFG_BAD;
    }
    return rc;
}

/* junit reads report files only: it needs some. */
static int cfg_tr_end(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                      void *out, const int *st)
{
    const tf_test_spec_t *t = out;
    (void)st;
    if (t->format != TF_TR_FMT_JUNIT || json_object_get(obj, "files"))
        return 0;
    int rc = cfg_bad(ctx, loc, "junit needs \"files\": globs of the report "
                     "files, relative to the step's workdir");
    return rc < 0 ? rc : 0;
}

#define CFG_STR_(x) #x
#define CFG_STR(x) CFG_STR_(x)
#define CFG_SUB_TF_SK_TR_FORMAT(T, CK, REQ, MAX, FIELD, DOC)                   \
    {.name = CK, .kind = CFG_CUSTOM, .flags = (REQ) ? CFG_REQUIRED : 0,        \
     .off = CFG_NOFIELD, .fn = cfg_tr_format, .check = cfg_tr_format_check,   \
     .doc_type = "string", .doc = DOC},
#define CFG_SUB_TF_SK_TR_FILES(T, CK, REQ, MAX, FIELD, DOC)                    \
    {.name = CK, .kind = CFG_CUSTOM, .flags = (REQ) ? CFG_REQUIRED : 0,        \
     .off = CFG_NOFIELD, .fn = cfg_tr_files, .max = MAX,                      \
     .doc_type = "array of 1.." CFG_STR(MAX) " globs", .doc_def = "none",     \
     .doc = DOC},
#define CFG_TR_ROW(CK, WK, KIND, REQ, MAX, FIELD, DOC)                         \
    CFG_SUB_##KIND(tf_test_spec_t, CK, REQ, MAX, FIELD, DOC)

static const cfg_key_t cfg_tr_keys[] = {TF_TEST_RESULTS_KEYS(CFG_TR_ROW)};
static const cfg_table_t cfg_tr_table = {
    CFG_TABLE("steps.test_results", cfg_tr_keys, tf_test_spec_t),
    .end = cfg_tr_end,
};

static int cfg_test_results(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                            json_t *parent, const cfg_key_t *k, void *out)
{
    tf_cfg_step_t *st = out;
    (void)parent;
    if (!json_is_object(v))
        return cfg_bad(ctx, loc, "expected an object with \"format\" (and "
                       "\"files\" for junit)");
    if (!(st->spec.test_results = calloc(1, sizeof(*st->spec.test_results))))
        return TF_ENOMEM;
    int rc = cfg_walk(ctx, loc, v, k->sub, st->spec.test_results);
    return rc < 0 ? rc : CFG_OK;
}

/* A step: flags at their defaults, modifiers ready for the rows that fill
 * them (marker lines are honoured unless "markers" is false, so a step
 * reports stats without any configuration). */
static int cfg_step_init(cfg_ctx_t *ctx, json_t *obj, void *out)
{
    tf_cfg_step_t *st = out;
    (void)ctx;
    (void)obj;
    st->spec.flags = tf_step_flags_default();
    st->spec.modifiers = calloc(1, sizeof(*st->spec.modifiers));
    return st->spec.modifiers ? 0 : TF_ENOMEM;
}

/* Modifiers with nothing to do are not sent. */
static int cfg_step_end(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                        void *out, const int *st)
{
    tf_cfg_step_t *s = out;
    tf_modifiers_t *m = s->spec.modifiers;
    (void)ctx;
    (void)loc;
    (void)obj;
    (void)st;
    if (m && !m->markers && !m->ninfo && !m->nstats && !m->pass_if &&
        !m->fail_if && !m->warnings) {
        tf_modifiers_free(m);
        s->spec.modifiers = NULL;
    }
    return 0;
}

static void cfg_step_clear(void *out)
{
    tf_step_spec_clear(&((tf_cfg_step_t *)out)->spec);
}

/* A step row per kind of stepspec.h (the builtin is wire-only). */
#define CFG_MODS                                                               \
    .flags = CFG_VIA, .via = offsetof(tf_cfg_step_t, spec.modifiers)
#define CFG_STEP_TF_SK_NAME(CK, MIN, MAX, DEF, FIELD, DOC)                     \
    {.name = CK, .kind = CFG_NAME, .flags = CFG_REQUIRED,                      \
     CFG_F(tf_cfg_step_t, spec.FIELD), .doc = DOC},
#define CFG_STEP_TF_SK_COMMAND(CK, MIN, MAX, DEF, FIELD, DOC)                  \
    {.name = CK, .kind = CFG_CUSTOM, .flags = CFG_REQUIRED,                    \
     .off = CFG_NOFIELD, .fn = cfg_command,                                    \
     .doc_type = "array of strings, or string", .doc = DOC},
#define CFG_STEP_TF_SK_ENV(CK, MIN, MAX, DEF, FIELD, DOC)                      \
    {.name = CK, .kind = CFG_KV, CFG_A(tf_cfg_step_t, spec.env, spec.nenv),    \
     .valid = cfg_env_name_valid, .what = "environment variable",             \
     .rule = "use letters, digits and _, not starting with a digit",          \
     .doc_type = "object of string -> string", .doc = DOC},
#define CFG_STEP_TF_SK_WORKDIR(CK, MIN, MAX, DEF, FIELD, DOC)                  \
    {.name = CK, .kind = CFG_STR, .flags = CFG_EMPTY_OK,                       \
     CFG_F(tf_cfg_step_t, spec.FIELD), .sdef = "",                             \
     .valid = tf_relpath_valid, .what = "workdir",                             \
     .rule = "use a relative path of names separated by '/', without \".\" "   \
             "or \"..\"",                                                      \
     .doc = DOC},
#define CFG_STEP_TF_SK_SECONDS(CK, MIN, MAX, DEF, FIELD, DOC)                  \
    {.name = CK, CFG_I(tf_cfg_step_t, spec.FIELD, MIN, MAX, DEF), .doc = DOC},
#define CFG_STEP_TF_SK_FLAG(CK, MIN, MAX, DEF, FIELD, DOC)                     \
    {.name = CK, .kind = CFG_BOOL, CFG_F(tf_cfg_step_t, spec.FIELD),           \
     .doc = DOC},
#define CFG_STEP_TF_SK_BUILTIN(CK, MIN, MAX, DEF, FIELD, DOC)
#define CFG_STEP_TF_SK_MOD_MARKERS(CK, MIN, MAX, DEF, FIELD, DOC)              \
    {.name = CK, .kind = CFG_BOOL, CFG_MODS, CFG_F(tf_modifiers_t, FIELD),     \
     .def = DEF, .doc = DOC},
#define CFG_STEP_TF_SK_MOD_INFO(CK, MIN, MAX, DEF, FIELD, DOC)                 \
    {.name = CK, .kind = CFG_REGEXES, CFG_MODS,                                \
     CFG_A(tf_modifiers_t, FIELD, n##FIELD), .max = MAX, .plural = "rules",    \
     .type_msg = "expected an array of regular expressions",                   \
     .doc_type = "array of regexes", .doc = DOC},
#define CFG_STEP_TF_SK_MOD_STATS(CK, MIN, MAX, DEF, FIELD, DOC)                \
    {.name = CK, .kind = CFG_LIST, CFG_MODS,                                   \
     CFG_A(tf_modifiers_t, FIELD, n##FIELD), .max = MAX, .plural = "rules",    \
     .size = sizeof(tf_stat_rule_t), .sub = &cfg_stat_table,                   \
     .doc_type = "array of [stats rules](#stats-rules)", .doc = DOC},
#define CFG_STEP_TF_SK_MOD_SUCCESS(CK, MIN, MAX, DEF, FIELD, DOC)              \
    {.name = CK, .kind = CFG_SECTION, CFG_MODS, .off = 0,                      \
     .sub = &cfg_success_table,                                                \
     .type_msg = "expected an object with \"pass_if\" or \"fail_if\"",         \
     .doc_type = "object, see [success](#success)", .doc_def = "none",         \
     .doc = DOC},
#define CFG_STEP_TF_SK_MOD_WARNINGS(CK, MIN, MAX, DEF, FIELD, DOC)             \
    {.name = CK, .kind = CFG_CUSTOM, CFG_MODS, .off = 0,                       \
     .fn = cfg_warnings, .sub = &cfg_warnings_table,                           \
     .doc_type = "regex, or object, see [warnings](#warnings)",                \
     .doc_def = "none", .doc = DOC},
#define CFG_STEP_TF_SK_TEST_RESULTS(CK, MIN, MAX, DEF, FIELD, DOC)             \
    {.name = CK, .kind = CFG_CUSTOM, .off = CFG_NOFIELD,                       \
     .fn = cfg_test_results, .sub = &cfg_tr_table,                            \
     .doc_type = "object, see [Test results](#test-results)",                 \
     .doc_def = "none", .doc = DOC},
#define CFG_STEP_ROW(ID, CK, WK, KIND, MIN, MAX, DEF, FIELD, DOC)              \
    CFG_STEP_##KIND(CK, MIN, MAX, DEF, FIELD, DOC)

static const cfg_key_t cfg_step_keys[] = {TF_STEP_KEYS(CFG_STEP_ROW)};
CFG_FITS(cfg_step_keys);
static const cfg_table_t cfg_step_table = {
    CFG_TABLE("steps", cfg_step_keys, tf_cfg_step_t),
    .init = cfg_step_init,
    .end = cfg_step_end,
    .clear = cfg_step_clear,
};

/* ------------------------------------------------------------------ */
/* Slaves                                                              */
/* ------------------------------------------------------------------ */

/* Exactly one of "secret" and "secret_file"; the file is read here. */
static int cfg_slave_end(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                         void *out, const int *st);

static const cfg_key_t cfg_slave_keys[] = {
    {.name = "name", .kind = CFG_NAME, .flags = CFG_REQUIRED,
     CFG_F(tf_cfg_slave_t, name),
     .doc = "the slave's name, unique among slaves; the slave presents it "
            "when it connects"},
    {.name = "secret", .kind = CFG_STR, CFG_F(tf_cfg_slave_t, secret),
     .doc_def = "", .doc = "the shared secret, written inline"},
    {.name = "secret_file", .kind = CFG_STR, .off = CFG_NOFIELD,
     .doc_type = "path", .doc_def = "",
     .doc = "a file holding the shared secret"},
    {.name = "tags", .kind = CFG_NAMES, .what = "tag",
     CFG_A(tf_cfg_slave_t, tags, ntags),
     .doc = "what the slave offers (`\"linux\"`, `\"arm64\"`, `\"gpu\"`); "
            "builders select slaves by tag"},
    {.name = "max_builds",
     CFG_I(tf_cfg_slave_t, max_builds, 1, TF_PROTO_MAX_RUNNING, 1),
     .doc = "builds the slave runs at the same time"},
};
static const cfg_table_t cfg_slave_table = {
    CFG_TABLE("slaves", cfg_slave_keys, tf_cfg_slave_t),
    .end = cfg_slave_end,
};

static int cfg_slave_end(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                         void *out, const int *st)
{
    tf_cfg_slave_t *s = out;
    int has_secret = cfg_status(&cfg_slave_table, st, "secret");
    int has_file = cfg_status(&cfg_slave_table, st, "secret_file");
    int rc = 0;
    if (has_secret != CFG_ABSENT && has_file != CFG_ABSENT) {
        rc = cfg_bad(ctx, loc,
                     "give either \"secret\" or \"secret_file\", not both");
    } else if (has_secret == CFG_ABSENT && has_file == CFG_ABSENT) {
        rc = cfg_bad(ctx, loc,
                     "missing required key \"secret\" (or \"secret_file\")");
    } else if (has_file == CFG_OK) {
        cfg_loc_t fl = CFG_MEMBER(loc, "secret_file");
        rc = cfg_secret_file(
            ctx, &fl, json_string_value(json_object_get(obj, "secret_file")),
            &s->secret);
    }
    return rc < 0 ? rc : 0;
}

/* ------------------------------------------------------------------ */
/* Builders                                                            */
/* ------------------------------------------------------------------ */

static int cfg_strcmp_p(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of the configured slaves, sorted, borrowed from the config;
 * made once, when the first builder asks. */
static int cfg_known_slaves(cfg_ctx_t *ctx)
{
    const tf_config_t *c = ctx->cfg;
    if (ctx->slaves_sorted)
        return 0;
    ctx->slaves_sorted = true;
    if (c->nslaves == 0)
        return 0;
    if (!(ctx->slaves = calloc(c->nslaves, sizeof(*ctx->slaves))))
        return TF_ENOMEM;
    for (size_t i = 0; i < c->nslaves; i++)
        if (c->slaves[i].name)
            ctx->slaves[ctx->nslaves++] = c->slaves[i].name;
    /* Usually listed in name order already: one pass tells. */
    for (size_t i = 1; i < ctx->nslaves; i++)
        if (strcmp(ctx->slaves[i - 1], ctx->slaves[i]) > 0) {
            qsort(ctx->slaves, ctx->nslaves, sizeof(*ctx->slaves),
                  cfg_strcmp_p);
            break;
        }
    return 0;
}

/* Every valid name in the builder's "slaves" must be a configured slave. */
static int cfg_builder_slaves(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                              json_t *obj, void *out, int status)
{
    json_t *arr = json_object_get(obj, "slaves");
    cfg_loc_t sl = CFG_MEMBER(loc, "slaves");
    int rc;
    (void)out;
    (void)status;
    if (!json_is_array(arr))
        return 0;
    if ((rc = cfg_known_slaves(ctx)) < 0)
        return rc;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const char *name = json_string_value(json_array_get(arr, i));
        cfg_loc_t el = CFG_ELEMENT(&sl, i);
        if (!name || !tf_name_valid(name))
            continue; /* already reported */
        if (ctx->nslaves && bsearch(&name, ctx->slaves, ctx->nslaves,
                                    sizeof(*ctx->slaves), cfg_strcmp_p))
            continue;
        const char *hint = cfg_suggest(
            name, (const char *const *)ctx->slaves, ctx->nslaves);
        rc = hint ? cfg_bad(ctx, &el,
                            "no slave named \"%s\" in \"slaves\"; did you "
                            "mean \"%s\"?",
                            name, hint)
                  : cfg_bad(ctx, &el, "no slave named \"%s\" in \"slaves\"",
                            name);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* A branch needs a repository; with one, the branch defaults to main. */
static int cfg_builder_branch(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                              json_t *obj, void *out, int status)
{
    tf_cfg_builder_t *b = out;
    if (status == CFG_OK && !json_object_get(obj, "repository")) {
        cfg_loc_t bl = CFG_MEMBER(loc, "branch");
        int rc = cfg_bad(ctx, &bl, "\"branch\" needs a \"repository\"");
        if (rc < 0)
            return rc;
    }
    if (!b->repository) {
        free(b->branch);
        b->branch = NULL;
    } else if (!b->branch && !(b->branch = strdup("main"))) {
        return TF_ENOMEM;
    }
    return 0;
}

/* A builder's mail: error_patterns given (even []) replace the mail
 * section's. */
static int cfg_builder_patterns(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                                json_t *obj, void *out, int status)
{
    (void)ctx;
    (void)loc;
    (void)obj;
    ((tf_cfg_builder_mail_t *)out)->has_patterns = status == CFG_OK;
    return 0;
}

static const cfg_word_t cfg_mail_modes[] = {
    {"failing", TF_MAIL_MODE_FAILING}, {"problem", TF_MAIL_MODE_PROBLEM},
    {"change", TF_MAIL_MODE_CHANGE},   {"all", TF_MAIL_MODE_ALL},
    {"none", TF_MAIL_MODE_NONE},       {NULL, 0},
};

static const cfg_key_t cfg_builder_mail_keys[] = {
    {.name = "mode", .kind = CFG_ENUM, .words = cfg_mail_modes,
     .what = "mode", CFG_F(tf_cfg_builder_mail_t, mode),
     .doc = "when a continuous build of this builder is mailed: "
            "`\"failing\"` (every failure), `\"problem\"` (a failure after a "
            "pass), `\"change\"` (broken or fixed), `\"all\"` (every build), "
            "`\"none\"`"},
    {.name = "extra_recipients", .kind = CFG_STRINGS, .flags = CFG_EMAIL,
     CFG_A(tf_cfg_builder_mail_t, extra_recipients, nextra),
     .doc_type = "array of email addresses",
     .doc = "who gets this builder's notices, besides the authors of the "
            "build's changes"},
    {.name = "error_patterns", .kind = CFG_STRINGS,
     CFG_A(tf_cfg_builder_mail_t, error_patterns, npatterns),
     .check = cfg_builder_patterns, .doc_def = "the mail section's",
     .doc = "lines of a failed step's log shown in mails (try job reports "
            "too); `[]` shows only the tail"},
};
static const cfg_table_t cfg_builder_mail_table = {
    CFG_TABLE("builders.mail", cfg_builder_mail_keys, tf_cfg_builder_mail_t),
};

/* "retention" at the top (the default) and in a builder (-1: the
 * top-level's value). */
#define CFG_RETENTION_KEYS(LO, DEF, DOCDEF)                                    \
    {.name = "log_days", .flags = CFG_SIGNED,                                  \
     CFG_I(tf_cfg_retention_t, log_days, LO, 100000, DEF), .doc_def = DOCDEF,  \
     .doc = "the logs of builds that finished more than this many days ago "  \
            "are removed; 0 keeps them"},                                      \
    {.name = "log_builds", .flags = CFG_SIGNED,                                \
     CFG_I(tf_cfg_retention_t, log_builds, LO, 100000000, DEF),               \
     .doc_def = DOCDEF,                                                        \
     .doc = "only the logs of the builder's newest this many finished "       \
            "builds are kept; 0 keeps all"},                                   \
    {.name = "log_mib", .flags = CFG_SIGNED,                                   \
     CFG_I(tf_cfg_retention_t, log_mib, LO, 100000000, DEF),                  \
     .doc_def = DOCDEF,                                                        \
     .doc = "the builder's newest logs are kept up to this many MiB (raw "    \
            "bytes; stored compressed they take a few percent of that), "     \
            "older ones removed; 0: no limit"}
static const cfg_key_t cfg_retention_keys[] = {
    CFG_RETENTION_KEYS(0, 0, "`0`"),
};
static const cfg_table_t cfg_retention_table = {
    CFG_TABLE("retention", cfg_retention_keys, tf_cfg_retention_t),
};
static const cfg_key_t cfg_builder_retention_keys[] = {
    CFG_RETENTION_KEYS(-1, -1, "the top-level `retention`'s"),
};
static const cfg_table_t cfg_builder_retention_table = {
    CFG_TABLE("builders.retention", cfg_builder_retention_keys,
              tf_cfg_retention_t),
};

static bool cfg_prop_name_valid(const char *s)
{
    return tf_name_valid(s);
}

/* force_allowed: each entry a committer's email, or "*" for every
 * committer, none twice (api/authz.c reads the list). Read from the JSON
 * so each problem is reported at its own element, whatever else the
 * array holds (the kind reports what is not a string). */
static int cfg_builder_force_allowed(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                                     json_t *obj, void *out, int status)
{
    json_t *arr = json_object_get(obj, "force_allowed");
    cfg_loc_t fl = CFG_MEMBER(loc, "force_allowed");
    char show[CFG_SHOW_BUF];
    (void)out;
    if (status == CFG_ABSENT || !json_is_array(arr))
        return 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const char *e = json_string_value(json_array_get(arr, i));
        cfg_loc_t el = CFG_ELEMENT(&fl, i);
        int rc = 0;
        bool dup = false;
        if (!e)
            continue;
        for (size_t k = 0; k < i && !dup; k++) {
            const char *o = json_string_value(json_array_get(arr, k));
            dup = o && strcmp(o, e) == 0;
        }
        cfg_show(show, e);
        if (strcmp(e, "*") != 0 && !tf_email_valid(e))
            rc = cfg_bad(ctx, &el, "\"%s\" is not a committer's email "
                         "(local@domain) or \"*\"", show);
        else if (dup)
            rc = cfg_bad(ctx, &el, "\"%s\" is listed twice", show);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static const cfg_key_t cfg_builder_keys[] = {
    {.name = "name", .kind = CFG_NAME, .flags = CFG_REQUIRED,
     CFG_F(tf_cfg_builder_t, name),
     .doc = "unique among builders; shown on the pages and used by "
            "`tf-try`"},
    {.name = "slaves", .kind = CFG_NAMES, .what = "slave",
     CFG_A(tf_cfg_builder_t, slaves, nslaves), .check = cfg_builder_slaves,
     .doc_type = "array of slave names",
     .doc = "slaves that may run this builder; each must be in the "
            "top-level `slaves`"},
    {.name = "tags", .kind = CFG_NAMES, .what = "tag",
     CFG_A(tf_cfg_builder_t, tags, ntags),
     .doc = "a slave having **all** these tags may run this builder"},
    {.name = "priority", .flags = CFG_SIGNED,
     CFG_I(tf_cfg_builder_t, priority, -1000, 1000, 0),
     .doc = "when slaves are scarce, requests of higher-priority builders "
            "are started first"},
    {.name = "properties", .kind = CFG_KV, .valid = cfg_prop_name_valid,
     .what = "property", .rule = CFG_NAME_RULE,
     CFG_A(tf_cfg_builder_t, props, nprops),
     .doc_type = "object of name -> string",
     .doc = "build properties attached to every build of this builder, see "
            "[properties](#properties)"},
    {.name = "steps", .kind = CFG_LIST, .flags = CFG_REQUIRED,
     CFG_A(tf_cfg_builder_t, steps, nsteps), .size = sizeof(tf_cfg_step_t),
     .sub = &cfg_step_table, .min = 1, .max = TF_PROTO_MAX_STEPS,
     .plural = "steps", .what = "step",
     .type_msg = "expected an array of steps",
     .empty_msg = "a builder needs at least one step",
     .doc_type = "array of [steps](#steps)",
     .doc = "run in order; with a `repository`, at most 999 (its source "
            "step counts), and all of them must fit one 1 MiB `build_start` "
            "message (see [limits](#limits))"},
    {.name = "repository", .kind = CFG_STR, .valid = tf_repo_url_valid,
     .rule = CFG_REPO_RULE, CFG_F(tf_cfg_builder_t, repository),
     .doc = "a git URL or an absolute path (on the slaves) of the "
            "repository the builder builds; see [repository and "
            "branch](#repository-and-branch)"},
    {.name = "branch", .kind = CFG_STR, .valid = tf_git_ref_valid,
     .what = "branch", .rule = CFG_BRANCH_RULE,
     CFG_F(tf_cfg_builder_t, branch), .check = cfg_builder_branch,
     .doc_def = "`\"main\"`",
     .doc = "the branch to build and to apply try patches on; needs "
            "`repository`"},
    {.name = "collapse_requests", .kind = CFG_BOOL, .def = 1,
     CFG_F(tf_cfg_builder_t, collapse_requests),
     .doc = "a new continuous request supersedes this builder's pending "
            "older ones, taking over their changes; see "
            "[collapsing](#collapsing)"},
    {.name = "retry_without_patch", .kind = CFG_BOOL,
     CFG_F(tf_cfg_builder_t, retry_without_patch),
     .doc = "a try build of this builder that fails is built again without "
            "its patch (same base, tests and properties), in the same job; "
            "its failing tests mark the try build's as also failing without "
            "the patch; see [committers.md](committers.md)"},
    {.name = "mail", .kind = CFG_SECTION, CFG_F(tf_cfg_builder_t, mail),
     .sub = &cfg_builder_mail_table, .doc_def = "none",
     .doc = "notifier mode, extra recipients and error patterns of result "
            "mails; see [builders' mail](#builders-mail)"},
    /* Who may force it (the API's authorization, api/authz.c). */
    {.name = "force_allowed", .kind = CFG_STRINGS,
     CFG_A(tf_cfg_builder_t, force_allowed, nforce_allowed),
     .check = cfg_builder_force_allowed,
     .doc_type = "array of emails or `\"*\"`",
     .doc = "committers who may force and rebuild this builder besides the "
            "admin; `\"*\"` for every committer; see [who may force a "
            "builder](#who-may-force-a-builder)"},
    {.name = "force_properties", .kind = CFG_NAMES, .what = "property",
     CFG_A(tf_cfg_builder_t, force_properties, nforce_properties),
     .doc = "properties a committer may set when forcing this builder (the "
            "admin may set any)"},
    {.name = "retention", .kind = CFG_SECTION,
     CFG_F(tf_cfg_builder_t, retention), .sub = &cfg_builder_retention_table,
     .doc_def = "the top-level `retention`",
     .doc = "how long this builder's logs are kept; each key left out (or "
            "`-1`) is the top-level one; see [retention](#retention)"},
};
/* Whether the builder's build_start fits the protocol (docs/protocol.md,
 * "Limits"): encoded as the master would send it, with its configured
 * properties and the ones the master adds at their longest (a request's
 * own properties and a revision come on top at run time; a request whose
 * build_start does not fit then ends as EXCEPTION). Commands are measured
 * before interpolation. Only for a builder read without diagnostics. */
static int cfg_builder_end(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                           json_t *obj, void *out, const int *st)
{
    const tf_cfg_builder_t *b = out;
    cfg_loc_t sl = CFG_MEMBER(loc, "steps");
    (void)obj;
    (void)st;
    if (!ctx->object_clean || !b->name || !b->nsteps)
        return 0;
    bool src = b->repository != NULL;
    size_t nsteps = b->nsteps + (src ? 1 : 0);
    if (nsteps > TF_PROTO_MAX_STEPS)
        return cfg_bad(ctx, &sl, "%zu steps and the source step the "
                       "builder's repository adds are over the protocol's "
                       "limit of %d steps in a build", b->nsteps,
                       TF_PROTO_MAX_STEPS);
    static const char *const added[] = {"builder", "buildnumber", "slave",
                                        "revision", "tests", "repository",
                                        "branch"};
    size_t nadded = sizeof(added) / sizeof(added[0]);
    char longest_name[TF_NAME_MAX + 1], number[24];
    memset(longest_name, 'x', TF_NAME_MAX);
    longest_name[TF_NAME_MAX] = '\0';
    snprintf(number, sizeof(number), "%" PRIu64, TF_PROTO_MAX_ID);
    const char *values[] = {b->name, number, longest_name, "", "",
                            b->repository, b->branch};
    tf_kv_t *props = calloc(b->nprops + nadded, sizeof(*props));
    tf_step_spec_t *steps = calloc(nsteps, sizeof(*steps));
    char *argv[] = {"git", "checkout", "origin/main", NULL};
    int rc = TF_ENOMEM;
    if (!props || !steps)
        goto out;
    size_t np = 0;
    for (size_t i = 0; i < b->nprops; i++)
        props[np++] = b->props[i];
    for (size_t i = 0; i < nadded; i++) {
        bool dup = false;
        for (size_t k = 0; k < b->nprops && !dup; k++)
            dup = strcmp(b->props[k].key, added[i]) == 0;
        if (!dup && values[i])
            props[np++] = (tf_kv_t){(char *)added[i], (char *)values[i]};
    }
    size_t k = 0;
    if (src) {
        steps[k].name = "source";
        steps[k].argv = argv;
        steps[k].argc = 3;
        steps[k].workdir = "";
        steps[k].builtin = TF_BUILTIN_SOURCE;
        steps[k].timeout_s = 1200;
        steps[k].flags = tf_step_flags_default();
        k++;
    }
    for (size_t i = 0; i < b->nsteps; i++)
        steps[k++] = b->steps[i].spec;
    tf_source_t source = {.repository = b->repository, .branch = b->branch,
                          .revision = ""};
    tf_msg_t msg = {.type = TF_MSG_BUILD_START};
    msg.u.build_start.build_id = TF_PROTO_MAX_ID;
    msg.u.build_start.builder = b->name;
    msg.u.build_start.number = TF_PROTO_MAX_ID;
    msg.u.build_start.workdir = b->name;
    msg.u.build_start.props = props;
    msg.u.build_start.nprops = np;
    msg.u.build_start.steps = steps;
    msg.u.build_start.nsteps = nsteps;
    msg.u.build_start.source = src ? &source : NULL;
    char *text = NULL, why[300];
    size_t text_len = 0;
    rc = tf_msg_encode_err(&msg, &text, &text_len, why, sizeof(why));
    if (rc == 0 && text)
        tf_sha256_hex(text, text_len, ((tf_cfg_builder_t *)out)->recipe);
    free(text);
    if (rc == TF_E2BIG)
        rc = cfg_bad(ctx, &sl, "the protocol cannot carry this builder's "
                     "build_start: %s; use fewer or shorter steps, commands, "
                     "environments or properties", why);
    else if (rc == TF_EINVAL)
        rc = cfg_bad(ctx, &sl, "the protocol cannot carry this builder's "
                     "build_start: %s", why);
out:
    free(props);
    free(steps);
    return rc;
}

static const cfg_table_t cfg_builder_table = {
    CFG_TABLE("builders", cfg_builder_keys, tf_cfg_builder_t),
    .end = cfg_builder_end,
};

/* ------------------------------------------------------------------ */
/* Mail                                                                */
/* ------------------------------------------------------------------ */

/* Lines worth showing from a failed step when a builder names none. */
/* Matched without regard to case (mail_render.h): compilers and linkers
 * (gcc, clang, ld), test runners (ctest's "***Failed" and "tests FAILED",
 * GoogleTest's "[  FAILED  ]", pytest's "FAILED", automake's and
 * unittest's "FAIL:"), the sanitizers ("ERROR: AddressSanitizer",
 * UBSan's "runtime error:", "SUMMARY: ...Sanitizer"), Python, Go and
 * crashes. Not a bare "error": that would match every -Werror flag. */
static const char *const cfg_mail_default_patterns[] = {
    "error:", "fatal error", "undefined reference", "failed", "fail:",
    "failure", "sanitizer", "traceback", "panic:", "assertion",
    "segmentation fault", "core dumped", "timed out", NULL,
};

static int cfg_smtp_host(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                         void *out, int status)
{
    const tf_cfg_mail_t *m = out;
    (void)obj;
    (void)status;
    for (const char *p = m->smtp_host; p && *p; p++) {
        if ((unsigned char)*p <= 0x20 || strchr("/@?#", *p)) {
            cfg_loc_t hl = CFG_MEMBER(loc, "host");
            int rc = cfg_bad(ctx, &hl, "a host name or IP address, without "
                             "spaces, '/', '@', '?' or '#'");
            return rc < 0 ? rc : 0;
        }
    }
    return 0;
}

static int cfg_smtp_ca(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                       void *out, int status)
{
    const tf_cfg_mail_t *m = out;
    char show[CFG_SHOW_BUF];
    (void)obj;
    if (status != CFG_OK || access(m->smtp_ca_file, R_OK) == 0)
        return 0;
    cfg_loc_t cl = CFG_MEMBER(loc, "ca_file");
    cfg_show(show, m->smtp_ca_file);
    int rc = cfg_bad(ctx, &cl, "cannot read \"%s\": %s", show,
                     strerror(errno));
    return rc < 0 ? rc : 0;
}

static int cfg_smtp_end(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                        void *out, const int *st);

static const cfg_word_t cfg_securities[] = {
    {"none", TF_MAIL_SEC_NONE},
    {"starttls", TF_MAIL_SEC_STARTTLS},
    {"tls", TF_MAIL_SEC_TLS},
    {NULL, 0},
};

static const cfg_key_t cfg_smtp_keys[] = {
    {.name = "host", .kind = CFG_STR, CFG_F(tf_cfg_mail_t, smtp_host),
     .sdef = "localhost", .check = cfg_smtp_host,
     .doc = "host name or IP address of the SMTP server"},
    {.name = "port", CFG_I(tf_cfg_mail_t, smtp_port, 1, 65535, 0),
     .doc_def = "`25`, `587` with `starttls`, `465` with `tls`", .doc = ""},
    {.name = "security", .kind = CFG_ENUM, .words = cfg_securities,
     .what = "security", CFG_F(tf_cfg_mail_t, smtp_security),
     .doc = "`\"none\"`: plain SMTP; `\"starttls\"`: STARTTLS required (no "
            "plain fallback); `\"tls\"`: implicit TLS (\"smtps\")"},
    {.name = "username", .kind = CFG_STR, CFG_F(tf_cfg_mail_t, smtp_username),
     .doc_def = "none (no AUTH)",
     .doc = "SMTP AUTH user; needs `password_file`"},
    {.name = "password_file", .kind = CFG_STR, .off = CFG_NOFIELD,
     .doc_type = "path",
     .doc = "the password is the file's first line (at most 4 KiB); needs "
            "`username`"},
    {.name = "ca_file", .kind = CFG_PATH, CFG_F(tf_cfg_mail_t, smtp_ca_file),
     .check = cfg_smtp_ca, .doc_def = "the system's CAs",
     .doc = "PEM file of the CA (or the self-signed certificate) the "
            "server's certificate must chain to; the certificate must name "
            "`host`"},
};
static const cfg_table_t cfg_smtp_table = {
    CFG_TABLE("mail.smtp", cfg_smtp_keys, tf_cfg_mail_t),
    .end = cfg_smtp_end,
};

/* The port follows the security; a user needs a password file and the
 * other way round. */
static int cfg_smtp_end(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                        void *out, const int *st)
{
    tf_cfg_mail_t *m = out;
    const char *pwfile = NULL;
    int rc = 0;
    if (!m->smtp_port)
        m->smtp_port = m->smtp_security == TF_MAIL_SEC_TLS        ? 465
                       : m->smtp_security == TF_MAIL_SEC_STARTTLS ? 587
                                                                  : 25;
    if (!obj)
        return 0;
    if (cfg_status(&cfg_smtp_table, st, "password_file") == CFG_OK)
        pwfile = json_string_value(json_object_get(obj, "password_file"));
    if (m->smtp_username && !pwfile &&
        (rc = cfg_bad(ctx, loc, "\"username\" needs \"password_file\"")) < 0)
        return rc;
    if (pwfile) {
        cfg_loc_t pl = CFG_MEMBER(loc, "password_file");
        rc = m->smtp_username
                 ? cfg_secret_file(ctx, &pl, pwfile, &m->smtp_password)
                 : cfg_bad(ctx, &pl, "\"password_file\" needs \"username\"");
    }
    return rc < 0 ? rc : 0;
}

/* "sendmail": a command, instead of "smtp". */
static int cfg_sendmail(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                        json_t *parent, const cfg_key_t *k, void *out)
{
    tf_cfg_mail_t *m = out;
    (void)k;
    if (json_object_get(parent, "smtp"))
        return cfg_bad(ctx, loc, "give either \"smtp\" or \"sendmail\", not "
                       "both");
    if (!json_is_array(v))
        return cfg_bad(ctx, loc, "expected the command as an array of "
                       "strings, e.g. [\"/usr/sbin/sendmail\", \"-oi\"]");
    return cfg_argv_array(ctx, loc, v, &m->sendmail, &m->nsendmail);
}

/* A "mail" section turns mail on unless it says "enabled": false. */
static int cfg_mail_init(cfg_ctx_t *ctx, json_t *obj, void *out)
{
    (void)ctx;
    ((tf_cfg_mail_t *)out)->enabled = obj != NULL;
    return 0;
}

static int cfg_strv_copy(const char *const *src, char ***out, size_t *nout)
{
    size_t n = 0;
    while (src[n])
        n++;
    char **v = calloc(n + 1, sizeof(*v));
    if (!v)
        return TF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!(v[i] = strdup(src[i]))) {
            cfg_strv_free(v, i);
            return TF_ENOMEM;
        }
    }
    *out = v;
    *nout = n;
    return 0;
}

/* The retry times agree; what a missing or partial section leaves unset
 * gets its default, some of which come from the top level's name. */
static int cfg_mail_end(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                        void *out, const int *st)
{
    tf_cfg_mail_t *m = out;
    const char *name = ctx && ctx->cfg->name ? ctx->cfg->name : "";
    (void)obj;
    (void)st;
    if (m->retry_max_s < m->retry_initial_s) {
        cfg_loc_t l = CFG_MEMBER(loc, "retry_max_s");
        int rc = cfg_bad(ctx, &l, "must be at least retry_initial_s (%u)",
                         (unsigned)m->retry_initial_s);
        if (rc < 0)
            return rc;
    }
    if (!m->from && !(m->from = strdup("testfarm@localhost")))
        return TF_ENOMEM;
    if (!m->from_name && !(m->from_name = strdup(name)))
        return TF_ENOMEM;
    if (!m->subject_prefix) {
        size_t n = strlen(name) + 3;
        if (!(m->subject_prefix = malloc(n)))
            return TF_ENOMEM;
        snprintf(m->subject_prefix, n, "[%s]", name);
    }
    if (!m->error_patterns)
        return cfg_strv_copy(cfg_mail_default_patterns, &m->error_patterns,
                             &m->npatterns);
    return 0;
}

#define CFG_MAIL_I(field, lo, hi, d) CFG_I(tf_cfg_mail_t, field, lo, hi, d)

static const cfg_key_t cfg_mail_keys[] = {
    {.name = "enabled", .kind = CFG_BOOL, CFG_F(tf_cfg_mail_t, enabled),
     .doc_def = "`true`",
     .doc = "`false` keeps the settings but sends and queues nothing "
            "(pending mail waits)"},
    {.name = "from", .kind = CFG_STR, .flags = CFG_REQUIRED | CFG_EMAIL,
     CFG_F(tf_cfg_mail_t, from), .doc_type = "email address",
     .doc = "the sender (`From:` and the SMTP envelope); a plain "
            "`local@domain`"},
    {.name = "from_name", .kind = CFG_STR, .flags = CFG_EMPTY_OK,
     CFG_F(tf_cfg_mail_t, from_name), .doc_def = "the top-level `name`",
     .doc = "display name of the sender; any UTF-8"},
    {.name = "subject_prefix", .kind = CFG_STR, .flags = CFG_EMPTY_OK,
     CFG_F(tf_cfg_mail_t, subject_prefix), .doc_def = "`\"[NAME]\"`",
     .doc = "starts every subject; `\"\"` for none"},
    {.name = "smtp", .kind = CFG_SECTION, .off = 0, .sub = &cfg_smtp_table,
     .doc_def = "see [smtp](#smtp)", .doc = "the SMTP server"},
    {.name = "sendmail", .kind = CFG_CUSTOM, .off = CFG_NOFIELD,
     .fn = cfg_sendmail, .doc_type = "array of strings", .doc_def = "none",
     .doc = "instead of `smtp`: a command (argv, looked up in `PATH`) that "
            "reads the message on standard input; the recipients are "
            "appended as arguments; exit status 0 means accepted. Not both "
            "`smtp` and `sendmail`."},
    {.name = "connect_timeout_s", CFG_MAIL_I(connect_timeout_s, 1, 600, 10),
     .doc = "connecting, TLS and AUTH"},
    {.name = "timeout_s", CFG_MAIL_I(timeout_s, 1, 3600, 60),
     .doc = "a whole delivery, or the command's whole run"},
    {.name = "retry_initial_s", CFG_MAIL_I(retry_initial_s, 1, 86400, 30),
     .doc = "wait after the first failed attempt; doubles after each"},
    {.name = "retry_max_s", CFG_MAIL_I(retry_max_s, 1, 7 * 86400, 1800),
     .doc = "the longest wait between attempts; at least `retry_initial_s`"},
    {.name = "retry_horizon_s",
     CFG_MAIL_I(retry_horizon_s, 1, 60 * 86400, 172800),
     .doc = "a mail not delivered this long after it was queued is marked "
            "`failed`"},
    {.name = "excerpt_max_bytes",
     CFG_MAIL_I(excerpt_max_bytes, 1024, 16 * 1024 * 1024, 64 * 1024),
     .doc = "the size cap of one failed step's log excerpt"},
    {.name = "message_max_bytes",
     CFG_MAIL_I(message_max_bytes, 16 * 1024, 64 * 1024 * 1024, 1024 * 1024),
     .doc = "the size cap of a whole message; excerpts shrink to fit"},
    {.name = "tail_lines", CFG_MAIL_I(tail_lines, 0, 1000, 30),
     .doc = "the last lines of a failed step shown in its excerpt"},
    {.name = "context_after", CFG_MAIL_I(context_after, 0, 200, 25),
     .doc = "lines shown after each line matching an error pattern (a "
            "sanitizer's stack, an assertion's detail)"},
    {.name = "error_patterns", .kind = CFG_STRINGS,
     CFG_A(tf_cfg_mail_t, error_patterns, npatterns),
     .doc_def = "see below",
     .doc = "lines of a failed step's log worth showing; builders without "
            "their own use these"},
    {.name = "try_jobs", .kind = CFG_BOOL, .def = 1,
     CFG_F(tf_cfg_mail_t, try_jobs),
     .doc = "mail try job reports (a job submitted with `tf-try "
            "--no-email` never gets one)"},
};
static const cfg_table_t cfg_mail_table = {
    CFG_TABLE("mail", cfg_mail_keys, tf_cfg_mail_t),
    .init = cfg_mail_init,
    .end = cfg_mail_end,
};

/* ------------------------------------------------------------------ */
/* Pollers and schedulers                                              */
/* ------------------------------------------------------------------ */

/* A poller polls every poll_interval_s unless it says otherwise. */
static int cfg_poller_init(cfg_ctx_t *ctx, json_t *obj, void *out)
{
    (void)obj;
    if (ctx)
        ((tf_cfg_poller_t *)out)->interval_s = ctx->cfg->poll_interval_s;
    return 0;
}

static int cfg_poller_end(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                          void *out, const int *st)
{
    tf_cfg_poller_t *p = out;
    (void)ctx;
    (void)loc;
    (void)obj;
    (void)st;
    if (p->repository && !p->branch && !(p->branch = strdup("main")))
        return TF_ENOMEM;
    return 0;
}

static const cfg_key_t cfg_poller_keys[] = {
    {.name = "repository", .kind = CFG_STR, .flags = CFG_REQUIRED,
     .valid = tf_repo_url_valid, .rule = CFG_REPO_RULE,
     CFG_F(tf_cfg_poller_t, repository), .doc = "a git URL or path"},
    {.name = "branch", .kind = CFG_STR, .valid = tf_git_ref_valid,
     .what = "branch", .rule = CFG_BRANCH_RULE,
     CFG_F(tf_cfg_poller_t, branch), .doc_def = "`\"main\"`",
     .doc = "the branch to poll"},
    {.name = "interval_s", CFG_I(tf_cfg_poller_t, interval_s, 1, 86400, 0),
     .doc_def = "`poll_interval_s`", .doc = "seconds between polls"},
};
static const cfg_table_t cfg_poller_table = {
    CFG_TABLE("pollers", cfg_poller_keys, tf_cfg_poller_t),
    .init = cfg_poller_init,
    .end = cfg_poller_end,
};

/* A second poller of the same repository and branch. */
static int cfg_poller_dups(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                           void *out, int status)
{
    const tf_config_t *c = out;
    cfg_loc_t pl = CFG_MEMBER(root, "pollers");
    (void)top;
    (void)status;
    for (size_t i = 0; i < c->npollers; i++) {
        const tf_cfg_poller_t *p = &c->pollers[i];
        for (size_t k = 0; p->repository && k < i; k++) {
            const tf_cfg_poller_t *q = &c->pollers[k];
            if (!q->repository || strcmp(p->repository, q->repository) != 0 ||
                strcmp(p->branch, q->branch) != 0)
                continue;
            cfg_loc_t el = CFG_ELEMENT(&pl, i);
            int rc = cfg_bad(ctx, &el, "duplicate poller of branch \"%s\" "
                             "(first in pollers[%zu])", p->branch, k);
            if (rc < 0)
                return rc;
            break;
        }
    }
    return 0;
}

/* Nothing of a scheduler makes sense without its type. */
static int cfg_sched_type(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                          void *out, int status)
{
    (void)ctx;
    (void)loc;
    (void)obj;
    (void)out;
    return status == CFG_OK ? 0 : CFG_STOP;
}

/* At least one builder, each a configured one. */
static int cfg_sched_builders(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                              json_t *obj, void *out, int status)
{
    const tf_cfg_scheduler_t *s = out;
    const tf_config_t *c = ctx->cfg;
    json_t *arr = json_object_get(obj, "builders");
    cfg_loc_t bl = CFG_MEMBER(loc, "builders");
    int rc = 0;
    if (status == CFG_OK && s->nbuilders == 0 &&
        (rc = cfg_bad(ctx, &bl, "a scheduler needs at least one builder")) <
            0)
        return rc;
    if (!json_is_array(arr))
        return 0;
    const char **known = calloc(c->nbuilders + 1, sizeof(*known));
    if (!known)
        return TF_ENOMEM;
    for (size_t i = 0; i < c->nbuilders; i++)
        known[i] = c->builders[i].name;
    /* s->builders holds the valid names, each once, in file order: the
     * element each came from is the next one in the array with its text. */
    size_t at = 0;
    for (size_t i = 0; i < s->nbuilders && rc >= 0; i++, at++) {
        const char *name = s->builders[i];
        while (at < json_array_size(arr) &&
               !(json_is_string(json_array_get(arr, at)) &&
                 strcmp(json_string_value(json_array_get(arr, at)), name) ==
                     0))
            at++;
        if (tf_config_builder(c, name))
            continue;
        cfg_loc_t el = CFG_ELEMENT(&bl, at);
        const char *hint = cfg_suggest(name, known, c->nbuilders);
        rc = hint ? cfg_bad(ctx, &el, "no builder named \"%s\"; did you mean "
                            "\"%s\"?", name, hint)
                  : cfg_bad(ctx, &el, "no builder named \"%s\"", name);
    }
    free(known);
    return rc < 0 ? rc : 0;
}

/* The repository and branch a scheduler watches when it does not say:
 * its builders' own, which must then agree. With only "branch" given, the
 * builders' repository on that branch; with only "repository", the branch
 * of a builder on it, else "main". Returns 0, CFG_BAD when reported, or
 * TF_ENOMEM. */
static int cfg_sched_builders_source(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                                     const tf_cfg_scheduler_t *s,
                                     const char **repo, const char **branch)
{
    const tf_config_t *c = ctx->cfg;
    const char *r = NULL, *b = NULL;
    for (size_t i = 0; i < s->nbuilders; i++) {
        const tf_cfg_builder_t *cb = tf_config_builder(c, s->builders[i]);
        if (!cb || !cb->repository)
            continue;
        if (*repo) {
            if (!*branch && strcmp(cb->repository, *repo) == 0)
                *branch = cb->branch;
            continue;
        }
        if (!r) {
            r = cb->repository;
            b = cb->branch;
        } else if (strcmp(r, cb->repository) != 0 ||
                   (!*branch && strcmp(b, cb->branch) != 0)) {
            int rc = cfg_bad(ctx, loc, "its builders check out different "
                             "repositories or branches; give \"repository\" "
                             "and \"branch\" to say which one it watches");
            return rc < 0 ? rc : CFG_BAD;
        }
    }
    if (!*repo)
        *repo = r;
    if (*repo && !*branch)
        *branch = b ? b : "main";
    return 0;
}

/* After "branch": what the scheduler watches. A refused repository or
 * branch, or builders that disagree, leave nothing sensible to check. */
static int cfg_sched_source(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                            void *out, int status)
{
    tf_cfg_scheduler_t *s = out;
    const char *repo = s->repository, *branch = s->branch;
    int rc;
    (void)status;
    if ((json_object_get(obj, "repository") && !s->repository) ||
        (json_object_get(obj, "branch") && !s->branch))
        return CFG_STOP;
    rc = cfg_sched_builders_source(ctx, loc, s, &repo, &branch);
    if (rc)
        return rc < 0 ? rc : CFG_STOP;
    if (s->type == TF_CFG_SCHED_CHANGE && !repo) {
        rc = cfg_bad(ctx, loc, "a change scheduler needs a repository: give "
                     "\"repository\" or list builders that have one");
        return rc < 0 ? rc : CFG_STOP;
    }
    if (repo && repo != s->repository && !(s->repository = strdup(repo)))
        return TF_ENOMEM;
    if (repo && branch != s->branch && !(s->branch = strdup(branch)))
        return TF_ENOMEM;
    if (!repo) {
        free(s->branch);
        s->branch = NULL;
    }
    s->only_if_changed =
        s->type == TF_CFG_SCHED_PERIODIC && s->repository != NULL;
    return 0;
}

/* "paths": path prefixes or globs, non-empty strings of at most
 * CFG_PATH_MAX bytes without control characters. */
static int cfg_paths(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *arr,
                     json_t *parent, const cfg_key_t *k, void *out)
{
    tf_cfg_scheduler_t *s = out;
    int rc = CFG_OK;
    (void)parent;
    (void)k;
    if (!json_is_array(arr))
        return cfg_bad(ctx, loc, "expected an array of path prefixes or "
                       "globs");
    size_t n = json_array_size(arr);
    if (n == 0)
        return CFG_OK;
    if (!(s->paths = calloc(n, sizeof(*s->paths))))
        return TF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_array_get(arr, i);
        cfg_loc_t el = CFG_ELEMENT(loc, i);
        const char *str = json_string_value(p);
        bool clean = str && *str && json_string_length(p) <= CFG_PATH_MAX &&
                     strlen(str) == json_string_length(p);
        for (const unsigned char *u = (const unsigned char *)str; clean && *u;
             u++)
            clean = *u >= 0x20 && *u != 0x7f;
        if (!clean) {
            int r = cfg_bad(ctx, &el, "expected a path prefix or glob: a "
                            "non-empty string of at most %d bytes without "
                            "control characters", CFG_PATH_MAX);
            if (r < 0)
                return r;
            rc = CFG_BAD;
            continue;
        }
        if (!(s->paths[s->npaths++] = strdup(str)))
            return TF_ENOMEM;
    }
    return rc;
}

/* "cron": five fields that parse and fire some day. */
static int cfg_cron(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                    json_t *parent, const cfg_key_t *k, void *out)
{
    tf_cfg_scheduler_t *s = out;
    const char *cron = NULL;
    char err[160];
    tf_cron_t parsed;
    (void)parent;
    (void)k;
    int rc = cfg_string(ctx, loc, v, false, &cron);
    if (rc != CFG_OK)
        return rc;
    if (tf_cron_parse(cron, &parsed, err, sizeof(err)) != 0)
        return cfg_bad(ctx, loc, "%s", err);
    if (tf_cron_next(&parsed, 0) < 0)
        return cfg_bad(ctx, loc, "\"%s\" never fires (no such date)", cron);
    return (s->cron = strdup(cron)) ? CFG_OK : TF_ENOMEM;
}

static int cfg_sched_only_if(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                             json_t *obj, void *out, int status)
{
    const tf_cfg_scheduler_t *s = out;
    (void)obj;
    if (status != CFG_OK || !s->only_if_changed || s->repository)
        return 0;
    cfg_loc_t ol = CFG_MEMBER(loc, "only_if_changed");
    int rc = cfg_bad(ctx, &ol, "needs a repository to watch: give "
                     "\"repository\" or list builders that have one");
    return rc < 0 ? rc : 0;
}

#define CFG_CHANGE (1u << TF_CFG_SCHED_CHANGE)
#define CFG_PERIODIC (1u << TF_CFG_SCHED_PERIODIC)

static const cfg_word_t cfg_sched_types[] = {
    {"change", TF_CFG_SCHED_CHANGE},
    {"periodic", TF_CFG_SCHED_PERIODIC},
    {NULL, 0},
};

static const cfg_key_t cfg_scheduler_keys[] = {
    {.name = "name", .kind = CFG_NAME, .flags = CFG_REQUIRED,
     CFG_F(tf_cfg_scheduler_t, name),
     .doc = "unique among schedulers; requests and builds carry it "
            "(`scheduler` property)"},
    {.name = "type", .kind = CFG_ENUM, .flags = CFG_REQUIRED | CFG_TERSE,
     .words = cfg_sched_types, CFG_F(tf_cfg_scheduler_t, type),
     .check = cfg_sched_type, .doc = "`\"change\"` or `\"periodic\"`"},
    {.name = "builders", .kind = CFG_NAMES, .flags = CFG_REQUIRED,
     .what = "builder", CFG_A(tf_cfg_scheduler_t, builders, nbuilders),
     .check = cfg_sched_builders, .doc_type = "array of builder names",
     .doc = "at least one; each must be a configured builder. One request "
            "per builder each time the scheduler fires"},
    {.name = "repository", .kind = CFG_STR, .valid = tf_repo_url_valid,
     .rule = CFG_REPO_RULE, CFG_F(tf_cfg_scheduler_t, repository),
     .doc_def = "the builders'",
     .doc = "the repository it watches (a git URL or path *on the "
            "master*); by default the `repository` of its builders, which "
            "must then all use the same one"},
    {.name = "branch", .kind = CFG_STR, .valid = tf_git_ref_valid,
     .what = "branch", .rule = CFG_BRANCH_RULE,
     CFG_F(tf_cfg_scheduler_t, branch), .check = cfg_sched_source,
     .doc_def = "the builders'",
     .doc = "the branch it watches; by default the builders' `branch` "
            "(`\"main\"` when none of them has the repository)"},
    {.name = "tree_stable_s", .only = CFG_CHANGE,
     CFG_I(tf_cfg_scheduler_t, tree_stable_s, 0, 86400, 15),
     .doc = "change: fire only when no new change has arrived for this "
            "long, so commits pushed together give one build"},
    {.name = "paths", .kind = CFG_CUSTOM, .only = CFG_CHANGE,
     .off = CFG_NOFIELD, .fn = cfg_paths, .doc_type = "array of strings",
     .doc_def = "`[]` (all)",
     .doc = "change: only changes touching one of these paths trigger a "
            "build (see below)"},
    {.name = "cron", .kind = CFG_CUSTOM, .flags = CFG_REQUIRED,
     .only = CFG_PERIODIC, .off = CFG_NOFIELD, .fn = cfg_cron,
     .doc_type = "string",
     .doc = "periodic: `\"MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK\"` in "
            "**UTC**, e.g. `\"0 3 * * *\"`"},
    {.name = "only_if_changed", .kind = CFG_BOOL, .only = CFG_PERIODIC,
     CFG_F(tf_cfg_scheduler_t, only_if_changed), .check = cfg_sched_only_if,
     .doc_def = "`true` with a repository",
     .doc = "periodic: build only if something changed on the branch since "
            "the scheduler last fired"},
};
static const cfg_table_t cfg_scheduler_table = {
    CFG_TABLE("schedulers", cfg_scheduler_keys, tf_cfg_scheduler_t),
    .variant_key = "type",
};

/* ------------------------------------------------------------------ */
/* The top level                                                       */
/* ------------------------------------------------------------------ */

/* listen.tls: the master's own certificate. net/server.c hands both files
 * to libwebsockets (OpenSSL), which reads them when the listener starts;
 * here they must at least be readable. */
static int cfg_tls_readable(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                            json_t *obj, const char *key, const char *path)
{
    char show[CFG_SHOW_BUF];
    if (!path || access(path, R_OK) == 0)
        return 0;
    int e = errno;
    cfg_loc_t kl = CFG_MEMBER(loc, key);
    /* The name as written: the resolved path can be too long to show. */
    cfg_show(show, json_string_value(json_object_get(obj, key)));
    int rc = cfg_bad(ctx, &kl, "cannot read \"%s\" (a relative path is "
                     "relative to the config's directory): %s", show,
                     strerror(e));
    return rc < 0 ? rc : 0;
}

static int cfg_tls_cert(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                        void *out, int status)
{
    return status == CFG_OK
               ? cfg_tls_readable(ctx, loc, obj, "cert",
                                  ((tf_config_t *)out)->tls_cert)
               : 0;
}

static int cfg_tls_key(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                       void *out, int status)
{
    return status == CFG_OK
               ? cfg_tls_readable(ctx, loc, obj, "key",
                                  ((tf_config_t *)out)->tls_key)
               : 0;
}

static const cfg_key_t cfg_tls_keys[] = {
    {.name = "cert", .kind = CFG_PATH, .flags = CFG_REQUIRED,
     CFG_F(tf_config_t, tls_cert), .check = cfg_tls_cert,
     .doc = "PEM file of the master's certificate (then any intermediate "
            "ones); it must name the host clients use"},
    {.name = "key", .kind = CFG_PATH, .flags = CFG_REQUIRED,
     CFG_F(tf_config_t, tls_key), .check = cfg_tls_key,
     .doc = "PEM file of its private key"},
};
static const cfg_table_t cfg_tls_table = {
    CFG_TABLE("listen.tls", cfg_tls_keys, tf_config_t),
};

static const cfg_key_t cfg_listen_keys[] = {
    {.name = "host", .kind = CFG_STR, CFG_F(tf_config_t, listen_host),
     .sdef = "127.0.0.1",
     .doc = "address to bind: an IP address or host name; `\"0.0.0.0\"` "
            "for every IPv4 interface"},
    {.name = "port", CFG_I(tf_config_t, listen_port, 1, 65535, 8010),
     .doc = "TCP port"},
    {.name = "tls", .kind = CFG_SECTION, .off = 0, .sub = &cfg_tls_table,
     .doc_def = "none",
     .doc = "serve TLS (https, wss) on that port; see "
            "[listen.tls](#listentls)"},
};
static const cfg_table_t cfg_listen_table = {
    CFG_TABLE("listen", cfg_listen_keys, tf_config_t),
};

/* store.postgres: a postgresql:// URL replaces the sqlite file as the
 * database (store/pg.c). */
static int cfg_store_postgres(cfg_ctx_t *ctx, const cfg_loc_t *root,
                              json_t *top, void *out, int status)
{
    tf_config_t *c = out;
    cfg_loc_t loc = CFG_MEMBER(root, "postgres");
    const char *url;
    char *dup;

    if (status != CFG_OK)
        return 0;
    url = json_string_value(json_object_get(top, "postgres"));
    if (!url || (strncmp(url, "postgresql://", 13) != 0 &&
                 strncmp(url, "postgres://", 11) != 0))
        return cfg_bad(ctx, &loc,
                       "must be a URL starting with postgresql:// or "
                       "postgres://");
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return cfg_bad(ctx, &loc,
                           "must not contain spaces or control characters");
    dup = strdup(url);
    if (!dup)
        return TF_ENOMEM;
    free(c->database);
    c->database = dup;
    return 0;
}

/* store.shared: several active masters on one PostgreSQL database; it
 * needs store.postgres and excludes store.standby (a shared master never
 * waits for another). */
static int cfg_store_shared(cfg_ctx_t *ctx, const cfg_loc_t *root,
                            json_t *top, void *out, int status)
{
    tf_config_t *c = out;
    cfg_loc_t loc = CFG_MEMBER(root, "shared");

    if (status != CFG_OK || !c->store_shared)
        return 0;
    if (!json_is_string(json_object_get(top, "postgres")))
        return cfg_bad(ctx, &loc, "needs `postgres`: several masters share "
                       "a PostgreSQL database, never an sqlite file");
    if (json_is_true(json_object_get(top, "standby")))
        return cfg_bad(ctx, &loc, "and `standby` exclude each other: a "
                       "shared master runs beside the others");
    return 0;
}

static const cfg_key_t cfg_store_keys[] = {
    {.name = "shared", .kind = CFG_BOOL, .def = 0,
     CFG_F(tf_config_t, store_shared), .check = cfg_store_shared,
     .doc = "with `postgres`: this master runs beside any number of other "
            "masters with `shared` on the same database, as one farm: each "
            "claims requests for its own slaves, and mail, pollers and "
            "periodic schedulers run on one of them at a time. Without it "
            "a PostgreSQL database has one master (and maybe a standby). "
            "See docs/admins.md, \"Several masters\""},
    {.name = "standby", .kind = CFG_BOOL, .def = 0,
     CFG_F(tf_config_t, store_standby),
     .doc = "with `postgres`: when another master holds the database, "
            "wait (without listening) until it goes, then take over, "
            "instead of refusing to start. See docs/admins.md, "
            "\"A standby master\""},
    {.name = "keepalive_idle_s",
     CFG_I(tf_config_t, store_keepalive_idle_s, 1, 7200, 10),
     .doc = "with `postgres`: seconds a connection to the database may be "
            "silent before TCP keepalive probes start, on both ends (libpq's "
            "`keepalives_idle`, the server's `tcp_keepalives_idle` for this "
            "master's sessions): with the two below, how soon PostgreSQL "
            "drops the connections, and so the locks and the duty lease, of "
            "a master whose machine vanished (10 + 5 x 3 = 25 s by "
            "default; the server's own default is 2 hours). Over a unix "
            "socket there are no keepalives. Read at start"},
    {.name = "keepalive_interval_s",
     CFG_I(tf_config_t, store_keepalive_interval_s, 1, 600, 5),
     .doc = "with `postgres`: seconds between unanswered keepalive probes "
            "(`keepalives_interval`, `tcp_keepalives_interval`)"},
    {.name = "keepalive_count",
     CFG_I(tf_config_t, store_keepalive_count, 1, 100, 3),
     .doc = "with `postgres`: unanswered probes before the connection is "
            "dropped (`keepalives_count`, `tcp_keepalives_count`)"},
    {.name = "lease_timeout_s",
     CFG_I(tf_config_t, store_lease_timeout_s, 2, 3600, 15),
     .doc = "with `shared`: a master whose heartbeat (written each second "
            "by its listener connection) is older than this is dead to the "
            "others: they end its database sessions (so its duty lease "
            "moves even while its process is frozen or its machine is cut "
            "off) and mark the slaves it had disconnected. See "
            "docs/admins.md, \"Several masters\""},
    {.name = "postgres", .kind = CFG_STR, .off = CFG_NOFIELD,
     .check = cfg_store_postgres,
     .doc_def = "none (the sqlite file of `database`)",
     .doc = "a PostgreSQL database URL (`postgresql://USER@HOST/DB`, or "
            "`postgresql:///DB?host=/socket/dir`) to hold all state instead "
            "of `database`, for several masters on one farm; keep the "
            "password out of it (use ~/.pgpass or PGPASSWORD). See "
            "docs/admins.md, \"PostgreSQL\""},
};
static const cfg_table_t cfg_store_table = {
    CFG_TABLE("store", cfg_store_keys, tf_config_t),
};

static const cfg_key_t cfg_try_keys[] = {
    {.name = "max_patch_bytes",
     CFG_I(tf_config_t, try_max_patch_bytes, 1, 1024ll * 1024 * 1024,
           50ll * 1024 * 1024),
     .doc_def = "`52428800` (50 MiB)",
     .doc = "the largest patch a try job may carry; a bigger one is refused "
            "with HTTP 413 before anything is stored. Buildbot's try "
            "scheduler defaults to 100 KB; binary diffs need more"},
    {.name = "max_builders", CFG_I(tf_config_t, try_max_builders, 1, 50, 50),
     .doc = "builders one try job may ask for"},
};
static const cfg_table_t cfg_try_table = {
    CFG_TABLE("try", cfg_try_keys, tf_config_t),
};

static const cfg_key_t cfg_fair_keys[] = {
    {.name = "fair_share", .kind = CFG_BOOL, .def = 1,
     CFG_F(tf_config_t, fair_share),
     .doc = "share slaves fairly between the owners of requests (the "
            "committer of a try job, `admin` or the user who forced a "
            "build)"},
};
static const cfg_table_t cfg_fair_table = {
    CFG_TABLE("scheduler", cfg_fair_keys, tf_config_t),
};

static const cfg_key_t cfg_testing_keys[] = {
    {.name = "clock", .kind = CFG_BOOL, CFG_F(tf_config_t, testing_clock),
     .doc = "enables `POST /api/v1/master/clock` (admin token), which sets "
            "the master's clock for periodic schedulers and tree-stable "
            "timers. **For tests only**: it moves every time the master "
            "stores"},
};
static const cfg_table_t cfg_testing_table = {
    CFG_TABLE("testing", cfg_testing_keys, tf_config_t),
};

/* "url" must be an http(s) URL with a host; it ends with '/'. Without
 * one, the URL is made from listen (an IPv6 literal in brackets). */
static int cfg_url(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                   void *out, int status)
{
    tf_config_t *c = out;
    cfg_loc_t loc = CFG_MEMBER(root, "url");
    tf_buf_t b;
    int rc = 0;

    if (status == CFG_BAD)
        return 0;
    tf_buf_init(&b, 0);
    if (status == CFG_OK) {
        const char *url = json_string_value(json_object_get(top, "url"));
        size_t skip = strncasecmp(url, "http://", 7) == 0    ? 7
                      : strncasecmp(url, "https://", 8) == 0 ? 8
                                                             : 0;
        bool clean = true;
        for (const unsigned char *p = (const unsigned char *)url; *p; p++)
            clean = clean && *p > 0x20 && *p != 0x7f;
        if (skip == 0 || url[skip] == '\0' || url[skip] == '/')
            rc = cfg_bad(ctx, &loc,
                         "must start with http:// or https:// and a host");
        else if (!clean)
            rc = cfg_bad(ctx, &loc,
                         "must not contain spaces or control characters");
        else
            rc = tf_buf_printf(&b, "%s%s", url,
                               url[strlen(url) - 1] == '/' ? "" : "/");
    } else {
        bool v6 = strchr(c->listen_host, ':') != NULL;
        rc = tf_buf_printf(&b, "%s://%s%s%s:%u/",
                           c->tls_cert ? "https" : "http", v6 ? "[" : "",
                           c->listen_host, v6 ? "]" : "",
                           (unsigned)c->listen_port);
    }
    if (rc < 0) {
        tf_buf_free(&b);
        return TF_ENOMEM;
    }
    if (rc == CFG_BAD) {
        tf_buf_free(&b);
        return 0;
    }
    c->public_url = cfg_buf_take(&b);
    return c->public_url ? 0 : TF_ENOMEM;
}

/* An origin as browsers send it: scheme, host and an optional port, no
 * path ("https://ci.example.org", "http://127.0.0.1:8080"), or "*". */
static bool cfg_origin_valid(const char *o)
{
    if (strcmp(o, "*") == 0)
        return true;
    size_t skip = strncmp(o, "http://", 7) == 0    ? 7
                  : strncmp(o, "https://", 8) == 0 ? 8
                                                   : 0;
    if (skip == 0 || o[skip] == '\0' || strlen(o) > 200)
        return false;
    for (const char *p = o + skip; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' ||
              *p == ':' || *p == '[' || *p == ']'))
            return false;
    return true;
}

static int cfg_cors_check(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                          void *out, int status)
{
    const tf_config_t *c = out;
    if (status != CFG_OK)
        return 0;
    for (size_t i = 0; i < c->ncors_origins; i++) {
        if (cfg_origin_valid(c->cors_origins[i]))
            continue;
        cfg_loc_t l = CFG_MEMBER(loc, "cors_origins");
        int rc = cfg_bad(ctx, &l, "\"%.80s\" is not an origin: expected "
                         "\"*\" or a scheme and host with an optional port "
                         "and no path, e.g. \"https://ci.example.org\"",
                         c->cors_origins[i]);
        return rc < 0 ? rc : 0;
    }
    return 0;
}

/* A change link: http(s) with "{revision}" in it. */
static bool cfg_commit_url_valid(const char *u)
{
    if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)
        return false;
    if (!strstr(u, "{revision}"))
        return false;
    for (const unsigned char *p = (const unsigned char *)u; *p; p++)
        if (*p <= 0x20 || *p == 0x7f || *p == '"' || *p == '<' || *p == '>')
            return false;
    return true;
}

/* lost_after_s must be above heartbeat_s; the message names the key the
 * admin wrote. */
static int cfg_top_end(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                       void *out, const int *st);

static const cfg_key_t cfg_top_keys[] = {
    {.name = "name", .kind = CFG_STR, CFG_F(tf_config_t, name),
     .sdef = "TestFarm",
     .doc = "title of the status pages and of result mails; not empty"},
    {.name = "listen", .kind = CFG_SECTION, .off = 0,
     .sub = &cfg_listen_table, .doc_def = "see [listen](#listen)",
     .doc = "address of the HTTP/websocket server"},
    {.name = "url", .kind = CFG_STR, .off = CFG_NOFIELD, .check = cfg_url,
     .doc_def = "`\"http://HOST:PORT/\"` (`https://` with `listen.tls`)",
     .doc = "public base URL, used for links in the API and in mails, see "
            "[url](#url)"},
    {.name = "database", .kind = CFG_PATH, CFG_F(tf_config_t, database),
     .sdef = "state.sqlite", .doc = "the sqlite database holding all state "
                                     "(unless `store.postgres` is set)"},
    {.name = "store", .kind = CFG_SECTION, .off = 0, .sub = &cfg_store_table,
     .doc_def = "see [store](#store)",
     .doc = "the storage engine: sqlite (default) or PostgreSQL"},
    {.name = "web_root", .kind = CFG_PATH, CFG_F(tf_config_t, web_root),
     .doc = "directory of the status pages (static files)"},
    {.name = "cors_origins", .kind = CFG_STRINGS,
     CFG_A(tf_config_t, cors_origins, ncors_origins), .check = cfg_cors_check,
     .doc_type = "array of origins", .doc_def = "none",
     .doc = "pages on these origins (`\"https://host[:port]\"`, or `\"*\"` "
            "for any) may read the API from a browser (CORS), see "
            "[cors_origins](#cors_origins)"},
    {.name = "commit_url", .kind = CFG_STR, CFG_F(tf_config_t, commit_url),
     .valid = cfg_commit_url_valid,
     .rule = "an http:// or https:// URL holding {revision}",
     .doc = "link of a change's commit, `{revision}` replaced by its id "
            "(e.g. `\"https://git.example.org/app/commit/{revision}\"`): "
            "`commit_url` of changes in the API and pages"},
    {.name = "heartbeat_s", CFG_I(tf_config_t, heartbeat_s, 1, 3600, 10),
     .doc = "seconds between pings to each slave"},
    {.name = "lost_after_s",
     CFG_I(tf_config_t, lost_after_s, 1, CFG_NOMAX, 30),
     .doc = "a slave silent this long is marked lost and disconnected; "
            "must be greater than `heartbeat_s`"},
    {.name = "build_lost_after_s",
     CFG_I(tf_config_t, build_lost_after_s, 1, CFG_NOMAX, 600),
     .doc = "a running build whose slave has been gone this long ends as "
            "RETRY"},
    {.name = "max_retries", CFG_I(tf_config_t, max_retries, 0, 100, 3),
     .doc = "how often a build that ended as RETRY is queued again"},
    {.name = "try", .kind = CFG_SECTION, .off = 0, .sub = &cfg_try_table,
     .doc_def = "see [try](#try)", .doc = "limits of try jobs"},
    {.name = "scheduler", .kind = CFG_SECTION, .off = 0,
     .sub = &cfg_fair_table, .doc_def = "see [scheduler](#scheduler)",
     .doc = "how pending requests are ordered"},
    {.name = "slaves", .kind = CFG_LIST, CFG_A(tf_config_t, slaves, nslaves),
     .size = sizeof(tf_cfg_slave_t), .sub = &cfg_slave_table, .what = "slave",
     .doc_type = "array of [slaves](#slaves)",
     .doc = "the slaves allowed to connect"},
    {.name = "builders", .kind = CFG_LIST,
     CFG_A(tf_config_t, builders, nbuilders),
     .size = sizeof(tf_cfg_builder_t), .sub = &cfg_builder_table,
     .what = "builder", .doc_type = "array of [builders](#builders)",
     .doc = "the builders"},
    {.name = "mail", .kind = CFG_SECTION, CFG_F(tf_config_t, mail),
     .sub = &cfg_mail_table, .doc_def = "none (mail off)",
     .doc = "result mails, see [mail](#mail)"},
    {.name = "poll_interval_s",
     CFG_I(tf_config_t, poll_interval_s, 1, 86400, 60),
     .doc = "seconds between polls of each watched branch"},
    {.name = "retention", .kind = CFG_SECTION, CFG_F(tf_config_t, retention),
     .sub = &cfg_retention_table, .doc_def = "keep everything",
     .doc = "how long step logs are kept by default; build rows, steps and "
            "test results stay; see [retention](#retention)"},
    {.name = "testing", .kind = CFG_SECTION, .off = 0,
     .sub = &cfg_testing_table, .doc_def = "none",
     .doc = "test-only switches, see [testing](#testing)"},
    {.name = "pollers", .kind = CFG_LIST,
     CFG_A(tf_config_t, pollers, npollers), .size = sizeof(tf_cfg_poller_t),
     .sub = &cfg_poller_table, .check = cfg_poller_dups,
     .doc_type = "array of [pollers](#pollers-and-poll_interval_s)",
     .doc = "extra branches to poll for changes"},
    {.name = "schedulers", .kind = CFG_LIST,
     CFG_A(tf_config_t, schedulers, nschedulers),
     .size = sizeof(tf_cfg_scheduler_t), .sub = &cfg_scheduler_table,
     .what = "scheduler", .doc_type = "array of [schedulers](#schedulers)",
     .doc = "what starts continuous builds"},
};
CFG_FITS(cfg_top_keys);
const cfg_table_t cfg_top_table = {
    CFG_TABLE("top", cfg_top_keys, tf_config_t),
    .not_object = "the configuration must be a JSON object",
    .end = cfg_top_end,
};

static int cfg_top_end(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                       void *out, const int *st)
{
    const tf_config_t *c = out;
    int hb = cfg_status(&cfg_top_table, st, "heartbeat_s");
    int lost = cfg_status(&cfg_top_table, st, "lost_after_s");
    int rc;
    (void)top;
    if (hb == CFG_BAD || lost == CFG_BAD || c->lost_after_s > c->heartbeat_s)
        return 0;
    if (lost == CFG_OK) {
        cfg_loc_t l = CFG_MEMBER(root, "lost_after_s");
        rc = cfg_bad(ctx, &l, "must be greater than heartbeat_s (%u)",
                     (unsigned)c->heartbeat_s);
    } else {
        cfg_loc_t l = CFG_MEMBER(root, "heartbeat_s");
        rc = cfg_bad(ctx, &l,
                     "must be less than lost_after_s (%u, the default)",
                     (unsigned)c->lost_after_s);
    }
    return rc < 0 ? rc : 0;
}
