/*
 * net.c - the links to the masters, on libwebsockets in a thread of their
 * own.
 *
 * Why libwebsockets, and why a thread: the project already depends on
 * libwebsockets (the master and the slave use it), and one library then
 * serves both the live feed (a websocket client) and the two API reads
 * (HTTP client), TLS included. Debian 12's lws 4.1.6 also has a glib
 * event-loop plugin that could run on GTK's loop, but with a foreign loop
 * its context does not tear down in one call (see the project's note on
 * lws with libuv, the same code path), and a GUI stalled in a dialog would
 * stall the links. lws's own poll loop on its own thread is the library's
 * main, best-trodden path; the price is one narrow hand-over: messages in
 * a mutex-protected, capped queue and an eventfd the GTK loop watches. The
 * thread never touches GTK or the model; the GTK thread never touches lws
 * (except lws_cancel_service, which is thread-safe).
 *
 * One link per master, with its state changed only by link_set(), which
 * logs and checks the move:
 *
 *   WAIT --timer--> CONNECTING --ws up--> SUBSCRIBING --"subscribed"-->
 *   FETCH_SUMMARY --200--> FETCH_BUILDERS --200--> LIVE
 *   any state --error, close, timeout, resync--> WAIT (backoff timer)
 *
 * Subscribing first and fetching after the "subscribed" answer means no
 * event can fall between the snapshot and the feed (state.c merges the
 * overlap). The backoff grows 1, 2, 4 ... s up to retry_max_ms and starts
 * again from 1 s once a link reached LIVE. A link that does not reach LIVE
 * within TF_IND_SYNC_TIMEOUT_S is dropped and retried; a LIVE link is
 * pinged after 20 s of silence and dropped after 45 s without an answer
 * (lws's idle policy), so a frozen master turns grey.
 *
 * Every wsi of a link is tracked by pointer: callbacks of a wsi that is no
 * longer the link's (one given up on, closing in the background) are
 * ignored, and a pointer is forgotten at the latest in WSI_DESTROY, so it
 * never outlives its wsi. Buffers are capped: a live-feed frame at
 * TF_IND_WS_MSG_MAX, an API answer at TF_IND_HTTP_BODY_MAX, the queue to
 * the UI at TF_IND_QUEUE_MSGS / TF_IND_QUEUE_BYTES (past it the link is
 * resynced rather than the queue grown).
 */
#include "net.h"

#include <errno.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "tf_err.h"

typedef enum {
    LINK_WAIT = 0,
    LINK_CONNECTING,
    LINK_SUBSCRIBING,
    LINK_FETCH_SUMMARY,
    LINK_FETCH_BUILDERS,
    LINK_LIVE,
} link_state_t;

static const char *const link_state_names[] = {
    "wait", "connecting", "subscribing", "fetch-summary", "fetch-builders",
    "live",
};

typedef struct link {
    tf_ind_net_t *net;
    size_t index;
    tf_ind_url_t url;
    link_state_t state;
    unsigned attempt;        /* failed attempts since the last LIVE */
    struct lws *ws;          /* the live feed, or NULL */
    struct lws *http;        /* the API read in progress, or NULL */
    int http_status;
    bool subscribe_sent;
    tf_buf_t rx;             /* the live-feed frame being reassembled */
    tf_buf_t body;           /* the API answer being read */
    char *summary;           /* the summary, until the builders arrive */
    size_t summary_len;
    lws_sorted_usec_list_t retry_sul;
    lws_sorted_usec_list_t watchdog_sul;
    int restart_wanted;      /* 0, RESTART_NOW or RESTART_BACKOFF; set by
                                the UI thread under net->lock */
    char restart_why[160];   /* under net->lock */
} link_t;

struct tf_ind_net {
    struct lws_context *ctx;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
    int efd;
    pthread_mutex_t lock;
    tf_ind_net_msg_t *head, *tail; /* under lock */
    size_t qmsgs, qbytes;          /* under lock */
    link_t *links;
    size_t nlinks;
    int retry_max_ms;
};

#define RESTART_NOW 1
#define RESTART_BACKOFF 2

static const lws_retry_bo_t ws_idle_policy = {
    .secs_since_valid_ping = 20,
    .secs_since_valid_hangup = 45,
};

/* lws names a refused certificate only in a log line ("SSL error: unable
 * to get local issuer certificate (preverify_ok=0...") and then reports
 * the connection error as "connect SSL err 1: error:00000001:lib(0)...".
 * The log line's reason is kept here (lws logs on the thread that runs it)
 * so that the menu can say what is wrong. */
static _Thread_local char last_tls_error[160];

static void link_connect_cb(lws_sorted_usec_list_t *sul);
static void link_watchdog_cb(lws_sorted_usec_list_t *sul);

/* ---- the queue to the UI ---- */

void tf_ind_net_msg_free(tf_ind_net_msg_t *list)
{
    while (list) {
        tf_ind_net_msg_t *next = list->next;
        free(list->text);
        free(list->text2);
        free(list);
        list = next;
    }
}

/* Queues msg (consumed). Returns 0 or TF_EFULL (msg freed). DOWN and UP
 * messages are always queued: they are few and the UI must see them. */
static int push(tf_ind_net_t *net, tf_ind_net_msg_t *msg)
{
    size_t bytes = msg->len + msg->len2 + sizeof(*msg);
    bool always = msg->kind == TF_IND_NET_DOWN || msg->kind == TF_IND_NET_UP;
    bool wake;

    pthread_mutex_lock(&net->lock);
    if (!always && (net->qmsgs >= TF_IND_QUEUE_MSGS ||
                    net->qbytes + bytes > TF_IND_QUEUE_BYTES)) {
        pthread_mutex_unlock(&net->lock);
        tf_ind_net_msg_free(msg);
        return TF_EFULL;
    }
    msg->next = NULL;
    wake = net->head == NULL;
    if (net->tail)
        net->tail->next = msg;
    else
        net->head = msg;
    net->tail = msg;
    net->qmsgs++;
    net->qbytes += bytes;
    pthread_mutex_unlock(&net->lock);
    if (wake) {
        uint64_t one = 1;
        ssize_t w = write(net->efd, &one, sizeof(one));
        (void)w; /* a full counter is still readable: nothing to do */
    }
    return 0;
}

tf_ind_net_msg_t *tf_ind_net_take(tf_ind_net_t *net)
{
    uint64_t v;
    tf_ind_net_msg_t *list;
    ssize_t r = read(net->efd, &v, sizeof(v));
    (void)r; /* EAGAIN: nothing was signalled, the queue may still hold */
    pthread_mutex_lock(&net->lock);
    list = net->head;
    net->head = net->tail = NULL;
    net->qmsgs = net->qbytes = 0;
    pthread_mutex_unlock(&net->lock);
    return list;
}

int tf_ind_net_fd(const tf_ind_net_t *net)
{
    return net->efd;
}

static tf_ind_net_msg_t *msg_new(link_t *l, tf_ind_net_kind_t kind)
{
    tf_ind_net_msg_t *m = calloc(1, sizeof(*m));
    if (m) {
        m->kind = kind;
        m->master = l->index;
    }
    return m;
}

/* ---- link states ---- */

static bool link_move_legal(link_state_t from, link_state_t to)
{
    if (to == LINK_WAIT)
        return from != LINK_WAIT;
    return (from == LINK_WAIT && to == LINK_CONNECTING) ||
           (from == LINK_CONNECTING && to == LINK_SUBSCRIBING) ||
           (from == LINK_SUBSCRIBING && to == LINK_FETCH_SUMMARY) ||
           (from == LINK_FETCH_SUMMARY && to == LINK_FETCH_BUILDERS) ||
           (from == LINK_FETCH_BUILDERS && to == LINK_LIVE);
}

static void link_set(link_t *l, link_state_t to)
{
    if (!link_move_legal(l->state, to)) {
        tf_error("net", "%s: illegal link move %s -> %s", l->url.base,
                 link_state_names[l->state], link_state_names[to]);
        return;
    }
    tf_debug("net", "%s: %s -> %s", l->url.base, link_state_names[l->state],
             link_state_names[to]);
    l->state = to;
}

/* Closes a wsi that is not the one whose callback is running. */
static void wsi_kill(struct lws *wsi)
{
    if (wsi)
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* Gives up on the link's connections (self: the wsi whose callback runs
 * and will close by returning -1, or NULL), tells the UI and schedules the
 * next attempt after retry_ms (-1: the backoff's next step). */
static void link_fail(link_t *l, struct lws *self, const char *why,
                      int64_t retry_ms)
{
    if (l->state == LINK_WAIT)
        return;
    if (l->ws && l->ws != self)
        wsi_kill(l->ws);
    if (l->http && l->http != self)
        wsi_kill(l->http);
    l->ws = NULL;
    l->http = NULL;
    tf_buf_reset(&l->rx);
    tf_buf_reset(&l->body);
    free(l->summary);
    l->summary = NULL;
    lws_sul_cancel(&l->watchdog_sul);
    if (retry_ms < 0) {
        double jitter = (double)(lws_now_usecs() % 1000) / 1000.0;
        retry_ms = tf_ind_backoff_ms(l->attempt, l->net->retry_max_ms, jitter);
        l->attempt++;
    }
    link_set(l, LINK_WAIT);
    tf_info("net", "%s: %s; next attempt in %lld ms", l->url.base, why,
            (long long)retry_ms);
    tf_ind_net_msg_t *m = msg_new(l, TF_IND_NET_DOWN);
    if (m) {
        snprintf(m->error, sizeof(m->error), "%s", why);
        m->retry_ms = retry_ms;
        (void)push(l->net, m);
    }
    lws_sul_schedule(l->net->ctx, 0, &l->retry_sul, link_connect_cb,
                     (lws_usec_t)retry_ms * LWS_US_PER_MS);
}

static struct lws *client_connect(link_t *l, const char *path,
                                  const char *method, const char *local)
{
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.context = l->net->ctx;
    ci.address = l->url.host;
    ci.port = l->url.port;
    ci.ssl_connection = l->url.tls ? LCCSCF_USE_SSL : 0;
    ci.path = path;
    ci.host = l->url.host;
    ci.origin = l->url.host;
    ci.method = method;
    ci.local_protocol_name = local;
    ci.protocol = method ? NULL : "testfarm-live";
    ci.opaque_user_data = l;
    ci.alpn = "http/1.1";
    if (!method)
        ci.retry_and_idle_policy = &ws_idle_policy;
    ci.ietf_version_or_minus_one = -1;
    return lws_client_connect_via_info(&ci);
}

/* Resolves the master's host first, so that a name that does not resolve
 * is reported as such: lws fails such a connection before it returns, with
 * no callback and no reason. Blocking, like lws's own lookup, on this
 * thread only. Returns 0 or -1 with why set. */
static int link_resolve(link_t *l, char *why, size_t whylen)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(l->url.host, NULL, &hints, &res);
    if (rc != 0) {
        snprintf(why, whylen, "cannot resolve %.100s: %s", l->url.host,
                 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return -1;
    }
    freeaddrinfo(res);
    return 0;
}

static void link_connect_cb(lws_sorted_usec_list_t *sul)
{
    link_t *l = lws_container_of(sul, link_t, retry_sul);
    char path[300], why[200];

    if (l->ws || l->http) {
        /* The last attempt's sockets are still closing: a moment later. */
        lws_sul_schedule(l->net->ctx, 0, &l->retry_sul, link_connect_cb,
                         100 * LWS_US_PER_MS);
        return;
    }
    link_set(l, LINK_CONNECTING);
    l->subscribe_sent = false;
    if (link_resolve(l, why, sizeof(why)) < 0) {
        link_fail(l, NULL, why, -1);
        return;
    }
    lws_sul_schedule(l->net->ctx, 0, &l->watchdog_sul, link_watchdog_cb,
                     (lws_usec_t)TF_IND_SYNC_TIMEOUT_S * LWS_US_PER_SEC);
    snprintf(path, sizeof(path), "%s/live", l->url.prefix);
    tf_debug("net", "%s: connecting to %s", l->url.base, path);
    l->ws = client_connect(l, path, NULL, "testfarm-live");
    if (!l->ws)
        link_fail(l, NULL, "cannot start a connection", -1);
}

static void link_watchdog_cb(lws_sorted_usec_list_t *sul)
{
    link_t *l = lws_container_of(sul, link_t, watchdog_sul);
    char why[80];
    if (l->state == LINK_LIVE || l->state == LINK_WAIT)
        return;
    snprintf(why, sizeof(why), "no snapshot within %d s (stuck at %s)",
             TF_IND_SYNC_TIMEOUT_S, link_state_names[l->state]);
    link_fail(l, NULL, why, -1);
}

static void link_fetch(link_t *l, const char *what)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/api/v1/%s", l->url.prefix, what);
    tf_buf_reset(&l->body);
    l->http_status = 0;
    l->http = client_connect(l, path, "GET", "tf-ind-http");
    if (!l->http)
        link_fail(l, NULL, "cannot start an API request", -1);
}

/* ---- the live feed ---- */

/* One whole frame from the live feed. Returns 0, or -1 when the link was
 * failed (the caller's wsi must close). */
static int ws_message(link_t *l, struct lws *wsi)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)l->rx.data, l->rx.len, 0, &jerr);
    const char *type = json_string_value(json_object_get(j, "type"));
    int rc = 0;

    if (!type) {
        tf_warn("net", "%s: a live-feed frame without a type: ignored",
                l->url.base);
        goto out;
    }
    if (strcmp(type, "subscribed") == 0 && l->state == LINK_SUBSCRIBING) {
        tf_ind_net_msg_t *m = msg_new(l, TF_IND_NET_UP);
        if (m)
            (void)push(l->net, m);
        link_set(l, LINK_FETCH_SUMMARY);
        link_fetch(l, "summary");
        goto out;
    }
    if (strcmp(type, "error") == 0) {
        tf_warn("net", "%s: the live feed says: %.200s", l->url.base,
                json_string_value(json_object_get(j, "message"))
                    ? json_string_value(json_object_get(j, "message"))
                    : "?");
        goto out;
    }
    if (strcmp(type, "build") != 0 || l->state < LINK_FETCH_SUMMARY)
        goto out;
    tf_ind_net_msg_t *m = msg_new(l, TF_IND_NET_EVENT);
    if (m) {
        m->text = (char *)tf_buf_steal(&l->rx, &m->len);
        if (!m->text) {
            free(m);
            m = NULL;
        }
    }
    if (!m || push(l->net, m) < 0) {
        link_fail(l, wsi, "the indicator fell behind the live feed; "
                          "resyncing", 0);
        rc = -1;
    }
out:
    json_decref(j);
    tf_buf_reset(&l->rx);
    return rc;
}

static int ws_writeable(link_t *l, struct lws *wsi)
{
    static const char sub[] = "{\"subscribe\": [\"builds\"]}";
    unsigned char buf[LWS_PRE + sizeof(sub)];
    if (l->subscribe_sent)
        return 0;
    memcpy(buf + LWS_PRE, sub, sizeof(sub) - 1);
    if (lws_write(wsi, buf + LWS_PRE, sizeof(sub) - 1, LWS_WRITE_TEXT) <
        (int)(sizeof(sub) - 1)) {
        link_fail(l, wsi, "cannot subscribe to the live feed", -1);
        return -1;
    }
    l->subscribe_sent = true;
    return 0;
}

/* ---- the API reads ---- */

static int http_done(link_t *l, struct lws *wsi)
{
    char why[120];
    size_t len;
    char *body;

    if (l->http_status != 200) {
        snprintf(why, sizeof(why), "HTTP status %d from /api/v1/%s",
                 l->http_status,
                 l->state == LINK_FETCH_SUMMARY ? "summary" : "builders");
        link_fail(l, wsi, why, -1);
        return -1;
    }
    body = (char *)tf_buf_steal(&l->body, &len);
    if (!body) {
        body = strdup("");
        len = 0;
        if (!body) {
            link_fail(l, wsi, "out of memory", -1);
            return -1;
        }
    }
    l->http = NULL; /* its closing callbacks are not ours any more */
    if (l->state == LINK_FETCH_SUMMARY) {
        l->summary = body;
        l->summary_len = len;
        link_set(l, LINK_FETCH_BUILDERS);
        link_fetch(l, "builders");
        return -1; /* this connection is done */
    }
    tf_ind_net_msg_t *m = msg_new(l, TF_IND_NET_SNAPSHOT);
    if (!m) {
        free(body);
        link_fail(l, wsi, "out of memory", -1);
        return -1;
    }
    m->text = l->summary;
    m->len = l->summary_len;
    m->text2 = body;
    m->len2 = len;
    l->summary = NULL;
    (void)push(l->net, m); /* a snapshot is always wanted: see push */
    link_set(l, LINK_LIVE);
    lws_sul_cancel(&l->watchdog_sul);
    l->attempt = 0;
    tf_info("net", "%s: live", l->url.base);
    return -1;
}

static void process_resyncs(tf_ind_net_t *net)
{
    for (size_t i = 0; i < net->nlinks; i++) {
        link_t *l = &net->links[i];
        int want;
        char why[sizeof(l->restart_why)];
        pthread_mutex_lock(&net->lock);
        want = l->restart_wanted;
        l->restart_wanted = 0;
        memcpy(why, l->restart_why, sizeof(why));
        pthread_mutex_unlock(&net->lock);
        if (want)
            link_fail(l, NULL, why, want == RESTART_NOW ? 0 : -1);
    }
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
                    void *user, void *in, size_t len)
{
    link_t *l = lws_get_opaque_user_data(wsi);
    char why[200];

    if (reason == LWS_CALLBACK_EVENT_WAIT_CANCELLED) {
        tf_ind_net_t *net = lws_context_user(lws_get_context(wsi));
        if (net && !atomic_load(&net->stop))
            process_resyncs(net);
        return 0;
    }
    if (!l)
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    if (atomic_load(&l->net->stop)) {
        /* Shutting down: lws closes everything; only forget pointers. */
        if (wsi == l->ws)
            l->ws = NULL;
        if (wsi == l->http)
            l->http = NULL;
        return 0;
    }
    if (reason == LWS_CALLBACK_WSI_DESTROY) {
        /* The last word on any wsi: never keep a pointer past it. */
        if (wsi == l->ws) {
            l->ws = NULL;
            link_fail(l, wsi, "the live feed closed", -1);
        }
        if (wsi == l->http) {
            l->http = NULL;
            link_fail(l, wsi, "the API connection closed", -1);
        }
        return 0;
    }
    if (wsi != l->ws && wsi != l->http) {
        /* A connection given up on, on its way out. */
        return 0;
    }

    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        /* lws passes a NUL-terminated reason (or NULL); cap what we show. */
        if (in && strstr((const char *)in, "SSL") && last_tls_error[0])
            snprintf(why, sizeof(why), "TLS: %.150s", last_tls_error);
        else
            snprintf(why, sizeof(why), "%.150s",
                     in ? (const char *)in : "connection failed");
        last_tls_error[0] = '\0';
        if (wsi == l->ws)
            l->ws = NULL;
        else
            l->http = NULL;
        link_fail(l, wsi, why, -1);
        return -1;

    /* The live feed. */
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        link_set(l, LINK_SUBSCRIBING);
        lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return ws_writeable(l, wsi);
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (lws_frame_is_binary(wsi))
            return 0; /* the feed is text; nothing binary is ours */
        if (tf_buf_append(&l->rx, in, len) < 0) {
            link_fail(l, wsi, "a live-feed frame over 1 MiB", -1);
            return -1;
        }
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi))
            return ws_message(l, wsi);
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        l->ws = NULL;
        link_fail(l, wsi, "the live feed closed", -1);
        return 0;

    /* The API reads. */
    case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP:
        l->http_status = (int)lws_http_client_http_response(wsi);
        return 0;
    case LWS_CALLBACK_RECEIVE_CLIENT_HTTP: {
        char buf[LWS_PRE + 4096];
        char *p = buf + LWS_PRE;
        int n = (int)sizeof(buf) - LWS_PRE;
        if (lws_http_client_read(wsi, &p, &n) < 0)
            return -1;
        return 0;
    }
    case LWS_CALLBACK_RECEIVE_CLIENT_HTTP_READ:
        if (tf_buf_append(&l->body, in, len) < 0) {
            snprintf(why, sizeof(why), "an API answer over %u MiB",
                     TF_IND_HTTP_BODY_MAX >> 20);
            l->http = NULL;
            link_fail(l, wsi, why, -1);
            return -1;
        }
        return 0;
    case LWS_CALLBACK_COMPLETED_CLIENT_HTTP:
        return http_done(l, wsi);
    case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
        l->http = NULL;
        link_fail(l, wsi, "the API connection closed before the answer "
                          "was complete",
                  -1);
        return 0;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"tf-ind-http", callback, 0, 0, 0, NULL, 0},
    {"testfarm-live", callback, 0, 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- the thread ---- */

static void lws_log_emit(int level, const char *line)
{
    /* lws lines end with a newline; ours add their own. */
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    const char *tls = strstr(line, "SSL error: ");
    if (tls) {
        tls += strlen("SSL error: ");
        const char *end = strstr(tls, " (preverify");
        size_t len = end ? (size_t)(end - tls) : strcspn(tls, "\r\n");
        if (len >= sizeof(last_tls_error))
            len = sizeof(last_tls_error) - 1;
        memcpy(last_tls_error, tls, len);
        last_tls_error[len] = '\0';
    }
    if (level & LLL_ERR)
        tf_log(TF_LOG_WARN, "lws", "%.*s", (int)n, line);
    else
        tf_debug("lws", "%.*s", (int)n, line);
}

static void *net_main(void *arg)
{
    tf_ind_net_t *net = arg;
    for (size_t i = 0; i < net->nlinks; i++)
        lws_sul_schedule(net->ctx, 0, &net->links[i].retry_sul,
                         link_connect_cb, 1);
    while (!atomic_load(&net->stop)) {
        if (lws_service(net->ctx, 0) < 0)
            break;
    }
    for (size_t i = 0; i < net->nlinks; i++) {
        lws_sul_cancel(&net->links[i].retry_sul);
        lws_sul_cancel(&net->links[i].watchdog_sul);
    }
    return NULL;
}

int tf_ind_net_start(const tf_ind_conf_t *conf, tf_ind_net_t **out)
{
    struct lws_context_creation_info info;
    tf_ind_net_t *net;
    int rc;

    *out = NULL;
    net = calloc(1, sizeof(*net));
    if (!net)
        return TF_ENOMEM;
    net->efd = -1;
    pthread_mutex_init(&net->lock, NULL);
    atomic_init(&net->stop, false);
    net->retry_max_ms = conf->retry_max_ms;
    net->links = calloc(conf->nmasters ? conf->nmasters : 1,
                        sizeof(*net->links));
    if (!net->links) {
        rc = TF_ENOMEM;
        goto fail;
    }
    net->nlinks = conf->nmasters;
    for (size_t i = 0; i < net->nlinks; i++) {
        link_t *l = &net->links[i];
        l->net = net;
        l->index = i;
        l->url = conf->masters[i].url;
        tf_buf_init(&l->rx, TF_IND_WS_MSG_MAX);
        tf_buf_init(&l->body, TF_IND_HTTP_BODY_MAX);
        l->state = LINK_WAIT;
    }
    net->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (net->efd < 0) {
        rc = -errno;
        goto fail;
    }
    lws_set_log_level(tf_log_level() <= TF_LOG_DEBUG
                          ? (LLL_ERR | LLL_WARN | LLL_NOTICE)
                          : LLL_ERR,
                      lws_log_emit);
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.user = net;
    info.client_ssl_ca_filepath = conf->ca_file; /* NULL: the system's */
    info.timeout_secs = 15; /* connect and handshake */
    info.connect_timeout_secs = 10;
    net->ctx = lws_create_context(&info);
    if (!net->ctx) {
        rc = TF_EIO;
        goto fail;
    }
    if (pthread_create(&net->thread, NULL, net_main, net) != 0) {
        rc = TF_ENOMEM;
        goto fail;
    }
    net->thread_started = true;
    *out = net;
    return 0;
fail:
    tf_ind_net_stop(net);
    return rc;
}

void tf_ind_net_restart(tf_ind_net_t *net, size_t i, bool now,
                        const char *why)
{
    if (!net || i >= net->nlinks)
        return;
    pthread_mutex_lock(&net->lock);
    net->links[i].restart_wanted = now ? RESTART_NOW : RESTART_BACKOFF;
    snprintf(net->links[i].restart_why, sizeof(net->links[i].restart_why),
             "%s", why ? why : "restarting");
    pthread_mutex_unlock(&net->lock);
    lws_cancel_service(net->ctx);
}

void tf_ind_net_stop(tf_ind_net_t *net)
{
    if (!net)
        return;
    if (net->thread_started) {
        atomic_store(&net->stop, true);
        lws_cancel_service(net->ctx);
        pthread_join(net->thread, NULL);
    }
    if (net->ctx)
        lws_context_destroy(net->ctx);
    for (size_t i = 0; i < net->nlinks; i++) {
        tf_buf_free(&net->links[i].rx);
        tf_buf_free(&net->links[i].body);
        free(net->links[i].summary);
    }
    tf_ind_net_msg_free(net->head);
    free(net->links);
    if (net->efd >= 0)
        close(net->efd);
    pthread_mutex_destroy(&net->lock);
    free(net);
}
