/*
 * crypto.h - hashing, HMAC, randomness and constant-time comparison, on
 * OpenSSL. Hex output is lower case.
 */
#ifndef TF_CRYPTO_H
#define TF_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TF_SHA256_HEX_LEN 64

/* Writes the SHA-256 of data as 64 hex chars + NUL into out[65]. */
void tf_sha256_hex(const void *data, size_t len, char out[65]);

/* Incremental SHA-256 for streams (logs, patches). */
typedef struct tf_sha256 tf_sha256_t;
tf_sha256_t *tf_sha256_new(void);                             /* NULL on OOM */
void tf_sha256_update(tf_sha256_t *h, const void *p, size_t n);
void tf_sha256_final_hex(tf_sha256_t *h, char out[65]);      /* frees h */

/* HMAC-SHA256(key, msg) as hex into out[65]. */
void tf_hmac_sha256_hex(const void *key, size_t keylen, const void *msg,
                        size_t msglen, char out[65]);

/* Fills out with nbytes random bytes as 2*nbytes hex chars + NUL.
 * out must hold 2*nbytes+1. Returns 0 or TF_EIO. */
int tf_random_hex(size_t nbytes, char *out);

/* Fills out[0..nbytes) with random bytes from OpenSSL's generator (a
 * websocket masking key, a nonce). Returns 0 or TF_EIO. */
int tf_random_bytes(void *out, size_t nbytes);

/* Compares two NUL-terminated strings in time independent of where they
 * differ (lengths may leak). */
bool tf_ct_streq(const char *a, const char *b);

#endif
