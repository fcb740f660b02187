/*
 * master.c - the master's live model as a whole: the registry of slaves and
 * builders, the write groups every change goes through, restoring the live
 * state from the database, applying a config, the one-second tick, and the
 * one door to the network (m->net).
 *
 * The program's root (master/daemon.c) owns the process: signals, timers,
 * the server, the change sources, mail, shutdown. It sets m->net (the
 * network layer's functions: send to a slave, close a link, publish to
 * live viewers) and m->mail_wake before the loop runs, so the core never
 * includes the network, mail or change folders: it calls them through
 * these pointers, and they call it (docs/internals.md, "Subsystems").
 *
 * Startup (tf_master_start) rebuilds the live objects from the database
 * with one synchronous query before the loop serves anything: requests
 * pending or running, builds not finished (waiting for their slave to
 * resume them), unfinished try jobs, each builder's next number and warm
 * slave.
 */
#include <errno.h>
#include <stdarg.h>
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
#include "log.h"
#include "core/master.h"
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
    if (rc == 0 && w->m->mail_wake)
        w->m->mail_wake(w->m);
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
    rc = tf_store_submit(m->store, g, cb, arg);
    if (rc) {
        /* Nothing half-stored: the whole group is dropped, loudly. The
         * callback runs first: its context lives in the group. */
        tf_error("master", "%zu writes lost (%s)", n, tf_strerror(rc));
        if (cb)
            cb(arg, rc);
        if (!tf_wgroup_kept(g))
            tf_wgroup_free(g);
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
    /* For the other masters' counts (and the cached answers' freshness:
     * the commit moves the store's generation). */
    tf_master_group_begin(m, 0);
    tf_op_slave_draining(m->group, s->name);
    tf_master_group_commit(m, NULL, NULL);
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
    b->is_try = row->is_try;
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
    snprintf(m->farm, sizeof(m->farm), "%s", q.farm);
    m->next_request_id = q.max_request_id + 1;
    m->next_job_id = q.max_job_id + 1;
    bool shared = tf_store_is_shared(m->store);
    if (shared) {
        /* Ids come from the shared sequence (tf_master_ids). */
        m->next_build_id = m->next_request_id = m->next_job_id = 0;
        m->ids_end = 0;
    }
    for (size_t i = 0; i < q.nbuilders; i++) {
        tf_mbuilder_t *mb = tf_master_builder(m, q.builders[i].name, true);
        if (!mb)
            continue;
        mb->next_number = q.builders[i].max_number + 1;
        snprintf(mb->last_slave, sizeof(mb->last_slave), "%s",
                 q.builders[i].warm_slave ? q.builders[i].warm_slave : "");
    }
    for (size_t i = 0; i < q.nrequests; i++) {
        /* Several masters: the running ones are another master's (this
         * one starts with none); only the queue is the farm's. */
        if (shared && q.requests[i].running)
            continue;
        tf_request_t *r = request_from_row(&q.requests[i]);
        if (!r || tf_map_put_id(m->requests, r->id, r) != 0) {
            tf_error("master", "out of memory restoring request %" PRIu64,
                     q.requests[i].id);
            tf_request_free(r);
        }
    }
    for (size_t i = 0; !shared && i < q.nbuilds; i++)
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

/* The store's retention from the config: each builder's keys, -1 taking
 * the top-level value (docs/config.md, "retention"). */
static int64_t ret_or(int64_t v, int64_t dflt)
{
    return v >= 0 ? v : dflt;
}

int tf_retention_from_config(const tf_config_t *cfg, tf_retention_t *out)
{
    const tf_cfg_retention_t *top = &cfg->retention;
    memset(out, 0, sizeof(*out));
    out->dflt.log_days = top->log_days;
    out->dflt.log_builds = top->log_builds;
    out->dflt.log_bytes = top->log_mib * 1024 * 1024;
    out->rules = calloc(cfg->nbuilders ? cfg->nbuilders : 1,
                        sizeof(*out->rules));
    if (!out->rules)
        return TF_ENOMEM;
    for (size_t i = 0; i < cfg->nbuilders; i++) {
        const tf_cfg_builder_t *b = &cfg->builders[i];
        tf_retention_rule_t *x = &out->rules[out->n++];
        snprintf(x->builder, sizeof(x->builder), "%s", b->name);
        x->log_days = ret_or(b->retention.log_days, top->log_days);
        x->log_builds = ret_or(b->retention.log_builds, top->log_builds);
        x->log_bytes = ret_or(b->retention.log_mib, top->log_mib) * 1024 *
                       1024;
    }
    return 0;
}

static void set_retention(tf_master_t *m)
{
    tf_retention_t r;
    if (!m->store)
        return;
    if (tf_retention_from_config(m->cfg, &r) != 0 ||
        tf_store_set_retention(m->store, &r) != 0)
        tf_error("master", "out of memory setting the log retention");
    free(r.rules);
}

/* The writes of a sync_config are in (rc 0) or lost: then the slaves
 * rows it skipped may be missing too, and the next sync writes all. */
static void sync_written_cb(void *arg, int rc)
{
    tf_master_t *m = arg;
    if (rc)
        m->slave_rows_lost = true;
}

/* Makes the builders table match the config, and slave objects exist for
 * every configured slave. A slave's row is written once (INSERT ... DO
 * NOTHING, and rows are never deleted): a reload of 5,000 unchanged
 * slaves queued 5,000 statements for the writer ahead of the builds it
 * released. */
static void sync_config(tf_master_t *m)
{
    size_t pos = 0;
    void *v;
    bool all_rows = m->slave_rows_lost;
    /* Every builder and slave loses its old config here; the configured
     * ones get theirs back below, by one walk of the config each (a
     * lookup by name per known one would be quadratic). */
    while (tf_map_next(m->builders, &pos, NULL, NULL, &v) == 0) {
        ((tf_mbuilder_t *)v)->cfg = NULL;
        /* Made again from the new config at their next start: a recipe
         * is measured before interpolation, so it alone does not tell
         * (a shell string and the same argv quote a property apart). */
        tf_build_templates_free(v);
    }
    pos = 0;
    while (tf_map_next(m->slaves, &pos, NULL, NULL, &v) == 0)
        ((tf_mslave_t *)v)->cfg = NULL;
    tf_master_group_begin(m, 0);
    tf_op_builders_deactivate(m->group);
    for (size_t i = 0; i < m->cfg->nbuilders; i++) {
        const tf_cfg_builder_t *b = &m->cfg->builders[i];
        tf_mbuilder_t *mb = tf_master_builder(m, b->name, true);
        if (mb)
            mb->cfg = b;
        tf_op_builder_activate(m->group, b->name);
    }
    m->slave_rows_lost = false;
    for (size_t i = 0; i < m->cfg->nslaves; i++) {
        const tf_cfg_slave_t *c = &m->cfg->slaves[i];
        tf_mslave_t *s = tf_master_slave(m, c->name, true);
        if (s)
            s->cfg = c;
        if (s && s->row_written && !all_rows)
            continue;
        if (tf_op_slave_known(m->group, c->name) == 0 && s)
            s->row_written = true;
    }
    /* Counts may have drifted if the last run died: write what we know. */
    pos = 0;
    while (tf_map_next(m->builders, &pos, NULL, NULL, &v) == 0) {
        tf_mbuilder_t *mb = v;
        tf_op_builder_counts(m->group, mb->name, mb->npending, mb->nrunning);
    }
    tf_master_group_commit(m, sync_written_cb, m);
    set_retention(m);
    tf_sched_config(m);
}

/* --- the whole --- */

int tf_master_init(tf_master_t *m, const char *dir)
{
    memset(m, 0, sizeof(*m));
    m->exit_code = 1;
    tf_list_init(&m->ack_list);
    tf_list_init(&m->deferred_links);
    tf_list_init(&m->live_conns);
    tf_list_init(&m->live_tails);
    tf_list_init(&m->idle);
    m->dir = strdup(dir);
    m->slaves = tf_map_new();
    m->builders = tf_map_new();
    m->requests = tf_map_new();
    m->builds = tf_map_new();
    m->links = tf_map_new();
    m->fair_last = tf_map_new();
    m->jobs = tf_map_new();
    if (!m->dir || !m->slaves || !m->builders || !m->requests ||
        !m->builds || !m->links || !m->fair_last || !m->jobs) {
        tf_error("master", "out of memory");
        return TF_ENOMEM;
    }
    return 0;
}

int tf_master_start(tf_master_t *m)
{
    int rc = load_state(m);

    if (rc) {
        tf_error("master", "cannot load state from %s", m->cfg->database);
        return rc;
    }
    uv_idle_init(m->loop, &m->sched_idle);
    m->sched_idle.data = m;
    m->defer_max_ms = TF_DEFER_MAX_MS;
#ifdef TF_TEST_HOOKS
    /* Test hook: every deferral (tf_master_defer_slaves) lasts this long,
     * however soon its start batches land, so a test can have a slave's
     * whole build put off. */
    const char *dm = getenv("TF_TEST_DEFER_MS");
    uint64_t dms;
    if (dm && *dm && tf_parse_u64(dm, &dms) == 0 && dms <= 60000) {
        m->defer_max_ms = (int64_t)dms;
        m->defer_fixed = true;
        tf_warn("master", "test hook TF_TEST_DEFER_MS=%s: slaves' messages "
                "wait %s ms at each burst", dm, dm);
    }
#endif
    sync_config(m);
    /* Slaves marked connected are another shared master's. */
    if (!tf_store_is_shared(m->store)) {
        tf_master_group_begin(m, 0);
        tf_op_slaves_reset(m->group);
        tf_master_group_commit(m, NULL, NULL);
    }
    requeue_loaded(m);
    return 0;
}

int tf_master_ids(tf_master_t *m, unsigned n)
{
    uint64_t cur, first;
    int rc;

    if (!tf_store_is_shared(m->store))
        return 0;
    if (n > TF_STORE_ID_BLOCK)
        return TF_E2BIG;
    cur = m->next_build_id;
    if (m->next_request_id > cur)
        cur = m->next_request_id;
    if (m->next_job_id > cur)
        cur = m->next_job_id;
    if (cur == 0 || cur + n > m->ids_end) {
        /* The next block was reserved ahead, off this thread: this never
         * waits for the database. None ready yet: back off (the caller
         * says "try again"; the scheduler goes on when it comes). */
        rc = tf_store_reserve_ids(m->store, &first);
        if (rc) {
            if (!m->ids_starved)
                tf_warn("master", "no block of ids ready from the database "
                        "(%s): new requests and builds wait until one is",
                        tf_strerror(rc));
            m->ids_starved = true;
            return rc;
        }
        if (m->ids_starved)
            tf_info("master", "a block of ids is ready again");
        m->ids_starved = false;
        cur = first;
        m->ids_end = first + TF_STORE_ID_BLOCK;
    }
    m->next_build_id = m->next_request_id = m->next_job_id = cur;
    return 0;
}

/* --- several masters: the queue other masters add to --- */

/* --- several masters: backing off from claims lost in a row --- */

#define LOST_FIRST_MS 250
#define LOST_MAX_MS 4000
#define LOST_FORGET_MS 10000 /* a loss this old does not count in a row */

static struct tf_lost_claim *lost_find(tf_master_t *m, uint64_t id)
{
    for (size_t i = 0; i < m->nlost_claims; i++)
        if (m->lost_claims[i].id == id)
            return &m->lost_claims[i];
    return NULL;
}

/* Drops entries whose last loss is old (their requests ran or ended). */
static void lost_prune(tf_master_t *m, int64_t now)
{
    size_t k = 0;
    for (size_t i = 0; i < m->nlost_claims; i++)
        if (now - m->lost_claims[i].last_ms < LOST_FORGET_MS ||
            m->lost_claims[i].until_ms > now)
            m->lost_claims[k++] = m->lost_claims[i];
    m->nlost_claims = k;
}

bool tf_master_claim_lost(tf_master_t *m, uint64_t id)
{
    int64_t now = tf_now_ms();
    struct tf_lost_claim *c;

    lost_prune(m, now);
    c = lost_find(m, id);
    if (!c) {
        if (m->nlost_claims == TF_LOST_CLAIMS_MAX)
            return true; /* full: no backoff for this one */
        c = &m->lost_claims[m->nlost_claims++];
        *c = (struct tf_lost_claim){.id = id};
    }
    c->n++;
    c->last_ms = now;
    if (c->n == 1)
        return true;
    int64_t wait = LOST_FIRST_MS;
    for (unsigned k = 2; k < c->n && wait < LOST_MAX_MS; k++)
        wait *= 2;
    if (wait > LOST_MAX_MS)
        wait = LOST_MAX_MS;
    c->until_ms = now + wait;
    tf_info("master", "request %" PRIu64 ": claim lost %u times in a row "
            "(another transaction holds it): not queued here for %" PRId64
            " ms", id, c->n, wait);
    return false;
}

bool tf_master_claim_held_back(tf_master_t *m, uint64_t id)
{
    return lost_find(m, id) != NULL;
}

static bool lost_backing_off(tf_master_t *m, uint64_t id, int64_t now)
{
    struct tf_lost_claim *c = lost_find(m, id);
    return c && c->until_ms > now;
}

/* The tick: when a backoff has passed, the queue is read again. */
static void lost_due(tf_master_t *m)
{
    int64_t now = tf_now_ms();
    bool due = false;

    for (size_t i = 0; i < m->nlost_claims; i++) {
        struct tf_lost_claim *c = &m->lost_claims[i];
        if (c->until_ms && c->until_ms <= now) {
            c->until_ms = 0;
            due = true;
        }
    }
    if (due)
        tf_master_farm_changed(m, TF_FARM_QUEUE);
}

static void farm_loaded_cb(void *arg, int rc)
{
    tf_master_t *m = arg;
    tf_q_state_t *q = m->farm_q;
    size_t added = 0;
    int64_t now = tf_now_ms();

    m->farm_q = NULL;
    /* A master shutting down queues nothing more. */
    for (size_t i = 0; rc == 0 && !m->stopping && i < q->nrequests; i++) {
        const tf_ld_request_t *row = &q->requests[i];
        /* Known here (queued, claiming, running), or running elsewhere:
         * nothing to do. A request this master ended and freed but whose
         * end is not committed yet may come back: its claim then fails
         * and drops it again, or, without a slave for it here, the tick
         * drops it (tf_master_stale_check), as it drops the copies of
         * requests other masters claimed or ended since they were
         * queued here. */
        if (row->running || tf_map_get_id(m->requests, row->id) ||
            lost_backing_off(m, row->id, now))
            continue;
        tf_mbuilder_t *mb = tf_master_builder(m, row->builder, false);
        if (!mb || !mb->cfg)
            continue;
        tf_request_t *r = request_from_row(row);
        if (!r || tf_map_put_id(m->requests, r->id, r) != 0) {
            tf_request_free(r);
            continue;
        }
        /* Not published: the master that queued it did, to every
         * master's viewers. */
        tf_sched_enqueue(m, r);
        added++;
    }
    if (added)
        tf_debug("master", "%zu request(s) queued by other masters", added);
    tf_q_state_clear(q);
    free(q);
    if (m->farm_again) {
        m->farm_again = false;
        tf_master_farm_changed(m, TF_FARM_QUEUE);
    }
}

typedef struct adopt {
    tf_q_state_t q;
    tf_master_t *m;
    char slave[TF_NAME_MAX + 1];
    uint64_t *ids;
    size_t n;
    size_t npending; /* owner checks, then adoption writes, not answered */
    int rc;          /* an owner check failed: not welcomed (TF_E*) */
    tf_master_adopted_cb cb;
    void *arg;
} adopt_t;

/* One build's adoption write: row is in a->q. */
typedef struct adopt_one {
    adopt_t *a;
    size_t row;
} adopt_one_t;

/* One owner check of a build this master holds and the slave brings
 * back. */
typedef struct adopt_check {
    adopt_t *a;
    uint64_t build_id;
} adopt_check_t;

static bool adopt_wanted(const adopt_t *a, uint64_t id)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->ids[i] == id)
            return true;
    return false;
}

static void adopt_finish(adopt_t *a)
{
    a->cb(a->m, a->arg, a->rc);
    tf_q_state_clear(&a->q);
    free(a->ids);
    free(a);
}

/* The build of row is this master's now (its owner moved here in the
 * database): it runs here, with its request. */
static void adopt_take(adopt_t *a, const tf_ld_build_t *row)
{
    tf_master_t *m = a->m;
    const tf_q_state_t *q = &a->q;
    tf_request_t *had = tf_map_get_id(m->requests, row->request_id);

    if (tf_map_get_id(m->builds, row->id))
        return;
    if (had && had->state == TF_REQ_PENDING) {
        /* Queued here still, though the other master had claimed it: it
         * runs now, with this build. */
        tf_sched_dequeue(m, had);
        tf_request_set_state(m, had, TF_REQ_RUNNING, "its build is "
                             "taken over from another master");
    }
    for (size_t k = 0; !had && k < q->nrequests; k++) {
        const tf_ld_request_t *rr = &q->requests[k];
        if (rr->id != row->request_id || !rr->running)
            continue;
        tf_request_t *r = request_from_row(rr);
        if (r && tf_map_put_id(m->requests, r->id, r) != 0)
            tf_request_free(r);
        break;
    }
    tf_info("master", "slave %s brings build %" PRIu64 " (%s #%" PRIu64
            ") that another master ran: this master takes it over",
            a->slave, row->id, row->builder, row->number);
    build_from_row(m, row);
}

static void adopt_written_cb(void *arg, int rc)
{
    adopt_one_t *one = arg;
    adopt_t *a = one->a;
    const tf_ld_build_t *row = &a->q.builds[one->row];

    if (rc == 0)
        adopt_take(a, row);
    else if (rc == TF_ESTATE)
        tf_info("master", "slave %s brings build %" PRIu64 " (%s #%" PRIu64
                "): another master owns it by now or it has ended: not "
                "taken over", a->slave, row->id, row->builder, row->number);
    else
        tf_warn("master", "build %" PRIu64 " of slave %s: taking it over "
                "could not be stored: %s", row->id, a->slave,
                tf_strerror(rc));
    if (--a->npending == 0)
        adopt_finish(a);
}

/* Each build the slave brings moves to this master in its own write
 * (UPDATE ... WHERE owner = the owner read): of two masters taking it,
 * or of the master it left ending it meanwhile, one wins. */
static void adopt_loaded_cb(void *arg, int rc)
{
    adopt_t *a = arg;
    tf_master_t *m = a->m;
    const tf_q_state_t *q = &a->q;

    a->npending = 1; /* this function's own hold */
    for (size_t i = 0; rc == 0 && i < q->nbuilds; i++) {
        const tf_ld_build_t *row = &q->builds[i];
        if (!adopt_wanted(a, row->id) || !row->slave ||
            strcmp(row->slave, a->slave) != 0 ||
            tf_map_get_id(m->builds, row->id))
            continue;
        if (!tf_master_group_begin(m, sizeof(adopt_one_t)))
            continue;
        adopt_one_t *one = tf_wgroup_alloc(m->group, sizeof(*one));
        if (!one) {
            tf_master_group_commit(m, NULL, NULL);
            continue;
        }
        *one = (adopt_one_t){.a = a, .row = i};
        tf_op_build_adopt(m->group, row->id, row->owner);
        a->npending++;
        tf_master_group_commit(m, adopt_written_cb, one);
    }
    if (rc)
        tf_warn("master", "loading the running builds of slave %s: %s",
                a->slave, tf_strerror(rc));
    if (--a->npending == 0)
        adopt_finish(a);
}

/* The owner checks are in: the builds this master does not hold (now)
 * are loaded and taken over. Copies dropped by a check are freed first
 * (their acks are off), so that their builds can be taken over. */
static void adopt_checked(adopt_t *a)
{
    tf_master_t *m = a->m;
    size_t unknown = 0;
    int rc;

    if (a->rc) {
        adopt_finish(a);
        return;
    }
    tf_build_flush_acks(m);
    for (size_t i = 0; i < a->n; i++)
        unknown += tf_map_get_id(m->builds, a->ids[i]) == NULL;
    if (!unknown) {
        adopt_finish(a);
        return;
    }
    a->q.q.kind = TF_Q_LOAD_STATE;
    rc = tf_store_query(m->store, &a->q.q, adopt_loaded_cb, a);
    if (rc) {
        tf_warn("master", "slave %s: cannot load the builds it brings "
                "(%s): they are abandoned", a->slave, tf_strerror(rc));
        adopt_finish(a);
    }
}

/* A held build's owner check: still this master's, it resumes here (the
 * welcome); another master's or ended, the stale copy goes at once and
 * the build is taken over like any other (adopt_checked). */
static void adopt_check_cb(void *arg, int rc)
{
    adopt_check_t *c = arg;
    adopt_t *a = c->a;
    tf_master_t *m = a->m;
    tf_build_t *b = tf_map_get_id(m->builds, c->build_id);

    if (b)
        b->returning = false;
    if (rc == TF_ESTATE) {
        if (b && b->state != TF_BUILD_ENDING)
            tf_build_forget_stale(m, b);
    } else if (rc) {
        tf_warn("master", "slave %s is back with build %" PRIu64 ": whether "
                "it is still this master's could not be read (%s): the "
                "slave is not welcomed yet", a->slave, c->build_id,
                tf_strerror(rc));
        if (!a->rc)
            a->rc = rc;
    }
    if (--a->npending == 0)
        adopt_checked(a);
}

/* A build this master holds for this slave, which may have run it for
 * another master since the link dropped. */
static bool adopt_held(const tf_build_t *b, const char *slave)
{
    return b && b->state != TF_BUILD_ENDING && strcmp(b->slave, slave) == 0;
}

/* Asks the database whether held build b is still this master's, in a
 * write group after every group of its stale copy (the owner-guarded
 * UPDATE of tf_op_build_adopt with no `from`). */
static void adopt_check(adopt_t *a, tf_build_t *b)
{
    tf_master_t *m = a->m;
    adopt_check_t *c;

    if (!tf_master_group_begin(m, sizeof(*c)))
        goto fail;
    c = tf_wgroup_alloc(m->group, sizeof(*c));
    if (!c) {
        tf_master_group_commit(m, NULL, NULL);
        goto fail;
    }
    *c = (adopt_check_t){.a = a, .build_id = b->id};
    tf_op_build_adopt(m->group, b->id, NULL);
    b->returning = true;
    a->npending++;
    tf_master_group_commit(m, adopt_check_cb, c);
    return;
fail:
    if (!a->rc)
        a->rc = TF_ENOMEM;
}

int tf_master_adopt(tf_master_t *m, const char *slave, const uint64_t *ids,
                    size_t n, tf_master_adopted_cb cb, void *arg)
{
    size_t unknown = 0, held = 0;
    adopt_t *a;

    if (!tf_store_is_shared(m->store))
        return TF_ENOENT;
    for (size_t i = 0; i < n; i++) {
        tf_build_t *b = tf_map_get_id(m->builds, ids[i]);
        unknown += b == NULL;
        held += adopt_held(b, slave);
    }
    if (!unknown && !held)
        return TF_ENOENT;
    a = calloc(1, sizeof(*a));
    if (!a || !(a->ids = malloc(n * sizeof(*ids)))) {
        free(a);
        return TF_ENOMEM;
    }
    memcpy(a->ids, ids, n * sizeof(*ids));
    a->n = n;
    a->m = m;
    a->cb = cb;
    a->arg = arg;
    snprintf(a->slave, sizeof(a->slave), "%s", slave);
    a->npending = 1; /* this function's own hold */
    for (size_t i = 0; i < n; i++) {
        tf_build_t *b = tf_map_get_id(m->builds, ids[i]);
        if (adopt_held(b, slave))
            adopt_check(a, b);
    }
    if (--a->npending == 0)
        adopt_checked(a);
    return 0;
}

/* --- several masters: cancelling what another master runs --- */

#define CANCEL_TOPIC "cancel"

/* The wake-up: news, not a commit (the mark is). A master that misses
 * it finds the mark at its next tick (tf_master_cancels_check). */
static void cancel_wake(tf_master_t *m, const char *kind, uint64_t id,
                        const char *why)
{
    json_t *j;
    char *text;
    int rc;

    j = json_pack("{s:I,s:s}", kind, (json_int_t)id, "why", why);
    text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    rc = text ? tf_store_farm_send(m->store, CANCEL_TOPIC, text) : TF_ENOMEM;
    free(text);
    if (rc)
        tf_info("master", "%s %" PRIu64 ": the other masters are not woken "
                "for its cancel (%s); the one running it finds the stored "
                "cancel within a second", kind, id, tf_strerror(rc));
}

typedef struct cancel_store {
    tf_master_t *m;
    bool job;
    uint64_t id;
    tf_store_done_cb cb;
    void *arg;
    char why[TF_EMAIL_MAX + 96];
} cancel_store_t;

static void cancel_stored_cb(void *arg, int rc)
{
    cancel_store_t *c = arg;

    if (rc == 0)
        cancel_wake(c->m, c->job ? "job" : "build", c->id, c->why);
    else if (rc != TF_ESTATE)
        tf_warn("master", "%s %" PRIu64 ": the cancel could not be stored: "
                "%s", c->job ? "job" : "build", c->id, tf_strerror(rc));
    if (c->cb)
        c->cb(c->arg, rc);
}

int tf_master_cancel_elsewhere(tf_master_t *m, const char *kind,
                               uint64_t id, const char *why,
                               tf_store_done_cb cb, void *arg)
{
    cancel_store_t *c;
    bool job = strcmp(kind, "job") == 0;

    if (!m->store || !tf_store_is_shared(m->store))
        return TF_ESTATE;
    if (!tf_master_group_begin(m, sizeof(*c)))
        return TF_ENOMEM;
    c = tf_wgroup_alloc(m->group, sizeof(*c));
    if (!c) {
        tf_master_group_commit(m, NULL, NULL);
        return TF_ENOMEM;
    }
    *c = (cancel_store_t){.m = m, .job = job, .id = id, .cb = cb,
                          .arg = arg};
    snprintf(c->why, sizeof(c->why), "%s", why ? why : "cancelled");
    tf_op_cancel_mark(m->group, job ? 0 : id, job ? id : 0, c->why);
    tf_master_group_commit(m, cancel_stored_cb, c);
    return 0;
}

/* --- several masters: the stored cancels of the builds run here --- */

typedef struct cancels_read {
    tf_q_cancels_t q;
    tf_master_t *m;
} cancels_read_t;

/* Applies each stored cancel of a build this master runs and has not
 * cancelled yet: its own, one taken over from a master that died, or
 * one whose wake-up event was lost. */
static void cancels_read_cb(void *arg, int rc)
{
    cancels_read_t *c = arg;
    tf_master_t *m = c->m;

    m->cancels_reading = false;
    for (size_t i = 0; rc == 0 && !m->stopping && i < c->q.n; i++) {
        const tf_cancel_row_t *row = &c->q.rows[i];
        tf_build_t *b = tf_map_get_id(m->builds, row->build_id);
        if (!b || b->cancel_requested || b->state == TF_BUILD_ENDING)
            continue;
        if (tf_build_cancel(m, row->build_id, row->why) == 0)
            tf_info("master", "build %" PRIu64 " cancelled through another "
                    "master (its stored cancel)", row->build_id);
    }
    if (rc && rc != TF_ESTATE)
        tf_debug("master", "reading the stored cancels: %s",
                 tf_strerror(rc));
    tf_q_cancels_clear(&c->q);
    free(c);
}

void tf_master_cancels_check(tf_master_t *m)
{
    cancels_read_t *c;

    if (!m->store || !tf_store_is_shared(m->store) || m->stopping ||
        m->cancels_reading || tf_map_count(m->builds) == 0)
        return;
    c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->m = m;
    c->q.q.kind = TF_Q_CANCELS;
    c->q.max = TF_CANCELS_READ_MAX;
    m->cancels_reading = true;
    if (tf_store_query(m->store, &c->q.q, cancels_read_cb, c) != 0) {
        m->cancels_reading = false;
        free(c);
    }
}

/* --- several masters: copies of requests others claimed or ended --- */

typedef struct stale_read {
    tf_q_request_states_t q;
    tf_master_t *m;
} stale_read_t;

/* Frees this master's copy r of a request that is not its to run: out
 * of its queue and its job's count (the master that ends the request
 * settles the job in the database), with no write, mail or event. */
static void stale_drop(tf_master_t *m, tf_request_t *r, const char *why)
{
    tf_debug("master", "request %" PRIu64 " (%s) %s: this master drops its "
             "pending copy", r->id, r->builder, why);
    tf_sched_dequeue(m, r);
    tf_map_del_id(m->requests, r->id);
    if (r->job_id)
        tf_job_request_forgotten(m, r->job_id);
    tf_request_set_state(m, r, TF_REQ_DONE, why);
    tf_request_free(r);
}

static void stale_read_cb(void *arg, int rc)
{
    stale_read_t *c = arg;
    tf_master_t *m = c->m;
    size_t ended = 0, elsewhere = 0;

    m->stale_reading = false;
    for (size_t i = 0; rc == 0 && !m->stopping && i < c->q.n; i++) {
        tf_rq_state_t st = (tf_rq_state_t)c->q.state[i];
        if (st != TF_RQ_ENDED && st != TF_RQ_ELSEWHERE)
            continue;
        /* Still a copy waiting here: not claimed meanwhile (its build
         * would be attached), not ended here and freed. */
        tf_request_t *r = tf_map_get_id(m->requests, c->q.ids[i]);
        if (!r || r->state != TF_REQ_PENDING || r->build)
            continue;
        stale_drop(m, r, st == TF_RQ_ENDED ? "has ended"
                                           : "runs on another master");
        if (st == TF_RQ_ENDED)
            ended++;
        else
            elsewhere++;
    }
    if (rc)
        tf_debug("master", "reading where the queued requests stand: %s",
                 tf_strerror(rc));
    if (ended + elsewhere) {
        tf_info("master", "dropped %zu pending cop%s of requests other "
                "masters ran or ended (%zu ended, %zu running)",
                ended + elsewhere, ended + elsewhere == 1 ? "y" : "ies",
                ended, elsewhere);
        /* The queue overlaid on cached answers changed. */
        tf_store_touch(m->store);
    }
    /* A request running elsewhere may have been put back (a RETRY there)
     * after this read: the queue is read again, from a later snapshot,
     * so it is queued here again if so (the other master's NOTIFY may
     * have been answered by a load that still saw the dropped copy). */
    if (elsewhere)
        tf_master_farm_changed(m, TF_FARM_QUEUE);
    free(c);
}

void tf_master_stale_check(tf_master_t *m)
{
    stale_read_t *c;
    size_t start, pos;
    void *v;

    if (!m->store || !tf_store_is_shared(m->store) || m->stopping ||
        m->stale_reading || tf_map_count(m->requests) == 0)
        return;
    c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->m = m;
    c->q.q.kind = TF_Q_REQUEST_STATES;
    c->q.self = tf_store_owner(m->store);
    /* From where the last read stopped to the end, then from the start
     * up to there: round the map at most once. */
    start = m->stale_pos;
    pos = start;
    for (int leg = 0; leg < 2 && c->q.n < TF_REQUEST_STATES_MAX; leg++) {
        if (leg == 1) {
            if (start == 0)
                break;
            pos = 0;
        }
        while (c->q.n < TF_REQUEST_STATES_MAX &&
               tf_map_next(m->requests, &pos, NULL, NULL, &v) == 0) {
            const tf_request_t *r = v;
            if (leg == 1 && pos > start)
                break; /* the first leg's part */
            if (r->state == TF_REQ_PENDING && !r->build)
                c->q.ids[c->q.n++] = r->id;
        }
    }
    m->stale_pos = c->q.n == TF_REQUEST_STATES_MAX ? pos : 0;
    if (c->q.n == 0) {
        free(c);
        return;
    }
    m->stale_reading = true;
    if (tf_store_query(m->store, &c->q.q, stale_read_cb, c) != 0) {
        m->stale_reading = false;
        free(c);
    }
}

/* A cancel another master sent: this master cancels what of it runs
 * here (and what of a job is queued here; the guarded UPDATE lets one
 * master's cancel of a pending request win). */
static void cancel_from_elsewhere(tf_master_t *m, const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    json_int_t build = 0, job = 0;
    const char *why = NULL;

    if (!j || json_unpack(j, "{s?I,s?I,s?s}", "build", &build, "job", &job,
                          "why", &why) != 0 || (build <= 0 && job <= 0)) {
        tf_warn("master", "a cancel from another master is malformed: "
                "%.200s", text);
        json_decref(j);
        return;
    }
    if (build > 0 &&
        tf_build_cancel(m, (uint64_t)build, why ? why : "cancelled") == 0)
        tf_info("master", "build %" PRIu64 " cancelled through another "
                "master", (uint64_t)build);
    if (job > 0)
        tf_job_cancel_here(m, (uint64_t)job, why ? why : "another master");
    json_decref(j);
}

static void relay_event(void *arg, const char *topic, const char *text)
{
    tf_master_t *m = arg;
    if (strcmp(topic, CANCEL_TOPIC) == 0) {
        cancel_from_elsewhere(m, text);
        return;
    }
    if (m->net && m->net->live_relay)
        m->net->live_relay(m, topic, text);
}

void tf_master_farm_changed(void *arg, unsigned what)
{
    tf_master_t *m = arg;
    tf_q_state_t *q;

    /* Mail another master queued goes out from here if this master holds
     * the duty lease (the sender checks it). */
    if ((what & TF_FARM_MAIL) && m->mail_wake)
        m->mail_wake(m);
    if (what & TF_FARM_EVENT)
        tf_store_farm_take(m->store, relay_event, m);
    if ((what & TF_FARM_COMMIT) && !m->stopping && m->net &&
        m->net->live_stored)
        m->net->live_stored(m); /* output of its builds followed here */
    if ((what & TF_FARM_DUTY) && !m->stopping && m->duty_gained)
        m->duty_gained(m); /* another master polled until now */
    if ((what & TF_FARM_IDS) && !m->stopping)
        tf_sched_kick(m); /* starts that waited for ids */
    if (!(what & TF_FARM_QUEUE))
        return;
    if (m->stopping)
        return;
    if (m->farm_q) {
        m->farm_again = true;
        return;
    }
    q = calloc(1, sizeof(*q));
    if (!q)
        return;
    q->q.kind = TF_Q_LOAD_STATE;
    m->farm_q = q;
    if (tf_store_query(m->store, &q->q, farm_loaded_cb, m) != 0) {
        m->farm_q = NULL;
        free(q);
    }
}

tf_config_t *tf_master_apply_config(tf_master_t *m, tf_config_t *cfg)
{
    tf_config_t *old = m->cfg;
    size_t pos = 0;
    void *v;

    m->cfg = cfg;
    sync_config(m);
    /* Slaves removed from the config lose their link. */
    while (tf_map_next(m->slaves, &pos, NULL, NULL, &v) == 0) {
        tf_mslave_t *s = v;
        if (!s->cfg && s->link)
            tf_master_close_link(m, s, "unknown_slave",
                                 TF_CLOSE_UNKNOWN_SLAVE,
                                 "slave %s was removed from the "
                                 "configuration",
                                 s->name);
    }
    tf_sched_kick(m);
    return old;
}

void tf_master_tick(tf_master_t *m)
{
    int64_t now = tf_now_ms();

    tf_build_check_lost(m);
    tf_build_retry_ends(m);
    /* A deferral past its time with no message since to notice it (the
     * start batches held up by a failing store): what it put off goes. */
    tf_master_defer_slaves(m);
    tf_master_cancels_check(m);
    tf_master_stale_check(m);
    if (m->nlost_claims)
        lost_due(m);
    if (now - m->last_seen_flush_ms >= 30000) {
        size_t pos = 0;
        void *v;
        m->last_seen_flush_ms = now;
        tf_master_group_begin(m, 0);
        while (tf_map_next(m->slaves, &pos, NULL, NULL, &v) == 0) {
            tf_mslave_t *s = v;
            if (s->link)
                tf_op_slave_seen(m->group, s->name, s->last_seen_ms);
        }
        tf_master_group_commit(m, NULL, NULL);
    }
}

void tf_master_free(tf_master_t *m)
{
    size_t pos = 0;
    void *v;

    tf_build_retry_ends(m); /* the store is closed: whatever is left is lost */
    while (m->builds && tf_map_next(m->builds, &pos, NULL, NULL, &v) == 0)
        tf_build_free(v);
    pos = 0;
    while (m->requests &&
           tf_map_next(m->requests, &pos, NULL, NULL, &v) == 0)
        tf_request_free(v);
    pos = 0;
    while (m->slaves && tf_map_next(m->slaves, &pos, NULL, NULL, &v) == 0) {
        tf_mslave_t *s = v;
        free(s->can);
        free(s);
    }
    pos = 0;
    while (m->builders &&
           tf_map_next(m->builders, &pos, NULL, NULL, &v) == 0) {
        tf_mbuilder_t *mb = v;
        free(mb->allowed);
        tf_build_templates_free(mb);
        free(mb);
    }
    free(m->heads);
    free(m->blocked);
    free(m->batch_ids);
    tf_map_free(m->builds);
    tf_map_free(m->requests);
    tf_map_free(m->slaves);
    tf_map_free(m->builders);
    tf_map_free(m->links);
    tf_map_free(m->fair_last);
    if (m->jobs)
        tf_jobs_free_all(m);
    tf_map_free(m->jobs);
    tf_config_free(m->cfg);
    free(m->dir);
    free(m->web_root);
}

/* --- the network, through m->net --- */

int tf_master_send_text(tf_master_t *m, tf_mslave_t *s, const char *text,
                        size_t len)
{
    if (!s || !s->link || !m->net)
        return TF_ESTATE;
    return m->net->send_text(s->link, text, len);
}

void tf_master_deliver_commits(tf_master_t *m)
{
    if (m->store && !m->group)
        tf_store_deliver(m->store);
}

int tf_master_send_start(tf_master_t *m, tf_mslave_t *s, const char *text,
                         size_t len)
{
    if (!s || !s->link || !m->net)
        return TF_ESTATE;
    if (!m->net->send_text_now)
        return m->net->send_text(s->link, text, len);
    return m->net->send_text_now(s->link, text, len);
}

int tf_master_send(tf_master_t *m, tf_mslave_t *s, const tf_msg_t *msg)
{
    char *text = NULL;
    size_t len = 0;
    int rc;

    if (!s || !s->link || !m->net)
        return TF_ESTATE;
    rc = tf_msg_encode(msg, &text, &len);
    if (rc) {
        tf_error("master", "cannot encode %s for %s: %s",
                 tf_msg_type_name(msg->type), s->name, tf_strerror(rc));
        return rc;
    }
    rc = m->net->send_text(s->link, text, len);
    free(text);
    return rc;
}

void tf_master_close_link(tf_master_t *m, tf_mslave_t *s, const char *code,
                          int close_code, const char *fmt, ...)
{
    char message[512];
    va_list ap;

    if (!s || !s->link || !m->net)
        return;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    m->net->close_link(s->link, code, close_code, message);
}
