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
#include "api/pages.h"

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
    size_t nbuilders;
    json_t *out;
} pg_t;

/* --- waterfall --- */

typedef struct wf_key {
    int64_t created_ms;
    int64_t id;
} wf_key_t;

static int wf_key_cmp(const void *a, const void *b)
{
    const wf_key_t *x = a, *y = b;
    if (x->created_ms != y->created_ms)
        return x->created_ms > y->created_ms ? -1 : 1;
    return x->id > y->id ? -1 : x->id < y->id;
}

/* Appends to keys (room for cap) the newest builds after the cursor, at
 * most want, of one builder or of all (builder NULL), each query walking
 * an index in page order. */
static int wf_keys(sqlite3 *db, const char *builder, int64_t before,
                   int64_t before_id, unsigned want, wf_key_t *keys,
                   size_t *n)
{
    sqlite3_stmt *st = NULL;
    const char *sql =
        builder ? "SELECT created_ms, id FROM builds WHERE builder = ?4 AND "
                  "(created_ms < ?1 OR (created_ms = ?1 AND id < ?2)) "
                  "ORDER BY created_ms DESC, id DESC LIMIT ?3"
                : "SELECT created_ms, id FROM builds WHERE "
                  "created_ms < ?1 OR (created_ms = ?1 AND id < ?2) "
                  "ORDER BY created_ms DESC, id DESC LIMIT ?3";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_int64(st, 1, before);
    sqlite3_bind_int64(st, 2, before_id);
    sqlite3_bind_int64(st, 3, want);
    if (builder)
        sqlite3_bind_text(st, 4, builder, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        keys[*n].created_ms = sqlite3_column_int64(st, 0);
        keys[*n].id = sqlite3_column_int64(st, 1);
        (*n)++;
    }
    sqlite3_finalize(st);
    return 0;
}

int tf_q_waterfall(sqlite3 *db, const char *base_url, int64_t before,
                   int64_t before_id, unsigned limit,
                   char (*builders)[TF_NAME_MAX + 1],
                   size_t nbuilders, json_t **out)
{
    sqlite3_stmt *st = NULL;
    int rc = TF_ESTORE;
    /* The page's keys first: one query per chosen builder (each one page
     * long, by the builder's index), merged; then the rows by id. */
    size_t cap = (nbuilders ? nbuilders : 1) * ((size_t)limit + 1), nk = 0;
    wf_key_t *keys = malloc(cap * sizeof(*keys));
    if (!keys)
        return TF_ENOMEM;
    rc = 0;
    if (nbuilders == 0) {
        rc = wf_keys(db, NULL, before, before_id, limit + 1, keys, &nk);
    } else {
        for (size_t i = 0; i < nbuilders; i++) {
            bool dup = false;
            for (size_t k = 0; k < i && !dup; k++)
                dup = strcmp(builders[k], builders[i]) == 0;
            if (!dup && (rc = wf_keys(db, builders[i], before, before_id,
                                      limit + 1, keys, &nk)) != 0)
                break;
        }
        qsort(keys, nk, sizeof(*keys), wf_key_cmp);
    }
    if (rc)
        goto out;
    rc = TF_ESTORE;
    bool more = nk > limit;
    unsigned n = more ? limit : (unsigned)nk;
    if (sqlite3_prepare_v2(
            db,
            "SELECT id, builder, number, state, result, created_ms, "
            "started_ms, finished_ms, reason, slave FROM builds "
            "WHERE id = ?1",
            -1, &st, NULL) != SQLITE_OK)
        goto out;
    json_t *builds = json_array();
    for (unsigned k = 0; k < n; k++) {
        sqlite3_bind_int64(st, 1, keys[k].id);
        if (sqlite3_step(st) != SQLITE_ROW) {
            sqlite3_reset(st);
            continue;
        }
        static const tf_col_t cols[] = {
            {"id", TF_COL_INT},          {"builder", TF_COL_TEXT},
            {"number", TF_COL_INT},      {"state", TF_COL_TEXT},
            {"result", TF_COL_RESULT},   {"created_ms", TF_COL_INT},
            {"started_ms", TF_COL_INT},  {"finished_ms", TF_COL_INT},
            {"reason", TF_COL_TEXT},     {"slave", TF_COL_TEXT},
            {NULL, TF_COL_SKIP},
        };
        long long id = (long long)sqlite3_column_int64(st, 0);
        json_t *b = tf_row_set(json_object(), st, 0, cols);
        char url[600];
        snprintf(url, sizeof(url), "%sapi/v1/builds/%lld", base_url, id);
        json_object_set_new(b, "url", json_string(url));
        json_object_set_new(b, "steps", json_array());
        json_array_append_new(builds, b);
        sqlite3_reset(st);
    }
    int64_t last_created = n ? keys[n - 1].created_ms : 0;
    int64_t last_id = n ? keys[n - 1].id : 0;
    sqlite3_finalize(st);
    st = NULL;
    /* Steps of the page's builds, by primary key. */
    if (n > 0 &&
        sqlite3_prepare_v2(db,
                           "SELECT idx, name, state, result, started_ms, "
                           "finished_ms, text FROM steps WHERE build_id = ?1 "
                           "ORDER BY idx",
                           -1, &st, NULL) == SQLITE_OK) {
        size_t i;
        json_t *b;
        json_array_foreach(builds, i, b)
        {
            json_t *steps = json_object_get(b, "steps");
            sqlite3_bind_int64(st, 1,
                               json_integer_value(json_object_get(b, "id")));
            static const tf_col_t cols[] = {
                {"index", TF_COL_INT},       {"name", TF_COL_TEXT},
                {"state", TF_COL_TEXT},      {"result", TF_COL_RESULT},
                {"started_ms", TF_COL_INT},  {"finished_ms", TF_COL_INT},
                {"text", TF_COL_TEXT},       {NULL, TF_COL_SKIP},
            };
            while (sqlite3_step(st) == SQLITE_ROW)
                json_array_append_new(steps,
                                      tf_row_set(json_object(), st, 0, cols));
            sqlite3_reset(st);
        }
        sqlite3_finalize(st);
    }
    json_t *o = json_object();
    json_object_set_new(o, "builds", builds);
    json_object_set_new(o, "next_before",
                        more ? json_integer(last_created) : json_null());
    json_object_set_new(o, "next_before_id",
                        more ? json_integer(last_id) : json_null());
    *out = o;
    rc = 0;
out:
    free(keys);
    return rc;
}

/* --- console --- */

/* One console row for the change at the cursor of st (id, message,
 * author, email, created_ms, revision, committer_ms), with the newest build
 * of each builder whose blamelist holds it. */
static json_t *console_change_row(sqlite3_stmt *st, sqlite3_stmt *bs,
                                  const char *base_url)
{
    long long id = (long long)sqlite3_column_int64(st, 0);
    const char *msg = (const char *)sqlite3_column_text(st, 1);
    char url[600];
    snprintf(url, sizeof(url), "%sapi/v1/changes/%lld", base_url, id);
    json_t *row = json_object();
    json_object_set_new(row, "kind", json_string("change"));
    json_object_set_new(row, "id", json_integer(id));
    json_object_set_new(row, "title",
                        json_stringn(msg ? msg : "",
                                     msg ? strcspn(msg, "\n") : 0));
    json_object_set_new(row, "author", tf_col_text(st, 2));
    json_object_set_new(row, "email", tf_col_text(st, 3));
    json_object_set_new(row, "time_ms", tf_col_int(st, 4));
    json_object_set_new(row, "revision", tf_col_text(st, 5));
    json_object_set_new(row, "committer_ms", tf_col_int(st, 6));
    json_object_set_new(row, "state", json_null());
    json_object_set_new(row, "result", json_null());
    json_object_set_new(row, "url", json_string(url));
    json_t *builds = json_object();
    sqlite3_bind_int64(bs, 1, id);
    while (sqlite3_step(bs) == SQLITE_ROW) {
        long long bid = (long long)sqlite3_column_int64(bs, 1);
        char burl[600];
        snprintf(burl, sizeof(burl), "%sapi/v1/builds/%lld", base_url, bid);
        json_t *cell = json_object();
        json_object_set_new(cell, "build_id", json_integer(bid));
        json_object_set_new(cell, "number", tf_col_int(bs, 2));
        json_object_set_new(cell, "state", tf_col_text(bs, 3));
        json_object_set_new(cell, "result", tf_col_result(bs, 4));
        json_object_set_new(cell, "url", json_string(burl));
        /* Ordered by build id: the newest build of a builder wins. */
        json_object_set_new(builds, (const char *)sqlite3_column_text(bs, 0),
                            cell);
    }
    sqlite3_reset(bs);
    json_object_set_new(row, "builds", builds);
    return row;
}

/* Console order: newest first; at the same millisecond try jobs before
 * changes, and within a kind the higher id first. The paging cursor is
 * the last row of a page in this order. */
static int console_row_cmp(const void *a, const void *b)
{
    json_t *ra = *(json_t *const *)a, *rb = *(json_t *const *)b;
    json_int_t x = json_integer_value(json_object_get(ra, "time_ms"));
    json_int_t y = json_integer_value(json_object_get(rb, "time_ms"));
    if (x != y)
        return x > y ? -1 : 1;
    bool ja = strcmp(json_string_value(json_object_get(ra, "kind")),
                     "job") == 0;
    bool jb = strcmp(json_string_value(json_object_get(rb, "kind")),
                     "job") == 0;
    if (ja != jb)
        return ja ? -1 : 1;
    x = json_integer_value(json_object_get(ra, "id"));
    y = json_integer_value(json_object_get(rb, "id"));
    return x > y ? -1 : x < y;
}

/* Adds the changes after the cursor (at most limit + 1, newest first) to
 * rows, which holds the try jobs after the cursor (also at most limit +
 * 1), then keeps the first limit rows in console order and sets the
 * cursor of the next page in c (more: whether there is one). */
static void console_merge_changes(sqlite3 *db, const char *base_url,
                                  tf_console_cursor_t *c, unsigned limit,
                                  json_t *rows, bool *more)
{
    sqlite3_stmt *st = NULL, *bs = NULL;
    json_t **all = NULL;
    size_t njobs = json_array_size(rows), n = 0;
    *more = false;
    all = calloc(njobs + limit + 2, sizeof(*all));
    if (!all)
        return;
    for (size_t i = 0; i < njobs; i++)
        all[n++] = json_incref(json_array_get(rows, i));
    if (sqlite3_prepare_v2(db,
                           "SELECT id, message, author, email, created_ms, "
                           "revision, committer_ms FROM changes "
                           "WHERE created_ms < ?1 OR (created_ms = ?1 AND "
                           "id < ?3) ORDER BY created_ms DESC, id DESC "
                           "LIMIT ?2",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db,
                           "SELECT b.builder, b.id, b.number, b.state, "
                           "b.result FROM build_changes bc JOIN builds b ON "
                           "b.id = bc.build_id WHERE bc.change_id = ?1 "
                           "ORDER BY b.id",
                           -1, &bs, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, c->before);
        sqlite3_bind_int64(st, 2, (int64_t)limit + 1);
        sqlite3_bind_int64(st, 3, c->before_change);
        while (sqlite3_step(st) == SQLITE_ROW)
            all[n++] = console_change_row(st, bs, base_url);
    }
    qsort(all, n, sizeof(*all), console_row_cmp);
    json_array_clear(rows);
    size_t keep = n < limit ? n : limit;
    for (size_t i = 0; i < keep; i++)
        json_array_append(rows, all[i]);
    *more = n > keep;
    if (keep > 0) {
        json_t *last = all[keep - 1];
        json_int_t id = json_integer_value(json_object_get(last, "id"));
        bool job = strcmp(json_string_value(json_object_get(last, "kind")),
                          "job") == 0;
        c->before = json_integer_value(json_object_get(last, "time_ms"));
        /* At that millisecond jobs come first: after a job row the
         * changes of that millisecond are all still to come; after a
         * change row the jobs of that millisecond have all been shown. */
        c->before_job = job ? id : 0;
        c->before_change = job ? INT64_MAX : id;
    }
    for (size_t i = 0; i < n; i++)
        json_decref(all[i]);
    free(all);
    sqlite3_finalize(st);
    sqlite3_finalize(bs);
}

int tf_q_console(sqlite3 *db, const char *base_url,
                 const tf_console_cursor_t *cursor, unsigned limit,
                 json_t **out)
{
    sqlite3_stmt *st = NULL, *bs = NULL;
    int rc = TF_ESTORE;
    if (sqlite3_prepare_v2(db,
                           "SELECT id, description, author, email, "
                           "submitted_ms, state, result FROM try_jobs "
                           "WHERE submitted_ms < ?1 OR (submitted_ms = ?1 "
                           "AND id < ?3) "
                           "ORDER BY submitted_ms DESC, id DESC LIMIT ?2",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "SELECT r.builder, b.id, b.number, b.state, "
                           "b.result, r.state, r.result FROM build_requests r "
                           "LEFT JOIN builds b ON b.id = r.build_id "
                           "WHERE r.job_id = ?1",
                           -1, &bs, NULL) != SQLITE_OK)
        goto out;
    tf_console_cursor_t c = *cursor;
    sqlite3_bind_int64(st, 1, c.before);
    sqlite3_bind_int64(st, 2, (int64_t)limit + 1);
    sqlite3_bind_int64(st, 3, c.before_job);
    json_t *rows = json_array();
    bool more = false;
    while (sqlite3_step(st) == SQLITE_ROW) {
        long long id = (long long)sqlite3_column_int64(st, 0);
        char title[200], url[600];
        const char *desc = (const char *)sqlite3_column_text(st, 1);
        if (desc && *desc)
            snprintf(title, sizeof(title), "%s", desc);
        else
            snprintf(title, sizeof(title), "try job %lld", id);
        snprintf(url, sizeof(url), "%sapi/v1/jobs/%lld", base_url, id);
        json_t *row = json_object();
        json_object_set_new(row, "kind", json_string("job"));
        json_object_set_new(row, "id", json_integer(id));
        json_object_set_new(row, "title", json_string(title));
        json_object_set_new(row, "author", tf_col_text(st, 2));
        json_object_set_new(row, "email", tf_col_text(st, 3));
        json_object_set_new(row, "time_ms", tf_col_int(st, 4));
        json_object_set_new(row, "state", tf_col_text(st, 5));
        json_object_set_new(row, "result", tf_col_result(st, 6));
        json_object_set_new(row, "url", json_string(url));
        json_t *builds = json_object();
        sqlite3_bind_int64(bs, 1, id);
        while (sqlite3_step(bs) == SQLITE_ROW) {
            json_t *cell = json_object();
            bool has_build = sqlite3_column_type(bs, 1) != SQLITE_NULL;
            json_object_set_new(cell, "build_id", tf_col_int(bs, 1));
            json_object_set_new(cell, "number", tf_col_int(bs, 2));
            json_object_set_new(cell, "state", has_build
                                                   ? tf_col_text(bs, 3)
                                                   : tf_col_text(bs, 5));
            json_object_set_new(cell, "result", has_build
                                                    ? tf_col_result(bs, 4)
                                                    : tf_col_result(bs, 6));
            if (has_build) {
                char burl[600];
                snprintf(burl, sizeof(burl), "%sapi/v1/builds/%lld", base_url,
                         (long long)sqlite3_column_int64(bs, 1));
                json_object_set_new(cell, "url", json_string(burl));
            } else {
                json_object_set_new(cell, "url", json_null());
            }
            json_object_set_new(builds,
                                (const char *)sqlite3_column_text(bs, 0),
                                cell);
        }
        sqlite3_reset(bs);
        json_object_set_new(row, "builds", builds);
        json_array_append_new(rows, row);
    }
    console_merge_changes(db, base_url, &c, limit, rows, &more);
    json_t *o = json_object();
    json_object_set_new(o, "rows", rows);
    json_object_set_new(o, "next_before",
                        more ? json_integer(c.before) : json_null());
    json_object_set_new(o, "next_before_job",
                        more ? json_integer(c.before_job) : json_null());
    json_object_set_new(o, "next_before_change",
                        more ? json_integer(c.before_change) : json_null());
    *out = o;
    rc = 0;
out:
    sqlite3_finalize(st);
    sqlite3_finalize(bs);
    return rc;
}

/* --- summary --- */

/* Reshapes the builders query into the compact summary, with the verdict,
 * on the loop thread (live state overlaid). */
static json_t *summary_of(tf_master_t *m, json_t *builders)
{
    json_t *arr = json_array();
    int worst = -1; /* 0 ok, 1 warnings, 2 failing */
    size_t i;
    json_t *b;
    json_array_foreach(builders, i, b)
    {
        const char *name = json_string_value(json_object_get(b, "name"));
        const tf_cfg_builder_t *cfg = tf_config_builder(m->cfg, name);
        if (!cfg)
            continue;
        tf_mbuilder_t *mb = tf_master_builder(m, name, false);
        unsigned up = 0;
        for (size_t k = 0; k < m->cfg->nslaves; k++) {
            tf_mslave_t *s = tf_master_slave(m, m->cfg->slaves[k].name, false);
            if (s && s->link && tf_config_slave_allowed(cfg, s->cfg))
                up++;
        }
        unsigned pending = mb ? mb->npending : 0, running = mb ? mb->nrunning
                                                               : 0;
        const char *state = running   ? "building"
                            : up == 0 ? "offline"
                            : pending ? "pending"
                                      : "idle";
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
            json_array_append_new(
                current,
                json_pack("{s:I,s:I,s:s,s:I}", "id", (json_int_t)bd->id,
                          "number", (json_int_t)bd->number, "slave", bd->slave,
                          "started_ms",
                          (json_int_t)(bd->started_ms ? bd->started_ms
                                                      : bd->created_ms)));
        }
        json_t *o = json_pack("{s:s,s:s,s:i,s:i,s:i}", "name", name, "state",
                              state, "pending", (int)pending, "running",
                              (int)running, "connected_slaves", (int)up);
        json_object_set(o, "last", last ? last : json_null());
        json_object_set_new(o, "current", current);
        json_array_append_new(arr, o);
    }
    unsigned connected = 0, total = 0;
    for (size_t k = 0; k < m->cfg->nslaves; k++) {
        tf_mslave_t *s = tf_master_slave(m, m->cfg->slaves[k].name, false);
        total++;
        connected += s && s->link;
    }
    const char *verdict = worst < 0    ? "unknown"
                          : worst == 2 ? "failing"
                          : worst == 1 ? "warnings"
                                       : "ok";
    json_t *o = json_pack("{s:s,s:I,s:s,s:{s:i,s:i}}", "name", m->cfg->name,
                          "time_ms", (json_int_t)tf_now_ms(), "verdict",
                          verdict, "slaves", "connected", (int)connected,
                          "total", (int)total);
    json_object_set_new(o, "builders", arr);
    return o;
}

/* --- plumbing --- */

static int pg_run(sqlite3 *db, void *arg)
{
    pg_t *q = arg;
    switch (q->kind) {
    case PG_SUMMARY:
        return tf_q_builders(db, q->base, &q->out);
    case PG_WATERFALL:
        return tf_q_waterfall(db, q->base, q->before, q->before_id, q->limit,
                              q->builders, q->nbuilders, &q->out);
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
        ans = summary_of(m, q->out);
    } else {
        ans = json_incref(q->out);
        json_object_set_new(ans, "builders", active_builders(m));
    }
    tf_http_respond_json(r, 200, ans);
out:
    json_decref(q->out);
    free(q);
}

static void pg_start(tf_http_req_t *r, pg_t *q)
{
    q->r = r;
    snprintf(q->base, sizeof(q->base), "%s", r->m->cfg->public_url);
    tf_http_async_begin(r);
    if (tf_store_read(r->m->store, pg_run, pg_done, q) != 0) {
        tf_http_async_end(r);
        tf_http_error(r, 503, "cannot read the database now");
        free(q);
    }
}

void tf_api_summary(tf_http_req_t *r)
{
    pg_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->kind = PG_SUMMARY;
    pg_start(r, q);
}

void tf_api_waterfall(tf_http_req_t *r)
{
    uint64_t before, before_id, limit;
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

void tf_api_console(tf_http_req_t *r)
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
    q->cons.before = (int64_t)before;
    q->cons.before_job = (int64_t)before_job;
    q->cons.before_change = (int64_t)before_change;
    q->limit = (unsigned)limit;
    pg_start(r, q);
}
