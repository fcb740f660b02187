/*
 * test_jsonpos.c - the JSON position index: pointers (with ~0/~1), value
 * and key positions across lines, escapes and UTF-8 in keys, and strict
 * rejection of malformed text.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "jsonpos.h"
#include "tf_err.h"
#include "tf_test.h"

static tf_jsonpos_t *index_of(const char *text)
{
    tf_jsonpos_t *idx = NULL;
    int rc = tf_jsonpos_index(text, strlen(text), &idx);
    TF_CHECK_INT(rc, 0);
    TF_CHECK(idx != NULL);
    return idx;
}

/* Checks the value position of ptr and its key position (0,0 = no key). */
#define CHECK_POS(idx, ptr, l, c, kl, kc)                                      \
    do {                                                                       \
        int l_ = -1, c_ = -1, kl_ = -1, kc_ = -1;                              \
        TF_CHECK_INT(tf_jsonpos_find((idx), (ptr), &l_, &c_, &kl_, &kc_), 0);  \
        TF_CHECK_INT(l_, (l));                                                 \
        TF_CHECK_INT(c_, (c));                                                 \
        TF_CHECK_INT(kl_, (kl));                                               \
        TF_CHECK_INT(kc_, (kc));                                               \
    } while (0)

#define CHECK_MISSING(idx, ptr)                                                \
    TF_CHECK_INT(tf_jsonpos_find((idx), (ptr), NULL, NULL, NULL, NULL),        \
                 TF_ENOENT)

TF_TEST(nested_objects_and_arrays)
{
    const char *text = "{\n"                                  /* line 1 */
                       "  \"builders\": [\n"                  /* line 2 */
                       "    {\"name\": \"a\", \"steps\": [\n" /* line 3 */
                       "      {\"timeout\": 5},\n"            /* line 4 */
                       "      {\"timeout\": 6, \"x\": [1, [2, {}]]}\n"
                       "    ]},\n"                            /* line 6 */
                       "    null\n"                           /* line 7 */
                       "  ],\n"                               /* line 8 */
                       "  \"n\": -1.5e+3\n"                   /* line 9 */
                       "}\n";
    tf_jsonpos_t *idx = index_of(text);
    CHECK_POS(idx, "", 1, 1, 0, 0);
    CHECK_POS(idx, "/builders", 2, 15, 2, 3);
    CHECK_POS(idx, "/builders/0", 3, 5, 0, 0);
    CHECK_POS(idx, "/builders/0/name", 3, 14, 3, 6);
    CHECK_POS(idx, "/builders/0/steps", 3, 28, 3, 19);
    CHECK_POS(idx, "/builders/0/steps/0", 4, 7, 0, 0);
    CHECK_POS(idx, "/builders/0/steps/0/timeout", 4, 19, 4, 8);
    CHECK_POS(idx, "/builders/0/steps/1/timeout", 5, 19, 5, 8);
    CHECK_POS(idx, "/builders/0/steps/1/x", 5, 27, 5, 22);
    CHECK_POS(idx, "/builders/0/steps/1/x/0", 5, 28, 0, 0);
    CHECK_POS(idx, "/builders/0/steps/1/x/1", 5, 31, 0, 0);
    CHECK_POS(idx, "/builders/0/steps/1/x/1/0", 5, 32, 0, 0);
    CHECK_POS(idx, "/builders/0/steps/1/x/1/1", 5, 35, 0, 0);
    CHECK_POS(idx, "/builders/1", 7, 5, 0, 0);
    CHECK_POS(idx, "/n", 9, 8, 9, 3);

    CHECK_MISSING(idx, "/builders/2");
    CHECK_MISSING(idx, "/builders/0/nope");
    CHECK_MISSING(idx, "/builders/01");  /* not a canonical index */
    CHECK_MISSING(idx, "/builders/-");
    CHECK_MISSING(idx, "/builders/0/name/x"); /* into a scalar */
    CHECK_MISSING(idx, "/builders/1/x");      /* into null */
    CHECK_MISSING(idx, "/builders/0/steps/1/x/1/1/0"); /* empty object */
    CHECK_MISSING(idx, "builders");                    /* no leading '/' */
    CHECK_MISSING(idx, "/builders/99999999999999999999999999");
    TF_CHECK_INT(tf_jsonpos_find(NULL, "", NULL, NULL, NULL, NULL), TF_ENOENT);
    TF_CHECK_INT(tf_jsonpos_find(idx, NULL, NULL, NULL, NULL, NULL), TF_ENOENT);
    tf_jsonpos_free(idx);
}

TF_TEST(pointer_escaping)
{
    /* RFC 6901's own examples, plus the empty key and a bare "~". */
    const char *text =
        "{\"a/b\": 1, \"m~n\": 2, \"~1\": 3, \"\": 4, \"~\": 5,\n"
        " \"x\": {\"\": {\"/\": 6}}}";
    tf_jsonpos_t *idx = index_of(text);
    CHECK_POS(idx, "/a~1b", 1, 9, 1, 2);
    CHECK_POS(idx, "/m~0n", 1, 19, 1, 12);
    CHECK_POS(idx, "/~01", 1, 28, 1, 22);
    CHECK_POS(idx, "/", 1, 35, 1, 31);
    CHECK_POS(idx, "/~0", 1, 43, 1, 38);
    CHECK_POS(idx, "/x//~1", 2, 18, 2, 13);
    CHECK_MISSING(idx, "/a/b");  /* '/' in a key must be escaped */
    CHECK_MISSING(idx, "/~1");   /* that is "/", not "~1" */
    CHECK_MISSING(idx, "/m~2n"); /* not an escape */
    CHECK_MISSING(idx, "/~");    /* a lone '~' is not a valid token */
    tf_jsonpos_free(idx);
}

TF_TEST(escapes_and_unicode)
{
    /* Columns count bytes: "é" is two, "€" three, "😀" four. */
    const char *text = "{\"\\u00e9t\\u00E9\": \"caf\xc3\xa9 \\\"\\\\\\/\\b\","
                       " \"q\\\"uote\": [\"\xe2\x82\xac\", 7],\n"
                       "\"\xf0\x9f\x98\x80\": true, \"\\ud83d\\ude00x\": false,"
                       " \"tab\\tnl\\n\": null, \"\xc3\xa9\": \"\\u0000\"}";
    tf_jsonpos_t *idx = index_of(text);
    /* The escaped key "\u00e9t\u00E9" decodes to "été". */
    CHECK_POS(idx, "/\xc3\xa9t\xc3\xa9", 1, 19, 1, 2);
    CHECK_POS(idx, "/q\"uote", 1, 48, 1, 37);
    CHECK_POS(idx, "/q\"uote/0", 1, 49, 0, 0);
    CHECK_POS(idx, "/q\"uote/1", 1, 56, 0, 0);
    /* A raw four-byte character and a surrogate-pair escape. */
    CHECK_POS(idx, "/\xf0\x9f\x98\x80", 2, 9, 2, 1);
    CHECK_POS(idx, "/\xf0\x9f\x98\x80x", 2, 32, 2, 15);
    CHECK_POS(idx, "/tab\tnl\n", 2, 52, 2, 39);
    CHECK_POS(idx, "/\xc3\xa9", 2, 64, 2, 58);
    CHECK_MISSING(idx, "/\\u00e9");
    tf_jsonpos_free(idx);
}

TF_TEST(multi_line_and_crlf)
{
    const char *text = "\r\n\t[\r\n"
                       "  1,\n"
                       "\n"
                       "      \"two\"\r\n"
                       "  ,{ \"k\"\n"
                       "   :\n"
                       "\t\t{}}]  \n";
    tf_jsonpos_t *idx = index_of(text);
    CHECK_POS(idx, "", 2, 2, 0, 0);
    CHECK_POS(idx, "/0", 3, 3, 0, 0);
    CHECK_POS(idx, "/1", 5, 7, 0, 0);
    CHECK_POS(idx, "/2", 6, 4, 0, 0);
    CHECK_POS(idx, "/2/k", 8, 3, 6, 6);
    tf_jsonpos_free(idx);
}

TF_TEST(scalars_at_top_level)
{
    tf_jsonpos_t *idx = index_of("  42 ");
    CHECK_POS(idx, "", 1, 3, 0, 0);
    CHECK_MISSING(idx, "/0");
    tf_jsonpos_free(idx);
    idx = index_of("\"s\"");
    CHECK_POS(idx, "", 1, 1, 0, 0);
    tf_jsonpos_free(idx);
    idx = index_of("[]");
    CHECK_MISSING(idx, "/0");
    tf_jsonpos_free(idx);
}

TF_TEST(duplicate_keys_first_wins)
{
    tf_jsonpos_t *idx = index_of("{\"a\": 1,\n \"a\": {\"b\": 2}}");
    CHECK_POS(idx, "/a", 1, 7, 1, 2);
    CHECK_MISSING(idx, "/a/b");
    tf_jsonpos_free(idx);
}

TF_TEST(large_array)
{
    /* 20000 elements "0," on one line, to check sibling walking and that
     * the entry vector grows. */
    size_t n = 20000, len = 0;
    char *text = malloc(n * 2 + 3);
    TF_CHECK(text != NULL);
    if (!text)
        return;
    text[len++] = '[';
    for (size_t i = 0; i < n; i++) {
        text[len++] = (char)('0' + i % 10);
        text[len++] = i + 1 < n ? ',' : ']';
    }
    tf_jsonpos_t *idx = NULL;
    TF_CHECK_INT(tf_jsonpos_index(text, len, &idx), 0);
    CHECK_POS(idx, "/0", 1, 2, 0, 0);
    CHECK_POS(idx, "/19999", 1, 2 + 2 * 19999, 0, 0);
    CHECK_MISSING(idx, "/20000");
    tf_jsonpos_free(idx);
    free(text);
}

/* As deep as jansson goes (2048 levels) is accepted; one more is not. */
TF_TEST(depth_matches_jansson)
{
    for (int depth = 2048; depth <= 2049; depth++) {
        char *text = malloc((size_t)depth * 2 + 1);
        TF_CHECK(text != NULL);
        if (!text)
            return;
        for (int i = 0; i < depth; i++) {
            text[i] = '[';
            text[2 * depth - 1 - i] = ']';
        }
        text[2 * depth] = '\0';
        json_error_t err;
        json_t *j = json_loads(text, 0, &err);
        tf_jsonpos_t *idx = NULL;
        int rc = tf_jsonpos_index(text, (size_t)depth * 2, &idx);
        TF_CHECK_INT(rc == 0, j != NULL);
        TF_CHECK_INT(rc, depth == 2048 ? 0 : TF_EINVAL);
        json_decref(j);
        tf_jsonpos_free(idx);
        free(text);
    }
}

TF_TEST(malformed_rejected)
{
    static const char *const bad[] = {
        "", "   ", "{", "}", "[", "[1,]", "[,1]", "[1 2]", "{\"a\":1,}",
        "{\"a\" 1}", "{\"a\":}", "{a:1}", "{'a':1}", "{\"a\":1 \"b\":2}",
        "[1]]", "1 2", "01", "-01", "1.", ".5", "-", "+1", "1e", "1e+",
        "0x10", "tru", "nul", "falsey", "True", "NaN", "Infinity", "\"abc",
        "\"\\x\"", "\"\\u12g4\"", "\"\\u12\"", "\"a\nb\"", "\"a\tb\"",
        "\"\xff\"", "\"\xc0\xaf\"", "\"\xe0\x80\xaf\"", "\"\xed\xa0\x80\"",
        "\"\xf4\x90\x80\x80\"", "\"\xc3\"", "\xef\xbb\xbf{}", "[1]\x01",
        "/* c */ {}", "{\"a\":1}//",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tf_jsonpos_t *idx = (tf_jsonpos_t *)1;
        int rc = tf_jsonpos_index(bad[i], strlen(bad[i]), &idx);
        if (rc != TF_EINVAL)
            fprintf(stderr, "accepted malformed #%zu: %s\n", i, bad[i]);
        TF_CHECK_INT(rc, TF_EINVAL);
        TF_CHECK(idx == NULL);
    }
    /* An embedded NUL byte is not whitespace. */
    tf_jsonpos_t *idx = NULL;
    TF_CHECK_INT(tf_jsonpos_index("[1]\0", 4, &idx), TF_EINVAL);
    TF_CHECK_INT(tf_jsonpos_index("[1]\0", 3, &idx), 0);
    tf_jsonpos_free(idx);
    TF_CHECK_INT(tf_jsonpos_index(NULL, 0, &idx), TF_EINVAL);
    tf_jsonpos_free(NULL);
}

TF_TEST(well_formed_edge_cases)
{
    static const char *const good[] = {
        "0", "-0", "-0.0e-0", "1E+10", "[[], {}, \"\"]", "\"\\ud800\"",
        "{\"\":\"\"}", " \t\r\n[ 1 , 2 ]\r\n",
        "\"\xf4\x8f\xbf\xbf\"", "\"\\u0000\"", "[true,false,null]",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        tf_jsonpos_t *idx = NULL;
        int rc = tf_jsonpos_index(good[i], strlen(good[i]), &idx);
        if (rc != 0)
            fprintf(stderr, "rejected #%zu: %s\n", i, good[i]);
        TF_CHECK_INT(rc, 0);
        tf_jsonpos_free(idx);
    }
}

TF_TEST_MAIN()
