/*
 * mail_render.c - result mails as pure functions (see mail_render.h).
 *
 * Messages are built with a sticky-error writer (wr_t): every append is a
 * no-op once one failed, and the caller checks the error once at the end,
 * which keeps the templates readable. Text is produced with '\n' line
 * ends and turned into CRLF by the quoted-printable encoder; headers are
 * written with CRLF directly.
 *
 * The size cap on a whole message is met by rendering again with every
 * excerpt halved (tf_excerpt_shrink cuts whole lines from the middle, so
 * the first error and the end of the step stay), until the message fits or
 * the excerpts are gone; the result is the same for the same input, which
 * is what lets the outbox store one rendering and resend it unchanged.
 */
#include "mail/mail_render.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base64.h"
#include "crypto.h"
#include "tf_err.h"
#include "utf8.h"

#define WORD_BYTES 45        /* raw bytes per encoded word: 60 in base64 */
#define SUBJECT_DESC_MAX 120 /* bytes of the description in a subject */
#define SHRINK_MIN 256       /* below this an excerpt is left out */
#define MAX_RENDERS 24

/* ------------------------------------------------------------------ */
/* A writer with a sticky error                                        */
/* ------------------------------------------------------------------ */

typedef struct wr {
    tf_buf_t *b;
    int rc;
} wr_t;

static void put(wr_t *w, const char *s)
{
    if (!w->rc && s)
        w->rc = tf_buf_append_str(w->b, s);
}

static void putn(wr_t *w, const void *p, size_t n)
{
    if (!w->rc)
        w->rc = tf_buf_append(w->b, p, n);
}

__attribute__((format(printf, 2, 3))) static void putf(wr_t *w,
                                                      const char *fmt, ...)
{
    char small[512];
    va_list ap;
    if (w->rc)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        w->rc = TF_EINVAL;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        w->rc = tf_buf_append(w->b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        w->rc = TF_ENOMEM;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    w->rc = tf_buf_append(w->b, big, (size_t)n);
    free(big);
}

static void put_html(wr_t *w, const char *s)
{
    if (!w->rc && s)
        w->rc = tf_mail_html_escape(w->b, s);
}

static char *buf_str(tf_buf_t *b)
{
    char *s = (char *)tf_buf_steal(b, NULL);
    return s ? s : strdup("");
}

/* ------------------------------------------------------------------ */
/* UTF-8 and cleaning                                                  */
/* ------------------------------------------------------------------ */

/* Skips an ANSI escape sequence starting at p[0] == ESC; returns its
 * length (at least 1). */
static size_t ansi_len(const unsigned char *p, size_t n)
{
    if (n < 2)
        return 1;
    if (p[1] == '[') {
        size_t i = 2;
        while (i < n && !(p[i] >= 0x40 && p[i] <= 0x7e))
            i++;
        return i < n ? i + 1 : n;
    }
    if (p[1] == ']') {
        for (size_t i = 2; i < n; i++) {
            if (p[i] == 0x07)
                return i + 1;
            if (p[i] == 0x1b && i + 1 < n && p[i + 1] == '\\')
                return i + 2;
        }
        return n;
    }
    return 2;
}

int tf_mail_clean_line(tf_buf_t *out, const void *bytes, size_t n,
                       size_t max_bytes)
{
    static const char repl[] = "\xef\xbf\xbd";
    static const char cut[] = " [...]";
    const unsigned char *p = bytes;
    size_t start = 0, used = 0;
    int rc = 0;

    while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == '\n'))
        n--;
    for (size_t i = n; i > 0; i--) {
        if (p[i - 1] == '\r') {
            start = i;
            break;
        }
    }
    for (size_t i = start; i < n && rc == 0;) {
        const char *emit = (const char *)p + i;
        size_t len = 1, adv = 1;
        unsigned char c = p[i];
        if (c == 0x1b) {
            i += ansi_len(p + i, n - i);
            continue;
        }
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            i++;
            continue;
        }
        if (c >= 0x80) {
            len = adv = tf_utf8_len(p + i, n - i);
            if (len == 0) {
                emit = repl;
                len = 3;
                adv = 1;
            }
        }
        if (used + len > max_bytes) {
            rc = tf_buf_append(out, cut, sizeof(cut) - 1);
            break;
        }
        rc = tf_buf_append(out, emit, len);
        used += len;
        i += adv;
    }
    return rc;
}

/* The first line of s, cleaned, at most max bytes ("..." when cut). */
static char *one_line(const char *s, size_t max)
{
    tf_buf_t b;
    tf_buf_init(&b, 0);
    if (s) {
        size_t n = strcspn(s, "\n");
        if (tf_mail_clean_line(&b, s, n, max) != 0) {
            tf_buf_free(&b);
            return NULL;
        }
    }
    return buf_str(&b);
}

/* s cleaned line by line (invalid UTF-8 replaced, control bytes gone). */
static char *clean_text(const char *s)
{
    tf_buf_t b;
    int rc = 0;
    tf_buf_init(&b, 0);
    while (s && *s && rc == 0) {
        size_t n = strcspn(s, "\n");
        rc = tf_mail_clean_line(&b, s, n, SIZE_MAX / 4);
        s += n;
        if (*s == '\n') {
            rc = rc ? rc : tf_buf_append(&b, "\n", 1);
            s++;
        }
    }
    if (rc) {
        tf_buf_free(&b);
        return NULL;
    }
    return buf_str(&b);
}

/* ------------------------------------------------------------------ */
/* Header pieces                                                       */
/* ------------------------------------------------------------------ */

static bool needs_encoding(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p >= 0x7f || *p < 0x20)
            return true;
    return strstr(s, "=?") != NULL;
}

/* Appends s as encoded words separated by CRLF SP. */
static int encoded_words(tf_buf_t *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), i = 0;
    char b64[80];
    int rc = 0;
    while (i < n && rc == 0) {
        size_t take = 0;
        while (i + take < n) {
            size_t l = tf_utf8_len(p + i + take, n - i - take);
            if (l == 0)
                l = 1; /* callers clean first; never loop forever */
            if (take + l > WORD_BYTES)
                break;
            take += l;
        }
        tf_base64_encode(p + i, take, b64);
        if (i > 0)
            rc = tf_buf_append(out, "\r\n ", 3);
        if (rc == 0)
            rc = tf_buf_printf(out, "=?UTF-8?B?%s?=", b64);
        i += take;
    }
    return rc;
}

int tf_mail_header_text(tf_buf_t *out, const char *text)
{
    char *clean = NULL, *spaced = NULL;
    int rc;
    tf_buf_t b;
    tf_buf_init(&b, 0);
    spaced = strdup(text ? text : "");
    if (!spaced) {
        rc = TF_ENOMEM;
        goto out;
    }
    for (char *p = spaced; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    rc = tf_mail_clean_line(&b, spaced, strlen(spaced), SIZE_MAX / 4);
    if (rc)
        goto out;
    clean = buf_str(&b);
    if (!clean) {
        rc = TF_ENOMEM;
        goto out;
    }
    rc = needs_encoding(clean) ? encoded_words(out, clean)
                               : tf_buf_append_str(out, clean);
out:
    free(clean);
    free(spaced);
    tf_buf_free(&b);
    return rc;
}

int tf_mail_header_address(tf_buf_t *out, const char *name, const char *addr)
{
    int rc = 0;
    char *clean = name && *name ? one_line(name, 200) : NULL;
    if (name && *name && !clean)
        return TF_ENOMEM;
    if (clean && *clean) {
        if (needs_encoding(clean)) {
            rc = encoded_words(out, clean);
        } else {
            rc = tf_buf_append(out, "\"", 1);
            for (const char *p = clean; rc == 0 && *p; p++) {
                if (*p == '"' || *p == '\\')
                    rc = tf_buf_append(out, "\\", 1);
                if (rc == 0)
                    rc = tf_buf_append(out, p, 1);
            }
            if (rc == 0)
                rc = tf_buf_append(out, "\"", 1);
        }
        if (rc == 0)
            rc = tf_buf_append(out, " ", 1);
    }
    if (rc == 0)
        rc = tf_buf_printf(out, "<%s>", addr);
    free(clean);
    return rc;
}

void tf_mail_date(int64_t ms, char out[TF_MAIL_DATE_LEN])
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed",
                                       "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
                                         "May", "Jun", "Jul", "Aug",
                                         "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, TF_MAIL_DATE_LEN, "%s, %02d %s %04d %02d:%02d:%02d +0000",
             days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

const char *tf_mail_domain(const char *addr)
{
    const char *at = addr ? strrchr(addr, '@') : NULL;
    return at && at[1] ? at + 1 : "localhost";
}

char *tf_mail_thread_id(const char *kind, const char *key,
                        const char *domain)
{
    char hex[TF_SHA256_HEX_LEN + 1];
    char *out = NULL;
    if (!kind || !key || !domain)
        return NULL;
    tf_sha256_hex(key, strlen(key), hex);
    hex[32] = '\0';
    size_t n = strlen(kind) + strlen(domain) + 48;
    out = malloc(n);
    if (out)
        snprintf(out, n, "<tf-%s.%s@%s>", kind, hex, domain);
    return out;
}

/* ------------------------------------------------------------------ */
/* Bodies                                                              */
/* ------------------------------------------------------------------ */

int tf_mail_qp_encode(tf_buf_t *out, const void *data, size_t n)
{
    static const char hexd[] = "0123456789ABCDEF";
    const unsigned char *p = data;
    size_t col = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char c = p[i];
        if (c == '\n') {
            rc = tf_buf_append(out, "\r\n", 2);
            col = 0;
            continue;
        }
        bool at_end = i + 1 == n || p[i + 1] == '\n';
        bool lit = (c >= 33 && c <= 126 && c != '=') ||
                   ((c == ' ' || c == '\t') && !at_end);
        /* A soft break may come first: decide the token for column 0 then
         * too, because the line-start rules apply to physical lines. */
        for (int pass = 0; pass < 2; pass++) {
            bool l = lit;
            if (col == 0 && (c == '.' ||
                             (c == 'F' && n - i >= 5 &&
                              memcmp(p + i, "From ", 5) == 0)))
                l = false;
            size_t need = l ? 1 : 3;
            /* Room for the token and, unless the line ends right after,
             * the '=' of a soft break. */
            size_t limit = at_end ? 76 : 75;
            if (col + need > limit && col > 0 && pass == 0) {
                rc = tf_buf_append(out, "=\r\n", 3);
                col = 0;
                if (rc)
                    break;
                continue;
            }
            if (l) {
                rc = tf_buf_append(out, &c, 1);
            } else {
                char e[3] = {'=', hexd[c >> 4], hexd[c & 15]};
                rc = tf_buf_append(out, e, 3);
            }
            col += need;
            break;
        }
    }
    return rc;
}

int tf_mail_html_escape(tf_buf_t *out, const char *s)
{
    int rc = 0;
    const char *run = s;
    for (const char *p = s; rc == 0; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        case '\0': rep = ""; break;
        default: continue;
        }
        if (p > run)
            rc = tf_buf_append(out, run, (size_t)(p - run));
        if (rc == 0 && *rep)
            rc = tf_buf_append_str(out, rep);
        if (*p == '\0')
            break;
        run = p + 1;
    }
    return rc;
}

int tf_mail_duration(tf_buf_t *out, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    if (ms < 1000)
        return tf_buf_printf(out, "%" PRId64 " ms", ms);
    if (ms < 60000)
        return tf_buf_printf(out, "%" PRId64 ".%" PRId64 " s", ms / 1000,
                             ms % 1000 / 100);
    int64_t s = ms / 1000;
    if (s < 3600)
        return tf_buf_printf(out, "%" PRId64 " min %02" PRId64 " s", s / 60,
                             s % 60);
    return tf_buf_printf(out, "%" PRId64 " h %02" PRId64 " min", s / 3600,
                         s % 3600 / 60);
}

/* ------------------------------------------------------------------ */
/* Excerpts                                                            */
/* ------------------------------------------------------------------ */

typedef struct kept {
    uint64_t line; /* 1-based */
    char *text;    /* raw bytes, NUL-terminated */
    size_t len;
} kept_t;

struct tf_excerpt {
    char **patterns;
    size_t *patlen;
    size_t npatterns;
    unsigned tail_lines;
    size_t max_bytes;
    uint64_t line;       /* lines completed */
    char cur[TF_MAIL_LINE_KEEP];
    char fold[TF_MAIL_LINE_KEEP]; /* cur in lower case, for matching */
    size_t cur_len;
    unsigned context_after; /* lines kept after each match */
    unsigned after_left;    /* of those, still to keep */
    bool cur_any;        /* the current line has bytes (maybe not kept) */
    kept_t *matches;
    size_t nmatches;
    size_t match_bytes;
    uint64_t nmatching;  /* every matching line, kept or not */
    kept_t *ring;        /* tail_lines entries */
    size_t ring_pos;
    size_t ring_n;
    bool oom;
};

tf_excerpt_t *tf_excerpt_new(const char *const *patterns, size_t npatterns,
                             unsigned tail_lines, size_t max_bytes)
{
    tf_excerpt_t *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->tail_lines = tail_lines;
    e->max_bytes = max_bytes;
    e->patterns = calloc(npatterns ? npatterns : 1, sizeof(char *));
    e->patlen = calloc(npatterns ? npatterns : 1, sizeof(size_t));
    e->matches = calloc(TF_MAIL_MAX_MATCHES, sizeof(kept_t));
    e->ring = calloc(tail_lines ? tail_lines : 1, sizeof(kept_t));
    if (!e->patterns || !e->patlen || !e->matches || !e->ring)
        goto fail;
    for (size_t i = 0; i < npatterns; i++) {
        if (!patterns[i] || !*patterns[i])
            continue;
        e->patterns[e->npatterns] = strdup(patterns[i]);
        if (!e->patterns[e->npatterns])
            goto fail;
        for (char *c = e->patterns[e->npatterns]; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c + ('a' - 'A'));
        e->patlen[e->npatterns] = strlen(patterns[i]);
        e->npatterns++;
    }
    return e;
fail:
    tf_excerpt_free(e);
    return NULL;
}

void tf_excerpt_free(tf_excerpt_t *e)
{
    if (!e)
        return;
    for (size_t i = 0; e->patterns && i < e->npatterns; i++)
        free(e->patterns[i]);
    free(e->patterns);
    free(e->patlen);
    for (size_t i = 0; e->matches && i < e->nmatches; i++)
        free(e->matches[i].text);
    free(e->matches);
    for (size_t i = 0; e->ring && i < e->tail_lines; i++)
        free(e->ring[i].text);
    free(e->ring);
    free(e);
}

/* Error patterns match without regard to ASCII case ("FAILED", "failed"
 * and ctest's "***Failed" alike): patterns are kept folded to lower case
 * (tf_excerpt_new) and each line is folded into e->fold before searching. */
static bool line_matches(tf_excerpt_t *e, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        e->fold[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    for (size_t i = 0; i < e->npatterns; i++)
        if (memmem(e->fold, n, e->patterns[i], e->patlen[i]))
            return true;
    return false;
}

static char *dup_bytes(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

void tf_excerpt_set_context_after(tf_excerpt_t *e, unsigned lines)
{
    e->context_after = lines;
}

static void end_line(tf_excerpt_t *e)
{
    uint64_t no = ++e->line;
    bool match = line_matches(e, e->cur, e->cur_len);
    if (match) {
        e->nmatching++;
        e->after_left = e->context_after + 1;
    }
    /* A match and the context_after lines that follow it (a sanitizer's
     * stack, an assertion's detail) are kept, under the same caps. */
    if (e->after_left > 0) {
        e->after_left--;
        if (e->nmatches < TF_MAIL_MAX_MATCHES &&
            e->match_bytes < e->max_bytes) {
            char *t = dup_bytes(e->cur, e->cur_len);
            if (t) {
                e->matches[e->nmatches++] =
                    (kept_t){.line = no, .text = t, .len = e->cur_len};
                e->match_bytes += e->cur_len;
            } else {
                e->oom = true;
            }
        }
    }
    if (e->tail_lines) {
        kept_t *k = &e->ring[e->ring_pos];
        free(k->text);
        k->text = dup_bytes(e->cur, e->cur_len);
        k->len = e->cur_len;
        k->line = no;
        if (!k->text)
            e->oom = true;
        e->ring_pos = (e->ring_pos + 1) % e->tail_lines;
        if (e->ring_n < e->tail_lines)
            e->ring_n++;
    }
    e->cur_len = 0;
    e->cur_any = false;
}

void tf_excerpt_feed(tf_excerpt_t *e, const void *data, size_t n)
{
    const char *p = data, *end = p + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        size_t room = sizeof(e->cur) - e->cur_len;
        size_t take = len < room ? len : room;
        memcpy(e->cur + e->cur_len, p, take);
        e->cur_len += take;
        e->cur_any = e->cur_any || len > 0;
        if (!nl)
            break;
        end_line(e);
        p = nl + 1;
    }
}

void tf_excerpt_jump(tf_excerpt_t *e, uint64_t line)
{
    e->cur_len = 0;
    e->cur_any = false;
    if (line > e->line) {
        /* The tail before the gap no longer ends where the log does. */
        for (size_t i = 0; i < e->tail_lines; i++) {
            free(e->ring[i].text);
            e->ring[i].text = NULL;
        }
        e->ring_n = e->ring_pos = 0;
        e->line = line;
        e->after_left = 0; /* the lines after a match are not these */
    }
}

uint64_t tf_excerpt_lines(const tf_excerpt_t *e)
{
    return e->line;
}

/* Appends one numbered, cleaned line. */
static int excerpt_line(tf_buf_t *b, const kept_t *k)
{
    int rc = tf_buf_printf(b, "%6" PRIu64 "| ", k->line);
    if (rc == 0)
        rc = tf_mail_clean_line(b, k->text, k->len, TF_MAIL_LINE_SHOW);
    if (rc == 0)
        rc = tf_buf_append(b, "\n", 1);
    return rc;
}

/* Formats the kept lines k[0..n) each into its own string. */
static char **format_lines(const kept_t *const *k, size_t n)
{
    char **out = calloc(n ? n : 1, sizeof(char *));
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        tf_buf_t b;
        tf_buf_init(&b, 0);
        if (excerpt_line(&b, k[i]) != 0 || !(out[i] = buf_str(&b))) {
            tf_buf_free(&b);
            for (size_t j = 0; j < i; j++)
                free(out[j]);
            free(out);
            return NULL;
        }
    }
    return out;
}

static void free_lines(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

char *tf_excerpt_finish(tf_excerpt_t *e)
{
    char **tl = NULL, **ml = NULL;
    const kept_t **tk = NULL, **mk = NULL;
    size_t nt = 0, nm = 0;
    char *result = NULL;
    tf_buf_t b;
    wr_t w = {.b = &b};
    tf_buf_init(&b, 0);

    if (e->cur_any || e->cur_len)
        end_line(e);
    if (e->oom)
        goto out;
    uint64_t total = e->line;
    uint64_t tail_from = total - e->ring_n + 1; /* first tail line */
    tk = calloc(e->ring_n ? e->ring_n : 1, sizeof(*tk));
    mk = calloc(e->nmatches ? e->nmatches : 1, sizeof(*mk));
    if (!tk || !mk)
        goto out;
    for (size_t i = 0; i < e->ring_n; i++) {
        size_t idx = (e->ring_pos + e->tail_lines - e->ring_n + i) %
                     e->tail_lines;
        tk[nt++] = &e->ring[idx];
    }
    for (size_t i = 0; i < e->nmatches; i++)
        if (e->matches[i].line < tail_from)
            mk[nm++] = &e->matches[i];
    tl = format_lines(tk, nt);
    ml = format_lines(mk, nm);
    if (!tl || !ml)
        goto out;

    /* Budget: the tail first from its end, matches at most half unless
     * the tail leaves more; the section titles are counted too. */
    char mhead[160], thead[160];
    snprintf(mhead, sizeof(mhead),
             "--- lines matching the error patterns (%" PRIu64
             " in all; the first ones before the tail%s) ---\n",
             e->nmatching, e->context_after ? ", each with the lines after it"
                                            : "");
    size_t mbytes = 0;
    for (size_t i = 0; i < nm; i++)
        mbytes += strlen(ml[i]);
    size_t budget = e->max_bytes;
    size_t mreserve = nm ? strlen(mhead) + mbytes : 0;
    if (mreserve > budget / 2)
        mreserve = budget / 2;
    size_t tbudget = budget - mreserve;
    size_t tfirst = nt, tused = 0;
    snprintf(thead, sizeof(thead), "--- the last %zu lines (of %" PRIu64
             ") ---\n", nt, total);
    size_t thlen = nt ? strlen(thead) + 16 : 0; /* the count may shrink */
    while (tfirst > 0 && tused + thlen + strlen(tl[tfirst - 1]) <= tbudget) {
        tused += strlen(tl[tfirst - 1]);
        tfirst--;
    }
    if (nt)
        snprintf(thead, sizeof(thead), "--- the last %zu lines (of %" PRIu64
                 ") ---\n", nt - tfirst, total);
    size_t tsize = nt > tfirst ? strlen(thead) + tused : 0;
    size_t mbudget = budget > tsize ? budget - tsize : 0;
    size_t mcount = 0, mused = nm ? strlen(mhead) : 0;
    while (mcount < nm && mused + strlen(ml[mcount]) <= mbudget)
        mused += strlen(ml[mcount++]);
    if (mcount > 0) {
        put(&w, mhead);
        for (size_t i = 0; i < mcount; i++)
            put(&w, ml[i]);
    }
    if (nt > tfirst) {
        put(&w, thead);
        for (size_t i = tfirst; i < nt; i++)
            put(&w, tl[i]);
    }
    if (w.rc == 0)
        result = buf_str(&b);
out:
    free_lines(tl, nt);
    free_lines(ml, nm);
    free(tk);
    free(mk);
    tf_buf_free(&b);
    return result;
}

char *tf_excerpt_shrink(const char *excerpt, size_t max)
{
    size_t n = strlen(excerpt);
    char note[128];
    if (n <= max)
        return strdup(excerpt);
    /* Line starts, to cut whole lines. */
    size_t nlines = 0;
    for (size_t i = 0; i < n; i++)
        nlines += excerpt[i] == '\n' || i + 1 == n;
    size_t *starts = calloc(nlines + 1, sizeof(size_t));
    if (!starts)
        return NULL;
    size_t k = 0;
    starts[k++] = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (excerpt[i] == '\n')
            starts[k++] = i + 1;
    starts[k] = n; /* k == nlines */
    snprintf(note, sizeof(note),
             "[... %zu lines cut to keep the mail under its size cap ...]\n",
             nlines);
    size_t notelen = strlen(note);
    char *out = NULL;
    if (max < notelen + 2) {
        out = strdup("");
        goto done;
    }
    size_t head_budget = (max - notelen) / 2;
    size_t h = 0; /* lines kept from the start */
    while (h < nlines && starts[h + 1] <= head_budget)
        h++;
    size_t tail_budget = max - notelen - starts[h];
    size_t t = nlines; /* first line kept at the end */
    while (t > h && n - starts[t - 1] <= tail_budget)
        t--;
    snprintf(note, sizeof(note),
             "[... %zu lines cut to keep the mail under its size cap ...]\n",
             t - h);
    size_t len = starts[h] + strlen(note) + (n - starts[t]);
    out = malloc(len + 1);
    if (!out)
        goto done;
    memcpy(out, excerpt, starts[h]);
    memcpy(out + starts[h], note, strlen(note));
    memcpy(out + starts[h] + strlen(note), excerpt + starts[t],
           n - starts[t]);
    out[len] = '\0';
done:
    free(starts);
    return out;
}

/* ------------------------------------------------------------------ */
/* Messages                                                            */
/* ------------------------------------------------------------------ */

const char *tf_mail_verdict(tf_result_t r)
{
    switch (r) {
    case TF_SUCCESS:
    case TF_WARNINGS:
        return "PASS";
    case TF_FAILURE:
    case TF_EXCEPTION:
        return "FAIL";
    default:
        return tf_result_name(r);
    }
}

static const char *result_color(tf_result_t r)
{
    switch (r) {
    case TF_SUCCESS: return "#8d4";
    case TF_WARNINGS: return "#fa3";
    case TF_FAILURE: return "#e88";
    case TF_EXCEPTION: return "#c6c";
    case TF_RETRY: return "#ecc";
    default: return "#ccc";
    }
}

static const char *build_result_text(const tf_mail_build_t *b)
{
    if (b->has_result)
        return tf_result_name(b->result);
    return b->state ? b->state : "unknown";
}

static void put_duration(wr_t *w, const tf_mail_build_t *b)
{
    if (b->started_ms > 0 && b->finished_ms >= b->started_ms) {
        if (!w->rc)
            w->rc = tf_mail_duration(w->b, b->finished_ms - b->started_ms);
    } else {
        put(w, "-");
    }
}

static void put_time(wr_t *w, int64_t ms)
{
    char iso[40];
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(iso, sizeof(iso), "%04d-%02d-%02d %02d:%02d:%02d UTC",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec);
    put(w, iso);
}

/* The excerpt to show under a per-excerpt limit; *owned is set when the
 * returned string must be freed. NULL when left out. */
static const char *shown_excerpt(const char *ex, size_t limit, char **owned,
                                 int *rc)
{
    *owned = NULL;
    if (!ex)
        return NULL;
    if (strlen(ex) <= limit)
        return ex;
    if (limit < SHRINK_MIN)
        return NULL;
    *owned = tf_excerpt_shrink(ex, limit);
    if (!*owned)
        *rc = TF_ENOMEM;
    return *owned;
}

/* The text and HTML of one failed step. */
/* Appends text's lines cleaned (tf_mail_clean_line), each after indent,
 * at most max_lines of them; with html, escaped, each ending in "\n". */
static void put_text_lines(wr_t *w, const char *indent, const char *text,
                           unsigned max_lines, bool html)
{
    unsigned n = 0;
    tf_buf_t line;
    tf_buf_init(&line, TF_MAIL_LINE_SHOW + 64);
    for (const char *p = text; p && *p && n < max_lines && !w->rc; n++) {
        size_t len = strcspn(p, "\n");
        tf_buf_reset(&line);
        int rc = tf_mail_clean_line(&line, p, len, TF_MAIL_LINE_SHOW);
        if (rc == 0)
            rc = tf_buf_append(&line, "", 1);
        if (rc) {
            w->rc = rc;
            break;
        }
        put(w, indent);
        if (html)
            put_html(w, (const char *)line.data);
        else
            put(w, (const char *)line.data);
        put(w, "\n");
        p += len + (p[len] == '\n');
    }
    tf_buf_free(&line);
}

/* A build's failing tests, before its step's excerpt: the test, new or
 * also failing without the patch, its message and its lines of the log
 * (left out past limit bytes, as excerpts are). */
static void failing_tests(wr_t *t, wr_t *h, const tf_mail_build_t *b,
                          size_t limit)
{
    if (!b->tests_fail && !b->tests_flaky)
        return;
    putf(t, "\n%s: %" PRIu64 " failing test%s", b->builder, b->tests_fail,
         b->tests_fail == 1 ? "" : "s");
    put(h, "<h3 style=\"margin:18px 0 4px 0\">");
    put_html(h, b->builder);
    putf(h, ": %" PRIu64 " failing test%s", b->tests_fail,
         b->tests_fail == 1 ? "" : "s");
    if (b->is_try && b->tests_fail) {
        putf(t, " (%" PRIu64 " new, %" PRIu64 " also failing without the "
             "patch)", b->new_failures, b->tests_fail - b->new_failures);
        putf(h, " (%" PRIu64 " new, %" PRIu64 " also failing without the "
             "patch)", b->new_failures, b->tests_fail - b->new_failures);
    }
    if (b->tests_flaky) {
        putf(t, ", %" PRIu64 " flaky", b->tests_flaky);
        putf(h, ", %" PRIu64 " flaky", b->tests_flaky);
    }
    put(t, "\n");
    put(h, "</h3>\n");
    for (size_t i = 0; i < b->ntests; i++) {
        const tf_mail_test_t *x = &b->tests[i];
        const char *mark = x->flaky        ? "  (flaky: passed on a retry)"
                           : x->known == 0 ? "  [new]"
                           : x->known == 1 ? "  [also failing without the "
                                             "patch]"
                                           : "";
        putf(t, "\n  %s ", x->flaky ? "FLAKY" : "FAIL ");
        put(h, "<p style=\"margin:8px 0 2px 0\"><b>");
        put(h, x->flaky ? "FLAKY " : "FAIL ");
        if (x->suite && *x->suite) {
            putf(t, "%s :: ", x->suite);
            put_html(h, x->suite);
            put(h, " :: ");
        }
        put(t, x->name ? x->name : "?");
        put(t, mark);
        put(t, "\n");
        put_html(h, x->name ? x->name : "?");
        put(h, "</b>");
        put_html(h, mark);
        put(h, "</p>\n");
        if (x->message && *x->message) {
            put_text_lines(t, "      ", x->message, 10, false);
            put(h, "<pre style=\"margin:0 0 2px 12px;white-space:"
                   "pre-wrap\">");
            put_text_lines(h, "", x->message, 10, true);
            put(h, "</pre>\n");
        }
        if (x->lines && *x->lines && strlen(x->lines) <= limit) {
            putf(t, "      log of step %s, from line %" PRIu64 ":\n",
                 x->step ? x->step : "?", x->log_line);
            put_text_lines(t, "      | ", x->lines, 20, false);
            put(h, "<pre style=\"background:#f4f4f4;border:1px solid #ddd;"
                   "padding:6px;margin:0 0 0 12px;font-size:12px;"
                   "white-space:pre-wrap\">");
            put_text_lines(h, "", x->lines, 20, true);
            put(h, "</pre>\n");
        }
    }
    if (b->ntests < b->tests_fail + b->tests_flaky) {
        putf(t, "\n  ... and %" PRIu64 " more: %s\n",
             b->tests_fail + b->tests_flaky - b->ntests, b->url ? b->url : "");
        putf(h, "<p>... and %" PRIu64 " more</p>\n",
             b->tests_fail + b->tests_flaky - b->ntests);
    }
}

static void failed_step(wr_t *t, wr_t *h, const char *builder,
                        const tf_mail_step_t *s, size_t limit)
{
    char *owned = NULL;
    int rc = 0;
    const char *ex = shown_excerpt(s->excerpt, limit, &owned, &rc);
    if (rc) {
        t->rc = rc;
        return;
    }
    putf(t, "\n%s: %s in step %u \"%s\"\n", builder,
         tf_result_name(s->result), s->index, s->name ? s->name : "?");
    if (s->text && *s->text)
        putf(t, "  Step text: %s\n", s->text);
    if (s->info && *s->info)
        putf(t, "  Info:      %s\n", s->info);
    if (s->log_url)
        putf(t, "  Full log:  %s (%" PRIu64 " lines)\n", s->log_url,
             s->log_lines);
    put(t, "\n");
    if (ex && *ex) {
        for (const char *p = ex; *p;) {
            size_t n = strcspn(p, "\n");
            put(t, "    ");
            putn(t, p, n);
            put(t, "\n");
            p += n + (p[n] == '\n');
        }
    } else if (s->excerpt && *s->excerpt) {
        put(t, "    (the excerpt was left out to keep this mail under its "
               "size cap: see the full log)\n");
    } else {
        put(t, "    (no output)\n");
    }

    put(h, "<h3 style=\"margin:18px 0 4px 0\">");
    put_html(h, builder);
    put(h, ": ");
    put_html(h, tf_result_name(s->result));
    putf(h, " in step %u &ldquo;", s->index);
    put_html(h, s->name ? s->name : "?");
    put(h, "&rdquo;</h3>\n<p style=\"margin:0 0 6px 0\">");
    if (s->text && *s->text) {
        put(h, "Step text: ");
        put_html(h, s->text);
        put(h, "<br>\n");
    }
    if (s->info && *s->info) {
        put(h, "Info: ");
        put_html(h, s->info);
        put(h, "<br>\n");
    }
    if (s->log_url) {
        put(h, "<a href=\"");
        put_html(h, s->log_url);
        putf(h, "\">Full log</a> (%" PRIu64 " lines)", s->log_lines);
    }
    put(h, "</p>\n");
    if (ex && *ex) {
        put(h, "<pre style=\"background:#f4f4f4;border:1px solid #ddd;"
               "padding:6px;font-size:12px;white-space:pre-wrap\">");
        put_html(h, ex);
        put(h, "</pre>\n");
    } else if (s->excerpt && *s->excerpt) {
        put(h, "<p><i>The excerpt was left out to keep this mail under its "
               "size cap: see the full log.</i></p>\n");
    }
    free(owned);
}

static size_t name_width(const tf_mail_build_t *b, size_t n, bool slave)
{
    size_t w = slave ? 5 : 7;
    for (size_t i = 0; i < n; i++) {
        const char *s = slave ? (b[i].slave ? b[i].slave : "-") : b[i].builder;
        size_t l = s ? strlen(s) : 1;
        if (l > w)
            w = l;
    }
    return w > 40 ? 40 : w;
}

/* The builders table (text and HTML). */
static void builders_table(wr_t *t, wr_t *h, const tf_mail_build_t *b,
                           size_t n)
{
    size_t bw = name_width(b, n, false), sw = name_width(b, n, true);
    putf(t, "  %-*s  %-9s  %-12s  %-*s  %s\n", (int)bw, "Builder", "Result",
         "Duration", (int)sw, "Slave", "Build");
    put(h, "<table style=\"border-collapse:collapse\">\n<tr>");
    static const char *const cols[] = {"Builder", "Result", "Duration",
                                       "Slave", "Build"};
    for (size_t i = 0; i < 5; i++)
        putf(h, "<th style=\"text-align:left;padding:2px 10px 2px 0\">%s"
             "</th>", cols[i]);
    put(h, "</tr>\n");
    for (size_t i = 0; i < n; i++) {
        const tf_mail_build_t *x = &b[i];
        tf_buf_t dur;
        tf_buf_init(&dur, 64);
        wr_t dw = {.b = &dur};
        put_duration(&dw, x);
        const char *d = dw.rc ? "-" : (const char *)dur.data;
        const char *slave = x->slave && *x->slave ? x->slave : "-";
        putf(t, "  %-*s  %-9s  %-12s  %-*s  %s\n", (int)bw, x->builder,
             build_result_text(x), d ? d : "-", (int)sw, slave,
             x->url ? x->url : "-");
        put(h, "<tr><td style=\"padding:2px 10px 2px 0\">");
        put_html(h, x->builder);
        putf(h, "</td><td style=\"padding:2px 10px;background:%s\">",
             x->has_result ? result_color(x->result) : "#ccc");
        put_html(h, build_result_text(x));
        put(h, "</td><td style=\"padding:2px 10px 2px 0\">");
        put_html(h, d ? d : "-");
        put(h, "</td><td style=\"padding:2px 10px 2px 0\">");
        put_html(h, slave);
        put(h, "</td><td style=\"padding:2px 10px 2px 0\">");
        if (x->url) {
            put(h, "<a href=\"");
            put_html(h, x->url);
            if (x->has_build)
                putf(h, "\">build %" PRIu64 "</a>", x->build_id);
            else
                put(h, "\">link</a>");
        } else {
            put(h, "-");
        }
        put(h, "</td></tr>\n");
        tf_buf_free(&dur);
    }
    put(h, "</table>\n");
}

/* One "Label: value" row of the facts table; value may be NULL (skipped). */
static void fact(wr_t *t, wr_t *h, const char *label, const char *value,
                 const char *href)
{
    if (!value || !*value)
        return;
    putf(t, "  %-12s %s\n", label, value);
    put(h, "<tr><td style=\"padding:1px 12px 1px 0;color:#666\">");
    put_html(h, label);
    put(h, "</td><td>");
    if (href) {
        put(h, "<a href=\"");
        put_html(h, href);
        put(h, "\">");
    }
    put_html(h, value);
    if (href)
        put(h, "</a>");
    put(h, "</td></tr>\n");
}

static void html_head(wr_t *h, const char *subject)
{
    put(h, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
    put_html(h, subject);
    put(h, "</title></head>\n<body style=\"font-family:sans-serif;"
           "font-size:14px;color:#222\">\n");
}

static void footer(wr_t *t, wr_t *h, const tf_mail_env_t *env)
{
    putf(t, "\n-- \nSent by %s at %s\n",
         env->master_name ? env->master_name : "TestFarm",
         env->base_url ? env->base_url : "");
    put(h, "<p style=\"color:#888;font-size:12px;margin-top:24px\">Sent by ");
    put_html(h, env->master_name ? env->master_name : "TestFarm");
    put(h, " at <a href=\"");
    put_html(h, env->base_url ? env->base_url : "");
    put(h, "\">");
    put_html(h, env->base_url ? env->base_url : "");
    put(h, "</a></p>\n</body></html>\n");
}

/* The headers and parts of a message around two bodies. */
typedef struct envelope {
    const char *subject;
    const tf_mail_rcpt_t *to;
    size_t nto;
    const char *thread_id;  /* In-Reply-To and References, or NULL */
    const char *x_name;     /* "X-TestFarm-Job" */
    uint64_t x_id;
    const char *result;
} envelope_t;

static void header_line(wr_t *w, const char *name)
{
    put(w, name);
    put(w, ": ");
}

static int assemble(const tf_mail_env_t *env, const envelope_t *ev,
                    const tf_buf_t *text, const tf_buf_t *html,
                    tf_mail_msg_t *out)
{
    char date[TF_MAIL_DATE_LEN];
    tf_buf_t b;
    wr_t w = {.b = &b};
    tf_buf_init(&b, 0);
    tf_mail_date(env->now_ms, date);

    header_line(&w, "Date");
    put(&w, date);
    put(&w, "\r\n");
    header_line(&w, "From");
    if (!w.rc)
        w.rc = tf_mail_header_address(&b, env->from_name, env->from_addr);
    put(&w, "\r\n");
    header_line(&w, "To");
    for (size_t i = 0; i < ev->nto; i++) {
        if (i)
            put(&w, ",\r\n ");
        if (!w.rc)
            w.rc = tf_mail_header_address(&b, ev->to[i].name, ev->to[i].addr);
    }
    put(&w, "\r\n");
    header_line(&w, "Subject");
    if (!w.rc)
        w.rc = tf_mail_header_text(&b, ev->subject);
    put(&w, "\r\n");
    putf(&w, "Message-ID: %s\r\n", env->message_id);
    if (ev->thread_id)
        putf(&w, "In-Reply-To: %s\r\nReferences: %s\r\n", ev->thread_id,
             ev->thread_id);
    put(&w, "MIME-Version: 1.0\r\n");
    putf(&w, "Content-Type: multipart/alternative;\r\n boundary=\"%s\"\r\n",
         env->boundary);
    put(&w, "Auto-Submitted: auto-generated\r\n");
    putf(&w, "%s: %" PRIu64 "\r\n", ev->x_name, ev->x_id);
    putf(&w, "X-TestFarm-Result: %s\r\n", ev->result);
    put(&w, "\r\nThis is a MIME message: the same report as text and as "
            "HTML.\r\n");
    static const char *const types[] = {"text/plain", "text/html"};
    const tf_buf_t *parts[] = {text, html};
    for (size_t i = 0; i < 2; i++) {
        putf(&w, "\r\n--%s\r\n", env->boundary);
        putf(&w, "Content-Type: %s; charset=UTF-8\r\n", types[i]);
        put(&w, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        if (!w.rc)
            w.rc = tf_mail_qp_encode(&b, parts[i]->data ? parts[i]->data
                                                        : (const uint8_t *)"",
                                     parts[i]->len);
    }
    putf(&w, "\r\n--%s--\r\n", env->boundary);
    if (w.rc) {
        tf_buf_free(&b);
        return w.rc;
    }
    out->len = b.len;
    out->data = buf_str(&b);
    return out->data ? 0 : TF_ENOMEM;
}

void tf_mail_msg_clear(tf_mail_msg_t *m)
{
    if (!m)
        return;
    free(m->subject);
    free(m->data);
    memset(m, 0, sizeof(*m));
}

static size_t largest_excerpt(const tf_mail_build_t *b, size_t n)
{
    size_t max = 0;
    for (size_t i = 0; i < n; i++)
        if (b[i].failed && b[i].failed->excerpt &&
            strlen(b[i].failed->excerpt) > max)
            max = strlen(b[i].failed->excerpt);
    return max;
}

/* --- try job reports --- */

static char *job_subject(const tf_mail_env_t *env, const tf_mail_job_t *j)
{
    const char *verdict =
        j->state && strcmp(j->state, "cancelled") == 0 ? "CANCELLED"
        : j->has_result                                ? tf_mail_verdict(j->result)
                                                       : "DONE";
    char *desc = one_line(j->description, SUBJECT_DESC_MAX);
    tf_buf_t b;
    wr_t w = {.b = &b};
    tf_buf_init(&b, 0);
    if (!desc)
        return NULL;
    if (env->subject_prefix && *env->subject_prefix)
        putf(&w, "%s ", env->subject_prefix);
    if (j->new_failures_only && j->has_result && j->result != TF_SUCCESS &&
        j->result != TF_WARNINGS && !j->new_failure_builds &&
        !(j->state && strcmp(j->state, "cancelled") == 0))
        verdict = "NO NEW FAILURES";
    putf(&w, "%s: try job %" PRIu64, verdict, j->id);
    if (*desc)
        putf(&w, ": %s", desc);
    free(desc);
    if (w.rc) {
        tf_buf_free(&b);
        return NULL;
    }
    return buf_str(&b);
}

static int job_bodies(const tf_mail_env_t *env, const tf_mail_job_t *j,
                      const char *subject, size_t limit, tf_buf_t *tb,
                      tf_buf_t *hb)
{
    wr_t t = {.b = tb}, h = {.b = hb};
    char when[64] = "";
    char *desc = clean_text(j->description);
    if (j->description && !desc)
        return TF_ENOMEM;

    const char *res = j->state && strcmp(j->state, "cancelled") == 0
                          ? "CANCELLED"
                      : j->has_result ? tf_result_name(j->result)
                                      : "unknown";
    putf(&t, "Try job %" PRIu64 ": %s\n\n", j->id, res);
    html_head(&h, subject);
    putf(&h, "<h2 style=\"margin:0 0 10px 0\">Try job %" PRIu64 ": "
         "<span style=\"background:%s;padding:0 6px\">",
         j->id, j->has_result ? result_color(j->result) : "#ccc");
    put_html(&h, res);
    put(&h, "</span></h2>\n<table style=\"border-collapse:collapse\">\n");

    if (desc && *desc) {
        /* A multi-line description: its first line in the table, the rest
         * indented below it in the text part. */
        char *first = one_line(desc, 400);
        fact(&t, &h, "Description:", first ? first : "", NULL);
        free(first);
    }
    tf_buf_t ab;
    tf_buf_init(&ab, 1024);
    if (j->author && j->author_email)
        tf_buf_printf(&ab, "%s <%s>", j->author, j->author_email);
    else if (j->author_email)
        tf_buf_append_str(&ab, j->author_email);
    fact(&t, &h, "Author:", ab.data ? (char *)ab.data : NULL, NULL);
    tf_buf_free(&ab);
    fact(&t, &h, "Base:", j->base_revision, NULL);
    if (j->review_url) {
        tf_buf_t rb;
        tf_buf_init(&rb, 2048);
        if (j->patchset && *j->patchset)
            tf_buf_printf(&rb, "%s (patchset %s)", j->review_url, j->patchset);
        else
            tf_buf_append_str(&rb, j->review_url);
        fact(&t, &h, "Review:", rb.data ? (char *)rb.data : NULL,
             j->review_url);
        tf_buf_free(&rb);
    }
    if (j->submitted_ms > 0) {
        tf_buf_t sb;
        tf_buf_init(&sb, 128);
        wr_t sw = {.b = &sb};
        put_time(&sw, j->submitted_ms);
        if (j->finished_ms >= j->submitted_ms) {
            put(&sw, ", took ");
            if (!sw.rc)
                sw.rc = tf_mail_duration(&sb, j->finished_ms - j->submitted_ms);
        }
        snprintf(when, sizeof(when), "%s", sb.data ? (char *)sb.data : "");
        tf_buf_free(&sb);
        fact(&t, &h, "Submitted:", when, NULL);
    }
    fact(&t, &h, "Job:", j->url, j->url);
    put(&h, "</table>\n");
    if (desc && strchr(desc, '\n')) {
        const char *rest = strchr(desc, '\n') + 1;
        if (*rest) {
            put(&t, "\n");
            for (const char *p = rest; *p;) {
                size_t n = strcspn(p, "\n");
                put(&t, "  ");
                putn(&t, p, n);
                put(&t, "\n");
                p += n + (p[n] == '\n');
            }
            put(&h, "<pre style=\"font-family:inherit;margin:8px 0\">");
            put_html(&h, rest);
            put(&h, "</pre>\n");
        }
    }
    free(desc);

    putf(&t, "\nBuilders (%zu):\n\n", j->nbuilds);
    put(&h, "<h3 style=\"margin:18px 0 4px 0\">Builders</h3>\n");
    builders_table(&t, &h, j->builds, j->nbuilds);
    for (size_t i = 0; i < j->nbuilds; i++) {
        const tf_mail_build_t *b = &j->builds[i];
        failing_tests(&t, &h, b, limit);
        if (b->failed) {
            failed_step(&t, &h, b->builder, b->failed, limit);
        } else if (b->has_result && b->result != TF_SUCCESS &&
                   b->result != TF_WARNINGS && b->text && *b->text) {
            putf(&t, "\n%s: %s: %s\n", b->builder, tf_result_name(b->result),
                 b->text);
            put(&h, "<p><b>");
            put_html(&h, b->builder);
            put(&h, "</b>: ");
            put_html(&h, tf_result_name(b->result));
            put(&h, ": ");
            put_html(&h, b->text);
            put(&h, "</p>\n");
        }
    }
    footer(&t, &h, env);
    return t.rc ? t.rc : h.rc;
}

/* Renders with excerpts shortened until the message fits. build_bodies
 * fills the two parts for a given per-excerpt limit. */
typedef int (*bodies_fn)(const tf_mail_env_t *env, const void *data,
                         const char *subject, size_t limit, tf_buf_t *t,
                         tf_buf_t *h);

static int render_capped(const tf_mail_env_t *env, const void *data,
                         bodies_fn bodies, const envelope_t *ev,
                         size_t largest, tf_mail_msg_t *out)
{
    size_t limit = SIZE_MAX; /* excerpts as given */
    int rc = TF_E2BIG;
    for (int round = 0; round < MAX_RENDERS; round++) {
        tf_buf_t t, h;
        tf_mail_msg_t m = {0};
        tf_buf_init(&t, 0);
        tf_buf_init(&h, 0);
        rc = bodies(env, data, ev->subject, limit, &t, &h);
        if (rc == 0)
            rc = assemble(env, ev, &t, &h, &m);
        tf_buf_free(&t);
        tf_buf_free(&h);
        if (rc) {
            tf_mail_msg_clear(&m);
            return rc;
        }
        if (m.len <= env->max_bytes || env->max_bytes == 0) {
            out->data = m.data;
            out->len = m.len;
            return 0;
        }
        tf_mail_msg_clear(&m);
        if (limit == 0)
            return TF_E2BIG;
        if (limit > largest)
            limit = largest;
        limit = limit / 2 >= SHRINK_MIN ? limit / 2 : 0;
    }
    return rc;
}

static int job_bodies_fn(const tf_mail_env_t *env, const void *data,
                         const char *subject, size_t limit, tf_buf_t *t,
                         tf_buf_t *h)
{
    return job_bodies(env, data, subject, limit, t, h);
}

int tf_mail_render_job(const tf_mail_env_t *env, const tf_mail_job_t *job,
                       tf_mail_msg_t *out)
{
    int rc;
    char *thread = NULL;
    memset(out, 0, sizeof(*out));
    if (!job->nto)
        return TF_EINVAL;
    out->subject = job_subject(env, job);
    if (!out->subject)
        return TF_ENOMEM;
    if (job->review_url && *job->review_url) {
        thread = tf_mail_thread_id("review", job->review_url,
                                   tf_mail_domain(env->from_addr));
        if (!thread) {
            tf_mail_msg_clear(out);
            return TF_ENOMEM;
        }
    }
    const char *res = job->state && strcmp(job->state, "cancelled") == 0
                          ? "CANCELLED"
                      : job->has_result ? tf_result_name(job->result)
                                        : "UNKNOWN";
    envelope_t ev = {
        .subject = out->subject,
        .to = job->to,
        .nto = job->nto,
        .thread_id = thread,
        .x_name = "X-TestFarm-Job",
        .x_id = job->id,
        .result = res,
    };
    rc = render_capped(env, job, job_bodies_fn, &ev,
                       largest_excerpt(job->builds, job->nbuilds), out);
    free(thread);
    if (rc)
        tf_mail_msg_clear(out);
    return rc;
}

/* --- continuous build notices --- */

static bool failed_result(tf_result_t r)
{
    return r == TF_FAILURE || r == TF_EXCEPTION;
}

/* "broken", "fixed", "still failing", ... from the result and the
 * previous build's. */
static const char *notice_change(const tf_mail_notice_t *n)
{
    const tf_mail_build_t *b = &n->build;
    if (!b->has_result)
        return "finished";
    if (!n->has_prev)
        return failed_result(b->result) ? "failed" : "passed";
    bool was = failed_result(n->prev), is = failed_result(b->result);
    if (is && !was)
        return "broken";
    if (!is && was)
        return "fixed";
    return is ? "still failing" : "passing";
}

static char *notice_subject(const tf_mail_env_t *env,
                            const tf_mail_notice_t *n)
{
    tf_buf_t b;
    wr_t w = {.b = &b};
    tf_buf_init(&b, 0);
    if (env->subject_prefix && *env->subject_prefix)
        putf(&w, "%s ", env->subject_prefix);
    putf(&w, "%s: %s build #%" PRIu64 " (%s)",
         n->build.has_result ? tf_mail_verdict(n->build.result) : "DONE",
         n->build.builder, n->build.number, notice_change(n));
    if (w.rc) {
        tf_buf_free(&b);
        return NULL;
    }
    return buf_str(&b);
}

static int notice_bodies(const tf_mail_env_t *env, const void *data,
                         const char *subject, size_t limit, tf_buf_t *tb,
                         tf_buf_t *hb)
{
    const tf_mail_notice_t *n = data;
    const tf_mail_build_t *b = &n->build;
    wr_t t = {.b = tb}, h = {.b = hb};
    const char *res = build_result_text(b);
    char buf[64];

    putf(&t, "Builder %s, build #%" PRIu64 ": %s (%s)\n\n", b->builder,
         b->number, res, notice_change(n));
    html_head(&h, subject);
    put(&h, "<h2 style=\"margin:0 0 10px 0\">Builder ");
    put_html(&h, b->builder);
    putf(&h, ", build #%" PRIu64 ": <span style=\"background:%s;"
         "padding:0 6px\">", b->number,
         b->has_result ? result_color(b->result) : "#ccc");
    put_html(&h, res);
    put(&h, "</span> (");
    put_html(&h, notice_change(n));
    put(&h, ")</h2>\n<table style=\"border-collapse:collapse\">\n");
    fact(&t, &h, "Build:", b->url, b->url);
    fact(&t, &h, "Slave:", b->slave, NULL);
    {
        tf_buf_t d;
        tf_buf_init(&d, 64);
        wr_t dw = {.b = &d};
        put_duration(&dw, b);
        fact(&t, &h, "Duration:", dw.rc ? NULL : (char *)d.data, NULL);
        tf_buf_free(&d);
    }
    fact(&t, &h, "Repository:", n->repository, NULL);
    fact(&t, &h, "Branch:", n->branch, NULL);
    fact(&t, &h, "Revision:", n->revision, NULL);
    fact(&t, &h, "Reason:", n->reason, NULL);
    if (n->has_prev) {
        snprintf(buf, sizeof(buf), "%s", tf_result_name(n->prev));
        fact(&t, &h, "Previous:", buf, NULL);
    }
    fact(&t, &h, "Build text:", b->text, NULL);
    put(&h, "</table>\n");

    if (n->nchanges) {
        putf(&t, "\nChanges (%zu):\n\n", n->nchanges);
        put(&h, "<h3 style=\"margin:18px 0 4px 0\">Changes</h3>\n<ul>\n");
        for (size_t i = 0; i < n->nchanges; i++) {
            const tf_mail_change_t *c = &n->changes[i];
            char *msg = one_line(c->message, 200);
            char rev[13];
            snprintf(rev, sizeof(rev), "%.12s", c->revision ? c->revision
                                                            : "?");
            putf(&t, "  %s  %s%s%s%s  %s\n", rev, c->author ? c->author : "",
                 c->email ? " <" : "", c->email ? c->email : "",
                 c->email ? ">" : "", msg ? msg : "");
            put(&h, "<li><code>");
            put_html(&h, rev);
            put(&h, "</code> ");
            put_html(&h, c->author ? c->author : "");
            if (c->email) {
                put(&h, " &lt;");
                put_html(&h, c->email);
                put(&h, "&gt;");
            }
            put(&h, ": ");
            put_html(&h, msg ? msg : "");
            put(&h, "</li>\n");
            free(msg);
        }
        put(&h, "</ul>\n");
    }
    if (n->nsteps) {
        put(&t, "\nSteps:\n\n");
        put(&h, "<h3 style=\"margin:18px 0 4px 0\">Steps</h3>\n"
                "<table style=\"border-collapse:collapse\">\n");
        for (size_t i = 0; i < n->nsteps; i++) {
            const tf_mail_step_t *s = &n->steps[i];
            putf(&t, "  %2u %-24s %-9s %s\n", s->index, s->name ? s->name : "",
                 tf_result_name(s->result), s->text ? s->text : "");
            putf(&h, "<tr><td style=\"padding:1px 10px 1px 0\">%u</td>"
                 "<td style=\"padding:1px 10px 1px 0\">", s->index);
            put_html(&h, s->name ? s->name : "");
            putf(&h, "</td><td style=\"padding:1px 10px;background:%s\">",
                 result_color(s->result));
            put_html(&h, tf_result_name(s->result));
            put(&h, "</td><td style=\"padding:1px 10px\">");
            put_html(&h, s->text ? s->text : "");
            put(&h, "</td></tr>\n");
        }
        put(&h, "</table>\n");
    }
    failing_tests(&t, &h, b, limit);
    if (b->failed)
        failed_step(&t, &h, b->builder, b->failed, limit);
    footer(&t, &h, env);
    return t.rc ? t.rc : h.rc;
}

int tf_mail_render_notice(const tf_mail_env_t *env, const tf_mail_notice_t *n,
                          tf_mail_msg_t *out)
{
    int rc;
    char *thread = NULL;
    memset(out, 0, sizeof(*out));
    if (!n->nto)
        return TF_EINVAL;
    out->subject = notice_subject(env, n);
    thread = tf_mail_thread_id("builder", n->build.builder,
                               tf_mail_domain(env->from_addr));
    if (!out->subject || !thread) {
        free(thread);
        tf_mail_msg_clear(out);
        return TF_ENOMEM;
    }
    envelope_t ev = {
        .subject = out->subject,
        .to = n->to,
        .nto = n->nto,
        .thread_id = thread,
        .x_name = "X-TestFarm-Build",
        .x_id = n->build.build_id,
        .result = n->build.has_result ? tf_result_name(n->build.result)
                                      : "UNKNOWN",
    };
    rc = render_capped(env, n, notice_bodies, &ev,
                       largest_excerpt(&n->build, 1), out);
    free(thread);
    if (rc)
        tf_mail_msg_clear(out);
    return rc;
}
