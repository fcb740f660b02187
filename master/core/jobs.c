/*
 * jobs.c - try jobs: creating them, their lifecycle, cancelling them.
 *
 * The API (api/jobs.c) parses and validates a submission off the loop
 * thread and hands it over as a tf_jobspec_t. Here, on the loop thread,
 * the builders are checked against the config in force, and the patch,
 * the job and one request per builder are queued as one all-or-nothing
 * write; only after that commit are the requests scheduled and the caller
 * told. A refused submission writes nothing.
 *
 * Patches are stored once per SHA-256 (the store's patch_put).
 *
 * Result reuse: a builder the API found an identical passed build for
 * (spec->reuse) gets its request written done and pointing at that
 * build, in the same group; it never reaches the scheduler. A job whose
 * every builder is reused ends in that group too (with its mail).
 */
#include "core/jobs.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "core/master.h"
#include "tf_err.h"

/* --- job accounting --- */

static tf_mjob_t *job_get(tf_master_t *m, uint64_t id)
{
    return id ? tf_map_get_id(m->jobs, id) : NULL;
}

void tf_job_request_started(tf_master_t *m, uint64_t job_id)
{
    tf_mjob_t *j = job_get(m, job_id);
    if (!j)
        return;
    /* Written at every start (the store moves it from pending once): if
     * the group of a start fails, the next start still says it. */
    j->started = true;
    tf_op_job_running(m->group, job_id);
}

bool tf_job_request_added(tf_master_t *m, uint64_t job_id)
{
    tf_mjob_t *j = job_get(m, job_id);
    /* Several masters: the job may have been submitted to another one;
     * the database keeps it open for the new request (its settle, in the
     * same group, sees it pending). */
    if (!j && job_id && tf_store_is_shared(m->store))
        return true;
    if (!j || j->cancel_requested)
        return false;
    j->nopen++;
    return true;
}

void tf_job_request_done(tf_master_t *m, uint64_t job_id, tf_result_t result)
{
    tf_mjob_t *j = job_get(m, job_id);
    /* Several masters (store.shared): a job's requests run on any of
     * them, so none counts them in memory; the database ends the job
     * (and queues its mail) with the commit of its last request's end. */
    if (tf_store_is_shared(m->store)) {
        const tf_cfg_mail_t *mc = &m->cfg->mail;
        tf_op_job_settle(m->group, job_id, mc->enabled && mc->try_jobs,
                         tf_now_ms());
        if (mc->enabled && mc->try_jobs)
            m->group_mail = true;
        /* Kept for cancelling while this master knows open requests. */
        if (j && j->nopen > 0 && --j->nopen == 0) {
            tf_map_del_id(m->jobs, j->id);
            free(j);
        }
        return;
    }
    if (!j)
        return;
    j->result = j->has_result ? tf_result_worst(j->result, result) : result;
    j->has_result = true;
    if (j->nopen > 0)
        j->nopen--;
    if (j->nopen > 0)
        return;
    const char *state = j->cancel_requested ? "cancelled" : "finished";
    int64_t now = tf_now_ms();
    tf_op_job_finish(m->group, j->id, state, j->result, now);
    /* The report's outbox row commits with the job's end. */
    const tf_cfg_mail_t *mc = &m->cfg->mail;
    if (mc->enabled && mc->try_jobs) {
        tf_op_mail_job(m->group, j->id, now);
        m->group_mail = true;
    }
    tf_info("jobs", "job %" PRIu64 " of %s %s: %s", j->id, j->email, state,
            tf_result_name(j->result));
    tf_map_del_id(m->jobs, j->id);
    free(j);
}

void tf_job_request_forgotten(tf_master_t *m, uint64_t job_id)
{
    tf_mjob_t *j = job_get(m, job_id);

    /* The request is another master's now: this master no longer counts
     * it among the job's open ones (nor ends the job for it). */
    if (j && j->nopen > 0 && --j->nopen == 0 && tf_store_is_shared(m->store)) {
        tf_map_del_id(m->jobs, j->id);
        free(j);
    }
}

void tf_jobs_restore(tf_master_t *m, uint64_t id, const char *email,
                     bool started, unsigned nopen, bool has_result,
                     tf_result_t result)
{
    tf_mjob_t *j = calloc(1, sizeof(*j));

    if (!j) {
        tf_error("jobs", "out of memory restoring job %" PRIu64, id);
        return;
    }
    j->id = id;
    snprintf(j->email, sizeof(j->email), "%s", email ? email : "");
    j->started = started;
    j->nopen = nopen;
    j->has_result = has_result;
    j->result = result;
    if (tf_map_put_id(m->jobs, j->id, j) != 0)
        free(j);
}

void tf_jobs_free_all(tf_master_t *m)
{
    size_t pos = 0;
    void *v;
    while (tf_map_next(m->jobs, &pos, NULL, NULL, &v) == 0)
        free(v);
}

/* --- creation --- */

typedef struct creation {
    tf_master_t *m;
    uint64_t job_id;
    char email[TF_EMAIL_MAX + 1];
    tf_request_t **reqs; /* one per builder: written before the commit,
                          * adopted by the scheduler after it */
    uint64_t *reused;    /* per builder: the request id when reused */
    size_t nreqs;
    size_t nreused;
    size_t patch_len;
    char sha[TF_SHA256_HEX_LEN + 1];
    tf_job_created_cb cb;
    void *arg;
} creation_t;

static void creation_free(creation_t *c)
{
    for (size_t i = 0; i < c->nreqs; i++)
        tf_request_free(c->reqs[i]);
    free(c->reqs);
    free(c->reused);
    free(c);
}

/* After the commit: the job exists. Schedule its requests. */
static void creation_committed(void *arg, int rc)
{
    creation_t *c = arg;
    tf_master_t *m = c->m;
    uint64_t *ids = calloc(c->nreqs ? c->nreqs : 1, sizeof(*ids));
    if (rc) {
        c->cb(c->arg, rc, c->job_id, NULL, 0);
        goto out;
    }
    tf_mjob_t *j = c->nreused < c->nreqs ? calloc(1, sizeof(*j)) : NULL;
    if (j) {
        j->id = c->job_id;
        snprintf(j->email, sizeof(j->email), "%s", c->email);
        j->nopen = (unsigned)(c->nreqs - c->nreused);
        j->has_result = c->nreused > 0;
        j->result = TF_SUCCESS;
        if (tf_map_put_id(m->jobs, j->id, j) != 0)
            free(j);
    }
    for (size_t i = 0; i < c->nreqs; i++) {
        tf_request_t *req = c->reqs[i];
        c->reqs[i] = NULL; /* the scheduler's now, or freed here */
        if (c->reused[i]) {
            if (ids)
                ids[i] = c->reused[i];
            continue;
        }
        if (!req) {
            tf_error("jobs", "job %" PRIu64 ": out of memory: no request "
                     "for its builder %zu", c->job_id, i);
            continue;
        }
        if (tf_sched_adopt(m, req) != 0) {
            tf_error("jobs", "job %" PRIu64 ": out of memory queueing %s; "
                     "it runs after a restart", c->job_id, req->builder);
            tf_request_free(req);
            continue;
        }
        if (ids)
            ids[i] = req->id;
    }
    tf_info("jobs", "job %" PRIu64 " from %s: %zu builder(s), patch %zu "
            "bytes%s%.12s", c->job_id, c->email, c->nreqs, c->patch_len,
            c->patch_len ? " sha256 " : "", c->patch_len ? c->sha : "");
    c->cb(c->arg, 0, c->job_id, ids, ids ? c->nreqs : 0);
out:
    free(ids);
    creation_free(c);
}

/* Whether every builder of spec is in the config in force; fills err
 * otherwise. */
static bool builders_known(tf_master_t *m, const tf_jobspec_t *spec,
                           char *err, size_t errlen)
{
    size_t i;
    json_t *v;
    json_array_foreach(spec->builders, i, v)
    {
        const char *name = json_string_value(v);
        if (name && tf_config_builder(m->cfg, name))
            continue;
        tf_buf_t known;
        tf_buf_init(&known, 4096);
        for (size_t k = 0; k < m->cfg->nbuilders; k++)
            tf_buf_printf(&known, "%s%s", k ? ", " : "",
                          m->cfg->builders[k].name);
        snprintf(err, errlen, "unknown builder \"%s\"; known builders: %.*s",
                 name ? name : "?", (int)known.len,
                 known.len ? (char *)known.data : "(none)");
        tf_buf_free(&known);
        return false;
    }
    return true;
}

int tf_job_create(tf_master_t *m, tf_jobspec_t *spec, char *err,
                  size_t errlen, tf_job_created_cb cb, void *arg)
{
    uint8_t *patch = spec->patch;
    spec->patch = NULL; /* ours, whatever happens */
    if (!builders_known(m, spec, err, errlen)) {
        free(patch);
        return TF_ENOENT;
    }
    size_t n = json_array_size(spec->builders);
    creation_t *c = calloc(1, sizeof(*c));
    if (!c || !(c->reqs = calloc(n ? n : 1, sizeof(*c->reqs))) ||
        !(c->reused = calloc(n ? n : 1, sizeof(*c->reused)))) {
        if (c)
            free(c->reqs);
        free(c);
        free(patch);
        snprintf(err, errlen, "out of memory");
        return TF_ENOMEM;
    }
    c->m = m;
    c->nreqs = n;
    c->cb = cb;
    c->arg = arg;
    if (tf_master_ids(m, n + 1) != 0) {
        creation_free(c);
        free(patch);
        snprintf(err, errlen, "no ids ready from the database now: try "
                 "again");
        return TF_ESTORE;
    }
    c->job_id = m->next_job_id++;
    /* Shared ids (tf_master_ids): the requests follow the job's id. */
    if (tf_store_is_shared(m->store) && m->next_request_id < m->next_job_id)
        m->next_request_id = m->next_job_id;
    snprintf(c->email, sizeof(c->email), "%s", spec->user.email);
    c->patch_len = spec->patch_len;
    snprintf(c->sha, sizeof(c->sha), "%s", spec->sha);
    uint64_t first_request = m->next_request_id;
    m->next_request_id += n;
    int64_t submitted_ms = tf_now_ms();
    const char *notify_to = spec->email ? spec->email : spec->user.email;

    tf_master_group_begin(m, 0);
    if (spec->patch_len) {
        /* The store takes the patch (freed with the group), no copy. */
        tf_op_patch_put_take(m->group, spec->sha, patch, spec->patch_len,
                             submitted_ms);
        patch = NULL;
    }
    free(patch);
    tf_job_rec_t jr = {
        .id = c->job_id,
        .user_id = spec->user.id,
        .author = spec->user.name,
        .email = spec->user.email,
        .notify = spec->notify,
        .new_failures_only = spec->new_failures_only,
        .notify_email = notify_to,
        .description = spec->description,
        .review_url = spec->review_url,
        .patchset = spec->patchset,
        .base_revision = spec->base_revision,
        .patch_sha256 = spec->patch_len ? spec->sha : NULL,
        .patch_size = spec->patch_len,
        .submitted_ms = submitted_ms,
    };
    tf_op_job_create(m->group, &jr);
    char reason[320];
    snprintf(reason, sizeof(reason), "try job %" PRIu64 " by %s", c->job_id,
             spec->user.email);
    size_t i;
    json_t *v;
    json_array_foreach(spec->builders, i, v)
    {
        const char *name = json_string_value(v);
        json_t *t = spec->tests ? json_object_get(spec->tests, name) : NULL;
        char *tests = t ? json_dumps(t, JSON_COMPACT) : NULL;
        tf_reqspec_t rs = {
            .builder = name,
            .reason = reason,
            .owner = spec->user.email,
            .priority = tf_config_builder(m->cfg, name)->priority,
            .job_id = c->job_id,
            .tests = tests,
            .properties = spec->properties,
            .revision = spec->base_revision,
            .patch_sha256 = spec->patch_len ? spec->sha : NULL,
            .patch_size = spec->patch_len,
        };
        tf_request_t *req = tf_request_make(&rs, first_request + i,
                                            submitted_ms);
        free(tests);
        /* Out of memory: this builder gets no request (logged after the
         * commit). */
        if (req) {
            tf_request_write(m, req);
            if (spec->reuse && spec->reuse[i]) {
                tf_op_request_reused(m->group, req->id, spec->reuse[i],
                                     submitted_ms);
                tf_info("jobs", "job %" PRIu64 ": %s reuses build %" PRIu64
                        " (the same base, patch, tests and properties "
                        "passed there)", c->job_id, name, spec->reuse[i]);
                c->reused[i] = req->id;
                c->nreused++;
                tf_request_free(req);
            } else {
                c->reqs[i] = req;
            }
        }
    }
    if (n && c->nreused == n) {
        /* Nothing to run: the job ends with its creation. */
        tf_op_job_finish(m->group, c->job_id, "finished", TF_SUCCESS,
                         submitted_ms);
        const tf_cfg_mail_t *mc = &m->cfg->mail;
        if (mc->enabled && mc->try_jobs) {
            tf_op_mail_job(m->group, c->job_id, submitted_ms);
            m->group_mail = true;
        }
    }
    tf_master_group_commit(m, creation_committed, c);
    return 0;
}

/* --- cancelling --- */

int tf_job_cancel(tf_master_t *m, uint64_t id, const char *by)
{
    /* Several masters: this master's copy of the job says nothing of the
     * others' (the caller read the database's state and stored the
     * cancel for them: tf_master_cancel_elsewhere). */
    if (!job_get(m, id) && !tf_store_is_shared(m->store))
        return TF_ENOENT;
    tf_info("jobs", "job %" PRIu64 " cancelled by %s", id, by);
    tf_job_cancel_here(m, id, by);
    return 0;
}

void tf_job_cancel_here(tf_master_t *m, uint64_t id, const char *by)
{
    tf_mjob_t *j = job_get(m, id);
    (void)by;
    if (j)
        j->cancel_requested = true;
    size_t pos = 0;
    void *v;
    tf_request_t *pending[256];
    uint64_t running[256];
    size_t n = 0, nrun = 0;
    /* Collected first: cancelling may end a build and free its request,
     * which changes the map. */
    while (tf_map_next(m->requests, &pos, NULL, NULL, &v) == 0) {
        tf_request_t *req = v;
        if (req->job_id != id)
            continue;
        if (req->state == TF_REQ_RUNNING && req->build && nrun < 256)
            running[nrun++] = req->build->id;
        else if (req->state == TF_REQ_PENDING && n < 256)
            pending[n++] = req;
    }
    for (size_t i = 0; i < n; i++)
        tf_sched_cancel_pending(m, pending[i], NULL, NULL);
    for (size_t i = 0; i < nrun; i++)
        tf_build_cancel(m, running[i], "the try job was cancelled");
}
