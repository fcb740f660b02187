/*
 * ops.h - the records of the storage interface's write operations, as an
 * engine sees them.
 *
 * The rest of the master builds these through the constructors in
 * store.h (tf_op_*), which copy every string and blob into the group's
 * arena; an engine reads them in its apply function and turns each into
 * its own statements. A record holds facts ("build 7's step 2 finished
 * SUCCESS at T"), never SQL: that is what lets a second engine
 * (PostgreSQL, issue 15) apply the same groups.
 *
 * Pointers inside a record point into the group's memory and live as
 * long as the group. NULL strings mean "none" (SQL NULL); optional
 * integers come with a has_ flag.
 *
 * Adding an operation: a kind here (and its name in ops.c's table), a
 * record, a constructor in store.h/ops.c, its statements (in
 * store/writes.c when both engines run the same SQL) and its apply in
 * every engine (store/sqlite.c, store/pg.c). docs/internals.md lists
 * them.
 */
#ifndef TF_STORE_OPS_H
#define TF_STORE_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct sqlite3; /* the sqlite engine's raw ops only */
struct tf_sqlval;

typedef enum tf_op_kind {
    /* slaves */
    TF_OP_SLAVE_EVENT = 1,
    TF_OP_SLAVE_CONNECTED,
    TF_OP_SLAVE_DISCONNECTED,
    TF_OP_SLAVE_SEEN,
    TF_OP_SLAVES_RESET,
    TF_OP_SLAVE_KNOWN,
    TF_OP_SLAVE_DRAINING,
    /* builders */
    TF_OP_BUILDERS_DEACTIVATE,
    TF_OP_BUILDER_ACTIVATE,
    TF_OP_BUILDER_COUNTS,
    /* requests */
    TF_OP_REQUEST_CREATE,
    TF_OP_REQUEST_REQUEUE,
    TF_OP_REQUEST_COLLAPSE,
    TF_OP_REQUEST_CANCEL,
    TF_OP_REQUEST_DONE,
    TF_OP_REQUEST_REUSED,
    /* builds */
    TF_OP_BUILD_CREATE,
    TF_OP_BUILD_SEQ,
    TF_OP_STEP_START,
    TF_OP_OUTPUT,
    TF_OP_STEP_FINISH,
    TF_OP_BUILD_PROP,
    TF_OP_STAT,
    TF_OP_STEP_FORCE_END,
    TF_OP_BUILD_FINISH,
    TF_OP_TEST_RESULT,
    TF_OP_BUILD_ADOPT,
    TF_OP_CANCEL_MARK,
    /* try jobs */
    TF_OP_PATCH_PUT,
    TF_OP_JOB_CREATE,
    TF_OP_JOB_RUNNING,
    TF_OP_JOB_FINISH,
    TF_OP_JOB_SETTLE,
    /* mail outbox */
    TF_OP_MAIL_JOB,
    TF_OP_MAIL_BUILD,
    /* committers */
    TF_OP_USER_ADD,
    TF_OP_USER_REMOVE,
    /* changes, pollers, schedulers */
    TF_OP_CHANGES_RECORD,
    TF_OP_POLLER_HEALTH,
    TF_OP_SCHEDULER_STATE,
    /* the sqlite engine's raw escape hatches (store_sqlite.h) */
    TF_OP_SQL,
    TF_OP_SQL_FN,
    TF_OP_KIND_COUNT
} tf_op_kind_t;

typedef struct tf_op_slave_event {
    const char *slave, *event, *detail;
    int64_t time_ms;
} tf_op_slave_event_t;

typedef struct tf_op_slave_connected {
    const char *name, *platform, *version, *tags_json;
    int64_t time_ms;
} tf_op_slave_connected_t;

/* SLAVE_DISCONNECTED, SLAVE_SEEN, SLAVE_KNOWN and SLAVE_DRAINING (time
 * unused). */
typedef struct tf_op_slave_time {
    const char *name;
    int64_t time_ms;
} tf_op_slave_time_t;

typedef struct tf_op_builder_counts {
    const char *name;
    int64_t pending, running;
} tf_op_builder_counts_t;

/* BUILDER_ACTIVATE */
typedef struct tf_op_name {
    const char *name;
} tf_op_name_t;

typedef struct tf_op_request_create {
    uint64_t id;
    const char *builder, *reason, *owner, *properties, *tests, *revision;
    const char *patch_sha256; /* NULL: no patch */
    uint64_t patch_size;
    int64_t priority;
    int64_t submitted_ms;
    uint64_t job_id; /* 0: none */
    uint64_t without_patch_of; /* 0: none; else the try build it reruns */
    const char *scheduler;
    const uint64_t *changes;
    size_t nchanges;
} tf_op_request_create_t;

/* REQUEST_REQUEUE (retries), REQUEST_COLLAPSE (into, time_ms),
 * REQUEST_CANCEL (time_ms), REQUEST_DONE (result, time_ms). */
typedef struct tf_op_request_end {
    uint64_t id;
    uint64_t into;
    int64_t retries;
    int64_t result;
    int64_t time_ms;
} tf_op_request_end_t;

typedef struct tf_op_build_step {
    const char *name;
    const char *command_json;
    int64_t flags;
} tf_op_build_step_t;

typedef struct tf_op_build_create {
    uint64_t id, number, request_id;
    const char *builder, *slave, *properties, *reason;
    const char *repository, *branch, *revision, *recipe;
    int64_t created_ms;
    const tf_op_build_step_t *steps;
    size_t nsteps;
    bool no_changes;  /* tf_build_rec_t's */
    const char *kind; /* tf_build_rec_t's: "try", "ci" or NULL */
} tf_op_build_create_t;

/* The event chain: the build's stored last_seq moves from seq - 1 to seq,
 * and the group fails when it is not at seq - 1 (a group before it in
 * the chain was not stored). */
typedef struct tf_op_build_seq {
    uint64_t build_id, seq;
} tf_op_build_seq_t;

typedef struct tf_op_step_start {
    uint64_t build_id;
    uint32_t step;
    bool first; /* the build's first step: the build is running from now */
    int64_t time_ms;
} tf_op_step_start_t;

typedef struct tf_op_output {
    uint64_t build_id, seq;
    uint32_t step;
    int stream;
    uint64_t offset, line;        /* where the chunk starts in the log */
    uint64_t log_bytes, log_lines; /* the step's totals with the chunk */
    const uint8_t *data;
    size_t len;
} tf_op_output_t;

typedef struct tf_op_step_finish {
    uint64_t build_id;
    uint32_t step;
    int64_t result, time_ms, duration_ms;
    bool has_exit_code, has_signal, has_warnings, timed_out;
    int64_t exit_code, signal, warnings;
    const char *text, *info;
} tf_op_step_finish_t;

typedef struct tf_op_build_prop {
    uint64_t build_id;
    const char *key, *value;
} tf_op_build_prop_t;

typedef struct tf_op_stat {
    const char *builder, *name;
    uint64_t build_id;
    uint32_t step;
    double value;
} tf_op_stat_t;

typedef struct tf_op_step_force_end {
    uint64_t build_id;
    uint32_t step;
    int64_t result, time_ms;
    const char *text;
} tf_op_step_force_end_t;

typedef struct tf_op_build_finish {
    uint64_t build_id;
    const char *builder, *slave, *text;
    int64_t result, time_ms;
    bool complete; /* counts as the builder's last complete build */
} tf_op_build_finish_t;

/* Several masters (store.shared): this master takes build_id over from
 * the owner it read (tf_ld_build_t.owner). The group fails with TF_ESTATE
 * when the build has another owner by now or has finished: another master
 * took it first, or its owner ended it. A single master owns every build
 * (the engine accepts the op and changes nothing). */
typedef struct tf_op_build_adopt {
    uint64_t build_id;
    const char *from; /* the owner read with the build ("" for none);
                       * NULL: this master (is the build still mine?) */
} tf_op_build_adopt_t;

/* A cancel stored (tf_op_cancel_mark): the reason on the open build, or
 * on the open try job and each of its open builds. The group fails with
 * TF_ESTATE when the build has finished or the job has ended. */
typedef struct tf_op_cancel_mark {
    uint64_t build_id; /* 0: the job's */
    uint64_t job_id;
    const char *why;
} tf_op_cancel_mark_t;

/* One test's result in one step of a build (tf_op_test_result). An
 * engine stores it and applies the flaky rule: when status is "pass" and
 * the build already holds a "fail" row of the same (suite, name), in any
 * step, those rows and this one become "flaky" (a failure a retry
 * passed). */
typedef struct tf_op_test_result {
    uint64_t build_id;
    uint32_t step;
    const char *builder, *suite, *name;
    const char *status;  /* "pass", "fail", "skip" or "flaky" */
    const char *outcome, *message; /* NULL: none */
    uint32_t attempts;
    int64_t duration_ms; /* < 0: unknown */
    bool has_log;
    uint64_t log_offset, log_line, log_lines;
} tf_op_test_result_t;

typedef struct tf_op_patch_put {
    const char *sha256;
    const uint8_t *data;
    size_t len;
    int64_t created_ms;
} tf_op_patch_put_t;

typedef struct tf_op_job_create {
    uint64_t id;
    int64_t user_id;
    const char *author, *email, *notify_email, *description, *review_url;
    const char *patchset, *base_revision, *patch_sha256;
    bool notify;
    bool new_failures_only;
    uint64_t patch_size;
    int64_t submitted_ms;
} tf_op_job_create_t;

/* JOB_RUNNING (id), JOB_FINISH (all), JOB_SETTLE (id, time_ms, mail). */
typedef struct tf_op_job_end {
    uint64_t id;
    const char *state; /* "finished" or "cancelled" */
    int64_t result, time_ms;
    bool mail;         /* JOB_SETTLE: queue the job's report */
} tf_op_job_end_t;

typedef struct tf_op_mail_job {
    uint64_t job_id;
    int64_t time_ms;
} tf_op_mail_job_t;

typedef struct tf_op_mail_build {
    uint64_t build_id;
    const char *builder, *recipients_json;
    int64_t result, mode, time_ms;
} tf_op_mail_build_t;

typedef struct tf_op_user {
    const char *email, *name, *token_sha256;
    int64_t time_ms;
    int *changed; /* caller's: 1 when a row was added or removed */
} tf_op_user_t;

typedef struct tf_op_changes_record {
    const char *repository, *branch, *head;
    int64_t time_ms;
    const tf_change_rec_t *changes;
    size_t n;
    uint64_t *ids_out; /* caller's, n of them */
    bool *fresh_out;   /* caller's, n of them */
} tf_op_changes_record_t;

typedef struct tf_op_poller_health {
    const char *repository, *branch, *last_error;
    int64_t last_poll_ms, last_ok_ms, failing_since_ms; /* 0: none */
} tf_op_poller_health_t;

typedef struct tf_op_scheduler_state {
    const char *name, *last_revision;
    int64_t last_fired_ms, next_fire_ms; /* 0 (next: <= 0): none */
} tf_op_scheduler_state_t;

/* TF_OP_SQL: one statement (store_sqlite.h). */
typedef struct tf_op_sql {
    const char *sql;
    const struct tf_sqlval *vals;
    size_t nvals;
} tf_op_sql_t;

typedef struct tf_op_sql_fn {
    int (*fn)(struct sqlite3 *db, void *arg);
    void *arg;
} tf_op_sql_fn_t;

typedef struct tf_op tf_op_t;
struct tf_op {
    tf_op_t *next;
    tf_op_kind_t kind;
    union {
        tf_op_slave_event_t slave_event;
        tf_op_slave_connected_t slave_connected;
        tf_op_slave_time_t slave_time;
        tf_op_builder_counts_t builder_counts;
        tf_op_name_t name;
        tf_op_request_create_t request_create;
        tf_op_request_end_t request_end;
        tf_op_build_create_t build_create;
        tf_op_build_seq_t build_seq;
        tf_op_step_start_t step_start;
        tf_op_output_t output;
        tf_op_step_finish_t step_finish;
        tf_op_build_prop_t build_prop;
        tf_op_stat_t stat;
        tf_op_step_force_end_t step_force_end;
        tf_op_build_finish_t build_finish;
        tf_op_build_adopt_t build_adopt;
        tf_op_cancel_mark_t cancel_mark;
        tf_op_test_result_t test_result;
        tf_op_patch_put_t patch_put;
        tf_op_job_create_t job_create;
        tf_op_job_end_t job_end;
        tf_op_mail_job_t mail_job;
        tf_op_mail_build_t mail_build;
        tf_op_user_t user;
        tf_op_changes_record_t changes_record;
        tf_op_poller_health_t poller_health;
        tf_op_scheduler_state_t scheduler_state;
        tf_op_sql_t sql;
        tf_op_sql_fn_t sql_fn;
    } u;
};

/* A unit of a group (tf_wgroup_unit_end): the ops from first to last,
 * and its outcome when the group was split after failing (store.c). */
typedef struct tf_wunit {
    struct tf_wunit *next;
    tf_op_t *first, *last;
    int rc;
} tf_wunit_t;

/* A group as the writer and the engines see it (store.c owns the rest of
 * the struct). */
struct tf_wgroup {
    tf_wgroup_t *next;   /* the store's lists */
    tf_op_t *head, *tail;
    size_t nops;
    size_t cost;         /* bytes it holds: what the queue caps count */
    bool failed;         /* an op could not be added (out of memory) */
    bool keep;           /* tf_wgroup_keep: the caller frees it on failure */
    bool poisoned;       /* excluded from its batch: fails without running */
    bool changes_state;  /* holds more than progress (tf_store_generation) */
    bool split;          /* failed, then its units were applied one by one */
    bool prompt;         /* tf_wgroup_prompt: its transaction ends with it */
    tf_wunit_t *units, *units_tail; /* tf_wgroup_unit_end, in order */
    size_t nunits;
    const tf_op_t *poison_op; /* the op a test hook's rule matched */
    int rc;              /* its outcome, set by the writer */
    tf_store_done_cb cb;
    void *arg;
    struct tf_wchunk *chunks; /* the arena's blocks after the first */
    unsigned char *cur;       /* free space of the current block */
    size_t left;
    void **owned;        /* malloc'd buffers handed over (freed with it) */
    size_t nowned, owned_cap;
    size_t cap;          /* bytes of the inline block */
    unsigned char first[]; /* the first block of the arena */
};

/* The name of an op kind ("output", "build_create"): for logs and the
 * test hooks. NULL for an unknown kind. */
const char *tf__op_kind_name(tf_op_kind_t kind);

/* The kind named name, or 0. */
tf_op_kind_t tf__op_kind_by_name(const char *name);

/* Whether g holds an op of kind. */
bool tf__wgroup_has(const tf_wgroup_t *g, tf_op_kind_t kind);

/* What g was doing, for an engine's log line about its failure: its
 * first op's kind name, a raw statement's SQL, or "(empty group)". The
 * string is g's or static (not to be freed). */
const char *tf__wgroup_what(const tf_wgroup_t *g);

#endif
