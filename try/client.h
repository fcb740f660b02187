/*
 * client.h - tf-try's HTTP client (libcurl) and the job API's bodies.
 *
 * One request at a time, blocking: tf-try has nothing else to do while it
 * waits. The token goes in exactly one place, the Authorization header of
 * requests whose URL starts with the configured master URL; redirects are
 * never followed (so it cannot be forwarded elsewhere), and neither the
 * verbose trace nor any error message includes a header.
 */
#ifndef TF_TRY_CLIENT_H
#define TF_TRY_CLIENT_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "buf.h"
#include "try.h"

#define TF_TRY_CONNECT_TIMEOUT_S 10
#define TF_TRY_SUBMIT_TIMEOUT_S 300
#define TF_TRY_GET_TIMEOUT_S 60
#define TF_TRY_MAX_JSON_BYTES (16 * 1024 * 1024)

/* Encodes in[0..n) as RFC 4648 base64 (standard alphabet, padded; the
 * common encoder, tf_base64_encode) into a malloc'd NUL-terminated string (caller frees) of *out_len bytes. Returns
 * 0, TF_E2BIG (the result would not fit a size_t) or TF_ENOMEM. */
int tf_try_base64_encode(const uint8_t *in, size_t n, char **out,
                         size_t *out_len);

typedef struct tf_try_client {
    const char *base;               /* the master URL, ending in '/' (borrowed) */
    const char *token;              /* borrowed; NULL when none was loaded */
    const char *ca_file;            /* CA bundle for https (borrowed); NULL:
                                       the system's */
    bool verbose;                   /* trace requests (never headers) */
    FILE *trace;                    /* where the trace goes (stderr) */
    volatile sig_atomic_t *stop;    /* set by a signal: abort the transfer */
} tf_try_client_t;

typedef struct tf_try_req {
    const char *method;     /* "GET" or "POST" */
    const char *url;        /* absolute */
    bool auth;              /* send the token (only to URLs under base) */
    const void *body;       /* POST body (JSON), or NULL */
    size_t body_len;
    const char *range;      /* "bytes=-65536" or NULL */
    long timeout_s;         /* whole transfer */
    size_t max_body;        /* cap on the response body */
} tf_try_req_t;

typedef struct tf_try_resp {
    long status;                /* HTTP status */
    tf_buf_t body;              /* owned: free with tf_try_resp_free */
    char content_range[128];    /* the Content-Range header or "" */
} tf_try_resp_t;

/* Calls curl_global_init; once, before any request. Returns 0 or TF_EIO. */
int tf_try_client_global_init(void);
void tf_try_client_global_cleanup(void);

/* Performs one request. Returns 0 when an HTTP response arrived (whatever
 * its status; resp is filled and must be freed), -EINTR when c->stop was
 * set, TF_E2BIG when the body passed max_body, TF_EINVAL when auth was
 * asked for a URL outside c->base, or TF_EIO for network failures, with
 * err saying what failed. */
int tf_try_http(const tf_try_client_t *c, const tf_try_req_t *r,
                tf_try_resp_t *resp, tf_try_err_t *err);

void tf_try_resp_free(tf_try_resp_t *resp);

/* The master's error sentence from {"error": {"message": ...}}, or else
 * the start of the body, made safe to print; never empty. */
void tf_try_resp_error(const tf_try_resp_t *resp, char *out, size_t n);

/* Returns base + the formatted path as a malloc'd string, NULL on OOM.
 * base ends in '/', the path must not start with one. */
char *tf_try_url(const char *base, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Normalises a master URL (adds the final '/'); malloc'd, NULL on OOM. */
char *tf_try_base_url(const char *url);

/* The POST /api/v1/jobs body: meta (an object without "patch") with
 * "patch": b64 added, built by splicing so the (maybe 70 MB) base64 text
 * is copied once. Appends to out. */
int tf_try_job_body(const json_t *meta, const char *b64, size_t b64_len,
                    tf_buf_t *out);

#endif
