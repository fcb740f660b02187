/*
 * fuzz_msg.c - libFuzzer driver for tf_msg_decode().
 *
 * Beyond "no crash, no leak", it checks the decoder's contract on every
 * input: a failure leaves the message cleared with a non-empty sentence;
 * a success re-encodes (an accepted message is always encodable), the
 * encoding decodes again, and a second encoding is byte-identical. And
 * the fast path (msgfast.c) must agree with jansson: the same rc, the same
 * sentence, the same fields, and it may only take what jansson accepts.
 * The other way, tf_msg_encode (whose one-pass writers take ack and
 * build_start) must write the jansson path's very bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "proto_int.h"
#include "tf_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_msg: invariant violated: %s\n", what);
        abort();
    }
}

/* Every field of the types the fast path reads, has_* flags or not. */
static int same_event(const tf_msg_t *a, const tf_msg_t *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case TF_MSG_PING:
    case TF_MSG_PONG:
        return a->u.ping.id == b->u.ping.id;
    case TF_MSG_ACK:
        return a->u.ack.build_id == b->u.ack.build_id &&
               a->u.ack.seq == b->u.ack.seq;
    case TF_MSG_STEP_STARTED: {
        const __typeof__(a->u.step_started) *x = &a->u.step_started,
                                            *y = &b->u.step_started;
        return x->build_id == y->build_id && x->seq == y->seq &&
               x->step == y->step && x->time_ms == y->time_ms &&
               strcmp(x->name, y->name) == 0;
    }
    case TF_MSG_STEP_FINISHED: {
        const __typeof__(a->u.step_finished) *x = &a->u.step_finished,
                                             *y = &b->u.step_finished;
        return x->build_id == y->build_id && x->seq == y->seq &&
               x->step == y->step && x->result == y->result &&
               x->has_exit_code == y->has_exit_code &&
               x->exit_code == y->exit_code &&
               x->has_signal == y->has_signal && x->signal == y->signal &&
               x->timed_out == y->timed_out &&
               x->duration_ms == y->duration_ms &&
               x->time_ms == y->time_ms && strcmp(x->text, y->text) == 0 &&
               (x->info == NULL) == (y->info == NULL) &&
               (!x->info || strcmp(x->info, y->info) == 0) &&
               x->nprops == y->nprops && x->nstats == y->nstats &&
               x->has_warnings == y->has_warnings &&
               x->warnings == y->warnings;
    }
    case TF_MSG_BUILD_FINISHED: {
        const __typeof__(a->u.build_finished) *x = &a->u.build_finished,
                                              *y = &b->u.build_finished;
        return x->build_id == y->build_id && x->seq == y->seq &&
               x->result == y->result && x->time_ms == y->time_ms;
    }
    default:
        return 1; /* jansson only: compared through their encodings */
    }
}

/* Decodes with the jansson path alone and checks it agrees with what
 * tf_msg_decode said (rc, sentence, fields). */
static void check_paths_agree(const uint8_t *data, size_t size, int rc,
                              const char *err, const tf_msg_t *m)
{
    tf_msg_t slow, fast;
    char serr[256];
    char *t1 = NULL, *t2 = NULL;
    size_t l1 = 0, l2 = 0;

    serr[0] = 'Y';
    int srt = tf__msg_decode_slow((const char *)data, size, &slow, serr,
                                  sizeof serr);
    check(srt == rc, "fast and jansson paths: same rc");
    check(strcmp(serr, err) == 0, "fast and jansson paths: same sentence");
    if (rc == 0) {
        check(same_event(m, &slow), "fast and jansson paths: same fields");
        check(tf_msg_encode(m, &t1, &l1) == 0 &&
                  tf_msg_encode(&slow, &t2, &l2) == 0 && l1 == l2 &&
                  memcmp(t1, t2, l1) == 0,
              "fast and jansson paths: same encoding");
        free(t1);
        free(t2);
    }
    tf_msg_clear(&slow);
    memset(&fast, 0, sizeof fast);
    if (size <= TF_PROTO_MAX_TEXT &&
        tf__msg_decode_fast((const char *)data, size, &fast)) {
        check(rc == 0, "fast path accepts only what jansson accepts");
        check(same_event(m, &fast), "fast path fills the same fields");
    } else {
        check(fast.type == TF_MSG_NONE, "fast path leaves nothing behind");
    }
    tf_msg_clear(&fast);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tf_msg_t m, again;
    char err[256];
    char *t1 = NULL, *t2 = NULL;
    size_t l1 = 0, l2 = 0;

    err[0] = 'X';
    int rc = tf_msg_decode((const char *)data, size, &m, err, sizeof err);
    check_paths_agree(data, size, rc, err, &m);
    if (rc != 0) {
        check(rc == TF_EINVAL || rc == TF_E2BIG || rc == TF_ENOMEM,
              "decode error code");
        check(err[0] != '\0' && err[0] != 'X', "decode error sentence");
        check(m.type == TF_MSG_NONE, "failed decode leaves message cleared");
        return 0;
    }
    check(m.type > TF_MSG_NONE && m.type < TF_MSG__COUNT, "decoded type");
    check(tf_msg_encode(&m, &t1, &l1) == 0, "decoded message re-encodes");
    /* The one-pass encoders (ack, build_start) write jansson's bytes. */
    check(tf__msg_encode_slow(&m, &t2, &l2, NULL, 0) == 0 && l1 == l2 &&
              memcmp(t1, t2, l1) == 0,
          "fast and jansson encoders: same bytes");
    free(t2);
    t2 = NULL;
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
