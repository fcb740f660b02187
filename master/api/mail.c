/*
 * mail.c (api) - GET /api/v1/mail[/{id}[/message]]: the outbox as its
 * admins and committers see it (docs/api.md, "Mail").
 *
 * Parameters are checked on the loop thread, the rows read on a pool
 * thread (store/mail.c), the answer sent back on the loop thread.
 */
#include "api/mail.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/master.h"
#include "proto.h"
#include "store/mail.h"
#include "tf_err.h"
#include "util.h"

typedef enum { MQ_LIST, MQ_ONE, MQ_MESSAGE } mq_kind_t;

typedef struct mq {
    tf_http_req_t *r;
    mq_kind_t kind;
    uint64_t id;
    uint64_t before;
    unsigned limit;
    char state[16];
    char base[512];
    json_t *out;
    uint8_t *msg;
    size_t msg_len;
} mq_t;

static int mq_run(tf_db_t *db, void *arg)
{
    mq_t *q = arg;
    switch (q->kind) {
    case MQ_LIST:
        return tf_store_mail_list(db, q->base, q->before,
                                  q->state[0] ? q->state : NULL, q->limit,
                                  &q->out);
    case MQ_ONE:
        return tf_store_mail_one(db, q->base, q->id, &q->out);
    case MQ_MESSAGE:
        return tf_store_mail_message(db, q->id, &q->msg, &q->msg_len);
    }
    return TF_EINVAL;
}

static void mq_done(void *arg, int rc)
{
    mq_t *q = arg;
    tf_http_req_t *r = q->r;
    if (!tf_http_async_end(r))
        goto out;
    if (rc == TF_ENOENT)
        tf_http_error(r, 404, "no such mail");
    else if (rc == TF_ESTATE)
        tf_http_error(r, 404, "mail %" PRIu64 " has not been rendered yet",
                      q->id);
    else if (rc)
        tf_http_error(r, 500, "database read failed: %s", tf_strerror(rc));
    else if (q->kind == MQ_MESSAGE)
        tf_http_respond(r, 200, "message/rfc822", q->msg, q->msg_len);
    else {
        tf_http_respond_json(r, 200, q->out);
        q->out = NULL;
    }
out:
    json_decref(q->out);
    free(q->msg);
    free(q);
}

/* The list's parameters into q; false (answered) when one is bad. */
static bool list_args(tf_http_req_t *r, mq_t *q)
{
    uint64_t limit = 50, before = 0;
    const char *st = tf_http_arg(r, "state");
    const char *l = tf_http_arg(r, "limit"), *b = tf_http_arg(r, "before");
    if (st && strcmp(st, "pending") != 0 && strcmp(st, "sent") != 0 &&
        strcmp(st, "failed") != 0 && strcmp(st, "skipped") != 0) {
        tf_http_error(r, 400, "state=\"%.20s\": expected pending, sent, "
                      "failed or skipped", st);
        return false;
    }
    if ((l && (tf_parse_u64(l, &limit) != 0 || limit < 1 || limit > 200)) ||
        (b && (tf_parse_u64(b, &before) != 0 || before < 1))) {
        tf_http_error(r, 400, "limit is 1 to 200 and before a positive "
                      "mail id");
        return false;
    }
    snprintf(q->state, sizeof(q->state), "%s", st ? st : "");
    q->limit = (unsigned)limit;
    q->before = before;
    return true;
}

static void mail_query(tf_http_req_t *r, mq_kind_t kind, uint64_t id)
{
    mq_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->r = r;
    q->id = id;
    q->kind = kind;
    snprintf(q->base, sizeof(q->base), "%s", r->m->cfg->public_url);
    if (q->kind == MQ_LIST && !list_args(r, q)) {
        free(q);
        return;
    }
    if (!tf_api_read_then(r, mq_run, mq_done, q))
        free(q);
}

void tf_api_mail_list(tf_http_req_t *r, const tf_route_args_t *a)
{
    (void)a;
    mail_query(r, MQ_LIST, 0);
}

void tf_api_mail_one(tf_http_req_t *r, const tf_route_args_t *a)
{
    mail_query(r, MQ_ONE, a->id);
}

void tf_api_mail_message(tf_http_req_t *r, const tf_route_args_t *a)
{
    mail_query(r, MQ_MESSAGE, a->id);
}
