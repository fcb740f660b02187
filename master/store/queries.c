/*
 * queries.c - rows to JSON for the API (see queries.h).
 *
 * Summary questions ("every builder with its last result") read the
 * builders table's summary columns, which the writer keeps current, so they
 * cost one indexed row per builder however many builds exist. Log reads
 * find the sealed block holding the first byte by its (build_id, step,
 * offset) key and unpack it (store/logblock.h), then go on through the
 * next blocks and, past the last, the open tail's chunks.
 */
#include "store/queries.h"

#include "store/q_tests.h"
#include "store/pg_schema.h"
#include "store/reads.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "result.h"
#include "store/logblock.h"
#include "tf_err.h"

json_t *tf_col_int(tf_dbst_t *st, int col)
{
    if (tf_db_column_type(st, col) == TF_DB_NULL)
        return json_null();
    return json_integer(tf_db_column_int64(st, col));
}

json_t *tf_col_text(tf_dbst_t *st, int col)
{
    const unsigned char *t = tf_db_column_text(st, col);
    return t ? json_string((const char *)t) : json_null();
}

json_t *tf_col_result(tf_dbst_t *st, int col)
{
    if (tf_db_column_type(st, col) == TF_DB_NULL)
        return json_null();
    return json_string(tf_result_name((tf_result_t)tf_db_column_int(st, col)));
}

json_t *tf_col_json(tf_dbst_t *st, int col)
{
    const char *t = (const char *)tf_db_column_text(st, col);
    json_t *v = t ? json_loads(t, 0, NULL) : NULL;
    return v ? v : json_null();
}

json_t *tf_row_set(json_t *o, tf_dbst_t *st, int first,
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
            v = json_boolean(tf_db_column_int(st, c));
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

/* The status page of the same object: the pages are served at the
 * master's root and route by the URL's hash ("#/builds/4"). */
static json_t *j_page(const char *base, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static json_t *j_page(const char *base, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    char url[1024];
    snprintf(url, sizeof(url), "%s#/%s", base, path);
    return json_string(url);
}

static int prep(tf_db_t *db, const char *sql, tf_dbst_t **st)
{
    return tf_db_prepare_v2(db, sql, -1, st, NULL) == TF_DB_OK ? 0
                                                                   : TF_ESTORE;
}

#define BUILDER_COLS                                                           \
    "b.name, b.active, b.builds_total, b.pending, b.running, "                 \
    "b.last_build_id, b.last_complete_build_id, b.last_complete_result, "      \
    "b.last_complete_ms, lb.number "

static json_t *builder_row(tf_dbst_t *st, const char *base)
{
    const char *name = (const char *)tf_db_column_text(st, 0);
    json_t *last = json_null();
    if (tf_db_column_type(st, 6) != TF_DB_NULL) {
        last = json_object();
        json_object_set_new(last, "id", tf_col_int(st, 6));
        json_object_set_new(last, "number", tf_col_int(st, 9));
        json_object_set_new(last, "result", tf_col_result(st, 7));
        json_object_set_new(last, "finished_ms", tf_col_int(st, 8));
        json_object_set_new(last, "url",
                            j_url(base, "api/v1/builds/%lld",
                                  (long long)tf_db_column_int64(st, 6)));
        json_object_set_new(last, "page_url",
                            j_page(base, "builds/%lld",
                                   (long long)tf_db_column_int64(st, 6)));
    }
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "active", json_boolean(tf_db_column_int(st, 1)));
    json_object_set_new(o, "builds_total", tf_col_int(st, 2));
    json_object_set_new(o, "pending", tf_col_int(st, 3));
    json_object_set_new(o, "running", tf_col_int(st, 4));
    json_object_set_new(o, "last_build_id", tf_col_int(st, 5));
    json_object_set_new(o, "last_complete", last);
    json_object_set_new(o, "url", j_url(base, "api/v1/builders/%s", name));
    json_object_set_new(o, "page_url", j_page(base, "builders/%s", name));
    return o;
}

/* Result codes as stored (common/result.h): green is SUCCESS (0) or
 * WARNINGS (1), red is FAILURE (2) or EXCEPTION (4). */
#define RED_RESULTS "(2, 4)"
#define GREEN_RESULTS "(0, 1)"

int tf_q_builder_failing(tf_db_t *db, const char *base_url,
                         const char *builder, json_t *o)
{
    tf_dbst_t *st = NULL;
    json_t *since = json_null(), *suspects = json_array(),
           *step = json_null();
    json_t *last = json_object_get(o, "last_complete");
    const char *res = json_string_value(json_object_get(last, "result"));
    int rc = 0;
    if (!res || (strcmp(res, "FAILURE") != 0 && strcmp(res, "EXCEPTION")))
        goto out;
    /* The red streak: continuous builds after the last green one. The
     * index (builder, kind, number) walks back from the newest, so the
     * cost is the streak's length, not the history's. */
    int64_t green = 0;
    if ((rc = prep(db,
                   "SELECT number FROM builds WHERE builder = ?1 AND kind = "
                   "'ci' AND state = 'finished' AND result IN " GREEN_RESULTS
                   " ORDER BY number DESC LIMIT 1",
                   &st)))
        goto out;
    tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
    if (tf_db_step(st) == TF_DB_ROW)
        green = tf_db_column_int64(st, 0);
    tf_db_finalize(st);
    st = NULL;
    if ((rc = prep(db,
                   "SELECT id, number, finished_ms FROM builds WHERE "
                   "builder = ?1 AND kind = 'ci' AND number > ?2 AND state = "
                   "'finished' AND result IN " RED_RESULTS
                   " ORDER BY number LIMIT 1",
                   &st)))
        goto out;
    tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
    tf_db_bind_int64(st, 2, green);
    if (tf_db_step(st) == TF_DB_ROW) {
        long long id = (long long)tf_db_column_int64(st, 0);
        json_decref(since);
        since = json_object();
        json_object_set_new(since, "id", json_integer(id));
        json_object_set_new(since, "number", tf_col_int(st, 1));
        json_object_set_new(since, "finished_ms", tf_col_int(st, 2));
        json_object_set_new(since, "url",
                            j_url(base_url, "api/v1/builds/%lld", id));
        json_object_set_new(since, "page_url",
                            j_page(base_url, "builds/%lld", id));
    }
    tf_db_finalize(st);
    st = NULL;
    /* The suspects: authors of the changes built since the last green
     * build (running builds' changes included), oldest change first. */
    if ((rc = prep(db,
                   "SELECT c.author, c.email, min(c.id) FROM builds b "
                   "JOIN build_changes bc ON bc.build_id = b.id "
                   "JOIN changes c ON c.id = bc.change_id "
                   "WHERE b.builder = ?1 AND b.kind = 'ci' AND b.number > ?2 "
                   "GROUP BY c.author, c.email ORDER BY 3 LIMIT 50",
                   &st)))
        goto out;
    tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
    tf_db_bind_int64(st, 2, green);
    while (tf_db_step(st) == TF_DB_ROW)
        json_array_append_new(suspects,
                              json_pack("{s:o,s:o}", "author",
                                        tf_col_text(st, 0), "email",
                                        tf_col_text(st, 1)));
    tf_db_finalize(st);
    st = NULL;
    /* The step that failed in the last complete build. */
    if ((rc = prep(db,
                   "SELECT idx, name, result FROM steps WHERE build_id = ?1 "
                   "AND result IN " RED_RESULTS " ORDER BY idx LIMIT 1",
                   &st)))
        goto out;
    tf_db_bind_int64(st, 1,
                       json_integer_value(json_object_get(last, "id")));
    if (tf_db_step(st) == TF_DB_ROW) {
        json_decref(step);
        step = json_object();
        json_object_set_new(step, "index", tf_col_int(st, 0));
        json_object_set_new(step, "name", tf_col_text(st, 1));
        json_object_set_new(step, "result", tf_col_result(st, 2));
    }
out:
    tf_db_finalize(st);
    json_object_set_new(o, "failing_since", since);
    json_object_set_new(o, "suspects", suspects);
    json_object_set_new(o, "failed_step", step);
    return rc;
}

json_t *tf_q_builder_unstored(const char *base_url, const char *name)
{
    json_t *o = json_pack("{s:s,s:b,s:i,s:i,s:i,s:n,s:n,s:n,s:[],s:n}",
                          "name", name, "active", 1, "builds_total", 0,
                          "pending", 0, "running", 0, "last_build_id",
                          "last_complete", "failing_since", "suspects",
                          "failed_step");
    if (!o)
        return NULL;
    json_object_set_new(o, "url", j_url(base_url, "api/v1/builders/%s", name));
    json_object_set_new(o, "page_url", j_page(base_url, "builders/%s", name));
    return o;
}

int tf_q_builders(tf_db_t *db, const char *base_url, json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db,
                  "SELECT " BUILDER_COLS "FROM builders b "
                  "LEFT JOIN builds lb ON lb.id = b.last_complete_build_id "
                  "ORDER BY b.name",
                  &st);
    if (rc)
        return rc;
    json_t *arr = json_array();
    while (tf_db_step(st) == TF_DB_ROW)
        json_array_append_new(arr, builder_row(st, base_url));
    tf_db_finalize(st);
    size_t i;
    json_t *b;
    json_array_foreach(arr, i, b)
    {
        const char *name = json_string_value(json_object_get(b, "name"));
        if ((rc = tf_q_builder_failing(db, base_url, name, b)) != 0) {
            json_decref(arr);
            return rc;
        }
    }
    *out = arr;
    return 0;
}

int tf_q_builder(tf_db_t *db, const char *base_url, const char *name,
                 json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db,
                  "SELECT " BUILDER_COLS "FROM builders b "
                  "LEFT JOIN builds lb ON lb.id = b.last_complete_build_id "
                  "WHERE b.name = ?1",
                  &st);
    if (rc)
        return rc;
    tf_db_bind_text(st, 1, name, -1, TF_DB_TRANSIENT);
    rc = TF_ENOENT;
    if (tf_db_step(st) == TF_DB_ROW) {
        *out = builder_row(st, base_url);
        rc = 0;
    }
    tf_db_finalize(st);
    if (rc == 0 && (rc = tf_q_builder_failing(db, base_url, name, *out))) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

#define BUILD_COLS                                                             \
    "id, builder, number, request_id, slave, state, result, text, reason, "    \
    "created_ms, started_ms, finished_ms, properties, nsteps, kind, "        \
    "logs_removed_ms "

static const tf_col_t build_cols[] = {
    {"id", TF_COL_INT},          {"builder", TF_COL_TEXT},
    {"number", TF_COL_INT},      {"request_id", TF_COL_INT},
    {"slave", TF_COL_TEXT},      {"state", TF_COL_TEXT},
    {"result", TF_COL_RESULT},   {"text", TF_COL_TEXT},
    {"reason", TF_COL_TEXT},     {"created_ms", TF_COL_INT},
    {"started_ms", TF_COL_INT},  {"finished_ms", TF_COL_INT},
    {"properties", TF_COL_JSON}, {"nsteps", TF_COL_INT},
    {"kind", TF_COL_TEXT},       {"logs_removed_ms", TF_COL_INT},
    {NULL, TF_COL_SKIP},
};

static json_t *build_row(tf_dbst_t *st, const char *base)
{
    long long id = (long long)tf_db_column_int64(st, 0);
    json_t *o = tf_row_set(json_object(), st, 0, build_cols);
    if (tf_db_column_type(st, 10) != TF_DB_NULL &&
        tf_db_column_type(st, 11) != TF_DB_NULL)
        json_object_set_new(o, "duration_ms",
                            json_integer(tf_db_column_int64(st, 11) -
                                         tf_db_column_int64(st, 10)));
    else
        json_object_set_new(o, "duration_ms", json_null());
    json_object_set_new(o, "url", j_url(base, "api/v1/builds/%lld", id));
    json_object_set_new(o, "page_url", j_page(base, "builds/%lld", id));
    return o;
}

int tf_q_builds(tf_db_t *db, const char *base_url, const char *builder,
                const char *kind, uint64_t before, unsigned limit,
                json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db, "SELECT 1 FROM builders WHERE name = ?1", &st);
    if (rc)
        return rc;
    tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
    bool known = tf_db_step(st) == TF_DB_ROW;
    tf_db_finalize(st);
    st = NULL;
    if (!known)
        return TF_ENOENT;
    rc = prep(db,
                  "SELECT " BUILD_COLS "FROM builds WHERE builder = ?1 "
                  "AND number < ?2 AND (?4 IS NULL OR kind = ?4) "
                  "ORDER BY number DESC LIMIT ?3",
                  &st);
    if (rc)
        return rc;
    tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
    tf_db_bind_int64(st, 2, before ? (int64_t)before : INT64_MAX);
    tf_db_bind_int64(st, 3, (int64_t)limit + 1);
    if (kind)
        tf_db_bind_text(st, 4, kind, -1, TF_DB_TRANSIENT);
    json_t *arr = json_array();
    unsigned n = 0;
    int64_t next = 0;
    while (tf_db_step(st) == TF_DB_ROW) {
        if (n == limit) {
            next = 1; /* there is more */
            break;
        }
        json_array_append_new(arr, build_row(st, base_url));
        n++;
    }
    tf_db_finalize(st);
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
static void steps_add_stats(tf_db_t *db, json_t *arr, long long build_id)
{
    tf_dbst_t *st = NULL;
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
    tf_db_bind_int64(st, 1, build_id);
    while (tf_db_step(st) == TF_DB_ROW) {
        json_t *step = json_array_get(arr, (size_t)tf_db_column_int(st, 0));
        const char *name = (const char *)tf_db_column_text(st, 1);
        if (!step || !name ||
            json_integer_value(json_object_get(step, "index")) !=
                tf_db_column_int(st, 0))
            continue;
        json_object_set_new(json_object_get(step, "stats"), name,
                            j_number(tf_db_column_double(st, 2)));
    }
    tf_db_finalize(st);
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

static json_t *steps_of(tf_db_t *db, const char *base, long long build_id)
{
    tf_dbst_t *st = NULL;
    json_t *arr = json_array();
    if (prep(db,
             "SELECT idx, name, state, result, started_ms, finished_ms, "
             "duration_ms, exit_code, signal, timed_out, text, command, "
             "log_bytes, log_lines, info, warnings FROM steps "
             "WHERE build_id = ?1 ORDER BY idx",
             &st))
        return arr;
    tf_db_bind_int64(st, 1, build_id);
    while (tf_db_step(st) == TF_DB_ROW) {
        int idx = tf_db_column_int(st, 0);
        json_t *o = tf_row_set(json_object(), st, 0, step_cols);
        json_t *log = tf_row_set(json_object(), st, 12, step_log_cols);
        json_object_set_new(log, "url",
                            j_url(base, "api/v1/builds/%lld/steps/%d/log",
                                  build_id, idx));
        json_object_set_new(log, "page_url",
                            j_page(base, "builds/%lld/steps/%d", build_id,
                                   idx));
        json_object_set_new(o, "log", log);
        tf_row_set(o, st, 14, step_tail_cols);
        json_array_append_new(arr, o);
    }
    tf_db_finalize(st);
    steps_add_stats(db, arr, build_id);
    return arr;
}

/* --- changes (poller.c records them; a build's blamelist) --- */

#define CHANGE_COLS                                                            \
    "c.id, c.repository, c.branch, c.revision, c.author, c.email, "            \
    "c.committer_ms, c.message, c.files, c.created_ms "

/* A change; its message cut to the first line unless full. */
static json_t *change_row(tf_dbst_t *st, const char *base, bool full)
{
    long long id = (long long)tf_db_column_int64(st, 0);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(id));
    json_object_set_new(o, "repository", tf_col_text(st, 1));
    json_object_set_new(o, "branch", tf_col_text(st, 2));
    json_object_set_new(o, "revision", tf_col_text(st, 3));
    json_object_set_new(o, "author", tf_col_text(st, 4));
    json_object_set_new(o, "email", tf_col_text(st, 5));
    json_object_set_new(o, "committer_ms", tf_col_int(st, 6));
    const char *msg = (const char *)tf_db_column_text(st, 7);
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
    json_object_set_new(o, "page_url", j_page(base, "changes/%lld", id));
    return o;
}

/* The blamelist of a build, oldest change first. */
static json_t *build_changes_of(tf_db_t *db, const char *base,
                                long long build_id)
{
    tf_dbst_t *st = NULL;
    json_t *arr = json_array();
    if (prep(db,
             "SELECT " CHANGE_COLS "FROM build_changes bc JOIN changes c "
             "ON c.id = bc.change_id WHERE bc.build_id = ?1 ORDER BY c.id",
             &st))
        return arr;
    tf_db_bind_int64(st, 1, build_id);
    while (tf_db_step(st) == TF_DB_ROW)
        json_array_append_new(arr, change_row(st, base, false));
    tf_db_finalize(st);
    return arr;
}

int tf_q_changes(tf_db_t *db, const char *base_url, const char *repository,
                 const char *branch, uint64_t before, unsigned limit,
                 json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db,
                  "SELECT " CHANGE_COLS "FROM changes c WHERE c.id < ?1 "
                  "AND (?2 IS NULL OR c.repository = ?2) "
                  "AND (?3 IS NULL OR c.branch = ?3) "
                  "ORDER BY c.id DESC LIMIT ?4",
                  &st);
    if (rc)
        return rc;
    tf_db_bind_int64(st, 1, before ? (int64_t)before : INT64_MAX);
    if (repository)
        tf_db_bind_text(st, 2, repository, -1, TF_DB_TRANSIENT);
    if (branch)
        tf_db_bind_text(st, 3, branch, -1, TF_DB_TRANSIENT);
    tf_db_bind_int64(st, 4, (int64_t)limit + 1);
    json_t *arr = json_array();
    unsigned n = 0;
    bool more = false;
    long long last = 0;
    while (tf_db_step(st) == TF_DB_ROW) {
        if (n == limit) {
            more = true;
            break;
        }
        last = (long long)tf_db_column_int64(st, 0);
        json_array_append_new(arr, change_row(st, base_url, false));
        n++;
    }
    tf_db_finalize(st);
    json_t *o = json_object();
    json_object_set_new(o, "changes", arr);
    json_object_set_new(o, "next_before",
                        more ? json_integer(last) : json_null());
    *out = o;
    return 0;
}

int tf_q_change(tf_db_t *db, const char *base_url, uint64_t id, json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db, "SELECT " CHANGE_COLS "FROM changes c WHERE c.id = ?1",
                  &st);
    if (rc)
        return rc;
    tf_db_bind_int64(st, 1, (int64_t)id);
    if (tf_db_step(st) != TF_DB_ROW) {
        tf_db_finalize(st);
        return TF_ENOENT;
    }
    json_t *o = change_row(st, base_url, true);
    tf_db_finalize(st);
    json_t *builds = json_array();
    if (prep(db,
             "SELECT b.id, b.builder, b.number, b.state, b.result, "
             "b.created_ms, b.finished_ms FROM build_changes bc JOIN builds b "
             "ON b.id = bc.build_id WHERE bc.change_id = ?1 ORDER BY b.id",
             &st) == 0) {
        tf_db_bind_int64(st, 1, (int64_t)id);
        while (tf_db_step(st) == TF_DB_ROW) {
            static const tf_col_t cols[] = {
                {"id", TF_COL_INT},         {"builder", TF_COL_TEXT},
                {"number", TF_COL_INT},     {"state", TF_COL_TEXT},
                {"result", TF_COL_RESULT},  {"created_ms", TF_COL_INT},
                {"finished_ms", TF_COL_INT}, {NULL, TF_COL_SKIP},
            };
            long long bid = (long long)tf_db_column_int64(st, 0);
            json_t *b = tf_row_set(json_object(), st, 0, cols);
            json_object_set_new(b, "url",
                                j_url(base_url, "api/v1/builds/%lld", bid));
            json_object_set_new(b, "page_url",
                                j_page(base_url, "builds/%lld", bid));
            json_array_append_new(builds, b);
        }
        tf_db_finalize(st);
    }
    json_object_set_new(o, "builds", builds);
    *out = o;
    return 0;
}

static int build_one(tf_db_t *db, const char *base_url, tf_dbst_t *st,
                     json_t **out)
{
    int rc = TF_ENOENT;
    if (tf_db_step(st) == TF_DB_ROW) {
        json_t *o = build_row(st, base_url);
        long long id = (long long)tf_db_column_int64(st, 0);
        json_object_set_new(o, "steps", steps_of(db, base_url, id));
        json_object_set_new(o, "changes", build_changes_of(db, base_url, id));
        *out = o;
        rc = 0;
    }
    tf_db_finalize(st);
    return rc;
}

int tf_q_build(tf_db_t *db, const char *base_url, uint64_t id, json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db, "SELECT " BUILD_COLS "FROM builds WHERE id = ?1", &st);
    if (rc)
        return rc;
    tf_db_bind_int64(st, 1, (int64_t)id);
    return build_one(db, base_url, st, out);
}

int tf_q_build_by_number(tf_db_t *db, const char *base_url,
                         const char *builder, uint64_t number, json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db,
                  "SELECT " BUILD_COLS
                  "FROM builds WHERE builder = ?1 AND number = ?2",
                  &st);
    if (rc)
        return rc;
    tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
    tf_db_bind_int64(st, 2, (int64_t)number);
    return build_one(db, base_url, st, out);
}

#define SLAVE_COLS                                                             \
    "name, connected, platform, version, tags, first_seen_ms, "                \
    "last_seen_ms, connected_ms, disconnected_ms, builds_done, last_error "

static json_t *slave_row(tf_dbst_t *st, const char *base)
{
    static const tf_col_t cols[] = {
        {"name", TF_COL_TEXT},           {"connected", TF_COL_BOOL},
        {"platform", TF_COL_TEXT},       {"version", TF_COL_TEXT},
        {"tags", TF_COL_JSON},           {"first_seen_ms", TF_COL_INT},
        {"last_seen_ms", TF_COL_INT},    {"connected_ms", TF_COL_INT},
        {"disconnected_ms", TF_COL_INT}, {"builds_done", TF_COL_INT},
        {"last_error", TF_COL_TEXT},     {NULL, TF_COL_SKIP},
    };
    const char *name = (const char *)tf_db_column_text(st, 0);
    json_t *o = tf_row_set(json_object(), st, 0, cols);
    json_object_set_new(o, "url", j_url(base, "api/v1/slaves/%s", name));
    json_object_set_new(o, "page_url", j_page(base, "slaves/%s", name));
    return o;
}

int tf_q_slaves(tf_db_t *db, const char *base_url, uint64_t offset,
                uint64_t limit, json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db,
                  "SELECT " SLAVE_COLS "FROM slaves ORDER BY name "
                  "LIMIT ?1 OFFSET ?2",
                  &st);
    if (rc)
        return rc;
    tf_db_bind_int64(st, 1, (int64_t)limit);
    tf_db_bind_int64(st, 2, (int64_t)offset);
    json_t *arr = json_array();
    while (tf_db_step(st) == TF_DB_ROW)
        json_array_append_new(arr, slave_row(st, base_url));
    tf_db_finalize(st);
    *out = arr;
    return 0;
}

int tf_q_slave(tf_db_t *db, const char *base_url, const char *name,
               unsigned events, json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db, "SELECT " SLAVE_COLS "FROM slaves WHERE name = ?1", &st);
    if (rc)
        return rc;
    tf_db_bind_text(st, 1, name, -1, TF_DB_TRANSIENT);
    if (tf_db_step(st) != TF_DB_ROW) {
        tf_db_finalize(st);
        return TF_ENOENT;
    }
    json_t *o = slave_row(st, base_url);
    tf_db_finalize(st);
    json_t *evs = json_array();
    if (prep(db,
             "SELECT time_ms, event, detail FROM slave_events "
             "WHERE slave = ?1 ORDER BY id DESC LIMIT ?2",
             &st) == 0) {
        tf_db_bind_text(st, 1, name, -1, TF_DB_TRANSIENT);
        tf_db_bind_int(st, 2, (int)events);
        while (tf_db_step(st) == TF_DB_ROW) {
            json_t *e = json_object();
            json_object_set_new(e, "time_ms", tf_col_int(st, 0));
            json_object_set_new(e, "event", tf_col_text(st, 1));
            json_object_set_new(e, "detail", tf_col_text(st, 2));
            json_array_append_new(evs, e);
        }
        tf_db_finalize(st);
    }
    json_object_set_new(o, "events", evs);
    json_t *recent = json_array();
    if (prep(db,
             "SELECT id, builder, number, result, finished_ms FROM builds "
             "WHERE slave = ?1 ORDER BY id DESC LIMIT 20",
             &st) == 0) {
        tf_db_bind_text(st, 1, name, -1, TF_DB_TRANSIENT);
        while (tf_db_step(st) == TF_DB_ROW) {
            static const tf_col_t cols[] = {
                {"id", TF_COL_INT},         {"builder", TF_COL_TEXT},
                {"number", TF_COL_INT},     {"result", TF_COL_RESULT},
                {"finished_ms", TF_COL_INT}, {NULL, TF_COL_SKIP},
            };
            json_array_append_new(recent, tf_row_set(json_object(), st, 0,
                                                     cols));
        }
        tf_db_finalize(st);
    }
    json_object_set_new(o, "recent_builds", recent);
    *out = o;
    return 0;
}

int tf_q_request(tf_db_t *db, const char *base_url, uint64_t id, json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db,
                  "SELECT id, builder, state, reason, owner, priority, "
                  "submitted_ms, started_ms, finished_ms, result, build_id, "
                  "retries, properties, scheduler, collapsed_into, "
                  "revision, job_id, job_id IS NOT NULL OR patch_sha256 IS "
                  "NOT NULL FROM build_requests WHERE id = ?1",
                  &st);
    if (rc)
        return rc;
    tf_db_bind_int64(st, 1, (int64_t)id);
    rc = TF_ENOENT;
    if (tf_db_step(st) == TF_DB_ROW) {
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
        json_object_set_new(o, "kind", json_string(tf_db_column_int(st, 17)
                                                       ? "try"
                                                       : "ci"));
        json_object_set_new(o, "url",
                            j_url(base_url, "api/v1/requests/%" PRIu64, id));
        /* A request has no page of its own: its job's, its build's, or
         * its builder's (where the queue is). */
        json_object_set_new(
            o, "page_url",
            tf_db_column_type(st, 16) != TF_DB_NULL
                ? j_page(base_url, "jobs/%lld",
                         (long long)tf_db_column_int64(st, 16))
            : tf_db_column_type(st, 10) != TF_DB_NULL
                ? j_page(base_url, "builds/%lld",
                         (long long)tf_db_column_int64(st, 10))
                : j_page(base_url, "builders/%s",
                         (const char *)tf_db_column_text(st, 1)));
        *out = o;
        rc = 0;
    }
    tf_db_finalize(st);
    return rc;
}

int tf_q_log_size(tf_db_t *db, uint64_t build_id, unsigned step,
                  uint64_t *bytes, uint64_t *lines, int64_t *removed_ms)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db,
                  "SELECT s.log_bytes, s.log_lines, "
                  "coalesce(b.logs_removed_ms, 0) FROM steps s "
                  "JOIN builds b ON b.id = s.build_id "
                  "WHERE s.build_id = ?1 AND s.idx = ?2",
                  &st);
    if (rc)
        return rc;
    tf_db_bind_int64(st, 1, (int64_t)build_id);
    tf_db_bind_int(st, 2, (int)step);
    rc = TF_ENOENT;
    if (tf_db_step(st) == TF_DB_ROW) {
        *bytes = (uint64_t)tf_db_column_int64(st, 0);
        *lines = (uint64_t)tf_db_column_int64(st, 1);
        *removed_ms = tf_db_column_int64(st, 2);
        rc = 0;
    }
    tf_db_finalize(st);
    return rc;
}

/* Opens or ends (sql) one snapshot around a log read: a savepoint on
 * sqlite, whose read connection may be outside a read transaction;
 * nothing on PostgreSQL, whose reads all run in one REPEATABLE READ
 * transaction (pg.c). */
static int log_snapshot(tf_db_t *db, const char *sql)
{
    if (strcmp(tf_db_engine(db), "sqlite") != 0)
        return TF_DB_OK;
    return tf_db_exec(db, sql);
}

/* Makes c hold the sealed block of (build_id, step) that holds byte
 * pos. Returns 0, TF_ENOENT (no block holds it: it is in the open tail,
 * or past the log), TF_ECORRUPT (logged) or TF_ESTORE. */
static int log_block_at(tf_db_t *db, uint64_t build_id, unsigned step,
                        uint64_t pos, tf_logcache_t *c)
{
    if (c->len && c->build_id == build_id && c->step == step &&
        c->offset <= pos && pos - c->offset < c->len)
        return 0;
    tf_dbst_t *st = NULL;
    int rc = prep(db,
                  "SELECT offset, line, raw_len, codec, data FROM log_blocks "
                  "WHERE build_id = ?1 AND step = ?2 AND offset <= ?3 "
                  "ORDER BY offset DESC LIMIT 1",
                  &st);
    if (rc)
        return rc;
    tf_db_bind_int64(st, 1, (int64_t)build_id);
    tf_db_bind_int(st, 2, (int)step);
    tf_db_bind_int64(st, 3, (int64_t)pos);
    rc = TF_ENOENT;
    if (tf_db_step(st) != TF_DB_ROW)
        goto out;
    uint64_t off = (uint64_t)tf_db_column_int64(st, 0);
    uint64_t line = (uint64_t)tf_db_column_int64(st, 1);
    int64_t raw = tf_db_column_int64(st, 2);
    int codec = tf_db_column_int(st, 3);
    const void *blob = tf_db_column_blob(st, 4);
    size_t blen = (size_t)tf_db_column_bytes(st, 4);
    if (raw > 0 && off + (uint64_t)raw <= pos)
        goto out; /* the last block ends before pos */
    rc = TF_ECORRUPT;
    if (raw <= 0 || raw > (int64_t)TF_LOGBLOCK_MAX)
        goto bad;
    unsigned char *d = realloc(c->data, (size_t)raw);
    if (!d) {
        rc = TF_ENOMEM;
        goto out;
    }
    c->data = d;
    c->len = 0;
    rc = tf_logblock_unpack(codec, blob, blen, (uint64_t)raw, d);
    if (rc)
        goto bad;
    c->build_id = build_id;
    c->step = step;
    c->offset = off;
    c->line = line;
    c->len = (size_t)raw;
    goto out;
bad:
    tf_error("store", "build %" PRIu64 " step %u: the log block at bytes %"
             PRIu64 "-%" PRIu64 " is corrupt (codec %d, %zu bytes stored); "
             "that part of the log cannot be read",
             build_id, step, off, off + (uint64_t)(raw > 0 ? raw : 0), codec,
             blen);
    rc = TF_ECORRUPT;
out:
    tf_db_finalize(st);
    return rc;
}

/* Copies what the open tail (chunks) holds of [pos, end), at most max
 * bytes, to dst; *got: how many. */
static int log_tail_read(tf_db_t *db, uint64_t build_id, unsigned step,
                         uint64_t pos, uint64_t end, size_t max,
                         unsigned char *dst, size_t *got)
{
    tf_dbst_t *st = NULL;
    *got = 0;
    int rc = prep(db,
                  "SELECT offset, data FROM log_chunks "
                  "WHERE build_id = ?1 AND step = ?2 AND offset >= "
                  "coalesce((SELECT max(offset) FROM log_chunks WHERE "
                  "build_id = ?1 AND step = ?2 AND offset <= ?3), 0) "
                  "AND offset < ?4 ORDER BY offset",
                  &st);
    if (rc)
        return rc;
    tf_db_bind_int64(st, 1, (int64_t)build_id);
    tf_db_bind_int(st, 2, (int)step);
    tf_db_bind_int64(st, 3, (int64_t)pos);
    /* Only the chunks that can hold the next max bytes: an engine that
     * materializes a result (PostgreSQL) must not fetch the rest of the
     * tail for every piece. */
    tf_db_bind_int64(st, 4, (int64_t)(end - pos > max ? pos + max : end));
    while (*got < max && tf_db_step(st) == TF_DB_ROW) {
        uint64_t off = (uint64_t)tf_db_column_int64(st, 0);
        const unsigned char *data = tf_db_column_blob(st, 1);
        uint64_t n = (uint64_t)tf_db_column_bytes(st, 1);
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
    tf_db_finalize(st);
    return 0;
}

int tf_q_log_read(tf_db_t *db, uint64_t build_id, unsigned step,
                  uint64_t start, uint64_t end, size_t max, unsigned char *dst,
                  size_t *got, tf_logcache_t *cache)
{
    tf_logcache_t local = {0};
    tf_logcache_t *c = cache ? cache : &local;
    uint64_t pos = start;
    int rc = 0;

    *got = 0;
    /* One snapshot for the blocks and the tail, even on a connection
     * outside a read transaction: the writer moves bytes from the tail
     * into a block at any time. */
    if (log_snapshot(db, "SAVEPOINT tf_log") != TF_DB_OK)
        return TF_ESTORE;
    while (*got < max && pos < end) {
        rc = log_block_at(db, build_id, step, pos, c);
        if (rc == TF_ENOENT) {
            size_t n = 0;
            rc = log_tail_read(db, build_id, step, pos, end, max - *got,
                               dst + *got, &n);
            *got += n;
            break;
        }
        if (rc)
            break;
        uint64_t from = pos - c->offset;
        uint64_t take = c->len - from;
        if (take > end - pos)
            take = end - pos;
        if (take > max - *got)
            take = max - *got;
        memcpy(dst + *got, c->data + from, (size_t)take);
        *got += (size_t)take;
        pos += take;
    }
    log_snapshot(db, "RELEASE tf_log");
    tf_logcache_clear(&local);
    return rc;
}

int tf_q_log_follow(tf_db_t *db, uint64_t build_id, unsigned step,
                    uint64_t from, size_t max, unsigned char *dst,
                    size_t *got, uint64_t *size, bool *ended)
{
    tf_dbst_t *st = NULL;
    *got = 0;
    *size = 0;
    *ended = false;
    /* The size and the bytes from one snapshot: a byte counted in
     * log_bytes is in a block or in the tail of that same snapshot. */
    if (log_snapshot(db, "SAVEPOINT tf_follow") != TF_DB_OK)
        return TF_ESTORE;
    int rc = prep(db,
                  "SELECT s.log_bytes, s.state = 'done' OR "
                  "b.state = 'finished' FROM steps s "
                  "JOIN builds b ON b.id = s.build_id "
                  "WHERE s.build_id = ?1 AND s.idx = ?2",
                  &st);
    if (rc)
        goto out;
    tf_db_bind_int64(st, 1, (int64_t)build_id);
    tf_db_bind_int(st, 2, (int)step);
    rc = TF_ENOENT;
    if (tf_db_step(st) == TF_DB_ROW) {
        *size = (uint64_t)tf_db_column_int64(st, 0);
        *ended = tf_db_column_int64(st, 1) != 0;
        rc = 0;
    }
    tf_db_finalize(st);
    if (rc == 0 && from < *size && max > 0)
        rc = tf_q_log_read(db, build_id, step, from, *size, max, dst, got,
                           NULL);
out:
    log_snapshot(db, "RELEASE tf_follow");
    return rc;
}

static uint64_t count_newlines(const unsigned char *p, size_t n)
{
    uint64_t k = 0;
    const unsigned char *end = p + n;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        k++;
        p++;
    }
    return k;
}

int tf_q_log_visit(tf_db_t *db, uint64_t build_id, unsigned step,
                   uint64_t from,
                   bool (*visit)(void *arg, uint64_t offset, uint64_t line,
                                 const void *data, size_t len),
                   void *arg)
{
    tf_logcache_t c = {0};
    uint64_t pos = from;
    tf_dbst_t *st = NULL;
    int rc;

    if (log_snapshot(db, "SAVEPOINT tf_log") != TF_DB_OK)
        return TF_ESTORE;
    /* The sealed blocks, from the one holding `from`. */
    for (;;) {
        rc = log_block_at(db, build_id, step, pos, &c);
        if (rc == TF_ENOENT)
            break;
        if (rc)
            goto out;
        size_t skip = (size_t)(pos - c.offset);
        uint64_t line = c.line + count_newlines(c.data, skip);
        bool more = visit(arg, pos, line, c.data + skip, c.len - skip);
        pos = c.offset + c.len;
        if (!more) {
            rc = 0;
            goto out;
        }
    }
    /* Then the open tail. */
    rc = prep(db,
              "SELECT offset, line, data FROM log_chunks "
              "WHERE build_id = ?1 AND step = ?2 AND "
              "offset + length(data) > ?3 ORDER BY offset",
              &st);
    if (rc)
        goto out;
    tf_db_bind_int64(st, 1, (int64_t)build_id);
    tf_db_bind_int(st, 2, (int)step);
    tf_db_bind_int64(st, 3, (int64_t)pos);
    while (tf_db_step(st) == TF_DB_ROW &&
           visit(arg, (uint64_t)tf_db_column_int64(st, 0),
                 (uint64_t)tf_db_column_int64(st, 1),
                 tf_db_column_blob(st, 2),
                 (size_t)tf_db_column_bytes(st, 2)))
        ;
    rc = 0;
out:
    tf_db_finalize(st);
    log_snapshot(db, "RELEASE tf_log");
    tf_logcache_clear(&c);
    return rc;
}

#define JOB_COLS                                                               \
    "id, author, email, description, review_url, patchset, base_revision, "   \
    "patch_sha256, patch_size, state, result, submitted_ms, finished_ms, "     \
    "notify, notify_email, new_failures_only "

static json_t *job_row(tf_dbst_t *st, const char *base)
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
        {"new_failures_only", TF_COL_BOOL}, {NULL, TF_COL_SKIP},
    };
    long long id = (long long)tf_db_column_int64(st, 0);
    json_t *o = tf_row_set(json_object(), st, 0, head);
    if (tf_db_column_type(st, 7) != TF_DB_NULL) {
        const char *sha = (const char *)tf_db_column_text(st, 7);
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
    json_object_set_new(o, "page_url", j_page(base, "jobs/%lld", id));
    return o;
}

static json_t *job_builders(tf_db_t *db, const char *base, long long job_id,
                            bool with_steps)
{
    tf_dbst_t *st = NULL;
    json_t *arr = json_array();
    if (prep(db,
             "SELECT r.id, r.builder, r.state, r.result, r.tests, "
             "b.id, b.number, b.slave, b.state, b.result, b.started_ms, "
             "b.finished_ms, b.got_revision, r.reused, r.without_patch_of "
             "FROM build_requests r LEFT JOIN builds b ON b.id = r.build_id "
             "WHERE r.job_id = ?1 ORDER BY r.id",
             &st))
        return arr;
    tf_db_bind_int64(st, 1, job_id);
    while (tf_db_step(st) == TF_DB_ROW) {
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
        json_object_set_new(e, "reused",
                            json_boolean(tf_db_column_int(st, 13)));
        json_object_set_new(e, "without_patch_of", tf_col_int(st, 14));
        if (tf_db_column_type(st, 5) == TF_DB_NULL) {
            json_object_set_new(e, "build", json_null());
        } else {
            long long bid = (long long)tf_db_column_int64(st, 5);
            json_t *b = tf_row_set(json_object(), st, 5, build_cols_short);
            json_object_set_new(b, "url",
                                j_url(base, "api/v1/builds/%lld", bid));
            json_object_set_new(b, "page_url",
                                j_page(base, "builds/%lld", bid));
            if (with_steps)
                json_object_set_new(b, "steps", steps_of(db, base, bid));
            /* One job's answer carries each build's test summary; a list
             * of jobs does not (it would count every build's tests). */
            if (with_steps)
                json_object_set_new(b, "tests",
                                    tf_q_tests_summary(db, base,
                                                       (uint64_t)bid));
            json_object_set_new(e, "build", b);
        }
        json_array_append_new(arr, e);
    }
    tf_db_finalize(st);
    return arr;
}

/* The job's failed builds that count when only new failures count
 * (docs/committers.md): a build that did not pass and either has no
 * failing test to explain it or has a failing test its reference build
 * did not fail. */
static json_t *job_new_failures(const json_t *builders)
{
    json_int_t builds = 0, tests = 0;
    size_t i;
    const json_t *e;
    json_array_foreach(builders, i, e) {
        const json_t *b = json_object_get(e, "build");
        const char *res = json_string_value(json_object_get(b, "result"));
        if (json_is_integer(json_object_get(e, "without_patch_of")))
            continue; /* a rerun without the patch: the reference */
        if (!res || strcmp(res, "SUCCESS") == 0 ||
            strcmp(res, "WARNINGS") == 0)
            continue;
        const json_t *t = json_object_get(b, "tests");
        json_int_t fails = json_integer_value(json_object_get(t, "fail"));
        json_int_t fresh =
            json_integer_value(json_object_get(t, "new_failures"));
        tests += fresh;
        builds += fails == 0 || fresh > 0;
    }
    return json_pack("{s:I, s:I}", "builds", builds, "tests", tests);
}

int tf_q_job(tf_db_t *db, const char *base_url, uint64_t id, json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db, "SELECT " JOB_COLS "FROM try_jobs WHERE id = ?1", &st);
    if (rc)
        return rc;
    tf_db_bind_int64(st, 1, (int64_t)id);
    rc = TF_ENOENT;
    if (tf_db_step(st) == TF_DB_ROW) {
        json_t *o = job_row(st, base_url);
        json_t *bs = job_builders(db, base_url, (long long)id, true);
        json_object_set_new(o, "builders", bs);
        json_object_set_new(o, "new_failures", job_new_failures(bs));
        *out = o;
        rc = 0;
    }
    tf_db_finalize(st);
    return rc;
}

int tf_q_jobs(tf_db_t *db, const char *base_url, const char *email,
              uint64_t before, unsigned limit, json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db,
                  "SELECT " JOB_COLS "FROM try_jobs WHERE id < ?1 AND "
                  "(?2 IS NULL OR email = ?2) ORDER BY id DESC LIMIT ?3",
                  &st);
    if (rc)
        return rc;
    tf_db_bind_int64(st, 1, before ? (int64_t)before : INT64_MAX);
    if (email)
        tf_db_bind_text(st, 2, email, -1, TF_DB_TRANSIENT);
    else
        tf_db_bind_null(st, 2);
    tf_db_bind_int64(st, 3, (int64_t)limit + 1);
    json_t *arr = json_array();
    unsigned n = 0;
    bool more = false;
    long long last = 0;
    while (tf_db_step(st) == TF_DB_ROW) {
        if (n == limit) {
            more = true;
            break;
        }
        json_t *o = job_row(st, base_url);
        last = (long long)tf_db_column_int64(st, 0);
        json_object_set_new(o, "builders",
                            job_builders(db, base_url, last, false));
        json_array_append_new(arr, o);
        n++;
    }
    tf_db_finalize(st);
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
static int stats_builds(tf_db_t *db, const char *builder, const char *kind,
                        unsigned limit, json_t *builds, stat_build_t *ids,
                        size_t *nids)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db,
                  "SELECT id, number, result, "
                  "coalesce(started_ms, created_ms), finished_ms "
                  "FROM builds WHERE builder = ?1 AND state = 'finished' "
                  "AND (?3 IS NULL OR kind = ?3) "
                  "ORDER BY number DESC LIMIT ?2",
                  &st);
    if (rc)
        return rc;
    tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
    tf_db_bind_int64(st, 2, limit);
    if (kind)
        tf_db_bind_text(st, 3, kind, -1, TF_DB_TRANSIENT);
    *nids = 0;
    while (tf_db_step(st) == TF_DB_ROW && *nids < limit) {
        int64_t started = tf_db_column_int64(st, 3);
        int64_t finished = tf_db_column_type(st, 4) == TF_DB_NULL
                               ? started
                               : tf_db_column_int64(st, 4);
        json_t *o = json_object();
        json_object_set_new(o, "id", tf_col_int(st, 0));
        json_object_set_new(o, "number", tf_col_int(st, 1));
        json_object_set_new(o, "result", tf_col_result(st, 2));
        json_object_set_new(o, "started_ms", json_integer(started));
        json_object_set_new(o, "duration_ms",
                            json_integer(finished > started ? finished - started
                                                            : 0));
        json_array_insert_new(builds, 0, o); /* newest came first */
        ids[*nids].id = tf_db_column_int64(st, 0);
        ids[*nids].number = tf_db_column_int64(st, 1);
        (*nids)++;
    }
    tf_db_finalize(st);
    qsort(ids, *nids, sizeof(*ids), stat_build_cmp);
    return 0;
}

int tf_q_builder_stats(tf_db_t *db, const char *base_url, const char *builder,
                       const char *kind, unsigned limit, json_t **out)
{
    tf_dbst_t *st = NULL;
    stat_build_t *ids = NULL;
    size_t nids = 0;
    json_t *builds = NULL, *stats = NULL, *o;
    int rc;
    (void)base_url;

    if ((rc = prep(db, "SELECT 1 FROM builders WHERE name = ?1", &st)))
        return rc;
    tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
    rc = tf_db_step(st) == TF_DB_ROW ? 0 : TF_ENOENT;
    tf_db_finalize(st);
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
    if ((rc = stats_builds(db, builder, kind, limit, builds, ids, &nids)))
        goto out;
    if (nids) {
        /* stats_by_builder(builder, name, build_id) serves this range. */
        if ((rc = prep(db,
                       "SELECT build_id, step, name, value FROM stats "
                       "WHERE builder = ?1 AND build_id BETWEEN ?2 AND ?3 "
                       "ORDER BY name, build_id, step",
                       &st)))
            goto out;
        tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
        tf_db_bind_int64(st, 2, ids[0].id);
        tf_db_bind_int64(st, 3, ids[nids - 1].id);
        while (tf_db_step(st) == TF_DB_ROW) {
            stat_build_t key = {.id = tf_db_column_int64(st, 0)};
            const stat_build_t *b =
                bsearch(&key, ids, nids, sizeof(*ids), stat_build_cmp);
            const char *name = (const char *)tf_db_column_text(st, 2);
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
                                j_number(tf_db_column_double(st, 3)));
            json_array_append_new(series, p);
        }
    }
    o = json_object();
    json_object_set_new(o, "builds", builds);
    json_object_set_new(o, "stats", stats);
    builds = stats = NULL;
    *out = o;
out:
    tf_db_finalize(st);
    json_decref(builds);
    json_decref(stats);
    free(ids);
    return rc;
}

/* --- try jobs and patches --- */

/* The row id's first two columns (owner, state) as text into the two
 * buffers and, when build_id (job_id) is not NULL, its third (fourth) as
 * an id. TF_ENOENT without the row. */
static int owner_state(tf_db_t *db, const char *sql, uint64_t id,
                       char *owner, size_t owner_len, char *state,
                       size_t state_len, uint64_t *build_id,
                       uint64_t *job_id)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db, sql, &st);
    if (rc)
        return rc;
    tf_db_bind_int64(st, 1, (int64_t)id);
    rc = TF_ENOENT;
    if (tf_db_step(st) == TF_DB_ROW) {
        const char *o = (const char *)tf_db_column_text(st, 0);
        const char *s = (const char *)tf_db_column_text(st, 1);
        snprintf(owner, owner_len, "%s", o ? o : "");
        snprintf(state, state_len, "%s", s ? s : "");
        if (build_id)
            *build_id = (uint64_t)tf_db_column_int64(st, 2);
        if (job_id)
            *job_id = (uint64_t)tf_db_column_int64(st, 3);
        rc = 0;
    }
    tf_db_finalize(st);
    return rc;
}

int tf_q_job_owner(tf_db_t *db, uint64_t id, char *email, size_t email_len,
                   char *state, size_t state_len)
{
    return owner_state(db, "SELECT email, state FROM try_jobs WHERE id = ?1",
                       id, email, email_len, state, state_len, NULL, NULL);
}

int tf_q_build_owner(tf_db_t *db, uint64_t id, char *owner, size_t owner_len,
                     char *state, size_t state_len)
{
    return owner_state(db, "SELECT coalesce(r.owner, ''), b.state FROM "
                       "builds b LEFT JOIN build_requests r ON r.id = "
                       "b.request_id WHERE b.id = ?1",
                       id, owner, owner_len, state, state_len, NULL, NULL);
}

int tf_q_request_owner(tf_db_t *db, uint64_t id, char *owner,
                       size_t owner_len, char *state, size_t state_len,
                       uint64_t *build_id, uint64_t *job_id)
{
    return owner_state(db, "SELECT coalesce(owner, ''), state, "
                       "coalesce(build_id, 0), coalesce(job_id, 0) FROM "
                       "build_requests WHERE id = ?1",
                       id, owner, owner_len, state, state_len, build_id,
                       job_id);
}

int tf_q_farm_slaves(tf_db_t *db, json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db,
                  "SELECT s.name, coalesce(o.n, 0), s.draining FROM slaves s "
                  "LEFT JOIN (SELECT slave, count(*) AS n FROM builds "
                  "WHERE state <> 'finished' GROUP BY slave) o "
                  "ON o.slave = s.name WHERE s.connected <> 0",
                  &st);
    if (rc)
        return rc;
    json_t *o = json_object();
    while (o && tf_db_step(st) == TF_DB_ROW) {
        const char *name = (const char *)tf_db_column_text(st, 0);
        if (name)
            json_object_set_new(o, name,
                                json_pack("[I,b]", (json_int_t)
                                          tf_db_column_int64(st, 1),
                                          tf_db_column_int64(st, 2) != 0));
    }
    tf_db_finalize(st);
    if (!o)
        return TF_ENOMEM;
    *out = o;
    return 0;
}

int tf_q_farm_builds(tf_db_t *db, bool by_slave, json_t **out)
{
    tf_dbst_t *st = NULL;
    /* builds_open's partial index: the open rows only. */
    int rc = prep(db,
                  "SELECT id, builder, number, slave, "
                  "coalesce(started_ms, created_ms), kind FROM builds "
                  "WHERE state <> 'finished' ORDER BY id",
                  &st);
    if (rc)
        return rc;
    json_t *o = json_object();
    while (o && tf_db_step(st) == TF_DB_ROW) {
        const char *builder = (const char *)tf_db_column_text(st, 1);
        const char *slave = (const char *)tf_db_column_text(st, 3);
        const char *kind = (const char *)tf_db_column_text(st, 5);
        builder = builder ? builder : "";
        slave = slave ? slave : "";
        const char *key = by_slave ? slave : builder;
        json_t *row = json_pack(
            "[I,s,I,s,I,s]", (json_int_t)tf_db_column_int64(st, 0), builder,
            (json_int_t)tf_db_column_int64(st, 2), slave,
            (json_int_t)tf_db_column_int64(st, 4),
            kind && strcmp(kind, "try") == 0 ? "try" : "ci");
        json_t *list = json_object_get(o, key);
        if (!list && row) {
            list = json_array();
            if (json_object_set_new(o, key, list) != 0)
                list = NULL;
        }
        if (!row || !list || json_array_append_new(list, row) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    tf_db_finalize(st);
    if (!o)
        return TF_ENOMEM;
    *out = o;
    return 0;
}

int tf_q_farm_running(tf_db_t *db, const char *builder, json_t **out)
{
    tf_dbst_t *st = NULL;
    /* build_requests_open's partial index (state, builder). */
    int rc = prep(db,
                  builder
                      ? "SELECT id, builder, reason, owner, priority, "
                        "submitted_ms, retries, coalesce(build_id, 0), "
                        "coalesce(job_id, 0), job_id IS NOT NULL OR "
                        "patch_sha256 IS NOT NULL FROM build_requests "
                        "WHERE state = 'running' AND builder = ?1 "
                        "ORDER BY id"
                      : "SELECT id, builder, reason, owner, priority, "
                        "submitted_ms, retries, coalesce(build_id, 0), "
                        "coalesce(job_id, 0), job_id IS NOT NULL OR "
                        "patch_sha256 IS NOT NULL FROM build_requests "
                        "WHERE state = 'running' ORDER BY id",
                  &st);
    if (rc)
        return rc;
    if (builder)
        tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
    json_t *a = json_array();
    while (a && tf_db_step(st) == TF_DB_ROW) {
        json_t *row = json_pack(
            "[I,o,o,o,I,I,I,I,I,b]", (json_int_t)tf_db_column_int64(st, 0),
            tf_col_text(st, 1), tf_col_text(st, 2), tf_col_text(st, 3),
            (json_int_t)tf_db_column_int64(st, 4),
            (json_int_t)tf_db_column_int64(st, 5),
            (json_int_t)tf_db_column_int64(st, 6),
            (json_int_t)tf_db_column_int64(st, 7),
            (json_int_t)tf_db_column_int64(st, 8),
            tf_db_column_int(st, 9) != 0);
        if (!row || json_array_append_new(a, row) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    tf_db_finalize(st);
    if (!a)
        return TF_ENOMEM;
    *out = a;
    return 0;
}

int tf_q_duty_holder(tf_db_t *db, char *name, size_t len)
{
    tf_dbst_t *st = NULL;
    /* The lock's session names its master (application_name, pg.c
     * app_name: "tf-master HOST TAG pid N", its name in tf_masters). A
     * bigint key of an advisory lock is classid (high half) and objid. */
    int rc = prep(db,
                  "SELECT a.application_name FROM pg_locks l JOIN "
                  "pg_stat_activity a ON a.pid = l.pid WHERE "
                  "l.locktype = 'advisory' AND l.granted AND "
                  "l.classid = 0 AND l.objid = " TF_PG_DUTY_LOCK_KEY
                  " AND l.objsubid = 1",
                  &st);
    if (rc)
        return rc;
    name[0] = '\0';
    if (tf_db_step(st) == TF_DB_ROW) {
        const char *v = (const char *)tf_db_column_text(st, 0);
        snprintf(name, len, "%s", v ? v : "");
    }
    tf_db_finalize(st);
    return 0;
}

int tf_q_run(tf_db_t *db, tf_query_t *q)
{
    return tf__reads_query(db, q);
}

int tf_q_farm_pending(tf_db_t *db, json_t **out)
{
    tf_dbst_t *st = NULL;
    /* build_requests_open's partial index. */
    int rc = prep(db,
                  "SELECT builder, count(*) FROM build_requests "
                  "WHERE state = 'pending' GROUP BY builder",
                  &st);
    if (rc)
        return rc;
    json_t *o = json_object();
    while (o && tf_db_step(st) == TF_DB_ROW) {
        const char *name = (const char *)tf_db_column_text(st, 0);
        if (name)
            json_object_set_new(
                o, name, json_integer((json_int_t)tf_db_column_int64(st, 1)));
    }
    tf_db_finalize(st);
    if (!o)
        return TF_ENOMEM;
    *out = o;
    return 0;
}

int tf_q_patch_find(tf_db_t *db, const char *sha256, int64_t *rowid,
                    uint64_t *size)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db, "SELECT id, size FROM patches WHERE sha256 = ?1", &st);
    if (rc)
        return rc;
    tf_db_bind_text(st, 1, sha256, -1, TF_DB_TRANSIENT);
    rc = TF_ENOENT;
    if (tf_db_step(st) == TF_DB_ROW) {
        *rowid = tf_db_column_int64(st, 0);
        *size = (uint64_t)tf_db_column_int64(st, 1);
        rc = 0;
    }
    tf_db_finalize(st);
    return rc;
}

int tf_q_patch_read(tf_db_t *db, int64_t rowid, uint64_t pos,
                    unsigned char *dst, size_t n)
{
    tf_dbst_t *st = NULL;
    int rc = TF_ESTORE;
    if (n > INT32_MAX || pos > INT32_MAX)
        return TF_EINVAL;
    /* One piece by substr (1-based), which both engines answer from the
     * stored bytes without copying the whole patch out. */
    if (prep(db,
             "SELECT substr(data, CAST(?2 AS INTEGER), CAST(?3 AS INTEGER)) "
             "FROM patches WHERE id = ?1",
             &st))
        return TF_ESTORE;
    tf_db_bind_int64(st, 1, rowid);
    tf_db_bind_int64(st, 2, (int64_t)pos + 1);
    tf_db_bind_int64(st, 3, (int64_t)n);
    if (tf_db_step(st) == TF_DB_ROW &&
        (size_t)tf_db_column_bytes(st, 0) == n) {
        if (n)
            memcpy(dst, tf_db_column_blob(st, 0), n);
        rc = 0;
    }
    tf_db_finalize(st);
    return rc;
}

/* --- rebuild --- */

static char *col_dup(tf_dbst_t *st, int i)
{
    const char *t = (const char *)tf_db_column_text(st, i);
    return t && *t ? strdup(t) : NULL;
}

void tf_q_build_source_clear(tf_q_build_source_t *s)
{
    free(s->revision);
    free(s->properties);
    free(s->tests);
    free(s->patch_sha256);
    free(s->changes);
    memset(s, 0, sizeof(*s));
}

int tf_q_reusable_build(tf_db_t *db, const char *builder,
                        const char *revision, const char *patch_sha256,
                        const char *tests, const char *properties,
                        const char *recipe, uint64_t *build_id)
{
    tf_dbst_t *st = NULL;
    *build_id = 0;
    /* No recipe: nothing is known to run the same. */
    if (!recipe || !*recipe)
        return 0;
    /* The requests by builder and revision (build_requests_by_revision),
     * each one's builds by builds_by_request. */
    int rc = prep(db,
                  "SELECT b.id FROM build_requests r JOIN builds b "
                  "ON b.request_id = r.id WHERE r.builder = ?1 "
                  "AND r.revision = ?2 AND coalesce(r.patch_sha256, '') = ?3 "
                  "AND r.tests = ?4 AND r.properties = ?5 AND r.reused = 0 "
                  "AND b.result = 0 AND b.finished_ms IS NOT NULL "
                  "AND b.recipe = ?6 "
                  "ORDER BY b.id DESC LIMIT 1",
                  &st);
    if (rc)
        return rc;
    tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
    tf_db_bind_text(st, 2, revision, -1, TF_DB_TRANSIENT);
    tf_db_bind_text(st, 3, patch_sha256 ? patch_sha256 : "", -1,
                      TF_DB_TRANSIENT);
    tf_db_bind_text(st, 4, tests ? tests : "[]", -1, TF_DB_TRANSIENT);
    tf_db_bind_text(st, 5, properties ? properties : "{}", -1,
                      TF_DB_TRANSIENT);
    tf_db_bind_text(st, 6, recipe, -1, TF_DB_TRANSIENT);
    if (tf_db_step(st) == TF_DB_ROW)
        *build_id = (uint64_t)tf_db_column_int64(st, 0);
    tf_db_finalize(st);
    return 0;
}

int tf_q_build_source(tf_db_t *db, uint64_t build_id,
                      tf_q_build_source_t *out)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db,
                  "SELECT b.builder, b.number, "
                  "coalesce(nullif(b.revision, ''), b.got_revision), "
                  "r.properties, r.tests, r.patch_sha256, "
                  "r.patch_size, r.owner FROM builds b LEFT JOIN "
                  "build_requests r ON r.id = b.request_id "
                  "WHERE b.id = ?1",
                  &st);
    memset(out, 0, sizeof(*out));
    if (rc)
        return rc;
    tf_db_bind_int64(st, 1, (int64_t)build_id);
    if (tf_db_step(st) != TF_DB_ROW) {
        rc = TF_ENOENT;
        goto out;
    }
    const char *builder = (const char *)tf_db_column_text(st, 0);
    const char *owner = (const char *)tf_db_column_text(st, 7);
    snprintf(out->builder, sizeof(out->builder), "%s", builder ? builder : "");
    snprintf(out->owner, sizeof(out->owner), "%s", owner ? owner : "");
    out->number = (uint64_t)tf_db_column_int64(st, 1);
    out->revision = col_dup(st, 2);
    out->properties = col_dup(st, 3);
    out->tests = col_dup(st, 4);
    out->patch_sha256 = col_dup(st, 5);
    out->patch_size = (uint64_t)tf_db_column_int64(st, 6);
    tf_db_finalize(st);
    st = NULL;
    if ((rc = prep(db,
                   "SELECT change_id FROM build_changes WHERE "
                   "build_id = ?1 ORDER BY change_id",
                   &st)))
        goto out;
    tf_db_bind_int64(st, 1, (int64_t)build_id);
    while (tf_db_step(st) == TF_DB_ROW) {
        uint64_t *v = realloc(out->changes, (out->nchanges + 1) * sizeof(*v));
        if (!v) {
            rc = TF_ENOMEM;
            goto out;
        }
        out->changes = v;
        v[out->nchanges++] = (uint64_t)tf_db_column_int64(st, 0);
    }
    rc = 0;
out:
    tf_db_finalize(st);
    if (rc)
        tf_q_build_source_clear(out);
    return rc;
}

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
static int wf_keys(tf_db_t *db, const char *builder, const char *kind,
                   int64_t before, int64_t before_id, unsigned want,
                   wf_key_t *keys, size_t *n)
{
    tf_dbst_t *st = NULL;
    const char *sql =
        builder ? "SELECT created_ms, id FROM builds WHERE builder = ?4 AND "
                  "(created_ms < ?1 OR (created_ms = ?1 AND id < ?2)) "
                  "AND (?5 IS NULL OR kind = ?5) "
                  "ORDER BY created_ms DESC, id DESC LIMIT ?3"
                : "SELECT created_ms, id FROM builds WHERE "
                  "(created_ms < ?1 OR (created_ms = ?1 AND id < ?2)) "
                  "AND (?5 IS NULL OR kind = ?5) "
                  "ORDER BY created_ms DESC, id DESC LIMIT ?3";
    if (tf_db_prepare_v2(db, sql, -1, &st, NULL) != TF_DB_OK)
        return TF_ESTORE;
    tf_db_bind_int64(st, 1, before);
    tf_db_bind_int64(st, 2, before_id);
    tf_db_bind_int64(st, 3, want);
    if (builder)
        tf_db_bind_text(st, 4, builder, -1, TF_DB_STATIC);
    if (kind)
        tf_db_bind_text(st, 5, kind, -1, TF_DB_STATIC);
    while (tf_db_step(st) == TF_DB_ROW) {
        keys[*n].created_ms = tf_db_column_int64(st, 0);
        keys[*n].id = tf_db_column_int64(st, 1);
        (*n)++;
    }
    tf_db_finalize(st);
    return 0;
}

int tf_q_waterfall(tf_db_t *db, const char *base_url, const char *kind,
                   int64_t before, int64_t before_id, unsigned limit,
                   char (*builders)[TF_NAME_MAX + 1],
                   size_t nbuilders, json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = TF_ESTORE;
    /* The page's keys first: one query per chosen builder (each one page
     * long, by the builder's index), merged; then the rows by id. */
    size_t cap = (nbuilders ? nbuilders : 1) * ((size_t)limit + 1), nk = 0;
    wf_key_t *keys = malloc(cap * sizeof(*keys));
    if (!keys)
        return TF_ENOMEM;
    rc = 0;
    if (nbuilders == 0) {
        rc = wf_keys(db, NULL, kind, before, before_id, limit + 1, keys,
                     &nk);
    } else {
        for (size_t i = 0; i < nbuilders; i++) {
            bool dup = false;
            for (size_t k = 0; k < i && !dup; k++)
                dup = strcmp(builders[k], builders[i]) == 0;
            if (!dup && (rc = wf_keys(db, builders[i], kind, before,
                                      before_id, limit + 1, keys, &nk)) != 0)
                break;
        }
        qsort(keys, nk, sizeof(*keys), wf_key_cmp);
    }
    if (rc)
        goto out;
    rc = TF_ESTORE;
    bool more = nk > limit;
    unsigned n = more ? limit : (unsigned)nk;
    if (tf_db_prepare_v2(
            db,
            "SELECT b.id, b.builder, b.number, b.state, b.result, "
            "b.created_ms, b.started_ms, b.finished_ms, b.reason, b.slave, "
            "b.kind, b.request_id, nullif(r.owner, ''), "
            "(SELECT author FROM try_jobs WHERE id = r.job_id), "
            /* Each author once, by their first change; in the common
             * dialect of db.h (group_concat is string_agg on PostgreSQL,
             * which takes no ORDER BY outside a DISTINCT's list). */
            "(SELECT group_concat(author, ', ') FROM (SELECT c.author AS "
            "author, min(c.id) AS first FROM build_changes bc JOIN changes "
            "c ON c.id = bc.change_id WHERE bc.build_id = b.id GROUP BY "
            "c.author ORDER BY first) AS authors) "
            "FROM builds b LEFT JOIN build_requests r ON r.id = b.request_id "
            "WHERE b.id = ?1",
            -1, &st, NULL) != TF_DB_OK)
        goto out;
    json_t *builds = json_array();
    for (unsigned k = 0; k < n; k++) {
        tf_db_bind_int64(st, 1, keys[k].id);
        if (tf_db_step(st) != TF_DB_ROW) {
            tf_db_reset(st);
            continue;
        }
        static const tf_col_t cols[] = {
            {"id", TF_COL_INT},          {"builder", TF_COL_TEXT},
            {"number", TF_COL_INT},      {"state", TF_COL_TEXT},
            {"result", TF_COL_RESULT},   {"created_ms", TF_COL_INT},
            {"started_ms", TF_COL_INT},  {"finished_ms", TF_COL_INT},
            {"reason", TF_COL_TEXT},     {"slave", TF_COL_TEXT},
            {"kind", TF_COL_TEXT},       {"request_id", TF_COL_INT},
            {"owner", TF_COL_TEXT},      {NULL, TF_COL_SKIP},
        };
        long long id = (long long)tf_db_column_int64(st, 0);
        json_t *b = tf_row_set(json_object(), st, 0, cols);
        /* Who the box is about: the try job's author, else the authors
         * of the changes it is the first to build. */
        json_object_set_new(b, "author",
                            tf_db_column_type(st, 13) != TF_DB_NULL
                                ? tf_col_text(st, 13)
                                : tf_col_text(st, 14));
        char url[600];
        snprintf(url, sizeof(url), "%sapi/v1/builds/%lld", base_url, id);
        json_object_set_new(b, "url", json_string(url));
        json_object_set_new(b, "page_url", j_page(base_url, "builds/%lld", id));
        json_object_set_new(b, "steps", json_array());
        json_array_append_new(builds, b);
        tf_db_reset(st);
    }
    int64_t last_created = n ? keys[n - 1].created_ms : 0;
    int64_t last_id = n ? keys[n - 1].id : 0;
    tf_db_finalize(st);
    st = NULL;
    /* Steps of the page's builds, by primary key. */
    if (n > 0 &&
        tf_db_prepare_v2(db,
                           "SELECT idx, name, state, result, started_ms, "
                           "finished_ms, text FROM steps WHERE build_id = ?1 "
                           "ORDER BY idx",
                           -1, &st, NULL) == TF_DB_OK) {
        size_t i;
        json_t *b;
        json_array_foreach(builds, i, b)
        {
            json_t *steps = json_object_get(b, "steps");
            tf_db_bind_int64(st, 1,
                               json_integer_value(json_object_get(b, "id")));
            static const tf_col_t cols[] = {
                {"index", TF_COL_INT},       {"name", TF_COL_TEXT},
                {"state", TF_COL_TEXT},      {"result", TF_COL_RESULT},
                {"started_ms", TF_COL_INT},  {"finished_ms", TF_COL_INT},
                {"text", TF_COL_TEXT},       {NULL, TF_COL_SKIP},
            };
            while (tf_db_step(st) == TF_DB_ROW)
                json_array_append_new(steps,
                                      tf_row_set(json_object(), st, 0, cols));
            tf_db_reset(st);
        }
        tf_db_finalize(st);
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
static json_t *console_change_row(tf_dbst_t *st, tf_dbst_t *bs,
                                  const char *base_url)
{
    long long id = (long long)tf_db_column_int64(st, 0);
    const char *msg = (const char *)tf_db_column_text(st, 1);
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
    json_object_set_new(row, "page_url", j_page(base_url, "changes/%lld", id));
    json_t *builds = json_object();
    tf_db_bind_int64(bs, 1, id);
    while (tf_db_step(bs) == TF_DB_ROW) {
        long long bid = (long long)tf_db_column_int64(bs, 1);
        char burl[600];
        snprintf(burl, sizeof(burl), "%sapi/v1/builds/%lld", base_url, bid);
        json_t *cell = json_object();
        json_object_set_new(cell, "build_id", json_integer(bid));
        json_object_set_new(cell, "number", tf_col_int(bs, 2));
        json_object_set_new(cell, "state", tf_col_text(bs, 3));
        json_object_set_new(cell, "result", tf_col_result(bs, 4));
        json_object_set_new(cell, "url", json_string(burl));
        json_object_set_new(cell, "page_url",
                            j_page(base_url, "builds/%lld", bid));
        /* Ordered by build id: the newest build of a builder wins. */
        json_object_set_new(builds, (const char *)tf_db_column_text(bs, 0),
                            cell);
    }
    tf_db_reset(bs);
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
static void console_merge_changes(tf_db_t *db, const char *base_url,
                                  tf_console_cursor_t *c, unsigned limit,
                                  json_t *rows, bool *more)
{
    tf_dbst_t *st = NULL, *bs = NULL;
    json_t **all = NULL;
    size_t njobs = json_array_size(rows), n = 0;
    *more = false;
    all = calloc(njobs + limit + 2, sizeof(*all));
    if (!all)
        return;
    for (size_t i = 0; i < njobs; i++)
        all[n++] = json_incref(json_array_get(rows, i));
    if (tf_db_prepare_v2(db,
                           "SELECT id, message, author, email, created_ms, "
                           "revision, committer_ms FROM changes "
                           "WHERE created_ms < ?1 OR (created_ms = ?1 AND "
                           "id < ?3) ORDER BY created_ms DESC, id DESC "
                           "LIMIT ?2",
                           -1, &st, NULL) == TF_DB_OK &&
        tf_db_prepare_v2(db,
                           "SELECT b.builder, b.id, b.number, b.state, "
                           "b.result FROM build_changes bc JOIN builds b ON "
                           "b.id = bc.build_id WHERE bc.change_id = ?1 "
                           "ORDER BY b.id",
                           -1, &bs, NULL) == TF_DB_OK) {
        tf_db_bind_int64(st, 1, c->before);
        /* Only try jobs asked for: no change rows. */
        tf_db_bind_int64(st, 2, c->kind && strcmp(c->kind, "try") == 0
                                      ? 0
                                      : (int64_t)limit + 1);
        tf_db_bind_int64(st, 3, c->before_change);
        while (tf_db_step(st) == TF_DB_ROW)
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
    tf_db_finalize(st);
    tf_db_finalize(bs);
}

int tf_q_console(tf_db_t *db, const char *base_url,
                 const tf_console_cursor_t *cursor, unsigned limit,
                 json_t **out)
{
    tf_dbst_t *st = NULL, *bs = NULL;
    int rc = TF_ESTORE;
    if (tf_db_prepare_v2(db,
                           "SELECT id, description, author, email, "
                           "submitted_ms, state, result FROM try_jobs "
                           "WHERE submitted_ms < ?1 OR (submitted_ms = ?1 "
                           "AND id < ?3) "
                           "ORDER BY submitted_ms DESC, id DESC LIMIT ?2",
                           -1, &st, NULL) != TF_DB_OK ||
        tf_db_prepare_v2(db,
                           "SELECT r.builder, b.id, b.number, b.state, "
                           "b.result, r.state, r.result FROM build_requests r "
                           "LEFT JOIN builds b ON b.id = r.build_id "
                           "WHERE r.job_id = ?1",
                           -1, &bs, NULL) != TF_DB_OK)
        goto out;
    tf_console_cursor_t c = *cursor;
    tf_db_bind_int64(st, 1, c.before);
    /* Only continuous builds asked for: no try job rows. */
    tf_db_bind_int64(st, 2, c.kind && strcmp(c.kind, "ci") == 0
                                  ? 0
                                  : (int64_t)limit + 1);
    tf_db_bind_int64(st, 3, c.before_job);
    json_t *rows = json_array();
    bool more = false;
    while (tf_db_step(st) == TF_DB_ROW) {
        long long id = (long long)tf_db_column_int64(st, 0);
        char title[200], url[600];
        const char *desc = (const char *)tf_db_column_text(st, 1);
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
        json_object_set_new(row, "page_url", j_page(base_url, "jobs/%lld", id));
        json_t *builds = json_object();
        tf_db_bind_int64(bs, 1, id);
        while (tf_db_step(bs) == TF_DB_ROW) {
            json_t *cell = json_object();
            bool has_build = tf_db_column_type(bs, 1) != TF_DB_NULL;
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
                         (long long)tf_db_column_int64(bs, 1));
                json_object_set_new(cell, "url", json_string(burl));
                json_object_set_new(
                    cell, "page_url",
                    j_page(base_url, "builds/%lld",
                           (long long)tf_db_column_int64(bs, 1)));
            } else {
                json_object_set_new(cell, "url", json_null());
                json_object_set_new(cell, "page_url", json_null());
            }
            json_object_set_new(builds,
                                (const char *)tf_db_column_text(bs, 0),
                                cell);
        }
        tf_db_reset(bs);
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
    tf_db_finalize(st);
    tf_db_finalize(bs);
    return rc;
}

/* --- committers --- */

int tf_user_by_token(tf_db_t *db, const char *token_sha256, tf_user_t *out)
{
    tf_dbst_t *st = NULL;
    int rc = TF_ESTORE, s;

    if (tf_db_prepare_v2(db,
                         "SELECT id, email, name FROM users "
                         "WHERE token_sha256 = ?1",
                         -1, &st, NULL) != TF_DB_OK)
        return rc;
    tf_db_bind_text(st, 1, token_sha256, -1, TF_DB_TRANSIENT);
    s = tf_db_step(st);
    if (s == TF_DB_ROW) {
        out->id = tf_db_column_int64(st, 0);
        snprintf(out->email, sizeof(out->email), "%s",
                 (const char *)tf_db_column_text(st, 1));
        snprintf(out->name, sizeof(out->name), "%s",
                 (const char *)tf_db_column_text(st, 2));
        rc = 0;
    } else if (s == TF_DB_DONE) {
        rc = TF_ENOENT;
    }
    tf_db_finalize(st);
    return rc;
}
