/*
 * wsscan.h - follows the frame headers of a WebSocket byte stream sent by
 * a client (RFC 6455, section 5.2), to tell whether every frame is masked
 * as section 5.1 requires.
 *
 * A pure function over the bytes as they arrive, in pieces of any size,
 * with a few bytes of state: no buffering, no payload copying. The master
 * uses it because its websocket library (lws 4.1) accepts unmasked
 * frames without saying so (net/wsmask.c); the fuzz target
 * tests/fuzz/fuzz_wsscan.c checks it against a reference.
 *
 * Before the upgrade the stream is HTTP: in TF_WSSCAN_HTTP mode the
 * scanner only remembers how many bytes followed the last blank line
 * (the end of a request's headers), and up to TF_WSSCAN_TAIL of them, so
 * frames a client sent right behind its handshake are checked too.
 */
#ifndef TF_WSSCAN_H
#define TF_WSSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TF_WSSCAN_TAIL 256

typedef enum {
    TF_WSSCAN_HTTP = 0, /* before the upgrade */
    TF_WSSCAN_HDR0,     /* expecting a frame's first byte */
    TF_WSSCAN_HDR1,     /* its second byte: MASK bit and length */
    TF_WSSCAN_EXTLEN,   /* 2 or 8 bytes of extended length */
    TF_WSSCAN_KEY,      /* 4 bytes of masking key */
    TF_WSSCAN_PAYLOAD,  /* payload bytes to skip */
    TF_WSSCAN_BAD,      /* an unmasked frame was seen: stays here */
} tf_wsscan_mode_t;

typedef struct tf_wsscan {
    tf_wsscan_mode_t mode;
    uint8_t need;         /* bytes left of EXTLEN or KEY */
    uint64_t left;        /* payload bytes left (or the length being read) */
    /* TF_WSSCAN_HTTP */
    uint8_t crlf;         /* how much of "\r\n\r\n" was just seen */
    uint64_t tail_len;    /* bytes after the last blank line */
    uint8_t tail[TF_WSSCAN_TAIL];
} tf_wsscan_t;

/* A scanner at the start of an HTTP connection. */
void tf_wsscan_init(tf_wsscan_t *s);

/* Feeds n bytes of the stream. Returns false once an unmasked frame (or
 * a frame length with its top bit set) has been seen, and from then on. */
bool tf_wsscan_feed(tf_wsscan_t *s, const uint8_t *p, size_t n);

/* The upgrade has happened: what followed the handshake's blank line is
 * websocket frames, scanned now. More than TF_WSSCAN_TAIL such bytes
 * (frames sent before the server's answer, which RFC 6455 forbids) count
 * as bad. Returns as tf_wsscan_feed. */
bool tf_wsscan_upgraded(tf_wsscan_t *s);

#endif
