/*
 * logblock.h - sealed, compressed blocks of a step's log, the part of
 * log storage every engine shares.
 *
 * A step's log is stored in two forms (docs/internals.md, "Log blocks"):
 * the open tail as the output chunks the slave sent, uncompressed, so the
 * live log and tail reads see them at once; and the sealed part as
 * blocks, each a run of whole chunks compressed together. An engine seals
 * the tail once it holds TF_LOGBLOCK_TARGET bytes, and the rest when the
 * step ends. An engine stores a block as (byte offset, line, raw length,
 * codec, blob) and nothing else: what the blob is, how it is made and how
 * it is checked is this module's.
 *
 * A blob is a zstd frame holding its content size and a checksum of the
 * content; unpacking refuses a blob whose frame does not decode, whose
 * checksum does not match or whose size is not the row's raw length
 * (TF_ECORRUPT), so a damaged block is an error, never wrong bytes.
 * Codec 0 (raw) is kept for blocks that do not compress.
 *
 * A blob made by a sealer (below) is one frame compressed as a stream:
 * its header may not carry the content size, and then the decoded
 * length itself must be the row's.
 *
 * Threads: a packer belongs to one thread (the writer); tf_logblock_unpack
 * may run on any thread. A sealer is a packer per stream on a thread of
 * its own, fed by the writer thread, which alone calls its functions.
 */
#ifndef TF_STORE_LOGBLOCK_H
#define TF_STORE_LOGBLOCK_H

#include <stddef.h>
#include <stdint.h>

/* Seal the open tail once it holds this many bytes. Bigger blocks pack
 * better (compiler logs: 7.6% of raw at 512 KiB, 6.9% at 1 MiB, zstd level
 * 7) but cost more to unpack for a small read (1 MiB: about 1 ms). */
#define TF_LOGBLOCK_TARGET (1024u * 1024u)
/* No block is bigger raw: reading refuses larger lengths as corrupt. */
#define TF_LOGBLOCK_MAX (16u * 1024u * 1024u)
/* zstd's level. On tests/bench/compilerlog.py's logs in 1 MiB blocks:
 * level 3 (zstd's default) 9.0% of raw, 5: 7.8%, 6: 7.3%, 7: 6.9%, 9:
 * 6.6%. 6 keeps a database under 8% of the raw logs with sqlite's own
 * overhead (7.4%) at about 11% less CPU than 7, and the sealer thread
 * is the largest share of the master's CPU per MiB ingested. */
#define TF_LOGBLOCK_LEVEL 6

enum {
    TF_LOGBLOCK_RAW = 0,
    TF_LOGBLOCK_ZSTD = 1,
};

typedef struct tf_logpacker tf_logpacker_t;

/* A packer (its compression context and output buffer), or NULL when out
 * of memory. Freed with tf_logpacker_free (NULL is fine). */
tf_logpacker_t *tf_logpacker_new(void);
void tf_logpacker_free(tf_logpacker_t *p);

/* Packs n bytes of raw log (n <= TF_LOGBLOCK_MAX). On 0, *blob (len
 * *blob_len, owned by p, valid until the next call) and *codec describe
 * the block. TF_E2BIG, TF_ENOMEM or TF_EIO otherwise. */
int tf_logblock_pack(tf_logpacker_t *p, const void *raw, size_t n,
                     const void **blob, size_t *blob_len, int *codec);

/* Unpacks a block stored as (codec, blob of blob_len bytes) whose raw
 * length is raw_len into dst (room for raw_len bytes, caller's). Returns
 * 0, or TF_ECORRUPT (logged by the caller: it knows which block) when the
 * blob is not exactly raw_len bytes of intact content. */
int tf_logblock_unpack(int codec, const void *blob, size_t blob_len,
                       uint64_t raw_len, void *dst);

/* ---- The sealer: compressing a running step's next block while its
 * output arrives ----
 *
 * The writer stores each output chunk of a step that has a stream and
 * also hands a copy to the stream (tf_logsealer_feed); the sealer's
 * thread compresses it meanwhile. When the tail holds a block's worth,
 * tf_logsealer_finish ends the frame (waiting only for what is still
 * queued) and the writer stores the block in the same group as before:
 * sealing keeps its place and meaning, the compression moves off the
 * writer thread and the tail is never read back. A stream holds at most
 * TF_LOGSTREAM_CAP raw bytes; TF_LOGSEALER_STREAMS streams exist (each
 * is a compression context and two buffers, a few MiB), so only that
 * many steps stream at once and the others are sealed on the writer. */
#define TF_LOGSEALER_STREAMS 4
#define TF_LOGSTREAM_CAP (TF_LOGBLOCK_TARGET + 256u * 1024u)

typedef struct tf_logsealer tf_logsealer_t;

/* A sealer and its thread, or NULL when out of memory or threads (the
 * writer then seals as before). Freed with tf_logsealer_free (waits for
 * the thread; NULL is fine). */
tf_logsealer_t *tf_logsealer_new(void);
void tf_logsealer_free(tf_logsealer_t *s);

/* Appends n bytes (copied) to stream i's frame (i < TF_LOGSEALER_STREAMS);
 * the first feed after tf_logsealer_start begins a new frame. Returns 0,
 * or TF_E2BIG when the frame would pass TF_LOGSTREAM_CAP (nothing is
 * queued; the caller drops the stream). May wait for the sealer's queue. */
int tf_logsealer_feed(tf_logsealer_t *s, unsigned i, const void *data,
                      size_t n);

/* Forgets stream i's frame: the next feed begins a new one. */
void tf_logsealer_start(tf_logsealer_t *s, unsigned i);

/* Ends stream i's frame and waits for it: on 0, *blob (*blob_len bytes,
 * owned by the sealer, valid until stream i is fed or started again) and
 * *codec describe the block of all bytes fed since the start; TF_EINVAL
 * when nothing was fed, TF_EIO when compressing failed. */
int tf_logsealer_finish(tf_logsealer_t *s, unsigned i, const void **blob,
                        size_t *blob_len, int *codec);

/* One decompressed block kept by a reader that reads a log piece by piece
 * (the API's log stream), so a block is unpacked once, not per piece.
 * Zero-initialise; release with tf_logcache_clear. */
typedef struct tf_logcache {
    uint64_t build_id;
    unsigned step;
    uint64_t offset, line; /* the block's first byte and its line */
    size_t len;            /* 0: empty */
    unsigned char *data;   /* malloc'd, len bytes */
} tf_logcache_t;

void tf_logcache_clear(tf_logcache_t *c);

#endif
