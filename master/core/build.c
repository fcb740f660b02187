/*
 * build.c - the life of a build on the master.
 *
 *   STARTING --rows committed, build_start sent--> RUNNING
 *   RUNNING  --build_finished / lost / cancelled--> ENDING --committed--> freed
 *
 * Events from the slave (docs/protocol.md, "Build events") are numbered per
 * build. The master applies them strictly in order, queues each one's rows
 * to the store in the same turn, and acknowledges a sequence number only
 * after the transaction holding it committed: an ack is a promise that the
 * slave may forget the event, so acks only go up and never cover an event
 * that was not stored. Duplicates (a replay after a reconnect) are dropped
 * (an ack or welcome.resume covers them); a gap, an event out of the one
 * ordering rule (event_allowed), or an event for a build the master does
 * not run on that slave is a protocol error, refused without an ack.
 *
 * A request whose build_start cannot be encoded (over the protocol's cap,
 * or a value it refuses) never reaches a slave: its build is recorded as
 * EXCEPTION at once, so it cannot sit at the head of its builder's queue.
 *
 * A build whose slave disconnects keeps running on the slave; it waits here
 * (lost_since_ms set) for the slave to come back and resume it. If the slave
 * returns without it, or stays away longer than build_lost_after_s, the
 * build ends as RETRY and its request goes back in the queue (up to
 * max_retries times).
 *
 * The authoritative result is computed here from the step results and the
 * step flags with tf_result_fold; the slave's own result is informational.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clock.h"
#include "log.h"
#include "core/jobs.h"
#include "net/live.h"
#include "mail/mail.h"
#include "core/master.h"
#include "core/props.h"
#include "tf_err.h"

typedef struct event_commit {
    tf_master_t *m;
    uint64_t build_id;
    uint64_t seq;
} event_commit_t;

static void build_unlink(tf_master_t *m, tf_build_t *b);
static void build_end_forced(tf_master_t *m, tf_build_t *b, tf_result_t result,
                             const char *text);

void tf_build_free(tf_build_t *b)
{
    if (!b)
        return;
    free(b->steps);
    free(b->start_msg);
    free(b);
}

static void builder_summary_write(tf_master_t *m, const char *builder)
{
    tf_mbuilder_t *mb = tf_master_builder(m, builder, false);
    if (!mb)
        return;
    tf_sqlval_t v[] = {tf_sql_int(mb->npending), tf_sql_int(mb->nrunning),
                       tf_sql_text(mb->name)};
    tf_master_write(m,
                    "UPDATE builders SET pending = ?1, running = ?2 "
                    "WHERE name = ?3",
                    v, 3, NULL, NULL);
}

/* Adds "key": "value" for each property, later sources overriding. */
static void props_merge_text(json_t *props, const char *json_text)
{
    if (!json_text || !*json_text)
        return;
    json_t *o = json_loads(json_text, 0, NULL);
    if (json_is_object(o))
        json_object_update(props, o);
    json_decref(o);
}

/* The tests of a request as one space-separated string ("" for none). */
static char *tests_string(const tf_request_t *r)
{
    json_t *arr = json_loads(r->tests ? r->tests : "[]", 0, NULL);
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

static json_t *build_properties(tf_master_t *m, const tf_build_t *b,
                                const tf_request_t *r)
{
    json_t *p = json_object();
    if (!p)
        return NULL;
    const tf_cfg_builder_t *cfg = tf_config_builder(m->cfg, b->builder);
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

static void build_send_start(tf_master_t *m, tf_build_t *b)
{
    tf_mslave_t *s = tf_master_slave(m, b->slave, false);
    if (!b->start_msg)
        return;
    if (s && s->link) {
        if (tf_link_send_text(s->link, b->start_msg, b->start_len) == 0)
            tf_info("build", "build %" PRIu64 " (%s #%" PRIu64
                    ") sent to slave %s",
                    b->id, b->builder, b->number, b->slave);
    } else {
        tf_info("build", "build %" PRIu64 ": slave %s went away before "
                "build_start could be sent", b->id, b->slave);
    }
    free(b->start_msg);
    b->start_msg = NULL;
}

static void build_rows_committed_cb(void *arg, int rc)
{
    event_commit_t *ec = arg;
    tf_master_t *m = ec->m;
    tf_build_t *b = tf_map_get_id(m->builds, ec->build_id);
    free(ec);
    if (!b || b->state != TF_BUILD_STARTING)
        return;
    if (rc) {
        tf_error("build", "build %" PRIu64 ": its rows could not be stored; "
                 "not starting it", b->id);
        return;
    }
    b->state = TF_BUILD_RUNNING;
    build_send_start(m, b);
}

int tf_build_start(tf_master_t *m, tf_request_t *r, tf_mslave_t *s)
{
    tf_mbuilder_t *mb = tf_master_builder(m, r->builder, false);
    if (!mb || !mb->cfg)
        return TF_ENOENT;
    const tf_cfg_builder_t *cfg = mb->cfg;
    tf_build_t *b = calloc(1, sizeof(*b));
    json_t *props = NULL;
    char *props_text = NULL;
    tf_step_spec_t *steps = NULL;
    size_t nsteps = 0;
    int rc = TF_ENOMEM;
    if (!b)
        goto fail;
    b->id = m->next_build_id;
    b->number = mb->next_number;
    snprintf(b->builder, sizeof(b->builder), "%s", mb->name);
    snprintf(b->slave, sizeof(b->slave), "%s", s->name);
    b->result = TF_SUCCESS;
    b->request = r;
    b->created_ms = tf_now_ms();
    b->state = TF_BUILD_STARTING;
    tf_list_init(&b->slave_node);
    tf_list_init(&b->ack_node);
    props = build_properties(m, b, r);
    if (!props)
        goto fail;
    rc = build_steps(cfg, r, props, &steps, &nsteps);
    if (rc)
        goto fail;
    rc = TF_ENOMEM;
    b->steps = calloc(nsteps, sizeof(tf_bstep_t));
    if (!b->steps)
        goto fail;
    b->nsteps = nsteps;
    for (size_t i = 0; i < nsteps; i++) {
        b->steps[i].flags = steps[i].flags;
        snprintf(b->steps[i].name, sizeof(b->steps[i].name), "%s",
                 steps[i].name);
    }
    char why[300];
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
    props_text = json_dumps(props, JSON_COMPACT | JSON_SORT_KEYS);
    rc = tf_map_put_id(m->builds, b->id, b);
    if (rc)
        goto fail;

    /* From here on the build exists: commit to it in memory and storage. */
    m->next_build_id++;
    mb->next_number++;
    tf_list_unlink(&r->node);
    mb->npending--;
    mb->nrunning++;
    r->state = TF_REQ_RUNNING;
    r->build = b;
    if (!unsendable) {
        tf_list_push_back(&s->builds, &b->slave_node);
        s->nbuilds++;
        snprintf(mb->last_slave, sizeof(mb->last_slave), "%s", s->name);
    }

    tf_master_group_begin(m);
    tf_sqlval_t bv[] = {
        tf_sql_int((int64_t)b->id), tf_sql_text(b->builder),
        tf_sql_int((int64_t)b->number), tf_sql_int((int64_t)r->id),
        unsendable ? tf_sql_null() : tf_sql_text(b->slave),
        tf_sql_int(b->created_ms),
        tf_sql_int((int64_t)b->nsteps),
        tf_sql_text(props_text ? props_text : "{}"),
        tf_sql_text(r->reason),
        tf_sql_text(cfg->repository),
        tf_sql_text(cfg->branch),
        tf_sql_text(r->revision),
    };
    tf_master_write(m,
                    "INSERT INTO builds(id, builder, number, request_id, "
                    "slave, state, created_ms, nsteps, properties, reason, "
                    "repository, branch, revision) "
                    "VALUES(?1, ?2, ?3, ?4, ?5, 'starting', ?6, ?7, ?8, ?9, "
                    "?10, ?11, ?12)",
                    bv, 12, NULL, NULL);
    for (size_t i = 0; i < nsteps; i++) {
        const tf_step_spec_t *sp = &steps[i];
        json_t *argv = json_array();
        for (size_t k = 0; argv && k < sp->argc; k++)
            json_array_append_new(argv, json_string(sp->argv[k]));
        char *cmd = argv ? json_dumps(argv, JSON_COMPACT) : NULL;
        json_decref(argv);
        tf_sqlval_t sv[] = {
            tf_sql_int((int64_t)b->id), tf_sql_int((int64_t)i),
            tf_sql_text(sp->name), tf_sql_text(cmd ? cmd : "[]"),
            tf_sql_int(tf_flags_bits(&sp->flags)),
        };
        tf_master_write(m,
                        "INSERT INTO steps(build_id, idx, name, state, "
                        "command, flags) VALUES(?1, ?2, ?3, 'pending', ?4, "
                        "?5)",
                        sv, 5, NULL, NULL);
        free(cmd);
    }
    /* The blamelist: the changes the request stands for, those of the
     * requests collapsed into it included (sched.c). */
    tf_sqlval_t cv[] = {tf_sql_int((int64_t)b->id), tf_sql_int((int64_t)r->id)};
    tf_master_write(m,
                    "INSERT OR IGNORE INTO build_changes(build_id, change_id) "
                    "SELECT ?1, change_id FROM request_changes "
                    "WHERE request_id = ?2",
                    cv, 2, NULL, NULL);
    if (r->job_id)
        tf_job_request_started(m, r->job_id);
    tf_live_build(m, b, "created", 0);
    tf_live_request(m, r, "started");
    tf_sqlval_t rv[] = {tf_sql_int((int64_t)b->id), tf_sql_int(b->created_ms),
                        tf_sql_int((int64_t)r->id)};
    tf_master_write(m,
                    "UPDATE build_requests SET state = 'running', "
                    "build_id = ?1, started_ms = coalesce(started_ms, ?2) "
                    "WHERE id = ?3",
                    rv, 3, NULL, NULL);
    tf_sqlval_t uv[] = {tf_sql_int((int64_t)b->id), tf_sql_text(mb->name),
                        tf_sql_int(mb->npending), tf_sql_int(mb->nrunning)};
    event_commit_t *ref = malloc(sizeof(*ref));
    if (ref) {
        ref->m = m;
        ref->build_id = b->id;
        ref->seq = 0;
    }
    tf_master_write(m,
                    "UPDATE builders SET last_build_id = ?1, "
                    "builds_total = builds_total + 1, pending = ?3, "
                    "running = ?4 WHERE name = ?2",
                    uv, 4, NULL, NULL);
    if (unsendable)
        build_end_forced(m, b, TF_EXCEPTION, text);
    tf_master_group_commit(m, ref ? build_rows_committed_cb : NULL, ref);
    if (!unsendable)
        tf_info("build", "build %" PRIu64 " (%s #%" PRIu64 ") of request "
                "%" PRIu64 " assigned to slave %s",
                b->id, b->builder, b->number, r->id, s->name);
    free(props_text);
    json_decref(props);
    steps_free(steps, nsteps);
    return 0;
fail:
    free(props_text);
    json_decref(props);
    steps_free(steps, nsteps);
    tf_build_free(b);
    return rc;
}

/* --- acks --- */

static void ack_owed(tf_master_t *m, tf_build_t *b)
{
    if (!b->ack_pending) {
        b->ack_pending = true;
        tf_list_push_back(&m->ack_list, &b->ack_node);
    }
    tf_sched_defer(m);
}

static void event_committed_cb(void *arg, int rc)
{
    event_commit_t *ec = arg;
    tf_master_t *m = ec->m;
    tf_build_t *b = tf_map_get_id(m->builds, ec->build_id);
    if (b && rc == 0 && ec->seq > b->committed_seq) {
        b->committed_seq = ec->seq;
        ack_owed(m, b);
    } else if (b && rc) {
        tf_error("build", "build %" PRIu64 ": event %" PRIu64
                 " failed to store; not acknowledging it",
                 ec->build_id, ec->seq);
    }
    free(ec);
}

/* Adds the build's last_seq update to the event's write group and commits
 * the group; its commit triggers the ack. */
static void event_accepted(tf_master_t *m, tf_build_t *b, uint64_t seq)
{
    b->accepted_seq = seq;
    event_commit_t *ec = malloc(sizeof(*ec));
    if (ec) {
        ec->m = m;
        ec->build_id = b->id;
        ec->seq = seq;
    }
    tf_sqlval_t v[] = {tf_sql_int((int64_t)seq), tf_sql_int((int64_t)b->id)};
    tf_master_write(m, "UPDATE builds SET last_seq = ?1 WHERE id = ?2", v, 2,
                    NULL, NULL);
    /* The event's rows and its sequence number commit together or not at
     * all, so a restart never replays half an event. */
    tf_master_group_commit(m, ec ? event_committed_cb : NULL, ec);
}

static void send_ack(tf_mslave_t *s, uint64_t build_id, uint64_t seq)
{
    if (!s || !s->link)
        return;
    tf_msg_t a = {.type = TF_MSG_ACK};
    a.u.ack.build_id = build_id;
    a.u.ack.seq = seq;
    tf_link_send_msg(s->link, &a);
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
            send_ack(s, b->id, b->committed_seq);
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

static const char *result_or_null(bool has, tf_result_t r)
{
    return has ? tf_result_name(r) : NULL;
}

/* Ends b with result: writes the build, its request and the summaries,
 * requeues a RETRY, and detaches b from its slave and request. The build
 * object stays in m->builds until its last event is acknowledged. */
static void build_end(tf_master_t *m, tf_build_t *b, tf_result_t result,
                      const char *text)
{
    int64_t now = tf_now_ms();
    tf_request_t *r = b->request;
    tf_mbuilder_t *mb = tf_master_builder(m, b->builder, false);
    (void)result_or_null;

    tf_info("build", "build %" PRIu64 " (%s #%" PRIu64 ") on %s: %s%s%s",
            b->id, b->builder, b->number, b->slave, tf_result_name(result),
            text ? ": " : "", text ? text : "");
    tf_sqlval_t bv[] = {tf_sql_int(result), tf_sql_int(now),
                        tf_sql_text(text), tf_sql_int((int64_t)b->id)};
    tf_master_write(m,
                    "UPDATE builds SET state = 'finished', result = ?1, "
                    "finished_ms = ?2, text = ?3, "
                    "started_ms = coalesce(started_ms, ?2) WHERE id = ?4",
                    bv, 4, NULL, NULL);

    bool requeue = false;
    if (r) {
        unsigned max = m->cfg->max_retries;
        requeue = result == TF_RETRY && r->retries < max && mb && mb->cfg &&
                  !b->cancel_requested;
        if (requeue) {
            r->retries++;
            r->state = TF_REQ_PENDING;
            r->build = NULL;
            tf_sqlval_t rv[] = {tf_sql_int(r->retries),
                                tf_sql_int((int64_t)r->id)};
            tf_master_write(m,
                            "UPDATE build_requests SET state = 'pending', "
                            "retries = ?1, build_id = NULL WHERE id = ?2",
                            rv, 2, NULL, NULL);
        } else {
            tf_sqlval_t rv[] = {tf_sql_int(result), tf_sql_int(now),
                                tf_sql_int((int64_t)r->id)};
            tf_master_write(m,
                            "UPDATE build_requests SET state = 'done', "
                            "result = ?1, finished_ms = ?2 WHERE id = ?3",
                            rv, 3, NULL, NULL);
            if (r->job_id)
                tf_job_request_done(m, r->job_id, result);
            else {
                tf_mail_writer_t w = tf_master_mail_writer(m);
                tf_mail_build_done(m->mail, m->cfg, &w, b->id, b->builder,
                                   result);
            }
        }
    }
    if (mb && mb->nrunning > 0)
        mb->nrunning--;
    if (result != TF_RETRY) {
        tf_sqlval_t sv[] = {tf_sql_int((int64_t)b->id), tf_sql_int(result),
                            tf_sql_int(now), tf_sql_text(b->builder)};
        tf_master_write(m,
                        "UPDATE builders SET last_complete_build_id = ?1, "
                        "last_complete_result = ?2, last_complete_ms = ?3 "
                        "WHERE name = ?4",
                        sv, 4, NULL, NULL);
    }
    tf_sqlval_t dv[] = {tf_sql_text(b->slave)};
    tf_master_write(m,
                    "UPDATE slaves SET builds_done = builds_done + 1 "
                    "WHERE name = ?1",
                    dv, 1, NULL, NULL);
    build_unlink(m, b);
    b->state = TF_BUILD_ENDING;
    tf_live_build(m, b, "finished", result);
    b->request = NULL;
    if (r) {
        if (requeue) {
            tf_sched_enqueue(m, r);
        } else {
            tf_map_del_id(m->requests, r->id);
            tf_request_free(r);
        }
    }
    if (mb)
        builder_summary_write(m, mb->name);
    tf_sched_kick(m);
}

static void build_unlink(tf_master_t *m, tf_build_t *b)
{
    (void)m;
    if (tf_list_linked(&b->slave_node)) {
        tf_list_unlink(&b->slave_node);
        tf_mslave_t *s = tf_master_slave(m, b->slave, false);
        if (s && s->nbuilds > 0)
            s->nbuilds--;
    }
}

/* Ends a build that will send no more events (lost, or cancelled while its
 * slave is away): unfinished steps are closed in storage too. */
static void build_end_forced(tf_master_t *m, tf_build_t *b, tf_result_t result,
                             const char *text)
{
    int64_t now = tf_now_ms();
    for (size_t i = 0; i < b->nsteps; i++) {
        tf_bstep_t *st = &b->steps[i];
        if (st->finished)
            continue;
        tf_result_t r = st->started ? result : TF_SKIPPED;
        tf_sqlval_t v[] = {tf_sql_int(r), tf_sql_int(now),
                           tf_sql_text(st->started ? text : "not run"),
                           tf_sql_int((int64_t)b->id), tf_sql_int((int64_t)i)};
        tf_master_write(m,
                        "UPDATE steps SET state = 'done', result = ?1, "
                        "finished_ms = ?2, text = ?3 "
                        "WHERE build_id = ?4 AND idx = ?5",
                        v, 5, NULL, NULL);
        st->finished = true;
        st->result = r;
    }
    build_end(m, b, result, text);
    /* Nothing more will come for it: make the ack pass free it. */
    b->accepted_seq = b->committed_seq;
    b->acks_off = true;
    ack_owed(m, b);
}

/* --- events --- */

/* The build b that an event of slave s names, or NULL with err filled when
 * the master does not run that build on s: never started, ended, or
 * another slave's. Such an event is refused (malformed), not acknowledged:
 * an ack promises the event is stored, and a slave that sends events for
 * a build it was not given, or after its build_finished, is broken in a
 * way a reconnect does not mend. A duplicate after build_finished is
 * refused too, whether or not the ended build is still in memory, so the
 * answer never depends on timing. */
static tf_build_t *event_build(tf_master_t *m, tf_mslave_t *s,
                               uint64_t build_id, uint64_t seq, char *err,
                               size_t errlen)
{
    tf_build_t *b = tf_map_get_id(m->builds, build_id);
    bool mine = b && strcmp(b->slave, s->name) == 0;
    if (mine && b->state != TF_BUILD_ENDING)
        return b;
    if (mine && b->finish_seen)
        snprintf(err, errlen, "build %" PRIu64 ": event %" PRIu64 " after "
                 "its build_finished (event %" PRIu64 ")", build_id, seq,
                 b->accepted_seq);
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
 * finished. Computed once from the steps (a build restored after a master
 * restart comes with its steps' flags only), then kept up to date by
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

static int ev_step_started(tf_master_t *m, tf_build_t *b, const tf_msg_t *msg)
{
    uint32_t i = msg->u.step_started.step;
    b->steps[i].started = true;
    int64_t t = msg->u.step_started.time_ms;
    b->steps[i].started_ms = t;
    bool first = !b->started_ms;
    if (first) {
        b->started_ms = t;
        tf_sqlval_t v[] = {tf_sql_int(t), tf_sql_int((int64_t)b->id)};
        tf_master_write(m,
                        "UPDATE builds SET state = 'running', started_ms = ?1 "
                        "WHERE id = ?2",
                        v, 2, NULL, NULL);
    }
    tf_sqlval_t v[] = {tf_sql_int(t), tf_sql_int((int64_t)b->id),
                       tf_sql_int(i)};
    tf_master_write(m,
                    "UPDATE steps SET state = 'running', started_ms = ?1 "
                    "WHERE build_id = ?2 AND idx = ?3",
                    v, 3, NULL, NULL);
    if (first)
        tf_live_build(m, b, "started", 0);
    tf_live_step(m, b, i, NULL);
    return 0;
}

/* The stats a step's command modifiers extracted, one row each, in the
 * write group of the step's end (so they commit with it or not at all). A
 * replayed step_finished is dropped before it gets here, and REPLACE keeps
 * a retried write harmless anyway. */
static void step_stats_write(tf_master_t *m, const tf_build_t *b, uint32_t i,
                             const tf_stat_t *st, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        /* The store binds no doubles: "%.17g" text converts back to the
         * very same double. */
        char num[40];
        snprintf(num, sizeof(num), "%.17g", st[k].value);
        tf_sqlval_t v[] = {tf_sql_text(b->builder), tf_sql_int((int64_t)b->id),
                           tf_sql_int(i), tf_sql_text(st[k].name),
                           tf_sql_text(num)};
        tf_master_write(m,
                        "INSERT OR REPLACE INTO stats(builder, build_id, "
                        "step, name, value) "
                        "VALUES(?1, ?2, ?3, ?4, CAST(?5 AS REAL))",
                        v, 5, NULL, NULL);
    }
}

static int ev_step_finished(tf_master_t *m, tf_build_t *b, const tf_msg_t *msg)
{
    const __typeof__(msg->u.step_finished) *f = &msg->u.step_finished;
    uint32_t i = f->step;
    tf_bstep_t *st = &b->steps[i];
    st->finished = true;
    st->result = f->result;
    st->finished_ms = f->time_ms;
    bool term = false;
    b->result = tf_result_fold(b->result, f->result, &st->flags, &term);
    b->terminated = b->terminated || term;
    tf_live_step(m, b, i, f->text);
    tf_sqlval_t v[] = {
        tf_sql_int(f->result),
        tf_sql_int(f->time_ms),
        tf_sql_int(f->duration_ms),
        f->has_exit_code ? tf_sql_int(f->exit_code) : tf_sql_null(),
        f->has_signal ? tf_sql_int(f->signal) : tf_sql_null(),
        tf_sql_int(f->timed_out ? 1 : 0),
        tf_sql_text(f->text),
        tf_sql_int((int64_t)b->id),
        tf_sql_int(i),
        tf_sql_int(f->time_ms - f->duration_ms),
        tf_sql_text(f->info),
        f->has_warnings ? tf_sql_int((int64_t)f->warnings) : tf_sql_null(),
    };
    for (size_t k = 0; k < f->nprops; k++) {
        char path[TF_NAME_MAX + 8];
        snprintf(path, sizeof(path), "$.%s", f->props[k].key);
        tf_sqlval_t pv[] = {tf_sql_text(path), tf_sql_text(f->props[k].value),
                            tf_sql_int((int64_t)b->id)};
        tf_master_write(m,
                        "UPDATE builds SET properties = "
                        "json_set(properties, ?1, ?2) WHERE id = ?3",
                        pv, 3, NULL, NULL);
        if (strcmp(f->props[k].key, "got_revision") == 0) {
            tf_sqlval_t gv[] = {tf_sql_text(f->props[k].value),
                                tf_sql_int((int64_t)b->id)};
            tf_master_write(m,
                            "UPDATE builds SET got_revision = ?1 WHERE id = ?2",
                            gv, 2, NULL, NULL);
        }
    }
    tf_master_write(m,
                    "UPDATE steps SET state = 'done', result = ?1, "
                    "finished_ms = ?2, duration_ms = ?3, exit_code = ?4, "
                    "signal = ?5, timed_out = ?6, text = ?7, "
                    "started_ms = CASE WHEN ?1 = 3 THEN started_ms "
                    "ELSE coalesce(started_ms, ?10) END, "
                    "info = ?11, warnings = ?12 "
                    "WHERE build_id = ?8 AND idx = ?9",
                    v, 12, NULL, NULL);
    step_stats_write(m, b, i, f->stats, f->nstats);
    return 0;
}

/* One test result as a compact JSON line for the log, its message cut to
 * its first TF__TR_LOG_MSG bytes (whole characters). */
#define TF__TR_LOG_MSG 300
static char *test_result_json(const tf_test_result_t *r)
{
    char msg[TF__TR_LOG_MSG + 1];
    json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "suite", r->suite, "name",
                          r->name, "status", tf_tr_status_name(r->status),
                          "attempts", (json_int_t)r->attempts);
    if (!o)
        return NULL;
    if (r->duration_ms >= 0)
        json_object_set_new(o, "duration_ms", json_integer(r->duration_ms));
    if (r->outcome)
        json_object_set_new(o, "outcome", json_string(r->outcome));
    if (r->message) {
        size_t n = strlen(r->message);
        if (n > TF__TR_LOG_MSG) {
            n = TF__TR_LOG_MSG;
            while (n > 0 && ((unsigned char)r->message[n] & 0xc0) == 0x80)
                n--;
        }
        memcpy(msg, r->message, n);
        msg[n] = '\0';
        json_object_set_new(o, "message", json_string(msg));
    }
    if (r->has_log)
        json_object_set_new(o, "log", json_pack("{s:I, s:I, s:I}", "offset",
                                                (json_int_t)r->log_offset,
                                                "line",
                                                (json_int_t)r->log_line,
                                                "lines",
                                                (json_int_t)r->log_lines));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* test_results (docs/protocol.md): checked against the build's state and
 * acknowledged like any event (after the commit that records its seq), so
 * the slave's spool and replay work for it as for output. The master does
 * not store per-test rows yet (that comes with the storage rework): it logs
 * one line per message at info and one JSON line per result at debug. */
static void ev_test_results(tf_master_t *m, tf_build_t *b,
                            const tf_msg_t *msg)
{
    const __typeof__(msg->u.test_results) *t = &msg->u.test_results;
    size_t count[5] = {0};
    (void)m;
    for (size_t i = 0; i < t->nresults; i++)
        count[t->results[i].status]++;
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
    for (size_t i = 0; i < t->nresults; i++) {
        char *j = test_result_json(&t->results[i]);
        if (j)
            tf_debug("build", "build %" PRIu64 " step %u test result %s",
                     b->id, t->step, j);
        free(j);
    }
}

/* Closes the steps the slave never reported (at its build_finished): they
 * did not run. */
static size_t steps_close_unreported(tf_master_t *m, tf_build_t *b)
{
    int64_t now = tf_now_ms();
    size_t n = 0;
    for (size_t i = 0; i < b->nsteps; i++) {
        tf_bstep_t *st = &b->steps[i];
        if (st->finished)
            continue;
        tf_sqlval_t v[] = {tf_sql_int(TF_SKIPPED), tf_sql_int(now),
                           tf_sql_text("not run"), tf_sql_int((int64_t)b->id),
                           tf_sql_int((int64_t)i)};
        tf_master_write(m,
                        "UPDATE steps SET state = 'done', result = ?1, "
                        "finished_ms = ?2, text = ?3 "
                        "WHERE build_id = ?4 AND idx = ?5",
                        v, 5, NULL, NULL);
        st->finished = true;
        st->result = TF_SKIPPED;
        n++;
    }
    return n;
}

/* build_finished: the result comes from the steps (the slave's own is
 * informational), except that when the slave left steps unreported its
 * result is folded in too: a slave that stopped a build early (RETRY on
 * an abort-mode shutdown, a build it did not take) says why that way. */
static void ev_build_finished(tf_master_t *m, tf_build_t *b,
                              const tf_msg_t *msg)
{
    tf_result_t res = b->result;
    tf_result_t said = msg->u.build_finished.result;
    const char *text = NULL;
    bool any = false;
    for (size_t i = 0; i < b->nsteps; i++)
        any = any || b->steps[i].started || b->steps[i].finished;
    b->finish_seen = true;
    if (steps_close_unreported(m, b) > 0) {
        res = tf_result_worst(res, said);
        if (!any && said == TF_RETRY)
            text = "the slave did not take the build";
    }
    if (b->cancel_requested && res != TF_CANCELLED)
        res = tf_result_worst(res, TF_CANCELLED);
    build_end(m, b, res, text);
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
    int rc = event_order(m, b, seq, err, errlen);
    if (rc)
        return rc < 0 ? rc : 0;
    rc = event_allowed(b, msg->type, step, result, err, errlen);
    if (rc)
        return rc;
    if (b->state == TF_BUILD_STARTING)
        b->state = TF_BUILD_RUNNING; /* events can beat the commit callback */
    tf_master_group_begin(m);
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
    event_advance(b, msg->type, step);
    event_accepted(m, b, seq);
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
    int rc = event_order(m, b, h->seq, err, errlen);
    if (rc)
        return rc < 0 ? rc : 0;
    rc = event_allowed(b, TF_MSG_NONE, h->step, TF_SUCCESS, err, errlen);
    if (rc)
        return rc;
    tf_bstep_t *st = &b->steps[h->step];
    void *copy = malloc(h->length);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return TF_ENOMEM;
    }
    memcpy(copy, payload, h->length);
    tf_master_group_begin(m);
    uint64_t offset = st->log_bytes;
    uint64_t line = st->log_lines;
    st->log_bytes += h->length;
    st->log_lines += count_lines(payload, h->length);
    tf_live_log(m, b->id, h->step, offset, payload, h->length);
    tf_sqlval_t cv[] = {
        tf_sql_int((int64_t)b->id), tf_sql_int(h->step),
        tf_sql_int((int64_t)offset), tf_sql_int((int64_t)h->seq),
        tf_sql_int(h->stream), tf_sql_int((int64_t)line),
        tf_sql_blob_owned(copy, h->length),
    };
    tf_master_write(m,
                    "INSERT INTO log_chunks(build_id, step, offset, seq, "
                    "stream, line, data) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    cv, 7, NULL, NULL);
    tf_sqlval_t sv[] = {tf_sql_int((int64_t)st->log_bytes),
                        tf_sql_int((int64_t)st->log_lines),
                        tf_sql_int((int64_t)b->id), tf_sql_int(h->step)};
    tf_master_write(m,
                    "UPDATE steps SET log_bytes = ?1, log_lines = ?2 "
                    "WHERE build_id = ?3 AND idx = ?4",
                    sv, 4, NULL, NULL);
    event_accepted(m, b, h->seq);
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

static bool hello_has(const tf_msg_t *hello, uint64_t id)
{
    for (size_t i = 0; i < hello->u.hello.nrunning; i++)
        if (hello->u.hello.running[i].build_id == id)
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
            tf_master_group_begin(m);
            build_end_forced(m, b, TF_RETRY, text);
            tf_master_group_commit(m, NULL, NULL);
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
        if (hello_has(hello, b->id))
            continue;
        if (b->state == TF_BUILD_STARTING) {
            b->lost_since_ms = 0; /* build_start goes out on commit */
            continue;
        }
        tf_master_group_begin(m);
        build_end_forced(m, b, TF_RETRY,
                         "the slave came back without this build");
        tf_master_group_commit(m, NULL, NULL);
    }
    return 0;
}

void tf_build_check_lost(tf_master_t *m)
{
    int64_t now = tf_mono_ms();
    int64_t limit = (int64_t)m->cfg->build_lost_after_s * 1000;
    size_t pos = 0;
    void *v;
    /* Collect first: ending a build changes the map. */
    tf_build_t *lost[64];
    size_t n = 0;
    while (n < 64 && tf_map_next(m->builds, &pos, NULL, NULL, &v) == 0) {
        tf_build_t *b = v;
        if (b->state != TF_BUILD_ENDING && b->lost_since_ms &&
            now - b->lost_since_ms > limit)
            lost[n++] = b;
    }
    for (size_t i = 0; i < n; i++) {
        char text[160];
        snprintf(text, sizeof(text), "slave %s gone for more than %u s",
                 lost[i]->slave, m->cfg->build_lost_after_s);
        tf_master_group_begin(m);
        build_end_forced(m, lost[i], TF_RETRY, text);
        tf_master_group_commit(m, NULL, NULL);
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
        tf_link_send_msg(s->link, &a);
        tf_info("build", "build %" PRIu64 ": abort sent to %s", b->id,
                s->name);
        return 0;
    }
    /* Not reachable (slave away, or build_start not yet sent): end it here;
     * the slave is told to drop it when it comes back. */
    free(b->start_msg);
    b->start_msg = NULL;
    tf_master_group_begin(m);
    build_end_forced(m, b, TF_CANCELLED, why ? why : "cancelled");
    tf_master_group_commit(m, NULL, NULL);
    return 0;
}
