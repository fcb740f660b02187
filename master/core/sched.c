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
 *
 * A request's life, changed only by tf_request_set_state (which logs and
 * asserts the move):
 *
 *   NEW --queued--> PENDING --its build starts--> RUNNING --build ended--> DONE
 *    |                 ^  |                          |
 *    |                 |  +--cancelled, collapsed--> DONE
 *    |                 +------a retry, the build's rows not stored,
 *    |                        its build lost in a restart
 *    +--restored running (its build is attached)--> RUNNING
 *
 * DONE is the last moment of the object: it is freed right after.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "core/jobs.h"
#include "log.h"
#include "core/master.h"
#include "ostree.h"
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
    r->without_patch_of = spec->without_patch_of;
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

static const char *req_state_name(tf_req_state_t st)
{
    switch (st) {
    case TF_REQ_NEW:
        return "NEW";
    case TF_REQ_PENDING:
        return "PENDING";
    case TF_REQ_RUNNING:
        return "RUNNING";
    case TF_REQ_DONE:
        return "DONE";
    }
    return "?";
}

void tf_request_set_state(tf_master_t *m, tf_request_t *r, tf_req_state_t to,
                          const char *why)
{
    tf_req_state_t from = r->state;
    bool ok = (from == TF_REQ_NEW &&
               (to == TF_REQ_PENDING || to == TF_REQ_RUNNING)) ||
              (from == TF_REQ_PENDING &&
               (to == TF_REQ_RUNNING || to == TF_REQ_DONE)) ||
              (from == TF_REQ_RUNNING &&
               (to == TF_REQ_PENDING || to == TF_REQ_DONE));
    (void)m;
    if (!ok) {
        tf_error("sched", "request %" PRIu64 ": illegal transition %s -> %s "
                 "(%s)", r->id, req_state_name(from), req_state_name(to),
                 why);
        assert(!"illegal request state transition");
        return;
    }
    tf_debug("sched", "request %" PRIu64 ": %s -> %s (%s)", r->id,
             req_state_name(from), req_state_name(to), why);
    r->state = to;
}

void tf_request_write(tf_master_t *m, const tf_request_t *r)
{
    tf_request_rec_t rec = {
        .id = r->id,
        .builder = r->builder,
        .reason = r->reason,
        .owner = r->owner,
        .properties = r->properties,
        .tests = r->tests,
        .revision = r->revision,
        .patch_sha256 = r->patch_sha256[0] ? r->patch_sha256 : NULL,
        .patch_size = r->patch_size,
        .priority = r->priority,
        .submitted_ms = r->submitted_ms,
        .job_id = r->job_id,
        .without_patch_of = r->without_patch_of,
        .scheduler = r->scheduler,
        .changes = r->changes,
        .nchanges = r->nchanges,
    };
    tf_op_request_create(m->group, &rec);
}

void tf_sched_counts_write(tf_master_t *m, const tf_mbuilder_t *mb)
{
    tf_op_builder_counts(m->group, mb->name, mb->npending, mb->nrunning);
}

int tf_sched_adopt(tf_master_t *m, tf_request_t *r)
{
    tf_mbuilder_t *mb;

    if (tf_map_put_id(m->requests, r->id, r) != 0)
        return TF_ENOMEM;
    tf_sched_enqueue(m, r);
    mb = tf_master_builder(m, r->builder, false);
    if (mb) {
        tf_master_group_begin(m, 0);
        tf_sched_counts_write(m, mb);
        tf_master_group_commit(m, NULL, NULL);
    }
    tf_publish_request(m, r, "queued");
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

static int qnode_cmp(const tf_osnode_t *a, const tf_osnode_t *b)
{
    return req_cmp(tf_list_entry(a, tf_request_t, qnode),
                   tf_list_entry(b, tf_request_t, qnode));
}

void tf_sched_builder_init(tf_mbuilder_t *mb)
{
    tf_list_init(&mb->pending);
    tf_os_init(&mb->queue, qnode_cmp);
    mb->heap_pos = -1;
    mb->slot = -1;
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

/* --- the heads: a binary heap of the builders that may run, by the best
 * request at the head of each queue --- */

static tf_request_t *head_of(const tf_mbuilder_t *mb)
{
    return tf_list_entry(mb->pending.next, tf_request_t, node);
}

static bool heads_less(const tf_master_t *m, size_t i, size_t j)
{
    return req_cmp(head_of(m->heads[i]), head_of(m->heads[j])) < 0;
}

static void heads_swap(tf_master_t *m, size_t i, size_t j)
{
    tf_mbuilder_t *t = m->heads[i];
    m->heads[i] = m->heads[j];
    m->heads[j] = t;
    m->heads[i]->heap_pos = (int)i;
    m->heads[j]->heap_pos = (int)j;
}

static void heads_up(tf_master_t *m, size_t i)
{
    while (i > 0 && heads_less(m, i, (i - 1) / 2)) {
        heads_swap(m, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heads_down(tf_master_t *m, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        if (l < m->nheads && heads_less(m, l, best))
            best = l;
        if (r < m->nheads && heads_less(m, r, best))
            best = r;
        if (best == i)
            return;
        heads_swap(m, i, best);
        i = best;
    }
}

static void heads_remove(tf_master_t *m, tf_mbuilder_t *mb)
{
    size_t i = (size_t)mb->heap_pos, last = m->nheads - 1;

    mb->heap_pos = -1;
    if (i != last) {
        m->heads[i] = m->heads[last];
        m->heads[i]->heap_pos = (int)i;
    }
    m->nheads--;
    if (i < m->nheads) {
        tf_mbuilder_t *moved = m->heads[i];
        heads_up(m, i);
        heads_down(m, (size_t)moved->heap_pos);
    }
}

/* Puts mb in the heap, out of it, or in its place, as its queue and
 * config say. Called whenever its head or config may have changed. */
static void heads_update(tf_master_t *m, tf_mbuilder_t *mb)
{
    bool want = mb->cfg && !tf_list_empty(&mb->pending);

    if (!want) {
        if (mb->heap_pos >= 0)
            heads_remove(m, mb);
        return;
    }
    if (mb->heap_pos < 0) {
        if (m->nheads == m->heads_cap) {
            size_t cap = m->heads_cap ? m->heads_cap * 2 : 16;
            tf_mbuilder_t **v = realloc(m->heads, cap * sizeof(*v));
            if (!v) {
                tf_error("sched", "out of memory: builder %s waits for the "
                         "next change of its queue", mb->name);
                return;
            }
            m->heads = v;
            m->heads_cap = cap;
        }
        mb->heap_pos = (int)m->nheads;
        m->heads[m->nheads++] = mb;
    }
    heads_up(m, (size_t)mb->heap_pos);
    heads_down(m, (size_t)mb->heap_pos);
}

void tf_sched_enqueue(tf_master_t *m, tf_request_t *r)
{
    tf_mbuilder_t *mb = tf_master_builder(m, r->builder, true);
    if (!mb)
        return;
    if (r->fair_tag == 0)
        r->fair_tag = fair_tag_for(m, r->owner);
    tf_request_set_state(m, r, TF_REQ_PENDING, "queued");
    /* The tree finds its place (and knows positions); the list keeps the
     * same order for walking the queue. */
    tf_os_insert(&mb->queue, &r->qnode);
    tf_osnode_t *prev = tf_os_prev(&r->qnode);
    if (prev)
        tf_list_insert_before(
            tf_list_entry(prev, tf_request_t, qnode)->node.next, &r->node);
    else
        tf_list_insert_before(mb->pending.next, &r->node);
    mb->npending++;
    heads_update(m, mb);
    tf_sched_kick(m);
}

void tf_sched_dequeue(tf_master_t *m, tf_request_t *r)
{
    tf_mbuilder_t *mb = tf_master_builder(m, r->builder, false);

    if (!tf_list_linked(&r->node))
        return;
    tf_list_unlink(&r->node);
    if (mb) {
        tf_os_remove(&mb->queue, &r->qnode);
        if (mb->npending)
            mb->npending--;
        heads_update(m, mb);
    }
}

unsigned tf_sched_position(tf_master_t *m, const tf_request_t *r)
{
    (void)m;
    if (r->state != TF_REQ_PENDING || !tf_list_linked(&r->node))
        return 0;
    return (unsigned)tf_os_rank(&r->qnode);
}

/* --- slaves: which may run which builder, and which are idle --- */

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

void tf_sched_slave_changed(tf_master_t *m, tf_mslave_t *s)
{
    bool room = tf_sched_slave_has_room(s);

    if (room == s->idle)
        return;
    s->idle = room;
    if (room) {
        /* At the tail: the slave idle longest is offered work first. */
        tf_list_push_back(&m->idle, &s->idle_node);
        m->nidle++;
        tf_sched_kick(m);
    } else {
        tf_list_unlink(&s->idle_node);
        m->nidle--;
    }
}

static bool may_run(const tf_mbuilder_t *mb, const tf_mslave_t *s)
{
    if (!s->cfg)
        return false;
    if (mb->allow_all)
        return true;
    return mb->slot >= 0 && (size_t)mb->slot / 64 < s->ncan &&
           (s->can[mb->slot / 64] >> (mb->slot % 64) & 1);
}

void tf_sched_config(tf_master_t *m)
{
    size_t nb = m->cfg->nbuilders, words = (nb + 63) / 64;
    size_t pos = 0;
    void *v;

    /* Every slave: a set of the builders it may run, by slot (the old
     * set cleared when it has the size: a reload keeps most). */
    while (tf_map_next(m->slaves, &pos, NULL, NULL, &v) == 0) {
        tf_mslave_t *s = v;
        if (s->can && s->ncan == words) {
            memset(s->can, 0, words * sizeof(*s->can));
            continue;
        }
        uint64_t *can = words ? calloc(words, sizeof(*can)) : NULL;
        free(s->can);
        s->can = can;
        s->ncan = can ? words : 0;
    }
    pos = 0;
    while (tf_map_next(m->builders, &pos, NULL, NULL, &v) == 0) {
        tf_mbuilder_t *mb = v;
        mb->slot = -1;
        mb->allow_all = false;
        mb->nallowed = 0;
    }
    /* The configured slaves' objects, looked up once rather than once per
     * builder (10 builders and 5,000 slaves: 50,000 lookups a reload). */
    size_t ns = m->cfg->nslaves;
    tf_mslave_t **sl = calloc(ns ? ns : 1, sizeof(*sl));
    for (size_t k = 0; sl && k < ns; k++)
        sl[k] = tf_master_slave(m, m->cfg->slaves[k].name, false);
    /* Every configured builder: its slot, and the slaves that may run it
     * (listed by name, or having all its tags; neither: any slave). */
    for (size_t i = 0; i < nb; i++) {
        const tf_cfg_builder_t *c = &m->cfg->builders[i];
        tf_mbuilder_t *mb = tf_master_builder(m, c->name, false);
        if (!mb)
            continue;
        mb->slot = (int)i;
        if (c->nslaves == 0 && c->ntags == 0) {
            mb->allow_all = true;
            continue;
        }
        size_t cap = m->cfg->nslaves;
        tf_mslave_t **al = realloc(mb->allowed, (cap ? cap : 1) *
                                                    sizeof(*al));
        if (!al) {
            tf_error("sched", "out of memory: builder %s runs nowhere until "
                     "the next reload", mb->name);
            continue;
        }
        mb->allowed = al;
        uint64_t bit = (uint64_t)1 << (i % 64);
        /* Listed slaves first get their bit by name: asking
         * tf_config_slave_allowed of every slave would compare each with
         * the whole list, quadratic for a builder that names thousands. */
        for (size_t k = 0; k < c->nslaves; k++) {
            tf_mslave_t *s = tf_master_slave(m, c->slaves[k], false);
            if (s && s->can && s->cfg)
                s->can[i / 64] |= bit;
        }
        /* Then, in config order (the order pick_slave tries them), the
         * listed ones and those with every tag. */
        for (size_t k = 0; k < ns; k++) {
            const tf_cfg_slave_t *sc = &m->cfg->slaves[k];
            tf_mslave_t *s = sl ? sl[k] : tf_master_slave(m, sc->name, false);
            if (!s || !s->can)
                continue;
            if (!(s->can[i / 64] & bit)) {
                if (c->ntags == 0 || !tf_config_slave_has_tags(c, sc))
                    continue;
                s->can[i / 64] |= bit;
            }
            mb->allowed[mb->nallowed++] = s;
        }
    }
    free(sl);
    pos = 0;
    while (tf_map_next(m->builders, &pos, NULL, NULL, &v) == 0)
        heads_update(m, v);
    pos = 0;
    while (tf_map_next(m->slaves, &pos, NULL, NULL, &v) == 0)
        tf_sched_slave_changed(m, v);
    tf_sched_kick(m);
}

/* The idle slave for builder mb: the one that built it last (its checkout
 * is warm) if it is idle, else the first idle one that may run it,
 * looking through whichever is shorter, the idle list or mb's slaves. */
static tf_mslave_t *pick_slave(tf_master_t *m, tf_mbuilder_t *mb)
{
    tf_mslave_t *warm = mb->last_slave[0]
                            ? tf_master_slave(m, mb->last_slave, false)
                            : NULL;
    tf_list_t *it;

    if (warm && warm->idle && may_run(mb, warm))
        return warm;
    if (!mb->allow_all && mb->nallowed < m->nidle) {
        for (size_t i = 0; i < mb->nallowed; i++)
            if (mb->allowed[i]->idle)
                return mb->allowed[i];
        return NULL;
    }
    tf_list_foreach(it, &m->idle)
    {
        tf_mslave_t *s = tf_list_entry(it, tf_mslave_t, idle_node);
        if (may_run(mb, s))
            return s;
    }
    return NULL;
}

/* Starts builds while an idle slave and a builder it may run are left:
 * the best head first; a builder none of the idle slaves may run is put
 * aside for the rest of the pass (the idle set only shrinks during it).
 * Each start costs O(log builders) plus one pick, not a rescan. The pass
 * is one start batch (tf_build_batch_begin): its builds' rows are written
 * in groups of up to TF_BUILD_BATCH_MAX, one transaction each, instead of
 * one group per build. */
static bool blocked_room(tf_master_t *m, size_t n)
{
    if (n < m->blocked_cap)
        return true;
    size_t cap = m->blocked_cap ? m->blocked_cap * 2 : 16;
    tf_mbuilder_t **v = realloc(m->blocked, cap * sizeof(*v));
    if (!v)
        return false;
    m->blocked = v;
    m->blocked_cap = cap;
    return true;
}

/* The CPU time of the calling thread, in microseconds. */
static int64_t thread_cpu_us(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A pass that starts at least this many builds logs what it cost. */
#define SCHED_PASS_LOG_MIN 64

static void sched_pass(tf_master_t *m)
{
    size_t nblocked = 0;
    uint64_t first_id = m->next_build_id;
    int64_t cpu0 = thread_cpu_us();

    tf_build_batch_begin(m);
    while (m->nidle > 0 && m->nheads > 0) {
        tf_mbuilder_t *mb = m->heads[0];
        tf_mslave_t *s = pick_slave(m, mb);
        tf_request_t *r = head_of(mb);
        uint64_t tag = r->fair_tag;

        /* 0 also when build_start could not be encoded for r: it has then
         * ended as EXCEPTION and left the queue, so the pass goes on to the
         * next request at once (the slave is still idle). */
        if (s && tf_build_start(m, r, s) == 0) {
            if (tag > m->fair_vtime)
                m->fair_vtime = tag;
            continue; /* its queue and the idle set moved on */
        }
        /* No idle slave may run it, or it cannot start now (out of
         * memory, builder gone): aside for this pass. */
        if (!blocked_room(m, nblocked))
            break; /* out of memory: the next kick goes on */
        heads_remove(m, mb);
        m->blocked[nblocked++] = mb;
    }
    tf_build_batch_end(m);
    for (size_t i = 0; i < nblocked; i++)
        heads_update(m, m->blocked[i]);
    /* A burst's pass, for the operator and the benchmark (release
     * engineers' guide, "Speed"): what one start costs the loop. Build
     * ids, not starts: a shared master's ids may skip. */
    uint64_t n = m->next_build_id - first_id;
    if (n >= SCHED_PASS_LOG_MIN) {
        int64_t us = thread_cpu_us() - cpu0;
        tf_info("sched", "pass assigned %" PRIu64 " builds in %.1f ms of "
                "CPU (%.1f us each)", n, us / 1000.0, (double)us / n);
    }
}

static void turn_cb(uv_idle_t *h)
{
    tf_master_t *m = h->data;
    uv_idle_stop(h);
    /* The slaves' messages put off during a burst first: the builds they
     * end free their slaves for this pass. */
    if (m->drain_wanted) {
        m->drain_wanted = false;
        if (m->net && m->net->drain_deferred)
            m->net->drain_deferred(m);
    }
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
        tf_sched_dequeue(m, o);
        tf_map_del_id(m->requests, o->id);
        tf_op_request_collapse(m->group, o->id, r->id, now);
        tf_info("sched", "request %" PRIu64 " for %s collapsed into %" PRIu64
                " (a newer revision)", o->id, o->builder, r->id);
        tf_request_set_state(m, o, TF_REQ_DONE, "collapsed");
        tf_publish_request(m, o, "collapsed");
        tf_request_free(o);
    }
}

int tf_sched_request(tf_master_t *m, const tf_reqspec_t *spec,
                     uint64_t *id_out, tf_store_done_cb cb, void *arg)
{
    tf_mbuilder_t *mb = tf_master_builder(m, spec->builder, false);
    if (!mb || !mb->cfg)
        return TF_ENOENT;
    int rc = tf_master_ids(m, 1);
    if (rc)
        return rc;
    tf_request_t *r = tf_request_make(spec, m->next_request_id, tf_now_ms());
    if (!r)
        return TF_ENOMEM;
    if (tf_map_put_id(m->requests, r->id, r) != 0) {
        tf_request_free(r);
        return TF_ENOMEM;
    }
    m->next_request_id++;
    tf_master_group_begin(m, 0);
    if (r->scheduler && mb->cfg->collapse_requests)
        collapse_into(m, mb, r);
    tf_request_write(m, r);
    tf_sched_enqueue(m, r);
    tf_sched_counts_write(m, mb);
    if (id_out)
        *id_out = r->id;
    if (tf_master_group_commit(m, cb, arg) != 0) {
        /* Not stored (cb has been told): it must not run either. */
        tf_sched_dequeue(m, r);
        tf_map_del_id(m->requests, r->id);
        tf_request_set_state(m, r, TF_REQ_DONE, "not stored");
        tf_request_free(r);
        return 0;
    }
    tf_publish_request(m, r, "queued");
    tf_info("sched", "request %" PRIu64 " for %s queued (%s)", *id_out,
            spec->builder, spec->reason ? spec->reason : "no reason given");
    return 0;
}

/* The context of a cancellation's group (in the group). */
typedef struct cancel_ctx {
    tf_master_t *m;
    uint64_t id;
    tf_store_done_cb cb;
    void *arg;
} cancel_ctx_t;

/* Several masters: another master claimed (or ended) the request before
 * the cancellation committed, so nothing of it was stored (TF_ESTATE).
 * This master dropped its copy already; the queue is read again, and the
 * caller hears TF_ESTATE. */
static void cancel_committed_cb(void *arg, int rc)
{
    cancel_ctx_t *c = arg;

    if (rc == TF_ESTATE) {
        tf_info("sched", "request %" PRIu64 " was not cancelled: another "
                "master started or ended it first", c->id);
        tf_master_farm_changed(c->m, TF_FARM_QUEUE);
    }
    if (c->cb)
        c->cb(c->arg, rc);
}

void tf_sched_cancel_pending(tf_master_t *m, tf_request_t *r,
                             tf_store_done_cb cb, void *arg)
{
    tf_mbuilder_t *mb = tf_master_builder(m, r->builder, false);
    tf_sched_dequeue(m, r);
    tf_map_del_id(m->requests, r->id);
    tf_master_group_begin(m, sizeof(cancel_ctx_t));
    cancel_ctx_t *c = tf_wgroup_alloc(m->group, sizeof(*c));
    if (c) {
        *c = (cancel_ctx_t){.m = m, .id = r->id, .cb = cb, .arg = arg};
        cb = cancel_committed_cb;
        arg = c;
    }
    tf_op_request_cancel(m->group, r->id, TF_CANCELLED, tf_now_ms());
    if (mb)
        tf_sched_counts_write(m, mb);
    if (r->job_id)
        tf_job_request_done(m, r->job_id, TF_CANCELLED);
    tf_master_group_commit(m, cb, arg);
    tf_info("sched", "request %" PRIu64 " for %s cancelled before it started",
            r->id, r->builder);
    tf_request_set_state(m, r, TF_REQ_DONE, "cancelled");
    tf_publish_request(m, r, "cancelled");
    tf_request_free(r);
}
