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

#include "proto.h"

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

#endif
