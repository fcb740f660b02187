/*
 * live.c - the live-feed link of tf-try --wait, on libwebsockets' own poll
 * loop.
 *
 * Why lws and not libcurl: Debian 12's libcurl has no WebSocket support,
 * and the project already depends on lws (the master serves the feed with
 * it, tf-slave and tf-indicator are its clients). Why lws's own loop and
 * not libuv (as tf-slave): tf-try is a blocking, one-thread command whose
 * HTTP requests (libcurl) block anyway; tf-indicator runs the same lws
 * loop on a thread of its own for the same reason. The state machine is
 * the one in live.h, changed only by live_set().
 *
 * The only pointer to the wsi is cleared in every callback that ends it
 * (CONNECTION_ERROR, CLOSED, WSI_DESTROY), so a freed wsi is never used.
 * lws_service's timeout is ignored by lws 4.1 (it sleeps until its next
 * scheduled event), so tf_try_live_service schedules a wake-up timer first.
 */
#include "live.h"

#include <assert.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "tf_err.h"

struct tf_try_live {
    struct lws_context *ctx;
    struct lws *wsi;
    lws_sorted_usec_list_t wake;
    lws_sorted_usec_list_t deadline;
    tf_try_live_state_t state;
    bool verbose;
    char *sub;          /* the subscribe frame */
    size_t sub_len;
    bool sub_sent;
    tf_buf_t rx;        /* one frame being reassembled */
    json_t *queue;      /* events not taken yet */
    size_t head;        /* the next one to take */
    char why[256];
    char host[256];
    char path[1024];
};

static const char *const state_names[] = {"CONNECTING", "SUBSCRIBING", "UP",
                                          "DOWN"};

static void live_set(tf_try_live_t *l, tf_try_live_state_t to, const char *why)
{
    if (l->state == to || l->state == TF_TRY_LIVE_DOWN)
        return; /* DOWN is for good; a repeated move changes nothing */
    /* Legal moves: forward one step, or down from anywhere. */
    assert(to == TF_TRY_LIVE_DOWN || to == l->state + 1);
    if (to != TF_TRY_LIVE_DOWN && to != l->state + 1)
        return;
    if (l->verbose)
        fprintf(stderr, "tf-try: live feed %s -> %s%s%s\n",
                state_names[l->state], state_names[to], why ? ": " : "",
                why ? why : "");
    l->state = to;
    if (to == TF_TRY_LIVE_DOWN)
        snprintf(l->why, sizeof(l->why), "%s", why ? why : "closed");
}

static void live_down(tf_try_live_t *l, const char *why)
{
    live_set(l, TF_TRY_LIVE_DOWN, why);
}

/* One whole frame in l->rx: an event, "subscribed", or an error. */
static int live_message(tf_try_live_t *l)
{
    json_t *j = json_loadb((const char *)l->rx.data, l->rx.len, 0, NULL);
    const char *type = json_string_value(json_object_get(j, "type"));
    int rc = 0;
    tf_buf_reset(&l->rx);
    if (!type) {
        live_down(l, "a live-feed frame that is not a JSON event");
        rc = -1;
    } else if (strcmp(type, "subscribed") == 0) {
        live_set(l, TF_TRY_LIVE_UP, NULL);
    } else if (strcmp(type, "error") == 0) {
        live_down(l, "the master refused the subscription");
        rc = -1;
    } else if (json_array_size(l->queue) - l->head >= TF_TRY_LIVE_QUEUE_MAX) {
        live_down(l, "too many live events waiting");
        rc = -1;
    } else if (json_array_append(l->queue, j) < 0) {
        live_down(l, "out of memory");
        rc = -1;
    }
    json_decref(j);
    return rc;
}

static int live_cb(struct lws *wsi, enum lws_callback_reasons reason,
                   void *user, void *in, size_t len)
{
    tf_try_live_t *l = lws_get_opaque_user_data(wsi);
    (void)user;
    if (!l || wsi != l->wsi)
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        char why[200];
        snprintf(why, sizeof(why), "cannot open the live feed: %.150s",
                 in ? (const char *)in : "connection failed");
        l->wsi = NULL;
        live_down(l, why);
        return -1;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        live_set(l, TF_TRY_LIVE_SUBSCRIBING, NULL);
        lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE: {
        if (l->sub_sent)
            return 0;
        unsigned char *buf = malloc(LWS_PRE + l->sub_len);
        if (!buf) {
            live_down(l, "out of memory");
            return -1;
        }
        memcpy(buf + LWS_PRE, l->sub, l->sub_len);
        int n = lws_write(wsi, buf + LWS_PRE, l->sub_len, LWS_WRITE_TEXT);
        free(buf);
        if (n < (int)l->sub_len) {
            live_down(l, "cannot subscribe to the live feed");
            return -1;
        }
        l->sub_sent = true;
        return 0;
    }
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (lws_frame_is_binary(wsi))
            return 0; /* the feed is text */
        if (tf_buf_append(&l->rx, in, len) < 0) {
            live_down(l, "a live-feed frame over 1 MiB");
            return -1;
        }
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi))
            return live_message(l);
        return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        live_down(l, "the master closed the live feed");
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        l->wsi = NULL;
        live_down(l, "the live feed closed");
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols protocols[] = {
    {"testfarm-live", live_cb, 0, 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* With -v only: lws's errors and warnings, without its time stamp. */
static void lws_log_verbose(int level, const char *line)
{
    const char *p = strstr(line, "] ");
    size_t n;
    (void)level;
    p = p ? p + 2 : line;
    n = strlen(p);
    while (n && (p[n - 1] == '\n' || p[n - 1] == '\r'))
        n--;
    fprintf(stderr, "tf-try: lws: %.*s\n", (int)(n > 400 ? 400 : n), p);
}

static void deadline_cb(lws_sorted_usec_list_t *sul)
{
    tf_try_live_t *l = lws_container_of(sul, tf_try_live_t, deadline);
    if (l->state != TF_TRY_LIVE_UP) {
        live_down(l, "the live feed did not come up in time");
        if (l->wsi)
            lws_set_timeout(l->wsi, PENDING_TIMEOUT_USER_OK,
                            LWS_TO_KILL_ASYNC);
    }
}

static void wake_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul; /* only ends lws_service's wait */
}

int tf_try_live_open(const char *base_url, const char *ca_file,
                     const json_t *topics, bool verbose, tf_try_live_t **out,
                     tf_try_err_t *err)
{
    struct lws_context_creation_info info;
    struct lws_client_connect_info ci;
    const char *prot = NULL, *ads = NULL, *path = NULL;
    char url[1024];
    int port = 0, rc;
    tf_try_live_t *l;
    json_t *sub;

    *out = NULL;
    if (snprintf(url, sizeof(url), "%s", base_url) >= (int)sizeof(url) ||
        lws_parse_uri(url, &prot, &ads, &port, &path) != 0 ||
        (strcmp(prot, "http") != 0 && strcmp(prot, "https") != 0) || !*ads) {
        tf_try_errf(err, "cannot follow the live feed of %.200s", base_url);
        return TF_EINVAL;
    }
    l = calloc(1, sizeof(*l));
    if (!l)
        return TF_ENOMEM;
    l->verbose = verbose;
    tf_buf_init(&l->rx, TF_TRY_LIVE_MSG_MAX);
    l->queue = json_array();
    sub = json_pack("{s:O}", "subscribe", topics);
    l->sub = sub ? json_dumps(sub, JSON_COMPACT) : NULL;
    json_decref(sub);
    if (!l->queue || !l->sub) {
        rc = TF_ENOMEM;
        goto fail;
    }
    l->sub_len = strlen(l->sub);
    snprintf(l->host, sizeof(l->host), "%s", ads);
    /* lws gives the base's path with or without its leading '/' (by
     * version); the feed is "live" under it. */
    while (*path == '/')
        path++;
    snprintf(l->path, sizeof(l->path), "/%s%slive", path,
             *path && path[strlen(path) - 1] != '/' ? "/" : "");

    lws_set_log_level(verbose ? (LLL_ERR | LLL_WARN) : 0, lws_log_verbose);
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.options = strcmp(prot, "https") == 0
                       ? LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT
                       : 0;
    info.client_ssl_ca_filepath = ca_file;
    info.timeout_secs = 10;
    info.connect_timeout_secs = 5;
    l->ctx = lws_create_context(&info);
    if (!l->ctx) {
        tf_try_errf(err, "cannot start the live-feed client");
        rc = TF_EIO;
        goto fail;
    }
    memset(&ci, 0, sizeof(ci));
    ci.context = l->ctx;
    ci.address = l->host;
    ci.port = port;
    ci.ssl_connection = strcmp(prot, "https") == 0 ? LCCSCF_USE_SSL : 0;
    ci.path = l->path;
    ci.host = l->host;
    ci.origin = l->host;
    ci.protocol = "testfarm-live";
    ci.local_protocol_name = "testfarm-live";
    ci.alpn = "http/1.1";
    ci.opaque_user_data = l;
    ci.ietf_version_or_minus_one = -1;
    ci.pwsi = &l->wsi;
    l->state = TF_TRY_LIVE_CONNECTING;
    if (!lws_client_connect_via_info(&ci)) {
        l->wsi = NULL;
        live_down(l, "cannot open the live feed");
    }
    lws_sul_schedule(l->ctx, 0, &l->deadline, deadline_cb,
                     (lws_usec_t)TF_TRY_LIVE_OPEN_TIMEOUT_MS * LWS_US_PER_MS);
    *out = l;
    return 0;
fail:
    tf_try_live_free(l);
    return rc;
}

void tf_try_live_service(tf_try_live_t *l, int timeout_ms)
{
    if (!l)
        return;
    if (timeout_ms < 0)
        timeout_ms = 0;
    lws_sul_schedule(l->ctx, 0, &l->wake, wake_cb,
                     (lws_usec_t)timeout_ms * LWS_US_PER_MS);
    /* One pass returns after one batch of activity or the timer. */
    lws_service(l->ctx, timeout_ms);
}

tf_try_live_state_t tf_try_live_state(const tf_try_live_t *l)
{
    return l ? l->state : TF_TRY_LIVE_DOWN;
}

const char *tf_try_live_why(const tf_try_live_t *l)
{
    return l && l->state == TF_TRY_LIVE_DOWN ? l->why : "";
}

json_t *tf_try_live_next(tf_try_live_t *l)
{
    if (!l || l->head >= json_array_size(l->queue)) {
        if (l && l->head > 0) {
            json_array_clear(l->queue);
            l->head = 0;
        }
        return NULL;
    }
    return json_incref(json_array_get(l->queue, l->head++));
}

void tf_try_live_free(tf_try_live_t *l)
{
    if (!l)
        return;
    if (l->ctx) {
        lws_sul_cancel(&l->wake);
        lws_sul_cancel(&l->deadline);
        l->wsi = NULL; /* lws closes it; callbacks no longer find it ours */
        lws_context_destroy(l->ctx);
    }
    tf_buf_free(&l->rx);
    json_decref(l->queue);
    free(l->sub);
    free(l);
}
