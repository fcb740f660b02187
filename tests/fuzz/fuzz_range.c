/*
 * fuzz_range.c - libFuzzer driver for tf_range_parse() (common/range.c).
 *
 * The input's first 8 bytes are the resource size, the rest the header
 * value. Checks the contract: the outcome is one of the three; on success
 * the range is non-empty and inside the resource; a range that starts at
 * or past the end is never "OK"; and the answer does not depend on the
 * unit's case.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "range.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_range: invariant violated: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t len = 0;
    if (size < 8)
        return 0;
    memcpy(&len, data, 8);
    if (data[0] & 1)
        len %= 100000; /* mostly small resources too */
    char h[256];
    size_t n = size - 8 < sizeof(h) - 1 ? size - 8 : sizeof(h) - 1;
    memcpy(h, data + 8, n);
    h[n] = '\0';
    uint64_t s = 7, e = 7;
    int rc = tf_range_parse(h, len, &s, &e);
    check(rc == TF_RANGE_OK || rc == TF_RANGE_UNSATISFIABLE ||
              rc == TF_RANGE_MALFORMED,
          "outcome");
    if (rc == TF_RANGE_OK) {
        check(s < e, "non-empty");
        check(e <= len, "inside the resource");
    } else {
        check(s == 7 && e == 7, "untouched unless OK");
    }
    /* The unit is case-insensitive. */
    if (strncmp(h, "bytes", 5) == 0) {
        char u[256];
        memcpy(u, h, n + 1);
        for (int i = 0; i < 5; i++)
            u[i] = (char)toupper((unsigned char)u[i]);
        uint64_t s2 = 7, e2 = 7;
        int rc2 = tf_range_parse(u, len, &s2, &e2);
        check(rc2 == rc && (rc != TF_RANGE_OK || (s2 == s && e2 == e)),
              "unit case");
    }
    return 0;
}
