/*
 * fuzz_gitlog.c - libFuzzer driver for tf_gitlog_parse(), which turns the
 * output of git log (from any repository a poller watches) into changes.
 *
 * The first byte says whether the output is complete; the rest is the
 * output. Beyond "no crash, no leak": every commit has a full hex id, and
 * every string is valid UTF-8 within its cap, so nothing in a repository
 * can put invalid text or an oversized row in the store.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "changes/gitlog.h"
#include "tf_err.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_gitlog: invariant violated: %s\n", what);
        abort();
    }
}

static void text(const char *s, size_t cap, const char *what)
{
    check(s != NULL, what);
    size_t n = strlen(s);
    check(n <= cap, what);
    check(tf_utf8_valid(s, n), what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tf_commit_t *c = NULL;
    size_t n = 0;
    if (size == 0)
        return 0;
    int rc = tf_gitlog_parse((const char *)data + 1, size - 1, data[0] & 1,
                             &c, &n);
    check(rc == 0 || rc == TF_ENOMEM, "parse answer");
    if (rc != 0)
        return 0;
    check((n == 0) == (c == NULL), "no array without commits");
    for (size_t i = 0; i < n; i++) {
        size_t rl = strlen(c[i].revision);
        check(tf_gitlog_is_rev(c[i].revision, rl), "a full commit id");
        text(c[i].author, 1024, "author");
        text(c[i].email, 1024, "email");
        text(c[i].message, 64 * 1024, "message");
        check(c[i].committer_ms >= 0, "commit time");
        check(c[i].nfiles <= 1000, "file cap");
        for (size_t f = 0; f < c[i].nfiles; f++) {
            text(c[i].files[f], 4096, "file");
            check(c[i].files[f][0] != '\0', "file names are not empty");
        }
    }
    tf_commits_free(c, n);
    return 0;
}
