/*
 * request.h - one HTTP request as the API sees it, and what a handler may
 * do with it.
 *
 * The API (api/) declares this interface and net/http.c implements it:
 * the request's life on the wire (its state machine, timeouts, writing the
 * answer one piece per WRITEABLE callback) is net's business, so handlers
 * never see libwebsockets and api/ never includes net/.
 *
 * How a request travels (net/http.c draws the states):
 *   1. net parses the headers and calls tf_api_headers(r). The body has
 *      not been read.
 *   2. The API routes the request (404, 405, 400), checks the body size
 *      against the route's cap (tf_http_length_ok: 411, 413), identifies
 *      the caller from the token (asynchronously for committers) and
 *      checks the route's role (401, 403). Each of those answers without
 *      reading the body. Otherwise it calls tf_http_read_body(r, cap).
 *   3. net reads the body (bounded in size and time) and calls
 *      tf_api_dispatch(r), which runs the route's handler.
 *   4. The handler answers at once (tf_http_respond*, tf_http_error) or
 *      starts asynchronous work between tf_http_async_begin and
 *      tf_http_async_end: if the client goes away meanwhile, the request
 *      is only detached, and freed by tf_http_async_end, never under the
 *      worker's feet.
 *
 * Large bodies (logs, patches) stream: tf_http_stream declares the length
 * and a pull function that is called whenever the output buffer is empty;
 * it fetches the next piece asynchronously and hands it over with
 * tf_http_feed. Memory per response stays at one piece.
 *
 * All of these run on the loop thread only.
 */
#ifndef TF_API_REQUEST_H
#define TF_API_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "buf.h"
#include "core/users.h"

struct tf_master;
struct tf_route;

#define TF_HTTP_GET 0
#define TF_HTTP_POST 1
#define TF_HTTP_OTHER 2

#define TF_HTTP_PATH_MAX 512
#define TF_HTTP_MAX_ARGS 16
#define TF_HTTP_MAX_HEADERS 8

typedef struct tf_http_req tf_http_req_t;

/* Asked for more body when the buffer is empty; the function starts work
 * that ends in tf_http_feed (or tf_http_fail_stream). Returns 0 or an
 * error (the connection is then closed). */
typedef int (*tf_http_pull_fn)(tf_http_req_t *r, void *arg);

/* What the API reads of a request. net fills everything but user, admin
 * and route, which the API sets while routing. */
struct tf_http_req {
    struct tf_master *m;
    int method;            /* TF_HTTP_GET, ... */
    char method_name[16];  /* as sent, for messages */
    char path[TF_HTTP_PATH_MAX];
    char *args[TF_HTTP_MAX_ARGS]; /* "name=value", owned by net */
    size_t nargs;
    char token[256];       /* bearer token, "" if none */
    char auth_raw[320];    /* the whole Authorization header, "" if none */
    char range[128];       /* Range header, "" if none */
    char origin[256];      /* Origin header (CORS), "" if none or longer */
    char if_none_match[160]; /* If-None-Match header, "" if none */
    char ctype_in[128];    /* request Content-Type */
    uint64_t content_length_in; /* Content-Length, 0 if none */
    bool chunked_in;       /* Transfer-Encoding was sent */
    char peer[64];         /* the client's address, for logs */
    tf_buf_t body;         /* the request body once read (capped) */

    /* Set by the API. */
    tf_user_t user;        /* the committer (id 0: nobody) */
    bool admin;            /* the admin token was given */
    const struct tf_route *route;

    /* Set by api/cache.c when the answer may be kept (tf_api_cache_*). */
    bool cacheable;        /* a 200 JSON answer goes into the cache */
    bool cache_immutable;  /* it never changes (a finished build) */
    uint64_t cache_gen;    /* the store's generation when it was asked */
    uint64_t cache_removals; /* and its count of log removals */
    uint64_t cache_epoch;  /* the cache's epoch (tf_api_cache_flush) */
    uint64_t cache_serial; /* non-zero: it renders its key's new answer */
    int64_t cache_asked_ms; /* tf_mono_ms when its render started */
    char cache_key[TF_HTTP_PATH_MAX + 64];
};

/* --- implemented by net/http.c --- */

/* Looks up a query argument. Returns its value (borrowed) or NULL. */
const char *tf_http_arg(const tf_http_req_t *r, const char *name);

/* Parses the unsigned query argument `name` into *out: def when absent.
 * A value that is not an integer in [lo, hi] answers 400 naming the
 * parameter and the range, and returns false. */
bool tf_http_arg_u64(tf_http_req_t *r, const char *name, uint64_t lo,
                     uint64_t hi, uint64_t def, uint64_t *out);

/* Checks the announced body against cap before anything of it is read:
 * a chunked body answers 411 (send a Content-Length), a length over cap
 * answers 413. Returns false when it answered. */
bool tf_http_length_ok(tf_http_req_t *r, size_t cap);

/* The API accepts the request: net reads its body (at most cap bytes,
 * within the body time limit) and then calls tf_api_dispatch, at once
 * when there is no body. Too many bodies being read at the same time
 * answers 503 with Retry-After instead. */
void tf_http_read_body(tf_http_req_t *r, size_t cap);

/* Adds a response header (at most TF_HTTP_MAX_HEADERS). */
void tf_http_header(tf_http_req_t *r, const char *name, const char *value);

/* The answer's Cache-Control (default "no-store"), e.g. "max-age=30"
 * for a badge; set before answering. */
void tf_http_cache(tf_http_req_t *r, const char *value);

/* Answers with a body (copied). Only the first answer counts. */
void tf_http_respond(tf_http_req_t *r, int status, const char *ctype,
                     const void *body, size_t len);

/* Answers with a body (copied) and an ETag header (etag: the quoted
 * tag), with Cache-Control no-cache so clients revalidate; a 304 has no
 * body. */
void tf_http_respond_etag(tf_http_req_t *r, int status, const char *ctype,
                          const void *body, size_t len, const char *etag);

/* Answers with JSON; takes the reference to j. A large answer is
 * serialised on a thread-pool thread, not on the loop. */
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

/* The same with the piece's own memory (malloc'd, cap > len bytes), which
 * r takes in every case: when r has nothing left to write, the piece
 * becomes its write buffer as it is (no copy, and no second buffer of
 * that size held while a slow client takes it); otherwise it is copied
 * and freed. */
void tf_http_feed_owned(tf_http_req_t *r, void *data, size_t len,
                        size_t cap);

/* Ends a stream early: the connection is closed (the client sees a short
 * body, as with any server failure mid-response). */
void tf_http_fail_stream(tf_http_req_t *r);

/* Async bracket. async_end returns false when the request is gone (it has
 * been freed: do not touch it). */
void tf_http_async_begin(tf_http_req_t *r);
bool tf_http_async_end(tf_http_req_t *r);

/* --- implemented by api/routes.c, called by net --- */

/* The request's headers have arrived (step 2 above). */
void tf_api_headers(tf_http_req_t *r);

/* Its body has arrived: runs the route's handler (step 3). */
void tf_api_dispatch(tf_http_req_t *r);

/* --- implemented by api/cache.c, called by net --- */

/* A 200 JSON answer of a request marked cacheable is ready (body: len
 * bytes, borrowed): the cache keeps a copy, and etag (etag_len bytes,
 * caller's) gets its quoted tag. Returns true when the request's
 * If-None-Match names that tag: net answers 304 instead. */
bool tf_api_cache_store(tf_http_req_t *r, const void *body, size_t len,
                        char *etag, size_t etag_len);

/* r is being freed: if it was rendering its key's new answer and left
 * none (its client went away, an error), the next request renders. */
void tf_api_cache_release(tf_http_req_t *r);

#endif
