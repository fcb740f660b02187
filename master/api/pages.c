/*
 * pages.c - the endpoints behind the status pages: summary, waterfall and
 * console (docs/api.md, "Status pages data").
 *
 * Each answers from summary rows and indexed ranges: the summary reads one
 * row per builder; the waterfall reads one page of builds through the
 * created_ms index and their steps by primary key; the console reads one
 * page of try jobs. Nothing here scans the builds or steps tables, so the
 * cost does not grow with history (tests/bench/bench_api.py measures it).
 */
#include "api/handlers.h"

#include "api/cache.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "core/master.h"
#include "names.h"
#include "store/queries.h"
#include "tf_err.h"
#include "util.h"

#define WATERFALL_MAX 500
#define WATERFALL_BUILDERS 64
/* Slaves the summary lists by name unless asked for all. */
#define TF_SUMMARY_SLAVES_LISTED 32

typedef enum { PG_SUMMARY, PG_WATERFALL, PG_CONSOLE } pg_kind_t;

typedef struct pg {
    tf_http_req_t *r;
    pg_kind_t kind;
    char base[512];
    int64_t before;
    int64_t before_id;        /* waterfall */
    tf_console_cursor_t cons; /* console */
    unsigned limit;
    char builders[WATERFALL_BUILDERS][TF_NAME_MAX + 1];
    size_t nbuilders;         /* waterfall, summary: only these (0: all) */
    const char *kind_filter;  /* waterfall: "try", "ci" or NULL */
    bool all_slaves;          /* summary: list every slave (?slaves=all) */
    bool shared;              /* summary: count every master's slaves */
    json_t *farm;             /* ... read with the builders
                               * (tf_q_farm_slaves) */
    json_t *fbuilds;          /* ... and the farm's open builds
                               * (tf_q_farm_builds) */
    json_t *fpending;         /* ... and pending (tf_q_farm_pending) */
    json_t *out;
} pg_t;

/* --- summary --- */

/* Whether name is one of the builders the summary was asked about. */
static bool chosen(const pg_t *q, const char *name)
{
    if (q->nbuilders == 0)
        return true;
    for (size_t i = 0; i < q->nbuilders; i++)
        if (strcmp(q->builders[i], name) == 0)
            return true;
    return false;
}

/* Every configured slave with its live state, for monitors: counted by
 * state into o, and listed into o's "list" (the first
 * TF_SUMMARY_SLAVES_LISTED in config order unless all): on a farm of a
 * thousand slaves the whole list would be most of a hot answer's bytes
 * (docs/api.md, "GET /api/v1/summary"). */
static void summary_slaves(tf_master_t *m, const json_t *farm, json_t *o,
                           bool all)
{
    json_t *arr = json_array();
    const char *base = m->cfg->public_url;
    unsigned connected = 0, idle = 0, building = 0, draining = 0;
    for (size_t k = 0; k < m->cfg->nslaves; k++) {
        const char *name = m->cfg->slaves[k].name;
        tf_mslave_t *s = tf_master_slave(m, name, false);
        bool up, drains;
        unsigned nb;
        tf_api_slave_state(m, farm, name, &up, &nb, &drains);
        connected += up;
        const char *state = !up     ? "offline"
                            : drains ? "draining"
                            : nb     ? "building"
                                     : "idle";
        draining += up && drains;
        building += up && !drains && nb;
        idle += up && !drains && !nb;
        if (!all && k >= TF_SUMMARY_SLAVES_LISTED)
            continue;
        char url[600], page[600];
        snprintf(url, sizeof(url), "%sapi/v1/slaves/%s", base, name);
        snprintf(page, sizeof(page), "%s#/slaves/%s", base, name);
        json_t *e = json_pack("{s:s,s:s,s:b,s:i,s:s,s:s}", "name", name,
                              "state", state, "connected", up, "builds",
                              (int)nb, "url", url, "page_url", page);
        json_object_set_new(e, "last_seen_ms",
                            s && s->last_seen_ms
                                ? json_integer(s->last_seen_ms)
                                : json_null());
        json_array_append_new(arr, e);
    }
    json_object_set_new(o, "connected", json_integer(connected));
    json_object_set_new(o, "total", json_integer((json_int_t)m->cfg->nslaves));
    json_object_set_new(o, "idle", json_integer(idle));
    json_object_set_new(o, "building", json_integer(building));
    json_object_set_new(o, "draining", json_integer(draining));
    json_object_set_new(o, "offline",
                        json_integer((json_int_t)m->cfg->nslaves - connected));
    json_object_set_new(o, "list", arr);
    json_object_set_new(o, "list_complete",
                        json_boolean(json_array_size(arr) == m->cfg->nslaves));
}

/* Reshapes the builders query into the compact summary, with the verdict,
 * on the loop thread (live state overlaid). The verdict, each builder's
 * last build and who broke it count continuous builds only: the builders
 * query's last_complete never holds a try build. */
static json_t *summary_of(tf_master_t *m, const pg_t *q, json_t *builders)
{
    json_t *arr = json_array(), *failing = json_array();
    const char *base = m->cfg->public_url;
    int worst = -1; /* 0 ok, 1 warnings, 2 failing */
    size_t i;
    json_t *b;
    json_array_foreach(builders, i, b)
    {
        const char *name = json_string_value(json_object_get(b, "name"));
        const tf_cfg_builder_t *cfg = tf_config_builder(m->cfg, name);
        if (!cfg || !chosen(q, name))
            continue;
        tf_mbuilder_t *mb = tf_master_builder(m, name, false);
        unsigned up = 0;
        json_t *counts = NULL;
        tf_api_builder_slave_counts(m, q->farm, cfg, &counts, &up);
        unsigned pending = mb ? mb->npending : 0, running = mb ? mb->nrunning
                                                               : 0;
        json_t *last = json_object_get(b, "last_complete");
        const char *res = json_string_value(json_object_get(last, "result"));
        if (res) {
            int w = (!strcmp(res, "FAILURE") || !strcmp(res, "EXCEPTION")) ? 2
                    : !strcmp(res, "WARNINGS")                               ? 1
                                                                             : 0;
            if (w > worst)
                worst = w;
        }
        json_t *current = json_array();
        size_t pos = 0;
        void *v;
        while (tf_map_next(m->builds, &pos, NULL, NULL, &v) == 0) {
            tf_build_t *bd = v;
            if (bd->state == TF_BUILD_ENDING || strcmp(bd->builder, name))
                continue;
            char burl[600];
            snprintf(burl, sizeof(burl), "%s#/builds/%" PRIu64, base, bd->id);
            json_array_append_new(
                current,
                json_pack("{s:I,s:I,s:s,s:I,s:s,s:s}", "id",
                          (json_int_t)bd->id, "number",
                          (json_int_t)bd->number, "slave", bd->slave,
                          "started_ms",
                          (json_int_t)(bd->started_ms ? bd->started_ms
                                                      : bd->created_ms),
                          "kind", bd->is_try ? "try" : "ci", "page_url",
                          burl));
        }
        /* Shared masters: the other masters' builds of it, and the
         * farm's pending count, from the database in the same snapshot as
         * the rows (api.c, overlay_builder). */
        if (q->fpending)
            pending = (unsigned)json_integer_value(
                json_object_get(q->fpending, name));
        size_t k;
        json_t *row;
        json_array_foreach(json_object_get(q->fbuilds, name), k, row)
        {
            if (!tf_api_farm_build_elsewhere(m, row))
                continue;
            json_int_t id = json_integer_value(json_array_get(row, 0));
            char burl[600];
            snprintf(burl, sizeof(burl), "%s#/builds/%" PRId64, base,
                     (int64_t)id);
            json_array_append_new(
                current,
                json_pack("{s:I,s:I,s:O,s:I,s:O,s:s}", "id", id, "number",
                          json_integer_value(json_array_get(row, 2)), "slave",
                          json_array_get(row, 3), "started_ms",
                          json_integer_value(json_array_get(row, 4)), "kind",
                          json_array_get(row, 5), "page_url", burl));
            running++;
        }
        const char *state = running   ? "building"
                            : up == 0 ? "offline"
                            : pending ? "pending"
                                      : "idle";
        json_t *o = json_pack("{s:s,s:s,s:i,s:i,s:i}", "name", name, "state",
                              state, "pending", (int)pending, "running",
                              (int)running, "connected_slaves", (int)up);
        json_object_set_new(o, "slave_counts", counts);
        json_object_set(o, "last", last ? last : json_null());
        json_object_set_new(o, "current", current);
        json_object_set(o, "failing_since",
                        json_object_get(b, "failing_since"));
        json_object_set(o, "suspects", json_object_get(b, "suspects"));
        json_object_set(o, "failed_step", json_object_get(b, "failed_step"));
        json_object_set(o, "url", json_object_get(b, "url"));
        json_object_set(o, "page_url", json_object_get(b, "page_url"));
        if (json_is_object(json_object_get(b, "failing_since")) ||
            (res && (!strcmp(res, "FAILURE") || !strcmp(res, "EXCEPTION"))))
            json_array_append_new(
                failing,
                json_pack("{s:s,s:O,s:O,s:O,s:O,s:O}", "name", name, "last",
                          last ? last : json_null(), "since",
                          json_object_get(b, "failing_since"), "suspects",
                          json_object_get(b, "suspects"), "failed_step",
                          json_object_get(b, "failed_step"), "page_url",
                          json_object_get(b, "page_url")));
        json_array_append_new(arr, o);
    }
    json_t *slaves = json_object();
    summary_slaves(m, q->farm, slaves, q->all_slaves);
    const char *verdict = worst < 0    ? "unknown"
                          : worst == 2 ? "failing"
                          : worst == 1 ? "warnings"
                                       : "ok";
    char page[600];
    snprintf(page, sizeof(page), "%s#/", base);
    json_t *o = json_pack("{s:s,s:I,s:s,s:s,s:o}", "name", m->cfg->name,
                          "time_ms", (json_int_t)tf_now_ms(), "verdict",
                          verdict, "page_url", page, "slaves", slaves);
    json_object_set_new(o, "failing", failing);
    json_object_set_new(o, "builders", arr);
    return o;
}

/* --- plumbing --- */

static int pg_run(tf_db_t *db, void *arg)
{
    pg_t *q = arg;
    switch (q->kind) {
    case PG_SUMMARY: {
        int rc = tf_q_builders(db, q->base, &q->out);
        /* Several masters: the slaves of the others, in the same
         * snapshot. */
        if (rc == 0 && q->shared)
            rc = tf_q_farm_slaves(db, &q->farm);
        if (rc == 0 && q->shared)
            rc = tf_q_farm_builds(db, false, &q->fbuilds);
        if (rc == 0 && q->shared)
            rc = tf_q_farm_pending(db, &q->fpending);
        return rc;
    }
    case PG_WATERFALL:
        return tf_q_waterfall(db, q->base, q->kind_filter, q->before, q->before_id,
                              q->limit, q->builders, q->nbuilders, &q->out);
    case PG_CONSOLE:
        return tf_q_console(db, q->base, &q->cons, q->limit, &q->out);
    }
    return TF_EINVAL;
}

static json_t *active_builders(tf_master_t *m)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < m->cfg->nbuilders; i++)
        json_array_append_new(arr, json_string(m->cfg->builders[i].name));
    return arr;
}

static void pg_done(void *arg, int rc)
{
    pg_t *q = arg;
    tf_http_req_t *r = q->r;
    tf_master_t *m = r->m;
    if (!tf_http_async_end(r))
        goto out;
    if (rc || !q->out) {
        tf_http_error(r, 500, "database read failed: %s", tf_strerror(rc));
        goto out;
    }
    json_t *ans;
    if (q->kind == PG_SUMMARY) {
        tf_api_builders_complete(m, q->base, q->out);
        ans = summary_of(m, q, q->out);
    } else {
        ans = json_incref(q->out);
        json_object_set_new(ans, "builders", active_builders(m));
        if (q->kind == PG_CONSOLE) {
            size_t i;
            json_t *row;
            json_array_foreach(json_object_get(ans, "rows"), i, row)
            {
                const char *k = json_string_value(json_object_get(row, "kind"));
                if (k && strcmp(k, "change") == 0)
                    tf_api_commit_link(m, row);
            }
        }
    }
    tf_http_respond_json(r, 200, ans);
out:
    json_decref(q->out);
    json_decref(q->farm);
    json_decref(q->fbuilds);
    json_decref(q->fpending);
    free(q);
}

static void pg_start(tf_http_req_t *r, pg_t *q)
{
    q->r = r;
    snprintf(q->base, sizeof(q->base), "%s", r->m->cfg->public_url);
    q->shared = q->kind == PG_SUMMARY && tf_store_is_shared(r->m->store);
    if (!tf_api_read_then(r, pg_run, pg_done, q))
        free(q);
}

void tf_api_summary(tf_http_req_t *r, const tf_route_args_t *a)
{
    if (tf_api_cache_answer(r))
        return;
    pg_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->kind = PG_SUMMARY;
    /* Monitors poll this: a mistyped parameter must not pass for a
     * filter that matched everything. */
    static const char *const known[] = {"builder", "slaves", NULL};
    if (!tf_api_args_only(r, known)) {
        free(q);
        return;
    }
    const char *sl = tf_http_arg(r, "slaves");
    if (sl && strcmp(sl, "all") != 0) {
        tf_http_error(r, 400, "slaves=\"%.16s\": expected all (list "
                      "every slave)", sl);
        free(q);
        return;
    }
    q->all_slaves = sl != NULL;
    for (size_t i = 0; i < r->nargs; i++) {
        if (strncmp(r->args[i], "builder=", 8) != 0)
            continue;
        const char *name = r->args[i] + strlen("builder=");
        if (!tf_config_builder(r->m->cfg, name) ||
            q->nbuilders >= WATERFALL_BUILDERS) {
            tf_http_error(r, 400, "builder=\"%.64s\": %s", name,
                          q->nbuilders >= WATERFALL_BUILDERS
                              ? "too many builders (at most 64)"
                              : "no such builder in the config");
            free(q);
            return;
        }
        snprintf(q->builders[q->nbuilders++], TF_NAME_MAX + 1, "%s", name);
    }
    pg_start(r, q);
}

void tf_api_waterfall(tf_http_req_t *r, const tf_route_args_t *a)
{
    uint64_t before, before_id, limit;
    if (tf_api_cache_answer(r))
        return;
    if (!tf_http_arg_u64(r, "before", 1, INT64_MAX, (uint64_t)tf_now_ms() + 1,
                         &before) ||
        !tf_http_arg_u64(r, "before_id", 0, INT64_MAX, 0, &before_id) ||
        !tf_http_arg_u64(r, "limit", 1, WATERFALL_MAX, 100, &limit))
        return;
    pg_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->kind = PG_WATERFALL;
    if (!tf_api_arg_kind(r, &q->kind_filter)) {
        free(q);
        return;
    }
    q->before = (int64_t)before;
    q->before_id = (int64_t)before_id;
    q->limit = (unsigned)limit;
    for (size_t i = 0; i < r->nargs; i++) {
        if (strncmp(r->args[i], "builder=", 8) != 0)
            continue;
        const char *name = r->args[i] + 8;
        if (!tf_name_valid(name) || q->nbuilders >= WATERFALL_BUILDERS) {
            tf_http_error(r, 400, "builder=\"%.64s\": expected a builder "
                          "name (at most %d)", name, WATERFALL_BUILDERS);
            free(q);
            return;
        }
        snprintf(q->builders[q->nbuilders++], TF_NAME_MAX + 1, "%s", name);
    }
    pg_start(r, q);
}

void tf_api_console(tf_http_req_t *r, const tf_route_args_t *a)
{
    uint64_t before, before_job, before_change, limit;
    if (!tf_http_arg_u64(r, "before", 1, INT64_MAX, (uint64_t)tf_now_ms() + 1,
                         &before) ||
        !tf_http_arg_u64(r, "before_job", 0, INT64_MAX, 0, &before_job) ||
        !tf_http_arg_u64(r, "before_change", 0, INT64_MAX, 0, &before_change) ||
        !tf_http_arg_u64(r, "limit", 1, 200, 50, &limit))
        return;
    pg_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->kind = PG_CONSOLE;
    if (!tf_api_arg_kind(r, &q->cons.kind)) {
        free(q);
        return;
    }
    q->cons.before = (int64_t)before;
    q->cons.before_job = (int64_t)before_job;
    q->cons.before_change = (int64_t)before_change;
    q->limit = (unsigned)limit;
    pg_start(r, q);
}
