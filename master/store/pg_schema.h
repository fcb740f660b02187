/*
 * pg_schema.h - the PostgreSQL schema as forward migrations (see
 * pg_schema.c). tf_pg_schema_count() equals tf_schema_count(): both
 * engines are always at the same schema version.
 */
#ifndef TF_STORE_PG_SCHEMA_H
#define TF_STORE_PG_SCHEMA_H

#include <stddef.h>

/* The pg_advisory_lock key of the lease of the single-runner duties
 * among shared masters ("tfdu"): held by the duty holder's listener
 * connection (pg.c), looked up in pg_locks by tf_q_duty_holder
 * (queries.c). */
#define TF_PG_DUTY_LOCK_KEY "1952867445"

/* How many migrations there are (the newest schema version). */
size_t tf_pg_schema_count(void);

/* The SQL of migration version (1..count), or NULL. */
const char *tf_pg_schema_migration(size_t version);

#endif
