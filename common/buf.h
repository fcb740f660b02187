/*
 * buf.h - a growable byte buffer with a hard cap.
 *
 * Every buffer in TestFarm has a maximum size; appending past it fails with
 * TF_E2BIG and leaves the buffer unchanged, so a peer that sends too much is
 * refused instead of growing our memory. The data is always followed by a
 * NUL byte (not counted in len) so text can be used as a C string.
 */
#ifndef TF_BUF_H
#define TF_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct tf_buf {
    uint8_t *data; /* owned; NULL until the first append */
    size_t len;
    size_t cap;
    size_t max; /* hard cap on len; 0 means SIZE_MAX / 2 */
} tf_buf_t;

/* Initialises an empty buffer with the given cap (no allocation). */
void tf_buf_init(tf_buf_t *b, size_t max);

/* Appends n bytes. Returns 0, TF_E2BIG (over max) or TF_ENOMEM. */
int tf_buf_append(tf_buf_t *b, const void *p, size_t n);

/* Appends a NUL-terminated string (without its NUL). */
int tf_buf_append_str(tf_buf_t *b, const char *s);

/* printf-style append; TF_E2BIG if the result would pass max. */
int tf_buf_printf(tf_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Drops the first n bytes (n <= len), keeping the rest. */
void tf_buf_consume(tf_buf_t *b, size_t n);

/* Sets len to 0 and keeps the allocation. */
void tf_buf_reset(tf_buf_t *b);

/* Hands the data to the caller (who frees it with free()) and resets b.
 * Returns NULL when nothing was ever appended; *len_out may be NULL. */
uint8_t *tf_buf_steal(tf_buf_t *b, size_t *len_out);

/* Makes data (malloc'd, cap bytes, cap > len) b's data, of len bytes,
 * and frees what b held: the buffer then owns it. Returns TF_E2BIG (and
 * changes nothing; data stays the caller's) when len is past b's max or
 * cap leaves no room for the NUL after it. */
int tf_buf_adopt(tf_buf_t *b, uint8_t *data, size_t len, size_t cap);

/* Frees the data; b may be NULL. */
void tf_buf_free(tf_buf_t *b);

#endif
