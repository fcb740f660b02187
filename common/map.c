/*
 * map.c - open-addressing hash maps (see map.h).
 *
 * Slots are empty, full, or deleted (a tombstone that keeps probe chains
 * intact). Growth rehashes into a table twice the size and drops the
 * tombstones. String keys hash with FNV-1a, ids with a 64-bit finaliser
 * (splitmix64) so sequential build ids spread over the table.
 */
#include "map.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tf_err.h"

enum { SLOT_EMPTY = 0, SLOT_FULL = 1, SLOT_DELETED = 2 };

typedef struct slot {
    uint64_t hash;
    uint64_t id;
    char *str;
    void *value;
    int state;
} slot_t;

struct tf_map {
    slot_t *slots;
    size_t cap; /* power of two, or 0 */
    size_t count;
    size_t used; /* full + deleted */
};

static uint64_t hash_id(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

tf_map_t *tf_map_new(void)
{
    return calloc(1, sizeof(tf_map_t));
}

void tf_map_free(tf_map_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].str);
    free(m->slots);
    free(m);
}

size_t tf_map_count(const tf_map_t *m)
{
    return m->count;
}

static bool slot_matches(const slot_t *s, uint64_t h, uint64_t id,
                         const char *str)
{
    if (s->state != SLOT_FULL || s->hash != h)
        return false;
    if (str)
        return s->str && strcmp(s->str, str) == 0;
    return !s->str && s->id == id;
}

/* Returns the slot holding the key, or NULL. */
static slot_t *find(const tf_map_t *m, uint64_t h, uint64_t id,
                    const char *str)
{
    if (m->cap == 0)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask, n = 0; n < m->cap; i = (i + 1) & mask, n++) {
        slot_t *s = &m->slots[i];
        if (s->state == SLOT_EMPTY)
            return NULL;
        if (slot_matches(s, h, id, str))
            return s;
    }
    return NULL;
}

static int grow(tf_map_t *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    /* Only tombstones filling the table: rehash at the same size. */
    if (m->cap && m->count * 10 < m->cap * 5)
        ncap = m->cap;
    slot_t *ns = calloc(ncap, sizeof(slot_t));
    if (!ns)
        return TF_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        slot_t *s = &m->slots[i];
        if (s->state != SLOT_FULL)
            continue;
        size_t j = s->hash & (ncap - 1);
        while (ns[j].state == SLOT_FULL)
            j = (j + 1) & (ncap - 1);
        ns[j] = *s;
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    m->used = m->count;
    return 0;
}

static int put(tf_map_t *m, uint64_t h, uint64_t id, const char *str,
               void *value)
{
    slot_t *s = find(m, h, id, str);
    if (s) {
        s->value = value;
        return 0;
    }
    if ((m->used + 1) * 10 > m->cap * 7) {
        int rc = grow(m);
        if (rc)
            return rc;
    }
    char *copy = NULL;
    if (str) {
        copy = strdup(str);
        if (!copy)
            return TF_ENOMEM;
    }
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->slots[i].state == SLOT_FULL)
        i = (i + 1) & mask;
    if (m->slots[i].state == SLOT_EMPTY)
        m->used++;
    m->slots[i] = (slot_t){.hash = h, .id = id, .str = copy, .value = value,
                           .state = SLOT_FULL};
    m->count++;
    return 0;
}

static void *del(tf_map_t *m, uint64_t h, uint64_t id, const char *str)
{
    slot_t *s = find(m, h, id, str);
    if (!s)
        return NULL;
    void *v = s->value;
    free(s->str);
    s->str = NULL;
    s->value = NULL;
    s->state = SLOT_DELETED;
    m->count--;
    return v;
}

int tf_map_put_id(tf_map_t *m, uint64_t key, void *value)
{
    return put(m, hash_id(key), key, NULL, value);
}

void *tf_map_get_id(const tf_map_t *m, uint64_t key)
{
    slot_t *s = find(m, hash_id(key), key, NULL);
    return s ? s->value : NULL;
}

void *tf_map_del_id(tf_map_t *m, uint64_t key)
{
    return del(m, hash_id(key), key, NULL);
}

int tf_map_put_str(tf_map_t *m, const char *key, void *value)
{
    return put(m, hash_str(key), 0, key, value);
}

void *tf_map_get_str(const tf_map_t *m, const char *key)
{
    slot_t *s = find(m, hash_str(key), 0, key);
    return s ? s->value : NULL;
}

void *tf_map_del_str(tf_map_t *m, const char *key)
{
    return del(m, hash_str(key), 0, key);
}

int tf_map_next(const tf_map_t *m, size_t *pos, uint64_t *key_id,
                const char **key_str, void **value)
{
    for (size_t i = *pos; i < m->cap; i++) {
        const slot_t *s = &m->slots[i];
        if (s->state != SLOT_FULL)
            continue;
        *pos = i + 1;
        if (key_id)
            *key_id = s->id;
        if (key_str)
            *key_str = s->str;
        if (value)
            *value = s->value;
        return 0;
    }
    *pos = m->cap;
    return TF_ENOENT;
}
