/*
 * test_props.c - %(prop:NAME)s interpolation and base64.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base64.h"
#include "core/props.h"
#include "tf_err.h"
#include "tf_test.h"

static void expect(const char *in, const char *want, json_t *props)
{
    char *out = tf_interpolate(in, props);
    TF_CHECK_STR(out, want);
    free(out);
}

TF_TEST(interpolation)
{
    json_t *p = json_pack("{s:s,s:s,s:s}", "tests", "a b", "builder", "linux",
                          "empty", "");
    expect("make %(prop:tests)s", "make a b", p);
    expect("%(prop:builder)s-%(prop:builder)s", "linux-linux", p);
    expect("x%(prop:missing)sy", "xy", p);
    expect("%(prop:missing:-all)s", "all", p);
    expect("%(prop:empty:-dflt)s", "dflt", p);
    expect("%(prop:tests:-dflt)s", "a b", p);
    expect("100% sure %s %(x)s", "100% sure %s %(x)s", p);
    expect("%(prop:unclosed", "%(prop:unclosed", p);
    expect("", "", p);
    expect("no props", "no props", NULL);
    json_decref(p);
}

static void b64(const char *in, const char *want)
{
    size_t n = strlen(in);
    char *enc = malloc(tf_base64_encoded_len(n));
    tf_base64_encode(in, n, enc);
    TF_CHECK_STR(enc, want);
    uint8_t *dec = malloc(tf_base64_decoded_max(strlen(enc)) + 1);
    size_t got = 0;
    TF_CHECK_INT(tf_base64_decode(enc, strlen(enc), dec, &got), 0);
    TF_CHECK_INT(got, n);
    TF_CHECK(memcmp(dec, in, n) == 0);
    free(enc);
    free(dec);
}

TF_TEST(base64_rfc4648_vectors)
{
    b64("", "");
    b64("f", "Zg==");
    b64("fo", "Zm8=");
    b64("foo", "Zm9v");
    b64("foob", "Zm9vYg==");
    b64("fooba", "Zm9vYmE=");
    b64("foobar", "Zm9vYmFy");
}

TF_TEST(base64_binary_and_errors)
{
    uint8_t all[256], dec[400];
    char enc[400];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    tf_base64_encode(all, sizeof all, enc);
    size_t got = 0;
    TF_CHECK_INT(tf_base64_decode(enc, strlen(enc), dec, &got), 0);
    TF_CHECK_INT(got, 256);
    TF_CHECK(memcmp(dec, all, 256) == 0);
    const char *bad[] = {"Zg=", "Zg", "Z===", "Zm9v\nYg==", "Zh==", "Zm9=",
                         "Zg==Zg==", "Zm-v", "Zm_v", "Zm9v Yg=="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        TF_CHECK_INT(tf_base64_decode(bad[i], strlen(bad[i]), dec, &got),
                     TF_EINVAL);
}

TF_TEST_MAIN()
