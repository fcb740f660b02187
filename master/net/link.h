/*
 * link.h - the slave links (link.c): the websocket side of the protocol.
 *
 * The core reaches these only through m->net (master.h, tf_net_ops_t),
 * which the program's root (daemon.c) points at them.
 */
#ifndef TF_LINK_H
#define TF_LINK_H

#include <stdbool.h>
#include <stddef.h>

#include <libwebsockets.h>

#include "core/master.h"

/* LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: lets a websocket upgrade through only
 * to one of our endpoints with its subprotocol (/slave with
 * testfarm-slave, /live with testfarm-live); anything else gets a
 * plain-text HTTP answer saying what is expected (400 wrong or missing
 * subprotocol, 404 no such endpoint, 503 while stopping) instead of a
 * dropped connection. Returns 0 to go on, 1 when it answered, -1 to hang
 * up. */
int tf_link_confirm_upgrade(tf_master_t *m, struct lws *wsi);

/* The lws protocol callback of "testfarm-slave". */
int tf_link_callback(struct lws *wsi, enum lws_callback_reasons reason,
                     void *user, void *in, size_t len);

/* Queues a text frame (copied). Returns 0, or TF_EFULL when the link's send
 * queue is over its cap (the link is then closed: a slow reader is cut
 * off), or TF_ESTATE when the link is closing. */
int tf_link_send_text(tf_link_t *l, const char *text, size_t len);
/* As tf_link_send_text, but written at once, outside a WRITEABLE
 * callback, when nothing is queued before it and lws can take it whole
 * now (a build_start: the start latency of a burst). */
int tf_link_send_text_now(tf_link_t *l, const char *text, size_t len);

/* Encodes and queues a message. */
int tf_link_send_msg(tf_link_t *l, const tf_msg_t *msg);

/* Sends an error message and closes with close_code. */
void tf_link_close(tf_link_t *l, const char *code, int close_code,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Pauses or resumes reading from every slave link (store backpressure). */
void tf_link_flow_all(tf_master_t *m, bool enable);

/* Sends pings and closes links silent for longer than lost_after_s. */
void tf_link_heartbeat(tf_master_t *m);

/* Closes every link for shutdown. */
void tf_link_close_all(tf_master_t *m);

/* Handles the slaves' messages put off during a burst's start batches
 * (core/master.h, tf_master_defer_slaves), each link's in order; links
 * the master closed meanwhile drop theirs. The net's drain_deferred. */
void tf_link_drain_deferred(tf_master_t *m);

#endif
