/*
 * handlers.h - the route table's types and the endpoint handlers of the
 * JSON API, inside api/.
 *
 * A handler answers one row of the route table (routes.c). It runs once
 * the route's checks passed (shape, parameters, method, body size, role,
 * store health) and the body has arrived; the caller is identified
 * (tf_http_req_t.user, .admin). It answers at once or after asynchronous
 * work (tf_http_async_begin/end). Handlers call core for the model and
 * store/queries.c for reads; they hold no SQL.
 */
#ifndef TF_API_HANDLERS_H
#define TF_API_HANDLERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "api/request.h"
#include "email.h"
#include "store/store_sqlite.h"

struct tf_master;
struct tf_cfg_builder;

/* Who may call a route (docs/api.md, "Who may do what"). */
typedef enum {
    TF_ROLE_ANYONE = 0, /* no token needed (one is still identified) */
    TF_ROLE_TOKEN,      /* a committer's token or the admin token; the
                           handler checks the object (api/authz.c) */
    TF_ROLE_COMMITTER,  /* a committer's token only */
    TF_ROLE_ADMIN,      /* the admin token only */
    TF_ROLE_PATCH,      /* a token, or a slave's signed request */
} tf_role_t;

/* The placeholders of a matched path, validated. Strings point into a
 * buffer that lives for the handler's call only. */
typedef struct tf_route_args {
    const char *name;    /* {name}: a builder or slave name */
    uint64_t id;         /* {id} */
    uint64_t number;     /* {number} */
    uint64_t index;      /* {index} */
    const char *sha256;  /* {sha256}, unchecked */
    const char *segs[8]; /* every segment of the path */
    size_t nsegs;
} tf_route_args_t;

typedef void (*tf_route_fn)(tf_http_req_t *r, const tf_route_args_t *a);

/* One row of the route table. */
typedef struct tf_route {
    int method;          /* TF_HTTP_GET or TF_HTTP_POST */
    const char *path;    /* pattern as docs/api.md writes it */
    tf_role_t role;
    size_t body_cap;     /* bytes; 0: no body */
    size_t (*cap_fn)(const struct tf_master *m); /* overrides body_cap */
    bool writes;         /* answers after a commit: 503 while the store
                            cannot be written */
    tf_route_fn fn;
    const char *need;    /* the 401 message without a token (NULL: the
                            usual one) */
} tf_route_t;

/* api.c: the asynchronous read behind an answer. Starts run(db, ctx) on
 * a reader connection, then done(ctx, rc) on the loop thread, which
 * calls tf_http_async_end(r) first. When the read cannot start, r is
 * answered 503 and false returned: ctx stays the caller's to free. */
bool tf_api_read_then(tf_http_req_t *r, tf_store_read_fn run,
                      tf_store_done_cb done, void *ctx);

/* api.c, several masters: the owner and state of a build, a request or
 * a try job that this master does not hold, read from the database
 * before a cancel of it is stored. */
typedef enum {
    TF_API_OWNED_BUILD,
    TF_API_OWNED_REQUEST,
    TF_API_OWNED_JOB,
} tf_api_owned_kind_t;
typedef struct tf_api_owned {
    tf_http_req_t *r;
    tf_api_owned_kind_t kind;
    uint64_t id;
    uint64_t build_id, job_id; /* a request's (0: none) */
    bool again; /* a request: its guarded cancel was tried once */
    char owner[TF_EMAIL_MAX + 1]; /* a job's: its author's email */
    char state[16];
} tf_api_owned_t;

/* Reads id's owner and state (tf_q_build_owner, tf_q_request_owner,
 * tf_q_job_owner), then done(c, rc) with c a tf_api_owned_t that done
 * frees. Answers 503 itself when the read cannot start. */
void tf_api_owned_read(tf_http_req_t *r, tf_api_owned_kind_t kind,
                       uint64_t id, bool again, tf_store_done_cb done);

/* What this master does itself once a cancel is stored (a try job's
 * requests queued or run here): by names who cancelled. */
typedef void (*tf_api_cancel_then_fn)(struct tf_master *m, uint64_t id,
                                      const char *by);

/* Stores a cancel of build id (kind "build") or try job id (kind "job")
 * for the master running it (tf_master_cancel_elsewhere), then answers
 * 202 with ans (taken) once committed, 409 with the message gone when it
 * has ended meanwhile, 503 when it could not be stored; then (may be
 * NULL) runs after the commit whether or not the client still waits. */
void tf_api_cancel_store(tf_http_req_t *r, const char *kind, uint64_t id,
                         const char *why, json_t *ans, const char *gone,
                         tf_api_cancel_then_fn then);

/* routes.c: the table (n rows) and role names for the index. */
const tf_route_t *tf_api_routes(size_t *n);
const char *tf_role_name(tf_role_t role);

/* authz.c: who may act on what. Each answers 403 (or 400) and returns
 * false when the caller may not. */

/* The admin, or the committer whose email is owner ("" or NULL: nobody's,
 * so the admin only). what names the object for the message. */
bool tf_api_may_act(tf_http_req_t *r, const char *owner, const char *what);

/* Forcing or rebuilding builder b: the admin, or a committer named in
 * b's force_allowed (or any committer when it holds "*"). */
bool tf_api_may_force(tf_http_req_t *r, const struct tf_cfg_builder *b,
                      const char *action);

/* The properties a caller sets on a forced build of b (object, may be
 * NULL): the admin any, a committer only those in b's force_properties.
 * Answers 400 naming the first one refused. */
bool tf_api_props_allowed(tf_http_req_t *r, const struct tf_cfg_builder *b,
                          json_t *props);

/* A request signed by a slave ("Authorization: TF-Slave name=N,time=T,
 * sig=HMAC") for its path. */
bool tf_api_slave_auth_ok(tf_http_req_t *r);

/* api.c: sets "commit_url" of a change object (the config's commit_url
 * with "{revision}" replaced; null without one), of each change of an
 * array. */
void tf_api_commit_link(const struct tf_master *m, json_t *change);
void tf_api_commit_links(const struct tf_master *m, json_t *changes);

/* api.c: sets every "page_url" in j to null: a master without web_root
 * serves no pages to link to (net calls it on every JSON answer). */
void tf_api_pages_null(json_t *j);

/* api.c: the query parameter kind ("try" or "ci"; *kind NULL when
 * absent, else a static string); answers 400 for any other value. */
bool tf_api_arg_kind(tf_http_req_t *r, const char **kind);

/* api.c: answers 400 naming the first query parameter not in names
 * (NULL-terminated) and returns false. */
bool tf_api_args_only(tf_http_req_t *r, const char *const *names);

/* api.c: adds to arr (the builders query's rows, sorted by name) a row
 * for each configured builder the store does not hold yet, keeping the
 * order: right after a start or a reload the writer may not have
 * committed them, and a configured builder must not answer 404 or be
 * missing from a list meanwhile. */
void tf_api_builders_complete(struct tf_master *m, const char *base,
                              json_t *arr);

/* api.c: slave name's live state: connected, its running builds and
 * whether it drains, from this master's link, or, when farm is not NULL
 * (shared masters: tf_q_farm_slaves read with the answer), from the
 * database's view of the other masters' slaves. One master (farm NULL)
 * answers from its links only, as before. */
void tf_api_slave_state(struct tf_master *m, const json_t *farm,
                        const char *name, bool *up, unsigned *builds,
                        bool *draining);

/* api.c: the slaves that may run builder cfg by live state
 * (tf_api_slave_state), as a new object {allowed, connected, idle,
 * busy}; *nconnected gets connected. */
void tf_api_builder_slave_counts(struct tf_master *m, const json_t *farm,
                                 const struct tf_cfg_builder *cfg,
                                 json_t **counts, unsigned *nconnected);

/* api.c: whether row, an open build of tf_q_farm_builds (shared
 * masters), runs on another master: neither in this master's memory nor
 * on a slave linked here (this master's own builds are answered from its
 * memory, which is ahead of the database). */
bool tf_api_farm_build_elsewhere(struct tf_master *m, const json_t *row);

/* api.c: the master, builders, builds, slaves, requests, logs. */
void tf_api_index(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_master(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_builders(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_builder(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_builder_builds(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_build_by_number(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_builder_stats(tf_http_req_t *r, const tf_route_args_t *a);

/* api/tests.c: test results (docs/api.md, "Test results"). */
void tf_api_build_tests(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_builder_tests(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_test_history(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_force(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_build(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_build_cancel(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_log(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_slaves(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_slave(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_requests(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_request(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_request_cancel(tf_http_req_t *r, const tf_route_args_t *a);

/* badge.c: GET /badge/BUILDER.svg, and the picture itself: the SVG of a
 * badge "label | status" into out (cap bytes). Returns its length, or
 * TF_E2BIG when it does not fit. Pure. */
void tf_api_badge(tf_http_req_t *r, const tf_route_args_t *a);
int tf_badge_svg(const char *label, const char *status, char *out,
                 size_t cap);

/* pages.c: the status pages' data. */
void tf_api_summary(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_waterfall(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_console(tf_http_req_t *r, const tf_route_args_t *a);

/* jobs.c: try jobs, patches, whoami. */
void tf_api_job_submit(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_jobs_list(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_job_get(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_job_cancel(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_patch(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_whoami(tf_http_req_t *r, const tf_route_args_t *a);

/* The body cap of POST /api/v1/jobs: room for the largest patch in
 * base64 plus metadata. */
size_t tf_api_jobs_body_cap(const struct tf_master *m);

/* changes.c: continuous builds. */
void tf_api_pollers(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_schedulers(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_changes(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_change(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_master_clock(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_rebuild(tf_http_req_t *r, const tf_route_args_t *a);

/* api.c: answers a request that queued build request `id` of `builder`
 * (force, rebuild) once its write group committed with rc: 500 when rc is
 * an error, else 201 {"request_id", "builder", "url", "position"} plus
 * the fields of extra (taken; may be NULL). */
void tf_api_request_queued(tf_http_req_t *r, int rc, uint64_t id,
                           const char *builder, json_t *extra);

#endif
