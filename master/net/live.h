/*
 * live.h - the live feed: a websocket at /live (subprotocol
 * "testfarm-live") pushing build, step, slave, request and log events to
 * pages and tools as they happen (docs/api.md, "Live feed").
 *
 * Publishing is cheap when nobody listens: each publish function first
 * checks whether any connection subscribes to the topic, and only then
 * builds the JSON. Events go out when the master applies them, before the
 * commit, so a viewer sees output within milliseconds.
 */
#ifndef TF_LIVE_H
#define TF_LIVE_H

#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "core/master.h"

#define TF_LIVE_SUBPROTOCOL "testfarm-live"
#define TF_LIVE_PATH "/live"

/* The lws protocol callback of "testfarm-live". */
int tf_live_callback(struct lws *wsi, enum lws_callback_reasons reason,
                     void *user, void *in, size_t len);

/* Build events: "created", "started", "finished". */
void tf_live_build(tf_master_t *m, const tf_build_t *b, const char *event,
                   int result);

/* A step of b started or finished. */
void tf_live_step(tf_master_t *m, const tf_build_t *b, unsigned step,
                  const char *text);

/* Slave events: "connected", "disconnected", "lost". */
void tf_live_slave(tf_master_t *m, const tf_mslave_t *s, const char *event);

/* An event another master (store.shared) published on topic ("builds",
 * "requests" or "slaves"; others are ignored), sent as it is to the
 * subscribers here. */
void tf_live_relay(tf_master_t *m, const char *topic, const char *text);

/* Request events: "queued", "started", "cancelled". */
void tf_live_request(tf_master_t *m, const tf_request_t *r,
                     const char *event);

/* Another master (store.shared) committed: the logs of its builds that
 * viewers here follow are read for what it stored (live.c). */
void tf_live_stored(tf_master_t *m);

/* Output of a step as it arrives. */
void tf_live_log(tf_master_t *m, uint64_t build_id, unsigned step,
                 uint64_t offset, const uint8_t *data, size_t len);

/* Closes every live connection (shutdown). */
void tf_live_close_all(tf_master_t *m);

#endif
