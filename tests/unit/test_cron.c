/*
 * test_cron.c - the pure parts of continuous builds: cron expressions and
 * their next fire time, path filters, and parsing git log output.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "changes/poller.h"
#include "changes/schedulers.h"
#include "tf_err.h"
#include "tf_test.h"

/* ms of a UTC date and time. */
static int64_t utc(int y, int mon, int d, int h, int min)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = min;
    return (int64_t)timegm(&tm) * 1000;
}

static int64_t next_of(const char *spec, int64_t after)
{
    tf_cron_t c;
    char err[160];
    if (tf_cron_parse(spec, &c, err, sizeof(err)) != 0) {
        fprintf(stderr, "cannot parse \"%s\": %s\n", spec, err);
        return -2;
    }
    return tf_cron_next(&c, after);
}

static bool parses(const char *spec, char *err, size_t errlen)
{
    tf_cron_t c;
    return tf_cron_parse(spec, &c, err, errlen) == 0;
}

TF_TEST(cron_parse_fields)
{
    tf_cron_t c;
    char err[160];
    TF_CHECK_INT(tf_cron_parse("0 3 * * *", &c, err, sizeof(err)), 0);
    TF_CHECK(c.minutes == 1);
    TF_CHECK(c.hours == 1u << 3);
    TF_CHECK(c.mday_star && c.wday_star);
    TF_CHECK_INT(tf_cron_parse("*/15 8-18/2 1,15 jan-mar mon-fri", &c, err,
                               sizeof(err)),
                 0);
    TF_CHECK(c.minutes == (1ull | 1ull << 15 | 1ull << 30 | 1ull << 45));
    TF_CHECK(c.hours == (1u << 8 | 1u << 10 | 1u << 12 | 1u << 14 |
                         1u << 16 | 1u << 18));
    TF_CHECK(c.mdays == (1u << 1 | 1u << 15));
    TF_CHECK(c.months == (1u << 1 | 1u << 2 | 1u << 3));
    TF_CHECK(c.wdays == 0x3e);
    TF_CHECK(!c.mday_star && !c.wday_star);
    /* 7 is Sunday; N/S runs to the end; names in any case. */
    TF_CHECK_INT(tf_cron_parse("30/10 0 * DEC 7", &c, err, sizeof(err)), 0);
    TF_CHECK(c.minutes == (1ull << 30 | 1ull << 40 | 1ull << 50));
    TF_CHECK(c.wdays == 1);
    TF_CHECK(c.months == 1u << 12);
    TF_CHECK_INT(tf_cron_parse("  5   4\t* * sun  ", &c, err, sizeof(err)),
                 0);
}

TF_TEST(cron_parse_errors)
{
    char err[160];
    TF_CHECK(!parses("", err, sizeof(err)));
    TF_CHECK(strstr(err, "expected 5 fields") != NULL);
    TF_CHECK(!parses("0 3 * *", err, sizeof(err)));
    TF_CHECK(!parses("0 3 * * * *", err, sizeof(err)));
    TF_CHECK(strstr(err, "got more") != NULL);
    TF_CHECK(!parses("60 3 * * *", err, sizeof(err)));
    TF_CHECK(strstr(err, "field 1 (minute)") != NULL);
    TF_CHECK(strstr(err, "0..59") != NULL);
    TF_CHECK(!parses("0 24 * * *", err, sizeof(err)));
    TF_CHECK(strstr(err, "field 2 (hour)") != NULL);
    TF_CHECK(!parses("0 0 0 * *", err, sizeof(err)));
    TF_CHECK(strstr(err, "field 3 (day of month)") != NULL);
    TF_CHECK(!parses("0 0 * 13 *", err, sizeof(err)));
    TF_CHECK(!parses("0 0 * * 8", err, sizeof(err)));
    TF_CHECK(!parses("*/0 * * * *", err, sizeof(err)));
    TF_CHECK(strstr(err, "bad step") != NULL);
    TF_CHECK(!parses("5-1 * * * *", err, sizeof(err)));
    TF_CHECK(!parses("a * * * *", err, sizeof(err)));
    TF_CHECK(!parses("1,,2 * * * *", err, sizeof(err)));
    TF_CHECK(!parses("1- * * * *", err, sizeof(err)));
    TF_CHECK(!parses("* * * foo *", err, sizeof(err)));
    TF_CHECK(!parses("* * * * mond", err, sizeof(err)));
    TF_CHECK(!parses("@daily", err, sizeof(err)));
}

TF_TEST(cron_next_times)
{
    int64_t t = utc(2026, 3, 10, 12, 34); /* a Tuesday */
    TF_CHECK_INT(next_of("0 3 * * *", t), utc(2026, 3, 11, 3, 0));
    TF_CHECK_INT(next_of("* * * * *", t), utc(2026, 3, 10, 12, 35));
    /* Strictly after: a time on the minute does not fire again. */
    TF_CHECK_INT(next_of("34 12 * * *", t), utc(2026, 3, 11, 12, 34));
    TF_CHECK_INT(next_of("34 12 * * *", t - 1), t);
    TF_CHECK_INT(next_of("34 12 * * *", t + 59999), utc(2026, 3, 11, 12, 34));
    TF_CHECK_INT(next_of("*/20 * * * *", t), utc(2026, 3, 10, 12, 40));
    TF_CHECK_INT(next_of("0 0 1 * *", t), utc(2026, 4, 1, 0, 0));
    TF_CHECK_INT(next_of("0 0 * * mon", t), utc(2026, 3, 16, 0, 0));
    TF_CHECK_INT(next_of("0 0 * * 0", t), utc(2026, 3, 15, 0, 0));
    TF_CHECK_INT(next_of("0 0 * * 7", t), utc(2026, 3, 15, 0, 0));
    /* Both day fields restricted: either one (the 13th, or a Monday). */
    TF_CHECK_INT(next_of("0 0 13 * mon", t), utc(2026, 3, 13, 0, 0));
    TF_CHECK_INT(next_of("0 0 20 * mon", t), utc(2026, 3, 16, 0, 0));
    /* One restricted by a step that starts with '*': both must match. */
    TF_CHECK_INT(next_of("0 0 */2 * mon", t), utc(2026, 3, 23, 0, 0));
    /* Month and year boundaries, leap years. */
    TF_CHECK_INT(next_of("59 23 31 12 *", t), utc(2026, 12, 31, 23, 59));
    TF_CHECK_INT(next_of("0 0 29 2 *", t), utc(2028, 2, 29, 0, 0));
    TF_CHECK_INT(next_of("0 0 31 * *", utc(2026, 4, 1, 0, 0)),
                 utc(2026, 5, 31, 0, 0));
    /* Never: the 30th of February. */
    TF_CHECK_INT(next_of("0 0 30 2 *", t), -1);
    TF_CHECK_INT(next_of("15 10 * * *", utc(2026, 3, 10, 10, 15)),
                 utc(2026, 3, 11, 10, 15));
}

TF_TEST(path_prefixes)
{
    TF_CHECK(tf_path_match("src", "src/a.c"));
    TF_CHECK(tf_path_match("src/", "src/a.c"));
    TF_CHECK(tf_path_match("src", "src"));
    TF_CHECK(tf_path_match("src/lib", "src/lib/x/y.c"));
    TF_CHECK(tf_path_match("/src", "src/a.c"));
    TF_CHECK(tf_path_match("./src", "src/a.c"));
    TF_CHECK(!tf_path_match("src", "srcx/a.c"));
    TF_CHECK(!tf_path_match("src", "lib/src/a.c"));
    TF_CHECK(!tf_path_match("src/a", "src/ab.c"));
    TF_CHECK(tf_path_match("README", "README"));
    TF_CHECK(!tf_path_match("README", "README.md"));
    TF_CHECK(tf_path_match("", "anything"));
    TF_CHECK(tf_path_match("/", "anything"));
}

TF_TEST(path_globs)
{
    TF_CHECK(tf_path_match("*.c", "a.c"));
    TF_CHECK(!tf_path_match("*.c", "src/a.c"));
    TF_CHECK(tf_path_match("src/*.c", "src/a.c"));
    TF_CHECK(!tf_path_match("src/*.c", "src/x/a.c"));
    TF_CHECK(tf_path_match("src/**/*.c", "src/a.c"));
    TF_CHECK(tf_path_match("src/**/*.c", "src/x/y/a.c"));
    TF_CHECK(!tf_path_match("src/**/*.c", "lib/a.c"));
    TF_CHECK(tf_path_match("**/*.md", "docs/a/b.md"));
    TF_CHECK(tf_path_match("**/*.md", "top.md"));
    TF_CHECK(tf_path_match("**.h", "a/b/c.h"));
    TF_CHECK(tf_path_match("doc*", "docs/x.txt"));
    TF_CHECK(tf_path_match("doc*", "doc"));
    TF_CHECK(tf_path_match("d?c/", "doc/x"));
    TF_CHECK(!tf_path_match("d?c", "d/c"));
    TF_CHECK(tf_path_match("test_[0-9].py", "test_3.py"));
    TF_CHECK(!tf_path_match("test_[0-9].py", "test_x.py"));
    TF_CHECK(tf_path_match("test_[!0-9].py", "test_x.py"));
    TF_CHECK(tf_path_match("a[]]b", "a]b"));
    TF_CHECK(tf_path_match("[abc", "[abc/d")); /* not a class: literal */
    TF_CHECK(tf_path_match("src/**", "src/a/b"));
    TF_CHECK(!tf_path_match("src/**", "srcx/a"));
    TF_CHECK(tf_path_match("*/Makefile", "lib/Makefile"));
    TF_CHECK(!tf_path_match("*/Makefile", "Makefile"));
}

TF_TEST(paths_important)
{
    char *filters[] = {"src/", "*.mk"};
    char *f1[] = {"docs/x.md", "README"};
    char *f2[] = {"docs/x.md", "src/main.c"};
    char *f3[] = {"rules.mk"};
    TF_CHECK(!tf_paths_important(filters, 2, f1, 2));
    TF_CHECK(tf_paths_important(filters, 2, f2, 2));
    TF_CHECK(tf_paths_important(filters, 2, f3, 1));
    TF_CHECK(!tf_paths_important(filters, 2, NULL, 0)); /* no files */
    TF_CHECK(tf_paths_important(NULL, 0, f1, 2));       /* no filters */
    TF_CHECK(tf_paths_important(NULL, 0, NULL, 0));
}

static const char H1[] = "1111111111111111111111111111111111111111";
static const char H2[] = "2222222222222222222222222222222222222222";
static const char H3[] = "abcdefabcdefabcdefabcdefabcdefabcdef0123";

/* Appends one record as git log -z --name-only prints it. */
static size_t rec(char *buf, size_t off, const char *hash, const char *an,
                  const char *ae, const char *ct, const char *msg,
                  const char *const *files)
{
    off += (size_t)sprintf(buf + off, "\x01%s", hash) + 1;
    off += (size_t)sprintf(buf + off, "%s", an) + 1;
    off += (size_t)sprintf(buf + off, "%s", ae) + 1;
    off += (size_t)sprintf(buf + off, "%s", ct) + 1;
    off += (size_t)sprintf(buf + off, "%s", msg) + 1;
    for (size_t i = 0; files && files[i]; i++)
        off += (size_t)sprintf(buf + off, "%s%s", i == 0 ? "\n" : "",
                               files[i]) + 1;
    return off;
}

TF_TEST(gitlog_parse)
{
    char buf[4096];
    size_t n = 0;
    const char *f1[] = {"src/a.c", "we ird\nname", NULL};
    const char *f3[] = {"\x01notamarker", NULL};
    n = rec(buf, n, H1, "Ann Example", "ann@example.org", "1700000000",
            "first line\n\nbody\n", f1);
    n = rec(buf, n, H2, "Bob", "bob@example.org", "1700000060", "empty\n",
            NULL);
    n = rec(buf, n, H3, "Caf\xc3\xa9 \xff", "c@example.org", "bad",
            "third\n", f3);
    tf_commit_t *c = NULL;
    size_t nc = 0;
    TF_CHECK_INT(tf_gitlog_parse(buf, n, true, &c, &nc), 0);
    TF_CHECK_INT(nc, 3);
    if (nc != 3) {
        tf_commits_free(c, nc);
        return;
    }
    TF_CHECK_STR(c[0].revision, H1);
    TF_CHECK_STR(c[0].author, "Ann Example");
    TF_CHECK_STR(c[0].email, "ann@example.org");
    TF_CHECK_INT(c[0].committer_ms, 1700000000000LL);
    TF_CHECK_STR(c[0].message, "first line\n\nbody\n");
    TF_CHECK_INT(c[0].nfiles, 2);
    TF_CHECK_STR(c[0].files[0], "src/a.c");
    TF_CHECK_STR(c[0].files[1], "we ird\nname");
    TF_CHECK_STR(c[1].revision, H2);
    TF_CHECK_INT(c[1].nfiles, 0);
    TF_CHECK_STR(c[1].message, "empty\n");
    TF_CHECK_STR(c[2].revision, H3);
    TF_CHECK_STR(c[2].author, "Caf\xc3\xa9 ?"); /* invalid UTF-8 */
    TF_CHECK_INT(c[2].committer_ms, 0);
    TF_CHECK_INT(c[2].nfiles, 1);
    TF_CHECK_STR(c[2].files[0], "\x01notamarker");
    tf_commits_free(c, nc);

    /* Cut short: the partial last record goes, unless it is alone. */
    TF_CHECK_INT(tf_gitlog_parse(buf, n - 5, false, &c, &nc), 0);
    TF_CHECK_INT(nc, 2);
    tf_commits_free(c, nc);
    size_t first = rec(buf, 0, H1, "A", "a@b", "1", "m\n", f1);
    TF_CHECK_INT(tf_gitlog_parse(buf, first - 3, false, &c, &nc), 0);
    TF_CHECK_INT(nc, 1);
    tf_commits_free(c, nc);
    /* A record cut before its message is no commit. */
    TF_CHECK_INT(tf_gitlog_parse(buf, 50, false, &c, &nc), 0);
    TF_CHECK_INT(nc, 0);
    TF_CHECK(c == NULL);
    /* Nothing, and garbage. */
    TF_CHECK_INT(tf_gitlog_parse("", 0, true, &c, &nc), 0);
    TF_CHECK_INT(nc, 0);
    TF_CHECK_INT(tf_gitlog_parse("garbage\0more", 12, true, &c, &nc), 0);
    TF_CHECK_INT(nc, 0);
}

TF_TEST(gitlog_parse_caps)
{
    size_t cap = 1200 * 16 + 1024;
    char *buf = malloc(cap);
    TF_CHECK(buf != NULL);
    if (!buf)
        return;
    size_t n = 0;
    n += (size_t)snprintf(buf, cap, "\x01%s", H1) + 1;
    static const char *const fields[] = {"A", "a@b", "1", "m"};
    for (size_t i = 0; i < 4; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s", fields[i]) + 1;
    for (int i = 0; i < 1200; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%sf%04d", i ? "" : "\n",
                              i) + 1;
    tf_commit_t *c = NULL;
    size_t nc = 0;
    TF_CHECK_INT(tf_gitlog_parse(buf, n, true, &c, &nc), 0);
    TF_CHECK_INT(nc, 1);
    if (nc == 1) {
        TF_CHECK_INT(c[0].nfiles, 1000);
        TF_CHECK(c[0].files_truncated);
        TF_CHECK_STR(c[0].files[999], "f0999");
    }
    tf_commits_free(c, nc);
    free(buf);
}

TF_TEST(mirror_names)
{
    char *a = tf_mirror_name("/srv/git/project.git");
    char *b = tf_mirror_name("https://example.org/a b/../project.git");
    char *c = tf_mirror_name("/srv/git/project.git/");
    TF_CHECK(a && b && c);
    if (a && b && c) {
        TF_CHECK(strncmp(a, "r-srv_git_project.git-", 22) == 0);
        TF_CHECK(strchr(b, '/') == NULL && strchr(b, ' ') == NULL);
        TF_CHECK(strcmp(a, c) != 0); /* the hash tells them apart */
        TF_CHECK(strlen(a) > 4 && strcmp(a + strlen(a) - 4, ".git") == 0);
    }
    free(a);
    free(b);
    free(c);
}

/* A glob with many stars against a long path that it almost matches: the
 * plain backtracking matcher tried every way to split the path among the
 * stars (exponential; found by tests/fuzz/fuzz_glob.c). Remembering what
 * each (glob, path) position pair gave answers it at once. */
TF_TEST(path_glob_with_many_stars_is_polynomial)
{
    char glob[128], path[1024], deep[2100];
    size_t o = 0;
    for (int i = 0; i < 20; i++) {
        glob[o++] = '*';
        glob[o++] = 'a';
    }
    glob[o++] = 'b';
    glob[o] = '\0';
    memset(path, 'a', sizeof path - 1);
    path[sizeof path - 1] = '\0';
    clock_t t0 = clock();
    TF_CHECK(!tf_path_match(glob, path));
    path[sizeof path - 2] = 'b';
    TF_CHECK(tf_path_match(glob, path));
    /* "**" spans components: the same with slashes everywhere. */
    for (o = 0; o + 2 < sizeof deep; o += 2) {
        deep[o] = 'a';
        deep[o + 1] = '/';
    }
    deep[o] = '\0';
    TF_CHECK(!tf_path_match("**/a**/a**/a**/a**/a**/a**/a**/a**/b", deep));
    TF_CHECK(clock() - t0 < 10 * CLOCKS_PER_SEC);
}

TF_TEST_MAIN()
