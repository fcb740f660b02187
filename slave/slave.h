/*
 * slave.h - tf-slave as a whole: the loop, the builds, shutdown.
 *
 * tf_slave_run owns everything for the life of the process: it prepares
 * the base directory, kills process groups and finishes spools a previous
 * instance left behind, runs the libuv loop with the link and the runners
 * on it, and returns the process exit status (see TF_EXIT_*).
 */
#ifndef TF_SLAVE_H
#define TF_SLAVE_H

#include "slave_config.h"

#define TF_EXIT_OK 0              /* clean shutdown after SIGTERM/SIGINT */
#define TF_EXIT_RUNTIME 1         /* basedir, spool or lws failure */
#define TF_EXIT_CONFIG 2          /* usage or configuration error */
#define TF_EXIT_BAD_AUTH 3        /* the master rejected our secret */
#define TF_EXIT_UNKNOWN_SLAVE 4   /* the master does not know our name */
#define TF_EXIT_PROTOCOL 5        /* protocol version mismatch */
#define TF_EXIT_REFUSED 6         /* the master refused one of our messages
                                   * as malformed or too big: sending it
                                   * again (our spool would) cannot help */

/* Runs the slave described by cfg (borrowed) until it stops. Logging must
 * be initialised. Returns a TF_EXIT_* status. */
int tf_slave_run(const tf_slave_config_t *cfg);

#endif
