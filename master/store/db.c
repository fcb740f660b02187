/*
 * db.c - the cursor API of db.h over sqlite and PostgreSQL.
 *
 * On sqlite every call is the sqlite call it names. On PostgreSQL a
 * statement keeps its rewritten SQL and its bound values; the first step
 * runs it with PQexecParams (text results: integers and text come back
 * as their text, bytea as hex that column_blob decodes once per cell) and
 * later steps walk the result's rows. Parameters go with their types
 * (int8, float8, bytea in binary; text as text) so a comparison with a
 * column never depends on PostgreSQL guessing; a NULL has no type and
 * takes the one its context gives it.
 *
 * Why text results: a read function asks a column for an integer, text
 * or bytes without knowing the column's SQL type (count(*) is bigint,
 * sum() numeric, a comparison boolean); text converts to all of them,
 * while binary would need a decoder per type.
 */
#include "store/db_impl.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "tf_err.h"

#ifdef TF_HAVE_POSTGRESQL
#include <libpq-fe.h>
#endif

#define PG_MAX_PARAMS 64
#define PG_SQL_MAX 16384

/* Type oids (pgc_type.h is a server header). */
#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_TEXT 25
#define OID_OID 26
#define OID_FLOAT4 700
#define OID_FLOAT8 701
#define OID_NUMERIC 1700

typedef struct pg_param {
    int kind; /* TF_DB_NULL, TF_DB_INTEGER, TF_DB_FLOAT, TF_DB_TEXT, BLOB */
    char num[32];
    const char *p;
    int n;
    char *owned;
} pg_param_t;

struct tf_dbst {
    tf_db_t *db;
    sqlite3_stmt *lite;
#ifdef TF_HAVE_POSTGRESQL
    char *sql;
    int nparams;
    pg_param_t params[PG_MAX_PARAMS];
    bool null_text[PG_MAX_PARAMS]; /* "$N IS NULL" in the SQL */
    PGresult *res;
    int row;         /* -1 before the first row */
    int ncols;
    unsigned char **blobs; /* decoded bytea of the current row, by column */
    size_t *blob_len;
#endif
};

const char *tf_db_engine(const tf_db_t *db)
{
    return db->kind == TF_DB_KIND_PG ? "postgresql" : "sqlite";
}

/* ------------------------------------------------------------------ */
/* The SQL rewrite                                                     */
/* ------------------------------------------------------------------ */

static bool is_ident(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_';
}

int tf__db_quote_ident(const char *name, char *out, size_t cap)
{
    size_t o = 0;

    if (!cap)
        return TF_E2BIG;
    out[0] = '\0';
    if (!name || !*name)
        return TF_EINVAL;
    if (cap < 3)
        return TF_E2BIG;
    out[o++] = '"';
    for (const char *p = name; *p; p++) {
        /* room for this character (twice for a quote), the closing
         * quote and the terminator */
        if (o + (*p == '"' ? 2u : 1u) + 2 > cap) {
            out[0] = '\0';
            return TF_E2BIG;
        }
        if (*p == '"')
            out[o++] = '"';
        out[o++] = *p;
    }
    out[o++] = '"';
    out[o] = '\0';
    return 0;
}

int tf__db_pg_sql(const char *in, size_t len, char *out, size_t cap,
                  int *nparams)
{
    size_t o = 0;
    int maxp = 0;

#define PUT(c)                                                                 \
    do {                                                                       \
        if (o + 1 >= cap)                                                      \
            return TF_E2BIG;                                                   \
        out[o++] = (c);                                                        \
    } while (0)

    for (size_t i = 0; i < len && in[i]; i++) {
        char c = in[i];
        if (c == '\'' || c == '"') {
            /* A quoted string or identifier, doubled quotes inside. */
            PUT(c);
            for (i++; i < len && in[i]; i++) {
                PUT(in[i]);
                if (in[i] == c) {
                    if (i + 1 < len && in[i + 1] == c) {
                        PUT(in[++i]);
                        continue;
                    }
                    break;
                }
            }
            continue;
        }
        if (c == '?') {
            int num = 0;
            size_t j = i + 1;
            while (j < len && in[j] >= '0' && in[j] <= '9' && num < 10000)
                num = num * 10 + (in[j++] - '0');
            if (j == i + 1)
                num = maxp + 1;
            if (num > maxp)
                maxp = num;
            char buf[16];
            int k = snprintf(buf, sizeof(buf), "$%d", num);
            for (int m = 0; m < k; m++)
                PUT(buf[m]);
            i = j - 1;
            continue;
        }
        if (c == 'g' && (i == 0 || !is_ident(in[i - 1])) && i + 13 <= len &&
            strncmp(in + i, "group_concat(", 13) == 0) {
            const char *q = "string_agg(";
            for (; *q; q++)
                PUT(*q);
            i += 12;
            continue;
        }
        if (c == 'o' && (i == 0 || !is_ident(in[i - 1])) && i + 6 <= len &&
            strncmp(in + i, "offset", 6) == 0 &&
            (i + 6 == len || !is_ident(in[i + 6]))) {
            const char *q = "\"offset\"";
            for (; *q; q++)
                PUT(*q);
            i += 5;
            continue;
        }
        PUT(c);
    }
#undef PUT
    out[o] = '\0';
    if (nparams)
        *nparams = maxp;
    return 0;
}

/* ------------------------------------------------------------------ */
/* PostgreSQL statements                                               */
/* ------------------------------------------------------------------ */

#ifdef TF_HAVE_POSTGRESQL

static void pg_set_err(tf_db_t *db, const char *what, const char *msg)
{
    size_t n;

    snprintf(db->err, sizeof(db->err), "%s%s%s", what, *what ? ": " : "",
             msg ? msg : "");
    n = strlen(db->err);
    while (n && (db->err[n - 1] == '\n' || db->err[n - 1] == ' '))
        db->err[--n] = '\0';
}

static void pg_clear_row(tf_dbst_t *st)
{
    if (!st->blobs)
        return;
    for (int i = 0; i < st->ncols; i++) {
        free(st->blobs[i]);
        st->blobs[i] = NULL;
    }
}

static void pg_clear_result(tf_dbst_t *st)
{
    pg_clear_row(st);
    free(st->blobs);
    free(st->blob_len);
    st->blobs = NULL;
    st->blob_len = NULL;
    PQclear(st->res);
    st->res = NULL;
    st->row = -1;
    st->ncols = 0;
}

/* Whether the rewritten sql holds $k (a parameter one variant of a
 * statement does not use has no type either). */
static bool uses_param(const char *sql, int k)
{
    char pat[16];
    size_t n = (size_t)snprintf(pat, sizeof(pat), "$%d", k);

    for (const char *p = strstr(sql, pat); p; p = strstr(p + 1, pat))
        if (p[n] < '0' || p[n] > '9')
            return true;
    return false;
}

static int pg_prepare(tf_db_t *db, const char *sql, int n, tf_dbst_t **out)
{
    size_t len = n < 0 ? strlen(sql) : (size_t)n;
    char *buf = malloc(PG_SQL_MAX);
    tf_dbst_t *st;
    int np = 0;

    if (!buf)
        return TF_DB_NOMEM;
    if (tf__db_pg_sql(sql, len, buf, PG_SQL_MAX, &np) != 0 ||
        np > PG_MAX_PARAMS) {
        free(buf);
        pg_set_err(db, "prepare", "statement too long or too many "
                                  "parameters");
        return TF_DB_ERROR;
    }
    st = calloc(1, sizeof(*st));
    if (!st) {
        free(buf);
        return TF_DB_NOMEM;
    }
    st->db = db;
    st->sql = buf;
    st->nparams = np;
    for (int i = 0; i < np; i++) {
        char pat[24];
        snprintf(pat, sizeof(pat), "$%d IS NULL", i + 1);
        st->null_text[i] = strstr(buf, pat) != NULL || !uses_param(buf, i + 1);
    }
    st->row = -1;
    *out = st;
    return TF_DB_OK;
}

static pg_param_t *pg_param(tf_dbst_t *st, int i)
{
    if (i < 1 || i > st->nparams)
        return NULL;
    pg_param_t *p = &st->params[i - 1];
    free(p->owned);
    memset(p, 0, sizeof(*p));
    return p;
}

static int pg_bind_bytes(tf_dbst_t *st, int i, int kind, const void *v,
                         int n, tf_db_destructor_t how)
{
    pg_param_t *p = pg_param(st, i);

    if (!p)
        return TF_DB_RANGE;
    if (!v && kind == TF_DB_TEXT) {
        p->kind = TF_DB_NULL;
        return TF_DB_OK;
    }
    bool terminated = n < 0;

    if (n < 0)
        n = (int)strlen(v);
    p->kind = kind;
    p->n = n;
    if (how == TF_DB_STATIC && (kind == TF_DB_BLOB || terminated)) {
        p->p = v ? v : "";
        return TF_DB_OK;
    }
    p->owned = malloc((size_t)n + 1);
    if (!p->owned)
        return TF_DB_NOMEM;
    if (n)
        memcpy(p->owned, v, (size_t)n);
    p->owned[n] = '\0';
    p->p = p->owned;
    return TF_DB_OK;
}

/* Runs the statement. A NULL parameter has no type and takes its
 * context's, except where the SQL asks "?N IS NULL" or does not use it
 * at all (PostgreSQL cannot tell a type from that): those NULLs are
 * declared text. */
static PGresult *pg_exec(tf_dbst_t *st)
{
    Oid types[PG_MAX_PARAMS];
    const char *vals[PG_MAX_PARAMS];
    int lens[PG_MAX_PARAMS], fmts[PG_MAX_PARAMS];

    for (int i = 0; i < st->nparams; i++) {
        pg_param_t *p = &st->params[i];
        types[i] = st->null_text[i] ? OID_TEXT : 0;
        vals[i] = NULL;
        lens[i] = 0;
        fmts[i] = 0;
        switch (p->kind) {
        case TF_DB_INTEGER:
            types[i] = OID_INT8;
            vals[i] = p->num;
            break;
        case TF_DB_FLOAT:
            types[i] = OID_FLOAT8;
            vals[i] = p->num;
            break;
        case TF_DB_TEXT:
            types[i] = OID_TEXT;
            vals[i] = p->p;
            break;
        case TF_DB_BLOB:
            types[i] = OID_BYTEA;
            vals[i] = p->p;
            lens[i] = p->n;
            fmts[i] = 1;
            break;
        default:
            break;
        }
    }
    return PQexecParams((PGconn *)st->db->pg, st->sql, st->nparams, types,
                        vals, lens, fmts, 0);
}

static int pg_run(tf_dbst_t *st)
{
    ExecStatusType es;

    st->res = pg_exec(st);
    es = st->res ? PQresultStatus(st->res) : PGRES_FATAL_ERROR;
    if (es != PGRES_TUPLES_OK && es != PGRES_COMMAND_OK) {
        pg_set_err(st->db, "",
                   st->res ? PQresultErrorMessage(st->res)
                           : PQerrorMessage((PGconn *)st->db->pg));
        /* Read functions often take a failed step for "no rows"; the
         * cause must not vanish with it. */
        tf_warn("store", "query failed: %s; in: %.200s", st->db->err,
                st->sql);
        PQclear(st->res);
        st->res = NULL;
        return TF_DB_ERROR;
    }
    st->ncols = PQnfields(st->res);
    if (st->ncols > 0) {
        st->blobs = calloc((size_t)st->ncols, sizeof(*st->blobs));
        st->blob_len = calloc((size_t)st->ncols, sizeof(*st->blob_len));
        if (!st->blobs || !st->blob_len) {
            pg_clear_result(st);
            return TF_DB_NOMEM;
        }
    }
    return TF_DB_OK;
}

static int pg_step(tf_dbst_t *st)
{
    if (!st->res) {
        int rc = pg_run(st);
        if (rc != TF_DB_OK)
            return rc;
    }
    pg_clear_row(st);
    if (st->row + 1 >= PQntuples(st->res)) {
        st->row = PQntuples(st->res);
        return TF_DB_DONE;
    }
    st->row++;
    return TF_DB_ROW;
}

static bool pgc_cell(tf_dbst_t *st, int i)
{
    return st->res && st->row >= 0 && st->row < PQntuples(st->res) &&
           i >= 0 && i < st->ncols && !PQgetisnull(st->res, st->row, i);
}

static int pgc_type(tf_dbst_t *st, int i)
{
    if (!pgc_cell(st, i))
        return TF_DB_NULL;
    switch (PQftype(st->res, i)) {
    case OID_BOOL:
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
    case OID_OID:
        return TF_DB_INTEGER;
    case OID_FLOAT4:
    case OID_FLOAT8:
    case OID_NUMERIC:
        return TF_DB_FLOAT;
    case OID_BYTEA:
        return TF_DB_BLOB;
    default:
        return TF_DB_TEXT;
    }
}

static int64_t pgc_int64(tf_dbst_t *st, int i)
{
    const char *t;
    char *end;

    if (!pgc_cell(st, i))
        return 0;
    t = PQgetvalue(st->res, st->row, i);
    if (t[0] == 't' && t[1] == '\0')
        return 1;
    if (t[0] == 'f' && t[1] == '\0')
        return 0;
    errno = 0;
    long long v = strtoll(t, &end, 10);
    if (*end == '.' || *end == 'e' || *end == 'E')
        return (int64_t)strtod(t, NULL);
    return (int64_t)v;
}

static double pgc_double(tf_dbst_t *st, int i)
{
    if (!pgc_cell(st, i))
        return 0;
    return strtod(PQgetvalue(st->res, st->row, i), NULL);
}

static const void *pgc_blob(tf_dbst_t *st, int i)
{
    if (!pgc_cell(st, i))
        return NULL;
    if (PQftype(st->res, i) != OID_BYTEA)
        return PQgetvalue(st->res, st->row, i);
    if (!st->blobs[i]) {
        /* Decoded once per cell, with a NUL after the bytes so that
         * column_text of a bytea reads as sqlite's does. */
        size_t n = 0;
        unsigned char *raw = PQunescapeBytea(
            (const unsigned char *)PQgetvalue(st->res, st->row, i), &n);
        if (raw) {
            st->blobs[i] = malloc(n + 1);
            if (st->blobs[i]) {
                memcpy(st->blobs[i], raw, n);
                st->blobs[i][n] = '\0';
            }
            PQfreemem(raw);
        }
        st->blob_len[i] = st->blobs[i] ? n : 0;
    }
    return st->blobs[i] ? (const void *)st->blobs[i] : (const void *)"";
}

static int pgc_bytes(tf_dbst_t *st, int i)
{
    if (!pgc_cell(st, i))
        return 0;
    if (PQftype(st->res, i) != OID_BYTEA)
        return PQgetlength(st->res, st->row, i);
    pgc_blob(st, i);
    return st->blob_len[i] > INT_MAX ? INT_MAX : (int)st->blob_len[i];
}

static void pg_finalize(tf_dbst_t *st)
{
    pg_clear_result(st);
    for (int i = 0; i < PG_MAX_PARAMS; i++)
        free(st->params[i].owned);
    free(st->sql);
}

#define IS_PG(st) ((st)->db->kind == TF_DB_KIND_PG)
#else
#define IS_PG(st) false
#endif /* TF_HAVE_POSTGRESQL */

/* ------------------------------------------------------------------ */
/* The calls                                                           */
/* ------------------------------------------------------------------ */

int tf_db_prepare_v2(tf_db_t *db, const char *sql, int n, tf_dbst_t **out,
                     const char **tail)
{
    tf_dbst_t *st;
    int src;

    *out = NULL;
    if (tail)
        *tail = sql + (n < 0 ? strlen(sql) : (size_t)n);
#ifdef TF_HAVE_POSTGRESQL
    if (db->kind == TF_DB_KIND_PG)
        return pg_prepare(db, sql, n, out);
#endif
    st = calloc(1, sizeof(*st));
    if (!st)
        return TF_DB_NOMEM;
    st->db = db;
    src = sqlite3_prepare_v2(db->lite, sql, n, &st->lite, tail);
    if (src != SQLITE_OK || !st->lite) {
        snprintf(db->err, sizeof(db->err), "%s", sqlite3_errmsg(db->lite));
        sqlite3_finalize(st->lite);
        free(st);
        return src != SQLITE_OK ? src : TF_DB_ERROR;
    }
    *out = st;
    return TF_DB_OK;
}

int tf_db_bind_int64(tf_dbst_t *st, int i, int64_t v)
{
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st)) {
        pg_param_t *p = pg_param(st, i);
        if (!p)
            return TF_DB_RANGE;
        p->kind = TF_DB_INTEGER;
        snprintf(p->num, sizeof(p->num), "%lld", (long long)v);
        return TF_DB_OK;
    }
#endif
    return sqlite3_bind_int64(st->lite, i, v);
}

int tf_db_bind_int(tf_dbst_t *st, int i, int v)
{
    return tf_db_bind_int64(st, i, v);
}

int tf_db_bind_double(tf_dbst_t *st, int i, double v)
{
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st)) {
        pg_param_t *p = pg_param(st, i);
        if (!p)
            return TF_DB_RANGE;
        p->kind = TF_DB_FLOAT;
        snprintf(p->num, sizeof(p->num), "%.17g", v);
        return TF_DB_OK;
    }
#endif
    return sqlite3_bind_double(st->lite, i, v);
}

int tf_db_bind_text(tf_dbst_t *st, int i, const char *s, int n,
                    tf_db_destructor_t how)
{
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st))
        return pg_bind_bytes(st, i, TF_DB_TEXT, s, n, how);
#endif
    return sqlite3_bind_text(st->lite, i, s, n,
                             how == TF_DB_STATIC ? SQLITE_STATIC
                                                 : SQLITE_TRANSIENT);
}

int tf_db_bind_blob(tf_dbst_t *st, int i, const void *p, int n,
                    tf_db_destructor_t how)
{
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st))
        return pg_bind_bytes(st, i, TF_DB_BLOB, p ? p : "", n < 0 ? 0 : n,
                             how);
#endif
    if (n <= 0)
        return sqlite3_bind_zeroblob(st->lite, i, 0);
    return sqlite3_bind_blob(st->lite, i, p, n,
                             how == TF_DB_STATIC ? SQLITE_STATIC
                                                 : SQLITE_TRANSIENT);
}

int tf_db_bind_null(tf_dbst_t *st, int i)
{
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st)) {
        pg_param_t *p = pg_param(st, i);
        if (!p)
            return TF_DB_RANGE;
        p->kind = TF_DB_NULL;
        return TF_DB_OK;
    }
#endif
    return sqlite3_bind_null(st->lite, i);
}

int tf_db_step(tf_dbst_t *st)
{
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st))
        return pg_step(st);
#endif
    int src = sqlite3_step(st->lite);
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        snprintf(st->db->err, sizeof(st->db->err), "%s",
                 sqlite3_errmsg(st->db->lite));
    return src;
}

int tf_db_column_count(tf_dbst_t *st)
{
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st))
        return st->ncols;
#endif
    return sqlite3_column_count(st->lite);
}

int tf_db_column_type(tf_dbst_t *st, int i)
{
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st))
        return pgc_type(st, i);
#endif
    return sqlite3_column_type(st->lite, i);
}

int64_t tf_db_column_int64(tf_dbst_t *st, int i)
{
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st))
        return pgc_int64(st, i);
#endif
    return sqlite3_column_int64(st->lite, i);
}

int tf_db_column_int(tf_dbst_t *st, int i)
{
    return (int)tf_db_column_int64(st, i);
}

double tf_db_column_double(tf_dbst_t *st, int i)
{
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st))
        return pgc_double(st, i);
#endif
    return sqlite3_column_double(st->lite, i);
}

const unsigned char *tf_db_column_text(tf_dbst_t *st, int i)
{
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st)) {
        if (!pgc_cell(st, i))
            return NULL;
        if (PQftype(st->res, i) == OID_BOOL)
            return (const unsigned char *)(pgc_int64(st, i) ? "1" : "0");
        if (PQftype(st->res, i) == OID_BYTEA)
            return pgc_blob(st, i);
        return (const unsigned char *)PQgetvalue(st->res, st->row, i);
    }
#endif
    return sqlite3_column_text(st->lite, i);
}

const void *tf_db_column_blob(tf_dbst_t *st, int i)
{
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st))
        return pgc_blob(st, i);
#endif
    return sqlite3_column_blob(st->lite, i);
}

int tf_db_column_bytes(tf_dbst_t *st, int i)
{
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st))
        return pgc_bytes(st, i);
#endif
    return sqlite3_column_bytes(st->lite, i);
}

int tf_db_reset(tf_dbst_t *st)
{
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st)) {
        pg_clear_result(st);
        return TF_DB_OK;
    }
#endif
    return sqlite3_reset(st->lite);
}

int tf_db_finalize(tf_dbst_t *st)
{
    if (!st)
        return TF_DB_OK;
#ifdef TF_HAVE_POSTGRESQL
    if (IS_PG(st))
        pg_finalize(st);
    else
#endif
        sqlite3_finalize(st->lite);
    free(st);
    return TF_DB_OK;
}

int tf_db_exec(tf_db_t *db, const char *sql)
{
    db->err[0] = '\0';
#ifdef TF_HAVE_POSTGRESQL
    if (db->kind == TF_DB_KIND_PG) {
        PGresult *r = PQexec(db->pg, sql);
        int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? TF_DB_OK
                                                        : TF_DB_ERROR;
        if (rc != TF_DB_OK)
            pg_set_err(db, "exec", PQerrorMessage(db->pg));
        PQclear(r);
        return rc;
    }
#endif
    return sqlite3_exec(db->lite, sql, NULL, NULL, NULL);
}

const char *tf_db_errmsg(tf_db_t *db)
{
    if (db->kind == TF_DB_KIND_SQLITE && db->lite && !db->err[0])
        return sqlite3_errmsg(db->lite);
    return db->err;
}

sqlite3 *tf__db_lite(tf_db_t *db)
{
    return db && db->kind == TF_DB_KIND_SQLITE ? db->lite : NULL;
}
