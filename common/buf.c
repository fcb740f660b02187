/*
 * buf.c - growable byte buffer with a hard cap.
 *
 * Invariants: len <= max; when data is non-NULL, cap > len and data[len] is
 * NUL. Every failing call leaves the buffer exactly as it was, so a caller
 * can refuse an oversized peer and keep what it already had.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "tf_err.h"

#define TF__BUF_MIN_CAP 64

static size_t tf_buf_max(const tf_buf_t *b)
{
    return b->max ? b->max : SIZE_MAX / 2;
}

void tf_buf_init(tf_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

/* Makes room for n more bytes plus the NUL. The caller has checked that
 * len + n <= max, so need below cannot overflow (max <= SIZE_MAX / 2). */
static int tf_buf_reserve(tf_buf_t *b, size_t n)
{
    size_t need = b->len + n + 1;
    if (b->data && need <= b->cap)
        return 0;
    size_t limit = tf_buf_max(b) + 1;
    size_t ncap = b->cap ? b->cap : TF__BUF_MIN_CAP;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 4 ? need : ncap * 2;
    if (ncap > limit)
        ncap = limit;
    uint8_t *p = realloc(b->data, ncap);
    if (!p)
        return TF_ENOMEM;
    if (!b->data)
        p[0] = '\0';
    b->data = p;
    b->cap = ncap;
    return 0;
}

int tf_buf_append(tf_buf_t *b, const void *p, size_t n)
{
    if (n > tf_buf_max(b) - b->len)
        return TF_E2BIG;
    int rc = tf_buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int tf_buf_append_str(tf_buf_t *b, const char *s)
{
    return tf_buf_append(b, s, strlen(s));
}

int tf_buf_printf(tf_buf_t *b, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int rc = 0;
    int n = vsnprintf(NULL, 0, fmt, ap);
    if (n < 0) {
        rc = TF_EINVAL;
        goto out;
    }
    if ((size_t)n > tf_buf_max(b) - b->len) {
        rc = TF_E2BIG;
        goto out;
    }
    rc = tf_buf_reserve(b, (size_t)n);
    if (rc)
        goto out;
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap2);
    b->len += (size_t)n;
out:
    va_end(ap2);
    va_end(ap);
    return rc;
}

void tf_buf_consume(tf_buf_t *b, size_t n)
{
    if (n >= b->len) {
        tf_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void tf_buf_reset(tf_buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

uint8_t *tf_buf_steal(tf_buf_t *b, size_t *len_out)
{
    uint8_t *p = b->data;
    if (len_out)
        *len_out = b->len;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}

int tf_buf_adopt(tf_buf_t *b, uint8_t *data, size_t len, size_t cap)
{
    if (!data || len >= cap || len > tf_buf_max(b))
        return TF_E2BIG;
    free(b->data);
    b->data = data;
    b->len = len;
    b->cap = cap;
    data[len] = '\0';
    return 0;
}

void tf_buf_free(tf_buf_t *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}
