/*
 * test_tryconf.c - tf-try's configuration layers (user file, --config,
 * repository file), their errors, the token file's permission check, and
 * the validators in try.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "email.h"
#include "tf_err.h"
#include "tf_test.h"
#include "try.h"
#include "tryconf.h"
#include "utf8.h"
#include "util.h"

static char tmpdir[64];

static const char *dir(void)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/tf-try-test.XXXXXX");
        if (!mkdtemp(tmpdir))
            abort();
    }
    return tmpdir;
}

/* Writes text to DIR/name (creating DIR/sub dirs) and returns the path in
 * a static buffer. */
static const char *put_file(const char *name, const char *text, unsigned mode)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir(), name);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    tf_mkdir_p(path, 0700);
    *slash = '/';
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
    return path;
}

static char *path_of(const char *name)
{
    char *p = malloc(512);
    snprintf(p, 512, "%s/%s", dir(), name);
    return p;
}

TF_TEST(user_dir_from_xdg_or_home)
{
    char *out = NULL;
    tf_try_err_t err;
    TF_CHECK_INT(tf_try_conf_dir("/x/cfg", "/home/u", &out, &err), 0);
    TF_CHECK_STR(out, "/x/cfg/tf-try");
    free(out);
    TF_CHECK_INT(tf_try_conf_dir(NULL, "/home/u", &out, &err), 0);
    TF_CHECK_STR(out, "/home/u/.config/tf-try");
    free(out);
    /* A relative XDG_CONFIG_HOME is ignored, as the spec says. */
    TF_CHECK_INT(tf_try_conf_dir("rel", "/home/u", &out, &err), 0);
    TF_CHECK_STR(out, "/home/u/.config/tf-try");
    free(out);
    TF_CHECK_INT(tf_try_conf_dir(NULL, NULL, &out, &err), TF_ECONFIG);
    TF_CHECK(out == NULL);
}

TF_TEST(repo_file_overrides_user_file_key_by_key)
{
    tf_try_conf_t c;
    tf_try_err_t err = {{0}};
    char *xdg = path_of("prec/xdg");
    char *top = path_of("prec/repo");
    put_file("prec/xdg/tf-try/config.json",
             "{\"url\": \"http://user.example:1/\", \"builders\": [\"u1\", "
             "\"u2\"], \"email\": \"me@example.org\", \"upstream\": "
             "\"origin/dev\", \"token_file\": \"tok\"}", 0600);
    put_file("prec/repo/.tf-try.json",
             "{\"url\": \"http://repo.example:2/\", \"builders\": [\"r1\"], "
             "\"tests\": {\"r1\": [\"t1\", \"t2\"]}}", 0644);
    tf_try_conf_init(&c);
    TF_CHECK_INT(tf_try_conf_load(&c, NULL, top, xdg, "/nonexistent", &err), 0);
    TF_CHECK_STR(c.url, "http://repo.example:2/");
    TF_CHECK_INT(c.builders.n, 1);
    TF_CHECK_STR(c.builders.n ? c.builders.v[0] : NULL, "r1");
    /* Keys the repository file does not set keep the user's values. */
    TF_CHECK_STR(c.email, "me@example.org");
    TF_CHECK_STR(c.upstream, "origin/dev");
    TF_CHECK_INT(json_array_size(json_object_get(c.tests, "r1")), 2);
    /* token_file is relative to the file that named it. */
    char *want = malloc(600);
    snprintf(want, 600, "%s/tf-try/tok", xdg);
    TF_CHECK_STR(c.token_file, want);
    free(want);
    tf_try_conf_free(&c);

    /* Without the repository file the user's values stand. */
    tf_try_conf_init(&c);
    TF_CHECK_INT(tf_try_conf_load(&c, NULL, NULL, xdg, "/nonexistent", &err),
                 0);
    TF_CHECK_STR(c.url, "http://user.example:1/");
    TF_CHECK_INT(c.builders.n, 2);
    TF_CHECK(c.tests == NULL);
    tf_try_conf_free(&c);
    free(xdg);
    free(top);
}

TF_TEST(ca_file_is_resolved_like_token_file)
{
    tf_try_conf_t c;
    tf_try_err_t err = {{0}};
    const char *p = put_file("ca/conf.json",
                             "{\"url\": \"https://ci.example:8443/\", "
                             "\"ca_file\": \"certs/master.crt\"}", 0600);
    char *path = strdup(p);
    tf_try_conf_init(&c);
    TF_CHECK_INT(tf_try_conf_load(&c, path, NULL, NULL, "/home/u", &err), 0);
    char *want = path_of("ca/certs/master.crt");
    TF_CHECK_STR(c.ca_file, want);
    free(want);
    tf_try_conf_free(&c);
    put_file("ca/bad.json", "{\"ca_file\": 5}", 0600);
    free(path);
    path = path_of("ca/bad.json");
    tf_try_conf_init(&c);
    TF_CHECK_INT(tf_try_conf_load(&c, path, NULL, NULL, "/home/u", &err),
                 TF_ECONFIG);
    TF_CHECK(strstr(err.msg, "ca_file") != NULL);
    tf_try_conf_free(&c);
    free(path);
}

TF_TEST(explicit_config_replaces_user_file)
{
    tf_try_conf_t c;
    tf_try_err_t err = {{0}};
    char *xdg = path_of("expl/xdg");
    put_file("expl/xdg/tf-try/config.json",
             "{\"url\": \"http://user.example:1/\", \"email\": "
             "\"me@example.org\"}", 0600);
    const char *p = put_file("expl/other.json",
                             "{\"url\": \"http://other.example:3/\", "
                             "\"token_file\": \"~/secret/tok\"}", 0600);
    char *explicit_path = strdup(p);
    tf_try_conf_init(&c);
    TF_CHECK_INT(tf_try_conf_load(&c, explicit_path, NULL, xdg, "/home/u",
                                  &err), 0);
    TF_CHECK_STR(c.url, "http://other.example:3/");
    /* The user's file was not read at all. */
    TF_CHECK(c.email == NULL);
    TF_CHECK_STR(c.token_file, "/home/u/secret/tok");
    tf_try_conf_free(&c);

    /* An explicit file that does not exist is an error; a default one is
     * not. */
    char *missing = path_of("expl/missing.json");
    tf_try_conf_init(&c);
    TF_CHECK_INT(tf_try_conf_load(&c, missing, NULL, xdg, "/home/u", &err),
                 TF_ENOENT);
    TF_CHECK(strstr(err.msg, missing) != NULL);
    tf_try_conf_free(&c);
    char *nodir = path_of("expl/no-such-xdg");
    tf_try_conf_init(&c);
    TF_CHECK_INT(tf_try_conf_load(&c, NULL, NULL, nodir, "/home/u", &err), 0);
    TF_CHECK(c.url == NULL);
    tf_try_conf_free(&c);
    free(nodir);
    free(missing);
    free(explicit_path);
    free(xdg);
}

TF_TEST(unknown_key_names_file_and_key)
{
    tf_try_conf_t c;
    tf_try_err_t err = {{0}};
    const char *p = put_file("unk/.tf-try.json",
                             "{\n  \"url\": \"http://x.example/\",\n"
                             "  \"buidlers\": [\"b1\"]\n}\n", 0644);
    char *path = strdup(p);
    tf_try_conf_init(&c);
    TF_CHECK_INT(tf_try_conf_merge_file(&c, path, false, NULL, &err),
                 TF_ECONFIG);
    char want[700];
    snprintf(want, sizeof(want), "%s:3:3: unknown key \"buidlers\"", path);
    TF_CHECK(strncmp(err.msg, want, strlen(want)) == 0);
    if (strncmp(err.msg, want, strlen(want)) != 0)
        fprintf(stderr, "got: %s\n", err.msg);
    /* Nothing of a refused file was merged. */
    TF_CHECK(c.url == NULL);
    tf_try_conf_free(&c);
    free(path);
}

static void expect_error(const char *text, const char *fragment)
{
    tf_try_conf_t c;
    tf_try_err_t err = {{0}};
    const char *p = put_file("bad.json", text, 0644);
    tf_try_conf_init(&c);
    TF_CHECK_INT(tf_try_conf_merge_file(&c, p, false, NULL, &err), TF_ECONFIG);
    TF_CHECK(strstr(err.msg, fragment) != NULL);
    TF_CHECK(strstr(err.msg, "bad.json") != NULL);
    if (!strstr(err.msg, fragment))
        fprintf(stderr, "for %s\n  got: %s\n  want: %s\n", text, err.msg,
                fragment);
    tf_try_conf_free(&c);
}

TF_TEST(type_and_syntax_errors)
{
    expect_error("{\"url\": 8010}", "\"url\" must be a non-empty string");
    expect_error("{\"url\": \"ftp://x/\"}", "must start with http://");
    expect_error("{\"builders\": \"b1\"}", "\"builders\" must be an array");
    expect_error("{\"builders\": [\"ok\", \"bad name\"]}",
                 "\"builders\"[1] is not a builder name");
    expect_error("{\"tests\": [\"t\"]}", "\"tests\" must be an object");
    expect_error("{\"tests\": {\"b1\": \"t\"}}", "\"tests\".\"b1\" must be an "
                                                 "array");
    expect_error("{\"tests\": {\"b1\": [\"a b\"]}}", "is not a test name");
    expect_error("{\"email\": \"nobody\"}", "is not an email address");
    expect_error("[1, 2]", "must be a JSON object");
    expect_error("{\"url\": \"http://x/\",}", "not valid JSON");
    expect_error("{\"url\": \"http://a/\", \"url\": \"http://b/\"}",
                 "not valid JSON");
}

TF_TEST(token_mode_0644_is_refused)
{
    char *tok = NULL;
    tf_try_err_t err = {{0}};
    const char *p = put_file("tok/open", "s3cr3t-token\n", 0644);
    char *path = strdup(p);
    TF_CHECK_INT(tf_try_token_load(NULL, path, &tok, &err), TF_EAUTH);
    TF_CHECK(tok == NULL);
    TF_CHECK(strstr(err.msg, "chmod 600") != NULL);
    TF_CHECK(strstr(err.msg, "0644") != NULL);
    /* The refusal never shows the token. */
    TF_CHECK(strstr(err.msg, "s3cr3t") == NULL);
    chmod(path, 0640);
    TF_CHECK_INT(tf_try_token_load(NULL, path, &tok, &err), TF_EAUTH);
    chmod(path, 0604);
    TF_CHECK_INT(tf_try_token_load(NULL, path, &tok, &err), TF_EAUTH);
    chmod(path, 0600);
    TF_CHECK_INT(tf_try_token_load(NULL, path, &tok, &err), 0);
    TF_CHECK_STR(tok, "s3cr3t-token");
    free(tok);
    free(path);
}

TF_TEST(token_first_line_stripped_and_env_wins)
{
    char *tok = NULL;
    tf_try_err_t err = {{0}};
    const char *p = put_file("tok/lines", "  \n\t abc123  \r\nsecond line\n",
                             0600);
    char *path = strdup(p);
    TF_CHECK_INT(tf_try_token_load(NULL, path, &tok, &err), 0);
    TF_CHECK_STR(tok, "abc123");
    free(tok);
    TF_CHECK_INT(tf_try_token_load(" envtok \n", path, &tok, &err), 0);
    TF_CHECK_STR(tok, "envtok");
    free(tok);
    /* A blank $TF_TRY_TOKEN falls back to the file. */
    TF_CHECK_INT(tf_try_token_load("  ", path, &tok, &err), 0);
    TF_CHECK_STR(tok, "abc123");
    free(tok);
    /* Env value with a space inside cannot go in a header. */
    TF_CHECK_INT(tf_try_token_load("a b", path, &tok, &err), TF_EINVAL);
    TF_CHECK(strstr(err.msg, "a b") == NULL);
    free(path);

    p = put_file("tok/empty", "\n\n", 0600);
    path = strdup(p);
    TF_CHECK_INT(tf_try_token_load(NULL, path, &tok, &err), TF_EINVAL);
    TF_CHECK(strstr(err.msg, "empty") != NULL);
    free(path);
    path = path_of("tok/none");
    TF_CHECK_INT(tf_try_token_load(NULL, path, &tok, &err), TF_ENOENT);
    TF_CHECK(strstr(err.msg, "TF_TRY_TOKEN") != NULL);
    free(path);
}

TF_TEST(validators)
{
    TF_CHECK(tf_try_test_name_valid("unit/foo:bar*"));
    TF_CHECK(tf_try_test_name_valid("a=b+c,d-e"));
    TF_CHECK(!tf_try_test_name_valid(""));
    TF_CHECK(!tf_try_test_name_valid("a b"));
    TF_CHECK(!tf_try_test_name_valid("a;b"));
    TF_CHECK(tf_try_rev_valid("HEAD~2"));
    TF_CHECK(tf_try_rev_valid("origin/main^"));
    TF_CHECK(tf_try_rev_valid("0123456789abcdef0123456789abcdef01234567"));
    TF_CHECK(!tf_try_rev_valid("-x"));
    TF_CHECK(!tf_try_rev_valid("a b"));
    TF_CHECK(!tf_try_rev_valid("@{upstream}"));
    TF_CHECK(tf_try_http_url_valid("http://127.0.0.1:8010/"));
    TF_CHECK(tf_try_http_url_valid("https://ci.example.org"));
    TF_CHECK(!tf_try_http_url_valid("ftp://x/"));
    TF_CHECK(!tf_try_http_url_valid("http://"));
    TF_CHECK(!tf_try_http_url_valid("http://a b/"));
    TF_CHECK(tf_email_valid("a@b.org"));
    TF_CHECK(!tf_email_valid("ab.org"));
    TF_CHECK(!tf_email_valid("a@b@c"));
    TF_CHECK(!tf_email_valid("a b@c"));
    TF_CHECK(tf_utf8_text_clean("caf\xc3\xa9\tok", true));
    TF_CHECK(!tf_utf8_text_clean("bell\x07", true));
    TF_CHECK(!tf_utf8_text_clean("bad \xff utf8", true));
    TF_CHECK(!tf_utf8_text_clean("line\nbreak", true));
}

/* tf-try and the master share one address rule (common/email.h). These
 * are addresses tf-try used to accept and the master refused with a 400
 * after the patch had been built and uploaded: a quote, parentheses, a
 * colon, brackets, non-ASCII bytes, a domain starting or ending with '.'.
 * tf-try now refuses them itself, in its config file and on the command
 * line alike. */
TF_TEST(email_rule_is_the_masters)
{
    static const char *const refused[] = {
        "a(b)@example.org", "\"a\"@example.org", "a:b@example.org",
        "a[1]@example.org", "a;b@example.org", "a\\b@example.org",
        "caf\xc3\xa9@example.org", "a@.example.org", "a@example.org.",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        TF_CHECK(!tf_email_valid(refused[i]));
        char text[128];
        snprintf(text, sizeof text, "{\"email\": \"%s\"}", refused[i]);
        /* Backslashes and quotes need JSON escapes; those two are covered
         * by the direct check above. */
        if (!strpbrk(refused[i], "\"\\"))
            expect_error(text, "is not an email address");
    }
    TF_CHECK(tf_email_valid("first.last+tag@sub.example.org"));
}

TF_TEST(strv_split)
{
    tf_try_strv_t l = {0};
    TF_CHECK_INT(tf_try_strv_push_split(&l, "a,,b,c,", ','), 0);
    TF_CHECK_INT(l.n, 3);
    TF_CHECK_STR(l.v[2], "c");
    TF_CHECK(tf_try_strv_has(&l, "b"));
    TF_CHECK(!tf_try_strv_has(&l, ""));
    tf_try_strv_clear(&l);
    TF_CHECK_INT(l.n, 0);
}

static void cleanup(void)
{
    if (tmpdir[0]) {
        const char *argv[] = {"rm", "-rf", tmpdir, NULL};
        pid_t pid = fork();
        if (pid == 0) {
            execvp("rm", (char *const *)argv);
            _exit(127);
        }
        int st;
        waitpid(pid, &st, 0);
    }
}

__attribute__((destructor)) static void at_exit_cleanup(void)
{
    cleanup();
}

TF_TEST_MAIN()
