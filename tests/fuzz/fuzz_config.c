/*
 * fuzz_config.c - libFuzzer driver for the master's config loader
 * (tf_config_load_text), which reads a file the admin writes and SIGHUP
 * reloads on a running master.
 *
 * Beyond "no crash, no leak, no unbounded work": the verdict is 0 with a
 * config and no diagnostic, or TF_ECONFIG with no config and at least one
 * diagnostic, each with a message and a position inside the text (or
 * none); loading the same text twice gives the same diagnostics; an
 * accepted config has what the loader promises (names, at least one step
 * per builder, lost_after_s above heartbeat_s, a public URL ending in
 * '/').
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "names.h"
#include "tf_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_config: invariant violated: %s\n", what);
        abort();
    }
}

static void accepted(const tf_config_t *c)
{
    check(c->name && *c->name, "a name");
    check(c->lost_after_s > c->heartbeat_s, "lost_after_s above heartbeat");
    size_t u = strlen(c->public_url);
    check(u > 0 && c->public_url[u - 1] == '/', "url ends with /");
    check(c->database && c->database[0] == '/', "database is absolute");
    for (size_t i = 0; i < c->nslaves; i++) {
        check(tf_name_valid(c->slaves[i].name), "slave name");
        check(c->slaves[i].secret && *c->slaves[i].secret, "slave secret");
        check(tf_config_slave(c, c->slaves[i].name) == &c->slaves[i],
              "slave names are unique");
    }
    for (size_t i = 0; i < c->nbuilders; i++) {
        const tf_cfg_builder_t *b = &c->builders[i];
        check(tf_name_valid(b->name), "builder name");
        check(tf_config_builder(c, b->name) == b, "builder names unique");
        check(b->nsteps >= 1 && b->nsteps <= TF_PROTO_MAX_STEPS, "steps");
        check(!b->branch == !b->repository, "branch with repository");
        for (size_t k = 0; k < b->nsteps; k++)
            check(b->steps[k].spec.argc >= 1 && b->steps[k].spec.argv[0][0],
                  "a program to run");
        for (size_t k = 0; k < c->nslaves; k++)
            (void)tf_config_slave_allowed(b, &c->slaves[k]);
    }
    for (size_t i = 0; i < c->nschedulers; i++) {
        const tf_cfg_scheduler_t *s = &c->schedulers[i];
        check(s->nbuilders >= 1, "a scheduler has builders");
        for (size_t k = 0; k < s->nbuilders; k++)
            check(tf_config_builder(c, s->builders[k]) != NULL,
                  "schedulers name configured builders");
        check(s->type == TF_CFG_SCHED_PERIODIC || s->repository,
              "a change scheduler watches a repository");
        check(s->type == TF_CFG_SCHED_CHANGE || s->cron, "a cron spec");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tf_cfg_diags_t d1 = {0}, d2 = {0};
    tf_config_t *c = NULL, *c2 = NULL;
    int lines = 1;
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n';
    int rc = tf_config_load_text("/nonexistent/fuzz/master.json",
                                 (const char *)data, size, &c, &d1);
    check(rc == 0 || rc == TF_ECONFIG || rc == TF_ENOMEM, "verdict");
    if (rc == 0) {
        check(c != NULL && d1.count == 0, "accepted: a config, no diags");
        accepted(c);
    } else if (rc == TF_ECONFIG) {
        check(c == NULL && d1.count >= 1, "refused: diags, no config");
    }
    for (size_t i = 0; i < d1.count; i++) {
        const tf_cfg_diag_t *g = &d1.items[i];
        check(g->message && *g->message && g->key && g->file, "diag parts");
        check(g->line >= 0 && g->line <= lines && g->col >= 0, "position");
        char *s = tf_cfg_diag_format(g);
        check(s != NULL, "diag formats");
        free(s);
    }
    int rc2 = tf_config_load_text("/nonexistent/fuzz/master.json",
                                  (const char *)data, size, &c2, &d2);
    if (rc != TF_ENOMEM && rc2 != TF_ENOMEM) {
        check(rc == rc2 && d1.count == d2.count, "same text, same verdict");
        for (size_t i = 0; i < d1.count; i++)
            check(strcmp(d1.items[i].message, d2.items[i].message) == 0 &&
                      d1.items[i].line == d2.items[i].line,
                  "same diagnostics");
    }
    tf_config_free(c);
    tf_config_free(c2);
    tf_cfg_diags_clear(&d1);
    tf_cfg_diags_clear(&d2);
    return 0;
}
