/*
 * routes.c - the API's one route table, and what happens to a request
 * between its headers and its handler (api/request.h, steps 2 and 3).
 *
 * Each route is a row: method, path pattern (as docs/api.md writes it),
 * the role it needs, the largest body it takes, whether it writes, and
 * the handler. Everything a request is checked against before its handler
 * runs comes from its row, in this order, each answered without reading
 * the body:
 *
 *   404  no pattern has the path's shape
 *   400  a {name}, {id}, {number} or {index} segment is malformed
 *   405  the shape exists for other methods only (Allow lists them)
 *   411, 413  a chunked body, or a Content-Length over the row's cap
 *   401  the role needs a token and none (or an unknown one) came
 *   403  the token's holder does not have the role
 *   503  a writing route while the database cannot be written
 *
 * CORS (cors_origins in the config, none by default): a request whose
 * Origin is allowed gets Access-Control-Allow-Origin on every answer,
 * errors included; a preflight (OPTIONS with an Origin) is answered here,
 * 204 with the route's methods for an allowed origin, 403 otherwise, and
 * never reaches a handler.
 *
 * Identification: the admin token (DIR/admin.token) is compared in
 * constant time; any other token is looked up by its SHA-256 on a read
 * connection, off the loop thread. Which committer may act on which job,
 * request or build is the handlers' business (api/authz.c), since it
 * depends on the object.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/handlers.h"
#include "api/mail.h"
#include "core/master.h"
#include "crypto.h"
#include "log.h"
#include "names.h"
#include "tf_err.h"
#include "util.h"

#define KIB 1024u
#define MAX_SEGS 8

/* Bodies: actions take a small JSON object; force may carry properties. */
#define CAP_NONE 0
#define CAP_SMALL (4 * KIB)
#define CAP_FORCE (1024 * KIB)

static const char need_token[] =
    "this action needs a token: send \"Authorization: Bearer TOKEN\"";

/* The table. Order matters only for the index (GET /api/v1). */
static const tf_route_t routes[] = {
    {TF_HTTP_GET, "/api/v1", TF_ROLE_ANYONE, CAP_NONE, NULL, false,
     tf_api_index, NULL},
    {TF_HTTP_GET, "/api/v1/master", TF_ROLE_ANYONE, CAP_NONE, NULL, false,
     tf_api_master, NULL},
    {TF_HTTP_POST, "/api/v1/master/clock", TF_ROLE_ADMIN, CAP_SMALL, NULL,
     false, tf_api_master_clock, "setting the clock needs the admin token"},
    {TF_HTTP_GET, "/api/v1/summary", TF_ROLE_ANYONE, CAP_NONE, NULL, false,
     tf_api_summary, NULL},
    {TF_HTTP_GET, "/api/v1/waterfall", TF_ROLE_ANYONE, CAP_NONE, NULL, false,
     tf_api_waterfall, NULL},
    {TF_HTTP_GET, "/api/v1/console", TF_ROLE_ANYONE, CAP_NONE, NULL, false,
     tf_api_console, NULL},
    {TF_HTTP_GET, "/api/v1/builders", TF_ROLE_ANYONE, CAP_NONE, NULL, false,
     tf_api_builders, NULL},
    {TF_HTTP_GET, "/api/v1/builders/{name}", TF_ROLE_ANYONE, CAP_NONE, NULL,
     false, tf_api_builder, NULL},
    {TF_HTTP_GET, "/api/v1/builders/{name}/builds", TF_ROLE_ANYONE, CAP_NONE,
     NULL, false, tf_api_builder_builds, NULL},
    {TF_HTTP_GET, "/api/v1/builders/{name}/builds/{number}", TF_ROLE_ANYONE,
     CAP_NONE, NULL, false, tf_api_build_by_number, NULL},
    {TF_HTTP_GET, "/api/v1/builders/{name}/stats", TF_ROLE_ANYONE, CAP_NONE,
     NULL, false, tf_api_builder_stats, NULL},
    {TF_HTTP_GET, "/api/v1/builders/{name}/tests", TF_ROLE_ANYONE, CAP_NONE,
     NULL, false, tf_api_builder_tests, NULL},
    {TF_HTTP_GET, "/api/v1/builders/{name}/tests/history", TF_ROLE_ANYONE,
     CAP_NONE, NULL, false, tf_api_test_history, NULL},
    {TF_HTTP_POST, "/api/v1/builders/{name}/force", TF_ROLE_TOKEN, CAP_FORCE,
     NULL, true, tf_api_force, NULL},
    {TF_HTTP_GET, "/api/v1/builds/{id}", TF_ROLE_ANYONE, CAP_NONE, NULL,
     false, tf_api_build, NULL},
    {TF_HTTP_GET, "/api/v1/builds/{id}/tests", TF_ROLE_ANYONE, CAP_NONE,
     NULL, false, tf_api_build_tests, NULL},
    {TF_HTTP_POST, "/api/v1/builds/{id}/cancel", TF_ROLE_TOKEN, CAP_SMALL,
     NULL, false, tf_api_build_cancel, NULL},
    {TF_HTTP_POST, "/api/v1/builds/{id}/rebuild", TF_ROLE_TOKEN, CAP_SMALL,
     NULL, true, tf_api_rebuild, NULL},
    {TF_HTTP_GET, "/api/v1/builds/{id}/steps/{index}/log", TF_ROLE_ANYONE,
     CAP_NONE, NULL, false, tf_api_log, NULL},
    {TF_HTTP_GET, "/api/v1/slaves", TF_ROLE_ANYONE, CAP_NONE, NULL, false,
     tf_api_slaves, NULL},
    {TF_HTTP_GET, "/api/v1/slaves/{name}", TF_ROLE_ANYONE, CAP_NONE, NULL,
     false, tf_api_slave, NULL},
    {TF_HTTP_GET, "/api/v1/requests", TF_ROLE_ANYONE, CAP_NONE, NULL, false,
     tf_api_requests, NULL},
    {TF_HTTP_GET, "/api/v1/requests/{id}", TF_ROLE_ANYONE, CAP_NONE, NULL,
     false, tf_api_request, NULL},
    {TF_HTTP_POST, "/api/v1/requests/{id}/cancel", TF_ROLE_TOKEN, CAP_SMALL,
     NULL, true, tf_api_request_cancel, NULL},
    {TF_HTTP_GET, "/api/v1/whoami", TF_ROLE_TOKEN, CAP_NONE, NULL, false,
     tf_api_whoami, "send \"Authorization: Bearer TOKEN\""},
    {TF_HTTP_POST, "/api/v1/jobs", TF_ROLE_COMMITTER, 0,
     tf_api_jobs_body_cap, true, tf_api_job_submit,
     "submitting a try job needs a committer's token: send "
     "\"Authorization: Bearer TOKEN\""},
    {TF_HTTP_GET, "/api/v1/jobs", TF_ROLE_ANYONE, CAP_NONE, NULL, false,
     tf_api_jobs_list, NULL},
    {TF_HTTP_GET, "/api/v1/jobs/{id}", TF_ROLE_ANYONE, CAP_NONE, NULL, false,
     tf_api_job_get, NULL},
    {TF_HTTP_POST, "/api/v1/jobs/{id}/cancel", TF_ROLE_TOKEN, CAP_SMALL,
     NULL, false, tf_api_job_cancel, "cancelling needs a token"},
    {TF_HTTP_GET, "/api/v1/patches/{sha256}", TF_ROLE_PATCH, CAP_NONE, NULL,
     false, tf_api_patch,
     "downloading a patch needs a committer's token or slave credentials"},
    {TF_HTTP_GET, "/api/v1/changes", TF_ROLE_ANYONE, CAP_NONE, NULL, false,
     tf_api_changes, NULL},
    {TF_HTTP_GET, "/api/v1/changes/{id}", TF_ROLE_ANYONE, CAP_NONE, NULL,
     false, tf_api_change, NULL},
    {TF_HTTP_GET, "/api/v1/pollers", TF_ROLE_ANYONE, CAP_NONE, NULL, false,
     tf_api_pollers, NULL},
    {TF_HTTP_GET, "/api/v1/schedulers", TF_ROLE_ANYONE, CAP_NONE, NULL,
     false, tf_api_schedulers, NULL},
    {TF_HTTP_GET, "/api/v1/mail", TF_ROLE_TOKEN, CAP_NONE, NULL, false,
     tf_api_mail_list, "reading the mail outbox needs a token: send "
     "\"Authorization: Bearer TOKEN\""},
    {TF_HTTP_GET, "/api/v1/mail/{id}", TF_ROLE_TOKEN, CAP_NONE, NULL, false,
     tf_api_mail_one, "reading the mail outbox needs a token: send "
     "\"Authorization: Bearer TOKEN\""},
    {TF_HTTP_GET, "/api/v1/mail/{id}/message", TF_ROLE_TOKEN, CAP_NONE, NULL,
     false, tf_api_mail_message, "reading the mail outbox needs a token: "
     "send \"Authorization: Bearer TOKEN\""},
    {TF_HTTP_GET, "/badge/{builder}.svg", TF_ROLE_ANYONE, CAP_NONE, NULL, false,
     tf_api_badge, NULL},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

const tf_route_t *tf_api_routes(size_t *n)
{
    *n = NROUTES;
    return routes;
}

const char *tf_role_name(tf_role_t role)
{
    switch (role) {
    case TF_ROLE_ANYONE:
        return "anyone";
    case TF_ROLE_TOKEN:
        return "token";
    case TF_ROLE_COMMITTER:
        return "committer";
    case TF_ROLE_ADMIN:
        return "admin";
    case TF_ROLE_PATCH:
        return "committer or slave";
    }
    return "?";
}

/* --- matching --- */

static size_t split(char *path, char **segs)
{
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(path, "/", &save); t; t = strtok_r(NULL, "/",
                                                                 &save)) {
        if (n == MAX_SEGS)
            return MAX_SEGS + 1; /* longer than any route */
        segs[n++] = t;
    }
    return n;
}

/* The route patterns split into segments, once (loop thread): matching
 * a request then costs comparisons, not a copy and a split of every
 * pattern per request. */
typedef struct split_route {
    char buf[128];
    char *segs[MAX_SEGS];
    size_t n;
} split_route_t;

static const split_route_t *route_split(size_t i)
{
    static split_route_t table[NROUTES];
    static bool ready;
    if (!ready) {
        for (size_t k = 0; k < NROUTES; k++) {
            snprintf(table[k].buf, sizeof(table[k].buf), "%s",
                     routes[k].path);
            table[k].n = split(table[k].buf, table[k].segs);
        }
        ready = true;
    }
    return &table[i];
}

/* Whether route ri's pattern has the shape of the path (same length,
 * literal segments equal). */
static bool shape_matches(size_t ri, char **segs, size_t n)
{
    const split_route_t *sr = route_split(ri);
    char *const *ps = sr->segs;
    if (sr->n != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (ps[i][0] != '{' && strcmp(ps[i], segs[i]) != 0)
            return false;
    return true;
}

static bool parse_id(tf_http_req_t *r, const char *s, const char *what,
                     uint64_t *out)
{
    if (tf_parse_u64(s, out) != 0 || *out == 0 || *out > TF_PROTO_MAX_ID) {
        tf_http_error(r, 400, "invalid %s \"%.64s\": expected a positive "
                      "integer", what, s);
        return false;
    }
    return true;
}

/* Fills a from the placeholders of route's pattern; answers 400 naming
 * the first malformed one. */
static bool parse_args(tf_http_req_t *r, const tf_route_t *route,
                       char **segs, size_t n, tf_route_args_t *a)
{
    char *const *ps = route_split((size_t)(route - routes))->segs;
    for (size_t i = 0; i < n; i++)
        a->segs[i] = segs[i];
    a->nsegs = n;
    for (size_t i = 0; i < n; i++) {
        const char *p = ps[i], *s = segs[i];
        const char *prev = i ? ps[i - 1] : "";
        if (p[0] != '{')
            continue;
        if (strcmp(p, "{name}") == 0) {
            const char *what = strcmp(prev, "slaves") == 0 ? "slave"
                                                           : "builder";
            if (!tf_name_valid(s)) {
                tf_http_error(r, 400, "invalid %s name \"%.80s\"", what, s);
                return false;
            }
            a->name = s;
        } else if (strcmp(p, "{id}") == 0) {
            char what[32];
            /* "builds" -> "build id", "changes" -> "change id", "mail" ->
             * "mail id" */
            size_t len = strlen(prev);
            if (len > 1 && prev[len - 1] == 's')
                len--;
            snprintf(what, sizeof(what), "%.*s id", (int)len, prev);
            if (!parse_id(r, s, what, &a->id))
                return false;
        } else if (strcmp(p, "{number}") == 0) {
            if (!parse_id(r, s, "build number", &a->number))
                return false;
        } else if (strcmp(p, "{index}") == 0) {
            if (tf_parse_u64(s, &a->index) != 0 ||
                a->index >= TF_PROTO_MAX_STEPS) {
                tf_http_error(r, 400, "invalid step index \"%.20s\"", s);
                return false;
            }
        } else if (strcmp(p, "{sha256}") == 0) {
            a->sha256 = s;
        } else if (strcmp(p, "{builder}.svg") == 0) {
            /* BUILDER.svg: the name is checked without its suffix, which
             * is cut off in the caller's copy of the path. */
            size_t len = strlen(s);
            if (len <= 4 || strcmp(s + len - 4, ".svg") != 0) {
                tf_http_error(r, 400, "invalid badge \"%.80s\": expected "
                              "BUILDER.svg", s);
                return false;
            }
            segs[i][len - 4] = '\0';
            if (!tf_name_valid(s)) {
                tf_http_error(r, 400, "invalid builder name \"%.80s\"", s);
                return false;
            }
            a->name = s;
        }
    }
    return true;
}

static const char *method_of(int m)
{
    return m == TF_HTTP_GET ? "GET" : m == TF_HTTP_POST ? "POST" : "?";
}

/* Finds the route of r; answers 404, 400 or 405 when there is none. */
static const tf_route_t *route_find(tf_http_req_t *r, char **segs, size_t n,
                                    tf_route_args_t *a)
{
    const tf_route_t *shape = NULL, *hit = NULL;
    char allow[32] = "";
    for (size_t i = 0; i < NROUTES; i++) {
        if (!shape_matches(i, segs, n))
            continue;
        if (!shape)
            shape = &routes[i];
        if (routes[i].method == r->method)
            hit = &routes[i];
        size_t used = strlen(allow);
        snprintf(allow + used, sizeof(allow) - used, "%s%s",
                 used ? ", " : "", method_of(routes[i].method));
    }
    if (!shape) {
        if (n < 2 || strcmp(segs[0], "api") != 0 || strcmp(segs[1], "v1"))
            tf_http_error(r, 404, "no such endpoint: %s (the API is under "
                          "/api/v1)", r->path);
        else
            tf_http_error(r, 404, "no such endpoint: %s", r->path);
        return NULL;
    }
    if (!parse_args(r, hit ? hit : shape, segs, n, a))
        return NULL;
    if (!hit) {
        tf_http_header(r, "allow", allow);
        tf_http_error(r, 405, "method not allowed here; use %s", allow);
        return NULL;
    }
    return hit;
}

/* --- identifying the caller --- */

typedef struct ident {
    tf_q_user_t q; /* first: the query record */
    tf_http_req_t *r;
} ident_t;

static void after_identity(tf_http_req_t *r);

static void ident_done(void *arg, int rc)
{
    ident_t *i = arg;
    tf_http_req_t *r = i->r;
    if (!tf_http_async_end(r)) {
        free(i);
        return;
    }
    if (rc == 0)
        r->user = i->q.user;
    else if (rc != TF_ENOENT)
        tf_warn("api", "token lookup failed: %s", tf_strerror(rc));
    free(i);
    after_identity(r);
}

/* Resolves the bearer token: the admin's at once, a committer's through
 * the database. Returns true when the answer comes later (after_identity
 * then runs). */
static bool identify(tf_http_req_t *r)
{
    if (!r->token[0])
        return false;
    if (tf_ct_streq(r->token, r->m->admin_token)) {
        r->admin = true;
        return false;
    }
    ident_t *i = calloc(1, sizeof(*i));
    if (!i)
        return false; /* treated as no identity */
    i->q.q.kind = TF_Q_USER_BY_TOKEN;
    i->r = r;
    tf_sha256_hex(r->token, strlen(r->token), i->q.token_sha256);
    tf_http_async_begin(r);
    if (tf_store_query(r->m->store, &i->q.q, ident_done, i) != 0) {
        tf_http_async_end(r);
        free(i);
        return false;
    }
    return true;
}

/* --- the checks --- */

static void unauthorized(tf_http_req_t *r, const char *need)
{
    tf_http_header(r, "www-authenticate", "Bearer");
    tf_http_error(r, 401, "%s", r->token[0] ? "invalid token"
                                           : need ? need : need_token);
}

/* Whether the caller has the route's role; answers 401 or 403 if not. */
static bool role_ok(tf_http_req_t *r, const tf_route_t *route)
{
    bool committer = r->user.id != 0;
    switch (route->role) {
    case TF_ROLE_ANYONE:
        return true;
    case TF_ROLE_TOKEN:
        if (r->admin || committer)
            return true;
        unauthorized(r, route->need);
        return false;
    case TF_ROLE_COMMITTER:
        if (committer)
            return true;
        if (r->admin) {
            tf_http_header(r, "www-authenticate", "Bearer");
            tf_http_error(r, 401, "the admin token cannot submit try jobs: "
                          "use a committer's token (tf-master user add)");
            return false;
        }
        unauthorized(r, route->need);
        return false;
    case TF_ROLE_ADMIN:
        if (r->admin)
            return true;
        if (!committer) { /* no token, or one nobody holds */
            unauthorized(r, route->need);
            return false;
        }
        tf_http_error(r, 403, "%s", route->need ? route->need
                                                : "this action needs the "
                                                  "admin token");
        return false;
    case TF_ROLE_PATCH:
        if (r->admin || committer || tf_api_slave_auth_ok(r))
            return true;
        unauthorized(r, route->need);
        return false;
    }
    return false;
}

/* A writing route's answer waits for a commit: while the database cannot
 * be written it would never come, so say why now. */
static bool store_ok(tf_http_req_t *r, const tf_route_t *route)
{
    if (!route->writes)
        return true;
    tf_store_health_t h;
    tf_store_health(r->m->store, &h);
    if (h.failing_for_ms == 0)
        return true;
    tf_http_header(r, "retry-after", "30");
    tf_http_error(r, 503, "the master cannot write its database now (%s, "
                  "for %u s); nothing was done: try again later",
                  h.last_error[0] ? h.last_error : "unknown error",
                  h.failing_for_ms / 1000);
    return false;
}

static size_t body_cap(const tf_http_req_t *r, const tf_route_t *route)
{
    return route->cap_fn ? route->cap_fn(r->m) : route->body_cap;
}

static void after_identity(tf_http_req_t *r)
{
    const tf_route_t *route = r->route;
    if (!role_ok(r, route) || !store_ok(r, route))
        return;
    tf_http_read_body(r, body_cap(r, route));
}

/* Whether the request's Origin may read the API (cors_origins). */
static bool origin_allowed(const tf_http_req_t *r)
{
    const tf_config_t *c = r->m->cfg;
    if (!r->origin[0])
        return false;
    for (size_t i = 0; i < c->ncors_origins; i++)
        if (strcmp(c->cors_origins[i], "*") == 0 ||
            strcasecmp(c->cors_origins[i], r->origin) == 0)
            return true;
    return false;
}

/* A CORS preflight: what the browser may send to this path. */
static void preflight(tf_http_req_t *r, char **segs, size_t n)
{
    char allow[32] = "";
    for (size_t i = 0; n <= MAX_SEGS && i < NROUTES; i++) {
        if (!shape_matches(i, segs, n))
            continue;
        size_t used = strlen(allow);
        snprintf(allow + used, sizeof(allow) - used, "%s%s",
                 used ? ", " : "", method_of(routes[i].method));
    }
    if (!allow[0]) {
        tf_http_error(r, 404, "no such endpoint: %s", r->path);
        return;
    }
    if (!r->origin[0]) {
        tf_http_header(r, "allow", allow);
        tf_http_error(r, 405, "method not allowed here; use %s", allow);
        return;
    }
    if (!origin_allowed(r)) {
        tf_http_error(r, 403, "pages on %.80s may not call this master's API: "
                      "add the origin to cors_origins in the master's config",
                      r->origin);
        return;
    }
    tf_http_header(r, "access-control-allow-methods", allow);
    tf_http_header(r, "access-control-allow-headers",
                   "Authorization, Content-Type, Range");
    tf_http_header(r, "access-control-max-age", "600");
    tf_http_respond(r, 204, "text/plain", "", 0);
}

void tf_api_headers(tf_http_req_t *r)
{
    if (strncmp(r->path, "/api/", 5) != 0 && strcmp(r->path, "/api") != 0 &&
        strncmp(r->path, "/badge/", 7) != 0) {
        tf_http_error(r, 404, "no such page: %s", r->path);
        return;
    }
    char path[TF_HTTP_PATH_MAX];
    char *segs[MAX_SEGS];
    tf_route_args_t a;
    snprintf(path, sizeof(path), "%s", r->path);
    size_t n = split(path, segs);
    memset(&a, 0, sizeof(a));
    if (origin_allowed(r)) {
        tf_http_header(r, "access-control-allow-origin", r->origin);
        tf_http_header(r, "access-control-expose-headers",
                       "X-Log-Size, X-Log-Lines, Content-Range");
    }
    /* The answer depends on the Origin whenever CORS is configured, even
     * for a request without one or from an origin not allowed: a shared
     * cache must not hand one origin's answer (with or without the allow
     * header) to another. */
    if (r->m->cfg->ncors_origins)
        tf_http_header(r, "vary", "Origin");
    if (strcmp(r->method_name, "OPTIONS") == 0) {
        preflight(r, segs, n);
        return;
    }
    const tf_route_t *route = n <= MAX_SEGS ? route_find(r, segs, n, &a)
                                            : NULL;
    if (n > MAX_SEGS)
        tf_http_error(r, 404, "no such endpoint: %s", r->path);
    if (!route)
        return;
    r->route = route;
    if (!tf_http_length_ok(r, body_cap(r, route)))
        return;
    if (identify(r))
        return;
    after_identity(r);
}

void tf_api_dispatch(tf_http_req_t *r)
{
    char path[TF_HTTP_PATH_MAX];
    char *segs[MAX_SEGS];
    tf_route_args_t a;
    memset(&a, 0, sizeof(a));
    snprintf(path, sizeof(path), "%s", r->path);
    size_t n = split(path, segs);
    /* Parsed when routing already; this cannot fail now. */
    if (!r->route || n > MAX_SEGS ||
        !parse_args(r, r->route, segs, n, &a))
        return;
    r->route->fn(r, &a);
}
