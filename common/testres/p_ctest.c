/*
 * p_ctest.c - ctest's console output.
 *
 * What ctest prints per test run (one line, "N/M " absent on reruns of
 * --repeat until-pass/until-fail/after-timeout):
 *
 *       Start  1: test_pack
 *   1/4 Test  #1: test_pack ........................***Failed    0.01 sec
 *
 * With --output-on-failure the failing test's output follows its result
 * line; with -V it comes before it, each line prefixed "N: " (and tests
 * may interleave under -j). Both are collected as the failure message;
 * the log position spans from the first output line to the last (or is
 * the result line alone when the test printed nothing).
 *
 * Status words: "Passed"; "Skipped" and "Not Run (Disabled)" are skips;
 * everything else ("Failed", "Timeout", "Exception: SegFault", "Not Run"
 * for a missing executable, "Failed  Required regular expression ...") is
 * a failure, the word kept as the outcome. A test run again by --repeat
 * is a new attempt, which is what makes a flaky one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define TF__CT_SLOTS 16 /* -V output of tests running at once (-j) */

typedef struct {
    bool used;
    uint64_t num;
    tf__msg_t msg;
} tf__ct_slot_t;

typedef struct {
    bool pending;      /* a failed result whose output may follow */
    char name[TF_TR_MAX_NAME + 1];
    char outcome[TF_TR_MAX_OUTCOME + 1];
    int64_t duration_ms;
    tf__msg_t msg;
    tf__ct_slot_t slots[TF__CT_SLOTS];
    uint64_t slot_clock;
} tf__ct_t;

static void tf__ct_flush(tf_tr_console_t *c, tf__ct_t *st)
{
    if (!st->pending)
        return;
    tf_tr_res_t r = {
        .suite = "", .name = st->name, .status = TF_TR_FAIL,
        .outcome = st->outcome, .duration_ms = st->duration_ms,
        .message = tf__msg_text(&st->msg), .log = st->msg.loc,
    };
    tf__emit(c, TF_TR_ATTEMPT, &r);
    st->pending = false;
}

static tf__ct_slot_t *tf__ct_slot(tf__ct_t *st, uint64_t num, bool create)
{
    tf__ct_slot_t *free_slot = NULL;
    for (size_t i = 0; i < TF__CT_SLOTS; i++) {
        if (st->slots[i].used && st->slots[i].num == num)
            return &st->slots[i];
        if (!st->slots[i].used && !free_slot)
            free_slot = &st->slots[i];
    }
    if (!create)
        return NULL;
    if (!free_slot)
        free_slot = &st->slots[st->slot_clock++ % TF__CT_SLOTS];
    free_slot->used = true;
    free_slot->num = num;
    tf__msg_reset(&free_slot->msg);
    return free_slot;
}

/* "   Start  1: name" */
static bool tf__ct_is_start(const char *s)
{
    s = tf__skip_ws(s);
    if (!tf__starts(s, "Start "))
        return false;
    s = tf__skip_ws(s + 6);
    const char *d = s;
    while (*s >= '0' && *s <= '9')
        s++;
    return s > d && s[0] == ':' && s[1] == ' ';
}

/* Lines that end a test's output: ctest's own framing. */
static bool tf__ct_is_frame(const char *s)
{
    const char *p = tf__skip_ws(s);
    const char *pct = strstr(s, "% tests passed, ");
    if (tf__starts(s, "test ") && tf__parse_uint(s + 5, strlen(s + 5)) >= 0)
        return true; /* -V: "test 3" before a test's lines */
    return tf__ct_is_start(s) || (pct && pct < s + 5) ||
           tf__starts(p, "Total Test time") ||
           tf__starts(s, "The following tests ") ||
           tf__starts(s, "Errors while running CTest") ||
           tf__starts(s, "Test project ") ||
           tf__starts(s, "Output from these tests are in") ||
           tf__starts(s, "Use \"--rerun-failed");
}

/* Parses a result line; fills num, name, status text and duration. */
static bool tf__ct_result(const char *s, uint64_t *num, char *name,
                          size_t namecap, char *status, size_t statuscap,
                          int64_t *ms)
{
    const char *p = tf__skip_ws(s);
    /* Optional "N/M " progress. */
    const char *q = p;
    while (*q >= '0' && *q <= '9')
        q++;
    if (q > p && *q == '/') {
        q++;
        while (*q >= '0' && *q <= '9')
            q++;
        if (*q != ' ')
            return false;
        p = tf__skip_ws(q);
    }
    if (!tf__starts(p, "Test "))
        return false;
    p = tf__skip_ws(p + 5);
    if (*p != '#')
        return false;
    p++;
    const char *d = p;
    while (*p >= '0' && *p <= '9')
        p++;
    if (p == d || p[0] != ':' || p[1] != ' ')
        return false;
    *num = (uint64_t)tf__parse_uint(d, (size_t)(p - d));
    p += 2;
    /* The end: "<time> sec". */
    size_t len = strlen(p);
    if (len < 5 || strcmp(p + len - 4, " sec") != 0)
        return false;
    const char *tend = p + len - 4;
    const char *tbeg = tend;
    while (tbeg > p && ((tbeg[-1] >= '0' && tbeg[-1] <= '9') ||
                        tbeg[-1] == '.'))
        tbeg--;
    if (tbeg == tend || tbeg == p || tbeg[-1] != ' ')
        return false;
    *ms = tf__seconds_to_ms(tbeg, (size_t)(tend - tbeg));
    /* Name, then " ...." padding (or "***" when the name fills the
     * column), then the status. */
    const char *pad = strstr(p, " .");
    const char *stars = strstr(p, "***");
    const char *name_end, *st;
    if (pad && pad < tbeg) {
        name_end = pad;
        st = pad + 1;
        while (st < tbeg && *st == '.')
            st++;
    } else if (stars && stars < tbeg) {
        name_end = stars;
        st = stars;
    } else {
        /* "name   Passed" with no padding left. */
        const char *w = tbeg - 1;
        while (w > p && w[-1] == ' ')
            w--;
        while (w > p && w[-1] != ' ')
            w--;
        name_end = w;
        st = w;
    }
    tf__copy_trim(name, namecap, p, (size_t)(name_end - p));
    while (st < tbeg && (*st == ' ' || *st == '*'))
        st++;
    tf__copy_trim(status, statuscap, st, (size_t)(tbeg - st));
    return name[0] != '\0' && status[0] != '\0';
}

static tf_tr_status_t tf__ct_status(const char *w)
{
    if (strcmp(w, "Passed") == 0)
        return TF_TR_PASS;
    if (tf__starts(w, "Skipped") || tf__starts(w, "Not Run (Disabled)") ||
        tf__starts(w, "Disabled"))
        return TF_TR_SKIP;
    return TF_TR_FAIL;
}

/* "N: text" from ctest -V; *text points after the prefix. */
static bool tf__ct_verbose(const char *s, uint64_t *num, const char **text)
{
    const char *p = s;
    while (*p >= '0' && *p <= '9')
        p++;
    if (p == s || p[0] != ':' || (p[1] != ' ' && p[1] != '\0'))
        return false;
    *num = (uint64_t)tf__parse_uint(s, (size_t)(p - s));
    *text = p[1] ? p + 2 : p + 1;
    return true;
}

static bool tf__ct_meta(const char *t)
{
    return tf__starts(t, "Test command: ") ||
           tf__starts(t, "Working Directory: ") ||
           tf__starts(t, "Test timeout computed to be: ") ||
           tf__starts(t, "Environment variables: ");
}

static void tf__ct_line(tf_tr_console_t *c, void *vst, const tf__line_t *ln)
{
    tf__ct_t *st = vst;
    char name[TF_TR_MAX_NAME + 1], status[64];
    uint64_t num = 0;
    int64_t ms = -1;
    const char *text;

    if (tf__ct_result(ln->s, &num, name, sizeof name, status, sizeof status,
                      &ms)) {
        tf__ct_flush(c, st);
        tf_tr_status_t s = tf__ct_status(status);
        tf__ct_slot_t *slot = tf__ct_slot(st, num, false);
        if (s != TF_TR_FAIL) {
            tf_tr_res_t r = {
                .suite = "", .name = name, .status = s, .outcome = status,
                .duration_ms = ms,
            };
            tf__msg_reset(&st->msg);
            tf__msg_span(&st->msg, ln);
            r.log = st->msg.loc;
            tf__emit(c, TF_TR_ATTEMPT, &r);
        } else {
            /* Output may follow (--output-on-failure): hold it. */
            st->pending = true;
            snprintf(st->name, sizeof st->name, "%s", name);
            tf__copy_trim(st->outcome, sizeof st->outcome, status,
                          strlen(status));
            st->duration_ms = ms;
            if (slot)
                st->msg = slot->msg;
            else
                tf__msg_reset(&st->msg);
            tf__msg_span(&st->msg, ln);
        }
        if (slot)
            slot->used = false;
        return;
    }
    if (tf__ct_verbose(ln->s, &num, &text)) {
        tf__ct_slot_t *slot = tf__ct_slot(st, num, true);
        tf__msg_span(&slot->msg, ln);
        if (!tf__ct_meta(text))
            tf__msg_add(&slot->msg, text, strlen(text));
        return;
    }
    if (tf__ct_is_frame(ln->s)) {
        tf__ct_flush(c, st);
        return;
    }
    if (st->pending) {
        if (ln->len == 0) {
            /* A blank line is only part of the output if more follows. */
            return;
        }
        tf__msg_line(&st->msg, ln);
    }
}

static void tf__ct_finish(tf_tr_console_t *c, void *vst)
{
    tf__ct_flush(c, vst);
}

const tf__parser_t tf__ctest_parser = {
    .fmt = TF_TR_FMT_CTEST,
    .state_size = sizeof(tf__ct_t),
    .line = tf__ct_line,
    .finish = tf__ct_finish,
};
