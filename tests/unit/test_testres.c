/*
 * test_testres.c - the test-result parsers (common/testres) on real
 * runners' output: every fixture in tests/unit/fixtures/testres was
 * produced by the runner it is named after (ctest 3.25, GoogleTest 1.12,
 * pytest 7.2 with pytest-rerunfailures, Python 3.11 unittest, automake
 * 1.16, Perl's Test::More, node's test runner), from small projects with
 * one failing assertion and one flaky test each. Every console fixture is
 * also fed in 1- and 7-byte pieces and split over two streams, which must
 * not change a result.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testres.h"
#include "tf_err.h"
#include "tf_test.h"

#ifndef TF_FIXTURES
#error "TF_FIXTURES must name tests/unit/fixtures/testres"
#endif

static char *slurp(const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", TF_FIXTURES, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open fixture %s\n", path);
        abort();
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
        abort();
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Feeds buf through a console parser in pieces of chunk bytes. */
static tf_tr_collect_t *parse_buf(tf_tr_format_t fmt, const char *buf,
                                  size_t len, size_t chunk)
{
    tf_tr_collect_t *c = NULL;
    tf_tr_console_t *k = NULL;
    TF_CHECK_INT(tf_tr_collect_new(&c), 0);
    TF_CHECK_INT(tf_tr_console_new(fmt, tf_tr_collect_add, c, &k), 0);
    for (size_t i = 0; i < len; i += chunk)
        tf_tr_console_feed(k, 1, (const uint8_t *)buf + i,
                           len - i < chunk ? len - i : chunk);
    tf_tr_console_finish(k);
    tf_tr_console_free(k);
    return c;
}

static tf_tr_collect_t *parse_fixture(tf_tr_format_t fmt, const char *name)
{
    size_t len;
    char *buf = slurp(name, &len);
    tf_tr_collect_t *c = parse_buf(fmt, buf, len, len ? len : 1);
    free(buf);
    return c;
}

static const tf_tr_entry_t *find(const tf_tr_collect_t *c, const char *suite,
                                 const char *name)
{
    for (size_t i = 0; i < tf_tr_collect_count(c); i++) {
        const tf_tr_entry_t *e = tf_tr_collect_get(c, i);
        if (strcmp(e->suite, suite) == 0 && strcmp(e->name, name) == 0)
            return e;
    }
    fprintf(stderr, "no result %s :: %s\n", suite, name);
    return NULL;
}

/* A result with its status, attempts and (when want_msg) a message that
 * contains want_msg. */
#define CHECK_RES(c, suite, name, st, att, want_msg)                           \
    do {                                                                       \
        const tf_tr_entry_t *e_ = find((c), (suite), (name));                  \
        TF_CHECK(e_ != NULL);                                                  \
        if (e_) {                                                              \
            TF_CHECK_STR(tf_tr_status_name(e_->status), (st));                 \
            TF_CHECK_INT(e_->attempts, (att));                                 \
            const char *w_ = (want_msg);                                       \
            if (w_ && (!e_->message || !strstr(e_->message, w_))) {            \
                fprintf(stderr, "%s:%d: message of %s: \"%s\"\n", __FILE__,    \
                        __LINE__, (name),                                      \
                        e_->message ? e_->message : "(null)");                 \
                tf__failed_checks++;                                           \
            }                                                                  \
        }                                                                      \
    } while (0)

/* The log position of a result points at text that starts with want. */
static void check_loc(const char *fixture, const tf_tr_entry_t *e,
                      uint64_t line, uint64_t lines, const char *want)
{
    size_t len;
    char *buf = slurp(fixture, &len);
    TF_CHECK(e && e->log.has);
    if (e && e->log.has) {
        TF_CHECK_INT(e->log.line, line);
        TF_CHECK_INT(e->log.lines, lines);
        TF_CHECK(e->log.offset < len);
        /* The offset is the first byte of that line. */
        uint64_t nl = 0;
        for (size_t i = 0; i < e->log.offset && i < len; i++)
            nl += buf[i] == '\n';
        TF_CHECK_INT(nl + 1, line);
        TF_CHECK(e->log.offset == 0 || buf[e->log.offset - 1] == '\n');
        if (strncmp(buf + e->log.offset, want, strlen(want)) != 0) {
            fprintf(stderr, "log of %s starts \"%.60s\"\n", e->name,
                    buf + e->log.offset);
            tf__failed_checks++;
        }
    }
    free(buf);
}

/* Same results whatever the pieces: compares two collectors. */
static void check_same(const tf_tr_collect_t *a, const tf_tr_collect_t *b)
{
    TF_CHECK_INT(tf_tr_collect_count(a), tf_tr_collect_count(b));
    for (size_t i = 0; i < tf_tr_collect_count(a) &&
                       i < tf_tr_collect_count(b); i++) {
        const tf_tr_entry_t *x = tf_tr_collect_get(a, i);
        const tf_tr_entry_t *y = tf_tr_collect_get(b, i);
        TF_CHECK_STR(x->name, y->name);
        TF_CHECK_STR(x->suite, y->suite);
        TF_CHECK_INT(x->status, y->status);
        TF_CHECK_INT(x->attempts, y->attempts);
        TF_CHECK_INT(x->log.offset, y->log.offset);
        TF_CHECK_INT(x->log.line, y->log.line);
        TF_CHECK_INT(x->log.lines, y->log.lines);
        TF_CHECK((!x->message && !y->message) ||
                 (x->message && y->message &&
                  strcmp(x->message, y->message) == 0));
    }
}

static void check_split_independent(tf_tr_format_t fmt, const char *name)
{
    size_t len;
    char *buf = slurp(name, &len);
    tf_tr_collect_t *whole = parse_buf(fmt, buf, len, len);
    tf_tr_collect_t *ones = parse_buf(fmt, buf, len, 1);
    tf_tr_collect_t *sevens = parse_buf(fmt, buf, len, 7);
    check_same(whole, ones);
    check_same(whole, sevens);
    tf_tr_collect_free(whole);
    tf_tr_collect_free(ones);
    tf_tr_collect_free(sevens);
    free(buf);
}

/* ---- ctest ---- */

TF_TEST(ctest_repeat_until_pass_gives_flaky_and_failing)
{
    const char *fx = "ctest_repeat.txt";
    tf_tr_collect_t *c = parse_fixture(TF_TR_FMT_CTEST, fx);
    TF_CHECK_INT(tf_tr_collect_count(c), 4);
    CHECK_RES(c, "", "test_pack", "fail", 2,
              "/tmp/samples/cproj/test_pack.c:6: json_pack integer failed");
    CHECK_RES(c, "", "test_flaky", "flaky", 2,
              "test_flaky.c:6: first run fails");
    CHECK_RES(c, "", "test_ok", "pass", 1, NULL);
    CHECK_RES(c, "", "test_skip", "skip", 1, NULL);
    const tf_tr_entry_t *e = find(c, "", "test_pack");
    TF_CHECK_STR(e ? e->outcome : NULL, "Failed");
    TF_CHECK_INT(e ? e->duration_ms : -2, 0);
    /* The first failure's lines: the result line and the output after it
     * (--output-on-failure). */
    check_loc(fx, e, 3, 3, "1/4 Test #1: test_pack ....");
    check_loc(fx, find(c, "", "test_flaky"), 15, 2, "3/4 Test #3: test_flaky");
    TF_CHECK(find(c, "", "test_ok") && !find(c, "", "test_ok")->message);
    tf_tr_collect_free(c);
    check_split_independent(TF_TR_FMT_CTEST, fx);
}

TF_TEST(ctest_verbose_and_parallel)
{
    tf_tr_collect_t *c = parse_fixture(TF_TR_FMT_CTEST, "ctest_verbose.txt");
    CHECK_RES(c, "", "test_pack", "fail", 1, "json_pack integer failed");
    /* -V metadata lines are not the test's output. */
    const tf_tr_entry_t *e = find(c, "", "test_pack");
    TF_CHECK(e && e->message && !strstr(e->message, "Test command"));
    TF_CHECK_STR(e ? e->message : NULL, "testing json_pack\n"
                 "/tmp/samples/cproj/test_pack.c:6: json_pack integer failed");
    CHECK_RES(c, "", "test_flaky", "fail", 1, "first run fails");
    CHECK_RES(c, "", "test_skip", "skip", 1, NULL);
    tf_tr_collect_free(c);
    check_split_independent(TF_TR_FMT_CTEST, "ctest_verbose.txt");
    c = parse_fixture(TF_TR_FMT_CTEST, "ctest_j2.txt");
    TF_CHECK_INT(tf_tr_collect_count(c), 4);
    CHECK_RES(c, "", "test_pack", "fail", 1, "json_pack integer failed");
    CHECK_RES(c, "", "test_flaky", "fail", 1, "first run fails");
    e = find(c, "", "test_flaky");
    /* Under -j, "Start 2" between two failures ends the first's output. */
    TF_CHECK(e && e->message && !strstr(e->message, "Start"));
    tf_tr_collect_free(c);
}

TF_TEST(ctest_odd_status_words)
{
    const char *out =
        "    Start 1: crash\n"
        "1/5 Test #1: crash ............................***Exception: SegFault"
        "  0.01 sec\n"
        "2/5 Test #2: slow .............................***Timeout   1.50 sec\n"
        "3/5 Test #3: gone .............................***Not Run   0.00 sec\n"
        "4/5 Test #4: off ..............................***Not Run (Disabled) "
        "  0.00 sec\n"
        "5/5 Test #5: a_test_name_longer_than_the_column_itself_is***Failed  "
        "0.20 sec\n";
    tf_tr_collect_t *c = parse_buf(TF_TR_FMT_CTEST, out, strlen(out), 5);
    CHECK_RES(c, "", "crash", "fail", 1, NULL);
    TF_CHECK_STR(find(c, "", "crash") ? find(c, "", "crash")->outcome : NULL,
                 "Exception: SegFault");
    CHECK_RES(c, "", "slow", "fail", 1, NULL);
    TF_CHECK_INT(find(c, "", "slow") ? find(c, "", "slow")->duration_ms : 0,
                 1500);
    CHECK_RES(c, "", "gone", "fail", 1, NULL);
    CHECK_RES(c, "", "off", "skip", 1, NULL);
    CHECK_RES(c, "", "a_test_name_longer_than_the_column_itself_is", "fail", 1,
              NULL);
    tf_tr_collect_free(c);
}

/* ---- GoogleTest ---- */

TF_TEST(gtest_plain_and_repeat)
{
    tf_tr_collect_t *c = parse_fixture(TF_TR_FMT_GTEST, "gtest.txt");
    TF_CHECK_INT(tf_tr_collect_count(c), 6);
    CHECK_RES(c, "Pack", "Integer", "fail", 1, "t.cc:4: Failure\n");
    CHECK_RES(c, "Pack", "Integer", "fail", 1, "json_pack integer failed");
    CHECK_RES(c, "Pack", "Ok", "pass", 1, NULL);
    CHECK_RES(c, "Pack", "Skipped", "skip", 1, NULL);
    CHECK_RES(c, "Flaky", "SecondTime", "fail", 1, "first call fails");
    CHECK_RES(c, "Nums/Param", "Even/1", "fail", 1, "GetParam() % 2");
    /* The summary's "[  FAILED  ] Pack.Integer" is not another run. */
    check_loc("gtest.txt", find(c, "Pack", "Integer"), 6, 7, "t.cc:4: Failure");
    tf_tr_collect_free(c);
    check_split_independent(TF_TR_FMT_GTEST, "gtest.txt");

    c = parse_fixture(TF_TR_FMT_GTEST, "gtest_repeat.txt");
    CHECK_RES(c, "Flaky", "SecondTime", "flaky", 2, "first call fails");
    CHECK_RES(c, "Pack", "Integer", "fail", 2, "json_pack integer failed");
    CHECK_RES(c, "Pack", "Ok", "pass", 2, NULL);
    tf_tr_collect_free(c);
}

TF_TEST(gtest_crash_and_ctest_prefix)
{
    const char *out = "3: [ RUN      ] Pack.Ok\n"
                      "3: [       OK ] Pack.Ok (12 ms)\n"
                      "[ RUN      ] Pack.Crash\n"
                      "about to crash\n";
    tf_tr_collect_t *c = parse_buf(TF_TR_FMT_GTEST, out, strlen(out), 3);
    CHECK_RES(c, "Pack", "Ok", "pass", 1, NULL);
    TF_CHECK_INT(find(c, "Pack", "Ok") ? find(c, "Pack", "Ok")->duration_ms
                                       : 0, 12);
    CHECK_RES(c, "Pack", "Crash", "fail", 1, "about to crash");
    TF_CHECK_STR(find(c, "Pack", "Crash") ? find(c, "Pack", "Crash")->outcome
                                          : NULL, "crashed");
    tf_tr_collect_free(c);
}

/* ---- pytest ---- */

TF_TEST(pytest_verbose)
{
    const char *fx = "pytest_v.txt";
    tf_tr_collect_t *c = parse_fixture(TF_TR_FMT_PYTEST, fx);
    TF_CHECK_INT(tf_tr_collect_count(c), 10);
    CHECK_RES(c, "test_calc.py", "test_add", "pass", 1, NULL);
    CHECK_RES(c, "test_calc.py", "test_pack_integer", "fail", 1,
              "AssertionError: json_pack integer failed\nassert 3 == 2\n"
              "test_calc.py:9: AssertionError");
    CHECK_RES(c, "test_calc.py", "test_skipped", "skip", 1, NULL);
    CHECK_RES(c, "test_calc.py", "test_known_bug", "skip", 1, NULL);
    CHECK_RES(c, "test_calc.py", "test_xpass", "pass", 1, NULL);
    CHECK_RES(c, "test_calc.py", "test_param[2]", "fail", 1, "assert 2 == 1");
    CHECK_RES(c, "test_calc.py::TestGroup", "test_method", "fail", 1,
              "ValueError: boom");
    CHECK_RES(c, "test_calc.py", "test_error", "fail", 1,
              "RuntimeError: fixture broke");
    TF_CHECK_STR(find(c, "test_calc.py", "test_known_bug")->outcome, "XFAIL");
    TF_CHECK_STR(find(c, "test_calc.py", "test_error")->outcome, "ERROR");
    /* The failure block in FAILURES, not the verbose line. */
    check_loc(fx, find(c, "test_calc.py", "test_pack_integer"), 27, 9,
              "______________________________ test_pack_integer");
    tf_tr_collect_free(c);
    check_split_independent(TF_TR_FMT_PYTEST, fx);
}

TF_TEST(pytest_default_names_only_failures)
{
    tf_tr_collect_t *c = parse_fixture(TF_TR_FMT_PYTEST, "pytest_default.txt");
    TF_CHECK_INT(tf_tr_collect_count(c), 5);
    CHECK_RES(c, "test_calc.py", "test_pack_integer", "fail", 1,
              "json_pack integer failed");
    CHECK_RES(c, "test_calc.py", "test_error", "fail", 1, "fixture broke");
    check_loc("pytest_default.txt", find(c, "test_calc.py", "test_flaky"), 49,
              11, "__________________________________ test_flaky");
    tf_tr_collect_free(c);
}

TF_TEST(pytest_rerun_gives_flaky)
{
    tf_tr_collect_t *c = parse_fixture(TF_TR_FMT_PYTEST, "pytest_rerun.txt");
    CHECK_RES(c, "test_calc.py", "test_flaky", "flaky", 2, NULL);
    CHECK_RES(c, "test_calc.py", "test_pack_integer", "fail", 2,
              "json_pack integer failed");
    CHECK_RES(c, "test_calc.py", "test_add", "pass", 1, NULL);
    tf_tr_collect_free(c);
}

TF_TEST(pytest_xdist_lines)
{
    const char *out = "[gw0] [ 50%] PASSED test_a.py::test_one \n"
                      "[gw1] [100%] FAILED test_a.py::T::test_two[x y] \n";
    tf_tr_collect_t *c = parse_buf(TF_TR_FMT_PYTEST, out, strlen(out), 4);
    CHECK_RES(c, "test_a.py", "test_one", "pass", 1, NULL);
    CHECK_RES(c, "test_a.py::T", "test_two[x y]", "fail", 1, NULL);
    tf_tr_collect_free(c);
}

/* ---- unittest ---- */

TF_TEST(unittest_verbose)
{
    const char *fx = "unittest_v.txt";
    tf_tr_collect_t *c = parse_fixture(TF_TR_FMT_UNITTEST, fx);
    TF_CHECK_INT(tf_tr_collect_count(c), 8);
    CHECK_RES(c, "test_m.TestCalc", "test_add", "pass", 1, NULL);
    /* A docstring line and output before the verdict. */
    CHECK_RES(c, "test_m.TestCalc", "test_docstring", "pass", 1, NULL);
    CHECK_RES(c, "test_m.TestCalc", "test_pack_integer", "fail", 1,
              "AssertionError: 3 != 2 : json_pack integer failed");
    CHECK_RES(c, "test_m.TestCalc", "test_pack_integer", "fail", 1,
              "test_m.py\", line 9, in test_pack_integer");
    CHECK_RES(c, "test_m.TestCalc", "test_error", "fail", 1,
              "RuntimeError: boom");
    CHECK_RES(c, "test_m.TestCalc", "test_skipped", "skip", 1, NULL);
    CHECK_RES(c, "test_m.TestCalc", "test_known_bug", "skip", 1, NULL);
    CHECK_RES(c, "test_m.TestCalc", "test_xpass", "fail", 1, NULL);
    CHECK_RES(c, "test_m.TestCalc", "test_sub (i=2)", "fail", 1,
              "AssertionError: 2 not less than 2");
    const tf_tr_entry_t *e = find(c, "test_m.TestCalc", "test_xpass");
    TF_CHECK(e && e->message == NULL); /* no traceback for it */
    check_loc(fx, find(c, "test_m.TestCalc", "test_pack_integer"), 22, 7,
              "FAIL: test_pack_integer");
    tf_tr_collect_free(c);
    check_split_independent(TF_TR_FMT_UNITTEST, fx);
}

TF_TEST(unittest_default_and_old_python)
{
    tf_tr_collect_t *c = parse_fixture(TF_TR_FMT_UNITTEST,
                                       "unittest_default.txt");
    TF_CHECK_INT(tf_tr_collect_count(c), 4);
    CHECK_RES(c, "test_m.TestCalc", "test_pack_integer", "fail", 1,
              "json_pack integer failed");
    tf_tr_collect_free(c);
    /* Python <= 3.10 names the class only. */
    const char *out = "test_a (pkg.mod.T) ... ok\ntest_b (pkg.mod.T) ... FAIL\n";
    c = parse_buf(TF_TR_FMT_UNITTEST, out, strlen(out), 2);
    CHECK_RES(c, "pkg.mod.T", "test_a", "pass", 1, NULL);
    CHECK_RES(c, "pkg.mod.T", "test_b", "fail", 1, NULL);
    tf_tr_collect_free(c);
}

/* ---- automake ---- */

TF_TEST(automake_console_and_log)
{
    tf_tr_collect_t *c = NULL;
    tf_tr_console_t *k = NULL;
    size_t len;
    char *buf = slurp("automake_check.txt", &len);
    TF_CHECK_INT(tf_tr_collect_new(&c), 0);
    TF_CHECK_INT(tf_tr_console_new(TF_TR_FMT_AUTOMAKE, tf_tr_collect_add, c,
                                   &k), 0);
    tf_tr_console_feed(k, 1, (const uint8_t *)buf, len);
    /* A sanitizer line is not a test. */
    const char *asan = "ERROR: AddressSanitizer: heap-use-after-free on "
                       "address 0x6020\n";
    tf_tr_console_feed(k, 2, (const uint8_t *)asan, strlen(asan));
    tf_tr_console_finish(k);
    const char *dir = NULL;
    TF_CHECK_STR(tf_tr_console_hint(k, 0, &dir), "./test-suite.log");
    TF_CHECK_STR(dir, "/tmp/samples/am");
    TF_CHECK(tf_tr_console_hint(k, 1, &dir) == NULL);
    tf_tr_console_free(k);
    free(buf);
    TF_CHECK_INT(tf_tr_collect_count(c), 9);
    CHECK_RES(c, "", "t_pass.sh", "pass", 1, NULL);
    CHECK_RES(c, "", "t_fail.sh", "fail", 1, NULL);
    CHECK_RES(c, "", "t_skip.sh", "skip", 1, NULL);
    CHECK_RES(c, "", "t_xfail.sh", "skip", 1, NULL);
    CHECK_RES(c, "", "t_error.sh", "fail", 1, NULL);
    CHECK_RES(c, "", "t_xpass.sh", "fail", 1, NULL);
    CHECK_RES(c, "t_tap.tap", "2 - second", "fail", 1, NULL);
    CHECK_RES(c, "t_tap.tap", "3 - third", "skip", 1, NULL);
    check_loc("automake_check.txt", find(c, "", "t_fail.sh"), 5, 1,
              "FAIL: t_fail.sh");
    /* test-suite.log adds the failing tests' output, not new runs. */
    buf = slurp("automake_test-suite.log", &len);
    TF_CHECK_INT(tf_tr_automake_log_parse(buf, len, tf_tr_collect_add, c), 0);
    free(buf);
    TF_CHECK_INT(tf_tr_collect_count(c), 9);
    CHECK_RES(c, "", "t_fail.sh", "fail", 1,
              "test_pack.c:89: json_pack integer failed");
    CHECK_RES(c, "", "t_error.sh", "fail", 1, "hard error");
    const tf_tr_entry_t *e = find(c, "", "t_fail.sh");
    TF_CHECK_STR(e ? e->message : NULL,
                 "test_pack.c:89: json_pack integer failed");
    TF_CHECK(e && e->log.has && e->log.line == 5);
    tf_tr_collect_free(c);
    check_split_independent(TF_TR_FMT_AUTOMAKE, "automake_check.txt");
}

/* ---- TAP ---- */

TF_TEST(tap_perl_and_node)
{
    tf_tr_collect_t *c = parse_fixture(TF_TR_FMT_TAP, "tap_perl.txt");
    TF_CHECK_INT(tf_tr_collect_count(c), 7);
    CHECK_RES(c, "", "1 - first", "pass", 1, NULL);
    CHECK_RES(c, "", "2 - json_pack integer", "fail", 1,
              "Failed test 'json_pack integer'\nat t.pl line 3.");
    CHECK_RES(c, "", "3", "skip", 1, NULL);
    CHECK_RES(c, "", "4 - todo test", "skip", 1, NULL);
    CHECK_RES(c, "group", "2 - inner bad", "fail", 1, "at t.pl line 6.");
    CHECK_RES(c, "", "5 - group", "fail", 1, NULL);
    check_loc("tap_perl.txt", find(c, "", "2 - json_pack integer"), 2, 5,
              "not ok 2 - json_pack integer");
    tf_tr_collect_free(c);
    check_split_independent(TF_TR_FMT_TAP, "tap_perl.txt");

    c = parse_fixture(TF_TR_FMT_TAP, "tap_node.txt");
    TF_CHECK_INT(tf_tr_collect_count(c), 5);
    CHECK_RES(c, "", "2 - packs integer", "fail", 1,
              "json_pack integer failed");
    CHECK_RES(c, "", "2 - packs integer", "fail", 1,
              "location: '/tmp/samples/tap/t.test.mjs:4:1'");
    CHECK_RES(c, "", "3 - skipped", "skip", 1, NULL);
    CHECK_RES(c, "group", "1 - inner", "pass", 1, NULL);
    TF_CHECK_INT(find(c, "", "1 - adds")->duration_ms, 1);
    tf_tr_collect_free(c);
}

TF_TEST(tap_bail_out_and_file_mode)
{
    const char *out = "TAP version 14\n1..3\nok 1 - a\n"
                      "ok 2 - b # todo not yet\nBail out! database gone\n";
    tf_tr_collect_t *c = NULL;
    tf_tr_console_t *k = NULL;
    TF_CHECK_INT(tf_tr_collect_new(&c), 0);
    TF_CHECK_INT(tf_tr_console_new(TF_TR_FMT_TAP, tf_tr_collect_add, c, &k),
                 0);
    TF_CHECK_INT(tf_tr_console_file_mode(k, "t/db.tap"), 0);
    tf_tr_console_feed(k, 1, (const uint8_t *)out, strlen(out));
    tf_tr_console_finish(k);
    tf_tr_console_free(k);
    CHECK_RES(c, "t/db.tap", "1 - a", "pass", 1, NULL);
    CHECK_RES(c, "t/db.tap", "2 - b", "pass", 1, NULL);
    CHECK_RES(c, "t/db.tap", "Bail out!", "fail", 1, "database gone");
    /* Files have no place in the step's log. */
    TF_CHECK(!find(c, "t/db.tap", "1 - a")->log.has);
    tf_tr_collect_free(c);
}

/* ---- JUnit ---- */

static tf_tr_collect_t *junit(const char *text, size_t len, int want_rc,
                              const char *want_err)
{
    tf_tr_collect_t *c = NULL;
    char err[512];
    TF_CHECK_INT(tf_tr_collect_new(&c), 0);
    int rc = tf_tr_junit_parse(text, len, "r.xml", tf_tr_collect_add, c, err,
                               sizeof err);
    TF_CHECK_INT(rc, want_rc);
    if (want_err && strncmp(err, want_err, strlen(want_err)) != 0) {
        fprintf(stderr, "junit error: \"%s\"\n  wanted: \"%s\"\n", err,
                want_err);
        tf__failed_checks++;
    }
    return c;
}

static tf_tr_collect_t *junit_fixture(const char *name)
{
    size_t len;
    char *buf = slurp(name, &len);
    tf_tr_collect_t *c = junit(buf, len, 0, NULL);
    free(buf);
    return c;
}

TF_TEST(junit_real_reports)
{
    tf_tr_collect_t *c = junit_fixture("junit_gtest.xml");
    TF_CHECK_INT(tf_tr_collect_count(c), 6);
    CHECK_RES(c, "Pack", "Integer", "fail", 1,
              "t.cc:4\nExpected equality of these values:");
    /* GoogleTest repeats the message in the attribute and the body. */
    const tf_tr_entry_t *e = find(c, "Pack", "Integer");
    TF_CHECK(e && e->message && !strstr(strstr(e->message, "failed") + 1,
                                         "json_pack integer failed"));
    CHECK_RES(c, "Pack", "Skipped", "skip", 1, NULL);
    CHECK_RES(c, "Nums/Param", "Even/0", "pass", 1, NULL);
    tf_tr_collect_free(c);

    c = junit_fixture("junit_pytest.xml");
    TF_CHECK_INT(tf_tr_collect_count(c), 10);
    CHECK_RES(c, "test_calc", "test_pack_integer", "fail", 1,
              "AssertionError: json_pack integer failed");
    CHECK_RES(c, "test_calc", "test_pack_integer", "fail", 1,
              "test_calc.py:9: AssertionError");
    CHECK_RES(c, "test_calc", "test_known_bug", "skip", 1, NULL);
    TF_CHECK_STR(find(c, "test_calc", "test_known_bug")->outcome, "xfail");
    CHECK_RES(c, "test_calc", "test_error", "fail", 1, "fixture broke");
    CHECK_RES(c, "test_calc.TestGroup", "test_method", "fail", 1, "boom");
    tf_tr_collect_free(c);

    c = junit_fixture("junit_ctest.xml");
    CHECK_RES(c, "test_pack", "test_pack", "fail", 1,
              "test_pack.c:6: json_pack integer failed");
    CHECK_RES(c, "test_skip", "test_skip", "skip", 1, NULL);
    tf_tr_collect_free(c);

    c = junit_fixture("junit_surefire.xml");
    CHECK_RES(c, "org.example.PackTest", "packsInteger", "fail", 2,
              "PackTest.java:89");
    CHECK_RES(c, "org.example.PackTest", "flakyNetwork", "flaky", 2,
              "connection reset");
    CHECK_RES(c, "org.example.PackTest", "ignored", "skip", 1, NULL);
    CHECK_RES(c, "org.example.PackTest",
              "unicode \xc3\xa9\xf0\x9f\x98\x80 & <tag>", "pass", 1, NULL);
    TF_CHECK_INT(find(c, "org.example.PackTest", "flakyNetwork")->duration_ms,
                 20);
    tf_tr_collect_free(c);
}

TF_TEST(junit_malformed_is_an_error_with_a_line)
{
    static const struct {
        const char *xml;
        const char *err;
    } bad[] = {
        {"<testsuite><testcase name=\"a\"></testsuite>",
         "r.xml: not well-formed XML at line 1: </testsuite> does not close "
         "<testcase>"},
        {"<testsuite>\n<testcase name=\"a\">\n",
         "r.xml: not well-formed XML at line 3: the document ends inside "
         "<testcase> (truncated?)"},
        {"<testsuite name=\"&xxe;\"/>",
         "r.xml: not well-formed XML at line 1: undefined entity &xxe;"},
        {"<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n"
         " <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n]>\n"
         "<lolz>&lol2;</lolz>",
         "r.xml: not well-formed XML at line 2: a DOCTYPE with an internal "
         "subset (entity declarations) is refused"},
        {"<a b=\"1\" b=\"2\"/>",
         "r.xml: not well-formed XML at line 1: attribute b given twice"},
        {"<a/><b/>",
         "r.xml: not well-formed XML at line 1: a second root element <b>"},
        {"junk<a/>",
         "r.xml: not well-formed XML at line 1: text outside the root"},
        {"<a b=\"<\"/>",
         "r.xml: not well-formed XML at line 1: '<' in an attribute value"},
        {"<a>&#0;</a>",
         "r.xml: not well-formed XML at line 1: character reference to a "
         "character XML does not allow"},
        {"", "r.xml: not well-formed XML at line 1: no root element"},
        {"<a><!-- never closed </a>",
         "r.xml: not well-formed XML at line 1: unterminated comment"},
        {"\x01\x02\xff\xfe binary", "r.xml: not well-formed XML at line 1: "
         "text outside the root element"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tf_tr_collect_t *c = junit(bad[i].xml, strlen(bad[i].xml), TF_EINVAL,
                                   bad[i].err);
        tf_tr_collect_free(c);
    }
    /* Nesting is capped (no recursion, but no unbounded stack either). */
    char deep[64 * 3 + 70 * 4 + 16];
    size_t o = 0;
    for (int i = 0; i < 70; i++)
        o += (size_t)snprintf(deep + o, sizeof deep - o, "<a>");
    tf_tr_collect_t *c = junit(deep, o, TF_EINVAL,
                               "r.xml: not well-formed XML at line 1: "
                               "elements nested deeper than 64");
    tf_tr_collect_free(c);
    /* Results before the problem are kept. */
    const char *cut = "<testsuite name=\"s\"><testcase name=\"ok\"/>"
                      "<testcase name=\"cut\"><failure>boo";
    c = junit(cut, strlen(cut), TF_EINVAL, NULL);
    CHECK_RES(c, "s", "ok", "pass", 1, NULL);
    TF_CHECK_INT(tf_tr_collect_count(c), 1);
    tf_tr_collect_free(c);
}

/* ---- the collector and the console layer ---- */

TF_TEST(collector_merges_caps_and_cleans)
{
    tf_tr_collect_t *c = NULL;
    TF_CHECK_INT(tf_tr_collect_new(&c), 0);
    tf_tr_res_t r = {.suite = "s", .name = "t", .status = TF_TR_PASS,
                     .duration_ms = -1};
    tf_tr_collect_add(c, TF_TR_ATTEMPT, &r);
    r.status = TF_TR_FAIL;
    r.message = "first failure";
    tf_tr_collect_add(c, TF_TR_ATTEMPT, &r);
    CHECK_RES(c, "s", "t", "flaky", 2, "first failure");
    /* A detail fills in, it does not count. */
    r.message = "later";
    tf_tr_collect_add(c, TF_TR_DETAIL, &r);
    CHECK_RES(c, "s", "t", "flaky", 2, "first failure");
    /* Invalid UTF-8 and control bytes are cleaned; names stay one line. */
    tf_tr_res_t bad = {.suite = "", .name = "a\xff\x01" "b\nc",
                       .status = TF_TR_FAIL, .duration_ms = -1,
                       .message = "x\ty\nz\x1b[31m"};
    tf_tr_collect_add(c, TF_TR_ATTEMPT, &bad);
    CHECK_RES(c, "", "a\xef\xbf\xbd\xef\xbf\xbd" "b c", "fail", 1,
              "x\ty\nz\xef\xbf\xbd[31m");
    /* Every byte invalid: each grows to U+FFFD's three bytes, cut at the
     * cap on a character boundary (the fuzzers found the buffer short). */
    char ff[2000];
    memset(ff, 0xff, sizeof ff - 1);
    ff[sizeof ff - 1] = '\0';
    tf_tr_res_t wide = {.suite = ff, .name = "wide", .status = TF_TR_FAIL,
                        .duration_ms = -1, .message = ff};
    tf_tr_collect_add(c, TF_TR_ATTEMPT, &wide);
    const tf_tr_entry_t *w = tf_tr_collect_get(c, 2);
    TF_CHECK(w && strlen(w->suite) == 1023 && strlen(w->message) == 3 * 1365);
    /* Empty names and unknown statuses are refused, not stored. */
    tf_tr_res_t none = {.suite = "", .name = "", .status = TF_TR_PASS};
    tf_tr_collect_add(c, TF_TR_ATTEMPT, &none);
    TF_CHECK_INT(tf_tr_collect_count(c), 3);
    /* Over TF_TR_MAX_TESTS distinct tests: counted as dropped. */
    for (int i = 0; i < TF_TR_MAX_TESTS + 10; i++) {
        char name[32];
        snprintf(name, sizeof name, "n%d", i);
        tf_tr_res_t x = {.suite = "", .name = name, .status = TF_TR_PASS,
                         .duration_ms = 1};
        tf_tr_collect_add(c, TF_TR_ATTEMPT, &x);
    }
    TF_CHECK_INT(tf_tr_collect_count(c), TF_TR_MAX_TESTS);
    /* 3 + 50010 - 50000, and the nameless one refused above. */
    TF_CHECK_INT(tf_tr_collect_dropped(c), 14);
    for (int i = 0; i < TF_TR_MAX_PROBLEMS + 3; i++)
        tf_tr_collect_problem(c, "problem %d", i);
    size_t np;
    char *const *p = tf_tr_collect_problems(c, &np);
    TF_CHECK_INT(np, TF_TR_MAX_PROBLEMS);
    TF_CHECK_STR(p[0], "problem 0");
    tf_tr_collect_free(c);
}

TF_TEST(long_failure_keeps_the_assertion_line)
{
    /* 300 lines of output, the assertion in the middle: the message is
     * capped and the assertion line is still in it. */
    char *out = malloc(64 * 1024);
    size_t o = (size_t)snprintf(out, 64 * 1024, "1/1 Test #1: big "
                                "..........***Failed    0.10 sec\n");
    for (int i = 0; i < 300; i++) {
        if (i == 150)
            o += (size_t)snprintf(out + o, 64 * 1024 - o,
                                  "test_pack.c:89: json_pack integer failed\n");
        o += (size_t)snprintf(out + o, 64 * 1024 - o,
                              "noise line %03d of the test's output\n", i);
    }
    tf_tr_collect_t *c = parse_buf(TF_TR_FMT_CTEST, out, o, 4096);
    const tf_tr_entry_t *e = find(c, "", "big");
    TF_CHECK(e && e->message && strlen(e->message) <= TF_TR_MAX_MESSAGE);
    TF_CHECK(e && e->message &&
             strstr(e->message, "\n[...]\ntest_pack.c:89: json_pack integer "
                                "failed"));
    TF_CHECK(e && e->log.lines == 302);
    tf_tr_collect_free(c);
    free(out);
}

TF_TEST(binary_garbage_and_long_lines)
{
    /* 1 MB of pseudo-random bytes (NULs, escapes, no newlines for long
     * stretches) through every console parser: no crash, positions stay
     * inside the input, and a test line after it is still found. */
    size_t n = 1 << 20;
    uint8_t *junk = malloc(n + 100);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        junk[i] = (uint8_t)(x >> 24);
    }
    for (int f = TF_TR_FMT_CTEST; f <= TF_TR_FMT_TAP; f++) {
        tf_tr_collect_t *c = NULL;
        tf_tr_console_t *k = NULL;
        TF_CHECK_INT(tf_tr_collect_new(&c), 0);
        TF_CHECK_INT(tf_tr_console_new((tf_tr_format_t)f, tf_tr_collect_add, c,
                                       &k), 0);
        for (size_t i = 0; i < n; i += 65536)
            tf_tr_console_feed(k, (int)(i / 65536 % 2) + 1, junk + i, 65536);
        const char *tail = "\nPASS: after_garbage\n";
        tf_tr_console_feed(k, 1, (const uint8_t *)tail, strlen(tail));
        tf_tr_console_finish(k);
        TF_CHECK_INT(tf_tr_console_bytes(k), n + strlen(tail));
        for (size_t i = 0; i < tf_tr_collect_count(c); i++) {
            const tf_tr_entry_t *e = tf_tr_collect_get(c, i);
            TF_CHECK(!e->log.has || e->log.offset < n + strlen(tail));
        }
        if (f == TF_TR_FMT_AUTOMAKE) {
            const tf_tr_entry_t *e = find(c, "", "after_garbage");
            TF_CHECK(e && e->log.has && e->log.offset == n + 1);
        }
        tf_tr_console_free(k);
        tf_tr_collect_free(c);
    }
    free(junk);
}

TF_TEST(interleaved_streams_keep_log_positions)
{
    /* The log is "PASS: a\n" from stdout, then stderr's "FA", stdout's
     * "x\n", stderr's "IL: b\n": stderr's line starts at offset 8 on line
     * 2 even though stdout finished a line in between. */
    tf_tr_collect_t *c = NULL;
    tf_tr_console_t *k = NULL;
    TF_CHECK_INT(tf_tr_collect_new(&c), 0);
    TF_CHECK_INT(tf_tr_console_new(TF_TR_FMT_AUTOMAKE, tf_tr_collect_add, c,
                                   &k), 0);
    tf_tr_console_feed(k, 1, (const uint8_t *)"PASS: a\n", 8);
    tf_tr_console_feed(k, 2, (const uint8_t *)"FA", 2);
    tf_tr_console_feed(k, 1, (const uint8_t *)"x\n", 2);
    tf_tr_console_feed(k, 2, (const uint8_t *)"IL: b\r\n", 7);
    tf_tr_console_feed(k, 1, (const uint8_t *)"\x1b[0;32mPASS\x1b[m: c", 17);
    tf_tr_console_finish(k);
    tf_tr_console_free(k);
    const tf_tr_entry_t *b = find(c, "", "b");
    TF_CHECK(b && b->log.offset == 8 && b->log.line == 2);
    const tf_tr_entry_t *cc = find(c, "", "c");
    TF_CHECK(cc && cc->log.offset == 19 && cc->log.line == 4);
    CHECK_RES(c, "", "a", "pass", 1, NULL);
    tf_tr_collect_free(c);
}

TF_TEST(names_and_globs)
{
    for (int f = TF_TR_FMT_CTEST; f < TF_TR_FMT__COUNT; f++)
        TF_CHECK(tf_tr_format_parse(tf_tr_format_name((tf_tr_format_t)f)) ==
                 (tf_tr_format_t)f);
    TF_CHECK(tf_tr_format_parse("xunit") == TF_TR_FMT_NONE);
    TF_CHECK(!tf_tr_format_console(TF_TR_FMT_JUNIT));
    TF_CHECK(tf_tr_format_files(TF_TR_FMT_TAP));
    TF_CHECK(!tf_tr_format_files(TF_TR_FMT_PYTEST));
    TF_CHECK(tf_tr_status_parse("flaky") == TF_TR_FLAKY);
    TF_CHECK(tf_tr_glob_match("*.xml", "a.xml"));
    TF_CHECK(!tf_tr_glob_match("*.xml", ".hidden.xml"));
    TF_CHECK(tf_tr_glob_match("TEST-[a-z]*.xml", "TEST-pack.xml"));
    TF_CHECK(tf_tr_glob_valid("build/**/*.xml"));
    TF_CHECK(!tf_tr_glob_valid("../x"));
    TF_CHECK(!tf_tr_glob_valid("a/./b"));
    TF_CHECK(!tf_tr_glob_valid("/abs"));
    TF_CHECK(!tf_tr_glob_valid("a\tb"));
    char long_glob[TF_TR_MAX_GLOB + 2];
    memset(long_glob, 'a', sizeof long_glob - 1);
    long_glob[sizeof long_glob - 1] = '\0';
    TF_CHECK(!tf_tr_glob_valid(long_glob));
}

TF_TEST_MAIN()
