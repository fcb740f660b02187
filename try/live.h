/*
 * live.h - tf-try's link to the master's live feed (/live, subprotocol
 * testfarm-live; docs/api.md "Live feed"), a libwebsockets client.
 *
 * tf-try is one blocking thread, so the link runs on lws's own poll loop
 * (no libuv): the wait loop calls tf_try_live_service with how long it may
 * block, then takes the received events one by one. The link subscribes to
 * the topics it is given; once the master has answered "subscribed" it is
 * up, and from then on every event the master publishes reaches us in
 * order. It never reconnects by itself: when it drops (or cannot be
 * opened) the caller frees it, polls the job over HTTP and opens a new one
 * later.
 *
 * Every buffer has a cap: one frame at TF_TRY_LIVE_MSG_MAX, the events
 * waiting to be taken at TF_TRY_LIVE_QUEUE_MAX (past it the link counts as
 * dropped: the caller's snapshot catches up, nothing grows).
 *
 *   CONNECTING --ws up--> SUBSCRIBING --"subscribed"--> UP
 *   any --error, close, cap, timeout--> DOWN (for good)
 */
#ifndef TF_TRY_LIVE_H
#define TF_TRY_LIVE_H

#include <jansson.h>
#include <stdbool.h>

#include "try.h"

#define TF_TRY_LIVE_MSG_MAX (1024 * 1024)
#define TF_TRY_LIVE_QUEUE_MAX 4096
#define TF_TRY_LIVE_OPEN_TIMEOUT_MS 5000 /* to reach UP */

typedef enum {
    TF_TRY_LIVE_CONNECTING,
    TF_TRY_LIVE_SUBSCRIBING,
    TF_TRY_LIVE_UP,
    TF_TRY_LIVE_DOWN,
} tf_try_live_state_t;

typedef struct tf_try_live tf_try_live_t;

/* Starts connecting to the live feed of the master at base_url (http or
 * https, ending in '/'; https becomes wss, checked against ca_file, NULL
 * for the system's CAs) and subscribing to topics (a JSON array, borrowed
 * for the call). verbose traces the link on stderr. Returns 0 with *out
 * set (free with tf_try_live_free), TF_EINVAL for a URL it cannot use, or
 * TF_ENOMEM / TF_EIO with err saying why. */
int tf_try_live_open(const char *base_url, const char *ca_file,
                     const json_t *topics, bool verbose, tf_try_live_t **out,
                     tf_try_err_t *err);

/* Runs the link for at most timeout_ms (less when something arrives or a
 * signal interrupts). */
void tf_try_live_service(tf_try_live_t *l, int timeout_ms);

tf_try_live_state_t tf_try_live_state(const tf_try_live_t *l);

/* Why the link is DOWN ("" otherwise). */
const char *tf_try_live_why(const tf_try_live_t *l);

/* The oldest event not taken yet (caller owns it), NULL when none. */
json_t *tf_try_live_next(tf_try_live_t *l);

/* Closes the link and frees l; l may be NULL. */
void tf_try_live_free(tf_try_live_t *l);

#endif
