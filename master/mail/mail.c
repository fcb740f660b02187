/*
 * mail.c - the outbox, its sender thread, its endpoints and `mail preview`
 * (see mail.h for the design and the row states).
 *
 * Threads: the queueing functions, the endpoints and the lifecycle calls
 * run on the loop thread; sender_main and everything it calls runs on the
 * sender thread. They share only the tf_mail_t below, whose fields say who
 * may touch them. The sender works from a private copy of the settings it
 * needs (settings_t), swapped under the mutex on a config reload, because
 * the loop thread frees the old config right after a reload.
 *
 * Rendering reads the rows a mail is about (a job, its builds and their
 * failing steps' logs; or a build, its steps and its blamelist) on a read
 * connection, turns them into the plain structs of mail_render.h and calls
 * the pure renderer. The same code serves the sender and the preview
 * command, so a preview shows exactly what would be sent.
 */
#include "mail/mail.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "admin/cli.h"
#include "clock.h"
#include "crypto.h"
#include "log.h"
#include "mail/mail_render.h"
#include "core/master.h"
#include "names.h"
#include "store/queries.h"
#include "tf_err.h"
#include "core/users.h"
#include "util.h"

extern char **environ;

#define SUB "mail"
#define POLL_MS 60000               /* the outbox is read at least this often */
#define STORE_RETRY_MS 5000         /* after a failed read of the outbox */
#define MAX_RCPT 100
#define MAX_STEPS 256
#define MAX_CHANGES 100
#define LOG_SCAN_HEAD (32ull << 20) /* bytes of a long log searched */
#define LOG_SCAN_TAIL (1ull << 20)  /* bytes read at its end for the tail */
#define REPLY_MAX 300
#define ERR_MAX 800
#define CMD_OUT_MAX 2048            /* what a sendmail command says, kept */

/* ------------------------------------------------------------------ */
/* Settings: what the sender needs from the config, owned              */
/* ------------------------------------------------------------------ */

typedef struct bset {
    char *builder;
    char **patterns; /* the builder's, or the mail section's */
    size_t npatterns;
    char **extra;    /* extra_recipients */
    size_t nextra;
    tf_mail_mode_t mode;
} bset_t;

typedef struct settings {
    unsigned refs;   /* under tf_mail_t.mu */
    char *name;
    char *base_url;
    tf_cfg_mail_t mail;
    bset_t *builders;
    size_t nbuilders;
} settings_t;

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static int strv_dup(char *const *src, size_t n, char ***out)
{
    *out = NULL;
    if (!src)
        return 0;
    char **v = calloc(n + 1, sizeof(*v));
    if (!v)
        return TF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!(v[i] = strdup(src[i]))) {
            strv_free(v, i);
            return TF_ENOMEM;
        }
    }
    *out = v;
    return 0;
}

static char *dup_or_null(const char *s, bool *oom)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        *oom = true;
    return d;
}

static void settings_free(settings_t *s)
{
    if (!s)
        return;
    free(s->name);
    free(s->base_url);
    tf_cfg_mail_t *m = &s->mail;
    free(m->from);
    free(m->from_name);
    free(m->subject_prefix);
    free(m->smtp_host);
    free(m->smtp_username);
    if (m->smtp_password) {
        explicit_bzero(m->smtp_password, strlen(m->smtp_password));
        free(m->smtp_password);
    }
    free(m->smtp_ca_file);
    strv_free(m->sendmail, m->nsendmail);
    strv_free(m->error_patterns, m->npatterns);
    for (size_t i = 0; s->builders && i < s->nbuilders; i++) {
        free(s->builders[i].builder);
        strv_free(s->builders[i].patterns, s->builders[i].npatterns);
        strv_free(s->builders[i].extra, s->builders[i].nextra);
    }
    free(s->builders);
    free(s);
}

/* A deep copy of what mail needs from c. NULL when out of memory. */
static settings_t *settings_new(const tf_config_t *c)
{
    settings_t *s = calloc(1, sizeof(*s));
    bool oom = false;
    if (!s)
        return NULL;
    s->refs = 1;
    s->name = dup_or_null(c->name, &oom);
    s->base_url = dup_or_null(c->public_url, &oom);
    const tf_cfg_mail_t *src = &c->mail;
    tf_cfg_mail_t *m = &s->mail;
    *m = *src; /* numbers and flags; every pointer is replaced below */
    m->from = dup_or_null(src->from, &oom);
    m->from_name = dup_or_null(src->from_name, &oom);
    m->subject_prefix = dup_or_null(src->subject_prefix, &oom);
    m->smtp_host = dup_or_null(src->smtp_host, &oom);
    m->smtp_username = dup_or_null(src->smtp_username, &oom);
    m->smtp_password = dup_or_null(src->smtp_password, &oom);
    m->smtp_ca_file = dup_or_null(src->smtp_ca_file, &oom);
    oom = oom || strv_dup(src->sendmail, src->nsendmail, &m->sendmail) ||
          strv_dup(src->error_patterns, src->npatterns, &m->error_patterns);
    s->builders = calloc(c->nbuilders ? c->nbuilders : 1, sizeof(bset_t));
    if (!s->builders)
        oom = true;
    for (size_t i = 0; !oom && i < c->nbuilders; i++) {
        const tf_cfg_builder_t *b = &c->builders[i];
        bset_t *x = &s->builders[s->nbuilders++];
        x->builder = dup_or_null(b->name, &oom);
        x->mode = b->mail.mode;
        x->nextra = b->mail.nextra;
        oom = oom || strv_dup(b->mail.extra_recipients, b->mail.nextra,
                              &x->extra);
        if (b->mail.has_patterns) {
            x->npatterns = b->mail.npatterns;
            oom = oom || strv_dup(b->mail.error_patterns, b->mail.npatterns,
                                  &x->patterns);
        } else {
            x->npatterns = src->npatterns;
            oom = oom || strv_dup(src->error_patterns, src->npatterns,
                                  &x->patterns);
        }
    }
    if (oom) {
        settings_free(s);
        return NULL;
    }
    return s;
}

static const bset_t *settings_builder(const settings_t *s, const char *name)
{
    for (size_t i = 0; name && i < s->nbuilders; i++)
        if (strcmp(s->builders[i].builder, name) == 0)
            return &s->builders[i];
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The sender's shared state                                           */
/* ------------------------------------------------------------------ */

typedef struct tf_mail {
    tf_store_t *store;          /* set at start, read by both threads */
    pthread_t thread;
    bool started;               /* loop thread */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool wake;                  /* under mu: look at the outbox now */
    atomic_bool stop;           /* set under mu, read anywhere */
    settings_t *settings;       /* under mu */
    uint64_t writes_issued;     /* under mu */
    uint64_t writes_done;       /* under mu */
    int last_write_rc;          /* under mu */
    bool wake_after_group;      /* loop thread: a row is in the group */
    bool curl_ready;            /* loop thread */
} tf_mail_t;


static settings_t *settings_hold(tf_mail_t *ml)
{
    pthread_mutex_lock(&ml->mu);
    settings_t *s = ml->settings;
    s->refs++;
    pthread_mutex_unlock(&ml->mu);
    return s;
}

static void settings_release(tf_mail_t *ml, settings_t *s)
{
    pthread_mutex_lock(&ml->mu);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&ml->mu);
    if (last)
        settings_free(s);
}

static bool stopping(tf_mail_t *ml)
{
    return ml && atomic_load(&ml->stop);
}

static void mail_wake(tf_mail_t *ml)
{
    pthread_mutex_lock(&ml->mu);
    ml->wake = true;
    pthread_cond_broadcast(&ml->cond);
    pthread_mutex_unlock(&ml->mu);
}

/* ------------------------------------------------------------------ */
/* Strings that live as long as one rendering                          */
/* ------------------------------------------------------------------ */

typedef struct pool {
    char **v;
    size_t n;
    size_t cap;
    bool oom;
} pool_t;

/* Keeps s (malloc'd) until pool_free; returns it. */
static const char *pool_keep(pool_t *p, char *s)
{
    if (!s)
        return NULL;
    if (p->n == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 32;
        char **nv = realloc(p->v, ncap * sizeof(*nv));
        if (!nv) {
            free(s);
            p->oom = true;
            return NULL;
        }
        p->v = nv;
        p->cap = ncap;
    }
    p->v[p->n++] = s;
    return s;
}

static const char *pool_dup(pool_t *p, const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        p->oom = true;
    return pool_keep(p, d);
}

__attribute__((format(printf, 2, 3))) static const char *
pool_fmt(pool_t *p, const char *fmt, ...)
{
    char buf[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return pool_dup(p, buf);
}

static const char *pool_col(pool_t *p, sqlite3_stmt *st, int col)
{
    return pool_dup(p, (const char *)sqlite3_column_text(st, col));
}

static void pool_free(pool_t *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->v[i]);
    free(p->v);
    memset(p, 0, sizeof(*p));
}

/* ------------------------------------------------------------------ */
/* Reading what a mail is about                                        */
/* ------------------------------------------------------------------ */

static bool is_failure(tf_result_t r)
{
    return r == TF_FAILURE || r == TF_EXCEPTION;
}

/* The excerpt of a step's log (malloc'd), or NULL when out of memory. A
 * log longer than LOG_SCAN_HEAD + LOG_SCAN_TAIL is searched in its first
 * LOG_SCAN_HEAD bytes and its tail read from its last LOG_SCAN_TAIL. */
static char *step_excerpt(sqlite3 *db, const settings_t *s,
                          const char *builder, int64_t build_id, int step,
                          uint64_t log_bytes)
{
    const bset_t *bs = settings_builder(s, builder);
    const char *const *pats = (const char *const *)(bs ? bs->patterns
                                                       : s->mail.error_patterns);
    size_t npats = bs ? bs->npatterns : s->mail.npatterns;
    tf_excerpt_t *e = tf_excerpt_new(pats, npats, s->mail.tail_lines,
                                     s->mail.excerpt_max_bytes);
    sqlite3_stmt *st = NULL;
    char *out = NULL;
    bool split = log_bytes > LOG_SCAN_HEAD + LOG_SCAN_TAIL;
    if (!e)
        return NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT offset, line, data FROM log_chunks "
                           "WHERE build_id = ?1 AND step = ?2 AND "
                           "offset + length(data) > ?3 ORDER BY offset",
                           -1, &st, NULL) != SQLITE_OK)
        goto out;
    for (int pass = 0; pass < (split ? 2 : 1); pass++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, build_id);
        sqlite3_bind_int(st, 2, step);
        sqlite3_bind_int64(st, 3, pass == 0 ? 0
                                            : (int64_t)(log_bytes -
                                                        LOG_SCAN_TAIL));
        bool first = true;
        while (sqlite3_step(st) == SQLITE_ROW) {
            uint64_t off = (uint64_t)sqlite3_column_int64(st, 0);
            if (pass == 0 && split && off >= LOG_SCAN_HEAD)
                break;
            if (pass == 1 && first)
                tf_excerpt_jump(e, (uint64_t)sqlite3_column_int64(st, 1));
            first = false;
            tf_excerpt_feed(e, sqlite3_column_blob(st, 2),
                            (size_t)sqlite3_column_bytes(st, 2));
        }
    }
    out = tf_excerpt_finish(e);
out:
    sqlite3_finalize(st);
    tf_excerpt_free(e);
    return out;
}

/* Fills one step from a row of
 * "idx, name, result, text, info, log_lines, log_bytes". */
static void step_from_row(pool_t *p, const settings_t *s, sqlite3_stmt *st,
                          int64_t build_id, tf_mail_step_t *out)
{
    out->index = (unsigned)sqlite3_column_int(st, 0);
    out->name = pool_col(p, st, 1);
    out->result = sqlite3_column_type(st, 2) == SQLITE_NULL
                      ? TF_SKIPPED
                      : (tf_result_t)sqlite3_column_int(st, 2);
    out->text = pool_col(p, st, 3);
    out->info = pool_col(p, st, 4);
    out->log_lines = (uint64_t)sqlite3_column_int64(st, 5);
    out->log_url = pool_fmt(p, "%sapi/v1/builds/%" PRId64 "/steps/%u/log",
                            s->base_url, build_id, out->index);
}

#define STEP_COLS "idx, name, result, text, info, log_lines, log_bytes "

/* The first step of a build that failed it, with its excerpt; *found
 * false when none did. */
static int failed_step(sqlite3 *db, pool_t *p, const settings_t *s,
                       const char *builder, int64_t build_id,
                       tf_mail_step_t *out, bool *found)
{
    sqlite3_stmt *st = NULL;
    *found = false;
    if (sqlite3_prepare_v2(db,
                           "SELECT " STEP_COLS "FROM steps WHERE "
                           "build_id = ?1 AND result IN (2, 4) "
                           "ORDER BY idx LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_int64(st, 1, build_id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        step_from_row(p, s, st, build_id, out);
        out->excerpt = pool_keep(p, step_excerpt(db, s, builder, build_id,
                                                 (int)out->index,
                                                 (uint64_t)sqlite3_column_int64(
                                                     st, 6)));
        if (!out->excerpt)
            p->oom = true;
        *found = true;
    }
    sqlite3_finalize(st);
    return 0;
}

typedef struct job_data {
    pool_t pool;
    tf_mail_job_t job;
    tf_mail_build_t *builds;
    tf_mail_step_t *steps; /* the failed step of builds[i], if any */
    size_t nbuilds;
    tf_mail_rcpt_t to;
    bool notify;
} job_data_t;

typedef struct load {
    const settings_t *s;
    uint64_t id;
    const char *extra_json; /* a notice's recipients stored in its row, or
                               NULL for the builder's configured ones */
    job_data_t *jd;
    struct notice_data *nd;
} load_t;

static int job_builds(sqlite3 *db, const settings_t *s, job_data_t *jd)
{
    pool_t *p = &jd->pool;
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    int rc = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT r.builder, r.state, r.result, b.id, "
                           "b.number, b.slave, b.result, b.started_ms, "
                           "b.finished_ms, b.text FROM build_requests r "
                           "LEFT JOIN builds b ON b.id = r.build_id "
                           "WHERE r.job_id = ?1 ORDER BY r.id",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_int64(st, 1, (int64_t)jd->job.id);
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        if (jd->nbuilds == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            tf_mail_build_t *nb = realloc(jd->builds, ncap * sizeof(*nb));
            tf_mail_step_t *ns = nb ? realloc(jd->steps, ncap * sizeof(*ns))
                                    : NULL;
            if (nb)
                jd->builds = nb;
            if (!nb || !ns) {
                rc = TF_ENOMEM;
                break;
            }
            jd->steps = ns;
            cap = ncap;
        }
        tf_mail_build_t *b = &jd->builds[jd->nbuilds];
        memset(b, 0, sizeof(*b));
        memset(&jd->steps[jd->nbuilds], 0, sizeof(jd->steps[0]));
        jd->nbuilds++;
        b->builder = pool_col(p, st, 0);
        b->state = pool_col(p, st, 1);
        if (sqlite3_column_type(st, 2) != SQLITE_NULL) {
            b->has_result = true;
            b->result = (tf_result_t)sqlite3_column_int(st, 2);
        } else if (sqlite3_column_type(st, 6) != SQLITE_NULL) {
            b->has_result = true;
            b->result = (tf_result_t)sqlite3_column_int(st, 6);
        }
        if (sqlite3_column_type(st, 3) != SQLITE_NULL) {
            b->has_build = true;
            b->build_id = (uint64_t)sqlite3_column_int64(st, 3);
            b->number = (uint64_t)sqlite3_column_int64(st, 4);
            b->slave = pool_col(p, st, 5);
            b->started_ms = sqlite3_column_int64(st, 7);
            b->finished_ms = sqlite3_column_int64(st, 8);
            b->text = pool_col(p, st, 9);
            b->url = pool_fmt(p, "%sapi/v1/builds/%" PRIu64, s->base_url,
                              b->build_id);
        }
    }
    sqlite3_finalize(st);
    /* The arrays have stopped moving: point at the failed steps. */
    for (size_t i = 0; rc == 0 && i < jd->nbuilds; i++) {
        tf_mail_build_t *b = &jd->builds[i];
        bool found = false;
        if (b->has_build && b->has_result && is_failure(b->result))
            rc = failed_step(db, p, s, b->builder, (int64_t)b->build_id,
                             &jd->steps[i], &found);
        b->failed = found ? &jd->steps[i] : NULL;
    }
    return rc;
}

static int load_job_fn(sqlite3 *db, void *arg)
{
    load_t *l = arg;
    job_data_t *jd = l->jd;
    pool_t *p = &jd->pool;
    sqlite3_stmt *st = NULL;
    int rc = TF_ENOENT;
    if (sqlite3_prepare_v2(db,
                           "SELECT author, email, notify_email, description, "
                           "review_url, patchset, base_revision, state, "
                           "result, submitted_ms, finished_ms, notify "
                           "FROM try_jobs WHERE id = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_int64(st, 1, (int64_t)l->id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        tf_mail_job_t *j = &jd->job;
        j->id = l->id;
        j->author = pool_col(p, st, 0);
        j->author_email = pool_col(p, st, 1);
        const char *to = pool_col(p, st, 2);
        j->description = pool_col(p, st, 3);
        j->review_url = pool_col(p, st, 4);
        j->patchset = pool_col(p, st, 5);
        j->base_revision = pool_col(p, st, 6);
        j->state = pool_col(p, st, 7);
        if (sqlite3_column_type(st, 8) != SQLITE_NULL) {
            j->has_result = true;
            j->result = (tf_result_t)sqlite3_column_int(st, 8);
        }
        j->submitted_ms = sqlite3_column_int64(st, 9);
        j->finished_ms = sqlite3_column_int64(st, 10);
        jd->notify = sqlite3_column_int(st, 11) != 0;
        j->url = pool_fmt(p, "%sapi/v1/jobs/%" PRIu64, l->s->base_url, j->id);
        jd->to.addr = to ? to : j->author_email;
        /* The author's name goes with the author's own address only. */
        jd->to.name = j->author_email && jd->to.addr &&
                              strcasecmp(jd->to.addr, j->author_email) == 0
                          ? j->author
                          : NULL;
        rc = 0;
    }
    sqlite3_finalize(st);
    if (rc == 0)
        rc = job_builds(db, l->s, jd);
    if (rc == 0 && p->oom)
        rc = TF_ENOMEM;
    jd->job.builds = jd->builds;
    jd->job.nbuilds = jd->nbuilds;
    if (jd->to.addr && tf_email_valid(jd->to.addr)) {
        jd->job.to = &jd->to;
        jd->job.nto = 1;
    }
    return rc;
}

static void job_data_free(job_data_t *jd)
{
    free(jd->builds);
    free(jd->steps);
    pool_free(&jd->pool);
}

typedef struct notice_data {
    pool_t pool;
    tf_mail_notice_t n;
    tf_mail_step_t *steps;
    size_t nsteps;
    tf_mail_step_t failed;
    tf_mail_change_t *changes;
    size_t nchanges;
    tf_mail_rcpt_t *to;
    size_t nto;
    bool in_job;
} notice_data_t;

static void add_rcpt(notice_data_t *nd, const char *name, const char *addr)
{
    if (!addr || !tf_email_valid(addr) || nd->nto >= MAX_RCPT)
        return;
    for (size_t i = 0; i < nd->nto; i++)
        if (strcasecmp(nd->to[i].addr, addr) == 0)
            return;
    nd->to[nd->nto++] = (tf_mail_rcpt_t){.name = name, .addr = addr};
}

static int notice_steps(sqlite3 *db, const settings_t *s, notice_data_t *nd)
{
    pool_t *p = &nd->pool;
    tf_mail_build_t *b = &nd->n.build;
    sqlite3_stmt *st = NULL;
    int64_t fail_bytes = -1;
    if (sqlite3_prepare_v2(db,
                           "SELECT " STEP_COLS "FROM steps WHERE "
                           "build_id = ?1 ORDER BY idx LIMIT ?2",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    nd->steps = calloc(MAX_STEPS, sizeof(*nd->steps));
    if (!nd->steps) {
        sqlite3_finalize(st);
        return TF_ENOMEM;
    }
    sqlite3_bind_int64(st, 1, (int64_t)b->build_id);
    sqlite3_bind_int(st, 2, MAX_STEPS);
    while (sqlite3_step(st) == SQLITE_ROW) {
        tf_mail_step_t *x = &nd->steps[nd->nsteps++];
        step_from_row(p, s, st, (int64_t)b->build_id, x);
        if (fail_bytes < 0 && b->has_result && is_failure(b->result) &&
            is_failure(x->result)) {
            nd->failed = *x;
            fail_bytes = sqlite3_column_int64(st, 6);
        }
    }
    sqlite3_finalize(st);
    if (fail_bytes >= 0) {
        nd->failed.excerpt = pool_keep(
            p, step_excerpt(db, s, b->builder, (int64_t)b->build_id,
                            (int)nd->failed.index, (uint64_t)fail_bytes));
        if (!nd->failed.excerpt)
            return TF_ENOMEM;
        b->failed = &nd->failed;
    }
    nd->n.steps = nd->steps;
    nd->n.nsteps = nd->nsteps;
    return 0;
}

static int notice_changes(sqlite3 *db, notice_data_t *nd)
{
    pool_t *p = &nd->pool;
    sqlite3_stmt *st = NULL;
    nd->changes = calloc(MAX_CHANGES, sizeof(*nd->changes));
    if (!nd->changes)
        return TF_ENOMEM;
    if (sqlite3_prepare_v2(db,
                           "SELECT c.revision, c.author, c.email, c.message "
                           "FROM build_changes bc JOIN changes c ON "
                           "c.id = bc.change_id WHERE bc.build_id = ?1 "
                           "ORDER BY c.id LIMIT ?2",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_int64(st, 1, (int64_t)nd->n.build.build_id);
    sqlite3_bind_int(st, 2, MAX_CHANGES);
    while (sqlite3_step(st) == SQLITE_ROW) {
        tf_mail_change_t *c = &nd->changes[nd->nchanges++];
        c->revision = pool_col(p, st, 0);
        c->author = pool_col(p, st, 1);
        c->email = pool_col(p, st, 2);
        c->message = pool_col(p, st, 3);
    }
    sqlite3_finalize(st);
    nd->n.changes = nd->changes;
    nd->n.nchanges = nd->nchanges;
    return 0;
}

/* The result of the builder's last finished continuous build before
 * build_id; the same question tf_mail_build_done asks in its INSERT. */
#define PREV_RESULT_SQL                                                        \
    "SELECT b.result FROM builds b JOIN build_requests r ON "                  \
    "r.id = b.request_id WHERE b.builder = ?2 AND b.id < ?1 AND "              \
    "b.state = 'finished' AND r.job_id IS NULL AND "                           \
    "b.result IN (0, 1, 2, 4) ORDER BY b.id DESC LIMIT 1"

static int load_notice_fn(sqlite3 *db, void *arg)
{
    load_t *l = arg;
    notice_data_t *nd = l->nd;
    pool_t *p = &nd->pool;
    tf_mail_build_t *b = &nd->n.build;
    sqlite3_stmt *st = NULL;
    int rc = TF_ENOENT;
    if (sqlite3_prepare_v2(db,
                           "SELECT b.builder, b.number, b.slave, b.result, "
                           "b.started_ms, b.finished_ms, b.text, b.reason, "
                           "b.repository, b.branch, "
                           "coalesce(b.got_revision, b.revision), b.state, "
                           "r.job_id FROM builds b LEFT JOIN build_requests r "
                           "ON r.id = b.request_id WHERE b.id = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_int64(st, 1, (int64_t)l->id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        b->builder = pool_col(p, st, 0);
        b->has_build = true;
        b->build_id = l->id;
        b->number = (uint64_t)sqlite3_column_int64(st, 1);
        b->slave = pool_col(p, st, 2);
        if (sqlite3_column_type(st, 3) != SQLITE_NULL) {
            b->has_result = true;
            b->result = (tf_result_t)sqlite3_column_int(st, 3);
        }
        b->started_ms = sqlite3_column_int64(st, 4);
        b->finished_ms = sqlite3_column_int64(st, 5);
        b->text = pool_col(p, st, 6);
        nd->n.reason = pool_col(p, st, 7);
        nd->n.repository = pool_col(p, st, 8);
        nd->n.branch = pool_col(p, st, 9);
        nd->n.revision = pool_col(p, st, 10);
        b->state = pool_col(p, st, 11);
        nd->in_job = sqlite3_column_type(st, 12) != SQLITE_NULL;
        b->url = pool_fmt(p, "%sapi/v1/builds/%" PRIu64, l->s->base_url,
                          l->id);
        rc = 0;
    }
    sqlite3_finalize(st);
    if (rc)
        return rc;
    if (sqlite3_prepare_v2(db, PREV_RESULT_SQL, -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_int64(st, 1, (int64_t)l->id);
    sqlite3_bind_text(st, 2, b->builder ? b->builder : "", -1,
                      SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW) {
        nd->n.has_prev = true;
        nd->n.prev = (tf_result_t)sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    if ((rc = notice_steps(db, l->s, nd)) != 0 ||
        (rc = notice_changes(db, nd)) != 0)
        return rc;
    /* Recipients: the configured extra addresses, then the blamelist. */
    nd->to = calloc(MAX_RCPT, sizeof(*nd->to));
    if (!nd->to)
        return TF_ENOMEM;
    if (l->extra_json) {
        json_t *arr = json_loads(l->extra_json, 0, NULL);
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v)
            add_rcpt(nd, NULL, pool_dup(p, json_string_value(v)));
        json_decref(arr);
    } else {
        const bset_t *bs = settings_builder(l->s, b->builder);
        for (size_t i = 0; bs && i < bs->nextra; i++)
            add_rcpt(nd, NULL, bs->extra[i]);
    }
    for (size_t i = 0; i < nd->nchanges; i++)
        add_rcpt(nd, nd->changes[i].author, nd->changes[i].email);
    nd->n.to = nd->to;
    nd->n.nto = nd->nto;
    return p->oom ? TF_ENOMEM : 0;
}

static void notice_data_free(notice_data_t *nd)
{
    free(nd->steps);
    free(nd->changes);
    free(nd->to);
    pool_free(&nd->pool);
}

/* ------------------------------------------------------------------ */
/* Rendering one mail                                                  */
/* ------------------------------------------------------------------ */

typedef struct rendered {
    tf_mail_msg_t msg;
    char message_id[160];
    json_t *rcpt;   /* array of addresses */
    bool notify;    /* a job: it asked for mail */
    bool in_job;    /* a build: it belongs to a try job */
} rendered_t;

static void rendered_clear(rendered_t *r)
{
    tf_mail_msg_clear(&r->msg);
    json_decref(r->rcpt);
    r->rcpt = NULL;
}

static json_t *rcpt_json(const tf_mail_rcpt_t *to, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        json_array_append_new(arr, json_string(to[i].addr));
    return arr;
}

/* Renders the mail about kind/ref ("job" or "build"). outbox_id names the
 * row in the Message-ID (0 for a preview). extra_json: a notice's stored
 * recipients (NULL: the builder's configured ones). With placeholder, a
 * mail nobody would get is rendered to "undisclosed-recipients" instead
 * of failing. Returns 0, TF_ENOENT (no such job or build), TF_EINVAL
 * (nobody to mail), TF_E2BIG or another error. */
static int render_ref(tf_store_t *store, const settings_t *s,
                      const char *kind, uint64_t ref, uint64_t outbox_id,
                      const char *extra_json, bool placeholder,
                      rendered_t *out)
{
    char boundary[48] = "=_tf_", rnd[33];
    static const tf_mail_rcpt_t nobody = {NULL, "undisclosed-recipients@invalid"};
    bool is_job = strcmp(kind, "job") == 0;
    load_t l = {.s = s, .id = ref, .extra_json = extra_json};
    job_data_t jd;
    notice_data_t nd;
    int rc;

    memset(out, 0, sizeof(*out));
    memset(&jd, 0, sizeof(jd));
    memset(&nd, 0, sizeof(nd));
    if (tf_random_hex(16, rnd) != 0)
        return TF_EIO;
    snprintf(boundary + 5, sizeof(boundary) - 5, "%s", rnd);
    snprintf(out->message_id, sizeof(out->message_id),
             "<tf.%s.%" PRIu64 ".%" PRIu64 ".%.12s@%s>", kind, ref, outbox_id,
             rnd + 16, tf_mail_domain(s->mail.from));
    tf_mail_env_t env = {
        .master_name = s->name,
        .base_url = s->base_url,
        .from_addr = s->mail.from,
        .from_name = s->mail.from_name,
        .subject_prefix = s->mail.subject_prefix,
        .message_id = out->message_id,
        .boundary = boundary,
        .now_ms = tf_now_ms(),
        .max_bytes = s->mail.message_max_bytes,
    };
    if (is_job) {
        l.jd = &jd;
        rc = tf_store_read_sync(store, load_job_fn, &l);
        out->notify = jd.notify;
        if (rc == 0 && jd.job.nto == 0 && placeholder) {
            jd.job.to = &nobody;
            jd.job.nto = 1;
        }
        if (rc == 0)
            rc = tf_mail_render_job(&env, &jd.job, &out->msg);
        if (rc == 0)
            out->rcpt = rcpt_json(jd.job.to, jd.job.nto);
        job_data_free(&jd);
    } else {
        l.nd = &nd;
        rc = tf_store_read_sync(store, load_notice_fn, &l);
        out->in_job = nd.in_job;
        if (rc == 0 && nd.n.nto == 0 && placeholder) {
            nd.n.to = &nobody;
            nd.n.nto = 1;
        }
        if (rc == 0)
            rc = tf_mail_render_notice(&env, &nd.n, &out->msg);
        if (rc == 0)
            out->rcpt = rcpt_json(nd.n.to, nd.n.nto);
        notice_data_free(&nd);
    }
    if (rc == 0 && !out->rcpt)
        rc = TF_ENOMEM;
    if (rc)
        rendered_clear(out);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Delivery                                                            */
/* ------------------------------------------------------------------ */

typedef enum {
    OUT_SENT = 0,
    OUT_RETRY,     /* try again later */
    OUT_FAILED,    /* refused for good */
    OUT_ABORTED,   /* the master is stopping: not an attempt */
} outcome_kind_t;

typedef struct outcome {
    outcome_kind_t kind;
    char error[ERR_MAX];
    char reply[REPLY_MAX]; /* the server's acceptance, for the log */
} outcome_t;

__attribute__((format(printf, 3, 4))) static void
fail_with(outcome_t *o, outcome_kind_t kind, const char *fmt, ...)
{
    va_list ap;
    o->kind = kind;
    va_start(ap, fmt);
    vsnprintf(o->error, sizeof(o->error), fmt, ap);
    va_end(ap);
}

typedef struct smtp_io {
    const uint8_t *data;
    size_t len;
    size_t pos;
    char last[REPLY_MAX];  /* the server's last reply line before QUIT */
    char cmd[16];          /* the verb of our last command before QUIT */
    bool quitting;         /* QUIT sent: what follows explains nothing */
    tf_mail_t *ml;         /* for the stop flag; NULL in the CLI */
    int64_t stop_seen_ms;  /* when the progress callback saw the stop */
} smtp_io_t;

static size_t smtp_read_cb(char *buf, size_t size, size_t nitems, void *arg)
{
    smtp_io_t *io = arg;
    size_t room = size * nitems, left = io->len - io->pos;
    size_t n = left < room ? left : room;
    memcpy(buf, io->data + io->pos, n);
    io->pos += n;
    return n;
}

/* Keeps the server's last reply and the verb of our last command, never
 * its arguments (an AUTH exchange carries the password), up to QUIT: curl
 * says QUIT after a failure too, and "221 Bye" explains nothing. */
static int smtp_debug_cb(CURL *h, curl_infotype type, char *data, size_t size,
                         void *arg)
{
    static const char *const verbs[] = {"EHLO", "HELO", "STARTTLS", "AUTH",
                                        "MAIL", "RCPT", "DATA", "QUIT",
                                        "RSET", NULL};
    smtp_io_t *io = arg;
    (void)h;
    if (io->quitting)
        return 0;
    if (type == CURLINFO_HEADER_IN) {
        while (size > 0 && (data[size - 1] == '\n' || data[size - 1] == '\r'))
            size--;
        if (size == 0)
            return 0;
        size_t n = size < sizeof(io->last) - 1 ? size : sizeof(io->last) - 1;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)data[i];
            io->last[i] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
        }
        io->last[n] = '\0';
    } else if (type == CURLINFO_HEADER_OUT) {
        for (size_t i = 0; verbs[i]; i++) {
            size_t vl = strlen(verbs[i]);
            if (size >= vl && strncasecmp(data, verbs[i], vl) == 0 &&
                (size == vl || data[vl] == ' ' || data[vl] == '\r')) {
                if (strcmp(verbs[i], "QUIT") == 0)
                    io->quitting = true;
                else
                    snprintf(io->cmd, sizeof(io->cmd), "%s", verbs[i]);
                break;
            }
        }
    }
    return 0;
}

/* Aborts the exchange when the master stops, unless the whole message is
 * already with the server: its answer usually follows at once, and
 * aborting then would send the mail again after the restart. A server
 * slower than STOP_GRACE_MS is cut off all the same. */
#define STOP_GRACE_MS 5000
static int smtp_progress_cb(void *arg, curl_off_t dt, curl_off_t dn,
                            curl_off_t ut, curl_off_t un)
{
    smtp_io_t *io = arg;
    (void)dt, (void)dn, (void)ut, (void)un;
    if (!stopping(io->ml))
        return 0;
    if (io->pos < io->len)
        return 1;
    if (!io->stop_seen_ms)
        io->stop_seen_ms = tf_mono_ms();
    return tf_mono_ms() - io->stop_seen_ms > STOP_GRACE_MS ? 1 : 0;
}

/* "SMTP server HOST:PORT" for messages. */
static void smtp_name(const tf_cfg_mail_t *m, char *out, size_t n)
{
    bool v6 = strchr(m->smtp_host, ':') != NULL;
    snprintf(out, n, "%s%s%s:%u", v6 ? "[" : "", m->smtp_host, v6 ? "]" : "",
             (unsigned)m->smtp_port);
}

/* The EHLO name: this machine's host name when it is a plain one. */
static void ehlo_name(char *out, size_t n)
{
    char h[256] = "";
    if (gethostname(h, sizeof(h) - 1) != 0 || !h[0])
        snprintf(h, sizeof(h), "localhost");
    for (const char *p = h; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
            snprintf(h, sizeof(h), "localhost");
    snprintf(out, n, "%s", h);
}

static void smtp_outcome(const tf_cfg_mail_t *m, CURLcode cc, long code,
                         const smtp_io_t *io, const char *errbuf,
                         outcome_t *o)
{
    char srv[300];
    const char *reply = io->last[0] ? io->last : "no reply";
    smtp_name(m, srv, sizeof(srv));
    switch (cc) {
    case CURLE_OK:
        o->kind = OUT_SENT;
        snprintf(o->reply, sizeof(o->reply), "%s", reply);
        return;
    case CURLE_ABORTED_BY_CALLBACK:
        fail_with(o, OUT_ABORTED, "interrupted: the master is stopping");
        return;
    case CURLE_LOGIN_DENIED:
        fail_with(o, OUT_RETRY, "SMTP server %s refused authentication for "
                  "user %s: %s", srv, m->smtp_username ? m->smtp_username
                                                       : "(none)", reply);
        return;
    case CURLE_COULDNT_RESOLVE_HOST:
        fail_with(o, OUT_RETRY, "cannot resolve the SMTP server's name %s: "
                  "%s", m->smtp_host, errbuf);
        return;
    case CURLE_COULDNT_CONNECT:
        fail_with(o, OUT_RETRY, "cannot connect to SMTP server %s: %s", srv,
                  errbuf);
        return;
    case CURLE_OPERATION_TIMEDOUT:
        fail_with(o, OUT_RETRY, "SMTP server %s timed out (connect_timeout_s "
                  "%u, timeout_s %u) after %s: %s", srv,
                  (unsigned)m->connect_timeout_s, (unsigned)m->timeout_s,
                  io->cmd[0] ? io->cmd : "connecting", errbuf);
        return;
    case CURLE_USE_SSL_FAILED:
        fail_with(o, OUT_RETRY, "SMTP server %s does not offer STARTTLS "
                  "(smtp.security is \"starttls\"): %s", srv, reply);
        return;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        fail_with(o, OUT_RETRY, "TLS with SMTP server %s failed: %s (check "
                  "smtp.ca_file%s%s)", srv, errbuf,
                  m->smtp_ca_file ? ": " : "",
                  m->smtp_ca_file ? m->smtp_ca_file : " or the system CAs");
        return;
    default:
        break;
    }
    if (code >= 400) {
        /* 5xx refusals of the envelope or the data are final; an
         * authentication problem (530, 534, 535, 538) is the admin's to
         * fix, so it is retried until the horizon. */
        bool final = code >= 500 && code != 530 && code != 534 &&
                     code != 535 && code != 538 &&
                     (strcmp(io->cmd, "MAIL") == 0 ||
                      strcmp(io->cmd, "RCPT") == 0 ||
                      strcmp(io->cmd, "DATA") == 0);
        fail_with(o, final ? OUT_FAILED : OUT_RETRY,
                  "SMTP server %s refused the mail at %s: %s", srv,
                  io->cmd[0] ? io->cmd : "the start", reply);
        return;
    }
    fail_with(o, OUT_RETRY, "SMTP delivery to %s failed: %s%s%s (last reply: "
              "%s)", srv, curl_easy_strerror(cc), errbuf[0] ? ": " : "",
              errbuf, reply);
}

static void smtp_deliver(tf_mail_t *ml, const settings_t *s,
                         const char *const *rcpt, size_t nrcpt,
                         const uint8_t *data, size_t len, outcome_t *o)
{
    const tf_cfg_mail_t *m = &s->mail;
    char url[600], from[300], ehlo[260], errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *to = NULL;
    smtp_io_t io = {.data = data, .len = len, .ml = ml};
    CURL *h = curl_easy_init();
    bool v6 = strchr(m->smtp_host, ':') != NULL;

    if (!h) {
        fail_with(o, OUT_RETRY, "cannot start libcurl");
        return;
    }
    ehlo_name(ehlo, sizeof(ehlo));
    snprintf(url, sizeof(url), "%s://%s%s%s:%u/%s",
             m->smtp_security == TF_MAIL_SEC_TLS ? "smtps" : "smtp",
             v6 ? "[" : "", m->smtp_host, v6 ? "]" : "",
             (unsigned)m->smtp_port, ehlo);
    snprintf(from, sizeof(from), "<%s>", m->from);
    for (size_t i = 0; i < nrcpt; i++) {
        char a[300];
        snprintf(a, sizeof(a), "<%s>", rcpt[i]);
        struct curl_slist *n = curl_slist_append(to, a);
        if (!n) {
            fail_with(o, OUT_RETRY, "out of memory");
            goto out;
        }
        to = n;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, to);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, smtp_read_cb);
    curl_easy_setopt(h, CURLOPT_READDATA, &io);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);
    curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, smtp_debug_cb);
    curl_easy_setopt(h, CURLOPT_DEBUGDATA, &io);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, smtp_progress_cb);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &io);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)m->connect_timeout_s * 1000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)m->timeout_s * 1000L);
    if (m->smtp_security != TF_MAIL_SEC_NONE)
        curl_easy_setopt(h, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
    if (m->smtp_ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, m->smtp_ca_file);
    if (m->smtp_username) {
        curl_easy_setopt(h, CURLOPT_USERNAME, m->smtp_username);
        curl_easy_setopt(h, CURLOPT_PASSWORD,
                         m->smtp_password ? m->smtp_password : "");
    }
    CURLcode cc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    smtp_outcome(m, cc, code, &io, errbuf, o);
out:
    curl_slist_free_all(to);
    curl_easy_cleanup(h);
}

/* Writes data to fd (non-blocking) and collects what the child prints on
 * rfd until both are done, the deadline passes or the master stops.
 * Returns 0, or 1 for a timeout, 2 for a stop. */
static int cmd_exchange(tf_mail_t *ml, int *wfdp, int *rfdp,
                        const uint8_t *data, size_t len, int64_t deadline,
                        char *err, size_t errcap)
{
    size_t pos = 0, elen = 0;
    int rc = 0;
    for (;;) {
        int wfd = *wfdp, rfd = *rfdp;
        if (wfd < 0 && rfd < 0)
            break;
        struct pollfd p[2];
        int n = 0;
        if (wfd >= 0)
            p[n++] = (struct pollfd){.fd = wfd, .events = POLLOUT};
        if (rfd >= 0)
            p[n++] = (struct pollfd){.fd = rfd, .events = POLLIN};
        if (stopping(ml)) {
            rc = 2;
            break;
        }
        int64_t left = deadline - tf_mono_ms();
        if (left <= 0) {
            rc = 1;
            break;
        }
        if (poll(p, (nfds_t)n, left < 200 ? (int)left : 200) < 0) {
            if (errno == EINTR)
                continue;
            rc = 1;
            break;
        }
        for (int i = 0; i < n; i++) {
            if (p[i].fd == wfd && (p[i].revents & (POLLOUT | POLLERR |
                                                   POLLHUP))) {
                ssize_t w = write(wfd, data + pos, len - pos);
                if (w > 0)
                    pos += (size_t)w;
                if ((w < 0 && errno != EAGAIN && errno != EINTR) ||
                    pos == len) {
                    close(wfd);
                    *wfdp = -1;
                }
            } else if (p[i].fd == rfd && (p[i].revents & (POLLIN | POLLERR |
                                                          POLLHUP))) {
                char buf[1024];
                ssize_t r = read(rfd, buf, sizeof(buf));
                if (r > 0) {
                    size_t take = (size_t)r < errcap - 1 - elen
                                      ? (size_t)r
                                      : errcap - 1 - elen;
                    memcpy(err + elen, buf, take);
                    elen += take;
                    err[elen] = '\0';
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    close(rfd);
                    *rfdp = -1;
                }
            }
        }
    }
    return rc;
}

/* Runs the configured command with the recipients appended to its argv
 * and the message on its standard input; exit status 0 means accepted. */
static void cmd_deliver(tf_mail_t *ml, const settings_t *s,
                        const char *const *rcpt, size_t nrcpt,
                        const uint8_t *data, size_t len, outcome_t *o)
{
    const tf_cfg_mail_t *m = &s->mail;
    int in[2] = {-1, -1}, outp[2] = {-1, -1};
    char **argv = calloc(m->nsendmail + nrcpt + 1, sizeof(char *));
    char err[CMD_OUT_MAX] = "";
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    bool fa_ok = false, attr_ok = false;
    pid_t pid = -1;

    if (!argv) {
        fail_with(o, OUT_RETRY, "out of memory");
        return;
    }
    for (size_t i = 0; i < m->nsendmail; i++)
        argv[i] = m->sendmail[i];
    for (size_t i = 0; i < nrcpt; i++)
        argv[m->nsendmail + i] = (char *)rcpt[i];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(outp, O_CLOEXEC) != 0) {
        fail_with(o, OUT_RETRY, "cannot make a pipe: %s", strerror(errno));
        goto out;
    }
    fa_ok = posix_spawn_file_actions_init(&fa) == 0;
    attr_ok = posix_spawnattr_init(&attr) == 0;
    sigset_t def, none;
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    sigemptyset(&none);
    if (!fa_ok || !attr_ok ||
        posix_spawn_file_actions_adddup2(&fa, in[0], 0) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, outp[1], 1) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, outp[1], 2) != 0 ||
        posix_spawnattr_setsigdefault(&attr, &def) != 0 ||
        posix_spawnattr_setsigmask(&attr, &none) != 0 ||
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF |
                                            POSIX_SPAWN_SETSIGMASK) != 0) {
        fail_with(o, OUT_RETRY, "cannot prepare to run %s", argv[0]);
        goto out;
    }
    int src = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
    if (src != 0) {
        pid = -1;
        fail_with(o, OUT_RETRY, "cannot run the sendmail command %s: %s",
                  argv[0], strerror(src));
        goto out;
    }
    close(in[0]);
    close(outp[1]);
    in[0] = outp[1] = -1;
    fcntl(in[1], F_SETFL, fcntl(in[1], F_GETFL) | O_NONBLOCK);
    fcntl(outp[0], F_SETFL, fcntl(outp[0], F_GETFL) | O_NONBLOCK);
    int x = cmd_exchange(ml, &in[1], &outp[0], data, len,
                         tf_mono_ms() + (int64_t)m->timeout_s * 1000, err,
                         sizeof(err));
    if (x != 0)
        kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    pid = -1;
    /* The first line of what it said, for the message. */
    err[strcspn(err, "\r\n")] = '\0';
    if (x == 2)
        fail_with(o, OUT_ABORTED, "interrupted: the master is stopping");
    else if (x == 1)
        fail_with(o, OUT_RETRY, "the sendmail command %s did not finish "
                  "within timeout_s (%u s) and was killed", argv[0],
                  (unsigned)m->timeout_s);
    else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        o->kind = OUT_SENT;
        snprintf(o->reply, sizeof(o->reply), "%s exited with status 0",
                 argv[0]);
    } else if (WIFEXITED(status))
        fail_with(o, OUT_RETRY, "the sendmail command %s exited with status "
                  "%d%s%s", argv[0], WEXITSTATUS(status), err[0] ? ": " : "",
                  err);
    else
        fail_with(o, OUT_RETRY, "the sendmail command %s was killed by "
                  "signal %d", argv[0],
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
out:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (outp[i] >= 0)
            close(outp[i]);
    }
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (attr_ok)
        posix_spawnattr_destroy(&attr);
    free(argv);
}

static void deliver(tf_mail_t *ml, const settings_t *s, json_t *rcpt,
                    const uint8_t *data, size_t len, outcome_t *o)
{
    const char *addrs[MAX_RCPT];
    size_t n = 0, i;
    json_t *v;
    memset(o, 0, sizeof(*o));
    json_array_foreach(rcpt, i, v)
    {
        const char *a = json_string_value(v);
        if (a && tf_email_valid(a) && n < MAX_RCPT)
            addrs[n++] = a;
    }
    if (n == 0) {
        fail_with(o, OUT_FAILED, "no valid recipient");
        return;
    }
    if (s->mail.sendmail)
        cmd_deliver(ml, s, addrs, n, data, len, o);
    else
        smtp_deliver(ml, s, addrs, n, data, len, o);
}

/* ------------------------------------------------------------------ */
/* The sender thread                                                   */
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
static int write_wait(tf_mail_t *ml, const char *sql, const tf_sqlval_t *v,
                      size_t n)
{
    pthread_mutex_lock(&ml->mu);
    uint64_t seq = ++ml->writes_issued;
    pthread_mutex_unlock(&ml->mu);
    int rc = tf_store_write(ml->store, sql, v, n, write_done_cb, ml);
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
static int write_retry(tf_mail_t *ml, const char *sql, const tf_sqlval_t *v,
                       size_t n)
{
    bool warned = false;
    for (;;) {
        int rc = write_wait(ml, sql, v, n);
        if (rc != TF_EFULL || stopping(ml))
            return rc;
        if (!warned)
            tf_warn(SUB, "the store's queue is full: the outbox waits");
        warned = true;
        struct timespec ts = {.tv_sec = STORE_RETRY_MS / 1000};
        nanosleep(&ts, NULL);
    }
}

typedef struct row {
    bool found;
    int64_t id;
    char kind[16];
    uint64_t ref;
    char *recipients;
    bool has_message;
    int64_t attempts;
    int64_t created_ms;
    int64_t next_ms;
    char *message_id;
    char *subject;
    uint8_t *message;
    size_t message_len;
} row_t;

static void row_clear(row_t *r)
{
    free(r->recipients);
    free(r->message_id);
    free(r->subject);
    free(r->message);
    memset(r, 0, sizeof(*r));
}

static char *col_dup(sqlite3_stmt *st, int col)
{
    const char *t = (const char *)sqlite3_column_text(st, col);
    return t ? strdup(t) : NULL;
}

/* The pending row due first, with its message when it has one. */
static int pick_fn(sqlite3 *db, void *arg)
{
    row_t *r = arg;
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT id, kind, ref_id, recipients, message_id, "
                           "subject, message, attempts, created_ms, "
                           "next_attempt_ms FROM mail_outbox "
                           "WHERE state = 'pending' "
                           "ORDER BY next_attempt_ms, id LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    if (sqlite3_step(st) == SQLITE_ROW) {
        r->found = true;
        r->id = sqlite3_column_int64(st, 0);
        snprintf(r->kind, sizeof(r->kind), "%s",
                 sqlite3_column_text(st, 1) ? (const char *)
                                                  sqlite3_column_text(st, 1)
                                            : "");
        r->ref = (uint64_t)sqlite3_column_int64(st, 2);
        r->recipients = col_dup(st, 3);
        r->message_id = col_dup(st, 4);
        r->subject = col_dup(st, 5);
        r->has_message = sqlite3_column_type(st, 6) != SQLITE_NULL;
        if (r->has_message) {
            size_t n = (size_t)sqlite3_column_bytes(st, 6);
            r->message = malloc(n ? n : 1);
            if (r->message) {
                memcpy(r->message, sqlite3_column_blob(st, 6), n);
                r->message_len = n;
            } else {
                rc = TF_ENOMEM;
            }
        }
        r->attempts = sqlite3_column_int64(st, 7);
        r->created_ms = sqlite3_column_int64(st, 8);
        r->next_ms = sqlite3_column_int64(st, 9);
    }
    sqlite3_finalize(st);
    return rc;
}

static void describe(const row_t *r, char *out, size_t n)
{
    snprintf(out, n, "mail %" PRId64 " (%s %" PRIu64 ")", r->id,
             strcmp(r->kind, "job") == 0 ? "try job" : r->kind, r->ref);
}

/* Ends a row without sending it: state 'failed' or 'skipped'. */
static void finish_unsent(tf_mail_t *ml, const row_t *r, const char *state,
                          const char *why)
{
    char what[96];
    describe(r, what, sizeof(what));
    tf_sqlval_t v[] = {tf_sql_text(state), tf_sql_text(why),
                       tf_sql_int(r->id)};
    write_retry(ml,
                "UPDATE mail_outbox SET state = ?1, last_error = ?2 "
                "WHERE id = ?3 AND state = 'pending'",
                v, 3);
    if (strcmp(state, "failed") == 0)
        tf_error(SUB, "%s failed: %s", what, why);
    else
        tf_info(SUB, "%s not sent: %s", what, why);
}

/* A delivery attempt failed: backoff, or 'failed' past the horizon. */
static void record_failure(tf_mail_t *ml, const settings_t *s, const row_t *r,
                           const outcome_t *o)
{
    const tf_cfg_mail_t *m = &s->mail;
    char what[96];
    int64_t now = tf_now_ms();
    int64_t attempts = r->attempts + 1;
    int64_t delay = (int64_t)m->retry_initial_s * 1000;
    for (int64_t i = 1; i < attempts && delay < (int64_t)m->retry_max_s * 1000;
         i++)
        delay *= 2;
    if (delay > (int64_t)m->retry_max_s * 1000)
        delay = (int64_t)m->retry_max_s * 1000;
    bool give_up = o->kind == OUT_FAILED ||
                   now + delay - r->created_ms >
                       (int64_t)m->retry_horizon_s * 1000;
    describe(r, what, sizeof(what));
    tf_sqlval_t v[] = {tf_sql_text(give_up ? "failed" : "pending"),
                       tf_sql_int(attempts), tf_sql_text(o->error),
                       tf_sql_int(give_up ? now : now + delay),
                       tf_sql_int(r->id)};
    write_retry(ml,
                "UPDATE mail_outbox SET state = ?1, attempts = ?2, "
                "last_error = ?3, next_attempt_ms = ?4 WHERE id = ?5",
                v, 5);
    if (give_up)
        tf_error(SUB, "%s failed for good after %" PRId64 " attempt%s: %s",
                 what, attempts, attempts == 1 ? "" : "s", o->error);
    else
        tf_warn(SUB, "%s: attempt %" PRId64 " failed: %s; next attempt in "
                "%" PRId64 " s", what, attempts, o->error, delay / 1000);
}

/* Renders a row's mail and stores it before any attempt. Returns 0 with
 * the row filled, or 1 when the row was ended (or must wait). */
static int prepare_row(tf_mail_t *ml, const settings_t *s, row_t *r)
{
    rendered_t rd;
    char what[96];
    describe(r, what, sizeof(what));
    int rc = render_ref(ml->store, s, r->kind, r->ref, (uint64_t)r->id,
                        strcmp(r->kind, "build") == 0 ? r->recipients : NULL,
                        false, &rd);
    if (rc == TF_ENOENT) {
        finish_unsent(ml, r, "failed", strcmp(r->kind, "job") == 0
                                           ? "the try job no longer exists"
                                           : "the build no longer exists");
        return 1;
    }
    if (rc == TF_EINVAL) {
        finish_unsent(ml, r, "skipped", "nobody to mail: no valid "
                      "recipient (the job's address, or the builder's "
                      "extra_recipients and blamelist)");
        return 1;
    }
    if (rc == TF_E2BIG) {
        finish_unsent(ml, r, "failed", "the mail does not fit in "
                      "message_max_bytes even without log excerpts");
        return 1;
    }
    if (rc) {
        outcome_t o = {.kind = OUT_RETRY};
        snprintf(o.error, sizeof(o.error), "cannot render the mail: %s",
                 tf_strerror(rc));
        record_failure(ml, s, r, &o);
        return 1;
    }
    char *rcpt = json_dumps(rd.rcpt, JSON_COMPACT);
    tf_sqlval_t v[] = {tf_sql_text(rd.msg.subject), tf_sql_text(rd.message_id),
                       tf_sql_blob(rd.msg.data, rd.msg.len),
                       tf_sql_text(rcpt ? rcpt : "[]"), tf_sql_int(r->id)};
    rc = write_retry(ml,
                     "UPDATE mail_outbox SET subject = ?1, message_id = ?2, "
                     "message = ?3, recipients = ?4 WHERE id = ?5 AND "
                     "message IS NULL",
                     v, 5);
    free(rcpt);
    if (rc) {
        if (rc != TF_ESTATE)
            tf_error(SUB, "%s: cannot store the rendered mail: %s", what,
                     tf_strerror(rc));
        rendered_clear(&rd);
        return 1;
    }
    tf_info(SUB, "%s rendered: %s, %zu bytes, \"%s\"", what, rd.message_id,
            rd.msg.len, rd.msg.subject);
    /* The stored message is the one sent: read it back next time round. */
    rendered_clear(&rd);
    return 1;
}

/* Handles the pending row due first, if any is due. Returns true when it
 * did something (look again at once), false to sleep *wait_ms. */
static bool sender_step(tf_mail_t *ml, const settings_t *s, int64_t *wait_ms)
{
    row_t r = {0};
    char what[96];
    json_t *rcpt = NULL;
    bool did = false;
    int rc = tf_store_read_sync(ml->store, pick_fn, &r);
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
    describe(&r, what, sizeof(what));
    rcpt = json_loads(r.recipients ? r.recipients : "[]", 0, NULL);
    outcome_t o;
    deliver(ml, s, rcpt, r.message, r.message_len, &o);
    if (o.kind == OUT_ABORTED)
        goto out;
    if (o.kind != OUT_SENT) {
        record_failure(ml, s, &r, &o);
        goto out;
    }
    tf_sqlval_t v[] = {tf_sql_int(tf_now_ms()), tf_sql_int(r.attempts + 1),
                       tf_sql_int(r.id)};
    rc = write_retry(ml,
                     "UPDATE mail_outbox SET state = 'sent', sent_ms = ?1, "
                     "attempts = ?2, last_error = NULL WHERE id = ?3",
                     v, 3);
    char *to = json_dumps(rcpt, JSON_COMPACT);
    tf_info(SUB, "%s %s sent to %s: %s", what,
            r.message_id ? r.message_id : "", to ? to : "?", o.reply);
    free(to);
    if (rc && rc != TF_ESTATE)
        tf_error(SUB, "%s was sent but marking it sent failed (%s): it may "
                 "be sent again", what, tf_strerror(rc));
out:
    json_decref(rcpt);
    row_clear(&r);
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
        settings_t *s = settings_hold(ml);
        int64_t wait_ms = POLL_MS;
        bool did = s->mail.enabled && sender_step(ml, s, &wait_ms);
        settings_release(ml, s);
        if (!did)
            sender_sleep(ml, wait_ms);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Queueing (loop thread)                                              */
/* ------------------------------------------------------------------ */

/* The job's report, if it wants one and has none yet. The recipient is
 * filled in again when the mail is rendered. */
static const char SQL_QUEUE_JOB[] =
    "INSERT INTO mail_outbox(kind, ref_id, recipients, state, created_ms, "
    "next_attempt_ms) SELECT 'job', id, json_array(coalesce(notify_email, "
    "email)), 'pending', ?2, ?2 FROM try_jobs WHERE id = ?1 AND notify = 1 "
    "AND NOT EXISTS (SELECT 1 FROM mail_outbox WHERE kind = 'job' AND "
    "ref_id = ?1)";

/* A build's notice, when the builder's mode (?4: 1 failing, 2 problem,
 * 3 change, 4 all) says so given its result (?3) and the previous
 * continuous build's (prev). Results 2 and 4 (FAILURE, EXCEPTION) are
 * failures, 0 and 1 (SUCCESS, WARNINGS) passes. */
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

static void note_queued(tf_master_t *m)
{
    if (!m->mail)
        return;
    m->mail->wake_after_group = true;
    if (!m->group)
        tf_mail_group_queued(m);
}

void tf_mail_job_done(tf_master_t *m, uint64_t job_id)
{
    const tf_cfg_mail_t *mc = &m->cfg->mail;
    if (!mc->enabled || !mc->try_jobs)
        return;
    int64_t now = tf_now_ms();
    tf_sqlval_t v[] = {tf_sql_int((int64_t)job_id), tf_sql_int(now)};
    tf_master_write(m, SQL_QUEUE_JOB, v, 2, NULL, NULL);
    note_queued(m);
}

void tf_mail_build_done(tf_master_t *m, uint64_t build_id,
                        const char *builder, tf_result_t result)
{
    const tf_cfg_builder_t *b = tf_config_builder(m->cfg, builder);
    if (!m->cfg->mail.enabled || !b || b->mail.mode == TF_MAIL_MODE_NONE ||
        result == TF_RETRY)
        return;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < b->mail.nextra; i++)
        json_array_append_new(arr, json_string(b->mail.extra_recipients[i]));
    char *rcpt = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    int64_t now = tf_now_ms();
    tf_sqlval_t v[] = {tf_sql_int((int64_t)build_id), tf_sql_text(builder),
                       tf_sql_int(result), tf_sql_int(b->mail.mode),
                       tf_sql_text(rcpt ? rcpt : "[]"), tf_sql_int(now)};
    tf_master_write(m, SQL_QUEUE_BUILD, v, 6, NULL, NULL);
    free(rcpt);
    note_queued(m);
}

static int noop_txn(sqlite3 *db, void *arg)
{
    (void)db, (void)arg;
    return 0;
}

static void wake_cb(void *arg, int rc)
{
    (void)rc;
    mail_wake(arg);
}

void tf_mail_group_queued(tf_master_t *m)
{
    if (!m->mail || !m->mail->wake_after_group)
        return;
    m->mail->wake_after_group = false;
    /* Ops commit in order: this one's callback means the rows before it
     * are in the database. */
    if (tf_store_write_fn(m->store, noop_txn, 0, wake_cb, m->mail) != 0)
        mail_wake(m->mail);
}

/* ------------------------------------------------------------------ */
/* Lifecycle (loop thread)                                             */
/* ------------------------------------------------------------------ */

static void log_transport(const settings_t *s)
{
    const tf_cfg_mail_t *m = &s->mail;
    if (m->sendmail) {
        tf_info(SUB, "mail from %s goes through the command %s", m->from,
                m->sendmail[0]);
        return;
    }
    char srv[300];
    smtp_name(m, srv, sizeof(srv));
    tf_info(SUB, "mail from %s goes to SMTP server %s (%s%s%s)", m->from, srv,
            m->smtp_security == TF_MAIL_SEC_TLS        ? "implicit TLS"
            : m->smtp_security == TF_MAIL_SEC_STARTTLS ? "STARTTLS"
                                                       : "plain",
            m->smtp_username ? ", AUTH as " : "",
            m->smtp_username ? m->smtp_username : "");
}

int tf_mail_start(tf_master_t *m)
{
    tf_mail_t *ml = NULL;
    pthread_condattr_t ca;
    sigset_t all, old;
    int rc;
    if (m->mail)
        return 0;
    if (!m->cfg->mail.enabled) {
        tf_info(SUB, "mail is off (no \"mail\" section in the config, or "
                "\"enabled\": false)");
        return 0;
    }
    ml = calloc(1, sizeof(*ml));
    if (!ml)
        return TF_ENOMEM;
    ml->store = m->store;
    atomic_init(&ml->stop, false);
    ml->settings = settings_new(m->cfg);
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
        m->mail = ml;
        tf_mail_free(m);
        return TF_EIO;
    }
    ml->started = true;
    m->mail = ml;
    log_transport(ml->settings);
    return 0;
}

void tf_mail_reconfigure(tf_master_t *m)
{
    if (!m->mail) {
        if (m->cfg->mail.enabled)
            tf_mail_start(m);
        return;
    }
    settings_t *s = settings_new(m->cfg);
    if (!s) {
        tf_error(SUB, "out of memory: mail keeps its old settings");
        return;
    }
    pthread_mutex_lock(&m->mail->mu);
    settings_t *old = m->mail->settings;
    m->mail->settings = s;
    pthread_mutex_unlock(&m->mail->mu);
    settings_release(m->mail, old);
    if (m->cfg->mail.enabled)
        log_transport(s);
    else
        tf_info(SUB, "mail is off now: the outbox keeps what is pending");
    mail_wake(m->mail);
}

void tf_mail_stop_begin(tf_master_t *m)
{
    (void)m;
    if (!m->mail)
        return;
    pthread_mutex_lock(&m->mail->mu);
    atomic_store(&m->mail->stop, true);
    pthread_cond_broadcast(&m->mail->cond);
    pthread_mutex_unlock(&m->mail->mu);
}

void tf_mail_stop(tf_master_t *m)
{
    tf_mail_stop_begin(m);
    if (m->mail && m->mail->started) {
        pthread_join(m->mail->thread, NULL);
        m->mail->started = false;
    }
}

void tf_mail_free(tf_master_t *m)
{
    tf_mail_t *ml = m->mail;
    if (!ml)
        return;
    tf_mail_stop(m);
    m->mail = NULL;
    settings_free(ml->settings);
    pthread_cond_destroy(&ml->cond);
    pthread_mutex_destroy(&ml->mu);
    if (ml->curl_ready)
        curl_global_cleanup();
    free(ml);
}

/* ------------------------------------------------------------------ */
/* API                                                                 */
/* ------------------------------------------------------------------ */

#define MAIL_COLS                                                              \
    "id, kind, ref_id, recipients, subject, message_id, state, attempts, "     \
    "created_ms, next_attempt_ms, sent_ms, last_error, length(message) "

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

static json_t *mail_row(sqlite3_stmt *st, const char *base)
{
    json_int_t id = sqlite3_column_int64(st, 0);
    const char *kind = (const char *)sqlite3_column_text(st, 1);
    json_int_t ref = sqlite3_column_int64(st, 2);
    const char *state = (const char *)sqlite3_column_text(st, 6);
    const char *rc = (const char *)sqlite3_column_text(st, 3);
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

static int mq_list(sqlite3 *db, mq_t *q)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT " MAIL_COLS "FROM mail_outbox WHERE "
                           "id < ?1 AND (?2 IS NULL OR state = ?2) "
                           "ORDER BY id DESC LIMIT ?3",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_int64(st, 1, q->before ? (int64_t)q->before : INT64_MAX);
    if (q->state[0])
        sqlite3_bind_text(st, 2, q->state, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_int64(st, 3, (int64_t)q->limit + 1);
    json_t *arr = json_array();
    unsigned n = 0;
    json_int_t last = 0;
    bool more = false;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n == q->limit) {
            more = true;
            break;
        }
        last = sqlite3_column_int64(st, 0);
        json_array_append_new(arr, mail_row(st, q->base));
        n++;
    }
    sqlite3_finalize(st);
    json_int_t pending = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT count(*) FROM mail_outbox WHERE "
                           "state = 'pending' AND next_attempt_ms >= 0",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        pending = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    q->out = json_object();
    json_object_set_new(q->out, "mail", arr);
    json_object_set_new(q->out, "pending", json_integer(pending));
    json_object_set_new(q->out, "next_before",
                        more ? json_integer(last) : json_null());
    return 0;
}

static int mq_run(sqlite3 *db, void *arg)
{
    mq_t *q = arg;
    sqlite3_stmt *st = NULL;
    int rc = TF_ENOENT;
    if (q->kind == MQ_LIST)
        return mq_list(db, q);
    if (sqlite3_prepare_v2(db,
                           q->kind == MQ_ONE
                               ? "SELECT " MAIL_COLS
                                 "FROM mail_outbox WHERE id = ?1"
                               : "SELECT message FROM mail_outbox "
                                 "WHERE id = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_int64(st, 1, (int64_t)q->id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        rc = 0;
        if (q->kind == MQ_ONE) {
            q->out = mail_row(st, q->base);
        } else if (sqlite3_column_type(st, 0) == SQLITE_NULL) {
            rc = TF_ESTATE;
        } else {
            q->msg_len = (size_t)sqlite3_column_bytes(st, 0);
            q->msg = malloc(q->msg_len ? q->msg_len : 1);
            if (q->msg)
                memcpy(q->msg, sqlite3_column_blob(st, 0), q->msg_len);
            else
                rc = TF_ENOMEM;
        }
    }
    sqlite3_finalize(st);
    return rc;
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

static void mail_not_allowed(tf_http_req_t *r)
{
    tf_http_header(r, "allow", "GET");
    tf_http_error(r, 405, "method not allowed here; use GET");
}

void tf_api_mail(tf_http_req_t *r, char **segs, size_t nsegs)
{
    uint64_t id = 0, limit = 50, before = 0;
    mq_t *q = NULL;
    if (r->method != TF_HTTP_GET) {
        mail_not_allowed(r);
        return;
    }
    if (!r->admin && r->user.id == 0) {
        /* Mail metadata shows addresses: not for anonymous readers. */
        tf_http_header(r, "www-authenticate", "Bearer");
        tf_http_error(r, 401, r->token[0] ? "invalid token"
                                          : "reading the mail outbox needs "
                                            "a token: send \"Authorization: "
                                            "Bearer TOKEN\"");
        return;
    }
    if (nsegs > 2 || (nsegs == 2 && strcmp(segs[1], "message") != 0)) {
        tf_http_error(r, 404, "no such endpoint: %s", r->path);
        return;
    }
    if (nsegs >= 1 && (tf_parse_u64(segs[0], &id) != 0 || id == 0 ||
                       id > TF_PROTO_MAX_ID)) {
        tf_http_error(r, 400, "invalid mail id \"%.64s\": expected a "
                      "positive integer", segs[0]);
        return;
    }
    q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->r = r;
    q->id = id;
    q->kind = nsegs == 0 ? MQ_LIST : nsegs == 1 ? MQ_ONE : MQ_MESSAGE;
    snprintf(q->base, sizeof(q->base), "%s", r->m->cfg->public_url);
    if (q->kind == MQ_LIST) {
        const char *st = tf_http_arg(r, "state");
        const char *l = tf_http_arg(r, "limit"), *b = tf_http_arg(r, "before");
        if (st && strcmp(st, "pending") != 0 && strcmp(st, "sent") != 0 &&
            strcmp(st, "failed") != 0 && strcmp(st, "skipped") != 0) {
            tf_http_error(r, 400, "state=\"%.20s\": expected pending, sent, "
                          "failed or skipped", st);
            free(q);
            return;
        }
        if ((l && (tf_parse_u64(l, &limit) != 0 || limit < 1 ||
                   limit > 200)) ||
            (b && (tf_parse_u64(b, &before) != 0 || before < 1))) {
            tf_http_error(r, 400, "limit is 1 to 200 and before a positive "
                          "mail id");
            free(q);
            return;
        }
        snprintf(q->state, sizeof(q->state), "%s", st ? st : "");
        q->limit = (unsigned)limit;
        q->before = before;
    }
    tf_http_async_begin(r);
    if (tf_store_read(r->m->store, mq_run, mq_done, q) != 0) {
        tf_http_async_end(r);
        tf_http_error(r, 503, "cannot read the database now");
        free(q);
    }
}

/* ------------------------------------------------------------------ */
/* tf-master mail preview                                              */
/* ------------------------------------------------------------------ */

static int parse_target(const char *t, const char **kind, uint64_t *id)
{
    const char *colon = t ? strchr(t, ':') : NULL;
    if (!colon)
        return TF_EINVAL;
    if ((size_t)(colon - t) == 3 && strncmp(t, "job", 3) == 0)
        *kind = "job";
    else if ((size_t)(colon - t) == 5 && strncmp(t, "build", 5) == 0)
        *kind = "build";
    else
        return TF_EINVAL;
    if (tf_parse_u64(colon + 1, id) != 0 || *id == 0)
        return TF_EINVAL;
    return 0;
}

int tf_mail_cli(const char *dir, const char *config, const char *verb,
                const char *target)
{
    const char *kind = NULL;
    uint64_t id = 0;
    char *cfg_path = NULL;
    tf_cli_offline_t off = {0};
    settings_t *s = NULL;
    rendered_t rd = {0};
    int code = 2, rc;

    if (!verb || strcmp(verb, "preview") != 0 ||
        parse_target(target, &kind, &id) != 0) {
        fprintf(stderr, "usage: tf-master mail preview job:ID|build:ID "
                "[-d DIR] [--config FILE]\n"
                "  job:ID    the report of try job ID\n"
                "  build:ID  the notice for build ID (the build's id, as "
                "in /api/v1/builds/ID)\n");
        goto out;
    }
    cfg_path = config ? strdup(config) : tf_path_join(dir, "master.json");
    code = tf_cli_offline_open(&off, cfg_path, "tf-master mail");
    if (code)
        goto out;
    code = 1;
    const tf_config_t *cfg = off.cfg;
    tf_store_t *store = off.store;
    s = settings_new(cfg);
    if (!s)
        goto out;
    rc = render_ref(store, s, kind, id, 0, NULL, true, &rd);
    if (rc == TF_ENOENT) {
        fprintf(stderr, "tf-master mail preview: no %s %" PRIu64 " in %s\n",
                strcmp(kind, "job") == 0 ? "try job" : "build", id,
                cfg->database);
        goto out;
    }
    if (rc) {
        fprintf(stderr, "tf-master mail preview: cannot render it: %s\n",
                rc == TF_E2BIG ? "it does not fit in message_max_bytes even "
                                 "without log excerpts"
                               : tf_strerror(rc));
        goto out;
    }
    /* The message with LF line ends, for a terminal or a pipe. */
    for (size_t i = 0; i < rd.msg.len; i++)
        if (!(rd.msg.data[i] == '\r' && i + 1 < rd.msg.len &&
              rd.msg.data[i + 1] == '\n'))
            putchar(rd.msg.data[i]);
    fflush(stdout);
    char *to = json_dumps(rd.rcpt, JSON_COMPACT);
    fprintf(stderr, "preview: %zu bytes (CRLF line ends when sent) to %s%s\n",
            rd.msg.len, to ? to : "?",
            !cfg->mail.enabled ? "; mail is off in this config" : "");
    free(to);
    if (strcmp(kind, "job") == 0 && !rd.notify)
        fprintf(stderr, "preview: this job asked for no mail (tf-try "
                "--no-email): none is sent for it\n");
    if (strcmp(kind, "build") == 0) {
        json_t *first = json_array_get(rd.rcpt, 0);
        if (rd.in_job)
            fprintf(stderr, "preview: this build belongs to a try job: its "
                    "author gets the job's report (job:ID), not a notice\n");
        else if (first && strcmp(json_string_value(first),
                                 "undisclosed-recipients@invalid") == 0)
            fprintf(stderr, "preview: nobody would get this notice: the "
                    "builder has no extra_recipients and the build no "
                    "blamelist\n");
    }
    code = 0;
out:
    rendered_clear(&rd);
    settings_free(s);
    tf_cli_offline_close(&off);
    free(cfg_path);
    return code;
}
