/*
 * reads.c - the typed queries of store.h (TF_Q_LOAD_STATE, users,
 * pollers, schedulers, shared masters' cancels and request states) over
 * db.h, for both engines: each lends its
 * reader through db.h inside its read transaction (store/sqlite.c,
 * store/pg.c), and this file frees the answers (tf_q_*_clear).
 */
#include "store/reads.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "result.h"
#include "tf_err.h"

#define SUB "store"

static int64_t col_i64(tf_dbst_t *st, int i)
{
    return tf_db_column_int64(st, i);
}

static const char *col_text(tf_dbst_t *st, int i)
{
    const unsigned char *t = tf_db_column_text(st, i);
    return t ? (const char *)t : NULL;
}

/* A malloc'd copy of a text column (NULL stays NULL); *ok goes false when
 * out of memory. */
static char *col_dup(tf_dbst_t *st, int i, bool *ok)
{
    const char *t = col_text(st, i);
    char *d;

    if (!t)
        return NULL;
    d = strdup(t);
    if (!d)
        *ok = false;
    return d;
}

/* Grows *v (of *n elements of size sz) by one zeroed element. */
static void *grow(void *v, size_t *n, size_t *cap, size_t sz)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        void *nv = realloc(*(void **)v, nc * sz);
        if (!nv)
            return NULL;
        *(void **)v = nv;
        *cap = nc;
    }
    void *el = (char *)*(void **)v + (*n)++ * sz;
    memset(el, 0, sz);
    return el;
}

static int prep(tf_db_t *db, const char *sql, tf_dbst_t **st)
{
    if (tf_db_prepare_v2(db, sql, -1, st, NULL) != TF_DB_OK) {
        tf_error(SUB, "query: %s: %.120s", tf_db_errmsg(db), sql);
        *st = NULL;
        return TF_ESTORE;
    }
    return 0;
}

/* Steps a statement to its end; TF_ESTORE when it ended in an error. */
static int finish(tf_db_t *db, tf_dbst_t *st, int last)
{
    int rc = last == TF_DB_DONE ? 0 : TF_ESTORE;

    if (rc)
        tf_error(SUB, "query: %s", tf_db_errmsg(db));
    tf_db_finalize(st);
    return rc;
}

/* finish(), then TF_ENOMEM if a copy failed on the way. */
static int finish_ok(tf_db_t *db, tf_dbst_t *st, int last, bool ok)
{
    int rc = finish(db, st, last);

    return rc ? rc : ok ? 0 : TF_ENOMEM;
}

/* --- TF_Q_LOAD_STATE --- */

static int load_counters(tf_db_t *db, tf_q_state_t *q)
{
    tf_dbst_t *st;
    size_t cap = 0;
    bool ok = true;
    int src;

    if (prep(db,
             "SELECT (SELECT coalesce(max(id), 0) FROM builds), "
             "(SELECT coalesce(max(id), 0) FROM build_requests), "
             "(SELECT coalesce(max(id), 0) FROM try_jobs)",
             &st))
        return TF_ESTORE;
    if (tf_db_step(st) == TF_DB_ROW) {
        q->max_build_id = (uint64_t)col_i64(st, 0);
        q->max_request_id = (uint64_t)col_i64(st, 1);
        q->max_job_id = (uint64_t)col_i64(st, 2);
    }
    tf_db_finalize(st);
    /* The farm's identity, which slaves echo when they resume a build. */
    if (prep(db, "SELECT id FROM farm LIMIT 1", &st))
        return TF_ESTORE;
    if (tf_db_step(st) == TF_DB_ROW) {
        const char *farm = (const char *)tf_db_column_text(st, 0);
        snprintf(q->farm, sizeof(q->farm), "%s", farm ? farm : "");
    }
    tf_db_finalize(st);
    /* Each builder's last number, and the slave of its last build: the
     * warm checkout a restarted master keeps preferring. */
    if (prep(db,
             "SELECT builder, max(number), (SELECT slave FROM builds l "
             "WHERE l.builder = b.builder AND l.slave IS NOT NULL ORDER BY "
             "number DESC LIMIT 1) FROM builds b GROUP BY builder",
             &st))
        return TF_ESTORE;
    while ((src = tf_db_step(st)) == TF_DB_ROW) {
        tf_ld_builder_t *b = grow(&q->builders, &q->nbuilders, &cap,
                                  sizeof(*b));
        if (!b)
            break;
        b->name = col_dup(st, 0, &ok);
        b->max_number = (uint64_t)col_i64(st, 1);
        b->warm_slave = col_dup(st, 2, &ok);
        if (!b->name)
            q->nbuilders--; /* out of memory: a builder without history */
    }
    return finish_ok(db, st, src == TF_DB_ROW ? TF_DB_NOMEM : src, ok);
}

static tf_ld_request_t *find_request(tf_q_state_t *q, uint64_t id)
{
    size_t lo = 0, hi = q->nrequests;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (q->requests[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < q->nrequests && q->requests[lo].id == id ? &q->requests[lo]
                                                         : NULL;
}

static int load_requests(tf_db_t *db, tf_q_state_t *q)
{
    tf_dbst_t *st;
    size_t cap = 0;
    bool ok = true;
    int src;

    if (prep(db,
             "SELECT id, builder, reason, owner, priority, submitted_ms, "
             "retries, properties, state, job_id, tests, revision, "
             "patch_sha256, patch_size, scheduler FROM build_requests WHERE "
             "state IN ('pending', 'running') ORDER BY id",
             &st))
        return TF_ESTORE;
    while ((src = tf_db_step(st)) == TF_DB_ROW) {
        tf_ld_request_t *r = grow(&q->requests, &q->nrequests, &cap,
                                  sizeof(*r));
        if (!r)
            break;
        const char *state = col_text(st, 8);
        r->id = (uint64_t)col_i64(st, 0);
        r->builder = col_dup(st, 1, &ok);
        r->reason = col_dup(st, 2, &ok);
        r->owner = col_dup(st, 3, &ok);
        r->priority = (int)col_i64(st, 4);
        r->submitted_ms = col_i64(st, 5);
        r->retries = (unsigned)col_i64(st, 6);
        r->properties = col_dup(st, 7, &ok);
        r->running = state && strcmp(state, "running") == 0;
        r->job_id = (uint64_t)col_i64(st, 9);
        r->tests = col_dup(st, 10, &ok);
        r->revision = col_dup(st, 11, &ok);
        r->patch_sha256 = col_dup(st, 12, &ok);
        r->patch_size = (uint64_t)col_i64(st, 13);
        r->scheduler = col_dup(st, 14, &ok);
    }
    if ((src = finish(db, st, src == TF_DB_ROW ? TF_DB_NOMEM : src)))
        return src;
    /* The blamelists. */
    if (prep(db,
             "SELECT rc.request_id, rc.change_id FROM request_changes rc "
             "JOIN build_requests r ON r.id = rc.request_id WHERE r.state IN "
             "('pending', 'running') ORDER BY rc.request_id, rc.change_id",
             &st))
        return TF_ESTORE;
    while ((src = tf_db_step(st)) == TF_DB_ROW) {
        tf_ld_request_t *r = find_request(q, (uint64_t)col_i64(st, 0));
        if (!r)
            continue;
        uint64_t *v = realloc(r->changes, (r->nchanges + 1) * sizeof(*v));
        if (!v) {
            ok = false;
            continue;
        }
        r->changes = v;
        v[r->nchanges++] = (uint64_t)col_i64(st, 1);
    }
    return finish_ok(db, st, src, ok);
}

static int load_steps(tf_db_t *db, tf_dbst_t *st, tf_ld_build_t *b,
                      bool *ok)
{
    int src;

    tf_db_bind_int64(st, 1, (int64_t)b->id);
    while ((src = tf_db_step(st)) == TF_DB_ROW) {
        int64_t i = col_i64(st, 0);
        if (i < 0 || (size_t)i >= b->nsteps)
            continue;
        tf_ld_step_t *s = &b->steps[i];
        const char *state = col_text(st, 1);
        s->started = state && strcmp(state, "pending") != 0;
        s->finished = state && strcmp(state, "done") == 0;
        s->result = (int)col_i64(st, 2);
        s->log_bytes = (uint64_t)col_i64(st, 3);
        s->log_lines = (uint64_t)col_i64(st, 4);
        s->flags = (int)col_i64(st, 5);
        s->name = col_dup(st, 6, ok);
        s->started_ms = col_i64(st, 7);
        s->finished_ms = col_i64(st, 8);
    }
    tf_db_reset(st);
    if (src != TF_DB_DONE) {
        tf_error(SUB, "loading steps: %s", tf_db_errmsg(db));
        return TF_ESTORE;
    }
    return 0;
}

static int load_builds(tf_db_t *db, tf_q_state_t *q)
{
    tf_dbst_t *st, *steps = NULL;
    size_t cap = 0;
    bool ok = true;
    int src, rc = 0;

    if (prep(db,
             "SELECT id, builder, number, request_id, slave, created_ms, "
             "started_ms, last_seq, nsteps, kind = 'try', owner FROM builds "
             "WHERE state != 'finished' ORDER BY id",
             &st))
        return TF_ESTORE;
    if (prep(db,
             "SELECT idx, state, result, log_bytes, log_lines, flags, name, "
             "started_ms, finished_ms FROM steps WHERE build_id = ?1 "
             "ORDER BY idx",
             &steps)) {
        tf_db_finalize(st);
        return TF_ESTORE;
    }
    while ((src = tf_db_step(st)) == TF_DB_ROW && rc == 0) {
        int64_t nsteps = col_i64(st, 8);
        if (nsteps < 0 || nsteps > 4096)
            continue;
        tf_ld_build_t *b = grow(&q->builds, &q->nbuilds, &cap, sizeof(*b));
        if (!b)
            break;
        b->steps = calloc((size_t)(nsteps ? nsteps : 1), sizeof(*b->steps));
        if (!b->steps) {
            q->nbuilds--;
            ok = false;
            continue;
        }
        b->nsteps = (size_t)nsteps;
        b->id = (uint64_t)col_i64(st, 0);
        b->builder = col_dup(st, 1, &ok);
        b->number = (uint64_t)col_i64(st, 2);
        b->request_id = (uint64_t)col_i64(st, 3);
        b->slave = col_dup(st, 4, &ok);
        b->created_ms = col_i64(st, 5);
        b->started_ms = col_i64(st, 6);
        b->last_seq = (uint64_t)col_i64(st, 7);
        b->is_try = col_i64(st, 9) != 0;
        b->owner = col_dup(st, 10, &ok);
        rc = load_steps(db, steps, b, &ok);
    }
    tf_db_finalize(steps);
    if (rc) {
        tf_db_finalize(st);
        return rc;
    }
    return finish_ok(db, st, src == TF_DB_ROW ? TF_DB_NOMEM : src, ok);
}

static tf_ld_job_t *find_job(tf_q_state_t *q, uint64_t id)
{
    for (size_t i = 0; i < q->njobs; i++)
        if (q->jobs[i].id == id)
            return &q->jobs[i];
    return NULL;
}

static int load_jobs(tf_db_t *db, tf_q_state_t *q)
{
    tf_dbst_t *st;
    size_t cap = 0;
    bool ok = true;
    int src;

    if (prep(db,
             "SELECT j.id, j.email, j.state, (SELECT count(*) FROM "
             "build_requests r WHERE r.job_id = j.id AND r.state IN "
             "('pending', 'running')) FROM try_jobs j WHERE j.state IN "
             "('pending', 'running') ORDER BY j.id",
             &st))
        return TF_ESTORE;
    while ((src = tf_db_step(st)) == TF_DB_ROW) {
        tf_ld_job_t *j = grow(&q->jobs, &q->njobs, &cap, sizeof(*j));
        if (!j)
            break;
        const char *state = col_text(st, 2);
        j->id = (uint64_t)col_i64(st, 0);
        j->email = col_dup(st, 1, &ok);
        j->started = state && strcmp(state, "running") == 0;
        j->nopen = (unsigned)col_i64(st, 3);
    }
    if ((src = finish(db, st, src == TF_DB_ROW ? TF_DB_NOMEM : src)))
        return src;
    /* The results of the requests already done: the caller folds them
     * into the job's worst result. */
    if (prep(db,
             "SELECT r.job_id, r.result FROM build_requests r JOIN try_jobs "
             "j ON j.id = r.job_id WHERE j.state IN ('pending', 'running') "
             "AND r.state IN ('done', 'cancelled') AND r.result IS NOT NULL "
             "ORDER BY r.id",
             &st))
        return TF_ESTORE;
    while ((src = tf_db_step(st)) == TF_DB_ROW) {
        tf_ld_job_t *j = find_job(q, (uint64_t)col_i64(st, 0));
        int res = (int)col_i64(st, 1);
        if (!j)
            continue;
        j->result = j->has_result
                        ? (int)tf_result_worst((tf_result_t)j->result,
                                               (tf_result_t)res)
                        : res;
        j->has_result = true;
    }
    return finish_ok(db, st, src, ok);
}

static int q_load_state(tf_db_t *db, tf_q_state_t *q)
{
    int rc = load_counters(db, q);

    if (!rc)
        rc = load_requests(db, q);
    if (!rc)
        rc = load_builds(db, q);
    if (!rc)
        rc = load_jobs(db, q);
    return rc;
}


/* --- committers --- */

static int q_users(tf_db_t *db, tf_q_users_t *q)
{
    tf_dbst_t *st;
    size_t cap = 0;
    int src;

    if (prep(db,
             "SELECT email, name, created_ms, last_used_ms FROM users "
             "ORDER BY email",
             &st))
        return TF_ESTORE;
    while ((src = tf_db_step(st)) == TF_DB_ROW) {
        tf_user_row_t *u = grow(&q->rows, &q->n, &cap, sizeof(*u));
        if (!u)
            break;
        snprintf(u->email, sizeof(u->email), "%s",
                 col_text(st, 0) ? col_text(st, 0) : "");
        snprintf(u->name, sizeof(u->name), "%s",
                 col_text(st, 1) ? col_text(st, 1) : "");
        u->created_ms = col_i64(st, 2);
        u->last_used_ms = col_i64(st, 3);
    }
    return finish(db, st, src == TF_DB_ROW ? TF_DB_NOMEM : src);
}

/* --- changes --- */

static int q_pollers(tf_db_t *db, tf_q_pollers_t *q)
{
    tf_dbst_t *st;
    size_t cap = 0;
    bool ok = true;
    int src;

    if (prep(db,
             "SELECT repository, branch, last_revision, last_poll_ms, "
             "last_ok_ms, last_error, failing_since_ms FROM pollers",
             &st))
        return TF_ESTORE;
    while ((src = tf_db_step(st)) == TF_DB_ROW) {
        tf_poller_row_t *p = grow(&q->rows, &q->n, &cap, sizeof(*p));
        if (!p)
            break;
        p->repository = col_dup(st, 0, &ok);
        p->branch = col_dup(st, 1, &ok);
        p->last_revision = col_dup(st, 2, &ok);
        p->last_poll_ms = col_i64(st, 3);
        p->last_ok_ms = col_i64(st, 4);
        p->last_error = col_dup(st, 5, &ok);
        p->failing = tf_db_column_type(st, 6) != TF_DB_NULL;
        p->failing_since_ms = col_i64(st, 6);
    }
    return finish_ok(db, st, src == TF_DB_ROW ? TF_DB_NOMEM : src, ok);
}

static int q_cancels(tf_db_t *db, tf_q_cancels_t *q)
{
    tf_dbst_t *st;
    size_t cap = 0;
    bool ok = true;
    int src;

    if (prep(db,
             "SELECT id, cancel_requested FROM builds "
             "WHERE cancel_requested IS NOT NULL AND state <> 'finished' "
             "UNION SELECT b.id, j.cancel_requested FROM try_jobs j "
             "JOIN build_requests r ON r.job_id = j.id "
             "JOIN builds b ON b.request_id = r.id "
             "WHERE j.state IN ('pending', 'running') "
             "AND j.cancel_requested IS NOT NULL "
             "AND b.state <> 'finished' LIMIT ?1",
             &st))
        return TF_ESTORE;
    tf_db_bind_int64(st, 1, (int64_t)q->max);
    while ((src = tf_db_step(st)) == TF_DB_ROW) {
        tf_cancel_row_t *c = grow(&q->rows, &q->n, &cap, sizeof(*c));
        if (!c)
            break;
        c->build_id = (uint64_t)col_i64(st, 0);
        c->why = col_dup(st, 1, &ok);
    }
    return finish_ok(db, st, src == TF_DB_ROW ? TF_DB_NOMEM : src, ok);
}

/* TF_Q_REQUEST_STATES reads this many ids per statement: one round
 * trip for a chunk (a slot past the last id repeats the chunk's first). */
#define RQ_CHUNK 32

static tf_rq_state_t rq_state_of(const char *state, const char *owner,
                                 const char *self)
{
    if (!state)
        return TF_RQ_ABSENT;
    if (strcmp(state, "pending") == 0)
        return TF_RQ_PENDING;
    if (strcmp(state, "running") != 0)
        return TF_RQ_ENDED;
    /* No open build (between two transactions of its owner): nothing
     * says whose it is, so it counts as possibly this master's. */
    return owner && strcmp(owner, self ? self : "") != 0 ? TF_RQ_ELSEWHERE
                                                         : TF_RQ_RUNNING;
}

static int q_request_states(tf_db_t *db, tf_q_request_states_t *q)
{
    char sql[1024];
    size_t len;
    tf_dbst_t *st;
    int src = TF_DB_DONE;

    if (q->n > TF_REQUEST_STATES_MAX)
        return TF_EINVAL;
    memset(q->state, TF_RQ_ABSENT, sizeof(q->state));
    if (q->n == 0)
        return 0;
    len = (size_t)snprintf(sql, sizeof(sql),
                           "SELECT r.id, r.state, (SELECT b.owner FROM "
                           "builds b WHERE b.request_id = r.id AND b.state "
                           "<> 'finished' ORDER BY b.id DESC LIMIT 1) FROM "
                           "build_requests r WHERE r.id IN (");
    for (int k = 1; k <= RQ_CHUNK && len < sizeof(sql); k++)
        len += (size_t)snprintf(sql + len, sizeof(sql) - len, "%s?%d",
                                k > 1 ? ", " : "", k);
    if (len + 2 > sizeof(sql))
        return TF_E2BIG;
    memcpy(sql + len, ")", 2);
    if (prep(db, sql, &st))
        return TF_ESTORE;
    for (size_t first = 0; first < q->n && src == TF_DB_DONE;
         first += RQ_CHUNK) {
        size_t end = first + RQ_CHUNK < q->n ? first + RQ_CHUNK : q->n;
        for (size_t k = 0; k < RQ_CHUNK; k++)
            tf_db_bind_int64(st, (int)k + 1,
                             (int64_t)q->ids[first + k < end ? first + k
                                                             : first]);
        while ((src = tf_db_step(st)) == TF_DB_ROW) {
            uint64_t id = (uint64_t)col_i64(st, 0);
            tf_rq_state_t v = rq_state_of(col_text(st, 1), col_text(st, 2),
                                          q->self);
            for (size_t i = first; i < end; i++)
                if (q->ids[i] == id)
                    q->state[i] = (uint8_t)v;
        }
        if (src == TF_DB_DONE)
            tf_db_reset(st);
    }
    return finish(db, st, src);
}

static int q_scheduler(tf_db_t *db, tf_q_scheduler_t *q)
{
    tf_dbst_t *st;
    int64_t after = 0;
    size_t cap = 0;
    bool ok = true;
    int src;

    if (prep(db,
             "SELECT last_fired_ms, last_revision, coalesce(next_fire_ms, "
             "0) FROM scheduler_state WHERE name = ?1",
             &st))
        return TF_ESTORE;
    tf_db_bind_text(st, 1, q->name, -1, TF_DB_STATIC);
    if ((src = tf_db_step(st)) == TF_DB_ROW) {
        q->have_row = true;
        q->last_fired_ms = col_i64(st, 0);
        q->last_revision = col_dup(st, 1, &ok);
        q->next_fire_ms = col_i64(st, 2);
        src = TF_DB_DONE;
    }
    if ((src = finish(db, st, src)))
        return src;
    /* Without a consumed revision there is nothing to be after. */
    if (!q->have_row || !q->last_revision || !q->repository)
        return ok ? 0 : TF_ENOMEM;
    if (prep(db,
             "SELECT coalesce((SELECT id FROM changes WHERE repository = ?1 "
             "AND branch = ?2 AND revision = ?3), (SELECT max(id) FROM "
             "changes WHERE repository = ?1 AND branch = ?2), 0)",
             &st))
        return TF_ESTORE;
    tf_db_bind_text(st, 1, q->repository, -1, TF_DB_STATIC);
    tf_db_bind_text(st, 2, q->branch, -1, TF_DB_STATIC);
    tf_db_bind_text(st, 3, q->last_revision, -1, TF_DB_STATIC);
    if (tf_db_step(st) == TF_DB_ROW)
        after = col_i64(st, 0);
    tf_db_finalize(st);
    /* The newest `limit`, oldest first. */
    if (prep(db,
             "SELECT id, revision, files, created_ms FROM (SELECT * FROM "
             "changes WHERE repository = ?1 AND branch = ?2 AND id > ?3 "
             "ORDER BY id DESC LIMIT ?4) AS newest ORDER BY id",
             &st))
        return TF_ESTORE;
    tf_db_bind_text(st, 1, q->repository, -1, TF_DB_STATIC);
    tf_db_bind_text(st, 2, q->branch, -1, TF_DB_STATIC);
    tf_db_bind_int64(st, 3, after);
    tf_db_bind_int64(st, 4, q->limit);
    while ((src = tf_db_step(st)) == TF_DB_ROW) {
        tf_sched_change_row_t *c = grow(&q->changes, &q->nchanges, &cap,
                                        sizeof(*c));
        if (!c)
            break;
        c->id = (uint64_t)col_i64(st, 0);
        c->revision = col_dup(st, 1, &ok);
        c->files_json = col_dup(st, 2, &ok);
        c->created_ms = col_i64(st, 3);
    }
    return finish_ok(db, st, src == TF_DB_ROW ? TF_DB_NOMEM : src, ok);
}



/* --- freeing the answers (store_sqlite.h) --- */

void tf_q_state_clear(tf_q_state_t *q)
{
    for (size_t i = 0; i < q->nbuilders; i++) {
        free(q->builders[i].name);
        free(q->builders[i].warm_slave);
    }
    for (size_t i = 0; i < q->nrequests; i++) {
        tf_ld_request_t *r = &q->requests[i];
        free(r->builder);
        free(r->reason);
        free(r->owner);
        free(r->properties);
        free(r->tests);
        free(r->revision);
        free(r->patch_sha256);
        free(r->scheduler);
        free(r->changes);
    }
    for (size_t i = 0; i < q->nbuilds; i++) {
        tf_ld_build_t *b = &q->builds[i];
        for (size_t k = 0; k < b->nsteps; k++)
            free(b->steps[k].name);
        free(b->steps);
        free(b->builder);
        free(b->slave);
        free(b->owner);
    }
    for (size_t i = 0; i < q->njobs; i++)
        free(q->jobs[i].email);
    free(q->builders);
    free(q->requests);
    free(q->builds);
    free(q->jobs);
    q->builders = NULL;
    q->requests = NULL;
    q->builds = NULL;
    q->jobs = NULL;
    q->nbuilders = q->nrequests = q->nbuilds = q->njobs = 0;
}

void tf_q_pollers_clear(tf_q_pollers_t *q)
{
    for (size_t i = 0; i < q->n; i++) {
        free(q->rows[i].repository);
        free(q->rows[i].branch);
        free(q->rows[i].last_revision);
        free(q->rows[i].last_error);
    }
    free(q->rows);
    q->rows = NULL;
    q->n = 0;
}

void tf_q_cancels_clear(tf_q_cancels_t *q)
{
    for (size_t i = 0; i < q->n; i++)
        free(q->rows[i].why);
    free(q->rows);
    q->rows = NULL;
    q->n = 0;
}

void tf_q_scheduler_clear(tf_q_scheduler_t *q)
{
    free(q->last_revision);
    for (size_t i = 0; i < q->nchanges; i++) {
        free(q->changes[i].revision);
        free(q->changes[i].files_json);
    }
    free(q->changes);
    q->last_revision = NULL;
    q->changes = NULL;
    q->nchanges = 0;
}

int tf__reads_query(tf_db_t *db, tf_query_t *q)
{
    switch (q->kind) {
    case TF_Q_LOAD_STATE:
        return q_load_state(db, (tf_q_state_t *)q);
    case TF_Q_USER_BY_TOKEN: {
        tf_q_user_t *u = (tf_q_user_t *)q;
        return tf_user_by_token(db, u->token_sha256, &u->user);
    }
    case TF_Q_USERS:
        return q_users(db, (tf_q_users_t *)q);
    case TF_Q_POLLERS:
        return q_pollers(db, (tf_q_pollers_t *)q);
    case TF_Q_SCHEDULER:
        return q_scheduler(db, (tf_q_scheduler_t *)q);
    case TF_Q_CANCELS:
        return q_cancels(db, (tf_q_cancels_t *)q);
    case TF_Q_REQUEST_STATES:
        return q_request_states(db, (tf_q_request_states_t *)q);
    case TF_Q_SQLITE_FN: {
        tf_q_sqlite_fn_t *f = (tf_q_sqlite_fn_t *)q;
        return f->fn(db, f->arg);
    }
    default:
        tf_error(SUB, "unknown query kind %d", q->kind);
        return TF_EINVAL;
    }
}
