/*
 * store.h - the master's sqlite store: one writer thread, pooled readers.
 *
 * Design (ARCHITECTURE.md, "Threads of the master"): the loop thread never
 * writes to sqlite. It hands write operations to a bounded queue; a single
 * writer thread owns the only write connection (WAL mode), drains whatever
 * is queued, runs it as one transaction and reports each operation's outcome
 * back to the loop thread through uv_async, in submission order. Reads run
 * on libuv's thread pool with read-only connections from a small pool.
 *
 * Failures: an operation that fails on its own (a constraint, a bug) is
 * rolled back to its savepoint and reported to its callback with TF_ESTORE;
 * the rest of the batch commits. A failure of the whole database (disk full,
 * I/O error, busy) rolls the batch back and the writer retries the same
 * batch with backoff (0.1 s doubling to 10 s) until it commits: nothing
 * queued is dropped, the queue fills, and the master applies backpressure
 * to slaves until the disk has room again. tf_store_health() says why.
 *
 * The schema and its forward migrations live in store_schema.c;
 * tf_store_open() applies pending migrations before returning.
 */
#ifndef TF_STORE_H
#define TF_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>
#include <uv.h>

typedef struct tf_store tf_store_t;

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

/* Called on the loop thread after the operation's transaction committed
 * (rc 0) or the operation failed on its own (rc TF_ESTORE). */
typedef void (*tf_store_done_cb)(void *arg, int rc);

/* Runs on the writer thread inside the batch transaction (under a
 * savepoint). Returns 0 or a negative code; a non-zero return rolls back
 * what the function did. May set *result for the done callback to see
 * through arg. Must not touch loop-thread state. */
typedef int (*tf_store_txn_fn)(sqlite3 *db, void *arg);

/* Runs on a thread-pool thread with a read-only connection. */
typedef int (*tf_store_read_fn)(sqlite3 *db, void *arg);

/* Called on the loop thread when the queue crosses its high watermark
 * (congested = true) and when it drains below the low one (false). */
typedef void (*tf_store_congestion_cb)(void *arg, bool congested);

typedef struct tf_store_opts {
    size_t queue_soft_bytes; /* congestion above this; default 32 MiB */
    size_t queue_hard_bytes; /* tf_store_write fails above; default 256 MiB */
    unsigned readers;        /* read connection pool size; default 4 */
    tf_store_congestion_cb congestion_cb;
    void *congestion_arg;
} tf_store_opts_t;

/* Opens (creating if needed) the database at path, applies migrations,
 * and starts the writer thread. Must be called on the loop thread before
 * the loop runs or while it runs. opts may be NULL for defaults. Returns 0
 * and *out, or a negative code with a message logged. */
int tf_store_open(uv_loop_t *loop, const char *path,
                  const tf_store_opts_t *opts, tf_store_t **out);

/* Queues one SQL statement. sql must have static storage duration (it is
 * the key of the prepared-statement cache). vals are copied (or taken, for
 * TF_SQL_BLOB_OWNED, even on failure). cb may be NULL. Returns 0, or
 * TF_EFULL past the hard cap (nothing queued), or TF_ESTATE once closing. */
int tf_store_write(tf_store_t *s, const char *sql, const tf_sqlval_t *vals,
                   size_t nvals, tf_store_done_cb cb, void *arg);

/* One statement of a group (tf_store_write_multi). */
typedef struct tf_sqlstmt {
    const char *sql; /* static storage, as for tf_store_write */
    const tf_sqlval_t *vals;
    size_t nvals;
} tf_sqlstmt_t;

/* Queues n statements that commit together or not at all (one savepoint):
 * for facts that must never be half stored, like a log chunk and the
 * sequence number that says it arrived. cb gets TF_ESTORE if any of them
 * failed (then none took effect). Owned blobs of every statement pass to
 * the store, even on failure. Returns as tf_store_write. */
int tf_store_write_multi(tf_store_t *s, const tf_sqlstmt_t *stmts, size_t n,
                         tf_store_done_cb cb, void *arg);

/* Queues a function to run on the writer thread in the next batch.
 * cost_bytes is what it counts against the queue caps. */
int tf_store_write_fn(tf_store_t *s, tf_store_txn_fn fn, size_t cost_bytes,
                      tf_store_done_cb cb, void *arg);

/* Runs fn on the thread pool with a read-only connection, then done on the
 * loop thread with fn's return value. Returns 0 or a libuv error (then done
 * is never called). */
int tf_store_read(tf_store_t *s, tf_store_read_fn fn, tf_store_done_cb done,
                  void *arg);

/* Runs fn right now on the calling thread with a read-only connection
 * (startup, CLI). Returns fn's value. */
int tf_store_read_sync(tf_store_t *s, tf_store_read_fn fn, void *arg);

typedef struct tf_store_health {
    size_t queued_ops;
    size_t queued_bytes;
    bool congested;
    uint64_t batches;         /* committed so far */
    uint64_t ops;             /* committed so far */
    unsigned failing_for_ms;  /* 0 when the last batch committed */
    char last_error[256];     /* "" when healthy */
} tf_store_health_t;

/* Snapshot of the writer's state (thread-safe). */
void tf_store_health(tf_store_t *s, tf_store_health_t *out);

/* The schema version the database is at after migrations. */
int tf_store_schema_version(tf_store_t *s);

/* Stops accepting writes, lets the writer drain and commit everything
 * queued, joins it, closes every connection and the async handle, then
 * calls cb on the loop thread (the loop must keep running until then).
 * s is freed before cb runs. */
void tf_store_close(tf_store_t *s, void (*cb)(void *arg), void *arg);

/* Helpers for read functions: bind values to a prepared statement. */
int tf_store_bind(sqlite3_stmt *st, const tf_sqlval_t *vals, size_t nvals);

#endif
