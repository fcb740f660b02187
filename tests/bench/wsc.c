/*
 * wsc.c - the benchmarks' websocket client (see wsc.h for the design).
 *
 * Invariants: out[fill] is the buffer new frames go to; while `writing`,
 * out[fill ^ 1] is owned by the kernel write in flight and is not touched.
 * A connection is `held` (and on wsc_held) from a write the kernel took
 * whole until the next tf_wsc_flush_held(); never both held and writing.
 * rx holds only bytes that did not make a whole frame (or, before the
 * upgrade, the HTTP answer so far). Every error path goes through
 * wsc_fail(), which records the first reason and starts uv_close; the
 * caller hears of it once, from close_cb.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "base64.h"
#include "tf_err.h"
#include "wsc.h"

#define WSC_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* One read buffer for every connection: the loop is single-threaded and a
 * read is consumed before the next allocation. */
#define WSC_READ_BUF (256u * 1024)
/* A written buffer larger than this is freed rather than kept, so 10,000
 * idle links do not each hold a burst's worth of memory. */
#define WSC_KEEP_CAP (64u * 1024)
/* Room above TF_WSC_SENDQ_MAX for control frames (pong, close), which
 * must go out even when output has filled the queue. */
#define WSC_CTRL_ROOM 1024

static uint64_t wsc_rng;
static uint8_t wsc_read_buf[WSC_READ_BUF];
static tf_list_t wsc_pending; /* connections read and not parsed yet */
static size_t wsc_npending;
static tf_list_t wsc_held; /* connections written whole this loop turn */
static size_t wsc_nheld;
static void (*wsc_held_cb)(void); /* the caller's: the list became busy */

static void wsc_unpend(tf_wsc_t *c)
{
    if (tf_list_linked(&c->pendn)) {
        tf_list_unlink(&c->pendn);
        wsc_npending--;
    }
}

static void wsc_hold(tf_wsc_t *c)
{
    c->held = true;
    tf_list_push_back(&wsc_held, &c->heldn);
    if (wsc_nheld++ == 0 && wsc_held_cb)
        wsc_held_cb();
}

void tf_wsc_set_held_cb(void (*cb)(void))
{
    wsc_held_cb = cb;
}

static void wsc_unhold(tf_wsc_t *c)
{
    if (tf_list_linked(&c->heldn)) {
        tf_list_unlink(&c->heldn);
        wsc_nheld--;
    }
    c->held = false;
}

int tf_wsc_global_init(void)
{
    tf_list_init(&wsc_pending);
    tf_list_init(&wsc_held);
    if (RAND_bytes((unsigned char *)&wsc_rng, sizeof(wsc_rng)) != 1)
        return TF_EIO;
    wsc_rng |= 1; /* xorshift needs a non-zero state */
    return 0;
}

/* xorshift64*: masking keys need not be secret here (RFC 6455 wants them
 * unpredictable to scripts in a browser, which do not exist in a
 * benchmark), only cheap and varied. */
static uint32_t wsc_random32(void)
{
    wsc_rng ^= wsc_rng >> 12;
    wsc_rng ^= wsc_rng << 25;
    wsc_rng ^= wsc_rng >> 27;
    return (uint32_t)((wsc_rng * 0x2545F4914F6CDD1DULL) >> 32);
}

static void wsc_mask(uint8_t *p, size_t n, const uint8_t key[4])
{
    uint64_t k8;
    uint8_t kb[8];
    for (int i = 0; i < 8; i++)
        kb[i] = key[i & 3];
    memcpy(&k8, kb, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        v ^= k8;
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++)
        p[i] ^= key[i & 3];
}

static void wsc_close_cb(uv_handle_t *h)
{
    tf_wsc_t *c = h->data;
    c->state = TF_WSC_CLOSED;
    wsc_unpend(c);
    wsc_unhold(c);
    tf_buf_free(&c->rx);
    tf_buf_free(&c->msg);
    tf_buf_free(&c->out[0]);
    tf_buf_free(&c->out[1]);
    if (c->cbs->closed_cb)
        c->cbs->closed_cb(c, c->why[0] ? c->why : "closed");
}

static void wsc_fail(tf_wsc_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void wsc_fail(tf_wsc_t *c, const char *fmt, ...)
{
    if (!c->why[0] && fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->why, sizeof(c->why), fmt, ap);
        va_end(ap);
    }
    if (c->state == TF_WSC_CLOSED)
        return;
    c->state = TF_WSC_CLOSING;
    wsc_unhold(c);
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        uv_close((uv_handle_t *)&c->tcp, wsc_close_cb);
    }
}

static void wsc_write_cb(uv_write_t *req, int status);

/* A buffer the kernel has taken: kept for reuse unless it grew large. */
static void wsc_written(tf_buf_t *b)
{
    if (b->cap > WSC_KEEP_CAP)
        tf_buf_free(b);
    else
        tf_buf_reset(b);
}

/* Hands the fill buffer to the kernel unless a write is in flight or the
 * connection is held. The write is tried at once (uv_try_write): when the
 * kernel takes it whole, as it does for control messages on a link that
 * keeps up, there is no request, no callback and so no re-arming of the
 * socket in epoll (libuv's uv_write costs an epoll_ctl per write when its
 * callback runs); the connection is held instead, so what is queued
 * meanwhile goes out in one write at tf_wsc_flush_held, as it went out
 * from uv_write's callback before. What the kernel does not take goes
 * through uv_write as before. */
static void wsc_flush(tf_wsc_t *c)
{
    if (c->writing || c->held || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    tf_buf_t *b = &c->out[c->fill];
    if (b->len == 0)
        return;
    uv_buf_t ub = uv_buf_init((char *)b->data, (unsigned)b->len);
    int rc = uv_try_write((uv_stream_t *)&c->tcp, &ub, 1);
    if (rc >= 0 && (size_t)rc == b->len) {
        wsc_written(b);
        wsc_hold(c);
        return;
    }
    /* The rest goes through uv_write, from where the kernel stopped (the
     * buffer is reset whole once written). An error (a reset link) is
     * left to uv_write too, which reports it from its callback as before,
     * not inside the caller's send. */
    size_t off = rc > 0 ? (size_t)rc : 0;
    ub = uv_buf_init((char *)b->data + off, (unsigned)(b->len - off));
    rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &ub, 1,
                  wsc_write_cb);
    if (rc) {
        wsc_fail(c, "write: %s", uv_strerror(rc));
        return;
    }
    c->writing = true;
    c->fill ^= 1;
}

/* After a write ended (its callback, or a hold's end): what c queued
 * meanwhile goes out, a close frame on the wire ends the link, and an
 * open link with nothing left to write is drained. */
static void wsc_written_on(tf_wsc_t *c)
{
    wsc_flush(c);
    if (!c->writing && c->close_sent) {
        /* Our close frame is on the wire: nothing more to say. */
        wsc_fail(c, NULL);
        return;
    }
    if (c->state == TF_WSC_OPEN && c->cbs->drained_cb)
        c->cbs->drained_cb(c);
}

static void wsc_write_cb(uv_write_t *req, int status)
{
    tf_wsc_t *c = req->data;
    tf_buf_t *done = &c->out[c->fill ^ 1];
    c->writing = false;
    wsc_written(done);
    if (status < 0) {
        if (status != UV_ECANCELED)
            wsc_fail(c, "write: %s", uv_strerror(status));
        return;
    }
    if (c->state == TF_WSC_CLOSING)
        return;
    wsc_written_on(c);
}

/* Ends c's hold: what it queued since goes out now (and holds it again
 * when the kernel takes it whole), as uv_write's callback did. */
static void wsc_release(tf_wsc_t *c)
{
    wsc_unhold(c);
    if (c->state == TF_WSC_CLOSING || c->state == TF_WSC_CLOSED)
        return;
    wsc_written_on(c);
}

size_t tf_wsc_flush_held(void)
{
    /* Those held again while this runs go behind the mark and wait for
     * the next call; one failing meanwhile (a drained_cb can close
     * another link) leaves the list as any close does. */
    tf_list_t mark;
    if (tf_list_empty(&wsc_held))
        return 0;
    tf_list_push_back(&wsc_held, &mark);
    while (wsc_held.next != &mark)
        wsc_release(tf_list_entry(wsc_held.next, tf_wsc_t, heldn));
    tf_list_unlink(&mark);
    return wsc_nheld;
}

/* Appends one masked frame; ctrl frames may use WSC_CTRL_ROOM. */
static int wsc_queue_frame(tf_wsc_t *c, int op, const void *head, size_t hlen,
                           const void *body, size_t blen, bool ctrl)
{
    tf_buf_t *b = &c->out[c->fill];
    size_t plen = hlen + blen;
    uint8_t hdr[14];
    size_t n = 0;
    hdr[n++] = (uint8_t)(0x80 | (op & 0x0f));
    if (plen < 126) {
        hdr[n++] = (uint8_t)(0x80 | plen);
    } else if (plen <= 0xffff) {
        hdr[n++] = 0x80 | 126;
        hdr[n++] = (uint8_t)(plen >> 8);
        hdr[n++] = (uint8_t)plen;
    } else {
        hdr[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            hdr[n++] = (uint8_t)((uint64_t)plen >> (8 * i));
    }
    uint32_t k = wsc_random32();
    uint8_t key[4] = {(uint8_t)(k >> 24), (uint8_t)(k >> 16), (uint8_t)(k >> 8),
                      (uint8_t)k};
    memcpy(hdr + n, key, 4);
    n += 4;
    size_t limit = TF_WSC_SENDQ_MAX + (ctrl ? WSC_CTRL_ROOM : 0);
    if (b->len + n + plen > limit)
        return TF_EFULL;
    size_t start = b->len;
    int rc = tf_buf_append(b, hdr, n);
    if (rc == 0 && hlen)
        rc = tf_buf_append(b, head, hlen);
    if (rc == 0 && blen)
        rc = tf_buf_append(b, body, blen);
    if (rc) {
        b->len = start; /* drop the partial frame */
        return rc;
    }
    wsc_mask(b->data + start + n, plen, key);
    wsc_flush(c);
    return 0;
}

int tf_wsc_send(tf_wsc_t *c, int op, const void *head, size_t hlen,
                const void *body, size_t blen)
{
    if (c->state != TF_WSC_OPEN || c->close_sent)
        return TF_ESTATE;
    return wsc_queue_frame(c, op, head, hlen, body, blen, op >= 8);
}

size_t tf_wsc_queued(const tf_wsc_t *c)
{
    return c->out[0].len + c->out[1].len;
}

void tf_wsc_close(tf_wsc_t *c, int code, const char *reason)
{
    if (c->state == TF_WSC_CLOSED || c->state == TF_WSC_INIT)
        return;
    if (c->state != TF_WSC_OPEN || c->close_sent) {
        if (!c->close_sent)
            wsc_fail(c, "closed by us");
        return;
    }
    uint8_t p[2 + 123];
    size_t rl = reason ? strnlen(reason, 123) : 0;
    p[0] = (uint8_t)(code >> 8);
    p[1] = (uint8_t)code;
    if (rl)
        memcpy(p + 2, reason, rl);
    if (!c->why[0])
        snprintf(c->why, sizeof(c->why), "closed by us: %d", code);
    if (wsc_queue_frame(c, TF_WSC_OP_CLOSE, p, 2 + rl, NULL, 0, true) != 0) {
        wsc_fail(c, NULL);
        return;
    }
    /* The close frame does not wait for the hold to end: the link's
     * measured life is over, and after the run's end nothing may call
     * tf_wsc_flush_held any more. */
    if (c->held) {
        wsc_unhold(c);
        wsc_flush(c);
    }
    c->close_sent = true;
    if (!c->writing)
        wsc_fail(c, NULL);
}

void tf_wsc_abort(tf_wsc_t *c, const char *why)
{
    if (c->state == TF_WSC_CLOSED || c->state == TF_WSC_INIT)
        return;
    wsc_fail(c, "%s", why ? why : "aborted");
}

/* --- receiving --- */

static void wsc_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init((char *)wsc_read_buf, sizeof(wsc_read_buf));
}

static void wsc_deliver(tf_wsc_t *c, int op, const uint8_t *p, size_t n)
{
    if (c->cbs->message_cb)
        c->cbs->message_cb(c, op == TF_WSC_OP_BINARY, p, n);
}

static void wsc_on_close_frame(tf_wsc_t *c, const uint8_t *p, size_t n)
{
    int code = n >= 2 ? (p[0] << 8 | p[1]) : 1005;
    c->peer_close_code = code;
    if (!c->why[0])
        snprintf(c->why, sizeof(c->why), "closed by the peer: %d %.*s", code,
                 (int)(n > 2 ? n - 2 : 0), n > 2 ? (const char *)p + 2 : "");
    if (!c->close_sent && c->state == TF_WSC_OPEN) {
        uint8_t echo[2] = {(uint8_t)(code >> 8), (uint8_t)code};
        if (code == 1005 || code == 1006 || code == 1015)
            echo[0] = 1000 >> 8, echo[1] = 1000 & 0xff;
        if (wsc_queue_frame(c, TF_WSC_OP_CLOSE, echo, 2, NULL, 0, true) == 0) {
            if (c->held) {
                wsc_unhold(c);
                wsc_flush(c);
            }
            c->close_sent = true;
            if (c->writing)
                return; /* closes once written */
        }
    }
    wsc_fail(c, NULL);
}

/* Parses one frame at p[0..n). Returns the bytes it used, 0 when more are
 * needed, or -1 after failing the connection. */
static long wsc_frame(tf_wsc_t *c, const uint8_t *p, size_t n)
{
    if (n < 2)
        return 0;
    int fin = p[0] & 0x80, rsv = p[0] & 0x70, op = p[0] & 0x0f;
    size_t hl = 2;
    uint64_t len = p[1] & 0x7f;
    if (p[1] & 0x80) {
        wsc_fail(c, "protocol: the server sent a masked frame");
        return -1;
    }
    if (rsv) {
        wsc_fail(c, "protocol: reserved bits set (no extension agreed)");
        return -1;
    }
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        hl = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        hl = 10;
    }
    if (op >= 8) {
        if (!fin || len > 125) {
            wsc_fail(c, "protocol: bad control frame (opcode %d)", op);
            return -1;
        }
    } else if (c->msg.len + len > c->max_message) {
        wsc_fail(c, "a message of at least %llu bytes is over the cap of "
                 "%zu bytes", (unsigned long long)(c->msg.len + len),
                 c->max_message);
        return -1;
    }
    if (n - hl < len)
        return 0;
    const uint8_t *pl = p + hl;
    size_t pn = (size_t)len;
    switch (op) {
    case TF_WSC_OP_CONT:
        if (!c->msg_op) {
            wsc_fail(c, "protocol: continuation without a message");
            return -1;
        }
        if (tf_buf_append(&c->msg, pl, pn) != 0) {
            wsc_fail(c, "message over the cap");
            return -1;
        }
        if (fin) {
            int mop = c->msg_op;
            c->msg_op = 0;
            wsc_deliver(c, mop, c->msg.data, c->msg.len);
            tf_buf_reset(&c->msg);
        }
        break;
    case TF_WSC_OP_TEXT:
    case TF_WSC_OP_BINARY:
        if (c->msg_op) {
            wsc_fail(c, "protocol: a new message inside a fragmented one");
            return -1;
        }
        if (fin) {
            wsc_deliver(c, op, pl, pn);
        } else {
            c->msg_op = (uint8_t)op;
            if (tf_buf_append(&c->msg, pl, pn) != 0) {
                wsc_fail(c, "message over the cap");
                return -1;
            }
        }
        break;
    case TF_WSC_OP_PING:
        if (c->state == TF_WSC_OPEN && !c->close_sent &&
            wsc_queue_frame(c, TF_WSC_OP_PONG, pl, pn, NULL, 0, true) != 0) {
            wsc_fail(c, "cannot queue a pong");
            return -1;
        }
        break;
    case TF_WSC_OP_PONG:
        break;
    case TF_WSC_OP_CLOSE:
        wsc_on_close_frame(c, pl, pn);
        return -1;
    default:
        wsc_fail(c, "protocol: unknown opcode %d", op);
        return -1;
    }
    return (long)(hl + pn);
}

/* Parses every whole frame of p[0..n); returns the bytes used or -1. */
static long wsc_frames(tf_wsc_t *c, const uint8_t *p, size_t n)
{
    size_t used = 0;
    while (used < n && c->state == TF_WSC_OPEN) {
        long k = wsc_frame(c, p + used, n - used);
        if (k < 0)
            return -1;
        if (k == 0)
            break;
        used += (size_t)k;
    }
    return (long)used;
}

/* Value of header name (lower case) in the HTTP head, or NULL. */
static const char *wsc_header(char *head, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    char *line = strstr(head, "\r\n");
    while (line && line[2]) {
        line += 2;
        char *end = strstr(line, "\r\n");
        if (!end)
            break;
        if ((size_t)(end - line) > nl && line[nl] == ':' &&
            strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            const char *e = end;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            *vlen = (size_t)(e - v);
            return v;
        }
        line = end;
    }
    return NULL;
}

static int wsc_check_upgrade(tf_wsc_t *c, char *head)
{
    char *eol = strstr(head, "\r\n");
    size_t sl = eol ? (size_t)(eol - head) : strlen(head);
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        wsc_fail(c, "upgrade refused: %.*s", (int)(sl > 120 ? 120 : sl),
                 head);
        return -1;
    }
    char src[sizeof(c->key) + sizeof(WSC_GUID)];
    snprintf(src, sizeof(src), "%s%s", c->key, WSC_GUID);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    char want[32];
    if (!EVP_Digest(src, strlen(src), md, &mdlen, EVP_sha1(), NULL) ||
        mdlen != 20) {
        wsc_fail(c, "SHA-1 failed");
        return -1;
    }
    tf_base64_encode(md, 20, want);
    size_t vl = 0;
    const char *v = wsc_header(head, "sec-websocket-accept", &vl);
    if (!v || vl != strlen(want) || memcmp(v, want, vl) != 0) {
        wsc_fail(c, "upgrade: wrong or missing Sec-WebSocket-Accept");
        return -1;
    }
    v = wsc_header(head, "sec-websocket-protocol", &vl);
    if (!v || vl != strlen(c->protocol) || memcmp(v, c->protocol, vl) != 0) {
        wsc_fail(c, "upgrade: the server did not agree to subprotocol %s",
                 c->protocol);
        return -1;
    }
    return 0;
}

static void wsc_feed_upgrade(tf_wsc_t *c, const uint8_t *p, size_t n)
{
    if (tf_buf_append(&c->rx, p, n) != 0) {
        wsc_fail(c, "upgrade: answer over the cap");
        return;
    }
    char *data = (char *)c->rx.data;
    char *end = memmem(data, c->rx.len, "\r\n\r\n", 4);
    if (!end) {
        if (c->rx.len > TF_WSC_HTTP_MAX)
            wsc_fail(c, "upgrade: headers over %u bytes", TF_WSC_HTTP_MAX);
        return;
    }
    size_t hl = (size_t)(end - data) + 4;
    if (hl > TF_WSC_HTTP_MAX) {
        wsc_fail(c, "upgrade: headers over %u bytes", TF_WSC_HTTP_MAX);
        return;
    }
    char save = data[hl];
    data[hl] = '\0'; /* the head as a C string for the header scan */
    int rc = wsc_check_upgrade(c, data);
    data[hl] = save;
    if (rc)
        return;
    tf_buf_consume(&c->rx, hl);
    c->state = TF_WSC_OPEN;
    if (c->cbs->open_cb)
        c->cbs->open_cb(c);
    if (c->state == TF_WSC_OPEN && c->rx.len) {
        /* Frames that came with the 101: parse them from rx. */
        long used = wsc_frames(c, c->rx.data, c->rx.len);
        if (used > 0 && c->state != TF_WSC_CLOSED)
            tf_buf_consume(&c->rx, (size_t)used);
    }
}

/* Parses the frames waiting in c->rx (its read callbacks' bytes). */
static void wsc_parse(tf_wsc_t *c)
{
    wsc_unpend(c);
    if (c->state != TF_WSC_OPEN || !c->rx.len)
        return;
    long used = wsc_frames(c, c->rx.data, c->rx.len);
    if (used > 0 && c->state != TF_WSC_CLOSED)
        tf_buf_consume(&c->rx, (size_t)used);
}

static void wsc_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    tf_wsc_t *c = s->data;
    (void)buf;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF)
            wsc_fail(c, "connection closed by the peer without a close "
                     "frame");
        else
            wsc_fail(c, "read: %s", uv_strerror((int)nread));
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    c->read_wall_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    if (c->state == TF_WSC_UPGRADING) {
        wsc_feed_upgrade(c, wsc_read_buf, (size_t)nread);
    } else if (c->state == TF_WSC_OPEN) {
        /* Parsed by tf_wsc_parse_pending, after the turn's reads; bytes
         * that do not fit beside what waits are parsed at once first. */
        if (tf_buf_append(&c->rx, wsc_read_buf, (size_t)nread) != 0) {
            wsc_parse(c);
            if (c->state != TF_WSC_OPEN)
                return;
            if (tf_buf_append(&c->rx, wsc_read_buf, (size_t)nread) != 0) {
                wsc_fail(c, "a frame over the cap");
                return;
            }
        }
        if (!tf_list_linked(&c->pendn)) {
            tf_list_push_back(&wsc_pending, &c->pendn);
            wsc_npending++;
        }
    }
}

size_t tf_wsc_parse_pending(size_t max)
{
    for (size_t n = 0; n < max && !tf_list_empty(&wsc_pending); n++)
        wsc_parse(tf_list_entry(wsc_pending.next, tf_wsc_t, pendn));
    return wsc_npending;
}

static void wsc_connect_cb(uv_connect_t *req, int status)
{
    tf_wsc_t *c = req->data;
    if (status < 0) {
        wsc_fail(c, "connect: %s", uv_strerror(status));
        return;
    }
    if (c->state != TF_WSC_CONNECTING)
        return;
    c->state = TF_WSC_UPGRADING;
    uint8_t raw[16];
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = wsc_random32();
        memcpy(raw + i, &r, 4);
    }
    tf_base64_encode(raw, sizeof(raw), c->key);
    int rc = tf_buf_printf(&c->out[c->fill],
                           "GET %s HTTP/1.1\r\nHost: %s\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n"
                           "Sec-WebSocket-Protocol: %s\r\n\r\n",
                           c->path, c->host, c->key, c->protocol);
    if (rc) {
        wsc_fail(c, "cannot build the upgrade request: %s", tf_strerror(rc));
        return;
    }
    rc = uv_read_start((uv_stream_t *)&c->tcp, wsc_alloc_cb, wsc_read_cb);
    if (rc) {
        wsc_fail(c, "read_start: %s", uv_strerror(rc));
        return;
    }
    wsc_flush(c);
}

int tf_wsc_connect(tf_wsc_t *c, uv_loop_t *loop, const struct sockaddr *addr,
                   const char *host, const char *path, const char *protocol,
                   size_t max_message, const tf_wsc_cbs_t *cbs, void *data)
{
    memset(c, 0, sizeof(*c));
    tf_list_init(&c->pendn);
    tf_list_init(&c->heldn);
    if (strlen(host) >= sizeof(c->host) || strlen(path) >= sizeof(c->path) ||
        strlen(protocol) >= sizeof(c->protocol))
        return TF_EINVAL;
    snprintf(c->host, sizeof(c->host), "%s", host);
    snprintf(c->path, sizeof(c->path), "%s", path);
    snprintf(c->protocol, sizeof(c->protocol), "%s", protocol);
    c->cbs = cbs;
    c->data = data;
    c->max_message = max_message;
    c->peer_close_code = -1;
    tf_buf_init(&c->rx, max_message + 16 + TF_WSC_HTTP_MAX);
    tf_buf_init(&c->msg, max_message);
    tf_buf_init(&c->out[0], TF_WSC_SENDQ_MAX + WSC_CTRL_ROOM);
    tf_buf_init(&c->out[1], TF_WSC_SENDQ_MAX + WSC_CTRL_ROOM);
    int rc = uv_tcp_init(loop, &c->tcp);
    if (rc)
        return rc;
    c->tcp.data = c;
    c->connect_req.data = c;
    c->write_req.data = c;
    c->state = TF_WSC_CONNECTING;
    uv_tcp_nodelay(&c->tcp, 1);
    rc = uv_tcp_connect(&c->connect_req, &c->tcp, addr, wsc_connect_cb);
    if (rc)
        wsc_fail(c, "connect: %s", uv_strerror(rc));
    return 0;
}
