/*
 * jobs.h - try jobs: a committer's patch run on several builders.
 *
 * A job is one row in try_jobs plus one build request per builder. The
 * loop thread keeps a small object per job that is not finished yet, to
 * know when its last request ends and to record the job's result in the
 * same transaction as that request's end.
 */
#ifndef TF_JOBS_H
#define TF_JOBS_H

#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>

#include "net/http.h"
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

/* POST /api/v1/jobs, GET /api/v1/jobs, GET /api/v1/jobs/{id},
 * POST /api/v1/jobs/{id}/cancel, GET /api/v1/patches/{sha256},
 * GET /api/v1/whoami. The request has been identified (tf_http_req_t.user,
 * .admin). */
void tf_api_job_submit(tf_http_req_t *r);
void tf_api_jobs_list(tf_http_req_t *r);
void tf_api_job_get(tf_http_req_t *r, uint64_t id);
void tf_api_job_cancel(tf_http_req_t *r, uint64_t id);
void tf_api_patch(tf_http_req_t *r, const char *sha256);
void tf_api_whoami(tf_http_req_t *r);

/* The body cap of POST /api/v1/jobs: room for the largest patch in
 * base64 plus metadata. */
size_t tf_jobs_body_cap(const struct tf_master *m);

/* A request of job job_id started its first build: the job is running. */
void tf_job_request_started(struct tf_master *m, uint64_t job_id);

/* A request of job job_id ended for good with result. When it was the
 * last, the job's result is written. Call inside the write group that
 * ends the request. */
void tf_job_request_done(struct tf_master *m, uint64_t job_id,
                         tf_result_t result);

/* Rebuilds the objects of unfinished jobs at startup, after requests are
 * loaded. Runs on a read connection. */
int tf_jobs_load(sqlite3 *db, struct tf_master *m);

/* Frees every job object (shutdown). */
void tf_jobs_free_all(struct tf_master *m);

#endif
