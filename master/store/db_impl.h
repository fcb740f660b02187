/*
 * db_impl.h - what the engines need to lend a connection through db.h:
 * the handle itself, and the SQL rewrite PostgreSQL needs (also used for
 * the raw statements of store_sqlite.h that run on PostgreSQL).
 * Only store/ includes this.
 */
#ifndef TF_STORE_DB_IMPL_H
#define TF_STORE_DB_IMPL_H

#include <stddef.h>

#include <sqlite3.h>

#include "store/db.h"

enum { TF_DB_KIND_SQLITE = 0, TF_DB_KIND_PG = 1 };

/* A borrowed connection: the engine fills it in on its stack and hands
 * it to a read function. */
struct tf_db {
    int kind;
    sqlite3 *lite; /* TF_DB_KIND_SQLITE */
    void *pg;      /* TF_DB_KIND_PG: a PGconn */
    char err[512];
};

/* Rewrites sqlite-dialect SQL for PostgreSQL: ?N becomes $N, a bare ?
 * the next number, the identifier offset "offset", group_concat(
 * string_agg(; quoted strings are left alone. Returns 0, or TF_E2BIG when out (cap bytes) is too
 * small; *nparams gets the highest parameter number. */
int tf__db_pg_sql(const char *in, size_t len, char *out, size_t cap,
                  int *nparams);

/* Writes name as one quoted SQL identifier ("name", each '"' in it
 * doubled, as both sqlite and PostgreSQL read it) into out (cap bytes).
 * Returns 0, TF_EINVAL for an empty name, or TF_E2BIG when out is too
 * small (out then holds ""). Any thread. */
int tf__db_quote_ident(const char *name, char *out, size_t cap);

/* The sqlite connection behind db, or NULL when db is another engine's
 * (for tests written against sqlite's API). */
sqlite3 *tf__db_lite(tf_db_t *db);

#endif
