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

#include "net/live.h"
#include "log.h"
#include "core/master.h"
#include "tf_err.h"

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

int tf_server_start(tf_master_t *m)
{
    struct lws_context_creation_info info;
    void *loops[1] = {m->loop};

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
    /* Headers like Authorization and Range must fit. */
    info.max_http_header_data = 8192;
    info.pt_serv_buf_size = 65536;
    api_mount.mount_next = NULL;
    if (m->cfg->web_root) {
        /* The mount keeps this pointer for the context's life; a SIGHUP
         * frees the config it came from. */
        free(m->web_root);
        m->web_root = strdup(m->cfg->web_root);
        if (!m->web_root)
            return TF_ENOMEM;
        web_mount.origin = m->web_root;
        api_mount.mount_next = &web_mount;
    }
    info.mounts = &api_mount;
    /* The vhost (the listener) is made apart from the context: on a
     * foreign libuv loop a context whose default vhost cannot bind comes
     * back half torn down, and destroying it leaves freed handles in the
     * loop. A failed explicit vhost leaves a sound context that the
     * caller tears down like at shutdown (tf_server_stop, a loop run,
     * tf_server_destroy). */
    info.options |= LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    m->lws = lws_create_context(&info);
    if (!m->lws) {
        tf_error("server", "cannot start the web server");
        return TF_EIO;
    }
    m->vhost = lws_create_vhost(m->lws, &info);
    if (!m->vhost) {
        tf_error("server", "cannot listen on %s:%u (is the port in use?)",
                 m->cfg->listen_host, m->cfg->listen_port);
        return TF_EIO;
    }
    return 0;
}

void tf_server_stop(tf_master_t *m)
{
    if (m->lws)
        lws_context_destroy(m->lws);
}

void tf_server_destroy(tf_master_t *m)
{
    if (m->lws)
        lws_context_destroy(m->lws);
    m->lws = NULL;
}
