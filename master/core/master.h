/*
 * master.h - tf-master's live state and the functions its modules share.
 *
 * The loop thread owns everything declared here. The in-memory objects are
 * a cache of what sqlite holds (ARCHITECTURE.md: "all the state is on the
 * log files"): every change is queued to the store writer in the same turn
 * it is made in memory, and a restart rebuilds these objects from the
 * database (master.c: tf_master_load).
 *
 * Objects and who owns them:
 *   tf_master_t   one per process.
 *   tf_mslave_t   one per slave name ever configured or seen; kept when the
 *                 config drops it (cfg == NULL) while builds still refer to
 *                 it. Owned by m->slaves.
 *   tf_mbuilder_t one per builder name; cfg == NULL once removed from the
 *                 config (pending requests then wait). Owned by m->builders.
 *   tf_request_t  a build request that is pending or running. Owned by
 *                 m->requests; freed when it is done.
 *   tf_build_t    a build not yet finished. Owned by m->builds; freed when
 *                 its end is committed and acknowledged.
 *   tf_link_t     one websocket connection from a slave (link.c).
 */
#ifndef TF_MASTER_H
#define TF_MASTER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "config/config.h"
#include "list.h"
#include "map.h"
#include "names.h"
#include "ostree.h"
#include "proto.h"
#include "result.h"
#include "store/store.h"

/* Requests a shared master keeps backing off from (tf_master_claim_lost):
 * beyond that many at once, a lost claim reads the queue again at once. */
#define TF_LOST_CLAIMS_MAX 64
/* Stored cancels read at one tick (tf_master_cancels_check); more wait
 * for the next. */
#define TF_CANCELS_READ_MAX 256

typedef struct tf_master tf_master_t;
typedef struct tf_link tf_link_t;
typedef struct tf_build tf_build_t;
typedef struct tf_request tf_request_t;

typedef struct tf_mslave {
    char name[TF_NAME_MAX + 1];
    const tf_cfg_slave_t *cfg; /* NULL when no longer configured */
    tf_link_t *link;           /* the READY link, or NULL */
    tf_list_t builds;          /* tf_build_t.slave_node */
    unsigned nbuilds;          /* builds on the list */
    uint32_t hello_max_builds; /* what the slave offered */
    bool draining;             /* sent drain on this link */
    bool row_written;          /* its slaves row is in a write group that
                                  sync_config queued (see slave_rows_lost) */
    char platform[TF_PROTO_MAX_INFO + 1];
    char version[TF_PROTO_MAX_INFO + 1];
    int64_t connected_ms;
    int64_t last_seen_ms;
    /* The scheduler's (sched.c): on m->idle while it can take a build;
     * the set of builders it may run, one bit per builder slot. */
    bool idle;
    tf_list_t idle_node;
    uint64_t *can;
    size_t ncan;               /* 64-bit words in can */
} tf_mslave_t;

typedef struct tf_mbuilder {
    char name[TF_NAME_MAX + 1];
    const tf_cfg_builder_t *cfg; /* NULL when no longer configured */
    uint64_t next_number;
    tf_list_t pending;           /* tf_request_t.node, in scheduling order */
    tf_ostree_t queue;           /* the same requests (.qnode): positions */
    unsigned npending;
    unsigned nrunning;
    /* The slave that started its last build: its checkout of this builder
     * is the warmest (slaves keep one per builder, whatever they built
     * since), so the scheduler prefers it. */
    char last_slave[TF_NAME_MAX + 1];
    /* The scheduler's (sched.c): its place in m->heads (-1: not there),
     * its slot in the slaves' sets (-1: not configured), and the slaves
     * that may run it (unless any may). */
    int heap_pos;
    int slot;
    bool allow_all;
    tf_mslave_t **allowed;
    size_t nallowed;
    /* build.c: a build of it started in the open start batch, whose
     * group has not written its counts yet. */
    bool counts_dirty;
    /* build.c: its build_start templates and its builds' rows
     * templates, one of each per request shape (made on the first start
     * of that shape; tf_build_templates_free). */
    struct tf_start_tpl *start_tpl;
} tf_mbuilder_t;

/* A request's life (sched.c draws it; tf_request_set_state changes it). */
typedef enum {
    TF_REQ_NEW = 0, /* made, not yet queued */
    TF_REQ_PENDING, /* in its builder's queue */
    TF_REQ_RUNNING, /* its build runs */
    TF_REQ_DONE,    /* ended, cancelled or collapsed: freed right after */
} tf_req_state_t;

/* What a new build request asks for (tf_sched_request). Strings are
 * borrowed; NULL means "none". */
typedef struct tf_reqspec {
    const char *builder;
    const char *reason;
    const char *owner;        /* fair share is per owner; NULL = "" */
    const char *properties;   /* JSON object text; NULL = "{}" */
    int priority;
    uint64_t job_id;          /* 0 = not part of a try job */
    const char *tests;        /* JSON array text; NULL = "[]" */
    const char *revision;     /* NULL = the branch head at build time */
    const char *patch_sha256; /* NULL = no patch */
    uint64_t patch_size;
    uint64_t without_patch_of; /* 0; or the try build this reruns without
                                  its patch (retry_without_patch) */
    const char *scheduler;    /* the scheduler that made it; NULL = none.
                                 Such requests are continuous: they collapse
                                 (builder's collapse_requests) */
    const uint64_t *changes;  /* change ids: its blamelist */
    size_t nchanges;
} tf_reqspec_t;

struct tf_request {
    uint64_t id;
    char builder[TF_NAME_MAX + 1];
    char *reason;       /* owned; may be NULL */
    char *owner;        /* owned; "" for none: fair share is per owner */
    char *properties;   /* owned JSON object text */
    uint64_t job_id;    /* 0 when not part of a try job */
    char *tests;        /* owned JSON array text */
    char *revision;     /* owned; NULL = branch head */
    char patch_sha256[TF_PROTO_NONCE_HEX + 1]; /* "" = no patch */
    uint64_t patch_size;
    uint64_t without_patch_of; /* 0; or the try build this reruns */
    int priority;
    int64_t submitted_ms;
    uint64_t fair_tag;  /* start-time fair queueing tag (sched.c) */
    unsigned retries;
    tf_req_state_t state;
    tf_list_t node;     /* builder's pending list while pending */
    tf_osnode_t qnode;  /* builder's queue tree while pending */
    tf_build_t *build;  /* while running */
    char *scheduler;    /* owned; NULL when not made by a scheduler */
    uint64_t *changes;  /* owned change ids (request_changes) */
    size_t nchanges;
};

/* A build's life (build.c draws it; only build_set_state changes it). */
typedef enum {
    TF_BUILD_NEW = 0,  /* allocated, not yet started or restored */
    TF_BUILD_STARTING, /* rows queued, build_start not yet sent */
    TF_BUILD_RUNNING,  /* build_start sent (or restored after restart) */
    TF_BUILD_ENDING,   /* end queued to the store, awaiting commit */
    TF_BUILD_DROPPED,  /* its rows could not be stored: freed right after */
} tf_build_state_t;

typedef struct tf_bstep {
    char name[TF_NAME_MAX + 1];
    tf_step_flags_t flags;
    bool started;
    bool finished;
    tf_result_t result;
    uint64_t log_bytes;
    uint64_t log_lines;
    int64_t started_ms;
    int64_t finished_ms;
    int64_t duration_ms;       /* the slave's measure, once finished */
} tf_bstep_t;

struct tf_build {
    uint64_t id;
    uint64_t number;
    char builder[TF_NAME_MAX + 1];
    char slave[TF_NAME_MAX + 1];
    tf_request_t *request;     /* the request it runs */
    bool is_try;               /* a try build (its request has a patch or
                                * a job): never the tree's state */
    tf_build_state_t state;
    tf_bstep_t *steps;
    tf_bstep_t *csteps;        /* the steps as the last committed event
                                * left them: a resync goes back to these */
    size_t nsteps;
    tf_result_t result;        /* folded so far */
    bool terminated;           /* a step asked to halt */
    bool finish_seen;          /* build_finished accepted */
    bool cursor_ok;            /* run_step and next_step are computed */
    int32_t run_step;          /* the step between its step_started and
                                * step_finished, or -1 */
    uint32_t next_step;        /* the first step not finished */
    bool cancel_requested;
    uint64_t rerun_id;         /* shared ids: the request id kept at the
                                * start for a rerun without the patch
                                * (0: none kept) */
    bool finish_pending;       /* build_finished waits for earlier commits */
    uint64_t finish_seq;
    tf_result_t finish_result; /* what the slave said */
    uint64_t accepted_seq;     /* last event applied in memory */
    uint64_t committed_seq;    /* last event committed */
    uint64_t acked_seq;        /* last ack queued to the slave */
    unsigned epoch;            /* bumped by each resync */
    unsigned inflight;         /* event groups queued, not yet called back */
    bool broken;               /* an event was not stored: resyncing */
    int64_t c_started_ms;      /* started_ms as last committed */
    bool ack_pending;          /* on m->ack_list */
    bool acks_off;             /* ended by the master: the slave no longer
                                * reports it, so it gets no more acks */
    int64_t created_ms;
    int64_t started_ms;
    int64_t lost_since_ms;     /* tf_mono_ms() when the slave left;
                                * 0 = connected */
    bool owner_checking;       /* shared masters: asking the database
                                * whether the lost build is still this
                                * master's before ending it */
    bool returning;            /* shared masters: its slave is back with
                                * it, and the database is asked whether
                                * it is still this master's before it
                                * resumes (tf_master_adopt): the lost
                                * timer leaves it alone meanwhile */
    char *start_msg;           /* encoded build_start until sent */
    size_t start_len;
    tf_list_t slave_node;      /* mslave->builds */
    tf_list_t ack_node;        /* m->ack_list */
};

/* What the network layer (net/) counts, for GET /api/v1/master and the
 * logs. Written by net on the loop thread only. */
typedef struct tf_net_stats {
    unsigned connections;     /* open, of every kind */
    uint64_t http_requests;   /* since start */
    unsigned uploads;         /* request bodies being read now */
    size_t preauth_bytes;     /* buffered for unauthenticated clients */
    uint64_t refused;         /* connections refused: fds or budget */
    uint64_t evicted;         /* idle connections closed to make room */
    unsigned live_viewers;    /* /live connections */
    size_t live_bytes;        /* queued for them, all together */
    uint64_t live_dropped;    /* viewers dropped for being too slow */
    unsigned live_followed;   /* other masters' steps followed now */
    uint64_t live_follow_reads; /* their reads since start */
} tf_net_stats_t;

/* What the core needs from the network layer, set by the program's root
 * (daemon.c): the core includes nothing of master/net/. */
typedef struct tf_net_ops {
    /* Queues a text frame to a slave (copied). 0, TF_EFULL, TF_ESTATE. */
    int (*send_text)(tf_link_t *l, const char *text, size_t len);
    /* The same, written at once when the link is idle (build_start): a
     * link with frames queued, or being read, queues it after them. */
    int (*send_text_now)(tf_link_t *l, const char *text, size_t len);
    /* Sends an error with code and message, then closes the link. */
    void (*close_link)(tf_link_t *l, const char *code, int close_code,
                       const char *message);
    /* Handles the slaves' messages put off while tf_master_defer_slaves
     * said so, each link's in the order they came. May be NULL. */
    void (*drain_deferred)(tf_master_t *m);
    /* The live feed: build, step, slave, request and output events. */
    void (*live_build)(tf_master_t *m, const tf_build_t *b, const char *event,
                       int result);
    void (*live_step)(tf_master_t *m, const tf_build_t *b, unsigned step,
                      const char *text);
    void (*live_slave)(tf_master_t *m, const tf_mslave_t *s,
                       const char *event);
    void (*live_request)(tf_master_t *m, const tf_request_t *r,
                         const char *event);
    void (*live_log)(tf_master_t *m, uint64_t build_id, unsigned step,
                     uint64_t offset, const uint8_t *data, size_t len);
    /* An event of another master (store.shared), rendered there. */
    void (*live_relay)(tf_master_t *m, const char *topic, const char *text);
    /* Another master (store.shared) committed something. */
    void (*live_stored)(tf_master_t *m);
} tf_net_ops_t;

struct tf_master {
    uv_loop_t *loop;
    char *dir;
    tf_config_t *cfg;
    tf_store_t *store;
    struct lws_context *lws;
    struct lws_vhost *vhost;
    struct tf_net *net_state; /* net/server.c: limits and connections */
    struct tf_api_cache *api_cache; /* api/cache.c: rendered answers */
    tf_net_stats_t net_stats;
    char *web_root;     /* copied at start: lws keeps pointing at it
                         * across config reloads */
    char admin_token[65];

    tf_map_t *slaves;   /* name -> tf_mslave_t */
    tf_map_t *builders; /* name -> tf_mbuilder_t */
    tf_map_t *requests; /* id -> tf_request_t */
    tf_map_t *builds;   /* id -> tf_build_t */
    tf_map_t *links;    /* id -> tf_link_t */
    tf_map_t *jobs;     /* id -> tf_mjob_t, unfinished try jobs */

    uint64_t next_build_id;
    /* The farm's id from the database (store: migration 9): sent in
     * welcome, and a build a slave reports with another farm's id is not
     * ours whatever its number (tf_build_slave_back). */
    char farm[TF_PROTO_FARM_MAX + 1];
    uint64_t next_request_id;
    uint64_t next_job_id;
    uint64_t ids_end;          /* shared: the end of the block of ids the
                                * three counters above take from */
    bool ids_starved;          /* shared: the last tf_master_ids found no
                                * block ready (logged once) */
    void *farm_q;              /* shared: the reload of the queue in
                                * flight (tf_q_state_t), or NULL */
    bool farm_again;           /* another change came meanwhile */
    bool stale_reading;        /* shared: tf_master_stale_check's read
                                * is in flight */
    size_t stale_pos;          /* ... and where in m->requests the next
                                * one starts (it goes round them) */
    bool cancels_reading;      /* shared: tf_master_cancels_check's read
                                * is in flight */
    /* shared: requests whose claim this master lost lately, kept out of
     * its queue for a while when it keeps losing them (master.c,
     * tf_master_claim_lost); at most TF_LOST_CLAIMS_MAX */
    struct tf_lost_claim {
        uint64_t id;
        unsigned n;       /* lost in a row */
        int64_t last_ms;  /* tf_now_ms() of the last loss */
        int64_t until_ms; /* not queued here before; 0: free to queue */
    } lost_claims[TF_LOST_CLAIMS_MAX];
    size_t nlost_claims;
    uint64_t next_link_id;
    uint64_t fair_vtime;       /* sched.c */
    tf_map_t *fair_last;       /* owner -> (uintptr_t) last tag */
    tf_list_t idle;            /* slaves that can take a build now */
    size_t nidle;
    tf_mbuilder_t **heads;     /* builders with a runnable queue, a heap */
    size_t nheads, heads_cap;
    tf_mbuilder_t **blocked;   /* sched_pass's scratch */
    size_t blocked_cap;
    /* build.c, the start batch (tf_build_batch_begin): open, and the
     * builds whose rows m->group collects for it. */
    bool batch_on;
    uint64_t *batch_ids;
    size_t nbatch, batch_cap;
    size_t batch_limit; /* builds in the open batch's group before it is
                           flushed: TF_BUILD_BATCH_FIRST, doubling */
    size_t batch_max;   /* ... up to this: TF_BUILD_BATCH_MAX, or
                           TF_BUILD_BATCH_FIRST on a shared store */
    /* Slaves' messages put off while a burst's start batches are written
     * (tf_master_defer_slaves): the builds of start batches queued and
     * not yet committed, whether a big one armed the deferral and when,
     * and whether the net is to handle what it put off (turn_cb). */
    size_t starts_inflight;
    bool defer_armed;
    int64_t defer_since_ms; /* tf_mono_ms() */
    int64_t defer_max_ms;   /* TF_DEFER_MAX_MS, or the test hook's */
    bool defer_fixed;       /* test hook: it lasts defer_max_ms */
    bool drain_wanted;
    tf_list_t deferred_links; /* net/link.c: links with messages put off */
    size_t deferred_bytes;    /* ... their bytes, all together */

    tf_list_t ack_list;        /* builds with acks to send */
    tf_list_t live_conns;      /* live.c viewers */
    tf_list_t live_tails;      /* live.c: other masters' steps followed */
    tf_wgroup_t *group;        /* collecting writes (tf_master_group_*) */
    bool group_mail;           /* the group holds mail outbox rows */
    struct event_commit *end_retry; /* build ends to store again (build.c) */
    struct tf_pollers *pollers;       /* poller.c */
    struct tf_schedulers *schedulers; /* schedulers.c */
    struct tf_mail *mail;             /* mail/; NULL when mail is off */
    const tf_net_ops_t *net;          /* the network layer (daemon.c) */
    void (*mail_wake)(tf_master_t *m); /* new outbox rows committed */
    void (*duty_gained)(tf_master_t *m); /* shared: this master took the
                                          * duty lease (the pollers read
                                          * their state again) */
    bool store_congested;
    bool reloading;                   /* a SIGHUP reload is being read */
    bool reload_again;                /* and another SIGHUP came meanwhile */
    bool settling;                    /* the secrets cache is being settled
                                         (daemon.c), a reload waits */
    atomic_bool settle_stop;          /* a SIGHUP asks it to stop early */
    bool slave_rows_lost;             /* a group of slaves rows failed: the
                                         next sync_config writes them all */
    tf_cfg_secrets_t *secrets;        /* secret files kept across reloads
                                         (owned; daemon.c frees it) */
    int64_t last_seen_flush_ms;

    uv_signal_t sig_hup, sig_term, sig_int;
    uv_timer_t tick;           /* heartbeats, lost checks: every second */
    uv_idle_t sched_idle;      /* runs the scheduler once per turn */
    bool sched_wanted;
    uv_timer_t shutdown_timer;
    int shutdown_phase;
    bool stopping;
    int exit_code;
};

/* The live feed, through m->net (nothing when there is no network, as in
 * offline tools). */
static inline void tf_publish_build(tf_master_t *m, const tf_build_t *b,
                                    const char *event, int result)
{
    if (m->net)
        m->net->live_build(m, b, event, result);
}

static inline void tf_publish_step(tf_master_t *m, const tf_build_t *b,
                                   unsigned step, const char *text)
{
    if (m->net)
        m->net->live_step(m, b, step, text);
}

static inline void tf_publish_slave(tf_master_t *m, const tf_mslave_t *s,
                                    const char *event)
{
    if (m->net)
        m->net->live_slave(m, s, event);
}

static inline void tf_publish_request(tf_master_t *m, const tf_request_t *r,
                                      const char *event)
{
    if (m->net)
        m->net->live_request(m, r, event);
}

static inline void tf_publish_log(tf_master_t *m, uint64_t build_id,
                                  unsigned step, uint64_t offset,
                                  const uint8_t *data, size_t len)
{
    if (m->net)
        m->net->live_log(m, build_id, step, offset, data, len);
}

/* Step flags as stored in steps.flags (bit 0 haltOnFailure, 1
 * flunkOnFailure, 2 warnOnFailure, 3 flunkOnWarnings, 4 warnOnWarnings,
 * 5 alwaysRun), so a restarted master can fold results again. */
static inline int tf_flags_bits(const tf_step_flags_t *f)
{
    return (f->halt_on_failure ? 1 : 0) | (f->flunk_on_failure ? 2 : 0) |
           (f->warn_on_failure ? 4 : 0) | (f->flunk_on_warnings ? 8 : 0) |
           (f->warn_on_warnings ? 16 : 0) | (f->always_run ? 32 : 0);
}

static inline tf_step_flags_t tf_flags_from_bits(int b)
{
    tf_step_flags_t f = {
        .halt_on_failure = (b & 1) != 0,
        .flunk_on_failure = (b & 2) != 0,
        .warn_on_failure = (b & 4) != 0,
        .flunk_on_warnings = (b & 8) != 0,
        .warn_on_warnings = (b & 16) != 0,
        .always_run = (b & 32) != 0,
    };
    return f;
}

/* --- master.c --- */

/* Sets up m's maps and lists (m is zeroed first) for directory dir.
 * Returns 0 or TF_ENOMEM; tf_master_free cleans up either way. */
int tf_master_init(tf_master_t *m, const char *dir);

/* With m->cfg, m->loop and m->store set: rebuilds the live state from the
 * database (one synchronous query: before the loop serves), makes the
 * builders and slaves follow the config, and queues what was pending. */
int tf_master_start(tf_master_t *m);

/* Puts cfg in force (loop thread): builders and slaves follow it, slaves
 * removed from it lose their link, the scheduler recomputes who may run
 * what. Returns the old config, which the caller frees once the services
 * it was lent to (pollers, schedulers, mail) have moved on. */
tf_config_t *tf_master_apply_config(tf_master_t *m, tf_config_t *cfg);

/* The core's part of the one-second tick: builds lost for too long end,
 * ends that could not be stored are stored again, and every 30 s the
 * slaves' last-seen times are written. */
void tf_master_tick(tf_master_t *m);

/* Frees the live state (after the loop stopped and the store closed). */
void tf_master_free(tf_master_t *m);

/* Runs now the callbacks of write groups the store has committed
 * (tf_store_deliver), so that a committed start batch's build_starts go
 * out between two messages of a long run from the slaves rather than
 * after all of them. For the net between messages; does nothing while a
 * write group is open. Loop thread. */
void tf_master_deliver_commits(tf_master_t *m);

/* Sends a text frame (copied) or a message to slave s on its link, through
 * m->net. TF_ESTATE when s has no link. */
int tf_master_send_text(tf_master_t *m, tf_mslave_t *s, const char *text,
                        size_t len);
/* tf_master_send_text through the net's send_text_now (a build_start). */
int tf_master_send_start(tf_master_t *m, tf_mslave_t *s, const char *text,
                         size_t len);
int tf_master_send(tf_master_t *m, tf_mslave_t *s, const tf_msg_t *msg);

/* Closes s's link with an error code, close code and message. */
void tf_master_close_link(tf_master_t *m, tf_mslave_t *s, const char *code,
                          int close_code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Starts the write group of one event: until tf_master_group_commit, the
 * operations its handling makes go to m->group (tf_op_*(m->group, ...)),
 * to commit together or not at all. hint: bytes of strings and blobs
 * expected (0: small). Groups do not nest. Returns m->group (NULL when
 * out of memory; the ops then fail and the commit reports it). */
tf_wgroup_t *tf_master_group_begin(tf_master_t *m, size_t hint);

/* Makes the next n ids of next_build_id, next_request_id and next_job_id
 * free to take (each taken id is the counter's value, then the counter
 * moves). Alone on a database they are; a shared master (store.shared)
 * points all three at one cursor in a block of the database's id
 * sequence, taking the block the store reserved ahead when fewer than n
 * are left (never waiting for the database). Returns 0, TF_E2BIG when n
 * exceeds a block, TF_EFULL when no block is ready yet (try again: the
 * scheduler is kicked when one is), or TF_ESTORE. */
int tf_master_ids(tf_master_t *m, unsigned n);

/* A shared master's store saw another master change the queue (or this
 * one gained the duty lease): pending requests this master does not
 * hold yet are loaded and queued. Loop thread. */
void tf_master_farm_changed(void *arg, unsigned what);

/* Shared masters: this master lost the claim of request id (another
 * transaction holds or moved its row). Returns true when the queue should
 * be read again now (the first loss: the other claim may have rolled
 * back), false while the request is backed off: it stays out of this
 * master's queue for 250 ms, doubling with each loss in a row up to 4 s,
 * and tf_master_tick reads the queue again when that has passed, so a
 * row another transaction holds is not claimed in a hot loop. */
bool tf_master_claim_lost(tf_master_t *m, uint64_t id);

/* Shared masters: this master lost the claim of request id lately (it
 * holds no copy of it while it backs off). */
bool tf_master_claim_held_back(tf_master_t *m, uint64_t id);

/* Shared masters: cancels build id (kind "build") or what the other
 * masters run and queue of try job id (kind "job") wherever it runs. The
 * cancel is stored first (tf_op_cancel_mark: the build's or the job's
 * row, and the job's open builds); once committed, the other masters
 * are woken over the farm's event channel (tf_store_farm_send: news
 * only, which may be lost), and the master running a build applies its
 * stored cancel at its next tick anyway (tf_master_cancels_check), as
 * does a master taking the build over. cb(arg, rc) runs after the
 * commit: 0 stored, TF_ESTATE when the build has finished or the job
 * ended, another code when it could not be stored. why is copied.
 * Returns 0 (cb will run, possibly at once), or TF_ESTATE when not
 * shared or TF_ENOMEM without calling cb. Loop thread. */
int tf_master_cancel_elsewhere(tf_master_t *m, const char *kind,
                               uint64_t id, const char *why,
                               tf_store_done_cb cb, void *arg);

/* Shared masters: reads the stored cancels (TF_Q_CANCELS) and cancels
 * the builds among them that run here. Called by the one-second tick;
 * one read at a time, none while this master runs no build. */
void tf_master_cancels_check(tf_master_t *m);

/* Shared masters: asks the database where this master's pending copies
 * of requests stand (TF_Q_REQUEST_STATES, at most TF_REQUEST_STATES_MAX
 * of them per call, going round the queue) and drops each copy, not
 * being claimed here, of a request that has ended (done, cancelled,
 * collapsed) or runs on another master's build: without a slave for
 * its builder this master would never try to claim it, and the copy
 * would stay in its queue and its API forever. Never on absence (a
 * request whose creation has not committed yet has no row). Dropping
 * sends no mail, event or RETRY. Called by the one-second tick; one
 * read at a time, none while no copy is pending. */
void tf_master_stale_check(tf_master_t *m);

/* Called on the loop thread once tf_master_adopt has checked and loaded
 * what it could: rc 0, or the TF_E* code of an owner check that failed
 * (the database could not say whose a held build is: the slave must not
 * be welcomed with it). */
typedef void (*tf_master_adopted_cb)(tf_master_t *m, void *arg, int rc);

/* A shared master's slave came back (hello) with running builds. Those
 * this master holds for it are checked first, each in an owner-guarded
 * write (the slave may have run them for another master since: the
 * A->B->A move): a copy that is another master's now, or whose build has
 * ended, is dropped at once (tf_build_forget_stale). Then the builds it
 * does not hold (a dead master's, or those just dropped) are loaded with
 * their requests from the database (builds whose slave is `slave` only)
 * and taken over each in its own guarded write, so that the welcome
 * resumes them here; then cb(m, arg, rc). Returns 0 with cb to come
 * (possibly already called), or TF_ENOENT when there is nothing to check
 * or load (not shared, or no id is known here or held for this slave:
 * cb is not called), or another code without calling cb. ids is
 * copied. */
int tf_master_adopt(tf_master_t *m, const char *slave, const uint64_t *ids,
                    size_t n, tf_master_adopted_cb cb, void *arg);

/* Queues m->group as one all-or-nothing unit; cb (may be NULL) fires
 * after its commit or failure. When it cannot be queued (out of memory,
 * queue full, closing), cb is called at once with the code, which is
 * also returned, and the group is freed after it (unless kept: then the
 * callback owns it). */
int tf_master_group_commit(tf_master_t *m, tf_store_done_cb cb, void *arg);

/* Records a slave event (connected, disconnected, lost, refused). */
void tf_master_slave_event(tf_master_t *m, const char *slave,
                           const char *event, const char *detail);

tf_mslave_t *tf_master_slave(tf_master_t *m, const char *name, bool create);

/* Slave s authenticated on link l with these hello facts: it may get
 * builds now. */
void tf_master_slave_attach(tf_master_t *m, tf_mslave_t *s, tf_link_t *l,
                            uint32_t max_builds, const char *platform,
                            const char *version);

/* Stores that s is connected (its row, tags, and a "connected" event with
 * detail), once the welcome is out. */
void tf_master_slave_connected(tf_master_t *m, tf_mslave_t *s,
                               const char *detail);

/* s lost its link: its builds wait for it to come back. With an event
 * ("disconnected", "lost"), its row and events say so. */
void tf_master_slave_detach(tf_master_t *m, tf_mslave_t *s, const char *event,
                            const char *detail);

/* s asked for no new builds on this link. */
void tf_master_slave_drain(tf_master_t *m, tf_mslave_t *s);
tf_mbuilder_t *tf_master_builder(tf_master_t *m, const char *name,
                                 bool create);

/* --- sched.c --- */

/* Asks for a scheduling pass at the end of this loop turn. */
void tf_sched_kick(tf_master_t *m);

/* Asks for the end-of-turn work (acks) without a scheduling pass. */
void tf_sched_defer(tf_master_t *m);

/* Creates and queues a build request: in memory now, in storage with cb
 * firing after the commit. Returns 0 and the request id in *id_out (cb then
 * runs, possibly at once with an error, in which case nothing was queued),
 * or a negative code without calling cb (TF_ENOENT: no such builder). */
int tf_sched_request(tf_master_t *m, const tf_reqspec_t *spec,
                     uint64_t *id_out, tf_store_done_cb cb, void *arg);

/* Builds a request object with the given id from spec (not queued, not
 * written). NULL on OOM. */
tf_request_t *tf_request_make(const tf_reqspec_t *spec, uint64_t id,
                              int64_t submitted_ms);

/* Queues the INSERT of r (part of the current write group, if any). */
void tf_request_write(tf_master_t *m, const tf_request_t *r);

/* Adds r to m->requests and its builder's queue. Returns 0 or TF_ENOMEM. */
int tf_sched_adopt(tf_master_t *m, tf_request_t *r);

/* Takes a pending request out of the queue for good (state 'cancelled',
 * result CANCELLED) and frees it; its job learns of it. cb (may be NULL)
 * fires after the commit. */
void tf_sched_cancel_pending(tf_master_t *m, tf_request_t *r,
                             tf_store_done_cb cb, void *arg);

/* Puts a request (in memory) on its builder's pending list. */
void tf_sched_enqueue(tf_master_t *m, tf_request_t *r);

/* Takes a pending request off its builder's queue (its build starts). */
void tf_sched_dequeue(tf_master_t *m, tf_request_t *r);

/* Initialises the scheduler's part of a new builder. */
void tf_sched_builder_init(tf_mbuilder_t *mb);

/* The config changed (or was loaded): which slave may run which builder
 * is computed again, and the idle set and the heads follow. */
void tf_sched_config(tf_master_t *m);

/* The one way a request changes state: logs it and asserts the move is
 * legal (sched.c draws the machine). */
void tf_request_set_state(tf_master_t *m, tf_request_t *r, tf_req_state_t to,
                          const char *why);

/* Adds the builder's pending and running counts (its summary row) to the
 * open write group. */
void tf_sched_counts_write(tf_master_t *m, const tf_mbuilder_t *mb);

/* Something that decides whether slave s can take a build changed (its
 * link, config, drain, number of builds): the scheduler's idle set
 * follows. */
void tf_sched_slave_changed(tf_master_t *m, tf_mslave_t *s);

/* The 1-based position of a pending request in its builder's queue (the
 * order the scheduler would pick), or 0 if not pending. O(log n). */
unsigned tf_sched_position(tf_master_t *m, const tf_request_t *r);

/* Whether request r is a try request (kind "try" in the API): it carries
 * a patch or belongs to a try job. Its builds never count as the tree's
 * state. */
static inline bool tf_request_is_try(const tf_request_t *r)
{
    return r && (r->job_id != 0 || r->patch_sha256[0] != '\0');
}

/* Whether slave s can take one more build now. */
bool tf_sched_slave_has_room(const tf_mslave_t *s);

void tf_request_free(tf_request_t *r);

/* --- build.c --- */

/* A build object in state NEW (steps zeroed), or NULL when out of
 * memory. The caller owns it until it is put in m->builds. */
tf_build_t *tf_build_new(uint64_t id, const char *builder, uint64_t number,
                         const char *slave, size_t nsteps);

/* A build restored from the database (its steps filled in): folds its
 * result and moves it to RUNNING. */
void tf_build_restored(tf_build_t *b);

/* Stores again the ends of builds whose end could not be stored (called
 * every second, and at shutdown before the store closes). With the store
 * gone (m->store NULL) it frees them, logging each as lost. */
void tf_build_retry_ends(tf_master_t *m);

/* Starts request r on slave s: allocates the build, queues its rows, and
 * sends build_start once they are committed. When build_start cannot be
 * encoded for r (over the size cap, or a value the protocol refuses, such
 * as a bad revision), the build is recorded at once as EXCEPTION with the
 * encoder's reason as its text, without a slave, and r is done: it never
 * blocks its builder's queue. Returns 0 in both cases (r left the queue),
 * or a negative code when r stays queued (out of memory, no builder). */
int tf_build_start(tf_master_t *m, tf_request_t *r, tf_mslave_t *s);

/* A start batch: between tf_build_batch_begin and tf_build_batch_end the
 * rows of the builds tf_build_start starts are collected into one write
 * group (one savepoint, committed in one transaction) of at most
 * TF_BUILD_BATCH_FIRST builds, each next group of the pass twice the one
 * before up to TF_BUILD_BATCH_MAX (the first build_starts go out soon, and
 * a burst's later rows share fewer, cheaper commits: 10.5 against 9.1 us
 * of writer CPU per build at 256 and 1,024, tf-bench-store -B); on a
 * shared store every group stays at TF_BUILD_BATCH_FIRST (one lost claim
 * there sends its whole group through the unit-by-unit path, a round trip
 * to the server per unit). The builders' counts are written once per
 * group, and every build_start of a group goes out when it has
 * committed.
 * Each build's rows are a unit of the group (tf_wgroup_unit_end): if the
 * group fails on its own, the store applies each build's rows alone, and
 * only a build whose own rows fail is dropped (its request queued again
 * as a retry); out of memory or the database failing, every build of the
 * group is dropped so. While
 * a batch is open m->group belongs to it: the caller opens no group of
 * its own in between. The scheduler's pass is one batch. */
#define TF_BUILD_BATCH_FIRST 256u
#define TF_BUILD_BATCH_MAX 1024u
void tf_build_batch_begin(tf_master_t *m);

/* Whether the net is to put off the messages that slaves send (copied, in
 * order, handled by net->drain_deferred) rather than handle them now:
 * from the moment a pass queues a start batch of TF_BUILD_BATCH_FIRST
 * builds or more (a burst) until every start batch queued since has
 * committed and its build_starts are sent, at most TF_DEFER_MAX_MS (its
 * end noticed at the next message from a slave or the next tick). In a
 * burst the loop, the store's writer and the slaves share the cores, and
 * the events of the builds that started first (decoding, their write
 * groups, acks) took the CPU the writer needed for the rows every later
 * build_start waits for. The end of the deferral, or its time running
 * out, makes turn_cb drain what was put off. Loop thread. */
#define TF_DEFER_MAX_MS 250
bool tf_master_defer_slaves(tf_master_t *m);
/* Ends the deferral now (the net holds too much): what was put off is
 * handled at the loop's next turn. */
void tf_master_defer_end(tf_master_t *m);
/* Commits what the batch collected and closes it. */
void tf_build_batch_end(tf_master_t *m);

/* Applies one decoded control event from a slave's link (step_started,
 * step_finished, build_finished). Returns 0, or TF_EPROTO with err filled
 * when the link must be closed as malformed: an event out of order
 * (docs/protocol.md, "Order of a build's events"), a gap, or an event for
 * a build this master does not run on s. */
int tf_build_event(tf_master_t *m, tf_mslave_t *s, const tf_msg_t *msg,
                   char *err, size_t errlen);

/* Applies one binary output frame. Same contract. */
int tf_build_output(tf_master_t *m, tf_mslave_t *s, const tf_output_hdr_t *h,
                    const uint8_t *payload, char *err, size_t errlen);

/* The slave's link went away: its builds wait for it to come back. */
void tf_build_slave_gone(tf_master_t *m, tf_mslave_t *s);

/* The slave authenticated and reported its running builds: fills the
 * resume and abandon lists of the welcome (malloc'd, caller frees) and
 * ends as RETRY the builds the slave no longer has. */
int tf_build_slave_back(tf_master_t *m, tf_mslave_t *s, const tf_msg_t *hello,
                        tf_running_t **resume, size_t *nresume,
                        uint64_t **abandon, size_t *nabandon);

/* Ends builds whose slave has been gone longer than build_lost_after_s. */
void tf_build_check_lost(tf_master_t *m);

/* Shared masters: b's slave came back with it, but another master owns
 * it now or it has ended (tf_master_adopt's owner check). This master's
 * copy is stale: it is dropped at once without ending it (no RETRY, no
 * requeue, no mail, no event), with this master's copy of its request,
 * and the queue is read again (the request may be pending again). b is
 * freed by the next tf_build_flush_acks. */
void tf_build_forget_stale(tf_master_t *m, tf_build_t *b);

/* Sends the acks owed to slaves (called once per loop turn). */
void tf_build_flush_acks(tf_master_t *m);

/* Sends build_abort for a running build (cancel). Returns 0 or TF_ENOENT. */
int tf_build_cancel(tf_master_t *m, uint64_t build_id, const char *why);

void tf_build_free(tf_build_t *b);

/* Frees the build_start templates builder mb keeps (build.c); mb stays
 * the caller's. */
void tf_build_templates_free(tf_mbuilder_t *mb);

/* The build_start the master sends for build (id, number) of builder mb
 * (its cfg) on slave for request r (borrowed), into *out (malloc'd, the
 * caller's) of *len bytes: from mb's template (made on first use) when
 * from_template, else through the encoder. Returns 0; TF_ENOENT when
 * from_template and r must take the encoder (what tf_build_start then
 * does); TF_E2BIG or TF_EINVAL when the protocol refuses it; TF_ENOMEM.
 * Both ways give the same bytes (tests/unit/test_build_start.c). */
int tf_build_render_start(tf_mbuilder_t *mb, const tf_request_t *r,
                          uint64_t id, uint64_t number, const char *slave,
                          bool from_template, char **out, size_t *len);

/* The rows tf_build_start stores for a build beyond its ids and its
 * request's columns: the builds row's properties (JSON, sorted keys) and
 * each step's name, command (a JSON array) and flags. text holds the
 * properties and each command, each followed by a NUL; properties and
 * the commands point into it. */
typedef struct tf_build_rows {
    char *text; /* malloc'd */
    size_t len;
    const char *properties;
    tf_build_step_rec_t *steps; /* malloc'd */
    size_t nsteps;
} tf_build_rows_t;

/* The rows of build (id, number) of builder mb (its cfg) on slave for
 * request r (borrowed) into *rows (the caller's: tf_build_rows_clear):
 * from mb's templates (made on first use, as tf_build_render_start makes
 * them) when from_template, the steps' names then mb's until its
 * templates are freed or made again; else through jansson, the names in
 * rows->text. Returns 0; TF_ENOENT when from_template and r's rows must
 * be computed (what tf_build_start then does); TF_ENOMEM. Both ways give
 * the same bytes (tests/unit/test_build_start.c). */
int tf_build_render_rows(tf_mbuilder_t *mb, const tf_request_t *r,
                         uint64_t id, uint64_t number, const char *slave,
                         bool from_template, tf_build_rows_t *rows);

/* Frees what rows holds and empties it; NULL is fine. */
void tf_build_rows_clear(tf_build_rows_t *rows);

/* The log retention the config asks for, as the store takes it
 * (out->rules malloc'd: the caller frees it, also after TF_ENOMEM). */
int tf_retention_from_config(const tf_config_t *cfg, tf_retention_t *out);

#endif
