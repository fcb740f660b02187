/*
 * cache.h - answers that cost work, kept as rendered bytes with an ETag
 * (classic TestFarm's "information caching"; docs/internals.md, "Cached
 * answers").
 *
 * A cacheable handler asks tf_api_cache_answer first: a fresh entry for
 * the request's path and query answers at once (200 with the bytes, or
 * 304 when If-None-Match names its tag). Otherwise the request is marked
 * and computed as usual; net hands the rendered JSON to
 * tf_api_cache_store, which keeps it and tags the answer.
 *
 * Freshness: an entry is tagged with the store's generation when its
 * request arrived (tf_store_generation: it moves when a write that
 * changes state is queued and again when it commits), so an answer
 * computed from older state is never served after the event that changed
 * it; entries also expire after TF_API_CACHE_TTL_MS because some answers
 * hold clock-derived fields (elapsed_ms, time_ms) and log sizes of
 * running steps, which move without an event. A finished build's answer
 * changes only when retention removes logs (tf_store_removals), and is
 * kept regardless of both otherwise. A config reload flushes everything
 * (tf_api_cache_flush): the links in answers come from the config.
 *
 * Coalescing (a busy farm moves the generation many times a second, and
 * an answer dropped at each move would be rendered for nearly every
 * request): a stale entry is not dropped, and a hot one (its key was
 * asked for TF_API_CACHE_HOT times or more in the current and the
 * previous second) is still served: while a request renders its successor
 * (the "renderer"), and until TF_API_CACHE_COALESCE_MS after its own
 * render started. So a hammered answer is rendered at most every
 * COALESCE_MS, and an answer served is never more than COALESCE_MS plus
 * one render behind the events. An entry that is not hot is never
 * served stale: a client asking after its own change sees it unless
 * others hammer the same answer. A renderer that goes away without an
 * answer (its client left, an error) releases the key
 * (tf_api_cache_release); one that takes over TF_API_CACHE_RENDER_MAX_MS
 * is not waited for.
 *
 * Loop thread only. Memory is capped (entries and bytes); the oldest
 * entry goes first.
 */
#ifndef TF_API_CACHE_H
#define TF_API_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "api/request.h"

struct tf_master;

#define TF_API_CACHE_TTL_MS 1000
#define TF_API_CACHE_COALESCE_MS 100
#define TF_API_CACHE_RENDER_MAX_MS 1000
#define TF_API_CACHE_HOT 64
#define TF_API_CACHE_MAX_ENTRIES 4096
#define TF_API_CACHE_MAX_BYTES (64u * 1024u * 1024u)

/* Answers r from the cache and returns true, or marks r cacheable (its
 * 200 JSON answer will be kept) and returns false. GET requests only. */
bool tf_api_cache_answer(tf_http_req_t *r);

/* Drops every entry, finished builds' included, and refuses to keep
 * answers to requests that arrived before: called when the config is
 * reloaded, since answers hold links made from it (web_root, public_url,
 * the commit URL template) and finished builds' answers are otherwise
 * kept for good. */
void tf_api_cache_flush(struct tf_master *m);

/* Counters for GET /api/v1/master: stale counts answers served from a
 * stale entry (being rendered again, or hot). */
typedef struct tf_api_cache_stats {
    uint64_t hits, misses, not_modified, stored, stale;
    uint64_t entries, bytes;
} tf_api_cache_stats_t;
void tf_api_cache_stats(const struct tf_master *m, tf_api_cache_stats_t *out);

/* Frees the master's cache (at shutdown; NULL-safe on an empty one). */
void tf_api_cache_free(struct tf_master *m);

#endif
