/*
 * cli.h - tf-master's administrative subcommands.
 *
 * Each returns the process exit code: 0 success, 1 failure (the message
 * names the cause), 2 usage or configuration error.
 */
#ifndef TF_CLI_H
#define TF_CLI_H

#include <stdbool.h>

#include <uv.h>

/* Creates a master directory with an example config, a secret for one
 * local slave and an admin token. Refuses a non-empty directory unless
 * force. */
int tf_cli_create(const char *dir, unsigned port, int force);

/* Loads a config (a file, or DIR/master.json) and prints every error as
 * FILE:LINE:COL: error: KEY: MESSAGE. */
int tf_cli_checkconfig(const char *path);

/* tf-master check DIR|FILE: the full integrity check of the master's
 * database, read-only (safe while the master runs). 0 sound, 1 damaged or
 * not checkable, 2 the config cannot be read. */
int tf_cli_check(const char *path);

/* Asks the running master of dir to build builder now. */
int tf_cli_force(const char *dir, const char *builder, const char *reason);

/* `tf-master mail preview job:N|build:N` for the master of dir (or the
 * config file config): prints the mail that would be sent for it, without
 * sending or queueing anything (admin/mail.c). */
int tf_cli_mail(const char *dir, const char *config, const char *verb,
                const char *target);

/* `tf-master migrate --to URL`: copies the sqlite database of the master
 * in dir (its config, or config when given) into the empty PostgreSQL
 * database at URL (migrate.c). Returns the exit status: 0, 1 (the copy
 * failed, nothing was kept), 2 (usage, config). */
int tf_cli_migrate(const char *dir, const char *config, const char *url);
/* `tf-master vacuum` for the stopped master of dir (or the config file
 * config): seals old logs, applies the retention, compacts the database
 * file (users.c). */
int tf_cli_vacuum(const char *dir, const char *config);

/* `tf-master user add|list|remove` for the master in dir (users.c). */
int tf_users_cli(const char *dir, const char *verb, const char *email,
                 const char *name);

/* A subcommand working on a master's database without the master (user,
 * mail preview): its config, a private loop and the store. */
typedef struct tf_cli_offline {
    struct tf_config *cfg;
    struct tf_store *store;
    uv_loop_t loop;
    bool loop_ok;
} tf_cli_offline_t;

/* Loads the config file cfg_path and opens its database. Returns 0, or
 * the exit code after printing why: 2 for config errors (each as
 * FILE:LINE:COL: error: ...), 1 when the database cannot be opened (the
 * message starts with who). Call tf_cli_offline_close either way. */
int tf_cli_offline_open(tf_cli_offline_t *o, const char *cfg_path,
                        const char *who);

/* Closes the store (running the loop until it has), the loop and the
 * config. */
void tf_cli_offline_close(tf_cli_offline_t *o);

#endif
