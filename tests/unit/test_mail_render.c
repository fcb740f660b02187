/*
 * test_mail_render.c - the pure pieces of result mails: header encodings
 * (RFC 2047, addresses, dates, threading ids), quoted-printable, line
 * cleaning, excerpt selection and its caps, and whole messages (their
 * headers, multipart structure, size cap and determinism).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "buf.h"
#include "mail/mail_render.h"
#include "tf_err.h"
#include "tf_test.h"

/* --- helpers --- */

static char *str_of(tf_buf_t *b)
{
    char *s = (char *)tf_buf_steal(b, NULL);
    return s ? s : strdup("");
}

static char *header_text(const char *in)
{
    tf_buf_t b;
    tf_buf_init(&b, 0);
    TF_CHECK_INT(tf_mail_header_text(&b, in), 0);
    return str_of(&b);
}

/* Decodes a header value made of encoded words (and plain text) back to
 * UTF-8, as a mail client would. */
static char *decode_words(const char *s)
{
    tf_buf_t out;
    tf_buf_init(&out, 0);
    while (*s) {
        const char *w = strstr(s, "=?UTF-8?B?");
        if (!w) {
            tf_buf_append_str(&out, s);
            break;
        }
        /* Whitespace between two encoded words is not text. */
        bool only_ws = true;
        for (const char *p = s; p < w; p++)
            only_ws = only_ws && (*p == ' ' || *p == '\r' || *p == '\n');
        if (!only_ws || out.len == 0)
            tf_buf_append(&out, s, (size_t)(w - s));
        const char *b64 = w + 10;
        const char *end = strstr(b64, "?=");
        if (!end)
            break;
        uint8_t raw[256];
        size_t n = 0;
        TF_CHECK_INT(tf_base64_decode(b64, (size_t)(end - b64), raw, &n), 0);
        tf_buf_append(&out, raw, n);
        s = end + 2;
    }
    return str_of(&out);
}

static char *qp(const char *in, size_t n)
{
    tf_buf_t b;
    tf_buf_init(&b, 0);
    TF_CHECK_INT(tf_mail_qp_encode(&b, in, n), 0);
    return str_of(&b);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                                  : -1;
}

/* Decodes quoted-printable with CRLF lines back to '\n' text. */
static char *qp_decode(const char *s, size_t n)
{
    tf_buf_t out;
    tf_buf_init(&out, 0);
    for (size_t i = 0; i < n;) {
        if (s[i] == '=' && i + 2 < n + 1 && i + 1 < n && s[i + 1] == '\r') {
            i += 3; /* soft break */
        } else if (s[i] == '=' && i + 2 < n) {
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            TF_CHECK(hi >= 0 && lo >= 0);
            char c = (char)(hi * 16 + lo);
            tf_buf_append(&out, &c, 1);
            i += 3;
        } else if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') {
            tf_buf_append(&out, "\n", 1);
            i += 2;
        } else {
            tf_buf_append(&out, s + i, 1);
            i++;
        }
    }
    return str_of(&out);
}

/* Every line of s (CRLF separated) is at most max characters and there is
 * no bare LF or CR. */
static void check_lines(const char *s, size_t n, size_t max)
{
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r') {
            TF_CHECK(i + 1 < n && s[i + 1] == '\n');
            TF_CHECK(col <= max);
            col = 0;
            i++;
            continue;
        }
        TF_CHECK(s[i] != '\n');
        col++;
    }
    TF_CHECK(col <= max);
}

static char *clean(const char *in, size_t n, size_t max)
{
    tf_buf_t b;
    tf_buf_init(&b, 0);
    TF_CHECK_INT(tf_mail_clean_line(&b, in, n, max), 0);
    return str_of(&b);
}

static size_t count(const char *hay, const char *needle)
{
    size_t c = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        c++;
    return c;
}

/* --- header pieces --- */

TF_TEST(header_text_ascii_stays)
{
    char *s = header_text("[TF] PASS: try job 7: fix the build");
    TF_CHECK_STR(s, "[TF] PASS: try job 7: fix the build");
    free(s);
    s = header_text("tabs\tand\nnewlines become spaces");
    TF_CHECK_STR(s, "tabs and newlines become spaces");
    free(s);
}

TF_TEST(header_text_rfc2047)
{
    const char *in = "FAIL: try job 9: Ünïcödé naïve café — 日本語のテキスト "
                     "and a long tail to need several encoded words";
    char *s = header_text(in);
    TF_CHECK(strncmp(s, "=?UTF-8?B?", 10) == 0);
    /* Each encoded word fits in 75 characters, words are folded. */
    for (const char *p = s; *p;) {
        size_t n = strcspn(p, "\r");
        TF_CHECK(n <= 76);
        p += n;
        if (*p == '\r') {
            TF_CHECK(strncmp(p, "\r\n ", 3) == 0);
            p += 3;
        }
    }
    TF_CHECK(strchr(s, '\r') != NULL);
    char *back = decode_words(s);
    TF_CHECK_STR(back, in);
    free(back);
    free(s);
    /* "=?" alone forces encoding: it would be read as a word. */
    s = header_text("a =?x?= b");
    back = decode_words(s);
    TF_CHECK(strncmp(s, "=?UTF-8?B?", 10) == 0);
    TF_CHECK_STR(back, "a =?x?= b");
    free(back);
    free(s);
    /* Invalid UTF-8 is replaced, never sent as is. */
    s = header_text("bad \xff byte");
    back = decode_words(s);
    TF_CHECK_STR(back, "bad \xef\xbf\xbd byte");
    free(back);
    free(s);
}

TF_TEST(header_address)
{
    tf_buf_t b;
    tf_buf_init(&b, 0);
    TF_CHECK_INT(tf_mail_header_address(&b, "Ann Example", "ann@ex.org"), 0);
    char *s = str_of(&b);
    TF_CHECK_STR(s, "\"Ann Example\" <ann@ex.org>");
    free(s);
    TF_CHECK_INT(tf_mail_header_address(&b, "A \"q\" \\b", "a@b"), 0);
    s = str_of(&b);
    TF_CHECK_STR(s, "\"A \\\"q\\\" \\\\b\" <a@b>");
    free(s);
    TF_CHECK_INT(tf_mail_header_address(&b, NULL, "a@b"), 0);
    s = str_of(&b);
    TF_CHECK_STR(s, "<a@b>");
    free(s);
    TF_CHECK_INT(tf_mail_header_address(&b, "Zoë Åström 山田", "z@ex.org"), 0);
    s = str_of(&b);
    TF_CHECK(strncmp(s, "=?UTF-8?B?", 10) == 0);
    TF_CHECK(strstr(s, "?= <z@ex.org>") != NULL);
    char *back = decode_words(s);
    TF_CHECK_STR(back, "Zoë Åström 山田 <z@ex.org>");
    free(back);
    free(s);
}

TF_TEST(date_and_domain)
{
    char d[TF_MAIL_DATE_LEN];
    tf_mail_date(0, d);
    TF_CHECK_STR(d, "Thu, 01 Jan 1970 00:00:00 +0000");
    tf_mail_date(1700000000123, d);
    TF_CHECK_STR(d, "Tue, 14 Nov 2023 22:13:20 +0000");
    TF_CHECK_STR(tf_mail_domain("ci@example.org"), "example.org");
    TF_CHECK_STR(tf_mail_domain("nobody"), "localhost");
    TF_CHECK_STR(tf_mail_domain("x@"), "localhost");
}

TF_TEST(thread_ids)
{
    char *a = tf_mail_thread_id("review", "https://r.example.org/c/42",
                                "ex.org");
    char *b = tf_mail_thread_id("review", "https://r.example.org/c/42",
                                "ex.org");
    char *c = tf_mail_thread_id("review", "https://r.example.org/c/43",
                                "ex.org");
    TF_CHECK(a && b && c);
    TF_CHECK_STR(a, b);
    TF_CHECK(strcmp(a, c) != 0);
    TF_CHECK(strncmp(a, "<tf-review.", 11) == 0);
    TF_CHECK(strlen(a) == strlen("<tf-review.") + 32 + strlen("@ex.org>"));
    TF_CHECK(strcmp(a + strlen(a) - 8, "@ex.org>") == 0);
    free(a);
    free(b);
    free(c);
}

/* --- quoted-printable --- */

TF_TEST(qp_basics)
{
    char *s = qp("a=b\n", 4);
    TF_CHECK_STR(s, "a=3Db\r\n");
    free(s);
    s = qp("trailing space \nand tab\t\n", 25);
    TF_CHECK_STR(s, "trailing space=20\r\nand tab=09\r\n");
    free(s);
    s = qp("end ", 4);
    TF_CHECK_STR(s, "end=20");
    free(s);
    s = qp(".dot\nFrom me\nFromage\n", 21);
    TF_CHECK_STR(s, "=2Edot\r\n=46rom me\r\nFromage\r\n");
    free(s);
    s = qp("caf\xc3\xa9\r\n", 7);
    TF_CHECK_STR(s, "caf=C3=A9=0D\r\n");
    free(s);
}

TF_TEST(qp_long_lines_round_trip)
{
    char in[2000];
    size_t n = 0;
    for (int i = 0; i < 300; i++)
        in[n++] = "abc=d\xc3\xa9 ."[i % 9];
    in[n++] = '\n';
    for (int i = 0; i < 200; i++)
        in[n++] = (char)('A' + i % 26);
    in[n++] = ' ';
    in[n] = '\0';
    char *s = qp(in, n);
    check_lines(s, strlen(s), 76);
    char *back = qp_decode(s, strlen(s));
    TF_CHECK_STR(back, in);
    free(back);
    free(s);
    /* Every byte value survives. */
    char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (char)(i == '\n' ? 'x' : i == 0 ? 'y' : i);
    s = qp(all, 256);
    check_lines(s, strlen(s), 76);
    back = qp_decode(s, strlen(s));
    TF_CHECK(memcmp(back, all, 256) == 0);
    free(back);
    free(s);
}

TF_TEST(html_escape)
{
    tf_buf_t b;
    tf_buf_init(&b, 0);
    TF_CHECK_INT(tf_mail_html_escape(&b, "<a href=\"x\">Tom & 'Jerry'</a>"),
                 0);
    TF_CHECK_INT(tf_mail_html_escape(&b, ""), 0);
    TF_CHECK_INT(tf_mail_html_escape(&b, " plain é"), 0);
    char *s = str_of(&b);
    TF_CHECK_STR(s, "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;"
                    "&lt;/a&gt; plain é");
    free(s);
}

/* --- cleaning lines --- */

TF_TEST(clean_line)
{
    char *s = clean("\x1b[31merror:\x1b[0m red", 19, 100);
    TF_CHECK_STR(s, "error: red");
    free(s);
    s = clean("10%\r20%\rdone\r\n", 14, 100);
    TF_CHECK_STR(s, "done");
    free(s);
    s = clean("a\xff\xfe b\x01\x7f\tc", 10, 100);
    TF_CHECK_STR(s, "a\xef\xbf\xbd\xef\xbf\xbd b\tc");
    free(s);
    s = clean("\xe6\x97\xa5\xe6\x9c\xac", 6, 4); /* never half a char */
    TF_CHECK_STR(s, "\xe6\x97\xa5 [...]");
    free(s);
    s = clean("\xed\xa0\x80 surrogate", 13, 100);
    TF_CHECK(strncmp(s, "\xef\xbf\xbd", 3) == 0);
    free(s);
    tf_buf_t b;
    tf_buf_init(&b, 0);
    TF_CHECK_INT(tf_mail_duration(&b, 850), 0);
    TF_CHECK_INT(tf_mail_duration(&b, 12345), 0);
    TF_CHECK_INT(tf_mail_duration(&b, 245000), 0);
    TF_CHECK_INT(tf_mail_duration(&b, 7380000), 0);
    s = str_of(&b);
    TF_CHECK_STR(s, "850 ms12.3 s4 min 05 s2 h 03 min");
    free(s);
}

/* --- excerpts --- */

static const char *const pats[] = {"error:", "FAIL"};

static char *excerpt_of(const char *log, unsigned tail, size_t max,
                        size_t piece)
{
    tf_excerpt_t *e = tf_excerpt_new(pats, 2, tail, max);
    TF_CHECK(e != NULL);
    size_t n = strlen(log);
    for (size_t i = 0; i < n; i += piece)
        tf_excerpt_feed(e, log + i, n - i < piece ? n - i : piece);
    char *s = tf_excerpt_finish(e);
    tf_excerpt_free(e);
    return s;
}

TF_TEST(excerpt_matches_first_then_tail)
{
    tf_buf_t b;
    tf_buf_init(&b, 0);
    for (int i = 1; i <= 200; i++) {
        if (i == 5 || i == 7 || i == 150 || i == 195)
            tf_buf_printf(&b, "x.c:%d: error: bad %d\n", i, i);
        else
            tf_buf_printf(&b, "noise %d\n", i);
    }
    tf_buf_append_str(&b, "the test FAILED"); /* no final newline */
    char *log = str_of(&b);
    /* Fed in odd-sized pieces: lines straddle feeds. */
    char *ex = excerpt_of(log, 30, 64 * 1024, 7);
    TF_CHECK(ex != NULL);
    const char *m = strstr(ex, "lines matching the error patterns (5 in all");
    const char *t = strstr(ex, "the last 30 lines (of 201)");
    TF_CHECK(m && t && m < t);
    /* The first matches come first, the ones in the tail are not
     * repeated, the tail ends with the last line. */
    TF_CHECK(strstr(ex, "     5| x.c:5: error: bad 5\n") != NULL);
    TF_CHECK(strstr(ex, "x.c:7:") < strstr(ex, "x.c:150:"));
    TF_CHECK_INT(count(ex, "x.c:195:"), 1);
    TF_CHECK(strstr(ex, "x.c:195:") > t);
    TF_CHECK(strstr(ex, "   172| noise 172\n") != NULL);
    TF_CHECK(strstr(ex, "   171| noise") == NULL);
    const char *last = "   201| the test FAILED\n";
    TF_CHECK(strlen(ex) > strlen(last) &&
             strcmp(ex + strlen(ex) - strlen(last), last) == 0);
    free(ex);
    free(log);
}

TF_TEST(excerpt_caps)
{
    tf_buf_t b;
    tf_buf_init(&b, 0);
    for (int i = 1; i <= 5000; i++)
        tf_buf_printf(&b, "error: line %d with some padding text to be long "
                      "enough to matter\n", i);
    char *log = str_of(&b);
    char *ex = excerpt_of(log, 30, 4096, 4096);
    TF_CHECK(strlen(ex) <= 4096);
    TF_CHECK(strstr(ex, "     1| error: line 1 ") != NULL);
    TF_CHECK(strstr(ex, "  5000| error: line 5000 ") != NULL);
    free(ex);
    /* One huge line is cut for display. */
    char *huge = malloc(100001);
    memset(huge, 'x', 100000);
    huge[100000] = '\0';
    memcpy(huge + 10, "error:", 6);
    ex = excerpt_of(huge, 5, 64 * 1024, 65536);
    TF_CHECK(strlen(ex) < 2 * TF_MAIL_LINE_SHOW);
    TF_CHECK(strstr(ex, " [...]\n") != NULL);
    free(ex);
    free(huge);
    free(log);
    /* No output at all. */
    ex = excerpt_of("", 30, 1024, 1);
    TF_CHECK_STR(ex, "");
    free(ex);
}

TF_TEST(excerpt_jump_keeps_numbers)
{
    tf_excerpt_t *e = tf_excerpt_new(pats, 2, 3, 4096);
    tf_excerpt_feed(e, "error: first\nok\n", 16);
    tf_excerpt_jump(e, 1000);
    tf_excerpt_feed(e, "l1001\nl1002\nFAIL at 1003\nl1004\n", 31);
    char *ex = tf_excerpt_finish(e);
    TF_CHECK(strstr(ex, "     1| error: first\n") != NULL);
    TF_CHECK(strstr(ex, "  1002| l1002\n") != NULL);
    TF_CHECK(strstr(ex, "  1004| l1004\n") != NULL);
    TF_CHECK(strstr(ex, "(of 1004)") != NULL);
    TF_CHECK(strstr(ex, "l1001") == NULL);
    TF_CHECK_INT(tf_excerpt_lines(e), 1004);
    free(ex);
    tf_excerpt_free(e);
}

TF_TEST(excerpt_patterns_ignore_case_and_keep_context_after)
{
    static const char *const ci[] = {"***Failed", "error:"};
    tf_excerpt_t *e = tf_excerpt_new(ci, 2, 0, 4096);
    tf_excerpt_set_context_after(e, 2);
    const char *log = "a\n14/215 Test #14: t ***failed 0.02 sec\nb1\nb2\nb3\n"
                      "ERROR: boom\nc1\nERROR: again\nd1\nd2\nd3\n";
    tf_excerpt_feed(e, log, strlen(log));
    char *ex = tf_excerpt_finish(e);
    TF_CHECK(strstr(ex, "(3 in all;") != NULL);
    TF_CHECK(strstr(ex, "     2| 14/215 Test #14: t ***failed") != NULL);
    TF_CHECK(strstr(ex, "     3| b1\n     4| b2\n") != NULL);
    TF_CHECK(strstr(ex, "| b3") == NULL);
    /* a match inside another's context restarts the count */
    TF_CHECK(strstr(ex, "     8| ERROR: again\n     9| d1\n    10| d2\n")
             != NULL);
    TF_CHECK(strstr(ex, "| d3") == NULL);
    TF_CHECK(strstr(ex, "| a\n") == NULL);
    free(ex);
    tf_excerpt_free(e);
}

TF_TEST(excerpt_shrink)
{
    tf_buf_t b;
    tf_buf_init(&b, 0);
    for (int i = 1; i <= 400; i++)
        tf_buf_printf(&b, "%6d| line number %d\n", i, i);
    char *ex = str_of(&b);
    char *s = tf_excerpt_shrink(ex, 2000);
    TF_CHECK(strlen(s) <= 2000);
    TF_CHECK(strncmp(s, "     1| line number 1\n", 22) == 0);
    TF_CHECK(strstr(s, "   400| line number 400\n") != NULL);
    TF_CHECK(strstr(s, "lines cut to keep the mail under its size cap") !=
             NULL);
    free(s);
    s = tf_excerpt_shrink(ex, 100000);
    TF_CHECK_STR(s, ex);
    free(s);
    s = tf_excerpt_shrink(ex, 10);
    TF_CHECK_STR(s, "");
    free(s);
    free(ex);
}

/* --- whole messages --- */

static tf_mail_env_t env_for(size_t max)
{
    return (tf_mail_env_t){
        .master_name = "TestFarm",
        .base_url = "http://ci.example.org/",
        .from_addr = "ci@example.org",
        .from_name = "TestFarm CI",
        .subject_prefix = "[TF]",
        .message_id = "<tf.job.7.abc@example.org>",
        .boundary = "=_tf_0123456789abcdef",
        .now_ms = 1700000000000,
        .max_bytes = max,
    };
}

/* The body of the part with content type ctype, decoded. */
static char *part(const tf_mail_msg_t *m, const char *ctype)
{
    char head[128];
    snprintf(head, sizeof(head), "Content-Type: %s; charset=UTF-8\r\n"
             "Content-Transfer-Encoding: quoted-printable\r\n\r\n", ctype);
    const char *p = strstr(m->data, head);
    if (!p)
        return NULL;
    p += strlen(head);
    const char *end = strstr(p, "\r\n--=_tf_0123456789abcdef");
    if (!end)
        return NULL;
    return qp_decode(p, (size_t)(end - p));
}

static char *header(const tf_mail_msg_t *m, const char *name)
{
    char key[64];
    snprintf(key, sizeof(key), "\r\n%s: ", name);
    const char *body = strstr(m->data, "\r\n\r\n");
    const char *p = strstr(m->data, key);
    if (strncmp(m->data, key + 2, strlen(key) - 2) == 0)
        p = m->data - 2;
    if (!p || p > body)
        return NULL;
    p += strlen(key);
    tf_buf_t b;
    tf_buf_init(&b, 0);
    for (;;) {
        size_t n = strcspn(p, "\r");
        tf_buf_append(&b, p, n);
        p += n;
        if (strncmp(p, "\r\n ", 3) != 0 && strncmp(p, "\r\n\t", 3) != 0)
            break;
        p += 2; /* unfolding drops the CRLF, keeps the blank */
    }
    return str_of(&b);
}

static const tf_mail_rcpt_t to_ann[] = {{"Ann Exämple", "ann@example.org"}};

static tf_mail_step_t failing_step(const char *excerpt)
{
    return (tf_mail_step_t){
        .index = 1,
        .name = "check",
        .result = TF_FAILURE,
        .text = "exit 1",
        .log_url = "http://ci.example.org/api/v1/builds/4/steps/1/log",
        .log_lines = 44,
        .excerpt = excerpt,
    };
}

static tf_mail_job_t job_with(const tf_mail_build_t *b, size_t n,
                              const char *review)
{
    return (tf_mail_job_t){
        .id = 7,
        .author = "Ann Exämple",
        .author_email = "ann@example.org",
        .description = "Fix the frobnicator — naïvely\nSecond line.",
        .review_url = review,
        .patchset = review ? "3" : NULL,
        .base_revision = "3f2a9c1",
        .state = "finished",
        .has_result = true,
        .result = TF_FAILURE,
        .submitted_ms = 1700000000000 - 65000,
        .finished_ms = 1700000000000,
        .url = "http://ci.example.org/api/v1/jobs/7",
        .to = to_ann,
        .nto = 1,
        .builds = b,
        .nbuilds = n,
    };
}

TF_TEST(job_message_structure)
{
    const char *ex = "--- the last 2 lines (of 44) ---\n"
                     "    43| verdict: broken <b>&</b>\n"
                     "    44| the check FAILED\n";
    tf_mail_step_t st = failing_step(ex);
    tf_mail_build_t builds[] = {
        {.builder = "b1", .has_build = true, .build_id = 3, .number = 1,
         .slave = "s1", .has_result = true, .result = TF_SUCCESS,
         .started_ms = 1000, .finished_ms = 13300,
         .url = "http://ci.example.org/api/v1/builds/3"},
        {.builder = "b2", .has_build = true, .build_id = 4, .number = 1,
         .slave = "s2", .has_result = true, .result = TF_FAILURE,
         .started_ms = 1000, .finished_ms = 3000,
         .url = "http://ci.example.org/api/v1/builds/4", .failed = &st},
    };
    tf_mail_env_t env = env_for(1024 * 1024);
    tf_mail_job_t job = job_with(builds, 2, "https://review.example.org/c/42");
    tf_mail_msg_t m;
    TF_CHECK_INT(tf_mail_render_job(&env, &job, &m), 0);
    TF_CHECK_STR(m.subject, "[TF] FAIL: try job 7: Fix the frobnicator — "
                            "naïvely");
    TF_CHECK_INT(strlen(m.data), m.len);
    check_lines(m.data, m.len, 998);
    /* Headers. */
    char *h = header(&m, "Date");
    TF_CHECK_STR(h, "Tue, 14 Nov 2023 22:13:20 +0000");
    free(h);
    h = header(&m, "From");
    TF_CHECK_STR(h, "\"TestFarm CI\" <ci@example.org>");
    free(h);
    h = header(&m, "To");
    char *dec = decode_words(h);
    TF_CHECK_STR(dec, "Ann Exämple <ann@example.org>");
    free(dec);
    free(h);
    h = header(&m, "Subject");
    dec = decode_words(h);
    TF_CHECK_STR(dec, m.subject);
    free(dec);
    free(h);
    h = header(&m, "Message-ID");
    TF_CHECK_STR(h, "<tf.job.7.abc@example.org>");
    free(h);
    char *thread = tf_mail_thread_id("review",
                                     "https://review.example.org/c/42",
                                     "example.org");
    h = header(&m, "In-Reply-To");
    TF_CHECK_STR(h, thread);
    free(h);
    h = header(&m, "References");
    TF_CHECK_STR(h, thread);
    free(h);
    free(thread);
    h = header(&m, "Content-Type");
    TF_CHECK_STR(h, "multipart/alternative; "
                    "boundary=\"=_tf_0123456789abcdef\"");
    free(h);
    h = header(&m, "MIME-Version");
    TF_CHECK_STR(h, "1.0");
    free(h);
    h = header(&m, "X-TestFarm-Result");
    TF_CHECK_STR(h, "FAILURE");
    free(h);
    /* Two parts and a closing boundary. */
    TF_CHECK_INT(count(m.data, "\r\n--=_tf_0123456789abcdef\r\n"), 2);
    TF_CHECK_INT(count(m.data, "\r\n--=_tf_0123456789abcdef--\r\n"), 1);
    char *text = part(&m, "text/plain");
    char *html = part(&m, "text/html");
    TF_CHECK(text && html);
    TF_CHECK(strstr(text, "Try job 7: FAILURE") != NULL);
    TF_CHECK(strstr(text, "  Description: Fix the frobnicator — naïvely")
             != NULL);
    TF_CHECK(strstr(text, "\n  Second line.\n") != NULL);
    TF_CHECK(strstr(text, "Review:      https://review.example.org/c/42 "
                          "(patchset 3)") != NULL);
    TF_CHECK(strstr(text, "  b1       SUCCESS    12.3 s        s1     "
                          "http://ci.example.org/api/v1/builds/3") != NULL);
    TF_CHECK(strstr(text, "  b2       FAILURE    2.0 s         s2     "
                          "http://ci.example.org/api/v1/builds/4") != NULL);
    TF_CHECK(strstr(text, "b2: FAILURE in step 1 \"check\"") != NULL);
    TF_CHECK(strstr(text, "  Step text: exit 1\n") != NULL);
    TF_CHECK(strstr(text, "Full log:  http://ci.example.org/api/v1/builds/4/"
                          "steps/1/log (44 lines)") != NULL);
    TF_CHECK(strstr(text, "        44| the check FAILED\n") != NULL);
    TF_CHECK(strstr(html, "<pre") != NULL);
    TF_CHECK(strstr(html, "verdict: broken &lt;b&gt;&amp;&lt;/b&gt;") != NULL);
    TF_CHECK(strstr(html, "<a href=\"http://ci.example.org/api/v1/builds/4\">"
                          "build 4</a>") != NULL);
    TF_CHECK(strstr(html, "Fix the frobnicator — naïvely") != NULL);
    free(text);
    free(html);
    /* The same data render the same bytes. */
    tf_mail_msg_t m2;
    TF_CHECK_INT(tf_mail_render_job(&env, &job, &m2), 0);
    TF_CHECK(m2.len == m.len && memcmp(m2.data, m.data, m.len) == 0);
    tf_mail_msg_clear(&m2);
    tf_mail_msg_clear(&m);

    /* Without a review URL there are no threading headers; a passing
     * job says PASS. */
    builds[1].result = TF_SUCCESS;
    builds[1].failed = NULL;
    job = job_with(builds, 2, NULL);
    job.result = TF_SUCCESS;
    job.description = NULL;
    TF_CHECK_INT(tf_mail_render_job(&env, &job, &m), 0);
    TF_CHECK_STR(m.subject, "[TF] PASS: try job 7");
    TF_CHECK(header(&m, "In-Reply-To") == NULL);
    TF_CHECK(header(&m, "References") == NULL);
    tf_mail_msg_clear(&m);

    /* No recipient: nothing to render. */
    job.nto = 0;
    TF_CHECK_INT(tf_mail_render_job(&env, &job, &m), TF_EINVAL);
}

TF_TEST(job_message_size_cap)
{
    tf_buf_t b;
    tf_buf_init(&b, 0);
    for (int i = 1; i <= 3000; i++)
        tf_buf_printf(&b, "%6d| error: é line %d padding padding padding\n",
                      i, i);
    char *ex = str_of(&b);
    tf_mail_step_t st[3] = {failing_step(ex), failing_step(ex),
                            failing_step(ex)};
    tf_mail_build_t builds[3];
    for (int i = 0; i < 3; i++)
        builds[i] = (tf_mail_build_t){
            .builder = i == 0 ? "b0" : i == 1 ? "b1" : "b2",
            .has_build = true, .build_id = (uint64_t)i + 1, .number = 1,
            .slave = "s1", .has_result = true, .result = TF_FAILURE,
            .url = "http://x/", .failed = &st[i]};
    tf_mail_job_t job = job_with(builds, 3, NULL);
    size_t caps[] = {1024 * 1024, 64 * 1024, 20000};
    for (size_t c = 0; c < 3; c++) {
        tf_mail_env_t env = env_for(caps[c]);
        tf_mail_msg_t m;
        TF_CHECK_INT(tf_mail_render_job(&env, &job, &m), 0);
        TF_CHECK(m.len <= caps[c]);
        char *text = part(&m, "text/plain");
        TF_CHECK(text != NULL);
        /* Shortened in the middle: first and last lines stay. */
        TF_CHECK_INT(count(text, "     1| error: é line 1 "), 3);
        TF_CHECK_INT(count(text, "  3000| error: é line 3000 "), 3);
        if (c > 0)
            TF_CHECK(strstr(text, "lines cut to keep the mail under its "
                                  "size cap") != NULL);
        free(text);
        tf_mail_msg_clear(&m);
    }
    /* Too small even without excerpts. */
    tf_mail_env_t env = env_for(500);
    tf_mail_msg_t m;
    TF_CHECK_INT(tf_mail_render_job(&env, &job, &m), TF_E2BIG);
    free(ex);
}

TF_TEST(notice_message)
{
    const char *ex = "--- the last 1 lines (of 9) ---\n     9| FAIL: x\n";
    tf_mail_step_t steps[] = {
        {.index = 0, .name = "source", .result = TF_SUCCESS},
        failing_step(ex),
    };
    tf_mail_change_t ch[] = {{"0123456789abcdef", "Bob", "bob@ex.org",
                              "Break things\n\nlong body"}};
    tf_mail_rcpt_t to[] = {{NULL, "ops@ex.org"}, {"Bob", "bob@ex.org"}};
    tf_mail_notice_t n = {
        .build = {.builder = "linux", .has_build = true, .build_id = 12,
                  .number = 5, .slave = "s1", .has_result = true,
                  .result = TF_FAILURE, .started_ms = 1, .finished_ms = 2001,
                  .url = "http://ci.example.org/api/v1/builds/12",
                  .failed = &steps[1]},
        .has_prev = true,
        .prev = TF_SUCCESS,
        .repository = "https://git.example.org/p.git",
        .branch = "main",
        .revision = "0123456789abcdef",
        .reason = "forced",
        .steps = steps,
        .nsteps = 2,
        .changes = ch,
        .nchanges = 1,
        .to = to,
        .nto = 2,
    };
    tf_mail_env_t env = env_for(1024 * 1024);
    tf_mail_msg_t m;
    TF_CHECK_INT(tf_mail_render_notice(&env, &n, &m), 0);
    TF_CHECK_STR(m.subject, "[TF] FAIL: linux build #5 (broken)");
    char *h = header(&m, "To");
    TF_CHECK_STR(h, "<ops@ex.org>, \"Bob\" <bob@ex.org>");
    free(h);
    h = header(&m, "X-TestFarm-Build");
    TF_CHECK_STR(h, "12");
    free(h);
    char *thread = tf_mail_thread_id("builder", "linux", "example.org");
    h = header(&m, "References");
    TF_CHECK_STR(h, thread);
    free(h);
    free(thread);
    char *text = part(&m, "text/plain");
    TF_CHECK(strstr(text, "Builder linux, build #5: FAILURE (broken)") !=
             NULL);
    TF_CHECK(strstr(text, "  0123456789ab  Bob <bob@ex.org>  Break things\n")
             != NULL);
    TF_CHECK(strstr(text, "   1 check                    FAILURE   exit 1")
             != NULL);
    TF_CHECK(strstr(text, "         9| FAIL: x\n") != NULL);
    free(text);
    tf_mail_msg_clear(&m);

    n.build.result = TF_SUCCESS;
    n.build.failed = NULL;
    n.prev = TF_FAILURE;
    TF_CHECK_INT(tf_mail_render_notice(&env, &n, &m), 0);
    TF_CHECK_STR(m.subject, "[TF] PASS: linux build #5 (fixed)");
    tf_mail_msg_clear(&m);
    n.has_prev = false;
    n.build.result = TF_EXCEPTION;
    TF_CHECK_INT(tf_mail_render_notice(&env, &n, &m), 0);
    TF_CHECK_STR(m.subject, "[TF] FAIL: linux build #5 (failed)");
    tf_mail_msg_clear(&m);
    TF_CHECK_STR(tf_mail_verdict(TF_WARNINGS), "PASS");
    TF_CHECK_STR(tf_mail_verdict(TF_CANCELLED), "CANCELLED");
}

TF_TEST_MAIN()
