/*
 * tests.c - the test result endpoints (docs/api.md, "Test results"):
 * a build's tests, a builder's failing and flaky tests, one test's
 * history on a builder.
 *
 * Each handler checks its query arguments on the loop thread (a bad one
 * answers 400 naming it), then reads through store/q_tests.c on the
 * store's thread pool and answers from there; nothing of the answer
 * comes from memory, so a build's tests are what is committed.
 */
#include "api/handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/master.h"
#include "names.h"
#include "store/q_tests.h"
#include "testres.h"
#include "tf_err.h"
#include "utf8.h"

typedef enum { TQ_BUILD, TQ_BUILDER, TQ_HISTORY } tq_kind_t;

typedef struct tq_job {
    tf_http_req_t *r;
    tq_kind_t kind;
    uint64_t id;
    unsigned mask, limit;
    char builder[TF_NAME_MAX + 1];
    char *suite, *name;
    char base[512];
    json_t *out;
} tq_job_t;

static void tq_free(tq_job_t *q)
{
    if (!q)
        return;
    json_decref(q->out);
    free(q->suite);
    free(q->name);
    free(q);
}

static int tq_run(tf_db_t *db, void *arg)
{
    tq_job_t *q = arg;
    switch (q->kind) {
    case TQ_BUILD:
        return tf_q_build_tests(db, q->base, q->id, q->mask, q->limit,
                                &q->out);
    case TQ_BUILDER:
        return tf_q_builder_tests(db, q->base, q->builder, q->limit, &q->out);
    case TQ_HISTORY:
        return tf_q_test_history(db, q->base, q->builder, q->suite, q->name,
                                 q->limit, &q->out);
    }
    return TF_EINVAL;
}

static void tq_done(void *arg, int rc)
{
    tq_job_t *q = arg;
    tf_http_req_t *r = q->r;
    if (!tf_http_async_end(r))
        goto out;
    if (rc == TF_ENOENT) {
        tf_http_error(r, 404, "no such %s",
                      q->kind == TQ_BUILD ? "build" : "builder");
        goto out;
    }
    if (rc || !q->out) {
        tf_http_error(r, 500, "database read failed: %s", tf_strerror(rc));
        goto out;
    }
    tf_http_respond_json(r, 200, q->out);
    q->out = NULL;
out:
    tq_free(q);
}

static void tq_start(tf_http_req_t *r, tq_job_t *q)
{
    q->r = r;
    snprintf(q->base, sizeof(q->base), "%s", r->m->cfg->public_url);
    tf_http_async_begin(r);
    int rc = tf_store_read(r->m->store, tq_run, tq_done, q);
    if (rc) {
        tf_http_async_end(r);
        tf_http_error(r, 503, "cannot read the database now: %s",
                      tf_strerror(rc));
        tq_free(q);
    }
}

/* ?status=fail,flaky (any of pass, fail, skip, flaky; absent: all). */
static bool status_mask(tf_http_req_t *r, unsigned *mask)
{
    const char *v = tf_http_arg(r, "status");
    *mask = TF_Q_ST_ALL;
    if (!v)
        return true;
    *mask = 0;
    char word[16];
    const char *p = v;
    for (;;) {
        size_t n = strcspn(p, ",");
        unsigned bit = 0;
        if (n < sizeof(word)) {
            memcpy(word, p, n);
            word[n] = '\0';
            bit = tf_q_status_bit(word);
        }
        if (!bit) {
            tf_http_error(r, 400, "invalid status \"%.*s\": expected a "
                          "comma-separated list of pass, fail, skip, flaky",
                          (int)(n > 40 ? 40 : n), p);
            return false;
        }
        *mask |= bit;
        if (!p[n])
            return true;
        p += n + 1;
    }
}

/* A test's suite or name from the query: valid UTF-8 without control
 * characters, at most TF_TR_MAX_NAME bytes; the name non-empty. */
static bool test_arg(tf_http_req_t *r, const char *key, bool required,
                     char **out)
{
    const char *v = tf_http_arg(r, key);
    if (!v && !required)
        v = "";
    if (!v || (required && !*v)) {
        tf_http_error(r, 400, "missing query parameter \"%s\" (the test's "
                      "%s, as GET /api/v1/builds/{id}/tests lists it)",
                      key, key);
        return false;
    }
    size_t n = strlen(v);
    if (n > TF_TR_MAX_NAME) {
        tf_http_error(r, 400, "query parameter \"%s\" is %zu bytes, over "
                      "the %d-byte limit of a test's %s", key, n,
                      TF_TR_MAX_NAME, key);
        return false;
    }
    if (!tf_utf8_text_clean(v, true)) {
        tf_http_error(r, 400, "query parameter \"%s\" is not valid UTF-8 "
                      "text", key);
        return false;
    }
    *out = strdup(v);
    if (!*out) {
        tf_http_error(r, 503, "out of memory");
        return false;
    }
    return true;
}

void tf_api_build_tests(tf_http_req_t *r, const tf_route_args_t *a)
{
    uint64_t limit = 0;
    unsigned mask = 0;
    if (!status_mask(r, &mask) ||
        !tf_http_arg_u64(r, "limit", 1, TF_Q_TESTS_MAX_LIMIT, 1000, &limit))
        return;
    tq_job_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->kind = TQ_BUILD;
    q->id = a->id;
    q->mask = mask;
    q->limit = (unsigned)limit;
    tq_start(r, q);
}

void tf_api_builder_tests(tf_http_req_t *r, const tf_route_args_t *a)
{
    uint64_t last = 0;
    if (!tf_http_arg_u64(r, "last", 1, 500, 20, &last))
        return;
    tq_job_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->kind = TQ_BUILDER;
    q->limit = (unsigned)last;
    snprintf(q->builder, sizeof(q->builder), "%s", a->name);
    tq_start(r, q);
}

void tf_api_test_history(tf_http_req_t *r, const tf_route_args_t *a)
{
    uint64_t limit = 0;
    tq_job_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    if (!test_arg(r, "name", true, &q->name) ||
        !test_arg(r, "suite", false, &q->suite) ||
        !tf_http_arg_u64(r, "limit", 1, 500, 50, &limit)) {
        tq_free(q);
        return;
    }
    q->kind = TQ_HISTORY;
    q->limit = (unsigned)limit;
    snprintf(q->builder, sizeof(q->builder), "%s", a->name);
    tq_start(r, q);
}
