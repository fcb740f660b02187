/*
 * test_store.c - unit tests of the sqlite store (master/store/store.c).
 *
 * Every test uses a real database file in its own mkdtemp directory and a
 * real uv loop, and ends by closing the store and checking that the loop
 * closes cleanly (no handle left behind). The failure paths use the
 * test-only hooks of store_internal.h: a tiny PRAGMA max_page_count makes
 * inserts fail with SQLITE_FULL, as a full disk would.
 *
 * The throughput test prints its measurements; TF_STORE_BENCH=N multiplies
 * its sizes (0 skips it, e.g. under valgrind).
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "store/db_impl.h"
#include <uv.h>

#include "store/store_sqlite.h"
#include "store/store_internal.h"
#include "store/store_schema.h"
#include "tf_err.h"
#include "tf_test.h"

/* ------------------------------------------------------------------ */
/* Fixture                                                             */
/* ------------------------------------------------------------------ */

typedef struct fx {
    uv_loop_t loop;
    char dir[256];
    char path[300];
} fx_t;

static void fx_setup(fx_t *f)
{
    const char *tmp = getenv("TMPDIR");

    snprintf(f->dir, sizeof(f->dir), "%s/tf-store-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir)) {
        perror("mkdtemp");
        exit(2);
    }
    snprintf(f->path, sizeof(f->path), "%s/tf.db", f->dir);
    if (uv_loop_init(&f->loop) != 0)
        exit(2);
}

static void fx_teardown(fx_t *f)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    char p[320];

    uv_run(&f->loop, UV_RUN_DEFAULT);
    TF_CHECK_INT(uv_loop_close(&f->loop), 0);
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", f->path, suffixes[i]);
        unlink(p);
    }
    rmdir(f->dir);
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until pred(arg) holds or timeout_ms pass. */
static bool run_until(uv_loop_t *loop, bool (*pred)(void *), void *arg,
                      unsigned timeout_ms)
{
    uv_timer_t t;
    uint64_t end = now_ms() + timeout_ms;
    bool ok;

    uv_timer_init(loop, &t);
    uv_timer_start(&t, tick_cb, 5, 5);
    while (!(ok = pred(arg)) && now_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

static void run_for(uv_loop_t *loop, unsigned ms)
{
    run_until(loop, never, NULL, ms);
}

static bool flag_set(void *arg)
{
    return *(bool *)arg;
}

/* Done callbacks: g_done counts them, checks they come in submission
 * order (arg is the index), and remembers what they saw. */
static struct {
    long n, ok, estore, other;
    long next;
    bool ordered;
    bool closed;      /* the store's close callback ran */
    bool after_close; /* a done callback ran after the close callback */
    int rcs[64];      /* rc of the first 64 indexes */
} g_done;

static void done_reset(void)
{
    memset(&g_done, 0, sizeof(g_done));
    g_done.ordered = true;
}

static void seq_cb(void *arg, int rc)
{
    long idx = (long)(intptr_t)arg;

    if (idx != g_done.next)
        g_done.ordered = false;
    g_done.next = idx + 1;
    g_done.n++;
    if (idx >= 0 && idx < 64)
        g_done.rcs[idx] = rc;
    if (rc == 0)
        g_done.ok++;
    else if (rc == TF_ESTORE)
        g_done.estore++;
    else
        g_done.other++;
    if (g_done.closed)
        g_done.after_close = true;
}

static long g_target;

static bool done_reached(void *arg)
{
    (void)arg;
    return g_done.n >= g_target;
}

static bool wait_done(uv_loop_t *loop, long n, unsigned timeout_ms)
{
    g_target = n;
    return run_until(loop, done_reached, NULL, timeout_ms);
}

/* A done callback that stores rc into an int (1 = not called yet). */
static void rc_cb(void *arg, int rc)
{
    *(int *)arg = rc;
}

static bool rc_set(void *arg)
{
    return *(int *)arg != 1;
}

static void closed_cb(void *arg)
{
    *(bool *)arg = true;
    g_done.closed = true;
}

static void store_close_wait(fx_t *f, tf_store_t *s)
{
    bool closed = false;

    tf_store_close(s, closed_cb, &closed);
    TF_CHECK(run_until(&f->loop, flag_set, &closed, 60000));
}

static tf_store_t *open_ok(fx_t *f, const tf_store_opts_t *opts)
{
    tf_store_t *s = NULL;
    int rc = tf_store_open(&f->loop, f->path, opts, &s);

    TF_CHECK_INT(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "tf_store_open: %s\n", tf_strerror(rc));
        exit(1);
    }
    return s;
}

/* ------------------------------------------------------------------ */
/* Read helpers                                                        */
/* ------------------------------------------------------------------ */

typedef struct q1 {
    const char *sql;
    long long v;
    char text[64];
} q1_t;

/* Runs q->sql and keeps the first column of the first row. */
static int q1_fn(tf_db_t *tdb, void *arg)
{
    sqlite3 *db = tf__db_lite(tdb);
    q1_t *q = arg;
    sqlite3_stmt *st = NULL;
    int rc = TF_ESTORE;

    if (sqlite3_prepare_v2(db, q->sql, -1, &st, NULL) != SQLITE_OK)
        goto out;
    if (sqlite3_step(st) != SQLITE_ROW)
        goto out;
    q->v = sqlite3_column_int64(st, 0);
    snprintf(q->text, sizeof(q->text), "%s",
             sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0)
                                        : "(null)");
    rc = 0;
out:
    sqlite3_finalize(st);
    return rc;
}

static long long read_int(tf_store_t *s, const char *sql)
{
    q1_t q = {.sql = sql, .v = -1};
    TF_CHECK_INT(tf_store_read_sync(s, q1_fn, &q), 0);
    return q.v;
}

/* Opens the file directly (a second process would see this) and counts. */
static long long direct_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;

    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* ------------------------------------------------------------------ */
/* Write helpers                                                       */
/* ------------------------------------------------------------------ */

static const char INSERT_EVENT[] =
    "INSERT INTO slave_events(slave, time_ms, event, detail) "
    "VALUES(?, ?, ?, ?)";
static const char INSERT_SLAVE[] = "INSERT INTO slaves(name) VALUES(?)";
static const char INSERT_CHUNK[] =
    "INSERT INTO log_chunks(build_id, step, offset, seq, stream, line, data) "
    "VALUES(?, ?, ?, ?, ?, ?, ?)";

static int write_event(tf_store_t *s, long i, const char *detail)
{
    tf_sqlval_t v[4] = {tf_sql_text("s1"), tf_sql_int(i), tf_sql_text("ev"),
                        tf_sql_text(detail)};
    return tf_store_write(s, INSERT_EVENT, v, 4, seq_cb, (void *)(intptr_t)i);
}

/* A write function that holds the writer until the test opens it, so the
 * ops queued meanwhile are all in the next batch. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool entered;
    bool open;
} gate_t;

static int gate_fn(sqlite3 *db, void *arg)
{
    gate_t *g = arg;

    (void)db;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cond);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

static void gate_hold(tf_store_t *s, gate_t *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->entered = g->open = false;
    TF_CHECK_INT(tf_store_write_fn(s, gate_fn, 0, NULL, g), 0);
    pthread_mutex_lock(&g->mu);
    while (!g->entered)
        pthread_cond_wait(&g->cond, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_release(gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mu);
}

static void gate_destroy(gate_t *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cond);
}

/* ------------------------------------------------------------------ */
/* Opening and migrations                                              */
/* ------------------------------------------------------------------ */

TF_TEST(migrations_create_every_table)
{
    static const char *const tables[] = {
        "build_requests", "builders", "builds",   "log_chunks",
        "slave_events",   "slaves",   "steps",    "users",
        "patches",        "try_jobs", "mail_outbox", "changes",
        "request_changes", "build_changes", "pollers", "scheduler_state",
        "stats",
    };
    fx_t f;
    fx_setup(&f);
    tf_store_t *s = open_ok(&f, NULL);

    TF_CHECK(tf_schema_count() >= 1);
    TF_CHECK_INT(tf_store_schema_version(s), tf_schema_count());
    TF_CHECK_INT(read_int(s, "PRAGMA user_version"), tf_schema_count());
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        char sql[128];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                 "AND name = '%s'",
                 tables[i]);
        q1_t q = {.sql = sql};
        TF_CHECK_INT(tf_store_read_sync(s, q1_fn, &q), 0);
        if (q.v != 1)
            fprintf(stderr, "missing table %s\n", tables[i]);
        TF_CHECK_INT(q.v, 1);
    }
    /* Columns added to existing tables (migration 10: a build's owner;
     * 11: stored cancels and a slave's draining flag). */
    static const char *const columns[][2] = {
        {"builds", "owner"},      {"builds", "cancel_requested"},
        {"try_jobs", "cancel_requested"}, {"slaves", "draining"},
    };
    for (size_t i = 0; i < sizeof(columns) / sizeof(columns[0]); i++) {
        char sql[160];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM pragma_table_info('%s') "
                 "WHERE name = '%s'",
                 columns[i][0], columns[i][1]);
        q1_t q = {.sql = sql};
        TF_CHECK_INT(tf_store_read_sync(s, q1_fn, &q), 0);
        if (q.v != 1)
            fprintf(stderr, "missing column %s.%s\n", columns[i][0],
                    columns[i][1]);
        TF_CHECK_INT(q.v, 1);
    }
    q1_t mode = {.sql = "PRAGMA journal_mode"};
    TF_CHECK_INT(tf_store_read_sync(s, q1_fn, &mode), 0);
    TF_CHECK_STR(mode.text, "wal");

    tf_store_health_t h;
    tf_store_health(s, &h);
    TF_CHECK_INT(h.queued_ops, 0);
    TF_CHECK_INT(h.failing_for_ms, 0);
    TF_CHECK_STR(h.last_error, "");
    TF_CHECK(!h.congested);
    store_close_wait(&f, s);
    fx_teardown(&f);
}

TF_TEST(reopen_is_a_noop)
{
    fx_t f;
    fx_setup(&f);
    done_reset();
    tf_store_t *s = open_ok(&f, NULL);
    TF_CHECK_INT(write_event(s, 0, "kept"), 0);
    TF_CHECK(wait_done(&f.loop, 1, 10000));
    store_close_wait(&f, s);

    for (int round = 0; round < 2; round++) {
        s = open_ok(&f, NULL);
        TF_CHECK_INT(tf_store_schema_version(s), tf_schema_count());
        TF_CHECK_INT(read_int(s, "PRAGMA user_version"), tf_schema_count());
        TF_CHECK_INT(read_int(s, "SELECT count(*) FROM slave_events"), 1);
        /* 17 tables, and test_results since migration 6. */
        TF_CHECK_INT(read_int(s, "SELECT count(*) FROM sqlite_master "
                                 "WHERE type = 'table'"),
                     20); /* 17, test_results since version 7,
                          * log_blocks since version 8, farm since 9
                          * (10 and 11 add columns only) */
        store_close_wait(&f, s);
    }
    fx_teardown(&f);
}

TF_TEST(newer_schema_is_refused)
{
    fx_t f;
    fx_setup(&f);
    sqlite3 *db = NULL;
    char sql[64];

    TF_CHECK_INT(sqlite3_open(f.path, &db), SQLITE_OK);
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %zu",
             tf_schema_count() + 1);
    TF_CHECK_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    tf_store_t *s = NULL;
    TF_CHECK_INT(tf_store_open(&f.loop, f.path, NULL, &s), TF_EVERSION);
    TF_CHECK(s == NULL);
    /* Untouched: same version, still in its old journal mode. */
    TF_CHECK_INT(direct_int(f.path, "PRAGMA user_version"),
                 tf_schema_count() + 1);
    sqlite3 *db2 = NULL;
    sqlite3_stmt *st = NULL;
    sqlite3_open_v2(f.path, &db2, SQLITE_OPEN_READONLY, NULL);
    sqlite3_prepare_v2(db2, "PRAGMA journal_mode", -1, &st, NULL);
    TF_CHECK_INT(sqlite3_step(st), SQLITE_ROW);
    TF_CHECK_STR((const char *)sqlite3_column_text(st, 0), "delete");
    sqlite3_finalize(st);
    sqlite3_close(db2);
    fx_teardown(&f);
}

/* Runs the EXPLAIN QUERY PLAN in q->sql and keeps its first row's
 * detail (the plan of a one-table query) in q->text. */
static int plan_fn(tf_db_t *tdb, void *arg)
{
    sqlite3 *db = tf__db_lite(tdb);
    q1_t *q = arg;
    sqlite3_stmt *st = NULL;
    int rc = TF_ESTORE;

    if (sqlite3_prepare_v2(db, q->sql, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW || sqlite3_column_count(st) < 4)
        goto out;
    snprintf(q->text, sizeof(q->text), "%s",
             sqlite3_column_text(st, 3) ? (const char *)sqlite3_column_text(st, 3)
                                        : "(null)");
    rc = 0;
out:
    sqlite3_finalize(st);
    return rc;
}

/* A database at schema version 11 (builds_by_builder still there, two
 * builds of one builder) opens at the current version: the duplicate
 * index is gone (migration 12), the rows are as they were, and a build
 * is still found by (builder, number) through the UNIQUE index. */
TF_TEST(version_11_loses_the_duplicate_builds_index)
{
    fx_t f;
    fx_setup(&f);
    sqlite3 *db = NULL;

    TF_CHECK_INT(sqlite3_open(f.path, &db), SQLITE_OK);
    for (size_t v = 1; v <= 11; v++)
        TF_CHECK_INT(sqlite3_exec(db, tf_schema_migration(v), NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    TF_CHECK_INT(sqlite3_exec(db,
                              "PRAGMA user_version = 11;"
                              "INSERT INTO builders(name, builds_total, "
                              "last_build_id) VALUES('b1', 2, 8);"
                              "INSERT INTO builds(id, builder, number, "
                              "request_id, slave, state, created_ms, nsteps, "
                              "properties) VALUES"
                              "(7, 'b1', 1, 1, 's1', 'finished', 10, 1, "
                              "'{\"k\":1}'),"
                              "(8, 'b1', 2, 2, 's1', 'running', 20, 1, '{}');",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(db);
    TF_CHECK_INT(direct_int(f.path, "SELECT count(*) FROM sqlite_master "
                                    "WHERE name = 'builds_by_builder'"),
                 1);

    tf_store_t *s = open_ok(&f, NULL);
    TF_CHECK(tf_schema_count() >= 12);
    TF_CHECK_INT(tf_store_schema_version(s), tf_schema_count());
    TF_CHECK_INT(read_int(s, "SELECT count(*) FROM sqlite_master "
                             "WHERE name = 'builds_by_builder'"),
                 0);
    /* The other indexes of builds are all still there. */
    TF_CHECK_INT(read_int(s, "SELECT count(*) FROM sqlite_master WHERE "
                             "type = 'index' AND tbl_name = 'builds'"),
                 9);
    TF_CHECK_INT(read_int(s, "SELECT count(*) FROM builds"), 2);
    TF_CHECK_INT(read_int(s, "SELECT id FROM builds WHERE builder = 'b1' "
                             "AND number = 2"),
                 8);
    TF_CHECK_INT(read_int(s, "SELECT created_ms FROM builds WHERE id = 7"),
                 10);
    TF_CHECK_INT(read_int(s, "SELECT json_extract(properties, '$.k') FROM "
                             "builds WHERE id = 7"),
                 1);
    TF_CHECK_INT(read_int(s, "SELECT last_build_id FROM builders"), 8);
    /* The lookup by (builder, number) takes the UNIQUE index. */
    q1_t plan = {.sql = "EXPLAIN QUERY PLAN SELECT id FROM builds "
                        "WHERE builder = 'b1' AND number = 2"};
    TF_CHECK_INT(tf_store_read_sync(s, plan_fn, &plan), 0);
    TF_CHECK(strstr(plan.text, "sqlite_autoindex_builds_1") != NULL);
    store_close_wait(&f, s);
    fx_teardown(&f);
}

/* A database at schema version 12 opens at the current version with
 * builds_logs_kept holding finished builds with logs only (migration 13):
 * a build enters it when it finishes, not when its row is made, and the
 * retention's walk still takes it. */
TF_TEST(version_12_keeps_finished_builds_in_the_logs_index)
{
    fx_t f;
    fx_setup(&f);
    sqlite3 *db = NULL;

    TF_CHECK_INT(sqlite3_open(f.path, &db), SQLITE_OK);
    for (size_t v = 1; v <= 12; v++)
        TF_CHECK_INT(sqlite3_exec(db, tf_schema_migration(v), NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    TF_CHECK_INT(sqlite3_exec(db,
                              "PRAGMA user_version = 12;"
                              "INSERT INTO builds(id, builder, number, "
                              "request_id, slave, state, created_ms, "
                              "logs_removed_ms) VALUES"
                              "(1, 'b1', 1, 1, 's1', 'finished', 10, 99),"
                              "(2, 'b1', 2, 2, 's1', 'finished', 20, NULL),"
                              "(3, 'b1', 3, 3, 's1', 'running', 30, NULL);",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(db);
    /* Version 12's index holds the running build too. */
    TF_CHECK_INT(direct_int(f.path, "SELECT count(*) FROM builds INDEXED BY "
                                    "builds_logs_kept WHERE builder = 'b1' "
                                    "AND logs_removed_ms IS NULL"),
                 2);

    tf_store_t *s = open_ok(&f, NULL);
    TF_CHECK(tf_schema_count() >= 13);
    TF_CHECK_INT(tf_store_schema_version(s), tf_schema_count());
    TF_CHECK_INT(read_int(s, "SELECT count(*) FROM builds INDEXED BY "
                             "builds_logs_kept WHERE builder = 'b1' AND "
                             "logs_removed_ms IS NULL AND state = "
                             "'finished'"),
                 1);
    TF_CHECK_INT(read_int(s, "SELECT id FROM builds INDEXED BY "
                             "builds_logs_kept WHERE builder = 'b1' AND "
                             "logs_removed_ms IS NULL AND state = "
                             "'finished'"),
                 2);
    /* The retention's walks take it. */
    q1_t plan = {.sql = "EXPLAIN QUERY PLAN SELECT id FROM builds WHERE "
                        "builder = 'b1' AND logs_removed_ms IS NULL AND "
                        "state = 'finished' AND finished_ms < 5 ORDER BY "
                        "number LIMIT 1"};
    TF_CHECK_INT(tf_store_read_sync(s, plan_fn, &plan), 0);
    TF_CHECK(strstr(plan.text, "builds_logs_kept") != NULL);
    q1_t plan2 = {.sql = "EXPLAIN QUERY PLAN SELECT DISTINCT builder FROM "
                         "builds WHERE logs_removed_ms IS NULL AND state = "
                         "'finished' AND builder > '' ORDER BY builder "
                         "LIMIT 1"};
    TF_CHECK_INT(tf_store_read_sync(s, plan_fn, &plan2), 0);
    TF_CHECK(strstr(plan2.text, "builds_logs_kept") != NULL);
    store_close_wait(&f, s);

    /* The running build enters the index when it finishes. */
    TF_CHECK_INT(sqlite3_open(f.path, &db), SQLITE_OK);
    TF_CHECK_INT(sqlite3_exec(db, "UPDATE builds SET state = 'finished' "
                                  "WHERE id = 3", NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(db);
    TF_CHECK_INT(direct_int(f.path, "SELECT count(*) FROM builds INDEXED BY "
                                    "builds_logs_kept WHERE builder = 'b1' "
                                    "AND logs_removed_ms IS NULL AND state = "
                                    "'finished'"),
                 2);
    fx_teardown(&f);
}

TF_TEST(garbage_file_is_refused)
{
    fx_t f;
    fx_setup(&f);
    FILE *fp = fopen(f.path, "w");
    for (int i = 0; i < 200; i++)
        fputs("this is not a database ", fp);
    fclose(fp);
    tf_store_t *s = NULL;
    TF_CHECK_INT(tf_store_open(&f.loop, f.path, NULL, &s), TF_ESTORE);
    TF_CHECK(s == NULL);

    char bad[400];
    snprintf(bad, sizeof(bad), "%s/no/such/dir/tf.db", f.dir);
    TF_CHECK_INT(tf_store_open(&f.loop, bad, NULL, &s), TF_ESTORE);
    TF_CHECK_INT(tf_store_open(&f.loop, NULL, NULL, &s), TF_EINVAL);
    fx_teardown(&f);
}

/* ------------------------------------------------------------------ */
/* Writes and reads                                                    */
/* ------------------------------------------------------------------ */

typedef struct readres {
    long long count;
    int done_rc;
    bool done;
    bool on_loop;
} readres_t;

static pthread_t g_loop_thread;

static int count_events_fn(tf_db_t *tdb, void *arg)
{
    q1_t q = {.sql = "SELECT count(*) FROM slave_events"};
    int rc = q1_fn(tdb, &q);
    ((readres_t *)arg)->count = q.v;
    return rc == 0 ? 42 : rc; /* the done callback sees fn's value */
}

static void read_done_cb(void *arg, int rc)
{
    readres_t *r = arg;
    r->done = true;
    r->done_rc = rc;
    r->on_loop = pthread_equal(pthread_self(), g_loop_thread);
}

static bool read_finished(void *arg)
{
    return ((readres_t *)arg)->done;
}

TF_TEST(writes_commit_in_order_and_are_readable)
{
    fx_t f;
    fx_setup(&f);
    done_reset();
    g_loop_thread = pthread_self();
    tf_store_t *s = open_ok(&f, NULL);
    const long n = 2000;

    for (long i = 0; i < n; i++)
        TF_CHECK_INT(write_event(s, i, i % 2 ? "odd" : NULL), 0);
    TF_CHECK(wait_done(&f.loop, n, 30000));
    TF_CHECK_INT(g_done.ok, n);
    TF_CHECK(g_done.ordered);

    readres_t r = {0};
    TF_CHECK_INT(tf_store_read(s, count_events_fn, read_done_cb, &r), 0);
    TF_CHECK(run_until(&f.loop, read_finished, &r, 10000));
    TF_CHECK_INT(r.done_rc, 42);
    TF_CHECK_INT(r.count, n);
    TF_CHECK(r.on_loop);
    TF_CHECK_INT(read_int(s, "SELECT count(*) FROM slave_events"), n);
    TF_CHECK_INT(read_int(s, "SELECT count(*) FROM slave_events "
                             "WHERE detail IS NULL"),
                 n / 2);
    TF_CHECK_INT(read_int(s, "SELECT sum(time_ms) FROM slave_events"),
                 n * (n - 1) / 2);
    /* Visible to another process too: it is committed. */
    TF_CHECK_INT(direct_int(f.path, "SELECT count(*) FROM slave_events"), n);

    tf_store_health_t h;
    tf_store_health(s, &h);
    TF_CHECK_INT(h.ops, n);
    TF_CHECK(h.batches >= 1 && h.batches <= (uint64_t)n);
    TF_CHECK_INT(h.queued_ops, 0);
    TF_CHECK_INT(h.queued_bytes, 0);
    store_close_wait(&f, s);
    fx_teardown(&f);
}

typedef struct vals_check {
    int types[8];
    long long i;
    char text[32];
    unsigned char blob[8];
    int blob_len;
    int empty_len;
    unsigned char owned[4];
    int bind_rc;
} vals_check_t;

static const char *const CREATE_T =
    "CREATE TABLE IF NOT EXISTS t(a, b, c, d, e, f, g)";

static int create_t_fn(sqlite3 *db, void *arg)
{
    (void)arg;
    return sqlite3_exec(db, CREATE_T, NULL, NULL, NULL) == SQLITE_OK
               ? 0
               : TF_ESTORE;
}

static int check_vals_fn(tf_db_t *tdb, void *arg)
{
    sqlite3 *db = tf__db_lite(tdb);
    vals_check_t *c = arg;
    sqlite3_stmt *st = NULL;
    int rc = TF_ESTORE;

    if (sqlite3_prepare_v2(db, "SELECT a, b, c, d, e, f, g FROM t", -1, &st,
                           NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW)
        goto out;
    for (int i = 0; i < 7; i++)
        c->types[i] = sqlite3_column_type(st, i);
    c->i = sqlite3_column_int64(st, 0);
    snprintf(c->text, sizeof(c->text), "%s", sqlite3_column_text(st, 1));
    c->blob_len = sqlite3_column_bytes(st, 3);
    if (c->blob_len == (int)sizeof(c->blob))
        memcpy(c->blob, sqlite3_column_blob(st, 3), sizeof(c->blob));
    c->empty_len = sqlite3_column_bytes(st, 4);
    if (sqlite3_column_bytes(st, 5) == 4)
        memcpy(c->owned, sqlite3_column_blob(st, 5), 4);
    sqlite3_finalize(st);
    st = NULL;

    /* tf_store_bind: the values go away right after binding. */
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM t WHERE a = ? AND b = ?",
                           -1, &st, NULL) != SQLITE_OK)
        goto out;
    {
        char name[8] = "h\xc3\xa9llo";
        tf_sqlval_t v[2] = {tf_sql_int(-7), tf_sql_text(name)};
        c->bind_rc = tf_store_bind(st, v, 2);
        memset(name, 'x', sizeof(name) - 1);
    }
    if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_int(st, 0) != 1)
        goto out;
    sqlite3_reset(st);
    {
        tf_sqlval_t v3[3] = {tf_sql_int(1), tf_sql_int(2), tf_sql_int(3)};
        if (tf_store_bind(st, v3, 3) != TF_EINVAL)
            goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    return rc;
}

TF_TEST(values_round_trip)
{
    static const char INSERT_T[] =
        "INSERT INTO t(a, b, c, d, e, f, g) VALUES(?, ?, ?, ?, ?, ?, ?)";
    fx_t f;
    fx_setup(&f);
    tf_store_t *s = open_ok(&f, NULL);
    int rc1 = 1, rc2 = 1;
    unsigned char bin[8] = {0, 1, 2, 0xff, 0, 'a', '\n', 0};
    unsigned char *owned = malloc(4);
    char text[16] = "h\xc3\xa9llo";

    memcpy(owned, "\x00\x10\x20\x30", 4);
    TF_CHECK_INT(tf_store_write_fn(s, create_t_fn, 0, rc_cb, &rc1), 0);
    tf_sqlval_t v[7] = {
        tf_sql_int(-7),          tf_sql_text(text), tf_sql_null(),
        tf_sql_blob(bin, 8),     tf_sql_blob(NULL, 0),
        tf_sql_blob_owned(owned, 4), tf_sql_text(NULL),
    };
    TF_CHECK_INT(tf_store_write(s, INSERT_T, v, 7, rc_cb, &rc2), 0);
    /* Copied at submit time: scribbling now changes nothing. */
    memset(bin, 0xee, sizeof(bin));
    memset(text, 'x', sizeof(text) - 1);
    TF_CHECK(run_until(&f.loop, rc_set, &rc2, 10000));
    TF_CHECK_INT(rc1, 0);
    TF_CHECK_INT(rc2, 0);

    vals_check_t c;
    memset(&c, 0, sizeof(c));
    TF_CHECK_INT(tf_store_read_sync(s, check_vals_fn, &c), 0);
    TF_CHECK_INT(c.types[0], SQLITE_INTEGER);
    TF_CHECK_INT(c.types[1], SQLITE_TEXT);
    TF_CHECK_INT(c.types[2], SQLITE_NULL);
    TF_CHECK_INT(c.types[3], SQLITE_BLOB);
    TF_CHECK_INT(c.types[4], SQLITE_BLOB); /* empty, not NULL */
    TF_CHECK_INT(c.types[5], SQLITE_BLOB);
    TF_CHECK_INT(c.types[6], SQLITE_NULL); /* tf_sql_text(NULL) */
    TF_CHECK_INT(c.i, -7);
    TF_CHECK_STR(c.text, "h\xc3\xa9llo");
    TF_CHECK_INT(c.blob_len, 8);
    TF_CHECK(memcmp(c.blob, "\x00\x01\x02\xff\x00\x61\n\x00", 8) == 0);
    TF_CHECK_INT(c.empty_len, 0);
    TF_CHECK(memcmp(c.owned, "\x00\x10\x20\x30", 4) == 0);
    TF_CHECK_INT(c.bind_rc, 0);

    /* Invalid arguments queue nothing and still free owned blobs. */
    tf_sqlval_t bad[1] = {tf_sql_blob(NULL, 3)};
    TF_CHECK_INT(tf_store_write(s, INSERT_SLAVE, bad, 1, NULL, NULL),
                 TF_EINVAL);
    tf_sqlval_t own[1] = {tf_sql_blob_owned(malloc(10), 10)};
    TF_CHECK_INT(tf_store_write(s, NULL, own, 1, NULL, NULL), TF_EINVAL);
    TF_CHECK_INT(tf_store_write_fn(s, NULL, 0, NULL, NULL), TF_EINVAL);
    store_close_wait(&f, s);
    fx_teardown(&f);
}

/* ------------------------------------------------------------------ */
/* Failures of one op                                                  */
/* ------------------------------------------------------------------ */

/* The argument of the fn ops below: cb and fn share it. */
typedef struct fn_arg {
    long idx;
    const char *name;
} fn_arg_t;

static void fn_done_cb(void *arg, int rc)
{
    seq_cb((void *)(intptr_t)((fn_arg_t *)arg)->idx, rc);
}

static int insert_slave_fn(sqlite3 *db, void *arg)
{
    fn_arg_t *a = arg;
    sqlite3_stmt *st = NULL;
    int rc = TF_ESTORE;

    if (sqlite3_prepare_v2(db, "INSERT INTO slaves(name) VALUES(?)", -1, &st,
                           NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_text(st, 1, a->name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_DONE)
        rc = 0;
    sqlite3_finalize(st);
    return rc;
}

static int insert_then_fail_fn(sqlite3 *db, void *arg)
{
    (void)arg;
    if (sqlite3_exec(db, "INSERT INTO slaves(name) VALUES('fn-undone')", NULL,
                     NULL, NULL) != SQLITE_OK)
        return TF_ESTORE;
    return TF_ENOENT; /* its own reason: the insert must be undone */
}

TF_TEST(an_op_fails_alone_and_its_batch_commits)
{
    static const char BAD_SQL[] = "INSERT INTO no_such_table VALUES(?)";
    static const char TWO_STMTS[] =
        "INSERT INTO slaves(name) VALUES('x1'); DELETE FROM slaves";
    static const char OR_ROLLBACK[] =
        "INSERT OR ROLLBACK INTO slaves(name) VALUES(?)";
    static const char RETURNING[] =
        "INSERT INTO slaves(name) VALUES(?) RETURNING name";
    fx_t f;
    fx_setup(&f);
    done_reset();
    tf_store_t *s = open_ok(&f, NULL);
    tf_store_health_t h0, h1;
    gate_t g;
    long i = 0;
    int expect[16];

    tf_store_health(s, &h0);
    gate_hold(s, &g);

#define W(sql, nv, ...)                                                        \
    do {                                                                       \
        tf_sqlval_t v_[] = {__VA_ARGS__};                                      \
        TF_CHECK_INT(tf_store_write(s, sql, v_, nv, seq_cb,                    \
                                    (void *)(intptr_t)i),                      \
                     0);                                                       \
    } while (0)

    expect[i] = 0;          W(INSERT_SLAVE, 1, tf_sql_text("a")); i++;
    expect[i] = TF_ESTORE;  W(INSERT_SLAVE, 1, tf_sql_text("a")); i++;
    expect[i] = 0;          W(INSERT_SLAVE, 1, tf_sql_text("b")); i++;
    expect[i] = TF_ESTORE;  W(BAD_SQL, 1, tf_sql_int(1)); i++;
    expect[i] = TF_ESTORE;  W(INSERT_SLAVE, 0, tf_sql_null()); i++;
    expect[i] = TF_ESTORE;  W(INSERT_SLAVE, 2, tf_sql_text("c"), tf_sql_int(1)); i++;
    expect[i] = TF_ESTORE;  W(TWO_STMTS, 0, tf_sql_null()); i++;
    expect[i] = 0;          W(RETURNING, 1, tf_sql_text("d")); i++;
    /* Rolls back the whole transaction by itself: left out, the rest
     * is redone. */
    expect[i] = TF_ESTORE;  W(OR_ROLLBACK, 1, tf_sql_text("a")); i++;
    expect[i] = 0;          W(INSERT_SLAVE, 1, tf_sql_text("e")); i++;
#undef W
    fn_arg_t fa1 = {.idx = i, .name = "fn-kept"};
    TF_CHECK_INT(tf_store_write_fn(s, insert_slave_fn, 16, fn_done_cb, &fa1),
                 0);
    expect[i++] = 0;
    fn_arg_t fa2 = {.idx = i, .name = "a"}; /* a duplicate: fails alone */
    TF_CHECK_INT(tf_store_write_fn(s, insert_slave_fn, 16, fn_done_cb, &fa2),
                 0);
    expect[i++] = TF_ESTORE;
    fn_arg_t fa3 = {.idx = i};
    TF_CHECK_INT(tf_store_write_fn(s, insert_then_fail_fn, 16, fn_done_cb,
                                   &fa3),
                 0);
    expect[i++] = TF_ESTORE;

    gate_release(&g);
    TF_CHECK(wait_done(&f.loop, i, 10000));
    TF_CHECK(g_done.ordered);
    TF_CHECK_INT(g_done.n, i);
    for (long k = 0; k < i; k++) {
        if (g_done.rcs[k] != expect[k])
            fprintf(stderr, "op %ld: rc %d, expected %d\n", k, g_done.rcs[k],
                    expect[k]);
        TF_CHECK_INT(g_done.rcs[k], expect[k]);
    }
    TF_CHECK_INT(read_int(s, "SELECT count(*) FROM slaves WHERE name IN "
                             "('a','b','d','e','fn-kept')"),
                 5);
    TF_CHECK_INT(read_int(s, "SELECT count(*) FROM slaves"), 5);
    tf_store_health(s, &h1);
    /* The gate's batch and the one holding everything else. */
    TF_CHECK_INT(h1.batches - h0.batches, 2);
    TF_CHECK_STR(h1.last_error, "");
    store_close_wait(&f, s);
    gate_destroy(&g);
    fx_teardown(&f);
}

/* ------------------------------------------------------------------ */
/* Batching, congestion, caps                                          */
/* ------------------------------------------------------------------ */

TF_TEST(many_small_writes_share_few_transactions)
{
    fx_t f;
    fx_setup(&f);
    done_reset();
    tf_store_t *s = open_ok(&f, NULL);
    tf_store_health_t h0, h1;
    const long n = 100000;
    gate_t g;

    /* Held writer: everything queued meanwhile goes in batches of the
     * maximum size (10000 ops). */
    tf_store_health(s, &h0);
    gate_hold(s, &g);
    for (long i = 0; i < n; i++)
        if (write_event(s, i, "x") != 0) {
            TF_CHECK(!"write refused");
            break;
        }
    tf_store_health(s, &h1);
    TF_CHECK_INT(h1.queued_ops, n + 1);
    gate_release(&g);
    TF_CHECK(wait_done(&f.loop, n, 60000));
    TF_CHECK(g_done.ordered);
    TF_CHECK_INT(g_done.ok, n);
    tf_store_health(s, &h1);
    TF_CHECK_INT(h1.batches - h0.batches, 1 + n / 10000);
    TF_CHECK_INT(h1.ops - h0.ops, n + 1);

    /* Free-running writer: still far fewer transactions than ops. */
    done_reset();
    tf_store_health(s, &h0);
    for (long i = 0; i < n; i++)
        TF_CHECK_INT(write_event(s, i, "y") == 0, 1);
    TF_CHECK(wait_done(&f.loop, n, 60000));
    TF_CHECK_INT(g_done.ok, n);
    tf_store_health(s, &h1);
    printf("  free-running: %" PRIu64 " ops in %" PRIu64 " transactions\n",
           h1.ops - h0.ops, h1.batches - h0.batches);
    TF_CHECK((h1.batches - h0.batches) * 20 < h1.ops - h0.ops);
    TF_CHECK_INT(read_int(s, "SELECT count(*) FROM slave_events"), 2 * n);
    store_close_wait(&f, s);
    gate_destroy(&g);
    fx_teardown(&f);
}

static struct {
    int n;
    bool seq[8];
    bool on_loop;
} g_cong;

static void congestion_cb(void *arg, bool congested)
{
    (void)arg;
    if (g_cong.n < 8)
        g_cong.seq[g_cong.n] = congested;
    g_cong.n++;
    if (!pthread_equal(pthread_self(), g_loop_thread))
        g_cong.on_loop = false;
}

TF_TEST(congestion_and_hard_cap)
{
    static const char INSERT_BLOB[] =
        "INSERT INTO log_chunks(build_id, step, offset, seq, stream, line, "
        "data) VALUES(1, 0, ?, 0, 1, 0, ?)";
    fx_t f;
    fx_setup(&f);
    done_reset();
    memset(&g_cong, 0, sizeof(g_cong));
    g_cong.on_loop = true;
    g_loop_thread = pthread_self();
    tf_store_opts_t o = {
        .queue_soft_bytes = 64 * 1024,
        .queue_hard_bytes = 256 * 1024,
        .congestion_cb = congestion_cb,
    };
    tf_store_t *s = open_ok(&f, &o);
    static unsigned char chunk[1024];
    tf_store_health_t h;
    long n = 0;
    int rc;

    /* Bytes stay counted until the loop frees the ops, so without running
     * the loop the queue fills up whatever the writer does. */
    for (;;) {
        tf_sqlval_t v[2] = {tf_sql_int(n * 1024),
                            tf_sql_blob(chunk, sizeof(chunk))};
        rc = tf_store_write(s, INSERT_BLOB, v, 2, seq_cb, (void *)(intptr_t)n);
        if (rc != 0)
            break;
        n++;
        if (n > 10000)
            break;
    }
    TF_CHECK_INT(rc, TF_EFULL);
    TF_CHECK(n > 100 && n < 256);
    tf_store_health(s, &h);
    TF_CHECK(h.congested);
    TF_CHECK_INT(h.queued_ops, n);
    TF_CHECK(h.queued_bytes <= 256 * 1024);
    TF_CHECK(h.queued_bytes > 256 * 1024 - 2048);
    TF_CHECK_INT(g_cong.n, 0); /* reported on the loop thread, later */

    /* Past the cap an owned blob is still taken (and freed: ASan and
     * valgrind would see a leak), and so is an fn op's cost. */
    tf_sqlval_t own[2] = {tf_sql_int(-1), tf_sql_blob_owned(malloc(4096), 4096)};
    TF_CHECK_INT(tf_store_write(s, INSERT_BLOB, own, 2, seq_cb, NULL),
                 TF_EFULL);
    TF_CHECK_INT(tf_store_write_fn(s, create_t_fn, 300 * 1024, NULL, NULL),
                 TF_EFULL);
    tf_store_health(s, &h);
    TF_CHECK_INT(h.queued_ops, n);

    TF_CHECK(wait_done(&f.loop, n, 20000));
    TF_CHECK(g_done.ordered);
    TF_CHECK_INT(g_done.ok, n);
    TF_CHECK_INT(g_cong.n, 2);
    TF_CHECK(g_cong.seq[0] == true);
    TF_CHECK(g_cong.seq[1] == false);
    TF_CHECK(g_cong.on_loop);
    tf_store_health(s, &h);
    TF_CHECK(!h.congested);
    TF_CHECK_INT(h.queued_ops, 0);
    TF_CHECK_INT(h.queued_bytes, 0);

    /* Room again. */
    tf_sqlval_t v[2] = {tf_sql_int(-2), tf_sql_blob(chunk, 10)};
    TF_CHECK_INT(tf_store_write(s, INSERT_BLOB, v, 2, NULL, NULL), 0);
    /* An op bigger than the hard cap can never be queued. */
    TF_CHECK_INT(tf_store_write_fn(s, create_t_fn, 1 << 20, NULL, NULL),
                 TF_EFULL);
    store_close_wait(&f, s);
    TF_CHECK_INT(direct_int(f.path, "SELECT count(*) FROM log_chunks"), n + 1);
    TF_CHECK_INT(g_cong.n, 2);
    fx_teardown(&f);
}

/* ------------------------------------------------------------------ */
/* The read pool                                                       */
/* ------------------------------------------------------------------ */

static int g_reads_active, g_reads_max;
static pthread_mutex_t g_reads_mu = PTHREAD_MUTEX_INITIALIZER;

static int slow_read_fn(tf_db_t *db, void *arg)
{
    pthread_mutex_lock(&g_reads_mu);
    if (++g_reads_active > g_reads_max)
        g_reads_max = g_reads_active;
    pthread_mutex_unlock(&g_reads_mu);
    usleep(20000);
    int rc = count_events_fn(db, arg);
    pthread_mutex_lock(&g_reads_mu);
    g_reads_active--;
    pthread_mutex_unlock(&g_reads_mu);
    return rc;
}

static int write_in_read_fn(tf_db_t *tdb, void *arg)
{
    sqlite3 *db = tf__db_lite(tdb);
    (void)arg;
    int src = sqlite3_exec(db, "INSERT INTO slaves(name) VALUES('r')", NULL,
                           NULL, NULL);
    return src == SQLITE_OK ? 0 : -(src & 0xff);
}

static int leak_stmt_fn(tf_db_t *tdb, void *arg)
{
    sqlite3 *db = tf__db_lite(tdb);
    sqlite3_stmt *st = NULL;
    (void)arg;
    /* Left mid-step and not finalized: the pool cleans up after it. */
    sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master", -1, &st, NULL);
    sqlite3_step(st);
    return 7;
}

static bool all_reads_done(void *arg)
{
    readres_t *r = arg;
    for (int i = 0; i < 8; i++)
        if (!r[i].done)
            return false;
    return true;
}

TF_TEST(read_pool_is_shared_and_read_only)
{
    fx_t f;
    fx_setup(&f);
    done_reset();
    g_loop_thread = pthread_self();
    tf_store_opts_t o = {.readers = 2};
    tf_store_t *s = open_ok(&f, &o);
    readres_t r[8];

    for (long i = 0; i < 10; i++)
        TF_CHECK_INT(write_event(s, i, NULL), 0);
    TF_CHECK(wait_done(&f.loop, 10, 10000));

    memset(r, 0, sizeof(r));
    g_reads_max = 0;
    for (int i = 0; i < 8; i++)
        TF_CHECK_INT(tf_store_read(s, slow_read_fn, read_done_cb, &r[i]), 0);
    TF_CHECK(run_until(&f.loop, all_reads_done, r, 20000));
    for (int i = 0; i < 8; i++) {
        TF_CHECK_INT(r[i].done_rc, 42);
        TF_CHECK_INT(r[i].count, 10);
        TF_CHECK(r[i].on_loop);
    }
    TF_CHECK(g_reads_max >= 1 && g_reads_max <= 2);

    TF_CHECK_INT(tf_store_read_sync(s, write_in_read_fn, NULL),
                 -SQLITE_READONLY);
    TF_CHECK_INT(tf_store_read_sync(s, leak_stmt_fn, NULL), 7);
    TF_CHECK_INT(read_int(s, "SELECT count(*) FROM slaves"), 0);

    /* A read queued before close finishes before the store goes away;
     * one asked for after close is refused. */
    readres_t last = {0};
    bool closed = false;
    TF_CHECK_INT(tf_store_read(s, slow_read_fn, read_done_cb, &last), 0);
    tf_store_close(s, closed_cb, &closed);
    readres_t refused = {0};
    TF_CHECK_INT(tf_store_read(s, slow_read_fn, read_done_cb, &refused),
                 TF_ESTATE);
    TF_CHECK_INT(write_event(s, 99, NULL), TF_ESTATE);
    TF_CHECK(run_until(&f.loop, flag_set, &closed, 10000));
    TF_CHECK(last.done);
    TF_CHECK_INT(last.done_rc, 42);
    TF_CHECK(!refused.done);
    fx_teardown(&f);
}

/* ------------------------------------------------------------------ */
/* Closing                                                             */
/* ------------------------------------------------------------------ */

TF_TEST(close_drains_pending_writes)
{
    fx_t f;
    fx_setup(&f);
    done_reset();
    tf_store_t *s = open_ok(&f, NULL);
    const long n = 20000;
    bool closed = false;

    for (long i = 0; i < n; i++)
        TF_CHECK_INT(write_event(s, i, "drain"), 0);
    tf_store_close(s, closed_cb, &closed);
    TF_CHECK(run_until(&f.loop, flag_set, &closed, 30000));
    TF_CHECK_INT(g_done.n, n);
    TF_CHECK_INT(g_done.ok, n);
    TF_CHECK(g_done.ordered);
    TF_CHECK(!g_done.after_close);
    TF_CHECK_INT(direct_int(f.path, "SELECT count(*) FROM slave_events"), n);

    s = open_ok(&f, NULL);
    TF_CHECK_INT(read_int(s, "SELECT count(*) FROM slave_events"), n);
    store_close_wait(&f, s);
    fx_teardown(&f);
}

/* tf_store_deliver runs the done callbacks of committed groups at once,
 * without the loop: the link layer calls it between slave messages. */
static void deliver_nested_cb(void *arg, int rc)
{
    tf_store_t *s = arg;
    long before = g_done.n;

    seq_cb((void *)(intptr_t)g_done.next, rc);
    /* From inside a callback it does nothing: no callback runs twice or
     * out of order. */
    tf_store_deliver(s);
    if (g_done.n != before + 1)
        g_done.ordered = false;
}

TF_TEST(deliver_runs_committed_callbacks_without_the_loop)
{
    fx_t f;
    fx_setup(&f);
    done_reset();
    tf_store_t *s = open_ok(&f, NULL);
    const long n = 50;
    bool closed = false;

    /* Nothing committed yet: nothing runs. */
    tf_store_deliver(s);
    TF_CHECK_INT(g_done.n, 0);
    for (long i = 0; i < n; i++)
        TF_CHECK_INT(write_event(s, i, "deliver"), 0);
    /* The writer commits on its own thread; the loop is not run here, so
     * only tf_store_deliver can run the callbacks. */
    uint64_t end = now_ms() + 10000;
    while (g_done.n < n && now_ms() < end) {
        tf_store_deliver(s);
        usleep(1000);
    }
    TF_CHECK_INT(g_done.n, n);
    TF_CHECK_INT(g_done.ok, n);
    TF_CHECK(g_done.ordered);
    TF_CHECK_INT(direct_int(f.path, "SELECT count(*) FROM slave_events"), n);
    /* The wakeup the writer sent still comes: it finds nothing left. */
    run_for(&f.loop, 20);
    TF_CHECK_INT(g_done.n, n);

    /* A callback that calls it again does not nest. */
    TF_CHECK_INT(tf_store_write(s, INSERT_EVENT,
                                (tf_sqlval_t[]){tf_sql_text("s1"),
                                                tf_sql_int(n),
                                                tf_sql_text("ev"),
                                                tf_sql_text("nested")},
                                4, deliver_nested_cb, s),
                 0);
    end = now_ms() + 10000;
    while (g_done.n < n + 1 && now_ms() < end) {
        tf_store_deliver(s);
        usleep(1000);
    }
    TF_CHECK_INT(g_done.n, n + 1);
    TF_CHECK(g_done.ordered);

    /* Once closing, only the loop finishes: the close's own wakeup runs
     * what is left, and the close callback comes last. */
    TF_CHECK_INT(write_event(s, n + 1, "at close"), 0);
    tf_store_close(s, closed_cb, &closed);
    usleep(50000);
    tf_store_deliver(s);
    TF_CHECK_INT(g_done.n, n + 1);
    TF_CHECK(run_until(&f.loop, flag_set, &closed, 10000));
    TF_CHECK_INT(g_done.n, n + 2);
    TF_CHECK(g_done.ordered);
    TF_CHECK(!g_done.after_close);
    fx_teardown(&f);
}

/* Checkpoints wait while commits that are awaited are in the writer's
 * hands (engine.h, ckpt_hold): a burst's start batches. */

static int big_blob_fn(sqlite3 *db, void *arg)
{
    (void)arg;
    /* 24 MiB: about 6,000 pages of WAL, past the early checkpoint's
     * 4,096. */
    return sqlite3_exec(db,
                        "CREATE TABLE IF NOT EXISTS big(b BLOB);"
                        "INSERT INTO big VALUES(zeroblob(25165824));",
                        NULL, NULL, NULL) == SQLITE_OK
               ? 0
               : TF_ESTORE;
}

static int64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
}

/* Queues fn as a group whose commit is awaited (tf_wgroup_prompt). */
static void submit_prompt(tf_store_t *s, tf_store_txn_fn fn, void *arg,
                          int *rc)
{
    tf_wgroup_t *g = tf_wgroup_new(0);
    TF_CHECK(g != NULL);
    if (!g)
        return;
    TF_CHECK_INT(tf_op_sql_fn(g, fn, arg, 0), 0);
    tf_wgroup_prompt(g);
    TF_CHECK_INT(tf_store_submit(s, g, rc_cb, rc), 0);
}

static int big_blob_fn_small(sqlite3 *db, void *arg)
{
    (void)arg;
    return sqlite3_exec(db,
                        "CREATE TABLE IF NOT EXISTS big(b BLOB);"
                        "INSERT INTO big VALUES(zeroblob(4096));",
                        NULL, NULL, NULL) == SQLITE_OK
               ? 0
               : TF_ESTORE;
}

/* 50 MiB: 12,800 pages, past the hold's 12,288 frames and short of the
 * WAL's 16,384 (where the writer would checkpoint it itself). */
static int huge_blob_fn(sqlite3 *db, void *arg)
{
    (void)arg;
    return sqlite3_exec(db, "INSERT INTO big VALUES(zeroblob(52428800));",
                        NULL, NULL, NULL) == SQLITE_OK
               ? 0
               : TF_ESTORE;
}

static const char *g_grow_path;
static int64_t g_grow_to;

static bool grew_to(void *arg)
{
    (void)arg;
    return file_size(g_grow_path) >= g_grow_to;
}

static bool db_grew(void *arg)
{
    const char *path = arg;
    return file_size(path) > 20 * 1024 * 1024;
}

TF_TEST(checkpoints_wait_while_awaited_commits_are_queued)
{
    fx_t f;
    fx_setup(&f);
    tf_store_t *s = open_ok(&f, NULL);
    int rc0 = 1, rc1 = 1, rc2 = 1;
    gate_t g;

    /* A first commit starts the checkpointer; its checkpoint a second
     * later finds little to copy. */
    TF_CHECK_INT(write_event(s, 0, "start"), 0);
    run_for(&f.loop, 1500);
    int64_t before = file_size(f.path);
    TF_CHECK(before > 0 && before < 4 * 1024 * 1024);

    /* An awaited group leaves 6,000 pages in the WAL while another one
     * is being applied (the gate holds it in the writer). */
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cond, NULL);
    g.entered = g.open = false;
    submit_prompt(s, big_blob_fn, NULL, &rc0);
    submit_prompt(s, gate_fn, &g, &rc1);
    pthread_mutex_lock(&g.mu);
    while (!g.entered)
        pthread_cond_wait(&g.cond, &g.mu);
    pthread_mutex_unlock(&g.mu);
    /* Without the hold the early checkpoint copies the 24 MiB into the
     * database file within milliseconds; with it the file stays as it
     * was. */
    run_for(&f.loop, 500);
    TF_CHECK_INT(rc0, 0);
    TF_CHECK(file_size(f.path) == before);

    /* The awaited work done, the put-off checkpoint runs at once (not a
     * second later): the writer goes idle and lets it. */
    gate_release(&g);
    TF_CHECK(run_until(&f.loop, rc_set, &rc1, 10000));
    TF_CHECK_INT(rc1, 0);
    uint64_t t0 = now_ms();
    TF_CHECK(run_until(&f.loop, db_grew, f.path, 10000));
    printf("  database file grew %" PRIu64 " ms after the awaited commits\n",
           now_ms() - t0);

    /* An ordinary write (not awaited) is checkpointed as before. */
    g_grow_path = f.path;
    g_grow_to = file_size(f.path) + 20 * 1024 * 1024;
    TF_CHECK_INT(tf_store_write_fn(s, big_blob_fn, 0, rc_cb, &rc2), 0);
    TF_CHECK(run_until(&f.loop, rc_set, &rc2, 10000));
    TF_CHECK_INT(rc2, 0);
    TF_CHECK(run_until(&f.loop, grew_to, NULL, 10000));
    store_close_wait(&f, s);
    gate_destroy(&g);
    fx_teardown(&f);
}

/* Past CKPT_HOLD_MAX_FRAMES (48 MiB of WAL not yet copied) the hold does
 * not wait: the copy starts while the next awaited group is still being
 * applied, not a second later. */
TF_TEST(a_hold_does_not_keep_a_long_wal_from_its_checkpoint)
{
    fx_t f;
    fx_setup(&f);
    tf_store_t *s = open_ok(&f, NULL);
    int rc0 = 1, rc3 = 1, rc4 = 1;
    gate_t g2;
    uint64_t t0;

    /* The checkpointer started and done with a small first commit. */
    TF_CHECK_INT(tf_store_write_fn(s, big_blob_fn_small, 0, rc_cb, &rc0),
                 0);
    TF_CHECK(run_until(&f.loop, rc_set, &rc0, 10000));
    run_for(&f.loop, 1500);
    g_grow_path = f.path;
    pthread_mutex_init(&g2.mu, NULL);
    pthread_cond_init(&g2.cond, NULL);
    g2.entered = g2.open = false;
    g_grow_to = file_size(f.path) + 40 * 1024 * 1024;
    submit_prompt(s, huge_blob_fn, NULL, &rc3);
    submit_prompt(s, gate_fn, &g2, &rc4);
    pthread_mutex_lock(&g2.mu);
    while (!g2.entered)
        pthread_cond_wait(&g2.cond, &g2.mu);
    pthread_mutex_unlock(&g2.mu);
    /* The writer did not checkpoint it itself (the WAL is short of its
     * 16,384 pages): the checkpointer is the one to copy it. */
    char wal[400];
    snprintf(wal, sizeof(wal), "%s-wal", f.path);
    TF_CHECK(file_size(wal) < 16384LL * 4120);
    TF_CHECK(file_size(f.path) < g_grow_to);
    /* Well before the hold's time bound (CKPT_HOLD_MAX_MS, a second). */
    t0 = now_ms();
    TF_CHECK(run_until(&f.loop, grew_to, NULL, 3000));
    printf("  the file grew %" PRIu64 " ms into the hold\n", now_ms() - t0);
    TF_CHECK(now_ms() - t0 < 900);
    gate_release(&g2);
    TF_CHECK(run_until(&f.loop, rc_set, &rc4, 10000));
    TF_CHECK_INT(rc3, 0);
    TF_CHECK_INT(rc4, 0);
    store_close_wait(&f, s);
    gate_destroy(&g2);
    fx_teardown(&f);
}

/* ------------------------------------------------------------------ */
/* A failing database                                                  */
/* ------------------------------------------------------------------ */

/* Pins the write connection's database at its current size: the next
 * insert that needs a new page fails with SQLITE_FULL, like a full disk. */
static int pin_size_fn(sqlite3 *db, void *arg)
{
    (void)arg;
    return sqlite3_exec(db, "PRAGMA max_page_count = 1", NULL, NULL, NULL) ==
                   SQLITE_OK
               ? 0
               : TF_ESTORE;
}

static void fill_page_limit(fx_t *f, tf_store_t *s)
{
    int rc = 1;
    TF_CHECK_INT(tf_store_write_fn(s, pin_size_fn, 0, rc_cb, &rc), 0);
    TF_CHECK(run_until(&f->loop, rc_set, &rc, 10000));
    TF_CHECK_INT(rc, 0);
}

static char g_big[2048];

TF_TEST(full_disk_is_retried_until_it_commits)
{
    fx_t f;
    fx_setup(&f);
    done_reset();
    tf_store_t *s = open_ok(&f, NULL);
    tf_store_health_t h;
    const long n = 200;

    gate_t g;

    memset(g_big, 'z', sizeof(g_big) - 1);
    fill_page_limit(&f, s);
    gate_hold(s, &g); /* so that all n are in one (failing) batch */
    for (long i = 0; i < n; i++)
        TF_CHECK_INT(write_event(s, i, g_big), 0);
    gate_release(&g);

    run_for(&f.loop, 700); /* failures at 0, 100, 300 ms... */
    tf_store_health(s, &h);
    TF_CHECK_INT(g_done.n, 0);
    TF_CHECK_INT(h.queued_ops, n);
    TF_CHECK(h.failing_for_ms > 0);
    TF_CHECK(strcasestr(h.last_error, "full") != NULL);
    printf("  while failing: last_error \"%s\", failing for %u ms\n",
           h.last_error, h.failing_for_ms);

    /* New writes still queue behind the stuck batch. */
    TF_CHECK_INT(write_event(s, n, "late"), 0);

    /* The disk has room again. */
    tf__store_test_hook_set_max_pages(s, 1000000);
    TF_CHECK(wait_done(&f.loop, n + 1, 20000));
    TF_CHECK_INT(g_done.ok, n + 1);
    TF_CHECK(g_done.ordered);
    tf_store_health(s, &h);
    TF_CHECK_INT(h.failing_for_ms, 0);
    TF_CHECK_STR(h.last_error, "");
    TF_CHECK_INT(h.queued_ops, 0);
    TF_CHECK_INT(read_int(s, "SELECT count(*) FROM slave_events"), n + 1);
    store_close_wait(&f, s);
    gate_destroy(&g);
    fx_teardown(&f);
}

TF_TEST(close_gives_up_on_a_failing_database_and_says_so)
{
    fx_t f;
    fx_setup(&f);
    done_reset();
    tf_store_t *s = open_ok(&f, NULL);
    const long n = 50;
    bool closed = false;

    gate_t g;

    memset(g_big, 'z', sizeof(g_big) - 1);
    fill_page_limit(&f, s);
    gate_hold(s, &g); /* so that all n are in one (failing) batch */
    for (long i = 0; i < n; i++)
        TF_CHECK_INT(write_event(s, i, g_big), 0);
    gate_release(&g);
    run_for(&f.loop, 150);
    TF_CHECK_INT(g_done.n, 0);

    tf__store_test_hook_set_close_grace_ms(s, 300);
    uint64_t t0 = now_ms();
    tf_store_close(s, closed_cb, &closed);
    TF_CHECK(run_until(&f.loop, flag_set, &closed, 20000));
    uint64_t took = now_ms() - t0;
    TF_CHECK(took >= 250 && took < 5000);
    TF_CHECK_INT(g_done.n, n);
    TF_CHECK_INT(g_done.estore, n);
    TF_CHECK(g_done.ordered);
    TF_CHECK(!g_done.after_close);
    TF_CHECK_INT(direct_int(f.path, "SELECT count(*) FROM slave_events"), 0);
    gate_destroy(&g);
    fx_teardown(&f);
}

/* ------------------------------------------------------------------ */
/* Throughput                                                          */
/* ------------------------------------------------------------------ */

/* Submits n writes made by mk(i), running the loop whenever the queue is
 * full (as the master does: backpressure), and waits for every callback.
 * Returns the wall time in seconds. */
static double bench_run(fx_t *f, tf_store_t *s, long n,
                        int (*mk)(tf_store_t *, long))
{
    uint64_t t0 = uv_hrtime();

    done_reset();
    for (long i = 0; i < n;) {
        int rc = mk(s, i);
        if (rc == TF_EFULL) {
            uv_run(&f->loop, UV_RUN_ONCE);
            continue;
        }
        TF_CHECK_INT(rc, 0);
        if (rc != 0)
            break;
        i++;
    }
    TF_CHECK(wait_done(&f->loop, n, 600000));
    TF_CHECK_INT(g_done.ok, n);
    return (double)(uv_hrtime() - t0) / 1e9;
}

static int mk_small(tf_store_t *s, long i)
{
    return write_event(s, i, "step 3 finished: 12 warnings");
}

static unsigned char g_chunk[64 * 1024];

static int mk_chunk(tf_store_t *s, long i)
{
    tf_sqlval_t v[7] = {tf_sql_int(1),       tf_sql_int(0), tf_sql_int(i),
                        tf_sql_int(i),       tf_sql_int(1), tf_sql_int(i),
                        tf_sql_blob(g_chunk, sizeof(g_chunk))};
    return tf_store_write(s, INSERT_CHUNK, v, 7, seq_cb, (void *)(intptr_t)i);
}

TF_TEST(throughput)
{
    const char *e = getenv("TF_STORE_BENCH");
    long scale = e ? atol(e) : 1;
    if (scale <= 0) {
        printf("  throughput: skipped (TF_STORE_BENCH=0)\n");
        return;
    }
    fx_t f;
    fx_setup(&f);
    tf_store_t *s = open_ok(&f, NULL);
    tf_store_health_t h0, h1;
    long n_small = 50000 * scale, n_chunk = 500 * scale;

    for (size_t i = 0; i < sizeof(g_chunk); i++)
        g_chunk[i] = (unsigned char)(i * 7 + i / 251);
    tf_store_health(s, &h0);
    double ts = bench_run(&f, s, n_small, mk_small);
    tf_store_health(s, &h1);
    printf("  small rows: %ld in %.3f s = %.0f rows/s (%" PRIu64
           " transactions)\n",
           n_small, ts, n_small / ts, h1.batches - h0.batches);
    h0 = h1;
    double tc = bench_run(&f, s, n_chunk, mk_chunk);
    tf_store_health(s, &h1);
    printf("  64 KiB blobs: %ld in %.3f s = %.0f chunks/s = %.1f MiB/s (%" PRIu64
           " transactions)\n",
           n_chunk, tc, n_chunk / tc, n_chunk / tc / 16.0,
           h1.batches - h0.batches);
    store_close_wait(&f, s);
    fx_teardown(&f);
}

/* Identifiers from an sqlite file (tf-master migrate --to) are quoted
 * with their quotes doubled, so an odd name stays one identifier. */
TF_TEST(identifiers_are_quoted_with_quotes_doubled)
{
    char out[32];

    TF_CHECK_INT(tf__db_quote_ident("builds", out, sizeof(out)), 0);
    TF_CHECK_STR(out, "\"builds\"");
    TF_CHECK_INT(tf__db_quote_ident("a\"b", out, sizeof(out)), 0);
    TF_CHECK_STR(out, "\"a\"\"b\"");
    TF_CHECK_INT(tf__db_quote_ident("x\"); DROP TABLE users; --", out,
                                    sizeof(out)), 0);
    TF_CHECK_STR(out, "\"x\"\"); DROP TABLE users; --\"");
    TF_CHECK_INT(tf__db_quote_ident("\"\"", out, sizeof(out)), 0);
    TF_CHECK_STR(out, "\"\"\"\"\"\"");
    TF_CHECK_INT(tf__db_quote_ident("", out, sizeof(out)), TF_EINVAL);
    TF_CHECK_INT(tf__db_quote_ident(NULL, out, sizeof(out)), TF_EINVAL);
    /* exactly fits: 4 characters, 2 quotes, the terminator */
    TF_CHECK_INT(tf__db_quote_ident("abcd", out, 7), 0);
    TF_CHECK_STR(out, "\"abcd\"");
    TF_CHECK_INT(tf__db_quote_ident("abcde", out, 7), TF_E2BIG);
    TF_CHECK_STR(out, "");
    /* a doubled quote that would not fit is not cut in half */
    TF_CHECK_INT(tf__db_quote_ident("abc\"", out, 7), TF_E2BIG);
    TF_CHECK_STR(out, "");
}

TF_TEST_MAIN()
