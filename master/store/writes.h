/*
 * writes.h - the write statements both engines run with the same SQL
 * (see writes.c): one copy of their text and of the values they bind,
 * as reads.h is one copy of the typed queries.
 *
 * The SQL is in the dialects' common subset (store/db.h): ?N
 * placeholders, which the PostgreSQL engine rewrites to $N when it
 * prepares a statement. What differs between the engines stays in each
 * engine: INSERT OR IGNORE against ON CONFLICT DO NOTHING, json_set,
 * the log chunk's insert (one statement with RETURNING on PostgreSQL),
 * retention's walks, and on PostgreSQL the guarded forms shared masters
 * run (a request's expected state, a build's owner) and the checks of
 * the rows they changed.
 *
 * Two kinds of thing:
 *
 *   - builders (tf__writes_*): they fill tf_sqlstmt_t records whose
 *     values point into the caller's vals array (and borrow the op's
 *     strings), for the engine to run in order on its write connection;
 *     tf__writes_op covers the operations both engines store alike from
 *     start to end, the others cover one step of an operation whose
 *     engine adds its own around it;
 *   - the SQL text of the statements the engines run inside their own
 *     logic (tf__sql_*), with static storage as the engines' statement
 *     caches (keyed by the text's address) need.
 *
 * Only the engines (store/sqlite.c, store/pg.c) include this. The
 * builders run on any thread and touch no connection; tf__writes_run
 * runs statements through the engine's own exec.
 */
#ifndef TF_STORE_WRITES_H
#define TF_STORE_WRITES_H

#include <stddef.h>

#include "store/engine.h"
#include "store/ops.h"
#include "store/store_sqlite.h"

/* The most statements, and values in all, of one builder below. */
#define TF_WRITES_MAX_STMTS 2
#define TF_WRITES_MAX_VALS 14

/* The statements of op when both engines store it the same way from
 * start to end: st[0..n) (at most TF_WRITES_MAX_STMTS), their values in
 * vals (at most TF_WRITES_MAX_VALS). Returns n, or 0 when the engine
 * applies op its own way. */
size_t tf__writes_op(const tf_op_t *op, tf_sqlstmt_t *st, tf_sqlval_t *vals);

/* An engine's way to run one statement on its write connection: 0, or
 * its own failure code (the message kept where the engine keeps it). */
typedef int (*tf_writes_exec_fn)(tf_engine_t *e, const char *sql,
                                 const tf_sqlval_t *vals, size_t nvals);

/* Runs st[0..n) in order through exec. Returns 0, or the first failure's
 * code (the statements after it are not run). Writer thread. */
int tf__writes_run(tf_engine_t *e, tf_writes_exec_fn exec,
                   const tf_sqlstmt_t *st, size_t n);

/* In an engine's apply functions: fills one statement with builder (its
 * arguments follow the statement and the values) and runs it on e
 * through exec; a failure returns its code from the calling function. */
#define TF__WRITES_EXEC(e, exec, builder, ...)                                 \
    do {                                                                       \
        tf_sqlstmt_t st_;                                                      \
        tf_sqlval_t v_[TF_WRITES_MAX_VALS];                                    \
        builder(&st_, v_, __VA_ARGS__);                                        \
        int r_ = tf__writes_run(e, exec, &st_, 1);                             \
        if (r_ != 0)                                                           \
            return r_;                                                         \
    } while (0)

/* The request's row of request_create (its changes are the engine's). */
void tf__writes_request_create(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                               const tf_op_request_create_t *o);

/* The state change of REQUEST_REQUEUE, _COLLAPSE, _CANCEL, _DONE or
 * _REUSED (kind; any other kind is DONE). A shared PostgreSQL master runs
 * its guarded form of the SQL with the same values. */
void tf__writes_request_end(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                            tf_op_kind_t kind, const tf_op_request_end_t *o);

/* build_create's rows after the build's own: step i's row (one per
 * step, after the build's), and once its blamelist is stored, the
 * request running and the builder's last build (returns n as
 * tf__writes_op). */
void tf__writes_build_step(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                           const tf_op_build_create_t *o, size_t i);
size_t tf__writes_build_started(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                                const tf_op_build_create_t *o);
/* The two statements of tf__writes_build_started apart, for an engine
 * that counts a run of build starts into their builders itself: the
 * request running, and n builds started on builder, last_id the last
 * (the same as n single ones in order: builds_total grows by n, and
 * last_build_id ends at the last). builder is borrowed. */
void tf__writes_build_request(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                              const tf_op_build_create_t *o);
void tf__writes_builder_builds(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                               const char *builder, uint64_t last_id,
                               unsigned n);

/* The step's row of step_finish and of step_force_end (sealing the log's
 * rest is the engine's). */
void tf__writes_step_finish(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                            const tf_op_step_finish_t *o);
void tf__writes_step_force_end(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                               const tf_op_step_force_end_t *o);

/* The row of test_result, stored with status (the op's, or "flaky" when
 * the engine's tf__sql_test_flaky changed a row). */
void tf__writes_test_result(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                            const tf_op_test_result_t *o, const char *status);

/* What build_finish stores after the build's own row: the builder's
 * summary when the build is complete, the slave's count. Returns n as
 * tf__writes_op. */
size_t tf__writes_build_finish_rest(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                                    const tf_op_build_finish_t *o);

/* USER_ADD or USER_REMOVE (kind): the committer's row, added unless
 * the address is known, or removed (whether a row changed is the
 * engine's to tell, o->changed). */
void tf__writes_user(tf_sqlstmt_t *st, tf_sqlval_t *vals, tf_op_kind_t kind,
                     const tf_op_user_t *o);

/* One change of changes_record (a known one is left as it is). */
void tf__writes_change_insert(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                              const tf_op_changes_record_t *o, size_t i);

/* Builds: the event chain (last_seq from ?3 to ?1: one row changed, or
 * none after a hole), a lone master's end of a build (a shared one's
 * names the owner), got_revision beside the property. */
extern const char tf__sql_build_seq[];
/* A step's row at its build's start (5 values, tf__writes_build_step's):
 * sqlite.c's runs of starts write their last steps with it. */
extern const char tf__sql_build_step[];
extern const char tf__sql_build_finish[];
extern const char tf__sql_build_got_revision[];
/* The flaky rule (ops.h, test_result): a pass turns the build's earlier
 * failures of the same test into flaky ones, and is flaky itself then. */
extern const char tf__sql_test_flaky[];

/* Log blocks (store/logblock.h): a step's sealed and total bytes, a
 * block's row, dropping the chunks it took, moving log_sealed, and the
 * next finished step (from ?1, ?2) whose log is not sealed whole. */
extern const char tf__sql_log_step[];
extern const char tf__sql_log_block_put[];
extern const char tf__sql_log_tail_drop[];
extern const char tf__sql_log_sealed[];
extern const char tf__sql_log_unsealed[];

/* A try job's end (also the op JOB_FINISH; PostgreSQL's job_settle). */
extern const char tf__sql_job_finish[];

/* Changes: a change's id, the poller's head after them. */
extern const char tf__sql_change_id[];
extern const char tf__sql_poller_head[];

/* Retention: the oldest build past a count (?2) or older than ?2, and
 * marking a build whose logs are gone. */
extern const char tf__sql_ret_by_count[];
extern const char tf__sql_ret_by_age[];
extern const char tf__sql_ret_mark[];
extern const char tf__sql_ret_mark_steps[];

#endif
