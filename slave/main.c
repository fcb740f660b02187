/*
 * main.c - tf-slave's entry point: parse the settings, run, exit.
 *
 * All the work is in tf_slave_run; this file only maps a bad command line
 * or config file to exit status 2 and sets up process-wide state (logging,
 * SIGPIPE) that libraries must not touch.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "slave.h"
#include "slave_config.h"
#include "source.h"
#include "tf_err.h"

int main(int argc, char **argv)
{
    tf_slave_config_t cfg;
    char err[1024];
    int status;

    /* The source step's patch download helper (see source.h); it is not a
     * daemon option, so it is not in --help. */
    if (argc > 1 && strcmp(argv[1], "--fetch-patch") == 0)
        return tf_source_fetch_main(argc - 1, argv + 1);
    int rc = tf_slave_config_parse(&cfg, argc, argv, stdout, err, sizeof err);
    if (rc == TF_SLAVE_CONFIG_DONE) {
        tf_slave_config_free(&cfg);
        return TF_EXIT_OK;
    }
    if (rc) {
        fprintf(stderr, "tf-slave: %s\n(tf-slave --help lists the options)\n",
                err);
        tf_slave_config_free(&cfg);
        return TF_EXIT_CONFIG;
    }
    tf_log_init("tf-slave", cfg.log_level, NULL);
    /* A master that vanishes mid-write must be an error code, not a signal.
     * Children get default dispositions back from libuv's spawn. */
    signal(SIGPIPE, SIG_IGN);
    status = tf_slave_run(&cfg);
    tf_slave_config_free(&cfg);
    return status;
}
