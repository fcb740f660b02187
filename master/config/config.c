/*
 * config.c - loads and validates the master's JSON configuration: the
 * diagnostics, the generic walker that applies the key tables of
 * config_keys.c, and the loaded config's lifetime.
 *
 * Loading runs in up to three passes over the same text: jansson parses it
 * (and reports syntax errors and duplicate keys, the only errors that stop
 * the load early), and cfg_walk reads the jansson tree with the top table,
 * building the tf_config_t while it records a diagnostic for every problem
 * it meets; at the first diagnostic tf_jsonpos indexes where every value
 * sits (a valid config, every reload's case, needs no positions: the index
 * was a tenth of a 5,000-slave load). A problem
 * never stops the walk (only a hook that says the rest of an object would
 * make no sense does, for that object): `checkconfig` shows all errors at
 * once, and the half-built config is thrown away at the end when any
 * diagnostic was recorded. Only running out of memory aborts.
 *
 * Every key is read by its kind (cfg_value), so one kind says one
 * sentence wherever it appears: "expected an integer", "must be between
 * 1 and 65535 (got 70000)", "unknown key \"tiemout\"; did you mean
 * \"timeout\"?". Diagnostics are sorted by position at the end so they
 * read in file order, whatever order the walker visited the keys in.
 */
#include "config/config_int.h"

#include <errno.h>
#include <limits.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "email.h"
#include "names.h"
#include "tf_err.h"
#include "util.h"

#define CFG_MAX_FILE (16u * 1024 * 1024)
#define CFG_SUGGEST_DIST 2

/* ------------------------------------------------------------------ */
/* Strings and diagnostics                                             */
/* ------------------------------------------------------------------ */

/* Copies s into out[CFG_SHOW_BUF] for display in a message: control bytes
 * become \xNN and after CFG_SHOW_MAX bytes the rest is cut off with "...",
 * never in the middle of a UTF-8 sequence. */
void cfg_show(char out[CFG_SHOW_BUF], const char *s)
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
    if (!ctx->pos_tried) {
        /* jansson accepted the text, so indexing can only run out of
         * memory; should it fail otherwise, diagnostics merely lose their
         * positions. */
        ctx->pos_tried = true;
        rc = tf_jsonpos_index(ctx->text, ctx->len, &ctx->pos);
        if (rc == TF_ENOMEM)
            goto out;
        rc = 0;
    }
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

int cfg_bad(cfg_ctx_t *ctx, const cfg_loc_t *loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cfg_vdiag(ctx, loc, false, fmt, ap);
    va_end(ap);
    return rc < 0 ? rc : CFG_BAD;
}

int cfg_bad_key(cfg_ctx_t *ctx, const cfg_loc_t *loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cfg_vdiag(ctx, loc, true, fmt, ap);
    va_end(ap);
    return rc < 0 ? rc : CFG_BAD;
}

int cfg_missing(cfg_ctx_t *ctx, const cfg_loc_t *obj, const char *key)
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

const char *cfg_suggest(const char *word, const char *const *cands,
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

char *cfg_resolve(const char *dir, const char *p)
{
    char *r = p[0] == '/' ? strdup(p) : tf_path_join(dir, p);
    if (r)
        cfg_path_tidy(r);
    return r;
}

/* ------------------------------------------------------------------ */
/* Helpers the hooks share                                             */
/* ------------------------------------------------------------------ */

void cfg_strv_free(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void cfg_kv_free(tf_kv_t *kv, size_t n)
{
    if (!kv)
        return;
    for (size_t i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

static bool cfg_in(char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

void *cfg_base(const cfg_key_t *k, void *out)
{
    if (k->flags & CFG_VIA)
        return *(void **)((char *)out + k->via);
    return out;
}

/* The field of row k in out (NULL for CFG_NOFIELD rows). */
static void *cfg_field(const cfg_key_t *k, void *out)
{
    char *base = cfg_base(k, out);
    return base && k->off != CFG_NOFIELD ? base + k->off : NULL;
}

/* The field of a row the kind needs one for (tables give it one). */
static void *cfg_slot(const cfg_key_t *k, void *out)
{
    return (char *)cfg_base(k, out) + k->off;
}

static size_t *cfg_count_field(const cfg_key_t *k, void *out)
{
    return (size_t *)((char *)cfg_base(k, out) + k->noff);
}

/* Replaces the string at *field with a copy of s. */
static int cfg_set_str(char **field, const char *s)
{
    char *d = strdup(s);
    if (!d)
        return TF_ENOMEM;
    free(*field);
    *field = d;
    return 0;
}

int cfg_status(const cfg_table_t *t, const int *st, const char *key)
{
    for (size_t i = 0; i < t->nkeys; i++)
        if (strcmp(t->keys[i].name, key) == 0)
            return st[i];
    return CFG_ABSENT;
}

int cfg_secret_file(cfg_ctx_t *ctx, const cfg_loc_t *loc, const char *rel,
                    char **out)
{
    char show[CFG_SHOW_BUF];
    char *path = cfg_resolve(ctx->dir, rel);
    if (!path)
        return TF_ENOMEM;
    int rc = cfg_secrets_read(ctx->secrets, path, out);
    if (rc == 0) {
        free(path);
        return CFG_OK;
    }
    cfg_show(show, path);
    free(path);
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

/* ------------------------------------------------------------------ */
/* Reading one value by its kind                                       */
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

/* Stores x in an integer field of k->size bytes. */
static void cfg_store_int(const cfg_key_t *k, void *field, long long x)
{
    switch (k->size) {
    case 2:
        *(uint16_t *)field = (uint16_t)x;
        break;
    case 8:
        *(uint64_t *)field = (uint64_t)x;
        break;
    default:
        if (k->flags & CFG_SIGNED)
            *(int32_t *)field = (int32_t)x;
        else
            *(uint32_t *)field = (uint32_t)x;
    }
}

int cfg_string(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v, bool empty_ok,
               const char **out)
{
    if (!json_is_string(v))
        return cfg_bad(ctx, loc, "expected a string");
    if (!empty_ok && json_string_length(v) == 0)
        return cfg_bad(ctx, loc, "must not be empty");
    *out = json_string_value(v);
    return CFG_OK;
}

/* A string value for row k (CFG_EMPTY_OK allows ""). */
static int cfg_str_value(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                         const cfg_key_t *k, const char **out)
{
    return cfg_string(ctx, loc, v, (k->flags & CFG_EMPTY_OK) != 0, out);
}

static int cfg_not_email(cfg_ctx_t *ctx, const cfg_loc_t *loc, const char *s)
{
    char show[CFG_SHOW_BUF];
    cfg_show(show, s);
    return cfg_bad(ctx, loc,
                   "\"%s\" is not a plain email address (local@domain)", show);
}

/* CFG_STR: a string that passes k->valid (and the email rule with
 * CFG_EMAIL). A refused value leaves the default in place. */
static int cfg_str_kind(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                        const cfg_key_t *k, void *field)
{
    char show[CFG_SHOW_BUF];
    const char *s = NULL;
    int rc = cfg_str_value(ctx, loc, v, k, &s);
    if (rc != CFG_OK)
        return rc;
    if ((k->flags & CFG_EMAIL) && !tf_email_valid(s))
        return cfg_not_email(ctx, loc, s);
    if (k->valid && !k->valid(s)) {
        if (!k->what)
            return cfg_bad(ctx, loc, "%s", k->rule);
        cfg_show(show, s);
        return cfg_bad(ctx, loc, "invalid %s \"%s\": %s", k->what, show,
                       k->rule);
    }
    if (field && cfg_set_str(field, s) < 0)
        return TF_ENOMEM;
    return CFG_OK;
}

/* A name at loc; *out borrowed from the tree. */
static int cfg_name_value(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                          const char **out)
{
    char show[CFG_SHOW_BUF];
    if (!json_is_string(v))
        return cfg_bad(ctx, loc, "expected a string");
    if (!tf_name_valid(json_string_value(v))) {
        cfg_show(show, json_string_value(v));
        return cfg_bad(ctx, loc, "invalid name \"%s\": %s", show,
                       CFG_NAME_RULE);
    }
    *out = json_string_value(v);
    return CFG_OK;
}

/* CFG_NAMES: distinct names ("duplicate WHAT"); keeps the valid ones. */
static int cfg_names_kind(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *arr,
                          const cfg_key_t *k, void *out)
{
    char **v = NULL;
    size_t n = 0;
    int rc = CFG_OK;

    if (!json_is_array(arr))
        return cfg_bad(ctx, loc, "expected an array of names");
    if (json_array_size(arr) == 0)
        return CFG_OK;
    if (!(v = calloc(json_array_size(arr), sizeof(*v))))
        return TF_ENOMEM;
    *(char ***)cfg_slot(k, out) = v;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        cfg_loc_t el = CFG_ELEMENT(loc, i);
        const char *name = NULL;
        int r = cfg_name_value(ctx, &el, json_array_get(arr, i), &name);
        if (r == CFG_OK && cfg_in(v, n, name))
            r = cfg_bad(ctx, &el, "duplicate %s \"%s\"", k->what, name);
        if (r < 0)
            return r;
        if (r != CFG_OK) {
            rc = CFG_BAD;
            continue;
        }
        if (!(v[n] = strdup(name)))
            return TF_ENOMEM;
        *cfg_count_field(k, out) = ++n;
    }
    return rc;
}

/* CFG_ENUM: one of k->words, stored as its value in an int field. */
static int cfg_enum_kind(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                         const cfg_key_t *k, void *field)
{
    char show[CFG_SHOW_BUF], list[256];
    const char *s = NULL;
    size_t o = 0, n = 0;
    int rc = cfg_str_value(ctx, loc, v, k, &s);
    if (rc != CFG_OK)
        return rc;
    for (; k->words[n].word; n++) {
        if (strcmp(s, k->words[n].word) == 0) {
            *(int *)field = k->words[n].value;
            return CFG_OK;
        }
    }
    list[0] = '\0';
    for (size_t i = 0; i < n && o < sizeof(list); i++)
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s\"%s\"",
                              i == 0 ? "" : i + 1 == n ? " or " : ", ",
                              k->words[i].word);
    if (k->flags & CFG_TERSE)
        return cfg_bad(ctx, loc, "expected %s", list);
    cfg_show(show, s);
    return cfg_bad(ctx, loc, "unknown %s \"%s\": use %s", k->what, show, list);
}

/* CFG_KV: an object of string -> string whose keys pass k->valid; the
 * valid members are kept, in file order. */
static int cfg_kv_kind(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *o,
                       const cfg_key_t *k, void *out)
{
    tf_kv_t *kv;
    size_t n = 0;
    int rc = CFG_OK;
    const char *key;
    json_t *v;

    if (!json_is_object(o))
        return cfg_bad(ctx, loc, "expected an object of strings");
    if (json_object_size(o) == 0)
        return CFG_OK;
    if (!(kv = calloc(json_object_size(o), sizeof(*kv))))
        return TF_ENOMEM;
    *(tf_kv_t **)cfg_slot(k, out) = kv;
    json_object_foreach(o, key, v) {
        cfg_loc_t ml = CFG_MEMBER(loc, key);
        int r = CFG_OK;
        if (!k->valid(key)) {
            char show[CFG_SHOW_BUF];
            cfg_show(show, key);
            r = cfg_bad_key(ctx, &ml, "invalid %s name \"%s\": %s", k->what,
                            show, k->rule);
        }
        if (r >= 0 && !json_is_string(v))
            r = cfg_bad(ctx, &ml, "expected a string");
        if (r < 0)
            return r;
        if (r != CFG_OK) {
            rc = CFG_BAD;
            continue;
        }
        kv[n].key = strdup(key);
        kv[n].value = strdup(json_string_value(v));
        *cfg_count_field(k, out) = ++n;
        if (!kv[n - 1].key || !kv[n - 1].value)
            return TF_ENOMEM;
    }
    return rc;
}

/* CFG_STRINGS: at most CFG_STRINGS_MAX strings of 1..CFG_STRING_BYTES
 * bytes (plain addresses with CFG_EMAIL), NULL-terminated. */
static int cfg_strings_kind(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                            json_t *arr, const cfg_key_t *k, void *out)
{
    char **v;
    size_t n = 0;
    int rc = CFG_OK;

    if (!json_is_array(arr))
        return cfg_bad(ctx, loc, "expected an array of strings");
    if (json_array_size(arr) > CFG_STRINGS_MAX)
        return cfg_bad(ctx, loc, "at most %d entries", CFG_STRINGS_MAX);
    if (!(v = calloc(json_array_size(arr) + 1, sizeof(*v))))
        return TF_ENOMEM;
    *(char ***)cfg_slot(k, out) = v;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *s = json_array_get(arr, i);
        cfg_loc_t el = CFG_ELEMENT(loc, i);
        int r = CFG_OK;
        if (!json_is_string(s))
            r = cfg_bad(ctx, &el, "expected a string");
        else if (json_string_length(s) == 0 ||
                 json_string_length(s) > CFG_STRING_BYTES)
            r = cfg_bad(ctx, &el, "must be 1 to %d bytes", CFG_STRING_BYTES);
        else if ((k->flags & CFG_EMAIL) &&
                 !tf_email_valid(json_string_value(s)))
            r = cfg_not_email(ctx, &el, json_string_value(s));
        if (r < 0)
            return r;
        if (r != CFG_OK) {
            rc = CFG_BAD;
            continue;
        }
        if (!(v[n] = strdup(json_string_value(s))))
            return TF_ENOMEM;
        *cfg_count_field(k, out) = ++n;
    }
    return rc;
}

int cfg_argv_array(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *cmd,
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

/* A regular expression at loc: a non-empty string of at most
 * TF_PROTO_MAX_REGEX bytes that regcomp() accepts as POSIX extended. The
 * slave compiles it again; checking here puts the error at its place in
 * the file instead of in a failed step. */
int cfg_regex_value(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
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

static int cfg_regex_kind(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                          void *field)
{
    const char *re = NULL;
    int rc = cfg_regex_value(ctx, loc, v, &re, NULL);
    if (rc != CFG_OK)
        return rc;
    return cfg_set_str(field, re) < 0 ? TF_ENOMEM : CFG_OK;
}

/* The array checks CFG_REGEXES and CFG_LIST share: the type, then the
 * number of entries. */
static int cfg_array_of(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                        const cfg_key_t *k, const char *deftype)
{
    size_t n;
    if (!json_is_array(v))
        return cfg_bad(ctx, loc, "%s", k->type_msg ? k->type_msg : deftype);
    n = json_array_size(v);
    if (k->min > 0 && n < (size_t)k->min)
        return cfg_bad(ctx, loc, "%s", k->empty_msg);
    if (k->max > 0 && n > (size_t)k->max)
        return cfg_bad(ctx, loc, "too many %s (%zu; at most %lld)", k->plural,
                       n, k->max);
    return CFG_OK;
}

/* CFG_REGEXES: the valid regexes of the array, in order. */
static int cfg_regexes_kind(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                            const cfg_key_t *k, void *out)
{
    char **list;
    size_t n = 0;
    int rc = cfg_array_of(ctx, loc, v, k, "expected an array of regexes");
    if (rc != CFG_OK || json_array_size(v) == 0)
        return rc;
    if (!(list = calloc(json_array_size(v), sizeof(*list))))
        return TF_ENOMEM;
    *(char ***)cfg_slot(k, out) = list;
    for (size_t i = 0; i < json_array_size(v); i++) {
        cfg_loc_t el = CFG_ELEMENT(loc, i);
        int r = cfg_regex_kind(ctx, &el, json_array_get(v, i), &list[n]);
        if (r < 0)
            return r;
        if (r == CFG_OK)
            *cfg_count_field(k, out) = ++n;
        else
            rc = CFG_BAD;
    }
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

/* Whether the m pairs of v are in strictly increasing name order: then
 * no name repeats, and they are sorted already. */
static bool cfg_named_ascending(const cfg_named_t *v, size_t m)
{
    for (size_t j = 1; j < m; j++)
        if (strcmp(v[j - 1].name, v[j].name) >= 0)
            return false;
    return true;
}

/* Reports every element of the list at arr (n items of size bytes, whose
 * name is at name_off) whose name an earlier element already used,
 * naming the first user. Sorting (name, index) pairs keeps this
 * O(n log n) for thousands of slaves; a list written in name order (the
 * usual generated config) costs one pass. */
static int cfg_dups(cfg_ctx_t *ctx, const cfg_loc_t *arr, const char *items,
                    size_t n, size_t size, size_t name_off, const char *what)
{
    int rc = 0;
    size_t m = 0;
    cfg_named_t *v = n ? calloc(n, sizeof(*v)) : NULL;
    if (n && !v)
        return TF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *name = *(char *const *)(items + i * size + name_off);
        if (name)
            v[m++] = (cfg_named_t){name, i};
    }
    if (cfg_named_ascending(v, m)) {
        free(v);
        return 0;
    }
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

/* The offset of the "name" row of t (lists with k->what have one). */
static size_t cfg_name_off(const cfg_table_t *t)
{
    for (size_t i = 0; i < t->nkeys; i++)
        if (strcmp(t->keys[i].name, "name") == 0)
            return t->keys[i].off;
    return CFG_NOFIELD;
}

/* The top-level "slaves" when its text is the last successful load's
 * (ctx->kept): the same slaves, but for their secret files, read as
 * cfg_slave_end reads them (the same diagnostics at the same places).
 * Everything else about a slave is a function of its text, checked when
 * that load read it: names, tags, max_builds, distinct names. */
static int cfg_slaves_reuse(cfg_ctx_t *ctx, const cfg_loc_t *loc,
                            const cfg_key_t *k, void *out)
{
    const cfg_slaves_kept_t *kp = ctx->kept;
    tf_cfg_slave_t *items = calloc(kp->n, sizeof(*items));
    if (!items)
        return TF_ENOMEM;
    *(void **)cfg_slot(k, out) = items;
    *cfg_count_field(k, out) = kp->n;
    for (size_t i = 0; i < kp->n; i++) {
        cfg_loc_t el = CFG_ELEMENT(loc, i);
        cfg_loc_t fl = CFG_MEMBER(&el, "secret_file");
        int rc = cfg_slave_copy(&items[i], &kp->slaves[i], !kp->files[i]);
        if (rc == 0 && kp->files[i])
            rc = cfg_secret_file(ctx, &fl, kp->files[i], &items[i].secret);
        if (rc < 0)
            return rc;
    }
    return CFG_OK;
}

/* CFG_LIST: an array of objects, each read with k->sub into an element
 * of k->size bytes; with k->what, names must be distinct. */
static int cfg_list_kind(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                         const cfg_key_t *k, void *out)
{
    char *items;
    size_t n;
    if (v && v == ctx->reused_slaves && ctx->kept &&
        k->size == sizeof(tf_cfg_slave_t)) {
        cfg_secrets_reused(ctx->secrets);
        return cfg_slaves_reuse(ctx, loc, k, out);
    }
    int rc = cfg_array_of(ctx, loc, v, k, "expected an array of objects");
    if (rc != CFG_OK || json_array_size(v) == 0)
        return rc;
    n = json_array_size(v);
    if (!(items = calloc(n, k->size)))
        return TF_ENOMEM;
    *(void **)cfg_slot(k, out) = items;
    *cfg_count_field(k, out) = n;
    for (size_t i = 0; i < n; i++) {
        cfg_loc_t el = CFG_ELEMENT(loc, i);
        json_t *e = json_array_get(v, i);
        if (!json_is_object(e))
            rc = cfg_bad(ctx, &el, "expected an object");
        else
            rc = cfg_walk(ctx, &el, e, k->sub, items + i * k->size);
        if (rc < 0)
            return rc;
    }
    if (k->what &&
        (rc = cfg_dups(ctx, loc, items, n, k->size, cfg_name_off(k->sub),
                       k->what)) < 0)
        return rc;
    return CFG_OK;
}

/* CFG_PATH: a non-empty string, stored absolute. */
static int cfg_path_kind(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                         const cfg_key_t *k, void *field)
{
    const char *s = NULL;
    int rc = cfg_str_value(ctx, loc, v, k, &s);
    if (rc != CFG_OK)
        return rc;
    char *p = cfg_resolve(ctx->dir, s);
    if (!p)
        return TF_ENOMEM;
    free(*(char **)field);
    *(char **)field = p;
    return CFG_OK;
}

/* One present value v (a member of parent) at loc, by k's kind. */
static int cfg_value(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *v,
                     json_t *parent, const cfg_key_t *k, void *out)
{
    void *field = cfg_field(k, out);
    const char *s = NULL;
    long long x = 0;
    int rc;

    switch (k->kind) {
    case CFG_BOOL:
        if (!json_is_boolean(v))
            return cfg_bad(ctx, loc, "expected true or false");
        *(bool *)field = json_is_true(v);
        return CFG_OK;
    case CFG_INT:
        rc = cfg_int_value(ctx, loc, v, k->min, k->max, &x);
        if (rc == CFG_OK)
            cfg_store_int(k, field, x);
        return rc;
    case CFG_STR:
        return cfg_str_kind(ctx, loc, v, k, field);
    case CFG_NAME:
        rc = cfg_name_value(ctx, loc, v, &s);
        if (rc == CFG_OK && cfg_set_str(field, s) < 0)
            return TF_ENOMEM;
        return rc;
    case CFG_NAMES:
        return cfg_names_kind(ctx, loc, v, k, out);
    case CFG_PATH:
        return cfg_path_kind(ctx, loc, v, k, field);
    case CFG_ENUM:
        return cfg_enum_kind(ctx, loc, v, k, field);
    case CFG_KV:
        return cfg_kv_kind(ctx, loc, v, k, out);
    case CFG_STRINGS:
        return cfg_strings_kind(ctx, loc, v, k, out);
    case CFG_REGEX:
        return cfg_regex_kind(ctx, loc, v, field);
    case CFG_REGEXES:
        return cfg_regexes_kind(ctx, loc, v, k, out);
    case CFG_SECTION:
        if (!json_is_object(v)) {
            rc = cfg_bad(ctx, loc, "%s",
                         k->type_msg ? k->type_msg : "expected an object");
            if (rc < 0)
                return rc;
            /* The section keeps its defaults. */
            rc = cfg_walk(ctx, loc, NULL, k->sub, field);
            return rc < 0 ? rc : CFG_BAD;
        }
        rc = cfg_walk(ctx, loc, v, k->sub, field);
        return rc < 0 ? rc : CFG_OK;
    case CFG_LIST:
        return cfg_list_kind(ctx, loc, v, k, out);
    case CFG_CUSTOM:
        return k->fn(ctx, loc, v, parent, k, out);
    }
    return CFG_BAD;
}

/* ------------------------------------------------------------------ */
/* The walker                                                          */
/* ------------------------------------------------------------------ */

int cfg_apply_default(cfg_ctx_t *ctx, const cfg_key_t *k, void *out)
{
    void *field = cfg_field(k, out);
    if (!field)
        return 0;
    switch (k->kind) {
    case CFG_BOOL:
        if (k->def)
            *(bool *)field = true;
        return 0;
    case CFG_INT:
        if (k->def)
            cfg_store_int(k, field, k->def);
        return 0;
    case CFG_STR:
        return k->sdef ? cfg_set_str(field, k->sdef) : 0;
    case CFG_PATH:
        if (!k->sdef || !ctx)
            return 0;
        if (!(*(char **)field = cfg_resolve(ctx->dir, k->sdef)))
            return TF_ENOMEM;
        return 0;
    default:
        return 0;
    }
}

/* Reports every key of obj that no row of t (of this variant) names. */
static int cfg_check_keys(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
                          const cfg_table_t *t, unsigned variant)
{
    const char *known[CFG_MAX_ROWS];
    size_t nknown = 0;
    const char *k;
    json_t *v;

    for (size_t i = 0; i < t->nkeys && nknown < CFG_MAX_ROWS; i++)
        if (!t->keys[i].only || (t->keys[i].only & variant))
            known[nknown++] = t->keys[i].name;
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

int cfg_walk(cfg_ctx_t *ctx, const cfg_loc_t *loc, json_t *obj,
             const cfg_table_t *t, void *out)
{
    int st[CFG_MAX_ROWS] = {0};
    unsigned variant = ~0u;
    size_t diags_before = ctx->diags->count;
    int rc;

    if (obj && !json_is_object(obj)) {
        rc = cfg_bad(ctx, loc, "%s",
                     t->not_object ? t->not_object : "expected an object");
        return rc < 0 ? rc : 0;
    }
    if (t->init && (rc = t->init(ctx, obj, out)) < 0)
        return rc;
    if (obj && !t->variant_key &&
        (rc = cfg_check_keys(ctx, loc, obj, t, variant)) < 0)
        return rc;
    for (size_t i = 0; i < t->nkeys; i++) {
        const cfg_key_t *k = &t->keys[i];
        json_t *v = obj ? json_object_get(obj, k->name) : NULL;
        cfg_loc_t kl = CFG_MEMBER(loc, k->name);
        if (k->only && !(k->only & variant))
            continue;
        if ((rc = cfg_apply_default(ctx, k, out)) < 0)
            return rc;
        if (v)
            st[i] = cfg_value(ctx, &kl, v, obj, k, out);
        else if (obj && (k->flags & CFG_REQUIRED))
            st[i] = cfg_missing(ctx, loc, k->name);
        else if (k->kind == CFG_SECTION)
            st[i] = cfg_walk(ctx, &kl, NULL, k->sub, cfg_field(k, out));
        if (st[i] < 0)
            return st[i];
        if (k->check) {
            rc = k->check(ctx, loc, obj, out, st[i]);
            if (rc < 0)
                return rc;
            if (rc == CFG_STOP)
                return 0;
        }
        if (obj && t->variant_key && strcmp(k->name, t->variant_key) == 0) {
            variant = 1u << *(int *)cfg_slot(k, out);
            if ((rc = cfg_check_keys(ctx, loc, obj, t, variant)) < 0)
                return rc;
        }
    }
    if (!t->end)
        return 0;
    ctx->object_clean = ctx->diags->count == diags_before;
    return t->end(ctx, loc, obj, out, st);
}

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

/* A cheap scan for where the top-level member "slaves" has its value:
 * JSON whitespace, strings with their escapes, nesting. It trusts jansson
 * for everything else: the span is only used when its bytes are those of
 * a value of a document jansson accepted (cfg_secrets_kept). */
static size_t cfg_scan_ws(const char *t, size_t i, size_t n)
{
    while (i < n && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' ||
                     t[i] == '\r'))
        i++;
    return i;
}

/* The end of the string that starts at t[i] ('"'), or 0. */
static size_t cfg_scan_string(const char *t, size_t i, size_t n)
{
    for (i++; i < n; i++) {
        if (t[i] == '\\')
            i++;
        else if (t[i] == '"')
            return i + 1;
    }
    return 0;
}

/* The end of the value that starts at t[i], or 0. */
static size_t cfg_scan_value(const char *t, size_t i, size_t n)
{
    size_t depth = 0, start = i;
    if (i >= n)
        return 0;
    if (t[i] == '"')
        return cfg_scan_string(t, i, n);
    if (t[i] != '{' && t[i] != '[') {
        while (i < n && t[i] != ',' && t[i] != '}' && t[i] != ']' &&
               cfg_scan_ws(t, i, n) == i)
            i++;
        return i > start ? i : 0;
    }
    for (; i < n; i++) {
        if (t[i] == '"') {
            size_t e = cfg_scan_string(t, i, n);
            if (!e)
                return 0;
            i = e - 1;
        } else if (t[i] == '{' || t[i] == '[') {
            depth++;
        } else if ((t[i] == '}' || t[i] == ']') && --depth == 0) {
            return i + 1;
        }
    }
    return 0;
}

/* Where the value of the first top-level member "slaves" (written without
 * escapes) is: 0 and [*vs, *ve), or -1. */
static int cfg_scan_slaves(const char *t, size_t n, size_t *vs, size_t *ve)
{
    static const char key[] = "\"slaves\"";
    size_t i = cfg_scan_ws(t, 0, n);
    if (i >= n || t[i] != '{')
        return -1;
    for (i++;;) {
        size_t ks = cfg_scan_ws(t, i, n);
        if (ks >= n || t[ks] != '"')
            return -1;
        size_t ke = cfg_scan_string(t, ks, n);
        if (!ke)
            return -1;
        i = cfg_scan_ws(t, ke, n);
        if (i >= n || t[i] != ':')
            return -1;
        i = cfg_scan_ws(t, i + 1, n);
        size_t e = cfg_scan_value(t, i, n);
        if (!e)
            return -1;
        if (ke - ks == sizeof(key) - 1 && memcmp(t + ks, key, ke - ks) == 0) {
            *vs = i;
            *ve = e;
            return 0;
        }
        i = cfg_scan_ws(t, e, n);
        if (i >= n || t[i] != ',')
            return -1;
        i++;
    }
}

/* The text with the "slaves" value at [vs, ve) replaced by "[]"
 * (malloc'd, *plen its length), or NULL. */
static char *cfg_splice_slaves(const char *text, size_t len, size_t vs,
                               size_t ve, size_t *plen)
{
    size_t n = len - (ve - vs) + 2;
    char *p = malloc(n);
    if (!p)
        return NULL;
    memcpy(p, text, vs);
    memcpy(p + vs, "[]", 2);
    memcpy(p + vs + 2, text + ve, len - ve);
    *plen = n;
    return p;
}

int tf_config_load_text(const char *path, const char *text, size_t len,
                        tf_config_t **out, tf_cfg_diags_t *diags)
{
    return tf_config_load_text_cached(path, text, len, NULL, out, diags);
}

int tf_config_load_text_cached(const char *path, const char *text,
                               size_t len, tf_cfg_secrets_t *secrets,
                               tf_config_t **out, tf_cfg_diags_t *diags)
{
    tf_cfg_diags_t local = {0};
    cfg_ctx_t ctx = {.file = path, .diags = diags ? diags : &local,
                     .secrets = secrets};
    const cfg_loc_t root = {0};
    tf_config_t *c = NULL;
    json_t *top = NULL;
    json_error_t jerr;
    char *spliced = NULL;
    size_t vs = 0, ve = 0, splen = 0;
    bool have_span = false;
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

    /* jansson lets a NUL byte pass between tokens; JSON text never holds
     * one, and the positions index refuses it. */
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        int line, col;
        cfg_line_col(text, (size_t)(nul - text), &line, &col);
        rc = cfg_diag_raw(ctx.diags, path, line, col, strdup(""),
                          strdup("a NUL byte is not allowed in JSON text"));
        if (rc == 0)
            rc = TF_ECONFIG;
        goto out;
    }
    /* The slaves of the last successful load, written the same: jansson
     * reads the rest, the walker copies them (most of a reload's work
     * was parsing, checking and freeing 5,000 unchanged slaves). The
     * value stands for itself as a whole (it was a valid value in a
     * valid document), so the text with "[]" in its place parses if and
     * only if the text does; when it does not, the text itself is parsed
     * for jansson's own message. */
    if (secrets && cfg_scan_slaves(text, len, &vs, &ve) == 0) {
        have_span = true;
        ctx.kept = cfg_secrets_kept(secrets, text + vs, ve - vs);
        if (ctx.kept)
            spliced = cfg_splice_slaves(text, len, vs, ve, &splen);
    }
    if (spliced) {
        top = json_loadb(spliced, splen, JSON_REJECT_DUPLICATES, &jerr);
        ctx.reused_slaves = json_object_get(top, "slaves");
    }
    if (!top) {
        ctx.kept = NULL;
        top = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    }
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
    ctx.text = text;
    ctx.len = len;

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
    ctx.cfg = c;
    cfg_secrets_begin(secrets);
    rc = cfg_walk(&ctx, &root, top, &cfg_top_table, c);
    if (rc < 0)
        goto out;
    if (ctx.diags->count > 0) {
        rc = TF_ECONFIG;
        goto out;
    }
    cfg_secrets_prune(secrets);
    if (have_span && !ctx.reused_slaves)
        cfg_secrets_keep(secrets, text + vs, ve - vs, c,
                         json_object_get(top, "slaves"));
    *out = c;
    c = NULL;
    rc = 0;
out:
    if (rc == TF_ECONFIG)
        cfg_diags_sort(ctx.diags);
    tf_config_free(c);
    json_decref(top);
    free(spliced);
    cfg_secrets_end(secrets);
    tf_jsonpos_free(ctx.pos);
    free(ctx.slaves);
    tf_cfg_diags_clear(&local);
    return rc;
}

int tf_config_load(const char *path, tf_config_t **out, tf_cfg_diags_t *diags)
{
    return tf_config_load_cached(path, NULL, out, diags);
}

int tf_config_load_cached(const char *path, tf_cfg_secrets_t *secrets,
                          tf_config_t **out, tf_cfg_diags_t *diags)
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
    rc = tf_config_load_text_cached(path, text, len, secrets, out, d);
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
void cfg_slave_clear(tf_cfg_slave_t *s)
{
    free(s->name);
    if (s->secret) {
        explicit_bzero(s->secret, strlen(s->secret));
        free(s->secret);
    }
    cfg_strv_free(s->tags, s->ntags);
}

int cfg_slave_copy(tf_cfg_slave_t *dst, const tf_cfg_slave_t *src,
                   bool with_secret)
{
    memset(dst, 0, sizeof(*dst));
    dst->max_builds = src->max_builds;
    if (!(dst->name = strdup(src->name)))
        goto nomem;
    if (with_secret && src->secret && !(dst->secret = strdup(src->secret)))
        goto nomem;
    if (src->ntags) {
        if (!(dst->tags = calloc(src->ntags, sizeof(*dst->tags))))
            goto nomem;
        for (size_t i = 0; i < src->ntags; i++, dst->ntags++)
            if (!(dst->tags[i] = strdup(src->tags[i])))
                goto nomem;
    }
    return 0;
nomem:
    cfg_slave_clear(dst);
    memset(dst, 0, sizeof(*dst));
    return TF_ENOMEM;
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
    cfg_strv_free(b->force_allowed, b->nforce_allowed);
    cfg_strv_free(b->force_properties, b->nforce_properties);
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
    free(c->tls_cert);
    free(c->tls_key);
    free(c->public_url);
    free(c->database);
    free(c->web_root);
    cfg_strv_free(c->cors_origins, c->ncors_origins);
    free(c->commit_url);
    cfg_mail_clear(&c->mail);
    free(c);
}

const tf_cfg_slave_t *tf_config_slave(const tf_config_t *c, const char *name)
{
    if (!c || !name)
        return NULL;
    for (size_t i = 0; i < c->nslaves; i++)
        if (c->slaves[i].name && strcmp(c->slaves[i].name, name) == 0)
            return &c->slaves[i];
    return NULL;
}

const tf_cfg_builder_t *tf_config_builder(const tf_config_t *c,
                                          const char *name)
{
    if (!c || !name)
        return NULL;
    for (size_t i = 0; i < c->nbuilders; i++)
        if (c->builders[i].name && strcmp(c->builders[i].name, name) == 0)
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
    return tf_config_slave_has_tags(b, s);
}

bool tf_config_slave_has_tags(const tf_cfg_builder_t *b,
                              const tf_cfg_slave_t *s)
{
    if (!b || !s)
        return false;
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
