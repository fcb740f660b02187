/*
 * http.c - the HTTP side of the master's lws protocol "http": parsing a
 * request into a tf_http_req_t, and writing its response one piece per
 * WRITEABLE callback.
 *
 * Lifetime: lws gives each connection a small per-session slot holding a
 * pointer to the current request. The request is freed when its response
 * is complete (keep-alive then starts a new one) or when the connection
 * closes; if asynchronous work holds it at that moment it is only detached
 * (wsi = NULL) and tf_http_async_end frees it.
 *
 * Every request body has a cap decided by the route (tf_api_body_cap). A
 * Content-Length over the cap is answered 413 at once, without reading the
 * body, and the connection is closed after the answer.
 */
#include "net/http.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "core/master.h"
#include "tf_err.h"
#include "util.h"

#define HTTP_PIECE 65536

typedef struct http_pss {
    tf_http_req_t *req;
} http_pss_t;

/* One write at a time on the loop thread: a shared staging buffer. */
static unsigned char write_buf[LWS_PRE + HTTP_PIECE];

static void req_free(tf_http_req_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nargs; i++)
        free(r->args[i]);
    tf_buf_free(&r->body);
    tf_buf_free(&r->out);
    if (r->pull_free)
        r->pull_free(r->pull_arg);
    free(r);
}

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

void tf_http_header(tf_http_req_t *r, const char *name, const char *value)
{
    if (r->nhdrs >= 4)
        return;
    snprintf(r->hdr_names[r->nhdrs], sizeof(r->hdr_names[0]), "%s:", name);
    snprintf(r->hdr_values[r->nhdrs], sizeof(r->hdr_values[0]), "%s", value);
    r->nhdrs++;
}

static void want_write(tf_http_req_t *r)
{
    if (r->wsi)
        lws_callback_on_writable(r->wsi);
}

void tf_http_respond(tf_http_req_t *r, int status, const char *ctype,
                     const void *body, size_t len)
{
    if (r->responded)
        return;
    r->responded = true;
    r->status = status;
    snprintf(r->ctype, sizeof(r->ctype), "%s", ctype);
    tf_buf_reset(&r->out);
    if (len && tf_buf_append(&r->out, body, len) != 0) {
        r->status = 500;
        tf_buf_reset(&r->out);
    }
    r->content_length = r->out.len;
    want_write(r);
}

void tf_http_respond_json(tf_http_req_t *r, int status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        tf_http_respond(r, 500, "application/json",
                        "{\"error\":{\"status\":500,\"message\":"
                        "\"out of memory\"}}",
                        54);
        return;
    }
    size_t n = strlen(text);
    tf_buf_reset(&r->out);
    if (!r->responded) {
        r->responded = true;
        r->status = status;
        snprintf(r->ctype, sizeof(r->ctype), "application/json");
        if (tf_buf_append(&r->out, text, n) != 0 ||
            /* A newline makes curl output readable. */
            tf_buf_append(&r->out, "\n", 1) != 0) {
            r->status = 500;
            tf_buf_reset(&r->out);
        }
        r->content_length = r->out.len;
        want_write(r);
    }
    free(text);
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

void tf_http_stream(tf_http_req_t *r, int status, const char *ctype,
                    uint64_t total, tf_http_pull_fn pull, void *arg,
                    void (*pull_free)(void *))
{
    if (r->responded) {
        if (pull_free)
            pull_free(arg);
        return;
    }
    r->responded = true;
    r->streaming = true;
    r->status = status;
    snprintf(r->ctype, sizeof(r->ctype), "%s", ctype);
    r->content_length = total;
    r->pull = pull;
    r->pull_arg = arg;
    r->pull_free = pull_free;
    tf_buf_reset(&r->out);
    want_write(r);
}

void tf_http_feed(tf_http_req_t *r, const void *data, size_t len)
{
    r->stream_waiting = false;
    uint64_t room = r->content_length - r->written - (r->out.len - r->out_off);
    if (len > room)
        len = (size_t)room; /* never more than declared */
    if (len && tf_buf_append(&r->out, data, len) != 0) {
        tf_http_fail_stream(r);
        return;
    }
    if (len == 0 && r->written < r->content_length) {
        /* The source ran dry before the declared length. */
        tf_http_fail_stream(r);
        return;
    }
    want_write(r);
}

void tf_http_fail_stream(tf_http_req_t *r)
{
    r->stream_waiting = false;
    r->close_after = true;
    r->streaming = false;
    r->content_length = r->written; /* ends the body here */
    tf_buf_reset(&r->out);
    r->out_off = 0;
    want_write(r);
}

void tf_http_async_begin(tf_http_req_t *r)
{
    r->busy = true;
}

bool tf_http_async_end(tf_http_req_t *r)
{
    r->busy = false;
    if (!r->wsi) {
        req_free(r);
        return false;
    }
    return true;
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

static void parse_args(tf_http_req_t *r)
{
    char frag[1024];
    for (int i = 0; r->nargs < TF_HTTP_MAX_ARGS; i++) {
        int n = lws_hdr_copy_fragment(r->wsi, frag, sizeof(frag),
                                      WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            break;
        if (n == 0)
            continue;
        char *a = strdup(frag);
        if (!a)
            break;
        r->args[r->nargs++] = a;
    }
}

static tf_http_req_t *req_new(tf_master_t *m, struct lws *wsi)
{
    tf_http_req_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->m = m;
    r->wsi = wsi;
    tf_buf_init(&r->out, 0);
    char *uri = NULL;
    int ulen = 0;
    int meth = lws_http_get_uri_and_method(wsi, &uri, &ulen);
    r->method = meth == LWSHUMETH_GET    ? TF_HTTP_GET
                : meth == LWSHUMETH_POST ? TF_HTTP_POST
                                         : TF_HTTP_OTHER;
    if (uri && ulen > 0 && ulen < (int)sizeof(r->path))
        snprintf(r->path, sizeof(r->path), "%.*s", ulen, uri);
    copy_header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, r->auth_raw,
                sizeof(r->auth_raw));
    if (strncmp(r->auth_raw, "Bearer ", 7) == 0)
        snprintf(r->token, sizeof(r->token), "%s", r->auth_raw + 7);
    copy_header(wsi, WSI_TOKEN_HTTP_RANGE, r->range, sizeof(r->range));
    copy_header(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE, r->ctype_in,
                sizeof(r->ctype_in));
    char cl[32];
    copy_header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, cl, sizeof(cl));
    if (cl[0])
        tf_parse_u64(cl, &r->content_length_in);
    tf_buf_init(&r->body, tf_api_body_cap(m, r->path, r->method));
    parse_args(r);
    return r;
}

/* --- response writing --- */

static int write_headers(tf_http_req_t *r)
{
    unsigned char *start = write_buf + LWS_PRE, *p = start;
    unsigned char *end = write_buf + sizeof(write_buf) - 1;
    if (lws_add_http_common_headers(r->wsi, (unsigned)r->status, r->ctype,
                                    r->content_length, &p, end))
        return -1;
    if (lws_add_http_header_by_name(r->wsi,
                                    (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p,
                                    end))
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
    if (lws_finalize_write_http_header(r->wsi, start, &p, end))
        return -1;
    r->headers_sent = true;
    return 0;
}

/* Returns -1 to close the connection, 1 when the transaction is over, 0 to
 * keep going. */
static int write_some(tf_http_req_t *r)
{
    if (!r->responded)
        return 0;
    if (!r->headers_sent) {
        if (write_headers(r))
            return -1;
        if (r->content_length == 0)
            return r->close_after ? -1 : 1;
        want_write(r);
        return 0;
    }
    size_t avail = r->out.len - r->out_off;
    if (avail == 0) {
        if (r->written >= r->content_length)
            return r->close_after ? -1 : 1;
        if (r->close_after && !r->streaming)
            return -1;
        if (r->streaming && r->pull && !r->stream_waiting) {
            r->stream_waiting = true;
            tf_buf_reset(&r->out);
            r->out_off = 0;
            if (r->pull(r, r->pull_arg) != 0)
                return -1;
        }
        return 0;
    }
    size_t n = avail < HTTP_PIECE ? avail : HTTP_PIECE;
    memcpy(write_buf + LWS_PRE, r->out.data + r->out_off, n);
    bool last = r->written + n >= r->content_length;
    int w = lws_write(r->wsi, write_buf + LWS_PRE, n,
                      last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
    if (w < 0)
        return -1;
    r->out_off += n;
    r->written += n;
    if (r->out_off == r->out.len) {
        tf_buf_reset(&r->out);
        r->out_off = 0;
    }
    if (last)
        return r->close_after ? -1 : 1;
    want_write(r);
    return 0;
}

static void detach(http_pss_t *pss)
{
    tf_http_req_t *r = pss->req;
    pss->req = NULL;
    if (!r)
        return;
    r->wsi = NULL;
    if (!r->busy)
        req_free(r);
}

int tf_http_callback(struct lws *wsi, enum lws_callback_reasons reason,
                     void *user, void *in, size_t len)
{
    http_pss_t *pss = user;
    tf_master_t *m = lws_context_user(lws_get_context(wsi));
    tf_http_req_t *r;

    switch (reason) {
    case LWS_CALLBACK_HTTP:
        if (!pss)
            return -1;
        detach(pss);
        r = req_new(m, wsi);
        if (!r)
            return -1;
        pss->req = r;
        if (strncmp(r->path, "/api/", 5) != 0 && strcmp(r->path, "/api")) {
            tf_http_error(r, 404, "no such page: %s", r->path);
            return 0;
        }
        if (r->method == TF_HTTP_POST) {
            if (r->content_length_in > r->body.max) {
                r->close_after = true;
                tf_http_error(r, 413,
                              "request body of %" PRIu64 " bytes is over "
                              "the limit of %zu bytes",
                              r->content_length_in, r->body.max);
                return 0;
            }
            if (r->content_length_in > 0)
                return 0; /* wait for the body */
        }
        /* lws may still report an empty body's completion: dispatch once. */
        r->dispatched = true;
        tf_api_dispatch(r);
        return 0;

    case LWS_CALLBACK_HTTP_BODY:
        r = pss ? pss->req : NULL;
        if (!r || r->responded)
            return 0;
        if (tf_buf_append(&r->body, in, len) != 0) {
            r->body_over = true;
            r->close_after = true;
            tf_http_error(r, 413, "request body over the limit of %zu bytes",
                          r->body.max);
        }
        return 0;

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        r = pss ? pss->req : NULL;
        if (!r)
            return 0;
        if (!r->responded && !r->dispatched) {
            r->dispatched = true;
            tf_api_dispatch(r);
        }
        return 0;

    case LWS_CALLBACK_HTTP_WRITEABLE: {
        r = pss ? pss->req : NULL;
        if (!r)
            return 0;
        int rc = write_some(r);
        if (rc < 0) {
            detach(pss);
            return -1;
        }
        if (rc > 0) {
            detach(pss);
            if (lws_http_transaction_completed(wsi))
                return -1;
        }
        return 0;
    }

    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss)
            detach(pss);
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
