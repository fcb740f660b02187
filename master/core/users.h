/*
 * users.h - committers and their tokens.
 *
 * A committer is an email address, a display name and a token. The token
 * is shown once, when the user is added; the database keeps only its
 * SHA-256, so a stolen database does not hand out working tokens. The
 * administrative commands open the database directly (through the store,
 * so migrations apply): they work whether or not the master is running,
 * and the running master sees a change at the next request.
 */
#ifndef TF_USERS_H
#define TF_USERS_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

#include "email.h"

/* A display name: 1..128 bytes of valid UTF-8 (utf8.h) without control
 * characters. */
bool tf_username_valid(const char *s);

/* `tf-master user add|list|remove` for the master in dir. Returns the
 * exit code (0, 1 failure, 2 usage). */
int tf_users_cli(const char *dir, const char *verb, const char *email,
                 const char *name);

#endif
