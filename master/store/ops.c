/*
 * ops.c - write groups and the constructors of their operations.
 *
 * A group is one allocation for the common case: its header and the
 * first block of an arena that holds its op records and copies of their
 * strings and blobs. More blocks are chained when it outgrows it (a big
 * output chunk gets a block of its own size). So an output chunk costs
 * one malloc and one copy of its bytes, from the link's receive buffer
 * into the group, on its way to the engine; the engine binds them from
 * there without copying again.
 *
 * A constructor that cannot allocate marks the group failed; a failed
 * group is never queued (tf_store_submit refuses it), so an event is
 * never half stored. Constructors touch nothing but their group: any
 * thread may build a group it owns.
 */
#include "store/ops.h"

#include <stdlib.h>
#include <string.h>

#include "store/store_sqlite.h"
#include "tf_err.h"

#define GROUP_DEFAULT_BYTES 448u
#define CHUNK_BYTES 1024u    /* a block for small things that spill over */
#define BIG_BYTES 256u       /* bigger than this gets a block of its own */
#define ALIGN 8u

typedef struct tf_wchunk {
    struct tf_wchunk *next;
    size_t size;
    _Alignas(8) unsigned char data[];
} tf_wchunk_t;

static const char *const kind_names[TF_OP_KIND_COUNT] = {
    [TF_OP_SLAVE_EVENT] = "slave_event",
    [TF_OP_SLAVE_CONNECTED] = "slave_connected",
    [TF_OP_SLAVE_DISCONNECTED] = "slave_disconnected",
    [TF_OP_SLAVE_SEEN] = "slave_seen",
    [TF_OP_SLAVES_RESET] = "slaves_reset",
    [TF_OP_SLAVE_KNOWN] = "slave_known",
    [TF_OP_SLAVE_DRAINING] = "slave_draining",
    [TF_OP_BUILDERS_DEACTIVATE] = "builders_deactivate",
    [TF_OP_BUILDER_ACTIVATE] = "builder_activate",
    [TF_OP_BUILDER_COUNTS] = "builder_counts",
    [TF_OP_REQUEST_CREATE] = "request_create",
    [TF_OP_REQUEST_REQUEUE] = "request_requeue",
    [TF_OP_REQUEST_COLLAPSE] = "request_collapse",
    [TF_OP_REQUEST_CANCEL] = "request_cancel",
    [TF_OP_REQUEST_DONE] = "request_done",
    [TF_OP_REQUEST_REUSED] = "request_reused",
    [TF_OP_BUILD_CREATE] = "build_create",
    [TF_OP_BUILD_SEQ] = "build_seq",
    [TF_OP_STEP_START] = "step_start",
    [TF_OP_OUTPUT] = "output",
    [TF_OP_STEP_FINISH] = "step_finish",
    [TF_OP_BUILD_PROP] = "build_prop",
    [TF_OP_STAT] = "stat",
    [TF_OP_TEST_RESULT] = "test_result",
    [TF_OP_STEP_FORCE_END] = "step_force_end",
    [TF_OP_BUILD_FINISH] = "build_finish",
    [TF_OP_BUILD_ADOPT] = "build_adopt",
    [TF_OP_CANCEL_MARK] = "cancel_mark",
    [TF_OP_PATCH_PUT] = "patch_put",
    [TF_OP_JOB_CREATE] = "job_create",
    [TF_OP_JOB_RUNNING] = "job_running",
    [TF_OP_JOB_FINISH] = "job_finish",
    [TF_OP_JOB_SETTLE] = "job_settle",
    [TF_OP_MAIL_JOB] = "mail_job",
    [TF_OP_MAIL_BUILD] = "mail_build",
    [TF_OP_USER_ADD] = "user_add",
    [TF_OP_USER_REMOVE] = "user_remove",
    [TF_OP_CHANGES_RECORD] = "changes_record",
    [TF_OP_POLLER_HEALTH] = "poller_health",
    [TF_OP_SCHEDULER_STATE] = "scheduler_state",
    [TF_OP_SQL] = "sql",
    [TF_OP_SQL_FN] = "sql_fn",
};

const char *tf__op_kind_name(tf_op_kind_t kind)
{
    if ((int)kind <= 0 || kind >= TF_OP_KIND_COUNT)
        return NULL;
    return kind_names[kind];
}

tf_op_kind_t tf__op_kind_by_name(const char *name)
{
    for (int k = 1; name && k < TF_OP_KIND_COUNT; k++)
        if (kind_names[k] && strcmp(kind_names[k], name) == 0)
            return (tf_op_kind_t)k;
    return (tf_op_kind_t)0;
}

bool tf__wgroup_has(const tf_wgroup_t *g, tf_op_kind_t kind)
{
    for (const tf_op_t *op = g->head; op; op = op->next)
        if (op->kind == kind)
            return true;
    return false;
}

const char *tf__wgroup_what(const tf_wgroup_t *g)
{
    const tf_op_t *op = g->head;

    if (!op)
        return "(empty group)";
    if (op->kind == TF_OP_SQL)
        return op->u.sql.sql;
    return tf__op_kind_name(op->kind);
}

/* ------------------------------------------------------------------ */
/* The group and its arena                                             */
/* ------------------------------------------------------------------ */

tf_wgroup_t *tf_wgroup_new(size_t hint)
{
    size_t cap = GROUP_DEFAULT_BYTES;
    tf_wgroup_t *g;

    if (hint > SIZE_MAX / 2 - cap - sizeof(*g))
        return NULL;
    cap = (cap + hint + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    g = malloc(sizeof(*g) + cap);
    if (!g)
        return NULL;
    memset(g, 0, sizeof(*g));
    g->cap = cap;
    g->cur = g->first;
    g->left = cap;
    g->cost = sizeof(*g) + cap;
    return g;
}

void tf_wgroup_free(tf_wgroup_t *g)
{
    if (!g)
        return;
    for (tf_wchunk_t *c = g->chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    for (size_t i = 0; i < g->nowned; i++)
        free(g->owned[i]);
    free(g->owned);
    free(g);
}

size_t tf_wgroup_count(const tf_wgroup_t *g)
{
    return g ? g->nops : 0;
}

bool tf_wgroup_failed(const tf_wgroup_t *g)
{
    return !g || g->failed;
}

void tf_wgroup_fail(tf_wgroup_t *g)
{
    if (g)
        g->failed = true;
}

void tf_wgroup_keep(tf_wgroup_t *g)
{
    if (g)
        g->keep = true;
}

void tf_wgroup_prompt(tf_wgroup_t *g)
{
    if (g)
        g->prompt = true;
}

bool tf_wgroup_kept(const tf_wgroup_t *g)
{
    return g && g->keep;
}

/* n bytes of the arena, 8-aligned, zeroed unless the caller overwrites
 * them all at once (zero false: an output frame's 64 KiB copied in, where
 * the memset cost as much as the copy); NULL (and g failed) when out of
 * memory. */
static void *arena_bytes(tf_wgroup_t *g, size_t n, bool zero)
{
    void *p;

    if (g->failed)
        return NULL;
    if (n > SIZE_MAX - ALIGN) {
        g->failed = true;
        return NULL;
    }
    n = (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    if (n > g->left) {
        size_t size = n > BIG_BYTES ? n : CHUNK_BYTES;
        tf_wchunk_t *c;

        if (size > SIZE_MAX - sizeof(*c) ||
            !(c = malloc(sizeof(*c) + size))) {
            g->failed = true;
            return NULL;
        }
        c->size = size;
        c->next = g->chunks;
        g->chunks = c;
        g->cost += sizeof(*c) + size;
        if (n > BIG_BYTES) {
            /* A big blob: its own block; the current one keeps serving
             * the small things. */
            if (zero)
                memset(c->data, 0, n);
            return c->data;
        }
        g->cur = c->data;
        g->left = size;
    }
    p = g->cur;
    g->cur += n;
    g->left -= n;
    if (zero)
        memset(p, 0, n);
    return p;
}

static void *arena(tf_wgroup_t *g, size_t n)
{
    return arena_bytes(g, n, true);
}

void *tf_wgroup_alloc(tf_wgroup_t *g, size_t n)
{
    return g ? arena(g, n ? n : 1) : NULL;
}

int tf_wgroup_unit_end(tf_wgroup_t *g)
{
    tf_op_t *from;
    tf_wunit_t *u;

    if (!g || g->failed)
        return TF_ENOMEM;
    from = g->units_tail ? g->units_tail->last->next : g->head;
    if (!from)
        return TF_EINVAL; /* no op since the last unit */
    u = arena(g, sizeof(*u));
    if (!u)
        return TF_ENOMEM;
    u->first = from;
    u->last = g->tail;
    if (g->units_tail)
        g->units_tail->next = u;
    else
        g->units = u;
    g->units_tail = u;
    g->nunits++;
    return 0;
}

int tf_wgroup_unit_rc(const tf_wgroup_t *g, size_t i)
{
    const tf_wunit_t *u;

    if (!g || i >= g->nunits)
        return TF_EINVAL;
    if (!g->split)
        return g->rc;
    for (u = g->units; u && i; u = u->next)
        i--;
    return u ? u->rc : TF_EINVAL;
}

void tf_wgroup_unit_rcs(const tf_wgroup_t *g, int *rcs, size_t n)
{
    const tf_wunit_t *u = g && g->split ? g->units : NULL;

    for (size_t i = 0; i < n; i++) {
        if (!g || i >= g->nunits)
            rcs[i] = TF_EINVAL;
        else if (!g->split)
            rcs[i] = g->rc;
        else {
            rcs[i] = u ? u->rc : TF_EINVAL;
            u = u ? u->next : NULL;
        }
    }
}

static const char *dup_str(tf_wgroup_t *g, const char *s, bool *ok)
{
    size_t n;
    char *p;

    if (!s)
        return NULL;
    n = strlen(s) + 1;
    p = arena(g, n);
    if (!p) {
        *ok = false;
        return NULL;
    }
    memcpy(p, s, n);
    return p;
}

static const void *dup_mem(tf_wgroup_t *g, const void *src, size_t n,
                           bool *ok)
{
    void *p;

    if (n == 0)
        return "";
    p = arena_bytes(g, n, false); /* every byte is copied in below */
    if (!p) {
        *ok = false;
        return NULL;
    }
    memcpy(p, src, n);
    return p;
}

/* Hands a malloc'd buffer to g (freed with it). Frees it on failure. */
static bool take(tf_wgroup_t *g, void *p, size_t n)
{
    if (!p)
        return true;
    if (g->failed) {
        free(p);
        return false;
    }
    if (g->nowned == g->owned_cap) {
        size_t cap = g->owned_cap ? g->owned_cap * 2 : 2;
        void **v = realloc(g->owned, cap * sizeof(*v));
        if (!v) {
            free(p);
            g->failed = true;
            return false;
        }
        g->owned = v;
        g->owned_cap = cap;
    }
    g->owned[g->nowned++] = p;
    g->cost += n;
    return true;
}

/* A new zeroed op of kind at the end of g, or NULL (g failed). */
static tf_op_t *op_add(tf_wgroup_t *g, tf_op_kind_t kind)
{
    tf_op_t *op;

    if (!g)
        return NULL;
    op = arena(g, sizeof(*op));
    if (!op)
        return NULL;
    op->kind = kind;
    if (g->tail)
        g->tail->next = op;
    else
        g->head = op;
    g->tail = op;
    g->nops++;
    return op;
}

/* The common ending of a constructor: ok says whether every copy worked. */
static int done(tf_wgroup_t *g, tf_op_t *op, bool ok)
{
    if (!op || !ok) {
        if (g)
            g->failed = true;
        return TF_ENOMEM;
    }
    return 0;
}

#define S(field, value) (op->u.field = dup_str(g, (value), &ok))

/* ------------------------------------------------------------------ */
/* Slaves and builders                                                 */
/* ------------------------------------------------------------------ */

int tf_op_slave_event(tf_wgroup_t *g, const char *slave, int64_t time_ms,
                      const char *event, const char *detail)
{
    tf_op_t *op = op_add(g, TF_OP_SLAVE_EVENT);
    bool ok = op != NULL;

    if (op) {
        S(slave_event.slave, slave);
        S(slave_event.event, event);
        S(slave_event.detail, detail);
        op->u.slave_event.time_ms = time_ms;
    }
    return done(g, op, ok);
}

int tf_op_slave_connected(tf_wgroup_t *g, const char *name,
                          const char *platform, const char *version,
                          const char *tags_json, int64_t time_ms)
{
    tf_op_t *op = op_add(g, TF_OP_SLAVE_CONNECTED);
    bool ok = op != NULL;

    if (op) {
        S(slave_connected.name, name);
        S(slave_connected.platform, platform);
        S(slave_connected.version, version);
        S(slave_connected.tags_json, tags_json ? tags_json : "[]");
        op->u.slave_connected.time_ms = time_ms;
    }
    return done(g, op, ok);
}

static int slave_time(tf_wgroup_t *g, tf_op_kind_t kind, const char *name,
                      int64_t time_ms)
{
    tf_op_t *op = op_add(g, kind);
    bool ok = op != NULL;

    if (op) {
        S(slave_time.name, name);
        op->u.slave_time.time_ms = time_ms;
    }
    return done(g, op, ok);
}

int tf_op_slave_disconnected(tf_wgroup_t *g, const char *name,
                             int64_t time_ms)
{
    return slave_time(g, TF_OP_SLAVE_DISCONNECTED, name, time_ms);
}

int tf_op_slave_seen(tf_wgroup_t *g, const char *name, int64_t time_ms)
{
    return slave_time(g, TF_OP_SLAVE_SEEN, name, time_ms);
}

int tf_op_slave_known(tf_wgroup_t *g, const char *name)
{
    return slave_time(g, TF_OP_SLAVE_KNOWN, name, 0);
}

int tf_op_slave_draining(tf_wgroup_t *g, const char *name)
{
    return slave_time(g, TF_OP_SLAVE_DRAINING, name, 0);
}

int tf_op_slaves_reset(tf_wgroup_t *g)
{
    return done(g, op_add(g, TF_OP_SLAVES_RESET), true);
}

int tf_op_builders_deactivate(tf_wgroup_t *g)
{
    return done(g, op_add(g, TF_OP_BUILDERS_DEACTIVATE), true);
}

int tf_op_builder_activate(tf_wgroup_t *g, const char *name)
{
    tf_op_t *op = op_add(g, TF_OP_BUILDER_ACTIVATE);
    bool ok = op != NULL;

    if (op)
        S(name.name, name);
    return done(g, op, ok);
}

int tf_op_builder_counts(tf_wgroup_t *g, const char *name, unsigned pending,
                         unsigned running)
{
    tf_op_t *op = op_add(g, TF_OP_BUILDER_COUNTS);
    bool ok = op != NULL;

    if (op) {
        S(builder_counts.name, name);
        op->u.builder_counts.pending = pending;
        op->u.builder_counts.running = running;
    }
    return done(g, op, ok);
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

int tf_op_request_create(tf_wgroup_t *g, const tf_request_rec_t *r)
{
    tf_op_t *op = op_add(g, TF_OP_REQUEST_CREATE);
    bool ok = op != NULL;

    if (op) {
        tf_op_request_create_t *c = &op->u.request_create;
        c->id = r->id;
        S(request_create.builder, r->builder);
        S(request_create.reason, r->reason);
        S(request_create.owner, r->owner ? r->owner : "");
        S(request_create.properties, r->properties ? r->properties : "{}");
        S(request_create.tests, r->tests ? r->tests : "[]");
        S(request_create.revision, r->revision);
        S(request_create.patch_sha256,
          r->patch_sha256 && *r->patch_sha256 ? r->patch_sha256 : NULL);
        S(request_create.scheduler, r->scheduler);
        c->patch_size = r->patch_size;
        c->priority = r->priority;
        c->submitted_ms = r->submitted_ms;
        c->job_id = r->job_id;
        c->without_patch_of = r->without_patch_of;
        if (r->nchanges) {
            if (r->nchanges > SIZE_MAX / sizeof(uint64_t))
                ok = false;
            else
                c->changes = dup_mem(g, r->changes,
                                     r->nchanges * sizeof(uint64_t), &ok);
            c->nchanges = r->nchanges;
        }
    }
    return done(g, op, ok);
}

static int request_end(tf_wgroup_t *g, tf_op_kind_t kind, uint64_t id,
                       uint64_t into, int64_t retries, int64_t result,
                       int64_t time_ms)
{
    tf_op_t *op = op_add(g, kind);

    if (op)
        op->u.request_end = (tf_op_request_end_t){
            .id = id, .into = into, .retries = retries, .result = result,
            .time_ms = time_ms};
    return done(g, op, true);
}

int tf_op_request_requeue(tf_wgroup_t *g, uint64_t id, unsigned retries)
{
    return request_end(g, TF_OP_REQUEST_REQUEUE, id, 0, retries, 0, 0);
}

int tf_op_request_collapse(tf_wgroup_t *g, uint64_t id, uint64_t into,
                           int64_t time_ms)
{
    return request_end(g, TF_OP_REQUEST_COLLAPSE, id, into, 0, 0, time_ms);
}

int tf_op_request_cancel(tf_wgroup_t *g, uint64_t id, int result,
                         int64_t time_ms)
{
    return request_end(g, TF_OP_REQUEST_CANCEL, id, 0, 0, result, time_ms);
}

int tf_op_request_done(tf_wgroup_t *g, uint64_t id, int result,
                       int64_t time_ms)
{
    return request_end(g, TF_OP_REQUEST_DONE, id, 0, 0, result, time_ms);
}

int tf_op_request_reused(tf_wgroup_t *g, uint64_t id, uint64_t build_id,
                         int64_t time_ms)
{
    return request_end(g, TF_OP_REQUEST_REUSED, id, build_id, 0, 0, time_ms);
}

/* ------------------------------------------------------------------ */
/* Builds                                                              */
/* ------------------------------------------------------------------ */

int tf_op_build_create(tf_wgroup_t *g, const tf_build_rec_t *b)
{
    tf_op_t *op = op_add(g, TF_OP_BUILD_CREATE);
    bool ok = op != NULL;

    if (op) {
        tf_op_build_create_t *c = &op->u.build_create;
        c->id = b->id;
        c->number = b->number;
        c->request_id = b->request_id;
        c->created_ms = b->created_ms;
        c->no_changes = b->no_changes;
        S(build_create.builder, b->builder);
        S(build_create.slave, b->slave);
        S(build_create.properties, b->properties ? b->properties : "{}");
        S(build_create.reason, b->reason);
        S(build_create.repository, b->repository);
        S(build_create.branch, b->branch);
        S(build_create.revision, b->revision);
        S(build_create.recipe, b->recipe);
        S(build_create.kind, b->kind);
        if (b->nsteps) {
            tf_op_build_step_t *steps =
                b->nsteps > SIZE_MAX / sizeof(*steps)
                    ? NULL
                    : arena(g, b->nsteps * sizeof(*steps));
            if (!steps)
                ok = false;
            for (size_t i = 0; steps && i < b->nsteps; i++) {
                steps[i].name = dup_str(g, b->steps[i].name, &ok);
                steps[i].command_json =
                    dup_str(g, b->steps[i].command_json
                                   ? b->steps[i].command_json
                                   : "[]",
                            &ok);
                steps[i].flags = b->steps[i].flags;
            }
            c->steps = steps;
            c->nsteps = b->nsteps;
        }
    }
    return done(g, op, ok);
}

int tf_op_build_seq(tf_wgroup_t *g, uint64_t build_id, uint64_t seq)
{
    tf_op_t *op = op_add(g, TF_OP_BUILD_SEQ);

    if (op)
        op->u.build_seq = (tf_op_build_seq_t){.build_id = build_id,
                                              .seq = seq};
    return done(g, op, true);
}

int tf_op_step_start(tf_wgroup_t *g, uint64_t build_id, unsigned step,
                     int64_t time_ms, bool first)
{
    tf_op_t *op = op_add(g, TF_OP_STEP_START);

    if (op)
        op->u.step_start = (tf_op_step_start_t){
            .build_id = build_id, .step = step, .time_ms = time_ms,
            .first = first};
    return done(g, op, true);
}

int tf_op_output(tf_wgroup_t *g, const tf_output_rec_t *o, const void *data,
                 size_t len)
{
    tf_op_t *op = op_add(g, TF_OP_OUTPUT);
    bool ok = op != NULL;

    if (op) {
        tf_op_output_t *c = &op->u.output;
        c->build_id = o->build_id;
        c->seq = o->seq;
        c->step = o->step;
        c->stream = o->stream;
        c->offset = o->offset;
        c->line = o->line;
        c->log_bytes = o->log_bytes;
        c->log_lines = o->log_lines;
        c->data = dup_mem(g, data, len, &ok);
        c->len = len;
    }
    return done(g, op, ok);
}

int tf_op_step_finish(tf_wgroup_t *g, const tf_step_finish_rec_t *f)
{
    tf_op_t *op = op_add(g, TF_OP_STEP_FINISH);
    bool ok = op != NULL;

    if (op) {
        tf_op_step_finish_t *c = &op->u.step_finish;
        c->build_id = f->build_id;
        c->step = f->step;
        c->result = f->result;
        c->time_ms = f->time_ms;
        c->duration_ms = f->duration_ms;
        c->has_exit_code = f->has_exit_code;
        c->exit_code = f->exit_code;
        c->has_signal = f->has_signal;
        c->signal = f->signal;
        c->has_warnings = f->has_warnings;
        c->warnings = f->warnings;
        c->timed_out = f->timed_out;
        S(step_finish.text, f->text);
        S(step_finish.info, f->info);
    }
    return done(g, op, ok);
}

int tf_op_build_prop(tf_wgroup_t *g, uint64_t build_id, const char *key,
                     const char *value)
{
    tf_op_t *op = op_add(g, TF_OP_BUILD_PROP);
    bool ok = op != NULL;

    if (op) {
        op->u.build_prop.build_id = build_id;
        S(build_prop.key, key);
        S(build_prop.value, value);
    }
    return done(g, op, ok);
}

int tf_op_stat(tf_wgroup_t *g, const char *builder, uint64_t build_id,
               unsigned step, const char *name, double value)
{
    tf_op_t *op = op_add(g, TF_OP_STAT);
    bool ok = op != NULL;

    if (op) {
        op->u.stat.build_id = build_id;
        op->u.stat.step = step;
        op->u.stat.value = value;
        S(stat.builder, builder);
        S(stat.name, name);
    }
    return done(g, op, ok);
}

int tf_op_test_result(tf_wgroup_t *g, const tf_test_result_rec_t *r)
{
    tf_op_t *op = op_add(g, TF_OP_TEST_RESULT);
    bool ok = op != NULL;

    if (op) {
        tf_op_test_result_t *o = &op->u.test_result;
        o->build_id = r->build_id;
        o->step = r->step;
        o->attempts = r->attempts ? r->attempts : 1;
        o->duration_ms = r->duration_ms;
        o->has_log = r->has_log;
        o->log_offset = r->log_offset;
        o->log_line = r->log_line;
        o->log_lines = r->log_lines;
        S(test_result.builder, r->builder);
        S(test_result.suite, r->suite ? r->suite : "");
        S(test_result.name, r->name);
        S(test_result.status, r->status);
        S(test_result.outcome, r->outcome);
        S(test_result.message, r->message);
    }
    return done(g, op, ok);
}

int tf_op_step_force_end(tf_wgroup_t *g, uint64_t build_id, unsigned step,
                         int result, int64_t time_ms, const char *text)
{
    tf_op_t *op = op_add(g, TF_OP_STEP_FORCE_END);
    bool ok = op != NULL;

    if (op) {
        op->u.step_force_end.build_id = build_id;
        op->u.step_force_end.step = step;
        op->u.step_force_end.result = result;
        op->u.step_force_end.time_ms = time_ms;
        S(step_force_end.text, text);
    }
    return done(g, op, ok);
}

int tf_op_build_finish(tf_wgroup_t *g, uint64_t build_id,
                       const char *builder, const char *slave, int result,
                       int64_t time_ms, const char *text, bool complete)
{
    tf_op_t *op = op_add(g, TF_OP_BUILD_FINISH);
    bool ok = op != NULL;

    if (op) {
        op->u.build_finish.build_id = build_id;
        op->u.build_finish.result = result;
        op->u.build_finish.time_ms = time_ms;
        op->u.build_finish.complete = complete;
        S(build_finish.builder, builder);
        S(build_finish.slave, slave);
        S(build_finish.text, text);
    }
    return done(g, op, ok);
}

int tf_op_build_adopt(tf_wgroup_t *g, uint64_t build_id, const char *from)
{
    tf_op_t *op = op_add(g, TF_OP_BUILD_ADOPT);
    bool ok = op != NULL;

    if (op) {
        op->u.build_adopt.build_id = build_id;
        S(build_adopt.from, from);
    }
    return done(g, op, ok);
}

int tf_op_cancel_mark(tf_wgroup_t *g, uint64_t build_id, uint64_t job_id,
                      const char *why)
{
    tf_op_t *op = op_add(g, TF_OP_CANCEL_MARK);
    bool ok = op != NULL;

    if (op) {
        op->u.cancel_mark.build_id = build_id;
        op->u.cancel_mark.job_id = job_id;
        S(cancel_mark.why, why ? why : "cancelled");
    }
    return done(g, op, ok);
}

/* ------------------------------------------------------------------ */
/* Try jobs, mail, committers                                          */
/* ------------------------------------------------------------------ */

static int patch_put(tf_wgroup_t *g, const char *sha256, const void *data,
                     void *owned, size_t len, int64_t created_ms)
{
    tf_op_t *op = op_add(g, TF_OP_PATCH_PUT);
    bool ok = op != NULL;

    if (!op) {
        free(owned);
        return done(g, op, false);
    }
    op->u.patch_put.created_ms = created_ms;
    op->u.patch_put.len = len;
    S(patch_put.sha256, sha256);
    if (owned) {
        ok = take(g, owned, len) && ok;
        op->u.patch_put.data = owned;
    } else {
        op->u.patch_put.data = dup_mem(g, data, len, &ok);
    }
    return done(g, op, ok);
}

int tf_op_patch_put(tf_wgroup_t *g, const char *sha256, const void *data,
                    size_t len, int64_t created_ms)
{
    return patch_put(g, sha256, data, NULL, len, created_ms);
}

int tf_op_patch_put_take(tf_wgroup_t *g, const char *sha256, void *data,
                         size_t len, int64_t created_ms)
{
    return patch_put(g, sha256, NULL, data, len, created_ms);
}

int tf_op_job_create(tf_wgroup_t *g, const tf_job_rec_t *j)
{
    tf_op_t *op = op_add(g, TF_OP_JOB_CREATE);
    bool ok = op != NULL;

    if (op) {
        tf_op_job_create_t *c = &op->u.job_create;
        c->id = j->id;
        c->user_id = j->user_id;
        c->notify = j->notify;
        c->new_failures_only = j->new_failures_only;
        c->patch_size = j->patch_size;
        c->submitted_ms = j->submitted_ms;
        S(job_create.author, j->author);
        S(job_create.email, j->email);
        S(job_create.notify_email, j->notify_email);
        S(job_create.description, j->description);
        S(job_create.review_url, j->review_url);
        S(job_create.patchset, j->patchset);
        S(job_create.base_revision, j->base_revision);
        S(job_create.patch_sha256, j->patch_sha256);
    }
    return done(g, op, ok);
}

int tf_op_job_running(tf_wgroup_t *g, uint64_t id)
{
    tf_op_t *op = op_add(g, TF_OP_JOB_RUNNING);

    if (op)
        op->u.job_end.id = id;
    return done(g, op, true);
}

int tf_op_job_finish(tf_wgroup_t *g, uint64_t id, const char *state,
                     int result, int64_t time_ms)
{
    tf_op_t *op = op_add(g, TF_OP_JOB_FINISH);
    bool ok = op != NULL;

    if (op) {
        op->u.job_end.id = id;
        op->u.job_end.result = result;
        op->u.job_end.time_ms = time_ms;
        S(job_end.state, state);
    }
    return done(g, op, ok);
}

int tf_op_job_settle(tf_wgroup_t *g, uint64_t id, bool mail,
                     int64_t time_ms)
{
    tf_op_t *op = op_add(g, TF_OP_JOB_SETTLE);

    if (op) {
        op->u.job_end.id = id;
        op->u.job_end.mail = mail;
        op->u.job_end.time_ms = time_ms;
    }
    return done(g, op, true);
}

int tf_op_mail_job(tf_wgroup_t *g, uint64_t job_id, int64_t time_ms)
{
    tf_op_t *op = op_add(g, TF_OP_MAIL_JOB);

    if (op)
        op->u.mail_job = (tf_op_mail_job_t){.job_id = job_id,
                                            .time_ms = time_ms};
    return done(g, op, true);
}

int tf_op_mail_build(tf_wgroup_t *g, uint64_t build_id, const char *builder,
                     int result, int mode, const char *recipients_json,
                     int64_t time_ms)
{
    tf_op_t *op = op_add(g, TF_OP_MAIL_BUILD);
    bool ok = op != NULL;

    if (op) {
        op->u.mail_build.build_id = build_id;
        op->u.mail_build.result = result;
        op->u.mail_build.mode = mode;
        op->u.mail_build.time_ms = time_ms;
        S(mail_build.builder, builder);
        S(mail_build.recipients_json,
          recipients_json ? recipients_json : "[]");
    }
    return done(g, op, ok);
}

int tf_op_user_add(tf_wgroup_t *g, const char *email, const char *name,
                   const char *token_sha256, int64_t time_ms, int *changed)
{
    tf_op_t *op = op_add(g, TF_OP_USER_ADD);
    bool ok = op != NULL;

    if (op) {
        S(user.email, email);
        S(user.name, name);
        S(user.token_sha256, token_sha256);
        op->u.user.time_ms = time_ms;
        op->u.user.changed = changed;
    }
    return done(g, op, ok);
}

int tf_op_user_remove(tf_wgroup_t *g, const char *email, int *changed)
{
    tf_op_t *op = op_add(g, TF_OP_USER_REMOVE);
    bool ok = op != NULL;

    if (op) {
        S(user.email, email);
        op->u.user.changed = changed;
    }
    return done(g, op, ok);
}

/* ------------------------------------------------------------------ */
/* Changes, pollers, schedulers                                        */
/* ------------------------------------------------------------------ */

int tf_op_changes_record(tf_wgroup_t *g, const char *repository,
                         const char *branch, const char *head,
                         const tf_change_rec_t *changes, size_t n,
                         int64_t time_ms, uint64_t *ids_out,
                         bool *fresh_out)
{
    tf_op_t *op = op_add(g, TF_OP_CHANGES_RECORD);
    bool ok = op != NULL;

    if (op) {
        tf_op_changes_record_t *c = &op->u.changes_record;
        S(changes_record.repository, repository);
        S(changes_record.branch, branch);
        S(changes_record.head, head);
        c->time_ms = time_ms;
        c->ids_out = ids_out;
        c->fresh_out = fresh_out;
        c->n = n;
        if (n) {
            tf_change_rec_t *v = n > SIZE_MAX / sizeof(*v)
                                     ? NULL
                                     : arena(g, n * sizeof(*v));
            if (!v)
                ok = false;
            for (size_t i = 0; v && i < n; i++) {
                v[i].revision = dup_str(g, changes[i].revision, &ok);
                v[i].author = dup_str(g, changes[i].author, &ok);
                v[i].email = dup_str(g, changes[i].email, &ok);
                v[i].message = dup_str(g, changes[i].message, &ok);
                v[i].files_json = dup_str(
                    g, changes[i].files_json ? changes[i].files_json : "[]",
                    &ok);
                v[i].committer_ms = changes[i].committer_ms;
            }
            c->changes = v;
        }
    }
    return done(g, op, ok);
}

int tf_op_poller_health(tf_wgroup_t *g, const char *repository,
                        const char *branch, int64_t last_poll_ms,
                        int64_t last_ok_ms, const char *last_error,
                        int64_t failing_since_ms)
{
    tf_op_t *op = op_add(g, TF_OP_POLLER_HEALTH);
    bool ok = op != NULL;

    if (op) {
        S(poller_health.repository, repository);
        S(poller_health.branch, branch);
        S(poller_health.last_error, last_error);
        op->u.poller_health.last_poll_ms = last_poll_ms;
        op->u.poller_health.last_ok_ms = last_ok_ms;
        op->u.poller_health.failing_since_ms = failing_since_ms;
    }
    return done(g, op, ok);
}

int tf_op_scheduler_state(tf_wgroup_t *g, const char *name,
                          int64_t last_fired_ms, const char *last_revision,
                          int64_t next_fire_ms)
{
    tf_op_t *op = op_add(g, TF_OP_SCHEDULER_STATE);
    bool ok = op != NULL;

    if (op) {
        S(scheduler_state.name, name);
        S(scheduler_state.last_revision, last_revision);
        op->u.scheduler_state.last_fired_ms = last_fired_ms;
        op->u.scheduler_state.next_fire_ms = next_fire_ms;
    }
    return done(g, op, ok);
}

/* ------------------------------------------------------------------ */
/* The sqlite escape hatches (store_sqlite.h)                          */
/* ------------------------------------------------------------------ */

static void free_owned_vals(const tf_sqlval_t *vals, size_t n)
{
    for (size_t i = 0; vals && i < n; i++)
        if (vals[i].kind == TF_SQL_BLOB_OWNED)
            free((void *)vals[i].p);
}

int tf_op_sql(tf_wgroup_t *g, const char *sql, const tf_sqlval_t *vals,
              size_t nvals)
{
    tf_op_t *op;
    tf_sqlval_t *copy = NULL;
    bool ok = true;

    if (!g || !sql || (nvals && !vals)) {
        free_owned_vals(vals, nvals);
        return TF_EINVAL;
    }
    for (size_t i = 0; i < nvals; i++) {
        bool blob = vals[i].kind == TF_SQL_BLOB ||
                    vals[i].kind == TF_SQL_BLOB_OWNED;
        if ((blob && !vals[i].p && vals[i].n) || vals[i].kind < TF_SQL_NULL ||
            vals[i].kind > TF_SQL_BLOB_OWNED) {
            free_owned_vals(vals, nvals);
            return TF_EINVAL;
        }
    }
    op = op_add(g, TF_OP_SQL);
    if (op && nvals) {
        copy = nvals > SIZE_MAX / sizeof(*copy)
                   ? NULL
                   : arena(g, nvals * sizeof(*copy));
        ok = copy != NULL;
    }
    for (size_t i = 0; i < nvals; i++) {
        tf_sqlval_t v = vals[i];
        if (!op || !copy) {
            if (v.kind == TF_SQL_BLOB_OWNED)
                free((void *)v.p);
            continue;
        }
        if (v.kind == TF_SQL_TEXT && v.p) {
            v.p = dup_str(g, v.p, &ok);
        } else if (v.kind == TF_SQL_BLOB) {
            v.p = v.n ? dup_mem(g, v.p, v.n, &ok) : NULL;
        } else if (v.kind == TF_SQL_BLOB_OWNED) {
            ok = take(g, (void *)v.p, v.n) && ok;
            if (!ok)
                v.p = NULL;
        }
        copy[i] = v;
    }
    if (op) {
        op->u.sql.sql = sql;
        op->u.sql.vals = copy;
        op->u.sql.nvals = nvals;
    }
    return done(g, op, ok);
}

int tf_op_sql_fn(tf_wgroup_t *g, tf_store_txn_fn fn, void *arg,
                 size_t cost_bytes)
{
    tf_op_t *op;

    if (!g || !fn)
        return TF_EINVAL;
    op = op_add(g, TF_OP_SQL_FN);
    if (op) {
        op->u.sql_fn.fn = fn;
        op->u.sql_fn.arg = arg;
        if (g->cost > SIZE_MAX - cost_bytes)
            g->cost = SIZE_MAX;
        else
            g->cost += cost_bytes;
    }
    return done(g, op, true);
}

tf_sqlval_t tf_sql_int(int64_t i)
{
    return (tf_sqlval_t){.kind = TF_SQL_INT, .i = i};
}

tf_sqlval_t tf_sql_text(const char *s)
{
    if (!s)
        return tf_sql_null();
    return (tf_sqlval_t){.kind = TF_SQL_TEXT, .p = s};
}

tf_sqlval_t tf_sql_blob(const void *p, size_t n)
{
    return (tf_sqlval_t){.kind = TF_SQL_BLOB, .p = p, .n = n};
}

tf_sqlval_t tf_sql_blob_owned(void *p, size_t n)
{
    return (tf_sqlval_t){.kind = TF_SQL_BLOB_OWNED, .p = p, .n = n};
}

tf_sqlval_t tf_sql_null(void)
{
    return (tf_sqlval_t){.kind = TF_SQL_NULL};
}
