/*
 * build.c - the life of a build on the master.
 *
 *          tf_build_start                    rows committed,
 *   NEW ----------------> STARTING -----------build_start sent---> RUNNING
 *    |                     |    |                                    |
 *    | restored after      |    +--rows failed--> DROPPED (freed;    |
 *    | a restart           |                      the request is     |
 *    +---------------------|--------------------> queued again)      |
 *                          |                                         |
 *                          +--cancelled, lost, abandoned--+          |
 *                                                         v          |
 *                       ENDING <--build_finished, lost, cancelled----+
 *                         |
 *                         +--end committed and acknowledged--> freed
 *
 * Every change of state goes through build_set_state(), which logs it and
 * asserts the move is one of these.
 *
 * Events from the slave (docs/protocol.md, "Build events") are numbered per
 * build. The master applies them strictly in order and queues each one's
 * operations as one write group holding tf_op_build_seq: the store's
 * event chain, which refuses a group whose build is not at the event
 * before it, so nothing after a lost event is ever stored. An event is
 * acknowledged only after its group committed (committed_seq), never
 * because a later one did: an ack is a promise that the slave may forget
 * the event, so acks only go up and never cover an event that was not
 * stored. Duplicates (a replay after a reconnect) are dropped (an ack or
 * welcome.resume covers them); a gap, an event out of the one ordering
 * rule (event_allowed), or an event for a build the master does not run on
 * that slave is a protocol error, refused without an ack.
 *
 * A request whose build_start cannot be encoded (over the protocol's cap,
 * or a value it refuses) never reaches a slave: its build is recorded as
 * EXCEPTION at once, so it cannot sit at the head of its builder's queue.
 *
 * When an event's group fails (the queue was full, memory ran out, the
 * store refused it), the build is broken: the slave's link is closed
 * with "resync" and events are dropped until every group of the build
 * still in flight has come back (earlier ones may still commit; later
 * ones fail on the chain). Then it is restored: its steps go back to
 * what the last stored event left (the committed mirror, csteps, moved
 * forward by each commit), accepted_seq back to committed_seq, and the
 * slave, reconnected, resends every unacknowledged event from its spool,
 * which the build applies again.
 * build_finished waits until the events before it have committed, so
 * the end of a build (which frees its request, ends its job, queues mail)
 * is never applied on top of a hole; if the end's own group fails, the
 * group is kept and resubmitted every second until it commits.
 *
 * A build whose slave disconnects keeps running on the slave; it waits here
 * (lost_since_ms set) for the slave to come back and resume it. If the slave
 * returns without it, or stays away longer than build_lost_after_s, the
 * build ends as RETRY and its request goes back in the queue (up to
 * max_retries times). Several masters: the slave may run it for another
 * master by then, which took the build over (its owner in the database);
 * this master asks the database first and, when the build is another's,
 * drops its copy without ending it (build_forget). The end itself is
 * stored only by the build's owner: an end group refused for that
 * (TF_ESTATE) is dropped, not retried (end_lost). When the slave comes
 * back with the build to this master after running it for another (the
 * A->B->A move), tf_master_adopt asks the database before the welcome
 * (the build is `returning` meanwhile, out of the lost timer's reach);
 * a copy that is another master's now, or whose build ended, is dropped
 * at once (tf_build_forget_stale) and the build taken over afresh.
 *
 * The authoritative result is computed here from the step results and the
 * step flags with tf_result_fold; the slave's own result is informational.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "core/jobs.h"
#include "core/master.h"
#include "core/props.h"
#include "tf_err.h"
#include "tpl.h"
#include "util.h"

/* What a write group of a build was for, for its done callback. */
typedef enum {
    EC_ROWS,  /* the build's creation */
    EC_EVENT, /* one event of the slave */
    EC_END,   /* the build's end (kept and retried until it commits) */
} ec_kind_t;

/* The context of a build's write group, living in the group itself
 * (tf_wgroup_alloc). For an event: the step it changed as it was after
 * the event, which the commit copies into the committed mirror. */
typedef struct event_commit {
    tf_master_t *m;
    ec_kind_t kind;
    uint64_t build_id;
    uint64_t seq;      /* the event's seq; 0 when the group has none */
    unsigned epoch;    /* the build's epoch when queued (resyncs move it) */
    int step;          /* the step it changed, or -1 */
    tf_bstep_t after;
    int64_t started_ms;
    tf_wgroup_t *group; /* EC_END: to resubmit after a failure */
    uint64_t request_id; /* EC_END: the build's request, 0 for none */
    struct event_commit *next_retry;
} event_commit_t;

static void build_unlink(tf_master_t *m, tf_build_t *b);
static void build_apply_finish(tf_master_t *m, tf_build_t *b);
static void build_end_forced(tf_master_t *m, tf_build_t *b, tf_result_t result,
                             const char *text);
static void ack_owed(tf_master_t *m, tf_build_t *b);
static void lost_check_owner(tf_master_t *m, tf_build_t *b,
                             bool back_without);

static const char *build_state_name(tf_build_state_t s)
{
    switch (s) {
    case TF_BUILD_NEW:
        return "NEW";
    case TF_BUILD_STARTING:
        return "STARTING";
    case TF_BUILD_RUNNING:
        return "RUNNING";
    case TF_BUILD_ENDING:
        return "ENDING";
    case TF_BUILD_DROPPED:
        return "DROPPED";
    }
    return "?";
}

/* The one place a build changes state (the machine in the header). */
static void build_set_state(tf_build_t *b, tf_build_state_t to,
                            const char *why)
{
    tf_build_state_t from = b->state;
    bool ok = (from == TF_BUILD_NEW &&
               (to == TF_BUILD_STARTING || to == TF_BUILD_RUNNING)) ||
              (from == TF_BUILD_STARTING &&
               (to == TF_BUILD_RUNNING || to == TF_BUILD_ENDING ||
                to == TF_BUILD_DROPPED)) ||
              (from == TF_BUILD_RUNNING && to == TF_BUILD_ENDING);
    if (!ok) {
        tf_error("build", "build %" PRIu64 ": illegal transition %s -> %s "
                 "(%s)", b->id, build_state_name(from), build_state_name(to),
                 why);
        assert(!"illegal build state transition");
        return;
    }
    tf_debug("build", "build %" PRIu64 ": %s -> %s (%s)", b->id,
             build_state_name(from), build_state_name(to), why);
    b->state = to;
}

/* src into dst[0..size) as snprintf(dst, size, "%s", src) writes it (cut
 * to size - 1 bytes, NUL-terminated), without its format parsing: a
 * build start copies a few names. */
static void name_copy(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* v in decimal into out, NUL-terminated, as "%" PRIu64 writes it. */
static void u64_text(char out[24], uint64_t v)
{
    out[tf_u64_dec(out, v)] = '\0';
}

tf_build_t *tf_build_new(uint64_t id, const char *builder, uint64_t number,
                         const char *slave, size_t nsteps)
{
    tf_build_t *b = calloc(1, sizeof(*b));

    if (!b)
        return NULL;
    b->steps = calloc(nsteps ? nsteps : 1, sizeof(tf_bstep_t));
    b->csteps = calloc(nsteps ? nsteps : 1, sizeof(tf_bstep_t));
    if (!b->steps || !b->csteps) {
        tf_build_free(b);
        return NULL;
    }
    b->id = id;
    b->number = number;
    b->nsteps = nsteps;
    b->result = TF_SUCCESS;
    name_copy(b->builder, sizeof(b->builder), builder ? builder : "");
    name_copy(b->slave, sizeof(b->slave), slave ? slave : "");
    tf_list_init(&b->slave_node);
    tf_list_init(&b->ack_node);
    return b;
}

/* Folds the finished steps into the build's result (a restart, a resync). */
static void build_refold(tf_build_t *b)
{
    b->result = TF_SUCCESS;
    b->terminated = false;
    for (size_t i = 0; i < b->nsteps; i++) {
        tf_bstep_t *s = &b->steps[i];
        if (s->finished) {
            bool term = false;
            b->result = tf_result_fold(b->result, s->result, &s->flags, &term);
            b->terminated = b->terminated || term;
        }
    }
}

void tf_build_restored(tf_build_t *b)
{
    build_refold(b);
    memcpy(b->csteps, b->steps, b->nsteps * sizeof(tf_bstep_t));
    b->c_started_ms = b->started_ms;
    build_set_state(b, TF_BUILD_RUNNING, "restored after a restart");
}

void tf_build_free(tf_build_t *b)
{
    if (!b)
        return;
    free(b->steps);
    free(b->csteps);
    free(b->start_msg);
    free(b);
}

/* The write group of one of b's changes, with its commit context (in the
 * group, so nothing else to allocate). NULL when out of memory (then
 * m->group is failed or NULL and the commit reports it). */
static event_commit_t *build_group(tf_master_t *m, tf_build_t *b,
                                   ec_kind_t kind, uint64_t seq, size_t hint)
{
    event_commit_t *ec;

    tf_master_group_begin(m, hint + sizeof(*ec));
    ec = tf_wgroup_alloc(m->group, sizeof(*ec));
    if (!ec)
        return NULL;
    ec->m = m;
    ec->kind = kind;
    ec->build_id = b->id;
    ec->seq = seq;
    ec->epoch = b->epoch;
    ec->step = -1;
    ec->request_id = 0;
    ec->group = m->group;
    if (seq)
        tf_op_build_seq(m->group, b->id, seq);
    return ec;
}

/* Adds "key": "value" for each property, later sources overriding. */
static void props_merge_text(json_t *props, const char *json_text)
{
    if (!json_text || !*json_text || strcmp(json_text, "{}") == 0)
        return;
    json_t *o = json_loads(json_text, 0, NULL);
    if (json_is_object(o))
        json_object_update(props, o);
    json_decref(o);
}

/* The tests of a request as one space-separated string ("" for none). */
static char *tests_string(const tf_request_t *r)
{
    if (!r->tests || strcmp(r->tests, "[]") == 0)
        return strdup(""); /* the usual case: nothing to parse */
    json_t *arr = json_loads(r->tests, 0, NULL);
    tf_buf_t b;
    tf_buf_init(&b, 64 * 1024);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (json_is_string(v))
            tf_buf_printf(&b, "%s%s", b.len ? " " : "", json_string_value(v));
    }
    json_decref(arr);
    char *out = b.data ? (char *)tf_buf_steal(&b, NULL) : strdup("");
    tf_buf_free(&b);
    return out;
}

/* The properties of build b of builder cfg (NULL: no longer configured)
 * running r. */
static json_t *build_properties(const tf_cfg_builder_t *cfg,
                                const tf_build_t *b, const tf_request_t *r)
{
    json_t *p = json_object();
    if (!p)
        return NULL;
    for (size_t i = 0; cfg && i < cfg->nprops; i++)
        json_object_set_new(p, cfg->props[i].key,
                            json_string(cfg->props[i].value));
    props_merge_text(p, r->properties);
    char num[32];
    snprintf(num, sizeof(num), "%" PRIu64, b->number);
    json_object_set_new(p, "builder", json_string(b->builder));
    json_object_set_new(p, "buildnumber", json_string(num));
    json_object_set_new(p, "slave", json_string(b->slave));
    if (r->owner && *r->owner)
        json_object_set_new(p, "owner", json_string(r->owner));
    if (cfg && cfg->repository) {
        json_object_set_new(p, "repository", json_string(cfg->repository));
        json_object_set_new(p, "branch", json_string(cfg->branch));
    }
    json_object_set_new(p, "revision",
                        json_string(r->revision ? r->revision : ""));
    char *tests = tests_string(r);
    json_object_set_new(p, "tests", json_string(tests ? tests : ""));
    free(tests);
    if (r->job_id) {
        snprintf(num, sizeof(num), "%" PRIu64, r->job_id);
        json_object_set_new(p, "job_id", json_string(num));
    }
    if (r->scheduler)
        json_object_set_new(p, "scheduler", json_string(r->scheduler));
    if (r->scheduler || r->nchanges) {
        snprintf(num, sizeof(num), "%zu", r->nchanges);
        json_object_set_new(p, "changes", json_string(num));
    }
    return p;
}

static void steps_free(tf_step_spec_t *steps, size_t n)
{
    for (size_t i = 0; steps && i < n; i++)
        tf_step_spec_clear(&steps[i]);
    free(steps);
}

/* Adds KEY=VALUE to a step's env unless the step sets KEY itself. */
static int env_add(tf_step_spec_t *sp, const char *key, const char *value)
{
    for (size_t i = 0; i < sp->nenv; i++)
        if (strcmp(sp->env[i].key, key) == 0)
            return 0;
    tf_kv_t *e = realloc(sp->env, (sp->nenv + 1) * sizeof(*e));
    if (!e)
        return TF_ENOMEM;
    sp->env = e;
    e[sp->nenv].key = strdup(key);
    e[sp->nenv].value = strdup(value);
    sp->nenv++;
    return e[sp->nenv - 1].key && e[sp->nenv - 1].value ? 0 : TF_ENOMEM;
}

/* Replaces *s by its interpolation, quoted for a shell when shell. */
static int interp(char **s, const json_t *props, bool shell)
{
    char *v = shell ? tf_interpolate_shell(*s, props)
                    : tf_interpolate(*s, props);
    if (!v)
        return TF_ENOMEM;
    free(*s);
    *s = v;
    return 0;
}

/* The steps a build runs: the source step first when the builder has a
 * repository, then the configured steps with properties interpolated into
 * their commands and environment, and TF_TESTS set when tests were asked
 * for. The caller frees them with steps_free. */
static int build_steps(const tf_cfg_builder_t *cfg, const tf_request_t *r,
                       const json_t *props, tf_step_spec_t **out, size_t *n)
{
    bool src = cfg->repository != NULL;
    size_t total = cfg->nsteps + (src ? 1 : 0), k = 0;
    tf_step_spec_t *steps = calloc(total, sizeof(*steps));
    const char *tests = json_string_value(json_object_get(props, "tests"));
    int rc = TF_ENOMEM;
    if (!steps)
        return rc;
    if (src) {
        tf_step_spec_t *sp = &steps[k++];
        char target[TF_REF_MAX + 16];
        if (r->revision && *r->revision)
            snprintf(target, sizeof(target), "%s", r->revision);
        else
            snprintf(target, sizeof(target), "origin/%s", cfg->branch);
        sp->name = strdup("source");
        sp->workdir = strdup("");
        sp->builtin = strdup(TF_BUILTIN_SOURCE);
        sp->argv = calloc(4, sizeof(char *));
        if (!sp->name || !sp->workdir || !sp->builtin || !sp->argv)
            goto fail;
        sp->argc = 3;
        sp->argv[0] = strdup("git");
        sp->argv[1] = strdup("checkout");
        sp->argv[2] = strdup(target);
        if (!sp->argv[0] || !sp->argv[1] || !sp->argv[2])
            goto fail;
        sp->timeout_s = 1200;
        sp->flags = tf_step_flags_default();
        sp->flags.halt_on_failure = true;
    }
    for (size_t i = 0; i < cfg->nsteps; i++, k++) {
        tf_step_spec_t *sp = &steps[k];
        if ((rc = tf_step_spec_copy(sp, &cfg->steps[i].spec)) != 0)
            goto fail;
        rc = TF_ENOMEM;
        /* A shell string's script (argv[2] of /bin/sh -c) gets every
         * value quoted as one shell word; argv elements stay as they are,
         * one element each (props.h). */
        for (size_t a = 0; a < sp->argc; a++)
            if (interp(&sp->argv[a], props,
                       cfg->steps[i].shell && a == 2) != 0)
                goto fail;
        for (size_t e = 0; e < sp->nenv; e++)
            if (interp(&sp->env[e].value, props, false) != 0)
                goto fail;
        if (tests && *tests && env_add(sp, "TF_TESTS", tests) != 0)
            goto fail;
    }
    *out = steps;
    *n = total;
    return 0;
fail:
    steps_free(steps, total);
    return rc;
}

/* The argv of a step as JSON text (the steps table keeps it). */
static char *command_json(const tf_step_spec_t *sp)
{
    json_t *argv = json_array();
    char *cmd;

    for (size_t k = 0; argv && k < sp->argc; k++)
        json_array_append_new(argv, json_string(sp->argv[k]));
    cmd = argv ? json_dumps(argv, JSON_COMPACT) : NULL;
    json_decref(argv);
    return cmd;
}

/* The properties as the builds row keeps them (malloc'd, the caller's;
 * NULL when out of memory). */
static char *props_dump(const json_t *props)
{
    return json_dumps(props, JSON_COMPACT | JSON_SORT_KEYS);
}

/* The rows text of a build with props and steps: its properties
 * (props_dump), then each step's command (command_json), then with names
 * each step's name, each followed by a NUL. *out is malloc'd, the
 * caller's. Returns 0 or TF_ENOMEM. */
static int rows_pack(const json_t *props, const tf_step_spec_t *steps,
                     size_t nsteps, bool names, char **out, size_t *len)
{
    tf_buf_t b;
    char *text = props_dump(props);
    int rc = text ? 0 : TF_ENOMEM;

    tf_buf_init(&b, 0);
    if (text)
        rc = tf_buf_append(&b, text, strlen(text) + 1);
    free(text);
    for (size_t i = 0; rc == 0 && i < nsteps; i++) {
        text = command_json(&steps[i]);
        rc = text ? tf_buf_append(&b, text, strlen(text) + 1) : TF_ENOMEM;
        free(text);
    }
    for (size_t i = 0; names && rc == 0 && i < nsteps; i++)
        rc = tf_buf_append(&b, steps[i].name, strlen(steps[i].name) + 1);
    if (rc == 0) {
        *out = (char *)tf_buf_steal(&b, len);
        rc = *out ? 0 : TF_ENOMEM;
    }
    tf_buf_free(&b);
    return rc == TF_E2BIG ? TF_ENOMEM : rc;
}

/* Points rows' properties and steps into rows->text, which holds what
 * rows_pack writes (names with names; else they stay the caller's to
 * set). Returns 0, TF_EINVAL when the text has fewer pieces, or
 * TF_ENOMEM. */
static int rows_split(tf_build_rows_t *rows, size_t nsteps, bool names)
{
    const char *p = rows->text, *end = rows->text + rows->len;

    rows->steps = calloc(nsteps ? nsteps : 1, sizeof(*rows->steps));
    if (!rows->steps)
        return TF_ENOMEM;
    rows->nsteps = nsteps;
    rows->properties = p;
    p += strlen(p) + 1;
    for (size_t i = 0; i < nsteps; i++) {
        if (p >= end)
            return TF_EINVAL;
        rows->steps[i].command_json = p;
        p += strlen(p) + 1;
    }
    for (size_t i = 0; names && i < nsteps; i++) {
        if (p >= end)
            return TF_EINVAL;
        rows->steps[i].name = p;
        p += strlen(p) + 1;
    }
    return 0;
}

void tf_build_rows_clear(tf_build_rows_t *rows)
{
    if (!rows)
        return;
    free(rows->text);
    free(rows->steps);
    memset(rows, 0, sizeof(*rows));
}

/* The rows of a build with props and steps, computed (the path of every
 * start the templates do not serve): *rows the caller's
 * (tf_build_rows_clear), also after a failure. Returns 0 or TF_ENOMEM. */
static int rows_compute(const json_t *props, const tf_step_spec_t *steps,
                        size_t nsteps, tf_build_rows_t *rows)
{
    int rc = rows_pack(props, steps, nsteps, true, &rows->text, &rows->len);

    if (rc == 0)
        rc = rows_split(rows, nsteps, true);
    for (size_t i = 0; rc == 0 && i < nsteps; i++)
        rows->steps[i].flags = tf_flags_bits(&steps[i].flags);
    return rc;
}

/* Encodes the build_start message for b. When the protocol refuses it
 * (TF_E2BIG, TF_EINVAL), err says why. */
static int build_encode_start(tf_build_t *b, const tf_cfg_builder_t *cfg,
                              const tf_request_t *r, json_t *props,
                              tf_step_spec_t *steps, size_t nsteps, char *err,
                              size_t errlen)
{
    tf_msg_t msg = {.type = TF_MSG_BUILD_START};
    tf_source_t source = {0};
    msg.u.build_start.build_id = b->id;
    msg.u.build_start.builder = b->builder;
    msg.u.build_start.number = b->number;
    msg.u.build_start.workdir = b->builder;
    size_t nprops = json_object_size(props);
    tf_kv_t *kv = calloc(nprops ? nprops : 1, sizeof(tf_kv_t));
    int rc = TF_ENOMEM;
    if (!kv)
        goto out;
    const char *key;
    json_t *val;
    size_t i = 0;
    json_object_foreach(props, key, val)
    {
        kv[i].key = (char *)key;
        kv[i].value = (char *)json_string_value(val);
        i++;
    }
    msg.u.build_start.props = kv;
    msg.u.build_start.nprops = i;
    msg.u.build_start.steps = steps;
    msg.u.build_start.nsteps = nsteps;
    if (cfg->repository) {
        source.repository = cfg->repository;
        source.branch = cfg->branch;
        source.revision = r->revision ? r->revision : "";
        if (r->patch_sha256[0]) {
            source.has_patch = true;
            memcpy(source.patch_sha256, r->patch_sha256,
                   sizeof(source.patch_sha256));
            source.patch_size = r->patch_size;
        }
        msg.u.build_start.source = &source;
    }
    rc = tf_msg_encode_err(&msg, &b->start_msg, &b->start_len, err, errlen);
out:
    free(kv);
    return rc;
}


/* --- build_start from a template ---
 *
 * Two builds of one builder whose requests have the same shape differ in
 * their build_start only by the build id, the number, the slave, the
 * revision and the owner. The first start of a shape renders it through
 * the encoder (validated as always) with sentinels for those values; the
 * template keeps the bytes around them (common/tpl.h) and later starts
 * splice the real values in: no jansson tree, no validation pass, no dump
 * per build. A request that carries anything else (its own properties,
 * tests, a patch, a try job, a scheduler and its changes) or a value the
 * encoder would escape takes the encoder, as does a builder whose recipe
 * was not computed. A sentinel that shows up other than where expected (a
 * property interpolated into a command, a configured value that happens
 * to hold it) makes the shape unusable: it takes the encoder for good.
 * A reload drops every builder's templates (sync_config: a recipe is
 * measured before interpolation, so two configs with one recipe may
 * still render apart); a template also remembers the recipe it was made
 * for and is made again when its builder's differs.
 * tests/unit/test_build_start.c checks both ways give the same bytes;
 * test_lifecycle.py that a reload drops the templates.
 *
 * The rows such a build stores come from the same rendering: the builds
 * row's properties text and each step's command (JSON, as rows_pack
 * writes them from the sentinels' properties and steps) are a second
 * template of the shape, checked for its own sentinel counts, and each
 * step's name and flags are kept as they are (no value changes them). A
 * start from the template with its rows from there computes no
 * properties, no steps and no JSON at all. A shape whose rows template
 * cannot be made (a count that differs) still takes its build_start from
 * the template but computes its rows through jansson, as a request of
 * any other shape does. tests/unit/test_build_start.c compares both ways
 * byte for byte here too. */

enum { TS_ID, TS_NUMBER, TS_SLAVE, TS_REVISION, TS_OWNER, TS__N };
static const char *const ts_sentinel[TS__N] = {
    "8106372954012657", "7205481639025168", "tfTplSlave7c1e9a3b",
    "f00dfacecafe7c1e9a3b5d2e8f4a6c0b1d3e5f7a", "tfTplOwner5d2e8f4a"};

typedef enum { TPL_NONE = 0, TPL_OK, TPL_UNUSABLE } tpl_state_t;

#define TPL_SHAPES 4 /* with or without a revision, an owner */

typedef struct row_step {
    char *name; /* malloc'd */
    tf_step_flags_t flags;
} row_step_t;

struct tf_start_tpl {
    tpl_state_t state;
    char recipe[65]; /* the builder's recipe it was made for */
    tf_tpl_t tpl;
    /* Its builds' rows (rows_pack without names), when state is TPL_OK
     * and rows_state too; the steps' names and flags. */
    tpl_state_t rows_state;
    tf_tpl_t rows;
    row_step_t *steps;
    size_t nsteps;
};

/* Frees st's rows template and its steps' names and flags. */
static void rows_tpl_clear(struct tf_start_tpl *st)
{
    tf_tpl_clear(&st->rows);
    for (size_t i = 0; st->steps && i < st->nsteps; i++)
        free(st->steps[i].name);
    free(st->steps);
    st->steps = NULL;
    st->nsteps = 0;
}

/* Empties st (state TPL_NONE), freeing what it holds. */
static void start_tpl_clear(struct tf_start_tpl *st)
{
    tf_tpl_clear(&st->tpl);
    rows_tpl_clear(st);
    memset(st, 0, sizeof(*st));
}

void tf_build_templates_free(tf_mbuilder_t *mb)
{
    if (!mb || !mb->start_tpl)
        return;
    for (size_t i = 0; i < TPL_SHAPES; i++)
        start_tpl_clear(&mb->start_tpl[i]);
    free(mb->start_tpl);
    mb->start_tpl = NULL;
}

/* Whether the encoder writes v byte for byte as it is, inside a JSON
 * string: printable ASCII without '"' and '\', at most max bytes. */
static bool splice_safe(const char *v, size_t max)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++, n++)
        if (*p < 0x20 || *p > 0x7e || *p == '"' || *p == '\\' || n >= max)
            return false;
    return true;
}

static bool text_empty(const char *t, const char *empty)
{
    return !t || !*t || strcmp(t, empty) == 0;
}

/* The template shape of r for cfg (0..TPL_SHAPES-1), or -1 when r's
 * build_start must come from the encoder. */
static int tpl_shape(const tf_cfg_builder_t *cfg, const tf_request_t *r,
                     const char *slave)
{
    bool rev = r->revision && *r->revision;
    bool owner = r->owner && *r->owner;

    if (!cfg->recipe[0] || !text_empty(r->properties, "{}") ||
        !text_empty(r->tests, "[]") || r->job_id || r->scheduler ||
        r->nchanges || r->patch_sha256[0])
        return -1;
    if (!splice_safe(slave, TF_NAME_MAX))
        return -1;
    /* The revision is validated where the source carries it. */
    if (rev && (!splice_safe(r->revision, TF_REF_MAX) ||
                (cfg->repository && !tf_git_rev_valid(r->revision))))
        return -1;
    if (owner && !splice_safe(r->owner, TF_PROTO_MAX_TEXT))
        return -1;
    return (rev ? 1 : 0) | (owner ? 2 : 0);
}

static json_t *build_properties(const tf_cfg_builder_t *cfg,
                                const tf_build_t *b, const tf_request_t *r);
static int build_steps(const tf_cfg_builder_t *cfg, const tf_request_t *r,
                       const json_t *props, tf_step_spec_t **out, size_t *n);
static void steps_free(tf_step_spec_t *steps, size_t n);
static int build_encode_start(tf_build_t *b, const tf_cfg_builder_t *cfg,
                              const tf_request_t *r, json_t *props,
                              tf_step_spec_t *steps, size_t nsteps, char *err,
                              size_t errlen);

/* The properties and steps of build (id, number) of builder name (cfg)
 * on slave for r, as tf_build_start computes them: *props and *steps the
 * caller's (json_decref, steps_free), also after a failure; probe is the
 * throwaway build they were computed for. Returns 0 or TF_ENOMEM. */
static int build_compute(const tf_cfg_builder_t *cfg, const char *name,
                         const tf_request_t *r, tf_build_t *probe,
                         uint64_t id, uint64_t number, const char *slave,
                         json_t **props, tf_step_spec_t **steps,
                         size_t *nsteps)
{
    memset(probe, 0, sizeof(*probe));
    probe->id = id;
    probe->number = number;
    snprintf(probe->builder, sizeof(probe->builder), "%s", name);
    snprintf(probe->slave, sizeof(probe->slave), "%s", slave);
    *steps = NULL;
    *nsteps = 0;
    *props = build_properties(cfg, probe, r);
    if (!*props)
        return TF_ENOMEM;
    return build_steps(cfg, r, *props, steps, nsteps);
}

/* Renders the build_start of build (id, number) of builder name (cfg) on
 * slave for r through the encoder: *out malloc'd, the caller's. */
static int start_encode(const tf_cfg_builder_t *cfg, const char *name,
                        const tf_request_t *r, uint64_t id, uint64_t number,
                        const char *slave, char **out, size_t *len)
{
    tf_build_t probe;
    tf_step_spec_t *steps = NULL;
    size_t nsteps = 0;
    json_t *props = NULL;
    char why[300];
    int rc = build_compute(cfg, name, r, &probe, id, number, slave, &props,
                           &steps, &nsteps);

    if (rc == 0)
        rc = build_encode_start(&probe, cfg, r, props, steps, nsteps, why,
                                sizeof(why));
    steps_free(steps, nsteps);
    json_decref(props);
    *out = probe.start_msg;
    *len = probe.start_len;
    return rc;
}

/* Makes the rows template of st from the sentinels' properties and steps,
 * with counts[] sentinels expected in it. Returns 0, TF_EINVAL (the
 * counts differ: unusable) or TF_ENOMEM; st's rows stay empty unless 0. */
static int rows_tpl_make(struct tf_start_tpl *st, const json_t *props,
                         const tf_step_spec_t *steps, size_t nsteps,
                         const unsigned *counts)
{
    char *text = NULL;
    size_t len = 0;
    int rc = rows_pack(props, steps, nsteps, false, &text, &len);

    if (rc == 0)
        rc = tf_tpl_make(&st->rows, text, len, ts_sentinel, counts, TS__N);
    free(text);
    if (rc == 0 && !(st->steps = calloc(nsteps ? nsteps : 1,
                                        sizeof(*st->steps))))
        rc = TF_ENOMEM;
    for (size_t i = 0; rc == 0 && i < nsteps; i++) {
        st->steps[i].flags = steps[i].flags;
        if (!(st->steps[i].name = strdup(steps[i].name)))
            rc = TF_ENOMEM;
        st->nsteps = i + 1;
    }
    if (rc)
        rows_tpl_clear(st);
    return rc;
}

/* Makes st, the templates of shape for builder name (cfg), from the
 * encoder's rendering with the sentinels: its build_start (the return
 * value: 0, TF_EINVAL when unusable, TF_ENOMEM) and, when that is made,
 * its rows (st->rows_state). On TF_ENOMEM st is left empty. */
static int tpl_make(const tf_cfg_builder_t *cfg, const char *name,
                    const tf_request_t *r, int shape, struct tf_start_tpl *st)
{
    tf_request_t fake = *r; /* read only: its pointers stay r's */
    bool rev = shape & 1, owner = shape & 2;
    unsigned counts[TS__N] = {
        [TS_ID] = 1, [TS_NUMBER] = 2, [TS_SLAVE] = 1,
        /* props.revision, and the source step's target and source.revision
         * when the builder has a repository */
        [TS_REVISION] = rev ? (cfg->repository ? 3 : 1) : 0,
        [TS_OWNER] = owner ? 1 : 0,
    };
    /* The rows have no build id, the number once (props.buildnumber),
     * props.revision and the source step's target (its command). */
    unsigned row_counts[TS__N] = {
        [TS_ID] = 0, [TS_NUMBER] = 1, [TS_SLAVE] = 1,
        [TS_REVISION] = rev ? (cfg->repository ? 2 : 1) : 0,
        [TS_OWNER] = owner ? 1 : 0,
    };
    tf_build_t probe;
    tf_step_spec_t *steps = NULL;
    size_t nsteps = 0;
    json_t *props = NULL;
    char why[300];
    uint64_t id, number;

    fake.revision = rev ? (char *)ts_sentinel[TS_REVISION] : NULL;
    fake.owner = owner ? (char *)ts_sentinel[TS_OWNER] : NULL;
    sscanf(ts_sentinel[TS_ID], "%" SCNu64, &id);
    sscanf(ts_sentinel[TS_NUMBER], "%" SCNu64, &number);
    int rc = build_compute(cfg, name, &fake, &probe, id, number,
                           ts_sentinel[TS_SLAVE], &props, &steps, &nsteps);
    if (rc == 0)
        rc = build_encode_start(&probe, cfg, &fake, props, steps, nsteps, why,
                                sizeof(why));
    if (rc == 0)
        rc = tf_tpl_make(&st->tpl, probe.start_msg, probe.start_len,
                         ts_sentinel, counts, TS__N);
    if (rc == 0) {
        int rrc = rows_tpl_make(st, props, steps, nsteps, row_counts);
        if (rrc == TF_ENOMEM)
            rc = rrc;
        st->rows_state = rrc ? TPL_UNUSABLE : TPL_OK;
    }
    if (rc == TF_ENOMEM)
        start_tpl_clear(st);
    free(probe.start_msg);
    steps_free(steps, nsteps);
    json_decref(props);
    return rc;
}

/* The build_start of build (id, number) on slave for r from mb's template
 * of r's shape, made first if needed. Returns 0 with *out (malloc'd, the
 * caller's) and *used, the templates of that shape (mb's, for
 * rows_from_template), or TF_ENOENT when r must take the encoder (its
 * shape, or a result over the protocol's cap), or TF_ENOMEM. */
static int start_from_template(tf_mbuilder_t *mb, const tf_request_t *r,
                               uint64_t id, uint64_t number,
                               const char *slave, char **out, size_t *len,
                               const struct tf_start_tpl **used)
{
    const tf_cfg_builder_t *cfg = mb->cfg;
    int shape = cfg ? tpl_shape(cfg, r, slave) : -1;
    char sid[24], snum[24];

    *out = NULL;
    *len = 0;
    *used = NULL;
    if (shape < 0)
        return TF_ENOENT;
    if (!mb->start_tpl &&
        !(mb->start_tpl = calloc(TPL_SHAPES, sizeof(*mb->start_tpl))))
        return TF_ENOMEM;
    struct tf_start_tpl *st = &mb->start_tpl[shape];
    if (st->state != TPL_NONE && strcmp(st->recipe, cfg->recipe) != 0)
        start_tpl_clear(st); /* the builder changed: made again */
    if (st->state == TPL_NONE) {
        int rc = tpl_make(cfg, mb->name, r, shape, st);
        if (rc == TF_ENOMEM)
            return rc;
        st->state = rc ? TPL_UNUSABLE : TPL_OK;
        snprintf(st->recipe, sizeof(st->recipe), "%s", cfg->recipe);
        tf_debug("build", "builder %s: build_start template for shape %d: "
                 "%s, rows %s", mb->name, shape,
                 rc ? "unusable, encoder used" : "made",
                 st->rows_state == TPL_OK ? "made" : "through jansson");
    }
    if (st->state != TPL_OK)
        return TF_ENOENT;
    u64_text(sid, id);
    u64_text(snum, number);
    const char *values[TS__N] = {
        [TS_ID] = sid, [TS_NUMBER] = snum, [TS_SLAVE] = slave,
        [TS_REVISION] = r->revision ? r->revision : "",
        [TS_OWNER] = r->owner ? r->owner : "",
    };
    int rc = tf_tpl_render(&st->tpl, values, TF_PROTO_MAX_TEXT, out, len);
    if (rc == 0)
        *used = st;
    return rc == TF_E2BIG ? TF_ENOENT : rc;
}

/* The rows of build number on slave for r from st, the templates r's
 * build_start came from (start_from_template): *rows is the caller's
 * (tf_build_rows_clear), its steps' names st's. Returns 0, TF_ENOENT
 * when st has no rows template (the rows are then computed), or
 * TF_ENOMEM. */
static int rows_from_template(const struct tf_start_tpl *st,
                              const tf_request_t *r, uint64_t number,
                              const char *slave, tf_build_rows_t *rows)
{
    char snum[24];

    memset(rows, 0, sizeof(*rows));
    if (st->rows_state != TPL_OK)
        return TF_ENOENT;
    u64_text(snum, number);
    const char *values[TS__N] = {
        [TS_ID] = "", [TS_NUMBER] = snum, [TS_SLAVE] = slave,
        [TS_REVISION] = r->revision ? r->revision : "",
        [TS_OWNER] = r->owner ? r->owner : "",
    };
    int rc = tf_tpl_render(&st->rows, values, SIZE_MAX, &rows->text,
                           &rows->len);
    if (rc == 0)
        rc = rows_split(rows, st->nsteps, false);
    for (size_t i = 0; rc == 0 && i < st->nsteps; i++) {
        rows->steps[i].name = st->steps[i].name;
        rows->steps[i].flags = tf_flags_bits(&st->steps[i].flags);
    }
    if (rc)
        tf_build_rows_clear(rows);
    return rc == TF_E2BIG ? TF_ENOMEM : rc;
}

int tf_build_render_start(tf_mbuilder_t *mb, const tf_request_t *r,
                          uint64_t id, uint64_t number, const char *slave,
                          bool from_template, char **out, size_t *len)
{
    const struct tf_start_tpl *st;

    if (from_template)
        return start_from_template(mb, r, id, number, slave, out, len, &st);
    if (!mb->cfg)
        return TF_ENOENT;
    return start_encode(mb->cfg, mb->name, r, id, number, slave, out, len);
}

int tf_build_render_rows(tf_mbuilder_t *mb, const tf_request_t *r,
                         uint64_t id, uint64_t number, const char *slave,
                         bool from_template, tf_build_rows_t *rows)
{
    const struct tf_start_tpl *st = NULL;
    tf_build_t probe;
    tf_step_spec_t *steps = NULL;
    size_t nsteps = 0;
    json_t *props = NULL;
    char *start = NULL;
    size_t len = 0;
    int rc;

    memset(rows, 0, sizeof(*rows));
    if (from_template) {
        rc = start_from_template(mb, r, id, number, slave, &start, &len, &st);
        free(start);
        return rc ? rc : rows_from_template(st, r, number, slave, rows);
    }
    if (!mb->cfg)
        return TF_ENOENT;
    rc = build_compute(mb->cfg, mb->name, r, &probe, id, number, slave,
                       &props, &steps, &nsteps);
    if (rc == 0)
        rc = rows_compute(props, steps, nsteps, rows);
    if (rc)
        tf_build_rows_clear(rows);
    steps_free(steps, nsteps);
    json_decref(props);
    return rc;
}

/* Sends b's build_start; true when it went out. One build's line is at
 * info, unless it is one of a batch (quiet): the batch then writes one
 * line for all (batch_committed_cb), and each build's is at debug. */
static bool build_send_start(tf_master_t *m, tf_build_t *b, bool quiet)
{
    tf_mslave_t *s = tf_master_slave(m, b->slave, false);
    bool sent = false;
    if (!b->start_msg)
        return false;
    if (s && s->link) {
        sent = tf_master_send_start(m, s, b->start_msg, b->start_len) == 0;
        if (sent)
            tf_log(quiet ? TF_LOG_DEBUG : TF_LOG_INFO, "build",
                   "build %" PRIu64 " (%s #%" PRIu64 ") of request %" PRIu64
                   " sent to slave %s", b->id, b->builder, b->number,
                   b->request ? b->request->id : 0, b->slave);
    } else {
        tf_info("build", "build %" PRIu64 ": slave %s went away before "
                "build_start could be sent", b->id, b->slave);
    }
    free(b->start_msg);
    b->start_msg = NULL;
    return sent;
}

/* The rows of a starting build could not be stored: nothing of it exists
 * but in memory, so it is undone there too (its slave slot freed, its
 * request queued again as a retry, or ended after max_retries), instead
 * of holding the slave for good. */
static void build_drop(tf_master_t *m, tf_build_t *b, int rc)
{
    tf_request_t *r = b->request;
    tf_mbuilder_t *mb = tf_master_builder(m, b->builder, false);
    bool lost_claim = rc == TF_ESTATE && tf_store_is_shared(m->store);

    if (lost_claim)
        tf_info("build", "request %" PRIu64 " (%s) is another master's: "
                "build %" PRIu64 " does not start; slave %s is free again",
                r ? r->id : 0, b->builder, b->id, b->slave);
    else
        tf_error("build", "build %" PRIu64 " (%s #%" PRIu64 "): its rows "
                 "could not be stored (%s): not starting it; slave %s is "
                 "free again", b->id, b->builder, b->number,
                 tf_strerror(rc), b->slave);
    build_set_state(b, TF_BUILD_DROPPED,
                    lost_claim ? "claimed elsewhere" : "rows not stored");
    build_unlink(m, b);
    if (mb) {
        if (mb->nrunning > 0)
            mb->nrunning--;
        if (mb->next_number == b->number + 1)
            mb->next_number = b->number; /* nobody saw the number */
    }
    free(b->start_msg);
    b->start_msg = NULL;
    b->request = NULL;
    tf_map_del_id(m->builds, b->id);
    tf_build_free(b);
    tf_master_group_begin(m, 0);
    if (r && lost_claim) {
        /* Several masters (store.shared): another one claimed it first,
         * or it ended meanwhile. It is not this master's to run. */
        uint64_t rid = r->id;
        r->build = NULL;
        if (r->job_id)
            tf_job_request_forgotten(m, r->job_id);
        tf_request_set_state(m, r, TF_REQ_DONE, "claimed by another master");
        tf_map_del_id(m->requests, r->id);
        tf_request_free(r);
        /* Whatever else is pending in the database is queued here again
         * (debounced): nothing stays unqueued on every master. A request
         * lost again and again (another transaction holds its row) is
         * backed off instead of claimed in a loop. */
        if (tf_master_claim_lost(m, rid))
            tf_master_farm_changed(m, TF_FARM_QUEUE);
    } else if (r) {
        r->build = NULL;
        r->retries++;
        if (r->retries > m->cfg->max_retries) {
            tf_error("build", "request %" PRIu64 ": %u attempts to start it "
                     "could not be stored: ending it as EXCEPTION", r->id,
                     r->retries);
            tf_op_request_done(m->group, r->id, TF_EXCEPTION, tf_now_ms());
            if (r->job_id)
                tf_job_request_done(m, r->job_id, TF_EXCEPTION);
            tf_request_set_state(m, r, TF_REQ_DONE, "could not be stored");
            tf_map_del_id(m->requests, r->id);
            tf_request_free(r);
        } else {
            tf_op_request_requeue(m->group, r->id, r->retries);
            tf_sched_enqueue(m, r);
        }
    }
    if (mb)
        tf_sched_counts_write(m, mb);
    tf_master_group_commit(m, NULL, NULL);
    tf_sched_kick(m);
}

/* The rows of build id were committed (rc 0: build_start goes out) or
 * not (it is dropped). Returns whether its build_start went out; quiet
 * as for build_send_start. */
static bool build_rows_done(tf_master_t *m, uint64_t id, int rc, bool quiet)
{
    tf_build_t *b = tf_map_get_id(m->builds, id);
    bool sent;

    if (!b || b->state != TF_BUILD_STARTING)
        return false;
    if (rc) {
        build_drop(m, b, rc);
        return false;
    }
    build_set_state(b, TF_BUILD_RUNNING, "rows committed");
    /* The slave first: it is what the start latency measures. */
    sent = build_send_start(m, b, quiet);
    tf_publish_build(m, b, "created", 0);
    if (b->request)
        tf_publish_request(m, b->request, "started");
    return sent;
}

static void build_rows_committed_cb(void *arg, int rc)
{
    event_commit_t *ec = arg;

    build_rows_done(ec->m, ec->build_id, rc, false);
}

/* --- the start batch (master.h, tf_build_batch_begin) --- */

/* The commit context of a batch's group, in the group. Build i's rows
 * are the group's unit i (tf_wgroup_unit_end). */
typedef struct batch_commit {
    tf_master_t *m;
    tf_wgroup_t *g;
    size_t n;
    uint64_t ids[];
} batch_commit_t;

/* n builds of a start batch were queued for the writer (master.h,
 * tf_master_defer_slaves): a big batch arms the deferral. */
static void batch_queued(tf_master_t *m, size_t n)
{
    m->starts_inflight += n;
    if (!m->defer_armed && n >= TF_BUILD_BATCH_FIRST) {
        m->defer_armed = true;
        m->defer_since_ms = tf_mono_ms();
    }
}

/* ... and came back, their build_starts sent: the last of them ends the
 * deferral, and what was put off is handled at the loop's next turn. */
static void batch_landed(tf_master_t *m, size_t n)
{
    m->starts_inflight -= n < m->starts_inflight ? n : m->starts_inflight;
    if (m->starts_inflight == 0 && m->defer_armed && !m->defer_fixed)
        tf_master_defer_end(m);
}

void tf_master_defer_end(tf_master_t *m)
{
    m->defer_armed = false;
    m->drain_wanted = true;
    tf_sched_defer(m);
}

bool tf_master_defer_slaves(tf_master_t *m)
{
    if (!m->defer_armed)
        return false;
    if (tf_mono_ms() - m->defer_since_ms < m->defer_max_ms)
        return true;
    /* Too long (a slow store): what was put off goes now, and the next
     * big batch arms it again. */
    tf_master_defer_end(m);
    return false;
}

/* When the group failed as a whole, the store applied each build's rows
 * alone: only a build whose own rows fail is dropped (and its request
 * charged a retry); its batch-mates start. */
static void batch_committed_cb(void *arg, int rc)
{
    batch_commit_t *bc = arg;
    size_t sent = 0;
    bool quiet = bc->n > 1;
    int *rcs = rc ? malloc(bc->n * sizeof(*rcs)) : NULL;

    if (rcs)
        tf_wgroup_unit_rcs(bc->g, rcs, bc->n);
    for (size_t i = 0; i < bc->n; i++)
        sent += build_rows_done(bc->m, bc->ids[i],
                                !rc    ? 0
                                : rcs ? rcs[i]
                                      : tf_wgroup_unit_rc(bc->g, i),
                                quiet);
    free(rcs);
    /* A burst starts thousands of builds: one line per batch (each
     * build's own line is at debug). */
    if (quiet && sent)
        tf_info("build", "%zu of %zu builds (ids %" PRIu64 " to %" PRIu64
                ") sent to their slaves", sent, bc->n, bc->ids[0],
                bc->ids[bc->n - 1]);
    batch_landed(bc->m, bc->n);
}

/* Commits the open batch's group (the counts of the builders it changed
 * written last), if it holds any build. */
static void batch_flush(tf_master_t *m)
{
    size_t n = m->nbatch, pos = 0;
    batch_commit_t *bc;
    void *v;

    if (!n)
        return;
    while (tf_map_next(m->builders, &pos, NULL, NULL, &v) == 0) {
        tf_mbuilder_t *mb = v;
        if (mb->counts_dirty) {
            mb->counts_dirty = false;
            tf_sched_counts_write(m, mb);
        }
    }
    m->nbatch = 0;
    bc = m->group ? tf_wgroup_alloc(m->group, sizeof(*bc) +
                                                  n * sizeof(bc->ids[0]))
                  : NULL;
    if (bc) {
        bc->m = m;
        bc->g = m->group;
        bc->n = n;
        memcpy(bc->ids, m->batch_ids, n * sizeof(bc->ids[0]));
        /* Its builds' build_start messages wait for this commit: it is
         * not to wait for the batches queued after it as well (a burst
         * queues all of its batches in one pass). */
        tf_wgroup_prompt(m->group);
        batch_queued(m, n);
        /* A failure to queue calls the callback at once. */
        tf_master_group_commit(m, batch_committed_cb, bc);
        return;
    }
    /* Out of memory: nothing of these builds can be stored. */
    if (m->group)
        tf_wgroup_fail(m->group);
    tf_master_group_commit(m, NULL, NULL);
    for (size_t i = 0; i < n; i++)
        build_rows_done(m, m->batch_ids[i], TF_ENOMEM, false);
}

void tf_build_batch_begin(tf_master_t *m)
{
    /* Several masters (store.shared) batch too: a build's rows claim its
     * request, and a lost claim fails the group, but each build's rows
     * are a unit of it (batch_add), so the store then commits the others
     * and only the build that lost its claim is dropped. */
    m->batch_on = true;
    m->nbatch = 0;
    m->batch_limit = TF_BUILD_BATCH_FIRST;
    m->batch_max = tf_store_is_shared(m->store) ? TF_BUILD_BATCH_FIRST
                                                : TF_BUILD_BATCH_MAX;
}

void tf_build_batch_end(tf_master_t *m)
{
    batch_flush(m);
    m->batch_on = false;
}

/* Adds b's rows (already in m->group, its unit's end) to the open batch;
 * false when out of memory (then the caller drops b). */
static bool batch_add(tf_master_t *m, const tf_build_t *b)
{
    if (tf_wgroup_unit_end(m->group) != 0)
        return false;
    if (m->nbatch == m->batch_cap) {
        size_t cap = m->batch_cap ? m->batch_cap * 2 : 64;
        uint64_t *v = realloc(m->batch_ids, cap * sizeof(*v));
        if (!v)
            return false;
        m->batch_ids = v;
        m->batch_cap = cap;
    }
    m->batch_ids[m->nbatch++] = b->id;
    return true;
}

/* Queues the group that creates b with its rows (from the templates or
 * computed; rows committed: build_start goes out), or, with a start batch
 * open, adds them to the batch's group. */
static void build_write_rows(tf_master_t *m, tf_build_t *b, tf_request_t *r,
                             tf_mbuilder_t *mb, const tf_build_rows_t *rows)
{
    const tf_cfg_builder_t *cfg = mb->cfg;
    bool batch = m->batch_on;
    event_commit_t *ec = NULL;

    if (!batch)
        ec = build_group(m, b, EC_ROWS, 0, 1024);
    else if (!m->group)
        tf_master_group_begin(m, m->batch_limit * 1024);

    tf_build_rec_t rec = {
        .id = b->id,
        .number = b->number,
        .request_id = r->id,
        .builder = b->builder,
        .slave = b->slave[0] ? b->slave : NULL,
        .properties = rows->properties,
        .reason = r->reason,
        .repository = cfg->repository,
        .branch = cfg->branch,
        .revision = r->revision,
        .recipe = cfg->recipe[0] ? cfg->recipe : NULL,
        .created_ms = b->created_ms,
        .steps = rows->steps,
        .nsteps = rows->nsteps,
        /* r's changes are all in memory (sched.c stores each it adds,
         * master.c loads an open request's), so none there is none
         * stored. */
        .no_changes = r->nchanges == 0,
        /* The request's row says the same (a job or a patch: try); told,
         * the writer does not look the row up for it. */
        .kind = b->is_try ? "try" : "ci",
    };
    tf_op_build_create(m->group, &rec);
    if (r->job_id)
        tf_job_request_started(m, r->job_id);
    if (batch)
        mb->counts_dirty = true;
    else
        tf_sched_counts_write(m, mb);
    if (batch) {
        /* Its rows ride with the batch's; if its id cannot be kept, the
         * group is failed as a whole (nothing half-stored) and flushed:
         * it and its batch-mates are dropped when the failure comes
         * back. */
        if (!batch_add(m, b)) {
            tf_wgroup_fail(m->group);
            if (m->nbatch)
                batch_flush(m);
            else
                tf_master_group_commit(m, NULL, NULL);
            build_drop(m, b, TF_ENOMEM);
        } else if (m->nbatch >= m->batch_limit) {
            batch_flush(m);
            if (m->batch_limit < m->batch_max)
                m->batch_limit *= 2;
        }
        return;
    }
    /* A failure to queue calls the callback at once: b may be gone when
     * this returns. */
    if (ec) {
        tf_master_group_commit(m, build_rows_committed_cb, ec);
    } else {
        tf_master_group_commit(m, NULL, NULL);
        build_drop(m, b, TF_ENOMEM);
    }
}

int tf_build_start(tf_master_t *m, tf_request_t *r, tf_mslave_t *s)
{
    tf_mbuilder_t *mb = tf_master_builder(m, r->builder, false);
    if (!mb || !mb->cfg)
        return TF_ENOENT;
    /* A try build that may be built again without its patch keeps the
     * id of that rerun from here: when it ends, no block of ids may be
     * ready, and the rerun must be queued in the group that ends it (or
     * the job ends without it). */
    bool keep_rerun = r->job_id && r->patch_sha256[0] &&
                      mb->cfg->retry_without_patch &&
                      tf_store_is_shared(m->store);
    int idrc = tf_master_ids(m, keep_rerun ? 2 : 1);
    if (idrc)
        return idrc;
    /* Several masters number builds from the shared id sequence: a
     * per-builder counter in one master's memory would repeat another's. */
    if (tf_store_is_shared(m->store))
        mb->next_number = m->next_build_id;
    const tf_cfg_builder_t *cfg = mb->cfg;
    uint64_t id = m->next_build_id;
    tf_build_t *b = NULL;
    json_t *props = NULL;
    tf_step_spec_t *steps = NULL;
    size_t nsteps = 0;
    const struct tf_start_tpl *st = NULL;
    tf_build_rows_t rows = {0};
    char *start = NULL;
    size_t start_len = 0;
    char why[300];

    /* A template-shaped request takes its build_start and its rows from
     * its builder's templates; any other, or a shape whose rows have no
     * template, computes its properties and steps (on a throwaway build)
     * and takes the encoder for what the templates did not give. */
    int rc = start_from_template(mb, r, id, mb->next_number, s->name,
                                 &start, &start_len, &st);
    if (rc == 0)
        rc = rows_from_template(st, r, mb->next_number, s->name, &rows);
    if (rc && rc != TF_ENOENT) {
        tf_error("build", "cannot encode build_start for %s: %s", mb->name,
                 tf_strerror(rc));
        goto fail;
    }
    if (!rows.text) {
        tf_build_t probe;
        rc = build_compute(cfg, mb->name, r, &probe, id, mb->next_number,
                           s->name, &props, &steps, &nsteps);
        if (rc)
            goto fail;
    }
    rc = TF_ENOMEM;
    b = tf_build_new(id, mb->name, mb->next_number, s->name,
                     rows.text ? rows.nsteps : nsteps);
    if (!b)
        goto fail;
    b->request = r;
    b->is_try = tf_request_is_try(r);
    b->created_ms = tf_now_ms();
    for (size_t i = 0; i < b->nsteps; i++) {
        b->steps[i].flags = rows.text ? st->steps[i].flags : steps[i].flags;
        name_copy(b->steps[i].name, sizeof(b->steps[i].name),
                  rows.text ? st->steps[i].name : steps[i].name);
    }
    memcpy(b->csteps, b->steps, b->nsteps * sizeof(tf_bstep_t));
    rc = 0;
    b->start_msg = start;
    b->start_len = start_len;
    start = NULL;
    if (!b->start_msg)
        rc = build_encode_start(b, cfg, r, props, steps, nsteps, why,
                                sizeof(why));
    /* A request the protocol cannot carry never will be: it ends here as
     * EXCEPTION (below) instead of staying at the head of the queue. */
    bool unsendable = rc == TF_E2BIG || rc == TF_EINVAL;
    char text[400];
    if (rc && !unsendable) {
        tf_error("build", "cannot encode build_start for %s: %s", mb->name,
                 tf_strerror(rc));
        goto fail;
    }
    if (unsendable) {
        snprintf(text, sizeof(text), "the master cannot send this build to "
                 "a slave: %s", why);
        tf_warn("build", "request %" PRIu64 " for %s: %s", r->id, mb->name,
                text);
        b->slave[0] = '\0';
        json_object_del(props, "slave");
    }
    /* Rows from the templates have theirs (and never an unsendable
     * start: it came from the template too). */
    if (!rows.text && (rc = rows_compute(props, steps, nsteps, &rows)) != 0)
        goto fail;
    rc = tf_map_put_id(m->builds, b->id, b);
    if (rc)
        goto fail;

    /* From here on the build exists: commit to it in memory and storage. */
    build_set_state(b, TF_BUILD_STARTING, "assigned");
    m->next_build_id++;
    if (keep_rerun)
        b->rerun_id = m->next_build_id++;
    mb->next_number++;
    tf_sched_dequeue(m, r);
    mb->nrunning++;
    tf_request_set_state(m, r, TF_REQ_RUNNING, "its build starts");
    r->build = b;
    if (!unsendable) {
        tf_list_push_back(&s->builds, &b->slave_node);
        s->nbuilds++;
        tf_sched_slave_changed(m, s);
        name_copy(mb->last_slave, sizeof(mb->last_slave), s->name);
    }
    /* Watchers hear of a build once its rows are stored (an answer about
     * it is then whole: build_rows_done); one never sent ends here, so
     * it is told now. */
    if (unsendable) {
        tf_publish_build(m, b, "created", 0);
        tf_publish_request(m, r, "started");
    }
    /* At debug: the line that matters is "sent" (build_send_start), one
     * per build; a burst of thousands of starts writes one line each. */
    if (!unsendable)
        tf_debug("build", "build %" PRIu64 " (%s #%" PRIu64 ") of request "
                 "%" PRIu64 " assigned to slave %s",
                 b->id, b->builder, b->number, r->id, s->name);
    if (unsendable && m->batch_on) {
        /* Its end follows at once in a group of its own, which the
         * batch's open group would not allow: the batch so far is
         * committed first, and this build's rows go alone. */
        batch_flush(m);
        m->batch_on = false;
        build_write_rows(m, b, r, mb, &rows);
        m->batch_on = true;
    } else {
        build_write_rows(m, b, r, mb, &rows);
    } /* b may be gone */
    /* Never sent: it ends at once (its own group, after the rows'). */
    if (unsendable && tf_map_get_id(m->builds, id) == b &&
        b->state == TF_BUILD_STARTING)
        build_end_forced(m, b, TF_EXCEPTION, text);
    json_decref(props);
    steps_free(steps, nsteps);
    tf_build_rows_clear(&rows);
    return 0;
fail:
    free(start);
    json_decref(props);
    steps_free(steps, nsteps);
    tf_build_rows_clear(&rows);
    tf_build_free(b);
    return rc;
}

/* --- acks and commits --- */

static void ack_owed(tf_master_t *m, tf_build_t *b)
{
    if (!b->ack_pending) {
        b->ack_pending = true;
        tf_list_push_back(&m->ack_list, &b->ack_node);
    }
    tf_sched_defer(m);
}

/* Back to what is stored, once no group of the build is in flight (so
 * committed_seq is what the store holds): the steps as the last stored
 * event left them, and the slave resends from the event after it. */
static void build_restore(tf_master_t *m, tf_build_t *b)
{
    tf_mslave_t *s = tf_master_slave(m, b->slave, false);

    tf_info("build", "build %" PRIu64 ": back to event %" PRIu64 ", the "
            "last stored; the slave resends from there", b->id,
            b->committed_seq);
    b->broken = false;
    b->epoch++;
    if (s && !tf_list_linked(&b->slave_node)) {
        /* Its build_finished, dropped, will come again: until then the
         * build is the slave's again (so a slave that never comes back
         * makes it lost). */
        tf_list_push_back(&s->builds, &b->slave_node);
        s->nbuilds++;
        if (!s->link && !b->lost_since_ms)
            b->lost_since_ms = tf_mono_ms();
        tf_sched_slave_changed(m, s);
    }
    memcpy(b->steps, b->csteps, b->nsteps * sizeof(tf_bstep_t));
    b->started_ms = b->c_started_ms;
    build_refold(b);
    b->accepted_seq = b->committed_seq;
    b->finish_pending = false;
    b->finish_seen = false;
    b->cursor_ok = false; /* the steps moved back */
    /* A link that came up while the build was broken was told to resume
     * from a point that may have moved since: it starts over. */
    tf_master_close_link(m, s, "resync", TF_CLOSE_RESYNC,
                         "events of build %" PRIu64 " could not be stored: "
                         "resend them from event %" PRIu64,
                         b->id, b->committed_seq + 1);
}

/* An event's group failed: what is in memory went past what is stored.
 * The build stops taking events (the link is closed with "resync") and
 * goes back to what is stored once every group of it still in flight has
 * come back: those before the failed one may yet commit (a group refused
 * at submit fails before the ones queued ahead of it have committed),
 * those after it fail on the event chain. */
static void build_broken(tf_master_t *m, tf_build_t *b, uint64_t seq, int rc)
{
    tf_mslave_t *s = tf_master_slave(m, b->slave, false);

    if (b->broken || b->state == TF_BUILD_ENDING)
        return;
    tf_error("build", "build %" PRIu64 ": event %" PRIu64 " could not be "
             "stored (%s): not acknowledging it or anything after it; the "
             "slave will resend from the last stored event",
             b->id, seq, tf_strerror(rc));
    b->broken = true;
    tf_master_close_link(m, s, "resync", TF_CLOSE_RESYNC,
                         "events of build %" PRIu64 " from %" PRIu64 " on "
                         "could not be stored: resend them after "
                         "reconnecting", b->id, seq);
    if (b->inflight == 0)
        build_restore(m, b);
}

static void event_committed_cb(void *arg, int rc)
{
    event_commit_t *ec = arg;
    tf_master_t *m = ec->m;
    tf_build_t *b = tf_map_get_id(m->builds, ec->build_id);

    if (!b)
        return; /* ended since */
    if (b->inflight > 0)
        b->inflight--;
    if (rc) {
        if (ec->epoch == b->epoch)
            build_broken(m, b, ec->seq, rc);
    } else if (ec->seq > b->committed_seq) {
        /* Stored, whatever happened since: the event chain means the
         * store's last event is this one. */
        b->committed_seq = ec->seq;
        if (ec->step >= 0 && (size_t)ec->step < b->nsteps)
            b->csteps[ec->step] = ec->after;
        b->c_started_ms = ec->started_ms;
        ack_owed(m, b);
    }
    if (b->broken) {
        if (b->inflight == 0)
            build_restore(m, b);
        return;
    }
    if (b->finish_pending && b->committed_seq + 1 == b->finish_seq)
        build_apply_finish(m, b);
}

/* Commits the event's group; its commit triggers the ack. The step it
 * changed (or -1) is remembered for the committed mirror. */
static void event_accepted(tf_master_t *m, tf_build_t *b, event_commit_t *ec,
                           uint64_t seq, int step)
{
    b->accepted_seq = seq;
    if (ec) {
        ec->step = step;
        if (step >= 0 && (size_t)step < b->nsteps)
            ec->after = b->steps[step];
        ec->started_ms = b->started_ms;
    }
    /* The event's rows and its sequence number commit together or not at
     * all, so a restart never replays half an event. A group that cannot
     * be queued calls back at once, with its error. */
    if (ec) {
        b->inflight++;
        tf_master_group_commit(m, event_committed_cb, ec);
    } else {
        tf_master_group_commit(m, NULL, NULL);
        build_broken(m, b, seq, TF_ENOMEM);
    }
}

static void send_ack(tf_master_t *m, tf_mslave_t *s, uint64_t build_id,
                     uint64_t seq)
{
    if (!s || !s->link)
        return;
    tf_msg_t a = {.type = TF_MSG_ACK};
    a.u.ack.build_id = build_id;
    a.u.ack.seq = seq;
    tf_master_send(m, s, &a);
}

void tf_build_flush_acks(tf_master_t *m)
{
    tf_list_t *it, *tmp;
    tf_list_foreach_safe(it, tmp, &m->ack_list)
    {
        tf_build_t *b = tf_list_entry(it, tf_build_t, ack_node);
        tf_list_unlink(&b->ack_node);
        b->ack_pending = false;
        tf_mslave_t *s = tf_master_slave(m, b->slave, false);
        /* Acks only go up, and only for builds the slave still reports:
         * one the master ended itself (lost, cancelled while away, left
         * out of a hello, abandoned) gets none. */
        if (b->committed_seq > b->acked_seq && !b->acks_off)
            send_ack(m, s, b->id, b->committed_seq);
        if (b->committed_seq > b->acked_seq)
            b->acked_seq = b->committed_seq;
        if (b->state == TF_BUILD_ENDING &&
            b->committed_seq >= b->accepted_seq) {
            tf_map_del_id(m->builds, b->id);
            tf_build_free(b);
        }
    }
}

/* --- ending --- */

/* Several masters: the end of a build this master no longer owns was
 * refused (another master took the build over from its slave, or ended
 * it). Nothing of that end may reach the database: the group is dropped,
 * and so is this master's copy of the request it requeued, which is the
 * other master's; the queue is read again for whatever is pending. */
static void end_lost(tf_master_t *m, event_commit_t *ec)
{
    uint64_t id = ec->build_id, rid = ec->request_id;
    tf_request_t *r = rid ? tf_map_get_id(m->requests, rid) : NULL;
    tf_build_t *b = tf_map_get_id(m->builds, id);

    tf_warn("build", "build %" PRIu64 " is another master's now (it took "
            "the build over from its slave, or ended it): this master drops "
            "its copy and does not end it", id);
    tf_wgroup_free(ec->group); /* ec lives in it */
    /* The end will never commit here: what is stored is all there is, so
     * the copy goes with the next flush of acks (tf_build_flush_acks),
     * and the slave gets no ack from this master (the owner acks it). */
    if (b) {
        b->accepted_seq = b->committed_seq;
        b->acks_off = true;
        ack_owed(m, b);
    }
    if (r && r->state == TF_REQ_PENDING && !r->build) {
        tf_sched_dequeue(m, r);
        tf_map_del_id(m->requests, r->id);
        tf_request_set_state(m, r, TF_REQ_DONE, "another master's");
        tf_request_free(r);
    }
    tf_master_farm_changed(m, TF_FARM_QUEUE);
}

/* An end group failed: it is kept and resubmitted on the next tick (the
 * memory side of the end has happened; storage must follow), unless
 * another master owns the build by now (end_lost). */
static void end_committed_cb(void *arg, int rc)
{
    event_commit_t *ec = arg;
    tf_master_t *m = ec->m;
    tf_build_t *b = tf_map_get_id(m->builds, ec->build_id);

    if (rc == TF_ESTATE && m->store && tf_store_is_shared(m->store)) {
        end_lost(m, ec);
        return;
    }
    if (rc) {
        tf_error("build", "build %" PRIu64 ": its end could not be stored "
                 "(%s); trying again", ec->build_id, tf_strerror(rc));
        ec->next_retry = m->end_retry;
        m->end_retry = ec;
        return;
    }
    if (b && ec->seq > b->committed_seq) {
        b->committed_seq = ec->seq;
        ack_owed(m, b);
    }
}

void tf_build_retry_ends(tf_master_t *m)
{
    event_commit_t *list = m->end_retry, *next;

    m->end_retry = NULL;
    /* Oldest first, in the order they failed. */
    event_commit_t *rev = NULL;
    for (; list; list = next) {
        next = list->next_retry;
        list->next_retry = rev;
        rev = list;
    }
    for (event_commit_t *ec = rev; ec; ec = next) {
        next = ec->next_retry;
        ec->next_retry = NULL;
        int rc = m->store ? tf_store_submit(m->store, ec->group,
                                            end_committed_cb, ec)
                          : TF_ESTATE;
        if (rc == TF_ESTATE) {
            tf_error("build", "build %" PRIu64 ": the store is closing: its "
                     "end is LOST (the slave or a restart repeats it)",
                     ec->build_id);
            tf_wgroup_free(ec->group);
        } else if (rc) {
            end_committed_cb(ec, rc);
        }
    }
}

/* Commits the end group of b, kept until it is stored. */
static void end_commit(tf_master_t *m, event_commit_t *ec)
{
    if (!ec) {
        tf_master_group_commit(m, NULL, NULL);
        return;
    }
    tf_wgroup_keep(m->group);
    tf_master_group_commit(m, end_committed_cb, ec);
}

/* A continuous build's notice, when mail is on and the builder's mode
 * may want one (the store decides from the previous build, inside the
 * transaction): an outbox row in the end's group. */
static void mail_notice(tf_master_t *m, const tf_build_t *b,
                        tf_result_t result)
{
    const tf_cfg_builder_t *c = tf_config_builder(m->cfg, b->builder);
    json_t *arr;
    char *rcpt;

    if (!m->cfg->mail.enabled || !c || c->mail.mode == TF_MAIL_MODE_NONE ||
        result == TF_RETRY)
        return;
    arr = json_array();
    for (size_t i = 0; arr && i < c->mail.nextra; i++)
        json_array_append_new(arr, json_string(c->mail.extra_recipients[i]));
    rcpt = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    if (!rcpt)
        tf_wgroup_fail(m->group);
    tf_op_mail_build(m->group, b->id, b->builder, result, c->mail.mode,
                     rcpt ? rcpt : "[]", tf_now_ms());
    m->group_mail = true;
    free(rcpt);
}

/* retry_without_patch (docs/config.md): a failed try build with a patch,
 * on a builder that asks for it, gets a request of the same job built
 * again without the patch (same base, tests and properties), queued now
 * and written into the group ending b, so the job stays open for it. Its
 * failing tests are the reference of b's (store/q_tests.c). */
static void retry_without_patch(tf_master_t *m, tf_build_t *b,
                                const tf_request_t *r, tf_mbuilder_t *mb,
                                tf_result_t result)
{
    if (result != TF_FAILURE || !r->job_id || !r->patch_sha256[0] ||
        b->cancel_requested || !mb || !mb->cfg ||
        !mb->cfg->retry_without_patch)
        return;
    char reason[160];
    snprintf(reason, sizeof(reason), "build %" PRIu64 " again without its "
             "patch (retry_without_patch)", b->id);
    tf_reqspec_t rs = {
        .builder = r->builder,
        .reason = reason,
        .owner = r->owner,
        .properties = r->properties,
        .priority = r->priority,
        .job_id = r->job_id,
        .tests = r->tests,
        .revision = r->revision,
        .without_patch_of = b->id,
    };
    /* The id kept at the start (shared ids), or the next one. */
    int idrc = b->rerun_id ? 0 : tf_master_ids(m, 1);
    uint64_t nid = b->rerun_id ? b->rerun_id : m->next_request_id;
    tf_request_t *nr = idrc == 0 ? tf_request_make(&rs, nid, tf_now_ms())
                                 : NULL;
    if (!nr) {
        tf_error("build", "build %" PRIu64 ": %s: no rerun without the "
                 "patch", b->id, idrc ? "no ids ready from the database"
                                      : "out of memory");
        return;
    }
    if (tf_map_put_id(m->requests, nr->id, nr) != 0) {
        tf_request_free(nr);
        return;
    }
    if (!tf_job_request_added(m, r->job_id)) {
        tf_map_del_id(m->requests, nr->id);
        tf_request_free(nr);
        return;
    }
    if (!b->rerun_id)
        m->next_request_id++;
    b->rerun_id = 0;
    tf_request_write(m, nr);
    tf_sched_enqueue(m, nr);
    tf_publish_request(m, nr, "queued");
    tf_info("build", "build %" PRIu64 " (%s) failed with a patch: request %"
            PRIu64 " builds it again without the patch", b->id, b->builder,
            nr->id);
}

/* Ends b with result: writes the build, its request and the summaries
 * into the open group, requeues a RETRY, and detaches b from its slave
 * and request. The build object stays in m->builds until its last event
 * is acknowledged. */
static void build_end(tf_master_t *m, tf_build_t *b, tf_result_t result,
                      const char *text)
{
    int64_t now = tf_now_ms();
    tf_request_t *r = b->request;
    tf_mbuilder_t *mb = tf_master_builder(m, b->builder, false);

    tf_info("build", "build %" PRIu64 " (%s #%" PRIu64 ") on %s: %s%s%s",
            b->id, b->builder, b->number, b->slave, tf_result_name(result),
            text ? ": " : "", text ? text : "");
    /* A try build never becomes the builder's last complete build: the
     * builder's state is the tree's (docs/api.md). */
    tf_op_build_finish(m->group, b->id, b->builder, b->slave, result, now,
                       text, result != TF_RETRY && !b->is_try);

    bool requeue = false;
    if (r) {
        unsigned max = m->cfg->max_retries;
        requeue = result == TF_RETRY && r->retries < max && mb && mb->cfg &&
                  !b->cancel_requested;
        if (requeue) {
            r->retries++;
            r->build = NULL;
            tf_op_request_requeue(m->group, r->id, r->retries);
        } else {
            tf_op_request_done(m->group, r->id, result, now);
            if (r->job_id) {
                /* Before the end is counted, so the job waits for it. */
                retry_without_patch(m, b, r, mb, result);
                tf_job_request_done(m, r->job_id, result);
            } else {
                mail_notice(m, b, result);
            }
        }
    }
    if (mb && mb->nrunning > 0)
        mb->nrunning--;
    build_unlink(m, b);
    build_set_state(b, TF_BUILD_ENDING, tf_result_name(result));
    b->finish_pending = false;
    tf_publish_build(m, b, "finished", result);
    b->request = NULL;
    if (r) {
        if (requeue) {
            tf_sched_enqueue(m, r);
        } else {
            tf_request_set_state(m, r, TF_REQ_DONE, tf_result_name(result));
            tf_map_del_id(m->requests, r->id);
            tf_request_free(r);
        }
    }
    if (mb)
        tf_sched_counts_write(m, mb);
    tf_sched_kick(m);
}

static void build_unlink(tf_master_t *m, tf_build_t *b)
{
    if (tf_list_linked(&b->slave_node)) {
        tf_list_unlink(&b->slave_node);
        tf_mslave_t *s = tf_master_slave(m, b->slave, false);
        if (s && s->nbuilds > 0)
            s->nbuilds--;
        if (s)
            tf_sched_slave_changed(m, s);
    }
}

/* Ends a build that will send no more events (lost, abandoned, or
 * cancelled while its slave is away): unfinished steps are closed in
 * storage too. Its own group, kept until it commits. */
static void build_end_forced(tf_master_t *m, tf_build_t *b, tf_result_t result,
                             const char *text)
{
    int64_t now = tf_now_ms();
    event_commit_t *ec = build_group(m, b, EC_END, 0, 512);

    if (ec && b->request)
        ec->request_id = b->request->id;
    for (size_t i = 0; i < b->nsteps; i++) {
        tf_bstep_t *st = &b->steps[i];
        if (st->finished)
            continue;
        tf_result_t r = st->started ? result : TF_SKIPPED;
        tf_op_step_force_end(m->group, b->id, (unsigned)i, r, now,
                             st->started ? text : "not run");
        st->finished = true;
        st->result = r;
    }
    build_end(m, b, result, text);
    end_commit(m, ec);
    /* Nothing more will come for it: make the ack pass free it. */
    b->accepted_seq = b->committed_seq;
    b->acks_off = true;
    ack_owed(m, b);
}

/* build_finished, once every event before it has committed. The result
 * comes from the steps (the slave's own is informational), except that
 * when the slave left steps unreported they are SKIPPED "not run" and its
 * result is folded in too: a slave that stopped a build early (RETRY on
 * an abort-mode shutdown, a build it did not take) says why that way. */
static void build_apply_finish(tf_master_t *m, tf_build_t *b)
{
    uint64_t seq = b->finish_seq;
    tf_result_t res = b->result;
    const char *text = NULL;
    int64_t now = tf_now_ms();
    bool any = false;
    size_t unreported = 0;

    b->finish_pending = false;
    for (size_t i = 0; i < b->nsteps; i++)
        any = any || b->steps[i].started || b->steps[i].finished;
    event_commit_t *ec = build_group(m, b, EC_END, seq, 512);
    if (ec && b->request)
        ec->request_id = b->request->id;
    for (size_t i = 0; i < b->nsteps; i++) {
        tf_bstep_t *st = &b->steps[i];
        if (st->finished)
            continue;
        tf_op_step_force_end(m->group, b->id, (unsigned)i, TF_SKIPPED, now,
                             "not run");
        st->finished = true;
        st->result = TF_SKIPPED;
        unreported++;
    }
    if (unreported > 0) {
        res = tf_result_worst(res, b->finish_result);
        if (!any && b->finish_result == TF_RETRY)
            text = "the slave did not take the build";
    }
    if (b->cancel_requested && res != TF_CANCELLED)
        res = tf_result_worst(res, TF_CANCELLED);
    build_end(m, b, res, text);
    b->accepted_seq = seq;
    end_commit(m, ec);
}

/* --- events --- */

/* The build b that an event of slave s names, or NULL with err filled when
 * the master does not run that build on s: never started, ended, or
 * another slave's. Such an event is refused (malformed), not acknowledged:
 * an ack promises the event is stored, and a slave that sends events for
 * a build it was not given, or after its build_finished, is broken in a
 * way a reconnect does not mend. A duplicate after build_finished is
 * refused too once the build has ended, whether or not it is still in
 * memory, so the answer never depends on timing; while the end waits for
 * the commits before it, a replay of events up to build_finished is a
 * duplicate like any other. */
static tf_build_t *event_build(tf_master_t *m, tf_mslave_t *s,
                               uint64_t build_id, uint64_t seq, char *err,
                               size_t errlen)
{
    tf_build_t *b = tf_map_get_id(m->builds, build_id);
    bool mine = b && strcmp(b->slave, s->name) == 0;
    if (mine && b->state != TF_BUILD_ENDING &&
        (!b->finish_pending || seq <= b->accepted_seq))
        return b;
    if (mine && (b->finish_pending || b->finish_seen))
        snprintf(err, errlen, "build %" PRIu64 ": event %" PRIu64 " after "
                 "its build_finished (event %" PRIu64 ")", build_id, seq,
                 b->finish_pending ? b->finish_seq : b->accepted_seq);
    else if (mine)
        snprintf(err, errlen, "build %" PRIu64 ": event %" PRIu64 " for a "
                 "build the master has ended", build_id, seq);
    else
        snprintf(err, errlen, "build %" PRIu64 ": event %" PRIu64 " for a "
                 "build this master does not run on slave %s", build_id, seq,
                 s->name);
    return NULL;
}

/* Returns 1 for a duplicate (already acked or to be acked), 0 to apply,
 * TF_EPROTO for a gap. */
static int event_order(tf_master_t *m, tf_build_t *b, uint64_t seq, char *err,
                       size_t errlen)
{
    if (seq <= b->accepted_seq) {
        ack_owed(m, b);
        return 1;
    }
    if (seq != b->accepted_seq + 1) {
        snprintf(err, errlen,
                 "build %" PRIu64 ": event %" PRIu64 " after %" PRIu64
                 " (gap)",
                 b->id, seq, b->accepted_seq);
        return TF_EPROTO;
    }
    return 0;
}

/* Where the build's steps stand: the running step and the first step not
 * finished. Computed from the steps when needed (a build restored after a
 * restart, or put back by a resync), then kept up to date by
 * event_advance. */
static void build_cursor(tf_build_t *b)
{
    if (b->cursor_ok)
        return;
    b->run_step = -1;
    b->next_step = (uint32_t)b->nsteps;
    for (size_t i = 0; i < b->nsteps; i++) {
        if (b->steps[i].finished)
            continue;
        b->next_step = (uint32_t)i;
        if (b->steps[i].started)
            b->run_step = (int32_t)i;
        break;
    }
    b->cursor_ok = true;
}

/* The one ordering rule of a build's events (docs/protocol.md, "Order of
 * a build's events"), for every kind alike: steps are reported in index
 * order, one at a time. With no step running, the next step may start, or
 * be reported SKIPPED without starting, or the build may finish (later
 * steps then count as not run); with step R running, only its output, its
 * test_results and its step_finished may come. kind is a message type,
 * TF_MSG_NONE for an output frame. Returns 0 or TF_EPROTO with err saying
 * what was expected. */
static int event_allowed(tf_build_t *b, tf_msg_type_t kind, uint32_t step,
                         tf_result_t result, char *err, size_t errlen)
{
    build_cursor(b);
    bool ok;
    switch (kind) {
    case TF_MSG_STEP_STARTED:
        ok = b->run_step < 0 && step == b->next_step && step < b->nsteps;
        break;
    case TF_MSG_NONE:
    case TF_MSG_TEST_RESULTS:
        ok = b->run_step >= 0 && step == (uint32_t)b->run_step;
        break;
    case TF_MSG_STEP_FINISHED:
        ok = b->run_step >= 0
                 ? step == (uint32_t)b->run_step
                 : step == b->next_step && step < b->nsteps &&
                       result == TF_SKIPPED;
        break;
    case TF_MSG_BUILD_FINISHED:
        ok = b->run_step < 0;
        break;
    default:
        ok = false;
        break;
    }
    if (ok)
        return 0;
    char what[64];
    if (kind == TF_MSG_BUILD_FINISHED)
        snprintf(what, sizeof(what), "build_finished");
    else if (kind == TF_MSG_STEP_FINISHED && b->run_step < 0 &&
             step == b->next_step && step < b->nsteps)
        snprintf(what, sizeof(what), "step_finished %s for step %u, which "
                 "did not start,", tf_result_name(result), step);
    else
        snprintf(what, sizeof(what), "%s for step %u",
                 kind == TF_MSG_NONE ? "output" : tf_msg_type_name(kind),
                 step);
    if (b->run_step >= 0)
        snprintf(err, errlen, "build %" PRIu64 ": %s out of order: step %d "
                 "is running (expected its output, test_results or "
                 "step_finished)",
                 b->id, what, (int)b->run_step);
    else if (b->next_step < b->nsteps)
        snprintf(err, errlen, "build %" PRIu64 ": %s out of order: expected "
                 "step_started for step %u, step_finished SKIPPED for it, or "
                 "build_finished", b->id, what, b->next_step);
    else
        snprintf(err, errlen, "build %" PRIu64 ": %s out of order: every "
                 "step is reported, expected build_finished", b->id, what);
    return TF_EPROTO;
}

/* Moves the cursor past an applied step event. */
static void event_advance(tf_build_t *b, tf_msg_type_t kind, uint32_t step)
{
    if (kind == TF_MSG_STEP_STARTED) {
        b->run_step = (int32_t)step;
    } else if (kind == TF_MSG_STEP_FINISHED) {
        b->run_step = -1;
        b->next_step = step + 1;
    }
}

static void ev_step_started(tf_master_t *m, tf_build_t *b,
                            const tf_msg_t *msg)
{
    uint32_t i = msg->u.step_started.step;
    uint64_t seq = msg->u.step_started.seq;
    int64_t t = msg->u.step_started.time_ms;
    bool first = !b->started_ms;
    event_commit_t *ec = build_group(m, b, EC_EVENT, seq, 0);
    b->steps[i].started = true;
    b->steps[i].started_ms = t;
    if (first)
        b->started_ms = t;
    tf_op_step_start(m->group, b->id, i, t, first);
    if (first)
        tf_publish_build(m, b, "started", 0);
    tf_publish_step(m, b, i, NULL);
    event_advance(b, TF_MSG_STEP_STARTED, i);
    event_accepted(m, b, ec, seq, (int)i);
}

static void ev_step_finished(tf_master_t *m, tf_build_t *b,
                             const tf_msg_t *msg)
{
    const __typeof__(msg->u.step_finished) *f = &msg->u.step_finished;
    uint32_t i = f->step;
    event_commit_t *ec = build_group(m, b, EC_EVENT, f->seq, 1024);
    tf_bstep_t *st = &b->steps[i];
    st->finished = true;
    st->result = f->result;
    st->finished_ms = f->time_ms;
    st->duration_ms = f->duration_ms;
    bool term = false;
    b->result = tf_result_fold(b->result, f->result, &st->flags, &term);
    b->terminated = b->terminated || term;
    tf_publish_step(m, b, i, f->text);
    for (size_t k = 0; k < f->nprops; k++)
        tf_op_build_prop(m->group, b->id, f->props[k].key,
                         f->props[k].value);
    tf_step_finish_rec_t rec = {
        .build_id = b->id,
        .step = i,
        .result = f->result,
        .time_ms = f->time_ms,
        .duration_ms = f->duration_ms,
        .has_exit_code = f->has_exit_code,
        .exit_code = f->exit_code,
        .has_signal = f->has_signal,
        .signal = f->signal,
        .timed_out = f->timed_out,
        .text = f->text,
        .info = f->info,
        .has_warnings = f->has_warnings,
        .warnings = (int64_t)f->warnings,
    };
    tf_op_step_finish(m->group, &rec);
    /* The stats the step's command modifiers extracted commit with its
     * end or not at all. */
    for (size_t k = 0; k < f->nstats; k++)
        tf_op_stat(m->group, b->builder, b->id, i, f->stats[k].name,
                   f->stats[k].value);
    event_advance(b, TF_MSG_STEP_FINISHED, i);
    event_accepted(m, b, ec, f->seq, (int)i);
}

/* The bytes a test result takes in a write group: its record and its
 * strings, so the event's group is sized once. */
static size_t test_result_bytes(const tf_test_result_t *r)
{
    size_t n = 160 + strlen(r->name) + strlen(r->suite) + 16;
    if (r->outcome)
        n += strlen(r->outcome) + 8;
    if (r->message)
        n += strlen(r->message) + 8;
    return n;
}

/* test_results (docs/protocol.md): checked against the build's state,
 * stored as one test_result operation per test in the event's write
 * group (with its place in the event chain), and acknowledged after that
 * commit like any event, so the slave's spool and replay work for it as
 * for output. The flaky rule across steps is the store's (ops.h). */
static void ev_test_results(tf_master_t *m, tf_build_t *b,
                            const tf_msg_t *msg)
{
    const __typeof__(msg->u.test_results) *t = &msg->u.test_results;
    size_t count[5] = {0};
    size_t bytes = 0;
    for (size_t i = 0; i < t->nresults; i++) {
        count[t->results[i].status]++;
        bytes += test_result_bytes(&t->results[i]);
    }
    tf_info("build", "build %" PRIu64 " step %u: test_results (%s): %zu "
            "results: %zu pass, %zu fail, %zu flaky, %zu skip%s%" PRIu64 "%s",
            b->id, t->step, tf_tr_format_name(t->format), t->nresults,
            count[TF_TR_PASS], count[TF_TR_FAIL], count[TF_TR_FLAKY],
            count[TF_TR_SKIP], t->last ? "; last, total " : "",
            t->last ? t->total : (uint64_t)0, t->last ? "" : " (more follow)");
    if (t->dropped)
        tf_warn("build", "build %" PRIu64 " step %u: the slave dropped %"
                PRIu64 " test results (over its caps)", b->id, t->step,
                t->dropped);
    for (size_t i = 0; i < t->nproblems; i++)
        tf_warn("build", "build %" PRIu64 " step %u: test results: %s",
                b->id, t->step, t->problems[i]);
    event_commit_t *ec = build_group(m, b, EC_EVENT, t->seq, bytes);
    for (size_t i = 0; i < t->nresults; i++) {
        const tf_test_result_t *r = &t->results[i];
        tf_test_result_rec_t rec = {
            .build_id = b->id,
            .step = t->step,
            .builder = b->builder,
            .suite = r->suite,
            .name = r->name,
            .status = tf_tr_status_name(r->status),
            .outcome = r->outcome,
            .message = r->message,
            .attempts = r->attempts,
            .duration_ms = r->duration_ms,
            .has_log = r->has_log,
            .log_offset = r->log_offset,
            .log_line = r->log_line,
            .log_lines = r->log_lines,
        };
        tf_op_test_result(m->group, &rec);
    }
    event_accepted(m, b, ec, t->seq, -1);
}

/* build_finished: applied once the events before it have committed (so
 * the end of the build never lands on top of a hole), at once if they
 * have. */
static void ev_build_finished(tf_master_t *m, tf_build_t *b,
                              const tf_msg_t *msg)
{
    b->finish_seen = true;
    b->finish_pending = true;
    b->finish_seq = msg->u.build_finished.seq;
    b->finish_result = msg->u.build_finished.result;
    b->accepted_seq = b->finish_seq;
    if (b->committed_seq + 1 == b->finish_seq) {
        build_apply_finish(m, b);
        return;
    }
    /* The slave runs it no more: its slot is free now, while the end
     * waits for the commits (a resync takes the slot back). */
    build_unlink(m, b);
}

int tf_build_event(tf_master_t *m, tf_mslave_t *s, const tf_msg_t *msg,
                   char *err, size_t errlen)
{
    uint64_t build_id, seq;
    uint32_t step = 0;
    tf_result_t result = TF_SUCCESS;
    switch (msg->type) {
    case TF_MSG_STEP_STARTED:
        build_id = msg->u.step_started.build_id;
        seq = msg->u.step_started.seq;
        step = msg->u.step_started.step;
        break;
    case TF_MSG_STEP_FINISHED:
        build_id = msg->u.step_finished.build_id;
        seq = msg->u.step_finished.seq;
        step = msg->u.step_finished.step;
        result = msg->u.step_finished.result;
        break;
    case TF_MSG_BUILD_FINISHED:
        build_id = msg->u.build_finished.build_id;
        seq = msg->u.build_finished.seq;
        break;
    case TF_MSG_TEST_RESULTS:
        build_id = msg->u.test_results.build_id;
        seq = msg->u.test_results.seq;
        step = msg->u.test_results.step;
        break;
    default:
        snprintf(err, errlen, "not a build event");
        return TF_EPROTO;
    }
    tf_build_t *b = event_build(m, s, build_id, seq, err, errlen);
    if (!b)
        return TF_EPROTO;
    if (b->broken)
        return 0; /* the slave resends it after the resync */
    int rc = event_order(m, b, seq, err, errlen);
    if (rc)
        return rc < 0 ? rc : 0;
    rc = event_allowed(b, msg->type, step, result, err, errlen);
    if (rc)
        return rc;
    if (b->state == TF_BUILD_STARTING) {
        /* Only a build restored as running gets events before its
         * build_start: say so rather than guess. */
        snprintf(err, errlen, "build %" PRIu64 ": event %" PRIu64 " before "
                 "the build was started", b->id, seq);
        return TF_EPROTO;
    }
    switch (msg->type) {
    case TF_MSG_STEP_STARTED:
        ev_step_started(m, b, msg);
        break;
    case TF_MSG_STEP_FINISHED:
        ev_step_finished(m, b, msg);
        break;
    case TF_MSG_TEST_RESULTS:
        ev_test_results(m, b, msg);
        break;
    default:
        ev_build_finished(m, b, msg);
        break;
    }
    return 0;
}

static uint64_t count_lines(const uint8_t *p, size_t n)
{
    uint64_t c = 0;
    const uint8_t *end = p + n;
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break;
        c++;
        p = nl + 1;
    }
    return c;
}

int tf_build_output(tf_master_t *m, tf_mslave_t *s, const tf_output_hdr_t *h,
                    const uint8_t *payload, char *err, size_t errlen)
{
    tf_build_t *b = event_build(m, s, h->build_id, h->seq, err, errlen);
    if (!b)
        return TF_EPROTO;
    if (b->broken)
        return 0; /* the slave resends it after the resync */
    int rc = event_order(m, b, h->seq, err, errlen);
    if (rc)
        return rc < 0 ? rc : 0;
    if (b->state == TF_BUILD_STARTING) {
        snprintf(err, errlen, "build %" PRIu64 ": output before the build "
                 "was started", b->id);
        return TF_EPROTO;
    }
    rc = event_allowed(b, TF_MSG_NONE, h->step, TF_SUCCESS, err, errlen);
    if (rc)
        return rc;
    tf_bstep_t *st = &b->steps[h->step];
    /* One allocation for the group with room for the bytes, which are
     * copied once, from the link's buffer into it. */
    event_commit_t *ec = build_group(m, b, EC_EVENT, h->seq, h->length);
    tf_output_rec_t o = {
        .build_id = b->id,
        .seq = h->seq,
        .step = h->step,
        .stream = h->stream,
        .offset = st->log_bytes,
        .line = st->log_lines,
    };
    st->log_bytes += h->length;
    st->log_lines += count_lines(payload, h->length);
    o.log_bytes = st->log_bytes;
    o.log_lines = st->log_lines;
    tf_publish_log(m, b->id, h->step, o.offset, payload, h->length);
    tf_op_output(m->group, &o, payload, h->length);
    event_accepted(m, b, ec, h->seq, (int)h->step);
    return 0;
}

/* --- slave presence --- */

void tf_build_slave_gone(tf_master_t *m, tf_mslave_t *s)
{
    int64_t now = tf_mono_ms();
    tf_list_t *it;
    (void)m;
    tf_list_foreach(it, &s->builds)
    {
        tf_build_t *b = tf_list_entry(it, tf_build_t, slave_node);
        if (!b->lost_since_ms)
            b->lost_since_ms = now;
    }
}

/* Whether a build the slave reports came from another farm: it names a
 * farm (slaves that do not know farms name none) that is not ours. Its
 * id then means another build there, whatever ours of that number is. */
static bool running_foreign(const tf_master_t *m, const tf_running_t *r)
{
    return r->farm[0] && m->farm[0] && strcmp(r->farm, m->farm) != 0;
}

static bool hello_has(const tf_master_t *m, const tf_msg_t *hello,
                      uint64_t id)
{
    for (size_t i = 0; i < hello->u.hello.nrunning; i++)
        if (hello->u.hello.running[i].build_id == id &&
            !running_foreign(m, &hello->u.hello.running[i]))
            return true;
    return false;
}

int tf_build_slave_back(tf_master_t *m, tf_mslave_t *s, const tf_msg_t *hello,
                        tf_running_t **resume, size_t *nresume,
                        uint64_t **abandon, size_t *nabandon)
{
    size_t nrun = hello->u.hello.nrunning;
    *resume = calloc(nrun ? nrun : 1, sizeof(tf_running_t));
    *abandon = calloc(nrun ? nrun : 1, sizeof(uint64_t));
    *nresume = *nabandon = 0;
    if (!*resume || !*abandon) {
        free(*resume);
        free(*abandon);
        *resume = NULL;
        *abandon = NULL;
        return TF_ENOMEM;
    }
    for (size_t i = 0; i < nrun; i++) {
        uint64_t id = hello->u.hello.running[i].build_id;
        uint64_t has = hello->u.hello.running[i].seq;
        if (running_foreign(m, &hello->u.hello.running[i])) {
            tf_warn("build", "slave %s reports build %" PRIu64 " of farm %s, "
                    "not this one (%s): abandoned, whatever this farm's "
                    "build %" PRIu64 " is", s->name, id,
                    hello->u.hello.running[i].farm, m->farm, id);
            (*abandon)[(*nabandon)++] = id;
            continue;
        }
        tf_build_t *b = tf_map_get_id(m->builds, id);
        if (!b || strcmp(b->slave, s->name) != 0 ||
            b->state == TF_BUILD_ENDING) {
            (*abandon)[(*nabandon)++] = id;
            continue;
        }
        if (has < b->accepted_seq) {
            /* The slave lost events the master holds (a spool cut short
             * by a crash): its idea of the build no longer matches ours,
             * and numbering on from either side would go wrong. */
            char text[200];
            snprintf(text, sizeof(text), "the slave came back with event "
                     "%" PRIu64 " as its last, but the master had event "
                     "%" PRIu64 ": its record of the build was lost",
                     has, b->accepted_seq);
            (*abandon)[(*nabandon)++] = id;
            build_end_forced(m, b, TF_RETRY, text);
            continue;
        }
        /* The committed event, not merely the accepted one: the slave may
         * forget what resume covers (it is an ack), and it resends the
         * accepted rest, which is dropped here as duplicates. */
        (*resume)[(*nresume)++] =
            (tf_running_t){.build_id = id, .seq = b->committed_seq};
        if (b->committed_seq > b->acked_seq)
            b->acked_seq = b->committed_seq;
        b->lost_since_ms = 0;
        tf_info("build", "build %" PRIu64 " resumes on slave %s after "
                "event %" PRIu64, id, s->name, b->committed_seq);
    }
    /* Builds the master gave this slave that it no longer has. */
    tf_list_t *it, *tmp;
    tf_list_foreach_safe(it, tmp, &s->builds)
    {
        tf_build_t *b = tf_list_entry(it, tf_build_t, slave_node);
        if (hello_has(m, hello, b->id))
            continue;
        if (b->state == TF_BUILD_STARTING) {
            b->lost_since_ms = 0; /* build_start goes out on commit */
            continue;
        }
        if (m->store && tf_store_is_shared(m->store)) {
            /* It may have ended on another master meanwhile (A->B->A):
             * ended here only if it is still this master's. */
            lost_check_owner(m, b, true);
            continue;
        }
        build_end_forced(m, b, TF_RETRY,
                         "the slave came back without this build");
    }
    return 0;
}

/* Several masters: the build's slave moved to another master, which
 * took the build over (its owner in the database is that master). This
 * master forgets it without ending it: no RETRY, no requeue, no event;
 * the request is the other master's too. */
static void build_forget(tf_master_t *m, tf_build_t *b)
{
    tf_request_t *r = b->request;
    tf_mbuilder_t *mb = tf_master_builder(m, b->builder, false);

    if (mb && mb->nrunning > 0)
        mb->nrunning--;
    build_unlink(m, b);
    build_set_state(b, TF_BUILD_ENDING, "another master's");
    b->request = NULL;
    if (r) {
        r->build = NULL;
        if (r->job_id)
            tf_job_request_forgotten(m, r->job_id);
        tf_request_set_state(m, r, TF_REQ_DONE, "another master's");
        tf_map_del_id(m->requests, r->id);
        tf_request_free(r);
    }
    free(b->start_msg);
    b->start_msg = NULL;
    b->accepted_seq = b->committed_seq;
    b->acks_off = true;
    ack_owed(m, b); /* the ack pass frees it */
}

void tf_build_forget_stale(tf_master_t *m, tf_build_t *b)
{
    if (b->state == TF_BUILD_ENDING)
        return;
    tf_warn("build", "slave %s is back with build %" PRIu64 " (%s #%" PRIu64
            "), which another master took over or ended meanwhile: this "
            "master drops its stale copy and does not resume or end it",
            b->slave, b->id, b->builder, b->number);
    build_forget(m, b);
    /* Its request may be pending again (the other master ended the build
     * as RETRY): the queue is read again. */
    tf_master_farm_changed(m, TF_FARM_QUEUE);
}

static void lost_end(tf_master_t *m, tf_build_t *b)
{
    char text[160];
    snprintf(text, sizeof(text), "slave %s gone for more than %u s",
             b->slave, m->cfg->build_lost_after_s);
    build_end_forced(m, b, TF_RETRY, text);
}

typedef struct owner_check {
    tf_master_t *m;
    uint64_t build_id;
    bool back_without; /* its slave came back without it */
} owner_check_t;

static void owner_checked_cb(void *arg, int rc)
{
    owner_check_t *c = arg;
    tf_master_t *m = c->m;
    tf_build_t *b = tf_map_get_id(m->builds, c->build_id);

    if (!b || b->state == TF_BUILD_ENDING)
        return;
    b->owner_checking = false;
    if (rc == TF_ESTATE) {
        tf_warn("build", "build %" PRIu64 " (%s #%" PRIu64 ") is another "
                "master's now (it took the build over from slave %s): this "
                "master drops its copy and does not end it", b->id,
                b->builder, b->number, b->slave);
        build_forget(m, b);
    } else if (rc == 0 && c->back_without) {
        build_end_forced(m, b, TF_RETRY,
                         "the slave came back without this build");
    } else if (rc == 0 && b->lost_since_ms && !b->returning) {
        lost_end(m, b);
    }
    /* Else the database failed: the next check asks again (the build is
     * still lost, its slave away or back without it). */
}

/* Shared masters ask the database first whether the lost build is still
 * theirs (its slave may run it for another master now, or have ended it
 * there: back_without, the slave came back here without it); the end
 * itself is guarded too (store.h), this only keeps a RETRY that would
 * not be stored out of the logs and the live feed. */
static void lost_check_owner(tf_master_t *m, tf_build_t *b,
                             bool back_without)
{
    if (!tf_master_group_begin(m, sizeof(owner_check_t)))
        return;
    owner_check_t *c = tf_wgroup_alloc(m->group, sizeof(*c));
    if (!c) {
        tf_master_group_commit(m, NULL, NULL);
        return;
    }
    *c = (owner_check_t){.m = m, .build_id = b->id,
                         .back_without = back_without};
    tf_op_build_adopt(m->group, b->id, NULL);
    b->owner_checking = true;
    tf_master_group_commit(m, owner_checked_cb, c);
}

void tf_build_check_lost(tf_master_t *m)
{
    int64_t now = tf_mono_ms();
    int64_t limit = (int64_t)m->cfg->build_lost_after_s * 1000;
    bool shared = m->store && tf_store_is_shared(m->store);
    size_t pos = 0;
    void *v;
    /* Collect first: ending a build changes the map. */
    tf_build_t *lost[64];
    size_t n = 0;
    while (n < 64 && tf_map_next(m->builds, &pos, NULL, NULL, &v) == 0) {
        tf_build_t *b = v;
        if (b->state != TF_BUILD_ENDING && !b->owner_checking &&
            !b->returning && b->lost_since_ms &&
            now - b->lost_since_ms > limit)
            lost[n++] = b;
    }
    for (size_t i = 0; i < n; i++) {
        if (shared)
            lost_check_owner(m, lost[i], false);
        else
            lost_end(m, lost[i]);
    }
}

int tf_build_cancel(tf_master_t *m, uint64_t build_id, const char *why)
{
    tf_build_t *b = tf_map_get_id(m->builds, build_id);
    if (!b || b->state == TF_BUILD_ENDING)
        return TF_ENOENT;
    b->cancel_requested = true;
    tf_mslave_t *s = tf_master_slave(m, b->slave, false);
    if (s && s->link && b->state == TF_BUILD_RUNNING) {
        tf_msg_t a = {.type = TF_MSG_BUILD_ABORT};
        a.u.build_abort.build_id = b->id;
        a.u.build_abort.reason = (char *)(why ? why : "cancelled");
        tf_master_send(m, s, &a);
        tf_info("build", "build %" PRIu64 ": abort sent to %s", b->id,
                s->name);
        return 0;
    }
    /* Not reachable (slave away, or build_start not yet sent): end it here;
     * the slave is told to drop it when it comes back. */
    free(b->start_msg);
    b->start_msg = NULL;
    build_end_forced(m, b, TF_CANCELLED, why ? why : "cancelled");
    return 0;
}
