/*
 * test_slave_config.c - tf-slave's command line and config file: URL
 * parsing, flags over file, relative paths, the failover list of masters
 * (--master repeated, "master" as a string or a list), and the error
 * sentences.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "slave_config.h"
#include "tf_err.h"
#include "tf_test.h"

static char tmpdir[256];

static void setup(void)
{
    if (tmpdir[0])
        return;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tf-slave-cfg-XXXXXX");
    if (!mkdtemp(tmpdir))
        abort();
}

static void write_file(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static int parse(tf_slave_config_t *cfg, char *err, size_t errlen, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    argv[argc++] = (char *)"tf-slave";
    va_start(ap, errlen);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    FILE *devnull = fopen("/dev/null", "w");
    int rc = tf_slave_config_parse(cfg, argc, argv, devnull, err, errlen);
    fclose(devnull);
    return rc;
}

TF_TEST(url_forms)
{
    tf_slave_master_t c;
    char err[256];
    memset(&c, 0, sizeof c);
    TF_CHECK_INT(tf_slave_url_parse("ws://m.example:8010", &c, err, sizeof err), 0);
    TF_CHECK_STR(c.host, "m.example");
    TF_CHECK_INT(c.port, 8010);
    TF_CHECK_STR(c.path, "/slave");
    TF_CHECK(!c.tls);
    TF_CHECK_INT(tf_slave_url_parse("wss://m/x/y", &c, err, sizeof err), 0);
    TF_CHECK_INT(c.port, 443);
    TF_CHECK_STR(c.path, "/x/y");
    TF_CHECK(c.tls);
    TF_CHECK_STR(c.url, "wss://m/x/y");
    TF_CHECK_INT(tf_slave_url_parse("ws://[::1]:9/", &c, err, sizeof err), 0);
    TF_CHECK_STR(c.host, "::1");
    TF_CHECK_STR(c.path, "/");
    TF_CHECK(tf_slave_url_parse("http://m", &c, err, sizeof err) != 0);
    TF_CHECK(strstr(err, "ws://") != NULL);
    TF_CHECK(tf_slave_url_parse("ws://m:0", &c, err, sizeof err) != 0);
    TF_CHECK(tf_slave_url_parse("ws://m:70000", &c, err, sizeof err) != 0);
    TF_CHECK(tf_slave_url_parse("ws://", &c, err, sizeof err) != 0);
    TF_CHECK(tf_slave_url_parse("ws://u@m", &c, err, sizeof err) != 0);
    TF_CHECK(tf_slave_url_parse("ws://m/a b", &c, err, sizeof err) != 0);
    tf_slave_master_free(&c);
}

TF_TEST(flags_only)
{
    tf_slave_config_t c;
    char err[256];
    setup();
    int rc = parse(&c, err, sizeof err, "--master", "ws://127.0.0.1:1",
                   "--name", "vm1", "--secret-file", "/etc/s", "--basedir",
                   "/var/b", "--tags", "linux,x86", "--max-builds", "3",
                   "--on-sigterm", "abort", "--log-level", "debug", NULL);
    TF_CHECK_INT(rc, 0);
    TF_CHECK_STR(c.name, "vm1");
    TF_CHECK_INT(c.max_builds, 3);
    TF_CHECK_INT(c.ntags, 2);
    TF_CHECK_STR(c.tags[1], "x86");
    TF_CHECK_INT(c.on_sigterm, TF_SIGTERM_ABORT);
    TF_CHECK_INT(c.log_level, TF_LOG_DEBUG);
    TF_CHECK_INT(c.backoff_min_ms, 500);
    TF_CHECK_INT(c.backoff_max_ms, 30000);
    TF_CHECK(c.spool_max_unsent == 64ull << 20);
    tf_slave_config_free(&c);
}

TF_TEST(file_then_flags)
{
    tf_slave_config_t c;
    char err[256], path[512];
    setup();
    write_file("slave.json",
               "{\"master\": \"ws://m:1\", \"name\": \"a\",\n"
               " \"secret_file\": \"secret\", \"basedir\": \"b\",\n"
               " \"tags\": [\"t1\"], \"max_builds\": 2,\n"
               " \"backoff_min_ms\": 100, \"spool_max_unsent_mb\": 1}\n");
    snprintf(path, sizeof path, "%s/slave.json", tmpdir);
    int rc = parse(&c, err, sizeof err, "--name", "override", "--config",
                   path, NULL);
    TF_CHECK_INT(rc, 0);
    TF_CHECK_STR(c.name, "override");
    TF_CHECK_INT(c.max_builds, 2);
    TF_CHECK_INT(c.backoff_min_ms, 100);
    TF_CHECK(c.spool_max_unsent == 1ull << 20);
    char want[600];
    snprintf(want, sizeof want, "%s/secret", tmpdir);
    TF_CHECK_STR(c.secret_file, want);
    snprintf(want, sizeof want, "%s/b", tmpdir);
    TF_CHECK_STR(c.basedir, want);
    tf_slave_config_free(&c);
}

TF_TEST(errors_name_the_problem)
{
    tf_slave_config_t c;
    char err[256], path[512];
    setup();
    TF_CHECK_INT(parse(&c, err, sizeof err, "--max-builds", "0", NULL),
                 TF_ECONFIG);
    TF_CHECK(strstr(err, "--max-builds") != NULL);
    tf_slave_config_free(&c);

    TF_CHECK_INT(parse(&c, err, sizeof err, "--bogus", NULL), TF_ECONFIG);
    TF_CHECK(strstr(err, "--bogus") != NULL);
    tf_slave_config_free(&c);

    TF_CHECK_INT(parse(&c, err, sizeof err, "--name", "vm1", NULL), TF_ECONFIG);
    TF_CHECK(strstr(err, "master") != NULL);
    tf_slave_config_free(&c);

    TF_CHECK_INT(parse(&c, err, sizeof err, "--master", "ws://m", "--name",
                       "bad name", "--secret-file", "s", "--basedir", "b",
                       NULL), TF_ECONFIG);
    TF_CHECK(strstr(err, "bad name") != NULL);
    tf_slave_config_free(&c);

    TF_CHECK_INT(parse(&c, err, sizeof err, "--master", "ws://m", "--name",
                       "n", "--secret-file", "s", "--basedir", "b",
                       "--backoff-min-ms", "5000", "--backoff-max-ms", "100",
                       NULL), TF_ECONFIG);
    TF_CHECK(strstr(err, "backoff_min_ms") != NULL);
    tf_slave_config_free(&c);

    write_file("bad.json", "{\"name\": \"a\",\n  \"colour\": 1}\n");
    snprintf(path, sizeof path, "%s/bad.json", tmpdir);
    TF_CHECK_INT(parse(&c, err, sizeof err, "--config", path, NULL), TF_ECONFIG);
    TF_CHECK(strstr(err, ":2:3: unknown key \"colour\"") != NULL);
    tf_slave_config_free(&c);

    write_file("bad2.json", "{\"max_builds\": \"many\"}");
    snprintf(path, sizeof path, "%s/bad2.json", tmpdir);
    TF_CHECK_INT(parse(&c, err, sizeof err, "--config", path, NULL), TF_ECONFIG);
    TF_CHECK(strstr(err, "\"max_builds\": expected an integer 1..64") != NULL);
    tf_slave_config_free(&c);

    write_file("bad3.json", "{\"name\": ");
    snprintf(path, sizeof path, "%s/bad3.json", tmpdir);
    TF_CHECK_INT(parse(&c, err, sizeof err, "--config", path, NULL), TF_ECONFIG);
    TF_CHECK(strstr(err, "bad3.json:1:") != NULL);
    tf_slave_config_free(&c);

    TF_CHECK_INT(parse(&c, err, sizeof err, "--tags", "a,,b", NULL), TF_ECONFIG);
    tf_slave_config_free(&c);
}

/* Required flags besides --master, so a test only varies the masters. */
#define REQ "--name", "vm1", "--secret-file", "/etc/s", "--basedir", "/var/b"

/* Parses n times --master ws://mI:1 plus the other required flags. */
static int parse_masters(tf_slave_config_t *cfg, char *err, size_t errlen,
                         int n)
{
    static char urls[64][32];
    char *argv[140];
    int argc = 0;
    argv[argc++] = (char *)"tf-slave";
    for (int i = 0; i < n && i < 64; i++) {
        snprintf(urls[i], sizeof urls[i], "ws://m%d:1", i);
        argv[argc++] = (char *)"--master";
        argv[argc++] = urls[i];
    }
    const char *rest[] = {REQ};
    for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
        argv[argc++] = (char *)rest[i];
    argv[argc] = NULL;
    FILE *devnull = fopen("/dev/null", "w");
    int rc = tf_slave_config_parse(cfg, argc, argv, devnull, err, errlen);
    fclose(devnull);
    return rc;
}

TF_TEST(one_master_string_keeps_working)
{
    tf_slave_config_t c;
    char err[256], path[512];
    setup();
    TF_CHECK_INT(parse(&c, err, sizeof err, "--master", "ws://m:1", REQ,
                       NULL), 0);
    TF_CHECK_INT(c.nmasters, 1);
    TF_CHECK_STR(c.masters[0].url, "ws://m:1");
    TF_CHECK_STR(c.masters[0].host, "m");
    TF_CHECK_INT(c.masters[0].port, 1);
    TF_CHECK(!c.any_tls);
    tf_slave_config_free(&c);

    write_file("one.json", "{\"master\": \"wss://m:2/p\"}\n");
    snprintf(path, sizeof path, "%s/one.json", tmpdir);
    TF_CHECK_INT(parse(&c, err, sizeof err, "--config", path, REQ, NULL), 0);
    TF_CHECK_INT(c.nmasters, 1);
    TF_CHECK_STR(c.masters[0].path, "/p");
    TF_CHECK(c.masters[0].tls && c.any_tls);
    tf_slave_config_free(&c);
}

TF_TEST(several_masters_in_order)
{
    tf_slave_config_t c;
    char err[256], path[512];
    setup();
    /* Flags: every --master kept, in the order given; ws and wss mix. */
    TF_CHECK_INT(parse(&c, err, sizeof err, "--master", "ws://a:1",
                       "--master", "wss://b:2/x", "--master", "ws://[::1]:3",
                       REQ, NULL), 0);
    TF_CHECK_INT(c.nmasters, 3);
    TF_CHECK_STR(c.masters[0].host, "a");
    TF_CHECK(!c.masters[0].tls);
    TF_CHECK_STR(c.masters[1].host, "b");
    TF_CHECK_STR(c.masters[1].path, "/x");
    TF_CHECK(c.masters[1].tls);
    TF_CHECK_STR(c.masters[2].host, "::1");
    TF_CHECK(c.any_tls);
    tf_slave_config_free(&c);

    /* File: a list. */
    write_file("list.json",
               "{\"master\": [\"ws://a:1\", \"ws://b:1\"], \"name\": \"n\"}\n");
    snprintf(path, sizeof path, "%s/list.json", tmpdir);
    TF_CHECK_INT(parse(&c, err, sizeof err, "--config", path, "--secret-file",
                       "s", "--basedir", "b", NULL), 0);
    TF_CHECK_INT(c.nmasters, 2);
    TF_CHECK_STR(c.masters[1].url, "ws://b:1");
    tf_slave_config_free(&c);

    /* Flags replace the file's list (they do not add to it). */
    TF_CHECK_INT(parse(&c, err, sizeof err, "--config", path, "--master",
                       "ws://z:9", "--secret-file", "s", "--basedir", "b",
                       NULL), 0);
    TF_CHECK_INT(c.nmasters, 1);
    TF_CHECK_STR(c.masters[0].host, "z");
    tf_slave_config_free(&c);

    /* 16 is the most. */
    TF_CHECK_INT(parse_masters(&c, err, sizeof err, 16), 0);
    TF_CHECK_INT(c.nmasters, 16);
    TF_CHECK_STR(c.masters[15].url, "ws://m15:1");
    tf_slave_config_free(&c);
}

TF_TEST(master_list_errors_name_the_url)
{
    tf_slave_config_t c;
    char err[512], path[512];
    setup();
    /* A bad URL in the list: the flag, its place and the URL are named. */
    TF_CHECK_INT(parse(&c, err, sizeof err, "--master", "ws://a:1",
                       "--master", "http://b:2", REQ, NULL), TF_ECONFIG);
    TF_CHECK(strstr(err, "--master: URL 2 of 2") != NULL);
    TF_CHECK(strstr(err, "\"http://b:2\" must start with ws:// or wss://") !=
             NULL);
    tf_slave_config_free(&c);

    TF_CHECK_INT(parse(&c, err, sizeof err, "--master", "ws://a:70000", REQ,
                       NULL), TF_ECONFIG);
    TF_CHECK(strstr(err, "--master: master URL \"ws://a:70000\": port") !=
             NULL);
    tf_slave_config_free(&c);

    /* The same master twice, even spelled differently. */
    TF_CHECK_INT(parse(&c, err, sizeof err, "--master", "ws://a:80/slave",
                       "--master", "ws://a", REQ, NULL), TF_ECONFIG);
    TF_CHECK(strstr(err, "URL 2 of 2 (\"ws://a\") names the same master as "
                         "URL 1") != NULL);
    tf_slave_config_free(&c);

    /* More than 16. */
    TF_CHECK_INT(parse_masters(&c, err, sizeof err, 17), TF_ECONFIG);
    TF_CHECK(strstr(err, "--master: more than 16 master URLs") != NULL);
    tf_slave_config_free(&c);
    TF_CHECK_INT(parse_masters(&c, err, sizeof err, 40), TF_ECONFIG);
    TF_CHECK(strstr(err, "--master: more than 16 master URLs") != NULL);
    tf_slave_config_free(&c);

    /* File: element errors say file:line:col, the key and the element. */
    write_file("bad-list.json",
               "{\"name\": \"n\",\n \"master\": [\"ws://a\", \"ftp://b\"]}\n");
    snprintf(path, sizeof path, "%s/bad-list.json", tmpdir);
    TF_CHECK_INT(parse(&c, err, sizeof err, "--config", path, NULL),
                 TF_ECONFIG);
    TF_CHECK(strstr(err, "bad-list.json:2:") != NULL);
    TF_CHECK(strstr(err, "\"master\": URL 2 of 2: master URL \"ftp://b\"") !=
             NULL);
    tf_slave_config_free(&c);

    write_file("empty-list.json", "{\"master\": []}\n");
    snprintf(path, sizeof path, "%s/empty-list.json", tmpdir);
    TF_CHECK_INT(parse(&c, err, sizeof err, "--config", path, NULL),
                 TF_ECONFIG);
    TF_CHECK(strstr(err, "\"master\": expected at least one master URL") !=
             NULL);
    tf_slave_config_free(&c);

    write_file("num-list.json", "{\"master\": [\"ws://a\", 7]}\n");
    snprintf(path, sizeof path, "%s/num-list.json", tmpdir);
    TF_CHECK_INT(parse(&c, err, sizeof err, "--config", path, NULL),
                 TF_ECONFIG);
    TF_CHECK(strstr(err, "\"master\": element 1: expected a URL string") !=
             NULL);
    tf_slave_config_free(&c);

    write_file("obj.json", "{\"master\": {\"url\": \"ws://a\"}}\n");
    snprintf(path, sizeof path, "%s/obj.json", tmpdir);
    TF_CHECK_INT(parse(&c, err, sizeof err, "--config", path, NULL),
                 TF_ECONFIG);
    TF_CHECK(strstr(err, "\"master\": expected a URL or an array of URLs") !=
             NULL);
    tf_slave_config_free(&c);

    char big[4096];
    size_t o = (size_t)snprintf(big, sizeof big, "{\"master\": [");
    for (int i = 0; i < 17; i++)
        o += (size_t)snprintf(big + o, sizeof big - o, "%s\"ws://m%d\"",
                              i ? ", " : "", i);
    snprintf(big + o, sizeof big - o, "]}\n");
    write_file("many.json", big);
    snprintf(path, sizeof path, "%s/many.json", tmpdir);
    TF_CHECK_INT(parse(&c, err, sizeof err, "--config", path, NULL),
                 TF_ECONFIG);
    TF_CHECK(strstr(err, "\"master\": more than 16 master URLs") != NULL);
    tf_slave_config_free(&c);
}

TF_TEST(help_and_version)
{
    tf_slave_config_t c;
    char err[256];
    TF_CHECK_INT(parse(&c, err, sizeof err, "--help", NULL),
                 TF_SLAVE_CONFIG_DONE);
    tf_slave_config_free(&c);
    TF_CHECK_INT(parse(&c, err, sizeof err, "--version", NULL),
                 TF_SLAVE_CONFIG_DONE);
    tf_slave_config_free(&c);
}

TF_TEST_MAIN()
