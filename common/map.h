/*
 * map.h - hash maps from uint64 ids and from strings to pointers.
 *
 * Open addressing with linear probing and tombstones, power-of-two sizes,
 * grown at 70% load. Keys of string maps are copied and owned by the map;
 * values are borrowed. The loop thread uses these for builds by id and
 * slaves and builders by name: thousands of entries, looked up per event.
 */
#ifndef TF_MAP_H
#define TF_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct tf_map tf_map_t;

/* Creates an empty map; NULL on OOM. */
tf_map_t *tf_map_new(void);

/* Frees the map and its keys (not the values); m may be NULL. */
void tf_map_free(tf_map_t *m);

size_t tf_map_count(const tf_map_t *m);

/* Id keys. put replaces an existing value. Returns 0 or TF_ENOMEM. */
int tf_map_put_id(tf_map_t *m, uint64_t key, void *value);
void *tf_map_get_id(const tf_map_t *m, uint64_t key);
/* Returns the removed value or NULL. */
void *tf_map_del_id(tf_map_t *m, uint64_t key);

/* String keys (a map uses one kind of key only). */
int tf_map_put_str(tf_map_t *m, const char *key, void *value);
void *tf_map_get_str(const tf_map_t *m, const char *key);
void *tf_map_del_str(tf_map_t *m, const char *key);

/* Iteration: *pos starts at 0; returns 0 with *value (and key) set, or
 * TF_ENOENT at the end. Do not insert while iterating; deleting the entry
 * just returned is allowed. key_str is set for string maps, key_id for id
 * maps; either pointer may be NULL. */
int tf_map_next(const tf_map_t *m, size_t *pos, uint64_t *key_id,
                const char **key_str, void **value);

#endif
