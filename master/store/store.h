/*
 * store.h - the master's storage interface: typed operations in, typed
 * answers out. No SQL and no engine types cross it.
 *
 * Writes. The loop thread never writes to the database. It collects the
 * operations of one event into a group (tf_wgroup_new, then tf_op_*: "add
 * the output chunk", "finish the step", ...) and submits the group
 * (tf_store_submit) to a bounded queue. One writer thread drains the
 * queue and hands each drained batch to the engine, which applies it as
 * one transaction with each group under its own savepoint: a group
 * commits whole or not at all, and a group that fails on its own (a
 * constraint, a broken event chain) is rolled back alone while its
 * batch-mates commit. The outcome of each group comes back to the loop
 * thread through uv_async, in submission order: the done callback runs
 * after the commit that holds the group (rc 0) or after the group failed
 * (TF_ESTORE). A failure of the whole database (disk full, I/O error,
 * busy) rolls the batch back and the writer retries the same batch with
 * backoff (0.1 s doubling to 10 s) until it commits: nothing queued is
 * dropped, the queue fills, and the congestion callback tells the master
 * to stop reading from slaves (backpressure) until it drains.
 * tf_store_close() lets the writer drain and commit everything queued.
 *
 * Reads. A query is a typed record (tf_query_t first, then its inputs and
 * outputs) that the engine runs on a reader connection: tf_store_query on
 * libuv's thread pool with the answer back on the loop thread, or
 * tf_store_query_sync on the calling thread, which is allowed at startup
 * and in offline commands but never on the loop thread once the master
 * serves (tf_store_serving: it asserts).
 *
 * Engines. sqlite (store/sqlite.c) is the one engine today; the generic
 * half (queue, writer thread, retries, congestion, close) is store.c, and
 * store/engine.h is the contract between them, so a PostgreSQL engine
 * plugs in beside sqlite (docs/internals.md, "The storage interface").
 *
 * Threads: every function here is for the loop thread unless it says
 * otherwise; constructors of a group touch only that group.
 */
#ifndef TF_STORE_H
#define TF_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "email.h" /* TF_EMAIL_MAX */
#include "names.h" /* TF_NAME_MAX */

/* Shared masters (store.shared) take ids in blocks of this many. */
#define TF_STORE_ID_BLOCK 1000
#define TF_STORE_ID_BLOCK_STR "1000"

/* What another shared master's commit changed (tf_store_opts_t.farm_cb). */
enum {
    TF_FARM_QUEUE = 1, /* requests added or put back */
    TF_FARM_MAIL = 2,  /* mail queued in the outbox */
    TF_FARM_EVENT = 4, /* live feed events (tf_store_farm_take) */
    TF_FARM_IDS = 8,   /* a block of ids is ready after
                        * tf_store_reserve_ids said TF_EFULL */
    TF_FARM_DUTY = 16, /* this master took the duty lease */
    TF_FARM_COMMIT = 32, /* another master committed something (any
                          * batch; also after the listener reconnects):
                          * what it stored may be read now */
};

/* The largest live feed event that crosses to the other masters. */
#define TF_FARM_EVENT_MAX 7000

typedef struct tf_store tf_store_t;
typedef struct tf_wgroup tf_wgroup_t;

/* Called on the loop thread after a group committed (rc 0) or failed
 * (TF_ESTORE), or after a query ran (its return value). */
typedef void (*tf_store_done_cb)(void *arg, int rc);

/* Called on the loop thread when the write queue crosses its high
 * watermark (congested = true) and when it drains below the low one. */
typedef void (*tf_store_congestion_cb)(void *arg, bool congested);

typedef struct tf_store_opts {
    size_t queue_soft_bytes; /* congestion above this; default 32 MiB */
    size_t queue_hard_bytes; /* submit fails above; default 256 MiB */
    unsigned readers;        /* reader connections; default 4 */
    tf_store_congestion_cb congestion_cb;
    void *congestion_arg;
    bool exclusive;          /* the farm's master: an engine shared over a
                              * network (PostgreSQL) refuses to open when
                              * another master holds the database; offline
                              * commands (user, mail) leave it false */
    bool standby;            /* with exclusive: wait until the other
                              * master goes instead of refusing */
    bool shared;             /* with exclusive: one of several active
                              * masters on the database (PostgreSQL's
                              * store.shared, issue 15) */
    void (*farm_cb)(void *arg, unsigned what);
                             /* shared: called on the loop thread when
                              * another master committed changes to the
                              * queue or the outbox (what: TF_FARM_*), or
                              * this one gained the duty lease (both) */
    void *farm_arg;
    unsigned keepalive_idle_s;     /* engines over a network (PostgreSQL):
                                    * TCP keepalives of every connection,
                                    * both ends; 0: 10 s */
    unsigned keepalive_interval_s; /* 0: 5 s */
    unsigned keepalive_count;      /* 0: 3 */
    unsigned lease_timeout_s;      /* shared: a master whose heartbeat is
                                    * older is dead; 0: 15 s */
} tf_store_opts_t;

/* Opens (creating if needed) the database at path, applies migrations,
 * and starts the writer thread. Call on the loop thread. opts may be NULL
 * for defaults. Returns 0 and *out, or a negative code with a message
 * logged (TF_EVERSION: the database is from a newer tf-master). */
int tf_store_open(uv_loop_t *loop, const char *path,
                  const tf_store_opts_t *opts, tf_store_t **out);

/* Checks the database at path without opening it for writing or changing
 * it: full runs every check the engine has (sqlite: PRAGMA
 * integrity_check), else the quick one tf_store_open runs too. Each
 * problem goes to line(arg, text). Returns 0 when sound, TF_ECORRUPT
 * when damaged, TF_EINVAL for a setting no engine of this build takes,
 * another code when the check could not run. Any thread. */
int tf_store_check(const char *path, bool full,
                   void (*line)(void *arg, const char *text), void *arg);

/* The database setting as logs show it: a URL's password (between ':'
 * and '@' after "://") becomes "***"; a path stays as it is. Writes at
 * most len bytes (truncating) into out. */
void tf_store_display(const char *path, char *out, size_t len);

/* The master serves from now on: synchronous reads on the loop thread are
 * a bug (they would block it) and assert. */
void tf_store_serving(tf_store_t *s);

typedef struct tf_store_health {
    size_t queued_ops;        /* groups queued or awaiting their callback */
    size_t queued_bytes;
    bool congested;
    uint64_t batches;         /* committed so far */
    uint64_t ops;             /* groups committed so far */
    unsigned failing_for_ms;  /* 0 when the last batch committed */
    char last_error[256];     /* "" when healthy */
} tf_store_health_t;

/* Snapshot of the writer's state (any thread). */
void tf_store_health(tf_store_t *s, tf_store_health_t *out);

/* Shared masters: the first of TF_STORE_ID_BLOCK consecutive ids (for
 * requests, builds and jobs alike) that no other master gets. Never waits
 * for the database: the engine reserves each block ahead (the first when
 * the store opens, the next as soon as one is taken, off the loop
 * thread). Returns 0, TF_EFULL when the next block is not ready yet
 * (back off: opts.farm_cb says TF_FARM_IDS when it is), TF_ESTATE when
 * the store is not shared, or TF_ESTORE. Loop thread. */
int tf_store_reserve_ids(tf_store_t *s, uint64_t *first);

/* Whether this master runs the single-runner duties (mail, pollers,
 * periodic schedulers): always, except a shared master that does not
 * hold the duty lease. Any thread. */
bool tf_store_has_duty(tf_store_t *s);

/* Whether the store was opened with opts.shared. */
bool tf_store_is_shared(const tf_store_t *s);

/* Shared masters: this master's name in builds.owner (host/pid/random,
 * borrowed, fixed for the store's life); "" when not shared or the
 * engine has no owners. */
const char *tf_store_owner(const tf_store_t *s);

/* Shared masters: sends a live feed event (topic, JSON text) to the
 * other masters, right away (not with a commit: a live event is news,
 * the state behind it is read from the database). Copies text; drops
 * events over TF_FARM_EVENT_MAX bytes and any past a queue of 1 MiB (a
 * viewer then misses it as it would miss a dropped message). Returns 0,
 * TF_E2BIG or TF_EFULL. Loop thread. */
int tf_store_farm_send(tf_store_t *s, const char *topic, const char *text);

/* The live relay between shared masters, counted since the start:
 * events sent in how many NOTIFYs (batched), received, and dropped each
 * way because a relay queue (1 MiB) was full or the database failed. */
typedef struct tf_store_farm_stats {
    uint64_t sent, notifies, received, dropped_out, dropped_in;
} tf_store_farm_stats_t;

/* Fills out (zeros when the store is not shared). Any thread. */
void tf_store_farm_stats(tf_store_t *s, tf_store_farm_stats_t *out);

/* Calls fn(arg, topic, text) for each event other masters sent since the
 * last call (opts.farm_cb said TF_FARM_EVENT). Loop thread. */
void tf_store_farm_take(tf_store_t *s,
                        void (*fn)(void *arg, const char *topic,
                                   const char *text),
                        void *arg);

/* Runs now the callbacks of the groups the writer has committed (or
 * failed), which the loop otherwise runs when the writer's wakeup comes
 * round. For a caller in the middle of a long run of other events: libuv
 * hands over every socket that is ready before it looks at the wakeup,
 * and with thousands of slaves sending that is tens of milliseconds in
 * which a committed start batch would wait. Costs one atomic load when
 * nothing is done; does nothing once tf_store_close has been called.
 * Loop thread only, never from inside a done callback. */
void tf_store_deliver(tf_store_t *s);

/* A counter that moves whenever the stored state may have changed: when
 * a group holding more than progress (output chunks, the event chain,
 * "slave seen") is queued, and again when it has committed or failed.
 * An answer computed while the counter stayed the same is still right:
 * the API's cache (api/cache.c) keys its answers by it. Loop thread. */
uint64_t tf_store_generation(const tf_store_t *s);

/* Moves that counter without a write: the live state an answer overlays
 * on the stored rows changed (a shared master dropped its copies of
 * requests other masters ran: core/master.c). Loop thread. */
void tf_store_touch(tf_store_t *s);

/* How many times the writer's idle work removed logs (retention): an
 * answer that never changes otherwise (a finished build) is stale once
 * this moves. Any thread. */
uint64_t tf_store_removals(const tf_store_t *s);

/* Retention of step logs (docs/config.md, "retention"): the writer removes
 * logs in small batches while idle; build rows, steps, stats and test
 * results stay, and the build records when its logs went. 0: no limit. */
typedef struct tf_retention_rule {
    char builder[TF_NAME_MAX + 1]; /* "" in the default rule */
    int64_t log_days;   /* logs of builds finished longer ago go */
    int64_t log_builds; /* only the newest N finished builds keep logs */
    int64_t log_bytes;  /* the newest builds keep logs up to this many raw
                           bytes */
} tf_retention_rule_t;

typedef struct tf_retention {
    tf_retention_rule_t dflt;   /* for builders without a rule */
    tf_retention_rule_t *rules; /* per builder */
    size_t n;
} tf_retention_t;

/* Replaces the retention the writer applies (copied). Returns 0 or
 * TF_ENOMEM (the previous one stays). */
int tf_store_set_retention(tf_store_t *s, const tf_retention_t *r);

/* What tf_store_vacuum did. */
typedef struct tf_vacuum_stats {
    uint64_t units;        /* units of idle work: blocks sealed, batches of
                              logs removed */
    uint64_t removed;      /* of which removed logs */
    uint64_t bytes_before, bytes_after; /* the database and its WAL */
} tf_vacuum_stats_t;

/* `tf-master vacuum`: with the master stopped, opens the database at path
 * (migrating it), seals every log an older version left open, removes
 * every log ret no longer keeps, and rewrites the file compactly. Returns
 * 0, or a code with the cause logged. No loop, no writer thread. */
int tf_store_vacuum(const char *path, const tf_retention_t *ret,
                    tf_vacuum_stats_t *st);

/* The schema version the database is at after migrations. */
int tf_store_schema_version(tf_store_t *s);

/* Stops accepting writes, lets the writer drain and commit everything
 * queued, joins it, closes every connection, then calls cb on the loop
 * thread (the loop must keep running until then). s is freed before cb
 * runs. */
void tf_store_close(tf_store_t *s, void (*cb)(void *arg), void *arg);

/* Copies every row of the sqlite database at sqlite_path (at this
 * tf-master's schema version) into the PostgreSQL database at url, which
 * is migrated first and must hold no builds, requests, jobs, changes or
 * committers: one snapshot of the file, one transaction (all or
 * nothing). *rows gets the rows copied; msg says why when it fails.
 * Returns 0, TF_EVERSION, TF_EEXIST (not empty), TF_EINVAL (a build
 * without PostgreSQL) or TF_ESTORE. For `tf-master migrate --to`. */
int tf_store_copy_sqlite(const char *sqlite_path, const char *url,
                         uint64_t *rows, char *msg, size_t msglen);

/* ------------------------------------------------------------------ */
/* Write groups                                                        */
/* ------------------------------------------------------------------ */

/* A new empty group whose arena starts with room for about hint bytes of
 * strings and blobs (0 for a small default), or NULL when out of memory.
 * The caller owns it until tf_store_submit. */
tf_wgroup_t *tf_wgroup_new(size_t hint);

/* Frees a group the caller owns (NULL is fine). */
void tf_wgroup_free(tf_wgroup_t *g);

/* How many operations g holds. */
size_t tf_wgroup_count(const tf_wgroup_t *g);

/* Whether an operation could not be added to g (out of memory): such a
 * group is refused by tf_store_submit, so nothing of it is half stored. */
bool tf_wgroup_failed(const tf_wgroup_t *g);

/* Marks g failed: the caller could not build one of its operations, so
 * none of them may be stored. */
void tf_wgroup_fail(tf_wgroup_t *g);

/* Memory of n bytes that lives as long as g, for the caller's context of
 * the done callback (freed after the callback returns). NULL (and g
 * failed) when out of memory. */
void *tf_wgroup_alloc(tf_wgroup_t *g, size_t n);

/* Asks the store to leave g to the caller when it fails in the writer:
 * after a done callback with an error, g is the caller's again (to submit
 * once more, or to free). After a commit the store frees it as usual. For
 * groups that must be stored however long it takes. */
void tf_wgroup_keep(tf_wgroup_t *g);

/* Whether tf_wgroup_keep was called on g. */
bool tf_wgroup_kept(const tf_wgroup_t *g);

/* Marks g as waited for by something users see (a start batch: its
 * builds' build_start messages go out when it commits): the writer ends
 * the transaction that holds g with g, instead of gathering every group
 * queued behind it into the same one, so g's commit and its callback do
 * not wait for theirs. The groups queued before g still ride with it.
 * Costs one commit per such group; order and outcome are unchanged. */
void tf_wgroup_prompt(tf_wgroup_t *g);

/* Ends a unit of g: the operations added since the last unit ended (or
 * since g began) are one. A group of several units commits whole as any
 * other when it can; when it fails on its own (a constraint, a lost
 * claim, not the database), the writer applies each unit again alone,
 * each all or nothing, and the operations after the last unit as one
 * more, so one bad unit does not take its neighbours down with it (the
 * start batch: one build's rows per unit). The done callback still gets
 * g's first outcome; tf_wgroup_unit_rc tells each unit's. Returns 0,
 * TF_EINVAL (no operation since the last unit) or TF_ENOMEM (g is
 * failed). Not for kept groups (tf_wgroup_keep). */
int tf_wgroup_unit_end(tf_wgroup_t *g);

/* The outcome of unit i (from 0, in tf_wgroup_unit_end order) of g,
 * valid in g's done callback: 0 when it committed (with g, or alone after
 * g failed), else its error (TF_ESTORE, TF_ESTATE for a lost claim); g's
 * own outcome when g was not split (it committed, it held one unit, or it
 * never reached the writer). TF_EINVAL for no such unit. */
int tf_wgroup_unit_rc(const tf_wgroup_t *g, size_t i);
/* The outcomes of g's first n units into rcs[0..n) in one walk (a start
 * batch of 1,024 builds would walk the list a million times unit by
 * unit); what tf_wgroup_unit_rc gives each. */
void tf_wgroup_unit_rcs(const tf_wgroup_t *g, int *rcs, size_t n);

/* Queues g as one all-or-nothing unit; cb (may be NULL) runs on the loop
 * thread after it committed or failed. Returns 0 and takes g (the store
 * frees it after the callback, a kept group that failed excepted), or,
 * without queueing anything, without calling cb and leaving g to the
 * caller: TF_ENOMEM (g failed while built, or is NULL), TF_EFULL (the
 * queue is past its hard cap), TF_ESTATE (the store is closing),
 * TF_EINVAL. An empty group is queued like any other (its callback still
 * orders it after the groups before it). */
int tf_store_submit(tf_store_t *s, tf_wgroup_t *g, tf_store_done_cb cb,
                    void *arg);

/* ------------------------------------------------------------------ */
/* Write operations                                                    */
/* ------------------------------------------------------------------ */

/* Each constructor adds one operation to g, copying every string and
 * blob (strings may be NULL: "none"). They return 0, or TF_ENOMEM after
 * which g is failed. Times are milliseconds since the epoch. */

/* Slaves: a connection event ("connected", "lost", ...) for the slave's
 * page; the slave authenticated (tags_json: a JSON array); it went away;
 * it was heard from; every slave is disconnected (startup); the slave is
 * configured (its row exists). */
int tf_op_slave_event(tf_wgroup_t *g, const char *slave, int64_t time_ms,
                      const char *event, const char *detail);
int tf_op_slave_connected(tf_wgroup_t *g, const char *name,
                          const char *platform, const char *version,
                          const char *tags_json, int64_t time_ms);
int tf_op_slave_disconnected(tf_wgroup_t *g, const char *name,
                             int64_t time_ms);
int tf_op_slave_seen(tf_wgroup_t *g, const char *name, int64_t time_ms);
int tf_op_slaves_reset(tf_wgroup_t *g);
int tf_op_slave_known(tf_wgroup_t *g, const char *name);
/* The connected slave drains (cleared when it connects again or goes):
 * read by shared masters' farm-wide counts (tf_q_farm_slaves). */
int tf_op_slave_draining(tf_wgroup_t *g, const char *name);

/* Builders: every builder is inactive (before the config's are activated
 * again); builder name is configured; its summary counts of pending and
 * running requests (the one place they are written). */
int tf_op_builders_deactivate(tf_wgroup_t *g);
int tf_op_builder_activate(tf_wgroup_t *g, const char *name);
int tf_op_builder_counts(tf_wgroup_t *g, const char *name, unsigned pending,
                         unsigned running);

/* A new build request (state pending), with its blamelist. */
typedef struct tf_request_rec {
    uint64_t id;
    const char *builder, *reason, *owner;
    const char *properties; /* JSON object text */
    const char *tests;      /* JSON array text */
    const char *revision;   /* NULL: the branch head */
    const char *patch_sha256; /* NULL: no patch */
    uint64_t patch_size;
    int priority;
    int64_t submitted_ms;
    uint64_t job_id;        /* 0: not a try job's */
    uint64_t without_patch_of; /* 0; or the try build this reruns without
                                  its patch (retry_without_patch) */
    const char *scheduler;  /* NULL: not a scheduler's */
    const uint64_t *changes;
    size_t nchanges;
} tf_request_rec_t;
int tf_op_request_create(tf_wgroup_t *g, const tf_request_rec_t *r);

/* A request goes back to pending (a retry, or its build did not survive a
 * restart) with retries as its retry count; it was collapsed into request
 * into (its changes join into's blamelist); cancelled before it ran;
 * done with result. */
int tf_op_request_requeue(tf_wgroup_t *g, uint64_t id, unsigned retries);
int tf_op_request_collapse(tf_wgroup_t *g, uint64_t id, uint64_t into,
                           int64_t time_ms);
int tf_op_request_cancel(tf_wgroup_t *g, uint64_t id, int result,
                         int64_t time_ms);
int tf_op_request_done(tf_wgroup_t *g, uint64_t id, int result,
                       int64_t time_ms);
/* A try request answered from an earlier build (result reuse): done at
 * once, SUCCESS, its build that build, marked reused. */
int tf_op_request_reused(tf_wgroup_t *g, uint64_t id, uint64_t build_id,
                         int64_t time_ms);

/* A build starts: its row and its steps' rows (pending), its blamelist
 * (the request's changes), its request running, the builder's last build
 * and build count. */
typedef struct tf_build_step_rec {
    const char *name;
    const char *command_json; /* JSON array of the argv */
    int flags;                /* tf_flags_bits */
} tf_build_step_rec_t;
typedef struct tf_build_rec {
    uint64_t id, number, request_id;
    const char *builder, *slave;
    const char *properties; /* JSON object text */
    const char *reason, *repository, *branch, *revision;
    const char *recipe; /* the builder's recipe (hex SHA-256) or NULL */
    int64_t created_ms;
    const tf_build_step_rec_t *steps;
    size_t nsteps;
    bool no_changes; /* the caller knows the request has no changes (its
                      * own or those of requests collapsed into it): the
                      * one master of an sqlite database then skips
                      * reading them for the blamelist; false is always
                      * right */
    const char *kind; /* "try" or "ci" when the caller knows it (the
                       * request has a job or a patch: try); NULL: read
                       * from the request's row */
} tf_build_rec_t;
int tf_op_build_create(tf_wgroup_t *g, const tf_build_rec_t *b);

/* The build's event seq arrived: its stored last event moves from seq - 1
 * to seq, and the whole group fails if the build is not at seq - 1 (an
 * event before it was not stored: nothing after a hole commits). Every
 * group of a slave event holds one. */
int tf_op_build_seq(tf_wgroup_t *g, uint64_t build_id, uint64_t seq);

/* A step started (first: the build's first, the build runs from now). */
int tf_op_step_start(tf_wgroup_t *g, uint64_t build_id, unsigned step,
                     int64_t time_ms, bool first);

/* A chunk of a step's output: len bytes at byte offset and line number
 * line of the log, after which the log holds log_bytes bytes and
 * log_lines lines. data is copied once, into the group. */
typedef struct tf_output_rec {
    uint64_t build_id, seq;
    unsigned step;
    int stream;
    uint64_t offset, line, log_bytes, log_lines;
} tf_output_rec_t;
int tf_op_output(tf_wgroup_t *g, const tf_output_rec_t *o, const void *data,
                 size_t len);

/* A step finished (what the slave reported). */
typedef struct tf_step_finish_rec {
    uint64_t build_id;
    unsigned step;
    int result;
    int64_t time_ms, duration_ms;
    bool has_exit_code, has_signal, has_warnings, timed_out;
    int64_t exit_code, signal, warnings;
    const char *text, *info;
} tf_step_finish_rec_t;
int tf_op_step_finish(tf_wgroup_t *g, const tf_step_finish_rec_t *f);

/* A property the build set (got_revision also fills its column); a stat
 * a step's modifiers extracted (kept exactly as a double). */
int tf_op_build_prop(tf_wgroup_t *g, uint64_t build_id, const char *key,
                     const char *value);
int tf_op_stat(tf_wgroup_t *g, const char *builder, uint64_t build_id,
               unsigned step, const char *name, double value);

/* One test's result in a step (a test_results event carries them): the
 * strings are copied into the group. status is "pass", "fail", "skip" or
 * "flaky"; duration_ms < 0 is unknown; the log position is the test's
 * first line in the step's log (byte offset, 1-based line) and its number
 * of lines. A "pass" after a "fail" of the same (suite, name) in the same
 * build makes both "flaky" (ops.h). */
typedef struct tf_test_result_rec {
    uint64_t build_id;
    unsigned step;
    const char *builder, *suite, *name, *status, *outcome, *message;
    uint32_t attempts;
    int64_t duration_ms;
    bool has_log;
    uint64_t log_offset, log_line, log_lines;
} tf_test_result_rec_t;
int tf_op_test_result(tf_wgroup_t *g, const tf_test_result_rec_t *r);

/* A step that will get no end from the slave is closed with result. */
int tf_op_step_force_end(tf_wgroup_t *g, uint64_t build_id, unsigned step,
                         int result, int64_t time_ms, const char *text);

/* A build ended: its row; the builder's last complete build when
 * complete (not a RETRY); the slave's count of builds done. */
int tf_op_build_finish(tf_wgroup_t *g, uint64_t build_id,
                       const char *builder, const char *slave, int result,
                       int64_t time_ms, const char *text, bool complete);

/* Several masters: takes build_id over from the owner `from` read with it
 * (tf_ld_build_t.owner); the group fails with TF_ESTATE when another
 * master owns it by now or it has finished (ops.h, tf_op_build_adopt_t).
 * A shared master's build end also fails with TF_ESTATE once another
 * master owns the build: it must then drop its copy. from is copied. */
int tf_op_build_adopt(tf_wgroup_t *g, uint64_t build_id, const char *from);
/* (from NULL: fails with TF_ESTATE unless this master still owns the
 * running build: the check before ending a build whose slave is lost.) */

/* Several masters: a cancel stored, so that no event has to carry it:
 * why on build build_id while it is open, or (build_id 0) on try job
 * job_id while it is open and on each of its open builds. The group
 * fails with TF_ESTATE when the build has finished or the job ended (on
 * shared PostgreSQL; sqlite's one master cancels in memory: the op is
 * accepted and stores nothing, as tf_op_build_adopt). The master
 * running the build finds it (TF_Q_CANCELS). why is copied. */
int tf_op_cancel_mark(tf_wgroup_t *g, uint64_t build_id, uint64_t job_id,
                      const char *why);

/* A patch, stored once per SHA-256 (a second put of the same one is a
 * no-op). The _take variant takes ownership of data (malloc'd), even when
 * it fails, instead of copying it. */
int tf_op_patch_put(tf_wgroup_t *g, const char *sha256, const void *data,
                    size_t len, int64_t created_ms);
int tf_op_patch_put_take(tf_wgroup_t *g, const char *sha256, void *data,
                         size_t len, int64_t created_ms);

/* A try job (state pending). */
typedef struct tf_job_rec {
    uint64_t id;
    int64_t user_id;
    const char *author, *email, *notify_email;
    bool notify;
    bool new_failures_only; /* its mail's verdict counts new failures */
    const char *description, *review_url, *patchset, *base_revision;
    const char *patch_sha256; /* NULL: no patch */
    uint64_t patch_size;
    int64_t submitted_ms;
} tf_job_rec_t;
int tf_op_job_create(tf_wgroup_t *g, const tf_job_rec_t *j);

/* A job's first build started (pending -> running, once); the job ended
 * (state "finished" or "cancelled") with result. */
int tf_op_job_running(tf_wgroup_t *g, uint64_t id);
int tf_op_job_finish(tf_wgroup_t *g, uint64_t id, const char *state,
                     int result, int64_t time_ms);

/* Several masters (store.shared, PostgreSQL only): one of the job's
 * requests ended, on whichever master. Inside the transaction, with the
 * job's row locked, the job ends when none of its requests is pending or
 * running any more: result the worst of theirs, state "cancelled" when
 * one was cancelled, and with mail its report queued (once: the outbox
 * keeps one row per job). Masters ending a job's last two requests at
 * once serialize on that row, so exactly one of them ends it. */
int tf_op_job_settle(tf_wgroup_t *g, uint64_t id, bool mail,
                     int64_t time_ms);

/* Mail outbox rows, committed with the event that causes them (the mail
 * sender picks them up): a try job's report, unless the job asked for no
 * mail (decided from the job's row); a continuous build's notice when the
 * builder's mode (1 failing, 2 problem, 3 change, 4 all) asks for one
 * given result and the builder's previous build (decided inside the
 * transaction). recipients_json: a JSON array of extra addresses. */
int tf_op_mail_job(tf_wgroup_t *g, uint64_t job_id, int64_t time_ms);
int tf_op_mail_build(tf_wgroup_t *g, uint64_t build_id, const char *builder,
                     int result, int mode, const char *recipients_json,
                     int64_t time_ms);

/* Committers: add one (unless the email exists) and remove one. *changed
 * (caller's memory, read in the done callback) is set to 1 when a row was
 * added or removed, 0 otherwise. */
int tf_op_user_add(tf_wgroup_t *g, const char *email, const char *name,
                   const char *token_sha256, int64_t time_ms, int *changed);
int tf_op_user_remove(tf_wgroup_t *g, const char *email, int *changed);

/* The commits a poll found on a branch, oldest first, and the branch's
 * new head. A known revision keeps its change id. ids_out[i] and
 * fresh_out[i] (caller's memory, n each, read in the done callback) get
 * each change's id and whether it is new. */
typedef struct tf_change_rec {
    const char *revision, *author, *email, *message;
    const char *files_json; /* JSON array of paths */
    int64_t committer_ms;
} tf_change_rec_t;
int tf_op_changes_record(tf_wgroup_t *g, const char *repository,
                         const char *branch, const char *head,
                         const tf_change_rec_t *changes, size_t n,
                         int64_t time_ms, uint64_t *ids_out,
                         bool *fresh_out);

/* A poller's health after a poll (times 0: none; last_error NULL when
 * healthy). */
int tf_op_poller_health(tf_wgroup_t *g, const char *repository,
                        const char *branch, int64_t last_poll_ms,
                        int64_t last_ok_ms, const char *last_error,
                        int64_t failing_since_ms);

/* A scheduler's state (times <= 0: none). */
int tf_op_scheduler_state(tf_wgroup_t *g, const char *name,
                          int64_t last_fired_ms, const char *last_revision,
                          int64_t next_fire_ms);

/* ------------------------------------------------------------------ */
/* Reads                                                               */
/* ------------------------------------------------------------------ */

typedef enum tf_query_kind {
    TF_Q_LOAD_STATE = 1, /* tf_q_state_t */
    TF_Q_USER_BY_TOKEN,  /* tf_q_user_t */
    TF_Q_USERS,          /* tf_q_users_t */
    TF_Q_POLLERS,        /* tf_q_pollers_t */
    TF_Q_SCHEDULER,      /* tf_q_scheduler_t */
    TF_Q_CANCELS,        /* tf_q_cancels_t */
    TF_Q_REQUEST_STATES, /* tf_q_request_states_t */
    TF_Q_SQLITE_FN,      /* store_sqlite.h: the raw escape hatch */
} tf_query_kind_t;

/* The head of every query record. */
typedef struct tf_query {
    tf_query_kind_t kind;
} tf_query_t;

/* Runs q on a reader thread, then done(arg, rc) on the loop thread with
 * the query's result (0 or a negative code: TF_ENOENT for "no such
 * row"). q must live until then. Returns 0, or a negative code without
 * calling done. */
int tf_store_query(tf_store_t *s, tf_query_t *q, tf_store_done_cb done,
                   void *arg);

/* Runs q now on the calling thread and returns its result. For startup,
 * offline commands and threads of their own (the mail sender); asserts
 * when called on the loop thread once the master serves. */
int tf_store_query_sync(tf_store_t *s, tf_query_t *q);

/* --- TF_Q_LOAD_STATE: what the loop needs to restore at startup --- */

typedef struct tf_ld_builder {
    char *name;
    uint64_t max_number;
    char *warm_slave; /* the slave of its newest build; NULL: none */
} tf_ld_builder_t;

typedef struct tf_ld_request {
    uint64_t id;
    char *builder, *reason, *owner, *properties, *tests, *revision;
    char *patch_sha256, *scheduler; /* NULL: none */
    uint64_t patch_size, job_id;
    int priority;
    int64_t submitted_ms;
    unsigned retries;
    bool running;
    uint64_t *changes;
    size_t nchanges;
} tf_ld_request_t;

typedef struct tf_ld_step {
    char *name;
    bool started, finished;
    int result, flags;
    uint64_t log_bytes, log_lines;
    int64_t started_ms, finished_ms;
} tf_ld_step_t;

typedef struct tf_ld_build {
    uint64_t id, number, request_id, last_seq;
    char *builder, *slave;
    char *owner; /* the master running it (store.shared); "" for none */
    int64_t created_ms, started_ms;
    bool is_try;         /* kind "try": its request had a patch or a job */
    tf_ld_step_t *steps; /* nsteps of them, by index */
    size_t nsteps;
} tf_ld_build_t;

typedef struct tf_ld_job {
    uint64_t id;
    char *email;
    bool started;
    unsigned nopen;     /* requests pending or running */
    bool has_result;
    int result;         /* the worst result of its requests done so far */
} tf_ld_job_t;

typedef struct tf_q_state {
    tf_query_t q;
    uint64_t max_build_id, max_request_id, max_job_id;
    char farm[65];             /* the farm's id (migration 9) */
    tf_ld_builder_t *builders;
    size_t nbuilders;
    tf_ld_request_t *requests; /* pending and running, by id */
    size_t nrequests;
    tf_ld_build_t *builds;     /* not finished, by id */
    size_t nbuilds;
    tf_ld_job_t *jobs;         /* pending and running */
    size_t njobs;
} tf_q_state_t;

/* Frees what a TF_Q_LOAD_STATE query filled in (not q itself). */
void tf_q_state_clear(tf_q_state_t *q);

/* --- committers --- */

#define TF_USERNAME_MAX 128

typedef struct tf_user {
    int64_t id;
    char email[TF_EMAIL_MAX + 1];
    char name[TF_USERNAME_MAX + 1];
} tf_user_t;

/* TF_Q_USER_BY_TOKEN: the user whose token hashes to token_sha256 (64
 * hex), or TF_ENOENT. */
typedef struct tf_q_user {
    tf_query_t q;
    char token_sha256[65];
    tf_user_t user;
} tf_q_user_t;

/* TF_Q_USERS: every committer, by email. */
typedef struct tf_user_row {
    char email[TF_EMAIL_MAX + 1];
    char name[TF_USERNAME_MAX + 1];
    int64_t created_ms;
    int64_t last_used_ms; /* 0: never */
} tf_user_row_t;
typedef struct tf_q_users {
    tf_query_t q;
    tf_user_row_t *rows; /* malloc'd; the caller frees */
    size_t n;
} tf_q_users_t;

/* --- changes --- */

/* TF_Q_POLLERS: every poller's stored state. */
typedef struct tf_poller_row {
    char *repository, *branch, *last_revision, *last_error;
    int64_t last_poll_ms, last_ok_ms;
    bool failing;
    int64_t failing_since_ms;
} tf_poller_row_t;
typedef struct tf_q_pollers {
    tf_query_t q;
    tf_poller_row_t *rows;
    size_t n;
} tf_q_pollers_t;
void tf_q_pollers_clear(tf_q_pollers_t *q);

/* --- several masters --- */

/* TF_Q_CANCELS: the open builds that carry a stored cancel
 * (tf_op_cancel_mark), their own or their try job's, at most max of
 * them, with the reason. Cheap: an index holds only the open marked
 * builds, and open jobs are few. */
typedef struct tf_cancel_row {
    uint64_t build_id;
    char *why;
} tf_cancel_row_t;
typedef struct tf_q_cancels {
    tf_query_t q;
    size_t max;
    tf_cancel_row_t *rows; /* malloc'd; tf_q_cancels_clear frees */
    size_t n;
} tf_q_cancels_t;
void tf_q_cancels_clear(tf_q_cancels_t *q);

/* TF_Q_REQUEST_STATES: where the requests ids[0..n) stand, for a shared
 * master weeding out its copies of requests other masters claimed or
 * ended (core/master.c). Read in one snapshot by primary key (at most
 * TF_REQUEST_STATES_MAX ids, a few statements). A request running with
 * an open build whose owner is not self is ELSEWHERE; running with none
 * open, or one self owns, is RUNNING. No row (a request whose creation
 * has not committed yet) is ABSENT: never taken for ended. */
#define TF_REQUEST_STATES_MAX 256
typedef enum tf_rq_state {
    TF_RQ_ABSENT = 0,
    TF_RQ_PENDING,
    TF_RQ_RUNNING,
    TF_RQ_ELSEWHERE,
    TF_RQ_ENDED, /* done, cancelled or collapsed: for good */
} tf_rq_state_t;
typedef struct tf_q_request_states {
    tf_query_t q;
    const char *self; /* this master's owner name (tf_store_owner);
                       * borrowed, must live until the query's end */
    uint64_t ids[TF_REQUEST_STATES_MAX];
    size_t n;
    uint8_t state[TF_REQUEST_STATES_MAX]; /* tf_rq_state_t per ids[i] */
} tf_q_request_states_t;

/* TF_Q_SCHEDULER: a scheduler's stored state and, when it has a consumed
 * revision and a branch (repository non-NULL), the newest `limit`
 * changes of the branch after that revision, oldest first. */
typedef struct tf_sched_change_row {
    uint64_t id;
    char *revision;
    char *files_json;
    int64_t created_ms;
} tf_sched_change_row_t;
typedef struct tf_q_scheduler {
    tf_query_t q;
    const char *name, *repository, *branch; /* inputs, caller's */
    unsigned limit;
    bool have_row;
    int64_t last_fired_ms;
    int64_t next_fire_ms; /* as stored; 0: none stored */
    char *last_revision;
    tf_sched_change_row_t *changes;
    size_t nchanges;
} tf_q_scheduler_t;
void tf_q_scheduler_clear(tf_q_scheduler_t *q);

#endif
