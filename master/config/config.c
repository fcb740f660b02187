/*
 * config.c - loads and validates the master's JSON configuration.
 *
 * Loading runs in three passes over the same text: jansson parses it (and
 * reports syntax errors and duplicate keys, the only errors that stop the
 * load early), tf_jsonpos indexes where every value sits, and a validator
 * walks the jansson tree building the tf_config_t while it records a
 * diagnostic for every problem it meets. A problem never stops the walk:
 * the validator keeps going with the next key so that `checkconfig` shows
 * all errors at once, and the half-built config is thrown away at the end
 * when any diagnostic was recorded. Only running out of memory aborts.
 *
 * The validator knows where it is through a chain of cfg_loc_t frames on
 * the C stack (one per object member or array element), from which both
 * the RFC 6901 pointer (for tf_jsonpos) and the dotted key shown to the
 * admin ("builders[0].steps[1].timeout") are built, only when a diagnostic
 * needs them. Diagnostics are sorted by position at the end so they read in
 * file order, whatever order the validator visited the keys in.
 *
 * Value getters return CFG_ABSENT (the default stays), CFG_OK (the output
 * was set) or CFG_BAD (a diagnostic was recorded), or a negative code when
 * memory ran out.
 */
#include "config/config.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "buf.h"
#include "jsonpos.h"
#include "names.h"
#include "result.h"
#include "changes/schedulers.h"
#include "tf_err.h"
#include "core/users.h"
#include "util.h"

#define CFG_MAX_FILE (16u * 1024 * 1024)
#define CFG_NOMAX INT32_MAX /* "no upper bound" for integer settings */
#define CFG_SHOW_MAX 64     /* bytes of a user string quoted in a message */
#define CFG_SHOW_BUF (CFG_SHOW_MAX * 4 + 16)
#define CFG_SUGGEST_DIST 2
#define CFG_NAME_RULE                                                          \
    "use 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"

enum { CFG_ABSENT = 0, CFG_OK = 1, CFG_BAD = 2 };

typedef struct cfg_loc {
    const struct cfg_loc *up; /* NULL for the document root */
    const char *key;          /* member name; NULL for an array element */
    size_t index;
} cfg_loc_t;

#define CFG_MEMBER(parent, k) ((cfg_loc_t){.up = (parent), .key = (k)})
#define CFG_ELEMENT(parent, i) ((cfg_loc_t){.up = (parent), .index = (i)})

typedef struct cfg_ctx {
    const char *file;      /* path as given, for diagnostics */
    const char *dir;       /* absolute directory of the file */
    tf_jsonpos_t *pos;     /* NULL if indexing failed: positions are 0 */
    tf_cfg_diags_t *diags; /* never NULL */
} cfg_ctx_t;

/* ------------------------------------------------------------------ */
/* Strings and diagnostics                                             */
/* ------------------------------------------------------------------ */

/* Copies s into out[CFG_SHOW_BUF] for display in a message: control bytes
 * become \xNN and after CFG_SHOW_MAX bytes the rest is cut off with "...",
 * never in the middle of a UTF-8 sequence. */
static void cfg_show(char out[CFG_SHOW_BUF], const char *s)
{
    size_t o = 0, i = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (; u[i]; i++) {
        /* Finish a UTF-8 sequence, but never copy more than its 3 tail
         * bytes: the text need not be valid UTF-8. */
        if (i >= CFG_SHOW_MAX &&
            ((u[i] & 0xc0) != 0x80 || i >= CFG_SHOW_MAX + 3))
            break;
        if (u[i] < 0x20 || u[i] == 0x7f) {
            snprintf(out + o, 5, "\\x%02x", u[i]);
            o += 4;
        } else {
            out[o++] = (char)u[i];
        }
    }
    if (u[i]) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

__attribute__((format(printf, 1, 0))) static char *cfg_vfmt(const char *fmt,
                                                           va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char *s = NULL;
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return NULL;
    s = malloc((size_t)n + 1);
    if (s)
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

__attribute__((format(printf, 1, 2))) static char *cfg_fmt(const char *fmt,
                                                          ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = cfg_vfmt(fmt, ap);
    va_end(ap);
    return s;
}

static char *cfg_buf_str(tf_buf_t *b)
{
    char *s = (char *)tf_buf_steal(b, NULL);
    return s ? s : strdup("");
}

static int cfg_pointer_of(tf_buf_t *b, const cfg_loc_t *l)
{
    int rc;
    if (!l || !l->up)
        return 0;
    rc = cfg_pointer_of(b, l->up);
    if (rc < 0)
        return rc;
    if (!l->key)
        return tf_buf_printf(b, "/%zu", l->index);
    rc = tf_buf_append(b, "/", 1);
    for (const char *k = l->key; rc == 0 && *k; k++) {
        if (*k == '~')
            rc = tf_buf_append(b, "~0", 2);
        else if (*k == '/')
            rc = tf_buf_append(b, "~1", 2);
        else
            rc = tf_buf_append(b, k, 1);
    }
    return rc;
}

static int cfg_dotted_of(tf_buf_t *b, const cfg_loc_t *l)
{
    int rc;
    char show[CFG_SHOW_BUF];
    if (!l || !l->up)
        return 0;
    rc = cfg_dotted_of(b, l->up);
    if (rc < 0)
        return rc;
    if (!l->key)
        return tf_buf_printf(b, "[%zu]", l->index);
    cfg_show(show, l->key);
    return tf_buf_printf(b, "%s%s", b->len ? "." : "", show);
}

/* Appends d to diags, which grows by doubling: its capacity is always the
 * smallest power of two holding count, so no capacity field is needed. */
static int cfg_diags_push(tf_cfg_diags_t *diags, const tf_cfg_diag_t *d)
{
    size_t n = diags->count;
    if (n == 0 || (n & (n - 1)) == 0) {
        size_t ncap = n ? n * 2 : 1;
        if (ncap > SIZE_MAX / sizeof(*diags->items))
            return TF_ENOMEM;
        tf_cfg_diag_t *p = realloc(diags->items, ncap * sizeof(*p));
        if (!p)
            return TF_ENOMEM;
        diags->items = p;
    }
    diags->items[n] = *d;
    diags->count = n + 1;
    return 0;
}

/* Records a diagnostic; takes ownership of key and message (either may be
 * NULL, meaning allocation failed, which is then reported). */
static int cfg_diag_raw(tf_cfg_diags_t *diags, const char *file, int line,
                        int col, char *key, char *message)
{
    tf_cfg_diag_t d = {
        .file = strdup(file),
        .line = line,
        .col = col,
        .key = key,
        .message = message,
    };
    if (!d.file || !d.key || !d.message || cfg_diags_push(diags, &d) < 0) {
        free(d.file);
        free(d.key);
        free(d.message);
        return TF_ENOMEM;
    }
    return 0;
}

/* Records a diagnostic about the value at loc, or about its key when at_key
 * is set (unknown and invalid keys). */
__attribute__((format(printf, 4, 0))) static int
cfg_vdiag(cfg_ctx_t *ctx, const cfg_loc_t *loc, bool at_key, const char *fmt,
          va_list ap)
{
    tf_buf_t ptr, dot;
    int line = 0, col = 0, key_line = 0, key_col = 0;
    char *key = NULL, *msg = NULL;
    int rc;

    tf_buf_init(&ptr, 0);
    tf_buf_init(&dot, 0);
    rc = cfg_pointer_of(&ptr, loc);
    if (rc < 0)
        goto out;
    rc = cfg_dotted_of(&dot, loc);
    if (rc < 0)
        goto out;
    if (tf_jsonpos_find(ctx->pos, ptr.data ? (char *)ptr.data : "", &line,
                        &col, &key_line, &key_col) == 0 &&
        at_key && key_line > 0) {
        line = key_line;
        col = key_col;
    }
    key = cfg_buf_str(&dot);
    msg = cfg_vfmt(fmt, ap);
    rc = cfg_diag_raw(ctx->diags, ctx->file, line, col, key, msg);
out:
    tf_buf_free(&ptr);
    tf_buf_free(&dot);
    return rc < 0 ? TF_ENOMEM : 0;
}

/* A diagnostic about the value at loc. Returns CFG_BAD or TF_ENOMEM, so
 * getters can `return cfg_bad(...)`. */
__attribute__((format(printf, 3, 4))) static int
cfg_bad(cfg_ctx_t *ctx, const cfg_loc_t *loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cfg_vdiag(ctx, loc, false, fmt, ap);
    va_end(ap);
    return rc < 0 ? rc : CFG_BAD;
}

/* The same about the key of the member at loc. */
__attribute__((format(printf, 3, 4))) static int
cfg_bad_key(cfg_ctx_t *ctx, const cfg_loc_t *loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cfg_vdiag(ctx, loc, true, fmt, ap);
    va_end(ap);
    return rc < 0 ? rc : CFG_BAD;
}

static int cfg_missing(cfg_ctx_t *ctx, const cfg_loc_t *obj, const char *key)
{
    return cfg_bad(ctx, obj, "missing required key \"%s\"", key);
}

/* Optimal string alignment distance (edits and adjacent swaps), or a big
 * number for strings too long to be worth comparing. */
static size_t cfg_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t rows[3][CFG_SHOW_MAX + 1];
    if (la > CFG_SHOW_MAX || lb > CFG_SHOW_MAX)
        return SIZE_MAX;
    size_t *pp = rows[0], *p = rows[1], *c = rows[2];
    for (size_t j = 0; j <= lb; j++)
        p[j] = j;
    for (size_t i = 1; i <= la; i++) {
        c[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = p[j] + 1;
            if (c[j - 1] + 1 < best)
                best = c[j - 1] + 1;
            if (p[j - 1] + cost < best)
                best = p[j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] &&
                a[i - 2] == b[j - 1] && pp[j - 2] + 1 < best)
                best = pp[j - 2] + 1;
            c[j] = best;
        }
        size_t *t = pp;
        pp = p;
        p = c;
        c = t;
    }
    return p[lb];
}

/* The candidate closest to word within CFG_SUGGEST_DIST edits, or NULL. */
static const char *cfg_suggest(const char *word, const char *const *cands,
                               size_t n)
{
    const char *best = NULL;
    size_t best_d = CFG_SUGGEST_DIST + 1;
    for (size_t i = 0; i < n; i++) {
        if (!cands[i])
            continue;
        size_t d = cfg_distance(word, cands[i]);
        if (d < best_d) {
            best_d = d;
            best = cands[i];
        }
    }
    return best;
}

static size_t cfg_count(const char *const *list)
{
    size_t n = 0;
    while (list[n])
        n++;
    return n;
}

/* Reports every key of obj that is not in known (NULL-terminated). */
static int cfg_check_keys(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                          const char *const *known)
{
    const char *k;
    json_t *v;
    size_t nknown = cfg_count(known);
    json_object_foreach(obj, k, v) {
        bool ok = false;
        for (size_t i = 0; i < nknown && !ok; i++)
            ok = strcmp(k, known[i]) == 0;
        if (ok)
            continue;
        char show[CFG_SHOW_BUF];
        cfg_show(show, k);
        const char *hint = cfg_suggest(k, known, nknown);
        cfg_loc_t kl = CFG_MEMBER(loc, k);
        int rc = hint ? cfg_bad_key(ctx, &kl,
                                    "unknown key \"%s\"; did you mean \"%s\"?",
                                    show, hint)
                      : cfg_bad_key(ctx, &kl, "unknown key \"%s\"", show);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Paths                                                               */
/* ------------------------------------------------------------------ */

/* Lexically tidies an absolute path in place: "//" and "." components go,
 * as does a trailing '/'. ".." is kept: it means something else past a
 * symlink. */
static void cfg_path_tidy(char *p)
{
    char *w = p;
    const char *r = p;
    while (*r) {
        while (*r == '/')
            r++;
        size_t n = strcspn(r, "/");
        if (n == 0 || (n == 1 && r[0] == '.')) {
            r += n;
            continue;
        }
        *w++ = '/';
        memmove(w, r, n);
        w += n;
        r += n;
    }
    if (w == p)
        *w++ = '/';
    *w = '\0';
}

/* The absolute directory of path (relative paths resolve against the
 * working directory). Returns 0, TF_ENOMEM or a negated errno. */
static int cfg_dir_of(const char *path, char **out)
{
    int rc = 0;
    char *cwd = NULL, *part = NULL, *dir = NULL;
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;

    *out = NULL;
    part = strndup(path, slash && n == 0 ? 1 : n);
    if (!part) {
        rc = TF_ENOMEM;
        goto out;
    }
    if (part[0] == '/') {
        dir = part;
        part = NULL;
    } else {
        cwd = getcwd(NULL, 0);
        if (!cwd) {
            rc = errno == ENOMEM ? TF_ENOMEM : -errno;
            goto out;
        }
        dir = tf_path_join(cwd, part);
        if (!dir) {
            rc = TF_ENOMEM;
            goto out;
        }
    }
    cfg_path_tidy(dir);
    *out = dir;
    dir = NULL;
out:
    free(cwd);
    free(part);
    free(dir);
    return rc;
}

/* p if absolute, else dir/p, tidied; NULL when out of memory. */
static char *cfg_resolve(const char *dir, const char *p)
{
    char *r = p[0] == '/' ? strdup(p) : tf_path_join(dir, p);
    if (r)
        cfg_path_tidy(r);
    return r;
}

/* ------------------------------------------------------------------ */
/* Value getters                                                       */
/* ------------------------------------------------------------------ */

static int cfg_int_value(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                         long long lo, long long hi, long long *out)
{
    if (!json_is_integer(v))
        return cfg_bad(ctx, loc, "expected an integer");
    long long x = json_integer_value(v);
    if (x >= lo && x <= hi) {
        *out = x;
        return CFG_OK;
    }
    if (hi == CFG_NOMAX && x < lo)
        return lo == 0 ? cfg_bad(ctx, loc, "must not be negative (got %lld)", x)
                       : cfg_bad(ctx, loc, "must be at least %lld (got %lld)",
                                 lo, x);
    return cfg_bad(ctx, loc, "must be between %lld and %lld (got %lld)", lo, hi,
                   x);
}

static int cfg_int(cfg_ctx_t *ctx, const cfg_loc_t *up, json_t *obj,
                   const char *key, long long lo, long long hi,
                   long long *out)
{
    json_t *v = json_object_get(obj, key);
    cfg_loc_t loc = CFG_MEMBER(up, key);
    return v ? cfg_int_value(ctx, &loc, v, lo, hi, out) : CFG_ABSENT;
}

/* An integer setting stored as uint32_t; *out keeps its default when the
 * key is absent or bad. */
static int cfg_u32(cfg_ctx_t *ctx, const cfg_loc_t *up, json_t *obj,
                   const char *key, long long lo, long long hi, uint32_t *out)
{
    long long x = 0;
    int rc = cfg_int(ctx, up, obj, key, lo, hi, &x);
    if (rc == CFG_OK)
        *out = (uint32_t)x;
    return rc;
}

static int cfg_bool(cfg_ctx_t *ctx, const cfg_loc_t *up, json_t *obj,
                    const char *key, bool *out)
{
    json_t *v = json_object_get(obj, key);
    cfg_loc_t loc = CFG_MEMBER(up, key);
    if (!v)
        return CFG_ABSENT;
    if (!json_is_boolean(v))
        return cfg_bad(ctx, &loc, "expected true or false");
    *out = json_is_true(v);
    return CFG_OK;
}

/* A string member; *out (borrowed from the JSON tree) is left alone unless
 * the member is a string that is non-empty or may be empty. */
static int cfg_str(cfg_ctx_t *ctx, const cfg_loc_t *up, json_t *obj,
                   const char *key, bool may_be_empty, const char **out)
{
    json_t *v = json_object_get(obj, key);
    cfg_loc_t loc = CFG_MEMBER(up, key);
    if (!v)
        return CFG_ABSENT;
    if (!json_is_string(v))
        return cfg_bad(ctx, &loc, "expected a string");
    if (!may_be_empty && json_string_length(v) == 0)
        return cfg_bad(ctx, &loc, "must not be empty");
    *out = json_string_value(v);
    return CFG_OK;
}

/* A name (tf_name_valid) at loc; *out borrowed from the tree. */
static int cfg_name_value(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                          const char **out)
{
    char show[CFG_SHOW_BUF];
    if (!json_is_string(v))
        return cfg_bad(ctx, loc, "expected a string");
    if (!tf_name_valid(json_string_value(v))) {
        cfg_show(show, json_string_value(v));
        return cfg_bad(ctx, loc,
                       "invalid name \"%s\": %s", show, CFG_NAME_RULE);
    }
    *out = json_string_value(v);
    return CFG_OK;
}

/* A required name member of obj (at loc). */
static int cfg_name(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                    const char **out)
{
    json_t *v = json_object_get(obj, "name");
    cfg_loc_t nl = CFG_MEMBER(loc, "name");
    if (!v)
        return cfg_missing(ctx, loc, "name");
    return cfg_name_value(ctx, &nl, v, out);
}

static bool cfg_in(char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

static void cfg_strv_free(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* An optional array of distinct names ("what" names one in messages).
 * *out gets a copy of the valid ones; the default is the empty list. */
static int cfg_names(cfg_ctx_t *ctx, const cfg_loc_t *up, json_t *obj,
                     const char *key, const char *what, char ***out,
                     size_t *nout)
{
    json_t *arr = json_object_get(obj, key);
    cfg_loc_t loc = CFG_MEMBER(up, key);
    char **v = NULL;
    size_t n = 0;
    int rc = CFG_ABSENT;

    if (!arr)
        goto out;
    if (!json_is_array(arr)) {
        rc = cfg_bad(ctx, &loc, "expected an array of names");
        goto out;
    }
    rc = CFG_OK;
    if (json_array_size(arr) == 0)
        goto out;
    v = calloc(json_array_size(arr), sizeof(*v));
    if (!v) {
        rc = TF_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < json_array_size(arr); i++) {
        cfg_loc_t el = CFG_ELEMENT(&loc, i);
        const char *name = NULL;
        int r = cfg_name_value(ctx, &el, json_array_get(arr, i), &name);
        if (r == CFG_OK && cfg_in(v, n, name))
            r = cfg_bad(ctx, &el, "duplicate %s \"%s\"", what, name);
        if (r < 0) {
            rc = r;
            goto out;
        }
        if (r != CFG_OK) {
            rc = CFG_BAD;
            continue;
        }
        v[n] = strdup(name);
        if (!v[n]) {
            rc = TF_ENOMEM;
            goto out;
        }
        n++;
    }
out:
    if (rc < 0) {
        cfg_strv_free(v, n);
        v = NULL;
        n = 0;
    }
    *out = v;
    *nout = n;
    return rc;
}

static void cfg_kv_free(tf_kv_t *kv, size_t n)
{
    if (!kv)
        return;
    for (size_t i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

static bool cfg_env_name_valid(const char *s)
{
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return false;
    for (s++; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
              (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* An optional object of string -> string whose keys pass key_ok; the
 * default is empty. A rejected key is reported as an invalid "what" name
 * with the rule it breaks. *out holds copies, in file order. */
static int cfg_kv(cfg_ctx_t *ctx, const cfg_loc_t *up, json_t *obj,
                  const char *key, bool (*key_ok)(const char *),
                  const char *what, const char *rule, tf_kv_t **out,
                  size_t *nout)
{
    json_t *o = json_object_get(obj, key);
    cfg_loc_t loc = CFG_MEMBER(up, key);
    tf_kv_t *kv = NULL;
    size_t n = 0;
    int rc = CFG_ABSENT;
    const char *k;
    json_t *v;

    if (!o)
        goto out;
    if (!json_is_object(o)) {
        rc = cfg_bad(ctx, &loc, "expected an object of strings");
        goto out;
    }
    rc = CFG_OK;
    if (json_object_size(o) == 0)
        goto out;
    kv = calloc(json_object_size(o), sizeof(*kv));
    if (!kv) {
        rc = TF_ENOMEM;
        goto out;
    }
    json_object_foreach(o, k, v) {
        cfg_loc_t ml = CFG_MEMBER(&loc, k);
        int r = CFG_OK;
        if (!key_ok(k)) {
            char show[CFG_SHOW_BUF];
            cfg_show(show, k);
            r = cfg_bad_key(ctx, &ml, "invalid %s name \"%s\": %s", what,
                            show, rule);
            if (r < 0) {
                rc = r;
                goto out;
            }
        }
        if (!json_is_string(v)) {
            int r2 = cfg_bad(ctx, &ml, "expected a string");
            if (r2 < 0) {
                rc = r2;
                goto out;
            }
            r = CFG_BAD;
        }
        if (r != CFG_OK) {
            rc = CFG_BAD;
            continue;
        }
        kv[n].key = strdup(k);
        kv[n].value = strdup(json_string_value(v));
        n++;
        if (!kv[n - 1].key || !kv[n - 1].value) {
            rc = TF_ENOMEM;
            goto out;
        }
    }
out:
    if (rc < 0) {
        cfg_kv_free(kv, n);
        kv = NULL;
        n = 0;
    }
    *out = kv;
    *nout = n;
    return rc;
}

/* A name and the index of the array element it came from. */
typedef struct cfg_named {
    const char *name;
    size_t i;
} cfg_named_t;

static int cfg_named_cmp(const void *a, const void *b)
{
    const cfg_named_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Reports every name in names[0..n) (NULL entries are skipped) that an
 * earlier element already used, at arr[i].name, naming the first user.
 * Sorting (name, index) pairs keeps this O(n log n) for thousands of
 * slaves. */
static int cfg_dups(cfg_ctx_t *ctx, const cfg_loc_t *arr,
                    const char *const *names, size_t n, const char *what)
{
    int rc = 0;
    size_t m = 0;
    cfg_named_t *v = n ? calloc(n, sizeof(*v)) : NULL;
    if (n && !v)
        return TF_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (names[i])
            v[m++] = (cfg_named_t){names[i], i};
    if (m > 1)
        qsort(v, m, sizeof(*v), cfg_named_cmp);
    size_t first = 0;
    for (size_t j = 1; j < m && rc >= 0; j++) {
        if (strcmp(v[j].name, v[first].name) != 0) {
            first = j;
            continue;
        }
        cfg_loc_t el = CFG_ELEMENT(arr, v[j].i);
        cfg_loc_t nl = CFG_MEMBER(&el, "name");
        char dots[64];
        snprintf(dots, sizeof(dots), "%s[%zu]", arr->key, v[first].i);
        rc = cfg_bad(ctx, &nl, "duplicate %s name \"%s\" (first used by %s)",
                     what, v[j].name, dots);
    }
    free(v);
    return rc < 0 ? rc : 0;
}

/* ------------------------------------------------------------------ */
/* Steps, slaves, builders                                             */
/* ------------------------------------------------------------------ */

static const char *const cfg_step_keys[] = {
    "name", "command", "env", "workdir", "timeout", "maxTime",
    "haltOnFailure", "flunkOnFailure", "warnOnFailure", "flunkOnWarnings",
    "warnOnWarnings", "alwaysRun", "markers", "info", "stats", "success",
    "warnings", "test_results", NULL,
};

/* Fills argv for a command written as an array of strings. */
static int cfg_argv_array(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *cmd,
                          char ***argv_out, size_t *argc_out)
{
    size_t n = json_array_size(cmd);
    char **argv = NULL;
    int rc = CFG_OK;

    if (n == 0)
        return cfg_bad(ctx, loc, "must not be empty");
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(cmd, i);
        cfg_loc_t el = CFG_ELEMENT(loc, i);
        int r = CFG_OK;
        if (!json_is_string(a))
            r = cfg_bad(ctx, &el, "expected a string");
        else if (i == 0 && json_string_length(a) == 0)
            r = cfg_bad(ctx, &el, "the program to run must not be empty");
        if (r < 0)
            return r;
        if (r != CFG_OK)
            rc = CFG_BAD;
    }
    if (rc != CFG_OK)
        return rc;
    argv = calloc(n + 1, sizeof(*argv));
    if (!argv)
        return TF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        argv[i] = strdup(json_string_value(json_array_get(cmd, i)));
        if (!argv[i]) {
            cfg_strv_free(argv, i);
            return TF_ENOMEM;
        }
    }
    *argv_out = argv;
    *argc_out = n;
    return CFG_OK;
}

static int cfg_command(cfg_ctx_t *ctx, const cfg_loc_t *step, json_t *obj,
                       tf_cfg_step_t *st)
{
    json_t *cmd = json_object_get(obj, "command");
    cfg_loc_t loc = CFG_MEMBER(step, "command");
    static const char *const sh[] = {"/bin/sh", "-c"};

    if (!cmd)
        return cfg_missing(ctx, step, "command");
    if (json_is_array(cmd))
        return cfg_argv_array(ctx, &loc, cmd, &st->spec.argv, &st->spec.argc);
    if (!json_is_string(cmd))
        return cfg_bad(ctx, &loc, "expected a string or an array of strings");
    if (json_string_length(cmd) == 0)
        return cfg_bad(ctx, &loc, "must not be empty");
    char **argv = calloc(4, sizeof(*argv));
    if (!argv)
        return TF_ENOMEM;
    argv[0] = strdup(sh[0]);
    argv[1] = strdup(sh[1]);
    argv[2] = strdup(json_string_value(cmd));
    if (!argv[0] || !argv[1] || !argv[2]) {
        cfg_strv_free(argv, 3);
        return TF_ENOMEM;
    }
    st->spec.argv = argv;
    st->spec.argc = 3;
    st->shell = true;
    return CFG_OK;
}

static const struct {
    const char *key;
    size_t off;
} cfg_flag_keys[] = {
    {"haltOnFailure", offsetof(tf_step_flags_t, halt_on_failure)},
    {"flunkOnFailure", offsetof(tf_step_flags_t, flunk_on_failure)},
    {"warnOnFailure", offsetof(tf_step_flags_t, warn_on_failure)},
    {"flunkOnWarnings", offsetof(tf_step_flags_t, flunk_on_warnings)},
    {"warnOnWarnings", offsetof(tf_step_flags_t, warn_on_warnings)},
    {"alwaysRun", offsetof(tf_step_flags_t, always_run)},
};

/* ------------------------------------------------------------------ */
/* Command modifiers (docs/config.md, "Command modifiers")             */
/* ------------------------------------------------------------------ */

static const char *const cfg_stat_keys[] = {"name", "regex", NULL};
static const char *const cfg_success_keys[] = {"pass_if", "fail_if", NULL};
static const char *const cfg_warnings_keys[] = {"regex", "max", NULL};

/* A regular expression at loc: a non-empty string of at most
 * TF_PROTO_MAX_REGEX bytes that regcomp() accepts as POSIX extended. Its
 * number of groups goes to *groups; *out is borrowed from the tree. The
 * slave compiles it again; checking here puts the error at its place in
 * the file instead of in a failed step. */
static int cfg_regex_value(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                           const char **out, size_t *groups)
{
    regex_t re;
    char why[160];
    if (!json_is_string(v))
        return cfg_bad(ctx, loc, "expected a regular expression (a string)");
    if (json_string_length(v) == 0)
        return cfg_bad(ctx, loc, "must not be empty");
    if (json_string_length(v) > TF_PROTO_MAX_REGEX)
        return cfg_bad(ctx, loc, "longer than %d bytes", TF_PROTO_MAX_REGEX);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return cfg_bad(ctx, loc, "must not contain a NUL character");
    int rc = regcomp(&re, json_string_value(v), REG_EXTENDED);
    if (rc == REG_ESPACE)
        return TF_ENOMEM;
    if (rc != 0) {
        regerror(rc, &re, why, sizeof(why));
        return cfg_bad(ctx, loc, "invalid regular expression: %s", why);
    }
    if (groups)
        *groups = re.re_nsub;
    regfree(&re);
    *out = json_string_value(v);
    return CFG_OK;
}

/* Copies a checked regex into *dst. */
static int cfg_regex_copy(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                          size_t *groups, char **dst)
{
    const char *re = NULL;
    int rc = cfg_regex_value(ctx, loc, v, &re, groups);
    if (rc != CFG_OK)
        return rc;
    *dst = strdup(re);
    return *dst ? CFG_OK : TF_ENOMEM;
}

/* An optional array of at most TF_PROTO_MAX_MOD_RULES elements. */
static json_t *cfg_rules_array(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                               json_t *v, const char *what, int *rc)
{
    *rc = 0;
    if (!v)
        return NULL;
    if (!json_is_array(v))
        *rc = cfg_bad(ctx, loc, "expected an array of %s", what);
    else if (json_array_size(v) > TF_PROTO_MAX_MOD_RULES)
        *rc = cfg_bad(ctx, loc, "too many rules (%zu; at most %d)",
                      json_array_size(v), TF_PROTO_MAX_MOD_RULES);
    else
        return v;
    return NULL;
}

/* "info": [REGEX, ...]. */
static int cfg_mod_info(cfg_ctx_t *ctx, const cfg_loc_t *step, json_t *obj,
                        tf_modifiers_t *m)
{
    cfg_loc_t loc = CFG_MEMBER(step, "info");
    int rc;
    json_t *arr = cfg_rules_array(ctx, &loc, json_object_get(obj, "info"),
                                  "regular expressions", &rc);
    if (!arr || json_array_size(arr) == 0)
        return rc < 0 ? rc : 0;
    if (!(m->info = calloc(json_array_size(arr), sizeof(*m->info))))
        return TF_ENOMEM;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        cfg_loc_t el = CFG_ELEMENT(&loc, i);
        rc = cfg_regex_copy(ctx, &el, json_array_get(arr, i), NULL,
                            &m->info[m->ninfo]);
        if (rc < 0)
            return rc;
        if (rc == CFG_OK)
            m->ninfo++;
    }
    return 0;
}

/* "stats": [{"name": NAME, "regex": REGEX} or {"regex": REGEX with two
 * groups}, ...]. */
static int cfg_mod_stats(cfg_ctx_t *ctx, const cfg_loc_t *step, json_t *obj,
                         tf_modifiers_t *m)
{
    cfg_loc_t loc = CFG_MEMBER(step, "stats");
    int rc;
    json_t *arr = cfg_rules_array(ctx, &loc, json_object_get(obj, "stats"),
                                  "objects", &rc);
    if (!arr || json_array_size(arr) == 0)
        return rc < 0 ? rc : 0;
    if (!(m->stats = calloc(json_array_size(arr), sizeof(*m->stats))))
        return TF_ENOMEM;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        cfg_loc_t el = CFG_ELEMENT(&loc, i);
        cfg_loc_t rl = CFG_MEMBER(&el, "regex");
        json_t *e = json_array_get(arr, i);
        tf_stat_rule_t *sr = &m->stats[m->nstats];
        const char *name = NULL;
        size_t groups = 0;
        if (!json_is_object(e)) {
            if ((rc = cfg_bad(ctx, &el, "expected an object")) < 0)
                return rc;
            continue;
        }
        if ((rc = cfg_check_keys(ctx, &el, e, cfg_stat_keys)) < 0)
            return rc;
        int nrc = CFG_ABSENT;
        if (json_object_get(e, "name")) {
            cfg_loc_t nl = CFG_MEMBER(&el, "name");
            nrc = cfg_name_value(ctx, &nl, json_object_get(e, "name"), &name);
            if (nrc < 0)
                return nrc;
        }
        if (!json_object_get(e, "regex")) {
            if ((rc = cfg_missing(ctx, &el, "regex")) < 0)
                return rc;
            continue;
        }
        rc = cfg_regex_copy(ctx, &rl, json_object_get(e, "regex"), &groups,
                            &sr->regex);
        if (rc < 0)
            return rc;
        if (rc == CFG_OK && nrc == CFG_ABSENT && groups < 2) {
            rc = cfg_bad(ctx, &rl, "without a \"name\", the regex needs two "
                         "groups: the stat's name, then its value");
            if (rc < 0)
                return rc;
        }
        if (rc != CFG_OK || nrc == CFG_BAD) {
            free(sr->regex);
            sr->regex = NULL;
            continue;
        }
        if (name && !(sr->name = strdup(name))) {
            m->nstats++; /* so that the regex is freed */
            return TF_ENOMEM;
        }
        m->nstats++;
    }
    return 0;
}

/* "success": {"pass_if": REGEX, "fail_if": REGEX} (at least one). */
static int cfg_mod_success(cfg_ctx_t *ctx, const cfg_loc_t *step, json_t *obj,
                           tf_modifiers_t *m)
{
    json_t *so = json_object_get(obj, "success");
    cfg_loc_t loc = CFG_MEMBER(step, "success");
    int rc;
    if (!so)
        return 0;
    if (!json_is_object(so)) {
        rc = cfg_bad(ctx, &loc, "expected an object with \"pass_if\" or "
                     "\"fail_if\"");
        return rc < 0 ? rc : 0;
    }
    if ((rc = cfg_check_keys(ctx, &loc, so, cfg_success_keys)) < 0)
        return rc;
    if (!json_object_get(so, "pass_if") && !json_object_get(so, "fail_if")) {
        rc = cfg_bad(ctx, &loc, "give \"pass_if\", \"fail_if\" or both");
        return rc < 0 ? rc : 0;
    }
    cfg_loc_t pl = CFG_MEMBER(&loc, "pass_if");
    cfg_loc_t fl = CFG_MEMBER(&loc, "fail_if");
    if (json_object_get(so, "pass_if") &&
        (rc = cfg_regex_copy(ctx, &pl, json_object_get(so, "pass_if"), NULL,
                             &m->pass_if)) < 0)
        return rc;
    if (json_object_get(so, "fail_if") &&
        (rc = cfg_regex_copy(ctx, &fl, json_object_get(so, "fail_if"), NULL,
                             &m->fail_if)) < 0)
        return rc;
    return 0;
}

/* "warnings": REGEX or {"regex": REGEX, "max": N}. */
static int cfg_mod_warnings(cfg_ctx_t *ctx, const cfg_loc_t *step,
                            json_t *obj, tf_modifiers_t *m)
{
    json_t *w = json_object_get(obj, "warnings");
    cfg_loc_t loc = CFG_MEMBER(step, "warnings");
    int rc;
    if (!w)
        return 0;
    if (json_is_string(w))
        rc = cfg_regex_copy(ctx, &loc, w, NULL, &m->warnings);
    else if (!json_is_object(w))
        rc = cfg_bad(ctx, &loc, "expected a regular expression or an object "
                     "with \"regex\" and \"max\"");
    else if ((rc = cfg_check_keys(ctx, &loc, w, cfg_warnings_keys)) < 0)
        return rc;
    else {
        cfg_loc_t rl = CFG_MEMBER(&loc, "regex");
        rc = json_object_get(w, "regex")
                 ? cfg_regex_copy(ctx, &rl, json_object_get(w, "regex"), NULL,
                                  &m->warnings)
                 : cfg_missing(ctx, &loc, "regex");
        if (rc < 0)
            return rc;
        rc = cfg_u32(ctx, &loc, w, "max", 0, CFG_NOMAX, &m->warnings_max);
    }
    return rc < 0 ? rc : 0;
}

/* The step's command modifiers. Every step gets them: marker lines are
 * honoured unless "markers" is false, so a step can report stats without
 * any configuration. */
static int cfg_modifiers(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                         tf_cfg_step_t *st)
{
    tf_modifiers_t *m = calloc(1, sizeof(*m));
    int rc;
    if (!m)
        return TF_ENOMEM;
    st->spec.modifiers = m;
    m->markers = true;
    if ((rc = cfg_bool(ctx, loc, obj, "markers", &m->markers)) < 0 ||
        (rc = cfg_mod_info(ctx, loc, obj, m)) < 0 ||
        (rc = cfg_mod_stats(ctx, loc, obj, m)) < 0 ||
        (rc = cfg_mod_success(ctx, loc, obj, m)) < 0 ||
        (rc = cfg_mod_warnings(ctx, loc, obj, m)) < 0)
        return rc;
    if (!m->markers && !m->ninfo && !m->nstats && !m->pass_if &&
        !m->fail_if && !m->warnings) {
        tf_modifiers_free(m); /* nothing to do: send none */
        st->spec.modifiers = NULL;
    }
    return 0;
}

/* "test_results": {"format": FORMAT, "files": [GLOB, ...]} (docs/config.md,
 * "Test results"): which parser reads the step's test output. The same
 * rules as the protocol's decoder, checked here so that a bad glob is an
 * error at its place in the file rather than a refused build_start. */
static const char *const cfg_test_results_keys[] = {"format", "files", NULL};

static int cfg_test_results(cfg_ctx_t *ctx, const cfg_loc_t *step,
                            json_t *obj, tf_cfg_step_t *st)
{
    json_t *to = json_object_get(obj, "test_results");
    cfg_loc_t loc = CFG_MEMBER(step, "test_results");
    cfg_loc_t fl = CFG_MEMBER(&loc, "format");
    cfg_loc_t gl = CFG_MEMBER(&loc, "files");
    const char *fmt = NULL;
    char show[CFG_SHOW_BUF];
    int rc;
    if (!to)
        return 0;
    if (!json_is_object(to)) {
        rc = cfg_bad(ctx, &loc, "expected an object with \"format\" (and "
                     "\"files\" for junit)");
        return rc < 0 ? rc : 0;
    }
    if ((rc = cfg_check_keys(ctx, &loc, to, cfg_test_results_keys)) < 0)
        return rc;
    rc = cfg_str(ctx, &loc, to, "format", false, &fmt);
    if (rc == CFG_ABSENT)
        rc = cfg_missing(ctx, &loc, "format");
    if (rc != CFG_OK)
        return rc < 0 ? rc : 0;
    tf_tr_format_t f = tf_tr_format_parse(fmt);
    if (f == TF_TR_FMT_NONE) {
        cfg_show(show, fmt);
        rc = cfg_bad(ctx, &fl, "unknown format \"%s\" (known: ctest, gtest, "
                     "pytest, unittest, automake, tap, junit)", show);
        return rc < 0 ? rc : 0;
    }
    json_t *files = json_object_get(to, "files");
    if (!files && f == TF_TR_FMT_JUNIT) {
        rc = cfg_bad(ctx, &loc, "junit needs \"files\": globs of the "
                     "report files, relative to the step's workdir");
        return rc < 0 ? rc : 0;
    }
    if (files && !tf_tr_format_files(f)) {
        rc = cfg_bad(ctx, &gl, "not allowed for %s: it reads the step's "
                     "output", fmt);
        return rc < 0 ? rc : 0;
    }
    if (files && (!json_is_array(files) || json_array_size(files) == 0 ||
                  json_array_size(files) > TF_TR_MAX_FILES)) {
        rc = cfg_bad(ctx, &gl, "expected an array of 1 to %d globs",
                     TF_TR_MAX_FILES);
        return rc < 0 ? rc : 0;
    }
    tf_test_spec_t *t = calloc(1, sizeof(*t));
    if (!t)
        return TF_ENOMEM;
    st->spec.test_results = t;
    t->format = f;
    size_t n = files ? json_array_size(files) : 0;
    if (n && !(t->files = calloc(n + 1, sizeof(*t->files))))
        return TF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        cfg_loc_t el = CFG_ELEMENT(&gl, i);
        json_t *g = json_array_get(files, i);
        if (!json_is_string(g)) {
            rc = cfg_bad(ctx, &el, "expected a string");
        } else if (!tf_tr_glob_valid(json_string_value(g)) ||
                   strlen(json_string_value(g)) != json_string_length(g)) {
            cfg_show(show, json_string_value(g));
            rc = cfg_bad(ctx, &el, "invalid glob \"%s\": use a relative "
                         "path (at most %d bytes) whose parts are names or "
                         "patterns, without \".\" or \"..\": report files "
                         "are read only inside the workdir", show,
                         TF_TR_MAX_GLOB);
        } else {
            if (!(t->files[t->nfiles] = strdup(json_string_value(g))))
                return TF_ENOMEM;
            t->nfiles++;
            continue;
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* One step at loc. st is zeroed on entry; on any outcome the caller frees
 * it with tf_step_spec_clear. */
static int cfg_step(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                    tf_cfg_step_t *st)
{
    const char *name = NULL, *workdir = "";
    long long t;
    int rc;

    if (!json_is_object(obj))
        return cfg_bad(ctx, loc, "expected an object");
    rc = cfg_check_keys(ctx, loc, obj, cfg_step_keys);
    if (rc < 0)
        return rc;
    rc = cfg_name(ctx, loc, obj, &name);
    if (rc < 0)
        return rc;
    if (rc == CFG_OK && !(st->spec.name = strdup(name)))
        return TF_ENOMEM;
    rc = cfg_command(ctx, loc, obj, st);
    if (rc < 0)
        return rc;
    rc = cfg_kv(ctx, loc, obj, "env", cfg_env_name_valid,
                "environment variable",
                "use letters, digits and _, not starting with a digit",
                &st->spec.env, &st->spec.nenv);
    if (rc < 0)
        return rc;
    rc = cfg_str(ctx, loc, obj, "workdir", true, &workdir);
    if (rc < 0)
        return rc;
    if (rc == CFG_OK && !tf_relpath_valid(workdir)) {
        char show[CFG_SHOW_BUF];
        cfg_loc_t wl = CFG_MEMBER(loc, "workdir");
        cfg_show(show, workdir);
        rc = cfg_bad(ctx, &wl,
                     "invalid workdir \"%s\": use a relative path of names "
                     "separated by '/', without \".\" or \"..\"",
                     show);
        if (rc < 0)
            return rc;
        workdir = "";
    }
    if (!(st->spec.workdir = strdup(workdir)))
        return TF_ENOMEM;
    t = 1200;
    rc = cfg_int(ctx, loc, obj, "timeout", 0, CFG_NOMAX, &t);
    if (rc < 0)
        return rc;
    st->spec.timeout_s = (uint32_t)t;
    t = 0;
    rc = cfg_int(ctx, loc, obj, "maxTime", 0, CFG_NOMAX, &t);
    if (rc < 0)
        return rc;
    st->spec.max_time_s = (uint32_t)t;
    st->spec.flags = tf_step_flags_default();
    for (size_t i = 0; i < sizeof(cfg_flag_keys) / sizeof(cfg_flag_keys[0]);
         i++) {
        bool *flag = (bool *)((char *)&st->spec.flags + cfg_flag_keys[i].off);
        rc = cfg_bool(ctx, loc, obj, cfg_flag_keys[i].key, flag);
        if (rc < 0)
            return rc;
    }
    rc = cfg_modifiers(ctx, loc, obj, st);
    if (rc < 0)
        return rc;
    rc = cfg_test_results(ctx, loc, obj, st);
    return rc < 0 ? rc : 0;
}

static const char *const cfg_slave_keys[] = {
    "name", "secret", "secret_file", "tags", "max_builds", NULL,
};

static int cfg_secret_file(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                           const char *rel, char **out)
{
    char show[CFG_SHOW_BUF];
    char *path = cfg_resolve(ctx->dir, rel);
    if (!path)
        return TF_ENOMEM;
    int rc = tf_read_secret(path, out);
    cfg_show(show, path);
    free(path);
    if (rc == 0)
        return CFG_OK;
    if (rc == TF_ENOMEM || rc == -ENOMEM)
        return TF_ENOMEM;
    if (rc == TF_EINVAL)
        return cfg_bad(ctx, loc,
                       "secret file \"%s\" is empty (the secret is its "
                       "first line)",
                       show);
    if (rc == TF_E2BIG)
        return cfg_bad(ctx, loc, "secret file \"%s\" is larger than 4 KiB",
                       show);
    return cfg_bad(ctx, loc, "cannot read secret file \"%s\": %s", show,
                   tf_strerror(rc));
}

static int cfg_slave(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                     tf_cfg_slave_t *s)
{
    const char *name = NULL, *secret = NULL, *secret_file = NULL;
    int rc, has_secret, has_file;

    if (!json_is_object(obj))
        return cfg_bad(ctx, loc, "expected an object");
    rc = cfg_check_keys(ctx, loc, obj, cfg_slave_keys);
    if (rc < 0)
        return rc;
    rc = cfg_name(ctx, loc, obj, &name);
    if (rc < 0)
        return rc;
    if (rc == CFG_OK && !(s->name = strdup(name)))
        return TF_ENOMEM;

    has_secret = cfg_str(ctx, loc, obj, "secret", false, &secret);
    if (has_secret < 0)
        return has_secret;
    has_file = cfg_str(ctx, loc, obj, "secret_file", false, &secret_file);
    if (has_file < 0)
        return has_file;
    if (has_secret != CFG_ABSENT && has_file != CFG_ABSENT) {
        rc = cfg_bad(ctx, loc,
                     "give either \"secret\" or \"secret_file\", not both");
    } else if (has_secret == CFG_ABSENT && has_file == CFG_ABSENT) {
        rc = cfg_bad(ctx, loc,
                     "missing required key \"secret\" (or \"secret_file\")");
    } else if (has_secret == CFG_OK) {
        rc = (s->secret = strdup(secret)) ? CFG_OK : TF_ENOMEM;
    } else if (has_file == CFG_OK) {
        cfg_loc_t fl = CFG_MEMBER(loc, "secret_file");
        rc = cfg_secret_file(ctx, &fl, secret_file, &s->secret);
    }
    if (rc < 0)
        return rc;

    rc = cfg_names(ctx, loc, obj, "tags", "tag", &s->tags, &s->ntags);
    if (rc < 0)
        return rc;
    s->max_builds = 1;
    rc = cfg_u32(ctx, loc, obj, "max_builds", 1, TF_PROTO_MAX_RUNNING,
                 &s->max_builds);
    return rc < 0 ? rc : 0;
}

/* ------------------------------------------------------------------ */
/* Mail                                                                */
/* ------------------------------------------------------------------ */

static const char *const cfg_mail_keys[] = {
    "enabled", "from", "from_name", "subject_prefix", "smtp", "sendmail",
    "connect_timeout_s", "timeout_s", "retry_initial_s", "retry_max_s",
    "retry_horizon_s", "excerpt_max_bytes", "message_max_bytes",
    "tail_lines", "error_patterns", "try_jobs", NULL,
};
static const char *const cfg_smtp_keys[] = {
    "host", "port", "security", "username", "password_file", "ca_file", NULL,
};
static const char *const cfg_builder_mail_keys[] = {
    "mode", "extra_recipients", "error_patterns", NULL,
};
/* Lines worth showing from a failed step when a builder names none. */
static const char *const cfg_mail_default_patterns[] = {
    "error:", "Error:", "ERROR", "FAIL", "Traceback", "panic:",
    "Assertion", "undefined reference", "Segmentation fault", NULL,
};
#define CFG_MAIL_MAX_STRINGS 100

static json_t *cfg_section(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                           const char *key, const char *const *keys, int *rc);

/* An optional array of 1..CFG_MAIL_MAX_STRINGS non-empty strings of at
 * most 1024 bytes; with email set each must be a plain address. *out gets
 * copies of the valid ones. */
static int cfg_mail_strings(cfg_ctx_t *ctx, const cfg_loc_t *up, json_t *obj,
                            const char *key, bool email, char ***out,
                            size_t *nout)
{
    json_t *arr = json_object_get(obj, key);
    cfg_loc_t loc = CFG_MEMBER(up, key);
    char **v = NULL;
    size_t n = 0;
    int rc = CFG_OK;

    *out = NULL;
    *nout = 0;
    if (!arr)
        return CFG_ABSENT;
    if (!json_is_array(arr))
        return cfg_bad(ctx, &loc, "expected an array of strings");
    if (json_array_size(arr) > CFG_MAIL_MAX_STRINGS)
        return cfg_bad(ctx, &loc, "at most %d entries",
                       CFG_MAIL_MAX_STRINGS);
    v = calloc(json_array_size(arr) + 1, sizeof(*v));
    if (!v)
        return TF_ENOMEM;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *s = json_array_get(arr, i);
        cfg_loc_t el = CFG_ELEMENT(&loc, i);
        char show[CFG_SHOW_BUF];
        int r = CFG_OK;
        if (!json_is_string(s))
            r = cfg_bad(ctx, &el, "expected a string");
        else if (json_string_length(s) == 0 || json_string_length(s) > 1024)
            r = cfg_bad(ctx, &el, "must be 1 to 1024 bytes");
        else if (email && !tf_email_valid(json_string_value(s))) {
            cfg_show(show, json_string_value(s));
            r = cfg_bad(ctx, &el, "\"%s\" is not a plain email address "
                        "(local@domain)", show);
        }
        if (r < 0) {
            rc = r;
            goto out;
        }
        if (r != CFG_OK) {
            rc = CFG_BAD;
            continue;
        }
        if (!(v[n++] = strdup(json_string_value(s)))) {
            rc = TF_ENOMEM;
            goto out;
        }
    }
out:
    if (rc < 0) {
        cfg_strv_free(v, n);
        return rc;
    }
    *out = v;
    *nout = n;
    return rc;
}

static int cfg_strv_copy(const char *const *src, char ***out, size_t *nout)
{
    size_t n = 0;
    while (src[n])
        n++;
    char **v = calloc(n + 1, sizeof(*v));
    if (!v)
        return TF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!(v[i] = strdup(src[i]))) {
            cfg_strv_free(v, i);
            return TF_ENOMEM;
        }
    }
    *out = v;
    *nout = n;
    return 0;
}

/* A required-looking plain address at key; *out keeps def when absent. */
static int cfg_mail_address(cfg_ctx_t *ctx, const cfg_loc_t *up, json_t *obj,
                            const char *key, const char **out)
{
    cfg_loc_t loc = CFG_MEMBER(up, key);
    char show[CFG_SHOW_BUF];
    const char *s = NULL;
    int rc = cfg_str(ctx, up, obj, key, false, &s);
    if (rc != CFG_OK)
        return rc;
    if (!tf_email_valid(s)) {
        cfg_show(show, s);
        return cfg_bad(ctx, &loc, "\"%s\" is not a plain email address "
                       "(local@domain)", show);
    }
    *out = s;
    return CFG_OK;
}

static int cfg_mail_smtp(cfg_ctx_t *ctx, const cfg_loc_t *mloc, json_t *mobj,
                         tf_cfg_mail_t *m)
{
    const char *host = "localhost", *sec = "none", *user = NULL;
    const char *pwfile = NULL, *ca = NULL;
    cfg_loc_t loc = CFG_MEMBER(mloc, "smtp");
    uint32_t port = 0;
    int rc;
    json_t *o = cfg_section(ctx, mloc, mobj, "smtp", cfg_smtp_keys, &rc);
    if (rc < 0)
        return rc;
    if (o) {
        if ((rc = cfg_str(ctx, &loc, o, "host", false, &host)) < 0 ||
            (rc = cfg_u32(ctx, &loc, o, "port", 1, 65535, &port)) < 0 ||
            (rc = cfg_str(ctx, &loc, o, "security", false, &sec)) < 0 ||
            (rc = cfg_str(ctx, &loc, o, "username", false, &user)) < 0 ||
            (rc = cfg_str(ctx, &loc, o, "password_file", false, &pwfile)) <
                0 ||
            (rc = cfg_str(ctx, &loc, o, "ca_file", false, &ca)) < 0)
            return rc;
    }
    if (strcmp(sec, "none") == 0) {
        m->smtp_security = TF_MAIL_SEC_NONE;
    } else if (strcmp(sec, "starttls") == 0) {
        m->smtp_security = TF_MAIL_SEC_STARTTLS;
    } else if (strcmp(sec, "tls") == 0) {
        m->smtp_security = TF_MAIL_SEC_TLS;
    } else {
        char show[CFG_SHOW_BUF];
        cfg_loc_t sl = CFG_MEMBER(&loc, "security");
        cfg_show(show, sec);
        rc = cfg_bad(ctx, &sl, "unknown security \"%s\": use \"none\", "
                     "\"starttls\" or \"tls\"", show);
        if (rc < 0)
            return rc;
    }
    for (const char *p = host; *p; p++) {
        if ((unsigned char)*p <= 0x20 || strchr("/@?#", *p)) {
            cfg_loc_t hl = CFG_MEMBER(&loc, "host");
            rc = cfg_bad(ctx, &hl, "a host name or IP address, without "
                         "spaces, '/', '@', '?' or '#'");
            if (rc < 0)
                return rc;
            break;
        }
    }
    m->smtp_port = (uint16_t)(port ? port
                              : m->smtp_security == TF_MAIL_SEC_TLS ? 465
                              : m->smtp_security == TF_MAIL_SEC_STARTTLS ? 587
                                                                       : 25);
    if (!(m->smtp_host = strdup(host)))
        return TF_ENOMEM;
    if (user && !(m->smtp_username = strdup(user)))
        return TF_ENOMEM;
    if (user && !pwfile) {
        rc = cfg_bad(ctx, &loc, "\"username\" needs \"password_file\"");
        if (rc < 0)
            return rc;
    }
    if (pwfile) {
        cfg_loc_t pl = CFG_MEMBER(&loc, "password_file");
        rc = user ? cfg_secret_file(ctx, &pl, pwfile, &m->smtp_password)
                  : cfg_bad(ctx, &pl, "\"password_file\" needs \"username\"");
        if (rc < 0)
            return rc;
    }
    if (ca) {
        cfg_loc_t cl = CFG_MEMBER(&loc, "ca_file");
        if (!(m->smtp_ca_file = cfg_resolve(ctx->dir, ca)))
            return TF_ENOMEM;
        if (access(m->smtp_ca_file, R_OK) != 0) {
            char show[CFG_SHOW_BUF];
            cfg_show(show, m->smtp_ca_file);
            rc = cfg_bad(ctx, &cl, "cannot read \"%s\": %s", show,
                         strerror(errno));
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* Fills what a missing or partial "mail" section leaves at defaults. */
static int cfg_mail_defaults(tf_config_t *c)
{
    tf_cfg_mail_t *m = &c->mail;
    if (!m->from && !(m->from = strdup("testfarm@localhost")))
        return TF_ENOMEM;
    if (!m->from_name && !(m->from_name = strdup(c->name ? c->name : "")))
        return TF_ENOMEM;
    if (!m->subject_prefix) {
        size_t n = strlen(c->name ? c->name : "") + 3;
        if (!(m->subject_prefix = malloc(n)))
            return TF_ENOMEM;
        snprintf(m->subject_prefix, n, "[%s]", c->name ? c->name : "");
    }
    if (!m->smtp_host && !(m->smtp_host = strdup("localhost")))
        return TF_ENOMEM;
    if (!m->smtp_port)
        m->smtp_port = 25;
    if (!m->error_patterns)
        return cfg_strv_copy(cfg_mail_default_patterns, &m->error_patterns,
                             &m->npatterns);
    return 0;
}

static int cfg_mail(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                    tf_config_t *c)
{
    tf_cfg_mail_t *m = &c->mail;
    cfg_loc_t loc = CFG_MEMBER(root, "mail");
    const char *from = NULL, *from_name = NULL, *prefix = NULL;
    int rc;

    m->connect_timeout_s = 10;
    m->timeout_s = 60;
    m->retry_initial_s = 30;
    m->retry_max_s = 1800;
    m->retry_horizon_s = 172800;
    m->excerpt_max_bytes = 64 * 1024;
    m->message_max_bytes = 1024 * 1024;
    m->tail_lines = 30;
    m->try_jobs = true;
    json_t *o = cfg_section(ctx, root, top, "mail", cfg_mail_keys, &rc);
    if (rc < 0)
        return rc;
    if (!o)
        return cfg_mail_defaults(c);
    m->enabled = true;
    if ((rc = cfg_bool(ctx, &loc, o, "enabled", &m->enabled)) < 0 ||
        (rc = cfg_bool(ctx, &loc, o, "try_jobs", &m->try_jobs)) < 0)
        return rc;
    rc = cfg_mail_address(ctx, &loc, o, "from", &from);
    if (rc == CFG_ABSENT)
        rc = cfg_missing(ctx, &loc, "from");
    if (rc < 0)
        return rc;
    if ((from && !(m->from = strdup(from))))
        return TF_ENOMEM;
    if ((rc = cfg_str(ctx, &loc, o, "from_name", true, &from_name)) < 0 ||
        (rc = cfg_str(ctx, &loc, o, "subject_prefix", true, &prefix)) < 0)
        return rc;
    if ((from_name && !(m->from_name = strdup(from_name))) ||
        (prefix && !(m->subject_prefix = strdup(prefix))))
        return TF_ENOMEM;
    if ((rc = cfg_u32(ctx, &loc, o, "connect_timeout_s", 1, 600,
                      &m->connect_timeout_s)) < 0 ||
        (rc = cfg_u32(ctx, &loc, o, "timeout_s", 1, 3600, &m->timeout_s)) <
            0 ||
        (rc = cfg_u32(ctx, &loc, o, "retry_initial_s", 1, 86400,
                      &m->retry_initial_s)) < 0 ||
        (rc = cfg_u32(ctx, &loc, o, "retry_max_s", 1, 7 * 86400,
                      &m->retry_max_s)) < 0 ||
        (rc = cfg_u32(ctx, &loc, o, "retry_horizon_s", 1, 60 * 86400,
                      &m->retry_horizon_s)) < 0 ||
        (rc = cfg_u32(ctx, &loc, o, "excerpt_max_bytes", 1024,
                      16 * 1024 * 1024, &m->excerpt_max_bytes)) < 0 ||
        (rc = cfg_u32(ctx, &loc, o, "message_max_bytes", 16 * 1024,
                      64 * 1024 * 1024, &m->message_max_bytes)) < 0 ||
        (rc = cfg_u32(ctx, &loc, o, "tail_lines", 0, 1000, &m->tail_lines)) <
            0)
        return rc;
    if (m->retry_max_s < m->retry_initial_s) {
        cfg_loc_t l = CFG_MEMBER(&loc, "retry_max_s");
        rc = cfg_bad(ctx, &l, "must be at least retry_initial_s (%u)",
                     (unsigned)m->retry_initial_s);
        if (rc < 0)
            return rc;
    }
    rc = cfg_mail_strings(ctx, &loc, o, "error_patterns", false,
                          &m->error_patterns, &m->npatterns);
    if (rc < 0)
        return rc;
    if (json_object_get(o, "sendmail")) {
        cfg_loc_t sl = CFG_MEMBER(&loc, "sendmail");
        json_t *cmd = json_object_get(o, "sendmail");
        rc = json_object_get(o, "smtp")
                 ? cfg_bad(ctx, &sl, "give either \"smtp\" or \"sendmail\", "
                           "not both")
             : json_is_array(cmd)
                 ? cfg_argv_array(ctx, &sl, cmd, &m->sendmail, &m->nsendmail)
                 : cfg_bad(ctx, &sl, "expected the command as an array of "
                           "strings, e.g. [\"/usr/sbin/sendmail\", \"-oi\"]");
        if (rc < 0)
            return rc;
    }
    rc = cfg_mail_smtp(ctx, &loc, o, m);
    if (rc < 0)
        return rc;
    return cfg_mail_defaults(c);
}

static int cfg_builder_mail(cfg_ctx_t *ctx, const cfg_loc_t *bloc,
                            json_t *bobj, tf_cfg_builder_t *b)
{
    static const char *const modes[] = {"none", "failing", "problem",
                                        "change", "all"};
    cfg_loc_t loc = CFG_MEMBER(bloc, "mail");
    const char *mode = "none";
    int rc;
    json_t *o = cfg_section(ctx, bloc, bobj, "mail", cfg_builder_mail_keys,
                            &rc);
    if (rc < 0 || !o)
        return rc < 0 ? rc : 0;
    rc = cfg_str(ctx, &loc, o, "mode", false, &mode);
    if (rc < 0)
        return rc;
    bool known = false;
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (strcmp(mode, modes[i]) == 0) {
            b->mail.mode = (tf_mail_mode_t)i;
            known = true;
        }
    }
    if (!known) {
        char show[CFG_SHOW_BUF];
        cfg_loc_t ml = CFG_MEMBER(&loc, "mode");
        cfg_show(show, mode);
        rc = cfg_bad(ctx, &ml, "unknown mode \"%s\": use \"failing\", "
                     "\"problem\", \"change\", \"all\" or \"none\"", show);
        if (rc < 0)
            return rc;
    }
    rc = cfg_mail_strings(ctx, &loc, o, "extra_recipients", true,
                          &b->mail.extra_recipients, &b->mail.nextra);
    if (rc < 0)
        return rc;
    rc = cfg_mail_strings(ctx, &loc, o, "error_patterns", false,
                          &b->mail.error_patterns, &b->mail.npatterns);
    if (rc < 0)
        return rc;
    b->mail.has_patterns = rc == CFG_OK;
    return 0;
}

static void cfg_mail_clear(tf_cfg_mail_t *m)
{
    free(m->from);
    free(m->from_name);
    free(m->subject_prefix);
    free(m->smtp_host);
    free(m->smtp_username);
    if (m->smtp_password) {
        explicit_bzero(m->smtp_password, strlen(m->smtp_password));
        free(m->smtp_password);
    }
    free(m->smtp_ca_file);
    cfg_strv_free(m->sendmail, m->nsendmail);
    cfg_strv_free(m->error_patterns, m->npatterns);
}

static const char *const cfg_builder_keys[] = {
    "name", "slaves", "tags", "priority", "properties", "steps",
    "repository", "branch", "collapse_requests", "mail", NULL,
};

/* The builder's repository and branch. */
static int cfg_source(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                      tf_cfg_builder_t *b)
{
    const char *repo = NULL, *branch = "main";
    cfg_loc_t rl = CFG_MEMBER(loc, "repository");
    cfg_loc_t bl = CFG_MEMBER(loc, "branch");
    char show[CFG_SHOW_BUF];
    int rc = cfg_str(ctx, loc, obj, "repository", false, &repo);
    if (rc < 0)
        return rc;
    if (rc == CFG_OK) {
        if (!tf_repo_url_valid(repo)) {
            rc = cfg_bad(ctx, &rl, "a repository is a git URL or an "
                         "absolute path without spaces, at most 1024 bytes, "
                         "not starting with '-'");
            if (rc < 0)
                return rc;
            repo = NULL;
        }
    }
    rc = cfg_str(ctx, loc, obj, "branch", false, &branch);
    if (rc < 0)
        return rc;
    if (rc == CFG_OK && !tf_git_ref_valid(branch)) {
        cfg_show(show, branch);
        rc = cfg_bad(ctx, &bl, "invalid branch \"%s\": letters, digits, "
                     "'.', '_', '-' and '/', at most 200 bytes, no \"..\"",
                     show);
        if (rc < 0)
            return rc;
    }
    if (rc == CFG_OK && !repo && !json_object_get(obj, "repository")) {
        rc = cfg_bad(ctx, &bl, "\"branch\" needs a \"repository\"");
        if (rc < 0)
            return rc;
    }
    if (repo) {
        b->repository = strdup(repo);
        b->branch = strdup(branch);
        if (!b->repository || !b->branch)
            return TF_ENOMEM;
    }
    return 0;
}

static int cfg_steps(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                     tf_cfg_builder_t *b)
{
    json_t *arr = json_object_get(obj, "steps");
    cfg_loc_t sl = CFG_MEMBER(loc, "steps");
    const char **names = NULL;
    int rc = 0;

    if (!arr)
        return cfg_missing(ctx, loc, "steps");
    if (!json_is_array(arr))
        return cfg_bad(ctx, &sl, "expected an array of steps");
    size_t n = json_array_size(arr);
    if (n == 0)
        return cfg_bad(ctx, &sl, "a builder needs at least one step");
    if (n > TF_PROTO_MAX_STEPS)
        return cfg_bad(ctx, &sl, "too many steps (%zu; at most %d)", n,
                       TF_PROTO_MAX_STEPS);
    b->steps = calloc(n, sizeof(*b->steps));
    names = calloc(n, sizeof(*names));
    if (!b->steps || !names) {
        rc = TF_ENOMEM;
        goto out;
    }
    b->nsteps = n;
    for (size_t i = 0; i < n; i++) {
        cfg_loc_t el = CFG_ELEMENT(&sl, i);
        rc = cfg_step(ctx, &el, json_array_get(arr, i), &b->steps[i]);
        if (rc < 0)
            goto out;
        names[i] = b->steps[i].spec.name;
    }
    rc = cfg_dups(ctx, &sl, names, n, "step");
out:
    free(names);
    return rc;
}

static int cfg_strcmp_p(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reports every name in builder.slaves that is not a configured slave;
 * known is sorted. */
static int cfg_check_slave_refs(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                                json_t *obj, char *const *known,
                                size_t nknown)
{
    json_t *arr = json_object_get(obj, "slaves");
    cfg_loc_t sl = CFG_MEMBER(loc, "slaves");
    if (!json_is_array(arr))
        return 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const char *name = json_string_value(json_array_get(arr, i));
        cfg_loc_t el = CFG_ELEMENT(&sl, i);
        int rc = 0;
        if (!name || !tf_name_valid(name))
            continue; /* already reported */
        if (nknown && bsearch(&name, known, nknown, sizeof(*known),
                              cfg_strcmp_p))
            continue;
        const char *hint =
            cfg_suggest(name, (const char *const *)known, nknown);
        rc = hint ? cfg_bad(ctx, &el,
                            "no slave named \"%s\" in \"slaves\"; did you "
                            "mean \"%s\"?",
                            name, hint)
                  : cfg_bad(ctx, &el, "no slave named \"%s\" in \"slaves\"",
                            name);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static bool cfg_prop_name_valid(const char *s)
{
    return tf_name_valid(s);
}

static int cfg_builder(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                       tf_cfg_builder_t *b, char *const *slaves,
                       size_t nslaves)
{
    const char *name = NULL;
    long long prio = 0;
    int rc;

    if (!json_is_object(obj))
        return cfg_bad(ctx, loc, "expected an object");
    rc = cfg_check_keys(ctx, loc, obj, cfg_builder_keys);
    if (rc < 0)
        return rc;
    rc = cfg_name(ctx, loc, obj, &name);
    if (rc < 0)
        return rc;
    if (rc == CFG_OK && !(b->name = strdup(name)))
        return TF_ENOMEM;
    rc = cfg_names(ctx, loc, obj, "slaves", "slave", &b->slaves, &b->nslaves);
    if (rc < 0)
        return rc;
    rc = cfg_check_slave_refs(ctx, loc, obj, slaves, nslaves);
    if (rc < 0)
        return rc;
    rc = cfg_names(ctx, loc, obj, "tags", "tag", &b->tags, &b->ntags);
    if (rc < 0)
        return rc;
    rc = cfg_int(ctx, loc, obj, "priority", -1000, 1000, &prio);
    if (rc < 0)
        return rc;
    b->priority = (int)prio;
    rc = cfg_kv(ctx, loc, obj, "properties", cfg_prop_name_valid,
                "property", CFG_NAME_RULE,
                &b->props, &b->nprops);
    if (rc < 0)
        return rc;
    rc = cfg_source(ctx, loc, obj, b);
    if (rc < 0)
        return rc;
    b->collapse_requests = true;
    rc = cfg_bool(ctx, loc, obj, "collapse_requests", &b->collapse_requests);
    if (rc < 0)
        return rc;
    rc = cfg_builder_mail(ctx, loc, obj, b);
    if (rc < 0)
        return rc;
    rc = cfg_steps(ctx, loc, obj, b);
    return rc < 0 ? rc : 0;
}

/* The names of the slaves that have one, sorted, borrowed from c. */
static int cfg_slave_names(const tf_config_t *c, char ***out, size_t *nout)
{
    size_t n = 0;
    *out = NULL;
    *nout = 0;
    if (c->nslaves == 0)
        return 0;
    char **v = calloc(c->nslaves, sizeof(*v));
    if (!v)
        return TF_ENOMEM;
    for (size_t i = 0; i < c->nslaves; i++)
        if (c->slaves[i].name)
            v[n++] = c->slaves[i].name;
    qsort(v, n, sizeof(*v), cfg_strcmp_p);
    *out = v;
    *nout = n;
    return 0;
}

/* The top-level "slaves" or "builders" array: allocates *items (count
 * elements of size sz) and returns the array, or NULL when absent or bad. */
static int cfg_list(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *obj,
                    const char *key, size_t sz, void **items, size_t *count,
                    json_t **arr_out)
{
    json_t *arr = json_object_get(obj, key);
    cfg_loc_t loc = CFG_MEMBER(root, key);
    *arr_out = NULL;
    if (!arr)
        return CFG_ABSENT;
    if (!json_is_array(arr))
        return cfg_bad(ctx, &loc, "expected an array of objects");
    if (json_array_size(arr) == 0)
        return CFG_OK;
    *items = calloc(json_array_size(arr), sz);
    if (!*items)
        return TF_ENOMEM;
    *count = json_array_size(arr);
    *arr_out = arr;
    return CFG_OK;
}

static int cfg_slaves(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                      tf_config_t *c)
{
    json_t *arr;
    void *items = NULL;
    const char **names = NULL;
    cfg_loc_t sl = CFG_MEMBER(root, "slaves");
    int rc = cfg_list(ctx, root, top, "slaves", sizeof(*c->slaves), &items,
                      &c->nslaves, &arr);
    c->slaves = items;
    if (rc < 0 || !arr)
        return rc < 0 ? rc : 0;
    for (size_t i = 0; i < c->nslaves; i++) {
        cfg_loc_t el = CFG_ELEMENT(&sl, i);
        rc = cfg_slave(ctx, &el, json_array_get(arr, i), &c->slaves[i]);
        if (rc < 0)
            return rc;
    }
    names = calloc(c->nslaves, sizeof(*names));
    if (!names)
        return TF_ENOMEM;
    for (size_t i = 0; i < c->nslaves; i++)
        names[i] = c->slaves[i].name;
    rc = cfg_dups(ctx, &sl, names, c->nslaves, "slave");
    free(names);
    return rc;
}

static int cfg_builders(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                        tf_config_t *c)
{
    json_t *arr;
    void *items = NULL;
    const char **names = NULL;
    char **slaves = NULL;
    size_t nslaves = 0;
    cfg_loc_t bl = CFG_MEMBER(root, "builders");
    int rc = cfg_list(ctx, root, top, "builders", sizeof(*c->builders),
                      &items, &c->nbuilders, &arr);
    c->builders = items;
    if (rc < 0 || !arr)
        return rc < 0 ? rc : 0;
    rc = cfg_slave_names(c, &slaves, &nslaves);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < c->nbuilders; i++) {
        cfg_loc_t el = CFG_ELEMENT(&bl, i);
        rc = cfg_builder(ctx, &el, json_array_get(arr, i), &c->builders[i],
                         slaves, nslaves);
        if (rc < 0)
            goto out;
    }
    names = calloc(c->nbuilders, sizeof(*names));
    if (!names) {
        rc = TF_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < c->nbuilders; i++)
        names[i] = c->builders[i].name;
    rc = cfg_dups(ctx, &bl, names, c->nbuilders, "builder");
out:
    free(names);
    free(slaves);
    return rc;
}

/* ------------------------------------------------------------------ */
/* The top level                                                       */
/* ------------------------------------------------------------------ */

static const char *const cfg_top_keys[] = {
    "name", "listen", "url", "database", "web_root", "heartbeat_s",
    "lost_after_s", "build_lost_after_s", "max_retries", "slaves",
    "builders", "try", "scheduler", "schedulers", "pollers",
    "poll_interval_s", "testing", "mail", NULL,
};

static const char *const cfg_try_keys[] = {"max_patch_bytes", "max_builders",
                                           NULL};
static const char *const cfg_sched_keys[] = {"fair_share", NULL};

/* A sub-object of the top level; NULL (and reported) when not an object. */
static json_t *cfg_section(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                           const char *key, const char *const *keys, int *rc)
{
    json_t *obj = json_object_get(top, key);
    cfg_loc_t loc = CFG_MEMBER(root, key);
    *rc = 0;
    if (!obj)
        return NULL;
    if (!json_is_object(obj)) {
        *rc = cfg_bad(ctx, &loc, "expected an object");
        return NULL;
    }
    *rc = cfg_check_keys(ctx, &loc, obj, keys);
    return obj;
}

static int cfg_try(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                   tf_config_t *c)
{
    int rc;
    long long x = 0;
    c->try_max_patch_bytes = 50ull * 1024 * 1024;
    c->try_max_builders = 50;
    c->fair_share = true;
    json_t *t = cfg_section(ctx, root, top, "try", cfg_try_keys, &rc);
    if (rc < 0)
        return rc;
    if (t) {
        cfg_loc_t loc = CFG_MEMBER(root, "try");
        rc = cfg_int(ctx, &loc, t, "max_patch_bytes", 1, 1024ll * 1024 * 1024,
                     &x);
        if (rc < 0)
            return rc;
        if (rc == CFG_OK)
            c->try_max_patch_bytes = (uint64_t)x;
        rc = cfg_u32(ctx, &loc, t, "max_builders", 1, 50,
                     &c->try_max_builders);
        if (rc < 0)
            return rc;
    }
    json_t *sc = cfg_section(ctx, root, top, "scheduler", cfg_sched_keys, &rc);
    if (rc < 0)
        return rc;
    if (sc) {
        cfg_loc_t loc = CFG_MEMBER(root, "scheduler");
        rc = cfg_bool(ctx, &loc, sc, "fair_share", &c->fair_share);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static const char *const cfg_listen_keys[] = {"host", "port", NULL};

static int cfg_listen(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                      tf_config_t *c)
{
    json_t *obj = json_object_get(top, "listen");
    cfg_loc_t loc = CFG_MEMBER(root, "listen");
    const char *host = "127.0.0.1";
    uint32_t port = 8010;
    int rc;

    if (obj && !json_is_object(obj)) {
        rc = cfg_bad(ctx, &loc, "expected an object");
        if (rc < 0)
            return rc;
        obj = NULL;
    }
    if (obj) {
        rc = cfg_check_keys(ctx, &loc, obj, cfg_listen_keys);
        if (rc < 0)
            return rc;
        rc = cfg_str(ctx, &loc, obj, "host", false, &host);
        if (rc < 0)
            return rc;
        rc = cfg_u32(ctx, &loc, obj, "port", 1, 65535, &port);
        if (rc < 0)
            return rc;
    }
    c->listen_port = (uint16_t)port;
    c->listen_host = strdup(host);
    return c->listen_host ? 0 : TF_ENOMEM;
}

static int cfg_url(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                   tf_config_t *c)
{
    const char *url = NULL;
    cfg_loc_t loc = CFG_MEMBER(root, "url");
    tf_buf_t b;
    int rc = cfg_str(ctx, root, top, "url", false, &url);

    if (rc < 0)
        return rc;
    tf_buf_init(&b, 0);
    if (rc == CFG_OK) {
        size_t skip = strncasecmp(url, "http://", 7) == 0    ? 7
                      : strncasecmp(url, "https://", 8) == 0 ? 8
                                                             : 0;
        bool clean = true;
        for (const unsigned char *p = (const unsigned char *)url; *p; p++)
            clean = clean && *p > 0x20 && *p != 0x7f;
        if (skip == 0 || url[skip] == '\0' || url[skip] == '/')
            rc = cfg_bad(ctx, &loc,
                         "must start with http:// or https:// and a host");
        else if (!clean)
            rc = cfg_bad(ctx, &loc,
                         "must not contain spaces or control characters");
        else
            rc = tf_buf_printf(&b, "%s%s", url,
                               url[strlen(url) - 1] == '/' ? "" : "/");
    } else {
        /* An IPv6 literal needs brackets in a URL. */
        bool v6 = strchr(c->listen_host, ':') != NULL;
        rc = tf_buf_printf(&b, "http://%s%s%s:%u/", v6 ? "[" : "",
                           c->listen_host, v6 ? "]" : "",
                           (unsigned)c->listen_port);
    }
    if (rc < 0) {
        tf_buf_free(&b);
        return TF_ENOMEM;
    }
    if (rc == CFG_BAD)
        return 0;
    c->public_url = cfg_buf_str(&b);
    return c->public_url ? 0 : TF_ENOMEM;
}

/* A path setting; absent leaves *out as def (resolved, or NULL). */
static int cfg_path(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                    const char *key, const char *def, char **out)
{
    const char *p = def;
    int rc = cfg_str(ctx, root, top, key, false, &p);
    if (rc < 0)
        return rc;
    if (!p || rc == CFG_BAD)
        return 0;
    *out = cfg_resolve(ctx->dir, p);
    return *out ? 0 : TF_ENOMEM;
}

static int cfg_timers(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                      tf_config_t *c)
{
    int hb, lost, rc;
    c->heartbeat_s = 10;
    c->lost_after_s = 30;
    c->build_lost_after_s = 600;
    c->max_retries = 3;
    hb = cfg_u32(ctx, root, top, "heartbeat_s", 1, 3600, &c->heartbeat_s);
    if (hb < 0)
        return hb;
    lost = cfg_u32(ctx, root, top, "lost_after_s", 1, CFG_NOMAX,
                   &c->lost_after_s);
    if (lost < 0)
        return lost;
    rc = cfg_u32(ctx, root, top, "build_lost_after_s", 1, CFG_NOMAX,
                 &c->build_lost_after_s);
    if (rc < 0)
        return rc;
    rc = cfg_u32(ctx, root, top, "max_retries", 0, 100, &c->max_retries);
    if (rc < 0)
        return rc;
    if (hb == CFG_BAD || lost == CFG_BAD || c->lost_after_s > c->heartbeat_s)
        return 0;
    if (lost == CFG_OK) {
        cfg_loc_t l = CFG_MEMBER(root, "lost_after_s");
        rc = cfg_bad(ctx, &l, "must be greater than heartbeat_s (%u)",
                     (unsigned)c->heartbeat_s);
    } else {
        cfg_loc_t l = CFG_MEMBER(root, "heartbeat_s");
        rc = cfg_bad(ctx, &l,
                     "must be less than lost_after_s (%u, the default)",
                     (unsigned)c->lost_after_s);
    }
    return rc < 0 ? rc : 0;
}

/* ------------------------------------------------------------------ */
/* Continuous builds: pollers, schedulers, the test clock              */
/* ------------------------------------------------------------------ */

#define CFG_REPO_RULE                                                          \
    "a repository is a git URL or an absolute path without spaces, at most "   \
    "1024 bytes, not starting with '-'"
#define CFG_PATH_MAX 1024

static const char *const cfg_change_sched_keys[] = {
    "name", "type", "builders", "repository", "branch", "tree_stable_s",
    "paths", NULL,
};
static const char *const cfg_periodic_sched_keys[] = {
    "name", "type", "builders", "repository", "branch", "cron",
    "only_if_changed", NULL,
};
static const char *const cfg_poller_keys[] = {"repository", "branch",
                                              "interval_s", NULL};
static const char *const cfg_testing_keys[] = {"clock", NULL};

/* Optional "repository" and "branch" members, validated as a builder's;
 * a bad one is reported and left NULL. */
static int cfg_repo_branch(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                           const char **repo, const char **branch)
{
    cfg_loc_t rl = CFG_MEMBER(loc, "repository");
    cfg_loc_t bl = CFG_MEMBER(loc, "branch");
    char show[CFG_SHOW_BUF];
    int rc = cfg_str(ctx, loc, obj, "repository", false, repo);
    if (rc < 0)
        return rc;
    if (rc == CFG_OK && !tf_repo_url_valid(*repo)) {
        *repo = NULL;
        if ((rc = cfg_bad(ctx, &rl, CFG_REPO_RULE)) < 0)
            return rc;
    }
    rc = cfg_str(ctx, loc, obj, "branch", false, branch);
    if (rc < 0)
        return rc;
    if (rc == CFG_OK && !tf_git_ref_valid(*branch)) {
        cfg_show(show, *branch);
        *branch = NULL;
        rc = cfg_bad(ctx, &bl, "invalid branch \"%s\": letters, digits, "
                     "'.', '_', '-' and '/', at most 200 bytes, no \"..\"",
                     show);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* An optional array of path filters: non-empty strings without control
 * characters, at most CFG_PATH_MAX bytes each. */
static int cfg_paths(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                     char ***out, size_t *nout)
{
    json_t *arr = json_object_get(obj, "paths");
    cfg_loc_t pl = CFG_MEMBER(loc, "paths");
    if (!arr)
        return 0;
    if (!json_is_array(arr))
        return cfg_bad(ctx, &pl, "expected an array of path prefixes or "
                       "globs");
    size_t n = json_array_size(arr);
    if (n == 0)
        return 0;
    char **v = calloc(n, sizeof(*v));
    if (!v)
        return TF_ENOMEM;
    *out = v;
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_array_get(arr, i);
        cfg_loc_t el = CFG_ELEMENT(&pl, i);
        const char *s = json_string_value(p);
        bool clean = s && *s && json_string_length(p) <= CFG_PATH_MAX &&
                     strlen(s) == json_string_length(p);
        for (const unsigned char *u = (const unsigned char *)s; clean && *u;
             u++)
            clean = *u >= 0x20 && *u != 0x7f;
        if (!clean) {
            int rc = cfg_bad(ctx, &el, "expected a path prefix or glob: a "
                             "non-empty string of at most %d bytes without "
                             "control characters", CFG_PATH_MAX);
            if (rc < 0)
                return rc;
            continue;
        }
        if (!(v[(*nout)++] = strdup(s)))
            return TF_ENOMEM;
    }
    return 0;
}

/* Reports each name in s->builders that is not a configured builder. */
static int cfg_sched_builder_refs(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                                  const tf_config_t *c,
                                  const tf_cfg_scheduler_t *s)
{
    cfg_loc_t bl = CFG_MEMBER(loc, "builders");
    const char **known = calloc(c->nbuilders + 1, sizeof(*known));
    int rc = 0;
    if (!known)
        return TF_ENOMEM;
    for (size_t i = 0; i < c->nbuilders; i++)
        known[i] = c->builders[i].name;
    for (size_t i = 0; i < s->nbuilders && rc >= 0; i++) {
        if (tf_config_builder(c, s->builders[i]))
            continue;
        cfg_loc_t el = CFG_ELEMENT(&bl, i);
        const char *hint = cfg_suggest(s->builders[i], known, c->nbuilders);
        rc = hint ? cfg_bad(ctx, &el, "no builder named \"%s\"; did you mean "
                            "\"%s\"?", s->builders[i], hint)
                  : cfg_bad(ctx, &el, "no builder named \"%s\"",
                            s->builders[i]);
    }
    free(known);
    return rc < 0 ? rc : 0;
}

/* The repository and branch a scheduler watches when it does not say:
 * its builders' own, which must then agree. With only "branch" given, the
 * builders' repository on that branch; with only "repository", the branch
 * of a builder on it, else "main". Returns 0, CFG_BAD when reported, or
 * TF_ENOMEM. */
static int cfg_sched_source(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                            const tf_config_t *c, const tf_cfg_scheduler_t *s,
                            const char **repo, const char **branch)
{
    const char *r = NULL, *b = NULL;
    for (size_t i = 0; i < s->nbuilders; i++) {
        const tf_cfg_builder_t *cb = tf_config_builder(c, s->builders[i]);
        if (!cb || !cb->repository)
            continue;
        if (*repo) {
            if (!*branch && strcmp(cb->repository, *repo) == 0)
                *branch = cb->branch;
            continue;
        }
        if (!r) {
            r = cb->repository;
            b = cb->branch;
        } else if (strcmp(r, cb->repository) != 0 ||
                   (!*branch && strcmp(b, cb->branch) != 0)) {
            int rc = cfg_bad(ctx, loc, "its builders check out different "
                             "repositories or branches; give \"repository\" "
                             "and \"branch\" to say which one it watches");
            return rc < 0 ? rc : CFG_BAD;
        }
    }
    if (!*repo)
        *repo = r;
    if (*repo && !*branch)
        *branch = b ? b : "main";
    return 0;
}

static int cfg_scheduler(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                         const tf_config_t *c, tf_cfg_scheduler_t *s)
{
    const char *name = NULL, *type = NULL, *repo = NULL, *branch = NULL;
    const char *cron = NULL;
    cfg_loc_t tl = CFG_MEMBER(loc, "type");
    long long t = 15;
    int rc;

    if (!json_is_object(obj))
        return cfg_bad(ctx, loc, "expected an object");
    rc = cfg_name(ctx, loc, obj, &name);
    if (rc < 0)
        return rc;
    if (rc == CFG_OK && !(s->name = strdup(name)))
        return TF_ENOMEM;
    rc = cfg_str(ctx, loc, obj, "type", false, &type);
    if (rc == CFG_ABSENT)
        rc = cfg_missing(ctx, loc, "type");
    else if (rc == CFG_OK && strcmp(type, "change") == 0)
        s->type = TF_CFG_SCHED_CHANGE;
    else if (rc == CFG_OK && strcmp(type, "periodic") == 0)
        s->type = TF_CFG_SCHED_PERIODIC;
    else if (rc == CFG_OK)
        rc = cfg_bad(ctx, &tl, "expected \"change\" or \"periodic\"");
    if (rc != CFG_OK)
        return rc < 0 ? rc : 0;
    bool change = s->type == TF_CFG_SCHED_CHANGE;
    rc = cfg_check_keys(ctx, loc, obj,
                        change ? cfg_change_sched_keys
                               : cfg_periodic_sched_keys);
    if (rc < 0)
        return rc;
    rc = cfg_names(ctx, loc, obj, "builders", "builder", &s->builders,
                   &s->nbuilders);
    if (rc == CFG_ABSENT)
        rc = cfg_missing(ctx, loc, "builders");
    else if (rc == CFG_OK && s->nbuilders == 0) {
        cfg_loc_t bl = CFG_MEMBER(loc, "builders");
        rc = cfg_bad(ctx, &bl, "a scheduler needs at least one builder");
    }
    if (rc < 0)
        return rc;
    if ((rc = cfg_sched_builder_refs(ctx, loc, c, s)) < 0)
        return rc;
    if ((rc = cfg_repo_branch(ctx, loc, obj, &repo, &branch)) < 0)
        return rc;
    bool repo_given = json_object_get(obj, "repository") != NULL;
    bool branch_given = json_object_get(obj, "branch") != NULL;
    if ((repo_given && !repo) || (branch_given && !branch))
        return 0; /* reported */
    rc = cfg_sched_source(ctx, loc, c, s, &repo, &branch);
    if (rc)
        return rc < 0 ? rc : 0;
    if (change && !repo) {
        rc = cfg_bad(ctx, loc, "a change scheduler needs a repository: give "
                     "\"repository\" or list builders that have one");
        return rc < 0 ? rc : 0;
    }
    if (repo && (!(s->repository = strdup(repo)) ||
                 !(s->branch = strdup(branch))))
        return TF_ENOMEM;
    if (change) {
        rc = cfg_int(ctx, loc, obj, "tree_stable_s", 0, 86400, &t);
        if (rc < 0)
            return rc;
        s->tree_stable_s = (uint32_t)t;
        return cfg_paths(ctx, loc, obj, &s->paths, &s->npaths);
    }
    rc = cfg_str(ctx, loc, obj, "cron", false, &cron);
    if (rc == CFG_ABSENT)
        rc = cfg_missing(ctx, loc, "cron");
    if (rc < 0)
        return rc;
    if (rc == CFG_OK) {
        char err[160];
        tf_cron_t parsed;
        cfg_loc_t cl = CFG_MEMBER(loc, "cron");
        if (tf_cron_parse(cron, &parsed, err, sizeof(err)) != 0)
            rc = cfg_bad(ctx, &cl, "%s", err);
        else if (tf_cron_next(&parsed, 0) < 0)
            rc = cfg_bad(ctx, &cl, "\"%s\" never fires (no such date)",
                         cron);
        else if (!(s->cron = strdup(cron)))
            rc = TF_ENOMEM;
        if (rc < 0)
            return rc;
    }
    s->only_if_changed = s->repository != NULL;
    rc = cfg_bool(ctx, loc, obj, "only_if_changed", &s->only_if_changed);
    if (rc < 0)
        return rc;
    if (rc == CFG_OK && s->only_if_changed && !s->repository) {
        cfg_loc_t ol = CFG_MEMBER(loc, "only_if_changed");
        rc = cfg_bad(ctx, &ol, "needs a repository to watch: give "
                     "\"repository\" or list builders that have one");
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int cfg_poller(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                      uint32_t interval_s, tf_cfg_poller_t *p)
{
    const char *repo = NULL, *branch = NULL;
    int rc;
    if (!json_is_object(obj))
        return cfg_bad(ctx, loc, "expected an object");
    if ((rc = cfg_check_keys(ctx, loc, obj, cfg_poller_keys)) < 0)
        return rc;
    if ((rc = cfg_repo_branch(ctx, loc, obj, &repo, &branch)) < 0)
        return rc;
    if (!json_object_get(obj, "repository"))
        return cfg_missing(ctx, loc, "repository");
    p->interval_s = interval_s;
    rc = cfg_u32(ctx, loc, obj, "interval_s", 1, 86400, &p->interval_s);
    if (rc < 0)
        return rc;
    if (!repo)
        return 0; /* reported */
    p->repository = strdup(repo);
    p->branch = strdup(branch ? branch : "main");
    return p->repository && p->branch ? 0 : TF_ENOMEM;
}

/* Reports a second poller of the same repository and branch. */
static int cfg_poller_dups(cfg_ctx_t *ctx, const cfg_loc_t *root,
                           const tf_config_t *c)
{
    cfg_loc_t pl = CFG_MEMBER(root, "pollers");
    for (size_t i = 0; i < c->npollers; i++) {
        const tf_cfg_poller_t *p = &c->pollers[i];
        for (size_t k = 0; p->repository && k < i; k++) {
            const tf_cfg_poller_t *q = &c->pollers[k];
            if (!q->repository || strcmp(p->repository, q->repository) != 0 ||
                strcmp(p->branch, q->branch) != 0)
                continue;
            cfg_loc_t el = CFG_ELEMENT(&pl, i);
            int rc = cfg_bad(ctx, &el, "duplicate poller of branch \"%s\" "
                             "(first in pollers[%zu])", p->branch, k);
            if (rc < 0)
                return rc;
            break;
        }
    }
    return 0;
}

/* poll_interval_s, pollers, schedulers and testing; after builders. */
static int cfg_continuous(cfg_ctx_t *ctx, const cfg_loc_t *root, json_t *top,
                          tf_config_t *c)
{
    json_t *arr;
    void *items = NULL;
    int rc;
    c->poll_interval_s = 60;
    rc = cfg_u32(ctx, root, top, "poll_interval_s", 1, 86400,
                 &c->poll_interval_s);
    if (rc < 0)
        return rc;
    json_t *t = cfg_section(ctx, root, top, "testing", cfg_testing_keys, &rc);
    if (rc < 0)
        return rc;
    if (t) {
        cfg_loc_t tl = CFG_MEMBER(root, "testing");
        if ((rc = cfg_bool(ctx, &tl, t, "clock", &c->testing_clock)) < 0)
            return rc;
    }
    rc = cfg_list(ctx, root, top, "pollers", sizeof(*c->pollers), &items,
                  &c->npollers, &arr);
    c->pollers = items;
    if (rc < 0)
        return rc;
    cfg_loc_t pl = CFG_MEMBER(root, "pollers");
    for (size_t i = 0; arr && i < c->npollers; i++) {
        cfg_loc_t el = CFG_ELEMENT(&pl, i);
        rc = cfg_poller(ctx, &el, json_array_get(arr, i), c->poll_interval_s,
                        &c->pollers[i]);
        if (rc < 0)
            return rc;
    }
    if ((rc = cfg_poller_dups(ctx, root, c)) < 0)
        return rc;
    items = NULL;
    rc = cfg_list(ctx, root, top, "schedulers", sizeof(*c->schedulers),
                  &items, &c->nschedulers, &arr);
    c->schedulers = items;
    if (rc < 0 || !arr)
        return rc < 0 ? rc : 0;
    cfg_loc_t sl = CFG_MEMBER(root, "schedulers");
    const char **names = calloc(c->nschedulers, sizeof(*names));
    if (!names)
        return TF_ENOMEM;
    for (size_t i = 0; i < c->nschedulers; i++) {
        cfg_loc_t el = CFG_ELEMENT(&sl, i);
        rc = cfg_scheduler(ctx, &el, json_array_get(arr, i), c,
                           &c->schedulers[i]);
        if (rc < 0)
            break;
        names[i] = c->schedulers[i].name;
    }
    if (rc >= 0)
        rc = cfg_dups(ctx, &sl, names, c->nschedulers, "scheduler");
    free(names);
    return rc < 0 ? rc : 0;
}

static int cfg_top(cfg_ctx_t *ctx, json_t *top, tf_config_t *c)
{
    const cfg_loc_t root = {0};
    const char *name = "TestFarm";
    int rc;

    if (!json_is_object(top)) {
        rc = cfg_bad(ctx, &root, "the configuration must be a JSON object");
        return rc < 0 ? rc : 0;
    }
    rc = cfg_check_keys(ctx, &root, top, cfg_top_keys);
    if (rc < 0)
        return rc;
    rc = cfg_str(ctx, &root, top, "name", false, &name);
    if (rc < 0)
        return rc;
    if (!(c->name = strdup(name)))
        return TF_ENOMEM;
    rc = cfg_listen(ctx, &root, top, c);
    if (rc < 0)
        return rc;
    rc = cfg_url(ctx, &root, top, c);
    if (rc < 0)
        return rc;
    rc = cfg_path(ctx, &root, top, "database", "state.sqlite", &c->database);
    if (rc < 0)
        return rc;
    rc = cfg_path(ctx, &root, top, "web_root", NULL, &c->web_root);
    if (rc < 0)
        return rc;
    rc = cfg_timers(ctx, &root, top, c);
    if (rc < 0)
        return rc;
    rc = cfg_try(ctx, &root, top, c);
    if (rc < 0)
        return rc;
    rc = cfg_slaves(ctx, &root, top, c);
    if (rc < 0)
        return rc;
    rc = cfg_builders(ctx, &root, top, c);
    if (rc < 0)
        return rc;
    rc = cfg_mail(ctx, &root, top, c);
    if (rc < 0)
        return rc;
    return cfg_continuous(ctx, &root, top, c);
}

/* ------------------------------------------------------------------ */
/* Loading                                                             */
/* ------------------------------------------------------------------ */

/* Line and byte column of text[off]. */
static void cfg_line_col(const char *text, size_t off, int *line, int *col)
{
    int l = 1;
    size_t start = 0;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') {
            l++;
            start = i + 1;
        }
    }
    *line = l;
    *col = (int)(off - start + 1);
}

/* Turns jansson's error into a diagnostic. jansson points a duplicate key
 * error just past the key's closing quote; the key itself is found by
 * walking back to its opening quote (a quote inside a key is always
 * escaped, so the first quote preceded by an even run of backslashes is
 * the opening one), so the diagnostic points at the key as others do. */
static int cfg_json_error(cfg_ctx_t *ctx, const char *text, size_t len,
                          const json_error_t *err)
{
    int line = err->line > 0 ? err->line : 0;
    int col = err->column > 0 ? err->column : 0;
    size_t end = err->position > 0 ? (size_t)err->position : 0;

    if (json_error_code(err) == json_error_duplicate_key && end >= 2 &&
        end <= len && text[end - 1] == '"') {
        size_t q = end - 1;
        while (q > 0) {
            q--;
            size_t bs = 0;
            while (bs < q && text[q - 1 - bs] == '\\')
                bs++;
            if (text[q] == '"' && bs % 2 == 0)
                break;
        }
        if (text[q] == '"') {
            char *raw = strndup(text + q + 1, end - q - 2);
            char show[CFG_SHOW_BUF];
            if (!raw)
                return TF_ENOMEM;
            cfg_show(show, raw);
            free(raw);
            cfg_line_col(text, q, &line, &col);
            tf_buf_t m;
            tf_buf_init(&m, 0);
            if (tf_buf_printf(&m, "duplicate key \"%s\"", show) < 0) {
                tf_buf_free(&m);
                return TF_ENOMEM;
            }
            return cfg_diag_raw(ctx->diags, ctx->file, line, col,
                                strdup(""), cfg_buf_str(&m));
        }
    }
    return cfg_diag_raw(ctx->diags, ctx->file, line, col, strdup(""),
                        strdup(err->text));
}

typedef struct cfg_sorted {
    tf_cfg_diag_t d;
    size_t seq;
} cfg_sorted_t;

static int cfg_sorted_cmp(const void *a, const void *b)
{
    const cfg_sorted_t *x = a, *y = b;
    if (x->d.line != y->d.line)
        return x->d.line < y->d.line ? -1 : 1;
    if (x->d.col != y->d.col)
        return x->d.col < y->d.col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Puts diagnostics in file order, keeping the validator's order for equal
 * positions. Sorting is a nicety: without memory for it the order stays. */
static void cfg_diags_sort(tf_cfg_diags_t *d)
{
    if (d->count < 2)
        return;
    cfg_sorted_t *v = calloc(d->count, sizeof(*v));
    if (!v)
        return;
    for (size_t i = 0; i < d->count; i++)
        v[i] = (cfg_sorted_t){d->items[i], i};
    qsort(v, d->count, sizeof(*v), cfg_sorted_cmp);
    for (size_t i = 0; i < d->count; i++)
        d->items[i] = v[i].d;
    free(v);
}

int tf_config_load_text(const char *path, const char *text, size_t len,
                        tf_config_t **out, tf_cfg_diags_t *diags)
{
    tf_cfg_diags_t local = {0};
    cfg_ctx_t ctx = {.file = path, .diags = diags ? diags : &local};
    tf_config_t *c = NULL;
    json_t *top = NULL;
    json_error_t jerr;
    int rc;

    if (out)
        *out = NULL;
    if (!path || !text || !out)
        return TF_EINVAL;
    tf_cfg_diags_clear(ctx.diags);
    if (len > CFG_MAX_FILE) {
        rc = cfg_diag_raw(ctx.diags, path, 0, 0, strdup(""),
                          strdup("the file is larger than 16 MiB"));
        if (rc == 0)
            rc = TF_ECONFIG;
        goto out;
    }

    top = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!top) {
        /* jansson leaves the error empty when its first allocation
         * fails. */
        if (json_error_code(&jerr) == json_error_out_of_memory ||
            jerr.text[0] == '\0') {
            rc = TF_ENOMEM;
            goto out;
        }
        rc = cfg_json_error(&ctx, text, len, &jerr);
        if (rc == 0)
            rc = TF_ECONFIG;
        goto out;
    }
    /* jansson accepted the text, so indexing can only run out of memory;
     * should it fail otherwise, diagnostics merely lose their positions. */
    rc = tf_jsonpos_index(text, len, &ctx.pos);
    if (rc == TF_ENOMEM)
        goto out;

    c = calloc(1, sizeof(*c));
    if (!c || !(c->path = strdup(path))) {
        rc = TF_ENOMEM;
        goto out;
    }
    rc = cfg_dir_of(path, &c->dir);
    if (rc == TF_ENOMEM)
        goto out;
    if (rc < 0) {
        rc = cfg_diag_raw(ctx.diags, path, 0, 0, strdup(""),
                          cfg_fmt("cannot find the directory of the "
                                  "file: %s",
                                  tf_strerror(rc)));
        if (rc == 0)
            rc = TF_ECONFIG;
        goto out;
    }
    ctx.dir = c->dir;
    rc = cfg_top(&ctx, top, c);
    if (rc < 0)
        goto out;
    if (ctx.diags->count > 0) {
        rc = TF_ECONFIG;
        goto out;
    }
    *out = c;
    c = NULL;
    rc = 0;
out:
    if (rc == TF_ECONFIG)
        cfg_diags_sort(ctx.diags);
    tf_config_free(c);
    json_decref(top);
    tf_jsonpos_free(ctx.pos);
    tf_cfg_diags_clear(&local);
    return rc;
}

int tf_config_load(const char *path, tf_config_t **out, tf_cfg_diags_t *diags)
{
    tf_cfg_diags_t local = {0};
    tf_cfg_diags_t *d = diags ? diags : &local;
    char *text = NULL;
    size_t len = 0;
    int rc;

    if (out)
        *out = NULL;
    if (!path || !out)
        return TF_EINVAL;
    rc = tf_read_file(path, CFG_MAX_FILE, &text, &len);
    if (rc == TF_ENOMEM || rc == -ENOMEM)
        goto out;
    if (rc < 0) {
        tf_cfg_diags_clear(d);
        rc = cfg_diag_raw(
            d, path, 0, 0, strdup(""),
            rc == TF_E2BIG
                ? strdup("the file is larger than 16 MiB")
                : cfg_fmt("cannot read the file: %s", tf_strerror(rc)));
        if (rc == 0)
            rc = TF_ECONFIG;
        goto out;
    }
    rc = tf_config_load_text(path, text, len, out, d);
out:
    free(text);
    tf_cfg_diags_clear(&local);
    return rc == -ENOMEM ? TF_ENOMEM : rc;
}

char *tf_cfg_diag_format(const tf_cfg_diag_t *d)
{
    tf_buf_t b;
    int rc;
    if (!d)
        return NULL;
    tf_buf_init(&b, 0);
    rc = tf_buf_append_str(&b, d->file ? d->file : "");
    if (rc == 0 && d->line > 0)
        rc = tf_buf_printf(&b, ":%d:%d", d->line, d->col);
    if (rc == 0)
        rc = tf_buf_append_str(&b, ": error: ");
    if (rc == 0 && d->key && d->key[0])
        rc = tf_buf_printf(&b, "%s: ", d->key);
    if (rc == 0)
        rc = tf_buf_append_str(&b, d->message ? d->message : "");
    if (rc < 0) {
        tf_buf_free(&b);
        return NULL;
    }
    return cfg_buf_str(&b);
}

void tf_cfg_diags_clear(tf_cfg_diags_t *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->count; i++) {
        free(d->items[i].file);
        free(d->items[i].key);
        free(d->items[i].message);
    }
    free(d->items);
    d->items = NULL;
    d->count = 0;
}

/* ------------------------------------------------------------------ */
/* The loaded config                                                   */
/* ------------------------------------------------------------------ */

static void cfg_slave_clear(tf_cfg_slave_t *s)
{
    free(s->name);
    if (s->secret) {
        explicit_bzero(s->secret, strlen(s->secret));
        free(s->secret);
    }
    cfg_strv_free(s->tags, s->ntags);
}

static void cfg_builder_clear(tf_cfg_builder_t *b)
{
    free(b->name);
    cfg_strv_free(b->slaves, b->nslaves);
    cfg_strv_free(b->tags, b->ntags);
    for (size_t i = 0; b->steps && i < b->nsteps; i++)
        tf_step_spec_clear(&b->steps[i].spec);
    free(b->steps);
    cfg_kv_free(b->props, b->nprops);
    free(b->repository);
    free(b->branch);
    cfg_strv_free(b->mail.extra_recipients, b->mail.nextra);
    cfg_strv_free(b->mail.error_patterns, b->mail.npatterns);
}

static void cfg_scheduler_clear(tf_cfg_scheduler_t *s)
{
    free(s->name);
    cfg_strv_free(s->builders, s->nbuilders);
    free(s->repository);
    free(s->branch);
    cfg_strv_free(s->paths, s->npaths);
    free(s->cron);
}

void tf_config_free(tf_config_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; c->schedulers && i < c->nschedulers; i++)
        cfg_scheduler_clear(&c->schedulers[i]);
    free(c->schedulers);
    for (size_t i = 0; c->pollers && i < c->npollers; i++) {
        free(c->pollers[i].repository);
        free(c->pollers[i].branch);
    }
    free(c->pollers);
    for (size_t i = 0; c->slaves && i < c->nslaves; i++)
        cfg_slave_clear(&c->slaves[i]);
    free(c->slaves);
    for (size_t i = 0; c->builders && i < c->nbuilders; i++)
        cfg_builder_clear(&c->builders[i]);
    free(c->builders);
    free(c->path);
    free(c->dir);
    free(c->name);
    free(c->listen_host);
    free(c->public_url);
    free(c->database);
    free(c->web_root);
    cfg_mail_clear(&c->mail);
    free(c);
}

const tf_cfg_slave_t *tf_config_slave(const tf_config_t *c, const char *name)
{
    if (!c || !name)
        return NULL;
    for (size_t i = 0; i < c->nslaves; i++)
        if (strcmp(c->slaves[i].name, name) == 0)
            return &c->slaves[i];
    return NULL;
}

const tf_cfg_builder_t *tf_config_builder(const tf_config_t *c,
                                          const char *name)
{
    if (!c || !name)
        return NULL;
    for (size_t i = 0; i < c->nbuilders; i++)
        if (strcmp(c->builders[i].name, name) == 0)
            return &c->builders[i];
    return NULL;
}

bool tf_config_slave_allowed(const tf_cfg_builder_t *b,
                             const tf_cfg_slave_t *s)
{
    if (!b || !s || !s->name)
        return false;
    for (size_t i = 0; i < b->nslaves; i++)
        if (strcmp(b->slaves[i], s->name) == 0)
            return true;
    if (b->ntags == 0)
        return b->nslaves == 0;
    for (size_t i = 0; i < b->ntags; i++)
        if (!cfg_in(s->tags, s->ntags, b->tags[i]))
            return false;
    return true;
}

const tf_cfg_scheduler_t *tf_config_scheduler(const tf_config_t *c,
                                              const char *name)
{
    if (!c || !name)
        return NULL;
    for (size_t i = 0; i < c->nschedulers; i++)
        if (c->schedulers[i].name && strcmp(c->schedulers[i].name, name) == 0)
            return &c->schedulers[i];
    return NULL;
}
