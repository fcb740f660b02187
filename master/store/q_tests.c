/*
 * q_tests.c - reads of the per-test results (q_tests.h).
 *
 * Rows come from test_results (store_schema.c, migration 6), whose status
 * already holds the build's flaky rule, so reads never merge steps except
 * for a test's history, where a build that ran a test in several steps
 * shows its worst status (fail, flaky, pass, skip).
 *
 * Every answer is capped: tests per answer (TF_Q_TESTS_MAX_LIMIT), lines
 * and bytes of a failure's log excerpt (TF_Q_EXCERPT_*), builds of a
 * history (the caller's limit, checked by the API).
 */
#include "store/q_tests.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "result.h"
#include "store/queries.h"
#include "tf_err.h"
#include "utf8.h"

/* Orders statuses failing first. */
#define STATUS_ORDER                                                           \
    "CASE t.status WHEN 'fail' THEN 0 WHEN 'flaky' THEN 1 "                    \
    "WHEN 'skip' THEN 2 ELSE 3 END"

static const char *const status_names[] = {"pass", "fail", "skip", "flaky"};

unsigned tf_q_status_bit(const char *name)
{
    for (unsigned i = 0; name && i < 4; i++)
        if (strcmp(name, status_names[i]) == 0)
            return 1u << i;
    return 0;
}

static json_t *url_of(const char *base, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static json_t *url_of(const char *base, const char *fmt, ...)
{
    char path[512], url[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    snprintf(url, sizeof(url), "%s%s", base, path);
    return json_string(url);
}

static int prep(tf_db_t *db, const char *sql, tf_dbst_t **st)
{
    return tf_db_prepare_v2(db, sql, -1, st, NULL) == TF_DB_OK ? 0
                                                                   : TF_ESTORE;
}

/* ------------------------------------------------------------------ */
/* The build and its reference                                         */
/* ------------------------------------------------------------------ */

typedef struct build_info {
    char builder[TF_NAME_MAX + 1];
    bool is_try;
    bool has_reference;
    bool reference_without_patch; /* the job's own rerun without the patch */
    uint64_t reference;
    uint64_t reference_number;
} build_info_t;

/* The finished rerun of try build id without its patch
 * (retry_without_patch), or 0: the rerun requests by
 * build_requests_without_patch, their builds by builds_by_request
 * (migration 9). */
static uint64_t rerun_without_patch(tf_db_t *db, uint64_t id,
                                    uint64_t *number)
{
    tf_dbst_t *st = NULL;
    uint64_t found = 0;
    if (prep(db,
             "SELECT b.id, b.number FROM build_requests r JOIN builds b "
             "ON b.request_id = r.id WHERE r.without_patch_of = ?1 "
             "AND b.finished_ms IS NOT NULL AND b.result IS NOT NULL "
             "ORDER BY b.id DESC LIMIT 1",
             &st))
        return 0;
    tf_db_bind_int64(st, 1, (int64_t)id);
    if (tf_db_step(st) == TF_DB_ROW) {
        found = (uint64_t)tf_db_column_int64(st, 0);
        *number = (uint64_t)tf_db_column_int64(st, 1);
    }
    tf_db_finalize(st);
    return found;
}

/* One integer from sql with up to two text parameters and one integer
 * (?1, ?2, ?3), or 0 when there is no row or it is NULL. */
static int64_t one_int(tf_db_t *db, const char *sql, const char *t1,
                       const char *t2, int64_t i3)
{
    tf_dbst_t *st = NULL;
    int64_t v = 0;
    if (prep(db, sql, &st))
        return 0;
    if (t1)
        tf_db_bind_text(st, 1, t1, -1, TF_DB_TRANSIENT);
    if (t2)
        tf_db_bind_text(st, 2, t2, -1, TF_DB_TRANSIENT);
    tf_db_bind_int64(st, 3, i3);
    if (tf_db_step(st) == TF_DB_ROW)
        v = tf_db_column_int64(st, 0);
    tf_db_finalize(st);
    return v;
}

/* The latest finished continuous build of builder that reported test
 * results, at base or newer (base NULL: the latest such build); 0 when
 * none. "At base or newer": from the first continuous build of base on,
 * or, when none built it, from the first whose blamelist holds a change
 * recorded at or after base's. The floor walks the builder's continuous
 * builds (builds_by_builder_kind; revisions are not indexed), finds the
 * change by revision (changes_by_revision, migration 9) and the
 * builder's builds' blamelists from it on; the answer walks the
 * builder's builds down from the newest. So the cost grows with the
 * builder's history, not with the farm's changes. */
static uint64_t reference_build(tf_db_t *db, const char *builder,
                                const char *base, uint64_t *number)
{
    tf_dbst_t *st = NULL;
    uint64_t id = 0;
    int64_t floor = 0;
    if (base && *base) {
        floor = one_int(db,
                        "SELECT min(b.id) FROM builds b "
                        "WHERE b.builder = ?1 AND b.kind = 'ci' "
                        "AND (b.got_revision = ?2 OR b.revision = ?2)",
                        builder, base, 0);
        if (!floor) {
            int64_t change = one_int(db,
                                     "SELECT min(id) FROM changes "
                                     "WHERE revision = ?2",
                                     NULL, base, 0);
            if (change)
                floor = one_int(db,
                                "SELECT min(bc.build_id) FROM build_changes "
                                "bc JOIN builds b ON b.id = bc.build_id "
                                "WHERE bc.change_id >= ?3 "
                                "AND b.builder = ?1",
                                builder, NULL, change);
        }
        if (!floor)
            return 0;
    }
    if (prep(db,
             "SELECT b.id, b.number FROM builds b "
             "WHERE b.builder = ?1 AND b.kind = 'ci' "
             "AND b.state = 'finished' AND b.id >= ?2 "
             "AND EXISTS (SELECT 1 FROM test_results t "
             "            WHERE t.build_id = b.id) "
             "ORDER BY b.id DESC LIMIT 1",
             &st))
        return 0;
    tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
    tf_db_bind_int64(st, 2, floor);
    if (tf_db_step(st) == TF_DB_ROW) {
        id = (uint64_t)tf_db_column_int64(st, 0);
        *number = (uint64_t)tf_db_column_int64(st, 1);
    }
    tf_db_finalize(st);
    return id;
}

/* Fills bi for build_id (its reference when it is a try build with a
 * failing test), or TF_ENOENT. */
static int build_info(tf_db_t *db, uint64_t build_id, build_info_t *bi)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db,
                  "SELECT b.builder, r.job_id, j.base_revision, "
                  "r.without_patch_of, EXISTS (SELECT 1 FROM test_results t "
                  "WHERE t.build_id = b.id AND t.status = 'fail') "
                  "FROM builds b "
                  "LEFT JOIN build_requests r ON r.id = b.request_id "
                  "LEFT JOIN try_jobs j ON j.id = r.job_id WHERE b.id = ?1",
                  &st);
    if (rc)
        return rc;
    memset(bi, 0, sizeof(*bi));
    tf_db_bind_int64(st, 1, (int64_t)build_id);
    rc = TF_ENOENT;
    if (tf_db_step(st) == TF_DB_ROW) {
        const char *b = (const char *)tf_db_column_text(st, 0);
        snprintf(bi->builder, sizeof(bi->builder), "%s", b ? b : "");
        /* A rerun without the patch is a reference, not a try build. */
        bi->is_try = tf_db_column_type(st, 1) != TF_DB_NULL &&
                     tf_db_column_type(st, 3) == TF_DB_NULL;
        /* The reference is looked up only when there is a failure to
         * mark: a job's answer asks for every build's summary. */
        if (bi->is_try && tf_db_column_int(st, 4)) {
            const char *base = (const char *)tf_db_column_text(st, 2);
            bi->reference = rerun_without_patch(db, build_id,
                                                &bi->reference_number);
            bi->reference_without_patch = bi->reference != 0;
            if (!bi->reference)
                bi->reference = reference_build(db, bi->builder, base,
                                                &bi->reference_number);
            bi->has_reference = bi->reference != 0;
        }
        rc = 0;
    }
    tf_db_finalize(st);
    return rc;
}

/* Whether the reference build failed the test. */
static bool reference_failed(tf_dbst_t *ref, uint64_t reference,
                             const char *suite, const char *name)
{
    bool failed;
    tf_db_reset(ref);
    tf_db_bind_int64(ref, 1, (int64_t)reference);
    tf_db_bind_text(ref, 2, suite, -1, TF_DB_TRANSIENT);
    tf_db_bind_text(ref, 3, name, -1, TF_DB_TRANSIENT);
    failed = tf_db_step(ref) == TF_DB_ROW;
    tf_db_reset(ref);
    return failed;
}

static const char SQL_REF_FAILED[] =
    "SELECT 1 FROM test_results WHERE build_id = ?1 AND suite = ?2 "
    "AND name = ?3 AND status = 'fail' LIMIT 1";

static void counts_of(tf_db_t *db, uint64_t build_id, tf_q_test_counts_t *c)
{
    tf_dbst_t *st = NULL;
    if (prep(db,
             "SELECT status, count(*) FROM test_results WHERE build_id = ?1 "
             "GROUP BY status",
             &st))
        return;
    tf_db_bind_int64(st, 1, (int64_t)build_id);
    while (tf_db_step(st) == TF_DB_ROW) {
        const char *s = (const char *)tf_db_column_text(st, 0);
        uint64_t n = (uint64_t)tf_db_column_int64(st, 1);
        switch (tf_q_status_bit(s)) {
        case TF_Q_ST_PASS:
            c->pass = n;
            break;
        case TF_Q_ST_FAIL:
            c->fail = n;
            break;
        case TF_Q_ST_SKIP:
            c->skip = n;
            break;
        case TF_Q_ST_FLAKY:
            c->flaky = n;
            break;
        }
    }
    tf_db_finalize(st);
}

/* The number of the build's failures the reference build did not have. */
static uint64_t count_new(tf_db_t *db, uint64_t build_id,
                          const build_info_t *bi, uint64_t fails)
{
    tf_dbst_t *st = NULL;
    uint64_t n;
    if (!bi->has_reference)
        return fails;
    if (prep(db,
             "SELECT count(*) FROM test_results t WHERE t.build_id = ?1 "
             "AND t.status = 'fail' AND NOT EXISTS (SELECT 1 FROM "
             "test_results u WHERE u.build_id = ?2 AND u.suite = t.suite "
             "AND u.name = t.name AND u.status = 'fail')",
             &st))
        return fails;
    tf_db_bind_int64(st, 1, (int64_t)build_id);
    tf_db_bind_int64(st, 2, (int64_t)bi->reference);
    n = tf_db_step(st) == TF_DB_ROW ? (uint64_t)tf_db_column_int64(st, 0)
                                       : fails;
    tf_db_finalize(st);
    return n;
}

/* ------------------------------------------------------------------ */
/* A failure's lines of the log                                        */
/* ------------------------------------------------------------------ */

/* The test's own lines of its step's log: from its first line, at most
 * min(lines, TF_Q_EXCERPT_LINES) lines and TF_Q_EXCERPT_BYTES bytes, as
 * valid UTF-8 (malloc'd; "" when the log holds nothing there; NULL when
 * out of memory). cache (the caller's, cleared by it) keeps the last
 * unpacked log block, so the failures of one step, which usually share a
 * block, unpack it once, not once per test. */
static char *test_excerpt(tf_db_t *db, uint64_t build_id, unsigned step,
                          uint64_t offset, uint64_t lines,
                          tf_logcache_t *cache)
{
    unsigned char buf[TF_Q_EXCERPT_BYTES];
    size_t got = 0, n = 0;
    uint64_t want = lines < TF_Q_EXCERPT_LINES ? lines : TF_Q_EXCERPT_LINES;
    if (tf_q_log_read(db, build_id, step, offset, offset + sizeof(buf),
                      sizeof(buf), buf, &got, cache))
        got = 0;
    for (uint64_t seen = 0; n < got && seen < want; seen++) {
        unsigned char *nl = memchr(buf + n, '\n', got - n);
        n = nl ? (size_t)(nl - buf) + 1 : got;
    }
    return tf_utf8_dup_lossy((const char *)buf, n, sizeof(buf));
}

/* ------------------------------------------------------------------ */
/* A build's tests                                                     */
/* ------------------------------------------------------------------ */

#define TEST_COLS                                                              \
    "t.step, s.name, t.suite, t.name, t.status, t.attempts, t.duration_ms, "   \
    "t.outcome, t.message, t.log_offset, t.log_line, t.log_lines "

static const char *col_str(tf_dbst_t *st, int c)
{
    const char *s = (const char *)tf_db_column_text(st, c);
    return s ? s : "";
}

int tf_q_failed_tests(tf_db_t *db, uint64_t build_id, unsigned max,
                      bool with_flaky, tf_q_test_counts_t *counts,
                      int (*visit)(void *arg, const tf_q_failed_test_t *t),
                      void *arg)
{
    build_info_t bi;
    tf_q_test_counts_t c = {0};
    tf_dbst_t *st = NULL, *ref = NULL;
    tf_logcache_t logs = {0};
    int rc = build_info(db, build_id, &bi);
    if (rc)
        return rc;
    counts_of(db, build_id, &c);
    c.is_try = bi.is_try;
    c.has_reference = bi.has_reference;
    c.reference_build = bi.reference;
    c.new_failures = bi.is_try ? count_new(db, build_id, &bi, c.fail) : 0;
    if (counts)
        *counts = c;
    if (!visit || !max)
        return 0;
    if ((rc = prep(db,
                   "SELECT " TEST_COLS "FROM test_results t LEFT JOIN steps s "
                   "ON s.build_id = t.build_id AND s.idx = t.step "
                   "WHERE t.build_id = ?1 AND (t.status = 'fail' OR "
                   "(?2 != 0 AND t.status = 'flaky')) ORDER BY " STATUS_ORDER
                   ", t.step, t.log_line, t.suite, t.name LIMIT ?3",
                   &st)) ||
        (bi.has_reference && (rc = prep(db, SQL_REF_FAILED, &ref))))
        goto out;
    tf_db_bind_int64(st, 1, (int64_t)build_id);
    tf_db_bind_int(st, 2, with_flaky ? 1 : 0);
    tf_db_bind_int64(st, 3, max);
    while (rc == 0 && tf_db_step(st) == TF_DB_ROW) {
        tf_q_failed_test_t t = {
            .step = (unsigned)tf_db_column_int(st, 0),
            .step_name = col_str(st, 1),
            .suite = col_str(st, 2),
            .name = col_str(st, 3),
            .status = col_str(st, 4),
            .attempts = (uint32_t)tf_db_column_int64(st, 5),
            .message = (const char *)tf_db_column_text(st, 8),
            .has_log = tf_db_column_type(st, 9) != TF_DB_NULL,
            .log_line = (uint64_t)tf_db_column_int64(st, 10),
            .log_lines = (uint64_t)tf_db_column_int64(st, 11),
            .is_try = bi.is_try,
        };
        char *ex = NULL;
        if (t.has_log)
            ex = test_excerpt(db, build_id, t.step,
                              (uint64_t)tf_db_column_int64(st, 9),
                              t.log_lines, &logs);
        t.excerpt = ex ? ex : "";
        if (ref && strcmp(t.status, "fail") == 0 &&
            reference_failed(ref, bi.reference, t.suite, t.name)) {
            t.known = true;
            t.known_build = bi.reference;
        }
        rc = visit(arg, &t);
        free(ex);
    }
out:
    tf_db_finalize(st);
    tf_db_finalize(ref);
    tf_logcache_clear(&logs);
    return rc;
}

static json_t *counts_json(const tf_q_test_counts_t *c)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "total",
                     (json_int_t)(c->pass + c->fail + c->skip + c->flaky),
                     "pass", (json_int_t)c->pass, "fail",
                     (json_int_t)c->fail, "skip", (json_int_t)c->skip,
                     "flaky", (json_int_t)c->flaky);
}

json_t *tf_q_tests_summary(tf_db_t *db, const char *base_url,
                           uint64_t build_id)
{
    tf_q_test_counts_t c = {0};
    if (tf_q_failed_tests(db, build_id, 0, false, &c, NULL, NULL) ||
        c.pass + c.fail + c.skip + c.flaky == 0)
        return json_null();
    json_t *o = counts_json(&c);
    json_object_set_new(o, "new_failures",
                        c.is_try ? json_integer((json_int_t)c.new_failures)
                                 : json_null());
    json_object_set_new(o, "reference_build",
                        c.has_reference
                            ? json_integer((json_int_t)c.reference_build)
                            : json_null());
    json_object_set_new(o, "url",
                        url_of(base_url, "api/v1/builds/%" PRIu64 "/tests",
                               build_id));
    return o;
}

int tf_q_build_tests(tf_db_t *db, const char *base_url, uint64_t build_id,
                     unsigned mask, unsigned limit, json_t **out)
{
    build_info_t bi;
    tf_q_test_counts_t c = {0};
    tf_dbst_t *st = NULL, *ref = NULL;
    tf_logcache_t logs = {0};
    json_t *tests = NULL;
    int rc = build_info(db, build_id, &bi);
    if (rc)
        return rc;
    counts_of(db, build_id, &c);
    if ((rc = prep(db,
                   "SELECT " TEST_COLS "FROM test_results t LEFT JOIN steps s "
                   "ON s.build_id = t.build_id AND s.idx = t.step "
                   "WHERE t.build_id = ?1 AND (((?2 & 1) != 0 AND t.status = 'pass') "
                   "OR ((?2 & 2) != 0 AND t.status = 'fail') "
                   "OR ((?2 & 4) != 0 AND t.status = 'skip') "
                   "OR ((?2 & 8) != 0 AND t.status = 'flaky')) ORDER BY "
                   STATUS_ORDER ", t.step, t.log_line, t.suite, t.name "
                   "LIMIT ?3",
                   &st)) ||
        (bi.has_reference && (rc = prep(db, SQL_REF_FAILED, &ref))))
        goto out;
    tf_db_bind_int64(st, 1, (int64_t)build_id);
    tf_db_bind_int(st, 2, (int)mask);
    tf_db_bind_int64(st, 3, (int64_t)limit + 1);
    tests = json_array();
    bool truncated = false;
    while (tf_db_step(st) == TF_DB_ROW) {
        if (json_array_size(tests) == limit) {
            truncated = true;
            break;
        }
        unsigned step = (unsigned)tf_db_column_int(st, 0);
        const char *status = col_str(st, 4);
        json_t *o = json_object();
        json_object_set_new(o, "step", json_integer(step));
        json_object_set_new(o, "step_name", json_string(col_str(st, 1)));
        json_object_set_new(o, "suite", json_string(col_str(st, 2)));
        json_object_set_new(o, "name", json_string(col_str(st, 3)));
        json_object_set_new(o, "status", json_string(status));
        json_object_set_new(o, "attempts", tf_col_int(st, 5));
        json_object_set_new(o, "duration_ms", tf_col_int(st, 6));
        json_object_set_new(o, "outcome", tf_col_text(st, 7));
        json_object_set_new(o, "message", tf_col_text(st, 8));
        bool failing = strcmp(status, "fail") == 0;
        if (tf_db_column_type(st, 9) != TF_DB_NULL) {
            uint64_t off = (uint64_t)tf_db_column_int64(st, 9);
            uint64_t line = (uint64_t)tf_db_column_int64(st, 10);
            uint64_t lines = (uint64_t)tf_db_column_int64(st, 11);
            json_t *log = json_pack(
                "{s:I, s:I, s:I}", "offset", (json_int_t)off, "line",
                (json_int_t)line, "lines", (json_int_t)lines);
            json_object_set_new(
                log, "url",
                url_of(base_url, "api/v1/builds/%" PRIu64 "/steps/%u/log",
                       build_id, step));
            if (failing || strcmp(status, "flaky") == 0) {
                char *ex = test_excerpt(db, build_id, step, off, lines,
                                        &logs);
                json_object_set_new(log, "excerpt",
                                    ex ? json_string(ex) : json_null());
                free(ex);
            }
            json_object_set_new(o, "log", log);
        } else {
            json_object_set_new(o, "log", json_null());
        }
        if (bi.is_try && failing) {
            bool known = ref && reference_failed(ref, bi.reference,
                                                 col_str(st, 2),
                                                 col_str(st, 3));
            json_object_set_new(o, "failure",
                                json_string(known ? "also_failing_without_"
                                                    "patch"
                                                  : "new"));
        }
        json_array_append_new(tests, o);
    }
    json_t *o = json_object();
    json_object_set_new(o, "build_id", json_integer((json_int_t)build_id));
    json_object_set_new(o, "builder", json_string(bi.builder));
    json_object_set_new(o, "try", json_boolean(bi.is_try));
    json_object_set_new(o, "counts", counts_json(&c));
    if (bi.is_try) {
        json_object_set_new(
            o, "reference_build",
            bi.has_reference
                ? json_pack("{s:I, s:I, s:o, s:b}", "id",
                            (json_int_t)bi.reference, "number",
                            (json_int_t)bi.reference_number, "url",
                            url_of(base_url, "api/v1/builds/%" PRIu64,
                                   bi.reference),
                            "without_patch", bi.reference_without_patch)
                : json_null());
        json_object_set_new(o, "new_failures",
                            json_integer((json_int_t)count_new(
                                db, build_id, &bi, c.fail)));
    } else {
        json_object_set_new(o, "reference_build", json_null());
        json_object_set_new(o, "new_failures", json_null());
    }
    json_object_set_new(o, "tests", tests);
    json_object_set_new(o, "truncated", json_boolean(truncated));
    tests = NULL;
    *out = o;
out:
    json_decref(tests);
    tf_db_finalize(st);
    tf_db_finalize(ref);
    tf_logcache_clear(&logs);
    return rc;
}

/* ------------------------------------------------------------------ */
/* A builder's tests                                                   */
/* ------------------------------------------------------------------ */

static int builder_exists(tf_db_t *db, const char *builder)
{
    tf_dbst_t *st = NULL;
    int rc = prep(db, "SELECT 1 FROM builders WHERE name = ?1", &st);
    if (rc)
        return rc;
    tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
    rc = tf_db_step(st) == TF_DB_ROW ? 0 : TF_ENOENT;
    tf_db_finalize(st);
    return rc;
}

int tf_q_test_history(tf_db_t *db, const char *base_url, const char *builder,
                      const char *suite, const char *name, unsigned limit,
                      json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = builder_exists(db, builder);
    if (rc)
        return rc;
    /* The builds first (newest `limit` that ended), then the test's rows
     * in them through the history index. */
    if ((rc = prep(db,
                   "SELECT b.id, b.number, b.result, b.finished_ms, "
                   "coalesce(b.got_revision, b.revision), "
                   "nullif(b.kind, 'ci'), "
                   "(SELECT t.status || '\037' || t.step || '\037' || "
                   "   coalesce(t.message, '') || '\037' || "
                   "   coalesce(t.duration_ms, -1) FROM test_results t "
                   " WHERE t.builder = ?1 AND t.suite = ?2 AND t.name = ?3 "
                   " AND t.build_id = b.id ORDER BY " STATUS_ORDER
                   " LIMIT 1) "
                   "FROM builds b WHERE b.builder = ?1 "
                   "AND b.finished_ms IS NOT NULL "
                   "ORDER BY b.id DESC LIMIT ?4",
                   &st)))
        return rc;
    tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
    tf_db_bind_text(st, 2, suite, -1, TF_DB_TRANSIENT);
    tf_db_bind_text(st, 3, name, -1, TF_DB_TRANSIENT);
    tf_db_bind_int64(st, 4, limit);
    json_t *builds = json_array();
    tf_q_test_counts_t c = {0};
    uint64_t absent = 0;
    while (tf_db_step(st) == TF_DB_ROW) {
        uint64_t id = (uint64_t)tf_db_column_int64(st, 0);
        json_t *o = json_object();
        json_object_set_new(o, "build_id", json_integer((json_int_t)id));
        json_object_set_new(o, "number", tf_col_int(st, 1));
        json_object_set_new(o, "url",
                            url_of(base_url, "api/v1/builds/%" PRIu64, id));
        json_object_set_new(o, "result", tf_col_result(st, 2));
        json_object_set_new(o, "finished_ms", tf_col_int(st, 3));
        json_object_set_new(o, "revision", tf_col_text(st, 4));
        json_object_set_new(o, "try", json_boolean(tf_db_column_type(
                                                       st, 5) != TF_DB_NULL));
        const char *packed = (const char *)tf_db_column_text(st, 6);
        if (!packed) {
            absent++;
            json_object_set_new(o, "status", json_null());
        } else {
            /* status US step US message US duration */
            const char *f[4] = {packed, "", "", ""};
            char *copy = strdup(packed);
            if (copy) {
                char *p = copy;
                for (int k = 0; k < 4 && p; k++) {
                    f[k] = p;
                    p = strchr(p, '\x1f');
                    if (p)
                        *p++ = '\0';
                }
            }
            unsigned bit = tf_q_status_bit(f[0]);
            c.pass += bit == TF_Q_ST_PASS;
            c.fail += bit == TF_Q_ST_FAIL;
            c.skip += bit == TF_Q_ST_SKIP;
            c.flaky += bit == TF_Q_ST_FLAKY;
            json_object_set_new(o, "status", json_string(f[0]));
            json_object_set_new(o, "step", json_integer(atoi(f[1])));
            json_object_set_new(o, "message",
                                *f[2] ? json_string(f[2]) : json_null());
            long long d = strtoll(f[3], NULL, 10);
            json_object_set_new(o, "duration_ms",
                                d >= 0 ? json_integer(d) : json_null());
            free(copy);
        }
        json_array_append_new(builds, o);
    }
    tf_db_finalize(st);
    json_t *counts = counts_json(&c);
    json_object_set_new(counts, "absent", json_integer((json_int_t)absent));
    *out = json_pack("{s:s, s:s, s:s, s:o, s:o}", "builder", builder, "suite",
                     suite, "name", name, "counts", counts, "builds", builds);
    return *out ? 0 : TF_ENOMEM;
}

int tf_q_builder_tests(tf_db_t *db, const char *base_url,
                       const char *builder, unsigned last, json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = builder_exists(db, builder);
    if (rc)
        return rc;
    /* The latest finished continuous build holding test results. */
    uint64_t latest = 0, number = 0;
    if ((rc = prep(db,
                   "SELECT b.id, b.number FROM builds b "
                   "WHERE b.builder = ?1 "
                   "AND b.kind = 'ci' AND b.finished_ms IS NOT NULL "
                   "AND EXISTS (SELECT 1 FROM test_results t "
                   "WHERE t.build_id = b.id) ORDER BY b.id DESC LIMIT 1",
                   &st)))
        return rc;
    tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
    if (tf_db_step(st) == TF_DB_ROW) {
        latest = (uint64_t)tf_db_column_int64(st, 0);
        number = (uint64_t)tf_db_column_int64(st, 1);
    }
    tf_db_finalize(st);
    st = NULL;
    json_t *failing = json_array();
    if (latest && !prep(db,
                        "SELECT t.step, t.suite, t.name, t.message FROM "
                        "test_results t WHERE t.build_id = ?1 AND "
                        "t.status = 'fail' ORDER BY t.step, t.log_line, "
                        "t.suite, t.name LIMIT ?2",
                        &st)) {
        tf_db_bind_int64(st, 1, (int64_t)latest);
        tf_db_bind_int(st, 2, TF_Q_TESTS_MAX_LIMIT);
        while (tf_db_step(st) == TF_DB_ROW) {
            json_t *o = json_object();
            json_object_set_new(o, "step", tf_col_int(st, 0));
            json_object_set_new(o, "suite", tf_col_text(st, 1));
            json_object_set_new(o, "name", tf_col_text(st, 2));
            json_object_set_new(o, "message", tf_col_text(st, 3));
            json_array_append_new(failing, o);
        }
        tf_db_finalize(st);
        st = NULL;
    }
    /* Flaky in the last `last` continuous builds that ended. */
    json_t *flaky = json_array();
    if (!prep(db,
              "WITH recent AS (SELECT b.id FROM builds b "
              "WHERE b.builder = ?1 AND b.kind = 'ci' "
              "AND b.finished_ms IS NOT NULL ORDER BY b.id DESC "
              "LIMIT ?2) "
              "SELECT t.suite, t.name, count(DISTINCT t.build_id), "
              "max(t.build_id) FROM test_results t JOIN recent "
              "ON recent.id = t.build_id WHERE t.status = 'flaky' "
              "GROUP BY t.suite, t.name ORDER BY 3 DESC, 4 DESC LIMIT ?3",
              &st)) {
        tf_db_bind_text(st, 1, builder, -1, TF_DB_TRANSIENT);
        tf_db_bind_int(st, 2, (int)last);
        tf_db_bind_int(st, 3, TF_Q_TESTS_MAX_LIMIT);
        while (tf_db_step(st) == TF_DB_ROW) {
            uint64_t lb = (uint64_t)tf_db_column_int64(st, 3);
            json_t *o = json_object();
            json_object_set_new(o, "suite", tf_col_text(st, 0));
            json_object_set_new(o, "name", tf_col_text(st, 1));
            json_object_set_new(o, "builds", tf_col_int(st, 2));
            json_object_set_new(o, "last_build_id",
                                json_integer((json_int_t)lb));
            json_object_set_new(o, "last_build_url",
                                url_of(base_url, "api/v1/builds/%" PRIu64,
                                       lb));
            json_array_append_new(flaky, o);
        }
        tf_db_finalize(st);
    }
    json_t *o = json_object();
    json_object_set_new(o, "builder", json_string(builder));
    json_object_set_new(o, "last", json_integer(last));
    json_object_set_new(
        o, "latest_build",
        latest ? json_pack("{s:I, s:I, s:o}", "id", (json_int_t)latest,
                           "number", (json_int_t)number, "url",
                           url_of(base_url, "api/v1/builds/%" PRIu64, latest))
               : json_null());
    json_object_set_new(o, "failing", failing);
    json_object_set_new(o, "flaky", flaky);
    *out = o;
    return 0;
}
