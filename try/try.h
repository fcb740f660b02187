/*
 * try.h - what every module of tf-try shares: exit codes, the error message
 * holder, a capped list of strings, and validators for the values the
 * master's job API accepts (docs/api.md, "POST /api/v1/jobs").
 *
 * tf-try is a short-lived command, so its modules report failures as a
 * TF_E* code plus one sentence in a tf_try_err_t that main.c prints as
 * "tf-try: SENTENCE". The sentence never holds the user's token: the token
 * is only ever handed to client.c, which puts it in one header and nowhere
 * else.
 */
#ifndef TF_TRY_H
#define TF_TRY_H

#include <stdbool.h>
#include <stddef.h>

/* Exit codes, documented in docs/committers.md. */
#define TF_TRY_EXIT_OK 0          /* submitted, or every build passed */
#define TF_TRY_EXIT_FAILED 1      /* with --wait: a build did not pass */
#define TF_TRY_EXIT_ERROR 2       /* usage, config, git, network, auth, ... */
#define TF_TRY_EXIT_INTERRUPTED 130

/* Caps on what the master accepts; checked before anything is sent so the
 * user hears about a mistake without a round trip. */
#define TF_TRY_MAX_BUILDERS 50
#define TF_TRY_MAX_TESTS 100
#define TF_TRY_MAX_TEST_LEN 200
#define TF_TRY_MAX_DESCRIPTION 4096
#define TF_TRY_MAX_REVIEW_URL 1024
#define TF_TRY_MAX_PATCHSET 64
#define TF_TRY_MAX_REV 200

typedef struct tf_try_err {
    char msg[1024];
} tf_try_err_t;

/* Sets the message (truncated to fit). e may be NULL. */
void tf_try_errf(tf_try_err_t *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A list of strings, each a malloc'd copy owned by the list, at most
 * TF_TRY_STRV_MAX entries. */
#define TF_TRY_STRV_MAX 1000
typedef struct tf_try_strv {
    char **v;
    size_t n;
    size_t cap;
} tf_try_strv_t;

/* Appends a copy of s. Returns 0, TF_E2BIG (list full) or TF_ENOMEM. */
int tf_try_strv_push(tf_try_strv_t *l, const char *s);

/* Appends each non-empty piece of list split at sep (copies). */
int tf_try_strv_push_split(tf_try_strv_t *l, const char *list, char sep);

bool tf_try_strv_has(const tf_try_strv_t *l, const char *s);

/* Frees every string and the array; l may be NULL. */
void tf_try_strv_clear(tf_try_strv_t *l);

/* Validators for values the master checks too (same rules as docs/api.md). */
bool tf_try_test_name_valid(const char *s);   /* [A-Za-z0-9._/:*=+,-]{1,200} */
bool tf_try_rev_valid(const char *s);         /* tf_git_rev_valid, not empty */
bool tf_try_http_url_valid(const char *s);    /* http:// or https://, a host, no spaces */

#endif
