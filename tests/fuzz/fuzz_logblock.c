/*
 * fuzz_logblock.c - libFuzzer driver for tf_logblock_unpack()
 * (master/store/logblock.c), the decoder of stored log blocks.
 *
 * The input's first byte picks the codec (0 raw, 1 zstd, others unknown),
 * the next 3 the claimed raw length (capped at 4 MiB), the rest is the
 * blob. Checks the contract: the answer is 0 or TF_ECORRUPT; an unknown
 * codec or a raw blob of another length is refused; and an accepted zstd
 * blob, packed again and unpacked, gives the same bytes (what is accepted
 * is exactly raw_len bytes of content, the only bytes the API may send).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/logblock.h"
#include "tf_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_logblock: invariant violated: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tf_logpacker_t *packer;
    if (size < 4)
        return 0;
    int codec = data[0] % 3;
    uint64_t raw_len = ((uint64_t)data[1] << 16 | (uint64_t)data[2] << 8 |
                        data[3]) % (4u << 20);
    const uint8_t *blob = data + 4;
    size_t blen = size - 4;
    unsigned char *dst = malloc(raw_len ? raw_len : 1);
    if (!dst)
        return 0;
    int rc = tf_logblock_unpack(codec, blob, blen, raw_len, dst);
    check(rc == 0 || rc == TF_ECORRUPT, "the answer is 0 or TF_ECORRUPT");
    if (codec == 2)
        check(rc == TF_ECORRUPT, "an unknown codec is refused");
    if (codec == TF_LOGBLOCK_RAW)
        check((rc == 0) == (blen == raw_len), "a raw block is its length");
    if (rc == 0 && codec == TF_LOGBLOCK_ZSTD && raw_len) {
        if (!packer)
            packer = tf_logpacker_new();
        const void *b2;
        size_t l2;
        int c2;
        check(packer && tf_logblock_pack(packer, dst, raw_len, &b2, &l2,
                                         &c2) == 0, "packing again");
        unsigned char *again = malloc(raw_len);
        check(again && tf_logblock_unpack(c2, b2, l2, raw_len, again) == 0,
              "unpacking what was packed again");
        check(memcmp(again, dst, raw_len) == 0, "the same bytes");
        free(again);
    }
    free(dst);
    return 0;
}
