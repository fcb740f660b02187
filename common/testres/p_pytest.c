/*
 * p_pytest.c - pytest's console output, verbose or not.
 *
 * Three places name tests:
 *
 *  - verbose result lines (-v): "test_a.py::T::test_x PASSED   [ 50%]"
 *    (also pytest-xdist's "[gw0] [ 50%] PASSED test_a.py::test_x"); each
 *    is an attempt, and pytest-rerunfailures' RERUN is a failed one;
 *  - failure blocks in the FAILURES and ERRORS sections, titled with the
 *    test's short name ("____ T.test_x ____", "____ ERROR at setup of
 *    test_y ____"): the failure output whose lines the result points at;
 *    its message is the "E   " lines and the "file.py:N: Error" location
 *    line when there are such, else the block's text;
 *  - the short test summary (on by default for failures and errors):
 *    "FAILED test_a.py::test_x - AssertionError: ...". Each such line is a
 *    DETAIL: it names the test fully, so it ties the waiting block to it
 *    (and counts as the test's run when no verbose line did: pytest's
 *    default output names only what failed).
 *
 * Blocks wait for their summary line, at most TF__PY_BLOCKS of them; at
 * the end, blocks nobody claimed are matched against the failures the
 * verbose lines named.
 *
 * Statuses: PASSED pass; FAILED, ERROR, RERUN fail (ERROR and RERUN kept as
 * the outcome); SKIPPED skip; XFAIL skip ("XFAIL"); XPASS pass ("XPASS":
 * pytest does not fail the run for it; a strict xpass is reported FAILED).
 * A node id splits into suite and name at its last "::" outside
 * parameters: "test_a.py::T" and "test_x[1]".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define TF__PY_BLOCKS 256
#define TF__PY_FAILS 1024

typedef enum {
    TF__PY_OTHER,
    TF__PY_BLOCKS_SECTION, /* FAILURES or ERRORS */
    TF__PY_SUMMARY,        /* short test summary info */
} tf__py_section_t;

typedef struct {
    char *title;   /* short name, "ERROR at ... of" removed */
    char *message; /* may be NULL */
    tf_tr_loc_t loc;
    bool claimed;
} tf__py_block_t;

typedef struct {
    tf__py_section_t section;
    bool in_block;
    char title[TF_TR_MAX_NAME + 1];
    tf__msg_t full;  /* the whole block */
    tf__msg_t focus; /* E lines and the location line */
    tf__py_block_t blocks[TF__PY_BLOCKS];
    size_t nblocks;
    char *fails[TF__PY_FAILS]; /* node ids the verbose lines said failed */
    size_t nfails;
} tf__py_t;

static const struct {
    const char *word;
    tf_tr_status_t status;
    const char *outcome;
} tf__py_words[] = {
    {"PASSED", TF_TR_PASS, NULL},     {"FAILED", TF_TR_FAIL, NULL},
    {"ERROR", TF_TR_FAIL, "ERROR"},   {"SKIPPED", TF_TR_SKIP, NULL},
    {"XFAIL", TF_TR_SKIP, "XFAIL"},   {"XPASS", TF_TR_PASS, "XPASS"},
    {"RERUN", TF_TR_FAIL, "RERUN"},
};
#define TF__PY_NWORDS (sizeof tf__py_words / sizeof tf__py_words[0])

/* Splits a node id at its last "::" before any '['. */
static void tf__py_split(const char *id, char *suite, size_t scap,
                         const char **name)
{
    const char *br = strchr(id, '[');
    const char *last = NULL;
    for (const char *p = id; *p && (!br || p < br); p++)
        if (p[0] == ':' && p[1] == ':')
            last = p;
    if (!last) {
        suite[0] = '\0';
        *name = id;
        return;
    }
    tf__copy_trim(suite, scap, id, (size_t)(last - id));
    *name = last + 2;
}

/* The block title pytest gives a node id: the part after the file, with
 * "::" as '.'. */
static void tf__py_short(const char *id, char *out, size_t cap)
{
    const char *br = strchr(id, '[');
    const char *first = strstr(id, "::");
    size_t o = 0;
    if (!first || (br && first > br)) {
        snprintf(out, cap, "%s", id);
        return;
    }
    for (const char *p = first + 2; *p && o + 1 < cap; p++) {
        if ((!br || p < br) && p[0] == ':' && p[1] == ':') {
            out[o++] = '.';
            p++;
            continue;
        }
        out[o++] = *p;
    }
    out[o] = '\0';
}

static void tf__py_emit(tf_tr_console_t *c, tf_tr_kind_t kind,
                        const char *id, tf_tr_status_t status,
                        const char *outcome, const char *message,
                        tf_tr_loc_t loc)
{
    char suite[TF_TR_MAX_NAME + 1];
    const char *name;
    tf__py_split(id, suite, sizeof suite, &name);
    if (!*name)
        return;
    tf_tr_res_t r = {
        .suite = suite, .name = name, .status = status, .outcome = outcome,
        .duration_ms = -1, .message = message, .log = loc,
    };
    tf__emit(c, kind, &r);
}

/* "==== TITLE ====" section rules (at least 3 '=' on both sides). */
static bool tf__py_rule(const char *s, char ch, char *title, size_t cap)
{
    size_t n = strlen(s), a = 0, b = 0;
    while (a < n && s[a] == ch)
        a++;
    while (b < n - a && s[n - 1 - b] == ch)
        b++;
    if (a < 3 || b < 3 || a + b >= n || s[a] != ' ' || s[n - 1 - b] != ' ')
        return false;
    tf__copy_trim(title, cap, s + a, n - a - b);
    return true;
}

static void tf__py_block_end(tf__py_t *st)
{
    if (!st->in_block)
        return;
    st->in_block = false;
    if (st->nblocks >= TF__PY_BLOCKS)
        return;
    const char *msg = !tf__msg_empty(&st->focus) ? tf__msg_text(&st->focus)
                                                 : tf__msg_text(&st->full);
    tf__py_block_t *b = &st->blocks[st->nblocks];
    b->title = strdup(st->title);
    b->message = msg ? strdup(msg) : NULL;
    b->loc = st->full.loc;
    b->claimed = false;
    if (b->title)
        st->nblocks++;
    else
        free(b->message);
}

static tf__py_block_t *tf__py_find_block(tf__py_t *st, const char *id)
{
    char short_name[TF_TR_MAX_NAME + 1];
    tf__py_short(id, short_name, sizeof short_name);
    for (size_t i = 0; i < st->nblocks; i++)
        if (!st->blocks[i].claimed &&
            strcmp(st->blocks[i].title, short_name) == 0)
            return &st->blocks[i];
    return NULL;
}

/* Verbose: "ID WORD[ (reason)][   [ NN%]]" or xdist's "[gwN] [ NN%] WORD
 * ID". */
static bool tf__py_verbose(tf_tr_console_t *c, tf__py_t *st,
                           const tf__line_t *ln)
{
    char buf[TF_TR_LINE_MAX + 1];
    size_t n = ln->len;
    memcpy(buf, ln->s, n + 1);
    /* Drop the progress "[ 50%]" at the end. */
    while (n > 0 && buf[n - 1] == ' ')
        n--;
    if (n > 3 && buf[n - 1] == ']' && buf[n - 2] == '%') {
        char *open = strrchr(buf, '[');
        if (open) {
            n = (size_t)(open - buf);
            while (n > 0 && buf[n - 1] == ' ')
                n--;
        }
    }
    buf[n] = '\0';
    char *s = buf;
    bool xdist = false;
    if (tf__starts(s, "[gw")) {
        /* "[gw0] [ 50%] PASSED id": the word comes first. */
        char *close = strchr(s, ']');
        if (!close)
            return false;
        s = (char *)tf__skip_ws(close + 1);
        if (*s == '[') {
            close = strchr(s, ']');
            if (!close)
                return false;
            s = (char *)tf__skip_ws(close + 1);
        }
        xdist = true;
    }
    for (size_t w = 0; w < TF__PY_NWORDS; w++) {
        const char *word = tf__py_words[w].word;
        size_t wl = strlen(word);
        char *id = NULL;
        if (xdist) {
            if (strncmp(s, word, wl) == 0 && s[wl] == ' ')
                id = s + wl + 1;
        } else {
            /* The leftmost " WORD" after a node id, followed by the end
             * or " (reason)" / " - reason". */
            for (char *p = strstr(s, "::"); p && (p = strchr(p, ' '));
                 p++) {
                if (strncmp(p + 1, word, wl) == 0 &&
                    (p[1 + wl] == '\0' || p[1 + wl] == ' ')) {
                    *p = '\0';
                    id = s;
                    break;
                }
            }
        }
        if (!id || !strstr(id, "::"))
            continue;
        tf_tr_loc_t loc = {true, ln->offset, ln->lineno, 1};
        if (tf__py_words[w].status == TF_TR_FAIL && st->nfails < TF__PY_FAILS)
            st->fails[st->nfails++] = strdup(id);
        tf__py_emit(c, TF_TR_ATTEMPT, id, tf__py_words[w].status,
                    tf__py_words[w].outcome, NULL, loc);
        return true;
    }
    return false;
}

/* Short summary: "WORD ID[ - message]". */
static void tf__py_summary(tf_tr_console_t *c, tf__py_t *st,
                           const tf__line_t *ln)
{
    for (size_t w = 0; w < TF__PY_NWORDS; w++) {
        const char *word = tf__py_words[w].word;
        size_t wl = strlen(word);
        if (strncmp(ln->s, word, wl) != 0 || ln->s[wl] != ' ')
            continue;
        char id[TF_TR_MAX_NAME + 1];
        const char *rest = ln->s + wl + 1;
        const char *dash = strstr(rest, " - ");
        size_t idlen = dash ? (size_t)(dash - rest) : strlen(rest);
        /* "SKIPPED [1] file.py:12: reason" names no test. */
        if (rest[0] == '[')
            return;
        tf__copy_trim(id, sizeof id, rest, idlen);
        char *sp = strchr(id, ' ');
        if (sp && !dash)
            *sp = '\0'; /* "XPASS id reason" */
        if (!strstr(id, "::") && !strstr(id, ".py"))
            return;
        tf__py_block_t *b = tf__py_find_block(st, id);
        tf_tr_loc_t loc = {true, ln->offset, ln->lineno, 1};
        const char *msg = dash ? dash + 3 : NULL;
        if (b) {
            b->claimed = true;
            loc = b->loc;
            if (b->message)
                msg = b->message;
        }
        tf__py_emit(c, TF_TR_DETAIL, id, tf__py_words[w].status,
                    tf__py_words[w].outcome, msg, loc);
        return;
    }
}

static void tf__py_block_line(tf__py_t *st, const tf__line_t *ln)
{
    tf__msg_line(&st->full, ln);
    const char *s = ln->s;
    if (s[0] == 'E' && (s[1] == ' ' || s[1] == '\0')) {
        const char *t = tf__skip_ws(s + 1);
        tf__msg_add(&st->focus, t, strlen(t));
        return;
    }
    /* "test_a.py:9: AssertionError" ends the traceback. */
    if (!tf__msg_empty(&st->focus) && tf__looks_like_location(s) &&
        s[0] != ' ') {
        tf__msg_add(&st->focus, s, ln->len);
        tf__msg_key(&st->focus, s, ln->len, true);
    }
}

static void tf__py_line(tf_tr_console_t *c, void *vst, const tf__line_t *ln)
{
    tf__py_t *st = vst;
    char title[TF_TR_MAX_NAME + 1];

    if (tf__py_rule(ln->s, '=', title, sizeof title)) {
        tf__py_block_end(st);
        if (strcmp(title, "FAILURES") == 0 || strcmp(title, "ERRORS") == 0)
            st->section = TF__PY_BLOCKS_SECTION;
        else if (strcmp(title, "short test summary info") == 0)
            st->section = TF__PY_SUMMARY;
        else
            st->section = TF__PY_OTHER;
        return;
    }
    if (st->section == TF__PY_BLOCKS_SECTION &&
        tf__py_rule(ln->s, '_', title, sizeof title)) {
        tf__py_block_end(st);
        const char *t = title;
        if (tf__starts(t, "ERROR at setup of "))
            t += 18;
        else if (tf__starts(t, "ERROR at teardown of "))
            t += 21;
        snprintf(st->title, sizeof st->title, "%s", t);
        tf__msg_reset(&st->full);
        tf__msg_reset(&st->focus);
        tf__msg_span(&st->full, ln);
        st->in_block = true;
        return;
    }
    if (st->section == TF__PY_SUMMARY) {
        tf__py_summary(c, st, ln);
        return;
    }
    if (st->in_block) {
        tf__py_block_line(st, ln);
        return;
    }
    tf__py_verbose(c, st, ln);
}

static void tf__py_finish(tf_tr_console_t *c, void *vst)
{
    tf__py_t *st = vst;
    tf__py_block_end(st);
    /* Blocks no summary line claimed (pytest -rN): tie them to the
     * failures the verbose lines named. */
    for (size_t i = 0; i < st->nblocks; i++) {
        tf__py_block_t *b = &st->blocks[i];
        if (b->claimed)
            continue;
        for (size_t k = 0; k < st->nfails; k++) {
            char short_name[TF_TR_MAX_NAME + 1];
            if (!st->fails[k])
                continue;
            tf__py_short(st->fails[k], short_name, sizeof short_name);
            if (strcmp(short_name, b->title) == 0) {
                tf__py_emit(c, TF_TR_DETAIL, st->fails[k], TF_TR_FAIL, NULL,
                            b->message, b->loc);
                b->claimed = true;
                break;
            }
        }
    }
}

static void tf__py_fini(void *vst)
{
    tf__py_t *st = vst;
    for (size_t i = 0; i < st->nblocks; i++) {
        free(st->blocks[i].title);
        free(st->blocks[i].message);
    }
    for (size_t i = 0; i < st->nfails; i++)
        free(st->fails[i]);
}

const tf__parser_t tf__pytest_parser = {
    .fmt = TF_TR_FMT_PYTEST,
    .state_size = sizeof(tf__py_t),
    .line = tf__py_line,
    .finish = tf__py_finish,
    .fini = tf__py_fini,
};
