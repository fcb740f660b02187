/*
 * jobs.c - the try-job endpoints: POST /api/v1/jobs, GET /api/v1/jobs,
 * GET /api/v1/jobs/{id}, POST /api/v1/jobs/{id}/cancel,
 * GET /api/v1/patches/{sha256} and GET /api/v1/whoami (docs/api.md,
 * "Committers and try jobs").
 *
 * Submission runs in three stages so the loop thread never does heavy
 * work: the JSON body (up to ~70 MB with a 50 MiB patch in base64) is
 * parsed, validated and decoded on a thread-pool thread; the loop thread
 * then hands the result to core (tf_job_create), which checks the builders
 * of the config in force and stores the job; the client is answered only
 * after that commit.
 *
 * Patches are served to slaves and committers by incremental blob reads
 * (store/queries.c), so a large patch never sits whole in the master's
 * memory when downloaded.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "api/handlers.h"
#include "base64.h"
#include "clock.h"
#include "crypto.h"
#include "core/jobs.h"
#include "core/master.h"
#include "log.h"
#include "names.h"
#include "store/queries.h"
#include "tf_err.h"
#include "util.h"

#define JOB_MAX_TESTS 100
#define JOB_TEST_MAX 200
#define PATCH_PIECE (256 * 1024)

size_t tf_api_jobs_body_cap(const tf_master_t *m)
{
    return (size_t)(m->cfg->try_max_patch_bytes / 3 * 4 + 8) + 1024 * 1024;
}

/* --- submission --- */

typedef struct submit {
    tf_http_req_t *r;
    uv_work_t work;
    uint64_t max_patch;
    unsigned max_builders;
    /* parse results */
    int status;
    char msg[600];
    json_t *builders;   /* array of strings */
    json_t *tests;      /* object builder -> array, or NULL */
    json_t *props;      /* object name -> string, or NULL */
    char *props_text;   /* props as the requests store them, or NULL */
    char *base_revision, *description, *review_url, *patchset, *email;
    bool notify;
    bool new_failures_only;
    bool reuse;         /* answer from an identical passed build */
    uint64_t *reuse_ids; /* per builder, found by reuse_run */
    char (*recipes)[65]; /* per builder, its recipe when submitted */
    uint8_t *patch;
    size_t patch_len;
    char sha[TF_SHA256_HEX_LEN + 1];
    tf_user_t user;
} submit_t;

static void submit_free(submit_t *s)
{
    if (!s)
        return;
    json_decref(s->builders);
    json_decref(s->tests);
    json_decref(s->props);
    free(s->base_revision);
    free(s->description);
    free(s->review_url);
    free(s->patchset);
    free(s->email);
    free(s->patch);
    free(s->reuse_ids);
    free(s->recipes);
    free(s->props_text);
    free(s);
}

static int fail(submit_t *s, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(submit_t *s, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->msg, sizeof(s->msg), fmt, ap);
    va_end(ap);
    s->status = status;
    return -1;
}

static bool test_name_valid(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > JOB_TEST_MAX)
        return false;
    for (const char *p = t; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || strchr("._/:*=+,-", c);
        if (!ok)
            return false;
    }
    return true;
}

/* An optional string member of at most max bytes; *out is a copy. */
static int opt_string(submit_t *s, json_t *o, const char *key, size_t max,
                      char **out)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return fail(s, 400, "%s: expected a string", key);
    if (json_string_length(v) > max)
        return fail(s, 400, "%s: longer than %zu bytes", key, max);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return fail(s, 400, "%s: contains a NUL byte", key);
    *out = strdup(json_string_value(v));
    return *out ? 0 : fail(s, 503, "out of memory");
}

static int parse_builders(submit_t *s, json_t *o)
{
    json_t *b = json_object_get(o, "builders");
    if (!b)
        return fail(s, 400, "builders: required (the builders to try on)");
    if (!json_is_array(b) || json_array_size(b) == 0)
        return fail(s, 400, "builders: expected a non-empty array of names");
    if (json_array_size(b) > s->max_builders)
        return fail(s, 400, "builders: at most %u per job (got %zu)",
                    s->max_builders, json_array_size(b));
    size_t i, k;
    json_t *v, *w;
    json_array_foreach(b, i, v)
    {
        if (!json_is_string(v) || !tf_name_valid(json_string_value(v)))
            return fail(s, 400, "builders[%zu]: expected a builder name", i);
        json_array_foreach(b, k, w)
        {
            if (k < i && json_equal(v, w))
                return fail(s, 400, "builders: \"%s\" is listed twice",
                            json_string_value(v));
        }
    }
    s->builders = json_incref(b);
    return 0;
}

static bool in_builders(json_t *builders, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(builders, i, v)
    {
        if (strcmp(json_string_value(v), name) == 0)
            return true;
    }
    return false;
}

static int parse_tests(submit_t *s, json_t *o)
{
    json_t *t = json_object_get(o, "tests");
    if (!t || json_is_null(t))
        return 0;
    if (!json_is_object(t))
        return fail(s, 400, "tests: expected an object of builder -> list "
                    "of tests");
    const char *key;
    json_t *arr;
    json_object_foreach(t, key, arr)
    {
        if (!in_builders(s->builders, key))
            return fail(s, 400, "tests: \"%.64s\" is not one of the job's "
                        "builders", key);
        if (!json_is_array(arr) || json_array_size(arr) > JOB_MAX_TESTS)
            return fail(s, 400, "tests.%s: expected an array of at most %d "
                        "test names", key, JOB_MAX_TESTS);
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v)
        {
            if (!json_is_string(v) || !test_name_valid(json_string_value(v)))
                return fail(s, 400, "tests.%s[%zu]: a test name is 1..%d of "
                            "[A-Za-z0-9._/:*=+,-]", key, i, JOB_TEST_MAX);
        }
    }
    s->tests = json_incref(t);
    return 0;
}

static int parse_patch(submit_t *s, json_t *o)
{
    json_t *p = json_object_get(o, "patch");
    if (!p)
        return fail(s, 400, "patch: required (base64 of the diff; \"\" for "
                    "none)");
    if (!json_is_string(p))
        return fail(s, 400, "patch: expected a base64 string");
    size_t len = json_string_length(p);
    /* Decoded size, exactly, from the text's length and padding. */
    const char *text = json_string_value(p);
    size_t pad = len >= 1 && text[len - 1] == '=' ? (len >= 2 &&
                 text[len - 2] == '=' ? 2 : 1) : 0;
    uint64_t decoded = len / 4 * 3 - (len % 4 == 0 ? pad : 0);
    if (decoded > s->max_patch)
        return fail(s, 413, "the patch is %" PRIu64 " bytes, over this "
                    "master's limit of %" PRIu64 " bytes", decoded,
                    s->max_patch);
    s->patch = malloc(tf_base64_decoded_max(len) + 1);
    if (!s->patch)
        return fail(s, 503, "out of memory");
    if (tf_base64_decode(text, len, s->patch, &s->patch_len) != 0)
        return fail(s, 400, "patch: not valid base64 (RFC 4648, standard "
                    "alphabet, padded, no line breaks)");
    if (s->patch_len)
        tf_sha256_hex(s->patch, s->patch_len, s->sha);
    return 0;
}

static int parse_body(submit_t *s, const uint8_t *body, size_t len)
{
    json_error_t e;
    json_t *o = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &e);
    int rc = -1;
    static const char *const known[] = {
        "builders", "tests",  "base_revision", "patch", "description",
        "review_url", "patchset", "email", "notify", "properties",
        "new_failures_only", "reuse", NULL,
    };
    if (!o) {
        fail(s, 400, "the body is not JSON: %s (line %d)", e.text, e.line);
        goto out;
    }
    if (!json_is_object(o)) {
        fail(s, 400, "the body must be a JSON object");
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        bool ok = false;
        for (size_t i = 0; known[i]; i++)
            ok = ok || strcmp(key, known[i]) == 0;
        if (!ok) {
            fail(s, 400, "unknown field \"%.64s\"", key);
            goto out;
        }
    }
    if (parse_builders(s, o) || parse_tests(s, o) ||
        opt_string(s, o, "base_revision", TF_REF_MAX, &s->base_revision) ||
        opt_string(s, o, "description", 4096, &s->description) ||
        opt_string(s, o, "review_url", 1024, &s->review_url) ||
        opt_string(s, o, "patchset", 64, &s->patchset) ||
        opt_string(s, o, "email", TF_EMAIL_MAX, &s->email))
        goto out;
    if (s->base_revision && (!*s->base_revision ||
                             !tf_git_rev_valid(s->base_revision))) {
        fail(s, 400, "base_revision: \"%.64s\" is not a commit id or ref",
             s->base_revision);
        goto out;
    }
    if (s->review_url && strncmp(s->review_url, "http://", 7) != 0 &&
        strncmp(s->review_url, "https://", 8) != 0) {
        fail(s, 400, "review_url: must start with http:// or https://");
        goto out;
    }
    if (s->email && !tf_email_valid(s->email)) {
        fail(s, 400, "email: \"%.64s\" is not a valid address", s->email);
        goto out;
    }
    json_t *n = json_object_get(o, "notify");
    s->notify = true;
    if (n && !json_is_boolean(n)) {
        fail(s, 400, "notify: expected true or false");
        goto out;
    }
    if (n)
        s->notify = json_is_true(n);
    json_t *jp = json_object_get(o, "properties");
    if (jp) {
        if (!json_is_object(jp)) {
            fail(s, 400, "properties: expected an object of name -> string");
            goto out;
        }
        json_object_foreach(jp, key, v)
        {
            if (!tf_name_valid(key) || !json_is_string(v) ||
                json_string_length(v) > 4096) {
                fail(s, 400, "properties.%.64s: names must be valid and "
                     "values strings of at most 4096 bytes", key);
                goto out;
            }
        }
        s->props = json_incref(jp);
    }
    json_t *nf = json_object_get(o, "new_failures_only");
    if (nf && !json_is_boolean(nf)) {
        fail(s, 400, "new_failures_only: expected true or false");
        goto out;
    }
    s->new_failures_only = json_is_true(nf);
    json_t *ru = json_object_get(o, "reuse");
    if (ru && !json_is_boolean(ru)) {
        fail(s, 400, "reuse: expected true or false");
        goto out;
    }
    s->reuse = !ru || json_is_true(ru);
    if (parse_patch(s, o))
        goto out;
    rc = 0;
out:
    json_decref(o);
    return rc;
}

static void submit_work(uv_work_t *w)
{
    submit_t *s = w->data;
    parse_body(s, s->r->body.data ? s->r->body.data : (const uint8_t *)"",
               s->r->body.len);
}

/* After the commit: answer with the job and its requests' positions. */
static void submit_created(void *arg, int rc, uint64_t job_id,
                           const uint64_t *request_ids, size_t n)
{
    submit_t *s = arg;
    tf_http_req_t *r = s->r;
    tf_master_t *m = r->m;
    if (!tf_http_async_end(r))
        goto out;
    if (rc) {
        tf_http_error(r, 503, "the job could not be stored: %s",
                      tf_strerror(rc));
        goto out;
    }
    json_t *reqs = json_array();
    for (size_t i = 0; i < n; i++) {
        if (!request_ids[i])
            continue;
        tf_request_t *req = tf_map_get_id(m->requests, request_ids[i]);
        unsigned pos = req ? tf_sched_position(m, req) : 0;
        json_t *o = json_pack("{s:s,s:I}", "builder",
                              json_string_value(json_array_get(s->builders,
                                                               i)),
                              "request_id", (json_int_t)request_ids[i]);
        json_object_set_new(o, "position",
                            pos ? json_integer(pos) : json_null());
        uint64_t reused = s->reuse_ids ? s->reuse_ids[i] : 0;
        json_object_set_new(o, "reused", json_boolean(reused != 0));
        if (reused) {
            char burl[600];
            snprintf(burl, sizeof(burl), "%sapi/v1/builds/%" PRIu64,
                     m->cfg->public_url, reused);
            json_t *rb = json_pack("{s:I,s:s}", "id", (json_int_t)reused,
                                   "url", burl);
            snprintf(burl, sizeof(burl), "%s#/builds/%" PRIu64,
                     m->cfg->public_url, reused);
            json_object_set_new(rb, "page_url", json_string(burl));
            json_object_set_new(o, "build", rb);
        }
        json_array_append_new(reqs, o);
    }
    char url[600];
    snprintf(url, sizeof(url), "%sapi/v1/jobs/%" PRIu64, m->cfg->public_url,
             job_id);
    json_t *o = json_pack("{s:I,s:s,s:o}", "job_id", (json_int_t)job_id,
                          "url", url, "requests", reqs);
    snprintf(url, sizeof(url), "%s#/jobs/%" PRIu64, m->cfg->public_url,
             job_id);
    json_object_set_new(o, "page_url", json_string(url));
    json_object_set_new(o, "patch",
                        s->patch_len
                            ? json_pack("{s:s,s:I}", "sha256", s->sha, "size",
                                        (json_int_t)s->patch_len)
                            : json_null());
    tf_http_respond_json(r, 201, o);
out:
    submit_free(s);
}

/* Loop thread: the submission (and what reuse found) goes to core. */
static void submit_create(submit_t *s)
{
    tf_http_req_t *r = s->r;
    tf_jobspec_t spec = {
        .properties = s->props_text,
        .user = s->user,
        .builders = s->builders,
        .tests = s->tests,
        .base_revision = s->base_revision,
        .description = s->description,
        .review_url = s->review_url,
        .patchset = s->patchset,
        .email = s->email,
        .notify = s->notify,
        .new_failures_only = s->new_failures_only,
        .reuse = s->reuse_ids,
        .patch = s->patch,
        .patch_len = s->patch_len,
    };
    memcpy(spec.sha, s->sha, sizeof(spec.sha));
    s->patch = NULL; /* core takes it */
    char err[600];
    tf_http_async_begin(r);
    int rc = tf_job_create(r->m, &spec, err, sizeof(err), submit_created, s);
    if (rc) {
        tf_http_async_end(r);
        tf_http_error(r, rc == TF_ENOENT ? 400 : 503, "%s", err);
        submit_free(s);
    }
}

/* Whether s names its base by a commit id (40 or 64 hex digits): only
 * then can an earlier build have built exactly the same tree (a ref
 * moves). */
static bool base_is_commit(const submit_t *s)
{
    size_t n = s->base_revision ? strlen(s->base_revision) : 0;
    if (n != 40 && n != 64)
        return false;
    return strspn(s->base_revision, "0123456789abcdef") == n;
}

/* Thread pool: finds, per builder, a passed build of an identical
 * request (queries.h, tf_q_reusable_build). */
static int reuse_run(tf_db_t *db, void *arg)
{
    submit_t *s = arg;
    size_t i;
    json_t *v;
    json_array_foreach(s->builders, i, v) {
        const char *name = json_string_value(v);
        json_t *t = s->tests ? json_object_get(s->tests, name) : NULL;
        char *tests = t ? json_dumps(t, JSON_COMPACT) : NULL;
        int rc = tf_q_reusable_build(db, name, s->base_revision,
                                     s->patch_len ? s->sha : "",
                                     tests ? tests : "[]",
                                     s->props_text ? s->props_text : "{}",
                                     s->recipes[i], &s->reuse_ids[i]);
        free(tests);
        if (rc)
            return rc;
    }
    return 0;
}

static void reuse_done(void *arg, int rc)
{
    submit_t *s = arg;
    tf_http_req_t *r = s->r;
    if (!tf_http_async_end(r)) {
        submit_free(s);
        return;
    }
    if (rc) {
        /* Not found is no error: the job just runs. */
        tf_warn("jobs", "result reuse lookup failed (%s): the job runs",
                tf_strerror(rc));
        memset(s->reuse_ids, 0,
               json_array_size(s->builders) * sizeof(*s->reuse_ids));
    }
    submit_create(s);
}

/* Loop thread: the parsed submission, then (with reuse) the lookup. */
static void submit_after(uv_work_t *w, int status)
{
    submit_t *s = w->data;
    tf_http_req_t *r = s->r;
    if (!tf_http_async_end(r)) {
        submit_free(s);
        return;
    }
    if (status != 0) {
        tf_http_error(r, 503, "the submission could not be processed");
        submit_free(s);
        return;
    }
    if (s->status) {
        tf_http_error(r, s->status, "%s", s->msg);
        submit_free(s);
        return;
    }
    /* Properties: each builder of the job must allow each one to
     * committers (force_properties), as for a forced build. */
    if (s->props && json_object_size(s->props) > 0) {
        size_t i;
        json_t *b;
        json_array_foreach(s->builders, i, b)
        {
            const tf_cfg_builder_t *cfg =
                tf_config_builder(r->m->cfg, json_string_value(b));
            if (cfg && !tf_api_props_allowed(r, cfg, s->props)) {
                submit_free(s);
                return;
            }
        }
        s->props_text = json_dumps(s->props, JSON_COMPACT | JSON_SORT_KEYS);
        if (!s->props_text) {
            tf_http_error(r, 503, "out of memory");
            submit_free(s);
            return;
        }
    }
    size_t n = json_array_size(s->builders);
    if (s->reuse && n && base_is_commit(s) &&
        (s->reuse_ids = calloc(n, sizeof(*s->reuse_ids))) &&
        (s->recipes = calloc(n, sizeof(*s->recipes)))) {
        /* What each builder runs now, read here on the loop: a build
         * that ran other steps is no answer for this request. */
        for (size_t i = 0; i < n; i++) {
            const tf_cfg_builder_t *cfg = tf_config_builder(
                r->m->cfg, json_string_value(json_array_get(s->builders, i)));
            snprintf(s->recipes[i], sizeof(s->recipes[i]), "%s",
                     cfg ? cfg->recipe : "");
        }
        tf_http_async_begin(r);
        if (tf_store_read(r->m->store, reuse_run, reuse_done, s) == 0)
            return;
        tf_http_async_end(r);
    }
    free(s->reuse_ids);
    s->reuse_ids = NULL;
    free(s->recipes);
    s->recipes = NULL;
    submit_create(s);
}

void tf_api_job_submit(tf_http_req_t *r, const tf_route_args_t *a)
{
    tf_master_t *m = r->m;
    submit_t *s = calloc(1, sizeof(*s));
    if (!s) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    s->r = r;
    s->user = r->user;
    s->max_patch = m->cfg->try_max_patch_bytes;
    s->max_builders = m->cfg->try_max_builders;
    s->work.data = s;
    tf_http_async_begin(r);
    if (uv_queue_work(m->loop, &s->work, submit_work, submit_after) != 0) {
        tf_http_async_end(r);
        tf_http_error(r, 503, "cannot process the submission now");
        submit_free(s);
    }
}

/* --- reading jobs --- */

typedef struct jq {
    tf_http_req_t *r;
    uint64_t id;
    char email[TF_EMAIL_MAX + 1];
    uint64_t before;
    unsigned limit;
    bool list;
    char base[512];
    json_t *out;
} jq_t;

static int jq_run(tf_db_t *db, void *arg)
{
    jq_t *q = arg;
    if (q->list)
        return tf_q_jobs(db, q->base, q->email[0] ? q->email : NULL,
                         q->before, q->limit, &q->out);
    return tf_q_job(db, q->base, q->id, &q->out);
}

/* Adds the queue position of each pending builder entry. */
static void overlay_positions(tf_master_t *m, json_t *job)
{
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(job, "builders"), i, b)
    {
        json_t *rid = json_object_get(b, "request_id");
        tf_request_t *req =
            tf_map_get_id(m->requests, (uint64_t)json_integer_value(rid));
        unsigned pos = req ? tf_sched_position(m, req) : 0;
        json_object_set_new(b, "position",
                            pos ? json_integer(pos) : json_null());
    }
}

static void jq_done(void *arg, int rc)
{
    jq_t *q = arg;
    tf_http_req_t *r = q->r;
    if (!tf_http_async_end(r))
        goto out;
    if (rc == TF_ENOENT) {
        tf_http_error(r, 404, "no such job");
        goto out;
    }
    if (rc || !q->out) {
        tf_http_error(r, 500, "database read failed");
        goto out;
    }
    if (!q->list)
        overlay_positions(r->m, q->out);
    tf_http_respond_json(r, 200, q->out);
    q->out = NULL;
out:
    json_decref(q->out);
    free(q);
}

static void start_jq(tf_http_req_t *r, jq_t *q)
{
    q->r = r;
    snprintf(q->base, sizeof(q->base), "%s", r->m->cfg->public_url);
    if (!tf_api_read_then(r, jq_run, jq_done, q))
        free(q);
}

void tf_api_job_get(tf_http_req_t *r, const tf_route_args_t *a)
{
    uint64_t id = a->id;
    jq_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->id = id;
    start_jq(r, q);
}

void tf_api_jobs_list(tf_http_req_t *r, const tf_route_args_t *a)
{
    uint64_t limit, before;
    const char *author = tf_http_arg(r, "author");
    const char *mine = tf_http_arg(r, "mine");
    if (!tf_http_arg_u64(r, "limit", 1, 200, 50, &limit) ||
        !tf_http_arg_u64(r, "before", 1, TF_PROTO_MAX_ID, 0, &before))
        return;
    if (author && !tf_email_valid(author)) {
        tf_http_error(r, 400, "author: not a valid email address");
        return;
    }
    bool want_mine = mine && strcmp(mine, "0") != 0;
    if (want_mine && r->user.id == 0) {
        tf_http_header(r, "www-authenticate", "Bearer");
        tf_http_error(r, 401, "mine=1 needs a committer's token");
        return;
    }
    jq_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->list = true;
    q->limit = (unsigned)limit;
    q->before = before;
    if (want_mine)
        snprintf(q->email, sizeof(q->email), "%s", r->user.email);
    else if (author)
        snprintf(q->email, sizeof(q->email), "%s", author);
    start_jq(r, q);
}

/* --- cancelling --- */

/* Several masters: what this master runs or queues of the job is
 * cancelled here once the cancel is stored for the others. */
static void job_cancel_here(tf_master_t *m, uint64_t id, const char *by)
{
    tf_job_cancel(m, id, by);
}

static void job_owned(void *arg, int rc)
{
    tf_api_owned_t *c = arg;
    tf_http_req_t *r = c->r;
    const char *by;
    char gone[64];

    if (!tf_http_async_end(r))
        goto out;
    if (rc == TF_ENOENT) {
        tf_http_error(r, 404, "no such job");
        goto out;
    }
    if (rc) {
        tf_http_error(r, 500, "database read failed");
        goto out;
    }
    if (!r->admin && strcmp(c->owner, r->user.email) != 0) {
        tf_http_error(r, 403, "job %" PRIu64 " belongs to %s: only its "
                      "author or an admin can cancel it", c->id, c->owner);
        goto out;
    }
    snprintf(gone, sizeof(gone), "job %" PRIu64 " has already %s", c->id,
             strcmp(c->state, "cancelled") == 0 ? "been cancelled"
                                                : "finished");
    by = r->admin ? "the admin" : r->user.email;
    /* The database's state first: with several masters this master's
     * copy of the job may outlive its end on another master. */
    if (strcmp(c->state, "finished") == 0 ||
        strcmp(c->state, "cancelled") == 0) {
        tf_http_error(r, 409, "%s", gone);
        goto out;
    }
    if (tf_store_is_shared(r->m->store)) {
        /* Stored for the masters that run its builds, then done here. */
        char why[TF_EMAIL_MAX + 64];
        snprintf(why, sizeof(why), "the try job was cancelled by %s", by);
        tf_api_cancel_store(r, "job", c->id, why,
                            json_pack("{s:I,s:s}", "job_id",
                                      (json_int_t)c->id, "state",
                                      "cancelling"),
                            gone, job_cancel_here);
        goto out;
    }
    if (tf_job_cancel(r->m, c->id, by) != 0) {
        tf_http_error(r, 409, "%s", gone);
        goto out;
    }
    tf_http_respond_json(r, 202, json_pack("{s:I,s:s}", "job_id",
                                           (json_int_t)c->id, "state",
                                           "cancelling"));
out:
    free(c);
}

void tf_api_job_cancel(tf_http_req_t *r, const tf_route_args_t *a)
{
    tf_api_owned_read(r, TF_API_OWNED_JOB, a->id, false, job_owned);
}

/* --- patches --- */

typedef struct patch_stream {
    tf_http_req_t *r;
    char sha[TF_SHA256_HEX_LEN + 1];
    int64_t rowid;
    uint64_t size;
    uint64_t pos;
    size_t got;
    unsigned char buf[PATCH_PIECE];
} patch_stream_t;

static int patch_find_fn(tf_db_t *db, void *arg)
{
    patch_stream_t *ps = arg;
    return tf_q_patch_find(db, ps->sha, &ps->rowid, &ps->size);
}

static int patch_piece_fn(tf_db_t *db, void *arg)
{
    patch_stream_t *ps = arg;
    uint64_t left = ps->size - ps->pos;
    size_t n = left < sizeof(ps->buf) ? (size_t)left : sizeof(ps->buf);
    ps->got = 0;
    int rc = tf_q_patch_read(db, ps->rowid, ps->pos, ps->buf, n);
    if (rc == 0)
        ps->got = n;
    return rc;
}

static void patch_piece_done(void *arg, int rc)
{
    patch_stream_t *ps = arg;
    tf_http_req_t *r = ps->r;
    if (!tf_http_async_end(r))
        return;
    if (rc) {
        tf_http_fail_stream(r);
        return;
    }
    ps->pos += ps->got;
    tf_http_feed(r, ps->buf, ps->got);
}

static int patch_pull(tf_http_req_t *r, void *arg)
{
    tf_http_async_begin(r);
    int rc = tf_store_read(r->m->store, patch_piece_fn, patch_piece_done, arg);
    if (rc)
        tf_http_async_end(r);
    return rc;
}

static void patch_found(void *arg, int rc)
{
    patch_stream_t *ps = arg;
    tf_http_req_t *r = ps->r;
    if (!tf_http_async_end(r)) {
        free(ps);
        return;
    }
    if (rc == TF_ENOENT) {
        tf_http_error(r, 404, "no such patch");
        free(ps);
        return;
    }
    if (rc) {
        tf_http_error(r, 500, "database read failed");
        free(ps);
        return;
    }
    tf_http_header(r, "x-patch-sha256", ps->sha);
    tf_http_stream(r, 200, "application/octet-stream", ps->size, patch_pull,
                   ps, free);
}

void tf_api_patch(tf_http_req_t *r, const tf_route_args_t *a)
{
    const char *sha256 = a->sha256;
    bool hex = strlen(sha256) == TF_SHA256_HEX_LEN;
    for (const char *p = sha256; hex && *p; p++)
        hex = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f');
    if (!hex) {
        tf_http_error(r, 400, "a patch is named by its SHA-256: 64 lower-case "
                      "hex digits");
        return;
    }
    patch_stream_t *ps = calloc(1, sizeof(*ps));
    if (!ps) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    ps->r = r;
    snprintf(ps->sha, sizeof(ps->sha), "%s", sha256);
    if (!tf_api_read_then(r, patch_find_fn, patch_found, ps))
        free(ps);
}

void tf_api_whoami(tf_http_req_t *r, const tf_route_args_t *a)
{
    if (r->admin) {
        tf_http_respond_json(r, 200, json_pack("{s:n,s:s,s:b}", "email",
                                               "name", "admin", "admin", 1));
        return;
    }
    tf_http_respond_json(r, 200, json_pack("{s:s,s:s,s:b}", "email",
                                           r->user.email, "name",
                                           r->user.name, "admin", 0));
}
