/*
 * test_ind_config.c - tf-indicator's settings (indicator/config.c): master
 * URLs, the config file with its diagnostics (file:line:col and the key),
 * the flags and how they combine with the file, and the reconnect
 * backoff. Config files are written to a temporary directory.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "tf_err.h"
#include "tf_test.h"

static char tmpdir[64];

static const char *write_tmp(const char *name, const char *text)
{
    static char path[256];
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/tf-ind-test-XXXXXX");
        if (!mkdtemp(tmpdir))
            abort();
    }
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    fputs(text, f);
    fclose(f);
    return path;
}

TF_TEST(urls_that_parse)
{
    tf_ind_url_t u;
    char err[300];
    TF_CHECK_INT(tf_ind_url_parse("http://127.0.0.1:8010", &u, err,
                                  sizeof(err)),
                 0);
    TF_CHECK(!u.tls);
    TF_CHECK_STR(u.host, "127.0.0.1");
    TF_CHECK_INT(u.port, 8010);
    TF_CHECK_STR(u.prefix, "");
    TF_CHECK_STR(u.base, "http://127.0.0.1:8010");

    TF_CHECK_INT(tf_ind_url_parse("https://ci.example.org/tf/farm/", &u, err,
                                  sizeof(err)),
                 0);
    TF_CHECK(u.tls);
    TF_CHECK_INT(u.port, 443);
    TF_CHECK_STR(u.prefix, "/tf/farm");
    TF_CHECK_STR(u.base, "https://ci.example.org/tf/farm");

    TF_CHECK_INT(tf_ind_url_parse("http://[::1]:8010/", &u, err, sizeof(err)),
                 0);
    TF_CHECK_STR(u.host, "::1");
    TF_CHECK_STR(u.base, "http://[::1]:8010");

    TF_CHECK_INT(tf_ind_url_parse("http://ci:80", &u, err, sizeof(err)), 0);
    TF_CHECK_STR(u.base, "http://ci");
}

TF_TEST(urls_that_do_not)
{
    static const struct {
        const char *url;
        const char *says;
    } bad[] = {
        {"", "empty"},
        {"ci.example.org:8010", "must start with http:// or https://"},
        {"ws://ci:8010/live", "must start with http://"},
        {"http://", "no valid host"},
        {"http://-ci:1", "no valid host"},
        {"http://ci:0", "port must be a number from 1 to 65535"},
        {"http://ci:65536", "port must be"},
        {"http://ci:80a", "unexpected \"a\""},
        {"http://ci:", "port must be"},
        {"http://user@ci", "unexpected \"@\""},
        {"http://ci?x=1", "unexpected \"?\""},
        {"http://ci/a?b", "the path may hold only"},
        {"http://ci/a#b", "the path may hold only"},
        {"http://ci/a%20b", "the path may hold only"},
        {"http://ci/a//b", "the path may hold only"},
        {"http://ci/../etc", "\"..\" are not allowed"},
        {"http://ci/a/./b", "are not allowed"},
        {"http://[zz]:1", "malformed [IPv6]"},
        {"http://[]:1", "malformed [IPv6]"},
        {"http://ci/\x1b[31m", "the path may hold only"},
        {NULL, NULL},
    };
    for (size_t i = 0; bad[i].url; i++) {
        tf_ind_url_t u;
        char err[300] = "";
        TF_CHECK_INT(tf_ind_url_parse(bad[i].url, &u, err, sizeof(err)),
                     TF_EINVAL);
        if (!strstr(err, bad[i].says)) {
            fprintf(stderr, "url \"%s\": message \"%s\" lacks \"%s\"\n",
                    bad[i].url, err, bad[i].says);
            TF_CHECK(0);
        }
        TF_CHECK(strchr(err, '\x1b') == NULL); /* shown cleaned */
    }
    char longurl[1000] = "http://ci/";
    memset(longurl + 10, 'a', 600);
    longurl[610] = '\0';
    tf_ind_url_t u;
    char err[300];
    TF_CHECK_INT(tf_ind_url_parse(longurl, &u, err, sizeof(err)), TF_EINVAL);
    TF_CHECK(strstr(err, "longer than") != NULL);
}

TF_TEST(config_file)
{
    tf_ind_conf_t c;
    char err[TF_IND_ERR_MAX];
    const char *p = write_tmp(
        "good.json",
        "{\n"
        "  \"masters\": [\"http://127.0.0.1:8010\",\n"
        "              {\"url\": \"https://ci.example.org/tf\", \"name\": "
        "\"Release farm\"}],\n"
        "  \"notify\": false,\n"
        "  \"browser\": \"firefox --new-tab\",\n"
        "  \"ca_file\": \"/etc/testfarm/ca.pem\",\n"
        "  \"retry_max_s\": 30\n"
        "}\n");
    tf_ind_conf_init(&c);
    TF_CHECK_INT(tf_ind_conf_load(&c, p, err, sizeof(err)), 0);
    TF_CHECK_INT(c.nmasters, 2);
    TF_CHECK_STR(c.masters[0].url.base, "http://127.0.0.1:8010");
    TF_CHECK_STR(c.masters[0].label, "");
    TF_CHECK_STR(c.masters[1].label, "Release farm");
    TF_CHECK(!c.notify);
    TF_CHECK_STR(c.browser, "firefox --new-tab");
    TF_CHECK_STR(c.ca_file, "/etc/testfarm/ca.pem");
    TF_CHECK_INT(c.retry_max_ms, 30000);
    tf_ind_conf_free(&c);
}

TF_TEST(config_file_errors_say_where)
{
    static const struct {
        const char *text;
        const char *says;
    } bad[] = {
        {"{\"masters\": [\"http://a:1\"],\n \"colour\": 1}",
         ":2:2: unknown key \"colour\""},
        {"{\"masters\": \"http://a:1\"}", ":1:2: \"masters\" must be a "
                                          "non-empty array"},
        {"{\"masters\": []}", "non-empty array"},
        {"{\n\"masters\": [\n  \"ftp://a\"]}",
         ":3:3: master URL \"ftp://a\" must start with http://"},
        {"{\"masters\": [{\"name\": \"x\"}]}", "masters[0] has no \"url\""},
        {"{\"masters\": [{\"url\": 5}]}", "masters[0].url must be a string"},
        {"{\"masters\": [{\"url\": \"http://a:1\", \"port\": 5}]}",
         "masters[0]: unknown key \"port\""},
        {"{\"masters\": [{\"url\": \"http://a:1\", \"name\": \"\"}]}",
         "masters[0].name must be 1 to 64 bytes"},
        {"{\"masters\": [\"http://a:1\", \"http://a:1/\"]}",
         "master http://a:1 is listed twice"},
        {"{\"masters\": [7]}", "masters[0] must be a URL string"},
        {"{\"masters\": [\"http://a:1\"], \"notify\": \"yes\"}",
         "\"notify\" must be true or false"},
        {"{\"masters\": [\"http://a:1\"], \"retry_max_s\": 0}",
         "\"retry_max_s\" must be an integer from 1 to 3600"},
        {"{\"masters\": [\"http://a:1\"], \"browser\": \"\"}",
         "\"browser\" must be a command"},
        {"{\"masters\": [\"http://a:1\"], \"ca_file\": 1}",
         "\"ca_file\" must be a file name"},
        {"{\"notify\": true}", "no \"masters\""},
        {"[1]", "must be a JSON object"},
        {"{\"masters\": [\n\"http://a:1\",]}", ":2:14: not valid JSON"},
        {"{\"masters\": [\"http://a:1\"], \"masters\": []}",
         "not valid JSON: duplicate object key"},
        {NULL, NULL},
    };
    for (size_t i = 0; bad[i].text; i++) {
        tf_ind_conf_t c;
        char err[TF_IND_ERR_MAX] = "";
        const char *p = write_tmp("bad.json", bad[i].text);
        tf_ind_conf_init(&c);
        TF_CHECK_INT(tf_ind_conf_load(&c, p, err, sizeof(err)), TF_ECONFIG);
        if (!strstr(err, bad[i].says) || strncmp(err, p, strlen(p)) != 0) {
            fprintf(stderr, "case %zu: message \"%s\" lacks \"%s\"\n", i, err,
                    bad[i].says);
            TF_CHECK(0);
        }
        TF_CHECK_INT(c.nmasters, 0); /* nothing applied */
        TF_CHECK(c.notify);
        tf_ind_conf_free(&c);
    }
    /* Too many masters. */
    char text[4096] = "{\"masters\": [";
    for (int i = 0; i <= TF_IND_MAX_MASTERS; i++) {
        char one[40];
        snprintf(one, sizeof(one), "%s\"http://m%d:1\"", i ? "," : "", i);
        strcat(text, one);
    }
    strcat(text, "]}");
    tf_ind_conf_t c;
    char err[TF_IND_ERR_MAX] = "";
    tf_ind_conf_init(&c);
    TF_CHECK_INT(tf_ind_conf_load(&c, write_tmp("many.json", text), err,
                                  sizeof(err)),
                 TF_ECONFIG);
    TF_CHECK(strstr(err, "at most 16") != NULL);
    /* Missing and oversized files. */
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/none.json", tmpdir);
    TF_CHECK_INT(tf_ind_conf_load(&c, missing, err, sizeof(err)), TF_ENOENT);
    TF_CHECK(strstr(err, "no such configuration file") != NULL);
    char *big = malloc(TF_IND_CONFIG_MAX + 10);
    memset(big, ' ', TF_IND_CONFIG_MAX + 9);
    big[TF_IND_CONFIG_MAX + 9] = '\0';
    TF_CHECK_INT(tf_ind_conf_load(&c, write_tmp("big.json", big), err,
                                  sizeof(err)),
                 TF_ECONFIG);
    TF_CHECK(strstr(err, "larger than") != NULL);
    free(big);
    tf_ind_conf_free(&c);
}

static int parse(tf_ind_conf_t *c, tf_ind_args_action_t *act, char *err,
                 size_t errlen, const char *home, ...)
{
    char *argv[32] = {"tf-indicator"};
    int argc = 1;
    va_list ap;
    va_start(ap, home);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    tf_ind_conf_init(c);
    err[0] = '\0';
    return tf_ind_args_parse(c, argc, argv, NULL, home, act, err, errlen);
}

TF_TEST(flags)
{
    tf_ind_conf_t c;
    tf_ind_args_action_t act;
    char err[TF_IND_ERR_MAX];
    const char *nohome = "/nonexistent-home";

    TF_CHECK_INT(parse(&c, &act, err, sizeof(err), nohome, "--master",
                       "http://a:1", "--master", "http://b:2/x", "--no-notify",
                       "--retry-max", "5", "--dump-state", "/tmp/d.json",
                       "--icon-dir", "/i", "--browser", "true",
                       "--ca-file", "/ca.pem",
                       "--log-level", "debug", NULL),
                 0);
    TF_CHECK_INT(act, TF_IND_ARGS_RUN);
    TF_CHECK_INT(c.nmasters, 2);
    TF_CHECK_STR(c.masters[1].url.prefix, "/x");
    TF_CHECK(!c.notify);
    TF_CHECK_INT(c.retry_max_ms, 5000);
    TF_CHECK_STR(c.dump_path, "/tmp/d.json");
    TF_CHECK_STR(c.icon_dir, "/i");
    TF_CHECK_STR(c.browser, "true");
    TF_CHECK_STR(c.ca_file, "/ca.pem");
    TF_CHECK_STR(c.log_level, "debug");
    TF_CHECK(c.config_path == NULL);
    tf_ind_conf_free(&c);

    TF_CHECK_INT(parse(&c, &act, err, sizeof(err), nohome, "--help", NULL), 0);
    TF_CHECK_INT(act, TF_IND_ARGS_HELP);
    tf_ind_conf_free(&c);
    TF_CHECK_INT(parse(&c, &act, err, sizeof(err), nohome, "--version", NULL),
                 0);
    TF_CHECK_INT(act, TF_IND_ARGS_VERSION);
    tf_ind_conf_free(&c);
    TF_CHECK(strstr(tf_ind_usage(), "--master URL") != NULL);
}

TF_TEST(bad_flags)
{
    static const struct {
        const char *a, *b, *says;
    } bad[] = {
        {"--colour", NULL, "unknown option \"--colour\""},
        {"--master", NULL, "--master needs a value"},
        {"--master", "", "--master needs a value"},
        {"--master", "ci:8010", "--master: master URL \"ci:8010\" must start"},
        {"--retry-max", "0", "--retry-max \"0\": expected seconds"},
        {"--retry-max", "ten", "expected seconds from 1 to 3600"},
        {"--log-level", "loud", "--log-level \"loud\": expected debug"},
        {NULL, NULL, NULL},
    };
    for (size_t i = 0; bad[i].a; i++) {
        tf_ind_conf_t c;
        tf_ind_args_action_t act;
        char err[TF_IND_ERR_MAX];
        int rc = bad[i].b
                     ? parse(&c, &act, err, sizeof(err), "/nonexistent",
                             "--master", "http://ok:1", bad[i].a, bad[i].b,
                             NULL)
                     : parse(&c, &act, err, sizeof(err), "/nonexistent",
                             "--master", "http://ok:1", bad[i].a, NULL);
        TF_CHECK_INT(rc, TF_EINVAL);
        if (!strstr(err, bad[i].says)) {
            fprintf(stderr, "flag %s: message \"%s\" lacks \"%s\"\n",
                    bad[i].a, err, bad[i].says);
            TF_CHECK(0);
        }
        tf_ind_conf_free(&c);
    }
    tf_ind_conf_t c;
    tf_ind_args_action_t act;
    char err[TF_IND_ERR_MAX];
    TF_CHECK_INT(parse(&c, &act, err, sizeof(err), "/nonexistent", "--master",
                       "http://a:1", "--master", "http://a:1/", NULL),
                 TF_EINVAL);
    TF_CHECK(strstr(err, "given twice") != NULL);
    tf_ind_conf_free(&c);
}

TF_TEST(flags_and_the_config_file)
{
    tf_ind_conf_t c;
    tf_ind_args_action_t act;
    char err[TF_IND_ERR_MAX];
    const char *p = write_tmp("f.json", "{\"masters\": [\"http://file:1\"], "
                                        "\"notify\": false, \"browser\": "
                                        "\"file-browser\"}");
    char file[256];
    snprintf(file, sizeof(file), "%s", p);

    /* The file alone. */
    TF_CHECK_INT(parse(&c, &act, err, sizeof(err), "/nonexistent",
                       "--config", file, NULL),
                 0);
    TF_CHECK_INT(c.nmasters, 1);
    TF_CHECK_STR(c.masters[0].url.base, "http://file:1");
    TF_CHECK(!c.notify);
    TF_CHECK_STR(c.config_path, file);
    tf_ind_conf_free(&c);

    /* --master replaces the file's masters; the rest of the file counts
     * unless a flag says otherwise. */
    TF_CHECK_INT(parse(&c, &act, err, sizeof(err), "/nonexistent",
                       "--config", file, "--master", "http://flag:2", NULL),
                 0);
    TF_CHECK_INT(c.nmasters, 1);
    TF_CHECK_STR(c.masters[0].url.base, "http://flag:2");
    TF_CHECK(!c.notify);
    TF_CHECK_STR(c.browser, "file-browser");
    tf_ind_conf_free(&c);
    TF_CHECK_INT(parse(&c, &act, err, sizeof(err), "/nonexistent",
                       "--browser", "flag-browser", "--config", file, NULL),
                 0);
    TF_CHECK_STR(c.browser, "flag-browser");
    tf_ind_conf_free(&c);

    /* --config must exist. */
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/none.json", tmpdir);
    TF_CHECK_INT(parse(&c, &act, err, sizeof(err), "/nonexistent",
                       "--master", "http://a:1", "--config", missing, NULL),
                 TF_ECONFIG);
    TF_CHECK(strstr(err, "no such configuration file") != NULL);
    tf_ind_conf_free(&c);

    /* The default file under $HOME/.config/testfarm is read when there. */
    char home[300], dir[400];
    snprintf(home, sizeof(home), "%s/home", tmpdir);
    snprintf(dir, sizeof(dir), "mkdir -p %s/.config/testfarm", home);
    TF_CHECK_INT(system(dir), 0);
    snprintf(dir, sizeof(dir), "home/.config/testfarm/indicator.json");
    write_tmp(dir, "{\"masters\": [\"http://default:3\"]}");
    TF_CHECK_INT(parse(&c, &act, err, sizeof(err), home, NULL), 0);
    TF_CHECK_INT(c.nmasters, 1);
    TF_CHECK_STR(c.masters[0].url.base, "http://default:3");
    tf_ind_conf_free(&c);

    /* A broken default file is an error, not silently skipped. */
    write_tmp(dir, "{\"masters\": [\"nope\"]}");
    TF_CHECK_INT(parse(&c, &act, err, sizeof(err), home, NULL), TF_ECONFIG);
    TF_CHECK(strstr(err, "indicator.json:1:") != NULL);
    tf_ind_conf_free(&c);

    /* No masters anywhere. */
    TF_CHECK_INT(parse(&c, &act, err, sizeof(err), "/nonexistent", NULL),
                 TF_ECONFIG);
    TF_CHECK(strstr(err, "no masters to watch: give --master URL") != NULL);
    tf_ind_conf_free(&c);
    /* ... which --autostart takes quietly. */
    TF_CHECK_INT(parse(&c, &act, err, sizeof(err), "/nonexistent",
                       "--autostart", NULL),
                 0);
    TF_CHECK_INT(act, TF_IND_ARGS_IDLE);
    tf_ind_conf_free(&c);

    /* XDG_CONFIG_HOME wins over HOME. */
    char *d = tf_ind_conf_default_path("/x", "/h");
    TF_CHECK_STR(d, "/x/testfarm/indicator.json");
    free(d);
    d = tf_ind_conf_default_path(NULL, "/h");
    TF_CHECK_STR(d, "/h/.config/testfarm/indicator.json");
    free(d);
    TF_CHECK(tf_ind_conf_default_path("relative", NULL) == NULL);
}

TF_TEST(backoff_doubles_up_to_the_cap)
{
    TF_CHECK_INT(tf_ind_backoff_ms(0, 60000, 0), 1000);
    TF_CHECK_INT(tf_ind_backoff_ms(1, 60000, 0), 2000);
    TF_CHECK_INT(tf_ind_backoff_ms(2, 60000, 0), 4000);
    TF_CHECK_INT(tf_ind_backoff_ms(5, 60000, 0), 32000);
    TF_CHECK_INT(tf_ind_backoff_ms(6, 60000, 0), 60000);
    TF_CHECK_INT(tf_ind_backoff_ms(1000, 60000, 0), 60000);
    TF_CHECK_INT(tf_ind_backoff_ms(3, 5000, 0), 5000);
    /* Jitter takes off at most 20%. */
    TF_CHECK_INT(tf_ind_backoff_ms(0, 60000, 0.5), 900);
    TF_CHECK(tf_ind_backoff_ms(6, 60000, 0.9999) >= 48000);
    TF_CHECK_INT(tf_ind_backoff_ms(6, 60000, 7.0), tf_ind_backoff_ms(6, 60000,
                                                                     0.999));
    TF_CHECK_INT(tf_ind_backoff_ms(0, 10, 0), 1000); /* floor of 1 s */
}

TF_TEST(cleanup_tmp)
{
    char cmd[128];
    if (tmpdir[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
        TF_CHECK_INT(system(cmd), 0);
    }
}

TF_TEST_MAIN()
