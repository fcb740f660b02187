/*
 * email.c - the address rule of email.h. One pass over at most
 * TF_EMAIL_MAX + 1 bytes, so an absurdly long string costs no more than
 * a valid one.
 */
#include "email.h"

#include <string.h>

bool tf_email_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, TF_EMAIL_MAX + 1);
    if (n < 3 || n > TF_EMAIL_MAX)
        return false;
    const char *at = strchr(s, '@');
    if (!at || at == s || at[1] == '\0' || strchr(at + 1, '@'))
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f || strchr("\"<>(),;:\\[]", *p))
            return false;
    return at[1] != '.' && s[n - 1] != '.';
}
