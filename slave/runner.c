/*
 * runner.c - the steps of one build, as process groups on the libuv loop.
 *
 * A runner walks its steps in order. For each step that runs, a tf_proc
 * holds the child and the seven handles that watch it: the process, the
 * two output pipes, and four timers (no-output timeout, total time, the
 * SIGKILL that follows a SIGTERM, and the grace for pipes held open after
 * the main process exited). The step ends when the process has exited and
 * both pipes reached EOF, or when that grace runs out.
 *
 * Handles can only be freed from their close callbacks, which run on a
 * later loop turn, so a finished step's tf_proc is detached from the
 * runner (proc->r = NULL) and frees itself when its last handle closes.
 * The runner therefore never waits for closes and can move to the next
 * step at once; nothing in a detached proc touches the runner again.
 *
 * Step states (per tf_proc):
 *
 *   RUNNING --exit--> EXITED --both pipes EOF, or drain grace--> (ended)
 *      |                ^
 *      +--timeout/abort: SIGTERM, SIGKILL after the grace --+
 *
 * Events go out through ops in protocol order: step_started, output,
 * step_finished, ..., build_finished; ops never re-enter the runner
 * synchronously except for pause/resume and an asynchronous abort.
 *
 * A step with command modifiers has its output fed, read by read, to a
 * tf_mods matcher (modifiers.h) owned by its tf_proc; at the step's end
 * the matcher's verdict may change the result before it is reported and
 * folded, so haltOnFailure follows the result the master will store.
 *
 * A step that declares test_results gets a tf_stepres (stepres.h) fed the
 * same reads; when the step ends, its report files are read and the
 * results go out as test_results events just before step_finished, so the
 * master sees them while the step is still open.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "modifiers.h"
#include "names.h"
#include "runner.h"
#include "stepres.h"
#include "tf_err.h"
#include "util.h"

#define TF__ENV_MAX 4096 /* environment entries of a step, ours included */

extern char **environ;

typedef enum {
    TF_RUN_IDLE,    /* created, not started */
    TF_RUN_ACTIVE,  /* steps in progress */
    TF_RUN_DONE,    /* build_finished emitted */
} tf_run_state_t;

typedef struct tf_proc tf_proc_t;

struct tf_runner {
    uv_loop_t *loop;
    tf_runner_ops_t ops;
    void *arg;
    char *basedir;
    char *run_dir;
    char *pid_path;
    uint64_t build_id;
    char *builder;
    uint64_t number;
    char *workdir;
    tf_step_spec_t *steps;
    size_t nsteps;
    tf_source_t *source;  /* build_start.source, NULL when absent */
    const tf_source_ctx_t *src_ctx;
    char *patch_path;     /* BASEDIR/.run/ID.patch, for the source step */
    char *props_path;     /* BASEDIR/.run/ID.props, got_revision */
    size_t cur;          /* the running step, or the next one to consider */
    tf_result_t result;  /* folded build result so far */
    bool halted;         /* only alwaysRun steps run from now on */
    bool aborting;
    bool abort_report_rest;
    tf_result_t abort_result;
    char abort_text[TF_PROTO_MAX_TEXTFIELD + 1];
    bool paused;
    tf_run_state_t state;
    tf_proc_t *proc;     /* the running step, NULL between steps */
};

struct tf_proc {
    tf_runner_t *r;      /* NULL once detached */
    uint32_t step;
    uv_process_t process;
    uv_pipe_t pipes[2];  /* stdout, stderr */
    uv_timer_t idle_timer, total_timer, kill_timer, drain_timer;
    int open_handles;
    bool spawned;
    int pgid;
    bool exited;
    int64_t exit_status;
    int term_signal;
    bool eof[2];
    bool reading[2];
    bool term_sent;
    bool timed_out;
    bool builtin_source;
    tf_mods_t *mods;     /* the step's command modifiers, or NULL */
    tf_stepres_t *tres;  /* the step's test results, or NULL */
    char timeout_text[96];
    int64_t start_mono;
    uint8_t buf[2][TF_PROTO_MAX_CHUNK];
};

static void tf__run_from(tf_runner_t *r);

static const char *tf__result(tf_result_t x)
{
    return tf_result_name(x);
}

/* Cuts s to at most max bytes without splitting a UTF-8 sequence, so the
 * text stays valid for the JSON encoder. */
static void tf__copy_text(char *dst, size_t dstlen, const char *src)
{
    size_t n = strlen(src);
    if (n >= dstlen) {
        n = dstlen - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- events ---------------------------------------------------------- */

static void tf__emit_step_started(tf_runner_t *r, uint32_t step)
{
    tf_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = TF_MSG_STEP_STARTED;
    m.u.step_started.build_id = r->build_id;
    m.u.step_started.step = step;
    m.u.step_started.name = r->steps[step].name;
    m.u.step_started.time_ms = tf_now_ms();
    r->ops.event_cb(r->arg, &m);
}

typedef struct {
    tf_result_t result;
    bool has_exit;
    int exit_code;
    bool has_signal;
    int signal;
    bool timed_out;
    int64_t duration_ms;
    const char *text;
    tf_kv_t *props;
    size_t nprops;
    const char *info;       /* what command modifiers extracted, or NULL */
    const tf_stat_t *stats;
    size_t nstats;
    bool has_warnings;
    uint64_t warnings;
} tf__step_end_t;

static void tf__emit_step_finished(tf_runner_t *r, uint32_t step,
                                   const tf__step_end_t *e)
{
    char text[TF_PROTO_MAX_TEXTFIELD + 1];
    tf_msg_t m;
    tf__copy_text(text, sizeof text, e->text);
    memset(&m, 0, sizeof m);
    m.type = TF_MSG_STEP_FINISHED;
    m.u.step_finished.build_id = r->build_id;
    m.u.step_finished.step = step;
    m.u.step_finished.result = e->result;
    m.u.step_finished.has_exit_code = e->has_exit;
    m.u.step_finished.exit_code = e->exit_code;
    m.u.step_finished.has_signal = e->has_signal;
    m.u.step_finished.signal = e->signal;
    m.u.step_finished.timed_out = e->timed_out;
    m.u.step_finished.duration_ms = e->duration_ms < 0 ? 0 : e->duration_ms;
    m.u.step_finished.time_ms = tf_now_ms();
    m.u.step_finished.text = text;
    m.u.step_finished.props = e->props;
    m.u.step_finished.nprops = e->nprops;
    m.u.step_finished.info = (char *)e->info;
    m.u.step_finished.stats = (tf_stat_t *)e->stats;
    m.u.step_finished.nstats = e->nstats;
    m.u.step_finished.has_warnings = e->has_warnings;
    m.u.step_finished.warnings = e->warnings;
    r->ops.event_cb(r->arg, &m);
}

/* Reports a step that does not run and moves past it. */
static void tf__skip_step(tf_runner_t *r)
{
    tf__step_end_t e = {.result = TF_SKIPPED, .text = "skipped"};
    tf__emit_step_finished(r, (uint32_t)r->cur, &e);
    r->cur++;
}

/* Folds a finished step into the build result and moves past it. */
static void tf__fold_step(tf_runner_t *r, tf_result_t step_result)
{
    bool terminate = false;
    r->result = tf_result_fold(r->result, step_result,
                               &r->steps[r->cur].flags, &terminate);
    if (terminate)
        r->halted = true;
    r->cur++;
}

static void tf__finish_build(tf_runner_t *r)
{
    tf_msg_t m;
    tf_result_t result = r->aborting ? r->abort_result : r->result;
    memset(&m, 0, sizeof m);
    m.type = TF_MSG_BUILD_FINISHED;
    m.u.build_finished.build_id = r->build_id;
    m.u.build_finished.result = result;
    m.u.build_finished.time_ms = tf_now_ms();
    r->state = TF_RUN_DONE;
    tf_info("run", "build %llu (%s #%llu) finished: %s",
            (unsigned long long)r->build_id, r->builder,
            (unsigned long long)r->number, tf__result(result));
    r->ops.event_cb(r->arg, &m);
    r->ops.done_cb(r->arg, result);
}

/* ---- pid files -------------------------------------------------------- */

/* Field 22 of /proc/PID/stat: the start time in clock ticks since boot,
 * which tells a process from a later one that reused its pid. */
static int tf__proc_starttime(int pid, unsigned long long *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return TF_EIO;
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and parentheses: count
     * fields from the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return TF_EIO;
    p++;
    for (int field = 3; field <= 22; field++) {
        while (*p == ' ')
            p++;
        if (field == 22) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(p, &end, 10);
            if (errno || end == p)
                return TF_EIO;
            *out = v;
            return 0;
        }
        while (*p && *p != ' ')
            p++;
        if (!*p)
            return TF_EIO;
    }
    return TF_EIO;
}

static void tf__write_pid_file(tf_runner_t *r, int pgid)
{
    unsigned long long st = 0;
    char line[64];
    if (tf__proc_starttime(pgid, &st))
        st = 0; /* 0 = unknown: the reaper then trusts the pgid alone */
    int n = snprintf(line, sizeof line, "%d %llu\n", pgid, st);
    int fd = open(r->pid_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, line, (size_t)n) != n)
        tf_warn("run", "cannot write %s: %s (a crash now would leave the "
                "step's processes running)", r->pid_path, strerror(errno));
    if (fd >= 0)
        close(fd);
}

int tf_runner_reap_leftovers(const char *run_dir)
{
    int killed = 0;
    struct dirent *de;
    DIR *d = opendir(run_dir);
    if (!d)
        return 0;
    while ((de = readdir(d)) != NULL) {
        const char *dot = strrchr(de->d_name, '.');
        if (de->d_name[0] == '.')
            continue;
        if (!dot || strcmp(dot, ".pid") != 0) {
            /* A source step's patch or properties, from a step that died
             * with the previous slave: worthless now. */
            char *other = tf_path_join(run_dir, de->d_name);
            if (other)
                unlink(other);
            free(other);
            continue;
        }
        char *path = tf_path_join(run_dir, de->d_name);
        char *text = NULL;
        if (!path)
            continue;
        int pgid = 0;
        unsigned long long recorded = 0, now = 0;
        if (tf_read_file(path, 256, &text, NULL) == 0 &&
            sscanf(text, "%d %llu", &pgid, &recorded) == 2 && pgid > 1) {
            /* While any member of group PGID lives, the kernel does not hand
             * out PGID as a new pid. So if /proc/PGID is gone, every process
             * still in that group is ours; if it exists, it is the leader we
             * started only when its start time matches. */
            int rc = tf__proc_starttime(pgid, &now);
            bool ours = rc != 0 || recorded == 0 || now == recorded;
            if (ours && kill(-pgid, SIGKILL) == 0) {
                killed++;
                tf_warn("run", "killed process group %d left over by a "
                        "previous slave (%s)", pgid, de->d_name);
            } else if (!ours)
                tf_info("run", "process %d of %s is no longer the step we "
                        "started (pid reused): not killing it", pgid,
                        de->d_name);
        }
        free(text);
        unlink(path);
        free(path);
    }
    closedir(d);
    return killed;
}

/* ---- process handles -------------------------------------------------- */

static void tf__proc_close_cb(uv_handle_t *h)
{
    tf_proc_t *p = h->data;
    if (--p->open_handles == 0) {
        tf_mods_free(p->mods);
        tf_stepres_free(p->tres);
        free(p);
    }
}

/* Stops watching the step: its handles close and free p later. */
static void tf__proc_detach(tf_proc_t *p)
{
    p->r = NULL;
    uv_handle_t *hs[] = {
        (uv_handle_t *)&p->process,    (uv_handle_t *)&p->pipes[0],
        (uv_handle_t *)&p->pipes[1],   (uv_handle_t *)&p->idle_timer,
        (uv_handle_t *)&p->total_timer, (uv_handle_t *)&p->kill_timer,
        (uv_handle_t *)&p->drain_timer,
    };
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        if (hs[i] == (uv_handle_t *)&p->process && !p->spawned)
            continue; /* never initialised */
        uv_close(hs[i], tf__proc_close_cb);
    }
}

static void tf__kill_group(tf_proc_t *p, int sig)
{
    if (p->pgid > 1 && kill(-p->pgid, sig) != 0 && errno != ESRCH)
        tf_warn("run", "kill(-%d, %d): %s", p->pgid, sig, strerror(errno));
}

static void tf__kill_timer_cb(uv_timer_t *t)
{
    tf_proc_t *p = t->data;
    tf_warn("run", "step %u: process group %d still alive %d ms after "
            "SIGTERM: sending SIGKILL", p->step, p->pgid,
            TF_RUNNER_KILL_GRACE_MS);
    tf__kill_group(p, SIGKILL);
}

/* SIGTERM to the group now, SIGKILL after the grace. */
static void tf__begin_kill(tf_proc_t *p)
{
    if (p->term_sent)
        return;
    p->term_sent = true;
    tf__kill_group(p, SIGTERM);
    uv_timer_start(&p->kill_timer, tf__kill_timer_cb, TF_RUNNER_KILL_GRACE_MS,
                   0);
}

static void tf__idle_timer_cb(uv_timer_t *t)
{
    tf_proc_t *p = t->data;
    tf_runner_t *r = p->r;
    uint32_t secs = r->steps[p->step].timeout_s;
    p->timed_out = true;
    snprintf(p->timeout_text, sizeof p->timeout_text,
             "timed out after %u s without output", secs);
    tf_warn("run", "build %llu step %u (%s): no output for %u s: killing "
            "process group %d", (unsigned long long)r->build_id, p->step,
            r->steps[p->step].name, secs, p->pgid);
    uv_timer_stop(&p->total_timer);
    tf__begin_kill(p);
}

static void tf__total_timer_cb(uv_timer_t *t)
{
    tf_proc_t *p = t->data;
    tf_runner_t *r = p->r;
    uint32_t secs = r->steps[p->step].max_time_s;
    p->timed_out = true;
    snprintf(p->timeout_text, sizeof p->timeout_text,
             "exceeded maxTime of %u s", secs);
    tf_warn("run", "build %llu step %u (%s): running for %u s: killing "
            "process group %d", (unsigned long long)r->build_id, p->step,
            r->steps[p->step].name, secs, p->pgid);
    uv_timer_stop(&p->idle_timer);
    tf__begin_kill(p);
}

/* ---- ending a step ---------------------------------------------------- */

static void tf__describe_end(tf_runner_t *r, tf_proc_t *p, tf__step_end_t *e,
                             char *text, size_t textlen)
{
    e->has_exit = p->term_signal == 0;
    e->exit_code = (int)p->exit_status;
    e->has_signal = p->term_signal != 0;
    e->signal = p->term_signal;
    e->timed_out = p->timed_out;
    e->duration_ms = tf_mono_ms() - p->start_mono;
    if (r->aborting) {
        e->result = r->abort_result;
        snprintf(text, textlen, "%s", r->abort_text);
    } else if (p->timed_out) {
        e->result = TF_FAILURE;
        snprintf(text, textlen, "%s", p->timeout_text);
    } else if (p->term_signal) {
        const char *abbrev = sigabbrev_np(p->term_signal);
        e->result = TF_FAILURE;
        snprintf(text, textlen, "killed by signal %d (SIG%s)", p->term_signal,
                 abbrev ? abbrev : "?");
    } else if (p->builtin_source && p->exit_status != 0) {
        /* Preparing the source is the slave's job, not the build's: when
         * it fails the build cannot say anything about the change. */
        const char *why = tf_source_exit_text((int)p->exit_status);
        e->result = TF_EXCEPTION;
        if (why)
            snprintf(text, textlen, "%s", why);
        else
            snprintf(text, textlen, "source step failed: exit %d",
                     (int)p->exit_status);
    } else {
        e->result = p->exit_status == 0 ? TF_SUCCESS : TF_FAILURE;
        snprintf(text, textlen, "exit %d", (int)p->exit_status);
    }
    e->text = text;
}

/* Reads the commit a successful source step wrote into rev[revlen] and
 * deletes the file. Returns false when there is none. */
static bool tf__read_got_revision(tf_runner_t *r, char *rev, size_t revlen)
{
    char *text = NULL;
    bool ok = false;
    if (tf_read_file(r->props_path, 4096, &text, NULL) == 0) {
        size_t n = strcspn(text, "\r\n");
        if (n > 0 && n < revlen) {
            memcpy(rev, text, n);
            rev[n] = '\0';
            ok = true;
        }
    }
    free(text);
    unlink(r->props_path);
    return ok;
}

/* Lets the step's command modifiers judge its end: the success and
 * warnings rules may change the result (noted after the text), and what
 * they extracted goes with the step whatever its result. */
static void tf__apply_mods(tf_runner_t *r, tf_proc_t *p, tf__step_end_t *e,
                           char *text, size_t textlen)
{
    char note[512];
    bool exited = !r->aborting && !p->timed_out && !p->term_signal &&
                  !p->builtin_source;
    tf_mods_finish(p->mods);
    e->result = tf_mods_verdict(p->mods, e->result, exited, note,
                                sizeof note);
    if (note[0]) {
        size_t used = strlen(text);
        snprintf(text + used, textlen - used, "; %s", note);
    }
    e->info = tf_mods_info(p->mods);
    e->stats = tf_mods_stats(p->mods, &e->nstats);
    e->has_warnings = tf_mods_warnings(p->mods, &e->warnings);
}

/* Finishes the step's test results (reading report files unless the step
 * was stopped by an abort) and sends them before its step_finished. */
static void tf__send_test_results(tf_runner_t *r, tf_proc_t *p)
{
    char root[4096], summary[160];
    const tf_step_spec_t *st = &r->steps[p->step];
    snprintf(root, sizeof root, "%s/%s", r->basedir, r->workdir);
    tf_stepres_finish(p->tres, root, st->workdir, !r->aborting);
    size_t n = tf_stepres_emit(p->tres, r->build_id, p->step, r->ops.event_cb,
                               r->arg);
    tf_stepres_summary(p->tres, summary, sizeof summary);
    tf_info("run", "build %llu step %u (%s): %s (%zu test_results messages)",
            (unsigned long long)r->build_id, p->step, st->name, summary, n);
    size_t nprob = 0;
    char *const *probs = tf_tr_collect_problems(
        tf_stepres_collected(p->tres), &nprob);
    for (size_t i = 0; i < nprob; i++)
        tf_warn("run", "build %llu step %u (%s): test results: %s",
                (unsigned long long)r->build_id, p->step, st->name, probs[i]);
}

/* The step is over: nothing of it may survive, so the whole group gets
 * SIGKILL (harmless when it is already gone). Then report and go on. */
static void tf__end_step(tf_proc_t *p)
{
    tf_runner_t *r = p->r;
    char text[TF_PROTO_MAX_TEXTFIELD + 1];
    tf__step_end_t e;

    char rev[256];
    tf_kv_t prop = {(char *)"got_revision", rev};

    assert(r && r->proc == p);
    tf__kill_group(p, SIGKILL);
    unlink(r->pid_path);
    memset(&e, 0, sizeof e);
    tf__describe_end(r, p, &e, text, sizeof text);
    if (p->mods)
        tf__apply_mods(r, p, &e, text, sizeof text);
    if (p->builtin_source) {
        unlink(r->patch_path);
        if (tf__read_got_revision(r, rev, sizeof rev) &&
            e.result == TF_SUCCESS) {
            e.props = &prop;
            e.nprops = 1;
            snprintf(text, sizeof text, "checked out %s", rev);
        }
    }
    if (p->tres)
        tf__send_test_results(r, p);
    tf_info("run", "build %llu step %u (%s) finished: %s, %s, %lld ms",
            (unsigned long long)r->build_id, p->step, r->steps[p->step].name,
            tf__result(e.result), e.text, (long long)e.duration_ms);
    r->proc = NULL;
    tf__proc_detach(p);
    tf__emit_step_finished(r, (uint32_t)r->cur, &e);
    tf__fold_step(r, e.result);
    tf__run_from(r);
}

static void tf__maybe_end(tf_proc_t *p)
{
    if (p->exited && p->eof[0] && p->eof[1])
        tf__end_step(p);
}

static void tf__drain_timer_cb(uv_timer_t *t)
{
    tf_proc_t *p = t->data;
    if (!p->eof[0] || !p->eof[1])
        tf_warn("run", "step %u: main process exited but its output pipes "
                "are still open after %d ms (a background process?): "
                "killing process group %d", p->step, TF_RUNNER_DRAIN_MS,
                p->pgid);
    for (int i = 0; i < 2; i++) {
        if (p->reading[i])
            uv_read_stop((uv_stream_t *)&p->pipes[i]);
        p->reading[i] = false;
        p->eof[i] = true;
    }
    tf__end_step(p);
}

static void tf__exit_cb(uv_process_t *proc, int64_t exit_status,
                        int term_signal)
{
    tf_proc_t *p = proc->data;
    p->exited = true;
    p->exit_status = exit_status;
    p->term_signal = term_signal;
    uv_timer_stop(&p->idle_timer);
    uv_timer_stop(&p->total_timer);
    if (p->eof[0] && p->eof[1]) {
        tf__end_step(p);
        return;
    }
    if (!p->r->paused)
        uv_timer_start(&p->drain_timer, tf__drain_timer_cb,
                       TF_RUNNER_DRAIN_MS, 0);
}

static void tf__alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    tf_proc_t *p = h->data;
    int i = h == (uv_handle_t *)&p->pipes[0] ? 0 : 1;
    (void)suggested;
    /* One fixed buffer per pipe: a read never exceeds one output frame, so
     * each read becomes exactly one event. */
    buf->base = (char *)p->buf[i];
    buf->len = sizeof p->buf[i];
}

static void tf__read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    tf_proc_t *p = s->data;
    tf_runner_t *r = p->r;
    int i = s == (uv_stream_t *)&p->pipes[0] ? 0 : 1;
    (void)buf;

    if (nread > 0) {
        tf_stream_t stream = i == 0 ? TF_STREAM_STDOUT : TF_STREAM_STDERR;
        /* Match before handing the bytes on: output_cb may pause us, but
         * never takes the buffer away. */
        tf_mods_feed(p->mods, stream, p->buf[i], (size_t)nread);
        tf_stepres_feed(p->tres, stream, p->buf[i], (size_t)nread);
        r->ops.output_cb(r->arg, p->step, stream, p->buf[i], (size_t)nread);
        uint32_t idle = r->steps[p->step].timeout_s;
        if (idle && !p->exited && !p->term_sent && !r->paused)
            uv_timer_start(&p->idle_timer, tf__idle_timer_cb,
                           (uint64_t)idle * 1000, 0);
        return;
    }
    if (nread == 0)
        return;
    if (nread != UV_EOF)
        tf_warn("run", "step %u: reading %s: %s", p->step,
                i == 0 ? "stdout" : "stderr", uv_strerror((int)nread));
    uv_read_stop(s);
    p->reading[i] = false;
    p->eof[i] = true;
    tf__maybe_end(p);
}

/* ---- starting a step -------------------------------------------------- */

/* Adds "KEY=VALUE" to env, replacing nothing (the caller filters first). */
static int tf__env_add(char **env, size_t *n, const char *key,
                       const char *value)
{
    if (*n >= TF__ENV_MAX)
        return TF_E2BIG;
    size_t kl = strlen(key), vl = strlen(value);
    char *e = malloc(kl + vl + 2);
    if (!e)
        return TF_ENOMEM;
    memcpy(e, key, kl);
    e[kl] = '=';
    memcpy(e + kl + 1, value, vl + 1);
    env[(*n)++] = e;
    return 0;
}

static void tf__env_free(char **env)
{
    if (!env)
        return;
    for (char **e = env; *e; e++)
        free(*e);
    free(env);
}

static bool tf__env_overridden(const char *entry, const tf_step_spec_t *st)
{
    static const char *const ours[] = {"TF_BUILD_ID", "TF_BUILDER",
                                       "TF_BUILD_NUMBER", "TF_STEP_NAME",
                                       "TF_STEP_INDEX"};
    const char *eq = strchr(entry, '=');
    size_t kl = eq ? (size_t)(eq - entry) : strlen(entry);
    for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++)
        if (strlen(ours[i]) == kl && memcmp(ours[i], entry, kl) == 0)
            return true;
    for (size_t i = 0; i < st->nenv; i++)
        if (strlen(st->env[i].key) == kl &&
            memcmp(st->env[i].key, entry, kl) == 0)
            return true;
    return false;
}

/* The slave's own environment, then the step's env, then TF_* variables.
 * Returns a NULL-terminated malloc'd array (tf__env_free) or NULL. */
static char **tf__build_env(tf_runner_t *r, uint32_t step)
{
    const tf_step_spec_t *st = &r->steps[step];
    char **env = calloc(TF__ENV_MAX + 1, sizeof *env);
    size_t n = 0;
    char num[32], idx[32], id[32];
    if (!env)
        return NULL;
    for (char **e = environ; e && *e; e++) {
        if (tf__env_overridden(*e, st))
            continue;
        if (n >= TF__ENV_MAX)
            goto fail;
        env[n] = strdup(*e);
        if (!env[n])
            goto fail;
        n++;
    }
    for (size_t i = 0; i < st->nenv; i++)
        if (tf__env_add(env, &n, st->env[i].key, st->env[i].value))
            goto fail;
    snprintf(id, sizeof id, "%llu", (unsigned long long)r->build_id);
    snprintf(num, sizeof num, "%llu", (unsigned long long)r->number);
    snprintf(idx, sizeof idx, "%u", step);
    if (tf__env_add(env, &n, "TF_BUILD_ID", id) ||
        tf__env_add(env, &n, "TF_BUILDER", r->builder) ||
        tf__env_add(env, &n, "TF_BUILD_NUMBER", num) ||
        tf__env_add(env, &n, "TF_STEP_NAME", st->name) ||
        tf__env_add(env, &n, "TF_STEP_INDEX", idx))
        goto fail;
    return env;
fail:
    tf__env_free(env);
    return NULL;
}

/* Ends a step that could not start: EXCEPTION, with step_started already
 * sent so the master sees the attempt. */
static void tf__step_exception(tf_runner_t *r, const char *text)
{
    tf__step_end_t e = {.result = TF_EXCEPTION, .text = text};
    tf_warn("run", "build %llu step %zu (%s): %s",
            (unsigned long long)r->build_id, r->cur, r->steps[r->cur].name,
            text);
    tf__emit_step_finished(r, (uint32_t)r->cur, &e);
    tf__fold_step(r, TF_EXCEPTION);
}

static tf_proc_t *tf__proc_new(tf_runner_t *r, uint32_t step)
{
    tf_proc_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->r = r;
    p->step = step;
    uv_pipe_init(r->loop, &p->pipes[0], 0);
    uv_pipe_init(r->loop, &p->pipes[1], 0);
    uv_timer_init(r->loop, &p->idle_timer);
    uv_timer_init(r->loop, &p->total_timer);
    uv_timer_init(r->loop, &p->kill_timer);
    uv_timer_init(r->loop, &p->drain_timer);
    p->open_handles = 6;
    p->process.data = p;
    p->pipes[0].data = p->pipes[1].data = p;
    p->idle_timer.data = p->total_timer.data = p;
    p->kill_timer.data = p->drain_timer.data = p;
    return p;
}

/* Starts step r->cur. Returns true when a process now runs (the step ends
 * later), false when the step already ended (reported and folded). */
static bool tf__start_step(tf_runner_t *r)
{
    uint32_t step = (uint32_t)r->cur;
    const tf_step_spec_t *st = &r->steps[step];
    char text[TF_PROTO_MAX_TEXTFIELD + 1];
    char *dir = NULL, *cwd = NULL;
    char **env = NULL;
    tf_proc_t *p = NULL;
    bool running = false;
    int rc;

    tf__emit_step_started(r, step);
    tf_info("run", "build %llu step %u (%s): %s", (unsigned long long)r->build_id,
            step, st->name, st->builtin ? st->builtin : st->argv[0]);
    if (st->builtin && strcmp(st->builtin, TF_BUILTIN_SOURCE) != 0) {
        snprintf(text, sizeof text, "unknown builtin step \"%.100s\"",
                 st->builtin);
        tf__step_exception(r, text);
        goto out;
    }
    if (st->builtin && (!r->source || !r->src_ctx)) {
        tf__step_exception(r, "a source step, but build_start has no source");
        goto out;
    }

    dir = tf_path_join(r->basedir, r->workdir);
    cwd = dir && *st->workdir ? tf_path_join(dir, st->workdir) : NULL;
    if (!dir || (*st->workdir && !cwd)) {
        tf__step_exception(r, "out of memory");
        goto out;
    }
    if (!tf_relpath_valid(st->workdir)) {
        snprintf(text, sizeof text, "invalid step workdir \"%.200s\"",
                 st->workdir);
        tf__step_exception(r, text);
        goto out;
    }
    rc = tf_mkdir_p(cwd ? cwd : dir, 0755);
    if (rc) {
        snprintf(text, sizeof text, "cannot create workdir \"%.1000s\": %s",
                 cwd ? cwd : dir, tf_strerror(rc));
        tf__step_exception(r, text);
        goto out;
    }
    env = tf__build_env(r, step);
    p = tf__proc_new(r, step);
    if (env && p && st->builtin) {
        size_t n = 0;
        while (env[n])
            n++;
        if (tf_source_env(r->src_ctx, r->source, r->patch_path, r->props_path,
                          env, &n, TF__ENV_MAX)) {
            tf__env_free(env);
            env = NULL;
        }
        p->builtin_source = true;
        unlink(r->props_path);
    }
    if (!env || !p) {
        tf__step_exception(r, "cannot start the step: out of memory or too "
                              "many environment variables");
        goto out;
    }
    if (st->test_results && !st->builtin &&
        tf_stepres_new(st->test_results, &p->tres) != 0)
        tf_warn("run", "build %llu step %u (%s): out of memory: its test "
                "results are not collected", (unsigned long long)r->build_id,
                step, st->name);
    if (st->modifiers && !st->builtin) {
        char why[512];
        rc = tf_mods_new(st->modifiers, &p->mods, why, sizeof why);
        if (rc) {
            snprintf(text, sizeof text, "invalid command modifiers: %s",
                     rc == TF_EINVAL ? why : tf_strerror(rc));
            tf__step_exception(r, text);
            goto out;
        }
    }

    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE; /* libuv opens /dev/null for fds 0..2 */
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&p->pipes[0];
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&p->pipes[1];
    uv_process_options_t opt;
    memset(&opt, 0, sizeof opt);
    opt.exit_cb = tf__exit_cb;
    char *source_argv[] = {(char *)"/bin/sh", (char *)"-c",
                           (char *)tf_source_script, (char *)"tf-source", NULL};
    opt.file = st->builtin ? source_argv[0] : st->argv[0];
    opt.args = st->builtin ? source_argv : st->argv;
    opt.env = env;
    opt.cwd = cwd ? cwd : dir;
    /* DETACHED = setsid() in the child: a new session and process group
     * whose id is the child's pid, so one kill(-pgid) reaches everything
     * the step starts, and a terminal's signals never do. */
    opt.flags = UV_PROCESS_DETACHED;
    opt.stdio_count = 3;
    opt.stdio = stdio;
    p->start_mono = tf_mono_ms();
    rc = uv_spawn(r->loop, &p->process, &opt);
    p->spawned = true; /* uv_spawn initialises the handle even on failure */
    p->open_handles++;
    if (rc) {
        snprintf(text, sizeof text, "cannot run \"%.1000s\": %s", opt.file,
                 uv_strerror(rc));
        tf__proc_detach(p);
        p = NULL;
        tf__step_exception(r, text);
        goto out;
    }
    p->pgid = p->process.pid;
    tf__write_pid_file(r, p->pgid);
    tf_debug("run", "build %llu step %u: pid %d", (unsigned long long)r->build_id,
             step, p->pgid);
    for (int i = 0; i < 2; i++) {
        if (r->paused)
            continue;
        uv_read_start((uv_stream_t *)&p->pipes[i], tf__alloc_cb, tf__read_cb);
        p->reading[i] = true;
    }
    if (st->timeout_s && !r->paused)
        uv_timer_start(&p->idle_timer, tf__idle_timer_cb,
                       (uint64_t)st->timeout_s * 1000, 0);
    if (st->max_time_s)
        uv_timer_start(&p->total_timer, tf__total_timer_cb,
                       (uint64_t)st->max_time_s * 1000, 0);
    r->proc = p;
    p = NULL;
    running = true;
out:
    if (p)
        tf__proc_detach(p);
    tf__env_free(env);
    free(cwd);
    free(dir);
    return running;
}

/* Runs or skips steps from r->cur until one is running or none is left. */
static void tf__run_from(tf_runner_t *r)
{
    while (r->cur < r->nsteps) {
        const tf_step_spec_t *st = &r->steps[r->cur];
        if (r->aborting) {
            if (r->abort_report_rest)
                tf__skip_step(r);
            else
                r->cur++;
            continue;
        }
        if (r->halted && !st->flags.always_run) {
            tf__skip_step(r);
            continue;
        }
        if (tf__start_step(r))
            return;
    }
    tf__finish_build(r);
}

/* ---- public ----------------------------------------------------------- */

int tf_runner_new(uv_loop_t *loop, const char *basedir, const char *workdir,
                  const tf_msg_t *bs,
                  const tf_source_ctx_t *src_ctx, const tf_runner_ops_t *ops,
                  void *arg, tf_runner_t **out)
{
    int rc = 0;
    char name[64];
    tf_runner_t *r;

    *out = NULL;
    if (bs->type != TF_MSG_BUILD_START ||
        !tf_name_valid(bs->u.build_start.workdir) || !workdir ||
        strncmp(workdir, bs->u.build_start.workdir,
                strlen(bs->u.build_start.workdir)) != 0)
        return TF_EINVAL;
    r = calloc(1, sizeof *r);
    if (!r)
        return TF_ENOMEM;
    r->loop = loop;
    r->ops = *ops;
    r->arg = arg;
    r->build_id = bs->u.build_start.build_id;
    r->number = bs->u.build_start.number;
    r->result = TF_SUCCESS;
    r->state = TF_RUN_IDLE;
    r->src_ctx = src_ctx;
    snprintf(name, sizeof name, "%llu.pid", (unsigned long long)r->build_id);
    r->basedir = strdup(basedir);
    r->run_dir = tf_path_join(basedir, ".run");
    r->pid_path = r->run_dir ? tf_path_join(r->run_dir, name) : NULL;
    snprintf(name, sizeof name, "%llu.patch", (unsigned long long)r->build_id);
    r->patch_path = r->run_dir ? tf_path_join(r->run_dir, name) : NULL;
    snprintf(name, sizeof name, "%llu.props", (unsigned long long)r->build_id);
    r->props_path = r->run_dir ? tf_path_join(r->run_dir, name) : NULL;
    r->builder = strdup(bs->u.build_start.builder);
    r->workdir = strdup(workdir);
    r->steps = calloc(bs->u.build_start.nsteps ? bs->u.build_start.nsteps : 1,
                      sizeof *r->steps);
    if (!r->basedir || !r->run_dir || !r->pid_path || !r->patch_path ||
        !r->props_path || !r->builder || !r->workdir || !r->steps) {
        rc = TF_ENOMEM;
        goto out;
    }
    if (bs->u.build_start.source) {
        r->source = calloc(1, sizeof *r->source);
        if (!r->source ||
            tf_source_copy(r->source, bs->u.build_start.source) != 0) {
            free(r->source);
            r->source = NULL;
            rc = TF_ENOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < bs->u.build_start.nsteps; i++) {
        rc = tf_step_spec_copy(&r->steps[i], &bs->u.build_start.steps[i]);
        if (rc)
            goto out;
        r->nsteps++;
    }
    *out = r;
    r = NULL;
out:
    tf_runner_destroy(r);
    return rc;
}

void tf_runner_start(tf_runner_t *r)
{
    if (r->state != TF_RUN_IDLE)
        return;
    r->state = TF_RUN_ACTIVE;
    tf__run_from(r);
}

void tf_runner_abort(tf_runner_t *r, tf_result_t step_result,
                     const char *text, bool report_rest)
{
    if (r->state == TF_RUN_DONE || r->aborting)
        return;
    r->aborting = true;
    r->abort_result = step_result;
    r->abort_report_rest = report_rest;
    tf__copy_text(r->abort_text, sizeof r->abort_text, text);
    if (r->state == TF_RUN_IDLE)
        return; /* tf_runner_start will report the whole build */
    tf_proc_t *p = r->proc;
    if (!p)
        return;
    tf_info("run", "build %llu: stopping step %u (%s): %s",
            (unsigned long long)r->build_id, p->step, r->steps[p->step].name,
            r->abort_text);
    uv_timer_stop(&p->idle_timer);
    uv_timer_stop(&p->total_timer);
    if (!p->exited) {
        tf__begin_kill(p);
        return;
    }
    /* Only leftover pipe holders remain: end the step on the next turn
     * rather than from inside whatever called us. */
    tf__kill_group(p, SIGKILL);
    if (r->paused)
        tf_runner_resume(r);
    uv_timer_start(&p->drain_timer, tf__drain_timer_cb, 0, 0);
}

void tf_runner_pause(tf_runner_t *r)
{
    tf_proc_t *p = r->proc;
    if (r->paused)
        return;
    r->paused = true;
    if (!p)
        return;
    for (int i = 0; i < 2; i++) {
        if (p->reading[i])
            uv_read_stop((uv_stream_t *)&p->pipes[i]);
        p->reading[i] = false;
    }
    uv_timer_stop(&p->idle_timer);
    uv_timer_stop(&p->drain_timer);
}

void tf_runner_resume(tf_runner_t *r)
{
    tf_proc_t *p = r->proc;
    if (!r->paused)
        return;
    r->paused = false;
    if (!p)
        return;
    for (int i = 0; i < 2; i++) {
        if (p->eof[i] || p->reading[i])
            continue;
        uv_read_start((uv_stream_t *)&p->pipes[i], tf__alloc_cb, tf__read_cb);
        p->reading[i] = true;
    }
    uint32_t idle = r->steps[p->step].timeout_s;
    if (p->exited)
        uv_timer_start(&p->drain_timer, tf__drain_timer_cb,
                       TF_RUNNER_DRAIN_MS, 0);
    else if (idle && !p->term_sent)
        uv_timer_start(&p->idle_timer, tf__idle_timer_cb,
                       (uint64_t)idle * 1000, 0);
}

bool tf_runner_done(const tf_runner_t *r)
{
    return r->state == TF_RUN_DONE;
}

void tf_runner_destroy(tf_runner_t *r)
{
    if (!r)
        return;
    if (r->proc) {
        tf__kill_group(r->proc, SIGKILL);
        if (r->pid_path)
            unlink(r->pid_path);
        tf__proc_detach(r->proc);
        r->proc = NULL;
    }
    for (size_t i = 0; i < r->nsteps; i++)
        tf_step_spec_clear(&r->steps[i]);
    free(r->steps);
    if (r->source) {
        tf_source_clear(r->source);
        free(r->source);
    }
    free(r->basedir);
    free(r->run_dir);
    free(r->pid_path);
    free(r->patch_path);
    free(r->props_path);
    free(r->builder);
    free(r->workdir);
    free(r);
}
