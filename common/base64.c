/*
 * base64.c - RFC 4648 base64 (see base64.h).
 */
#include "base64.h"

#include <stdbool.h>

#include "tf_err.h"

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t tf_base64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4 + 1;
}

void tf_base64_encode(const void *data, size_t n, char *out)
{
    const uint8_t *p = data;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
}

size_t tf_base64_decoded_max(size_t len)
{
    return len / 4 * 3 + 3;
}

static int value_of(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int tf_base64_decode(const char *text, size_t len, uint8_t *out,
                     size_t *outlen)
{
    size_t o = 0;
    if (len % 4 != 0)
        return TF_EINVAL;
    for (size_t i = 0; i < len; i += 4) {
        bool last = i + 4 == len;
        int a = value_of(text[i]), b = value_of(text[i + 1]);
        int c = text[i + 2] == '=' && last ? -2 : value_of(text[i + 2]);
        int d = text[i + 3] == '=' && last ? -2 : value_of(text[i + 3]);
        if (a < 0 || b < 0 || c == -1 || d == -1 || (c == -2 && d != -2))
            return TF_EINVAL;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12;
        out[o++] = (uint8_t)(v >> 16);
        if (c == -2) {
            /* Canonical: the unused bits must be zero. */
            if (b & 15)
                return TF_EINVAL;
            break;
        }
        v |= (uint32_t)c << 6;
        out[o++] = (uint8_t)(v >> 8);
        if (d == -2) {
            if (c & 3)
                return TF_EINVAL;
            break;
        }
        v |= (uint32_t)d;
        out[o++] = (uint8_t)v;
    }
    *outlen = o;
    return 0;
}
