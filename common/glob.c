/*
 * glob.c - path filters (see glob.h). A filter without glob characters is
 * a prefix compared by whole components; one with them is matched by a
 * small recursive matcher whose end may fall on a '/' (the filter names a
 * leading run of components).
 */
#include "glob.h"

#include <string.h>

/* A bracket expression at p ("[...]"): whether ch matches, and *end past
 * it. Returns -1 when p does not start a complete one. */
static int glob_class(const char *p, char ch, const char **end)
{
    const char *q = p + 1;
    bool neg = false, hit = false;
    if (*q == '!' || *q == '^') {
        neg = true;
        q++;
    }
    const char *first = q;
    while (*q && (*q != ']' || q == first)) {
        if (q[1] == '-' && q[2] && q[2] != ']') {
            if (ch >= q[0] && ch <= q[2])
                hit = true;
            q += 3;
        } else {
            if (ch == *q)
                hit = true;
            q++;
        }
    }
    if (*q != ']')
        return -1;
    *end = q + 1;
    return hit != neg;
}

/* Glob p against s; the end of p matches the end of s or a '/' (the glob
 * names a leading run of components). */
static bool glob_match(const char *p, const char *s)
{
    for (;;) {
        if (*p == '\0')
            return *s == '\0' || *s == '/';
        if (p[0] == '*' && p[1] == '*') {
            while (*p == '*')
                p++;
            if (*p == '\0')
                return true;
            if (*p == '/') {
                /* "**" + "/": zero or more whole components. */
                p++;
                for (const char *t = s;; t++) {
                    if ((t == s || t[-1] == '/') && glob_match(p, t))
                        return true;
                    if (*t == '\0')
                        return false;
                }
            }
            for (const char *t = s;; t++) {
                if (glob_match(p, t))
                    return true;
                if (*t == '\0')
                    return false;
            }
        }
        if (*p == '*') {
            p++;
            for (const char *t = s;; t++) {
                if (glob_match(p, t))
                    return true;
                if (*t == '\0' || *t == '/')
                    return false;
            }
        }
        if (*s == '\0')
            return false;
        if (*p == '?') {
            if (*s == '/')
                return false;
            p++;
            s++;
            continue;
        }
        if (*p == '[') {
            const char *end;
            int r = *s == '/' ? 0 : glob_class(p, *s, &end);
            if (r == 0)
                return false;
            if (r == 1) {
                p = end;
                s++;
                continue;
            }
            /* Not a class: a literal '['. */
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
}

bool tf_path_match(const char *filter, const char *path)
{
    while (filter[0] == '.' && filter[1] == '/')
        filter += 2;
    while (*filter == '/')
        filter++;
    size_t n = strlen(filter);
    while (n > 0 && filter[n - 1] == '/')
        n--;
    if (n == 0)
        return true;
    if (strpbrk(filter, "*?[")) {
        char glob[1100];
        if (n >= sizeof(glob))
            return false;
        memcpy(glob, filter, n);
        glob[n] = '\0';
        return glob_match(glob, path);
    }
    return strncmp(path, filter, n) == 0 &&
           (path[n] == '\0' || path[n] == '/');
}

bool tf_paths_important(char *const *filters, size_t nfilters,
                        char *const *files, size_t nfiles)
{
    if (nfilters == 0)
        return true;
    for (size_t f = 0; f < nfiles; f++)
        for (size_t i = 0; i < nfilters; i++)
            if (tf_path_match(filters[i], files[f]))
                return true;
    return false;
}
