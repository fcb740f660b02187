/*
 * test_store_ops.c - the storage interface's typed operations and queries
 * against a real sqlite file, and (run by tests/unit/with_pg.py, meson
 * test store_ops_pg) against a real PostgreSQL, one fresh database per
 * test (tf_pg.h): each operation stores what it says, a group
 * commits whole or not at all, the event chain refuses what follows a
 * hole, a kept group comes back to its caller after a failure, the test
 * hooks fail the groups they name, the queries read back what the
 * operations wrote, and a synchronous read on a serving loop asserts.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "store/db.h"
#include "store/queries.h"
#include "store/store.h"
#include "store/store_internal.h"
#include "store/store_sqlite.h"
#include "tf_pg.h"
#include "tf_err.h"
#include "tf_test.h"

typedef struct fx {
    uv_loop_t loop;
    char dir[256];
    char path[512];
    tf_store_t *s;
} fx_t;

static void fx_setup(fx_t *f)
{
    const char *tmp = getenv("TMPDIR");

    snprintf(f->dir, sizeof(f->dir), "%s/tf-ops-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir) || uv_loop_init(&f->loop) != 0)
        exit(2);
    snprintf(f->path, sizeof(f->path), "%s/tf.db", f->dir);
    tf_test_pg_database(f->path, sizeof(f->path));
    f->s = NULL;
    TF_CHECK_INT(tf_store_open(&f->loop, f->path, NULL, &f->s), 0);
    if (!f->s)
        exit(1);
}

static void closed_cb(void *arg)
{
    *(bool *)arg = true;
}

static void fx_teardown(fx_t *f)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    bool closed = false;
    char p[540];

    if (f->s)
        tf_store_close(f->s, closed_cb, &closed);
    while (f->s && !closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    TF_CHECK_INT(uv_loop_close(&f->loop), 0);
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", f->path, suffixes[i]);
        unlink(p);
    }
    rmdir(f->dir);
}

/* A done callback recording its rc (1 = not called yet). */
typedef struct outcome {
    int rc;
    int calls;
} outcome_t;

static void outcome_cb(void *arg, int rc)
{
    outcome_t *o = arg;
    o->rc = rc;
    o->calls++;
}

static void wait_outcome(fx_t *f, outcome_t *o)
{
    uint64_t end = uv_hrtime() + 20000000000ull;
    while (o->calls == 0 && uv_hrtime() < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    TF_CHECK(o->calls == 1);
}

/* Submits g and waits for its callback; returns its rc. */
static int commit(fx_t *f, tf_wgroup_t *g)
{
    outcome_t o = {.rc = 1};
    int rc = tf_store_submit(f->s, g, outcome_cb, &o);
    if (rc) {
        if (!tf_wgroup_kept(g))
            tf_wgroup_free(g); /* refused: still ours */
        return rc;
    }
    wait_outcome(f, &o);
    return o.rc;
}

/* The first column of the first row, read back through the store's
 * reader (db.h), so the same checks run on every engine. */
static char g_text[4096];

typedef struct dq {
    const char *sql;
    long long v;
    bool row;
} dq_t;

static int dq_fn(tf_db_t *db, void *arg)
{
    dq_t *q = arg;
    tf_dbst_t *st = NULL;

    q->v = -1;
    q->row = false;
    snprintf(g_text, sizeof(g_text), "(no row)");
    if (tf_db_prepare_v2(db, q->sql, -1, &st, NULL) == TF_DB_OK &&
        tf_db_step(st) == TF_DB_ROW) {
        const unsigned char *t = tf_db_column_text(st, 0);
        q->row = true;
        q->v = tf_db_column_int64(st, 0);
        snprintf(g_text, sizeof(g_text), "%s", t ? (const char *)t : "(null)");
    } else if (!st) {
        fprintf(stderr, "query failed: %s: %s\n", q->sql, tf_db_errmsg(db));
    }
    tf_db_finalize(st);
    return 0;
}

static long long dint(fx_t *f, const char *sql)
{
    dq_t q = {.sql = sql};

    tf_store_read_sync(f->s, dq_fn, &q);
    return q.v;
}

static const char *dtext(fx_t *f, const char *sql)
{
    dq_t q = {.sql = sql};

    tf_store_read_sync(f->s, dq_fn, &q);
    return g_text;
}

/* The one log chunk's bytes equal data and its stream is 2. */
typedef struct blobq {
    const unsigned char *data;
    size_t n;
    int ok;
} blobq_t;

static int blob_fn(tf_db_t *db, void *arg)
{
    blobq_t *q = arg;
    unsigned char *back = malloc(q->n);
    size_t got = 0;

    if (back &&
        tf_q_log_read(db, 7, 0, 0, q->n, q->n, back, &got, NULL) == 0 &&
        got == q->n && memcmp(back, q->data, q->n) == 0)
        q->ok = 1;
    free(back);
    return 0;
}

/* A builder, a slave and a request with a two-step build on it. */
static void make_build(fx_t *f, uint64_t req, uint64_t build)
{
    tf_wgroup_t *g = tf_wgroup_new(0);
    uint64_t changes[] = {0};
    tf_request_rec_t r = {
        .id = req, .builder = "b1", .reason = "test", .owner = "ann",
        .properties = "{\"k\":\"v\"}", .tests = "[]", .priority = 2,
        .submitted_ms = 1000, .changes = changes, .nchanges = 0,
    };
    tf_op_builder_activate(g, "b1");
    tf_op_slave_known(g, "s1");
    tf_op_request_create(g, &r);
    tf_op_builder_counts(g, "b1", 1, 0);
    TF_CHECK_INT(commit(f, g), 0);

    tf_build_step_rec_t steps[] = {
        {.name = "compile", .command_json = "[\"make\"]", .flags = 1},
        {.name = "test", .command_json = "[\"make\",\"check\"]", .flags = 2},
    };
    tf_build_rec_t b = {
        .id = build, .number = 1, .request_id = req, .builder = "b1",
        .slave = "s1", .properties = "{\"k\":\"v\"}", .reason = "test",
        .created_ms = 2000, .steps = steps, .nsteps = 2,
    };
    g = tf_wgroup_new(0);
    tf_op_build_create(g, &b);
    tf_op_builder_counts(g, "b1", 0, 1);
    TF_CHECK_INT(commit(f, g), 0);
}

/* One event group: seq, then what the event stored. */
static tf_wgroup_t *event(uint64_t build, uint64_t seq)
{
    tf_wgroup_t *g = tf_wgroup_new(0);
    tf_op_build_seq(g, build, seq);
    return g;
}

/* A build's kind ("try" for a request with a job or a patch, else
 * "ci"): the master tells it when it knows it (every start it makes), and
 * the writer reads it from the request's row when it is not told. */
TF_TEST(a_build_kind_is_told_or_read_from_its_request)
{
    fx_t f;
    fx_setup(&f);
    tf_wgroup_t *g = tf_wgroup_new(0);
    tf_op_builder_activate(g, "b1");
    tf_op_slave_known(g, "s1");
    for (uint64_t id = 1; id <= 4; id++) {
        tf_request_rec_t r = {
            .id = id, .builder = "b1", .reason = "test", .tests = "[]",
            .submitted_ms = 1000,
            /* 1 and 3: a patch (try); 2 and 4: none (ci) */
            .patch_sha256 = id % 2 ? "ab" : NULL, .patch_size = id % 2,
        };
        tf_op_request_create(g, &r);
    }
    TF_CHECK_INT(commit(&f, g), 0);
    static const char *const told[] = {NULL, NULL, "try", "ci"};
    g = tf_wgroup_new(0);
    for (uint64_t id = 1; id <= 4; id++) {
        tf_build_rec_t b = {
            .id = 10 + id, .number = id, .request_id = id, .builder = "b1",
            .slave = "s1", .reason = "test", .created_ms = 2000,
            .kind = told[id - 1],
        };
        tf_op_build_create(g, &b);
    }
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_STR(dtext(&f, "SELECT kind FROM builds WHERE id = 11"), "try");
    TF_CHECK_STR(dtext(&f, "SELECT kind FROM builds WHERE id = 12"), "ci");
    TF_CHECK_STR(dtext(&f, "SELECT kind FROM builds WHERE id = 13"), "try");
    TF_CHECK_STR(dtext(&f, "SELECT kind FROM builds WHERE id = 14"), "ci");
    fx_teardown(&f);
}

TF_TEST(a_build_is_stored_by_its_operations)
{
    fx_t f;
    fx_setup(&f);
    make_build(&f, 1, 7);
    TF_CHECK_STR(dtext(&f, "SELECT state FROM build_requests WHERE id = 1"),
                 "running");
    TF_CHECK_INT(dint(&f, "SELECT build_id FROM build_requests WHERE id = 1"),
                 7);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM steps WHERE build_id = 7"), 2);
    TF_CHECK_STR(dtext(&f, "SELECT command FROM steps WHERE idx = 1"),
                 "[\"make\",\"check\"]");
    TF_CHECK_INT(dint(&f, "SELECT builds_total FROM builders"), 1);
    TF_CHECK_INT(dint(&f, "SELECT running FROM builders"), 1);

    tf_wgroup_t *g = event(7, 1);
    tf_op_step_start(g, 7, 0, 3000, true);
    TF_CHECK_INT(commit(&f, g), 0);
    g = event(7, 2);
    tf_output_rec_t o = {.build_id = 7, .seq = 2, .step = 0, .stream = 1,
                         .offset = 0, .line = 0, .log_bytes = 6,
                         .log_lines = 1};
    tf_op_output(g, &o, "hello\n", 6);
    TF_CHECK_INT(commit(&f, g), 0);
    g = event(7, 3);
    tf_step_finish_rec_t fr = {.build_id = 7, .step = 0, .result = 1,
                               .time_ms = 4000, .duration_ms = 1000,
                               .has_exit_code = true, .exit_code = 0,
                               .has_warnings = true, .warnings = 3,
                               .text = "3 warnings", .info = "i"};
    tf_op_build_prop(g, 7, "got_revision", "abc123");
    tf_op_step_finish(g, &fr);
    tf_op_stat(g, "b1", 7, 0, "size", 0.1);
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_STR(dtext(&f, "SELECT state FROM builds WHERE id = 7"),
                 "running");
    TF_CHECK_INT(dint(&f, "SELECT started_ms FROM builds WHERE id = 7"),
                 3000);
    TF_CHECK_INT(dint(&f, "SELECT last_seq FROM builds WHERE id = 7"), 3);
    TF_CHECK_INT(dint(&f, "SELECT log_bytes FROM steps WHERE idx = 0"), 6);
    /* The step ended: its log was sealed into a block (store/logblock.h);
     * test_store_logs.c reads such logs back. */
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM log_chunks"), 0);
    TF_CHECK_INT(dint(&f, "SELECT raw_len FROM log_blocks"), 6);
    TF_CHECK_INT(dint(&f, "SELECT log_sealed FROM steps WHERE idx = 0"), 6);
    TF_CHECK_INT(dint(&f, "SELECT warnings FROM steps WHERE idx = 0"), 3);
    TF_CHECK_STR(dtext(&f, "SELECT got_revision FROM builds"), "abc123");
    /* The property inside the JSON, in each engine's dialect. */
    TF_CHECK_STR(dtext(&f, getenv("TF_TEST_PG_URL")
                               ? "SELECT properties::json->>'got_revision' "
                                 "FROM builds"
                               : "SELECT json_extract(properties, "
                                 "'$.got_revision') FROM builds"),
                 "abc123");
    /* A double is stored as the very same double. */
    TF_CHECK_INT(dint(&f, "SELECT value = 0.1 FROM stats"), 1);

    /* What a restart reads back. */
    tf_q_state_t q = {.q.kind = TF_Q_LOAD_STATE};
    TF_CHECK_INT(tf_store_query_sync(f.s, &q.q), 0);
    TF_CHECK_INT(q.max_build_id, 7);
    TF_CHECK_INT(q.nrequests, 1);
    TF_CHECK(q.nrequests == 1 && q.requests[0].running &&
             q.requests[0].priority == 2);
    TF_CHECK_INT(q.nbuilds, 1);
    if (q.nbuilds == 1) {
        TF_CHECK_INT(q.builds[0].last_seq, 3);
        TF_CHECK_INT(q.builds[0].nsteps, 2);
        TF_CHECK(q.builds[0].steps[0].finished &&
                 q.builds[0].steps[0].result == 1);
        TF_CHECK(!q.builds[0].steps[1].started);
        TF_CHECK_INT(q.builds[0].steps[0].log_bytes, 6);
        TF_CHECK_STR(q.builds[0].steps[1].name, "test");
    }
    TF_CHECK(q.nbuilders == 1 && q.builders[0].max_number == 1 &&
             strcmp(q.builders[0].warm_slave, "s1") == 0);
    tf_q_state_clear(&q);

    g = event(7, 4);
    tf_op_step_force_end(g, 7, 1, 3, 5000, "not run");
    tf_op_build_finish(g, 7, "b1", "s1", 1, 5000, NULL, true);
    tf_op_request_done(g, 1, 1, 5000);
    tf_op_builder_counts(g, "b1", 0, 0);
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_STR(dtext(&f, "SELECT state FROM builds"), "finished");
    TF_CHECK_INT(dint(&f, "SELECT last_complete_build_id FROM builders"), 7);
    TF_CHECK_INT(dint(&f, "SELECT builds_done FROM slaves"), 1);
    TF_CHECK_STR(dtext(&f, "SELECT state FROM build_requests"), "done");
    q = (tf_q_state_t){.q.kind = TF_Q_LOAD_STATE};
    TF_CHECK_INT(tf_store_query_sync(f.s, &q.q), 0);
    TF_CHECK_INT(q.nrequests + q.nbuilds, 0);
    tf_q_state_clear(&q);
    fx_teardown(&f);
}

/* What a master's start stores before it loads its state (every builder
 * inactive, then the configured ones active again), and a running
 * request put back in the queue when its slave is lost: pending again,
 * its retries counted and its build forgotten, on both engines. */
TF_TEST(a_start_deactivates_builders_and_a_lost_build_is_requeued)
{
    fx_t f;
    fx_setup(&f);
    make_build(&f, 1, 7);
    tf_wgroup_t *g = tf_wgroup_new(0);
    tf_op_builder_activate(g, "b2");
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM builders WHERE active = 1"),
                 2);

    g = tf_wgroup_new(0);
    tf_op_builders_deactivate(g);
    tf_op_builder_activate(g, "b2");
    tf_op_request_requeue(g, 1, 2);
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_STR(dtext(&f, "SELECT group_concat(name, ' ') FROM builders "
                           "WHERE active = 1"),
                 "b2");
    /* Pending, retried twice, no build (0 for NULL). */
    TF_CHECK_STR(dtext(&f, "SELECT state || retries || coalesce(build_id, 0) "
                           "FROM build_requests WHERE id = 1"),
                 "pending20");
    /* A restart finds it queued, not running. */
    tf_q_state_t q = {.q.kind = TF_Q_LOAD_STATE};
    TF_CHECK_INT(tf_store_query_sync(f.s, &q.q), 0);
    TF_CHECK(q.nrequests == 1 && !q.requests[0].running);
    tf_q_state_clear(&q);
    fx_teardown(&f);
}

TF_TEST(the_event_chain_stores_nothing_after_a_hole)
{
    fx_t f;
    fx_setup(&f);
    make_build(&f, 1, 7);
    outcome_t o1 = {.rc = 1}, o3 = {.rc = 1}, o4 = {.rc = 1},
              other = {.rc = 1};

    tf_wgroup_t *g = event(7, 1);
    tf_op_step_start(g, 7, 0, 3000, true);
    TF_CHECK_INT(tf_store_submit(f.s, g, outcome_cb, &o1), 0);
    /* Event 2 never arrives: 3 and 4 must not be stored, while a group of
     * another kind queued with them commits. */
    tf_output_rec_t o = {.build_id = 7, .seq = 3, .step = 0, .log_bytes = 3};
    g = event(7, 3);
    tf_op_output(g, &o, "abc", 3);
    TF_CHECK_INT(tf_store_submit(f.s, g, outcome_cb, &o3), 0);
    g = tf_wgroup_new(0);
    tf_op_slave_event(g, "s1", 1, "connected", NULL);
    TF_CHECK_INT(tf_store_submit(f.s, g, outcome_cb, &other), 0);
    g = event(7, 4);
    tf_op_step_start(g, 7, 1, 3100, false);
    TF_CHECK_INT(tf_store_submit(f.s, g, outcome_cb, &o4), 0);
    wait_outcome(&f, &o4);
    TF_CHECK_INT(o1.rc, 0);
    TF_CHECK_INT(o3.rc, TF_ESTORE);
    TF_CHECK_INT(other.rc, 0);
    TF_CHECK_INT(o4.rc, TF_ESTORE);
    TF_CHECK_INT(dint(&f, "SELECT last_seq FROM builds"), 1);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM log_chunks"), 0);
    TF_CHECK_STR(dtext(&f, "SELECT state FROM steps WHERE idx = 1"),
                 "pending");
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM slave_events"), 1);
    /* Resent in order, they are stored. */
    g = event(7, 2);
    TF_CHECK_INT(commit(&f, g), 0);
    g = event(7, 3);
    tf_op_output(g, &o, "abc", 3);
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_INT(dint(&f, "SELECT last_seq FROM builds"), 3);
    /* A replay of a stored event is refused too (the caller drops
     * duplicates before they reach the store). */
    g = event(7, 3);
    TF_CHECK_INT(commit(&f, g), TF_ESTORE);
    /* An event of a build that does not exist. */
    g = event(99, 1);
    TF_CHECK_INT(commit(&f, g), TF_ESTORE);
    fx_teardown(&f);
}

TF_TEST(a_kept_group_comes_back_after_a_failure_and_commits_later)
{
    fx_t f;
    fx_setup(&f);
    make_build(&f, 1, 7);
    TF_CHECK_INT(tf__store_test_fail(f.s, "build_finish", 1,
                                     TF_STORE_FAIL_STORE),
                 0);
    tf_wgroup_t *g = tf_wgroup_new(0);
    tf_op_build_finish(g, 7, "b1", "s1", 0, 5000, "ok", true);
    tf_wgroup_keep(g);
    outcome_t o = {.rc = 1};
    TF_CHECK_INT(tf_store_submit(f.s, g, outcome_cb, &o), 0);
    wait_outcome(&f, &o);
    TF_CHECK_INT(o.rc, TF_ESTORE);
    TF_CHECK_STR(dtext(&f, "SELECT state FROM builds"), "starting");
    /* g is ours again: the second attempt is stored (the hook failed the
     * first one only). */
    TF_CHECK_INT(tf_wgroup_count(g), 1);
    o = (outcome_t){.rc = 1};
    TF_CHECK_INT(tf_store_submit(f.s, g, outcome_cb, &o), 0);
    wait_outcome(&f, &o);
    TF_CHECK_INT(o.rc, 0);
    TF_CHECK_STR(dtext(&f, "SELECT state FROM builds"), "finished");

    /* Refused at submit, a kept group stays the caller's too. */
    TF_CHECK_INT(tf__store_test_fail(f.s, "slave_event", 1,
                                     TF_STORE_FAIL_FULL),
                 0);
    g = tf_wgroup_new(0);
    tf_op_slave_event(g, "s1", 1, "lost", NULL);
    tf_wgroup_keep(g);
    TF_CHECK_INT(tf_store_submit(f.s, g, outcome_cb, &o), TF_EFULL);
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM slave_events"), 1);
    fx_teardown(&f);
}

TF_TEST(test_hooks_fail_the_groups_they_name)
{
    fx_t f;
    fx_setup(&f);
    /* The second group holding a slave event is refused as if the queue
     * were full, the first one with a slave_seen as if memory ran out, the
     * third slave event fails in the writer; the others are stored. */
    TF_CHECK_INT(tf__store_test_fail_spec(
                     f.s, "slave_event:2:full,slave_seen:1:nomem,"
                          "slave_event:3"),
                 0);
    int rcs[4];
    for (int i = 0; i < 4; i++) {
        tf_wgroup_t *g = tf_wgroup_new(0);
        tf_op_slave_event(g, "s1", i, "e", NULL);
        if (i == 0)
            tf_op_slave_seen(g, "s1", 5);
        rcs[i] = commit(&f, g);
    }
    TF_CHECK_INT(rcs[0], TF_ENOMEM);
    TF_CHECK_INT(rcs[1], TF_EFULL);
    TF_CHECK_INT(rcs[2], TF_ESTORE);
    TF_CHECK_INT(rcs[3], 0);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM slave_events"), 1);
    TF_CHECK_INT(dint(&f, "SELECT time_ms FROM slave_events"), 3);

    /* Bad specifications are refused whole. */
    static const char *const bad[] = {
        "output", "nosuch:1", "output:0", "output:x", "output:1:bogus",
        "output:1:", ":1", "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        TF_CHECK_INT(tf__store_test_fail_spec(f.s, bad[i]), TF_EINVAL);
    TF_CHECK_INT(tf__store_test_fail(f.s, "output", 0, TF_STORE_FAIL_STORE),
                 TF_EINVAL);
    fx_teardown(&f);
}

TF_TEST(a_failed_group_is_never_queued)
{
    fx_t f;
    fx_setup(&f);
    outcome_t o = {.rc = 1};
    tf_wgroup_t *g = tf_wgroup_new(0);
    tf_op_slave_event(g, "s1", 1, "e", NULL);
    tf_wgroup_fail(g);
    TF_CHECK(tf_wgroup_failed(g));
    /* Every later op reports the failure too. */
    TF_CHECK_INT(tf_op_slave_seen(g, "s1", 2), TF_ENOMEM);
    TF_CHECK_INT(tf_store_submit(f.s, g, outcome_cb, &o), TF_ENOMEM);
    tf_wgroup_free(g); /* refused: still ours */
    TF_CHECK_INT(tf_store_submit(f.s, NULL, outcome_cb, &o), TF_ENOMEM);
    uv_run(&f.loop, UV_RUN_NOWAIT);
    TF_CHECK_INT(o.calls, 0);
    /* Ops on no group report it. */
    TF_CHECK_INT(tf_op_slaves_reset(NULL), TF_ENOMEM);
    /* An empty group is queued and ordered like any other. */
    TF_CHECK_INT(commit(&f, tf_wgroup_new(0)), 0);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM slave_events"), 0);
    fx_teardown(&f);
}

/* A done callback recording the outcome of each unit of its group. */
typedef struct units_out {
    tf_wgroup_t *g;
    int rc, calls, unit[4];
    bool walk_same; /* tf_wgroup_unit_rcs gave the same outcomes */
} units_out_t;

static void units_cb(void *arg, int rc)
{
    units_out_t *u = arg;
    u->rc = rc;
    u->calls++;
    int all[4];
    for (size_t i = 0; i < 4; i++)
        u->unit[i] = tf_wgroup_unit_rc(u->g, i);
    tf_wgroup_unit_rcs(u->g, all, 4);
    u->walk_same = memcmp(all, u->unit, sizeof(all)) == 0;
}

/* Submits g (three units of one slave event each, the second with
 * bad_op added) plus one trailing slave event, and waits. */
static void commit_units(fx_t *f, units_out_t *u, void (*bad_op)(tf_wgroup_t *))
{
    tf_wgroup_t *g = tf_wgroup_new(0);
    *u = (units_out_t){.g = g, .rc = 1};
    for (int i = 0; i < 3; i++) {
        tf_op_slave_event(g, "s1", i, "unit", NULL);
        if (i == 1 && bad_op)
            bad_op(g);
        TF_CHECK_INT(tf_wgroup_unit_end(g), 0);
    }
    /* Nothing since the last unit: not a unit. */
    TF_CHECK_INT(tf_wgroup_unit_end(g), TF_EINVAL);
    tf_op_slave_event(g, "s1", 9, "after", NULL);
    TF_CHECK_INT(tf_store_submit(f->s, g, units_cb, u), 0);
    uint64_t end = uv_hrtime() + 20000000000ull;
    while (u->calls == 0 && uv_hrtime() < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    TF_CHECK(u->calls == 1);
    TF_CHECK(u->walk_same);
}

/* An event of a build that does not exist: the event chain refuses it. */
static void lost_event(tf_wgroup_t *g)
{
    tf_op_build_seq(g, 99, 1);
}

static void slave_seen(tf_wgroup_t *g)
{
    tf_op_slave_seen(g, "s1", 5);
}

TF_TEST(a_failed_group_of_units_commits_every_unit_but_the_bad_one)
{
    fx_t f;
    units_out_t u;
    fx_setup(&f);
    /* Whole, it commits as one group: every unit with it. */
    commit_units(&f, &u, NULL);
    TF_CHECK_INT(u.rc, 0);
    TF_CHECK_INT(u.unit[0], 0);
    TF_CHECK_INT(u.unit[2], 0);
    TF_CHECK_INT(u.unit[3], TF_EINVAL); /* the trailing ops are no unit */
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM slave_events"), 4);
    /* One unit breaks a rule of the store: the group fails, then each
     * unit is applied alone, and only that unit is lost. */
    commit_units(&f, &u, lost_event);
    TF_CHECK_INT(u.rc, TF_ESTORE);
    TF_CHECK_INT(u.unit[0], 0);
    TF_CHECK_INT(u.unit[1], TF_ESTORE);
    TF_CHECK_INT(u.unit[2], 0);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM slave_events"), 4 + 3);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM slave_events WHERE "
                          "event = 'after'"), 2);
    /* A test hook that fails the group fails the unit holding its op. */
    TF_CHECK_INT(tf__store_test_fail(f.s, "slave_seen", 1,
                                     TF_STORE_FAIL_STORE),
                 0);
    commit_units(&f, &u, slave_seen);
    TF_CHECK_INT(u.rc, TF_ESTORE);
    TF_CHECK_INT(u.unit[0], 0);
    TF_CHECK_INT(u.unit[1], TF_ESTORE);
    TF_CHECK_INT(u.unit[2], 0);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM slave_events"), 7 + 3);
    /* A failed group of one unit is not run again: the unit is the
     * group. */
    tf_wgroup_t *g = tf_wgroup_new(0);
    u = (units_out_t){.g = g, .rc = 1};
    lost_event(g);
    TF_CHECK_INT(tf_wgroup_unit_end(g), 0);
    TF_CHECK_INT(tf_store_submit(f.s, g, units_cb, &u), 0);
    while (u.calls == 0)
        uv_run(&f.loop, UV_RUN_ONCE);
    TF_CHECK_INT(u.rc, TF_ESTORE);
    TF_CHECK_INT(u.unit[0], TF_ESTORE);
    fx_teardown(&f);
}

/* A build start of the run test below: build k of builder b, with id
 * base + 200 + k and request base + k; its steps, kind, blamelist and
 * slave vary with k. */
static void run_start(tf_wgroup_t *g, const char *b, uint64_t base,
                      unsigned k)
{
    static const tf_build_step_rec_t steps[] = {
        {.name = "compile", .command_json = "[\"make\"]", .flags = 1},
        {.name = "test", .command_json = "[\"make\",\"check\"]", .flags = 2},
        {.name = "pack", .command_json = "[\"tar\",\"c\"]", .flags = 0},
    };
    char props[96];
    snprintf(props, sizeof(props), "{\"buildnumber\":\"%u\",\"k\":\"v\"}",
             k);
    tf_build_rec_t rec = {
        .id = base + 200 + k, .number = k, .request_id = base + k,
        .builder = b,
        .slave = k == 7 ? NULL : "s1", .properties = props,
        .reason = k % 3 ? "forced" : NULL, .repository = "git://r",
        .branch = "main", .revision = k % 2 ? "abc" : NULL,
        .recipe = k % 4 ? "f00d" : NULL, .created_ms = 5000 + k,
        .steps = steps, .nsteps = k % 4, .no_changes = k % 5 != 0,
        .kind = k % 2 ? "try" : "ci",
    };
    tf_op_build_create(g, &rec);
}

typedef struct run_out {
    int rc, calls;
    int unit[40];
} run_out_t;

static void run_cb(void *arg, int rc)
{
    run_out_t *u = arg;
    u->rc = rc;
    u->calls++;
}

/* A start batch's run of starts (sqlite writes their builds and steps
 * rows 32 to a statement, and their requests' too) stores what the same
 * starts store one group each: every column of builds, steps,
 * build_requests, build_changes and builders compared, for 70 starts (two
 * runs of 32 and 6 alone) of varied shape. A run whose group fails (a
 * number taken twice) is applied unit by unit: only that start is lost. */
TF_TEST(a_run_of_starts_stores_what_single_starts_store)
{
    fx_t f;
    fx_setup(&f);
    uint64_t ch[] = {5, 6};
    tf_wgroup_t *g = tf_wgroup_new(0);
    tf_op_builder_activate(g, "run");
    tf_op_builder_activate(g, "one");
    tf_op_slave_known(g, "s1");
    for (unsigned k = 1; k <= 110; k++)
        for (int half = 0; half < 2; half++) {
            tf_request_rec_t r = {
                .id = (half ? 1000 : 0) + k, .builder = half ? "one" : "run",
                .reason = "test", .tests = "[]", .submitted_ms = 1000,
                .patch_sha256 = k % 2 ? "ab" : NULL, .patch_size = k % 2,
                .changes = ch, .nchanges = k % 5 == 0 ? 2 : 0,
            };
            tf_op_request_create(g, &r);
        }
    TF_CHECK_INT(commit(&f, g), 0);
    /* One group of 70 units, and 70 groups of one. */
    g = tf_wgroup_new(0);
    for (unsigned k = 1; k <= 70; k++) {
        run_start(g, "run", 0, k);
        TF_CHECK_INT(tf_wgroup_unit_end(g), 0);
    }
    tf_op_builder_counts(g, "run", 0, 70);
    TF_CHECK_INT(commit(&f, g), 0);
    for (unsigned k = 1; k <= 70; k++) {
        g = tf_wgroup_new(0);
        run_start(g, "one", 1000, k);
        TF_CHECK_INT(commit(&f, g), 0);
    }
    g = tf_wgroup_new(0);
    tf_op_builder_counts(g, "one", 0, 70);
    TF_CHECK_INT(commit(&f, g), 0);

    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM builds WHERE builder = "
                          "'run'"),
                 70);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM steps WHERE build_id < 1000"),
                 dint(&f, "SELECT count(*) FROM steps WHERE build_id > 1000"));
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM steps WHERE build_id < 1000"),
                 18 * 1 + 18 * 2 + 17 * 3); /* k % 4 steps each */
    /* Rows that differ in anything but their ids and builder. */
    static const char *const differ[] = {
        "SELECT count(*) FROM builds a JOIN builds b ON b.id = a.id + 1000 "
        "WHERE a.id < 1000 AND (a.number <> b.number OR "
        "coalesce(a.slave, '-') <> coalesce(b.slave, '-') OR "
        "a.state <> b.state OR a.created_ms <> b.created_ms OR "
        "a.nsteps <> b.nsteps OR a.properties <> b.properties OR "
        "coalesce(a.reason, '-') <> coalesce(b.reason, '-') OR "
        "coalesce(a.repository, '-') <> coalesce(b.repository, '-') OR "
        "coalesce(a.branch, '-') <> coalesce(b.branch, '-') OR "
        "coalesce(a.revision, '-') <> coalesce(b.revision, '-') OR "
        "coalesce(a.recipe, '-') <> coalesce(b.recipe, '-') OR "
        "a.kind <> b.kind OR a.last_seq <> b.last_seq OR "
        "a.request_id + 1000 <> b.request_id)",
        "SELECT count(*) FROM steps a JOIN steps b ON b.build_id = "
        "a.build_id + 1000 AND b.idx = a.idx WHERE a.build_id < 1000 AND "
        "(a.name <> b.name OR a.state <> b.state OR a.command <> b.command "
        "OR a.flags <> b.flags OR a.log_bytes <> b.log_bytes)",
        "SELECT count(*) FROM build_requests a JOIN build_requests b ON "
        "b.id = a.id + 1000 WHERE a.id <= 70 AND (a.state <> b.state OR "
        "a.build_id + 1000 <> b.build_id OR a.started_ms <> b.started_ms)",
    };
    for (size_t i = 0; i < sizeof(differ) / sizeof(differ[0]); i++)
        TF_CHECK_INT(dint(&f, differ[i]), 0);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM build_requests WHERE id <= 70 "
                          "AND state = 'running' AND build_id = id + 200 AND "
                          "started_ms = 5000 + id"),
                 70);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM builds WHERE id < 1000 AND "
                          "kind = 'try'"),
                 35);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM build_changes WHERE "
                          "build_id < 1000"),
                 28); /* 14 starts with two changes each */
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM build_changes WHERE "
                          "build_id > 1000"),
                 28);
    TF_CHECK_INT(dint(&f, "SELECT builds_total FROM builders WHERE name = "
                          "'run'"),
                 70);
    TF_CHECK_INT(dint(&f, "SELECT last_build_id FROM builders WHERE name = "
                          "'run'"),
                 270);

    /* 40 more in one group, the 11th start taking number 5 again: the
     * first 32-row statement stops there, its first 10 rows rolled back
     * with the group, which is then applied unit by unit. */
    g = tf_wgroup_new(0);
    for (unsigned k = 71; k <= 110; k++) {
        run_start(g, "run", 0, k);
        if (k == 80) {
            tf_build_rec_t dup = {
                .id = 999, .number = 5, .request_id = 80, .builder = "run",
                .slave = "s1", .created_ms = 1, .kind = "ci",
            };
            tf_op_build_create(g, &dup);
        }
        TF_CHECK_INT(tf_wgroup_unit_end(g), 0);
    }
    run_out_t u = {.rc = 1};
    TF_CHECK_INT(tf_store_submit(f.s, g, run_cb, &u), 0);
    uint64_t end = uv_hrtime() + 20000000000ull;
    while (u.calls == 0 && uv_hrtime() < end)
        uv_run(&f.loop, UV_RUN_ONCE);
    TF_CHECK_INT(u.calls, 1);
    TF_CHECK_INT(u.rc, TF_ESTORE);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM builds WHERE builder = 'run' "
                          "AND id > 270"),
                 39);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM builds WHERE id IN (280, "
                          "999)"),
                 0);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM build_requests WHERE id > 70 "
                          "AND id <= 110 AND state = 'running'"),
                 39);

    /* A request with two starts in one run (the scheduler never makes
     * one: a started request leaves the queue) ends as the one-row path
     * leaves it: its last build, its first start time. */
    g = tf_wgroup_new(0);
    tf_op_builder_activate(g, "dup");
    for (unsigned k = 1; k <= 31; k++) {
        tf_request_rec_t r = {.id = 2000 + k, .builder = "dup",
                              .reason = "test", .tests = "[]",
                              .submitted_ms = 1000};
        tf_op_request_create(g, &r);
    }
    TF_CHECK_INT(commit(&f, g), 0);
    g = tf_wgroup_new(0);
    for (unsigned k = 1; k <= 32; k++) {
        tf_build_rec_t rec = {
            .id = 3000 + k, .number = k, .request_id = 2000 + (k < 31 ? k : 31),
            .builder = "dup", .slave = "s1", .created_ms = 7000 + k,
            .no_changes = true, .kind = "ci",
        };
        tf_op_build_create(g, &rec);
        TF_CHECK_INT(tf_wgroup_unit_end(g), 0);
    }
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_INT(dint(&f, "SELECT build_id FROM build_requests WHERE id = "
                          "2031"),
                 3032);
    TF_CHECK_INT(dint(&f, "SELECT started_ms FROM build_requests WHERE id = "
                          "2031"),
                 7031);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM build_requests WHERE id > "
                          "2000 AND state = 'running' AND build_id = id + 1000 "
                          "AND started_ms = id + 5000"),
                 30);
    fx_teardown(&f);
}

/* A start batch (master/core/build.c): builds of two builders
 * interleaved, one unit each, with another op between two of them, the
 * builders' counts last. Each builder counts every build it started and
 * names its last one, as if each start had written its builder's row
 * alone (the sqlite engine writes them once per builder and run of
 * starts); a unit that fails alone (a number taken twice) counts for
 * nothing. */
TF_TEST(a_start_batch_counts_each_builders_builds)
{
    static const struct { uint64_t id, number; const char *builder; }
        starts[] = {{1, 1, "b1"}, {2, 1, "b2"}, {3, 2, "b1"}, {4, 3, "b1"},
                    {5, 2, "b2"}, {6, 4, "b1"}};
    fx_t f;
    fx_setup(&f);
    tf_wgroup_t *g = tf_wgroup_new(0);
    tf_op_builder_activate(g, "b1");
    tf_op_builder_activate(g, "b2");
    tf_op_slave_known(g, "s1");
    for (uint64_t i = 1; i <= 8; i++) {
        tf_request_rec_t r = {.id = i, .builder = i % 2 ? "b1" : "b2",
                              .reason = "test", .submitted_ms = 10};
        tf_op_request_create(g, &r);
    }
    TF_CHECK_INT(commit(&f, g), 0);

    units_out_t u;
    g = tf_wgroup_new(0);
    u = (units_out_t){.g = g, .rc = 1};
    for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
        tf_build_rec_t b = {.id = starts[i].id, .number = starts[i].number,
                            .request_id = starts[i].id,
                            .builder = starts[i].builder, .slave = "s1",
                            .created_ms = 20};
        tf_op_build_create(g, &b);
        if (i == 3)
            tf_op_slave_event(g, "s1", 20, "between", NULL);
        TF_CHECK_INT(tf_wgroup_unit_end(g), 0);
    }
    tf_op_builder_counts(g, "b1", 0, 4);
    tf_op_builder_counts(g, "b2", 0, 2);
    TF_CHECK_INT(tf_store_submit(f.s, g, units_cb, &u), 0);
    while (u.calls == 0)
        uv_run(&f.loop, UV_RUN_ONCE);
    TF_CHECK_INT(u.rc, 0);
    TF_CHECK_INT(dint(&f, "SELECT builds_total FROM builders "
                          "WHERE name = 'b1'"), 4);
    TF_CHECK_INT(dint(&f, "SELECT last_build_id FROM builders "
                          "WHERE name = 'b1'"), 6);
    TF_CHECK_INT(dint(&f, "SELECT builds_total FROM builders "
                          "WHERE name = 'b2'"), 2);
    TF_CHECK_INT(dint(&f, "SELECT last_build_id FROM builders "
                          "WHERE name = 'b2'"), 5);
    TF_CHECK_INT(dint(&f, "SELECT running FROM builders WHERE name = 'b1'"),
                 4);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM build_requests "
                          "WHERE state = 'running'"), 6);

    /* A batch whose middle build takes a number b2 already has: the
     * group fails, each unit is applied alone, and only that one is
     * lost, its count with it. */
    static const struct { uint64_t id, number; const char *builder; }
        again[] = {{7, 5, "b1"}, {8, 2, "b2"}, {9, 6, "b1"}};
    g = tf_wgroup_new(0);
    u = (units_out_t){.g = g, .rc = 1};
    for (size_t i = 0; i < sizeof(again) / sizeof(again[0]); i++) {
        tf_build_rec_t b = {.id = again[i].id, .number = again[i].number,
                            .request_id = again[i].id,
                            .builder = again[i].builder, .slave = "s1",
                            .created_ms = 30};
        tf_op_build_create(g, &b);
        TF_CHECK_INT(tf_wgroup_unit_end(g), 0);
    }
    TF_CHECK_INT(tf_store_submit(f.s, g, units_cb, &u), 0);
    while (u.calls == 0)
        uv_run(&f.loop, UV_RUN_ONCE);
    TF_CHECK_INT(u.unit[0], 0);
    TF_CHECK(u.unit[1] != 0);
    TF_CHECK_INT(u.unit[2], 0);
    TF_CHECK_INT(dint(&f, "SELECT builds_total FROM builders "
                          "WHERE name = 'b1'"), 6);
    TF_CHECK_INT(dint(&f, "SELECT last_build_id FROM builders "
                          "WHERE name = 'b1'"), 9);
    TF_CHECK_INT(dint(&f, "SELECT builds_total FROM builders "
                          "WHERE name = 'b2'"), 2);
    TF_CHECK_INT(dint(&f, "SELECT last_build_id FROM builders "
                          "WHERE name = 'b2'"), 5);
    fx_teardown(&f);
}

/* The done callback may read memory of its group. */
typedef struct ctx {
    char text[32];
    int *seen;
} ctx_t;

static void ctx_cb(void *arg, int rc)
{
    ctx_t *c = arg;
    *c->seen = rc == 0 && strcmp(c->text, "still here") == 0;
}

TF_TEST(output_bytes_and_group_memory_round_trip)
{
    fx_t f;
    fx_setup(&f);
    make_build(&f, 1, 7);
    size_t n = 1 << 20;
    unsigned char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)(i * 31 + (i >> 9));
    data[10] = 0;
    tf_wgroup_t *g = event(7, 1);
    tf_op_step_start(g, 7, 0, 1, true);
    TF_CHECK_INT(commit(&f, g), 0);
    g = tf_wgroup_new(n);
    tf_op_build_seq(g, 7, 2);
    tf_output_rec_t o = {.build_id = 7, .seq = 2, .step = 0, .stream = 2,
                         .log_bytes = n};
    TF_CHECK_INT(tf_op_output(g, &o, data, n), 0);
    int seen = 0;
    ctx_t *c = tf_wgroup_alloc(g, sizeof(*c));
    TF_CHECK(c != NULL);
    snprintf(c->text, sizeof(c->text), "still here");
    c->seen = &seen;
    memset(data + 20, 0xff, 8); /* the group has its own copy */
    outcome_t done = {.rc = 1};
    (void)done;
    TF_CHECK_INT(tf_store_submit(f.s, g, ctx_cb, c), 0);
    uint64_t end = uv_hrtime() + 20000000000ull;
    while (!seen && uv_hrtime() < end)
        uv_run(&f.loop, UV_RUN_ONCE);
    TF_CHECK_INT(seen, 1);
    memset(data + 20, 0, 8);
    for (size_t i = 20; i < 28; i++)
        data[i] = (unsigned char)(i * 31 + (i >> 9));
    /* A chunk this big fills a block at once, so it is sealed in its own
     * group (store/logblock.h): the bytes are read back through the log
     * read, which unpacks the block. (A sealed block does not keep the
     * chunks' stream numbers, which no reader ever showed.) */
    TF_CHECK_INT(dint(&f, "SELECT raw_len FROM log_blocks"), n);
    blobq_t bq = {.data = data, .n = n};
    TF_CHECK_INT(tf_store_read_sync(f.s, blob_fn, &bq), 0);
    TF_CHECK_INT(bq.ok, 1);
    free(data);
    fx_teardown(&f);
}

TF_TEST(requests_jobs_and_mail_rows)
{
    fx_t f;
    fx_setup(&f);
    uint64_t ch[] = {5, 6};
    tf_wgroup_t *g = tf_wgroup_new(0);
    tf_job_rec_t j = {.id = 3, .user_id = 1, .author = "Ann",
                      .email = "ann@example.org", .notify = true,
                      .notify_email = "ann@example.org",
                      .patch_sha256 = "ab", .patch_size = 4,
                      .submitted_ms = 10};
    tf_op_patch_put(g, "ab", "diff", 4, 10);
    tf_op_patch_put(g, "ab", "diff", 4, 11); /* once per sha */
    tf_op_job_create(g, &j);
    tf_request_rec_t r = {.id = 1, .builder = "b1", .job_id = 3,
                          .patch_sha256 = "ab", .patch_size = 4,
                          .scheduler = "nightly", .changes = ch,
                          .nchanges = 2};
    tf_op_request_create(g, &r);
    r.id = 2;
    r.changes = NULL;
    r.nchanges = 0;
    tf_op_request_create(g, &r);
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM patches"), 1);
    TF_CHECK_STR(dtext(&f, "SELECT scheduler FROM build_requests WHERE "
                           "id = 1"),
                 "nightly");
    g = tf_wgroup_new(0);
    tf_op_request_collapse(g, 1, 2, 20);
    tf_op_request_cancel(g, 2, 6, 21);
    tf_op_job_running(g, 3);
    tf_op_job_finish(g, 3, "cancelled", 6, 22);
    tf_op_mail_job(g, 3, 22);
    tf_op_mail_job(g, 3, 23); /* once per job */
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_STR(dtext(&f, "SELECT state || collapsed_into FROM "
                           "build_requests WHERE id = 1"),
                 "collapsed2");
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM request_changes WHERE "
                          "request_id = 2"),
                 2);
    TF_CHECK_STR(dtext(&f, "SELECT state || result FROM build_requests "
                           "WHERE id = 2"),
                 "cancelled6");
    TF_CHECK_STR(dtext(&f, "SELECT state FROM try_jobs"), "cancelled");
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM mail_outbox"), 1);
    TF_CHECK_STR(dtext(&f, "SELECT recipients FROM mail_outbox"),
                 "[\"ann@example.org\"]");
    fx_teardown(&f);
}

/* Migration 11: on PostgreSQL a stored cancel on an open build, on an
 * open job and its open builds (TF_Q_CANCELS finds each open build once,
 * with its reason, and none once finished; on sqlite, one master, the op
 * stores nothing and the query finds nothing); a slave's draining flag,
 * set by its op and cleared when it connects again or goes. */
TF_TEST(stored_cancels_and_draining_slaves)
{
    fx_t f;
    fx_setup(&f);
    bool pg = strncmp(f.path, "postgres", 8) == 0;
    make_build(&f, 1, 7);
    tf_wgroup_t *g = tf_wgroup_new(0);
    tf_op_cancel_mark(g, 7, 0, "cancelled through the API");
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_STR(dtext(&f, "SELECT coalesce(cancel_requested, '-') FROM "
                           "builds WHERE id = 7"),
                 pg ? "cancelled through the API" : "-");
    tf_q_cancels_t q = {.q.kind = TF_Q_CANCELS, .max = 10};
    TF_CHECK_INT(tf_store_query_sync(f.s, &q.q), 0);
    TF_CHECK_INT(q.n, pg ? 1 : 0);
    if (pg) {
        TF_CHECK_INT(q.n ? q.rows[0].build_id : 0, 7);
        TF_CHECK_STR(q.n ? q.rows[0].why : "", "cancelled through the API");
    }
    tf_q_cancels_clear(&q);
    /* A job's cancel marks the job; its build is found through it. */
    g = tf_wgroup_new(0);
    tf_job_rec_t j = {.id = 3, .user_id = 1, .author = "Ann",
                      .email = "ann@example.org", .submitted_ms = 10};
    tf_op_job_create(g, &j);
    tf_request_rec_t r = {.id = 2, .builder = "b1", .job_id = 3,
                          .submitted_ms = 10};
    tf_op_request_create(g, &r);
    tf_build_rec_t b = {.id = 8, .number = 2, .request_id = 2,
                        .builder = "b1", .slave = "s1", .created_ms = 20};
    tf_op_build_create(g, &b);
    TF_CHECK_INT(commit(&f, g), 0);
    g = tf_wgroup_new(0);
    tf_op_cancel_mark(g, 0, 3, "the try job was cancelled by ann");
    TF_CHECK_INT(commit(&f, g), 0);
    if (pg) {
        TF_CHECK_STR(dtext(&f, "SELECT cancel_requested FROM try_jobs"),
                     "the try job was cancelled by ann");
        TF_CHECK_STR(dtext(&f, "SELECT cancel_requested FROM builds WHERE "
                               "id = 8"),
                     "the try job was cancelled by ann");
    }
    q = (tf_q_cancels_t){.q.kind = TF_Q_CANCELS, .max = 10};
    TF_CHECK_INT(tf_store_query_sync(f.s, &q.q), 0);
    TF_CHECK_INT(q.n, pg ? 2 : 0);
    tf_q_cancels_clear(&q);
    q = (tf_q_cancels_t){.q.kind = TF_Q_CANCELS, .max = 1};
    TF_CHECK_INT(tf_store_query_sync(f.s, &q.q), 0);
    TF_CHECK_INT(q.n, pg ? 1 : 0);
    tf_q_cancels_clear(&q);
    /* Finished builds carry no cancel to apply. */
    g = tf_wgroup_new(0);
    tf_op_build_finish(g, 7, "b1", "s1", 6, 30, "cancelled", true);
    tf_op_build_finish(g, 8, "b1", "s1", 6, 30, "cancelled", true);
    TF_CHECK_INT(commit(&f, g), 0);
    q = (tf_q_cancels_t){.q.kind = TF_Q_CANCELS, .max = 10};
    TF_CHECK_INT(tf_store_query_sync(f.s, &q.q), 0);
    TF_CHECK_INT(q.n, 0);
    tf_q_cancels_clear(&q);
    /* Draining: set, then cleared by the next connection. */
    g = tf_wgroup_new(0);
    tf_op_slave_connected(g, "s1", "linux", "1", "[]", 40);
    tf_op_slave_draining(g, "s1");
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_INT(dint(&f, "SELECT draining FROM slaves WHERE name = 's1'"),
                 1);
    g = tf_wgroup_new(0);
    tf_op_slave_disconnected(g, "s1", 50);
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_INT(dint(&f, "SELECT draining FROM slaves WHERE name = 's1'"),
                 0);
    g = tf_wgroup_new(0);
    tf_op_slave_draining(g, "s1");
    tf_op_slave_connected(g, "s1", "linux", "1", "[]", 60);
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_INT(dint(&f, "SELECT draining FROM slaves WHERE name = 's1'"),
                 0);
    fx_teardown(&f);
}

/* test_result: one row per test per step; a pass after a fail of the same
 * test in the same build (any step) makes both flaky; a fail after a pass
 * stays a fail; another build is not touched. request_reused and a
 * request rerunning a build without its patch store what they say. */
TF_TEST(test_results_the_flaky_rule_reuse_and_reruns)
{
    fx_t f;
    fx_setup(&f);
    make_build(&f, 1, 7);
    {
        /* A second build of b1 (number 2). */
        tf_wgroup_t *g2 = tf_wgroup_new(0);
        tf_request_rec_t r2 = {.id = 2, .builder = "b1", .reason = "test",
                               .submitted_ms = 1000};
        tf_build_rec_t b2 = {.id = 8, .number = 2, .request_id = 2,
                             .builder = "b1", .slave = "s1",
                             .created_ms = 2000};
        tf_op_request_create(g2, &r2);
        tf_op_build_create(g2, &b2);
        TF_CHECK_INT(commit(&f, g2), 0);
    }
    tf_test_result_rec_t t = {
        .build_id = 7, .step = 0, .builder = "b1", .suite = "s",
        .name = "shaky", .status = "fail", .message = "t.c:9: boom",
        .attempts = 1, .duration_ms = 12, .has_log = true,
        .log_offset = 40, .log_line = 3, .log_lines = 2,
    };
    tf_wgroup_t *g = event(7, 1);
    tf_op_test_result(g, &t);
    t.name = "later";
    t.status = "pass";
    tf_op_test_result(g, &t);
    TF_CHECK_INT(commit(&f, g), 0);
    /* Build 8 fails shaky too: a pass in build 7 leaves it alone. */
    g = event(8, 1);
    t.build_id = 8;
    t.name = "shaky";
    t.status = "fail";
    t.duration_ms = -1;
    t.has_log = false;
    tf_op_test_result(g, &t);
    TF_CHECK_INT(commit(&f, g), 0);
    g = event(7, 2);
    t.build_id = 7;
    t.step = 1;
    t.status = "pass";
    t.message = NULL;
    tf_op_test_result(g, &t);
    t.name = "later";
    t.status = "fail";
    tf_op_test_result(g, &t);
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_STR(dtext(&f, "SELECT group_concat(step || ':' || status, ' ') "
                           "FROM (SELECT step, status FROM test_results "
                           "WHERE build_id = 7 AND name = 'shaky' "
                           "ORDER BY step) AS t"),
                 "0:flaky 1:flaky");
    TF_CHECK_STR(dtext(&f, "SELECT group_concat(step || ':' || status, ' ') "
                           "FROM (SELECT step, status FROM test_results "
                           "WHERE build_id = 7 AND name = 'later' "
                           "ORDER BY step) AS t"),
                 "0:pass 1:fail");
    TF_CHECK_STR(dtext(&f, "SELECT status FROM test_results WHERE "
                           "build_id = 8"),
                 "fail");
    TF_CHECK_STR(dtext(&f, "SELECT message || log_line || '/' || log_lines "
                           "|| '/' || duration_ms FROM test_results WHERE "
                           "build_id = 7 AND step = 0 AND name = 'shaky'"),
                 "t.c:9: boom3/2/12");
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM test_results WHERE "
                          "build_id = 8 AND log_line IS NULL AND "
                          "duration_ms IS NULL"),
                 1);

    g = tf_wgroup_new(0);
    tf_request_rec_t r = {.id = 3, .builder = "b1", .job_id = 4,
                          .without_patch_of = 7};
    tf_op_request_create(g, &r);
    r.id = 4;
    r.without_patch_of = 0;
    tf_op_request_create(g, &r);
    tf_op_request_reused(g, 4, 7, 900);
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_INT(dint(&f, "SELECT without_patch_of FROM build_requests "
                          "WHERE id = 3"),
                 7);
    TF_CHECK_STR(dtext(&f, "SELECT state || result || build_id || reused "
                           "|| finished_ms FROM build_requests WHERE id = 4"),
                 "done071900");
    fx_teardown(&f);
}

TF_TEST(committers_changes_and_schedulers_round_trip)
{
    fx_t f;
    fx_setup(&f);
    int added = -1, again = -1, removed = -1, gone = -1;
    tf_wgroup_t *g = tf_wgroup_new(0);
    tf_op_user_add(g, "ann@example.org", "Ann", "aa", 1, &added);
    tf_op_user_add(g, "ann@example.org", "Ann 2", "bb", 2, &again);
    tf_op_user_add(g, "bob@example.org", "Bob", "cc", 3, NULL);
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_INT(added, 1);
    TF_CHECK_INT(again, 0);
    tf_q_user_t u = {.q.kind = TF_Q_USER_BY_TOKEN, .token_sha256 = "aa"};
    TF_CHECK_INT(tf_store_query_sync(f.s, &u.q), 0);
    TF_CHECK_STR(u.user.email, "ann@example.org");
    TF_CHECK_STR(u.user.name, "Ann");
    snprintf(u.token_sha256, sizeof(u.token_sha256), "bb");
    TF_CHECK_INT(tf_store_query_sync(f.s, &u.q), TF_ENOENT);
    g = tf_wgroup_new(0);
    tf_op_user_remove(g, "ann@example.org", &removed);
    tf_op_user_remove(g, "nobody@example.org", &gone);
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK_INT(removed, 1);
    TF_CHECK_INT(gone, 0);
    tf_q_users_t us = {.q.kind = TF_Q_USERS};
    TF_CHECK_INT(tf_store_query_sync(f.s, &us.q), 0);
    TF_CHECK(us.n == 1 && strcmp(us.rows[0].email, "bob@example.org") == 0 &&
             us.rows[0].created_ms == 3 && us.rows[0].last_used_ms == 0);
    free(us.rows);

    tf_change_rec_t c[] = {
        {.revision = "r1", .author = "A", .email = "a@x", .message = "one",
         .files_json = "[\"a.c\"]", .committer_ms = 5},
        {.revision = "r2", .author = "B", .email = "b@x", .message = "two"},
    };
    uint64_t ids[2] = {0, 0};
    bool fresh[2] = {false, false};
    g = tf_wgroup_new(0);
    tf_op_changes_record(g, "/repo", "main", "r2", c, 2, 9, ids, fresh);
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK(ids[0] && ids[1] && ids[0] != ids[1] && fresh[0] && fresh[1]);
    uint64_t ids2[1] = {0};
    bool fresh2[1] = {true};
    g = tf_wgroup_new(0);
    tf_op_changes_record(g, "/repo", "main", "r2", c + 1, 1, 10, ids2,
                         fresh2);
    tf_op_poller_health(g, "/repo", "main", 11, 10, "git fetch failed", 11);
    tf_op_scheduler_state(g, "nightly", 0, "r1", 99);
    TF_CHECK_INT(commit(&f, g), 0);
    TF_CHECK(ids2[0] == ids[1] && !fresh2[0]);
    tf_q_pollers_t p = {.q.kind = TF_Q_POLLERS};
    TF_CHECK_INT(tf_store_query_sync(f.s, &p.q), 0);
    TF_CHECK(p.n == 1 && strcmp(p.rows[0].last_revision, "r2") == 0 &&
             p.rows[0].failing && p.rows[0].failing_since_ms == 11 &&
             strcmp(p.rows[0].last_error, "git fetch failed") == 0);
    tf_q_pollers_clear(&p);
    tf_q_scheduler_t sq = {.q.kind = TF_Q_SCHEDULER, .name = "nightly",
                           .repository = "/repo", .branch = "main",
                           .limit = 10};
    TF_CHECK_INT(tf_store_query_sync(f.s, &sq.q), 0);
    TF_CHECK(sq.have_row && sq.last_fired_ms == 0 &&
             strcmp(sq.last_revision, "r1") == 0);
    TF_CHECK(sq.nchanges == 1 && sq.changes[0].id == ids[1] &&
             strcmp(sq.changes[0].revision, "r2") == 0);
    tf_q_scheduler_clear(&sq);
    sq = (tf_q_scheduler_t){.q.kind = TF_Q_SCHEDULER, .name = "nope"};
    TF_CHECK_INT(tf_store_query_sync(f.s, &sq.q), 0);
    TF_CHECK(!sq.have_row && sq.nchanges == 0);
    tf_q_scheduler_clear(&sq);
    fx_teardown(&f);
}

TF_TEST(a_database_url_without_its_engine_is_refused)
{
    uv_loop_t loop;
    tf_store_t *s = NULL;

    TF_CHECK_INT(uv_loop_init(&loop), 0);
    TF_CHECK_INT(tf_store_open(&loop, "mysql://db.example/farm", NULL,
                               &s),
                 TF_EINVAL);
    TF_CHECK(s == NULL);
    TF_CHECK_INT(uv_loop_close(&loop), 0);
}

/* Runs TF_Q_REQUEST_STATES for ids[0..n) as self and checks each
 * state against want. */
static void check_request_states(fx_t *f, const char *self,
                                 const uint64_t *ids, size_t n,
                                 const tf_rq_state_t *want)
{
    tf_q_request_states_t *q = calloc(1, sizeof(*q));
    if (!q)
        exit(2);
    q->q.kind = TF_Q_REQUEST_STATES;
    q->self = self;
    memcpy(q->ids, ids, n * sizeof(*ids));
    q->n = n;
    TF_CHECK_INT(tf_store_query_sync(f->s, &q->q), 0);
    for (size_t i = 0; i < n; i++)
        if (q->state[i] != (uint8_t)want[i]) {
            fprintf(stderr, "request %llu as \"%s\": state %d, want %d\n",
                    (unsigned long long)ids[i], self, q->state[i], want[i]);
            TF_CHECK(q->state[i] == (uint8_t)want[i]);
        }
    free(q);
}

/* TF_Q_REQUEST_STATES (a shared master weeding out its stale copies):
 * pending, running on a build self owns or on another's, ended (done,
 * cancelled, collapsed) and absent, by id in any order, over more ids
 * than one statement reads (and a running request whose build finished
 * is not taken for another master's); too many ids is TF_EINVAL. */
TF_TEST(request_states_tell_pending_running_elsewhere_ended_and_absent)
{
    fx_t f;
    fx_setup(&f);
    make_build(&f, 2, 7); /* request 2 runs build 7, owner "" */
    tf_wgroup_t *g = tf_wgroup_new(0);
    for (uint64_t id = 1; id <= 6; id++) {
        if (id == 2)
            continue;
        tf_request_rec_t r = {.id = id, .builder = "b1",
                              .submitted_ms = 10};
        tf_op_request_create(g, &r);
    }
    tf_op_request_done(g, 3, 0, 20);
    tf_op_request_cancel(g, 4, 6, 21);
    tf_op_request_collapse(g, 5, 6, 22);
    TF_CHECK_INT(commit(&f, g), 0);
    uint64_t ids[] = {99, 1, 2, 3, 4, 5, 6};
    tf_rq_state_t mine[] = {TF_RQ_ABSENT, TF_RQ_PENDING, TF_RQ_RUNNING,
                            TF_RQ_ENDED, TF_RQ_ENDED, TF_RQ_ENDED,
                            TF_RQ_PENDING};
    check_request_states(&f, "", ids, 7, mine);
    tf_rq_state_t other[] = {TF_RQ_ABSENT, TF_RQ_PENDING, TF_RQ_ELSEWHERE,
                             TF_RQ_ENDED, TF_RQ_ENDED, TF_RQ_ENDED,
                             TF_RQ_PENDING};
    check_request_states(&f, "host/1/0000abcd", ids, 7, other);
    /* 70 ids (three statements): the known ones at the ends and in the
     * middle, the rest absent. */
    uint64_t many[70];
    tf_rq_state_t want[70];
    for (size_t i = 0; i < 70; i++) {
        many[i] = 1000 + i;
        want[i] = TF_RQ_ABSENT;
    }
    many[0] = 3, want[0] = TF_RQ_ENDED;
    many[33] = 2, want[33] = TF_RQ_ELSEWHERE;
    many[69] = 1, want[69] = TF_RQ_PENDING;
    check_request_states(&f, "m2", many, 70, want);
    /* Build 7 finished, its request not ended yet: no open build says
     * whose it is. */
    g = tf_wgroup_new(0);
    tf_op_build_finish(g, 7, "b1", "s1", 0, 30, NULL, true);
    TF_CHECK_INT(commit(&f, g), 0);
    tf_rq_state_t after[] = {TF_RQ_ABSENT, TF_RQ_PENDING, TF_RQ_RUNNING,
                             TF_RQ_ENDED, TF_RQ_ENDED, TF_RQ_ENDED,
                             TF_RQ_PENDING};
    check_request_states(&f, "m2", ids, 7, after);
    tf_q_request_states_t *q = calloc(1, sizeof(*q));
    if (!q)
        exit(2);
    q->q.kind = TF_Q_REQUEST_STATES;
    q->n = TF_REQUEST_STATES_MAX + 1;
    TF_CHECK_INT(tf_store_query_sync(f.s, &q->q), TF_EINVAL);
    free(q);
    fx_teardown(&f);
}

/* tf_q_farm_running (a shared master's GET /api/v1/requests): the
 * running requests only, by id, with their fields, of one builder when
 * asked; a request of a try job is "try". */
typedef struct farmq {
    const char *builder;
    json_t *out;
    int rc;
} farmq_t;

static int farmq_fn(tf_db_t *db, void *arg)
{
    farmq_t *q = arg;
    q->rc = tf_q_farm_running(db, q->builder, &q->out);
    return q->rc;
}

TF_TEST(farm_running_lists_the_running_requests_of_every_master)
{
    fx_t f;
    fx_setup(&f);
    make_build(&f, 2, 7); /* request 2 of b1 runs build 7 */
    tf_wgroup_t *g = tf_wgroup_new(0);
    tf_request_rec_t r1 = {.id = 1, .builder = "b1", .submitted_ms = 10};
    tf_request_rec_t r3 = {.id = 3, .builder = "b1", .submitted_ms = 11};
    tf_op_request_create(g, &r1);
    tf_op_request_create(g, &r3);
    tf_op_request_done(g, 3, 0, 20);
    TF_CHECK_INT(commit(&f, g), 0);
    farmq_t q = {0};
    TF_CHECK_INT(tf_store_read_sync(f.s, farmq_fn, &q), 0);
    TF_CHECK_INT(q.rc, 0);
    TF_CHECK_INT((long long)json_array_size(q.out), 1);
    json_t *row = json_array_get(q.out, 0);
    char *text = json_dumps(row, JSON_COMPACT);
    /* id, builder, reason, owner, priority, submitted_ms, retries,
     * build_id, job_id, is_try */
    TF_CHECK(text && strcmp(text, "[2,\"b1\",\"test\",\"ann\",2,1000,0,7,0,"
                                  "false]") == 0);
    if (text && strcmp(text, "[2,\"b1\",\"test\",\"ann\",2,1000,0,7,0,"
                             "false]") != 0)
        fprintf(stderr, "row: %s\n", text);
    free(text);
    json_decref(q.out);
    q = (farmq_t){.builder = "b1"};
    TF_CHECK_INT(tf_store_read_sync(f.s, farmq_fn, &q), 0);
    TF_CHECK_INT((long long)json_array_size(q.out), 1);
    json_decref(q.out);
    q = (farmq_t){.builder = "b2"};
    TF_CHECK_INT(tf_store_read_sync(f.s, farmq_fn, &q), 0);
    TF_CHECK(json_is_array(q.out) && json_array_size(q.out) == 0);
    json_decref(q.out);
    fx_teardown(&f);
}

/* An async query answers on the loop thread. */
TF_TEST(queries_run_off_the_loop_and_answer_on_it)
{
    fx_t f;
    fx_setup(&f);
    tf_wgroup_t *g = tf_wgroup_new(0);
    tf_op_user_add(g, "ann@example.org", "Ann", "aa", 1, NULL);
    TF_CHECK_INT(commit(&f, g), 0);
    tf_q_user_t u = {.q.kind = TF_Q_USER_BY_TOKEN, .token_sha256 = "aa"};
    outcome_t o = {.rc = 1};
    TF_CHECK_INT(tf_store_query(f.s, &u.q, outcome_cb, &o), 0);
    wait_outcome(&f, &o);
    TF_CHECK_INT(o.rc, 0);
    TF_CHECK_INT(u.user.id, 1);
    TF_CHECK_INT(tf_store_query(f.s, NULL, outcome_cb, &o), TF_EINVAL);
    tf_query_t bad = {.kind = (tf_query_kind_t)999};
    TF_CHECK_INT(tf_store_query_sync(f.s, &bad), TF_EINVAL);
    fx_teardown(&f);
}

/* Once the master serves, a synchronous read on the loop thread is a bug
 * that asserts (in a child: the assertion kills it). Other threads (the
 * mail sender) and the time before serving may read synchronously. */
TF_TEST(a_synchronous_read_on_the_serving_loop_asserts)
{
#ifdef NDEBUG
    printf("  skipped: assertions are off (NDEBUG)\n");
#else
    fx_t f;
    fx_setup(&f);
    tf_q_users_t us = {.q.kind = TF_Q_USERS};
    TF_CHECK_INT(tf_store_query_sync(f.s, &us.q), 0);
    free(us.rows);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* Keep the child's abort quiet in the test's output. */
        if (!freopen("/dev/null", "w", stderr))
            _exit(3);
        tf_store_serving(f.s);
        tf_q_users_t q = {.q.kind = TF_Q_USERS};
        tf_store_query_sync(f.s, &q.q);
        _exit(0);
    }
    int status = 0;
    TF_CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    TF_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    fx_teardown(&f);
#endif
}

/* Shared masters' ids (store.shared, issue 15): tf_store_reserve_ids
 * never waits for the database (the engine reserves each block ahead,
 * off the loop); when the next block is not ready yet it says TF_EFULL
 * and the farm callback says TF_FARM_IDS once it is, after which the
 * reserve succeeds. Two stores on one database (two masters) never get
 * overlapping blocks. On sqlite there is nothing to share: TF_ESTATE. */
typedef struct ids_fx {
    unsigned what; /* TF_FARM_* seen */
} ids_fx_t;

static void ids_farm_cb(void *arg, unsigned what)
{
    ((ids_fx_t *)arg)->what |= what;
}

TF_TEST(shared_ids_are_reserved_ahead_and_never_overlap)
{
    fx_t f;
    ids_fx_t seen[2] = {{0}, {0}};
    tf_store_t *s[2] = {NULL, NULL};
    uint64_t firsts[16];
    size_t nf = 0;
    unsigned efull = 0;

    snprintf(f.dir, sizeof(f.dir), "%s/tf-ids-XXXXXX",
             getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR")
                                                   : "/tmp");
    if (!mkdtemp(f.dir) || uv_loop_init(&f.loop) != 0)
        exit(2);
    snprintf(f.path, sizeof(f.path), "%s/tf.db", f.dir);
    tf_test_pg_database(f.path, sizeof(f.path));
    bool pg = strncmp(f.path, "postgres", 8) == 0;
    for (int k = 0; k < (pg ? 2 : 1); k++) {
        tf_store_opts_t o = {.exclusive = true, .shared = true,
                             .farm_cb = ids_farm_cb, .farm_arg = &seen[k]};
        TF_CHECK_INT(tf_store_open(&f.loop, f.path, &o, &s[k]), 0);
        if (!s[k])
            exit(1);
    }
    if (!pg) {
        uint64_t x;
        TF_CHECK_INT(tf_store_reserve_ids(s[0], &x), TF_ESTATE);
        goto out;
    }
    for (int round = 0; round < 12; round++) {
        int k = round % 2;
        uint64_t first = 0;
        uint64_t t0 = uv_hrtime();
        int rc = tf_store_reserve_ids(s[k], &first);
        /* a mutex, not a round trip: well under the time of one */
        TF_CHECK((uv_hrtime() - t0) < 200000000ull);
        if (rc == TF_EFULL) {
            efull++;
            seen[k].what = 0;
            uint64_t end = uv_hrtime() + 10000000000ull;
            while (!(seen[k].what & TF_FARM_IDS) && uv_hrtime() < end)
                uv_run(&f.loop, UV_RUN_ONCE);
            TF_CHECK(seen[k].what & TF_FARM_IDS);
            rc = tf_store_reserve_ids(s[k], &first);
        }
        TF_CHECK_INT(rc, 0);
        if (rc == 0)
            firsts[nf++] = first;
    }
    /* Taken back to back, most blocks were not ready yet at least once:
     * the reserve said so instead of waiting. */
    TF_CHECK(efull > 0);
    TF_CHECK_INT(nf, 12);
    for (size_t a = 0; a < nf; a++) {
        TF_CHECK(firsts[a] > 0);
        for (size_t b = a + 1; b < nf; b++) {
            uint64_t lo = firsts[a] < firsts[b] ? firsts[a] : firsts[b];
            uint64_t hi = firsts[a] < firsts[b] ? firsts[b] : firsts[a];
            TF_CHECK(hi - lo >= TF_STORE_ID_BLOCK);
        }
    }
out:
    for (int k = 0; k < 2; k++) {
        bool closed = false;
        if (!s[k])
            continue;
        tf_store_close(s[k], closed_cb, &closed);
        while (!closed)
            uv_run(&f.loop, UV_RUN_ONCE);
    }
    f.s = NULL;
    fx_teardown(&f);
}

TF_TEST_MAIN()
