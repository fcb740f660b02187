/*
 * users.c - committers and their tokens (see users.h).
 */
#include "core/users.h"

#include <string.h>

#include "utf8.h"

bool tf_username_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, TF_USERNAME_MAX + 1);
    if (n == 0 || n > TF_USERNAME_MAX)
        return false;
    return tf_utf8_text_clean(s, false);
}

