/*
 * http.c - one HTTP request on the master, from its headers to the last
 * byte of its answer (the interface is api/request.h).
 *
 * Each request is one http_req_t with a state; every change of state goes
 * through req_set_state(), which logs it and asserts that the move is one
 * of these:
 *
 *           headers parsed by lws
 *                  |
 *                  v
 *   +---------- ROUTE ----------+        the API routes it and identifies
 *   |  accepted,  |  accepted,  |        the caller; nothing of the body
 *   |  a body     |  no body    |        is read (rx paused)
 *   v             |             |
 *  BODY ----------+             |        reading at most the route's cap,
 *   |  complete   |             |        before a deadline
 *   |             v             |
 *   +-------->  HANDLE ---------+        the handler runs or waits for
 *             |   |  large JSON |        its work (deadline: 503)
 *             |   v             |
 *             | RENDER          |        serialised on the thread pool
 *             |   |             |
 *             v   v             v
 *              HEAD <-----------+        an answer (or a refusal) is set;
 *               |                        its headers go out
 *               v
 *              SEND <----> PULL          body pieces; a stream waits in
 *               |                        PULL for its next piece
 *               v
 *              DONE                      written; detached and freed
 *
 *   GONE: the connection closed first (from any state but DONE).
 *
 * Lifetime: lws gives each connection a slot holding its current request.
 * A request is detached from its connection when its answer is written
 * (keep-alive then starts a new one) or when the connection closes; it is
 * freed then, unless asynchronous work holds it, in which case the last
 * tf_http_async_end frees it. Handlers therefore never see a freed
 * request, and a late answer to a detached request goes nowhere.
 *
 * Limits (docs/admins.md, "Security model"): lws drops a connection whose
 * headers do not arrive within its header timeout; a body must arrive
 * before a deadline that grows with its announced size (a client
 * trickling bytes is cut off); a handler that has not answered within
 * HTTP_HANDLE_S gets a 503; an answer the client stops reading is dropped
 * after HTTP_IDLE_S without progress; at most HTTP_MAX_UPLOADS bodies
 * larger than HTTP_SMALL_BODY are read at once.
 */
#include "net/http.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "api/handlers.h"
#include "clock.h"
#include "core/master.h"
#include "log.h"
#include "net/net.h"
#include "net/server.h"
#include "tf_err.h"
#include "util.h"

/* The most body bytes one write takes (and the staging buffer's size):
 * large enough that a cached answer of a page of builds (a 100-build
 * waterfall is about 160 KB) goes out with its headers in one write,
 * about 15% less CPU per answer than in 64 KiB pieces. */
#define HTTP_PIECE (256u * 1024u)
/* Body bytes that may arrive with the headers, before the caller is
 * identified (one socket read). */
#define HTTP_PREAUTH_BODY (64u * 1024)
#define HTTP_ROUTE_S 30      /* identifying the caller */
#define HTTP_BODY_S 30       /* a body's base time ... */
#define HTTP_BODY_RATE (64u * 1024) /* ... plus a second per this many bytes */
#define HTTP_HANDLE_S 60     /* the handler's answer */
#define HTTP_IDLE_S 30       /* an answer the client does not read */
#define HTTP_MAX_UPLOADS 8   /* large bodies read at the same time */
#define HTTP_SMALL_BODY (64u * 1024) /* not counted as an upload */
/* JSON answers estimated larger than this are serialised off the loop. */
#define HTTP_RENDER_INLINE (64u * 1024)

typedef enum {
    REQ_ROUTE = 0,
    REQ_BODY,
    REQ_HANDLE,
    REQ_RENDER,
    REQ_HEAD,
    REQ_SEND,
    REQ_PULL,
    REQ_DONE,
    REQ_GONE,
    REQ_NSTATES
} req_state_t;

typedef struct http_req {
    tf_http_req_t pub;   /* what the API sees; first member */
    tf_list_t node;      /* net->reqs while attached */
    struct lws *wsi;     /* NULL once detached */
    uint64_t id;
    req_state_t state;
    unsigned holds;      /* asynchronous work in flight */
    int64_t deadline;    /* tf_mono_ms(); 0 = none */
    /* the answer */
    int status;
    char ctype[64];
    char etag[48];       /* "" or the answer's quoted ETag */
    char hdr_names[TF_HTTP_MAX_HEADERS][40];
    char hdr_values[TF_HTTP_MAX_HEADERS][192];
    size_t nhdrs;
    char cache[64];      /* Cache-Control; "" = no-store */
    tf_buf_t out;
    size_t out_off;
    bool close_after;    /* "Connection: close" and close once written */
    uint64_t content_length;
    uint64_t written;    /* body bytes written */
    tf_http_pull_fn pull; /* non-NULL: a streamed answer */
    void *pull_arg;
    void (*pull_free)(void *arg);
    /* REQ_RENDER */
    uv_work_t work;
    json_t *render;
    char *rendered;
} http_req_t;

typedef struct http_pss {
    http_req_t *req;
} http_pss_t;

/* One write at a time on the loop thread: a shared staging buffer. */
static unsigned char write_buf[LWS_PRE + HTTP_PIECE];

static uint64_t next_req_id;

static http_req_t *req_of(tf_http_req_t *pub)
{
    return (http_req_t *)pub; /* pub is the first member */
}

static const char *state_name(req_state_t s)
{
    static const char *const names[REQ_NSTATES] = {
        "ROUTE", "BODY", "HANDLE", "RENDER", "HEAD",
        "SEND",  "PULL", "DONE",   "GONE",
    };
    return s < REQ_NSTATES ? names[s] : "?";
}

#define B(s) (1u << (s))
static const unsigned legal_moves[REQ_NSTATES] = {
    [REQ_ROUTE] = B(REQ_BODY) | B(REQ_HANDLE) | B(REQ_RENDER) | B(REQ_HEAD) |
                  B(REQ_GONE),
    [REQ_BODY] = B(REQ_HANDLE) | B(REQ_RENDER) | B(REQ_HEAD) | B(REQ_GONE),
    [REQ_HANDLE] = B(REQ_RENDER) | B(REQ_HEAD) | B(REQ_GONE),
    [REQ_RENDER] = B(REQ_HEAD) | B(REQ_GONE),
    [REQ_HEAD] = B(REQ_SEND) | B(REQ_DONE) | B(REQ_GONE),
    [REQ_SEND] = B(REQ_PULL) | B(REQ_DONE) | B(REQ_GONE),
    [REQ_PULL] = B(REQ_SEND) | B(REQ_GONE),
    [REQ_DONE] = 0,
    [REQ_GONE] = 0,
};
#undef B

static tf_net_stats_t *stats_of(http_req_t *r)
{
    return &r->pub.m->net_stats;
}

/* The one place a request changes state. Entering and leaving BODY keeps
 * the count of bodies being read. */
static void req_set_state(http_req_t *r, req_state_t to)
{
    req_state_t from = r->state;
    bool ok = from < REQ_NSTATES && (legal_moves[from] & (1u << to)) != 0;
    if (!ok) {
        tf_error("http", "request %" PRIu64 " (%s %s): illegal transition "
                 "%s -> %s", r->id, r->pub.method_name, r->pub.path,
                 state_name(from), state_name(to));
        assert(!"illegal HTTP request transition");
        return;
    }
    tf_debug("http", "request %" PRIu64 " (%s %s): %s -> %s", r->id,
             r->pub.method_name, r->pub.path, state_name(from),
             state_name(to));
    bool upload = r->pub.content_length_in > HTTP_SMALL_BODY;
    if (from == REQ_BODY && upload)
        stats_of(r)->uploads--;
    if (to == REQ_BODY && upload)
        stats_of(r)->uploads++;
    r->state = to;
}

static bool answered(const http_req_t *r)
{
    return r->state >= REQ_HEAD;
}

static void req_free(http_req_t *r)
{
    if (!r)
        return;
    tf_api_cache_release(&r->pub);
    for (size_t i = 0; i < r->pub.nargs; i++)
        free(r->pub.args[i]);
    tf_buf_free(&r->pub.body);
    tf_buf_free(&r->out);
    if (r->pull_free)
        r->pull_free(r->pull_arg);
    json_decref(r->render);
    free(r->rendered);
    free(r);
}

static void want_write(http_req_t *r)
{
    if (r->wsi)
        lws_callback_on_writable(r->wsi);
}

/* --- arguments --- */

const char *tf_http_arg(const tf_http_req_t *r, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < r->nargs; i++)
        if (strncmp(r->args[i], name, n) == 0 && r->args[i][n] == '=')
            return r->args[i] + n + 1;
    return NULL;
}

bool tf_http_arg_u64(tf_http_req_t *r, const char *name, uint64_t lo,
                     uint64_t hi, uint64_t def, uint64_t *out)
{
    const char *v = tf_http_arg(r, name);
    *out = def;
    if (!v)
        return true;
    if (tf_parse_u64(v, out) != 0 || *out < lo || *out > hi) {
        tf_http_error(r, 400, "parameter %s=\"%.40s\": expected an integer "
                      "from %" PRIu64 " to %" PRIu64, name, v, lo, hi);
        return false;
    }
    return true;
}

/* --- answering --- */

void tf_http_header(tf_http_req_t *pub, const char *name, const char *value)
{
    http_req_t *r = req_of(pub);
    if (r->nhdrs >= TF_HTTP_MAX_HEADERS || answered(r))
        return;
    snprintf(r->hdr_names[r->nhdrs], sizeof(r->hdr_names[0]), "%s:", name);
    snprintf(r->hdr_values[r->nhdrs], sizeof(r->hdr_values[0]), "%s", value);
    r->nhdrs++;
}

void tf_http_cache(tf_http_req_t *pub, const char *value)
{
    http_req_t *r = req_of(pub);
    if (answered(r))
        return;
    snprintf(r->cache, sizeof(r->cache), "%s", value);
}

/* Whether an answer may be set now (none yet, still attached or held). */
static bool may_answer(const http_req_t *r)
{
    return r->state == REQ_ROUTE || r->state == REQ_BODY ||
           r->state == REQ_HANDLE;
}

/* A body that was announced but not (wholly) read makes the connection
 * unusable for another request: the rest would be taken for one. */
static void close_if_body_unread(http_req_t *r)
{
    if ((r->state == REQ_ROUTE || r->state == REQ_BODY) &&
        (r->pub.chunked_in || r->pub.body.len < r->pub.content_length_in))
        r->close_after = true;
}

/* Sets a buffered answer of len bytes taken from text (malloc'd). */
static void set_answer(http_req_t *r, int status, const char *ctype,
                       const void *body, size_t len)
{
    r->status = status;
    snprintf(r->ctype, sizeof(r->ctype), "%s", ctype);
    tf_buf_reset(&r->out);
    r->out_off = 0;
    if (len && tf_buf_append(&r->out, body, len) != 0) {
        r->status = 500;
        tf_buf_reset(&r->out);
    }
    r->content_length = r->out.len;
    req_set_state(r, REQ_HEAD);
    if (r->wsi) {
        /* lws services neither side of a connection whose reading is
         * paused: an unread body that follows is discarded (and the
         * connection closed after the answer, close_after). */
        lws_rx_flow_control(r->wsi, 1);
        lws_set_timeout(r->wsi, PENDING_TIMEOUT_HTTP_CONTENT, HTTP_IDLE_S);
    }
    want_write(r);
}

void tf_http_respond(tf_http_req_t *pub, int status, const char *ctype,
                     const void *body, size_t len)
{
    http_req_t *r = req_of(pub);
    if (!may_answer(r))
        return;
    close_if_body_unread(r);
    set_answer(r, status, ctype, body, len);
}

/* A rough size of j's text, counted up to limit (then it stops). */
static size_t json_estimate(json_t *j, size_t limit, size_t acc)
{
    if (acc > limit)
        return acc;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        acc += 2;
        json_object_foreach(j, k, v)
        {
            acc = json_estimate(v, limit, acc + strlen(k) + 4);
            if (acc > limit)
                break;
        }
        return acc;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        acc += 2;
        json_array_foreach(j, i, v)
        {
            acc = json_estimate(v, limit, acc + 1);
            if (acc > limit)
                break;
        }
        return acc;
    }
    case JSON_STRING:
        return acc + json_string_length(j) + 2;
    default:
        return acc + 20;
    }
}

/* A JSON answer was just set: a cacheable 200 goes to the API's cache
 * and gets its ETag, or becomes a 304 when the client has that tag. */
static void json_answered(http_req_t *r)
{
    if (!r->pub.cacheable || r->status != 200 || r->out.len == 0)
        return;
    if (tf_api_cache_store(&r->pub, r->out.data, r->out.len, r->etag,
                           sizeof(r->etag))) {
        tf_buf_reset(&r->out);
        r->out_off = 0;
        r->status = 304;
        r->content_length = 0;
    }
}

static void render_work(uv_work_t *w)
{
    http_req_t *r = w->data;
    r->rendered = json_dumps(r->render, JSON_COMPACT);
}

static bool hold_end(http_req_t *r);

static void render_after(uv_work_t *w, int status)
{
    http_req_t *r = w->data;
    json_decref(r->render);
    r->render = NULL;
    if (!hold_end(r))
        return;
    char *text = r->rendered;
    r->rendered = NULL;
    if (status != 0 || !text) {
        free(text);
        set_answer(r, 500, "application/json",
                   "{\"error\":{\"status\":500,\"message\":\"out of "
                   "memory\"}}\n",
                   55);
        return;
    }
    set_answer(r, r->status, "application/json", text, strlen(text));
    /* A newline makes curl output readable. */
    if (tf_buf_append(&r->out, "\n", 1) == 0)
        r->content_length = r->out.len;
    free(text);
    json_answered(r);
}

void tf_http_respond_json(tf_http_req_t *pub, int status, json_t *j)
{
    http_req_t *r = req_of(pub);
    if (!may_answer(r) || !j) {
        json_decref(j);
        if (!j && may_answer(r))
            tf_http_respond(pub, 500, "application/json",
                            "{\"error\":{\"status\":500,\"message\":"
                            "\"out of memory\"}}\n",
                            55);
        return;
    }
    close_if_body_unread(r);
    if (!pub->m->cfg->web_root)
        tf_api_pages_null(j);
    if (json_estimate(j, HTTP_RENDER_INLINE, 0) > HTTP_RENDER_INLINE &&
        r->wsi) {
        r->render = j;
        r->status = status;
        r->work.data = r;
        r->holds++;
        if (uv_queue_work(pub->m->loop, &r->work, render_work,
                          render_after) == 0) {
            req_set_state(r, REQ_RENDER);
            return;
        }
        /* No thread pool: serialise here after all. */
        r->holds--;
        r->render = NULL;
    }
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text) {
        set_answer(r, 500, "application/json",
                   "{\"error\":{\"status\":500,\"message\":\"out of "
                   "memory\"}}\n",
                   55);
        return;
    }
    size_t n = strlen(text);
    set_answer(r, status, "application/json", text, n);
    if (tf_buf_append(&r->out, "\n", 1) == 0)
        r->content_length = r->out.len;
    free(text);
    json_answered(r);
}

void tf_http_respond_etag(tf_http_req_t *pub, int status, const char *ctype,
                          const void *body, size_t len, const char *etag)
{
    http_req_t *r = req_of(pub);
    if (!may_answer(r))
        return;
    snprintf(r->etag, sizeof(r->etag), "%s", etag);
    tf_http_respond(pub, status, ctype, body, len);
}

void tf_http_error(tf_http_req_t *r, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{s:{s:i,s:s}}", "error", "status", status,
                          "message", msg);
    tf_http_respond_json(r, status, j);
}

void tf_http_stream(tf_http_req_t *pub, int status, const char *ctype,
                    uint64_t total, tf_http_pull_fn pull, void *arg,
                    void (*pull_free)(void *))
{
    http_req_t *r = req_of(pub);
    if (!may_answer(r)) {
        if (pull_free)
            pull_free(arg);
        return;
    }
    r->pull = pull;
    r->pull_arg = arg;
    r->pull_free = pull_free;
    set_answer(r, status, ctype, NULL, 0);
    r->content_length = total;
}

void tf_http_feed(tf_http_req_t *pub, const void *data, size_t len)
{
    http_req_t *r = req_of(pub);
    if (r->state != REQ_PULL)
        return;
    req_set_state(r, REQ_SEND);
    uint64_t room = r->content_length - r->written - (r->out.len - r->out_off);
    if (len > room)
        len = (size_t)room; /* never more than declared */
    if (len && tf_buf_append(&r->out, data, len) != 0) {
        tf_http_fail_stream(pub);
        return;
    }
    if (len == 0 && r->written < r->content_length) {
        /* The source ran dry before the declared length. */
        tf_http_fail_stream(pub);
        return;
    }
    want_write(r);
}

void tf_http_feed_owned(tf_http_req_t *pub, void *data, size_t len,
                        size_t cap)
{
    http_req_t *r = req_of(pub);
    uint64_t room = r->content_length - r->written;
    if (r->state == REQ_PULL && r->out.len == 0 && r->out_off == 0 &&
        len > 0 && len <= room &&
        tf_buf_adopt(&r->out, data, len, cap) == 0) {
        req_set_state(r, REQ_SEND);
        want_write(r);
        return;
    }
    tf_http_feed(pub, data, len);
    free(data);
}

void tf_http_fail_stream(tf_http_req_t *pub)
{
    http_req_t *r = req_of(pub);
    if (r->state == REQ_PULL)
        req_set_state(r, REQ_SEND);
    if (r->state != REQ_SEND && r->state != REQ_HEAD)
        return;
    r->close_after = true;
    r->pull = NULL;
    r->content_length = r->written; /* ends the body here */
    tf_buf_reset(&r->out);
    r->out_off = 0;
    want_write(r);
}

/* --- holds --- */

void tf_http_async_begin(tf_http_req_t *pub)
{
    req_of(pub)->holds++;
}

/* Ends one hold; frees a detached request on its last. Returns false when
 * the request is gone. */
static bool hold_end(http_req_t *r)
{
    assert(r->holds > 0);
    if (r->holds > 0)
        r->holds--;
    if (!r->wsi) {
        if (r->holds == 0)
            req_free(r);
        return false;
    }
    return true;
}

bool tf_http_async_end(tf_http_req_t *pub)
{
    return hold_end(req_of(pub));
}

/* --- reading the body --- */

bool tf_http_length_ok(tf_http_req_t *pub, size_t cap)
{
    http_req_t *r = req_of(pub);
    if (!may_answer(r))
        return false;
    if (pub->chunked_in) {
        tf_http_error(pub, 411, "a request body must be sent with a "
                      "Content-Length (chunked transfer encoding is not "
                      "accepted)");
        return false;
    }
    if (pub->content_length_in > cap) {
        tf_http_error(pub, 413, "request body of %" PRIu64 " bytes is over "
                      "the limit of %zu bytes", pub->content_length_in, cap);
        return false;
    }
    return true;
}

static void dispatch(http_req_t *r)
{
    req_set_state(r, REQ_HANDLE);
    r->deadline = tf_mono_ms() + HTTP_HANDLE_S * 1000;
    if (r->wsi)
        lws_set_timeout(r->wsi, NO_PENDING_TIMEOUT, 0);
    tf_api_dispatch(&r->pub);
}

void tf_http_read_body(tf_http_req_t *pub, size_t cap)
{
    http_req_t *r = req_of(pub);
    if (r->state != REQ_ROUTE || !r->wsi)
        return;
    if (!tf_http_length_ok(pub, cap))
        return;
    tf__net_preauth_release(r->wsi);
    lws_rx_flow_control(r->wsi, 1);
    if (pub->body.len >= pub->content_length_in) {
        dispatch(r);
        return;
    }
    if (pub->content_length_in > HTTP_SMALL_BODY &&
        pub->m->net_stats.uploads >= HTTP_MAX_UPLOADS) {
        tf__net_warn("http", "%s: %u request bodies are being read already; "
                "refusing %s %s", pub->peer, pub->m->net_stats.uploads,
                pub->method_name, pub->path);
        tf_http_header(pub, "retry-after", "5");
        tf_http_error(pub, 503, "the master is reading %u request bodies "
                      "already; retry in a few seconds",
                      pub->m->net_stats.uploads);
        return;
    }
    pub->body.max = cap;
    req_set_state(r, REQ_BODY);
    r->deadline = tf_mono_ms() + HTTP_BODY_S * 1000 +
                  (int64_t)(pub->content_length_in / HTTP_BODY_RATE) * 1000;
}

static int body_arrived(http_req_t *r, const void *in, size_t len)
{
    if (r->state == REQ_ROUTE) {
        /* Bytes lws read with the headers, before the caller is known:
         * they count against the pre-auth budget. */
        if (r->pub.body.len + len > HTTP_PREAUTH_BODY ||
            !tf__net_preauth_charge(r->wsi, len)) {
            tf__net_warn("http", "%s: body bytes before authentication over the "
                    "limit: closing", r->pub.peer);
            return -1;
        }
        return tf_buf_append(&r->pub.body, in, len) ? -1 : 0;
    }
    if (r->state != REQ_BODY)
        return 0; /* refused already: the connection closes after it */
    if (tf_mono_ms() > r->deadline) {
        tf__net_warn("http", "%s: %s %s: the body did not arrive in time "
                "(%zu of %" PRIu64 " bytes): closing", r->pub.peer,
                r->pub.method_name, r->pub.path, r->pub.body.len,
                r->pub.content_length_in);
        return -1;
    }
    if (tf_buf_append(&r->pub.body, in, len) != 0) {
        tf_http_error(&r->pub, 413, "request body over the limit of %zu "
                      "bytes", r->pub.body.max);
        return 0;
    }
    return 0;
}

/* --- request intake --- */

static void copy_header(struct lws *wsi, enum lws_token_indexes h, char *dst,
                        size_t len)
{
    dst[0] = '\0';
    if (lws_hdr_total_length(wsi, h) <= 0 ||
        lws_hdr_total_length(wsi, h) >= (int)len)
        return;
    if (lws_hdr_copy(wsi, dst, (int)len, h) < 0)
        dst[0] = '\0';
}

/* An argument may carry a test's name (TF_TR_MAX_NAME, 1024 bytes) with
 * its key: the buffer leaves room for that, so a handler can say a name
 * is too long instead of finding it missing. */
static void parse_args(http_req_t *r)
{
    char frag[4096];
    for (int i = 0; r->pub.nargs < TF_HTTP_MAX_ARGS; i++) {
        int n = lws_hdr_copy_fragment(r->wsi, frag, sizeof(frag),
                                      WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            break;
        if (n == 0)
            continue;
        char *a = strdup(frag);
        if (!a)
            break;
        r->pub.args[r->pub.nargs++] = a;
    }
}

static const char *method_names[] = {
    [LWSHUMETH_GET] = "GET",         [LWSHUMETH_POST] = "POST",
    [LWSHUMETH_OPTIONS] = "OPTIONS", [LWSHUMETH_PUT] = "PUT",
    [LWSHUMETH_PATCH] = "PATCH",     [LWSHUMETH_DELETE] = "DELETE",
    [LWSHUMETH_CONNECT] = "CONNECT", [LWSHUMETH_HEAD] = "HEAD",
};

static http_req_t *req_new(tf_master_t *m, struct lws *wsi)
{
    http_req_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->id = ++next_req_id;
    r->pub.m = m;
    r->wsi = wsi;
    r->state = REQ_ROUTE;
    r->deadline = tf_mono_ms() + HTTP_ROUTE_S * 1000;
    tf_buf_init(&r->out, 0);
    char *uri = NULL;
    int ulen = 0;
    int meth = lws_http_get_uri_and_method(wsi, &uri, &ulen);
    r->pub.method = meth == LWSHUMETH_GET    ? TF_HTTP_GET
                    : meth == LWSHUMETH_POST ? TF_HTTP_POST
                                             : TF_HTTP_OTHER;
    snprintf(r->pub.method_name, sizeof(r->pub.method_name), "%s",
             meth >= 0 && meth < (int)(sizeof(method_names) /
                                       sizeof(method_names[0])) &&
                     method_names[meth]
                 ? method_names[meth]
                 : "?");
    if (uri && ulen > 0 && ulen < (int)sizeof(r->pub.path))
        snprintf(r->pub.path, sizeof(r->pub.path), "%.*s", ulen, uri);
    copy_header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, r->pub.auth_raw,
                sizeof(r->pub.auth_raw));
    if (strncmp(r->pub.auth_raw, "Bearer ", 7) == 0)
        snprintf(r->pub.token, sizeof(r->pub.token), "%s",
                 r->pub.auth_raw + 7);
    copy_header(wsi, WSI_TOKEN_HTTP_RANGE, r->pub.range,
                sizeof(r->pub.range));
    copy_header(wsi, WSI_TOKEN_ORIGIN, r->pub.origin, sizeof(r->pub.origin));
    copy_header(wsi, WSI_TOKEN_HTTP_IF_NONE_MATCH, r->pub.if_none_match,
                sizeof(r->pub.if_none_match));
    copy_header(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, r->pub.ctype_in,
                sizeof(r->pub.ctype_in));
    char cl[32];
    copy_header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, cl, sizeof(cl));
    if (cl[0] && tf_parse_u64(cl, &r->pub.content_length_in) != 0)
        r->pub.content_length_in = UINT64_MAX; /* refused as over any cap */
    r->pub.chunked_in =
        lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
    if (!lws_get_peer_simple(wsi, r->pub.peer, sizeof(r->pub.peer)))
        snprintf(r->pub.peer, sizeof(r->pub.peer), "?");
    tf_buf_init(&r->pub.body, HTTP_PREAUTH_BODY);
    parse_args(r);
    tf_list_push_back(&m->net_state->reqs, &r->node);
    m->net_stats.http_requests++;
    return r;
}

/* --- response writing --- */

static int write_headers(http_req_t *r)
{
    unsigned char *start = write_buf + LWS_PRE, *p = start;
    unsigned char *end = write_buf + sizeof(write_buf) - 1;
    if (lws_add_http_common_headers(r->wsi, (unsigned)r->status, r->ctype,
                                    r->content_length, &p, end))
        return -1;
    /* An answer with an ETag may be stored if revalidated (api/cache.c). */
    const char *cache = r->cache[0]  ? r->cache
                        : r->etag[0] ? "no-cache"
                                     : "no-store";
    if (lws_add_http_header_by_name(r->wsi,
                                    (const unsigned char *)"cache-control:",
                                    (const unsigned char *)cache,
                                    (int)strlen(cache), &p, end))
        return -1;
    if (r->etag[0] &&
        lws_add_http_header_by_name(r->wsi, (const unsigned char *)"etag:",
                                    (const unsigned char *)r->etag,
                                    (int)strlen(r->etag), &p, end))
        return -1;
    for (size_t i = 0; i < r->nhdrs; i++) {
        const char *v = r->hdr_values[i];
        if (lws_add_http_header_by_name(
                r->wsi, (const unsigned char *)r->hdr_names[i],
                (const unsigned char *)v, (int)strlen(v), &p, end))
            return -1;
    }
    if (r->close_after &&
        lws_add_http_header_by_name(r->wsi,
                                    (const unsigned char *)"connection:",
                                    (const unsigned char *)"close", 5, &p,
                                    end))
        return -1;
    if (lws_finalize_http_header(r->wsi, &p, end))
        return -1;
    /* A small answer held whole goes out with its headers in one write
     * (one syscall, one WRITEABLE callback instead of two: most API
     * answers, cached ones above all). */
    size_t hlen = (size_t)(p - start);
    bool whole = !r->pull && r->out_off == 0 && r->out.len > 0 &&
                 r->out.len == r->content_length &&
                 r->out.len <= (size_t)(end - p);
    if (whole) {
        memcpy(p, r->out.data, r->out.len);
        hlen += r->out.len;
    }
    if (lws_write(r->wsi, start, hlen, LWS_WRITE_HTTP_HEADERS) != (int)hlen)
        return -1;
    if (whole) {
        r->written = r->out.len;
        tf_buf_reset(&r->out);
        r->out_off = 0;
    }
    return 0;
}

typedef enum {
    W_FAIL = -1,    /* close the connection: the answer is cut short */
    W_MORE = 0,     /* keep going */
    W_DONE = 1,     /* written; the connection serves the next request */
    W_DONE_CLOSE,   /* written; close the connection */
} wresult_t;

static wresult_t written_all(const http_req_t *r)
{
    return r->close_after ? W_DONE_CLOSE : W_DONE;
}

static wresult_t write_some(http_req_t *r)
{
    if (r->state == REQ_HEAD) {
        if (write_headers(r))
            return W_FAIL;
        if (r->written >= r->content_length)
            return written_all(r); /* no body, or sent with the headers */
        req_set_state(r, REQ_SEND);
        want_write(r);
        return W_MORE;
    }
    if (r->state != REQ_SEND)
        return W_MORE;
    size_t avail = r->out.len - r->out_off;
    if (avail == 0) {
        if (r->written >= r->content_length)
            return written_all(r);
        if (!r->pull)
            return W_FAIL; /* a buffered answer shorter than announced */
        req_set_state(r, REQ_PULL);
        tf_buf_reset(&r->out);
        r->out_off = 0;
        if (r->pull(&r->pub, r->pull_arg) != 0)
            return W_FAIL;
        return W_MORE;
    }
    size_t n = avail < HTTP_PIECE ? avail : HTTP_PIECE;
    memcpy(write_buf + LWS_PRE, r->out.data + r->out_off, n);
    bool last = r->written + n >= r->content_length;
    int w = lws_write(r->wsi, write_buf + LWS_PRE, n,
                      last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
    if (w < 0)
        return W_FAIL;
    r->out_off += n;
    r->written += n;
    if (r->out_off == r->out.len) {
        tf_buf_reset(&r->out);
        r->out_off = 0;
    }
    if (last)
        return written_all(r);
    lws_set_timeout(r->wsi, PENDING_TIMEOUT_HTTP_CONTENT, HTTP_IDLE_S);
    want_write(r);
    return W_MORE;
}

/* Detaches the connection's request: DONE when its answer was written,
 * GONE otherwise. Freed now unless work holds it. */
static void detach(http_pss_t *pss, bool done)
{
    http_req_t *r = pss->req;
    pss->req = NULL;
    if (!r)
        return;
    tf__net_preauth_release(r->wsi);
    req_set_state(r, done ? REQ_DONE : REQ_GONE);
    tf_list_unlink(&r->node);
    r->wsi = NULL;
    if (r->holds == 0)
        req_free(r);
}

void tf__http_sweep(tf_master_t *m)
{
    int64_t now = tf_mono_ms();
    tf_list_t *it, *tmp;
    tf_list_foreach_safe(it, tmp, &m->net_state->reqs)
    {
        http_req_t *r = tf_list_entry(it, http_req_t, node);
        if (!r->deadline || now <= r->deadline || !r->wsi)
            continue;
        switch (r->state) {
        case REQ_ROUTE:
        case REQ_HANDLE:
            tf__net_warn("http", "%s: %s %s: no answer within %d s", r->pub.peer,
                    r->pub.method_name, r->pub.path,
                    r->state == REQ_ROUTE ? HTTP_ROUTE_S : HTTP_HANDLE_S);
            r->deadline = 0;
            tf_http_error(&r->pub, 503, "the master could not answer in "
                          "time; try again");
            break;
        case REQ_BODY:
            tf__net_warn("http", "%s: %s %s: the body did not arrive in time "
                    "(%zu of %" PRIu64 " bytes): closing", r->pub.peer,
                    r->pub.method_name, r->pub.path, r->pub.body.len,
                    r->pub.content_length_in);
            r->deadline = 0;
            lws_set_timeout(r->wsi, PENDING_TIMEOUT_HTTP_CONTENT,
                            LWS_TO_KILL_ASYNC);
            break;
        default:
            r->deadline = 0;
            break;
        }
    }
}

int tf_http_callback(struct lws *wsi, enum lws_callback_reasons reason,
                     void *user, void *in, size_t len)
{
    http_pss_t *pss = user;
    tf_master_t *m = lws_context_user(lws_get_context(wsi));
    http_req_t *r;
    int rc = 0;

    if (tf__net_common(wsi, reason, in, &rc))
        return rc;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        if (!pss)
            return -1;
        detach(pss, false);
        r = req_new(m, wsi);
        if (!r)
            return -1;
        pss->req = r;
        tf__net_set_waiting(wsi, false);
        if (tf__net_conn(wsi))
            tf__wsmask_unwatch(tf__net_conn(wsi)->fd); /* plain HTTP */
        /* Nothing of the body is read until the API has routed the
         * request and identified the caller. */
        lws_rx_flow_control(wsi, 0);
        tf_api_headers(&r->pub);
        return 0;

    case LWS_CALLBACK_HTTP_BODY:
        r = pss ? pss->req : NULL;
        if (!r)
            return 0;
        return body_arrived(r, in, len);

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        r = pss ? pss->req : NULL;
        /* In ROUTE the whole body came with the headers: read_body sees
         * it complete. Elsewhere (an empty body's completion after the
         * dispatch, a refusal) there is nothing to do. */
        if (r && r->state == REQ_BODY)
            dispatch(r);
        return 0;

    case LWS_CALLBACK_HTTP_WRITEABLE: {
        r = pss ? pss->req : NULL;
        if (!r)
            return 0;
        wresult_t w = write_some(r);
        if (w == W_FAIL || w == W_DONE_CLOSE) {
            detach(pss, w == W_DONE_CLOSE);
            return -1;
        }
        if (w == W_DONE) {
            detach(pss, true);
            tf__net_set_waiting(wsi, true);
            lws_rx_flow_control(wsi, 1);
            if (lws_http_transaction_completed(wsi))
                return -1;
        }
        return 0;
    }

    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss)
            detach(pss, false);
        return 0;

    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        /* A websocket that named none of our subprotocols lands here (the
         * first protocol): refuse it rather than hold it open silently. */
        return 1;

    case LWS_CALLBACK_ESTABLISHED:
        return -1;

    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}
