/*
 * range.h - the HTTP Range header (RFC 9110, section 14.2), one range.
 *
 * A pure function from the header's value and the resource's size to the
 * bytes to send, so it can be fuzzed (tests/fuzz/fuzz_range.c) and unit
 * tested without sockets.
 */
#ifndef TF_RANGE_H
#define TF_RANGE_H

#include <stdint.h>

/* Outcomes of tf_range_parse. */
#define TF_RANGE_OK 0             /* [*start, *end) to send, 206 */
#define TF_RANGE_UNSATISFIABLE 1  /* 416 with "bytes * / size" */
#define TF_RANGE_MALFORMED (-1)   /* 400 */

/* Parses "bytes=A-B", "bytes=A-" or "bytes=-N" (unit case-insensitive,
 * whitespace around the range allowed) against a resource of size bytes.
 * Positions too large for 64 bits count as "beyond the end": a last
 * position past the end is clamped to the last byte, a first position
 * past it is unsatisfiable, a suffix longer than the resource means all
 * of it. Several ranges ("A-B,C-D") and B < A are malformed. On
 * TF_RANGE_OK, *start < *end <= size. */
int tf_range_parse(const char *h, uint64_t size, uint64_t *start,
                   uint64_t *end);

#endif
