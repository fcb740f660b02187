/*
 * conn.h - the slave's websocket link to the master, with reconnects.
 *
 * One tf_conn_t owns the lws client context (on the slave's own libuv
 * loop), the current link, the reconnect timer with jittered exponential
 * backoff (per master when the config lists several, tried in round-robin
 * order) and the dead-link watchdog. It speaks the handshake itself
 * (challenge -> hello -> welcome) and hands everything after that to the
 * slave through tf_conn_ops_t. It never buffers build events: when the
 * socket can take a frame it asks the slave for the next one (pull_cb),
 * which reads it from a spool file straight into the connection's single
 * send buffer.
 */
#ifndef TF_CONN_H
#define TF_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "proto.h"
#include "slave_config.h"

/* Before welcome, the link is dropped if the handshake stalls this long. */
#define TF_CONN_HANDSHAKE_TIMEOUT_MS 30000

typedef struct tf_conn tf_conn_t;

typedef struct tf_conn_ops {
    /* Fills out[0..max) with the builds to report in hello.running and
     * returns how many. */
    size_t (*running_cb)(void *arg, tf_running_t *out, size_t max);
    /* The master accepted us; msg is a TF_MSG_WELCOME, borrowed. */
    void (*welcome_cb)(void *arg, const tf_msg_t *msg);
    /* build_start, build_abort or ack on a READY link; borrowed. */
    void (*message_cb)(void *arg, const tf_msg_t *msg);
    /* The next build event to send, copied into buf[cap]: returns 1 and
     * sets *len and *binary, 0 when nothing is waiting, or a negative code
     * (the link is then dropped). The callee treats the event as sent. */
    int (*pull_cb)(void *arg, uint8_t *buf, size_t cap, size_t *len,
                   bool *binary);
    /* A link that had opened is gone (events in flight are unknown). */
    void (*down_cb)(void *arg);
    /* The master refused us for good: stop with this exit status (3, 4, 5
     * or 6, see slave.h). The connection no longer reconnects. With several
     * masters, 3, 4 and 5 come only once every master has refused us. */
    void (*fatal_cb)(void *arg, int exit_code);
    /* For tf_conn_shutdown: true for the caller's handles that are still
     * open while lws winds down (signal watchers). */
    bool (*is_ours_cb)(void *arg, const uv_handle_t *h);
} tf_conn_ops_t;

/* Creates the lws context on loop. cfg and secret are borrowed and must
 * outlive the connection; ops is copied. Returns 0, TF_ENOMEM or TF_EIO
 * (lws could not create its context: missing libuv plugin, bad CA file).
 * The caller owns *out: tf_conn_shutdown, then tf_conn_free. */
int tf_conn_new(uv_loop_t *loop, const tf_slave_config_t *cfg,
                const char *secret, const tf_conn_ops_t *ops, void *arg,
                tf_conn_t **out);

/* Starts the first connection attempt. */
void tf_conn_start(tf_conn_t *c);

/* Build events are waiting: ask for a writeable callback when READY. */
void tf_conn_kick(tf_conn_t *c);

/* From now on, tell the master on this link and every later one that we
 * drain (send {"type":"drain"} after each welcome). */
void tf_conn_set_draining(tf_conn_t *c);

bool tf_conn_ready(const tf_conn_t *c);

/* The master of the current link, or of the next attempt while there is
 * none (borrowed from the config). */
const tf_slave_master_t *tf_conn_master(const tf_conn_t *c);

/* Stops reconnecting, closes the link and destroys the lws context the way
 * a foreign loop needs (see docs/slave-operators.md / the notes): destroy
 * once, run the loop until only the caller's handles (is_ours_cb) remain,
 * destroy again. done_cb(arg) runs when that is over and all of the
 * connection's own handles are closed. */
void tf_conn_shutdown(tf_conn_t *c, void (*done_cb)(void *arg), void *arg);

/* Frees c after tf_conn_shutdown completed; c may be NULL. */
void tf_conn_free(tf_conn_t *c);

/* "linux-x86_64": uname's sysname and machine, lower case, into out. */
void tf_conn_platform(char *out, size_t outlen);

#endif
