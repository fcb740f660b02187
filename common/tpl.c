/*
 * tpl.c - byte templates with spliced values (tpl.h).
 *
 * Making a template finds every occurrence of each sentinel (memmem, left
 * to right, no overlaps), checks the counts the caller expects, and keeps
 * the text without them plus the list of holes in order. Rendering is
 * one pass of memcpy into a buffer sized exactly, so the result and its
 * cap are known before anything is copied.
 */
#include <stdlib.h>
#include <string.h>

#include "tf_err.h"
#include "tpl.h"

typedef struct hit {
    size_t at; /* in the original text */
    unsigned slot;
} hit_t;

static int hit_cmp(const void *a, const void *b)
{
    const hit_t *x = a, *y = b;
    return x->at < y->at ? -1 : x->at > y->at;
}

void tf_tpl_clear(tf_tpl_t *t)
{
    if (!t)
        return;
    free(t->text);
    memset(t, 0, sizeof(*t));
}

int tf_tpl_make(tf_tpl_t *t, const char *text, size_t len,
                const char *const *sentinels, const unsigned *counts,
                size_t nslots)
{
    hit_t hits[TF_TPL_MAX_HOLES];
    size_t nhits = 0, slen[TF_TPL_MAX_SLOTS];

    memset(t, 0, sizeof(*t));
    if (nslots > TF_TPL_MAX_SLOTS)
        return TF_EINVAL;
    for (size_t s = 0; s < nslots; s++) {
        unsigned found = 0;
        slen[s] = strlen(sentinels[s]);
        if (!slen[s])
            return TF_EINVAL;
        for (const char *p = text, *end = text + len;
             (p = memmem(p, (size_t)(end - p), sentinels[s], slen[s]));
             p += slen[s]) {
            if (nhits == TF_TPL_MAX_HOLES)
                return TF_EINVAL;
            hits[nhits++] = (hit_t){(size_t)(p - text), (unsigned)s};
            found++;
        }
        if (found != counts[s])
            return TF_EINVAL;
    }
    qsort(hits, nhits, sizeof(hits[0]), hit_cmp);
    for (size_t i = 1; i < nhits; i++)
        if (hits[i - 1].at + slen[hits[i - 1].slot] > hits[i].at)
            return TF_EINVAL; /* overlapping sentinels: ambiguous */
    size_t cut = 0;
    for (size_t i = 0; i < nhits; i++)
        cut += slen[hits[i].slot];
    t->text = malloc(len - cut + 1);
    if (!t->text)
        return TF_ENOMEM;
    size_t from = 0;
    for (size_t i = 0; i < nhits; i++) {
        memcpy(t->text + t->len, text + from, hits[i].at - from);
        t->len += hits[i].at - from;
        t->holes[i].at = t->len;
        t->holes[i].slot = hits[i].slot;
        from = hits[i].at + slen[hits[i].slot];
    }
    memcpy(t->text + t->len, text + from, len - from);
    t->len += len - from;
    t->text[t->len] = '\0';
    t->nholes = nhits;
    return 0;
}

int tf_tpl_render(const tf_tpl_t *t, const char *const *values, size_t cap,
                  char **out, size_t *len)
{
    size_t vlen[TF_TPL_MAX_SLOTS] = {0}, total = t->len;

    *out = NULL;
    *len = 0;
    for (size_t i = 0; i < t->nholes; i++) {
        unsigned s = t->holes[i].slot;
        if (!vlen[s] && values[s][0])
            vlen[s] = strlen(values[s]);
        total += vlen[s];
    }
    if (total > cap)
        return TF_E2BIG;
    char *buf = malloc(total + 1), *w = buf;
    if (!buf)
        return TF_ENOMEM;
    size_t from = 0;
    for (size_t i = 0; i < t->nholes; i++) {
        unsigned s = t->holes[i].slot;
        memcpy(w, t->text + from, t->holes[i].at - from);
        w += t->holes[i].at - from;
        memcpy(w, values[s], vlen[s]);
        w += vlen[s];
        from = t->holes[i].at;
    }
    memcpy(w, t->text + from, t->len - from);
    w += t->len - from;
    *w = '\0';
    *out = buf;
    *len = total;
    return 0;
}
