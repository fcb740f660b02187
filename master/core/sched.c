/*
 * sched.c - which pending build request runs next, and on which slave.
 *
 * Order of pending requests (ARCHITECTURE.md, "Life of a try job", 3):
 *   1. priority, higher first;
 *   2. fair share between owners: start-time fair queueing. Each request
 *      gets a tag when queued: max(virtual time, the owner's last tag) + 1,
 *      and the virtual time moves to the tag of each request that starts.
 *      An owner who queues twenty requests gets tags 1..20; another who
 *      queues one a moment later gets a tag just above the current virtual
 *      time, so it runs after at most one more of the first owner's;
 *   3. age (request id), older first.
 * Each builder keeps its pending requests sorted by that key, so its head is
 * its best. A pass repeatedly takes the best head among builders some idle
 * slave may run, and gives it to an allowed idle slave, preferring the one
 * that built that builder last (its checkout is warm).
 *
 * Passes are deferred to the end of the loop turn (uv_idle started on
 * demand), so a burst of events costs one pass.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "core/jobs.h"
#include "net/live.h"
#include "log.h"
#include "core/master.h"
#include "tf_err.h"

void tf_request_free(tf_request_t *r)
{
    if (!r)
        return;
    free(r->reason);
    free(r->owner);
    free(r->properties);
    free(r->tests);
    free(r->revision);
    free(r->scheduler);
    free(r->changes);
    free(r);
}

tf_request_t *tf_request_make(const tf_reqspec_t *spec, uint64_t id,
                              int64_t submitted_ms)
{
    tf_request_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->id = id;
    snprintf(r->builder, sizeof(r->builder), "%s", spec->builder);
    r->reason = spec->reason ? strdup(spec->reason) : NULL;
    r->owner = strdup(spec->owner ? spec->owner : "");
    r->properties = strdup(spec->properties ? spec->properties : "{}");
    r->tests = strdup(spec->tests ? spec->tests : "[]");
    r->revision = spec->revision ? strdup(spec->revision) : NULL;
    r->priority = spec->priority;
    r->job_id = spec->job_id;
    if (spec->patch_sha256)
        snprintf(r->patch_sha256, sizeof(r->patch_sha256), "%s",
                 spec->patch_sha256);
    r->patch_size = spec->patch_size;
    r->submitted_ms = submitted_ms;
    tf_list_init(&r->node);
    r->scheduler = spec->scheduler ? strdup(spec->scheduler) : NULL;
    if (spec->nchanges) {
        r->changes = malloc(spec->nchanges * sizeof(*r->changes));
        if (r->changes) {
            memcpy(r->changes, spec->changes,
                   spec->nchanges * sizeof(*r->changes));
            r->nchanges = spec->nchanges;
        }
    }
    if ((spec->reason && !r->reason) || !r->owner || !r->properties ||
        !r->tests || (spec->revision && !r->revision) ||
        (spec->scheduler && !r->scheduler) ||
        (spec->nchanges && !r->changes)) {
        tf_request_free(r);
        return NULL;
    }
    return r;
}

void tf_request_write(tf_master_t *m, const tf_request_t *r)
{
    tf_sqlval_t v[] = {
        tf_sql_int((int64_t)r->id),
        tf_sql_text(r->builder),
        tf_sql_text(r->reason),
        tf_sql_text(r->owner),
        tf_sql_int(r->priority),
        tf_sql_int(r->submitted_ms),
        tf_sql_text(r->properties),
        r->job_id ? tf_sql_int((int64_t)r->job_id) : tf_sql_null(),
        tf_sql_text(r->tests),
        tf_sql_text(r->revision),
        tf_sql_text(r->patch_sha256[0] ? r->patch_sha256 : NULL),
        r->patch_sha256[0] ? tf_sql_int((int64_t)r->patch_size)
                           : tf_sql_null(),
    };
    tf_master_write(m,
                    "INSERT INTO build_requests(id, builder, state, reason, "
                    "owner, priority, submitted_ms, properties, job_id, "
                    "tests, revision, patch_sha256, patch_size) "
                    "VALUES(?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
                    "?10, ?11, ?12)",
                    v, 12, NULL, NULL);
    if (r->scheduler) {
        tf_sqlval_t sv[] = {tf_sql_text(r->scheduler),
                            tf_sql_int((int64_t)r->id)};
        tf_master_write(m,
                        "UPDATE build_requests SET scheduler = ?1 "
                        "WHERE id = ?2",
                        sv, 2, NULL, NULL);
    }
    for (size_t i = 0; i < r->nchanges; i++) {
        tf_sqlval_t cv[] = {tf_sql_int((int64_t)r->id),
                            tf_sql_int((int64_t)r->changes[i])};
        tf_master_write(m,
                        "INSERT OR IGNORE INTO request_changes(request_id, "
                        "change_id) VALUES(?1, ?2)",
                        cv, 2, NULL, NULL);
    }
}

int tf_sched_adopt(tf_master_t *m, tf_request_t *r)
{
    if (tf_map_put_id(m->requests, r->id, r) != 0)
        return TF_ENOMEM;
    tf_sched_enqueue(m, r);
    tf_live_request(m, r, "queued");
    return 0;
}

/* Negative when a should run before b. */
static int req_cmp(const tf_request_t *a, const tf_request_t *b)
{
    if (a->priority != b->priority)
        return a->priority > b->priority ? -1 : 1;
    if (a->fair_tag != b->fair_tag)
        return a->fair_tag < b->fair_tag ? -1 : 1;
    if (a->id != b->id)
        return a->id < b->id ? -1 : 1;
    return 0;
}

static uint64_t fair_tag_for(tf_master_t *m, const char *owner)
{
    if (!m->cfg->fair_share)
        return 0; /* priority, then age */
    const char *key = owner && *owner ? owner : "";
    uintptr_t last = (uintptr_t)tf_map_get_str(m->fair_last, key);
    uint64_t tag = (m->fair_vtime > last ? m->fair_vtime : last) + 1;
    tf_map_put_str(m->fair_last, key, (void *)(uintptr_t)tag);
    return tag;
}

void tf_sched_enqueue(tf_master_t *m, tf_request_t *r)
{
    tf_mbuilder_t *mb = tf_master_builder(m, r->builder, true);
    if (!mb)
        return;
    if (r->fair_tag == 0)
        r->fair_tag = fair_tag_for(m, r->owner);
    r->state = TF_REQ_PENDING;
    /* Insert sorted; scan from the tail since new requests usually sort
     * last. */
    tf_list_t *it = mb->pending.prev;
    while (it != &mb->pending) {
        tf_request_t *o = tf_list_entry(it, tf_request_t, node);
        if (req_cmp(o, r) <= 0)
            break;
        it = it->prev;
    }
    tf_list_insert_before(it->next, &r->node);
    mb->npending++;
    tf_sched_kick(m);
}

unsigned tf_sched_position(tf_master_t *m, const tf_request_t *r)
{
    if (r->state != TF_REQ_PENDING)
        return 0;
    tf_mbuilder_t *mb = tf_master_builder(m, r->builder, false);
    if (!mb)
        return 0;
    unsigned pos = 0;
    tf_list_t *it;
    tf_list_foreach(it, &mb->pending)
    {
        pos++;
        if (tf_list_entry(it, tf_request_t, node) == r)
            return pos;
    }
    return 0;
}

static uint32_t slave_capacity(const tf_mslave_t *s)
{
    uint32_t cap = s->cfg ? s->cfg->max_builds : 0;
    if (s->hello_max_builds && s->hello_max_builds < cap)
        cap = s->hello_max_builds;
    return cap;
}

bool tf_sched_slave_has_room(const tf_mslave_t *s)
{
    return s->link && s->cfg && !s->draining && s->nbuilds < slave_capacity(s);
}

typedef struct idle_slave {
    tf_mslave_t *s;
} idle_slave_t;

/* Picks the idle slave for builder mb: the one that built it last (its
 * checkout is warm) if it is idle. */
static tf_mslave_t *pick_slave(tf_mbuilder_t *mb, idle_slave_t *idle,
                               size_t nidle)
{
    tf_mslave_t *first = NULL;
    for (size_t i = 0; i < nidle; i++) {
        tf_mslave_t *s = idle[i].s;
        if (!s || !tf_config_slave_allowed(mb->cfg, s->cfg))
            continue;
        if (strcmp(s->name, mb->last_slave) == 0)
            return s;
        if (!first)
            first = s;
    }
    return first;
}

static void sched_pass(tf_master_t *m)
{
    size_t nslaves = tf_map_count(m->slaves);
    size_t nbuilders = tf_map_count(m->builders);
    if (!nslaves || !nbuilders)
        return;
    idle_slave_t *idle = calloc(nslaves, sizeof(*idle));
    tf_mbuilder_t **heads = calloc(nbuilders, sizeof(*heads));
    if (!idle || !heads)
        goto out;
    for (;;) {
        size_t nidle = 0, nheads = 0, pos = 0;
        void *v;
        while (tf_map_next(m->slaves, &pos, NULL, NULL, &v) == 0)
            if (tf_sched_slave_has_room(v))
                idle[nidle++].s = v;
        if (!nidle)
            break;
        pos = 0;
        while (tf_map_next(m->builders, &pos, NULL, NULL, &v) == 0) {
            tf_mbuilder_t *mb = v;
            if (mb->cfg && !tf_list_empty(&mb->pending))
                heads[nheads++] = mb;
        }
        if (!nheads)
            break;
        /* Best head first: a selection is enough, we take one per round. */
        bool started = false;
        while (nheads > 0 && !started) {
            size_t best = 0;
            for (size_t i = 1; i < nheads; i++) {
                tf_request_t *a = tf_list_entry(heads[i]->pending.next,
                                                tf_request_t, node);
                tf_request_t *b = tf_list_entry(heads[best]->pending.next,
                                                tf_request_t, node);
                if (req_cmp(a, b) < 0)
                    best = i;
            }
            tf_mbuilder_t *mb = heads[best];
            tf_mslave_t *s = pick_slave(mb, idle, nidle);
            if (!s) {
                heads[best] = heads[--nheads];
                continue;
            }
            tf_request_t *r = tf_list_entry(mb->pending.next, tf_request_t,
                                            node);
            uint64_t tag = r->fair_tag;
            /* 0 also when build_start could not be encoded for r: it has
             * then ended as EXCEPTION and left the queue, so the pass goes
             * on to the next request at once (the slave is still idle). */
            if (tf_build_start(m, r, s) == 0) {
                if (tag > m->fair_vtime)
                    m->fair_vtime = tag;
                started = true;
            } else {
                /* Cannot start it now (out of memory, builder gone): leave
                 * it queued and try the others. */
                heads[best] = heads[--nheads];
            }
        }
        if (!started)
            break;
    }
out:
    free(idle);
    free(heads);
}

static void turn_cb(uv_idle_t *h)
{
    tf_master_t *m = h->data;
    uv_idle_stop(h);
    if (m->sched_wanted && !m->stopping) {
        m->sched_wanted = false;
        sched_pass(m);
    }
    tf_build_flush_acks(m);
}

void tf_sched_defer(tf_master_t *m)
{
    if (!uv_is_active((uv_handle_t *)&m->sched_idle))
        uv_idle_start(&m->sched_idle, turn_cb);
}

void tf_sched_kick(tf_master_t *m)
{
    m->sched_wanted = true;
    tf_sched_defer(m);
}

static void builder_pending_write(tf_master_t *m, const tf_mbuilder_t *mb)
{
    tf_sqlval_t bv[] = {tf_sql_int(mb->npending), tf_sql_text(mb->name)};
    tf_master_write(m, "UPDATE builders SET pending = ?1 WHERE name = ?2", bv,
                    2, NULL, NULL);
}

/* Adds the change ids of o that r lacks to r. Returns 0 or TF_ENOMEM. */
static int changes_merge(tf_request_t *r, const tf_request_t *o)
{
    size_t n = r->nchanges;
    uint64_t *v = realloc(r->changes,
                          (n + o->nchanges + 1) * sizeof(*v));
    if (!v)
        return TF_ENOMEM;
    r->changes = v;
    for (size_t i = 0; i < o->nchanges; i++) {
        bool have = false;
        for (size_t k = 0; k < n && !have; k++)
            have = v[k] == o->changes[i];
        if (!have)
            v[r->nchanges++] = o->changes[i];
    }
    return 0;
}

/* Collapsing (builder's collapse_requests): the pending continuous
 * requests of r's builder are superseded by r, which is for a newer
 * revision. Each becomes 'collapsed' (collapsed_into = r) and hands its
 * changes to r, in memory and in storage, so the blamelist of the build
 * that runs r is whole. r takes the best queue place among them, so a
 * steady stream of commits cannot starve the builder. Runs inside
 * tf_sched_request's write group, before r is queued. */
static void collapse_into(tf_master_t *m, tf_mbuilder_t *mb, tf_request_t *r)
{
    tf_list_t *it, *tmp;
    int64_t now = tf_now_ms();
    tf_list_foreach_safe(it, tmp, &mb->pending)
    {
        tf_request_t *o = tf_list_entry(it, tf_request_t, node);
        if (!o->scheduler || o->job_id || o->patch_sha256[0] || o == r)
            continue;
        if (changes_merge(r, o) != 0)
            continue; /* out of memory: leave it queued, nothing lost */
        if (o->fair_tag && (!r->fair_tag || o->fair_tag < r->fair_tag))
            r->fair_tag = o->fair_tag;
        if (o->priority > r->priority)
            r->priority = o->priority;
        tf_list_unlink(&o->node);
        mb->npending--;
        tf_map_del_id(m->requests, o->id);
        tf_sqlval_t v[] = {tf_sql_int((int64_t)r->id), tf_sql_int(now),
                           tf_sql_int((int64_t)o->id)};
        tf_master_write(m,
                        "UPDATE build_requests SET state = 'collapsed', "
                        "collapsed_into = ?1, finished_ms = ?2 WHERE id = ?3",
                        v, 3, NULL, NULL);
        tf_sqlval_t cv[] = {tf_sql_int((int64_t)r->id),
                            tf_sql_int((int64_t)o->id)};
        tf_master_write(m,
                        "INSERT OR IGNORE INTO request_changes(request_id, "
                        "change_id) SELECT ?1, change_id FROM "
                        "request_changes WHERE request_id = ?2",
                        cv, 2, NULL, NULL);
        tf_info("sched", "request %" PRIu64 " for %s collapsed into %" PRIu64
                " (a newer revision)", o->id, o->builder, r->id);
        tf_live_request(m, o, "collapsed");
        tf_request_free(o);
    }
}

int tf_sched_request(tf_master_t *m, const tf_reqspec_t *spec,
                     uint64_t *id_out, tf_store_done_cb cb, void *arg)
{
    tf_mbuilder_t *mb = tf_master_builder(m, spec->builder, false);
    if (!mb || !mb->cfg)
        return TF_ENOENT;
    tf_request_t *r = tf_request_make(spec, m->next_request_id, tf_now_ms());
    if (!r)
        return TF_ENOMEM;
    if (tf_map_put_id(m->requests, r->id, r) != 0) {
        tf_request_free(r);
        return TF_ENOMEM;
    }
    m->next_request_id++;
    tf_master_group_begin(m);
    if (r->scheduler && mb->cfg->collapse_requests)
        collapse_into(m, mb, r);
    tf_request_write(m, r);
    tf_sched_enqueue(m, r);
    builder_pending_write(m, mb);
    if (id_out)
        *id_out = r->id;
    if (tf_master_group_commit(m, cb, arg) != 0) {
        /* Not stored (cb has been told): it must not run either. */
        tf_list_unlink(&r->node);
        mb->npending--;
        tf_map_del_id(m->requests, r->id);
        tf_request_free(r);
        return 0;
    }
    tf_live_request(m, r, "queued");
    tf_info("sched", "request %" PRIu64 " for %s queued (%s)", *id_out,
            spec->builder, spec->reason ? spec->reason : "no reason given");
    return 0;
}

void tf_sched_cancel_pending(tf_master_t *m, tf_request_t *r,
                             tf_store_done_cb cb, void *arg)
{
    tf_mbuilder_t *mb = tf_master_builder(m, r->builder, false);
    tf_list_unlink(&r->node);
    if (mb && mb->npending)
        mb->npending--;
    tf_map_del_id(m->requests, r->id);
    tf_master_group_begin(m);
    tf_sqlval_t v[] = {tf_sql_int(TF_CANCELLED), tf_sql_int(tf_now_ms()),
                       tf_sql_int((int64_t)r->id)};
    tf_master_write(m,
                    "UPDATE build_requests SET state = 'cancelled', "
                    "result = ?1, finished_ms = ?2 WHERE id = ?3",
                    v, 3, NULL, NULL);
    if (mb)
        builder_pending_write(m, mb);
    if (r->job_id)
        tf_job_request_done(m, r->job_id, TF_CANCELLED);
    tf_master_group_commit(m, cb, arg);
    tf_info("sched", "request %" PRIu64 " for %s cancelled before it started",
            r->id, r->builder);
    tf_live_request(m, r, "cancelled");
    tf_request_free(r);
}
