/*
 * store.c - the generic half of the storage interface: one writer thread
 * fed by a bounded queue of groups, completions back on the loop, reads
 * on libuv's thread pool; the engine (engine.h) does the database work.
 *
 * Threads and who owns what:
 *
 *   loop thread      submits groups (any thread may, in fact: the mail
 *                    sender does), runs every done callback and the
 *                    congestion callback, owns the uv_async_t, counts
 *                    in-flight reads, tears down.
 *   writer thread    hands batches to the engine's apply_batch; the
 *                    engine's write connection is its own until it exits.
 *   pool threads     run one query each through the engine.
 *
 * Everything the threads share (the pending and done lists, the byte
 * count, the health fields, the closing flag, the test hooks) is under
 * s->mu. No thread but the loop thread touches the loop, and the others
 * reach it only through uv_async_send(&s->async).
 *
 * Life of a group:
 *
 *   tf_store_submit ──> pending ──> (writer) batch ──> done ──> (loop) cb, free
 *                                      │    ^
 *                                      └────┘ database-wide failure: the
 *                                             same batch is retried with
 *                                             backoff
 *
 * A group is counted in queued_ops/queued_bytes from submission until the
 * loop thread has run its callback, because until then its memory is
 * held: that is the number the caps bound. Groups keep their submission
 * order through every list, so done callbacks run in submission order.
 *
 * Why one transaction per drained batch: a commit has a fixed price (with
 * sqlite's synchronous=NORMAL a WAL append, no fsync); batching makes the
 * cost per group a few microseconds however many slaves stream at once.
 * Each group runs under its own savepoint so one that fails on its own is
 * rolled back alone and its batch-mates still commit. A group made of
 * units (tf_wgroup_unit_end: the builds of a start batch) that fails on
 * its own is applied again right after, unit by unit (split_group), so
 * one bad unit does not take the others down.
 *
 * Errors of the whole database roll the batch back and the writer retries
 * the same batch, 0.1 s doubling to 10 s, until it commits. Nothing is
 * dropped: the queue fills, tf_store_submit returns TF_EFULL, the master
 * stops reading from slaves. The only path that loses writes is a
 * tf_store_close() while the database keeps failing: after a grace period
 * (30 s) the writer gives up and logs, at ERROR, how many were lost.
 *
 * Test hooks (store_internal.h, and in test builds the TF_TEST_STORE_FAIL
 * environment variable, see failure injection below) make chosen groups
 * fail, to drive the callers' failure paths with real processes.
 */
#include "store/store.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "store/engine.h"
#include "store/store_internal.h"
#include "store/store_sqlite.h"
#include "tf_err.h"

#define SUB "store"

#define DEFAULT_SOFT_BYTES ((size_t)32 << 20)
#define DEFAULT_HARD_BYTES ((size_t)256 << 20)
#define DEFAULT_READERS 4u
#define MAX_READERS 64u

/* A batch is everything queued, up to these caps: big enough that the
 * per-transaction cost vanishes, small enough that one transaction (and
 * the journal it writes) stays bounded and callbacks are not held back
 * for long. */
#define BATCH_MAX_OPS 10000u
#define BATCH_MAX_BYTES ((size_t)64 << 20)

#define BACKOFF_MIN_MS 100u
#define BACKOFF_MAX_MS 10000u
#define CLOSE_GRACE_MS 30000u

#define MAX_FAIL_RULES 8

typedef struct group_list {
    tf_wgroup_t *head;
    tf_wgroup_t *tail;
} group_list_t;

/* A failure injection rule: the nth group holding an op of kind fails. */
typedef struct fail_rule {
    tf_op_kind_t kind;
    unsigned long nth;
    unsigned long seen;
    tf_store_fail_t how;
} fail_rule_t;

struct tf_store {
    /* Set at open, read-only afterwards. */
    uv_loop_t *loop;
    char *path;
    size_t soft_bytes;
    size_t hard_bytes;
    tf_store_congestion_cb congestion_cb;
    void *congestion_arg;
    bool shared;
    void (*farm_cb)(void *arg, unsigned what);
    void *farm_arg;
    atomic_bool farm_pending; /* set by the engine's listener: another
                               * master committed something */
    atomic_uint farm_what;    /* ... TF_FARM_* of what it touched */
    int schema_version;
    unsigned close_grace_ms;
    const tf_engine_vt_t *vt;
    tf_engine_t *eng;
    pthread_t loop_thread;

    /* Loop thread only. */
    uv_async_t async;
    uint64_t generation; /* tf_store_generation */
    bool serving;
    bool congestion_reported;
    size_t reads_inflight;
    bool close_requested;
    bool finishing;
    bool delivering; /* in deliver: tf_store_deliver does not nest */
    void (*close_cb)(void *arg);
    void *close_arg;

    /* Writer thread only. */
    pthread_t writer;
    bool ckpt_held; /* the engine's checkpoints wait (engine.h) */
    char werr[256]; /* the message of the last failure */
    tf_retention_t wret;    /* the writer's copy of ret */
    uint64_t wret_version;

    /* Shared, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t wake; /* writer: groups queued, closing, hook changed */
    group_list_t pending;
    group_list_t done;
    atomic_bool done_ready; /* done holds groups: tf_store_deliver reads
                             * it without taking mu */
    size_t queued_ops;
    size_t queued_bytes;
    size_t queued_prompt; /* groups queued whose commit is awaited */
    bool congested;
    bool closing;
    uint64_t close_deadline_ms;
    bool writer_exited;
    bool gave_up;
    uint64_t batches;
    uint64_t ops_committed;
    bool failing;
    uint64_t failing_since_ms;
    char last_error[256];
    bool hook_pending;
    long hook_max_pages;
    tf_retention_t ret;   /* tf_store_set_retention */
    uint64_t maint_next_ms; /* when idle work may run next (engine.h) */
    uint64_t ret_version;
    uint64_t removals;    /* atomic: tf_store_removals */
    fail_rule_t rules[MAX_FAIL_RULES];
    size_t nrules;
};

typedef struct read_req {
    uv_work_t work;
    tf_store_t *s;
    tf_query_t *q;
    tf_store_done_cb done;
    void *arg;
    int rc;
    tf_q_sqlite_fn_t fnq; /* for tf_store_read */
} read_req_t;

static void report_congestion(tf_store_t *s);
static const tf_engine_vt_t *engine_for(const char *path);

tf_engine_net_t tf__engine_net;
static void maybe_finish_close(tf_store_t *s);

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void fmt_trunc(char *dst, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fmt_trunc(char *dst, size_t len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(dst, len, fmt, ap);
    va_end(ap);
}

static void list_append(group_list_t *l, tf_wgroup_t *g)
{
    g->next = NULL;
    if (l->tail)
        l->tail->next = g;
    else
        l->head = g;
    l->tail = g;
}

static void list_splice(group_list_t *l, tf_wgroup_t *first,
                        tf_wgroup_t *last)
{
    last->next = NULL;
    if (l->tail)
        l->tail->next = first;
    else
        l->head = first;
    l->tail = last;
}

/* ------------------------------------------------------------------ */
/* Failure injection (tests)                                           */
/* ------------------------------------------------------------------ */

/* Whether g fails by a rule, and how (under mu). A group is counted once
 * per rule whose kind it holds. */
static tf_store_fail_t injected(tf_store_t *s, tf_wgroup_t *g)
{
    tf_store_fail_t how = TF_STORE_FAIL_NONE;

    for (size_t i = 0; i < s->nrules; i++) {
        fail_rule_t *r = &s->rules[i];
        if (!tf__wgroup_has(g, r->kind))
            continue;
        if (++r->seen == r->nth && how == TF_STORE_FAIL_NONE) {
            how = r->how;
            /* Split into its units (tf_wgroup_unit_end), the group fails
             * in the unit holding the first such op only. */
            for (const tf_op_t *op = g->head; op; op = op->next)
                if (op->kind == r->kind) {
                    g->poison_op = op;
                    break;
                }
            tf_warn(SUB, "test hook: failing group %lu holding %s (%s)",
                    r->seen, tf__op_kind_name(r->kind),
                    how == TF_STORE_FAIL_FULL    ? "queue full"
                    : how == TF_STORE_FAIL_NOMEM ? "out of memory"
                                                 : "store error");
        }
    }
    return how;
}

int tf__store_test_fail(tf_store_t *s, const char *kind, unsigned long nth,
                        tf_store_fail_t how)
{
    tf_op_kind_t k = tf__op_kind_by_name(kind);
    int rc = 0;

    if (!k || nth == 0)
        return TF_EINVAL;
    pthread_mutex_lock(&s->mu);
    if (s->nrules == MAX_FAIL_RULES)
        rc = TF_E2BIG;
    else
        s->rules[s->nrules++] = (fail_rule_t){.kind = k, .nth = nth,
                                              .how = how};
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* TF_TEST_STORE_FAIL="KIND:N[:MODE],...": the Nth group holding an op of
 * KIND (an op name: output, build_create, build_finish, ...) fails;
 * MODE is "store" (the writer fails it: TF_ESTORE, the default), "full"
 * (tf_store_submit refuses it: TF_EFULL) or "nomem" (TF_ENOMEM). Only
 * builds with test hooks (meson -Dtest_hooks, on in debug and
 * debugoptimized builds) read it. */
int tf__store_test_fail_spec(tf_store_t *s, const char *spec)
{
    fail_rule_t rules[MAX_FAIL_RULES];
    char buf[512], *save = NULL;
    size_t n = 0;
    int rc = 0;

    if (!spec || !*spec || strlen(spec) >= sizeof(buf))
        return TF_EINVAL;
    snprintf(buf, sizeof(buf), "%s", spec);
    /* Every rule is checked before any is added: a bad string adds none. */
    for (char *rule = strtok_r(buf, ",", &save); rule;
         rule = strtok_r(NULL, ",", &save)) {
        char *n_s = strchr(rule, ':'), *mode, *end;
        tf_store_fail_t how = TF_STORE_FAIL_STORE;
        unsigned long nth;

        if (!n_s || n == MAX_FAIL_RULES)
            return TF_EINVAL;
        *n_s++ = '\0';
        mode = strchr(n_s, ':');
        if (mode) {
            *mode++ = '\0';
            if (strcmp(mode, "full") == 0)
                how = TF_STORE_FAIL_FULL;
            else if (strcmp(mode, "nomem") == 0)
                how = TF_STORE_FAIL_NOMEM;
            else if (strcmp(mode, "store") != 0)
                return TF_EINVAL;
        }
        errno = 0;
        nth = strtoul(n_s, &end, 10);
        if (errno || end == n_s || *end || nth == 0 ||
            !tf__op_kind_by_name(rule))
            return TF_EINVAL;
        rules[n++] = (fail_rule_t){.kind = tf__op_kind_by_name(rule),
                                   .nth = nth, .how = how};
    }
    if (n == 0)
        return TF_EINVAL;
    pthread_mutex_lock(&s->mu);
    if (s->nrules + n > MAX_FAIL_RULES) {
        rc = TF_E2BIG;
    } else {
        memcpy(s->rules + s->nrules, rules, n * sizeof(rules[0]));
        s->nrules += n;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Submitting                                                          */
/* ------------------------------------------------------------------ */

/* Queues g, or refuses it (TF_ESTATE closing, TF_EFULL past the hard
 * cap, or as a test hook says). On refusal the caller keeps g. */
static int enqueue(tf_store_t *s, tf_wgroup_t *g)
{
    bool wake_loop = false;
    int rc = 0;

    pthread_mutex_lock(&s->mu);
    if (s->closing) {
        rc = TF_ESTATE;
        goto out;
    }
    switch (s->nrules ? injected(s, g) : TF_STORE_FAIL_NONE) {
    case TF_STORE_FAIL_FULL:
        rc = TF_EFULL;
        goto out;
    case TF_STORE_FAIL_NOMEM:
        rc = TF_ENOMEM;
        goto out;
    case TF_STORE_FAIL_STORE:
        g->poisoned = true; /* the writer fails it without running it */
        break;
    default:
        break;
    }
    if (g->cost > s->hard_bytes || s->queued_bytes > s->hard_bytes - g->cost) {
        rc = TF_EFULL;
        goto out;
    }
    list_append(&s->pending, g);
    s->queued_prompt += g->prompt;
    s->queued_ops++;
    s->queued_bytes += g->cost;
    if (!s->congested && s->queued_bytes > s->soft_bytes) {
        s->congested = true;
        wake_loop = true; /* the loop thread reports it */
    }
    pthread_cond_signal(&s->wake);
out:
    pthread_mutex_unlock(&s->mu);
    if (wake_loop)
        uv_async_send(&s->async);
    return rc;
}

/* Whether g holds anything but progress: a log chunk, the event chain, a
 * slave heard from. Those are the writes that happen all the time and
 * change no cached answer (tf_store_generation). */
static bool changes_state(const tf_wgroup_t *g)
{
    for (const tf_op_t *op = g->head; op; op = op->next) {
        if (op->kind != TF_OP_OUTPUT && op->kind != TF_OP_BUILD_SEQ &&
            op->kind != TF_OP_SLAVE_SEEN)
            return true;
    }
    return false;
}

int tf_store_submit(tf_store_t *s, tf_wgroup_t *g, tf_store_done_cb cb,
                    void *arg)
{
    if (!g)
        return TF_ENOMEM;
    if (!s)
        return TF_EINVAL;
    if (g->failed)
        return TF_ENOMEM;
    g->cb = cb;
    g->arg = arg;
    g->rc = 0;
    g->poisoned = false;
    g->split = false;
    g->poison_op = NULL;
    bool moves = changes_state(g);
    g->changes_state = moves;
    /* Once queued, g is the writer's: it may be committed and freed on
     * the loop thread before enqueue returns (callers on other threads,
     * like the mail sender), so nothing of g is read after. */
    int rc = enqueue(s, g); /* refused: g stays the caller's */
    if (rc == 0 && moves)
        __atomic_add_fetch(&s->generation, 1, __ATOMIC_RELAXED);
    return rc;
}

uint64_t tf_store_generation(const tf_store_t *s)
{
    return __atomic_load_n(&s->generation, __ATOMIC_RELAXED);
}

void tf_store_touch(tf_store_t *s)
{
    __atomic_add_fetch(&s->generation, 1, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------ */
/* Writer thread                                                       */
/* ------------------------------------------------------------------ */

/* Applies the test hooks, if one changed. */
static void writer_apply_hooks(tf_store_t *s)
{
    bool pending;
    long pages;

    pthread_mutex_lock(&s->mu);
    pending = s->hook_pending;
    pages = s->hook_max_pages;
    s->hook_pending = false;
    pthread_mutex_unlock(&s->mu);
    if (pending && s->vt->set_max_pages)
        s->vt->set_max_pages(s->eng, pages);
}

static void timespec_at(uint64_t deadline_ms, struct timespec *ts)
{
    ts->tv_sec = (time_t)(deadline_ms / 1000u);
    ts->tv_nsec = (long)(deadline_ms % 1000u) * 1000000L;
}

/* Sleeps ms between retries. Wakes early when close is requested (so the
 * drain starts at once) or a test hook changed. */
static void writer_backoff(tf_store_t *s, unsigned ms)
{
    uint64_t until = mono_ms() + ms;
    struct timespec ts;
    bool was_closing;

    pthread_mutex_lock(&s->mu);
    was_closing = s->closing;
    if (was_closing && until > s->close_deadline_ms)
        until = s->close_deadline_ms;
    timespec_at(until, &ts);
    while (!s->hook_pending && s->closing == was_closing &&
           mono_ms() < until) {
        if (pthread_cond_timedwait(&s->wake, &s->mu, &ts) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&s->mu);
}

/* Runs the batch until it commits. Returns false only when the store is
 * closing, the database kept failing past the grace period, and the
 * writer gave up: then every group of the batch gets TF_ESTORE. */
static bool batch_commit(tf_store_t *s, tf_wgroup_t *first, size_t n)
{
    unsigned backoff = BACKOFF_MIN_MS, attempts = 0;
    uint64_t started = 0;
    size_t ok = 0;
    tf_wgroup_t *g;
    int ans;

    for (;;) {
        bool past_deadline;

        writer_apply_hooks(s);
        s->werr[0] = '\0';
        ans = s->vt->apply_batch(s->eng, first, n, s->werr, sizeof(s->werr));
        if (ans == TF_ENG_OK)
            break;
        if (ans == TF_ENG_RETRY_NOW)
            continue;
        attempts++;
        pthread_mutex_lock(&s->mu);
        if (!s->failing) {
            s->failing = true;
            s->failing_since_ms = mono_ms();
        }
        started = s->failing_since_ms;
        fmt_trunc(s->last_error, sizeof(s->last_error), "%s", s->werr);
        past_deadline = s->closing && mono_ms() >= s->close_deadline_ms;
        pthread_mutex_unlock(&s->mu);

        if (attempts == 1)
            tf_error(SUB,
                     "%s: a batch of %zu writes rolled back: %s; retrying, "
                     "writes queue up meanwhile",
                     s->path, n, s->werr);
        else
            tf_warn(SUB, "%s: still failing after %u attempts (%llu ms): %s",
                    s->path, attempts,
                    (unsigned long long)(mono_ms() - started), s->werr);
        if (past_deadline) {
            g = first;
            for (size_t i = 0; i < n; i++, g = g->next)
                g->rc = TF_ESTORE;
            return false;
        }
        writer_backoff(s, backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }

    g = first;
    for (size_t i = 0; i < n; i++, g = g->next)
        ok += g->rc == 0;
    pthread_mutex_lock(&s->mu);
    s->batches++;
    s->ops_committed += ok;
    s->failing = false;
    s->last_error[0] = '\0';
    pthread_mutex_unlock(&s->mu);
    if (attempts)
        tf_info(SUB, "%s: writes commit again after %u failed attempts "
                     "(%llu ms)",
                s->path, attempts, (unsigned long long)(mono_ms() - started));
    return true;
}

/* Applies again, one transaction with a savepoint each, the units of g
 * (tf_wgroup_unit_end), which failed on its own as a whole, and the ops
 * after its last unit as one more: each unit's outcome is its own. A
 * unit holding the op a test hook poisoned g for fails again; the
 * others run. Out of memory, g stays unsplit (every unit has g's
 * outcome). */
static void split_group(tf_store_t *s, tf_wgroup_t *g)
{
    size_t k = g->nunits + 1, m = 0;
    tf_wgroup_t **subs = calloc(k, sizeof(*subs));
    tf_op_t **cut = calloc(k, sizeof(*cut));
    tf_wunit_t *u;
    bool ok;

    if (!subs || !cut)
        goto out;
    for (size_t i = 0; i < k; i++)
        if (!(subs[i] = calloc(1, sizeof(*subs[i]))))
            goto out;
    for (u = g->units; u; u = u->next, m++) {
        subs[m]->head = u->first;
        subs[m]->tail = u->last;
    }
    if (g->units_tail->last != g->tail) {
        subs[m]->head = g->units_tail->last->next;
        subs[m]->tail = g->tail;
        m++;
    }
    /* Each piece ends at its own last op while it runs. */
    for (size_t i = 0; i < m; i++) {
        cut[i] = subs[i]->tail->next;
        subs[i]->tail->next = NULL;
        for (const tf_op_t *op = subs[i]->head; op; op = op->next) {
            subs[i]->nops++;
            if (op == g->poison_op)
                subs[i]->poisoned = true;
        }
        subs[i]->next = i + 1 < m ? subs[i + 1] : NULL;
    }
    tf_info(SUB, "%s: a group of %zu units failed: applying each alone",
            s->path, g->nunits);
    ok = batch_commit(s, subs[0], m);
    for (size_t i = 0; i < m; i++)
        subs[i]->tail->next = cut[i];
    m = 0;
    for (u = g->units; u; u = u->next, m++)
        u->rc = ok ? subs[m]->rc : TF_ESTORE;
    g->split = true;
out:
    for (size_t i = 0; subs && i < k; i++)
        free(subs[i]);
    free(subs);
    free(cut);
}

/* Takes the next batch off the pending list (under mu). */
static size_t take_batch(tf_store_t *s, tf_wgroup_t **first,
                         tf_wgroup_t **last)
{
    tf_wgroup_t *g = s->pending.head, *prev = NULL;
    size_t n = 0, bytes = 0;

    while (g && n < BATCH_MAX_OPS &&
           (n == 0 || bytes + g->cost <= BATCH_MAX_BYTES)) {
        bool prompt = g->prompt;
        s->queued_prompt -= prompt;
        bytes += g->cost;
        n++;
        prev = g;
        g = g->next;
        if (prompt)
            break; /* tf_wgroup_prompt: its commit is awaited */
    }
    *first = s->pending.head;
    *last = prev;
    s->pending.head = g;
    if (!g)
        s->pending.tail = NULL;
    prev->next = NULL;
    return n;
}

/* Called with mu held while nothing is queued: runs one unit of the
 * engine's idle work (engine.h, maintain) with mu released when it is
 * due, or sleeps until it is due or a group arrives. Idle work never
 * delays a group by more than one unit (a few milliseconds). */
static void writer_idle(tf_store_t *s)
{
    if (!s->vt->maintain) {
        pthread_cond_wait(&s->wake, &s->mu);
        return;
    }
    uint64_t now = mono_ms();
    if (now < s->maint_next_ms) {
        struct timespec ts;
        timespec_at(s->maint_next_ms, &ts);
        pthread_cond_timedwait(&s->wake, &s->mu, &ts);
        return;
    }
    if (s->wret_version != s->ret_version) {
        /* The retention changed (a config load): take a copy. */
        tf_retention_rule_t *rules =
            s->ret.n ? malloc(s->ret.n * sizeof(*rules)) : NULL;
        if (!s->ret.n || rules) {
            free(s->wret.rules);
            s->wret = s->ret;
            s->wret.rules = rules;
            if (rules)
                memcpy(rules, s->ret.rules, s->ret.n * sizeof(*rules));
            s->wret_version = s->ret_version;
        }
    }
    pthread_mutex_unlock(&s->mu);
    char err[256] = "";
    bool removed = false;
    int r = s->vt->maintain(s->eng, &s->wret, tf_now_ms(), &removed, err,
                            sizeof(err));
    if (removed)
        __atomic_add_fetch(&s->removals, 1, __ATOMIC_RELEASE);
    if (r < 0)
        tf_warn(SUB, "%s: idle work failed: %s", s->path, err);
    pthread_mutex_lock(&s->mu);
    if (r <= 0 && s->wret_version == s->ret_version)
        s->maint_next_ms = mono_ms() + TF_STORE_MAINT_IDLE_MS;
}

static uint64_t file_bytes(const char *path)
{
    uint64_t n = 0;
    char wal[4200];
    struct stat sb;
    if (stat(path, &sb) == 0)
        n += (uint64_t)sb.st_size;
    snprintf(wal, sizeof(wal), "%s-wal", path);
    if (stat(wal, &sb) == 0)
        n += (uint64_t)sb.st_size;
    return n;
}

int tf_store_vacuum(const char *path, const tf_retention_t *ret,
                    tf_vacuum_stats_t *st)
{
    const tf_engine_vt_t *vt = engine_for(path);
    tf_engine_t *e = NULL;
    int version = 0, rc;
    char err[256] = "";

    memset(st, 0, sizeof(*st));
    if (!vt || !vt->maintain || !vt->vacuum)
        return TF_EINVAL;
    st->bytes_before = file_bytes(path);
    rc = vt->open(path, 1, &e, &version);
    if (rc != 0)
        return rc;
    for (;;) {
        bool removed = false;
        int r = vt->maintain(e, ret, tf_now_ms(), &removed, err, sizeof(err));
        if (r < 0) {
            tf_error(SUB, "%s: %s", path, err);
            rc = r;
            goto out;
        }
        if (r == 0)
            break;
        st->units++;
        st->removed += removed;
    }
    rc = vt->vacuum(e, err, sizeof(err));
    if (rc != 0)
        tf_error(SUB, "%s: %s", path, err);
out:
    vt->close_writer(e);
    vt->destroy(e);
    st->bytes_after = file_bytes(path);
    return rc;
}

uint64_t tf_store_removals(const tf_store_t *s)
{
    return __atomic_load_n(&s->removals, __ATOMIC_ACQUIRE);
}

int tf_store_set_retention(tf_store_t *s, const tf_retention_t *r)
{
    tf_retention_rule_t *rules = NULL;
    if (r->n) {
        rules = malloc(r->n * sizeof(*rules));
        if (!rules)
            return TF_ENOMEM;
        memcpy(rules, r->rules, r->n * sizeof(*rules));
    }
    pthread_mutex_lock(&s->mu);
    free(s->ret.rules);
    s->ret = *r;
    s->ret.rules = rules;
    s->ret_version++;
    /* Run the idle work soon: the new rules may remove logs now. */
    s->maint_next_ms = 0;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* Tells the engine whether awaited commits (tf_wgroup_prompt) are in the
 * writer's hands, when that changes (engine.h, ckpt_hold). Writer
 * thread, mu not held. */
static void writer_hold_ckpt(tf_store_t *s, bool hold)
{
    if (hold == s->ckpt_held || !s->vt->ckpt_hold)
        return;
    s->ckpt_held = hold;
    s->vt->ckpt_hold(s->eng, hold);
}

static void *writer_main(void *arg)
{
    tf_store_t *s = arg;
    size_t lost = 0;

    /* Named so top, perf and bench_ingest.py tell the threads apart. */
    pthread_setname_np(pthread_self(), "tf-writer");
    for (;;) {
        tf_wgroup_t *first, *last;
        bool gave_up;
        size_t n;

        pthread_mutex_lock(&s->mu);
        while (!s->pending.head && !s->closing) {
            if (s->ckpt_held) {
                pthread_mutex_unlock(&s->mu);
                writer_hold_ckpt(s, false);
                pthread_mutex_lock(&s->mu);
                continue;
            }
            writer_idle(s);
        }
        if (!s->pending.head) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        n = take_batch(s, &first, &last);
        /* Checkpoints wait while awaited commits are in this batch (a
         * prompt group ends one) or queued behind it. */
        bool hold = last->prompt || s->queued_prompt > 0;
        gave_up = s->gave_up;
        pthread_mutex_unlock(&s->mu);
        writer_hold_ckpt(s, hold);

        if (gave_up) {
            for (tf_wgroup_t *g = first; g; g = g->next)
                g->rc = TF_ESTORE;
            lost += n;
        } else if (!batch_commit(s, first, n)) {
            lost += n;
            gave_up = true;
        } else {
            for (tf_wgroup_t *g = first; g; g = g->next)
                if (g->rc != 0 && g->nunits > 1 && !g->keep)
                    split_group(s, g);
        }

        pthread_mutex_lock(&s->mu);
        if (gave_up)
            s->gave_up = true;
        list_splice(&s->done, first, last);
        atomic_store(&s->done_ready, true);
        pthread_mutex_unlock(&s->mu);
        uv_async_send(&s->async);
    }

    if (lost)
        tf_error(SUB,
                 "%s: closing while the database keeps failing (%s): gave "
                 "up after %u ms and LOST %zu queued writes",
                 s->path, s->last_error, s->close_grace_ms, lost);
    s->vt->close_writer(s->eng);

    pthread_mutex_lock(&s->mu);
    s->writer_exited = true;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Loop thread: completions, congestion, teardown                      */
/* ------------------------------------------------------------------ */

static void report_congestion(tf_store_t *s)
{
    bool c;

    pthread_mutex_lock(&s->mu);
    c = s->congested;
    pthread_mutex_unlock(&s->mu);
    if (c != s->congestion_reported) {
        s->congestion_reported = c;
        tf_info(SUB, "write queue %s", c ? "congested" : "drained");
        if (s->congestion_cb)
            s->congestion_cb(s->congestion_arg, c);
    }
}

static void free_store(tf_store_t *s)
{
    free(s->ret.rules);
    free(s->wret.rules);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    free(s->path);
    free(s);
}

static void on_async_closed(uv_handle_t *h)
{
    tf_store_t *s = h->data;
    void (*cb)(void *) = s->close_cb;
    void *arg = s->close_arg;

    free_store(s);
    if (cb)
        cb(arg);
}

/* The last step of closing, once the writer has exited, every done
 * callback has run and no read is in flight. */
static void maybe_finish_close(tf_store_t *s)
{
    bool exited;

    if (!s->close_requested || s->finishing || s->reads_inflight)
        return;
    pthread_mutex_lock(&s->mu);
    exited = s->writer_exited && !s->done.head;
    pthread_mutex_unlock(&s->mu);
    if (!exited)
        return;
    s->finishing = true;
    pthread_join(s->writer, NULL);
    s->vt->destroy(s->eng);
    s->eng = NULL;
    uv_close((uv_handle_t *)&s->async, on_async_closed);
}

/* The engine's listener thread: another master changed the queue. */
static void farm_notify(void *arg, unsigned what)
{
    tf_store_t *s = arg;
    atomic_fetch_or(&s->farm_what, what);
    atomic_store(&s->farm_pending, true);
    uv_async_send(&s->async);
}

int tf_store_reserve_ids(tf_store_t *s, uint64_t *first)
{
    if (!s->shared || !s->vt->reserve_ids)
        return TF_ESTATE;
    return s->vt->reserve_ids(s->eng, first);
}

bool tf_store_has_duty(tf_store_t *s)
{
    return !s->shared || !s->vt->has_duty || s->vt->has_duty(s->eng);
}

bool tf_store_is_shared(const tf_store_t *s)
{
    return s->shared;
}

const char *tf_store_owner(const tf_store_t *s)
{
    const char *o = s->shared && s->vt->owner ? s->vt->owner(s->eng) : NULL;
    return o ? o : "";
}

int tf_store_farm_send(tf_store_t *s, const char *topic, const char *text)
{
    if (!s->shared || !s->vt->farm_send)
        return TF_ESTATE;
    return s->vt->farm_send(s->eng, topic, text);
}

void tf_store_farm_stats(tf_store_t *s, tf_store_farm_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (s->shared && s->vt->farm_stats)
        s->vt->farm_stats(s->eng, out);
}

void tf_store_farm_take(tf_store_t *s,
                        void (*fn)(void *arg, const char *topic,
                                   const char *text),
                        void *arg)
{
    char *ev;

    if (!s->shared || !s->vt->farm_take)
        return;
    while ((ev = s->vt->farm_take(s->eng)) != NULL) {
        char *nl = strchr(ev, '\n');
        if (nl) {
            *nl = '\0';
            fn(arg, ev, nl + 1);
        }
        free(ev);
    }
}

/* Runs the callbacks of the groups the writer has finished, and what
 * else the writer or the farm listener woke the loop for. */
static void deliver(tf_store_t *s)
{
    tf_wgroup_t *g, *next;

    s->delivering = true;
    pthread_mutex_lock(&s->mu);
    g = s->done.head;
    s->done.head = s->done.tail = NULL;
    atomic_store(&s->done_ready, false);
    pthread_mutex_unlock(&s->mu);

    report_congestion(s); /* a rise seen by a submit */
    /* Another master's commit: answers cached on the generation are
     * stale (the API's cache), and its new requests are to be seen. */
    if (atomic_exchange(&s->farm_pending, false)) {
        __atomic_add_fetch(&s->generation, 1, __ATOMIC_RELAXED);
        unsigned what = atomic_exchange(&s->farm_what, 0);
        if (what && s->farm_cb)
            s->farm_cb(s->farm_arg, what);
    }

    /* Account for the whole list before the callbacks run, so writes they
     * submit see the room these groups leave. The groups themselves are
     * freed after their callbacks: a callback may still read memory of
     * its group (tf_wgroup_alloc). */
    size_t n = 0, bytes = 0;
    for (next = g; next; next = next->next) {
        n++;
        bytes += next->cost;
    }
    pthread_mutex_lock(&s->mu);
    s->queued_ops -= n;
    s->queued_bytes -= bytes;
    if (s->congested && s->queued_bytes < s->soft_bytes / 2)
        s->congested = false;
    pthread_mutex_unlock(&s->mu);
    report_congestion(s);

    for (; g; g = next) {
        tf_store_done_cb cb = g->cb;
        bool keep = g->keep && g->rc != 0;

        next = g->next;
        g->next = NULL;
        if (g->changes_state)
            /* committed (or failed): readers see it now */
            __atomic_add_fetch(&s->generation, 1, __ATOMIC_RELAXED);
        if (cb)
            cb(g->arg, g->rc);
        if (!keep)
            tf_wgroup_free(g);
    }
    report_congestion(s); /* callbacks may have queued more */
    s->delivering = false;
    maybe_finish_close(s);
}

static void on_async(uv_async_t *h)
{
    tf_store_t *s = h->data;

    if (!s->finishing)
        deliver(s);
}

void tf_store_deliver(tf_store_t *s)
{
    /* One atomic load when nothing is done: the caller may ask between
     * any two messages. Not once closing has begun: the close finishes
     * from on_async alone, outside whatever the caller is in. */
    if (s->close_requested || s->finishing || s->delivering ||
        !atomic_load(&s->done_ready))
        return;
    deliver(s);
}

void tf_store_close(tf_store_t *s, void (*cb)(void *arg), void *arg)
{
    assert(s && !s->close_requested);
    s->close_requested = true;
    s->close_cb = cb;
    s->close_arg = arg;
    pthread_mutex_lock(&s->mu);
    s->closing = true;
    s->close_deadline_ms = mono_ms() + s->close_grace_ms;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
    /* The writer drains, exits and wakes on_async, which finishes. */
}

/* ------------------------------------------------------------------ */
/* Health                                                              */
/* ------------------------------------------------------------------ */

void tf_store_health(tf_store_t *s, tf_store_health_t *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&s->mu);
    out->queued_ops = s->queued_ops;
    out->queued_bytes = s->queued_bytes;
    out->congested = s->congested;
    out->batches = s->batches;
    out->ops = s->ops_committed;
    if (s->failing) {
        uint64_t d = mono_ms() - s->failing_since_ms;
        /* Never 0 while failing: 0 means healthy. */
        out->failing_for_ms = d == 0 ? 1 : d > UINT_MAX ? UINT_MAX
                                                        : (unsigned)d;
    }
    snprintf(out->last_error, sizeof(out->last_error), "%s", s->last_error);
    pthread_mutex_unlock(&s->mu);
}

int tf_store_schema_version(tf_store_t *s)
{
    return s->schema_version;
}

void tf_store_serving(tf_store_t *s)
{
    s->serving = true;
}

/* ------------------------------------------------------------------ */
/* Reads                                                               */
/* ------------------------------------------------------------------ */

static void read_work(uv_work_t *w)
{
    read_req_t *r = w->data;
    r->rc = r->s->vt->query(r->s->eng, r->q);
}

static void read_after(uv_work_t *w, int status)
{
    read_req_t *r = w->data;
    tf_store_t *s = r->s;
    tf_store_done_cb done = r->done;
    void *arg = r->arg;
    int rc = status == UV_ECANCELED ? TF_ESTATE : r->rc;

    free(r);
    s->reads_inflight--;
    if (done)
        done(arg, rc);
    maybe_finish_close(s);
}

static int queue_read(tf_store_t *s, read_req_t *r)
{
    int rc;

    r->work.data = r;
    r->s = s;
    rc = uv_queue_work(s->loop, &r->work, read_work, read_after);
    if (rc != 0)
        return rc;
    s->reads_inflight++;
    return 0;
}

int tf_store_query(tf_store_t *s, tf_query_t *q, tf_store_done_cb done,
                   void *arg)
{
    read_req_t *r;
    int rc;

    if (!s || !q)
        return TF_EINVAL;
    if (s->close_requested)
        return TF_ESTATE;
    r = calloc(1, sizeof(*r));
    if (!r)
        return TF_ENOMEM;
    r->q = q;
    r->done = done;
    r->arg = arg;
    rc = queue_read(s, r);
    if (rc != 0)
        free(r);
    return rc;
}

/* A synchronous read on the loop thread while the master serves would
 * stall every slave and viewer for as long as the query takes. */
static void check_not_serving(tf_store_t *s)
{
    if (s->serving && pthread_equal(pthread_self(), s->loop_thread)) {
        tf_error(SUB, "a synchronous read on the loop thread while serving "
                      "(a bug: it blocks the loop)");
        assert(!"synchronous store read on the serving loop thread");
    }
}

int tf_store_query_sync(tf_store_t *s, tf_query_t *q)
{
    if (!s || !q || !s->eng)
        return TF_EINVAL;
    check_not_serving(s);
    return s->vt->query(s->eng, q);
}

int tf_store_read(tf_store_t *s, tf_store_read_fn fn, tf_store_done_cb done,
                  void *arg)
{
    read_req_t *r;
    int rc;

    if (!s || !fn)
        return UV_EINVAL;
    if (s->close_requested)
        return TF_ESTATE;
    r = calloc(1, sizeof(*r));
    if (!r)
        return UV_ENOMEM;
    r->fnq.q.kind = TF_Q_SQLITE_FN;
    r->fnq.fn = fn;
    r->fnq.arg = arg;
    r->q = &r->fnq.q;
    r->done = done;
    r->arg = arg;
    rc = queue_read(s, r);
    if (rc != 0)
        free(r);
    return rc;
}

int tf_store_read_sync(tf_store_t *s, tf_store_read_fn fn, void *arg)
{
    tf_q_sqlite_fn_t q = {.q.kind = TF_Q_SQLITE_FN, .fn = fn, .arg = arg};

    if (!fn)
        return TF_EINVAL;
    return tf_store_query_sync(s, &q.q);
}

/* ------------------------------------------------------------------ */
/* Opening                                                             */
/* ------------------------------------------------------------------ */

static int start_writer(tf_store_t *s)
{
    sigset_t all, old;
    int err;

    /* Signals belong to the loop thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&s->writer, NULL, writer_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        tf_error(SUB, "cannot start the writer thread: %s", strerror(err));
        return -err;
    }
    return 0;
}

static int init_sync(tf_store_t *s)
{
    pthread_condattr_t ca;

    if (pthread_condattr_init(&ca) != 0)
        return TF_ENOMEM;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, &ca);
    pthread_condattr_destroy(&ca);
    return 0;
}

static void on_failed_open_closed(uv_handle_t *h)
{
    free_store(h->data);
}

static void read_test_hooks(tf_store_t *s)
{
#ifdef TF_TEST_HOOKS
    const char *spec = getenv("TF_TEST_STORE_FAIL");

    if (spec && *spec) {
        if (tf__store_test_fail_spec(s, spec) != 0)
            tf_error(SUB, "TF_TEST_STORE_FAIL=\"%s\" is not KIND:N[:MODE],... "
                          "(ignored where it stopped making sense)",
                     spec);
        else
            tf_warn(SUB, "test hook TF_TEST_STORE_FAIL=\"%s\": chosen writes "
                         "will fail", spec);
    }
#else
    (void)s;
#endif
}

/* The engine for a database setting: a postgresql:// or postgres://
 * URL is PostgreSQL's (when this build has it), any other URL no
 * engine's, and a file path sqlite's. */
static const tf_engine_vt_t *engine_for(const char *path)
{
    if (strncmp(path, "postgresql://", 13) == 0 ||
        strncmp(path, "postgres://", 11) == 0) {
#ifdef TF_HAVE_POSTGRESQL
        return &tf_engine_pg;
#else
        return NULL;
#endif
    }
    if (strstr(path, "://"))
        return NULL;
    return &tf_engine_sqlite;
}

int tf_store_check(const char *path, bool full,
                   void (*line)(void *arg, const char *text), void *arg)
{
    const tf_engine_vt_t *vt = path ? engine_for(path) : NULL;

    if (!vt)
        return TF_EINVAL;
    if (!vt->check)
        return TF_ESTATE;
    return vt->check(path, full, line, arg);
}
#ifndef TF_HAVE_POSTGRESQL
int tf_store_copy_sqlite(const char *sqlite_path, const char *url,
                         uint64_t *rows, char *msg, size_t msglen)
{
    (void)sqlite_path;
    (void)url;
    *rows = 0;
    snprintf(msg, msglen, "this tf-master was built without PostgreSQL "
                          "(meson -Dpostgresql=enabled with libpq-dev)");
    return TF_EINVAL;
}
#endif

void tf_store_display(const char *path, char *out, size_t len)
{
    const char *auth = strstr(path, "://");
    const char *at = auth ? strchr(auth + 3, '@') : NULL;
    const char *colon = at ? memchr(auth + 3, ':', (size_t)(at - auth - 3))
                           : NULL;

    if (!colon)
        snprintf(out, len, "%s", path);
    else
        snprintf(out, len, "%.*s:***%s", (int)(colon - path), path, at);
}

/* A copy of the database setting for logs (tf_store_display). */
static char *shown_path(const char *path)
{
    const char *auth = strstr(path, "://");
    const char *at = auth ? strchr(auth + 3, '@') : NULL;
    const char *colon = at ? memchr(auth + 3, ':', (size_t)(at - auth - 3))
                           : NULL;
    char *out;

    if (!colon)
        return strdup(path);
    out = malloc(strlen(path) + 4);
    if (out)
        sprintf(out, "%.*s:***%s", (int)(colon - path), path, at);
    return out;
}

int tf_store_open(uv_loop_t *loop, const char *path,
                  const tf_store_opts_t *opts, tf_store_t **out)
{
    const tf_engine_vt_t *vt;
    tf_store_t *s;
    unsigned nreaders;
    int rc;

    if (!loop || !path || !out)
        return TF_EINVAL;
    vt = engine_for(path);
    if (!vt) {
#ifdef TF_HAVE_POSTGRESQL
        tf_error(SUB, "%s: no storage engine for this URL (a database is "
                      "a path to an sqlite file or a postgresql:// URL)",
                 path);
#else
        tf_error(SUB, "%s: no storage engine for this URL in this build "
                      "(a database is a path to an sqlite file; this "
                      "tf-master was built without PostgreSQL: meson "
                      "-Dpostgresql=enabled with libpq-dev)",
                 path);
#endif
        return TF_EINVAL;
    }
    s = calloc(1, sizeof(*s));
    if (!s)
        return TF_ENOMEM;
    if (init_sync(s) != 0) {
        free(s);
        return TF_ENOMEM;
    }
    s->loop = loop;
    s->loop_thread = pthread_self();
    s->vt = vt;
    s->close_grace_ms = CLOSE_GRACE_MS;
    s->soft_bytes = opts && opts->queue_soft_bytes ? opts->queue_soft_bytes
                                                   : DEFAULT_SOFT_BYTES;
    s->hard_bytes = opts && opts->queue_hard_bytes ? opts->queue_hard_bytes
                                                   : DEFAULT_HARD_BYTES;
    if (s->soft_bytes > s->hard_bytes)
        s->soft_bytes = s->hard_bytes;
    nreaders = opts && opts->readers ? opts->readers : DEFAULT_READERS;
    if (nreaders > MAX_READERS)
        nreaders = MAX_READERS;
    if (opts) {
        s->congestion_cb = opts->congestion_cb;
        s->congestion_arg = opts->congestion_arg;
        s->shared = opts->exclusive && opts->shared;
        s->farm_cb = opts->farm_cb;
        s->farm_arg = opts->farm_arg;
        tf__engine_net = (tf_engine_net_t){
            .keepalive_idle_s = opts->keepalive_idle_s,
            .keepalive_interval_s = opts->keepalive_interval_s,
            .keepalive_count = opts->keepalive_count,
            .lease_timeout_s = opts->lease_timeout_s,
        };
    }
    s->path = shown_path(path);
    if (!s->path) {
        rc = TF_ENOMEM;
        goto out;
    }
    rc = s->vt->open(path, nreaders, &s->eng, &s->schema_version);
    if (rc != 0)
        goto out;
    if (opts && opts->exclusive && s->vt->claim) {
        rc = s->vt->claim(s->eng, opts->standby, opts->shared);
        if (rc != 0)
            goto out;
    }

    rc = uv_async_init(loop, &s->async, on_async);
    if (rc != 0) {
        tf_error(SUB, "uv_async_init: %s", uv_strerror(rc));
        goto out;
    }
    s->async.data = s;
    read_test_hooks(s);
    rc = start_writer(s);
    if (rc != 0) {
        /* The handle is on the loop now: s is freed in its close cb. */
        s->vt->close_writer(s->eng);
        s->vt->destroy(s->eng);
        s->eng = NULL;
        uv_close((uv_handle_t *)&s->async, on_failed_open_closed);
        return rc;
    }
    if (opts && opts->exclusive && opts->shared && s->vt->watch &&
        s->vt->watch(s->eng, farm_notify, s) != 0)
        tf_error(SUB, "%s: cannot watch the other masters: this master "
                 "sees their requests only at its next restart", s->path);
    tf_info(SUB, "%s: open (%s) at schema version %d, %u readers", s->path,
            s->vt->name, s->schema_version, nreaders);
    *out = s;
    return 0;

out:
    if (s->eng)
        s->vt->destroy(s->eng);
    free_store(s);
    return rc;
}

/* ------------------------------------------------------------------ */
/* What the engines share                                              */
/* ------------------------------------------------------------------ */

void tf__engine_hole(tf_engine_holes_t *h, uint64_t build_id, unsigned step,
                     uint64_t at)
{
    if (h->n++ == 0) {
        h->build = build_id;
        h->step = step;
        h->at = at;
    }
    tf_debug(SUB, "build %" PRIu64 " step %u: its log has a hole at byte %"
                  PRIu64 "; left unsealed", build_id, step, at);
}

void tf__engine_holes_report(tf_engine_holes_t *h)
{
    if (h->n == h->said) {
        h->n = 0;
        return;
    }
    h->said = h->n;
    if (h->n == 0)
        return;
    tf_warn(SUB, "the idle sealing walk left %" PRIu64 " step log%s "
                 "unsealed: a hole in the stored output (the first: build %"
                 PRIu64 " step %u at byte %" PRIu64 ")",
            h->n, h->n == 1 ? "" : "s", h->build, h->step, h->at);
    h->n = 0;
}

const tf_retention_rule_t *tf__retention_rule_for(const tf_retention_t *ret,
                                                  const char *builder)
{
    for (size_t i = 0; i < ret->n; i++)
        if (strcmp(ret->rules[i].builder, builder) == 0)
            return &ret->rules[i];
    return &ret->dflt;
}

bool tf__retention_limits(const tf_retention_rule_t *r)
{
    return r->log_days > 0 || r->log_builds > 0 || r->log_bytes > 0;
}

/* ------------------------------------------------------------------ */
/* Test hooks                                                          */
/* ------------------------------------------------------------------ */

void tf__store_test_hook_set_max_pages(tf_store_t *s, long pages)
{
    pthread_mutex_lock(&s->mu);
    s->hook_max_pages = pages;
    s->hook_pending = true;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void tf__store_test_hook_set_close_grace_ms(tf_store_t *s, unsigned ms)
{
    s->close_grace_ms = ms;
}
