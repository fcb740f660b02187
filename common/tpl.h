/*
 * tpl.h - byte templates: a message rendered once with sentinel values,
 * then rendered again for other values by splicing them in.
 *
 * The master's build_start for a builder differs between two builds of
 * the same request shape only in a few values (build id, number, slave,
 * revision, owner). Rendering it through jansson for every build costs
 * more than the rest of a start (docs/release-engineers.md, "Speed"), so
 * build.c renders it once with sentinels in place of those values, cuts
 * the sentinels out here, and per build copies the pieces around the new
 * values. Whether a value may be spliced as it is (the encoder would write
 * the same bytes for it) is the caller's to decide; this module only
 * refuses a template whose sentinels do not occur exactly as often as
 * the caller says (a sentinel transformed or repeated by something it
 * does not know about, e.g. a property interpolated into a command).
 *
 * Pure functions, no I/O: unit tested in tests/unit/test_common.c and
 * checked against the real encoder in tests/unit/test_proto.c.
 */
#ifndef TF_TPL_H
#define TF_TPL_H

#include <stdbool.h>
#include <stddef.h>

#define TF_TPL_MAX_SLOTS 8
#define TF_TPL_MAX_HOLES 32

typedef struct tf_tpl {
    char *text;   /* the rendered bytes with every sentinel cut out */
    size_t len;
    size_t nholes;
    struct {
        size_t at;     /* offset in text where the value goes */
        unsigned slot; /* which value */
    } holes[TF_TPL_MAX_HOLES];
} tf_tpl_t;

/* Makes t from text[0..len) and nslots sentinels (non-empty, distinct),
 * sentinel i expected exactly counts[i] times. Returns 0, TF_EINVAL when
 * a count differs, two occurrences overlap or there are too many holes,
 * or TF_ENOMEM. t owns a copy of the bytes (tf_tpl_clear frees it); the
 * arguments stay the caller's. On failure t is left empty. */
int tf_tpl_make(tf_tpl_t *t, const char *text, size_t len,
                const char *const *sentinels, const unsigned *counts,
                size_t nslots);

/* Renders t with values[slot] (NUL-terminated, spliced byte for byte) into
 * a new malloc'd NUL-terminated string *out of *len bytes, which the
 * caller frees. Returns 0, TF_E2BIG when the result would be over cap
 * bytes (*out is then NULL), or TF_ENOMEM. */
int tf_tpl_render(const tf_tpl_t *t, const char *const *values, size_t cap,
                  char **out, size_t *len);

/* Frees what t holds and empties it; NULL is fine. */
void tf_tpl_clear(tf_tpl_t *t);

#endif
