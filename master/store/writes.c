/*
 * writes.c - the write statements the two engines share (writes.h): the
 * SQL both run with the same text, and builders binding an operation's
 * record to it, so a statement and its values are written once.
 *
 * Why builders and not a shared apply: what lies between an operation's
 * statements is each engine's (how it counts the rows a statement
 * changed, its result codes, a shared PostgreSQL master's guarded forms
 * and claims, log sealing), while the statements and the values they
 * bind are the same. An engine asks tf__writes_op first and runs what it
 * gets; the operations it stores its own way it applies itself, taking
 * their common steps from the builders and the tf__sql_* texts below.
 *
 * Every text here has static storage: the engines' statement caches are
 * keyed by its address (sqlite's prepared statements, PostgreSQL's
 * PQprepare per connection, each cache per engine and connection).
 */
#include "store/writes.h"

#include <stdint.h>

#define I(x) tf_sql_int((int64_t)(x))
#define T(x) tf_sql_text(x)
#define N() tf_sql_null()
#define OPT(has, x) ((has) ? I(x) : N())
#define NZ(x) ((x) ? I(x) : N())

/* ------------------------------------------------------------------ */
/* The SQL                                                             */
/* ------------------------------------------------------------------ */

/* Slaves and builders. */
static const char SQL_SLAVE_EVENT[] =
    "INSERT INTO slave_events(slave, time_ms, event, detail) "
    "VALUES(?1, ?2, ?3, ?4)";
static const char SQL_SLAVE_DISCONNECTED[] =
    "UPDATE slaves SET connected = 0, disconnected_ms = ?1, "
    "last_seen_ms = ?1, draining = 0 WHERE name = ?2";
static const char SQL_SLAVE_DRAINING[] =
    "UPDATE slaves SET draining = 1 WHERE name = ?1";
static const char SQL_SLAVE_SEEN[] =
    "UPDATE slaves SET last_seen_ms = ?1 WHERE name = ?2";
static const char SQL_SLAVES_RESET[] = "UPDATE slaves SET connected = 0";
static const char SQL_SLAVE_KNOWN[] =
    "INSERT INTO slaves(name) VALUES(?1) ON CONFLICT(name) DO NOTHING";
static const char SQL_BUILDERS_DEACTIVATE[] = "UPDATE builders SET active = 0";
static const char SQL_BUILDER_ACTIVATE[] =
    "INSERT INTO builders(name, active) VALUES(?1, 1) "
    "ON CONFLICT(name) DO UPDATE SET active = 1";
static const char SQL_BUILDER_COUNTS[] =
    "UPDATE builders SET pending = ?1, running = ?2 WHERE name = ?3";

/* Requests. */
static const char SQL_REQUEST_CREATE[] =
    "INSERT INTO build_requests(id, builder, state, reason, owner, priority, "
    "submitted_ms, properties, job_id, tests, revision, patch_sha256, "
    "patch_size, scheduler, without_patch_of) VALUES(?1, ?2, 'pending', ?3, "
    "?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
static const char SQL_REQUEST_REQUEUE[] =
    "UPDATE build_requests SET state = 'pending', retries = ?1, "
    "build_id = NULL WHERE id = ?2";
static const char SQL_REQUEST_COLLAPSE[] =
    "UPDATE build_requests SET state = 'collapsed', collapsed_into = ?1, "
    "finished_ms = ?2 WHERE id = ?3";
static const char SQL_REQUEST_CANCEL[] =
    "UPDATE build_requests SET state = 'cancelled', result = ?1, "
    "finished_ms = ?2 WHERE id = ?3";
static const char SQL_REQUEST_DONE[] =
    "UPDATE build_requests SET state = 'done', result = ?1, "
    "finished_ms = ?2 WHERE id = ?3";
static const char SQL_REQUEST_REUSED[] =
    "UPDATE build_requests SET state = 'done', result = 0, build_id = ?1, "
    "reused = 1, started_ms = ?2, finished_ms = ?2 WHERE id = ?3";

/* Builds and steps. */
const char tf__sql_build_step[] =
    "INSERT INTO steps(build_id, idx, name, state, command, flags) "
    "VALUES(?1, ?2, ?3, 'pending', ?4, ?5)";
static const char SQL_BUILD_REQUEST_RUNNING[] =
    "UPDATE build_requests SET state = 'running', build_id = ?1, "
    "started_ms = coalesce(started_ms, ?2) WHERE id = ?3";
static const char SQL_BUILD_BUILDER[] =
    "UPDATE builders SET last_build_id = ?1, builds_total = builds_total + ?2 "
    "WHERE name = ?3";
const char tf__sql_build_seq[] =
    "UPDATE builds SET last_seq = ?1 WHERE id = ?2 AND last_seq = ?3";
static const char SQL_STEP_START_BUILD[] =
    "UPDATE builds SET state = 'running', started_ms = ?1 WHERE id = ?2";
static const char SQL_STEP_START[] =
    "UPDATE steps SET state = 'running', started_ms = ?1 "
    "WHERE build_id = ?2 AND idx = ?3";
const char tf__sql_log_step[] =
    "SELECT log_sealed, log_bytes FROM steps WHERE build_id = ?1 AND idx = ?2";
const char tf__sql_log_block_put[] =
    "INSERT INTO log_blocks(build_id, step, offset, line, raw_len, codec, "
    "data) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const char tf__sql_log_tail_drop[] =
    "DELETE FROM log_chunks WHERE build_id = ?1 AND step = ?2 "
    "AND offset >= ?3 AND offset < ?4";
const char tf__sql_log_sealed[] =
    "UPDATE steps SET log_sealed = ?1 WHERE build_id = ?2 AND idx = ?3";
const char tf__sql_log_unsealed[] =
    "SELECT build_id, idx FROM steps WHERE log_sealed < log_bytes "
    "AND state = 'done' AND (build_id > ?1 OR (build_id = ?1 AND idx >= ?2)) "
    "ORDER BY build_id, idx LIMIT 1";
static const char SQL_STEP_FINISH[] =
    "UPDATE steps SET state = 'done', result = ?1, finished_ms = ?2, "
    "duration_ms = ?3, exit_code = ?4, signal = ?5, timed_out = ?6, "
    "text = ?7, started_ms = CASE WHEN ?1 = 3 THEN started_ms "
    "ELSE coalesce(started_ms, ?10) END, info = ?11, warnings = ?12 "
    "WHERE build_id = ?8 AND idx = ?9";
const char tf__sql_build_got_revision[] =
    "UPDATE builds SET got_revision = ?1 WHERE id = ?2";
const char tf__sql_test_flaky[] =
    "UPDATE test_results SET status = 'flaky' WHERE build_id = ?1 "
    "AND suite = ?2 AND name = ?3 AND status = 'fail'";
static const char SQL_TEST_RESULT[] =
    "INSERT INTO test_results(build_id, step, suite, name, builder, status, "
    "attempts, duration_ms, outcome, message, log_offset, log_line, "
    "log_lines) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
    "?13) ON CONFLICT(build_id, suite, name, step) DO UPDATE SET "
    "status = excluded.status, attempts = excluded.attempts, "
    "duration_ms = excluded.duration_ms, outcome = excluded.outcome, "
    "message = excluded.message, log_offset = excluded.log_offset, "
    "log_line = excluded.log_line, log_lines = excluded.log_lines";
static const char SQL_STEP_FORCE_END[] =
    "UPDATE steps SET state = 'done', result = ?1, finished_ms = ?2, "
    "text = ?3 WHERE build_id = ?4 AND idx = ?5";
const char tf__sql_build_finish[] =
    "UPDATE builds SET state = 'finished', result = ?1, finished_ms = ?2, "
    "text = ?3, started_ms = coalesce(started_ms, ?2) WHERE id = ?4";
static const char SQL_BUILD_FINISH_BUILDER[] =
    "UPDATE builders SET last_complete_build_id = ?1, "
    "last_complete_result = ?2, last_complete_ms = ?3 WHERE name = ?4";
static const char SQL_BUILD_FINISH_SLAVE[] =
    "UPDATE slaves SET builds_done = builds_done + 1 WHERE name = ?1";

/* Try jobs and committers. */
static const char SQL_PATCH_PUT[] =
    "INSERT INTO patches(sha256, size, created_ms, data) "
    "VALUES(?1, ?2, ?3, ?4) ON CONFLICT(sha256) DO NOTHING";
static const char SQL_JOB_CREATE[] =
    "INSERT INTO try_jobs(id, user_id, author, email, notify, notify_email, "
    "description, review_url, patchset, base_revision, patch_sha256, "
    "patch_size, state, submitted_ms, new_failures_only) VALUES(?1, ?2, "
    "?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'pending', ?13, ?14)";
static const char SQL_JOB_RUNNING[] =
    "UPDATE try_jobs SET state = 'running' WHERE id = ?1 "
    "AND state = 'pending'";
const char tf__sql_job_finish[] =
    "UPDATE try_jobs SET state = ?1, result = ?2, finished_ms = ?3 "
    "WHERE id = ?4";
static const char SQL_USER_ADD[] =
    "INSERT INTO users(email, name, token_sha256, created_ms) "
    "VALUES(?1, ?2, ?3, ?4) ON CONFLICT(email) DO NOTHING";
static const char SQL_USER_REMOVE[] = "DELETE FROM users WHERE email = ?1";

/* Changes, pollers, schedulers. */
static const char SQL_CHANGE_INSERT[] =
    "INSERT INTO changes(repository, branch, revision, author, email, "
    "committer_ms, message, files, created_ms) VALUES(?1, ?2, ?3, ?4, ?5, "
    "?6, ?7, ?8, ?9) ON CONFLICT(repository, branch, revision) DO NOTHING";
const char tf__sql_change_id[] =
    "SELECT id FROM changes WHERE repository = ?1 AND branch = ?2 AND "
    "revision = ?3";
const char tf__sql_poller_head[] =
    "INSERT INTO pollers(repository, branch, last_revision, last_poll_ms, "
    "last_ok_ms) VALUES(?1, ?2, ?3, ?4, ?4) "
    "ON CONFLICT(repository, branch) DO UPDATE SET last_revision = ?3, "
    "last_poll_ms = ?4, last_ok_ms = ?4, last_error = NULL, "
    "failing_since_ms = NULL";
static const char SQL_POLLER_HEALTH[] =
    "INSERT INTO pollers(repository, branch, last_poll_ms, last_ok_ms, "
    "last_error, failing_since_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6) "
    "ON CONFLICT(repository, branch) DO UPDATE SET last_poll_ms = ?3, "
    "last_ok_ms = ?4, last_error = ?5, failing_since_ms = ?6";
static const char SQL_SCHEDULER_STATE[] =
    "INSERT INTO scheduler_state(name, last_fired_ms, last_revision, "
    "next_fire_ms) VALUES(?1, ?2, ?3, ?4) ON CONFLICT(name) DO UPDATE SET "
    "last_fired_ms = ?2, last_revision = ?3, next_fire_ms = ?4";

/* Retention (the engines' maintain). */
const char tf__sql_ret_by_count[] =
    "SELECT id FROM builds WHERE builder = ?1 AND logs_removed_ms IS NULL "
    "AND state = 'finished' AND number < (SELECT number FROM builds "
    "WHERE builder = ?1 AND state = 'finished' ORDER BY number DESC "
    "LIMIT 1 OFFSET ?2) ORDER BY number LIMIT 1";
const char tf__sql_ret_by_age[] =
    "SELECT id FROM builds WHERE builder = ?1 AND logs_removed_ms IS NULL "
    "AND state = 'finished' AND finished_ms < ?2 ORDER BY number LIMIT 1";
const char tf__sql_ret_mark[] =
    "UPDATE builds SET logs_removed_ms = ?1 WHERE id = ?2";
const char tf__sql_ret_mark_steps[] =
    "UPDATE steps SET log_sealed = log_bytes WHERE build_id = ?1 "
    "AND log_sealed < log_bytes";

/* ------------------------------------------------------------------ */
/* The builders                                                        */
/* ------------------------------------------------------------------ */

int tf__writes_run(tf_engine_t *e, tf_writes_exec_fn exec,
                   const tf_sqlstmt_t *st, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = exec(e, st[i].sql, st[i].vals, st[i].nvals);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* *st is sql with the n values at v (copied there from src). */
static void put(tf_sqlstmt_t *st, tf_sqlval_t *v, const char *sql,
                const tf_sqlval_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] = src[i];
    *st = (tf_sqlstmt_t){.sql = sql, .vals = n ? v : NULL, .nvals = n};
}

#define PUT(st, v, sql, ...)                                                   \
    put(st, v, sql, (const tf_sqlval_t[]){__VA_ARGS__},                        \
        sizeof((const tf_sqlval_t[]){__VA_ARGS__}) / sizeof(tf_sqlval_t))

size_t tf__writes_op(const tf_op_t *op, tf_sqlstmt_t *st, tf_sqlval_t *v)
{
    switch (op->kind) {
    case TF_OP_SLAVE_EVENT: {
        const tf_op_slave_event_t *o = &op->u.slave_event;
        PUT(st, v, SQL_SLAVE_EVENT, T(o->slave), I(o->time_ms), T(o->event),
            T(o->detail));
        return 1;
    }
    case TF_OP_SLAVE_DISCONNECTED:
        PUT(st, v, SQL_SLAVE_DISCONNECTED, I(op->u.slave_time.time_ms),
            T(op->u.slave_time.name));
        return 1;
    case TF_OP_SLAVE_SEEN:
        PUT(st, v, SQL_SLAVE_SEEN, I(op->u.slave_time.time_ms),
            T(op->u.slave_time.name));
        return 1;
    case TF_OP_SLAVE_KNOWN:
        PUT(st, v, SQL_SLAVE_KNOWN, T(op->u.slave_time.name));
        return 1;
    case TF_OP_SLAVE_DRAINING:
        PUT(st, v, SQL_SLAVE_DRAINING, T(op->u.slave_time.name));
        return 1;
    case TF_OP_SLAVES_RESET:
        put(st, v, SQL_SLAVES_RESET, NULL, 0);
        return 1;
    case TF_OP_BUILDERS_DEACTIVATE:
        put(st, v, SQL_BUILDERS_DEACTIVATE, NULL, 0);
        return 1;
    case TF_OP_BUILDER_ACTIVATE:
        PUT(st, v, SQL_BUILDER_ACTIVATE, T(op->u.name.name));
        return 1;
    case TF_OP_BUILDER_COUNTS: {
        const tf_op_builder_counts_t *o = &op->u.builder_counts;
        PUT(st, v, SQL_BUILDER_COUNTS, I(o->pending), I(o->running),
            T(o->name));
        return 1;
    }
    case TF_OP_STEP_START: {
        const tf_op_step_start_t *o = &op->u.step_start;
        size_t n = 0;
        if (o->first)
            PUT(&st[n++], v, SQL_STEP_START_BUILD, I(o->time_ms),
                I(o->build_id));
        PUT(&st[n++], v + 2, SQL_STEP_START, I(o->time_ms), I(o->build_id),
            I(o->step));
        return n;
    }
    case TF_OP_PATCH_PUT: {
        const tf_op_patch_put_t *o = &op->u.patch_put;
        PUT(st, v, SQL_PATCH_PUT, T(o->sha256), I(o->len), I(o->created_ms),
            tf_sql_blob(o->data, o->len));
        return 1;
    }
    case TF_OP_JOB_CREATE: {
        const tf_op_job_create_t *o = &op->u.job_create;
        PUT(st, v, SQL_JOB_CREATE, I(o->id), I(o->user_id), T(o->author),
            T(o->email), I(o->notify ? 1 : 0), T(o->notify_email),
            T(o->description), T(o->review_url), T(o->patchset),
            T(o->base_revision), T(o->patch_sha256), I(o->patch_size),
            I(o->submitted_ms), I(o->new_failures_only ? 1 : 0));
        return 1;
    }
    case TF_OP_JOB_RUNNING:
        PUT(st, v, SQL_JOB_RUNNING, I(op->u.job_end.id));
        return 1;
    case TF_OP_JOB_FINISH: {
        const tf_op_job_end_t *o = &op->u.job_end;
        PUT(st, v, tf__sql_job_finish, T(o->state), I(o->result),
            I(o->time_ms), I(o->id));
        return 1;
    }
    case TF_OP_POLLER_HEALTH: {
        const tf_op_poller_health_t *o = &op->u.poller_health;
        PUT(st, v, SQL_POLLER_HEALTH, T(o->repository), T(o->branch),
            I(o->last_poll_ms), NZ(o->last_ok_ms), T(o->last_error),
            NZ(o->failing_since_ms));
        return 1;
    }
    case TF_OP_SCHEDULER_STATE: {
        const tf_op_scheduler_state_t *o = &op->u.scheduler_state;
        PUT(st, v, SQL_SCHEDULER_STATE, T(o->name),
            o->last_fired_ms > 0 ? I(o->last_fired_ms) : N(),
            T(o->last_revision),
            o->next_fire_ms > 0 ? I(o->next_fire_ms) : N());
        return 1;
    }
    default:
        return 0;
    }
}

void tf__writes_request_create(tf_sqlstmt_t *st, tf_sqlval_t *v,
                               const tf_op_request_create_t *o)
{
    PUT(st, v, SQL_REQUEST_CREATE, I(o->id), T(o->builder), T(o->reason),
        T(o->owner), I(o->priority), I(o->submitted_ms), T(o->properties),
        NZ(o->job_id), T(o->tests), T(o->revision), T(o->patch_sha256),
        o->patch_sha256 ? I(o->patch_size) : N(), T(o->scheduler),
        NZ(o->without_patch_of));
}

void tf__writes_request_end(tf_sqlstmt_t *st, tf_sqlval_t *v,
                            tf_op_kind_t kind, const tf_op_request_end_t *o)
{
    switch (kind) {
    case TF_OP_REQUEST_REQUEUE:
        PUT(st, v, SQL_REQUEST_REQUEUE, I(o->retries), I(o->id));
        break;
    case TF_OP_REQUEST_COLLAPSE:
        PUT(st, v, SQL_REQUEST_COLLAPSE, I(o->into), I(o->time_ms),
            I(o->id));
        break;
    case TF_OP_REQUEST_CANCEL:
        PUT(st, v, SQL_REQUEST_CANCEL, I(o->result), I(o->time_ms),
            I(o->id));
        break;
    case TF_OP_REQUEST_REUSED:
        PUT(st, v, SQL_REQUEST_REUSED, I(o->into), I(o->time_ms), I(o->id));
        break;
    default:
        PUT(st, v, SQL_REQUEST_DONE, I(o->result), I(o->time_ms), I(o->id));
        break;
    }
}

void tf__writes_build_step(tf_sqlstmt_t *st, tf_sqlval_t *v,
                            const tf_op_build_create_t *o, size_t i)
{
    PUT(st, v, tf__sql_build_step, I(o->id), I(i), T(o->steps[i].name),
        T(o->steps[i].command_json), I(o->steps[i].flags));
}

void tf__writes_build_request(tf_sqlstmt_t *st, tf_sqlval_t *v,
                              const tf_op_build_create_t *o)
{
    PUT(st, v, SQL_BUILD_REQUEST_RUNNING, I(o->id), I(o->created_ms),
        I(o->request_id));
}

void tf__writes_builder_builds(tf_sqlstmt_t *st, tf_sqlval_t *v,
                               const char *builder, uint64_t last_id,
                               unsigned n)
{
    PUT(st, v, SQL_BUILD_BUILDER, I(last_id), I(n), T(builder));
}

size_t tf__writes_build_started(tf_sqlstmt_t *st, tf_sqlval_t *v,
                                const tf_op_build_create_t *o)
{
    tf__writes_build_request(&st[0], v, o);
    tf__writes_builder_builds(&st[1], v + 3, o->builder, o->id, 1);
    return 2;
}

void tf__writes_step_finish(tf_sqlstmt_t *st, tf_sqlval_t *v,
                            const tf_op_step_finish_t *o)
{
    PUT(st, v, SQL_STEP_FINISH, I(o->result), I(o->time_ms),
        I(o->duration_ms), OPT(o->has_exit_code, o->exit_code),
        OPT(o->has_signal, o->signal), I(o->timed_out ? 1 : 0), T(o->text),
        I(o->build_id), I(o->step), I(o->time_ms - o->duration_ms),
        T(o->info), OPT(o->has_warnings, o->warnings));
}

void tf__writes_step_force_end(tf_sqlstmt_t *st, tf_sqlval_t *v,
                               const tf_op_step_force_end_t *o)
{
    PUT(st, v, SQL_STEP_FORCE_END, I(o->result), I(o->time_ms), T(o->text),
        I(o->build_id), I(o->step));
}

void tf__writes_test_result(tf_sqlstmt_t *st, tf_sqlval_t *v,
                            const tf_op_test_result_t *o, const char *status)
{
    PUT(st, v, SQL_TEST_RESULT, I(o->build_id), I(o->step), T(o->suite),
        T(o->name), T(o->builder), T(status), I(o->attempts),
        o->duration_ms >= 0 ? I(o->duration_ms) : N(), T(o->outcome),
        T(o->message), OPT(o->has_log, o->log_offset),
        OPT(o->has_log, o->log_line), OPT(o->has_log, o->log_lines));
}

size_t tf__writes_build_finish_rest(tf_sqlstmt_t *st, tf_sqlval_t *v,
                                    const tf_op_build_finish_t *o)
{
    size_t n = 0;

    if (o->complete)
        PUT(&st[n++], v, SQL_BUILD_FINISH_BUILDER, I(o->build_id),
            I(o->result), I(o->time_ms), T(o->builder));
    PUT(&st[n++], v + 4, SQL_BUILD_FINISH_SLAVE, T(o->slave));
    return n;
}

void tf__writes_user(tf_sqlstmt_t *st, tf_sqlval_t *v, tf_op_kind_t kind,
                     const tf_op_user_t *o)
{
    if (kind == TF_OP_USER_ADD)
        PUT(st, v, SQL_USER_ADD, T(o->email), T(o->name), T(o->token_sha256),
            I(o->time_ms));
    else
        PUT(st, v, SQL_USER_REMOVE, T(o->email));
}

void tf__writes_change_insert(tf_sqlstmt_t *st, tf_sqlval_t *v,
                              const tf_op_changes_record_t *o, size_t i)
{
    const tf_change_rec_t *c = &o->changes[i];

    PUT(st, v, SQL_CHANGE_INSERT, T(o->repository), T(o->branch),
        T(c->revision), T(c->author), T(c->email), I(c->committer_ms),
        T(c->message), T(c->files_json), I(o->time_ms));
}
