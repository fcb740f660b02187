/*
 * poller.c - git pollers: new commits on a branch become changes (see
 * poller.h for the contract).
 *
 * A poll is a short chain of git commands, each a child process started
 * with uv_spawn whose stdout and stderr are collected (capped) on the loop
 * thread, with a timeout that kills the child's whole process group:
 *
 *   IDLE --due--> [INIT: git init --bare, only when the mirror is missing]
 *        --> FETCH: git fetch REPO +refs/heads/B:refs/heads/B
 *        --> HEAD: git rev-parse refs/heads/B     (same as last: IDLE)
 *        --> CHECK: git cat-file -e LAST          (only when LAST is known)
 *        --> LOG: git log LAST..B (or -1 B on the first poll)
 *        --> COMMIT: changes + last_revision stored in one savepoint
 *        --> IDLE
 *
 * Any failure goes back to IDLE with the poller marked failing and its next
 * poll pushed out by a doubling backoff. Pollers of one repository share a
 * mirror, so they take turns: a poller waits while another one of its
 * mirror is not IDLE. Every state change goes through poller_set_state.
 *
 * Change ids come from sqlite (the writer thread inserts and reports them
 * back), so a commit already known on the branch (the branch was reset and
 * moved forward again) keeps its change and is not news.
 */
#include "changes/poller.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <uv.h>

#include "buf.h"
#include "clock.h"
#include "crypto.h"
#include "log.h"
#include "core/master.h"
#include "names.h"
#include "changes/schedulers.h"
#include "tf_err.h"
#include "utf8.h"
#include "util.h"

#define POLL_TICK_MS 250
#define GIT_OUT_MAX (16u * 1024 * 1024)
#define GIT_SMALL_OUT_MAX 4096
#define GIT_ERR_MAX 4096
#define GIT_FETCH_TIMEOUT_MS (600 * 1000)
#define GIT_LOCAL_TIMEOUT_MS (120 * 1000)
#define GIT_KILL_GRACE_MS 5000
#define POLL_MAX_COMMITS 200
#define BACKOFF_CAP_MS (10 * 60 * 1000)

extern char **environ;

char *tf_mirror_name(const char *repository)
{
    char hex[65];
    char clean[81];
    size_t o = 0;
    tf_sha256_hex(repository, strlen(repository), hex);
    for (const char *p = repository; *p && o < sizeof(clean) - 1; p++) {
        char ch = *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
                  ch == '-';
        ch = ok ? ch : '_';
        if (ch == '_' && o > 0 && clean[o - 1] == '_')
            continue;
        clean[o++] = ch;
    }
    clean[o] = '\0';
    /* Never "." or ".." or a hidden name: start with a letter. */
    size_t skip = strspn(clean, "._-");
    size_t len = strlen(clean + skip) + 3 + 12 + 6;
    char *out = malloc(len);
    if (out)
        snprintf(out, len, "r-%s-%.12s.git", clean + skip, hex);
    return out;
}

/* ------------------------------------------------------------------ */
/* Pollers                                                             */
/* ------------------------------------------------------------------ */

typedef enum {
    P_IDLE = 0,
    P_INIT,
    P_FETCH,
    P_HEAD,
    P_CHECK,
    P_LOG,
    P_COMMIT,
} pstate_t;

static const char *const pstate_names[] = {
    "idle", "init", "fetch", "head", "check", "log", "commit",
};

typedef enum { H_NEW = 0, H_OK, H_FAILING } health_t;

typedef struct gitrun gitrun_t;
typedef struct tf_poller tf_poller_t;

typedef void (*gitrun_cb)(tf_poller_t *p, gitrun_t *g);

/* One git child process. Its four handles (process, two pipes, timer) are
 * closed together once the child exited and both pipes reached EOF; the
 * struct is freed in the last close callback (libuv's rule). */
struct gitrun {
    uv_process_t proc;
    uv_pipe_t out;
    uv_pipe_t err;
    uv_timer_t timer;
    int open_handles;
    bool exited, out_eof, err_eof, finished, killed;
    int64_t exit_status;
    int term_signal;
    bool timed_out;
    bool over_cap;
    size_t out_cap;
    tf_buf_t obuf;
    tf_buf_t ebuf;
    tf_poller_t *p; /* NULL once nobody waits for it */
    gitrun_cb cb;
    char rbuf[64 * 1024];
};

struct tf_poller {
    tf_master_t *m;
    char *repository;
    char *branch;
    char *mirror; /* absolute path */
    uint32_t interval_s;
    pstate_t state;
    health_t health;
    bool retired; /* dropped from the config; freed when IDLE */
    bool loaded;  /* its pollers row was read */
    char *last_revision; /* newest recorded, NULL before the first poll */
    char head[65];       /* the fetched head during a poll */
    char last_error[512];
    int64_t last_poll_ms, last_ok_ms, failing_since_ms;
    unsigned failures;
    int64_t due_mono; /* next poll, tf_mono_ms() */
    gitrun_t *run;
};

typedef struct tf_pollers {
    tf_master_t *m;
    tf_poller_t **v; /* configured pollers */
    size_t n;
    tf_poller_t **old; /* retired pollers still busy */
    size_t nold;
    char *mirrors_dir;
    char **env;
    uv_timer_t timer;
    bool timer_open;
    bool stopping;
    bool loading; /* new pollers' rows are being read (a reload) */
    bool duty;    /* held the duty lease at the last tick (shared) */
} tf_pollers_t;

static void poll_step(tf_poller_t *p);

/* Whether a poller may go from state a to b (the chain in the file
 * header; any state may fail back to IDLE). */
static bool pstate_legal(pstate_t a, pstate_t b)
{
    switch (b) {
    case P_IDLE:
        return true;
    case P_INIT:
        return a == P_IDLE;
    case P_FETCH:
        return a == P_IDLE || a == P_INIT;
    case P_HEAD:
        return a == P_FETCH;
    case P_CHECK:
        return a == P_HEAD;
    case P_LOG:
        return a == P_HEAD || a == P_CHECK;
    case P_COMMIT:
        return a == P_LOG;
    }
    return false;
}

static void poller_set_state(tf_poller_t *p, pstate_t s)
{
    assert(pstate_legal(p->state, s));
    tf_debug("poller", "%s %s: %s -> %s", p->repository, p->branch,
             pstate_names[p->state], pstate_names[s]);
    p->state = s;
}

static void poller_free(tf_poller_t *p)
{
    if (!p)
        return;
    if (p->run)
        p->run->p = NULL;
    free(p->repository);
    free(p->branch);
    free(p->mirror);
    free(p->last_revision);
    free(p);
}

/* --- running git --- */

static void gitrun_close_cb(uv_handle_t *h)
{
    gitrun_t *g = h->data;
    if (--g->open_handles == 0) {
        tf_buf_free(&g->obuf);
        tf_buf_free(&g->ebuf);
        free(g);
    }
}

static void gitrun_close(gitrun_t *g)
{
    uv_handle_t *hs[] = {(uv_handle_t *)&g->proc, (uv_handle_t *)&g->out,
                         (uv_handle_t *)&g->err, (uv_handle_t *)&g->timer};
    for (size_t i = 0; i < 4; i++)
        if (!uv_is_closing(hs[i]))
            uv_close(hs[i], gitrun_close_cb);
}

static void gitrun_kill(gitrun_t *g)
{
    if (g->exited || g->killed)
        return;
    g->killed = true;
    /* The child leads its own process group (UV_PROCESS_DETACHED): kill
     * what it started too (ssh, remote helpers). */
    if (g->proc.pid > 0)
        kill(-g->proc.pid, SIGKILL);
    uv_process_kill(&g->proc, SIGKILL);
}

static void gitrun_maybe_finish(gitrun_t *g, bool force)
{
    if (g->finished || (!force && !(g->exited && g->out_eof && g->err_eof)))
        return;
    g->finished = true;
    uv_timer_stop(&g->timer);
    tf_poller_t *p = g->p;
    if (p) {
        p->run = NULL;
        if (p->m->pollers->stopping)
            poller_set_state(p, P_IDLE); /* killed for shutdown: no news */
        else
            g->cb(p, g);
    }
    gitrun_close(g);
}

static void gitrun_exit_cb(uv_process_t *proc, int64_t status, int sig)
{
    gitrun_t *g = proc->data;
    g->exited = true;
    g->exit_status = status;
    g->term_signal = sig;
    gitrun_maybe_finish(g, false);
}

static void gitrun_timer_cb(uv_timer_t *t)
{
    gitrun_t *g = t->data;
    if (!g->timed_out) {
        g->timed_out = true;
        gitrun_kill(g);
        /* Give the pipes a moment to reach EOF, then stop waiting. */
        uv_timer_start(&g->timer, gitrun_timer_cb, GIT_KILL_GRACE_MS, 0);
        return;
    }
    gitrun_maybe_finish(g, true);
}

static void gitrun_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    gitrun_t *g = h->data;
    (void)suggested;
    buf->base = g->rbuf;
    buf->len = sizeof(g->rbuf);
}

static void gitrun_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    gitrun_t *g = s->data;
    bool is_out = s == (uv_stream_t *)&g->out;
    if (nread < 0) {
        uv_read_stop(s);
        if (is_out)
            g->out_eof = true;
        else
            g->err_eof = true;
        gitrun_maybe_finish(g, false);
        return;
    }
    tf_buf_t *b = is_out ? &g->obuf : &g->ebuf;
    size_t cap = is_out ? g->out_cap : GIT_ERR_MAX;
    size_t room = cap > b->len ? cap - b->len : 0;
    size_t take = (size_t)nread < room ? (size_t)nread : room;
    if (take && tf_buf_append(b, buf->base, take) != 0)
        take = 0;
    if (is_out && take < (size_t)nread) {
        /* Over the cap: what we have is all we use. */
        g->over_cap = true;
        gitrun_kill(g);
    }
}

/* Starts `git ARGV...` for p; cb runs when it is over (not if this fails).
 * Returns 0 or a libuv error, with p->last_error set. */
static int git_start(tf_poller_t *p, const char *const *argv,
                     uint64_t timeout_ms, size_t out_cap, gitrun_cb cb)
{
    tf_pollers_t *ps = p->m->pollers;
    gitrun_t *g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(p->last_error, sizeof(p->last_error), "out of memory");
        return UV_ENOMEM;
    }
    g->p = p;
    g->cb = cb;
    g->out_cap = out_cap;
    tf_buf_init(&g->obuf, out_cap + 1);
    tf_buf_init(&g->ebuf, GIT_ERR_MAX + 1);
    uv_loop_t *loop = p->m->loop;
    uv_pipe_init(loop, &g->out, 0);
    uv_pipe_init(loop, &g->err, 0);
    uv_timer_init(loop, &g->timer);
    g->proc.data = g->out.data = g->err.data = g->timer.data = g;
    g->open_handles = 4;

    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&g->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&g->err;
    uv_process_options_t opt = {
        .exit_cb = gitrun_exit_cb,
        .file = "git",
        .args = (char **)argv,
        .env = ps->env,
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = 3,
        .stdio = stdio,
    };
    int rc = uv_spawn(loop, &g->proc, &opt);
    if (rc) {
        snprintf(p->last_error, sizeof(p->last_error), "cannot run git: %s",
                 uv_strerror(rc));
        g->p = NULL;
        g->finished = true;
        gitrun_close(g);
        return rc;
    }
    uv_read_start((uv_stream_t *)&g->out, gitrun_alloc_cb, gitrun_read_cb);
    uv_read_start((uv_stream_t *)&g->err, gitrun_alloc_cb, gitrun_read_cb);
    uv_timer_start(&g->timer, gitrun_timer_cb, timeout_ms, 0);
    p->run = g;
    return 0;
}

/* Whether the command succeeded; when not, p->last_error says why (the
 * last line git wrote to stderr, or how it ended). */
static bool git_ok(tf_poller_t *p, gitrun_t *g, const char *what)
{
    if (g->exited && !g->timed_out && g->term_signal == 0 &&
        g->exit_status == 0)
        return true;
    if (g->timed_out) {
        snprintf(p->last_error, sizeof(p->last_error),
                 "git %s timed out", what);
        return false;
    }
    /* The first "fatal:" or "error:" line of stderr (git's own reason,
     * e.g. "fatal: '/x' does not appear to be a git repository"), else its
     * last non-empty line. */
    char line[400] = "";
    const char *e = (const char *)g->ebuf.data;
    size_t len = g->ebuf.len, pick = 0, pick_len = 0;
    bool found = false;
    for (size_t i = 0; e && i < len && !found;) {
        size_t j = i;
        while (j < len && e[j] != '\n')
            j++;
        size_t k = j;
        while (k > i && e[k - 1] == '\r')
            k--;
        if (k > i) {
            pick = i;
            pick_len = k - i;
            found = (k - i >= 6 && memcmp(e + i, "fatal:", 6) == 0) ||
                    (k - i >= 6 && memcmp(e + i, "error:", 6) == 0);
        }
        i = j + 1;
    }
    if (pick_len) {
        char *clean = tf_utf8_dup_lossy(e + pick, pick_len, sizeof(line) - 1);
        if (clean) {
            snprintf(line, sizeof(line), "%s", clean);
            free(clean);
        }
    }
    if (g->term_signal)
        snprintf(p->last_error, sizeof(p->last_error),
                 "git %s killed by signal %d%s%s", what, g->term_signal,
                 line[0] ? ": " : "", line);
    else
        snprintf(p->last_error, sizeof(p->last_error),
                 "git %s failed (exit %" PRId64 ")%s%s", what,
                 g->exit_status, line[0] ? ": " : "", line);
    return false;
}

/* --- outcomes --- */

static void poller_write_health(tf_poller_t *p)
{
    bool failing = p->health == H_FAILING;

    tf_master_group_begin(p->m, 0);
    tf_op_poller_health(p->m->group, p->repository, p->branch,
                        p->last_poll_ms, p->last_ok_ms,
                        failing ? p->last_error : NULL,
                        failing ? p->failing_since_ms : 0);
    tf_master_group_commit(p->m, NULL, NULL);
}

static int64_t backoff_ms(const tf_poller_t *p)
{
    int64_t iv = (int64_t)p->interval_s * 1000;
    int64_t cap = iv > BACKOFF_CAP_MS ? iv : BACKOFF_CAP_MS;
    unsigned k = p->failures > 16 ? 16 : p->failures;
    int64_t d = iv << k;
    return d > cap ? cap : d;
}

/* The poll failed with p->last_error: logged once per state change. */
static void poll_failed(tf_poller_t *p)
{
    p->failures++;
    p->last_poll_ms = tf_now_ms();
    int64_t delay = backoff_ms(p);
    p->due_mono = tf_mono_ms() + delay;
    poller_set_state(p, P_IDLE);
    if (p->health != H_FAILING) {
        p->health = H_FAILING;
        p->failing_since_ms = p->last_poll_ms;
        tf_warn("poller", "cannot poll %s branch %s: %s (retrying with "
                "backoff; GET /api/v1/pollers shows its state)",
                p->repository, p->branch, p->last_error);
        poller_write_health(p);
    } else {
        tf_debug("poller", "%s %s: still failing (%u): %s; next try in "
                 "%" PRId64 " ms", p->repository, p->branch, p->failures,
                 p->last_error, delay);
    }
}

static void poll_succeeded(tf_poller_t *p, bool stored)
{
    p->last_poll_ms = p->last_ok_ms = tf_now_ms();
    p->due_mono = tf_mono_ms() + (int64_t)p->interval_s * 1000;
    bool recovered = p->health == H_FAILING;
    p->health = H_OK;
    p->last_error[0] = '\0';
    if (recovered) {
        tf_info("poller", "%s branch %s can be polled again after %u "
                "failed attempts", p->repository, p->branch, p->failures);
        if (!stored)
            poller_write_health(p); /* stored polls cleared it already */
    }
    p->failures = 0;
    poller_set_state(p, P_IDLE);
}

/* --- recording changes --- */

typedef struct record_job {
    tf_master_t *m;
    tf_poller_t *p;
    char *repository;
    char *branch;
    char head[65];
    bool initial;
    int64_t now;
    tf_commit_t *commits;
    size_t n;
    char **files_json;
    uint64_t *ids;
    bool *fresh;
} record_job_t;

static void record_job_free(record_job_t *j)
{
    if (!j)
        return;
    for (size_t i = 0; j->files_json && i < j->n; i++)
        free(j->files_json[i]);
    free(j->files_json);
    tf_commits_free(j->commits, j->n);
    free(j->ids);
    free(j->fresh);
    free(j->repository);
    free(j->branch);
    free(j);
}

static void record_done(void *arg, int rc)
{
    record_job_t *j = arg;
    tf_poller_t *p = j->p;
    tf_pollers_t *ps = j->m->pollers;
    if (!p || !ps) {
        record_job_free(j);
        return;
    }
    if (rc) {
        snprintf(p->last_error, sizeof(p->last_error),
                 "cannot store the changes: %s", tf_strerror(rc));
        poll_failed(p);
        record_job_free(j);
        return;
    }
    char *head = strdup(j->head);
    if (head) {
        free(p->last_revision);
        p->last_revision = head;
    }
    size_t fresh = 0;
    for (size_t i = 0; i < j->n; i++)
        fresh += j->fresh[i];
    tf_info("poller", "%s branch %s: %zu new change%s, head %.12s%s",
            j->repository, j->branch, fresh, fresh == 1 ? "" : "s", j->head,
            j->initial ? " (first poll: the head only)" : "");
    poll_succeeded(p, true);
    tf_change_note_t *notes = calloc(j->n ? j->n : 1, sizeof(*notes));
    size_t k = 0;
    for (size_t i = 0; notes && i < j->n; i++) {
        if (!j->fresh[i] && !j->initial)
            continue;
        notes[k++] = (tf_change_note_t){
            .id = j->ids[i],
            .revision = j->commits[i].revision,
            .files = j->commits[i].files,
            .nfiles = j->commits[i].nfiles,
        };
    }
    if (notes && !p->retired && (k > 0 || j->initial))
        tf_schedulers_on_changes(j->m, j->repository, j->branch, notes, k,
                                 j->initial);
    free(notes);
    record_job_free(j);
}

/* Queues the commits of this poll (oldest first) for storage. */
static void poll_record(tf_poller_t *p, tf_commit_t *commits, size_t n,
                        bool initial)
{
    record_job_t *j = calloc(1, sizeof(*j));
    size_t cost = 512;
    if (!j)
        goto oom;
    j->m = p->m;
    j->p = p;
    j->commits = commits;
    j->n = n;
    commits = NULL;
    j->initial = initial;
    j->now = tf_now_ms();
    snprintf(j->head, sizeof(j->head), "%s", p->head);
    j->repository = strdup(p->repository);
    j->branch = strdup(p->branch);
    j->files_json = calloc(n ? n : 1, sizeof(char *));
    j->ids = calloc(n ? n : 1, sizeof(uint64_t));
    j->fresh = calloc(n ? n : 1, sizeof(bool));
    if (!j->repository || !j->branch || !j->files_json || !j->ids ||
        !j->fresh)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        const tf_commit_t *c = &j->commits[i];
        json_t *arr = json_array();
        for (size_t f = 0; arr && f < c->nfiles; f++)
            json_array_append_new(arr, json_string(c->files[f]));
        j->files_json[i] = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
        json_decref(arr);
        if (!j->files_json[i])
            goto oom;
        cost += strlen(j->files_json[i]) + strlen(c->message) + 256;
    }
    poller_set_state(p, P_COMMIT);
    /* The changes (a known revision keeps its id) and the poller's new
     * head commit together; their ids come back in j->ids. */
    tf_change_rec_t *recs = calloc(n ? n : 1, sizeof(*recs));
    if (!recs)
        goto oom_queued;
    for (size_t i = 0; i < n; i++) {
        const tf_commit_t *c = &j->commits[i];
        recs[i] = (tf_change_rec_t){
            .revision = c->revision,
            .author = c->author,
            .email = c->email,
            .message = c->message,
            .files_json = j->files_json[i],
            .committer_ms = c->committer_ms,
        };
    }
    tf_wgroup_t *g = tf_wgroup_new(cost);
    tf_op_changes_record(g, j->repository, j->branch, j->head, recs, n,
                         j->now, j->ids, j->fresh);
    free(recs);
    int rc = tf_store_submit(p->m->store, g, record_done, j);
    if (rc) {
        tf_wgroup_free(g);
        snprintf(p->last_error, sizeof(p->last_error),
                 "cannot queue the changes for storage: %s", tf_strerror(rc));
        record_job_free(j);
        poll_failed(p);
    }
    return;
oom_queued:
    record_job_free(j);
    snprintf(p->last_error, sizeof(p->last_error), "out of memory");
    poll_failed(p);
    return;
oom:
    tf_commits_free(commits, n);
    record_job_free(j);
    snprintf(p->last_error, sizeof(p->last_error), "out of memory");
    poll_failed(p);
}

/* --- the chain of commands --- */

static void log_done(tf_poller_t *p, gitrun_t *g)
{
    tf_commit_t *commits = NULL;
    size_t n = 0;
    bool initial = p->last_revision == NULL;
    if (!g->over_cap && !git_ok(p, g, "log")) {
        poll_failed(p);
        return;
    }
    if (tf_gitlog_parse((const char *)g->obuf.data, g->obuf.len,
                        !g->over_cap, &commits, &n) != 0) {
        snprintf(p->last_error, sizeof(p->last_error), "out of memory");
        poll_failed(p);
        return;
    }
    if (n > POLL_MAX_COMMITS) {
        /* Asked for one more than we keep, to know history was skipped. */
        tf_warn("poller", "%s branch %s: more than %d new commits; "
                "recording the newest %d", p->repository, p->branch,
                POLL_MAX_COMMITS, POLL_MAX_COMMITS);
        size_t drop = n - POLL_MAX_COMMITS;
        for (size_t i = 0; i < drop; i++)
            tf_commit_clear(&commits[i]);
        memmove(commits, commits + drop, POLL_MAX_COMMITS * sizeof(*commits));
        n = POLL_MAX_COMMITS;
    }
    if (g->over_cap && n > 0) {
        /* Cut short: record what we have; the next poll continues from
         * the newest complete commit. */
        tf_warn("poller", "%s branch %s: git log output over %u bytes; "
                "recording %zu commits now, the rest next time",
                p->repository, p->branch, GIT_OUT_MAX, n);
        snprintf(p->head, sizeof(p->head), "%s", commits[n - 1].revision);
    }
    if (n == 0 && (g->over_cap || initial)) {
        snprintf(p->last_error, sizeof(p->last_error),
                 "git log gave no commit for %s", p->head);
        tf_commits_free(commits, n);
        poll_failed(p);
        return;
    }
    poll_record(p, commits, n, initial);
}

static void start_log(tf_poller_t *p, bool have_last)
{
    char range[2 * 65 + 32 + TF_REF_MAX];
    char max[32];
    snprintf(max, sizeof(max), "--max-count=%d",
             have_last ? POLL_MAX_COMMITS + 1 : 1);
    if (have_last)
        snprintf(range, sizeof(range), "%s..%s", p->last_revision, p->head);
    else
        snprintf(range, sizeof(range), "%s", p->head);
    const char *argv[] = {
        "git", "-C", p->mirror, "-c", "log.showSignature=false", "log", "-z",
        "--reverse", "--no-color", "--no-renames", "--name-only",
        "--diff-merges=first-parent", max,
        "--format=%x01%H%x00%an%x00%ae%x00%ct%x00%B", range, "--", NULL,
    };
    poller_set_state(p, P_LOG);
    if (git_start(p, argv, GIT_LOCAL_TIMEOUT_MS, GIT_OUT_MAX, log_done) != 0)
        poll_failed(p);
}

static void check_done(tf_poller_t *p, gitrun_t *g)
{
    bool known = g->exited && !g->timed_out && g->term_signal == 0 &&
                 g->exit_status == 0;
    if (!known && g->exited && !g->timed_out && g->term_signal == 0 &&
        g->exit_status == 1) {
        /* The mirror lost the last revision (it was recreated, or history
         * was rewritten and pruned): start over from the head. */
        tf_warn("poller", "%s branch %s: last revision %.12s is not in the "
                "mirror any more; recording the head only",
                p->repository, p->branch, p->last_revision);
        free(p->last_revision);
        p->last_revision = NULL;
        start_log(p, false);
        return;
    }
    if (!known) {
        git_ok(p, g, "cat-file");
        poll_failed(p);
        return;
    }
    start_log(p, true);
}

static void head_done(tf_poller_t *p, gitrun_t *g)
{
    if (!git_ok(p, g, "rev-parse")) {
        poll_failed(p);
        return;
    }
    size_t n = g->obuf.len;
    const char *o = (const char *)g->obuf.data;
    while (n > 0 && (o[n - 1] == '\n' || o[n - 1] == '\r'))
        n--;
    if (!o || !tf_gitlog_is_rev(o, n)) {
        snprintf(p->last_error, sizeof(p->last_error),
                 "git rev-parse gave no commit id for branch %s", p->branch);
        poll_failed(p);
        return;
    }
    memcpy(p->head, o, n);
    p->head[n] = '\0';
    if (p->last_revision && strcmp(p->last_revision, p->head) == 0) {
        poll_succeeded(p, false); /* nothing new */
        return;
    }
    if (!p->last_revision) {
        start_log(p, false);
        return;
    }
    char obj[80];
    snprintf(obj, sizeof(obj), "%s^{commit}", p->last_revision);
    const char *argv[] = {"git", "-C", p->mirror, "cat-file", "-e", obj,
                          NULL};
    poller_set_state(p, P_CHECK);
    if (git_start(p, argv, GIT_LOCAL_TIMEOUT_MS, GIT_SMALL_OUT_MAX,
                  check_done) != 0)
        poll_failed(p);
}

static void fetch_done(tf_poller_t *p, gitrun_t *g)
{
    if (!git_ok(p, g, "fetch")) {
        poll_failed(p);
        return;
    }
    char ref[TF_REF_MAX + 32];
    snprintf(ref, sizeof(ref), "refs/heads/%s^{commit}", p->branch);
    const char *argv[] = {"git", "-C", p->mirror, "rev-parse", "--verify",
                          "-q", ref, NULL};
    poller_set_state(p, P_HEAD);
    if (git_start(p, argv, GIT_LOCAL_TIMEOUT_MS, GIT_SMALL_OUT_MAX,
                  head_done) != 0)
        poll_failed(p);
}

static void start_fetch(tf_poller_t *p)
{
    char refspec[2 * TF_REF_MAX + 32];
    snprintf(refspec, sizeof(refspec), "+refs/heads/%s:refs/heads/%s",
             p->branch, p->branch);
    const char *argv[] = {
        "git", "-C", p->mirror, "-c", "gc.autoDetach=false", "fetch", "-q",
        "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
        "--", p->repository, refspec, NULL,
    };
    poller_set_state(p, P_FETCH);
    if (git_start(p, argv, GIT_FETCH_TIMEOUT_MS, GIT_SMALL_OUT_MAX,
                  fetch_done) != 0)
        poll_failed(p);
}

static void init_done(tf_poller_t *p, gitrun_t *g)
{
    if (!git_ok(p, g, "init")) {
        poll_failed(p);
        return;
    }
    start_fetch(p);
}

static void poll_step(tf_poller_t *p)
{
    struct stat st;
    if (stat(p->mirror, &st) == 0) {
        start_fetch(p);
        return;
    }
    const char *argv[] = {"git", "init", "-q", "--bare", p->mirror, NULL};
    poller_set_state(p, P_INIT);
    if (git_start(p, argv, GIT_LOCAL_TIMEOUT_MS, GIT_SMALL_OUT_MAX,
                  init_done) != 0)
        poll_failed(p);
}

/* Whether another poller of p's mirror is in the middle of a poll. */
static bool mirror_busy(tf_pollers_t *ps, const tf_poller_t *p)
{
    for (size_t i = 0; i < ps->n; i++)
        if (ps->v[i] != p && ps->v[i]->state != P_IDLE &&
            strcmp(ps->v[i]->mirror, p->mirror) == 0)
            return true;
    for (size_t i = 0; i < ps->nold; i++)
        if (ps->old[i]->state != P_IDLE &&
            strcmp(ps->old[i]->mirror, p->mirror) == 0)
            return true;
    return false;
}

/* Frees retired pollers that are done. */
static void reap_retired(tf_pollers_t *ps)
{
    size_t k = 0;
    for (size_t i = 0; i < ps->nold; i++) {
        if (ps->old[i]->state == P_IDLE)
            poller_free(ps->old[i]);
        else
            ps->old[k++] = ps->old[i];
    }
    ps->nold = k;
}

static void tick_cb(uv_timer_t *t)
{
    tf_pollers_t *ps = t->data;
    if (ps->stopping || ps->m->stopping)
        return;
    reap_retired(ps);
    /* Several masters (store.shared): one polls, the holder of the duty
     * lease; the others take over when it dies. A tick that finds the
     * lease newly held reads the state again before polling: the news of
     * the lease (tf_pollers_reread through duty_gained) may come after
     * this tick, which would poll from this master's stale revisions. */
    if (!tf_store_has_duty(ps->m->store)) {
        ps->duty = false;
        return;
    }
    if (!ps->duty) {
        ps->duty = true;
        if (tf_store_is_shared(ps->m->store))
            tf_pollers_reread(ps->m);
    }
    int64_t now = tf_mono_ms();
    for (size_t i = 0; i < ps->n; i++) {
        tf_poller_t *p = ps->v[i];
        if (p->state != P_IDLE || !p->loaded || now < p->due_mono ||
            mirror_busy(ps, p))
            continue;
        poll_step(p);
    }
}

/* --- setup --- */

static tf_poller_t *find(tf_poller_t **v, size_t n, const char *repo,
                         const char *branch)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] && /* NULL: taken over by a reload's new list */
            strcmp(v[i]->repository, repo) == 0 &&
            strcmp(v[i]->branch, branch) == 0)
            return v[i];
    return NULL;
}

static tf_poller_t *poller_new(tf_pollers_t *ps, const char *repo,
                               const char *branch, uint32_t interval_s)
{
    tf_poller_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->m = ps->m;
    p->repository = strdup(repo);
    p->branch = strdup(branch);
    p->interval_s = interval_s;
    char *name = tf_mirror_name(repo);
    p->mirror = name ? tf_path_join(ps->mirrors_dir, name) : NULL;
    free(name);
    if (!p->repository || !p->branch || !p->mirror) {
        poller_free(p);
        return NULL;
    }
    return p;
}

/* Adds (or finds) the poller of (repo, branch) in the list being built;
 * the shortest interval asked for wins. */
static int want(tf_pollers_t *ps, tf_poller_t ***v, size_t *n, size_t *cap,
                const char *repo, const char *branch, uint32_t interval_s)
{
    tf_poller_t *p = find(*v, *n, repo, branch);
    if (p) {
        if (interval_s < p->interval_s)
            p->interval_s = interval_s;
        return 0;
    }
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        tf_poller_t **nv = realloc(*v, ncap * sizeof(*nv));
        if (!nv)
            return TF_ENOMEM;
        *v = nv;
        *cap = ncap;
    }
    /* Keep the state of a poller the old config had. */
    p = find(ps->v, ps->n, repo, branch);
    if (p) {
        for (size_t i = 0; i < ps->n; i++)
            if (ps->v[i] == p)
                ps->v[i] = NULL; /* taken over */
        p->interval_s = interval_s;
    } else {
        p = poller_new(ps, repo, branch, interval_s);
        if (!p)
            return TF_ENOMEM;
    }
    (*v)[(*n)++] = p;
    return 0;
}

/* The pollers the config asks for: its "pollers" and the sources of its
 * schedulers. Pollers of the previous list that are not wanted any more
 * retire. */
static int build_list(tf_pollers_t *ps)
{
    const tf_config_t *c = ps->m->cfg;
    tf_poller_t **v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (size_t i = 0; i < c->npollers && !rc; i++)
        rc = want(ps, &v, &n, &cap, c->pollers[i].repository,
                  c->pollers[i].branch, c->pollers[i].interval_s);
    for (size_t i = 0; i < c->nschedulers && !rc; i++) {
        const tf_cfg_scheduler_t *s = &c->schedulers[i];
        if (s->repository)
            rc = want(ps, &v, &n, &cap, s->repository, s->branch,
                      c->poll_interval_s);
    }
    /* Out of memory part way: the pollers listed so far are kept, the
     * others retire; the caller logs it. */
    for (size_t i = 0; i < ps->n; i++) {
        tf_poller_t *p = ps->v[i];
        if (!p)
            continue;
        if (p->state == P_IDLE) {
            poller_free(p);
            continue;
        }
        p->retired = true;
        tf_poller_t **no = realloc(ps->old, (ps->nold + 1) * sizeof(*no));
        if (!no) {
            if (p->run)
                gitrun_kill(p->run);
            poller_free(p);
            continue;
        }
        ps->old = no;
        ps->old[ps->nold++] = p;
    }
    free(ps->v);
    ps->v = v;
    ps->n = n;
    return rc;
}

/* The environment git runs in: ours, never prompting for credentials,
 * with messages in English (they are shown to admins as they are). */
static char **make_env(void)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 5, sizeof(*env));
    size_t k = 0;
    bool has_ssh = false;
    if (!env)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "GIT_TERMINAL_PROMPT=", 20) == 0 ||
            strncmp(environ[i], "LC_ALL=", 7) == 0)
            continue;
        if (strncmp(environ[i], "GIT_SSH_COMMAND=", 16) == 0)
            has_ssh = true;
        env[k++] = environ[i];
    }
    env[k++] = "GIT_TERMINAL_PROMPT=0";
    env[k++] = "LC_ALL=C";
    if (!has_ssh)
        env[k++] = "GIT_SSH_COMMAND=ssh -o BatchMode=yes";
    env[k] = NULL;
    return env;
}

/* Puts the stored state of pollers not yet loaded into them; those
 * without a row are branches never polled. */
static void apply_rows(tf_pollers_t *ps, const tf_q_pollers_t *q)
{
    for (size_t i = 0; i < q->n; i++) {
        const tf_poller_row_t *r = &q->rows[i];
        tf_poller_t *p = r->repository && r->branch
                             ? find(ps->v, ps->n, r->repository, r->branch)
                             : NULL;
        if (!p || p->loaded)
            continue;
        p->loaded = true;
        if (r->last_revision &&
            tf_gitlog_is_rev(r->last_revision, strlen(r->last_revision))) {
            free(p->last_revision); /* a re-read (tf_pollers_reread) */
            p->last_revision = strdup(r->last_revision);
        }
        p->last_poll_ms = r->last_poll_ms;
        p->last_ok_ms = r->last_ok_ms;
        if (r->failing) {
            p->health = H_FAILING;
            p->failing_since_ms = r->failing_since_ms;
            snprintf(p->last_error, sizeof(p->last_error), "%s",
                     r->last_error ? r->last_error : "unknown");
        } else if (p->last_ok_ms) {
            p->health = H_OK;
        }
    }
    for (size_t i = 0; i < ps->n; i++)
        ps->v[i]->loaded = true;
}

/* The rows read for a reload, off the loop. */
typedef struct pollers_load {
    tf_q_pollers_t q;
    tf_master_t *m;
} pollers_load_t;

static void pollers_loaded(void *arg, int rc)
{
    pollers_load_t *l = arg;
    tf_pollers_t *ps = l->m->pollers;

    if (ps) {
        ps->loading = false;
        if (rc)
            tf_error("poller", "cannot read the pollers' state (%s): new "
                     "branches start afresh", tf_strerror(rc));
        if (!ps->stopping)
            apply_rows(ps, &l->q);
    }
    tf_q_pollers_clear(&l->q);
    free(l);
}

int tf_pollers_start(tf_master_t *m)
{
    tf_pollers_t *ps = calloc(1, sizeof(*ps));
    int rc = TF_ENOMEM;
    if (!ps)
        return rc;
    ps->m = m;
    m->pollers = ps;
    m->duty_gained = tf_pollers_reread;
    ps->mirrors_dir = tf_path_join(m->dir, "mirrors");
    ps->env = make_env();
    if (!ps->mirrors_dir || !ps->env)
        goto fail;
    rc = build_list(ps);
    if (rc)
        goto fail;
    if (ps->n) {
        rc = tf_mkdir_p(ps->mirrors_dir, 0755);
        if (rc) {
            tf_error("poller", "cannot create %s: %s", ps->mirrors_dir,
                     tf_strerror(rc));
            goto fail;
        }
    }
    tf_q_pollers_t q = {.q.kind = TF_Q_POLLERS};
    rc = tf_store_query_sync(m->store, &q.q); /* startup: not serving yet */
    if (rc == 0)
        apply_rows(ps, &q);
    tf_q_pollers_clear(&q);
    if (rc)
        goto fail;
    uv_timer_init(m->loop, &ps->timer);
    ps->timer.data = ps;
    ps->timer_open = true;
    uv_timer_start(&ps->timer, tick_cb, 0, POLL_TICK_MS);
    if (ps->n)
        tf_info("poller", "polling %zu branch%s every %u s or as configured",
                ps->n, ps->n == 1 ? "" : "es", m->cfg->poll_interval_s);
    return 0;
fail:
    tf_pollers_free(m);
    return rc;
}

/* Reads the pollers' rows off the loop, for those not loaded. */
static void load_rows(tf_pollers_t *ps)
{
    tf_master_t *m = ps->m;
    pollers_load_t *l = calloc(1, sizeof(*l));

    if (l) {
        l->q.q.kind = TF_Q_POLLERS;
        l->m = m;
    }
    if (!l || tf_store_query(m->store, &l->q.q, pollers_loaded, l)) {
        tf_error("poller", "cannot read the pollers' state: new "
                 "branches start afresh");
        free(l);
        for (size_t k = 0; k < ps->n; k++)
            ps->v[k]->loaded = true;
        return;
    }
    ps->loading = true;
}

void tf_pollers_reread(tf_master_t *m)
{
    tf_pollers_t *ps = m->pollers;
    if (!ps || ps->stopping || !ps->n)
        return;
    for (size_t i = 0; i < ps->n; i++)
        if (ps->v[i]->state == P_IDLE)
            ps->v[i]->loaded = false;
    tf_info("poller", "this master polls now: the pollers' state is read "
            "again from the database (another master polled until now)");
    if (ps->loading)
        return; /* pollers_loaded applies the rows in flight; the next
                 * tick's unloaded pollers wait for them */
    load_rows(ps);
}

void tf_pollers_reload(tf_master_t *m)
{
    tf_pollers_t *ps = m->pollers;
    if (!ps || ps->stopping)
        return;
    size_t before = ps->n;
    if (build_list(ps) != 0) {
        tf_error("poller", "out of memory: pollers keep the old config");
        return;
    }
    if (ps->n && tf_mkdir_p(ps->mirrors_dir, 0755) != 0)
        tf_error("poller", "cannot create %s", ps->mirrors_dir);
    /* New pollers learn their last revision from the table, read off the
     * loop; they do not poll until it is in. */
    for (size_t i = 0; i < ps->n && !ps->loading; i++) {
        if (!ps->v[i]->loaded) {
            load_rows(ps);
            break;
        }
    }
    if (ps->n != before)
        tf_info("poller", "now polling %zu branch%s", ps->n,
                ps->n == 1 ? "" : "es");
}

void tf_pollers_stop(tf_master_t *m)
{
    tf_pollers_t *ps = m->pollers;
    if (!ps || ps->stopping)
        return;
    ps->stopping = true;
    for (size_t i = 0; i < ps->n; i++)
        if (ps->v[i]->run)
            gitrun_kill(ps->v[i]->run);
    for (size_t i = 0; i < ps->nold; i++)
        if (ps->old[i]->run)
            gitrun_kill(ps->old[i]->run);
    if (ps->timer_open && !uv_is_closing((uv_handle_t *)&ps->timer))
        uv_close((uv_handle_t *)&ps->timer, NULL);
}

void tf_pollers_free(tf_master_t *m)
{
    tf_pollers_t *ps = m->pollers;
    if (!ps)
        return;
    for (size_t i = 0; i < ps->n; i++)
        poller_free(ps->v[i]);
    for (size_t i = 0; i < ps->nold; i++)
        poller_free(ps->old[i]);
    free(ps->v);
    free(ps->old);
    free(ps->mirrors_dir);
    free(ps->env);
    free(ps);
    m->pollers = NULL;
}

const char *tf_pollers_head(tf_master_t *m, const char *repository,
                            const char *branch)
{
    tf_pollers_t *ps = m->pollers;
    tf_poller_t *p = ps ? find(ps->v, ps->n, repository, branch) : NULL;
    return p ? p->last_revision : NULL;
}

/* --- status --- */

static json_t *int_or_null(int64_t v)
{
    return v ? json_integer(v) : json_null();
}

/* One poller's answer: its config from p, its state from p or, given a
 * stored row (row: a master that does not poll answering with the
 * holder's state; have_row false: never polled), from the row, with
 * polling false and failures and next_poll_ms null (the holder's, not
 * stored). */
static json_t *poller_json(const tf_poller_t *p, bool stored,
                           const tf_poller_row_t *row)
{
    int64_t mono = tf_mono_ms(), now = tf_now_ms();
    health_t health = p->health;
    const char *last_revision = p->last_revision, *last_error = p->last_error;
    int64_t last_poll_ms = p->last_poll_ms, last_ok_ms = p->last_ok_ms;
    int64_t failing_since_ms = p->failing_since_ms;
    if (stored) {
        health = row && row->failing ? H_FAILING
                 : row && row->last_ok_ms ? H_OK
                                          : H_NEW;
        last_revision = row && row->last_revision &&
                                tf_gitlog_is_rev(row->last_revision,
                                                 strlen(row->last_revision))
                            ? row->last_revision
                            : NULL;
        last_error = row && row->last_error ? row->last_error : "unknown";
        last_poll_ms = row ? row->last_poll_ms : 0;
        last_ok_ms = row ? row->last_ok_ms : 0;
        failing_since_ms = row ? row->failing_since_ms : 0;
    }
    const char *hs = health == H_FAILING ? "failing"
                     : health == H_OK    ? "ok"
                                         : "new";
    json_t *o = json_object();
    json_object_set_new(o, "repository", json_string(p->repository));
    json_object_set_new(o, "branch", json_string(p->branch));
    json_object_set_new(o, "interval_s", json_integer(p->interval_s));
    json_object_set_new(o, "state", json_string(hs));
    json_object_set_new(o, "polling",
                        json_boolean(!stored && p->state != P_IDLE));
    json_object_set_new(o, "last_revision", last_revision
                                                ? json_string(last_revision)
                                                : json_null());
    json_object_set_new(o, "last_poll_ms", int_or_null(last_poll_ms));
    json_object_set_new(o, "last_ok_ms", int_or_null(last_ok_ms));
    json_object_set_new(o, "last_error", health == H_FAILING
                                             ? json_string(last_error)
                                             : json_null());
    json_object_set_new(o, "failing_since_ms",
                        health == H_FAILING ? int_or_null(failing_since_ms)
                                            : json_null());
    if (stored) {
        json_object_set_new(o, "failures", json_null());
        json_object_set_new(o, "next_poll_ms", json_null());
        return o;
    }
    json_object_set_new(o, "failures", json_integer(p->failures));
    int64_t due = p->state != P_IDLE     ? 0
                  : p->due_mono > mono ? now + (p->due_mono - mono)
                                       : now;
    json_object_set_new(o, "next_poll_ms", int_or_null(due));
    return o;
}

json_t *tf_pollers_status(tf_master_t *m)
{
    tf_pollers_t *ps = m->pollers;
    json_t *arr = json_array();
    for (size_t i = 0; ps && i < ps->n; i++)
        json_array_append_new(arr, poller_json(ps->v[i], false, NULL));
    return arr;
}

json_t *tf_pollers_status_stored(tf_master_t *m, const tf_q_pollers_t *q)
{
    tf_pollers_t *ps = m->pollers;
    json_t *arr = json_array();
    for (size_t i = 0; ps && i < ps->n; i++) {
        const tf_poller_t *p = ps->v[i];
        const tf_poller_row_t *row = NULL;
        for (size_t k = 0; k < q->n && !row; k++)
            if (q->rows[k].repository && q->rows[k].branch &&
                strcmp(q->rows[k].repository, p->repository) == 0 &&
                strcmp(q->rows[k].branch, p->branch) == 0)
                row = &q->rows[k];
        json_array_append_new(arr, poller_json(p, true, row));
    }
    return arr;
}
