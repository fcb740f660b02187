/*
 * test_proto.c - the protocol encoder/decoder against docs/protocol.md.
 *
 * Every message type round-trips (encode, decode, compare every field,
 * encode again byte for byte). Malformed input is generated systematically:
 * for every field of every message type the field is removed and replaced by
 * a value of the wrong JSON type, and each variant must be refused with
 * TF_EINVAL and a sentence naming that field. Targeted cases cover names,
 * ids, caps, hex, nesting, duplicates, NULs, truncation and oversize, and
 * the binary output frames.
 */
#include <inttypes.h>
#include <limits.h>

#include <jansson.h>

#include "crypto.h"
#include "names.h"
#include "proto.h"
#include "proto_int.h"
#include "tf_err.h"

#include "tf_test.h"

#define NONCE "9f2c0123456789abcdef0123456789abcdef0123456789abcdef0123456789e1"
#define AUTH "5b1a0123456789abcdef0123456789abcdef0123456789abcdef0123456789c0"

static char *S(const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        abort();
    return p;
}

static void *zalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        abort();
    return p;
}

/* ---- sample messages, one per type ---- */

static void sample_step(tf_step_spec_t *s, int i)
{
    char name[32];
    snprintf(name, sizeof name, "step%d", i);
    s->name = S(name);
    s->argc = 3;
    s->argv = zalloc(4, sizeof *s->argv);
    s->argv[0] = S("/bin/sh");
    s->argv[1] = S("-c");
    s->argv[2] = S("make check \"quoted\" \\ \xc3\xa9");
    s->nenv = 2;
    s->env = zalloc(2, sizeof *s->env);
    s->env[0].key = S("CC");
    s->env[0].value = S("clang");
    s->env[1].key = S("EMPTY");
    s->env[1].value = S("");
    s->workdir = S(i % 2 ? "src/build" : "");
    s->timeout_s = 1200;
    s->max_time_s = UINT32_MAX;
    s->flags = tf_step_flags_default();
    s->flags.halt_on_failure = i % 2;
    s->flags.always_run = i % 3 == 0;
}

/* A test_results sample: a full result and a minimal one; only the
 * required top-level fields, so every one of them can be removed. */
static void sample_results(tf_msg_t *m)
{
    __typeof__(m->u.test_results) *t = &m->u.test_results;
    t->build_id = 7;
    t->seq = 5;
    t->step = 2;
    t->format = TF_TR_FMT_CTEST;
    t->nresults = 2;
    t->results = zalloc(2, sizeof *t->results);
    t->results[0].suite = S("");
    t->results[0].name = S("test_pack");
    t->results[0].status = TF_TR_FAIL;
    t->results[0].attempts = 2;
    t->results[0].duration_ms = 10;
    t->results[0].outcome = S("Failed");
    t->results[0].message = S("test_pack.c:89: json_pack integer failed\n"
                              "\xc3\xa9 \"quoted\"\ttab");
    t->results[0].has_log = true;
    t->results[0].log_offset = 1234;
    t->results[0].log_line = 40;
    t->results[0].log_lines = 3;
    t->results[1].suite = S("test_a.py::T");
    t->results[1].name = S("test_x[1]");
    t->results[1].status = TF_TR_FLAKY;
    t->results[1].attempts = 1;
    t->results[1].duration_ms = -1;
    t->last = true;
}

static void sample(tf_msg_type_t t, tf_msg_t *m)
{
    memset(m, 0, sizeof *m);
    m->type = t;
    switch (t) {
    case TF_MSG_CHALLENGE:
        m->u.challenge.protocol = 1;
        memcpy(m->u.challenge.nonce, NONCE, 65);
        m->u.challenge.master = S("tf-master 0.1.0");
        break;
    case TF_MSG_HELLO:
        m->u.hello.protocol = 1;
        m->u.hello.slave = S("vm1");
        memcpy(m->u.hello.auth, AUTH, 65);
        m->u.hello.version = S("tf-slave 0.1.0");
        m->u.hello.platform = S("linux-x86_64");
        m->u.hello.ntags = 2;
        m->u.hello.tags = zalloc(3, sizeof(char *));
        m->u.hello.tags[0] = S("linux");
        m->u.hello.tags[1] = S("x86_64");
        m->u.hello.max_builds = 2;
        m->u.hello.nrunning = 2;
        m->u.hello.running = zalloc(2, sizeof(tf_running_t));
        m->u.hello.running[0] = (tf_running_t){.build_id = 7, .seq = 0};
        m->u.hello.running[1] = (tf_running_t){
            .build_id = TF_PROTO_MAX_ID, .seq = 12,
            .farm = "0123456789abcdef0123456789abcdef"};
        break;
    case TF_MSG_WELCOME:
        m->u.welcome.slave = S("vm1");
        m->u.welcome.heartbeat_s = 10;
        m->u.welcome.nresume = 1;
        m->u.welcome.resume = zalloc(1, sizeof(tf_running_t));
        m->u.welcome.resume[0] = (tf_running_t){.build_id = 7, .seq = 3};
        snprintf(m->u.welcome.farm, sizeof(m->u.welcome.farm), "%s",
                 "fedcba9876543210fedcba9876543210");
        m->u.welcome.nabandon = 2;
        m->u.welcome.abandon = zalloc(2, sizeof(uint64_t));
        m->u.welcome.abandon[0] = 5;
        m->u.welcome.abandon[1] = 6;
        break;
    case TF_MSG_ERROR:
        m->u.error.code = S("bad_auth");
        m->u.error.message = S("the auth HMAC does not match");
        break;
    case TF_MSG_PING:
    case TF_MSG_PONG:
        m->u.ping.id = 42;
        break;
    case TF_MSG_BUILD_START:
        m->u.build_start.build_id = 7;
        m->u.build_start.builder = S("linux_rel");
        m->u.build_start.number = 3;
        m->u.build_start.workdir = S("linux_rel");
        m->u.build_start.nprops = 2;
        m->u.build_start.props = zalloc(2, sizeof(tf_kv_t));
        m->u.build_start.props[0].key = S("builder");
        m->u.build_start.props[0].value = S("linux_rel");
        m->u.build_start.props[1].key = S("revision");
        m->u.build_start.props[1].value = S("abc123");
        m->u.build_start.nsteps = 3;
        m->u.build_start.steps = zalloc(3, sizeof(tf_step_spec_t));
        for (int i = 0; i < 3; i++)
            sample_step(&m->u.build_start.steps[i], i);
        break;
    case TF_MSG_BUILD_ABORT:
        m->u.build_abort.build_id = 7;
        m->u.build_abort.reason = S("cancelled by alice");
        break;
    case TF_MSG_ACK:
        m->u.ack.build_id = 7;
        m->u.ack.seq = 4;
        break;
    case TF_MSG_STEP_STARTED:
        m->u.step_started.build_id = 7;
        m->u.step_started.seq = 1;
        m->u.step_started.step = 999;
        m->u.step_started.name = S("test");
        m->u.step_started.time_ms = 1795000000000LL;
        break;
    case TF_MSG_STEP_FINISHED:
        m->u.step_finished.build_id = 7;
        m->u.step_finished.seq = 3;
        m->u.step_finished.step = 0;
        m->u.step_finished.result = TF_FAILURE;
        m->u.step_finished.has_exit_code = true;
        m->u.step_finished.exit_code = 2;
        m->u.step_finished.has_signal = false;
        m->u.step_finished.timed_out = true;
        m->u.step_finished.duration_ms = 812;
        m->u.step_finished.time_ms = 1795000000812LL;
        m->u.step_finished.text = S("exit 2\nline two\ttab");
        break;
    case TF_MSG_BUILD_FINISHED:
        m->u.build_finished.build_id = 7;
        m->u.build_finished.seq = 4;
        m->u.build_finished.result = TF_RETRY;
        m->u.build_finished.time_ms = 1795000000813LL;
        break;
    case TF_MSG_TEST_RESULTS:
        sample_results(m);
        break;
    case TF_MSG_DRAIN:
    case TF_MSG_NONE:
    case TF_MSG__COUNT:
        break;
    }
}

/* ---- deep comparison ---- */

static bool streq0(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

#define EQ(cond)                                                               \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: differs: %s\n", __FILE__, __LINE__,        \
                    #cond);                                                    \
            return false;                                                      \
        }                                                                      \
    } while (0)

static bool kv_equal(const tf_kv_t *a, size_t na, const tf_kv_t *b, size_t nb)
{
    EQ(na == nb);
    for (size_t i = 0; i < na; i++) {
        EQ(streq0(a[i].key, b[i].key));
        EQ(streq0(a[i].value, b[i].value));
    }
    return true;
}

static bool running_equal(const tf_running_t *a, size_t na,
                          const tf_running_t *b, size_t nb)
{
    EQ(na == nb);
    for (size_t i = 0; i < na; i++) {
        EQ(a[i].build_id == b[i].build_id);
        EQ(a[i].seq == b[i].seq);
        EQ(strcmp(a[i].farm, b[i].farm) == 0);
    }
    return true;
}

static bool str_or_null_equal(const char *a, const char *b)
{
    return (!a && !b) || streq0(a, b);
}

static bool mods_equal(const tf_modifiers_t *a, const tf_modifiers_t *b)
{
    EQ(!a == !b);
    if (!a)
        return true;
    EQ(a->markers == b->markers);
    EQ(a->ninfo == b->ninfo);
    for (size_t i = 0; i < a->ninfo; i++)
        EQ(streq0(a->info[i], b->info[i]));
    EQ(a->nstats == b->nstats);
    for (size_t i = 0; i < a->nstats; i++) {
        EQ(str_or_null_equal(a->stats[i].name, b->stats[i].name));
        EQ(streq0(a->stats[i].regex, b->stats[i].regex));
    }
    EQ(str_or_null_equal(a->pass_if, b->pass_if));
    EQ(str_or_null_equal(a->fail_if, b->fail_if));
    EQ(str_or_null_equal(a->warnings, b->warnings));
    EQ(!a->warnings || a->warnings_max == b->warnings_max);
    return true;
}

static bool test_spec_equal(const tf_test_spec_t *a, const tf_test_spec_t *b)
{
    EQ(!a == !b);
    if (!a)
        return true;
    EQ(a->format == b->format);
    EQ(a->nfiles == b->nfiles);
    for (size_t i = 0; i < a->nfiles; i++)
        EQ(streq0(a->files[i], b->files[i]));
    return true;
}

static bool step_equal(const tf_step_spec_t *a, const tf_step_spec_t *b)
{
    EQ(streq0(a->name, b->name));
    EQ(a->argc == b->argc);
    for (size_t i = 0; i < a->argc; i++)
        EQ(streq0(a->argv[i], b->argv[i]));
    EQ(b->argv[b->argc] == NULL);
    EQ(kv_equal(a->env, a->nenv, b->env, b->nenv));
    EQ(streq0(a->workdir, b->workdir));
    EQ(a->timeout_s == b->timeout_s);
    EQ(a->max_time_s == b->max_time_s);
    EQ(a->flags.halt_on_failure == b->flags.halt_on_failure);
    EQ(a->flags.flunk_on_failure == b->flags.flunk_on_failure);
    EQ(a->flags.warn_on_failure == b->flags.warn_on_failure);
    EQ(a->flags.flunk_on_warnings == b->flags.flunk_on_warnings);
    EQ(a->flags.warn_on_warnings == b->flags.warn_on_warnings);
    EQ(a->flags.always_run == b->flags.always_run);
    EQ(mods_equal(a->modifiers, b->modifiers));
    EQ(test_spec_equal(a->test_results, b->test_results));
    return true;
}

static bool msg_equal(const tf_msg_t *a, const tf_msg_t *b)
{
    EQ(a->type == b->type);
    switch (a->type) {
    case TF_MSG_CHALLENGE:
        EQ(a->u.challenge.protocol == b->u.challenge.protocol);
        EQ(streq0(a->u.challenge.nonce, b->u.challenge.nonce));
        EQ(streq0(a->u.challenge.master, b->u.challenge.master));
        break;
    case TF_MSG_HELLO:
        EQ(a->u.hello.protocol == b->u.hello.protocol);
        EQ(streq0(a->u.hello.slave, b->u.hello.slave));
        EQ(streq0(a->u.hello.auth, b->u.hello.auth));
        EQ(streq0(a->u.hello.version, b->u.hello.version));
        EQ(streq0(a->u.hello.platform, b->u.hello.platform));
        EQ(a->u.hello.ntags == b->u.hello.ntags);
        for (size_t i = 0; i < a->u.hello.ntags; i++)
            EQ(streq0(a->u.hello.tags[i], b->u.hello.tags[i]));
        EQ(a->u.hello.max_builds == b->u.hello.max_builds);
        EQ(running_equal(a->u.hello.running, a->u.hello.nrunning,
                         b->u.hello.running, b->u.hello.nrunning));
        break;
    case TF_MSG_WELCOME:
        EQ(streq0(a->u.welcome.slave, b->u.welcome.slave));
        EQ(a->u.welcome.heartbeat_s == b->u.welcome.heartbeat_s);
        EQ(running_equal(a->u.welcome.resume, a->u.welcome.nresume,
                         b->u.welcome.resume, b->u.welcome.nresume));
        EQ(strcmp(a->u.welcome.farm, b->u.welcome.farm) == 0);
        EQ(a->u.welcome.nabandon == b->u.welcome.nabandon);
        for (size_t i = 0; i < a->u.welcome.nabandon; i++)
            EQ(a->u.welcome.abandon[i] == b->u.welcome.abandon[i]);
        break;
    case TF_MSG_ERROR:
        EQ(streq0(a->u.error.code, b->u.error.code));
        EQ(streq0(a->u.error.message, b->u.error.message));
        break;
    case TF_MSG_PING:
    case TF_MSG_PONG:
        EQ(a->u.ping.id == b->u.ping.id);
        break;
    case TF_MSG_BUILD_START:
        EQ(a->u.build_start.build_id == b->u.build_start.build_id);
        EQ(streq0(a->u.build_start.builder, b->u.build_start.builder));
        EQ(a->u.build_start.number == b->u.build_start.number);
        EQ(streq0(a->u.build_start.workdir, b->u.build_start.workdir));
        EQ(kv_equal(a->u.build_start.props, a->u.build_start.nprops,
                    b->u.build_start.props, b->u.build_start.nprops));
        EQ(a->u.build_start.nsteps == b->u.build_start.nsteps);
        for (size_t i = 0; i < a->u.build_start.nsteps; i++)
            EQ(step_equal(&a->u.build_start.steps[i],
                          &b->u.build_start.steps[i]));
        break;
    case TF_MSG_BUILD_ABORT:
        EQ(a->u.build_abort.build_id == b->u.build_abort.build_id);
        EQ(streq0(a->u.build_abort.reason, b->u.build_abort.reason));
        break;
    case TF_MSG_ACK:
        EQ(a->u.ack.build_id == b->u.ack.build_id);
        EQ(a->u.ack.seq == b->u.ack.seq);
        break;
    case TF_MSG_STEP_STARTED:
        EQ(a->u.step_started.build_id == b->u.step_started.build_id);
        EQ(a->u.step_started.seq == b->u.step_started.seq);
        EQ(a->u.step_started.step == b->u.step_started.step);
        EQ(streq0(a->u.step_started.name, b->u.step_started.name));
        EQ(a->u.step_started.time_ms == b->u.step_started.time_ms);
        break;
    case TF_MSG_STEP_FINISHED: {
        const __typeof__(a->u.step_finished) *x = &a->u.step_finished,
                                             *y = &b->u.step_finished;
        EQ(x->build_id == y->build_id);
        EQ(x->seq == y->seq);
        EQ(x->step == y->step);
        EQ(x->result == y->result);
        EQ(x->has_exit_code == y->has_exit_code);
        EQ(!x->has_exit_code || x->exit_code == y->exit_code);
        EQ(x->has_signal == y->has_signal);
        EQ(!x->has_signal || x->signal == y->signal);
        EQ(x->timed_out == y->timed_out);
        EQ(x->duration_ms == y->duration_ms);
        EQ(x->time_ms == y->time_ms);
        EQ(streq0(x->text, y->text));
        EQ(str_or_null_equal(x->info, y->info));
        EQ(x->nstats == y->nstats);
        for (size_t i = 0; i < x->nstats; i++) {
            EQ(streq0(x->stats[i].name, y->stats[i].name));
            EQ(x->stats[i].value == y->stats[i].value);
        }
        EQ(x->has_warnings == y->has_warnings);
        EQ(!x->has_warnings || x->warnings == y->warnings);
        break;
    }
    case TF_MSG_BUILD_FINISHED:
        EQ(a->u.build_finished.build_id == b->u.build_finished.build_id);
        EQ(a->u.build_finished.seq == b->u.build_finished.seq);
        EQ(a->u.build_finished.result == b->u.build_finished.result);
        EQ(a->u.build_finished.time_ms == b->u.build_finished.time_ms);
        break;
    case TF_MSG_TEST_RESULTS: {
        const __typeof__(a->u.test_results) *x = &a->u.test_results,
                                            *y = &b->u.test_results;
        EQ(x->build_id == y->build_id && x->seq == y->seq);
        EQ(x->step == y->step && x->format == y->format);
        EQ(x->last == y->last && x->has_total == y->has_total);
        EQ(x->total == y->total && x->dropped == y->dropped);
        EQ(x->nproblems == y->nproblems);
        for (size_t i = 0; i < x->nproblems; i++)
            EQ(streq0(x->problems[i], y->problems[i]));
        EQ(x->nresults == y->nresults);
        for (size_t i = 0; i < x->nresults; i++) {
            const tf_test_result_t *r = &x->results[i], *q = &y->results[i];
            EQ(streq0(r->suite, q->suite) && streq0(r->name, q->name));
            EQ(r->status == q->status && r->attempts == q->attempts);
            EQ(r->duration_ms == q->duration_ms);
            EQ(str_or_null_equal(r->outcome, q->outcome));
            EQ(str_or_null_equal(r->message, q->message));
            EQ(r->has_log == q->has_log);
            EQ(!r->has_log || (r->log_offset == q->log_offset &&
                               r->log_line == q->log_line &&
                               r->log_lines == q->log_lines));
        }
        break;
    }
    case TF_MSG_DRAIN:
    case TF_MSG_NONE:
    case TF_MSG__COUNT:
        break;
    }
    return true;
}

/* encode -> decode -> compare -> encode again, byte for byte. Returns the
 * first encoding (caller frees) or NULL. */
static char *roundtrip(const tf_msg_t *m)
{
    char *t1 = NULL, *t2 = NULL;
    size_t l1 = 0, l2 = 0;
    char err[256] = "";
    tf_msg_t d;
    TF_CHECK_INT(tf_msg_encode(m, &t1, &l1), 0);
    if (!t1)
        return NULL;
    TF_CHECK_INT(strlen(t1), l1);
    TF_CHECK(strchr(t1, '\n') == NULL);
    int rc = tf_msg_decode(t1, l1, &d, err, sizeof err);
    TF_CHECK_INT(rc, 0);
    if (rc) {
        fprintf(stderr, "decode of %s failed: %s\n", t1, err);
        free(t1);
        return NULL;
    }
    TF_CHECK(msg_equal(m, &d));
    TF_CHECK_INT(tf_msg_encode(&d, &t2, &l2), 0);
    TF_CHECK_STR(t1, t2);
    TF_CHECK_INT(l1, l2);
    free(t2);
    tf_msg_clear(&d);
    TF_CHECK_INT(d.type, TF_MSG_NONE);
    return t1;
}

/* Decodes text and expects failure rc with a sentence starting with want
 * (when want is non-NULL). */
static void expect_fail_n(const char *text, size_t len, int rc,
                          const char *want, int line)
{
    tf_msg_t m;
    char err[512];
    memset(err, 'X', sizeof err);
    int got = tf_msg_decode(text, len, &m, err, sizeof err);
    bool ok = got == rc && err[0] != '\0' && m.type == TF_MSG_NONE &&
              strlen(err) < sizeof err &&
              (!want || strncmp(err, want, strlen(want)) == 0);
    if (!ok) {
        fprintf(stderr,
                "test_proto.c:%d: decode of %.200s: rc %d (want %d), err "
                "\"%.300s\" (want prefix \"%s\")\n",
                line, text ? text : "(null)", got, rc, err, want ? want : "");
        tf__failed_checks++;
    }
    if (got == 0)
        tf_msg_clear(&m);
}

#define expect_fail(text, rc, want)                                            \
    expect_fail_n((text), strlen(text), (rc), (want), __LINE__)

static void expect_ok_n(const char *text, size_t len, tf_msg_type_t type,
                        int line)
{
    tf_msg_t m;
    char err[512] = "";
    int got = tf_msg_decode(text, len, &m, err, sizeof err);
    if (got != 0 || m.type != type) {
        fprintf(stderr, "test_proto.c:%d: decode of %.200s: rc %d: %s\n",
                line, text, got, err);
        tf__failed_checks++;
    }
    tf_msg_clear(&m);
}

#define expect_ok(text, type) expect_ok_n((text), strlen(text), (type), __LINE__)

/* ---- tests ---- */

TF_TEST(type_names)
{
    const char *names[] = {NULL,          "challenge",    "hello",
                           "welcome",     "error",        "ping",
                           "pong",        "build_start",  "build_abort",
                           "ack",         "step_started", "step_finished",
                           "build_finished", "drain", "test_results"};
    for (int t = TF_MSG_CHALLENGE; t < TF_MSG__COUNT; t++)
        TF_CHECK_STR(tf_msg_type_name((tf_msg_type_t)t), names[t]);
    TF_CHECK(tf_msg_type_name(TF_MSG_NONE) == NULL);
    TF_CHECK(tf_msg_type_name(TF_MSG__COUNT) == NULL);
    TF_CHECK(tf_msg_type_name((tf_msg_type_t)-1) == NULL);
}

TF_TEST(roundtrip_every_type)
{
    for (int t = TF_MSG_CHALLENGE; t < TF_MSG__COUNT; t++) {
        tf_msg_t m;
        sample((tf_msg_type_t)t, &m);
        char *text = roundtrip(&m);
        TF_CHECK(text != NULL);
        free(text);
        tf_msg_clear(&m);
    }
}

TF_TEST(roundtrip_edges)
{
    tf_msg_t m;
    char *text;

    /* Empty arrays are still emitted. */
    sample(TF_MSG_HELLO, &m);
    for (size_t i = 0; i < m.u.hello.ntags; i++)
        free(m.u.hello.tags[i]);
    free(m.u.hello.tags);
    free(m.u.hello.running);
    m.u.hello.tags = NULL;
    m.u.hello.ntags = 0;
    m.u.hello.running = NULL;
    m.u.hello.nrunning = 0;
    text = roundtrip(&m);
    TF_CHECK(text && strstr(text, "\"tags\":[]") && strstr(text, "\"running\":[]"));
    free(text);
    tf_msg_clear(&m);

    m.type = TF_MSG_WELCOME;
    m.u.welcome.slave = S("s");
    m.u.welcome.heartbeat_s = 1;
    text = roundtrip(&m);
    TF_CHECK_STR(text, "{\"type\":\"welcome\",\"slave\":\"s\",\"heartbeat_s\":1,"
                       "\"resume\":[],\"abandon\":[]}");
    free(text);
    tf_msg_clear(&m);

    /* Signal instead of exit code; null exit code is emitted as null. */
    sample(TF_MSG_STEP_FINISHED, &m);
    m.u.step_finished.has_exit_code = false;
    m.u.step_finished.exit_code = 99; /* ignored */
    m.u.step_finished.has_signal = true;
    m.u.step_finished.signal = 9;
    m.u.step_finished.result = TF_CANCELLED;
    text = roundtrip(&m);
    TF_CHECK(text && strstr(text, "\"exit_code\":null,\"signal\":9,"));
    free(text);
    m.u.step_finished.has_signal = false;
    m.u.step_finished.duration_ms = 0;
    m.u.step_finished.time_ms = (int64_t)TF_PROTO_MAX_ID;
    free(m.u.step_finished.text);
    m.u.step_finished.text = S("");
    text = roundtrip(&m);
    TF_CHECK(text && strstr(text, "\"exit_code\":null,\"signal\":null,"));
    free(text);
    tf_msg_clear(&m);

    /* Every result name round-trips. */
    for (int r = 0; r < TF_RESULT_COUNT; r++) {
        sample(TF_MSG_BUILD_FINISHED, &m);
        m.u.build_finished.result = (tf_result_t)r;
        text = roundtrip(&m);
        TF_CHECK(text && strstr(text, tf_result_name((tf_result_t)r)));
        free(text);
        tf_msg_clear(&m);
    }

    /* Maximal ids and 1000 steps. */
    sample(TF_MSG_BUILD_START, &m);
    tf_msg_clear(&m);
    m.type = TF_MSG_BUILD_START;
    m.u.build_start.build_id = TF_PROTO_MAX_ID;
    m.u.build_start.number = TF_PROTO_MAX_ID;
    m.u.build_start.builder = S("b");
    m.u.build_start.workdir = S("b");
    m.u.build_start.nsteps = TF_PROTO_MAX_STEPS;
    m.u.build_start.steps = zalloc(TF_PROTO_MAX_STEPS, sizeof(tf_step_spec_t));
    for (int i = 0; i < TF_PROTO_MAX_STEPS; i++)
        sample_step(&m.u.build_start.steps[i], i);
    text = roundtrip(&m);
    TF_CHECK(text != NULL);
    free(text);
    tf_msg_clear(&m);
}

/* The messages of the specification's example session, byte for byte. */
TF_TEST(spec_examples_exact)
{
    const char *texts[] = {
        "{\"type\":\"challenge\",\"protocol\":1,\"nonce\":\"" NONCE
        "\",\"master\":\"tf-master 0.1.0\"}",
        "{\"type\":\"hello\",\"protocol\":1,\"slave\":\"vm1\",\"auth\":\"" AUTH
        "\",\"version\":\"tf-slave 0.1.0\",\"platform\":\"linux-x86_64\","
        "\"tags\":[\"linux\"],\"max_builds\":1,\"running\":[]}",
        "{\"type\":\"welcome\",\"slave\":\"vm1\",\"heartbeat_s\":10,"
        "\"resume\":[],\"abandon\":[]}",
        "{\"type\":\"build_start\",\"build_id\":7,\"builder\":\"linux_rel\","
        "\"number\":3,\"workdir\":\"linux_rel\",\"properties\":{\"builder\":"
        "\"linux_rel\"},\"steps\":[{\"name\":\"test\",\"command\":[\"/bin/sh\","
        "\"-c\",\"make check\"],\"env\":{},\"workdir\":\"\",\"timeout_s\":1200,"
        "\"max_time_s\":0,\"haltOnFailure\":false,\"flunkOnFailure\":true,"
        "\"warnOnFailure\":false,\"flunkOnWarnings\":false,\"warnOnWarnings\":"
        "true,\"alwaysRun\":false}]}",
        "{\"type\":\"step_started\",\"build_id\":7,\"seq\":1,\"step\":0,"
        "\"name\":\"test\",\"time_ms\":1795000000000}",
        "{\"type\":\"ack\",\"build_id\":7,\"seq\":2}",
        "{\"type\":\"step_finished\",\"build_id\":7,\"seq\":3,\"step\":0,"
        "\"result\":\"SUCCESS\",\"exit_code\":0,\"signal\":null,\"timed_out\":"
        "false,\"duration_ms\":812,\"time_ms\":1795000000812,\"text\":"
        "\"exit 0\"}",
        "{\"type\":\"build_finished\",\"build_id\":7,\"seq\":4,\"result\":"
        "\"SUCCESS\",\"time_ms\":1795000000813}",
        "{\"type\":\"ping\",\"id\":5}",
        "{\"type\":\"pong\",\"id\":5}",
        "{\"type\":\"drain\"}",
        "{\"type\":\"build_abort\",\"build_id\":7,\"reason\":\"cancelled\"}",
        "{\"type\":\"error\",\"code\":\"protocol_version\",\"message\":"
        "\"master speaks 1, slave 2\"}",
    };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        tf_msg_t m;
        char err[256] = "", *out = NULL;
        size_t len = 0;
        TF_CHECK_INT(tf_msg_decode(texts[i], strlen(texts[i]), &m, err,
                                   sizeof err), 0);
        if (err[0])
            fprintf(stderr, "%s\n", err);
        TF_CHECK_INT(tf_msg_encode(&m, &out, &len), 0);
        TF_CHECK_STR(out, texts[i]);
        free(out);
        tf_msg_clear(&m);
    }
    /* Whitespace and field order on input do not matter. */
    expect_ok(" { \"id\" : 5 ,\n \"type\" : \"ping\" } ", TF_MSG_PING);
}

TF_TEST(unknown_fields_ignored)
{
    for (int t = TF_MSG_CHALLENGE; t < TF_MSG__COUNT; t++) {
        tf_msg_t m;
        char *text = NULL;
        size_t len;
        sample((tf_msg_type_t)t, &m);
        TF_CHECK_INT(tf_msg_encode(&m, &text, &len), 0);
        tf_msg_clear(&m);
        if (!text)
            continue;
        json_t *o = json_loads(text, 0, NULL);
        json_object_set_new(o, "x_future", json_pack("{s:[i,n]}", "a", 1));
        char *mod = json_dumps(o, JSON_COMPACT);
        expect_ok(mod, (tf_msg_type_t)t);
        free(mod);
        json_decref(o);
        free(text);
    }
}

/* A value of a different JSON type than v. */
static json_t *wrong_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return json_integer(5);
    case JSON_INTEGER:
        return json_string("5");
    case JSON_TRUE:
    case JSON_FALSE:
        return json_integer(1);
    case JSON_ARRAY:
        return json_object();
    case JSON_OBJECT:
        return json_array();
    case JSON_NULL:
    case JSON_REAL:
        return json_string("x");
    }
    return json_null();
}

static void expect_json_fail(json_t *o, const char *want, int line)
{
    char *text = json_dumps(o, JSON_COMPACT);
    expect_fail_n(text, strlen(text), TF_EINVAL, want, line);
    free(text);
}

TF_TEST(every_field_missing_or_wrong_type)
{
    for (int t = TF_MSG_CHALLENGE; t < TF_MSG__COUNT; t++) {
        tf_msg_t m;
        char *text = NULL;
        size_t len;
        sample((tf_msg_type_t)t, &m);
        TF_CHECK_INT(tf_msg_encode(&m, &text, &len), 0);
        tf_msg_clear(&m);
        if (!text)
            continue;
        json_t *o = json_loads(text, 0, NULL);
        const char *key;
        json_t *v;
        char want[128];
        json_object_foreach(o, key, v) {
            if (strcmp(key, "type") == 0)
                continue;
            snprintf(want, sizeof want, "%s.%s: ", tf_msg_type_name((tf_msg_type_t)t), key);
            json_t *c = json_deep_copy(o);
            json_object_del(c, key);
            if (strcmp(key, "farm") != 0) /* optional (welcome.farm) */
                expect_json_fail(c, want, __LINE__);
            json_object_set_new(c, key, wrong_type(v));
            expect_json_fail(c, want, __LINE__);
            json_object_set_new(c, key, json_null());
            if (strcmp(key, "exit_code") && strcmp(key, "signal"))
                expect_json_fail(c, want, __LINE__);
            if (json_is_integer(v)) {
                json_object_set_new(c, key, json_real(1.5));
                expect_json_fail(c, want, __LINE__);
                json_object_set_new(c, key, json_real(1.0));
                expect_json_fail(c, want, __LINE__);
                json_object_set_new(c, key, json_integer(-1));
                expect_json_fail(c, want, __LINE__);
                json_object_set_new(c, key, json_integer((json_int_t)1 << 53));
                expect_json_fail(c, want, __LINE__);
            }
            json_decref(c);
        }
        json_decref(o);
        free(text);
    }
}

TF_TEST(not_json_not_object)
{
    expect_fail("", TF_EINVAL, "not valid JSON");
    expect_fail("{", TF_EINVAL, "not valid JSON");
    expect_fail("nope", TF_EINVAL, "not valid JSON");
    expect_fail("{\"type\":\"ping\",\"id\":1} x", TF_EINVAL, "not valid JSON");
    expect_fail("{\"type\":\"ping\",\"id\":1}{}", TF_EINVAL, "not valid JSON");
    expect_fail("{'type':'ping'}", TF_EINVAL, "not valid JSON");
    expect_fail("{\"type\":\"ping\",\"id\":1,}", TF_EINVAL, "not valid JSON");
    expect_fail("[]", TF_EINVAL, "message is a JSON array");
    expect_fail("[{\"type\":\"ping\",\"id\":1}]", TF_EINVAL,
                "message is a JSON array");
    expect_fail("5", TF_EINVAL, "message is not a JSON object");
    expect_fail("\"ping\"", TF_EINVAL, "message is not a JSON object");
    expect_fail("null", TF_EINVAL, "message is not a JSON object");
    expect_fail("{}", TF_EINVAL, "message has no \"type\" field");
    expect_fail("{\"id\":1}", TF_EINVAL, "message has no \"type\" field");
    expect_fail("{\"type\":5}", TF_EINVAL, "type: expected a string");
    expect_fail("{\"type\":null}", TF_EINVAL, "type: expected a string");
    expect_fail("{\"type\":\"foo\"}", TF_EINVAL, "unknown message type \"foo\"");
    expect_fail("{\"type\":\"PING\",\"id\":1}", TF_EINVAL,
                "unknown message type \"PING\"");
    expect_fail("{\"type\":\"\"}", TF_EINVAL, "unknown message type \"\"");
    expect_fail("{\"type\":\"a\\nb\\\"\"}", TF_EINVAL,
                "unknown message type \"a?b?\"");
    /* Duplicate keys, at the top and nested. */
    expect_fail("{\"type\":\"ping\",\"id\":1,\"id\":2}", TF_EINVAL,
                "not valid JSON: duplicate");
    expect_fail("{\"type\":\"ping\",\"type\":\"ping\",\"id\":1}", TF_EINVAL,
                "not valid JSON");
    expect_fail("{\"type\":\"ping\",\"id\":1,\"x\":{\"a\":1,\"a\":2}}",
                TF_EINVAL, "not valid JSON");
    /* NUL bytes: escaped and raw. */
    expect_fail("{\"type\":\"ping\\u0000\",\"id\":1}", TF_EINVAL,
                "not valid JSON");
    expect_fail_n("{\"type\":\"pi\0ng\",\"id\":1}", 24, TF_EINVAL,
                  "not valid JSON", __LINE__);
    expect_fail_n("{\"type\":\"ping\",\"id\":1}\0", 23, TF_EINVAL,
                  "not valid JSON", __LINE__);
    /* Invalid UTF-8. */
    expect_fail("{\"type\":\"ping\",\"id\":1,\"x\":\"\xc3\x28\"}", TF_EINVAL,
                "not valid JSON");
    expect_fail("{\"type\":\"ping\",\"id\":1,\"x\":\"\xed\xa0\x80\"}",
                TF_EINVAL, "not valid JSON");
    /* A NULL text. */
    expect_fail_n(NULL, 0, TF_EINVAL, NULL, __LINE__);
    /* Too deep nesting is refused by the parser, without a crash. */
    static char deep[40000];
    size_t o = 0;
    o += (size_t)snprintf(deep, sizeof deep, "{\"type\":\"ping\",\"id\":1,\"x\":");
    for (int i = 0; i < 10000; i++)
        deep[o++] = '[';
    for (int i = 0; i < 10000; i++)
        deep[o++] = ']';
    deep[o++] = '}';
    deep[o] = '\0';
    expect_fail(deep, TF_EINVAL, "not valid JSON");
}

TF_TEST(truncated_json_every_prefix)
{
    for (int t = TF_MSG_CHALLENGE; t < TF_MSG__COUNT; t++) {
        tf_msg_t m;
        char *text = NULL;
        size_t len = 0;
        sample((tf_msg_type_t)t, &m);
        TF_CHECK_INT(tf_msg_encode(&m, &text, &len), 0);
        tf_msg_clear(&m);
        for (size_t n = 0; text && n < len; n++) {
            char *copy = xmalloc(n + 1); /* exact size: valgrind sees over-reads */
            memcpy(copy, text, n);
            copy[n] = '\0';
            expect_fail_n(copy, n, TF_EINVAL, "not valid JSON", __LINE__);
            free(copy);
        }
        free(text);
    }
}

TF_TEST(oversized)
{
    size_t n = TF_PROTO_MAX_TEXT + 1;
    char *big = xmalloc(n + 1);
    /* Garbage: were it parsed, the error would be TF_EINVAL. */
    memset(big, '!', n);
    big[n] = '\0';
    expect_fail_n(big, n, TF_E2BIG, "control message of 1048577 bytes", __LINE__);
    expect_fail_n(big, SIZE_MAX, TF_E2BIG, NULL, __LINE__);
    /* Exactly the cap is allowed. */
    const char *ping = "{\"type\":\"ping\",\"id\":1}";
    memset(big, ' ', TF_PROTO_MAX_TEXT);
    memcpy(big, ping, strlen(ping));
    expect_ok_n(big, TF_PROTO_MAX_TEXT, TF_MSG_PING, __LINE__);
    /* A valid message one byte over is still refused unparsed. */
    big[TF_PROTO_MAX_TEXT] = ' ';
    expect_fail_n(big, n, TF_E2BIG, NULL, __LINE__);
    free(big);

    /* The encoder refuses to produce an oversized frame. */
    tf_msg_t m;
    sample(TF_MSG_BUILD_START, &m);
    free(m.u.build_start.props[1].value);
    m.u.build_start.props[1].value = xmalloc(TF_PROTO_MAX_TEXT);
    memset(m.u.build_start.props[1].value, 'v', TF_PROTO_MAX_TEXT - 1);
    m.u.build_start.props[1].value[TF_PROTO_MAX_TEXT - 1] = '\0';
    char *out = (char *)1;
    size_t len = 9;
    TF_CHECK_INT(tf_msg_encode(&m, &out, &len), TF_E2BIG);
    TF_CHECK(out == NULL);
    TF_CHECK_INT(len, 0);
    tf_msg_clear(&m);
}

#define HELLO_PRE                                                              \
    "{\"type\":\"hello\",\"protocol\":1,\"auth\":\"" AUTH "\",\"version\":"    \
    "\"v\",\"platform\":\"p\",\"max_builds\":1,"

TF_TEST(names_checked)
{
    char n65[66];
    memset(n65, 'a', 65);
    n65[65] = '\0';
    const char *bad[] = {"", ".", "..", "../x", "a/b", "-a", "_a", "a b",
                         "\xc3\xa9", n65};
    char buf[1024];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(buf, sizeof buf,
                 HELLO_PRE "\"slave\":\"%s\",\"tags\":[],\"running\":[]}",
                 bad[i]);
        expect_fail(buf, TF_EINVAL, "hello.slave: \"");
        snprintf(buf, sizeof buf,
                 HELLO_PRE "\"slave\":\"ok\",\"tags\":[\"a\",\"%s\"],"
                           "\"running\":[]}",
                 bad[i]);
        expect_fail(buf, TF_EINVAL, "hello.tags[1]: ");
        snprintf(buf, sizeof buf,
                 "{\"type\":\"step_started\",\"build_id\":1,\"seq\":1,"
                 "\"step\":0,\"name\":\"%s\",\"time_ms\":0}",
                 bad[i]);
        expect_fail(buf, TF_EINVAL, "step_started.name: ");
        snprintf(buf, sizeof buf,
                 "{\"type\":\"welcome\",\"slave\":\"%s\",\"heartbeat_s\":1,"
                 "\"resume\":[],\"abandon\":[]}",
                 bad[i]);
        expect_fail(buf, TF_EINVAL, "welcome.slave: ");
    }
    /* The quoted bad value is sanitised and cut. */
    expect_fail(HELLO_PRE "\"slave\":\"../x\",\"tags\":[],\"running\":[]}",
                TF_EINVAL, "hello.slave: \"../x\" is not a valid name");
    expect_fail(HELLO_PRE "\"slave\":\"a\",\"tags\":[\"x\",\"y\",7],"
                          "\"running\":[]}",
                TF_EINVAL, "hello.tags[2]: expected a string");
    expect_fail("{\"type\":\"error\",\"code\":\"bad auth\",\"message\":\"m\"}",
                TF_EINVAL, "error.code: ");
    /* farm (hello.running[], welcome): optional, 1 to 64 lower-case hex
     * digits; absent is "" (older peers). */
    static const char *const bad_farms[] = {
        "\"\"", "\"ABCDEF\"", "\"12g4\"", "7", "null",
        "\"00000000000000000000000000000000000000000000000000000000000000000\""};
    for (size_t i = 0; i < sizeof(bad_farms) / sizeof(bad_farms[0]); i++) {
        snprintf(buf, sizeof buf,
                 HELLO_PRE "\"slave\":\"a\",\"tags\":[],\"running\":"
                 "[{\"build_id\":1,\"seq\":0,\"farm\":%s}]}",
                 bad_farms[i]);
        expect_fail(buf, TF_EINVAL, "hello.running[0].farm: ");
        snprintf(buf, sizeof buf,
                 "{\"type\":\"welcome\",\"slave\":\"s\",\"heartbeat_s\":1,"
                 "\"resume\":[],\"abandon\":[],\"farm\":%s}",
                 bad_farms[i]);
        expect_fail(buf, TF_EINVAL, "welcome.farm: ");
    }
}

static void build_start_text(char *buf, size_t n, const char *top,
                             const char *step)
{
    snprintf(buf, n,
             "{\"type\":\"build_start\",%s\"properties\":{\"p\":\"v\"},"
             "\"steps\":[{\"name\":\"a\",\"command\":[\"true\"],\"env\":{},"
             "\"workdir\":\"\",\"timeout_s\":0,\"max_time_s\":0,"
             "\"haltOnFailure\":false,\"flunkOnFailure\":true,"
             "\"warnOnFailure\":false,\"flunkOnWarnings\":false,"
             "\"warnOnWarnings\":true,\"alwaysRun\":false%s}]}",
             top, step);
}

#define BS_TOP "\"build_id\":7,\"builder\":\"b\",\"number\":0,\"workdir\":\"b\","

TF_TEST(build_start_checked)
{
    char buf[4096];
    build_start_text(buf, sizeof buf, BS_TOP, "");
    expect_ok(buf, TF_MSG_BUILD_START);
    /* Later duplicates of step fields are duplicate keys. */
    build_start_text(buf, sizeof buf, BS_TOP, ",\"name\":\"b\"");
    expect_fail(buf, TF_EINVAL, "not valid JSON");

    struct {
        const char *top, *step_from, *step_to, *want;
    } cases[] = {
        {"\"build_id\":0,\"builder\":\"b\",\"number\":0,\"workdir\":\"b\",",
         NULL, NULL, "build_start.build_id: 0 is out of range (1..9007199254740991)"},
        {"\"build_id\":9007199254740992,\"builder\":\"b\",\"number\":0,\"workdir\":\"b\",",
         NULL, NULL, "build_start.build_id: "},
        {"\"build_id\":-7,\"builder\":\"b\",\"number\":0,\"workdir\":\"b\",",
         NULL, NULL, "build_start.build_id: "},
        {"\"build_id\":7.0,\"builder\":\"b\",\"number\":0,\"workdir\":\"b\",",
         NULL, NULL, "build_start.build_id: expected an integer"},
        {"\"build_id\":7e0,\"builder\":\"b\",\"number\":0,\"workdir\":\"b\",",
         NULL, NULL, "build_start.build_id: expected an integer"},
        {"\"build_id\":99999999999999999999,\"builder\":\"b\",\"number\":0,\"workdir\":\"b\",",
         NULL, NULL, "not valid JSON"},
        {"\"build_id\":7,\"builder\":\"b\",\"number\":0,\"workdir\":\"a/b\",",
         NULL, NULL, "build_start.workdir: "},
        {"\"build_id\":7,\"builder\":\"b\",\"number\":0,\"workdir\":\"..\",",
         NULL, NULL, "build_start.workdir: "},
        {BS_TOP, "[\"true\"]", "[]", "build_start.steps[0].command: must not be empty"},
        {BS_TOP, "[\"true\"]", "[\"true\",3]", "build_start.steps[0].command[1]: expected a string"},
        {BS_TOP, "[\"true\"]", "[\"\"]", "build_start.steps[0].command[0]: must not be empty"},
        {BS_TOP, "[\"true\"]", "\"true\"", "build_start.steps[0].command: expected an array"},
        {BS_TOP, "\"env\":{}", "\"env\":{\"A\":1}", "build_start.steps[0].env[\"A\"]: expected a string"},
        {BS_TOP, "\"env\":{}", "\"env\":{\"A=B\":\"x\"}", "build_start.steps[0].env[\"A=B\"]: key contains '='"},
        {BS_TOP, "\"env\":{}", "\"env\":{\"\":\"x\"}", "build_start.steps[0].env: empty key"},
        {BS_TOP, "\"env\":{}", "\"env\":[]", "build_start.steps[0].env: expected an object"},
        {BS_TOP, "\"workdir\":\"\"", "\"workdir\":\"../x\"", "build_start.steps[0].workdir: \"../x\" is not a valid relative path"},
        {BS_TOP, "\"workdir\":\"\"", "\"workdir\":\"/abs\"", "build_start.steps[0].workdir: "},
        {BS_TOP, "\"workdir\":\"\"", "\"workdir\":\"a//b\"", "build_start.steps[0].workdir: "},
        {BS_TOP, "\"workdir\":\"\"", "\"workdir\":\"a/./b\"", "build_start.steps[0].workdir: "},
        {BS_TOP, "\"workdir\":\"\"", "\"workdir\":\"a/\"", "build_start.steps[0].workdir: "},
        {BS_TOP, "\"name\":\"a\"", "\"name\":\"../x\"", "build_start.steps[0].name: "},
        {BS_TOP, "\"timeout_s\":0", "\"timeout_s\":4294967296", "build_start.steps[0].timeout_s: "},
        {BS_TOP, "\"max_time_s\":0", "\"max_time_s\":-1", "build_start.steps[0].max_time_s: "},
        {BS_TOP, "\"alwaysRun\":false", "\"alwaysRun\":0", "build_start.steps[0].alwaysRun: expected true or false"},
        {BS_TOP, "\"haltOnFailure\":false", "\"haltOnFailure\":\"false\"", "build_start.steps[0].haltOnFailure: expected true or false"},
        {BS_TOP, "\"haltOnFailure\":false,", "", "build_start.steps[0].haltOnFailure: required field missing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        build_start_text(buf, sizeof buf, cases[i].top, "");
        if (cases[i].step_from) {
            char *at = strstr(buf, cases[i].step_from);
            TF_CHECK(at != NULL);
            if (!at)
                continue;
            char rest[4096];
            snprintf(rest, sizeof rest, "%s", at + strlen(cases[i].step_from));
            snprintf(at, sizeof buf - (size_t)(at - buf), "%s%s",
                     cases[i].step_to, rest);
        }
        expect_fail(buf, TF_EINVAL, cases[i].want);
    }

    /* properties: object of string -> string. */
    build_start_text(buf, sizeof buf, BS_TOP, "");
    char *p = strstr(buf, "{\"p\":\"v\"}");
    memcpy(p, "{\"p\":  7}", 9);
    expect_fail(buf, TF_EINVAL, "build_start.properties[\"p\"]: expected a string");

    /* Step count: 0, 1000 and 1001. */
    expect_fail("{\"type\":\"build_start\"," BS_TOP "\"properties\":{},\"steps\":[]}",
                TF_EINVAL, "build_start.steps: must not be empty");
    expect_fail("{\"type\":\"build_start\"," BS_TOP "\"properties\":{},\"steps\":[1]}",
                TF_EINVAL, "build_start.steps[0]: expected an object");
    const char *step = "{\"name\":\"a\",\"command\":[\"true\"],\"env\":{},"
                       "\"workdir\":\"\",\"timeout_s\":0,\"max_time_s\":0,"
                       "\"haltOnFailure\":false,\"flunkOnFailure\":true,"
                       "\"warnOnFailure\":false,\"flunkOnWarnings\":false,"
                       "\"warnOnWarnings\":true,\"alwaysRun\":false}";
    size_t cap = 1001 * (strlen(step) + 1) + 512, o = 0;
    char *big = xmalloc(cap);
    o += (size_t)snprintf(big, cap,
                          "{\"type\":\"build_start\"," BS_TOP
                          "\"properties\":{},\"steps\":[");
    for (int i = 0; i < 1000; i++)
        o += (size_t)snprintf(big + o, cap - o, "%s%s", i ? "," : "", step);
    snprintf(big + o, cap - o, "]}");
    expect_ok(big, TF_MSG_BUILD_START);
    o += (size_t)snprintf(big + o, cap - o, ",%s", step);
    snprintf(big + o, cap - o, "]}");
    expect_fail(big, TF_EINVAL, "build_start.steps: has 1001 entries, must have 1..1000");
    free(big);
}

TF_TEST(events_checked)
{
    expect_ok("{\"type\":\"step_started\",\"build_id\":1,\"seq\":1,\"step\":999,"
              "\"name\":\"a\",\"time_ms\":0}",
              TF_MSG_STEP_STARTED);
    expect_fail("{\"type\":\"step_started\",\"build_id\":1,\"seq\":0,\"step\":0,"
                "\"name\":\"a\",\"time_ms\":0}",
                TF_EINVAL, "step_started.seq: 0 is out of range");
    expect_fail("{\"type\":\"step_started\",\"build_id\":1,\"seq\":1,\"step\":1000,"
                "\"name\":\"a\",\"time_ms\":0}",
                TF_EINVAL, "step_started.step: 1000 is out of range (0..999)");
    expect_fail("{\"type\":\"step_started\",\"build_id\":0,\"seq\":1,\"step\":0,"
                "\"name\":\"a\",\"time_ms\":0}",
                TF_EINVAL, "step_started.build_id: ");
    expect_fail("{\"type\":\"step_started\",\"build_id\":1,\"seq\":1,\"step\":0,"
                "\"name\":\"a\",\"time_ms\":-5}",
                TF_EINVAL, "step_started.time_ms: ");

#define SF "{\"type\":\"step_finished\",\"build_id\":1,\"seq\":2,\"step\":0,"
    expect_ok(SF "\"result\":\"FAILURE\",\"exit_code\":null,\"signal\":9,"
                 "\"timed_out\":true,\"duration_ms\":0,\"time_ms\":0,\"text\":\"\"}",
              TF_MSG_STEP_FINISHED);
    expect_fail(SF "\"result\":\"success\",\"exit_code\":0,\"signal\":null,"
                   "\"timed_out\":false,\"duration_ms\":0,\"time_ms\":0,\"text\":\"\"}",
                TF_EINVAL, "step_finished.result: unknown result \"success\"");
    expect_fail(SF "\"result\":\"BOGUS\",\"exit_code\":0,\"signal\":null,"
                   "\"timed_out\":false,\"duration_ms\":0,\"time_ms\":0,\"text\":\"\"}",
                TF_EINVAL, "step_finished.result: ");
    expect_fail(SF "\"result\":\"SUCCESS\",\"exit_code\":\"0\",\"signal\":null,"
                   "\"timed_out\":false,\"duration_ms\":0,\"time_ms\":0,\"text\":\"\"}",
                TF_EINVAL, "step_finished.exit_code: expected an integer or null");
    expect_fail(SF "\"result\":\"SUCCESS\",\"exit_code\":-1,\"signal\":null,"
                   "\"timed_out\":false,\"duration_ms\":0,\"time_ms\":0,\"text\":\"\"}",
                TF_EINVAL, "step_finished.exit_code: ");
    expect_fail(SF "\"result\":\"SUCCESS\",\"exit_code\":2147483648,\"signal\":null,"
                   "\"timed_out\":false,\"duration_ms\":0,\"time_ms\":0,\"text\":\"\"}",
                TF_EINVAL, "step_finished.exit_code: ");
    expect_fail(SF "\"result\":\"SUCCESS\",\"exit_code\":null,\"signal\":0,"
                   "\"timed_out\":false,\"duration_ms\":0,\"time_ms\":0,\"text\":\"\"}",
                TF_EINVAL, "step_finished.signal: ");
    expect_fail(SF "\"result\":\"SUCCESS\",\"exit_code\":null,\"signal\":null,"
                   "\"timed_out\":null,\"duration_ms\":0,\"time_ms\":0,\"text\":\"\"}",
                TF_EINVAL, "step_finished.timed_out: expected true or false");
    /* text: 4096 bytes allowed, 4097 not. */
    char *buf = xmalloc(8192);
    char text[4098];
    memset(text, 't', 4097);
    text[4097] = '\0';
    snprintf(buf, 8192, SF "\"result\":\"SUCCESS\",\"exit_code\":0,\"signal\":null,"
                           "\"timed_out\":false,\"duration_ms\":0,\"time_ms\":0,"
                           "\"text\":\"%s\"}", text);
    expect_fail(buf, TF_EINVAL, "step_finished.text: longer than 4096 bytes");
    text[4096] = '\0';
    snprintf(buf, 8192, SF "\"result\":\"SUCCESS\",\"exit_code\":0,\"signal\":null,"
                           "\"timed_out\":false,\"duration_ms\":0,\"time_ms\":0,"
                           "\"text\":\"%s\"}", text);
    expect_ok(buf, TF_MSG_STEP_FINISHED);
    free(buf);
#undef SF

    expect_fail("{\"type\":\"build_finished\",\"build_id\":1,\"seq\":0,"
                "\"result\":\"SUCCESS\",\"time_ms\":0}",
                TF_EINVAL, "build_finished.seq: ");
    expect_fail("{\"type\":\"ack\",\"build_id\":0,\"seq\":1}", TF_EINVAL,
                "ack.build_id: ");
    expect_fail("{\"type\":\"build_abort\",\"build_id\":1,\"reason\":null}",
                TF_EINVAL, "build_abort.reason: expected a string");
    expect_fail("{\"type\":\"pong\",\"id\":-1}", TF_EINVAL, "pong.id: ");
    expect_ok("{\"type\":\"ack\",\"build_id\":9007199254740991,\"seq\":9007199254740991}",
              TF_MSG_ACK);
}

TF_TEST(hello_challenge_welcome_checked)
{
    char buf[8192];
    const char *bad_hex[] = {
        "9f2c0123456789abcdef0123456789abcdef0123456789abcdef0123456789e",
        "9f2c0123456789abcdef0123456789abcdef0123456789abcdef0123456789e1a",
        "9F2C0123456789abcdef0123456789abcdef0123456789abcdef0123456789e1",
        "9g2c0123456789abcdef0123456789abcdef0123456789abcdef0123456789e1",
        "",
    };
    for (size_t i = 0; i < sizeof bad_hex / sizeof *bad_hex; i++) {
        snprintf(buf, sizeof buf,
                 "{\"type\":\"challenge\",\"protocol\":1,\"nonce\":\"%s\","
                 "\"master\":\"m\"}",
                 bad_hex[i]);
        expect_fail(buf, TF_EINVAL,
                    "challenge.nonce: expected 64 lower-case hex characters");
        snprintf(buf, sizeof buf,
                 "{\"type\":\"hello\",\"protocol\":1,\"slave\":\"s\",\"auth\":"
                 "\"%s\",\"version\":\"v\",\"platform\":\"p\",\"tags\":[],"
                 "\"max_builds\":1,\"running\":[]}",
                 bad_hex[i]);
        expect_fail(buf, TF_EINVAL, "hello.auth: ");
    }
    /* The protocol version itself is the master's business, not the
     * decoder's: any non-negative int decodes. */
    expect_ok("{\"type\":\"challenge\",\"protocol\":2,\"nonce\":\"" NONCE
              "\",\"master\":\"m\"}",
              TF_MSG_CHALLENGE);

    /* version/platform: 128 bytes allowed, 129 not. */
    char v[130];
    memset(v, 'v', 129);
    v[129] = '\0';
    snprintf(buf, sizeof buf,
             HELLO_PRE "\"slave\":\"s\",\"tags\":[],\"running\":[],\"x\":1}");
    expect_ok(buf, TF_MSG_HELLO);
    snprintf(buf, sizeof buf,
             "{\"type\":\"hello\",\"protocol\":1,\"slave\":\"s\",\"auth\":\"" AUTH
             "\",\"version\":\"%s\",\"platform\":\"p\",\"tags\":[],"
             "\"max_builds\":1,\"running\":[]}",
             v);
    expect_fail(buf, TF_EINVAL, "hello.version: longer than 128 bytes");
    v[128] = '\0';
    snprintf(buf, sizeof buf,
             "{\"type\":\"hello\",\"protocol\":1,\"slave\":\"s\",\"auth\":\"" AUTH
             "\",\"version\":\"v\",\"platform\":\"%s\",\"tags\":[],"
             "\"max_builds\":1,\"running\":[]}",
             v);
    expect_ok(buf, TF_MSG_HELLO);

    /* running: 64 entries allowed, 65 not; entries checked. */
    size_t o = (size_t)snprintf(buf, sizeof buf,
                                HELLO_PRE "\"slave\":\"s\",\"tags\":[],\"running\":[");
    for (int i = 0; i < 64; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o,
                              "%s{\"build_id\":%d,\"seq\":%d}", i ? "," : "",
                              i + 1, i);
    snprintf(buf + o, sizeof buf - o, "]}");
    expect_ok(buf, TF_MSG_HELLO);
    o += (size_t)snprintf(buf + o, sizeof buf - o, ",{\"build_id\":99,\"seq\":1}");
    snprintf(buf + o, sizeof buf - o, "]}");
    expect_fail(buf, TF_EINVAL, "hello.running: has 65 entries, must have 0..64");
    expect_fail(HELLO_PRE "\"slave\":\"s\",\"tags\":[],\"running\":[{\"build_id\":0,\"seq\":1}]}",
                TF_EINVAL, "hello.running[0].build_id: ");
    expect_fail(HELLO_PRE "\"slave\":\"s\",\"tags\":[],\"running\":[{\"build_id\":1}]}",
                TF_EINVAL, "hello.running[0].seq: required field missing");
    expect_fail(HELLO_PRE "\"slave\":\"s\",\"tags\":[],\"running\":[[1,2]]}",
                TF_EINVAL, "hello.running[0]: expected an object");
    expect_fail(HELLO_PRE "\"slave\":\"s\",\"tags\":{},\"running\":[]}",
                TF_EINVAL, "hello.tags: expected an array");
    expect_fail("{\"type\":\"hello\",\"protocol\":1,\"slave\":\"s\",\"auth\":\"" AUTH
                "\",\"version\":\"v\",\"platform\":\"p\",\"tags\":[],"
                "\"max_builds\":0,\"running\":[]}",
                TF_EINVAL, "hello.max_builds: ");

    expect_fail("{\"type\":\"welcome\",\"slave\":\"s\",\"heartbeat_s\":10,"
                "\"resume\":[],\"abandon\":[1,0]}",
                TF_EINVAL, "welcome.abandon[1]: 0 is out of range");
    expect_fail("{\"type\":\"welcome\",\"slave\":\"s\",\"heartbeat_s\":10,"
                "\"resume\":[],\"abandon\":[\"1\"]}",
                TF_EINVAL, "welcome.abandon[0]: expected an integer");
    expect_fail("{\"type\":\"welcome\",\"slave\":\"s\",\"heartbeat_s\":0,"
                "\"resume\":[],\"abandon\":[]}",
                TF_EINVAL, "welcome.heartbeat_s: ");
    expect_fail("{\"type\":\"welcome\",\"slave\":\"s\",\"heartbeat_s\":1,"
                "\"resume\":[{\"build_id\":1,\"seq\":-1}],\"abandon\":[]}",
                TF_EINVAL, "welcome.resume[0].seq: ");
}

TF_TEST(encode_refuses_invalid)
{
    tf_msg_t m;
    char *out = NULL;
    size_t len = 0;

#define REFUSE(type, mutate, rc)                                               \
    do {                                                                       \
        sample((type), &m);                                                    \
        mutate;                                                                \
        out = (char *)1;                                                       \
        TF_CHECK_INT(tf_msg_encode(&m, &out, &len), (rc));                     \
        TF_CHECK(out == NULL);                                                 \
        tf_msg_clear(&m);                                                      \
    } while (0)

    REFUSE(TF_MSG_PING, m.type = TF_MSG_NONE, TF_EINVAL);
    REFUSE(TF_MSG_PING, m.type = TF_MSG__COUNT, TF_EINVAL);
    REFUSE(TF_MSG_PING, m.u.ping.id = TF_PROTO_MAX_ID + 1, TF_EINVAL);
    REFUSE(TF_MSG_PING, m.u.ping.id = UINT64_MAX, TF_EINVAL);
    REFUSE(TF_MSG_ACK, m.u.ack.build_id = 0, TF_EINVAL);
    REFUSE(TF_MSG_CHALLENGE, m.u.challenge.nonce[3] = 'X', TF_EINVAL);
    REFUSE(TF_MSG_CHALLENGE, memset(m.u.challenge.nonce, 'a', 65), TF_EINVAL);
    REFUSE(TF_MSG_CHALLENGE, m.u.challenge.protocol = -1, TF_EINVAL);
    REFUSE(TF_MSG_HELLO, m.u.hello.slave[0] = '.', TF_EINVAL);
    REFUSE(TF_MSG_HELLO, (free(m.u.hello.slave), m.u.hello.slave = NULL), TF_EINVAL);
    REFUSE(TF_MSG_HELLO, m.u.hello.tags[1][0] = '/', TF_EINVAL);
    REFUSE(TF_MSG_HELLO, m.u.hello.ntags = 3, TF_EINVAL); /* NULL entry */
    REFUSE(TF_MSG_HELLO, m.u.hello.running[0].build_id = 0, TF_EINVAL);
    REFUSE(TF_MSG_HELLO, m.u.hello.max_builds = 0, TF_EINVAL);
    REFUSE(TF_MSG_HELLO, m.u.hello.version[0] = '\xff', TF_EINVAL);
    REFUSE(TF_MSG_WELCOME, m.u.welcome.abandon[1] = 0, TF_EINVAL);
    REFUSE(TF_MSG_WELCOME, m.u.welcome.heartbeat_s = 0, TF_EINVAL);
    REFUSE(TF_MSG_ERROR, m.u.error.code[3] = ' ', TF_EINVAL);
    sample(TF_MSG_BUILD_START, &m);
    m.u.build_start.nsteps = 0;
    TF_CHECK_INT(tf_msg_encode(&m, &out, &len), TF_EINVAL);
    m.u.build_start.nsteps = 3;
    tf_msg_clear(&m);
    REFUSE(TF_MSG_BUILD_START, m.u.build_start.steps[1].workdir[0] = '/', TF_EINVAL);
    REFUSE(TF_MSG_BUILD_START, m.u.build_start.steps[2].argv[0][0] = '\0', TF_EINVAL);
    REFUSE(TF_MSG_BUILD_START,
           (m.u.build_start.steps[0].argc = 0, free(m.u.build_start.steps[0].argv[0]),
            free(m.u.build_start.steps[0].argv[1]), free(m.u.build_start.steps[0].argv[2]),
            m.u.build_start.steps[0].argv[0] = NULL),
           TF_EINVAL);
    REFUSE(TF_MSG_BUILD_START,
           (free(m.u.build_start.steps[0].env[1].key),
            m.u.build_start.steps[0].env[1].key = S("CC")),
           TF_EINVAL);
    REFUSE(TF_MSG_BUILD_START,
           (free(m.u.build_start.props[1].key), m.u.build_start.props[1].key = S("builder")),
           TF_EINVAL);
    REFUSE(TF_MSG_BUILD_START, m.u.build_start.steps[0].env[0].key[1] = '=',
           TF_EINVAL);
    REFUSE(TF_MSG_BUILD_START, m.u.build_start.workdir[0] = '.', TF_EINVAL);
    REFUSE(TF_MSG_STEP_STARTED, m.u.step_started.seq = 0, TF_EINVAL);
    REFUSE(TF_MSG_STEP_STARTED, m.u.step_started.step = 1000, TF_EINVAL);
    REFUSE(TF_MSG_STEP_STARTED, m.u.step_started.time_ms = -1, TF_EINVAL);
    REFUSE(TF_MSG_STEP_FINISHED, m.u.step_finished.result = (tf_result_t)9, TF_EINVAL);
    REFUSE(TF_MSG_STEP_FINISHED, m.u.step_finished.exit_code = -1, TF_EINVAL);
    REFUSE(TF_MSG_STEP_FINISHED,
           (m.u.step_finished.has_signal = true, m.u.step_finished.signal = 0),
           TF_EINVAL);
    REFUSE(TF_MSG_STEP_FINISHED, m.u.step_finished.duration_ms = -1, TF_EINVAL);
    REFUSE(TF_MSG_STEP_FINISHED,
           (free(m.u.step_finished.text), m.u.step_finished.text = zalloc(1, 4098),
            memset(m.u.step_finished.text, 'x', 4097)),
           TF_EINVAL);
    REFUSE(TF_MSG_BUILD_FINISHED, m.u.build_finished.seq = 0, TF_EINVAL);
#undef REFUSE

    /* NULL free-text fields encode as "" (the decoder gives strings). */
    sample(TF_MSG_STEP_FINISHED, &m);
    free(m.u.step_finished.text);
    m.u.step_finished.text = NULL;
    TF_CHECK_INT(tf_msg_encode(&m, &out, &len), 0);
    TF_CHECK(out && strstr(out, "\"text\":\"\""));
    free(out);
    tf_msg_clear(&m);
    TF_CHECK_INT(tf_msg_encode(NULL, &out, &len), TF_EINVAL);
    tf_msg_clear(NULL);
}

TF_TEST(step_spec_copy)
{
    tf_msg_t m;
    sample(TF_MSG_BUILD_START, &m);
    for (size_t i = 0; i < m.u.build_start.nsteps; i++) {
        tf_step_spec_t c;
        TF_CHECK_INT(tf_step_spec_copy(&c, &m.u.build_start.steps[i]), 0);
        TF_CHECK(step_equal(&m.u.build_start.steps[i], &c));
        TF_CHECK(c.name != m.u.build_start.steps[i].name);
        TF_CHECK(c.argv != m.u.build_start.steps[i].argv);
        TF_CHECK(c.argv[0] != m.u.build_start.steps[i].argv[0]);
        TF_CHECK(c.env != m.u.build_start.steps[i].env);
        tf_step_spec_clear(&c);
        TF_CHECK(c.name == NULL && c.argv == NULL && c.argc == 0);
    }
    tf_msg_clear(&m);
    tf_step_spec_clear(NULL);
    /* A step without env copies with env NULL. */
    tf_step_spec_t s = {0}, c;
    s.name = "a";
    s.workdir = "";
    char *argv[] = {"x", NULL};
    s.argv = argv;
    s.argc = 1;
    TF_CHECK_INT(tf_step_spec_copy(&c, &s), 0);
    TF_CHECK(c.env == NULL && c.nenv == 0 && c.argv[1] == NULL);
    TF_CHECK_STR(c.argv[0], "x");
    tf_step_spec_clear(&c);
}

TF_TEST(auth)
{
    char out[65], ref[65];
    tf_proto_auth("sekrit", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", out);
    /* Python: hmac.new(b"sekrit", nonce.encode(), hashlib.sha256).hexdigest() */
    TF_CHECK_STR(out, "575e39db3b949de796e8440e99670c2606c3e8e1c42f32a746d22ff14ba97f1c");
    tf_hmac_sha256_hex("sekrit", 6, NONCE, 64, ref);
    tf_proto_auth("sekrit", NONCE, out);
    TF_CHECK_STR(out, ref);
    tf_proto_auth("sekrit2", NONCE, ref);
    TF_CHECK(strcmp(out, ref) != 0);
}

/* ---- binary output frames ---- */

static void expect_out_fail(const uint8_t *f, size_t len, int rc,
                            const char *want, int line)
{
    tf_output_hdr_t h;
    const uint8_t *payload = (const uint8_t *)1;
    char err[256];
    memset(err, 'X', sizeof err);
    int got = tf_output_decode(f, len, &h, &payload, err, sizeof err);
    if (got != rc || !err[0] || strlen(err) >= sizeof err || payload != NULL ||
        (want && !strstr(err, want))) {
        fprintf(stderr, "test_proto.c:%d: output decode rc %d (want %d): %.200s\n",
                line, got, rc, err);
        tf__failed_checks++;
    }
}

static void make_frame(uint8_t *f, uint8_t kind, uint8_t stream, uint16_t step,
                       uint32_t length, uint64_t build, uint64_t seq)
{
    f[0] = kind;
    f[1] = stream;
    f[2] = (uint8_t)(step >> 8);
    f[3] = (uint8_t)step;
    for (int i = 0; i < 4; i++)
        f[4 + i] = (uint8_t)(length >> (24 - 8 * i));
    for (int i = 0; i < 8; i++) {
        f[8 + i] = (uint8_t)(build >> (56 - 8 * i));
        f[16 + i] = (uint8_t)(seq >> (56 - 8 * i));
    }
}

TF_TEST(output_spec_example)
{
    /* kind 1, stream 1, step 0, length 6, build 7, seq 2, "ok 1\n\n" */
    const uint8_t want[30] = {1, 1, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 7,
                              0, 0, 0, 0, 0, 0, 0, 2, 'o', 'k', ' ', '1', '\n', '\n'};
    tf_output_hdr_t h = {.stream = TF_STREAM_STDOUT, .step = 0, .length = 6,
                         .build_id = 7, .seq = 2};
    uint8_t f[30];
    TF_CHECK_INT(tf_output_encode_hdr(&h, f), 0);
    memcpy(f + 24, "ok 1\n\n", 6);
    TF_CHECK(memcmp(f, want, 30) == 0);
    tf_output_hdr_t d;
    const uint8_t *payload = NULL;
    char err[128] = "";
    TF_CHECK_INT(tf_output_decode(f, 30, &d, &payload, err, sizeof err), 0);
    TF_CHECK(payload == f + 24);
    TF_CHECK_INT(d.stream, 1);
    TF_CHECK_INT(d.step, 0);
    TF_CHECK_INT(d.length, 6);
    TF_CHECK(d.build_id == 7 && d.seq == 2);
}

TF_TEST(output_roundtrip_extremes)
{
    static uint8_t f[TF_PROTO_OUT_HDR + TF_PROTO_MAX_CHUNK];
    tf_output_hdr_t h = {.stream = TF_STREAM_STDERR, .step = 999,
                         .length = TF_PROTO_MAX_CHUNK,
                         .build_id = TF_PROTO_MAX_ID, .seq = TF_PROTO_MAX_ID};
    TF_CHECK_INT(tf_output_encode_hdr(&h, f), 0);
    for (size_t i = 0; i < TF_PROTO_MAX_CHUNK; i++)
        f[TF_PROTO_OUT_HDR + i] = (uint8_t)i; /* bytes, NULs included */
    tf_output_hdr_t d;
    const uint8_t *payload = NULL;
    TF_CHECK_INT(tf_output_decode(f, sizeof f, &d, &payload, NULL, 0), 0);
    TF_CHECK(d.stream == h.stream && d.step == h.step && d.length == h.length &&
             d.build_id == h.build_id && d.seq == h.seq);
    TF_CHECK(payload == f + TF_PROTO_OUT_HDR);

    h = (tf_output_hdr_t){.stream = 1, .step = 0, .length = 1, .build_id = 1, .seq = 1};
    TF_CHECK_INT(tf_output_encode_hdr(&h, f), 0);
    TF_CHECK_INT(tf_output_decode(f, TF_PROTO_OUT_HDR + 1, &d, &payload, NULL, 0), 0);
    TF_CHECK_INT(d.length, 1);
}

TF_TEST(output_malformed)
{
    static uint8_t f[TF_PROTO_OUT_HDR + TF_PROTO_MAX_CHUNK + 2];
    /* Every length shorter than the header. */
    make_frame(f, 1, 1, 0, 4, 1, 1);
    for (size_t n = 0; n < TF_PROTO_OUT_HDR; n++)
        expect_out_fail(f, n, TF_ETRUNC, "shorter than the 24-byte header", __LINE__);
    expect_out_fail(NULL, 0, TF_ETRUNC, NULL, __LINE__);
    /* Header promises more than the frame has, or less. */
    expect_out_fail(f, TF_PROTO_OUT_HDR + 3, TF_ETRUNC, "header says 4", __LINE__);
    expect_out_fail(f, TF_PROTO_OUT_HDR, TF_ETRUNC, NULL, __LINE__);
    expect_out_fail(f, TF_PROTO_OUT_HDR + 5, TF_EINVAL, "1 bytes after", __LINE__);
    /* Length 0, and over the cap (checked before the frame size). */
    make_frame(f, 1, 1, 0, 0, 1, 1);
    expect_out_fail(f, TF_PROTO_OUT_HDR, TF_EINVAL, "zero-length", __LINE__);
    make_frame(f, 1, 1, 0, TF_PROTO_MAX_CHUNK + 1, 1, 1);
    expect_out_fail(f, TF_PROTO_OUT_HDR + TF_PROTO_MAX_CHUNK + 1, TF_E2BIG,
                    "over the 65536-byte limit", __LINE__);
    expect_out_fail(f, TF_PROTO_OUT_HDR + 10, TF_E2BIG, NULL, __LINE__);
    make_frame(f, 1, 1, 0, UINT32_MAX, 1, 1);
    expect_out_fail(f, TF_PROTO_OUT_HDR + 10, TF_E2BIG, NULL, __LINE__);
    /* Kind and stream. */
    const uint8_t kinds[] = {0, 2, 255}, streams[] = {0, 3, 255};
    for (int i = 0; i < 3; i++) {
        make_frame(f, kinds[i], 1, 0, 1, 1, 1);
        expect_out_fail(f, TF_PROTO_OUT_HDR + 1, TF_EINVAL, "unknown kind", __LINE__);
        make_frame(f, 1, streams[i], 0, 1, 1, 1);
        expect_out_fail(f, TF_PROTO_OUT_HDR + 1, TF_EINVAL, "stream", __LINE__);
    }
    /* Ids and step. */
    make_frame(f, 1, 1, 0, 1, 0, 1);
    expect_out_fail(f, TF_PROTO_OUT_HDR + 1, TF_EINVAL, "build_id 0", __LINE__);
    make_frame(f, 1, 1, 0, 1, TF_PROTO_MAX_ID + 1, 1);
    expect_out_fail(f, TF_PROTO_OUT_HDR + 1, TF_EINVAL, "build_id", __LINE__);
    make_frame(f, 1, 1, 0, 1, 1, 0);
    expect_out_fail(f, TF_PROTO_OUT_HDR + 1, TF_EINVAL, "seq 0", __LINE__);
    make_frame(f, 1, 1, 0, 1, 1, UINT64_MAX);
    expect_out_fail(f, TF_PROTO_OUT_HDR + 1, TF_EINVAL, "seq", __LINE__);
    make_frame(f, 1, 1, 1000, 1, 1, 1);
    expect_out_fail(f, TF_PROTO_OUT_HDR + 1, TF_EINVAL, "step 1000", __LINE__);
    make_frame(f, 1, 1, 999, 1, 1, 1);
    tf_output_hdr_t d;
    const uint8_t *payload;
    TF_CHECK_INT(tf_output_decode(f, TF_PROTO_OUT_HDR + 1, &d, &payload, NULL, 0), 0);
}

TF_TEST(output_encode_refuses)
{
    uint8_t f[TF_PROTO_OUT_HDR];
    const tf_output_hdr_t good = {.stream = 1, .step = 0, .length = 1,
                                  .build_id = 1, .seq = 1};
    tf_output_hdr_t h;
    TF_CHECK_INT(tf_output_encode_hdr(&good, f), 0);
    h = good; h.length = 0;
    TF_CHECK_INT(tf_output_encode_hdr(&h, f), TF_EINVAL);
    h = good; h.length = TF_PROTO_MAX_CHUNK + 1;
    TF_CHECK_INT(tf_output_encode_hdr(&h, f), TF_EINVAL);
    h = good; h.stream = 0;
    TF_CHECK_INT(tf_output_encode_hdr(&h, f), TF_EINVAL);
    h = good; h.stream = 3;
    TF_CHECK_INT(tf_output_encode_hdr(&h, f), TF_EINVAL);
    h = good; h.build_id = 0;
    TF_CHECK_INT(tf_output_encode_hdr(&h, f), TF_EINVAL);
    h = good; h.build_id = TF_PROTO_MAX_ID + 1;
    TF_CHECK_INT(tf_output_encode_hdr(&h, f), TF_EINVAL);
    h = good; h.seq = 0;
    TF_CHECK_INT(tf_output_encode_hdr(&h, f), TF_EINVAL);
    h = good; h.seq = UINT64_MAX;
    TF_CHECK_INT(tf_output_encode_hdr(&h, f), TF_EINVAL);
    h = good; h.step = 1000;
    TF_CHECK_INT(tf_output_encode_hdr(&h, f), TF_EINVAL);
}

TF_TEST(source_builtin_and_properties)
{
    /* build_start with a source and a builtin step round-trips. */
    const char *bs =
        "{\"type\":\"build_start\",\"build_id\":3,\"builder\":\"b\","
        "\"number\":1,\"workdir\":\"b\",\"properties\":{},"
        "\"steps\":[{\"name\":\"source\",\"command\":[\"git\",\"checkout\","
        "\"origin/main\"],\"env\":{},\"workdir\":\"\",\"timeout_s\":1200,"
        "\"max_time_s\":0,\"haltOnFailure\":true,\"flunkOnFailure\":true,"
        "\"warnOnFailure\":false,\"flunkOnWarnings\":false,"
        "\"warnOnWarnings\":true,\"alwaysRun\":false,\"builtin\":\"source\"}],"
        "\"source\":{\"repository\":\"/srv/git/p.git\",\"branch\":\"main\","
        "\"revision\":\"\",\"patch\":{\"sha256\":"
        "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\","
        "\"size\":42}}}";
    tf_msg_t m;
    char err[256] = "";
    TF_CHECK_INT(tf_msg_decode(bs, strlen(bs), &m, err, sizeof err), 0);
    if (m.type == TF_MSG_BUILD_START) {
        TF_CHECK_STR(m.u.build_start.steps[0].builtin, "source");
        TF_CHECK(m.u.build_start.source != NULL);
        if (m.u.build_start.source) {
            TF_CHECK_STR(m.u.build_start.source->repository, "/srv/git/p.git");
            TF_CHECK_STR(m.u.build_start.source->branch, "main");
            TF_CHECK_STR(m.u.build_start.source->revision, "");
            TF_CHECK(m.u.build_start.source->has_patch);
            TF_CHECK_INT(m.u.build_start.source->patch_size, 42);
        }
        char *again = NULL;
        size_t len = 0;
        TF_CHECK_INT(tf_msg_encode(&m, &again, &len), 0);
        TF_CHECK_STR(again, bs);
        free(again);
        tf_step_spec_t copy;
        TF_CHECK_INT(tf_step_spec_copy(&copy, &m.u.build_start.steps[0]), 0);
        TF_CHECK_STR(copy.builtin, "source");
        tf_step_spec_clear(&copy);
        tf_source_t sc;
        TF_CHECK_INT(tf_source_copy(&sc, m.u.build_start.source), 0);
        TF_CHECK_STR(sc.repository, "/srv/git/p.git");
        tf_source_clear(&sc);
        tf_msg_clear(&m);
    }
    /* Without a patch, and bad values. */
    char buf[2048];
#define BS_SRC(src)                                                            \
    snprintf(buf, sizeof buf,                                                  \
             "{\"type\":\"build_start\",\"build_id\":3,\"builder\":\"b\","     \
             "\"number\":1,\"workdir\":\"b\",\"properties\":{},\"steps\":[{"   \
             "\"name\":\"s\",\"command\":[\"true\"],\"env\":{},"               \
             "\"workdir\":\"\",\"timeout_s\":0,\"max_time_s\":0,"              \
             "\"haltOnFailure\":false,\"flunkOnFailure\":true,"                \
             "\"warnOnFailure\":false,\"flunkOnWarnings\":false,"              \
             "\"warnOnWarnings\":true,\"alwaysRun\":false}],\"source\":%s}",  \
             src)
    BS_SRC("{\"repository\":\"r\",\"branch\":\"main\",\"revision\":\"abc\","
           "\"patch\":null}");
    expect_ok(buf, TF_MSG_BUILD_START);
    BS_SRC("{\"repository\":\"-r\",\"branch\":\"main\",\"revision\":\"\","
           "\"patch\":null}");
    expect_fail(buf, TF_EINVAL, "build_start.source.repository");
    BS_SRC("{\"repository\":\"r\",\"branch\":\"ma..in\",\"revision\":\"\","
           "\"patch\":null}");
    expect_fail(buf, TF_EINVAL, "build_start.source.branch");
    BS_SRC("{\"repository\":\"r\",\"branch\":\"main\",\"revision\":\"-x\","
           "\"patch\":null}");
    expect_fail(buf, TF_EINVAL, "build_start.source.revision");
    BS_SRC("{\"repository\":\"r\",\"branch\":\"main\",\"revision\":\"\"}");
    expect_fail(buf, TF_EINVAL, "build_start.source.patch");
    BS_SRC("{\"repository\":\"r\",\"branch\":\"main\",\"revision\":\"\","
           "\"patch\":{\"sha256\":\"xyz\",\"size\":1}}");
    expect_fail(buf, TF_EINVAL, "build_start.source.patch.sha256");
    BS_SRC("[]");
    expect_fail(buf, TF_EINVAL, "build_start.source");
#undef BS_SRC
    expect_fail("{\"type\":\"build_start\",\"build_id\":3,\"builder\":\"b\","
                "\"number\":1,\"workdir\":\"b\",\"properties\":{},\"steps\":[{"
                "\"name\":\"s\",\"command\":[\"true\"],\"env\":{},"
                "\"workdir\":\"\",\"timeout_s\":0,\"max_time_s\":0,"
                "\"haltOnFailure\":false,\"flunkOnFailure\":true,"
                "\"warnOnFailure\":false,\"flunkOnWarnings\":false,"
                "\"warnOnWarnings\":true,\"alwaysRun\":false,"
                "\"builtin\":\"rm-rf\"}]}",
                TF_EINVAL, "build_start.steps[0].builtin");

    /* step_finished properties. */
    const char *sf =
        "{\"type\":\"step_finished\",\"build_id\":3,\"seq\":2,\"step\":0,"
        "\"result\":\"SUCCESS\",\"exit_code\":0,\"signal\":null,"
        "\"timed_out\":false,\"duration_ms\":5,\"time_ms\":10,"
        "\"text\":\"exit 0\",\"properties\":{\"got_revision\":\"abc123\"}}";
    TF_CHECK_INT(tf_msg_decode(sf, strlen(sf), &m, err, sizeof err), 0);
    if (m.type == TF_MSG_STEP_FINISHED) {
        TF_CHECK_INT(m.u.step_finished.nprops, 1);
        TF_CHECK_STR(m.u.step_finished.props[0].key, "got_revision");
        TF_CHECK_STR(m.u.step_finished.props[0].value, "abc123");
        char *again = NULL;
        size_t len = 0;
        TF_CHECK_INT(tf_msg_encode(&m, &again, &len), 0);
        TF_CHECK_STR(again, sf);
        free(again);
        tf_msg_clear(&m);
    }
    expect_fail("{\"type\":\"step_finished\",\"build_id\":3,\"seq\":2,"
                "\"step\":0,\"result\":\"SUCCESS\",\"exit_code\":0,"
                "\"signal\":null,\"timed_out\":false,\"duration_ms\":5,"
                "\"time_ms\":10,\"text\":\"\",\"properties\":{\"../x\":\"1\"}}",
                TF_EINVAL, "step_finished.properties");
}

TF_TEST(git_names)
{
    TF_CHECK(tf_git_ref_valid("main"));
    TF_CHECK(tf_git_ref_valid("release/1.2"));
    TF_CHECK(!tf_git_ref_valid(""));
    TF_CHECK(!tf_git_ref_valid("-x"));
    TF_CHECK(!tf_git_ref_valid("a..b"));
    TF_CHECK(!tf_git_ref_valid("a//b"));
    TF_CHECK(!tf_git_ref_valid("a/"));
    TF_CHECK(!tf_git_ref_valid("a.lock"));
    TF_CHECK(!tf_git_ref_valid("a b"));
    TF_CHECK(!tf_git_ref_valid("HEAD@{1}"));
    TF_CHECK(!tf_git_ref_valid("a^"));
    TF_CHECK(tf_git_rev_valid(""));
    TF_CHECK(tf_git_rev_valid("HEAD~2"));
    TF_CHECK(tf_git_rev_valid("0123abcd"));
    TF_CHECK(!tf_git_rev_valid("-rf"));
    TF_CHECK(!tf_git_rev_valid("a;b"));
    TF_CHECK(tf_repo_url_valid("https://example.com/p.git"));
    TF_CHECK(tf_repo_url_valid("/srv/git/p.git"));
    TF_CHECK(!tf_repo_url_valid(""));
    TF_CHECK(!tf_repo_url_valid("--upload-pack=x"));
    TF_CHECK(!tf_repo_url_valid("a b"));
}

/* ---- command modifiers ---- */

static tf_modifiers_t *sample_mods(void)
{
    tf_modifiers_t *md = zalloc(1, sizeof *md);
    md->markers = true;
    md->ninfo = 2;
    md->info = zalloc(2, sizeof(char *));
    md->info[0] = S("^Ran ([0-9]+) tests");
    md->info[1] = S("\"quoted\" \\\\ \xc3\xa9");
    md->nstats = 2;
    md->stats = zalloc(2, sizeof(tf_stat_rule_t));
    md->stats[0].name = S("tests");
    md->stats[0].regex = S("^Ran ([0-9]+)");
    md->stats[1].regex = S("^time: ([a-z]+) ([0-9.]+)$");
    md->pass_if = S("^OK$");
    md->fail_if = S("^FAIL");
    md->warnings = S("warning:");
    md->warnings_max = UINT32_MAX;
    return md;
}

TF_TEST(modifiers_roundtrip)
{
    tf_msg_t m;
    char *text;
    sample(TF_MSG_BUILD_START, &m);
    m.u.build_start.steps[0].modifiers = sample_mods();
    /* Only markers; only a pass_if; only a warnings rule. */
    m.u.build_start.steps[1].modifiers = zalloc(1, sizeof(tf_modifiers_t));
    m.u.build_start.steps[1].modifiers->markers = true;
    tf_modifiers_t *md = zalloc(1, sizeof *md);
    md->pass_if = S("x");
    md->warnings = S("w");
    m.u.build_start.steps[2].modifiers = md;
    text = roundtrip(&m);
    TF_CHECK(text && strstr(text, "\"modifiers\":{\"markers\":true,\"info\":"
                                  "[\"^Ran ([0-9]+) tests\","));
    TF_CHECK(text && strstr(text, "\"stats\":[{\"name\":\"tests\",\"regex\":"
                                  "\"^Ran ([0-9]+)\"},{\"regex\":"));
    TF_CHECK(text && strstr(text, "\"success\":{\"pass_if\":\"^OK$\","
                                  "\"fail_if\":\"^FAIL\"},\"warnings\":"
                                  "{\"regex\":\"warning:\",\"max\":4294967295}"));
    TF_CHECK(text && strstr(text, "\"modifiers\":{\"markers\":true}}"));
    TF_CHECK(text && strstr(text, "\"modifiers\":{\"markers\":false,"
                                  "\"success\":{\"pass_if\":\"x\"},"
                                  "\"warnings\":{\"regex\":\"w\",\"max\":0}}"));
    free(text);
    /* A deep copy keeps them. */
    tf_step_spec_t copy;
    TF_CHECK_INT(tf_step_spec_copy(&copy, &m.u.build_start.steps[0]), 0);
    TF_CHECK(step_equal(&copy, &m.u.build_start.steps[0]));
    tf_step_spec_clear(&copy);
    tf_msg_clear(&m);

    /* A step without "modifiers" decodes with none; minimal objects get
     * the defaults (no markers, max 0). */
    expect_ok("{\"type\":\"build_start\",\"build_id\":1,\"builder\":\"b\","
              "\"number\":1,\"workdir\":\"b\",\"properties\":{},\"steps\":["
              "{\"name\":\"s\",\"command\":[\"x\"],\"env\":{},\"workdir\":\"\","
              "\"timeout_s\":0,\"max_time_s\":0,\"haltOnFailure\":false,"
              "\"flunkOnFailure\":true,\"warnOnFailure\":false,"
              "\"flunkOnWarnings\":false,\"warnOnWarnings\":true,"
              "\"alwaysRun\":false,\"modifiers\":{\"warnings\":{\"regex\":"
              "\"w\"},\"x_future\":1}}]}",
              TF_MSG_BUILD_START);

    /* step_finished with what modifiers extracted. */
    sample(TF_MSG_STEP_FINISHED, &m);
    m.u.step_finished.info = S("120 tests\n\xc3\xa9t\xc3\xa9");
    m.u.step_finished.nstats = 4;
    m.u.step_finished.stats = zalloc(4, sizeof(tf_stat_t));
    snprintf(m.u.step_finished.stats[0].name, 65, "tests");
    m.u.step_finished.stats[0].value = 120;
    snprintf(m.u.step_finished.stats[1].name, 65, "time.compile");
    m.u.step_finished.stats[1].value = 12.25;
    snprintf(m.u.step_finished.stats[2].name, 65, "delta");
    m.u.step_finished.stats[2].value = -3;
    snprintf(m.u.step_finished.stats[3].name, 65, "huge");
    m.u.step_finished.stats[3].value = 1e300;
    m.u.step_finished.has_warnings = true;
    m.u.step_finished.warnings = 0;
    text = roundtrip(&m);
    TF_CHECK(text && strstr(text, ",\"info\":\"120 tests\\n\xc3\xa9t\xc3\xa9\","
                                  "\"stats\":{\"tests\":120,\"time.compile\":"
                                  "12.25,\"delta\":-3,\"huge\":1"));
    TF_CHECK(text && strstr(text, "},\"warnings\":0}"));
    free(text);
    tf_msg_clear(&m);
}

/* The specification's example of a step with modifiers, byte for byte. */
TF_TEST(modifiers_spec_examples_exact)
{
    const char *texts[] = {
        "{\"type\":\"build_start\",\"build_id\":8,\"builder\":\"linux_rel\","
        "\"number\":4,\"workdir\":\"linux_rel\",\"properties\":{},\"steps\":"
        "[{\"name\":\"test\",\"command\":[\"/bin/sh\",\"-c\",\"make check\"],"
        "\"env\":{},\"workdir\":\"\",\"timeout_s\":1200,\"max_time_s\":0,"
        "\"haltOnFailure\":false,\"flunkOnFailure\":true,\"warnOnFailure\":"
        "false,\"flunkOnWarnings\":false,\"warnOnWarnings\":true,\"alwaysRun\":"
        "false,\"modifiers\":{\"markers\":true,\"info\":[\"^Ran ([0-9]+) "
        "tests\"],\"stats\":[{\"name\":\"tests\",\"regex\":\"^Ran ([0-9]+) "
        "tests\"},{\"regex\":\"^time: ([a-z]+) ([0-9.]+)s$\"}],\"success\":"
        "{\"fail_if\":\"^FAIL:\"},\"warnings\":{\"regex\":\"warning:\","
        "\"max\":0}}}]}",
        "{\"type\":\"step_finished\",\"build_id\":8,\"seq\":9,\"step\":0,"
        "\"result\":\"WARNINGS\",\"exit_code\":0,\"signal\":null,\"timed_out\":"
        "false,\"duration_ms\":5120,\"time_ms\":1795000005120,\"text\":"
        "\"exit 0; 2 warnings\",\"info\":\"120\",\"stats\":{\"tests\":120,"
        "\"compile\":3.5},\"warnings\":2}",
    };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        tf_msg_t m;
        char err[256] = "", *out = NULL;
        size_t len = 0;
        TF_CHECK_INT(tf_msg_decode(texts[i], strlen(texts[i]), &m, err,
                                   sizeof err), 0);
        if (err[0])
            fprintf(stderr, "%s\n", err);
        TF_CHECK_INT(tf_msg_encode(&m, &out, &len), 0);
        TF_CHECK_STR(out, texts[i]);
        free(out);
        tf_msg_clear(&m);
    }
}

/* Replaces (or, with NULL, deletes) steps[0].modifiers.PATH in a valid
 * build_start and expects the decoder to refuse it naming want. */
static void expect_mods_fail(const char *mods_json, const char *want, int line)
{
    tf_msg_t m;
    char *text = NULL;
    size_t len;
    sample(TF_MSG_BUILD_START, &m);
    TF_CHECK_INT(tf_msg_encode(&m, &text, &len), 0);
    tf_msg_clear(&m);
    json_t *o = json_loads(text, 0, NULL);
    json_error_t je;
    json_t *mods = json_loads(mods_json, JSON_DECODE_ANY, &je);
    if (!mods) {
        fprintf(stderr, "test_proto.c:%d: bad test JSON %s\n", line, mods_json);
        tf__failed_checks++;
    } else {
        json_object_set_new(json_array_get(json_object_get(o, "steps"), 0),
                            "modifiers", mods);
        expect_json_fail(o, want, line);
    }
    json_decref(o);
    free(text);
}

/* Replaces step_finished's FIELD with value_json and expects refusal. */
static void expect_sf_fail(const char *field, const char *value_json,
                           const char *want, int line)
{
    tf_msg_t m;
    char *text = NULL;
    size_t len;
    sample(TF_MSG_STEP_FINISHED, &m);
    TF_CHECK_INT(tf_msg_encode(&m, &text, &len), 0);
    tf_msg_clear(&m);
    json_t *o = json_loads(text, 0, NULL);
    json_t *v = json_loads(value_json, JSON_DECODE_ANY, NULL);
    json_object_set_new(o, field, v ? v : json_null());
    expect_json_fail(o, want, line);
    json_decref(o);
    free(text);
}

TF_TEST(modifiers_malformed)
{
    const char *P = "build_start.steps[0].modifiers";
    char want[256];
    struct {
        const char *json, *suffix;
    } cases[] = {
        {"[]", ": expected an object"},
        {"null", ": expected an object"},
        {"{\"markers\":1}", ".markers: expected true or false"},
        {"{\"info\":\"x\"}", ".info: expected an array"},
        {"{\"info\":[5]}", ".info[0]: expected a string"},
        {"{\"info\":[\"\"]}", ".info[0]: must not be empty"},
        {"{\"info\":[\"a\",\"b\",\"a\",\"b\",\"a\",\"b\",\"a\",\"b\",\"a\",\"b\","
         "\"a\",\"b\",\"a\",\"b\",\"a\",\"b\",\"a\",\"b\",\"a\",\"b\",\"a\",\"b\","
         "\"a\",\"b\",\"a\",\"b\",\"a\",\"b\",\"a\",\"b\",\"a\",\"b\",\"c\"]}",
         ".info: has 33 entries, must have 0..32"},
        {"{\"stats\":{}}", ".stats: expected an array"},
        {"{\"stats\":[\"x\"]}", ".stats[0]: expected an object"},
        {"{\"stats\":[{}]}", ".stats[0].regex: required field missing"},
        {"{\"stats\":[{\"regex\":7}]}", ".stats[0].regex: expected a string"},
        {"{\"stats\":[{\"regex\":\"a\",\"name\":\"bad name\"}]}",
         ".stats[0].name: \"bad name\" is not a valid name"},
        {"{\"stats\":[{\"regex\":\"a\",\"name\":null}]}",
         ".stats[0].name: expected a string"},
        {"{\"success\":[]}", ".success: expected an object"},
        {"{\"success\":{}}", ".success: needs pass_if or fail_if"},
        {"{\"success\":{\"pass_if\":1}}", ".success.pass_if: expected a string"},
        {"{\"success\":{\"fail_if\":\"\"}}", ".success.fail_if: must not be empty"},
        {"{\"warnings\":\"w\"}", ".warnings: expected an object"},
        {"{\"warnings\":{}}", ".warnings.regex: required field missing"},
        {"{\"warnings\":{\"regex\":\"w\",\"max\":-1}}",
         ".warnings.max: -1 is out of range"},
        {"{\"warnings\":{\"regex\":\"w\",\"max\":4294967296}}",
         ".warnings.max: 4294967296 is out of range"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(want, sizeof want, "%s%s", P, cases[i].suffix);
        expect_mods_fail(cases[i].json, want, __LINE__);
    }
    /* A regex of 1024 bytes is fine, 1025 is not. */
    char *big = xmalloc(1100);
    snprintf(big, 1100, "{\"info\":[\"%01024d\"]}", 0);
    tf_msg_t m;
    sample(TF_MSG_BUILD_START, &m);
    m.u.build_start.steps[0].modifiers = zalloc(1, sizeof(tf_modifiers_t));
    m.u.build_start.steps[0].modifiers->ninfo = 1;
    m.u.build_start.steps[0].modifiers->info = zalloc(1, sizeof(char *));
    m.u.build_start.steps[0].modifiers->info[0] = xmalloc(1026);
    memset(m.u.build_start.steps[0].modifiers->info[0], 'a', 1024);
    m.u.build_start.steps[0].modifiers->info[0][1024] = '\0';
    char *text = roundtrip(&m);
    TF_CHECK(text != NULL);
    free(text);
    strcpy(m.u.build_start.steps[0].modifiers->info[0] + 1024, "a");
    char *out = NULL;
    size_t len;
    TF_CHECK_INT(tf_msg_encode(&m, &out, &len), TF_EINVAL);
    TF_CHECK(out == NULL);
    tf_msg_clear(&m);
    snprintf(big, 1100, "{\"info\":[\"%01025d\"]}", 0);
    snprintf(want, sizeof want, "%s.info[0]: longer than 1024 bytes", P);
    expect_mods_fail(big, want, __LINE__);
    free(big);

    /* step_finished's new fields. */
    expect_sf_fail("info", "5", "step_finished.info: expected a string",
                   __LINE__);
    expect_sf_fail("stats", "[]", "step_finished.stats: expected an object",
                   __LINE__);
    expect_sf_fail("stats", "{\"a\":\"1\"}",
                   "step_finished.stats[\"a\"]: expected a number", __LINE__);
    expect_sf_fail("stats", "{\"a\":null}",
                   "step_finished.stats[\"a\"]: expected a number", __LINE__);
    expect_sf_fail("stats", "{\"bad name\":1}",
                   "step_finished.stats: \"bad name\" is not a valid name",
                   __LINE__);
    expect_sf_fail("warnings", "-1", "step_finished.warnings: -1 is out of "
                   "range", __LINE__);
    expect_sf_fail("warnings", "1.5", "step_finished.warnings: expected an "
                   "integer", __LINE__);
    expect_sf_fail("warnings", "null", "step_finished.warnings: expected an "
                   "integer", __LINE__);
    /* 65 stats are too many; 64 are fine. */
    json_t *st = json_object();
    for (int i = 0; i < 65; i++) {
        char k[16];
        snprintf(k, sizeof k, "s%d", i);
        json_object_set_new(st, k, json_real(i + 0.5));
    }
    char *sj = json_dumps(st, JSON_COMPACT);
    expect_sf_fail("stats", sj, "step_finished.stats: has 65 entries, at most 64",
                   __LINE__);
    free(sj);
    json_object_del(st, "s64");
    sample(TF_MSG_STEP_FINISHED, &m);
    TF_CHECK_INT(tf_msg_encode(&m, &out, &len), 0);
    tf_msg_clear(&m);
    json_t *o = json_loads(out, 0, NULL);
    free(out);
    json_object_set_new(o, "stats", st);
    out = json_dumps(o, JSON_COMPACT);
    expect_ok(out, TF_MSG_STEP_FINISHED);
    free(out);
    json_decref(o);
    /* info over 4096 bytes. */
    char *longinfo = xmalloc(4100);
    snprintf(longinfo, 4100, "\"%04097d\"", 0);
    expect_sf_fail("info", longinfo, "step_finished.info: longer than 4096 "
                   "bytes", __LINE__);
    free(longinfo);

    /* The encoder refuses what it could not write: NaN, a repeated name. */
    sample(TF_MSG_STEP_FINISHED, &m);
    m.u.step_finished.nstats = 2;
    m.u.step_finished.stats = zalloc(2, sizeof(tf_stat_t));
    snprintf(m.u.step_finished.stats[0].name, 65, "a");
    snprintf(m.u.step_finished.stats[1].name, 65, "b");
    m.u.step_finished.stats[1].value = 0.0 / 0.0;
    TF_CHECK_INT(tf_msg_encode(&m, &out, &len), TF_EINVAL);
    m.u.step_finished.stats[1].value = 1;
    snprintf(m.u.step_finished.stats[1].name, 65, "a");
    TF_CHECK_INT(tf_msg_encode(&m, &out, &len), TF_EINVAL);
    snprintf(m.u.step_finished.stats[1].name, 65, "-bad");
    TF_CHECK_INT(tf_msg_encode(&m, &out, &len), TF_EINVAL);
    tf_msg_clear(&m);
}

/* ---- test results (issue 12) ---- */

#define TR_PRE "{\"type\":\"test_results\",\"build_id\":7,\"seq\":5,\"step\":2,"

TF_TEST(test_results_optional_fields_roundtrip)
{
    tf_msg_t m;
    sample(TF_MSG_TEST_RESULTS, &m);
    m.u.test_results.has_total = true;
    m.u.test_results.total = 2;
    m.u.test_results.dropped = 3;
    m.u.test_results.nproblems = 2;
    m.u.test_results.problems = zalloc(3, sizeof(char *));
    m.u.test_results.problems[0] = S("reports/a.xml: not well-formed XML "
                                     "at line 3: </x> does not close <y>");
    m.u.test_results.problems[1] = S("../x.xml: refused");
    char *text = roundtrip(&m);
    TF_CHECK(text != NULL);
    TF_CHECK(text && strstr(text, "\"total\":2,\"dropped\":3,\"problems\":["));
    TF_CHECK(text && strstr(text, "\"log\":{\"offset\":1234,\"line\":40,"
                                  "\"lines\":3}"));
    /* A minimal result has no optional members on the wire. */
    TF_CHECK(text && strstr(text, "{\"suite\":\"test_a.py::T\",\"name\":"
                                  "\"test_x[1]\",\"status\":\"flaky\","
                                  "\"attempts\":1}"));
    free(text);
    tf_msg_clear(&m);
    /* An empty batch is allowed (a step that declared results but whose
     * run named none still sends its last message). */
    expect_ok(TR_PRE "\"format\":\"junit\",\"results\":[],\"last\":true,"
              "\"total\":0,\"problems\":[\"no file matched build/*.xml\"]}",
              TF_MSG_TEST_RESULTS);
}

TF_TEST(test_results_malformed)
{
    expect_fail(TR_PRE "\"format\":\"nunit\",\"results\":[],\"last\":true}",
                TF_EINVAL, "test_results.format: unknown format \"nunit\"");
    expect_fail(TR_PRE "\"format\":\"ctest\",\"results\":[{\"suite\":\"\","
                "\"name\":\"\",\"status\":\"pass\",\"attempts\":1}],"
                "\"last\":true}",
                TF_EINVAL, "test_results.results[0].name: must not be empty");
    expect_fail(TR_PRE "\"format\":\"ctest\",\"results\":[{\"suite\":\"\","
                "\"name\":\"t\",\"status\":\"xfail\",\"attempts\":1}],"
                "\"last\":true}",
                TF_EINVAL, "test_results.results[0].status: unknown status "
                "\"xfail\"");
    expect_fail(TR_PRE "\"format\":\"ctest\",\"results\":[{\"suite\":\"\","
                "\"name\":\"t\",\"status\":\"pass\",\"attempts\":0}],"
                "\"last\":true}",
                TF_EINVAL, "test_results.results[0].attempts: 0 is out of "
                "range");
    expect_fail(TR_PRE "\"format\":\"ctest\",\"results\":[{\"suite\":\"\","
                "\"name\":\"t\",\"status\":\"fail\",\"attempts\":1,\"log\":"
                "{\"offset\":0,\"line\":0,\"lines\":1}}],\"last\":true}",
                TF_EINVAL, "test_results.results[0].log.line: 0 is out of "
                "range");
    expect_fail(TR_PRE "\"format\":\"ctest\",\"results\":[],\"last\":true,"
                "\"problems\":[1]}",
                TF_EINVAL, "test_results.problems[0]: expected a string");
    /* Caps on each string. */
    char big[TF_TR_MAX_MESSAGE + 200];
    char msg[TF_TR_MAX_MESSAGE + 2];
    memset(msg, 'm', sizeof msg - 1);
    msg[sizeof msg - 1] = '\0';
    snprintf(big, sizeof big, TR_PRE "\"format\":\"gtest\",\"results\":["
             "{\"suite\":\"\",\"name\":\"t\",\"status\":\"fail\",\"attempts\":"
             "1,\"message\":\"%s\"}],\"last\":false}", msg);
    expect_fail(big, TF_EINVAL, "test_results.results[0].message: longer "
                "than 4096 bytes");
    /* More than TF_PROTO_MAX_RESULTS results. */
    size_t cap = 64 + (TF_PROTO_MAX_RESULTS + 1) * 60;
    char *many = xmalloc(cap);
    size_t o = (size_t)snprintf(many, cap, TR_PRE "\"format\":\"tap\","
                                "\"results\":[");
    for (int i = 0; i <= TF_PROTO_MAX_RESULTS; i++)
        o += (size_t)snprintf(many + o, cap - o, "%s{\"suite\":\"\",\"name\":"
                              "\"%d\",\"status\":\"pass\",\"attempts\":1}",
                              i ? "," : "", i);
    snprintf(many + o, cap - o, "],\"last\":true}");
    expect_fail(many, TF_EINVAL, "test_results.results: has 1001 entries, "
                "must have 0..1000");
    free(many);
}

TF_TEST(test_results_over_the_message_cap)
{
    /* 20 results of 4000-byte messages: every field within its cap, the
     * whole over 64 KiB. The decoder refuses it as too big and the
     * encoder will not produce it (the slave batches below the cap). */
    tf_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = TF_MSG_TEST_RESULTS;
    m.u.test_results.build_id = 9;
    m.u.test_results.seq = 3;
    m.u.test_results.format = TF_TR_FMT_PYTEST;
    m.u.test_results.nresults = 20;
    m.u.test_results.results = zalloc(20, sizeof(tf_test_result_t));
    for (int i = 0; i < 20; i++) {
        tf_test_result_t *r = &m.u.test_results.results[i];
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        r->suite = S("s");
        r->name = S(name);
        r->status = TF_TR_FAIL;
        r->attempts = 1;
        r->duration_ms = -1;
        r->message = xmalloc(4001);
        memset(r->message, 'x', 4000);
        r->message[4000] = '\0';
    }
    char *text = (char *)1;
    size_t len = 1;
    TF_CHECK_INT(tf_msg_encode(&m, &text, &len), TF_E2BIG);
    TF_CHECK(text == NULL);
    /* The same JSON built by hand decodes as too big, with a sentence. */
    m.u.test_results.nresults = 15; /* 60 KiB: encodable */
    TF_CHECK_INT(tf_msg_encode(&m, &text, &len), 0);
    TF_CHECK(len > 60000 && len <= TF_PROTO_MAX_RESULTS_TEXT);
    if (text) {
        expect_ok_n(text, len, TF_MSG_TEST_RESULTS, __LINE__);
        /* Pad it with spaces past the cap: still valid JSON, too big. */
        char *padded = xmalloc(TF_PROTO_MAX_RESULTS_TEXT + 2);
        memset(padded, ' ', TF_PROTO_MAX_RESULTS_TEXT + 1);
        memcpy(padded, text, len);
        padded[TF_PROTO_MAX_RESULTS_TEXT + 1] = '\0';
        expect_fail_n(padded, TF_PROTO_MAX_RESULTS_TEXT + 1, TF_E2BIG,
                      "test_results message of 65537 bytes is over the "
                      "65536-byte limit", __LINE__);
        free(padded);
    }
    free(text);
    m.u.test_results.nresults = 20;
    tf_msg_clear(&m);
}

#define BS_PRE                                                                 \
    "{\"type\":\"build_start\",\"build_id\":1,\"builder\":\"b\",\"number\":1," \
    "\"workdir\":\"b\",\"properties\":{},\"steps\":[{\"name\":\"t\","         \
    "\"command\":[\"true\"],\"env\":{},\"workdir\":\"\",\"timeout_s\":0,"      \
    "\"max_time_s\":0,\"haltOnFailure\":false,\"flunkOnFailure\":true,"      \
    "\"warnOnFailure\":false,\"flunkOnWarnings\":false,"                     \
    "\"warnOnWarnings\":false,\"alwaysRun\":false,\"test_results\":"

TF_TEST(test_spec_roundtrip_and_copy)
{
    tf_msg_t m;
    sample(TF_MSG_BUILD_START, &m);
    for (int i = 1; i <= 2; i++) {
        tf_test_spec_t *t = zalloc(1, sizeof *t);
        t->format = i == 1 ? TF_TR_FMT_JUNIT : TF_TR_FMT_CTEST;
        if (i == 1) {
            t->nfiles = 2;
            t->files = zalloc(3, sizeof(char *));
            t->files[0] = S("build/**/*.xml");
            t->files[1] = S("reports/junit-[0-9].xml");
        }
        m.u.build_start.steps[i].test_results = t;
    }
    char *text = roundtrip(&m);
    TF_CHECK(text && strstr(text, "\"test_results\":{\"format\":\"junit\","
                                  "\"files\":[\"build/**/*.xml\","
                                  "\"reports/junit-[0-9].xml\"]}"));
    TF_CHECK(text && strstr(text, "\"test_results\":{\"format\":\"ctest\"}"));
    free(text);
    tf_step_spec_t copy;
    TF_CHECK_INT(tf_step_spec_copy(&copy, &m.u.build_start.steps[1]), 0);
    TF_CHECK(step_equal(&copy, &m.u.build_start.steps[1]));
    tf_step_spec_clear(&copy);
    tf_msg_clear(&m);
}

TF_TEST(test_spec_checked)
{
    expect_ok(BS_PRE "{\"format\":\"ctest\"}}]}", TF_MSG_BUILD_START);
    expect_ok(BS_PRE "{\"format\":\"tap\",\"files\":[\"t/*.tap\"]}}]}",
              TF_MSG_BUILD_START);
    expect_ok(BS_PRE "{\"format\":\"junit\",\"files\":[\"build/**/*.xml\"]}}]}",
              TF_MSG_BUILD_START);
    expect_fail(BS_PRE "{\"format\":\"junit\"}}]}", TF_EINVAL,
                "build_start.steps[0].test_results.files: required for "
                "junit");
    expect_fail(BS_PRE "{\"format\":\"pytest\",\"files\":[\"a.xml\"]}}]}",
                TF_EINVAL, "build_start.steps[0].test_results.files: not "
                "allowed for pytest");
    expect_fail(BS_PRE "{\"format\":\"xunit\"}}]}", TF_EINVAL,
                "build_start.steps[0].test_results.format: unknown format");
    expect_fail(BS_PRE "\"ctest\"}]}", TF_EINVAL,
                "build_start.steps[0].test_results: expected an object");
    expect_fail(BS_PRE "{\"format\":\"junit\",\"files\":[]}}]}", TF_EINVAL,
                "build_start.steps[0].test_results.files: must not be empty");
    /* Globs that could leave the workdir. */
    const char *bad[] = {"../x.xml", "/etc/*.xml", "a/../../x.xml", "a//b",
                         "./x.xml", "a/", "a\\\\b.xml", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[600];
        snprintf(text, sizeof text, BS_PRE "{\"format\":\"junit\",\"files\":"
                 "[\"ok.xml\",\"%s\"]}}]}", bad[i]);
        expect_fail(text, TF_EINVAL,
                    "build_start.steps[0].test_results.files[1]: \"");
    }
    TF_CHECK(tf_tr_glob_valid("build/**/TEST-*.xml"));
    TF_CHECK(tf_tr_glob_valid("..x/y..z.xml"));
    TF_CHECK(!tf_tr_glob_valid("x/.."));
}

/* A slave-reported got_revision is reused as a rebuild's revision: it
 * must pass source.revision's rule when it arrives. */
TF_TEST(got_revision_checked)
{
    char text[600];
    static const char *const bad[] = {"--upload-pack=touch X", "", "a..b",
                                      "x y", "-x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text,
                 "{\"type\":\"step_finished\",\"build_id\":3,\"seq\":2,"
                 "\"step\":0,\"result\":\"SUCCESS\",\"exit_code\":0,"
                 "\"signal\":null,\"timed_out\":false,\"duration_ms\":5,"
                 "\"time_ms\":10,\"text\":\"\",\"properties\":"
                 "{\"got_revision\":\"%s\"}}", bad[i]);
        expect_fail(text, TF_EINVAL, "step_finished.properties.got_revision");
    }
    snprintf(text, sizeof text,
             "{\"type\":\"step_finished\",\"build_id\":3,\"seq\":2,"
             "\"step\":0,\"result\":\"SUCCESS\",\"exit_code\":0,"
             "\"signal\":null,\"timed_out\":false,\"duration_ms\":5,"
             "\"time_ms\":10,\"text\":\"\",\"properties\":"
             "{\"got_revision\":\"HEAD~1\",\"other\":\"--any thing\"}}");
    expect_ok(text, TF_MSG_STEP_FINISHED);
}

/* tf_msg_encode_err says why: the validator's field, or the size. */
TF_TEST(encode_says_why)
{
    tf_msg_t m;
    char *out = (char *)1, err[300];
    size_t len = 9;
    sample(TF_MSG_BUILD_START, &m);
    tf_source_t *src = zalloc(1, sizeof *src);
    src->repository = S("/srv/repo.git");
    src->branch = S("main");
    src->revision = S("--upload-pack=touch X");
    m.u.build_start.source = src;
    TF_CHECK_INT(tf_msg_encode_err(&m, &out, &len, err, sizeof err),
                 TF_EINVAL);
    TF_CHECK(out == NULL);
    TF_CHECK_INT(len, 0);
    TF_CHECK(strncmp(err, "build_start.source.revision: ", 29) == 0);
    TF_CHECK(strstr(err, "is not a valid revision") != NULL);
    free(src->revision);
    src->revision = S("");
    free(m.u.build_start.props[1].value);
    m.u.build_start.props[1].value = xmalloc(TF_PROTO_MAX_TEXT);
    memset(m.u.build_start.props[1].value, 'v', TF_PROTO_MAX_TEXT - 1);
    m.u.build_start.props[1].value[TF_PROTO_MAX_TEXT - 1] = '\0';
    TF_CHECK_INT(tf_msg_encode_err(&m, &out, &len, err, sizeof err),
                 TF_E2BIG);
    TF_CHECK(out == NULL);
    TF_CHECK(strncmp(err, "build_start would be ", 21) == 0);
    TF_CHECK(strstr(err, "bytes, over the limit of 1048576 bytes") != NULL);
    tf_msg_clear(&m);
}

/* ---- the fast path of tf_msg_decode (msgfast.c) against jansson ---- */

/* The scalars msg_equal lets pass when a has_* flag is off must still be
 * the same on both paths (0): a caller could read them. */
static bool event_raw_equal(const tf_msg_t *a, const tf_msg_t *b)
{
    if (a->type != TF_MSG_STEP_FINISHED || b->type != TF_MSG_STEP_FINISHED)
        return true;
    const __typeof__(a->u.step_finished) *x = &a->u.step_finished,
                                         *y = &b->u.step_finished;
    return x->exit_code == y->exit_code && x->signal == y->signal &&
           x->warnings == y->warnings && x->nprops == y->nprops;
}

static int diff_failures;

/* Decodes text with tf_msg_decode and with the jansson path alone and
 * checks they agree on rc, sentence and every field. Returns whether the
 * fast path took the text on its own. */
static bool diff_one(const char *text, size_t len, int line)
{
    tf_msg_t a, b, c;
    char ea[512], eb[512];
    memset(ea, 'X', sizeof ea);
    memset(eb, 'Y', sizeof eb);
    int ra = tf_msg_decode(text, len, &a, ea, sizeof ea);
    int rb = tf__msg_decode_slow(text, len, &b, eb, sizeof eb);
    memset(&c, 0, sizeof c);
    bool fast = text && len <= TF_PROTO_MAX_TEXT &&
                tf__msg_decode_fast(text, len, &c);
    bool same = ra == rb && strcmp(ea, eb) == 0 && a.type == b.type &&
                (ra != 0 || (msg_equal(&a, &b) && event_raw_equal(&a, &b)));
    if (fast)
        same = same && ra == 0 && msg_equal(&a, &c) && event_raw_equal(&a, &c);
    else
        same = same && c.type == TF_MSG_NONE;
    if (!same) {
        if (diff_failures++ < 20)
            fprintf(stderr,
                    "test_proto.c:%d: paths differ on %.*s: fast %d, rc %d "
                    "\"%.200s\" vs %d \"%.200s\"\n",
                    line, (int)(len < 300 ? len : 300), text ? text : "", fast,
                    ra, ea, rb, eb);
        tf__failed_checks++;
    }
    tf_msg_clear(&a);
    tf_msg_clear(&b);
    tf_msg_clear(&c);
    return fast;
}

static uint64_t diff_rng = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(uint32_t n)
{
    diff_rng ^= diff_rng << 13;
    diff_rng ^= diff_rng >> 7;
    diff_rng ^= diff_rng << 17;
    return (uint32_t)((diff_rng >> 11) % n);
}

#define PICK(a) ((a)[rnd(sizeof(a) / sizeof((a)[0]))])

/* A growing text buffer that aborts on overflow (tests only). */
typedef struct gbuf {
    char b[16384];
    size_t n;
} gbuf_t;

static void gput(gbuf_t *g, const char *s)
{
    size_t l = strlen(s);
    if (g->n + l >= sizeof g->b)
        abort();
    memcpy(g->b + g->n, s, l);
    g->n += l;
    g->b[g->n] = '\0';
}

static void gws(gbuf_t *g)
{
    static const char *const ws[] = {"", "", "", " ", "\t", "\n", "\r\n",
                                     "  "};
    gput(g, PICK(ws));
}

/* A JSON value for key: usually one the key takes, sometimes an edge or
 * something of the wrong kind. */
static const char *gen_value(const char *key, char *buf, size_t n)
{
    static const char *const ints[] = {
        "0", "1", "2", "9", "10", "123", "998", "999", "1000", "2147483647",
        "2147483648", "9007199254740990", "9007199254740991",
        "9007199254740992", "9999999999999999", "10000000000000000",
        "9223372036854775807", "9223372036854775808",
        "99999999999999999999999", "-1", "-0", "01", "00", "1.0", "1e3",
        "1E3", "+1", "0.5", "1.", "18446744073709551616"};
    static const char *const odd[] = {
        "null", "true", "false", "\"\"", "\"1\"", "[]", "{}", "[1]",
        "{\"a\":1}", "nul", "tru", "truex", "\"\\u0000\"", "1 2"};
    static const char *const names[] = {
        "\"compile\"", "\"step0\"", "\"a\"", "\"Z.z-_9\"", "\"\"",
        "\".\"", "\"..\"", "\"-x\"", "\"_x\"", "\"a b\"", "\"a/b\"",
        "\"\\u0061\"", "\"caf\xc3\xa9\"", "\"a\\\"b\"",
        "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
        "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""};
    static const char *const results[] = {
        "\"SUCCESS\"", "\"WARNINGS\"", "\"FAILURE\"", "\"SKIPPED\"",
        "\"EXCEPTION\"", "\"RETRY\"", "\"CANCELLED\"", "\"success\"",
        "\"SUCCES\"", "\"\"", "\"SUCCESS \"", "\"SU\\u0043CESS\"",
        "\"UNKNOWN\""};
    static const char *const texts[] = {
        "\"\"", "\"ok\"", "\"exit 0\"", "\"a\\nb\"", "\"tab\tin\"",
        "\"caf\xc3\xa9\"", "\"\\u00e9\"", "\"\\/\"", "\"~ !#$%&'()*+,-./:;<=>?@[]^_`{|}\"",
        "\"\x7f\"", "\"\\ud800\"", "\"\xff\""};
    static const char *const types[] = {
        "\"step_started\"", "\"step_finished\"", "\"build_finished\"",
        "\"ack\"", "\"ping\"", "\"pong\"", "\"hello\"", "\"drain\"",
        "\"step_startedx\"", "\"\"", "\"Ack\"", "\"p\\u006fng\""};
    if (rnd(12) == 0)
        return PICK(odd);
    if (strcmp(key, "type") == 0)
        return PICK(types);
    if (strcmp(key, "name") == 0)
        return PICK(names);
    if (strcmp(key, "result") == 0)
        return PICK(results);
    if (strcmp(key, "text") == 0 || strcmp(key, "info") == 0) {
        if (rnd(8) == 0) {
            /* Right at, and one past, the 4096-byte caps. */
            size_t l = 4095 + rnd(3);
            if (l + 3 > n)
                abort();
            buf[0] = '"';
            memset(buf + 1, 'x', l);
            buf[l + 1] = '"';
            buf[l + 2] = '\0';
            return buf;
        }
        return PICK(texts);
    }
    if ((strcmp(key, "exit_code") == 0 || strcmp(key, "signal") == 0) &&
        rnd(3) == 0)
        return "null";
    if (strcmp(key, "timed_out") == 0)
        return rnd(2) ? "true" : "false";
    if (rnd(3) == 0) {
        snprintf(buf, n, "%" PRIu32, rnd(1000000));
        return buf;
    }
    return PICK(ints);
}

typedef struct diff_type {
    const char *type;
    const char *keys[12];
} diff_type_t;

static const diff_type_t diff_types[] = {
    {"step_started", {"build_id", "seq", "step", "name", "time_ms"}},
    {"step_finished",
     {"build_id", "seq", "step", "result", "exit_code", "signal", "timed_out",
      "duration_ms", "time_ms", "text"}},
    {"build_finished", {"build_id", "seq", "result", "time_ms"}},
    {"ack", {"build_id", "seq"}},
    {"ping", {"id"}},
    {"pong", {"id"}},
};

/* One message of type t in text: its keys shuffled, values mostly sound,
 * now and then a key dropped, repeated, unknown or optional. */
static void gen_message(gbuf_t *g, const diff_type_t *t)
{
    static const char *const extra[] = {
        "info", "warnings", "stats", "properties", "x_future", "type", "seq",
        "id", "build_id", "Type", "step"};
    static char vbuf[4200];
    const char *keys[16];
    size_t n = 0;
    while (n < 12 && t->keys[n])
        n++;
    memcpy(keys, t->keys, n * sizeof *keys);
    keys[n++] = "type";
    if (rnd(6) == 0 && n > 1) {
        size_t drop = rnd((uint32_t)n);
        keys[drop] = keys[--n]; /* one missing */
    }
    if (rnd(5) == 0)
        keys[n++] = PICK(extra);
    if (rnd(12) == 0) {
        size_t again = rnd((uint32_t)n);
        keys[n] = keys[again]; /* one repeated */
        n++;
    }
    for (size_t i = n; i > 1; i--) {
        size_t j = rnd((uint32_t)i);
        const char *k = keys[i - 1];
        keys[i - 1] = keys[j];
        keys[j] = k;
    }
    g->n = 0;
    g->b[0] = '\0';
    gws(g);
    gput(g, "{");
    for (size_t i = 0; i < n; i++) {
        gws(g);
        gput(g, "\"");
        gput(g, keys[i]);
        gput(g, "\"");
        gws(g);
        gput(g, ":");
        gws(g);
        if (strcmp(keys[i], "type") == 0 && rnd(10) != 0) {
            gput(g, "\"");
            gput(g, t->type);
            gput(g, "\"");
        } else if (strcmp(keys[i], "stats") == 0) {
            gput(g, rnd(2) ? "{\"lines\":3}" : "{}");
        } else if (strcmp(keys[i], "properties") == 0) {
            gput(g, rnd(2) ? "{\"k\":\"v\"}" : "{}");
        } else {
            gput(g, gen_value(keys[i], vbuf, sizeof vbuf));
        }
        gws(g);
        if (i + 1 < n)
            gput(g, ",");
    }
    gput(g, "}");
    gws(g);
}

TF_TEST(fast_path_takes_the_hot_messages)
{
    static const tf_msg_type_t types[] = {
        TF_MSG_STEP_STARTED, TF_MSG_STEP_FINISHED, TF_MSG_BUILD_FINISHED,
        TF_MSG_ACK, TF_MSG_PING, TF_MSG_PONG};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        tf_msg_t m;
        char *text = NULL;
        size_t len = 0;
        sample(types[i], &m);
        if (types[i] == TF_MSG_STEP_FINISHED) {
            /* The sample's text has escapes, which jansson reads. */
            free(m.u.step_finished.text);
            m.u.step_finished.text = S("exit 2");
        }
        TF_CHECK_INT(tf_msg_encode(&m, &text, &len), 0);
        tf_msg_clear(&m);
        if (!text)
            continue;
        TF_CHECK(diff_one(text, len, __LINE__));
        free(text);
    }
    /* What a slave sends for a step that ran a plain command. */
    const char *sf = "{\"type\":\"step_finished\",\"build_id\":7,\"seq\":3,"
                     "\"step\":0,\"result\":\"SUCCESS\",\"exit_code\":0,"
                     "\"signal\":null,\"timed_out\":false,"
                     "\"duration_ms\":12,\"time_ms\":1700000000000,"
                     "\"text\":\"exit 0\",\"warnings\":0}";
    TF_CHECK(diff_one(sf, strlen(sf), __LINE__));
}

/* An ack written by the fast encoder is the jansson path's text byte for
 * byte, at every digit count and at both ends of the ranges; one out of
 * range is refused with the jansson path's sentence. */
TF_TEST(ack_fast_encoder_writes_what_jansson_writes)
{
    static const uint64_t edges[] = {0, 1, 9, 10, 99, 100, 12345,
                                     4294967295ULL, 4294967296ULL,
                                     TF_PROTO_MAX_ID - 1, TF_PROTO_MAX_ID,
                                     TF_PROTO_MAX_ID + 1, UINT64_MAX};
    size_t n = sizeof edges / sizeof edges[0], fast = 0;

    for (size_t i = 0; i < n * n + 20000; i++) {
        tf_msg_t m = {.type = TF_MSG_ACK};
        if (i < n * n) {
            m.u.ack.build_id = edges[i / n];
            m.u.ack.seq = edges[i % n];
        } else {
            /* Any digit count: a random value cut to a random length. */
            m.u.ack.build_id = (((uint64_t)rnd(1u << 31) << 32) | rnd(~0u)) >>
                               rnd(64);
            m.u.ack.seq = (((uint64_t)rnd(1u << 31) << 32) | rnd(~0u)) >>
                          rnd(64);
        }
        char *a = NULL, *b = NULL, ea[256] = "x", eb[256] = "y";
        size_t la = 0, lb = 0;
        int ra = tf_msg_encode_err(&m, &a, &la, ea, sizeof ea);
        int rb = tf__msg_encode_slow(&m, &b, &lb, eb, sizeof eb);
        TF_CHECK_INT(ra, rb);
        TF_CHECK_STR(ea, eb);
        if (ra == 0 && a && b) {
            TF_CHECK_INT(la, lb);
            TF_CHECK_STR(a, b);
            fast++;
        } else {
            TF_CHECK(!a);
        }
        free(a);
        free(b);
    }
    /* Most of the range is taken, so the comparison covered it. */
    TF_CHECK(fast > 10000);
}

/* ---- build_start: the one-pass encoder against the jansson path ---- */

/* Whether a generated build_start should carry a flaw the validator
 * refuses; 1 in bs_bad_odds fields gets one. */
static uint32_t bs_bad_odds = 60;

static bool bs_bad(void)
{
    return rnd(bs_bad_odds) == 0;
}

/* A string of up to max pieces: plain ASCII, the characters jansson
 * escapes (quotes, backslashes, every control character), DEL, '/',
 * multibyte UTF-8 of every length and, when bad, a sequence that is not
 * UTF-8 (stray continuation, overlong, surrogate, past U+10FFFF). */
static char *bs_str(size_t max, bool bad)
{
    static const char *const pieces[] = {
        "a", "make", " ", "-j4", "\"", "\\", "\\\"", "/", "\x7f", "\xc3\xa9",
        "\xe2\x82\xac", "\xf0\x9d\x84\x9e", "\xef\xbf\xbf", "\xdf\xbf", "=",
        "{", "}", "[", "]", ",", ":", "\\u0041", "x y"};
    static const char *const broken[] = {"\x80", "\xc0\xaf", "\xed\xa0\x80",
                                         "\xf4\x90\x80\x80", "\xff", "\xc3",
                                         "\xe2\x82"};
    char buf[1024];
    size_t o = 0, n = rnd((uint32_t)max + 1);
    for (size_t i = 0; i < n; i++) {
        const char *p;
        char ctl[2] = {0, 0};
        if (rnd(6) == 0) {
            ctl[0] = (char)(1 + rnd(31)); /* every control character */
            p = ctl;
        } else {
            p = PICK(pieces);
        }
        size_t l = strlen(p);
        if (o + l + 8 >= sizeof buf)
            break;
        memcpy(buf + o, p, l);
        o += l;
    }
    if (bad) {
        const char *p = PICK(broken);
        /* At the start or the end, not inside a sequence of the good
         * pieces (which could make it a valid one). */
        size_t at = rnd(2) ? o : 0;
        size_t l = strlen(p);
        memmove(buf + at + l, buf + at, o - at);
        memcpy(buf + at, p, l);
        o += l;
    }
    buf[o] = '\0';
    return S(buf);
}

/* A name: valid ones of every shape, or (bad) one names.h refuses. */
static char *bs_name(bool bad)
{
    static const char *const good[] = {"a", "vm1", "linux-x86_64", "A.b_c-d",
                                       "0", "9z",
                                       "abcdefghijabcdefghijabcdefghijabcdefghij"
                                       "abcdefghijabcdefghij1234"};
    static const char *const refused[] = {"", "-x", ".x", "_x", "a b", "a/b",
                                          "\xc3\xa9t\xc3\xa9", "a\"b",
                                          "abcdefghijabcdefghijabcdefghijabcdefgh"
                                          "ijabcdefghijabcdefghij12345"};
    return S(bad ? PICK(refused) : PICK(good));
}

static uint64_t bs_id(uint64_t min)
{
    static const uint64_t edges[] = {0, 1, 9, 10, 4294967295ULL,
                                     TF_PROTO_MAX_ID, TF_PROTO_MAX_ID + 1,
                                     UINT64_MAX};
    if (rnd(3) == 0) {
        uint64_t v = PICK(edges);
        if (!bs_bad() && (v < min || v > TF_PROTO_MAX_ID))
            v = min + rnd(1000);
        return v;
    }
    return ((((uint64_t)rnd(1u << 21) << 32) | rnd(~0u)) >> rnd(53)) + min;
}

/* n key/value pairs; bad keys are empty, repeated or (env) hold '='. */
static void bs_kv(tf_kv_t **kv, size_t *n, size_t max, bool env)
{
    *n = rnd((uint32_t)max + 1);
    *kv = *n ? zalloc(*n, sizeof **kv) : NULL;
    for (size_t i = 0; i < *n; i++) {
        char k[48];
        snprintf(k, sizeof k, "%s%zu", env ? "VAR_" : "prop.", i);
        if (bs_bad()) {
            switch (rnd(3)) {
            case 0:
                k[0] = '\0';
                break;
            case 1:
                snprintf(k, sizeof k, "%s%zu", env ? "VAR_" : "prop.",
                         i ? i - 1 : 0);
                break;
            default:
                snprintf(k, sizeof k, "K=%zu", i);
                break;
            }
        } else if (rnd(4) == 0) {
            /* Keys are escaped like values: odd but valid ones. */
            snprintf(k, sizeof k, "k\"\\\t\xc3\xa9%zu", i);
        }
        (*kv)[i].key = S(k);
        (*kv)[i].value = rnd(5) ? bs_str(6, bs_bad()) : S("");
    }
}

/* A string of n copies of c. */
static char *bs_fill(size_t n, char c)
{
    char *r = xmalloc(n + 1);
    memset(r, c, n);
    r[n] = '\0';
    return r;
}

/* A regex; bad ones are empty, NULL or one byte over the cap. */
static char *bs_regex(void)
{
    if (bs_bad())
        return rnd(3) == 0   ? S("")
               : rnd(2) == 0 ? NULL
                             : bs_fill(TF_PROTO_MAX_REGEX + 1, 'x');
    if (rnd(50) == 0)
        return bs_fill(TF_PROTO_MAX_REGEX, 'x');
    char *r = bs_str(5, bs_bad());
    if (!r[0]) {
        free(r);
        r = S("^warning: (.*)$");
    }
    return r;
}

static tf_modifiers_t *bs_modifiers(void)
{
    tf_modifiers_t *m = zalloc(1, sizeof *m);
    m->markers = rnd(2);
    if (rnd(3) == 0) {
        m->ninfo = bs_bad() ? TF_PROTO_MAX_MOD_RULES + 1 : 1 + rnd(3);
        m->info = zalloc(m->ninfo, sizeof *m->info);
        for (size_t i = 0; i < m->ninfo; i++)
            m->info[i] = bs_regex();
    }
    if (rnd(3) == 0) {
        m->nstats = 1 + rnd(3);
        m->stats = zalloc(m->nstats, sizeof *m->stats);
        for (size_t i = 0; i < m->nstats; i++) {
            m->stats[i].name = rnd(2) ? bs_name(bs_bad()) : NULL;
            m->stats[i].regex = bs_regex();
        }
    }
    if (rnd(3) == 0)
        m->pass_if = bs_regex();
    if (rnd(3) == 0)
        m->fail_if = bs_regex();
    if (rnd(3) == 0) {
        m->warnings = bs_regex();
        m->warnings_max = rnd(2) ? rnd(100) : UINT32_MAX;
    }
    return m;
}

static tf_test_spec_t *bs_test_spec(void)
{
    static const char *const globs[] = {"report.xml", "out/*.xml",
                                        "t/**/*.log", "a b/\xc3\xa9.xml"};
    static const char *const bad_globs[] = {"/abs.xml", "../up.xml", "a//b",
                                            "./x", ""};
    tf_test_spec_t *t = zalloc(1, sizeof *t);
    t->format = (tf_tr_format_t)(1 + rnd(TF_TR_FMT__COUNT - 1));
    if (bs_bad())
        t->format = TF_TR_FMT_NONE;
    bool files = tf_tr_format_files(t->format) &&
                 (t->format == TF_TR_FMT_JUNIT || rnd(2));
    if (bs_bad())
        files = !files;
    if (files) {
        t->nfiles = bs_bad() ? TF_TR_MAX_FILES + 1 : 1 + rnd(3);
        t->files = zalloc(t->nfiles + 1, sizeof *t->files);
        for (size_t i = 0; i < t->nfiles; i++)
            t->files[i] = bs_bad() ? (rnd(2) ? S(PICK(bad_globs))
                                             : bs_fill(TF_TR_MAX_GLOB + 1, 'g'))
                                   : S(PICK(globs));
    }
    return t;
}

static void bs_step(tf_step_spec_t *s)
{
    static const char *const workdirs[] = {"", "src", "src/build", "a.b/c-d",
                                           "x9/Y"};
    static const char *const bad_workdirs[] = {"/abs", "../up", "a/../b",
                                               "a//b", "./a", "x y",
                                               "\xc3\xa9t\xc3\xa9"};
    s->name = bs_name(bs_bad());
    s->argc = bs_bad() ? 0 : 1 + rnd(6);
    s->argv = zalloc(s->argc + 1, sizeof *s->argv);
    for (size_t i = 0; i < s->argc; i++)
        s->argv[i] = bs_str(i ? 12 : 3, bs_bad());
    if (s->argc && !s->argv[0][0] && !bs_bad()) {
        free(s->argv[0]);
        s->argv[0] = S("/bin/sh");
    }
    bs_kv(&s->env, &s->nenv, rnd(4) ? 3 : 0, true);
    if (rnd(4))
        s->workdir = S(bs_bad() ? PICK(bad_workdirs) : PICK(workdirs));
    s->timeout_s = rnd(3) ? rnd(5000) : UINT32_MAX;
    s->max_time_s = rnd(3) ? 0 : (uint32_t)rnd(~0u) + rnd(2);
    s->flags.halt_on_failure = rnd(2);
    s->flags.flunk_on_failure = rnd(2);
    s->flags.warn_on_failure = rnd(2);
    s->flags.flunk_on_warnings = rnd(2);
    s->flags.warn_on_warnings = rnd(2);
    s->flags.always_run = rnd(2);
    if (rnd(8) == 0)
        s->builtin = S(bs_bad() ? "sources" : TF_BUILTIN_SOURCE);
    if (rnd(2))
        s->modifiers = bs_modifiers();
    if (rnd(6) == 0)
        s->test_results = bs_test_spec();
}

static tf_source_t *bs_source(void)
{
    static const char *const repos[] = {"https://example.com/r.git",
                                        "git@example.com:team/r.git",
                                        "/srv/git/r", "file:///srv/git/r"};
    static const char *const branches[] = {"main", "release/1.2",
                                           "feature-x_y"};
    static const char *const revs[] = {"", "abc1234",
                                       "0123456789abcdef0123456789abcdef01234567"};
    tf_source_t *src = zalloc(1, sizeof *src);
    src->repository = S(bs_bad() ? "not a repo" : PICK(repos));
    src->branch = S(bs_bad() ? "bad..ref" : PICK(branches));
    if (bs_bad()) {
        free(src->branch);
        src->branch = bs_fill(TF_REF_MAX + 1, 'b');
    }
    src->revision = S(bs_bad() ? "-bad" : PICK(revs));
    if (rnd(2)) {
        src->has_patch = true;
        memcpy(src->patch_sha256, NONCE, 65);
        if (bs_bad())
            src->patch_sha256[rnd(64)] = rnd(2) ? 'G' : '\0';
        if (bs_bad())
            src->patch_sha256[64] = 'a';
        src->patch_size = bs_id(0);
    }
    return src;
}

/* A build_start with maxsteps steps at most, anything in it varied. */
static void bs_msg(tf_msg_t *m, size_t maxsteps)
{
    __typeof__(m->u.build_start) *b = &m->u.build_start;
    memset(m, 0, sizeof *m);
    m->type = TF_MSG_BUILD_START;
    b->build_id = bs_id(1);
    b->builder = bs_name(bs_bad());
    b->number = bs_id(0);
    b->workdir = rnd(8) ? bs_name(bs_bad()) : S(b->builder);
    bs_kv(&b->props, &b->nprops, rnd(3) ? 4 : 0, false);
    b->nsteps = 1 + rnd((uint32_t)maxsteps);
    b->steps = zalloc(b->nsteps, sizeof *b->steps);
    for (size_t i = 0; i < b->nsteps; i++)
        bs_step(&b->steps[i]);
    if (rnd(3))
        b->source = bs_source();
}

/* Encodes m both ways: same rc, same sentence, same bytes. Returns
 * whether the fast encoder took it (1) or left it (0); a message jansson
 * writes that the fast encoder leaves is counted in *left. */
static int bs_diff(const tf_msg_t *m, size_t *left, int line)
{
    char *a = NULL, *b = NULL, *c = NULL, ea[512] = "x", eb[512] = "y";
    size_t la = 0, lb = 0, lc = 0;
    int ra = tf_msg_encode_err(m, &a, &la, ea, sizeof ea);
    int rb = tf__msg_encode_slow(m, &b, &lb, eb, sizeof eb);
    bool fast = tf__msg_encode_build_start(m, &c, &lc);
    bool same = ra == rb && strcmp(ea, eb) == 0 && !a == !b &&
                (!a || (la == lb && memcmp(a, b, la) == 0));
    /* What the fast encoder writes, jansson writes too, byte for byte. */
    if (fast)
        same = same && rb == 0 && lc == lb && memcmp(c, b, lc) == 0 &&
               c[lc] == '\0';
    if (!same) {
        fprintf(stderr, "test_proto.c:%d: encoders differ: fast %d, rc %d "
                "\"%.200s\" vs %d \"%.200s\"\n  fast: %.600s\n  slow: %.600s\n",
                line, fast, ra, ea, rb, eb, c ? c : "(none)",
                b ? b : "(none)");
        tf__failed_checks++;
    }
    if (rb == 0 && !fast)
        (*left)++;
    free(a);
    free(b);
    free(c);
    return fast;
}

/* Thousands of generated build_starts, most valid, some with one flaw the
 * validator refuses: the fast encoder writes the jansson path's bytes for
 * every one it takes, and leaves the rest for the jansson path to refuse
 * with its sentence. */
TF_TEST(build_start_fast_encoder_writes_what_jansson_writes)
{
    size_t fast = 0, left = 0, refused = 0, n = 6000;
    diff_rng = 0x2545f4914f6cdd1dULL;
    for (size_t i = 0; i < n; i++) {
        tf_msg_t m;
        /* No flaw, about one flaw in a big message, or a few in a small
         * one (so that each rule's refusal is met, not just UTF-8's). */
        bs_bad_odds = i % 3 == 0 ? 1000000 : i % 3 == 1 ? 1500 : 60;
        bs_msg(&m, i % 3 == 2 ? 2 : 40);
        char *t = NULL;
        if (tf__msg_encode_slow(&m, &t, NULL, NULL, 0) != 0)
            refused++;
        free(t);
        fast += (size_t)bs_diff(&m, &left, __LINE__);
        tf_msg_clear(&m);
    }
    fprintf(stderr, "build_start: fast encoder took %zu of %zu, left %zu "
            "jansson wrote, %zu refused\n", fast, n, left, refused);
    /* Both kinds were covered, and the fast encoder takes every message
     * the generator makes that jansson writes (it gives up only on the
     * shapes it cannot check cheaply, which these are not). */
    TF_CHECK(fast > n / 3);
    TF_CHECK(refused > n / 10);
    TF_CHECK_INT(left, 0);
}

/* The refusals at the edges: too many steps, none, oversize at exactly
 * one byte over the cap, and a NULL vector with entries. */
TF_TEST(build_start_fast_encoder_edges)
{
    size_t left = 0;
    tf_msg_t m;
    char *t = NULL;
    size_t len = 0;
    diff_rng = 0x853c49e6748fea9bULL;
    bs_bad_odds = 1000000;

    /* TF_PROTO_MAX_STEPS steps are written, one more is refused. */
    for (size_t extra = 0; extra < 2; extra++) {
        bs_msg(&m, 1);
        tf_msg_clear(&m);
        bs_msg(&m, 1);
        __typeof__(m.u.build_start) *b = &m.u.build_start;
        size_t want = TF_PROTO_MAX_STEPS + extra;
        tf_step_spec_t *st = zalloc(want, sizeof *st);
        st[0] = b->steps[0];
        for (size_t i = 1; i < want; i++)
            TF_CHECK_INT(tf_step_spec_copy(&st[i], &b->steps[0]), 0);
        free(b->steps);
        b->steps = st;
        b->nsteps = want;
        TF_CHECK_INT(bs_diff(&m, &left, __LINE__), !extra);
        tf_msg_clear(&m);
    }

    /* No steps, and steps NULL. */
    bs_msg(&m, 1);
    m.u.build_start.nsteps = 0;
    TF_CHECK_INT(bs_diff(&m, &left, __LINE__), 0);
    m.u.build_start.nsteps = 1;
    tf_step_spec_t *keep = m.u.build_start.steps;
    m.u.build_start.steps = NULL;
    TF_CHECK_INT(bs_diff(&m, &left, __LINE__), 0);
    m.u.build_start.steps = keep;
    /* Entries without their vector. */
    tf_kv_t *props = m.u.build_start.props;
    size_t nprops = m.u.build_start.nprops;
    m.u.build_start.props = NULL;
    m.u.build_start.nprops = 1;
    TF_CHECK_INT(bs_diff(&m, &left, __LINE__), 0);
    m.u.build_start.props = props;
    m.u.build_start.nprops = nprops;
    tf_msg_clear(&m);

    /* Sized to the byte: a text of exactly TF_PROTO_MAX_TEXT bytes is
     * written, one byte more is refused with the jansson path's
     * sentence; with escapes in the padding too. */
    for (int esc = 0; esc < 2; esc++) {
        for (size_t over = 0; over < 2; over++) {
            bs_msg(&m, 1);
            tf_step_spec_t *s = &m.u.build_start.steps[0];
            TF_CHECK_INT(tf__msg_encode_slow(&m, &t, &len, NULL, 0), 0);
            free(t);
            t = NULL;
            /* An argument added: ,"..." is 3 bytes plus its text. */
            size_t room = TF_PROTO_MAX_TEXT - len - 3 + over;
            char *pad = xmalloc(room + 1);
            memset(pad, 'a', room);
            if (esc) {
                pad[room - 2] = '\n'; /* written as the 2 bytes \n */
                room--;
            }
            pad[room] = '\0';
            char **argv = zalloc(s->argc + 2, sizeof *argv);
            memcpy(argv, s->argv, s->argc * sizeof *argv);
            argv[s->argc] = pad;
            free(s->argv);
            s->argv = argv;
            s->argc++;
            char e[256];
            int rc = tf__msg_encode_slow(&m, &t, &len, e, sizeof e);
            TF_CHECK_INT(rc, over ? TF_E2BIG : 0);
            if (!rc)
                TF_CHECK_INT(len, TF_PROTO_MAX_TEXT);
            else
                TF_CHECK(strstr(e, "over the limit") != NULL);
            free(t);
            t = NULL;
            TF_CHECK_INT(bs_diff(&m, &left, __LINE__), !over);
            tf_msg_clear(&m);
        }
    }
    /* Far over the cap: one argument of 3 MiB of control characters. */
    bs_msg(&m, 1);
    {
        tf_step_spec_t *s = &m.u.build_start.steps[0];
        char *big = xmalloc(3 * 1024 * 1024 + 1);
        memset(big, '\x01', 3 * 1024 * 1024);
        big[3 * 1024 * 1024] = '\0';
        free(s->argv[s->argc - 1]);
        s->argv[s->argc - 1] = big;
        if (s->argc == 1)
            s->argv[0][0] = 'x';
        TF_CHECK_INT(bs_diff(&m, &left, __LINE__), 0);
    }
    tf_msg_clear(&m);
    TF_CHECK_INT(left, 0);
}

/* Shapes the fast path must leave to jansson, one per rule it keeps; each
 * is still decoded (or refused) exactly as jansson decodes it. */
TF_TEST(fast_path_leaves_the_odd_shapes)
{
#define SS_HEAD "{\"type\":\"step_started\",\"build_id\":1,\"seq\":1,"
    static const char *const odd[] = {
        SS_HEAD "\"step\":0,\"name\":\"a\",\"time_ms\":0,\"seq\":1}",
        SS_HEAD "\"step\":0,\"name\":\"a\",\"time_ms\":0,\"type\":\"ack\"}",
        SS_HEAD "\"step\":00,\"name\":\"a\",\"time_ms\":0}",
        SS_HEAD "\"step\":01,\"name\":\"a\",\"time_ms\":0}",
        SS_HEAD "\"step\":-0,\"name\":\"a\",\"time_ms\":0}",
        SS_HEAD "\"step\":1.0,\"name\":\"a\",\"time_ms\":0}",
        SS_HEAD "\"step\":1e2,\"name\":\"a\",\"time_ms\":0}",
        SS_HEAD "\"step\":1000,\"name\":\"a\",\"time_ms\":0}",
        SS_HEAD "\"step\":0,\"name\":\"\\u0061\",\"time_ms\":0}",
        SS_HEAD "\"step\":0,\"name\":\"caf\xc3\xa9\",\"time_ms\":0}",
        SS_HEAD "\"step\":0,\"name\":\"-a\",\"time_ms\":0}",
        SS_HEAD "\"step\":0,\"name\":\"a\",\"time_ms\":9007199254740992}",
        SS_HEAD "\"step\":0,\"name\":\"a\",\"time_ms\":99999999999999999999}",
        SS_HEAD "\"step\":0,\"name\":\"a\",\"time_ms\":0,\"x\":1}",
        SS_HEAD "\"step\":0,\"name\":\"a\",\"time_ms\":0,\"id\":1}",
        SS_HEAD "\"step\":0,\"name\":\"a\",\"time_ms\":[0]}",
        SS_HEAD "\"step\":0,\"name\":\"a\"}",
        SS_HEAD "\"step\":0,\"name\":\"a\",\"time_ms\":0}x",
        SS_HEAD "\"step\":0,\"name\":\"a\",\"time_ms\":0,}",
        SS_HEAD "\"step\":true,\"name\":\"a\",\"time_ms\":0}",
        "{\"type\":\"step_started\",\"build_id\":0,\"seq\":1,\"step\":0,"
        "\"name\":\"a\",\"time_ms\":0}",
        "{\"type\":\"ste\\u0070_started\",\"build_id\":1,\"seq\":1,"
        "\"step\":0,\"name\":\"a\",\"time_ms\":0}",
        "[{\"type\":\"ack\",\"build_id\":1,\"seq\":1}]",
        "\xef\xbb\xbf{\"type\":\"ack\",\"build_id\":1,\"seq\":1}",
        "{\"type\":\"ack\",\"build_id\":1,\"seq\":+1}",
        "{\"type\":\"build_finished\",\"build_id\":1,\"seq\":1,"
        "\"result\":\"success\",\"time_ms\":0}",
        "{\"type\":\"step_finished\",\"build_id\":1,\"seq\":1,\"step\":0,"
        "\"result\":\"SUCCESS\",\"exit_code\":0,\"signal\":0,"
        "\"timed_out\":false,\"duration_ms\":0,\"time_ms\":0,\"text\":\"\"}",
        "{\"type\":\"step_finished\",\"build_id\":1,\"seq\":1,\"step\":0,"
        "\"result\":\"SUCCESS\",\"exit_code\":null,\"signal\":null,"
        "\"timed_out\":0,\"duration_ms\":0,\"time_ms\":0,\"text\":\"\"}",
        "{\"type\":\"step_finished\",\"build_id\":1,\"seq\":1,\"step\":0,"
        "\"result\":\"SUCCESS\",\"exit_code\":2147483648,\"signal\":null,"
        "\"timed_out\":false,\"duration_ms\":0,\"time_ms\":0,\"text\":\"\"}",
        "{\"type\":\"step_finished\",\"build_id\":1,\"seq\":1,\"step\":0,"
        "\"result\":\"SUCCESS\",\"exit_code\":0,\"signal\":null,"
        "\"timed_out\":false,\"duration_ms\":0,\"time_ms\":0,\"text\":\"\","
        "\"stats\":{\"lines\":1}}",
        "{\"type\":\"step_finished\",\"build_id\":1,\"seq\":1,\"step\":0,"
        "\"result\":\"SUCCESS\",\"exit_code\":0,\"signal\":null,"
        "\"timed_out\":false,\"duration_ms\":0,\"time_ms\":0,\"text\":\"\","
        "\"properties\":{}}",
        "{\"type\":\"step_finished\",\"build_id\":1,\"seq\":1,\"step\":0,"
        "\"result\":\"SUCCESS\",\"exit_code\":0,\"signal\":null,"
        "\"timed_out\":false,\"duration_ms\":0,\"time_ms\":0,"
        "\"text\":\"a\\nb\"}",
    };
#undef SS_HEAD
    /* sizeof: the text ends in a NUL byte after the object. */
    static const char nul_after[] = "{\"type\":\"ack\",\"build_id\":1,"
                                    "\"seq\":1}";
    TF_CHECK(!diff_one(nul_after, sizeof nul_after, __LINE__));
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        if (diff_one(odd[i], strlen(odd[i]), __LINE__)) {
            fprintf(stderr, "fast path took odd shape %zu: %s\n", i, odd[i]);
            tf__failed_checks++;
        }
    }
}

TF_TEST(fast_path_agrees_with_jansson_generated)
{
    gbuf_t *g = xmalloc(sizeof *g);
    size_t fast = 0, total = 0;
    diff_failures = 0;
    for (int round = 0; round < 40000; round++) {
        for (size_t t = 0; t < sizeof diff_types / sizeof diff_types[0]; t++) {
            gen_message(g, &diff_types[t]);
            fast += diff_one(g->b, g->n, __LINE__);
            total++;
        }
    }
    /* The generator aims near the edges, but a fair share must be taken
     * by the fast path or the comparison proves little. */
    fprintf(stderr, "fast path took %zu of %zu generated messages\n", fast,
            total);
    TF_CHECK(fast > total / 10);
    TF_CHECK(fast < total);
    free(g);
}

/* Sound messages of each type, the seeds of the byte mutations below. */
static const char *const diff_seeds[] = {
    "{\"type\":\"step_started\",\"build_id\":12,\"seq\":1,\"step\":0,"
    "\"name\":\"compile\",\"time_ms\":1700000000000}",
    " {\n \"time_ms\" : 0 , \"name\" : \"a\" , \"step\" : 999 , \"seq\" : "
    "9007199254740991 , \"build_id\" : 1 , \"type\" : \"step_started\" }\n",
    "{\"type\":\"step_finished\",\"build_id\":12,\"seq\":2,\"step\":3,"
    "\"result\":\"FAILURE\",\"exit_code\":2,\"signal\":null,"
    "\"timed_out\":false,\"duration_ms\":1500,\"time_ms\":1700000001500,"
    "\"text\":\"exit 2\"}",
    "{\"text\":\"\",\"timed_out\":true,\"signal\":9,\"exit_code\":null,"
    "\"result\":\"EXCEPTION\",\"step\":1,\"seq\":10,\"build_id\":3,"
    "\"duration_ms\":0,\"time_ms\":5,\"type\":\"step_finished\","
    "\"info\":\"3 warnings\",\"warnings\":3}",
    "{\"type\":\"build_finished\",\"build_id\":12,\"seq\":9,"
    "\"result\":\"SUCCESS\",\"time_ms\":1700000002000}",
    "{\"type\":\"ack\",\"build_id\":4,\"seq\":0}",
    "{\"type\":\"pong\",\"id\":77}",
    "{\"id\":0,\"type\":\"ping\"}",
};

TF_TEST(fast_path_agrees_with_jansson_mutated)
{
    static const char subst[] = {'"', '\\', ',', '}', '{', '[', ':', '0', '1',
                                 '9', '-', '.', 'e', ' ', '\t', 'x', 'n', 't',
                                 '\0', '\x7f', '\x80', '\xc3'};
    char buf[512];
    size_t fast = 0, total = 0;
    diff_failures = 0;
    for (size_t s = 0; s < sizeof diff_seeds / sizeof diff_seeds[0]; s++) {
        const char *seed = diff_seeds[s];
        size_t n = strlen(seed);
        TF_CHECK(diff_one(seed, n, __LINE__));
        for (size_t i = 0; i <= n; i++) {
            /* Every prefix, every byte deleted, doubled or replaced. */
            fast += diff_one(seed, i, __LINE__);
            total++;
            if (i == n)
                break;
            memcpy(buf, seed, i);
            memcpy(buf + i, seed + i + 1, n - i - 1);
            fast += diff_one(buf, n - 1, __LINE__);
            memcpy(buf, seed, i + 1);
            memcpy(buf + i + 1, seed + i, n - i);
            fast += diff_one(buf, n + 1, __LINE__);
            total += 2;
            for (size_t k = 0; k < sizeof subst; k++) {
                memcpy(buf, seed, n);
                if (buf[i] == subst[k])
                    continue;
                buf[i] = subst[k];
                fast += diff_one(buf, n, __LINE__);
                total++;
            }
        }
    }
    fprintf(stderr, "fast path took %zu of %zu mutated messages\n", fast,
            total);
    TF_CHECK(fast > 0);
}

TF_TEST_MAIN()
