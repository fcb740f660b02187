/*
 * config.c - tf-indicator's masters, flags, config file and backoff.
 *
 * A master is named by the URL its status pages have in a browser
 * ("http://ci.example.org:8010"); the indicator derives the live feed
 * (PREFIX/live) and the API (PREFIX/api/v1/...) from it, and the pages it
 * opens (PREFIX/#/builders/NAME). URLs are checked strictly here (scheme,
 * host characters, port range, a plain path) because they end up in
 * connection requests and in the browser: no query, fragment or user
 * part, nothing that would need escaping.
 *
 * The config file is read whole (capped), parsed with jansson and checked
 * completely before anything is copied into the settings, so a half-valid
 * file changes nothing. Errors say file:line:col (tf_jsonpos) and the key.
 * Flags win over the file: --master given at least once replaces the
 * file's masters.
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "jsonpos.h"
#include "tf_err.h"
#include "util.h"

#define DEFAULT_RETRY_MAX_MS TF_IND_BACKOFF_MAX_MS

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- URLs ---- */

static bool host_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '-' || ch == '.';
}

static bool path_char(char ch)
{
    return host_char(ch) || ch == '_' || ch == '~' || ch == '/';
}

/* Shows at most 80 bytes of a user's string, non-printables as '?'. */
static void shown(const char *s, char *out, size_t n)
{
    size_t i = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && i + 4 < n;
         p++) {
        if (i >= 80) {
            memcpy(out + i, "...", 3);
            i += 3;
            break;
        }
        out[i++] = (*p < 0x20 || *p >= 0x7f) ? '?' : (char)*p;
    }
    out[i] = '\0';
}

int tf_ind_url_parse(const char *url, tf_ind_url_t *out, char *err,
                     size_t errlen)
{
    char show[96];
    const char *p;
    size_t n;

    memset(out, 0, sizeof(*out));
    shown(url ? url : "", show, sizeof(show));
    if (!url || !url[0]) {
        errf(err, errlen, "empty master URL (expected http://HOST:PORT)");
        return TF_EINVAL;
    }
    if (strlen(url) > TF_IND_URL_MAX - 32) {
        errf(err, errlen, "master URL \"%s\" is longer than %d bytes", show,
             TF_IND_URL_MAX - 32);
        return TF_EINVAL;
    }
    if (strncmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else if (strncmp(url, "https://", 8) == 0) {
        out->tls = true;
        p = url + 8;
    } else {
        errf(err, errlen, "master URL \"%s\" must start with http:// or "
                          "https:// (the address of its status pages)",
             show);
        return TF_EINVAL;
    }
    /* Host: a name, an IPv4 address or [IPv6]. */
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (!close || close == p + 1 || (size_t)(close - p - 1) >=
                                            sizeof(out->host)) {
            errf(err, errlen, "master URL \"%s\": malformed [IPv6] host",
                 show);
            return TF_EINVAL;
        }
        for (const char *q = p + 1; q < close; q++) {
            if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f') ||
                  (*q >= 'A' && *q <= 'F') || *q == ':' || *q == '.')) {
                errf(err, errlen, "master URL \"%s\": malformed [IPv6] host",
                     show);
                return TF_EINVAL;
            }
        }
        memcpy(out->host, p + 1, (size_t)(close - p - 1));
        p = close + 1;
    } else {
        n = 0;
        while (host_char(p[n]))
            n++;
        if (n == 0 || n >= sizeof(out->host) || p[0] == '.' || p[0] == '-') {
            errf(err, errlen, "master URL \"%s\" has no valid host name",
                 show);
            return TF_EINVAL;
        }
        memcpy(out->host, p, n);
        p += n;
    }
    out->port = out->tls ? 443 : 80;
    if (*p == ':') {
        long port = 0;
        p++;
        n = 0;
        while (p[n] >= '0' && p[n] <= '9' && n < 6)
            port = port * 10 + (p[n++] - '0');
        if (n == 0 || n > 5 || port < 1 || port > 65535) {
            errf(err, errlen, "master URL \"%s\": the port must be a number "
                              "from 1 to 65535",
                 show);
            return TF_EINVAL;
        }
        out->port = (int)port;
        p += n;
    }
    if (*p && *p != '/') {
        errf(err, errlen, "master URL \"%s\": unexpected \"%c\" after the "
                          "host (no user, query or fragment parts)",
             show, *p >= 0x20 && *p < 0x7f ? *p : '?');
        return TF_EINVAL;
    }
    n = strlen(p);
    while (n > 0 && p[n - 1] == '/')
        n--; /* trailing slashes do not matter */
    if (n >= sizeof(out->prefix)) {
        errf(err, errlen, "master URL \"%s\": path too long", show);
        return TF_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!path_char(p[i]) || (p[i] == '/' && i + 1 < n && p[i + 1] == '/')) {
            errf(err, errlen, "master URL \"%s\": the path may hold only "
                              "letters, digits and . _ ~ - / (no query, "
                              "fragment or escapes)",
                 show);
            return TF_EINVAL;
        }
    }
    memcpy(out->prefix, p, n);
    for (const char *seg = out->prefix; *seg;) {
        const char *end = strchr(seg + 1, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if ((len == 2 && seg[1] == '.') ||
            (len == 3 && seg[1] == '.' && seg[2] == '.')) {
            errf(err, errlen, "master URL \"%s\": \".\" and \"..\" are not "
                              "allowed in the path",
                 show);
            return TF_EINVAL;
        }
        seg += len;
    }
    bool v6 = strchr(out->host, ':') != NULL;
    bool default_port = out->port == (out->tls ? 443 : 80);
    char portstr[8] = "";
    if (!default_port)
        snprintf(portstr, sizeof(portstr), ":%d", out->port);
    int w = snprintf(out->base, sizeof(out->base), "%s://%s%s%s%s%s",
                     out->tls ? "https" : "http", v6 ? "[" : "", out->host,
                     v6 ? "]" : "", portstr, out->prefix);
    if (w < 0 || (size_t)w >= sizeof(out->base)) {
        errf(err, errlen, "master URL \"%s\" is too long", show);
        return TF_EINVAL;
    }
    return 0;
}

/* ---- settings ---- */

void tf_ind_conf_init(tf_ind_conf_t *c)
{
    memset(c, 0, sizeof(*c));
    c->notify = true;
    c->retry_max_ms = DEFAULT_RETRY_MAX_MS;
}

void tf_ind_conf_free(tf_ind_conf_t *c)
{
    if (!c)
        return;
    free(c->browser);
    free(c->ca_file);
    free(c->config_path);
    free(c->dump_path);
    free(c->icon_dir);
    free(c->log_level);
    memset(c, 0, sizeof(*c));
}

char *tf_ind_conf_default_path(const char *xdg, const char *home)
{
    if (xdg && xdg[0] == '/')
        return tf_path_join(xdg, "testfarm/indicator.json");
    if (home && home[0] == '/')
        return tf_path_join(home, ".config/testfarm/indicator.json");
    return NULL;
}

static bool label_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TF_IND_LABEL_MAX)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* "file:line:col: " for the value at pointer, or "file: ". */
static void where(const tf_jsonpos_t *idx, const char *path,
                  const char *pointer, char *out, size_t n)
{
    int line = 0, col = 0, kline = 0, kcol = 0;
    if (idx && tf_jsonpos_find(idx, pointer, &line, &col, &kline, &kcol) == 0) {
        if (kline > 0)
            snprintf(out, n, "%s:%d:%d: ", path, kline, kcol);
        else
            snprintf(out, n, "%s:%d:%d: ", path, line, col);
    } else {
        snprintf(out, n, "%s: ", path);
    }
}

/* Checks the masters array and fills tmp (a scratch copy). */
static int load_masters(tf_ind_conf_t *tmp, json_t *arr, const char *path,
                        const tf_jsonpos_t *idx, char *err, size_t errlen)
{
    char at[TF_IND_ERR_MAX / 2], ptr[64], uerr[TF_IND_ERR_MAX / 2];
    size_t i;
    json_t *m;

    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        where(idx, path, "/masters", at, sizeof(at));
        errf(err, errlen, "%s\"masters\" must be a non-empty array of master "
                          "URLs or {\"url\", \"name\"} objects",
             at);
        return TF_ECONFIG;
    }
    if (json_array_size(arr) > TF_IND_MAX_MASTERS) {
        where(idx, path, "/masters", at, sizeof(at));
        errf(err, errlen, "%s\"masters\" lists %zu masters; at most %d",
             at, json_array_size(arr), TF_IND_MAX_MASTERS);
        return TF_ECONFIG;
    }
    json_array_foreach(arr, i, m) {
        tf_ind_master_conf_t *mc = &tmp->masters[tmp->nmasters];
        const char *url = NULL, *name = NULL;
        snprintf(ptr, sizeof(ptr), "/masters/%zu", i);
        where(idx, path, ptr, at, sizeof(at));
        if (json_is_string(m)) {
            url = json_string_value(m);
        } else if (json_is_object(m)) {
            const char *k;
            json_t *v;
            json_object_foreach(m, k, v) {
                char sk[96];
                shown(k, sk, sizeof(sk));
                if (strcmp(k, "url") == 0 && json_is_string(v)) {
                    url = json_string_value(v);
                } else if (strcmp(k, "name") == 0 && json_is_string(v)) {
                    name = json_string_value(v);
                } else if (strcmp(k, "url") == 0 || strcmp(k, "name") == 0) {
                    errf(err, errlen, "%smasters[%zu].%s must be a string", at,
                         i, k);
                    return TF_ECONFIG;
                } else {
                    errf(err, errlen, "%smasters[%zu]: unknown key \"%s\" "
                                      "(known: url, name)",
                         at, i, sk);
                    return TF_ECONFIG;
                }
            }
            if (!url) {
                errf(err, errlen, "%smasters[%zu] has no \"url\"", at, i);
                return TF_ECONFIG;
            }
        } else {
            errf(err, errlen, "%smasters[%zu] must be a URL string or an "
                              "object {\"url\", \"name\"}",
                 at, i);
            return TF_ECONFIG;
        }
        if (tf_ind_url_parse(url, &mc->url, uerr, sizeof(uerr)) < 0) {
            errf(err, errlen, "%s%s", at, uerr);
            return TF_ECONFIG;
        }
        if (name && !label_valid(name)) {
            errf(err, errlen, "%smasters[%zu].name must be 1 to %d bytes "
                              "without control characters",
                 at, i, TF_IND_LABEL_MAX);
            return TF_ECONFIG;
        }
        for (size_t k = 0; k < tmp->nmasters; k++) {
            if (strcmp(tmp->masters[k].url.base, mc->url.base) == 0) {
                errf(err, errlen, "%smaster %s is listed twice", at,
                     mc->url.base);
                return TF_ECONFIG;
            }
        }
        if (name)
            snprintf(mc->label, sizeof(mc->label), "%s", name);
        tmp->nmasters++;
    }
    return 0;
}

int tf_ind_conf_load(tf_ind_conf_t *c, const char *path, char *err,
                     size_t errlen)
{
    int rc;
    char *text = NULL;
    size_t len = 0;
    json_t *root = NULL;
    json_error_t jerr;
    tf_jsonpos_t *idx = NULL;
    tf_ind_conf_t *tmp = NULL;
    char at[TF_IND_ERR_MAX / 2];
    const char *key;
    json_t *v;
    bool have_masters = false;

    rc = tf_read_file(path, TF_IND_CONFIG_MAX, &text, &len);
    if (rc == -ENOENT) {
        errf(err, errlen, "%s: no such configuration file", path);
        rc = TF_ENOENT;
        goto out;
    }
    if (rc == TF_E2BIG) {
        errf(err, errlen, "%s: configuration file larger than %d bytes", path,
             TF_IND_CONFIG_MAX);
        rc = TF_ECONFIG;
        goto out;
    }
    if (rc < 0) {
        errf(err, errlen, "%s: cannot read the configuration file: %s", path,
             rc > -4096 ? strerror(-rc) : tf_strerror(rc));
        rc = TF_ECONFIG;
        goto out;
    }
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        errf(err, errlen, "%s:%d:%d: not valid JSON: %s", path, jerr.line,
             jerr.column, jerr.text);
        rc = TF_ECONFIG;
        goto out;
    }
    if (!json_is_object(root)) {
        errf(err, errlen, "%s: the configuration must be a JSON object "
                          "{\"masters\": [...]}",
             path);
        rc = TF_ECONFIG;
        goto out;
    }
    if (tf_jsonpos_index(text, len, &idx) < 0)
        idx = NULL; /* positions are a courtesy */
    tmp = calloc(1, sizeof(*tmp));
    if (!tmp) {
        rc = TF_ENOMEM;
        goto out;
    }
    tf_ind_conf_init(tmp);
    rc = TF_ECONFIG;
    json_object_foreach(root, key, v) {
        char ptr[112], sk[96];
        shown(key, sk, sizeof(sk));
        snprintf(ptr, sizeof(ptr), "/%s", sk);
        where(idx, path, ptr, at, sizeof(at));
        if (strcmp(key, "masters") == 0) {
            if (load_masters(tmp, v, path, idx, err, errlen) < 0)
                goto out;
            have_masters = true;
        } else if (strcmp(key, "notify") == 0) {
            if (!json_is_boolean(v)) {
                errf(err, errlen, "%s\"notify\" must be true or false", at);
                goto out;
            }
            tmp->notify = json_is_true(v);
        } else if (strcmp(key, "browser") == 0) {
            const char *b = json_string_value(v);
            if (!b || !b[0] || strlen(b) > 1024) {
                errf(err, errlen, "%s\"browser\" must be a command (a "
                                  "non-empty string of at most 1024 bytes)",
                     at);
                goto out;
            }
            tmp->browser = strdup(b);
            if (!tmp->browser) {
                rc = TF_ENOMEM;
                goto out;
            }
        } else if (strcmp(key, "ca_file") == 0) {
            const char *f = json_string_value(v);
            if (!f || !f[0] || strlen(f) > 1024) {
                errf(err, errlen, "%s\"ca_file\" must be a file name (a "
                                  "non-empty string of at most 1024 bytes)",
                     at);
                goto out;
            }
            tmp->ca_file = strdup(f);
            if (!tmp->ca_file) {
                rc = TF_ENOMEM;
                goto out;
            }
        } else if (strcmp(key, "retry_max_s") == 0) {
            json_int_t s = json_integer_value(v);
            if (!json_is_integer(v) || s < 1 || s > 3600) {
                errf(err, errlen, "%s\"retry_max_s\" must be an integer from "
                                  "1 to 3600 (seconds)",
                     at);
                goto out;
            }
            tmp->retry_max_ms = (int)s * 1000;
        } else {
            errf(err, errlen, "%sunknown key \"%s\" (known keys: masters, "
                              "notify, browser, ca_file, retry_max_s)",
                 at, sk);
            goto out;
        }
    }
    if (!have_masters) {
        errf(err, errlen, "%s: no \"masters\": list the masters to watch, "
                          "e.g. {\"masters\": [\"http://ci.example.org:8010\"]}",
             path);
        goto out;
    }
    /* Everything checked: apply. */
    if (c->nmasters == 0) {
        memcpy(c->masters, tmp->masters, sizeof(c->masters));
        c->nmasters = tmp->nmasters;
    }
    c->notify = tmp->notify;
    c->retry_max_ms = tmp->retry_max_ms;
    if (tmp->browser && !c->browser) {
        c->browser = tmp->browser;
        tmp->browser = NULL;
    }
    if (tmp->ca_file && !c->ca_file) {
        c->ca_file = tmp->ca_file;
        tmp->ca_file = NULL;
    }
    rc = 0;
out:
    if (tmp) {
        tf_ind_conf_free(tmp);
        free(tmp);
    }
    tf_jsonpos_free(idx);
    json_decref(root);
    free(text);
    return rc;
}

/* ---- flags ---- */

static const char usage_text[] =
    "usage: tf-indicator [--master URL]... [--config FILE] [options]\n"
    "\n"
    "Shows one tray icon for the TestFarm masters it watches: green when\n"
    "every builder passes, amber while builds run, red when a builder\n"
    "fails, grey when a master cannot be reached. Its menu lists each\n"
    "master's failing builders; a desktop notification says when a\n"
    "builder turns red or green again.\n"
    "\n"
    "  --master URL       a master to watch, as its status pages' address\n"
    "                     (http://HOST:PORT[/PREFIX]); repeat for several;\n"
    "                     replaces the config file's masters\n"
    "  --config FILE      the config file (default\n"
    "                     $XDG_CONFIG_HOME/testfarm/indicator.json or\n"
    "                     ~/.config/testfarm/indicator.json, if it exists)\n"
    "  --browser CMD      open pages with CMD URL instead of the desktop's\n"
    "                     default browser\n"
    "  --ca-file FILE     CA certificates (PEM) to check https masters\n"
    "                     against, instead of the system's\n"
    "  --no-notify        no desktop notifications\n"
    "  --retry-max SECS   longest wait between reconnect attempts (60)\n"
    "  --icon-dir DIR     where the icons are (default: the installed ones)\n"
    "  --dump-state FILE  after every change, write the state, the menu's\n"
    "                     items and the notifications sent to FILE as JSON\n"
    "                     (for tests and bug reports)\n"
    "  --log-level LEVEL  debug, info (default), warn or error\n"
    "  --autostart        started at login: without any master configured,\n"
    "                     exit quietly (status 0) instead of failing\n"
    "  --version, --help\n"
    "\n"
    "Exit status: 0 after Quit, SIGTERM or SIGINT, 1 when the display cannot be\n"
    "opened, 2 for bad flags or a bad config file.\n";

const char *tf_ind_usage(void)
{
    return usage_text;
}

static int set_str(char **dst, const char *v)
{
    char *s = strdup(v);
    if (!s)
        return TF_ENOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

int tf_ind_args_parse(tf_ind_conf_t *c, int argc, char **argv,
                      const char *xdg, const char *home,
                      tf_ind_args_action_t *action, char *err, size_t errlen)
{
    const char *config = NULL;
    int retry_s = 0;
    bool no_notify = false;
    bool autostart = false;
    char uerr[TF_IND_ERR_MAX / 2];
    char show[96];

    *action = TF_IND_ARGS_RUN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = strcmp(a, "--master") == 0 ||
                     strcmp(a, "--config") == 0 ||
                     strcmp(a, "--browser") == 0 ||
                     strcmp(a, "--ca-file") == 0 ||
                     strcmp(a, "--retry-max") == 0 ||
                     strcmp(a, "--icon-dir") == 0 ||
                     strcmp(a, "--dump-state") == 0 ||
                     strcmp(a, "--log-level") == 0;
        shown(a, show, sizeof(show));
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *action = TF_IND_ARGS_HELP;
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            *action = TF_IND_ARGS_VERSION;
            return 0;
        }
        if (strcmp(a, "--no-notify") == 0) {
            no_notify = true;
            continue;
        }
        if (strcmp(a, "--autostart") == 0) {
            autostart = true;
            continue;
        }
        if (!takes) {
            errf(err, errlen, "unknown option \"%s\" (see --help)", show);
            return TF_EINVAL;
        }
        if (!v || !v[0]) {
            errf(err, errlen, "%s needs a value (see --help)", show);
            return TF_EINVAL;
        }
        i++;
        int rc = 0;
        if (strcmp(a, "--master") == 0) {
            if (c->nmasters >= TF_IND_MAX_MASTERS) {
                errf(err, errlen, "at most %d masters", TF_IND_MAX_MASTERS);
                return TF_EINVAL;
            }
            tf_ind_master_conf_t *mc = &c->masters[c->nmasters];
            memset(mc, 0, sizeof(*mc));
            if (tf_ind_url_parse(v, &mc->url, uerr, sizeof(uerr)) < 0) {
                errf(err, errlen, "--master: %s", uerr);
                return TF_EINVAL;
            }
            for (size_t k = 0; k < c->nmasters; k++) {
                if (strcmp(c->masters[k].url.base, mc->url.base) == 0) {
                    errf(err, errlen, "--master %s is given twice",
                         mc->url.base);
                    return TF_EINVAL;
                }
            }
            c->nmasters++;
        } else if (strcmp(a, "--config") == 0) {
            config = v;
        } else if (strcmp(a, "--browser") == 0) {
            rc = set_str(&c->browser, v);
        } else if (strcmp(a, "--ca-file") == 0) {
            rc = set_str(&c->ca_file, v);
        } else if (strcmp(a, "--retry-max") == 0) {
            uint64_t s;
            if (tf_parse_u64(v, &s) < 0 || s < 1 || s > 3600) {
                shown(v, show, sizeof(show));
                errf(err, errlen, "--retry-max \"%s\": expected seconds from "
                                  "1 to 3600",
                     show);
                return TF_EINVAL;
            }
            retry_s = (int)s;
        } else if (strcmp(a, "--icon-dir") == 0) {
            rc = set_str(&c->icon_dir, v);
        } else if (strcmp(a, "--dump-state") == 0) {
            rc = set_str(&c->dump_path, v);
        } else if (strcmp(a, "--log-level") == 0) {
            if (strcmp(v, "debug") && strcmp(v, "info") && strcmp(v, "warn") &&
                strcmp(v, "error")) {
                shown(v, show, sizeof(show));
                errf(err, errlen, "--log-level \"%s\": expected debug, info, "
                                  "warn or error",
                     show);
                return TF_EINVAL;
            }
            rc = set_str(&c->log_level, v);
        }
        if (rc < 0) {
            errf(err, errlen, "out of memory");
            return rc;
        }
    }

    /* The file: --config must exist; the default one may be missing. */
    char *def = NULL;
    const char *path = config;
    if (!path) {
        def = tf_ind_conf_default_path(xdg, home);
        path = def;
    }
    if (path) {
        int rc = tf_ind_conf_load(c, path, err, errlen);
        if (rc == TF_ENOENT && !config) {
            rc = 0; /* no default file: flags only */
        } else if (rc == 0) {
            rc = set_str(&c->config_path, path);
        }
        free(def);
        if (rc < 0)
            return rc == TF_ENOENT ? TF_ECONFIG : rc;
    }
    if (retry_s)
        c->retry_max_ms = retry_s * 1000;
    if (no_notify)
        c->notify = false;
    if (c->nmasters == 0 && autostart) {
        errf(err, errlen, "no masters configured (%s); not starting",
             config ? config : "~/.config/testfarm/indicator.json");
        *action = TF_IND_ARGS_IDLE;
        return 0;
    }
    if (c->nmasters == 0) {
        errf(err, errlen, "no masters to watch: give --master URL, or list "
                          "them in %s as {\"masters\": "
                          "[\"http://HOST:PORT\"]}",
             config ? config : "~/.config/testfarm/indicator.json");
        return TF_ECONFIG;
    }
    return 0;
}

int64_t tf_ind_backoff_ms(unsigned attempt, int max_ms, double jitter01)
{
    int64_t ms = 1000;
    if (max_ms < 1000)
        max_ms = 1000;
    for (unsigned i = 0; i < attempt && ms < max_ms; i++)
        ms *= 2;
    if (ms > max_ms)
        ms = max_ms;
    if (jitter01 < 0)
        jitter01 = 0;
    if (jitter01 >= 1)
        jitter01 = 0.999;
    return ms - (int64_t)((double)ms * 0.2 * jitter01);
}
