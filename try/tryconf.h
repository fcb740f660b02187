/*
 * tryconf.h - tf-try's configuration files and the user's token.
 *
 * Settings come in layers, each replacing whole keys of the one below:
 *
 *   the user's file  $XDG_CONFIG_HOME/tf-try/config.json
 *                    (~/.config/tf-try/config.json), or --config FILE
 *   the repository's .tf-try.json at the top of the work tree
 *   the command line (main.c applies it last)
 *
 * A file is a JSON object with the keys url, builders, tests, email,
 * upstream, token_file and ca_file; any other key is an error naming the file and
 * the key, so a typo never silently falls back to a default. Missing
 * default files are fine; a missing --config FILE is an error.
 *
 * The token comes from $TF_TRY_TOKEN or from a file that only its owner may
 * read. Neither the token nor any part of it is ever put in an error
 * message.
 */
#ifndef TF_TRY_CONF_H
#define TF_TRY_CONF_H

#include <jansson.h>
#include <stdbool.h>

#include "try.h"

#define TF_TRY_CONF_MAX_BYTES (1024 * 1024)
#define TF_TRY_TOKEN_MAX_BYTES 4096

typedef struct tf_try_conf {
    char *url;               /* NULL when no layer set it */
    tf_try_strv_t builders;  /* valid when has_builders */
    bool has_builders;
    json_t *tests;           /* builder -> [test, ...]; NULL when unset */
    char *email;
    char *upstream;
    char *token_file;        /* resolved: "~/" expanded, relative to the
                                directory of the file that named it */
    char *ca_file;           /* CA bundle to verify an https:// master;
                                resolved like token_file; NULL: the
                                system's */
} tf_try_conf_t;

void tf_try_conf_init(tf_try_conf_t *c);

/* Frees every member and re-initialises c; c may be NULL. */
void tf_try_conf_free(tf_try_conf_t *c);

/* The directory of tf-try's user files: $XDG_CONFIG_HOME/tf-try when xdg
 * is an absolute path, else HOME/.config/tf-try. xdg and home are the
 * environment's values (NULL when unset); passed in so tests can choose.
 * Returns 0 with a malloc'd *out (caller frees), or TF_ECONFIG when neither
 * gives an absolute directory. */
int tf_try_conf_dir(const char *xdg, const char *home, char **out,
                    tf_try_err_t *err);

/* Reads one file over c: keys present in the file replace c's values.
 * When the file does not exist: 0 if missing_ok, else TF_ENOENT. Other
 * failures (unreadable, not JSON, unknown key, wrong type) return
 * TF_ECONFIG with err saying "FILE: ..." (and line:column for JSON). home
 * expands "~/" in token_file. */
int tf_try_conf_merge_file(tf_try_conf_t *c, const char *path, bool missing_ok,
                           const char *home, tf_try_err_t *err);

/* Loads the layers into c (which must be freshly initialised): the user
 * file, or explicit_file instead of it when non-NULL, then
 * TOPLEVEL/.tf-try.json when toplevel is non-NULL. */
int tf_try_conf_load(tf_try_conf_t *c, const char *explicit_file,
                     const char *toplevel, const char *xdg, const char *home,
                     tf_try_err_t *err);

/* The token: env_value (the value of $TF_TRY_TOKEN, NULL when unset) when
 * it is not blank, else the first line of path with surrounding whitespace
 * stripped. The file must be a regular file that neither group nor others
 * may read. Returns 0 with a malloc'd *out (caller frees, ideally after
 * wiping it), TF_ENOENT (no token anywhere), TF_EAUTH (file readable by
 * others), or TF_EINVAL (empty, too long, or with characters that cannot
 * go in an HTTP header). */
int tf_try_token_load(const char *env_value, const char *path, char **out,
                      tf_try_err_t *err);

#endif
