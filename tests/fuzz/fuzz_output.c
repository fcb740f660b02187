/*
 * fuzz_output.c - libFuzzer driver for tf_output_decode().
 *
 * Checks the decoder's contract on every input: a failure names the problem
 * and leaves no payload; a success means the frame is exactly header plus
 * length, the payload points just past the header, and re-encoding the
 * header gives back the frame's first 24 bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "tf_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_output: invariant violated: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tf_output_hdr_t h;
    const uint8_t *payload = data;
    uint8_t hdr[TF_PROTO_OUT_HDR];
    char err[256];

    err[0] = 'X';
    int rc = tf_output_decode(data, size, &h, &payload, err, sizeof err);
    if (rc != 0) {
        check(rc == TF_EINVAL || rc == TF_ETRUNC || rc == TF_E2BIG,
              "error code");
        check(err[0] != '\0' && err[0] != 'X', "error sentence");
        check(payload == NULL, "no payload on failure");
        return 0;
    }
    check(size == TF_PROTO_OUT_HDR + (size_t)h.length, "exact frame size");
    check(h.length >= 1 && h.length <= TF_PROTO_MAX_CHUNK, "length range");
    check(payload == data + TF_PROTO_OUT_HDR, "payload position");
    check(tf_output_encode_hdr(&h, hdr) == 0, "header re-encodes");
    check(memcmp(hdr, data, TF_PROTO_OUT_HDR) == 0, "header identical");
    return 0;
}
