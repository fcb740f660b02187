/*
 * slave.c - tf-slave's top level: builds, their spools, and shutdown.
 *
 * A tf_build pairs a build's spool (its events, the send cursor, what the
 * master acknowledged) with its runner while it runs. Builds live in a
 * list sorted by id, which gives hello.running a stable order and the send
 * path a cheap round robin (the next build after the one that sent last).
 * A build is forgotten, spool and all, only once it has finished and the
 * master has acknowledged its last event, or when the master abandons it.
 *
 * Event path: runner callback -> number it (seq) -> append to the spool ->
 * kick the link. Send path: writeable link -> pull_cb -> read one record
 * from the spool at the build's cursor. Nothing between the two holds
 * build data in memory, so backpressure is simply "how far the cursor
 * lags the end of the file" (tf_spool_unsent), paused and resumed here.
 *
 * Process states (tf__set_state logs and checks every change):
 *
 *   RUNNING --SIGTERM (finish)--> DRAINING --2nd SIGTERM--> ABORTING
 *      |                             |                          |
 *      +--SIGTERM (abort), fatal-----+--------------------------+
 *                                    |                          |
 *                                    +--all acked--> STOPPING <-+-- steps
 *                                                               dead, acked
 *                                                               or 10 s
 *
 * Runners are never destroyed from inside their own callbacks: done_cb only
 * marks the build and a zero-delay timer (the reaper) finishes the job.
 */
#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "log.h"
#include "names.h"
#include "runner.h"
#include "slave.h"
#include "spool.h"
#include "tf_err.h"
#include "util.h"

#define TF__ABORT_ACK_WAIT_MS 10000

typedef enum {
    TF_SLAVE_RUNNING,
    TF_SLAVE_DRAINING,
    TF_SLAVE_ABORTING,
    TF_SLAVE_STOPPING,
} tf_slave_state_t;

static const char *const tf__slave_state_names[] = {
    "RUNNING", "DRAINING", "ABORTING", "STOPPING",
};

typedef struct tf_slave tf_slave_t;

typedef struct tf_build {
    struct tf_build *next;
    tf_slave_t *s;
    uint64_t id;
    char *builder;
    uint64_t number;
    tf_spool_t *spool;    /* NULL once abandoned */
    tf_runner_t *runner;  /* NULL for builds recovered from a spool */
    uint64_t acked;       /* the master committed every event <= this */
    bool running;         /* the runner has not finished */
    bool finished;        /* build_finished is in the spool */
    bool reported;        /* listed in hello.running on the current link */
    bool sendable;        /* the master told us where to resume, this link */
    bool paused;          /* output paused for backpressure */
    bool abandoned;       /* the master no longer wants it */
    /* The directory under basedir its steps run in: the builder's workdir,
     * or "WORKDIR@N" (N >= 2) while other builds of the same workdir run
     * on this slave (tf__workdir_for). "" for builds without a runner. */
    char workdir[TF_NAME_MAX + 16];
    /* The farm of the master that started it (welcome.farm of that link;
     * "": not known), echoed in hello.running so a master of another farm
     * never takes it for its own build of the same id. */
    char farm[TF_PROTO_FARM_MAX + 1];
} tf_build_t;

/* A build_start that waits for builds the master abandoned to die (see
 * tf__on_build_start): the message as the master sent it, re-encoded. */
typedef struct tf_held_start {
    struct tf_held_start *next;
    uint64_t id; /* its build */
    size_t len;
    char text[];
} tf_held_start_t;

struct tf_slave {
    uv_loop_t loop;
    const tf_slave_config_t *cfg;
    char *secret;
    char *spool_dir;
    char *run_dir;
    tf_conn_t *conn;
    tf_build_t *builds;
    size_t nbuilds;
    size_t nrunning;
    size_t nkilling;      /* running builds the master abandoned */
    tf_held_start_t *held, **held_tail; /* build_starts waiting for them */
    uint64_t rr_last;     /* id of the build that sent last */
    tf_slave_state_t state;
    int exit_code;
    bool link_gone;       /* no link will come back: do not wait for acks */
    bool ack_wait_started;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t ack_timer;
    uv_timer_t reap_timer;
    bool handles_open;
    char self_exe[4096];
    char http_base[600];
    char farm[TF_PROTO_FARM_MAX + 1]; /* welcome.farm of the current link */
    tf_source_ctx_t src_ctx;
};

static void tf__check_done(tf_slave_t *s);
static size_t tf__end_held(tf_slave_t *s, uint64_t id, tf_result_t result,
                           const char *why);
static void tf__set_http_base(tf_slave_t *s, const tf_slave_master_t *m);

static void tf__set_state(tf_slave_t *s, tf_slave_state_t to, const char *why)
{
    if (s->state == to)
        return;
    /* States only move forward. */
    assert(to > s->state);
    tf_info("slave", "%s -> %s: %s", tf__slave_state_names[s->state],
            tf__slave_state_names[to], why);
    s->state = to;
}

/* ---- the build list ----------------------------------------------------- */

static tf_build_t *tf__find(tf_slave_t *s, uint64_t id)
{
    for (tf_build_t *b = s->builds; b; b = b->next)
        if (b->id == id)
            return b;
    return NULL;
}

static void tf__insert(tf_slave_t *s, tf_build_t *b)
{
    tf_build_t **pp = &s->builds;
    while (*pp && (*pp)->id < b->id)
        pp = &(*pp)->next;
    b->next = *pp;
    *pp = b;
    s->nbuilds++;
}

static tf_build_t *tf__build_new(tf_slave_t *s, uint64_t id,
                                 const char *builder, uint64_t number)
{
    tf_build_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->s = s;
    b->id = id;
    b->number = number;
    b->builder = strdup(builder ? builder : "?");
    if (!b->builder) {
        free(b);
        return NULL;
    }
    return b;
}

/* Picks the directory a new build of workdir runs in: workdir itself when
 * no running build uses it, else "workdir@N" for the smallest N >= 2 that
 * none uses. Concurrent builds of one builder (max_builds >= 2) thus never
 * share a checkout, and each directory is reused by later builds, so
 * checkouts stay warm. '@' cannot occur in a name, so "linux@2" can never
 * be another builder's own workdir. */
static void tf__workdir_for(const tf_slave_t *s, const char *workdir,
                            char *out, size_t outlen)
{
    for (unsigned n = 1;; n++) {
        if (n == 1)
            snprintf(out, outlen, "%s", workdir);
        else
            snprintf(out, outlen, "%s@%u", workdir, n);
        bool used = false;
        for (const tf_build_t *b = s->builds; b && !used; b = b->next)
            used = b->running && strcmp(b->workdir, out) == 0;
        if (!used)
            return;
    }
}

/* Unlinks and frees b; the spool files stay unless removed before. */
static void tf__build_free(tf_slave_t *s, tf_build_t *b)
{
    for (tf_build_t **pp = &s->builds; *pp; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            s->nbuilds--;
            break;
        }
    }
    tf_runner_destroy(b->runner);
    tf_spool_close(b->spool);
    free(b->builder);
    free(b);
}

/* Forgets b if nothing more can happen to it. Never called from inside a
 * runner callback (the runner may be destroyed here). */
static void tf__maybe_forget(tf_slave_t *s, tf_build_t *b)
{
    if (b->running)
        return;
    if (b->abandoned) {
        tf_debug("slave", "build %llu: abandoned build forgotten",
                 (unsigned long long)b->id);
        tf__build_free(s, b);
        return;
    }
    if (b->finished && b->spool && b->acked >= b->spool->last_seq) {
        tf_info("spool", "build %llu: all %llu events acknowledged: spool "
                "deleted", (unsigned long long)b->id,
                (unsigned long long)b->spool->last_seq);
        tf_spool_remove(b->spool);
        b->spool = NULL;
        tf__build_free(s, b);
    }
}

/* ---- shutdown ------------------------------------------------------------ */

static bool tf__is_ours(void *arg, const uv_handle_t *h)
{
    tf_slave_t *s = arg;
    return h == (const uv_handle_t *)&s->sig_term ||
           h == (const uv_handle_t *)&s->sig_int ||
           h == (const uv_handle_t *)&s->sig_hup ||
           h == (const uv_handle_t *)&s->ack_timer ||
           h == (const uv_handle_t *)&s->reap_timer;
}

static void tf__close_own_handles(tf_slave_t *s)
{
    if (!s->handles_open)
        return;
    s->handles_open = false;
    uv_close((uv_handle_t *)&s->sig_term, NULL);
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    uv_close((uv_handle_t *)&s->sig_hup, NULL);
    uv_close((uv_handle_t *)&s->ack_timer, NULL);
    uv_close((uv_handle_t *)&s->reap_timer, NULL);
    /* With the watchers gone a late SIGTERM would kill us with status 143
     * in the last milliseconds: we are exiting anyway, so ignore it. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
}

static void tf__conn_down_done(void *arg)
{
    tf_slave_t *s = arg;
    tf_debug("slave", "link shut down; closing the last handles");
    tf__close_own_handles(s);
}

static void tf__stop(tf_slave_t *s, const char *why)
{
    if (s->state == TF_SLAVE_STOPPING)
        return;
    tf__set_state(s, TF_SLAVE_STOPPING, why);
    uv_timer_stop(&s->ack_timer);
    if (s->nbuilds)
        tf_info("slave", "%zu builds keep unacknowledged events in the spool; "
                "they are replayed on the next start", s->nbuilds);
    if (s->conn)
        tf_conn_shutdown(s->conn, tf__conn_down_done, s);
    else
        tf__close_own_handles(s);
}

static void tf__ack_timer_cb(uv_timer_t *t)
{
    tf_slave_t *s = t->data;
    tf_warn("slave", "no acknowledgement for every event after %d s: "
            "stopping anyway", TF__ABORT_ACK_WAIT_MS / 1000);
    tf__stop(s, "acknowledgement wait over");
}

/* Kills every running step; their builds end RETRY without later steps. */
static void tf__begin_abort(tf_slave_t *s, const char *why)
{
    tf__set_state(s, TF_SLAVE_ABORTING, why);
    /* No new builds while we wait for the acks of the aborted ones. */
    if (s->conn)
        tf_conn_set_draining(s->conn);
    tf__end_held(s, 0, TF_RETRY, "the slave is shutting down");
    for (tf_build_t *b = s->builds; b; b = b->next)
        if (b->running)
            tf_runner_abort(b->runner, TF_RETRY, "slave shut down", false);
    tf__check_done(s);
}

/* Decides whether a shutting-down slave can stop now. */
static void tf__check_done(tf_slave_t *s)
{
    switch (s->state) {
    case TF_SLAVE_RUNNING:
    case TF_SLAVE_STOPPING:
        return;
    case TF_SLAVE_DRAINING:
        if (s->nbuilds == 0)
            tf__stop(s, "every build finished and acknowledged");
        return;
    case TF_SLAVE_ABORTING:
        if (s->nrunning)
            return;
        if (s->nbuilds == 0)
            tf__stop(s, "every build acknowledged");
        else if (s->link_gone)
            tf__stop(s, "the master will not take our events");
        else if (!s->ack_wait_started) {
            s->ack_wait_started = true;
            tf_info("slave", "steps stopped; waiting up to %d s for the "
                    "master to acknowledge %zu builds", TF__ABORT_ACK_WAIT_MS /
                    1000, s->nbuilds);
            uv_timer_start(&s->ack_timer, tf__ack_timer_cb,
                           TF__ABORT_ACK_WAIT_MS, 0);
        }
        return;
    }
}

/* A failure that leaves the slave unable to do its job (the spool cannot
 * be written): stop every build and exit 1 without waiting for acks. */
static void tf__runtime_error(tf_slave_t *s)
{
    if (s->exit_code == 0)
        s->exit_code = 1;
    s->link_gone = true;
    if (s->state < TF_SLAVE_ABORTING)
        tf__begin_abort(s, "runtime error");
    else
        tf__check_done(s);
}

static void tf__signal_cb(uv_signal_t *h, int signum)
{
    tf_slave_t *s = h->data;
    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
    if (signum == SIGHUP) {
        tf_info("slave", "SIGHUP: nothing to reopen (logs go to stderr; "
                "restart the slave to apply configuration changes)");
        return;
    }
    switch (s->state) {
    case TF_SLAVE_RUNNING:
        if (s->cfg->on_sigterm == TF_SIGTERM_FINISH) {
            char why[128];
            snprintf(why, sizeof why, "%s: finishing %zu running builds "
                     "(send it again to abort them)", name, s->nrunning);
            tf__set_state(s, TF_SLAVE_DRAINING, why);
            tf_conn_set_draining(s->conn);
            tf__end_held(s, 0, TF_RETRY, "the slave is shutting down");
            tf__check_done(s);
        } else
            tf__begin_abort(s, name);
        return;
    case TF_SLAVE_DRAINING:
        tf__begin_abort(s, "second signal: aborting running builds");
        return;
    case TF_SLAVE_ABORTING:
    case TF_SLAVE_STOPPING:
        tf_info("slave", "%s: already stopping", name);
        return;
    }
}

/* ---- events into the spool ----------------------------------------------- */

static void tf__after_append(tf_build_t *b)
{
    tf_slave_t *s = b->s;
    uint64_t unsent = tf_spool_unsent(b->spool);
    if (b->running && !b->paused && unsent > s->cfg->spool_max_unsent) {
        b->paused = true;
        tf_info("spool", "build %llu: %llu MiB waiting to be sent: pausing "
                "its output", (unsigned long long)b->id,
                (unsigned long long)(unsent >> 20));
        tf_runner_pause(b->runner);
    }
    tf_conn_kick(s->conn);
}

static bool tf__append(tf_build_t *b, tf_rec_kind_t kind, uint64_t seq,
                       const struct iovec *iov, int n)
{
    int rc = tf_spool_append(b->spool, kind, seq, iov, n);
    if (rc) {
        tf_error("spool", "cannot append to %s: %s: stopping", b->spool->path,
                 tf_strerror(rc));
        tf__runtime_error(b->s);
        return false;
    }
    return true;
}

/* Numbers a control event, encodes it and appends it. */
static bool tf__append_event(tf_build_t *b, tf_msg_t *m)
{
    uint64_t seq = b->spool->last_seq + 1;
    char *text = NULL;
    size_t len = 0;

    switch (m->type) {
    case TF_MSG_STEP_STARTED: m->u.step_started.seq = seq; break;
    case TF_MSG_STEP_FINISHED: m->u.step_finished.seq = seq; break;
    case TF_MSG_BUILD_FINISHED: m->u.build_finished.seq = seq; break;
    case TF_MSG_TEST_RESULTS: m->u.test_results.seq = seq; break;
    default: return false;
    }
    int rc = tf_msg_encode(m, &text, &len);
    if (rc) {
        tf_error("spool", "build %llu: cannot encode %s: %s",
                 (unsigned long long)b->id, tf_msg_type_name(m->type),
                 tf_strerror(rc));
        tf__runtime_error(b->s);
        return false;
    }
    struct iovec iov = {text, len};
    bool ok = tf__append(b, TF_REC_TEXT, seq, &iov, 1);
    free(text);
    if (ok && m->type == TF_MSG_BUILD_FINISHED)
        b->finished = true;
    return ok;
}

static void tf__run_event_cb(void *arg, tf_msg_t *m)
{
    tf_build_t *b = arg;
    if (b->abandoned || !b->spool)
        return;
    if (tf__append_event(b, m))
        tf__after_append(b);
}

static void tf__run_output_cb(void *arg, uint32_t step, tf_stream_t stream,
                              const uint8_t *data, size_t n)
{
    tf_build_t *b = arg;
    uint8_t hdr[TF_PROTO_OUT_HDR];
    if (b->abandoned || !b->spool)
        return;
    tf_output_hdr_t h = {
        .stream = (uint8_t)stream,
        .step = (uint16_t)step,
        .length = (uint32_t)n,
        .build_id = b->id,
        .seq = b->spool->last_seq + 1,
    };
    if (tf_output_encode_hdr(&h, hdr)) {
        tf_error("spool", "build %llu: bad output header", (unsigned long long)b->id);
        return;
    }
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)(uintptr_t)data, n}};
    if (tf__append(b, TF_REC_BINARY, h.seq, iov, 2))
        tf__after_append(b);
}

static void tf__start_held(tf_slave_t *s);

static void tf__reap_cb(uv_timer_t *t)
{
    tf_slave_t *s = t->data;
    tf_build_t *b = s->builds;
    while (b) {
        tf_build_t *next = b->next;
        if (!b->running && b->runner) {
            tf_runner_destroy(b->runner);
            b->runner = NULL;
        }
        tf__maybe_forget(s, b);
        b = next;
    }
    tf__check_done(s);
    tf__start_held(s);
}

static void tf__run_done_cb(void *arg, tf_result_t result)
{
    tf_build_t *b = arg;
    tf_slave_t *s = b->s;
    (void)result;
    b->running = false;
    b->paused = false;
    s->nrunning--;
    if (b->abandoned && s->nkilling > 0)
        s->nkilling--;
    /* The runner is still on the stack: free it on the next loop turn
     * (which also starts a held build_start, now that a slot is free). */
    uv_timer_start(&s->reap_timer, tf__reap_cb, 0, 0);
}

/* ---- messages from the master ------------------------------------------- */

/* Answers a build_start we will not run with one build_finished of result
 * (RETRY: the master requeues it; CANCELLED: it was aborted before it
 * started), through the spool like any event. */
static void tf__end_unstarted(tf_slave_t *s, const tf_msg_t *m,
                              tf_result_t result, const char *why)
{
    const uint64_t id = m->u.build_start.build_id;
    tf_build_t *b = tf__build_new(s, id, m->u.build_start.builder,
                                  m->u.build_start.number);
    tf_warn("slave", "build %llu (%s #%llu) %s: %s: reporting %s",
            (unsigned long long)id, m->u.build_start.builder,
            (unsigned long long)m->u.build_start.number,
            result == TF_RETRY ? "refused" : "not started", why,
            tf_result_name(result));
    if (!b) {
        tf__runtime_error(s);
        return;
    }
    snprintf(b->farm, sizeof b->farm, "%s", s->farm);
    int rc = tf_spool_create(s->spool_dir, id, b->builder, b->number,
                             b->farm, &b->spool);
    if (rc) {
        tf_error("spool", "cannot create the spool of build %llu in %s: %s",
                 (unsigned long long)id, s->spool_dir, tf_strerror(rc));
        tf__build_free(s, b);
        tf__runtime_error(s);
        return;
    }
    b->sendable = true;
    tf__insert(s, b);
    tf_msg_t f;
    memset(&f, 0, sizeof f);
    f.type = TF_MSG_BUILD_FINISHED;
    f.u.build_finished.build_id = id;
    f.u.build_finished.result = result;
    f.u.build_finished.time_ms = tf_now_ms();
    if (tf__append_event(b, &f))
        tf_conn_kick(s->conn);
}

/* Answers a build_start we will not run with one build_finished RETRY
 * (the master requeues it). */
static void tf__refuse_build(tf_slave_t *s, const tf_msg_t *m, const char *why)
{
    tf__end_unstarted(s, m, TF_RETRY, why);
}

/* Keeps build_start m until a slot frees (tf__start_held); one that
 * cannot be kept (out of memory) is refused as a full slave's would be. */
static void tf__hold_start(tf_slave_t *s, const tf_msg_t *m)
{
    char *text = NULL;
    size_t len = 0;
    tf_held_start_t *h = NULL;

    if (tf_msg_encode(m, &text, &len) == 0)
        h = malloc(sizeof(*h) + len);
    if (!h) {
        free(text);
        tf__refuse_build(s, m, "max_builds builds already running");
        return;
    }
    h->next = NULL;
    h->id = m->u.build_start.build_id;
    h->len = len;
    memcpy(h->text, text, len);
    free(text);
    if (!s->held_tail)
        s->held_tail = &s->held;
    *s->held_tail = h;
    s->held_tail = &h->next;
    tf_info("slave", "build %llu (%s #%llu) waits for the build the master "
            "abandoned to be killed", (unsigned long long)
            m->u.build_start.build_id, m->u.build_start.builder,
            (unsigned long long)m->u.build_start.number);
}

/* Frees the held build_starts (the link they came on went down: the
 * master ends those builds when this slave comes back without them). */
static void tf__drop_held(tf_slave_t *s)
{
    while (s->held) {
        tf_held_start_t *h = s->held;
        s->held = h->next;
        free(h);
    }
    s->held_tail = &s->held;
}

static void tf__on_build_start(tf_slave_t *s, const tf_msg_t *m);

/* Ends held build_starts unstarted with result (why in the log): the one
 * of build id (0: every one). Returns how many. */
static size_t tf__end_held(tf_slave_t *s, uint64_t id, tf_result_t result,
                           const char *why)
{
    size_t n = 0;
    tf_held_start_t **pp = &s->held;

    while (*pp) {
        tf_held_start_t *h = *pp;
        tf_msg_t m;
        char err[128];

        if (id && h->id != id) {
            pp = &h->next;
            continue;
        }
        *pp = h->next;
        if (tf_msg_decode(h->text, h->len, &m, err, sizeof(err)) == 0) {
            tf__end_unstarted(s, &m, result, why);
            tf_msg_clear(&m);
        } else {
            tf_error("slave", "a held build_start does not decode again: %s",
                     err);
        }
        free(h);
        n++;
    }
    s->held_tail = pp;
    return n;
}

/* Starts the held build_starts, oldest first, while slots are free (the
 * reaper, a loop turn after a build ended). */
static void tf__start_held(tf_slave_t *s)
{
    while (s->held && s->nrunning < s->cfg->max_builds) {
        tf_held_start_t *h = s->held;
        tf_msg_t m;
        char err[128];

        s->held = h->next;
        if (!s->held)
            s->held_tail = &s->held;
        if (tf_msg_decode(h->text, h->len, &m, err, sizeof(err)) == 0) {
            tf__on_build_start(s, &m);
            tf_msg_clear(&m);
        } else {
            tf_error("slave", "a held build_start does not decode again: %s",
                     err);
        }
        free(h);
    }
}

static void tf__on_build_start(tf_slave_t *s, const tf_msg_t *m)
{
    const uint64_t id = m->u.build_start.build_id;
    static const tf_runner_ops_t ops = {
        .event_cb = tf__run_event_cb,
        .output_cb = tf__run_output_cb,
        .done_cb = tf__run_done_cb,
    };

    if (tf__find(s, id)) {
        tf_warn("slave", "build_start for build %llu, which this slave already "
                "has: ignoring it", (unsigned long long)id);
        return;
    }
    if (s->state != TF_SLAVE_RUNNING) {
        tf__refuse_build(s, m, "the slave is shutting down");
        return;
    }
    if (s->nrunning >= s->cfg->max_builds &&
        s->nrunning - s->nkilling < s->cfg->max_builds) {
        /* A slot is held only by a build the master abandoned, whose
         * steps are being killed (a second or two): the master counts
         * the slot free already, so this start waits for it rather than
         * being refused (a RETRY, and a second build of the request). */
        tf__hold_start(s, m);
        return;
    }
    if (s->nrunning >= s->cfg->max_builds) {
        tf__refuse_build(s, m, "max_builds builds already running");
        return;
    }
    tf_build_t *b = tf__build_new(s, id, m->u.build_start.builder,
                                  m->u.build_start.number);
    if (!b) {
        tf__refuse_build(s, m, "out of memory");
        return;
    }
    tf__workdir_for(s, m->u.build_start.workdir, b->workdir,
                    sizeof b->workdir);
    int rc = tf_runner_new(&s->loop, s->cfg->basedir, b->workdir, m,
                           &s->src_ctx, &ops, b, &b->runner);
    if (rc) {
        tf__build_free(s, b);
        tf__refuse_build(s, m, tf_strerror(rc));
        return;
    }
    snprintf(b->farm, sizeof b->farm, "%s", s->farm);
    rc = tf_spool_create(s->spool_dir, id, b->builder, b->number, b->farm,
                         &b->spool);
    if (rc) {
        tf_error("spool", "cannot create the spool of build %llu in %s: %s",
                 (unsigned long long)id, s->spool_dir, tf_strerror(rc));
        tf__build_free(s, b);
        tf__runtime_error(s);
        return;
    }
    b->sendable = true;
    b->running = true;
    s->nrunning++;
    tf__insert(s, b);
    tf_info("slave", "build %llu (%s #%llu) starting: %zu steps in %s/%s",
            (unsigned long long)id, b->builder, (unsigned long long)b->number,
            m->u.build_start.nsteps, s->cfg->basedir, b->workdir);
    tf_runner_start(b->runner);
}

static void tf__on_build_abort(tf_slave_t *s, const tf_msg_t *m)
{
    char text[TF_PROTO_MAX_TEXTFIELD + 1];
    tf_build_t *b = tf__find(s, m->u.build_abort.build_id);
    if (!b && tf__end_held(s, m->u.build_abort.build_id, TF_CANCELLED,
                           "aborted by the master while it waited"))
        return;
    if (!b || !b->running) {
        tf_debug("slave", "build_abort for build %llu, which is not running: "
                 "ignored", (unsigned long long)m->u.build_abort.build_id);
        return;
    }
    tf_info("slave", "build %llu aborted by the master: %s",
            (unsigned long long)b->id, m->u.build_abort.reason);
    snprintf(text, sizeof text, "aborted: %s", m->u.build_abort.reason);
    tf_runner_abort(b->runner, TF_CANCELLED, text, true);
}

static void tf__on_ack(tf_slave_t *s, const tf_msg_t *m)
{
    tf_build_t *b = tf__find(s, m->u.ack.build_id);
    uint64_t seq = m->u.ack.seq;
    if (!b || !b->spool)
        return;
    if (seq > b->spool->last_seq) {
        tf_warn("slave", "ack for build %llu seq %llu, beyond the last event "
                "(%llu)", (unsigned long long)b->id, (unsigned long long)seq,
                (unsigned long long)b->spool->last_seq);
        seq = b->spool->last_seq;
    }
    if (seq > b->acked)
        b->acked = seq;
    tf__maybe_forget(s, b);
    tf__check_done(s);
}

static void tf__abandon(tf_slave_t *s, tf_build_t *b)
{
    tf_info("slave", "build %llu (%s #%llu): the master abandoned it: %s",
            (unsigned long long)b->id, b->builder,
            (unsigned long long)b->number,
            b->running ? "killing it and deleting its spool"
                       : "deleting its spool");
    b->abandoned = true;
    tf_spool_remove(b->spool);
    b->spool = NULL;
    if (b->running) {
        s->nkilling++;
        tf_runner_abort(b->runner, TF_CANCELLED, "abandoned by the master",
                        false);
    }
    else
        tf__maybe_forget(s, b);
}

/* ---- link callbacks ------------------------------------------------------ */

static size_t tf__conn_running_cb(void *arg, tf_running_t *out, size_t max)
{
    tf_slave_t *s = arg;
    size_t n = 0;
    for (tf_build_t *b = s->builds; b; b = b->next) {
        b->reported = false;
        b->sendable = false;
        if (!b->spool || b->abandoned)
            continue;
        if (n == max) {
            tf_warn("slave", "more than %zu builds in the spool: build %llu "
                    "waits for a later connection", max,
                    (unsigned long long)b->id);
            continue;
        }
        out[n].build_id = b->id;
        out[n].seq = b->spool->last_seq;
        snprintf(out[n].farm, sizeof out[n].farm, "%s", b->farm);
        b->reported = true;
        n++;
    }
    return n;
}

static void tf__conn_welcome_cb(void *arg, const tf_msg_t *m)
{
    tf_slave_t *s = arg;
    /* Patches of try jobs come from the master that sent the build. */
    tf__set_http_base(s, tf_conn_master(s->conn));
    /* Builds started on this link belong to its farm. */
    snprintf(s->farm, sizeof s->farm, "%s", m->u.welcome.farm);
    for (size_t i = 0; i < m->u.welcome.nresume; i++) {
        const tf_running_t *r = &m->u.welcome.resume[i];
        tf_build_t *b = tf__find(s, r->build_id);
        if (!b || !b->reported || !b->spool) {
            tf_warn("slave", "the master resumes build %llu, which we did not "
                    "report: ignored", (unsigned long long)r->build_id);
            continue;
        }
        uint64_t seq = r->seq;
        if (seq > b->spool->last_seq) {
            /* The master never does this (it abandons a build it holds
             * more events of than we do); numbering on from either side
             * would go wrong, so treat it as abandoned, as the protocol
             * says. */
            tf_warn("slave", "the master resumes build %llu after seq %llu, "
                    "beyond our last event %llu: dropping the build",
                    (unsigned long long)b->id, (unsigned long long)seq,
                    (unsigned long long)b->spool->last_seq);
            tf__abandon(s, b);
            continue;
        }
        if (seq > b->acked)
            b->acked = seq;
        int rc = tf_spool_seek_after(b->spool, seq);
        if (rc) {
            tf_error("spool", "build %llu: cannot read %s: %s",
                     (unsigned long long)b->id, b->spool->path,
                     tf_strerror(rc));
            tf__runtime_error(s);
            return;
        }
        b->sendable = true;
        tf_info("slave", "build %llu: resuming after seq %llu (%llu events "
                "to send, %llu bytes)", (unsigned long long)b->id,
                (unsigned long long)seq,
                (unsigned long long)(b->spool->last_seq - seq),
                (unsigned long long)tf_spool_unsent(b->spool));
    }
    for (size_t i = 0; i < m->u.welcome.nabandon; i++) {
        tf_build_t *b = tf__find(s, m->u.welcome.abandon[i]);
        if (b && b->reported && !b->abandoned)
            tf__abandon(s, b);
    }
    tf_build_t *b = s->builds;
    while (b) {
        tf_build_t *next = b->next;
        if (b->reported && !b->sendable && !b->abandoned)
            tf_warn("slave", "the master neither resumed nor abandoned build "
                    "%llu: holding its events until the next connection",
                    (unsigned long long)b->id);
        tf__maybe_forget(s, b);
        b = next;
    }
    tf_conn_kick(s->conn);
    tf__check_done(s);
}

static void tf__conn_message_cb(void *arg, const tf_msg_t *m)
{
    tf_slave_t *s = arg;
    switch (m->type) {
    case TF_MSG_BUILD_START: tf__on_build_start(s, m); break;
    case TF_MSG_BUILD_ABORT: tf__on_build_abort(s, m); break;
    case TF_MSG_ACK: tf__on_ack(s, m); break;
    default: break;
    }
}

/* Round robin: the first build after the one that sent last that has
 * something to send. One record per call. */
static int tf__conn_pull_cb(void *arg, uint8_t *buf, size_t cap, size_t *len,
                            bool *binary)
{
    tf_slave_t *s = arg;
    tf_build_t *pick = NULL, *first = NULL;
    for (tf_build_t *b = s->builds; b; b = b->next) {
        if (!b->sendable || !b->spool || tf_spool_unsent(b->spool) == 0)
            continue;
        if (!first)
            first = b;
        if (b->id > s->rr_last) {
            pick = b;
            break;
        }
    }
    if (!pick)
        pick = first;
    if (!pick)
        return 0;
    tf_rec_kind_t kind;
    uint64_t seq;
    int rc = tf_spool_peek(pick->spool, buf, cap, len, &kind, &seq);
    if (rc <= 0)
        return rc;
    tf_spool_advance(pick->spool, *len);
    *binary = kind == TF_REC_BINARY;
    s->rr_last = pick->id;
    if (pick->paused &&
        tf_spool_unsent(pick->spool) <= s->cfg->spool_max_unsent / 2) {
        pick->paused = false;
        tf_info("spool", "build %llu: sending caught up: resuming its output",
                (unsigned long long)pick->id);
        if (pick->running)
            tf_runner_resume(pick->runner);
    }
    return 1;
}

static void tf__conn_down_cb(void *arg)
{
    tf_slave_t *s = arg;
    tf__drop_held(s);
    for (tf_build_t *b = s->builds; b; b = b->next) {
        b->sendable = false;
        b->reported = false;
    }
}

static void tf__conn_fatal_cb(void *arg, int exit_code)
{
    tf_slave_t *s = arg;
    s->exit_code = exit_code;
    s->link_gone = true;
    if (s->state < TF_SLAVE_ABORTING)
        tf__begin_abort(s, "the master refused this slave");
    else
        tf__check_done(s);
}

/* ---- startup ------------------------------------------------------------- */

typedef struct {
    bool finished;
    bool step_open;
    uint32_t open_step;
    int64_t open_time_ms;
    uint64_t records;
} tf__recover_t;

static void tf__recover_scan_cb(void *arg, tf_rec_kind_t kind, uint64_t seq,
                                const char *data, size_t len)
{
    tf__recover_t *rs = arg;
    tf_msg_t m;
    (void)seq;
    rs->records++;
    if (kind != TF_REC_TEXT)
        return;
    if (tf_msg_decode(data, len, &m, NULL, 0))
        return;
    switch (m.type) {
    case TF_MSG_STEP_STARTED:
        rs->step_open = true;
        rs->open_step = m.u.step_started.step;
        rs->open_time_ms = m.u.step_started.time_ms;
        break;
    case TF_MSG_STEP_FINISHED:
        rs->step_open = false;
        break;
    case TF_MSG_BUILD_FINISHED:
        rs->finished = true;
        break;
    default:
        break;
    }
    tf_msg_clear(&m);
}

/* Loads one spool a previous instance left. A build without build_finished
 * was cut off by the slave's death: finish it as RETRY so the master learns
 * the outcome and requeues it. */
static int tf__recover_one(tf_slave_t *s, uint64_t id)
{
    tf__recover_t rs = {0};
    bool truncated = false;
    char *builder = NULL;
    char farm[TF_PROTO_FARM_MAX + 1];
    uint64_t number = 0;
    tf_build_t *b = NULL;
    int rc;

    tf_spool_read_meta(s->spool_dir, id, &builder, &number, farm);
    b = tf__build_new(s, id, builder, number);
    free(builder);
    if (!b)
        return TF_ENOMEM;
    snprintf(b->farm, sizeof b->farm, "%s", farm);
    rc = tf_spool_open(s->spool_dir, id, tf__recover_scan_cb, &rs, &truncated,
                       &b->spool);
    if (rc) {
        tf_error("spool", "cannot read the spool of build %llu: %s (left in "
                 "place)", (unsigned long long)id, tf_strerror(rc));
        tf__build_free(s, b);
        return 0;
    }
    if (truncated)
        tf_warn("spool", "build %llu: cut a torn record off the end of %s",
                (unsigned long long)id, b->spool->path);
    tf__insert(s, b);
    if (rs.finished) {
        b->finished = true;
        tf_info("spool", "build %llu (%s #%llu): %llu events from a previous "
                "run to deliver", (unsigned long long)id, b->builder,
                (unsigned long long)b->number,
                (unsigned long long)b->spool->last_seq);
        return 0;
    }
    tf_warn("spool", "build %llu (%s #%llu) was interrupted by a slave "
            "restart: reporting it RETRY", (unsigned long long)id, b->builder,
            (unsigned long long)b->number);
    if (rs.step_open) {
        tf_msg_t f;
        memset(&f, 0, sizeof f);
        f.type = TF_MSG_STEP_FINISHED;
        f.u.step_finished.build_id = id;
        f.u.step_finished.step = rs.open_step;
        f.u.step_finished.result = TF_RETRY;
        int64_t now = tf_now_ms();
        f.u.step_finished.duration_ms =
            now > rs.open_time_ms ? now - rs.open_time_ms : 0;
        f.u.step_finished.time_ms = now;
        f.u.step_finished.text = (char *)"slave restarted during the step";
        if (!tf__append_event(b, &f))
            return TF_EIO;
    }
    tf_msg_t bf;
    memset(&bf, 0, sizeof bf);
    bf.type = TF_MSG_BUILD_FINISHED;
    bf.u.build_finished.build_id = id;
    bf.u.build_finished.result = TF_RETRY;
    bf.u.build_finished.time_ms = tf_now_ms();
    if (!tf__append_event(b, &bf))
        return TF_EIO;
    return 0;
}

static int tf__recover(tf_slave_t *s)
{
    uint64_t *ids = NULL;
    size_t n = 0;
    int rc = tf_spool_list(s->spool_dir, &ids, &n);
    if (rc) {
        tf_error("spool", "cannot list %s: %s", s->spool_dir, tf_strerror(rc));
        return rc;
    }
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = tf__recover_one(s, ids[i]);
    free(ids);
    return rc;
}

static int tf__prepare_dirs(tf_slave_t *s)
{
    const char *dirs[] = {s->cfg->basedir, s->spool_dir, s->run_dir};
    for (size_t i = 0; i < 3; i++) {
        int rc = tf_mkdir_p(dirs[i], i == 0 ? 0755 : 0700);
        if (rc) {
            tf_error("slave", "cannot create %s: %s", dirs[i], tf_strerror(rc));
            return rc;
        }
    }
    return 0;
}

/* "ws://a/slave, ws://b/slave" (cut short with "..." past outlen). */
static void tf__masters_text(const tf_slave_config_t *cfg, char *out,
                             size_t outlen)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < cfg->nmasters && o < outlen; i++) {
        int w = snprintf(out + o, outlen - o, "%s%s", i ? ", " : "",
                         cfg->masters[i].url);
        if (w < 0 || (size_t)w >= outlen - o) {
            if (outlen > 4)
                memcpy(out + outlen - 4, "...", 4);
            return;
        }
        o += (size_t)w;
    }
}

/* Where the source step downloads patches: the HTTP side of master m. */
static void tf__set_http_base(tf_slave_t *s, const tf_slave_master_t *m)
{
    bool v6 = strchr(m->host, ':') != NULL;
    snprintf(s->http_base, sizeof s->http_base, "%s://%s%s%s:%d",
             m->tls ? "https" : "http", v6 ? "[" : "", m->host,
             v6 ? "]" : "", m->port);
}

static void tf__walk_report(uv_handle_t *h, void *arg)
{
    (void)arg;
    tf_warn("slave", "handle still open at exit: type %s%s",
            uv_handle_type_name(h->type), uv_is_closing(h) ? " (closing)" : "");
}

int tf_slave_run(const tf_slave_config_t *cfg)
{
    tf_slave_t s;
    int rc;
    bool loop_ok = false;
    static const tf_conn_ops_t conn_ops = {
        .running_cb = tf__conn_running_cb,
        .welcome_cb = tf__conn_welcome_cb,
        .message_cb = tf__conn_message_cb,
        .pull_cb = tf__conn_pull_cb,
        .down_cb = tf__conn_down_cb,
        .fatal_cb = tf__conn_fatal_cb,
        .is_ours_cb = tf__is_ours,
    };

    memset(&s, 0, sizeof s);
    s.cfg = cfg;
    s.state = TF_SLAVE_RUNNING;
    char masters[1024];
    tf__masters_text(cfg, masters, sizeof masters);
    tf_info("slave", "tf-slave %s starting: name %s, master%s %s, basedir %s, "
            "max_builds %u", TF_VERSION, cfg->name,
            cfg->nmasters > 1 ? "s (in failover order)" : "", masters,
            cfg->basedir, cfg->max_builds);
    if (cfg->ca_file && !cfg->any_tls)
        tf_warn("slave", "ca_file is ignored: no master URL is wss://");

    rc = tf_read_secret(cfg->secret_file, &s.secret);
    if (rc) {
        tf_error("slave", "cannot read the secret from %s: %s",
                 cfg->secret_file,
                 rc == TF_EINVAL ? "the first line is empty" : tf_strerror(rc));
        s.exit_code = TF_EXIT_CONFIG;
        goto out;
    }
    /* The source step re-executes this binary to download patches; resolve
     * it now, while /proc/self/exe still names the installed file. */
    ssize_t n = readlink("/proc/self/exe", s.self_exe, sizeof s.self_exe - 1);
    if (n <= 0) {
        tf_error("slave", "cannot find this program's path in /proc/self/exe");
        s.exit_code = TF_EXIT_RUNTIME;
        goto out;
    }
    s.self_exe[n] = '\0';
    tf__set_http_base(&s, &cfg->masters[0]);
    s.src_ctx.self_exe = s.self_exe;
    s.src_ctx.http_base = s.http_base;
    s.src_ctx.name = cfg->name;
    s.src_ctx.secret_file = cfg->secret_file;
    s.src_ctx.ca_file = cfg->ca_file;
    s.spool_dir = tf_path_join(cfg->basedir, ".spool");
    s.run_dir = tf_path_join(cfg->basedir, ".run");
    if (!s.spool_dir || !s.run_dir || tf__prepare_dirs(&s)) {
        s.exit_code = TF_EXIT_RUNTIME;
        goto out;
    }
    int killed = tf_runner_reap_leftovers(s.run_dir);
    if (killed)
        tf_warn("slave", "killed %d process groups left by a previous slave",
                killed);
    if (uv_loop_init(&s.loop) != 0) {
        tf_error("slave", "cannot initialise the event loop");
        s.exit_code = TF_EXIT_RUNTIME;
        goto out;
    }
    loop_ok = true;
    if (tf__recover(&s)) {
        s.exit_code = TF_EXIT_RUNTIME;
        goto out;
    }
    rc = tf_conn_new(&s.loop, cfg, s.secret, &conn_ops, &s, &s.conn);
    if (rc) {
        s.exit_code = TF_EXIT_RUNTIME;
        goto out;
    }
    uv_signal_init(&s.loop, &s.sig_term);
    uv_signal_init(&s.loop, &s.sig_int);
    uv_signal_init(&s.loop, &s.sig_hup);
    uv_timer_init(&s.loop, &s.ack_timer);
    uv_timer_init(&s.loop, &s.reap_timer);
    s.sig_term.data = s.sig_int.data = s.sig_hup.data = &s;
    s.ack_timer.data = s.reap_timer.data = &s;
    s.handles_open = true;
    uv_signal_start(&s.sig_term, tf__signal_cb, SIGTERM);
    uv_signal_start(&s.sig_int, tf__signal_cb, SIGINT);
    uv_signal_start(&s.sig_hup, tf__signal_cb, SIGHUP);

    tf_conn_start(s.conn);
    uv_run(&s.loop, UV_RUN_DEFAULT);
    tf_info("slave", "stopped (exit status %d)", s.exit_code);

out:
    tf__drop_held(&s);
    while (s.builds)
        tf__build_free(&s, s.builds);
    tf_conn_free(s.conn);
    if (loop_ok) {
        /* Anything left here is a bug; run once more so close callbacks of
         * handles closed on the way out can finish. */
        uv_run(&s.loop, UV_RUN_NOWAIT);
        if (uv_loop_close(&s.loop) != 0) {
            uv_walk(&s.loop, tf__walk_report, NULL);
            tf_error("slave", "event loop not clean at exit");
        }
    }
    if (s.secret) {
        explicit_bzero(s.secret, strlen(s.secret));
        free(s.secret);
    }
    free(s.spool_dir);
    free(s.run_dir);
    return s.exit_code;
}
