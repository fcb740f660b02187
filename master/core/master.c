/*
 * master.c - tf-master's process: startup, restoring live state from the
 * database, signals, the one-second tick, config reload and shutdown.
 *
 * Startup order matters: the config is loaded and validated first (a bad
 * config never touches the database), then the store is opened (migrations
 * run), then the live state is rebuilt from it with synchronous reads before
 * the loop serves anything, then the server starts listening.
 *
 * Shutdown (SIGTERM, SIGINT) runs in phases driven by a timer, because the
 * libwebsockets context on a foreign loop needs two destroy calls with the
 * loop turning in between (shared/notes/libwebsockets-on-libuv.md):
 *   1. refuse new slave links, send every link a "shutdown" error;
 *   2. once links are gone (or after 3 s), first lws_context_destroy;
 *   3. close the store: the writer commits everything still queued;
 *   4. once only our own handles are left, second lws_context_destroy,
 *      close our handles, let uv_run return.
 * Running builds keep running on their slaves, which spool their output and
 * replay it when the master is back.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "clock.h"
#include "crypto.h"
#include "core/jobs.h"
#include "net/live.h"
#include "log.h"
#include "mail/mail.h"
#include "core/master.h"
#include "changes/poller.h"
#include "changes/schedulers.h"
#include "tf_err.h"
#include "util.h"

/* --- writes --- */

tf_wgroup_t *tf_master_group_begin(tf_master_t *m, size_t hint)
{
    if (m->group) {
        tf_error("master", "write groups do not nest");
        return m->group;
    }
    m->group = tf_wgroup_new(hint);
    if (!m->group)
        tf_error("master", "out of memory starting a write group");
    return m->group;
}

/* A group holding outbox rows: the mail sender is woken after its
 * commit, after the caller's own callback. */
typedef struct mail_wake {
    tf_master_t *m;
    tf_store_done_cb cb;
    void *arg;
} mail_wake_t;

static void mail_wake_cb(void *arg, int rc)
{
    mail_wake_t *w = arg;

    if (w->cb)
        w->cb(w->arg, rc);
    if (rc == 0)
        tf_mail_wake(w->m->mail);
}

int tf_master_group_commit(tf_master_t *m, tf_store_done_cb cb, void *arg)
{
    tf_wgroup_t *g = m->group;
    bool mail = m->group_mail;
    size_t n = tf_wgroup_count(g);
    int rc;

    m->group = NULL;
    m->group_mail = false;
    if (mail) {
        mail_wake_t *w = tf_wgroup_alloc(g, sizeof(*w));
        if (w) {
            *w = (mail_wake_t){.m = m, .cb = cb, .arg = arg};
            cb = mail_wake_cb;
            arg = w;
        }
    }
    /* The store takes the group, even when it refuses it. */
    rc = tf_store_submit(m->store, g, cb, arg);
    if (rc) {
        /* Nothing half-stored: the whole group is dropped, loudly. */
        tf_error("master", "%zu writes lost (%s)", n, tf_strerror(rc));
        if (cb)
            cb(arg, rc);
    }
    return rc;
}

int tf_master_write(tf_master_t *m, const char *sql, const tf_sqlval_t *vals,
                    size_t nvals, tf_store_done_cb cb, void *arg)
{
    int rc;

    if (m->group) {
        rc = tf_op_sql(m->group, sql, vals, nvals);
        if (cb) {
            /* A group has one callback, given to tf_master_group_commit. */
            tf_error("master", "a write with a callback inside a group: "
                     "%.60s", sql);
            cb(arg, TF_ESTATE);
        }
        return rc;
    }
    rc = tf_store_write(m->store, sql, vals, nvals, cb, arg);
    if (rc) {
        tf_error("master", "write lost (%s): %.80s", tf_strerror(rc), sql);
        if (cb)
            cb(arg, rc);
    }
    return rc;
}

void tf_master_slave_event(tf_master_t *m, const char *slave,
                           const char *event, const char *detail)
{
    tf_master_group_begin(m, 0);
    tf_op_slave_event(m->group, slave, tf_now_ms(), event, detail);
    tf_master_group_commit(m, NULL, NULL);
}

tf_mslave_t *tf_master_slave(tf_master_t *m, const char *name, bool create)
{
    tf_mslave_t *s = tf_map_get_str(m->slaves, name);
    if (s || !create)
        return s;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    snprintf(s->name, sizeof(s->name), "%s", name);
    tf_list_init(&s->builds);
    tf_list_init(&s->idle_node);
    s->cfg = tf_config_slave(m->cfg, name);
    if (tf_map_put_str(m->slaves, name, s) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

void tf_master_slave_attach(tf_master_t *m, tf_mslave_t *s, tf_link_t *l,
                            uint32_t max_builds, const char *platform,
                            const char *version)
{
    s->link = l;
    s->draining = false;
    s->hello_max_builds = max_builds;
    snprintf(s->platform, sizeof(s->platform), "%s", platform ? platform : "");
    snprintf(s->version, sizeof(s->version), "%s", version ? version : "");
    s->connected_ms = tf_now_ms();
    s->last_seen_ms = s->connected_ms;
    tf_sched_slave_changed(m, s);
}

void tf_master_slave_connected(tf_master_t *m, tf_mslave_t *s,
                               const char *detail)
{
    /* Configured tags are what count; store them for the pages. */
    json_t *tags = json_array();
    for (size_t i = 0; s->cfg && tags && i < s->cfg->ntags; i++)
        json_array_append_new(tags, json_string(s->cfg->tags[i]));
    char *tags_text = tags ? json_dumps(tags, JSON_COMPACT) : NULL;
    json_decref(tags);
    tf_master_group_begin(m, 0);
    tf_op_slave_connected(m->group, s->name, s->platform, s->version,
                          tags_text ? tags_text : "[]", s->connected_ms);
    tf_op_slave_event(m->group, s->name, s->connected_ms, "connected",
                      detail);
    tf_master_group_commit(m, NULL, NULL);
    free(tags_text);
}

void tf_master_slave_detach(tf_master_t *m, tf_mslave_t *s, const char *event,
                            const char *detail)
{
    s->link = NULL;
    tf_build_slave_gone(m, s);
    tf_sched_slave_changed(m, s);
    if (event) {
        int64_t now = tf_now_ms();
        tf_master_group_begin(m, 0);
        tf_op_slave_disconnected(m->group, s->name, now);
        tf_op_slave_event(m->group, s->name, now, event, detail);
        tf_master_group_commit(m, NULL, NULL);
    }
}

void tf_master_slave_drain(tf_master_t *m, tf_mslave_t *s)
{
    s->draining = true;
    tf_sched_slave_changed(m, s);
}

tf_mbuilder_t *tf_master_builder(tf_master_t *m, const char *name, bool create)
{
    tf_mbuilder_t *b = tf_map_get_str(m->builders, name);
    if (b || !create)
        return b;
    b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    snprintf(b->name, sizeof(b->name), "%s", name);
    tf_sched_builder_init(b);
    b->next_number = 1;
    b->cfg = tf_config_builder(m->cfg, name);
    if (tf_map_put_str(m->builders, name, b) != 0) {
        free(b);
        return NULL;
    }
    return b;
}

/* --- admin token --- */

static int load_admin_token(tf_master_t *m)
{
    char *path = tf_path_join(m->dir, "admin.token");
    char *tok = NULL;
    int rc = TF_ENOMEM;
    if (!path)
        goto out;
    rc = tf_read_secret(path, &tok);
    if (rc == 0) {
        snprintf(m->admin_token, sizeof(m->admin_token), "%s", tok);
        goto out;
    }
    rc = tf_random_hex(32, m->admin_token);
    if (rc)
        goto out;
    char line[80];
    int n = snprintf(line, sizeof(line), "%s\n", m->admin_token);
    rc = tf_write_file_atomic(path, line, (size_t)n, 0600);
    if (rc == 0)
        tf_info("master", "created admin token in %s", path);
    else
        tf_error("master", "cannot write %s: %s", path, tf_strerror(rc));
out:
    free(tok);
    free(path);
    return rc;
}

/* --- restoring state --- */

static tf_request_t *request_from_row(const tf_ld_request_t *row)
{
    tf_reqspec_t spec = {
        .builder = row->builder ? row->builder : "",
        .reason = row->reason,
        .owner = row->owner,
        .properties = row->properties,
        .priority = row->priority,
        .job_id = row->job_id,
        .tests = row->tests,
        .revision = row->revision,
        .patch_sha256 = row->patch_sha256,
        .patch_size = row->patch_size,
        .scheduler = row->scheduler,
        .changes = row->changes,
        .nchanges = row->nchanges,
    };
    tf_request_t *r = tf_request_make(&spec, row->id, row->submitted_ms);

    if (r) {
        r->retries = row->retries;
        /* Running requests are attached when their build loads; those
         * whose build did not survive, and the pending ones, are queued
         * afterwards (requeue_loaded). */
        if (row->running)
            tf_request_set_state(NULL, r, TF_REQ_RUNNING, "restored");
    }
    return r;
}

static void build_from_row(tf_master_t *m, const tf_ld_build_t *row)
{
    tf_build_t *b = tf_build_new(row->id, row->builder, row->number,
                                 row->slave, row->nsteps);
    if (!b) {
        tf_error("master", "out of memory restoring build %" PRIu64,
                 row->id);
        return;
    }
    b->created_ms = row->created_ms;
    b->started_ms = row->started_ms;
    b->accepted_seq = b->committed_seq = b->acked_seq = row->last_seq;
    b->lost_since_ms = tf_mono_ms();
    for (size_t i = 0; i < row->nsteps; i++) {
        const tf_ld_step_t *r = &row->steps[i];
        tf_bstep_t *s = &b->steps[i];
        s->started = r->started;
        s->finished = r->finished;
        s->result = (tf_result_t)r->result;
        s->log_bytes = r->log_bytes;
        s->log_lines = r->log_lines;
        s->flags = tf_flags_from_bits(r->flags);
        snprintf(s->name, sizeof(s->name), "%s", r->name ? r->name : "");
        s->started_ms = r->started_ms;
        s->finished_ms = r->finished_ms;
    }
    tf_build_restored(b);
    tf_request_t *r = tf_map_get_id(m->requests, row->request_id);
    if (r && r->state == TF_REQ_RUNNING && !r->build) {
        r->build = b;
        b->request = r;
    }
    tf_mslave_t *s = tf_master_slave(m, b->slave, true);
    tf_mbuilder_t *mb = tf_master_builder(m, b->builder, true);
    if (!s || !mb || tf_map_put_id(m->builds, b->id, b) != 0) {
        tf_build_free(b);
        return;
    }
    tf_list_push_back(&s->builds, &b->slave_node);
    s->nbuilds++;
    mb->nrunning++;
    tf_info("master", "build %" PRIu64 " (%s #%" PRIu64 ") was running on "
            "%s: waiting for the slave to resume it",
            b->id, b->builder, b->number, b->slave);
}

/* Rebuilds the live state from the database (startup, before serving). */
static int load_state(tf_master_t *m)
{
    tf_q_state_t q = {.q.kind = TF_Q_LOAD_STATE};
    int rc = tf_store_query_sync(m->store, &q.q);

    if (rc) {
        tf_error("master", "loading the state: %s", tf_strerror(rc));
        tf_q_state_clear(&q);
        return rc;
    }
    m->next_build_id = q.max_build_id + 1;
    m->next_request_id = q.max_request_id + 1;
    m->next_job_id = q.max_job_id + 1;
    for (size_t i = 0; i < q.nbuilders; i++) {
        tf_mbuilder_t *mb = tf_master_builder(m, q.builders[i].name, true);
        if (!mb)
            continue;
        mb->next_number = q.builders[i].max_number + 1;
        snprintf(mb->last_slave, sizeof(mb->last_slave), "%s",
                 q.builders[i].warm_slave ? q.builders[i].warm_slave : "");
    }
    for (size_t i = 0; i < q.nrequests; i++) {
        tf_request_t *r = request_from_row(&q.requests[i]);
        if (!r || tf_map_put_id(m->requests, r->id, r) != 0) {
            tf_error("master", "out of memory restoring request %" PRIu64,
                     q.requests[i].id);
            tf_request_free(r);
        }
    }
    for (size_t i = 0; i < q.nbuilds; i++)
        build_from_row(m, &q.builds[i]);
    for (size_t i = 0; i < q.njobs; i++)
        tf_jobs_restore(m, q.jobs[i].id, q.jobs[i].email, q.jobs[i].started,
                        q.jobs[i].nopen, q.jobs[i].has_result,
                        (tf_result_t)q.jobs[i].result);
    tf_q_state_clear(&q);
    return 0;
}

/* Queues requests that are pending (or whose build did not survive) in id
 * order, which rebuilds the fair-queueing tags deterministically. */
static void requeue_loaded(tf_master_t *m)
{
    size_t n = tf_map_count(m->requests), k = 0, pos = 0;
    tf_request_t **all = calloc(n ? n : 1, sizeof(*all));
    void *v;
    if (!all)
        return;
    while (tf_map_next(m->requests, &pos, NULL, NULL, &v) == 0)
        all[k++] = v;
    /* Insertion sort by id: the map has no order. */
    for (size_t i = 1; i < k; i++) {
        tf_request_t *x = all[i];
        size_t j = i;
        while (j > 0 && all[j - 1]->id > x->id) {
            all[j] = all[j - 1];
            j--;
        }
        all[j] = x;
    }
    tf_master_group_begin(m, 0);
    for (size_t i = 0; i < k; i++) {
        tf_request_t *r = all[i];
        if (r->state == TF_REQ_RUNNING && r->build)
            continue;
        if (r->state == TF_REQ_RUNNING) {
            tf_warn("master", "request %" PRIu64 " was running but its build "
                    "did not survive: queueing it again", r->id);
            tf_op_request_requeue(m->group, r->id, r->retries);
        }
        /* Pending in the database, or running without a build. */
        tf_sched_enqueue(m, r);
    }
    tf_master_group_commit(m, NULL, NULL);
    free(all);
}

/* Makes the builders table match the config, and slave objects exist for
 * every configured slave. */
static void sync_config(tf_master_t *m)
{
    size_t pos = 0;
    void *v;
    while (tf_map_next(m->builders, &pos, NULL, NULL, &v) == 0) {
        tf_mbuilder_t *mb = v;
        mb->cfg = tf_config_builder(m->cfg, mb->name);
    }
    pos = 0;
    while (tf_map_next(m->slaves, &pos, NULL, NULL, &v) == 0) {
        tf_mslave_t *s = v;
        s->cfg = tf_config_slave(m->cfg, s->name);
    }
    tf_master_group_begin(m, 0);
    tf_op_builders_deactivate(m->group);
    for (size_t i = 0; i < m->cfg->nbuilders; i++) {
        const tf_cfg_builder_t *b = &m->cfg->builders[i];
        tf_mbuilder_t *mb = tf_master_builder(m, b->name, true);
        if (mb)
            mb->cfg = b;
        tf_op_builder_activate(m->group, b->name);
    }
    for (size_t i = 0; i < m->cfg->nslaves; i++) {
        const tf_cfg_slave_t *c = &m->cfg->slaves[i];
        tf_mslave_t *s = tf_master_slave(m, c->name, true);
        if (s)
            s->cfg = c;
        tf_op_slave_known(m->group, c->name);
    }
    /* Counts may have drifted if the last run died: write what we know. */
    pos = 0;
    while (tf_map_next(m->builders, &pos, NULL, NULL, &v) == 0) {
        tf_mbuilder_t *mb = v;
        tf_op_builder_counts(m->group, mb->name, mb->npending, mb->nrunning);
    }
    tf_master_group_commit(m, NULL, NULL);
    tf_sched_config(m);
}

/* --- config reload --- */

static void print_diags(const tf_cfg_diags_t *d)
{
    for (size_t i = 0; i < d->count; i++) {
        char *line = tf_cfg_diag_format(&d->items[i]);
        if (line)
            tf_error("config", "%s", line);
        free(line);
    }
}

static void reload_config(tf_master_t *m)
{
    tf_cfg_diags_t diags = {0};
    tf_config_t *cfg = NULL;
    tf_info("master", "SIGHUP: reloading %s", m->cfg->path);
    int rc = tf_config_load(m->cfg->path, &cfg, &diags);
    if (rc) {
        size_t nerr = diags.count;
        print_diags(&diags);
        tf_cfg_diags_clear(&diags);
        tf_error("master", "config not reloaded: %zu error(s); the old one "
                 "stays in force", nerr);
        return;
    }
    tf_cfg_diags_clear(&diags);
    if (cfg->listen_port != m->cfg->listen_port ||
        strcmp(cfg->listen_host, m->cfg->listen_host) != 0 ||
        strcmp(cfg->database, m->cfg->database) != 0)
        tf_warn("master", "listen address and database changes take effect "
                "at the next restart");
    tf_config_t *old = m->cfg;
    m->cfg = cfg;
    sync_config(m);
    tf_pollers_reload(m);
    tf_schedulers_reload(m);
    tf_mail_reconfigure(&m->mail, m->store, m->cfg);
    /* Slaves removed from the config lose their link. */
    size_t pos = 0;
    void *v;
    while (tf_map_next(m->slaves, &pos, NULL, NULL, &v) == 0) {
        tf_mslave_t *s = v;
        if (!s->cfg && s->link)
            tf_link_close(s->link, "unknown_slave", TF_CLOSE_UNKNOWN_SLAVE,
                          "slave %s was removed from the configuration",
                          s->name);
    }
    tf_config_free(old);
    tf_info("master", "config reloaded: %zu slaves, %zu builders",
            cfg->nslaves, cfg->nbuilders);
    tf_sched_kick(m);
}

/* --- loop handles --- */

static void tick_cb(uv_timer_t *t)
{
    tf_master_t *m = t->data;
    if (m->stopping)
        return;
    tf_link_heartbeat(m);
    tf_build_check_lost(m);
    tf_build_retry_ends(m);
    int64_t now = tf_now_ms();
    static int64_t last_seen_flush;
    if (now - last_seen_flush >= 30000) {
        last_seen_flush = now;
        size_t pos = 0;
        void *v;
        tf_master_group_begin(m, 0);
        while (tf_map_next(m->slaves, &pos, NULL, NULL, &v) == 0) {
            tf_mslave_t *s = v;
            if (s->link)
                tf_op_slave_seen(m->group, s->name, s->last_seen_ms);
        }
        tf_master_group_commit(m, NULL, NULL);
    }
}

static void congestion_cb(void *arg, bool congested)
{
    tf_master_t *m = arg;
    m->store_congested = congested;
    if (congested)
        tf_warn("master", "store queue congested: pausing reads from slaves");
    else
        tf_info("master", "store queue drained: reading from slaves again");
    tf_link_flow_all(m, !congested);
}

static bool is_our_handle(tf_master_t *m, uv_handle_t *h)
{
    return h == (uv_handle_t *)&m->sig_hup ||
           h == (uv_handle_t *)&m->sig_term ||
           h == (uv_handle_t *)&m->sig_int || h == (uv_handle_t *)&m->tick ||
           h == (uv_handle_t *)&m->sched_idle ||
           h == (uv_handle_t *)&m->shutdown_timer;
}

typedef struct walk_ctx {
    tf_master_t *m;
    unsigned foreign;
} walk_ctx_t;

/* Counts the handles that are not ours, closing ones included: a closing
 * handle stays in the loop's queue until its close callback has run, and
 * lws's live inside its context, so freeing the context (the second
 * lws_context_destroy) before then leaves the loop reading freed memory. */
static void walk_cb(uv_handle_t *h, void *arg)
{
    walk_ctx_t *w = arg;
    if (!is_our_handle(w->m, h))
        w->foreign++;
}

static void close_ours(tf_master_t *m)
{
    uv_handle_t *hs[] = {
        (uv_handle_t *)&m->sig_hup,  (uv_handle_t *)&m->sig_term,
        (uv_handle_t *)&m->sig_int,  (uv_handle_t *)&m->tick,
        (uv_handle_t *)&m->sched_idle, (uv_handle_t *)&m->shutdown_timer,
    };
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
        if (!uv_is_closing(hs[i]))
            uv_close(hs[i], NULL);
}

static void noop_cb(void *arg)
{
    (void)arg;
}

static void store_closed_cb(void *arg)
{
    tf_master_t *m = arg;
    m->store = NULL;
    m->shutdown_phase = 3;
}

static void shutdown_cb(uv_timer_t *t)
{
    tf_master_t *m = t->data;
    /* Ticks (100 ms) spent in the current phase. */
    static int waited;
    switch (m->shutdown_phase) {
    case 1:
        if ((tf_map_count(m->links) == 0 && tf_list_empty(&m->live_conns)) ||
            ++waited > 30) {
            waited = 0;
            tf_server_stop(m);
            m->shutdown_phase = 2;
            tf_mail_stop(m->mail); /* it reads and writes the store */
            tf_store_close(m->store, store_closed_cb, m);
        }
        break;
    case 2:
        break; /* store_closed_cb moves us on */
    case 3: {
        walk_ctx_t w = {.m = m};
        uv_walk(m->loop, walk_cb, &w);
        /* Under valgrind on a loaded machine lws's handles take a few
         * hundred ms to close; the bound only guards against a handle of
         * another part that never closes (its owner then has a bug). */
        if (w.foreign == 0 || ++waited > 300) {
            if (w.foreign)
                tf_warn("master", "%u handles still open after 30 s: "
                        "finishing the shutdown anyway", w.foreign);
            tf_server_destroy(m);
            m->shutdown_phase = 4;
            close_ours(m);
        }
        break;
    }
    default:
        break;
    }
}

static void begin_shutdown(tf_master_t *m, const char *why)
{
    if (m->stopping)
        return;
    tf_info("master", "%s: shutting down", why);
    m->stopping = true;
    uv_idle_stop(&m->sched_idle);
    tf_build_flush_acks(m);
    tf_build_retry_ends(m); /* the store drains them when it closes */
    tf_link_close_all(m);
    tf_live_close_all(m);
    tf_pollers_stop(m);
    tf_schedulers_stop(m);
    tf_mail_stop_begin(m->mail);
    m->shutdown_phase = 1;
    uv_timer_start(&m->shutdown_timer, shutdown_cb, 100, 100);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    tf_master_t *m = h->data;
    if (signum == SIGHUP) {
        if (!m->stopping)
            reload_config(m);
        return;
    }
    begin_shutdown(m, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void free_state(tf_master_t *m)
{
    size_t pos = 0;
    void *v;
    tf_build_retry_ends(m); /* the store is closed: whatever is left is lost */
    while (tf_map_next(m->builds, &pos, NULL, NULL, &v) == 0)
        tf_build_free(v);
    pos = 0;
    while (tf_map_next(m->requests, &pos, NULL, NULL, &v) == 0)
        tf_request_free(v);
    pos = 0;
    while (tf_map_next(m->slaves, &pos, NULL, NULL, &v) == 0) {
        tf_mslave_t *s = v;
        free(s->can);
        free(s);
    }
    pos = 0;
    while (tf_map_next(m->builders, &pos, NULL, NULL, &v) == 0) {
        tf_mbuilder_t *mb = v;
        free(mb->allowed);
        free(mb);
    }
    free(m->heads);
    free(m->blocked);
    tf_map_free(m->builds);
    tf_map_free(m->requests);
    tf_map_free(m->slaves);
    tf_map_free(m->builders);
    tf_map_free(m->links);
    tf_map_free(m->fair_last);
    if (m->jobs)
        tf_jobs_free_all(m);
    tf_map_free(m->jobs);
    tf_schedulers_free(m);
    tf_pollers_free(m);
    tf_config_free(m->cfg);
    free(m->dir);
    free(m->web_root);
}

int tf_master_run(const char *dir, const char *config_path)
{
    tf_master_t mm;
    tf_master_t *m = &mm;
    uv_loop_t loop;
    tf_cfg_diags_t diags = {0};
    char *cfg_path = NULL;
    int rc;

    memset(m, 0, sizeof(*m));
    m->exit_code = 1;
    tf_list_init(&m->ack_list);
    tf_list_init(&m->live_conns);
    tf_list_init(&m->idle);
    m->dir = strdup(dir);
    {
        char *given = config_path ? strdup(config_path)
                                  : tf_path_join(dir, "master.json");
        /* Reloads read the same file even if the cwd changes. */
        cfg_path = given ? realpath(given, NULL) : NULL;
        if (!cfg_path)
            cfg_path = given;
        else
            free(given);
    }
    m->slaves = tf_map_new();
    m->builders = tf_map_new();
    m->requests = tf_map_new();
    m->builds = tf_map_new();
    m->links = tf_map_new();
    m->fair_last = tf_map_new();
    m->jobs = tf_map_new();
    if (!m->dir || !cfg_path || !m->slaves || !m->builders || !m->requests ||
        !m->builds || !m->links || !m->fair_last || !m->jobs) {
        tf_error("master", "out of memory");
        free(cfg_path);
        free_state(m);
        return 1;
    }
    rc = tf_config_load(cfg_path, &m->cfg, &diags);
    free(cfg_path);
    if (rc) {
        print_diags(&diags);
        tf_cfg_diags_clear(&diags);
        free_state(m);
        return 2;
    }
    if (load_admin_token(m) != 0) {
        free_state(m);
        return 1;
    }
    if (uv_loop_init(&loop) != 0) {
        free_state(m);
        return 1;
    }
    m->loop = &loop;
    tf_store_opts_t so = {.congestion_cb = congestion_cb,
                          .congestion_arg = m};
    rc = tf_store_open(m->loop, m->cfg->database, &so, &m->store);
    if (rc) {
        tf_error("master", "cannot open the database %s: %s",
                 m->cfg->database, tf_strerror(rc));
        goto fail_loop;
    }
    rc = load_state(m);
    if (rc) {
        tf_error("master", "cannot load state from %s", m->cfg->database);
        goto fail_store;
    }
    uv_idle_init(m->loop, &m->sched_idle);
    m->sched_idle.data = m;
    sync_config(m);
    tf_master_group_begin(m, 0);
    tf_op_slaves_reset(m->group);
    tf_master_group_commit(m, NULL, NULL);
    requeue_loaded(m);

    rc = tf_server_start(m);
    if (rc)
        goto fail_store_idle;
    /* Change sources and schedulers run after the live state is back
     * (they queue requests); their failure leaves the master serving. */
    if (tf_pollers_start(m) != 0)
        tf_error("master", "the change pollers could not start");
    if (tf_schedulers_start(m) != 0)
        tf_error("master", "the schedulers could not start");

    uv_signal_init(m->loop, &m->sig_hup);
    uv_signal_init(m->loop, &m->sig_term);
    uv_signal_init(m->loop, &m->sig_int);
    m->sig_hup.data = m->sig_term.data = m->sig_int.data = m;
    uv_signal_start(&m->sig_hup, signal_cb, SIGHUP);
    uv_signal_start(&m->sig_term, signal_cb, SIGTERM);
    uv_signal_start(&m->sig_int, signal_cb, SIGINT);
    uv_timer_init(m->loop, &m->tick);
    m->tick.data = m;
    uv_timer_start(&m->tick, tick_cb, 1000, 1000);
    uv_timer_init(m->loop, &m->shutdown_timer);
    m->shutdown_timer.data = m;
    signal(SIGPIPE, SIG_IGN);

    tf_info("master", "tf-master %s serving %s on %s:%u (database %s)",
            TF_VERSION, m->cfg->name, m->cfg->listen_host,
            m->cfg->listen_port, m->cfg->database);
    tf_mail_start(&m->mail, m->store, m->cfg);
    tf_sched_kick(m);
    uv_run(m->loop, UV_RUN_DEFAULT);
    tf_mail_free(m->mail); /* after the store closed: its callbacks ran */
    m->mail = NULL;
    rc = uv_loop_close(m->loop);
    if (rc)
        tf_warn("master", "loop closed with handles open: %s",
                uv_strerror(rc));
    free_state(m);
    tf_info("master", "stopped");
    return 0;

fail_store_idle:
    uv_close((uv_handle_t *)&m->sched_idle, NULL);
    tf_server_stop(m); /* a context without its listener, if any */
fail_store:
    tf_store_close(m->store, noop_cb, NULL);
    uv_run(m->loop, UV_RUN_DEFAULT);
    tf_server_destroy(m);
fail_loop:
    uv_loop_close(m->loop);
    free_state(m);
    return 1;
}
