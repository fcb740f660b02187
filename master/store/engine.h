/*
 * engine.h - what a storage engine provides to the generic store.
 *
 * store.c does what every engine needs the same way: the bounded queue of
 * groups, the writer thread, retrying a batch with backoff while the
 * database fails as a whole, the congestion callback, running done
 * callbacks on the loop thread in order, draining at close, and the
 * reader jobs on libuv's thread pool. The engine does what depends on the
 * database: opening and migrating it, applying a batch of groups in one
 * transaction (each group under a savepoint) and running queries on its
 * reader connections.
 *
 * Logs: an engine stores a step's output as its open tail of chunks
 * (output) and seals the tail into blocks packed by store/logblock.h:
 * one block of at least TF_LOGBLOCK_TARGET bytes once the tail holds
 * that many (in the output's group), the rest when the step ends
 * (step_finish, step_force_end), and blocks an older version left open
 * from maintain. Compression and the block format are logblock.c's; the
 * engine stores (offset, line, raw length, codec, blob) and reads blocks
 * back through tf_logblock_unpack.
 *
 * Threads: open and destroy run on the loop thread; apply_batch,
 * set_max_pages, maintain and close_writer on the writer thread only
 * (the engine's write connection belongs to it); query on any thread,
 * concurrently (the engine pools its reader connections).
 */
#ifndef TF_STORE_ENGINE_H
#define TF_STORE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/ops.h"

typedef struct tf_engine tf_engine_t;

/* How long the writer waits before asking maintain again once it had
 * nothing to do (or failed). */
#define TF_STORE_MAINT_IDLE_MS 10000u

/* apply_batch's answers. */
enum {
    TF_ENG_OK = 0,          /* committed; each group's rc says how it went */
    TF_ENG_RETRY_NOW = 1,   /* a group was poisoned (it ended the
                             * transaction by itself), or the batch lost a
                             * deadlock to another master's transaction:
                             * run the batch again right away (without the
                             * poisoned group) */
    TF_ENG_DB_FAILED = 2,   /* the database failed as a whole: rolled back,
                             * retry later; err says why */
};

/* Settings of engines over a network (tf_store_opts_t's keepalives and
 * lease timeout; 0: the engine's default). tf_store_open sets them for
 * the process before the engine opens (one farm per process); offline
 * commands keep the defaults. */
typedef struct tf_engine_net {
    unsigned keepalive_idle_s, keepalive_interval_s, keepalive_count;
    unsigned lease_timeout_s;
} tf_engine_net_t;
extern tf_engine_net_t tf__engine_net;

typedef struct tf_engine_vt {
    const char *name;

    /* Opens the database at path with nreaders reader connections,
     * refuses a newer schema (TF_EVERSION), applies migrations. Returns 0
     * with *out and *schema_version, or a code with the cause logged. */
    int (*open)(const char *path, unsigned nreaders, tf_engine_t **out,
                int *schema_version);

    /* Applies the n groups from first (linked by next) in one
     * transaction. Poisoned groups get rc TF_ESTORE without running; a
     * group failing on its own is rolled back to its savepoint and gets rc
     * TF_ESTORE (the engine logs why); the others get rc 0 once the
     * transaction commits. */
    int (*apply_batch)(tf_engine_t *e, tf_wgroup_t *first, size_t n,
                       char *err, size_t errlen);

    /* Runs q on a reader connection inside one read transaction (one
     * snapshot). Returns the query's result. */
    int (*query)(tf_engine_t *e, tf_query_t *q);

    /* Optional (NULL: nothing to do): this process is the database's one
     * master (tf_store_opts_t.exclusive). Called after open, before the
     * writer thread starts. Returns 0, or TF_EEXIST with the cause logged
     * when another master holds the database; with wait, blocks until
     * that master goes instead (a standby master). */
    int (*claim)(tf_engine_t *e, bool wait, bool shared);

    /* Optional, shared masters (store.shared): the first of
     * TF_STORE_ID_BLOCK fresh ids no other master gets, from a block
     * reserved ahead (never waiting for the database while watch's
     * listener runs; the callback of watch gets TF_FARM_IDS when a block
     * comes after a TF_EFULL). Returns 0, TF_EFULL or TF_ESTORE. */
    int (*reserve_ids)(tf_engine_t *e, uint64_t *first);

    /* Optional: after the writer started, starts watching for other
     * masters' changes; cb(arg, what) runs on a thread of the engine
     * each time, what holding TF_FARM_* (store.h) of what changed besides
     * anything (0), both when this master gains the duty lease. */
    int (*watch)(tf_engine_t *e, void (*cb)(void *arg, unsigned what),
                 void *arg);

    /* Optional, with watch: queue an event for the other masters, and
     * take those they sent ("TOPIC\nTEXT" strings, the callee frees). */
    int (*farm_send)(tf_engine_t *e, const char *topic, const char *text);
    char *(*farm_take)(tf_engine_t *e);
    /* Optional: the relay's counters (any thread). */
    void (*farm_stats)(tf_engine_t *e, tf_store_farm_stats_t *out);

    /* Optional (NULL: always true): this master holds the duty lease
     * (mail, pollers, periodic schedulers). Any thread. */
    bool (*has_duty)(tf_engine_t *e);

    /* Optional (NULL: ""): this master's name in builds.owner, fixed
     * once open (and claim) returned. Any thread. */
    const char *(*owner)(tf_engine_t *e);

    /* Test hook (store_internal.h): cap the database at pages pages before
     * the next batch. Engines without such a notion ignore it. */
    void (*set_max_pages)(tf_engine_t *e, long pages);

    /* Idle work on the writer thread, called while no group waits (and
     * never inside a batch): one small unit in a transaction of its own:
     * sealing one block of a log an older version left open
     * (store/logblock.h), or removing a batch of the logs the retention
     * ret (store.h) no longer keeps at now_ms, in which case *removed is
     * set (cached answers of finished builds change). Returns 1 when it
     * did some (the writer calls again while idle), 0 when none is left
     * (the writer asks again after TF_STORE_MAINT_IDLE_MS), or a
     * negative code with err set. May be NULL. */
    int (*maintain)(tf_engine_t *e, const tf_retention_t *ret,
                    int64_t now_ms, bool *removed, char *err, size_t errlen);

    /* Writer thread, before each batch and when it goes idle (then
     * false): hold says whether commits that are awaited
     * (tf_wgroup_prompt: a burst's start batches) are in the batch or
     * queued behind it. An engine that checkpoints on its own puts that
     * off while held (bounded), so it does not take a core from them.
     * May be NULL. */
    void (*ckpt_hold)(tf_engine_t *e, bool hold);

    /* Offline (tf_store_vacuum, no writer thread): rewrites the database
     * compactly, giving its free pages back to the file system. May be
     * NULL. */
    int (*vacuum)(tf_engine_t *e, char *err, size_t errlen);

    /* The writer thread is exiting: close the write connection. */
    void (*close_writer)(tf_engine_t *e);

    /* Closes the reader connections and frees e (after close_writer, or
     * when the writer never started). */
    void (*destroy)(tf_engine_t *e);

    /* Checks the database at path without changing it (full: every page
     * and index; else the quick structural check open also runs). Each
     * problem found goes to line(arg, text). Returns 0 when sound,
     * TF_ECORRUPT when damaged, another code when it cannot check. NULL
     * when the engine has no such check. */
    int (*check)(const char *path, bool full,
                 void (*line)(void *arg, const char *text), void *arg);
} tf_engine_vt_t;

/* The embedded engine (store/sqlite.c). */
extern const tf_engine_vt_t tf_engine_sqlite;

#ifdef TF_HAVE_POSTGRESQL
/* The engine for several masters on one database (store/pg.c). */
extern const tf_engine_vt_t tf_engine_pg;
#endif

/* The steps the idle sealing walk (maintain) could not seal, a hole in
 * their chunks: counted, and said once at the walk's end with the first
 * of them (tf__engine_holes_report), rather than one warning per step: a
 * store of a million such steps would otherwise write a million lines. A
 * walk that finds the same count as the last one said (the walk is
 * repeated every TF_STORE_MAINT_IDLE_MS) says nothing. Each engine keeps
 * one, used on its writer thread only. */
typedef struct tf_engine_holes {
    uint64_t n;     /* steps this walk left unsealed */
    uint64_t build; /* the first of them, for the walk's one warning */
    unsigned step;
    uint64_t at;
    uint64_t said; /* the count the last warning gave */
} tf_engine_holes_t;

/* Counts the hole at byte at of (build_id, step)'s log (logged at debug
 * level). */
void tf__engine_hole(tf_engine_holes_t *h, uint64_t build_id, unsigned step,
                     uint64_t at);

/* The walk's end: one warning with the count and the first hole, unless
 * the last walk said the same; then counts from 0 again. */
void tf__engine_holes_report(tf_engine_holes_t *h);

/* Retention (maintain): the rule of builder in ret (its own, else the
 * default; borrowed from ret), and whether a rule limits anything. */
const tf_retention_rule_t *tf__retention_rule_for(const tf_retention_t *ret,
                                                  const char *builder);
bool tf__retention_limits(const tf_retention_rule_t *r);

#endif
