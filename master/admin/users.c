/*
 * users.c - `tf-master user add|list|remove`: committers and their tokens
 * (core/users.h says what a committer is).
 *
 * The commands open the database directly (through the store, so
 * migrations apply): they work whether or not the master is running, and
 * the running master sees a change at its next request. The token is shown
 * once; the database keeps only its SHA-256.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "admin/cli.h"
#include "clock.h"
#include "config/config.h"
#include "core/master.h"
#include "core/users.h"
#include "crypto.h"
#include "store/dblock.h"
#include "store/store.h"
#include "tf_err.h"
#include "util.h"

typedef struct user_cmd {
    int rc;      /* write outcome */
    int changed; /* a row was added or removed */
    bool done;
} user_cmd_t;

static int list_users(tf_store_t *store)
{
    tf_q_users_t q = {.q.kind = TF_Q_USERS};
    int rc = tf_store_query_sync(store, &q.q);

    if (rc == 0) {
        printf("%-40s %-30s %-20s %s\n", "EMAIL", "NAME", "ADDED",
               "LAST USED");
        for (size_t i = 0; i < q.n; i++) {
            const tf_user_row_t *u = &q.rows[i];
            char added[40] = "-", used[40] = "-";
            if (u->created_ms)
                tf_time_iso(u->created_ms, added, sizeof(added));
            if (u->last_used_ms)
                tf_time_iso(u->last_used_ms, used, sizeof(used));
            added[19] = used[19] = '\0'; /* to the second */
            printf("%-40s %-30s %-20s %s\n", u->email, u->name, added, used);
        }
    }
    free(q.rows);
    return rc;
}

static void write_done(void *arg, int rc)
{
    user_cmd_t *c = arg;
    c->rc = rc;
    c->done = true;
}

int tf_users_cli(const char *dir, const char *verb, const char *email,
                 const char *name)
{
    char *cfg_path = tf_path_join(dir, "master.json");
    tf_cli_offline_t off = {0};
    user_cmd_t c = {0};
    char token[4 + 64 + 1];
    int code = 1, rc;

    bool is_add = strcmp(verb, "add") == 0, is_rm = strcmp(verb, "remove") == 0;
    if (!is_add && !is_rm && strcmp(verb, "list") != 0) {
        fprintf(stderr, "tf-master user: use add, list or remove\n");
        code = 2;
        goto out;
    }
    if ((is_add || is_rm) && !tf_email_valid(email)) {
        fprintf(stderr, "tf-master user %s: \"%s\" is not a valid email "
                "address\n", verb, email ? email : "");
        code = 2;
        goto out;
    }
    if (is_add && !name)
        name = email;
    if (is_add && !tf_username_valid(name)) {
        fprintf(stderr, "tf-master user add: the name must be 1..128 bytes "
                "of UTF-8 without control characters\n");
        code = 2;
        goto out;
    }
    code = tf_cli_offline_open(&off, cfg_path, "tf-master user");
    if (code)
        goto out;
    code = 1;
    tf_store_t *store = off.store;
    uv_loop_t *loop = &off.loop;
    if (!is_add && !is_rm) {
        code = list_users(store) == 0 ? 0 : 1;
        goto out;
    }
    tf_wgroup_t *g = tf_wgroup_new(0);
    if (!g)
        goto out;
    if (is_add) {
        char token_sha[TF_SHA256_HEX_LEN + 1];
        /* 160 random bits, prefixed so a leaked token is recognisable. */
        memcpy(token, "tft_", 4);
        if (tf_random_hex(20, token + 4) != 0) {
            tf_wgroup_free(g);
            goto out;
        }
        tf_sha256_hex(token, strlen(token), token_sha);
        tf_op_user_add(g, email, name, token_sha, tf_now_ms(), &c.changed);
    } else {
        tf_op_user_remove(g, email, &c.changed);
    }
    rc = tf_store_submit(store, g, write_done, &c);
    if (rc) {
        tf_wgroup_free(g);
        goto out;
    }
    while (!c.done)
        uv_run(loop, UV_RUN_ONCE);
    if (c.rc) {
        fprintf(stderr, "tf-master user %s: the database refused the change\n",
                verb);
        goto out;
    }
    if (!c.changed) {
        fprintf(stderr, is_add ? "tf-master user add: %s already exists "
                                 "(remove it first to issue a new token)\n"
                               : "tf-master user remove: no user %s\n",
                email);
        goto out;
    }
    if (is_add) {
        fprintf(stderr, "added %s (%s). Their token, shown this once: give it "
                "to them for ~/.config/tf-try/token (mode 0600) or "
                "TF_TRY_TOKEN:\n", email, name);
        printf("%s\n", token);
        fflush(stdout);
        explicit_bzero(token, sizeof(token));
    } else {
        fprintf(stderr, "removed %s: their token no longer works\n", email);
    }
    code = 0;
out:
    tf_cli_offline_close(&off);
    free(cfg_path);
    return code;
}

int tf_cli_vacuum(const char *dir, const char *config)
{
    char *cfg_path = config ? strdup(config) : tf_path_join(dir, "master.json");
    tf_config_t *cfg = NULL;
    tf_cfg_diags_t diags = {0};
    tf_retention_t ret = {0};
    tf_vacuum_stats_t st;
    tf_dblock_t lock = {.fd = -1};
    int code = 2;

    if (!cfg_path || tf_config_load(cfg_path, &cfg, &diags) != 0) {
        for (size_t i = 0; i < diags.count; i++)
            fprintf(stderr, "%s:%d:%d: error: %s: %s\n",
                    diags.items[i].file, diags.items[i].line,
                    diags.items[i].col, diags.items[i].key,
                    diags.items[i].message);
        fprintf(stderr, "tf-master vacuum: cannot load %s\n",
                cfg_path ? cfg_path : "the config");
        goto out;
    }
    if (strstr(cfg->database, "://")) {
        /* PostgreSQL: the running master seals logs and applies the
         * retention itself, and the server's autovacuum reuses the space
         * (VACUUM FULL, with the master stopped, gives it back). */
        fprintf(stderr, "tf-master vacuum: not on PostgreSQL (store.postgres "
                        "is set): the running master applies the retention "
                        "itself; to give space back to the file system run "
                        "VACUUM FULL in the database with the master "
                        "stopped\n");
        goto out;
    }
    char holder[256];
    code = 3;
    if (tf_dblock_take(cfg->database, "tf-master vacuum", &lock, holder,
                       sizeof(holder)) == TF_EEXIST) {
        fprintf(stderr, "tf-master vacuum: %s is in use by %s: stop the "
                        "master first (vacuum rewrites the database as if "
                        "alone)\n", cfg->database, holder);
        goto out;
    }
    code = 1;
    if (lock.fd < 0) {
        fprintf(stderr, "tf-master vacuum: cannot lock %s: %s\n",
                cfg->database, holder);
        goto out;
    }
    if (tf_retention_from_config(cfg, &ret) != 0) {
        fprintf(stderr, "tf-master vacuum: out of memory\n");
        goto out;
    }
    int rc = tf_store_vacuum(cfg->database, &ret, &st);
    if (rc != 0) {
        fprintf(stderr, "tf-master vacuum: %s: %s (is the master still "
                "running? stop it first)\n", cfg->database, tf_strerror(rc));
        goto out;
    }
    printf("%s: %" PRIu64 " units of work (%" PRIu64 " removing logs by "
           "retention); %.1f MiB -> %.1f MiB\n",
           cfg->database, st.units, st.removed,
           (double)st.bytes_before / 1048576.0,
           (double)st.bytes_after / 1048576.0);
    code = 0;
out:
    tf_dblock_release(&lock);
    free(ret.rules);
    tf_config_free(cfg);
    tf_cfg_diags_clear(&diags);
    free(cfg_path);
    return code;
}
