/*
 * test_watch.c - what tf-try prints about a job, from pure functions: the
 * --wait lines for a sequence of job snapshots, the failing step's tail,
 * the summary, status and list, and the text sanitizer.
 */
#include <stdlib.h>
#include <string.h>

#include "tf_test.h"
#include "watch.h"

#define URL "http://127.0.0.1:8010/api/v1"

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j) {
        fprintf(stderr, "bad test JSON at %d:%d: %s\n", e.line, e.column,
                e.text);
        abort();
    }
    return j;
}

/* Feeds one snapshot and compares the printed lines. */
static void step(tf_try_watch_t *w, const char *snapshot, const char *want,
                 json_t *tails)
{
    json_t *job = parse(snapshot);
    tf_buf_t out;
    tf_buf_init(&out, 0);
    TF_CHECK_INT(tf_try_watch_update(w, job, &out, tails), 0);
    TF_CHECK_STR(out.data ? (const char *)out.data : "", want);
    tf_buf_free(&out);
    json_decref(job);
}

/* Snapshots of job 7 on builders b1 and b2. */
static const char *const snap1 =
    "{\"id\": 7, \"state\": \"running\", \"result\": null, \"builders\": ["
    " {\"name\": \"b1\", \"state\": \"pending\", \"position\": 2,"
    "  \"result\": null, \"build\": null},"
    " {\"name\": \"b2\", \"state\": \"running\", \"position\": null,"
    "  \"result\": null, \"build\": {\"id\": 12, \"number\": 1, \"slave\": "
    "  \"s2\", \"state\": \"running\", \"result\": null, \"started_ms\": 1000,"
    "  \"finished_ms\": null, \"url\": \"" URL "/builds/12\", \"steps\": ["
    "   {\"index\": 0, \"name\": \"source\", \"state\": \"running\","
    "    \"result\": null, \"text\": null, \"duration_ms\": null,"
    "    \"log\": {\"bytes\": 0, \"url\": \"" URL "/builds/12/steps/0/log\"}},"
    "   {\"index\": 1, \"name\": \"test\", \"state\": \"pending\","
    "    \"result\": null, \"text\": null, \"duration_ms\": null,"
    "    \"log\": {\"bytes\": 0, \"url\": \"" URL "/builds/12/steps/1/log\"}}"
    "  ]}}]}";

static const char *const snap2 =
    "{\"id\": 7, \"state\": \"running\", \"result\": null, \"builders\": ["
    " {\"name\": \"b1\", \"state\": \"running\", \"position\": null,"
    "  \"result\": null, \"build\": {\"id\": 13, \"number\": 1, \"slave\": "
    "  \"s1\", \"state\": \"running\", \"result\": null, \"started_ms\": 2000,"
    "  \"finished_ms\": null, \"url\": \"" URL "/builds/13\", \"steps\": ["
    "   {\"index\": 0, \"name\": \"source\", \"state\": \"done\","
    "    \"result\": \"SUCCESS\", \"text\": \"exit 0\", \"duration_ms\": 1200,"
    "    \"log\": {\"bytes\": 10, \"url\": \"" URL "/builds/13/steps/0/log\"}},"
    "   {\"index\": 1, \"name\": \"compile\", \"state\": \"running\","
    "    \"result\": null, \"text\": null, \"duration_ms\": null,"
    "    \"log\": {\"bytes\": 0, \"url\": \"" URL "/builds/13/steps/1/log\"}}"
    "  ]}},"
    " {\"name\": \"b2\", \"state\": \"done\", \"position\": null,"
    "  \"result\": \"FAILURE\", \"build\": {\"id\": 12, \"number\": 1, "
    "  \"slave\": \"s2\", \"state\": \"finished\", \"result\": \"FAILURE\","
    "  \"started_ms\": 1000, \"finished_ms\": 5500,"
    "  \"url\": \"" URL "/builds/12\", \"steps\": ["
    "   {\"index\": 0, \"name\": \"source\", \"state\": \"done\","
    "    \"result\": \"SUCCESS\", \"text\": null, \"duration_ms\": 800,"
    "    \"log\": {\"bytes\": 5, \"url\": \"" URL "/builds/12/steps/0/log\"}},"
    "   {\"index\": 1, \"name\": \"test\", \"state\": \"done\","
    "    \"result\": \"FAILURE\", \"text\": \"exit 1\", \"duration_ms\": 3400,"
    "    \"log\": {\"bytes\": 99, \"url\": \"" URL "/builds/12/steps/1/log\"}}"
    "  ]}}]}";

static const char *const snap3 =
    "{\"id\": 7, \"state\": \"finished\", \"result\": \"FAILURE\", "
    "\"builders\": ["
    " {\"name\": \"b1\", \"state\": \"done\", \"position\": null,"
    "  \"result\": \"WARNINGS\", \"build\": {\"id\": 13, \"number\": 1, "
    "  \"slave\": \"s1\", \"state\": \"finished\", \"result\": \"WARNINGS\","
    "  \"started_ms\": 2000, \"finished_ms\": 127000,"
    "  \"url\": \"" URL "/builds/13\", \"steps\": ["
    "   {\"index\": 0, \"name\": \"source\", \"state\": \"done\","
    "    \"result\": \"SUCCESS\", \"text\": \"exit 0\", \"duration_ms\": 1200,"
    "    \"log\": {\"bytes\": 10, \"url\": \"" URL "/builds/13/steps/0/log\"}},"
    "   {\"index\": 1, \"name\": \"compile\", \"state\": \"done\","
    "    \"result\": \"WARNINGS\", \"text\": \"3 warnings\","
    "    \"duration_ms\": 123400,"
    "    \"log\": {\"bytes\": 0, \"url\": \"" URL "/builds/13/steps/1/log\"}},"
    "   {\"index\": 2, \"name\": \"lint\", \"state\": \"done\","
    "    \"result\": \"SKIPPED\", \"text\": \"skipped\", \"duration_ms\": 0,"
    "    \"log\": {\"bytes\": 0, \"url\": \"" URL "/builds/13/steps/2/log\"}}"
    "  ]}},"
    " {\"name\": \"b2\", \"state\": \"done\", \"position\": null,"
    "  \"result\": \"FAILURE\", \"build\": {\"id\": 12, \"number\": 1, "
    "  \"slave\": \"s2\", \"state\": \"finished\", \"result\": \"FAILURE\","
    "  \"started_ms\": 1000, \"finished_ms\": 5500,"
    "  \"url\": \"" URL "/builds/12\", \"steps\": ["
    "   {\"index\": 0, \"name\": \"source\", \"state\": \"done\","
    "    \"result\": \"SUCCESS\", \"text\": null, \"duration_ms\": 800,"
    "    \"log\": {\"bytes\": 5, \"url\": \"" URL "/builds/12/steps/0/log\"}},"
    "   {\"index\": 1, \"name\": \"test\", \"state\": \"done\","
    "    \"result\": \"FAILURE\", \"text\": \"exit 1\", \"duration_ms\": 3400,"
    "    \"log\": {\"bytes\": 99, \"url\": \"" URL "/builds/12/steps/1/log\"}}"
    "  ]}}]}";

TF_TEST(wait_lines_for_a_sequence_of_snapshots)
{
    tf_try_watch_t *w = tf_try_watch_new();
    json_t *tails = json_array();
    TF_CHECK(w != NULL);
    /* At submission b1 was third and b2 first in their queues. */
    tf_try_watch_seed(w, "b1", 3);
    tf_try_watch_seed(w, "b2", 1);

    step(w, snap1,
         "b1: position 2 in queue\n"
         "b2: build 12 started on slave s2\n"
         "b2: step source started\n",
         tails);
    TF_CHECK_INT(json_array_size(tails), 0);
    /* The same snapshot again says nothing. */
    step(w, snap1, "", tails);

    const char *lines2 = "b1: build 13 started on slave s1\n"
                         "b1: step source: SUCCESS (1.2 s)\n"
                         "b1: step compile started\n"
                         "b2: step source: SUCCESS (0.8 s)\n"
                         "b2: step test: FAILURE (3.4 s; exit 1)\n"
                         "b2: build 12: FAILURE (4.5 s)\n";
    step(w, snap2, lines2, tails);
    TF_CHECK_INT(json_array_size(tails), 1);
    json_t *t = json_array_get(tails, 0);
    TF_CHECK_STR(json_string_value(json_object_get(t, "builder")), "b2");
    TF_CHECK_STR(json_string_value(json_object_get(t, "step")), "test");
    TF_CHECK_STR(json_string_value(json_object_get(t, "result")), "FAILURE");
    TF_CHECK_STR(json_string_value(json_object_get(t, "url")),
                 URL "/builds/12/steps/1/log");
    /* The tail goes right after b2's result line (here: the end). */
    TF_CHECK_INT(json_integer_value(json_object_get(t, "at")), strlen(lines2));
    json_array_clear(tails);
    step(w, snap2, "", tails);
    json_t *j2 = parse(snap2);
    TF_CHECK(!tf_try_job_done(j2));
    json_decref(j2);

    /* WARNINGS passes: no tail is asked for b1. */
    step(w, snap3,
         "b1: step compile: WARNINGS (2 min 03 s; 3 warnings)\n"
         "b1: step lint: SKIPPED\n"
         "b1: build 13: WARNINGS (2 min 05 s)\n",
         tails);
    TF_CHECK_INT(json_array_size(tails), 0);
    step(w, snap3, "", tails);

    json_t *job = parse(snap3);
    TF_CHECK(tf_try_job_done(job));
    TF_CHECK_INT(tf_try_job_exit_code(job, false), 1);
    tf_buf_t out;
    tf_buf_init(&out, 0);
    TF_CHECK_INT(tf_try_render_summary(job, &out), 0);
    TF_CHECK_STR((const char *)out.data,
                 "job 7: FAILURE (not every build passed)\n"
                 "  builder  result    duration    slave  build\n"
                 "  b1       WARNINGS  2 min 05 s  s1     " URL "/builds/13\n"
                 "  b2       FAILURE   4.5 s       s2     " URL "/builds/12\n");
    tf_buf_free(&out);
    json_decref(job);
    json_decref(tails);
    tf_try_watch_free(w);
}

TF_TEST(a_step_seen_only_when_done_gets_one_line)
{
    /* Between two polls a build started, ran its steps and passed: the
     * watcher prints the build, each result and the end, no "started". */
    tf_try_watch_t *w = tf_try_watch_new();
    json_t *tails = json_array();
    step(w,
         "{\"id\": 3, \"state\": \"finished\", \"result\": \"SUCCESS\","
         " \"builders\": [{\"name\": \"linux\", \"state\": \"done\","
         " \"position\": null, \"result\": \"SUCCESS\", \"build\": {\"id\": 4,"
         " \"slave\": \"vm1\", \"state\": \"finished\", \"result\": \"SUCCESS\","
         " \"started_ms\": 0, \"finished_ms\": 61000, \"url\": \"u4\","
         " \"steps\": [{\"index\": 0, \"name\": \"source\", \"state\": \"done\","
         " \"result\": \"SUCCESS\", \"duration_ms\": 50, \"text\": null,"
         " \"log\": {\"url\": \"l\"}}]}}]}",
         "linux: build 4 started on slave vm1\n"
         "linux: step source: SUCCESS (0.0 s)\n"
         "linux: build 4: SUCCESS (1 min 01 s)\n",
         tails);
    TF_CHECK_INT(json_array_size(tails), 0);
    json_decref(tails);
    tf_try_watch_free(w);
}

TF_TEST(retry_and_cancel_before_start)
{
    tf_try_watch_t *w = tf_try_watch_new();
    json_t *tails = json_array();
    const char *first =
        "{\"id\": 1, \"state\": \"running\", \"builders\": ["
        "{\"name\": \"a\", \"state\": \"running\", \"position\": null,"
        " \"result\": null, \"build\": {\"id\": 5, \"slave\": \"s1\","
        " \"state\": \"running\", \"steps\": [{\"index\": 0, \"name\": \"x\","
        " \"state\": \"running\", \"result\": null}]}},"
        "{\"name\": \"c\", \"state\": \"pending\", \"position\": 4,"
        " \"result\": null, \"build\": null}]}";
    const char *second =
        "{\"id\": 1, \"state\": \"cancelled\", \"builders\": ["
        "{\"name\": \"a\", \"state\": \"running\", \"position\": null,"
        " \"result\": null, \"build\": {\"id\": 6, \"slave\": \"s2\","
        " \"state\": \"running\", \"steps\": [{\"index\": 0, \"name\": \"x\","
        " \"state\": \"running\", \"result\": null}]}},"
        "{\"name\": \"c\", \"state\": \"cancelled\", \"position\": null,"
        " \"result\": null, \"build\": null}]}";
    step(w, first,
         "a: build 5 started on slave s1\n"
         "a: step x started\n"
         "c: position 4 in queue\n",
         tails);
    /* A retry is a new build: its steps are new too. */
    step(w, second,
         "a: build 6 started on slave s2\n"
         "a: step x started\n"
         "c: CANCELLED before a build started\n",
         tails);
    json_t *job = parse(second);
    TF_CHECK(!tf_try_job_done(job)); /* build 6 still runs */
    TF_CHECK_INT(tf_try_job_exit_code(job, false), 1);
    json_decref(job);
    json_decref(tails);
    tf_try_watch_free(w);
}

static void tail_case(const char *log, size_t len, bool from_start,
                      unsigned n, const char *want)
{
    json_t *t = json_pack("{s:s, s:s, s:s, s:s}", "builder", "b2", "step",
                          "test", "result", "FAILURE", "url", "L");
    tf_buf_t out;
    tf_buf_init(&out, 0);
    TF_CHECK_INT(tf_try_render_tail(t, (const uint8_t *)log, len, from_start,
                                    n, &out),
                 0);
    TF_CHECK_STR(out.data ? (const char *)out.data : "", want);
    tf_buf_free(&out);
    json_decref(t);
}

TF_TEST(failing_tail_keeps_the_last_lines)
{
    const char *log = "one\ntwo\nthree\nfour\n";
    tail_case(log, strlen(log), true, 2,
              "b2: step test ended FAILURE; the last 2 lines of its log (L):\n"
              "    three\n"
              "    four\n");
    tail_case(log, strlen(log), true, 30,
              "b2: step test ended FAILURE; the last 4 lines of its log (L):\n"
              "    one\n    two\n    three\n    four\n");
    /* No final newline: the last line still counts. */
    tail_case("a\nb", 3, true, 1,
              "b2: step test ended FAILURE; the last 1 line of its log (L):\n"
              "    b\n");
    /* Fetched from the middle: the cut first line is dropped. */
    tail_case("ial line\nwhole\nlast\n", 20, false, 30,
              "b2: step test ended FAILURE; the last 2 lines of its log (L):\n"
              "    whole\n    last\n");
    /* ...unless it is all there is. */
    tail_case("xxxxxxxx", 8, false, 5,
              "b2: step test ended FAILURE; the last 1 line of its log (L):\n"
              "    xxxxxxxx\n");
    /* Empty lines count as lines. */
    tail_case("a\n\n\nb\n", 6, true, 3,
              "b2: step test ended FAILURE; the last 3 lines of its log (L):\n"
              "    \n    \n    b\n");
    tail_case("", 0, true, 30, "b2: step test ended FAILURE; its log is "
                               "empty: L\n");
    tail_case("x\n", 2, true, 0, "b2: step test ended FAILURE; its log: L\n");
}

TF_TEST(failing_tail_is_safe_for_a_terminal)
{
    /* CRLF, an escape sequence, a NUL, invalid UTF-8, a C1 control, a tab,
     * and valid UTF-8 that must stay. */
    const char log[] = "ok\r\n\x1b[2Jclear\0nul\n\xff\xfe bad\xc2\x9b"
                       "c1\tcaf\xc3\xa9\n";
    tail_case(log, sizeof(log) - 1, true, 10,
              "b2: step test ended FAILURE; the last 3 lines of its log (L):\n"
              "    ok\n"
              "    \xef\xbf\xbd[2Jclear\xef\xbf\xbdnul\n"
              "    \xef\xbf\xbd\xef\xbf\xbd bad\xef\xbf\xbd"
              "c1\tcaf\xc3\xa9\n");
    /* A lone CR (progress bars) is not a line break and is replaced. */
    tail_case("10%\r100%\n", 9, true, 10,
              "b2: step test ended FAILURE; the last 1 line of its log (L):\n"
              "    10%\xef\xbf\xbd" "100%\n");
}

TF_TEST(sanitize)
{
    tf_buf_t out;
    tf_buf_init(&out, 0);
    /* Overlong encodings and surrogates are invalid UTF-8. */
    TF_CHECK_INT(tf_try_sanitize((const uint8_t *)"\xc0\xaf|\xed\xa0\x80|a\nb",
                                 10, false, &out), 0);
    TF_CHECK_STR((const char *)out.data,
                 "\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                 "|a\xef\xbf\xbd" "b");
    tf_buf_reset(&out);
    TF_CHECK_INT(tf_try_sanitize((const uint8_t *)"a\r\nb\x7f", 5, true, &out),
                 0);
    TF_CHECK_STR((const char *)out.data, "a\nb\xef\xbf\xbd");
    tf_buf_free(&out);
}

TF_TEST(durations)
{
    char d[32];
    tf_try_format_duration(0, d, sizeof(d));
    TF_CHECK_STR(d, "0.0 s");
    tf_try_format_duration(3250, d, sizeof(d));
    TF_CHECK_STR(d, "3.2 s");
    tf_try_format_duration(59999, d, sizeof(d));
    TF_CHECK_STR(d, "59.9 s");
    tf_try_format_duration(60000, d, sizeof(d));
    TF_CHECK_STR(d, "1 min 00 s");
    tf_try_format_duration(3599999, d, sizeof(d));
    TF_CHECK_STR(d, "59 min 59 s");
    tf_try_format_duration(3720000, d, sizeof(d));
    TF_CHECK_STR(d, "1 h 02 min");
    tf_try_format_duration(-1, d, sizeof(d));
    TF_CHECK_STR(d, "-");
}

TF_TEST(summary_all_passed)
{
    json_t *job = parse(
        "{\"id\": 9, \"state\": \"finished\", \"result\": \"SUCCESS\","
        " \"builders\": [{\"name\": \"linux-x86_64\", \"state\": \"done\","
        " \"result\": \"SUCCESS\", \"build\": {\"id\": 40, \"slave\": "
        " \"vm1\", \"state\": \"finished\", \"started_ms\": 100,"
        " \"finished_ms\": 3300, \"url\": \"U/40\", \"steps\": []}}]}");
    tf_buf_t out;
    tf_buf_init(&out, 0);
    TF_CHECK(tf_try_job_done(job));
    TF_CHECK_INT(tf_try_job_exit_code(job, false), 0);
    TF_CHECK_INT(tf_try_render_summary(job, &out), 0);
    TF_CHECK_STR((const char *)out.data,
                 "job 9: SUCCESS (every build passed)\n"
                 "  builder       result   duration  slave  build\n"
                 "  linux-x86_64  SUCCESS  3.2 s     vm1    U/40\n");
    tf_buf_free(&out);
    json_decref(job);
}

TF_TEST(status_table)
{
    json_t *job = parse(
        "{\"id\": 7, \"author\": \"Ann\", \"email\": \"ann@example.org\","
        " \"description\": \"Fix \\u001b[31mit\", \"review_url\": null,"
        " \"patchset\": null, \"base_revision\": \"abc123\","
        " \"patch\": {\"sha256\": \"" "0123456789abcdef0123456789abcdef"
        "0123456789abcdef0123456789abcdef" "\", \"size\": 42, \"url\": \"P\"},"
        " \"state\": \"running\", \"result\": null, \"submitted_ms\": 0,"
        " \"finished_ms\": null, \"url\": \"J/7\", \"builders\": ["
        " {\"name\": \"b1\", \"state\": \"running\", \"position\": null,"
        "  \"result\": null, \"build\": {\"id\": 3, \"slave\": \"s1\","
        "  \"state\": \"running\", \"url\": \"B/3\"}},"
        " {\"name\": \"b2\", \"state\": \"pending\", \"position\": 2,"
        "  \"result\": null, \"build\": null}]}");
    tf_buf_t out;
    tf_buf_init(&out, 0);
    TF_CHECK_INT(tf_try_render_status(job, &out), 0);
    TF_CHECK_STR((const char *)out.data,
                 "job 7: running\n"
                 "  author:      Ann <ann@example.org>\n"
                 "  description: Fix \xef\xbf\xbd[31mit\n"
                 "  base:        abc123\n"
                 "  patch:       42 bytes, sha256 0123456789abcdef0123456789abcdef"
                 "0123456789abcdef0123456789abcdef\n"
                 "  submitted:   1970-01-01 00:00:00 UTC\n"
                 "  url:         J/7\n"
                 "  builder  state    queue  slave  result  link\n"
                 "  b1       running  -      s1     -       B/3\n"
                 "  b2       pending  2      -      -       -\n");
    tf_buf_free(&out);
    json_decref(job);
}

TF_TEST(list_table)
{
    json_t *list = parse(
        "{\"jobs\": [{\"id\": 12, \"state\": \"finished\", \"result\": "
        "\"SUCCESS\", \"submitted_ms\": 86400000, \"description\": \"short\","
        " \"builders\": [{\"name\": \"a\"}, {\"name\": \"b\"}]},"
        " {\"id\": 9, \"state\": \"pending\", \"result\": null,"
        " \"submitted_ms\": 0, \"description\": null, \"builders\": [\"c\"]}],"
        " \"next_before\": null}");
    tf_buf_t out;
    tf_buf_init(&out, 0);
    TF_CHECK_INT(tf_try_render_list(list, &out), 0);
    TF_CHECK_STR((const char *)out.data,
                 "  job  state     result   submitted                "
                 "builders  description\n"
                 "  12   finished  SUCCESS  1970-01-02 00:00:00 UTC  a,b       "
                 "short\n"
                 "  9    pending   -        1970-01-01 00:00:00 UTC  c\n");
    tf_buf_free(&out);
    json_decref(list);
    list = parse("{\"jobs\": []}");
    tf_buf_init(&out, 0);
    TF_CHECK_INT(tf_try_render_list(list, &out), 0);
    TF_CHECK_STR((const char *)out.data, "no jobs\n");
    tf_buf_free(&out);
    json_decref(list);
}

/* A failed build's failing tests: new ones and those also failing
 * without the patch, their messages and log lines, flaky ones, a cap. */
TF_TEST(failed_tests)
{
    json_t *tail = parse("{\"builder\": \"linux\", \"tests_url\": "
                         "\"" URL "/builds/4/tests\"}");
    json_t *answer = parse(
        "{\"counts\": {\"total\": 5, \"pass\": 2, \"fail\": 2, "
        "\"skip\": 0, \"flaky\": 1}, \"new_failures\": 1, \"tests\": ["
        "{\"step_name\": \"ctest\", \"suite\": \"\", \"name\": "
        "\"test_pack\", \"status\": \"fail\", \"failure\": \"new\", "
        "\"message\": \"test_pack.c:89: json_pack integer failed\", "
        "\"log\": {\"line\": 12, \"excerpt\": \"1/3 Test #1: test_pack "
        "***Failed\\ntest_pack.c:89: json_pack integer failed\\n\"}},"
        "{\"step_name\": \"ctest\", \"suite\": \"s\", \"name\": \"old\", "
        "\"status\": \"fail\", \"failure\": "
        "\"also_failing_without_patch\", \"message\": \"boom\\u001b[0m\", "
        "\"log\": null},"
        "{\"step_name\": \"ctest\", \"suite\": \"\", \"name\": "
        "\"test_flaky\", \"status\": \"flaky\", \"message\": null, "
        "\"log\": null}]}");
    tf_buf_t out;
    tf_buf_init(&out, 0);
    TF_CHECK_INT(tf_try_render_failed_tests(tail, answer, 20, &out), 0);
    TF_CHECK_STR((const char *)out.data,
                 "linux: 2 failing tests (1 new, 1 also failing without the "
                 "patch), 1 flaky:\n"
                 "  FAIL  test_pack  [new]\n"
                 "      log of step ctest, from line 12:\n"
                 "      | 1/3 Test #1: test_pack ***Failed\n"
                 "      | test_pack.c:89: json_pack integer failed\n"
                 "  FAIL  s :: old  [also failing without the patch]\n"
                 "      boom\xef\xbf\xbd[0m\n"
                 "  FLAKY test_flaky  (passed on a retry)\n");
    tf_buf_reset(&out);
    TF_CHECK_INT(tf_try_render_failed_tests(tail, answer, 1, &out), 0);
    TF_CHECK(strstr((const char *)out.data, "  ... and more: " URL
                    "/builds/4/tests\n") != NULL);
    TF_CHECK(strstr((const char *)out.data, "old") == NULL);
    tf_buf_free(&out);
    json_decref(answer);
    /* Nothing failing: nothing said. */
    answer = parse("{\"counts\": {\"fail\": 0, \"flaky\": 0}, "
                   "\"tests\": []}");
    tf_buf_init(&out, 0);
    TF_CHECK_INT(tf_try_render_failed_tests(tail, answer, 20, &out), 0);
    TF_CHECK_INT((int)out.len, 0);
    tf_buf_free(&out);
    json_decref(answer);
    json_decref(tail);
}

/* A reused builder: one line naming the build it was answered from. */
TF_TEST(reused_builder_line)
{
    tf_try_watch_t *w = tf_try_watch_new();
    json_t *tails = json_array();
    const char *snap =
        "{\"state\": \"finished\", \"builders\": [{\"name\": \"b1\", "
        "\"state\": \"done\", \"reused\": true, \"result\": \"SUCCESS\", "
        "\"build\": {\"id\": 4, \"state\": \"finished\", \"result\": "
        "\"SUCCESS\", \"url\": \"" URL "/builds/4\", \"steps\": []}}]}";
    step(w, snap,
         "b1: reused build 4 (SUCCESS): the same base, patch, tests and "
         "properties passed there: " URL "/builds/4\n",
         tails);
    step(w, snap, "", tails); /* said once */
    TF_CHECK_INT((int)json_array_size(tails), 0);
    json_decref(tails);
    tf_try_watch_free(w);
}

/* --new-failures-only: a failed job whose failures all fail without the
 * patch too passes; one with a new failure does not. */
TF_TEST(exit_code_new_failures_only)
{
    json_t *job = parse(
        "{\"builders\": [{\"result\": \"FAILURE\"}], "
        "\"new_failures\": {\"builds\": 0, \"tests\": 0}}");
    TF_CHECK_INT(tf_try_job_exit_code(job, false), 1);
    TF_CHECK_INT(tf_try_job_exit_code(job, true), 0);
    json_decref(job);
    job = parse("{\"builders\": [{\"result\": \"FAILURE\"}], "
                "\"new_failures\": {\"builds\": 1, \"tests\": 2}}");
    TF_CHECK_INT(tf_try_job_exit_code(job, true), 1);
    json_decref(job);
    job = parse("{\"builders\": [{\"result\": \"FAILURE\"}]}");
    TF_CHECK_INT(tf_try_job_exit_code(job, true), 1);
    json_decref(job);
}

/* Feeds one live event; compares the lines and whether a snapshot is
 * wanted. */
static void live(tf_try_watch_t *w, const char *event, const char *want,
                 bool want_snapshot)
{
    json_t *ev = parse(event);
    tf_buf_t out;
    bool asked = false;
    tf_buf_init(&out, 0);
    TF_CHECK_INT(tf_try_watch_live(w, ev, &out, &asked), 0);
    TF_CHECK_STR(out.data ? (const char *)out.data : "", want);
    TF_CHECK_INT(asked, want_snapshot);
    tf_buf_free(&out);
    json_decref(ev);
}

#define EV_BUILD(event, id, req, builder, slave)                               \
    "{\"type\": \"build\", \"event\": \"" event "\", \"build\": {\"id\": " id  \
    ", \"builder\": \"" builder "\", \"number\": 1, \"slave\": \"" slave       \
    "\", \"state\": \"running\", \"result\": null, \"kind\": \"try\", "        \
    "\"request_id\": " req "}}"
#define EV_STEP(bid, builder, idx, name, state, result, extra)                 \
    "{\"type\": \"step\", \"build_id\": " bid ", \"builder\": \"" builder      \
    "\", \"number\": 1, \"step\": {\"index\": " idx ", \"name\": \"" name      \
    "\", \"state\": \"" state "\", \"result\": " result extra "}}"

/* The live feed and the snapshots share one memory: each line once,
 * whichever says it first; other jobs' events are ignored; a build's end
 * asks for the snapshot (its result line, failing tests and tail come from
 * there); a snapshot older than the feed does not go back. */
TF_TEST(live_events_and_snapshots_say_each_line_once)
{
    tf_try_watch_t *w = tf_try_watch_new();
    json_t *tails = json_array();
    const char *pending =
        "{\"id\": 9, \"state\": \"pending\", \"builders\": ["
        "{\"name\": \"lin\", \"request_id\": 31, \"state\": \"pending\","
        " \"position\": 1, \"result\": null, \"build\": null}]}";
    tf_try_watch_seed(w, "lin", 1);
    step(w, pending, "", tails);
    /* Another job's build on another builder, and a step of a build that
     * is not ours, on a builder we do not use: nothing, no snapshot. */
    live(w, EV_BUILD("started", "40", "77", "mac", "s9"), "", false);
    live(w, EV_STEP("40", "mac", "0", "src", "running", "null", ""), "",
         false);
    /* Our request's build starts, its steps run. */
    live(w, EV_BUILD("started", "41", "31", "lin", "vm1"),
         "lin: build 41 started on slave vm1\n", false);
    live(w, EV_STEP("41", "lin", "0", "source", "running", "null", ""),
         "lin: step source started\n", false);
    live(w, EV_STEP("41", "lin", "0", "source", "done", "\"SUCCESS\"",
                    ", \"started_ms\": 1000, \"finished_ms\": 2300, "
                    "\"duration_ms\": 1250, \"text\": null"),
         "lin: step source: SUCCESS (1.2 s)\n", false);
    /* Without duration_ms (an older master): from start and end. */
    live(w, EV_STEP("41", "lin", "1", "test", "done", "\"FAILURE\"",
                    ", \"started_ms\": 2300, \"finished_ms\": 5700, "
                    "\"text\": \"exit 1\""),
         "lin: step test: FAILURE (3.4 s; exit 1)\n", false);
    /* Said already: the same event again says nothing. */
    live(w, EV_STEP("41", "lin", "1", "test", "done", "\"FAILURE\"",
                    ", \"started_ms\": 2300, \"finished_ms\": 5700, "
                    "\"text\": \"exit 1\""),
         "", false);
    TF_CHECK(!tf_try_watch_settling(w));
    live(w, EV_BUILD("finished", "41", "31", "lin", "vm1"), "", true);
    TF_CHECK(tf_try_watch_settling(w));
    /* A snapshot from before the end (the store lags the feed): nothing
     * repeated, still settling. */
    step(w,
         "{\"id\": 9, \"state\": \"running\", \"builders\": ["
         "{\"name\": \"lin\", \"request_id\": 31, \"state\": \"running\","
         " \"position\": null, \"result\": null, \"build\": {\"id\": 41,"
         " \"slave\": \"vm1\", \"state\": \"running\", \"steps\": ["
         " {\"index\": 0, \"name\": \"source\", \"state\": \"running\","
         "  \"result\": null},"
         " {\"index\": 1, \"name\": \"test\", \"state\": \"pending\","
         "  \"result\": null}]}}]}",
         "", tails);
    TF_CHECK(tf_try_watch_settling(w));
    /* The snapshot with the end: only the result line, and the tail. */
    step(w,
         "{\"id\": 9, \"state\": \"finished\", \"builders\": ["
         "{\"name\": \"lin\", \"request_id\": 31, \"state\": \"done\","
         " \"position\": null, \"result\": \"FAILURE\", \"build\": {\"id\": 41,"
         " \"slave\": \"vm1\", \"state\": \"finished\", \"result\": "
         "\"FAILURE\", \"started_ms\": 1000, \"finished_ms\": 5800, \"steps\": ["
         " {\"index\": 0, \"name\": \"source\", \"state\": \"done\","
         "  \"result\": \"SUCCESS\", \"duration_ms\": 1250},"
         " {\"index\": 1, \"name\": \"test\", \"state\": \"done\","
         "  \"result\": \"FAILURE\", \"duration_ms\": 3400, \"text\": "
         "\"exit 1\", \"log\": {\"url\": \"" URL "/builds/41/steps/1/log\"}}"
         "]}}]}",
         "lin: build 41: FAILURE (4.8 s)\n", tails);
    TF_CHECK_INT(json_array_size(tails), 1);
    /* Every builder has ended: the job's own end is what is awaited. */
    TF_CHECK(tf_try_watch_settling(w));
    /* Late events of a build that is over say nothing. */
    live(w, EV_STEP("41", "lin", "2", "cleanup", "running", "null", ""), "",
         false);
    json_decref(tails);
    tf_try_watch_free(w);
}

/* A build of one of our builders whose request we do not know yet (a
 * rerun without the patch): the snapshot is asked for; a retry's build
 * replaces the old one, and a late snapshot still showing the old build
 * does not bring it back. */
TF_TEST(live_retry_and_unknown_requests)
{
    tf_try_watch_t *w = tf_try_watch_new();
    json_t *tails = json_array();
    step(w,
         "{\"id\": 2, \"state\": \"running\", \"builders\": ["
         "{\"name\": \"lin\", \"request_id\": 5, \"state\": \"running\","
         " \"position\": null, \"result\": null, \"build\": {\"id\": 7,"
         " \"slave\": \"s1\", \"state\": \"running\", \"steps\": []}}]}",
         "lin: build 7 started on slave s1\n", tails);
    live(w, EV_BUILD("started", "8", "6", "lin", "s2"), "", true);
    live(w, EV_STEP("8", "lin", "0", "x", "running", "null", ""), "", true);
    live(w, "{\"type\": \"request\", \"event\": \"queued\", \"request\": "
            "{\"id\": 6, \"builder\": \"lin\", \"state\": \"pending\"}}",
         "", true);
    live(w, "{\"type\": \"request\", \"event\": \"queued\", \"request\": "
            "{\"id\": 90, \"builder\": \"other\", \"state\": \"pending\"}}",
         "", false);
    live(w, "{\"type\": \"overflow\", \"topics\": [\"builds\"]}", "", true);
    /* The slave was lost: the same request's next build. */
    live(w, EV_BUILD("started", "9", "5", "lin", "s3"),
         "lin: build 9 started on slave s3\n", false);
    live(w, EV_STEP("9", "lin", "0", "x", "running", "null", ""),
         "lin: step x started\n", false);
    step(w,
         "{\"id\": 2, \"state\": \"running\", \"builders\": ["
         "{\"name\": \"lin\", \"request_id\": 5, \"state\": \"running\","
         " \"position\": null, \"result\": null, \"build\": {\"id\": 7,"
         " \"slave\": \"s1\", \"state\": \"running\", \"steps\": ["
         " {\"index\": 0, \"name\": \"x\", \"state\": \"running\"}]}}]}",
         "", tails);
    /* Events that are not JSON objects of a known type change nothing. */
    live(w, "{\"type\": \"slave\", \"event\": \"lost\"}", "", false);
    live(w, "{\"type\": \"step\", \"build_id\": 9, \"builder\": \"lin\","
            " \"step\": {\"index\": -1, \"state\": \"running\"}}", "", false);
    live(w, "{\"type\": \"step\", \"build_id\": 9, \"builder\": \"lin\","
            " \"step\": {\"index\": 99999999, \"state\": \"running\"}}", "",
         false);
    live(w, "[]", "", false);
    json_decref(tails);
    tf_try_watch_free(w);
}

/* On a master that serves pages, the tables link the build's page. */
TF_TEST(tables_link_pages_when_there_are_pages)
{
    json_t *job = parse(
        "{\"id\": 4, \"state\": \"finished\", \"result\": \"SUCCESS\","
        " \"url\": \"" URL "/jobs/4\", \"page_url\": \"http://h/#/jobs/4\","
        " \"builders\": [{\"name\": \"b1\", \"state\": \"done\","
        " \"result\": \"SUCCESS\", \"build\": {\"id\": 9, \"slave\": \"s1\","
        " \"state\": \"finished\", \"result\": \"SUCCESS\", \"started_ms\": 0,"
        " \"finished_ms\": 1500, \"url\": \"" URL "/builds/9\","
        " \"page_url\": \"http://h/#/builds/9\"}}]}");
    tf_buf_t out;
    tf_buf_init(&out, 0);
    TF_CHECK_INT(tf_try_render_summary(job, &out), 0);
    TF_CHECK_STR((const char *)out.data,
                 "job 4: SUCCESS (every build passed)\n"
                 "  builder  result   duration  slave  build\n"
                 "  b1       SUCCESS  1.5 s     s1     http://h/#/builds/9\n");
    tf_buf_reset(&out);
    TF_CHECK_INT(tf_try_render_status(job, &out), 0);
    TF_CHECK(strstr((const char *)out.data,
                    "  url:         " URL "/jobs/4\n"
                    "  page:        http://h/#/jobs/4\n") != NULL);
    TF_CHECK(strstr((const char *)out.data, "  http://h/#/builds/9\n") !=
             NULL);
    tf_buf_free(&out);
    json_decref(job);
}

TF_TEST_MAIN()
