/*
 * link.c - one websocket connection from a slave, as a small state machine.
 *
 *      ESTABLISHED
 *          |  send challenge
 *          v
 *     CHALLENGED --hello ok--> READY --error/close/lost--> CLOSING
 *          |                                                 ^
 *          +--------------bad hello / timeout----------------+
 *
 * Every transition goes through link_set_state(), which logs it and
 * asserts it is legal. A link never frees itself inside an lws callback
 * that might still use it: the tf_link_t lives until LWS_CALLBACK_CLOSED.
 *
 * Receiving: lws hands us pieces of at most rx_buffer_size; we reassemble
 * a message (an output frame that comes whole, the usual case, is parsed
 * in lws's buffer without a copy) and refuse it as soon as its announced
 * size passes the protocol's cap, before buffering it (docs/protocol.md,
 * "Transport").
 * Before the slave has authenticated the cap is LINK_PREAUTH_MAX (a hello
 * is small), and what a link buffers then is charged to the global
 * pre-auth budget (net.h): over it, the oldest unauthenticated
 * connection makes room, or new slave connections are refused, rather
 * than the master's memory growing.
 *
 * Sending: frames go on a per-link queue capped at 8 MiB; each WRITEABLE
 * callback writes one frame. A slave that does not read its queue down is
 * cut off rather than allowed to grow our memory.
 *
 * Upgrading: tf_link_confirm_upgrade sees every websocket upgrade first
 * (server.c routes LWS_CALLBACK_HTTP_CONFIRM_UPGRADE to it) and answers a
 * wrong path or subprotocol with a plain-text HTTP error, where lws alone
 * would drop the connection without a word.
 *
 * Putting off (tf_master_defer_slaves, a burst's start batches being
 * written): a READY link's whole messages, text and output frames alike,
 * are copied onto its own queue instead of being handled, and once a link
 * has some queued every later message of it goes behind them, so each
 * slave's messages are handled in the order they came. The committed
 * start batches still go out between messages (tf_master_deliver_commits).
 * tf_link_drain_deferred, at the loop's turn after the deferral ends,
 * handles every queue; a link the slave closed is drained when it goes (its
 * messages came before the close), one the master closed is not (nothing
 * more is applied from a closing link). Over LINK_DEFER_MAX bytes put off
 * in all, new messages are handled at once again (those of links with a
 * queue still go behind it, until the drain the overflow asks for).
 *
 * Closing with a reason: the error message is queued like any frame; once
 * the queue is empty the WRITEABLE callback sets the close reason and
 * returns -1. The notes on this lws build say the close frame itself may be
 * lost from WRITEABLE, so slaves learn the reason from the error message,
 * which is always written first.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "clock.h"
#include "crypto.h"
#include "net/live.h"
#include "net/net.h"
#include "log.h"
#include "core/master.h"
#include "net/link.h"
#include "tf_err.h"

#define LINK_SENDQ_MAX (8u * 1024 * 1024)
/* The largest message before authentication: a hello with 64 running
 * builds (~4 KiB) and 64 tags of 64 bytes (~4.3 KiB) fits. */
#define LINK_PREAUTH_MAX (16u * 1024)

/* The bytes of slave messages put off at most, all links together: 5,000
 * slaves' events of a burst are about 2 MiB. */
#define LINK_DEFER_MAX (32u * 1024 * 1024)

typedef enum {
    LINK_CHALLENGED = 0,
    LINK_READY,
    LINK_CLOSING,
} link_state_t;

typedef struct frame {
    tf_list_t node;
    size_t len;
    bool binary;
    unsigned char data[]; /* LWS_PRE + len */
} frame_t;

struct tf_link {
    uint64_t id;
    tf_master_t *m;
    struct lws *wsi;
    link_state_t state;
    char nonce[TF_PROTO_NONCE_HEX + 1];
    tf_mslave_t *slave; /* set once READY */
    char name[TF_NAME_MAX + 1]; /* claimed name, for logs */
    char peer[64];
    int64_t opened_ms;    /* tf_mono_ms() */
    int64_t last_rx_ms;   /* tf_mono_ms() */
    int64_t last_ping_ms; /* tf_mono_ms() */
    uint64_t ping_id;
    tf_list_t sendq;
    size_t sendq_bytes;
    tf_buf_t rx;
    bool rx_binary;
    int close_code;
    char close_text[124];
    bool close_sent;        /* our close frame is written */
    const char *gone_event; /* "disconnected" or "lost" */
    char *adopt_text;       /* the hello while a shared master loads the
                             * builds it brings (tf_master_adopt) */
    bool in_text; /* in link_text or link_defer: a message to this link is
                   * queued, not written from inside its own receive
                   * callback */
    tf_list_t deferq;     /* messages put off (deferred_t), oldest first */
    tf_list_t defer_node; /* in m->deferred_links while deferq has some */
};

/* A whole message from a slave, put off (see the header). */
typedef struct deferred {
    tf_list_t node;
    bool binary;
    size_t len;
    unsigned char data[];
} deferred_t;

typedef struct link_pss {
    tf_link_t *link;
} link_pss_t;

static const char *state_name(link_state_t s)
{
    switch (s) {
    case LINK_CHALLENGED:
        return "CHALLENGED";
    case LINK_READY:
        return "READY";
    case LINK_CLOSING:
        return "CLOSING";
    }
    return "?";
}

static const char *link_who(const tf_link_t *l)
{
    return l->name[0] ? l->name : l->peer;
}

static void link_set_state(tf_link_t *l, link_state_t to)
{
    link_state_t from = l->state;
    /* Legal moves: CHALLENGED->READY, CHALLENGED->CLOSING, READY->CLOSING. */
    bool ok = (from == LINK_CHALLENGED && to != LINK_CHALLENGED) ||
              (from == LINK_READY && to == LINK_CLOSING);
    if (!ok) {
        tf_error("link", "link %llu (%s): illegal transition %s -> %s",
                 (unsigned long long)l->id, link_who(l), state_name(from),
                 state_name(to));
        return;
    }
    tf_debug("link", "link %llu (%s): %s -> %s", (unsigned long long)l->id,
             link_who(l), state_name(from), state_name(to));
    l->state = to;
}

static void link_want_write(tf_link_t *l)
{
    if (l->wsi)
        lws_callback_on_writable(l->wsi);
}

static int link_queue(tf_link_t *l, const void *data, size_t len, bool binary)
{
    if (l->sendq_bytes + len > LINK_SENDQ_MAX) {
        tf_warn("link", "slave %s does not read: send queue over %u bytes, "
                "cutting it off", link_who(l), LINK_SENDQ_MAX);
        tf_link_close(l, "timeout", TF_CLOSE_TIMEOUT,
                      "send queue full: the slave is not reading");
        return TF_EFULL;
    }
    frame_t *f = malloc(sizeof(*f) + LWS_PRE + len);
    if (!f)
        return TF_ENOMEM;
    f->len = len;
    f->binary = binary;
    memcpy(f->data + LWS_PRE, data, len);
    tf_list_push_back(&l->sendq, &f->node);
    l->sendq_bytes += len;
    link_want_write(l);
    return 0;
}

/* Writes text to l at once, without waiting for a WRITEABLE callback,
 * when that keeps the order: the link is READY, nothing of ours is
 * queued, and lws holds no partial frame of an earlier write
 * (lws_partial_buffered; lws_send_pipe_choked would also poll the socket,
 * a system call per message: 10,000 in a burst of 5,000 builds, with
 * their acks). A frame the kernel takes only in part is kept by lws and
 * finished at its next WRITEABLE, before any frame of ours (the queue is
 * written only from WRITEABLE, and nothing is written at once while lws
 * holds a part). 0 when written (or the write failed and the link is
 * closing), 1 when the caller is to queue it. */
static int link_write_now(tf_link_t *l, const char *text, size_t len)
{
    if (l->state != LINK_READY || l->in_text || !tf_list_empty(&l->sendq) ||
        lws_partial_buffered(l->wsi))
        return 1;
    unsigned char *buf = malloc(LWS_PRE + len);
    if (!buf)
        return 1;
    memcpy(buf + LWS_PRE, text, len);
    int n = lws_write(l->wsi, buf + LWS_PRE, len, LWS_WRITE_TEXT);
    free(buf);
    if (n < 0) {
        /* The socket is unusable: lws closes it at its next service. */
        tf_warn("link", "write to %s failed", link_who(l));
        lws_set_timeout(l->wsi, PENDING_TIMEOUT_CLOSE_SEND,
                        LWS_TO_KILL_ASYNC);
    } else if (n < (int)len) {
        /* lws takes a frame whole or, once the websocket is closing (the
         * slave sent its close), not at all: the link goes at its CLOSED
         * callback. */
        tf_debug("link", "%s is closing: a message to it was dropped",
                 link_who(l));
    }
    return 0;
}

int tf_link_send_text_now(tf_link_t *l, const char *text, size_t len)
{
    if (l->state == LINK_CLOSING || !l->wsi)
        return TF_ESTATE;
    if (link_write_now(l, text, len) == 0)
        return 0;
    return link_queue(l, text, len, false);
}

int tf_link_send_text(tf_link_t *l, const char *text, size_t len)
{
    if (l->state == LINK_CLOSING || !l->wsi)
        return TF_ESTATE;
    return link_queue(l, text, len, false);
}

int tf_link_send_msg(tf_link_t *l, const tf_msg_t *msg)
{
    char *text = NULL;
    size_t len = 0;
    int rc = tf_msg_encode(msg, &text, &len);
    if (rc) {
        tf_error("link", "cannot encode %s for %s: %s",
                 tf_msg_type_name(msg->type), link_who(l), tf_strerror(rc));
        return rc;
    }
    rc = tf_link_send_text(l, text, len);
    free(text);
    return rc;
}

void tf_link_close(tf_link_t *l, const char *code, int close_code,
                   const char *fmt, ...)
{
    if (l->state == LINK_CLOSING)
        return;
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);

    tf_info("link", "closing link to %s: %s: %s", link_who(l), code, message);
    tf_msg_t err = {.type = TF_MSG_ERROR};
    err.u.error.code = (char *)code;
    err.u.error.message = message;
    char *text = NULL;
    size_t len = 0;
    if (tf_msg_encode(&err, &text, &len) == 0) {
        /* Bypass the cap: the error must go out even on a full queue. */
        frame_t *f = malloc(sizeof(*f) + LWS_PRE + len);
        if (f) {
            f->len = len;
            f->binary = false;
            memcpy(f->data + LWS_PRE, text, len);
            tf_list_push_back(&l->sendq, &f->node);
            l->sendq_bytes += len;
        }
        free(text);
    }
    l->close_code = close_code;
    snprintf(l->close_text, sizeof(l->close_text), "%s", code);
    link_set_state(l, LINK_CLOSING);
    if (l->wsi) {
        /* A peer that never reads must not hold the socket open. */
        lws_set_timeout(l->wsi, PENDING_TIMEOUT_CLOSE_SEND, 5);
        link_want_write(l);
    }
}

static void slave_refused(tf_link_t *l, const char *why)
{
    tf_master_slave_event(l->m, l->name[0] ? l->name : "?", "refused", why);
}

/* Builds and sends the welcome, moving the link to READY. */
static void link_accept(tf_link_t *l, const tf_msg_t *hello)
{
    tf_master_t *m = l->m;
    tf_mslave_t *s = tf_master_slave(m, hello->u.hello.slave, true);
    if (!s) {
        tf_link_close(l, "timeout", TF_CLOSE_TIMEOUT, "master out of memory");
        return;
    }
    if (s->link && s->link != l) {
        tf_warn("link", "slave %s connected again; dropping its older link",
                s->name);
        tf_link_t *old = s->link;
        tf_link_close(old, "replaced", TF_CLOSE_REPLACED,
                      "a newer connection authenticated as slave %s",
                      s->name);
        /* Detach now so the old link's close does not touch the slave. */
        tf_master_slave_detach(m, s, NULL, NULL);
        old->slave = NULL;
    }
    link_set_state(l, LINK_READY);
    tf__net_preauth_release(l->wsi);
    tf__net_set_waiting(l->wsi, false);
    l->slave = s;
    tf_master_slave_attach(m, s, l, hello->u.hello.max_builds,
                           hello->u.hello.platform, hello->u.hello.version);

    tf_msg_t w = {.type = TF_MSG_WELCOME};
    w.u.welcome.slave = s->name;
    w.u.welcome.heartbeat_s = m->cfg->heartbeat_s;
    snprintf(w.u.welcome.farm, sizeof(w.u.welcome.farm), "%s", m->farm);
    int rc = tf_build_slave_back(m, s, hello, &w.u.welcome.resume,
                                 &w.u.welcome.nresume, &w.u.welcome.abandon,
                                 &w.u.welcome.nabandon);
    if (rc == 0)
        rc = tf_link_send_msg(l, &w);
    free(w.u.welcome.resume);
    free(w.u.welcome.abandon);
    if (rc) {
        tf_link_close(l, "timeout", TF_CLOSE_TIMEOUT, "master error: %s",
                      tf_strerror(rc));
        return;
    }

    char detail[400];
    snprintf(detail, sizeof(detail), "from %s, %s, %s", l->peer, s->platform,
             s->version);
    tf_master_slave_connected(m, s, detail);
    tf_live_slave(m, s, "connected");
    tf_info("link", "slave %s connected from %s (%s, %s)", s->name, l->peer,
            s->platform, s->version);
    tf_sched_kick(m);
}

/* The builds a slave brings are loaded: the welcome goes out now, if the
 * link is still there and waiting for it. */
static void link_adopted_cb(tf_master_t *m, void *arg, int rc)
{
    tf_link_t *l = tf_map_get_id(m->links, (uint64_t)(uintptr_t)arg);
    char err[256];
    tf_msg_t msg;

    if (!l || !l->adopt_text)
        return;
    if (rc && l->state == LINK_CHALLENGED) {
        /* Whose its builds are is unknown: resuming them could run one
         * twice. The slave keeps them and tries again. */
        tf_link_close(l, "timeout", TF_CLOSE_TIMEOUT, "master error: the "
                      "builds it brings could not be checked (%s); try "
                      "again", tf_strerror(rc));
    } else if (l->state == LINK_CHALLENGED &&
        tf_msg_decode(l->adopt_text, strlen(l->adopt_text), &msg, err,
                      sizeof(err)) == 0) {
        link_accept(l, &msg);
        tf_msg_clear(&msg);
    }
    free(l->adopt_text);
    l->adopt_text = NULL;
}

/* Several masters (store.shared): before the welcome, builds the slave
 * runs that this master holds are checked against the database (still
 * this master's?) and those it does not hold (any more) are loaded and
 * taken over (tf_master_adopt). Returns true when the welcome waits for
 * that. */
static bool link_adopt(tf_link_t *l, const tf_msg_t *msg, const char *text,
                       size_t len)
{
    size_t n = msg->u.hello.nrunning;
    uint64_t *ids;
    int rc;

    if (n == 0 || !tf_store_is_shared(l->m->store))
        return false;
    ids = calloc(n, sizeof(*ids));
    l->adopt_text = malloc(len + 1);
    if (!ids || !l->adopt_text) {
        free(ids);
        free(l->adopt_text);
        l->adopt_text = NULL;
        return false;
    }
    memcpy(l->adopt_text, text, len);
    l->adopt_text[len] = '\0';
    for (size_t i = 0; i < n; i++)
        ids[i] = msg->u.hello.running[i].build_id;
    rc = tf_master_adopt(l->m, msg->u.hello.slave, ids, n, link_adopted_cb,
                         (void *)(uintptr_t)l->id);
    free(ids);
    if (rc == 0)
        return true;
    if (rc != TF_ENOENT)
        tf_warn("link", "slave %s: cannot load the builds it brings (%s): "
                "they are abandoned", msg->u.hello.slave, tf_strerror(rc));
    free(l->adopt_text);
    l->adopt_text = NULL;
    return false;
}

static void link_hello(tf_link_t *l, const tf_msg_t *msg, const char *text,
                       size_t len)
{
    tf_master_t *m = l->m;
    snprintf(l->name, sizeof(l->name), "%s", msg->u.hello.slave);
    if (msg->u.hello.protocol != TF_PROTO_VERSION) {
        char why[160];
        snprintf(why, sizeof(why),
                 "protocol version mismatch: master speaks %d, slave %d",
                 TF_PROTO_VERSION, msg->u.hello.protocol);
        slave_refused(l, why);
        tf_link_close(l, "protocol_version", TF_CLOSE_PROTOCOL_VERSION,
                      "protocol version mismatch: this master speaks "
                      "protocol %d, the slave sent %d",
                      TF_PROTO_VERSION, msg->u.hello.protocol);
        return;
    }
    const tf_cfg_slave_t *cfg = tf_config_slave(m->cfg, msg->u.hello.slave);
    if (!cfg) {
        slave_refused(l, "unknown slave name");
        tf_link_close(l, "unknown_slave", TF_CLOSE_UNKNOWN_SLAVE,
                      "no slave named \"%s\" is configured on this master",
                      msg->u.hello.slave);
        return;
    }
    char expect[TF_PROTO_NONCE_HEX + 1];
    tf_proto_auth(cfg->secret, l->nonce, expect);
    if (!tf_ct_streq(expect, msg->u.hello.auth)) {
        slave_refused(l, "bad secret");
        tf_link_close(l, "bad_auth", TF_CLOSE_BAD_AUTH,
                      "authentication failed for slave \"%s\": the secret "
                      "does not match the master's",
                      msg->u.hello.slave);
        return;
    }
    if (l->adopt_text)
        return; /* a second hello while the first one's builds load */
    if (link_adopt(l, msg, text, len))
        return;
    link_accept(l, msg);
}

static void link_text(tf_link_t *l, const char *text, size_t len)
{
    char err[256];
    tf_msg_t msg;
    int rc;

    if (l->state == LINK_READY) {
        /* libuv hands over every ready socket before the store's wakeup:
         * with thousands of slaves sending, the commits that finished
         * meanwhile (a start batch's among them) are run first. */
        l->in_text = true;
        tf_master_deliver_commits(l->m);
        l->in_text = false;
        if (l->state != LINK_READY)
            return; /* closed by what ran */
    }
    rc = tf_msg_decode(text, len, &msg, err, sizeof(err));
    if (rc) {
        tf_link_close(l, "malformed", TF_CLOSE_MALFORMED,
                      "cannot decode message: %s", err);
        return;
    }
    if (l->state == LINK_CHALLENGED) {
        if (msg.type != TF_MSG_HELLO)
            tf_link_close(l, "malformed", TF_CLOSE_MALFORMED,
                          "expected hello, got %s",
                          tf_msg_type_name(msg.type));
        else
            link_hello(l, &msg, text, len);
        tf_msg_clear(&msg);
        return;
    }
    switch (msg.type) {
    case TF_MSG_PONG:
        break;
    case TF_MSG_DRAIN:
        tf_info("link", "slave %s is draining: no new builds for it",
                l->slave->name);
        tf_master_slave_drain(l->m, l->slave);
        break;
    case TF_MSG_STEP_STARTED:
    case TF_MSG_STEP_FINISHED:
    case TF_MSG_BUILD_FINISHED:
    case TF_MSG_TEST_RESULTS:
        rc = tf_build_event(l->m, l->slave, &msg, err, sizeof(err));
        if (rc)
            tf_link_close(l, "malformed", TF_CLOSE_MALFORMED, "%s", err);
        break;
    default:
        tf_link_close(l, "malformed", TF_CLOSE_MALFORMED,
                      "a slave may not send %s", tf_msg_type_name(msg.type));
        break;
    }
    tf_msg_clear(&msg);
}

static void link_binary(tf_link_t *l, const uint8_t *data, size_t len)
{
    char err[256];
    if (l->state != LINK_READY) {
        tf_link_close(l, "malformed", TF_CLOSE_MALFORMED,
                      "output before authentication");
        return;
    }
    tf_output_hdr_t h;
    const uint8_t *payload;
    int rc = tf_output_decode(data, len, &h, &payload, err, sizeof(err));
    if (rc) {
        tf_link_close(l, "malformed", TF_CLOSE_MALFORMED,
                      "bad output frame: %s", err);
        return;
    }
    rc = tf_build_output(l->m, l->slave, &h, payload, err, sizeof(err));
    if (rc)
        tf_link_close(l, "malformed", TF_CLOSE_MALFORMED, "%s", err);
}

/* Puts a whole message of l off (see the header) when the core says so
 * or l has messages put off already; false when it is to be handled now.
 * Then delivers the commits the writer finished meanwhile, as link_text
 * does before a message it handles. */
static bool link_defer(tf_link_t *l, bool binary, const void *data,
                       size_t len)
{
    tf_master_t *m = l->m;
    bool queued = !tf_list_empty(&l->deferq);

    if (l->state != LINK_READY)
        return false;
    /* Asked at every message, so a deferral past its time ends at the
     * next message from any slave. */
    bool defer = tf_master_defer_slaves(m);
    if (!queued && (m->deferred_bytes + len > LINK_DEFER_MAX || !defer))
        return false;
    deferred_t *d = malloc(sizeof(*d) + len);
    if (!d) {
        if (!queued)
            return false;
        /* Its earlier messages wait: handling this one first would
         * break their order. */
        tf_link_close(l, "timeout", TF_CLOSE_TIMEOUT,
                      "out of memory holding the slave's messages");
        return true;
    }
    d->binary = binary;
    d->len = len;
    memcpy(d->data, data, len);
    tf_list_push_back(&l->deferq, &d->node);
    m->deferred_bytes += len;
    if (!queued)
        tf_list_push_back(&m->deferred_links, &l->defer_node);
    if (m->deferred_bytes > LINK_DEFER_MAX)
        tf_master_defer_end(m); /* the queues are drained next turn */
    l->in_text = true;
    tf_master_deliver_commits(m);
    l->in_text = false;
    return true;
}

/* Handles what l put off, in order, while handle and l is READY; drops
 * the rest. Adds what it handled to *n and *bytes (may be NULL). */
static void link_drain(tf_link_t *l, bool handle, size_t *n, size_t *bytes)
{
    tf_master_t *m = l->m;

    while (!tf_list_empty(&l->deferq)) {
        deferred_t *d = tf_list_entry(l->deferq.next, deferred_t, node);
        tf_list_unlink(&d->node);
        m->deferred_bytes -= d->len;
        if (handle && l->state == LINK_READY) {
            if (d->binary)
                link_binary(l, d->data, d->len);
            else
                link_text(l, (const char *)d->data, d->len);
            if (n)
                (*n)++;
            if (bytes)
                *bytes += d->len;
        }
        free(d);
    }
    if (tf_list_linked(&l->defer_node))
        tf_list_unlink(&l->defer_node);
}

void tf_link_drain_deferred(tf_master_t *m)
{
    size_t n = 0, links = 0, bytes = 0;

    while (!tf_list_empty(&m->deferred_links)) {
        tf_link_t *l = tf_list_entry(m->deferred_links.next, tf_link_t,
                                     defer_node);
        size_t before = n;
        link_drain(l, true, &n, &bytes);
        links += n > before;
    }
    if (n)
        tf_info("link", "%zu messages (%zu bytes) from %zu slaves handled "
                "after the start batches they waited for", n, bytes, links);
}

static void link_receive(tf_link_t *l, const void *in, size_t len)
{
    struct lws *wsi = l->wsi;
    if (l->state == LINK_CLOSING)
        return; /* draining what is in flight; nothing more is applied */
    l->last_rx_ms = tf_mono_ms();
    if (l->slave)
        l->slave->last_seen_ms = tf_now_ms();

    if (lws_is_first_fragment(wsi) && l->rx.len == 0)
        l->rx_binary = lws_frame_is_binary(wsi);
    size_t cap = l->state != LINK_READY ? LINK_PREAUTH_MAX
                 : l->rx_binary        ? TF_PROTO_OUT_HDR + TF_PROTO_MAX_CHUNK
                                       : TF_PROTO_MAX_TEXT;
    size_t announced = l->rx.len + len + lws_remaining_packet_payload(wsi);
    if (announced > cap) {
        tf_buf_reset(&l->rx);
        tf_link_close(l, "too_big", TF_CLOSE_TOO_BIG,
                      "%s frame of at least %zu bytes is over the cap of "
                      "%zu bytes",
                      l->rx_binary ? "binary" : "text", announced, cap);
        return;
    }
    if (l->state != LINK_READY && !tf__net_preauth_charge(wsi, len)) {
        tf_buf_reset(&l->rx);
        tf_link_close(l, "too_big", TF_CLOSE_TOO_BIG,
                      "the master holds too much for unauthenticated "
                      "connections: try again later");
        return;
    }
    if (l->rx_binary && l->state == LINK_READY && l->rx.len == 0 &&
        lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0) {
        /* A whole output frame in one piece (the usual case: lws gathers
         * up to rx_buffer_size, one frame): parsed where lws holds it,
         * its bytes copied once, into the storage group. */
        if (!link_defer(l, true, in, len))
            link_binary(l, in, len);
        return;
    }
    if (tf_buf_append(&l->rx, in, len) != 0) {
        tf_link_close(l, "too_big", TF_CLOSE_TOO_BIG, "message over the cap");
        return;
    }
    if (!lws_is_final_fragment(wsi))
        return;
    if (link_defer(l, l->rx_binary, l->rx.data, l->rx.len))
        ; /* copied: handled at the drain */
    else if (l->rx_binary)
        link_binary(l, l->rx.data, l->rx.len);
    else
        link_text(l, (const char *)l->rx.data, l->rx.len);
    tf_buf_reset(&l->rx);
    if (l->state != LINK_READY && l->wsi) {
        /* The message is handled: keep only lws's buffer charged. */
        tf__net_preauth_release(l->wsi);
        tf__net_preauth_charge(l->wsi, TF_NET_CONN_COST);
    }
}

/* Writes the close frame (code + reason) ourselves: on this lws build a
 * close started with lws_close_reason() from a WRITEABLE callback never
 * puts the frame on the wire (shared/notes). The opcode has no public enum
 * name; 4 is LWS_WRITE_CLOSE. lws then waits for the peer's answering close
 * for at most the close-ack timeout before dropping the socket. */
static int link_write_close(tf_link_t *l)
{
    unsigned char buf[LWS_PRE + 2 + sizeof(l->close_text)];
    size_t n = strlen(l->close_text);
    buf[LWS_PRE] = (unsigned char)(l->close_code >> 8);
    buf[LWS_PRE + 1] = (unsigned char)(l->close_code & 0xff);
    memcpy(buf + LWS_PRE + 2, l->close_text, n);
    l->close_sent = true;
    if (lws_write(l->wsi, buf + LWS_PRE, n + 2, (enum lws_write_protocol)4) <
        0)
        return -1;
    lws_set_timeout(l->wsi, PENDING_TIMEOUT_CLOSE_ACK, 2);
    return 0;
}

/* Returns -1 when lws should close the connection. */
static int link_writeable(tf_link_t *l)
{
    if (tf_list_empty(&l->sendq)) {
        if (l->state == LINK_CLOSING && !l->close_sent)
            return link_write_close(l);
        return 0;
    }
    frame_t *f = tf_list_entry(l->sendq.next, frame_t, node);
    int n = lws_write(l->wsi, f->data + LWS_PRE, f->len,
                      f->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
    if (n < (int)f->len) {
        tf_warn("link", "write to %s failed", link_who(l));
        return -1;
    }
    tf_list_unlink(&f->node);
    l->sendq_bytes -= f->len;
    free(f);
    if (!tf_list_empty(&l->sendq) || l->state == LINK_CLOSING)
        link_want_write(l);
    return 0;
}

static void link_free(tf_link_t *l)
{
    free(l->adopt_text);
    link_drain(l, false, NULL, NULL); /* what is left put off is dropped */
    tf_list_t *it, *tmp;
    tf_list_foreach_safe(it, tmp, &l->sendq)
    {
        frame_t *f = tf_list_entry(it, frame_t, node);
        free(f);
    }
    tf_buf_free(&l->rx);
    free(l);
}

static void link_closed(tf_link_t *l)
{
    tf_master_t *m = l->m;
    tf_mslave_t *s = l->slave;
    l->wsi = NULL;
    /* What the slave sent before it closed is handled before it goes
     * (nothing of it can be written back now). */
    link_drain(l, true, NULL, NULL);
    if (s && s->link == l) {
        const char *ev = l->gone_event ? l->gone_event : "disconnected";
        tf_info("link", "slave %s %s", s->name, ev);
        tf_master_slave_detach(m, s, ev,
                               l->close_text[0] ? l->close_text : NULL);
        tf_live_slave(m, s, ev);
    }
    tf_map_del_id(m->links, l->id);
    link_free(l);
}

static tf_link_t *link_open(tf_master_t *m, struct lws *wsi)
{
    tf_link_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->id = ++m->next_link_id;
    l->m = m;
    l->wsi = wsi;
    l->state = LINK_CHALLENGED;
    tf_list_init(&l->sendq);
    tf_list_init(&l->deferq);
    tf_list_init(&l->defer_node);
    tf_buf_init(&l->rx, TF_PROTO_MAX_TEXT);
    l->opened_ms = tf_mono_ms();
    l->last_rx_ms = l->opened_ms;
    if (!lws_get_peer_simple(wsi, l->peer, sizeof(l->peer)))
        snprintf(l->peer, sizeof(l->peer), "?");
    if (tf_random_hex(32, l->nonce) != 0 ||
        tf_map_put_id(m->links, l->id, l) != 0) {
        link_free(l);
        return NULL;
    }
    tf_msg_t ch = {.type = TF_MSG_CHALLENGE};
    ch.u.challenge.protocol = TF_PROTO_VERSION;
    memcpy(ch.u.challenge.nonce, l->nonce, sizeof(l->nonce));
    ch.u.challenge.master = "tf-master " TF_VERSION;
    tf_link_send_msg(l, &ch);
    tf_debug("link", "link %llu from %s: challenge sent",
             (unsigned long long)l->id, l->peer);
    return l;
}

/* Copies at most outlen - 4 bytes of a peer's header value into out with
 * anything but printable ASCII (and quotes and backslashes) shown as '?',
 * so it can go into a log line and an answer safely. */
static void show_text(char *out, size_t outlen, const char *s)
{
    size_t o = 0;
    for (; *s && o + 4 < outlen; s++) {
        unsigned char c = (unsigned char)*s;
        out[o++] = (c < 0x20 || c > 0x7e || c == '"' || c == '\\') ? '?'
                                                                   : (char)c;
    }
    if (*s && o + 3 < outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* Sends a short plain-text HTTP answer to a refused upgrade. Returns 1
 * (lws then completes the transaction), or -1 to hang up when even that
 * cannot be written. */
static int upgrade_refuse(struct lws *wsi, unsigned status, const char *fmt,
                          ...) __attribute__((format(printf, 3, 4)));

static int upgrade_refuse(struct lws *wsi, unsigned status, const char *fmt,
                          ...)
{
    unsigned char buf[LWS_PRE + 1024];
    unsigned char *start = buf + LWS_PRE, *p = start;
    unsigned char *end = buf + sizeof(buf) - 1;
    char body[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof(body) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    size_t len = strlen(body);
    body[len++] = '\n';
    body[len] = '\0';
    if (lws_add_http_common_headers(wsi, status, "text/plain; charset=utf-8",
                                    len, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                     (const unsigned char *)"close", 5, &p,
                                     end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    memcpy(buf + LWS_PRE, body, len);
    if (lws_write(wsi, buf + LWS_PRE, len, LWS_WRITE_HTTP_FINAL) < (int)len)
        return -1;
    return 1;
}

/* Whether the comma-separated Sec-WebSocket-Protocol list names want. */
static bool protocols_name(const char *list, const char *want)
{
    size_t wl = strlen(want);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ' && *e != '\t')
            e++;
        if ((size_t)(e - p) == wl && strncmp(p, want, wl) == 0)
            return true;
        p = e;
    }
    return false;
}

int tf_link_confirm_upgrade(tf_master_t *m, struct lws *wsi)
{
    static const struct {
        const char *path, *protocol;
    } endpoints[] = {
        {TF_PROTO_WS_PATH, TF_PROTO_SUBPROTOCOL},
        {TF_LIVE_PATH, TF_LIVE_SUBPROTOCOL},
    };
    char uri[256], asked[256];
    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0)
        uri[0] = '\0';
    if (lws_hdr_copy(wsi, asked, sizeof(asked), WSI_TOKEN_PROTOCOL) <= 0)
        asked[0] = '\0';
    for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++) {
        if (strcmp(uri, endpoints[i].path) != 0)
            continue;
        if (!protocols_name(asked, endpoints[i].protocol)) {
            char shown[64];
            show_text(shown, sizeof(shown), asked);
            tf_info("link", "websocket upgrade to %s refused: subprotocol "
                    "%s%s%s, expected %s", uri, asked[0] ? "\"" : "",
                    asked[0] ? shown : "none", asked[0] ? "\"" : "",
                    endpoints[i].protocol);
            return upgrade_refuse(
                wsi, 400,
                "The websocket endpoint %s needs the subprotocol %s "
                "(request header \"Sec-WebSocket-Protocol: %s\"); this "
                "request %s%s%s.",
                uri, endpoints[i].protocol, endpoints[i].protocol,
                asked[0] ? "asked for \"" : "named no subprotocol",
                asked[0] ? shown : "", asked[0] ? "\"" : "");
        }
        if (m->stopping)
            return upgrade_refuse(wsi, 503, "The master is shutting down; "
                                  "connect again in a moment.");
        return 0;
    }
    char shown[64];
    show_text(shown, sizeof(shown), uri);
    return upgrade_refuse(wsi, 404,
                          "No websocket endpoint at \"%s\": slaves connect "
                          "to %s with the subprotocol %s, live viewers to "
                          "%s with %s.",
                          shown, TF_PROTO_WS_PATH, TF_PROTO_SUBPROTOCOL,
                          TF_LIVE_PATH, TF_LIVE_SUBPROTOCOL);
}

static bool path_is_slave_endpoint(struct lws *wsi)
{
    char uri[64];
    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0)
        return false;
    return strcmp(uri, TF_PROTO_WS_PATH) == 0;
}

/* RFC 6455: a client's frames are masked; an unmasked one ends the
 * connection with 1002 (net/wsmask.c sees it; lws does not). */
static int unmasked(struct lws *wsi)
{
    tf__net_warn("link", "closing a slave connection that sent an unmasked "
                 "frame");
    lws_close_reason(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR,
                     (unsigned char *)"unmasked frame", 14);
    return -1;
}

int tf_link_callback(struct lws *wsi, enum lws_callback_reasons reason,
                     void *user, void *in, size_t len)
{
    link_pss_t *pss = user;
    tf_master_t *m = lws_context_user(lws_get_context(wsi));
    int rc = 0;
    if (tf__net_common(wsi, reason, in, &rc))
        return rc;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        if (!path_is_slave_endpoint(wsi) || m->stopping)
            return 1;
        if (!tf__net_preauth_room(m, LINK_PREAUTH_MAX) &&
            !tf__net_make_room(m, "pre-auth budget spent")) {
            m->net_stats.refused++;
            tf__net_warn("link", "refusing a slave connection: %zu bytes are "
                    "buffered for unauthenticated connections",
                    m->net_stats.preauth_bytes);
            return 1;
        }
        return 0;
    case LWS_CALLBACK_ESTABLISHED:
        tf__net_register(wsi);
        if (tf__net_conn(wsi) && !tf__wsmask_upgraded(tf__net_conn(wsi)->fd))
            return unmasked(wsi);
        pss->link = link_open(m, wsi);
        return pss->link ? 0 : -1;
    case LWS_CALLBACK_RECEIVE:
        if (!pss->link)
            return -1;
        if (tf__net_unmasked(wsi))
            return unmasked(wsi);
        link_receive(pss->link, in, len);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!pss->link)
            return -1;
        return link_writeable(pss->link);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (pss->link && pss->link->state != LINK_CLOSING)
            snprintf(pss->link->close_text, sizeof(pss->link->close_text),
                     "closed by the slave");
        return 0;
    case LWS_CALLBACK_CLOSED:
        if (pss->link) {
            link_closed(pss->link);
            pss->link = NULL;
        }
        return 0;
    default:
        return 0;
    }
}

void tf_link_flow_all(tf_master_t *m, bool enable)
{
    size_t pos = 0;
    void *v;
    int64_t now = tf_mono_ms();
    while (tf_map_next(m->links, &pos, NULL, NULL, &v) == 0) {
        tf_link_t *l = v;
        if (!l->wsi)
            continue;
        lws_rx_flow_control(l->wsi, enable ? 1 : 0);
        /* Silence while we were not reading is our doing, not the slave's. */
        if (enable)
            l->last_rx_ms = now;
    }
}

void tf_link_heartbeat(tf_master_t *m)
{
    /* Durations on the monotonic clock: setting the master's test clock
     * (POST /api/v1/master/clock) must not mark every slave lost. */
    int64_t now = tf_mono_ms();
    int64_t hb = (int64_t)m->cfg->heartbeat_s * 1000;
    int64_t lost = (int64_t)m->cfg->lost_after_s * 1000;
    size_t pos = 0;
    void *v;
    while (tf_map_next(m->links, &pos, NULL, NULL, &v) == 0) {
        tf_link_t *l = v;
        if (l->state == LINK_CHALLENGED &&
            now - l->opened_ms > TF_PROTO_HELLO_TIMEOUT_S * 1000) {
            tf_link_close(l, "timeout", TF_CLOSE_TIMEOUT,
                          "no hello within %d s", TF_PROTO_HELLO_TIMEOUT_S);
            continue;
        }
        if (l->state != LINK_READY)
            continue;
        if (!m->store_congested && now - l->last_rx_ms > lost) {
            l->gone_event = "lost";
            tf_warn("link", "slave %s lost: nothing received for %lld s",
                    link_who(l), (long long)((now - l->last_rx_ms) / 1000));
            tf_link_close(l, "timeout", TF_CLOSE_TIMEOUT,
                          "nothing received for %u s: marked lost",
                          m->cfg->lost_after_s);
            continue;
        }
        if (now - l->last_ping_ms >= hb) {
            tf_msg_t p = {.type = TF_MSG_PING};
            p.u.ping.id = ++l->ping_id;
            l->last_ping_ms = now;
            tf_link_send_msg(l, &p);
        }
    }
}

void tf_link_close_all(tf_master_t *m)
{
    size_t pos = 0;
    void *v;
    /* Nothing a slave sent is dropped for the shutdown's sake. */
    tf_link_drain_deferred(m);
    while (tf_map_next(m->links, &pos, NULL, NULL, &v) == 0) {
        tf_link_t *l = v;
        tf_link_close(l, "shutdown", TF_CLOSE_SHUTDOWN,
                      "the master is shutting down");
    }
}
