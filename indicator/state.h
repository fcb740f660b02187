/*
 * state.h - what tf-indicator knows about each master and what it shows:
 * per-builder state from the API and the live feed, each master's level
 * and the worst of all, the notifications a change deserves, the menu's
 * items and the icon's title. Pure functions over plain structs (jansson
 * for parsing; no GTK, no sockets, no clock), so every rule has a unit
 * test (indicator/tests/test_ind_state.c); main.c turns the results into
 * widgets and notifications.
 *
 * A master's link goes CONNECTING -> SYNCING (subscribed to the live
 * feed, fetching the snapshot; events are kept) -> LIVE (snapshot applied,
 * kept events replayed, new events applied as they come) and to DOWN from
 * any of them; DOWN -> CONNECTING on the next attempt.
 */
#ifndef TF_IND_STATE_H
#define TF_IND_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "names.h"

/* Levels, from best to worst: the tray shows the worst of all masters.
 * A failing builder anywhere outranks a master we cannot see (the farm is
 * burning either way); not knowing outranks "something is building". */
typedef enum {
    TF_IND_PASSING = 0,
    TF_IND_BUILDING = 1,
    TF_IND_UNKNOWN = 2,
    TF_IND_FAILING = 3,
} tf_ind_level_t;

typedef enum {
    TF_IND_LINK_CONNECTING = 0,
    TF_IND_LINK_SYNCING,
    TF_IND_LINK_LIVE,
    TF_IND_LINK_DOWN,
} tf_ind_link_t;

#define TF_IND_MAX_BUILDERS 1000     /* per master; more are ignored */
#define TF_IND_MAX_RUNNING 64        /* running builds tracked per builder */
#define TF_IND_MAX_PENDING 1024      /* events kept while syncing */
#define TF_IND_PENDING_BYTES (4u << 20)
#define TF_IND_MENU_FAILING_MAX 20   /* failing builders listed per master */
#define TF_IND_TEXT_MAX 256

typedef struct tf_ind_builder {
    char name[TF_NAME_MAX + 1];
    int64_t last_number; /* the last finished build (not RETRY); 0: none */
    int64_t last_id;
    char last_result[16]; /* "" while there is none */
    uint64_t running[TF_IND_MAX_RUNNING]; /* ids of running builds */
    size_t nrunning;
    bool shown_failing; /* what the user was last told */
    bool seen;          /* scratch, while applying a snapshot */
} tf_ind_builder_t;

typedef struct tf_ind_master {
    char base[TF_IND_URL_MAX + 1];      /* the master's URL */
    char label[TF_IND_LABEL_MAX + 1];   /* from the config, or "" */
    char name[TF_IND_LABEL_MAX + 1];    /* the master's own name (summary) */
    tf_ind_link_t link;
    char error[TF_IND_TEXT_MAX];        /* why the link is DOWN */
    bool ever_synced;
    tf_ind_builder_t *builders;         /* owned, sorted by name */
    size_t nbuilders;
    size_t capbuilders;
    char **pending;                     /* owned: events kept while SYNCING */
    size_t npending;
    size_t pending_bytes;
} tf_ind_master_t;

/* A change worth a desktop notification. */
typedef struct tf_ind_note {
    bool failing; /* true: turned red; false: green again */
    char summary[TF_IND_TEXT_MAX];
    char body[TF_IND_TEXT_MAX * 2];
    char url[TF_IND_URL_MAX + 96]; /* the builder's page */
} tf_ind_note_t;

typedef enum {
    TF_IND_ITEM_HEADER = 0, /* a master's line: not clickable */
    TF_IND_ITEM_LINK,       /* opens url */
    TF_IND_ITEM_SEPARATOR,
    TF_IND_ITEM_QUIT,
} tf_ind_item_kind_t;

typedef struct tf_ind_item {
    tf_ind_item_kind_t kind;
    char label[TF_IND_TEXT_MAX];
    char url[TF_IND_URL_MAX + 96];
} tf_ind_item_t;

const char *tf_ind_level_name(tf_ind_level_t l); /* "passing", ... */
const char *tf_ind_level_icon(tf_ind_level_t l); /* "testfarm-passing", ... */
const char *tf_ind_link_name(tf_ind_link_t l);   /* "connecting", ... */

/* Sets m up for base (a normalised master URL) and label (may be NULL or
 * "": use the master's own name). m is freed with tf_ind_master_free. */
void tf_ind_master_init(tf_ind_master_t *m, const char *base,
                        const char *label);
/* Frees what m owns (not m); m may be NULL. */
void tf_ind_master_free(tf_ind_master_t *m);

/* The link is subscribed to the live feed and the snapshot is on its way:
 * events from now on are kept until tf_ind_master_apply_snapshot. */
void tf_ind_master_link_up(tf_ind_master_t *m);
/* The link is down (error: a sentence, borrowed). Builders keep their last
 * known state (shown as such) until the next snapshot. */
void tf_ind_master_link_down(tf_ind_master_t *m, const char *error);

/* One live-feed frame (JSON text). Build events change builders; other
 * types are ignored. While SYNCING the frame is kept for replay. Returns
 * 0, TF_EINVAL for a frame that is not a well-formed event (ignored),
 * TF_EFULL when the events kept while syncing pass their cap (the caller
 * must resync the link) or TF_ENOMEM. */
int tf_ind_master_apply_event(tf_ind_master_t *m, const char *text,
                              size_t len);

/* Applies the snapshot: the bodies of GET /api/v1/summary and GET
 * /api/v1/builders. Replaces the builders (keeping what the user was told
 * about each), replays the events kept while syncing, and makes the link
 * LIVE. Returns 0, or TF_EINVAL with err saying what is malformed (the
 * state is then unchanged and the link stays SYNCING). */
int tf_ind_master_apply_snapshot(tf_ind_master_t *m, const char *summary,
                                 size_t slen, const char *builders,
                                 size_t blen, char *err, size_t errlen);

/* The label shown for m: the configured one, else the master's own name,
 * else its URL. */
const char *tf_ind_master_label(const tf_ind_master_t *m);

/* FAILURE and EXCEPTION make a builder red (as the summary's verdict). */
bool tf_ind_result_failing(const char *result);
bool tf_ind_builder_failing(const tf_ind_builder_t *b);

tf_ind_level_t tf_ind_master_level(const tf_ind_master_t *m);
/* The worst level of n masters (TF_IND_UNKNOWN for n == 0). */
tf_ind_level_t tf_ind_overall(const tf_ind_master_t *ms, size_t n);

/* Fills out[0..max) with the notifications m's changes deserve since the
 * last call (a builder turned red, or green again) and remembers them as
 * told; returns how many. Nothing while m is not LIVE; nothing for the
 * first snapshot of m (its red builders are news to nobody: the menu shows
 * them). A change past max is told on the next call. */
size_t tf_ind_master_notes(tf_ind_master_t *m, tf_ind_note_t *out,
                           size_t max);

/* The menu: per master a header, its failing builders (links to their
 * pages), "Open waterfall" and a separator; then Quit. Returns the number
 * of items written (at most max; Quit is always the last one written). */
size_t tf_ind_menu_build(const tf_ind_master_t *ms, size_t n,
                         tf_ind_item_t *items, size_t max);

/* The icon's title/tooltip, e.g. "TestFarm: failing - main: 2 failing
 * (linux_rel, mac); other: unreachable". */
void tf_ind_title(const tf_ind_master_t *ms, size_t n, char *out,
                  size_t outlen);

#endif
