/*
 * follow.h - the read behind a live log follower (net/live.c): on a
 * master sharing the farm (store.shared), the output of a step that
 * another master runs is read from what that master stored, with the log
 * endpoint's range read (store/queries.c, tf_q_log_follow: sealed zstd
 * blocks, then the open tail), on a store reader thread, never on the
 * loop.
 *
 * The live feed (net/) may not reach store/ itself (the folders' one
 * direction, docs/internals.md): it reads through here, as the API does.
 */
#ifndef TF_API_FOLLOW_H
#define TF_API_FOLLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/master.h"
#include "store/store.h"

/* Bytes one read gives at most. */
#define TF_API_FOLLOW_PIECE (64u * 1024)
/* from: read the size only (a follower's first read). */
#define TF_API_FOLLOW_SIZE UINT64_MAX

/* One read of a follower: the caller fills the first four fields; the
 * read fills the rest. The caller owns it; it must live until done. */
typedef struct tf_api_follow {
    void *ctx;         /* the caller's */
    uint64_t build_id;
    unsigned step;
    uint64_t from;     /* the first byte wanted, or TF_API_FOLLOW_SIZE */
    uint64_t size;     /* the step's stored size */
    bool ended;        /* the step is done or its build finished */
    size_t got;        /* bytes from `from` in buf */
    unsigned char buf[TF_API_FOLLOW_PIECE];
} tf_api_follow_t;

/* Reads f's step on a store reader (tf_q_log_follow, one snapshot), then
 * calls done(f, rc) on the loop thread: rc 0, TF_ENOENT (no such step
 * stored yet), TF_ECORRUPT (f->got bytes before the damage are good),
 * TF_ESTORE, TF_ENOMEM, or TF_ESTATE when the store was closing. Returns
 * 0, or a negative code and then done is never called. */
int tf_api_follow_read(tf_master_t *m, tf_api_follow_t *f,
                       tf_store_done_cb done);

#endif
