/*
 * util.c - names of formats and statuses, file globs, the failure message
 * builder and the small string helpers the parsers share.
 *
 * Globs are checked here once for everyone who handles them (the protocol
 * decoder, the master's config loader, the slave's file walker): a glob is
 * a relative path pattern that cannot name anything outside the directory
 * it is applied to, whatever it matches.
 */
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *const tf__format_names[TF_TR_FMT__COUNT] = {
    [TF_TR_FMT_CTEST] = "ctest",     [TF_TR_FMT_GTEST] = "gtest",
    [TF_TR_FMT_PYTEST] = "pytest",   [TF_TR_FMT_UNITTEST] = "unittest",
    [TF_TR_FMT_AUTOMAKE] = "automake", [TF_TR_FMT_TAP] = "tap",
    [TF_TR_FMT_JUNIT] = "junit",
};

const char *tf_tr_format_name(tf_tr_format_t f)
{
    if ((int)f <= TF_TR_FMT_NONE || (int)f >= TF_TR_FMT__COUNT)
        return NULL;
    return tf__format_names[f];
}

tf_tr_format_t tf_tr_format_parse(const char *s)
{
    for (int i = TF_TR_FMT_NONE + 1; s && i < TF_TR_FMT__COUNT; i++)
        if (strcmp(s, tf__format_names[i]) == 0)
            return (tf_tr_format_t)i;
    return TF_TR_FMT_NONE;
}

bool tf_tr_format_console(tf_tr_format_t f)
{
    return f > TF_TR_FMT_NONE && f < TF_TR_FMT_JUNIT;
}

bool tf_tr_format_files(tf_tr_format_t f)
{
    return f == TF_TR_FMT_JUNIT || f == TF_TR_FMT_TAP ||
           f == TF_TR_FMT_AUTOMAKE;
}

static const char *const tf__status_names[] = {
    [TF_TR_PASS] = "pass", [TF_TR_FAIL] = "fail", [TF_TR_SKIP] = "skip",
    [TF_TR_FLAKY] = "flaky",
};

const char *tf_tr_status_name(tf_tr_status_t s)
{
    if (s < TF_TR_PASS || s > TF_TR_FLAKY)
        return NULL;
    return tf__status_names[s];
}

tf_tr_status_t tf_tr_status_parse(const char *s)
{
    for (int i = TF_TR_PASS; s && i <= TF_TR_FLAKY; i++)
        if (strcmp(s, tf__status_names[i]) == 0)
            return (tf_tr_status_t)i;
    return TF_TR_NONE;
}

bool tf_tr_glob_valid(const char *s)
{
    if (!s)
        return false;
    size_t len = strnlen(s, TF_TR_MAX_GLOB + 1);
    if (len == 0 || len > TF_TR_MAX_GLOB)
        return false;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i < len && (c < 0x20 || c == 0x7f || c == '\\'))
            return false;
        if (i == len || c == '/') {
            size_t n = i - start;
            /* Empty (leading '/', "//", trailing '/'), "." and ".." are
             * what could leave or re-enter the tree. */
            if (n == 0 || (n == 1 && s[start] == '.') ||
                (n == 2 && s[start] == '.' && s[start + 1] == '.'))
                return false;
            start = i + 1;
        }
    }
    return true;
}

bool tf_tr_glob_match(const char *pattern, const char *name)
{
    return fnmatch(pattern, name, FNM_PERIOD) == 0;
}

/* ---- strings ---------------------------------------------------------- */

bool tf__starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

const char *tf__skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

size_t tf__cat(char *dst, size_t cap, const char *src, size_t n)
{
    size_t have = strnlen(dst, cap);
    if (have + 1 >= cap)
        return have;
    if (n > cap - 1 - have)
        n = cap - 1 - have;
    memcpy(dst + have, src, n);
    dst[have + n] = '\0';
    return have + n;
}

void tf__copy_trim(char *out, size_t cap, const char *s, size_t n)
{
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

bool tf__looks_like_location(const char *s)
{
    /* "path/file.ext:LINE:" (gcc, ctest, assert(), GoogleTest) or
     * "path/file.ext(LINE)" (MSVC), path without spaces. */
    const char *p = tf__skip_ws(s);
    const char *q = p;
    bool dot = false;
    while (*q && *q != ':' && *q != '(' && *q != ' ' && *q != '\t') {
        dot = dot || *q == '.';
        q++;
    }
    if (q == p || !dot || (*q != ':' && *q != '('))
        return false;
    char close = *q == ':' ? ':' : ')';
    q++;
    const char *d = q;
    while (*q >= '0' && *q <= '9')
        q++;
    return q > d && *q == close;
}

int64_t tf__parse_uint(const char *s, size_t n)
{
    int64_t v = 0;
    if (n == 0 || n > 15)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int64_t tf__seconds_to_ms(const char *s, size_t n)
{
    char buf[40];
    char *end;
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (!((buf[i] >= '0' && buf[i] <= '9') || buf[i] == '.'))
            return -1;
    double v = strtod(buf, &end);
    if (end != buf + n || !isfinite(v) || v < 0 || v > 1e12)
        return -1;
    return (int64_t)(v * 1000.0 + 0.5);
}

/* ---- the message builder --------------------------------------------- */

void tf__msg_reset(tf__msg_t *m)
{
    m->len = 0;
    m->buf[0] = '\0';
    m->dropped = 0;
    m->has_key = false;
    m->key_in_head = false;
    m->key_fixed = false;
    m->key[0] = '\0';
    memset(&m->loc, 0, sizeof m->loc);
}

bool tf__msg_empty(const tf__msg_t *m)
{
    return m->len == 0;
}

static void tf__msg_set_key(tf__msg_t *m, const char *s, size_t n,
                            bool in_head)
{
    if (n > TF__KEY_MAX)
        n = TF__KEY_MAX;
    memcpy(m->key, s, n);
    m->key[n] = '\0';
    m->has_key = true;
    m->key_in_head = in_head;
}

void tf__msg_add(tf__msg_t *m, const char *s, size_t n)
{
    if (m->len == 0 && n == 0)
        return; /* a message does not start with blank lines */
    bool fits = m->len + n + 1 <= TF_TR_MAX_MESSAGE;
    if (fits) {
        memcpy(m->buf + m->len, s, n);
        m->len += n;
        m->buf[m->len++] = '\n';
        m->buf[m->len] = '\0';
    } else {
        m->dropped += n + 1;
    }
    if (!m->has_key && tf__looks_like_location(s))
        tf__msg_set_key(m, s, n, fits);
}

void tf__msg_span(tf__msg_t *m, const tf__line_t *ln)
{
    if (!m->loc.has) {
        m->loc.has = true;
        m->loc.offset = ln->offset;
        m->loc.line = ln->lineno;
        m->loc.lines = 1;
    } else if (ln->lineno >= m->loc.line) {
        m->loc.lines = ln->lineno - m->loc.line + 1;
    }
}

void tf__msg_line(tf__msg_t *m, const tf__line_t *ln)
{
    tf__msg_span(m, ln);
    tf__msg_add(m, ln->s, ln->len);
}

void tf__msg_key(tf__msg_t *m, const char *s, size_t n, bool last)
{
    if (m->key_fixed && !last)
        return;
    /* The key is in the head when it is the last line added and fitted. */
    bool in_head = m->dropped == 0 && m->len > n &&
                   memcmp(m->buf + m->len - n - 1, s, n) == 0;
    tf__msg_set_key(m, s, n, in_head);
    m->key_fixed = true;
}

const char *tf__msg_text(tf__msg_t *m)
{
    size_t len = m->len;
    while (len > 0 && (m->buf[len - 1] == '\n' || m->buf[len - 1] == ' '))
        len--;
    if (len == 0 && !m->has_key)
        return NULL;
    memcpy(m->out, m->buf, len);
    m->out[len] = '\0';
    if (!m->dropped && (!m->has_key || m->key_in_head))
        return m->out;
    /* Over the cap: keep the head, then say so, then the key line. */
    char tail[TF__KEY_MAX + 64];
    int t = m->has_key && !m->key_in_head
                ? snprintf(tail, sizeof tail, "\n[...]\n%s", m->key)
                : snprintf(tail, sizeof tail, "\n[...]");
    size_t room = TF_TR_MAX_MESSAGE - (size_t)t;
    if (len > room) {
        len = room;
        while (len > 0 && m->out[len - 1] != '\n')
            len--;
        if (len == 0)
            len = room;
        else
            len--; /* drop the newline: the tail starts with one */
    }
    memcpy(m->out + len, tail, (size_t)t + 1);
    return m->out;
}
