/*
 * crypto.c - SHA-256, HMAC-SHA256, random hex and constant-time comparison
 * on OpenSSL 3.
 *
 * The void functions cannot report failure; when OpenSSL fails (only on
 * allocation failure in practice) they write an empty string, which never
 * equals a real digest, so a comparison against it fails closed.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "crypto.h"
#include "tf_err.h"

struct tf_sha256 {
    EVP_MD_CTX *ctx;
    bool failed; /* an update failed; the final digest is not trustworthy */
};

static void tf_hex(const unsigned char *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void tf_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!data)
        data = "";
    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
        out[0] = '\0';
        return;
    }
    tf_hex(md, mdlen, out);
}

tf_sha256_t *tf_sha256_new(void)
{
    tf_sha256_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || !EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(h->ctx);
        free(h);
        return NULL;
    }
    return h;
}

void tf_sha256_update(tf_sha256_t *h, const void *p, size_t n)
{
    if (!h || n == 0)
        return;
    if (!EVP_DigestUpdate(h->ctx, p, n))
        h->failed = true;
}

void tf_sha256_final_hex(tf_sha256_t *h, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    out[0] = '\0';
    if (!h)
        return;
    if (!h->failed && EVP_DigestFinal_ex(h->ctx, md, &mdlen) && mdlen == 32)
        tf_hex(md, mdlen, out);
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

void tf_hmac_sha256_hex(const void *key, size_t keylen, const void *msg,
                        size_t msglen, char out[65])
{
    /* OpenSSL treats a NULL key specially; an empty key is a real key. */
    static const unsigned char empty[1];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    out[0] = '\0';
    if (keylen > INT_MAX)
        return;
    if (!key || keylen == 0)
        key = empty;
    if (!msg)
        msg = empty;
    if (!HMAC(EVP_sha256(), key, (int)keylen, msg, msglen, md, &mdlen) ||
        mdlen != 32)
        return;
    tf_hex(md, mdlen, out);
}

int tf_random_hex(size_t nbytes, char *out)
{
    unsigned char chunk[64];
    size_t done = 0;
    while (done < nbytes) {
        size_t n = nbytes - done < sizeof chunk ? nbytes - done : sizeof chunk;
        if (RAND_bytes(chunk, (int)n) != 1) {
            OPENSSL_cleanse(chunk, sizeof chunk);
            out[0] = '\0';
            return TF_EIO;
        }
        tf_hex(chunk, n, out + 2 * done);
        done += n;
    }
    out[2 * nbytes] = '\0';
    OPENSSL_cleanse(chunk, sizeof chunk);
    return 0;
}

int tf_random_bytes(void *out, size_t nbytes)
{
    unsigned char *p = out;
    while (nbytes) {
        int n = nbytes < 4096 ? (int)nbytes : 4096;
        if (RAND_bytes(p, n) != 1)
            return TF_EIO;
        p += n;
        nbytes -= (size_t)n;
    }
    return 0;
}

bool tf_ct_streq(const char *a, const char *b)
{
    if (!a || !b)
        return false;
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb)
        return false;
    return CRYPTO_memcmp(a, b, la) == 0;
}
