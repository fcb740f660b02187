/*
 * users.c - committers and their tokens (see users.h).
 */
#include "core/users.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "admin/cli.h"
#include "clock.h"
#include "config/config.h"
#include "crypto.h"
#include "store/store_sqlite.h"
#include "tf_err.h"
#include "utf8.h"
#include "util.h"

bool tf_username_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, TF_USERNAME_MAX + 1);
    if (n == 0 || n > TF_USERNAME_MAX)
        return false;
    return tf_utf8_text_clean(s, false);
}

/* --- the administrative commands --- */

typedef struct user_cmd {
    const char *email;
    const char *name;
    char token_sha[TF_SHA256_HEX_LEN + 1];
    int rc;      /* write outcome */
    int changes; /* rows touched */
    bool done;
} user_cmd_t;

static int add_fn(sqlite3 *db, void *arg)
{
    user_cmd_t *c = arg;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO users(email, name, token_sha256, "
                           "created_ms) VALUES(?1, ?2, ?3, ?4) "
                           "ON CONFLICT(email) DO NOTHING",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_text(st, 1, c->email, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, c->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, c->token_sha, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, tf_now_ms());
    int s = sqlite3_step(st);
    sqlite3_finalize(st);
    if (s != SQLITE_DONE)
        return TF_ESTORE;
    c->changes = sqlite3_changes(db);
    return 0;
}

static int remove_fn(sqlite3 *db, void *arg)
{
    user_cmd_t *c = arg;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "DELETE FROM users WHERE email = ?1", -1, &st,
                           NULL) != SQLITE_OK)
        return TF_ESTORE;
    sqlite3_bind_text(st, 1, c->email, -1, SQLITE_TRANSIENT);
    int s = sqlite3_step(st);
    sqlite3_finalize(st);
    if (s != SQLITE_DONE)
        return TF_ESTORE;
    c->changes = sqlite3_changes(db);
    return 0;
}

static int list_fn(sqlite3 *db, void *arg)
{
    (void)arg;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT email, name, created_ms, last_used_ms "
                           "FROM users ORDER BY email",
                           -1, &st, NULL) != SQLITE_OK)
        return TF_ESTORE;
    printf("%-40s %-30s %-20s %s\n", "EMAIL", "NAME", "ADDED", "LAST USED");
    while (sqlite3_step(st) == SQLITE_ROW) {
        char added[40] = "-", used[40] = "-";
        if (sqlite3_column_type(st, 2) != SQLITE_NULL)
            tf_time_iso(sqlite3_column_int64(st, 2), added, sizeof(added));
        if (sqlite3_column_type(st, 3) != SQLITE_NULL)
            tf_time_iso(sqlite3_column_int64(st, 3), used, sizeof(used));
        added[19] = used[19] = '\0'; /* to the second */
        printf("%-40s %-30s %-20s %s\n", sqlite3_column_text(st, 0),
               sqlite3_column_text(st, 1), added, used);
    }
    sqlite3_finalize(st);
    return 0;
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
    user_cmd_t c = {.email = email, .name = name};
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
        c.name = name = email;
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
        code = tf_store_read_sync(store, list_fn, NULL) == 0 ? 0 : 1;
        goto out;
    }
    if (is_add) {
        /* 160 random bits, prefixed so a leaked token is recognisable. */
        memcpy(token, "tft_", 4);
        if (tf_random_hex(20, token + 4) != 0)
            goto out;
        tf_sha256_hex(token, strlen(token), c.token_sha);
        rc = tf_store_write_fn(store, add_fn, 256, write_done, &c);
    } else {
        rc = tf_store_write_fn(store, remove_fn, 256, write_done, &c);
    }
    if (rc)
        goto out;
    while (!c.done)
        uv_run(loop, UV_RUN_ONCE);
    if (c.rc) {
        fprintf(stderr, "tf-master user %s: the database refused the change\n",
                verb);
        goto out;
    }
    if (c.changes == 0) {
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
