/*
 * tryutil.c - the small pieces try.h declares: error messages, string
 * lists, validators.
 *
 * The validators mirror the master's rules (docs/api.md) so a typo is
 * caught before a patch of many megabytes travels to the master only to be
 * refused; the master stays the authority and checks everything again.
 */
#include "try.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "tf_err.h"

void tf_try_errf(tf_try_err_t *e, const char *fmt, ...)
{
    va_list ap;
    if (!e)
        return;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
}

int tf_try_strv_push(tf_try_strv_t *l, const char *s)
{
    if (l->n >= TF_TRY_STRV_MAX)
        return TF_E2BIG;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 8;
        char **nv = realloc(l->v, ncap * sizeof(*nv));
        if (!nv)
            return TF_ENOMEM;
        l->v = nv;
        l->cap = ncap;
    }
    char *copy = strdup(s);
    if (!copy)
        return TF_ENOMEM;
    l->v[l->n++] = copy;
    return 0;
}

int tf_try_strv_push_split(tf_try_strv_t *l, const char *list, char sep)
{
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, sep);
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 0) {
            char *piece = strndup(p, n);
            if (!piece)
                return TF_ENOMEM;
            int rc = tf_try_strv_push(l, piece);
            free(piece);
            if (rc < 0)
                return rc;
        }
        if (!end)
            break;
        p = end + 1;
    }
    return 0;
}

bool tf_try_strv_has(const tf_try_strv_t *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return true;
    return false;
}

void tf_try_strv_clear(tf_try_strv_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
    l->cap = 0;
}

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
}

bool tf_try_test_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TF_TRY_MAX_TEST_LEN)
        return false;
    for (; *s; s++)
        if (!is_alnum(*s) && !strchr("._/:*=+,-", *s))
            return false;
    return true;
}

bool tf_try_rev_valid(const char *s)
{
    /* common's rule, minus its "" (which means "the branch head" there). */
    return *s != '\0' && tf_git_rev_valid(s);
}

bool tf_try_http_url_valid(const char *s)
{
    const char *host;
    if (strncmp(s, "http://", 7) == 0)
        host = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        host = s + 8;
    else
        return false;
    if (*host == '\0' || *host == '/')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return false;
    return true;
}
