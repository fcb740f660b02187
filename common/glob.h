/*
 * glob.h - path filters: whether a file a change touched matches a path
 * prefix or glob (docs/config.md, "schedulers", "paths").
 *
 * Pure functions on NUL-terminated strings. Matching is by components:
 * "*" and "?" never cross a '/', "**" spans whole components. Fuzzed by
 * tests/fuzz/fuzz_glob.c.
 */
#ifndef TF_GLOB_H
#define TF_GLOB_H

#include <stdbool.h>
#include <stddef.h>

/* Whether a changed file matches a filter. A filter without glob
 * characters is a path prefix by whole components ("src" and "src/"
 * match "src/a.c" and "src", not "srcx/a.c"). With glob characters, "*"
 * and "?" match within one component, "[...]" a character class, "**" any
 * number of components; the glob must match the whole path or a leading
 * run of its components (the glob "doc" followed by "/" and "*" matches
 * "doc/a/b.txt"). A leading "/" or "./" is ignored. */
bool tf_path_match(const char *filter, const char *path);

/* Whether any of files matches any of filters; true when nfilters is 0. */
bool tf_paths_important(char *const *filters, size_t nfilters,
                        char *const *files, size_t nfiles);

#endif
