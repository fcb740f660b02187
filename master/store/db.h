/*
 * db.h - one cursor API over the engines' read connections, so the
 * master's read functions (the API's pages, the mail composer, the
 * pollers' reads) run unchanged on sqlite and on PostgreSQL.
 *
 * The calls mirror the subset of sqlite's C API those functions used
 * (prepare, bind, step, column, reset, finalize), with tf_db_ in place of
 * sqlite3_ and TF_DB_ in place of SQLITE_, so a read function reads as
 * before. The SQL is written once in the common subset of the two
 * dialects: placeholders ?N (the PostgreSQL side rewrites them to $N),
 * keywords in upper case, identifiers in lower case (log_chunks.offset,
 * a reserved word in PostgreSQL, is quoted there by the same rewrite),
 * every subquery in FROM with an alias, casts where PostgreSQL needs a
 * type (CAST(?2 AS INTEGER) for substr's arguments), and
 * group_concat(x, sep) with its separator (string_agg on PostgreSQL).
 *
 * A tf_db_t is borrowed from an engine for the length of one read
 * function (store_sqlite.h's tf_store_read_fn); statements must be
 * finalized before the function returns. One thread at a time uses a
 * given tf_db_t and its statements.
 *
 * Values: integers bind as 64-bit integers, text as text, blobs as bytes.
 * Columns read back as in sqlite: tf_db_column_text of an integer is its
 * decimal text, tf_db_column_int64 of a boolean (PostgreSQL's answer to a
 * comparison in a select list) is 0 or 1, a NULL column is NULL / 0.
 */
#ifndef TF_STORE_DB_H
#define TF_STORE_DB_H

#include <stddef.h>
#include <stdint.h>

typedef struct tf_db tf_db_t;
typedef struct tf_dbst tf_dbst_t;

/* Answers (the values are sqlite's, so both sides read the same). */
#define TF_DB_OK 0
#define TF_DB_ERROR 1
#define TF_DB_NOMEM 7
#define TF_DB_RANGE 25
#define TF_DB_ROW 100
#define TF_DB_DONE 101

/* Column types. */
#define TF_DB_INTEGER 1
#define TF_DB_FLOAT 2
#define TF_DB_TEXT 3
#define TF_DB_BLOB 4
#define TF_DB_NULL 5

/* How bound text and blobs are kept: STATIC, the caller's memory outlives
 * the statement's use of it; TRANSIENT, copied now. */
typedef void (*tf_db_destructor_t)(void *);
#define TF_DB_STATIC ((tf_db_destructor_t)0)
#define TF_DB_TRANSIENT ((tf_db_destructor_t)-1)

/* Which engine's connection db is: "sqlite" or "postgresql". */
const char *tf_db_engine(const tf_db_t *db);

/* Prepares one statement (n: the SQL's length or -1; tail may be NULL
 * and is set to the end of the SQL). Returns TF_DB_OK and *st (the
 * caller finalizes it), or an error code with *st NULL. */
int tf_db_prepare_v2(tf_db_t *db, const char *sql, int n, tf_dbst_t **st,
                     const char **tail);

/* Binds parameter i (from 1). n is the length in bytes or -1 for a
 * NUL-terminated string. Returns TF_DB_OK or an error code. */
int tf_db_bind_int64(tf_dbst_t *st, int i, int64_t v);
int tf_db_bind_int(tf_dbst_t *st, int i, int v);
int tf_db_bind_double(tf_dbst_t *st, int i, double v);
int tf_db_bind_text(tf_dbst_t *st, int i, const char *s, int n,
                    tf_db_destructor_t how);
int tf_db_bind_blob(tf_dbst_t *st, int i, const void *p, int n,
                    tf_db_destructor_t how);
int tf_db_bind_null(tf_dbst_t *st, int i);

/* Runs the statement (on the first call after prepare or reset) and moves
 * to the next row: TF_DB_ROW, TF_DB_DONE, or an error code (the message
 * in tf_db_errmsg). */
int tf_db_step(tf_dbst_t *st);

/* The current row's columns (from 0). Text and blobs stay valid until the
 * next step, reset or finalize. */
int tf_db_column_count(tf_dbst_t *st);
int tf_db_column_type(tf_dbst_t *st, int i);
int64_t tf_db_column_int64(tf_dbst_t *st, int i);
int tf_db_column_int(tf_dbst_t *st, int i);
double tf_db_column_double(tf_dbst_t *st, int i);
const unsigned char *tf_db_column_text(tf_dbst_t *st, int i);
const void *tf_db_column_blob(tf_dbst_t *st, int i);
int tf_db_column_bytes(tf_dbst_t *st, int i);

/* Back to before the first step, bindings kept. */
int tf_db_reset(tf_dbst_t *st);

/* Frees st (NULL is fine). */
int tf_db_finalize(tf_dbst_t *st);

/* Runs one statement without a result (SAVEPOINT, RELEASE). Returns
 * TF_DB_OK or an error code (the message in tf_db_errmsg). */
int tf_db_exec(tf_db_t *db, const char *sql);

/* The message of the connection's last failure. */
const char *tf_db_errmsg(tf_db_t *db);

#endif
