/*
 * net.h - what the files of net/ share: the listener's state and the
 * limits that keep unauthenticated clients from exhausting the master.
 *
 * Every accepted connection gets a tf_conn_t (server.c), found from its
 * wsi through lws's opaque user data, whatever protocol it ends up
 * speaking. A connection is "waiting" while it holds a socket without
 * having done anything that needed us: no complete request yet, idle
 * between keep-alive requests, or a slave link that has not
 * authenticated. When file descriptors run short (the reserve is reached)
 * a new connection evicts the oldest waiting one instead of being
 * refused, so clients that hoard sockets cannot lock slaves and the API
 * out; only when nobody is waiting is the newcomer refused.
 *
 * Pre-authentication buffering (slave links before their hello, HTTP
 * bytes that arrived before the caller was identified) is charged to one
 * global budget; over it new connections are refused.
 *
 * Everything here runs on the loop thread.
 */
#ifndef TF_NET_H
#define TF_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>
#include <uv.h>

#include "core/master.h"
#include "list.h"
#include "log.h"

/* File descriptors kept free for sqlite, pipes, mail and log files. */
#define TF_NET_FD_RESERVE 48
/* Idle connections are evicted to make room from this far below the
 * limit: the room a burst of connections accepted in one go may take
 * before the evicted ones are freed. */
#define TF_NET_FD_EVICT (2 * TF_NET_FD_RESERVE)
/* All pre-authentication buffering together: room for a few thousand
 * slaves reconnecting at once (a master restart on a large farm). */
#define TF_NET_PREAUTH_BUDGET (64u * 1024 * 1024)
/* What a connection costs before it is authenticated or served: charged
 * from its accept. Measured: ~5.6 KB of RSS per idle websocket (the
 * libwebsockets-on-libuv notes), so the budget lets some 10,000 slaves
 * reconnect at once. */
#define TF_NET_CONN_COST (6u * 1024)
/* Request headers must arrive within this (lws's header timeout). */
#define TF_NET_HEADER_S 10
/* An idle keep-alive connection is closed after this. */
#define TF_NET_KEEPALIVE_S 10

typedef struct tf_conn {
    tf_list_t node;      /* tf_net_t.conns, oldest first */
    struct lws *wsi;
    int fd;              /* its socket, for wsmask.c */
    int64_t since_ms;    /* tf_mono_ms() when it started waiting */
    bool waiting;
    size_t preauth;      /* bytes charged to the pre-auth budget */
} tf_conn_t;

typedef struct tf_net {
    tf_master_t *m;
    uv_timer_t sweep;    /* once a second: request deadlines */
    bool sweeping;
    unsigned fd_limit;   /* RLIMIT_NOFILE */
    tf_list_t conns;
    tf_list_t reqs;      /* HTTP requests attached to a connection */
} tf_net_t;

/* The connection of wsi, or NULL (not one we accepted). */
tf_conn_t *tf__net_conn(struct lws *wsi);

/* Registers wsi as one of our connections (once; later calls do
 * nothing). Every protocol calls it when it first sees a connection. */
void tf__net_register(struct lws *wsi);

/* Marks the connection of wsi waiting (evictable) or busy. */
void tf__net_set_waiting(struct lws *wsi, bool waiting);

/* Charges bytes more to the connection's pre-auth buffering. Returns
 * false (charging nothing) when the global budget would be passed. */
bool tf__net_preauth_charge(struct lws *wsi, size_t bytes);

/* Returns everything the connection had charged (it authenticated, or
 * its buffer was emptied). */
void tf__net_preauth_release(struct lws *wsi);

/* Resets connection c (RST to the peer) and has lws free it on its next
 * turn. */
void tf__net_reset(tf_conn_t *c);

/* Closes (asynchronously) the oldest connection that has been waiting
 * long enough, logging why. Returns false when there is none. */
bool tf__net_make_room(tf_master_t *m, const char *why);

/* Whether a new connection of `bytes` pre-auth cost fits the budget. */
bool tf__net_preauth_room(tf_master_t *m, size_t bytes);

/* Handles the lws reasons every protocol sees (WSI_CREATE, WSI_DESTROY,
 * FILTER_NETWORK_CONNECTION). Returns 1 when it handled reason (then
 * *rc is what the callback returns), 0 otherwise. */
int tf__net_common(struct lws *wsi, enum lws_callback_reasons reason,
                   void *in, int *rc);

/* Warnings an attacker can provoke by the thousand go through this: at
 * most one line a second per call site, the next line saying how many
 * were held back. */
typedef struct tf_ratelimit {
    int64_t last_ms;
    unsigned held;
} tf_ratelimit_t;

/* Whether a line may go out now; *held gets how many were held back
 * since the last one (when it may). */
bool tf__net_ratelimit(tf_ratelimit_t *rl, unsigned *held);

#define tf__net_warn(sub, ...)                                                 \
    do {                                                                       \
        static tf_ratelimit_t rl_;                                             \
        unsigned held_;                                                        \
        if (tf__net_ratelimit(&rl_, &held_)) {                                 \
            tf_log(TF_LOG_WARN, sub, __VA_ARGS__);                             \
            if (held_)                                                         \
                tf_log(TF_LOG_WARN, sub, "(%u more like it in the last "      \
                       "second)", held_);                                      \
        }                                                                      \
    } while (0)

/* Whether the client of wsi sent an unmasked websocket frame (wsmask.c);
 * the caller closes with 1002. */
bool tf__net_unmasked(struct lws *wsi);

/* --- wsmask.c: RFC 6455 masking, which lws 4.1 does not check --- */

/* From the loop thread, before any connection: watches from now on. */
void tf__wsmask_start(void);
void tf__wsmask_stop(void);

/* Scans what fd receives from now on, as HTTP until the upgrade. */
void tf__wsmask_watch(int fd);

/* Stops scanning fd (a plain HTTP connection, or gone). */
void tf__wsmask_unwatch(int fd);

/* fd's connection became a websocket: frames from now on. Returns false
 * when what came behind the handshake is already bad. */
bool tf__wsmask_upgraded(int fd);

/* Whether an unmasked frame has arrived on fd. */
bool tf__wsmask_bad(int fd);

/* --- http.c --- */

/* Once a second: ends requests past their deadlines. */
void tf__http_sweep(tf_master_t *m);

/* --- live.c --- */

/* Once a second: returns memory to the system after viewers left. */
void tf__live_sweep(tf_master_t *m);

#endif
