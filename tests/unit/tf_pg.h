/*
 * tf_pg.h - unit tests of the storage engines on a real PostgreSQL.
 *
 * tests/unit/with_pg.py starts a server in a temp dir (initdb + pg_ctl,
 * unix socket; the integration harness's PgCluster), runs a test binary
 * with TF_TEST_PG_URL set to its "postgres" database, and stops it at
 * the end. tf_test_pg_database() then gives each test a fresh database:
 * without TF_TEST_PG_URL it leaves the sqlite path alone, so the same
 * tests run on both engines.
 */
#ifndef TF_TEST_PG_H
#define TF_TEST_PG_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef TF_HAVE_POSTGRESQL
#include <libpq-fe.h>
#endif

/* With TF_TEST_PG_URL set, creates database t_<pid>_<n> and writes its
 * URL into path (len bytes); exits 2 when that fails. */
static inline void tf_test_pg_database(char *path, size_t len)
{
    const char *base = getenv("TF_TEST_PG_URL");
    static unsigned n;

    if (!base || !*base)
        return;
#ifdef TF_HAVE_POSTGRESQL
    const char *at = strstr(base, "/postgres?");
    char name[64], sql[128];
    PGconn *c = PQconnectdb(base);
    PGresult *r;

    if (!at || PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "TF_TEST_PG_URL %s: %s\n", base, PQerrorMessage(c));
        exit(2);
    }
    snprintf(name, sizeof(name), "t_%ld_%u", (long)getpid(), ++n);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "%s: %s\n", sql, PQresultErrorMessage(r));
        exit(2);
    }
    PQclear(r);
    PQfinish(c);
    snprintf(path, len, "%.*s/%s%s", (int)(at - base), base, name,
             at + strlen("/postgres"));
#else
    (void)path;
    (void)len;
    fprintf(stderr, "TF_TEST_PG_URL is set but this build has no "
                    "PostgreSQL engine\n");
    exit(2);
#endif
}

#endif
