/*
 * compose.c - what a mail says: the rows it is about, read on one read
 * connection (store/mail.h), turned into the plain structs of
 * mail_render.h and handed to the pure renderer.
 *
 * A try job's report shows every builder's result and, for each failed
 * build, the first failed step with an excerpt of its log; a build's
 * notice shows its steps, its blamelist and the excerpt of its failure.
 * The same code serves the sender and `tf-master mail preview`, so a
 * preview shows exactly what would be sent.
 *
 * Strings read from the store live in a pool for one rendering: the
 * store's views are borrowed for a visitor call only.
 */
#include "mail/mail_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "crypto.h"
#include "email.h"
#include "names.h"
#include "store/q_tests.h"
#include "tf_err.h"

#define MAX_STEPS 256
#define MAX_CHANGES 100
#define MAX_TESTS 10 /* failing tests shown per build */
#define LOG_SCAN_HEAD (32ull << 20) /* bytes of a long log searched */
#define LOG_SCAN_TAIL (1ull << 20)  /* bytes read at its end for the tail */

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

static void pool_free(pool_t *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->v[i]);
    free(p->v);
    memset(p, 0, sizeof(*p));
}

/* ------------------------------------------------------------------ */
/* Steps and their excerpts                                            */
/* ------------------------------------------------------------------ */

static bool is_failure(tf_result_t r)
{
    return r == TF_FAILURE || r == TF_EXCEPTION;
}

typedef struct scan {
    tf_excerpt_t *e;
    int pass;      /* 0: from the start, 1: the tail */
    bool split;    /* the log is searched in two passes */
    bool first;
} scan_t;

static bool scan_chunk(void *arg, uint64_t offset, uint64_t line,
                       const void *data, size_t len)
{
    scan_t *sc = arg;
    if (sc->pass == 0 && sc->split && offset >= LOG_SCAN_HEAD)
        return false;
    if (sc->pass == 1 && sc->first)
        tf_excerpt_jump(sc->e, line);
    sc->first = false;
    tf_excerpt_feed(sc->e, data, len);
    return true;
}

/* The excerpt of a step's log (malloc'd), or NULL when out of memory. A
 * log longer than LOG_SCAN_HEAD + LOG_SCAN_TAIL is searched in its first
 * LOG_SCAN_HEAD bytes and its tail read from its last LOG_SCAN_TAIL. */
static char *step_excerpt(tf_db_t *db, const tf__mail_settings_t *s,
                          const char *builder, uint64_t build_id,
                          unsigned step, uint64_t log_bytes)
{
    const tf__mail_bset_t *bs = tf__mail_settings_builder(s, builder);
    const char *const *pats =
        (const char *const *)(bs ? bs->patterns : s->mail.error_patterns);
    size_t npats = bs ? bs->npatterns : s->mail.npatterns;
    scan_t sc = {
        .e = tf_excerpt_new(pats, npats, s->mail.tail_lines,
                            s->mail.excerpt_max_bytes),
        .split = log_bytes > LOG_SCAN_HEAD + LOG_SCAN_TAIL,
    };
    char *out = NULL;
    if (!sc.e)
        return NULL;
    tf_excerpt_set_context_after(sc.e, s->mail.context_after);
    for (sc.pass = 0; sc.pass < (sc.split ? 2 : 1); sc.pass++) {
        sc.first = true;
        if (tf_store_mail_log(db, build_id, step,
                              sc.pass == 0 ? 0 : log_bytes - LOG_SCAN_TAIL,
                              scan_chunk, &sc) != 0)
            goto out;
    }
    out = tf_excerpt_finish(sc.e);
out:
    tf_excerpt_free(sc.e);
    return out;
}

/* One step as mails show it. */
static void step_from_view(pool_t *p, const tf__mail_settings_t *s,
                           const tf_store_mail_step_t *v, uint64_t build_id,
                           tf_mail_step_t *out)
{
    out->index = v->index;
    out->name = pool_dup(p, v->name);
    out->result = v->has_result ? (tf_result_t)v->result : TF_SKIPPED;
    out->text = pool_dup(p, v->text);
    out->info = pool_dup(p, v->info);
    out->log_lines = v->log_lines;
    out->log_url =
        s->pages ? pool_fmt(p, "%s#/builds/%" PRIu64 "/steps/%u", s->base_url,
                            build_id, out->index)
                 : pool_fmt(p, "%sapi/v1/builds/%" PRIu64 "/steps/%u/log",
                            s->base_url, build_id, out->index);
}

/* ------------------------------------------------------------------ */
/* Failing tests                                                       */
/* ------------------------------------------------------------------ */

typedef struct tests_data {
    pool_t *pool;
    tf_mail_test_t *v; /* MAX_TESTS of them, in the pool */
    size_t n;
} tests_data_t;

static int test_visit(void *arg, const tf_q_failed_test_t *t)
{
    tests_data_t *td = arg;
    if (td->n == MAX_TESTS)
        return 0;
    tf_mail_test_t *x = &td->v[td->n++];
    x->suite = pool_dup(td->pool, t->suite);
    x->name = pool_dup(td->pool, t->name);
    x->flaky = strcmp(t->status, "flaky") == 0;
    x->known = !t->is_try ? -1 : t->known ? 1 : 0;
    x->message = t->message ? pool_dup(td->pool, t->message) : NULL;
    x->step = pool_dup(td->pool, t->step_name);
    x->log_line = t->has_log ? t->log_line : 0;
    x->lines = t->excerpt && *t->excerpt ? pool_dup(td->pool, t->excerpt)
                                         : NULL;
    return 0;
}

/* Fills b's failing tests (read on db; strings in the pool). */
static int build_tests(tf_db_t *db, pool_t *p, tf_mail_build_t *b)
{
    tf_q_test_counts_t c;
    char *mem = calloc(MAX_TESTS, sizeof(tf_mail_test_t));
    if (!mem || !pool_keep(p, mem))
        return TF_ENOMEM;
    tests_data_t td = {.pool = p, .v = (tf_mail_test_t *)mem};
    int rc = tf_q_failed_tests(db, b->build_id, MAX_TESTS, true, &c,
                               test_visit, &td);
    if (rc == TF_ENOENT)
        return 0;
    if (rc)
        return rc;
    b->tests = td.v;
    b->ntests = td.n;
    b->tests_fail = c.fail;
    b->tests_flaky = c.flaky;
    b->is_try = c.is_try;
    b->new_failures = c.new_failures;
    return 0;
}

/* ------------------------------------------------------------------ */
/* A try job's report                                                  */
/* ------------------------------------------------------------------ */

typedef struct job_data {
    tf_db_t *db;
    const tf__mail_settings_t *s;
    pool_t pool;
    tf_mail_job_t job;
    tf_mail_build_t *builds;
    tf_mail_step_t *steps; /* the failed step of builds[i], if any */
    size_t nbuilds, cap;
    tf_mail_rcpt_t to;
    bool notify;
    /* the failed step being read, of build step_build: */
    tf_mail_step_t *step_out;
    uint64_t step_build;
    uint64_t step_bytes;
    bool step_found;
} job_data_t;

static int job_visit(void *arg, const tf_store_mail_job_t *v)
{
    job_data_t *jd = arg;
    pool_t *p = &jd->pool;
    tf_mail_job_t *j = &jd->job;
    j->author = pool_dup(p, v->author);
    j->author_email = pool_dup(p, v->email);
    const char *to = pool_dup(p, v->notify_email);
    j->description = pool_dup(p, v->description);
    j->review_url = pool_dup(p, v->review_url);
    j->patchset = pool_dup(p, v->patchset);
    j->base_revision = pool_dup(p, v->base_revision);
    j->state = pool_dup(p, v->state);
    j->has_result = v->has_result;
    j->result = (tf_result_t)v->result;
    j->submitted_ms = v->submitted_ms;
    j->finished_ms = v->finished_ms;
    jd->notify = v->notify;
    j->new_failures_only = v->new_failures_only;
    j->url = pool_fmt(p, jd->s->pages ? "%s#/jobs/%" PRIu64
                                      : "%sapi/v1/jobs/%" PRIu64,
                      jd->s->base_url, j->id);
    jd->to.addr = to ? to : j->author_email;
    /* The author's name goes with the author's own address only. */
    jd->to.name = j->author_email && jd->to.addr &&
                          strcasecmp(jd->to.addr, j->author_email) == 0
                      ? j->author
                      : NULL;
    return 0;
}

static int job_request_visit(void *arg, const tf_store_mail_request_t *v)
{
    job_data_t *jd = arg;
    pool_t *p = &jd->pool;
    if (jd->nbuilds == jd->cap) {
        size_t ncap = jd->cap ? jd->cap * 2 : 8;
        tf_mail_build_t *nb = realloc(jd->builds, ncap * sizeof(*nb));
        if (!nb)
            return TF_ENOMEM;
        jd->builds = nb;
        tf_mail_step_t *ns = realloc(jd->steps, ncap * sizeof(*ns));
        if (!ns)
            return TF_ENOMEM;
        jd->steps = ns;
        jd->cap = ncap;
    }
    tf_mail_build_t *b = &jd->builds[jd->nbuilds];
    memset(b, 0, sizeof(*b));
    memset(&jd->steps[jd->nbuilds], 0, sizeof(jd->steps[0]));
    jd->nbuilds++;
    b->builder = pool_dup(p, v->builder);
    b->state = pool_dup(p, v->state);
    b->has_result = v->has_result;
    b->result = (tf_result_t)v->result;
    if (v->has_build) {
        b->has_build = true;
        b->build_id = v->build_id;
        b->number = v->number;
        b->slave = pool_dup(p, v->slave);
        b->started_ms = v->started_ms;
        b->finished_ms = v->finished_ms;
        b->text = pool_dup(p, v->text);
        b->url = pool_fmt(p, jd->s->pages ? "%s#/builds/%" PRIu64
                                          : "%sapi/v1/builds/%" PRIu64,
                          jd->s->base_url, b->build_id);
    }
    return 0;
}

static int failed_step_visit(void *arg, const tf_store_mail_step_t *v)
{
    job_data_t *jd = arg;
    step_from_view(&jd->pool, jd->s, v, jd->step_build, jd->step_out);
    jd->step_bytes = v->log_bytes;
    jd->step_found = true;
    return 0;
}

/* The arrays have stopped moving: find each failed build's first failed
 * step, with its excerpt. */
static int job_failed_steps(job_data_t *jd)
{
    pool_t *p = &jd->pool;
    for (size_t i = 0; i < jd->nbuilds; i++) {
        tf_mail_build_t *b = &jd->builds[i];
        b->failed = NULL;
        if (!b->has_build || !b->has_result || !is_failure(b->result))
            continue;
        int trc = build_tests(jd->db, p, b);
        if (trc)
            return trc;
        if (!b->tests_fail || b->new_failures)
            jd->job.new_failure_builds++;
        jd->step_out = &jd->steps[i];
        jd->step_build = b->build_id;
        jd->step_found = false;
        int rc = tf_store_mail_steps(jd->db, b->build_id, 1, true,
                                     failed_step_visit, jd);
        if (rc)
            return rc;
        if (!jd->step_found)
            continue;
        tf_mail_step_t *st = &jd->steps[i];
        /* A rerun without the patch has its builder's error patterns. */
        char builder[TF_NAME_MAX + 1];
        snprintf(builder, sizeof(builder), "%.*s",
                 (int)strcspn(b->builder, " "), b->builder);
        st->excerpt = pool_keep(p, step_excerpt(jd->db, jd->s, builder,
                                                b->build_id, st->index,
                                                jd->step_bytes));
        if (!st->excerpt)
            p->oom = true;
        b->failed = st;
    }
    return 0;
}

static int load_job_fn(tf_db_t *db, void *arg)
{
    job_data_t *jd = arg;
    jd->db = db;
    int rc = tf_store_mail_job(db, jd->job.id, job_visit, job_request_visit,
                               jd);
    if (rc == 0)
        rc = job_failed_steps(jd);
    if (rc == 0 && jd->pool.oom)
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

/* ------------------------------------------------------------------ */
/* A build's notice                                                    */
/* ------------------------------------------------------------------ */

typedef struct notice_data {
    tf_db_t *db;
    const tf__mail_settings_t *s;
    const char *extra_json; /* the row's recipients, or NULL */
    pool_t pool;
    tf_mail_notice_t n;
    tf_mail_step_t *steps;
    size_t nsteps;
    tf_mail_step_t failed;
    int64_t fail_bytes;
    tf_mail_change_t *changes;
    size_t nchanges;
    tf_mail_rcpt_t *to;
    size_t nto;
    bool in_job;
} notice_data_t;

static void add_rcpt(notice_data_t *nd, const char *name, const char *addr)
{
    if (!addr || !tf_email_valid(addr) || nd->nto >= TF__MAIL_MAX_RCPT)
        return;
    for (size_t i = 0; i < nd->nto; i++)
        if (strcasecmp(nd->to[i].addr, addr) == 0)
            return;
    nd->to[nd->nto++] = (tf_mail_rcpt_t){.name = name, .addr = addr};
}

static int notice_build_visit(void *arg, const tf_store_mail_build_t *v)
{
    notice_data_t *nd = arg;
    pool_t *p = &nd->pool;
    tf_mail_build_t *b = &nd->n.build;
    b->builder = pool_dup(p, v->builder);
    b->has_build = true;
    b->number = v->number;
    b->slave = pool_dup(p, v->slave);
    b->has_result = v->has_result;
    b->result = (tf_result_t)v->result;
    b->started_ms = v->started_ms;
    b->finished_ms = v->finished_ms;
    b->text = pool_dup(p, v->text);
    nd->n.reason = pool_dup(p, v->reason);
    nd->n.repository = pool_dup(p, v->repository);
    nd->n.branch = pool_dup(p, v->branch);
    nd->n.revision = pool_dup(p, v->revision);
    b->state = pool_dup(p, v->state);
    nd->in_job = v->in_job;
    b->url = pool_fmt(p, nd->s->pages ? "%s#/builds/%" PRIu64
                                      : "%sapi/v1/builds/%" PRIu64,
                      nd->s->base_url, b->build_id);
    return 0;
}

static int notice_step_visit(void *arg, const tf_store_mail_step_t *v)
{
    notice_data_t *nd = arg;
    tf_mail_build_t *b = &nd->n.build;
    tf_mail_step_t *x = &nd->steps[nd->nsteps++];
    step_from_view(&nd->pool, nd->s, v, b->build_id, x);
    if (nd->fail_bytes < 0 && b->has_result && is_failure(b->result) &&
        is_failure(x->result)) {
        nd->failed = *x;
        nd->fail_bytes = (int64_t)v->log_bytes;
    }
    return 0;
}

static int notice_change_visit(void *arg, const tf_store_mail_change_t *v)
{
    notice_data_t *nd = arg;
    pool_t *p = &nd->pool;
    tf_mail_change_t *c = &nd->changes[nd->nchanges++];
    c->revision = pool_dup(p, v->revision);
    c->author = pool_dup(p, v->author);
    c->email = pool_dup(p, v->email);
    c->message = pool_dup(p, v->message);
    return 0;
}

/* Recipients: the row's (or the builder's) extra addresses, then the
 * blamelist's authors. */
static int notice_recipients(notice_data_t *nd)
{
    pool_t *p = &nd->pool;
    nd->to = calloc(TF__MAIL_MAX_RCPT, sizeof(*nd->to));
    if (!nd->to)
        return TF_ENOMEM;
    if (nd->extra_json) {
        json_t *arr = json_loads(nd->extra_json, 0, NULL);
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v)
            add_rcpt(nd, NULL, pool_dup(p, json_string_value(v)));
        json_decref(arr);
    } else {
        const tf__mail_bset_t *bs =
            tf__mail_settings_builder(nd->s, nd->n.build.builder);
        for (size_t i = 0; bs && i < bs->nextra; i++)
            add_rcpt(nd, NULL, bs->extra[i]);
    }
    for (size_t i = 0; i < nd->nchanges; i++)
        add_rcpt(nd, nd->changes[i].author, nd->changes[i].email);
    nd->n.to = nd->to;
    nd->n.nto = nd->nto;
    return 0;
}

static int load_notice_fn(tf_db_t *db, void *arg)
{
    notice_data_t *nd = arg;
    tf_mail_build_t *b = &nd->n.build;
    bool has_prev = false;
    int prev = 0, rc;
    nd->db = db;
    nd->fail_bytes = -1;
    rc = tf_store_mail_build(db, b->build_id, notice_build_visit, nd,
                             &has_prev, &prev);
    if (rc)
        return rc;
    nd->n.has_prev = has_prev;
    nd->n.prev = (tf_result_t)prev;
    nd->steps = calloc(MAX_STEPS, sizeof(*nd->steps));
    nd->changes = calloc(MAX_CHANGES, sizeof(*nd->changes));
    if (!nd->steps || !nd->changes)
        return TF_ENOMEM;
    if ((rc = tf_store_mail_steps(db, b->build_id, MAX_STEPS, false,
                                  notice_step_visit, nd)) != 0)
        return rc;
    if (b->has_result && is_failure(b->result) &&
        (rc = build_tests(db, &nd->pool, b)) != 0)
        return rc;
    if (nd->fail_bytes >= 0) {
        nd->failed.excerpt = pool_keep(
            &nd->pool, step_excerpt(db, nd->s, b->builder, b->build_id,
                                    nd->failed.index,
                                    (uint64_t)nd->fail_bytes));
        if (!nd->failed.excerpt)
            return TF_ENOMEM;
        b->failed = &nd->failed;
    }
    nd->n.steps = nd->steps;
    nd->n.nsteps = nd->nsteps;
    if ((rc = tf_store_mail_changes(db, b->build_id, MAX_CHANGES,
                                    notice_change_visit, nd)) != 0)
        return rc;
    nd->n.changes = nd->changes;
    nd->n.nchanges = nd->nchanges;
    if ((rc = notice_recipients(nd)) != 0)
        return rc;
    return nd->pool.oom ? TF_ENOMEM : 0;
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

void tf__mail_rendered_clear(tf__mail_rendered_t *r)
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

int tf__mail_render(tf_store_t *store, const tf__mail_settings_t *s,
                    const char *kind, uint64_t ref, uint64_t outbox_id,
                    const char *extra_json, bool placeholder,
                    tf__mail_rendered_t *out)
{
    char boundary[48] = "=_tf_", rnd[33];
    static const tf_mail_rcpt_t nobody = {NULL, TF__MAIL_NOBODY};
    job_data_t jd = {.s = s, .job.id = ref};
    notice_data_t nd = {.s = s, .extra_json = extra_json,
                        .n.build.build_id = ref};
    int rc;

    memset(out, 0, sizeof(*out));
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
    if (strcmp(kind, "job") == 0) {
        rc = tf_store_read_sync(store, load_job_fn, &jd);
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
        rc = tf_store_read_sync(store, load_notice_fn, &nd);
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
        tf__mail_rendered_clear(out);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Preview                                                             */
/* ------------------------------------------------------------------ */

int tf_mail_preview(tf_store_t *store, const tf_config_t *cfg,
                    const char *kind, uint64_t id, tf_mail_preview_t *out)
{
    tf__mail_rendered_t rd;
    tf__mail_settings_t *s = tf__mail_settings_new(cfg);
    int rc;
    memset(out, 0, sizeof(*out));
    if (!s)
        return TF_ENOMEM;
    rc = tf__mail_render(store, s, kind, id, 0, NULL, true, &rd);
    tf__mail_settings_free(s);
    if (rc)
        return rc;
    json_t *first = json_array_get(rd.rcpt, 0);
    out->nobody = first && json_string_value(first) &&
                  strcmp(json_string_value(first), TF__MAIL_NOBODY) == 0;
    out->recipients = json_dumps(rd.rcpt, JSON_COMPACT);
    out->notify = rd.notify;
    out->in_job = rd.in_job;
    out->msg = rd.msg;
    memset(&rd.msg, 0, sizeof(rd.msg));
    tf__mail_rendered_clear(&rd);
    if (!out->recipients) {
        tf_mail_preview_clear(out);
        return TF_ENOMEM;
    }
    return 0;
}

void tf_mail_preview_clear(tf_mail_preview_t *p)
{
    if (!p)
        return;
    tf_mail_msg_clear(&p->msg);
    free(p->recipients);
    memset(p, 0, sizeof(*p));
}
