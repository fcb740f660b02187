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

/* Writes collected for one all-or-nothing operation. Values are copied
 * per statement (callers pass short-lived strings); owned blobs move in. */
typedef struct wstmt {
    const char *sql;
    tf_sqlval_t *vals; /* malloc'd with its texts after it */
    size_t nvals;
} wstmt_t;

typedef struct tf_wgroup {
    wstmt_t *items;
    size_t n;
    size_t cap;
    bool failed; /* an allocation failed: the group is not committed */
} tf_wgroup_t;

static void group_free(tf_wgroup_t *g, bool free_owned)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++) {
        for (size_t k = 0; free_owned && k < g->items[i].nvals; k++)
            if (g->items[i].vals[k].kind == TF_SQL_BLOB_OWNED)
                free((void *)g->items[i].vals[k].p);
        free(g->items[i].vals);
    }
    free(g->items);
    free(g);
}

void tf_master_group_begin(tf_master_t *m)
{
    if (m->group) {
        tf_error("master", "write groups do not nest");
        return;
    }
    m->group = calloc(1, sizeof(tf_wgroup_t));
}

static void free_owned(const tf_sqlval_t *vals, size_t nvals)
{
    for (size_t i = 0; i < nvals; i++)
        if (vals[i].kind == TF_SQL_BLOB_OWNED)
            free((void *)vals[i].p);
}

static int group_add(tf_wgroup_t *g, const char *sql, const tf_sqlval_t *vals,
                     size_t nvals)
{
    if (g->failed)
        goto fail;
    if (g->n == g->cap) {
        size_t ncap = g->cap ? g->cap * 2 : 8;
        wstmt_t *ni = realloc(g->items, ncap * sizeof(*ni));
        if (!ni)
            goto fail;
        g->items = ni;
        g->cap = ncap;
    }
    size_t bytes = nvals * sizeof(tf_sqlval_t);
    for (size_t i = 0; i < nvals; i++)
        if (vals[i].kind == TF_SQL_TEXT && vals[i].p)
            bytes += strlen(vals[i].p) + 1;
    tf_sqlval_t *copy = malloc(bytes ? bytes : 1);
    if (!copy)
        goto fail;
    char *p = (char *)(copy + nvals);
    for (size_t i = 0; i < nvals; i++) {
        copy[i] = vals[i];
        if (vals[i].kind == TF_SQL_TEXT && vals[i].p) {
            size_t len = strlen(vals[i].p) + 1;
            memcpy(p, vals[i].p, len);
            copy[i].p = p;
            p += len;
        }
    }
    g->items[g->n++] = (wstmt_t){.sql = sql, .vals = copy, .nvals = nvals};
    return 0;
fail:
    g->failed = true;
    free_owned(vals, nvals);
    return TF_ENOMEM;
}

int tf_master_group_commit(tf_master_t *m, tf_store_done_cb cb, void *arg)
{
    tf_wgroup_t *g = m->group;
    int rc = 0;
    m->group = NULL;
    if (!g || g->failed) {
        /* Nothing half-stored: the whole group is dropped, loudly. */
        tf_error("master", "out of memory collecting writes: %zu lost",
                 g ? g->n : 0);
        group_free(g, true);
        if (cb)
            cb(arg, TF_ENOMEM);
        return TF_ENOMEM;
    }
    if (g->n == 0) {
        group_free(g, true);
        if (cb)
            cb(arg, 0);
        return 0;
    }
    tf_sqlstmt_t *st = calloc(g->n, sizeof(*st));
    if (!st) {
        group_free(g, true);
        if (cb)
            cb(arg, TF_ENOMEM);
        return TF_ENOMEM;
    }
    for (size_t i = 0; i < g->n; i++)
        st[i] = (tf_sqlstmt_t){.sql = g->items[i].sql,
                               .vals = g->items[i].vals,
                               .nvals = g->items[i].nvals};
    /* The store takes the owned blobs, even when it refuses. */
    rc = tf_store_write_multi(m->store, st, g->n, cb, arg);
    if (rc) {
        tf_error("master", "%zu writes lost (%s): %.80s", g->n,
                 tf_strerror(rc), g->items[0].sql);
        if (cb)
            cb(arg, rc);
    }
    if (rc == 0)
        tf_mail_group_queued(m->mail); /* wakes it after this commit */
    free(st);
    group_free(g, false);
    return rc;
}

static int master_mail_write(void *ctx, const tf_sqlstmt_t *st)
{
    return tf_master_write(ctx, st->sql, st->vals, st->nvals, NULL, NULL);
}

tf_mail_writer_t tf_master_mail_writer(tf_master_t *m)
{
    return (tf_mail_writer_t){
        .write = master_mail_write, .ctx = m, .grouped = m->group != NULL};
}

int tf_master_write(tf_master_t *m, const char *sql, const tf_sqlval_t *vals,
                    size_t nvals, tf_store_done_cb cb, void *arg)
{
    if (m->group) {
        int grc = group_add(m->group, sql, vals, nvals);
        if (cb) {
            /* A group has one callback, given to tf_master_group_commit. */
            tf_error("master", "a write with a callback inside a group: "
                     "%.60s", sql);
            cb(arg, TF_ESTATE);
        }
        return grc;
    }
    int rc = tf_store_write(m->store, sql, vals, nvals, cb, arg);
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
    tf_sqlval_t v[] = {tf_sql_text(slave), tf_sql_int(tf_now_ms()),
                       tf_sql_text(event), tf_sql_text(detail)};
    tf_master_write(m,
                    "INSERT INTO slave_events(slave, time_ms, event, detail) "
                    "VALUES(?1, ?2, ?3, ?4)",
                    v, 4, NULL, NULL);
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
    s->cfg = tf_config_slave(m->cfg, name);
    if (tf_map_put_str(m->slaves, name, s) != 0) {
        free(s);
        return NULL;
    }
    return s;
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
    tf_list_init(&b->pending);
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

typedef struct load_ctx {
    tf_master_t *m;
    int rc;
} load_ctx_t;

static int64_t col_i64(sqlite3_stmt *st, int i)
{
    return sqlite3_column_int64(st, i);
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : NULL;
}

static int load_counters(sqlite3 *db, tf_master_t *m)
{
    sqlite3_stmt *st = NULL;
    int rc = TF_ESTORE;
    if (sqlite3_prepare_v2(db,
                           "SELECT (SELECT coalesce(max(id), 0) FROM builds),"
                           " (SELECT coalesce(max(id), 0) FROM build_requests),"
                           " (SELECT coalesce(max(id), 0) FROM try_jobs)",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW)
        goto out;
    m->next_build_id = (uint64_t)col_i64(st, 0) + 1;
    m->next_request_id = (uint64_t)col_i64(st, 1) + 1;
    m->next_job_id = (uint64_t)col_i64(st, 2) + 1;
    sqlite3_finalize(st);
    st = NULL;
    /* Each builder's next number, and the slave of its last build: the
     * warm checkout a restarted master keeps preferring. */
    if (sqlite3_prepare_v2(db,
                           "SELECT builder, max(number), (SELECT slave FROM "
                           "builds l WHERE l.builder = b.builder AND "
                           "l.slave IS NOT NULL ORDER BY number DESC "
                           "LIMIT 1) FROM builds b GROUP BY builder",
                           -1, &st, NULL) != SQLITE_OK)
        goto out;
    while (sqlite3_step(st) == SQLITE_ROW) {
        tf_mbuilder_t *mb = tf_master_builder(m, col_text(st, 0), true);
        if (!mb)
            continue;
        mb->next_number = (uint64_t)col_i64(st, 1) + 1;
        const char *warm = col_text(st, 2);
        snprintf(mb->last_slave, sizeof(mb->last_slave), "%s",
                 warm ? warm : "");
    }
    rc = 0;
out:
    if (rc)
        tf_error("master", "loading counters: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return rc;
}

static int load_requests(sqlite3 *db, tf_master_t *m)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT id, builder, reason, owner, priority, "
                           "submitted_ms, retries, properties, state, job_id, "
                           "tests, revision, patch_sha256, patch_size "
                           "FROM build_requests WHERE state IN "
                           "('pending', 'running') ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK) {
        tf_error("master", "loading requests: %s", sqlite3_errmsg(db));
        return TF_ESTORE;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        tf_request_t *r = calloc(1, sizeof(*r));
        if (!r)
            break;
        r->id = (uint64_t)col_i64(st, 0);
        snprintf(r->builder, sizeof(r->builder), "%s", col_text(st, 1));
        r->reason = col_text(st, 2) ? strdup(col_text(st, 2)) : NULL;
        r->owner = strdup(col_text(st, 3) ? col_text(st, 3) : "");
        r->priority = (int)col_i64(st, 4);
        r->submitted_ms = col_i64(st, 5);
        r->retries = (unsigned)col_i64(st, 6);
        r->properties = strdup(col_text(st, 7) ? col_text(st, 7) : "{}");
        r->job_id = (uint64_t)col_i64(st, 9);
        r->tests = strdup(col_text(st, 10) ? col_text(st, 10) : "[]");
        r->revision = col_text(st, 11) ? strdup(col_text(st, 11)) : NULL;
        if (col_text(st, 12))
            snprintf(r->patch_sha256, sizeof(r->patch_sha256), "%s",
                     col_text(st, 12));
        r->patch_size = (uint64_t)col_i64(st, 13);
        tf_list_init(&r->node);
        /* Running requests are attached when their build loads; those
         * whose build did not survive are queued again below. */
        r->state = strcmp(col_text(st, 8), "running") == 0 ? TF_REQ_RUNNING
                                                            : TF_REQ_PENDING;
        if (tf_map_put_id(m->requests, r->id, r) != 0)
            tf_request_free(r);
    }
    sqlite3_finalize(st);
    return 0;
}

static int load_steps(sqlite3 *db, tf_build_t *b)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT idx, state, result, log_bytes, log_lines, "
                           "flags, name, started_ms, finished_ms FROM steps WHERE build_id = ?1 ORDER BY idx",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_int64(st, 1, (int64_t)b->id);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t i = col_i64(st, 0);
        if (i < 0 || (size_t)i >= b->nsteps)
            continue;
        tf_bstep_t *s = &b->steps[i];
        const char *state = col_text(st, 1);
        s->started = state && strcmp(state, "pending") != 0;
        s->finished = state && strcmp(state, "done") == 0;
        s->result = (tf_result_t)col_i64(st, 2);
        s->log_bytes = (uint64_t)col_i64(st, 3);
        s->log_lines = (uint64_t)col_i64(st, 4);
        s->flags = tf_flags_from_bits((int)col_i64(st, 5));
        snprintf(s->name, sizeof(s->name), "%s",
                 col_text(st, 6) ? col_text(st, 6) : "");
        s->started_ms = col_i64(st, 7);
        s->finished_ms = col_i64(st, 8);
        if (s->finished) {
            bool term = false;
            b->result = tf_result_fold(b->result, s->result, &s->flags, &term);
            b->terminated = b->terminated || term;
        }
    }
    sqlite3_finalize(st);
    return 0;
}

static int load_builds(sqlite3 *db, tf_master_t *m)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT id, builder, number, request_id, slave, "
                           "created_ms, started_ms, last_seq, nsteps "
                           "FROM builds WHERE state != 'finished' ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK) {
        tf_error("master", "loading builds: %s", sqlite3_errmsg(db));
        return TF_ESTORE;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        tf_build_t *b = calloc(1, sizeof(*b));
        int64_t nsteps = col_i64(st, 8);
        if (!b || nsteps < 0 || nsteps > TF_PROTO_MAX_STEPS) {
            free(b);
            continue;
        }
        b->steps = calloc((size_t)(nsteps ? nsteps : 1), sizeof(tf_bstep_t));
        if (!b->steps) {
            free(b);
            continue;
        }
        b->id = (uint64_t)col_i64(st, 0);
        snprintf(b->builder, sizeof(b->builder), "%s", col_text(st, 1));
        b->number = (uint64_t)col_i64(st, 2);
        uint64_t req_id = (uint64_t)col_i64(st, 3);
        snprintf(b->slave, sizeof(b->slave), "%s",
                 col_text(st, 4) ? col_text(st, 4) : "");
        b->created_ms = col_i64(st, 5);
        b->started_ms = col_i64(st, 6);
        b->accepted_seq = b->committed_seq = b->acked_seq =
            (uint64_t)col_i64(st, 7);
        b->nsteps = (size_t)nsteps;
        b->result = TF_SUCCESS;
        b->state = TF_BUILD_RUNNING;
        b->lost_since_ms = tf_mono_ms();
        tf_list_init(&b->slave_node);
        tf_list_init(&b->ack_node);
        load_steps(db, b);
        tf_request_t *r = tf_map_get_id(m->requests, req_id);
        if (r && r->state == TF_REQ_RUNNING && !r->build) {
            r->build = b;
            b->request = r;
        }
        tf_mslave_t *s = tf_master_slave(m, b->slave, true);
        tf_mbuilder_t *mb = tf_master_builder(m, b->builder, true);
        if (!s || !mb || tf_map_put_id(m->builds, b->id, b) != 0) {
            tf_build_free(b);
            continue;
        }
        tf_list_push_back(&s->builds, &b->slave_node);
        s->nbuilds++;
        mb->nrunning++;
        tf_info("master", "build %" PRIu64 " (%s #%" PRIu64 ") was running on "
                "%s: waiting for the slave to resume it",
                b->id, b->builder, b->number, b->slave);
    }
    sqlite3_finalize(st);
    return 0;
}

static int load_fn(sqlite3 *db, void *arg)
{
    load_ctx_t *ctx = arg;
    tf_master_t *m = ctx->m;
    int rc = load_counters(db, m);
    if (!rc)
        rc = load_requests(db, m);
    if (!rc)
        rc = load_builds(db, m);
    if (!rc)
        rc = tf_jobs_load(db, m);
    return rc;
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
    for (size_t i = 0; i < k; i++) {
        tf_request_t *r = all[i];
        if (r->state == TF_REQ_RUNNING && r->build)
            continue;
        if (r->state == TF_REQ_RUNNING) {
            tf_warn("master", "request %" PRIu64 " was running but its build "
                    "did not survive: queueing it again", r->id);
            tf_sqlval_t rv[] = {tf_sql_int((int64_t)r->id)};
            tf_master_write(m,
                            "UPDATE build_requests SET state = 'pending', "
                            "build_id = NULL WHERE id = ?1",
                            rv, 1, NULL, NULL);
        }
        tf_sched_enqueue(m, r);
    }
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
    tf_master_write(m, "UPDATE builders SET active = 0", NULL, 0, NULL, NULL);
    for (size_t i = 0; i < m->cfg->nbuilders; i++) {
        const tf_cfg_builder_t *b = &m->cfg->builders[i];
        tf_mbuilder_t *mb = tf_master_builder(m, b->name, true);
        if (mb)
            mb->cfg = b;
        tf_sqlval_t bv[] = {tf_sql_text(b->name), tf_sql_int(b->priority)};
        tf_master_write(m,
                        "INSERT INTO builders(name, active) VALUES(?1, 1) "
                        "ON CONFLICT(name) DO UPDATE SET active = 1",
                        bv, 1, NULL, NULL);
    }
    for (size_t i = 0; i < m->cfg->nslaves; i++) {
        const tf_cfg_slave_t *c = &m->cfg->slaves[i];
        tf_mslave_t *s = tf_master_slave(m, c->name, true);
        if (s)
            s->cfg = c;
        tf_sqlval_t sv[] = {tf_sql_text(c->name)};
        tf_master_write(m,
                        "INSERT INTO slaves(name) VALUES(?1) "
                        "ON CONFLICT(name) DO NOTHING",
                        sv, 1, NULL, NULL);
    }
    /* Counts may have drifted if the last run died: write what we know. */
    pos = 0;
    while (tf_map_next(m->builders, &pos, NULL, NULL, &v) == 0) {
        tf_mbuilder_t *mb = v;
        tf_sqlval_t cv[] = {tf_sql_int(mb->npending), tf_sql_int(mb->nrunning),
                            tf_sql_text(mb->name)};
        tf_master_write(m,
                        "UPDATE builders SET pending = ?1, running = ?2 "
                        "WHERE name = ?3",
                        cv, 3, NULL, NULL);
    }
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
    int64_t now = tf_now_ms();
    static int64_t last_seen_flush;
    if (now - last_seen_flush >= 30000) {
        last_seen_flush = now;
        size_t pos = 0;
        void *v;
        while (tf_map_next(m->slaves, &pos, NULL, NULL, &v) == 0) {
            tf_mslave_t *s = v;
            if (!s->link)
                continue;
            tf_sqlval_t sv[] = {tf_sql_int(s->last_seen_ms),
                                tf_sql_text(s->name)};
            tf_master_write(m,
                            "UPDATE slaves SET last_seen_ms = ?1 "
                            "WHERE name = ?2",
                            sv, 2, NULL, NULL);
        }
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
    while (tf_map_next(m->builds, &pos, NULL, NULL, &v) == 0)
        tf_build_free(v);
    pos = 0;
    while (tf_map_next(m->requests, &pos, NULL, NULL, &v) == 0)
        tf_request_free(v);
    pos = 0;
    while (tf_map_next(m->slaves, &pos, NULL, NULL, &v) == 0)
        free(v);
    pos = 0;
    while (tf_map_next(m->builders, &pos, NULL, NULL, &v) == 0)
        free(v);
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
    load_ctx_t lc = {.m = m};
    rc = tf_store_read_sync(m->store, load_fn, &lc);
    if (rc) {
        tf_error("master", "cannot load state from %s", m->cfg->database);
        goto fail_store;
    }
    uv_idle_init(m->loop, &m->sched_idle);
    m->sched_idle.data = m;
    sync_config(m);
    tf_master_write(m, "UPDATE slaves SET connected = 0", NULL, 0, NULL, NULL);
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
