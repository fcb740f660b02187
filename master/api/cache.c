/*
 * cache.c - rendered answers kept with an ETag (see cache.h).
 *
 * One string map from "path?query" to an entry, and a FIFO list of the
 * entries for eviction. Entries are immutable once stored: a stale one is
 * replaced by the next answer rendered for its key, never patched. The
 * ETag is a 64-bit FNV-1a hash of the bytes, so an answer rendered again
 * with the same content keeps its tag and clients holding it still get
 * 304.
 *
 * A stale entry stays until its renderer stores the new one (cache.h,
 * "Coalescing"): it records who renders (a serial the request carries,
 * not a pointer, so a request freed meanwhile is harmless), since when,
 * and how often its key is asked for (whether it is hot), which its
 * successor inherits.
 */
#include "api/cache.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "core/master.h"
#include "list.h"
#include "map.h"
#include "store/store.h"

typedef struct entry {
    tf_list_t node;     /* cache->fifo, oldest first */
    char *key;          /* owned copy (the map has its own) */
    char etag[24];      /* "\"%016llx\"" */
    uint64_t gen;
    uint64_t removals;  /* tf_store_removals when asked */
    int64_t made_ms;
    int64_t render_ms;  /* tf_mono_ms when its render started */
    uint64_t renderer;  /* the request rendering its successor (0: none) */
    int64_t renderer_ms; /* tf_mono_ms when that render started */
    /* Requests for its key in the current and the previous second
     * (tf_mono_ms windows), carried over to its successor: how hot the
     * key is. */
    int64_t win_ms;
    uint32_t win_cur, win_prev;
    bool immutable;
    size_t len;
    unsigned char body[];
} entry_t;

typedef struct tf_api_cache {
    tf_map_t *map;      /* key -> entry_t */
    tf_list_t fifo;
    size_t bytes;
    uint64_t epoch;     /* moves at each flush */
    uint64_t serial;    /* the last renderer's */
    tf_api_cache_stats_t st;
} tf_api_cache_t;

static tf_api_cache_t *cache_of(struct tf_master *m, bool create)
{
    if (!m->api_cache && create) {
        tf_api_cache_t *c = calloc(1, sizeof(*c));
        if (!c)
            return NULL;
        c->map = tf_map_new();
        if (!c->map) {
            free(c);
            return NULL;
        }
        tf_list_init(&c->fifo);
        m->api_cache = c;
    }
    return m->api_cache;
}

static void entry_drop(tf_api_cache_t *c, entry_t *e)
{
    tf_map_del_str(c->map, e->key);
    tf_list_unlink(&e->node);
    c->bytes -= e->len;
    free(e->key);
    free(e);
}

/* "path?arg&arg" of r, or false when it does not fit. */
static bool key_of(const tf_http_req_t *r, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "%s", r->path);
    for (size_t i = 0; i < r->nargs && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%c%s", i ? '&' : '?',
                              r->args[i]);
    return n < cap;
}

static bool etag_matches(const char *inm, const char *etag)
{
    if (!inm[0])
        return false;
    if (strcmp(inm, "*") == 0)
        return true;
    return strstr(inm, etag) != NULL; /* a list, or W/"..." */
}

static bool fresh(const tf_master_t *m, const entry_t *e)
{
    if (e->immutable)
        return e->removals == tf_store_removals(m->store);
    return e->gen == tf_store_generation(m->store) &&
           tf_now_ms() - e->made_ms < TF_API_CACHE_TTL_MS;
}

static void serve(tf_api_cache_t *c, tf_http_req_t *r, const entry_t *e,
                  uint64_t *counter)
{
    if (etag_matches(r->if_none_match, e->etag)) {
        c->st.not_modified++;
        tf_http_respond_etag(r, 304, "application/json", NULL, 0, e->etag);
    } else {
        (*counter)++;
        tf_http_respond_etag(r, 200, "application/json", e->body, e->len,
                             e->etag);
    }
}

/* Counts one request for e's key; returns whether the key is hot. */
static bool asked(entry_t *e, int64_t now)
{
    if (now - e->win_ms >= 1000) {
        e->win_prev = now - e->win_ms < 2000 ? e->win_cur : 0;
        e->win_cur = 0;
        e->win_ms = now;
    }
    if (e->win_cur < UINT32_MAX)
        e->win_cur++;
    return (uint64_t)e->win_cur + e->win_prev >= TF_API_CACHE_HOT;
}

bool tf_api_cache_answer(tf_http_req_t *r)
{
    tf_master_t *m = r->m;
    r->cacheable = false;
    if (r->method != TF_HTTP_GET || !m->store ||
        !key_of(r, r->cache_key, sizeof(r->cache_key)))
        return false;
    tf_api_cache_t *c = cache_of(m, true);
    if (!c)
        return false;
    entry_t *e = tf_map_get_str(c->map, r->cache_key);
    int64_t now = tf_mono_ms();
    /* Asked for HOT times or more in a second or two: others ask for it
     * all the time, so a few ms more or less matter to no one (a lone
     * client's answer is never stale). */
    bool hot = e && asked(e, now);
    if (e && fresh(m, e)) {
        serve(c, r, e, &c->st.hits);
        return true;
    }
    if (e && !e->immutable) {
        bool rendering = e->renderer &&
                         now - e->renderer_ms < TF_API_CACHE_RENDER_MAX_MS;
        if (hot && (rendering ||
                    now - e->render_ms < TF_API_CACHE_COALESCE_MS)) {
            /* The previous answer, at most COALESCE_MS and a render old:
             * said in a header, so a page that fetched it after the last
             * event of a burst fetches again instead of keeping it. */
            tf_http_header(r, "x-tf-stale", "1");
            serve(c, r, e, &c->st.stale);
            return true;
        }
        if (!e->renderer || !rendering) {
            e->renderer = r->cache_serial = ++c->serial;
            e->renderer_ms = now;
        }
    }
    c->st.misses++;
    r->cacheable = true;
    r->cache_immutable = false;
    r->cache_gen = tf_store_generation(m->store);
    r->cache_removals = tf_store_removals(m->store);
    r->cache_epoch = c->epoch;
    r->cache_asked_ms = now;
    return false;
}

void tf_api_cache_release(tf_http_req_t *r)
{
    tf_api_cache_t *c = r->m ? r->m->api_cache : NULL;
    if (!c || !r->cache_serial)
        return;
    entry_t *e = tf_map_get_str(c->map, r->cache_key);
    if (e && e->renderer == r->cache_serial)
        e->renderer = 0;
    r->cache_serial = 0;
}

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

bool tf_api_cache_store(tf_http_req_t *r, const void *body, size_t len,
                        char *etag, size_t etag_len)
{
    tf_master_t *m = r->m;
    snprintf(etag, etag_len, "\"%016" PRIx64 "\"", fnv1a(body, len));
    bool not_modified = etag_matches(r->if_none_match, etag);
    tf_api_cache_t *c = cache_of(m, true);
    /* An answer asked for before a flush may hold the old config's links. */
    if (!c || len > TF_API_CACHE_MAX_BYTES / 8 || r->cache_epoch != c->epoch)
        return not_modified;
    entry_t *old = tf_map_get_str(c->map, r->cache_key);
    int64_t win_ms = 0;
    uint32_t win_cur = 0, win_prev = 0;
    if (old) {
        win_ms = old->win_ms;
        win_cur = old->win_cur;
        win_prev = old->win_prev;
        entry_drop(c, old);
    }
    while (!tf_list_empty(&c->fifo) &&
           (tf_map_count(c->map) >= TF_API_CACHE_MAX_ENTRIES ||
            c->bytes + len > TF_API_CACHE_MAX_BYTES))
        entry_drop(c, tf_list_entry(c->fifo.next, entry_t, node));
    entry_t *e = malloc(sizeof(*e) + len);
    if (!e)
        return not_modified;
    e->key = strdup(r->cache_key);
    if (!e->key || tf_map_put_str(c->map, r->cache_key, e) != 0) {
        free(e->key);
        free(e);
        return not_modified;
    }
    snprintf(e->etag, sizeof(e->etag), "%s", etag);
    e->gen = r->cache_gen;
    e->removals = r->cache_removals;
    e->made_ms = tf_now_ms();
    e->render_ms = r->cache_asked_ms;
    e->renderer = 0;
    e->renderer_ms = 0;
    e->win_ms = win_ms;
    e->win_cur = win_cur;
    e->win_prev = win_prev;
    e->immutable = r->cache_immutable;
    e->len = len;
    memcpy(e->body, body, len);
    tf_list_push_back(&c->fifo, &e->node);
    c->bytes += len;
    c->st.stored++;
    return not_modified;
}

void tf_api_cache_stats(const struct tf_master *m, tf_api_cache_stats_t *out)
{
    const tf_api_cache_t *c = m->api_cache;
    memset(out, 0, sizeof(*out));
    if (!c)
        return;
    *out = c->st;
    out->entries = tf_map_count(c->map);
    out->bytes = c->bytes;
}

void tf_api_cache_flush(struct tf_master *m)
{
    tf_api_cache_t *c = m->api_cache;
    if (!c)
        return;
    while (!tf_list_empty(&c->fifo))
        entry_drop(c, tf_list_entry(c->fifo.next, entry_t, node));
    c->epoch++;
}

void tf_api_cache_free(struct tf_master *m)
{
    tf_api_cache_t *c = m->api_cache;
    if (!c)
        return;
    while (!tf_list_empty(&c->fifo))
        entry_drop(c, tf_list_entry(c->fifo.next, entry_t, node));
    tf_map_free(c->map);
    free(c);
    m->api_cache = NULL;
}
