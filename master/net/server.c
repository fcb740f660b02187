/*
 * server.c - the libwebsockets context of tf-master, on the master's own
 * libuv loop.
 *
 * One port serves the slave websocket protocol ("testfarm-slave" at
 * /slave), the JSON API under /api/v1 (http.c, api.c) and, when web_root is
 * configured, the status pages as static files. What the field notes in
 * shared/notes/libwebsockets-on-libuv.md taught shows up here: the libuv
 * option and foreign_loops (lws never runs the loop), no signal handlers
 * from lws, HTTP/1.1 only, "*" mapped to octet-stream so unknown file types
 * are served, and the two-call destroy on shutdown.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "clock.h"
#include "core/master.h"
#include "log.h"
#include "net/link.h"
#include "net/live.h"
#include "net/net.h"
#include "net/server.h"
#include "api/cache.h"
#include "tf_err.h"

/* --- connections and limits (net.h) --- */

tf_conn_t *tf__net_conn(struct lws *wsi)
{
    return wsi ? lws_get_opaque_user_data(wsi) : NULL;
}

static tf_master_t *master_of(struct lws *wsi)
{
    return lws_context_user(lws_get_context(wsi));
}

void tf__net_set_waiting(struct lws *wsi, bool waiting)
{
    tf_conn_t *c = tf__net_conn(wsi);
    if (!c || c->waiting == waiting)
        return;
    c->waiting = waiting;
    c->since_ms = tf_mono_ms();
}

bool tf__net_preauth_room(tf_master_t *m, size_t bytes)
{
    return m->net_stats.preauth_bytes + bytes <= TF_NET_PREAUTH_BUDGET;
}

bool tf__net_preauth_charge(struct lws *wsi, size_t bytes)
{
    tf_conn_t *c = tf__net_conn(wsi);
    tf_master_t *m = master_of(wsi);
    if (!c)
        return true;
    if (!tf__net_preauth_room(m, bytes))
        return false;
    c->preauth += bytes;
    m->net_stats.preauth_bytes += bytes;
    return true;
}

void tf__net_preauth_release(struct lws *wsi)
{
    tf_conn_t *c = tf__net_conn(wsi);
    if (!c || !c->preauth)
        return;
    tf_master_t *m = master_of(wsi);
    m->net_stats.preauth_bytes -= c->preauth;
    c->preauth = 0;
}

bool tf__net_ratelimit(tf_ratelimit_t *rl, unsigned *held)
{
    int64_t now = tf_mono_ms();
    if (rl->last_ms && now - rl->last_ms < 1000) {
        rl->held++;
        return false;
    }
    rl->last_ms = now;
    *held = rl->held;
    rl->held = 0;
    return true;
}

/* The connection that has been waiting longest, or NULL. The list is in
 * the order connections arrived, which is close enough to the order they
 * started waiting: a newcomer is evicted last. */
static tf_conn_t *evictable(tf_net_t *net)
{
    tf_list_t *it;
    tf_list_foreach(it, &net->conns)
    {
        tf_conn_t *c = tf_list_entry(it, tf_conn_t, node);
        if (c->waiting)
            return c;
    }
    return NULL;
}

void tf__net_reset(tf_conn_t *c)
{
    /* lws closes gracefully (it shuts its side and waits for the peer's);
     * a hoarder would hold the descriptor meanwhile, and a close asked
     * for from outside a callback is not always acted on at once. A reset
     * connection reads as dead: lws frees it on its next turn. */
    if (c->fd >= 0) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        shutdown(c->fd, SHUT_RDWR);
    }
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

bool tf__net_make_room(tf_master_t *m, const char *why)
{
    tf_conn_t *victim = m->net_state ? evictable(m->net_state) : NULL;
    if (!victim)
        return false;
    char peer[64] = "?";
    lws_get_peer_simple(victim->wsi, peer, sizeof(peer));
    tf_debug("net", "%s: closing the connection from %s, idle or "
             "unauthenticated for %lld ms", why, peer,
             (long long)(tf_mono_ms() - victim->since_ms));
    m->net_stats.evicted++;
    victim->waiting = false; /* once */
    tf__net_reset(victim);
    return true;
}

/* A new connection arrived on descriptor fd: whether to keep it. With the
 * pre-auth budget spent, or once descriptors come within TF_NET_FD_EVICT
 * of the limit, the oldest waiting connections make room for it (two for
 * one, so a crowd shrinks) and it is kept; when none is waiting it is
 * refused. Evicted descriptors are freed on lws's next turn, but lws
 * accepts a whole burst in one go: the eviction zone is wide enough for a
 * burst, and in the last half of the reserve newcomers are refused
 * outright, so the descriptors sqlite, pipes and files need are never
 * taken. */
static bool accept_ok(tf_master_t *m, int fd)
{
    tf_net_t *net = m->net_state;
    if (m->stopping)
        return false;
    if (!tf__net_preauth_room(m, TF_NET_CONN_COST) &&
        !tf__net_make_room(m, "pre-auth budget spent")) {
        m->net_stats.refused++;
        tf__net_warn("net", "refusing a connection: %zu bytes are buffered for "
                "unauthenticated clients (budget %u)",
                m->net_stats.preauth_bytes, TF_NET_PREAUTH_BUDGET);
        return false;
    }
    if (fd < 0 || (unsigned)fd + TF_NET_FD_EVICT < net->fd_limit)
        return true;
    char why[96];
    snprintf(why, sizeof(why), "descriptors short (%d of %u)", fd,
             net->fd_limit);
    bool room = tf__net_make_room(m, why);
    room = tf__net_make_room(m, why) || room;
    if (room && (unsigned)fd + TF_NET_FD_RESERVE / 2 < net->fd_limit)
        return true;
    m->net_stats.refused++;
    tf__net_warn("net", "refusing a connection: descriptor %d is within the "
            "reserve of %d below the limit of %u, and no idle connection "
            "can make room", fd, TF_NET_FD_RESERVE, net->fd_limit);
    return false;
}

int tf__net_common(struct lws *wsi, enum lws_callback_reasons reason,
                   void *in, int *rc)
{
    tf_master_t *m = master_of(wsi);
    tf_net_t *net = m->net_state;
    tf_conn_t *c;
    *rc = 0;
    (void)in;
    switch (reason) {
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        *rc = net && accept_ok(m, (int)(intptr_t)in) ? 0 : 1;
        return 1;
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        tf__net_register(wsi);
        return 0;
    case LWS_CALLBACK_FILTER_HTTP_CONNECTION:
        /* A complete request (ours, or a static file lws serves): busy
         * until its transaction is over. */
        tf__net_set_waiting(wsi, false);
        return 0;
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        tf__net_set_waiting(wsi, true); /* back to keep-alive idle */
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        c = tf__net_conn(wsi);
        if (c) {
            tf__net_preauth_release(wsi);
            tf__wsmask_unwatch(c->fd);
            lws_set_opaque_user_data(wsi, NULL);
            tf_list_unlink(&c->node);
            m->net_stats.connections--;
            free(c);
        }
        return 0; /* the protocol may want it too */
    default:
        return 0;
    }
}

/* Registers a connection the first time one of our protocols sees it. */
void tf__net_register(struct lws *wsi)
{
    tf_master_t *m = master_of(wsi);
    if (!m->net_state || tf__net_conn(wsi))
        return;
    tf_conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->wsi = wsi;
    c->fd = lws_get_socket_fd(wsi);
    c->waiting = true;
    c->since_ms = tf_mono_ms();
    lws_set_opaque_user_data(wsi, c);
    tf_list_push_back(&m->net_state->conns, &c->node);
    m->net_stats.connections++;
    tf__wsmask_watch(c->fd);
    /* Released when it authenticates (a slave's hello) or is served (an
     * HTTP request accepted, a live viewer). */
    tf__net_preauth_charge(wsi, TF_NET_CONN_COST);
}

bool tf__net_unmasked(struct lws *wsi)
{
    tf_conn_t *c = tf__net_conn(wsi);
    return c && tf__wsmask_bad(c->fd);
}

/* Connections that sent an unmasked control frame (lws handled it, so no
 * protocol callback saw it) are closed here. */
static void close_unmasked(tf_net_t *net)
{
    tf_list_t *it;
    tf_list_foreach(it, &net->conns)
    {
        tf_conn_t *c = tf_list_entry(it, tf_conn_t, node);
        if (tf__wsmask_bad(c->fd) && c->fd >= 0) {
            tf__net_warn("net", "closing a connection that sent an "
                         "unmasked websocket frame");
            tf__wsmask_unwatch(c->fd);
            tf__net_reset(c);
        }
    }
}

static void sweep_cb(uv_timer_t *t)
{
    tf_master_t *m = t->data;
    tf__http_sweep(m);
    tf__live_sweep(m);
    close_unmasked(m->net_state);
}

static void lws_log_emit(int level, const char *line)
{
    /* lws lines end with a newline; ours add their own. */
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (level & LLL_ERR)
        tf_log(TF_LOG_WARN, "lws", "%.*s", (int)n, line);
    else
        tf_debug("lws", "%.*s", (int)n, line);
}

/* The HTTP protocol's callback, with websocket upgrades checked first
 * (link.c) so a client that names no or the wrong subprotocol is told so
 * in an HTTP answer. */
static int http_cb(struct lws *wsi, enum lws_callback_reasons reason,
                   void *user, void *in, size_t len)
{
    if (reason == LWS_CALLBACK_HTTP_CONFIRM_UPGRADE)
        return tf_link_confirm_upgrade(
            lws_context_user(lws_get_context(wsi)), wsi);
    return tf_http_callback(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    {
        .name = "http",
        .callback = http_cb,
        .per_session_data_size = sizeof(void *),
        .rx_buffer_size = 0,
    },
    {
        .name = TF_PROTO_SUBPROTOCOL,
        .callback = tf_link_callback,
        .per_session_data_size = sizeof(void *),
        /* A whole output frame fits in one read. */
        .rx_buffer_size = TF_PROTO_OUT_HDR + TF_PROTO_MAX_CHUNK,
        .tx_packet_size = 0,
    },
    {
        .name = TF_LIVE_SUBPROTOCOL,
        .callback = tf_live_callback,
        .per_session_data_size = sizeof(void *),
        .rx_buffer_size = 65536,
    },
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static const struct lws_protocol_vhost_options mime_any = {
    NULL, NULL, "*", "application/octet-stream"};
static const struct lws_protocol_vhost_options mime_js = {
    &mime_any, NULL, ".mjs", "text/javascript"};

static struct lws_http_mount web_mount = {
    .mountpoint = "/",
    .origin_protocol = LWSMPRO_FILE,
    .def = "index.html",
    .mountpoint_len = 1,
    /* Pages may be kept but are revalidated (ETag) at every use, so an
     * upgraded master serves its new scripts at once. Only the API says
     * no-store. */
    .cache_max_age = 1,
    .cache_reusable = 1,
    .cache_revalidate = 1,
    .extra_mimetypes = &mime_js,
};

/* /api goes to our callback even when "/" serves files: lws picks the
 * longest matching mountpoint. */
static struct lws_http_mount api_mount = {
    .mountpoint = "/api",
    .origin = "http",
    .origin_protocol = LWSMPRO_CALLBACK,
    .mountpoint_len = 4,
};

/* Status badges are the API's too, beside the pages. */
static struct lws_http_mount badge_mount = {
    .mountpoint = "/badge",
    .origin = "http",
    .origin_protocol = LWSMPRO_CALLBACK,
    .mountpoint_len = 6,
};

static int net_new(tf_master_t *m)
{
    tf_net_t *net = calloc(1, sizeof(*net));
    if (!net)
        return TF_ENOMEM;
    net->m = m;
    tf_list_init(&net->conns);
    tf_list_init(&net->reqs);
    struct rlimit rl;
    net->fd_limit = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        net->fd_limit = rl.rlim_cur > 1u << 24 ? 1u << 24
                                               : (unsigned)rl.rlim_cur;
    if (net->fd_limit <= 2 * TF_NET_FD_RESERVE)
        tf_warn("net", "the descriptor limit is %u: raise it (ulimit -n, "
                "systemd LimitNOFILE) well above %d", net->fd_limit,
                2 * TF_NET_FD_RESERVE);
    uv_timer_init(m->loop, &net->sweep);
    net->sweep.data = m;
    uv_timer_start(&net->sweep, sweep_cb, 1000, 1000);
    m->net_state = net;
    tf__wsmask_start();
    return 0;
}

int tf_server_start(tf_master_t *m)
{
    struct lws_context_creation_info info;
    void *loops[1] = {m->loop};
    int rc = net_new(m);
    if (rc)
        return rc;

    lws_set_log_level(tf_log_level() <= TF_LOG_DEBUG
                          ? (LLL_ERR | LLL_WARN | LLL_NOTICE)
                          : (LLL_ERR),
                      lws_log_emit);
    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_LIBUV |
                   LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN |
                   LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND |
                   LWS_SERVER_OPTION_DISABLE_IPV6 |
                   LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE;
    info.foreign_loops = loops;
    info.port = m->cfg->listen_port;
    info.iface = m->cfg->listen_host;
    info.protocols = protocols;
    info.user = m;
    info.vhost_name = "tf-master";
    info.server_string = "tf-master";
    info.alpn = "http/1.1";
    info.timeout_secs = 30;
    /* A connection must send its request headers within this (lws holds
     * a header buffer for it meanwhile), and may stay idle between
     * keep-alive requests for that long. */
    info.timeout_secs_ah_idle = TF_NET_HEADER_S;
    info.keepalive_timeout = TF_NET_KEEPALIVE_S;
    /* Headers like Authorization and Range must fit. */
    info.max_http_header_data = 8192;
    info.pt_serv_buf_size = 65536;
    api_mount.mount_next = &badge_mount;
    badge_mount.mount_next = NULL;
    if (m->cfg->web_root) {
        /* The mount keeps this pointer for the context's life; a SIGHUP
         * frees the config it came from. */
        free(m->web_root);
        m->web_root = strdup(m->cfg->web_root);
        if (!m->web_root)
            return TF_ENOMEM;
        web_mount.origin = m->web_root;
        badge_mount.mount_next = &web_mount;
    }
    info.mounts = &api_mount;
    /* The vhost (the listener) is made apart from the context: on a
     * foreign libuv loop a context whose default vhost cannot bind comes
     * back half torn down, and destroying it leaves freed handles in the
     * loop. A failed explicit vhost leaves a sound context that the
     * caller tears down like at shutdown (tf_server_stop, a loop run,
     * tf_server_destroy). */
    info.options |= LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    if (m->cfg->tls_cert) {
        /* listen.tls: the same port speaks only TLS (https, wss). lws
         * reads both files when the vhost is made; a reload does not
         * change them (restart the master). */
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = m->cfg->tls_cert;
        info.ssl_private_key_filepath = m->cfg->tls_key;
    }
    m->lws = lws_create_context(&info);
    if (!m->lws) {
        tf_error("server", "cannot start the web server");
        return TF_EIO;
    }
    m->vhost = lws_create_vhost(m->lws, &info);
    if (!m->vhost) {
        if (m->cfg->tls_cert)
            tf_error("server", "cannot listen on %s:%u with TLS (is the port "
                     "in use? do %s and %s hold a PEM certificate and its "
                     "key?)", m->cfg->listen_host, m->cfg->listen_port,
                     m->cfg->tls_cert, m->cfg->tls_key);
        else
            tf_error("server", "cannot listen on %s:%u (is the port in use?)",
                     m->cfg->listen_host, m->cfg->listen_port);
        return TF_EIO;
    }
    if (m->cfg->tls_cert)
        tf_info("server", "TLS on %s:%u with certificate %s",
                m->cfg->listen_host, m->cfg->listen_port, m->cfg->tls_cert);
    return 0;
}

void tf_server_stop(tf_master_t *m)
{
    if (m->net_state && !uv_is_closing((uv_handle_t *)&m->net_state->sweep))
        uv_close((uv_handle_t *)&m->net_state->sweep, NULL);
    if (m->lws)
        lws_context_destroy(m->lws);
}

void tf_server_destroy(tf_master_t *m)
{
    if (m->lws)
        lws_context_destroy(m->lws);
    m->lws = NULL;
    tf_api_cache_free(m);
    if (m->net_state) {
        /* Every connection is gone with the context; what is left is
         * bookkeeping lws never told us about. */
        tf_list_t *it, *tmp;
        tf_list_foreach_safe(it, tmp, &m->net_state->conns)
        {
            free(tf_list_entry(it, tf_conn_t, node));
        }
        free(m->net_state);
        m->net_state = NULL;
        tf__wsmask_stop();
    }
}
