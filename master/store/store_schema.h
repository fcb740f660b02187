/*
 * store_schema.h - the list of schema migrations (see store_schema.c).
 */
#ifndef TF_STORE_SCHEMA_H
#define TF_STORE_SCHEMA_H

#include <stddef.h>

/* The number of migrations, which is the newest schema version. */
size_t tf_schema_count(void);

/* The SQL of migration `version` (1-based): it takes a database at
 * version-1 to version. NULL when out of range. */
const char *tf_schema_migration(size_t version);

#endif
