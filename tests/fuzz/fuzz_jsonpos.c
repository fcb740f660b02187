/*
 * fuzz_jsonpos.c - libFuzzer driver for tf_jsonpos_index() and
 * tf_jsonpos_find(), the positions config diagnostics point at.
 *
 * Any input: indexing never crashes and answers 0, TF_EINVAL or
 * TF_ENOMEM. For a document jansson accepts (as the config loader parses
 * it) that holds no NUL byte (jansson lets one pass between tokens; the
 * loader refuses it before), indexing succeeds, and every value jansson
 * sees (walked by JSON Pointer, at most 2000 of them) is found at a line
 * and column inside the text, with a key position for object members.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "jsonpos.h"
#include "tf_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_jsonpos: invariant violated: %s\n", what);
        abort();
    }
}

typedef struct walk {
    const tf_jsonpos_t *idx;
    int lines;  /* lines in the text */
    int budget; /* values left to look up */
} walk_t;

static void visit(walk_t *w, json_t *v, char *ptr, size_t len, bool member)
{
    int line = 0, col = 0, kl = 0, kc = 0;
    if (w->budget-- <= 0)
        return;
    ptr[len] = '\0';
    int rc = tf_jsonpos_find(w->idx, ptr, &line, &col, &kl, &kc);
    check(rc == 0, "every value jansson sees is indexed");
    check(line >= 1 && line <= w->lines && col >= 1, "value position in text");
    check(member ? kl >= 1 && kc >= 1 : kl == 0, "key position of members");
    if (json_is_object(v)) {
        const char *k;
        json_t *e;
        json_object_foreach(v, k, e) {
            size_t n = len;
            if (n + 1 >= 4000)
                return;
            ptr[n++] = '/';
            for (const char *c = k; *c && n + 2 < 4000; c++) {
                if (*c == '~' || *c == '/') {
                    ptr[n++] = '~';
                    ptr[n++] = *c == '~' ? '0' : '1';
                } else {
                    ptr[n++] = *c;
                }
            }
            if (n + 2 >= 4000)
                return;
            visit(w, e, ptr, n, true);
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            int k = snprintf(ptr + len, 4000 - len, "/%zu", i);
            if (k < 0 || len + (size_t)k >= 4000)
                return;
            visit(w, json_array_get(v, i), ptr, len + (size_t)k, false);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tf_jsonpos_t *idx = NULL;
    json_error_t jerr;
    int rc = tf_jsonpos_index((const char *)data, size, &idx);
    check(rc == 0 || rc == TF_EINVAL || rc == TF_ENOMEM, "index answer");
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES,
                              &jerr);
    if (root && !memchr(data, 0, size)) {
        check(rc == 0 || rc == TF_ENOMEM, "what jansson parses is indexed");
        if (rc == 0) {
            char *ptr = malloc(4001);
            walk_t w = {.idx = idx, .lines = 1, .budget = 2000};
            for (size_t i = 0; i < size; i++)
                w.lines += data[i] == '\n';
            if (ptr)
                visit(&w, root, ptr, 0, false);
            free(ptr);
        }
    }
    json_decref(root);
    tf_jsonpos_free(idx);
    return 0;
}
