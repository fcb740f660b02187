/*
 * tf_test.h - a tiny unit-test harness: TF_TEST(name) defines a test,
 * TF_CHECK* record failures with file:line and keep going, and
 * TF_TEST_MAIN() runs every test in registration order and prints
 * "N passed, N failed" (exit status 1 when anything failed).
 */
#ifndef TF_TEST_H
#define TF_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*tf_test_fn)(void);
struct tf_test_entry {
    const char *name;
    tf_test_fn fn;
};

static struct tf_test_entry tf__tests[512];
static int tf__ntests;
static int tf__failed_checks;

#define TF_TEST(name)                                                          \
    static void name(void);                                                    \
    __attribute__((constructor)) static void name##_register(void)             \
    {                                                                          \
        if (tf__ntests < 512)                                                  \
            tf__tests[tf__ntests++] = (struct tf_test_entry){#name, name};     \
    }                                                                          \
    static void name(void)

#define TF_CHECK(cond)                                                         \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            tf__failed_checks++;                                               \
        }                                                                      \
    } while (0)

#define TF_CHECK_INT(a, b)                                                     \
    do {                                                                       \
        long long tf__a = (long long)(a), tf__b = (long long)(b);              \
        if (tf__a != tf__b) {                                                  \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n",          \
                    __FILE__, __LINE__, #a, #b, tf__a, tf__b);                 \
            tf__failed_checks++;                                               \
        }                                                                      \
    } while (0)

#define TF_CHECK_STR(a, b)                                                     \
    do {                                                                       \
        const char *tf__a = (a), *tf__b = (b);                                 \
        if (!tf__a || !tf__b || strcmp(tf__a, tf__b) != 0) {                   \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n",      \
                    __FILE__, __LINE__, #a, #b, tf__a ? tf__a : "(null)",      \
                    tf__b ? tf__b : "(null)");                                 \
            tf__failed_checks++;                                               \
        }                                                                      \
    } while (0)

#define TF_TEST_MAIN()                                                         \
    int main(int argc, char **argv)                                            \
    {                                                                          \
        int passed = 0, failed = 0;                                            \
        for (int i = 0; i < tf__ntests; i++) {                                 \
            if (argc > 1 && strcmp(argv[1], tf__tests[i].name) != 0)           \
                continue;                                                      \
            int before = tf__failed_checks;                                    \
            tf__tests[i].fn();                                                 \
            if (tf__failed_checks == before) {                                 \
                passed++;                                                      \
                printf("ok %s\n", tf__tests[i].name);                          \
            } else {                                                           \
                failed++;                                                      \
                printf("FAIL %s\n", tf__tests[i].name);                        \
            }                                                                  \
        }                                                                      \
        printf("%d passed, %d failed\n", passed, failed);                      \
        return failed ? 1 : 0;                                                 \
    }

#endif
