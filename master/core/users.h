/*
 * users.h - committers and their tokens.
 *
 * A committer is an email address, a display name and a token. The token
 * is shown once, when the user is added; the database keeps only its
 * SHA-256, so a stolen database does not hand out working tokens
 * (`tf-master user`, admin/users.c, manages them).
 */
#ifndef TF_USERS_H
#define TF_USERS_H

#include <stdbool.h>
#include <stdint.h>

#include "email.h"
#include "store/store.h"

/* A display name: 1..128 bytes of valid UTF-8 (utf8.h) without control
 * characters. */
bool tf_username_valid(const char *s);

#endif
