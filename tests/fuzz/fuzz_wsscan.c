/*
 * fuzz_wsscan.c - libFuzzer driver for the websocket mask scanner
 * (common/wsscan.c).
 *
 * The input is a client's byte stream after the upgrade. A reference
 * parser walks it frame by frame in one piece and says whether an
 * unmasked frame (or a 64-bit length with its top bit set) occurs before
 * the input ends; the scanner must agree whether it is fed the input
 * whole or in pieces of every size the first byte chooses, and a bad
 * stream stays bad.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsscan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_wsscan: invariant violated: %s\n", what);
        abort();
    }
}

/* True when the stream holds a bad frame header. */
static bool reference_bad(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i + 2 <= n) {
        uint8_t b1 = p[i + 1];
        if (!(b1 & 0x80))
            return true;
        uint64_t len = b1 & 0x7f;
        i += 2;
        size_t ext = len == 126 ? 2 : len == 127 ? 8 : 0;
        if (ext) {
            if (i + ext > n)
                return ext == 8 && i < n && (p[i] & 0x80);
            if (ext == 8 && (p[i] & 0x80))
                return true;
            len = 0;
            for (size_t k = 0; k < ext; k++)
                len = (len << 8) | p[i + k];
            i += ext;
        }
        if (n - i < 4)
            return false;
        i += 4;
        if (len > n - i)
            return false;
        i += (size_t)len;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)data[0] % 17 + 1;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    bool want_bad = reference_bad(p, n);

    tf_wsscan_t whole;
    tf_wsscan_init(&whole);
    whole.mode = TF_WSSCAN_HDR0;
    bool ok_whole = tf_wsscan_feed(&whole, p, n);
    check(ok_whole == !want_bad, "whole input agrees with the reference");

    tf_wsscan_t parts;
    tf_wsscan_init(&parts);
    parts.mode = TF_WSSCAN_HDR0;
    bool ok = true;
    for (size_t i = 0; i < n; i += step) {
        size_t k = n - i < step ? n - i : step;
        bool r = tf_wsscan_feed(&parts, p + i, k);
        check(ok || !r, "bad stays bad");
        ok = r;
    }
    check(ok == ok_whole, "pieces agree with the whole");

    /* The same bytes behind an HTTP handshake, then upgraded. */
    static const char hs[] = "GET /slave HTTP/1.1\r\nHost: x\r\n\r\n";
    tf_wsscan_t up;
    tf_wsscan_init(&up);
    tf_wsscan_feed(&up, (const uint8_t *)hs, sizeof(hs) - 1);
    size_t early = n < TF_WSSCAN_TAIL ? n : TF_WSSCAN_TAIL;
    tf_wsscan_feed(&up, p, early);
    bool ok_up = tf_wsscan_upgraded(&up);
    ok_up = tf_wsscan_feed(&up, p + early, n - early) && ok_up;
    check(ok_up == ok_whole || memmem(p, early, "\r\n\r\n", 4) != NULL,
          "frames behind the handshake are scanned");
    return 0;
}
