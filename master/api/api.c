/*
 * api.c - the JSON API under /api/v1 (docs/api.md).
 *
 * The route table (routes.c) has validated every name and id before a
 * handler here runs, and checked the caller's role. Reads of stored data
 * run off the loop thread
 * (queries.c through tf_store_read); live facts only the loop thread knows
 * (who is connected, what is running, queue positions) are overlaid on the
 * loop thread when the read comes back. Writes (force, cancel) answer only
 * after the transaction holding them committed.
 *
 * Actions on objects (force, cancel) check who may act on them
 * (api/authz.c): a committer acts on their own requests and builds.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "crypto.h"
#include "api/handlers.h"
#include "api/cache.h"
#include "log.h"
#include "map.h"
#include "api/mail.h"
#include "core/master.h"
#include "names.h"
#include "range.h"
#include "store/queries.h"
#include "tf_err.h"
#include "util.h"

#define LOG_PIECE (256 * 1024)
/* Unpacked log blocks kept between pieces by all log streams together.
 * A block is 1 MiB (up to 16 MiB): without a cap, 100 clients stalled in
 * big logs kept 100 MiB (measured: +130 MiB RSS with the streams' piece
 * buffers). A stream over the cap lets its block go after each piece and
 * unpacks it again for the next (about 1 ms per MiB), trading CPU for a
 * bound on memory. */
#define LOG_KEEP_MAX (16u * 1024u * 1024u)

/* --- helpers --- */

bool tf_api_read_then(tf_http_req_t *r, tf_store_read_fn run,
                      tf_store_done_cb done, void *ctx)
{
    tf_http_async_begin(r);
    if (tf_store_read(r->m->store, run, done, ctx) == 0)
        return true;
    tf_http_async_end(r);
    tf_http_error(r, 503, "cannot read the database now");
    return false;
}

static const char *base_url(tf_master_t *m)
{
    return m->cfg->public_url;
}

static bool check_name(tf_http_req_t *r, const char *s, const char *what)
{
    if (!tf_name_valid(s)) {
        tf_http_error(r, 400, "invalid %s name \"%.80s\"", what, s);
        return false;
    }
    return true;
}

void tf_api_commit_link(const tf_master_t *m, json_t *change)
{
    const char *tpl = m->cfg->commit_url;
    const char *rev = json_string_value(json_object_get(change, "revision"));
    if (!json_is_object(change))
        return;
    if (!tpl || !rev) {
        json_object_set_new(change, "commit_url", json_null());
        return;
    }
    char url[1024];
    size_t n = 0;
    for (const char *p = tpl; *p && n + 1 < sizeof(url);) {
        if (strncmp(p, "{revision}", 10) == 0) {
            int w = snprintf(url + n, sizeof(url) - n, "%s", rev);
            n += w > 0 ? (size_t)w : 0;
            if (n >= sizeof(url))
                n = sizeof(url) - 1;
            p += 10;
        } else {
            url[n++] = *p++;
        }
    }
    url[n] = '\0';
    json_object_set_new(change, "commit_url", json_string(url));
}

void tf_api_commit_links(const tf_master_t *m, json_t *changes)
{
    size_t i;
    json_t *c;
    json_array_foreach(changes, i, c) tf_api_commit_link(m, c);
}

void tf_api_pages_null(json_t *j)
{
    size_t i;
    const char *key;
    json_t *v;
    if (json_is_array(j)) {
        json_array_foreach(j, i, v) tf_api_pages_null(v);
    } else if (json_is_object(j)) {
        json_object_foreach(j, key, v)
        {
            if (strcmp(key, "page_url") == 0)
                json_object_set_new(j, key, json_null());
            else if (json_is_object(v) || json_is_array(v))
                tf_api_pages_null(v);
        }
    }
}

bool tf_api_arg_kind(tf_http_req_t *r, const char **kind)
{
    const char *v = tf_http_arg(r, "kind");
    *kind = NULL;
    if (!v)
        return true;
    if (strcmp(v, "try") == 0 || strcmp(v, "ci") == 0) {
        *kind = strcmp(v, "try") == 0 ? "try" : "ci";
        return true;
    }
    tf_http_error(r, 400, "parameter kind=\"%.40s\": expected \"try\" (try "
                  "builds) or \"ci\" (continuous builds)", v);
    return false;
}

bool tf_api_args_only(tf_http_req_t *r, const char *const *names)
{
    for (size_t i = 0; i < r->nargs; i++) {
        const char *a = r->args[i];
        size_t n = strcspn(a, "=");
        bool known = false;
        for (size_t k = 0; names[k] && !known; k++)
            known = strlen(names[k]) == n && strncmp(a, names[k], n) == 0;
        if (!known) {
            char list[256] = "";
            for (size_t k = 0; names[k]; k++) {
                size_t used = strlen(list);
                snprintf(list + used, sizeof(list) - used, "%s%s",
                         k ? ", " : "", names[k]);
            }
            tf_http_error(r, 400, "unknown parameter \"%.*s\": this "
                          "endpoint takes %s", (int)(n > 40 ? 40 : n), a,
                          list[0] ? list : "no parameters");
            return false;
        }
    }
    return true;
}

/* --- live overlays (loop thread) --- */

void tf_api_slave_state(tf_master_t *m, const json_t *farm,
                        const char *name, bool *up, unsigned *builds,
                        bool *draining)
{
    tf_mslave_t *s = tf_master_slave(m, name, false);
    json_t *row;

    *up = s && s->link;
    *builds = *up ? s->nbuilds : 0;
    *draining = *up && s->draining;
    if (*up || !farm || !(row = json_object_get(farm, name)))
        return;
    /* Connected to another master, as the database says. */
    *up = true;
    *builds = (unsigned)json_integer_value(json_array_get(row, 0));
    *draining = json_is_true(json_array_get(row, 1));
}

/* Counts the slaves that may run a builder by their live state (farm:
 * tf_api_slave_state), into counts (a new object {allowed, connected,
 * idle, busy}), and lists them ({name, connected}) into *list when list
 * is not NULL. A draining slave is connected but neither idle nor busy
 * unless it still runs a build. */
static void builder_slaves(tf_master_t *m, const json_t *farm,
                           const tf_cfg_builder_t *cfg, json_t **counts,
                           json_t **list, unsigned *nconnected)
{
    unsigned allowed = 0, up = 0, idle = 0, busy = 0;
    if (list)
        *list = json_array();
    for (size_t i = 0; cfg && i < m->cfg->nslaves; i++) {
        const tf_cfg_slave_t *c = &m->cfg->slaves[i];
        if (!tf_config_slave_allowed(cfg, c))
            continue;
        bool on, draining;
        unsigned nb;
        tf_api_slave_state(m, farm, c->name, &on, &nb, &draining);
        allowed++;
        up += on;
        busy += on && nb > 0;
        idle += on && nb == 0 && !draining;
        if (list)
            json_array_append_new(*list, json_pack("{s:s,s:b}", "name",
                                                   c->name, "connected", on));
    }
    *nconnected = up;
    *counts = json_pack("{s:i,s:i,s:i,s:i}", "allowed", (int)allowed,
                        "connected", (int)up, "idle", (int)idle, "busy",
                        (int)busy);
}

void tf_api_builder_slave_counts(tf_master_t *m, const json_t *farm,
                                 const tf_cfg_builder_t *cfg,
                                 json_t **counts, unsigned *nconnected)
{
    builder_slaves(m, farm, cfg, counts, NULL, nconnected);
}

bool tf_api_farm_build_elsewhere(tf_master_t *m, const json_t *row)
{
    uint64_t id = (uint64_t)json_integer_value(json_array_get(row, 0));
    const char *slave = json_string_value(json_array_get(row, 3));
    /* This master's own builds come from its memory, which is ahead of
     * the database: one it holds, or one of a slave linked here (ended
     * here, its end not committed yet), is not another master's. */
    if (tf_map_get_id(m->builds, id))
        return false;
    tf_mslave_t *s = slave ? tf_master_slave(m, slave, false) : NULL;
    return !(s && s->link);
}

/* The running builds of builder or slave (NULL: any), from this master's
 * memory, then, when fbuilds is not NULL (shared masters: the builder's
 * or the slave's rows of tf_q_farm_builds, read with the answer), the
 * other masters' from the database, counted
 * into *nelsewhere when not NULL. Those others' slave_connected is
 * whether farm (tf_q_farm_slaves) holds their slave, or elsewhere_up
 * when farm is NULL. */
static json_t *running_builds_of(tf_master_t *m, const char *builder,
                                 const char *slave, const json_t *fbuilds,
                                 const json_t *farm, bool elsewhere_up,
                                 unsigned *nelsewhere)
{
    json_t *arr = json_array();
    size_t pos = 0;
    void *v;
    int64_t now = tf_now_ms();
    while (tf_map_next(m->builds, &pos, NULL, NULL, &v) == 0) {
        tf_build_t *b = v;
        /* Ended, or finished by the slave and waiting for earlier events
         * to commit: the slave's slot is free again (build.c), so it is
         * not one of the slave's current builds any more. */
        if (b->state == TF_BUILD_ENDING || b->finish_pending)
            continue;
        if (builder && strcmp(b->builder, builder) != 0)
            continue;
        if (slave && strcmp(b->slave, slave) != 0)
            continue;
        int64_t since = b->started_ms ? b->started_ms : b->created_ms;
        json_t *o = json_pack("{s:I,s:s,s:I,s:s,s:I,s:I,s:b}", "id",
                              (json_int_t)b->id, "builder", b->builder,
                              "number", (json_int_t)b->number, "slave",
                              b->slave, "started_ms", (json_int_t)since,
                              "elapsed_ms", (json_int_t)(now - since),
                              "slave_connected", b->lost_since_ms == 0);
        char url[600];
        snprintf(url, sizeof(url), "%sapi/v1/builds/%" PRIu64, base_url(m),
                 b->id);
        json_object_set_new(o, "url", json_string(url));
        snprintf(url, sizeof(url), "%s#/builds/%" PRIu64, base_url(m), b->id);
        json_object_set_new(o, "page_url", json_string(url));
        json_object_set_new(o, "kind", json_string(b->is_try ? "try" : "ci"));
        json_array_append_new(arr, o);
    }
    size_t i;
    json_t *row;
    json_array_foreach(fbuilds, i, row)
    {
        const char *rb = json_string_value(json_array_get(row, 1));
        const char *rs = json_string_value(json_array_get(row, 3));
        if (!rb || !rs || (builder && strcmp(rb, builder) != 0) ||
            (slave && strcmp(rs, slave) != 0) ||
            !tf_api_farm_build_elsewhere(m, row))
            continue;
        json_int_t id = json_integer_value(json_array_get(row, 0));
        int64_t since = json_integer_value(json_array_get(row, 4));
        json_t *o = json_pack(
            "{s:I,s:s,s:I,s:s,s:I,s:I,s:b}", "id", id, "builder", rb,
            "number", json_integer_value(json_array_get(row, 2)), "slave", rs,
            "started_ms", (json_int_t)since, "elapsed_ms",
            (json_int_t)(now - since), "slave_connected",
            farm ? json_object_get(farm, rs) != NULL : elsewhere_up);
        char url[600];
        snprintf(url, sizeof(url), "%sapi/v1/builds/%" PRId64, base_url(m),
                 (int64_t)id);
        json_object_set_new(o, "url", json_string(url));
        snprintf(url, sizeof(url), "%s#/builds/%" PRId64, base_url(m),
                 (int64_t)id);
        json_object_set_new(o, "page_url", json_string(url));
        json_object_set(o, "kind", json_array_get(row, 5));
        json_array_append_new(arr, o);
        if (nelsewhere)
            (*nelsewhere)++;
    }
    return arr;
}

/* A request in the queue's shape (docs/api.md, "A request"): from a
 * request this master holds (request_json) or from a stored row of one
 * running on another master (tf_q_farm_running), with the same fields in
 * the same order. build_id and job_id 0: none. */
typedef struct req_fields {
    uint64_t id, build_id, job_id;
    const char *builder, *reason, *owner; /* reason NULL: none */
    bool pending, is_try;
    int priority;
    int64_t submitted_ms;
    unsigned retries;
} req_fields_t;

static json_t *request_fields_json(tf_master_t *m, const req_fields_t *f,
                                   unsigned pos)
{
    char url[600];
    snprintf(url, sizeof(url), "%sapi/v1/requests/%" PRIu64, base_url(m),
             f->id);
    json_t *o = json_pack(
        "{s:I,s:s,s:s,s:s?,s:s,s:i,s:I,s:i,s:s}", "id", (json_int_t)f->id,
        "builder", f->builder, "state", f->pending ? "pending" : "running",
        "reason", f->reason, "owner", f->owner ? f->owner : "", "priority",
        f->priority, "submitted_ms", (json_int_t)f->submitted_ms, "retries",
        (int)f->retries, "url", url);
    if (!o)
        return NULL;
    json_object_set_new(o, "position", pos ? json_integer(pos) : json_null());
    json_object_set_new(o, "build_id",
                        f->build_id ? json_integer((json_int_t)f->build_id)
                                    : json_null());
    json_object_set_new(o, "job_id", f->job_id
                                         ? json_integer((json_int_t)f->job_id)
                                         : json_null());
    json_object_set_new(o, "kind", json_string(f->is_try ? "try" : "ci"));
    char page[600];
    if (f->job_id)
        snprintf(page, sizeof(page), "%s#/jobs/%" PRIu64, base_url(m),
                 f->job_id);
    else if (f->build_id)
        snprintf(page, sizeof(page), "%s#/builds/%" PRIu64, base_url(m),
                 f->build_id);
    else
        snprintf(page, sizeof(page), "%s#/builders/%s", base_url(m),
                 f->builder);
    json_object_set_new(o, "page_url", json_string(page));
    return o;
}

/* A request as the queue shows it; pos is its place in its builder's
 * queue (0: not pending), known to the caller walking the queue in order
 * (asking the scheduler per request would make a long queue quadratic). */
static json_t *request_json(tf_master_t *m, const tf_request_t *r,
                            unsigned pos)
{
    req_fields_t f = {
        .id = r->id,
        .build_id = r->build ? r->build->id : 0,
        .job_id = r->job_id,
        .builder = r->builder,
        .reason = r->reason,
        .owner = r->owner,
        .pending = r->state == TF_REQ_PENDING,
        .is_try = tf_request_is_try(r),
        .priority = r->priority,
        .submitted_ms = r->submitted_ms,
        .retries = r->retries,
    };
    return request_fields_json(m, &f, pos);
}

static json_t *pending_of(tf_master_t *m, const char *builder)
{
    json_t *arr = json_array();
    tf_mbuilder_t *mb = tf_master_builder(m, builder, false);
    if (!mb)
        return arr;
    tf_list_t *it;
    unsigned pos = 0;
    /* The pending list is kept in the order the scheduler picks. */
    tf_list_foreach(it, &mb->pending)
    {
        json_array_append_new(
            arr, request_json(m, tf_list_entry(it, tf_request_t, node),
                              ++pos));
    }
    return arr;
}

/* Overlays a builder's live state on its stored row. The names of the
 * slaves that may run it go into the builder's page (detail) and into
 * the list only when asked (slaves): on a farm of a thousand slaves they
 * would make the hot list hundreds of KiB (docs/api.md). */
static void overlay_builder(tf_master_t *m, const json_t *farm,
                            const json_t *fbuilds, const json_t *fpending,
                            json_t *o, bool detail, bool slaves)
{
    const char *name = json_string_value(json_object_get(o, "name"));
    if (!name)
        return;
    tf_mbuilder_t *mb = tf_master_builder(m, name, false);
    const tf_cfg_builder_t *cfg = tf_config_builder(m->cfg, name);
    unsigned up = 0;
    json_t *counts = NULL, *list = NULL;
    builder_slaves(m, farm, cfg, &counts, detail || slaves ? &list : NULL,
                   &up);
    if (list)
        json_object_set_new(o, "slaves", list);
    json_object_set_new(o, "slave_counts", counts);
    json_object_set_new(o, "connected_slaves", json_integer(up));
    unsigned pending = mb ? mb->npending : 0, running = mb ? mb->nrunning : 0;
    /* Shared masters: the other masters' running builds too, and the
     * farm's pending count, from the database in the answer's snapshot
     * (this master's queue may hold a copy of a request another master
     * claimed or ended for up to a tick: tf_master_stale_check). */
    if (fpending)
        pending = (unsigned)json_integer_value(json_object_get(fpending,
                                                               name));
    json_t *current = running_builds_of(m, name, NULL,
                                        json_object_get(fbuilds, name), farm,
                                        true, &running);
    json_object_set_new(o, "pending", json_integer(pending));
    json_object_set_new(o, "running", json_integer(running));
    json_object_set_new(o, "active", json_boolean(cfg != NULL));
    const char *state = !cfg        ? "removed"
                        : running   ? "building"
                        : up == 0   ? "offline"
                        : pending   ? "pending"
                                    : "idle";
    json_object_set_new(o, "state", json_string(state));
    json_object_set_new(o, "current_builds", current);
    if (cfg) {
        json_t *tags = json_array();
        for (size_t i = 0; i < cfg->ntags; i++)
            json_array_append_new(tags, json_string(cfg->tags[i]));
        json_object_set_new(o, "tags", tags);
        json_object_set_new(o, "priority", json_integer(cfg->priority));
        /* The patterns that mark an error line in its logs (mail excerpts,
         * the log viewer's "next error"). */
        char **pat = cfg->mail.has_patterns ? cfg->mail.error_patterns
                                            : m->cfg->mail.error_patterns;
        size_t npat = cfg->mail.has_patterns ? cfg->mail.npatterns
                                             : m->cfg->mail.npatterns;
        json_t *pats = json_array();
        for (size_t i = 0; pat && i < npat; i++)
            json_array_append_new(pats, json_string(pat[i]));
        json_object_set_new(o, "error_patterns", pats);
        /* What a committer may set with -p (tf-try) or when forcing. */
        json_t *props = json_array();
        for (size_t i = 0; i < cfg->nforce_properties; i++)
            json_array_append_new(props,
                                  json_string(cfg->force_properties[i]));
        json_object_set_new(o, "force_properties", props);
    }
    if (detail) {
        json_object_set_new(o, "pending_requests", pending_of(m, name));
        json_t *steps = json_array();
        for (size_t i = 0; cfg && i < cfg->nsteps; i++)
            json_array_append_new(steps, json_string(cfg->steps[i].spec.name));
        json_object_set_new(o, "steps", steps);
    }
}

static void overlay_slave(tf_master_t *m, const json_t *fbuilds, json_t *o)
{
    const char *name = json_string_value(json_object_get(o, "name"));
    if (!name)
        return;
    tf_mslave_t *s = tf_master_slave(m, name, false);
    const tf_cfg_slave_t *cfg = tf_config_slave(m->cfg, name);
    /* Connected here (the live link), or, among shared masters, to
     * another master as the database says (a dead master's slaves are
     * marked disconnected when its heartbeat expires: store/pg.c). */
    bool elsewhere = tf_store_is_shared(m->store) && !(s && s->link) &&
                     json_is_true(json_object_get(o, "connected"));
    json_object_set_new(o, "connected",
                        json_boolean((s && s->link) || elsewhere));
    json_object_set_new(o, "configured", json_boolean(cfg != NULL));
    json_object_set_new(o, "max_builds",
                        cfg ? json_integer(cfg->max_builds) : json_null());
    json_object_set_new(o, "draining", json_boolean(s && s->draining));
    if (s && s->link && s->last_seen_ms)
        json_object_set_new(o, "last_seen_ms", json_integer(s->last_seen_ms));
    /* The live link's facts come from memory, like "connected": the row
     * that records them may not be committed yet. */
    if (s && s->link && s->connected_ms) {
        json_object_set_new(o, "connected_ms", json_integer(s->connected_ms));
        json_object_set_new(o, "platform", json_string(s->platform));
        json_object_set_new(o, "version", json_string(s->version));
    }
    json_object_set_new(o, "current_builds",
                        running_builds_of(m, NULL, name,
                                          json_object_get(fbuilds, name),
                                          NULL, elsewhere, NULL));
}

static int by_name(const void *a, const void *b)
{
    const char *x = json_string_value(json_object_get(*(json_t *const *)a,
                                                      "name"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b,
                                                      "name"));
    return strcmp(x ? x : "", y ? y : "");
}

void tf_api_builders_complete(tf_master_t *m, const char *base, json_t *arr)
{
    tf_map_t *have = tf_map_new();
    json_t **all = NULL;
    size_t i, n = 0;
    json_t *v;
    if (!have)
        return;
    json_array_foreach(arr, i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        if (name && tf_map_put_str(have, name, v) != 0)
            goto out;
    }
    for (i = 0; i < m->cfg->nbuilders; i++) {
        const char *name = m->cfg->builders[i].name;
        if (tf_map_get_str(have, name))
            continue;
        json_t *row = tf_q_builder_unstored(base, name);
        if (row && json_array_append_new(arr, row) == 0)
            n++;
    }
    if (n == 0)
        goto out;
    n = json_array_size(arr);
    all = calloc(n, sizeof(*all));
    if (!all)
        goto out;
    json_array_foreach(arr, i, v) all[i] = json_incref(v);
    qsort(all, n, sizeof(*all), by_name);
    json_array_clear(arr);
    for (i = 0; i < n; i++)
        json_array_append_new(arr, all[i]);
out:
    free(all);
    tf_map_free(have);
}

/* --- asynchronous reads --- */

typedef enum {
    Q_BUILDERS,
    Q_BUILDER,
    Q_BUILDS,
    Q_BUILD,
    Q_BUILD_BY_NUMBER,
    Q_SLAVES,
    Q_SLAVE,
    Q_REQUEST,
    Q_BUILDER_STATS,
} qkind_t;

typedef struct qjob {
    tf_http_req_t *r;
    qkind_t kind;
    char name[TF_NAME_MAX + 1];
    uint64_t id;
    uint64_t before;
    unsigned limit;
    const char *bkind; /* "try", "ci" (static strings) or NULL */
    bool slaves;       /* builders: list each one's slaves (?slaves=1) */
    bool shared;       /* builders: count the slaves of every master */
    json_t *farm;      /* ... from tf_q_farm_slaves */
    json_t *fbuilds;   /* shared: the farm's open builds (tf_q_farm_builds),
                        * by builder (builders) or slave (slaves) */
    json_t *fpending;  /* shared: builders' pending (tf_q_farm_pending) */
    char base[512];
    json_t *out;
} qjob_t;

static int qjob_run(tf_db_t *db, void *arg)
{
    qjob_t *q = arg;
    switch (q->kind) {
    case Q_BUILDERS:
    case Q_BUILDER: {
        int rc = q->kind == Q_BUILDERS
                     ? tf_q_builders(db, q->base, &q->out)
                     : tf_q_builder(db, q->base, q->name, &q->out);
        /* The same snapshot: counts agree with the rows. */
        if (rc == 0 && q->shared)
            rc = tf_q_farm_slaves(db, &q->farm);
        if (rc == 0 && q->shared)
            rc = tf_q_farm_builds(db, false, &q->fbuilds);
        if (rc == 0 && q->shared)
            rc = tf_q_farm_pending(db, &q->fpending);
        return rc;
    }
    case Q_BUILDS:
        return tf_q_builds(db, q->base, q->name, q->bkind, q->before,
                           q->limit, &q->out);
    case Q_BUILD:
        return tf_q_build(db, q->base, q->id, &q->out);
    case Q_BUILD_BY_NUMBER:
        return tf_q_build_by_number(db, q->base, q->name, q->id, &q->out);
    case Q_SLAVES:
    case Q_SLAVE: {
        int rc = q->kind == Q_SLAVES
                     ? tf_q_slaves(db, q->base, q->before, q->limit, &q->out)
                     : tf_q_slave(db, q->base, q->name, 50, &q->out);
        /* The other masters' builds, in the same snapshot as the rows. */
        if (rc == 0 && q->shared)
            rc = tf_q_farm_builds(db, true, &q->fbuilds);
        return rc;
    }
    case Q_REQUEST:
        return tf_q_request(db, q->base, q->id, &q->out);
    case Q_BUILDER_STATS:
        return tf_q_builder_stats(db, q->base, q->name, q->bkind, q->limit,
                                  &q->out);
    }
    return TF_EINVAL;
}

static void qjob_done(void *arg, int rc)
{
    qjob_t *q = arg;
    tf_http_req_t *r = q->r;
    tf_master_t *m = r->m;
    if (!tf_http_async_end(r))
        goto out;
    if (rc == TF_ENOENT && q->kind == Q_BUILDER &&
        tf_config_builder(m->cfg, q->name)) {
        /* Configured, its row not committed yet (a start, a reload). */
        q->out = tf_q_builder_unstored(q->base, q->name);
        rc = q->out ? 0 : TF_ENOMEM;
    }
    if (rc == TF_ENOENT && q->kind == Q_BUILDS &&
        tf_config_builder(m->cfg, q->name)) {
        /* The same: a configured builder has no builds yet. */
        q->out = json_pack("{s:[],s:n}", "builds", "next_before");
        rc = q->out ? 0 : TF_ENOMEM;
    }
    if (rc == TF_ENOENT) {
        const char *what = q->kind == Q_BUILDER || q->kind == Q_BUILDS ||
                                   q->kind == Q_BUILDER_STATS
                               ? "builder"
                           : q->kind == Q_SLAVE   ? "slave"
                           : q->kind == Q_REQUEST ? "request"
                                                  : "build";
        tf_http_error(r, 404, "no such %s", what);
        goto out;
    }
    if (rc || !q->out) {
        tf_http_error(r, 500, "database read failed: %s", tf_strerror(rc));
        goto out;
    }
    if (q->kind == Q_BUILD) {
        /* A finished build never changes; a running one's log sizes move
         * with every chunk, which moves no generation: not kept. */
        const char *st = json_string_value(json_object_get(q->out, "state"));
        r->cache_immutable = st && strcmp(st, "finished") == 0;
        r->cacheable = r->cacheable && r->cache_immutable;
    }
    size_t i;
    json_t *v;
    switch (q->kind) {
    case Q_BUILDERS:
        tf_api_builders_complete(m, q->base, q->out);
        json_array_foreach(q->out, i, v) overlay_builder(
            m, q->farm, q->fbuilds, q->fpending, v, false, q->slaves);
        break;
    case Q_BUILDER:
        overlay_builder(m, q->farm, q->fbuilds, q->fpending, q->out, true,
                        true);
        break;
    case Q_SLAVES:
        json_array_foreach(q->out, i, v) overlay_slave(m, q->fbuilds, v);
        break;
    case Q_BUILD:
    case Q_BUILD_BY_NUMBER:
        tf_api_commit_links(m, json_object_get(q->out, "changes"));
        break;
    case Q_SLAVE:
        overlay_slave(m, q->fbuilds, q->out);
        break;
    case Q_REQUEST: {
        tf_request_t *req = tf_map_get_id(m->requests, q->id);
        const char *st =
            json_string_value(json_object_get(q->out, "state"));
        /* Shared: a copy of a request another master claimed or ended
         * (dropped within a second, core/master.c) has no place. */
        if (req && q->shared && (!st || strcmp(st, "pending") != 0))
            req = NULL;
        if (req) {
            unsigned pos = tf_sched_position(m, req);
            json_object_set_new(q->out, "position",
                                pos ? json_integer(pos) : json_null());
        } else {
            json_object_set_new(q->out, "position", json_null());
        }
        break;
    }
    default:
        break;
    }
    tf_http_respond_json(r, 200, q->out);
    q->out = NULL;
out:
    json_decref(q->out);
    json_decref(q->farm);
    json_decref(q->fbuilds);
    json_decref(q->fpending);
    free(q);
}

/* The most slaves one GET /api/v1/slaves answers (the default). */
#define SLAVES_LIMIT_MAX 100000

static void start_query(tf_http_req_t *r, qkind_t kind, const char *name,
                        uint64_t id)
{
    qjob_t *q = calloc(1, sizeof(*q));
    if (!q) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    q->r = r;
    q->kind = kind;
    if (name)
        snprintf(q->name, sizeof(q->name), "%s", name);
    q->id = id;
    snprintf(q->base, sizeof(q->base), "%s", base_url(r->m));
    q->shared = tf_store_is_shared(r->m->store);
    if (kind == Q_BUILDS) {
        uint64_t limit = 0, before = 0;
        if (!tf_http_arg_u64(r, "limit", 1, 500, 50, &limit) ||
            !tf_http_arg_u64(r, "before", 1, TF_PROTO_MAX_ID, 0, &before) ||
            !tf_api_arg_kind(r, &q->bkind)) {
            free(q);
            return;
        }
        q->limit = (unsigned)limit;
        q->before = before;
    }
    if (kind == Q_SLAVES) {
        /* Paged by offset (q->before holds it): a farm of thousands of
         * slaves need not be one answer. All of them by default. */
        uint64_t offset = 0, limit = 0;
        if (!tf_http_arg_u64(r, "offset", 0, INT32_MAX, 0, &offset) ||
            !tf_http_arg_u64(r, "limit", 1, SLAVES_LIMIT_MAX,
                             SLAVES_LIMIT_MAX, &limit)) {
            free(q);
            return;
        }
        q->before = offset;
        q->limit = (unsigned)limit;
    }
    if (kind == Q_BUILDERS) {
        const char *v = tf_http_arg(r, "slaves");
        if (v && strcmp(v, "0") && strcmp(v, "1")) {
            tf_http_error(r, 400, "slaves=\"%.16s\": expected 1 (list "
                          "each builder's slaves) or 0", v);
            free(q);
            return;
        }
        q->slaves = v && strcmp(v, "1") == 0;
    }
    if (kind == Q_BUILDER_STATS) {
        uint64_t limit = 0;
        /* The plots are the tree's: continuous builds unless asked. */
        const char *v = tf_http_arg(r, "kind");
        if (!tf_http_arg_u64(r, "limit", 1, 1000, 200, &limit) ||
            !tf_api_arg_kind(r, &q->bkind)) {
            free(q);
            return;
        }
        if (!v)
            q->bkind = "ci";
        q->limit = (unsigned)limit;
    }
    tf_http_async_begin(r);
    int rc = tf_store_read(r->m->store, qjob_run, qjob_done, q);
    if (rc) {
        tf_http_async_end(r);
        tf_http_error(r, 503, "cannot read the database now: %s",
                      tf_strerror(rc));
        free(q);
    }
}

/* --- logs --- */

typedef struct log_stream {
    tf_http_req_t *r;
    uint64_t build_id;
    unsigned step;
    uint64_t pos;
    uint64_t end;
    uint64_t size;
    uint64_t lines;
    int phase; /* 0: sizing, 1: streaming */
    int status; /* 200 or 206 */
    int64_t removed_ms; /* retention removed the log then (0: kept) */
    size_t got;
    bool prefetched; /* buf holds the first piece, read before answering */
    tf_logcache_t cache; /* the sealed block being streamed, unpacked */
    size_t kept;         /* cache bytes counted in log_kept */
    /* The piece read and not yet fed (LOG_PIECE bytes and a NUL, malloc'd
     * on the pool thread that reads it): fed, it becomes the answer's
     * write buffer (tf_http_feed_owned), so a stalled stream holds one
     * piece's memory, not a piece and its copy. */
    unsigned char *buf;
} log_stream_t;

/* Bytes of unpacked blocks the streams keep between pieces (LOG_KEEP_MAX);
 * pieces are read on the thread pool, so it is atomic. */
static _Atomic size_t log_kept;

/* After a piece (any thread): ls keeps its block only while it has bytes
 * left to stream and every stream's kept blocks stay under the cap. */
static void log_keep_or_drop(log_stream_t *ls)
{
    tf_logcache_t *c = &ls->cache;
    bool done = !c->len || ls->pos + ls->got >= c->offset + c->len ||
                ls->pos + ls->got >= ls->end;
    atomic_fetch_sub(&log_kept, ls->kept);
    ls->kept = 0;
    if (!done && atomic_fetch_add(&log_kept, c->len) + c->len <=
                     LOG_KEEP_MAX) {
        ls->kept = c->len;
        return;
    }
    if (!done)
        atomic_fetch_sub(&log_kept, c->len);
    tf_logcache_clear(c);
}

static void log_stream_free(void *arg)
{
    log_stream_t *ls = arg;
    if (!ls)
        return;
    atomic_fetch_sub(&log_kept, ls->kept);
    tf_logcache_clear(&ls->cache);
    free(ls->buf);
    free(ls);
}

static int log_size_fn(tf_db_t *db, void *arg)
{
    log_stream_t *ls = arg;
    return tf_q_log_size(db, ls->build_id, ls->step, &ls->size, &ls->lines,
                         &ls->removed_ms);
}

static int log_piece_fn(tf_db_t *db, void *arg)
{
    log_stream_t *ls = arg;
    ls->got = 0;
    if (!ls->buf && !(ls->buf = malloc(LOG_PIECE + 1)))
        return TF_ENOMEM;
    int rc = tf_q_log_read(db, ls->build_id, ls->step, ls->pos, ls->end,
                           LOG_PIECE, ls->buf, &ls->got, &ls->cache);
    log_keep_or_drop(ls);
    return rc;
}

static void log_piece_done(void *arg, int rc)
{
    log_stream_t *ls = arg;
    tf_http_req_t *r = ls->r;
    if (!tf_http_async_end(r))
        return; /* ls was freed with the request */
    if (rc) {
        tf_http_fail_stream(r);
        return;
    }
    ls->pos += ls->got;
    tf_http_feed_owned(r, ls->buf, ls->got, LOG_PIECE + 1);
    ls->buf = NULL;
}

static int log_pull(tf_http_req_t *r, void *arg)
{
    log_stream_t *ls = arg;
    if (ls->prefetched) {
        ls->prefetched = false;
        ls->pos += ls->got;
        tf_http_feed_owned(r, ls->buf, ls->got, LOG_PIECE + 1);
        ls->buf = NULL;
        return 0;
    }
    tf_http_async_begin(r);
    int rc = tf_store_read(r->m->store, log_piece_fn, log_piece_done, ls);
    if (rc)
        tf_http_async_end(r);
    return rc;
}

static void log_first_done(void *arg, int rc);

static void log_size_done(void *arg, int rc)
{
    log_stream_t *ls = arg;
    tf_http_req_t *r = ls->r;
    if (!tf_http_async_end(r)) {
        free(ls);
        return;
    }
    if (rc == TF_ENOENT) {
        tf_http_error(r, 404, "no such build or step");
        free(ls);
        return;
    }
    if (rc) {
        tf_http_error(r, 500, "database read failed");
        free(ls);
        return;
    }
    uint64_t start = 0, end = ls->size;
    int status = 200;
    char v[96];
    snprintf(v, sizeof(v), "%" PRIu64, ls->size);
    tf_http_header(r, "x-log-size", v);
    snprintf(v, sizeof(v), "%" PRIu64, ls->lines);
    tf_http_header(r, "x-log-lines", v);
    tf_http_header(r, "accept-ranges", "bytes");
    if (ls->removed_ms) {
        /* Not a failure: the builder's retention let it go (docs/api.md). */
        snprintf(v, sizeof(v), "%" PRId64, ls->removed_ms);
        tf_http_header(r, "x-log-removed-ms", v);
        tf_http_error(r, 410, "this log (%" PRIu64 " bytes, %" PRIu64
                      " lines) was removed by the builder's retention "
                      "policy; the build and its steps are kept",
                      ls->size, ls->lines);
        log_stream_free(ls);
        return;
    }
    const char *qs = tf_http_arg(r, "start"), *qe = tf_http_arg(r, "end");
    if (r->range[0]) {
        int pr = tf_range_parse(r->range, ls->size, &start, &end);
        if (pr == TF_RANGE_MALFORMED) {
            tf_http_error(r, 400, "malformed Range header \"%.60s\": expected "
                          "bytes=A-B, bytes=A- or bytes=-N", r->range);
            free(ls);
            return;
        }
        if (pr == TF_RANGE_UNSATISFIABLE) {
            snprintf(v, sizeof(v), "bytes */%" PRIu64, ls->size);
            tf_http_header(r, "content-range", v);
            tf_http_error(r, 416, "range not satisfiable: the log has %" PRIu64
                          " bytes", ls->size);
            free(ls);
            return;
        }
        status = 206;
    } else if (qs || qe) {
        if (!tf_http_arg_u64(r, "start", 0, UINT64_MAX / 2, 0, &start) ||
            !tf_http_arg_u64(r, "end", 0, UINT64_MAX / 2, ls->size, &end)) {
            free(ls);
            return;
        }
        if (end > ls->size)
            end = ls->size;
        if (start > end)
            start = end;
        status = 206;
    }
    if (status == 206 && ls->size > 0) {
        snprintf(v, sizeof(v), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, start,
                 end > start ? end - 1 : start, ls->size);
        tf_http_header(r, "content-range", v);
    }
    ls->pos = start;
    ls->end = end;
    ls->status = status;
    if (end == start) {
        tf_http_stream(r, status, "application/octet-stream", 0, log_pull,
                       ls, log_stream_free);
        return;
    }
    /* The first piece is read before answering, so a damaged block there
     * (the usual case of a tail or a small range) is a clean error. */
    if (!tf_api_read_then(r, log_piece_fn, log_first_done, ls))
        log_stream_free(ls);
}

static void log_first_done(void *arg, int rc)
{
    log_stream_t *ls = arg;
    tf_http_req_t *r = ls->r;
    if (!tf_http_async_end(r)) {
        log_stream_free(ls);
        return;
    }
    if (rc == TF_ECORRUPT) {
        tf_http_error(r, 500, "the stored log of build %" PRIu64 " step %u "
                      "is damaged at byte %" PRIu64 " (a corrupt compressed "
                      "block; the master's log says which): that range "
                      "cannot be read", ls->build_id, ls->step,
                      ls->pos + ls->got);
        log_stream_free(ls);
        return;
    }
    if (rc) {
        tf_http_error(r, 500, "database read failed: %s", tf_strerror(rc));
        log_stream_free(ls);
        return;
    }
    ls->prefetched = true;
    tf_http_stream(r, ls->status, "application/octet-stream",
                   ls->end - ls->pos, log_pull, ls, log_stream_free);
}

void tf_api_log(tf_http_req_t *r, const tf_route_args_t *a)
{
    uint64_t build_id = a->id, step = a->index;
    log_stream_t *ls = calloc(1, sizeof(*ls));
    if (!ls) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    ls->r = r;
    ls->build_id = build_id;
    ls->step = (unsigned)step;
    if (!tf_api_read_then(r, log_size_fn, log_size_done, ls))
        free(ls);
}

/* --- writes --- */

typedef struct wjob {
    tf_http_req_t *r;
    uint64_t id;
    char builder[TF_NAME_MAX + 1];
    bool again; /* a cancel of a request pending in the database only */
} wjob_t;

void tf_api_request_queued(tf_http_req_t *r, int rc, uint64_t id,
                           const char *builder, json_t *extra)
{
    if (rc) {
        json_decref(extra);
        tf_http_error(r, 500, "the request could not be stored: %s",
                      tf_strerror(rc));
        return;
    }
    tf_master_t *m = r->m;
    char url[600];
    snprintf(url, sizeof(url), "%sapi/v1/requests/%" PRIu64, base_url(m),
             id);
    tf_request_t *req = tf_map_get_id(m->requests, id);
    unsigned pos = req ? tf_sched_position(m, req) : 0;
    json_t *o = json_pack("{s:I,s:s,s:s}", "request_id", (json_int_t)id,
                          "builder", builder, "url", url);
    snprintf(url, sizeof(url), "%s#/builders/%s", base_url(m), builder);
    json_object_set_new(o, "page_url", json_string(url));
    json_object_set_new(o, "position", pos ? json_integer(pos) : json_null());
    if (extra)
        json_object_update(o, extra);
    json_decref(extra);
    tf_http_respond_json(r, 201, o);
}

static void force_committed(void *arg, int rc)
{
    wjob_t *w = arg;
    if (tf_http_async_end(w->r))
        tf_api_request_queued(w->r, rc, w->id, w->builder, NULL);
    free(w);
}

/* Validates an optional {"reason": S, "properties": {K: S}} body; the
 * properties must be ones the caller may set on builder cfg. */
static bool parse_force_body(tf_http_req_t *r, const tf_cfg_builder_t *cfg,
                             char **reason, char **props)
{
    *reason = NULL;
    *props = NULL;
    if (r->body.len == 0)
        return true;
    json_error_t e;
    json_t *j = json_loadb((const char *)r->body.data, r->body.len,
                           JSON_REJECT_DUPLICATES, &e);
    if (!j || !json_is_object(j)) {
        tf_http_error(r, 400, "body must be a JSON object: %s",
                      j ? "got another JSON type" : e.text);
        json_decref(j);
        return false;
    }
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v)
    {
        if (strcmp(key, "reason") != 0 && strcmp(key, "properties") != 0) {
            tf_http_error(r, 400, "unknown field \"%.64s\"", key);
            goto bad;
        }
    }
    json_t *jr = json_object_get(j, "reason");
    if (jr && (!json_is_string(jr) || json_string_length(jr) > 1024)) {
        tf_http_error(r, 400, "reason: expected a string of at most 1024 "
                      "bytes");
        goto bad;
    }
    json_t *jp = json_object_get(j, "properties");
    if (jp) {
        if (!json_is_object(jp)) {
            tf_http_error(r, 400, "properties: expected an object");
            goto bad;
        }
        json_object_foreach(jp, key, v)
        {
            if (!tf_name_valid(key) || !json_is_string(v) ||
                json_string_length(v) > 4096) {
                tf_http_error(r, 400, "properties.%.64s: names must be valid "
                              "and values strings of at most 4096 bytes",
                              key);
                goto bad;
            }
        }
        if (!tf_api_props_allowed(r, cfg, jp))
            goto bad;
        *props = json_dumps(jp, JSON_COMPACT | JSON_SORT_KEYS);
    }
    if (jr)
        *reason = strdup(json_string_value(jr));
    json_decref(j);
    return true;
bad:
    json_decref(j);
    return false;
}

void tf_api_force(tf_http_req_t *r, const tf_route_args_t *a)
{
    tf_master_t *m = r->m;
    const char *builder = a->name;
    const tf_cfg_builder_t *cfg = tf_config_builder(m->cfg, builder);
    if (!cfg) {
        tf_http_error(r, 404, "no builder named \"%s\"", builder);
        return;
    }
    if (!tf_api_may_force(r, cfg, "forcing"))
        return;
    char *reason = NULL, *props = NULL;
    if (!parse_force_body(r, cfg, &reason, &props))
        return;
    wjob_t *w = calloc(1, sizeof(*w));
    if (!w) {
        tf_http_error(r, 503, "out of memory");
        goto out;
    }
    w->r = r;
    snprintf(w->builder, sizeof(w->builder), "%s", builder);
    tf_http_async_begin(r);
    tf_reqspec_t spec = {
        .builder = builder,
        .reason = reason ? reason : "forced",
        .owner = r->user.email[0] ? r->user.email : "admin",
        .properties = props,
        .priority = cfg->priority,
    };
    int rc = tf_sched_request(m, &spec, &w->id, force_committed, w);
    if (rc) {
        tf_http_async_end(r);
        if (rc == TF_EFULL) /* shared masters: no block of ids ready */
            tf_http_error(r, 503, "cannot queue the request now: no ids "
                          "ready from the database; try again");
        else
            tf_http_error(r, 500, "cannot queue the request: %s",
                          tf_strerror(rc));
        free(w);
    }
out:
    free(reason);
    free(props);
}

static void request_cancel_elsewhere(tf_http_req_t *r, uint64_t id,
                                     bool again);

static void cancel_committed(void *arg, int rc)
{
    wjob_t *w = arg;
    tf_http_req_t *r = w->r;
    if (tf_http_async_end(r)) {
        if (rc == TF_ESTATE)
            /* Several masters: another master started (or ended) it
             * first; if it runs there, its build is cancelled there. */
            request_cancel_elsewhere(r, w->id, w->again);
        else if (rc)
            tf_http_error(r, 500, "the cancellation could not be stored");
        else
            tf_http_respond_json(r, 200,
                                 json_pack("{s:I,s:s}", "request_id",
                                           (json_int_t)w->id, "state",
                                           "cancelled"));
    }
    free(w);
}

/* --- several masters: cancelling what another master runs --- */

static int owned_run(tf_db_t *db, void *arg)
{
    tf_api_owned_t *c = arg;
    switch (c->kind) {
    case TF_API_OWNED_BUILD:
        return tf_q_build_owner(db, c->id, c->owner, sizeof(c->owner),
                                c->state, sizeof(c->state));
    case TF_API_OWNED_REQUEST:
        return tf_q_request_owner(db, c->id, c->owner, sizeof(c->owner),
                                  c->state, sizeof(c->state), &c->build_id,
                                  &c->job_id);
    case TF_API_OWNED_JOB:
        return tf_q_job_owner(db, c->id, c->owner, sizeof(c->owner),
                              c->state, sizeof(c->state));
    }
    return TF_EINVAL;
}

void tf_api_owned_read(tf_http_req_t *r, tf_api_owned_kind_t kind,
                       uint64_t id, bool again, tf_store_done_cb done)
{
    tf_api_owned_t *c = calloc(1, sizeof(*c));
    if (!c) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    c->r = r;
    c->kind = kind;
    c->id = id;
    c->again = again;
    if (!tf_api_read_then(r, owned_run, done, c))
        free(c);
}

/* A cancel of what another master runs, being stored: the 202 to give
 * once committed, the 409 when what it cancels has ended meanwhile. */
typedef struct cancel_answer {
    tf_http_req_t *r;
    uint64_t id;
    json_t *ans;
    char gone[96];
    char by[TF_EMAIL_MAX + 1];
    tf_api_cancel_then_fn then;
} cancel_answer_t;

static void cancel_stored(void *arg, int rc)
{
    cancel_answer_t *c = arg;
    tf_http_req_t *r = c->r;

    /* What this master does of the cancel is done whether or not the
     * client still waits. */
    if (rc == 0 && c->then)
        c->then(r->m, c->id, c->by);
    if (tf_http_async_end(r)) {
        if (rc == TF_ESTATE)
            tf_http_error(r, 409, "%s", c->gone);
        else if (rc)
            tf_http_error(r, 503, "the cancel could not be stored: %s; try "
                          "again", tf_strerror(rc));
        else {
            tf_http_respond_json(r, 202, c->ans);
            c->ans = NULL;
        }
    }
    json_decref(c->ans);
    free(c);
}

void tf_api_cancel_store(tf_http_req_t *r, const char *kind, uint64_t id,
                         const char *why, json_t *ans, const char *gone,
                         tf_api_cancel_then_fn then)
{
    cancel_answer_t *c = calloc(1, sizeof(*c));
    if (!c) {
        json_decref(ans);
        tf_http_error(r, 503, "out of memory");
        return;
    }
    c->r = r;
    c->id = id;
    c->ans = ans;
    c->then = then;
    snprintf(c->gone, sizeof(c->gone), "%s", gone);
    snprintf(c->by, sizeof(c->by), "%s",
             r->admin ? "the admin" : r->user.email);
    tf_http_async_begin(r);
    if (tf_master_cancel_elsewhere(r->m, kind, id, why, cancel_stored, c) !=
        0) {
        tf_http_async_end(r);
        tf_http_error(r, 503, "the cancel could not be stored now; try "
                      "again");
        json_decref(c->ans);
        free(c);
    }
}

/* Several masters: a build this master does not run may run on another.
 * Its owner and state come from the database; the cancel is stored
 * (tf_api_cancel_store), and the master running it aborts it on its
 * slave. */
static void build_owned(void *arg, int rc)
{
    tf_api_owned_t *c = arg;
    tf_http_req_t *r = c->r;
    char what[64];

    if (!tf_http_async_end(r))
        goto out;
    if (rc == TF_ENOENT || (rc == 0 && strcmp(c->state, "finished") == 0)) {
        tf_http_error(r, 409, "build %" PRIu64 " is not running", c->id);
        goto out;
    }
    if (rc) {
        tf_http_error(r, 500, "database read failed");
        goto out;
    }
    snprintf(what, sizeof(what), "build %" PRIu64, c->id);
    if (!tf_api_may_act(r, c->owner, what))
        goto out;
    char gone[64];
    snprintf(gone, sizeof(gone), "build %" PRIu64 " is not running", c->id);
    tf_api_cancel_store(r, "build", c->id, "cancelled through the API",
                        json_pack("{s:I,s:s}", "build_id", (json_int_t)c->id,
                                  "state", "cancelling"),
                        gone, NULL);
out:
    free(c);
}

void tf_api_build_cancel(tf_http_req_t *r, const tf_route_args_t *a)
{
    uint64_t id = a->id;
    tf_build_t *b = tf_map_get_id(r->m->builds, id);
    if (!b && tf_store_is_shared(r->m->store)) {
        tf_api_owned_read(r, TF_API_OWNED_BUILD, id, false, build_owned);
        return;
    }
    if (!b || b->state == TF_BUILD_ENDING) {
        tf_http_error(r, 409, "build %" PRIu64 " is not running", id);
        return;
    }
    char what[64];
    snprintf(what, sizeof(what), "build %" PRIu64, id);
    if (!tf_api_may_act(r, b->request ? b->request->owner : NULL, what))
        return;
    int rc = tf_build_cancel(r->m, id, "cancelled through the API");
    if (rc == TF_ENOENT) {
        tf_http_error(r, 409, "build %" PRIu64 " is not running", id);
        return;
    }
    tf_http_respond_json(r, 202, json_pack("{s:I,s:s}", "build_id",
                                           (json_int_t)id, "state",
                                           "cancelling"));
}

/* Several masters: a request running on another master has its build
 * cancelled there (tf_api_cancel_store), as a build's cancel. */
static void request_owned(void *arg, int rc)
{
    tf_api_owned_t *c = arg;
    tf_http_req_t *r = c->r;
    char what[64];

    if (!tf_http_async_end(r))
        goto out;
    /* Pending in the database, not here because this master lost its
     * claim lately and backs off: the guarded cancel (pending only) is
     * stored from here; a job's request is left to a master that holds
     * it (its job settles there). Tried once: pending again after that,
     * another master is claiming it right now. (A request this master
     * has not loaded yet answers 409 as before.) */
    if (rc == 0 && strcmp(c->state, "pending") == 0 && !c->job_id &&
        tf_master_claim_held_back(r->m, c->id)) {
        snprintf(what, sizeof(what), "request %" PRIu64, c->id);
        if (!tf_api_may_act(r, c->owner, what))
            goto out;
        if (c->again) {
            tf_http_error(r, 409, "request %" PRIu64 " is being started "
                          "by another master; try again", c->id);
            goto out;
        }
        wjob_t *w = calloc(1, sizeof(*w));
        if (!w) {
            tf_http_error(r, 503, "out of memory");
            goto out;
        }
        w->r = r;
        w->id = c->id;
        w->again = true;
        tf_http_async_begin(r);
        tf_master_group_begin(r->m, 0);
        tf_op_request_cancel(r->m->group, c->id, TF_CANCELLED, tf_now_ms());
        tf_master_group_commit(r->m, cancel_committed, w);
        tf_info("api", "request %" PRIu64 " (pending in the database, not "
                "queued here) cancelled", c->id);
        goto out;
    }
    if (rc == TF_ENOENT || (rc == 0 && (strcmp(c->state, "running") != 0 ||
                                        !c->build_id))) {
        tf_http_error(r, 409, "request %" PRIu64 " is not pending or running",
                      c->id);
        goto out;
    }
    if (rc) {
        tf_http_error(r, 500, "database read failed");
        goto out;
    }
    snprintf(what, sizeof(what), "request %" PRIu64, c->id);
    if (!tf_api_may_act(r, c->owner, what))
        goto out;
    char gone[64];
    snprintf(gone, sizeof(gone), "request %" PRIu64 " is not pending or "
             "running", c->id);
    tf_api_cancel_store(r, "build", c->build_id, "cancelled through the API",
                        json_pack("{s:I,s:I,s:s}", "request_id",
                                  (json_int_t)c->id, "build_id",
                                  (json_int_t)c->build_id, "state",
                                  "cancelling"),
                        gone, NULL);
out:
    free(c);
}

static void request_cancel_elsewhere(tf_http_req_t *r, uint64_t id,
                                     bool again)
{
    tf_api_owned_read(r, TF_API_OWNED_REQUEST, id, again, request_owned);
}

void tf_api_request_cancel(tf_http_req_t *r, const tf_route_args_t *a)
{
    tf_master_t *m = r->m;
    uint64_t id = a->id;
    tf_request_t *req = tf_map_get_id(m->requests, id);
    if (!req && tf_store_is_shared(m->store)) {
        request_cancel_elsewhere(r, id, false);
        return;
    }
    if (!req) {
        tf_http_error(r, 409, "request %" PRIu64 " is not pending or running",
                      id);
        return;
    }
    char what[64];
    snprintf(what, sizeof(what), "request %" PRIu64, id);
    if (!tf_api_may_act(r, req->owner, what))
        return;
    if (req->state == TF_REQ_RUNNING && req->build) {
        /* The cancel may end the build (and free req) at once: a build
         * whose build_start has not gone out yet. */
        uint64_t bid = req->build->id;
        tf_build_cancel(m, bid, "cancelled through the API");
        tf_http_respond_json(r, 202,
                             json_pack("{s:I,s:I,s:s}", "request_id",
                                       (json_int_t)id, "build_id",
                                       (json_int_t)bid, "state",
                                       "cancelling"));
        return;
    }
    wjob_t *w = calloc(1, sizeof(*w));
    if (!w) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    w->r = r;
    w->id = id;
    /* The answer waits for the commit. */
    tf_http_async_begin(r);
    tf_sched_cancel_pending(m, req, cancel_committed, w);
}

/* --- small endpoints answered from memory --- */

void tf_api_index(tf_http_req_t *r, const tf_route_args_t *a)
{
    tf_master_t *m = r->m;
    size_t n;
    const tf_route_t *routes = tf_api_routes(&n);
    json_t *eps = json_array();
    for (size_t i = 0; i < n; i++) {
        char e[160];
        /* The index is the API's: the badge lives beside it. */
        if (strncmp(routes[i].path, "/api/", 5) != 0 &&
            strcmp(routes[i].path, "/api/v1") != 0)
            continue;
        snprintf(e, sizeof(e), "%s %s",
                 routes[i].method == TF_HTTP_POST ? "POST" : "GET",
                 routes[i].path);
        json_array_append_new(eps, json_string(e));
    }
    json_array_append_new(eps, json_string("WEBSOCKET /live (subprotocol "
                                           "testfarm-live)"));
    json_t *o = json_pack("{s:s,s:s,s:s,s:o}", "name", m->cfg->name,
                          "version", TF_VERSION, "url", base_url(m),
                          "endpoints", eps);
    tf_http_respond_json(r, 200, o);
}

void tf_api_master(tf_http_req_t *r, const tf_route_args_t *a)
{
    tf_master_t *m = r->m;
    tf_store_health_t h;
    tf_store_health(m->store, &h);
    unsigned connected = 0, running = 0, pending = 0;
    size_t pos = 0;
    void *v;
    while (tf_map_next(m->slaves, &pos, NULL, NULL, &v) == 0)
        connected += ((tf_mslave_t *)v)->link != NULL;
    pos = 0;
    while (tf_map_next(m->builds, &pos, NULL, NULL, &v) == 0)
        running += ((tf_build_t *)v)->state != TF_BUILD_ENDING;
    pos = 0;
    while (tf_map_next(m->requests, &pos, NULL, NULL, &v) == 0)
        pending += ((tf_request_t *)v)->state == TF_REQ_PENDING;
    json_t *store = json_pack(
        "{s:I,s:I,s:b,s:I,s:I,s:I,s:s}", "queued_ops",
        (json_int_t)h.queued_ops, "queued_bytes", (json_int_t)h.queued_bytes,
        "congested", h.congested, "batches", (json_int_t)h.batches, "ops",
        (json_int_t)h.ops, "failing_for_ms", (json_int_t)h.failing_for_ms,
        "last_error", h.last_error);
    json_object_set_new(store, "schema_version",
                        json_integer(tf_store_schema_version(m->store)));
    const tf_net_stats_t *ns = &m->net_stats;
    json_t *net = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "connections",
        (json_int_t)ns->connections, "http_requests",
        (json_int_t)ns->http_requests, "uploads", (json_int_t)ns->uploads,
        "preauth_bytes", (json_int_t)ns->preauth_bytes, "refused",
        (json_int_t)ns->refused, "evicted", (json_int_t)ns->evicted,
        "live_viewers", (json_int_t)ns->live_viewers, "live_bytes",
        (json_int_t)ns->live_bytes, "live_dropped",
        (json_int_t)ns->live_dropped, "live_followed",
        (json_int_t)ns->live_followed, "live_follow_reads",
        (json_int_t)ns->live_follow_reads);
    json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:i,s:i,s:i,s:o,s:o}", "name",
                          m->cfg->name, "version", TF_VERSION, "url",
                          base_url(m), "time_ms", (json_int_t)tf_now_ms(),
                          "slaves_connected", (int)connected, "builds_running",
                          (int)running, "requests_pending", (int)pending,
                          "store", store, "net", net);
    json_object_set_new(o, "farm", json_string(m->farm));
    if (tf_store_is_shared(m->store)) {
        tf_store_farm_stats_t fs;
        tf_store_farm_stats(m->store, &fs);
        json_object_set_new(
            o, "relay",
            json_pack("{s:I,s:I,s:I,s:I,s:I}", "sent", (json_int_t)fs.sent,
                      "notifies", (json_int_t)fs.notifies, "received",
                      (json_int_t)fs.received, "dropped_out",
                      (json_int_t)fs.dropped_out, "dropped_in",
                      (json_int_t)fs.dropped_in));
    }
    tf_api_cache_stats_t cs;
    tf_api_cache_stats(r->m, &cs);
    json_object_set_new(
        o, "cache",
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "hits",
                  (json_int_t)cs.hits, "misses", (json_int_t)cs.misses,
                  "not_modified", (json_int_t)cs.not_modified, "stored",
                  (json_int_t)cs.stored, "stale", (json_int_t)cs.stale,
                  "entries",
                  (json_int_t)cs.entries, "bytes", (json_int_t)cs.bytes));
    tf_http_respond_json(r, 200, o);
}

/* GET /api/v1/requests pages (docs/api.md): a page of at most limit rows
 * from offset of the queue as it is now; only the page's rows are
 * rendered, the rest only counted, so a long queue costs a walk, not its
 * JSON. */
#define REQUESTS_LIMIT_DEFAULT 5000
#define REQUESTS_LIMIT_MAX 5000

typedef struct req_page {
    uint64_t offset, limit, total;
    json_t *rows;
} req_page_t;

static void req_page_add(tf_master_t *m, req_page_t *pg,
                         const tf_request_t *req, unsigned pos)
{
    if (pg->total++ < pg->offset || json_array_size(pg->rows) >= pg->limit)
        return;
    json_array_append_new(pg->rows, request_json(m, req, pos));
}

/* Whether farm (tf_q_farm_running's rows, by id) has request id: a
 * binary search, the rows being few (one per running build). */
static bool farm_running_has(const json_t *farm, uint64_t id)
{
    size_t lo = 0, hi = json_array_size(farm);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t v = (uint64_t)json_integer_value(
            json_array_get(json_array_get(farm, mid), 0));
        if (v == id)
            return true;
        if (v < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* The queue's answer (docs/api.md): the pending requests this master
 * holds in queue order per builder, then the running ones: its own from
 * memory, and on a shared master those of the whole farm as the
 * database has them (farm: tf_q_farm_running's rows, read in one
 * snapshot; NULL when not shared). A pending copy of a request the
 * database has running elsewhere is left out (it is being dropped,
 * core/master.c); a request this master runs is rendered from memory,
 * the same whether or not its claim has committed yet. */
static void requests_answer(tf_http_req_t *r, const char *builder,
                            const char *kind, req_page_t *pg,
                            const json_t *farm)
{
    tf_master_t *m = r->m;
    size_t pos = 0, i;
    void *v;
    json_t *row;
    pg->rows = json_array();
    /* Pending in queue order per builder, then running. */
    while (tf_map_next(m->builders, &pos, NULL, NULL, &v) == 0) {
        tf_mbuilder_t *mb = v;
        if (builder && strcmp(mb->name, builder) != 0)
            continue;
        tf_list_t *it;
        unsigned place = 0;
        /* The pending list is kept in the order the scheduler picks. */
        tf_list_foreach(it, &mb->pending)
        {
            tf_request_t *req = tf_list_entry(it, tf_request_t, node);
            place++;
            if (kind && strcmp(kind, tf_request_is_try(req) ? "try" : "ci"))
                continue;
            if (farm && farm_running_has(farm, req->id))
                continue;
            req_page_add(m, pg, req, place);
        }
    }
    json_array_foreach(farm, i, row)
    {
        uint64_t id = (uint64_t)json_integer_value(json_array_get(row, 0));
        tf_request_t *req = tf_map_get_id(m->requests, id);
        if (req && req->state == TF_REQ_RUNNING) {
            if (!kind ||
                !strcmp(kind, tf_request_is_try(req) ? "try" : "ci"))
                req_page_add(m, pg, req, 0);
            continue;
        }
        req_fields_t f = {
            .id = id,
            .builder = json_string_value(json_array_get(row, 1)),
            .reason = json_string_value(json_array_get(row, 2)),
            .owner = json_string_value(json_array_get(row, 3)),
            .priority = (int)json_integer_value(json_array_get(row, 4)),
            .submitted_ms = json_integer_value(json_array_get(row, 5)),
            .retries = (unsigned)json_integer_value(json_array_get(row, 6)),
            .build_id = (uint64_t)json_integer_value(json_array_get(row, 7)),
            .job_id = (uint64_t)json_integer_value(json_array_get(row, 8)),
            .is_try = json_is_true(json_array_get(row, 9)),
        };
        if (!f.builder ||
            (kind && strcmp(kind, f.is_try ? "try" : "ci")))
            continue;
        if (pg->total++ < pg->offset || json_array_size(pg->rows) >= pg->limit)
            continue;
        json_array_append_new(pg->rows, request_fields_json(m, &f, 0));
    }
    pos = 0;
    while (tf_map_next(m->requests, &pos, NULL, NULL, &v) == 0) {
        tf_request_t *req = v;
        if (req->state != TF_REQ_RUNNING)
            continue;
        if (builder && strcmp(req->builder, builder) != 0)
            continue;
        if (kind && strcmp(kind, tf_request_is_try(req) ? "try" : "ci"))
            continue;
        if (farm && farm_running_has(farm, req->id))
            continue; /* listed with the farm's, above */
        req_page_add(m, pg, req, 0);
    }
    uint64_t next = pg->offset + json_array_size(pg->rows);
    json_t *o = json_pack("{s:o,s:I}", "requests", pg->rows, "total",
                          (json_int_t)pg->total);
    pg->rows = NULL;
    json_object_set_new(o, "next_offset",
                        next < pg->total ? json_integer((json_int_t)next)
                                         : json_null());
    tf_http_respond_json(r, 200, o);
}

/* A shared master's queue: the farm's running requests, read off the
 * loop thread. */
typedef struct req_list {
    tf_http_req_t *r;
    char builder[TF_NAME_MAX + 1]; /* "": every builder */
    const char *kind;              /* static string or NULL */
    req_page_t pg;
    json_t *farm;
} req_list_t;

static int req_list_run(tf_db_t *db, void *arg)
{
    req_list_t *l = arg;
    return tf_q_farm_running(db, l->builder[0] ? l->builder : NULL,
                             &l->farm);
}

static void req_list_done(void *arg, int rc)
{
    req_list_t *l = arg;
    tf_http_req_t *r = l->r;
    if (!tf_http_async_end(r))
        goto out;
    if (rc || !l->farm) {
        tf_http_error(r, 500, "database read failed: %s", tf_strerror(rc));
        goto out;
    }
    requests_answer(r, l->builder[0] ? l->builder : NULL, l->kind, &l->pg,
                    l->farm);
out:
    json_decref(l->farm);
    free(l);
}

void tf_api_requests(tf_http_req_t *r, const tf_route_args_t *a)
{
    tf_master_t *m = r->m;
    const char *builder = tf_http_arg(r, "builder");
    const char *kind = NULL;
    req_page_t pg = {0};
    if (builder && !check_name(r, builder, "builder"))
        return;
    if (!tf_api_arg_kind(r, &kind) ||
        !tf_http_arg_u64(r, "limit", 1, REQUESTS_LIMIT_MAX,
                         REQUESTS_LIMIT_DEFAULT, &pg.limit) ||
        !tf_http_arg_u64(r, "offset", 0, UINT32_MAX, 0, &pg.offset))
        return;
    if (!tf_store_is_shared(m->store)) {
        requests_answer(r, builder, kind, &pg, NULL);
        return;
    }
    req_list_t *l = calloc(1, sizeof(*l));
    if (!l) {
        tf_http_error(r, 503, "out of memory");
        return;
    }
    l->r = r;
    l->kind = kind;
    l->pg = pg;
    if (builder)
        snprintf(l->builder, sizeof(l->builder), "%s", builder);
    if (!tf_api_read_then(r, req_list_run, req_list_done, l))
        free(l);
}

/* --- reads through the store --- */

void tf_api_builders(tf_http_req_t *r, const tf_route_args_t *a)
{
    if (tf_api_cache_answer(r))
        return;
    start_query(r, Q_BUILDERS, NULL, 0);
}

void tf_api_builder(tf_http_req_t *r, const tf_route_args_t *a)
{
    if (tf_api_cache_answer(r))
        return;
    start_query(r, Q_BUILDER, a->name, 0);
}

void tf_api_builder_builds(tf_http_req_t *r, const tf_route_args_t *a)
{
    if (tf_api_cache_answer(r))
        return;
    start_query(r, Q_BUILDS, a->name, 0);
}

void tf_api_build_by_number(tf_http_req_t *r, const tf_route_args_t *a)
{
    start_query(r, Q_BUILD_BY_NUMBER, a->name, a->number);
}

void tf_api_builder_stats(tf_http_req_t *r, const tf_route_args_t *a)
{
    start_query(r, Q_BUILDER_STATS, a->name, 0);
}

void tf_api_build(tf_http_req_t *r, const tf_route_args_t *a)
{
    if (tf_api_cache_answer(r))
        return;
    start_query(r, Q_BUILD, NULL, a->id);
}

void tf_api_slaves(tf_http_req_t *r, const tf_route_args_t *a)
{
    start_query(r, Q_SLAVES, NULL, 0);
}

void tf_api_slave(tf_http_req_t *r, const tf_route_args_t *a)
{
    start_query(r, Q_SLAVE, a->name, 0);
}

void tf_api_request(tf_http_req_t *r, const tf_route_args_t *a)
{
    start_query(r, Q_REQUEST, NULL, a->id);
}
