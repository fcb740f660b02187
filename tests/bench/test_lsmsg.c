/*
 * test_lsmsg.c - tf-loadslaves' fast writers and ack reader (lsmsg.h)
 * against proto/: the writers' bytes are tf_msg_encode's, and the ack
 * reader takes exactly the canonical acks tf_msg_decode takes and leaves
 * everything else to it.
 */
#include "lsmsg.h"
#include "tf_err.h"
#include "tf_test.h"

static bool parse(const char *s, uint64_t *b, uint64_t *q)
{
    return ls_ack_parse((const uint8_t *)s, strlen(s), b, q);
}

TF_TEST(selftest_passes)
{
    char err[512] = "";
    int rc = ls_msg_selftest(err, sizeof(err));
    if (rc)
        fprintf(stderr, "%s\n", err);
    TF_CHECK(rc == 0);
}

TF_TEST(ack_reader_takes_the_canonical_form)
{
    uint64_t b = 0, q = 0;
    TF_CHECK(parse("{\"type\":\"ack\",\"build_id\":1,\"seq\":0}", &b, &q));
    TF_CHECK(b == 1 && q == 0);
    TF_CHECK(parse("{\"type\":\"ack\",\"build_id\":9007199254740991,"
                   "\"seq\":9007199254740991}", &b, &q));
    TF_CHECK(b == TF_PROTO_MAX_ID && q == TF_PROTO_MAX_ID);
}

TF_TEST(ack_reader_leaves_the_rest_to_the_decoder)
{
    static const char *other[] = {
        "{\"type\":\"ack\",\"build_id\":0,\"seq\":1}",  /* id out of range */
        "{\"type\":\"ack\",\"build_id\":9007199254740992,\"seq\":1}",
        "{\"type\":\"ack\",\"build_id\":99999999999999999999999,\"seq\":1}",
        "{\"type\":\"ack\",\"build_id\":01,\"seq\":1}", /* leading zero */
        "{\"type\":\"ack\",\"build_id\":-1,\"seq\":1}",
        "{\"type\":\"ack\",\"build_id\":1.0,\"seq\":1}",
        "{\"type\":\"ack\",\"build_id\":1e3,\"seq\":1}",
        "{\"type\":\"ack\",\"build_id\":1,\"seq\":}",
        "{\"type\":\"ack\",\"build_id\":1,\"seq\":2,\"seq\":3}",
        "{\"type\":\"ack\",\"build_id\":1,\"seq\":2} ",
        "{\"type\":\"ack\", \"build_id\":1,\"seq\":2}",
        "{\"type\":\"ack\",\"build_id\":1,\"seq\":2",
        "{\"type\":\"ack\",\"seq\":2,\"build_id\":1}", /* valid, other order */
        "{\"type\":\"ackx\",\"build_id\":1,\"seq\":2}",
        "",
    };
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        uint64_t b = 7, q = 7;
        TF_CHECK(!parse(other[i], &b, &q));
        TF_CHECK(b == 7 && q == 7);
    }
}

TF_TEST(writers_refuse_what_the_decoder_refuses)
{
    char out[LS_MSG_MAX];
    size_t len = 1;
    tf_msg_t m = {.type = TF_MSG_STEP_STARTED};
    m.u.step_started.build_id = 1;
    m.u.step_started.seq = 0; /* event numbers start at 1 */
    m.u.step_started.name = "step";
    TF_CHECK(ls_msg_encode(&m, out, sizeof(out), &len) == TF_EINVAL);
    TF_CHECK(len == 0);
    m.u.step_started.seq = 1;
    m.u.step_started.name = "not a name";
    TF_CHECK(ls_msg_encode(&m, out, sizeof(out), &len) == TF_EINVAL);
    m.u.step_started.name = "step";
    TF_CHECK(ls_msg_encode(&m, out, 10, &len) == TF_E2BIG);
    TF_CHECK(ls_msg_encode(&m, out, sizeof(out), &len) == 0 && len > 10);
    tf_msg_t f = {.type = TF_MSG_STEP_FINISHED};
    f.u.step_finished.build_id = 1;
    f.u.step_finished.seq = 2;
    f.u.step_finished.text = "bad \xff UTF-8";
    TF_CHECK(ls_msg_encode(&f, out, sizeof(out), &len) == TF_EINVAL);
    f.u.step_finished.text = "ok";
    f.u.step_finished.has_warnings = true; /* left to tf_msg_encode */
    TF_CHECK(ls_msg_encode(&f, out, sizeof(out), &len) == TF_ESTATE);
    tf_msg_t h = {.type = TF_MSG_HELLO};
    TF_CHECK(ls_msg_encode(&h, out, sizeof(out), &len) == TF_ESTATE);
}

TF_TEST_MAIN()
