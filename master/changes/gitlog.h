/*
 * gitlog.h - parsing the output of `git log -z` into commits (pure).
 *
 * Pollers run git and hand its captured output here; nothing in this
 * module touches the loop, the store or a file, so any byte string can be
 * fed to it (tests/fuzz/fuzz_gitlog.c does).
 */
#ifndef TF_GITLOG_H
#define TF_GITLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One commit parsed from git log output. Strings are owned, valid UTF-8
 * (invalid bytes become '?') and capped (message 64 KiB, 1000 files). */
typedef struct tf_commit {
    char revision[65];
    char *author;
    char *email;
    char *message;
    int64_t committer_ms;
    char **files;
    size_t nfiles;
    bool files_truncated;
} tf_commit_t;

/* Parses the output of
 *   git log -z --name-only --format=%x01%H%x00%an%x00%ae%x00%ct%x00%B
 * into commits, in output order. complete is false when the output was cut
 * short (over its cap): the last record may then be partial and is dropped
 * unless it is the only one. Returns 0 with *out (free with
 * tf_commits_free; NULL when n is 0) or TF_ENOMEM. Garbage that does not
 * look like a record is skipped. */
int tf_gitlog_parse(const char *buf, size_t len, bool complete,
                    tf_commit_t **out, size_t *n);

/* Frees what one commit owns and zeroes it. */
void tf_commit_clear(tf_commit_t *c);

/* Frees n commits and the array; c may be NULL. */
void tf_commits_free(tf_commit_t *c, size_t n);

/* Whether s[0..n) is a full commit id: 40 or 64 lower-case hex digits. */
bool tf_gitlog_is_rev(const char *s, size_t n);

#endif
