/*
 * p_tap.c - the Test Anything Protocol, versions 12 to 14, from a step's
 * output or from .tap files.
 *
 *   TAP version 14
 *   1..4
 *   ok 1 - adds
 *   not ok 2 - packs integer
 *     ---
 *     duration_ms: 0.99
 *     location: 't.test.mjs:4:1'
 *     ...
 *   #   Failed test 'packs integer'      (Test::More's diagnostics)
 *   ok 3 - skipped # SKIP not here
 *   # Subtest: group
 *       ok 1 - inner
 *       1..1
 *   ok 4 - group
 *
 * A test point is named "N - description" ("N" alone without one): TAP
 * descriptions repeat freely, and the number keeps names apart the way
 * automake's TAP driver does. Subtests (indented by four spaces per level,
 * announced by "# Subtest: NAME") get the chain of subtest names as their
 * suite, '/'-separated. The YAML block and the "#" comment lines that
 * follow a point are its message (duration_ms from YAML is its duration).
 *
 * Directives: "# SKIP" skip; "not ok ... # TODO" skip ("TODO": a known
 * failure); "ok ... # TODO" pass ("TODO"). "Bail out!" is a failure named
 * "Bail out!" with its reason as the message, since everything after it
 * did not run.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define TF__TAP_DEPTH 8

typedef struct {
    char subtests[TF__TAP_DEPTH][128];
    bool pending;
    int plevel;
    char pname[TF_TR_MAX_NAME + 1];
    char psuite[TF_TR_MAX_NAME + 1];
    tf_tr_status_t pstatus;
    char poutcome[TF_TR_MAX_OUTCOME + 1];
    int64_t pms;
    bool in_yaml;
    tf__msg_t msg;
    uint64_t counter[TF__TAP_DEPTH];
} tf__tap_t;

static void tf__tap_flush(tf_tr_console_t *c, tf__tap_t *st)
{
    if (!st->pending)
        return;
    tf_tr_res_t r = {
        .suite = st->psuite, .name = st->pname, .status = st->pstatus,
        .outcome = st->poutcome[0] ? st->poutcome : NULL,
        .duration_ms = st->pms, .log = st->msg.loc,
        .message = st->pstatus == TF_TR_FAIL ? tf__msg_text(&st->msg) : NULL,
    };
    tf__emit(c, TF_TR_ATTEMPT, &r);
    st->pending = false;
    st->in_yaml = false;
}

static bool tf__ci_starts(const char *s, const char *p)
{
    for (; *p; s++, p++)
        if (tolower((unsigned char)*s) != *p)
            return false;
    return true;
}

/* "ok 3 - desc # SKIP why" at s. */
static bool tf__tap_point(tf_tr_console_t *c, tf__tap_t *st, int level,
                          const char *s, const tf__line_t *ln)
{
    bool ok;
    if (tf__starts(s, "ok") && (s[2] == ' ' || s[2] == '\0'))
        ok = true, s += 2;
    else if (tf__starts(s, "not ok") && (s[6] == ' ' || s[6] == '\0'))
        ok = false, s += 6;
    else
        return false;
    tf__tap_flush(c, st);
    s = tf__skip_ws(s);
    const char *d = s;
    while (*s >= '0' && *s <= '9')
        s++;
    uint64_t num = s > d ? (uint64_t)tf__parse_uint(d, (size_t)(s - d))
                         : st->counter[level] + 1;
    st->counter[level] = num;
    s = tf__skip_ws(s);
    if (*s == '-')
        s = tf__skip_ws(s + 1);
    /* The directive starts at an unescaped '#'. */
    const char *hash = NULL;
    for (const char *p = s; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            continue;
        }
        if (*p == '#') {
            hash = p;
            break;
        }
    }
    size_t dlen = hash ? (size_t)(hash - s) : strlen(s);
    char desc[TF_TR_MAX_NAME + 1];
    tf__copy_trim(desc, sizeof desc, s, dlen);
    st->pstatus = ok ? TF_TR_PASS : TF_TR_FAIL;
    st->poutcome[0] = '\0';
    if (hash) {
        const char *dir = tf__skip_ws(hash + 1);
        if (tf__ci_starts(dir, "skip")) {
            st->pstatus = TF_TR_SKIP;
            snprintf(st->poutcome, sizeof st->poutcome, "SKIP");
        } else if (tf__ci_starts(dir, "todo")) {
            st->pstatus = ok ? TF_TR_PASS : TF_TR_SKIP;
            snprintf(st->poutcome, sizeof st->poutcome, "TODO");
        }
    }
    snprintf(st->pname, sizeof st->pname, "%llu", (unsigned long long)num);
    if (desc[0]) {
        tf__cat(st->pname, sizeof st->pname, " - ", 3);
        tf__cat(st->pname, sizeof st->pname, desc, strlen(desc));
    }
    size_t o = 0;
    st->psuite[0] = '\0';
    for (int i = 0; i < level && i < TF__TAP_DEPTH; i++) {
        int n = snprintf(st->psuite + o, sizeof st->psuite - o, "%s%s",
                         o ? "/" : "",
                         st->subtests[i][0] ? st->subtests[i] : "?");
        if (n < 0 || (size_t)n >= sizeof st->psuite - o)
            break;
        o += (size_t)n;
    }
    st->pending = true;
    st->plevel = level;
    st->pms = -1;
    st->in_yaml = false;
    tf__msg_reset(&st->msg);
    tf__msg_span(&st->msg, ln);
    return true;
}

static void tf__tap_line(tf_tr_console_t *c, void *vst, const tf__line_t *ln)
{
    tf__tap_t *st = vst;
    size_t spaces = 0;
    while (ln->s[spaces] == ' ')
        spaces++;
    const char *s = ln->s + spaces;
    int level = (int)(spaces / 4);
    if (level >= TF__TAP_DEPTH)
        level = TF__TAP_DEPTH - 1;

    if (st->pending && st->in_yaml) {
        /* Inside the point's YAML block until "...". */
        tf__msg_span(&st->msg, ln);
        if (strcmp(s, "...") == 0) {
            st->in_yaml = false;
            return;
        }
        if (tf__starts(s, "duration_ms:")) {
            const char *v = tf__skip_ws(s + 12);
            st->pms = tf__seconds_to_ms(v, strlen(v));
            if (st->pms >= 0)
                st->pms = (st->pms + 500) / 1000;
        }
        tf__msg_add(&st->msg, s, strlen(s));
        return;
    }
    if (st->pending && strcmp(s, "---") == 0 &&
        spaces >= (size_t)st->plevel * 4 + 2) {
        st->in_yaml = true;
        tf__msg_span(&st->msg, ln);
        return;
    }
    if (tf__tap_point(c, st, level, s, ln))
        return;
    if (tf__starts(s, "# Subtest:")) {
        tf__tap_flush(c, st);
        tf__copy_trim(st->subtests[level], sizeof st->subtests[level],
                      s + 10, strlen(s + 10));
        if (level + 1 < TF__TAP_DEPTH)
            st->counter[level + 1] = 0;
        return;
    }
    if (s[0] == '#' && st->pending && level == st->plevel &&
        st->pstatus == TF_TR_FAIL) {
        const char *t = tf__skip_ws(s + 1);
        tf__msg_span(&st->msg, ln);
        tf__msg_add(&st->msg, t, strlen(t));
        return;
    }
    if (tf__starts(s, "Bail out!")) {
        tf__tap_flush(c, st);
        const char *why = tf__skip_ws(s + 9);
        tf_tr_res_t r = {
            .suite = "", .name = "Bail out!", .status = TF_TR_FAIL,
            .outcome = "Bail out!", .duration_ms = -1,
            .message = *why ? why : NULL,
            .log = {true, ln->offset, ln->lineno, 1},
        };
        tf__emit(c, TF_TR_ATTEMPT, &r);
        return;
    }
    if (s[0] != '#' || level < st->plevel)
        tf__tap_flush(c, st);
}

static void tf__tap_finish(tf_tr_console_t *c, void *vst)
{
    tf__tap_flush(c, vst);
}

const tf__parser_t tf__tap_parser = {
    .fmt = TF_TR_FMT_TAP,
    .state_size = sizeof(tf__tap_t),
    .line = tf__tap_line,
    .finish = tf__tap_finish,
};
