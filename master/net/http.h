/*
 * http.h - one HTTP request/response on the master, independent of what
 * the request asks for (api.c routes it).
 *
 * A tf_http_req_t is created when lws reports a request and freed when its
 * response has been written (or the connection closed). Handlers either
 * answer at once (tf_http_respond*) or start asynchronous work (a store
 * read) between tf_http_async_begin and tf_http_async_end: if the client
 * goes away meanwhile, the request is only marked gone and freed by
 * tf_http_async_end, never under the worker's feet.
 *
 * Large bodies (logs) stream: tf_http_stream declares the length and a pull
 * function that is called whenever the output buffer is empty; it fetches
 * the next piece asynchronously and hands it over with tf_http_feed. Memory
 * per response stays at one piece no matter how big the body is.
 */
#ifndef TF_HTTP_H
#define TF_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <libwebsockets.h>

#include "buf.h"
#include "core/users.h"

struct tf_master;

#define TF_HTTP_GET 0
#define TF_HTTP_POST 1
#define TF_HTTP_OTHER 2

#define TF_HTTP_PATH_MAX 512
#define TF_HTTP_MAX_ARGS 16

typedef struct tf_http_req tf_http_req_t;

/* Asked for more body when the buffer is empty; the function starts work
 * that ends in tf_http_feed (or tf_http_fail_stream). Returns 0 or an
 * error (the connection is then closed). */
typedef int (*tf_http_pull_fn)(tf_http_req_t *r, void *arg);

struct tf_http_req {
    struct tf_master *m;
    struct lws *wsi;       /* NULL once the connection is gone */
    int method;            /* TF_HTTP_GET, ... */
    char path[TF_HTTP_PATH_MAX];
    char *args[TF_HTTP_MAX_ARGS]; /* "name=value", owned */
    size_t nargs;
    char token[256];       /* bearer token, "" if none */
    char auth_raw[320];    /* the whole Authorization header, "" if none */
    tf_user_t user;        /* set by tf_api_identify (id 0: nobody) */
    bool admin;            /* the admin token was given */
    bool identified;       /* the token has been looked up */
    char range[128];       /* Range header, "" if none */
    char ctype_in[128];    /* request Content-Type */
    uint64_t content_length_in;
    tf_buf_t body;         /* request body, capped */
    bool body_over;        /* body passed its cap */
    bool busy;             /* async work in flight */
    bool dispatched;       /* handed to tf_api_dispatch once */

    /* response */
    int status;
    char ctype[64];
    char hdr_names[4][32];
    char hdr_values[4][192];
    size_t nhdrs;
    tf_buf_t out;
    size_t out_off;
    bool responded;
    bool headers_sent;
    bool close_after;
    bool streaming;
    bool stream_waiting;   /* pull in flight */
    uint64_t content_length;
    uint64_t written;      /* body bytes written */
    tf_http_pull_fn pull;
    void *pull_arg;
    void (*pull_free)(void *arg);
};

/* Looks up a query argument. Returns its value (borrowed) or NULL. */
const char *tf_http_arg(const tf_http_req_t *r, const char *name);

/* Parses the unsigned query argument `name` into *out: def when absent.
 * A value that is not an integer in [lo, hi] answers 400 naming the
 * parameter and the range, and returns false. */
bool tf_http_arg_u64(tf_http_req_t *r, const char *name, uint64_t lo,
                     uint64_t hi, uint64_t def, uint64_t *out);

/* Adds a response header (at most 4). */
void tf_http_header(tf_http_req_t *r, const char *name, const char *value);

/* Answers with a body (copied). */
void tf_http_respond(tf_http_req_t *r, int status, const char *ctype,
                     const void *body, size_t len);

/* Answers with JSON; takes the reference to j. */
void tf_http_respond_json(tf_http_req_t *r, int status, json_t *j);

/* Answers {"error": {"status": S, "message": M}} with status S. */
void tf_http_error(tf_http_req_t *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Starts a streamed answer of exactly total bytes. pull_free (may be NULL)
 * frees arg when the request ends. */
void tf_http_stream(tf_http_req_t *r, int status, const char *ctype,
                    uint64_t total, tf_http_pull_fn pull, void *arg,
                    void (*pull_free)(void *));

/* Hands the next piece of a streamed body over (copied). */
void tf_http_feed(tf_http_req_t *r, const void *data, size_t len);

/* Ends a stream early: the connection is closed (the client sees a short
 * body, as with any server failure mid-response). */
void tf_http_fail_stream(tf_http_req_t *r);

/* Async bracket. async_end returns false when the request is gone (it has
 * been freed: do not touch it). */
void tf_http_async_begin(tf_http_req_t *r);
bool tf_http_async_end(tf_http_req_t *r);

/* --- api.c --- */

/* Routes a request whose headers (and body, for POST) have arrived. */
void tf_api_dispatch(tf_http_req_t *r);

/* The body cap for a request to path (bytes). */
size_t tf_api_body_cap(const struct tf_master *m, const char *path,
                       int method);

#endif
