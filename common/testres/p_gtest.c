/*
 * p_gtest.c - GoogleTest's console output.
 *
 *   [ RUN      ] Pack.Integer
 *   t.cc:4: Failure
 *   Expected equality of these values: ...
 *   [  FAILED  ] Pack.Integer (0 ms)
 *   [       OK ] Pack.Ok (0 ms)
 *   [  SKIPPED ] Pack.Skipped (0 ms)
 *   [  FAILED  ] Nums/Param.Even/1, where GetParam() = 3 (0 ms)
 *
 * A verdict counts only for the test whose [ RUN ] is open, so the
 * summary ("[  FAILED  ] Pack.Integer" listed again at the end) is not a
 * second attempt. The lines between RUN and the verdict are the failure
 * message. A RUN that never gets a verdict (the binary crashed or was
 * killed) is a failure with outcome "crashed". --gtest_repeat runs are
 * attempts of the same tests, so a test failing in one iteration and
 * passing in another is flaky. Lines prefixed "N: " (ctest -V running a
 * GoogleTest binary) are read without the prefix.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

typedef struct {
    bool open;
    char id[TF_TR_MAX_NAME + 1]; /* Suite.Name */
    tf__msg_t msg;
} tf__gt_t;

static void tf__gt_split(const char *id, char *suite, size_t scap,
                         const char **name)
{
    const char *dot = strchr(id, '.');
    if (!dot) {
        suite[0] = '\0';
        *name = id;
        return;
    }
    tf__copy_trim(suite, scap, id, (size_t)(dot - id));
    *name = dot + 1;
}

static void tf__gt_emit(tf_tr_console_t *c, tf__gt_t *st,
                        tf_tr_status_t status, const char *outcome,
                        int64_t ms)
{
    char suite[TF_TR_MAX_NAME + 1];
    const char *name;
    tf__gt_split(st->id, suite, sizeof suite, &name);
    if (!*name)
        name = st->id;
    tf_tr_res_t r = {
        .suite = suite, .name = name, .status = status, .outcome = outcome,
        .duration_ms = ms, .log = st->msg.loc,
        .message = status == TF_TR_PASS ? NULL : tf__msg_text(&st->msg),
    };
    tf__emit(c, TF_TR_ATTEMPT, &r);
    st->open = false;
}

/* "[ TAG ] rest": the tag (inside the brackets, trimmed) and the rest. */
static bool tf__gt_tag(const char *s, char *tag, size_t cap, const char **rest)
{
    if (s[0] != '[')
        return false;
    const char *close = strchr(s, ']');
    if (!close || close - s > 14 || close[1] != ' ')
        return false;
    tf__copy_trim(tag, cap, s + 1, (size_t)(close - s - 1));
    *rest = close + 2;
    return true;
}

/* The test id at the start of rest matches the open one, and what
 * follows it is the end, ", where ..." or " (N ms)". */
static bool tf__gt_same(const tf__gt_t *st, const char *rest, int64_t *ms)
{
    size_t n = strlen(st->id);
    if (strncmp(rest, st->id, n) != 0)
        return false;
    const char *p = rest + n;
    if (*p && *p != ',' && *p != ' ')
        return false;
    *ms = -1;
    const char *par = strrchr(p, '(');
    if (par) {
        const char *d = par + 1, *e = d;
        while (*e >= '0' && *e <= '9')
            e++;
        if (e > d && strcmp(e, " ms)") == 0)
            *ms = tf__parse_uint(d, (size_t)(e - d));
    }
    return true;
}

static void tf__gt_line(tf_tr_console_t *c, void *vst, const tf__line_t *in)
{
    tf__gt_t *st = vst;
    tf__line_t ln = *in;
    char tag[16];
    const char *rest;
    int64_t ms;

    /* ctest -V prefixes a test's lines with "N: ". */
    const char *p = ln.s;
    while (*p >= '0' && *p <= '9')
        p++;
    if (p > ln.s && p[0] == ':' && p[1] == ' ' && p[2] == '[') {
        ln.len -= (size_t)(p + 2 - ln.s);
        ln.s = p + 2;
    }
    if (tf__gt_tag(ln.s, tag, sizeof tag, &rest)) {
        if (strcmp(tag, "RUN") == 0) {
            if (st->open)
                tf__gt_emit(c, st, TF_TR_FAIL, "crashed", -1);
            st->open = true;
            tf__copy_trim(st->id, sizeof st->id, rest, strlen(rest));
            tf__msg_reset(&st->msg);
            return;
        }
        if (st->open && tf__gt_same(st, rest, &ms)) {
            if (strcmp(tag, "OK") == 0) {
                tf__msg_reset(&st->msg);
                tf__msg_span(&st->msg, &ln);
                tf__gt_emit(c, st, TF_TR_PASS, NULL, ms);
                return;
            }
            if (strcmp(tag, "FAILED") == 0) {
                tf__msg_span(&st->msg, &ln);
                tf__gt_emit(c, st, TF_TR_FAIL, "FAILED", ms);
                return;
            }
            if (strcmp(tag, "SKIPPED") == 0) {
                tf__msg_span(&st->msg, &ln);
                tf__gt_emit(c, st, TF_TR_SKIP, "SKIPPED", ms);
                return;
            }
        }
        /* Other framing ("[----------]", "[==========]", the summary) is
         * not a test's output. */
        if (tag[0] == '-' || tag[0] == '=' || strcmp(tag, "PASSED") == 0 ||
            strcmp(tag, "FAILED") == 0 || strcmp(tag, "SKIPPED") == 0)
            return;
    }
    if (st->open)
        tf__msg_line(&st->msg, &ln);
}

static void tf__gt_finish(tf_tr_console_t *c, void *vst)
{
    tf__gt_t *st = vst;
    if (st->open)
        tf__gt_emit(c, st, TF_TR_FAIL, "crashed", -1);
}

const tf__parser_t tf__gtest_parser = {
    .fmt = TF_TR_FMT_GTEST,
    .state_size = sizeof(tf__gt_t),
    .line = tf__gt_line,
    .finish = tf__gt_finish,
};
