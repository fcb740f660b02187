/*
 * store_sqlite.h - raw access to the sqlite engine, for code that still
 * speaks SQL.
 *
 * The storage interface (store.h) speaks in operations and queries; this
 * header is its escape hatch while the master's last SQL moves behind it:
 * store/queries.c (the API's reads, which are inside store/ and stay
 * sqlite's), and outside store/ the mail sender and the HTTP handlers not
 * yet moved (tests/unit/check_layering.py's SQL_KNOWN names them). Code
 * using it works with the sqlite engine only. New code uses store.h.
 *
 * Raw writes are groups like any other: tf_store_write queues a group of
 * one statement, tf_store_write_multi a group of n (all or nothing),
 * tf_store_write_fn a function run on the writer thread inside the
 * batch's transaction; the contracts of store.h (ordering, savepoints,
 * retries, callbacks) hold for them.
 */
#ifndef TF_STORE_SQLITE_H
#define TF_STORE_SQLITE_H

#include <stdint.h>

#include <sqlite3.h>

#include "store/db.h"
#include "store/store.h"

typedef enum {
    TF_SQL_NULL = 0,
    TF_SQL_INT,
    TF_SQL_TEXT, /* copied at submit time */
    TF_SQL_BLOB, /* copied at submit time */
    TF_SQL_BLOB_OWNED, /* ownership of p (malloc'd) passes to the store */
} tf_sql_kind_t;

/* One value to bind to a '?' placeholder. */
typedef struct tf_sqlval {
    tf_sql_kind_t kind;
    int64_t i;
    const void *p; /* TEXT: NUL-terminated string (n ignored); BLOB: n bytes */
    size_t n;
} tf_sqlval_t;

/* Constructors for readable call sites. tf_sql_text(NULL) binds NULL. */
tf_sqlval_t tf_sql_int(int64_t i);
tf_sqlval_t tf_sql_text(const char *s);
tf_sqlval_t tf_sql_blob(const void *p, size_t n);
tf_sqlval_t tf_sql_blob_owned(void *p, size_t n);
tf_sqlval_t tf_sql_null(void);

/* Runs on the writer thread inside the batch transaction (under the
 * group's savepoint). Returns 0 or a negative code; a non-zero return
 * fails the group. Must not touch loop-thread state, and must return as
 * soon as an sqlite call fails (the connection's error then says whether
 * the whole database failed: see store/sqlite.c, "op_sql_fn"). */
typedef int (*tf_store_txn_fn)(sqlite3 *db, void *arg);

/* Runs with a read-only connection inside one read transaction. The
 * connection speaks db.h, so a read function runs on every engine. */
typedef int (*tf_store_read_fn)(tf_db_t *db, void *arg);

/* Adds one SQL statement to g. sql must have static storage duration (it
 * keys the prepared-statement cache). vals are copied (owned blobs are
 * taken, even on failure). Returns 0, TF_EINVAL or TF_ENOMEM. */
int tf_op_sql(tf_wgroup_t *g, const char *sql, const tf_sqlval_t *vals,
              size_t nvals);

/* Adds a function run on the writer thread to g; cost_bytes is what it
 * counts against the queue caps. */
int tf_op_sql_fn(tf_wgroup_t *g, tf_store_txn_fn fn, void *arg,
                 size_t cost_bytes);

/* Queues one statement as a group of its own (see tf_op_sql). Returns as
 * tf_store_submit; owned blobs are taken even on failure. */
int tf_store_write(tf_store_t *s, const char *sql, const tf_sqlval_t *vals,
                   size_t nvals, tf_store_done_cb cb, void *arg);

/* One statement of tf_store_write_multi. */
typedef struct tf_sqlstmt {
    const char *sql; /* static storage, as for tf_store_write */
    const tf_sqlval_t *vals;
    size_t nvals;
} tf_sqlstmt_t;

/* Queues n statements that commit together or not at all. */
int tf_store_write_multi(tf_store_t *s, const tf_sqlstmt_t *stmts, size_t n,
                         tf_store_done_cb cb, void *arg);

/* Queues fn as a group of its own. */
int tf_store_write_fn(tf_store_t *s, tf_store_txn_fn fn, size_t cost_bytes,
                      tf_store_done_cb cb, void *arg);

/* Runs fn on the thread pool with a read-only connection, then done on
 * the loop thread with fn's return value. Returns 0 or a negative code
 * (then done is never called). */
int tf_store_read(tf_store_t *s, tf_store_read_fn fn, tf_store_done_cb done,
                  void *arg);

/* Runs fn now on the calling thread with a read-only connection
 * (startup, CLI, the mail sender's thread; as tf_store_query_sync).
 * Returns fn's value. */
int tf_store_read_sync(tf_store_t *s, tf_store_read_fn fn, void *arg);

/* Binds vals to a prepared statement (sqlite copies them). */
int tf_store_bind(sqlite3_stmt *st, const tf_sqlval_t *vals, size_t nvals);

/* For read functions: the user whose token hashes to token_sha256, or
 * TF_ENOENT. The typed form is TF_Q_USER_BY_TOKEN. */
int tf_user_by_token(tf_db_t *db, const char *token_sha256, tf_user_t *out);

/* TF_Q_SQLITE_FN: fn run as tf_store_read does, through tf_store_query. */
typedef struct tf_q_sqlite_fn {
    tf_query_t q;
    tf_store_read_fn fn;
    void *arg;
} tf_q_sqlite_fn_t;

#endif
