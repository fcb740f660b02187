/*
 * mail.h - the mail outbox and its sender: result mails that are never
 * lost (docs/admins.md, "Mail").
 *
 * A mail starts as a row of mail_outbox, inserted in the same write group
 * (the same transaction) as the event that causes it: the end of a try
 * job, or the end of a continuous build whose builder's notifier mode asks
 * for it. Whether a notice is due is decided inside that transaction from
 * the builder's previous build, so a crash can neither lose nor double it.
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
 * The sender reads with tf_store_read_sync and writes with tf_store_write
 * from its own thread, waiting for each write's commit before going on.
 * It sleeps on a condition variable until the next retry is due or a new
 * row commits (tf_mail_group_queued), and stops at shutdown before the
 * store closes. The master holds its sender in m->mail (NULL when mail is
 * off).
 */
#ifndef TF_MAIL_H
#define TF_MAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/http.h"
#include "result.h"

struct tf_master;

/* --- queueing (loop thread, inside the write group of the event) --- */

/* Try job job_id ended: queues its report unless the job asked for no
 * mail (notify = 0) or mail is off. */
void tf_mail_job_done(struct tf_master *m, uint64_t job_id);

/* Continuous build build_id of builder ended with result (not a try job's
 * build, not a RETRY): queues a notice when the builder's mode asks for
 * one, deciding from the builder's previous build inside the write. */
void tf_mail_build_done(struct tf_master *m, uint64_t build_id,
                        const char *builder, tf_result_t result);

/* master.c calls this after queueing a write group: when the group holds
 * a new outbox row, the sender is woken once it has committed. */
void tf_mail_group_queued(struct tf_master *m);

/* --- the sender's life (loop thread) --- */

/* Starts the sender once the store is open, if mail is enabled. Returns 0
 * or a negative code (logged); the master runs without mail then and the
 * outbox keeps the rows for the next start. */
int tf_mail_start(struct tf_master *m);

/* The config was reloaded: the sender takes the new settings for its next
 * mail (and starts if mail was just enabled). */
void tf_mail_reconfigure(struct tf_master *m);

/* Asks the sender to stop (an SMTP exchange in progress is aborted) and
 * returns at once. */
void tf_mail_stop_begin(struct tf_master *m);

/* Stops the sender and joins its thread. Call before the store closes. */
void tf_mail_stop(struct tf_master *m);

/* Frees the sender after the store has closed (its write callbacks may
 * run until then). Accepts a sender that never started. */
void tf_mail_free(struct tf_master *m);

/* --- API (loop thread) --- */

/* GET /api/v1/mail, GET /api/v1/mail/{id}, GET /api/v1/mail/{id}/message;
 * segs are the path segments after "mail". Needs a token. */
void tf_api_mail(tf_http_req_t *r, char **segs, size_t nsegs);

/* --- command line --- */

/* `tf-master mail preview job:N|build:N`: prints the mail that would be
 * sent for it, without sending or queueing anything. Returns the exit
 * code (0, 1 failure, 2 usage). */
int tf_mail_cli(const char *dir, const char *config, const char *verb,
                const char *target);

#endif
