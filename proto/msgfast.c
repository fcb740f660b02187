/*
 * msgfast.c - a one-pass decoder for the slave's per-step event messages.
 *
 * Every build makes its slave send step_started, step_finished and
 * build_finished, and the master's loop thread decodes them: with a few
 * thousand builds starting at once that decoding is on the critical path.
 * jansson builds a tree (hash tables, one malloc per value) only for
 * tf_msg_from_json() to copy a handful of integers out of it, so this file
 * reads the common shape directly: one flat object of known keys whose
 * values are integers, printable-ASCII strings without escapes, booleans
 * or null, in any order, with JSON whitespace anywhere it is allowed.
 * ack, ping and pong have that shape too (a slave decodes an ack per
 * event, the master a pong per heartbeat), so they come along.
 *
 * The invariant that makes a second parser safe: it only accepts. Anything
 * it does not handle in full (escapes, non-ASCII, unknown or repeated keys,
 * optional fields it does not know such as stats or properties, fractions,
 * exponents, minus signs, leading zeros, nesting, trailing bytes, a value
 * out of range, a missing field) makes it give up, and tf_msg_decode()
 * runs the jansson path on the same bytes. Every error sentence therefore
 * still comes from one place, and what this file accepts it fills exactly
 * as that path would (the unit tests and fuzz_msg compare both paths field
 * by field). The ranges checked below mirror tf_dec_step_started() and its
 * neighbours in proto.c: change them together.
 *
 * The other way, the master writes an ack for nearly every event it
 * stores: tf__msg_encode_ack() at the end writes one without a jansson
 * tree, the very bytes the tree would give.
 */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jscan.h"
#include "names.h"
#include "proto.h"
#include "proto_int.h"
#include "result.h"

/* The keys the fast path knows; any other makes it give up. */
typedef enum tf_fk {
    TF_FK_TYPE,
    TF_FK_BUILD_ID,
    TF_FK_SEQ,
    TF_FK_STEP,
    TF_FK_NAME,
    TF_FK_TIME_MS,
    TF_FK_RESULT,
    TF_FK_EXIT_CODE,
    TF_FK_SIGNAL,
    TF_FK_TIMED_OUT,
    TF_FK_DURATION_MS,
    TF_FK_TEXT,
    TF_FK_INFO,
    TF_FK_WARNINGS,
    TF_FK_ID,
    TF_FK__COUNT
} tf_fk_t;

/* Each key with its length, so most mismatches cost one comparison. */
typedef struct tf_fk_name {
    const char *s;
    size_t n;
} tf_fk_name_t;

#define TF__FK(k, name) [k] = {name, sizeof name - 1}

static const tf_fk_name_t tf_fk_names[TF_FK__COUNT] = {
    TF__FK(TF_FK_TYPE, "type"),
    TF__FK(TF_FK_BUILD_ID, "build_id"),
    TF__FK(TF_FK_SEQ, "seq"),
    TF__FK(TF_FK_STEP, "step"),
    TF__FK(TF_FK_NAME, "name"),
    TF__FK(TF_FK_TIME_MS, "time_ms"),
    TF__FK(TF_FK_RESULT, "result"),
    TF__FK(TF_FK_EXIT_CODE, "exit_code"),
    TF__FK(TF_FK_SIGNAL, "signal"),
    TF__FK(TF_FK_TIMED_OUT, "timed_out"),
    TF__FK(TF_FK_DURATION_MS, "duration_ms"),
    TF__FK(TF_FK_TEXT, "text"),
    TF__FK(TF_FK_INFO, "info"),
    TF__FK(TF_FK_WARNINGS, "warnings"),
    TF__FK(TF_FK_ID, "id"),
};

#define TF__FB(k) (1u << (k))

/* What one value was, as far as the fast path reads values. */
typedef enum tf_fv_kind {
    TF_FV_STR,  /* printable ASCII, no escapes: s[0..n) is the value */
    TF_FV_INT,  /* 0..TF_PROTO_MAX_ID without sign, fraction or exponent */
    TF_FV_TRUE,
    TF_FV_FALSE,
    TF_FV_NULL,
} tf_fv_kind_t;

typedef struct tf_fv {
    tf_fv_kind_t kind;
    const char *s;
    size_t n;
    uint64_t i;
} tf_fv_t;

typedef struct tf_fast {
    const char *p;
    const char *end;
    uint32_t seen; /* TF__FB of each key read so far */
    tf_fv_t v[TF_FK__COUNT];
} tf_fast_t;

/* JSON whitespace (common/jscan.h: the cursor pieces this reader shares
 * with tf-loadslaves' readers). */
static void tf_fast_ws(tf_fast_t *f)
{
    tf_jscan_ws(&f->p, f->end);
}

/* Reads a string after its opening quote up to the closing one. Only
 * printable ASCII other than the backslash is taken, so the bytes are the
 * value (no escapes, no UTF-8 to check, no NUL). */
static bool tf_fast_str(tf_fast_t *f, const char **s, size_t *n)
{
    const char *start = f->p;
    while (f->p < f->end && *f->p != '"') {
        unsigned char c = (unsigned char)*f->p;
        if (c < 0x20 || c > 0x7e || c == '\\')
            return false;
        f->p++;
    }
    if (f->p == f->end)
        return false;
    *s = start;
    *n = (size_t)(f->p - start);
    f->p++;
    return true;
}

static bool tf_fast_value(tf_fast_t *f, tf_fv_t *v)
{
    if (f->p == f->end)
        return false;
    char c = *f->p;
    if (c == '"') {
        f->p++;
        v->kind = TF_FV_STR;
        return tf_fast_str(f, &v->s, &v->n);
    }
    if (c >= '0' && c <= '9') {
        /* The largest any of these fields allows; longer numbers are
         * left to the jansson path and its range sentences. */
        v->kind = TF_FV_INT;
        return tf_jscan_uint(&f->p, f->end, TF_PROTO_MAX_ID, &v->i);
    }
    if (c == 't') {
        v->kind = TF_FV_TRUE;
        return tf_jscan_lit(&f->p, f->end, "true", 4);
    }
    if (c == 'f') {
        v->kind = TF_FV_FALSE;
        return tf_jscan_lit(&f->p, f->end, "false", 5);
    }
    if (c == 'n') {
        v->kind = TF_FV_NULL;
        return tf_jscan_lit(&f->p, f->end, "null", 4);
    }
    return false;
}

static bool tf_fast_key(const char *s, size_t n, tf_fk_t *out)
{
    for (int k = 0; k < TF_FK__COUNT; k++) {
        if (tf_fk_names[k].n == n && memcmp(tf_fk_names[k].s, s, n) == 0) {
            *out = (tf_fk_t)k;
            return true;
        }
    }
    return false;
}

/* Reads the whole text as one flat object of known, distinct keys. */
static bool tf_fast_object(tf_fast_t *f)
{
    tf_fast_ws(f);
    if (f->p == f->end || *f->p != '{')
        return false;
    f->p++;
    for (;;) {
        const char *ks;
        size_t kn;
        tf_fk_t k;
        tf_fast_ws(f);
        if (f->p == f->end || *f->p != '"')
            return false;
        f->p++;
        if (!tf_fast_str(f, &ks, &kn) || !tf_fast_key(ks, kn, &k))
            return false;
        /* jansson refuses the repeat (JSON_REJECT_DUPLICATES). */
        if (f->seen & TF__FB(k))
            return false;
        f->seen |= TF__FB(k);
        tf_fast_ws(f);
        if (f->p == f->end || *f->p != ':')
            return false;
        f->p++;
        tf_fast_ws(f);
        if (!tf_fast_value(f, &f->v[k]))
            return false;
        tf_fast_ws(f);
        if (f->p == f->end)
            return false;
        if (*f->p == '}')
            break;
        if (*f->p != ',')
            return false;
        f->p++;
    }
    f->p++;
    tf_fast_ws(f);
    return f->p == f->end;
}

/* ---- values checked as tf_dec_*() in proto.c check them ---- */

static bool tf_fast_u64(const tf_fast_t *f, tf_fk_t k, uint64_t min,
                        uint64_t max, uint64_t *out)
{
    const tf_fv_t *v = &f->v[k];
    if (v->kind != TF_FV_INT || v->i < min || v->i > max)
        return false;
    *out = v->i;
    return true;
}

static bool tf_fast_u32(const tf_fast_t *f, tf_fk_t k, uint32_t min,
                        uint32_t max, uint32_t *out)
{
    uint64_t v;
    if (!tf_fast_u64(f, k, min, max, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool tf_fast_time(const tf_fast_t *f, tf_fk_t k, int64_t *out)
{
    uint64_t v;
    if (!tf_fast_u64(f, k, 0, TF_PROTO_MAX_ID, &v))
        return false;
    *out = (int64_t)v;
    return true;
}

/* An integer in min..max or null, as tf_dec_opt_int(). */
static bool tf_fast_opt_int(const tf_fast_t *f, tf_fk_t k, int min, int max,
                            bool *has, int *out)
{
    uint64_t v;
    *has = false;
    *out = 0;
    if (f->v[k].kind == TF_FV_NULL)
        return true;
    if (!tf_fast_u64(f, k, (uint64_t)min, (uint64_t)max, &v))
        return false;
    *has = true;
    *out = (int)v;
    return true;
}

static bool tf_fast_bool(const tf_fast_t *f, tf_fk_t k, bool *out)
{
    if (f->v[k].kind != TF_FV_TRUE && f->v[k].kind != TF_FV_FALSE)
        return false;
    *out = f->v[k].kind == TF_FV_TRUE;
    return true;
}

/* Copies a string value of at most maxlen bytes into a new malloc'd
 * string (owned by the message). */
static bool tf_fast_strdup(const tf_fast_t *f, tf_fk_t k, size_t maxlen,
                           char **out)
{
    const tf_fv_t *v = &f->v[k];
    if (v->kind != TF_FV_STR || v->n > maxlen)
        return false;
    char *s = malloc(v->n + 1);
    if (!s)
        return false;
    memcpy(s, v->s, v->n);
    s[v->n] = '\0';
    *out = s;
    return true;
}

/* A name (tf_name_valid) copied into a new malloc'd string. */
static bool tf_fast_name(const tf_fast_t *f, tf_fk_t k, char **out)
{
    char *s;
    if (!tf_fast_strdup(f, k, TF_NAME_MAX, &s))
        return false;
    if (!tf_name_valid(s)) {
        free(s);
        return false;
    }
    *out = s;
    return true;
}

static bool tf_fast_result(const tf_fast_t *f, tf_fk_t k, tf_result_t *out)
{
    char buf[32];
    const tf_fv_t *v = &f->v[k];
    if (v->kind != TF_FV_STR || v->n >= sizeof buf)
        return false;
    memcpy(buf, v->s, v->n);
    buf[v->n] = '\0';
    return tf_result_parse(buf, out) == 0;
}

/* ---- one function per message type ---- */

#define TF__FAST_STEP_STARTED                                                \
    (TF__FB(TF_FK_TYPE) | TF__FB(TF_FK_BUILD_ID) | TF__FB(TF_FK_SEQ) |       \
     TF__FB(TF_FK_STEP) | TF__FB(TF_FK_NAME) | TF__FB(TF_FK_TIME_MS))
#define TF__FAST_STEP_FINISHED                                               \
    (TF__FB(TF_FK_TYPE) | TF__FB(TF_FK_BUILD_ID) | TF__FB(TF_FK_SEQ) |       \
     TF__FB(TF_FK_STEP) | TF__FB(TF_FK_RESULT) | TF__FB(TF_FK_EXIT_CODE) |   \
     TF__FB(TF_FK_SIGNAL) | TF__FB(TF_FK_TIMED_OUT) |                        \
     TF__FB(TF_FK_DURATION_MS) | TF__FB(TF_FK_TIME_MS) | TF__FB(TF_FK_TEXT))
#define TF__FAST_STEP_FINISHED_OPT (TF__FB(TF_FK_INFO) | TF__FB(TF_FK_WARNINGS))
#define TF__FAST_BUILD_FINISHED                                              \
    (TF__FB(TF_FK_TYPE) | TF__FB(TF_FK_BUILD_ID) | TF__FB(TF_FK_SEQ) |       \
     TF__FB(TF_FK_RESULT) | TF__FB(TF_FK_TIME_MS))
#define TF__FAST_ACK                                                         \
    (TF__FB(TF_FK_TYPE) | TF__FB(TF_FK_BUILD_ID) | TF__FB(TF_FK_SEQ))
#define TF__FAST_PING (TF__FB(TF_FK_TYPE) | TF__FB(TF_FK_ID))

static bool tf_fast_step_started(const tf_fast_t *f, tf_msg_t *m)
{
    __typeof__(m->u.step_started) *s = &m->u.step_started;
    return f->seen == TF__FAST_STEP_STARTED &&
           tf_fast_u64(f, TF_FK_BUILD_ID, 1, TF_PROTO_MAX_ID, &s->build_id) &&
           tf_fast_u64(f, TF_FK_SEQ, 1, TF_PROTO_MAX_ID, &s->seq) &&
           tf_fast_u32(f, TF_FK_STEP, 0, TF_PROTO_MAX_STEPS - 1, &s->step) &&
           tf_fast_time(f, TF_FK_TIME_MS, &s->time_ms) &&
           tf_fast_name(f, TF_FK_NAME, &s->name);
}

/* The strings are copied last so that a refusal frees at most those. */
static bool tf_fast_step_finished(const tf_fast_t *f, tf_msg_t *m)
{
    __typeof__(m->u.step_finished) *s = &m->u.step_finished;
    uint32_t opt = f->seen & TF__FAST_STEP_FINISHED_OPT;
    if ((f->seen & ~opt) != TF__FAST_STEP_FINISHED)
        return false;
    if (!tf_fast_u64(f, TF_FK_BUILD_ID, 1, TF_PROTO_MAX_ID, &s->build_id) ||
        !tf_fast_u64(f, TF_FK_SEQ, 1, TF_PROTO_MAX_ID, &s->seq) ||
        !tf_fast_u32(f, TF_FK_STEP, 0, TF_PROTO_MAX_STEPS - 1, &s->step) ||
        !tf_fast_result(f, TF_FK_RESULT, &s->result) ||
        !tf_fast_opt_int(f, TF_FK_EXIT_CODE, 0, INT_MAX, &s->has_exit_code,
                         &s->exit_code) ||
        !tf_fast_opt_int(f, TF_FK_SIGNAL, 1, INT_MAX, &s->has_signal,
                         &s->signal) ||
        !tf_fast_bool(f, TF_FK_TIMED_OUT, &s->timed_out) ||
        !tf_fast_time(f, TF_FK_DURATION_MS, &s->duration_ms) ||
        !tf_fast_time(f, TF_FK_TIME_MS, &s->time_ms))
        return false;
    if ((opt & TF__FB(TF_FK_WARNINGS)) &&
        !tf_fast_u64(f, TF_FK_WARNINGS, 0, TF_PROTO_MAX_ID, &s->warnings))
        return false;
    s->has_warnings = (opt & TF__FB(TF_FK_WARNINGS)) != 0;
    if (!tf_fast_strdup(f, TF_FK_TEXT, TF_PROTO_MAX_TEXTFIELD, &s->text))
        return false;
    if ((opt & TF__FB(TF_FK_INFO)) &&
        !tf_fast_strdup(f, TF_FK_INFO, TF_PROTO_MAX_INFO_TEXT, &s->info))
        return false;
    return true;
}

static bool tf_fast_build_finished(const tf_fast_t *f, tf_msg_t *m)
{
    __typeof__(m->u.build_finished) *s = &m->u.build_finished;
    return f->seen == TF__FAST_BUILD_FINISHED &&
           tf_fast_u64(f, TF_FK_BUILD_ID, 1, TF_PROTO_MAX_ID, &s->build_id) &&
           tf_fast_u64(f, TF_FK_SEQ, 1, TF_PROTO_MAX_ID, &s->seq) &&
           tf_fast_result(f, TF_FK_RESULT, &s->result) &&
           tf_fast_time(f, TF_FK_TIME_MS, &s->time_ms);
}

static bool tf_fast_ack(const tf_fast_t *f, tf_msg_t *m)
{
    return f->seen == TF__FAST_ACK &&
           tf_fast_u64(f, TF_FK_BUILD_ID, 1, TF_PROTO_MAX_ID,
                       &m->u.ack.build_id) &&
           tf_fast_u64(f, TF_FK_SEQ, 0, TF_PROTO_MAX_ID, &m->u.ack.seq);
}

static bool tf_fast_ping(const tf_fast_t *f, tf_msg_t *m)
{
    return f->seen == TF__FAST_PING &&
           tf_fast_u64(f, TF_FK_ID, 0, TF_PROTO_MAX_ID, &m->u.ping.id);
}

/* The types read here, by their "type" string. */
static bool tf_fast_type(const tf_fv_t *v, tf_msg_type_t *out)
{
    static const tf_msg_type_t types[] = {
        TF_MSG_STEP_STARTED, TF_MSG_STEP_FINISHED, TF_MSG_BUILD_FINISHED,
        TF_MSG_ACK, TF_MSG_PING, TF_MSG_PONG,
    };
    if (v->kind != TF_FV_STR)
        return false;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const char *name = tf_msg_type_name(types[i]);
        if (strlen(name) == v->n && memcmp(name, v->s, v->n) == 0) {
            *out = types[i];
            return true;
        }
    }
    return false;
}

bool tf__msg_decode_fast(const char *text, size_t len, tf_msg_t *out)
{
    tf_fast_t f;
    tf_msg_type_t type;
    bool ok;

    f.p = text;
    f.end = text + len;
    f.seen = 0;
    if (!tf_fast_object(&f) || !(f.seen & TF__FB(TF_FK_TYPE)) ||
        !tf_fast_type(&f.v[TF_FK_TYPE], &type))
        return false;
    out->type = type;
    switch (type) {
    case TF_MSG_STEP_STARTED:
        ok = tf_fast_step_started(&f, out);
        break;
    case TF_MSG_STEP_FINISHED:
        ok = tf_fast_step_finished(&f, out);
        break;
    case TF_MSG_BUILD_FINISHED:
        ok = tf_fast_build_finished(&f, out);
        break;
    case TF_MSG_ACK:
        ok = tf_fast_ack(&f, out);
        break;
    default:
        ok = tf_fast_ping(&f, out);
        break;
    }
    if (!ok)
        tf_msg_clear(out); /* frees what was copied, zeroes the rest */
    return ok;
}

bool tf__msg_encode_ack(const tf_msg_t *m, char **out, size_t *len_out)
{
    static const char head[] = "{\"type\":\"ack\",\"build_id\":";
    static const char mid[] = ",\"seq\":";
    const uint64_t id = m->u.ack.build_id, seq = m->u.ack.seq;

    /* tf_dec_ack's ranges; outside them the jansson path words the
     * refusal. */
    if (m->type != TF_MSG_ACK || id < 1 || id > TF_PROTO_MAX_ID ||
        seq > TF_PROTO_MAX_ID)
        return false;
    char *text = malloc(sizeof(head) + sizeof(mid) + 2 * 20 + 2);
    if (!text)
        return false;
    char *p = text;
    memcpy(p, head, sizeof(head) - 1);
    p += sizeof(head) - 1;
    p += tf_u64_dec(p, id);
    memcpy(p, mid, sizeof(mid) - 1);
    p += sizeof(mid) - 1;
    p += tf_u64_dec(p, seq);
    *p++ = '}';
    *p = '\0';
    *out = text;
    if (len_out)
        *len_out = (size_t)(p - text);
    return true;
}
