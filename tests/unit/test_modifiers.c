/*
 * test_modifiers.c - command modifiers: the slave's line matcher
 * (slave/modifiers.c) and the master's checks of the config keys that
 * declare them (master/config/config.c).
 *
 * The matcher's central promise is that results do not depend on how the
 * output was cut into reads, so most tests feed the same bytes whole, one
 * byte at a time, at every split point and in random pieces, and compare
 * everything the matcher reports.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "modifiers.h"
#include "tf_err.h"

#include "tf_test.h"

/* ---- helpers ---- */

static char *S(const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

/* A spec from a compact description; NULL members are absent. */
static tf_modifiers_t *spec_new(bool markers, const char *const *info,
                                const char *const *stat_names,
                                const char *const *stat_res,
                                const char *pass_if, const char *fail_if,
                                const char *warnings, uint32_t max)
{
    tf_modifiers_t *m = calloc(1, sizeof *m);
    if (!m)
        abort();
    m->markers = markers;
    while (info && info[m->ninfo])
        m->ninfo++;
    m->info = calloc(m->ninfo + 1, sizeof *m->info);
    for (size_t i = 0; i < m->ninfo; i++)
        m->info[i] = S(info[i]);
    while (stat_res && stat_res[m->nstats])
        m->nstats++;
    m->stats = calloc(m->nstats + 1, sizeof *m->stats);
    for (size_t i = 0; i < m->nstats; i++) {
        m->stats[i].regex = S(stat_res[i]);
        if (stat_names && stat_names[i] && *stat_names[i])
            m->stats[i].name = S(stat_names[i]);
    }
    m->pass_if = pass_if ? S(pass_if) : NULL;
    m->fail_if = fail_if ? S(fail_if) : NULL;
    m->warnings = warnings ? S(warnings) : NULL;
    m->warnings_max = max;
    return m;
}

static tf_mods_t *mods_new(const tf_modifiers_t *spec)
{
    tf_mods_t *x = NULL;
    char err[512] = "";
    int rc = tf_mods_new(spec, &x, err, sizeof err);
    TF_CHECK_INT(rc, 0);
    if (rc)
        fprintf(stderr, "tf_mods_new: %s\n", err);
    return x;
}

/* Everything a matcher reports, as one string, for comparisons. */
static char *summary(tf_mods_t *x, tf_result_t base, bool exited)
{
    char note[512], *out = NULL;
    size_t n, len = 0;
    uint64_t w = 0;
    FILE *f = open_memstream(&out, &len);
    tf_result_t r = tf_mods_verdict(x, base, exited, note, sizeof note);
    const char *info = tf_mods_info(x);
    fprintf(f, "result=%s note=[%s]\ninfo=[%s]\n", tf_result_name(r), note,
            info ? info : "(none)");
    const tf_stat_t *st = tf_mods_stats(x, &n);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "stat %s=%.17g\n", st[i].name, st[i].value);
    bool has = tf_mods_warnings(x, &w);
    fprintf(f, "warnings=%d:%llu\n", has, (unsigned long long)w);
    fclose(f);
    return out;
}

/* Feeds data on `stream` in pieces given by cuts (ascending offsets). */
static void feed_cut(tf_mods_t *x, tf_stream_t stream, const char *data,
                     size_t len, const size_t *cuts, size_t ncuts)
{
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        tf_mods_feed(x, stream, (const uint8_t *)data + at, end - at);
        at = end;
    }
}

/* Runs spec over data fed whole; returns the summary (caller frees). */
static char *run_whole(const tf_modifiers_t *spec, const char *data,
                       size_t len, tf_result_t base, bool exited)
{
    tf_mods_t *x = mods_new(spec);
    if (!x)
        return S("");
    tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)data, len);
    tf_mods_finish(x);
    char *s = summary(x, base, exited);
    tf_mods_free(x);
    return s;
}

/* ---- the sample output ---- */

static const char sample_out[] =
    "configure: ok\r\n"
    "warning: unused variable 'x'\n"
    "Ran 120 tests in 3.5s\n"
    "@@@TF_STAT binary_size=1048576@@@\n"
    "  @@@TF_INFO built on gcc 12@@@  \n"
    "@@@TF_STAT bad name=1@@@\n"
    "@@@TF_STAT x=1.2.3@@@\n"
    "@@@TF_STATS nope=1@@@\n"
    "time: compile 12.25\n"
    "time: link 0.5\n"
    "warning: shadowed declaration\n"
    "Ran 121 tests in 3.6s\n"
    "\xff\xfe invalid \x01 bytes\n"
    "ALL TESTS PASSED\n"
    "bin\0ary line\n"
    "no newline at the end";

static tf_modifiers_t *sample_spec(void)
{
    static const char *const info[] = {"^Ran ([0-9]+) tests", "^(\xff.*)$",
                                       "newline at (the end)$", NULL};
    static const char *const names[] = {"tests", "", "seconds", NULL};
    static const char *const res[] = {"^Ran ([0-9]+) tests",
                                      "^time: ([a-z]+) ([0-9.]+)$",
                                      "in ([0-9.]+)s$", NULL};
    return spec_new(true, info, names, res, "^ALL TESTS PASSED$", NULL,
                    "^warning:", 0);
}

static const char sample_want[] =
    "result=WARNINGS note=[2 warnings]\n"
    "info=[120\nbuilt on gcc 12\n121\n\xef\xbf\xbd\xef\xbf\xbd invalid "
    "\xef\xbf\xbd bytes\nthe end]\n"
    "stat tests=121\n"
    "stat seconds=3.6000000000000001\n"
    "stat binary_size=1048576\n"
    "stat compile=12.25\n"
    "stat link=0.5\n"
    "warnings=1:2\n";

/* ---- tests ---- */

TF_TEST(sample_whole)
{
    tf_modifiers_t *spec = sample_spec();
    char *got = run_whole(spec, sample_out, sizeof sample_out - 1, TF_SUCCESS,
                          true);
    TF_CHECK_STR(got, sample_want);
    free(got);
    tf_modifiers_free(spec);
}

/* Every single split point, every pair of nearby split points, one byte
 * at a time, and random pieces on both streams give the same summary. */
TF_TEST(chunk_splits_do_not_matter)
{
    tf_modifiers_t *spec = sample_spec();
    size_t len = sizeof sample_out - 1;
    for (size_t a = 0; a <= len; a++) {
        for (size_t b = a; b <= len && b <= a + 7; b++) {
            size_t cuts[2] = {a, b};
            tf_mods_t *x = mods_new(spec);
            if (!x)
                break;
            feed_cut(x, TF_STREAM_STDOUT, sample_out, len, cuts, 2);
            tf_mods_finish(x);
            char *got = summary(x, TF_SUCCESS, true);
            if (strcmp(got, sample_want) != 0) {
                fprintf(stderr, "cuts at %zu, %zu:\n%s\n", a, b, got);
                TF_CHECK(!"summary differs");
                a = len + 1;
            }
            free(got);
            tf_mods_free(x);
        }
    }
    /* One byte at a time, and random pieces, on stderr this time. */
    srand(42);
    for (int round = 0; round < 200; round++) {
        tf_mods_t *x = mods_new(spec);
        size_t at = 0;
        while (x && at < len) {
            size_t n = round == 0 ? 1 : 1 + (size_t)rand() % 40;
            if (n > len - at)
                n = len - at;
            tf_mods_feed(x, TF_STREAM_STDERR, (const uint8_t *)sample_out + at,
                         n);
            at += n;
        }
        tf_mods_finish(x);
        char *got = summary(x, TF_SUCCESS, true);
        TF_CHECK_STR(got, sample_want);
        free(got);
        tf_mods_free(x);
    }
    tf_modifiers_free(spec);
}

/* Each stream keeps its own partial line: interleaving stdout and stderr
 * mid-line does not glue lines of one to the other. */
TF_TEST(streams_have_their_own_lines)
{
    static const char *const info[] = {"^(out: .*)$", "^(err: .*)$", NULL};
    tf_modifiers_t *spec = spec_new(false, info, NULL, NULL, NULL, NULL,
                                    "^(out|err): w$", 0);
    tf_mods_t *x = mods_new(spec);
    tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)"out: a", 6);
    tf_mods_feed(x, TF_STREAM_STDERR, (const uint8_t *)"err: ", 5);
    tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)"b\nout: w\n", 9);
    tf_mods_feed(x, TF_STREAM_STDERR, (const uint8_t *)"w\nerr: c", 8);
    tf_mods_finish(x);
    /* Fed after the end: ignored. */
    tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)"out: late\n", 10);
    /* A bad stream number is ignored too. */
    tf_mods_feed(x, (tf_stream_t)3, (const uint8_t *)"out: x\n", 7);
    TF_CHECK_STR(tf_mods_info(x), "out: ab\nout: w\nerr: w\nerr: c");
    uint64_t w = 0;
    TF_CHECK(tf_mods_warnings(x, &w));
    TF_CHECK_INT(w, 2);
    tf_mods_free(x);
    tf_modifiers_free(spec);
}

/* The two streams' results combine as if stdout's lines came first,
 * however the reads on the two pipes interleave: every interleaving of
 * the same two streams, cut at random, gives the same summary. */
TF_TEST(stream_interleaving_does_not_matter)
{
    static const char *const info[] = {"^info: (.*)$", NULL};
    static const char *const names[] = {"n", "", NULL};
    static const char *const res[] = {"^n=([0-9]+)$",
                                      "^([a-z]+)=([0-9]+)s$", NULL};
    tf_modifiers_t *spec = spec_new(true, info, names, res, NULL, "^ERROR",
                                    "^warn", 0);
    static const char out[] = "info: o1\nn=1\nERROR: out\r\n"
                              "@@@TF_STAT m=5@@@\ncc=3s\ninfo: o2\r";
    static const char err[] = "warn\ninfo: e1\nn=2\nERROR: err\n"
                              "@@@TF_STAT m=6@@@\nld=4s\ninfo: e2";
    static const char want[] =
        "result=FAILURE note=[fail_if matched \"ERROR: out\"]\n"
        "info=[o1\no2\xef\xbf\xbd\ne1\ne2]\n"
        "stat n=2\nstat m=6\nstat cc=3\nstat ld=4\n"
        "warnings=1:1\n";
    srand(7);
    for (int round = 0; round < 300; round++) {
        tf_mods_t *x = mods_new(spec);
        size_t ao = 0, ae = 0, lo = sizeof out - 1, le = sizeof err - 1;
        while (x && (ao < lo || ae < le)) {
            /* Round 0 feeds all of stderr before any of stdout. */
            bool pick_err = round == 0 ? ae < le
                                       : (ao == lo || (ae < le && rand() % 2));
            size_t *at = pick_err ? &ae : &ao;
            size_t len = pick_err ? le : lo;
            size_t n = round == 0 ? len - *at : 1 + (size_t)rand() % 9;
            if (n > len - *at)
                n = len - *at;
            tf_mods_feed(x, pick_err ? TF_STREAM_STDERR : TF_STREAM_STDOUT,
                         (const uint8_t *)(pick_err ? err : out) + *at, n);
            *at += n;
        }
        tf_mods_finish(x);
        char *got = summary(x, TF_SUCCESS, true);
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "round %d:\n%s\n", round, got);
            TF_CHECK(!"summary depends on the interleaving");
            round = 300;
        }
        free(got);
        tf_mods_free(x);
    }
    tf_modifiers_free(spec);
}

/* "\r" belongs to the line end only right before "\n", wherever the reads
 * split the pair; a lone or trailing "\r" is content. */
TF_TEST(carriage_returns)
{
    static const char *const info[] = {"^(.*)$", NULL};
    tf_modifiers_t *spec = spec_new(false, info, NULL, NULL, NULL, NULL,
                                    "\r$", 0);
    static const char data[] = "a\r\nb\rc\n\r\nd\r\r\ne\r";
    /* Lines: "a", "b\rc", "", "d\r", "e\r" (unterminated). The empty
     * line adds no info piece. */
    static const char want[] =
        "result=WARNINGS note=[2 warnings]\n"
        "info=[a\nb\xef\xbf\xbd" "c\nd\xef\xbf\xbd\ne\xef\xbf\xbd]\n"
        "warnings=1:2\n";
    size_t len = sizeof data - 1;
    for (size_t a = 0; a <= len; a++) {
        size_t cuts[1] = {a};
        tf_mods_t *x = mods_new(spec);
        feed_cut(x, TF_STREAM_STDOUT, data, len, cuts, 1);
        tf_mods_finish(x);
        char *got = summary(x, TF_SUCCESS, true);
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "cut at %zu:\n%s\n", a, got);
            TF_CHECK(!"carriage returns depend on the cut");
            a = len + 1;
        }
        free(got);
        tf_mods_free(x);
    }
    tf_modifiers_free(spec);
}

/* At the cap: a "\r\n" right after exactly TF_MODS_LINE_MAX bytes ends
 * that one line; a "\r" that is the line's 65,536th content byte stays
 * with the first piece. Fed whole and one byte at a time around the cap. */
TF_TEST(carriage_return_at_the_cap)
{
    const size_t L = TF_MODS_LINE_MAX;
    tf_modifiers_t *spec = spec_new(false, NULL, NULL, NULL, NULL, NULL,
                                    "(^$)|(\r$)", 0);
    char *one = malloc(L + 4), *two = malloc(L + 4);
    memset(one, 'a', L);
    memcpy(one + L, "\r\n", 2);      /* one line, no empty one after */
    memset(two, 'a', L - 1);
    memcpy(two + L - 1, "\rb\n", 3);  /* pieces "a..a\r" and "b" */
    struct {
        const char *data;
        size_t len;
        uint64_t want;
    } cases[] = {{one, L + 2, 0}, {two, L + 2, 1}};
    for (size_t c = 0; c < 2; c++) {
        for (size_t cut = L - 2; cut <= L + 2; cut++) {
            size_t cuts[1] = {cut};
            tf_mods_t *x = mods_new(spec);
            feed_cut(x, TF_STREAM_STDOUT, cases[c].data, cases[c].len, cuts,
                     1);
            tf_mods_finish(x);
            uint64_t w = 99;
            tf_mods_warnings(x, &w);
            if (w != cases[c].want)
                fprintf(stderr, "case %zu cut %zu: %llu warnings\n", c, cut,
                        (unsigned long long)w);
            TF_CHECK_INT(w, cases[c].want);
            tf_mods_free(x);
        }
    }
    free(one);
    free(two);
    tf_modifiers_free(spec);
}

/* The notes: only for a rule that changed the result; the quoted line
 * escaped and cut at whole characters. */
TF_TEST(notes)
{
    struct {
        const char *pass_if, *fail_if, *out;
        tf_result_t base;
        tf_result_t want;
        const char *note;
    } cases[] = {
        {NULL, "^E", "E: x\n", TF_FAILURE, TF_FAILURE, ""},
        {"ok", NULL, "no\n", TF_FAILURE, TF_FAILURE, ""},
        {NULL, "^E", "E: \"q\" \\ b\n", TF_SUCCESS, TF_FAILURE,
         "fail_if matched \"E: \\\"q\\\" \\\\ b\""},
        /* 119 bytes, then a 2-byte character that would pass 120 (the
         * line and its note are filled in below). */
        {NULL, "^E", NULL, TF_SUCCESS, TF_FAILURE, NULL},
    };
    char long_line[200], long_note[200];
    memset(long_line, 'x', sizeof long_line);
    long_line[0] = 'E';
    memcpy(long_line + 119, "\xc3\xa9z\n", 5);
    snprintf(long_note, sizeof long_note, "fail_if matched \"%.119s\"",
             long_line);
    cases[3].out = long_line;
    cases[3].note = long_note;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tf_modifiers_t *spec = spec_new(false, NULL, NULL, NULL,
                                        cases[i].pass_if, cases[i].fail_if,
                                        NULL, 0);
        tf_mods_t *x = mods_new(spec);
        char note[512];
        tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)cases[i].out,
                     strlen(cases[i].out));
        tf_mods_finish(x);
        TF_CHECK_INT(tf_mods_verdict(x, cases[i].base, true, note,
                                     sizeof note),
                     cases[i].want);
        TF_CHECK_STR(note, cases[i].note);
        tf_mods_free(x);
        tf_modifiers_free(spec);
    }
}

/* Lines longer than the buffer are cut into TF_MODS_LINE_MAX pieces; a
 * line of exactly TF_MODS_LINE_MAX bytes is one line wherever its newline
 * arrives. Empty lines are counted with "^$" to see every line boundary. */
TF_TEST(long_lines_are_split)
{
    const size_t L = TF_MODS_LINE_MAX;
    size_t len = 3 * L + 100;
    char *big = malloc(len);
    memset(big, 'a', len);
    /* Line 1: exactly L bytes. Line 2: empty. Line 3: 2L + 5 bytes ending
     * in "END". Then the rest, unterminated. */
    big[L] = '\n';
    big[L + 1] = '\n';
    size_t l3 = L + 2, l3len = 2 * L + 5;
    memcpy(big + l3 + l3len - 3, "END", 3);
    big[l3 + l3len] = '\n';
    size_t used = l3 + l3len + 1;
    len = used + 10;
    static const char *const names[] = {"ends", "lines", NULL};
    static const char *const res[] = {"END$", "^(a*)$", NULL};
    tf_modifiers_t *spec = spec_new(false, NULL, names, res, NULL, NULL, "^$",
                                    0);
    const size_t cutsets[][3] = {
        {0, 0, 0},         {L, L, L},         {L + 1, L + 1, L + 1},
        {L - 1, L + 1, L + 2}, {1, L, 2 * L}, {l3 + L, l3 + L + 1, used - 1},
        {7, l3 + L - 1, l3 + 2 * L},
    };
    for (size_t k = 0; k < sizeof cutsets / sizeof cutsets[0]; k++) {
        tf_mods_t *x = mods_new(spec);
        feed_cut(x, TF_STREAM_STDOUT, big, len, cutsets[k], 3);
        tf_mods_finish(x);
        uint64_t w = 9;
        tf_mods_warnings(x, &w);
        /* Only line 2 is empty: no piece of a cut line becomes one. */
        TF_CHECK_INT(w, 1);
        size_t n = 0;
        const tf_stat_t *st = tf_mods_stats(x, &n);
        /* "END$" matched the last piece of line 3 (2L + 5 = L + L + 5). */
        TF_CHECK_INT(n, 0); /* "a*" lines are not numbers; END$ has none */
        (void)st;
        tf_mods_free(x);
    }
    tf_modifiers_free(spec);

    /* The pieces themselves: count them with a rule that matches any
     * non-empty line, and check the last piece of line 3 is 5 bytes. */
    spec = spec_new(false, NULL, NULL, NULL, NULL, NULL, ".", 0);
    tf_mods_t *x = mods_new(spec);
    tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)big, len);
    tf_mods_finish(x);
    uint64_t w = 0;
    tf_mods_warnings(x, &w);
    /* Line 1, line 3 (matched in three pieces, L, L and 5 bytes, but one
     * line: one warning), the unterminated tail. */
    TF_CHECK_INT(w, 3);
    tf_mods_free(x);
    tf_modifiers_free(spec);

    static const char *const info[] = {"^(a{0,5}END)$", NULL};
    spec = spec_new(false, info, NULL, NULL, NULL, NULL, NULL, 0);
    x = mods_new(spec);
    tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)big, len);
    tf_mods_finish(x);
    TF_CHECK_STR(tf_mods_info(x), "aaEND");
    tf_mods_free(x);
    tf_modifiers_free(spec);
    free(big);
}

/* A line cut at the cap counts once as a warning, and the line after it
 * counts on its own, whether the cut fell inside the line or right before
 * its newline. */
TF_TEST(cut_lines_count_once)
{
    const size_t L = TF_MODS_LINE_MAX;
    char *big = malloc(2 * L + 1);
    TF_CHECK(big != NULL);
    if (!big)
        return;
    memset(big, 'x', 2 * L + 1);
    tf_modifiers_t *spec = spec_new(false, NULL, NULL, NULL, NULL, NULL, "x",
                                    0);
    /* 2L + 1 bytes, cut twice, then a short matching line. */
    tf_mods_t *x = mods_new(spec);
    tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)big, 2 * L + 1);
    tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)"\nx\n", 3);
    tf_mods_finish(x);
    uint64_t w = 0;
    tf_mods_warnings(x, &w);
    TF_CHECK_INT(w, 2);
    tf_mods_free(x);
    /* Exactly L bytes whose newline comes in the next write. */
    x = mods_new(spec);
    tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)big, L);
    tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)"\nx\nx", 5);
    tf_mods_finish(x);
    tf_mods_warnings(x, &w);
    TF_CHECK_INT(w, 3);
    tf_mods_free(x);
    tf_modifiers_free(spec);
    free(big);
}

/* NUL bytes, "\r\n" and binary bytes in lines. */
TF_TEST(bytes_in_lines)
{
    static const char *const info[] = {"^x(.)y$", NULL};
    tf_modifiers_t *spec = spec_new(false, info, NULL, NULL, "z\xff$", NULL,
                                    "^w", 0);
    static const char data[] = "x\0y\r\nnope\x00w\n\x00z\xff\r\nw\r\r\n";
    char *got = run_whole(spec, data, sizeof data - 1, TF_FAILURE, true);
#ifdef REG_STARTEND
    /* The NUL is matched as a byte, then shown as U+FFFD. */
    TF_CHECK_STR(got, "result=SUCCESS note=[pass_if matched]\n"
                      "info=[\xef\xbf\xbd]\nwarnings=1:1\n");
#endif
    free(got);
    tf_modifiers_free(spec);
}

TF_TEST(markers)
{
    static const char out[] =
        "@@@TF_STAT a=1@@@\n"
        "@@@TF_STAT a=2@@@\n"                 /* the last value wins */
        "\t@@@TF_STAT  b = -3.5e2 @@@\r\n"   /* spaces, CRLF */
        "@@@TF_STAT c=0x10@@@\n"              /* not decimal */
        "@@@TF_STAT d=inf@@@\n"
        "@@@TF_STAT e=1e999@@@\n"             /* overflows */
        "@@@TF_STAT f=.5@@@\n"
        "@@@TF_STAT g=5.@@@\n"
        "@@@TF_STAT =5@@@\n"
        "@@@TF_STAT -h=5@@@\n"                /* not a valid name */
        "@@@TF_STAT i=5@@@ trailing\n"        /* not the whole line */
        "echo @@@TF_STAT j=5@@@\n"
        "@@@TF_STAT k=5@@\n"
        "@@@TF_STATk=5@@@\n"
        "@@@TF_STAT@@@\n"
        "@@@TF_INFO@@@\n"
        "@@@TF_INFO @@@\n"
        "@@@TF_INFO  hello   world  @@@\n"
        "@@@TF_INFO second@@@\n"
        "@@@TF_WARNING x@@@\n"
        "@@@TF_STAT l=1e+3@@@\n"
        "@@@TF_STAT m=1e@@@\n";
    tf_modifiers_t *spec = spec_new(true, NULL, NULL, NULL, NULL, NULL, NULL,
                                    0);
    char *got = run_whole(spec, out, sizeof out - 1, TF_SUCCESS, true);
    TF_CHECK_STR(got, "result=SUCCESS note=[]\n"
                      "info=[hello   world\nsecond]\n"
                      "stat a=2\nstat b=-350\nstat f=0.5\nstat g=5\n"
                      "stat l=1000\nwarnings=0:0\n");
    free(got);
    /* With markers off the same output gives nothing. */
    spec->markers = false;
    got = run_whole(spec, out, sizeof out - 1, TF_SUCCESS, true);
    TF_CHECK_STR(got, "result=SUCCESS note=[]\ninfo=[(none)]\nwarnings=0:0\n");
    free(got);
    tf_modifiers_free(spec);
}

/* Caps: info stops at TF_PROTO_MAX_INFO_TEXT bytes (valid UTF-8, no cut
 * sequence), stats at TF_PROTO_MAX_STATS names. */
TF_TEST(caps)
{
    static const char *const info[] = {"^(.*)$", NULL};
    tf_modifiers_t *spec = spec_new(true, info, NULL, NULL, NULL, NULL, NULL,
                                    0);
    tf_mods_t *x = mods_new(spec);
    char line[64];
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(line, sizeof line, "@@@TF_STAT s%d=%d@@@\n", i, i);
        tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)line, (size_t)n);
        /* A 2-byte character, so a cut could land inside one. */
        tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)"\xc3\xa9\n", 3);
    }
    tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)"@@@TF_STAT s0=-1@@@\n",
                 20);
    tf_mods_finish(x);
    size_t n = 0;
    const tf_stat_t *st = tf_mods_stats(x, &n);
    TF_CHECK_INT(n, TF_PROTO_MAX_STATS);
    TF_CHECK_STR(st[0].name, "s0");
    TF_CHECK(st[0].value == -1.0); /* updates still land */
    TF_CHECK_STR(st[63].name, "s63");
    const char *inf = tf_mods_info(x);
    TF_CHECK(inf && strlen(inf) <= TF_PROTO_MAX_INFO_TEXT);
    TF_CHECK(inf && strlen(inf) > TF_PROTO_MAX_INFO_TEXT - 64);
    /* It ends on a whole piece or a whole character. */
    size_t il = inf ? strlen(inf) : 0;
    TF_CHECK(il >= 2 && (unsigned char)inf[il - 1] != 0xc3);
    TF_CHECK(inf && strncmp(inf, "@@@TF_STAT s0=0@@@\n\xc3\xa9\n", 21) == 0);
    tf_mods_free(x);
    tf_modifiers_free(spec);
}

/* The success and warnings rules, case by case. */
TF_TEST(verdicts)
{
    struct {
        const char *pass_if, *fail_if, *warn;
        uint32_t max;
        const char *out;
        tf_result_t base;
        bool exited;
        tf_result_t want;
        const char *note;
    } cases[] = {
        /* fail_if turns a zero exit into FAILURE, and wins over pass_if. */
        {NULL, "^ERROR", NULL, 0, "ok\nERROR: disk full\n", TF_SUCCESS, true,
         TF_FAILURE, "fail_if matched \"ERROR: disk full\""},
        {"ok", "^ERROR", NULL, 0, "ok\nERROR\n", TF_SUCCESS, true, TF_FAILURE,
         "fail_if matched \"ERROR\""},
        {NULL, "^ERROR", NULL, 0, "fine\n", TF_SUCCESS, true, TF_SUCCESS, ""},
        {NULL, "^ERROR", NULL, 0, "fine\n", TF_FAILURE, true, TF_FAILURE, ""},
        /* pass_if turns a non-zero exit into SUCCESS... */
        {"^[0-9]+ passed$", NULL, NULL, 0, "12 passed\n", TF_FAILURE, true,
         TF_SUCCESS, "pass_if matched"},
        {"^[0-9]+ passed$", NULL, NULL, 0, "12 passed\n", TF_SUCCESS, true,
         TF_SUCCESS, ""},
        /* ...and its absence a zero exit into FAILURE. */
        {"^[0-9]+ passed$", NULL, NULL, 0, "12 failed\n", TF_SUCCESS, true,
         TF_FAILURE, "pass_if did not match"},
        /* Not for a step that did not exit by itself. */
        {"passed", "ERROR", NULL, 0, "passed\n", TF_FAILURE, false, TF_FAILURE,
         ""},
        {"passed", "ERROR", NULL, 0, "ERROR\n", TF_CANCELLED, false,
         TF_CANCELLED, ""},
        {"passed", NULL, NULL, 0, "nothing\n", TF_EXCEPTION, false,
         TF_EXCEPTION, ""},
        /* Warnings: over max and otherwise SUCCESS -> WARNINGS. */
        {NULL, NULL, "^warning", 0, "warning a\nwarning b\n", TF_SUCCESS, true,
         TF_WARNINGS, "2 warnings"},
        {NULL, NULL, "^warning", 0, "warning a\n", TF_SUCCESS, true,
         TF_WARNINGS, "1 warning"},
        {NULL, NULL, "^warning", 2, "warning a\nwarning b\n", TF_SUCCESS, true,
         TF_SUCCESS, ""},
        {NULL, NULL, "^warning", 2, "warning\nwarning\nwarning\n", TF_SUCCESS,
         true, TF_WARNINGS, "3 warnings (over max)"},
        {NULL, NULL, "^warning", 0, "no\n", TF_SUCCESS, true, TF_SUCCESS, ""},
        {NULL, NULL, "^warning", 0, "warning\n", TF_FAILURE, true, TF_FAILURE,
         ""},
        {"passed", NULL, "^warning", 0, "warning\npassed\n", TF_FAILURE, true,
         TF_WARNINGS, "pass_if matched; 1 warning"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tf_modifiers_t *spec = spec_new(false, NULL, NULL, NULL,
                                        cases[i].pass_if, cases[i].fail_if,
                                        cases[i].warn, cases[i].max);
        tf_mods_t *x = mods_new(spec);
        char note[512];
        tf_mods_feed(x, TF_STREAM_STDOUT, (const uint8_t *)cases[i].out,
                     strlen(cases[i].out));
        tf_mods_finish(x);
        tf_result_t r = tf_mods_verdict(x, cases[i].base, cases[i].exited,
                                        note, sizeof note);
        if (r != cases[i].want || strcmp(note, cases[i].note) != 0) {
            fprintf(stderr, "case %zu: got %s [%s], want %s [%s]\n", i,
                    tf_result_name(r), note, tf_result_name(cases[i].want),
                    cases[i].note);
            TF_CHECK(!"verdict");
        }
        tf_mods_free(x);
        tf_modifiers_free(spec);
    }
    /* No modifiers at all: the result stands. */
    char note[8];
    TF_CHECK_INT(tf_mods_verdict(NULL, TF_FAILURE, true, note, sizeof note),
                 TF_FAILURE);
    TF_CHECK_STR(note, "");
}

TF_TEST(bad_specs)
{
    static const char *const bad_info[] = {"ok", "(unclosed", NULL};
    static const char *const one_group[] = {"^([a-z]+)=", NULL};
    static const char *const bad_stat[] = {"[z-a]", NULL};
    struct {
        tf_modifiers_t *spec;
        const char *want;
    } cases[] = {
        {spec_new(false, bad_info, NULL, NULL, NULL, NULL, NULL, 0),
         "info[1]: invalid regular expression \"(unclosed\": "},
        {spec_new(false, NULL, NULL, one_group, NULL, NULL, NULL, 0),
         "stats[0]: a stats rule without a name needs two groups"},
        {spec_new(false, NULL, NULL, bad_stat, NULL, NULL, NULL, 0),
         "stats[0]: invalid regular expression \"[z-a]\": "},
        {spec_new(false, NULL, NULL, NULL, "a{2,1}", NULL, NULL, 0),
         "success.pass_if: invalid regular expression"},
        {spec_new(false, NULL, NULL, NULL, NULL, "(", NULL, 0),
         "success.fail_if: invalid regular expression"},
        {spec_new(false, NULL, NULL, NULL, NULL, NULL, "*", 0),
         "warnings.regex: invalid regular expression"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tf_mods_t *x = (tf_mods_t *)1;
        char err[512] = "";
        TF_CHECK_INT(tf_mods_new(cases[i].spec, &x, err, sizeof err),
                     TF_EINVAL);
        TF_CHECK(x == NULL);
        if (strncmp(err, cases[i].want, strlen(cases[i].want)) != 0) {
            fprintf(stderr, "case %zu: \"%s\"\n", i, err);
            TF_CHECK(!"error sentence");
        }
        tf_modifiers_free(cases[i].spec);
    }
    tf_mods_free(NULL);
}

/* A 50 MB stream through a few rules stays within its caps and finds the
 * one marker buried in it (a coarse guard against quadratic behaviour:
 * the unit-test time limit would catch it). */
TF_TEST(big_stream)
{
    static const char *const info[] = {"^needle ([0-9]+)$", NULL};
    static const char *const names[] = {"n", NULL};
    static const char *const res[] = {"^needle ([0-9]+)$", NULL};
    tf_modifiers_t *spec = spec_new(true, info, names, res, "^needle",
                                    "^NEVER", "warn", 0);
    tf_mods_t *x = mods_new(spec);
    uint8_t *chunk = malloc(TF_PROTO_MAX_CHUNK);
    uint32_t seed = 7;
    for (size_t i = 0; i < TF_PROTO_MAX_CHUNK; i++) {
        seed = seed * 1103515245u + 12345u;
        chunk[i] = (uint8_t)(seed >> 16);
    }
    for (int k = 0; k < 800; k++) { /* 800 x 64 KiB = 50 MiB */
        tf_mods_feed(x, k % 2 ? TF_STREAM_STDERR : TF_STREAM_STDOUT, chunk,
                     TF_PROTO_MAX_CHUNK);
        if (k == 400)
            tf_mods_feed(x, TF_STREAM_STDERR,
                         (const uint8_t *)"\nneedle 42\n", 11);
    }
    tf_mods_finish(x);
    size_t n = 0;
    const tf_stat_t *st = tf_mods_stats(x, &n);
    TF_CHECK_INT(n, 1);
    TF_CHECK(n == 1 && st[0].value == 42.0);
    TF_CHECK_STR(tf_mods_info(x), "42");
    char note[256];
    TF_CHECK_INT(tf_mods_verdict(x, TF_FAILURE, true, note, sizeof note),
                 TF_SUCCESS);
    tf_mods_free(x);
    tf_modifiers_free(spec);
    free(chunk);
}

/* ---- the master's config keys ---- */

static int load_str(const char *text, tf_config_t **c, tf_cfg_diags_t *d)
{
    return tf_config_load_text("/etc/tf/m.json", text, strlen(text), c, d);
}

static void dump_diags(const tf_cfg_diags_t *d)
{
    for (size_t i = 0; i < d->count; i++) {
        char *s = tf_cfg_diag_format(&d->items[i]);
        fprintf(stderr, "  diag %zu: %s\n", i, s ? s : "(null)");
        free(s);
    }
}

TF_TEST(config_valid)
{
    const char *text =
        "{\"builders\": [{\"name\": \"b\", \"steps\": [\n"
        " {\"name\": \"plain\", \"command\": \"true\"},\n"
        " {\"name\": \"quiet\", \"command\": \"true\", \"markers\": false},\n"
        " {\"name\": \"all\", \"command\": \"make check\",\n"
        "  \"info\": [\"^Ran ([0-9]+) tests\"],\n"
        "  \"stats\": [{\"name\": \"tests\", \"regex\": \"^Ran ([0-9]+)\"},\n"
        "            {\"regex\": \"^time: ([a-z]+) ([0-9.]+)$\"}],\n"
        "  \"success\": {\"pass_if\": \"^OK$\", \"fail_if\": \"^FAIL\"},\n"
        "  \"warnings\": {\"regex\": \"warning:\", \"max\": 3}},\n"
        " {\"name\": \"short\", \"command\": \"x\", \"warnings\": \"W\",\n"
        "  \"markers\": false}\n"
        "]}]}\n";
    tf_config_t *c = NULL;
    tf_cfg_diags_t d = {0};
    TF_CHECK_INT(load_str(text, &c, &d), 0);
    dump_diags(&d);
    if (!c)
        return;
    const tf_cfg_builder_t *b = &c->builders[0];
    TF_CHECK_INT(b->nsteps, 4);
    const tf_modifiers_t *m = b->steps[0].spec.modifiers;
    TF_CHECK(m && m->markers && !m->ninfo && !m->nstats && !m->pass_if &&
             !m->fail_if && !m->warnings);
    TF_CHECK(b->steps[1].spec.modifiers == NULL); /* nothing to do */
    m = b->steps[2].spec.modifiers;
    TF_CHECK(m != NULL);
    if (m) {
        TF_CHECK(m->markers);
        TF_CHECK_INT(m->ninfo, 1);
        TF_CHECK_STR(m->info[0], "^Ran ([0-9]+) tests");
        TF_CHECK_INT(m->nstats, 2);
        TF_CHECK_STR(m->stats[0].name, "tests");
        TF_CHECK(m->stats[1].name == NULL);
        TF_CHECK_STR(m->stats[1].regex, "^time: ([a-z]+) ([0-9.]+)$");
        TF_CHECK_STR(m->pass_if, "^OK$");
        TF_CHECK_STR(m->fail_if, "^FAIL");
        TF_CHECK_STR(m->warnings, "warning:");
        TF_CHECK_INT(m->warnings_max, 3);
    }
    m = b->steps[3].spec.modifiers;
    TF_CHECK(m && !m->markers && m->warnings && m->warnings_max == 0);
    /* A copy (what build_start carries) is deep and equal. */
    tf_step_spec_t copy;
    TF_CHECK_INT(tf_step_spec_copy(&copy, &b->steps[2].spec), 0);
    TF_CHECK(copy.modifiers && copy.modifiers != b->steps[2].spec.modifiers);
    if (copy.modifiers) {
        TF_CHECK_STR(copy.modifiers->stats[0].regex, "^Ran ([0-9]+)");
        TF_CHECK(copy.modifiers->stats[0].regex !=
                 b->steps[2].spec.modifiers->stats[0].regex);
    }
    tf_step_spec_clear(&copy);
    tf_config_free(c);
    tf_cfg_diags_clear(&d);
}

static const char bad_config[] =
    "{\"builders\": [{\"name\": \"b\", \"steps\": [\n"
    " {\"name\": \"s1\", \"command\": \"x\", \"info\": \"^x\"},\n"
    " {\"name\": \"s2\", \"command\": \"x\", \"info\": [\"ok\", \"(\", 5, \"\"]},\n"
    " {\"name\": \"s3\", \"command\": \"x\", \"stats\": [\n"
    "   {\"name\": \"bad name\", \"regex\": \"([0-9]+)\"},\n"
    "   {\"regex\": \"^([a-z]+)=\"},\n"
    "   {\"name\": \"n\"},\n"
    "   {\"name\": \"m\", \"regx\": \"a\", \"regex\": \"[z-a]\"},\n"
    "   7]},\n"
    " {\"name\": \"s4\", \"command\": \"x\", \"success\": {}},\n"
    " {\"name\": \"s5\", \"command\": \"x\", \"success\": {\"pass_if\": \"(\", "
    "\"fail\": \"x\"}},\n"
    " {\"name\": \"s6\", \"command\": \"x\", \"warnings\": {\"max\": -1}},\n"
    " {\"name\": \"s7\", \"command\": \"x\", \"warnings\": 5, \"markers\": "
    "\"yes\"},\n"
    " {\"name\": \"s8\", \"command\": \"x\", \"succes\": {\"pass_if\": \"a\"}}\n"
    "]}]}\n";

static const struct {
    int line, col;
    const char *key, *message;
} bad_expected[] = {
    {2, 41, "builders[0].steps[0].info",
     "expected an array of regular expressions"},
    {3, 48, "builders[0].steps[1].info[1]",
     "invalid regular expression: Unmatched ( or \\("},
    {3, 53, "builders[0].steps[1].info[2]",
     "expected a regular expression (a string)"},
    {3, 56, "builders[0].steps[1].info[3]", "must not be empty"},
    {5, 13, "builders[0].steps[2].stats[0].name",
     "invalid name \"bad name\": use 1 to 64 of A-Z a-z 0-9 . _ -, starting "
     "with a letter or digit"},
    {6, 14, "builders[0].steps[2].stats[1].regex",
     "without a \"name\", the regex needs two groups: the stat's name, then "
     "its value"},
    {7, 4, "builders[0].steps[2].stats[2]", "missing required key \"regex\""},
    {8, 18, "builders[0].steps[2].stats[3].regx",
     "unknown key \"regx\"; did you mean \"regex\"?"},
    {8, 40, "builders[0].steps[2].stats[3].regex",
     "invalid regular expression: Invalid range end"},
    {9, 4, "builders[0].steps[2].stats[4]", "expected an object"},
    {10, 44, "builders[0].steps[3].success",
     "give \"pass_if\", \"fail_if\" or both"},
    {11, 56, "builders[0].steps[4].success.pass_if",
     "invalid regular expression: Unmatched ( or \\("},
    {11, 61, "builders[0].steps[4].success.fail", "unknown key \"fail\""},
    {12, 45, "builders[0].steps[5].warnings", "missing required key \"regex\""},
    {12, 53, "builders[0].steps[5].warnings.max",
     "must not be negative (got -1)"},
    {13, 45, "builders[0].steps[6].warnings",
     "expected a regular expression or an object with \"regex\" and \"max\""},
    {13, 59, "builders[0].steps[6].markers", "expected true or false"},
    {14, 33, "builders[0].steps[7].succes",
     "unknown key \"succes\"; did you mean \"success\"?"},
};

/* Every error at once, each at its file:line:col, like the rest of the
 * configuration. */
TF_TEST(config_errors_with_positions)
{
    tf_config_t *c = (tf_config_t *)1;
    tf_cfg_diags_t d = {0};
    size_t n = sizeof bad_expected / sizeof bad_expected[0];
    TF_CHECK_INT(load_str(bad_config, &c, &d), TF_ECONFIG);
    TF_CHECK(c == NULL);
    TF_CHECK_INT(d.count, n);
    for (size_t i = 0; i < n && i < d.count; i++) {
        const tf_cfg_diag_t *g = &d.items[i];
        TF_CHECK_STR(g->file, "/etc/tf/m.json");
        TF_CHECK_INT(g->line, bad_expected[i].line);
        TF_CHECK_INT(g->col, bad_expected[i].col);
        TF_CHECK_STR(g->key, bad_expected[i].key);
        TF_CHECK_STR(g->message, bad_expected[i].message);
    }
    if (d.count != n)
        dump_diags(&d);
    tf_cfg_diags_clear(&d);

    /* Caps: 33 rules, a regex over 1024 bytes. */
    char *text = malloc(16384);
    size_t o = (size_t)snprintf(text, 16384, "{\"builders\": [{\"name\": \"b\", "
                                "\"steps\": [{\"name\": \"s\", \"command\": "
                                "\"x\", \"info\": [");
    for (int i = 0; i < 33; i++)
        o += (size_t)snprintf(text + o, 16384 - o, "%s\"a\"", i ? "," : "");
    o += (size_t)snprintf(text + o, 16384 - o, "], \"warnings\": \"");
    memset(text + o, 'w', 1025);
    o += 1025;
    snprintf(text + o, 16384 - o, "\"}]}]}");
    TF_CHECK_INT(load_str(text, &c, &d), TF_ECONFIG);
    TF_CHECK_INT(d.count, 2);
    if (d.count == 2) {
        TF_CHECK_STR(d.items[0].message, "too many rules (33; at most 32)");
        TF_CHECK_STR(d.items[1].key, "builders[0].steps[0].warnings");
        TF_CHECK_STR(d.items[1].message, "longer than 1024 bytes");
    } else {
        dump_diags(&d);
    }
    tf_cfg_diags_clear(&d);
    free(text);
}

TF_TEST_MAIN()
