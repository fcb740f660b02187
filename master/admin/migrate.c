/*
 * migrate.c - `tf-master migrate --to postgresql://...`: moves a master
 * from its sqlite file to PostgreSQL by copying every row into an empty
 * PostgreSQL database (store.h, tf_store_copy_sqlite does the copy in one
 * transaction). The sqlite file is only read and stays as it was, so
 * going back is a matter of not changing the config. Stop the master
 * first: its last writes would not be in the copy.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "admin/cli.h"
#include "config/config.h"
#include "store/store.h"
#include "tf_err.h"
#include "util.h"

int tf_cli_migrate(const char *dir, const char *config, const char *url)
{
    tf_config_t *cfg = NULL;
    tf_cfg_diags_t diags = {0};
    struct stat st;
    char msg[512];
    uint64_t rows = 0;
    char *path;
    int rc;

    if (strncmp(url, "postgresql://", 13) != 0 &&
        strncmp(url, "postgres://", 11) != 0) {
        fprintf(stderr, "tf-master migrate: --to must be a postgresql:// "
                        "URL, not \"%s\"\n",
                url);
        return 2;
    }
    path = config ? strdup(config) : tf_path_join(dir, "master.json");
    if (!path)
        return 1;
    rc = tf_config_load(path, &cfg, &diags);
    if (rc) {
        for (size_t i = 0; i < diags.count; i++) {
            char *line = tf_cfg_diag_format(&diags.items[i]);
            fprintf(stderr, "%s\n", line ? line : "(out of memory)");
            free(line);
        }
        fprintf(stderr, "tf-master migrate: %s: %zu error%s\n", path,
                diags.count, diags.count == 1 ? "" : "s");
        tf_cfg_diags_clear(&diags);
        free(path);
        return 2;
    }
    free(path);
    if (strstr(cfg->database, "://")) {
        fprintf(stderr, "tf-master migrate: this master is not on sqlite "
                        "(store.postgres is set): nothing to copy\n");
        tf_config_free(cfg);
        return 2;
    }
    if (stat(cfg->database, &st) != 0) {
        fprintf(stderr, "tf-master migrate: %s: no such database\n",
                cfg->database);
        tf_config_free(cfg);
        return 1;
    }
    rc = tf_store_copy_sqlite(cfg->database, url, &rows, msg, sizeof(msg));
    if (rc) {
        fprintf(stderr, "tf-master migrate: %s\n", msg);
        fprintf(stderr, "tf-master migrate: nothing was copied; %s is "
                        "unchanged\n",
                cfg->database);
        tf_config_free(cfg);
        return 1;
    }
    printf("copied %" PRIu64 " rows from %s\n"
           "now set \"store\": {\"postgres\": \"<the URL>\"} in the config "
           "and start the master\n",
           rows, cfg->database);
    tf_config_free(cfg);
    return 0;
}
