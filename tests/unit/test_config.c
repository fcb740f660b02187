/*
 * test_config.c - the master's configuration loader: every field and
 * default of a valid file, exact file:line:col, key and message of every
 * kind of error (all reported together), secret files relative to the
 * config's directory, JSON syntax errors, formatting and the slave/builder
 * matching rule.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "config/config.h"
#include "tf_err.h"
#include "tf_test.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* A fresh directory under TMPDIR, with symlinks resolved so it compares
 * equal to what getcwd() says. Caller frees and calls rm_tree. */
static char *make_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof(tmpl), "%s/tf-config-XXXXXX",
             base && *base ? base : "/tmp");
    if (!mkdtemp(tmpl)) {
        TF_CHECK(!"mkdtemp failed");
        return NULL;
    }
    return realpath(tmpl, NULL);
}

static void rm_tree(const char *dir)
{
    char cmd[PATH_MAX + 16];
    if (!dir || strncmp(dir, "/", 1) != 0 || !strstr(dir, "/tf-config-"))
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    TF_CHECK_INT(system(cmd), 0);
}

/* Writes content to dir/rel, creating parent directories. */
static char *write_file(const char *dir, const char *rel, const char *content)
{
    char *path = tf_path_join(dir, rel);
    TF_CHECK(path != NULL);
    if (!path)
        return NULL;
    char *slash = strrchr(path, '/');
    *slash = '\0';
    TF_CHECK_INT(tf_mkdir_p(path, 0700), 0);
    *slash = '/';
    TF_CHECK_INT(tf_write_file_atomic(path, content, strlen(content), 0600), 0);
    return path;
}

static char *join(const char *dir, const char *rel)
{
    char *p = tf_path_join(dir, rel);
    TF_CHECK(p != NULL);
    return p;
}

static int load_str(const char *path, const char *text, tf_config_t **c,
                    tf_cfg_diags_t *d)
{
    return tf_config_load_text(path, text, strlen(text), c, d);
}

static void dump_diags(const tf_cfg_diags_t *d)
{
    for (size_t i = 0; i < d->count; i++) {
        char *s = tf_cfg_diag_format(&d->items[i]);
        fprintf(stderr, "  diag %zu: %s\n", i, s ? s : "(null)");
        free(s);
    }
}

/* Loads text that must fail with exactly one diagnostic and checks it. */
#define CHECK_ONE_ERROR(text, want_line, want_col, want_key, want_msg)         \
    do {                                                                       \
        tf_cfg_diags_t d_ = {0};                                               \
        tf_config_t *cfg_ = NULL;                                              \
        TF_CHECK_INT(load_str("/etc/tf/m.json", (text), &cfg_, &d_),           \
                     TF_ECONFIG);                                              \
        TF_CHECK(cfg_ == NULL);                                                \
        TF_CHECK_INT(d_.count, 1);                                             \
        if (d_.count != 1)                                                     \
            dump_diags(&d_);                                                   \
        if (d_.count >= 1) {                                                   \
            TF_CHECK_STR(d_.items[0].file, "/etc/tf/m.json");                  \
            TF_CHECK_INT(d_.items[0].line, (want_line));                       \
            TF_CHECK_INT(d_.items[0].col, (want_col));                         \
            TF_CHECK_STR(d_.items[0].key, (want_key));                         \
            TF_CHECK_STR(d_.items[0].message, (want_msg));                     \
        }                                                                      \
        tf_cfg_diags_clear(&d_);                                               \
    } while (0)

/* ------------------------------------------------------------------ */
/* A full valid configuration                                          */

static const char full_config[] =
    "{\n"
    "  \"name\": \"Example CI\",\n"
    "  \"listen\": {\"host\": \"0.0.0.0\", \"port\": 9000},\n"
    "  \"url\": \"https://ci.example.org/tf\",\n"
    "  \"database\": \"./db//state.sqlite\",\n"
    "  \"web_root\": \"web\",\n"
    "  \"heartbeat_s\": 5,\n"
    "  \"lost_after_s\": 20,\n"
    "  \"build_lost_after_s\": 300,\n"
    "  \"max_retries\": 0,\n"
    "  \"slaves\": [\n"
    "    {\"name\": \"vm1\", \"secret\": \"s3cret\", \"tags\": [\"linux\", "
    "\"x86_64\"],\n"
    "     \"max_builds\": 2},\n"
    "    {\"name\": \"vm2\", \"secret_file\": \"secrets/vm2.secret\", "
    "\"tags\": [\"linux\"]},\n"
    "    {\"name\": \"mac1\", \"secret_file\": \"@ABS@\", "
    "\"tags\": [\"macos\"], \"max_builds\": 64}\n"
    "  ],\n"
    "  \"builders\": [\n"
    "    {\n"
    "      \"name\": \"linux-full\",\n"
    "      \"slaves\": [\"vm1\"],\n"
    "      \"tags\": [\"linux\"],\n"
    "      \"priority\": -1000,\n"
    "      \"properties\": {\"branch\": \"main\", \"jobs\": \"4\"},\n"
    "      \"steps\": [\n"
    "        {\"name\": \"configure\", \"command\": [\"./configure\", "
    "\"--prefix=/usr\", \"\"],\n"
    "         \"env\": {\"CC\": \"gcc\", \"_X1\": \"\"}, \"workdir\": "
    "\"src/build\",\n"
    "         \"timeout\": 0, \"maxTime\": 3600,\n"
    "         \"haltOnFailure\": true, \"flunkOnFailure\": false, "
    "\"warnOnFailure\": true,\n"
    "         \"flunkOnWarnings\": true, \"warnOnWarnings\": false, "
    "\"alwaysRun\": true},\n"
    "        {\"name\": \"test\", \"command\": \"make check | tee log\"}\n"
    "      ]\n"
    "    },\n"
    "    {\"name\": \"any\", \"priority\": 1000,\n"
    "     \"steps\": [{\"name\": \"echo\", \"command\": \"echo hi\"}]},\n"
    "    {\"name\": \"mac\", \"tags\": [\"macos\"], \"slaves\": [],\n"
    "     \"steps\": [{\"name\": \"t\", \"command\": [\"true\"]}]}\n"
    "  ]\n"
    "}\n";

/* full_config with @ABS@ replaced by abs. Caller frees. */
static char *full_config_with(const char *abs)
{
    const char *at = strstr(full_config, "@ABS@");
    size_t n = strlen(full_config) - 5 + strlen(abs) + 1;
    char *s = malloc(n);
    TF_CHECK(s != NULL);
    if (!s)
        return NULL;
    snprintf(s, n, "%.*s%s%s", (int)(at - full_config), full_config, abs,
             at + 5);
    return s;
}

static void check_argv(const tf_step_spec_t *sp, const char *const *want,
                       size_t n)
{
    TF_CHECK_INT(sp->argc, n);
    for (size_t i = 0; i < n && i < sp->argc; i++)
        TF_CHECK_STR(sp->argv[i], want[i]);
    TF_CHECK(sp->argc < n || sp->argv[n] == NULL);
}

TF_TEST(full_config_loads)
{
    char *dir = make_tmpdir();
    if (!dir)
        return;
    char *conf = join(dir, "conf");
    char *abs = write_file(dir, "abs.secret", "abs-secret \t\r\nsecond line\n");
    char *path = join(conf, "master.json");
    free(write_file(conf, "secrets/vm2.secret", "vm2-secret\n"));
    char *text = full_config_with(abs);
    free(write_file(conf, "master.json", text));

    tf_cfg_diags_t d = {0};
    tf_config_t *c = NULL;
    TF_CHECK_INT(tf_config_load(path, &c, &d), 0);
    TF_CHECK_INT(d.count, 0);
    dump_diags(&d);
    TF_CHECK(c != NULL);
    if (!c)
        goto out;

    TF_CHECK_STR(c->path, path);
    TF_CHECK_STR(c->dir, conf);
    TF_CHECK_STR(c->name, "Example CI");
    TF_CHECK_STR(c->listen_host, "0.0.0.0");
    TF_CHECK_INT(c->listen_port, 9000);
    TF_CHECK_STR(c->public_url, "https://ci.example.org/tf/");
    char *db = join(conf, "db/state.sqlite");
    char *web = join(conf, "web");
    TF_CHECK_STR(c->database, db);
    TF_CHECK_STR(c->web_root, web);
    free(db);
    free(web);
    TF_CHECK_INT(c->heartbeat_s, 5);
    TF_CHECK_INT(c->lost_after_s, 20);
    TF_CHECK_INT(c->build_lost_after_s, 300);
    TF_CHECK_INT(c->max_retries, 0);

    TF_CHECK_INT(c->nslaves, 3);
    const tf_cfg_slave_t *vm1 = &c->slaves[0], *vm2 = &c->slaves[1],
                         *mac1 = &c->slaves[2];
    TF_CHECK_STR(vm1->name, "vm1");
    TF_CHECK_STR(vm1->secret, "s3cret");
    TF_CHECK_INT(vm1->ntags, 2);
    TF_CHECK_STR(vm1->tags[0], "linux");
    TF_CHECK_STR(vm1->tags[1], "x86_64");
    TF_CHECK_INT(vm1->max_builds, 2);
    TF_CHECK_STR(vm2->name, "vm2");
    TF_CHECK_STR(vm2->secret, "vm2-secret"); /* relative to conf/ */
    TF_CHECK_INT(vm2->ntags, 1);
    TF_CHECK_INT(vm2->max_builds, 1);
    TF_CHECK_STR(mac1->secret, "abs-secret"); /* first line, trimmed */
    TF_CHECK_INT(mac1->max_builds, 64);

    TF_CHECK_INT(c->nbuilders, 3);
    const tf_cfg_builder_t *lf = &c->builders[0], *any = &c->builders[1],
                           *mac = &c->builders[2];
    TF_CHECK_STR(lf->name, "linux-full");
    TF_CHECK_INT(lf->nslaves, 1);
    TF_CHECK_STR(lf->slaves[0], "vm1");
    TF_CHECK_INT(lf->ntags, 1);
    TF_CHECK_STR(lf->tags[0], "linux");
    TF_CHECK_INT(lf->priority, -1000);
    TF_CHECK_INT(lf->nprops, 2);
    TF_CHECK_STR(lf->props[0].key, "branch");
    TF_CHECK_STR(lf->props[0].value, "main");
    TF_CHECK_STR(lf->props[1].key, "jobs");
    TF_CHECK_STR(lf->props[1].value, "4");
    TF_CHECK_INT(lf->nsteps, 2);

    const tf_cfg_step_t *s0 = &lf->steps[0], *s1 = &lf->steps[1];
    TF_CHECK_STR(s0->spec.name, "configure");
    TF_CHECK(!s0->shell);
    check_argv(&s0->spec,
               (const char *const[]){"./configure", "--prefix=/usr", ""}, 3);
    TF_CHECK_INT(s0->spec.nenv, 2);
    TF_CHECK_STR(s0->spec.env[0].key, "CC");
    TF_CHECK_STR(s0->spec.env[0].value, "gcc");
    TF_CHECK_STR(s0->spec.env[1].key, "_X1");
    TF_CHECK_STR(s0->spec.env[1].value, "");
    TF_CHECK_STR(s0->spec.workdir, "src/build");
    TF_CHECK_INT(s0->spec.timeout_s, 0);
    TF_CHECK_INT(s0->spec.max_time_s, 3600);
    TF_CHECK(s0->spec.flags.halt_on_failure);
    TF_CHECK(!s0->spec.flags.flunk_on_failure);
    TF_CHECK(s0->spec.flags.warn_on_failure);
    TF_CHECK(s0->spec.flags.flunk_on_warnings);
    TF_CHECK(!s0->spec.flags.warn_on_warnings);
    TF_CHECK(s0->spec.flags.always_run);

    /* A shell string becomes /bin/sh -c; everything else is default. */
    TF_CHECK_STR(s1->spec.name, "test");
    TF_CHECK(s1->shell);
    check_argv(&s1->spec,
               (const char *const[]){"/bin/sh", "-c", "make check | tee log"},
               3);
    TF_CHECK_INT(s1->spec.nenv, 0);
    TF_CHECK_STR(s1->spec.workdir, "");
    TF_CHECK_INT(s1->spec.timeout_s, 1200);
    TF_CHECK_INT(s1->spec.max_time_s, 0);
    TF_CHECK(!s1->spec.flags.halt_on_failure);
    TF_CHECK(s1->spec.flags.flunk_on_failure);
    TF_CHECK(!s1->spec.flags.warn_on_failure);
    TF_CHECK(!s1->spec.flags.flunk_on_warnings);
    TF_CHECK(s1->spec.flags.warn_on_warnings);
    TF_CHECK(!s1->spec.flags.always_run);

    TF_CHECK_STR(any->name, "any");
    TF_CHECK_INT(any->nslaves, 0);
    TF_CHECK_INT(any->ntags, 0);
    TF_CHECK_INT(any->nprops, 0);
    TF_CHECK_INT(any->priority, 1000);
    TF_CHECK_INT(any->nsteps, 1);
    TF_CHECK_STR(mac->name, "mac");
    TF_CHECK_INT(mac->nslaves, 0);

    /* Lookups. */
    TF_CHECK(tf_config_slave(c, "vm2") == vm2);
    TF_CHECK(tf_config_slave(c, "vm3") == NULL);
    TF_CHECK(tf_config_slave(c, NULL) == NULL);
    TF_CHECK(tf_config_slave(NULL, "vm1") == NULL);
    TF_CHECK(tf_config_builder(c, "mac") == mac);
    TF_CHECK(tf_config_builder(c, "Mac") == NULL);

    /* Listed, or every tag (vm2 has "linux" but is not listed: the tags
     * of linux-full admit it), or anyone when neither is given. */
    TF_CHECK(tf_config_slave_allowed(lf, vm1));
    TF_CHECK(tf_config_slave_allowed(lf, vm2));
    TF_CHECK(!tf_config_slave_allowed(lf, mac1));
    TF_CHECK(tf_config_slave_allowed(any, vm1));
    TF_CHECK(tf_config_slave_allowed(any, mac1));
    TF_CHECK(tf_config_slave_allowed(mac, mac1));
    TF_CHECK(!tf_config_slave_allowed(mac, vm1));

out:
    tf_config_free(c);
    tf_cfg_diags_clear(&d);
    free(text);
    free(path);
    free(abs);
    free(conf);
    rm_tree(dir);
    free(dir);
}

TF_TEST(defaults)
{
    tf_cfg_diags_t d = {0};
    tf_config_t *c = NULL;
    TF_CHECK_INT(load_str("/etc/tf/master.json", "{}", &c, &d), 0);
    TF_CHECK(c != NULL);
    if (!c)
        return;
    TF_CHECK_STR(c->path, "/etc/tf/master.json");
    TF_CHECK_STR(c->dir, "/etc/tf");
    TF_CHECK_STR(c->name, "TestFarm");
    TF_CHECK_STR(c->listen_host, "127.0.0.1");
    TF_CHECK_INT(c->listen_port, 8010);
    TF_CHECK_STR(c->public_url, "http://127.0.0.1:8010/");
    TF_CHECK_STR(c->database, "/etc/tf/state.sqlite");
    TF_CHECK(c->web_root == NULL);
    TF_CHECK_INT(c->heartbeat_s, 10);
    TF_CHECK_INT(c->lost_after_s, 30);
    TF_CHECK_INT(c->build_lost_after_s, 600);
    TF_CHECK_INT(c->max_retries, 3);
    TF_CHECK_INT(c->nslaves, 0);
    TF_CHECK_INT(c->nbuilders, 0);
    tf_config_free(c);

    /* The default URL follows listen; empty arrays are fine; absolute
     * paths stay as they are. */
    TF_CHECK_INT(load_str("/m.json",
                          "{\"listen\": {\"host\": \"::1\", \"port\": 1},"
                          " \"slaves\": [], \"builders\": [],"
                          " \"database\": \"/var/lib/tf/db\","
                          " \"url\": \"http://x\"}",
                          &c, &d),
                 0);
    if (c) {
        TF_CHECK_STR(c->dir, "/");
        TF_CHECK_STR(c->public_url, "http://x/");
        TF_CHECK_STR(c->database, "/var/lib/tf/db");
        tf_config_free(c);
    }
    TF_CHECK_INT(
        load_str("/m.json", "{\"listen\": {\"host\": \"::1\"}}", &c, &d), 0);
    if (c)
        TF_CHECK_STR(c->public_url, "http://[::1]:8010/");
    tf_config_free(c);
    TF_CHECK_INT(d.count, 0);
    tf_cfg_diags_clear(&d);
}

/* A relative config path resolves against the working directory. */
TF_TEST(relative_config_path)
{
    char *dir = make_tmpdir();
    char cwd[PATH_MAX];
    if (!dir || !getcwd(cwd, sizeof(cwd)))
        return;
    free(write_file(dir, "sub/master.json",
                    "{\"web_root\": \"../web\", \"database\": \"x.db\"}"));
    TF_CHECK_INT(chdir(dir), 0);
    tf_config_t *c = NULL;
    TF_CHECK_INT(tf_config_load("./sub//master.json", &c, NULL), 0);
    TF_CHECK_INT(chdir(cwd), 0);
    if (c) {
        char *sub = join(dir, "sub");
        char *db = join(sub, "x.db");
        char *web = join(sub, "../web");
        TF_CHECK_STR(c->path, "./sub//master.json");
        TF_CHECK_STR(c->dir, sub);
        TF_CHECK_STR(c->database, db);
        TF_CHECK_STR(c->web_root, web); /* ".." is kept */
        free(sub);
        free(db);
        free(web);
    }
    tf_config_free(c);
    rm_tree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ */
/* Diagnostics                                                         */

static const char errors_config[] =
    "{\n"
    "  \"nmae\": \"x\",\n"
    "  \"listen\": {\"host\": \"\", \"port\": 70000},\n"
    "  \"url\": \"ftp://example.org\",\n"
    "  \"heartbeat_s\": \"10\",\n"
    "  \"lost_after_s\": 5,\n"
    "  \"max_retries\": 101,\n"
    "  \"slaves\": [\n"
    "    {\"name\": \"vm1\", \"secret\": \"a\"},\n"
    "    {\"name\": \"vm1\", \"secret\": \"b\", \"secret_file\": \"x\"},\n"
    "    {\"name\": \"bad name\", \"tags\": [\"ok\", \"ok\", 3]},\n"
    "    {\"secret\": \"c\", \"max_builds\": 0}\n"
    "  ],\n"
    "  \"builders\": [\n"
    "    {\"name\": \"b1\", \"slaves\": [\"vm1\", \"vm9\", \"zz9\"], "
    "\"priority\": 2000,\n"
    "     \"properties\": {\"bad key\": \"v\", \"n\": 1},\n"
    "     \"steps\": [\n"
    "       {\"name\": \"s1\", \"command\": [], \"tiemout\": 5},\n"
    "       {\"name\": \"s1\", \"command\": 5, \"env\": {\"1BAD\": \"x\", "
    "\"OK\": 2},\n"
    "        \"workdir\": \"../up\", \"timeout\": 1.5, \"alwaysRun\": "
    "\"yes\"},\n"
    "       {\"command\": \"make\"}\n"
    "     ]},\n"
    "    {\"name\": \"b1\", \"steps\": []},\n"
    "    {\"name\": \"b3\"},\n"
    "    7\n"
    "  ]\n"
    "}\n";

#define NAME_RULE                                                              \
    "use 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"

static const struct {
    int line, col;
    const char *key;
    const char *message;
} errors_expected[] = {
    {2, 3, "nmae", "unknown key \"nmae\"; did you mean \"name\"?"},
    {3, 22, "listen.host", "must not be empty"},
    {3, 34, "listen.port", "must be between 1 and 65535 (got 70000)"},
    {4, 10, "url", "must start with http:// or https:// and a host"},
    {5, 18, "heartbeat_s", "expected an integer"},
    {7, 18, "max_retries", "must be between 0 and 100 (got 101)"},
    {10, 5, "slaves[1]", "give either \"secret\" or \"secret_file\", not both"},
    {10, 14, "slaves[1].name",
     "duplicate slave name \"vm1\" (first used by slaves[0])"},
    {11, 5, "slaves[2]",
     "missing required key \"secret\" (or \"secret_file\")"},
    {11, 14, "slaves[2].name", "invalid name \"bad name\": " NAME_RULE},
    {11, 41, "slaves[2].tags[1]", "duplicate tag \"ok\""},
    {11, 47, "slaves[2].tags[2]", "expected a string"},
    {12, 5, "slaves[3]", "missing required key \"name\""},
    {12, 35, "slaves[3].max_builds", "must be between 1 and 64 (got 0)"},
    {15, 38, "builders[0].slaves[1]",
     "no slave named \"vm9\" in \"slaves\"; did you mean \"vm1\"?"},
    {15, 45, "builders[0].slaves[2]", "no slave named \"zz9\" in \"slaves\""},
    {15, 65, "builders[0].priority",
     "must be between -1000 and 1000 (got 2000)"},
    {16, 21, "builders[0].properties.bad key",
     "invalid property name \"bad key\": " NAME_RULE},
    {16, 42, "builders[0].properties.n", "expected a string"},
    {18, 34, "builders[0].steps[0].command", "must not be empty"},
    {18, 38, "builders[0].steps[0].tiemout",
     "unknown key \"tiemout\"; did you mean \"timeout\"?"},
    {19, 17, "builders[0].steps[1].name",
     "duplicate step name \"s1\" (first used by steps[0])"},
    {19, 34, "builders[0].steps[1].command",
     "expected a string or an array of strings"},
    {19, 45, "builders[0].steps[1].env.1BAD",
     "invalid environment variable name \"1BAD\": use letters, digits and _, "
     "not starting with a digit"},
    {19, 64, "builders[0].steps[1].env.OK", "expected a string"},
    {20, 20, "builders[0].steps[1].workdir",
     "invalid workdir \"../up\": use a relative path of names separated by "
     "'/', without \".\" or \"..\""},
    {20, 40, "builders[0].steps[1].timeout", "expected an integer"},
    {20, 58, "builders[0].steps[1].alwaysRun", "expected true or false"},
    {21, 8, "builders[0].steps[2]", "missing required key \"name\""},
    {23, 14, "builders[1].name",
     "duplicate builder name \"b1\" (first used by builders[0])"},
    {23, 29, "builders[1].steps", "a builder needs at least one step"},
    {24, 5, "builders[2]", "missing required key \"steps\""},
    {25, 5, "builders[3]", "expected an object"},
};

TF_TEST(every_error_with_position)
{
    tf_cfg_diags_t d = {0};
    tf_config_t *c = (tf_config_t *)1;
    size_t n = sizeof(errors_expected) / sizeof(errors_expected[0]);
    TF_CHECK_INT(load_str("conf/master.json", errors_config, &c, &d),
                 TF_ECONFIG);
    TF_CHECK(c == NULL);
    TF_CHECK_INT(d.count, n);
    for (size_t i = 0; i < n && i < d.count; i++) {
        const tf_cfg_diag_t *g = &d.items[i];
        TF_CHECK_STR(g->file, "conf/master.json");
        TF_CHECK_INT(g->line, errors_expected[i].line);
        TF_CHECK_INT(g->col, errors_expected[i].col);
        TF_CHECK_STR(g->key, errors_expected[i].key);
        TF_CHECK_STR(g->message, errors_expected[i].message);
    }
    if (d.count != n)
        dump_diags(&d);
    if (d.count > 0) {
        char *s = tf_cfg_diag_format(&d.items[0]);
        TF_CHECK_STR(s, "conf/master.json:2:3: error: nmae: unknown key "
                        "\"nmae\"; did you mean \"name\"?");
        free(s);
    }
    /* The same diags struct can be reused: it is cleared first. */
    TF_CHECK_INT(load_str("conf/master.json", "{}", &c, &d), 0);
    TF_CHECK_INT(d.count, 0);
    tf_config_free(c);
    tf_cfg_diags_clear(&d);
    /* Without diags only the verdict comes back. */
    TF_CHECK_INT(load_str("conf/master.json", errors_config, &c, NULL),
                 TF_ECONFIG);
    TF_CHECK(c == NULL);
}

TF_TEST(type_errors)
{
    CHECK_ONE_ERROR("{\"heartbeat_s\": 2.0}", 1, 17, "heartbeat_s",
                    "expected an integer");
    CHECK_ONE_ERROR("{\"heartbeat_s\": null}", 1, 17, "heartbeat_s",
                    "expected an integer");
    CHECK_ONE_ERROR("{\"name\": 1}", 1, 10, "name", "expected a string");
    CHECK_ONE_ERROR("{\"name\": \"\"}", 1, 10, "name", "must not be empty");
    CHECK_ONE_ERROR("{\"listen\": 8010}", 1, 12, "listen",
                    "expected an object");
    CHECK_ONE_ERROR("{\"slaves\": {}}", 1, 12, "slaves",
                    "expected an array of objects");
    CHECK_ONE_ERROR("{\"slaves\": [{\"name\": \"a\", \"secret\": \"s\", "
                    "\"tags\": \"linux\"}]}",
                    1, 50, "slaves[0].tags", "expected an array of names");
    CHECK_ONE_ERROR("{\"slaves\": [{\"name\": \"a\", \"secret\": 5}]}", 1, 37,
                    "slaves[0].secret", "expected a string");
    CHECK_ONE_ERROR("{\"slaves\": [{\"name\": \"a\", \"secret\": \"\"}]}", 1,
                    37, "slaves[0].secret", "must not be empty");
    CHECK_ONE_ERROR("{\"builders\": [{\"name\": \"b\", \"steps\": {}}]}", 1, 38,
                    "builders[0].steps", "expected an array of steps");
    CHECK_ONE_ERROR("{\"builders\": [{\"name\": \"b\", \"steps\": [[]]}]}", 1,
                    39, "builders[0].steps[0]", "expected an object");
    CHECK_ONE_ERROR("{\"builders\": [{\"name\": \"b\", \"properties\": [], "
                    "\"steps\": [{\"name\": \"s\", \"command\": \"x\"}]}]}",
                    1, 43, "builders[0].properties",
                    "expected an object of strings");
    CHECK_ONE_ERROR("{\"builders\": [{\"name\": \"b\", \"steps\": [{\"name\": "
                    "\"s\", \"command\": [\"a\", 1]}]}]}",
                    1, 70, "builders[0].steps[0].command[1]",
                    "expected a string");
    CHECK_ONE_ERROR("{\"builders\": [{\"name\": \"b\", \"steps\": [{\"name\": "
                    "\"s\", \"command\": [\"\"]}]}]}",
                    1, 65, "builders[0].steps[0].command[0]",
                    "the program to run must not be empty");
    CHECK_ONE_ERROR("{\"builders\": [{\"name\": \"b\", \"steps\": [{\"name\": "
                    "\"s\", \"command\": \"\"}]}]}",
                    1, 64, "builders[0].steps[0].command", "must not be empty");
    CHECK_ONE_ERROR("{\"builders\": [{\"name\": \"b\", \"steps\": [{\"name\": "
                    "\"s\"}]}]}",
                    1, 39, "builders[0].steps[0]",
                    "missing required key \"command\"");
    CHECK_ONE_ERROR("{\"builders\": [{\"name\": \"b\", \"steps\": [{\"name\": "
                    "\"s\", \"command\": \"x\", \"maxTime\": -1}]}]}",
                    1, 80, "builders[0].steps[0].maxTime",
                    "must not be negative (got -1)");
    CHECK_ONE_ERROR("[]", 1, 1, "", "the configuration must be a JSON object");
}

TF_TEST(timers_cross_check)
{
    CHECK_ONE_ERROR("{\"heartbeat_s\": 40}", 1, 17, "heartbeat_s",
                    "must be less than lost_after_s (30, the default)");
    CHECK_ONE_ERROR("{\"heartbeat_s\": 10,\n \"lost_after_s\": 10}", 2, 18,
                    "lost_after_s", "must be greater than heartbeat_s (10)");
    CHECK_ONE_ERROR("{\"lost_after_s\": 9}", 1, 18, "lost_after_s",
                    "must be greater than heartbeat_s (10)");
    CHECK_ONE_ERROR("{\"heartbeat_s\": 3601, \"lost_after_s\": 4000}", 1, 17,
                    "heartbeat_s", "must be between 1 and 3600 (got 3601)");
    CHECK_ONE_ERROR("{\"build_lost_after_s\": 0}", 1, 24, "build_lost_after_s",
                    "must be at least 1 (got 0)");
    CHECK_ONE_ERROR("{\"listen\": {\"port\": 0}}", 1, 21, "listen.port",
                    "must be between 1 and 65535 (got 0)");

    tf_config_t *c = NULL;
    TF_CHECK_INT(
        load_str("/m.json",
                 "{\"heartbeat_s\": 3600, \"lost_after_s\": 3601, "
                 "\"max_retries\": 100, \"listen\": {\"port\": 65535}}",
                 &c, NULL),
        0);
    if (c) {
        TF_CHECK_INT(c->heartbeat_s, 3600);
        TF_CHECK_INT(c->lost_after_s, 3601);
        TF_CHECK_INT(c->max_retries, 100);
        TF_CHECK_INT(c->listen_port, 65535);
        TF_CHECK_STR(c->public_url, "http://127.0.0.1:65535/");
    }
    tf_config_free(c);
}

/* store.postgres: a postgresql:// URL replaces the sqlite path; anything
 * else is refused at its place. */
TF_TEST(store_postgres)
{
    tf_cfg_diags_t d = {0};
    tf_config_t *c = NULL;

    TF_CHECK_INT(load_str("/etc/tf/m.json",
                          "{\"store\": {\"postgres\": "
                          "\"postgresql://tf@db/farm\", \"standby\": true}}",
                          &c, &d),
                 0);
    if (c) {
        TF_CHECK_STR(c->database, "postgresql://tf@db/farm");
        TF_CHECK_INT(c->store_standby, 1);
    }
    tf_config_free(c);
    tf_cfg_diags_clear(&d);
    c = NULL;
    TF_CHECK_INT(load_str("/etc/tf/m.json", "{}", &c, &d), 0);
    if (c) {
        TF_CHECK_STR(c->database, "/etc/tf/state.sqlite");
        TF_CHECK_INT(c->store_standby, 0);
    }
    tf_config_free(c);
    tf_cfg_diags_clear(&d);
    CHECK_ONE_ERROR("{\"store\": {\"postgres\": \"mysql://db/farm\"}}", 1,
                    24, "store.postgres",
                    "must be a URL starting with postgresql:// or "
                    "postgres://");
    CHECK_ONE_ERROR("{\"store\": {\"postgres\": \"postgresql://a b/c\"}}",
                    1, 24, "store.postgres",
                    "must not contain spaces or control characters");
    CHECK_ONE_ERROR("{\"store\": {\"postgres\": 5}}", 1, 24,
                    "store.postgres", "expected a string");
    CHECK_ONE_ERROR("{\"store\": {\"postgre\": \"postgresql://db/x\"}}", 1,
                    12, "store.postgre",
                    "unknown key \"postgre\"; did you mean \"postgres\"?");
}

TF_TEST(urls)
{
    CHECK_ONE_ERROR("{\"url\": \"https://\"}", 1, 9, "url",
                    "must start with http:// or https:// and a host");
    CHECK_ONE_ERROR("{\"url\": \"http:///x\"}", 1, 9, "url",
                    "must start with http:// or https:// and a host");
    CHECK_ONE_ERROR("{\"url\": \"ci.example.org\"}", 1, 9, "url",
                    "must start with http:// or https:// and a host");
    CHECK_ONE_ERROR("{\"url\": \"http://ci example\"}", 1, 9, "url",
                    "must not contain spaces or control characters");
    tf_config_t *c = NULL;
    TF_CHECK_INT(load_str("/m.json",
                          "{\"url\": \"HTTPS://ci.example.org:8443/a/\"}", &c,
                          NULL),
                 0);
    if (c)
        TF_CHECK_STR(c->public_url, "HTTPS://ci.example.org:8443/a/");
    tf_config_free(c);
}

TF_TEST(unknown_keys_and_suggestions)
{
    CHECK_ONE_ERROR("{\n  \"zzzzzz\": 1\n}", 2, 3, "zzzzzz",
                    "unknown key \"zzzzzz\"");
    CHECK_ONE_ERROR("{\"Name\": \"x\"}", 1, 2, "Name",
                    "unknown key \"Name\"; did you mean \"name\"?");
    CHECK_ONE_ERROR("{\"listen\": {\"prot\": 80}}", 1, 13, "listen.prot",
                    "unknown key \"prot\"; did you mean \"port\"?");
    CHECK_ONE_ERROR("{\"hearbeat\": 5}", 1, 2, "hearbeat",
                    "unknown key \"hearbeat\"");
    CHECK_ONE_ERROR("{\"slaves\": [{\"name\": \"a\", \"secret\": \"s\", "
                    "\"max_build\": 2}]}",
                    1, 42, "slaves[0].max_build",
                    "unknown key \"max_build\"; did you mean \"max_builds\"?");
    CHECK_ONE_ERROR("{\"builders\": [{\"name\": \"b\", \"steps\": [{\"name\": "
                    "\"s\", \"command\": \"x\",\n \"haltonfailure\": true}]}]}",
                    2, 2, "builders[0].steps[0].haltonfailure",
                    "unknown key \"haltonfailure\"; did you mean "
                    "\"haltOnFailure\"?");
    /* Control characters in a key are shown escaped, long keys cut. */
    CHECK_ONE_ERROR("{\"a\\u0001b\": 1}", 1, 2, "a\\x01b",
                    "unknown key \"a\\x01b\"");
    CHECK_ONE_ERROR(
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaa\": 1}",
        1, 2,
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaa...",
        "unknown key \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaa...\"");
    /* Keys needing pointer escapes still get their position. */
    CHECK_ONE_ERROR("{\"builders\": [{\"name\": \"b\", \"properties\": "
                    "{\"a/b~c\": \"v\"}, \"steps\": [{\"name\": \"s\", "
                    "\"command\": \"x\"}]}]}",
                    1, 44, "builders[0].properties.a/b~c",
                    "invalid property name \"a/b~c\": " NAME_RULE);
}

TF_TEST(duplicate_names)
{
    const char *text =
        "{\"slaves\": [{\"name\": \"a\", \"secret\": \"s\"},\n"
        "            {\"name\": \"b\", \"secret\": \"s\"},\n"
        "            {\"name\": \"a\", \"secret\": \"s\"},\n"
        "            {\"name\": \"a\", \"secret\": \"s\"}],\n"
        " \"builders\": [\n"
        "   {\"name\": \"x\", \"slaves\": [\"a\", \"b\", \"a\"],\n"
        "    \"steps\": [{\"name\": \"s\", \"command\": \"1\"},\n"
        "              {\"name\": \"t\", \"command\": \"2\"},\n"
        "              {\"name\": \"s\", \"command\": \"3\"}]},\n"
        "   {\"name\": \"x\", \"steps\": [{\"name\": \"s\", \"command\": "
        "\"1\"}]}]}";
    tf_cfg_diags_t d = {0};
    tf_config_t *c = NULL;
    TF_CHECK_INT(load_str("/m.json", text, &c, &d), TF_ECONFIG);
    TF_CHECK_INT(d.count, 5);
    if (d.count == 5) {
        TF_CHECK_INT(d.items[0].line, 3);
        TF_CHECK_INT(d.items[0].col, 22);
        TF_CHECK_STR(d.items[0].key, "slaves[2].name");
        TF_CHECK_STR(d.items[0].message,
                     "duplicate slave name \"a\" (first used by slaves[0])");
        TF_CHECK_INT(d.items[1].line, 4);
        TF_CHECK_STR(d.items[1].key, "slaves[3].name");
        TF_CHECK_STR(d.items[1].message,
                     "duplicate slave name \"a\" (first used by slaves[0])");
        TF_CHECK_INT(d.items[2].line, 6);
        TF_CHECK_INT(d.items[2].col, 39);
        TF_CHECK_STR(d.items[2].key, "builders[0].slaves[2]");
        TF_CHECK_STR(d.items[2].message, "duplicate slave \"a\"");
        TF_CHECK_INT(d.items[3].line, 9);
        TF_CHECK_INT(d.items[3].col, 24);
        TF_CHECK_STR(d.items[3].key, "builders[0].steps[2].name");
        TF_CHECK_STR(d.items[3].message,
                     "duplicate step name \"s\" (first used by steps[0])");
        TF_CHECK_INT(d.items[4].line, 10);
        TF_CHECK_INT(d.items[4].col, 13);
        TF_CHECK_STR(d.items[4].key, "builders[1].name");
        TF_CHECK_STR(
            d.items[4].message,
            "duplicate builder name \"x\" (first used by builders[0])");
    } else {
        dump_diags(&d);
    }
    tf_cfg_diags_clear(&d);
}

TF_TEST(too_many_steps)
{
    size_t cap = 64 + 1001 * 48;
    char *text = malloc(cap);
    TF_CHECK(text != NULL);
    if (!text)
        return;
    size_t n = (size_t)snprintf(text, cap,
                                "{\"builders\": [{\"name\": \"b\", "
                                "\"steps\": [");
    for (int i = 0; i < 1001; i++)
        n += (size_t)snprintf(text + n, cap - n,
                              "%s{\"name\": \"s%d\", \"command\": \"x\"}",
                              i ? "," : "", i);
    snprintf(text + n, cap - n, "]}]}");
    CHECK_ONE_ERROR(text, 1, 38, "builders[0].steps",
                    "too many steps (1001; at most 1000)");
    /* Exactly 1000 is fine. */
    char *last = strstr(text, ",{\"name\": \"s1000\"");
    TF_CHECK(last != NULL);
    if (last) {
        memcpy(last, "]}]}", 5);
        tf_config_t *c = NULL;
        TF_CHECK_INT(load_str("/m.json", text, &c, NULL), 0);
        if (c)
            TF_CHECK_INT(c->builders[0].nsteps, 1000);
        tf_config_free(c);
    }
    free(text);
}

/* A builder whose build_start cannot fit the protocol is refused where
 * its steps are, with the size; one just under the cap loads. */
TF_TEST(build_start_must_fit)
{
    size_t cap = 64 + 1000 * 1200;
    char *text = malloc(cap);
    TF_CHECK(text != NULL);
    if (!text)
        return;
    for (int round = 0; round < 2; round++) {
        /* 999 steps of about 1.1 KB: 1.3 MB. Then 900 of 1 KB: fits. */
        int nsteps = round == 0 ? 999 : 900;
        int width = round == 0 ? 1100 : 900;
        size_t n = (size_t)snprintf(text, cap,
                                    "{\"builders\": [{\"name\": \"b\", "
                                    "\"steps\": [");
        for (int i = 0; i < nsteps; i++) {
            n += (size_t)snprintf(text + n, cap - n,
                                  "%s{\"name\": \"s%d\", \"command\": \"",
                                  i ? "," : "", i);
            memset(text + n, 'y', (size_t)width);
            n += (size_t)width;
            n += (size_t)snprintf(text + n, cap - n, "\"}");
        }
        snprintf(text + n, cap - n, "]}]}");
        tf_cfg_diags_t d = {0};
        tf_config_t *c = NULL;
        int rc = load_str("/m.json", text, &c, &d);
        if (round == 0) {
            TF_CHECK_INT(rc, TF_ECONFIG);
            TF_CHECK_INT(d.count, 1);
            if (d.count >= 1) {
                TF_CHECK_STR(d.items[0].key, "builders[0].steps");
                TF_CHECK(strstr(d.items[0].message,
                                "build_start would be ") != NULL);
                TF_CHECK(strstr(d.items[0].message,
                                "over the limit of 1048576 bytes") != NULL);
            }
        } else {
            TF_CHECK_INT(rc, 0);
            if (rc)
                dump_diags(&d);
        }
        tf_config_free(c);
        tf_cfg_diags_clear(&d);
    }
    /* 1000 steps are fine alone, not with the source step a repository
     * adds. */
    size_t n = (size_t)snprintf(text, cap,
                                "{\"builders\": [{\"name\": \"b\", "
                                "\"repository\": \"/srv/r.git\", "
                                "\"steps\": [");
    for (int i = 0; i < 1000; i++)
        n += (size_t)snprintf(text + n, cap - n,
                              "%s{\"name\": \"s%d\", \"command\": \"x\"}",
                              i ? "," : "", i);
    snprintf(text + n, cap - n, "]}]}");
    CHECK_ONE_ERROR(text, 1, 66, "builders[0].steps",
                    "1000 steps and the source step the builder's "
                    "repository adds are over the protocol's limit of 1000 "
                    "steps in a build");
    free(text);
}

TF_TEST(secret_files)
{
    char *dir = make_tmpdir();
    if (!dir)
        return;
    free(write_file(dir, "keys/empty.secret", " \n"));
    free(write_file(dir, "keys/ok.secret", "k\n"));
    char *keys = join(dir, "keys");
    TF_CHECK_INT(mkdir(keys, 0700) == 0 || errno == EEXIST, 1);
    char *text = NULL;
    TF_CHECK(
        asprintf(
            &text,
            "{\"slaves\": [\n"
            "  {\"name\": \"a\", \"secret_file\": \"keys/missing\"},\n"
            "  {\"name\": \"b\", \"secret_file\": \"keys/empty.secret\"},\n"
            "  {\"name\": \"c\", \"secret_file\": \"keys\"},\n"
            "  {\"name\": \"d\", \"secret_file\": \"%s/keys/ok.secret\"},\n"
            "  {\"name\": \"e\", \"secret_file\": \"\"}\n"
            "]}",
            dir) > 0);
    char *path = write_file(dir, "master.json", text);
    tf_cfg_diags_t d = {0};
    tf_config_t *c = NULL;
    TF_CHECK_INT(tf_config_load(path, &c, &d), TF_ECONFIG);
    TF_CHECK_INT(d.count, 4);
    char *want = NULL;
    if (d.count == 4) {
        TF_CHECK_STR(d.items[0].key, "slaves[0].secret_file");
        TF_CHECK_INT(d.items[0].line, 2);
        TF_CHECK_INT(d.items[0].col, 32);
        TF_CHECK(asprintf(&want,
                          "cannot read secret file \"%s/keys/missing\": No "
                          "such file or directory",
                          dir) > 0);
        TF_CHECK_STR(d.items[0].message, want);
        free(want);
        TF_CHECK_STR(d.items[1].key, "slaves[1].secret_file");
        TF_CHECK_INT(d.items[1].line, 3);
        TF_CHECK(asprintf(&want,
                          "secret file \"%s/keys/empty.secret\" is empty "
                          "(the secret is its first line)",
                          dir) > 0);
        TF_CHECK_STR(d.items[1].message, want);
        free(want);
        TF_CHECK_STR(d.items[2].key, "slaves[2].secret_file");
        TF_CHECK(asprintf(&want,
                          "cannot read secret file \"%s/keys\": Is a directory",
                          dir) > 0);
        TF_CHECK_STR(d.items[2].message, want);
        free(want);
        TF_CHECK_STR(d.items[3].key, "slaves[4].secret_file");
        TF_CHECK_STR(d.items[3].message, "must not be empty");
    } else {
        dump_diags(&d);
    }
    tf_cfg_diags_clear(&d);
    free(text);
    free(path);
    free(keys);
    rm_tree(dir);
    free(dir);
}

/* Rewrites path in place (same inode), as an editor saving in place does. */
static void rewrite_in_place(const char *path, const char *content)
{
    int fd = open(path, O_WRONLY | O_TRUNC);
    TF_CHECK(fd >= 0);
    if (fd < 0)
        return;
    size_t n = strlen(content);
    TF_CHECK(write(fd, content, n) == (ssize_t)n);
    close(fd);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Loads path through cache; *secret_a and *secret_b get the slaves'
 * secrets ("-" when absent), reads the cache's count of files read. */
static int load_cached(const char *path, tf_cfg_secrets_t *cache,
                       char sa[16], char sb[16], size_t *reads)
{
    tf_config_t *c = NULL;
    tf_cfg_diags_t d = {0};
    int rc = tf_config_load_cached(path, cache, &c, &d);
    const tf_cfg_slave_t *a = c ? tf_config_slave(c, "a") : NULL;
    const tf_cfg_slave_t *b = c ? tf_config_slave(c, "b") : NULL;
    snprintf(sa, 16, "%s", a ? a->secret : "-");
    snprintf(sb, 16, "%s", b ? b->secret : "-");
    if (rc == TF_ECONFIG && d.count == 1 &&
        strstr(d.items[0].message, "cannot read secret file"))
        snprintf(sa, 16, "%s", "unreadable");
    *reads = tf_cfg_secrets_reads(cache);
    tf_config_free(c);
    tf_cfg_diags_clear(&d);
    return rc;
}

/* Waits until files written before now are past the cache's racy window
 * (100 ms with nanosecond file times). */
static void past_racy_window(void)
{
    usleep(250 * 1000);
}

TF_TEST(secret_cache)
{
    char *dir = make_tmpdir();
    if (!dir)
        return;
    const char *both = "{\"slaves\": ["
                       "{\"name\": \"a\", \"secret_file\": \"k/a.secret\"},"
                       "{\"name\": \"b\", \"secret_file\": \"k/b.secret\"}]}";
    const char *only_a = "{\"slaves\": ["
                         "{\"name\": \"a\", \"secret_file\": \"k/a.secret\"}]}";
    char *pa = write_file(dir, "k/a.secret", "alpha\n");
    char *pb = write_file(dir, "k/b.secret", "bravo\n");
    char *cfg = write_file(dir, "master.json", both);
    tf_cfg_secrets_t *cache = tf_cfg_secrets_new();
    TF_CHECK(cache != NULL);
    char sa[16], sb[16];
    size_t reads = 0, before;
    past_racy_window();

    /* The first load reads both files, the next ones only stat them. */
    TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), 0);
    TF_CHECK_STR(sa, "alpha");
    TF_CHECK_STR(sb, "bravo");
    TF_CHECK_INT(reads, 2);
    for (int i = 0; i < 3; i++) {
        TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), 0);
        TF_CHECK_STR(sa, "alpha");
        TF_CHECK_STR(sb, "bravo");
        TF_CHECK_INT(reads, 2);
    }

    /* Edited in place with the same size: read again, the new secret. */
    rewrite_in_place(pa, "ALPHA\n");
    past_racy_window();
    TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), 0);
    TF_CHECK_STR(sa, "ALPHA");
    TF_CHECK_STR(sb, "bravo");
    TF_CHECK_INT(reads, 3);
    /* Replaced by rename (another inode). */
    free(write_file(dir, "k/b.secret", "BRAVO\n"));
    past_racy_window();
    TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), 0);
    TF_CHECK_STR(sa, "ALPHA");
    TF_CHECK_STR(sb, "BRAVO");
    TF_CHECK_INT(reads, 4);
    TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), 0);
    TF_CHECK_INT(reads, 4);
    /* Only the mode changed (ctime moves): read again, same secret. */
    TF_CHECK_INT(chmod(pa, 0400), 0);
    past_racy_window();
    TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), 0);
    TF_CHECK_STR(sa, "ALPHA");
    TF_CHECK_INT(reads, 5);
    TF_CHECK_INT(chmod(pa, 0600), 0);
    past_racy_window();
    TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), 0);
    TF_CHECK_INT(reads, 6);

    /* A file the last successful load did not name is dropped: naming it
     * again reads it. */
    rewrite_in_place(cfg, only_a);
    TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), 0);
    TF_CHECK_STR(sb, "-");
    TF_CHECK_INT(reads, 6);
    rewrite_in_place(cfg, both);
    TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), 0);
    TF_CHECK_STR(sb, "BRAVO");
    TF_CHECK_INT(reads, 7);

    /* Written just before the load (within the file times' granularity, a
     * same-size rewrite could keep them): not trusted, read again at the
     * next load too. Only checked when the load came that soon. */
    before = reads;
    int64_t t0 = mono_ms();
    rewrite_in_place(pa, "alpha\n");
    TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), 0);
    TF_CHECK_STR(sa, "alpha");
    TF_CHECK_INT(reads, before + 1);
    rewrite_in_place(pa, "omega\n");
    TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), 0);
    if (mono_ms() - t0 < 50) {
        TF_CHECK_STR(sa, "omega");
        TF_CHECK_INT(reads, before + 2);
    }

    /* A file gone: the same error as without the cache, never the secret
     * read before. */
    TF_CHECK_INT(unlink(pa), 0);
    TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), TF_ECONFIG);
    TF_CHECK_STR(sa, "unreadable");

    tf_cfg_secrets_free(cache);
    tf_cfg_secrets_free(NULL);
    free(pa);
    free(pb);
    free(cfg);
    rm_tree(dir);
    free(dir);
}

/* What a load gave, as one string: its code, every diagnostic as
 * printed, and every slave (name, secret, builds, tags) and builder. */
static char *load_summary(const char *path, tf_cfg_secrets_t *cache)
{
    tf_config_t *c = NULL;
    tf_cfg_diags_t d = {0};
    char *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);
    int rc = tf_config_load_cached(path, cache, &c, &d);
    fprintf(f, "rc %d\n", rc);
    for (size_t i = 0; i < d.count; i++) {
        char *line = tf_cfg_diag_format(&d.items[i]);
        fprintf(f, "%s\n", line ? line : "?");
        free(line);
    }
    for (size_t i = 0; c && i < c->nslaves; i++) {
        const tf_cfg_slave_t *s = &c->slaves[i];
        fprintf(f, "slave %s %s %u", s->name, s->secret, s->max_builds);
        for (size_t t = 0; t < s->ntags; t++)
            fprintf(f, " %s", s->tags[t]);
        fprintf(f, "\n");
    }
    for (size_t i = 0; c && i < c->nbuilders; i++)
        fprintf(f, "builder %s %zu\n", c->builders[i].name,
                c->builders[i].nslaves);
    fclose(f);
    tf_config_free(c);
    tf_cfg_diags_clear(&d);
    return out;
}

/* Writes text as dir/master.json and checks that a load through cache
 * says exactly what a load without one says. */
static void same_as_uncached(const char *dir, tf_cfg_secrets_t *cache,
                             const char *text, const char *expect_in)
{
    char *cfg = write_file(dir, "master.json", text);
    char *plain = load_summary(cfg, NULL);
    char *cached = load_summary(cfg, cache);
    TF_CHECK_STR(cached, plain);
    if (expect_in && (!plain || !strstr(plain, expect_in))) {
        fprintf(stderr, "expected \"%s\" in:\n%s", expect_in,
                plain ? plain : "(null)");
        TF_CHECK(!"the load did not say what was expected");
    }
    free(plain);
    free(cached);
    free(cfg);
}

/* A reload whose "slaves" are written as in the last successful load
 * copies them instead of parsing them (secrets.c): whatever else changed,
 * the config, the secrets and every diagnostic are those of a load
 * without the cache, and a secret file changed in between is read. */
TF_TEST(reused_slaves)
{
    char *dir = make_tmpdir();
    if (!dir)
        return;
    const char *slaves =
        "{\n  \"slaves\": [\n"
        "    {\"name\": \"a\", \"secret_file\": \"k/a\", \"tags\": "
        "[\"linux\", \"gpu\"]},\n"
        "    {\"name\": \"b\", \"secret\": \"inline\", \"max_builds\": 3},\n"
        "    {\"name\": \"c\", \"secret_file\": \"k/c\", \"tags\": "
        "[\"linux\"]}\n  ],\n";
    const char *step = "\"steps\": [{\"name\": \"s\", \"command\": \"true\"}]";
    char text[2048];
    tf_cfg_secrets_t *cache = tf_cfg_secrets_new();
    TF_CHECK(cache != NULL);
    char *pa = write_file(dir, "k/a", "alpha\n");
    char *pc = write_file(dir, "k/c", "charlie\n");
    past_racy_window();

    snprintf(text, sizeof(text), "%s  \"builders\": [{\"name\": \"x\", "
             "\"slaves\": [\"a\", \"b\"], %s}]\n}\n", slaves, step);
    same_as_uncached(dir, cache, text, "slave b inline 3");
    TF_CHECK_INT(tf_cfg_secrets_reuses(cache), 0);
    same_as_uncached(dir, cache, text, "slave a alpha 1 linux gpu");
    TF_CHECK_INT(tf_cfg_secrets_reuses(cache), 1);
    size_t reads = tf_cfg_secrets_reads(cache);
    TF_CHECK_INT(reads, 2);

    /* Builders changed, slaves not: a builder naming a slave is checked
     * against the copied slaves. */
    snprintf(text, sizeof(text), "%s  \"builders\": [{\"name\": \"y\", "
             "\"slaves\": [\"c\", \"zz\"], %s}]\n}\n", slaves, step);
    same_as_uncached(dir, cache, text, "no slave named \"zz\"");
    snprintf(text, sizeof(text), "%s  \"builders\": [{\"name\": \"y\", "
             "\"tags\": [\"gpu\"], %s}]\n}\n", slaves, step);
    same_as_uncached(dir, cache, text, "builder y 0");
    TF_CHECK_INT(tf_cfg_secrets_reuses(cache), 3);
    TF_CHECK_INT(tf_cfg_secrets_reads(cache), reads);

    /* A secret file edited in place between reloads is read again. */
    rewrite_in_place(pa, "ALPHA\n");
    past_racy_window();
    same_as_uncached(dir, cache, text, "slave a ALPHA 1 linux gpu");
    TF_CHECK_INT(tf_cfg_secrets_reads(cache), reads + 1);
    /* One gone: the same diagnostic, at the same place. */
    TF_CHECK_INT(unlink(pc), 0);
    same_as_uncached(dir, cache, text, "slaves[2].secret_file");
    /* Replaced by another file. */
    free(write_file(dir, "k/c", "CHARLIE\n"));
    past_racy_window();
    same_as_uncached(dir, cache, text, "slave c CHARLIE 1 linux");
    TF_CHECK_INT(tf_cfg_secrets_reuses(cache), 6);

    /* Errors elsewhere keep their positions and jansson's messages. */
    snprintf(text, sizeof(text), "%s  \"builders\": [{\"name\": \"y\", "
             "\"tiemout\": 1, %s}]\n}\n", slaves, step);
    same_as_uncached(dir, cache, text, "tiemout");
    snprintf(text, sizeof(text), "%s  \"builders\": [{\"name\": \"y\", "
             "\"steps\": [{\"name\": \"s\", \"command\": tru}]}]\n}\n",
             slaves);
    same_as_uncached(dir, cache, text, "invalid token");
    snprintf(text, sizeof(text), "%s  \"slaves\": [],\n  \"builders\": "
             "[]\n}\n", slaves);
    same_as_uncached(dir, cache, text, "duplicate");
    snprintf(text, sizeof(text), "%s  \"builders\": []\n}\n   x", slaves);
    same_as_uncached(dir, cache, text, "end of file expected");

    /* The slaves changed: read from the text. */
    snprintf(text, sizeof(text), "{\"slaves\": [{\"name\": \"a\", "
             "\"secret_file\": \"k/a\"}, {\"name\": \"a\", \"secret\": "
             "\"s\"}]}");
    same_as_uncached(dir, cache, text, "duplicate slave name");
    snprintf(text, sizeof(text), "{\"slaves\": [{\"name\": \"d\", "
             "\"secret_file\": \"k/a\", \"max_builds\": 2}]}");
    size_t reuses = tf_cfg_secrets_reuses(cache);
    same_as_uncached(dir, cache, text, "slave d ALPHA 2");
    same_as_uncached(dir, cache, text, "slave d ALPHA 2");
    TF_CHECK_INT(tf_cfg_secrets_reuses(cache), reuses + 1);

    tf_cfg_secrets_free(cache);
    free(pa);
    free(pc);
    rm_tree(dir);
    free(dir);
}

/* Secrets read within the racy window are read again by a settle once
 * the window is past (the master's tick), not by the next load; a file
 * changed since is left to the next load, which reads it. */
TF_TEST(secret_settle)
{
    char *dir = make_tmpdir();
    if (!dir)
        return;
    const char *both = "{\"slaves\": ["
                       "{\"name\": \"a\", \"secret_file\": \"k/a.secret\"},"
                       "{\"name\": \"b\", \"secret_file\": \"k/b.secret\"}]}";
    tf_cfg_secrets_t *cache = tf_cfg_secrets_new();
    atomic_bool stop = false;
    char sa[16], sb[16];
    size_t reads = 0;
    TF_CHECK(cache != NULL);
    TF_CHECK(!tf_cfg_secrets_unsettled(cache));
    TF_CHECK_INT(tf_cfg_secrets_settle(cache, NULL), 0);

    /* Both written just before the load: racy. */
    char *cfg = write_file(dir, "master.json", both);
    int64_t t0 = mono_ms();
    char *pa = write_file(dir, "k/a.secret", "alpha\n");
    char *pb = write_file(dir, "k/b.secret", "bravo\n");
    TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), 0);
    TF_CHECK_INT(reads, 2);
    if (mono_ms() - t0 < 50) {
        TF_CHECK(tf_cfg_secrets_unsettled(cache));
        /* Not past the window yet: nothing read, both left. */
        TF_CHECK_INT(tf_cfg_secrets_settle(cache, NULL), 2);
        TF_CHECK_INT(tf_cfg_secrets_settled(cache), 0);
    }
    past_racy_window();
    /* Asked to stop: both left for later. */
    atomic_store(&stop, true);
    TF_CHECK_INT(tf_cfg_secrets_settle(cache, &stop), 2);
    TF_CHECK(tf_cfg_secrets_unsettled(cache));
    /* b changed in place since the load: left to the next load. */
    rewrite_in_place(pb, "BRAVO\n");
    atomic_store(&stop, false);
    TF_CHECK_INT(tf_cfg_secrets_settle(cache, &stop), 0);
    TF_CHECK(!tf_cfg_secrets_unsettled(cache));
    TF_CHECK_INT(tf_cfg_secrets_settled(cache), 1);
    past_racy_window();
    /* The next load reads only b (changed), trusts a (settled). */
    TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), 0);
    TF_CHECK_STR(sa, "alpha");
    TF_CHECK_STR(sb, "BRAVO");
    TF_CHECK_INT(reads, 3);
    TF_CHECK_INT(load_cached(cfg, cache, sa, sb, &reads), 0);
    TF_CHECK_INT(reads, 3);
    TF_CHECK(!tf_cfg_secrets_unsettled(cache));

    tf_cfg_secrets_free(cache);
    free(pa);
    free(pb);
    free(cfg);
    rm_tree(dir);
    free(dir);
}

TF_TEST(syntax_errors)
{
    /* jansson's own line:col and text. */
    const char *text = "{\n  \"a\": 1,\n  \"b\": tru\n}";
    json_error_t jerr;
    TF_CHECK(json_loads(text, JSON_REJECT_DUPLICATES, &jerr) == NULL);
    CHECK_ONE_ERROR(text, 3, 10, "", "invalid token near 'tru'");
    TF_CHECK_INT(jerr.line, 3);
    TF_CHECK_INT(jerr.column, 10);
    CHECK_ONE_ERROR("{\"a\": 1,}", 1, 9, "", "string or '}' expected near '}'");
    CHECK_ONE_ERROR("", 1, 0, "", "'[' or '{' expected near end of file");
    CHECK_ONE_ERROR("{\"slaves\": [\n", 2, 0, "",
                    "']' expected near end of file");
    /* Duplicate keys point at the second key itself. */
    CHECK_ONE_ERROR(
        "{\n  \"slaves\": [],\n  \"name\": \"a\",\n    \"slaves\": []\n}", 4, 5,
        "", "duplicate key \"slaves\"");
    CHECK_ONE_ERROR(
        "{\"a\\\\\\\"b\": 1, \"x\": {\"a\\\\\\\"b\": 2, \"a\\\\\\\"b\": 3}}", 1,
        34, "", "duplicate key \"a\\\\\\\"b\"");

    tf_cfg_diags_t d = {0};
    tf_config_t *c = NULL;
    TF_CHECK_INT(load_str("x.json", "{\"a\": \"\\u0000\"}", &c, &d),
                 TF_ECONFIG);
    TF_CHECK_INT(d.count, 1);
    tf_cfg_diags_clear(&d);
}

TF_TEST(unreadable_files)
{
    tf_cfg_diags_t d = {0};
    tf_config_t *c = (tf_config_t *)1;
    TF_CHECK_INT(tf_config_load("/nonexistent/tf/master.json", &c, &d),
                 TF_ECONFIG);
    TF_CHECK(c == NULL);
    TF_CHECK_INT(d.count, 1);
    if (d.count == 1) {
        TF_CHECK_INT(d.items[0].line, 0);
        TF_CHECK_INT(d.items[0].col, 0);
        TF_CHECK_STR(d.items[0].key, "");
        char *s = tf_cfg_diag_format(&d.items[0]);
        TF_CHECK_STR(s, "/nonexistent/tf/master.json: error: cannot read the "
                        "file: No such file or directory");
        free(s);
    }

    /* A file over 16 MiB (sparse, so this is cheap) is refused. */
    char *dir = make_tmpdir();
    if (!dir)
        goto out;
    char *big = join(dir, "big.json");
    int fd = open(big, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    TF_CHECK(fd >= 0);
    if (fd >= 0) {
        TF_CHECK_INT(ftruncate(fd, 16 * 1024 * 1024 + 1), 0);
        close(fd);
    }
    TF_CHECK_INT(tf_config_load(big, &c, &d), TF_ECONFIG);
    TF_CHECK_INT(d.count, 1);
    if (d.count == 1)
        TF_CHECK_STR(d.items[0].message, "the file is larger than 16 MiB");
    TF_CHECK_INT(tf_config_load(dir, &c, &d), TF_ECONFIG);
    TF_CHECK_INT(d.count, 1);
    if (d.count == 1)
        TF_CHECK_STR(d.items[0].message,
                     "cannot read the file: Is a directory");
    free(big);
    rm_tree(dir);
    free(dir);
out:
    tf_cfg_diags_clear(&d);
    TF_CHECK_INT(tf_config_load(NULL, &c, &d), TF_EINVAL);
    TF_CHECK_INT(tf_config_load_text("x", NULL, 0, &c, &d), TF_EINVAL);
}

TF_TEST(diag_format)
{
    tf_cfg_diag_t d = {.file = "m.json",
                       .line = 3,
                       .col = 7,
                       .key = "builders[0].steps[1].timeout",
                       .message = "expected an integer"};
    char *s = tf_cfg_diag_format(&d);
    TF_CHECK_STR(s, "m.json:3:7: error: builders[0].steps[1].timeout: "
                    "expected an integer");
    free(s);
    d.key = "";
    s = tf_cfg_diag_format(&d);
    TF_CHECK_STR(s, "m.json:3:7: error: expected an integer");
    free(s);
    d.key = NULL;
    d.line = 0;
    s = tf_cfg_diag_format(&d);
    TF_CHECK_STR(s, "m.json: error: expected an integer");
    free(s);
    TF_CHECK(tf_cfg_diag_format(NULL) == NULL);

    tf_cfg_diags_t empty = {0};
    tf_cfg_diags_clear(&empty);
    tf_cfg_diags_clear(NULL);
    tf_config_free(NULL);
}

TF_TEST(slave_allowed_rule)
{
    char *linux_tags[] = {"linux", "x86_64"};
    char *mac_tags[] = {"macos"};
    tf_cfg_slave_t vm = {.name = "vm", .tags = linux_tags, .ntags = 2};
    tf_cfg_slave_t mac = {.name = "mac", .tags = mac_tags, .ntags = 1};
    tf_cfg_slave_t bare = {.name = "bare"};

    char *listed[] = {"mac"};
    char *need_linux[] = {"linux"};
    char *need_both[] = {"linux", "arm64"};

    tf_cfg_builder_t open = {.name = "open"};
    TF_CHECK(tf_config_slave_allowed(&open, &vm));
    TF_CHECK(tf_config_slave_allowed(&open, &bare));

    tf_cfg_builder_t only_list = {.slaves = listed, .nslaves = 1};
    TF_CHECK(tf_config_slave_allowed(&only_list, &mac));
    TF_CHECK(!tf_config_slave_allowed(&only_list, &vm));
    TF_CHECK(!tf_config_slave_allowed(&only_list, &bare));

    tf_cfg_builder_t only_tags = {.tags = need_linux, .ntags = 1};
    TF_CHECK(tf_config_slave_allowed(&only_tags, &vm));
    TF_CHECK(!tf_config_slave_allowed(&only_tags, &mac));
    TF_CHECK(!tf_config_slave_allowed(&only_tags, &bare));

    tf_cfg_builder_t all_tags = {.tags = need_both, .ntags = 2};
    TF_CHECK(!tf_config_slave_allowed(&all_tags, &vm)); /* lacks arm64 */

    tf_cfg_builder_t either = {
        .slaves = listed, .nslaves = 1, .tags = need_linux, .ntags = 1};
    TF_CHECK(tf_config_slave_allowed(&either, &mac)); /* listed */
    TF_CHECK(tf_config_slave_allowed(&either, &vm));  /* has the tags */
    TF_CHECK(!tf_config_slave_allowed(&either, &bare));

    TF_CHECK(!tf_config_slave_allowed(NULL, &vm));
    TF_CHECK(!tf_config_slave_allowed(&open, NULL));
}

TF_TEST(repository_try_and_scheduler)
{
    tf_cfg_diags_t d = {0};
    tf_config_t *c = NULL;
    const char *ok =
        "{\"try\": {\"max_patch_bytes\": 1000, \"max_builders\": 3},\n"
        " \"scheduler\": {\"fair_share\": false},\n"
        " \"builders\": [{\"name\": \"b\", \"repository\": \"/srv/p.git\",\n"
        "   \"branch\": \"release/2\", \"steps\": [{\"name\": \"s\",\n"
        "   \"command\": \"make\"}]},\n"
        "  {\"name\": \"c\", \"repository\": \"https://x/p.git\",\n"
        "   \"steps\": [{\"name\": \"s\", \"command\": \"make\"}]},\n"
        "  {\"name\": \"d\", \"steps\": [{\"name\": \"s\", \"command\": "
        "\"make\"}]}]}";
    TF_CHECK_INT(load_str("/x/m.json", ok, &c, &d), 0);
    if (c) {
        TF_CHECK_INT(c->try_max_patch_bytes, 1000);
        TF_CHECK_INT(c->try_max_builders, 3);
        TF_CHECK(!c->fair_share);
        TF_CHECK_STR(c->builders[0].repository, "/srv/p.git");
        TF_CHECK_STR(c->builders[0].branch, "release/2");
        TF_CHECK_STR(c->builders[1].branch, "main");
        TF_CHECK(c->builders[2].repository == NULL);
        TF_CHECK(c->builders[2].branch == NULL);
        tf_config_free(c);
        c = NULL;
    }
    TF_CHECK_INT(load_str("/x/m.json", "{}", &c, &d), 0);
    if (c) {
        TF_CHECK_INT(c->try_max_patch_bytes, 50ull * 1024 * 1024);
        TF_CHECK_INT(c->try_max_builders, 50);
        TF_CHECK(c->fair_share);
        tf_config_free(c);
        c = NULL;
    }
    const char *bad =
        "{\"try\": {\"max_patch_bytes\": 0, \"maxpatch\": 1},\n"
        " \"scheduler\": {\"fair_share\": 1},\n"
        " \"builders\": [{\"name\": \"b\", \"repository\": \"-x\",\n"
        "   \"branch\": \"a..b\", \"steps\": [{\"name\": \"s\",\n"
        "   \"command\": \"make\"}]},\n"
        "  {\"name\": \"c\", \"branch\": \"main\",\n"
        "   \"steps\": [{\"name\": \"s\", \"command\": \"make\"}]}]}";
    TF_CHECK_INT(load_str("/x/m.json", bad, &c, &d), TF_ECONFIG);
    const char *want[] = {"try.max_patch_bytes", "try.maxpatch",
                          "scheduler.fair_share", "builders[0].repository",
                          "builders[0].branch", "builders[1].branch"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        bool found = false;
        for (size_t k = 0; k < d.count; k++)
            found = found || strcmp(d.items[k].key, want[i]) == 0;
        if (!found) {
            fprintf(stderr, "no diagnostic for %s\n", want[i]);
            dump_diags(&d);
        }
        TF_CHECK(found);
    }
    tf_cfg_diags_clear(&d);
}

/* ------------------------------------------------------------------ */
/* Test results (issue 12)                                             */

#define TR_STEP "{\"builders\": [{\"name\": \"b\", \"steps\": [{\"name\": " \
                "\"s\", \"command\": \"x\", \"test_results\": "

TF_TEST(test_results_key)
{
    tf_cfg_diags_t d = {0};
    tf_config_t *c = NULL;
    const char *ok =
        "{\"builders\": [{\"name\": \"b\", \"steps\": ["
        "{\"name\": \"unit\", \"command\": \"ctest\", \"test_results\": "
        "{\"format\": \"ctest\"}},"
        "{\"name\": \"xml\", \"command\": \"pytest\", \"test_results\": "
        "{\"format\": \"junit\", \"files\": [\"build/**/*.xml\", "
        "\"report.xml\"]}},"
        "{\"name\": \"plain\", \"command\": \"true\"}]}]}";
    TF_CHECK_INT(load_str("m.json", ok, &c, &d), 0);
    if (d.count)
        dump_diags(&d);
    const tf_cfg_builder_t *b = c ? tf_config_builder(c, "b") : NULL;
    TF_CHECK(b != NULL);
    if (b) {
        const tf_test_spec_t *t0 = b->steps[0].spec.test_results;
        const tf_test_spec_t *t1 = b->steps[1].spec.test_results;
        TF_CHECK(t0 && t0->format == TF_TR_FMT_CTEST && t0->nfiles == 0);
        TF_CHECK(t1 && t1->format == TF_TR_FMT_JUNIT && t1->nfiles == 2);
        if (t1 && t1->nfiles == 2) {
            TF_CHECK_STR(t1->files[0], "build/**/*.xml");
            TF_CHECK_STR(t1->files[1], "report.xml");
        }
        TF_CHECK(b->steps[2].spec.test_results == NULL);
    }
    tf_config_free(c);
    tf_cfg_diags_clear(&d);

    CHECK_ONE_ERROR(TR_STEP "{\"format\": \"nunit\"}}]}]}", 1, 96,
                    "builders[0].steps[0].test_results.format",
                    "unknown format \"nunit\" (known: ctest, gtest, pytest, "
                    "unittest, automake, tap, junit)");
    CHECK_ONE_ERROR(TR_STEP "{\"format\": \"junit\"}}]}]}", 1, 85,
                    "builders[0].steps[0].test_results",
                    "junit needs \"files\": globs of the report files, "
                    "relative to the step's workdir");
    CHECK_ONE_ERROR(TR_STEP "{\"format\": \"gtest\", \"files\": [\"a.xml\"]}}"
                    "]}]}", 1, 114,
                    "builders[0].steps[0].test_results.files",
                    "not allowed for gtest: it reads the step's output");
    CHECK_ONE_ERROR(TR_STEP "{\"format\": \"junit\", \"files\": "
                    "[\"ok.xml\", \"../../etc/x.xml\"]}}]}]}", 1, 125,
                    "builders[0].steps[0].test_results.files[1]",
                    "invalid glob \"../../etc/x.xml\": use a relative path "
                    "(at most 256 bytes) whose parts are names or patterns, "
                    "without \".\" or \"..\": report files are read only "
                    "inside the workdir");
    CHECK_ONE_ERROR(TR_STEP "{\"format\": \"junit\", \"files\": "
                    "[\"/etc/*.xml\"]}}]}]}", 1, 115,
                    "builders[0].steps[0].test_results.files[0]",
                    "invalid glob \"/etc/*.xml\": use a relative path "
                    "(at most 256 bytes) whose parts are names or patterns, "
                    "without \".\" or \"..\": report files are read only "
                    "inside the workdir");
    CHECK_ONE_ERROR(TR_STEP "{\"format\": \"tap\", \"files\": []}}]}]}", 1,
                    112, "builders[0].steps[0].test_results.files",
                    "expected an array of 1 to 64 globs");
    CHECK_ONE_ERROR(TR_STEP "\"ctest\"}]}]}", 1, 85,
                    "builders[0].steps[0].test_results",
                    "expected an object with \"format\" (and \"files\" for "
                    "junit)");
    CHECK_ONE_ERROR(TR_STEP "{\"format\": \"ctest\", \"fromat\": 1}}]}]}",
                    1, 105,
                    "builders[0].steps[0].test_results.fromat",
                    "unknown key \"fromat\"; did you mean \"format\"?");
}

/* A builder or slave whose name was refused has none; lookups by name
 * (a scheduler's builders, a builder's slaves) used to strcmp it and
 * crash checkconfig. Every problem is reported instead. */
TF_TEST(nameless_entries_are_reported_not_crashed_on)
{
    tf_cfg_diags_t d = {0};
    tf_config_t *c = NULL;
    const char *text =
        "{\"slaves\": [{\"secret\": \"s\"},\n"
        "            {\"name\": \"a\", \"secret\": \"s\"}],\n"
        " \"builders\": [{\"name\": \"bad name\", \"steps\": [{\"name\": "
        "\"s\", \"command\": \"x\"}]},\n"
        "  {\"slaves\": [\"a\", \"b\"], \"steps\": [{\"name\": \"s\", "
        "\"command\": \"x\"}]},\n"
        "  {\"name\": \"b2\", \"repository\": \"/r.git\", \"steps\": [{\"name\": "
        "\"s\", \"command\": \"x\"}]}],\n"
        " \"schedulers\": [{\"name\": \"s\", \"type\": \"change\", "
        "\"builders\": [\"b2\", \"b3\"]}]}";
    TF_CHECK_INT(load_str("/m.json", text, &c, &d), TF_ECONFIG);
    TF_CHECK(c == NULL);
    const char *want[] = {"slaves[0]", "builders[0].name", "builders[1]",
                          "builders[1].slaves[1]",
                          "schedulers[0].builders[1]"};
    TF_CHECK_INT(d.count, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < d.count && i < sizeof want / sizeof want[0]; i++)
        TF_CHECK_STR(d.items[i].key, want[i]);
    if (d.count != sizeof want / sizeof want[0])
        dump_diags(&d);
    tf_cfg_diags_clear(&d);
}

/* jansson lets a raw NUL byte pass between tokens ("[1<NUL>, 2]" parses);
 * JSON text never holds one, so the loader refuses it at its place
 * (found by tests/fuzz/fuzz_jsonpos.c: positions were lost). */
TF_TEST(nul_byte_refused_at_its_position)
{
    static const char text[] = "{\"slaves\": [],\n \"max_retries\": 1\0,\n"
                               " \"name\": \"x\"}";
    tf_cfg_diags_t d = {0};
    tf_config_t *c = (tf_config_t *)1;
    TF_CHECK_INT(tf_config_load_text("/m.json", text, sizeof text - 1, &c, &d),
                 TF_ECONFIG);
    TF_CHECK(c == NULL);
    TF_CHECK_INT(d.count, 1);
    if (d.count == 1) {
        TF_CHECK_INT(d.items[0].line, 2);
        TF_CHECK_INT(d.items[0].col, 18);
        TF_CHECK_STR(d.items[0].key, "");
        TF_CHECK_STR(d.items[0].message,
                     "a NUL byte is not allowed in JSON text");
    }
    tf_cfg_diags_clear(&d);
}

TF_TEST_MAIN()
