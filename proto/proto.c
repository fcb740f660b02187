/*
 * proto.c - JSON control messages of the slave protocol (docs/protocol.md).
 *
 * Decoding is two passes: jansson parses the text (rejecting duplicate keys,
 * "\u0000" and trailing bytes), then tf_msg_from_json() walks the tree and
 * checks every field the specification names, copying values into a
 * tf_msg_t. The first problem found stops the walk and becomes the error
 * sentence, prefixed with the field's path ("build_start.steps[0].command").
 * The small event messages a slave sends per step and build are first
 * offered to a one-pass reader (msgfast.c) that only ever accepts; what it
 * does not take in full comes here, so every refusal is worded here.
 *
 * Encoding builds the same kind of tree from a tf_msg_t and then runs that
 * very validator over it before dumping, so the rules live in one place and
 * "an encoded message always decodes" holds by construction rather than by
 * keeping two lists of checks in step. The two messages the master writes
 * most, ack and build_start, are first offered to one-pass writers
 * (msgfast.c, msgenc.c) that emit the very bytes this path would and only
 * ever succeed; whatever they are unsure of comes here, so every refusal
 * is worded here too.
 *
 * Ownership: a decoded message owns every string and array it points to;
 * tf_msg_clear() frees them. On any decode failure the message is cleared,
 * so callers never see half a message.
 */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "crypto.h"
#include "names.h"
#include "proto.h"
#include "proto_int.h"
#include "stepspec.h"
#include "tf_err.h"
#include "utf8.h"

#define TF__LABEL_MAX 160 /* longest field path in an error sentence */
#define TF__QUOTE_MAX 40  /* how much of a bad value an error quotes */

static const char *const tf_msg_names[TF_MSG__COUNT] = {
    [TF_MSG_CHALLENGE] = "challenge",
    [TF_MSG_HELLO] = "hello",
    [TF_MSG_WELCOME] = "welcome",
    [TF_MSG_ERROR] = "error",
    [TF_MSG_PING] = "ping",
    [TF_MSG_PONG] = "pong",
    [TF_MSG_BUILD_START] = "build_start",
    [TF_MSG_BUILD_ABORT] = "build_abort",
    [TF_MSG_ACK] = "ack",
    [TF_MSG_STEP_STARTED] = "step_started",
    [TF_MSG_STEP_FINISHED] = "step_finished",
    [TF_MSG_BUILD_FINISHED] = "build_finished",
    [TF_MSG_DRAIN] = "drain",
    [TF_MSG_TEST_RESULTS] = "test_results",
};

const char *tf_msg_type_name(tf_msg_type_t t)
{
    if ((int)t <= (int)TF_MSG_NONE || (int)t >= (int)TF_MSG__COUNT)
        return NULL;
    return tf_msg_names[t];
}

/* ------------------------------------------------------------------ */
/* Freeing                                                              */

static void tf_kv_free(tf_kv_t *kv, size_t n)
{
    if (!kv)
        return;
    for (size_t i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

static void tf_strv_free(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void tf_modifiers_free(tf_modifiers_t *m)
{
    if (!m)
        return;
    tf_strv_free(m->info, m->ninfo);
    if (m->stats) {
        for (size_t i = 0; i < m->nstats; i++) {
            free(m->stats[i].name);
            free(m->stats[i].regex);
        }
        free(m->stats);
    }
    free(m->pass_if);
    free(m->fail_if);
    free(m->warnings);
    free(m);
}

void tf_test_spec_free(tf_test_spec_t *t)
{
    if (!t)
        return;
    tf_strv_free(t->files, t->nfiles);
    free(t);
}

void tf_test_results_free(tf_test_result_t *r, size_t n)
{
    if (!r)
        return;
    for (size_t i = 0; i < n; i++) {
        free(r[i].suite);
        free(r[i].name);
        free(r[i].outcome);
        free(r[i].message);
    }
    free(r);
}

void tf_step_spec_clear(tf_step_spec_t *s)
{
    if (!s)
        return;
    free(s->name);
    tf_strv_free(s->argv, s->argc);
    tf_kv_free(s->env, s->nenv);
    free(s->workdir);
    free(s->builtin);
    tf_modifiers_free(s->modifiers);
    tf_test_spec_free(s->test_results);
    memset(s, 0, sizeof *s);
}

void tf_source_clear(tf_source_t *s)
{
    if (!s)
        return;
    free(s->repository);
    free(s->branch);
    free(s->revision);
    memset(s, 0, sizeof *s);
}

void tf_msg_clear(tf_msg_t *m)
{
    if (!m)
        return;
    switch (m->type) {
    case TF_MSG_CHALLENGE:
        free(m->u.challenge.master);
        break;
    case TF_MSG_HELLO:
        free(m->u.hello.slave);
        free(m->u.hello.version);
        free(m->u.hello.platform);
        tf_strv_free(m->u.hello.tags, m->u.hello.ntags);
        free(m->u.hello.running);
        break;
    case TF_MSG_WELCOME:
        free(m->u.welcome.slave);
        free(m->u.welcome.resume);
        free(m->u.welcome.abandon);
        break;
    case TF_MSG_ERROR:
        free(m->u.error.code);
        free(m->u.error.message);
        break;
    case TF_MSG_BUILD_START:
        free(m->u.build_start.builder);
        free(m->u.build_start.workdir);
        tf_kv_free(m->u.build_start.props, m->u.build_start.nprops);
        if (m->u.build_start.steps) {
            for (size_t i = 0; i < m->u.build_start.nsteps; i++)
                tf_step_spec_clear(&m->u.build_start.steps[i]);
            free(m->u.build_start.steps);
        }
        tf_source_clear(m->u.build_start.source);
        free(m->u.build_start.source);
        break;
    case TF_MSG_BUILD_ABORT:
        free(m->u.build_abort.reason);
        break;
    case TF_MSG_STEP_STARTED:
        free(m->u.step_started.name);
        break;
    case TF_MSG_STEP_FINISHED:
        free(m->u.step_finished.text);
        tf_kv_free(m->u.step_finished.props, m->u.step_finished.nprops);
        free(m->u.step_finished.info);
        free(m->u.step_finished.stats);
        break;
    case TF_MSG_TEST_RESULTS:
        tf_test_results_free(m->u.test_results.results,
                             m->u.test_results.nresults);
        tf_strv_free(m->u.test_results.problems, m->u.test_results.nproblems);
        break;
    case TF_MSG_NONE:
    case TF_MSG_PING:
    case TF_MSG_PONG:
    case TF_MSG_ACK:
    case TF_MSG_BUILD_FINISHED:
    case TF_MSG_DRAIN:
    case TF_MSG__COUNT:
        break;
    }
    memset(m, 0, sizeof *m);
    m->type = TF_MSG_NONE;
}

/* ------------------------------------------------------------------ */
/* Copying steps                                                        */

static int tf_strdup_to(char **dst, const char *src)
{
    *dst = strdup(src ? src : "");
    return *dst ? 0 : TF_ENOMEM;
}

/* Copies an optional string (NULL stays NULL). */
static int tf_strdup_opt(char **dst, const char *src)
{
    *dst = NULL;
    return src ? tf_strdup_to(dst, src) : 0;
}

int tf_modifiers_copy(tf_modifiers_t **dst, const tf_modifiers_t *src)
{
    int rc = TF_ENOMEM;
    tf_modifiers_t *m;
    *dst = NULL;
    if (!src)
        return 0;
    if (!(m = calloc(1, sizeof *m)))
        return TF_ENOMEM;
    m->markers = src->markers;
    m->warnings_max = src->warnings_max;
    if (src->ninfo) {
        if (!(m->info = calloc(src->ninfo, sizeof *m->info)))
            goto out;
        m->ninfo = src->ninfo;
        for (size_t i = 0; i < src->ninfo; i++)
            if (tf_strdup_to(&m->info[i], src->info[i]))
                goto out;
    }
    if (src->nstats) {
        if (!(m->stats = calloc(src->nstats, sizeof *m->stats)))
            goto out;
        m->nstats = src->nstats;
        for (size_t i = 0; i < src->nstats; i++)
            if (tf_strdup_opt(&m->stats[i].name, src->stats[i].name) ||
                tf_strdup_to(&m->stats[i].regex, src->stats[i].regex))
                goto out;
    }
    if (tf_strdup_opt(&m->pass_if, src->pass_if) ||
        tf_strdup_opt(&m->fail_if, src->fail_if) ||
        tf_strdup_opt(&m->warnings, src->warnings))
        goto out;
    *dst = m;
    m = NULL;
    rc = 0;
out:
    tf_modifiers_free(m);
    return rc;
}

int tf_test_spec_copy(tf_test_spec_t **dst, const tf_test_spec_t *src)
{
    tf_test_spec_t *t;
    *dst = NULL;
    if (!src)
        return 0;
    if (!(t = calloc(1, sizeof *t)))
        return TF_ENOMEM;
    t->format = src->format;
    if (src->nfiles) {
        if (!(t->files = calloc(src->nfiles + 1, sizeof *t->files))) {
            free(t);
            return TF_ENOMEM;
        }
        t->nfiles = src->nfiles;
        for (size_t i = 0; i < src->nfiles; i++) {
            if (tf_strdup_to(&t->files[i], src->files[i])) {
                tf_test_spec_free(t);
                return TF_ENOMEM;
            }
        }
    }
    *dst = t;
    return 0;
}

int tf_step_spec_copy(tf_step_spec_t *dst, const tf_step_spec_t *src)
{
    int rc = 0;
    memset(dst, 0, sizeof *dst);
    dst->timeout_s = src->timeout_s;
    dst->max_time_s = src->max_time_s;
    dst->flags = src->flags;
    if ((rc = tf_strdup_to(&dst->name, src->name)) ||
        (rc = tf_strdup_to(&dst->workdir, src->workdir)))
        goto out;
    if (src->builtin && (rc = tf_strdup_to(&dst->builtin, src->builtin)))
        goto out;
    if ((rc = tf_modifiers_copy(&dst->modifiers, src->modifiers)) ||
        (rc = tf_test_spec_copy(&dst->test_results, src->test_results)))
        goto out;
    dst->argv = calloc(src->argc + 1, sizeof *dst->argv);
    if (!dst->argv) {
        rc = TF_ENOMEM;
        goto out;
    }
    dst->argc = src->argc;
    for (size_t i = 0; i < src->argc; i++)
        if ((rc = tf_strdup_to(&dst->argv[i], src->argv[i])))
            goto out;
    if (src->nenv) {
        dst->env = calloc(src->nenv, sizeof *dst->env);
        if (!dst->env) {
            rc = TF_ENOMEM;
            goto out;
        }
        dst->nenv = src->nenv;
        for (size_t i = 0; i < src->nenv; i++)
            if ((rc = tf_strdup_to(&dst->env[i].key, src->env[i].key)) ||
                (rc = tf_strdup_to(&dst->env[i].value, src->env[i].value)))
                goto out;
    }
out:
    if (rc)
        tf_step_spec_clear(dst);
    return rc;
}

int tf_source_copy(tf_source_t *dst, const tf_source_t *src)
{
    int rc;
    memset(dst, 0, sizeof *dst);
    dst->has_patch = src->has_patch;
    memcpy(dst->patch_sha256, src->patch_sha256, sizeof dst->patch_sha256);
    dst->patch_size = src->patch_size;
    if ((rc = tf_strdup_to(&dst->repository, src->repository)) ||
        (rc = tf_strdup_to(&dst->branch, src->branch)) ||
        (rc = tf_strdup_to(&dst->revision, src->revision)))
        tf_source_clear(dst);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Decoding: error sentences                                            */

typedef struct tf_dec {
    char *err;
    size_t errlen;
} tf_dec_t;

static int tf_dec_fail(tf_dec_t *d, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes the error sentence (when the caller wants one) and returns rc. */
static int tf_dec_fail(tf_dec_t *d, int rc, const char *fmt, ...)
{
    if (d->err && d->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->err, d->errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* Formats a field path. Paths are short in practice; an absurdly nested
 * one is cut, which only shortens an error sentence. */
static void tf_label(char out[TF__LABEL_MAX], const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void tf_label(char out[TF__LABEL_MAX], const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, TF__LABEL_MAX, fmt, ap);
    va_end(ap);
}

/* "path.key" into out, cut as tf_label(out, "%s.%s", path, key) would
 * cut it. Every member looked up is labelled before its value is known
 * to be good, so this is on every decode's path: a copy, not printf. */
static void tf_label_member(char out[TF__LABEL_MAX], const char *path,
                            const char *key)
{
    size_t o = 0;
    for (; *path && o < TF__LABEL_MAX - 1; path++)
        out[o++] = *path;
    if (o < TF__LABEL_MAX - 1)
        out[o++] = '.';
    for (; *key && o < TF__LABEL_MAX - 1; key++)
        out[o++] = *key;
    out[o] = '\0';
}

static int tf_dec_oom(tf_dec_t *d)
{
    return tf_dec_fail(d, TF_ENOMEM, "out of memory while decoding");
}

/* Copies at most TF__QUOTE_MAX bytes of s into out, replacing anything that
 * is not printable ASCII (and quotes and backslashes) with '?', so a
 * peer's bytes can be shown in a log line safely. */
static void tf_dec_quote(char out[TF__QUOTE_MAX + 4], const char *s)
{
    size_t o = 0;
    for (; *s && o < TF__QUOTE_MAX; s++) {
        unsigned char c = (unsigned char)*s;
        out[o++] = (c < 0x20 || c > 0x7e || c == '"' || c == '\\') ? '?'
                                                                   : (char)c;
    }
    if (*s) {
        out[o++] = '.';
        out[o++] = '.';
        out[o++] = '.';
    }
    out[o] = '\0';
}

/* ------------------------------------------------------------------ */
/* Decoding: one value, with its label for error sentences              */

static int tf_val_u64(tf_dec_t *d, const json_t *v, const char *label,
                      uint64_t min, uint64_t max, uint64_t *out)
{
    if (!json_is_integer(v))
        return tf_dec_fail(d, TF_EINVAL, "%s: expected an integer", label);
    json_int_t i = json_integer_value(v);
    if (i < 0 || (uint64_t)i < min || (uint64_t)i > max)
        return tf_dec_fail(d, TF_EINVAL,
                           "%s: %" JSON_INTEGER_FORMAT
                           " is out of range (%" PRIu64 "..%" PRIu64 ")",
                           label, i, min, max);
    *out = (uint64_t)i;
    return 0;
}

/* Borrows the string value of v after checking type and byte length. */
static int tf_val_str(tf_dec_t *d, const json_t *v, const char *label,
                      size_t maxlen, const char **out)
{
    if (!json_is_string(v))
        return tf_dec_fail(d, TF_EINVAL, "%s: expected a string", label);
    size_t n = json_string_length(v);
    if (n > maxlen)
        return tf_dec_fail(d, TF_EINVAL, "%s: longer than %zu bytes", label,
                           maxlen);
    /* The parser refuses "\u0000", but a tree built by the encoder is
     * checked here too. */
    if (strlen(json_string_value(v)) != n)
        return tf_dec_fail(d, TF_EINVAL, "%s: contains a NUL byte", label);
    *out = json_string_value(v);
    return 0;
}

static int tf_val_strdup(tf_dec_t *d, const json_t *v, const char *label,
                         size_t maxlen, char **out)
{
    const char *s;
    int rc = tf_val_str(d, v, label, maxlen, &s);
    if (rc)
        return rc;
    *out = strdup(s);
    return *out ? 0 : tf_dec_oom(d);
}

static int tf_val_name(tf_dec_t *d, const json_t *v, const char *label,
                       char **out)
{
    const char *s;
    char q[TF__QUOTE_MAX + 4];
    int rc = tf_val_str(d, v, label, SIZE_MAX, &s);
    if (rc)
        return rc;
    if (!tf_name_valid(s)) {
        tf_dec_quote(q, s);
        return tf_dec_fail(d, TF_EINVAL,
                           "%s: \"%s\" is not a valid name (1..64 of "
                           "[A-Za-z0-9._-], starting with a letter or digit)",
                           label, q);
    }
    *out = strdup(s);
    return *out ? 0 : tf_dec_oom(d);
}

/* ------------------------------------------------------------------ */
/* Decoding: one member of an object                                    */

/* Finds obj[key], naming it "path.key" in label; a missing member is an
 * error. */
static const json_t *tf_dec_get(tf_dec_t *d, const json_t *obj,
                                const char *path, const char *key,
                                char label[TF__LABEL_MAX], int *rc)
{
    tf_label_member(label, path, key);
    const json_t *v = json_object_get(obj, key);
    *rc = v ? 0
            : tf_dec_fail(d, TF_EINVAL, "%s: required field missing", label);
    return v;
}

static int tf_dec_u64(tf_dec_t *d, const json_t *obj, const char *path,
                      const char *key, uint64_t min, uint64_t max,
                      uint64_t *out)
{
    char label[TF__LABEL_MAX];
    int rc;
    const json_t *v = tf_dec_get(d, obj, path, key, label, &rc);
    return v ? tf_val_u64(d, v, label, min, max, out) : rc;
}

static int tf_dec_u32(tf_dec_t *d, const json_t *obj, const char *path,
                      const char *key, uint32_t min, uint32_t max,
                      uint32_t *out)
{
    uint64_t v;
    int rc = tf_dec_u64(d, obj, path, key, min, max, &v);
    if (!rc)
        *out = (uint32_t)v;
    return rc;
}

static int tf_dec_int(tf_dec_t *d, const json_t *obj, const char *path,
                      const char *key, int min, int max, int *out)
{
    uint64_t v;
    int rc = tf_dec_u64(d, obj, path, key, (uint64_t)min, (uint64_t)max, &v);
    if (!rc)
        *out = (int)v;
    return rc;
}

static int tf_dec_time(tf_dec_t *d, const json_t *obj, const char *path,
                       const char *key, int64_t *out)
{
    uint64_t v;
    int rc = tf_dec_u64(d, obj, path, key, 0, TF_PROTO_MAX_ID, &v);
    if (!rc)
        *out = (int64_t)v;
    return rc;
}

static int tf_dec_str(tf_dec_t *d, const json_t *obj, const char *path,
                      const char *key, size_t maxlen, char **out)
{
    char label[TF__LABEL_MAX];
    int rc;
    const json_t *v = tf_dec_get(d, obj, path, key, label, &rc);
    return v ? tf_val_strdup(d, v, label, maxlen, out) : rc;
}

static int tf_dec_name(tf_dec_t *d, const json_t *obj, const char *path,
                       const char *key, char **out)
{
    char label[TF__LABEL_MAX];
    int rc;
    const json_t *v = tf_dec_get(d, obj, path, key, label, &rc);
    return v ? tf_val_name(d, v, label, out) : rc;
}

static int tf_dec_bool(tf_dec_t *d, const json_t *obj, const char *path,
                       const char *key, bool *out)
{
    char label[TF__LABEL_MAX];
    int rc;
    const json_t *v = tf_dec_get(d, obj, path, key, label, &rc);
    if (!v)
        return rc;
    if (!json_is_boolean(v))
        return tf_dec_fail(d, TF_EINVAL, "%s: expected true or false", label);
    *out = json_is_true(v);
    return 0;
}

/* A field that is exactly 64 lower-case hex characters (nonce, auth). */
static int tf_dec_hex64(tf_dec_t *d, const json_t *obj, const char *path,
                        const char *key, char out[TF_PROTO_NONCE_HEX + 1])
{
    char label[TF__LABEL_MAX];
    const char *s;
    int rc;
    const json_t *v = tf_dec_get(d, obj, path, key, label, &rc);
    if (!v)
        return rc;
    if ((rc = tf_val_str(d, v, label, SIZE_MAX, &s)))
        return rc;
    bool ok = strlen(s) == TF_PROTO_NONCE_HEX;
    for (size_t i = 0; ok && s[i]; i++)
        ok = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f');
    if (!ok)
        return tf_dec_fail(d, TF_EINVAL,
                           "%s: expected %d lower-case hex characters", label,
                           TF_PROTO_NONCE_HEX);
    memcpy(out, s, TF_PROTO_NONCE_HEX + 1);
    return 0;
}

static int tf_dec_result(tf_dec_t *d, const json_t *obj, const char *path,
                         const char *key, tf_result_t *out)
{
    char label[TF__LABEL_MAX];
    char q[TF__QUOTE_MAX + 4];
    const char *s;
    int rc;
    const json_t *v = tf_dec_get(d, obj, path, key, label, &rc);
    if (!v)
        return rc;
    if ((rc = tf_val_str(d, v, label, SIZE_MAX, &s)))
        return rc;
    if (tf_result_parse(s, out) != 0) {
        tf_dec_quote(q, s);
        return tf_dec_fail(d, TF_EINVAL, "%s: unknown result \"%s\"", label,
                           q);
    }
    return 0;
}

/* An integer in min..max, or null (then *has is false and *out 0). */
static int tf_dec_opt_int(tf_dec_t *d, const json_t *obj, const char *path,
                          const char *key, int min, int max, bool *has,
                          int *out)
{
    char label[TF__LABEL_MAX];
    uint64_t v;
    int rc;
    const json_t *j = tf_dec_get(d, obj, path, key, label, &rc);
    if (!j)
        return rc;
    *has = false;
    *out = 0;
    if (json_is_null(j))
        return 0;
    if (!json_is_integer(j))
        return tf_dec_fail(d, TF_EINVAL, "%s: expected an integer or null",
                           label);
    if ((rc = tf_val_u64(d, j, label, (uint64_t)min, (uint64_t)max, &v)))
        return rc;
    *has = true;
    *out = (int)v;
    return 0;
}

/* Finds an array member and checks its size is within min..max. */
static const json_t *tf_dec_array(tf_dec_t *d, const json_t *obj,
                                  const char *path, const char *key,
                                  size_t min, size_t max,
                                  char label[TF__LABEL_MAX], int *rc)
{
    const json_t *v = tf_dec_get(d, obj, path, key, label, rc);
    if (!v)
        return NULL;
    if (!json_is_array(v)) {
        *rc = tf_dec_fail(d, TF_EINVAL, "%s: expected an array", label);
        return NULL;
    }
    size_t n = json_array_size(v);
    if (n < min && min == 1) {
        *rc = tf_dec_fail(d, TF_EINVAL, "%s: must not be empty", label);
        return NULL;
    }
    if (n < min || n > max) {
        *rc = tf_dec_fail(d, TF_EINVAL,
                          "%s: has %zu entries, must have %zu..%zu", label, n,
                          min, max);
        return NULL;
    }
    return v;
}

/* An array of strings into a NULL-terminated vector; names requires each
 * entry to be a valid name. On failure *out may hold a partial vector whose
 * *n entries the caller frees. */
static int tf_dec_strv(tf_dec_t *d, const json_t *obj, const char *path,
                       const char *key, size_t min, bool names, char ***out,
                       size_t *n)
{
    char label[TF__LABEL_MAX], elabel[TF__LABEL_MAX];
    int rc;
    const json_t *a = tf_dec_array(d, obj, path, key, min, SIZE_MAX / 2,
                                   label, &rc);
    if (!a)
        return rc;
    size_t count = json_array_size(a);
    *out = calloc(count + 1, sizeof **out);
    if (!*out)
        return tf_dec_oom(d);
    *n = count;
    for (size_t i = 0; i < count; i++) {
        const json_t *v = json_array_get(a, i);
        tf_label(elabel, "%s[%zu]", label, i);
        rc = names ? tf_val_name(d, v, elabel, &(*out)[i])
                   : tf_val_strdup(d, v, elabel, SIZE_MAX, &(*out)[i]);
        if (rc)
            return rc;
    }
    return 0;
}

/* An object of string -> string. Keys must be non-empty; environment keys
 * must also not contain '=' (it would change the variable's name). */
static int tf_dec_kv(tf_dec_t *d, const json_t *obj, const char *path,
                     const char *key, bool env, tf_kv_t **out, size_t *n)
{
    char label[TF__LABEL_MAX], elabel[TF__LABEL_MAX];
    char q[TF__QUOTE_MAX + 4];
    const char *k;
    const json_t *v;
    int rc;
    const json_t *o = tf_dec_get(d, obj, path, key, label, &rc);
    if (!o)
        return rc;
    if (!json_is_object(o))
        return tf_dec_fail(d, TF_EINVAL, "%s: expected an object", label);
    size_t count = json_object_size(o);
    *out = NULL;
    *n = 0;
    if (count == 0)
        return 0;
    *out = calloc(count, sizeof **out);
    if (!*out)
        return tf_dec_oom(d);
    *n = count;
    size_t i = 0;
    json_object_foreach((json_t *)o, k, v) {
        tf_dec_quote(q, k);
        tf_label(elabel, "%s[\"%s\"]", label, q);
        if (k[0] == '\0')
            return tf_dec_fail(d, TF_EINVAL, "%s: empty key", label);
        if (env && strchr(k, '='))
            return tf_dec_fail(d, TF_EINVAL, "%s: key contains '='", elabel);
        (*out)[i].key = strdup(k);
        if (!(*out)[i].key)
            return tf_dec_oom(d);
        if ((rc = tf_val_strdup(d, v, elabel, SIZE_MAX, &(*out)[i].value)))
            return rc;
        i++;
    }
    return 0;
}

/* An optional farm id (welcome.farm, hello.running[].farm) into out
 * (TF_PROTO_FARM_MAX + 1 bytes); absent leaves "". */
static int tf_dec_farm(tf_dec_t *d, const json_t *obj, const char *path,
                       char out[TF_PROTO_FARM_MAX + 1])
{
    char label[TF__LABEL_MAX];
    const char *s;
    int rc;
    out[0] = '\0';
    if (!json_object_get(obj, "farm"))
        return 0;
    const json_t *v = tf_dec_get(d, obj, path, "farm", label, &rc);
    if (!v)
        return rc;
    if ((rc = tf_val_str(d, v, label, SIZE_MAX, &s)))
        return rc;
    size_t n = strlen(s);
    bool ok = n >= 1 && n <= TF_PROTO_FARM_MAX;
    for (size_t i = 0; ok && s[i]; i++)
        ok = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f');
    if (!ok)
        return tf_dec_fail(d, TF_EINVAL,
                           "%s: expected 1 to %d lower-case hex characters",
                           label, TF_PROTO_FARM_MAX);
    memcpy(out, s, n + 1);
    return 0;
}

/* An array of {build_id, seq} objects (hello.running, welcome.resume),
 * each with an optional farm. */
static int tf_dec_running(tf_dec_t *d, const json_t *obj, const char *path,
                          const char *key, size_t max, tf_running_t **out,
                          size_t *n)
{
    char label[TF__LABEL_MAX], elabel[TF__LABEL_MAX];
    int rc;
    const json_t *a = tf_dec_array(d, obj, path, key, 0, max, label, &rc);
    if (!a)
        return rc;
    size_t count = json_array_size(a);
    *out = NULL;
    *n = 0;
    if (count == 0)
        return 0;
    *out = calloc(count, sizeof **out);
    if (!*out)
        return tf_dec_oom(d);
    *n = count;
    for (size_t i = 0; i < count; i++) {
        const json_t *e = json_array_get(a, i);
        tf_label(elabel, "%s[%zu]", label, i);
        if (!json_is_object(e))
            return tf_dec_fail(d, TF_EINVAL, "%s: expected an object", elabel);
        if ((rc = tf_dec_u64(d, e, elabel, "build_id", 1, TF_PROTO_MAX_ID,
                             &(*out)[i].build_id)) ||
            (rc = tf_dec_u64(d, e, elabel, "seq", 0, TF_PROTO_MAX_ID,
                             &(*out)[i].seq)) ||
            (rc = tf_dec_farm(d, e, elabel, (*out)[i].farm)))
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Decoding: one message type each                                      */

static int tf_dec_challenge(tf_dec_t *d, const json_t *o, tf_msg_t *m)
{
    const char *p = "challenge";
    int rc;
    if ((rc = tf_dec_int(d, o, p, "protocol", 0, INT_MAX,
                         &m->u.challenge.protocol)) ||
        (rc = tf_dec_hex64(d, o, p, "nonce", m->u.challenge.nonce)) ||
        (rc = tf_dec_str(d, o, p, "master", TF_PROTO_MAX_INFO,
                         &m->u.challenge.master)))
        return rc;
    return 0;
}

static int tf_dec_hello(tf_dec_t *d, const json_t *o, tf_msg_t *m)
{
    const char *p = "hello";
    int rc;
    if ((rc = tf_dec_int(d, o, p, "protocol", 0, INT_MAX,
                         &m->u.hello.protocol)) ||
        (rc = tf_dec_name(d, o, p, "slave", &m->u.hello.slave)) ||
        (rc = tf_dec_hex64(d, o, p, "auth", m->u.hello.auth)) ||
        (rc = tf_dec_str(d, o, p, "version", TF_PROTO_MAX_INFO,
                         &m->u.hello.version)) ||
        (rc = tf_dec_str(d, o, p, "platform", TF_PROTO_MAX_INFO,
                         &m->u.hello.platform)) ||
        (rc = tf_dec_strv(d, o, p, "tags", 0, true, &m->u.hello.tags,
                          &m->u.hello.ntags)) ||
        (rc = tf_dec_u32(d, o, p, "max_builds", 1, UINT32_MAX,
                         &m->u.hello.max_builds)) ||
        (rc = tf_dec_running(d, o, p, "running", TF_PROTO_MAX_RUNNING,
                             &m->u.hello.running, &m->u.hello.nrunning)))
        return rc;
    return 0;
}

static int tf_dec_welcome(tf_dec_t *d, const json_t *o, tf_msg_t *m)
{
    const char *p = "welcome";
    char label[TF__LABEL_MAX], elabel[TF__LABEL_MAX];
    int rc;
    if ((rc = tf_dec_name(d, o, p, "slave", &m->u.welcome.slave)) ||
        (rc = tf_dec_u32(d, o, p, "heartbeat_s", 1, UINT32_MAX,
                         &m->u.welcome.heartbeat_s)) ||
        (rc = tf_dec_running(d, o, p, "resume", SIZE_MAX / 2,
                             &m->u.welcome.resume, &m->u.welcome.nresume)) ||
        (rc = tf_dec_farm(d, o, p, m->u.welcome.farm)))
        return rc;
    const json_t *a = tf_dec_array(d, o, p, "abandon", 0, SIZE_MAX / 2, label,
                                   &rc);
    if (!a)
        return rc;
    size_t count = json_array_size(a);
    if (count == 0)
        return 0;
    m->u.welcome.abandon = calloc(count, sizeof *m->u.welcome.abandon);
    if (!m->u.welcome.abandon)
        return tf_dec_oom(d);
    m->u.welcome.nabandon = count;
    for (size_t i = 0; i < count; i++) {
        tf_label(elabel, "%s[%zu]", label, i);
        if ((rc = tf_val_u64(d, json_array_get(a, i), elabel, 1,
                             TF_PROTO_MAX_ID, &m->u.welcome.abandon[i])))
            return rc;
    }
    return 0;
}

static int tf_dec_error(tf_dec_t *d, const json_t *o, tf_msg_t *m)
{
    const char *p = "error";
    int rc;
    if ((rc = tf_dec_name(d, o, p, "code", &m->u.error.code)) ||
        (rc = tf_dec_str(d, o, p, "message", TF_PROTO_MAX_TEXTFIELD,
                         &m->u.error.message)))
        return rc;
    return 0;
}

static int tf_dec_ping(tf_dec_t *d, const json_t *o, tf_msg_t *m)
{
    const char *p = m->type == TF_MSG_PING ? "ping" : "pong";
    return tf_dec_u64(d, o, p, "id", 0, TF_PROTO_MAX_ID, &m->u.ping.id);
}

/* ------------------------------------------------------------------ */
/* Decoding and encoding steps: rows of stepspec.h                      */

/* One key of a step (or of an object inside its modifiers) as the wire
 * reads it. off locates the value in the struct the row belongs to:
 * tf_step_spec_t, tf_modifiers_t or tf_stat_rule_t (see TF__BASE). */
typedef struct tf_wire_key {
    const char *key;
    tf_step_kind_t kind;
    bool required;
    size_t max; /* arrays: entry cap */
    size_t off;
} tf_wire_key_t;

/* The struct a row of each kind lives in. */
#define TF__BASE(KIND) TF__BASE_##KIND
#define TF__BASE_TF_SK_NAME tf_step_spec_t
#define TF__BASE_TF_SK_COMMAND tf_step_spec_t
#define TF__BASE_TF_SK_ENV tf_step_spec_t
#define TF__BASE_TF_SK_WORKDIR tf_step_spec_t
#define TF__BASE_TF_SK_SECONDS tf_step_spec_t
#define TF__BASE_TF_SK_FLAG tf_step_spec_t
#define TF__BASE_TF_SK_BUILTIN tf_step_spec_t
#define TF__BASE_TF_SK_MOD_MARKERS tf_modifiers_t
#define TF__BASE_TF_SK_MOD_INFO tf_modifiers_t
#define TF__BASE_TF_SK_MOD_STATS tf_modifiers_t
#define TF__BASE_TF_SK_MOD_SUCCESS tf_modifiers_t
#define TF__BASE_TF_SK_MOD_WARNINGS tf_modifiers_t
#define TF__BASE_TF_SK_TEST_RESULTS tf_step_spec_t

/* Every step key is required on the wire except the builtin and the
 * modifiers' (the modifiers object itself is optional). */
#define TF__STEP_ROW(ID, CK, WK, KIND, MIN, MAX, DEF, FIELD, DOC)              \
    {WK, KIND, KIND < TF_SK_BUILTIN, MAX, offsetof(TF__BASE(KIND), FIELD)},
#define TF__STAT_ROW(CK, WK, KIND, REQ, MAX, FIELD, DOC)                       \
    {WK, KIND, REQ, 0, offsetof(tf_stat_rule_t, FIELD)},
#define TF__MOD_ROW(CK, WK, KIND, REQ, MAX, FIELD, DOC)                        \
    {WK, KIND, REQ, 0, offsetof(tf_modifiers_t, FIELD)},
#define TF__TR_ROW(CK, WK, KIND, REQ, MAX, FIELD, DOC)                         \
    {WK, KIND, REQ, MAX, offsetof(tf_test_spec_t, FIELD)},

static const tf_wire_key_t tf_step_rows[] = {TF_STEP_KEYS(TF__STEP_ROW)};
static const tf_wire_key_t tf_stat_rows[] = {TF_STAT_RULE_KEYS(TF__STAT_ROW)};
static const tf_wire_key_t tf_success_rows[] = {TF_SUCCESS_KEYS(TF__MOD_ROW)};
static const tf_wire_key_t tf_warnings_rows[] = {TF_WARNINGS_KEYS(TF__MOD_ROW)};
static const tf_wire_key_t tf_tr_rows[] = {TF_TEST_RESULTS_KEYS(TF__TR_ROW)};

#define TF__NROWS(a) (sizeof(a) / sizeof((a)[0]))
#define TF__FIELD(base, row, type) ((type *)((char *)(base) + (row)->off))
#define TF__CFIELD(base, row, type)                                            \
    ((const type *)((const char *)(base) + (row)->off))

static bool tf_is_mod_kind(tf_step_kind_t k)
{
    return k >= TF_SK_MOD_MARKERS && k <= TF_SK_MOD_WARNINGS;
}

/* Keys read and written after the modifiers object. */
static bool tf_is_late_kind(tf_step_kind_t k)
{
    return k == TF_SK_TEST_RESULTS;
}

/* A regular expression: a non-empty string of at most TF_PROTO_MAX_REGEX
 * bytes. Whether it compiles is the slave's business (its regex library
 * decides), not the decoder's. */
static int tf_val_regex(tf_dec_t *d, const json_t *v, const char *label,
                        char **out)
{
    const char *s;
    int rc = tf_val_str(d, v, label, TF_PROTO_MAX_REGEX, &s);
    if (rc)
        return rc;
    if (!*s)
        return tf_dec_fail(d, TF_EINVAL, "%s: must not be empty", label);
    *out = strdup(s);
    return *out ? 0 : tf_dec_oom(d);
}

static int tf_dec_rows(tf_dec_t *d, const json_t *o, const char *p,
                       const tf_wire_key_t *rows, size_t n, void *base);

/* modifiers.info: an array of regexes. */
static int tf_dec_mod_info(tf_dec_t *d, const json_t *mo, const char *mp,
                           const tf_wire_key_t *r, tf_modifiers_t *m)
{
    char label[TF__LABEL_MAX], elabel[TF__LABEL_MAX];
    int rc;
    const json_t *a = tf_dec_array(d, mo, mp, r->key, 0, r->max, label, &rc);
    if (!a)
        return rc;
    size_t count = json_array_size(a);
    if (count == 0)
        return 0;
    if (!(m->info = calloc(count, sizeof *m->info)))
        return tf_dec_oom(d);
    m->ninfo = count;
    for (size_t i = 0; i < count; i++) {
        tf_label(elabel, "%s[%zu]", label, i);
        if ((rc = tf_val_regex(d, json_array_get(a, i), elabel, &m->info[i])))
            return rc;
    }
    return 0;
}

/* modifiers.stats: an array of stat rules (TF_STAT_RULE_KEYS). */
static int tf_dec_mod_stats(tf_dec_t *d, const json_t *mo, const char *mp,
                            const tf_wire_key_t *r, tf_modifiers_t *m)
{
    char label[TF__LABEL_MAX], elabel[TF__LABEL_MAX];
    int rc;
    const json_t *a = tf_dec_array(d, mo, mp, r->key, 0, r->max, label, &rc);
    if (!a)
        return rc;
    size_t count = json_array_size(a);
    if (count == 0)
        return 0;
    if (!(m->stats = calloc(count, sizeof *m->stats)))
        return tf_dec_oom(d);
    m->nstats = count;
    for (size_t i = 0; i < count; i++) {
        const json_t *e = json_array_get(a, i);
        tf_label(elabel, "%s[%zu]", label, i);
        if (!json_is_object(e))
            return tf_dec_fail(d, TF_EINVAL, "%s: expected an object", elabel);
        if ((rc = tf_dec_rows(d, e, elabel, tf_stat_rows,
                              TF__NROWS(tf_stat_rows), &m->stats[i])))
            return rc;
    }
    return 0;
}

/* modifiers.success (TF_SUCCESS_KEYS) and modifiers.warnings
 * (TF_WARNINGS_KEYS): objects whose keys are fields of m. */
static int tf_dec_mod_object(tf_dec_t *d, const json_t *mo, const char *mp,
                             const tf_wire_key_t *r, tf_modifiers_t *m)
{
    char label[TF__LABEL_MAX];
    int rc;
    const json_t *o = json_object_get(mo, r->key);
    bool success = r->kind == TF_SK_MOD_SUCCESS;
    tf_label_member(label, mp, r->key);
    if (!json_is_object(o))
        return tf_dec_fail(d, TF_EINVAL, "%s: expected an object", label);
    if ((rc = success ? tf_dec_rows(d, o, label, tf_success_rows,
                                    TF__NROWS(tf_success_rows), m)
                      : tf_dec_rows(d, o, label, tf_warnings_rows,
                                    TF__NROWS(tf_warnings_rows), m)))
        return rc;
    if (success && !m->pass_if && !m->fail_if)
        return tf_dec_fail(d, TF_EINVAL, "%s: needs pass_if or fail_if",
                           label);
    return 0;
}

/* test_results.format: a format testres.h knows. */
static int tf_dec_tr_format(tf_dec_t *d, const json_t *o, const char *p,
                            const tf_wire_key_t *r, tf_test_spec_t *t)
{
    char label[TF__LABEL_MAX];
    char q[TF__QUOTE_MAX + 4];
    const char *fmt;
    int rc;
    const json_t *fv = tf_dec_get(d, o, p, r->key, label, &rc);
    if (!fv || (rc = tf_val_str(d, fv, label, 64, &fmt)))
        return rc;
    t->format = tf_tr_format_parse(fmt);
    if (t->format == TF_TR_FMT_NONE) {
        tf_dec_quote(q, fmt);
        return tf_dec_fail(d, TF_EINVAL, "%s: unknown format \"%s\" (known: "
                           "ctest, gtest, pytest, unittest, automake, tap, "
                           "junit)", label, q);
    }
    return 0;
}

/* test_results.files: globs of report files, for formats that read
 * files (the format is read first). */
static int tf_dec_tr_files(tf_dec_t *d, const json_t *o, const char *p,
                           const tf_wire_key_t *r, tf_test_spec_t *t)
{
    char label[TF__LABEL_MAX], elabel[TF__LABEL_MAX];
    char q[TF__QUOTE_MAX + 4];
    int rc;
    if (!tf_tr_format_files(t->format))
        return tf_dec_fail(d, TF_EINVAL, "%s.%s: not allowed for %s (it "
                           "reads the step's output)", p, r->key,
                           tf_tr_format_name(t->format));
    const json_t *a = tf_dec_array(d, o, p, r->key, 1, r->max, label, &rc);
    if (!a)
        return rc;
    size_t count = json_array_size(a);
    if (!(t->files = calloc(count + 1, sizeof *t->files)))
        return tf_dec_oom(d);
    t->nfiles = count;
    for (size_t i = 0; i < count; i++) {
        tf_label(elabel, "%s[%zu]", label, i);
        if ((rc = tf_val_strdup(d, json_array_get(a, i), elabel,
                                TF_TR_MAX_GLOB, &t->files[i])))
            return rc;
        if (!tf_tr_glob_valid(t->files[i])) {
            tf_dec_quote(q, t->files[i]);
            return tf_dec_fail(d, TF_EINVAL, "%s: \"%s\" is not a valid "
                               "glob (relative, no \".\" or \"..\" "
                               "components, no empty ones)", elabel, q);
        }
    }
    return 0;
}

/* A step's optional "test_results" object (docs/protocol.md): the rows
 * of TF_TEST_RESULTS_KEYS; junit needs files. */
static int tf_dec_test_spec(tf_dec_t *d, const json_t *o, const char *p,
                            const tf_wire_key_t *r, tf_step_spec_t *s)
{
    char tp[TF__LABEL_MAX];
    const json_t *to = json_object_get(o, r->key);
    int rc;
    tf_label_member(tp, p, r->key);
    if (!json_is_object(to))
        return tf_dec_fail(d, TF_EINVAL, "%s: expected an object", tp);
    if (!(s->test_results = calloc(1, sizeof *s->test_results)))
        return tf_dec_oom(d);
    if ((rc = tf_dec_rows(d, to, tp, tf_tr_rows, TF__NROWS(tf_tr_rows),
                          s->test_results)))
        return rc;
    if (s->test_results->format == TF_TR_FMT_JUNIT &&
        !s->test_results->nfiles)
        return tf_dec_fail(d, TF_EINVAL, "%s.files: required for junit", tp);
    return 0;
}

/* One row of a step (or of an object in its modifiers) from o into base.
 * An optional row that is absent leaves its field alone. */
static int tf_dec_row(tf_dec_t *d, const json_t *o, const char *p,
                      const tf_wire_key_t *r, void *base)
{
    char label[TF__LABEL_MAX];
    char q[TF__QUOTE_MAX + 4];
    tf_step_spec_t *s = base;
    int rc;
    if (!r->required && !json_object_get(o, r->key))
        return 0;
    switch (r->kind) {
    case TF_SK_NAME:
        return tf_dec_name(d, o, p, r->key, TF__FIELD(base, r, char *));
    case TF_SK_COMMAND:
        if ((rc = tf_dec_strv(d, o, p, r->key, 1, false, &s->argv, &s->argc)))
            return rc;
        if (s->argv[0][0] == '\0')
            return tf_dec_fail(d, TF_EINVAL, "%s.%s[0]: must not be empty", p,
                               r->key);
        return 0;
    case TF_SK_ENV:
        return tf_dec_kv(d, o, p, r->key, true, &s->env, &s->nenv);
    case TF_SK_WORKDIR:
        if ((rc = tf_dec_str(d, o, p, r->key, SIZE_MAX, &s->workdir)))
            return rc;
        if (!tf_relpath_valid(s->workdir)) {
            tf_label_member(label, p, r->key);
            tf_dec_quote(q, s->workdir);
            return tf_dec_fail(d, TF_EINVAL,
                               "%s: \"%s\" is not a valid relative path",
                               label, q);
        }
        return 0;
    case TF_SK_SECONDS:
    case TF_SK_COUNT:
        return tf_dec_u32(d, o, p, r->key, 0, UINT32_MAX,
                          TF__FIELD(base, r, uint32_t));
    case TF_SK_FLAG:
    case TF_SK_MOD_MARKERS:
        return tf_dec_bool(d, o, p, r->key, TF__FIELD(base, r, bool));
    case TF_SK_BUILTIN:
        if ((rc = tf_dec_str(d, o, p, r->key, 64, &s->builtin)))
            return rc;
        if (strcmp(s->builtin, TF_BUILTIN_SOURCE) != 0) {
            tf_label_member(label, p, r->key);
            tf_dec_quote(q, s->builtin);
            return tf_dec_fail(d, TF_EINVAL,
                               "%s: unknown builtin \"%s\" (known: source)",
                               label, q);
        }
        return 0;
    case TF_SK_MOD_INFO:
        return tf_dec_mod_info(d, o, p, r, base);
    case TF_SK_MOD_STATS:
        return tf_dec_mod_stats(d, o, p, r, base);
    case TF_SK_MOD_SUCCESS:
    case TF_SK_MOD_WARNINGS:
        return tf_dec_mod_object(d, o, p, r, base);
    case TF_SK_REGEX: {
        const json_t *v = tf_dec_get(d, o, p, r->key, label, &rc);
        return v ? tf_val_regex(d, v, label, TF__FIELD(base, r, char *)) : rc;
    }
    case TF_SK_TEST_RESULTS:
        return tf_dec_test_spec(d, o, p, r, s);
    case TF_SK_TR_FORMAT:
        return tf_dec_tr_format(d, o, p, r, base);
    case TF_SK_TR_FILES:
        return tf_dec_tr_files(d, o, p, r, base);
    }
    return tf_dec_fail(d, TF_EINVAL, "%s.%s: unknown kind", p, r->key);
}

/* The rows[0..n) of o, in order; the first problem stops. Rows of the
 * modifiers' kinds are skipped (tf_dec_modifiers reads them), as are
 * late ones (tf_dec_step reads them after the modifiers). */
static int tf_dec_rows(tf_dec_t *d, const json_t *o, const char *p,
                       const tf_wire_key_t *rows, size_t n, void *base)
{
    int rc;
    for (size_t i = 0; i < n; i++)
        if (!tf_is_mod_kind(rows[i].kind) && !tf_is_late_kind(rows[i].kind) &&
            (rc = tf_dec_row(d, o, p, &rows[i], base)))
            return rc;
    return 0;
}

/* A step's optional "modifiers" object (docs/protocol.md): the step rows
 * of the modifiers' kinds, read from it into a new tf_modifiers_t. */
static int tf_dec_modifiers(tf_dec_t *d, const json_t *o, const char *p,
                            tf_step_spec_t *s)
{
    char mp[TF__LABEL_MAX];
    const json_t *mo = json_object_get(o, "modifiers");
    int rc;
    if (!mo)
        return 0;
    tf_label(mp, "%s.modifiers", p);
    if (!json_is_object(mo))
        return tf_dec_fail(d, TF_EINVAL, "%s: expected an object", mp);
    if (!(s->modifiers = calloc(1, sizeof *s->modifiers)))
        return tf_dec_oom(d);
    for (size_t i = 0; i < TF__NROWS(tf_step_rows); i++)
        if (tf_is_mod_kind(tf_step_rows[i].kind) &&
            (rc = tf_dec_row(d, mo, mp, &tf_step_rows[i], s->modifiers)))
            return rc;
    return 0;
}

static int tf_dec_step(tf_dec_t *d, const json_t *o, const char *p,
                       tf_step_spec_t *s)
{
    int rc = tf_dec_rows(d, o, p, tf_step_rows, TF__NROWS(tf_step_rows), s);
    if (!rc)
        rc = tf_dec_modifiers(d, o, p, s);
    for (size_t i = 0; !rc && i < TF__NROWS(tf_step_rows); i++)
        if (tf_is_late_kind(tf_step_rows[i].kind))
            rc = tf_dec_row(d, o, p, &tf_step_rows[i], s);
    return rc;
}

/* build_start.source, when present. */
static int tf_dec_source(tf_dec_t *d, const json_t *o, tf_msg_t *m)
{
    const char *p = "build_start.source";
    char label[TF__LABEL_MAX];
    char q[TF__QUOTE_MAX + 4];
    const json_t *so = json_object_get(o, "source");
    int rc;
    if (!so)
        return 0;
    if (!json_is_object(so))
        return tf_dec_fail(d, TF_EINVAL, "%s: expected an object", p);
    tf_source_t *src = calloc(1, sizeof *src);
    if (!src)
        return tf_dec_oom(d);
    m->u.build_start.source = src;
    if ((rc = tf_dec_str(d, so, p, "repository", TF_REPO_MAX,
                         &src->repository)) ||
        (rc = tf_dec_str(d, so, p, "branch", TF_REF_MAX, &src->branch)) ||
        (rc = tf_dec_str(d, so, p, "revision", TF_REF_MAX, &src->revision)))
        return rc;
    if (!tf_repo_url_valid(src->repository)) {
        tf_dec_quote(q, src->repository);
        return tf_dec_fail(d, TF_EINVAL, "%s.repository: \"%s\" is not a "
                           "valid repository", p, q);
    }
    if (!tf_git_ref_valid(src->branch)) {
        tf_dec_quote(q, src->branch);
        return tf_dec_fail(d, TF_EINVAL, "%s.branch: \"%s\" is not a valid "
                           "branch name", p, q);
    }
    if (!tf_git_rev_valid(src->revision)) {
        tf_dec_quote(q, src->revision);
        return tf_dec_fail(d, TF_EINVAL, "%s.revision: \"%s\" is not a "
                           "valid revision", p, q);
    }
    const json_t *pa = tf_dec_get(d, so, p, "patch", label, &rc);
    if (!pa)
        return rc;
    if (json_is_null(pa))
        return 0;
    if (!json_is_object(pa))
        return tf_dec_fail(d, TF_EINVAL, "%s: expected an object or null",
                           label);
    src->has_patch = true;
    if ((rc = tf_dec_hex64(d, pa, label, "sha256", src->patch_sha256)) ||
        (rc = tf_dec_u64(d, pa, label, "size", 0, TF_PROTO_MAX_ID,
                         &src->patch_size)))
        return rc;
    return 0;
}

static int tf_dec_build_start(tf_dec_t *d, const json_t *o, tf_msg_t *m)
{
    const char *p = "build_start";
    char label[TF__LABEL_MAX], elabel[TF__LABEL_MAX];
    int rc;
    if ((rc = tf_dec_u64(d, o, p, "build_id", 1, TF_PROTO_MAX_ID,
                         &m->u.build_start.build_id)) ||
        (rc = tf_dec_name(d, o, p, "builder", &m->u.build_start.builder)) ||
        (rc = tf_dec_u64(d, o, p, "number", 0, TF_PROTO_MAX_ID,
                         &m->u.build_start.number)) ||
        (rc = tf_dec_name(d, o, p, "workdir", &m->u.build_start.workdir)) ||
        (rc = tf_dec_kv(d, o, p, "properties", false,
                        &m->u.build_start.props, &m->u.build_start.nprops)))
        return rc;
    const json_t *a = tf_dec_array(d, o, p, "steps", 1, TF_PROTO_MAX_STEPS,
                                   label, &rc);
    if (!a)
        return rc;
    size_t count = json_array_size(a);
    m->u.build_start.steps = calloc(count, sizeof *m->u.build_start.steps);
    if (!m->u.build_start.steps)
        return tf_dec_oom(d);
    m->u.build_start.nsteps = count;
    for (size_t i = 0; i < count; i++) {
        const json_t *s = json_array_get(a, i);
        tf_label(elabel, "%s[%zu]", label, i);
        if (!json_is_object(s))
            return tf_dec_fail(d, TF_EINVAL, "%s: expected an object", elabel);
        if ((rc = tf_dec_step(d, s, elabel, &m->u.build_start.steps[i])))
            return rc;
    }
    return tf_dec_source(d, o, m);
}

static int tf_dec_build_abort(tf_dec_t *d, const json_t *o, tf_msg_t *m)
{
    const char *p = "build_abort";
    int rc;
    if ((rc = tf_dec_u64(d, o, p, "build_id", 1, TF_PROTO_MAX_ID,
                         &m->u.build_abort.build_id)) ||
        (rc = tf_dec_str(d, o, p, "reason", TF_PROTO_MAX_TEXTFIELD,
                         &m->u.build_abort.reason)))
        return rc;
    return 0;
}

static int tf_dec_ack(tf_dec_t *d, const json_t *o, tf_msg_t *m)
{
    const char *p = "ack";
    int rc;
    if ((rc = tf_dec_u64(d, o, p, "build_id", 1, TF_PROTO_MAX_ID,
                         &m->u.ack.build_id)) ||
        (rc = tf_dec_u64(d, o, p, "seq", 0, TF_PROTO_MAX_ID, &m->u.ack.seq)))
        return rc;
    return 0;
}

static int tf_dec_step_started(tf_dec_t *d, const json_t *o, tf_msg_t *m)
{
    const char *p = "step_started";
    int rc;
    if ((rc = tf_dec_u64(d, o, p, "build_id", 1, TF_PROTO_MAX_ID,
                         &m->u.step_started.build_id)) ||
        (rc = tf_dec_u64(d, o, p, "seq", 1, TF_PROTO_MAX_ID,
                         &m->u.step_started.seq)) ||
        (rc = tf_dec_u32(d, o, p, "step", 0, TF_PROTO_MAX_STEPS - 1,
                         &m->u.step_started.step)) ||
        (rc = tf_dec_name(d, o, p, "name", &m->u.step_started.name)) ||
        (rc = tf_dec_time(d, o, p, "time_ms", &m->u.step_started.time_ms)))
        return rc;
    return 0;
}

/* step_finished.stats: an object of name -> finite number. */
static int tf_dec_stats(tf_dec_t *d, const json_t *so, const char *label,
                        tf_msg_t *m)
{
    char elabel[TF__LABEL_MAX];
    char q[TF__QUOTE_MAX + 4];
    const char *k;
    const json_t *v;
    if (!json_is_object(so))
        return tf_dec_fail(d, TF_EINVAL, "%s: expected an object", label);
    size_t count = json_object_size(so);
    if (count > TF_PROTO_MAX_STATS)
        return tf_dec_fail(d, TF_EINVAL, "%s: has %zu entries, at most %d",
                           label, count, TF_PROTO_MAX_STATS);
    if (count == 0)
        return 0;
    tf_stat_t *st = calloc(count, sizeof *st);
    if (!st)
        return tf_dec_oom(d);
    m->u.step_finished.stats = st;
    size_t i = 0;
    json_object_foreach((json_t *)so, k, v) {
        tf_dec_quote(q, k);
        tf_label(elabel, "%s[\"%s\"]", label, q);
        if (!tf_name_valid(k))
            return tf_dec_fail(d, TF_EINVAL, "%s: \"%s\" is not a valid name",
                               label, q);
        if (!json_is_number(v))
            return tf_dec_fail(d, TF_EINVAL, "%s: expected a number", elabel);
        double x = json_number_value(v);
        if (!isfinite(x))
            return tf_dec_fail(d, TF_EINVAL, "%s: not a finite number",
                               elabel);
        snprintf(st[i].name, sizeof st[i].name, "%s", k);
        st[i].value = x;
        m->u.step_finished.nstats = ++i;
    }
    return 0;
}

/* The optional fields command modifiers add to step_finished. */
static int tf_dec_step_extracts(tf_dec_t *d, const json_t *o, const char *p,
                                tf_msg_t *m)
{
    char label[TF__LABEL_MAX];
    int rc;
    if (json_object_get(o, "info") &&
        (rc = tf_dec_str(d, o, p, "info", TF_PROTO_MAX_INFO_TEXT,
                         &m->u.step_finished.info)))
        return rc;
    const json_t *so = json_object_get(o, "stats");
    if (so) {
        tf_label(label, "%s.stats", p);
        if ((rc = tf_dec_stats(d, so, label, m)))
            return rc;
    }
    if (json_object_get(o, "warnings")) {
        if ((rc = tf_dec_u64(d, o, p, "warnings", 0, TF_PROTO_MAX_ID,
                             &m->u.step_finished.warnings)))
            return rc;
        m->u.step_finished.has_warnings = true;
    }
    return 0;
}

static int tf_dec_step_finished(tf_dec_t *d, const json_t *o, tf_msg_t *m)
{
    const char *p = "step_finished";
    int rc;
    if ((rc = tf_dec_u64(d, o, p, "build_id", 1, TF_PROTO_MAX_ID,
                         &m->u.step_finished.build_id)) ||
        (rc = tf_dec_u64(d, o, p, "seq", 1, TF_PROTO_MAX_ID,
                         &m->u.step_finished.seq)) ||
        (rc = tf_dec_u32(d, o, p, "step", 0, TF_PROTO_MAX_STEPS - 1,
                         &m->u.step_finished.step)) ||
        (rc = tf_dec_result(d, o, p, "result", &m->u.step_finished.result)) ||
        (rc = tf_dec_opt_int(d, o, p, "exit_code", 0, INT_MAX,
                             &m->u.step_finished.has_exit_code,
                             &m->u.step_finished.exit_code)) ||
        (rc = tf_dec_opt_int(d, o, p, "signal", 1, INT_MAX,
                             &m->u.step_finished.has_signal,
                             &m->u.step_finished.signal)) ||
        (rc = tf_dec_bool(d, o, p, "timed_out",
                          &m->u.step_finished.timed_out)) ||
        (rc = tf_dec_time(d, o, p, "duration_ms",
                          &m->u.step_finished.duration_ms)) ||
        (rc = tf_dec_time(d, o, p, "time_ms", &m->u.step_finished.time_ms)) ||
        (rc = tf_dec_str(d, o, p, "text", TF_PROTO_MAX_TEXTFIELD,
                         &m->u.step_finished.text)))
        return rc;
    if ((rc = tf_dec_step_extracts(d, o, p, m)))
        return rc;
    if (!json_object_get(o, "properties"))
        return 0;
    if ((rc = tf_dec_kv(d, o, p, "properties", false,
                        &m->u.step_finished.props,
                        &m->u.step_finished.nprops)))
        return rc;
    if (m->u.step_finished.nprops > TF_PROTO_MAX_PROPS)
        return tf_dec_fail(d, TF_EINVAL, "%s.properties: more than %d",
                           p, TF_PROTO_MAX_PROPS);
    for (size_t i = 0; i < m->u.step_finished.nprops; i++) {
        const tf_kv_t *kv = &m->u.step_finished.props[i];
        char q[TF__QUOTE_MAX + 4];
        if (!tf_name_valid(kv->key) ||
            strlen(kv->value) > TF_PROTO_MAX_TEXTFIELD)
            return tf_dec_fail(d, TF_EINVAL, "%s.properties: names must be "
                               "valid names and values at most %d bytes",
                               p, TF_PROTO_MAX_TEXTFIELD);
        /* The master reuses it as the revision of a rebuild, which goes
         * back to a slave in build_start.source.revision: it must pass
         * that field's rule now, not wedge a queue later. */
        if (strcmp(kv->key, "got_revision") == 0 &&
            (!kv->value[0] || !tf_git_rev_valid(kv->value))) {
            tf_dec_quote(q, kv->value);
            return tf_dec_fail(d, TF_EINVAL, "%s.properties.got_revision: "
                               "\"%s\" is not a valid revision", p, q);
        }
    }
    return 0;
}

static int tf_dec_build_finished(tf_dec_t *d, const json_t *o, tf_msg_t *m)
{
    const char *p = "build_finished";
    int rc;
    if ((rc = tf_dec_u64(d, o, p, "build_id", 1, TF_PROTO_MAX_ID,
                         &m->u.build_finished.build_id)) ||
        (rc = tf_dec_u64(d, o, p, "seq", 1, TF_PROTO_MAX_ID,
                         &m->u.build_finished.seq)) ||
        (rc = tf_dec_result(d, o, p, "result",
                            &m->u.build_finished.result)) ||
        (rc = tf_dec_time(d, o, p, "time_ms", &m->u.build_finished.time_ms)))
        return rc;
    return 0;
}

static int tf_dec_drain(tf_dec_t *d, const json_t *o, tf_msg_t *m)
{
    return 0;
}

/* An optional string member of at most maxlen bytes; absent leaves *out
 * NULL. */
static int tf_dec_opt_str(tf_dec_t *d, const json_t *obj, const char *path,
                          const char *key, size_t maxlen, char **out)
{
    *out = NULL;
    if (!json_object_get(obj, key))
        return 0;
    return tf_dec_str(d, obj, path, key, maxlen, out);
}

/* One element of test_results.results. */
static int tf_dec_test_result(tf_dec_t *d, const json_t *e, const char *p,
                              tf_test_result_t *r)
{
    char label[TF__LABEL_MAX], lp[TF__LABEL_MAX];
    char q[TF__QUOTE_MAX + 4];
    const char *st;
    uint64_t v;
    int rc;
    r->duration_ms = -1;
    if (!json_is_object(e))
        return tf_dec_fail(d, TF_EINVAL, "%s: expected an object", p);
    if ((rc = tf_dec_str(d, e, p, "suite", TF_TR_MAX_NAME, &r->suite)) ||
        (rc = tf_dec_str(d, e, p, "name", TF_TR_MAX_NAME, &r->name)))
        return rc;
    if (!r->name[0])
        return tf_dec_fail(d, TF_EINVAL, "%s.name: must not be empty", p);
    const json_t *sv = tf_dec_get(d, e, p, "status", label, &rc);
    if (!sv || (rc = tf_val_str(d, sv, label, 16, &st)))
        return rc;
    r->status = tf_tr_status_parse(st);
    if (r->status == TF_TR_NONE) {
        tf_dec_quote(q, st);
        return tf_dec_fail(d, TF_EINVAL, "%s: unknown status \"%s\" (known: "
                           "pass, fail, skip, flaky)", label, q);
    }
    if ((rc = tf_dec_u32(d, e, p, "attempts", 1, UINT32_MAX, &r->attempts)))
        return rc;
    if (json_object_get(e, "duration_ms")) {
        if ((rc = tf_dec_u64(d, e, p, "duration_ms", 0, TF_PROTO_MAX_ID, &v)))
            return rc;
        r->duration_ms = (int64_t)v;
    }
    if ((rc = tf_dec_opt_str(d, e, p, "outcome", TF_TR_MAX_OUTCOME,
                             &r->outcome)) ||
        (rc = tf_dec_opt_str(d, e, p, "message", TF_TR_MAX_MESSAGE,
                             &r->message)))
        return rc;
    const json_t *lo = json_object_get(e, "log");
    if (!lo)
        return 0;
    tf_label(lp, "%s.log", p);
    if (!json_is_object(lo))
        return tf_dec_fail(d, TF_EINVAL, "%s: expected an object", lp);
    r->has_log = true;
    if ((rc = tf_dec_u64(d, lo, lp, "offset", 0, TF_PROTO_MAX_ID,
                         &r->log_offset)) ||
        (rc = tf_dec_u64(d, lo, lp, "line", 1, TF_PROTO_MAX_ID,
                         &r->log_line)) ||
        (rc = tf_dec_u64(d, lo, lp, "lines", 1, TF_PROTO_MAX_ID,
                         &r->log_lines)))
        return rc;
    return 0;
}

static int tf_dec_test_results(tf_dec_t *d, const json_t *o, tf_msg_t *m)
{
    const char *p = "test_results";
    char label[TF__LABEL_MAX], elabel[TF__LABEL_MAX];
    char q[TF__QUOTE_MAX + 4];
    const char *fmt;
    __typeof__(m->u.test_results) *t = &m->u.test_results;
    int rc;
    if ((rc = tf_dec_u64(d, o, p, "build_id", 1, TF_PROTO_MAX_ID,
                         &t->build_id)) ||
        (rc = tf_dec_u64(d, o, p, "seq", 1, TF_PROTO_MAX_ID, &t->seq)) ||
        (rc = tf_dec_u32(d, o, p, "step", 0, TF_PROTO_MAX_STEPS - 1,
                         &t->step)))
        return rc;
    const json_t *fv = tf_dec_get(d, o, p, "format", label, &rc);
    if (!fv || (rc = tf_val_str(d, fv, label, 64, &fmt)))
        return rc;
    t->format = tf_tr_format_parse(fmt);
    if (t->format == TF_TR_FMT_NONE) {
        tf_dec_quote(q, fmt);
        return tf_dec_fail(d, TF_EINVAL, "%s: unknown format \"%s\"", label,
                           q);
    }
    const json_t *a = tf_dec_array(d, o, p, "results", 0,
                                   TF_PROTO_MAX_RESULTS, label, &rc);
    if (!a)
        return rc;
    size_t count = json_array_size(a);
    if (count) {
        if (!(t->results = calloc(count, sizeof *t->results)))
            return tf_dec_oom(d);
        t->nresults = count;
        for (size_t i = 0; i < count; i++) {
            tf_label(elabel, "%s[%zu]", label, i);
            if ((rc = tf_dec_test_result(d, json_array_get(a, i), elabel,
                                         &t->results[i])))
                return rc;
        }
    }
    if ((rc = tf_dec_bool(d, o, p, "last", &t->last)))
        return rc;
    if (json_object_get(o, "total")) {
        if ((rc = tf_dec_u64(d, o, p, "total", 0, TF_PROTO_MAX_ID,
                             &t->total)))
            return rc;
        t->has_total = true;
    }
    if (json_object_get(o, "dropped") &&
        (rc = tf_dec_u64(d, o, p, "dropped", 0, TF_PROTO_MAX_ID,
                         &t->dropped)))
        return rc;
    if (!json_object_get(o, "problems"))
        return 0;
    const json_t *pa = tf_dec_array(d, o, p, "problems", 0,
                                    TF_TR_MAX_PROBLEMS, label, &rc);
    if (!pa)
        return rc;
    count = json_array_size(pa);
    if (!(t->problems = calloc(count + 1, sizeof *t->problems)))
        return tf_dec_oom(d);
    t->nproblems = count;
    for (size_t i = 0; i < count; i++) {
        tf_label(elabel, "%s[%zu]", label, i);
        if ((rc = tf_val_strdup(d, json_array_get(pa, i), elabel,
                                TF_TR_MAX_PROBLEM, &t->problems[i])))
            return rc;
    }
    return 0;
}

typedef int (*tf_dec_fn)(tf_dec_t *d, const json_t *o, tf_msg_t *m);

static const tf_dec_fn tf_dec_fns[TF_MSG__COUNT] = {
    [TF_MSG_CHALLENGE] = tf_dec_challenge,
    [TF_MSG_HELLO] = tf_dec_hello,
    [TF_MSG_WELCOME] = tf_dec_welcome,
    [TF_MSG_ERROR] = tf_dec_error,
    [TF_MSG_PING] = tf_dec_ping,
    [TF_MSG_PONG] = tf_dec_ping,
    [TF_MSG_BUILD_START] = tf_dec_build_start,
    [TF_MSG_BUILD_ABORT] = tf_dec_build_abort,
    [TF_MSG_ACK] = tf_dec_ack,
    [TF_MSG_STEP_STARTED] = tf_dec_step_started,
    [TF_MSG_STEP_FINISHED] = tf_dec_step_finished,
    [TF_MSG_BUILD_FINISHED] = tf_dec_build_finished,
    [TF_MSG_DRAIN] = tf_dec_drain,
    [TF_MSG_TEST_RESULTS] = tf_dec_test_results,
};

/* Validates a parsed message into m (zeroed by the caller). On failure m
 * may hold partial allocations: the caller clears it. */
static int tf_msg_from_json(tf_dec_t *d, const json_t *root, tf_msg_t *m)
{
    char q[TF__QUOTE_MAX + 4];
    if (json_is_array(root))
        return tf_dec_fail(d, TF_EINVAL,
                           "message is a JSON array, expected an object");
    if (!json_is_object(root))
        return tf_dec_fail(d, TF_EINVAL, "message is not a JSON object");
    const json_t *t = json_object_get(root, "type");
    if (!t)
        return tf_dec_fail(d, TF_EINVAL, "message has no \"type\" field");
    if (!json_is_string(t))
        return tf_dec_fail(d, TF_EINVAL, "type: expected a string");
    const char *name = json_string_value(t);
    for (int i = TF_MSG_NONE + 1; i < TF_MSG__COUNT; i++) {
        if (strcmp(name, tf_msg_names[i]) == 0) {
            m->type = (tf_msg_type_t)i;
            return tf_dec_fns[i](d, root, m);
        }
    }
    tf_dec_quote(q, name);
    return tf_dec_fail(d, TF_EINVAL, "unknown message type \"%s\"", q);
}

/* tf_msg_decode(), with the one-pass reader of msgfast.c tried first when
 * fast is set. That reader only accepts; whatever it leaves goes through
 * jansson here, so every refusal is worded below. */
static int tf_msg_decode_as(const char *text, size_t len, tf_msg_t *out,
                            char *err, size_t errlen, bool fast)
{
    tf_dec_t d = {err, errlen};
    json_error_t je;
    int rc;

    memset(out, 0, sizeof *out);
    out->type = TF_MSG_NONE;
    if (err && errlen)
        err[0] = '\0';
    if (!text)
        return tf_dec_fail(&d, TF_EINVAL, "no message");
    if (len > TF_PROTO_MAX_TEXT)
        return tf_dec_fail(&d, TF_E2BIG,
                           "control message of %zu bytes is over the %d-byte "
                           "limit",
                           len, TF_PROTO_MAX_TEXT);
    if (fast && tf__msg_decode_fast(text, len, out))
        return 0;
    json_t *root = json_loadb(text, len,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root) {
        if (json_error_code(&je) == json_error_out_of_memory)
            return tf_dec_oom(&d);
        return tf_dec_fail(&d, TF_EINVAL,
                           "not valid JSON: %s (line %d, column %d)", je.text,
                           je.line, je.column);
    }
    rc = tf_msg_from_json(&d, root, out);
    json_decref(root);
    if (rc == 0 && out->type == TF_MSG_TEST_RESULTS &&
        len > TF_PROTO_MAX_RESULTS_TEXT)
        rc = tf_dec_fail(&d, TF_E2BIG,
                         "test_results message of %zu bytes is over the "
                         "%d-byte limit", len, TF_PROTO_MAX_RESULTS_TEXT);
    if (rc)
        tf_msg_clear(out);
    return rc;
}

int tf_msg_decode(const char *text, size_t len, tf_msg_t *out, char *err,
                  size_t errlen)
{
    return tf_msg_decode_as(text, len, out, err, errlen, true);
}

int tf__msg_decode_slow(const char *text, size_t len, tf_msg_t *out,
                        char *err, size_t errlen)
{
    return tf_msg_decode_as(text, len, out, err, errlen, false);
}

/* ------------------------------------------------------------------ */
/* Encoding                                                             */

/* The encoder collects the first failure in rc and keeps going; the tree
 * is thrown away if rc is set, which keeps every builder free of checks. */
typedef struct tf_enc {
    int rc;
} tf_enc_t;

static void tf_enc_failed(tf_enc_t *e, int rc)
{
    if (!e->rc)
        e->rc = rc;
}

/* A JSON string from s (NULL encodes as "", which the validator then
 * judges like any other value). */
static json_t *tf_enc_str(tf_enc_t *e, const char *s)
{
    if (!s)
        s = "";
    if (!tf_utf8_valid(s, strlen(s))) {
        tf_enc_failed(e, TF_EINVAL);
        return NULL;
    }
    json_t *v = json_string_nocheck(s);
    if (!v)
        tf_enc_failed(e, TF_ENOMEM);
    return v;
}

/* The fixed-size hex fields must be terminated inside their array. */
static json_t *tf_enc_hex(tf_enc_t *e, const char s[TF_PROTO_NONCE_HEX + 1])
{
    if (strnlen(s, TF_PROTO_NONCE_HEX + 1) > TF_PROTO_NONCE_HEX) {
        tf_enc_failed(e, TF_EINVAL);
        return NULL;
    }
    return tf_enc_str(e, s);
}

static json_t *tf_enc_int(tf_enc_t *e, uint64_t v)
{
    if (v > (uint64_t)INT64_MAX) {
        tf_enc_failed(e, TF_EINVAL);
        return NULL;
    }
    json_t *j = json_integer((json_int_t)v);
    if (!j)
        tf_enc_failed(e, TF_ENOMEM);
    return j;
}

/* Signed values: negative ones are emitted as they are and refused by the
 * validator, with the same rule as on the wire. */
static json_t *tf_enc_sint(tf_enc_t *e, int64_t v)
{
    json_t *j = json_integer((json_int_t)v);
    if (!j)
        tf_enc_failed(e, TF_ENOMEM);
    return j;
}

static json_t *tf_enc_new(tf_enc_t *e, json_t *v)
{
    if (!v)
        tf_enc_failed(e, TF_ENOMEM);
    return v;
}

/* Sets obj[key] = v, stealing v; a NULL v means a failure already noted. */
static void tf_enc_set(tf_enc_t *e, json_t *obj, const char *key, json_t *v)
{
    if (!v) {
        tf_enc_failed(e, TF_ENOMEM);
        return;
    }
    if (json_object_set_new_nocheck(obj, key, v) != 0)
        tf_enc_failed(e, TF_ENOMEM);
}

static void tf_enc_push(tf_enc_t *e, json_t *arr, json_t *v)
{
    if (!v) {
        tf_enc_failed(e, TF_ENOMEM);
        return;
    }
    if (json_array_append_new(arr, v) != 0)
        tf_enc_failed(e, TF_ENOMEM);
}

/* An array from n items; a NULL vector with n > 0 is a caller bug. */
static bool tf_enc_vec_ok(tf_enc_t *e, const void *vec, size_t n)
{
    if (n > 0 && !vec) {
        tf_enc_failed(e, TF_EINVAL);
        return false;
    }
    return true;
}

static json_t *tf_enc_strv(tf_enc_t *e, char *const *v, size_t n)
{
    json_t *a = tf_enc_new(e, json_array());
    if (!a || !tf_enc_vec_ok(e, v, n))
        return a;
    for (size_t i = 0; i < n; i++)
        tf_enc_push(e, a, tf_enc_str(e, v[i]));
    return a;
}

static json_t *tf_enc_kv(tf_enc_t *e, const tf_kv_t *kv, size_t n)
{
    json_t *o = tf_enc_new(e, json_object());
    if (!o || !tf_enc_vec_ok(e, kv, n))
        return o;
    for (size_t i = 0; i < n; i++) {
        const char *k = kv[i].key ? kv[i].key : "";
        if (!tf_utf8_valid(k, strlen(k))) {
            tf_enc_failed(e, TF_EINVAL);
            continue;
        }
        /* A repeated key would be a duplicate on the wire. */
        if (json_object_get(o, k)) {
            tf_enc_failed(e, TF_EINVAL);
            continue;
        }
        tf_enc_set(e, o, k, tf_enc_str(e, kv[i].value));
    }
    return o;
}

static json_t *tf_enc_running(tf_enc_t *e, const tf_running_t *r, size_t n)
{
    json_t *a = tf_enc_new(e, json_array());
    if (!a || !tf_enc_vec_ok(e, r, n))
        return a;
    for (size_t i = 0; i < n; i++) {
        json_t *o = tf_enc_new(e, json_object());
        if (!o)
            break;
        tf_enc_set(e, o, "build_id", tf_enc_int(e, r[i].build_id));
        tf_enc_set(e, o, "seq", tf_enc_int(e, r[i].seq));
        if (r[i].farm[0])
            tf_enc_set(e, o, "farm", tf_enc_str(e, r[i].farm));
        tf_enc_push(e, a, o);
    }
    return a;
}

/* tf_enc_modifiers and tf_enc_step are below tf_enc_rows. */

/* A stat value: integral values within 2^53 as JSON integers (what a
 * reader expects for counts), others as reals; non-finite ones cannot be
 * written in JSON at all. */
static json_t *tf_enc_number(tf_enc_t *e, double x)
{
    if (!isfinite(x)) {
        tf_enc_failed(e, TF_EINVAL);
        return NULL;
    }
    if (x >= -(double)TF_PROTO_MAX_ID && x <= (double)TF_PROTO_MAX_ID &&
        (double)(int64_t)x == x)
        return tf_enc_new(e, json_integer((json_int_t)(int64_t)x));
    return tf_enc_new(e, json_real(x));
}

static json_t *tf_enc_stats(tf_enc_t *e, const tf_stat_t *st, size_t n)
{
    json_t *o = tf_enc_new(e, json_object());
    if (!o || !tf_enc_vec_ok(e, st, n))
        return o;
    for (size_t i = 0; i < n; i++) {
        /* The validator checks the name; a repeat would be a duplicate
         * key on the wire. */
        if (strnlen(st[i].name, sizeof st[i].name) == sizeof st[i].name ||
            json_object_get(o, st[i].name)) {
            tf_enc_failed(e, TF_EINVAL);
            continue;
        }
        tf_enc_set(e, o, st[i].name, tf_enc_number(e, st[i].value));
    }
    return o;
}

static json_t *tf_enc_rows(tf_enc_t *e, json_t *o, const tf_wire_key_t *rows,
                           size_t n, const void *base);

/* The value of one row of base, or NULL when an optional row has nothing
 * to send (or on failure, which e records). */
static json_t *tf_enc_row(tf_enc_t *e, const tf_wire_key_t *r,
                          const void *base)
{
    const tf_step_spec_t *s = base;
    const tf_modifiers_t *m = base;
    switch (r->kind) {
    case TF_SK_NAME:
    case TF_SK_REGEX: {
        const char *v = *TF__CFIELD(base, r, char *);
        return v || r->required ? tf_enc_str(e, v) : NULL;
    }
    case TF_SK_WORKDIR:
        return tf_enc_str(e, s->workdir);
    case TF_SK_COMMAND:
        return tf_enc_strv(e, s->argv, s->argc);
    case TF_SK_ENV:
        return tf_enc_kv(e, s->env, s->nenv);
    case TF_SK_SECONDS:
    case TF_SK_COUNT:
        return tf_enc_int(e, *TF__CFIELD(base, r, uint32_t));
    case TF_SK_FLAG:
    case TF_SK_MOD_MARKERS:
        return tf_enc_new(e, json_boolean(*TF__CFIELD(base, r, bool)));
    case TF_SK_BUILTIN:
        return s->builtin ? tf_enc_str(e, s->builtin) : NULL;
    case TF_SK_MOD_INFO:
        return m->ninfo ? tf_enc_strv(e, m->info, m->ninfo) : NULL;
    case TF_SK_MOD_STATS: {
        if (!m->nstats)
            return NULL;
        json_t *a = tf_enc_new(e, json_array());
        if (a && tf_enc_vec_ok(e, m->stats, m->nstats))
            for (size_t i = 0; i < m->nstats; i++)
                tf_enc_push(e, a,
                            tf_enc_rows(e, tf_enc_new(e, json_object()),
                                        tf_stat_rows, TF__NROWS(tf_stat_rows),
                                        &m->stats[i]));
        return a;
    }
    case TF_SK_MOD_SUCCESS:
        if (!m->pass_if && !m->fail_if)
            return NULL;
        return tf_enc_rows(e, tf_enc_new(e, json_object()), tf_success_rows,
                           TF__NROWS(tf_success_rows), m);
    case TF_SK_MOD_WARNINGS:
        if (!m->warnings)
            return NULL;
        return tf_enc_rows(e, tf_enc_new(e, json_object()), tf_warnings_rows,
                           TF__NROWS(tf_warnings_rows), m);
    case TF_SK_TEST_RESULTS:
        if (!s->test_results)
            return NULL;
        return tf_enc_rows(e, tf_enc_new(e, json_object()), tf_tr_rows,
                           TF__NROWS(tf_tr_rows), s->test_results);
    case TF_SK_TR_FORMAT: {
        const tf_test_spec_t *t = base;
        const char *fmt = tf_tr_format_name(t->format);
        return tf_enc_str(e, fmt ? fmt : "?");
    }
    case TF_SK_TR_FILES: {
        const tf_test_spec_t *t = base;
        return t->nfiles ? tf_enc_strv(e, t->files, t->nfiles) : NULL;
    }
    }
    tf_enc_failed(e, TF_EINVAL);
    return NULL;
}

/* Sets the rows of base on o (NULL when o could not be made); rows of the
 * modifiers' kinds go in o only when base is a tf_modifiers_t, which the
 * caller says by passing the rows of a modifiers object. */
static json_t *tf_enc_rows(tf_enc_t *e, json_t *o, const tf_wire_key_t *rows,
                           size_t n, const void *base)
{
    for (size_t i = 0; o && i < n; i++) {
        if (tf_is_mod_kind(rows[i].kind) || tf_is_late_kind(rows[i].kind))
            continue;
        json_t *v = tf_enc_row(e, &rows[i], base);
        if (v)
            tf_enc_set(e, o, rows[i].key, v);
    }
    return o;
}

static json_t *tf_enc_modifiers(tf_enc_t *e, const tf_modifiers_t *m)
{
    json_t *o = tf_enc_new(e, json_object());
    for (size_t i = 0; o && i < TF__NROWS(tf_step_rows); i++) {
        if (!tf_is_mod_kind(tf_step_rows[i].kind))
            continue;
        json_t *v = tf_enc_row(e, &tf_step_rows[i], m);
        if (v)
            tf_enc_set(e, o, tf_step_rows[i].key, v);
    }
    return o;
}

static json_t *tf_enc_step(tf_enc_t *e, const tf_step_spec_t *s)
{
    json_t *o = tf_enc_rows(e, tf_enc_new(e, json_object()), tf_step_rows,
                            TF__NROWS(tf_step_rows), s);
    if (o && s->modifiers)
        tf_enc_set(e, o, "modifiers", tf_enc_modifiers(e, s->modifiers));
    for (size_t i = 0; o && i < TF__NROWS(tf_step_rows); i++) {
        if (!tf_is_late_kind(tf_step_rows[i].kind))
            continue;
        json_t *v = tf_enc_row(e, &tf_step_rows[i], s);
        if (v)
            tf_enc_set(e, o, tf_step_rows[i].key, v);
    }
    return o;
}

static json_t *tf_enc_source(tf_enc_t *e, const tf_source_t *src)
{
    json_t *o = tf_enc_new(e, json_object());
    if (!o)
        return NULL;
    tf_enc_set(e, o, "repository", tf_enc_str(e, src->repository));
    tf_enc_set(e, o, "branch", tf_enc_str(e, src->branch));
    tf_enc_set(e, o, "revision", tf_enc_str(e, src->revision));
    if (src->has_patch) {
        json_t *pa = tf_enc_new(e, json_object());
        if (pa) {
            tf_enc_set(e, pa, "sha256", tf_enc_hex(e, src->patch_sha256));
            tf_enc_set(e, pa, "size", tf_enc_int(e, src->patch_size));
        }
        tf_enc_set(e, o, "patch", pa);
    } else {
        tf_enc_set(e, o, "patch", tf_enc_new(e, json_null()));
    }
    return o;
}

static json_t *tf_enc_test_result(tf_enc_t *e, const tf_test_result_t *r)
{
    json_t *o = tf_enc_new(e, json_object());
    const char *st = tf_tr_status_name(r->status);
    if (!o)
        return NULL;
    tf_enc_set(e, o, "suite", tf_enc_str(e, r->suite));
    tf_enc_set(e, o, "name", tf_enc_str(e, r->name));
    tf_enc_set(e, o, "status", tf_enc_str(e, st ? st : "?"));
    tf_enc_set(e, o, "attempts", tf_enc_int(e, r->attempts));
    if (r->duration_ms >= 0)
        tf_enc_set(e, o, "duration_ms", tf_enc_sint(e, r->duration_ms));
    if (r->outcome)
        tf_enc_set(e, o, "outcome", tf_enc_str(e, r->outcome));
    if (r->message)
        tf_enc_set(e, o, "message", tf_enc_str(e, r->message));
    if (r->has_log) {
        json_t *lo = tf_enc_new(e, json_object());
        if (lo) {
            tf_enc_set(e, lo, "offset", tf_enc_int(e, r->log_offset));
            tf_enc_set(e, lo, "line", tf_enc_int(e, r->log_line));
            tf_enc_set(e, lo, "lines", tf_enc_int(e, r->log_lines));
        }
        tf_enc_set(e, o, "log", lo);
    }
    return o;
}

static json_t *tf_enc_opt_int(tf_enc_t *e, bool has, int v)
{
    return has ? tf_enc_sint(e, v) : tf_enc_new(e, json_null());
}

/* Adds the fields of m to o, in the order of docs/protocol.md. */
static void tf_enc_fields(tf_enc_t *e, json_t *o, const tf_msg_t *m)
{
    switch (m->type) {
    case TF_MSG_CHALLENGE:
        tf_enc_set(e, o, "protocol", tf_enc_sint(e, m->u.challenge.protocol));
        tf_enc_set(e, o, "nonce", tf_enc_hex(e, m->u.challenge.nonce));
        tf_enc_set(e, o, "master", tf_enc_str(e, m->u.challenge.master));
        break;
    case TF_MSG_HELLO:
        tf_enc_set(e, o, "protocol", tf_enc_sint(e, m->u.hello.protocol));
        tf_enc_set(e, o, "slave", tf_enc_str(e, m->u.hello.slave));
        tf_enc_set(e, o, "auth", tf_enc_hex(e, m->u.hello.auth));
        tf_enc_set(e, o, "version", tf_enc_str(e, m->u.hello.version));
        tf_enc_set(e, o, "platform", tf_enc_str(e, m->u.hello.platform));
        tf_enc_set(e, o, "tags",
                   tf_enc_strv(e, m->u.hello.tags, m->u.hello.ntags));
        tf_enc_set(e, o, "max_builds", tf_enc_int(e, m->u.hello.max_builds));
        tf_enc_set(e, o, "running",
                   tf_enc_running(e, m->u.hello.running, m->u.hello.nrunning));
        break;
    case TF_MSG_WELCOME: {
        tf_enc_set(e, o, "slave", tf_enc_str(e, m->u.welcome.slave));
        tf_enc_set(e, o, "heartbeat_s", tf_enc_int(e, m->u.welcome.heartbeat_s));
        tf_enc_set(e, o, "resume",
                   tf_enc_running(e, m->u.welcome.resume,
                                  m->u.welcome.nresume));
        json_t *a = tf_enc_new(e, json_array());
        if (a && tf_enc_vec_ok(e, m->u.welcome.abandon, m->u.welcome.nabandon))
            for (size_t i = 0; i < m->u.welcome.nabandon; i++)
                tf_enc_push(e, a, tf_enc_int(e, m->u.welcome.abandon[i]));
        tf_enc_set(e, o, "abandon", a);
        if (m->u.welcome.farm[0])
            tf_enc_set(e, o, "farm", tf_enc_str(e, m->u.welcome.farm));
        break;
    }
    case TF_MSG_ERROR:
        tf_enc_set(e, o, "code", tf_enc_str(e, m->u.error.code));
        tf_enc_set(e, o, "message", tf_enc_str(e, m->u.error.message));
        break;
    case TF_MSG_PING:
    case TF_MSG_PONG:
        tf_enc_set(e, o, "id", tf_enc_int(e, m->u.ping.id));
        break;
    case TF_MSG_BUILD_START: {
        const __typeof__(m->u.build_start) *b = &m->u.build_start;
        tf_enc_set(e, o, "build_id", tf_enc_int(e, b->build_id));
        tf_enc_set(e, o, "builder", tf_enc_str(e, b->builder));
        tf_enc_set(e, o, "number", tf_enc_int(e, b->number));
        tf_enc_set(e, o, "workdir", tf_enc_str(e, b->workdir));
        tf_enc_set(e, o, "properties", tf_enc_kv(e, b->props, b->nprops));
        json_t *a = tf_enc_new(e, json_array());
        if (a && tf_enc_vec_ok(e, b->steps, b->nsteps))
            for (size_t i = 0; i < b->nsteps && !e->rc; i++)
                tf_enc_push(e, a, tf_enc_step(e, &b->steps[i]));
        tf_enc_set(e, o, "steps", a);
        if (b->source)
            tf_enc_set(e, o, "source", tf_enc_source(e, b->source));
        break;
    }
    case TF_MSG_BUILD_ABORT:
        tf_enc_set(e, o, "build_id", tf_enc_int(e, m->u.build_abort.build_id));
        tf_enc_set(e, o, "reason", tf_enc_str(e, m->u.build_abort.reason));
        break;
    case TF_MSG_ACK:
        tf_enc_set(e, o, "build_id", tf_enc_int(e, m->u.ack.build_id));
        tf_enc_set(e, o, "seq", tf_enc_int(e, m->u.ack.seq));
        break;
    case TF_MSG_STEP_STARTED: {
        const __typeof__(m->u.step_started) *s = &m->u.step_started;
        tf_enc_set(e, o, "build_id", tf_enc_int(e, s->build_id));
        tf_enc_set(e, o, "seq", tf_enc_int(e, s->seq));
        tf_enc_set(e, o, "step", tf_enc_int(e, s->step));
        tf_enc_set(e, o, "name", tf_enc_str(e, s->name));
        tf_enc_set(e, o, "time_ms", tf_enc_sint(e, s->time_ms));
        break;
    }
    case TF_MSG_STEP_FINISHED: {
        const __typeof__(m->u.step_finished) *s = &m->u.step_finished;
        tf_enc_set(e, o, "build_id", tf_enc_int(e, s->build_id));
        tf_enc_set(e, o, "seq", tf_enc_int(e, s->seq));
        tf_enc_set(e, o, "step", tf_enc_int(e, s->step));
        tf_enc_set(e, o, "result", tf_enc_str(e, tf_result_name(s->result)));
        tf_enc_set(e, o, "exit_code",
                   tf_enc_opt_int(e, s->has_exit_code, s->exit_code));
        tf_enc_set(e, o, "signal", tf_enc_opt_int(e, s->has_signal, s->signal));
        tf_enc_set(e, o, "timed_out", json_boolean(s->timed_out));
        tf_enc_set(e, o, "duration_ms", tf_enc_sint(e, s->duration_ms));
        tf_enc_set(e, o, "time_ms", tf_enc_sint(e, s->time_ms));
        tf_enc_set(e, o, "text", tf_enc_str(e, s->text));
        if (s->nprops)
            tf_enc_set(e, o, "properties", tf_enc_kv(e, s->props, s->nprops));
        if (s->info)
            tf_enc_set(e, o, "info", tf_enc_str(e, s->info));
        if (s->nstats)
            tf_enc_set(e, o, "stats", tf_enc_stats(e, s->stats, s->nstats));
        if (s->has_warnings)
            tf_enc_set(e, o, "warnings", tf_enc_int(e, s->warnings));
        break;
    }
    case TF_MSG_BUILD_FINISHED: {
        const __typeof__(m->u.build_finished) *s = &m->u.build_finished;
        tf_enc_set(e, o, "build_id", tf_enc_int(e, s->build_id));
        tf_enc_set(e, o, "seq", tf_enc_int(e, s->seq));
        tf_enc_set(e, o, "result", tf_enc_str(e, tf_result_name(s->result)));
        tf_enc_set(e, o, "time_ms", tf_enc_sint(e, s->time_ms));
        break;
    }
    case TF_MSG_DRAIN:
        break;
    case TF_MSG_TEST_RESULTS: {
        const __typeof__(m->u.test_results) *t = &m->u.test_results;
        const char *fmt = tf_tr_format_name(t->format);
        tf_enc_set(e, o, "build_id", tf_enc_int(e, t->build_id));
        tf_enc_set(e, o, "seq", tf_enc_int(e, t->seq));
        tf_enc_set(e, o, "step", tf_enc_int(e, t->step));
        tf_enc_set(e, o, "format", tf_enc_str(e, fmt ? fmt : "?"));
        json_t *a = tf_enc_new(e, json_array());
        if (a && tf_enc_vec_ok(e, t->results, t->nresults))
            for (size_t i = 0; i < t->nresults && !e->rc; i++)
                tf_enc_push(e, a, tf_enc_test_result(e, &t->results[i]));
        tf_enc_set(e, o, "results", a);
        tf_enc_set(e, o, "last", json_boolean(t->last));
        if (t->has_total)
            tf_enc_set(e, o, "total", tf_enc_int(e, t->total));
        if (t->dropped)
            tf_enc_set(e, o, "dropped", tf_enc_int(e, t->dropped));
        if (t->nproblems)
            tf_enc_set(e, o, "problems",
                       tf_enc_strv(e, t->problems, t->nproblems));
        break;
    }
    case TF_MSG_NONE:
    case TF_MSG__COUNT:
        tf_enc_failed(e, TF_EINVAL);
        break;
    }
}

int tf_msg_encode(const tf_msg_t *m, char **out, size_t *len_out)
{
    return tf_msg_encode_err(m, out, len_out, NULL, 0);
}

int tf_msg_encode_err(const tf_msg_t *m, char **out, size_t *len_out,
                      char *err, size_t errlen)
{
    if (m && ((m->type == TF_MSG_ACK && tf__msg_encode_ack(m, out, len_out)) ||
              (m->type == TF_MSG_BUILD_START &&
               tf__msg_encode_build_start(m, out, len_out)))) {
        if (err && errlen)
            err[0] = '\0';
        return 0;
    }
    return tf__msg_encode_slow(m, out, len_out, err, errlen);
}

int tf__msg_encode_slow(const tf_msg_t *m, char **out, size_t *len_out,
                        char *err, size_t errlen)
{
    tf_enc_t e = {0};
    tf_dec_t quiet = {err, errlen};
    tf_msg_t check;
    char *text = NULL;
    json_t *o = NULL;
    int rc = 0;

    *out = NULL;
    if (len_out)
        *len_out = 0;
    if (err && errlen)
        err[0] = '\0';
    const char *name = m ? tf_msg_type_name(m->type) : NULL;
    if (!name)
        return tf_dec_fail(&quiet, TF_EINVAL, "no such message type");
    o = json_object();
    if (!o)
        return tf_dec_oom(&quiet);
    tf_enc_set(&e, o, "type", json_string_nocheck(name));
    tf_enc_fields(&e, o, m);
    if ((rc = e.rc)) {
        if (rc == TF_ENOMEM)
            tf_dec_oom(&quiet);
        else
            tf_dec_fail(&quiet, rc, "%s: a string that is not UTF-8, a "
                        "repeated key, or a number out of range", name);
        goto out;
    }
    /* The decoder's own validator judges the tree, so the encoder cannot
     * emit anything the decoder would refuse. */
    memset(&check, 0, sizeof check);
    rc = tf_msg_from_json(&quiet, o, &check);
    tf_msg_clear(&check);
    if (rc)
        goto out;
    text = json_dumps(o, JSON_COMPACT);
    if (!text) {
        rc = tf_dec_oom(&quiet);
        goto out;
    }
    size_t len = strlen(text);
    size_t cap = m->type == TF_MSG_TEST_RESULTS ? TF_PROTO_MAX_RESULTS_TEXT
                                                : TF_PROTO_MAX_TEXT;
    if (len > cap) {
        rc = tf_dec_fail(&quiet, TF_E2BIG,
                         "%s would be %zu bytes, over the limit of %zu bytes "
                         "for %s", name, len, (size_t)cap,
                         m->type == TF_MSG_TEST_RESULTS ? "test results"
                                                        : "a control message");
        goto out;
    }
    *out = text;
    text = NULL;
    if (len_out)
        *len_out = len;
out:
    free(text);
    json_decref(o);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Authentication                                                       */

void tf_proto_auth(const char *secret, const char nonce[TF_PROTO_NONCE_HEX + 1],
                   char out[TF_PROTO_NONCE_HEX + 1])
{
    if (!secret)
        secret = "";
    tf_hmac_sha256_hex(secret, strlen(secret), nonce,
                       strnlen(nonce, TF_PROTO_NONCE_HEX), out);
}
