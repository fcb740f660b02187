/*
 * daemon.h - tf-master's process (see daemon.c).
 */
#ifndef TF_DAEMON_H
#define TF_DAEMON_H

/* Runs the master of directory dir (config: config_path, or
 * DIR/master.json when NULL) until SIGTERM/SIGINT. Returns the process exit
 * code: 0 after a clean shutdown, 2 for a bad config, 1 otherwise. */
int tf_master_run(const char *dir, const char *config_path);

#endif
