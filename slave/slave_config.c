/*
 * slave_config.c - parses tf-slave's command line and config file.
 *
 * One table lists every setting with its JSON key, its flag and its kind;
 * the file and the flags go through the same setters, so a value means the
 * same thing wherever it is written and every error names the setting the
 * way the operator wrote it (a flag, or file:line:col and the key). Flags
 * are collected first and applied after the file, so they always win.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jsonpos.h"
#include "names.h"
#include "slave_config.h"
#include "tf_err.h"
#include "util.h"

#define TF__CONFIG_FILE_MAX (1024 * 1024)
#define TF__URL_MAX 2048
#define TF__BACKOFF_MAX_MS 3600000u
#define TF__SPOOL_MAX_MB 1048576u

typedef enum {
    K_MASTER,
    K_NAME,
    K_SECRET_FILE,
    K_BASEDIR,
    K_MAX_BUILDS,
    K_TAGS,
    K_ON_SIGTERM,
    K_CA_FILE,
    K_LOG_LEVEL,
    K_BACKOFF_MIN,
    K_BACKOFF_MAX,
    K_SPOOL_MAX,
    K__COUNT
} tf__key_id_t;

typedef enum {
    T_STRING,
    T_PATH,
    T_U32,
    T_TAGS,
    T_SIGTERM,
    T_LEVEL,
    T_MASTERS,
} tf__kind_t;

typedef struct {
    const char *json;
    const char *flag;
    tf__kind_t kind;
    uint32_t min, max;
} tf__key_t;

static const tf__key_t tf__keys[K__COUNT] = {
    [K_MASTER] = {"master", "master", T_MASTERS, 0, 0},
    [K_NAME] = {"name", "name", T_STRING, 0, 0},
    [K_SECRET_FILE] = {"secret_file", "secret-file", T_PATH, 0, 0},
    [K_BASEDIR] = {"basedir", "basedir", T_PATH, 0, 0},
    [K_MAX_BUILDS] = {"max_builds", "max-builds", T_U32, 1,
                      TF_SLAVE_MAX_BUILDS},
    [K_TAGS] = {"tags", "tags", T_TAGS, 0, 0},
    [K_ON_SIGTERM] = {"on_sigterm", "on-sigterm", T_SIGTERM, 0, 0},
    [K_CA_FILE] = {"ca_file", "ca-file", T_PATH, 0, 0},
    [K_LOG_LEVEL] = {"log_level", "log-level", T_LEVEL, 0, 0},
    [K_BACKOFF_MIN] = {"backoff_min_ms", "backoff-min-ms", T_U32, 1,
                       TF__BACKOFF_MAX_MS},
    [K_BACKOFF_MAX] = {"backoff_max_ms", "backoff-max-ms", T_U32, 1,
                       TF__BACKOFF_MAX_MS},
    [K_SPOOL_MAX] = {"spool_max_unsent_mb", "spool-max-unsent-mb", T_U32, 1,
                     TF__SPOOL_MAX_MB},
};

/* getopt_long values: settings use their key id, the rest come after. */
enum { OPT_CONFIG = K__COUNT + 1, OPT_HELP, OPT_VERSION };

static void tf__err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void tf__err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void tf_slave_config_usage(FILE *out)
{
    fputs(
        "usage: tf-slave [options]\n"
        "\n"
        "Runs a TestFarm build slave: connects to the master, runs the builds\n"
        "it is given and streams their output back.\n"
        "\n"
        "  --config FILE             JSON config file (flags override it)\n"
        "  --master URL              ws://host[:port][/path] or wss://...\n"
        "                            (default path /slave); give it up to 16\n"
        "                            times to fail over between masters\n"
        "  --name NAME               this slave's name, as configured on the "
        "master\n"
        "  --secret-file FILE        file whose first line is the shared "
        "secret\n"
        "  --basedir DIR             where builds run and the spool lives\n"
        "  --max-builds N            builds run at once, 1..64 (default 1)\n"
        "  --tags a,b,c              tags reported to the master\n"
        "  --on-sigterm finish|abort what SIGTERM does (default finish)\n"
        "  --ca-file FILE            CA bundle to verify a wss:// master\n"
        "  --log-level LEVEL         debug, info, warn or error (default "
        "info)\n"
        "  --backoff-min-ms N        first reconnect delay (default 500)\n"
        "  --backoff-max-ms N        longest reconnect delay (default 30000)\n"
        "  --spool-max-unsent-mb N   pause a build's output when this much\n"
        "                            is waiting to be sent (default 64)\n"
        "  --help                    this text\n"
        "  --version                 the version\n"
        "\n"
        "Exit status: 0 clean shutdown, 1 runtime error, 2 usage or config\n"
        "error, 3 bad secret, 4 unknown slave name, 5 protocol version "
        "mismatch.\n",
        out);
}

static void tf__free_tags(char **tags, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(tags[i]);
    free(tags);
}

void tf_slave_master_free(tf_slave_master_t *m)
{
    if (!m)
        return;
    free(m->url);
    free(m->host);
    free(m->path);
    memset(m, 0, sizeof *m);
}

static void tf__free_masters(tf_slave_master_t *ms, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tf_slave_master_free(&ms[i]);
    free(ms);
}

void tf_slave_config_free(tf_slave_config_t *cfg)
{
    if (!cfg)
        return;
    tf__free_masters(cfg->masters, cfg->nmasters);
    free(cfg->name);
    free(cfg->secret_file);
    free(cfg->basedir);
    tf__free_tags(cfg->tags, cfg->ntags);
    free(cfg->ca_file);
    memset(cfg, 0, sizeof *cfg);
}

static void tf__defaults(tf_slave_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_builds = 1;
    cfg->on_sigterm = TF_SIGTERM_FINISH;
    cfg->log_level = TF_LOG_INFO;
    cfg->backoff_min_ms = 500;
    cfg->backoff_max_ms = 30000;
    cfg->spool_max_unsent = 64ull * 1024 * 1024;
}

/* Replaces *slot with a copy of s. */
static int tf__set_str(char **slot, const char *s)
{
    char *c = strdup(s);
    if (!c)
        return TF_ENOMEM;
    free(*slot);
    *slot = c;
    return 0;
}

static char **tf__str_slot(tf_slave_config_t *cfg, tf__key_id_t id)
{
    switch (id) {
    case K_NAME: return &cfg->name;
    case K_SECRET_FILE: return &cfg->secret_file;
    case K_BASEDIR: return &cfg->basedir;
    case K_CA_FILE: return &cfg->ca_file;
    default: return NULL;
    }
}

static void tf__set_u32(tf_slave_config_t *cfg, tf__key_id_t id, uint32_t v)
{
    switch (id) {
    case K_MAX_BUILDS: cfg->max_builds = v; break;
    case K_BACKOFF_MIN: cfg->backoff_min_ms = v; break;
    case K_BACKOFF_MAX: cfg->backoff_max_ms = v; break;
    case K_SPOOL_MAX: cfg->spool_max_unsent = (uint64_t)v * 1024 * 1024; break;
    default: break;
    }
}

/* Takes ownership of tags[n] whatever happens. Each tag must be a name. */
static int tf__set_tags(tf_slave_config_t *cfg, char **tags, size_t n,
                        char *why, size_t whylen)
{
    for (size_t i = 0; i < n; i++) {
        if (!tf_name_valid(tags[i])) {
            tf__err(why, whylen,
                    "tag \"%.80s\" is not a valid name (1..64 of "
                    "A-Za-z0-9._-, starting with a letter or digit)",
                    tags[i]);
            tf__free_tags(tags, n);
            return TF_ECONFIG;
        }
    }
    tf__free_tags(cfg->tags, cfg->ntags);
    cfg->tags = tags;
    cfg->ntags = n;
    return 0;
}

/* Replaces cfg's masters with urls[n] (borrowed), each parsed and checked
 * against the others: the same master twice in a failover list is a typo
 * that would silently double its share of attempts. The reason for a
 * refusal names the element when there are several. */
static int tf__set_masters(tf_slave_config_t *cfg, const char *const *urls,
                           size_t n, char *why, size_t whylen)
{
    tf_slave_master_t *ms;
    char uerr[320];
    int rc = 0;

    if (n == 0) {
        tf__err(why, whylen, "expected at least one master URL");
        return TF_ECONFIG;
    }
    if (n > TF_SLAVE_MAX_MASTERS) {
        tf__err(why, whylen, "more than %d master URLs",
                TF_SLAVE_MAX_MASTERS);
        return TF_ECONFIG;
    }
    ms = calloc(n, sizeof *ms);
    if (!ms)
        return TF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uerr[0] = '\0';
        rc = tf_slave_url_parse(urls[i], &ms[i], uerr, sizeof uerr);
        if (rc == TF_ENOMEM)
            goto out;
        if (rc) {
            if (n > 1)
                tf__err(why, whylen, "URL %zu of %zu: %s", i + 1, n, uerr);
            else
                tf__err(why, whylen, "%s", uerr);
            rc = TF_ECONFIG;
            goto out;
        }
        for (size_t j = 0; j < i; j++) {
            if (ms[j].tls == ms[i].tls && ms[j].port == ms[i].port &&
                strcmp(ms[j].host, ms[i].host) == 0 &&
                strcmp(ms[j].path, ms[i].path) == 0) {
                tf__err(why, whylen, "URL %zu of %zu (\"%.200s\") names the "
                        "same master as URL %zu (\"%.200s\")", i + 1, n,
                        urls[i], j + 1, urls[j]);
                rc = TF_ECONFIG;
                goto out;
            }
        }
    }
out:
    if (rc) {
        tf__free_masters(ms, n);
        return rc;
    }
    tf__free_masters(cfg->masters, cfg->nmasters);
    cfg->masters = ms;
    cfg->nmasters = n;
    return 0;
}

/* Applies one setting given as a string (a flag, or a JSON string). Relative
 * paths are joined to reldir when it is non-NULL. Writes the reason for a
 * refusal into why, without naming the setting (the caller does). */
static int tf__apply_string(tf_slave_config_t *cfg, tf__key_id_t id,
                            const char *s, const char *reldir, char *why,
                            size_t whylen)
{
    const tf__key_t *k = &tf__keys[id];
    switch (k->kind) {
    case T_STRING:
    case T_PATH: {
        if (*s == '\0') {
            tf__err(why, whylen, "must not be empty");
            return TF_ECONFIG;
        }
        if (k->kind == T_PATH && s[0] != '/' && reldir) {
            char *joined = tf_path_join(reldir, s);
            if (!joined)
                return TF_ENOMEM;
            int rc = tf__set_str(tf__str_slot(cfg, id), joined);
            free(joined);
            return rc;
        }
        return tf__set_str(tf__str_slot(cfg, id), s);
    }
    case T_U32: {
        uint64_t v;
        if (tf_parse_u64(s, &v) || v < k->min || v > k->max) {
            tf__err(why, whylen, "expected an integer %u..%u, got \"%.40s\"",
                    k->min, k->max, s);
            return TF_ECONFIG;
        }
        tf__set_u32(cfg, id, (uint32_t)v);
        return 0;
    }
    case T_TAGS: {
        /* "a,b,c"; an empty string means no tags. */
        char **tags = NULL;
        size_t n = 0;
        const char *p = s;
        while (*s && *p) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (n == TF_SLAVE_MAX_TAGS) {
                tf__err(why, whylen, "more than %d tags", TF_SLAVE_MAX_TAGS);
                tf__free_tags(tags, n);
                return TF_ECONFIG;
            }
            char **nt = realloc(tags, (n + 1) * sizeof *nt);
            if (!nt) {
                tf__free_tags(tags, n);
                return TF_ENOMEM;
            }
            tags = nt;
            tags[n] = strndup(p, len);
            if (!tags[n]) {
                tf__free_tags(tags, n);
                return TF_ENOMEM;
            }
            n++;
            if (!comma)
                break;
            p = comma + 1;
            if (*p == '\0') { /* "a," has an empty last tag */
                tf__err(why, whylen, "empty tag in \"%.80s\"", s);
                tf__free_tags(tags, n);
                return TF_ECONFIG;
            }
        }
        return tf__set_tags(cfg, tags, n, why, whylen);
    }
    case T_SIGTERM:
        if (strcmp(s, "finish") == 0)
            cfg->on_sigterm = TF_SIGTERM_FINISH;
        else if (strcmp(s, "abort") == 0)
            cfg->on_sigterm = TF_SIGTERM_ABORT;
        else {
            tf__err(why, whylen, "expected \"finish\" or \"abort\", got "
                    "\"%.40s\"", s);
            return TF_ECONFIG;
        }
        return 0;
    case T_LEVEL:
        if (tf_log_parse_level(s, &cfg->log_level)) {
            tf__err(why, whylen, "expected debug, info, warn or error, got "
                    "\"%.40s\"", s);
            return TF_ECONFIG;
        }
        return 0;
    case T_MASTERS:
        return tf__set_masters(cfg, &s, 1, why, whylen);
    }
    return TF_ECONFIG;
}

/* Applies one member of the config file. */
static int tf__apply_json(tf_slave_config_t *cfg, tf__key_id_t id, json_t *v,
                          const char *reldir, char *why, size_t whylen)
{
    const tf__key_t *k = &tf__keys[id];
    switch (k->kind) {
    case T_U32:
        if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)k->min ||
            json_integer_value(v) > (json_int_t)k->max) {
            tf__err(why, whylen, "expected an integer %u..%u", k->min, k->max);
            return TF_ECONFIG;
        }
        tf__set_u32(cfg, id, (uint32_t)json_integer_value(v));
        return 0;
    case T_TAGS: {
        if (!json_is_array(v)) {
            tf__err(why, whylen, "expected an array of strings");
            return TF_ECONFIG;
        }
        size_t n = json_array_size(v);
        if (n > TF_SLAVE_MAX_TAGS) {
            tf__err(why, whylen, "more than %d tags", TF_SLAVE_MAX_TAGS);
            return TF_ECONFIG;
        }
        char **tags = calloc(n ? n : 1, sizeof *tags);
        if (!tags)
            return TF_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            json_t *t = json_array_get(v, i);
            if (!json_is_string(t)) {
                tf__err(why, whylen, "element %zu: expected a string", i);
                tf__free_tags(tags, i);
                return TF_ECONFIG;
            }
            tags[i] = strdup(json_string_value(t));
            if (!tags[i]) {
                tf__free_tags(tags, i);
                return TF_ENOMEM;
            }
        }
        return tf__set_tags(cfg, tags, n, why, whylen);
    }
    case T_MASTERS: {
        /* A string (one master) or an array of strings (failover list). */
        const char *urls[TF_SLAVE_MAX_MASTERS];
        if (json_is_string(v)) {
            urls[0] = json_string_value(v);
            return tf__set_masters(cfg, urls, 1, why, whylen);
        }
        if (!json_is_array(v)) {
            tf__err(why, whylen, "expected a URL or an array of URLs");
            return TF_ECONFIG;
        }
        size_t n = json_array_size(v);
        if (n > TF_SLAVE_MAX_MASTERS) {
            tf__err(why, whylen, "more than %d master URLs",
                    TF_SLAVE_MAX_MASTERS);
            return TF_ECONFIG;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *u = json_array_get(v, i);
            if (!json_is_string(u)) {
                tf__err(why, whylen, "element %zu: expected a URL string", i);
                return TF_ECONFIG;
            }
            urls[i] = json_string_value(u);
        }
        return tf__set_masters(cfg, urls, n, why, whylen);
    }
    default:
        if (!json_is_string(v)) {
            tf__err(why, whylen, "expected a string");
            return TF_ECONFIG;
        }
        return tf__apply_string(cfg, id, json_string_value(v), reldir, why,
                                whylen);
    }
}

static int tf__key_lookup(const char *json_key)
{
    for (int i = 0; i < K__COUNT; i++)
        if (strcmp(tf__keys[i].json, json_key) == 0)
            return i;
    return -1;
}

/* Escapes a member name into a JSON Pointer component (RFC 6901). */
static void tf__pointer(const char *key, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen < 2)
        return;
    out[o++] = '/';
    for (const char *p = key; *p && o + 3 < outlen; p++) {
        if (*p == '~' || *p == '/') {
            out[o++] = '~';
            out[o++] = *p == '~' ? '0' : '1';
        } else
            out[o++] = *p;
    }
    out[o] = '\0';
}

/* Loads the config file into cfg. Errors say file:line:col and the key. */
static int tf__load_file(tf_slave_config_t *cfg, const char *path, char *err,
                         size_t errlen)
{
    int rc = 0;
    char *text = NULL;
    size_t len = 0;
    json_t *root = NULL;
    tf_jsonpos_t *pos = NULL;
    char *dir = NULL;
    json_error_t jerr;

    rc = tf_read_file(path, TF__CONFIG_FILE_MAX, &text, &len);
    if (rc) {
        tf__err(err, errlen, "cannot read config file %s: %s", path,
                rc == TF_E2BIG ? "larger than 1 MiB" : tf_strerror(rc));
        rc = TF_ECONFIG;
        goto out;
    }
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        tf__err(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column,
                jerr.text);
        rc = TF_ECONFIG;
        goto out;
    }
    if (!json_is_object(root)) {
        tf__err(err, errlen, "%s: expected a JSON object", path);
        rc = TF_ECONFIG;
        goto out;
    }
    /* Positions are a nicety for error messages: without an index the
     * messages just lose their line and column. */
    if (tf_jsonpos_index(text, len, &pos))
        pos = NULL;
    /* Relative paths in the file are relative to the file's directory. */
    dir = strdup(path);
    if (!dir) {
        rc = TF_ENOMEM;
        goto out;
    }
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash)
        *slash = '\0';
    else {
        free(dir);
        dir = strdup(".");
        if (!dir) {
            rc = TF_ENOMEM;
            goto out;
        }
    }

    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        char ptr[256], why[512] = "";
        int line = 0, col = 0, kline = 0, kcol = 0;
        tf__pointer(key, ptr, sizeof ptr);
        if (pos)
            tf_jsonpos_find(pos, ptr, &line, &col, &kline, &kcol);
        int id = tf__key_lookup(key);
        if (id < 0) {
            tf__err(err, errlen, "%s:%d:%d: unknown key \"%.64s\"", path,
                    kline ? kline : line, kline ? kcol : col, key);
            rc = TF_ECONFIG;
            goto out;
        }
        rc = tf__apply_json(cfg, (tf__key_id_t)id, val, dir, why, sizeof why);
        if (rc == TF_ENOMEM)
            goto out;
        if (rc) {
            tf__err(err, errlen, "%s:%d:%d: \"%s\": %s", path, line, col, key,
                    why);
            rc = TF_ECONFIG;
            goto out;
        }
    }
out:
    if (rc == TF_ENOMEM)
        tf__err(err, errlen, "out of memory reading %s", path);
    free(dir);
    tf_jsonpos_free(pos);
    json_decref(root);
    free(text);
    return rc;
}

static bool tf__host_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

int tf_slave_url_parse(const char *url, tf_slave_master_t *m, char *err,
                       size_t errlen)
{
    const char *p;
    bool tls;
    char host[256];
    size_t hlen = 0;
    uint64_t port;

    if (strlen(url) > TF__URL_MAX) {
        tf__err(err, errlen, "master URL longer than %d bytes", TF__URL_MAX);
        return TF_ECONFIG;
    }
    if (strncmp(url, "ws://", 5) == 0) {
        tls = false;
        p = url + 5;
    } else if (strncmp(url, "wss://", 6) == 0) {
        tls = true;
        p = url + 6;
    } else {
        tf__err(err, errlen, "master URL \"%.200s\" must start with ws:// or "
                "wss://", url);
        return TF_ECONFIG;
    }
    port = tls ? 443 : 80;

    if (*p == '[') { /* [v6 address] */
        const char *end = strchr(p, ']');
        if (!end || end == p + 1 || (size_t)(end - p - 1) >= sizeof host) {
            tf__err(err, errlen, "master URL \"%.200s\": bad IPv6 address",
                    url);
            return TF_ECONFIG;
        }
        for (const char *q = p + 1; q < end; q++) {
            bool ok = (*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f') ||
                      (*q >= 'A' && *q <= 'F') || *q == ':' || *q == '.';
            if (!ok) {
                tf__err(err, errlen, "master URL \"%.200s\": bad IPv6 "
                        "address", url);
                return TF_ECONFIG;
            }
        }
        hlen = (size_t)(end - p - 1);
        memcpy(host, p + 1, hlen);
        p = end + 1;
    } else {
        while (tf__host_char(p[hlen]))
            hlen++;
        if (hlen == 0 || hlen >= sizeof host) {
            tf__err(err, errlen, "master URL \"%.200s\": missing or bad host "
                    "name", url);
            return TF_ECONFIG;
        }
        memcpy(host, p, hlen);
        p += hlen;
    }
    host[hlen] = '\0';

    if (*p == ':') {
        char digits[8];
        size_t n = 0;
        p++;
        while (p[n] >= '0' && p[n] <= '9' && n < sizeof digits - 1)
            n++;
        memcpy(digits, p, n);
        digits[n] = '\0';
        if (tf_parse_u64(digits, &port) || port < 1 || port > 65535) {
            tf__err(err, errlen, "master URL \"%.200s\": port must be "
                    "1..65535", url);
            return TF_ECONFIG;
        }
        p += n;
    }
    if (*p != '\0' && *p != '/') {
        tf__err(err, errlen, "master URL \"%.200s\": unexpected \"%c\" after "
                "the host (user names, queries and fragments are not "
                "supported)", url, *p);
        return TF_ECONFIG;
    }
    for (const char *q = p; *q; q++) {
        if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f ||
            *q == '#') {
            tf__err(err, errlen, "master URL \"%.200s\": bad character in "
                    "the path", url);
            return TF_ECONFIG;
        }
    }
    char *h = strdup(host);
    char *path = strdup(*p ? p : "/slave");
    char *u = strdup(url);
    if (!h || !path || !u) {
        free(h);
        free(path);
        free(u);
        return TF_ENOMEM;
    }
    tf_slave_master_free(m);
    m->url = u;
    m->host = h;
    m->path = path;
    m->port = (int)port;
    m->tls = tls;
    return 0;
}

/* Makes *path absolute against the current directory, so logs and child
 * processes see one unambiguous path. */
static int tf__absolutize(char **path)
{
    char cwd[PATH_MAX];
    if ((*path)[0] == '/')
        return 0;
    if (!getcwd(cwd, sizeof cwd))
        return -errno;
    char *j = tf_path_join(cwd, *path);
    if (!j)
        return TF_ENOMEM;
    free(*path);
    *path = j;
    return 0;
}

/* Checks what must hold once file and flags are merged. */
static int tf__finish(tf_slave_config_t *cfg, char *err, size_t errlen)
{
    static const struct {
        tf__key_id_t id;
        const char *what;
    } required[] = {
        {K_NAME, "the slave name"},
        {K_SECRET_FILE, "the secret file"},
        {K_BASEDIR, "the base directory"},
    };
    if (cfg->nmasters == 0) {
        tf__err(err, errlen, "missing the master URL: set \"master\" in the "
                "config file or pass --master");
        return TF_ECONFIG;
    }
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        const tf__key_t *k = &tf__keys[required[i].id];
        char **slot = tf__str_slot(cfg, required[i].id);
        if (!slot || !*slot) {
            tf__err(err, errlen, "missing %s: set \"%s\" in the config file "
                    "or pass --%s", required[i].what, k->json, k->flag);
            return TF_ECONFIG;
        }
    }
    if (!tf_name_valid(cfg->name)) {
        tf__err(err, errlen, "slave name \"%.80s\" is not a valid name (1..64 "
                "of A-Za-z0-9._-, starting with a letter or digit)",
                cfg->name);
        return TF_ECONFIG;
    }
    cfg->any_tls = false;
    for (size_t i = 0; i < cfg->nmasters; i++)
        cfg->any_tls = cfg->any_tls || cfg->masters[i].tls;
    if (cfg->backoff_min_ms > cfg->backoff_max_ms) {
        tf__err(err, errlen, "backoff_min_ms (%u) is larger than "
                "backoff_max_ms (%u)", cfg->backoff_min_ms,
                cfg->backoff_max_ms);
        return TF_ECONFIG;
    }
    if (cfg->ca_file && access(cfg->ca_file, R_OK) != 0) {
        tf__err(err, errlen, "cannot read CA file %s: %s", cfg->ca_file,
                strerror(errno));
        return TF_ECONFIG;
    }
    int rc = tf__absolutize(&cfg->basedir);
    if (!rc)
        rc = tf__absolutize(&cfg->secret_file);
    if (!rc && cfg->ca_file)
        rc = tf__absolutize(&cfg->ca_file);
    if (rc) {
        tf__err(err, errlen, "cannot resolve relative paths: %s",
                tf_strerror(rc));
        return TF_ECONFIG;
    }
    return 0;
}

int tf_slave_config_parse(tf_slave_config_t *cfg, int argc, char **argv,
                          FILE *out, char *err, size_t errlen)
{
    static const struct option longopts[] = {
        {"master", required_argument, NULL, K_MASTER},
        {"name", required_argument, NULL, K_NAME},
        {"secret-file", required_argument, NULL, K_SECRET_FILE},
        {"basedir", required_argument, NULL, K_BASEDIR},
        {"max-builds", required_argument, NULL, K_MAX_BUILDS},
        {"tags", required_argument, NULL, K_TAGS},
        {"on-sigterm", required_argument, NULL, K_ON_SIGTERM},
        {"ca-file", required_argument, NULL, K_CA_FILE},
        {"log-level", required_argument, NULL, K_LOG_LEVEL},
        {"backoff-min-ms", required_argument, NULL, K_BACKOFF_MIN},
        {"backoff-max-ms", required_argument, NULL, K_BACKOFF_MAX},
        {"spool-max-unsent-mb", required_argument, NULL, K_SPOOL_MAX},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    const char *flagval[K__COUNT] = {NULL};
    /* --master may repeat: every value is kept, in order (one more than
     * the cap, so that too many is an error rather than a truncation). */
    const char *flag_masters[TF_SLAVE_MAX_MASTERS + 1];
    size_t nflag_masters = 0;
    const char *config_path = NULL;
    bool help = false, version = false;
    int c, rc;

    tf__defaults(cfg);
    if (err && errlen)
        err[0] = '\0';
    optind = 0; /* glibc: full re-initialisation, so tests can parse twice */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (c == K_MASTER) {
            if (nflag_masters < TF_SLAVE_MAX_MASTERS + 1)
                flag_masters[nflag_masters++] = optarg; /* else: too many */
        } else if (c >= 0 && c < K__COUNT)
            flagval[c] = optarg;
        else if (c == OPT_CONFIG)
            config_path = optarg;
        else if (c == OPT_HELP || c == 'h')
            help = true;
        else if (c == OPT_VERSION)
            version = true;
        else if (c == ':') {
            tf__err(err, errlen, "%s needs a value", argv[optind - 1]);
            return TF_ECONFIG;
        } else {
            tf__err(err, errlen, "unknown option %s", argv[optind - 1]);
            return TF_ECONFIG;
        }
    }
    if (optind < argc) {
        tf__err(err, errlen, "unexpected argument \"%.80s\"", argv[optind]);
        return TF_ECONFIG;
    }
    if (help) {
        tf_slave_config_usage(out);
        return TF_SLAVE_CONFIG_DONE;
    }
    if (version) {
        fprintf(out, "tf-slave %s (protocol 1)\n", TF_VERSION);
        return TF_SLAVE_CONFIG_DONE;
    }
    if (config_path) {
        rc = tf__load_file(cfg, config_path, err, errlen);
        if (rc)
            return TF_ECONFIG;
    }
    if (nflag_masters) {
        /* Flags win over the file: the flags' list replaces the file's. */
        char why[512] = "";
        rc = tf__set_masters(cfg, flag_masters, nflag_masters, why,
                             sizeof why);
        if (rc) {
            if (rc == TF_ENOMEM)
                tf__err(err, errlen, "out of memory");
            else
                tf__err(err, errlen, "--master: %s", why);
            return TF_ECONFIG;
        }
    }
    for (int i = 0; i < K__COUNT; i++) {
        char why[256] = "";
        if (!flagval[i])
            continue;
        rc = tf__apply_string(cfg, (tf__key_id_t)i, flagval[i], NULL, why,
                              sizeof why);
        if (rc) {
            if (rc == TF_ENOMEM)
                tf__err(err, errlen, "out of memory");
            else
                tf__err(err, errlen, "--%s: %s", tf__keys[i].flag, why);
            return TF_ECONFIG;
        }
    }
    rc = tf__finish(cfg, err, errlen);
    if (rc == TF_ENOMEM)
        tf__err(err, errlen, "out of memory");
    return rc ? TF_ECONFIG : 0;
}
