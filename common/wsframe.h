/*
 * wsframe.h - the header of a WebSocket frame a client sends (RFC 6455,
 * section 5.2) and the masking of its payload (section 5.3), for senders
 * that frame their own bytes.
 *
 * Why: the slave's websocket library (lws 4.1) masks a client's payload
 * one byte at a time, reloading its state for every byte; on a step that
 * streams output that loop was a third of the slave's CPU. The slave
 * frames its binary output frames itself with these functions (a word at
 * a time) and hands lws the finished frame as raw bytes. Pure functions:
 * no I/O, no allocation.
 */
#ifndef TF_WSFRAME_H
#define TF_WSFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest client frame header: 2 bytes, 8 of extended length, 4 of key. */
#define TF_WSFRAME_HDR_MAX 14

/* Writes into out (TF_WSFRAME_HDR_MAX bytes of room) the header of one
 * final, masked frame carrying len payload bytes, binary or text, with
 * masking key key; returns the header's length (6, 8 or 14). */
size_t tf_wsframe_client_header(uint8_t *out, uint64_t len, bool binary,
                                const uint8_t key[4]);

/* XORs p[0..n) with key, repeated from its first byte (section 5.3): the
 * same call masks and unmasks. */
void tf_wsframe_mask(uint8_t *p, size_t n, const uint8_t key[4]);

#endif
