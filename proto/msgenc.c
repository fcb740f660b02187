/*
 * msgenc.c - a one-pass encoder for build_start.
 *
 * The master writes a build_start per build it starts; in a burst of
 * thousands the jansson path (a tree of one malloc per value, the
 * decoder's validator run over it, then json_dumps) was the largest part
 * of the scheduler's cost per build. This file writes the same text
 * straight from the tf_msg_t: the very bytes json_dumps(JSON_COMPACT)
 * gives for the tree tf_enc_fields() builds (its key order, jansson's
 * string escaping, UTF-8 left as it is), checking on the way what
 * tf_dec_build_start() and the functions it calls would check.
 *
 * The invariant that makes a second encoder safe: it only ever succeeds.
 * Anything it cannot prove the validator would accept (a name or path the
 * rules refuse, a string that is not UTF-8 or is too long, a count out of
 * range, a repeated key, a NULL vector with entries, a text over
 * TF_PROTO_MAX_TEXT, out of memory) makes it give up, and
 * tf_msg_encode_err() runs the jansson path, which words the refusal. The
 * checks below mirror tf_dec_build_start(), tf_dec_step(), the modifiers'
 * and test_results' readers and tf_dec_source() in proto.c, and the order
 * of keys mirrors tf_enc_fields(): change them together (the unit test
 * build_start_fast_encoder_writes_what_jansson_writes compares both paths
 * over thousands of generated messages).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "proto.h"
#include "proto_int.h"
#include "testres.h"
#include "utf8.h"

/* Above this many entries an object's keys are not checked for repeats
 * pairwise: the jansson path takes it. */
#define TF__ENC_MAX_KEYS 64

/* The text being written. ok turns false at the first thing the fast
 * path does not take; every writer is then a no-op. Owns p. */
typedef struct tf_wbuf {
    char *p;
    size_t len, cap;
    bool ok;
} tf_wbuf_t;

/* Makes room for n more bytes (and a NUL); false (and ok false) when the
 * text is already past the control-message cap (the jansson path then
 * words the refusal), n is more than a string under the cap could need,
 * or memory runs out. */
static bool tf_w_room(tf_wbuf_t *w, size_t n)
{
    if (!w->ok)
        return false;
    if (w->len > TF_PROTO_MAX_TEXT || n > 6 * (size_t)TF_PROTO_MAX_TEXT + 2) {
        w->ok = false;
        return false;
    }
    if (w->len + n + 1 <= w->cap)
        return true;
    size_t cap = w->cap ? w->cap : 1024;
    while (cap < w->len + n + 1)
        cap *= 2;
    char *p = realloc(w->p, cap);
    if (!p) {
        w->ok = false;
        return false;
    }
    w->p = p;
    w->cap = cap;
    return true;
}

/* Appends n bytes of s as they are (the caller vouches for them). */
static void tf_w_mem(tf_wbuf_t *w, const char *s, size_t n)
{
    if (tf_w_room(w, n)) {
        memcpy(w->p + w->len, s, n);
        w->len += n;
    }
}

/* A literal: a key with its quotes and colon, punctuation, true. */
#define tf_w_lit(w, s) tf_w_mem((w), (s), sizeof(s) - 1)

/* A JSON boolean, as json_boolean(v) dumps. */
static void tf_w_bool(tf_wbuf_t *w, bool v)
{
    if (v)
        tf_w_lit(w, "true");
    else
        tf_w_lit(w, "false");
}

/* v in decimal, as jansson writes a json_int_t that is not negative. */
static void tf_w_u64(tf_wbuf_t *w, uint64_t v)
{
    char d[20];
    size_t n = tf_u64_dec(d, v);
    if (!tf_w_room(w, n))
        return;
    memcpy(w->p + w->len, d, n);
    w->len += n;
}

/* s (NULL as "", like tf_enc_str) as a JSON string the way jansson's
 * dump_string writes it without JSON_ENSURE_ASCII or JSON_ESCAPE_SLASH:
 * '"' and '\\' escaped, control characters as \b \f \n \r \t or \u00XX
 * (upper-case hex), everything else, UTF-8 included, as it is. A string
 * that is not RFC 3629 UTF-8 (tf_enc_str refuses it) or is longer than
 * maxlen bytes (the validator's cap for the field) fails. */
static void tf_w_str(tf_wbuf_t *w, const char *s, size_t maxlen)
{
    static const char hex[] = "0123456789ABCDEF";
    if (!s)
        s = "";
    size_t n = strlen(s);
    /* Every byte is at least one byte of text, so a string longer than
     * the cap makes a text over it. */
    if (n > maxlen || n > TF_PROTO_MAX_TEXT)
        w->ok = false;
    /* At worst every byte is a \u00XX. */
    if (!tf_w_room(w, 6 * n + 2))
        return;
    const unsigned char *u = (const unsigned char *)s;
    char *o = w->p + w->len;
    *o++ = '"';
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        if (c >= 0x80) {
            size_t l = tf_utf8_len(u + i, n - i);
            if (!l) {
                w->ok = false;
                return;
            }
            memcpy(o, u + i, l);
            o += l;
            i += l;
            continue;
        }
        i++;
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"':
        case '\\':
            *o++ = (char)c;
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        default:
            memcpy(o, "u00", 3);
            o[3] = hex[c >> 4];
            o[4] = hex[c & 15];
            o += 5;
            break;
        }
    }
    *o++ = '"';
    w->len = (size_t)(o - w->p);
}

/* A name field (tf_dec_name: names.h's rule). */
static void tf_w_name(tf_wbuf_t *w, const char *s)
{
    if (!s || !tf_name_valid(s))
        w->ok = false;
    else
        tf_w_str(w, s, SIZE_MAX);
}

/* A regex (tf_val_regex): non-empty, at most TF_PROTO_MAX_REGEX bytes. */
static void tf_w_regex(tf_wbuf_t *w, const char *s)
{
    if (!s || !*s)
        w->ok = false;
    else
        tf_w_str(w, s, TF_PROTO_MAX_REGEX);
}

/* A vector of n entries must not be NULL (tf_enc_vec_ok). */
static bool tf_w_vec_ok(tf_wbuf_t *w, const void *v, size_t n)
{
    if (n && !v)
        w->ok = false;
    return w->ok;
}

/* An object of string -> string (tf_enc_kv, tf_dec_kv): keys non-empty,
 * not repeated, without '=' for an environment. */
static void tf_w_kv(tf_wbuf_t *w, const tf_kv_t *kv, size_t n, bool env)
{
    if (!tf_w_vec_ok(w, kv, n) || n > TF__ENC_MAX_KEYS) {
        w->ok = false;
        return;
    }
    tf_w_lit(w, "{");
    for (size_t i = 0; i < n && w->ok; i++) {
        const char *k = kv[i].key;
        if (!k || !*k || (env && strchr(k, '='))) {
            w->ok = false;
            return;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(kv[j].key, k) == 0) {
                w->ok = false;
                return;
            }
        if (i)
            tf_w_lit(w, ",");
        tf_w_str(w, k, SIZE_MAX);
        tf_w_lit(w, ":");
        tf_w_str(w, kv[i].value, SIZE_MAX);
    }
    tf_w_lit(w, "}");
}

/* A step's modifiers object (tf_enc_modifiers; tf_dec_modifiers and the
 * readers of its rows). */
static void tf_w_modifiers(tf_wbuf_t *w, const tf_modifiers_t *m)
{
    tf_w_lit(w, "{\"markers\":");
    tf_w_bool(w, m->markers);
    if (m->ninfo) {
        if (!tf_w_vec_ok(w, m->info, m->ninfo) ||
            m->ninfo > TF_PROTO_MAX_MOD_RULES) {
            w->ok = false;
            return;
        }
        tf_w_lit(w, ",\"info\":[");
        for (size_t i = 0; i < m->ninfo; i++) {
            if (i)
                tf_w_lit(w, ",");
            tf_w_regex(w, m->info[i]);
        }
        tf_w_lit(w, "]");
    }
    if (m->nstats) {
        if (!tf_w_vec_ok(w, m->stats, m->nstats) ||
            m->nstats > TF_PROTO_MAX_MOD_RULES) {
            w->ok = false;
            return;
        }
        tf_w_lit(w, ",\"stats\":[");
        for (size_t i = 0; i < m->nstats; i++) {
            if (i)
                tf_w_lit(w, ",");
            tf_w_lit(w, "{");
            if (m->stats[i].name) {
                tf_w_lit(w, "\"name\":");
                tf_w_name(w, m->stats[i].name);
                tf_w_lit(w, ",");
            }
            tf_w_lit(w, "\"regex\":");
            tf_w_regex(w, m->stats[i].regex);
            tf_w_lit(w, "}");
        }
        tf_w_lit(w, "]");
    }
    if (m->pass_if || m->fail_if) {
        tf_w_lit(w, ",\"success\":{");
        if (m->pass_if) {
            tf_w_lit(w, "\"pass_if\":");
            tf_w_regex(w, m->pass_if);
        }
        if (m->fail_if) {
            if (m->pass_if)
                tf_w_lit(w, ",");
            tf_w_lit(w, "\"fail_if\":");
            tf_w_regex(w, m->fail_if);
        }
        tf_w_lit(w, "}");
    }
    if (m->warnings) {
        tf_w_lit(w, ",\"warnings\":{\"regex\":");
        tf_w_regex(w, m->warnings);
        tf_w_lit(w, ",\"max\":");
        tf_w_u64(w, m->warnings_max);
        tf_w_lit(w, "}");
    }
    tf_w_lit(w, "}");
}

/* A step's test_results object (tf_dec_test_spec and its rows). */
static void tf_w_test_spec(tf_wbuf_t *w, const tf_test_spec_t *t)
{
    const char *fmt = tf_tr_format_name(t->format);
    /* The decoder goes by the format it reads back. */
    tf_tr_format_t f = fmt ? tf_tr_format_parse(fmt) : TF_TR_FMT_NONE;
    if (f == TF_TR_FMT_NONE || (f == TF_TR_FMT_JUNIT && !t->nfiles)) {
        w->ok = false;
        return;
    }
    tf_w_lit(w, "{\"format\":");
    tf_w_str(w, fmt, 64);
    if (t->nfiles) {
        if (!tf_w_vec_ok(w, t->files, t->nfiles) ||
            !tf_tr_format_files(f) || t->nfiles > TF_TR_MAX_FILES) {
            w->ok = false;
            return;
        }
        tf_w_lit(w, ",\"files\":[");
        for (size_t i = 0; i < t->nfiles; i++) {
            if (!t->files[i] || !tf_tr_glob_valid(t->files[i])) {
                w->ok = false;
                return;
            }
            if (i)
                tf_w_lit(w, ",");
            tf_w_str(w, t->files[i], TF_TR_MAX_GLOB);
        }
        tf_w_lit(w, "]");
    }
    tf_w_lit(w, "}");
}

/* One step, its keys in TF_STEP_KEYS' order (tf_enc_step). */
static void tf_w_step(tf_wbuf_t *w, const tf_step_spec_t *s)
{
    tf_w_lit(w, "{\"name\":");
    tf_w_name(w, s->name);
    tf_w_lit(w, ",\"command\":[");
    if (!s->argc || !tf_w_vec_ok(w, s->argv, s->argc) || !s->argv[0] ||
        !s->argv[0][0]) {
        w->ok = false;
        return;
    }
    for (size_t i = 0; i < s->argc; i++) {
        if (i)
            tf_w_lit(w, ",");
        tf_w_str(w, s->argv[i], SIZE_MAX);
    }
    tf_w_lit(w, "],\"env\":");
    tf_w_kv(w, s->env, s->nenv, true);
    tf_w_lit(w, ",\"workdir\":");
    if (!tf_relpath_valid(s->workdir ? s->workdir : "")) {
        w->ok = false;
        return;
    }
    tf_w_str(w, s->workdir, SIZE_MAX);
    tf_w_lit(w, ",\"timeout_s\":");
    tf_w_u64(w, s->timeout_s);
    tf_w_lit(w, ",\"max_time_s\":");
    tf_w_u64(w, s->max_time_s);
    tf_w_lit(w, ",\"haltOnFailure\":");
    tf_w_bool(w, s->flags.halt_on_failure);
    tf_w_lit(w, ",\"flunkOnFailure\":");
    tf_w_bool(w, s->flags.flunk_on_failure);
    tf_w_lit(w, ",\"warnOnFailure\":");
    tf_w_bool(w, s->flags.warn_on_failure);
    tf_w_lit(w, ",\"flunkOnWarnings\":");
    tf_w_bool(w, s->flags.flunk_on_warnings);
    tf_w_lit(w, ",\"warnOnWarnings\":");
    tf_w_bool(w, s->flags.warn_on_warnings);
    tf_w_lit(w, ",\"alwaysRun\":");
    tf_w_bool(w, s->flags.always_run);
    if (s->builtin) {
        if (strcmp(s->builtin, TF_BUILTIN_SOURCE) != 0) {
            w->ok = false;
            return;
        }
        tf_w_lit(w, ",\"builtin\":\"" TF_BUILTIN_SOURCE "\"");
    }
    if (s->modifiers) {
        tf_w_lit(w, ",\"modifiers\":");
        tf_w_modifiers(w, s->modifiers);
    }
    if (s->test_results) {
        tf_w_lit(w, ",\"test_results\":");
        tf_w_test_spec(w, s->test_results);
    }
    tf_w_lit(w, "}");
}

/* True when s is exactly 64 lower-case hex characters (tf_enc_hex and
 * tf_dec_hex64). */
static bool tf_hex64_valid(const char s[TF_PROTO_NONCE_HEX + 1])
{
    for (size_t i = 0; i < TF_PROTO_NONCE_HEX; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[TF_PROTO_NONCE_HEX] == '\0';
}

/* build_start.source (tf_enc_source, tf_dec_source). */
static void tf_w_source(tf_wbuf_t *w, const tf_source_t *src)
{
    const char *repo = src->repository ? src->repository : "";
    const char *branch = src->branch ? src->branch : "";
    const char *rev = src->revision ? src->revision : "";
    if (!tf_repo_url_valid(repo) || !tf_git_ref_valid(branch) ||
        !tf_git_rev_valid(rev)) {
        w->ok = false;
        return;
    }
    tf_w_lit(w, "{\"repository\":");
    tf_w_str(w, repo, TF_REPO_MAX);
    tf_w_lit(w, ",\"branch\":");
    tf_w_str(w, branch, TF_REF_MAX);
    tf_w_lit(w, ",\"revision\":");
    tf_w_str(w, rev, TF_REF_MAX);
    if (!src->has_patch) {
        tf_w_lit(w, ",\"patch\":null}");
        return;
    }
    if (!tf_hex64_valid(src->patch_sha256) ||
        src->patch_size > TF_PROTO_MAX_ID) {
        w->ok = false;
        return;
    }
    tf_w_lit(w, ",\"patch\":{\"sha256\":\"");
    tf_w_mem(w, src->patch_sha256, TF_PROTO_NONCE_HEX);
    tf_w_lit(w, "\",\"size\":");
    tf_w_u64(w, src->patch_size);
    tf_w_lit(w, "}}");
}

bool tf__msg_encode_build_start(const tf_msg_t *m, char **out,
                                size_t *len_out)
{
    const __typeof__(m->u.build_start) *b = &m->u.build_start;
    tf_wbuf_t w = {NULL, 0, 0, true};

    /* tf_dec_build_start's ranges and counts. */
    if (m->type != TF_MSG_BUILD_START || b->build_id < 1 ||
        b->build_id > TF_PROTO_MAX_ID || b->number > TF_PROTO_MAX_ID ||
        b->nsteps < 1 || b->nsteps > TF_PROTO_MAX_STEPS || !b->steps)
        return false;
    tf_w_lit(&w, "{\"type\":\"build_start\",\"build_id\":");
    tf_w_u64(&w, b->build_id);
    tf_w_lit(&w, ",\"builder\":");
    tf_w_name(&w, b->builder);
    tf_w_lit(&w, ",\"number\":");
    tf_w_u64(&w, b->number);
    tf_w_lit(&w, ",\"workdir\":");
    tf_w_name(&w, b->workdir);
    tf_w_lit(&w, ",\"properties\":");
    tf_w_kv(&w, b->props, b->nprops, false);
    tf_w_lit(&w, ",\"steps\":[");
    for (size_t i = 0; i < b->nsteps && w.ok; i++) {
        if (i)
            tf_w_lit(&w, ",");
        tf_w_step(&w, &b->steps[i]);
    }
    tf_w_lit(&w, "]");
    if (b->source) {
        tf_w_lit(&w, ",\"source\":");
        tf_w_source(&w, b->source);
    }
    tf_w_lit(&w, "}");
    if (!w.ok || w.len > TF_PROTO_MAX_TEXT) {
        free(w.p);
        return false;
    }
    w.p[w.len] = '\0';
    *out = w.p;
    if (len_out)
        *len_out = w.len;
    return true;
}
