/*
 * logblock.c - packing and unpacking sealed log blocks (see logblock.h).
 *
 * zstd with the frame's content checksum on: decoding verifies the
 * content's xxhash, and the frame header carries the content size, which
 * must equal the row's raw length. Those two checks are what makes a
 * damaged block an error: zstd alone would happily decode some bit flips
 * in literals into different bytes.
 */
#include "store/logblock.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "tf_err.h"

struct tf_logpacker {
    ZSTD_CCtx *cctx;
    void *out;
    size_t cap;
};

tf_logpacker_t *tf_logpacker_new(void)
{
    tf_logpacker_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->cctx = ZSTD_createCCtx();
    if (!p->cctx ||
        ZSTD_isError(ZSTD_CCtx_setParameter(p->cctx, ZSTD_c_compressionLevel,
                                            TF_LOGBLOCK_LEVEL)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(p->cctx, ZSTD_c_checksumFlag,
                                            1)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(p->cctx,
                                            ZSTD_c_contentSizeFlag, 1))) {
        tf_logpacker_free(p);
        return NULL;
    }
    return p;
}

void tf_logpacker_free(tf_logpacker_t *p)
{
    if (!p)
        return;
    ZSTD_freeCCtx(p->cctx);
    free(p->out);
    free(p);
}

int tf_logblock_pack(tf_logpacker_t *p, const void *raw, size_t n,
                     const void **blob, size_t *blob_len, int *codec)
{
    if (n > TF_LOGBLOCK_MAX)
        return TF_E2BIG;
    size_t need = ZSTD_compressBound(n);
    if (need > p->cap) {
        void *o = realloc(p->out, need);
        if (!o)
            return TF_ENOMEM;
        p->out = o;
        p->cap = need;
    }
    size_t z = ZSTD_compress2(p->cctx, p->out, p->cap, raw, n);
    if (ZSTD_isError(z))
        return TF_EIO;
    if (z >= n) {
        /* Incompressible (or tiny): store it as it is. */
        *blob = raw;
        *blob_len = n;
        *codec = TF_LOGBLOCK_RAW;
        return 0;
    }
    *blob = p->out;
    *blob_len = z;
    *codec = TF_LOGBLOCK_ZSTD;
    return 0;
}

int tf_logblock_unpack(int codec, const void *blob, size_t blob_len,
                       uint64_t raw_len, void *dst)
{
    if (raw_len > TF_LOGBLOCK_MAX || (!blob && blob_len))
        return TF_ECORRUPT;
    if (codec == TF_LOGBLOCK_RAW) {
        if (blob_len != raw_len)
            return TF_ECORRUPT;
        if (raw_len)
            memcpy(dst, blob, (size_t)raw_len);
        return 0;
    }
    if (codec != TF_LOGBLOCK_ZSTD || !blob)
        return TF_ECORRUPT;
    /* A frame compressed as a stream (the sealer's) may not state its
     * size: then decoding into exactly raw_len bytes must fill them. */
    unsigned long long fcs = ZSTD_getFrameContentSize(blob, blob_len);
    if (fcs == ZSTD_CONTENTSIZE_ERROR ||
        (fcs != ZSTD_CONTENTSIZE_UNKNOWN && fcs != raw_len))
        return TF_ECORRUPT;
    /* The whole blob must be exactly one frame: trailing bytes are
     * damage, not padding. */
    size_t fsz = ZSTD_findFrameCompressedSize(blob, blob_len);
    if (ZSTD_isError(fsz) || fsz != blob_len)
        return TF_ECORRUPT;
    size_t got = ZSTD_decompress(dst, (size_t)raw_len, blob, blob_len);
    if (ZSTD_isError(got) || got != raw_len)
        return TF_ECORRUPT;
    return 0;
}

/* ---- The sealer ----
 *
 * The writer appends each fed chunk to its stream's raw buffer (fixed at
 * TF_LOGSTREAM_CAP bytes, so it never moves) and queues a command naming
 * the range; the thread compresses queued ranges in order. The writer
 * writes only past what it has queued and the thread reads only queued
 * ranges, so the buffer needs no lock beyond the queue's. */

#define SEALER_QUEUE 64

typedef struct stream {
    ZSTD_CCtx *cctx;
    unsigned char *raw; /* TF_LOGSTREAM_CAP bytes */
    size_t n;           /* raw bytes fed (writer side) */
    unsigned char *out; /* ZSTD_compressBound(TF_LOGSTREAM_CAP) bytes */
    size_t out_len;     /* compressed so far (sealer side) */
    int fresh;          /* the next feed begins a frame (writer side) */
    int done;           /* under mu: the last finish is ready */
    unsigned queued;    /* under mu: its commands not yet carried out */
    int rc;             /* its result */
} stream_t;

typedef struct cmd {
    unsigned stream;
    int end;          /* 0: compress [off, off + n); 1: end the frame */
    int begin;        /* reset the context first */
    size_t off, n;
} cmd_t;

struct tf_logsealer {
    pthread_mutex_t mu;
    pthread_cond_t work; /* a command was queued, or stop */
    pthread_cond_t done; /* a command was carried out */
    cmd_t q[SEALER_QUEUE];
    unsigned head, count;
    int stop;
    stream_t st[TF_LOGSEALER_STREAMS];
    size_t out_cap;
    pthread_t thread;
};

static int stream_init(stream_t *t, size_t out_cap)
{
    t->cctx = ZSTD_createCCtx();
    t->raw = malloc(TF_LOGSTREAM_CAP);
    t->out = malloc(out_cap);
    if (!t->cctx || !t->raw || !t->out)
        return TF_ENOMEM;
    t->fresh = 1;
    return 0;
}

/* Sets the context's parameters for a new frame: those of
 * tf_logpacker_new. The size is not known up front, so zstd takes the
 * level's parameters for a large input (a 2 MiB window instead of 1 MiB:
 * the same matches in a block, which is smaller than either). */
static int stream_reset(stream_t *t)
{
    ZSTD_CCtx *c = t->cctx;
    t->out_len = 0;
    if (ZSTD_isError(ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel,
                                            TF_LOGBLOCK_LEVEL)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1)))
        return TF_EIO;
    return 0;
}

/* Runs one command on the sealer's thread (no lock held). */
static int sealer_run(tf_logsealer_t *s, const cmd_t *c)
{
    stream_t *t = &s->st[c->stream];
    ZSTD_outBuffer out = {t->out, s->out_cap, t->out_len};
    ZSTD_inBuffer in = {t->raw + c->off, c->n, 0};
    size_t left;

    if (c->begin && stream_reset(t) != 0)
        return TF_EIO;
    out.pos = t->out_len;
    do {
        left = ZSTD_compressStream2(t->cctx, &out, &in,
                                    c->end ? ZSTD_e_end : ZSTD_e_continue);
        if (ZSTD_isError(left))
            return TF_EIO;
    } while (c->end ? left != 0 : in.pos < in.size);
    t->out_len = out.pos;
    return 0;
}

static void *sealer_main(void *arg)
{
    tf_logsealer_t *s = arg;
    int failed[TF_LOGSEALER_STREAMS] = {0};

    /* Named so top, perf and bench_ingest.py tell the threads apart. */
    pthread_setname_np(pthread_self(), "tf-sealer");
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->count && !s->stop)
            pthread_cond_wait(&s->work, &s->mu);
        if (!s->count)
            break; /* stopping, and every command is done */
        cmd_t c = s->q[s->head];
        pthread_mutex_unlock(&s->mu);
        if (c.begin)
            failed[c.stream] = 0;
        int rc = failed[c.stream] ? TF_EIO : sealer_run(s, &c);
        if (rc != 0)
            failed[c.stream] = 1;
        pthread_mutex_lock(&s->mu);
        s->head = (s->head + 1) % SEALER_QUEUE;
        s->count--;
        s->st[c.stream].queued--;
        if (c.end) {
            s->st[c.stream].rc = rc;
            s->st[c.stream].done = 1;
        }
        pthread_cond_broadcast(&s->done);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

tf_logsealer_t *tf_logsealer_new(void)
{
    tf_logsealer_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->out_cap = ZSTD_compressBound(TF_LOGSTREAM_CAP);
    for (unsigned i = 0; i < TF_LOGSEALER_STREAMS; i++)
        if (stream_init(&s->st[i], s->out_cap) != 0)
            goto fail;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->done, NULL);
    if (pthread_create(&s->thread, NULL, sealer_main, s) != 0) {
        pthread_cond_destroy(&s->done);
        pthread_cond_destroy(&s->work);
        pthread_mutex_destroy(&s->mu);
        goto fail;
    }
    return s;

fail:
    for (unsigned i = 0; i < TF_LOGSEALER_STREAMS; i++) {
        ZSTD_freeCCtx(s->st[i].cctx);
        free(s->st[i].raw);
        free(s->st[i].out);
    }
    free(s);
    return NULL;
}

void tf_logsealer_free(tf_logsealer_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->done);
    pthread_cond_destroy(&s->work);
    pthread_mutex_destroy(&s->mu);
    for (unsigned i = 0; i < TF_LOGSEALER_STREAMS; i++) {
        ZSTD_freeCCtx(s->st[i].cctx);
        free(s->st[i].raw);
        free(s->st[i].out);
    }
    free(s);
}

/* Queues c, waiting while the queue is full (the writer's backpressure:
 * the sealer is behind). */
static void sealer_push(tf_logsealer_t *s, const cmd_t *c)
{
    pthread_mutex_lock(&s->mu);
    while (s->count == SEALER_QUEUE)
        pthread_cond_wait(&s->done, &s->mu);
    s->q[(s->head + s->count) % SEALER_QUEUE] = *c;
    s->count++;
    s->st[c->stream].queued++;
    if (c->end)
        s->st[c->stream].done = 0;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
}

void tf_logsealer_start(tf_logsealer_t *s, unsigned i)
{
    /* A dropped frame's ranges may still be read by the thread: wait for
     * them before the buffer is written again. */
    pthread_mutex_lock(&s->mu);
    while (s->st[i].queued)
        pthread_cond_wait(&s->done, &s->mu);
    pthread_mutex_unlock(&s->mu);
    s->st[i].n = 0;
    s->st[i].fresh = 1;
}

int tf_logsealer_feed(tf_logsealer_t *s, unsigned i, const void *data,
                      size_t n)
{
    stream_t *t = &s->st[i];
    if (n > TF_LOGSTREAM_CAP - t->n)
        return TF_E2BIG;
    if (!n)
        return 0;
    /* The thread reads only ranges already queued: this one is past
     * them. */
    memcpy(t->raw + t->n, data, n);
    cmd_t c = {.stream = i, .begin = t->fresh, .off = t->n, .n = n};
    t->fresh = 0;
    t->n += n;
    sealer_push(s, &c);
    return 0;
}

int tf_logsealer_finish(tf_logsealer_t *s, unsigned i, const void **blob,
                        size_t *blob_len, int *codec)
{
    stream_t *t = &s->st[i];
    if (t->fresh || !t->n)
        return TF_EINVAL;
    cmd_t c = {.stream = i, .end = 1, .off = t->n, .n = 0};
    sealer_push(s, &c);
    pthread_mutex_lock(&s->mu);
    while (!t->done)
        pthread_cond_wait(&s->done, &s->mu);
    int rc = t->rc;
    pthread_mutex_unlock(&s->mu);
    t->fresh = 1; /* the frame is ended: the next feed begins another */
    if (rc != 0)
        return rc;
    if (t->out_len >= t->n) {
        *blob = t->raw;
        *blob_len = t->n;
        *codec = TF_LOGBLOCK_RAW;
    } else {
        *blob = t->out;
        *blob_len = t->out_len;
        *codec = TF_LOGBLOCK_ZSTD;
    }
    t->n = 0;
    return 0;
}

void tf_logcache_clear(tf_logcache_t *c)
{
    if (!c)
        return;
    free(c->data);
    memset(c, 0, sizeof(*c));
}
