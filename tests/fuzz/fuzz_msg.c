/*
 * fuzz_msg.c - libFuzzer driver for tf_msg_decode().
 *
 * Beyond "no crash, no leak", it checks the decoder's contract on every
 * input: a failure leaves the message cleared with a non-empty sentence;
 * a success re-encodes (an accepted message is always encodable), the
 * encoding decodes again, and a second encoding is byte-identical.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "tf_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_msg: invariant violated: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tf_msg_t m, again;
    char err[256];
    char *t1 = NULL, *t2 = NULL;
    size_t l1 = 0, l2 = 0;

    err[0] = 'X';
    int rc = tf_msg_decode((const char *)data, size, &m, err, sizeof err);
    if (rc != 0) {
        check(rc == TF_EINVAL || rc == TF_E2BIG || rc == TF_ENOMEM,
              "decode error code");
        check(err[0] != '\0' && err[0] != 'X', "decode error sentence");
        check(m.type == TF_MSG_NONE, "failed decode leaves message cleared");
        return 0;
    }
    check(m.type > TF_MSG_NONE && m.type < TF_MSG__COUNT, "decoded type");
    check(tf_msg_encode(&m, &t1, &l1) == 0, "decoded message re-encodes");
    check(tf_msg_decode(t1, l1, &again, err, sizeof err) == 0,
          "encoding decodes");
    check(tf_msg_encode(&again, &t2, &l2) == 0, "second encode");
    check(l1 == l2 && memcmp(t1, t2, l1) == 0, "encodings identical");
    free(t1);
    free(t2);
    tf_msg_clear(&again);
    tf_msg_clear(&m);
    return 0;
}
