/*
 * test_config_doc.c - docs/config.md documents exactly the keys the
 * loader knows, with the types, defaults and ranges the loader applies.
 *
 * The page holds one generated block per key table of master/config/
 * (between "<!-- keys: NAME ... -->" and "<!-- /keys -->"). Every table
 * must have its block, every block must name a table, and each block must
 * be what tf_config_doc_table() makes of the table today: a key added to
 * the loader without documentation, or a documented key the loader does
 * not know, fails here. After changing a table, regenerate the blocks:
 *
 *   TF_UPDATE_DOCS=1 build/tests/unit/test_config_doc
 *
 * (the prose around them stays the author's).
 */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config/config.h"
#include "tf_err.h"
#include "tf_test.h"
#include "util.h"

#ifndef TF_DOCS_DIR
#error "TF_DOCS_DIR must name the docs directory"
#endif

#define OPEN "<!-- keys: "
#define CLOSE "<!-- /keys -->"

/* One block of the page: its name and where its table sits. */
typedef struct block {
    char name[64];
    size_t body, body_end; /* offsets of the text between the markers */
} block_t;

/* Finds the blocks of text; returns how many (at most max), or -1 when a
 * block is not closed. */
static int find_blocks(const char *text, block_t *out, int max)
{
    int n = 0;
    const char *p = text;
    while ((p = strstr(p, OPEN)) != NULL) {
        const char *name = p + strlen(OPEN);
        size_t len = strcspn(name, " -\n");
        const char *eol = strchr(p, '\n');
        const char *end = strstr(p, CLOSE);
        if (!eol || !end || len == 0 || len >= sizeof out[0].name)
            return -1;
        if (n < max) {
            memcpy(out[n].name, name, len);
            out[n].name[len] = '\0';
            out[n].body = (size_t)(eol + 1 - text);
            out[n].body_end = (size_t)(end - text);
        }
        n++;
        p = end + strlen(CLOSE);
    }
    return n;
}

/* The block body for a generated table: it stands apart from the markers
 * by blank lines so that Markdown sees a table. */
static char *body_of(const char *name)
{
    char *table = tf_config_doc_table(name);
    char *body = NULL;
    if (table && asprintf(&body, "\n%s\n", table) < 0)
        body = NULL;
    free(table);
    return body;
}

TF_TEST(every_table_documented_and_every_block_a_table)
{
    char *text = NULL;
    size_t len = 0;
    block_t blocks[64];
    TF_CHECK_INT(tf_read_file(TF_DOCS_DIR "/config.md", 1 << 20, &text, &len),
                 0);
    if (!text)
        return;
    int n = find_blocks(text, blocks, 64);
    TF_CHECK(n > 0 && n <= 64);
    if (n <= 0 || n > 64) {
        free(text);
        return;
    }
    bool update = getenv("TF_UPDATE_DOCS") != NULL;
    tf_buf_t out;
    size_t copied = 0;
    tf_buf_init(&out, 0);

    /* Each table once. */
    for (size_t i = 0; tf_config_doc_name(i); i++) {
        const char *name = tf_config_doc_name(i);
        int found = 0;
        for (int b = 0; b < n; b++)
            found += strcmp(blocks[b].name, name) == 0;
        if (found != 1)
            fprintf(stderr, "docs/config.md: %d blocks for key table \"%s\" "
                    "(want one: <!-- keys: %s -->)\n", found, name, name);
        TF_CHECK_INT(found, 1);
    }
    /* Each block a table, as generated. */
    for (int b = 0; b < n; b++) {
        char *body = body_of(blocks[b].name);
        if (!body) {
            fprintf(stderr, "docs/config.md: block \"%s\" names no key "
                    "table of the loader\n", blocks[b].name);
            TF_CHECK(0);
            continue;
        }
        size_t have = blocks[b].body_end - blocks[b].body;
        bool same = have == strlen(body) &&
                    memcmp(text + blocks[b].body, body, have) == 0;
        if (!same && !update)
            fprintf(stderr, "docs/config.md: block \"%s\" differs from the "
                    "loader's table; it should read:\n%s\n(regenerate with "
                    "TF_UPDATE_DOCS=1 %s)\n", blocks[b].name, body,
                    "build/tests/unit/test_config_doc");
        TF_CHECK(same || update);
        tf_buf_append(&out, text + copied, blocks[b].body - copied);
        tf_buf_append_str(&out, body);
        copied = blocks[b].body_end;
        free(body);
    }
    tf_buf_append(&out, text + copied, len - copied);
    if (update)
        TF_CHECK_INT(tf_write_file_atomic(TF_DOCS_DIR "/config.md", out.data,
                                          out.len, 0644),
                     0);
    tf_buf_free(&out);
    free(text);
}

/* The generator itself: a known table has the rows the loader reads, an
 * unknown one is NULL. */
TF_TEST(generated_rows)
{
    char *t = tf_config_doc_table("listen");
    TF_CHECK(t != NULL);
    if (t) {
        TF_CHECK(strstr(t, "| `host` | string | `\"127.0.0.1\"` |") != NULL);
        TF_CHECK(strstr(t, "| `port` | integer | `8010` | TCP port; "
                           "1..65535 |") != NULL);
    }
    free(t);
    t = tf_config_doc_table("steps");
    TF_CHECK(t != NULL);
    if (t) {
        /* Defaults come from what the loader does, flags included. */
        TF_CHECK(strstr(t, "| `flunkOnFailure` | bool | `true` |") != NULL);
        TF_CHECK(strstr(t, "| `timeout` | integer | `1200` |") != NULL);
        TF_CHECK(strstr(t, "| `markers` | bool | `true` |") != NULL);
        /* The wire-only key of stepspec.h is not a config key. */
        TF_CHECK(strstr(t, "builtin") == NULL);
    }
    free(t);
    TF_CHECK(tf_config_doc_table("nosuch") == NULL);
    TF_CHECK(tf_config_doc_table(NULL) == NULL);
    TF_CHECK_STR(tf_config_doc_name(0), "top");
}

TF_TEST_MAIN()
