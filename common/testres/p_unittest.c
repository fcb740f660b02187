/*
 * p_unittest.c - Python unittest's console output (python -m unittest,
 * unittest.main(), or any TextTestRunner), verbose or not.
 *
 * Verbose lines (-v) name every test:
 *
 *   test_add (test_m.TestCalc.test_add) ... ok          (Python >= 3.11)
 *   test_add (test_m.TestCalc) ... ok                   (older)
 *   test_doc (test_m.TestCalc.test_doc)                 (a docstring, then
 *   Checks the docstring form. ... ok                    the verdict)
 *     test_sub (test_m.TestCalc.test_sub) (i=2) ... FAIL (a subtest)
 *
 * and a verdict may land on a later line when the test printed to the
 * same stream. Then each failure gets a block:
 *
 *   ======================================================================
 *   FAIL: test_pack (test_m.TestCalc.test_pack)
 *   ----------------------------------------------------------------------
 *   Traceback (most recent call last): ...
 *   AssertionError: 3 != 2 : json_pack integer failed
 *
 * Blocks are DETAILs (the traceback is the message, its last exception
 * line the key, the block the log lines); without -v they are the only
 * place tests are named, so only failures are known then.
 *
 * Verdicts: ok pass; FAIL fail; ERROR fail ("ERROR"); skipped '...' skip;
 * expected failure skip ("expected failure"); unexpected success fail
 * ("unexpected success": unittest fails the run for it).
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define TF__UT_RULE 70

typedef struct {
    bool pending;                  /* a test line without its verdict yet */
    char pname[TF_TR_MAX_NAME + 1];
    char psuite[TF_TR_MAX_NAME + 1];
    tf_tr_loc_t ploc;
    int block;                     /* 0 none, 1 header seen, 2 in body */
    char bname[TF_TR_MAX_NAME + 1];
    char bsuite[TF_TR_MAX_NAME + 1];
    tf_tr_status_t bstatus;
    char boutcome[TF_TR_MAX_OUTCOME + 1];
    tf__msg_t msg;
} tf__ut_t;

static bool tf__ut_is_rule(const char *s, char ch)
{
    size_t n = strlen(s);
    if (n < TF__UT_RULE)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] != ch)
            return false;
    return true;
}

/* "name (module.Class.name)[ (params)]" at s (len n): fills name (with
 * the subtest parameters appended) and suite. */
static bool tf__ut_test_id(const char *s, size_t n, char *name, size_t ncap,
                           char *suite, size_t scap)
{
    const char *sp = memchr(s, ' ', n);
    if (!sp || sp == s || sp + 2 > s + n || sp[1] != '(')
        return false;
    const char *close = memchr(sp + 2, ')', (size_t)(s + n - sp - 2));
    if (!close || close == sp + 2)
        return false;
    size_t namelen = (size_t)(sp - s);
    const char *cls = sp + 2;
    size_t clslen = (size_t)(close - cls);
    if (memchr(cls, ' ', clslen))
        return false;
    /* 3.11+: "module.Class.name": drop the repeated ".name". */
    if (clslen > namelen + 1 && cls[clslen - namelen - 1] == '.' &&
        memcmp(cls + clslen - namelen, s, namelen) == 0)
        clslen -= namelen + 1;
    tf__copy_trim(suite, scap, cls, clslen);
    const char *params = close + 1;
    size_t plen = (size_t)(s + n - params);
    if (plen > 2 && params[0] == ' ' && params[1] == '(' &&
        params[plen - 1] == ')')
        snprintf(name, ncap, "%.*s %.*s", (int)namelen, s, (int)(plen - 1),
                 params + 1);
    else if (plen == 0)
        snprintf(name, ncap, "%.*s", (int)namelen, s);
    else
        return false;
    return true;
}

static bool tf__ut_verdict(const char *w, tf_tr_status_t *status,
                           const char **outcome)
{
    *outcome = NULL;
    if (strcmp(w, "ok") == 0)
        *status = TF_TR_PASS;
    else if (strcmp(w, "FAIL") == 0)
        *status = TF_TR_FAIL;
    else if (strcmp(w, "ERROR") == 0) {
        *status = TF_TR_FAIL;
        *outcome = "ERROR";
    } else if (tf__starts(w, "skipped")) {
        *status = TF_TR_SKIP;
        *outcome = "skipped";
    } else if (strcmp(w, "expected failure") == 0) {
        *status = TF_TR_SKIP;
        *outcome = "expected failure";
    } else if (strcmp(w, "unexpected success") == 0) {
        *status = TF_TR_FAIL;
        *outcome = "unexpected success";
    } else
        return false;
    return true;
}

static void tf__ut_emit_pending(tf_tr_console_t *c, tf__ut_t *st,
                                const char *verdict, const tf__line_t *ln)
{
    tf_tr_status_t status;
    const char *outcome;
    if (!tf__ut_verdict(verdict, &status, &outcome))
        return;
    tf_tr_res_t r = {
        .suite = st->psuite, .name = st->pname, .status = status,
        .outcome = outcome, .duration_ms = -1, .log = st->ploc,
    };
    if (ln->lineno >= r.log.line)
        r.log.lines = ln->lineno - r.log.line + 1;
    tf__emit(c, TF_TR_ATTEMPT, &r);
    st->pending = false;
}

static void tf__ut_block_end(tf_tr_console_t *c, tf__ut_t *st)
{
    if (st->block != 2) {
        st->block = 0;
        return;
    }
    st->block = 0;
    tf_tr_res_t r = {
        .suite = st->bsuite, .name = st->bname, .status = st->bstatus,
        .outcome = st->boutcome[0] ? st->boutcome : NULL, .duration_ms = -1,
        .message = tf__msg_text(&st->msg), .log = st->msg.loc,
    };
    tf__emit(c, TF_TR_DETAIL, &r);
}

/* "FAIL: id", "ERROR: id", "UNEXPECTED SUCCESS: id". */
static bool tf__ut_block_header(tf__ut_t *st, const tf__line_t *ln)
{
    static const struct {
        const char *p;
        tf_tr_status_t s;
        const char *o;
    } heads[] = {
        {"FAIL: ", TF_TR_FAIL, ""},
        {"ERROR: ", TF_TR_FAIL, "ERROR"},
        {"UNEXPECTED SUCCESS: ", TF_TR_FAIL, "unexpected success"},
    };
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        size_t pl = strlen(heads[i].p);
        if (strncmp(ln->s, heads[i].p, pl) != 0)
            continue;
        if (!tf__ut_test_id(ln->s + pl, ln->len - pl, st->bname,
                            sizeof st->bname, st->bsuite, sizeof st->bsuite))
            return false;
        st->bstatus = heads[i].s;
        snprintf(st->boutcome, sizeof st->boutcome, "%s", heads[i].o);
        tf__msg_reset(&st->msg);
        tf__msg_span(&st->msg, ln);
        st->block = 1;
        return true;
    }
    return false;
}

/* "SomeError: text" or "module.SomeError" at column 0: the exception line
 * that ends a traceback. */
static bool tf__ut_exception_line(const char *s)
{
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return false;
    const char *p = s;
    while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
           (*p >= '0' && *p <= '9') || *p == '_' || *p == '.')
        p++;
    return (*p == ':' || *p == '\0') && p > s + 2 &&
           !tf__starts(s, "Traceback");
}

static void tf__ut_line(tf_tr_console_t *c, void *vst, const tf__line_t *ln)
{
    tf__ut_t *st = vst;
    char name[TF_TR_MAX_NAME + 1], suite[TF_TR_MAX_NAME + 1];

    if (tf__ut_is_rule(ln->s, '=')) {
        tf__ut_block_end(c, st);
        st->pending = false;
        return;
    }
    if (st->block == 1) {
        st->block = tf__ut_is_rule(ln->s, '-') ? 2 : 0;
        return;
    }
    if (st->block == 2) {
        if (tf__ut_is_rule(ln->s, '-') ||
            (tf__starts(ln->s, "Ran ") && strstr(ln->s, " test"))) {
            /* The rule before "Ran N tests", or "Ran" itself after an
             * UNEXPECTED SUCCESS header, which has no traceback. */
            tf__ut_block_end(c, st);
            return;
        }
        tf__msg_line(&st->msg, ln);
        if (tf__ut_exception_line(ln->s))
            tf__msg_key(&st->msg, ln->s, ln->len, true);
        return;
    }
    if (st->block == 0 && tf__ut_block_header(st, ln))
        return;

    const char *s = tf__skip_ws(ln->s);
    size_t n = ln->len - (size_t)(s - ln->s);
    const char *dots = strstr(s, " ... ");
    if (!dots && n >= 4 && strcmp(s + n - 4, " ...") == 0)
        dots = s + n - 4;
    if (dots) {
        const char *verdict = dots[4] ? dots + 5 : "";
        if (tf__ut_test_id(s, (size_t)(dots - s), name, sizeof name, suite,
                           sizeof suite)) {
            snprintf(st->pname, sizeof st->pname, "%s", name);
            snprintf(st->psuite, sizeof st->psuite, "%s", suite);
            st->ploc = (tf_tr_loc_t){true, ln->offset, ln->lineno, 1};
        } else if (!st->pending || st->ploc.line + 1 != ln->lineno) {
            /* Not a test line, and not the docstring line right after
             * one. */
            goto verdict_only;
        }
        st->pending = true;
        if (*verdict)
            tf__ut_emit_pending(c, st, verdict, ln);
        return;
    }
    if (tf__ut_test_id(s, n, name, sizeof name, suite, sizeof suite)) {
        /* A test line whose docstring comes on the next line. */
        snprintf(st->pname, sizeof st->pname, "%s", name);
        snprintf(st->psuite, sizeof st->psuite, "%s", suite);
        st->pending = true;
        st->ploc = (tf_tr_loc_t){true, ln->offset, ln->lineno, 1};
        return;
    }
verdict_only:
    /* The verdict alone, after output the test printed. */
    if (st->pending)
        tf__ut_emit_pending(c, st, s, ln);
}

static void tf__ut_finish(tf_tr_console_t *c, void *vst)
{
    tf__ut_block_end(c, vst);
}

const tf__parser_t tf__unittest_parser = {
    .fmt = TF_TR_FMT_UNITTEST,
    .state_size = sizeof(tf__ut_t),
    .line = tf__ut_line,
    .finish = tf__ut_finish,
};
