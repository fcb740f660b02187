/*
 * cli.h - tf-master's administrative subcommands.
 *
 * Each returns the process exit code: 0 success, 1 failure (the message
 * names the cause), 2 usage or configuration error.
 */
#ifndef TF_CLI_H
#define TF_CLI_H

/* Creates a master directory with an example config, a secret for one
 * local slave and an admin token. Refuses a non-empty directory unless
 * force. */
int tf_cli_create(const char *dir, unsigned port, int force);

/* Loads a config (a file, or DIR/master.json) and prints every error as
 * FILE:LINE:COL: error: KEY: MESSAGE. */
int tf_cli_checkconfig(const char *path);

/* Asks the running master of dir to build builder now. */
int tf_cli_force(const char *dir, const char *builder, const char *reason);

#endif
