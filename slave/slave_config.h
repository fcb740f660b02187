/*
 * slave_config.h - tf-slave's settings: command line over config file.
 *
 * The slave is configured by an optional JSON file (--config) and by flags;
 * a flag always wins over the file, whatever the order on the command line.
 * Relative paths in the file resolve against the file's directory (so a
 * config directory can be moved as a whole); relative paths on the command
 * line resolve against the current directory. Everything is validated here,
 * before the slave touches the network or the disk, so a bad setting is an
 * exit status 2 with a sentence naming it, never a surprise later.
 */
#ifndef TF_SLAVE_CONFIG_H
#define TF_SLAVE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"

#define TF_SLAVE_MAX_BUILDS 64 /* hello.running holds at most 64 builds */
#define TF_SLAVE_MAX_TAGS 64
#define TF_SLAVE_MAX_MASTERS 16 /* URLs in the failover list */

typedef enum {
    TF_SIGTERM_FINISH = 0, /* drain: finish running builds, then exit */
    TF_SIGTERM_ABORT = 1,  /* kill running steps, report RETRY, exit */
} tf_sigterm_mode_t;

/* One master URL, split. */
typedef struct tf_slave_master {
    char *url;        /* as configured, for logs */
    bool tls;         /* wss:// */
    char *host;       /* without IPv6 brackets */
    int port;
    char *path;       /* starts with '/' */
} tf_slave_master_t;

typedef struct tf_slave_config {
    /* The masters in failover order (1..TF_SLAVE_MAX_MASTERS, no two
     * alike): --master given several times, or "master" as a list. */
    tf_slave_master_t *masters;
    size_t nmasters;
    bool any_tls;     /* at least one master is wss:// */
    char *name;
    char *secret_file;
    char *basedir;    /* absolute */
    uint32_t max_builds;
    char **tags;
    size_t ntags;
    tf_sigterm_mode_t on_sigterm;
    char *ca_file;    /* NULL: the system's CAs */
    tf_log_level_t log_level;
    uint32_t backoff_min_ms;
    uint32_t backoff_max_ms;
    uint64_t spool_max_unsent; /* bytes */
} tf_slave_config_t;

/* What tf_slave_config_parse returns besides 0 and errors: --help or
 * --version was handled (text written to out); the caller exits 0. */
#define TF_SLAVE_CONFIG_DONE 1

/* Parses argv (and the --config file it names) into cfg, which the caller
 * frees with tf_slave_config_free whatever the result. Returns 0,
 * TF_SLAVE_CONFIG_DONE, or TF_ECONFIG with a sentence in err[errlen]
 * ("--max-builds: expected an integer 1..64, got \"x\""). Uses getopt_long,
 * so it is not reentrant. */
int tf_slave_config_parse(tf_slave_config_t *cfg, int argc, char **argv,
                          FILE *out, char *err, size_t errlen);

/* Frees what cfg owns and zeroes it; cfg may be NULL. */
void tf_slave_config_free(tf_slave_config_t *cfg);

/* Splits ws://host[:port][/path] or wss://... into m's url (a copy of
 * url), tls, host, port and path (default path "/slave"), replacing what m
 * held; the caller frees m with tf_slave_master_free. Returns 0, TF_ENOMEM
 * or TF_ECONFIG with a reason in err. Exposed for unit tests. */
int tf_slave_url_parse(const char *url, tf_slave_master_t *m, char *err,
                       size_t errlen);

/* Frees what m owns and zeroes it; m may be NULL. */
void tf_slave_master_free(tf_slave_master_t *m);

/* Writes the --help text to out. */
void tf_slave_config_usage(FILE *out);

#endif
