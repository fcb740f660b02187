/*
 * cli.c - tf-master's administrative subcommands (see cli.h).
 *
 * Commands that change a running master (force) go through its HTTP API
 * with the admin token from the master's directory, exactly as any other
 * client would: the running process stays the only writer of its database.
 */
#include "admin/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <dirent.h>
#include <jansson.h>

#include "config/config.h"
#include "crypto.h"
#include "store/store.h"
#include "tf_err.h"
#include "util.h"

static const char example_config[] =
    "{\n"
    "  \"name\": \"TestFarm demo\",\n"
    "  \"listen\": {\"host\": \"127.0.0.1\", \"port\": %u},\n"
    "  \"database\": \"state.sqlite\",\n"
    "%s"
    "  \"heartbeat_s\": 10,\n"
    "  \"lost_after_s\": 30,\n"
    "  \"slaves\": [\n"
    "    {\"name\": \"local1\", \"secret_file\": \"secrets/local1\",\n"
    "     \"tags\": [\"linux\"], \"max_builds\": 1}\n"
    "  ],\n"
    "  \"builders\": [\n"
    "    {\n"
    "      \"name\": \"demo\",\n"
    "      \"tags\": [\"linux\"],\n"
    "      \"steps\": [\n"
    "        {\"name\": \"hello\", \"command\": [\"echo\", \"hello from "
    "TestFarm\"]},\n"
    "        {\"name\": \"environment\", \"command\": \"uname -a; echo "
    "building $TF_BUILDER number $TF_BUILD_NUMBER\"},\n"
    "        {\"name\": \"test\", \"command\": \"for i in 1 2 3; do echo "
    "test $i ok; sleep 1; done\",\n"
    "         \"timeout\": 60, \"haltOnFailure\": true},\n"
    "        {\"name\": \"cleanup\", \"command\": [\"true\"], "
    "\"alwaysRun\": true}\n"
    "      ]\n"
    "    }\n"
    "  ]\n"
    "}\n";

/* The status pages for a new master: the installed ones, else those of
 * the source tree this tf-master was built from; NULL when neither has
 * an index.html (the master then serves the API only). */
static const char *find_web_root(void)
{
    static const char *const dirs[] = {TF_WEB_DIR, TF_SOURCE_WEB_DIR};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        char *index = tf_path_join(dirs[i], "index.html");
        bool ok = index && access(index, R_OK) == 0;
        free(index);
        if (ok)
            return dirs[i];
    }
    return NULL;
}

static bool dir_is_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return true;
    struct dirent *e;
    bool empty = true;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            empty = false;
            break;
        }
    }
    closedir(d);
    return empty;
}

static int write_secret(const char *path)
{
    char hex[65];
    int rc = tf_random_hex(32, hex);
    if (rc)
        return rc;
    char line[80];
    int n = snprintf(line, sizeof(line), "%s\n", hex);
    return tf_write_file_atomic(path, line, (size_t)n, 0600);
}

int tf_cli_create(const char *dir, unsigned port, int force)
{
    char *cfg = NULL, *secrets = NULL, *secret = NULL, *token = NULL;
    char text[sizeof(example_config) + 1200];
    char web_line[1100] = "";
    int code = 1;
    if (!dir_is_empty(dir) && !force) {
        fprintf(stderr, "tf-master: %s is not empty; use --force to write "
                "into it anyway\n", dir);
        return 1;
    }
    cfg = tf_path_join(dir, "master.json");
    secrets = tf_path_join(dir, "secrets");
    secret = secrets ? tf_path_join(secrets, "local1") : NULL;
    token = tf_path_join(dir, "admin.token");
    if (!cfg || !secrets || !secret || !token)
        goto out;
    int rc = tf_mkdir_p(secrets, 0700);
    if (rc) {
        fprintf(stderr, "tf-master: cannot create %s: %s\n", secrets,
                tf_strerror(rc));
        goto out;
    }
    const char *web = find_web_root();
    /* A JSON string: the paths come from the build, so only '"' and '\\'
     * could need escaping, and such a path is not offered at all. */
    if (web && !strpbrk(web, "\"\\") && strlen(web) < 1000)
        snprintf(web_line, sizeof(web_line), "  \"web_root\": \"%s\",\n", web);
    int n = snprintf(text, sizeof(text), example_config, port, web_line);
    if ((rc = tf_write_file_atomic(cfg, text, (size_t)n, 0644)) != 0 ||
        (rc = write_secret(secret)) != 0 || (rc = write_secret(token)) != 0) {
        fprintf(stderr, "tf-master: cannot write into %s: %s\n", dir,
                tf_strerror(rc));
        goto out;
    }
    printf("created master directory %s\n"
           "  config:       %s\n"
           "  slave secret: %s (give it to the slave \"local1\")\n"
           "  admin token:  %s\n"
           "  status pages: %s\n"
           "start it with:  tf-master run %s\n",
           dir, cfg, secret, token,
           web_line[0] ? web : "none found (set web_root in the config)",
           dir);
    code = 0;
out:
    free(cfg);
    free(secrets);
    free(secret);
    free(token);
    return code;
}

static void print_diags(const tf_cfg_diags_t *d)
{
    for (size_t i = 0; i < d->count; i++) {
        char *line = tf_cfg_diag_format(&d->items[i]);
        fprintf(stderr, "%s\n", line ? line : "(out of memory)");
        free(line);
    }
}

int tf_cli_offline_open(tf_cli_offline_t *o, const char *cfg_path,
                        const char *who)
{
    tf_cfg_diags_t diags = {0};
    memset(o, 0, sizeof(*o));
    if (!cfg_path || tf_config_load(cfg_path, &o->cfg, &diags) != 0) {
        print_diags(&diags);
        tf_cfg_diags_clear(&diags);
        return 2;
    }
    tf_cfg_diags_clear(&diags);
    if (uv_loop_init(&o->loop) != 0)
        return 1;
    o->loop_ok = true;
    int rc = tf_store_open(&o->loop, o->cfg->database, NULL, &o->store);
    if (rc) {
        o->store = NULL;
        char shown[512];
        tf_store_display(o->cfg->database, shown, sizeof(shown));
        fprintf(stderr, "%s: cannot open %s: %s\n", who, shown,
                tf_strerror(rc));
        return 1;
    }
    return 0;
}

static void offline_closed(void *arg)
{
    (void)arg;
}

void tf_cli_offline_close(tf_cli_offline_t *o)
{
    if (o->store) {
        tf_store_close(o->store, offline_closed, NULL);
        uv_run(&o->loop, UV_RUN_DEFAULT);
        o->store = NULL;
    }
    if (o->loop_ok)
        uv_loop_close(&o->loop);
    o->loop_ok = false;
    tf_config_free(o->cfg);
    o->cfg = NULL;
}

/* A directory means DIR/master.json. Caller frees. */
static char *config_path_of(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return tf_path_join(path, "master.json");
    return strdup(path);
}

int tf_cli_checkconfig(const char *path)
{
    char *p = config_path_of(path);
    tf_config_t *cfg = NULL;
    tf_cfg_diags_t diags = {0};
    if (!p)
        return 1;
    int rc = tf_config_load(p, &cfg, &diags);
    if (rc) {
        print_diags(&diags);
        fprintf(stderr, "%s: %zu error%s\n", p, diags.count,
                diags.count == 1 ? "" : "s");
        tf_cfg_diags_clear(&diags);
        free(p);
        return 1;
    }
    printf("%s: OK (%zu slave%s, %zu builder%s)\n", p, cfg->nslaves,
           cfg->nslaves == 1 ? "" : "s", cfg->nbuilders,
           cfg->nbuilders == 1 ? "" : "s");
    tf_config_free(cfg);
    free(p);
    return 0;
}

static void print_problem(void *arg, const char *text)
{
    unsigned *n = arg;
    (*n)++;
    printf("  %s\n", text);
}

int tf_cli_check(const char *path)
{
    char *p = config_path_of(path);
    tf_config_t *cfg = NULL;
    tf_cfg_diags_t diags = {0};
    unsigned problems = 0;
    int code = 2;

    if (!p)
        return 1;
    if (tf_config_load(p, &cfg, &diags) != 0) {
        print_diags(&diags);
        goto out;
    }
    int rc = tf_store_check(cfg->database, true, print_problem, &problems);
    if (rc == 0) {
        printf("%s: OK (integrity_check found no problem)\n", cfg->database);
        code = 0;
    } else if (rc == TF_ECORRUPT) {
        printf("%s: DAMAGED (%u problem%s above). Stop the master, restore "
               "the last backup or recover what can be read: see "
               "docs/admins.md, \"A damaged database\"\n",
               cfg->database, problems, problems == 1 ? "" : "s");
        code = 1;
    } else if (rc == TF_ESTATE && strstr(cfg->database, "://")) {
        fprintf(stderr, "tf-master check: this master is on PostgreSQL, "
                        "which checks its own data: use pg_amcheck (see "
                        "docs/admins.md, \"PostgreSQL\")\n");
        code = 1;
    } else {
        fprintf(stderr, "%s: cannot check it: %s\n", cfg->database,
                tf_strerror(rc));
        code = 1;
    }
out:
    tf_cfg_diags_clear(&diags);
    tf_config_free(cfg);
    free(p);
    return code;
}

typedef struct resp {
    char data[65536];
    size_t len;
} resp_t;

static size_t on_data(char *p, size_t size, size_t nmemb, void *arg)
{
    resp_t *r = arg;
    size_t n = size * nmemb;
    size_t room = sizeof(r->data) - 1 - r->len;
    size_t take = n < room ? n : room;
    memcpy(r->data + r->len, p, take);
    r->len += take;
    r->data[r->len] = '\0';
    return n;
}

int tf_cli_force(const char *dir, const char *builder, const char *reason)
{
    char *cfg_path = tf_path_join(dir, "master.json");
    char *tok_path = tf_path_join(dir, "admin.token");
    tf_config_t *cfg = NULL;
    tf_cfg_diags_t diags = {0};
    char *token = NULL, *body = NULL;
    CURL *c = NULL;
    struct curl_slist *hdrs = NULL;
    resp_t *resp = calloc(1, sizeof(*resp));
    int code = 1;

    if (!cfg_path || !tok_path || !resp)
        goto out;
    if (tf_config_load(cfg_path, &cfg, &diags) != 0) {
        print_diags(&diags);
        code = 2;
        goto out;
    }
    int rc = tf_read_secret(tok_path, &token);
    if (rc) {
        fprintf(stderr, "tf-master: cannot read the admin token %s: %s\n",
                tok_path, tf_strerror(rc));
        goto out;
    }
    const char *host = strcmp(cfg->listen_host, "0.0.0.0") == 0
                           ? "127.0.0.1"
                           : cfg->listen_host;
    char url[512], auth[256];
    snprintf(url, sizeof(url), "http://%s:%u/api/v1/builders/%s/force", host,
             cfg->listen_port, builder);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
    json_t *j = json_pack("{s:s}", "reason", reason ? reason : "forced");
    body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    c = curl_easy_init();
    if (!body || !c)
        goto out;
    hdrs = curl_slist_append(hdrs, auth);
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        fprintf(stderr, "tf-master: cannot reach the master at http://%s:%u/:"
                " %s (is it running?)\n", host, cfg->listen_port,
                curl_easy_strerror(cc));
        goto out;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    json_t *rj = json_loads(resp->data, 0, NULL);
    if (status == 201) {
        json_t *pos = json_object_get(rj, "position");
        printf("request %lld queued for %s: %s\n",
               (long long)json_integer_value(json_object_get(rj, "request_id")),
               builder, json_string_value(json_object_get(rj, "url")));
        if (json_is_integer(pos))
            printf("position in the %s queue: %lld\n", builder,
                   (long long)json_integer_value(pos));
        code = 0;
    } else {
        const char *msg = json_string_value(
            json_object_get(json_object_get(rj, "error"), "message"));
        fprintf(stderr, "tf-master: the master refused (HTTP %ld): %s\n",
                status, msg ? msg : resp->data);
    }
    json_decref(rj);
out:
    if (c)
        curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
    tf_config_free(cfg);
    tf_cfg_diags_clear(&diags);
    free(token);
    free(body);
    free(resp);
    free(cfg_path);
    free(tok_path);
    return code;
}
