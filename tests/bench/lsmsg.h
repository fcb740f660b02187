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
 */
#ifndef TF_LSMSG_H
#define TF_LSMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

#define LS_MSG_MAX 1024 /* the largest message the fast writers emit */

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

/* Checks the fast paths against proto/ on sample messages: each writer's
 * bytes against tf_msg_encode's, and ls_ack_parse against tf_msg_decode on
 * tf_msg_encode's ack. Returns 0, or TF_EPROTO with what differs in
 * err[0..errlen). */
int ls_msg_selftest(char *err, size_t errlen);

#endif
