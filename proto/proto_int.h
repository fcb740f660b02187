/*
 * proto_int.h - what proto/ shares between its files, and with its tests.
 *
 * Not part of the module's interface: only the files of proto/, the unit
 * tests and the fuzz drivers include it.
 */
#ifndef TF_PROTO_INT_H
#define TF_PROTO_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "util.h"

/* The fast path of tf_msg_decode() for the small flat messages a slave
 * sends per step and build (step_started, step_finished, build_finished)
 * and ack, ping, pong. It only ever accepts: when the text has exactly
 * the common shape and every value passes the checks the jansson path
 * makes, it fills *out (zeroed by the caller) the way that path would and
 * returns true; the caller then owns *out (tf_msg_clear). On anything
 * else, out of memory included, it returns false with *out left zeroed,
 * and the caller runs the jansson path, which accepts or words the error. */
bool tf__msg_decode_fast(const char *text, size_t len, tf_msg_t *out);

/* tf_msg_decode() without the fast path: jansson parses every message.
 * For the differential tests and the fuzz driver, which check that both
 * paths agree on rc, error sentence and every field. */
int tf__msg_decode_slow(const char *text, size_t len, tf_msg_t *out,
                        char *err, size_t errlen);

/* The one-pass encoders (msgfast.c, msgenc.c) write decimals with
 * tf_u64_dec (util.h), as jansson writes a json_int_t that is not
 * negative. */

/* The fast path of tf_msg_encode() for an ack (the master writes one per
 * event it stores, nearly): when m is an ack whose ids tf_msg_decode
 * accepts, sets *out to a malloc'ed, NUL-terminated copy of the compact
 * text the jansson path emits (the caller frees it), *len_out (if not
 * NULL) to its length, and returns true. Anything else, out of memory
 * included, returns false and the caller runs the jansson path. */
bool tf__msg_encode_ack(const tf_msg_t *m, char **out, size_t *len_out);

/* The fast path of tf_msg_encode() for build_start (msgenc.c; the master
 * writes one per build it starts): when every field of m passes the
 * checks tf_msg_decode makes and the text is within TF_PROTO_MAX_TEXT,
 * sets *out to a malloc'ed, NUL-terminated copy of the compact text the
 * jansson path emits (the caller frees it), *len_out (if not NULL) to its
 * length, and returns true. Anything else, out of memory included,
 * returns false and the caller runs the jansson path, which words the
 * refusal. */
bool tf__msg_encode_build_start(const tf_msg_t *m, char **out,
                                size_t *len_out);

/* tf_msg_encode_err() without the fast path, for the unit tests that
 * compare both. */
int tf__msg_encode_slow(const tf_msg_t *m, char **out, size_t *len_out,
                        char *err, size_t errlen);

#endif
