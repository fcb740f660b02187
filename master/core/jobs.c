/*
 * jobs.c - try jobs: submission, their lifecycle, and their endpoints.
 *
 * Submission (POST /api/v1/jobs) runs in three stages so the loop thread
 * never does heavy work: the JSON body (up to ~70 MB with a 50 MiB patch in
 * base64) is parsed, validated and decoded on a thread-pool thread; the
 * loop thread then checks what only it knows (the builders of the current
 * config) and queues the patch, the job and one request per builder as one
 * all-or-nothing write; only after that commit are the requests scheduled
 * and the client answered. A refused submission writes nothing.
 *
 * Patches are stored once per SHA-256 (INSERT ... ON CONFLICT DO NOTHING),
 * and served to slaves and committers by incremental blob reads so a large
 * patch never sits whole in the master's memory when downloaded.
 */
#include "core/jobs.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base64.h"
#include "clock.h"
#include "crypto.h"
#include "log.h"
#include "mail/mail.h"
#include "core/master.h"
#include "names.h"
#include "store/queries.h"
#include "tf_err.h"
#include "util.h"

#define JOB_MAX_TESTS 100
#define JOB_TEST_MAX 200
#define PATCH_PIECE (256 * 1024)
#define SLAVE_AUTH_SKEW_S 300

size_t tf_jobs_body_cap(const tf_master_t *m)
{
    return (size_t)(m->cfg->try_max_patch_bytes / 3 * 4 + 8) + 1024 * 1024;
}

/* --- job accounting --- */

static tf_mjob_t *job_get(tf_master_t *m, uint64_t id)
{
    return id ? tf_map_get_id(m->jobs, id) : NULL;
}

void tf_job_request_started(tf_master_t *m, uint64_t job_id)
{
    tf_mjob_t *j = job_get(m, job_id);
    if (!j || j->started)
        return;
    j->started = true;
    tf_sqlval_t v[] = {tf_sql_int((int64_t)job_id)};
    tf_master_write(m,
                    "UPDATE try_jobs SET state = 'running' WHERE id = ?1 "
                    "AND state = 'pending'",
                    v, 1, NULL, NULL);
}

void tf_job_request_done(tf_master_t *m, uint64_t job_id, tf_result_t result)
{
    tf_mjob_t *j = job_get(m, job_id);
    if (!j)
        return;
    j->result = j->has_result ? tf_result_worst(j->result, result) : result;
    j->has_result = true;
    if (j->nopen > 0)
        j->nopen--;
    if (j->nopen > 0)
        return;
    const char *state = j->cancel_requested ? "cancelled" : "finished";
    tf_sqlval_t v[] = {tf_sql_text(state), tf_sql_int(j->result),
                       tf_sql_int(tf_now_ms()), tf_sql_int((int64_t)j->id)};
    tf_master_write(m,
                    "UPDATE try_jobs SET state = ?1, result = ?2, "
                    "finished_ms = ?3 WHERE id = ?4",
                    v, 4, NULL, NULL);
    tf_mail_writer_t w = tf_master_mail_writer(m);
    tf_mail_job_done(m->mail, m->cfg, &w, j->id); /* in the same group */
    tf_info("jobs", "job %" PRIu64 " of %s %s: %s", j->id, j->email, state,
            tf_result_name(j->result));
    tf_map_del_id(m->jobs, j->id);
    free(j);
}

int tf_jobs_load(sqlite3 *db, tf_master_t *m)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT j.id, j.email, j.state, "
                           "(SELECT count(*) FROM build_requests r WHERE "
                           " r.job_id = j.id AND r.state IN "
                           " ('pending', 'running')), "
                           "(SELECT max(r.result) IS NOT NULL FROM "
                           " build_requests r WHERE r.job_id = j.id AND "
                           " r.state IN ('done', 'cancelled')) "
                           "FROM try_jobs j WHERE j.state IN "
                           "('pending', 'running')",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    while (sqlite3_step(st) == SQLITE_ROW) {
        tf_mjob_t *j = calloc(1, sizeof(*j));
        if (!j)
            break;
        j->id = (uint64_t)sqlite3_column_int64(st, 0);
        snprintf(j->email, sizeof(j->email), "%s",
                 (const char *)sqlite3_column_text(st, 1));
        j->started = strcmp((const char *)sqlite3_column_text(st, 2),
                            "running") == 0;
        j->nopen = (unsigned)sqlite3_column_int(st, 3);
        if (tf_map_put_id(m->jobs, j->id, j) != 0) {
            free(j);
            break;
        }
    }
    sqlite3_finalize(st);
    /* The worst result of the requests already done. */
    if (sqlite3_prepare_v2(db,
                           "SELECT r.job_id, r.result FROM build_requests r "
                           "JOIN try_jobs j ON j.id = r.job_id "
                           "WHERE j.state IN ('pending', 'running') "
                           "AND r.state IN ('done', 'cancelled') "
                           "AND r.result IS NOT NULL",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    while (sqlite3_step(st) == SQLITE_ROW) {
        tf_mjob_t *j = job_get(m, (uint64_t)sqlite3_column_int64(st, 0));
        tf_result_t res = (tf_result_t)sqlite3_column_int(st, 1);
        if (!j)
            continue;
        j->result = j->has_result ? tf_result_worst(j->result, res) : res;
        j->has_result = true;
    }
    sqlite3_finalize(st);
    return 0;
}

void tf_jobs_free_all(tf_master_t *m)
{
    size_t pos = 0;
    void *v;
    while (tf_map_next(m->jobs, &pos, NULL, NULL, &v) == 0)
        free(v);
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
    char *base_revision, *description, *review_url, *patchset, *email;
    bool notify;
    uint8_t *patch;
    size_t patch_len;
    char sha[TF_SHA256_HEX_LEN + 1];
    /* assigned on the loop thread */
    tf_user_t user;
    uint64_t job_id;
    uint64_t first_request;
    int64_t submitted_ms;
    tf_request_t **reqs; /* nreqs, one per builder: written before the
                          * commit, adopted by the scheduler after it */
    size_t nreqs;
} submit_t;

static void submit_free(submit_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nreqs; i++)
        tf_request_free(s->reqs[i]);
    free(s->reqs);
    json_decref(s->builders);
    json_decref(s->tests);
    free(s->base_revision);
    free(s->description);
    free(s->review_url);
    free(s->patchset);
    free(s->email);
    free(s->patch);
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
        "review_url", "patchset", "email", "notify", NULL,
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

static void submit_committed(void *arg, int rc);

/* Loop thread: checks builders, queues the all-or-nothing write. */
static void submit_after(uv_work_t *w, int status)
{
    submit_t *s = w->data;
    tf_http_req_t *r = s->r;
    tf_master_t *m = r->m;
    if (!tf_http_async_end(r)) {
        submit_free(s);
        return;
    }
    if (status != 0) {
        tf_http_error(r, 503, "the submission could not be processed");
        goto fail;
    }
    if (s->status) {
        tf_http_error(r, s->status, "%s", s->msg);
        goto fail;
    }
    /* Builders exist in the config in force now. */
    size_t i;
    json_t *v;
    json_array_foreach(s->builders, i, v)
    {
        const char *name = json_string_value(v);
        if (tf_config_builder(m->cfg, name))
            continue;
        tf_buf_t known;
        tf_buf_init(&known, 4096);
        for (size_t k = 0; k < m->cfg->nbuilders; k++)
            tf_buf_printf(&known, "%s%s", k ? ", " : "",
                          m->cfg->builders[k].name);
        tf_http_error(r, 400, "unknown builder \"%s\"; known builders: %s",
                      name, known.len ? (char *)known.data : "(none)");
        tf_buf_free(&known);
        goto fail;
    }

    s->job_id = m->next_job_id++;
    s->first_request = m->next_request_id;
    m->next_request_id += json_array_size(s->builders);
    s->submitted_ms = tf_now_ms();
    const char *notify_to = s->email ? s->email : s->user.email;

    tf_master_group_begin(m);
    if (s->patch_len) {
        tf_sqlval_t pv[] = {tf_sql_text(s->sha),
                            tf_sql_int((int64_t)s->patch_len),
                            tf_sql_int(s->submitted_ms),
                            tf_sql_blob_owned(s->patch, s->patch_len)};
        s->patch = NULL; /* the store owns it now */
        tf_master_write(m,
                        "INSERT INTO patches(sha256, size, created_ms, data) "
                        "VALUES(?1, ?2, ?3, ?4) ON CONFLICT(sha256) DO NOTHING",
                        pv, 4, NULL, NULL);
    }
    tf_sqlval_t jv[] = {
        tf_sql_int((int64_t)s->job_id),
        tf_sql_int(s->user.id),
        tf_sql_text(s->user.name),
        tf_sql_text(s->user.email),
        tf_sql_int(s->notify ? 1 : 0),
        tf_sql_text(notify_to),
        tf_sql_text(s->description),
        tf_sql_text(s->review_url),
        tf_sql_text(s->patchset),
        tf_sql_text(s->base_revision),
        tf_sql_text(s->patch_len ? s->sha : NULL),
        tf_sql_int((int64_t)s->patch_len),
        tf_sql_int(s->submitted_ms),
    };
    tf_master_write(m,
                    "INSERT INTO try_jobs(id, user_id, author, email, notify, "
                    "notify_email, description, review_url, patchset, "
                    "base_revision, patch_sha256, patch_size, state, "
                    "submitted_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
                    "?10, ?11, ?12, 'pending', ?13)",
                    jv, 13, NULL, NULL);
    char reason[320];
    snprintf(reason, sizeof(reason), "try job %" PRIu64 " by %s", s->job_id,
             s->user.email);
    s->reqs = calloc(json_array_size(s->builders), sizeof(*s->reqs));
    s->nreqs = s->reqs ? json_array_size(s->builders) : 0;
    json_array_foreach(s->builders, i, v)
    {
        const char *name = json_string_value(v);
        json_t *t = s->tests ? json_object_get(s->tests, name) : NULL;
        char *tests = t ? json_dumps(t, JSON_COMPACT) : NULL;
        tf_reqspec_t spec = {
            .builder = name,
            .reason = reason,
            .owner = s->user.email,
            .priority = tf_config_builder(m->cfg, name)->priority,
            .job_id = s->job_id,
            .tests = tests,
            .revision = s->base_revision,
            .patch_sha256 = s->patch_len ? s->sha : NULL,
            .patch_size = s->patch_len,
        };
        tf_request_t *req = s->reqs ? tf_request_make(&spec,
                                                      s->first_request + i,
                                                      s->submitted_ms)
                                    : NULL;
        free(tests);
        /* Out of memory: this builder gets no request (logged after the
         * commit). */
        if (req) {
            tf_request_write(m, req);
            s->reqs[i] = req;
        }
    }
    tf_http_async_begin(r);
    tf_master_group_commit(m, submit_committed, s);
    return;
fail:
    submit_free(s);
}

/* After the commit: the job exists. Schedule it and answer. */
static void submit_committed(void *arg, int rc)
{
    submit_t *s = arg;
    tf_http_req_t *r = s->r;
    tf_master_t *m = r->m;
    bool alive = tf_http_async_end(r);
    if (rc) {
        if (alive)
            tf_http_error(r, 503, "the job could not be stored: %s",
                          tf_strerror(rc));
        submit_free(s);
        return;
    }
    tf_mjob_t *j = calloc(1, sizeof(*j));
    if (j) {
        j->id = s->job_id;
        snprintf(j->email, sizeof(j->email), "%s", s->user.email);
        j->nopen = (unsigned)json_array_size(s->builders);
        if (tf_map_put_id(m->jobs, j->id, j) != 0)
            free(j);
    }
    json_t *reqs = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(s->builders, i, v)
    {
        const char *name = json_string_value(v);
        tf_request_t *req = s->reqs ? s->reqs[i] : NULL;
        if (s->reqs)
            s->reqs[i] = NULL; /* the scheduler's now, or freed here */
        if (!req) {
            tf_error("jobs", "job %" PRIu64 ": out of memory: no request "
                     "for %s", s->job_id, name);
            continue;
        }
        if (tf_sched_adopt(m, req) != 0) {
            tf_error("jobs", "job %" PRIu64 ": out of memory queueing %s; "
                     "it runs after a restart", s->job_id, name);
            tf_request_free(req);
            continue;
        }
        tf_mbuilder_t *mb = tf_master_builder(m, name, false);
        if (mb) {
            tf_sqlval_t bv[] = {tf_sql_int(mb->npending),
                                tf_sql_text(mb->name)};
            tf_master_write(m,
                            "UPDATE builders SET pending = ?1 WHERE name = ?2",
                            bv, 2, NULL, NULL);
        }
        unsigned pos = tf_sched_position(m, req);
        json_t *o = json_pack("{s:s,s:I}", "builder", name, "request_id",
                              (json_int_t)req->id);
        json_object_set_new(o, "position",
                            pos ? json_integer(pos) : json_null());
        json_array_append_new(reqs, o);
    }
    tf_info("jobs", "job %" PRIu64 " from %s: %zu builder(s), patch %zu "
            "bytes%s%.12s", s->job_id, s->user.email,
            json_array_size(s->builders), s->patch_len,
            s->patch_len ? " sha256 " : "", s->patch_len ? s->sha : "");
    if (alive) {
        char url[600];
        snprintf(url, sizeof(url), "%sapi/v1/jobs/%" PRIu64,
                 m->cfg->public_url, s->job_id);
        json_t *o = json_pack("{s:I,s:s,s:o}", "job_id",
                              (json_int_t)s->job_id, "url", url, "requests",
                              reqs);
        json_object_set_new(o, "patch",
                            s->patch_len
                                ? json_pack("{s:s,s:I}", "sha256", s->sha,
                                            "size", (json_int_t)s->patch_len)
                                : json_null());
        tf_http_respond_json(r, 201, o);
    } else {
        json_decref(reqs);
    }
    submit_free(s);
}

void tf_api_job_submit(tf_http_req_t *r)
{
    tf_master_t *m = r->m;
    if (r->user.id == 0) {
        tf_http_header(r, "www-authenticate", "Bearer");
        tf_http_error(r, 401, r->admin ? "the admin token cannot submit try "
                      "jobs: use a committer's token (tf-master user add)"
                      : r->token[0] ? "invalid token"
                      : "submitting a try job needs a committer's token: "
                        "send \"Authorization: Bearer TOKEN\"");
        return;
    }
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

static int jq_run(sqlite3 *db, void *arg)
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
    tf_http_async_begin(r);
    if (tf_store_read(r->m->store, jq_run, jq_done, q) != 0) {
        tf_http_async_end(r);
        tf_http_error(r, 503, "cannot read the database now");
        free(q);
    }
}

void tf_api_job_get(tf_http_req_t *r, uint64_t id)
{
    jq_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->id = id;
    start_jq(r, q);
}

void tf_api_jobs_list(tf_http_req_t *r)
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

typedef struct jc {
    tf_http_req_t *r;
    uint64_t id;
    char email[TF_EMAIL_MAX + 1];
    char state[16];
    int found;
} jc_t;

static int jc_run(sqlite3 *db, void *arg)
{
    jc_t *c = arg;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT email, state FROM try_jobs WHERE id = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_int64(st, 1, (int64_t)c->id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        c->found = 1;
        snprintf(c->email, sizeof(c->email), "%s", sqlite3_column_text(st, 0));
        snprintf(c->state, sizeof(c->state), "%s", sqlite3_column_text(st, 1));
    }
    sqlite3_finalize(st);
    return 0;
}

/* Cancels every open request of job j on the loop thread. */
static void cancel_job_requests(tf_master_t *m, tf_mjob_t *j)
{
    size_t pos = 0;
    void *v;
    tf_request_t *pending[256];
    size_t n = 0;
    while (tf_map_next(m->requests, &pos, NULL, NULL, &v) == 0) {
        tf_request_t *req = v;
        if (req->job_id != j->id)
            continue;
        if (req->state == TF_REQ_RUNNING && req->build)
            tf_build_cancel(m, req->build->id, "the try job was cancelled");
        else if (req->state == TF_REQ_PENDING && n < 256)
            pending[n++] = req;
    }
    for (size_t i = 0; i < n; i++)
        tf_sched_cancel_pending(m, pending[i], NULL, NULL);
}

static void jc_done(void *arg, int rc)
{
    jc_t *c = arg;
    tf_http_req_t *r = c->r;
    tf_master_t *m = r->m;
    if (!tf_http_async_end(r))
        goto out;
    if (rc) {
        tf_http_error(r, 500, "database read failed");
        goto out;
    }
    if (!c->found) {
        tf_http_error(r, 404, "no such job");
        goto out;
    }
    if (!r->admin && strcmp(c->email, r->user.email) != 0) {
        tf_http_error(r, 403, "job %" PRIu64 " belongs to %s: only its "
                      "author or an admin can cancel it", c->id, c->email);
        goto out;
    }
    tf_mjob_t *j = job_get(m, c->id);
    if (!j) {
        tf_http_error(r, 409, "job %" PRIu64 " has already %s", c->id,
                      strcmp(c->state, "cancelled") == 0 ? "been cancelled"
                                                         : "finished");
        goto out;
    }
    j->cancel_requested = true;
    tf_info("jobs", "job %" PRIu64 " cancelled by %s", c->id,
            r->admin ? "the admin" : r->user.email);
    cancel_job_requests(m, j);
    tf_http_respond_json(r, 202, json_pack("{s:I,s:s}", "job_id",
                                           (json_int_t)c->id, "state",
                                           "cancelling"));
out:
    free(c);
}

void tf_api_job_cancel(tf_http_req_t *r, uint64_t id)
{
    if (r->user.id == 0 && !r->admin) {
        tf_http_header(r, "www-authenticate", "Bearer");
        tf_http_error(r, 401, r->token[0] ? "invalid token"
                                          : "cancelling needs a token");
        return;
    }
    jc_t *c = calloc(1, sizeof(*c));
    if (!c) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    c->r = r;
    c->id = id;
    tf_http_async_begin(r);
    if (tf_store_read(r->m->store, jc_run, jc_done, c) != 0) {
        tf_http_async_end(r);
        tf_http_error(r, 503, "cannot read the database now");
        free(c);
    }
}

/* --- patches --- */

/* Checks "TF-Slave name=N,time=T,sig=HEX" for GET path. */
static bool slave_auth_ok(tf_master_t *m, const char *hdr, const char *path)
{
    char name[TF_NAME_MAX + 1] = "", t[24] = "", sig[TF_SHA256_HEX_LEN + 1] =
        "";
    if (strncmp(hdr, "TF-Slave ", 9) != 0)
        return false;
    const char *p = hdr + 9;
    while (*p) {
        const char *eq = strchr(p, '=');
        if (!eq)
            return false;
        const char *end = strchr(eq + 1, ',');
        size_t klen = (size_t)(eq - p);
        size_t vlen = end ? (size_t)(end - eq - 1) : strlen(eq + 1);
        char *dst = NULL;
        size_t cap = 0;
        if (klen == 4 && strncmp(p, "name", 4) == 0)
            dst = name, cap = sizeof(name);
        else if (klen == 4 && strncmp(p, "time", 4) == 0)
            dst = t, cap = sizeof(t);
        else if (klen == 3 && strncmp(p, "sig", 3) == 0)
            dst = sig, cap = sizeof(sig);
        if (dst) {
            if (vlen >= cap)
                return false;
            memcpy(dst, eq + 1, vlen);
            dst[vlen] = '\0';
        }
        p = end ? end + 1 : eq + 1 + vlen;
    }
    const tf_cfg_slave_t *s = tf_config_slave(m->cfg, name);
    int64_t when = 0;
    if (!s || tf_parse_i64(t, &when) != 0)
        return false;
    int64_t now = tf_now_ms() / 1000;
    if (when < now - SLAVE_AUTH_SKEW_S || when > now + SLAVE_AUTH_SKEW_S)
        return false;
    char msg[600], expect[TF_SHA256_HEX_LEN + 1];
    int n = snprintf(msg, sizeof(msg), "GET %s\n%s", path, t);
    tf_hmac_sha256_hex(s->secret, strlen(s->secret), msg, (size_t)n, expect);
    return tf_ct_streq(expect, sig);
}

typedef struct patch_stream {
    tf_http_req_t *r;
    char sha[TF_SHA256_HEX_LEN + 1];
    int64_t rowid;
    uint64_t size;
    uint64_t pos;
    size_t got;
    unsigned char buf[PATCH_PIECE];
} patch_stream_t;

static int patch_find_fn(sqlite3 *db, void *arg)
{
    patch_stream_t *ps = arg;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT id, size FROM patches WHERE sha256 = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_text(st, 1, ps->sha, -1, SQLITE_TRANSIENT);
    int rc = TF_ENOENT;
    if (sqlite3_step(st) == SQLITE_ROW) {
        ps->rowid = sqlite3_column_int64(st, 0);
        ps->size = (uint64_t)sqlite3_column_int64(st, 1);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

static int patch_piece_fn(sqlite3 *db, void *arg)
{
    patch_stream_t *ps = arg;
    sqlite3_blob *b = NULL;
    uint64_t left = ps->size - ps->pos;
    size_t n = left < sizeof(ps->buf) ? (size_t)left : sizeof(ps->buf);
    ps->got = 0;
    if (sqlite3_blob_open(db, "main", "patches", "data", ps->rowid, 0, &b) !=
        SQLITE_OK)
        return TF_ESTORE;
    int rc = sqlite3_blob_read(b, ps->buf, (int)n, (int)ps->pos);
    sqlite3_blob_close(b);
    if (rc != SQLITE_OK)
        return TF_ESTORE;
    ps->got = n;
    return 0;
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

void tf_api_patch(tf_http_req_t *r, const char *sha256)
{
    tf_master_t *m = r->m;
    bool hex = strlen(sha256) == TF_SHA256_HEX_LEN;
    for (const char *p = sha256; hex && *p; p++)
        hex = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f');
    if (!hex) {
        tf_http_error(r, 400, "a patch is named by its SHA-256: 64 lower-case "
                      "hex digits");
        return;
    }
    if (r->user.id == 0 && !r->admin &&
        !slave_auth_ok(m, r->auth_raw, r->path)) {
        tf_http_header(r, "www-authenticate", "Bearer");
        tf_http_error(r, 401, "downloading a patch needs a committer's token "
                      "or slave credentials");
        return;
    }
    patch_stream_t *ps = calloc(1, sizeof(*ps));
    if (!ps) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    ps->r = r;
    snprintf(ps->sha, sizeof(ps->sha), "%s", sha256);
    tf_http_async_begin(r);
    if (tf_store_read(m->store, patch_find_fn, patch_found, ps) != 0) {
        tf_http_async_end(r);
        tf_http_error(r, 503, "cannot read the database now");
        free(ps);
    }
}

void tf_api_whoami(tf_http_req_t *r)
{
    if (r->admin) {
        tf_http_respond_json(r, 200, json_pack("{s:n,s:s,s:b}", "email",
                                               "name", "admin", "admin", 1));
        return;
    }
    if (r->user.id == 0) {
        tf_http_header(r, "www-authenticate", "Bearer");
        tf_http_error(r, 401, r->token[0] ? "invalid token"
                                          : "send \"Authorization: Bearer "
                                            "TOKEN\"");
        return;
    }
    tf_http_respond_json(r, 200, json_pack("{s:s,s:s,s:b}", "email",
                                           r->user.email, "name",
                                           r->user.name, "admin", 0));
}
