/*
 * fuzz_bstart.c - libFuzzer driver for tf-loadslaves' one-pass reader of
 * build_start (tests/bench/lsmsg.c, ls_bstart_parse).
 *
 * The reader only accepts. On every input it is held to its contract
 * with tf_msg_decode: when it takes a text, either tf_msg_decode takes it
 * too and the fields the emulator uses are the same both ways, or
 * tf_msg_decode refuses it for a member of one step or of the source
 * (what the reader walks but does not judge) and jansson still parses the
 * text (duplicate keys refused) with the same fields.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "lsmsg.h"
#include "proto.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_bstart: invariant violated: %s\n", what);
        abort();
    }
}

static int same(const ls_bstart_t *a, const ls_bstart_t *b)
{
    return a->build_id == b->build_id && strcmp(a->builder, b->builder) == 0 &&
           a->nsteps == b->nsteps && a->has_t0 == b->has_t0 &&
           a->t0 == b->t0;
}

/* "build_start.steps[N]." or "build_start.source." */
static int unjudged(const char *err)
{
    const char *p = err;
    if (strncmp(p, "build_start.source.", 19) == 0)
        return 1;
    if (strncmp(p, "build_start.steps[", 18) != 0)
        return 0;
    p += 18;
    if (*p < '0' || *p > '9')
        return 0;
    while (*p >= '0' && *p <= '9')
        p++;
    return p[0] == ']' && p[1] == '.';
}

/* The fields as the jansson tree has them. */
static int tree(const uint8_t *data, size_t size, ls_bstart_t *out)
{
    json_error_t je;
    json_t *root = json_loadb((const char *)data, size,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    int ok = 0;
    memset(out, 0, sizeof(*out));
    if (!root)
        return 0;
    json_t *id = json_object_get(root, "build_id");
    json_t *b = json_object_get(root, "builder");
    json_t *st = json_object_get(root, "steps");
    json_t *pr = json_object_get(root, "properties");
    if (json_is_integer(id) && json_is_string(b) && json_is_array(st) &&
        json_is_object(pr) && strlen(json_string_value(b)) <= TF_NAME_MAX) {
        uint64_t v;
        json_t *t0 = json_object_get(pr, LS_T0_PROP);
        out->build_id = (uint64_t)json_integer_value(id);
        snprintf(out->builder, sizeof(out->builder), "%s",
                 json_string_value(b));
        out->nsteps = json_array_size(st);
        if (json_is_string(t0) &&
            tf_parse_u64(json_string_value(t0), &v) == 0) {
            out->has_t0 = true;
            out->t0 = v;
        }
        ok = 1;
    }
    json_decref(root);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ls_bstart_t fast, slow;
    tf_msg_t m;
    char err[512];
    if (!ls_bstart_parse(data, size, &fast))
        return 0;
    int rc = tf_msg_decode((const char *)data, size, &m, err, sizeof(err));
    if (rc == 0) {
        check(m.type == TF_MSG_BUILD_START, "took a message of another type");
        ls_bstart_from_msg(&m, &slow);
        check(same(&fast, &slow), "fields differ from tf_msg_decode's");
        tf_msg_clear(&m);
        return 0;
    }
    check(unjudged(err), "took a text tf_msg_decode refuses outside a step "
          "or the source");
    check(tree(data, size, &slow), "took a text jansson does not parse");
    check(same(&fast, &slow), "fields differ from the jansson tree's");
    return 0;
}
