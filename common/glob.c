/*
 * glob.c - path filters (see glob.h). A filter without glob characters is
 * a prefix compared by whole components; one with them is matched by a
 * small recursive matcher whose end may fall on a '/' (the filter names a
 * leading run of components), remembering what it decided for each pair
 * of positions so that no glob takes more than polynomial time.
 */
#include "glob.h"

#include <stdlib.h>
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

/* A glob p matched against a path s, with what has been decided about
 * each pair of positions (p + i, s + j) remembered in memo: a glob with
 * many stars tries the same suffixes again and again, and without the
 * memo that costs exponential time (a filter from the config against a
 * path from a repository would hang the loop thread). With it, each pair
 * is decided once: O(|p| * |s|) pairs, each in O(1) amortized steps. */
typedef struct glob_run {
    const char *p0, *s0;
    size_t slen;
    unsigned char *memo; /* (|p| + 1) * (|s| + 1): 0 unknown, 1 no, 2 yes */
} glob_run_t;

static bool glob_at(glob_run_t *g, const char *p, const char *s);

/* Glob p against s; the end of p matches the end of s or a '/' (the glob
 * names a leading run of components). */
static bool glob_decide(glob_run_t *g, const char *p, const char *s)
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
                    if ((t == s || t[-1] == '/') && glob_at(g, p, t))
                        return true;
                    if (*t == '\0')
                        return false;
                }
            }
            for (const char *t = s;; t++) {
                if (glob_at(g, p, t))
                    return true;
                if (*t == '\0')
                    return false;
            }
        }
        if (*p == '*') {
            p++;
            for (const char *t = s;; t++) {
                if (glob_at(g, p, t))
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

static bool glob_at(glob_run_t *g, const char *p, const char *s)
{
    unsigned char *m =
        &g->memo[(size_t)(p - g->p0) * (g->slen + 1) + (size_t)(s - g->s0)];
    if (*m == 0)
        *m = glob_decide(g, p, s) ? 2 : 1;
    return *m == 2;
}

/* Matches the glob p against s with a memo on the stack when the pair is
 * small (the usual case), else on the heap. Out of memory: no match. */
static bool glob_match(const char *p, const char *s)
{
    unsigned char small[4096];
    size_t plen = strlen(p), slen = strlen(s);
    size_t cells = (plen + 1) * (slen + 1);
    glob_run_t g = {.p0 = p, .s0 = s, .slen = slen, .memo = small};
    if (cells > sizeof small && !(g.memo = malloc(cells)))
        return false;
    memset(g.memo, 0, cells);
    bool hit = glob_at(&g, p, s);
    if (g.memo != small)
        free(g.memo);
    return hit;
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
