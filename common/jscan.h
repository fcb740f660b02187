/*
 * jscan.h - the small pieces of TestFarm's one-pass JSON readers.
 *
 * Two readers skip jansson for their hot messages and only ever accept:
 * the master's reader of the slaves' event messages (proto/msgfast.c) and
 * the load client's readers of acks and build_starts (tests/bench/
 * lsmsg.c). Both walk the text with a cursor (*p, moved forward, up to
 * end) and share these pieces, so that "whitespace" and "an integer"
 * mean the same to both, and the same as to jansson's lexer.
 *
 * Each returns false, leaving *p wherever it stopped, when the bytes are
 * not what it reads: its caller then gives the whole text up to the full
 * decoder. Header-only, static inline: they sit on the master's per-event
 * path, where a call per token would show.
 */
#ifndef TF_JSCAN_H
#define TF_JSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Skips JSON's four whitespace bytes, as jansson's lexer does. */
static inline void tf_jscan_ws(const char **p, const char *end)
{
    while (*p < end && (**p == ' ' || **p == '\t' || **p == '\n' ||
                        **p == '\r'))
        (*p)++;
}

/* Reads the n bytes of lit (a literal such as true, or a key with its
 * quotes). What follows it is the caller's to judge: "truex" is read as
 * true, then refused where a ',' or a '}' must come. */
static inline bool tf_jscan_lit(const char **p, const char *end,
                                const char *lit, size_t n)
{
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return false;
    *p += n;
    return true;
}

/* Reads an unsigned JSON integer (no sign, no leading zero) of at most
 * max into *out. A fraction or an exponent after it is refused here
 * rather than read as an integer, and so is a number of more than 19
 * digits (beyond uint64_t, and beyond any range the protocol has). */
static inline bool tf_jscan_uint(const char **p, const char *end,
                                 uint64_t max, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    int digits = 0;
    if (s == end || *s < '0' || *s > '9')
        return false;
    if (*s == '0') {
        s++;
    } else {
        while (s < end && *s >= '0' && *s <= '9') {
            if (++digits > 19)
                return false;
            v = v * 10 + (uint64_t)(*s - '0');
            s++;
        }
    }
    if (s < end && ((*s >= '0' && *s <= '9') || *s == '.' || *s == 'e' ||
                    *s == 'E'))
        return false;
    if (v > max)
        return false;
    *p = s;
    *out = v;
    return true;
}

#endif
