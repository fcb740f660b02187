/*
 * reads.h - the typed queries of store.h over db.h (see reads.c).
 */
#ifndef TF_STORE_READS_H
#define TF_STORE_READS_H

#include "store/db.h"
#include "store/store_sqlite.h"

/* Runs q on db (already inside the engine's read transaction). Returns
 * the query's result. */
int tf__reads_query(tf_db_t *db, tf_query_t *q);

#endif
