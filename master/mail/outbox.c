/*
 * outbox.c - the outbox: queueing a row with the event that causes it
 * (loop thread), and every later change of a row's state (sender thread):
 *
 *   pending --rendered--> pending with its message
 *   pending --accepted--> sent
 *   pending --attempt failed--> pending (next attempt later) or failed
 *   pending --nothing to send--> failed or skipped
 *
 * The statements are store/mail.c's. Rows are queued by the core, as
 * store operations in the write group of the event that causes them (so a
 * row commits with its cause), and the master wakes the sender after
 * their commit (tf_mail_wake). The sender thread writes through the store's queue and
 * waits for each write's commit before it goes on, so what it did is
 * stored before it does the next thing (a mail is marked sent before
 * the next one is tried).
 */
#include "mail/mail_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "tf_err.h"

#define SUB TF__MAIL_SUB
#define STORE_RETRY_MS 5000 /* after a full store queue */

/* ------------------------------------------------------------------ */
/* Waking (loop thread)                                                 */
/* ------------------------------------------------------------------ */

void tf_mail_wake(tf_mail_t *ml)
{
    if (ml)
        tf__mail_wake(ml);
}

/* ------------------------------------------------------------------ */
/* Writes from the sender thread                                       */
/* ------------------------------------------------------------------ */

static void write_done_cb(void *arg, int rc)
{
    tf_mail_t *ml = arg;
    pthread_mutex_lock(&ml->mu);
    ml->writes_done++;
    ml->last_write_rc = rc;
    pthread_cond_broadcast(&ml->cond);
    pthread_mutex_unlock(&ml->mu);
}

/* Queues one write from the sender thread and waits for its commit.
 * Returns the write's outcome, or TF_ESTATE when the master stops first
 * (the write still commits: the store drains its queue when it closes). */
static int write_wait(tf_mail_t *ml, const tf_sqlstmt_t *st)
{
    pthread_mutex_lock(&ml->mu);
    uint64_t seq = ++ml->writes_issued;
    pthread_mutex_unlock(&ml->mu);
    int rc = tf_store_write(ml->store, st->sql, st->vals, st->nvals,
                            write_done_cb, ml);
    pthread_mutex_lock(&ml->mu);
    if (rc) {
        ml->writes_issued--;
    } else {
        while (ml->writes_done < seq && !atomic_load(&ml->stop))
            pthread_cond_wait(&ml->cond, &ml->mu);
        rc = ml->writes_done >= seq ? ml->last_write_rc : TF_ESTATE;
    }
    pthread_mutex_unlock(&ml->mu);
    return rc;
}

/* write_wait, waiting out a full store queue (TF_EFULL: the store applies
 * backpressure; it drains). Gives up only when the master stops. */
static int write_retry(tf_mail_t *ml, const tf_sqlstmt_t *st)
{
    bool warned = false;
    for (;;) {
        int rc = write_wait(ml, st);
        if (rc != TF_EFULL || atomic_load(&ml->stop))
            return rc;
        if (!warned)
            tf_warn(SUB, "the store's queue is full: the outbox waits");
        warned = true;
        struct timespec ts = {.tv_sec = STORE_RETRY_MS / 1000};
        nanosleep(&ts, NULL);
    }
}

/* ------------------------------------------------------------------ */
/* A row's state (sender thread)                                       */
/* ------------------------------------------------------------------ */

void tf__mail_describe(const tf_store_mail_row_t *r, char *out, size_t n)
{
    snprintf(out, n, "mail %" PRId64 " (%s %" PRIu64 ")", r->id,
             strcmp(r->kind, "job") == 0 ? "try job" : r->kind, r->ref);
}

static int pick_fn(tf_db_t *db, void *arg)
{
    return tf_store_mail_pick(db, arg);
}

int tf__mail_pick(tf_mail_t *ml, tf_store_mail_row_t *r)
{
    return tf_store_read_sync(ml->store, pick_fn, r);
}

void tf__mail_row_unsent(tf_mail_t *ml, const tf_store_mail_row_t *r,
                         const char *state, const char *why)
{
    tf_sqlval_t v[TF_STORE_MAIL_MAX_VALS];
    tf_sqlstmt_t st;
    char what[96];
    tf__mail_describe(r, what, sizeof(what));
    tf_store_mail_row_unsent(&st, v, r->id, state, why);
    write_retry(ml, &st);
    if (strcmp(state, "failed") == 0)
        tf_error(SUB, "%s failed: %s", what, why);
    else
        tf_info(SUB, "%s not sent: %s", what, why);
}

void tf__mail_row_failed(tf_mail_t *ml, const tf__mail_settings_t *s,
                         const tf_store_mail_row_t *r,
                         const tf__mail_outcome_t *o)
{
    const tf_cfg_mail_t *m = &s->mail;
    tf_sqlval_t v[TF_STORE_MAIL_MAX_VALS];
    tf_sqlstmt_t st;
    char what[96];
    int64_t now = tf_now_ms();
    int64_t attempts = r->attempts + 1;
    int64_t delay = (int64_t)m->retry_initial_s * 1000;
    for (int64_t i = 1; i < attempts && delay < (int64_t)m->retry_max_s * 1000;
         i++)
        delay *= 2;
    if (delay > (int64_t)m->retry_max_s * 1000)
        delay = (int64_t)m->retry_max_s * 1000;
    bool give_up = o->kind == TF__OUT_FAILED ||
                   now + delay - r->created_ms >
                       (int64_t)m->retry_horizon_s * 1000;
    tf__mail_describe(r, what, sizeof(what));
    tf_store_mail_row_attempt(&st, v, r->id, give_up, attempts, o->error,
                              give_up ? now : now + delay);
    write_retry(ml, &st);
    if (give_up)
        tf_error(SUB, "%s failed for good after %" PRId64 " attempt%s: %s",
                 what, attempts, attempts == 1 ? "" : "s", o->error);
    else
        tf_warn(SUB, "%s: attempt %" PRId64 " failed: %s; next attempt in "
                "%" PRId64 " s", what, attempts, o->error, delay / 1000);
}

int tf__mail_row_rendered(tf_mail_t *ml, const tf_store_mail_row_t *r,
                          const tf__mail_rendered_t *rd)
{
    tf_sqlval_t v[TF_STORE_MAIL_MAX_VALS];
    tf_sqlstmt_t st;
    char *rcpt = json_dumps(rd->rcpt, JSON_COMPACT);
    tf_store_mail_row_rendered(&st, v, r->id, rd->msg.subject, rd->message_id,
                               rd->msg.data, rd->msg.len, rcpt ? rcpt : "[]");
    int rc = write_retry(ml, &st);
    free(rcpt);
    return rc;
}

int tf__mail_row_sent(tf_mail_t *ml, const tf_store_mail_row_t *r)
{
    tf_sqlval_t v[TF_STORE_MAIL_MAX_VALS];
    tf_sqlstmt_t st;
    tf_store_mail_row_sent(&st, v, r->id, tf_now_ms(), r->attempts + 1);
    return write_retry(ml, &st);
}
