/*
 * q_tests.h - reads of the per-test results (issue 12): a build's tests
 * (failing first), one test's history on a builder, a builder's failing
 * and flaky tests, and for a try build whether each failure is new.
 *
 * Like queries.h, each function reads rows on a read-only connection and
 * builds plain values, so it runs on a thread-pool thread (the API) or
 * the mail sender's thread (mail/compose.c) alike.
 *
 * "New or old" (docs/committers.md): a failing test of a try build is
 * also failing without the patch when the reference build failed it: the
 * same builder's latest finished continuous build that reported test
 * results, at the job's base revision or newer (from the first
 * continuous build of the base on; when none built it, from the first
 * whose blamelist holds a change recorded at or after the base).
 * A try build with no such build has no reference and all its failures
 * count as new. When the builder reran the failed try build without its
 * patch (retry_without_patch), that rerun is the reference instead.
 */
#ifndef TF_Q_TESTS_H
#define TF_Q_TESTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include "store/db.h"

#include "store/store_sqlite.h"

#define TF_Q_TESTS_MAX_LIMIT 5000   /* tests in one answer */
#define TF_Q_EXCERPT_LINES 40       /* log lines shown with a failure */
#define TF_Q_EXCERPT_BYTES 4096     /* bytes of those lines */

/* Status filter bits for tf_q_build_tests. */
#define TF_Q_ST_PASS 1u
#define TF_Q_ST_FAIL 2u
#define TF_Q_ST_SKIP 4u
#define TF_Q_ST_FLAKY 8u
#define TF_Q_ST_ALL 15u

/* The bit of a status name ("fail"), or 0. */
unsigned tf_q_status_bit(const char *name);

/* A failing (or flaky) test as the mail and tf-try show it. Strings are
 * borrowed for the visitor call. */
typedef struct tf_q_failed_test {
    unsigned step;
    const char *step_name;
    const char *suite, *name, *status, *message;
    uint32_t attempts;
    bool has_log;
    uint64_t log_line, log_lines;
    const char *excerpt;  /* the test's log lines, cleaned; "" when none */
    bool is_try;          /* the build is a try job's */
    bool known;           /* try: also failing without the patch */
    uint64_t known_build; /* the reference build that failed it */
} tf_q_failed_test_t;

/* What a build's failures amount to. */
typedef struct tf_q_test_counts {
    uint64_t pass, fail, skip, flaky;
    bool is_try;
    bool has_reference;     /* try: a reference build was found */
    uint64_t reference_build;
    uint64_t new_failures;  /* try: failures the reference did not have */
} tf_q_test_counts_t;

/* Calls visit for each failing test of build_id ("fail" first, then
 * "flaky" when with_flaky), at most max of them, after filling *counts
 * (may be NULL). visit returning non-zero stops the walk with that code.
 * TF_ENOENT for an unknown build. */
int tf_q_failed_tests(tf_db_t *db, uint64_t build_id, unsigned max,
                      bool with_flaky, tf_q_test_counts_t *counts,
                      int (*visit)(void *arg, const tf_q_failed_test_t *t),
                      void *arg);

/* A build's test summary as a try job's answer carries it:
 * {"total", "pass", "fail", "skip", "flaky", "new_failures" (try: the
 * failures the reference build did not have), "reference_build" (id or
 * null), "url"}; null when the build reported no tests. */
json_t *tf_q_tests_summary(tf_db_t *db, const char *base_url,
                           uint64_t build_id);

/* GET /api/v1/builds/{id}/tests: the build's tests, failing first
 * ("fail", "flaky", "skip", "pass"), those whose status bit is in mask,
 * at most limit. *out: {"build_id", "builder", "try", "counts",
 * "reference_build", "new_failures", "tests": [...], "truncated"}.
 * TF_ENOENT for an unknown build. */
int tf_q_build_tests(tf_db_t *db, const char *base_url, uint64_t build_id,
                     unsigned mask, unsigned limit, json_t **out);

/* GET /api/v1/builders/{name}/tests/history: the test (suite, name) in
 * the builder's last limit builds that ended, newest first, with its
 * status in each (null when the build did not report it).
 * TF_ENOENT for an unknown builder. */
int tf_q_test_history(tf_db_t *db, const char *base_url, const char *builder,
                      const char *suite, const char *name, unsigned limit,
                      json_t **out);

/* GET /api/v1/builders/{name}/tests: the tests failing in the builder's
 * latest finished continuous build with test results, and the tests that
 * were flaky in its last `last` continuous builds (how often, and the
 * latest such build). TF_ENOENT for an unknown builder. */
int tf_q_builder_tests(tf_db_t *db, const char *base_url,
                       const char *builder, unsigned last, json_t **out);

#endif
