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
    unsigned long long fcs = ZSTD_getFrameContentSize(blob, blob_len);
    if (fcs == ZSTD_CONTENTSIZE_ERROR || fcs == ZSTD_CONTENTSIZE_UNKNOWN ||
        fcs != raw_len)
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

void tf_logcache_clear(tf_logcache_t *c)
{
    if (!c)
        return;
    free(c->data);
    memset(c, 0, sizeof(*c));
}
