/*
 * test_slave_stepres.c - a step's test results on the slave, with real
 * files in a temporary workdir: globs with "**", links that would leave
 * the workdir, oversized and malformed reports, automake's named logs,
 * and the batching of many results into test_results messages that each
 * stay under the protocol's cap and decode again.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stepres.h"
#include "tf_err.h"
#include "tf_test.h"
#include "util.h"

static char root[512], outside[512];

static void put(const char *rel, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    TF_CHECK_INT(tf_mkdir_p(path, 0755), 0);
    *slash = '/';
    FILE *f = fopen(path, "w");
    TF_CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void setup(void)
{
    snprintf(root, sizeof root, "/tmp/tf-stepres-%d/work", (int)getpid());
    snprintf(outside, sizeof outside, "/tmp/tf-stepres-%d/outside",
             (int)getpid());
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf /tmp/tf-stepres-%d", (int)getpid());
    TF_CHECK(system(cmd) == 0);
    TF_CHECK_INT(tf_mkdir_p(root, 0755), 0);
    TF_CHECK_INT(tf_mkdir_p(outside, 0755), 0);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf /tmp/tf-stepres-%d", (int)getpid());
    TF_CHECK(system(cmd) == 0);
}

static const tf_tr_entry_t *find(const tf_stepres_t *x, const char *suite,
                                 const char *name)
{
    const tf_tr_collect_t *c = tf_stepres_collected(x);
    for (size_t i = 0; i < tf_tr_collect_count(c); i++) {
        const tf_tr_entry_t *e = tf_tr_collect_get(c, i);
        if (strcmp(e->suite, suite) == 0 && strcmp(e->name, name) == 0)
            return e;
    }
    return NULL;
}

static bool has_problem(const tf_stepres_t *x, const char *want)
{
    size_t n;
    char *const *p = tf_tr_collect_problems(tf_stepres_collected(x), &n);
    for (size_t i = 0; i < n; i++)
        if (strstr(p[i], want))
            return true;
    fprintf(stderr, "no problem \"%s\"; have:\n", want);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, "  %s\n", p[i]);
    return false;
}

static tf_stepres_t *run_spec(tf_tr_format_t fmt, const char *const *files,
                              size_t nfiles, const char *stepdir,
                              const char *output)
{
    tf_test_spec_t spec = {.format = fmt, .files = (char **)files,
                           .nfiles = nfiles};
    tf_stepres_t *x = NULL;
    TF_CHECK_INT(tf_stepres_new(&spec, &x), 0);
    if (output)
        tf_stepres_feed(x, TF_STREAM_STDOUT, (const uint8_t *)output,
                        strlen(output));
    tf_stepres_finish(x, root, stepdir, true);
    return x;
}

#define CASE(name, cls) "<testcase classname=\"" cls "\" name=\"" name "\"/>"

TF_TEST(junit_globs_stay_in_the_workdir)
{
    setup();
    put("build/a/r1.xml", "<testsuite>" CASE("one", "A") "</testsuite>");
    put("build/b/c/r2.xml", "<testsuite>" CASE("two", "B")
        "<testcase classname=\"B\" name=\"bad\"><failure message=\"x.c:1: "
        "boom\"/></testcase></testsuite>");
    put("build/.hidden/r3.xml", "<testsuite>" CASE("hidden", "H")
        "</testsuite>");
    put("build/notes.txt", "not a report");
    char path[1024], target[1024];
    /* A report outside the workdir, reachable only through links. */
    snprintf(target, sizeof target, "%s/secret.xml", outside);
    FILE *f = fopen(target, "w");
    fputs("<testsuite>" CASE("stolen", "S") "</testsuite>", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/build/evil.xml", root);
    TF_CHECK_INT(symlink(target, path), 0);
    snprintf(path, sizeof path, "%s/build/linkdir", root);
    TF_CHECK_INT(symlink(outside, path), 0);
    snprintf(path, sizeof path, "%s/reports", root);
    TF_CHECK_INT(symlink(outside, path), 0);

    const char *files[] = {"build/**/*.xml", "reports/*.xml",
                           "build/linkdir/secret.xml", "none/*.xml"};
    tf_stepres_t *x = run_spec(TF_TR_FMT_JUNIT, files, 4, "", NULL);
    TF_CHECK(find(x, "A", "one") != NULL);
    TF_CHECK(find(x, "B", "two") != NULL);
    const tf_tr_entry_t *e = find(x, "B", "bad");
    TF_CHECK(e && e->status == TF_TR_FAIL && e->message &&
             strcmp(e->message, "x.c:1: boom") == 0);
    TF_CHECK(find(x, "H", "hidden") == NULL); /* "**" skips dot dirs */
    TF_CHECK(find(x, "S", "stolen") == NULL);
    TF_CHECK_INT(tf_tr_collect_count(tf_stepres_collected(x)), 3);
    TF_CHECK(has_problem(x, "build/evil.xml: a symbolic link: not followed"));
    TF_CHECK(has_problem(x, "reports: a symbolic link: not followed"));
    TF_CHECK(has_problem(x, "build/linkdir: a symbolic link: not followed"));
    TF_CHECK(has_problem(x, "none/*.xml: no file matched"));
    tf_stepres_free(x);

    /* A step directory that is itself a link out is not entered. */
    snprintf(path, sizeof path, "%s/out", root);
    TF_CHECK_INT(symlink(outside, path), 0);
    const char *any[] = {"*.xml"};
    x = run_spec(TF_TR_FMT_JUNIT, any, 1, "out", NULL);
    TF_CHECK_INT(tf_tr_collect_count(tf_stepres_collected(x)), 0);
    TF_CHECK(has_problem(x, "cannot open the step's directory \"out\""));
    tf_stepres_free(x);
    teardown();
}

TF_TEST(oversized_and_malformed_reports)
{
    setup();
    put("r/good.xml", "<testsuite>" CASE("fine", "G") "</testsuite>");
    put("r/bad.xml", "<testsuite>\n<testcase name=\"a\">\n</testsuite>\n");
    put("r/doctype.xml", "<!DOCTYPE x [<!ENTITY a \"b\">]><x/>");
    char path[1024];
    snprintf(path, sizeof path, "%s/r/huge.xml", root);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    TF_CHECK(fd >= 0);
    TF_CHECK_INT(ftruncate(fd, (off_t)TF_STEPRES_FILE_MAX + 1), 0);
    close(fd);
    const char *files[] = {"r/*.xml"};
    tf_stepres_t *x = run_spec(TF_TR_FMT_JUNIT, files, 1, "", NULL);
    TF_CHECK(find(x, "G", "fine") != NULL);
    TF_CHECK(has_problem(x, "r/bad.xml: not well-formed XML at line 3: "
                            "</testsuite> does not close <testcase>"));
    TF_CHECK(has_problem(x, "r/doctype.xml: not well-formed XML at line 1: "
                            "a DOCTYPE with an internal subset"));
    TF_CHECK(has_problem(x, "r/huge.xml: 33554433 bytes is over the "
                            "33554432-byte cap for a report file: not read"));
    tf_stepres_free(x);
    teardown();
}

TF_TEST(tap_files_and_automake_logs)
{
    setup();
    put("t/one.tap", "1..2\nok 1 - a\nnot ok 2 - b\n# got 3\n");
    const char *files[] = {"t/*.tap"};
    /* With files, TAP comes from the files, not the output. */
    tf_stepres_t *x = run_spec(TF_TR_FMT_TAP, files, 1, "",
                               "ok 1 - from the console\n");
    const tf_tr_entry_t *e = find(x, "t/one.tap", "2 - b");
    TF_CHECK(e && e->status == TF_TR_FAIL && e->message &&
             strcmp(e->message, "got 3") == 0);
    TF_CHECK(find(x, "", "1 - from the console") == NULL);
    tf_stepres_free(x);

    /* make check in sub/, which names its log; and a log outside. */
    put("sub/test-suite.log", "FAIL: t_fail\n============\n\n"
        "t.c:7: wrong\nFAIL t_fail.sh (exit status: 1)\n\n");
    char out[2048];
    snprintf(out, sizeof out,
             "make[1]: Entering directory '%s/sub'\n"
             "FAIL: t_fail.sh\n"
             "See sub/test-suite.log\n"
             "make[1]: Entering directory '/etc'\n"
             "See ./test-suite.log\n", root);
    x = run_spec(TF_TR_FMT_AUTOMAKE, NULL, 0, "", out);
    e = find(x, "", "t_fail.sh");
    TF_CHECK(e && e->status == TF_TR_FAIL && e->message &&
             strcmp(e->message, "t.c:7: wrong") == 0);
    TF_CHECK(e && e->log.has && e->log.line == 2);
    TF_CHECK(has_problem(x, "the output names /etc/./test-suite.log, which "
                            "is not inside the workdir: not read"));
    tf_stepres_free(x);
    teardown();
}

typedef struct {
    size_t messages, results, lasts;
    uint64_t total;
    bool bad;
} sink_t;

static void sink_cb(void *arg, tf_msg_t *m)
{
    sink_t *s = arg;
    char *text = NULL;
    size_t len = 0;
    tf_msg_t back;
    char err[256];
    m->u.test_results.seq = s->messages + 1; /* as the slave numbers it */
    if (tf_msg_encode(m, &text, &len) != 0 ||
        len > TF_PROTO_MAX_RESULTS_TEXT ||
        tf_msg_decode(text, len, &back, err, sizeof err) != 0) {
        s->bad = true;
        free(text);
        return;
    }
    s->messages++;
    s->results += back.u.test_results.nresults;
    if (back.u.test_results.last) {
        s->lasts++;
        s->total = back.u.test_results.total;
    } else if (s->lasts) {
        s->bad = true; /* nothing after the last one */
    }
    tf_msg_clear(&back);
    free(text);
}

TF_TEST(many_results_are_batched_under_the_cap)
{
    /* 3000 failing TAP points with 3 KiB of diagnostics each: about 9 MB
     * of results, which must go out in messages of at most 64 KiB. */
    setup();
    size_t cap = 3000 * 3200 + 64;
    char *out = malloc(cap);
    size_t o = 0;
    char diag[3001];
    memset(diag, 'd', 3000);
    diag[3000] = '\0';
    for (int i = 1; i <= 3000; i++)
        o += (size_t)snprintf(out + o, cap - o, "not ok %d - t%d\n# %s\n", i,
                              i, diag);
    tf_stepres_t *x = run_spec(TF_TR_FMT_TAP, NULL, 0, "", out);
    free(out);
    sink_t s = {0};
    size_t n = tf_stepres_emit(x, 7, 2, sink_cb, &s);
    TF_CHECK(!s.bad);
    TF_CHECK_INT(n, s.messages);
    TF_CHECK(s.messages >= 3000 * 3000 / TF_PROTO_MAX_RESULTS_TEXT);
    TF_CHECK_INT(s.results, 3000);
    TF_CHECK_INT(s.lasts, 1);
    TF_CHECK_INT(s.total, 3000);
    tf_stepres_free(x);

    /* No results at all: still one (empty) last message. */
    x = run_spec(TF_TR_FMT_CTEST, NULL, 0, "", "nothing here\n");
    sink_t z = {0};
    TF_CHECK_INT(tf_stepres_emit(x, 7, 0, sink_cb, &z), 1);
    TF_CHECK(!z.bad && z.lasts == 1 && z.results == 0);
    char sum[160];
    tf_stepres_summary(x, sum, sizeof sum);
    TF_CHECK_STR(sum, "0 tests: 0 pass, 0 fail, 0 flaky, 0 skip; 0 problems");
    tf_stepres_free(x);
    teardown();
}

TF_TEST_MAIN()
