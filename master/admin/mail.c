/*
 * mail.c (admin) - `tf-master mail preview job:ID|build:ID`: prints the
 * mail that would be sent about a try job or a build, rendered exactly as
 * the sender would (mail/compose.c), without sending or queueing anything.
 * Works on the master's database whether or not the master runs.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/cli.h"
#include "config/config.h"
#include "mail/mail.h"
#include "tf_err.h"
#include "util.h"

static int parse_target(const char *t, const char **kind, uint64_t *id)
{
    const char *colon = t ? strchr(t, ':') : NULL;
    if (!colon)
        return TF_EINVAL;
    if ((size_t)(colon - t) == 3 && strncmp(t, "job", 3) == 0)
        *kind = "job";
    else if ((size_t)(colon - t) == 5 && strncmp(t, "build", 5) == 0)
        *kind = "build";
    else
        return TF_EINVAL;
    if (tf_parse_u64(colon + 1, id) != 0 || *id == 0)
        return TF_EINVAL;
    return 0;
}

/* What the preview tells on stderr besides the message: its size and
 * recipients, and why it might never be sent. */
static void preview_notes(const tf_config_t *cfg, const char *kind,
                          const tf_mail_preview_t *p)
{
    fprintf(stderr, "preview: %zu bytes (CRLF line ends when sent) to %s%s\n",
            p->msg.len, p->recipients,
            !cfg->mail.enabled ? "; mail is off in this config" : "");
    if (strcmp(kind, "job") == 0 && !p->notify)
        fprintf(stderr, "preview: this job asked for no mail (tf-try "
                "--no-email): none is sent for it\n");
    if (strcmp(kind, "build") == 0 && p->in_job)
        fprintf(stderr, "preview: this build belongs to a try job: its "
                "author gets the job's report (job:ID), not a notice\n");
    else if (strcmp(kind, "build") == 0 && p->nobody)
        fprintf(stderr, "preview: nobody would get this notice: the "
                "builder has no extra_recipients and the build no "
                "blamelist\n");
}

int tf_cli_mail(const char *dir, const char *config, const char *verb,
                const char *target)
{
    const char *kind = NULL;
    uint64_t id = 0;
    char *cfg_path = NULL;
    tf_cli_offline_t off = {0};
    tf_mail_preview_t p = {0};
    int code = 2, rc;

    if (!verb || strcmp(verb, "preview") != 0 ||
        parse_target(target, &kind, &id) != 0) {
        fprintf(stderr, "usage: tf-master mail preview job:ID|build:ID "
                "[-d DIR] [--config FILE]\n"
                "  job:ID    the report of try job ID\n"
                "  build:ID  the notice for build ID (the build's id, as "
                "in /api/v1/builds/ID)\n");
        goto out;
    }
    cfg_path = config ? strdup(config) : tf_path_join(dir, "master.json");
    code = tf_cli_offline_open(&off, cfg_path, "tf-master mail");
    if (code)
        goto out;
    code = 1;
    rc = tf_mail_preview(off.store, off.cfg, kind, id, &p);
    if (rc == TF_ENOENT) {
        fprintf(stderr, "tf-master mail preview: no %s %" PRIu64 " in %s\n",
                strcmp(kind, "job") == 0 ? "try job" : "build", id,
                off.cfg->database);
        goto out;
    }
    if (rc) {
        fprintf(stderr, "tf-master mail preview: cannot render it: %s\n",
                rc == TF_E2BIG ? "it does not fit in message_max_bytes even "
                                 "without log excerpts"
                               : tf_strerror(rc));
        goto out;
    }
    /* The message with LF line ends, for a terminal or a pipe. */
    for (size_t i = 0; i < p.msg.len; i++)
        if (!(p.msg.data[i] == '\r' && i + 1 < p.msg.len &&
              p.msg.data[i + 1] == '\n'))
            putchar(p.msg.data[i]);
    fflush(stdout);
    preview_notes(off.cfg, kind, &p);
    code = 0;
out:
    tf_mail_preview_clear(&p);
    tf_cli_offline_close(&off);
    free(cfg_path);
    return code;
}
