/*
 * range.c - the HTTP Range header (see range.h).
 *
 * Numbers are read digit by digit and saturate at UINT64_MAX instead of
 * failing: RFC 9110 lets a client ask for "bytes=0-18446744073709551615"
 * (or more digits) to mean "to the end", and an inclusive last position
 * of UINT64_MAX must not wrap to 0 when made exclusive.
 */
#include "range.h"

#include <stdbool.h>
#include <stddef.h>
#include <strings.h>

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static const char *skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Reads 1*DIGIT at *p, saturating; false when there is no digit. */
static bool read_pos(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (!is_digit(*s))
        return false;
    for (; is_digit(*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
    }
    *out = v;
    *p = s;
    return true;
}

int tf_range_parse(const char *h, uint64_t size, uint64_t *start,
                   uint64_t *end)
{
    if (!h || strncasecmp(h, "bytes", 5) != 0)
        return TF_RANGE_MALFORMED;
    const char *p = skip_ows(h + 5);
    if (*p != '=')
        return TF_RANGE_MALFORMED;
    p = skip_ows(p + 1);
    uint64_t first = 0, last = 0;
    bool has_first = read_pos(&p, &first);
    if (*p != '-')
        return TF_RANGE_MALFORMED;
    p++;
    bool has_last = read_pos(&p, &last);
    p = skip_ows(p);
    if (*p != '\0' || (!has_first && !has_last))
        return TF_RANGE_MALFORMED; /* another range, or garbage */
    if (!has_first) {
        /* The last `last` bytes. */
        if (last == 0 || size == 0)
            return TF_RANGE_UNSATISFIABLE;
        *start = last >= size ? 0 : size - last;
        *end = size;
        return TF_RANGE_OK;
    }
    if (has_last && last < first)
        return TF_RANGE_MALFORMED;
    if (first >= size)
        return TF_RANGE_UNSATISFIABLE;
    *start = first;
    /* last is inclusive: clamp before making it exclusive. */
    *end = has_last && last < size - 1 ? last + 1 : size;
    return TF_RANGE_OK;
}
