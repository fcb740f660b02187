/*
 * utf8.c - RFC 3629 UTF-8, decoded one way for the whole project (see
 * utf8.h). Table-free: the lead byte gives the length and the lowest
 * value that length may encode; the continuation bytes are checked and
 * the value rebuilt, which rejects overlongs, surrogates and values past
 * U+10FFFF in one comparison each.
 */
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

size_t tf_utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, min = 0x80, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, min = 0x800, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

bool tf_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t l = tf_utf8_len(p + i, n - i);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

bool tf_utf8_text_clean(const char *s, bool allow_tab)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len = 0;
    while (p[len])
        len++;
    for (size_t i = 0; i < len;) {
        size_t l = tf_utf8_len(p + i, len - i);
        if (l == 0)
            return false;
        if (l == 1 && (p[i] < 0x20 || p[i] == 0x7f) &&
            !(allow_tab && p[i] == '\t'))
            return false;
        i += l;
    }
    return true;
}

size_t tf_utf8_cut(const char *s, size_t n, size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    if (n <= max)
        return n;
    size_t k = max;
    /* p[max] is the first byte left out: while it continues a sequence,
     * the sequence it belongs to is left out whole. */
    for (int back = 0; k > 0 && back < 3 && (p[k] & 0xc0) == 0x80; back++)
        k--;
    return (p[k] & 0xc0) == 0x80 ? max : k;
}

size_t tf_utf8_trim(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t k = n;
    for (int back = 0; k > 0 && back < 3 && (p[k - 1] & 0xc0) == 0x80; back++)
        k--;
    if (k == 0)
        return n;
    unsigned lead = p[k - 1];
    size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    return n - (k - 1) < need ? k - 1 : n;
}

char *tf_utf8_dup_lossy(const char *s, size_t n, size_t max)
{
    const unsigned char *u = (const unsigned char *)s;
    char *out = malloc((n < max ? n : max) + 1);
    size_t o = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n;) {
        size_t k = u[i] ? tf_utf8_len(u + i, n - i) : 0;
        size_t take = k ? k : 1;
        if (o + take > max)
            break;
        if (k)
            memcpy(out + o, u + i, k);
        else
            out[o] = '?';
        o += take;
        i += take;
    }
    out[o] = '\0';
    return out;
}

size_t tf_utf8_put(uint32_t cp, unsigned char out[4])
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    if (cp > 0x10ffff)
        return 0;
    out[0] = (unsigned char)(0xf0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}
