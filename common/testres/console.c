/*
 * console.c - turns a step's two output streams into positioned lines for
 * the format parsers.
 *
 * Positions are those of the stored log, which is both streams' pieces
 * concatenated in the order the slave read them: every feed advances one
 * byte offset and one newline count shared by both streams, and each
 * stream's line remembers where its first byte was. A line's number is the
 * count of newlines before its first byte, plus one. So a line of stderr
 * that was written in two pieces with stdout in between still gets the
 * place where it started, which is where a reader of the log finds it.
 *
 * Each stream holds at most TF_TR_LINE_MAX bytes of its current line; the
 * rest of a longer line is counted and skipped. Colour codes (ESC [ ... )
 * are stripped because runners print them when forced (CTEST_OUTPUT_ON_
 * FAILURE with colour, pytest --color=yes, automake's AM_COLOR_TESTS).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tf_err.h"

typedef struct tf__stream {
    char buf[TF_TR_LINE_MAX + 1];
    size_t len;
    bool started;
    bool cut;
    uint64_t offset;
    uint64_t lineno;
} tf__stream_t;

typedef struct tf__hint_rec {
    char *path;
    char *dir;
} tf__hint_rec_t;

struct tf_tr_console {
    const tf__parser_t *p;
    void *state;
    tf_tr_emit_cb emit;
    void *arg;
    tf__stream_t streams[2];
    uint64_t offset;   /* bytes fed so far */
    uint64_t newlines; /* '\n' fed so far */
    bool finished;
    bool file_mode;
    char *prefix;      /* file mode: suite prefix, or NULL */
    tf__hint_rec_t hints[TF_TR_MAX_HINTS];
    size_t nhints;
    char clean[TF_TR_LINE_MAX + 1];
};

static const tf__parser_t *tf__parser_for(tf_tr_format_t fmt)
{
    switch (fmt) {
    case TF_TR_FMT_CTEST: return &tf__ctest_parser;
    case TF_TR_FMT_GTEST: return &tf__gtest_parser;
    case TF_TR_FMT_PYTEST: return &tf__pytest_parser;
    case TF_TR_FMT_UNITTEST: return &tf__unittest_parser;
    case TF_TR_FMT_AUTOMAKE: return &tf__automake_parser;
    case TF_TR_FMT_TAP: return &tf__tap_parser;
    default: return NULL;
    }
}

int tf_tr_console_new(tf_tr_format_t fmt, tf_tr_emit_cb emit, void *arg,
                      tf_tr_console_t **out)
{
    const tf__parser_t *p = tf__parser_for(fmt);
    *out = NULL;
    if (!p || !emit)
        return TF_EINVAL;
    tf_tr_console_t *c = calloc(1, sizeof *c);
    if (!c)
        return TF_ENOMEM;
    c->state = calloc(1, p->state_size);
    if (!c->state) {
        free(c);
        return TF_ENOMEM;
    }
    c->p = p;
    c->emit = emit;
    c->arg = arg;
    *out = c;
    return 0;
}

int tf_tr_console_file_mode(tf_tr_console_t *c, const char *suite_prefix)
{
    c->file_mode = true;
    free(c->prefix);
    c->prefix = NULL;
    if (suite_prefix && *suite_prefix && !(c->prefix = strdup(suite_prefix)))
        return TF_ENOMEM;
    return 0;
}

void tf_tr_console_free(tf_tr_console_t *c)
{
    if (!c)
        return;
    if (c->p->fini)
        c->p->fini(c->state);
    free(c->state);
    free(c->prefix);
    for (size_t i = 0; i < c->nhints; i++) {
        free(c->hints[i].path);
        free(c->hints[i].dir);
    }
    free(c);
}

void tf__emit(tf_tr_console_t *c, tf_tr_kind_t kind, const tf_tr_res_t *r)
{
    if (!c->file_mode) {
        c->emit(c->arg, kind, r);
        return;
    }
    char suite[2 * TF_TR_MAX_NAME + 3];
    tf_tr_res_t copy = *r;
    const char *s = r->suite ? r->suite : "";
    if (c->prefix) {
        snprintf(suite, sizeof suite, "%s%s%.*s", c->prefix, *s ? "::" : "",
                 TF_TR_MAX_NAME, s);
        copy.suite = suite;
    }
    memset(&copy.log, 0, sizeof copy.log);
    c->emit(c->arg, kind, &copy);
}

void tf__hint(tf_tr_console_t *c, const char *path, const char *dir)
{
    if (c->nhints >= TF_TR_MAX_HINTS || !path || !*path)
        return;
    for (size_t i = 0; i < c->nhints; i++)
        if (strcmp(c->hints[i].path, path) == 0 &&
            ((!dir && !c->hints[i].dir) ||
             (dir && c->hints[i].dir && strcmp(dir, c->hints[i].dir) == 0)))
            return;
    char *p = strdup(path);
    char *d = dir ? strdup(dir) : NULL;
    if (!p || (dir && !d)) {
        free(p);
        free(d);
        return;
    }
    c->hints[c->nhints].path = p;
    c->hints[c->nhints].dir = d;
    c->nhints++;
}

const char *tf_tr_console_hint(const tf_tr_console_t *c, size_t i,
                               const char **dir)
{
    if (!c || i >= c->nhints)
        return NULL;
    if (dir)
        *dir = c->hints[i].dir;
    return c->hints[i].path;
}

uint64_t tf_tr_console_bytes(const tf_tr_console_t *c)
{
    return c->offset;
}

/* Copies the raw line into c->clean without colour codes, '\r' at the end
 * or NUL bytes, and hands it to the parser. */
static void tf__deliver(tf_tr_console_t *c, int stream, tf__stream_t *st)
{
    const char *in = st->buf;
    size_t n = st->len, o = 0;
    if (n > 0 && in[n - 1] == '\r' && !st->cut)
        n--;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch == 0x1b && i + 1 < n && in[i + 1] == '[') {
            /* CSI: parameters and intermediates, then a final byte. */
            i += 2;
            while (i < n && !((unsigned char)in[i] >= 0x40 &&
                              (unsigned char)in[i] <= 0x7e))
                i++;
            continue;
        }
        if (ch == 0x1b && i + 1 < n && in[i + 1] == ']') {
            /* OSC: up to BEL or ESC \ (terminal titles, hyperlinks). */
            i += 2;
            while (i < n && in[i] != 0x07 &&
                   !(in[i] == 0x1b && i + 1 < n && in[i + 1] == '\\'))
                i++;
            if (i < n && in[i] == 0x1b)
                i++;
            continue;
        }
        c->clean[o++] = ch == 0 ? '?' : (char)ch;
    }
    c->clean[o] = '\0';
    tf__line_t ln = {
        .s = c->clean, .len = o, .stream = stream, .offset = st->offset,
        .lineno = st->lineno, .cut = st->cut,
    };
    c->p->line(c, c->state, &ln);
    st->started = false;
    st->len = 0;
    st->cut = false;
}

void tf_tr_console_feed(tf_tr_console_t *c, int stream, const uint8_t *data,
                        size_t n)
{
    if (!c || c->finished || n == 0)
        return;
    tf__stream_t *st = &c->streams[stream == 2 ? 1 : 0];
    uint64_t base = c->offset, nl = c->newlines;
    size_t i = 0;
    while (i < n) {
        if (!st->started) {
            st->started = true;
            st->offset = base + i;
            st->lineno = nl + 1;
            st->len = 0;
            st->cut = false;
        }
        const uint8_t *hit = memchr(data + i, '\n', n - i);
        size_t end = hit ? (size_t)(hit - data) : n;
        size_t take = end - i;
        if (st->len + take > TF_TR_LINE_MAX) {
            take = TF_TR_LINE_MAX - st->len;
            st->cut = true;
        }
        memcpy(st->buf + st->len, data + i, take);
        st->len += take;
        if (!hit)
            break;
        nl++;
        /* Positions must already count this newline for the next line. */
        c->offset = base + end + 1;
        c->newlines = nl;
        tf__deliver(c, stream == 2 ? 2 : 1, st);
        i = end + 1;
    }
    c->offset = base + n;
    c->newlines = nl;
}

void tf_tr_console_finish(tf_tr_console_t *c)
{
    if (!c || c->finished)
        return;
    tf__stream_t *a = &c->streams[0], *b = &c->streams[1];
    /* Unterminated last lines, the earlier one first. */
    if (a->started && b->started && b->offset < a->offset) {
        tf__deliver(c, 2, b);
        tf__deliver(c, 1, a);
    } else {
        if (a->started)
            tf__deliver(c, 1, a);
        if (b->started)
            tf__deliver(c, 2, b);
    }
    c->finished = true;
    if (c->p->finish)
        c->p->finish(c, c->state);
}
