/*
 * daemon.c - tf-master's process: the root that wires the subsystems
 * together and owns what belongs to the process (signals, timers, the
 * order of startup and shutdown).
 *
 * It is the one file that knows every folder: it gives the core the
 * network layer's functions (m->net) and mail's wake-up (m->mail_wake),
 * starts the server, the change sources and the mail sender around the
 * core, and drives them on SIGHUP and SIGTERM. The core itself includes
 * none of them (docs/internals.md, "Subsystems").
 *
 * Startup order matters: the config is loaded and validated first (a bad
 * config never touches the database), then the store is opened (migrations
 * run), then the live state is rebuilt from it with synchronous reads before
 * the loop serves anything, then the server starts listening. From then on
 * the store asserts that no synchronous read runs on the loop thread
 * (tf_store_serving).
 *
 * SIGHUP reads and checks the config on a thread-pool thread (it may be
 * megabytes, with secret files and regular expressions to compile); only
 * the swap happens on the loop. A second SIGHUP during a reload runs one
 * more reload after it.
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
#include "daemon.h"

#include <signal.h>
#include <stdio.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "api/cache.h"
#include "changes/poller.h"
#include "changes/schedulers.h"
#include "core/master.h"
#include "crypto.h"
#include "log.h"
#include "mail/mail.h"
#include "net/link.h"
#include "net/live.h"
#include "net/server.h"
#include "store/dblock.h"
#include "tf_err.h"
#include "util.h"

/* --- the network, as the core sees it --- */

static void net_close_link(tf_link_t *l, const char *code, int close_code,
                           const char *message)
{
    tf_link_close(l, code, close_code, "%s", message);
}

static const tf_net_ops_t net_ops = {
    .send_text = tf_link_send_text,
    .send_text_now = tf_link_send_text_now,
    .drain_deferred = tf_link_drain_deferred,
    .close_link = net_close_link,
    .live_build = tf_live_build,
    .live_step = tf_live_step,
    .live_slave = tf_live_slave,
    .live_request = tf_live_request,
    .live_log = tf_live_log,
    .live_relay = tf_live_relay,
    .live_stored = tf_live_stored,
};

/* New outbox rows committed: the sender looks now. */
static void wake_mail(tf_master_t *m)
{
    tf_mail_wake(m->mail);
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

typedef struct reload {
    uv_work_t work;
    tf_master_t *m;
    char *path;
    tf_config_t *cfg;
    tf_cfg_diags_t diags;
    int rc;
    size_t secrets_read; /* secret files this load read (not reused) */
} reload_t;

static void start_reload(tf_master_t *m);

/* The config a reload replaced, freed on a thread-pool thread: 5,000
 * slaves' strings were a quarter of the loop's share of a reload, and
 * the loop has builds to start meanwhile. Nothing on the loop points into
 * it any more (tf_master_apply_config and the reload hooks have moved to
 * the new one). */
typedef struct old_config {
    uv_work_t work;
    tf_config_t *cfg;
} old_config_t;

static void old_config_work(uv_work_t *w)
{
    old_config_t *o = w->data;
    tf_config_free(o->cfg);
    o->cfg = NULL;
}

static void old_config_after(uv_work_t *w, int status)
{
    old_config_t *o = w->data;
    (void)status;
    tf_config_free(o->cfg); /* cancelled: not freed yet */
    free(o);
}

/* Takes cfg; frees it off the loop, or here when no work can be queued. */
static void free_config_later(tf_master_t *m, tf_config_t *cfg)
{
    old_config_t *o = calloc(1, sizeof(*o));
    if (!o) {
        tf_config_free(cfg);
        return;
    }
    o->cfg = cfg;
    o->work.data = o;
    if (uv_queue_work(m->loop, &o->work, old_config_work,
                      old_config_after) != 0) {
        tf_config_free(cfg);
        free(o);
    }
}

/* A thread-pool thread: reading and checking the file touches nothing of
 * the loop's. */
static void reload_work(uv_work_t *w)
{
    reload_t *r = w->data;
    /* Reloads are serialized (m->reloading), one user of the cache at a
     * time; the loop does not touch it meanwhile. */
    size_t before = tf_cfg_secrets_reads(r->m->secrets);
    r->rc = tf_config_load_cached(r->path, r->m->secrets, &r->cfg, &r->diags);
    r->secrets_read = tf_cfg_secrets_reads(r->m->secrets) - before;
}

static void reload_after(uv_work_t *w, int status)
{
    reload_t *r = w->data;
    tf_master_t *m = r->m;

    m->reloading = false;
    if (status == UV_ECANCELED || m->stopping) {
        tf_config_free(r->cfg);
        goto out;
    }
    if (r->rc) {
        print_diags(&r->diags);
        tf_error("master", "config not reloaded: %zu error(s); the old one "
                 "stays in force", r->diags.count);
        goto out;
    }
    tf_config_t *cfg = r->cfg;
    if (cfg->listen_port != m->cfg->listen_port ||
        strcmp(cfg->listen_host, m->cfg->listen_host) != 0 ||
        strcmp(cfg->database, m->cfg->database) != 0)
        tf_warn("master", "listen address and database changes take effect "
                "at the next restart");
    tf_config_t *old = tf_master_apply_config(m, cfg);
    tf_pollers_reload(m);
    tf_schedulers_reload(m);
    tf_mail_reconfigure(&m->mail, m->store, m->cfg);
    /* Cached answers hold links made from the old config. */
    tf_api_cache_flush(m);
    free_config_later(m, old);
    tf_info("master", "config reloaded: %zu slaves, %zu builders; %zu "
            "secret file(s) read, the others unchanged",
            cfg->nslaves, cfg->nbuilders, r->secrets_read);
out:
    tf_cfg_diags_clear(&r->diags);
    free(r->path);
    free(r);
    if (m->reload_again && !m->stopping) {
        m->reload_again = false;
        start_reload(m);
    }
}

/* --- settling the secrets cache --- */

/* Secrets read less than 100 ms after their file changed are read again
 * at the next reload (secrets.c); a config and its secret files written
 * just before the master starts (tf-master create, a provisioning
 * script, bench_sched.py) left thousands of them for the first SIGHUP.
 * The tick settles them once they are past that window, on a pool
 * thread, serialized with reloads like a reload (the cache has no lock);
 * a SIGHUP meanwhile stops it at the next file and runs after it. */
static void settle_work(uv_work_t *w)
{
    tf_master_t *m = w->data;
    tf_cfg_secrets_settle(m->secrets, &m->settle_stop);
}

static void settle_after(uv_work_t *w, int status)
{
    tf_master_t *m = w->data;
    (void)status;
    free(w);
    m->settling = false;
    if (m->reload_again && !m->stopping) {
        m->reload_again = false;
        start_reload(m);
    }
}

static void settle_secrets(tf_master_t *m)
{
    uv_work_t *w;
    if (m->stopping || m->reloading || m->settling ||
        !tf_cfg_secrets_unsettled(m->secrets))
        return;
    if (!(w = calloc(1, sizeof(*w))))
        return;
    w->data = m;
    atomic_store(&m->settle_stop, false);
    if (uv_queue_work(m->loop, w, settle_work, settle_after) != 0) {
        free(w);
        return;
    }
    m->settling = true;
}

static void start_reload(tf_master_t *m)
{
    reload_t *r = calloc(1, sizeof(*r));

    if (m->reloading || m->settling) {
        atomic_store(&m->settle_stop, true);
        m->reload_again = true;
        free(r);
        return;
    }
    tf_info("master", "SIGHUP: reloading %s", m->cfg->path);
    if (!r || !(r->path = strdup(m->cfg->path))) {
        tf_error("master", "out of memory: config not reloaded");
        free(r);
        return;
    }
    r->m = m;
    r->work.data = r;
    if (uv_queue_work(m->loop, &r->work, reload_work, reload_after) != 0) {
        tf_error("master", "cannot start the config reload");
        free(r->path);
        free(r);
        return;
    }
    m->reloading = true;
}

/* --- loop handles --- */

static void tick_cb(uv_timer_t *t)
{
    tf_master_t *m = t->data;
    if (m->stopping)
        return;
    tf_link_heartbeat(m);
    tf_master_tick(m);
    settle_secrets(m);
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
    /* A settle of the secrets cache under way stops at its next file. */
    atomic_store(&m->settle_stop, true);
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
            start_reload(m);
        return;
    }
    begin_shutdown(m, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void free_all(tf_master_t *m)
{
    tf_schedulers_free(m);
    tf_pollers_free(m);
    tf_master_free(m);
    tf_cfg_secrets_free(m->secrets);
    m->secrets = NULL;
}

/* glibc gives the top of its heap back to the kernel as soon as more
 * than a threshold is free there (128 KiB, raised on the fly up to a few
 * MiB), and maps allocations past another one on their own. A burst of
 * build starts allocates and frees megabytes in a few milliseconds, so
 * the loop thread faulted the same pages in again and again: in a
 * profile of a burst of 5,000 starts, 14% of its time was the kernel
 * zeroing pages (clear_page, under _int_malloc). Keeping up to 64 MiB
 * of free heap and serving allocations up to 4 MiB from it costs a
 * master of thousands of slaves (tens of MiB) no more than that. The
 * other threads' arenas follow the same two settings (glibc 2.36's
 * heap_trim checks them heap by heap), but their heaps are at most 64 MiB
 * each on 64-bit systems, so with this threshold a heap's top is never
 * trimmed and such an arena gives memory back only by unmapping a whole
 * heap other than its first. */
static void tune_malloc(void)
{
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
    mallopt(M_TOP_PAD, 4 * 1024 * 1024);
#endif
}

int tf_master_run(const char *dir, const char *config_path)
{
    tf_master_t mm;
    tf_master_t *m = &mm;
    uv_loop_t loop;
    tf_cfg_diags_t diags = {0};
    char *cfg_path = NULL;
    tf_dblock_t dbl = {.fd = -1};
    char holder[256];
    int rc;

    tune_malloc();
    rc = tf_master_init(m, dir);
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
    if (rc || !cfg_path) {
        free(cfg_path);
        free_all(m);
        return 1;
    }
    m->net = &net_ops;
    m->mail_wake = wake_mail;
    /* Without the cache (out of memory) every load reads every file. */
    m->secrets = tf_cfg_secrets_new();
    rc = tf_config_load_cached(cfg_path, m->secrets, &m->cfg, &diags);
    free(cfg_path);
    if (rc) {
        print_diags(&diags);
        tf_cfg_diags_clear(&diags);
        free_all(m);
        return 2;
    }
    if (load_admin_token(m) != 0) {
        free_all(m);
        return 1;
    }
    /* One process on a sqlite database: not two masters, not a master
     * and `tf-master vacuum` (store/dblock.h). */
    rc = tf_dblock_take(m->cfg->database, "tf-master run", &dbl, holder,
                        sizeof(holder));
    if (rc) {
        if (rc == TF_EEXIST)
            tf_error("master", "the database %s is in use by %s; "
                     "a master or `tf-master vacuum` already runs on it: "
                     "stop it first", m->cfg->database, holder);
        else
            tf_error("master", "cannot lock the database %s: %s",
                     m->cfg->database, holder);
        free_all(m);
        return 1;
    }
    if (uv_loop_init(&loop) != 0) {
        tf_dblock_release(&dbl);
        free_all(m);
        return 1;
    }
    m->loop = &loop;
    tf_store_opts_t so = {.congestion_cb = congestion_cb,
                          .congestion_arg = m, .exclusive = true,
                          .standby = m->cfg->store_standby != 0,
                          .shared = m->cfg->store_shared != 0,
                          .farm_cb = tf_master_farm_changed,
                          .farm_arg = m,
                          .keepalive_idle_s =
                              (unsigned)m->cfg->store_keepalive_idle_s,
                          .keepalive_interval_s =
                              (unsigned)m->cfg->store_keepalive_interval_s,
                          .keepalive_count =
                              (unsigned)m->cfg->store_keepalive_count,
                          .lease_timeout_s =
                              (unsigned)m->cfg->store_lease_timeout_s};
    rc = tf_store_open(m->loop, m->cfg->database, &so, &m->store);
    if (rc) {
        char shown[512];
        tf_store_display(m->cfg->database, shown, sizeof(shown));
        tf_error("master", "cannot open the database %s: %s", shown,
                 tf_strerror(rc));
        goto fail_loop;
    }
    rc = tf_master_start(m);
    if (rc)
        goto fail_store;

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

    char shown_db[512];
    tf_store_display(m->cfg->database, shown_db, sizeof(shown_db));
    tf_info("master", "tf-master %s serving %s on %s:%u (database %s)",
            TF_VERSION, m->cfg->name, m->cfg->listen_host,
            m->cfg->listen_port, shown_db);
    tf_mail_start(&m->mail, m->store, m->cfg);
    /* From here on the loop must not block on the store. */
    tf_store_serving(m->store);
    tf_sched_kick(m);
    uv_run(m->loop, UV_RUN_DEFAULT);
    tf_mail_free(m->mail); /* after the store closed: its callbacks ran */
    m->mail = NULL;
    rc = uv_loop_close(m->loop);
    if (rc)
        tf_warn("master", "loop closed with handles open: %s",
                uv_strerror(rc));
    free_all(m);
    tf_dblock_release(&dbl);
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
    free_all(m);
    tf_dblock_release(&dbl);
    return 1;
}
