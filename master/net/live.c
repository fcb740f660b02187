/*
 * live.c - the live feed (see live.h).
 *
 * One struct per viewer connection with its topics and a send queue. An
 * event is rendered once into a reference-counted message shared by every
 * subscriber's queue, so a hundred viewers of one log hold one copy of
 * it, not a hundred.
 *
 * Memory has two caps:
 *  - per viewer, LIVE_QUEUE_MAX bytes of queued messages: past it the
 *    viewer's queued log events are dropped and it is told which topics
 *    to refetch ("overflow"); a viewer that has not even read that notice
 *    when it passes the cap again is not reading at all, and is dropped
 *    (closed with code 4001, "too slow, reload");
 *  - for all viewers together, LIVE_BUDGET bytes of messages alive: past
 *    it the viewer holding the most is dropped at once, its queue freed,
 *    and closed with code 4001 and the reason "too slow, reload", which a
 *    page can show. That repeats until the total fits.
 * After viewers leave, what glibc kept of their messages is returned to
 * the system (malloc_trim) once the feed is quiet, so the master's
 * resident size comes back down.
 *
 * Several masters (store.shared): the builds, requests and slaves events
 * cross masters through the database (publish, tf_live_relay); a step's
 * output does not (it would be a NOTIFY per chunk). A subscriber of
 * log:B:S here, for a build this master does not run, is fed from what
 * the owner stores instead: one "tail" per (build, step) followed,
 * shared by all its subscribers here, reads the stored bytes past the
 * last it sent each time another master commits (TF_FARM_COMMIT, which
 * every batch of their writers sends), off the loop on the store's
 * readers (api/follow.c), and sends them as ordinary log events at
 * their offsets. At
 * most one read per tail is in flight (a commit meanwhile asks for one
 * more); a tail ends when the step can grow no more and everything
 * stored was sent, when no subscriber is left, or when the build comes
 * to run here (its output then comes as this master applies it). The
 * first read of a tail only learns the stored size: like a local
 * subscriber, a new one gets the output that comes after it subscribed
 * (all of it when the step did not exist yet), and fetches the rest by
 * range. A tail more than LIVE_QUEUE_MAX bytes behind skips to the end
 * and tells its subscribers "overflow", as a local viewer would be. The
 * step's "done" event, relayed ahead of the owner's commit of its last
 * output, is held in the tail until that output was sent (tail_hold).
 *
 * One lws_write per WRITEABLE callback, like the slave links. A close
 * frame is written by us (the notes on this lws build: one started from
 * WRITEABLE with lws_close_reason is lost), and a viewer that does not
 * even read that is cut off by an lws timeout.
 */
#include "net/live.h"

#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base64.h"
#include "buf.h"
#include "clock.h"
#include "log.h"
#include "api/follow.h"
#include "net/net.h"
#include "tf_err.h"

#define LIVE_QUEUE_MAX (4u * 1024 * 1024)
#define LIVE_BUDGET (64u * 1024 * 1024)
#define LIVE_RX_MAX (64 * 1024)
#define LIVE_MAX_TOPICS 64
#define LIVE_TOPIC_MAX 48
#define LIVE_CLOSE_TOO_SLOW 4001
#define LIVE_TOO_SLOW "too slow, reload"
#define LIVE_DROP_S 20
/* Give memory back once this much was freed since the last time. */
#define LIVE_TRIM_AFTER (8u * 1024 * 1024)
/* Following another master's steps (store.shared): steps followed at
 * once, "offset not known yet", events held per step. */
#define TAIL_MAX 1024
#define TAIL_BASE TF_API_FOLLOW_SIZE
#define TAIL_HOLD_MAX 8

/* One rendered event, shared by the queues holding it. */
typedef struct live_msg {
    unsigned refs;
    bool is_log;
    bool is_overflow; /* an "overflow" notice */
    char topic[LIVE_TOPIC_MAX];
    size_t len;
    unsigned char data[]; /* LWS_PRE + len */
} live_msg_t;

typedef struct live_item {
    tf_list_t node;
    live_msg_t *msg;
} live_item_t;

typedef struct live_conn {
    tf_list_t node; /* m->live_conns */
    tf_master_t *m;
    struct lws *wsi;
    char topics[LIVE_MAX_TOPICS][LIVE_TOPIC_MAX];
    size_t ntopics;
    tf_list_t queue;  /* live_item_t */
    size_t queued;    /* bytes of the messages it holds */
    unsigned overflows; /* "overflow" notices queued, not yet written */
    tf_buf_t rx;
    int close_code;   /* 0, or the code of the close frame to write */
    char close_reason[64];
    bool close_sent;
} live_conn_t;

typedef struct live_pss {
    live_conn_t *c;
} live_pss_t;

/* Bytes freed since memory was last returned to the system. */
static size_t freed_since_trim;

static bool has_topic(const live_conn_t *c, const char *topic)
{
    for (size_t i = 0; i < c->ntopics; i++)
        if (strcmp(c->topics[i], topic) == 0)
            return true;
    return false;
}

static bool anyone(tf_master_t *m, const char *topic)
{
    tf_list_t *it;
    tf_list_foreach(it, &m->live_conns)
    {
        live_conn_t *c = tf_list_entry(it, live_conn_t, node);
        if (!c->close_code && has_topic(c, topic))
            return true;
    }
    return false;
}

static live_msg_t *msg_new(tf_master_t *m, const char *text, size_t len,
                           bool is_log, const char *topic)
{
    live_msg_t *g = malloc(sizeof(*g) + LWS_PRE + len);
    if (!g)
        return NULL;
    g->refs = 0;
    g->is_log = is_log;
    g->is_overflow = false;
    snprintf(g->topic, sizeof(g->topic), "%s", topic ? topic : "");
    g->len = len;
    memcpy(g->data + LWS_PRE, text, len);
    m->net_stats.live_bytes += len;
    return g;
}

static void msg_unref(tf_master_t *m, live_msg_t *g)
{
    if (g && --g->refs == 0) {
        m->net_stats.live_bytes -= g->len;
        freed_since_trim += g->len;
        free(g);
    }
}

/* Unlinks and frees one queued item (and its message on its last use). */
static void item_drop(live_conn_t *c, live_item_t *it)
{
    if (it->msg->is_overflow)
        c->overflows--;
    tf_list_unlink(&it->node);
    c->queued -= it->msg->len;
    msg_unref(c->m, it->msg);
    free(it);
}

static void queue_clear(live_conn_t *c)
{
    tf_list_t *it, *tmp;
    tf_list_foreach_safe(it, tmp, &c->queue)
    {
        item_drop(c, tf_list_entry(it, live_item_t, node));
    }
}

static void add_topic_once(json_t *list, const char *topic)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        if (strcmp(json_string_value(v), topic) == 0)
            return;
    }
    json_array_append_new(list, json_string(topic));
}

/* Drops queued log messages, listing their topics into dropped. */
static void drop_logs(live_conn_t *c, json_t *dropped)
{
    tf_list_t *it, *tmp;
    tf_list_foreach_safe(it, tmp, &c->queue)
    {
        live_item_t *q = tf_list_entry(it, live_item_t, node);
        if (!q->msg->is_log)
            continue;
        add_topic_once(dropped, q->msg->topic);
        item_drop(c, q);
    }
}

static bool push(live_conn_t *c, live_msg_t *g)
{
    live_item_t *q = malloc(sizeof(*q));
    if (!q)
        return false;
    q->msg = g;
    g->refs++;
    tf_list_push_back(&c->queue, &q->node);
    c->queued += g->len;
    if (c->wsi)
        lws_callback_on_writable(c->wsi);
    return true;
}

/* Drops viewer c now: its queue is freed at once, and it is closed with a
 * reason it can show. */
static void viewer_drop(live_conn_t *c, int code, const char *reason)
{
    if (c->close_code)
        return;
    c->close_code = code;
    snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
    queue_clear(c);
    tf_buf_free(&c->rx);
    if (c->wsi) {
        /* The close frame goes out once the viewer has read what its
         * socket already holds; one that reads nothing loses the socket
         * after LIVE_DROP_S regardless (its memory is freed already). */
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, LIVE_DROP_S);
        lws_callback_on_writable(c->wsi);
    }
}

static void enqueue_text(live_conn_t *c, const char *text, size_t len,
                         bool overflow)
{
    if (c->close_code)
        return;
    live_msg_t *g = msg_new(c->m, text, len, false, NULL);
    if (!g)
        return;
    g->refs = 1;
    g->is_overflow = overflow;
    if (push(c, g) && overflow)
        c->overflows++;
    msg_unref(c->m, g);
}

static void enqueue_json(live_conn_t *c, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    if (text) {
        enqueue_text(c, text, strlen(text), false);
        free(text);
    }
}

/* Queues shared message g for viewer c, keeping c within its own cap. */
static void enqueue(live_conn_t *c, live_msg_t *g)
{
    if (c->close_code)
        return;
    if (c->queued + g->len > LIVE_QUEUE_MAX) {
        if (c->overflows) {
            /* It has not read the last notice: it reads nothing. */
            tf__net_warn("live", "a live viewer is not reading: dropping it");
            c->m->net_stats.live_dropped++;
            viewer_drop(c, LIVE_CLOSE_TOO_SLOW, LIVE_TOO_SLOW);
            return;
        }
        json_t *dropped = json_array();
        drop_logs(c, dropped);
        if (g->is_log)
            add_topic_once(dropped, g->topic);
        json_t *o = json_pack("{s:s,s:o}", "type", "overflow", "topics",
                              dropped);
        char *text = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (text) {
            enqueue_text(c, text, strlen(text), true);
            free(text);
        }
        if (g->is_log)
            return; /* this one is dropped too: the viewer refetches */
        if (c->queued + g->len > LIVE_QUEUE_MAX) {
            /* Only control events left and still too much. */
            tf_warn("live", "a live viewer is not reading: closing it");
            c->m->net_stats.live_dropped++;
            viewer_drop(c, LIVE_CLOSE_TOO_SLOW, LIVE_TOO_SLOW);
            return;
        }
    }
    push(c, g);
}

/* Over the global budget: drops the viewers holding the most until the
 * messages alive fit again. */
static void enforce_budget(tf_master_t *m)
{
    while (m->net_stats.live_bytes > LIVE_BUDGET) {
        live_conn_t *worst = NULL;
        tf_list_t *it;
        tf_list_foreach(it, &m->live_conns)
        {
            live_conn_t *c = tf_list_entry(it, live_conn_t, node);
            if (!c->close_code && (!worst || c->queued > worst->queued))
                worst = c;
        }
        if (!worst || worst->queued == 0)
            return;
        char peer[64] = "?";
        if (worst->wsi)
            lws_get_peer_simple(worst->wsi, peer, sizeof(peer));
        tf__net_warn("live", "live viewers hold %zu bytes (budget %u): dropping "
                "the slowest, %s, with %zu bytes queued",
                m->net_stats.live_bytes, LIVE_BUDGET, peer, worst->queued);
        m->net_stats.live_dropped++;
        viewer_drop(worst, LIVE_CLOSE_TOO_SLOW, LIVE_TOO_SLOW);
    }
}

/* Sends text to every subscriber of topic here. */
static void fan_out(tf_master_t *m, const char *topic, const char *text,
                    bool is_log)
{
    live_msg_t *g = msg_new(m, text, strlen(text), is_log, topic);
    if (!g)
        return;
    g->refs = 1; /* ours while fanning out */
    tf_list_t *it;
    tf_list_foreach(it, &m->live_conns)
    {
        live_conn_t *c = tf_list_entry(it, live_conn_t, node);
        if (has_topic(c, topic))
            enqueue(c, g);
    }
    msg_unref(m, g);
    enforce_budget(m);
}

/* Sends j (consumed) to every subscriber of topic; several masters
 * (store.shared): to the other masters' subscribers too, except logs
 * (a log is read from the database, where the other master stores it). */
static void publish(tf_master_t *m, const char *topic, json_t *j, bool is_log)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return;
    fan_out(m, topic, text, is_log);
    if (!is_log && m->store && tf_store_is_shared(m->store))
        tf_store_farm_send(m->store, topic, text);
    free(text);
}

static bool tail_hold(tf_master_t *m, const char *text);

void tf_live_relay(tf_master_t *m, const char *topic, const char *text)
{
    if (strcmp(topic, "builds") != 0 && strcmp(topic, "requests") != 0 &&
        strcmp(topic, "slaves") != 0)
        return;
    if (strcmp(topic, "builds") == 0 && tail_hold(m, text))
        return;
    if (anyone(m, topic))
        fan_out(m, topic, text, false);
}

/* An event is rendered when someone here wants it, or when other
 * masters may (they relay it to theirs). */
static bool wanted(tf_master_t *m, const char *topic)
{
    return anyone(m, topic) || (m->store && tf_store_is_shared(m->store));
}

void tf__live_sweep(tf_master_t *m)
{
    /* Give back what glibc keeps of freed messages, once enough was freed
     * and the queues are nearly empty (malloc_trim walks the heap). */
    if (freed_since_trim >= LIVE_TRIM_AFTER &&
        m->net_stats.live_bytes < LIVE_TRIM_AFTER) {
        freed_since_trim = 0;
        malloc_trim(0);
    }
}

/* --- events --- */

static json_t *opt_ms(int64_t ms)
{
    return ms ? json_integer(ms) : json_null();
}

void tf_live_build(tf_master_t *m, const tf_build_t *b, const char *event,
                   int result)
{
    if (!wanted(m, "builds"))
        return;
    bool finished = strcmp(event, "finished") == 0;
    json_t *o = json_pack("{s:I,s:s,s:I,s:s,s:s}", "id", (json_int_t)b->id,
                          "builder", b->builder, "number",
                          (json_int_t)b->number, "slave", b->slave, "state",
                          finished ? "finished"
                          : b->started_ms ? "running"
                                          : "starting");
    json_object_set_new(o, "result",
                        finished ? json_string(tf_result_name(
                                       (tf_result_t)result))
                                 : json_null());
    json_object_set_new(o, "kind", json_string(b->is_try ? "try" : "ci"));
    /* What a page needs to draw a box created live without a reload. */
    const tf_request_t *r = b->request;
    json_object_set_new(o, "request_id",
                        r ? json_integer((json_int_t)r->id) : json_null());
    json_object_set_new(o, "reason", r && r->reason ? json_string(r->reason)
                                                    : json_null());
    json_object_set_new(o, "owner", r && r->owner && r->owner[0]
                                        ? json_string(r->owner)
                                        : json_null());
    json_object_set_new(o, "created_ms", json_integer(b->created_ms));
    json_object_set_new(o, "started_ms", opt_ms(b->started_ms));
    json_object_set_new(o, "finished_ms",
                        finished ? json_integer(tf_now_ms()) : json_null());
    publish(m, "builds",
            json_pack("{s:s,s:s,s:o}", "type", "build", "event", event,
                      "build", o),
            false);
}

void tf_live_step(tf_master_t *m, const tf_build_t *b, unsigned step,
                  const char *text)
{
    if (step >= b->nsteps || !wanted(m, "builds"))
        return;
    const tf_bstep_t *st = &b->steps[step];
    json_t *o = json_pack("{s:i,s:s,s:s}", "index", (int)step, "name",
                          st->name, "state",
                          st->finished  ? "done"
                          : st->started ? "running"
                                        : "pending");
    json_object_set_new(o, "result",
                        st->finished ? json_string(tf_result_name(st->result))
                                     : json_null());
    json_object_set_new(o, "started_ms", opt_ms(st->started_ms));
    json_object_set_new(o, "finished_ms", opt_ms(st->finished_ms));
    /* The slave's own measure, as the API's steps give it, so a tool
     * prints the same duration from the feed as from the API. */
    json_object_set_new(o, "duration_ms", st->finished
                                              ? json_integer(st->duration_ms)
                                              : json_null());
    json_object_set_new(o, "text", text ? json_string(text) : json_null());
    publish(m, "builds",
            json_pack("{s:s,s:I,s:s,s:I,s:o}", "type", "step", "build_id",
                      (json_int_t)b->id, "builder", b->builder, "number",
                      (json_int_t)b->number, "step", o),
            false);
}

void tf_live_slave(tf_master_t *m, const tf_mslave_t *s, const char *event)
{
    if (!wanted(m, "slaves"))
        return;
    json_t *o = json_pack("{s:s,s:b,s:s,s:s}", "name", s->name, "connected",
                          s->link != NULL, "platform", s->platform, "version",
                          s->version);
    publish(m, "slaves",
            json_pack("{s:s,s:s,s:o}", "type", "slave", "event", event,
                      "slave", o),
            false);
}

void tf_live_request(tf_master_t *m, const tf_request_t *r, const char *event)
{
    if (!wanted(m, "requests"))
        return;
    unsigned pos = tf_sched_position(m, r);
    json_t *o = json_pack("{s:I,s:s,s:s,s:s?,s:s?}", "id", (json_int_t)r->id,
                          "builder", r->builder, "state",
                          strcmp(event, "cancelled") == 0 ? "cancelled"
                          : r->state == TF_REQ_PENDING    ? "pending"
                                                          : "running",
                          "owner", r->owner, "reason", r->reason);
    json_object_set_new(o, "position", pos ? json_integer(pos) : json_null());
    publish(m, "requests",
            json_pack("{s:s,s:s,s:o}", "type", "request", "event", event,
                      "request", o),
            false);
}

void tf_live_log(tf_master_t *m, uint64_t build_id, unsigned step,
                 uint64_t offset, const uint8_t *data, size_t len)
{
    char topic[LIVE_TOPIC_MAX];
    snprintf(topic, sizeof(topic), "log:%" PRIu64 ":%u", build_id, step);
    if (!anyone(m, topic))
        return;
    char *b64 = malloc(tf_base64_encoded_len(len));
    if (!b64)
        return;
    tf_base64_encode(data, len, b64);
    json_t *o = json_pack("{s:s,s:I,s:i,s:I,s:s}", "type", "log", "build_id",
                          (json_int_t)build_id, "step", (int)step, "offset",
                          (json_int_t)offset, "data", b64);
    free(b64);
    publish(m, topic, o, true);
}

/* --- following another master's step (store.shared) --- */

typedef struct live_tail {
    tf_list_t node; /* m->live_tails */
    tf_master_t *m;
    uint64_t build_id;
    unsigned step;
    char topic[LIVE_TOPIC_MAX];
    uint64_t offset; /* the next byte to send; TAIL_BASE before the first
                      * read came back */
    bool reading;    /* its one read is in flight */
    bool again;      /* another commit came meanwhile: read once more */
    bool gone;       /* ended while reading: freed when the read is back */
    /* The step's "done" event, relayed ahead of its last output, and
     * the build's events relayed after it: sent when the tail ends. */
    char *held[TAIL_HOLD_MAX];
    unsigned nheld;
} live_tail_t;

/* Sends the events t holds back, in order, to the builds subscribers. */
static void tail_release(live_tail_t *t)
{
    bool send = !t->m->stopping && anyone(t->m, "builds");
    for (unsigned i = 0; i < t->nheld; i++) {
        if (send)
            fan_out(t->m, "builds", t->held[i], false);
        free(t->held[i]);
    }
    t->nheld = 0;
}

static void tail_free(live_tail_t *t)
{
    tf_list_unlink(&t->node);
    t->m->net_stats.live_followed--;
    tail_release(t);
    free(t);
}

/* Ends tail t now, or once its read is back. */
static void tail_end(live_tail_t *t)
{
    if (t->reading)
        t->gone = true;
    else
        tail_free(t);
}

static live_tail_t *tail_find(tf_master_t *m, const char *topic)
{
    tf_list_t *it;
    tf_list_foreach(it, &m->live_tails)
    {
        live_tail_t *t = tf_list_entry(it, live_tail_t, node);
        if (!t->gone && strcmp(t->topic, topic) == 0)
            return t;
    }
    return NULL;
}

static bool runs_here(tf_master_t *m, uint64_t build_id)
{
    return m->builds && tf_map_get_id(m->builds, build_id) != NULL;
}

static void tail_read_done(void *arg, int rc);

/* Starts t's read, or asks for one more after the one in flight. The
 * read (api/follow.c) runs on a store reader with its own
 * tf_api_follow_t, whose ctx is t: that thread never touches t. */
static void tail_read(live_tail_t *t)
{
    tf_master_t *m = t->m;
    if (t->reading) {
        t->again = true;
        return;
    }
    if (m->stopping || !m->store)
        return;
    tf_api_follow_t *r = malloc(sizeof(*r));
    if (!r)
        return; /* the next commit tries again */
    r->ctx = t;
    r->build_id = t->build_id;
    r->step = t->step;
    r->from = t->offset;
    t->again = false;
    if (tf_api_follow_read(m, r, tail_read_done) != 0) {
        free(r);
        return;
    }
    t->reading = true;
    m->net_stats.live_follow_reads++;
}

/* Tells t's subscribers to refetch its log by range. */
static void tail_overflow(live_tail_t *t)
{
    char text[LIVE_TOPIC_MAX + 48];
    int n = snprintf(text, sizeof(text),
                     "{\"type\":\"overflow\",\"topics\":[\"%s\"]}", t->topic);
    if (n <= 0 || (size_t)n >= sizeof(text))
        return;
    tf_list_t *it;
    tf_list_foreach(it, &t->m->live_conns)
    {
        live_conn_t *c = tf_list_entry(it, live_conn_t, node);
        if (has_topic(c, t->topic))
            enqueue_text(c, text, (size_t)n, true);
    }
}

static void tail_read_done(void *arg, int rc)
{
    tf_api_follow_t *r = arg;
    live_tail_t *t = r->ctx;
    tf_master_t *m = t->m;
    bool again = t->again;

    t->reading = false;
    t->again = false;
    if (t->gone || m->stopping || runs_here(m, t->build_id) ||
        !anyone(m, t->topic)) {
        tail_free(t);
        goto out;
    }
    if (rc == TF_ENOENT) {
        /* Not stored yet (a build created elsewhere commits its steps a
         * moment later): every byte it will have is new here. */
        if (t->offset == TAIL_BASE)
            t->offset = 0;
        tail_release(t); /* no output of it is stored to wait for */
        if (again)
            tail_read(t);
        goto out;
    }
    if (rc && rc != TF_ECORRUPT) {
        tail_release(t); /* not held for as long as the database is away */
        goto out;        /* the next commit tries again */
    }
    if (t->offset == TAIL_BASE) {
        t->offset = r->size; /* the first read: what follows is new */
    } else if (r->got) {
        tf_live_log(m, t->build_id, t->step, r->from, r->buf, r->got);
        t->offset += r->got;
    }
    if (rc == TF_ECORRUPT || r->size > t->offset + LIVE_QUEUE_MAX) {
        /* A damaged block, or too far behind to be worth sending: the
         * subscribers fetch by range what they want of it. */
        tail_overflow(t);
        t->offset = r->size;
    }
    if (r->ended && t->offset >= r->size) {
        tail_free(t); /* the step has ended and all of it was sent */
        goto out;
    }
    if (t->offset < r->size || again)
        tail_read(t);
out:
    free(r);
}

/* A viewer here subscribed to topic: follows it from the database when
 * it is a log of a build that runs on another master. */
static void tail_follow(tf_master_t *m, const char *topic)
{
    uint64_t b = 0;
    unsigned s = 0;
    if (!m->store || !tf_store_is_shared(m->store) ||
        sscanf(topic, "log:%" SCNu64 ":%u", &b, &s) != 2 || runs_here(m, b) ||
        tail_find(m, topic))
        return;
    if (m->net_stats.live_followed >= TAIL_MAX) {
        tf__net_warn("live", "%u logs of other masters' builds are followed "
                     "already: %s gets no output until one ends",
                     m->net_stats.live_followed, topic);
        return;
    }
    live_tail_t *t = calloc(1, sizeof(*t));
    if (!t)
        return;
    t->m = m;
    t->build_id = b;
    t->step = s;
    t->offset = TAIL_BASE;
    snprintf(t->topic, sizeof(t->topic), "%s", topic);
    tf_list_push_back(&m->live_tails, &t->node);
    m->net_stats.live_followed++;
    tail_read(t);
}

/* Ends the tails nobody here subscribes to any more. */
static void tails_gc(tf_master_t *m)
{
    tf_list_t *it, *tmp;
    tf_list_foreach_safe(it, tmp, &m->live_tails)
    {
        live_tail_t *t = tf_list_entry(it, live_tail_t, node);
        if (!t->gone && !anyone(m, t->topic))
            tail_end(t);
    }
}

/* The tail of (build b, step st), or with st < 0 any tail of build b
 * that holds events. */
static live_tail_t *tail_of(tf_master_t *m, uint64_t b, json_int_t st)
{
    tf_list_t *it;
    tf_list_foreach(it, &m->live_tails)
    {
        live_tail_t *t = tf_list_entry(it, live_tail_t, node);
        if (!t->gone && t->build_id == b &&
            (st < 0 ? t->nheld > 0 : t->step == (unsigned)st))
            return t;
    }
    return NULL;
}

static unsigned tails_holding(tf_master_t *m)
{
    unsigned n = 0;
    tf_list_t *it;
    tf_list_foreach(it, &m->live_tails)
    {
        n += tf_list_entry(it, live_tail_t, node)->nheld > 0;
    }
    return n;
}

/* A step's "done" event relayed from the master running it goes out
 * before that master commits the step's last output: where a tail
 * follows that step here, the event waits in it, with the events of that
 * build relayed after it (its end), until the tail has sent everything
 * (it ends then), so viewers here get the output, then the step's end,
 * then the build's, in the order a local viewer does. True when text
 * was held. */
static bool tail_hold(tf_master_t *m, const char *text)
{
    bool step_done = strstr(text, "\"type\":\"step\"") &&
                     strstr(text, "\"state\":\"done\"");
    if (!m->net_stats.live_followed || (!step_done && !tails_holding(m)))
        return false;
    json_t *j = json_loads(text, 0, NULL);
    const char *type = json_string_value(json_object_get(j, "type"));
    json_t *jb = json_object_get(j, "build");
    json_t *js = json_object_get(j, "step");
    json_int_t b = 0, st = -1;
    const char *state = NULL;
    if (type && strcmp(type, "step") == 0) {
        b = json_integer_value(json_object_get(j, "build_id"));
        st = json_integer_value(json_object_get(js, "index"));
        state = json_string_value(json_object_get(js, "state"));
    } else if (type && strcmp(type, "build") == 0) {
        b = json_integer_value(json_object_get(jb, "id"));
    }
    live_tail_t *t = NULL;
    if (b > 0 && state && strcmp(state, "done") == 0 && st >= 0)
        t = tail_of(m, (uint64_t)b, st);
    if (!t && b > 0)
        t = tail_of(m, (uint64_t)b, -1);
    json_decref(j);
    if (!t)
        return false;
    if (t->nheld == TAIL_HOLD_MAX) {
        tail_release(t); /* not for ever: these go now, in order */
        return false;
    }
    char *copy = strdup(text);
    if (!copy)
        return false;
    t->held[t->nheld++] = copy;
    tail_read(t);
    return true;
}

void tf_live_stored(tf_master_t *m)
{
    tf_list_t *it, *tmp;
    tf_list_foreach_safe(it, tmp, &m->live_tails)
    {
        live_tail_t *t = tf_list_entry(it, live_tail_t, node);
        if (t->gone)
            continue;
        if (runs_here(m, t->build_id))
            tail_end(t);
        else
            tail_read(t);
    }
}

/* --- connections --- */

static bool topic_valid(const char *t)
{
    if (strcmp(t, "builds") == 0 || strcmp(t, "slaves") == 0 ||
        strcmp(t, "requests") == 0)
        return true;
    uint64_t b = 0;
    unsigned s = 0;
    char rest;
    return strlen(t) < LIVE_TOPIC_MAX &&
           sscanf(t, "log:%" SCNu64 ":%u%c", &b, &s, &rest) == 2 && b > 0 &&
           s < TF_PROTO_MAX_STEPS;
}

static void reply_error(live_conn_t *c, const char *msg)
{
    json_t *o = json_pack("{s:s,s:s}", "type", "error", "message", msg);
    enqueue_json(c, o);
    json_decref(o);
}

static void handle(live_conn_t *c, const char *text, size_t len)
{
    json_error_t e;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
    json_t *sub = json_object_get(o, "subscribe");
    json_t *unsub = json_object_get(o, "unsubscribe");
    if (!json_is_object(o) || (!json_is_array(sub) && !json_is_array(unsub))) {
        reply_error(c, "expected {\"subscribe\": [topics]} or "
                       "{\"unsubscribe\": [topics]}");
        json_decref(o);
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach(sub, i, v)
    {
        const char *t = json_string_value(v);
        if (!t || !topic_valid(t)) {
            char msg[200];
            snprintf(msg, sizeof(msg), "unknown topic \"%.60s\": use builds, "
                     "slaves, requests or log:BUILD_ID:STEP",
                     t ? t : "(not a string)");
            reply_error(c, msg);
            json_decref(o);
            return;
        }
    }
    /* All or nothing: a subscription that would pass the cap adds none. */
    size_t adding = 0;
    json_array_foreach(sub, i, v)
    {
        const char *t = json_string_value(v);
        bool dup = has_topic(c, t);
        for (size_t k = 0; !dup && k < i; k++)
            dup = strcmp(json_string_value(json_array_get(sub, k)), t) == 0;
        adding += !dup;
    }
    if (c->ntopics + adding > LIVE_MAX_TOPICS) {
        reply_error(c, "at most 64 topics per connection: unsubscribe some "
                       "first");
        json_decref(o);
        return;
    }
    json_array_foreach(sub, i, v)
    {
        const char *t = json_string_value(v);
        if (!has_topic(c, t)) {
            snprintf(c->topics[c->ntopics++], LIVE_TOPIC_MAX, "%s", t);
            tail_follow(c->m, t);
        }
    }
    json_array_foreach(unsub, i, v)
    {
        const char *t = json_string_value(v);
        for (size_t k = 0; t && k < c->ntopics; k++) {
            if (strcmp(c->topics[k], t) == 0) {
                memmove(&c->topics[k], &c->topics[k + 1],
                        (c->ntopics - k - 1) * LIVE_TOPIC_MAX);
                c->ntopics--;
                break;
            }
        }
    }
    if (json_array_size(unsub))
        tails_gc(c->m);
    json_t *topics = json_array();
    for (size_t k = 0; k < c->ntopics; k++)
        json_array_append_new(topics, json_string(c->topics[k]));
    json_t *ans = json_pack("{s:s,s:o}", "type", "subscribed", "topics",
                            topics);
    enqueue_json(c, ans);
    json_decref(ans);
    json_decref(o);
}

static void conn_free(live_conn_t *c)
{
    tf_master_t *m = c->m;
    queue_clear(c);
    tf_buf_free(&c->rx);
    tf_list_unlink(&c->node);
    m->net_stats.live_viewers--;
    free(c);
    tails_gc(m);
}

static bool path_is_live(struct lws *wsi)
{
    char uri[32];
    return lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) > 0 &&
           strcmp(uri, TF_LIVE_PATH) == 0;
}

/* Viewers hold sockets without authenticating: at most half of what the
 * descriptor limit leaves after the reserve. */
static bool room_for_viewer(tf_master_t *m)
{
    unsigned limit = m->net_state ? m->net_state->fd_limit : 1024;
    unsigned max = limit > TF_NET_FD_RESERVE
                       ? (limit - TF_NET_FD_RESERVE) / 2
                       : 1;
    if (m->net_stats.live_viewers < max)
        return true;
    tf__net_warn("live", "refusing a live viewer: %u are connected (at most %u "
            "with a descriptor limit of %u)", m->net_stats.live_viewers,
            max, limit);
    return false;
}

/* Writes the close frame (code + reason) ourselves; 4 is LWS_WRITE_CLOSE
 * (see link.c for why). */
static int write_close(live_conn_t *c)
{
    unsigned char buf[LWS_PRE + 2 + sizeof(c->close_reason)];
    size_t n = strlen(c->close_reason);
    buf[LWS_PRE] = (unsigned char)(c->close_code >> 8);
    buf[LWS_PRE + 1] = (unsigned char)(c->close_code & 0xff);
    memcpy(buf + LWS_PRE + 2, c->close_reason, n);
    c->close_sent = true;
    if (lws_write(c->wsi, buf + LWS_PRE, n + 2, (enum lws_write_protocol)4) <
        0)
        return -1;
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, 2);
    return 0;
}

/* RFC 6455: a client's frames are masked (net/wsmask.c). */
static int unmasked(struct lws *wsi)
{
    tf__net_warn("live", "closing a live viewer that sent an unmasked "
                 "frame");
    lws_close_reason(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR,
                     (unsigned char *)"unmasked frame", 14);
    return -1;
}

int tf_live_callback(struct lws *wsi, enum lws_callback_reasons reason,
                     void *user, void *in, size_t len)
{
    live_pss_t *pss = user;
    tf_master_t *m = lws_context_user(lws_get_context(wsi));
    live_conn_t *c = pss ? pss->c : NULL;
    int rc = 0;
    if (tf__net_common(wsi, reason, in, &rc))
        return rc;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return (!path_is_live(wsi) || m->stopping || !room_for_viewer(m))
                   ? 1
                   : 0;
    case LWS_CALLBACK_ESTABLISHED:
        tf__net_register(wsi);
        if (tf__net_conn(wsi) && !tf__wsmask_upgraded(tf__net_conn(wsi)->fd))
            return unmasked(wsi);
        c = calloc(1, sizeof(*c));
        if (!c)
            return -1;
        c->m = m;
        c->wsi = wsi;
        tf_list_init(&c->queue);
        tf_buf_init(&c->rx, LIVE_RX_MAX);
        tf_list_push_back(&m->live_conns, &c->node);
        m->net_stats.live_viewers++;
        pss->c = c;
        tf__net_set_waiting(wsi, false);
        tf__net_preauth_release(wsi); /* a viewer: the live budget's */
        return 0;
    case LWS_CALLBACK_RECEIVE:
        if (!c)
            return -1;
        if (tf__net_unmasked(wsi))
            return unmasked(wsi);
        if (c->close_code)
            return 0;
        if (tf_buf_append(&c->rx, in, len) != 0) {
            tf_buf_reset(&c->rx);
            reply_error(c, "message over 64 KiB");
            return 0;
        }
        if (lws_is_final_fragment(wsi)) {
            if (!lws_frame_is_binary(wsi))
                handle(c, (const char *)c->rx.data, c->rx.len);
            tf_buf_reset(&c->rx);
        }
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        if (!c)
            return -1;
        if (tf_list_empty(&c->queue)) {
            if (c->close_code && !c->close_sent)
                return write_close(c);
            return 0;
        }
        live_item_t *q = tf_list_entry(c->queue.next, live_item_t, node);
        live_msg_t *g = q->msg;
        int n = lws_write(wsi, g->data + LWS_PRE, g->len, LWS_WRITE_TEXT);
        if (n < (int)g->len)
            return -1;
        item_drop(c, q);
        if (!tf_list_empty(&c->queue) || c->close_code)
            lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_CLOSED:
        if (c) {
            conn_free(c);
            pss->c = NULL;
        }
        return 0;
    default:
        return 0;
    }
}

void tf_live_close_all(tf_master_t *m)
{
    tf_list_t *it;
    tf_list_foreach(it, &m->live_conns)
    {
        live_conn_t *c = tf_list_entry(it, live_conn_t, node);
        if (c->close_code)
            continue;
        /* Whatever is queued goes out first, then the close frame. */
        c->close_code = LWS_CLOSE_STATUS_GOINGAWAY;
        snprintf(c->close_reason, sizeof(c->close_reason), "shutdown");
        if (c->wsi) {
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, 5);
            lws_callback_on_writable(c->wsi);
        }
    }
}
