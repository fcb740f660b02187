/*
 * loadslaves.c - tf-loadslaves: up to 10,000 emulated build slaves in one
 * process, for measuring a real tf-master at scale (tests/bench,
 * docs/testing.md "Benchmarks").
 *
 * Each emulated slave opens its own websocket link to the master and speaks
 * the protocol of docs/protocol.md as tf-slave does: it answers the
 * challenge with hello (HMAC-SHA256 of the nonce with its own secret, read
 * from DIR/NAME), answers pings, and runs every build_start it is given at
 * once: step_started, the configured output in binary frames, step_finished
 * SUCCESS for each step, then build_finished, each event numbered; a build
 * is done when the master acknowledges its last event (committed). Aborts
 * are honoured (CANCELLED, the rest SKIPPED). Messages are encoded and
 * decoded with proto/, HMAC comes from common/, so what the master sees is
 * byte for byte what a slave could send.
 *
 * What it measures and prints: connection setup (all links, and each
 * link's connect-to-welcome time), start latency (the build_start's arrival,
 * the moment its bytes were read from the socket, after the release mark,
 * and after the request's own submission when the request carries the
 * property bench_t0_us), builds per second to the last
 * acknowledgement, output MiB/s, the master's RSS and CPU from
 * /proc/PID (--master-pid) and this client's own CPU, so a reader can tell
 * whether the client or the master was the bottleneck.
 *
 * Why a hand-written websocket client (wsc.c) rather than libwebsockets'
 * client: one thread holds 10,000 links, so per-link cost matters; wsc
 * shares one read buffer between all links, batches every frame queued in
 * a loop turn into one write, masks eight bytes at a time, and every
 * buffer's cap is in plain sight. It also avoids lws's client-side
 * foreign-loop teardown dance (shared/notes) in a tool that must stop
 * cleanly after a run. The protocol layer (proto/, common/) is the
 * project's own, as required.
 *
 * Control: the release mark defaults to the moment every link is ready;
 * with --control, stdin takes lines "mark [WALL_US]" (the release moment,
 * e.g. when the bench sent SIGHUP), "report" and "quit". The run ends when
 * --expect builds are done, on "quit"/EOF/SIGINT/SIGTERM, or at --timeout.
 *
 * Memory is capped: builds per slave (--max-builds), records
 * (--max-records), each link's send queue (wsc.h) and all links' queued
 * output together (--queue-mib): a master that stops reading (backpressure)
 * stops the producers instead of growing this process.
 *
 * Exit status: 0 when the run completed; 1 when a link failed, a build was
 * not finished by --timeout, or the master broke the protocol; 2 for bad
 * arguments.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "buf.h"
#include "clock.h"
#include "list.h"
#include "lsmsg.h"
#include "names.h"
#include "proto.h"
#include "tf_err.h"
#include "util.h"
#include "wsc.h"

#define LS_MAX_SLAVES 10000
#define LS_HIGH_WATER (256u * 1024) /* per link: stop producing above this */
#define LS_MAX_BUILDERS 4096        /* distinct builder names remembered */
#define LS_MAX_FAILS 12             /* distinct failure messages kept */
#define LS_CONTENT_GEN (1u << 20)   /* generated output pattern, bytes */
#define LS_CONTENT_MAX (512u << 20) /* --output-file cap */
#define LS_LINE_MAX 4096            /* a control line on stdin */
#define LS_PUMP_TURN 64             /* slaves' emulated work per loop turn */
#define LS_PARSE_TURN 64            /* links' input parsed per loop turn */
/* A finished build waits for the ack of its last event while the slave
 * already runs the next one (the master frees the slot when it has read
 * build_finished, before committing it); this many may wait per slave. */
#define LS_UNACKED_MAX 64

typedef enum {
    B_STEP_START = 0, /* next: step_started (or build_finished after the last) */
    B_OUTPUT,         /* output frames of the current step */
    B_STEP_WAIT,      /* output sent; waiting for --step-ms */
    B_STEP_END,       /* next: step_finished */
    B_FINISH,         /* next: build_finished */
    B_SENT_ALL,       /* everything sent; waiting for the final ack */
} bphase_t;

typedef struct lbuild {
    bool used;
    bool aborted;
    bphase_t phase;
    uint64_t id;
    uint32_t nsteps;
    uint32_t step;
    uint64_t seq;       /* last event number produced */
    uint64_t final_seq; /* seq of build_finished, once sent */
    uint64_t out_left;  /* output bytes left in this step */
    int64_t step_t0_ms; /* tf_now_ms() at step_started */
    uint64_t due_ms;    /* uv_now() when the step may end */
    size_t rec;         /* index in g.recs, or SIZE_MAX */
} lbuild_t;

typedef enum {
    S_WAITING = 0, /* not yet connecting */
    S_CONNECTING,  /* TCP and upgrade */
    S_CHALLENGE,   /* upgraded; waiting for the challenge */
    S_HELLO,       /* hello sent; waiting for welcome */
    S_READY,
    S_CLOSED,
} sstate_t;

typedef struct lslave {
    tf_wsc_t ws;
    uint32_t idx;
    sstate_t state;
    char name[TF_NAME_MAX + 1];
    char *secret;
    uint64_t t_start_us, t_ready_us; /* mono */
    lbuild_t *builds; /* nslots slots: running and awaiting their ack */
    unsigned nslots;
    unsigned nrunning; /* builds not yet at B_SENT_ALL */
    unsigned rr;
    size_t queued_known; /* tf_wsc_queued at the last sync */
    tf_list_t starved;   /* on g.starved while waiting for the global cap */
    tf_list_t pumpn;     /* on g.pumpq until this loop turn's reads are done */
    uv_timer_t timer;    /* wakes a step waiting for --step-ms */
    char error[200];     /* the master's last error message */
} lslave_t;

typedef struct rec {
    uint64_t build_id;
    uint32_t slave;
    uint32_t builder;    /* index in g.builders */
    int64_t t0_us;       /* bench_t0_us property (wall), or 0 */
    int64_t arrive_us;   /* build_start received (wall) */
    int64_t first_out_us;
    int64_t sent_us;     /* build_finished queued (wall) */
    int64_t done_us;     /* its ack received (wall), or 0 */
    uint64_t out_bytes;
} rec_t;

typedef struct fail {
    char msg[240];
    unsigned count;
} fail_t;

typedef struct opts {
    const char *url;
    char host[80];
    char hostport[96];
    char path[64];
    int port;
    unsigned nslaves;
    const char *prefix;
    unsigned first;
    const char *secret_dir;
    unsigned max_builds;
    char **tags;
    size_t ntags;
    unsigned parallel;
    uint64_t output_bytes;
    size_t chunk;
    const char *output_file;
    unsigned step_ms;
    long long expect; /* -1: no target */
    double timeout_s;
    double connect_timeout_s;
    int master_pid;
    const char *records;
    size_t max_records;
    size_t queue_max;
    bool json;
    bool control;
    bool quiet;
} opts_t;

static struct {
    opts_t o;
    uv_loop_t *loop;
    struct sockaddr_storage addr;
    lslave_t *slaves;
    unsigned next_connect, connecting, ready, closed_count, failed;
    unsigned conn_failed; /* links that never became ready */
    unsigned open_links; /* tf_wsc_connect succeeded, closed_cb not yet */
    bool all_ready_reported, finishing;
    int exit_code;
    uint64_t t_begin_mono_us, t_all_ready_mono_us;
    int64_t mark_us; /* wall; 0 until set */
    rec_t *recs;
    size_t nrecs, recs_cap;
    size_t rec_dropped;
    char *builders[LS_MAX_BUILDERS];
    uint32_t nbuilders;
    uint64_t started, done, aborted, lost;
    uint64_t out_bytes_sent;
    size_t queued;
    tf_list_t starved;
    tf_list_t pumpq;       /* slaves to pump once this turn's reads are done */
    uv_check_t pump_check; /* runs them, after the turn's I/O callbacks */
    uv_idle_t pump_idle;   /* active while some wait for the next turn */
    uint8_t *content;
    size_t content_len;
    fail_t fails[LS_MAX_FAILS];
    unsigned nfail_kinds;
    char *tags_copy; /* --tags, split in place; g.o.tags points into it */
    uv_timer_t tick;
    uv_timer_t endt; /* bounds the polite close at the end */
    uv_signal_t sigint, sigterm;
    uv_pipe_t in;
    bool in_open;
    tf_buf_t line;
    long master_rss0_kb, master_rss_ready_kb;
    double master_cpu0_s, master_cpu_ready_s, master_cpu_mark_s;
    bool cpu_mark_taken;
    double self_cpu_mark_s; /* this process's CPU at the mark */
} g;

/* --- small helpers --- */

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t mono_us(void)
{
    return uv_hrtime() / 1000;
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void note(const char *fmt, ...)
{
    if (g.o.quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("tf-loadslaves: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Counts a failure; the same message (after the slave's name) is kept
 * once with a count, so 5,000 identical refusals print as one line. */
static void fail_record(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail_record(const char *fmt, ...)
{
    char msg[240];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    g.failed++;
    for (unsigned i = 0; i < g.nfail_kinds; i++)
        if (strcmp(g.fails[i].msg, msg) == 0) {
            g.fails[i].count++;
            return;
        }
    if (g.nfail_kinds < LS_MAX_FAILS) {
        snprintf(g.fails[g.nfail_kinds].msg, sizeof(g.fails[0].msg), "%s",
                 msg);
        g.fails[g.nfail_kinds++].count = 1;
    }
}

/* VmRSS and VmHWM of the master, in KiB; -1 when unknown. */
static void master_mem(long *rss_kb, long *hwm_kb)
{
    *rss_kb = -1;
    if (hwm_kb)
        *hwm_kb = -1;
    if (g.o.master_pid <= 0)
        return;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", g.o.master_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        long v;
        if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
            *rss_kb = v;
        else if (hwm_kb && sscanf(line, "VmHWM: %ld kB", &v) == 1)
            *hwm_kb = v;
    }
    fclose(f);
}

/* User + system CPU seconds of the master so far; -1 when unknown. */
static double master_cpu(void)
{
    if (g.o.master_pid <= 0)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", g.o.master_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* After ")": state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime (fields 3..15). */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static uint32_t builder_index(const char *name)
{
    for (uint32_t i = 0; i < g.nbuilders; i++)
        if (strcmp(g.builders[i], name) == 0)
            return i;
    if (g.nbuilders == LS_MAX_BUILDERS)
        return UINT32_MAX;
    char *s = strdup(name);
    if (!s)
        return UINT32_MAX;
    g.builders[g.nbuilders] = s;
    return g.nbuilders++;
}

static size_t rec_new(void)
{
    if (g.nrecs == g.recs_cap) {
        if (g.recs_cap >= g.o.max_records) {
            g.rec_dropped++;
            return SIZE_MAX;
        }
        size_t ncap = g.recs_cap ? g.recs_cap * 2 : 4096;
        if (ncap > g.o.max_records)
            ncap = g.o.max_records;
        rec_t *r = realloc(g.recs, ncap * sizeof(*r));
        if (!r) {
            g.rec_dropped++;
            return SIZE_MAX;
        }
        g.recs = r;
        g.recs_cap = ncap;
    }
    memset(&g.recs[g.nrecs], 0, sizeof(g.recs[0]));
    return g.nrecs++;
}

static rec_t *rec_of(const lbuild_t *b)
{
    return b->rec == SIZE_MAX ? NULL : &g.recs[b->rec];
}

/* --- output content --- */

/* A deterministic, compiler-like pattern (compile lines, warnings with a
 * caret line, progress), so compressing stores see realistic text. */
static int content_generate(void)
{
    static const char *dirs[] = {"src/core", "src/net", "src/io", "lib/util",
                                 "tests/unit", "tools/gen"};
    static const char *words[] = {"buffer", "index", "count", "state",
                                  "node", "length", "result", "entry",
                                  "flags", "offset", "queue", "handle"};
    tf_buf_t b;
    tf_buf_init(&b, LS_CONTENT_GEN + 1024);
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    unsigned n = 0;
    int rc = 0;
    while (rc == 0 && b.len < LS_CONTENT_GEN) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const char *d = dirs[x % 6];
        const char *w = words[(x >> 8) % 12];
        unsigned k = (unsigned)((x >> 16) % 400), line = (unsigned)((x >> 24) % 3000);
        n++;
        switch ((x >> 40) % 10) {
        case 0:
            rc = tf_buf_printf(&b, "%s/%s_%u.c:%u:%u: warning: unused variable "
                               "'%s' [-Wunused-variable]\n  %u |     int %s = "
                               "0;\n      |         ^~~~~\n",
                               d, w, k, line, 9, w, line, w);
            break;
        case 1:
            rc = tf_buf_printf(&b, "[%3u%%] Linking C executable bin/%s_%u\n",
                               n % 101, w, k);
            break;
        default:
            rc = tf_buf_printf(&b, "[%3u%%] Building C object %s/CMakeFiles/"
                               "%s.dir/%s_%u.c.o\n",
                               n % 101, d, w, w, k);
            break;
        }
    }
    if (rc) {
        tf_buf_free(&b);
        return rc;
    }
    g.content_len = b.len;
    g.content = tf_buf_steal(&b, NULL);
    return g.content ? 0 : TF_ENOMEM;
}

static int content_load(void)
{
    if (g.o.output_bytes == 0)
        return 0;
    if (!g.o.output_file)
        return content_generate();
    char *data = NULL;
    size_t len = 0;
    int rc = tf_read_file(g.o.output_file, LS_CONTENT_MAX, &data, &len);
    if (rc) {
        fprintf(stderr, "tf-loadslaves: cannot read --output-file %s: %s\n",
                g.o.output_file, tf_strerror(rc));
        return rc;
    }
    if (len == 0) {
        fprintf(stderr, "tf-loadslaves: --output-file %s is empty\n",
                g.o.output_file);
        free(data);
        return TF_EINVAL;
    }
    g.content = (uint8_t *)data;
    g.content_len = len;
    return 0;
}

/* --- sending --- */

static void slave_sync_queued(lslave_t *s)
{
    size_t q = s->state == S_CLOSED ? 0 : tf_wsc_queued(&s->ws);
    g.queued = g.queued - s->queued_known + q;
    s->queued_known = q;
}

/* Sends m as one text frame. The per-build events and pongs take the
 * hand-written writers of lsmsg.c (the same bytes, no allocation); the
 * rest, and anything those refuse, go through tf_msg_encode, whose error
 * is the one reported. */
static int slave_send_msg(lslave_t *s, const tf_msg_t *m)
{
    char fast[LS_MSG_MAX];
    size_t len = 0;
    if (ls_msg_encode(m, fast, sizeof(fast), &len) == 0) {
        int rc = tf_wsc_send(&s->ws, TF_WSC_OP_TEXT, fast, len, NULL, 0);
        slave_sync_queued(s);
        return rc;
    }
    char *text = NULL;
    int rc = tf_msg_encode(m, &text, &len);
    if (rc) {
        fail_record("cannot encode %s: %s", tf_msg_type_name(m->type),
                    tf_strerror(rc));
        return rc;
    }
    rc = tf_wsc_send(&s->ws, TF_WSC_OP_TEXT, text, len, NULL, 0);
    free(text);
    slave_sync_queued(s);
    return rc;
}

static void slave_pump(lslave_t *s);

static void slave_timer_cb(uv_timer_t *t)
{
    slave_pump(t->data);
}

/* Sends step_finished for step b->step with result res. */
static int send_step_finished(lslave_t *s, lbuild_t *b, tf_result_t res)
{
    tf_msg_t m = {.type = TF_MSG_STEP_FINISHED};
    int64_t now = tf_now_ms();
    bool skipped = res == TF_SKIPPED;
    m.u.step_finished.build_id = b->id;
    m.u.step_finished.seq = b->seq + 1;
    m.u.step_finished.step = b->step;
    m.u.step_finished.result = res;
    m.u.step_finished.has_exit_code = res == TF_SUCCESS;
    m.u.step_finished.exit_code = 0;
    m.u.step_finished.duration_ms = skipped ? 0 : now - b->step_t0_ms;
    m.u.step_finished.time_ms = now;
    m.u.step_finished.text = skipped              ? "skipped"
                             : res == TF_SUCCESS ? "exit 0"
                                                  : "aborted";
    int rc = slave_send_msg(s, &m);
    if (rc == 0)
        b->seq++;
    return rc;
}

/* Produces the next event of b. Returns 0 (sent or nothing to send now),
 * TF_EFULL (the link's queue is full: try again when it drains) or another
 * error (the link is broken). *waiting is set when b waits for a timer. */
static int build_step(lslave_t *s, lbuild_t *b, bool *waiting)
{
    rec_t *r = rec_of(b);
    int rc = 0;
    *waiting = false;
    if (b->aborted && b->phase >= B_OUTPUT && b->phase <= B_STEP_END) {
        rc = send_step_finished(s, b, TF_CANCELLED);
        if (rc == 0) {
            b->step++;
            b->phase = B_STEP_START;
        }
        return rc;
    }
    switch (b->phase) {
    case B_STEP_START:
        if (b->step >= b->nsteps) {
            b->phase = B_FINISH;
            return 0;
        }
        if (b->aborted) {
            rc = send_step_finished(s, b, TF_SKIPPED);
            if (rc == 0)
                b->step++;
            return rc;
        } else {
            tf_msg_t m = {.type = TF_MSG_STEP_STARTED};
            b->step_t0_ms = tf_now_ms();
            m.u.step_started.build_id = b->id;
            m.u.step_started.seq = b->seq + 1;
            m.u.step_started.step = b->step;
            m.u.step_started.name = "step";
            m.u.step_started.time_ms = b->step_t0_ms;
            rc = slave_send_msg(s, &m);
            if (rc)
                return rc;
            b->seq++;
            b->out_left = g.o.output_bytes;
            b->due_ms = uv_now(g.loop) + g.o.step_ms;
            b->phase = B_OUTPUT;
        }
        return 0;
    case B_OUTPUT: {
        if (b->out_left == 0) {
            b->phase = B_STEP_WAIT;
            return 0;
        }
        size_t n = g.o.chunk;
        if (n > b->out_left)
            n = (size_t)b->out_left;
        uint64_t sent = g.o.output_bytes - b->out_left;
        size_t off = (size_t)(sent % g.content_len);
        if (n > g.content_len - off)
            n = g.content_len - off; /* wrap at the pattern's end */
        tf_output_hdr_t h = {.stream = TF_STREAM_STDOUT,
                             .step = (uint16_t)b->step,
                             .length = (uint32_t)n,
                             .build_id = b->id,
                             .seq = b->seq + 1};
        uint8_t hdr[TF_PROTO_OUT_HDR];
        rc = tf_output_encode_hdr(&h, hdr);
        if (rc == 0)
            rc = tf_wsc_send(&s->ws, TF_WSC_OP_BINARY, hdr, sizeof(hdr),
                             g.content + off, n);
        slave_sync_queued(s);
        if (rc)
            return rc;
        b->seq++;
        b->out_left -= n;
        g.out_bytes_sent += n;
        if (r) {
            if (!r->first_out_us)
                r->first_out_us = wall_us();
            r->out_bytes += n;
        }
        return 0;
    }
    case B_STEP_WAIT:
        if (uv_now(g.loop) < b->due_ms) {
            *waiting = true;
            return 0;
        }
        b->phase = B_STEP_END;
        return 0;
    case B_STEP_END:
        rc = send_step_finished(s, b, TF_SUCCESS);
        if (rc == 0) {
            b->step++;
            b->phase = B_STEP_START;
        }
        return rc;
    case B_FINISH: {
        tf_msg_t m = {.type = TF_MSG_BUILD_FINISHED};
        m.u.build_finished.build_id = b->id;
        m.u.build_finished.seq = b->seq + 1;
        m.u.build_finished.result = b->aborted ? TF_CANCELLED : TF_SUCCESS;
        m.u.build_finished.time_ms = tf_now_ms();
        rc = slave_send_msg(s, &m);
        if (rc)
            return rc;
        b->seq++;
        b->final_seq = b->seq;
        b->phase = B_SENT_ALL;
        s->nrunning--;
        if (r)
            r->sent_us = wall_us();
        return 0;
    }
    case B_SENT_ALL:
        return 0;
    }
    return 0;
}

/* Produces events for s's builds, round robin, until each is waiting or
 * the link's (or every link's) queue is full. */
static void slave_pump(lslave_t *s)
{
    if (s->state != S_READY)
        return;
    uint64_t next_due = 0;
    for (;;) {
        if (tf_wsc_queued(&s->ws) >= LS_HIGH_WATER)
            return; /* drained_cb calls again */
        if (g.queued >= g.o.queue_max) {
            if (!tf_list_linked(&s->starved))
                tf_list_push_back(&g.starved, &s->starved);
            return;
        }
        bool progressed = false;
        next_due = 0;
        for (unsigned k = 0; k < s->nslots; k++) {
            lbuild_t *b = &s->builds[(s->rr + k) % s->nslots];
            if (!b->used || b->phase == B_SENT_ALL)
                continue;
            bool waiting = false;
            bphase_t before = b->phase;
            uint64_t seq = b->seq;
            int rc = build_step(s, b, &waiting);
            if (rc == TF_EFULL)
                return;
            if (rc) {
                fail_record("%s: cannot send: %s", "link", tf_strerror(rc));
                tf_wsc_abort(&s->ws, "send failed");
                return;
            }
            if (waiting) {
                if (!next_due || b->due_ms < next_due)
                    next_due = b->due_ms;
                continue;
            }
            if (b->phase != before || b->seq != seq) {
                progressed = true;
                s->rr = (s->rr + k + 1) % s->nslots;
                break;
            }
        }
        if (!progressed)
            break;
    }
    if (next_due) {
        uint64_t now = uv_now(g.loop);
        uv_timer_start(&s->timer, slave_timer_cb,
                       next_due > now ? next_due - now : 0, 0);
    }
}

/* --- the run's end and the report --- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

typedef struct dist {
    size_t n;
    double p50, p90, p99, max, min;
} dist_t;

/* Percentiles of v[0..n) (microseconds) in milliseconds; sorts v. */
static dist_t dist_of(int64_t *v, size_t n)
{
    dist_t d = {0};
    d.n = n;
    if (!n)
        return d;
    qsort(v, n, sizeof(*v), cmp_i64);
#define PCT(p) (v[(size_t)((double)(n - 1) * (p) + 0.5)] / 1000.0)
    d.p50 = PCT(0.50);
    d.p90 = PCT(0.90);
    d.p99 = PCT(0.99);
#undef PCT
    d.max = v[n - 1] / 1000.0;
    d.min = v[0] / 1000.0;
    return d;
}

static json_t *dist_json(const dist_t *d)
{
    if (!d->n)
        return json_null();
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f}", "n", (json_int_t)d->n,
                     "p50_ms", d->p50, "p90_ms", d->p90, "p99_ms", d->p99,
                     "max_ms", d->max, "min_ms", d->min);
}

static void dist_print(const char *label, const dist_t *d)
{
    if (!d->n) {
        printf("  %s: none\n", label);
        return;
    }
    printf("  %s (ms): p50 %.1f  p90 %.1f  p99 %.1f  max %.1f  (n=%zu)\n",
           label, d->p50, d->p90, d->p99, d->max, d->n);
}

static void emit_json(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    if (s) {
        printf("JSON %s\n", s);
        free(s);
    }
    json_decref(o);
    fflush(stdout);
}

static json_t *fails_json(void)
{
    json_t *a = json_array();
    for (unsigned i = 0; a && i < g.nfail_kinds; i++)
        json_array_append_new(a, json_pack("{s:s, s:i}", "message",
                                           g.fails[i].msg, "count",
                                           (int)g.fails[i].count));
    return a;
}

static void fails_print(void)
{
    for (unsigned i = 0; i < g.nfail_kinds; i++)
        printf("  failed x%u: %s\n", g.fails[i].count, g.fails[i].msg);
    if (g.failed > 0 && g.nfail_kinds == LS_MAX_FAILS)
        printf("  (only the first %d distinct failures are listed)\n",
               LS_MAX_FAILS);
}

static void report_ready(void)
{
    uint64_t setup_us = g.t_all_ready_mono_us - g.t_begin_mono_us;
    int64_t *v = malloc((g.o.nslaves ? g.o.nslaves : 1) * sizeof(*v));
    size_t n = 0;
    for (unsigned i = 0; v && i < g.o.nslaves; i++)
        if (g.slaves[i].t_ready_us)
            v[n++] = (int64_t)(g.slaves[i].t_ready_us -
                               g.slaves[i].t_start_us);
    dist_t d = dist_of(v, n);
    free(v);
    master_mem(&g.master_rss_ready_kb, NULL);
    g.master_cpu_ready_s = master_cpu();
    double per_link = -1;
    if (g.master_rss_ready_kb >= 0 && g.master_rss0_kb >= 0 && g.ready)
        per_link = (double)(g.master_rss_ready_kb - g.master_rss0_kb) /
                   g.ready;
    printf("tf-loadslaves: %u of %u links ready in %.2f s (%u failed, %u at "
           "a time)\n",
           g.ready, g.o.nslaves, setup_us / 1e6, g.conn_failed,
           g.o.parallel);
    dist_print("connect -> welcome per link", &d);
    if (g.master_rss_ready_kb >= 0)
        printf("  master RSS %.1f MiB with the links up (%.1f MiB before; "
               "%.1f KiB per link)\n",
               g.master_rss_ready_kb / 1024.0, g.master_rss0_kb / 1024.0,
               per_link);
    fails_print();
    fflush(stdout);
    if (g.o.json) {
        json_t *o = json_pack(
            "{s:s, s:i, s:i, s:i, s:f, s:o, s:I, s:I, s:f, s:o}", "event",
            "ready", "slaves", (int)g.o.nslaves, "ready", (int)g.ready,
            "failed", (int)g.conn_failed, "setup_s", setup_us / 1e6,
            "handshake", dist_json(&d), "master_rss_kb_before",
            (json_int_t)g.master_rss0_kb, "master_rss_kb_ready",
            (json_int_t)g.master_rss_ready_kb, "master_kb_per_link", per_link,
            "failures", fails_json());
        if (o)
            emit_json(o);
    }
}

static void report_summary(const char *why)
{
    int64_t *lat_mark = malloc((g.nrecs + 1) * sizeof(int64_t));
    int64_t *lat_sub = malloc((g.nrecs + 1) * sizeof(int64_t));
    size_t nm = 0, ns = 0, before_mark = 0;
    int64_t first_out = 0, last_out_sent = 0, last_done = 0, last_arrive = 0;
    int64_t first_arrive = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; lat_mark && lat_sub && i < g.nrecs; i++) {
        const rec_t *r = &g.recs[i];
        if (g.mark_us && r->arrive_us >= g.mark_us)
            lat_mark[nm++] = r->arrive_us - g.mark_us;
        else if (g.mark_us)
            before_mark++;
        if (r->t0_us)
            lat_sub[ns++] = r->arrive_us - r->t0_us;
        if (r->first_out_us && (!first_out || r->first_out_us < first_out))
            first_out = r->first_out_us;
        if (r->out_bytes && r->sent_us > last_out_sent)
            last_out_sent = r->sent_us;
        if (r->done_us > last_done)
            last_done = r->done_us;
        if (r->arrive_us > last_arrive)
            last_arrive = r->arrive_us;
        if (!first_arrive || r->arrive_us < first_arrive)
            first_arrive = r->arrive_us;
        bytes += r->out_bytes;
    }
    dist_t dm = dist_of(lat_mark, nm);
    dist_t ds = dist_of(lat_sub, ns);
    free(lat_mark);
    free(lat_sub);
    double span_s = g.mark_us && last_done > g.mark_us
                        ? (last_done - g.mark_us) / 1e6
                        : 0;
    double starts_s = g.mark_us && last_arrive > g.mark_us
                          ? (last_arrive - g.mark_us) / 1e6
                          : 0;
    double builds_per_s = span_s > 0 ? (double)g.done / span_s : 0;
    double out_s = first_out && last_done > first_out
                       ? (last_done - first_out) / 1e6
                       : 0;
    double mib = bytes / 1048576.0;
    double mib_per_s = out_s > 0 ? mib / out_s : 0;
    long rss = -1, hwm = -1;
    master_mem(&rss, &hwm);
    double mcpu = master_cpu();
    double mcpu_run = mcpu >= 0 && g.cpu_mark_taken && g.master_cpu_mark_s >= 0
                          ? mcpu - g.master_cpu_mark_s
                          : -1;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);

    printf("tf-loadslaves: %s\n", why);
    printf("  builds: %" PRIu64 " started, %" PRIu64 " done (last event "
           "acknowledged), %" PRIu64 " aborted by the master, %" PRIu64
           " lost with their link\n",
           g.started, g.done, g.aborted, g.lost);
    dist_print("start latency after the release mark", &dm);
    if (before_mark)
        printf("  (%zu builds started before the mark)\n", before_mark);
    dist_print("start latency after each request's submission", &ds);
    if (span_s > 0 && !before_mark)
        printf("  %.0f builds/s: %" PRIu64 " done %.3f s after the mark; "
               "the last build_start came %.3f s after it\n",
               builds_per_s, g.done, span_s, starts_s);
    else if (last_done > first_arrive && first_arrive)
        printf("  %.0f builds/s from the first build_start to the last "
               "ack (%.3f s); the last build_start came %.3f s after the "
               "mark\n",
               g.done / ((last_done - first_arrive) / 1e6),
               (last_done - first_arrive) / 1e6, starts_s);
    if (bytes)
        printf("  output: %.1f MiB in %.2f s, %.1f MiB/s from the first "
               "frame to the last ack (%.2f s to the last frame sent)\n",
               mib, out_s, mib_per_s,
               last_out_sent > first_out ? (last_out_sent - first_out) / 1e6
                                         : 0.0);
    if (rss >= 0)
        printf("  master: RSS %.1f MiB at the end (peak %.1f MiB), %.2f s "
               "CPU since the mark\n",
               rss / 1024.0, hwm / 1024.0, mcpu_run);
    double ccpu = self_cpu();
    double ccpu_run = g.cpu_mark_taken ? ccpu - g.self_cpu_mark_s : -1;
    uint64_t ended = g.done + g.aborted;
    printf("  this client: %.2f s CPU in all, max RSS %.1f MiB\n", ccpu,
           ru.ru_maxrss / 1024.0);
    if (ccpu_run >= 0)
        printf("  this client: %.3f s CPU since the mark, %.1f us per build "
               "ended\n", ccpu_run, ended ? ccpu_run * 1e6 / ended : 0.0);
    if (g.rec_dropped)
        printf("  (%zu builds not recorded: over --max-records)\n",
               g.rec_dropped);
    fails_print();
    fflush(stdout);
    if (g.o.json) {
        json_t *o = json_pack(
            "{s:s, s:s, s:I, s:I, s:I, s:I, s:o, s:o, s:I, s:f, s:f, s:f, "
            "s:I, s:f, s:f, s:I, s:I, s:f, s:f, s:f, s:f, s:i, s:o}",
            "event", "summary", "why", why, "started", (json_int_t)g.started,
            "done", (json_int_t)g.done, "aborted", (json_int_t)g.aborted,
            "lost", (json_int_t)g.lost, "latency_after_mark", dist_json(&dm),
            "latency_after_submit", dist_json(&ds), "before_mark",
            (json_int_t)before_mark, "builds_per_s", builds_per_s,
            "done_after_mark_s", span_s, "last_start_after_mark_s", starts_s,
            "output_bytes", (json_int_t)bytes, "output_s", out_s,
            "output_mib_per_s", mib_per_s, "master_rss_kb", (json_int_t)rss,
            "master_hwm_kb", (json_int_t)hwm, "master_cpu_s", mcpu_run,
            "client_cpu_s", ccpu, "client_cpu_since_mark_s", ccpu_run,
            "client_maxrss_mib",
            ru.ru_maxrss / 1024.0, "failed", (int)g.failed, "failures",
            fails_json());
        if (o)
            emit_json(o);
    }
}

static int records_write(void)
{
    if (!g.o.records)
        return 0;
    FILE *f = fopen(g.o.records, "w");
    if (!f) {
        fprintf(stderr, "tf-loadslaves: cannot write %s: %s\n", g.o.records,
                strerror(errno));
        return TF_EIO;
    }
    fprintf(f, "build_id\tslave\tbuilder\tt0_us\tarrive_us\tfirst_out_us\t"
               "sent_us\tdone_us\tout_bytes\n");
    for (size_t i = 0; i < g.nrecs; i++) {
        const rec_t *r = &g.recs[i];
        fprintf(f, "%" PRIu64 "\t%s\t%s\t%" PRId64 "\t%" PRId64 "\t%" PRId64
                   "\t%" PRId64 "\t%" PRId64 "\t%" PRIu64 "\n",
                r->build_id, g.slaves[r->slave].name,
                r->builder == UINT32_MAX ? "?" : g.builders[r->builder],
                r->t0_us, r->arrive_us, r->first_out_us, r->sent_us,
                r->done_us, r->out_bytes);
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "tf-loadslaves: cannot write %s: %s\n", g.o.records,
                strerror(errno));
        return TF_EIO;
    }
    return 0;
}

static void walk_close_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h) && h->type != UV_TCP)
        uv_close(h, NULL);
}

/* Links whose close frame cannot be written (a master that stopped
 * reading) are dropped when the polite close has had its time. */
static void endt_cb(uv_timer_t *t)
{
    for (unsigned i = 0; i < g.o.nslaves; i++) {
        lslave_t *s = &g.slaves[i];
        if (s->state != S_WAITING && s->state != S_CLOSED)
            tf_wsc_abort(&s->ws, "closing at the end");
    }
    uv_close((uv_handle_t *)t, NULL);
}

/* Ends the run: prints the summary, closes every link politely and every
 * handle, so uv_run returns. */
static void finish(const char *why, int code)
{
    if (g.finishing)
        return;
    g.finishing = true;
    if (code > g.exit_code)
        g.exit_code = code;
    if (!g.all_ready_reported) {
        g.t_all_ready_mono_us = mono_us();
        g.all_ready_reported = true;
        report_ready();
    }
    report_summary(why);
    if (records_write() != 0 && g.exit_code == 0)
        g.exit_code = 1;
    for (unsigned i = 0; i < g.o.nslaves; i++) {
        lslave_t *s = &g.slaves[i];
        if (s->state != S_WAITING && s->state != S_CLOSED)
            tf_wsc_close(&s->ws, 1000, "benchmark over");
    }
    uv_walk(g.loop, walk_close_cb, NULL);
    if (g.open_links) {
        uv_timer_init(g.loop, &g.endt);
        uv_timer_start(&g.endt, endt_cb, 5000, 0);
    }
}

static void check_done(void)
{
    if (g.finishing)
        return;
    if (g.o.expect >= 0 && g.all_ready_reported &&
        g.done + g.aborted >= (uint64_t)g.o.expect) {
        char why[96];
        snprintf(why, sizeof(why), "%" PRIu64 " of %lld expected builds done",
                 g.done + g.aborted, g.o.expect);
        finish(why, g.failed ? 1 : 0);
    }
}

/* --- connection life --- */

static void start_connections(void);

static void all_ready_check(void)
{
    if (g.all_ready_reported || g.ready + g.conn_failed < g.o.nslaves)
        return;
    g.t_all_ready_mono_us = mono_us();
    g.all_ready_reported = true;
    report_ready();
    if (g.conn_failed) {
        finish("links failed while connecting; nothing measured", 1);
        return;
    }
    if (!g.mark_us) {
        g.mark_us = wall_us();
        g.master_cpu_mark_s = master_cpu();
        g.cpu_mark_taken = true;
        g.self_cpu_mark_s = self_cpu();
    }
    check_done();
}

static void ws_open_cb(tf_wsc_t *c)
{
    lslave_t *s = c->data;
    s->state = S_CHALLENGE;
}

static void slave_ready(lslave_t *s)
{
    s->state = S_READY;
    s->t_ready_us = mono_us();
    g.ready++;
    g.connecting--;
    start_connections();
    all_ready_check();
}

static void on_challenge(lslave_t *s, const tf_msg_t *m)
{
    if (m->u.challenge.protocol != TF_PROTO_VERSION) {
        fail_record("the master speaks protocol %d, this client %d",
                    m->u.challenge.protocol, TF_PROTO_VERSION);
        tf_wsc_close(&s->ws, 1000, "protocol version");
        return;
    }
    tf_msg_t h = {.type = TF_MSG_HELLO};
    char auth[TF_PROTO_NONCE_HEX + 1];
    tf_proto_auth(s->secret, m->u.challenge.nonce, auth);
    h.u.hello.protocol = TF_PROTO_VERSION;
    h.u.hello.slave = s->name;
    memcpy(h.u.hello.auth, auth, sizeof(auth));
    h.u.hello.version = "tf-loadslaves " TF_VERSION;
    h.u.hello.platform = "emulated";
    h.u.hello.tags = g.o.tags;
    h.u.hello.ntags = g.o.ntags;
    h.u.hello.max_builds = g.o.max_builds;
    if (slave_send_msg(s, &h) != 0) {
        tf_wsc_abort(&s->ws, "cannot send hello");
        return;
    }
    s->state = S_HELLO;
}

static lbuild_t *build_find(lslave_t *s, uint64_t id)
{
    for (unsigned i = 0; i < s->nslots; i++)
        if (s->builds[i].used && s->builds[i].id == id)
            return &s->builds[i];
    return NULL;
}

/* bs is what the fast reader (lsmsg.h) or tf_msg_decode and
 * ls_bstart_from_msg read of the build_start. */
static void on_build_start(lslave_t *s, const ls_bstart_t *bs)
{
    /* Arrival is when the bytes were read from the socket: one thread
     * emulates every slave, and a real slave does not wait for the others
     * to decode theirs. */
    int64_t now = s->ws.read_wall_us ? s->ws.read_wall_us : wall_us();
    if (build_find(s, bs->build_id)) {
        fail_record("the master sent build_start for build %" PRIu64
                    " twice", bs->build_id);
        tf_wsc_close(&s->ws, 1002, "duplicate build_start");
        return;
    }
    if (s->nrunning >= g.o.max_builds) {
        fail_record("the master sent more than max_builds=%u builds to one "
                    "slave", g.o.max_builds);
        tf_wsc_close(&s->ws, 1002, "over max_builds");
        return;
    }
    lbuild_t *b = NULL;
    for (unsigned i = 0; i < s->nslots && !b; i++)
        if (!s->builds[i].used)
            b = &s->builds[i];
    if (!b && s->nslots < g.o.max_builds + LS_UNACKED_MAX) {
        unsigned n = s->nslots * 2;
        if (n > g.o.max_builds + LS_UNACKED_MAX)
            n = g.o.max_builds + LS_UNACKED_MAX;
        lbuild_t *nb = realloc(s->builds, n * sizeof(*nb));
        if (nb) {
            memset(nb + s->nslots, 0, (n - s->nslots) * sizeof(*nb));
            b = nb + s->nslots;
            s->builds = nb;
            s->nslots = n;
        }
    }
    if (!b) {
        fail_record("more than %d finished builds wait for the master's "
                    "acknowledgement on one slave", LS_UNACKED_MAX);
        tf_wsc_close(&s->ws, 1002, "too many unacknowledged builds");
        return;
    }
    memset(b, 0, sizeof(*b));
    b->used = true;
    b->id = bs->build_id;
    b->nsteps = (uint32_t)bs->nsteps;
    b->phase = B_STEP_START;
    b->rec = rec_new();
    s->nrunning++;
    g.started++;
    rec_t *r = rec_of(b);
    if (r) {
        r->build_id = b->id;
        r->slave = s->idx;
        r->builder = builder_index(bs->builder);
        r->arrive_us = now;
        if (bs->has_t0)
            r->t0_us = (int64_t)bs->t0;
    }
}

static void build_release(lslave_t *s, lbuild_t *b)
{
    (void)s;
    b->used = false;
}

static void on_ack(lslave_t *s, uint64_t build_id, uint64_t seq)
{
    lbuild_t *b = build_find(s, build_id);
    if (!b || !b->final_seq || seq < b->final_seq)
        return;
    rec_t *r = rec_of(b);
    if (r)
        r->done_us = wall_us();
    if (b->aborted)
        g.aborted++;
    else
        g.done++;
    build_release(s, b);
    check_done();
}

static void on_abort(lslave_t *s, const tf_msg_t *m)
{
    lbuild_t *b = build_find(s, m->u.build_abort.build_id);
    if (b && b->phase != B_SENT_ALL)
        b->aborted = true;
}

/* A slave's emulated work (the events of the builds it was given) is done
 * after every link's input of this loop turn is read: 5,000 real slaves
 * each receive at once, however busy the others are, and one thread
 * emulating them should not make a slave's build_start wait behind other
 * slaves' events being encoded and written. */
static void pump_later(lslave_t *s)
{
    if (!tf_list_linked(&s->pumpn))
        tf_list_push_back(&g.pumpq, &s->pumpn);
}

static void pump_idle_cb(uv_idle_t *h)
{
    (void)h; /* only keeps the next poll from blocking */
}

/* A link was written outside the check handle (a step's timer): what it
 * queues next goes out at the check's tf_wsc_flush_held, so the poll
 * before it must not block. After the run's end the handles are closed
 * and every link's close frame is written at once (wsc.c). */
static void ws_held_cb(void)
{
    if (!g.finishing)
        uv_idle_start(&g.pump_idle, pump_idle_cb);
}

/* At most LS_PARSE_TURN links' input parsed (wsc.h, tf_wsc_parse_pending:
 * the read callbacks only copy the bytes and note the time) and
 * LS_PUMP_TURN slaves' work per loop turn, the rest in the next turns (an
 * idle handle keeps the poll from blocking meanwhile): the reads of every
 * link come between, so a build_start is read within one turn's small
 * share of parsing and emulated work, not behind thousands of slaves'
 * messages and events. */
static void pump_check_cb(uv_check_t *h)
{
    (void)h;
    /* Writes made before this check (at the end of the last one, in a
     * timer) end first, where libuv ran their callbacks right after the
     * poll; those made during it end last (wsc.h). */
    tf_wsc_flush_held();
    size_t unparsed = tf_wsc_parse_pending(LS_PARSE_TURN);
    for (unsigned n = 0; n < LS_PUMP_TURN && !tf_list_empty(&g.pumpq); n++) {
        lslave_t *s = tf_list_entry(g.pumpq.next, lslave_t, pumpn);
        tf_list_unlink(&s->pumpn);
        slave_pump(s);
    }
    /* What the turn's work queued behind its first write on each link
     * goes out in that link's second write. */
    size_t held = tf_wsc_flush_held();
    if (tf_list_empty(&g.pumpq) && !unparsed && !held)
        uv_idle_stop(&g.pump_idle);
    else
        uv_idle_start(&g.pump_idle, pump_idle_cb);
}

static void ws_message_cb(tf_wsc_t *c, bool binary, const uint8_t *data,
                          size_t len)
{
    lslave_t *s = c->data;
    if (binary) {
        fail_record("the master sent a binary frame");
        tf_wsc_close(c, 1002, "unexpected binary frame");
        return;
    }
    /* Acks, most of what the master sends, in its canonical spelling and
     * build_starts in tf_msg_encode's member order are read without
     * building a jansson tree (lsmsg.h); anything else is judged by
     * tf_msg_decode as always. */
    uint64_t ack_id, ack_seq;
    ls_bstart_t bs;
    if (ls_ack_parse(data, len, &ack_id, &ack_seq)) {
        on_ack(s, ack_id, ack_seq);
        pump_later(s);
        return;
    }
    if (ls_bstart_parse(data, len, &bs)) {
        if (s->state == S_READY)
            on_build_start(s, &bs);
        pump_later(s);
        return;
    }
    tf_msg_t m;
    char err[256];
    int rc = tf_msg_decode((const char *)data, len, &m, err, sizeof(err));
    if (rc) {
        fail_record("cannot decode a message from the master: %s", err);
        tf_wsc_close(c, 1002, "malformed");
        return;
    }
    switch (m.type) {
    case TF_MSG_CHALLENGE:
        if (s->state == S_CHALLENGE)
            on_challenge(s, &m);
        break;
    case TF_MSG_WELCOME:
        if (s->state == S_HELLO)
            slave_ready(s);
        break;
    case TF_MSG_ERROR:
        snprintf(s->error, sizeof(s->error), "%s: %s", m.u.error.code,
                 m.u.error.message);
        break;
    case TF_MSG_PING: {
        tf_msg_t p = {.type = TF_MSG_PONG};
        p.u.ping.id = m.u.ping.id;
        slave_send_msg(s, &p);
        break;
    }
    case TF_MSG_BUILD_START:
        if (s->state == S_READY) {
            ls_bstart_from_msg(&m, &bs);
            on_build_start(s, &bs);
        }
        break;
    case TF_MSG_BUILD_ABORT:
        on_abort(s, &m);
        break;
    case TF_MSG_ACK:
        on_ack(s, m.u.ack.build_id, m.u.ack.seq);
        break;
    default:
        fail_record("the master sent %s, which a slave never receives",
                    tf_msg_type_name(m.type));
        tf_wsc_close(c, 1002, "unexpected message");
        break;
    }
    tf_msg_clear(&m);
    pump_later(s);
}

static void ws_drained_cb(tf_wsc_t *c)
{
    lslave_t *s = c->data;
    slave_sync_queued(s);
    slave_pump(s);
    /* Links held back by the global cap get their turn as room frees. */
    while (!tf_list_empty(&g.starved) && g.queued < g.o.queue_max / 2) {
        lslave_t *o = tf_list_entry(g.starved.next, lslave_t, starved);
        tf_list_unlink(&o->starved);
        slave_pump(o);
    }
}

/* Copies text into out[outlen] with every occurrence of name replaced by
 * "NAME" (truncating at outlen). */
static void name_out(char *out, size_t outlen, const char *text,
                     const char *name)
{
    size_t nl = strlen(name), o = 0;
    for (const char *p = text; *p && o + 1 < outlen;) {
        if (nl && strncmp(p, name, nl) == 0) {
            int w = snprintf(out + o, outlen - o, "NAME");
            o += (size_t)w < outlen - o ? (size_t)w : outlen - o - 1;
            p += nl;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
}

static const char *state_label(sstate_t st)
{
    switch (st) {
    case S_WAITING:
        return "before connecting";
    case S_CONNECTING:
        return "while connecting";
    case S_CHALLENGE:
        return "before the challenge";
    case S_HELLO:
        return "after hello";
    case S_READY:
        return "while ready";
    case S_CLOSED:
        return "after closing";
    }
    return "?";
}

static void ws_closed_cb(tf_wsc_t *c, const char *why)
{
    lslave_t *s = c->data;
    sstate_t was = s->state;
    s->state = S_CLOSED;
    slave_sync_queued(s);
    tf_list_unlink(&s->starved);
    tf_list_unlink(&s->pumpn);
    if (!uv_is_closing((uv_handle_t *)&s->timer))
        uv_close((uv_handle_t *)&s->timer, NULL);
    g.closed_count++;
    g.open_links--;
    if (g.finishing && !g.open_links && uv_is_active((uv_handle_t *)&g.endt))
        uv_close((uv_handle_t *)&g.endt, NULL);
    unsigned lost = 0;
    for (unsigned i = 0; i < s->nslots; i++)
        if (s->builds[i].used)
            lost++;
    g.lost += lost;
    if (g.finishing)
        return;
    /* The slave's own name becomes NAME, so 5,000 equal refusals count
     * as one failure with a count. */
    char said[sizeof(s->error)];
    name_out(said, sizeof(said), s->error, s->name);
    if (said[0])
        fail_record("link closed %s: %s (master said %s)", state_label(was),
                    why, said);
    else
        fail_record("link closed %s: %s", state_label(was), why);
    if (was != S_READY) {
        g.conn_failed++;
        g.connecting--;
        start_connections();
        all_ready_check();
    } else if (lost) {
        note("slave %s lost its link with %u builds running: %s", s->name,
             lost, why);
    }
}

static const tf_wsc_cbs_t ws_cbs = {
    .open_cb = ws_open_cb,
    .message_cb = ws_message_cb,
    .drained_cb = ws_drained_cb,
    .closed_cb = ws_closed_cb,
};

static void start_connections(void)
{
    while (!g.finishing && g.next_connect < g.o.nslaves &&
           g.connecting < g.o.parallel) {
        lslave_t *s = &g.slaves[g.next_connect++];
        s->t_start_us = mono_us();
        s->state = S_CONNECTING;
        g.connecting++;
        int rc = tf_wsc_connect(&s->ws, g.loop, (struct sockaddr *)&g.addr,
                                g.o.hostport, g.o.path, TF_PROTO_SUBPROTOCOL,
                                TF_PROTO_MAX_TEXT, &ws_cbs, s);
        if (rc == 0)
            g.open_links++;
        if (rc) {
            s->state = S_CLOSED;
            g.connecting--;
            g.conn_failed++;
            fail_record("cannot start a connection: %s", tf_strerror(rc));
            if (!uv_is_closing((uv_handle_t *)&s->timer))
                uv_close((uv_handle_t *)&s->timer, NULL);
        }
    }
    all_ready_check();
}

/* --- timers, signals, control --- */

static void tick_cb(uv_timer_t *t)
{
    (void)t;
    if (g.finishing)
        return;
    uint64_t now = mono_us();
    double elapsed = (now - g.t_begin_mono_us) / 1e6;
    if (g.o.timeout_s > 0 && elapsed > g.o.timeout_s) {
        char why[160];
        snprintf(why, sizeof(why), "timed out after %.0f s: %" PRIu64
                 " builds done of %lld expected, %u links ready",
                 g.o.timeout_s, g.done, g.o.expect, g.ready);
        finish(why, 1);
        return;
    }
    uint64_t limit = (uint64_t)(g.o.connect_timeout_s * 1e6);
    /* Once every link is up (or down) none can time out: no need to look
     * at 10,000 slaves ten times a second during the measurement. */
    for (unsigned i = 0; g.connecting && i < g.next_connect; i++) {
        lslave_t *s = &g.slaves[i];
        if ((s->state == S_CONNECTING || s->state == S_CHALLENGE ||
             s->state == S_HELLO) &&
            now - s->t_start_us > limit) {
            char why[96];
            snprintf(why, sizeof(why), "no welcome within %.0f s",
                     g.o.connect_timeout_s);
            tf_wsc_abort(&s->ws, why);
        }
    }
}

static void signal_cb(uv_signal_t *h, int signum)
{
    (void)h;
    finish(signum == SIGINT ? "interrupted (SIGINT)" : "stopped (SIGTERM)", 1);
}

static void control_line(char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\r' || line[n - 1] == ' '))
        line[--n] = '\0';
    if (strncmp(line, "mark", 4) == 0 && (line[4] == '\0' || line[4] == ' ')) {
        uint64_t v = 0;
        if (line[4] == ' ' && tf_parse_u64(line + 5, &v) != 0) {
            note("control: bad mark time \"%s\" (microseconds since the "
                 "epoch expected)", line + 5);
            return;
        }
        g.mark_us = v ? (int64_t)v : wall_us();
        g.master_cpu_mark_s = master_cpu();
        g.cpu_mark_taken = true;
        g.self_cpu_mark_s = self_cpu();
        if (g.o.json) {
            json_t *o = json_pack("{s:s, s:I}", "event", "mark", "mark_us",
                                  (json_int_t)g.mark_us);
            if (o)
                emit_json(o);
        }
    } else if (strcmp(line, "report") == 0) {
        report_summary("report requested");
    } else if (strcmp(line, "quit") == 0) {
        finish("quit requested", g.failed ? 1 : 0);
    } else if (n) {
        note("control: unknown command \"%s\" (mark [US], report, quit)",
             line);
    }
}

static void in_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char b[LS_LINE_MAX];
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(b, sizeof(b));
}

static void in_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)st;
    if (n < 0) {
        uv_read_stop(st);
        finish(n == UV_EOF ? "control input closed" : "control input error",
               g.failed ? 1 : 0);
        return;
    }
    for (ssize_t i = 0; i < n && !g.finishing; i++) {
        char ch = buf->base[i];
        if (ch != '\n') {
            if (tf_buf_append(&g.line, &ch, 1) != 0) {
                note("control: a line over %d bytes; dropped", LS_LINE_MAX);
                tf_buf_reset(&g.line);
            }
            continue;
        }
        if (g.line.len)
            control_line((char *)g.line.data);
        tf_buf_reset(&g.line);
    }
}

/* --- options --- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: tf-loadslaves --url ws://HOST:PORT/slave --secret-dir DIR\n"
        "                     [--slaves N] [--prefix NAME] [--first I]\n"
        "                     [--max-builds M] [--tags T1,T2] [--parallel P]\n"
        "                     [--output-bytes B] [--chunk C] "
        "[--output-file FILE]\n"
        "                     [--step-ms MS] [--expect K] [--timeout S]\n"
        "                     [--connect-timeout S] [--master-pid PID]\n"
        "                     [--records FILE] [--max-records R] "
        "[--queue-mib Q]\n"
        "                     [--control] [--json] [--quiet]\n"
        "\n"
        "Opens N websocket links to a real tf-master as the slaves\n"
        "PREFIX00001..PREFIX0000N (secret of each: first line of DIR/NAME),\n"
        "runs every build it is given at once and reports start latency,\n"
        "builds/s, output MiB/s, setup time and the master's RSS. Each step\n"
        "sends the first B bytes of FILE (or of a generated compiler-like\n"
        "text), repeated when shorter, in frames of C bytes, and lasts at\n"
        "least MS ms.\n"
        "Defaults: N 1, prefix load, first 1, M 1, P 256, B 0, C 16384,\n"
        "MS 0, no K (run until quit), S 600, connect timeout 60, R 1000000,\n"
        "Q 64. With --control stdin takes \"mark [WALL_US]\", \"report\",\n"
        "\"quit\". See docs/testing.md (Benchmarks).\n");
}

static int parse_uint(const char *flag, const char *v, uint64_t lo,
                      uint64_t hi, uint64_t *out)
{
    uint64_t x;
    if (tf_parse_u64(v, &x) != 0 || x < lo || x > hi) {
        fprintf(stderr, "tf-loadslaves: %s: expected an integer from %" PRIu64
                " to %" PRIu64 ", got \"%s\"\n", flag, lo, hi, v);
        return TF_EINVAL;
    }
    *out = x;
    return 0;
}

static int parse_seconds(const char *flag, const char *v, double *out)
{
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || !end || *end || end == v || !(x > 0) || x > 1e6) {
        fprintf(stderr, "tf-loadslaves: %s: expected seconds (> 0), got "
                "\"%s\"\n", flag, v);
        return TF_EINVAL;
    }
    *out = x;
    return 0;
}

static int parse_url(const char *url)
{
    const char *p = url;
    if (strncmp(p, "ws://", 5) != 0) {
        fprintf(stderr, "tf-loadslaves: --url must be ws://HOST:PORT/PATH "
                "(no TLS: a benchmark runs on loopback), got \"%s\"\n", url);
        return TF_EINVAL;
    }
    p += 5;
    const char *colon = strchr(p, ':');
    const char *slash = strchr(p, '/');
    if (!colon || (slash && slash < colon) || colon == p ||
        (size_t)(colon - p) >= sizeof(g.o.host)) {
        fprintf(stderr, "tf-loadslaves: --url: expected ws://HOST:PORT/PATH, "
                "got \"%s\"\n", url);
        return TF_EINVAL;
    }
    memcpy(g.o.host, p, (size_t)(colon - p));
    g.o.host[colon - p] = '\0';
    char port[8];
    size_t pl = slash ? (size_t)(slash - colon - 1) : strlen(colon + 1);
    uint64_t pv;
    if (pl == 0 || pl >= sizeof(port)) {
        fprintf(stderr, "tf-loadslaves: --url: bad port in \"%s\"\n", url);
        return TF_EINVAL;
    }
    memcpy(port, colon + 1, pl);
    port[pl] = '\0';
    if (parse_uint("--url port", port, 1, 65535, &pv))
        return TF_EINVAL;
    g.o.port = (int)pv;
    const char *path = slash ? slash : TF_PROTO_WS_PATH;
    if (strlen(path) >= sizeof(g.o.path)) {
        fprintf(stderr, "tf-loadslaves: --url: path too long\n");
        return TF_EINVAL;
    }
    snprintf(g.o.path, sizeof(g.o.path), "%s", path);
    snprintf(g.o.hostport, sizeof(g.o.hostport), "%s:%d", g.o.host, g.o.port);
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(g.o.host, port, &hints, &res);
    if (rc || !res) {
        fprintf(stderr, "tf-loadslaves: cannot resolve %s: %s\n", g.o.host,
                gai_strerror(rc));
        return TF_EINVAL;
    }
    memcpy(&g.addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static int parse_tags(const char *v)
{
    char *copy = strdup(v);
    if (!copy)
        return TF_ENOMEM;
    free(g.tags_copy); /* --tags given twice: the last one counts */
    free(g.o.tags);
    g.o.ntags = 0;
    g.tags_copy = copy;
    size_t n = 1;
    for (const char *p = v; *p; p++)
        n += *p == ',';
    g.o.tags = calloc(n, sizeof(char *));
    if (!g.o.tags)
        return TF_ENOMEM;
    for (char *save = NULL, *t = strtok_r(copy, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        if (!tf_name_valid(t)) {
            fprintf(stderr, "tf-loadslaves: --tags: \"%s\" is not a valid "
                    "name\n", t);
            return TF_EINVAL;
        }
        g.o.tags[g.o.ntags++] = t;
    }
    return 0;
}

static int parse_args(int argc, char **argv)
{
    enum {
        O_URL = 256, O_SLAVES, O_PREFIX, O_FIRST, O_SECRETS, O_MAXB, O_TAGS,
        O_PAR, O_OUTB, O_CHUNK, O_OUTF, O_STEPMS, O_EXPECT, O_TIMEOUT,
        O_CTIMEOUT, O_PID, O_RECORDS, O_MAXREC, O_QUEUE, O_CONTROL, O_JSON,
        O_QUIET, O_HELP,
    };
    static const struct option lo[] = {
        {"url", required_argument, NULL, O_URL},
        {"slaves", required_argument, NULL, O_SLAVES},
        {"prefix", required_argument, NULL, O_PREFIX},
        {"first", required_argument, NULL, O_FIRST},
        {"secret-dir", required_argument, NULL, O_SECRETS},
        {"max-builds", required_argument, NULL, O_MAXB},
        {"tags", required_argument, NULL, O_TAGS},
        {"parallel", required_argument, NULL, O_PAR},
        {"output-bytes", required_argument, NULL, O_OUTB},
        {"chunk", required_argument, NULL, O_CHUNK},
        {"output-file", required_argument, NULL, O_OUTF},
        {"step-ms", required_argument, NULL, O_STEPMS},
        {"expect", required_argument, NULL, O_EXPECT},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"connect-timeout", required_argument, NULL, O_CTIMEOUT},
        {"master-pid", required_argument, NULL, O_PID},
        {"records", required_argument, NULL, O_RECORDS},
        {"max-records", required_argument, NULL, O_MAXREC},
        {"queue-mib", required_argument, NULL, O_QUEUE},
        {"control", no_argument, NULL, O_CONTROL},
        {"json", no_argument, NULL, O_JSON},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    opts_t *o = &g.o;
    o->nslaves = 1;
    o->prefix = "load";
    o->first = 1;
    o->max_builds = 1;
    o->parallel = 256;
    o->chunk = 16384;
    o->expect = -1;
    o->timeout_s = 600;
    o->connect_timeout_s = 60;
    o->max_records = 1000000;
    o->queue_max = 64u << 20;
    uint64_t v;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case O_URL: o->url = optarg; break;
        case O_SLAVES:
            rc = parse_uint("--slaves", optarg, 1, LS_MAX_SLAVES, &v);
            o->nslaves = (unsigned)v;
            break;
        case O_PREFIX: o->prefix = optarg; break;
        case O_FIRST:
            rc = parse_uint("--first", optarg, 0, 1000000000, &v);
            o->first = (unsigned)v;
            break;
        case O_SECRETS: o->secret_dir = optarg; break;
        case O_MAXB:
            rc = parse_uint("--max-builds", optarg, 1, TF_PROTO_MAX_RUNNING,
                            &v);
            o->max_builds = (unsigned)v;
            break;
        case O_TAGS: rc = parse_tags(optarg); break;
        case O_PAR:
            rc = parse_uint("--parallel", optarg, 1, LS_MAX_SLAVES, &v);
            o->parallel = (unsigned)v;
            break;
        case O_OUTB:
            rc = parse_uint("--output-bytes", optarg, 0, 1ULL << 40, &v);
            o->output_bytes = v;
            break;
        case O_CHUNK:
            rc = parse_uint("--chunk", optarg, 1, TF_PROTO_MAX_CHUNK, &v);
            o->chunk = (size_t)v;
            break;
        case O_OUTF: o->output_file = optarg; break;
        case O_STEPMS:
            rc = parse_uint("--step-ms", optarg, 0, 86400000, &v);
            o->step_ms = (unsigned)v;
            break;
        case O_EXPECT:
            rc = parse_uint("--expect", optarg, 0, 100000000, &v);
            o->expect = (long long)v;
            break;
        case O_TIMEOUT: rc = parse_seconds("--timeout", optarg, &o->timeout_s); break;
        case O_CTIMEOUT:
            rc = parse_seconds("--connect-timeout", optarg,
                               &o->connect_timeout_s);
            break;
        case O_PID:
            rc = parse_uint("--master-pid", optarg, 1, 1u << 30, &v);
            o->master_pid = (int)v;
            break;
        case O_RECORDS: o->records = optarg; break;
        case O_MAXREC:
            rc = parse_uint("--max-records", optarg, 1, 100000000, &v);
            o->max_records = (size_t)v;
            break;
        case O_QUEUE:
            rc = parse_uint("--queue-mib", optarg, 1, 4096, &v);
            o->queue_max = (size_t)v << 20;
            break;
        case O_CONTROL: o->control = true; break;
        case O_JSON: o->json = true; break;
        case O_QUIET: o->quiet = true; break;
        case 'h':
        case O_HELP: usage(stdout); exit(0);
        default:
            fprintf(stderr, "tf-loadslaves: unknown or incomplete option "
                    "\"%s\"\n", argv[optind - 1]);
            usage(stderr);
            return TF_EINVAL;
        }
        if (rc)
            return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "tf-loadslaves: unexpected argument \"%s\"\n",
                argv[optind]);
        return TF_EINVAL;
    }
    if (!o->url || !o->secret_dir) {
        fprintf(stderr, "tf-loadslaves: --url and --secret-dir are "
                "required\n");
        usage(stderr);
        return TF_EINVAL;
    }
    if (o->parallel > o->nslaves)
        o->parallel = o->nslaves;
    return parse_url(o->url);
}

/* Names and secrets of every slave; a missing or empty secret file is an
 * error naming the file, before any connection is made. */
static int slaves_prepare(void)
{
    g.slaves = calloc(g.o.nslaves, sizeof(*g.slaves));
    if (!g.slaves)
        return TF_ENOMEM;
    for (unsigned i = 0; i < g.o.nslaves; i++) {
        lslave_t *s = &g.slaves[i];
        s->idx = i;
        tf_list_init(&s->starved);
        tf_list_init(&s->pumpn);
        int n = snprintf(s->name, sizeof(s->name), "%s%05u", g.o.prefix,
                         g.o.first + i);
        if (n < 0 || (size_t)n >= sizeof(s->name) || !tf_name_valid(s->name)) {
            fprintf(stderr, "tf-loadslaves: \"%s%05u\" is not a valid slave "
                    "name (check --prefix)\n", g.o.prefix, g.o.first + i);
            return TF_EINVAL;
        }
        char *path = tf_path_join(g.o.secret_dir, s->name);
        if (!path)
            return TF_ENOMEM;
        int rc = tf_read_secret(path, &s->secret);
        if (rc) {
            fprintf(stderr, "tf-loadslaves: cannot read the secret of slave "
                    "%s from %s: %s\n", s->name, path,
                    rc == TF_EINVAL ? "empty first line" : tf_strerror(rc));
            free(path);
            return rc;
        }
        free(path);
        s->nslots = g.o.max_builds + 1;
        s->builds = calloc(s->nslots, sizeof(lbuild_t));
        if (!s->builds)
            return TF_ENOMEM;
        uv_timer_init(g.loop, &s->timer);
        s->timer.data = s;
    }
    return 0;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)g.o.nslaves + 64;
    if (rl.rlim_cur >= want)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
        fprintf(stderr, "tf-loadslaves: warning: %u links need %lu file "
                "descriptors; the hard limit is %lu (raise ulimit -n)\n",
                g.o.nslaves, (unsigned long)want, (unsigned long)rl.rlim_max);
        want = rl.rlim_max;
    }
    rl.rlim_cur = want;
    setrlimit(RLIMIT_NOFILE, &rl);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (parse_args(argc, argv) != 0)
        return 2;
    raise_fd_limit();
    g.loop = uv_default_loop();
    tf_list_init(&g.starved);
    tf_list_init(&g.pumpq);
    tf_buf_init(&g.line, LS_LINE_MAX);
    char err[512];
    if (ls_msg_selftest(err, sizeof(err)) != 0) {
        fprintf(stderr, "tf-loadslaves: self-test: %s\n", err);
        return 1;
    }
    if (tf_wsc_global_init() != 0) {
        fprintf(stderr, "tf-loadslaves: no random source\n");
        return 1;
    }
    tf_wsc_set_held_cb(ws_held_cb);
    if (content_load() != 0)
        return 2;
    if (slaves_prepare() != 0)
        return 2;
    master_mem(&g.master_rss0_kb, NULL);
    g.master_cpu0_s = master_cpu();
    uv_timer_init(g.loop, &g.tick);
    uv_timer_start(&g.tick, tick_cb, 100, 100);
    uv_check_init(g.loop, &g.pump_check);
    uv_check_start(&g.pump_check, pump_check_cb);
    uv_unref((uv_handle_t *)&g.pump_check);
    uv_idle_init(g.loop, &g.pump_idle);
    uv_unref((uv_handle_t *)&g.pump_idle);
    uv_signal_init(g.loop, &g.sigint);
    uv_signal_start(&g.sigint, signal_cb, SIGINT);
    uv_signal_init(g.loop, &g.sigterm);
    uv_signal_start(&g.sigterm, signal_cb, SIGTERM);
    if (g.o.control) {
        if (uv_pipe_init(g.loop, &g.in, 0) != 0 || uv_pipe_open(&g.in, 0) != 0 ||
            uv_read_start((uv_stream_t *)&g.in, in_alloc_cb, in_read_cb) != 0) {
            fprintf(stderr, "tf-loadslaves: --control: cannot read stdin "
                    "(it must be a pipe)\n");
            return 2;
        }
        g.in_open = true;
    }
    note("connecting %u slaves to %s (%u at a time)", g.o.nslaves, g.o.url,
         g.o.parallel);
    g.t_begin_mono_us = mono_us();
    start_connections();
    uv_run(g.loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(g.loop);
    if (rc)
        note("loop not closed cleanly: %s", uv_strerror(rc));
    for (unsigned i = 0; i < g.o.nslaves; i++) {
        if (g.slaves[i].secret)
            explicit_bzero(g.slaves[i].secret, strlen(g.slaves[i].secret));
        free(g.slaves[i].secret);
        free(g.slaves[i].builds);
    }
    free(g.slaves);
    free(g.recs);
    free(g.content);
    for (uint32_t i = 0; i < g.nbuilders; i++)
        free(g.builders[i]);
    free(g.tags_copy);
    free(g.o.tags);
    tf_buf_free(&g.line);
    return g.exit_code;
}
