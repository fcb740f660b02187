/*
 * net.h - tf-indicator's links to its masters: for each, the live feed
 * (websocket /live, topic "builds") and the snapshot (GET /api/v1/summary
 * and /api/v1/builders), reconnecting by itself with capped backoff.
 *
 * The links run on their own thread (see net.c for why); what they learn
 * reaches the GTK thread as messages: the caller watches tf_ind_net_fd()
 * for readability and takes the messages with tf_ind_net_take(). No GTK
 * here, and no master state: the messages carry raw JSON text that
 * state.c interprets.
 */
#ifndef TF_IND_NET_H
#define TF_IND_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef enum {
    TF_IND_NET_UP = 0,   /* subscribed; a snapshot follows */
    TF_IND_NET_EVENT,    /* text: one live-feed frame */
    TF_IND_NET_SNAPSHOT, /* text: the summary, text2: the builders */
    TF_IND_NET_DOWN,     /* error: why; retry_ms: the next attempt */
} tf_ind_net_kind_t;

typedef struct tf_ind_net_msg {
    struct tf_ind_net_msg *next;
    tf_ind_net_kind_t kind;
    size_t master; /* index into the config's masters */
    char *text;    /* owned, NUL-terminated, or NULL */
    size_t len;
    char *text2;   /* owned, NUL-terminated, or NULL */
    size_t len2;
    char error[256];
    int64_t retry_ms;
} tf_ind_net_msg_t;

typedef struct tf_ind_net tf_ind_net_t;

#define TF_IND_WS_MSG_MAX (1u << 20)     /* one live-feed frame */
#define TF_IND_HTTP_BODY_MAX (16u << 20) /* one API answer */
#define TF_IND_QUEUE_MSGS 8192           /* messages waiting for the UI */
#define TF_IND_QUEUE_BYTES (64u << 20)
#define TF_IND_SYNC_TIMEOUT_S 30         /* connect to LIVE, at most */

/* Starts the links to conf's masters (conf is copied). Returns 0 and
 * *out, or a negative TF_E* code (the lws context could not be made). */
int tf_ind_net_start(const tf_ind_conf_t *conf, tf_ind_net_t **out);

/* An fd that is readable while messages wait (borrowed). */
int tf_ind_net_fd(const tf_ind_net_t *net);

/* Takes every waiting message, oldest first (the caller frees the list
 * with tf_ind_net_msg_free); NULL when none. Clears the fd's readiness. */
tf_ind_net_msg_t *tf_ind_net_take(tf_ind_net_t *net);

/* Frees a list of messages; NULL is fine. */
void tf_ind_net_msg_free(tf_ind_net_msg_t *list);

/* Asks the link of master i to start over (drop, reconnect, new
 * snapshot): at once when now (the model could not keep up), else after
 * the backoff (the master sent something unusable; why says what, for
 * the log). Thread-safe. */
void tf_ind_net_restart(tf_ind_net_t *net, size_t i, bool now,
                        const char *why);

/* Closes every link, stops the thread and frees net (NULL is fine). */
void tf_ind_net_stop(tf_ind_net_t *net);

#endif
