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

/* Bytes allowed in a branch name; revisions also allow '^' and '~'. */
static bool tf_ref_byte(char c, bool rev)
{
    return tf_name_alnum(c) || c == '.' || c == '_' || c == '-' || c == '/' ||
           (rev && (c == '^' || c == '~'));
}

static bool tf_ref_check(const char *s, bool rev)
{
    if (!s)
        return false;
    size_t n = strnlen(s, TF_REF_MAX + 1);
    if (n > TF_REF_MAX)
        return false;
    if (n == 0)
        return rev;
    if (s[0] == '-' || s[0] == '/' || s[n - 1] == '/' || s[n - 1] == '.' ||
        strstr(s, "..") || strstr(s, "//") || strstr(s, "@{") ||
        (n >= 5 && strcmp(s + n - 5, ".lock") == 0))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!tf_ref_byte(s[i], rev))
            return false;
    return true;
}

bool tf_git_ref_valid(const char *s)
{
    return tf_ref_check(s, false);
}

bool tf_git_rev_valid(const char *s)
{
    return tf_ref_check(s, true);
}

bool tf_repo_url_valid(const char *s)
{
    if (!s || !*s || s[0] == '-')
        return false;
    size_t n = strnlen(s, TF_REPO_MAX + 1);
    if (n > TF_REPO_MAX)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return false;
    return true;
}
