/*
 * config_doc.c - docs/config.md's key tables, made from the loader's own
 * tables (config_keys.c), so the reference cannot drift from what the
 * loader accepts: the unit test config_doc regenerates every table and
 * compares it with the page.
 *
 * A row's type, default and range come from its kind and fields; the
 * defaults of integers and bools are read from a struct the table's init
 * and row defaults have filled, i.e. from what the loader really does.
 * doc_type and doc_def override the columns where a kind says too little.
 */
#include "config/config_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "tf_err.h"

#define CFG_DOC_TABLES 32

static void cfg_tables_add(const cfg_table_t *t, const cfg_table_t **out,
                           size_t max, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        if (out[i] == t)
            return;
    if (*n < max)
        out[(*n)++] = t;
    for (size_t i = 0; i < t->nkeys; i++)
        if (t->keys[i].sub)
            cfg_tables_add(t->keys[i].sub, out, max, n);
}

size_t cfg_tables(const cfg_table_t **out, size_t max)
{
    size_t n = 0;
    cfg_tables_add(&cfg_top_table, out, max, &n);
    return n;
}

static const cfg_table_t *cfg_doc_find(const char *name)
{
    const cfg_table_t *all[CFG_DOC_TABLES];
    size_t n = cfg_tables(all, CFG_DOC_TABLES);
    for (size_t i = 0; i < n; i++)
        if (strcmp(all[i]->name, name) == 0)
            return all[i];
    return NULL;
}

const char *tf_config_doc_name(size_t i)
{
    const cfg_table_t *all[CFG_DOC_TABLES];
    size_t n = cfg_tables(all, CFG_DOC_TABLES);
    return i < n ? all[i]->name : NULL;
}

static const char *cfg_doc_type(const cfg_key_t *k)
{
    if (k->doc_type)
        return k->doc_type;
    switch (k->kind) {
    case CFG_BOOL:
        return "bool";
    case CFG_INT:
        return "integer";
    case CFG_STR:
        return k->flags & CFG_EMAIL ? "email address" : "string";
    case CFG_NAME:
        return "name";
    case CFG_NAMES:
        return "array of names";
    case CFG_PATH:
        return "path";
    case CFG_ENUM:
        return "string";
    case CFG_KV:
        return "object";
    case CFG_STRINGS:
        return k->flags & CFG_EMAIL ? "array of email addresses"
                                    : "array of strings";
    case CFG_REGEX:
        return "regex";
    case CFG_REGEXES:
        return "array of regexes";
    case CFG_SECTION:
        return "object";
    case CFG_LIST:
        return "array of objects";
    case CFG_CUSTOM:
        return "";
    }
    return "";
}

/* The default column of k, whose field in the defaulted struct out says
 * what integers, bools and enums start as. */
static int cfg_doc_default(tf_buf_t *b, const cfg_key_t *k, void *out)
{
    void *base = cfg_base(k, out);
    const char *field =
        base && k->off != CFG_NOFIELD ? (const char *)base + k->off : NULL;
    if (k->flags & CFG_REQUIRED)
        return tf_buf_append_str(b, "required");
    if (k->doc_def)
        return tf_buf_append_str(b, k->doc_def);
    switch (k->kind) {
    case CFG_BOOL:
        return tf_buf_append_str(b, field && *(const bool *)field ? "`true`"
                                                                  : "`false`");
    case CFG_INT: {
        long long x = 0;
        if (field && k->size == 2)
            x = *(const uint16_t *)field;
        else if (field && k->size == 8)
            x = (long long)*(const uint64_t *)field;
        else if (field && (k->flags & CFG_SIGNED))
            x = *(const int32_t *)field;
        else if (field)
            x = *(const uint32_t *)field;
        return tf_buf_printf(b, "`%lld`", x);
    }
    case CFG_STR:
    case CFG_PATH:
        return k->sdef ? tf_buf_printf(b, "`\"%s\"`", k->sdef)
                       : tf_buf_append_str(b, "none");
    case CFG_ENUM:
        for (size_t i = 0; field && k->words[i].word; i++)
            if (k->words[i].value == *(const int *)field)
                return tf_buf_printf(b, "`\"%s\"`", k->words[i].word);
        return tf_buf_append_str(b, "none");
    case CFG_NAMES:
    case CFG_STRINGS:
    case CFG_REGEXES:
    case CFG_LIST:
        return tf_buf_append_str(b, "`[]`");
    case CFG_KV:
        return tf_buf_append_str(b, "`{}`");
    default:
        return tf_buf_append_str(b, "none");
    }
}

/* The meaning column: the row's line, then the range its kind enforces. */
static int cfg_doc_meaning(tf_buf_t *b, const cfg_key_t *k)
{
    const char *sep = k->doc && *k->doc ? "; " : "";
    int rc = tf_buf_append_str(b, k->doc ? k->doc : "");
    if (rc < 0)
        return rc;
    switch (k->kind) {
    case CFG_INT:
        if (k->max == CFG_NOMAX)
            return k->min > 0 ? tf_buf_printf(b, "%sat least %lld", sep,
                                              k->min)
                              : 0;
        return tf_buf_printf(b, "%s%lld..%lld", sep, k->min, k->max);
    case CFG_LIST:
    case CFG_REGEXES:
        if (k->min > 0 && k->max > 0)
            return tf_buf_printf(b, "%s%lld to %lld", sep, k->min, k->max);
        return k->max > 0 ? tf_buf_printf(b, "%sat most %lld", sep, k->max)
                          : 0;
    case CFG_STRINGS:
        return tf_buf_printf(b, "%sat most %d, of 1..%d bytes each", sep,
                             CFG_STRINGS_MAX, CFG_STRING_BYTES);
    default:
        return 0;
    }
}

char *tf_config_doc_table(const char *name)
{
    const cfg_table_t *t = name ? cfg_doc_find(name) : NULL;
    void *out = NULL;
    tf_buf_t b;
    int rc = 0;

    if (!t)
        return NULL;
    tf_buf_init(&b, 0);
    if (!(out = calloc(1, t->size)) ||
        (t->init && t->init(NULL, NULL, out) < 0)) {
        rc = TF_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < t->nkeys; i++)
        if (t->keys[i].kind == CFG_BOOL || t->keys[i].kind == CFG_INT)
            cfg_apply_default(NULL, &t->keys[i], out);
    rc = tf_buf_append_str(&b, "| key | type | default | meaning |\n"
                               "|-----|------|---------|---------|\n");
    for (size_t i = 0; rc == 0 && i < t->nkeys; i++) {
        const cfg_key_t *k = &t->keys[i];
        rc = tf_buf_printf(&b, "| `%s` | %s | ", k->name, cfg_doc_type(k));
        if (rc == 0)
            rc = cfg_doc_default(&b, k, out);
        if (rc == 0)
            rc = tf_buf_append_str(&b, " | ");
        if (rc == 0)
            rc = cfg_doc_meaning(&b, k);
        if (rc == 0)
            rc = tf_buf_append_str(&b, " |\n");
    }
out:
    if (out && t->clear)
        t->clear(out);
    free(out);
    if (rc < 0) {
        tf_buf_free(&b);
        return NULL;
    }
    return (char *)tf_buf_steal(&b, NULL);
}
