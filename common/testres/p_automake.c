/*
 * p_automake.c - automake's parallel test harness: `make check` output and
 * its test-suite.log.
 *
 * The console has one line per test (and per TAP test point under the TAP
 * driver):
 *
 *   PASS: t_pass.sh
 *   FAIL: t_fail.sh
 *   FAIL: t_tap.tap 2 - second           (suite "t_tap.tap", name "2 -
 *                                         second", a "# SKIP" note cut)
 *
 * Words: PASS pass; FAIL fail; ERROR fail ("ERROR"); XPASS fail ("XPASS":
 * automake fails the run for it); SKIP skip; XFAIL skip ("XFAIL"). A line
 * whose name ends in ':' ("ERROR: AddressSanitizer: ...") or has words
 * that are not a TAP point is not a test line: sanitizers and scripts
 * print such lines too.
 *
 * "See tests/test-suite.log" names the log that holds the failing tests'
 * output; it is written in the directory make was in, which the last
 * "make[N]: Entering directory '...'" line gives. The slave reads it after
 * the step (tf_tr_console_hint) and tf_tr_automake_log_parse turns each
 * of its sections into a DETAIL: the test's output as its message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tf_err.h"

typedef struct {
    char dir[TF_TR_LINE_MAX + 1]; /* the last directory make entered */
    bool has_dir;
} tf__am_t;

static const struct {
    const char *word;
    tf_tr_status_t status;
    const char *outcome;
} tf__am_words[] = {
    {"PASS", TF_TR_PASS, NULL},     {"FAIL", TF_TR_FAIL, NULL},
    {"ERROR", TF_TR_FAIL, "ERROR"}, {"XPASS", TF_TR_FAIL, "XPASS"},
    {"SKIP", TF_TR_SKIP, NULL},     {"XFAIL", TF_TR_SKIP, "XFAIL"},
};
#define TF__AM_NWORDS (sizeof tf__am_words / sizeof tf__am_words[0])

/* "WORD: rest" with a known word; the index of the word, or -1. */
static int tf__am_word(const char *s, const char **rest)
{
    for (size_t i = 0; i < TF__AM_NWORDS; i++) {
        size_t wl = strlen(tf__am_words[i].word);
        if (strncmp(s, tf__am_words[i].word, wl) == 0 && s[wl] == ':' &&
            s[wl + 1] == ' ') {
            *rest = s + wl + 2;
            return (int)i;
        }
    }
    return -1;
}

/* Splits "script" or "script N[ - desc][ # DIRECTIVE]" into suite and
 * name; false when rest is not a test. */
static bool tf__am_split(const char *rest, char *suite, size_t scap,
                         char *name, size_t ncap)
{
    const char *sp = strchr(rest, ' ');
    size_t first = sp ? (size_t)(sp - rest) : strlen(rest);
    if (first == 0 || rest[first - 1] == ':')
        return false;
    if (!sp) {
        suite[0] = '\0';
        snprintf(name, ncap, "%s", rest);
        return true;
    }
    const char *num = sp + 1, *e = num;
    while (*e >= '0' && *e <= '9')
        e++;
    if (e == num || (*e != '\0' && *e != ' '))
        return false;
    tf__copy_trim(suite, scap, rest, first);
    const char *hash = strstr(e, " # ");
    size_t n = hash ? (size_t)(hash - num) : strlen(num);
    tf__copy_trim(name, ncap, num, n);
    return true;
}

static void tf__am_line(tf_tr_console_t *c, void *vst, const tf__line_t *ln)
{
    tf__am_t *st = vst;
    const char *rest;
    char suite[TF_TR_MAX_NAME + 1], name[TF_TR_MAX_NAME + 1];

    int w = tf__am_word(ln->s, &rest);
    if (w >= 0) {
        if (!tf__am_split(rest, suite, sizeof suite, name, sizeof name))
            return;
        tf_tr_res_t r = {
            .suite = suite, .name = name, .status = tf__am_words[w].status,
            .outcome = tf__am_words[w].outcome, .duration_ms = -1,
            .log = {true, ln->offset, ln->lineno, 1},
        };
        tf__emit(c, TF_TR_ATTEMPT, &r);
        return;
    }
    /* make[2]: Entering directory '/build/tests' */
    const char *ent = strstr(ln->s, ": Entering directory ");
    if (tf__starts(ln->s, "make") && ent) {
        const char *q = ent + 21;
        size_t n = strlen(q);
        if (n >= 2 && (q[0] == '\'' || q[0] == '`') && q[n - 1] == '\'') {
            tf__copy_trim(st->dir, sizeof st->dir, q + 1, n - 2);
            st->has_dir = st->dir[0] == '/';
        }
        return;
    }
    if (tf__starts(ln->s, "See ") && ln->len > 4 + 14) {
        const char *path = ln->s + 4;
        size_t n = strlen(path);
        /* Only log files: TEST_SUITE_LOG may be renamed, but it ends in
         * ".log". */
        if (n >= 4 && strcmp(path + n - 4, ".log") == 0 &&
            !strchr(path, ' '))
            tf__hint(c, path, st->has_dir ? st->dir : NULL);
    }
}

const tf__parser_t tf__automake_parser = {
    .fmt = TF_TR_FMT_AUTOMAKE,
    .state_size = sizeof(tf__am_t),
    .line = tf__am_line,
};

/* ---- test-suite.log -------------------------------------------------- */

typedef struct {
    tf_tr_emit_cb emit;
    void *arg;
    int word;             /* the open section's word, -1 none */
    char name[TF_TR_MAX_NAME + 1];
    char full[TF_TR_MAX_NAME + 1]; /* from "FAIL t_fail.sh (exit status:" */
    bool underline;       /* expecting the "=====" line */
    tf__msg_t msg;
} tf__amlog_t;

static void tf__amlog_end(tf__amlog_t *st)
{
    if (st->word < 0)
        return;
    /* Only sections closed by "WORD name (exit status: N)" are whole
     * tests; a TAP script's section covers many points. */
    if (st->full[0]) {
        tf_tr_res_t r = {
            .suite = "", .name = st->full,
            .status = tf__am_words[st->word].status,
            .outcome = tf__am_words[st->word].outcome, .duration_ms = -1,
            .message = tf__msg_text(&st->msg),
        };
        st->emit(st->arg, TF_TR_DETAIL, &r);
    }
    st->word = -1;
}

static void tf__amlog_line(tf__amlog_t *st, const char *s, size_t n)
{
    const char *rest;
    if (st->underline) {
        st->underline = false;
        if (n > 0 && strspn(s, "=") == n)
            return;
    }
    int w = tf__am_word(s, &rest);
    if (w >= 0 && !strchr(rest, ' ')) {
        tf__amlog_end(st);
        st->word = w;
        snprintf(st->name, sizeof st->name, "%s", rest);
        st->full[0] = '\0';
        st->underline = true;
        tf__msg_reset(&st->msg);
        return;
    }
    if (st->word < 0)
        return;
    /* "FAIL t_fail.sh (exit status: 1)" closes the test's output. */
    size_t wl = strlen(tf__am_words[st->word].word);
    const char *es = strstr(s, " (exit status: ");
    if (strncmp(s, tf__am_words[st->word].word, wl) == 0 && s[wl] == ' ' &&
        es && es > s + wl + 1) {
        tf__copy_trim(st->full, sizeof st->full, s + wl + 1,
                      (size_t)(es - s - wl - 1));
        tf__amlog_end(st);
        return;
    }
    tf__msg_add(&st->msg, s, n);
}

int tf_tr_automake_log_parse(const char *buf, size_t len, tf_tr_emit_cb emit,
                             void *arg)
{
    tf__amlog_t *st = calloc(1, sizeof *st);
    char line[TF_TR_LINE_MAX + 1];
    if (!st)
        return TF_ENOMEM;
    st->emit = emit;
    st->arg = arg;
    st->word = -1;
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - buf) : len;
        size_t n = end - i;
        if (n > TF_TR_LINE_MAX)
            n = TF_TR_LINE_MAX;
        memcpy(line, buf + i, n);
        if (n > 0 && line[n - 1] == '\r')
            n--;
        line[n] = '\0';
        for (size_t k = 0; k < n; k++)
            if (line[k] == '\0')
                line[k] = '?';
        tf__amlog_line(st, line, n);
        i = end + 1;
    }
    tf__amlog_end(st);
    free(st);
    return 0;
}
