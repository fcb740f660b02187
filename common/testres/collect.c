/*
 * collect.c - the per-step collector of test results.
 *
 * Parsers report attempts and details; the collector keys them by (suite,
 * name) in a hash table of indexes into an array kept in first-seen order,
 * so the merged results come out in the order the runner ran the tests.
 * Merging is what turns reruns into data: a test with a failed and a
 * passed attempt is FLAKY, one that only failed is FAIL with its attempt
 * count, and the first failure's message and log lines are the ones kept
 * (a DETAIL, the failure block a runner prints after the fact, wins for
 * the log position since it is the fuller one).
 *
 * Everything stored is cleaned on the way in: valid UTF-8 (invalid bytes
 * become U+FFFD), no control characters (tab and newline stay in
 * messages), cut to its cap without splitting a character, so an encoder
 * can put it in JSON as it is. Memory is capped by TF_TR_MAX_TESTS and
 * TF_TR_MAX_HELD; what does not fit is counted, never grown into.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testres.h"
#include "tf_err.h"
#include "utf8.h"

typedef struct tf_tr_collect {
    tf_tr_entry_t *v;
    size_t n, cap;
    uint32_t *slots; /* index + 1 into v, 0 = free */
    size_t nslots;   /* power of two */
    size_t held;     /* bytes of entries and their strings */
    uint64_t dropped;
    char *problems[TF_TR_MAX_PROBLEMS];
    size_t nproblems;
    uint64_t problems_dropped;
} tf_tr_collect_t;

/* ---- cleaning text ---------------------------------------------------- */

/* A malloc'd clean copy of s, at most cap bytes (see the file comment);
 * newlines kept when multiline, else turned into spaces like tabs. Trailing
 * newlines are dropped. NULL when out of memory. A replaced byte grows to
 * the three bytes of U+FFFD, so the buffer is sized for that. */
static char *tf__clean(const char *s, size_t cap, bool multiline)
{
    static const char repl[] = "\xef\xbf\xbd";
    size_t n = strlen(s);
    size_t room = n < cap / 3 ? 3 * n : cap;
    char *out = malloc(room + 1);
    size_t o = 0;
    if (!out)
        return NULL;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t len = tf_utf8_len(p + i, n - i);
        const char *src = (const char *)p + i;
        char one;
        size_t take = len;
        if (len == 0) {
            /* Not UTF-8: one byte becomes U+FFFD. */
            src = repl;
            take = 3;
            len = 1;
        } else if (len == 1 && (p[i] < 0x20 || p[i] == 0x7f)) {
            bool keep_nl = p[i] == '\n' && multiline;
            bool space = p[i] == '\t' || p[i] == '\n' || p[i] == '\r';
            if (keep_nl || space) {
                one = keep_nl ? '\n'
                              : (multiline && p[i] == '\t') ? '\t' : ' ';
                src = &one;
                take = 1;
            } else {
                src = repl;
                take = 3;
            }
        }
        if (o + take > room)
            break;
        memcpy(out + o, src, take);
        o += take;
        i += len;
    }
    while (o > 0 && (out[o - 1] == '\n' || out[o - 1] == ' ' ||
                     out[o - 1] == '\t'))
        o--;
    out[o] = '\0';
    return out;
}

/* ---- the table ---------------------------------------------------------- */

static uint64_t tf__hash(const char *suite, const char *name)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)suite; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL; /* a separator no text contains */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

static size_t tf__find_slot(const tf_tr_collect_t *c, const char *suite,
                            const char *name, bool *found)
{
    size_t mask = c->nslots - 1;
    size_t i = (size_t)tf__hash(suite, name) & mask;
    for (;;) {
        uint32_t s = c->slots[i];
        if (s == 0) {
            *found = false;
            return i;
        }
        const tf_tr_entry_t *e = &c->v[s - 1];
        if (strcmp(e->name, name) == 0 && strcmp(e->suite, suite) == 0) {
            *found = true;
            return i;
        }
        i = (i + 1) & mask;
    }
}

static int tf__grow(tf_tr_collect_t *c)
{
    if (c->n < c->cap && c->n * 2 < c->nslots)
        return 0;
    if (c->n >= c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        tf_tr_entry_t *v = realloc(c->v, cap * sizeof *v);
        if (!v)
            return TF_ENOMEM;
        c->v = v;
        c->cap = cap;
    }
    if (c->n * 2 >= c->nslots) {
        size_t ns = c->nslots ? c->nslots * 2 : 128;
        uint32_t *slots = calloc(ns, sizeof *slots);
        if (!slots)
            return TF_ENOMEM;
        free(c->slots);
        c->slots = slots;
        c->nslots = ns;
        for (size_t k = 0; k < c->n; k++) {
            bool found;
            size_t i = tf__find_slot(c, c->v[k].suite, c->v[k].name, &found);
            c->slots[i] = (uint32_t)(k + 1);
        }
    }
    return 0;
}

int tf_tr_collect_new(tf_tr_collect_t **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : TF_ENOMEM;
}

static void tf__entry_free(tf_tr_entry_t *e)
{
    free(e->suite);
    free(e->name);
    free(e->outcome);
    free(e->message);
}

void tf_tr_collect_free(tf_tr_collect_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        tf__entry_free(&c->v[i]);
    free(c->v);
    free(c->slots);
    for (size_t i = 0; i < c->nproblems; i++)
        free(c->problems[i]);
    free(c);
}

/* ---- merging ------------------------------------------------------------- */

static void tf__status_of(tf_tr_entry_t *e)
{
    if (e->failures && e->passes)
        e->status = TF_TR_FLAKY;
    else if (e->failures)
        e->status = TF_TR_FAIL;
    else if (e->passes)
        e->status = TF_TR_PASS;
    else
        e->status = TF_TR_SKIP;
}

static void tf__count(tf_tr_entry_t *e, tf_tr_status_t s)
{
    e->attempts++;
    if (s == TF_TR_FAIL)
        e->failures++;
    else if (s == TF_TR_PASS)
        e->passes++;
    else if (s == TF_TR_FLAKY) {
        e->failures++;
        e->passes++;
    } else
        e->skips++;
}

/* Replaces *dst by a clean copy of src (NULL src leaves it). Accounts the
 * bytes; refuses (keeping *dst) when the cap would pass. */
static void tf__set_str(tf_tr_collect_t *c, char **dst, const char *src,
                        size_t cap, bool multiline)
{
    if (!src || !*src)
        return;
    size_t old = *dst ? strlen(*dst) : 0;
    if (c->held + strlen(src) > TF_TR_MAX_HELD)
        return;
    char *s = tf__clean(src, cap, multiline);
    if (!s)
        return;
    if (!*s) {
        free(s);
        return;
    }
    free(*dst);
    *dst = s;
    c->held = c->held - old + strlen(s);
}

static void tf__apply(tf_tr_collect_t *c, tf_tr_entry_t *e, tf_tr_kind_t kind,
                      const tf_tr_res_t *r, bool fresh)
{
    bool failed = r->status == TF_TR_FAIL || r->status == TF_TR_FLAKY;
    if (kind == TF_TR_ATTEMPT || fresh) {
        tf__count(e, r->status);
        tf__status_of(e);
        if (r->duration_ms >= 0)
            e->duration_ms = r->duration_ms;
        if (r->outcome && (failed || !e->failures || fresh))
            tf__set_str(c, &e->outcome, r->outcome, TF_TR_MAX_OUTCOME, false);
        /* The first failure's message and lines are the ones to show. */
        if (failed && !e->message)
            tf__set_str(c, &e->message, r->message, TF_TR_MAX_MESSAGE, true);
        if (r->log.has && (!e->log.has || (failed && e->failures == 1)))
            e->log = r->log;
        return;
    }
    /* A detail: what the runner printed about the test after its run. */
    if (!e->message)
        tf__set_str(c, &e->message, r->message, TF_TR_MAX_MESSAGE, true);
    if (r->log.has && (e->failures || !e->log.has))
        e->log = r->log;
    if (e->duration_ms < 0 && r->duration_ms >= 0)
        e->duration_ms = r->duration_ms;
    if (r->outcome && !e->outcome)
        tf__set_str(c, &e->outcome, r->outcome, TF_TR_MAX_OUTCOME, false);
}

void tf_tr_collect_add(void *arg, tf_tr_kind_t kind, const tf_tr_res_t *r)
{
    tf_tr_collect_t *c = arg;
    char *suite = NULL, *name = NULL;
    bool found;
    if (!c || !r || !r->name || r->status < TF_TR_PASS ||
        r->status > TF_TR_FLAKY)
        return;
    suite = tf__clean(r->suite ? r->suite : "", TF_TR_MAX_NAME, false);
    name = tf__clean(r->name, TF_TR_MAX_NAME, false);
    if (!suite || !name || !*name)
        goto drop;
    if (c->nslots) {
        size_t i = tf__find_slot(c, suite, name, &found);
        if (found) {
            tf__apply(c, &c->v[c->slots[i] - 1], kind, r, false);
            free(suite);
            free(name);
            return;
        }
    }
    size_t need = sizeof(tf_tr_entry_t) + strlen(suite) + strlen(name) + 2;
    if (c->n >= TF_TR_MAX_TESTS || c->held + need > TF_TR_MAX_HELD ||
        tf__grow(c))
        goto drop;
    size_t slot = tf__find_slot(c, suite, name, &found);
    tf_tr_entry_t *e = &c->v[c->n];
    memset(e, 0, sizeof *e);
    e->suite = suite;
    e->name = name;
    e->duration_ms = -1;
    c->slots[slot] = (uint32_t)(c->n + 1);
    c->n++;
    c->held += need;
    tf__apply(c, e, kind, r, true);
    return;
drop:
    free(suite);
    free(name);
    c->dropped++;
}

void tf_tr_collect_problem(tf_tr_collect_t *c, const char *fmt, ...)
{
    char raw[TF_TR_MAX_PROBLEM * 2];
    va_list ap;
    if (!c)
        return;
    if (c->nproblems >= TF_TR_MAX_PROBLEMS) {
        c->problems_dropped++;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    char *p = tf__clean(raw, TF_TR_MAX_PROBLEM, false);
    if (p && *p)
        c->problems[c->nproblems++] = p;
    else
        free(p);
}

size_t tf_tr_collect_count(const tf_tr_collect_t *c)
{
    return c ? c->n : 0;
}

const tf_tr_entry_t *tf_tr_collect_get(const tf_tr_collect_t *c, size_t i)
{
    return c && i < c->n ? &c->v[i] : NULL;
}

uint64_t tf_tr_collect_dropped(const tf_tr_collect_t *c)
{
    return c ? c->dropped : 0;
}

char *const *tf_tr_collect_problems(const tf_tr_collect_t *c, size_t *n)
{
    *n = c ? c->nproblems : 0;
    return c ? c->problems : NULL;
}

void tf_tr_collect_counts(const tf_tr_collect_t *c, uint64_t counts[5])
{
    memset(counts, 0, 5 * sizeof counts[0]);
    for (size_t i = 0; c && i < c->n; i++)
        counts[c->v[i].status]++;
}
