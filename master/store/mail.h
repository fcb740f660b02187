/*
 * mail.h (store) - every SQL statement of result mail: the mail_outbox
 * table's rows and the reads a mail is made from.
 *
 * mail/ decides what to send and how; this file is how it is stored. Two
 * kinds of function:
 *
 *   - statement builders (tf_store_mail_queue_*, tf_store_mail_row_*):
 *     they fill a tf_sqlstmt_t whose values point into the caller's vals
 *     array, for the caller to queue with tf_store_write (the sender
 *     thread) or in the write group of the event that causes the mail
 *     (core), so a mail row commits with its cause or not at all;
 *   - queries run on a read connection (the tf_db_t * a tf_store_read
 *     function gets), like queries.h: some hand each row to a visitor as
 *     a view whose strings are borrowed for the call, some return JSON
 *     for the API.
 *
 * Result codes in rows are tf_result_t values; a NULL result is reported
 * as has_result false.
 */
#ifndef TF_STORE_MAIL_H
#define TF_STORE_MAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include "store/db.h"

#include "store/store_sqlite.h"

/* The most values one statement below binds. */
#define TF_STORE_MAIL_MAX_VALS 6

/* ------------------------------------------------------------------ */
/* Queueing: one row per mail, in the write group of its cause         */
/* ------------------------------------------------------------------ */

/* Try job job_id's report, if the job asked for mail and has no row yet
 * (the recipient is its notify_email or its author's address). */
void tf_store_mail_queue_job(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                             uint64_t job_id, int64_t now_ms);

/* Build build_id's notice, when the builder's mode (1 failing, 2 problem,
 * 3 change, 4 all) asks for one given result and the previous finished
 * continuous build of builder, decided inside the transaction so that a
 * crash neither loses nor doubles it. recipients: a JSON array of the
 * builder's extra addresses (copied). */
void tf_store_mail_queue_build(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                               uint64_t build_id, const char *builder,
                               int result, int mode, const char *recipients,
                               int64_t now_ms);

/* ------------------------------------------------------------------ */
/* A row's life (the sender thread)                                    */
/* ------------------------------------------------------------------ */

/* The pending row due first. Strings and the message are malloc'd and
 * owned by the row (tf_store_mail_row_clear). */
typedef struct tf_store_mail_row {
    bool found;
    int64_t id;
    char kind[16];       /* "job" or "build" */
    uint64_t ref;        /* the job's or the build's id */
    char *recipients;    /* JSON array text */
    bool has_message;    /* rendered already */
    int64_t attempts;
    int64_t created_ms;
    int64_t next_ms;
    char *message_id;
    char *subject;
    uint8_t *message;
    size_t message_len;
} tf_store_mail_row_t;

/* Reads the pending row due first into *r (r->found false when none).
 * Returns 0, TF_ESTORE or TF_ENOMEM. */
int tf_store_mail_pick(tf_db_t *db, tf_store_mail_row_t *r);
void tf_store_mail_row_clear(tf_store_mail_row_t *r);

/* The rendered mail of row id, stored once before its first attempt
 * (only if the row has none yet). Copies every value. */
void tf_store_mail_row_rendered(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                                int64_t id, const char *subject,
                                const char *message_id, const void *message,
                                size_t len, const char *recipients);

/* Row id was accepted by the server at sent_ms, after attempts. */
void tf_store_mail_row_sent(tf_sqlstmt_t *st, tf_sqlval_t *vals, int64_t id,
                            int64_t sent_ms, int64_t attempts);

/* An attempt failed: the row stays pending until next_ms, or is 'failed'
 * for good (give_up; next_ms is then the time it gave up). */
void tf_store_mail_row_attempt(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                               int64_t id, bool give_up, int64_t attempts,
                               const char *error, int64_t next_ms);

/* Row id, still pending, ends without being sent: state is "failed" or
 * "skipped", why says so. */
void tf_store_mail_row_unsent(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                              int64_t id, const char *state, const char *why);

/* ------------------------------------------------------------------ */
/* What a mail is about (views borrowed for the visitor's call)        */
/* ------------------------------------------------------------------ */

typedef struct tf_store_mail_job {
    const char *author, *email, *notify_email, *description, *review_url,
        *patchset, *base_revision, *state;
    bool has_result;
    int result;
    int64_t submitted_ms, finished_ms;
    bool notify;
    bool new_failures_only; /* its verdict counts new failures only */
} tf_store_mail_job_t;

/* One request of a job, with its build when it has one. */
typedef struct tf_store_mail_request {
    const char *builder, *state;
    bool has_result;       /* the request's result, else the build's */
    int result;
    bool has_build;
    uint64_t build_id, number;
    const char *slave, *text;
    int64_t started_ms, finished_ms;
} tf_store_mail_request_t;

typedef struct tf_store_mail_step {
    unsigned index;
    const char *name, *text, *info;
    bool has_result;
    int result;
    uint64_t log_lines, log_bytes;
} tf_store_mail_step_t;

typedef struct tf_store_mail_build {
    const char *builder, *slave, *text, *reason, *repository, *branch,
        *revision, *state;
    uint64_t number;
    bool has_result;
    int result;
    int64_t started_ms, finished_ms;
    bool in_job; /* the build of a try job's request */
} tf_store_mail_build_t;

typedef struct tf_store_mail_change {
    const char *revision, *author, *email, *message;
} tf_store_mail_change_t;

/* Try job id (visit called once) and its requests in order (visit_req).
 * TF_ENOENT when there is no such job; a visitor's non-zero return stops
 * and is returned. */
int tf_store_mail_job(tf_db_t *db, uint64_t id,
                      int (*visit)(void *arg, const tf_store_mail_job_t *j),
                      int (*visit_req)(void *arg,
                                       const tf_store_mail_request_t *r),
                      void *arg);

/* Build id (TF_ENOENT when there is none) and the result of its builder's
 * last finished continuous build before it (*has_prev, *prev). */
int tf_store_mail_build(tf_db_t *db, uint64_t id,
                        int (*visit)(void *arg,
                                     const tf_store_mail_build_t *b),
                        void *arg, bool *has_prev, int *prev);

/* The steps of build_id in order, at most limit; only_failed: the first
 * step that ended FAILURE or EXCEPTION (none when none did). */
int tf_store_mail_steps(tf_db_t *db, uint64_t build_id, unsigned limit,
                        bool only_failed,
                        int (*visit)(void *arg,
                                     const tf_store_mail_step_t *s),
                        void *arg);

/* The blamelist of build_id, oldest change first, at most limit. */
int tf_store_mail_changes(tf_db_t *db, uint64_t build_id, unsigned limit,
                          int (*visit)(void *arg,
                                       const tf_store_mail_change_t *c),
                          void *arg);

/* A step's log from from_offset on, in order, in pieces (the rest of a
 * sealed block, then each chunk of the open tail: tf_q_log_visit): visit
 * gets each piece's byte offset, line number and bytes, and returns true
 * to go on. Returns 0 or TF_ESTORE (a damaged block too, logged). */
int tf_store_mail_log(tf_db_t *db, uint64_t build_id, unsigned step,
                      uint64_t from_offset,
                      bool (*visit)(void *arg, uint64_t offset, uint64_t line,
                                    const void *data, size_t len),
                      void *arg);

/* ------------------------------------------------------------------ */
/* The outbox as the API shows it (docs/api.md, "Mail")                */
/* ------------------------------------------------------------------ */

/* Rows newest first, ids below before (0: no bound), in state (NULL: any),
 * at most limit. *out: {"mail": [...], "pending": N, "next_before": id or
 * null}. base_url ends with '/'. */
int tf_store_mail_list(tf_db_t *db, const char *base_url, uint64_t before,
                       const char *state, unsigned limit, json_t **out);

/* One row, or TF_ENOENT. */
int tf_store_mail_one(tf_db_t *db, const char *base_url, uint64_t id,
                      json_t **out);

/* The stored message of row id (malloc'd), TF_ENOENT for no such row,
 * TF_ESTATE when it has not been rendered yet. */
int tf_store_mail_message(tf_db_t *db, uint64_t id, uint8_t **out,
                          size_t *len);

#endif
