/*
 * mail_int.h - what the files of mail/ share (see mail.h for the design).
 *
 * Threads: the sender (tf_mail_t) is shared by the loop thread (queueing,
 * lifecycle) and the sender thread; its fields say who may touch them.
 * The sender works from a private copy of the settings it needs
 * (tf__mail_settings_t), swapped under the mutex on a config reload,
 * because the loop thread frees the old config right after a reload.
 */
#ifndef TF_MAIL_INT_H
#define TF_MAIL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "mail/mail.h"
#include "store/mail.h"

#define TF__MAIL_SUB "mail"  /* the log's subsystem */
#define TF__MAIL_MAX_RCPT 100

/* ------------------------------------------------------------------ */
/* settings.c: what mail takes from the config, owned                  */
/* ------------------------------------------------------------------ */

typedef struct tf__mail_bset {
    char *builder;
    char **patterns; /* the builder's, or the mail section's */
    size_t npatterns;
    char **extra;    /* extra_recipients */
    size_t nextra;
    tf_mail_mode_t mode;
} tf__mail_bset_t;

typedef struct tf__mail_settings {
    unsigned refs; /* under tf_mail_t.mu */
    char *name;
    char *base_url;
    bool pages;     /* the master serves its pages (web_root): links in
                       mails open them ("#/builds/4") instead of JSON */
    tf_cfg_mail_t mail;
    tf__mail_bset_t *builders;
    size_t nbuilders;
} tf__mail_settings_t;

/* A deep copy of what mail needs from c (refs 1), or NULL when out of
 * memory. Free with tf__mail_settings_free. */
tf__mail_settings_t *tf__mail_settings_new(const tf_config_t *c);
void tf__mail_settings_free(tf__mail_settings_t *s);

/* The settings of builder name, or NULL. Borrowed from s. */
const tf__mail_bset_t *tf__mail_settings_builder(const tf__mail_settings_t *s,
                                                 const char *name);

/* ------------------------------------------------------------------ */
/* sender.c: the sender's shared state                                 */
/* ------------------------------------------------------------------ */

struct tf_mail {
    tf_store_t *store;          /* set at start, read by both threads */
    pthread_t thread;
    bool started;               /* loop thread */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool wake;                  /* under mu: look at the outbox now */
    atomic_bool stop;           /* set under mu, read anywhere */
    tf__mail_settings_t *settings; /* under mu */
    uint64_t writes_issued;     /* under mu */
    uint64_t writes_done;       /* under mu */
    int last_write_rc;          /* under mu */
    bool curl_ready;            /* loop thread */
};

/* Wakes the sender thread to look at the outbox now. */
void tf__mail_wake(tf_mail_t *ml);

/* ------------------------------------------------------------------ */
/* compose.c: what a mail says                                         */
/* ------------------------------------------------------------------ */

typedef struct tf__mail_rendered {
    tf_mail_msg_t msg;
    char message_id[160];
    json_t *rcpt;   /* array of addresses */
    bool notify;    /* a job: it asked for mail */
    bool in_job;    /* a build: it belongs to a try job */
} tf__mail_rendered_t;

/* Renders the mail about kind/ref ("job" or "build"), reading the rows it
 * is about synchronously on a read connection (the sender thread, or an
 * offline command). outbox_id names the row in the Message-ID (0 for a
 * preview). extra_json: a notice's stored recipients (NULL: the builder's
 * configured ones). With placeholder, a mail nobody would get is rendered
 * to "undisclosed-recipients@invalid" instead of failing. Returns 0,
 * TF_ENOENT (no such job or build), TF_EINVAL (nobody to mail), TF_E2BIG
 * or another error; on failure out is cleared. */
int tf__mail_render(tf_store_t *store, const tf__mail_settings_t *s,
                    const char *kind, uint64_t ref, uint64_t outbox_id,
                    const char *extra_json, bool placeholder,
                    tf__mail_rendered_t *out);
void tf__mail_rendered_clear(tf__mail_rendered_t *r);

#define TF__MAIL_NOBODY "undisclosed-recipients@invalid"

/* ------------------------------------------------------------------ */
/* transport.c: handing a message to a server or a command             */
/* ------------------------------------------------------------------ */

typedef enum {
    TF__OUT_SENT = 0,
    TF__OUT_RETRY,   /* try again later */
    TF__OUT_FAILED,  /* refused for good */
    TF__OUT_ABORTED, /* the master is stopping: not an attempt */
} tf__mail_outcome_kind_t;

#define TF__MAIL_ERR_MAX 800
#define TF__MAIL_REPLY_MAX 300

typedef struct tf__mail_outcome {
    tf__mail_outcome_kind_t kind;
    char error[TF__MAIL_ERR_MAX];
    char reply[TF__MAIL_REPLY_MAX]; /* the server's acceptance, for the log */
} tf__mail_outcome_t;

/* Delivers data (len bytes) to the valid addresses of rcpt (a JSON array)
 * by s's transport, and says how it went in *o. stop (may be NULL) is
 * watched: once set the exchange is abandoned (TF__OUT_ABORTED), unless
 * the message is already with the server. Blocks: the sender thread. */
void tf__mail_deliver(const atomic_bool *stop, const tf__mail_settings_t *s,
                      json_t *rcpt, const uint8_t *data, size_t len,
                      tf__mail_outcome_t *o);

/* Logs which way mail goes with s (at start and after a reload). */
void tf__mail_log_transport(const tf__mail_settings_t *s);

/* ------------------------------------------------------------------ */
/* outbox.c: a row's state changes (the sender thread)                 */
/* ------------------------------------------------------------------ */

/* "mail 7 (try job 3)" for log lines. */
void tf__mail_describe(const tf_store_mail_row_t *r, char *out, size_t n);

/* Reads the pending row due first into *r. Returns 0 or a code. */
int tf__mail_pick(tf_mail_t *ml, tf_store_mail_row_t *r);

/* Ends a pending row without sending it: state "failed" or "skipped". */
void tf__mail_row_unsent(tf_mail_t *ml, const tf_store_mail_row_t *r,
                         const char *state, const char *why);

/* A delivery attempt failed: the next one after a backoff, or 'failed'
 * past the retry horizon (or when o says the refusal is final). */
void tf__mail_row_failed(tf_mail_t *ml, const tf__mail_settings_t *s,
                         const tf_store_mail_row_t *r,
                         const tf__mail_outcome_t *o);

/* Stores a row's rendered mail before its first attempt. Returns 0 or a
 * code (TF_ESTATE: the master is stopping). */
int tf__mail_row_rendered(tf_mail_t *ml, const tf_store_mail_row_t *r,
                          const tf__mail_rendered_t *rd);

/* The server accepted the row's mail. Returns 0 or a code. */
int tf__mail_row_sent(tf_mail_t *ml, const tf_store_mail_row_t *r);

#endif
