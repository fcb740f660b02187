/*
 * mail.c (store) - the SQL of result mail (see store/mail.h).
 *
 * Statement builders return static SQL text with values pointing into
 * the caller's array (tf_store_write and the write groups copy them when
 * they queue). Queries visit rows through views whose strings are
 * sqlite's, valid until the next step of the statement, which is why the
 * visitors copy what they keep.
 */
#include "store/mail.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/queries.h"
#include "tf_err.h"

/* The result of the builder's last finished continuous build before
 * build ?1 of builder ?2: what notifier modes compare a build with. */
#define PREV_RESULT_SQL                                                        \
    "SELECT b.result FROM builds b JOIN build_requests r ON "                  \
    "r.id = b.request_id WHERE b.builder = ?2 AND b.id < ?1 AND "              \
    "b.state = 'finished' AND r.job_id IS NULL AND "                           \
    "b.result IN (0, 1, 2, 4) ORDER BY b.id DESC LIMIT 1"

static tf_sqlstmt_t stmt(const char *sql, const tf_sqlval_t *v, size_t n)
{
    return (tf_sqlstmt_t){.sql = sql, .vals = v, .nvals = n};
}

/* ------------------------------------------------------------------ */
/* Queueing                                                            */
/* ------------------------------------------------------------------ */

static const char SQL_QUEUE_JOB[] =
    "INSERT INTO mail_outbox(kind, ref_id, recipients, state, created_ms, "
    "next_attempt_ms) SELECT 'job', id, json_array(coalesce(notify_email, "
    "email)), 'pending', ?2, ?2 FROM try_jobs WHERE id = ?1 AND notify = 1 "
    "AND NOT EXISTS (SELECT 1 FROM mail_outbox WHERE kind = 'job' AND "
    "ref_id = ?1)";

/* Results 2 and 4 (FAILURE, EXCEPTION) are failures, 0 and 1 (SUCCESS,
 * WARNINGS) passes. */
static const char SQL_QUEUE_BUILD[] =
    "INSERT INTO mail_outbox(kind, ref_id, recipients, state, created_ms, "
    "next_attempt_ms) SELECT 'build', ?1, ?5, 'pending', ?6, ?6 FROM "
    "(SELECT (" PREV_RESULT_SQL ") AS prev) WHERE CASE ?4 "
    "WHEN 4 THEN 1 "
    "WHEN 1 THEN ?3 IN (2, 4) "
    "WHEN 2 THEN ?3 IN (2, 4) AND prev IN (0, 1) "
    "WHEN 3 THEN ?3 IN (0, 1, 2, 4) AND prev IS NOT NULL AND "
    "  (?3 IN (2, 4)) <> (prev IN (2, 4)) "
    "ELSE 0 END "
    "AND NOT EXISTS (SELECT 1 FROM mail_outbox WHERE kind = 'build' AND "
    "ref_id = ?1)";

void tf_store_mail_queue_job(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                             uint64_t job_id, int64_t now_ms)
{
    vals[0] = tf_sql_int((int64_t)job_id);
    vals[1] = tf_sql_int(now_ms);
    *st = stmt(SQL_QUEUE_JOB, vals, 2);
}

void tf_store_mail_queue_build(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                               uint64_t build_id, const char *builder,
                               int result, int mode, const char *recipients,
                               int64_t now_ms)
{
    vals[0] = tf_sql_int((int64_t)build_id);
    vals[1] = tf_sql_text(builder);
    vals[2] = tf_sql_int(result);
    vals[3] = tf_sql_int(mode);
    vals[4] = tf_sql_text(recipients);
    vals[5] = tf_sql_int(now_ms);
    *st = stmt(SQL_QUEUE_BUILD, vals, 6);
}

/* ------------------------------------------------------------------ */
/* A row's life                                                        */
/* ------------------------------------------------------------------ */

static char *col_dup(tf_dbst_t *st, int col)
{
    const char *t = (const char *)tf_db_column_text(st, col);
    return t ? strdup(t) : NULL;
}

int tf_store_mail_pick(tf_db_t *db, tf_store_mail_row_t *r)
{
    tf_dbst_t *st = NULL;
    int rc = 0;
    if (tf_db_prepare_v2(db,
                           "SELECT id, kind, ref_id, recipients, message_id, "
                           "subject, message, attempts, created_ms, "
                           "next_attempt_ms FROM mail_outbox "
                           "WHERE state = 'pending' "
                           "ORDER BY next_attempt_ms, id LIMIT 1",
                           -1, &st, NULL) != TF_DB_OK)
        return TF_ESTORE;
    if (tf_db_step(st) == TF_DB_ROW) {
        const char *kind = (const char *)tf_db_column_text(st, 1);
        r->found = true;
        r->id = tf_db_column_int64(st, 0);
        snprintf(r->kind, sizeof(r->kind), "%s", kind ? kind : "");
        r->ref = (uint64_t)tf_db_column_int64(st, 2);
        r->recipients = col_dup(st, 3);
        r->message_id = col_dup(st, 4);
        r->subject = col_dup(st, 5);
        r->has_message = tf_db_column_type(st, 6) != TF_DB_NULL;
        if (r->has_message) {
            size_t n = (size_t)tf_db_column_bytes(st, 6);
            r->message = malloc(n ? n : 1);
            if (r->message) {
                memcpy(r->message, tf_db_column_blob(st, 6), n);
                r->message_len = n;
            } else {
                rc = TF_ENOMEM;
            }
        }
        r->attempts = tf_db_column_int64(st, 7);
        r->created_ms = tf_db_column_int64(st, 8);
        r->next_ms = tf_db_column_int64(st, 9);
    }
    tf_db_finalize(st);
    return rc;
}

void tf_store_mail_row_clear(tf_store_mail_row_t *r)
{
    free(r->recipients);
    free(r->message_id);
    free(r->subject);
    free(r->message);
    memset(r, 0, sizeof(*r));
}

void tf_store_mail_row_rendered(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                                int64_t id, const char *subject,
                                const char *message_id, const void *message,
                                size_t len, const char *recipients)
{
    vals[0] = tf_sql_text(subject);
    vals[1] = tf_sql_text(message_id);
    vals[2] = tf_sql_blob(message, len);
    vals[3] = tf_sql_text(recipients);
    vals[4] = tf_sql_int(id);
    *st = stmt("UPDATE mail_outbox SET subject = ?1, message_id = ?2, "
               "message = ?3, recipients = ?4 WHERE id = ?5 AND "
               "message IS NULL",
               vals, 5);
}

void tf_store_mail_row_sent(tf_sqlstmt_t *st, tf_sqlval_t *vals, int64_t id,
                            int64_t sent_ms, int64_t attempts)
{
    vals[0] = tf_sql_int(sent_ms);
    vals[1] = tf_sql_int(attempts);
    vals[2] = tf_sql_int(id);
    *st = stmt("UPDATE mail_outbox SET state = 'sent', sent_ms = ?1, "
               "attempts = ?2, last_error = NULL WHERE id = ?3",
               vals, 3);
}

void tf_store_mail_row_attempt(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                               int64_t id, bool give_up, int64_t attempts,
                               const char *error, int64_t next_ms)
{
    vals[0] = tf_sql_text(give_up ? "failed" : "pending");
    vals[1] = tf_sql_int(attempts);
    vals[2] = tf_sql_text(error);
    vals[3] = tf_sql_int(next_ms);
    vals[4] = tf_sql_int(id);
    *st = stmt("UPDATE mail_outbox SET state = ?1, attempts = ?2, "
               "last_error = ?3, next_attempt_ms = ?4 WHERE id = ?5",
               vals, 5);
}

void tf_store_mail_row_unsent(tf_sqlstmt_t *st, tf_sqlval_t *vals,
                              int64_t id, const char *state, const char *why)
{
    vals[0] = tf_sql_text(state);
    vals[1] = tf_sql_text(why);
    vals[2] = tf_sql_int(id);
    *st = stmt("UPDATE mail_outbox SET state = ?1, last_error = ?2 "
               "WHERE id = ?3 AND state = 'pending'",
               vals, 3);
}

/* ------------------------------------------------------------------ */
/* What a mail is about                                                */
/* ------------------------------------------------------------------ */

static const char *col_text(tf_dbst_t *st, int col)
{
    return (const char *)tf_db_column_text(st, col);
}

static bool col_null(tf_dbst_t *st, int col)
{
    return tf_db_column_type(st, col) == TF_DB_NULL;
}

static int job_requests(tf_db_t *db, uint64_t id,
                        int (*visit)(void *, const tf_store_mail_request_t *),
                        void *arg)
{
    tf_dbst_t *st = NULL;
    int rc = 0;
    if (tf_db_prepare_v2(db,
                           /* A rerun without the patch is named so. */
                           "SELECT r.builder || CASE WHEN "
                           "r.without_patch_of IS NULL THEN '' ELSE "
                           "' (without the patch)' END, r.state, r.result, "
                           "b.id, "
                           "b.number, b.slave, b.result, b.started_ms, "
                           "b.finished_ms, b.text FROM build_requests r "
                           "LEFT JOIN builds b ON b.id = r.build_id "
                           "WHERE r.job_id = ?1 ORDER BY r.id",
                           -1, &st, NULL) != TF_DB_OK)
        return TF_ESTORE;
    tf_db_bind_int64(st, 1, (int64_t)id);
    while (rc == 0 && tf_db_step(st) == TF_DB_ROW) {
        tf_store_mail_request_t r = {
            .builder = col_text(st, 0),
            .state = col_text(st, 1),
            .has_build = !col_null(st, 3),
            .build_id = (uint64_t)tf_db_column_int64(st, 3),
            .number = (uint64_t)tf_db_column_int64(st, 4),
            .slave = col_text(st, 5),
            .started_ms = tf_db_column_int64(st, 7),
            .finished_ms = tf_db_column_int64(st, 8),
            .text = col_text(st, 9),
        };
        int col = !col_null(st, 2) ? 2 : !col_null(st, 6) ? 6 : -1;
        if (col >= 0) {
            r.has_result = true;
            r.result = tf_db_column_int(st, col);
        }
        rc = visit(arg, &r);
    }
    tf_db_finalize(st);
    return rc;
}

int tf_store_mail_job(tf_db_t *db, uint64_t id,
                      int (*visit)(void *arg, const tf_store_mail_job_t *j),
                      int (*visit_req)(void *arg,
                                       const tf_store_mail_request_t *r),
                      void *arg)
{
    tf_dbst_t *st = NULL;
    int rc = TF_ENOENT;
    if (tf_db_prepare_v2(db,
                           "SELECT author, email, notify_email, description, "
                           "review_url, patchset, base_revision, state, "
                           "result, submitted_ms, finished_ms, notify, "
                           "new_failures_only "
                           "FROM try_jobs WHERE id = ?1",
                           -1, &st, NULL) != TF_DB_OK)
        return TF_ESTORE;
    tf_db_bind_int64(st, 1, (int64_t)id);
    if (tf_db_step(st) == TF_DB_ROW) {
        tf_store_mail_job_t j = {
            .author = col_text(st, 0),
            .email = col_text(st, 1),
            .notify_email = col_text(st, 2),
            .description = col_text(st, 3),
            .review_url = col_text(st, 4),
            .patchset = col_text(st, 5),
            .base_revision = col_text(st, 6),
            .state = col_text(st, 7),
            .has_result = !col_null(st, 8),
            .result = tf_db_column_int(st, 8),
            .submitted_ms = tf_db_column_int64(st, 9),
            .finished_ms = tf_db_column_int64(st, 10),
            .notify = tf_db_column_int(st, 11) != 0,
            .new_failures_only = tf_db_column_int(st, 12) != 0,
        };
        rc = visit(arg, &j);
    }
    tf_db_finalize(st);
    return rc ? rc : job_requests(db, id, visit_req, arg);
}

int tf_store_mail_build(tf_db_t *db, uint64_t id,
                        int (*visit)(void *arg,
                                     const tf_store_mail_build_t *b),
                        void *arg, bool *has_prev, int *prev)
{
    tf_dbst_t *st = NULL;
    char *builder = NULL;
    int rc = TF_ENOENT;
    *has_prev = false;
    if (tf_db_prepare_v2(db,
                           "SELECT b.builder, b.number, b.slave, b.result, "
                           "b.started_ms, b.finished_ms, b.text, b.reason, "
                           "b.repository, b.branch, "
                           "coalesce(b.got_revision, b.revision), b.state, "
                           "r.job_id FROM builds b LEFT JOIN build_requests r "
                           "ON r.id = b.request_id WHERE b.id = ?1",
                           -1, &st, NULL) != TF_DB_OK)
        return TF_ESTORE;
    tf_db_bind_int64(st, 1, (int64_t)id);
    if (tf_db_step(st) == TF_DB_ROW) {
        tf_store_mail_build_t b = {
            .builder = col_text(st, 0),
            .number = (uint64_t)tf_db_column_int64(st, 1),
            .slave = col_text(st, 2),
            .has_result = !col_null(st, 3),
            .result = tf_db_column_int(st, 3),
            .started_ms = tf_db_column_int64(st, 4),
            .finished_ms = tf_db_column_int64(st, 5),
            .text = col_text(st, 6),
            .reason = col_text(st, 7),
            .repository = col_text(st, 8),
            .branch = col_text(st, 9),
            .revision = col_text(st, 10),
            .state = col_text(st, 11),
            .in_job = !col_null(st, 12),
        };
        builder = strdup(b.builder ? b.builder : "");
        rc = builder ? visit(arg, &b) : TF_ENOMEM;
    }
    tf_db_finalize(st);
    if (rc)
        goto out;
    if (tf_db_prepare_v2(db, PREV_RESULT_SQL, -1, &st, NULL) != TF_DB_OK) {
        rc = TF_ESTORE;
        goto out;
    }
    tf_db_bind_int64(st, 1, (int64_t)id);
    tf_db_bind_text(st, 2, builder, -1, TF_DB_TRANSIENT);
    if (tf_db_step(st) == TF_DB_ROW) {
        *has_prev = true;
        *prev = tf_db_column_int(st, 0);
    }
    tf_db_finalize(st);
out:
    free(builder);
    return rc;
}

int tf_store_mail_steps(tf_db_t *db, uint64_t build_id, unsigned limit,
                        bool only_failed,
                        int (*visit)(void *arg,
                                     const tf_store_mail_step_t *s),
                        void *arg)
{
    tf_dbst_t *st = NULL;
    int rc = 0;
    if (tf_db_prepare_v2(
            db,
            only_failed
                ? "SELECT idx, name, result, text, info, log_lines, "
                  "log_bytes FROM steps WHERE build_id = ?1 AND "
                  "result IN (2, 4) ORDER BY idx LIMIT 1"
                : "SELECT idx, name, result, text, info, log_lines, "
                  "log_bytes FROM steps WHERE build_id = ?1 ORDER BY idx "
                  "LIMIT ?2",
            -1, &st, NULL) != TF_DB_OK)
        return TF_ESTORE;
    tf_db_bind_int64(st, 1, (int64_t)build_id);
    if (!only_failed)
        tf_db_bind_int(st, 2, (int)limit);
    while (rc == 0 && tf_db_step(st) == TF_DB_ROW) {
        tf_store_mail_step_t s = {
            .index = (unsigned)tf_db_column_int(st, 0),
            .name = col_text(st, 1),
            .has_result = !col_null(st, 2),
            .result = tf_db_column_int(st, 2),
            .text = col_text(st, 3),
            .info = col_text(st, 4),
            .log_lines = (uint64_t)tf_db_column_int64(st, 5),
            .log_bytes = (uint64_t)tf_db_column_int64(st, 6),
        };
        rc = visit(arg, &s);
    }
    tf_db_finalize(st);
    return rc;
}

int tf_store_mail_changes(tf_db_t *db, uint64_t build_id, unsigned limit,
                          int (*visit)(void *arg,
                                       const tf_store_mail_change_t *c),
                          void *arg)
{
    tf_dbst_t *st = NULL;
    int rc = 0;
    if (tf_db_prepare_v2(db,
                           "SELECT c.revision, c.author, c.email, c.message "
                           "FROM build_changes bc JOIN changes c ON "
                           "c.id = bc.change_id WHERE bc.build_id = ?1 "
                           "ORDER BY c.id LIMIT ?2",
                           -1, &st, NULL) != TF_DB_OK)
        return TF_ESTORE;
    tf_db_bind_int64(st, 1, (int64_t)build_id);
    tf_db_bind_int(st, 2, (int)limit);
    while (rc == 0 && tf_db_step(st) == TF_DB_ROW) {
        tf_store_mail_change_t c = {
            .revision = col_text(st, 0),
            .author = col_text(st, 1),
            .email = col_text(st, 2),
            .message = col_text(st, 3),
        };
        rc = visit(arg, &c);
    }
    tf_db_finalize(st);
    return rc;
}

/* The log is read in windows of chunks starting within this many bytes:
 * an engine that materializes a result (PostgreSQL) then never holds
 * more than about a window however long the log and however early the
 * visitor stops. Chunks are contiguous, so a window without a chunk
 * ending past the position is the end. */
#define MAIL_LOG_WINDOW (4ull << 20)

int tf_store_mail_log(tf_db_t *db, uint64_t build_id, unsigned step,
                      uint64_t from_offset,
                      bool (*visit)(void *arg, uint64_t offset, uint64_t line,
                                    const void *data, size_t len),
                      void *arg)
{
    int rc = tf_q_log_visit(db, build_id, step, from_offset, visit, arg);
    return rc == TF_ECORRUPT || rc == TF_ENOMEM ? TF_ESTORE : rc;
}

/* ------------------------------------------------------------------ */
/* The outbox as the API shows it                                      */
/* ------------------------------------------------------------------ */

#define MAIL_COLS                                                              \
    "id, kind, ref_id, recipients, subject, message_id, state, attempts, "     \
    "created_ms, next_attempt_ms, sent_ms, last_error, length(message) "

static json_t *mail_row(tf_dbst_t *st, const char *base)
{
    json_int_t id = tf_db_column_int64(st, 0);
    const char *kind = (const char *)tf_db_column_text(st, 1);
    json_int_t ref = tf_db_column_int64(st, 2);
    const char *state = (const char *)tf_db_column_text(st, 6);
    const char *rc = (const char *)tf_db_column_text(st, 3);
    json_t *rcpt = rc ? json_loads(rc, 0, NULL) : NULL;
    char url[600];
    bool job = kind && strcmp(kind, "job") == 0;
    snprintf(url, sizeof(url), "%sapi/v1/%s/%" JSON_INTEGER_FORMAT, base,
             job ? "jobs" : "builds", ref);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(id));
    json_object_set_new(o, "kind", tf_col_text(st, 1));
    json_object_set_new(o, job ? "job_id" : "build_id", json_integer(ref));
    json_object_set_new(o, "about", json_string(url));
    json_object_set_new(o, "recipients", rcpt ? rcpt : json_array());
    json_object_set_new(o, "subject", tf_col_text(st, 4));
    json_object_set_new(o, "message_id", tf_col_text(st, 5));
    json_object_set_new(o, "state", tf_col_text(st, 6));
    json_object_set_new(o, "attempts", tf_col_int(st, 7));
    json_object_set_new(o, "created_ms", tf_col_int(st, 8));
    json_object_set_new(o, "next_attempt_ms",
                        state && strcmp(state, "pending") == 0
                            ? tf_col_int(st, 9)
                            : json_null());
    json_object_set_new(o, "sent_ms", tf_col_int(st, 10));
    json_object_set_new(o, "last_error", tf_col_text(st, 11));
    json_object_set_new(o, "size", tf_col_int(st, 12));
    snprintf(url, sizeof(url), "%sapi/v1/mail/%" JSON_INTEGER_FORMAT, base,
             id);
    json_object_set_new(o, "url", json_string(url));
    return o;
}

int tf_store_mail_list(tf_db_t *db, const char *base_url, uint64_t before,
                       const char *state, unsigned limit, json_t **out)
{
    tf_dbst_t *st = NULL;
    if (tf_db_prepare_v2(db,
                           "SELECT " MAIL_COLS "FROM mail_outbox WHERE "
                           "id < ?1 AND (?2 IS NULL OR state = ?2) "
                           "ORDER BY id DESC LIMIT ?3",
                           -1, &st, NULL) != TF_DB_OK)
        return TF_ESTORE;
    tf_db_bind_int64(st, 1, before ? (int64_t)before : INT64_MAX);
    if (state)
        tf_db_bind_text(st, 2, state, -1, TF_DB_TRANSIENT);
    else
        tf_db_bind_null(st, 2);
    tf_db_bind_int64(st, 3, (int64_t)limit + 1);
    json_t *arr = json_array();
    unsigned n = 0;
    json_int_t last = 0;
    bool more = false;
    while (tf_db_step(st) == TF_DB_ROW) {
        if (n == limit) {
            more = true;
            break;
        }
        last = tf_db_column_int64(st, 0);
        json_array_append_new(arr, mail_row(st, base_url));
        n++;
    }
    tf_db_finalize(st);
    json_int_t pending = 0;
    if (tf_db_prepare_v2(db,
                           "SELECT count(*) FROM mail_outbox WHERE "
                           "state = 'pending' AND next_attempt_ms >= 0",
                           -1, &st, NULL) == TF_DB_OK &&
        tf_db_step(st) == TF_DB_ROW)
        pending = tf_db_column_int64(st, 0);
    tf_db_finalize(st);
    *out = json_object();
    json_object_set_new(*out, "mail", arr);
    json_object_set_new(*out, "pending", json_integer(pending));
    json_object_set_new(*out, "next_before",
                        more ? json_integer(last) : json_null());
    return 0;
}

int tf_store_mail_one(tf_db_t *db, const char *base_url, uint64_t id,
                      json_t **out)
{
    tf_dbst_t *st = NULL;
    int rc = TF_ENOENT;
    if (tf_db_prepare_v2(db,
                           "SELECT " MAIL_COLS "FROM mail_outbox WHERE id = ?1",
                           -1, &st, NULL) != TF_DB_OK)
        return TF_ESTORE;
    tf_db_bind_int64(st, 1, (int64_t)id);
    if (tf_db_step(st) == TF_DB_ROW) {
        *out = mail_row(st, base_url);
        rc = 0;
    }
    tf_db_finalize(st);
    return rc;
}

int tf_store_mail_message(tf_db_t *db, uint64_t id, uint8_t **out,
                          size_t *len)
{
    tf_dbst_t *st = NULL;
    int rc = TF_ENOENT;
    if (tf_db_prepare_v2(db, "SELECT message FROM mail_outbox WHERE id = ?1",
                           -1, &st, NULL) != TF_DB_OK)
        return TF_ESTORE;
    tf_db_bind_int64(st, 1, (int64_t)id);
    if (tf_db_step(st) == TF_DB_ROW) {
        rc = 0;
        if (tf_db_column_type(st, 0) == TF_DB_NULL) {
            rc = TF_ESTATE;
        } else {
            *len = (size_t)tf_db_column_bytes(st, 0);
            *out = malloc(*len ? *len : 1);
            if (*out)
                memcpy(*out, tf_db_column_blob(st, 0), *len);
            else
                rc = TF_ENOMEM;
        }
    }
    tf_db_finalize(st);
    return rc;
}
