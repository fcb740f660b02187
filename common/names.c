/*
 * names.c - validation of client-supplied names and relative paths.
 *
 * The checks use explicit ASCII ranges rather than <ctype.h>, whose answers
 * depend on the locale: a name must mean the same thing on every host.
 */
#include <string.h>

#include "names.h"

#define TF__RELPATH_MAX 255

static bool tf_name_alnum(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9');
}

/* Checks s[0..n) as a name: first byte alphanumeric (which also excludes
 * "." and ".."), the rest alphanumeric or one of "._-". */
static bool tf_name_valid_n(const char *s, size_t n)
{
    if (n == 0 || n > TF_NAME_MAX || !tf_name_alnum(s[0]))
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!tf_name_alnum(c) && c != '.' && c != '_' && c != '-')
            return false;
    }
    return true;
}

bool tf_name_valid(const char *s)
{
    if (!s)
        return false;
    return tf_name_valid_n(s, strnlen(s, TF_NAME_MAX + 1));
}

bool tf_relpath_valid(const char *s)
{
    if (!s)
        return false;
    size_t len = strnlen(s, TF__RELPATH_MAX + 1);
    if (len > TF__RELPATH_MAX)
        return false;
    if (len == 0)
        return true;
    /* Each '/'-separated component must be a name; an empty component
     * (leading, trailing or doubled '/') fails that test. */
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '/') {
            if (!tf_name_valid_n(s + start, i - start))
                return false;
            start = i + 1;
        }
    }
    return true;
}
