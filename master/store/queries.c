/*
 * queries.c - rows to JSON for the API (see queries.h).
 *
 * Summary questions ("every builder with its last result") read the
 * builders table's summary columns, which the writer keeps current, so they
 * cost one indexed row per builder however many builds exist. Log reads use
 * the (build_id, step, offset) primary key to find the chunk holding the
 * first byte, then walk forward.
 */
#include "store/queries.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "result.h"
#include "tf_err.h"

json_t *tf_col_int(sqlite3_stmt *st, int col)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return json_null();
    return json_integer(sqlite3_column_int64(st, col));
}

json_t *tf_col_text(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return t ? json_string((const char *)t) : json_null();
}

json_t *tf_col_result(sqlite3_stmt *st, int col)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return json_null();
    return json_string(tf_result_name((tf_result_t)sqlite3_column_int(st, col)));
}

json_t *tf_col_json(sqlite3_stmt *st, int col)
{
    const char *t = (const char *)sqlite3_column_text(st, col);
    json_t *v = t ? json_loads(t, 0, NULL) : NULL;
    return v ? v : json_null();
}

json_t *tf_row_set(json_t *o, sqlite3_stmt *st, int first,
                   const tf_col_t *cols)
{
    for (int i = 0; cols[i].key; i++) {
        int c = first + i;
        json_t *v = NULL;
        switch (cols[i].kind) {
        case TF_COL_SKIP:
            break;
        case TF_COL_INT:
            v = tf_col_int(st, c);
            break;
        case TF_COL_TEXT:
            v = tf_col_text(st, c);
            break;
        case TF_COL_RESULT:
            v = tf_col_result(st, c);
            break;
        case TF_COL_JSON:
            v = tf_col_json(st, c);
            break;
        case TF_COL_BOOL:
            v = json_boolean(sqlite3_column_int(st, c));
            break;
        }
        if (v)
            json_object_set_new(o, cols[i].key, v);
    }
    return o;
}

static json_t *j_url(const char *base, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static json_t *j_url(const char *base, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", base, path);
    return json_string(url);
}

static int prep(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
    return sqlite3_prepare_v2(db, sql, -1, st, NULL) == SQLITE_OK ? 0
                                                                   : TF_ESTORE;
}

#define BUILDER_COLS                                                           \
    "b.name, b.active, b.builds_total, b.pending, b.running, "                 \
    "b.last_build_id, b.last_complete_build_id, b.last_complete_result, "      \
    "b.last_complete_ms, lb.number "

static json_t *builder_row(sqlite3_stmt *st, const char *base)
{
    const char *name = (const char *)sqlite3_column_text(st, 0);
    json_t *last = json_null();
    if (sqlite3_column_type(st, 6) != SQLITE_NULL) {
        last = json_object();
        json_object_set_new(last, "id", tf_col_int(st, 6));
        json_object_set_new(last, "number", tf_col_int(st, 9));
        json_object_set_new(last, "result", tf_col_result(st, 7));
        json_object_set_new(last, "finished_ms", tf_col_int(st, 8));
        json_object_set_new(last, "url",
                            j_url(base, "api/v1/builds/%lld",
                                  (long long)sqlite3_column_int64(st, 6)));
    }
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "active", json_boolean(sqlite3_column_int(st, 1)));
    json_object_set_new(o, "builds_total", tf_col_int(st, 2));
    json_object_set_new(o, "pending", tf_col_int(st, 3));
    json_object_set_new(o, "running", tf_col_int(st, 4));
    json_object_set_new(o, "last_build_id", tf_col_int(st, 5));
    json_object_set_new(o, "last_complete", last);
    json_object_set_new(o, "url", j_url(base, "api/v1/builders/%s", name));
    return o;
}

int tf_q_builders(sqlite3 *db, const char *base_url, json_t **out)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(db,
                  "SELECT " BUILDER_COLS "FROM builders b "
                  "LEFT JOIN builds lb ON lb.id = b.last_complete_build_id "
                  "ORDER BY b.name",
                  &st);
    if (rc)
        return rc;
    json_t *arr = json_array();
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(arr, builder_row(st, base_url));
    sqlite3_finalize(st);
    *out = arr;
    return 0;
}

int tf_q_builder(sqlite3 *db, const char *base_url, const char *name,
                 json_t **out)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(db,
                  "SELECT " BUILDER_COLS "FROM builders b "
                  "LEFT JOIN builds lb ON lb.id = b.last_complete_build_id "
                  "WHERE b.name = ?1",
                  &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    rc = TF_ENOENT;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *out = builder_row(st, base_url);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

#define BUILD_COLS                                                             \
    "id, builder, number, request_id, slave, state, result, text, reason, "    \
    "created_ms, started_ms, finished_ms, properties, nsteps "

static const tf_col_t build_cols[] = {
    {"id", TF_COL_INT},          {"builder", TF_COL_TEXT},
    {"number", TF_COL_INT},      {"request_id", TF_COL_INT},
    {"slave", TF_COL_TEXT},      {"state", TF_COL_TEXT},
    {"result", TF_COL_RESULT},   {"text", TF_COL_TEXT},
    {"reason", TF_COL_TEXT},     {"created_ms", TF_COL_INT},
    {"started_ms", TF_COL_INT},  {"finished_ms", TF_COL_INT},
    {"properties", TF_COL_JSON}, {"nsteps", TF_COL_INT},
    {NULL, TF_COL_SKIP},
};

static json_t *build_row(sqlite3_stmt *st, const char *base)
{
    long long id = (long long)sqlite3_column_int64(st, 0);
    json_t *o = tf_row_set(json_object(), st, 0, build_cols);
    if (sqlite3_column_type(st, 10) != SQLITE_NULL &&
        sqlite3_column_type(st, 11) != SQLITE_NULL)
        json_object_set_new(o, "duration_ms",
                            json_integer(sqlite3_column_int64(st, 11) -
                                         sqlite3_column_int64(st, 10)));
    else
        json_object_set_new(o, "duration_ms", json_null());
    json_object_set_new(o, "url", j_url(base, "api/v1/builds/%lld", id));
    return o;
}

int tf_q_builds(sqlite3 *db, const char *base_url, const char *builder,
                uint64_t before, unsigned limit, json_t **out)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(db, "SELECT 1 FROM builders WHERE name = ?1", &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, builder, -1, SQLITE_TRANSIENT);
    bool known = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    st = NULL;
    if (!known)
        return TF_ENOENT;
    rc = prep(db,
                  "SELECT " BUILD_COLS "FROM builds WHERE builder = ?1 "
                  "AND number < ?2 ORDER BY number DESC LIMIT ?3",
                  &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, builder, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, before ? (int64_t)before : INT64_MAX);
    sqlite3_bind_int64(st, 3, (int64_t)limit + 1);
    json_t *arr = json_array();
    unsigned n = 0;
    int64_t next = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n == limit) {
            next = 1; /* there is more */
            break;
        }
        json_array_append_new(arr, build_row(st, base_url));
        n++;
    }
    sqlite3_finalize(st);
    json_t *o = json_object();
    json_object_set_new(o, "builds", arr);
    if (next && n > 0) {
        json_t *lastb = json_array_get(arr, n - 1);
        json_object_set(o, "next_before", json_object_get(lastb, "number"));
    } else {
        json_object_set_new(o, "next_before", json_null());
    }
    *out = o;
    return 0;
}

/* A stat's value: integral values (counts, bytes) as JSON integers, the
 * others as reals. */
static json_t *j_number(double v)
{
    if (v >= -9007199254740991.0 && v <= 9007199254740991.0 &&
        (double)(int64_t)v == v)
        return json_integer((json_int_t)v);
    return json_real(v);
}

/* Adds "stats": {name: value} to each step object of arr (indexed by step
 * index) from the stats table. */
static void steps_add_stats(sqlite3 *db, json_t *arr, long long build_id)
{
    sqlite3_stmt *st = NULL;
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        json_object_set_new(o, "stats", json_object());
    }
    if (prep(db,
             "SELECT step, name, value FROM stats WHERE build_id = ?1 "
             "ORDER BY step, name",
             &st))
        return;
    sqlite3_bind_int64(st, 1, build_id);
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_t *step = json_array_get(arr, (size_t)sqlite3_column_int(st, 0));
        const char *name = (const char *)sqlite3_column_text(st, 1);
        if (!step || !name ||
            json_integer_value(json_object_get(step, "index")) !=
                sqlite3_column_int(st, 0))
            continue;
        json_object_set_new(json_object_get(step, "stats"), name,
                            j_number(sqlite3_column_double(st, 2)));
    }
    sqlite3_finalize(st);
}

static const tf_col_t step_cols[] = {
    {"index", TF_COL_INT},       {"name", TF_COL_TEXT},
    {"state", TF_COL_TEXT},      {"result", TF_COL_RESULT},
    {"started_ms", TF_COL_INT},  {"finished_ms", TF_COL_INT},
    {"duration_ms", TF_COL_INT}, {"exit_code", TF_COL_INT},
    {"signal", TF_COL_INT},      {"timed_out", TF_COL_BOOL},
    {"text", TF_COL_TEXT},       {"command", TF_COL_JSON},
    {NULL, TF_COL_SKIP},
};
static const tf_col_t step_log_cols[] = {
    {"bytes", TF_COL_INT}, {"lines", TF_COL_INT}, {NULL, TF_COL_SKIP}};
static const tf_col_t step_tail_cols[] = {
    {"info", TF_COL_TEXT}, {"warnings", TF_COL_INT}, {NULL, TF_COL_SKIP}};

static json_t *steps_of(sqlite3 *db, const char *base, long long build_id)
{
    sqlite3_stmt *st = NULL;
    json_t *arr = json_array();
    if (prep(db,
             "SELECT idx, name, state, result, started_ms, finished_ms, "
             "duration_ms, exit_code, signal, timed_out, text, command, "
             "log_bytes, log_lines, info, warnings FROM steps "
             "WHERE build_id = ?1 ORDER BY idx",
             &st))
        return arr;
    sqlite3_bind_int64(st, 1, build_id);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int idx = sqlite3_column_int(st, 0);
        json_t *o = tf_row_set(json_object(), st, 0, step_cols);
        json_t *log = tf_row_set(json_object(), st, 12, step_log_cols);
        json_object_set_new(log, "url",
                            j_url(base, "api/v1/builds/%lld/steps/%d/log",
                                  build_id, idx));
        json_object_set_new(o, "log", log);
        tf_row_set(o, st, 14, step_tail_cols);
        json_array_append_new(arr, o);
    }
    sqlite3_finalize(st);
    steps_add_stats(db, arr, build_id);
    return arr;
}

/* --- changes (poller.c records them; a build's blamelist) --- */

#define CHANGE_COLS                                                            \
    "c.id, c.repository, c.branch, c.revision, c.author, c.email, "            \
    "c.committer_ms, c.message, c.files, c.created_ms "

/* A change; its message cut to the first line unless full. */
static json_t *change_row(sqlite3_stmt *st, const char *base, bool full)
{
    long long id = (long long)sqlite3_column_int64(st, 0);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(id));
    json_object_set_new(o, "repository", tf_col_text(st, 1));
    json_object_set_new(o, "branch", tf_col_text(st, 2));
    json_object_set_new(o, "revision", tf_col_text(st, 3));
    json_object_set_new(o, "author", tf_col_text(st, 4));
    json_object_set_new(o, "email", tf_col_text(st, 5));
    json_object_set_new(o, "committer_ms", tf_col_int(st, 6));
    const char *msg = (const char *)sqlite3_column_text(st, 7);
    if (msg && !full) {
        size_t n = strcspn(msg, "\n");
        json_object_set_new(o, "message", json_stringn(msg, n));
    } else {
        json_object_set_new(o, "message", msg ? json_string(msg)
                                              : json_null());
    }
    json_t *files = tf_col_json(st, 8);
    json_object_set_new(o, "files", json_is_array(files) ? files
                                                         : json_array());
    if (!json_is_array(files))
        json_decref(files);
    json_object_set_new(o, "created_ms", tf_col_int(st, 9));
    json_object_set_new(o, "url", j_url(base, "api/v1/changes/%lld", id));
    return o;
}

/* The blamelist of a build, oldest change first. */
static json_t *build_changes_of(sqlite3 *db, const char *base,
                                long long build_id)
{
    sqlite3_stmt *st = NULL;
    json_t *arr = json_array();
    if (prep(db,
             "SELECT " CHANGE_COLS "FROM build_changes bc JOIN changes c "
             "ON c.id = bc.change_id WHERE bc.build_id = ?1 ORDER BY c.id",
             &st))
        return arr;
    sqlite3_bind_int64(st, 1, build_id);
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(arr, change_row(st, base, false));
    sqlite3_finalize(st);
    return arr;
}

int tf_q_changes(sqlite3 *db, const char *base_url, const char *repository,
                 const char *branch, uint64_t before, unsigned limit,
                 json_t **out)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(db,
                  "SELECT " CHANGE_COLS "FROM changes c WHERE c.id < ?1 "
                  "AND (?2 IS NULL OR c.repository = ?2) "
                  "AND (?3 IS NULL OR c.branch = ?3) "
                  "ORDER BY c.id DESC LIMIT ?4",
                  &st);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, before ? (int64_t)before : INT64_MAX);
    if (repository)
        sqlite3_bind_text(st, 2, repository, -1, SQLITE_TRANSIENT);
    if (branch)
        sqlite3_bind_text(st, 3, branch, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, (int64_t)limit + 1);
    json_t *arr = json_array();
    unsigned n = 0;
    bool more = false;
    long long last = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n == limit) {
            more = true;
            break;
        }
        last = (long long)sqlite3_column_int64(st, 0);
        json_array_append_new(arr, change_row(st, base_url, false));
        n++;
    }
    sqlite3_finalize(st);
    json_t *o = json_object();
    json_object_set_new(o, "changes", arr);
    json_object_set_new(o, "next_before",
                        more ? json_integer(last) : json_null());
    *out = o;
    return 0;
}

int tf_q_change(sqlite3 *db, const char *base_url, uint64_t id, json_t **out)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(db, "SELECT " CHANGE_COLS "FROM changes c WHERE c.id = ?1",
                  &st);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, (int64_t)id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return TF_ENOENT;
    }
    json_t *o = change_row(st, base_url, true);
    sqlite3_finalize(st);
    json_t *builds = json_array();
    if (prep(db,
             "SELECT b.id, b.builder, b.number, b.state, b.result, "
             "b.created_ms, b.finished_ms FROM build_changes bc JOIN builds b "
             "ON b.id = bc.build_id WHERE bc.change_id = ?1 ORDER BY b.id",
             &st) == 0) {
        sqlite3_bind_int64(st, 1, (int64_t)id);
        while (sqlite3_step(st) == SQLITE_ROW) {
            static const tf_col_t cols[] = {
                {"id", TF_COL_INT},         {"builder", TF_COL_TEXT},
                {"number", TF_COL_INT},     {"state", TF_COL_TEXT},
                {"result", TF_COL_RESULT},  {"created_ms", TF_COL_INT},
                {"finished_ms", TF_COL_INT}, {NULL, TF_COL_SKIP},
            };
            long long bid = (long long)sqlite3_column_int64(st, 0);
            json_t *b = tf_row_set(json_object(), st, 0, cols);
            json_object_set_new(b, "url",
                                j_url(base_url, "api/v1/builds/%lld", bid));
            json_array_append_new(builds, b);
        }
        sqlite3_finalize(st);
    }
    json_object_set_new(o, "builds", builds);
    *out = o;
    return 0;
}

static int build_one(sqlite3 *db, const char *base_url, sqlite3_stmt *st,
                     json_t **out)
{
    int rc = TF_ENOENT;
    if (sqlite3_step(st) == SQLITE_ROW) {
        json_t *o = build_row(st, base_url);
        long long id = (long long)sqlite3_column_int64(st, 0);
        json_object_set_new(o, "steps", steps_of(db, base_url, id));
        json_object_set_new(o, "changes", build_changes_of(db, base_url, id));
        *out = o;
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int tf_q_build(sqlite3 *db, const char *base_url, uint64_t id, json_t **out)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(db, "SELECT " BUILD_COLS "FROM builds WHERE id = ?1", &st);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, (int64_t)id);
    return build_one(db, base_url, st, out);
}

int tf_q_build_by_number(sqlite3 *db, const char *base_url,
                         const char *builder, uint64_t number, json_t **out)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(db,
                  "SELECT " BUILD_COLS
                  "FROM builds WHERE builder = ?1 AND number = ?2",
                  &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, builder, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, (int64_t)number);
    return build_one(db, base_url, st, out);
}

#define SLAVE_COLS                                                             \
    "name, connected, platform, version, tags, first_seen_ms, "                \
    "last_seen_ms, connected_ms, disconnected_ms, builds_done, last_error "

static json_t *slave_row(sqlite3_stmt *st, const char *base)
{
    static const tf_col_t cols[] = {
        {"name", TF_COL_TEXT},           {"connected", TF_COL_BOOL},
        {"platform", TF_COL_TEXT},       {"version", TF_COL_TEXT},
        {"tags", TF_COL_JSON},           {"first_seen_ms", TF_COL_INT},
        {"last_seen_ms", TF_COL_INT},    {"connected_ms", TF_COL_INT},
        {"disconnected_ms", TF_COL_INT}, {"builds_done", TF_COL_INT},
        {"last_error", TF_COL_TEXT},     {NULL, TF_COL_SKIP},
    };
    const char *name = (const char *)sqlite3_column_text(st, 0);
    json_t *o = tf_row_set(json_object(), st, 0, cols);
    json_object_set_new(o, "url", j_url(base, "api/v1/slaves/%s", name));
    return o;
}

int tf_q_slaves(sqlite3 *db, const char *base_url, json_t **out)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(db, "SELECT " SLAVE_COLS "FROM slaves ORDER BY name", &st);
    if (rc)
        return rc;
    json_t *arr = json_array();
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(arr, slave_row(st, base_url));
    sqlite3_finalize(st);
    *out = arr;
    return 0;
}

int tf_q_slave(sqlite3 *db, const char *base_url, const char *name,
               unsigned events, json_t **out)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(db, "SELECT " SLAVE_COLS "FROM slaves WHERE name = ?1", &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return TF_ENOENT;
    }
    json_t *o = slave_row(st, base_url);
    sqlite3_finalize(st);
    json_t *evs = json_array();
    if (prep(db,
             "SELECT time_ms, event, detail FROM slave_events "
             "WHERE slave = ?1 ORDER BY id DESC LIMIT ?2",
             &st) == 0) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 2, (int)events);
        while (sqlite3_step(st) == SQLITE_ROW) {
            json_t *e = json_object();
            json_object_set_new(e, "time_ms", tf_col_int(st, 0));
            json_object_set_new(e, "event", tf_col_text(st, 1));
            json_object_set_new(e, "detail", tf_col_text(st, 2));
            json_array_append_new(evs, e);
        }
        sqlite3_finalize(st);
    }
    json_object_set_new(o, "events", evs);
    json_t *recent = json_array();
    if (prep(db,
             "SELECT id, builder, number, result, finished_ms FROM builds "
             "WHERE slave = ?1 ORDER BY id DESC LIMIT 20",
             &st) == 0) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        while (sqlite3_step(st) == SQLITE_ROW) {
            static const tf_col_t cols[] = {
                {"id", TF_COL_INT},         {"builder", TF_COL_TEXT},
                {"number", TF_COL_INT},     {"result", TF_COL_RESULT},
                {"finished_ms", TF_COL_INT}, {NULL, TF_COL_SKIP},
            };
            json_array_append_new(recent, tf_row_set(json_object(), st, 0,
                                                     cols));
        }
        sqlite3_finalize(st);
    }
    json_object_set_new(o, "recent_builds", recent);
    *out = o;
    return 0;
}

int tf_q_request(sqlite3 *db, const char *base_url, uint64_t id, json_t **out)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(db,
                  "SELECT id, builder, state, reason, owner, priority, "
                  "submitted_ms, started_ms, finished_ms, result, build_id, "
                  "retries, properties, scheduler, collapsed_into, "
                  "revision, job_id FROM build_requests WHERE id = ?1",
                  &st);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, (int64_t)id);
    rc = TF_ENOENT;
    if (sqlite3_step(st) == SQLITE_ROW) {
        json_t *o = json_object();
        json_object_set_new(o, "id", tf_col_int(st, 0));
        json_object_set_new(o, "builder", tf_col_text(st, 1));
        json_object_set_new(o, "state", tf_col_text(st, 2));
        json_object_set_new(o, "reason", tf_col_text(st, 3));
        json_object_set_new(o, "owner", tf_col_text(st, 4));
        json_object_set_new(o, "priority", tf_col_int(st, 5));
        json_object_set_new(o, "submitted_ms", tf_col_int(st, 6));
        json_object_set_new(o, "started_ms", tf_col_int(st, 7));
        json_object_set_new(o, "finished_ms", tf_col_int(st, 8));
        json_object_set_new(o, "result", tf_col_result(st, 9));
        json_object_set_new(o, "build_id", tf_col_int(st, 10));
        json_object_set_new(o, "retries", tf_col_int(st, 11));
        json_object_set_new(o, "properties", tf_col_json(st, 12));
        json_object_set_new(o, "scheduler", tf_col_text(st, 13));
        json_object_set_new(o, "collapsed_into", tf_col_int(st, 14));
        json_object_set_new(o, "revision", tf_col_text(st, 15));
        json_object_set_new(o, "job_id", tf_col_int(st, 16));
        json_object_set_new(o, "url",
                            j_url(base_url, "api/v1/requests/%" PRIu64, id));
        *out = o;
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int tf_q_log_size(sqlite3 *db, uint64_t build_id, unsigned step,
                  uint64_t *bytes, uint64_t *lines)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(db,
                  "SELECT log_bytes, log_lines FROM steps "
                  "WHERE build_id = ?1 AND idx = ?2",
                  &st);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, (int64_t)build_id);
    sqlite3_bind_int(st, 2, (int)step);
    rc = TF_ENOENT;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *bytes = (uint64_t)sqlite3_column_int64(st, 0);
        *lines = (uint64_t)sqlite3_column_int64(st, 1);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int tf_q_log_read(sqlite3 *db, uint64_t build_id, unsigned step,
                  uint64_t start, uint64_t end, size_t max, unsigned char *dst,
                  size_t *got)
{
    sqlite3_stmt *st = NULL;
    *got = 0;
    if (start >= end || max == 0)
        return 0;
    int rc = prep(db,
                  "SELECT offset, data FROM log_chunks "
                  "WHERE build_id = ?1 AND step = ?2 AND offset >= "
                  "coalesce((SELECT max(offset) FROM log_chunks WHERE "
                  "build_id = ?1 AND step = ?2 AND offset <= ?3), 0) "
                  "AND offset < ?4 ORDER BY offset",
                  &st);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, (int64_t)build_id);
    sqlite3_bind_int(st, 2, (int)step);
    sqlite3_bind_int64(st, 3, (int64_t)start);
    sqlite3_bind_int64(st, 4, (int64_t)end);
    uint64_t pos = start;
    while (*got < max && sqlite3_step(st) == SQLITE_ROW) {
        uint64_t off = (uint64_t)sqlite3_column_int64(st, 0);
        const unsigned char *data = sqlite3_column_blob(st, 1);
        uint64_t n = (uint64_t)sqlite3_column_bytes(st, 1);
        if (off + n <= pos)
            continue;
        if (off > pos)
            break; /* a hole: should not happen; stop rather than invent */
        uint64_t from = pos - off;
        uint64_t take = n - from;
        if (take > end - pos)
            take = end - pos;
        if (take > max - *got)
            take = max - *got;
        memcpy(dst + *got, data + from, (size_t)take);
        *got += (size_t)take;
        pos += take;
        if (pos >= end)
            break;
    }
    sqlite3_finalize(st);
    return 0;
}

#define JOB_COLS                                                               \
    "id, author, email, description, review_url, patchset, base_revision, "   \
    "patch_sha256, patch_size, state, result, submitted_ms, finished_ms, "     \
    "notify, notify_email "

static json_t *job_row(sqlite3_stmt *st, const char *base)
{
    static const tf_col_t head[] = {
        {"id", TF_COL_INT},           {"author", TF_COL_TEXT},
        {"email", TF_COL_TEXT},       {"description", TF_COL_TEXT},
        {"review_url", TF_COL_TEXT},  {"patchset", TF_COL_TEXT},
        {"base_revision", TF_COL_TEXT}, {NULL, TF_COL_SKIP},
    };
    static const tf_col_t tail[] = {
        {"state", TF_COL_TEXT},       {"result", TF_COL_RESULT},
        {"submitted_ms", TF_COL_INT}, {"finished_ms", TF_COL_INT},
        {"notify", TF_COL_BOOL},      {"notify_email", TF_COL_TEXT},
        {NULL, TF_COL_SKIP},
    };
    long long id = (long long)sqlite3_column_int64(st, 0);
    json_t *o = tf_row_set(json_object(), st, 0, head);
    if (sqlite3_column_type(st, 7) != SQLITE_NULL) {
        const char *sha = (const char *)sqlite3_column_text(st, 7);
        json_t *p = json_object();
        json_object_set_new(p, "sha256", json_string(sha));
        json_object_set_new(p, "size", tf_col_int(st, 8));
        json_object_set_new(p, "url", j_url(base, "api/v1/patches/%s", sha));
        json_object_set_new(o, "patch", p);
    } else {
        json_object_set_new(o, "patch", json_null());
    }
    tf_row_set(o, st, 9, tail);
    json_object_set_new(o, "url", j_url(base, "api/v1/jobs/%lld", id));
    return o;
}

static json_t *job_builders(sqlite3 *db, const char *base, long long job_id,
                            bool with_steps)
{
    sqlite3_stmt *st = NULL;
    json_t *arr = json_array();
    if (prep(db,
             "SELECT r.id, r.builder, r.state, r.result, r.tests, "
             "b.id, b.number, b.slave, b.state, b.result, b.started_ms, "
             "b.finished_ms, b.got_revision "
             "FROM build_requests r LEFT JOIN builds b ON b.id = r.build_id "
             "WHERE r.job_id = ?1 ORDER BY r.id",
             &st))
        return arr;
    sqlite3_bind_int64(st, 1, job_id);
    while (sqlite3_step(st) == SQLITE_ROW) {
        static const tf_col_t req_cols[] = {
            {"request_id", TF_COL_INT}, {"name", TF_COL_TEXT},
            {"state", TF_COL_TEXT},     {"result", TF_COL_RESULT},
            {"tests", TF_COL_JSON},     {NULL, TF_COL_SKIP},
        };
        static const tf_col_t build_cols_short[] = {
            {"id", TF_COL_INT},          {"number", TF_COL_INT},
            {"slave", TF_COL_TEXT},      {"state", TF_COL_TEXT},
            {"result", TF_COL_RESULT},   {"started_ms", TF_COL_INT},
            {"finished_ms", TF_COL_INT}, {"got_revision", TF_COL_TEXT},
            {NULL, TF_COL_SKIP},
        };
        json_t *e = tf_row_set(json_object(), st, 0, req_cols);
        if (sqlite3_column_type(st, 5) == SQLITE_NULL) {
            json_object_set_new(e, "build", json_null());
        } else {
            long long bid = (long long)sqlite3_column_int64(st, 5);
            json_t *b = tf_row_set(json_object(), st, 5, build_cols_short);
            json_object_set_new(b, "url",
                                j_url(base, "api/v1/builds/%lld", bid));
            if (with_steps)
                json_object_set_new(b, "steps", steps_of(db, base, bid));
            json_object_set_new(e, "build", b);
        }
        json_array_append_new(arr, e);
    }
    sqlite3_finalize(st);
    return arr;
}

int tf_q_job(sqlite3 *db, const char *base_url, uint64_t id, json_t **out)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(db, "SELECT " JOB_COLS "FROM try_jobs WHERE id = ?1", &st);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, (int64_t)id);
    rc = TF_ENOENT;
    if (sqlite3_step(st) == SQLITE_ROW) {
        json_t *o = job_row(st, base_url);
        json_object_set_new(o, "builders",
                            job_builders(db, base_url, (long long)id, true));
        *out = o;
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

int tf_q_jobs(sqlite3 *db, const char *base_url, const char *email,
              uint64_t before, unsigned limit, json_t **out)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(db,
                  "SELECT " JOB_COLS "FROM try_jobs WHERE id < ?1 AND "
                  "(?2 IS NULL OR email = ?2) ORDER BY id DESC LIMIT ?3",
                  &st);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, before ? (int64_t)before : INT64_MAX);
    if (email)
        sqlite3_bind_text(st, 2, email, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_int64(st, 3, (int64_t)limit + 1);
    json_t *arr = json_array();
    unsigned n = 0;
    bool more = false;
    long long last = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n == limit) {
            more = true;
            break;
        }
        json_t *o = job_row(st, base_url);
        last = (long long)sqlite3_column_int64(st, 0);
        json_object_set_new(o, "builders",
                            job_builders(db, base_url, last, false));
        json_array_append_new(arr, o);
        n++;
    }
    sqlite3_finalize(st);
    json_t *o = json_object();
    json_object_set_new(o, "jobs", arr);
    json_object_set_new(o, "next_before",
                        more ? json_integer(last) : json_null());
    *out = o;
    return 0;
}

/* --- the builder's stats series (GET /api/v1/builders/{name}/stats) --- */

typedef struct stat_build {
    int64_t id;
    int64_t number;
} stat_build_t;

static int stat_build_cmp(const void *a, const void *b)
{
    const stat_build_t *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The last `limit` finished builds, oldest first, into *builds (JSON) and
 * ids[] (sorted by id, for lookups). */
static int stats_builds(sqlite3 *db, const char *builder, unsigned limit,
                        json_t *builds, stat_build_t *ids, size_t *nids)
{
    sqlite3_stmt *st = NULL;
    int rc = prep(db,
                  "SELECT id, number, result, "
                  "coalesce(started_ms, created_ms), finished_ms "
                  "FROM builds WHERE builder = ?1 AND state = 'finished' "
                  "ORDER BY number DESC LIMIT ?2",
                  &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, builder, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, limit);
    *nids = 0;
    while (sqlite3_step(st) == SQLITE_ROW && *nids < limit) {
        int64_t started = sqlite3_column_int64(st, 3);
        int64_t finished = sqlite3_column_type(st, 4) == SQLITE_NULL
                               ? started
                               : sqlite3_column_int64(st, 4);
        json_t *o = json_object();
        json_object_set_new(o, "id", tf_col_int(st, 0));
        json_object_set_new(o, "number", tf_col_int(st, 1));
        json_object_set_new(o, "result", tf_col_result(st, 2));
        json_object_set_new(o, "started_ms", json_integer(started));
        json_object_set_new(o, "duration_ms",
                            json_integer(finished > started ? finished - started
                                                            : 0));
        json_array_insert_new(builds, 0, o); /* newest came first */
        ids[*nids].id = sqlite3_column_int64(st, 0);
        ids[*nids].number = sqlite3_column_int64(st, 1);
        (*nids)++;
    }
    sqlite3_finalize(st);
    qsort(ids, *nids, sizeof(*ids), stat_build_cmp);
    return 0;
}

int tf_q_builder_stats(sqlite3 *db, const char *base_url, const char *builder,
                       unsigned limit, json_t **out)
{
    sqlite3_stmt *st = NULL;
    stat_build_t *ids = NULL;
    size_t nids = 0;
    json_t *builds = NULL, *stats = NULL, *o;
    int rc;
    (void)base_url;

    if ((rc = prep(db, "SELECT 1 FROM builders WHERE name = ?1", &st)))
        return rc;
    sqlite3_bind_text(st, 1, builder, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st) == SQLITE_ROW ? 0 : TF_ENOENT;
    sqlite3_finalize(st);
    st = NULL;
    if (rc)
        return rc;
    ids = calloc(limit ? limit : 1, sizeof(*ids));
    builds = json_array();
    stats = json_object();
    if (!ids || !builds || !stats) {
        rc = TF_ENOMEM;
        goto out;
    }
    if ((rc = stats_builds(db, builder, limit, builds, ids, &nids)))
        goto out;
    if (nids) {
        /* stats_by_builder(builder, name, build_id) serves this range. */
        if ((rc = prep(db,
                       "SELECT build_id, step, name, value FROM stats "
                       "WHERE builder = ?1 AND build_id BETWEEN ?2 AND ?3 "
                       "ORDER BY name, build_id, step",
                       &st)))
            goto out;
        sqlite3_bind_text(st, 1, builder, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, ids[0].id);
        sqlite3_bind_int64(st, 3, ids[nids - 1].id);
        while (sqlite3_step(st) == SQLITE_ROW) {
            stat_build_t key = {.id = sqlite3_column_int64(st, 0)};
            const stat_build_t *b =
                bsearch(&key, ids, nids, sizeof(*ids), stat_build_cmp);
            const char *name = (const char *)sqlite3_column_text(st, 2);
            if (!b || !name)
                continue; /* a build still running, or not a finished one */
            json_t *series = json_object_get(stats, name);
            if (!series) {
                series = json_array();
                json_object_set_new(stats, name, series);
            }
            json_t *p = json_object();
            json_object_set_new(p, "build_id", json_integer(b->id));
            json_object_set_new(p, "number", json_integer(b->number));
            json_object_set_new(p, "step", tf_col_int(st, 1));
            json_object_set_new(p, "value",
                                j_number(sqlite3_column_double(st, 3)));
            json_array_append_new(series, p);
        }
    }
    o = json_object();
    json_object_set_new(o, "builds", builds);
    json_object_set_new(o, "stats", stats);
    builds = stats = NULL;
    *out = o;
out:
    sqlite3_finalize(st);
    json_decref(builds);
    json_decref(stats);
    free(ids);
    return rc;
}
