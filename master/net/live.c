/*
 * live.c - the live feed (see live.h).
 *
 * One struct per viewer connection with its topics and a send queue capped
 * at 4 MiB. Control events are small and always queued; log events are what
 * can flood a slow viewer, so when the cap would be passed the queued log
 * events are dropped and the viewer is told which topics to refetch
 * ("overflow"), instead of the master's memory growing. One lws_write per
 * WRITEABLE callback, like the slave links.
 */
#include "net/live.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base64.h"
#include "buf.h"
#include "clock.h"
#include "log.h"
#include "tf_err.h"

#define LIVE_QUEUE_MAX (4u * 1024 * 1024)
#define LIVE_RX_MAX (64 * 1024)
#define LIVE_MAX_TOPICS 64
#define LIVE_TOPIC_MAX 48

typedef struct live_frame {
    tf_list_t node;
    bool is_log;
    char topic[LIVE_TOPIC_MAX];
    size_t len;
    unsigned char data[]; /* LWS_PRE + len */
} live_frame_t;

typedef struct live_conn {
    tf_list_t node; /* m->live_conns */
    tf_master_t *m;
    struct lws *wsi;
    char topics[LIVE_MAX_TOPICS][LIVE_TOPIC_MAX];
    size_t ntopics;
    tf_list_t queue;
    size_t queued;
    tf_buf_t rx;
    bool closing;
} live_conn_t;

typedef struct live_pss {
    live_conn_t *c;
} live_pss_t;

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
        if (has_topic(tf_list_entry(it, live_conn_t, node), topic))
            return true;
    }
    return false;
}

/* Drops queued log frames; returns the bytes freed and lists their topics
 * (deduplicated) into dropped. */
static size_t drop_logs(live_conn_t *c, json_t *dropped)
{
    size_t freed = 0;
    tf_list_t *it, *tmp;
    tf_list_foreach_safe(it, tmp, &c->queue)
    {
        live_frame_t *f = tf_list_entry(it, live_frame_t, node);
        if (!f->is_log)
            continue;
        bool seen = false;
        size_t i;
        json_t *v;
        json_array_foreach(dropped, i, v)
        {
            seen = seen || strcmp(json_string_value(v), f->topic) == 0;
        }
        if (!seen)
            json_array_append_new(dropped, json_string(f->topic));
        freed += f->len;
        tf_list_unlink(&f->node);
        free(f);
    }
    c->queued -= freed;
    return freed;
}

static void enqueue_raw(live_conn_t *c, const char *text, size_t len,
                        bool is_log, const char *topic)
{
    live_frame_t *f = malloc(sizeof(*f) + LWS_PRE + len);
    if (!f)
        return;
    f->is_log = is_log;
    snprintf(f->topic, sizeof(f->topic), "%s", topic ? topic : "");
    f->len = len;
    memcpy(f->data + LWS_PRE, text, len);
    tf_list_push_back(&c->queue, &f->node);
    c->queued += len;
    if (c->wsi)
        lws_callback_on_writable(c->wsi);
}

static void enqueue_json(live_conn_t *c, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    if (text) {
        enqueue_raw(c, text, strlen(text), false, NULL);
        free(text);
    }
}

static void enqueue(live_conn_t *c, const char *text, size_t len, bool is_log,
                    const char *topic)
{
    if (c->closing)
        return;
    if (c->queued + len > LIVE_QUEUE_MAX) {
        json_t *dropped = json_array();
        drop_logs(c, dropped);
        if (is_log) {
            bool seen = false;
            size_t i;
            json_t *v;
            json_array_foreach(dropped, i, v)
            {
                seen = seen || strcmp(json_string_value(v), topic) == 0;
            }
            if (!seen)
                json_array_append_new(dropped, json_string(topic));
        }
        json_t *o = json_pack("{s:s,s:o}", "type", "overflow", "topics",
                              dropped);
        enqueue_json(c, o);
        json_decref(o);
        if (is_log)
            return; /* this one is dropped too: the viewer refetches */
        if (c->queued + len > LIVE_QUEUE_MAX) {
            /* Only control events left and still too much: cut it off. */
            tf_warn("live", "a live viewer is not reading: closing it");
            c->closing = true;
            if (c->wsi)
                lws_callback_on_writable(c->wsi);
            return;
        }
    }
    enqueue_raw(c, text, len, is_log, topic);
}

/* Sends j (consumed) to every subscriber of topic. */
static void publish(tf_master_t *m, const char *topic, json_t *j, bool is_log)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return;
    size_t len = strlen(text);
    tf_list_t *it;
    tf_list_foreach(it, &m->live_conns)
    {
        live_conn_t *c = tf_list_entry(it, live_conn_t, node);
        if (has_topic(c, topic))
            enqueue(c, text, len, is_log, topic);
    }
    free(text);
}

/* --- events --- */

static json_t *opt_ms(int64_t ms)
{
    return ms ? json_integer(ms) : json_null();
}

void tf_live_build(tf_master_t *m, const tf_build_t *b, const char *event,
                   int result)
{
    if (!anyone(m, "builds"))
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
    if (step >= b->nsteps || !anyone(m, "builds"))
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
    json_object_set_new(o, "text", text ? json_string(text) : json_null());
    publish(m, "builds",
            json_pack("{s:s,s:I,s:s,s:I,s:o}", "type", "step", "build_id",
                      (json_int_t)b->id, "builder", b->builder, "number",
                      (json_int_t)b->number, "step", o),
            false);
}

void tf_live_slave(tf_master_t *m, const tf_mslave_t *s, const char *event)
{
    if (!anyone(m, "slaves"))
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
    if (!anyone(m, "requests"))
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
        if (!has_topic(c, t))
            snprintf(c->topics[c->ntopics++], LIVE_TOPIC_MAX, "%s", t);
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
    tf_list_t *it, *tmp;
    tf_list_foreach_safe(it, tmp, &c->queue)
    {
        free(tf_list_entry(it, live_frame_t, node));
    }
    tf_buf_free(&c->rx);
    tf_list_unlink(&c->node);
    free(c);
}

static bool path_is_live(struct lws *wsi)
{
    char uri[32];
    return lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) > 0 &&
           strcmp(uri, TF_LIVE_PATH) == 0;
}

int tf_live_callback(struct lws *wsi, enum lws_callback_reasons reason,
                     void *user, void *in, size_t len)
{
    live_pss_t *pss = user;
    tf_master_t *m = lws_context_user(lws_get_context(wsi));
    live_conn_t *c = pss ? pss->c : NULL;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return (!path_is_live(wsi) || m->stopping) ? 1 : 0;
    case LWS_CALLBACK_ESTABLISHED:
        c = calloc(1, sizeof(*c));
        if (!c)
            return -1;
        c->m = m;
        c->wsi = wsi;
        tf_list_init(&c->queue);
        tf_buf_init(&c->rx, LIVE_RX_MAX);
        tf_list_push_back(&m->live_conns, &c->node);
        pss->c = c;
        return 0;
    case LWS_CALLBACK_RECEIVE:
        if (!c)
            return -1;
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
        if (tf_list_empty(&c->queue))
            return c->closing ? -1 : 0;
        live_frame_t *f = tf_list_entry(c->queue.next, live_frame_t, node);
        int n = lws_write(wsi, f->data + LWS_PRE, f->len, LWS_WRITE_TEXT);
        if (n < (int)f->len)
            return -1;
        tf_list_unlink(&f->node);
        c->queued -= f->len;
        free(f);
        if (!tf_list_empty(&c->queue) || c->closing)
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
        c->closing = true;
        if (c->wsi) {
            lws_close_reason(c->wsi, LWS_CLOSE_STATUS_GOINGAWAY,
                             (unsigned char *)"shutdown", 8);
            lws_callback_on_writable(c->wsi);
        }
    }
}
