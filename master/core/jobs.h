/*
 * jobs.h - try jobs: a committer's patch run on several builders.
 *
 * A job is one row in try_jobs plus one build request per builder. The
 * loop thread keeps a small object per job that is not finished yet, to
 * know when its last request ends and to record the job's result in the
 * same transaction as that request's end.
 *
 * This is the model only: parsing a submission and answering it is the
 * API's work (api/jobs.c), which hands core a checked tf_jobspec_t.
 */
#ifndef TF_JOBS_H
#define TF_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "crypto.h"
#include "result.h"
#include "core/users.h"

struct tf_master;

typedef struct tf_mjob {
    uint64_t id;
    char email[TF_EMAIL_MAX + 1]; /* the author */
    unsigned nopen;               /* requests not yet done */
    bool has_result;
    tf_result_t result;           /* worst result so far */
    bool started;                 /* state 'running' written */
    bool cancel_requested;
} tf_mjob_t;

/* A validated submission. Strings and JSON are borrowed for the call;
 * patch (malloc'd, may be NULL when patch_len is 0) is taken, whatever
 * tf_job_create returns. */
typedef struct tf_jobspec {
    tf_user_t user;         /* the author */
    json_t *builders;       /* array of builder names, no duplicates */
    json_t *tests;          /* object builder -> array of names, or NULL */
    const char *base_revision, *description, *review_url, *patchset;
    const char *email;      /* where the result goes; NULL: the author's */
    bool notify;
    const char *properties; /* JSON object text set on every request (the
                               API checked each builder allows them), or
                               NULL */
    bool new_failures_only; /* the verdict counts new failures only */
    const uint64_t *reuse;  /* NULL, or per builder: a build that passed
                               an identical request (its result is this
                               builder's, nothing runs), or 0 */
    uint8_t *patch;
    size_t patch_len;
    char sha[TF_SHA256_HEX_LEN + 1]; /* of the patch when patch_len > 0 */
} tf_jobspec_t;

/* Called on the loop thread once the job's rows committed (rc 0) or
 * failed (rc < 0: nothing of the job exists). request_ids[i] is the
 * request made for builders[i], 0 when none could be made (out of
 * memory; logged); a reused builder's request is done already. The
 * array is valid for the call only. */
typedef void (*tf_job_created_cb)(void *arg, int rc, uint64_t job_id,
                                  const uint64_t *request_ids, size_t n);

/* Stores a try job as one all-or-nothing write (patch, job, one request
 * per builder), then schedules its requests and calls cb. Returns 0 (cb
 * will run), TF_ENOENT when a builder is not in the config in force (err
 * says which and lists the known ones; cb does not run) or TF_ENOMEM. */
int tf_job_create(struct tf_master *m, tf_jobspec_t *spec, char *err,
                  size_t errlen, tf_job_created_cb cb, void *arg);

/* Cancels every open request of unfinished job id (running builds are
 * aborted, pending requests leave the queue). Returns 0, or TF_ENOENT
 * when the job is not open (finished, cancelled, or unknown). */
int tf_job_cancel(struct tf_master *m, uint64_t id, const char *by);
/* (Several masters: the job need not be known here; the caller has
 * stored the cancel for the other masters first,
 * tf_master_cancel_elsewhere.) */

/* Cancels what this master runs or queues of job id (the part of
 * tf_job_cancel done on each master). by is for the logs. */
void tf_job_cancel_here(struct tf_master *m, uint64_t id, const char *by);

/* A request of job job_id started its first build: the job is running. */
void tf_job_request_started(struct tf_master *m, uint64_t job_id);

/* A request is added to open job job_id (a rerun without the patch): the
 * job stays open until it ends too. Returns false (and adds nothing)
 * when the job is not open or is being cancelled. */
bool tf_job_request_added(struct tf_master *m, uint64_t job_id);

/* Several masters: a request of job job_id that this master counted open
 * is another master's now (a lost claim, a build taken over): it is no
 * longer counted here, and the job is not ended for it (the master that
 * ends it settles the job in the database). */
void tf_job_request_forgotten(struct tf_master *m, uint64_t job_id);

/* A request of job job_id ended for good with result. When it was the
 * last, the job's result is written. Call inside the write group that
 * ends the request. */
void tf_job_request_done(struct tf_master *m, uint64_t job_id,
                         tf_result_t result);

/* Rebuilds the object of an unfinished job at startup: nopen requests
 * still open, the worst result of those done so far (has_result). */
void tf_jobs_restore(struct tf_master *m, uint64_t id, const char *email,
                     bool started, unsigned nopen, bool has_result,
                     tf_result_t result);

/* Frees every job object (shutdown). */
void tf_jobs_free_all(struct tf_master *m);

#endif
