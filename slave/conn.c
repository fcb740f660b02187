/*
 * conn.c - the link to the master: lws client on our libuv loop.
 *
 * States of the link (tf__set_state is the only place that changes them,
 * logs the change and asserts it is legal):
 *
 *   IDLE -> CONNECTING -> OPEN -> HELLO_SENT -> READY
 *               |          |         |           |
 *               +----------+---------+-----------+--> BACKOFF -> CONNECTING
 *   any ------------------------------------------------> STOPPED
 *
 * CONNECTING: TCP/TLS/websocket handshake in progress. OPEN: upgraded,
 * waiting for the challenge. HELLO_SENT: waiting for welcome. READY: build
 * traffic flows. BACKOFF: waiting on our retry timer. STOPPED: the slave is
 * exiting or the master refused us for good; nothing reconnects.
 *
 * Reconnects use our own uv_timer (not lws's retry machinery) so the delay
 * policy (exponential, jittered, reset by a welcome) is ours and visible in
 * the logs. One attempt exists at a time; `in_attempt` guards against lws
 * reporting the end of an attempt twice (CONNECTION_ERROR then CLOSED).
 *
 * Several masters (a failover list): each master is a target with its own
 * backoff and a "not before" time, so no master is tried more often than
 * the backoff allows, however many others fail meanwhile. When an attempt
 * ends, the next target in round-robin order that may be tried now gets
 * the next attempt (after at least a jittered backoff_min_ms when it is a
 * different master, so slaves that lose one master together do not land
 * on the next in the same instant); when none may, the one whose wait ends
 * first. A master that refuses us for good (bad secret, unknown name,
 * protocol version) leaves the rotation; the slave stops only when every
 * master has. With one master this is exactly the single-master policy.
 *
 * Sending: control messages we generate (hello, pong, drain) sit in a tiny
 * capped queue and go first; after that each writeable callback pulls one
 * build event from the slave. One lws_write per callback keeps every build
 * (and pongs) moving fairly, and lws never holds more than one frame of
 * ours. Binary output frames are framed and masked by us (common/wsframe.c,
 * a word at a time; lws 4.1 masks a byte at a time, which was a third of
 * the slave's CPU on a step streaming output) and handed to lws as raw
 * bytes; control messages go through lws's own framing.
 */
#include <assert.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "conn.h"
#include "crypto.h"
#include "log.h"
#include "spool.h"
#include "tf_err.h"
#include "util.h"
#include "wsframe.h"

#define TF__CTRL_MAX 16              /* queued control messages */
#define TF__CTRL_MSG_MAX 65536       /* one control message we send */
#define TF__SHUTDOWN_POLL_MS 20
#define TF__SHUTDOWN_MAX_MS 5000     /* give up waiting on lws after this */
#define TF__CLOSE_WAIT_MS 1000       /* let a close frame out before destroy */

_Static_assert(LWS_PRE >= TF_WSFRAME_HDR_MAX,
               "our output frame header must fit in front of the payload");
#define TF__CLOSE_GUARD_MS 2000      /* a close we started must end by then */

typedef enum {
    TF_CONN_IDLE,
    TF_CONN_CONNECTING,
    TF_CONN_OPEN,
    TF_CONN_HELLO_SENT,
    TF_CONN_READY,
    TF_CONN_BACKOFF,
    TF_CONN_STOPPED,
} tf_conn_state_t;

static const char *const tf__state_names[] = {
    "IDLE", "CONNECTING", "OPEN", "HELLO_SENT", "READY", "BACKOFF", "STOPPED",
};

/* One master of the failover list. */
typedef struct {
    const tf_slave_master_t *m; /* borrowed from the config */
    uint64_t backoff_ms; /* the base of the next delay to this master */
    int64_t not_before;  /* tf_mono_ms: no attempt to it before then */
    bool refused;        /* it refused us for good: out of the rotation */
    char host_hdr[300];
    char url[600];       /* for logs; the path is cut at 256 bytes */
} tf__target_t;

struct tf_conn {
    uv_loop_t *loop;
    const tf_slave_config_t *cfg;
    const char *secret;
    tf_conn_ops_t ops;
    void *arg;

    struct lws_context *ctx;
    struct lws *wsi;
    tf_conn_state_t state;
    bool in_attempt;     /* an attempt is under way and not yet reported over */
    bool opened;         /* this attempt reached OPEN */
    bool draining;
    bool closing;        /* we asked lws to close this attempt's link */
    int in_cb;           /* inside tf__lws_cb: lws forbids a SYNC kill */
    bool close_on_return; /* close when the current callback returns */
    uint64_t attempt;
    uint64_t rng;
    uint32_t heartbeat_s;
    int master_protocol;
    int sock_errno;      /* SO_ERROR seen while lws dropped a failed connect */
    tf__target_t *targets; /* cfg->nmasters of them */
    size_t ntargets;
    size_t cur;          /* the target of the current or next attempt */
    size_t nrefused;
    const char *url;     /* targets[cur].url */

    uv_timer_t retry_timer;
    uv_timer_t watchdog;
    uv_timer_t shutdown_timer;
    int open_handles;

    tf_buf_t rx;         /* the text message being reassembled */
    char *ctrl[TF__CTRL_MAX];
    size_t ctrl_len[TF__CTRL_MAX];
    size_t ctrl_head, ctrl_count;
    uint8_t *tx;         /* LWS_PRE + one frame */

    void (*done_cb)(void *arg);
    void *done_arg;
    int64_t shutdown_start;
    int shutdown_phase;  /* 0 closing link, 1 waiting for lws handles, 2 done */
    char peer_close[160];
};

/* ---- small helpers ---------------------------------------------------- */

static void tf__set_state(tf_conn_t *c, tf_conn_state_t to, const char *why)
{
    static const unsigned legal[] = {
        [TF_CONN_IDLE] = 1u << TF_CONN_CONNECTING | 1u << TF_CONN_STOPPED,
        [TF_CONN_CONNECTING] = 1u << TF_CONN_OPEN | 1u << TF_CONN_BACKOFF |
                               1u << TF_CONN_STOPPED,
        [TF_CONN_OPEN] = 1u << TF_CONN_HELLO_SENT | 1u << TF_CONN_BACKOFF |
                         1u << TF_CONN_STOPPED,
        [TF_CONN_HELLO_SENT] = 1u << TF_CONN_READY | 1u << TF_CONN_BACKOFF |
                               1u << TF_CONN_STOPPED,
        [TF_CONN_READY] = 1u << TF_CONN_BACKOFF | 1u << TF_CONN_STOPPED,
        [TF_CONN_BACKOFF] = 1u << TF_CONN_CONNECTING | 1u << TF_CONN_STOPPED,
        [TF_CONN_STOPPED] = 0,
    };
    if (c->state == to)
        return;
    assert(legal[c->state] & (1u << to));
    tf_debug("conn", "link %s -> %s (%s)", tf__state_names[c->state],
             tf__state_names[to], why);
    c->state = to;
}

static uint64_t tf__rand(tf_conn_t *c)
{
    /* xorshift64: jitter only needs to spread slaves apart, not secrecy. */
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return c->rng;
}

void tf_conn_platform(char *out, size_t outlen)
{
    struct utsname u;
    if (uname(&u) != 0) {
        snprintf(out, outlen, "unknown");
        return;
    }
    snprintf(out, outlen, "%s-%s", u.sysname, u.machine);
    for (char *p = out; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
}

static void tf__ctrl_clear(tf_conn_t *c)
{
    while (c->ctrl_count) {
        free(c->ctrl[c->ctrl_head]);
        c->ctrl[c->ctrl_head] = NULL;
        c->ctrl_head = (c->ctrl_head + 1) % TF__CTRL_MAX;
        c->ctrl_count--;
    }
    c->ctrl_head = 0;
}

/* Queues an encoded control message (taking ownership of text). */
static int tf__ctrl_push(tf_conn_t *c, char *text, size_t len)
{
    if (c->ctrl_count == TF__CTRL_MAX || len > TF__CTRL_MSG_MAX) {
        free(text);
        return c->ctrl_count == TF__CTRL_MAX ? TF_EFULL : TF_E2BIG;
    }
    size_t i = (c->ctrl_head + c->ctrl_count) % TF__CTRL_MAX;
    c->ctrl[i] = text;
    c->ctrl_len[i] = len;
    c->ctrl_count++;
    if (c->wsi)
        lws_callback_on_writable(c->wsi);
    return 0;
}

static int tf__send_msg(tf_conn_t *c, const tf_msg_t *m)
{
    char *text = NULL;
    size_t len = 0;
    int rc = tf_msg_encode(m, &text, &len);
    if (rc) {
        tf_error("conn", "cannot encode %s: %s", tf_msg_type_name(m->type),
                 tf_strerror(rc));
        return rc;
    }
    rc = tf__ctrl_push(c, text, len);
    if (rc)
        tf_warn("conn", "cannot queue %s: %s", tf_msg_type_name(m->type),
                tf_strerror(rc));
    return rc;
}

static void tf__watchdog_cb(uv_timer_t *t);

/* Sets the close code and reason lws puts in its close frame; the caller
 * then returns -1 from the callback. lws 4.1 does not always finish a close
 * started in the middle of a large incoming frame (CLIENT_CLOSED never
 * comes), so a guard timer kills the socket if the close stalls. */
static int tf__close(tf_conn_t *c, int code, const char *reason)
{
    lws_close_reason(c->wsi, (enum lws_close_status)code,
                     (unsigned char *)(uintptr_t)reason, strlen(reason));
    c->closing = true;
    uv_timer_start(&c->watchdog, tf__watchdog_cb, TF__CLOSE_GUARD_MS, 0);
    return -1;
}

/* ---- timers ----------------------------------------------------------- */

static void tf__connect(tf_conn_t *c);

static void tf__retry_cb(uv_timer_t *t)
{
    tf_conn_t *c = t->data;
    if (c->state == TF_CONN_BACKOFF)
        tf__connect(c);
}

static void tf__watchdog_cb(uv_timer_t *t)
{
    tf_conn_t *c = t->data;
    if (!c->in_attempt || !c->wsi)
        return;
    if (c->closing)
        tf_warn("conn", "the link did not finish closing in %d ms: dropping "
                "the socket", TF__CLOSE_GUARD_MS);
    else if (c->state == TF_CONN_READY)
        tf_warn("conn", "nothing from the master for %u s (3 heartbeats): "
                "dropping the link", 3 * c->heartbeat_s);
    else
        tf_warn("conn", "handshake with %s stalled in state %s for %d s: "
                "dropping the link", c->url, tf__state_names[c->state],
                TF_CONN_HANDSHAKE_TIMEOUT_MS / 1000);
    /* Synchronous: lws only acts on LWS_TO_KILL_ASYNC the next time it
     * services the socket, which a silent peer never causes. We are in our
     * own timer callback, not servicing this wsi, which is what SYNC needs.
     * CLIENT_CLOSED runs inside this call and schedules the reconnect. */
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
}

static void tf__watchdog_arm(tf_conn_t *c)
{
    uint64_t ms = TF_CONN_HANDSHAKE_TIMEOUT_MS;
    if (c->closing)
        return; /* the close guard is running */
    if (c->state == TF_CONN_READY) {
        if (c->heartbeat_s == 0) {
            uv_timer_stop(&c->watchdog);
            return;
        }
        ms = (uint64_t)c->heartbeat_s * 3000;
    }
    uv_timer_start(&c->watchdog, tf__watchdog_cb, ms, 0);
}

/* base +-25 %, so that slaves cut off together do not return together. */
static uint64_t tf__jitter(tf_conn_t *c, uint64_t base)
{
    return base * 3 / 4 + tf__rand(c) % (base / 2 + 1);
}

/* The target of the next attempt: the first after the current one, in
 * round-robin order (the current one last), that is not refused and may be
 * tried at `now`; when none may yet, the one that may soonest. At least
 * one target is not refused (the slave stops when all are). */
static size_t tf__pick_target(const tf_conn_t *c, int64_t now)
{
    size_t best = c->cur;
    bool have = false;
    for (size_t k = 1; k <= c->ntargets; k++) {
        size_t i = (c->cur + k) % c->ntargets;
        const tf__target_t *t = &c->targets[i];
        if (t->refused)
            continue;
        if (t->not_before <= now)
            return i;
        if (!have || t->not_before < c->targets[best].not_before) {
            best = i;
            have = true;
        }
    }
    assert(have);
    return best;
}

/* The attempt is over, whatever ended it: tidy up and plan the next. */
static void tf__attempt_over(tf_conn_t *c, const char *why)
{
    bool was_open = c->opened;
    if (!c->in_attempt)
        return;
    c->in_attempt = false;
    c->opened = false;
    c->closing = false;
    c->wsi = NULL;
    tf_buf_reset(&c->rx);
    tf__ctrl_clear(c);
    uv_timer_stop(&c->watchdog);
    if (was_open && c->ops.down_cb)
        c->ops.down_cb(c->arg);
    if (c->state == TF_CONN_STOPPED)
        return;
    tf__target_t *t = &c->targets[c->cur];
    int64_t now = tf_mono_ms();
    uint64_t delay = tf__jitter(c, t->backoff_ms);
    uint64_t next_base = t->backoff_ms * 2;
    t->backoff_ms = next_base > c->cfg->backoff_max_ms
                        ? c->cfg->backoff_max_ms
                        : next_base;
    t->not_before = now + (int64_t)delay;
    size_t prev = c->cur;
    c->cur = tf__pick_target(c, now);
    t = &c->targets[c->cur];
    uint64_t wait = t->not_before > now ? (uint64_t)(t->not_before - now) : 0;
    tf__set_state(c, TF_CONN_BACKOFF, why);
    if (c->ntargets == 1)
        tf_warn("conn", "%s; reconnecting in %llu ms", why,
                (unsigned long long)wait);
    else {
        if (c->cur != prev) {
            uint64_t floor = tf__jitter(c, c->cfg->backoff_min_ms);
            if (wait < floor)
                wait = floor;
        }
        if (c->cur == prev)
            tf_warn("conn", "%s; trying %s again (master %zu of %zu) in "
                    "%llu ms", why, t->url, c->cur + 1, c->ntargets,
                    (unsigned long long)wait);
        else
            tf_warn("conn", "%s; failing over to %s (master %zu of %zu) in "
                    "%llu ms", why, t->url, c->cur + 1, c->ntargets,
                    (unsigned long long)wait);
    }
    uv_timer_start(&c->retry_timer, tf__retry_cb, wait, 0);
}

/* ---- handshake and messages ------------------------------------------ */

static void tf__refused(tf_conn_t *c, const char *why, int exit_code);

static int tf__on_challenge(tf_conn_t *c, const tf_msg_t *m)
{
    tf_running_t running[TF_PROTO_MAX_RUNNING];
    char platform[TF_PROTO_MAX_INFO];
    char auth[TF_PROTO_NONCE_HEX + 1];
    tf_msg_t h;

    c->master_protocol = m->u.challenge.protocol;
    if (m->u.challenge.protocol != TF_PROTO_VERSION) {
        tf_error("conn", "protocol version mismatch: the master (%s) speaks "
                 "protocol version %d, this slave speaks version %d; upgrade "
                 "the older side", m->u.challenge.master ? m->u.challenge.master
                                                         : "?",
                 m->u.challenge.protocol, TF_PROTO_VERSION);
        tf__refused(c, "protocol version mismatch", 5);
        return tf__close(c, 1000, "protocol version mismatch");
    }
    tf_proto_auth(c->secret, m->u.challenge.nonce, auth);
    tf_conn_platform(platform, sizeof platform);
    memset(&h, 0, sizeof h);
    h.type = TF_MSG_HELLO;
    h.u.hello.protocol = TF_PROTO_VERSION;
    h.u.hello.slave = c->cfg->name;
    memcpy(h.u.hello.auth, auth, sizeof auth);
    h.u.hello.version = (char *)"tf-slave " TF_VERSION;
    h.u.hello.platform = platform;
    h.u.hello.tags = c->cfg->tags;
    h.u.hello.ntags = c->cfg->ntags;
    h.u.hello.max_builds = c->cfg->max_builds;
    h.u.hello.running = running;
    h.u.hello.nrunning = c->ops.running_cb(c->arg, running,
                                            TF_PROTO_MAX_RUNNING);
    explicit_bzero(auth, sizeof auth);
    int rc = tf__send_msg(c, &h);
    explicit_bzero(h.u.hello.auth, sizeof h.u.hello.auth);
    if (rc)
        return tf__close(c, 1011, "cannot send hello");
    tf_debug("conn", "hello sent (%zu running builds reported)",
             h.u.hello.nrunning);
    tf__set_state(c, TF_CONN_HELLO_SENT, "challenge answered");
    return 0;
}

static void tf__on_welcome(tf_conn_t *c, const tf_msg_t *m)
{
    c->heartbeat_s = m->u.welcome.heartbeat_s;
    c->targets[c->cur].backoff_ms = c->cfg->backoff_min_ms;
    tf__set_state(c, TF_CONN_READY, "welcome");
    char which[80] = "";
    if (c->ntargets > 1)
        snprintf(which, sizeof which, "; master %zu of %zu", c->cur + 1,
                 c->ntargets);
    tf_info("conn", "connected to %s as %s (heartbeat %u s, %zu builds to "
            "resume, %zu to abandon%s)", c->url, m->u.welcome.slave,
            c->heartbeat_s, m->u.welcome.nresume, m->u.welcome.nabandon,
            which);
    tf__watchdog_arm(c);
    c->ops.welcome_cb(c->arg, m);
    if (c->draining) {
        tf_msg_t d = {.type = TF_MSG_DRAIN};
        tf__send_msg(c, &d);
    }
    lws_callback_on_writable(c->wsi);
}

/* The current master refused us for good (exit_code 3, 4 or 5 says why).
 * It leaves the rotation; when no master is left, the slave stops with
 * that status. The caller closes the link. */
static void tf__refused(tf_conn_t *c, const char *why, int exit_code)
{
    tf__target_t *t = &c->targets[c->cur];
    if (!t->refused) {
        t->refused = true;
        c->nrefused++;
    }
    if (c->nrefused < c->ntargets) {
        tf_error("conn", "the master %s (master %zu of %zu) refused this "
                 "slave for good (%s): not trying it again until tf-slave "
                 "restarts; going on with the %zu other master%s", t->url,
                 c->cur + 1, c->ntargets, why, c->ntargets - c->nrefused,
                 c->ntargets - c->nrefused == 1 ? "" : "s");
        return;
    }
    if (c->ntargets > 1)
        tf_error("conn", "every master in the list refused this slave for "
                 "good (the last, %s: %s): stopping", t->url, why);
    tf__set_state(c, TF_CONN_STOPPED, why);
    c->ops.fatal_cb(c->arg, exit_code);
}

/* The master's error message: decides between stopping and reconnecting. */
static int tf__on_error(tf_conn_t *c, const tf_msg_t *m)
{
    const char *code = m->u.error.code, *msg = m->u.error.message;
    int exit_code = 0;
    bool per_master = true; /* another master may still accept us */
    if (strcmp(code, "bad_auth") == 0) {
        tf_error("conn", "authentication failed: the master %s rejected our "
                 "secret for slave %s (check secret_file %s)", c->url,
                 c->cfg->name, c->cfg->secret_file);
        exit_code = 3;
    } else if (strcmp(code, "unknown_slave") == 0) {
        tf_error("conn", "the master %s does not know a slave named %s "
                 "(check the name, or add the slave to the master's "
                 "configuration)", c->url, c->cfg->name);
        exit_code = 4;
    } else if (strcmp(code, "protocol_version") == 0) {
        tf_error("conn", "protocol version mismatch: this slave speaks "
                 "protocol version %d, the master %s announced version %d "
                 "and says: %s", TF_PROTO_VERSION, c->url,
                 c->master_protocol, msg);
        exit_code = 5;
    } else if (strcmp(code, "malformed") == 0 ||
               strcmp(code, "too_big") == 0) {
        /* Our spool would send the very same bytes after a reconnect and
         * be refused again, forever: stop and say so instead. */
        tf_error("conn", "the master refused a message from this slave "
                 "(%s): %s; this is a bug in the slave or a damaged spool, "
                 "and reconnecting would send the same again, so the slave "
                 "stops (the spool is kept in the base directory's .spool)",
                 code, msg);
        exit_code = 6;
        per_master = false;
    } else if (strcmp(code, "replaced") == 0) {
        /* Two processes with one name would take turns replacing each other
         * every few hundred milliseconds; waiting the longest delay makes
         * that visible and cheap. */
        tf_warn("conn", "the master says another connection took over slave "
                "%s: %s (is a second tf-slave running with this name?)",
                c->cfg->name, msg);
        c->targets[c->cur].backoff_ms = c->cfg->backoff_max_ms;
    } else {
        tf_warn("conn", "the master closes the link: %s: %s", code, msg);
    }
    if (exit_code && per_master)
        tf__refused(c, code, exit_code);
    else if (exit_code) {
        tf__set_state(c, TF_CONN_STOPPED, code);
        c->ops.fatal_cb(c->arg, exit_code);
    }
    return tf__close(c, 1000, "bye");
}

/* One complete text message from the master. Returns -1 to close. */
static int tf__dispatch(tf_conn_t *c)
{
    char err[256] = "";
    tf_msg_t m;
    int ret = 0;
    int rc = tf_msg_decode((const char *)c->rx.data, c->rx.len, &m, err,
                           sizeof err);
    tf_buf_reset(&c->rx);
    if (rc) {
        tf_warn("conn", "malformed message from the master: %s",
                err[0] ? err : tf_strerror(rc));
        return tf__close(c, TF_CLOSE_MALFORMED, "malformed");
    }
    tf_debug("conn", "received %s", tf_msg_type_name(m.type));
    switch (m.type) {
    case TF_MSG_ERROR:
        ret = tf__on_error(c, &m);
        break;
    case TF_MSG_CHALLENGE:
        if (c->state != TF_CONN_OPEN)
            goto unexpected;
        ret = tf__on_challenge(c, &m);
        break;
    case TF_MSG_WELCOME:
        if (c->state != TF_CONN_HELLO_SENT)
            goto unexpected;
        tf__on_welcome(c, &m);
        break;
    case TF_MSG_PING:
        if (c->state != TF_CONN_READY)
            goto unexpected;
        {
            tf_msg_t pong = {.type = TF_MSG_PONG};
            pong.u.ping.id = m.u.ping.id;
            tf__send_msg(c, &pong);
        }
        break;
    case TF_MSG_BUILD_START:
    case TF_MSG_BUILD_ABORT:
    case TF_MSG_ACK:
        if (c->state != TF_CONN_READY)
            goto unexpected;
        c->ops.message_cb(c->arg, &m);
        break;
    default:
        goto unexpected;
    }
    tf_msg_clear(&m);
    return ret;
unexpected:
    tf_warn("conn", "unexpected %s from the master in state %s",
            tf_msg_type_name(m.type), tf__state_names[c->state]);
    tf_msg_clear(&m);
    return tf__close(c, TF_CLOSE_MALFORMED, "unexpected message");
}

static int tf__on_receive(tf_conn_t *c, struct lws *wsi, const void *in,
                          size_t len)
{
    tf__watchdog_arm(c);
    if (lws_frame_is_binary(wsi)) {
        tf_warn("conn", "the master sent a binary frame: closing");
        return tf__close(c, TF_CLOSE_MALFORMED, "binary frame");
    }
    size_t remaining = lws_remaining_packet_payload(wsi);
    if (c->closing)
        return 0; /* the rest of a refused frame */
    /* Refuse as soon as the size is known, before buffering the rest. */
    if (c->rx.len + len + remaining > TF_PROTO_MAX_TEXT) {
        tf_warn("conn", "message from the master larger than %d bytes: "
                "closing", TF_PROTO_MAX_TEXT);
        if (remaining == 0)
            return tf__close(c, TF_CLOSE_TOO_BIG, "too big");
        /* lws 4.1.6 writes one byte past its rx buffer when a callback
         * returns -1 in the middle of a frame (seen under valgrind), so
         * the close is left to lws's timeout machinery instead. */
        tf__close(c, TF_CLOSE_TOO_BIG, "too big");
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return 0;
    }
    if (tf_buf_append(&c->rx, in, len)) {
        tf_error("conn", "out of memory reading a message: closing");
        return tf__close(c, 1011, "out of memory");
    }
    if (!lws_is_final_fragment(wsi) || remaining)
        return 0;
    return tf__dispatch(c);
}

static int tf__on_writeable(tf_conn_t *c, struct lws *wsi)
{
    uint8_t *p = c->tx + LWS_PRE;
    size_t len = 0;
    bool binary = false;

    if (c->state == TF_CONN_STOPPED || c->state < TF_CONN_OPEN)
        return 0;
    if (c->ctrl_count) {
        size_t i = c->ctrl_head;
        len = c->ctrl_len[i];
        memcpy(p, c->ctrl[i], len);
        free(c->ctrl[i]);
        c->ctrl[i] = NULL;
        c->ctrl_head = (c->ctrl_head + 1) % TF__CTRL_MAX;
        c->ctrl_count--;
    } else if (c->state == TF_CONN_READY) {
        int r = c->ops.pull_cb(c->arg, p, TF_SPOOL_MAX_FRAME, &len, &binary);
        if (r < 0) {
            tf_error("conn", "cannot read the next event from the spool: %s",
                     tf_strerror(r));
            return tf__close(c, 1011, "spool error");
        }
        if (r == 0)
            return 0;
    } else
        return 0;
    size_t want = len;
    int n;
    if (binary) {
        /* Output frames are framed and masked here (common/wsframe.h: lws
         * masks a byte at a time) and go to lws as raw bytes; lws still
         * owns the socket, buffers a partial send and calls us again only
         * once it is flushed. */
        uint8_t key[4], hdr[TF_WSFRAME_HDR_MAX];
        if (tf_random_bytes(key, sizeof key)) {
            tf_error("conn", "no random bytes for a masking key: closing");
            return tf__close(c, 1011, "no randomness");
        }
        size_t hl = tf_wsframe_client_header(hdr, len, true, key);
        tf_wsframe_mask(p, len, key);
        memcpy(p - hl, hdr, hl); /* LWS_PRE >= TF_WSFRAME_HDR_MAX */
        want = hl + len;
        n = lws_write(wsi, p - hl, want, LWS_WRITE_RAW);
    } else
        n = lws_write(wsi, p, len, LWS_WRITE_TEXT);
    if (n < (int)want) {
        tf_warn("conn", "write to the master failed: dropping the link");
        c->closing = true;
        uv_timer_start(&c->watchdog, tf__watchdog_cb, TF__CLOSE_GUARD_MS, 0);
        return -1;
    }
    /* Ask again: either more is queued, or the next call finds nothing and
     * stops (one idle callback per burst is cheaper than tracking it). */
    lws_callback_on_writable(wsi);
    return 0;
}

/* lws only says "closed before established" when a connect fails; the
 * socket's pending error still holds the real reason (refused,
 * unreachable), as long as lws has not closed it yet. */
static void tf__capture_so_error(tf_conn_t *c, struct lws *wsi)
{
    int fd, e = 0;
    socklen_t elen = sizeof e;
    if (c->sock_errno)
        return;
    fd = (int)lws_get_socket_fd(wsi);
    if (fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &elen) == 0)
        c->sock_errno = e;
}

/* strerror in lower case ("connection refused"), like libuv's messages. */
static void tf__errno_text(int e, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", strerror(e));
    for (char *q = out; *q; q++)
        if (*q >= 'A' && *q <= 'Z')
            *q = (char)(*q - 'A' + 'a');
}

/* Turns lws's "...errno 111" into words when it gives a number. */
static void tf__describe_failure(const char *in, size_t len, char *out,
                                 size_t outlen)
{
    char raw[160];
    size_t n = len < sizeof raw - 1 ? len : sizeof raw - 1;
    if (!in || !n) {
        snprintf(out, outlen, "connection failed");
        return;
    }
    memcpy(raw, in, n);
    raw[n] = '\0';
    const char *e = strstr(raw, "errno");
    if (e) {
        const char *d = e + 5;
        while (*d == ' ' || *d == ':' || *d == '=')
            d++;
        char digits[8];
        size_t nd = 0;
        uint64_t num = 0;
        while (d[nd] >= '0' && d[nd] <= '9' && nd < sizeof digits - 1)
            nd++;
        memcpy(digits, d, nd);
        digits[nd] = '\0';
        if (tf_parse_u64(digits, &num) == 0 && num > 0 && num < 4096) {
            tf__errno_text((int)num, out, outlen);
            return;
        }
    }
    if (strstr(raw, "SSL") || strstr(raw, "ssl") || strstr(raw, "tls"))
        snprintf(out, outlen, "TLS handshake failed (is the master's "
                 "certificate signed by ca_file, and does it name the URL's "
                 "host?): %.100s", raw);
    else
        snprintf(out, outlen, "%s", raw);
}

static int tf__lws_cb_inner(struct lws *wsi, enum lws_callback_reasons reason,
                            void *user, void *in, size_t len)
{
    tf_conn_t *c = user;
    char why[400];

    switch (reason) {
    case LWS_CALLBACK_WSI_DESTROY:
        /* Normally CLIENT_CLOSED or CONNECTION_ERROR came first. lws 4.1.6
         * skips both when the peer hangs up while we wait for the upgrade
         * answer (a proxy with no backend): then the attempt ends here,
         * and in any case c->wsi must not outlive the wsi. */
        if (c && c->in_attempt && (c->wsi == wsi || c->wsi == NULL)) {
            char msg[1024];
            if (c->opened)
                snprintf(msg, sizeof msg, "link to %s closed%s", c->url,
                         c->peer_close);
            else if (c->sock_errno) {
                char e[128];
                tf__errno_text(c->sock_errno, e, sizeof e);
                snprintf(msg, sizeof msg, "connecting to %s failed: %s",
                         c->url, e);
            } else
                snprintf(msg, sizeof msg, "connecting to %s failed: the "
                         "connection closed before the websocket handshake "
                         "completed", c->url);
            c->wsi = NULL;
            tf__attempt_over(c, msg);
        } else if (c && c->wsi == wsi)
            c->wsi = NULL;
        break;
    case LWS_CALLBACK_CLIENT_HTTP_DROP_PROTOCOL:
        if (c && c->in_attempt && c->state == TF_CONN_CONNECTING)
            tf__capture_so_error(c, wsi);
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (!c || !c->in_attempt)
            break;
        tf__capture_so_error(c, wsi);
        if (c->sock_errno)
            tf__errno_text(c->sock_errno, why, sizeof why);
        else
            tf__describe_failure(in, len, why, sizeof why);
        {
            char msg[1024];
            snprintf(msg, sizeof msg, "connecting to %s failed: %s", c->url,
                     why);
            tf__attempt_over(c, msg);
        }
        break;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (!c || !c->in_attempt)
            break;
        c->wsi = wsi;
        c->opened = true;
        c->peer_close[0] = '\0';
        tf_buf_reset(&c->rx);
        tf__set_state(c, TF_CONN_OPEN, "websocket established");
        tf_debug("conn", "websocket to %s open", c->url);
        tf__watchdog_arm(c);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (!c || !c->in_attempt || c->state == TF_CONN_STOPPED)
            break;
        return tf__on_receive(c, wsi, in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (!c || !c->in_attempt)
            break;
        return tf__on_writeable(c, wsi);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (!c)
            break;
        if (len >= 2) {
            const unsigned char *b = in;
            int code = b[0] << 8 | b[1];
            snprintf(c->peer_close, sizeof c->peer_close,
                     "; the master closed with %d %.*s", code,
                     (int)(len - 2 > 100 ? 100 : len - 2), (const char *)b + 2);
        }
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (!c || !c->in_attempt)
            break;
        {
            char msg[1024];
            snprintf(msg, sizeof msg, "link to %s closed%s", c->url,
                     c->peer_close);
            tf__attempt_over(c, msg);
        }
        break;
    default:
        break;
    }
    return 0;
}

/* Whether lws passes our tf_conn_t as `user` with this reason: for the
 * OpenSSL hooks it passes OpenSSL's own objects there (an X509_STORE_CTX
 * while a wss:// master's certificate is verified). */
static bool tf__user_is_conn(enum lws_callback_reasons reason)
{
    switch (reason) {
    case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_CLIENT_VERIFY_CERTS:
    case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
    case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION:
    case LWS_CALLBACK_OPENSSL_PERFORM_SERVER_CERT_VERIFICATION:
    case LWS_CALLBACK_OPENSSL_CONTEXT_REQUIRES_PRIVATE_KEY:
        return false;
    default:
        return true;
    }
}

/* Wraps every lws callback so code reached from inside one knows it (see
 * tf_conn_shutdown) and a close it asked for happens on the way out. */
static int tf__lws_cb(struct lws *wsi, enum lws_callback_reasons reason,
                      void *user, void *in, size_t len)
{
    if (!tf__user_is_conn(reason))
        return tf__lws_cb_inner(wsi, reason, NULL, in, len);
    tf_conn_t *c = user;
    if (!c)
        return tf__lws_cb_inner(wsi, reason, user, in, len);
    c->in_cb++;
    int ret = tf__lws_cb_inner(wsi, reason, user, in, len);
    c->in_cb--;
    if (c->close_on_return && c->in_attempt && wsi == c->wsi && ret == 0 &&
        (reason == LWS_CALLBACK_CLIENT_RECEIVE ||
         reason == LWS_CALLBACK_CLIENT_WRITEABLE ||
         reason == LWS_CALLBACK_CLIENT_ESTABLISHED)) {
        c->close_on_return = false;
        ret = -1;
    }
    return ret;
}

static void tf__connect(tf_conn_t *c)
{
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    c->attempt++;
    c->in_attempt = true;
    c->opened = false;
    c->closing = false;
    c->close_on_return = false;
    c->sock_errno = 0;
    c->wsi = NULL;
    const tf__target_t *t = &c->targets[c->cur];
    c->url = t->url;
    tf__set_state(c, TF_CONN_CONNECTING, "connect");
    tf_info("conn", "connecting to %s (attempt %llu)", c->url,
            (unsigned long long)c->attempt);
    ci.context = c->ctx;
    ci.address = t->m->host;
    ci.port = t->m->port;
    ci.path = t->m->path;
    ci.host = t->host_hdr;
    ci.origin = t->host_hdr;
    ci.protocol = TF_PROTO_SUBPROTOCOL;
    ci.ssl_connection = t->m->tls ? LCCSCF_USE_SSL : 0;
    ci.userdata = c;
    ci.pwsi = &c->wsi;
    /* Arm the watchdog before connecting so a handshake that hangs past
     * lws's own timeouts still ends. */
    uv_timer_start(&c->watchdog, tf__watchdog_cb, TF_CONN_HANDSHAKE_TIMEOUT_MS,
                   0);
    struct lws *w = lws_client_connect_via_info(&ci);
    if (!w && c->in_attempt) {
        char msg[1024];
        /* lws resolves names synchronously and gives no reason when that
         * fails, which is by far the usual cause here. */
        snprintf(msg, sizeof msg, "connecting to %s failed: cannot start the "
                 "connection (does the host name %s resolve?)", c->url,
                 t->m->host);
        tf__attempt_over(c, msg);
    }
}

/* ---- lws log routing --------------------------------------------------- */

static void tf__lws_log(int level, const char *line)
{
    char buf[512];
    /* lws prefixes "[date time] X: " and ends with '\n': keep the rest. */
    const char *p = strstr(line, "] ");
    p = p ? p + 2 : line;
    snprintf(buf, sizeof buf, "%s", p);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    if (level & LLL_ERR)
        tf_warn("lws", "%s", buf);
    else if (level & LLL_WARN)
        tf_info("lws", "%s", buf);
    else
        tf_debug("lws", "%s", buf);
}

/* ---- public ----------------------------------------------------------- */

static const struct lws_protocols tf__protocols[] = {
    {
        .name = TF_PROTO_SUBPROTOCOL,
        .callback = tf__lws_cb,
        .per_session_data_size = 0,
        .rx_buffer_size = 65536,
        /* One send() per frame instead of rx_buffer_size pieces. */
        .tx_packet_size = TF_SPOOL_MAX_FRAME + 16,
    },
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

int tf_conn_new(uv_loop_t *loop, const tf_slave_config_t *cfg,
                const char *secret, const tf_conn_ops_t *ops, void *arg,
                tf_conn_t **out)
{
    struct lws_context_creation_info info;
    void *loops[1] = {loop};
    tf_conn_t *c = calloc(1, sizeof *c);

    *out = NULL;
    if (!c)
        return TF_ENOMEM;
    c->tx = malloc(LWS_PRE + TF_SPOOL_MAX_FRAME);
    if (!c->tx) {
        free(c);
        return TF_ENOMEM;
    }
    c->loop = loop;
    c->cfg = cfg;
    c->secret = secret;
    c->ops = *ops;
    c->arg = arg;
    c->state = TF_CONN_IDLE;
    c->rng = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
    c->targets = calloc(cfg->nmasters, sizeof *c->targets);
    if (!c->targets) {
        free(c->tx);
        free(c);
        return TF_ENOMEM;
    }
    c->ntargets = cfg->nmasters;
    for (size_t i = 0; i < cfg->nmasters; i++) {
        tf__target_t *t = &c->targets[i];
        const tf_slave_master_t *m = &cfg->masters[i];
        bool v6 = strchr(m->host, ':') != NULL;
        t->m = m;
        t->backoff_ms = cfg->backoff_min_ms;
        snprintf(t->host_hdr, sizeof t->host_hdr, "%s%s%s:%d",
                 v6 ? "[" : "", m->host, v6 ? "]" : "", m->port);
        snprintf(t->url, sizeof t->url, "%s://%s%.256s",
                 m->tls ? "wss" : "ws", t->host_hdr, m->path);
    }
    c->url = c->targets[0].url;
    tf_buf_init(&c->rx, TF_PROTO_MAX_TEXT);

    int lws_levels = LLL_ERR;
    if (tf_log_level() <= TF_LOG_DEBUG)
        lws_levels |= LLL_WARN | LLL_NOTICE;
    lws_set_log_level(lws_levels, tf__lws_log);

    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = tf__protocols;
    info.options = LWS_SERVER_OPTION_LIBUV;
    if (cfg->any_tls)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.client_ssl_ca_filepath = cfg->ca_file;
    info.foreign_loops = loops;
    info.pcontext = &c->ctx;
    info.gid = (gid_t)-1;
    info.uid = (uid_t)-1;
    info.connect_timeout_secs = 10;
    info.timeout_secs = 20;
    c->ctx = lws_create_context(&info);
    if (!c->ctx) {
        tf_error("conn", "cannot create the websocket context (is the package "
                 "libwebsockets-evlib-uv installed?%s)",
                 cfg->ca_file ? " is the CA file valid?" : "");
        tf_buf_free(&c->rx);
        free(c->targets);
        free(c->tx);
        free(c);
        return TF_EIO;
    }
    uv_timer_init(loop, &c->retry_timer);
    uv_timer_init(loop, &c->watchdog);
    uv_timer_init(loop, &c->shutdown_timer);
    c->retry_timer.data = c->watchdog.data = c->shutdown_timer.data = c;
    c->open_handles = 3;
    *out = c;
    return 0;
}

void tf_conn_start(tf_conn_t *c)
{
    if (c->state == TF_CONN_IDLE)
        tf__connect(c);
}

void tf_conn_kick(tf_conn_t *c)
{
    if (c->state == TF_CONN_READY && c->wsi)
        lws_callback_on_writable(c->wsi);
}

void tf_conn_set_draining(tf_conn_t *c)
{
    if (c->draining)
        return;
    c->draining = true;
    if (c->state == TF_CONN_READY) {
        tf_msg_t d = {.type = TF_MSG_DRAIN};
        tf__send_msg(c, &d);
    }
}

bool tf_conn_ready(const tf_conn_t *c)
{
    return c->state == TF_CONN_READY;
}

typedef struct {
    tf_conn_t *c;
    size_t n;
} tf__walk_t;

/* Counts handles on the loop that are neither ours nor the caller's: what
 * lws still has open. */
static void tf__count_foreign(uv_handle_t *h, void *arg)
{
    tf__walk_t *w = arg;
    tf_conn_t *c = w->c;
    if (h == (uv_handle_t *)&c->shutdown_timer ||
        h == (uv_handle_t *)&c->retry_timer || h == (uv_handle_t *)&c->watchdog)
        return;
    if (c->ops.is_ours_cb && c->ops.is_ours_cb(c->arg, h))
        return;
    w->n++;
}

static void tf__handle_closed_cb(uv_handle_t *h)
{
    tf_conn_t *c = h->data;
    if (--c->open_handles == 0 && c->done_cb)
        c->done_cb(c->done_arg);
}

static void tf__shutdown_tick(uv_timer_t *t)
{
    tf_conn_t *c = t->data;
    int64_t waited = tf_mono_ms() - c->shutdown_start;

    if (c->shutdown_phase == 0) {
        /* Let the close frame go out, then take lws down. */
        if (c->in_attempt && waited < TF__CLOSE_WAIT_MS)
            return;
        c->in_attempt = false;
        c->wsi = NULL;
        c->shutdown_phase = 1;
        lws_context_destroy(c->ctx);
        c->shutdown_start = tf_mono_ms();
        return;
    }
    if (c->shutdown_phase == 1) {
        /* A foreign loop needs two destroys: the first closes sockets and
         * lws's handles, the second (from our code, once those handles are
         * gone) frees the context. */
        tf__walk_t acc = {c, 0};
        uv_walk(c->loop, tf__count_foreign, &acc);
        if (acc.n && waited < TF__SHUTDOWN_MAX_MS)
            return;
        if (acc.n)
            tf_warn("conn", "%zu libwebsockets handles still open after %d "
                    "ms: destroying the context anyway", acc.n,
                    TF__SHUTDOWN_MAX_MS);
        if (c->ctx)
            lws_context_destroy(c->ctx);
        c->ctx = NULL;
        c->shutdown_phase = 2;
        uv_close((uv_handle_t *)&c->retry_timer, tf__handle_closed_cb);
        uv_close((uv_handle_t *)&c->watchdog, tf__handle_closed_cb);
        uv_close((uv_handle_t *)&c->shutdown_timer, tf__handle_closed_cb);
    }
}

void tf_conn_shutdown(tf_conn_t *c, void (*done_cb)(void *arg), void *arg)
{
    if (c->shutdown_phase || c->done_cb)
        return;
    c->done_cb = done_cb;
    c->done_arg = arg;
    tf__set_state(c, TF_CONN_STOPPED, "shutdown");
    uv_timer_stop(&c->retry_timer);
    uv_timer_stop(&c->watchdog);
    tf__ctrl_clear(c);
    if (c->in_attempt && c->wsi && !c->opened) {
        /* Not a websocket yet: nothing to say goodbye with (and lws asserts
         * on a close reason for a wsi without the ws role). */
        if (c->in_cb)
            c->close_on_return = true;
        else
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
    } else if (c->in_attempt && c->wsi) {
        tf_info("conn", "closing the link to %s", c->url);
        /* With a close reason set, lws sends the close frame and waits
         * for the master's answer (or its close timeout); SYNC because
         * ASYNC would wait for socket activity that may never come. */
        lws_close_reason(c->wsi, LWS_CLOSE_STATUS_GOINGAWAY,
                         (unsigned char *)(uintptr_t)"slave stopping", 14);
        if (c->in_cb)
            c->close_on_return = true;
        else
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
    }
    c->shutdown_start = tf_mono_ms();
    uv_timer_start(&c->shutdown_timer, tf__shutdown_tick, TF__SHUTDOWN_POLL_MS,
                   TF__SHUTDOWN_POLL_MS);
}

void tf_conn_free(tf_conn_t *c)
{
    if (!c)
        return;
    tf__ctrl_clear(c);
    tf_buf_free(&c->rx);
    free(c->targets);
    free(c->tx);
    free(c);
}

const tf_slave_master_t *tf_conn_master(const tf_conn_t *c)
{
    return c->targets[c->cur].m;
}
