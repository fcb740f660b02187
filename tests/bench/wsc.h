/*
 * wsc.h - a small RFC 6455 websocket client on libuv, for the benchmarks.
 *
 * tf-loadslaves holds up to 10,000 slave links in one process and one
 * thread, so each link must cost little: the tf_wsc_t is embedded in the
 * caller's struct (libuv style), reads land in one buffer shared by every
 * connection (the loop is single-threaded and each read is consumed before
 * the next), and only a partial frame is copied aside. Outgoing frames are
 * masked as RFC 6455 requires and appended to a fill buffer; one write
 * carries everything queued since the previous write finished, so a burst
 * of small control messages costs one system call. A write is tried at
 * once (uv_try_write); one the kernel takes whole "finishes" at the next
 * tf_wsc_flush_held(), which the caller runs at the start and at the end
 * of its check handle, where libuv (1.44) runs uv_write's callbacks:
 * right after the poll, and at the next turn's start. So the writes are
 * those uv_write made, without libuv re-arming the socket in epoll after
 * each.
 *
 * Every buffer has a cap: the send queue (TF_WSC_SENDQ_MAX; a send past it
 * returns TF_EFULL and the caller slows down), an incoming message
 * (max_message, checked against the announced length before anything is
 * buffered) and the HTTP upgrade answer (TF_WSC_HTTP_MAX).
 *
 * Life of a connection:
 *
 *   INIT --connect--> CONNECTING --tcp up--> UPGRADING --101--> OPEN
 *     any state --error / close frame / EOF / tf_wsc_close--> CLOSING
 *     CLOSING --uv_close done--> CLOSED (closed_cb runs; the struct may
 *                                        then be freed or reused)
 *
 * "If a call fails, its callback is never called": tf_wsc_connect returning
 * an error means no callback at all; once it returns 0, closed_cb is called
 * exactly once (a refused TCP connection included).
 */
#ifndef TF_WSC_H
#define TF_WSC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "buf.h"
#include "list.h"

#define TF_WSC_SENDQ_MAX (4u * 1024 * 1024) /* queued, not yet written */
#define TF_WSC_HTTP_MAX 8192                /* the 101 answer's headers */

#define TF_WSC_OP_CONT 0x0
#define TF_WSC_OP_TEXT 0x1
#define TF_WSC_OP_BINARY 0x2
#define TF_WSC_OP_CLOSE 0x8
#define TF_WSC_OP_PING 0x9
#define TF_WSC_OP_PONG 0xa

typedef enum {
    TF_WSC_INIT = 0,
    TF_WSC_CONNECTING,
    TF_WSC_UPGRADING,
    TF_WSC_OPEN,
    TF_WSC_CLOSING,
    TF_WSC_CLOSED,
} tf_wsc_state_t;

typedef struct tf_wsc tf_wsc_t;

typedef struct tf_wsc_cbs {
    /* The upgrade succeeded; frames may be sent. */
    void (*open_cb)(tf_wsc_t *c);
    /* A whole message (fragments reassembled). data is valid only during
     * the call. */
    void (*message_cb)(tf_wsc_t *c, bool binary, const uint8_t *data,
                       size_t len);
    /* A write finished; tf_wsc_queued() may now be lower. */
    void (*drained_cb)(tf_wsc_t *c);
    /* The connection is gone. why says what ended it, e.g. "closed by the
     * peer: 4001 bad_auth", "connect: connection refused", "upgrade
     * refused: HTTP/1.1 404 Not Found". */
    void (*closed_cb)(tf_wsc_t *c, const char *why);
} tf_wsc_cbs_t;

struct tf_wsc {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    tf_wsc_state_t state;
    const tf_wsc_cbs_t *cbs;
    void *data; /* the caller's */
    char key[32]; /* Sec-WebSocket-Key, base64 of 16 random bytes */
    char host[80];
    char path[64];
    char protocol[64];
    size_t max_message;
    tf_buf_t rx;    /* bytes of an incomplete frame or HTTP answer */
    tf_buf_t msg;   /* fragments of an incomplete message */
    uint8_t msg_op; /* opcode of the message being reassembled */
    tf_buf_t out[2]; /* the fill buffer and the one being written */
    int fill;        /* index of the fill buffer in out[] */
    bool writing;
    bool held;       /* written whole; more waits for tf_wsc_flush_held */
    bool close_sent;
    int peer_close_code; /* -1 until a close frame arrived */
    int64_t read_wall_us; /* CLOCK_REALTIME, in us, when the bytes being
                           * parsed were read from the socket (the last
                           * read, when several wait): a message
                           * callback's arrival time */
    tf_list_t pendn;      /* in the read-but-not-parsed list */
    tf_list_t heldn;      /* in the held list */
    char why[192];
};

/* Seeds the masking-key generator from the system's random source. Call
 * once before any connection. Returns 0 or TF_EIO. */
int tf_wsc_global_init(void);

/* Reading and parsing are apart: an open connection's read callback only
 * copies the bytes and notes the time; its frames are parsed (and
 * message_cb called) by tf_wsc_parse_pending, which the caller runs from
 * a check handle, after the loop turn's reads. So one thread serving
 * thousands of connections reads each as soon as the loop sees it ready,
 * not after parsing and handling the messages of every connection read
 * before it in the turn. Parses the pending bytes of at most max
 * connections, oldest first; returns how many still wait (the caller then
 * keeps the next poll from blocking). */
size_t tf_wsc_parse_pending(size_t max);

/* Ends the hold of every connection whose last write the kernel took
 * whole (wsc.h, top): each writes what it queued since, in one write, and
 * its drained_cb runs, as when a uv_write finishes. Call it first in the
 * caller's check handle, before the turn's messages are parsed (libuv
 * runs write callbacks right after the poll), and last, after they are
 * handled and answered (libuv would run them at the next turn's start);
 * while the last call returns more than 0 (connections held again) keep
 * the next poll from blocking, as a pending write callback would. */
size_t tf_wsc_flush_held(void);

/* cb runs when a connection is held and none was: a write made outside
 * the caller's check handle (a timer, a read callback) must not wait for
 * the next poll to end, so the caller keeps that poll from blocking (an
 * idle handle), as uv_write's pending callback did. */
void tf_wsc_set_held_cb(void (*cb)(void));

/* Prepares c (which the caller owns and keeps in place until closed_cb)
 * and starts connecting to addr. host and path go into the request line
 * and Host header (copied); protocol is the required subprotocol (copied).
 * Returns 0 (then closed_cb will run exactly once, whatever happens) or
 * TF_EINVAL (a string too long) or a negative libuv code from
 * uv_tcp_init (then no callback runs and c needs nothing more). */
int tf_wsc_connect(tf_wsc_t *c, uv_loop_t *loop, const struct sockaddr *addr,
                   const char *host, const char *path, const char *protocol,
                   size_t max_message, const tf_wsc_cbs_t *cbs, void *data);

/* Queues one frame (FIN set) with opcode op whose payload is head followed
 * by body (either may be empty), masked. Returns 0, TF_ESTATE (not open),
 * TF_EFULL (the send queue would pass TF_WSC_SENDQ_MAX; nothing queued) or
 * TF_ENOMEM. */
int tf_wsc_send(tf_wsc_t *c, int op, const void *head, size_t hlen,
                const void *body, size_t blen);

/* Bytes queued and not yet handed to the kernel. */
size_t tf_wsc_queued(const tf_wsc_t *c);

/* Sends a close frame with code and reason (when open), then closes the
 * socket once it is written. Safe in any state and more than once. */
void tf_wsc_close(tf_wsc_t *c, int code, const char *reason);

/* Drops the connection at once without a close frame. */
void tf_wsc_abort(tf_wsc_t *c, const char *why);

#endif
