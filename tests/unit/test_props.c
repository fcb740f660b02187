/*
 * test_props.c - %(prop:NAME)s interpolation and base64.
 */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
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

/* Runs script with /bin/sh -c and returns what it printed (malloc'd). */
static char *sh_output(const char *script)
{
    int fds[2];
    if (pipe(fds) != 0)
        return NULL;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl("/bin/sh", "sh", "-c", script, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char *out = calloc(1, 65536);
    size_t n = 0;
    ssize_t r;
    while (out && n < 65535 && (r = read(fds[0], out + n, 65535 - n)) > 0)
        n += (size_t)r;
    close(fds[0]);
    waitpid(pid, NULL, 0);
    return out;
}

/* Every hostile value, in every quoting context, reaches the shell's
 * printf as exactly one argument holding exactly the value. */
TF_TEST(shell_strings_take_values_as_one_word)
{
    static const char *const values[] = {
        "x; echo INJECTED-$((6*7)); echo",
        "$(touch /tmp/tf-props-injected)",
        "`id`",
        "a'b",
        "a\"b",
        "back\\slash",
        "'; echo INJECTED; '",
        "\"; echo INJECTED; \"",
        "two words  and\ttab",
        "*",
        "$HOME",
        "line\nbreak",
        "",
    };
    static const char *const templates[] = {
        "printf '[%s]' %(prop:v)s",
        "printf '[%s]' '%(prop:v)s'",
        "printf '[%s]' \"%(prop:v)s\"",
        "printf '[%s]' \\%(prop:v)s",
        "printf '[%s]' \"\\%(prop:v)s\"",
    };
    for (size_t i = 0; i < sizeof(values) / sizeof(*values); i++) {
        json_t *p = json_pack("{s:s}", "v", values[i]);
        for (size_t t = 0; t < sizeof(templates) / sizeof(*templates); t++) {
            char *script = tf_interpolate_shell(templates[t], p);
            TF_CHECK(script != NULL);
            char *out = sh_output(script);
            char want[256];
            /* the templates with a backslash before the placeholder
             * keep the value; the backslash itself is absorbed */
            snprintf(want, sizeof(want), "[%s]", values[i]);
            if (values[i][0] == '\0' && (t == 0 || t == 3))
                snprintf(want, sizeof(want), "[]");
            TF_CHECK_STR(out, want);
            free(out);
            free(script);
        }
        json_decref(p);
    }
    TF_CHECK(access("/tmp/tf-props-injected", F_OK) != 0);
}

TF_TEST(shell_defaults_and_plain_text)
{
    json_t *p = json_pack("{s:s}", "tests", "a b");
    char *s = tf_interpolate_shell("echo %(prop:tests)s %(prop:x:-all)s", p);
    TF_CHECK_STR(s, "echo 'a b' 'all'");
    free(s);
    s = tf_interpolate_shell("make check TESTS='%(prop:tests)s'", p);
    TF_CHECK_STR(s, "make check TESTS='a b'");
    free(s);
    s = tf_interpolate_shell("echo \"it's %(prop:tests)s\" 100%", p);
    TF_CHECK_STR(s, "echo \"it's a b\" 100%");
    free(s);
    s = tf_interpolate_shell("echo x%(prop:missing)sy", p);
    TF_CHECK_STR(s, "echo x''y");
    free(s);
    json_decref(p);
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
