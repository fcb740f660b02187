/*
 * output.c - binary step-output frames: a 24-byte big-endian header and
 * 1..65536 bytes of raw output (docs/protocol.md, "Binary frames").
 *
 * Header layout: kind u8 (1), stream u8 (1 stdout, 2 stderr), step u16,
 * length u32, build_id u64, seq u64. The decoder accepts a frame only when
 * its size is exactly header + length, so a frame never carries hidden
 * trailing bytes and a truncated one is never taken for a shorter chunk.
 * Nothing is copied: the payload pointer points into the caller's frame.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "proto.h"
#include "tf_err.h"

#define TF__OUT_KIND_STEP 1

static void tf_put_be(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static uint64_t tf_get_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static int tf_out_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int tf_out_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* Range checks shared by both directions; writes a sentence on failure. */
static int tf_out_check(const tf_output_hdr_t *h, char *err, size_t errlen)
{
    if (h->stream != TF_STREAM_STDOUT && h->stream != TF_STREAM_STDERR)
        return tf_out_fail(err, errlen, TF_EINVAL,
                           "output frame: stream %u is neither 1 (stdout) "
                           "nor 2 (stderr)",
                           (unsigned)h->stream);
    if (h->step >= TF_PROTO_MAX_STEPS)
        return tf_out_fail(err, errlen, TF_EINVAL,
                           "output frame: step %u is out of range (0..%d)",
                           (unsigned)h->step, TF_PROTO_MAX_STEPS - 1);
    if (h->length == 0)
        return tf_out_fail(err, errlen, TF_EINVAL,
                           "output frame: zero-length payload");
    if (h->length > TF_PROTO_MAX_CHUNK)
        return tf_out_fail(err, errlen, TF_E2BIG,
                           "output frame: payload of %" PRIu32
                           " bytes is over the %d-byte limit",
                           h->length, TF_PROTO_MAX_CHUNK);
    if (h->build_id == 0 || h->build_id > TF_PROTO_MAX_ID)
        return tf_out_fail(err, errlen, TF_EINVAL,
                           "output frame: build_id %" PRIu64
                           " is out of range (1..%" PRIu64 ")",
                           h->build_id, TF_PROTO_MAX_ID);
    if (h->seq == 0 || h->seq > TF_PROTO_MAX_ID)
        return tf_out_fail(err, errlen, TF_EINVAL,
                           "output frame: seq %" PRIu64
                           " is out of range (1..%" PRIu64 ")",
                           h->seq, TF_PROTO_MAX_ID);
    return 0;
}

int tf_output_encode_hdr(const tf_output_hdr_t *h,
                         uint8_t out[TF_PROTO_OUT_HDR])
{
    int rc = tf_out_check(h, NULL, 0);
    if (rc)
        return TF_EINVAL;
    out[0] = TF__OUT_KIND_STEP;
    out[1] = h->stream;
    tf_put_be(out + 2, h->step, 2);
    tf_put_be(out + 4, h->length, 4);
    tf_put_be(out + 8, h->build_id, 8);
    tf_put_be(out + 16, h->seq, 8);
    return 0;
}

int tf_output_decode(const uint8_t *frame, size_t len, tf_output_hdr_t *h,
                     const uint8_t **payload, char *err, size_t errlen)
{
    tf_output_hdr_t t;
    int rc;

    memset(h, 0, sizeof *h);
    *payload = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!frame || len < TF_PROTO_OUT_HDR)
        return tf_out_fail(err, errlen, TF_ETRUNC,
                           "output frame: %zu bytes, shorter than the %d-byte "
                           "header",
                           frame ? len : 0, TF_PROTO_OUT_HDR);
    if (frame[0] != TF__OUT_KIND_STEP)
        return tf_out_fail(err, errlen, TF_EINVAL,
                           "output frame: unknown kind %u", (unsigned)frame[0]);
    t.stream = frame[1];
    t.step = (uint16_t)tf_get_be(frame + 2, 2);
    t.length = (uint32_t)tf_get_be(frame + 4, 4);
    t.build_id = tf_get_be(frame + 8, 8);
    t.seq = tf_get_be(frame + 16, 8);
    if ((rc = tf_out_check(&t, err, errlen)))
        return rc;
    size_t have = len - TF_PROTO_OUT_HDR;
    if (have < t.length)
        return tf_out_fail(err, errlen, TF_ETRUNC,
                           "output frame: header says %" PRIu32
                           " payload bytes, frame has %zu",
                           t.length, have);
    if (have > t.length)
        return tf_out_fail(err, errlen, TF_EINVAL,
                           "output frame: %zu bytes after a %" PRIu32
                           "-byte payload",
                           have - t.length, t.length);
    *h = t;
    *payload = frame + TF_PROTO_OUT_HDR;
    return 0;
}
