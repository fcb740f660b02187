/*
 * sender.c - the sender thread and its life.
 *
 * One thread (ARCHITECTURE.md, "Mail goes out from its own worker") loops
 * over the outbox: the pending row due first is rendered and stored if it
 * has no message yet (compose.c, outbox.c), else delivered (transport.c)
 * and its outcome recorded (outbox.c). Between rows it sleeps on a
 * condition variable until the next attempt is due, a new row commits
 * (tf__mail_wake) or the master stops. It reads with tf_store_read_sync
 * on its own thread, never the loop's.
 *
 * The loop thread starts and stops it, and swaps its settings on a
 * reload: the thread holds a reference to the settings it works with, so
 * a reload never frees them under it.
 */
#include "mail/mail_int.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "clock.h"
#include "log.h"
#include "tf_err.h"

#define SUB TF__MAIL_SUB
#define POLL_MS 60000       /* the outbox is read at least this often */
#define STORE_RETRY_MS 5000 /* after a failed read of the outbox */

static tf__mail_settings_t *settings_hold(tf_mail_t *ml)
{
    pthread_mutex_lock(&ml->mu);
    tf__mail_settings_t *s = ml->settings;
    s->refs++;
    pthread_mutex_unlock(&ml->mu);
    return s;
}

static void settings_release(tf_mail_t *ml, tf__mail_settings_t *s)
{
    pthread_mutex_lock(&ml->mu);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&ml->mu);
    if (last)
        tf__mail_settings_free(s);
}

void tf__mail_wake(tf_mail_t *ml)
{
    pthread_mutex_lock(&ml->mu);
    ml->wake = true;
    pthread_cond_broadcast(&ml->cond);
    pthread_mutex_unlock(&ml->mu);
}

/* ------------------------------------------------------------------ */
/* One row at a time (sender thread)                                   */
/* ------------------------------------------------------------------ */

/* Renders a row's mail and stores it before any attempt; a row that
 * cannot be rendered is ended or retried later. */
static void prepare_row(tf_mail_t *ml, const tf__mail_settings_t *s,
                        const tf_store_mail_row_t *r)
{
    tf__mail_rendered_t rd;
    char what[96];
    tf__mail_describe(r, what, sizeof(what));
    int rc = tf__mail_render(ml->store, s, r->kind, r->ref, (uint64_t)r->id,
                             strcmp(r->kind, "build") == 0 ? r->recipients
                                                            : NULL,
                             false, &rd);
    if (rc == TF_ENOENT) {
        tf__mail_row_unsent(ml, r, "failed",
                            strcmp(r->kind, "job") == 0
                                ? "the try job no longer exists"
                                : "the build no longer exists");
        return;
    }
    if (rc == TF_EINVAL) {
        tf__mail_row_unsent(ml, r, "skipped", "nobody to mail: no valid "
                            "recipient (the job's address, or the builder's "
                            "extra_recipients and blamelist)");
        return;
    }
    if (rc == TF_E2BIG) {
        tf__mail_row_unsent(ml, r, "failed", "the mail does not fit in "
                            "message_max_bytes even without log excerpts");
        return;
    }
    if (rc) {
        tf__mail_outcome_t o = {.kind = TF__OUT_RETRY};
        snprintf(o.error, sizeof(o.error), "cannot render the mail: %s",
                 tf_strerror(rc));
        tf__mail_row_failed(ml, s, r, &o);
        return;
    }
    rc = tf__mail_row_rendered(ml, r, &rd);
    if (rc && rc != TF_ESTATE)
        tf_error(SUB, "%s: cannot store the rendered mail: %s", what,
                 tf_strerror(rc));
    else if (rc == 0)
        tf_info(SUB, "%s rendered: %s, %zu bytes, \"%s\"", what,
                rd.message_id, rd.msg.len, rd.msg.subject);
    /* The stored message is the one sent: read it back next time round. */
    tf__mail_rendered_clear(&rd);
}

/* Handles the pending row due first, if any is due. Returns true when it
 * did something (look again at once), false to sleep *wait_ms. */
static bool sender_step(tf_mail_t *ml, const tf__mail_settings_t *s,
                        int64_t *wait_ms)
{
    tf_store_mail_row_t r = {0};
    char what[96];
    json_t *rcpt = NULL;
    bool did = false;
    int rc = tf__mail_pick(ml, &r);
    if (rc) {
        tf_error(SUB, "cannot read the outbox: %s", tf_strerror(rc));
        *wait_ms = STORE_RETRY_MS;
        goto out;
    }
    if (!r.found)
        goto out;
    int64_t now = tf_now_ms();
    if (r.next_ms > now) {
        *wait_ms = r.next_ms - now < *wait_ms ? r.next_ms - now : *wait_ms;
        goto out;
    }
    did = true;
    if (!r.has_message) {
        prepare_row(ml, s, &r);
        goto out;
    }
    tf__mail_describe(&r, what, sizeof(what));
    rcpt = json_loads(r.recipients ? r.recipients : "[]", 0, NULL);
    tf__mail_outcome_t o;
    tf__mail_deliver(&ml->stop, s, rcpt, r.message, r.message_len, &o);
    if (o.kind == TF__OUT_ABORTED)
        goto out;
    if (o.kind != TF__OUT_SENT) {
        tf__mail_row_failed(ml, s, &r, &o);
        goto out;
    }
    rc = tf__mail_row_sent(ml, &r);
    char *to = json_dumps(rcpt, JSON_COMPACT);
    tf_info(SUB, "%s %s sent to %s: %s", what,
            r.message_id ? r.message_id : "", to ? to : "?", o.reply);
    free(to);
    if (rc && rc != TF_ESTATE)
        tf_error(SUB, "%s was sent but marking it sent failed (%s): it may "
                 "be sent again", what, tf_strerror(rc));
out:
    json_decref(rcpt);
    tf_store_mail_row_clear(&r);
    return did;
}

static void sender_sleep(tf_mail_t *ml, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&ml->mu);
    while (!ml->wake && !atomic_load(&ml->stop))
        if (pthread_cond_timedwait(&ml->cond, &ml->mu, &ts) == ETIMEDOUT)
            break;
    ml->wake = false;
    pthread_mutex_unlock(&ml->mu);
}

static void *sender_main(void *arg)
{
    tf_mail_t *ml = arg;
    while (!atomic_load(&ml->stop)) {
        tf__mail_settings_t *s = settings_hold(ml);
        int64_t wait_ms = POLL_MS;
        /* Several masters (store.shared): only the holder of the duty
         * lease sends, so a job's mail goes out once. */
        bool did = s->mail.enabled && tf_store_has_duty(ml->store) &&
                   sender_step(ml, s, &wait_ms);
        settings_release(ml, s);
        if (!did)
            sender_sleep(ml, wait_ms);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Lifecycle (loop thread)                                             */
/* ------------------------------------------------------------------ */

int tf_mail_start(tf_mail_t **out, tf_store_t *store, const tf_config_t *cfg)
{
    tf_mail_t *ml = NULL;
    pthread_condattr_t ca;
    sigset_t all, old;
    int rc;
    if (*out)
        return 0;
    if (!cfg->mail.enabled) {
        tf_info(SUB, "mail is off (no \"mail\" section in the config, or "
                "\"enabled\": false)");
        return 0;
    }
    ml = calloc(1, sizeof(*ml));
    if (!ml)
        return TF_ENOMEM;
    ml->store = store;
    atomic_init(&ml->stop, false);
    ml->settings = tf__mail_settings_new(cfg);
    if (!ml->settings) {
        free(ml);
        return TF_ENOMEM;
    }
    pthread_mutex_init(&ml->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ml->cond, &ca);
    pthread_condattr_destroy(&ca);
    ml->curl_ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    /* Signals are the loop thread's business. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&ml->thread, NULL, sender_main, ml);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        tf_error(SUB, "cannot start the mail sender: %s", strerror(rc));
        tf_mail_free(ml);
        return TF_EIO;
    }
    ml->started = true;
    *out = ml;
    tf__mail_log_transport(ml->settings);
    return 0;
}

void tf_mail_reconfigure(tf_mail_t **mlp, tf_store_t *store,
                         const tf_config_t *cfg)
{
    tf_mail_t *ml = *mlp;
    if (!ml) {
        if (cfg->mail.enabled)
            tf_mail_start(mlp, store, cfg);
        return;
    }
    tf__mail_settings_t *s = tf__mail_settings_new(cfg);
    if (!s) {
        tf_error(SUB, "out of memory: mail keeps its old settings");
        return;
    }
    pthread_mutex_lock(&ml->mu);
    tf__mail_settings_t *old = ml->settings;
    ml->settings = s;
    pthread_mutex_unlock(&ml->mu);
    settings_release(ml, old);
    if (cfg->mail.enabled)
        tf__mail_log_transport(s);
    else
        tf_info(SUB, "mail is off now: the outbox keeps what is pending");
    tf__mail_wake(ml);
}

void tf_mail_stop_begin(tf_mail_t *ml)
{
    if (!ml)
        return;
    pthread_mutex_lock(&ml->mu);
    atomic_store(&ml->stop, true);
    pthread_cond_broadcast(&ml->cond);
    pthread_mutex_unlock(&ml->mu);
}

void tf_mail_stop(tf_mail_t *ml)
{
    tf_mail_stop_begin(ml);
    if (ml && ml->started) {
        pthread_join(ml->thread, NULL);
        ml->started = false;
    }
}

void tf_mail_free(tf_mail_t *ml)
{
    if (!ml)
        return;
    tf_mail_stop(ml);
    tf__mail_settings_free(ml->settings);
    pthread_cond_destroy(&ml->cond);
    pthread_mutex_destroy(&ml->mu);
    if (ml->curl_ready)
        curl_global_cleanup();
    free(ml);
}
