/*
 * wsframe.c - client frame headers and payload masking (see wsframe.h).
 *
 * The mask is applied eight bytes at a time: the 4-byte key repeated
 * twice is one 64-bit word, and since the key repeats every 4 bytes any
 * 8-byte step keeps the phase. Loads and stores go through memcpy, so
 * alignment never matters and the compiler turns them into plain moves
 * (and usually vectorizes the loop).
 */
#include "wsframe.h"

#include <string.h>

size_t tf_wsframe_client_header(uint8_t *out, uint64_t len, bool binary,
                                const uint8_t key[4])
{
    size_t n = 0;
    out[n++] = (uint8_t)(0x80 | (binary ? 0x2 : 0x1)); /* FIN + opcode */
    if (len < 126) {
        out[n++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = 0x80 | 127;
        for (int shift = 56; shift >= 0; shift -= 8)
            out[n++] = (uint8_t)(len >> shift);
        out[2] &= 0x7f; /* the most significant bit must be 0 */
    }
    memcpy(out + n, key, 4);
    return n + 4;
}

void tf_wsframe_mask(uint8_t *p, size_t n, const uint8_t key[4])
{
    uint8_t k8[8];
    uint64_t k;
    size_t i = 0;
    memcpy(k8, key, 4);
    memcpy(k8 + 4, key, 4);
    memcpy(&k, k8, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= k;
        memcpy(p + i, &w, 8);
    }
    for (; i < n; i++)
        p[i] ^= key[i & 3];
}
