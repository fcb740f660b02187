/*
 * lsmsg.c - tf-loadslaves' hand-written writers, ack reader and
 * build_start reader (see lsmsg.h for why).
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

#include "jscan.h"
#include "lsmsg.h"
#include "names.h"
#include "result.h"
#include "tf_err.h"
#include "utf8.h"
#include "util.h"

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

#define LS_GET_LIT(p, end, lit) \
    tf_jscan_lit((p), (end), (lit), sizeof(lit) - 1)

bool ls_ack_parse(const uint8_t *text, size_t n, uint64_t *build_id,
                  uint64_t *seq)
{
    const char *p = (const char *)text, *end = p + n;
    uint64_t b, s;
    if (!LS_GET_LIT(&p, end, "{\"type\":\"ack\",\"build_id\":") ||
        !tf_jscan_uint(&p, end, TF_PROTO_MAX_ID, &b) || b < 1 ||
        !LS_GET_LIT(&p, end, ",\"seq\":") ||
        !tf_jscan_uint(&p, end, TF_PROTO_MAX_ID, &s) ||
        !LS_GET_LIT(&p, end, "}") || p != end)
        return false;
    *build_id = b;
    *seq = s;
    return true;
}

/* --- the build_start reader ---
 *
 * Decoding a build_start with tf_msg_decode (a jansson tree, then every
 * step's every field checked and copied) was most of tf-loadslaves' CPU
 * per build, for four values. ls_bstart_parse reads them in one pass,
 * without allocating. What it accepts, exactly:
 *
 *   {"type":"build_start","build_id":B,"builder":NAME,"number":N,
 *    "workdir":NAME,"properties":{PROPS},"steps":[{...},...]
 *    [,"source":{...}]}
 *
 * in that member order (tf_msg_encode's), with JSON whitespace (space,
 * tab, LF, CR) allowed around every token, in at most TF_PROTO_MAX_TEXT
 * bytes. Of that it checks what tf_msg_decode checks:
 *
 *   - B is an integer in 1..TF_PROTO_MAX_ID and N one in
 *     0..TF_PROTO_MAX_ID, without sign, fraction, exponent or leading
 *     zero;
 *   - builder and workdir are names (tf_name_valid);
 *   - properties is an object whose values are strings and whose keys are
 *     not empty and distinct;
 *   - steps has 1..TF_PROTO_MAX_STEPS entries, each an object, and source
 *     (when there) is an object;
 *   - everything is JSON that jansson parses with JSON_REJECT_DUPLICATES:
 *     strings without control bytes, with the escapes JSON has (\u0000
 *     excepted), in UTF-8 (tf_utf8_len, jansson's rules); integers;
 *     true, false, null; arrays; objects without a repeated key.
 *
 * and gives up (false, "not recognised") on anything else, including
 * valid messages it does not bother with: members in another order or
 * unknown ones, escapes in a key or in builder, workdir or the
 * LS_T0_PROP value, a LS_T0_PROP value of 24 bytes or more, numbers with
 * a fraction or an exponent or over 18 digits, \u escapes of surrogates,
 * more than LS_KEYS_MAX members in one object (TF_PROTO_MAX_PROPS in
 * properties), nesting deeper than LS_DEPTH_MAX.
 *
 * What it does not check is what the members of each step and of the
 * source mean, nor that the required ones are there (a step's name,
 * command, env, workdir, timeouts, flags, builtin, modifiers and
 * test_results; the source's repository, branch, revision and patch).
 * tf_msg_decode refuses a build_start whose step breaks those rules, and
 * the emulator then fails the run; with this reader it would run the
 * build. A TestFarm master cannot send one: tf_msg_encode runs the
 * decoder's validator over every build_start, and the ones spliced from
 * a template (master/core/build.c) are the bytes the encoder would have
 * written (tests/unit/test_build_start.c). The emulator uses none of
 * those members, and the real slave keeps the full decoder.
 *
 * jansson's lexer (2.14) is the reference for the JSON rules; the unit
 * test lsmsg compares both on generated and mutated build_starts. */

#define LS_DEPTH_MAX 16 /* nesting of a step's members: 4 at most today */
#define LS_KEYS_MAX 64  /* members of one object inside a step or source */
#define LS_T0_MAX 24    /* bytes of the LS_T0_PROP value taken here */

typedef struct ls_key {
    const char *s;
    size_t n;
} ls_key_t;

static int ls_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The \uXXXX escape whose backslash is at q (6 bytes are there). NUL
 * (jansson refuses it) and surrogates (a pair's rules are jansson's
 * business) are declined. */
static bool ls_uescape_ok(const char *q)
{
    uint32_t u = 0;
    for (int i = 2; i < 6; i++) {
        int h = ls_hex(q[i]);
        if (h < 0)
            return false;
        u = u << 4 | (uint32_t)h;
    }
    return u != 0 && (u < 0xd800 || u > 0xdfff);
}

/* The bytes a string holds as they are: printable ASCII and DEL, but
 * the quote and the backslash. */
#define LS_R16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
static const bool ls_plain_byte[256] = {
    LS_R16(0), LS_R16(0),
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20: '"' */
    LS_R16(1), LS_R16(1),
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50: '\\' */
    LS_R16(1), LS_R16(1),
};
#undef LS_R16

/* Reads the JSON string whose opening quote is at *p as jansson's lexer
 * would accept it; sets *s and *n to the bytes between the quotes (as
 * written, escapes included) and *plain when there is no escape, and
 * moves *p past the closing quote. */
static bool ls_get_str(const char **p, const char *end,
                       const char **s, size_t *n, bool *plain)
{
    const char *q = *p;
    bool pl = true;
    if (q == end || *q != '"')
        return false;
    const char *start = ++q;
    while (q < end && *q != '"') {
        unsigned char c = (unsigned char)*q;
        if (ls_plain_byte[c]) {
            q++;
            while (q < end && ls_plain_byte[(unsigned char)*q])
                q++;
        } else if (c == '\\') {
            pl = false;
            if (end - q < 2)
                return false;
            char e = q[1];
            if (e == 'u') {
                if (end - q < 6 || !ls_uescape_ok(q))
                    return false;
                q += 6;
            } else if (e == '"' || e == '\\' || e == '/' || e == 'b' ||
                       e == 'f' || e == 'n' || e == 'r' || e == 't') {
                q += 2;
            } else {
                return false;
            }
        } else if (c < 0x20) {
            return false;
        } else {
            size_t l = tf_utf8_len((const unsigned char *)q,
                                   (size_t)(end - q));
            if (l == 0)
                return false;
            q += l;
        }
    }
    if (q == end)
        return false;
    *s = start;
    *n = (size_t)(q - start);
    *plain = pl;
    *p = q + 1;
    return true;
}

/* A JSON integer of at most 18 digits (jansson's json_int_t holds it);
 * fractions and exponents are declined. */
static bool ls_skip_int(const char **p, const char *end)
{
    const char *q = *p;
    if (q < end && *q == '-')
        q++;
    const char *d = q;
    while (q < end && *q >= '0' && *q <= '9')
        q++;
    size_t nd = (size_t)(q - d);
    if (nd == 0 || nd > 18 || (*d == '0' && nd > 1))
        return false;
    if (q < end && (*q == '.' || *q == 'e' || *q == 'E'))
        return false;
    *p = q;
    return true;
}

static bool ls_key_seen(const ls_key_t *keys, size_t nk, const char *s,
                        size_t n)
{
    for (size_t i = 0; i < nk; i++)
        if (keys[i].n == n && memcmp(keys[i].s, s, n) == 0)
            return true;
    return false;
}

static bool ls_skip_value(const char **p, const char *end, int depth);

/* An object whose '{' is at *p: keys without escapes (so that the bytes
 * compare as jansson compares the keys), none repeated. */
static bool ls_skip_object(const char **p, const char *end, int depth)
{
    ls_key_t keys[LS_KEYS_MAX];
    size_t nk = 0;
    (*p)++;
    tf_jscan_ws(p, end);
    if (*p < end && **p == '}') {
        (*p)++;
        return true;
    }
    for (;;) {
        const char *s;
        size_t n;
        bool plain;
        if (!ls_get_str(p, end, &s, &n, &plain) || !plain ||
            nk == LS_KEYS_MAX || ls_key_seen(keys, nk, s, n))
            return false;
        keys[nk].s = s;
        keys[nk++].n = n;
        tf_jscan_ws(p, end);
        if (*p == end || **p != ':')
            return false;
        (*p)++;
        tf_jscan_ws(p, end);
        if (!ls_skip_value(p, end, depth))
            return false;
        tf_jscan_ws(p, end);
        if (*p == end)
            return false;
        if (**p == '}') {
            (*p)++;
            return true;
        }
        if (**p != ',')
            return false;
        (*p)++;
        tf_jscan_ws(p, end);
    }
}

static bool ls_skip_array(const char **p, const char *end, int depth)
{
    (*p)++;
    tf_jscan_ws(p, end);
    if (*p < end && **p == ']') {
        (*p)++;
        return true;
    }
    for (;;) {
        if (!ls_skip_value(p, end, depth))
            return false;
        tf_jscan_ws(p, end);
        if (*p == end)
            return false;
        if (**p == ']') {
            (*p)++;
            return true;
        }
        if (**p != ',')
            return false;
        (*p)++;
        tf_jscan_ws(p, end);
    }
}

/* Any JSON value at *p, nested at most LS_DEPTH_MAX - depth deep. A
 * literal's next byte is judged by the caller (',' ']' '}' or
 * whitespace), which rules out "truex". */
static bool ls_skip_value(const char **p, const char *end, int depth)
{
    const char *s;
    size_t n;
    bool plain;
    if (*p == end || depth >= LS_DEPTH_MAX)
        return false;
    switch (**p) {
    case '{':
        return ls_skip_object(p, end, depth + 1);
    case '[':
        return ls_skip_array(p, end, depth + 1);
    case '"':
        return ls_get_str(p, end, &s, &n, &plain);
    case 't':
        return LS_GET_LIT(p, end, "true");
    case 'f':
        return LS_GET_LIT(p, end, "false");
    case 'n':
        return LS_GET_LIT(p, end, "null");
    default:
        return ls_skip_int(p, end);
    }
}

/* Whitespace, "key" (a literal with its quotes), whitespace, ':',
 * whitespace. */
static bool ls_member(const char **p, const char *end, const char *key,
                      size_t n)
{
    tf_jscan_ws(p, end);
    if (!tf_jscan_lit(p, end, key, n))
        return false;
    tf_jscan_ws(p, end);
    if (*p == end || **p != ':')
        return false;
    (*p)++;
    tf_jscan_ws(p, end);
    return true;
}

#define LS_MEMBER(p, end, key) ls_member((p), (end), (key), sizeof(key) - 1)

/* Whitespace, then c. */
static bool ls_punct(const char **p, const char *end, char c)
{
    tf_jscan_ws(p, end);
    if (*p == end || **p != c)
        return false;
    (*p)++;
    return true;
}

/* A name written without escapes into out (TF_NAME_MAX + 1 bytes). */
static bool ls_get_name(const char **p, const char *end, char *out)
{
    const char *s;
    size_t n;
    bool plain;
    if (!ls_get_str(p, end, &s, &n, &plain) || !plain || n > TF_NAME_MAX)
        return false;
    memcpy(out, s, n);
    out[n] = '\0';
    return tf_name_valid(out);
}

/* properties: string values, non-empty distinct keys; the LS_T0_PROP
 * value is read as on_build_start reads it, with tf_parse_u64. */
static bool ls_bstart_props(const char **p, const char *end,
                            ls_bstart_t *b)
{
    static const char t0key[] = LS_T0_PROP;
    ls_key_t keys[TF_PROTO_MAX_PROPS];
    size_t nk = 0;
    if (!ls_punct(p, end, '{'))
        return false;
    tf_jscan_ws(p, end);
    if (*p < end && **p == '}') {
        (*p)++;
        return true;
    }
    for (;;) {
        const char *k, *v;
        size_t kn, vn;
        bool kplain, vplain;
        if (!ls_get_str(p, end, &k, &kn, &kplain) || !kplain || kn == 0 ||
            nk == TF_PROTO_MAX_PROPS || ls_key_seen(keys, nk, k, kn))
            return false;
        keys[nk].s = k;
        keys[nk++].n = kn;
        if (!ls_punct(p, end, ':'))
            return false;
        tf_jscan_ws(p, end);
        if (!ls_get_str(p, end, &v, &vn, &vplain))
            return false;
        if (kn == sizeof(t0key) - 1 && memcmp(k, t0key, kn) == 0) {
            char t0[LS_T0_MAX];
            if (!vplain || vn >= sizeof(t0))
                return false;
            memcpy(t0, v, vn);
            t0[vn] = '\0';
            b->has_t0 = tf_parse_u64(t0, &b->t0) == 0;
        }
        tf_jscan_ws(p, end);
        if (*p == end)
            return false;
        if (**p == '}') {
            (*p)++;
            return true;
        }
        if (**p != ',')
            return false;
        (*p)++;
        tf_jscan_ws(p, end);
    }
}

/* steps: 1..TF_PROTO_MAX_STEPS objects, walked but not judged. */
static bool ls_bstart_steps(const char **p, const char *end,
                            ls_bstart_t *b)
{
    if (!ls_punct(p, end, '['))
        return false;
    for (;;) {
        tf_jscan_ws(p, end);
        if (*p == end || **p != '{' || b->nsteps == TF_PROTO_MAX_STEPS ||
            !ls_skip_object(p, end, 1))
            return false;
        b->nsteps++;
        tf_jscan_ws(p, end);
        if (*p == end)
            return false;
        if (**p == ']') {
            (*p)++;
            return true;
        }
        if (**p != ',')
            return false;
        (*p)++;
    }
}

bool ls_bstart_parse(const uint8_t *text, size_t n, ls_bstart_t *out)
{
    const char *p = (const char *)text, *end = p + n;
    char workdir[TF_NAME_MAX + 1];
    uint64_t number;
    ls_bstart_t b;
    memset(&b, 0, sizeof(b));
    if (n > TF_PROTO_MAX_TEXT)
        return false;
    if (!ls_punct(&p, end, '{') || !LS_MEMBER(&p, end, "\"type\"") ||
        !LS_GET_LIT(&p, end, "\"build_start\"") || !ls_punct(&p, end, ',') ||
        !LS_MEMBER(&p, end, "\"build_id\"") ||
        !tf_jscan_uint(&p, end, TF_PROTO_MAX_ID, &b.build_id) ||
        b.build_id < 1 || !ls_punct(&p, end, ',') ||
        !LS_MEMBER(&p, end, "\"builder\"") ||
        !ls_get_name(&p, end, b.builder) || !ls_punct(&p, end, ',') ||
        !LS_MEMBER(&p, end, "\"number\"") ||
        !tf_jscan_uint(&p, end, TF_PROTO_MAX_ID, &number) ||
        !ls_punct(&p, end, ',') || !LS_MEMBER(&p, end, "\"workdir\"") ||
        !ls_get_name(&p, end, workdir) || !ls_punct(&p, end, ',') ||
        !LS_MEMBER(&p, end, "\"properties\"") ||
        !ls_bstart_props(&p, end, &b) || !ls_punct(&p, end, ',') ||
        !LS_MEMBER(&p, end, "\"steps\"") || !ls_bstart_steps(&p, end, &b))
        return false;
    tf_jscan_ws(&p, end);
    if (p < end && *p == ',') {
        p++;
        if (!LS_MEMBER(&p, end, "\"source\"") || p == end || *p != '{' ||
            !ls_skip_object(&p, end, 1))
            return false;
    }
    if (!ls_punct(&p, end, '}'))
        return false;
    tf_jscan_ws(&p, end);
    if (p != end)
        return false;
    *out = b;
    return true;
}

void ls_bstart_from_msg(const tf_msg_t *m, ls_bstart_t *out)
{
    const __typeof__(m->u.build_start) *bs = &m->u.build_start;
    const char *builder = bs->builder ? bs->builder : "";
    size_t n = strnlen(builder, TF_NAME_MAX);
    memset(out, 0, sizeof(*out));
    out->build_id = bs->build_id;
    memcpy(out->builder, builder, n);
    out->builder[n] = '\0';
    out->nsteps = bs->nsteps;
    for (size_t i = 0; i < bs->nprops; i++) {
        uint64_t v;
        if (strcmp(bs->props[i].key, LS_T0_PROP) == 0 &&
            tf_parse_u64(bs->props[i].value, &v) == 0) {
            out->has_t0 = true;
            out->t0 = v;
        }
    }
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

static bool ls_bstart_equal(const ls_bstart_t *a, const ls_bstart_t *b)
{
    return a->build_id == b->build_id && strcmp(a->builder, b->builder) == 0 &&
           a->nsteps == b->nsteps && a->has_t0 == b->has_t0 &&
           a->t0 == b->t0;
}

/* Encodes m with tf_msg_encode and checks that ls_bstart_parse takes the
 * result and reads what tf_msg_decode and ls_bstart_from_msg read. */
static int ls_selftest_bstart(const tf_msg_t *m, char *err, size_t errlen)
{
    tf_msg_t d;
    ls_bstart_t fast, slow;
    char derr[256];
    char *text = NULL;
    size_t len = 0;
    int rc = tf_msg_encode(m, &text, &len);
    if (rc) {
        snprintf(err, errlen, "tf_msg_encode refused a sample build_start: "
                 "%s", tf_strerror(rc));
        return TF_EPROTO;
    }
    rc = tf_msg_decode(text, len, &d, derr, sizeof(derr));
    if (rc || d.type != TF_MSG_BUILD_START) {
        snprintf(err, errlen, "tf_msg_decode refused a sample build_start: "
                 "%s", derr);
        free(text);
        return TF_EPROTO;
    }
    ls_bstart_from_msg(&d, &slow);
    tf_msg_clear(&d);
    if (!ls_bstart_parse((const uint8_t *)text, len, &fast) ||
        !ls_bstart_equal(&fast, &slow)) {
        snprintf(err, errlen, "the fast build_start reader and "
                 "tf_msg_decode disagree on %.300s", text);
        rc = TF_EPROTO;
    }
    free(text);
    return rc;
}

/* build_starts of the shapes the master sends: one step or several,
 * with and without properties, environment, modifiers and a source. */
static int ls_selftest_bstarts(char *err, size_t errlen)
{
    static char *argv_true[] = {"true", NULL};
    static char *argv_odd[] = {
        "sh", "-c", "echo \"caf\xc3\xa9\"\t\\ \x01 \xe2\x82\xac", NULL};
    static tf_kv_t env[] = {{"CC", "gcc"}, {"Q", "a\"b\\c\n\xf0\x9f\x98\x80"}};
    static tf_kv_t props[] = {
        {"reason", "forced \"by\" \xc3\xa9ve\n"},
        {LS_T0_PROP, "1780000000123456"},
        {"owner", "\\u0041 /"},
    };
    static tf_kv_t bad_t0[] = {{LS_T0_PROP, "12x"}};
    char *info[] = {"^info: (.*)$"};
    tf_modifiers_t mods = {.markers = true, .info = info, .ninfo = 1,
                           .warnings = "warning:", .warnings_max = 3};
    tf_step_spec_t steps[3] = {
        {.name = "noop", .argv = argv_true, .argc = 1, .workdir = ""},
        {.name = "odd", .argv = argv_odd, .argc = 3, .env = env, .nenv = 2,
         .workdir = "sub/dir", .timeout_s = 1200, .max_time_s = 7,
         .modifiers = &mods},
        {.name = "src", .argv = argv_true, .argc = 1, .workdir = "",
         .builtin = TF_BUILTIN_SOURCE},
    };
    steps[0].flags = tf_step_flags_default();
    tf_source_t src = {.repository = "https://example.org/r.git",
                       .branch = "main", .revision = ""};
    int rc = 0;
    for (int i = 0; rc == 0 && i < 5; i++) {
        tf_msg_t m = {.type = TF_MSG_BUILD_START};
        m.u.build_start.build_id = i == 4 ? TF_PROTO_MAX_ID : 1 + (uint64_t)i;
        m.u.build_start.builder = i & 1 ? "b-0.x_Y" : "b000";
        m.u.build_start.number = (uint64_t)i * 1000;
        m.u.build_start.workdir = "b000";
        m.u.build_start.props = i == 3 ? bad_t0 : i ? props : NULL;
        m.u.build_start.nprops = i == 3 ? 1 : i ? (size_t)i % 3 + 1 : 0;
        m.u.build_start.steps = steps;
        m.u.build_start.nsteps = i ? 3 : 1;
        m.u.build_start.source = i >= 2 ? &src : NULL;
        rc = ls_selftest_bstart(&m, err, errlen);
    }
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
    for (int c = 0; rc == 0 && c < 256; c++) {
        bool plain = c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
        if (ls_plain_byte[c] != plain) {
            snprintf(err, errlen, "ls_plain_byte[0x%02x] is wrong", c);
            rc = TF_EPROTO;
        }
    }
    if (rc == 0)
        rc = ls_selftest_bstarts(err, errlen);
    return rc;
}
