/*
 * server.h - the libwebsockets context (server.c) and the HTTP side's
 * callback (http.c).
 */
#ifndef TF_SERVER_H
#define TF_SERVER_H

#include <libwebsockets.h>

#include "core/master.h"

int tf_http_callback(struct lws *wsi, enum lws_callback_reasons reason,
                     void *user, void *in, size_t len);

/* Creates the lws context on m->loop, listening on the configured address.
 * Returns 0 or TF_EIO with the cause logged. */
int tf_server_start(tf_master_t *m);

/* First phase of stopping lws (see the notes on foreign loops). */
void tf_server_stop(tf_master_t *m);

/* Second phase; call from our own timer once only our handles are left. */
void tf_server_destroy(tf_master_t *m);

#endif
