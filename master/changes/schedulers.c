/*
 * schedulers.c - change and periodic schedulers, rebuilds, and the
 * master's controllable clock (see schedulers.h).
 *
 * State of a scheduler, in memory and in scheduler_state:
 *   last_revision  the newest change it has consumed (fired with, or seen
 *                  as the head of a branch polled for the first time);
 *   pending        the changes after it, oldest first, each marked
 *                  important or not (path filters); rebuilt at startup
 *                  from the changes table (id order), so a restart loses
 *                  no change that was recorded but not yet built;
 *   next_fire_ms   (periodic) the next cron time.
 * Firing queues one request per builder (the revision of the newest
 * pending change, the pending changes as its blamelist), then writes the
 * new state. Requests go first: a crash between the two writes builds a
 * change twice rather than never.
 *
 * Every decision compares tf_now_ms() with stored times, re-evaluated by a
 * one-second timer and right after the test clock moves: libuv timer
 * durations alone would not follow the controllable clock. A clock moved
 * backwards makes periodic schedulers compute their next time again.
 */
#include "changes/schedulers.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <uv.h>

#include "clock.h"
#include "log.h"
#include "core/master.h"
#include "names.h"
#include "changes/poller.h"
#include "store/store_sqlite.h" /* the rebuild handler's raw read */
#include "tf_err.h"

#define SCHED_TICK_MS 1000
#define SCHED_PENDING_MAX 1000

/* ------------------------------------------------------------------ */
/* Schedulers                                                          */
/* ------------------------------------------------------------------ */

typedef struct pchange {
    uint64_t id;
    char revision[65];
    bool important;
    int64_t arrived_ms;
} pchange_t;

typedef struct msched {
    char name[TF_NAME_MAX + 1];
    const tf_cfg_scheduler_t *cfg;
    tf_cron_t cron;
    char *last_revision;
    int64_t last_fired_ms;
    int64_t next_fire_ms; /* periodic; -1 when the cron never fires */
    pchange_t *pending;
    size_t npending;
    bool dropped_logged;
    struct sched_load *load; /* its state is being read (a reload) */
} msched_t;

typedef struct tf_schedulers {
    tf_master_t *m;
    msched_t **v;
    size_t n;
    uv_timer_t timer;
    bool timer_open;
    bool stopping;
    bool duty;     /* held the duty lease at the last tick (shared) */
    int64_t last_eval_ms;
} tf_schedulers_t;

/* A scheduler's state being read off the loop (a reload): the query
 * outlives the scheduler if a reload drops it meanwhile (s goes NULL). */
typedef struct sched_load {
    tf_q_scheduler_t q;
    tf_master_t *m;
    msched_t *s;
    bool reread; /* this master took the duty lease (sched_reread) */
    char name[TF_NAME_MAX + 1];
    char *repository, *branch; /* the query's, copied: a reload may free
                                * the config it came from meanwhile */
} sched_load_t;

static void msched_free(msched_t *s)
{
    if (!s)
        return;
    if (s->load)
        s->load->s = NULL;
    free(s->last_revision);
    free(s->pending);
    free(s);
}

static void state_write(tf_master_t *m, const msched_t *s)
{
    tf_master_group_begin(m, 0);
    tf_op_scheduler_state(m->group, s->name, s->last_fired_ms,
                          s->last_revision, s->next_fire_ms);
    tf_master_group_commit(m, NULL, NULL);
}

/* Appends a change to s's pending list; the oldest goes when it is full. */
static void pending_add(msched_t *s, uint64_t id, const char *revision,
                        bool important, int64_t arrived_ms)
{
    for (size_t i = 0; i < s->npending; i++)
        if (s->pending[i].id == id)
            return;
    if (!s->pending) {
        s->pending = calloc(SCHED_PENDING_MAX, sizeof(*s->pending));
        if (!s->pending)
            return;
    }
    if (s->npending == SCHED_PENDING_MAX) {
        if (!s->dropped_logged)
            tf_warn("scheduler", "%s: more than %d changes waiting; the "
                    "oldest leave its next blamelist", s->name,
                    SCHED_PENDING_MAX);
        s->dropped_logged = true;
        memmove(s->pending, s->pending + 1,
                (SCHED_PENDING_MAX - 1) * sizeof(*s->pending));
        s->npending--;
    }
    pchange_t *c = &s->pending[s->npending++];
    c->id = id;
    snprintf(c->revision, sizeof(c->revision), "%s", revision);
    c->important = important;
    c->arrived_ms = arrived_ms;
}

static bool fire(tf_master_t *m, msched_t *s, int64_t now)
{
    const tf_cfg_scheduler_t *cfg = s->cfg;
    uint64_t *ids = NULL;
    char reason[256];
    const char *revision = NULL;
    bool periodic = cfg->type == TF_CFG_SCHED_PERIODIC;
    /* Several masters: the ids of all its requests first. None ready
     * (the next block is still being reserved): it fires at a later
     * tick, its changes still pending, instead of dropping them. */
    size_t want = cfg->nbuilders < TF_STORE_ID_BLOCK ? cfg->nbuilders
                                                     : TF_STORE_ID_BLOCK;
    if (tf_master_ids(m, (unsigned)want) == TF_EFULL) {
        tf_info("scheduler", "%s: no ids ready from the database: it "
                "fires when they are", s->name);
        return false;
    }
    if (s->npending) {
        ids = calloc(s->npending, sizeof(*ids));
        if (!ids) {
            tf_error("scheduler", "%s: out of memory; will try again",
                     s->name);
            return false;
        }
        for (size_t i = 0; i < s->npending; i++)
            ids[i] = s->pending[i].id;
        revision = s->pending[s->npending - 1].revision;
    } else if (cfg->repository) {
        revision = tf_pollers_head(m, cfg->repository, cfg->branch);
    }
    if (periodic)
        snprintf(reason, sizeof(reason), "scheduler %s: periodic (%s), %zu "
                 "change%s", s->name, cfg->cron, s->npending,
                 s->npending == 1 ? "" : "s");
    else
        snprintf(reason, sizeof(reason), "scheduler %s: %zu change%s up to "
                 "%.12s", s->name, s->npending, s->npending == 1 ? "" : "s",
                 revision ? revision : "");
    unsigned queued = 0;
    for (size_t i = 0; i < cfg->nbuilders; i++) {
        const tf_cfg_builder_t *b = tf_config_builder(m->cfg,
                                                      cfg->builders[i]);
        if (!b)
            continue;
        tf_reqspec_t spec = {
            .builder = b->name,
            .reason = reason,
            .priority = b->priority,
            .revision = revision,
            .scheduler = s->name,
            .changes = ids,
            .nchanges = s->npending,
        };
        uint64_t id = 0;
        if (tf_sched_request(m, &spec, &id, NULL, NULL) == 0)
            queued++;
        else
            tf_error("scheduler", "%s: cannot queue a request for %s",
                     s->name, b->name);
    }
    tf_info("scheduler", "%s fired: %u request%s (%s)", s->name, queued,
            queued == 1 ? "" : "s", reason);
    free(ids);
    if (s->npending) {
        char *rev = strdup(s->pending[s->npending - 1].revision);
        if (rev) {
            free(s->last_revision);
            s->last_revision = rev;
        }
    }
    s->npending = 0;
    s->dropped_logged = false;
    s->last_fired_ms = now;
    return true;
}

static void evaluate(tf_master_t *m, msched_t *s, int64_t now,
                     bool clock_back)
{
    const tf_cfg_scheduler_t *cfg = s->cfg;
    if (s->load)
        return; /* its state is still being read */
    if (cfg->type == TF_CFG_SCHED_CHANGE) {
        bool important = false;
        for (size_t i = 0; i < s->npending && !important; i++)
            important = s->pending[i].important;
        if (!important)
            return;
        int64_t stable = s->pending[s->npending - 1].arrived_ms +
                         (int64_t)cfg->tree_stable_s * 1000;
        if (now < stable)
            return;
        if (fire(m, s, now))
            state_write(m, s);
        return;
    }
    if (clock_back && s->next_fire_ms != -1) {
        s->next_fire_ms = tf_cron_next(&s->cron, now);
        state_write(m, s);
    }
    if (s->next_fire_ms < 0 || now < s->next_fire_ms)
        return;
    if (s->npending || !cfg->only_if_changed) {
        if (!fire(m, s, now))
            return; /* again at the next tick */
    } else
        tf_info("scheduler", "%s: nothing changed on %s since it last "
                "fired; no build", s->name, cfg->branch);
    s->next_fire_ms = tf_cron_next(&s->cron, now);
    state_write(m, s);
}

static void sched_reread(tf_master_t *m);

void tf_schedulers_tick(tf_master_t *m)
{
    tf_schedulers_t *ss = m->schedulers;
    if (!ss || ss->stopping || m->stopping)
        return;
    /* Several masters (store.shared): schedulers fire on the holder of
     * the duty lease only (the test clock's tick too). A master that
     * takes the lease reads every scheduler's state again first: the
     * last holder fired and consumed changes since this master read it
     * (they are not evaluated until their state is in, s->load; one
     * whose state cannot be read waits, and the next tick tries again).
     * Noticed here rather than from the lease's news, which may come a
     * tick later. */
    if (!tf_store_has_duty(m->store)) {
        ss->duty = false;
        return;
    }
    if (!ss->duty) {
        ss->duty = true;
        if (tf_store_is_shared(m->store)) {
            sched_reread(m);
            return; /* they are evaluated once their state is in */
        }
    }
    int64_t now = tf_now_ms();
    bool back = now < ss->last_eval_ms - 1000;
    if (back)
        tf_info("scheduler", "the clock went back %" PRId64 " ms: periodic "
                "schedulers compute their next time again",
                ss->last_eval_ms - now);
    ss->last_eval_ms = now;
    for (size_t i = 0; i < ss->n; i++)
        evaluate(m, ss->v[i], now, back);
}

static void tick_cb(uv_timer_t *t)
{
    tf_schedulers_tick(((tf_schedulers_t *)t->data)->m);
}

void tf_schedulers_on_changes(tf_master_t *m, const char *repository,
                              const char *branch,
                              const tf_change_note_t *changes, size_t n,
                              bool initial)
{
    tf_schedulers_t *ss = m->schedulers;
    int64_t now = tf_now_ms();
    if (!ss || ss->stopping)
        return;
    for (size_t i = 0; i < ss->n; i++) {
        msched_t *s = ss->v[i];
        const tf_cfg_scheduler_t *cfg = s->cfg;
        if (!cfg->repository || strcmp(cfg->repository, repository) != 0 ||
            strcmp(cfg->branch, branch) != 0)
            continue;
        if (initial) {
            /* The head of a branch seen for the first time is history. */
            if (!s->last_revision && n > 0) {
                s->last_revision = strdup(changes[n - 1].revision);
                state_write(m, s);
            }
            continue;
        }
        for (size_t k = 0; k < n; k++) {
            bool imp = cfg->type == TF_CFG_SCHED_PERIODIC ||
                       tf_paths_important(cfg->paths, cfg->npaths,
                                          changes[k].files,
                                          changes[k].nfiles);
            pending_add(s, changes[k].id, changes[k].revision, imp, now);
            tf_debug("scheduler", "%s: change %" PRIu64 " (%.12s) is %s",
                     s->name, changes[k].id, changes[k].revision,
                     imp ? "important" : "not important (paths)");
        }
        evaluate(m, s, now, false);
    }
}

/* --- loading --- */

static int pchange_cmp(const void *a, const void *b)
{
    uint64_t x = ((const pchange_t *)a)->id, y = ((const pchange_t *)b)->id;
    return x < y ? -1 : x > y;
}

/* Whether a stored change matters to cfg: every change does to a
 * periodic scheduler, otherwise one whose files (the row's JSON array)
 * touch the scheduler's paths. */
static bool stored_change_important(const tf_cfg_scheduler_t *cfg,
                                    const tf_sched_change_row_t *c)
{
    if (cfg->type == TF_CFG_SCHED_PERIODIC)
        return true;
    json_t *arr = c->files_json ? json_loads(c->files_json, 0, NULL) : NULL;
    size_t nf = json_array_size(arr), k = 0;
    char **fv = calloc(nf ? nf : 1, sizeof(*fv));
    for (size_t f = 0; fv && f < nf; f++) {
        const char *p = json_string_value(json_array_get(arr, f));
        if (p)
            fv[k++] = (char *)p;
    }
    bool imp = tf_paths_important(cfg->paths, cfg->npaths, fv, k);
    free(fv);
    json_decref(arr);
    return imp;
}

/* Puts what the store holds of s (its row, and the changes of its branch
 * after its last consumed revision) into s, keeping changes that arrived
 * while it was read; a new scheduler starts after the branch's head.
 * A re-read (this master took the duty lease) also takes the periodic
 * time the last holder stored: a period it fired is not fired again, and
 * one it died before firing (its time has passed) fires at the next
 * tick. */
static void msched_apply(tf_master_t *m, msched_t *s,
                         const tf_q_scheduler_t *q, bool reread)
{
    const tf_cfg_scheduler_t *cfg = s->cfg;

    if (reread && q->have_row && cfg->type == TF_CFG_SCHED_PERIODIC &&
        q->next_fire_ms != 0 && s->next_fire_ms != -1)
        s->next_fire_ms = q->next_fire_ms;
    if (q->have_row) {
        s->last_fired_ms = q->last_fired_ms;
        if (q->last_revision) {
            char *rev = strdup(q->last_revision);
            if (rev) {
                free(s->last_revision);
                s->last_revision = rev;
            }
        }
    }
    for (size_t i = 0; i < q->nchanges; i++) {
        const tf_sched_change_row_t *c = &q->changes[i];
        pending_add(s, c->id, c->revision ? c->revision : "",
                    stored_change_important(cfg, c), c->created_ms);
    }
    /* Changes noted while the state was read came after these. */
    if (s->npending > 1)
        qsort(s->pending, s->npending, sizeof(*s->pending), pchange_cmp);
    if (!s->last_revision && cfg->repository) {
        const char *head = tf_pollers_head(m, cfg->repository, cfg->branch);
        s->last_revision = head ? strdup(head) : NULL;
    }
    if (reread)
        tf_info("scheduler", "%s: this master runs it now: its state is "
                "read again from the database (last fired %" PRId64 ", "
                "next %" PRId64 ", %zu change%s pending)", s->name,
                s->last_fired_ms, s->next_fire_ms, s->npending,
                s->npending == 1 ? "" : "s");
    else if (!q->have_row || tf_store_has_duty(m->store))
        state_write(m, s); /* a master without the lease leaves the
                            * holder's row alone (its next time too) */
}

static void msched_loaded(void *arg, int rc)
{
    sched_load_t *l = arg;
    msched_t *s = l->s;

    if (s && rc && l->reread) {
        /* Never evaluated from what it knew before the lease moved: the
         * next tick reads it again. */
        s->load = NULL;
        tf_warn("scheduler", "%s: its state cannot be read again (%s): it "
                "waits and tries again", s->name, tf_strerror(rc));
        if (l->m->schedulers)
            l->m->schedulers->duty = false;
    } else if (s) {
        s->load = NULL;
        if (rc)
            tf_error("scheduler", "%s: cannot load its state (%s); starting "
                     "afresh", s->name, tf_strerror(rc));
        msched_apply(l->m, s, &l->q, l->reread);
    }
    tf_q_scheduler_clear(&l->q);
    free(l->repository);
    free(l->branch);
    free(l);
}

/* Prepares l to read s's state; s waits for it (s->load). */
static void msched_query(tf_master_t *m, msched_t *s, sched_load_t *l,
                         bool reread)
{
    const tf_cfg_scheduler_t *cfg = s->cfg;

    l->repository = cfg->repository ? strdup(cfg->repository) : NULL;
    l->branch = cfg->branch ? strdup(cfg->branch) : NULL;
    l->q = (tf_q_scheduler_t){.q.kind = TF_Q_SCHEDULER,
                              .name = l->name,
                              .repository = l->repository,
                              .branch = l->branch,
                              .limit = SCHED_PENDING_MAX};
    snprintf(l->name, sizeof(l->name), "%s", s->name);
    if ((cfg->repository && !l->repository) ||
        (cfg->branch && !l->branch))
        l->q.repository = NULL; /* out of memory: no changes read */
    l->m = m;
    l->s = s;
    l->reread = reread;
    s->load = l;
}

/* A scheduler object for cfg, its state loaded: now (startup, before the
 * loop serves), or off the loop with s->load set until it is (a reload).
 * A new one counts the known head of its branch as seen. */
static msched_t *msched_load(tf_master_t *m, const tf_cfg_scheduler_t *cfg,
                             bool now_sync)
{
    msched_t *s = calloc(1, sizeof(*s));
    sched_load_t *l = calloc(1, sizeof(*l));
    char err[160];
    int rc;

    if (!s || !l) {
        free(s);
        free(l);
        return NULL;
    }
    snprintf(s->name, sizeof(s->name), "%s", cfg->name);
    s->cfg = cfg;
    int64_t now = tf_now_ms();
    if (cfg->type == TF_CFG_SCHED_PERIODIC) {
        if (tf_cron_parse(cfg->cron, &s->cron, err, sizeof(err)) != 0) {
            msched_free(s);
            free(l);
            return NULL; /* the config loader checked it */
        }
        s->next_fire_ms = tf_cron_next(&s->cron, now);
    }
    msched_query(m, s, l, false);
    if (now_sync) {
        rc = tf_store_query_sync(m->store, &l->q.q);
        msched_loaded(l, rc);
        return s;
    }
    rc = tf_store_query(m->store, &l->q.q, msched_loaded, l);
    if (rc)
        msched_loaded(l, rc);
    return s;
}

/* This master took the duty lease: every scheduler's state is read
 * again, off the loop. What it had pending goes (the last holder may
 * have fired with it); changes noted while the state is read are kept,
 * and the stored ones after the consumed revision come back with it. */
static void sched_reread(tf_master_t *m)
{
    tf_schedulers_t *ss = m->schedulers;

    for (size_t i = 0; ss && i < ss->n; i++) {
        msched_t *s = ss->v[i];
        sched_load_t *l;
        if (!s || s->load)
            continue; /* being read already */
        s->npending = 0;
        s->dropped_logged = false;
        if (!(l = calloc(1, sizeof(*l)))) {
            tf_error("scheduler", "%s: out of memory: its state is read "
                     "again at the next tick", s->name);
            ss->duty = false;
            continue;
        }
        msched_query(m, s, l, true);
        if (tf_store_query(m->store, &l->q.q, msched_loaded, l) != 0) {
            tf_error("scheduler", "%s: its state cannot be read again: it "
                     "is read at the next tick", s->name);
            s->load = NULL;
            free(l->repository);
            free(l->branch);
            free(l);
            ss->duty = false;
        }
    }
}

static void retarget(tf_master_t *m, msched_t *s,
                     const tf_cfg_scheduler_t *cfg)
{
    bool moved = !s->cfg->repository || !cfg->repository ||
                 strcmp(s->cfg->repository, cfg->repository) != 0 ||
                 strcmp(s->cfg->branch, cfg->branch) != 0;
    bool cron_changed = s->cfg->type != cfg->type ||
                        (cfg->cron && (!s->cfg->cron ||
                                       strcmp(s->cfg->cron, cfg->cron) != 0));
    s->cfg = cfg;
    if (moved) {
        /* Another branch: what was pending belongs to the old one. */
        s->npending = 0;
        free(s->last_revision);
        s->last_revision = NULL;
        if (cfg->repository) {
            const char *head = tf_pollers_head(m, cfg->repository,
                                               cfg->branch);
            s->last_revision = head ? strdup(head) : NULL;
        }
    }
    if (cfg->type == TF_CFG_SCHED_PERIODIC && cron_changed) {
        char err[160];
        if (tf_cron_parse(cfg->cron, &s->cron, err, sizeof(err)) == 0)
            s->next_fire_ms = tf_cron_next(&s->cron, tf_now_ms());
    }
    if (cfg->type == TF_CFG_SCHED_CHANGE)
        s->next_fire_ms = 0;
    /* A master without the lease leaves the holder's row alone (its
     * branch head may be stale); it reads the row when it takes the
     * lease. */
    if ((moved || cron_changed) && tf_store_has_duty(m->store))
        state_write(m, s);
}

int tf_schedulers_start(tf_master_t *m)
{
    tf_schedulers_t *ss = calloc(1, sizeof(*ss));
    if (!ss)
        return TF_ENOMEM;
    ss->m = m;
    m->schedulers = ss;
    /* The blamelists and scheduler names of open requests came with the
     * core's state (TF_Q_LOAD_STATE). */
    const tf_config_t *c = m->cfg;
    ss->v = calloc(c->nschedulers ? c->nschedulers : 1, sizeof(*ss->v));
    if (!ss->v)
        return TF_ENOMEM;
    for (size_t i = 0; i < c->nschedulers; i++) {
        msched_t *s = msched_load(m, &c->schedulers[i], true);
        if (s)
            ss->v[ss->n++] = s;
    }
    ss->last_eval_ms = tf_now_ms();
    uv_timer_init(m->loop, &ss->timer);
    ss->timer.data = ss;
    ss->timer_open = true;
    uv_timer_start(&ss->timer, tick_cb, SCHED_TICK_MS, SCHED_TICK_MS);
    if (ss->n)
        tf_info("scheduler", "%zu scheduler%s", ss->n,
                ss->n == 1 ? "" : "s");
    return 0;
}

void tf_schedulers_reload(tf_master_t *m)
{
    tf_schedulers_t *ss = m->schedulers;
    if (!ss || ss->stopping)
        return;
    const tf_config_t *c = m->cfg;
    msched_t **v = calloc(c->nschedulers ? c->nschedulers : 1, sizeof(*v));
    size_t n = 0;
    if (!v) {
        tf_error("scheduler", "out of memory: schedulers not reloaded");
        return;
    }
    for (size_t i = 0; i < c->nschedulers; i++) {
        const tf_cfg_scheduler_t *cfg = &c->schedulers[i];
        msched_t *s = NULL;
        for (size_t k = 0; k < ss->n && !s; k++) {
            if (ss->v[k] && strcmp(ss->v[k]->name, cfg->name) == 0) {
                s = ss->v[k];
                ss->v[k] = NULL;
            }
        }
        if (s)
            retarget(m, s, cfg);
        else
            s = msched_load(m, cfg, false); /* read off the loop */
        if (s)
            v[n++] = s;
    }
    for (size_t k = 0; k < ss->n; k++)
        msched_free(ss->v[k]);
    free(ss->v);
    ss->v = v;
    ss->n = n;
}

void tf_schedulers_stop(tf_master_t *m)
{
    tf_schedulers_t *ss = m->schedulers;
    if (!ss || ss->stopping)
        return;
    ss->stopping = true;
    if (ss->timer_open && !uv_is_closing((uv_handle_t *)&ss->timer))
        uv_close((uv_handle_t *)&ss->timer, NULL);
}

void tf_schedulers_free(tf_master_t *m)
{
    tf_schedulers_t *ss = m->schedulers;
    if (!ss)
        return;
    for (size_t i = 0; i < ss->n; i++)
        msched_free(ss->v[i]);
    free(ss->v);
    free(ss);
    m->schedulers = NULL;
}

/* ------------------------------------------------------------------ */
/* Status                                                              */
/* ------------------------------------------------------------------ */

static json_t *ms_or_null(int64_t v)
{
    return v > 0 ? json_integer(v) : json_null();
}

static json_t *strv_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

/* What one answer shows of a scheduler's state: its memory's, or the
 * stored row's (sched_stored_view). */
typedef struct sched_view {
    int64_t last_fired_ms, next_fire_ms;
    const char *last_revision;
    size_t npending, important;
    int64_t newest_arrived_ms; /* of the newest pending change */
} sched_view_t;

static void sched_memory_view(const msched_t *s, sched_view_t *v)
{
    *v = (sched_view_t){.last_fired_ms = s->last_fired_ms,
                        .next_fire_ms = s->next_fire_ms,
                        .last_revision = s->last_revision,
                        .npending = s->npending};
    for (size_t k = 0; k < s->npending; k++)
        v->important += s->pending[k].important;
    if (s->npending)
        v->newest_arrived_ms = s->pending[s->npending - 1].arrived_ms;
}

/* The holder's state as stored (q: its row and the changes after its
 * consumed revision), counted as msched_apply would take it over; what
 * has no row yet is the memory's. */
static void sched_stored_view(const msched_t *s, const tf_q_scheduler_t *q,
                              sched_view_t *v)
{
    const tf_cfg_scheduler_t *cfg = s->cfg;
    sched_memory_view(s, v);
    if (!q->have_row)
        return;
    v->last_fired_ms = q->last_fired_ms;
    if (q->last_revision)
        v->last_revision = q->last_revision;
    if (cfg->type == TF_CFG_SCHED_PERIODIC && q->next_fire_ms != 0 &&
        s->next_fire_ms != -1)
        v->next_fire_ms = q->next_fire_ms;
    v->npending = q->nchanges;
    v->important = 0;
    v->newest_arrived_ms = 0;
    for (size_t i = 0; i < q->nchanges; i++) {
        const tf_sched_change_row_t *c = &q->changes[i];
        v->important += stored_change_important(cfg, c);
        v->newest_arrived_ms = c->created_ms;
    }
}

static json_t *sched_json(const msched_t *s, const sched_view_t *v)
{
    const tf_cfg_scheduler_t *cfg = s->cfg;
    bool periodic = cfg->type == TF_CFG_SCHED_PERIODIC;
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(s->name));
    json_object_set_new(o, "type",
                        json_string(periodic ? "periodic" : "change"));
    json_object_set_new(o, "builders",
                        strv_json(cfg->builders, cfg->nbuilders));
    json_object_set_new(o, "repository",
                        cfg->repository ? json_string(cfg->repository)
                                        : json_null());
    json_object_set_new(o, "branch", cfg->branch ? json_string(cfg->branch)
                                                 : json_null());
    json_object_set_new(o, "last_fired_ms", ms_or_null(v->last_fired_ms));
    json_object_set_new(o, "last_revision",
                        v->last_revision ? json_string(v->last_revision)
                                         : json_null());
    json_object_set_new(o, "pending_changes",
                        json_integer((json_int_t)v->npending));
    json_object_set_new(o, "important_changes",
                        json_integer((json_int_t)v->important));
    if (periodic) {
        json_object_set_new(o, "cron", json_string(cfg->cron));
        json_object_set_new(o, "only_if_changed",
                            json_boolean(cfg->only_if_changed));
        json_object_set_new(o, "next_fire_ms", ms_or_null(v->next_fire_ms));
    } else {
        json_object_set_new(o, "tree_stable_s",
                            json_integer(cfg->tree_stable_s));
        json_object_set_new(o, "paths", strv_json(cfg->paths, cfg->npaths));
        json_object_set_new(
            o, "next_fire_ms",
            v->important ? json_integer(v->newest_arrived_ms +
                                        (int64_t)cfg->tree_stable_s * 1000)
                         : json_null());
    }
    return o;
}

json_t *tf_schedulers_status(tf_master_t *m)
{
    tf_schedulers_t *ss = m->schedulers;
    json_t *arr = json_array();
    for (size_t i = 0; ss && i < ss->n; i++) {
        sched_view_t v;
        sched_memory_view(ss->v[i], &v);
        json_array_append_new(arr, sched_json(ss->v[i], &v));
    }
    return arr;
}

int tf_schedulers_stored_prepare(tf_master_t *m, tf_sched_stored_t **out,
                                 size_t *n)
{
    tf_schedulers_t *ss = m->schedulers;
    size_t count = ss ? ss->n : 0;
    tf_sched_stored_t *v = calloc(count ? count : 1, sizeof(*v));
    if (!v)
        return TF_ENOMEM;
    for (size_t i = 0; i < count; i++) {
        const msched_t *s = ss->v[i];
        const tf_cfg_scheduler_t *cfg = s->cfg;
        tf_sched_stored_t *d = &v[i];
        snprintf(d->name, sizeof(d->name), "%s", s->name);
        d->repository = cfg->repository ? strdup(cfg->repository) : NULL;
        d->branch = cfg->branch ? strdup(cfg->branch) : NULL;
        if ((cfg->repository && !d->repository) ||
            (cfg->branch && !d->branch)) {
            tf_schedulers_stored_free(v, i + 1);
            return TF_ENOMEM;
        }
        d->q = (tf_q_scheduler_t){.q.kind = TF_Q_SCHEDULER,
                                  .name = d->name,
                                  .repository = d->repository,
                                  .branch = d->branch,
                                  .limit = SCHED_PENDING_MAX};
    }
    *out = v;
    *n = count;
    return 0;
}

void tf_schedulers_stored_free(tf_sched_stored_t *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        tf_q_scheduler_clear(&v[i].q);
        free(v[i].repository);
        free(v[i].branch);
    }
    free(v);
}

json_t *tf_schedulers_status_stored(tf_master_t *m,
                                    const tf_sched_stored_t *v, size_t n)
{
    tf_schedulers_t *ss = m->schedulers;
    json_t *arr = json_array();
    for (size_t i = 0; ss && i < ss->n; i++) {
        const msched_t *s = ss->v[i];
        const tf_sched_stored_t *d = NULL;
        sched_view_t view;
        /* By name: a reload may have come between the read and now. */
        for (size_t k = 0; k < n && !d; k++)
            if (strcmp(v[k].name, s->name) == 0)
                d = &v[k];
        if (d)
            sched_stored_view(s, &d->q, &view);
        else
            sched_memory_view(s, &view);
        json_array_append_new(arr, sched_json(s, &view));
    }
    return arr;
}

