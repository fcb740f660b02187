/*
 * test_base64.c - tf-try's base64 encoder against RFC 4648's test vectors,
 * binary input, and the job body it goes into.
 */
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "tf_test.h"

static void check_b64(const char *in, size_t n, const char *want)
{
    char *out = NULL;
    size_t len = 0;
    TF_CHECK_INT(tf_try_base64_encode((const uint8_t *)in, n, &out, &len), 0);
    TF_CHECK_STR(out, want);
    TF_CHECK_INT(len, strlen(want));
    free(out);
}

/* RFC 4648, section 10. */
TF_TEST(rfc4648_vectors)
{
    check_b64("", 0, "");
    check_b64("f", 1, "Zg==");
    check_b64("fo", 2, "Zm8=");
    check_b64("foo", 3, "Zm9v");
    check_b64("foob", 4, "Zm9vYg==");
    check_b64("fooba", 5, "Zm9vYmE=");
    check_b64("foobar", 6, "Zm9vYmFy");
}

TF_TEST(binary_bytes_and_alphabet_ends)
{
    /* Bytes that map to '+' and '/' (62 and 63) and NULs. */
    check_b64("\xfb\xff\xbf", 3, "+/+/");
    check_b64("\0\0\0", 3, "AAAA");
    check_b64("\0", 1, "AA==");
    check_b64("\xff\xff", 2, "//8=");
}

TF_TEST(every_byte_round_trip_length)
{
    uint8_t all[256];
    char *out = NULL;
    size_t len = 0;
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    TF_CHECK_INT(tf_try_base64_encode(all, sizeof(all), &out, &len), 0);
    TF_CHECK_INT(len, 344); /* 4 * ceil(256 / 3) */
    TF_CHECK(out && out[len] == '\0');
    TF_CHECK(out && strncmp(out, "AAECAwQFBgcICQoLDA0ODxAREhMU", 28) == 0);
    TF_CHECK(out && strcmp(out + len - 8, "/P3+/w==") == 0);
    free(out);
}

TF_TEST(job_body_puts_patch_first)
{
    json_t *meta = json_pack("{s:[s], s:s}", "builders", "b1", "description",
                             "a \"quoted\" text");
    tf_buf_t body;
    tf_buf_init(&body, 0);
    TF_CHECK_INT(tf_try_job_body(meta, "Zm9v", 4, &body), 0);
    TF_CHECK_STR((const char *)body.data,
                 "{\"patch\":\"Zm9v\",\"builders\":[\"b1\"],\"description\":"
                 "\"a \\\"quoted\\\" text\"}");
    /* The result parses back to the same metadata plus the patch. */
    json_t *back = json_loadb((const char *)body.data, body.len, 0, NULL);
    TF_CHECK(back != NULL);
    TF_CHECK_STR(json_string_value(json_object_get(back, "patch")), "Zm9v");
    json_decref(back);
    json_decref(meta);
    tf_buf_free(&body);

    json_t *empty = json_object();
    tf_buf_init(&body, 0);
    TF_CHECK_INT(tf_try_job_body(empty, "", 0, &body), 0);
    TF_CHECK_STR((const char *)body.data, "{\"patch\":\"\"}");
    json_decref(empty);
    tf_buf_free(&body);
}

TF_TEST(urls)
{
    char *b = tf_try_base_url("http://127.0.0.1:8010");
    TF_CHECK_STR(b, "http://127.0.0.1:8010/");
    char *u = tf_try_url(b, "api/v1/jobs/%d", 7);
    TF_CHECK_STR(u, "http://127.0.0.1:8010/api/v1/jobs/7");
    free(u);
    free(b);
    b = tf_try_base_url("https://ci.example.org/tf/");
    TF_CHECK_STR(b, "https://ci.example.org/tf/");
    free(b);
}

TF_TEST(error_message_from_master)
{
    tf_try_resp_t r;
    char msg[512];
    memset(&r, 0, sizeof(r));
    tf_buf_init(&r.body, 0);
    tf_buf_append_str(&r.body, "{\"error\": {\"status\": 400, \"message\": "
                               "\"unknown builder \\\"foo\\\"; known builders: "
                               "a, b\\n\"}}");
    tf_try_resp_error(&r, msg, sizeof(msg));
    TF_CHECK_STR(msg, "unknown builder \"foo\"; known builders: a, b");
    tf_buf_reset(&r.body);
    tf_buf_append_str(&r.body, "<html>\x1b[31mbad gateway</html>");
    tf_try_resp_error(&r, msg, sizeof(msg));
    TF_CHECK_STR(msg, "<html>?[31mbad gateway</html>");
    tf_buf_reset(&r.body);
    tf_try_resp_error(&r, msg, sizeof(msg));
    TF_CHECK_STR(msg, "no explanation given");
    tf_try_resp_free(&r);
}

TF_TEST_MAIN()
