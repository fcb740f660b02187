/*
 * changes.c - the endpoints of continuous builds: GET /api/v1/pollers,
 * GET /api/v1/schedulers, GET /api/v1/changes[/{id}],
 * POST /api/v1/builds/{id}/rebuild and the test clock
 * POST /api/v1/master/clock (docs/api.md, "Changes, pollers and
 * schedulers").
 *
 * Pollers and schedulers answer from memory (their subsystems render
 * their state), except on a shared master that does not hold the duty
 * lease, which answers with the holder's stored state (below); changes
 * and rebuilds read the database off the loop thread (store/queries.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "api/handlers.h"
#include "changes/poller.h"
#include "changes/schedulers.h"
#include "clock.h"
#include "core/master.h"
#include "log.h"
#include "names.h"
#include "store/queries.h"
#include "tf_err.h"

/* Several masters (store.shared): pollers and periodic schedulers run
 * on the holder of the duty lease only. Every master reads who holds it
 * (tf_q_duty_holder) and says so ("runs_on", "runs_here"); one that does
 * not hold it answers with the holder's state as stored (the rows the
 * next holder reads again when it takes the lease), not with its own
 * memory, which stopped when it last held the lease or started. The
 * holder answers from memory, as a lone master does. */
typedef struct duty_read {
    tf_http_req_t *r;
    bool schedulers;  /* GET /api/v1/schedulers, else /pollers */
    bool stored;      /* read the stored state (no lease here) */
    char holder[128]; /* "tf-master HOST TAG pid N"; "": nobody */
    tf_q_pollers_t pollers;
    tf_sched_stored_t *scheds;
    size_t nscheds;
} duty_read_t;

static int duty_read_run(tf_db_t *db, void *arg)
{
    duty_read_t *d = arg;
    int rc = tf_q_duty_holder(db, d->holder, sizeof(d->holder));
    if (rc || !d->stored)
        return rc;
    if (!d->schedulers)
        return tf_q_run(db, &d->pollers.q);
    for (size_t i = 0; i < d->nscheds && rc == 0; i++)
        rc = tf_q_run(db, &d->scheds[i].q.q);
    return rc;
}

static void duty_read_done(void *arg, int rc)
{
    duty_read_t *d = arg;
    tf_http_req_t *r = d->r;
    tf_master_t *m = r->m;
    if (!tf_http_async_end(r))
        goto out;
    if (rc && d->stored) {
        /* Never this master's stale memory in place of the holder's. */
        tf_http_error(r, 503, "cannot read the duty holder's %s state "
                      "from the database: %s",
                      d->schedulers ? "schedulers'" : "pollers'",
                      tf_strerror(rc));
        goto out;
    }
    if (rc)
        d->holder[0] = '\0'; /* the holder answers from memory all the
                               * same, not knowing its own name */
    json_t *o;
    if (d->schedulers)
        o = json_pack("{s:I,s:o}", "time_ms", (json_int_t)tf_now_ms(),
                      "schedulers",
                      d->stored ? tf_schedulers_status_stored(m, d->scheds,
                                                              d->nscheds)
                                : tf_schedulers_status(m));
    else
        o = json_pack("{s:o}", "pollers",
                      d->stored ? tf_pollers_status_stored(m, &d->pollers)
                                : tf_pollers_status(m));
    if (o) {
        json_object_set_new(o, "runs_on", d->holder[0]
                                              ? json_string(d->holder)
                                              : json_null());
        json_object_set_new(o, "runs_here", json_boolean(!d->stored));
    }
    tf_http_respond_json(r, 200, o);
out:
    tf_q_pollers_clear(&d->pollers);
    tf_schedulers_stored_free(d->scheds, d->nscheds);
    free(d);
}

static void duty_read_start(tf_http_req_t *r, bool schedulers)
{
    tf_master_t *m = r->m;
    duty_read_t *d = calloc(1, sizeof(*d));
    if (!d) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    d->r = r;
    d->schedulers = schedulers;
    d->stored = !tf_store_has_duty(m->store);
    d->pollers.q.kind = TF_Q_POLLERS;
    if (schedulers && d->stored &&
        tf_schedulers_stored_prepare(m, &d->scheds, &d->nscheds) != 0) {
        free(d);
        tf_http_error(r, 503, "out of memory");
        return;
    }
    tf_http_async_begin(r);
    int rc = tf_store_read(m->store, duty_read_run, duty_read_done, d);
    if (rc)
        duty_read_done(d, rc); /* ends the hold, answers as for a failed
                                * read */
}

void tf_api_pollers(tf_http_req_t *r, const tf_route_args_t *a)
{
    if (tf_store_is_shared(r->m->store)) {
        duty_read_start(r, false);
        return;
    }
    tf_http_respond_json(r, 200, json_pack("{s:o}", "pollers",
                                           tf_pollers_status(r->m)));
}

void tf_api_schedulers(tf_http_req_t *r, const tf_route_args_t *a)
{
    if (tf_store_is_shared(r->m->store)) {
        duty_read_start(r, true);
        return;
    }
    tf_http_respond_json(r, 200, json_pack("{s:I,s:o}", "time_ms",
                                           (json_int_t)tf_now_ms(),
                                           "schedulers",
                                           tf_schedulers_status(r->m)));
}

/* --- GET /api/v1/changes --- */

typedef struct change_query {
    tf_http_req_t *r;
    uint64_t id; /* 0: the list */
    uint64_t before;
    unsigned limit;
    char repository[TF_REPO_MAX + 1];
    char branch[TF_REF_MAX + 1];
    char base[512];
    json_t *out;
} change_query_t;

static int change_query_fn(tf_db_t *db, void *arg)
{
    change_query_t *q = arg;
    if (q->id)
        return tf_q_change(db, q->base, q->id, &q->out);
    return tf_q_changes(db, q->base, q->repository[0] ? q->repository : NULL,
                        q->branch[0] ? q->branch : NULL, q->before, q->limit,
                        &q->out);
}

static void change_query_done(void *arg, int rc)
{
    change_query_t *q = arg;
    tf_http_req_t *r = q->r;
    if (tf_http_async_end(r)) {
        if (rc == TF_ENOENT)
            tf_http_error(r, 404, "no such change");
        else if (rc || !q->out)
            tf_http_error(r, 500, "database read failed: %s",
                          tf_strerror(rc));
        else {
            if (q->id)
                tf_api_commit_link(r->m, q->out);
            else
                tf_api_commit_links(r->m, json_object_get(q->out, "changes"));
            tf_http_respond_json(r, 200, q->out);
            q->out = NULL;
        }
    }
    json_decref(q->out);
    free(q);
}

static void change_query_start(tf_http_req_t *r, change_query_t *q)
{
    q->r = r;
    snprintf(q->base, sizeof(q->base), "%s", r->m->cfg->public_url);
    if (!tf_api_read_then(r, change_query_fn, change_query_done, q))
        free(q);
}

void tf_api_changes(tf_http_req_t *r, const tf_route_args_t *a)
{
    uint64_t limit, before;
    const char *repo = tf_http_arg(r, "repository");
    const char *branch = tf_http_arg(r, "branch");
    if (!tf_http_arg_u64(r, "limit", 1, 200, 50, &limit) ||
        !tf_http_arg_u64(r, "before", 1, INT64_MAX, 0, &before))
        return;
    if (repo && !tf_repo_url_valid(repo)) {
        tf_http_error(r, 400, "parameter repository: expected a git URL or "
                      "path");
        return;
    }
    if (branch && !tf_git_ref_valid(branch)) {
        tf_http_error(r, 400, "parameter branch: expected a branch name");
        return;
    }
    change_query_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->limit = (unsigned)limit;
    q->before = before;
    snprintf(q->repository, sizeof(q->repository), "%s", repo ? repo : "");
    snprintf(q->branch, sizeof(q->branch), "%s", branch ? branch : "");
    change_query_start(r, q);
}

void tf_api_change(tf_http_req_t *r, const tf_route_args_t *a)
{
    uint64_t id = a->id;
    change_query_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->id = id;
    change_query_start(r, q);
}

static int64_t real_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tf_api_master_clock(tf_http_req_t *r, const tf_route_args_t *a)
{
    tf_master_t *m = r->m;
    if (!m->cfg->testing_clock) {
        tf_http_error(r, 404, "the controllable clock is off; it is for "
                      "tests only (\"testing\": {\"clock\": true})");
        return;
    }
    json_error_t e;
    json_t *j = json_loadb((const char *)r->body.data, r->body.len,
                           JSON_REJECT_DUPLICATES, &e);
    json_t *jn = json_object_get(j, "now_ms");
    if (!json_is_object(j) || json_object_size(j) != 1 ||
        !json_is_integer(jn) || json_integer_value(jn) < 0) {
        json_decref(j);
        tf_http_error(r, 400, "body must be {\"now_ms\": N} with N a time in "
                      "ms since the epoch");
        return;
    }
    int64_t want = json_integer_value(jn);
    json_decref(j);
    int64_t offset = want - real_now_ms();
    tf_clock_set_offset(offset);
    char iso[40];
    tf_time_iso(want, iso, sizeof(iso));
    tf_warn("master", "test clock set to %s (offset %" PRId64 " ms)", iso,
            offset);
    tf_schedulers_tick(m);
    tf_http_respond_json(r, 200, json_pack("{s:I,s:I}", "now_ms",
                                           (json_int_t)tf_now_ms(),
                                           "offset_ms", (json_int_t)offset));
}

/* --- rebuild --- */

typedef struct rebuild {
    tf_http_req_t *r;
    uint64_t build_id;
    uint64_t request_id; /* the new one */
    tf_q_build_source_t src;
} rebuild_t;

static void rebuild_free(rebuild_t *rb)
{
    if (!rb)
        return;
    tf_q_build_source_clear(&rb->src);
    free(rb);
}

static int rebuild_read_fn(tf_db_t *db, void *arg)
{
    rebuild_t *rb = arg;
    return tf_q_build_source(db, rb->build_id, &rb->src);
}

static void rebuild_committed(void *arg, int rc)
{
    rebuild_t *rb = arg;
    if (tf_http_async_end(rb->r)) {
        tf_api_request_queued(rb->r, rc, rb->request_id, rb->src.builder,
                              json_pack("{s:I}", "rebuild_of",
                                        (json_int_t)rb->build_id));
        if (!rc)
            tf_info("scheduler", "request %" PRIu64 " rebuilds build %"
                    PRIu64, rb->request_id, rb->build_id);
    }
    rebuild_free(rb);
}

static void rebuild_read_done(void *arg, int rc)
{
    rebuild_t *rb = arg;
    tf_http_req_t *r = rb->r;
    if (!tf_http_async_end(r)) {
        rebuild_free(rb);
        return;
    }
    tf_master_t *m = r->m;
    if (rc == TF_ENOENT) {
        tf_http_error(r, 404, "no such build");
        goto fail;
    }
    if (rc) {
        tf_http_error(r, 500, "database read failed: %s", tf_strerror(rc));
        goto fail;
    }
    const tf_cfg_builder_t *cfg = tf_config_builder(m->cfg, rb->src.builder);
    if (!cfg) {
        tf_http_error(r, 409, "builder \"%s\" is no longer configured",
                      rb->src.builder);
        goto fail;
    }
    /* A committer rebuilds their own builds, or any build of a builder
     * they may force. */
    if (!r->admin && !(r->user.id && rb->src.owner[0] &&
                       strcmp(rb->src.owner, r->user.email) == 0) &&
        !tf_api_may_force(r, cfg, "rebuilding builds of"))
        goto fail;
    char reason[160];
    snprintf(reason, sizeof(reason), "rebuild of build %" PRIu64
             " (%s #%" PRIu64 ")", rb->build_id, rb->src.builder,
             rb->src.number);
    tf_reqspec_t spec = {
        .builder = rb->src.builder,
        .reason = reason,
        .owner = r->user.email[0] ? r->user.email : "admin",
        .properties = rb->src.properties,
        .priority = cfg->priority,
        .tests = rb->src.tests,
        .revision = rb->src.revision,
        .patch_sha256 = rb->src.patch_sha256,
        .patch_size = rb->src.patch_size,
        .changes = rb->src.changes,
        .nchanges = rb->src.nchanges,
    };
    tf_http_async_begin(r);
    rc = tf_sched_request(m, &spec, &rb->request_id, rebuild_committed, rb);
    if (rc) {
        tf_http_async_end(r);
        if (rc == TF_EFULL) /* shared masters: no block of ids ready */
            tf_http_error(r, 503, "cannot queue the request now: no ids "
                          "ready from the database; try again");
        else
            tf_http_error(r, 500, "cannot queue the request: %s",
                          tf_strerror(rc));
        goto fail;
    }
    return; /* rebuild_committed answers and frees rb */
fail:
    rebuild_free(rb);
}

void tf_api_rebuild(tf_http_req_t *r, const tf_route_args_t *a)
{
    uint64_t build_id = a->id;
    rebuild_t *rb = calloc(1, sizeof(*rb));
    if (!rb) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    rb->r = r;
    rb->build_id = build_id;
    if (!tf_api_read_then(r, rebuild_read_fn, rebuild_read_done, rb))
        rebuild_free(rb);
}
