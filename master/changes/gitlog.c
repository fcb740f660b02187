/*
 * gitlog.c - the parser of `git log -z` output that pollers record changes
 * from (see gitlog.h). Pure: bytes in, commits out, no I/O and no loop,
 * so it is unit tested (test_cron.c) and fuzzed (tests/fuzz/fuzz_gitlog.c)
 * on its own.
 *
 * The output is a run of NUL-separated tokens. A record starts at a token
 * "\x01" + a full commit id; the next four tokens are author, email,
 * committer time and message, and the tokens after them (the first one
 * led by a newline) are the files the commit touched, until the next
 * record starts. Every string is copied as valid UTF-8 and capped, so
 * nothing a repository holds can make a change row larger than its caps.
 */
#include "changes/gitlog.h"

#include <stdlib.h>
#include <string.h>

#include "tf_err.h"
#include "utf8.h"
#include "util.h"

#define COMMIT_FILES_MAX 1000
#define COMMIT_MESSAGE_MAX (64 * 1024)
#define COMMIT_NAME_MAX 1024
#define COMMIT_PATH_MAX 4096

bool tf_gitlog_is_rev(const char *s, size_t n)
{
    if (n != 40 && n != 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* A record starts with a token "\x01" + the commit id. */
static bool is_marker(const char *tok, size_t n)
{
    return n >= 41 && tok[0] == '\x01' && tf_gitlog_is_rev(tok + 1, n - 1);
}

void tf_commit_clear(tf_commit_t *c)
{
    free(c->author);
    free(c->email);
    free(c->message);
    for (size_t i = 0; i < c->nfiles; i++)
        free(c->files[i]);
    free(c->files);
    memset(c, 0, sizeof(*c));
}

void tf_commits_free(tf_commit_t *c, size_t n)
{
    for (size_t i = 0; c && i < n; i++)
        tf_commit_clear(&c[i]);
    free(c);
}

static int commit_add_file(tf_commit_t *c, const char *tok, size_t n)
{
    if (c->nfiles >= COMMIT_FILES_MAX) {
        c->files_truncated = true;
        return 0;
    }
    if ((c->nfiles & (c->nfiles - 1)) == 0) {
        size_t cap = c->nfiles ? c->nfiles * 2 : 1;
        char **f = realloc(c->files, cap * sizeof(*f));
        if (!f)
            return TF_ENOMEM;
        c->files = f;
    }
    char *s = tf_utf8_dup_lossy(tok, n, COMMIT_PATH_MAX);
    if (!s)
        return TF_ENOMEM;
    c->files[c->nfiles++] = s;
    return 0;
}

/* Stores token number `field` (1 author, 2 email, 3 committer time,
 * 4 message) of the record c. */
static int commit_field(tf_commit_t *c, int field, const char *tok, size_t n)
{
    char num[24];
    switch (field) {
    case 1:
        return (c->author = tf_utf8_dup_lossy(tok, n, COMMIT_NAME_MAX)) ? 0
                                                                : TF_ENOMEM;
    case 2:
        return (c->email = tf_utf8_dup_lossy(tok, n, COMMIT_NAME_MAX)) ? 0
                                                               : TF_ENOMEM;
    case 3:
        if (n < sizeof(num)) {
            int64_t t = 0;
            memcpy(num, tok, n);
            num[n] = '\0';
            if (tf_parse_i64(num, &t) == 0 && t >= 0 &&
                t < INT64_MAX / 1000)
                c->committer_ms = t * 1000;
        }
        return 0;
    default:
        return (c->message = tf_utf8_dup_lossy(tok, n, COMMIT_MESSAGE_MAX))
                   ? 0
                   : TF_ENOMEM;
    }
}

int tf_gitlog_parse(const char *buf, size_t len, bool complete,
                    tf_commit_t **out, size_t *nout)
{
    tf_commit_t *v = NULL;
    size_t n = 0, cap = 0, pos = 0;
    int field = 0; /* next token of the current record; 5+ = files */
    int rc = 0;

    *out = NULL;
    *nout = 0;
    while (pos < len) {
        const char *tok = buf + pos;
        const char *nul = memchr(tok, '\0', len - pos);
        size_t tlen = nul ? (size_t)(nul - tok) : len - pos;
        pos += tlen + (nul ? 1 : 0);
        if ((field == 0 || field >= 5) && is_marker(tok, tlen)) {
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                tf_commit_t *nv = realloc(v, ncap * sizeof(*nv));
                if (!nv) {
                    rc = TF_ENOMEM;
                    goto out;
                }
                v = nv;
                cap = ncap;
            }
            memset(&v[n], 0, sizeof(v[n]));
            memcpy(v[n].revision, tok + 1, tlen - 1);
            v[n].revision[tlen - 1] = '\0';
            n++;
            field = 1;
            continue;
        }
        if (field == 0)
            continue; /* not inside a record */
        tf_commit_t *c = &v[n - 1];
        if (field < 5) {
            rc = commit_field(c, field, tok, tlen);
            field++;
        } else {
            /* The file list follows the message after a newline. */
            if (field == 5 && tlen > 0 && tok[0] == '\n') {
                tok++;
                tlen--;
            }
            field = 6;
            if (tlen > 0)
                rc = commit_add_file(c, tok, tlen);
        }
        if (rc)
            goto out;
    }
    /* A record cut before its message is not a commit we can describe. */
    if (n > 0 && field > 0 && field < 5) {
        tf_commit_clear(&v[n - 1]);
        n--;
    }
    if (!complete && n > 1) {
        tf_commit_clear(&v[n - 1]);
        n--;
    }
    for (size_t i = 0; i < n; i++) {
        if (!v[i].author)
            v[i].author = strdup("");
        if (!v[i].email)
            v[i].email = strdup("");
        if (!v[i].message)
            v[i].message = strdup("");
        if (!v[i].author || !v[i].email || !v[i].message) {
            rc = TF_ENOMEM;
            goto out;
        }
    }
out:
    if (rc) {
        tf_commits_free(v, n);
        return rc;
    }
    if (n == 0) {
        free(v);
        v = NULL;
    }
    *out = v;
    *nout = n;
    return 0;
}
