/*
 * settings.c - what mail takes from the config: a deep copy of the mail
 * section, the master's name and URL, and each builder's notifier mode,
 * extra recipients and error patterns (the mail section's when the
 * builder names none).
 *
 * A copy, not a pointer into the config: the sender thread reads it while
 * the loop thread may free the config it came from (SIGHUP). The copy is
 * reference counted under the sender's mutex (sender.c) and replaced
 * whole on a reload.
 */
#include "mail/mail_int.h"

#include <stdlib.h>
#include <string.h>

#include "tf_err.h"

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static int strv_dup(char *const *src, size_t n, char ***out)
{
    *out = NULL;
    if (!src)
        return 0;
    char **v = calloc(n + 1, sizeof(*v));
    if (!v)
        return TF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!(v[i] = strdup(src[i]))) {
            strv_free(v, i);
            return TF_ENOMEM;
        }
    }
    *out = v;
    return 0;
}

static char *dup_or_null(const char *s, bool *oom)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        *oom = true;
    return d;
}

void tf__mail_settings_free(tf__mail_settings_t *s)
{
    if (!s)
        return;
    free(s->name);
    free(s->base_url);
    tf_cfg_mail_t *m = &s->mail;
    free(m->from);
    free(m->from_name);
    free(m->subject_prefix);
    free(m->smtp_host);
    free(m->smtp_username);
    if (m->smtp_password) {
        explicit_bzero(m->smtp_password, strlen(m->smtp_password));
        free(m->smtp_password);
    }
    free(m->smtp_ca_file);
    strv_free(m->sendmail, m->nsendmail);
    strv_free(m->error_patterns, m->npatterns);
    for (size_t i = 0; s->builders && i < s->nbuilders; i++) {
        free(s->builders[i].builder);
        strv_free(s->builders[i].patterns, s->builders[i].npatterns);
        strv_free(s->builders[i].extra, s->builders[i].nextra);
    }
    free(s->builders);
    free(s);
}

tf__mail_settings_t *tf__mail_settings_new(const tf_config_t *c)
{
    tf__mail_settings_t *s = calloc(1, sizeof(*s));
    bool oom = false;
    if (!s)
        return NULL;
    s->refs = 1;
    s->name = dup_or_null(c->name, &oom);
    s->base_url = dup_or_null(c->public_url, &oom);
    s->pages = c->web_root != NULL;
    const tf_cfg_mail_t *src = &c->mail;
    tf_cfg_mail_t *m = &s->mail;
    *m = *src; /* numbers and flags; every pointer is replaced below */
    m->from = dup_or_null(src->from, &oom);
    m->from_name = dup_or_null(src->from_name, &oom);
    m->subject_prefix = dup_or_null(src->subject_prefix, &oom);
    m->smtp_host = dup_or_null(src->smtp_host, &oom);
    m->smtp_username = dup_or_null(src->smtp_username, &oom);
    m->smtp_password = dup_or_null(src->smtp_password, &oom);
    m->smtp_ca_file = dup_or_null(src->smtp_ca_file, &oom);
    oom = oom || strv_dup(src->sendmail, src->nsendmail, &m->sendmail) ||
          strv_dup(src->error_patterns, src->npatterns, &m->error_patterns);
    s->builders = calloc(c->nbuilders ? c->nbuilders : 1,
                         sizeof(tf__mail_bset_t));
    if (!s->builders)
        oom = true;
    for (size_t i = 0; !oom && i < c->nbuilders; i++) {
        const tf_cfg_builder_t *b = &c->builders[i];
        tf__mail_bset_t *x = &s->builders[s->nbuilders++];
        x->builder = dup_or_null(b->name, &oom);
        x->mode = b->mail.mode;
        x->nextra = b->mail.nextra;
        oom = oom || strv_dup(b->mail.extra_recipients, b->mail.nextra,
                              &x->extra);
        if (b->mail.has_patterns) {
            x->npatterns = b->mail.npatterns;
            oom = oom || strv_dup(b->mail.error_patterns, b->mail.npatterns,
                                  &x->patterns);
        } else {
            x->npatterns = src->npatterns;
            oom = oom || strv_dup(src->error_patterns, src->npatterns,
                                  &x->patterns);
        }
    }
    if (oom) {
        tf__mail_settings_free(s);
        return NULL;
    }
    return s;
}

const tf__mail_bset_t *tf__mail_settings_builder(const tf__mail_settings_t *s,
                                                 const char *name)
{
    for (size_t i = 0; name && i < s->nbuilders; i++)
        if (strcmp(s->builders[i].builder, name) == 0)
            return &s->builders[i];
    return NULL;
}
