/*
 * props.c - %(prop:NAME)s interpolation (see props.h).
 *
 * One scanner serves both modes. In shell mode it also follows the
 * template's own quoting (outside quotes, inside '...', inside "...",
 * backslash escapes) so that it knows, at each placeholder, how the shell
 * will read what is put there, and quotes the value for exactly that
 * context. Only the template is lexed: values are never interpreted.
 */
#include "core/props.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#define PROPS_OUT_MAX (1024 * 1024)

typedef enum {
    SH_NONE = 0, /* not a shell string, or outside any quotes */
    SH_SINGLE,   /* inside '...' */
    SH_DOUBLE,   /* inside "..." */
} sh_ctx_t;

/* Advances the shell quoting state over template text t[0..n). *esc
 * carries a pending backslash across calls. */
static sh_ctx_t sh_scan(sh_ctx_t ctx, const char *t, size_t n, bool *esc)
{
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (*esc) {
            *esc = false;
            continue;
        }
        if (ctx == SH_SINGLE) {
            if (c == '\'')
                ctx = SH_NONE;
        } else if (c == '\\') {
            *esc = true;
        } else if (ctx == SH_DOUBLE) {
            if (c == '"')
                ctx = SH_NONE;
        } else if (c == '\'') {
            ctx = SH_SINGLE;
        } else if (c == '"') {
            ctx = SH_DOUBLE;
        }
    }
    return ctx;
}

/* Appends v[0..n) so that the shell reads it back as exactly those bytes
 * in context ctx. Outside quotes the value becomes one word even when it
 * is empty. */
static int sh_append(tf_buf_t *b, sh_ctx_t ctx, const char *v, size_t n)
{
    int rc = 0;
    if (ctx == SH_NONE && (rc = tf_buf_append(b, "'", 1)) != 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char c = v[i];
        if (c == '\'' && ctx != SH_DOUBLE)
            rc = tf_buf_append(b, "'\\''", 4); /* close, \', reopen */
        else if (ctx == SH_DOUBLE &&
                 (c == '"' || c == '\\' || c == '$' || c == '`'))
            rc = tf_buf_append(b, (const char[]){'\\', c}, 2);
        else
            rc = tf_buf_append(b, &c, 1);
    }
    if (rc == 0 && ctx == SH_NONE)
        rc = tf_buf_append(b, "'", 1);
    return rc;
}

static char *interpolate(const char *s, const json_t *props, bool shell)
{
    tf_buf_t b;
    tf_buf_init(&b, PROPS_OUT_MAX);
    const char *p = s;
    sh_ctx_t ctx = SH_NONE;
    bool esc = false;
    while (*p) {
        const char *open = strstr(p, "%(prop:");
        if (!open) {
            if (tf_buf_append_str(&b, p) != 0)
                goto fail;
            break;
        }
        const char *name = open + 7;
        const char *close = strstr(name, ")s");
        if (!close) {
            if (tf_buf_append_str(&b, p) != 0)
                goto fail;
            break;
        }
        if (tf_buf_append(&b, p, (size_t)(open - p)) != 0)
            goto fail;
        if (shell)
            ctx = sh_scan(ctx, p, (size_t)(open - p), &esc);
        /* NAME or NAME:-DEFAULT */
        const char *dflt = NULL;
        size_t nlen = (size_t)(close - name);
        const char *sep = memchr(name, ':', nlen);
        if (sep && sep + 1 < close && sep[1] == '-') {
            dflt = sep + 2;
            nlen = (size_t)(sep - name);
        }
        char key[128];
        const char *val = NULL;
        if (nlen < sizeof(key)) {
            memcpy(key, name, nlen);
            key[nlen] = '\0';
            val = json_string_value(json_object_get(props, key));
        }
        const char *v = NULL;
        size_t vlen = 0;
        if (val && *val) {
            v = val;
            vlen = strlen(val);
        } else if (dflt) {
            v = dflt;
            vlen = (size_t)(close - dflt);
        }
        if (shell) {
            /* A backslash just before the placeholder would escape the
             * quoting put there; a backslash-newline is a line
             * continuation, which the shell drops, both outside quotes and
             * inside "...": so it absorbs that backslash. */
            if (esc && tf_buf_append(&b, "\n", 1) != 0)
                goto fail;
            if (sh_append(&b, ctx, v ? v : "", vlen) != 0)
                goto fail;
        } else if (v && tf_buf_append(&b, v, vlen) != 0) {
            goto fail;
        }
        esc = false;
        p = close + 2;
    }
    if (tf_buf_append(&b, "", 0) != 0)
        goto fail;
    if (!b.data) {
        char *empty = malloc(1);
        if (empty)
            empty[0] = '\0';
        return empty;
    }
    return (char *)tf_buf_steal(&b, NULL);
fail:
    tf_buf_free(&b);
    return NULL;
}

char *tf_interpolate(const char *s, const json_t *props)
{
    return interpolate(s, props, false);
}

char *tf_interpolate_shell(const char *s, const json_t *props)
{
    return interpolate(s, props, true);
}
