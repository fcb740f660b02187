/*
 * fuzz_glob.c - libFuzzer driver for tf_path_match() (schedulers' path
 * filters).
 *
 * The input is a filter and a path separated by a NUL (each cut at 1100
 * bytes). Matching must end without a crash or a stack overflow, and the
 * rules that need no glob hold: a filter without glob characters matches
 * exactly the path itself and the paths under it; every path matches
 * itself as a literal filter; "**" matches everything.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "glob.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_glob: invariant violated: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char filter[1101], path[1101];
    size_t n = 0, m = 0;
    while (n < size && n < sizeof filter - 1 && data[n])
        n++;
    memcpy(filter, data, n);
    filter[n] = '\0';
    size_t at = n < size ? n + 1 : size;
    while (at + m < size && m < sizeof path - 1 && data[at + m])
        m++;
    memcpy(path, data + at, m);
    path[m] = '\0';

    bool hit = tf_path_match(filter, path);
    if (!strpbrk(filter, "*?[") && !strpbrk(path, "*?[") && *filter &&
        filter[0] != '/' && filter[0] != '.' && filter[n - 1] != '/') {
        bool prefix = strncmp(path, filter, n) == 0 &&
                      (path[n] == '\0' || path[n] == '/');
        check(hit == prefix, "a plain filter is a prefix by components");
    }
    if (*path && path[0] != '/' && path[0] != '.' && !strpbrk(path, "*?["))
        check(tf_path_match(path, path), "a path matches itself");
    check(tf_path_match("**", path), "** matches everything");
    return 0;
}
