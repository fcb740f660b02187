/*
 * test_store_mail.c - the outbox's SQL (master/store/mail.c) against a
 * real store: a try job's report is queued once and only when the job
 * wants mail; notifier modes decide from the builder's previous
 * continuous build inside the INSERT; a row goes pending -> rendered ->
 * sent and the due row is picked first; the views a mail is made from
 * carry the rows' values (a request's result, else its build's; the first
 * failed step; log chunks past an offset; the blamelist); the API's JSON.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "store/db_impl.h"
#include <uv.h>

#include "store/mail.h"
#include "store/store.h"
#include "tf_err.h"
#include "tf_test.h"

typedef struct fx {
    uv_loop_t loop;
    char dir[256], path[300];
    tf_store_t *store;
    int done, last_rc;
    bool closed;
} fx_t;

static void closed_cb(void *arg)
{
    ((fx_t *)arg)->closed = true;
}

static void open_fx(fx_t *f)
{
    const char *tmp = getenv("TMPDIR");
    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "%s/tf-smail-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir) || uv_loop_init(&f->loop) != 0)
        exit(2);
    snprintf(f->path, sizeof(f->path), "%s/tf.db", f->dir);
    TF_CHECK_INT(tf_store_open(&f->loop, f->path, NULL, &f->store), 0);
}

static void close_fx(fx_t *f)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    char p[320];
    tf_store_close(f->store, closed_cb, f);
    while (!f->closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    TF_CHECK_INT(uv_loop_close(&f->loop), 0);
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof(p), "%s%s", f->path, suffixes[i]);
        unlink(p);
    }
    rmdir(f->dir);
}

static void done_cb(void *arg, int rc)
{
    fx_t *f = arg;
    f->done++;
    f->last_rc = rc;
}

/* Queues one statement and runs the loop until it committed. */
static int run_stmt(fx_t *f, const tf_sqlstmt_t *st)
{
    int want = f->done + 1;
    int rc = tf_store_write(f->store, st->sql, st->vals, st->nvals, done_cb,
                            f);
    if (rc)
        return rc;
    while (f->done < want)
        uv_run(&f->loop, UV_RUN_ONCE);
    return f->last_rc;
}

/* Fixture rows (test SQL, not the code under test), on a connection of
 * their own: the store's writer is idle between the tests' writes. */
static void sql(fx_t *f, const char *text)
{
    sqlite3 *db = NULL;
    char *err = NULL;
    TF_CHECK_INT(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    int rc = sqlite3_exec(db, text, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        fprintf(stderr, "fixture: %s\n", err ? err : "?");
    TF_CHECK_INT(rc, SQLITE_OK);
    sqlite3_free(err);
    sqlite3_close(db);
}

typedef struct count_q {
    const char *sql;
    int64_t n;
} count_q_t;

static int count_fn(tf_db_t *tdb, void *arg)
{
    sqlite3 *db = tf__db_lite(tdb);
    count_q_t *q = arg;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, q->sql, -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    q->n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return 0;
}

static int64_t count(fx_t *f, const char *q)
{
    count_q_t c = {.sql = q};
    TF_CHECK_INT(tf_store_read_sync(f->store, count_fn, &c), 0);
    return c.n;
}

static void queue_build(fx_t *f, uint64_t id, int result, int mode)
{
    tf_sqlval_t v[TF_STORE_MAIL_MAX_VALS];
    tf_sqlstmt_t st;
    tf_store_mail_queue_build(&st, v, id, "b", result, mode, "[\"x@y.org\"]",
                              1000);
    TF_CHECK_INT(run_stmt(f, &st), 0);
}

/* A finished continuous build id of builder b with result. */
static void add_build(fx_t *f, int id, int result)
{
    char q[400];
    snprintf(q, sizeof(q),
             "INSERT INTO build_requests(id, builder, state, submitted_ms) "
             "VALUES (%d, 'b', 'done', 1);"
             "INSERT INTO builds(id, builder, number, request_id, state, "
             "result, created_ms) VALUES (%d, 'b', %d, %d, 'finished', %d, 1)",
             id, id, id, id, result);
    sql(f, q);
}

TF_TEST(queue_once_and_by_mode)
{
    fx_t f;
    tf_sqlval_t v[TF_STORE_MAIL_MAX_VALS];
    tf_sqlstmt_t st;
    open_fx(&f);
    sql(&f, "INSERT INTO try_jobs(id, user_id, author, email, notify, state, "
            "submitted_ms) VALUES (1, 1, 'Ann', 'ann@x.org', 1, 'finished', "
            "1), (2, 1, 'Bob', 'bob@x.org', 0, 'finished', 1)");
    tf_store_mail_queue_job(&st, v, 1, 500);
    TF_CHECK_INT(run_stmt(&f, &st), 0);
    TF_CHECK_INT(run_stmt(&f, &st), 0); /* a second time: still one row */
    tf_store_mail_queue_job(&st, v, 2, 500); /* asked for no mail */
    TF_CHECK_INT(run_stmt(&f, &st), 0);
    TF_CHECK_INT(count(&f, "SELECT count(*) FROM mail_outbox WHERE kind = "
                           "'job' AND ref_id = 1 AND recipients = "
                           "'[\"ann@x.org\"]' AND next_attempt_ms = 500"),
                 1);
    TF_CHECK_INT(count(&f, "SELECT count(*) FROM mail_outbox"), 1);

    /* Builds 10 SUCCESS, 11 FAILURE, 12 FAILURE, 13 SUCCESS. */
    add_build(&f, 10, 0);
    add_build(&f, 11, 2);
    add_build(&f, 12, 2);
    add_build(&f, 13, 0);
    queue_build(&f, 10, 0, 3); /* change: no previous build */
    queue_build(&f, 11, 2, 2); /* problem: a failure after a pass */
    queue_build(&f, 12, 2, 2); /* problem: failing again, no mail */
    queue_build(&f, 12, 2, 1); /* failing: every failure */
    queue_build(&f, 13, 0, 3); /* change: fixed */
    queue_build(&f, 13, 0, 3); /* once */
    TF_CHECK_INT(count(&f, "SELECT count(*) FROM mail_outbox WHERE kind = "
                           "'build' AND ref_id IN (11, 12, 13) AND "
                           "recipients = '[\"x@y.org\"]'"),
                 3);
    TF_CHECK_INT(count(&f, "SELECT count(*) FROM mail_outbox WHERE kind = "
                           "'build' AND ref_id = 10"),
                 0);
    close_fx(&f);
}

typedef struct pick_q {
    tf_store_mail_row_t row;
} pick_q_t;

static int pick_fn(tf_db_t *db, void *arg)
{
    return tf_store_mail_pick(db, &((pick_q_t *)arg)->row);
}

TF_TEST(row_life_and_pick_order)
{
    fx_t f;
    tf_sqlval_t v[TF_STORE_MAIL_MAX_VALS];
    tf_sqlstmt_t st;
    pick_q_t p = {0};
    open_fx(&f);
    sql(&f, "INSERT INTO mail_outbox(id, kind, ref_id, state, created_ms, "
            "next_attempt_ms) VALUES (1, 'job', 7, 'pending', 1, 300), "
            "(2, 'build', 8, 'pending', 1, 200), (3, 'job', 9, 'sent', 1, 1)");
    TF_CHECK_INT(tf_store_read_sync(f.store, pick_fn, &p), 0);
    TF_CHECK(p.row.found && p.row.id == 2 && p.row.ref == 8);
    TF_CHECK_STR(p.row.kind, "build");
    TF_CHECK(!p.row.has_message);
    tf_store_mail_row_clear(&p.row);

    tf_store_mail_row_rendered(&st, v, 2, "Subj", "<m@x>", "MSG\r\n", 5,
                               "[\"a@b.org\"]");
    TF_CHECK_INT(run_stmt(&f, &st), 0);
    /* Stored once: a second rendering does not replace it. */
    tf_store_mail_row_rendered(&st, v, 2, "Other", "<n@x>", "X", 1, "[]");
    TF_CHECK_INT(run_stmt(&f, &st), 0);
    TF_CHECK_INT(tf_store_read_sync(f.store, pick_fn, &p), 0);
    TF_CHECK(p.row.has_message && p.row.message_len == 5 &&
             memcmp(p.row.message, "MSG\r\n", 5) == 0);
    TF_CHECK_STR(p.row.subject, "Subj");
    TF_CHECK_STR(p.row.recipients, "[\"a@b.org\"]");
    tf_store_mail_row_clear(&p.row);

    tf_store_mail_row_attempt(&st, v, 2, false, 1, "down", 400);
    TF_CHECK_INT(run_stmt(&f, &st), 0);
    TF_CHECK_INT(tf_store_read_sync(f.store, pick_fn, &p), 0);
    TF_CHECK(p.row.id == 1); /* row 2 is due later now */
    tf_store_mail_row_clear(&p.row);
    tf_store_mail_row_unsent(&st, v, 1, "skipped", "nobody");
    TF_CHECK_INT(run_stmt(&f, &st), 0);
    tf_store_mail_row_sent(&st, v, 2, 999, 2);
    TF_CHECK_INT(run_stmt(&f, &st), 0);
    TF_CHECK_INT(tf_store_read_sync(f.store, pick_fn, &p), 0);
    TF_CHECK(!p.row.found);
    TF_CHECK_INT(count(&f, "SELECT count(*) FROM mail_outbox WHERE id = 2 "
                           "AND state = 'sent' AND sent_ms = 999 AND "
                           "attempts = 2 AND last_error IS NULL"),
                 1);
    TF_CHECK_INT(count(&f, "SELECT count(*) FROM mail_outbox WHERE id = 1 "
                           "AND state = 'skipped' AND last_error = "
                           "'nobody'"),
                 1);
    close_fx(&f);
}

/* What the views gave, flattened into text for the checks. */
typedef struct seen {
    char text[1024];
    size_t n;
} seen_t;

__attribute__((format(printf, 2, 3))) static void
seen_add(seen_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s->text + s->n, sizeof(s->text) - s->n, fmt, ap);
    va_end(ap);
    if (n > 0 && s->n + (size_t)n < sizeof(s->text))
        s->n += (size_t)n;
}

static int job_v(void *arg, const tf_store_mail_job_t *j)
{
    seen_add(arg, "job %s:%d ", j->author, j->notify);
    return 0;
}

static int req_v(void *arg, const tf_store_mail_request_t *r)
{
    seen_add(arg, "req %s:%d ", r->builder, r->has_result ? r->result : -1);
    return 0;
}

static int step_v(void *arg, const tf_store_mail_step_t *s)
{
    seen_add(arg, "step %s:%d ", s->name, s->has_result ? s->result : -1);
    return 0;
}

static int change_v(void *arg, const tf_store_mail_change_t *c)
{
    seen_add(arg, "change %s ", c->author);
    return 0;
}

static bool chunk_v(void *arg, uint64_t off, uint64_t line, const void *d,
                    size_t n)
{
    seen_add(arg, "chunk %.*s@%llu.%llu ", (int)n, (const char *)d,
             (unsigned long long)off, (unsigned long long)line);
    return true;
}

static int build_v(void *arg, const tf_store_mail_build_t *b)
{
    seen_add(arg, "build %s:%d ", b->builder, b->in_job);
    return 0;
}

static int views_fn(tf_db_t *db, void *arg)
{
    seen_t *s = arg;
    bool has_prev = false;
    int prev = -1, rc;
    if ((rc = tf_store_mail_job(db, 1, job_v, req_v, s)) ||
        (rc = tf_store_mail_steps(db, 21, 10, true, step_v, s)) ||
        (rc = tf_store_mail_steps(db, 21, 10, false, step_v, s)) ||
        (rc = tf_store_mail_log(db, 21, 1, 4, chunk_v, s)) ||
        (rc = tf_store_mail_changes(db, 21, 10, change_v, s)) ||
        (rc = tf_store_mail_build(db, 21, build_v, s, &has_prev, &prev)))
        return rc;
    seen_add(s, "prev %s%d", has_prev ? "" : "none", prev);
    if (tf_store_mail_job(db, 99, job_v, req_v, s) != TF_ENOENT ||
        tf_store_mail_build(db, 99, build_v, s, &has_prev, &prev) !=
            TF_ENOENT)
        return TF_EINVAL;
    return 0;
}

TF_TEST(views_of_a_job_and_a_build)
{
    fx_t f;
    seen_t s = {{0}, 0};
    open_fx(&f);
    sql(&f, "INSERT INTO try_jobs(id, user_id, author, email, state, "
            "submitted_ms) VALUES (1, 1, 'Ann', 'ann@x.org', 'finished', 1);"
            "INSERT INTO build_requests(id, builder, state, submitted_ms, "
            "result, build_id, job_id) VALUES "
            "(1, 'lin', 'done', 1, 0, 20, 1), (2, 'mac', 'done', 1, NULL, "
            "21, 1), (3, 'win', 'pending', 1, NULL, NULL, 1);"
            "INSERT INTO builds(id, builder, number, request_id, state, "
            "result, created_ms) VALUES (20, 'lin', 1, 1, 'finished', 0, 1),"
            "(21, 'mac', 1, 2, 'finished', 2, 1), (19, 'mac', 0, 9, "
            "'finished', 0, 1);"
            "INSERT INTO build_requests(id, builder, state, submitted_ms) "
            "VALUES (9, 'mac', 'done', 1);"
            "INSERT INTO steps(build_id, idx, name, state, result) VALUES "
            "(21, 0, 'co', 'done', 0), (21, 1, 'test', 'done', 2), "
            "(21, 2, 'up', 'done', NULL);"
            "INSERT INTO log_chunks(build_id, step, offset, seq, stream, "
            "line, data) VALUES (21, 1, 0, 1, 1, 0, 'abc'), "
            "(21, 1, 3, 2, 1, 0, 'def'), (21, 1, 6, 3, 1, 1, 'gh');"
            "INSERT INTO changes(id, repository, branch, revision, author, "
            "created_ms) VALUES (5, 'r', 'main', 'aaa', 'Cy', 1);"
            "INSERT INTO build_changes(build_id, change_id) VALUES (21, 5)");
    TF_CHECK_INT(tf_store_read_sync(f.store, views_fn, &s), 0);
    TF_CHECK_STR(s.text, "job Ann:1 req lin:0 req mac:2 req win:-1 "
                         "step test:2 step co:0 step test:2 step up:-1 "
                         "chunk def@3.0 chunk gh@6.1 change Cy "
                         "build mac:1 prev 0");
    close_fx(&f);
}

typedef struct api_q {
    json_t *list, *one;
    uint8_t *msg;
    size_t len;
    int rc_one, rc_msg, rc_missing;
} api_q_t;

static int api_fn(tf_db_t *db, void *arg)
{
    api_q_t *q = arg;
    json_t *none = NULL;
    uint8_t *m = NULL;
    size_t n = 0;
    int rc = tf_store_mail_list(db, "http://h/", 0, "pending", 1, &q->list);
    q->rc_one = tf_store_mail_one(db, "http://h/", 2, &q->one);
    q->rc_msg = tf_store_mail_message(db, 1, &q->msg, &q->len);
    q->rc_missing = tf_store_mail_one(db, "http://h/", 9, &none) == TF_ENOENT &&
                    tf_store_mail_message(db, 2, &m, &n) == TF_ESTATE;
    return rc;
}

TF_TEST(api_json)
{
    fx_t f;
    api_q_t q = {0};
    open_fx(&f);
    sql(&f, "INSERT INTO mail_outbox(id, kind, ref_id, recipients, state, "
            "created_ms, next_attempt_ms, message) VALUES "
            "(1, 'job', 7, '[\"a@b.org\"]', 'pending', 1, 300, 'M'), "
            "(2, 'build', 8, '[]', 'pending', 1, 200, NULL), "
            "(3, 'job', 9, '[]', 'sent', 1, 1, NULL)");
    TF_CHECK_INT(tf_store_read_sync(f.store, api_fn, &q), 0);
    TF_CHECK_INT(json_integer_value(json_object_get(q.list, "pending")), 2);
    json_t *rows = json_object_get(q.list, "mail");
    TF_CHECK_INT(json_array_size(rows), 1);
    TF_CHECK_INT(json_integer_value(json_object_get(q.list, "next_before")),
                 2);
    TF_CHECK_INT(json_integer_value(
                     json_object_get(json_array_get(rows, 0), "build_id")),
                 8);
    TF_CHECK_INT(q.rc_one, 0);
    TF_CHECK_STR(json_string_value(json_object_get(q.one, "url")),
                 "http://h/api/v1/mail/2");
    TF_CHECK_STR(json_string_value(json_object_get(q.one, "about")),
                 "http://h/api/v1/builds/8");
    TF_CHECK_INT(q.rc_msg, 0);
    TF_CHECK(q.len == 1 && q.msg && q.msg[0] == 'M');
    TF_CHECK(q.rc_missing);
    json_decref(q.list);
    json_decref(q.one);
    free(q.msg);
    close_fx(&f);
}

TF_TEST_MAIN()
