/*
 * state.c - the indicator's model of each master (see state.h).
 *
 * Snapshots and events are merged so that their order does not matter:
 * the live feed and the API answer travel on different connections, so a
 * build event may arrive before or after the snapshot that already holds
 * it. Every rule is idempotent and ordered by build number:
 *
 *   started(id, number):  running += id,  unless number <= last_number
 *   finished(id, number, result):  running -= id; and if result is not
 *                         RETRY and number > last_number, last = it
 *
 * Events received while SYNCING are kept, and replayed over the snapshot:
 * replaying an event the snapshot already holds changes nothing, and one
 * it missed is applied. Builds are numbered per builder in creation order,
 * so "a newer number wins" is the master's own notion of "last build".
 *
 * Builders are kept sorted by name (binary search on every event: a farm
 * of a thousand builders with a busy feed stays cheap). Every string that
 * came from the master is checked (names) or cut and cleaned (labels)
 * before it reaches a menu or a notification.
 */
#include "state.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tf_err.h"
#include "utf8.h"

const char *tf_ind_level_name(tf_ind_level_t l)
{
    switch (l) {
    case TF_IND_PASSING: return "passing";
    case TF_IND_BUILDING: return "building";
    case TF_IND_FAILING: return "failing";
    case TF_IND_UNKNOWN: break;
    }
    return "unknown";
}

const char *tf_ind_level_icon(tf_ind_level_t l)
{
    switch (l) {
    case TF_IND_PASSING: return "testfarm-passing";
    case TF_IND_BUILDING: return "testfarm-building";
    case TF_IND_FAILING: return "testfarm-failing";
    case TF_IND_UNKNOWN: break;
    }
    return "testfarm-unknown";
}

const char *tf_ind_link_name(tf_ind_link_t l)
{
    switch (l) {
    case TF_IND_LINK_CONNECTING: return "connecting";
    case TF_IND_LINK_SYNCING: return "syncing";
    case TF_IND_LINK_LIVE: return "live";
    case TF_IND_LINK_DOWN: return "down";
    }
    return "?";
}

/* Drops a UTF-8 sequence cut short at the end of out (common/utf8.h), so
 * that a cut string stays valid UTF-8 for GTK and D-Bus. */
static void utf8_trim(char *out)
{
    out[tf_utf8_trim(out, strlen(out))] = '\0';
}

/* Copies at most outlen-1 bytes of s, control characters as spaces; cuts
 * at a UTF-8 character boundary. */
static void clean_copy(char *out, size_t outlen, const char *s)
{
    size_t i = 0;
    if (outlen == 0)
        return;
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
        if (i + 1 >= outlen)
            break;
        out[i++] = (*p < 0x20 || *p == 0x7f) ? ' ' : (char)*p;
    }
    out[i] = '\0';
    utf8_trim(out);
}

void tf_ind_master_init(tf_ind_master_t *m, const char *base,
                        const char *label)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->base, sizeof(m->base), "%s", base);
    if (label)
        clean_copy(m->label, sizeof(m->label), label);
    m->link = TF_IND_LINK_CONNECTING;
}

static void pending_clear(tf_ind_master_t *m)
{
    for (size_t i = 0; i < m->npending; i++)
        free(m->pending[i]);
    free(m->pending);
    m->pending = NULL;
    m->npending = 0;
    m->pending_bytes = 0;
}

void tf_ind_master_free(tf_ind_master_t *m)
{
    if (!m)
        return;
    pending_clear(m);
    free(m->builders);
    m->builders = NULL;
    m->nbuilders = m->capbuilders = 0;
}

void tf_ind_master_link_up(tf_ind_master_t *m)
{
    pending_clear(m);
    m->link = TF_IND_LINK_SYNCING;
    m->error[0] = '\0';
}

void tf_ind_master_link_down(tf_ind_master_t *m, const char *error)
{
    pending_clear(m);
    m->link = TF_IND_LINK_DOWN;
    clean_copy(m->error, sizeof(m->error), error ? error : "unreachable");
}

const char *tf_ind_master_label(const tf_ind_master_t *m)
{
    if (m->label[0])
        return m->label;
    if (m->name[0])
        return m->name;
    return m->base;
}

bool tf_ind_result_failing(const char *r)
{
    return r && (strcmp(r, "FAILURE") == 0 || strcmp(r, "EXCEPTION") == 0);
}

bool tf_ind_builder_failing(const tf_ind_builder_t *b)
{
    return tf_ind_result_failing(b->last_result);
}

static bool result_known(const char *r)
{
    static const char *const all[] = {"SUCCESS", "WARNINGS", "FAILURE",
                                      "SKIPPED", "EXCEPTION", "RETRY",
                                      "CANCELLED", NULL};
    for (size_t i = 0; r && all[i]; i++)
        if (strcmp(r, all[i]) == 0)
            return true;
    return false;
}

/* ---- builders ---- */

static tf_ind_builder_t *builder_find(tf_ind_builder_t *bs, size_t n,
                                      const char *name, size_t *pos)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(bs[mid].name, name);
        if (c == 0) {
            if (pos)
                *pos = mid;
            return &bs[mid];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (pos)
        *pos = lo;
    return NULL;
}

/* Finds or adds the builder name (already validated) in the array
 * array (bs, n, cap). Returns NULL when the cap is reached or memory is short. */
static tf_ind_builder_t *builder_get(tf_ind_builder_t **bs, size_t *n,
                                     size_t *cap, const char *name)
{
    size_t pos;
    tf_ind_builder_t *b = builder_find(*bs, *n, name, &pos);
    if (b)
        return b;
    if (*n >= TF_IND_MAX_BUILDERS)
        return NULL;
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        tf_ind_builder_t *nb = realloc(*bs, nc * sizeof(*nb));
        if (!nb)
            return NULL;
        *bs = nb;
        *cap = nc;
    }
    memmove(&(*bs)[pos + 1], &(*bs)[pos], (*n - pos) * sizeof(**bs));
    b = &(*bs)[pos];
    memset(b, 0, sizeof(*b));
    snprintf(b->name, sizeof(b->name), "%s", name);
    (*n)++;
    return b;
}

static bool running_has(const tf_ind_builder_t *b, uint64_t id)
{
    for (size_t i = 0; i < b->nrunning; i++)
        if (b->running[i] == id)
            return true;
    return false;
}

static void running_add(tf_ind_builder_t *b, uint64_t id)
{
    if (!running_has(b, id) && b->nrunning < TF_IND_MAX_RUNNING)
        b->running[b->nrunning++] = id;
}

static void running_remove(tf_ind_builder_t *b, uint64_t id)
{
    for (size_t i = 0; i < b->nrunning; i++) {
        if (b->running[i] == id) {
            b->running[i] = b->running[--b->nrunning];
            return;
        }
    }
}

static void builder_started(tf_ind_builder_t *b, uint64_t id, int64_t number)
{
    if (number > b->last_number)
        running_add(b, id);
}

static void builder_finished(tf_ind_builder_t *b, uint64_t id, int64_t number,
                             const char *result)
{
    running_remove(b, id);
    if (result_known(result) && strcmp(result, "RETRY") != 0 &&
        number > b->last_number) {
        b->last_number = number;
        b->last_id = (int64_t)id;
        snprintf(b->last_result, sizeof(b->last_result), "%s", result);
    }
}

/* ---- events ---- */

static bool jint(const json_t *o, const char *key, int64_t *v)
{
    json_t *x = json_object_get(o, key);
    if (!json_is_integer(x) || json_integer_value(x) <= 0)
        return false;
    *v = json_integer_value(x);
    return true;
}

/* Applies a parsed build event to builders (the model's or a scratch
 * array); returns 0 or TF_EINVAL. */
static int event_apply(tf_ind_builder_t **bs, size_t *n, size_t *cap,
                       const json_t *ev)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    if (!type)
        return TF_EINVAL;
    if (strcmp(type, "build") != 0)
        return 0; /* other topics and answers change no builder */
    const char *event = json_string_value(json_object_get(ev, "event"));
    json_t *build = json_object_get(ev, "build");
    const char *name = json_string_value(json_object_get(build, "builder"));
    int64_t id, number;
    if (!event || !json_is_object(build) || !name || !tf_name_valid(name) ||
        !jint(build, "id", &id) || !jint(build, "number", &number))
        return TF_EINVAL;
    /* A try build tests someone's patch, not the tree: it never turns a
     * builder red (or building) in the tray. A master too old to say
     * the kind sends none; its builds count as before. */
    const char *kind = json_string_value(json_object_get(build, "kind"));
    if (kind && strcmp(kind, "try") == 0)
        return 0;
    tf_ind_builder_t *b = builder_get(bs, n, cap, name);
    if (!b)
        return 0; /* over the cap: not shown */
    if (strcmp(event, "started") == 0) {
        builder_started(b, (uint64_t)id, number);
    } else if (strcmp(event, "finished") == 0) {
        const char *result =
            json_string_value(json_object_get(build, "result"));
        builder_finished(b, (uint64_t)id, number, result);
    }
    /* "created": a build that waits for its slave; nothing to show. */
    return 0;
}

int tf_ind_master_apply_event(tf_ind_master_t *m, const char *text,
                              size_t len)
{
    json_error_t jerr;
    json_t *ev = json_loadb(text, len, 0, &jerr);
    int rc;
    if (!ev || !json_is_object(ev)) {
        json_decref(ev);
        return TF_EINVAL;
    }
    if (m->link == TF_IND_LINK_SYNCING) {
        const char *type = json_string_value(json_object_get(ev, "type"));
        bool is_build = type && strcmp(type, "build") == 0;
        json_decref(ev);
        if (!is_build)
            return 0;
        if (m->npending >= TF_IND_MAX_PENDING ||
            m->pending_bytes + len > TF_IND_PENDING_BYTES)
            return TF_EFULL;
        if (m->npending == 0 && !m->pending) {
            m->pending = calloc(TF_IND_MAX_PENDING, sizeof(char *));
            if (!m->pending)
                return TF_ENOMEM;
        }
        char *copy = malloc(len + 1);
        if (!copy)
            return TF_ENOMEM;
        memcpy(copy, text, len);
        copy[len] = '\0';
        m->pending[m->npending++] = copy;
        m->pending_bytes += len;
        return 0;
    }
    if (m->link != TF_IND_LINK_LIVE) {
        json_decref(ev);
        return 0; /* a late frame from a link already given up */
    }
    rc = event_apply(&m->builders, &m->nbuilders, &m->capbuilders, ev);
    json_decref(ev);
    return rc;
}

/* ---- snapshots ---- */

/* Reads one element of GET /api/v1/builders into the scratch array. */
static int snapshot_builder(tf_ind_builder_t **bs, size_t *n, size_t *cap,
                            const json_t *o, size_t index, char *err,
                            size_t errlen)
{
    const char *name = json_string_value(json_object_get(o, "name"));
    json_t *active = json_object_get(o, "active");
    json_t *last = json_object_get(o, "last_complete");
    json_t *current = json_object_get(o, "current_builds");
    size_t i;
    json_t *c;

    if (!json_is_object(o) || !name || !tf_name_valid(name)) {
        snprintf(err, errlen, "builders[%zu] has no valid \"name\"", index);
        return TF_EINVAL;
    }
    if (json_is_false(active))
        return 0; /* removed from the master's config */
    tf_ind_builder_t *b = builder_get(bs, n, cap, name);
    if (!b)
        return *n >= TF_IND_MAX_BUILDERS ? 0 : TF_ENOMEM;
    b->seen = true;
    if (json_is_object(last)) {
        const char *result = json_string_value(json_object_get(last, "result"));
        int64_t id, number;
        if (!jint(last, "id", &id) || !jint(last, "number", &number) ||
            !result_known(result)) {
            snprintf(err, errlen, "builders[%zu] (%s): malformed "
                                  "\"last_complete\"",
                     index, name);
            return TF_EINVAL;
        }
        b->last_number = number;
        b->last_id = id;
        snprintf(b->last_result, sizeof(b->last_result), "%s", result);
    } else if (last && !json_is_null(last)) {
        snprintf(err, errlen, "builders[%zu] (%s): malformed "
                              "\"last_complete\"",
                 index, name);
        return TF_EINVAL;
    }
    if (current && !json_is_array(current)) {
        snprintf(err, errlen, "builders[%zu] (%s): \"current_builds\" must "
                              "be an array",
                 index, name);
        return TF_EINVAL;
    }
    json_array_foreach(current, i, c) {
        int64_t id, number;
        if (!jint(c, "id", &id) || !jint(c, "number", &number)) {
            snprintf(err, errlen, "builders[%zu] (%s): malformed "
                                  "\"current_builds\"",
                     index, name);
            return TF_EINVAL;
        }
        builder_started(b, (uint64_t)id, number);
    }
    return 0;
}

int tf_ind_master_apply_snapshot(tf_ind_master_t *m, const char *summary,
                                 size_t slen, const char *builders,
                                 size_t blen, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *sum = NULL, *arr = NULL, *o;
    tf_ind_builder_t *bs = NULL;
    size_t n = 0, cap = 0, i;
    int rc = TF_EINVAL;
    char name[TF_IND_LABEL_MAX + 1] = "";

    sum = json_loadb(summary, slen, 0, &jerr);
    if (!json_is_object(sum)) {
        snprintf(err, errlen, "/api/v1/summary is not a JSON object");
        goto out;
    }
    const char *sname = json_string_value(json_object_get(sum, "name"));
    if (sname)
        clean_copy(name, sizeof(name), sname);
    arr = json_loadb(builders, blen, 0, &jerr);
    if (!json_is_array(arr)) {
        snprintf(err, errlen, "/api/v1/builders is not a JSON array");
        goto out;
    }
    json_array_foreach(arr, i, o) {
        char berr[200] = "";
        rc = snapshot_builder(&bs, &n, &cap, o, i, berr, sizeof(berr));
        if (rc < 0) {
            snprintf(err, errlen, "/api/v1/builders: %s",
                     rc == TF_ENOMEM ? "out of memory" : berr);
            goto out;
        }
    }
    rc = TF_EINVAL;
    /* What the user was told about each builder carries over; a builder
     * new to us was told nothing (and its state is not news: see notes). */
    for (size_t k = 0; k < n; k++) {
        tf_ind_builder_t *old = builder_find(m->builders, m->nbuilders,
                                             bs[k].name, NULL);
        bs[k].shown_failing = old ? old->shown_failing
                                  : tf_ind_builder_failing(&bs[k]);
    }
    /* Replay what arrived while the snapshot was on its way. */
    for (size_t k = 0; k < m->npending; k++) {
        json_t *ev = json_loads(m->pending[k], 0, &jerr);
        if (ev) {
            (void)event_apply(&bs, &n, &cap, ev);
            json_decref(ev);
        }
    }
    for (size_t k = 0; k < n; k++)
        bs[k].seen = false;
    free(m->builders);
    m->builders = bs;
    m->nbuilders = n;
    m->capbuilders = cap;
    bs = NULL;
    if (!m->ever_synced) {
        for (size_t k = 0; k < m->nbuilders; k++)
            m->builders[k].shown_failing =
                tf_ind_builder_failing(&m->builders[k]);
    }
    snprintf(m->name, sizeof(m->name), "%s", name);
    pending_clear(m);
    m->link = TF_IND_LINK_LIVE;
    m->ever_synced = true;
    m->error[0] = '\0';
    rc = 0;
out:
    free(bs);
    json_decref(sum);
    json_decref(arr);
    return rc;
}

/* ---- levels, notes, menu ---- */

static size_t count_failing(const tf_ind_master_t *m)
{
    size_t k = 0;
    for (size_t i = 0; i < m->nbuilders; i++)
        k += tf_ind_builder_failing(&m->builders[i]);
    return k;
}

static size_t count_building(const tf_ind_master_t *m)
{
    size_t k = 0;
    for (size_t i = 0; i < m->nbuilders; i++)
        k += m->builders[i].nrunning > 0;
    return k;
}

tf_ind_level_t tf_ind_master_level(const tf_ind_master_t *m)
{
    if (m->link != TF_IND_LINK_LIVE)
        return TF_IND_UNKNOWN;
    if (count_failing(m))
        return TF_IND_FAILING;
    if (count_building(m))
        return TF_IND_BUILDING;
    return TF_IND_PASSING;
}

tf_ind_level_t tf_ind_overall(const tf_ind_master_t *ms, size_t n)
{
    tf_ind_level_t worst = TF_IND_PASSING;
    if (n == 0)
        return TF_IND_UNKNOWN;
    for (size_t i = 0; i < n; i++) {
        tf_ind_level_t l = tf_ind_master_level(&ms[i]);
        if (l > worst)
            worst = l;
    }
    return worst;
}

static void builder_url(const tf_ind_master_t *m, const char *name, char *out,
                        size_t outlen)
{
    snprintf(out, outlen, "%s/#/builders/%s", m->base, name);
}

size_t tf_ind_master_notes(tf_ind_master_t *m, tf_ind_note_t *out, size_t max)
{
    size_t k = 0;
    if (m->link != TF_IND_LINK_LIVE)
        return 0;
    for (size_t i = 0; i < m->nbuilders && k < max; i++) {
        tf_ind_builder_t *b = &m->builders[i];
        bool failing = tf_ind_builder_failing(b);
        if (failing == b->shown_failing)
            continue;
        b->shown_failing = failing;
        tf_ind_note_t *nt = &out[k++];
        memset(nt, 0, sizeof(*nt));
        nt->failing = failing;
        if (failing) {
            snprintf(nt->summary, sizeof(nt->summary), "%s is failing",
                     b->name);
        } else {
            snprintf(nt->summary, sizeof(nt->summary), "%s passes again",
                     b->name);
        }
        snprintf(nt->body, sizeof(nt->body), "%s: build #%lld %s",
                 tf_ind_master_label(m), (long long)b->last_number,
                 b->last_result);
        utf8_trim(nt->body);
        builder_url(m, b->name, nt->url, sizeof(nt->url));
    }
    return k;
}

static void master_header(const tf_ind_master_t *m, char *out, size_t outlen)
{
    const char *label = tf_ind_master_label(m);
    size_t failing = count_failing(m), building = count_building(m);
    switch (m->link) {
    case TF_IND_LINK_DOWN:
        snprintf(out, outlen, "%s: unreachable (%s), retrying", label,
                 m->error);
        return;
    case TF_IND_LINK_CONNECTING:
    case TF_IND_LINK_SYNCING:
        if (!m->ever_synced) {
            snprintf(out, outlen, "%s: connecting", label);
            return;
        }
        snprintf(out, outlen, "%s: reconnecting", label);
        return;
    case TF_IND_LINK_LIVE:
        break;
    }
    if (failing && building)
        snprintf(out, outlen, "%s: %zu failing, %zu building", label, failing,
                 building);
    else if (failing)
        snprintf(out, outlen, "%s: %zu failing", label, failing);
    else if (building)
        snprintf(out, outlen, "%s: all passing, %zu building", label,
                 building);
    else
        snprintf(out, outlen, "%s: all passing", label);
}

size_t tf_ind_menu_build(const tf_ind_master_t *ms, size_t n,
                         tf_ind_item_t *items, size_t max)
{
    size_t k = 0;
    if (max == 0)
        return 0;
    /* Leave room for Quit. */
    for (size_t i = 0; i < n && k + 1 < max; i++) {
        const tf_ind_master_t *m = &ms[i];
        tf_ind_item_t *it = &items[k++];
        memset(it, 0, sizeof(*it));
        it->kind = TF_IND_ITEM_HEADER;
        master_header(m, it->label, sizeof(it->label));
        utf8_trim(it->label);
        size_t listed = 0, failing = count_failing(m);
        for (size_t b = 0; b < m->nbuilders && k + 1 < max; b++) {
            const tf_ind_builder_t *bd = &m->builders[b];
            if (!tf_ind_builder_failing(bd))
                continue;
            if (listed == TF_IND_MENU_FAILING_MAX) {
                it = &items[k++];
                memset(it, 0, sizeof(*it));
                it->kind = TF_IND_ITEM_LINK;
                snprintf(it->label, sizeof(it->label),
                         "... and %zu more failing", failing - listed);
                snprintf(it->url, sizeof(it->url), "%s/#/", m->base);
                break;
            }
            it = &items[k++];
            memset(it, 0, sizeof(*it));
            it->kind = TF_IND_ITEM_LINK;
            snprintf(it->label, sizeof(it->label), "%s: %s (#%lld)%s",
                     bd->name, bd->last_result, (long long)bd->last_number,
                     m->link == TF_IND_LINK_LIVE ? "" : ", last known");
            utf8_trim(it->label);
            builder_url(m, bd->name, it->url, sizeof(it->url));
            listed++;
        }
        if (k + 1 < max) {
            it = &items[k++];
            memset(it, 0, sizeof(*it));
            it->kind = TF_IND_ITEM_LINK;
            snprintf(it->label, sizeof(it->label), "Open waterfall");
            snprintf(it->url, sizeof(it->url), "%s/#/waterfall", m->base);
        }
        if (k + 1 < max) {
            it = &items[k++];
            memset(it, 0, sizeof(*it));
            it->kind = TF_IND_ITEM_SEPARATOR;
        }
    }
    tf_ind_item_t *q = &items[k++];
    memset(q, 0, sizeof(*q));
    q->kind = TF_IND_ITEM_QUIT;
    snprintf(q->label, sizeof(q->label), "Quit");
    return k;
}

/* Appends s to out (NUL-terminated, outlen bytes), cutting when full. */
static void append(char *out, size_t outlen, const char *s)
{
    size_t have = strlen(out);
    if (have + 1 >= outlen)
        return;
    snprintf(out + have, outlen - have, "%s", s);
}

void tf_ind_title(const tf_ind_master_t *ms, size_t n, char *out,
                  size_t outlen)
{
    char part[TF_IND_TEXT_MAX * 2];
    if (outlen == 0)
        return;
    snprintf(out, outlen, "TestFarm: %s",
             tf_ind_level_name(tf_ind_overall(ms, n)));
    for (size_t i = 0; i < n; i++) {
        const tf_ind_master_t *m = &ms[i];
        append(out, outlen, i == 0 ? " - " : "; ");
        if (m->link != TF_IND_LINK_LIVE) {
            snprintf(part, sizeof(part), "%s: %s", tf_ind_master_label(m),
                     m->link == TF_IND_LINK_DOWN ? "unreachable"
                                                 : "connecting");
            append(out, outlen, part);
            continue;
        }
        size_t failing = count_failing(m);
        if (!failing) {
            snprintf(part, sizeof(part), "%s: %s", tf_ind_master_label(m),
                     tf_ind_level_name(tf_ind_master_level(m)));
            append(out, outlen, part);
            continue;
        }
        snprintf(part, sizeof(part), "%s: %zu failing (",
                 tf_ind_master_label(m), failing);
        append(out, outlen, part);
        size_t shown = 0;
        for (size_t b = 0; b < m->nbuilders; b++) {
            if (!tf_ind_builder_failing(&m->builders[b]))
                continue;
            if (shown == 5) {
                append(out, outlen, ", ...");
                break;
            }
            if (shown++)
                append(out, outlen, ", ");
            append(out, outlen, m->builders[b].name);
        }
        append(out, outlen, ")");
    }
    utf8_trim(out);
}
