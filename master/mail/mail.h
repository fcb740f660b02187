/*
 * mail.h - the mail outbox and its sender: result mails that are never
 * lost (docs/admins.md, "Mail").
 *
 * A mail starts as a row of mail_outbox, inserted by the core in the same
 * write group (the same transaction) as the event that causes it: the end
 * of a try job, or the end of a continuous build whose builder's notifier
 * mode asks for it (store.h: tf_op_mail_job, tf_op_mail_build). Whether a
 * notice is due is decided inside that transaction from the builder's
 * previous build, so a crash can neither lose nor double it.
 *
 * A sender thread (not the loop thread: ARCHITECTURE.md, "Mail goes out
 * from its own worker") picks due rows, renders each once (mail_render.h)
 * and stores the message with its Message-ID before the first attempt,
 * then delivers it over SMTP with libcurl or through a sendmail-style
 * command, and records the outcome: 'sent' right after the server
 * accepted it, or a retry time with exponential backoff, or 'failed' once
 * the retry horizon has passed. After a restart the pending rows are sent
 * as they are; a mail is sent twice only if the master dies between the
 * server's acceptance and the commit of 'sent' (then with the same
 * Message-ID, which receivers use to drop duplicates).
 *
 *   row state:  pending --accepted--> sent
 *               pending --horizon passed, or refused for good--> failed
 *               pending --nobody to mail--> skipped
 *
 * The files, one job each: outbox.c (queueing rows, and every change of a
 * row's state), sender.c (the thread and its life), compose.c (reading
 * what a mail is about and rendering it), transport.c (SMTP and the
 * sendmail command), settings.c (what mail takes from the config),
 * mail_render.c (data to message, pure). Their SQL is in store/mail.c.
 * mail/ knows nothing of the master's live state: the master hands it the
 * store and the config. Outbox rows are queued by the core, as store
 * operations in the write group of their cause (store.h: tf_op_mail_job,
 * tf_op_mail_build, applied with store/mail.c's statements), and the
 * master wakes the sender once they have committed (tf_mail_wake). The
 * API's endpoints are in api/mail.c, `tf-master mail preview` in
 * admin/mail.c.
 */
#ifndef TF_MAIL_H
#define TF_MAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "mail/mail_render.h"
#include "result.h"
#include "store/store_sqlite.h"

/* The sender; NULL while mail is off. */
typedef struct tf_mail tf_mail_t;

/* --- waking (loop thread) --- */

/* New outbox rows have committed (the core queues them with the event
 * that causes them: store.h, tf_op_mail_job and tf_op_mail_build): the
 * sender looks for due mail now instead of at its next poll. ml may be
 * NULL (mail is off: the rows wait for it). */
void tf_mail_wake(tf_mail_t *ml);

/* --- the sender's life (loop thread) --- */

/* Starts the sender into *ml once the store is open, if cfg has mail
 * enabled (else *ml stays NULL). Returns 0 or a negative code (logged);
 * the master runs without mail then and the outbox keeps the rows for the
 * next start. The sender copies what it needs of cfg. */
int tf_mail_start(tf_mail_t **ml, tf_store_t *store, const tf_config_t *cfg);

/* The config was reloaded: the sender takes the new settings for its next
 * mail (and starts if mail was just enabled). */
void tf_mail_reconfigure(tf_mail_t **ml, tf_store_t *store,
                         const tf_config_t *cfg);

/* Asks the sender to stop (an SMTP exchange in progress is aborted) and
 * returns at once. ml may be NULL. */
void tf_mail_stop_begin(tf_mail_t *ml);

/* Stops the sender and joins its thread. Call before the store closes. */
void tf_mail_stop(tf_mail_t *ml);

/* Frees the sender after the store has closed (its write callbacks may
 * run until then). Accepts NULL and a sender that never started. */
void tf_mail_free(tf_mail_t *ml);

/* --- preview (an offline command) --- */

/* The mail that would be sent about a try job (kind "job") or a build
 * ("build"), rendered exactly as the sender would, without sending or
 * queueing anything; a mail nobody would get is addressed to
 * "undisclosed-recipients@invalid" (nobody set). */
typedef struct tf_mail_preview {
    tf_mail_msg_t msg;
    char *recipients;  /* JSON array text, malloc'd */
    bool notify;       /* a job: it asked for mail */
    bool in_job;       /* a build: it belongs to a try job */
    bool nobody;       /* nobody would get it */
} tf_mail_preview_t;

/* Renders it into *out (tf_mail_preview_clear). Returns 0, TF_ENOENT (no
 * such job or build), TF_E2BIG (does not fit in message_max_bytes) or
 * another code. Reads the store synchronously: offline use only. */
int tf_mail_preview(tf_store_t *store, const tf_config_t *cfg,
                    const char *kind, uint64_t id, tf_mail_preview_t *out);
void tf_mail_preview_clear(tf_mail_preview_t *p);

#endif
