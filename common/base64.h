/*
 * base64.h - RFC 4648 base64, standard alphabet, with padding.
 *
 * The decoder is strict: it accepts only the standard alphabet, requires
 * correct padding and refuses whitespace, so one patch has exactly one
 * encoding and a corrupted upload is an error rather than a different patch.
 */
#ifndef TF_BASE64_H
#define TF_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Bytes needed to encode n bytes, plus the NUL. */
size_t tf_base64_encoded_len(size_t n);

/* Encodes n bytes into out (tf_base64_encoded_len(n) bytes), NUL-ended. */
void tf_base64_encode(const void *data, size_t n, char *out);

/* Upper bound of the decoded size of a text of len characters. */
size_t tf_base64_decoded_max(size_t len);

/* Decodes text[0..len) into out (tf_base64_decoded_max(len) bytes).
 * Returns 0 and *outlen, or TF_EINVAL for anything not canonical base64. */
int tf_base64_decode(const char *text, size_t len, uint8_t *out,
                     size_t *outlen);

#endif
