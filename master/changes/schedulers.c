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
} msched_t;

typedef struct tf_schedulers {
    tf_master_t *m;
    msched_t **v;
    size_t n;
    uv_timer_t timer;
    bool timer_open;
    bool stopping;
    int64_t last_eval_ms;
} tf_schedulers_t;

static void msched_free(msched_t *s)
{
    if (!s)
        return;
    free(s->last_revision);
    free(s->pending);
    free(s);
}

static void state_write(tf_master_t *m, const msched_t *s)
{
    tf_sqlval_t v[] = {
        tf_sql_text(s->name),
        s->last_fired_ms ? tf_sql_int(s->last_fired_ms) : tf_sql_null(),
        tf_sql_text(s->last_revision),
        s->next_fire_ms > 0 ? tf_sql_int(s->next_fire_ms) : tf_sql_null(),
    };
    tf_master_write(m,
                    "INSERT INTO scheduler_state(name, last_fired_ms, "
                    "last_revision, next_fire_ms) VALUES(?1, ?2, ?3, ?4) "
                    "ON CONFLICT(name) DO UPDATE SET last_fired_ms = ?2, "
                    "last_revision = ?3, next_fire_ms = ?4",
                    v, 4, NULL, NULL);
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

static void fire(tf_master_t *m, msched_t *s, int64_t now)
{
    const tf_cfg_scheduler_t *cfg = s->cfg;
    uint64_t *ids = NULL;
    char reason[256];
    const char *revision = NULL;
    bool periodic = cfg->type == TF_CFG_SCHED_PERIODIC;
    if (s->npending) {
        ids = calloc(s->npending, sizeof(*ids));
        if (!ids) {
            tf_error("scheduler", "%s: out of memory; will try again",
                     s->name);
            return;
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
}

static void evaluate(tf_master_t *m, msched_t *s, int64_t now,
                     bool clock_back)
{
    const tf_cfg_scheduler_t *cfg = s->cfg;
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
        fire(m, s, now);
        state_write(m, s);
        return;
    }
    if (clock_back && s->next_fire_ms != -1) {
        s->next_fire_ms = tf_cron_next(&s->cron, now);
        state_write(m, s);
    }
    if (s->next_fire_ms < 0 || now < s->next_fire_ms)
        return;
    if (s->npending || !cfg->only_if_changed)
        fire(m, s, now);
    else
        tf_info("scheduler", "%s: nothing changed on %s since it last "
                "fired; no build", s->name, cfg->branch);
    s->next_fire_ms = tf_cron_next(&s->cron, now);
    state_write(m, s);
}

void tf_schedulers_tick(tf_master_t *m)
{
    tf_schedulers_t *ss = m->schedulers;
    if (!ss || ss->stopping || m->stopping)
        return;
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

typedef struct load_ctx {
    tf_master_t *m;
    msched_t *s;  /* one scheduler, or NULL for the requests */
    bool have_row;
    int64_t now;
} load_ctx_t;

static int load_pending(sqlite3 *db, msched_t *s)
{
    const tf_cfg_scheduler_t *cfg = s->cfg;
    sqlite3_stmt *st = NULL;
    int64_t after = 0;
    if (!cfg->repository)
        return 0;
    if (s->last_revision) {
        if (sqlite3_prepare_v2(db,
                               "SELECT coalesce((SELECT id FROM changes "
                               "WHERE repository = ?1 AND branch = ?2 AND "
                               "revision = ?3), (SELECT max(id) FROM changes "
                               "WHERE repository = ?1 AND branch = ?2), 0)",
                               -1, &st, NULL) != SQLITE_OK)
            return TF_ESTORE;
        sqlite3_bind_text(st, 1, cfg->repository, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, cfg->branch, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, s->last_revision, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            after = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    /* The newest SCHED_PENDING_MAX, oldest first. */
    if (sqlite3_prepare_v2(db,
                           "SELECT id, revision, files, created_ms FROM "
                           "(SELECT * FROM changes WHERE repository = ?1 AND "
                           "branch = ?2 AND id > ?3 ORDER BY id DESC "
                           "LIMIT ?4) ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_text(st, 1, cfg->repository, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, cfg->branch, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, after);
    sqlite3_bind_int(st, 4, SCHED_PENDING_MAX);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *rev = (const char *)sqlite3_column_text(st, 1);
        const char *files = (const char *)sqlite3_column_text(st, 2);
        json_t *arr = files ? json_loads(files, 0, NULL) : NULL;
        size_t nf = json_array_size(arr);
        char **fv = calloc(nf ? nf : 1, sizeof(*fv));
        for (size_t i = 0; fv && i < nf; i++)
            fv[i] = (char *)json_string_value(json_array_get(arr, i));
        size_t k = 0;
        for (size_t i = 0; fv && i < nf; i++)
            if (fv[i])
                fv[k++] = fv[i];
        bool imp = cfg->type == TF_CFG_SCHED_PERIODIC ||
                   tf_paths_important(cfg->paths, cfg->npaths, fv, k);
        pending_add(s, (uint64_t)sqlite3_column_int64(st, 0),
                    rev ? rev : "", imp, sqlite3_column_int64(st, 3));
        free(fv);
        json_decref(arr);
    }
    sqlite3_finalize(st);
    return 0;
}

static int load_sched_fn(sqlite3 *db, void *arg)
{
    load_ctx_t *lc = arg;
    msched_t *s = lc->s;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT last_fired_ms, last_revision FROM "
                           "scheduler_state WHERE name = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_text(st, 1, s->name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        lc->have_row = true;
        s->last_fired_ms = sqlite3_column_int64(st, 0);
        const char *rev = (const char *)sqlite3_column_text(st, 1);
        s->last_revision = rev ? strdup(rev) : NULL;
    }
    sqlite3_finalize(st);
    /* Without a consumed revision there is nothing to be after: the
     * branch's head counts as seen (msched_load). */
    if (!lc->have_row || !s->last_revision)
        return 0;
    return load_pending(db, s);
}

/* The blamelists and scheduler names of open requests, which master.c's
 * loader does not know about. */
static int load_requests_fn(sqlite3 *db, void *arg)
{
    load_ctx_t *lc = arg;
    tf_master_t *m = lc->m;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT id, scheduler FROM build_requests WHERE "
                           "state IN ('pending', 'running') AND "
                           "scheduler IS NOT NULL",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    while (sqlite3_step(st) == SQLITE_ROW) {
        tf_request_t *r = tf_map_get_id(m->requests,
                                        (uint64_t)sqlite3_column_int64(st, 0));
        const char *name = (const char *)sqlite3_column_text(st, 1);
        if (r && !r->scheduler && name)
            r->scheduler = strdup(name);
    }
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(db,
                           "SELECT rc.request_id, rc.change_id FROM "
                           "request_changes rc JOIN build_requests r ON "
                           "r.id = rc.request_id WHERE r.state IN "
                           "('pending', 'running') ORDER BY rc.request_id, "
                           "rc.change_id",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    while (sqlite3_step(st) == SQLITE_ROW) {
        tf_request_t *r = tf_map_get_id(m->requests,
                                        (uint64_t)sqlite3_column_int64(st, 0));
        if (!r)
            continue;
        uint64_t *v = realloc(r->changes, (r->nchanges + 1) * sizeof(*v));
        if (!v)
            continue;
        r->changes = v;
        v[r->nchanges++] = (uint64_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return 0;
}

/* A scheduler object for cfg, its state loaded (or started, for a new
 * one: the known head of its branch counts as seen). */
static msched_t *msched_load(tf_master_t *m, const tf_cfg_scheduler_t *cfg)
{
    msched_t *s = calloc(1, sizeof(*s));
    char err[160];
    if (!s)
        return NULL;
    snprintf(s->name, sizeof(s->name), "%s", cfg->name);
    s->cfg = cfg;
    int64_t now = tf_now_ms();
    if (cfg->type == TF_CFG_SCHED_PERIODIC) {
        if (tf_cron_parse(cfg->cron, &s->cron, err, sizeof(err)) != 0) {
            msched_free(s);
            return NULL; /* the config loader checked it */
        }
        s->next_fire_ms = tf_cron_next(&s->cron, now);
    }
    load_ctx_t lc = {.m = m, .s = s, .now = now};
    if (tf_store_read_sync(m->store, load_sched_fn, &lc) != 0)
        tf_error("scheduler", "%s: cannot load its state; starting afresh",
                 s->name);
    if (!s->last_revision && cfg->repository) {
        const char *head = tf_pollers_head(m, cfg->repository, cfg->branch);
        s->last_revision = head ? strdup(head) : NULL;
    }
    state_write(m, s);
    return s;
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
    if (moved || cron_changed)
        state_write(m, s);
}

int tf_schedulers_start(tf_master_t *m)
{
    tf_schedulers_t *ss = calloc(1, sizeof(*ss));
    if (!ss)
        return TF_ENOMEM;
    ss->m = m;
    m->schedulers = ss;
    load_ctx_t lc = {.m = m};
    if (tf_store_read_sync(m->store, load_requests_fn, &lc) != 0)
        tf_error("scheduler", "cannot load the blamelists of open "
                 "requests");
    const tf_config_t *c = m->cfg;
    ss->v = calloc(c->nschedulers ? c->nschedulers : 1, sizeof(*ss->v));
    if (!ss->v)
        return TF_ENOMEM;
    for (size_t i = 0; i < c->nschedulers; i++) {
        msched_t *s = msched_load(m, &c->schedulers[i]);
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
            s = msched_load(m, cfg);
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

json_t *tf_schedulers_status(tf_master_t *m)
{
    tf_schedulers_t *ss = m->schedulers;
    json_t *arr = json_array();
    for (size_t i = 0; ss && i < ss->n; i++) {
        const msched_t *s = ss->v[i];
        const tf_cfg_scheduler_t *cfg = s->cfg;
        bool periodic = cfg->type == TF_CFG_SCHED_PERIODIC;
        json_t *o = json_object();
        size_t important = 0;
        for (size_t k = 0; k < s->npending; k++)
            important += s->pending[k].important;
        json_object_set_new(o, "name", json_string(s->name));
        json_object_set_new(o, "type",
                            json_string(periodic ? "periodic" : "change"));
        json_object_set_new(o, "builders",
                            strv_json(cfg->builders, cfg->nbuilders));
        json_object_set_new(o, "repository",
                            cfg->repository ? json_string(cfg->repository)
                                            : json_null());
        json_object_set_new(o, "branch", cfg->branch
                                             ? json_string(cfg->branch)
                                             : json_null());
        json_object_set_new(o, "last_fired_ms", ms_or_null(s->last_fired_ms));
        json_object_set_new(o, "last_revision",
                            s->last_revision ? json_string(s->last_revision)
                                             : json_null());
        json_object_set_new(o, "pending_changes", json_integer(s->npending));
        json_object_set_new(o, "important_changes", json_integer(important));
        if (periodic) {
            json_object_set_new(o, "cron", json_string(cfg->cron));
            json_object_set_new(o, "only_if_changed",
                                json_boolean(cfg->only_if_changed));
            json_object_set_new(o, "next_fire_ms",
                                ms_or_null(s->next_fire_ms));
        } else {
            json_object_set_new(o, "tree_stable_s",
                                json_integer(cfg->tree_stable_s));
            json_object_set_new(o, "paths",
                                strv_json(cfg->paths, cfg->npaths));
            json_object_set_new(
                o, "next_fire_ms",
                important ? json_integer(s->pending[s->npending - 1]
                                             .arrived_ms +
                                         (int64_t)cfg->tree_stable_s * 1000)
                          : json_null());
        }
        json_array_append_new(arr, o);
    }
    return arr;
}

