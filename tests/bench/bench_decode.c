/*
 * bench_decode.c - tf-bench-decode: CPU time per decoded event message,
 * with the fast path of tf_msg_decode (proto/msgfast.c) and without it.
 *
 * Every build makes the master's loop thread decode step_started,
 * step_finished and build_finished from its slave, so in a burst of
 * thousands of builds (tests/bench/bench_sched.py) that decoding is on
 * the critical path. This program encodes each message the way
 * tf-loadslaves and tf-slave do (tf_msg_encode of the same fields), then
 * decodes it n times in a row per run, alternating runs of tf_msg_decode
 * and tf__msg_decode_slow (the jansson path, which is what tf_msg_decode
 * was before the fast path), and prints the best and the median of the
 * thread's CPU time per message (decode plus tf_msg_clear).
 *
 *     tf-bench-decode [-n decodes per run] [-r runs] [-t type] [-e]
 *
 * With -e it times encoding instead, the other way round: the build_start
 * of a forced build of tests/bench/bench_sched.py --props 1 (the master
 * writes one per build it starts) and an ack, tf_msg_encode (whose
 * one-pass writers, proto/msgenc.c and msgfast.c, take both) against
 * tf__msg_encode_slow (the jansson tree, the validator, json_dumps), the
 * text freed after each. -t build_start or -t ack keeps one.
 *
 * -t keeps one message type (step_started, ...), for counting
 * instructions per decode under valgrind --tool=callgrind (the inclusive
 * cost of tf_msg_decode and of tf__msg_decode_slow over their calls).
 * Hot caches, one thread: a floor for the cost in the master, where the
 * messages arrive between other work. A benchmark, not a test: built
 * with everything else so it keeps compiling, never run by CI.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "proto_int.h"

#define MAX_RUNS 64

static int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The message of type t as the emulated slaves send it. Returns a
 * malloc'd text (caller frees) or NULL. */
static char *sample_text(tf_msg_type_t t, size_t *len)
{
    tf_msg_t m;
    char *text = NULL;
    memset(&m, 0, sizeof m);
    m.type = t;
    switch (t) {
    case TF_MSG_STEP_STARTED:
        m.u.step_started.build_id = 4711;
        m.u.step_started.seq = 1;
        m.u.step_started.name = (char *)"shell";
        m.u.step_started.time_ms = 1795000000000;
        break;
    case TF_MSG_STEP_FINISHED:
        m.u.step_finished.build_id = 4711;
        m.u.step_finished.seq = 2;
        m.u.step_finished.result = TF_SUCCESS;
        m.u.step_finished.has_exit_code = true;
        m.u.step_finished.duration_ms = 3;
        m.u.step_finished.time_ms = 1795000000003;
        m.u.step_finished.text = (char *)"exit 0";
        break;
    case TF_MSG_BUILD_FINISHED:
        m.u.build_finished.build_id = 4711;
        m.u.build_finished.seq = 3;
        m.u.build_finished.result = TF_SUCCESS;
        m.u.build_finished.time_ms = 1795000000004;
        break;
    default:
        m.u.ack.build_id = 4711;
        m.u.ack.seq = 3;
        break;
    }
    if (tf_msg_encode(&m, &text, len) != 0)
        return NULL;
    return text;
}

/* The build_start of a forced build of bench_sched.py --props 1 (what
 * build_encode_start hands the encoder), or an ack; static, not freed. */
static void sample_enc(tf_msg_type_t t, tf_msg_t *m)
{
    static char *argv[] = {(char *)"true", NULL};
    static tf_modifiers_t mods = {.markers = true};
    static tf_step_spec_t step = {
        .name = (char *)"noop", .argv = argv, .argc = 1,
        .workdir = (char *)"", .timeout_s = 1200,
        .flags = {.flunk_on_failure = true, .warn_on_warnings = true},
        .modifiers = &mods};
    static tf_kv_t props[] = {
        {(char *)"bench_p0", (char *)"v0-4711"},
        {(char *)"builder", (char *)"b007"},
        {(char *)"buildnumber", (char *)"472"},
        {(char *)"slave", (char *)"s04711"},
        {(char *)"owner", (char *)"bench"},
        {(char *)"revision", (char *)""},
        {(char *)"tests", (char *)""}};
    memset(m, 0, sizeof *m);
    m->type = t;
    if (t == TF_MSG_ACK) {
        m->u.ack.build_id = 4711;
        m->u.ack.seq = 3;
        return;
    }
    m->u.build_start.build_id = 4711;
    m->u.build_start.builder = (char *)"b007";
    m->u.build_start.number = 472;
    m->u.build_start.workdir = (char *)"b007";
    m->u.build_start.props = props;
    m->u.build_start.nprops = sizeof props / sizeof props[0];
    m->u.build_start.steps = &step;
    m->u.build_start.nsteps = 1;
}

/* ns of thread CPU per encode of m (and free), over n encodes. */
static double enc_once(const tf_msg_t *m, bool fast, long n, size_t *len)
{
    int64_t t0 = thread_cpu_ns();
    for (long i = 0; i < n; i++) {
        char *text = NULL;
        int rc = fast ? tf_msg_encode(m, &text, len)
                      : tf__msg_encode_slow(m, &text, len, NULL, 0);
        if (rc != 0) {
            fprintf(stderr, "tf-bench-decode: cannot encode a sample\n");
            exit(1);
        }
        free(text);
    }
    return (double)(thread_cpu_ns() - t0) / (double)n;
}

/* -e: the encoders, best and median of runs of n each. */
static int bench_encode(const char *only, long n, int runs)
{
    static const tf_msg_type_t types[] = {TF_MSG_BUILD_START, TF_MSG_ACK};
    printf("%-15s %6s  %14s  %14s\n", "message", "bytes",
           "jansson ns b/m", "fast ns b/m");
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        double slow[MAX_RUNS], fast[MAX_RUNS];
        size_t len = 0;
        tf_msg_t m;
        if (only && strcmp(only, tf_msg_type_name(types[t])) != 0)
            continue;
        sample_enc(types[t], &m);
        enc_once(&m, false, n / 10 + 1, &len); /* warm up */
        enc_once(&m, true, n / 10 + 1, &len);
        for (int r = 0; r < runs; r++) {
            slow[r] = enc_once(&m, false, n, &len);
            fast[r] = enc_once(&m, true, n, &len);
        }
        qsort(slow, (size_t)runs, sizeof slow[0], cmp_double);
        qsort(fast, (size_t)runs, sizeof fast[0], cmp_double);
        printf("%-15s %6zu  %6.0f %6.0f   %6.0f %6.0f\n",
               tf_msg_type_name(types[t]), len, slow[0], slow[runs / 2],
               fast[0], fast[runs / 2]);
    }
    return 0;
}

/* ns of thread CPU per decode of text, over n decodes. */
static double run_once(const char *text, size_t len, bool fast, long n)
{
    char err[256];
    tf_msg_t m;
    int64_t t0 = thread_cpu_ns();
    for (long i = 0; i < n; i++) {
        int rc = fast ? tf_msg_decode(text, len, &m, err, sizeof err)
                      : tf__msg_decode_slow(text, len, &m, err, sizeof err);
        if (rc != 0) {
            fprintf(stderr, "tf-bench-decode: %s: %s\n", text, err);
            exit(1);
        }
        tf_msg_clear(&m);
    }
    return (double)(thread_cpu_ns() - t0) / (double)n;
}

int main(int argc, char **argv)
{
    static const tf_msg_type_t types[] = {
        TF_MSG_STEP_STARTED, TF_MSG_STEP_FINISHED, TF_MSG_BUILD_FINISHED,
        TF_MSG_ACK};
    const char *only = NULL;
    long n = 200000;
    int runs = 9, opt;
    bool encode = false;
    while ((opt = getopt(argc, argv, "en:r:t:")) != -1) {
        char *end = optarg;
        if (opt == 'e') {
            encode = true;
            end = (char *)"";
        } else if (opt == 't') {
            only = optarg;
            end = optarg + strlen(optarg);
        } else if (opt == 'n') {
            n = strtol(optarg, &end, 10);
        } else if (opt == 'r') {
            runs = (int)strtol(optarg, &end, 10);
        } else {
            end = NULL;
        }
        if (!end || *end || n < 1 || runs < 1 || runs > MAX_RUNS) {
            fprintf(stderr, "usage: tf-bench-decode [-n decodes per run] "
                            "[-r runs, 1..%d] [-t type] [-e]\n", MAX_RUNS);
            return 2;
        }
    }
    if (encode)
        return bench_encode(only, n, runs);
    printf("%-15s %6s  %14s  %14s\n", "message", "bytes",
           "jansson ns b/m", "fast ns b/m");
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        double slow[MAX_RUNS], fast[MAX_RUNS];
        size_t len = 0;
        if (only && strcmp(only, tf_msg_type_name(types[t])) != 0)
            continue;
        char *text = sample_text(types[t], &len);
        if (!text) {
            fprintf(stderr, "tf-bench-decode: cannot encode a sample\n");
            return 1;
        }
        run_once(text, len, false, n / 10 + 1); /* warm up */
        run_once(text, len, true, n / 10 + 1);
        for (int r = 0; r < runs; r++) {
            slow[r] = run_once(text, len, false, n);
            fast[r] = run_once(text, len, true, n);
        }
        qsort(slow, (size_t)runs, sizeof slow[0], cmp_double);
        qsort(fast, (size_t)runs, sizeof fast[0], cmp_double);
        printf("%-15s %6zu  %6.0f %6.0f   %6.0f %6.0f\n",
               tf_msg_type_name(types[t]), len, slow[0], slow[runs / 2],
               fast[0], fast[runs / 2]);
        free(text);
    }
    return 0;
}
