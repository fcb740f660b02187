/*
 * watch.c - job JSON to text: the --wait progress lines, the failing
 * step's tail, the summary, `status` and `list`.
 *
 * The watcher keeps, per builder, what it has already printed: the queue
 * position, the build it follows and, per step of that build, whether its
 * start and its result were shown. Each snapshot is compared against that
 * memory, never against the previous snapshot itself, so a line appears
 * once even when polls are lost, and a step that started and finished
 * between two polls gets its result line only (a "started" line would be
 * stale news by then). A new build for the same builder (a retry) resets
 * the step memory.
 *
 * Every string that comes from the master is passed through
 * tf_try_sanitize before it reaches the terminal: a log or a description
 * cannot move the cursor or change the terminal's title.
 */
#include "watch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "names.h"
#include "tf_err.h"
#include "utf8.h"
#include "try.h"

#define WATCH_MAX_BUILDERS 1000
#define WATCH_MAX_STEPS 4096
#define STEP_STARTED 1
#define STEP_REPORTED 2

typedef struct watch_builder {
    char name[TF_NAME_MAX + 32]; /* with " (without the patch)" */
    long long position;     /* last printed; -1 when none */
    long long build_id;     /* the build followed; 0 before one starts */
    uint8_t *steps;         /* STEP_* per step index of that build */
    size_t nsteps;
    long long request_id;   /* from the snapshots; 0 before one names it */
    bool finish_seen;       /* the live feed said its build finished */
    bool done;
} watch_builder_t;

struct tf_try_watch {
    watch_builder_t *b;
    size_t n;
    size_t cap;
};

/* ---- small JSON accessors ---- */

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* As jstr, "" for a missing member. */
static const char *jstr0(const json_t *o, const char *key)
{
    const char *s = jstr(o, key);
    return s ? s : "";
}

static bool jint(const json_t *o, const char *key, long long *v)
{
    json_t *x = json_object_get(o, key);
    if (!json_is_integer(x))
        return false;
    *v = (long long)json_integer_value(x);
    return true;
}

/* Where a person should go for o: its status page (page_url, on a master
 * that serves pages), else its JSON (url); NULL when it has neither. */
static const char *link_of(const json_t *o)
{
    const char *page = jstr(o, "page_url");
    return page && *page ? page : jstr(o, "url");
}

/* ---- text safety ---- */

static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */

int tf_try_sanitize(const uint8_t *p, size_t n, bool keep_newlines,
                    tf_buf_t *out)
{
    size_t i = 0;
    int rc = 0;
    while (i < n && rc == 0) {
        size_t l = tf_utf8_len(p + i, n - i);
        if (l == 0) {
            rc = tf_buf_append_str(out, replacement);
            i++;
            continue;
        }
        if (l == 1) {
            uint8_t c = p[i];
            if (c == '\r' && keep_newlines && i + 1 < n && p[i + 1] == '\n') {
                i++; /* CRLF shows as LF */
                continue;
            }
            if ((c == '\n' && keep_newlines) || c == '\t' ||
                (c >= 0x20 && c != 0x7f))
                rc = tf_buf_append(out, &p[i], 1);
            else
                rc = tf_buf_append_str(out, replacement);
        } else if (l == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0) {
            rc = tf_buf_append_str(out, replacement); /* C1 controls */
        } else {
            rc = tf_buf_append(out, p + i, l);
        }
        i += l;
    }
    return rc;
}

/* Appends a string from the master as one safe line fragment. */
static int put(tf_buf_t *out, const char *s)
{
    if (!s)
        s = "";
    return tf_try_sanitize((const uint8_t *)s, strlen(s), false, out);
}

/* Display width of UTF-8 text: one column per code point (good enough for
 * the names and results in tables). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xc0) != 0x80)
            w++;
    return w;
}

/* ---- formatting ---- */

void tf_try_format_duration(int64_t ms, char *out, size_t n)
{
    if (ms < 0)
        snprintf(out, n, "-");
    else if (ms < 60000)
        snprintf(out, n, "%lld.%lld s", (long long)(ms / 1000),
                 (long long)(ms % 1000 / 100));
    else if (ms < 3600000)
        snprintf(out, n, "%lld min %02lld s", (long long)(ms / 60000),
                 (long long)(ms % 60000 / 1000));
    else
        snprintf(out, n, "%lld h %02lld min", (long long)(ms / 3600000),
                 (long long)(ms % 3600000 / 60000));
}

/* "2026-11-22 10:00:00 UTC" for ms since the epoch. */
static void format_time(long long ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, n, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(out, n, "-");
}

/* The duration of a build object, or -1. */
static int64_t build_duration(const json_t *build)
{
    long long s, f;
    if (jint(build, "started_ms", &s) && jint(build, "finished_ms", &f) &&
        f >= s)
        return f - s;
    return -1;
}

/* ---- tables ---- */

/* A table is a JSON array of rows, each an array of strings (already
 * sanitized); render pads every column but the last to its widest cell,
 * two spaces apart, each line indented by two spaces. */
static int table_add(json_t *table, const char *const *cells, size_t n)
{
    json_t *row = json_array();
    if (!row || json_array_append_new(table, row) < 0)
        return TF_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (json_array_append_new(row, json_string(cells[i] ? cells[i] : "-")) <
            0)
            return TF_ENOMEM;
    return 0;
}

static int table_render(const json_t *table, tf_buf_t *out)
{
    size_t widths[16] = {0};
    size_t i, j;
    json_t *row, *cell;
    int rc = 0;

    json_array_foreach(table, i, row) {
        json_array_foreach(row, j, cell) {
            size_t w = text_width(json_string_value(cell));
            if (j < 16 && w > widths[j])
                widths[j] = w;
        }
    }
    json_array_foreach(table, i, row) {
        size_t ncells = json_array_size(row);
        rc = tf_buf_append_str(out, "  ");
        json_array_foreach(row, j, cell) {
            const char *s = json_string_value(cell);
            if (rc == 0)
                rc = tf_buf_append_str(out, s);
            if (j + 1 < ncells && j < 16)
                for (size_t pad = text_width(s); rc == 0 && pad < widths[j] + 2;
                     pad++)
                    rc = tf_buf_append(out, " ", 1);
        }
        /* An empty last cell leaves padding behind: no trailing blanks. */
        while (rc == 0 && out->len > 0 && out->data[out->len - 1] == ' ')
            out->data[--out->len] = '\0';
        if (rc == 0)
            rc = tf_buf_append_str(out, "\n");
        if (rc < 0)
            return rc;
    }
    return rc;
}

/* A sanitized, malloc'd copy of s cut to max code points (with "..."). */
static char *clean_copy(const char *s, size_t max)
{
    tf_buf_t b;
    char *out;
    tf_buf_init(&b, 64 * 1024);
    if (put(&b, s) < 0 || tf_buf_append(&b, "", 0) < 0) {
        tf_buf_free(&b);
        return NULL;
    }
    out = (char *)tf_buf_steal(&b, NULL);
    if (!out)
        return strdup("");
    if (max && text_width(out) > max) {
        size_t cps = 0, i = 0;
        while (out[i] && cps < max - 3) {
            i++;
            while (((unsigned char)out[i] & 0xc0) == 0x80)
                i++;
            cps++;
        }
        memcpy(out + i, "...", 4);
    }
    return out;
}

/* ---- the watcher ---- */

tf_try_watch_t *tf_try_watch_new(void)
{
    return calloc(1, sizeof(tf_try_watch_t));
}

void tf_try_watch_free(tf_try_watch_t *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++)
        free(w->b[i].steps);
    free(w->b);
    free(w);
}

/* The memory of builder name, created on first use; NULL on OOM, on too
 * many builders, or on a name the master should never send. */
static watch_builder_t *watch_builder(tf_try_watch_t *w, const char *name,
                                      bool without_patch)
{
    char key[TF_NAME_MAX + 32];
    if (!name || !tf_name_valid(name))
        return NULL;
    /* A rerun without the patch (retry_without_patch) is a builder of
     * its own in the output. */
    snprintf(key, sizeof(key), "%s%s", name,
             without_patch ? " (without the patch)" : "");
    name = key;
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->b[i].name, name) == 0)
            return &w->b[i];
    if (w->n >= WATCH_MAX_BUILDERS)
        return NULL;
    if (w->n == w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : 8;
        watch_builder_t *nb = realloc(w->b, ncap * sizeof(*nb));
        if (!nb)
            return NULL;
        w->b = nb;
        w->cap = ncap;
    }
    watch_builder_t *b = &w->b[w->n++];
    memset(b, 0, sizeof(*b));
    snprintf(b->name, sizeof(b->name), "%s", name);
    b->position = -1;
    return b;
}

int tf_try_watch_seed(tf_try_watch_t *w, const char *builder,
                      long long position)
{
    watch_builder_t *b = watch_builder(w, builder, false);
    if (!b)
        return TF_ENOMEM;
    b->position = position;
    return 0;
}

/* Starts a line "NAME: ". */
static int line_start(tf_buf_t *out, const watch_builder_t *b)
{
    int rc = tf_buf_append_str(out, b->name);
    return rc ? rc : tf_buf_append_str(out, ": ");
}

static int watch_position(watch_builder_t *b, const json_t *e, tf_buf_t *out)
{
    long long pos;
    const char *state = jstr(e, "state");
    if (!state || strcmp(state, "pending") != 0 || !jint(e, "position", &pos) ||
        pos == b->position)
        return 0;
    b->position = pos;
    int rc = line_start(out, b);
    return rc ? rc : tf_buf_printf(out, "position %lld in queue\n", pos);
}

static int watch_build_start(watch_builder_t *b, const json_t *build,
                             tf_buf_t *out)
{
    long long id;
    int rc;
    /* Only ever forward: a snapshot older than a live event (the feed
     * runs ahead of the store's commits) must not bring back an earlier
     * build. Build ids grow, so a retry's build is always newer. */
    if (!json_is_object(build) || !jint(build, "id", &id) || id <= b->build_id)
        return 0;
    b->build_id = id;
    b->finish_seen = false;
    free(b->steps);
    b->steps = NULL;
    b->nsteps = 0;
    if ((rc = line_start(out, b)) || (rc = tf_buf_printf(out, "build %lld "
                                                         "started on slave ",
                                                         id)) ||
        (rc = put(out, jstr(build, "slave") ? jstr(build, "slave") : "?")))
        return rc;
    return tf_buf_append_str(out, "\n");
}

/* "step NAME: RESULT (3.2 s; exit 1)". */
static int step_result_line(const watch_builder_t *b, const json_t *step,
                            const char *result, tf_buf_t *out)
{
    long long dur = 0;
    const char *text = jstr(step, "text");
    bool show_text = text && *text && strcmp(result, "SUCCESS") != 0 &&
                     strcmp(result, "SKIPPED") != 0;
    bool show_dur = jint(step, "duration_ms", &dur) &&
                    strcmp(result, "SKIPPED") != 0;
    int rc;

    if ((rc = line_start(out, b)) || (rc = tf_buf_append_str(out, "step ")) ||
        (rc = put(out, jstr(step, "name"))) ||
        (rc = tf_buf_append_str(out, ": ")) || (rc = put(out, result)))
        return rc;
    if (show_dur || show_text) {
        char d[32] = "";
        if (show_dur)
            tf_try_format_duration(dur, d, sizeof(d));
        rc = tf_buf_printf(out, " (%s%s", d, show_dur && show_text ? "; " : "");
        if (rc == 0 && show_text) {
            char *t = clean_copy(text, 200);
            rc = t ? tf_buf_append_str(out, t) : TF_ENOMEM;
            free(t);
        }
        if (rc == 0)
            rc = tf_buf_append_str(out, ")");
    }
    return rc ? rc : tf_buf_append_str(out, "\n");
}

/* Makes room in b's step memory for n steps (at most WATCH_MAX_STEPS). */
static int steps_reserve(watch_builder_t *b, size_t n)
{
    if (n > WATCH_MAX_STEPS)
        n = WATCH_MAX_STEPS;
    if (n > b->nsteps) {
        uint8_t *ns = realloc(b->steps, n);
        if (!ns)
            return TF_ENOMEM;
        memset(ns + b->nsteps, 0, n - b->nsteps);
        b->steps = ns;
        b->nsteps = n;
    }
    return 0;
}

/* One step's start or result, from a snapshot's step object or a live
 * event's, said once whichever source brings it first. */
static int watch_step(watch_builder_t *b, size_t i, const json_t *s,
                      tf_buf_t *out)
{
    const char *state = jstr(s, "state");
    const char *result = jstr(s, "result");
    int rc = 0;
    if (i >= b->nsteps)
        return 0;
    if (result && b->steps[i] < STEP_REPORTED &&
        (!state || strcmp(state, "done") == 0)) {
        rc = step_result_line(b, s, result, out);
        b->steps[i] = STEP_REPORTED;
    } else if (state && strcmp(state, "running") == 0 && b->steps[i] == 0) {
        if ((rc = line_start(out, b)) == 0 &&
            (rc = tf_buf_append_str(out, "step ")) == 0 &&
            (rc = put(out, jstr(s, "name"))) == 0)
            rc = tf_buf_append_str(out, " started\n");
        b->steps[i] = STEP_STARTED;
    }
    return rc;
}

static int watch_steps(watch_builder_t *b, const json_t *build, tf_buf_t *out)
{
    json_t *steps = json_object_get(build, "steps");
    size_t n = json_array_size(steps), i;
    json_t *s;
    int rc;

    if (!json_is_object(build) || n == 0)
        return 0;
    if ((rc = steps_reserve(b, n)) < 0)
        return rc;
    json_array_foreach(steps, i, s) {
        if ((rc = watch_step(b, i, s, out)) < 0)
            return rc;
    }
    return 0;
}

/* The first step of build whose result does not pass (SKIPPED steps were
 * never run and are not to blame). */
static const json_t *first_failing_step(const json_t *build)
{
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(build, "steps"), i, s) {
        const char *r = jstr(s, "result");
        if (r && !tf_try_result_passed(r) && strcmp(r, "SKIPPED") != 0)
            return s;
    }
    return NULL;
}

static bool builder_over(const json_t *e)
{
    const char *state = jstr(e, "state");
    const json_t *build = json_object_get(e, "build");
    const char *bstate = jstr(build, "state");
    if (!state || (strcmp(state, "done") != 0 && strcmp(state, "cancelled") != 0))
        return false;
    /* A cancelled request may still have a build that is being stopped:
     * its last steps have not reported yet. */
    return !json_is_object(build) || (bstate && strcmp(bstate, "finished") == 0);
}

static int watch_finish(watch_builder_t *b, const json_t *e, tf_buf_t *out,
                        json_t *tails)
{
    const json_t *build = json_object_get(e, "build");
    const char *result = jstr(e, "result");
    int rc;

    if (b->done || !builder_over(e))
        return 0;
    if (!result && json_is_object(build))
        result = jstr(build, "result");
    if (!result && strcmp(jstr(e, "state"), "cancelled") == 0)
        result = "CANCELLED";
    if (!result)
        return 0; /* done without a result yet: the next poll will have it */
    b->done = true;
    if ((rc = line_start(out, b)) < 0)
        return rc;
    if (!json_is_object(build)) {
        if ((rc = put(out, result)) == 0)
            rc = tf_buf_append_str(out, " before a build started\n");
        return rc;
    }
    long long id = 0;
    char d[32];
    jint(build, "id", &id);
    tf_try_format_duration(build_duration(build), d, sizeof(d));
    if ((rc = tf_buf_printf(out, "build %lld: ", id)) || (rc = put(out, result)))
        return rc;
    rc = strcmp(d, "-") != 0 ? tf_buf_printf(out, " (%s)\n", d)
                             : tf_buf_append_str(out, "\n");
    if (rc < 0 || tf_try_result_passed(result) || !tails)
        return rc;

    const json_t *step = first_failing_step(build);
    const char *url = jstr(json_object_get(step, "log"), "url");
    if (!step || !url)
        return 0;
    json_t *t = json_pack("{s:s, s:s, s:s, s:s, s:I}", "builder", b->name,
                          "step", jstr(step, "name") ? jstr(step, "name") : "?",
                          "result", jstr(step, "result"), "url", url, "at",
                          (json_int_t)out->len);
    if (!t || json_array_append_new(tails, t) < 0)
        return TF_ENOMEM;
    if (json_object_set_new(t, "build_id", json_integer(id)) < 0)
        return TF_ENOMEM;
    const char *tests_url = jstr0(json_object_get(build, "tests"), "url");
    if (*tests_url &&
        json_object_set_new(t, "tests_url", json_string(tests_url)) < 0)
        return TF_ENOMEM;
    return 0;
}

/* A builder answered from an earlier identical build: one line. */
static int watch_reused(watch_builder_t *b, const json_t *e, tf_buf_t *out)
{
    const json_t *build = json_object_get(e, "build");
    long long id = 0;
    int rc;
    if (b->done)
        return 0;
    b->done = true;
    jint(build, "id", &id);
    if ((rc = line_start(out, b)) ||
        (rc = tf_buf_printf(out, "reused build %lld (", id)) ||
        (rc = put(out, jstr0(build, "result"))) ||
        (rc = tf_buf_append_str(out, "): the same base, patch, tests and "
                                     "properties passed there: ")) ||
        (rc = put(out, link_of(build))))
        return rc;
    return tf_buf_append_str(out, "\n");
}

int tf_try_watch_update(tf_try_watch_t *w, const json_t *job, tf_buf_t *out,
                        json_t *tails)
{
    size_t i;
    json_t *e;
    int rc;

    json_array_foreach(json_object_get(job, "builders"), i, e) {
        watch_builder_t *b = watch_builder(
            w, jstr(e, "name"),
            json_is_integer(json_object_get(e, "without_patch_of")));
        if (!b)
            continue; /* a builder we cannot name is a builder we skip */
        const json_t *build = json_object_get(e, "build");
        long long rid;
        if (jint(e, "request_id", &rid))
            b->request_id = rid;
        if (json_is_true(json_object_get(e, "reused"))) {
            if ((rc = watch_reused(b, e, out)) < 0)
                return rc;
            continue;
        }
        if ((rc = watch_position(b, e, out)) < 0 ||
            (rc = watch_build_start(b, build, out)) < 0 ||
            (rc = watch_steps(b, build, out)) < 0 ||
            (rc = watch_finish(b, e, out, tails)) < 0)
            return rc;
    }
    return 0;
}

/* ---- the live feed ---- */

/* The builder following build id, or NULL. */
static watch_builder_t *builder_of_build(tf_try_watch_t *w, long long id)
{
    for (size_t i = 0; id > 0 && i < w->n; i++)
        if (w->b[i].build_id == id)
            return &w->b[i];
    return NULL;
}

/* Whether an event about builder name may concern one of ours that is not
 * over yet (a build or request we do not know the id of yet). */
static bool may_be_ours(const tf_try_watch_t *w, const char *name)
{
    size_t len = name ? strlen(name) : 0;
    for (size_t i = 0; len && i < w->n; i++)
        if (!w->b[i].done && strncmp(w->b[i].name, name, len) == 0 &&
            (w->b[i].name[len] == '\0' || w->b[i].name[len] == ' '))
            return true;
    return false;
}

static int live_step(tf_try_watch_t *w, const json_t *ev, tf_buf_t *out,
                     bool *want)
{
    long long bid = 0, idx = -1, s, f;
    const json_t *st = json_object_get(ev, "step");
    jint(ev, "build_id", &bid);
    watch_builder_t *b = builder_of_build(w, bid);
    if (!b) {
        if (may_be_ours(w, jstr(ev, "builder")))
            *want = true;
        return 0;
    }
    if (b->done || !jint(st, "index", &idx) || idx < 0 ||
        idx >= WATCH_MAX_STEPS)
        return 0;
    int rc = steps_reserve(b, (size_t)idx + 1);
    if (rc < 0)
        return rc;
    /* The line a snapshot would give: the slave's own duration when the
     * event carries it, else the step's start and end. */
    json_t *copy = json_deep_copy(st);
    if (!copy)
        return TF_ENOMEM;
    if (!json_is_integer(json_object_get(copy, "duration_ms")) &&
        jint(st, "started_ms", &s) && jint(st, "finished_ms", &f) && f >= s)
        json_object_set_new(copy, "duration_ms", json_integer(f - s));
    rc = watch_step(b, (size_t)idx, copy, out);
    json_decref(copy);
    return rc;
}

static int live_build(tf_try_watch_t *w, const json_t *ev, tf_buf_t *out,
                      bool *want)
{
    const json_t *build = json_object_get(ev, "build");
    const char *event = jstr0(ev, "event");
    long long rid = 0, id = 0;
    watch_builder_t *b = NULL;
    jint(build, "request_id", &rid);
    jint(build, "id", &id);
    for (size_t i = 0; rid > 0 && i < w->n && !b; i++)
        if (w->b[i].request_id == rid)
            b = &w->b[i];
    if (!b)
        b = builder_of_build(w, id);
    if (!b) {
        if (may_be_ours(w, jstr(build, "builder")))
            *want = true;
        return 0;
    }
    if (b->done)
        return 0;
    if (strcmp(event, "finished") == 0) {
        /* Its result line, failing tests and tail come from the job's
         * snapshot, which the caller now fetches until it shows the end. */
        if (id >= b->build_id)
            b->finish_seen = true;
        *want = true;
        return 0;
    }
    if (strcmp(event, "started") == 0 && b->request_id == rid)
        return watch_build_start(b, build, out);
    return 0;
}

int tf_try_watch_live(tf_try_watch_t *w, const json_t *event, tf_buf_t *out,
                      bool *want_snapshot)
{
    const char *type = jstr0(event, "type");
    if (strcmp(type, "step") == 0)
        return live_step(w, event, out, want_snapshot);
    if (strcmp(type, "build") == 0)
        return live_build(w, event, out, want_snapshot);
    if (strcmp(type, "request") == 0) {
        /* Queue positions and cancels: the snapshot says them. */
        const json_t *r = json_object_get(event, "request");
        long long rid = 0;
        jint(r, "id", &rid);
        for (size_t i = 0; i < w->n; i++)
            if (rid > 0 && w->b[i].request_id == rid && !w->b[i].done)
                *want_snapshot = true;
        if (may_be_ours(w, jstr(r, "builder")))
            *want_snapshot = true;
    } else if (strcmp(type, "overflow") == 0) {
        *want_snapshot = true;
    }
    return 0;
}

bool tf_try_watch_settling(const tf_try_watch_t *w)
{
    bool all_done = w->n > 0;
    for (size_t i = 0; i < w->n; i++) {
        if (w->b[i].finish_seen && !w->b[i].done)
            return true;
        all_done = all_done && w->b[i].done;
    }
    return all_done;
}

bool tf_try_rerun_pending(const json_t *job, long long build_id)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(job, "builders"), i, e) {
        long long of = 0;
        if (!jint(e, "without_patch_of", &of) || of != build_id)
            continue;
        const char *state = jstr0(e, "state");
        return strcmp(state, "done") != 0 && strcmp(state, "cancelled") != 0;
    }
    return false;
}

bool tf_try_job_done(const json_t *job)
{
    const char *state = jstr(job, "state");
    size_t i;
    json_t *e;
    if (!state || (strcmp(state, "finished") != 0 &&
                   strcmp(state, "cancelled") != 0))
        return false;
    json_array_foreach(json_object_get(job, "builders"), i, e) {
        const char *bs = jstr(json_object_get(e, "build"), "state");
        if (bs && strcmp(bs, "finished") != 0)
            return false;
    }
    return true;
}

bool tf_try_result_passed(const char *result)
{
    return result &&
           (strcmp(result, "SUCCESS") == 0 || strcmp(result, "WARNINGS") == 0);
}

/* A builder entry's result: its own, else its build's, else CANCELLED for
 * a cancelled request; NULL when unknown. */
static const char *entry_result(const json_t *e)
{
    const char *r = jstr(e, "result");
    const char *state = jstr(e, "state");
    if (!r)
        r = jstr(json_object_get(e, "build"), "result");
    if (!r && state && strcmp(state, "cancelled") == 0)
        r = "CANCELLED";
    return r;
}

int tf_try_job_exit_code(const json_t *job, bool new_failures_only)
{
    size_t i;
    json_t *e;
    if (new_failures_only) {
        const json_t *nf = json_object_get(job, "new_failures");
        if (json_is_object(nf))
            return json_integer_value(json_object_get(nf, "builds")) > 0;
        /* A master that does not tell: every failure counts. */
    }
    json_array_foreach(json_object_get(job, "builders"), i, e)
        if (!json_is_integer(json_object_get(e, "without_patch_of")) &&
            !tf_try_result_passed(entry_result(e)))
            return 1;
    return 0;
}

/* ---- a failed build's failing tests ---- */

/* Appends text's lines, each indented and made safe, at most max_lines. */
static int put_lines(tf_buf_t *out, const char *indent, const char *text,
                     unsigned max_lines)
{
    const char *p = text;
    unsigned n = 0;
    int rc;
    while (p && *p && n < max_lines) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        if (l > 0 && p[l - 1] == '\r')
            l--;
        if ((rc = tf_buf_append_str(out, indent)) ||
            (rc = tf_try_sanitize((const uint8_t *)p, l, false, out)) ||
            (rc = tf_buf_append_str(out, "\n")))
            return rc;
        n++;
        p = nl ? nl + 1 : NULL;
    }
    return 0;
}

int tf_try_render_failed_tests(const json_t *tail, const json_t *answer,
                               unsigned max_tests, tf_buf_t *out)
{
    const json_t *counts = json_object_get(answer, "counts");
    long long fails = 0, flaky = 0, fresh = -1;
    const json_t *tests = json_object_get(answer, "tests");
    size_t i, shown = 0;
    const json_t *t;
    int rc;

    jint(counts, "fail", &fails);
    jint(counts, "flaky", &flaky);
    jint(answer, "new_failures", &fresh);
    if (fails + flaky <= 0 || !json_is_array(tests))
        return 0;
    if ((rc = put(out, jstr0(tail, "builder"))) ||
        (rc = tf_buf_printf(out, ": %lld failing test%s", fails,
                            fails == 1 ? "" : "s")))
        return rc;
    if (fresh >= 0 && fails > 0 &&
        (rc = tf_buf_printf(out, " (%lld new, %lld also failing without "
                            "the patch)", fresh, fails - fresh)))
        return rc;
    if (flaky > 0 && (rc = tf_buf_printf(out, ", %lld flaky", flaky)))
        return rc;
    if ((rc = tf_buf_append_str(out, ":\n")))
        return rc;
    json_array_foreach(tests, i, t) {
        const char *status = jstr0(t, "status");
        const char *suite = jstr0(t, "suite");
        const char *failure = jstr0(t, "failure");
        if (strcmp(status, "fail") != 0 && strcmp(status, "flaky") != 0)
            continue;
        if (shown++ == max_tests)
            break;
        if ((rc = tf_buf_append_str(out, strcmp(status, "fail") == 0
                                             ? "  FAIL  "
                                             : "  FLAKY ")))
            return rc;
        if (*suite && ((rc = put(out, suite)) ||
                       (rc = tf_buf_append_str(out, " :: "))))
            return rc;
        if ((rc = put(out, jstr0(t, "name"))))
            return rc;
        if (strcmp(failure, "new") == 0)
            rc = tf_buf_append_str(out, "  [new]");
        else if (*failure)
            rc = tf_buf_append_str(out, "  [also failing without the "
                                        "patch]");
        if (rc == 0 && strcmp(status, "flaky") == 0)
            rc = tf_buf_append_str(out, "  (passed on a retry)");
        if (rc || (rc = tf_buf_append_str(out, "\n")))
            return rc;
        const json_t *log = json_object_get(t, "log");
        const char *excerpt = jstr0(log, "excerpt");
        const char *msg = jstr0(t, "message");
        long long line = 0;
        if (*excerpt) {
            jint(log, "line", &line);
            if ((rc = tf_buf_printf(out, "      log of step %s, from line "
                                    "%lld:\n", jstr0(t, "step_name"),
                                    line)) ||
                (rc = put_lines(out, "      | ", excerpt, 20)))
                return rc;
        } else if (*msg && (rc = put_lines(out, "      ", msg, 10))) {
            return rc;
        }
    }
    if (shown > max_tests)
        return tf_buf_printf(out, "  ... and more: %s\n",
                             jstr0(tail, "tests_url"));
    return 0;
}

/* ---- the failing step's tail ---- */

int tf_try_render_tail(const json_t *tail, const uint8_t *log, size_t len,
                       bool from_start, unsigned nlines, tf_buf_t *out)
{
    size_t start = 0, end = len, first;
    unsigned count = 0;
    int rc;

    /* A log fetched from its middle starts inside a line: drop that piece
     * unless it is all there is. */
    if (!from_start) {
        const uint8_t *nl = memchr(log, '\n', len);
        if (nl && (size_t)(nl - log) + 1 < len)
            start = (size_t)(nl - log) + 1;
    }
    if (end > start && log[end - 1] == '\n')
        end--; /* the final newline ends the last line; it starts none */
    first = end;
    if (end > start) {
        /* Walk back from the end, one line start at a time. */
        size_t p = end;
        for (;;) {
            size_t q = p;
            while (q > start && log[q - 1] != '\n')
                q--;
            count++;
            first = q;
            if (count >= nlines || q == start)
                break;
            p = q - 1; /* the newline that ends the line before */
        }
    }

    if ((rc = put(out, jstr(tail, "builder"))) ||
        (rc = tf_buf_append_str(out, ": step ")) ||
        (rc = put(out, jstr(tail, "step"))) ||
        (rc = tf_buf_append_str(out, " ended ")) ||
        (rc = put(out, jstr(tail, "result"))))
        return rc;
    if (nlines == 0 || end <= start) {
        rc = tf_buf_append_str(out, nlines == 0 ? "; its log: "
                                                : "; its log is empty: ");
        if (rc == 0)
            rc = put(out, jstr(tail, "url"));
        return rc ? rc : tf_buf_append_str(out, "\n");
    }
    if ((rc = tf_buf_printf(out, "; the last %u line%s of its log (", count,
                            count == 1 ? "" : "s")) ||
        (rc = put(out, jstr(tail, "url"))) ||
        (rc = tf_buf_append_str(out, "):\n")))
        return rc;
    size_t p = first;
    while (p <= end) {
        const uint8_t *nl = memchr(log + p, '\n', end - p);
        size_t q = nl ? (size_t)(nl - log) : end;
        size_t l = q - p;
        if (l > 0 && log[p + l - 1] == '\r')
            l--;
        if ((rc = tf_buf_append_str(out, "    ")) ||
            (rc = tf_try_sanitize(log + p, l, false, out)) ||
            (rc = tf_buf_append_str(out, "\n")))
            return rc;
        if (!nl)
            break;
        p = q + 1;
    }
    return 0;
}

/* ---- summary, status, list ---- */

int tf_try_render_summary(const json_t *job, tf_buf_t *out)
{
    json_t *table = json_array();
    long long id = 0;
    size_t i;
    json_t *e;
    int rc;
    const char *head[] = {"builder", "result", "duration", "slave", "build"};
    bool new_only = json_is_true(json_object_get(job, "new_failures_only"));
    int code = tf_try_job_exit_code(job, new_only);
    const char *result = jstr(job, "result");

    if (!table)
        return TF_ENOMEM;
    jint(job, "id", &id);
    if (!result)
        result = code == 0 ? "SUCCESS" : "FAILURE";
    if ((rc = tf_buf_printf(out, "job %lld: ", id)) || (rc = put(out, result)) ||
        (rc = tf_buf_append_str(out, code == 0 && !new_only
                                         ? " (every build passed)\n"
                                     : code == 0 ? " (no new failures)\n"
                                     : new_only ? " (new failures)\n"
                                                : " (not every build passed)\n")))
        goto out;
    if ((rc = table_add(table, head, 5)))
        goto out;
    json_array_foreach(json_object_get(job, "builders"), i, e) {
        const json_t *build = json_object_get(e, "build");
        char d[32];
        char label[TF_NAME_MAX + 32];
        snprintf(label, sizeof(label), "%s%s", jstr0(e, "name"),
                 json_is_integer(json_object_get(e, "without_patch_of"))
                     ? " (without the patch)"
                     : "");
        char *name = clean_copy(label, 96);
        char *res = clean_copy(entry_result(e) ? entry_result(e) : "-", 32);
        char *slave = clean_copy(jstr(build, "slave") ? jstr(build, "slave")
                                                      : "-", 64);
        char *url = clean_copy(link_of(build) ? link_of(build) : "-", 0);
        tf_try_format_duration(build_duration(build), d, sizeof(d));
        const char *row[] = {name, res, d, slave, url};
        rc = name && res && slave && url ? table_add(table, row, 5) : TF_ENOMEM;
        free(name);
        free(res);
        free(slave);
        free(url);
        if (rc)
            goto out;
    }
    rc = table_render(table, out);
out:
    json_decref(table);
    return rc;
}

int tf_try_render_status(const json_t *job, tf_buf_t *out)
{
    json_t *table = json_array();
    long long id = 0, ms, size;
    size_t i;
    json_t *e;
    int rc;
    char t[64];
    const char *head[] = {"builder", "state", "queue", "slave", "result",
                          "link"};
    const json_t *patch = json_object_get(job, "patch");

    if (!table)
        return TF_ENOMEM;
    jint(job, "id", &id);
    if ((rc = tf_buf_printf(out, "job %lld: ", id)) ||
        (rc = put(out, jstr(job, "state") ? jstr(job, "state") : "?")))
        goto out;
    if (jstr(job, "result") &&
        ((rc = tf_buf_append_str(out, ", ")) || (rc = put(out, jstr(job, "result")))))
        goto out;
    if ((rc = tf_buf_append_str(out, "\n")))
        goto out;
    if (jstr(job, "author") || jstr(job, "email")) {
        if ((rc = tf_buf_append_str(out, "  author:      ")) ||
            (rc = put(out, jstr(job, "author") ? jstr(job, "author") : "")))
            goto out;
        if (jstr(job, "email") &&
            ((rc = tf_buf_append_str(out, " <")) ||
             (rc = put(out, jstr(job, "email"))) ||
             (rc = tf_buf_append_str(out, ">"))))
            goto out;
        if ((rc = tf_buf_append_str(out, "\n")))
            goto out;
    }
    if (jstr(job, "description")) {
        char *d = clean_copy(jstr(job, "description"), 200);
        rc = d ? tf_buf_printf(out, "  description: %s\n", d) : TF_ENOMEM;
        free(d);
        if (rc)
            goto out;
    }
    if ((rc = tf_buf_append_str(out, "  base:        ")) ||
        (rc = put(out, jstr(job, "base_revision") ? jstr(job, "base_revision")
                                                  : "(the head of each "
                                                    "builder's branch)")) ||
        (rc = tf_buf_append_str(out, "\n")))
        goto out;
    if (jstr(patch, "sha256") && jint(patch, "size", &size)) {
        char *sha = clean_copy(jstr(patch, "sha256"), 64);
        rc = sha ? tf_buf_printf(out, "  patch:       %lld bytes, sha256 %s\n",
                                 size, sha)
                 : TF_ENOMEM;
        free(sha);
        if (rc)
            goto out;
    }
    if (jstr(job, "review_url")) {
        if ((rc = tf_buf_append_str(out, "  review:      ")) ||
            (rc = put(out, jstr(job, "review_url"))))
            goto out;
        if (jstr(job, "patchset") &&
            ((rc = tf_buf_append_str(out, " (patchset ")) ||
             (rc = put(out, jstr(job, "patchset"))) ||
             (rc = tf_buf_append_str(out, ")"))))
            goto out;
        if ((rc = tf_buf_append_str(out, "\n")))
            goto out;
    }
    if (jint(job, "submitted_ms", &ms)) {
        format_time(ms, t, sizeof(t));
        if ((rc = tf_buf_printf(out, "  submitted:   %s\n", t)))
            goto out;
    }
    if (jint(job, "finished_ms", &ms)) {
        format_time(ms, t, sizeof(t));
        if ((rc = tf_buf_printf(out, "  finished:    %s\n", t)))
            goto out;
    }
    if (jstr(job, "url") &&
        ((rc = tf_buf_append_str(out, "  url:         ")) ||
         (rc = put(out, jstr(job, "url"))) || (rc = tf_buf_append_str(out, "\n"))))
        goto out;
    if (jstr(job, "page_url") && *jstr(job, "page_url") &&
        ((rc = tf_buf_append_str(out, "  page:        ")) ||
         (rc = put(out, jstr(job, "page_url"))) ||
         (rc = tf_buf_append_str(out, "\n"))))
        goto out;
    if ((rc = table_add(table, head, 6)))
        goto out;
    json_array_foreach(json_object_get(job, "builders"), i, e) {
        const json_t *build = json_object_get(e, "build");
        long long pos;
        char posbuf[32] = "-";
        if (jint(e, "position", &pos))
            snprintf(posbuf, sizeof(posbuf), "%lld", pos);
        char *name = clean_copy(jstr(e, "name"), 64);
        char *state = clean_copy(jstr(e, "state") ? jstr(e, "state") : "-", 32);
        char *slave = clean_copy(jstr(build, "slave") ? jstr(build, "slave")
                                                      : "-", 64);
        char *res = clean_copy(entry_result(e) ? entry_result(e) : "-", 32);
        char *url = clean_copy(link_of(build) ? link_of(build) : "-", 0);
        const char *row[] = {name, state, posbuf, slave, res, url};
        rc = name && state && slave && res && url ? table_add(table, row, 6)
                                                  : TF_ENOMEM;
        free(name);
        free(state);
        free(slave);
        free(res);
        free(url);
        if (rc)
            goto out;
    }
    rc = table_render(table, out);
out:
    json_decref(table);
    return rc;
}

int tf_try_render_list(const json_t *list, tf_buf_t *out)
{
    json_t *table = json_array();
    size_t i, j;
    json_t *job, *e;
    int rc;
    const char *head[] = {"job", "state", "result", "submitted", "builders",
                          "description"};

    if (!table)
        return TF_ENOMEM;
    if (json_array_size(json_object_get(list, "jobs")) == 0) {
        rc = tf_buf_append_str(out, "no jobs\n");
        goto out;
    }
    if ((rc = table_add(table, head, 6)))
        goto out;
    json_array_foreach(json_object_get(list, "jobs"), i, job) {
        long long id = 0, ms;
        char idbuf[32], t[64] = "-";
        tf_buf_t names;
        tf_buf_init(&names, 4096);
        jint(job, "id", &id);
        snprintf(idbuf, sizeof(idbuf), "%lld", id);
        if (jint(job, "submitted_ms", &ms))
            format_time(ms, t, sizeof(t));
        json_array_foreach(json_object_get(job, "builders"), j, e) {
            if (rc == 0 && j > 0)
                rc = tf_buf_append_str(&names, ",");
            if (rc == 0)
                rc = put(&names, json_is_string(e) ? json_string_value(e)
                                                   : jstr(e, "name"));
        }
        if (rc == 0)
            rc = tf_buf_append(&names, "", 0);
        char *state = clean_copy(jstr(job, "state") ? jstr(job, "state") : "-",
                                 32);
        char *res = clean_copy(jstr(job, "result") ? jstr(job, "result") : "-",
                               32);
        char *desc = clean_copy(jstr(job, "description") ?
                                    jstr(job, "description") : "", 60);
        const char *row[] = {idbuf, state, res, t,
                             names.data ? (const char *)names.data : "-",
                             desc};
        if (rc == 0)
            rc = state && res && desc ? table_add(table, row, 6) : TF_ENOMEM;
        free(state);
        free(res);
        free(desc);
        tf_buf_free(&names);
        if (rc)
            goto out;
    }
    rc = table_render(table, out);
out:
    json_decref(table);
    return rc;
}
