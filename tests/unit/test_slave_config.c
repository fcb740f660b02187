/*
 * test_slave_config.c - tf-slave's command line and config file: URL
 * parsing, flags over file, relative paths, and the error sentences.
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
    tf_slave_config_t c;
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
    tf_slave_config_free(&c);
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
