/*
 * util.h - small file and number helpers shared by the daemons.
 * No atoi/strtol without error checks anywhere else: use these.
 */
#ifndef TF_UTIL_H
#define TF_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Reads a whole file into a NUL-terminated malloc'd buffer (caller frees).
 * Fails with TF_E2BIG if it is larger than max bytes, or a negative errno. */
int tf_read_file(const char *path, size_t max, char **out, size_t *len_out);

/* Writes data to path atomically (temp file, fsync, rename) with mode. */
int tf_write_file_atomic(const char *path, const void *data, size_t len,
                         unsigned mode);

/* Reads a secret file: the first line, trailing whitespace stripped.
 * Refuses empty secrets (TF_EINVAL) and files over 4 KiB. Caller frees. */
int tf_read_secret(const char *path, char **out);

/* mkdir -p with mode for created components. */
int tf_mkdir_p(const char *path, unsigned mode);

/* Strict decimal parsers: whole string, no sign for u64, range checked. */
int tf_parse_u64(const char *s, uint64_t *out);
int tf_parse_i64(const char *s, int64_t *out);

/* v in decimal into out[0..20), the first digit first, as "%" PRIu64 and
 * jansson write it; returns the number of digits (no NUL). Inline: the
 * one-pass encoders and the template starts write a few per message. */
static inline size_t tf_u64_dec(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0, i = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        out[i++] = tmp[--n];
    return i;
}

/* Joins dir and name with exactly one '/' into a malloc'd string. */
char *tf_path_join(const char *dir, const char *name);

/* strdup that aborts on OOM is NOT provided on purpose: callers handle NULL. */

#endif
