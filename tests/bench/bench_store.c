/*
 * bench_store.c - tf-bench-store: what the store's writer thread spends
 * per started build, without slaves, links or a scheduler around it.
 *
 * A burst of build starts (tests/bench/bench_sched.py) is on the writer's
 * clock: every build's rows are committed before its build_start goes
 * out, so the writer's time per start is paid once per build on the
 * critical path. This program stores what such a burst stores, the same
 * way the master does (master/core/build.c, batch_flush): builders,
 * slaves and pending requests first, then the builds in groups of 256,
 * 512, then 1,024 (as a pass grows its start batches; -B N: all of N),
 * one unit per build (its row, its step, its blamelist, its request
 * running, its builder's last build), the builders' counts last, each
 * group prompt. It reads the writer thread's CPU time from
 * /proc/self/task/TID/schedstat (nanoseconds, unlike the clock ticks of
 * .../stat) around the starts only and prints it per build.
 *
 *     tf-bench-store [-n builds] [-b builders] [-r runs] [-d dir] [-B batch]
 *
 * Each run uses a fresh sqlite database in dir (default $TMPDIR or /tmp);
 * the best and the median of the runs are printed. It is also the
 * program to run under valgrind --tool=callgrind (the writer thread's
 * functions are under apply_batch) when instruction counts are wanted
 * instead of time. A benchmark, not a test: built with everything else so
 * it keeps compiling, never run by CI.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "log.h"
#include "store/store.h"

#define BATCH 256 /* requests queued per group in the setup */
#define BATCH_FIRST 256 /* TF_BUILD_BATCH_FIRST in master/core/master.h */
#define BATCH_MAX 1024  /* TF_BUILD_BATCH_MAX */

static unsigned g_batch; /* -B: every start group this size; 0: growing */

/* The size of the start group after one of size n. */
static unsigned next_batch(unsigned n)
{
    if (g_batch)
        return g_batch;
    return n * 2 < BATCH_MAX ? n * 2 : BATCH_MAX;
}
#ifndef NO_CHANGES /* -DNO_CHANGES=0 for a tree before tf_build_rec_t had it */
#define NO_CHANGES 1
#endif

typedef struct bench {
    uv_loop_t loop;
    tf_store_t *s;
    unsigned pending; /* groups submitted and not yet done */
    int failed;
} bench_t;

static void done_cb(void *arg, int rc)
{
    bench_t *b = arg;

    b->pending--;
    if (rc != 0 && !b->failed)
        b->failed = rc;
}

static void closed_cb(void *arg)
{
    *(bool *)arg = true;
}

/* Submits g (which the store then owns) and counts it pending. */
static int submit(bench_t *b, tf_wgroup_t *g)
{
    int rc = tf_store_submit(b->s, g, done_cb, b);

    if (rc != 0) {
        tf_wgroup_free(g);
        return rc;
    }
    b->pending++;
    return 0;
}

static void wait_all(bench_t *b)
{
    while (b->pending)
        uv_run(&b->loop, UV_RUN_ONCE);
}

/* The store writer thread's CPU time so far in nanoseconds, 0 when it
 * cannot be read (no thread named tf-writer, or no schedstat). */
static uint64_t writer_ns(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    uint64_t ns = 0;

    if (!d)
        return 0;
    while ((de = readdir(d)) != NULL) {
        char path[300], comm[32] = "";
        FILE *f;

        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
        f = fopen(path, "r");
        if (!f)
            continue;
        if (!fgets(comm, sizeof(comm), f))
            comm[0] = '\0';
        fclose(f);
        if (strcmp(comm, "tf-writer\n") != 0)
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/schedstat",
                 de->d_name);
        f = fopen(path, "r");
        if (f) {
            if (fscanf(f, "%" SCNu64, &ns) != 1)
                ns = 0;
            fclose(f);
        }
        break;
    }
    closedir(d);
    return ns;
}

/* The builders, the slaves and one pending request per build, as the
 * API's forced builds leave them before a burst. */
static int setup_farm(bench_t *b, unsigned nbuilds, unsigned nbuilders)
{
    tf_wgroup_t *g = tf_wgroup_new(0);
    char name[32];
    int rc;

    if (!g)
        return -1;
    for (unsigned i = 0; i < nbuilders; i++) {
        snprintf(name, sizeof(name), "b%03u", i);
        tf_op_builder_activate(g, name);
    }
    for (unsigned i = 0; i < nbuilds; i++) {
        snprintf(name, sizeof(name), "load%05u", i + 1);
        tf_op_slave_known(g, name);
    }
    if ((rc = submit(b, g)) != 0)
        return rc;
    for (unsigned i = 0; i < nbuilds; i += BATCH) {
        g = tf_wgroup_new(0);
        if (!g)
            return -1;
        for (unsigned k = i; k < nbuilds && k < i + BATCH; k++) {
            snprintf(name, sizeof(name), "b%03u", k % nbuilders);
            tf_request_rec_t r = {
                .id = k + 1, .builder = name, .reason = "bench",
                .owner = "admin", .properties = "{}", .tests = "[]",
                .submitted_ms = 1000,
            };
            tf_op_request_create(g, &r);
        }
        if ((rc = submit(b, g)) != 0)
            return rc;
    }
    wait_all(b);
    return b->failed;
}

/* The burst: nbuilds builds in growing groups (or of -B), one unit
 * each. */
static int start_builds(bench_t *b, unsigned nbuilds, unsigned nbuilders)
{
    static const tf_build_step_rec_t step = {
        .name = "noop", .command_json = "[\"true\"]", .flags = 18,
    };
    char builder[32], slave[32], props[256];
    int rc;

    unsigned size = g_batch ? g_batch : BATCH_FIRST;
    for (unsigned i = 0; i < nbuilds; i += size, size = next_batch(size)) {
        tf_wgroup_t *g = tf_wgroup_new(size * 1024);
        if (!g)
            return -1;
        for (unsigned k = i; k < nbuilds && k < i + size; k++) {
            snprintf(builder, sizeof(builder), "b%03u", k % nbuilders);
            snprintf(slave, sizeof(slave), "load%05u", k + 1);
            snprintf(props, sizeof(props),
                     "{\"builder\":\"%s\",\"buildnumber\":\"%u\","
                     "\"owner\":\"admin\",\"revision\":\"\","
                     "\"slave\":\"%s\",\"tests\":\"\"}",
                     builder, k / nbuilders + 1, slave);
            tf_build_rec_t rec = {
                .id = k + 1, .number = k / nbuilders + 1,
                .request_id = k + 1, .builder = builder, .slave = slave,
                .properties = props, .reason = "bench",
                .recipe = "f357e962cfbb15f10cbdf55ee504f6b99339121a0145b1dc"
                          "ecfac4e12991bc78",
                .created_ms = 2000, .steps = &step, .nsteps = 1,
                .no_changes = NO_CHANGES, /* forced builds have none */
                .kind = "ci",
            };
            tf_op_build_create(g, &rec);
            tf_wgroup_unit_end(g);
        }
        for (unsigned k = 0; k < nbuilders; k++) {
            snprintf(builder, sizeof(builder), "b%03u", k);
            tf_op_builder_counts(g, builder, 0, 1);
        }
        tf_wgroup_prompt(g);
        if ((rc = submit(b, g)) != 0)
            return rc;
    }
    wait_all(b);
    return b->failed;
}

static void remove_db(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal",
                                           ".lock"};
    char p[600];

    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", path, suffixes[i]);
        unlink(p);
    }
}

/* One run on a fresh database: the writer's ns per build, 0 on failure. */
static double run_once(const char *dir, unsigned nbuilds, unsigned nbuilders)
{
    bench_t b = {0};
    char path[512];
    bool closed = false;
    double per = 0;
    uint64_t t0, t1;
    int rc;

    snprintf(path, sizeof(path), "%s/bench-store.sqlite", dir);
    remove_db(path);
    if (uv_loop_init(&b.loop) != 0)
        return 0;
    if (tf_store_open(&b.loop, path, NULL, &b.s) != 0) {
        fprintf(stderr, "tf-bench-store: cannot open %s\n", path);
        uv_loop_close(&b.loop);
        return 0;
    }
    rc = setup_farm(&b, nbuilds, nbuilders);
    usleep(300000); /* the writer's idle work after the setup (a checkpoint) */
    t0 = writer_ns();
    if (rc == 0)
        rc = start_builds(&b, nbuilds, nbuilders);
    t1 = writer_ns();
    if (rc != 0)
        fprintf(stderr, "tf-bench-store: a group failed (%d)\n", rc);
    else if (t0 == 0 || t1 < t0)
        fprintf(stderr, "tf-bench-store: no writer CPU time to read\n");
    else
        per = (double)(t1 - t0) / nbuilds;
    tf_store_close(b.s, closed_cb, &closed);
    while (!closed)
        uv_run(&b.loop, UV_RUN_ONCE);
    uv_run(&b.loop, UV_RUN_DEFAULT);
    uv_loop_close(&b.loop);
    remove_db(path);
    return per;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static unsigned arg_uint(const char *s, unsigned lo, unsigned hi)
{
    char *end = NULL;
    unsigned long v = strtoul(s, &end, 10);

    if (!end || *end || v < lo || v > hi) {
        fprintf(stderr, "tf-bench-store: bad number %s\n", s);
        exit(2);
    }
    return (unsigned)v;
}

int main(int argc, char **argv)
{
    unsigned nbuilds = 5000, nbuilders = 10, runs = 5;
    const char *tmp = getenv("TMPDIR");
    const char *dir = tmp && *tmp ? tmp : "/tmp";
    double per[64];
    int c;

    tf_log_init("tf-bench-store", TF_LOG_WARN, stderr);
    while ((c = getopt(argc, argv, "n:b:r:d:B:")) != -1) {
        switch (c) {
        case 'n': nbuilds = arg_uint(optarg, 1, 1000000); break;
        case 'b': nbuilders = arg_uint(optarg, 1, 999); break;
        case 'r': runs = arg_uint(optarg, 1, 64); break;
        case 'd': dir = optarg; break;
        case 'B': g_batch = arg_uint(optarg, 1, 100000); break;
        default:
            fprintf(stderr, "usage: tf-bench-store [-n builds] [-b builders] "
                            "[-r runs] [-d dir] [-B batch]\n");
            return 2;
        }
    }
    for (unsigned i = 0; i < runs; i++) {
        per[i] = run_once(dir, nbuilds, nbuilders);
        if (per[i] == 0)
            return 1;
        printf("run %u: writer thread CPU %.1f us per started build "
               "(%u builds, %u builders)\n",
               i + 1, per[i] / 1000, nbuilds, nbuilders);
        fflush(stdout);
    }
    qsort(per, runs, sizeof(per[0]), cmp_double);
    printf("tf-bench-store: writer CPU per started build: best %.1f us, "
           "median %.1f us (%u runs)\n",
           per[0] / 1000, per[runs / 2] / 1000, runs);
    return 0;
}
