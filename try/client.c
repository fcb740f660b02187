/*
 * client.c - HTTP for tf-try on libcurl, base64, and the job body.
 *
 * The patch is encoded with common/base64.c, the same code the master
 * decodes with.
 *
 * Each request gets a fresh easy handle: tf-try makes a handful of
 * requests (one per poll interval at most), so connection reuse buys
 * nothing worth the state. Options that matter for safety are set on every
 * handle: no redirects, http and https only, a connect timeout, a total
 * timeout, a cap on the body, and the progress callback that lets Ctrl-C
 * end a transfer at once.
 */
#include "client.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base64.h"
#include "clock.h"
#include "tf_err.h"

int tf_try_base64_encode(const uint8_t *in, size_t n, char **out,
                         size_t *out_len)
{
    size_t len;

    *out = NULL;
    if (n / 3 >= (SIZE_MAX - 8) / 4)
        return TF_E2BIG;
    len = tf_base64_encoded_len(n);
    *out = malloc(len);
    if (!*out)
        return TF_ENOMEM;
    tf_base64_encode(in, n, *out);
    if (out_len)
        *out_len = len - 1;
    return 0;
}

int tf_try_client_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : TF_EIO;
}

void tf_try_client_global_cleanup(void)
{
    curl_global_cleanup();
}

void tf_try_resp_free(tf_try_resp_t *resp)
{
    if (resp)
        tf_buf_free(&resp->body);
}

/* What the write callback needs: the body and whether it overflowed. */
typedef struct sink {
    tf_buf_t *body;
    bool over;
} sink_t;

static size_t write_cb(char *p, size_t size, size_t nmemb, void *userdata)
{
    sink_t *s = userdata;
    size_t n = size * nmemb;
    int rc = tf_buf_append(s->body, p, n);
    if (rc == TF_E2BIG)
        s->over = true;
    /* Returning less than n makes curl stop with CURLE_WRITE_ERROR. */
    return rc < 0 ? 0 : n;
}

static size_t header_cb(char *p, size_t size, size_t nitems, void *userdata)
{
    tf_try_resp_t *resp = userdata;
    size_t n = size * nitems;
    static const char name[] = "content-range:";
    if (n > sizeof(name) - 1 && strncasecmp(p, name, sizeof(name) - 1) == 0) {
        size_t off = sizeof(name) - 1;
        while (off < n && (p[off] == ' ' || p[off] == '\t'))
            off++;
        size_t len = n - off;
        while (len > 0 && (p[off + len - 1] == '\r' || p[off + len - 1] == '\n'))
            len--;
        if (len >= sizeof(resp->content_range))
            len = sizeof(resp->content_range) - 1;
        memcpy(resp->content_range, p + off, len);
        resp->content_range[len] = '\0';
    } else if (n >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        /* A new response (after a 100 Continue): forget older headers. */
        resp->content_range[0] = '\0';
    }
    return n;
}

static int progress_cb(void *userdata, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
    const tf_try_client_t *c = userdata;
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return c->stop && *c->stop ? 1 : 0;
}

/* The URL without its query, for messages (URLs carry no secrets, but a
 * shorter text reads better). */
static void url_for_message(const char *url, char *out, size_t n)
{
    size_t len = strcspn(url, "?#");
    if (len >= n)
        len = n - 1;
    memcpy(out, url, len);
    out[len] = '\0';
}

int tf_try_http(const tf_try_client_t *c, const tf_try_req_t *r,
                tf_try_resp_t *resp, tf_try_err_t *err)
{
    int rc;
    CURL *h = NULL;
    struct curl_slist *headers = NULL;
    char *auth = NULL;
    size_t auth_len = 0;
    char errbuf[CURL_ERROR_SIZE];
    char shown[512];
    sink_t sink;
    CURLcode cc;
    int64_t t0 = tf_mono_ms();

    memset(resp, 0, sizeof(*resp));
    tf_buf_init(&resp->body, r->max_body);
    sink.body = &resp->body;
    sink.over = false;
    errbuf[0] = '\0';
    url_for_message(r->url, shown, sizeof(shown));

    if (r->auth) {
        size_t blen = strlen(c->base);
        if (!c->token || strncmp(r->url, c->base, blen) != 0) {
            tf_try_errf(err, "internal error: refusing to send the token to "
                             "%s", shown);
            rc = TF_EINVAL;
            goto out;
        }
        auth_len = strlen(c->token) + sizeof("Authorization: Bearer ");
        auth = malloc(auth_len);
        if (!auth) {
            rc = TF_ENOMEM;
            goto out;
        }
        snprintf(auth, auth_len, "Authorization: Bearer %s", c->token);
    }
    h = curl_easy_init();
    if (!h) {
        rc = TF_ENOMEM;
        goto out;
    }
    struct curl_slist *l = curl_slist_append(headers, "Accept: application/json");
    if (l)
        headers = l;
    if (l && r->body)
        l = curl_slist_append(headers, "Content-Type: application/json");
    if (l)
        headers = l;
    if (l && auth)
        l = curl_slist_append(headers, auth);
    if (l)
        headers = l;
    /* No "Expect: 100-continue" for large bodies: the master does not
     * answer it, and curl would wait a second before sending the patch. */
    if (l && r->body)
        l = curl_slist_append(headers, "Expect:");
    if (l)
        headers = l;
    if (!l) {
        rc = TF_ENOMEM;
        goto out;
    }

    curl_easy_setopt(h, CURLOPT_URL, r->url);
    if (c->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)TF_TRY_CONNECT_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, r->timeout_s);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "tf-try/" TF_VERSION);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, resp);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress_cb);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)c);
    if (r->range)
        curl_easy_setopt(h, CURLOPT_RANGE, r->range + strlen("bytes="));
    if (strcmp(r->method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body ? r->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(r->body ? r->body_len : 0));
    }
    if (c->verbose && c->trace)
        fprintf(c->trace, "tf-try: > %s %s%s (%zu bytes)\n", r->method, shown,
                r->auth ? " with your token" : "", r->body ? r->body_len : 0);

    cc = curl_easy_perform(h);
    if (cc == CURLE_ABORTED_BY_CALLBACK) {
        rc = -EINTR;
        goto out;
    }
    if (cc == CURLE_WRITE_ERROR && sink.over) {
        tf_try_errf(err, "the answer of %s is larger than %zu bytes", shown,
                    r->max_body);
        rc = TF_E2BIG;
        goto out;
    }
    if (cc != CURLE_OK) {
        tf_try_errf(err, "cannot reach the master at %s: %s", shown,
                    errbuf[0] ? errbuf : curl_easy_strerror(cc));
        /* curl's message ends with a newline sometimes. */
        size_t n = strlen(err ? err->msg : "");
        while (err && n > 0 && err->msg[n - 1] == '\n')
            err->msg[--n] = '\0';
        rc = TF_EIO;
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    if (c->verbose && c->trace)
        fprintf(c->trace, "tf-try: < HTTP %ld (%zu bytes, %.2f s)\n",
                resp->status, resp->body.len,
                (double)(tf_mono_ms() - t0) / 1000.0);
    rc = 0;
out:
    if (rc != 0)
        tf_try_resp_free(resp);
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    if (auth) {
        explicit_bzero(auth, auth_len);
        free(auth);
    }
    return rc;
}

void tf_try_resp_error(const tf_try_resp_t *resp, char *out, size_t n)
{
    json_t *root = NULL;
    const char *msg = NULL;
    size_t o = 0;

    if (resp->body.len > 0) {
        root = json_loadb((const char *)resp->body.data, resp->body.len, 0,
                          NULL);
        json_t *e = json_object_get(root, "error");
        msg = json_string_value(json_object_get(e, "message"));
        if (!msg)
            msg = json_string_value(e);
    }
    if (!msg && resp->body.len > 0)
        msg = (const char *)resp->body.data;
    if (!msg || !*msg)
        msg = "no explanation given";
    /* The master's text, or whatever a proxy answered: one line, printable,
     * at most 400 bytes. */
    for (const unsigned char *p = (const unsigned char *)msg;
         *p && o + 4 < n && o < 400; p++) {
        if (*p == '\n' || *p == '\r' || *p == '\t')
            out[o++] = ' ';
        else if (*p < 0x20 || *p == 0x7f)
            out[o++] = '?';
        else
            out[o++] = (char)*p;
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
    json_decref(root);
}

char *tf_try_url(const char *base, const char *fmt, ...)
{
    va_list ap;
    char path[1024];
    int n;

    va_start(ap, fmt);
    n = vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(path))
        return NULL;
    size_t len = strlen(base) + (size_t)n + 1;
    char *url = malloc(len);
    if (url)
        snprintf(url, len, "%s%s", base, path);
    return url;
}

char *tf_try_base_url(const char *url)
{
    size_t n = strlen(url);
    bool slash = n > 0 && url[n - 1] == '/';
    char *out = malloc(n + 2);
    if (!out)
        return NULL;
    snprintf(out, n + 2, "%s%s", url, slash ? "" : "/");
    return out;
}

int tf_try_job_body(const json_t *meta, const char *b64, size_t b64_len,
                    tf_buf_t *out)
{
    int rc;
    char *rest = json_dumps(meta, JSON_COMPACT);
    if (!rest)
        return TF_ENOMEM;
    /* rest is "{...}": the patch member goes first, then rest without its
     * "{". Base64 needs no JSON escaping. */
    rc = tf_buf_append_str(out, "{\"patch\":\"");
    if (rc == 0)
        rc = tf_buf_append(out, b64, b64_len);
    if (rc == 0)
        rc = tf_buf_append_str(out, strcmp(rest, "{}") == 0 ? "\"" : "\",");
    if (rc == 0)
        rc = tf_buf_append_str(out, rest + 1);
    free(rest);
    return rc;
}
