/*
 * tryconf.c - tf-try's configuration layers and the token file.
 *
 * Every file is parsed whole and checked completely before any of its
 * values replaces what the lower layer said, so a half-valid file never
 * leaves a half-merged configuration behind. Errors name the file, the
 * line and column (from tf_jsonpos) and the key.
 *
 * The token file is opened first and checked with fstat on the open
 * descriptor, so the file whose mode was checked is the file that is read.
 */
#include "tryconf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "email.h"
#include "jsonpos.h"
#include "names.h"
#include "tf_err.h"
#include "utf8.h"
#include "util.h"

static const char *const conf_keys[] = {
    "url", "builders", "tests", "email", "upstream", "token_file",
    "ca_file", NULL,
};

void tf_try_conf_init(tf_try_conf_t *c)
{
    memset(c, 0, sizeof(*c));
}

void tf_try_conf_free(tf_try_conf_t *c)
{
    if (!c)
        return;
    free(c->url);
    tf_try_strv_clear(&c->builders);
    json_decref(c->tests);
    free(c->email);
    free(c->upstream);
    free(c->token_file);
    free(c->ca_file);
    tf_try_conf_init(c);
}

int tf_try_conf_dir(const char *xdg, const char *home, char **out,
                    tf_try_err_t *err)
{
    *out = NULL;
    if (xdg && xdg[0] == '/')
        *out = tf_path_join(xdg, "tf-try");
    else if (home && home[0] == '/')
        *out = tf_path_join(home, ".config/tf-try");
    else {
        tf_try_errf(err, "cannot find your configuration directory: neither "
                         "$XDG_CONFIG_HOME nor $HOME is an absolute path");
        return TF_ECONFIG;
    }
    return *out ? 0 : TF_ENOMEM;
}

/* The position of /key in the file, for messages ("" when unknown). */
static void conf_where(const tf_jsonpos_t *idx, const char *key, char *out,
                       size_t n)
{
    tf_buf_t ptr;
    int line = 0, col = 0, kline = 0, kcol = 0;

    out[0] = '\0';
    if (!idx)
        return;
    /* RFC 6901: '~' is written "~0" and '/' is written "~1". */
    tf_buf_init(&ptr, 4096);
    if (tf_buf_append_str(&ptr, "/") < 0)
        goto out;
    for (const char *p = key; *p; p++) {
        const char *piece = *p == '~' ? "~0" : *p == '/' ? "~1" : NULL;
        int rc = piece ? tf_buf_append_str(&ptr, piece)
                       : tf_buf_append(&ptr, p, 1);
        if (rc < 0)
            goto out;
    }
    if (tf_jsonpos_find(idx, (const char *)ptr.data, &line, &col, &kline,
                        &kcol) == 0) {
        if (kline > 0)
            snprintf(out, n, "%d:%d: ", kline, kcol);
        else
            snprintf(out, n, "%d:%d: ", line, col);
    }
out:
    tf_buf_free(&ptr);
}

/* A key shown in a message: at most 64 bytes, non-printables as '?', so a
 * file full of junk cannot fill the terminal with it. */
static void conf_show_key(const char *key, char *out, size_t n)
{
    size_t i = 0;
    for (const unsigned char *p = (const unsigned char *)key; *p && i + 4 < n;
         p++) {
        if (i >= 64) {
            memcpy(out + i, "...", 3);
            i += 3;
            break;
        }
        out[i++] = (*p < 0x20 || *p >= 0x7f) ? '?' : (char)*p;
    }
    out[i] = '\0';
}

/* Expands "~/" with home and makes a relative path relative to the
 * directory of the file that named it. Returns a malloc'd path or NULL. */
static char *conf_resolve_path(const char *value, const char *conf_path,
                               const char *home)
{
    if (strncmp(value, "~/", 2) == 0 && home && home[0] == '/')
        return tf_path_join(home, value + 2);
    if (value[0] == '/')
        return strdup(value);
    const char *slash = strrchr(conf_path, '/');
    if (!slash)
        return strdup(value);
    char *dir = strndup(conf_path, (size_t)(slash - conf_path));
    if (!dir)
        return NULL;
    char *joined = tf_path_join(dir[0] ? dir : "/", value);
    free(dir);
    return joined;
}

/* Checks one value of a parsed file; every check that fails explains
 * itself in err with the file name and position. */
static int conf_check_value(const char *path, const tf_jsonpos_t *idx,
                            const char *key, json_t *v, tf_try_err_t *err)
{
    char where[32];
    conf_where(idx, key, where, sizeof(where));

    if (strcmp(key, "url") == 0 || strcmp(key, "email") == 0 ||
        strcmp(key, "upstream") == 0 || strcmp(key, "token_file") == 0 ||
        strcmp(key, "ca_file") == 0) {
        if (!json_is_string(v) || json_string_length(v) == 0) {
            tf_try_errf(err, "%s:%s\"%s\" must be a non-empty string", path,
                        where, key);
            return TF_ECONFIG;
        }
        const char *s = json_string_value(v);
        if (strlen(s) != json_string_length(v) ||
            !tf_utf8_text_clean(s, true)) {
            tf_try_errf(err, "%s:%s\"%s\" holds control characters", path,
                        where, key);
            return TF_ECONFIG;
        }
        if (strcmp(key, "url") == 0 && !tf_try_http_url_valid(s)) {
            tf_try_errf(err, "%s:%s\"url\" must start with http:// or "
                             "https:// and name a host", path, where);
            return TF_ECONFIG;
        }
        if (strcmp(key, "email") == 0 && !tf_email_valid(s)) {
            tf_try_errf(err, "%s:%s\"email\" is not an email address", path,
                        where);
            return TF_ECONFIG;
        }
        if (strcmp(key, "upstream") == 0 && !tf_try_rev_valid(s)) {
            tf_try_errf(err, "%s:%s\"upstream\" is not a git revision "
                             "(letters, digits and ._/^~-)", path, where);
            return TF_ECONFIG;
        }
        return 0;
    }
    if (strcmp(key, "builders") == 0) {
        size_t i;
        json_t *b;
        if (!json_is_array(v)) {
            tf_try_errf(err, "%s:%s\"builders\" must be an array of builder "
                             "names", path, where);
            return TF_ECONFIG;
        }
        json_array_foreach(v, i, b) {
            if (!json_is_string(b) || !tf_name_valid(json_string_value(b))) {
                tf_try_errf(err, "%s:%s\"builders\"[%zu] is not a builder "
                                 "name (1-64 of A-Z a-z 0-9 . _ -)", path,
                            where, i);
                return TF_ECONFIG;
            }
        }
        return 0;
    }
    /* tests: builder -> array of test names */
    const char *bname;
    json_t *list;
    if (!json_is_object(v)) {
        tf_try_errf(err, "%s:%s\"tests\" must be an object mapping builder "
                         "names to arrays of tests", path, where);
        return TF_ECONFIG;
    }
    json_object_foreach(v, bname, list) {
        char shown[80];
        size_t i;
        json_t *t;
        conf_show_key(bname, shown, sizeof(shown));
        if (!tf_name_valid(bname)) {
            tf_try_errf(err, "%s:%s\"tests\": \"%s\" is not a builder name",
                        path, where, shown);
            return TF_ECONFIG;
        }
        if (!json_is_array(list) || json_array_size(list) > TF_TRY_MAX_TESTS) {
            tf_try_errf(err, "%s:%s\"tests\".\"%s\" must be an array of at "
                             "most %d test names", path, where, shown,
                        TF_TRY_MAX_TESTS);
            return TF_ECONFIG;
        }
        json_array_foreach(list, i, t) {
            if (!json_is_string(t) ||
                !tf_try_test_name_valid(json_string_value(t))) {
                tf_try_errf(err, "%s:%s\"tests\".\"%s\"[%zu] is not a test "
                                 "name (1-200 of A-Z a-z 0-9 . _ / : * = + , -)",
                            path, where, shown, i);
                return TF_ECONFIG;
            }
        }
    }
    return 0;
}

/* Replaces *dst with a copy of v's string. */
static int conf_set_str(char **dst, json_t *v)
{
    char *copy = strdup(json_string_value(v));
    if (!copy)
        return TF_ENOMEM;
    free(*dst);
    *dst = copy;
    return 0;
}

/* Moves a checked file's values into c. Nothing here can fail except
 * allocation, so c is either fully updated or the run ends anyway. */
static int conf_apply(tf_try_conf_t *c, json_t *root, const char *path,
                      const char *home)
{
    json_t *v;
    int rc;

    if ((v = json_object_get(root, "url")) && (rc = conf_set_str(&c->url, v)))
        return rc;
    if ((v = json_object_get(root, "email")) &&
        (rc = conf_set_str(&c->email, v)))
        return rc;
    if ((v = json_object_get(root, "upstream")) &&
        (rc = conf_set_str(&c->upstream, v)))
        return rc;
    if ((v = json_object_get(root, "token_file"))) {
        char *p = conf_resolve_path(json_string_value(v), path, home);
        if (!p)
            return TF_ENOMEM;
        free(c->token_file);
        c->token_file = p;
    }
    if ((v = json_object_get(root, "ca_file"))) {
        char *p = conf_resolve_path(json_string_value(v), path, home);
        if (!p)
            return TF_ENOMEM;
        free(c->ca_file);
        c->ca_file = p;
    }
    if ((v = json_object_get(root, "builders"))) {
        size_t i;
        json_t *b;
        tf_try_strv_clear(&c->builders);
        c->has_builders = true;
        json_array_foreach(v, i, b) {
            if (tf_try_strv_has(&c->builders, json_string_value(b)))
                continue;
            if ((rc = tf_try_strv_push(&c->builders, json_string_value(b))))
                return rc;
        }
    }
    if ((v = json_object_get(root, "tests"))) {
        json_decref(c->tests);
        c->tests = json_incref(v);
    }
    return 0;
}

int tf_try_conf_merge_file(tf_try_conf_t *c, const char *path, bool missing_ok,
                           const char *home, tf_try_err_t *err)
{
    int rc;
    char *text = NULL;
    size_t len = 0;
    json_t *root = NULL;
    json_error_t jerr;
    tf_jsonpos_t *idx = NULL;
    const char *key;
    json_t *v;

    rc = tf_read_file(path, TF_TRY_CONF_MAX_BYTES, &text, &len);
    if (rc == -ENOENT && missing_ok) {
        rc = 0;
        goto out;
    }
    if (rc == -ENOENT) {
        tf_try_errf(err, "%s: no such configuration file", path);
        rc = TF_ENOENT;
        goto out;
    }
    if (rc == TF_E2BIG) {
        tf_try_errf(err, "%s: configuration file larger than %d bytes", path,
                    TF_TRY_CONF_MAX_BYTES);
        rc = TF_ECONFIG;
        goto out;
    }
    if (rc < 0) {
        tf_try_errf(err, "%s: cannot read the configuration file: %s", path,
                    rc < 0 && rc > -4096 ? strerror(-rc) : tf_strerror(rc));
        rc = TF_ECONFIG;
        goto out;
    }
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        tf_try_errf(err, "%s:%d:%d: not valid JSON: %s", path, jerr.line,
                    jerr.column, jerr.text);
        rc = TF_ECONFIG;
        goto out;
    }
    if (!json_is_object(root)) {
        tf_try_errf(err, "%s: the configuration must be a JSON object", path);
        rc = TF_ECONFIG;
        goto out;
    }
    if (tf_jsonpos_index(text, len, &idx) < 0)
        idx = NULL; /* positions are a courtesy; messages work without */
    json_object_foreach(root, key, v) {
        bool known = false;
        for (size_t i = 0; conf_keys[i]; i++)
            known = known || strcmp(conf_keys[i], key) == 0;
        if (!known) {
            char shown[80], where[32];
            conf_show_key(key, shown, sizeof(shown));
            conf_where(idx, key, where, sizeof(where));
            tf_try_errf(err, "%s:%sunknown key \"%s\" (known keys: url, "
                             "builders, tests, email, upstream, token_file, "
                             "ca_file)",
                        path, where, shown);
            rc = TF_ECONFIG;
            goto out;
        }
        if ((rc = conf_check_value(path, idx, key, v, err)) < 0)
            goto out;
    }
    rc = conf_apply(c, root, path, home);
    if (rc < 0)
        tf_try_errf(err, "%s: out of memory", path);
out:
    tf_jsonpos_free(idx);
    json_decref(root);
    free(text);
    return rc;
}

int tf_try_conf_load(tf_try_conf_t *c, const char *explicit_file,
                     const char *toplevel, const char *xdg, const char *home,
                     tf_try_err_t *err)
{
    int rc;
    char *dir = NULL, *user = NULL, *repo = NULL;

    if (explicit_file) {
        rc = tf_try_conf_merge_file(c, explicit_file, false, home, err);
        if (rc < 0)
            goto out;
    } else if (tf_try_conf_dir(xdg, home, &dir, NULL) == 0) {
        /* No configuration directory at all is not an error by itself:
         * everything can come from the repository and the command line. */
        user = tf_path_join(dir, "config.json");
        if (!user) {
            rc = TF_ENOMEM;
            goto out;
        }
        rc = tf_try_conf_merge_file(c, user, true, home, err);
        if (rc < 0)
            goto out;
    }
    if (toplevel) {
        repo = tf_path_join(toplevel, ".tf-try.json");
        if (!repo) {
            rc = TF_ENOMEM;
            goto out;
        }
        rc = tf_try_conf_merge_file(c, repo, true, home, err);
        if (rc < 0)
            goto out;
    }
    rc = 0;
out:
    free(dir);
    free(user);
    free(repo);
    return rc;
}

/* Strips leading and trailing whitespace of s in place; returns s + the
 * number of leading blanks. */
static char *strip(char *s)
{
    size_t n;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' ||
                     s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* A token goes into an HTTP header: printable ASCII without spaces only,
 * so it can neither break the header nor smuggle another one. */
static bool token_chars_ok(const char *t)
{
    if (!*t)
        return false;
    for (const unsigned char *p = (const unsigned char *)t; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return false;
    return true;
}

int tf_try_token_load(const char *env_value, const char *path, char **out,
                      tf_try_err_t *err)
{
    int rc;
    int fd = -1;
    struct stat st;
    char buf[TF_TRY_TOKEN_MAX_BYTES + 2];
    size_t len = 0;
    char *tok = NULL;

    *out = NULL;
    if (env_value) {
        char *copy = strdup(env_value);
        if (!copy)
            return TF_ENOMEM;
        char *t = strip(copy);
        if (*t) {
            if (!token_chars_ok(t) || strlen(t) > TF_TRY_TOKEN_MAX_BYTES) {
                tf_try_errf(err, "$TF_TRY_TOKEN holds characters a token "
                                 "cannot have (spaces or control characters)");
                explicit_bzero(copy, strlen(copy));
                free(copy);
                return TF_EINVAL;
            }
            memmove(copy, t, strlen(t) + 1);
            *out = copy;
            return 0;
        }
        free(copy);
    }
    if (!path) {
        tf_try_errf(err, "no token: set $TF_TRY_TOKEN or give --token-file");
        return TF_ENOENT;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && errno == ENOENT) {
        tf_try_errf(err, "no token: %s does not exist and $TF_TRY_TOKEN is "
                         "not set; ask your master's admin for a token "
                         "(tf-master user add EMAIL) and save it there with "
                         "mode 600", path);
        rc = TF_ENOENT;
        goto out;
    }
    if (fd < 0) {
        tf_try_errf(err, "cannot open the token file %s: %s", path,
                    strerror(errno));
        rc = TF_EIO;
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        tf_try_errf(err, "cannot stat the token file %s: %s", path,
                    strerror(errno));
        rc = TF_EIO;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        tf_try_errf(err, "the token file %s is not a regular file", path);
        rc = TF_EINVAL;
        goto out;
    }
    if (st.st_mode & (S_IRGRP | S_IROTH)) {
        tf_try_errf(err, "the token file %s may be read by other users (mode "
                         "%04o); refusing to use it. Fix it with: chmod 600 %s",
                    path, (unsigned)(st.st_mode & 07777), path);
        rc = TF_EAUTH;
        goto out;
    }
    while (len < sizeof(buf) - 1) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            tf_try_errf(err, "cannot read the token file %s: %s", path,
                        strerror(errno));
            rc = TF_EIO;
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    /* Only the first line counts; leading blank lines are skipped first so
     * "\ntoken\n" still works. */
    char *t = buf;
    while (*t == ' ' || *t == '\t' || *t == '\r' || *t == '\n')
        t++;
    char *nl = strchr(t, '\n');
    if (nl)
        *nl = '\0';
    else if (len >= sizeof(buf) - 1) {
        tf_try_errf(err, "the token file %s is too long (a token is at most "
                         "%d bytes)", path, TF_TRY_TOKEN_MAX_BYTES);
        rc = TF_EINVAL;
        goto out;
    }
    t = strip(t);
    if (!*t) {
        tf_try_errf(err, "the token file %s is empty", path);
        rc = TF_EINVAL;
        goto out;
    }
    if (strlen(t) > TF_TRY_TOKEN_MAX_BYTES || !token_chars_ok(t)) {
        tf_try_errf(err, "the first line of the token file %s holds "
                         "characters a token cannot have", path);
        rc = TF_EINVAL;
        goto out;
    }
    tok = strdup(t);
    if (!tok) {
        rc = TF_ENOMEM;
        goto out;
    }
    *out = tok;
    rc = 0;
out:
    explicit_bzero(buf, sizeof(buf));
    if (fd >= 0)
        close(fd);
    return rc;
}
