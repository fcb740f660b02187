/*
 * handlers.h - the endpoint handlers of the JSON API, inside api/.
 *
 * Each handler answers one route of docs/api.md. It gets a request whose
 * headers (and body, for POST) have arrived and whose caller has been
 * identified (tf_http_req_t.user, .admin), and answers at once or after
 * asynchronous work (tf_http_async_begin/end). Handlers call core for the
 * model and store/queries.c for reads; they hold no SQL.
 */
#ifndef TF_API_HANDLERS_H
#define TF_API_HANDLERS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "net/http.h"

struct tf_master;

/* pages.c: the status pages' data. */
void tf_api_summary(tf_http_req_t *r);
void tf_api_waterfall(tf_http_req_t *r);
void tf_api_console(tf_http_req_t *r);

/* jobs.c: try jobs, patches, whoami. */
void tf_api_job_submit(tf_http_req_t *r);
void tf_api_jobs_list(tf_http_req_t *r);
void tf_api_job_get(tf_http_req_t *r, uint64_t id);
void tf_api_job_cancel(tf_http_req_t *r, uint64_t id);
void tf_api_patch(tf_http_req_t *r, const char *sha256);
void tf_api_whoami(tf_http_req_t *r);

/* The body cap of POST /api/v1/jobs: room for the largest patch in
 * base64 plus metadata. */
size_t tf_api_jobs_body_cap(const struct tf_master *m);

/* changes.c: continuous builds. */
void tf_api_pollers(tf_http_req_t *r);
void tf_api_schedulers(tf_http_req_t *r);
void tf_api_changes(tf_http_req_t *r);
void tf_api_change(tf_http_req_t *r, uint64_t id);
void tf_api_master_clock(tf_http_req_t *r);
void tf_api_rebuild(tf_http_req_t *r, uint64_t build_id);

/* api.c: answers a request that queued build request `id` of `builder`
 * (force, rebuild) once its write group committed with rc: 500 when rc is
 * an error, else 201 {"request_id", "builder", "url", "position"} plus
 * the fields of extra (taken; may be NULL). */
void tf_api_request_queued(tf_http_req_t *r, int rc, uint64_t id,
                           const char *builder, json_t *extra);

#endif
