/*
 * lsmsg.c - tf-loadslaves' hand-written writers and ack reader (see
 * lsmsg.h for why).
 *
 * A writer appends to a fixed buffer through ls_out_t, which remembers an
 * overflow instead of checking after every piece; the message is
 * discarded (TF_E2BIG) if it happened. Numbers are formatted by hand
 * (jansson's dump goes through snprintf for each). Strings are escaped as
 * jansson's dump escapes them without flags: quote, backslash, \b \f \n \r
 * \t, other control characters as \u00XX in capitals, everything else
 * (UTF-8 included) as it is. Unlike tf_msg_encode the writers do not run
 * the decoder's validator on the result: their only caller fills in its
 * own counters and constants, and the start-up self-test checks that the
 * bytes are tf_msg_encode's.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsmsg.h"
#include "names.h"
#include "result.h"
#include "tf_err.h"
#include "utf8.h"

typedef struct ls_out {
    char *p;
    size_t len, cap;
    bool over;
} ls_out_t;

static void ls_put(ls_out_t *o, const char *s, size_t n)
{
    if (o->over || n > o->cap - o->len) {
        o->over = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

#define LS_PUT_LIT(o, lit) ls_put((o), (lit), sizeof(lit) - 1)

static void ls_put_u64(ls_out_t *o, uint64_t v)
{
    char d[20];
    size_t i = sizeof(d);
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    ls_put(o, d + i, sizeof(d) - i);
}

static void ls_put_i64(ls_out_t *o, int64_t v)
{
    if (v < 0) {
        LS_PUT_LIT(o, "-");
        ls_put_u64(o, (uint64_t)0 - (uint64_t)v);
    } else {
        ls_put_u64(o, (uint64_t)v);
    }
}

/* Appends s as a JSON string; returns TF_EINVAL when s is not UTF-8 (as
 * tf_msg_encode refuses it). NULL is written as "", as tf_msg_encode
 * does. */
static int ls_put_str(ls_out_t *o, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    if (!s)
        s = "";
    size_t n = strlen(s);
    if (!tf_utf8_valid(s, n))
        return TF_EINVAL;
    LS_PUT_LIT(o, "\"");
    size_t run = 0; /* bytes of s[i - run..i) that need no escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        ls_put(o, s + i - run, run);
        run = 0;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t en = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            en = 6;
            break;
        }
        ls_put(o, esc, en);
    }
    ls_put(o, s + n - run, run);
    LS_PUT_LIT(o, "\"");
    return 0;
}

/* Appends ,"result":"NAME" for r; TF_EINVAL for a value with no name. */
static int ls_put_result(ls_out_t *o, tf_result_t r)
{
    const char *name = tf_result_name(r);
    if (!name)
        return TF_EINVAL;
    LS_PUT_LIT(o, ",\"result\":");
    return ls_put_str(o, name);
}

/* The decoder's ranges for the fields written here: ids and event
 * numbers from 1, times and durations from 0, all up to TF_PROTO_MAX_ID. */
static bool ls_id_ok(uint64_t v)
{
    return v >= 1 && v <= TF_PROTO_MAX_ID;
}

static bool ls_time_ok(int64_t v)
{
    return v >= 0 && (uint64_t)v <= TF_PROTO_MAX_ID;
}

static int ls_enc_step_started(ls_out_t *o, const tf_msg_t *m)
{
    const __typeof__(m->u.step_started) *s = &m->u.step_started;
    if (!ls_id_ok(s->build_id) || !ls_id_ok(s->seq) ||
        s->step >= TF_PROTO_MAX_STEPS || !ls_time_ok(s->time_ms) ||
        !s->name || !tf_name_valid(s->name))
        return TF_EINVAL;
    LS_PUT_LIT(o, "{\"type\":\"step_started\",\"build_id\":");
    ls_put_u64(o, s->build_id);
    LS_PUT_LIT(o, ",\"seq\":");
    ls_put_u64(o, s->seq);
    LS_PUT_LIT(o, ",\"step\":");
    ls_put_u64(o, s->step);
    LS_PUT_LIT(o, ",\"name\":");
    int rc = ls_put_str(o, s->name);
    LS_PUT_LIT(o, ",\"time_ms\":");
    ls_put_i64(o, s->time_ms);
    LS_PUT_LIT(o, "}");
    return rc;
}

/* Writes null or the integer, as tf_enc_opt_int does. */
static void ls_put_opt_int(ls_out_t *o, bool has, int v)
{
    if (has)
        ls_put_i64(o, v);
    else
        LS_PUT_LIT(o, "null");
}

static int ls_enc_step_finished(ls_out_t *o, const tf_msg_t *m)
{
    const __typeof__(m->u.step_finished) *s = &m->u.step_finished;
    if (s->nprops || s->info || s->nstats || s->has_warnings)
        return TF_ESTATE; /* not written here: tf_msg_encode's job */
    if (!ls_id_ok(s->build_id) || !ls_id_ok(s->seq) ||
        s->step >= TF_PROTO_MAX_STEPS || !ls_time_ok(s->time_ms) ||
        !ls_time_ok(s->duration_ms) ||
        (s->has_exit_code && s->exit_code < 0) ||
        (s->has_signal && s->signal < 1) ||
        (s->text && strlen(s->text) > TF_PROTO_MAX_TEXTFIELD))
        return TF_EINVAL;
    LS_PUT_LIT(o, "{\"type\":\"step_finished\",\"build_id\":");
    ls_put_u64(o, s->build_id);
    LS_PUT_LIT(o, ",\"seq\":");
    ls_put_u64(o, s->seq);
    LS_PUT_LIT(o, ",\"step\":");
    ls_put_u64(o, s->step);
    int rc = ls_put_result(o, s->result);
    LS_PUT_LIT(o, ",\"exit_code\":");
    ls_put_opt_int(o, s->has_exit_code, s->exit_code);
    LS_PUT_LIT(o, ",\"signal\":");
    ls_put_opt_int(o, s->has_signal, s->signal);
    if (s->timed_out)
        LS_PUT_LIT(o, ",\"timed_out\":true");
    else
        LS_PUT_LIT(o, ",\"timed_out\":false");
    LS_PUT_LIT(o, ",\"duration_ms\":");
    ls_put_i64(o, s->duration_ms);
    LS_PUT_LIT(o, ",\"time_ms\":");
    ls_put_i64(o, s->time_ms);
    LS_PUT_LIT(o, ",\"text\":");
    if (rc == 0)
        rc = ls_put_str(o, s->text);
    LS_PUT_LIT(o, "}");
    return rc;
}

static int ls_enc_build_finished(ls_out_t *o, const tf_msg_t *m)
{
    const __typeof__(m->u.build_finished) *s = &m->u.build_finished;
    if (!ls_id_ok(s->build_id) || !ls_id_ok(s->seq) ||
        !ls_time_ok(s->time_ms))
        return TF_EINVAL;
    LS_PUT_LIT(o, "{\"type\":\"build_finished\",\"build_id\":");
    ls_put_u64(o, s->build_id);
    LS_PUT_LIT(o, ",\"seq\":");
    ls_put_u64(o, s->seq);
    int rc = ls_put_result(o, s->result);
    LS_PUT_LIT(o, ",\"time_ms\":");
    ls_put_i64(o, s->time_ms);
    LS_PUT_LIT(o, "}");
    return rc;
}

int ls_msg_encode(const tf_msg_t *m, char *out, size_t cap, size_t *len)
{
    ls_out_t o = {.p = out, .cap = cap};
    int rc;
    *len = 0;
    switch (m->type) {
    case TF_MSG_STEP_STARTED:
        rc = ls_enc_step_started(&o, m);
        break;
    case TF_MSG_STEP_FINISHED:
        rc = ls_enc_step_finished(&o, m);
        break;
    case TF_MSG_BUILD_FINISHED:
        rc = ls_enc_build_finished(&o, m);
        break;
    case TF_MSG_PONG:
        if (m->u.ping.id > TF_PROTO_MAX_ID)
            return TF_EINVAL;
        LS_PUT_LIT(&o, "{\"type\":\"pong\",\"id\":");
        ls_put_u64(&o, m->u.ping.id);
        LS_PUT_LIT(&o, "}");
        rc = 0;
        break;
    default:
        return TF_ESTATE;
    }
    if (rc)
        return rc;
    if (o.over)
        return TF_E2BIG;
    *len = o.len;
    return 0;
}

/* --- the ack reader --- */

/* Reads a JSON integer (no sign, no leading zero, no fraction or
 * exponent) at *p, up to end, no greater than max; advances *p. */
static bool ls_get_uint(const uint8_t **p, const uint8_t *end, uint64_t max,
                        uint64_t *out)
{
    const uint8_t *s = *p;
    uint64_t v = 0;
    if (s == end || *s < '0' || *s > '9')
        return false;
    if (*s == '0') {
        s++;
    } else {
        while (s < end && *s >= '0' && *s <= '9') {
            unsigned d = (unsigned)(*s - '0');
            if (v > (max - d) / 10)
                return false;
            v = v * 10 + d;
            s++;
        }
    }
    if (s < end && (*s == '.' || *s == 'e' || *s == 'E'))
        return false; /* a real, which the decoder refuses: let it say so */
    *p = s;
    *out = v;
    return true;
}

static bool ls_get_lit(const uint8_t **p, const uint8_t *end, const char *lit,
                       size_t n)
{
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return false;
    *p += n;
    return true;
}

#define LS_GET_LIT(p, end, lit) ls_get_lit((p), (end), (lit), sizeof(lit) - 1)

bool ls_ack_parse(const uint8_t *p, size_t n, uint64_t *build_id,
                  uint64_t *seq)
{
    const uint8_t *end = p + n;
    uint64_t b, s;
    if (!LS_GET_LIT(&p, end, "{\"type\":\"ack\",\"build_id\":") ||
        !ls_get_uint(&p, end, TF_PROTO_MAX_ID, &b) || b < 1 ||
        !LS_GET_LIT(&p, end, ",\"seq\":") ||
        !ls_get_uint(&p, end, TF_PROTO_MAX_ID, &s) ||
        !LS_GET_LIT(&p, end, "}") || p != end)
        return false;
    *build_id = b;
    *seq = s;
    return true;
}

/* --- the self-test --- */

/* Encodes m both ways and compares the bytes. */
static int ls_selftest_one(const tf_msg_t *m, char *err, size_t errlen)
{
    char fast[LS_MSG_MAX];
    size_t flen = 0, slen = 0;
    char *slow = NULL;
    int rc = tf_msg_encode(m, &slow, &slen);
    if (rc) {
        snprintf(err, errlen, "tf_msg_encode refused a sample %s: %s",
                 tf_msg_type_name(m->type), tf_strerror(rc));
        return TF_EPROTO;
    }
    rc = ls_msg_encode(m, fast, sizeof(fast), &flen);
    if (rc || flen != slen || memcmp(fast, slow, slen) != 0) {
        snprintf(err, errlen, "the fast %s writer (rc %d) wrote %.*s, "
                 "tf_msg_encode %s", tf_msg_type_name(m->type), rc,
                 (int)flen, fast, slow);
        free(slow);
        return TF_EPROTO;
    }
    free(slow);
    return 0;
}

static int ls_selftest_ack(uint64_t build_id, uint64_t seq, char *err,
                           size_t errlen)
{
    tf_msg_t m = {.type = TF_MSG_ACK};
    tf_msg_t d;
    char derr[256];
    char *text = NULL;
    size_t len = 0;
    uint64_t b = 0, s = 0;
    m.u.ack.build_id = build_id;
    m.u.ack.seq = seq;
    int rc = tf_msg_encode(&m, &text, &len);
    if (rc) {
        snprintf(err, errlen, "tf_msg_encode refused a sample ack: %s",
                 tf_strerror(rc));
        return TF_EPROTO;
    }
    rc = tf_msg_decode(text, len, &d, derr, sizeof(derr));
    bool fast = ls_ack_parse((const uint8_t *)text, len, &b, &s);
    if (rc || d.type != TF_MSG_ACK || !fast || b != d.u.ack.build_id ||
        s != d.u.ack.seq) {
        snprintf(err, errlen, "the fast ack reader and tf_msg_decode "
                 "disagree on %s", text);
        rc = TF_EPROTO;
    }
    if (rc == 0)
        tf_msg_clear(&d);
    free(text);
    return rc;
}

int ls_msg_selftest(char *err, size_t errlen)
{
    static const tf_result_t results[] = {TF_SUCCESS, TF_CANCELLED,
                                          TF_SKIPPED};
    static const char *texts[] = {"exit 0", "skipped", "aborted",
                                  "q\"b\\s\n\t\r\b\f\x01\x1b\x7f caf\xc3\xa9 /"};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < 4; i++) {
        tf_msg_t m = {.type = TF_MSG_STEP_STARTED};
        m.u.step_started.build_id = i ? TF_PROTO_MAX_ID : 1;
        m.u.step_started.seq = 1 + i * 1000003;
        m.u.step_started.step = (uint32_t)i * 7;
        m.u.step_started.name = "step";
        m.u.step_started.time_ms = i ? 1780000000123 : 0;
        rc = ls_selftest_one(&m, err, errlen);
        for (size_t k = 0; rc == 0 && k < 3; k++) {
            tf_msg_t f = {.type = TF_MSG_STEP_FINISHED};
            f.u.step_finished.build_id = 12345 + i;
            f.u.step_finished.seq = 2 + i;
            f.u.step_finished.step = (uint32_t)k;
            f.u.step_finished.result = results[k];
            f.u.step_finished.has_exit_code = k == 0;
            f.u.step_finished.exit_code = (int)i;
            f.u.step_finished.duration_ms = (int64_t)(i * 999);
            f.u.step_finished.time_ms = 1780000000456;
            f.u.step_finished.text = (char *)texts[(i + k) % 4];
            rc = ls_selftest_one(&f, err, errlen);
            tf_msg_t b = {.type = TF_MSG_BUILD_FINISHED};
            b.u.build_finished.build_id = 99 + i;
            b.u.build_finished.seq = 3 + k;
            b.u.build_finished.result = results[k];
            b.u.build_finished.time_ms = 1780000000789;
            if (rc == 0)
                rc = ls_selftest_one(&b, err, errlen);
        }
        tf_msg_t p = {.type = TF_MSG_PONG};
        p.u.ping.id = i * 4242;
        if (rc == 0)
            rc = ls_selftest_one(&p, err, errlen);
        if (rc == 0)
            rc = ls_selftest_ack(i ? TF_PROTO_MAX_ID - i : 1, i * 10, err,
                                 errlen);
    }
    return rc;
}
