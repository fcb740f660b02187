/*
 * main.c - tf-master's command line: parses arguments and hands over to
 * the daemon (master.c) or an administrative subcommand (cli.c).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "admin/cli.h"
#include "log.h"
#include "daemon.h"
#include "names.h"
#include "core/users.h"
#include "util.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: tf-master [--log-level LEVEL] COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  create DIR [--port N] [--force]  make a master directory with "
            "an example config\n"
            "  run DIR [--config FILE]          run the master of DIR in the "
            "foreground\n"
            "  checkconfig FILE|DIR             check a config, print every "
            "error\n"
            "  check DIR                        check the database for damage "
            "(read-only)\n"
            "  force BUILDER [--reason TEXT] [-d DIR]\n"
            "                                   ask the running master to "
            "build BUILDER now\n"
            "  user add EMAIL [--name NAME] [-d DIR]\n"
            "                                   add a committer; prints "
            "their token once\n"
            "  user list [-d DIR]               list committers\n"
            "  user remove EMAIL [-d DIR]       remove a committer (their "
            "token stops working)\n"
            "  migrate --to postgresql://... [-d DIR]\n"
            "                                   copy the sqlite database into "
            "an empty PostgreSQL one\n"
            "  vacuum [DIR] [--config FILE]     with the master stopped: "
            "seal old logs, apply\n"
            "                                   the retention, compact the "
            "database file\n"
            "  mail preview job:ID|build:ID [-d DIR]\n"
            "                                   print the mail that would be "
            "sent (docs/admins.md)\n"
            "\n"
            "LEVEL is debug, info (default), warn or error. Exit status: 0 "
            "success,\n"
            "1 failure, 2 usage or configuration error. See docs/config.md "
            "and docs/api.md.\n");
}

int main(int argc, char **argv)
{
    tf_log_level_t level = TF_LOG_INFO;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("tf-master %s\n", TF_VERSION);
            return 0;
        }
        if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
            if (tf_log_parse_level(argv[++i], &level) != 0) {
                fprintf(stderr, "tf-master: unknown log level \"%s\"\n",
                        argv[i]);
                return 2;
            }
            continue;
        }
        fprintf(stderr, "tf-master: unknown option %s\n", argv[i]);
        usage(stderr);
        return 2;
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    tf_log_init("tf-master", level, NULL);
    const char *cmd = argv[i++];
    /* Subcommand options. */
    const char *dir = NULL, *config = NULL, *reason = NULL, *pos1 = NULL;
    const char *pos2 = NULL, *name = NULL, *to = NULL;
    unsigned port = 8010;
    int force = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if ((strcmp(a, "-d") == 0 || strcmp(a, "--dir") == 0) && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(a, "--config") == 0 && i + 1 < argc)
            config = argv[++i];
        else if (strcmp(a, "--reason") == 0 && i + 1 < argc)
            reason = argv[++i];
        else if (strcmp(a, "--name") == 0 && i + 1 < argc)
            name = argv[++i];
        else if (strcmp(a, "--to") == 0 && i + 1 < argc)
            to = argv[++i];
        else if (strcmp(a, "--port") == 0 && i + 1 < argc) {
            uint64_t p = 0;
            if (tf_parse_u64(argv[++i], &p) != 0 || p == 0 || p > 65535) {
                fprintf(stderr, "tf-master: --port needs 1..65535\n");
                return 2;
            }
            port = (unsigned)p;
        } else if (strcmp(a, "--force") == 0)
            force = 1;
        else if (strcmp(a, "--log-level") == 0 && i + 1 < argc) {
            if (tf_log_parse_level(argv[++i], &level) != 0) {
                fprintf(stderr, "tf-master: unknown log level \"%s\"\n",
                        argv[i]);
                return 2;
            }
            tf_log_init("tf-master", level, NULL);
        } else if (a[0] == '-') {
            fprintf(stderr, "tf-master %s: unknown option %s\n", cmd, a);
            return 2;
        } else if (!pos1)
            pos1 = a;
        else if (!pos2)
            pos2 = a;
        else {
            fprintf(stderr, "tf-master %s: unexpected argument %s\n", cmd, a);
            return 2;
        }
    }

    if (pos2 && strcmp(cmd, "user") != 0 && strcmp(cmd, "mail") != 0) {
        fprintf(stderr, "tf-master %s: unexpected argument %s\n", cmd, pos2);
        return 2;
    }
    if (strcmp(cmd, "user") == 0) {
        if (!pos1) {
            fprintf(stderr, "tf-master user: add EMAIL [--name NAME], list, "
                    "or remove EMAIL\n");
            return 2;
        }
        return tf_users_cli(dir ? dir : ".", pos1, pos2, name);
    }
    if (strcmp(cmd, "run") == 0) {
        const char *d = pos1 ? pos1 : dir ? dir : ".";
        return tf_master_run(d, config);
    }
    if (strcmp(cmd, "create") == 0) {
        const char *d = pos1 ? pos1 : dir;
        if (!d) {
            fprintf(stderr, "tf-master create: which directory?\n");
            return 2;
        }
        return tf_cli_create(d, port, force);
    }
    if (strcmp(cmd, "checkconfig") == 0) {
        const char *p = pos1 ? pos1 : config ? config : dir ? dir : ".";
        return tf_cli_checkconfig(p);
    }
    if (strcmp(cmd, "check") == 0)
        return tf_cli_check(pos1 ? pos1 : config ? config : dir ? dir : ".");
    if (strcmp(cmd, "migrate") == 0) {
        if (!to) {
            fprintf(stderr, "tf-master migrate: give --to postgresql://...\n");
            return 2;
        }
        return tf_cli_migrate(dir ? dir : pos1 ? pos1 : ".", config, to);
    }
    if (strcmp(cmd, "mail") == 0)
        return tf_cli_mail(dir ? dir : ".", config, pos1, pos2);
    if (strcmp(cmd, "vacuum") == 0)
        return tf_cli_vacuum(pos1 ? pos1 : dir ? dir : ".", config);
    if (strcmp(cmd, "force") == 0) {
        if (!pos1 || !tf_name_valid(pos1)) {
            fprintf(stderr, "tf-master force: give a builder name\n");
            return 2;
        }
        curl_global_init(CURL_GLOBAL_DEFAULT);
        int rc = tf_cli_force(dir ? dir : ".", pos1, reason);
        curl_global_cleanup();
        return rc;
    }
    fprintf(stderr, "tf-master: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}
