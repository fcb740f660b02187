/*
 * lsmsg.h - tf-loadslaves' fast paths for its hot protocol messages.
 *
 * tf-loadslaves shares one machine with the master it measures, so every
 * microsecond it spends per build is taken from the master. Per build it
 * sends step_started, step_finished and build_finished and receives acks;
 * encoding those with proto/ (a jansson tree, the decoder's validator run
 * on it, json_dumps and its snprintf per number, a malloc per node) was
 * most of its userland time. These writers emit the very bytes
 * tf_msg_encode emits for the fields tf-loadslaves fills in (same keys,
 * same order, compact, the same escapes), into the caller's buffer, with
 * no allocation; ls_msg_selftest() compares them with tf_msg_encode at
 * start-up so they cannot drift apart unnoticed.
 *
 * The ack reader accepts only an ack in the exact compact form the master
 * emits and checks what tf_msg_decode checks of it (integers in range, no
 * leading zeros); anything else, a valid message in another spelling
 * included, is left to tf_msg_decode, which judges it as before.
 *
 * The build_start reader takes the members in the order tf_msg_encode
 * writes them and extracts only what the emulator uses (ls_bstart_t); the
 * steps and the source are walked as JSON but their meaning is not judged
 * (lsmsg.c says exactly what is and is not checked). Like the ack reader
 * it only accepts: false sends the message to tf_msg_decode.
 */
#ifndef TF_LSMSG_H
#define TF_LSMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "names.h"
#include "proto.h"

#define LS_MSG_MAX 1024 /* the largest message the fast writers emit */
#define LS_T0_PROP "bench_t0_us" /* the property bench_sched.py sets */

/* Writes m as compact JSON into out[0..cap) (not NUL-terminated) and sets
 * *len. Handles step_started, step_finished (without properties, info,
 * stats or warnings), build_finished and pong; returns TF_ESTATE for any
 * other message (the caller then uses tf_msg_encode), TF_EINVAL for a
 * string that is not UTF-8 or a number tf_msg_encode would refuse, or
 * TF_E2BIG when out is too small. */
int ls_msg_encode(const tf_msg_t *m, char *out, size_t cap, size_t *len);

/* True when p[0..n) is exactly {"type":"ack","build_id":B,"seq":S} with B
 * in 1..TF_PROTO_MAX_ID and S in 0..TF_PROTO_MAX_ID; sets *build_id and
 * *seq. False means "not recognised", not "invalid": decode it fully. */
bool ls_ack_parse(const uint8_t *p, size_t n, uint64_t *build_id,
                  uint64_t *seq);

/* What tf-loadslaves uses of a build_start. */
typedef struct ls_bstart {
    uint64_t build_id;
    char builder[TF_NAME_MAX + 1];
    size_t nsteps;
    bool has_t0;  /* properties[LS_T0_PROP] was there and tf_parse_u64 */
    uint64_t t0;  /* took it: its value */
} ls_bstart_t;

/* True when p[0..n) is a build_start in tf_msg_encode's member order
 * (JSON whitespace allowed between tokens) whose extracted fields pass the
 * checks tf_msg_decode makes of them and whose other values are
 * well-formed JSON that jansson would parse; fills *out. False means "not
 * recognised": decode it with tf_msg_decode and use ls_bstart_from_msg.
 * Each step's and the source's contents are not judged (lsmsg.c). */
bool ls_bstart_parse(const uint8_t *p, size_t n, ls_bstart_t *out);

/* Fills *out from a decoded build_start m, as the emulator reads it. */
void ls_bstart_from_msg(const tf_msg_t *m, ls_bstart_t *out);

/* Checks the fast paths against proto/ on sample messages: each writer's
 * bytes against tf_msg_encode's, and ls_ack_parse and ls_bstart_parse
 * against tf_msg_decode on tf_msg_encode's acks and build_starts.
 * Returns 0, or TF_EPROTO with what differs in err[0..errlen). */
int ls_msg_selftest(char *err, size_t errlen);

#endif
