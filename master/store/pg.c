/*
 * pg.c - the PostgreSQL engine of the storage interface (issue 15): the
 * same operations and queries as store/sqlite.c on a PostgreSQL database
 * named by a URL (postgresql://user@host/db, or with ?host=/socket/dir),
 * through libpq.
 *
 * Writing: the writer thread owns one connection and applies a batch as
 *
 *   BEGIN
 *     SAVEPOINT tf_op; <the group's ops>; RELEASE SAVEPOINT tf_op (each)
 *       ... a group failing alone: ROLLBACK TO SAVEPOINT tf_op; RELEASE
 *   COMMIT
 *
 * so store.c's contract (a group commits whole or not at all, batch-mates
 * of a failed group commit, done callbacks after the commit) holds as on
 * sqlite. Each statement is prepared once per connection (PQprepare,
 * keyed by the address of its static SQL text, as sqlite's cache is) and
 * run with PQexecPrepared; output bytes go as a binary bytea parameter,
 * straight from the group's memory.
 *
 * The SQL is sqlite's text where the two dialects agree (placeholders ?N
 * are rewritten to $N by store/db.c's tf__db_pg_sql, which also quotes
 * the column offset): the write statements both engines run are
 * store/writes.c's, one copy; where they differ (INSERT OR IGNORE,
 * json_set, the mail rules' CASE over booleans, the guarded forms of
 * shared masters) this file has its own text. The raw
 * statements of store_sqlite.h (the mail outbox's updates) go through
 * the same rewrite; raw write functions (tf_op_sql_fn) speak sqlite's
 * API and fail their group here, loudly.
 *
 * Which failures fail a group alone and which the batch: a lost
 * connection, and SQLSTATE classes 08 (connection), 53 (insufficient
 * resources: disk full), 57 (operator intervention: the server shutting
 * down), 58 (system error: I/O), 40 (serialization, deadlock), 55 (lock
 * not available) and XX (internal) say something about the database as a
 * whole: the batch is rolled back and store.c retries it with backoff,
 * reconnecting first. Anything else (a constraint, a broken event chain)
 * rolls back only that group. Each batch knows its transaction id
 * (txid_current, with the BEGIN); when the answer to its COMMIT is lost
 * with the connection (a backend ended while it waited in COMMIT), the
 * retry of that same batch first asks the server (txid_status): a batch
 * that did commit is not applied again (its guarded UPDATEs would find
 * their own claim or end and take it for another master's), its groups
 * keep the outcomes of the run that committed; one that did not runs
 * again; one still in progress is asked about again after the backoff.
 *
 * Reading: a query borrows a reader connection from a pool and runs in a
 * REPEATABLE READ READ ONLY transaction (one snapshot), through db.h.
 * A reader found broken is reconnected before use.
 *
 * Several masters on one database (store.shared, issue 15): each holds
 * the master lock shared (a master without `shared` holds it alone, so
 * the two kinds never mix); ids come in blocks of TF_STORE_ID_BLOCK from
 * the sequence tf_ids; a build's rows claim its request
 *
 *   UPDATE build_requests SET state = 'running' ... WHERE id =
 *     (SELECT id ... WHERE id = $r AND state = 'pending'
 *      FOR UPDATE SKIP LOCKED)
 *
 * and fail their group with TF_ESTATE when another master has it (or is
 * claiming it right now), so a request runs on exactly one master. The
 * other request UPDATEs name the state they expect (pending, or pending
 * or running) and fail the same way when it moved; a build's row names
 * its owner (this master's host/pid/random), taking a build over is
 * UPDATE ... WHERE owner = the owner read, and a build's end is stored
 * only by its owner, so of two masters that both think they run a build
 * exactly one ends it; a
 * batch that created or requeued requests sends NOTIFY tf_farm, which
 * PostgreSQL delivers at its commit. A listener thread with its own
 * connection LISTENs for it and holds the duty lock (the lease of the
 * single-runner work: mail, pollers, periodic schedulers) when it can:
 * the lock is PostgreSQL's, so it goes with the connection of a master
 * that dies and another master's listener takes it within
 * DUTY_POLL_US. The listener also reserves each next block of ids ahead
 * (the loop never waits for one: reserve_ids says TF_EFULL when none is
 * ready), relays live events batched into NOTIFYs (counting drops), and
 * writes this master's heartbeat in tf_masters each second, ending the
 * sessions of masters silent past the lease timeout (counted from the
 * server's start at the earliest: nobody could beat while it was down)
 * and marking their slaves (tf_slave_master) disconnected. Every
 * connection carries TCP keepalives on both ends (store.keepalive_*).
 */
#include "store/engine.h"

#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <sys/select.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "log.h"
#include "names.h"
#include "result.h"
#include "store/db_impl.h"
#include "store/logblock.h"
#include "store/pg_schema.h"
#include "store/reads.h"
#include "store/store_schema.h"
#include "store/store_sqlite.h"
#include "store/writes.h"
#include "tf_err.h"

#define SUB "store"

#define CONNECT_TIMEOUT_S "5"
#define SQL_MAX 16384
#define MAX_PARAMS 64
/* pg_advisory_lock key held while migrating ("tfsc"). */
#define MIGRATE_LOCK_KEY "1952871267"
/* Held by the write connection for as long as a master uses the database:
 * one master per database in this version ("tfma"). */
#define MASTER_LOCK_KEY "1952870753"
/* The lease of the single-runner duties among shared masters ("tfdu"). */
#define DUTY_LOCK_KEY TF_PG_DUTY_LOCK_KEY
#define DUTY_POLL_US 500000
/* Batches rerun at once after a deadlock before the writer backs off. */
#define CONTENDED_RERUNS 8

enum { PG_OK = 0, PG_FAIL_GROUP = 1, PG_FAIL_DB = 2, PG_FAIL_CLAIM = 3 };

/* A live feed event between masters: "TOPIC\nTEXT". */
typedef struct farm_ev {
    struct farm_ev *next;
    size_t len;
    char text[];
} farm_ev_t;

#define FARM_QUEUE_MAX (1024u * 1024)
/* Events go out batched: one NOTIFY carries as many as fit in this many
 * bytes (PostgreSQL's payload limit is 8000), separated by FARM_SEP (an
 * ASCII record separator: JSON text escapes control characters, so it
 * never occurs in an event). */
#define FARM_BATCH_MAX 7900u
#define FARM_SEP '\x1e'

typedef struct pstmt {
    const char *sql; /* the key: the address of the static text */
    unsigned id;     /* prepared as "tf<id>" on the write connection */
    int nparams;
} pstmt_t;

struct tf_engine {
    char *url;
    char shown[256]; /* the URL without its password, for logs */

    /* Writer thread only (after open). */
    PGconn *w;
    pstmt_t *stmts; /* open addressing by address; cap a power of two */
    size_t cap, n;
    unsigned next_id;
    bool claimed;    /* holds the master lock (and takes it again after a
                      * reconnect) */
    int64_t changes; /* rows the last statement touched */
    bool shared;     /* one of several masters (store.shared) */
    char owner[128]; /* this master's name in builds.owner: host/pid/random
                      * when shared, "" otherwise (set by claim) */
    bool notify;     /* this batch changed the queue: NOTIFY tf_farm */
    bool notify_mail; /* ... queued mail */
    bool contended;  /* the batch lost to another transaction (40xxx) */
    unsigned rerun;  /* batches rerun at once for that in a row */
    /* The batch in flight's transaction id (txid_current), and, when its
     * COMMIT got no answer, that batch (store.c retries the same one):
     * the retry asks txid_status first, so a batch that did commit is
     * not applied again. */
    int64_t xid;
    int64_t unknown_xid;          /* 0: no commit outcome unknown */
    const tf_wgroup_t *unknown_first;
    size_t unknown_n;
    bool batch_claims, batch_ends; /* this batch claims / ends a build */
    int lose_commit; /* test hook TF_TEST_PG_LOSE_COMMIT: 1 claim, 2 end */
    tf_logpacker_t *packer; /* sealing log blocks (created on first use) */
    unsigned char *sealbuf; /* the tail being sealed, sealcap bytes */
    size_t sealcap;
    uint64_t maint_build; /* where the idle sealing walk is */
    unsigned maint_step;
    tf_engine_holes_t maint_holes; /* steps the walk left unsealed */
    char ret_builder[TF_NAME_MAX + 1]; /* where the retention walk is */
    char msg[512];

    /* The read pool, under pool_mu. */
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cond;
    PGconn **readers;
    unsigned *free_rd; /* indexes of the idle readers (a stack) */
    unsigned nreaders;
    unsigned nfree;

    /* The listener thread (shared masters): LISTEN tf_farm, duty lock. */
    pthread_t listener;
    bool listening;           /* the thread was started */
    atomic_bool stop;         /* set by destroy */
    atomic_bool duty;         /* holds the duty lock */
    atomic_int wpid;          /* the write connection's backend: its own
                               * notifications are not news */
    void (*farm_cb)(void *arg, unsigned what);
    void *farm_arg;

    /* Live feed events to and from the other masters, under ev_mu. */
    pthread_mutex_t ev_mu;
    farm_ev_t *out_head, *out_tail, *in_head, *in_tail;
    size_t out_bytes, in_bytes;
    int wake[2]; /* wakes the listener to send (a pipe) */
    size_t farm_queue_max; /* FARM_QUEUE_MAX, or the test hook's */
    /* The relay's counters (tf_store_farm_stats_t), and whether a burst
     * of drops is under way each way (logged once at its start and once
     * when the queue has room again). */
    atomic_ullong ev_sent, ev_notifies, ev_received, ev_dropped_out,
        ev_dropped_in;
    bool dropping_out, dropping_in;    /* under ev_mu */
    uint64_t burst_out, burst_in;      /* drops in the burst, under ev_mu */

    /* Shared ids: the next block, reserved ahead (the first at the claim,
     * each next one by the listener as soon as the last was taken), so
     * the loop never waits for the database for ids. Under ev_mu once
     * the listener runs. */
    uint64_t ids_spare;  /* the first id of the ready block; 0: none */
    bool ids_starved;    /* a reserve found none: say when one comes */

    /* Shared masters' heartbeats (tf_masters), listener thread. */
    char me[64];          /* this master's name there (app_name) */
    uint64_t beat_at_us;  /* when the listener last wrote it */
    uint64_t beat_since_us; /* since when, without a break (0: its
                             * connection is new) */
    unsigned ids_delay_ms; /* test hook TF_TEST_PG_IDS_DELAY_MS */
    unsigned relay_delay_ms; /* test hook TF_TEST_PG_RELAY_DELAY_MS:
                                the first NOTIFY of events waits */
    char drop_topic[32];   /* test hook TF_TEST_PG_DROP_RELAY: outgoing
                            * events of this topic ("*": all) are lost */
};

static void fmt_trunc(char *dst, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fmt_trunc(char *dst, size_t len, const char *fmt, ...)
{
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    vsnprintf(dst, len, fmt, ap);
    va_end(ap);
    /* libpq's messages span lines; a log line is one line. */
    for (char *p = dst; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    n = strlen(dst);
    while (n && (dst[n - 1] == '\n' || dst[n - 1] == ' '))
        dst[--n] = '\0';
}

/* libpq prints notices on stderr by default; they go to the log. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    tf_debug(SUB, "postgresql: %.300s", message);
}

/* The URL as logs show it: the password between ':' and '@' of the
 * authority becomes "***". */
static void hide_password(const char *url, char *out, size_t len)
{
    const char *scheme = strstr(url, "://");
    const char *at, *colon;

    snprintf(out, len, "%s", url);
    if (!scheme)
        return;
    at = strchr(scheme + 3, '@');
    if (!at)
        return;
    colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3));
    if (!colon)
        return;
    snprintf(out, len, "%.*s:***%s", (int)(colon - url), url, at);
}

/* A random tag of this process, the same for all its connections: two
 * masters in containers with the same pid and a long shared host prefix
 * still differ in their names. */
static unsigned proc_tag;
static pthread_once_t proc_tag_once = PTHREAD_ONCE_INIT;

static void proc_tag_init(void)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

    if (fd < 0 || read(fd, &proc_tag, sizeof(proc_tag)) !=
                      (ssize_t)sizeof(proc_tag))
        proc_tag = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
    if (fd >= 0)
        close(fd);
}

/* This process's name in pg_stat_activity (application_name, at most 63
 * bytes): names it in the refusal of a second master, and is a shared
 * master's name in tf_masters (its sessions are found by it): the host
 * (its first 30 bytes), the random tag of the owner name (owner_name)
 * and the pid. */
static void app_name(char *out, size_t len)
{
    char host[31] = "";

    pthread_once(&proc_tag_once, proc_tag_init);
    gethostname(host, sizeof(host) - 1);
    snprintf(out, len, "tf-master %s %08x pid %ld", host, proc_tag,
             (long)getpid());
}

static unsigned net_or(unsigned v, unsigned def)
{
    return v ? v : def;
}

/* A new connection to url, or NULL with the reason in why. */
static PGconn *connect_url(const char *url, char *why, size_t whylen)
{
    char app[64], idle[16], intvl[16], count[16], opts[160];
    unsigned ki = net_or(tf__engine_net.keepalive_idle_s, 10);
    unsigned kv = net_or(tf__engine_net.keepalive_interval_s, 5);
    unsigned kc = net_or(tf__engine_net.keepalive_count, 3);
    /* TCP keepalives on both ends (store.keepalive_*): the client's
     * (libpq's keepalives_*) end a connection to a server that vanished;
     * the server's (tcp_keepalives_* for this session, sent as startup
     * options) end the session, and so free the locks and the duty lease,
     * of a master whose machine vanished, in idle + interval x count
     * seconds instead of the system's 2 hours. A TCP user timeout bounds
     * a write the other end never acknowledges (the writer in a commit)
     * to a minute. The URL may override each of them. */
    const char *keys[] = {"connect_timeout", "application_name",
                          "keepalives", "keepalives_idle",
                          "keepalives_interval", "keepalives_count",
                          "tcp_user_timeout", "options", "dbname", NULL};
    const char *vals[] = {CONNECT_TIMEOUT_S, app, "1", idle, intvl, count,
                          "60000", opts, url, NULL};
    PGconn *c;

    app_name(app, sizeof(app));
    snprintf(idle, sizeof(idle), "%u", ki);
    snprintf(intvl, sizeof(intvl), "%u", kv);
    snprintf(count, sizeof(count), "%u", kc);
    snprintf(opts, sizeof(opts), "-c tcp_keepalives_idle=%u "
             "-c tcp_keepalives_interval=%u -c tcp_keepalives_count=%u",
             ki, kv, kc);
    c = PQconnectdbParams(keys, vals, 1);

    if (!c) {
        fmt_trunc(why, whylen, "out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        fmt_trunc(why, whylen, "%s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, on_notice, NULL);
    return c;
}

/* ------------------------------------------------------------------ */
/* Writer: statements                                                  */
/* ------------------------------------------------------------------ */

static size_t ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static pstmt_t *slot_of(pstmt_t *v, size_t cap, const char *sql)
{
    size_t i = ptr_hash(sql) & (cap - 1);
    while (v[i].sql && v[i].sql != sql)
        i = (i + 1) & (cap - 1);
    return &v[i];
}

static bool stmts_grow(tf_engine_t *e)
{
    size_t cap = e->cap ? e->cap * 2 : 64;
    pstmt_t *v = calloc(cap, sizeof(*v));

    if (!v)
        return false;
    for (size_t i = 0; i < e->cap; i++)
        if (e->stmts[i].sql)
            *slot_of(v, cap, e->stmts[i].sql) = e->stmts[i];
    free(e->stmts);
    e->stmts = v;
    e->cap = cap;
    return true;
}

/* The connection is gone with its prepared statements. */
static void stmts_clear(tf_engine_t *e)
{
    free(e->stmts);
    e->stmts = NULL;
    e->cap = e->n = 0;
}

/* What a failed result says about the database: PG_FAIL_DB when the
 * whole database failed (see the file's header), PG_FAIL_GROUP when only
 * this statement did. */
static int classify(tf_engine_t *e, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE)
                            : NULL;
    static const char *const db_wide[] = {"08", "53", "57", "58", "40",
                                          "55", "XX", "25"};

    if (!e->w || PQstatus(e->w) != CONNECTION_OK || !state)
        return PG_FAIL_DB;
    /* A deadlock or serialization failure: another master's transaction
     * won; trying again at once is the cure (apply_batch). */
    e->contended = strncmp(state, "40", 2) == 0;
    for (size_t i = 0; i < sizeof(db_wide) / sizeof(db_wide[0]); i++)
        if (strncmp(state, db_wide[i], 2) == 0)
            return PG_FAIL_DB;
    return PG_FAIL_GROUP;
}

static int fail_with(tf_engine_t *e, PGresult *res, const char *what)
{
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    int kind;

    if (!m || !*m)
        m = e->w ? PQerrorMessage(e->w) : "no connection";
    fmt_trunc(e->msg, sizeof(e->msg), "%s%s%s", what, *what ? ": " : "", m);
    kind = classify(e, res);
    PQclear(res);
    return kind;
}

/* Runs one statement with n values from memory that outlives the call;
 * *rows (may be NULL) gets the result for the caller to read and clear.
 * Returns PG_OK, PG_FAIL_GROUP or PG_FAIL_DB with the message in e->msg. */
static int exec_rows_fmt(tf_engine_t *e, const char *sql,
                         const tf_sqlval_t *v, size_t n, PGresult **rows,
                         int resfmt)
{
    const char *vals[MAX_PARAMS];
    int lens[MAX_PARAMS], fmts[MAX_PARAMS];
    char nums[MAX_PARAMS][24];
    char name[16];
    pstmt_t *slot = e->cap ? slot_of(e->stmts, e->cap, sql) : NULL;
    PGresult *res;

    if (n > MAX_PARAMS) {
        fmt_trunc(e->msg, sizeof(e->msg), "%zu values (at most %d)", n,
                  MAX_PARAMS);
        return PG_FAIL_GROUP;
    }
    if (!slot || !slot->sql) {
        char *text = malloc(SQL_MAX);
        Oid types[MAX_PARAMS];
        int np = 0;

        if (!text) {
            fmt_trunc(e->msg, sizeof(e->msg), "out of memory");
            return PG_FAIL_DB;
        }
        if (tf__db_pg_sql(sql, strlen(sql), text, SQL_MAX, &np) != 0) {
            free(text);
            fmt_trunc(e->msg, sizeof(e->msg), "statement too long");
            return PG_FAIL_GROUP;
        }
        if ((size_t)np != n) {
            free(text);
            fmt_trunc(e->msg, sizeof(e->msg),
                      "statement has %d parameters but %zu values were "
                      "given",
                      np, n);
            return PG_FAIL_GROUP;
        }
        for (size_t i = 0; i < n; i++)
            types[i] = v[i].kind == TF_SQL_INT ? 20
                       : v[i].kind == TF_SQL_TEXT ? 25
                       : (v[i].kind == TF_SQL_BLOB ||
                          v[i].kind == TF_SQL_BLOB_OWNED)
                           ? 17
                           : 0;
        if ((e->n + 1) * 2 > e->cap && !stmts_grow(e)) {
            free(text);
            fmt_trunc(e->msg, sizeof(e->msg), "out of memory");
            return PG_FAIL_DB;
        }
        unsigned id = ++e->next_id;
        snprintf(name, sizeof(name), "tf%u", id);
        res = PQprepare(e->w, name, text, (int)n, types);
        free(text);
        if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
            return fail_with(e, res, "prepare");
        PQclear(res);
        slot = slot_of(e->stmts, e->cap, sql);
        slot->sql = sql;
        slot->id = id;
        slot->nparams = np;
        e->n++;
    }
    if ((size_t)slot->nparams != n) {
        fmt_trunc(e->msg, sizeof(e->msg),
                  "statement has %d parameters but %zu values were given",
                  slot->nparams, n);
        return PG_FAIL_GROUP;
    }
    for (size_t i = 0; i < n; i++) {
        vals[i] = NULL;
        lens[i] = 0;
        fmts[i] = 0;
        switch (v[i].kind) {
        case TF_SQL_INT:
            snprintf(nums[i], sizeof(nums[i]), "%" PRId64, v[i].i);
            vals[i] = nums[i];
            break;
        case TF_SQL_TEXT:
            vals[i] = v[i].p;
            break;
        case TF_SQL_BLOB:
        case TF_SQL_BLOB_OWNED:
            if (v[i].n > INT_MAX) {
                fmt_trunc(e->msg, sizeof(e->msg), "value too big");
                return PG_FAIL_GROUP;
            }
            vals[i] = v[i].p ? v[i].p : "";
            lens[i] = (int)v[i].n;
            fmts[i] = 1;
            break;
        default:
            break;
        }
    }
    snprintf(name, sizeof(name), "tf%u", slot->id);
    res = PQexecPrepared(e->w, name, (int)n, vals, lens, fmts, resfmt);
    if (!res || (PQresultStatus(res) != PGRES_COMMAND_OK &&
                 PQresultStatus(res) != PGRES_TUPLES_OK))
        return fail_with(e, res, "");
    e->changes = strtoll(PQcmdTuples(res), NULL, 10);
    if (rows)
        *rows = res;
    else
        PQclear(res);
    return PG_OK;
}

static int exec_rows(tf_engine_t *e, const char *sql, const tf_sqlval_t *v,
                     size_t n, PGresult **rows)
{
    return exec_rows_fmt(e, sql, v, n, rows, 0);
}

/* Runs a statement that returns at most one row of integers into out[n]
 * (no row: *found false). */
static int query_ints(tf_engine_t *e, const char *sql, const tf_sqlval_t *v,
                      size_t nv, int64_t *out, size_t n, bool *found)
{
    PGresult *res = NULL;
    int r = exec_rows(e, sql, v, nv, &res);

    *found = false;
    if (r != PG_OK)
        return r;
    if (PQntuples(res) > 0 && (size_t)PQnfields(res) >= n) {
        *found = true;
        for (size_t i = 0; i < n; i++)
            out[i] = PQgetisnull(res, 0, (int)i)
                         ? 0
                         : strtoll(PQgetvalue(res, 0, (int)i), NULL, 10);
    }
    PQclear(res);
    return PG_OK;
}

static int exec(tf_engine_t *e, const char *sql, const tf_sqlval_t *v,
                size_t n)
{
    return exec_rows(e, sql, v, n, NULL);
}

/* Runs a control statement (BEGIN, SAVEPOINT, ...) unprepared. */
static int ctl(tf_engine_t *e, const char *sql)
{
    PGresult *res = PQexec(e->w, sql);

    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        return fail_with(e, res, sql);
    PQclear(res);
    return PG_OK;
}

#define I(x) tf_sql_int((int64_t)(x))
#define T(x) tf_sql_text(x)

#define EXEC(sql, ...)                                                         \
    do {                                                                       \
        tf_sqlval_t v_[] = {__VA_ARGS__};                                      \
        int r_ = exec(e, sql, v_, sizeof(v_) / sizeof(v_[0]));                 \
        if (r_ != PG_OK)                                                       \
            return r_;                                                         \
    } while (0)

/* Runs the statement a builder of store/writes.h fills. */
#define EXEC_W(builder, ...) TF__WRITES_EXEC(e, exec, builder, __VA_ARGS__)

/* ------------------------------------------------------------------ */
/* Writer: the operations                                              */
/* ------------------------------------------------------------------ */

/* The statements PostgreSQL's dialect writes its own way (store/writes.c
 * has those both engines share, store/sqlite.c sqlite's own). */
static const char SQL_SLAVE_CONNECTED[] =
    "INSERT INTO slaves(name, connected, platform, version, tags, "
    "first_seen_ms, last_seen_ms, connected_ms) "
    "VALUES(?1, 1, ?2, ?3, ?4, ?5, ?5, ?5) "
    "ON CONFLICT(name) DO UPDATE SET connected = 1, platform = ?2, "
    "version = ?3, tags = ?4, "
    "first_seen_ms = coalesce(slaves.first_seen_ms, ?5), "
    "last_seen_ms = ?5, connected_ms = ?5, last_error = NULL, draining = 0";
/* Shared masters: which master a slave is connected to (a table only
 * shared masters make, beside tf_ids): when a master stops beating, the
 * others mark its slaves disconnected. */
static const char SQL_SLAVE_MASTER[] =
    "INSERT INTO tf_slave_master(slave, master) VALUES(?1, ?2) "
    "ON CONFLICT(slave) DO UPDATE SET master = ?2";

static const char SQL_REQUEST_CHANGE[] =
    "INSERT INTO request_changes(request_id, change_id) VALUES(?1, ?2) "
    "ON CONFLICT DO NOTHING";
static const char SQL_REQUEST_COLLAPSE_CHANGES[] =
    "INSERT INTO request_changes(request_id, change_id) "
    "SELECT ?1, change_id FROM request_changes WHERE request_id = ?2 "
    "ON CONFLICT DO NOTHING";
/* Shared masters: the statements of tf__writes_request_end, only from
 * the state this master expects the request in. Another master may have claimed, cancelled or ended it
 * since this one read it; under READ COMMITTED an UPDATE that waited for
 * that master's transaction checks the state again after it commits. */
#define FROM_QUEUE " AND state = 'pending'"
#define FROM_OPEN " AND state IN ('pending', 'running')"
static const char SQL_REQUEST_REQUEUE_OPEN[] =
    "UPDATE build_requests SET state = 'pending', retries = ?1, "
    "build_id = NULL WHERE id = ?2" FROM_OPEN;
static const char SQL_REQUEST_COLLAPSE_QUEUED[] =
    "UPDATE build_requests SET state = 'collapsed', collapsed_into = ?1, "
    "finished_ms = ?2 WHERE id = ?3" FROM_QUEUE;
static const char SQL_REQUEST_CANCEL_QUEUED[] =
    "UPDATE build_requests SET state = 'cancelled', result = ?1, "
    "finished_ms = ?2 WHERE id = ?3" FROM_QUEUE;
static const char SQL_REQUEST_DONE_OPEN[] =
    "UPDATE build_requests SET state = 'done', result = ?1, "
    "finished_ms = ?2 WHERE id = ?3" FROM_OPEN;
static const char SQL_REQUEST_REUSED_QUEUED[] =
    "UPDATE build_requests SET state = 'done', result = 0, build_id = ?1, "
    "reused = 1, started_ms = ?2, finished_ms = ?2 WHERE id = ?3" FROM_QUEUE;

static const char SQL_BUILD_CREATE[] =
    "INSERT INTO builds(id, builder, number, request_id, slave, state, "
    "created_ms, nsteps, properties, reason, repository, branch, revision, "
    "recipe, owner, kind) "
    "VALUES(?1, ?2, ?3, ?4, ?5, 'starting', ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
    "?13, ?14, "
    "coalesce(?15, (SELECT CASE WHEN job_id IS NOT NULL OR patch_sha256 IS "
    "NOT NULL THEN 'try' ELSE 'ci' END FROM build_requests WHERE id = ?4), "
    "'ci'))";
static const char SQL_BUILD_CHANGES[] =
    "INSERT INTO build_changes(build_id, change_id) "
    "SELECT ?1, change_id FROM request_changes WHERE request_id = ?2 "
    "ON CONFLICT DO NOTHING";
/* A chunk and its step's counters in one statement (one round trip). */
static const char SQL_OUTPUT[] =
    "WITH chunk AS (INSERT INTO log_chunks(build_id, step, offset, seq, "
    "stream, line, data) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)) "
    "UPDATE steps SET log_bytes = ?8, log_lines = ?9 "
    "WHERE build_id = ?1 AND idx = ?2 RETURNING log_sealed";
/* Sealing (store/logblock.h), as store/sqlite.c does it. The tail read
 * stops at the chunks a block can take (?4: from + the target), so a
 * long unsealed tail is not fetched whole for each block. */
static const char SQL_LOG_TAIL[] =
    "SELECT offset, line, data FROM log_chunks "
    "WHERE build_id = ?1 AND step = ?2 AND offset >= ?3 AND offset < ?4 "
    "ORDER BY offset";
static const char SQL_BUILD_PROP[] =
    "UPDATE builds SET properties = jsonb_set(properties::jsonb, "
    "ARRAY[?1::text], to_jsonb(?2::text))::text WHERE id = ?3";
static const char SQL_STAT[] =
    "INSERT INTO stats(builder, build_id, step, name, value) "
    "VALUES(?1, ?2, ?3, ?4, CAST(?5 AS DOUBLE PRECISION)) "
    "ON CONFLICT(build_id, step, name) DO UPDATE SET "
    "builder = excluded.builder, value = excluded.value";
/* Shared masters end only the builds they own (builds.owner, ?5). */
static const char SQL_BUILD_FINISH_OWNED[] =
    "UPDATE builds SET state = 'finished', result = ?1, finished_ms = ?2, "
    "text = ?3, started_ms = coalesce(started_ms, ?2) WHERE id = ?4 "
    "AND owner = ?5 AND state <> 'finished'";
/* A shared master takes a build over from the owner it read with it. */
static const char SQL_BUILD_ADOPT[] =
    "UPDATE builds SET owner = ?1 WHERE id = ?2 AND owner = ?3 "
    "AND state <> 'finished'";
static const char SQL_CANCEL_BUILD[] =
    "UPDATE builds SET cancel_requested = ?1 WHERE id = ?2 "
    "AND state <> 'finished'";
static const char SQL_CANCEL_JOB[] =
    "UPDATE try_jobs SET cancel_requested = ?1 WHERE id = ?2 "
    "AND state NOT IN ('finished', 'cancelled')";
static const char SQL_CANCEL_JOB_BUILDS[] =
    "UPDATE builds SET cancel_requested = coalesce(cancel_requested, ?1) "
    "WHERE state <> 'finished' AND request_id IN "
    "(SELECT id FROM build_requests WHERE job_id = ?2)";

/* The mail rules of store/mail.c in PostgreSQL's dialect (its CASE does
 * not mix booleans and integers, json_array is json_build_array). */
static const char SQL_MAIL_JOB[] =
    "INSERT INTO mail_outbox(kind, ref_id, recipients, state, created_ms, "
    "next_attempt_ms) SELECT 'job', id, "
    "json_build_array(coalesce(notify_email, email))::text, 'pending', ?2, "
    "?2 FROM try_jobs WHERE id = ?1 AND notify = 1 AND NOT EXISTS (SELECT 1 "
    "FROM mail_outbox WHERE kind = 'job' AND ref_id = ?1)";
static const char SQL_MAIL_BUILD[] =
    "INSERT INTO mail_outbox(kind, ref_id, recipients, state, created_ms, "
    "next_attempt_ms) SELECT 'build', ?1, ?5, 'pending', ?6, ?6 FROM "
    "(SELECT (SELECT b.result FROM builds b JOIN build_requests r ON "
    "r.id = b.request_id WHERE b.builder = ?2 AND b.id < ?1 AND "
    "b.state = 'finished' AND r.job_id IS NULL AND "
    "b.result IN (0, 1, 2, 4) ORDER BY b.id DESC LIMIT 1) AS prev) AS p "
    "WHERE CASE ?4 "
    "WHEN 4 THEN true "
    "WHEN 1 THEN ?3 IN (2, 4) "
    "WHEN 2 THEN ?3 IN (2, 4) AND prev IN (0, 1) "
    "WHEN 3 THEN ?3 IN (0, 1, 2, 4) AND prev IS NOT NULL AND "
    "  (?3 IN (2, 4)) <> (prev IN (2, 4)) "
    "ELSE false END "
    "AND NOT EXISTS (SELECT 1 FROM mail_outbox WHERE kind = 'build' AND "
    "ref_id = ?1)";

static int op_request_create(tf_engine_t *e,
                             const tf_op_request_create_t *o)
{
    EXEC_W(tf__writes_request_create, o);
    for (size_t i = 0; i < o->nchanges; i++)
        EXEC(SQL_REQUEST_CHANGE, I(o->id), I(o->changes[i]));
    return PG_OK;
}

/* A shared master's request UPDATE that found the request in another
 * state than it expected: another master claimed, cancelled or ended it.
 * The group fails like a lost claim (TF_ESTATE); the master drops its
 * copy and reads the queue again. */
static int request_moved(tf_engine_t *e, const char *what, uint64_t id)
{
    fmt_trunc(e->msg, sizeof(e->msg),
              "request %" PRIu64 " is not %s here any more: another master "
              "claimed, cancelled or ended it", id, what);
    return PG_FAIL_CLAIM;
}

/* A shared master's form of kind's statement (tf__writes_request_end,
 * same values), and in *what the state it expects the request in. */
static const char *request_guarded(tf_op_kind_t kind, const char **what)
{
    switch (kind) {
    case TF_OP_REQUEST_REQUEUE:
        *what = "pending or running";
        return SQL_REQUEST_REQUEUE_OPEN;
    case TF_OP_REQUEST_COLLAPSE:
        *what = "pending";
        return SQL_REQUEST_COLLAPSE_QUEUED;
    case TF_OP_REQUEST_CANCEL:
        *what = "pending";
        return SQL_REQUEST_CANCEL_QUEUED;
    case TF_OP_REQUEST_REUSED:
        *what = "pending";
        return SQL_REQUEST_REUSED_QUEUED;
    default:
        *what = "pending or running";
        return SQL_REQUEST_DONE_OPEN;
    }
}

static int op_request_end(tf_engine_t *e, tf_op_kind_t kind,
                          const tf_op_request_end_t *o)
{
    tf_sqlstmt_t st;
    tf_sqlval_t v[TF_WRITES_MAX_VALS];
    const char *what = "";
    int r;

    tf__writes_request_end(&st, v, kind, o);
    if (e->shared)
        st.sql = request_guarded(kind, &what);
    r = exec(e, st.sql, st.vals, st.nvals);
    if (r != PG_OK)
        return r;
    if (e->shared && e->changes != 1) {
        if (kind != TF_OP_REQUEST_COLLAPSE)
            return request_moved(e, what, o->id);
        /* Not fatal: the newer request is stored and queued all the same,
         * and the older one runs (or ended) where another master has it;
         * its changes are in the newer one's blamelist twice at worst. */
        tf_info(SUB, "request %" PRIu64 " was not collapsed into %" PRIu64
                ": another master claimed or ended it first", o->id,
                o->into);
    }
    if (kind == TF_OP_REQUEST_COLLAPSE)
        EXEC(SQL_REQUEST_COLLAPSE_CHANGES, I(o->into), I(o->id));
    return PG_OK;
}

/* A shared master's claim (file comment): the request moves to running
 * for this build only if it is pending and no other transaction holds
 * its row; else the group fails with PG_FAIL_CLAIM. */
static const char SQL_BUILD_REQUEST_CLAIM[] =
    "UPDATE build_requests SET state = 'running', build_id = ?1, "
    "started_ms = coalesce(started_ms, ?2) WHERE id = (SELECT id FROM "
    "build_requests WHERE id = ?3 AND state = 'pending' FOR UPDATE SKIP "
    "LOCKED)";

static int op_build_create(tf_engine_t *e, const tf_op_build_create_t *o)
{
    tf_sqlstmt_t st[TF_WRITES_MAX_STMTS];
    tf_sqlval_t v[TF_WRITES_MAX_VALS];

    e->batch_claims = true;
    if (e->shared) {
        EXEC(SQL_BUILD_REQUEST_CLAIM, I(o->id), I(o->created_ms),
             I(o->request_id));
        if (e->changes != 1) {
            fmt_trunc(e->msg, sizeof(e->msg),
                      "request %" PRIu64 " is not pending here: another "
                      "master claimed it", o->request_id);
            return PG_FAIL_CLAIM;
        }
    }
    EXEC(SQL_BUILD_CREATE, I(o->id), T(o->builder), I(o->number),
         I(o->request_id), T(o->slave), I(o->created_ms), I(o->nsteps),
         T(o->properties), T(o->reason), T(o->repository), T(o->branch),
         T(o->revision), T(o->recipe), T(e->owner), T(o->kind));
    for (size_t i = 0; i < o->nsteps; i++)
        EXEC_W(tf__writes_build_step, o, i);
    EXEC(SQL_BUILD_CHANGES, I(o->id), I(o->request_id));
    return tf__writes_run(e, exec, st, tf__writes_build_started(st, v, o));
}

/* The event chain (store.h, tf_op_build_seq): nothing after a hole. */
static int op_build_seq(tf_engine_t *e, const tf_op_build_seq_t *o)
{
    EXEC(tf__sql_build_seq, I(o->seq), I(o->build_id), I(o->seq - 1));
    if (e->changes != 1) {
        fmt_trunc(e->msg, sizeof(e->msg),
                  "build %" PRIu64 ": event %" PRIu64 " does not follow the "
                  "last stored event (an earlier one was not stored)",
                  o->build_id, o->seq);
        return PG_FAIL_GROUP;
    }
    return PG_OK;
}

/* ---- Log blocks (store/logblock.h), as store/sqlite.c seals them ----
 *
 * The open tail of a step's log is its chunks from log_sealed on. Sealing
 * takes whole chunks from there, at least TF_LOGBLOCK_TARGET bytes when
 * the tail has them, packs them into one block, stores it and drops the
 * chunks, and moves log_sealed past them, inside the transaction of the
 * group that caused it, so readers see either the chunks or the block. */

/* A BIGINT column of a binary result. */
static int64_t bin_int64(const PGresult *res, int row, int col)
{
    const unsigned char *p = (const unsigned char *)PQgetvalue(res, row, col);
    uint64_t v = 0;

    if (PQgetlength(res, row, col) != 8)
        return -1;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return (int64_t)v;
}

/* Makes room for n bytes in the sealing buffer. */
static bool seal_room(tf_engine_t *e, size_t n)
{
    if (n <= e->sealcap)
        return true;
    size_t cap = e->sealcap ? e->sealcap : TF_LOGBLOCK_TARGET * 2;
    while (cap < n)
        cap *= 2;
    unsigned char *b = realloc(e->sealbuf, cap);
    if (!b)
        return false;
    e->sealbuf = b;
    e->sealcap = cap;
    return true;
}

/* Seals one block of the tail of (build_id, step) from byte `from`: the
 * chunks from there, until they hold TF_LOGBLOCK_TARGET bytes or run out
 * (or a hole, which is left as it is). *to gets the new log_sealed (from
 * when nothing was sealed). */
static int seal_block(tf_engine_t *e, uint64_t build_id, unsigned step,
                      uint64_t from, uint64_t *to)
{
    PGresult *res = NULL;
    uint64_t pos = from, line = 0;
    size_t n = 0;
    tf_sqlval_t v[] = {I(build_id), I(step), I(from),
                       I(from + TF_LOGBLOCK_TARGET)};
    int r = exec_rows_fmt(e, SQL_LOG_TAIL, v, 4, &res, 1);

    *to = from;
    if (r != PG_OK)
        return r;
    for (int i = 0; i < PQntuples(res) && n < TF_LOGBLOCK_TARGET; i++) {
        uint64_t off = (uint64_t)bin_int64(res, i, 0);
        size_t len = (size_t)PQgetlength(res, i, 2);
        if (off != pos || n + len > TF_LOGBLOCK_MAX)
            break; /* a hole, or a block would grow past its cap */
        if (n == 0)
            line = (uint64_t)bin_int64(res, i, 1);
        if (!seal_room(e, n + len)) {
            PQclear(res);
            fmt_trunc(e->msg, sizeof(e->msg), "out of memory sealing a log");
            return PG_FAIL_DB;
        }
        if (len)
            memcpy(e->sealbuf + n, PQgetvalue(res, i, 2), len);
        n += len;
        pos += len;
    }
    PQclear(res);
    if (n == 0)
        return PG_OK;
    if (!e->packer && !(e->packer = tf_logpacker_new())) {
        fmt_trunc(e->msg, sizeof(e->msg), "out of memory sealing a log");
        return PG_FAIL_DB;
    }
    const void *blob;
    size_t blen;
    int codec;
    int rc = tf_logblock_pack(e->packer, e->sealbuf, n, &blob, &blen, &codec);
    if (rc != 0) {
        fmt_trunc(e->msg, sizeof(e->msg), "packing a log block: %s",
                  tf_strerror(rc));
        return rc == TF_ENOMEM ? PG_FAIL_DB : PG_FAIL_GROUP;
    }
    EXEC(tf__sql_log_block_put, I(build_id), I(step), I(from), I(line), I(n),
         I(codec), tf_sql_blob(blob, blen));
    EXEC(tf__sql_log_tail_drop, I(build_id), I(step), I(from), I(pos));
    EXEC(tf__sql_log_sealed, I(pos), I(build_id), I(step));
    *to = pos;
    return PG_OK;
}

/* Seals the whole tail of a step that ended. */
static int seal_rest(tf_engine_t *e, uint64_t build_id, unsigned step)
{
    int64_t v[2];
    bool found;
    int r = query_ints(e, tf__sql_log_step, (tf_sqlval_t[]){I(build_id),
                       I(step)}, 2, v, 2, &found);
    if (r != PG_OK || !found)
        return r;
    uint64_t sealed = (uint64_t)v[0], bytes = (uint64_t)v[1];
    while (sealed < bytes) {
        uint64_t to;
        r = seal_block(e, build_id, step, sealed, &to);
        if (r != PG_OK || to == sealed)
            return r; /* done, or a hole that stays a tail */
        sealed = to;
    }
    return PG_OK;
}

static int op_output(tf_engine_t *e, const tf_op_output_t *o)
{
    int64_t sealed;
    bool found;
    uint64_t to;
    tf_sqlval_t v[] = {I(o->build_id), I(o->step), I(o->offset), I(o->seq),
                       I(o->stream), I(o->line), tf_sql_blob(o->data, o->len),
                       I(o->log_bytes), I(o->log_lines)};
    int r = query_ints(e, SQL_OUTPUT, v, 9, &sealed, 1, &found);

    if (r != PG_OK || !found)
        return r;
    if (o->log_bytes - (uint64_t)sealed >= TF_LOGBLOCK_TARGET)
        return seal_block(e, o->build_id, o->step, (uint64_t)sealed, &to);
    return PG_OK;
}

static int op_step_finish(tf_engine_t *e, const tf_op_step_finish_t *o)
{
    EXEC_W(tf__writes_step_finish, o);
    return seal_rest(e, o->build_id, o->step);
}

static int op_test_result(tf_engine_t *e, const tf_op_test_result_t *o)
{
    const char *status = o->status;

    if (strcmp(status, "pass") == 0) {
        EXEC(tf__sql_test_flaky, I(o->build_id), T(o->suite), T(o->name));
        if (e->changes > 0)
            status = "flaky";
    }
    EXEC_W(tf__writes_test_result, o, status);
    return PG_OK;
}

static int op_build_prop(tf_engine_t *e, const tf_op_build_prop_t *o)
{
    EXEC(SQL_BUILD_PROP, T(o->key ? o->key : ""), T(o->value),
         I(o->build_id));
    if (o->key && strcmp(o->key, "got_revision") == 0)
        EXEC(tf__sql_build_got_revision, T(o->value), I(o->build_id));
    return PG_OK;
}

static int op_stat(tf_engine_t *e, const tf_op_stat_t *o)
{
    char num[40];

    /* As text, exactly (%.17g round-trips a double). */
    snprintf(num, sizeof(num), "%.17g", o->value);
    EXEC(SQL_STAT, T(o->builder), I(o->build_id), I(o->step), T(o->name),
         T(num));
    return PG_OK;
}

static int op_build_finish(tf_engine_t *e, const tf_op_build_finish_t *o)
{
    tf_sqlstmt_t st[TF_WRITES_MAX_STMTS];
    tf_sqlval_t v[TF_WRITES_MAX_VALS];

    e->batch_ends = true;
    if (e->shared) {
        EXEC(SQL_BUILD_FINISH_OWNED, I(o->result), I(o->time_ms),
             T(o->text), I(o->build_id), T(e->owner));
        if (e->changes != 1) {
            fmt_trunc(e->msg, sizeof(e->msg),
                      "build %" PRIu64 " is not this master's to end: "
                      "another master took it over or ended it",
                      o->build_id);
            return PG_FAIL_CLAIM;
        }
    } else {
        EXEC(tf__sql_build_finish, I(o->result), I(o->time_ms), T(o->text),
             I(o->build_id));
    }
    return tf__writes_run(e, exec, st, tf__writes_build_finish_rest(st, v, o));
}

/* tf_op_build_adopt (store.h): from the owner read to this master. */
static int op_build_adopt(tf_engine_t *e, const tf_op_build_adopt_t *o)
{
    const char *from = o->from ? o->from : e->owner;

    if (!e->shared)
        return PG_OK;
    EXEC(SQL_BUILD_ADOPT, T(e->owner), I(o->build_id), T(from));
    if (e->changes != 1 && !o->from) {
        fmt_trunc(e->msg, sizeof(e->msg),
                  "build %" PRIu64 " is not this master's any more: another "
                  "master took it over or ended it", o->build_id);
        return PG_FAIL_CLAIM;
    }
    if (e->changes != 1) {
        fmt_trunc(e->msg, sizeof(e->msg),
                  "build %" PRIu64 " was not taken over: another master "
                  "owns it by now (it was %s's) or it has ended",
                  o->build_id, from[0] ? from : "nobody");
        return PG_FAIL_CLAIM;
    }
    return PG_OK;
}

/* tf_op_cancel_mark (store.h): the mark, or TF_ESTATE when what it is
 * for has ended. */
static int op_cancel_mark(tf_engine_t *e, const tf_op_cancel_mark_t *o)
{
    uint64_t id = o->build_id ? o->build_id : o->job_id;

    EXEC(o->build_id ? SQL_CANCEL_BUILD : SQL_CANCEL_JOB, T(o->why), I(id));
    if (e->changes != 1 && e->shared) {
        fmt_trunc(e->msg, sizeof(e->msg), "%s %" PRIu64 " has ended: its "
                  "cancel is not stored", o->build_id ? "build" : "job", id);
        return PG_FAIL_CLAIM;
    }
    if (!o->build_id)
        EXEC(SQL_CANCEL_JOB_BUILDS, T(o->why), I(id));
    return PG_OK;
}

static const char SQL_JOB_LOCK[] =
    "SELECT CASE WHEN state IN ('finished', 'cancelled') THEN 1 ELSE 0 END, "
    "CASE WHEN cancel_requested IS NOT NULL THEN 1 ELSE 0 END "
    "FROM try_jobs WHERE id = ?1 FOR UPDATE";
static const char SQL_JOB_REQUESTS[] =
    "SELECT CASE WHEN state IN ('pending', 'running') THEN 1 ELSE 0 END, "
    "CASE WHEN state = 'cancelled' THEN 1 ELSE 0 END, coalesce(result, -1) "
    "FROM build_requests WHERE job_id = ?1";

/* tf_op_job_settle (store.h). The lock comes first: a master ending the
 * job's other last request waits here for this one's commit, and its
 * next statement (READ COMMITTED) sees this request ended. A job whose
 * cancel was stored (tf_op_cancel_mark) ends cancelled, as one master's
 * does (core/jobs.c), even when no request of it was cancelled before
 * it ran. */
static int op_job_settle(tf_engine_t *e, const tf_op_job_end_t *o)
{
    tf_sqlval_t v[] = {I(o->id)};
    int64_t lock[2] = {0, 0};
    bool found = false, cancelled = false, any = false;
    tf_result_t worst = TF_SUCCESS;
    PGresult *res = NULL;
    int r = query_ints(e, SQL_JOB_LOCK, v, 1, lock, 2, &found);

    if (r != PG_OK || !found || lock[0])
        return r;
    cancelled = lock[1] != 0;
    r = exec_rows(e, SQL_JOB_REQUESTS, v, 1, &res);
    if (r != PG_OK)
        return r;
    for (int i = 0; i < PQntuples(res); i++) {
        if (strcmp(PQgetvalue(res, i, 0), "1") == 0) {
            PQclear(res);
            return PG_OK; /* one is still to end */
        }
        cancelled |= strcmp(PQgetvalue(res, i, 1), "1") == 0;
        long long x = strtoll(PQgetvalue(res, i, 2), NULL, 10);
        if (x >= 0) {
            worst = any ? tf_result_worst(worst, (tf_result_t)x)
                        : (tf_result_t)x;
            any = true;
        }
    }
    PQclear(res);
    EXEC(tf__sql_job_finish, T(cancelled ? "cancelled" : "finished"),
         I(worst), I(o->time_ms), I(o->id));
    if (o->mail)
        EXEC(SQL_MAIL_JOB, I(o->id), I(o->time_ms));
    tf_info(SUB, "job %" PRIu64 " %s: %s", o->id,
            cancelled ? "cancelled" : "finished", tf_result_name(worst));
    return PG_OK;
}

static int op_job(tf_engine_t *e, const tf_op_t *op)
{
    switch (op->kind) {
    case TF_OP_MAIL_JOB:
        e->notify_mail = true;
        EXEC(SQL_MAIL_JOB, I(op->u.mail_job.job_id),
             I(op->u.mail_job.time_ms));
        break;
    case TF_OP_JOB_SETTLE:
        e->notify_mail |= op->u.job_end.mail;
        return op_job_settle(e, &op->u.job_end);
    case TF_OP_MAIL_BUILD: {
        e->notify_mail = true;
        const tf_op_mail_build_t *o = &op->u.mail_build;
        EXEC(SQL_MAIL_BUILD, I(o->build_id), T(o->builder), I(o->result),
             I(o->mode), T(o->recipients_json), I(o->time_ms));
        break;
    }
    case TF_OP_USER_ADD:
    case TF_OP_USER_REMOVE:
        EXEC_W(tf__writes_user, op->kind, &op->u.user);
        if (op->u.user.changed)
            *op->u.user.changed = e->changes > 0;
        break;
    default:
        fmt_trunc(e->msg, sizeof(e->msg), "unknown operation %d", op->kind);
        return PG_FAIL_GROUP;
    }
    return PG_OK;
}

static int op_changes_record(tf_engine_t *e,
                             const tf_op_changes_record_t *o)
{
    for (size_t i = 0; i < o->n; i++) {
        const tf_change_rec_t *c = &o->changes[i];
        PGresult *res = NULL;
        int r;

        EXEC_W(tf__writes_change_insert, o, i);
        if (o->fresh_out)
            o->fresh_out[i] = e->changes == 1;
        tf_sqlval_t v[] = {T(o->repository), T(o->branch), T(c->revision)};
        r = exec_rows(e, tf__sql_change_id, v, 3, &res);
        if (r != PG_OK)
            return r;
        if (PQntuples(res) != 1) {
            PQclear(res);
            fmt_trunc(e->msg, sizeof(e->msg),
                      "change id: not found after its insert");
            return PG_FAIL_GROUP;
        }
        if (o->ids_out)
            o->ids_out[i] = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
    }
    EXEC(tf__sql_poller_head, T(o->repository), T(o->branch), T(o->head),
         I(o->time_ms));
    return PG_OK;
}

static int op_apply(tf_engine_t *e, const tf_op_t *op)
{
    tf_sqlstmt_t st[TF_WRITES_MAX_STMTS];
    tf_sqlval_t v[TF_WRITES_MAX_VALS];
    size_t n = tf__writes_op(op, st, v);

    if (n > 0)
        return tf__writes_run(e, exec, st, n);
    switch (op->kind) {
    case TF_OP_SLAVE_CONNECTED: {
        const tf_op_slave_connected_t *o = &op->u.slave_connected;
        EXEC(SQL_SLAVE_CONNECTED, T(o->name), T(o->platform), T(o->version),
             T(o->tags_json), I(o->time_ms));
        if (e->shared)
            EXEC(SQL_SLAVE_MASTER, T(o->name), T(e->me));
        return PG_OK;
    }
    case TF_OP_REQUEST_CREATE:
        e->notify = true;
        return op_request_create(e, &op->u.request_create);
    case TF_OP_REQUEST_REQUEUE:
        e->notify = true;
        return op_request_end(e, op->kind, &op->u.request_end);
    case TF_OP_REQUEST_COLLAPSE:
    case TF_OP_REQUEST_CANCEL:
    case TF_OP_REQUEST_DONE:
    case TF_OP_REQUEST_REUSED:
        return op_request_end(e, op->kind, &op->u.request_end);
    case TF_OP_BUILD_CREATE:
        return op_build_create(e, &op->u.build_create);
    case TF_OP_BUILD_SEQ:
        return op_build_seq(e, &op->u.build_seq);
    case TF_OP_OUTPUT:
        return op_output(e, &op->u.output);
    case TF_OP_STEP_FINISH:
        return op_step_finish(e, &op->u.step_finish);
    case TF_OP_BUILD_PROP:
        return op_build_prop(e, &op->u.build_prop);
    case TF_OP_STAT:
        return op_stat(e, &op->u.stat);
    case TF_OP_STEP_FORCE_END: {
        const tf_op_step_force_end_t *o = &op->u.step_force_end;
        EXEC_W(tf__writes_step_force_end, o);
        return seal_rest(e, o->build_id, o->step);
    }
    case TF_OP_TEST_RESULT:
        return op_test_result(e, &op->u.test_result);
    case TF_OP_BUILD_FINISH:
        return op_build_finish(e, &op->u.build_finish);
    case TF_OP_BUILD_ADOPT:
        return op_build_adopt(e, &op->u.build_adopt);
    case TF_OP_CANCEL_MARK:
        return op_cancel_mark(e, &op->u.cancel_mark);
    case TF_OP_CHANGES_RECORD:
        return op_changes_record(e, &op->u.changes_record);
    case TF_OP_SQL:
        return exec(e, op->u.sql.sql, op->u.sql.vals, op->u.sql.nvals);
    case TF_OP_SQL_FN:
        fmt_trunc(e->msg, sizeof(e->msg),
                  "a raw write function (sqlite's API) cannot run on "
                  "PostgreSQL");
        return PG_FAIL_GROUP;
    default:
        return op_job(e, op);
    }
}

/* ------------------------------------------------------------------ */
/* Writer: a batch                                                     */
/* ------------------------------------------------------------------ */

/* Takes the master lock on the write connection. Returns 0, or
 * TF_EEXIST with e->msg naming the master that holds it, or TF_ESTORE. */
static int take_master_lock(tf_engine_t *e)
{
    PGresult *res = PQexec(e->w, e->shared
                                     ? "SELECT pg_try_advisory_lock_shared("
                                       MASTER_LOCK_KEY ")"
                                     : "SELECT pg_try_advisory_lock("
                                       MASTER_LOCK_KEY ")");
    bool got;

    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        fmt_trunc(e->msg, sizeof(e->msg), "taking the master lock: %s",
                  res ? PQresultErrorMessage(res) : PQerrorMessage(e->w));
        PQclear(res);
        return TF_ESTORE;
    }
    got = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (got)
        return 0;
    res = PQexec(e->w, "SELECT a.application_name FROM pg_locks l JOIN "
                       "pg_stat_activity a ON a.pid = l.pid WHERE "
                       "l.locktype = 'advisory' AND l.granted AND "
                       "l.classid = 0 AND l.objid = " MASTER_LOCK_KEY);
    fmt_trunc(e->msg, sizeof(e->msg),
              e->shared ? "a master without store.shared uses this database "
                          "(%s): shared masters run only beside each other"
                        : "another master uses this database (%s): one "
                          "tf-master per database without store.shared",
              res && PQresultStatus(res) == PGRES_TUPLES_OK &&
                      PQntuples(res) > 0
                  ? PQgetvalue(res, 0, 0)
                  : "its name is not visible to this role");
    PQclear(res);
    return TF_EEXIST;
}

#define STANDBY_POLL_US 500000

/* The engine's claim (engine.h): the master lock, held by the write
 * connection from now on. A standby (wait) tries again twice a second,
 * reconnecting when the server went away meanwhile, and logs when it
 * starts and stops waiting. The master holding the lock loses it as soon
 * as PostgreSQL sees its connection close (its process died, or its
 * machine: then when TCP keepalives give up on it). */
static int shared_ids_init(tf_engine_t *e);
static PGconn **reader_acquire(tf_engine_t *e);
static void reader_release(tf_engine_t *e, PGconn **slot);
static bool reader_ready(tf_engine_t *e, PGconn **c);

/* This master's name in builds.owner: host, process and a random part,
 * so a restarted master (same host, maybe the same pid) is a new owner
 * and never ends a build it ran in an earlier life. */
static void owner_name(tf_engine_t *e)
{
    char host[64] = "";

    pthread_once(&proc_tag_once, proc_tag_init);
    if (gethostname(host, sizeof(host) - 1) != 0)
        snprintf(host, sizeof(host), "master");
    fmt_trunc(e->owner, sizeof(e->owner), "%s/%ld/%08x", host,
              (long)getpid(), proc_tag);
    tf_info(SUB, "%s: this master owns the builds it runs as %s", e->shown,
            e->owner);
}

static int claim(tf_engine_t *e, bool wait, bool shared)
{
    bool waited = false;
    int rc;

    e->shared = shared;
    const char *lose = getenv("TF_TEST_PG_LOSE_COMMIT");
    if (lose && *lose) {
        e->lose_commit = strcmp(lose, "claim") == 0 ? 1
                         : strcmp(lose, "end") == 0 ? 2 : 0;
        tf_warn(SUB, "test hook: the answer to the COMMIT of the first "
                "batch that %s a build is lost",
                e->lose_commit == 1 ? "claims" : "ends");
    }
    for (;;) {
        rc = e->w && PQstatus(e->w) == CONNECTION_OK ? take_master_lock(e)
                                                      : TF_ESTORE;
        if (rc == 0 || !wait)
            break;
        if (!waited) {
            tf_warn(SUB, "%s: standby: %s; waiting to take over", e->shown,
                    e->msg);
            waited = true;
        }
        usleep(STANDBY_POLL_US);
        if (!e->w || PQstatus(e->w) != CONNECTION_OK) {
            char why[256];
            if (e->w)
                PQfinish(e->w);
            stmts_clear(e);
            e->w = connect_url(e->url, why, sizeof(why));
        }
    }
    if (rc != 0) {
        tf_error(SUB, "%s: %s", e->shown, e->msg);
        return rc;
    }
    /* The connection that holds the lock now: a standby may have
     * reconnected while it waited, and its own notifications are known
     * by this backend's pid. */
    atomic_store(&e->wpid, PQbackendPID(e->w));
    if (waited)
        tf_warn(SUB, "%s: standby: the other master is gone; taking over "
                "(write connection: backend pid %d)", e->shown,
                atomic_load(&e->wpid));
    e->claimed = true;
    if (shared)
        owner_name(e);
    return shared ? shared_ids_init(e) : 0;
}

/* ---- Several masters (store.shared) ---- */

#define BEAT_US 1000000
/* A beat slower than this, or further than BEAT_GAP_US from the last,
 * restarts this master's count before it judges others (beat). */
#define BEAT_STALL_US (2 * BEAT_US)
#define BEAT_GAP_US (3 * BEAT_US)

static uint64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* A shared master's heartbeat, and the sweep of the dead: a master whose
 * beat is older than the lease timeout (store.lease_timeout_s), and
 * silent that long since the server started (a master starting right
 * after an outage finds every beat old while the others reconnect), has
 * its row removed, its database sessions ended (pg_terminate_backend: its
 * locks, the duty lease among them, go at once, even while its process
 * is frozen or its machine cut off and TCP has not noticed), and the
 * slaves it had marked disconnected, unless another master has them now
 * (tf_slave_master); a NOTIFY tells every master's cache. One statement,
 * on c (the listener's connection, or the writer's at the claim). False
 * when the connection broke. */
static const char SQL_BEAT[] =
    "INSERT INTO tf_masters(name, beat) VALUES($1, now()) "
    "ON CONFLICT(name) DO UPDATE SET beat = now()";
static const char SQL_SWEEP[] =
    "WITH dead AS (DELETE FROM tf_masters WHERE name <> $1 AND "
    "greatest(beat, pg_postmaster_start_time()) < now() - $2::int * "
    "interval '1 second' RETURNING name, "
    "extract(epoch FROM now() - beat)::int AS silent), "
    "gone AS (DELETE FROM tf_slave_master WHERE master IN (SELECT name "
    "FROM dead) RETURNING slave), "
    "off AS (UPDATE slaves SET connected = 0, disconnected_ms = "
    "(extract(epoch FROM now()) * 1000)::bigint WHERE connected <> 0 AND "
    "name IN (SELECT slave FROM gone) RETURNING name), "
    "ended AS (SELECT pg_terminate_backend(a.pid) AS t FROM "
    "pg_stat_activity a WHERE a.application_name IN (SELECT name FROM "
    "dead) AND a.pid <> pg_backend_pid()) "
    "SELECT d.name, d.silent, (SELECT count(*) FROM ended WHERE t), "
    "(SELECT string_agg(name, ' ' ORDER BY name) FROM off), "
    "pg_notify('tf_farm', 'state') FROM dead d";

static bool beat(tf_engine_t *e, PGconn *c, bool at_start)
{
    unsigned lease_s = net_or(tf__engine_net.lease_timeout_s, 15);
    char timeout[16];
    const char *v[2] = {e->me, timeout};
    PGresult *res;
    bool ok;

    snprintf(timeout, sizeof(timeout), "%u", lease_s);
    uint64_t asked_us = mono_us();
    res = PQexecParams(c, SQL_BEAT, 1, NULL, v, NULL, NULL, 0);
    ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        tf_warn(SUB, "%s: writing this master's heartbeat: %s", e->shown,
                res ? PQresultErrorMessage(res) : PQerrorMessage(c));
    PQclear(res);
    if (!ok)
        return PQstatus(c) == CONNECTION_OK;
    uint64_t now_us = mono_us();
    /* A beat that took long, or came long after the last one, says the
     * database (or this process) stalled: the others' beats were held up
     * as long, and a beat stored after a stall carries the time its
     * statement began (now()), so their silence is not theirs. Counted
     * again from here, as after a reconnection. */
    if (!e->beat_since_us || now_us - asked_us > BEAT_STALL_US ||
        (e->beat_at_us && asked_us - e->beat_at_us > BEAT_GAP_US))
        e->beat_since_us = now_us;
    e->beat_at_us = now_us;
    /* Another master's silence counts only once this one has beaten for
     * a whole lease timeout itself: after the database was unreachable
     * for a while every master's beat is old, and each needs a moment to
     * reconnect. */
    if (!at_start &&
        e->beat_at_us - e->beat_since_us < (uint64_t)lease_s * 1000000u)
        return true;
    res = PQexecParams(c, SQL_SWEEP, 2, NULL, v, NULL, NULL, 0);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        tf_warn(SUB, "%s: looking for masters that stopped beating: %s",
                e->shown,
                res ? PQresultErrorMessage(res) : PQerrorMessage(c));
        PQclear(res);
        return PQstatus(c) == CONNECTION_OK;
    }
    for (int i = 0; i < PQntuples(res); i++)
        tf_warn(SUB, "%s: master \"%s\" has not beaten for %s s (lease "
                "timeout %s s): it is taken for dead: %s of its database "
                "sessions ended, slaves marked disconnected: %s", e->shown,
                PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), timeout,
                PQgetvalue(res, i, 2),
                PQgetisnull(res, i, 3) ? "none" : PQgetvalue(res, i, 3));
    PQclear(res);
    return true;
}

/* The id sequence: created by the first shared master, and moved past
 * the ids a master without `shared` (or a migration) gave out since, under
 * the migration lock so two masters starting together agree. It only
 * ever moves forward while a shared master may be taking blocks. */
static int shared_ids_init(tf_engine_t *e)
{
    static const char *const steps[] = {
        "BEGIN",
        "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")",
        "CREATE SEQUENCE IF NOT EXISTS tf_ids INCREMENT BY "
        TF_STORE_ID_BLOCK_STR " MINVALUE 1",
        /* the masters' heartbeats, and whose slave is whose */
        "CREATE TABLE IF NOT EXISTS tf_masters(name TEXT PRIMARY KEY, "
        "beat TIMESTAMPTZ NOT NULL, started TIMESTAMPTZ NOT NULL "
        "DEFAULT now())",
        "CREATE TABLE IF NOT EXISTS tf_slave_master(slave TEXT PRIMARY KEY, "
        "master TEXT NOT NULL)",
        "SELECT setval('tf_ids', m) FROM (SELECT greatest((SELECT "
        "coalesce(max(id), 0) FROM builds), (SELECT coalesce(max(id), 0) "
        "FROM build_requests), (SELECT coalesce(max(id), 0) FROM try_jobs)) "
        "+ 1 AS m) x, tf_ids WHERE m > last_value + " TF_STORE_ID_BLOCK_STR
        " OR (NOT is_called AND m > last_value)",
        "COMMIT",
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        PGresult *res = PQexec(e->w, steps[i]);
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            tf_error(SUB, "%s: preparing the id sequence: %s", e->shown,
                     res ? PQresultErrorMessage(res)
                         : PQerrorMessage(e->w));
            PQclear(res);
            res = PQexec(e->w, "ROLLBACK");
            PQclear(res);
            return TF_ESTORE;
        }
        PQclear(res);
    }
    /* This master beats from now on; masters that stopped beating before
     * it started are swept (their slaves marked disconnected). */
    app_name(e->me, sizeof(e->me));
    if (!beat(e, e->w, true)) {
        tf_error(SUB, "%s: writing this master's heartbeat failed",
                 e->shown);
        return TF_ESTORE;
    }
    /* The first block, taken now (the master is not serving yet): the
     * loop finds it ready. */
    PGresult *res = PQexec(e->w, "SELECT nextval('tf_ids')");
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK ||
        PQntuples(res) != 1) {
        tf_error(SUB, "%s: taking the first block of ids: %s", e->shown,
                 res ? PQresultErrorMessage(res) : PQerrorMessage(e->w));
        PQclear(res);
        return TF_ESTORE;
    }
    e->ids_spare = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return e->ids_spare ? 0 : TF_ESTORE;
}

/* A block of ids from a reader connection, blocking (a master whose
 * listener could not start). One nextval outside any transaction (a
 * sequence is not transactional: a block is never given twice). */
static int reserve_now(tf_engine_t *e, uint64_t *first)
{
    PGconn **c = reader_acquire(e);
    PGresult *res = NULL;
    int rc = TF_ESTORE;

    if (!reader_ready(e, c))
        goto out;
    res = PQexec(*c, "SELECT nextval('tf_ids')");
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK ||
        PQntuples(res) != 1) {
        tf_warn(SUB, "%s: taking a block of ids: %s", e->shown,
                res ? PQresultErrorMessage(res) : PQerrorMessage(*c));
        goto out;
    }
    *first = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    rc = *first ? 0 : TF_ESTORE;
out:
    PQclear(res);
    reader_release(e, c);
    return rc;
}

/* The engine's reserve_ids (engine.h): the block reserved ahead, never
 * waiting for the database; the listener reserves the next one at once.
 * TF_EFULL when none is ready yet (the listener is still reserving it,
 * or cannot reach the database): the caller backs off, and the farm
 * callback says TF_FARM_IDS when one comes. */
static int reserve_ids(tf_engine_t *e, uint64_t *first)
{
    int rc = TF_EFULL;

    if (!e->listening) {
        if (e->ids_spare) {
            *first = e->ids_spare;
            e->ids_spare = 0;
            return 0;
        }
        return reserve_now(e, first);
    }
    pthread_mutex_lock(&e->ev_mu);
    if (e->ids_spare) {
        *first = e->ids_spare;
        e->ids_spare = 0;
        rc = 0;
    } else {
        e->ids_starved = true;
    }
    pthread_mutex_unlock(&e->ev_mu);
    if (write(e->wake[1], "", 1) < 0) {
        /* The pipe is full: the listener is awake already. */
    }
    return rc;
}

/* Reserves the next block of ids when none is ready (listener thread).
 * False when the connection broke. */
static bool fetch_ids(tf_engine_t *e, PGconn *c)
{
    PGresult *res;
    uint64_t first;
    bool need, starved;

    pthread_mutex_lock(&e->ev_mu);
    need = e->ids_spare == 0;
    pthread_mutex_unlock(&e->ev_mu);
    if (!need)
        return true;
    if (e->ids_delay_ms)
        usleep(e->ids_delay_ms * 1000u);
    res = PQexec(c, "SELECT nextval('tf_ids')");
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK ||
        PQntuples(res) != 1) {
        tf_warn(SUB, "%s: reserving the next block of ids: %s", e->shown,
                res ? PQresultErrorMessage(res) : PQerrorMessage(c));
        PQclear(res);
        return PQstatus(c) == CONNECTION_OK;
    }
    first = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    if (!first)
        return true;
    pthread_mutex_lock(&e->ev_mu);
    e->ids_spare = first;
    starved = e->ids_starved;
    e->ids_starved = false;
    pthread_mutex_unlock(&e->ev_mu);
    if (starved && e->farm_cb)
        e->farm_cb(e->farm_arg, TF_FARM_IDS);
    return true;
}

/* Appends a copy of text to a queue (under ev_mu). TF_EFULL past
 * farm_queue_max bytes queued: the event is dropped, counted, and the
 * first drop of a burst logged. */
static int ev_push(tf_engine_t *e, farm_ev_t **head, farm_ev_t **tail,
                   size_t *bytes, const char *text, size_t len)
{
    farm_ev_t *ev;
    int rc = 0;
    bool out_q = head == &e->out_head;

    pthread_mutex_lock(&e->ev_mu);
    if (*bytes + len > e->farm_queue_max) {
        bool *dropping = out_q ? &e->dropping_out : &e->dropping_in;
        atomic_fetch_add(out_q ? &e->ev_dropped_out : &e->ev_dropped_in, 1);
        (*(out_q ? &e->burst_out : &e->burst_in))++;
        if (!*dropping) {
            *dropping = true;
            tf_warn(SUB, "%s: live events %s are dropped: the relay queue "
                    "is full (%zu bytes); a count follows when it has room "
                    "again", e->shown,
                    out_q ? "for the other masters" : "from the other masters",
                    e->farm_queue_max);
        }
        rc = TF_EFULL;
        goto out;
    }
    ev = malloc(sizeof(*ev) + len + 1);
    if (!ev) {
        rc = TF_ENOMEM;
        goto out;
    }
    ev->next = NULL;
    ev->len = len;
    memcpy(ev->text, text, len);
    ev->text[len] = '\0';
    if (*tail)
        (*tail)->next = ev;
    else
        *head = ev;
    *tail = ev;
    *bytes += len;
out:
    pthread_mutex_unlock(&e->ev_mu);
    return rc;
}

/* Takes the first event of a queue (the caller frees it), or NULL. */
static farm_ev_t *ev_pop(tf_engine_t *e, farm_ev_t **head, farm_ev_t **tail,
                         size_t *bytes)
{
    farm_ev_t *ev;
    bool out_q = head == &e->out_head;
    uint64_t ended = 0;

    pthread_mutex_lock(&e->ev_mu);
    ev = *head;
    if (ev) {
        *head = ev->next;
        if (!*head)
            *tail = NULL;
        *bytes -= ev->len;
    }
    /* Drained: a burst of drops, if any, is over. */
    bool *dropping = out_q ? &e->dropping_out : &e->dropping_in;
    uint64_t *burst = out_q ? &e->burst_out : &e->burst_in;
    if (!*head && *dropping) {
        *dropping = false;
        ended = *burst;
        *burst = 0;
    }
    pthread_mutex_unlock(&e->ev_mu);
    if (ended)
        tf_warn(SUB, "%s: %" PRIu64 " live event%s %s dropped in that "
                "burst (the relay queue has room again)", e->shown, ended,
                ended == 1 ? "" : "s",
                out_q ? "for the other masters" : "from the other masters");
    return ev;
}

static void ev_free_all(farm_ev_t *ev)
{
    while (ev) {
        farm_ev_t *next = ev->next;
        free(ev);
        ev = next;
    }
}

/* The engine's farm_send (engine.h): queued for the listener, which
 * sends it with pg_notify (a payload is at most 8000 bytes). */
static int farm_send(tf_engine_t *e, const char *topic, const char *text)
{
    char buf[TF_FARM_EVENT_MAX + 64];
    int n = snprintf(buf, sizeof(buf), "%s\n%s", topic, text);
    int rc;

    if (!e->listening)
        return TF_ESTATE;
    if (n < 0 || (size_t)n >= sizeof(buf) ||
        (size_t)n > TF_FARM_EVENT_MAX)
        return TF_E2BIG;
    if (e->drop_topic[0] && (strcmp(e->drop_topic, "*") == 0 ||
                             strcmp(e->drop_topic, topic) == 0)) {
        /* As a NOTIFY lost on the way: the sender is not told. */
        atomic_fetch_add(&e->ev_dropped_out, 1);
        return 0;
    }
    rc = ev_push(e, &e->out_head, &e->out_tail, &e->out_bytes, buf,
                 (size_t)n);
    if (rc == 0 && write(e->wake[1], "", 1) < 0) {
        /* The pipe is full: the listener is awake already. */
    }
    return rc;
}

static char *farm_take(tf_engine_t *e)
{
    farm_ev_t *ev = ev_pop(e, &e->in_head, &e->in_tail, &e->in_bytes);
    char *text;

    if (!ev)
        return NULL;
    text = strdup(ev->text);
    free(ev);
    return text;
}

/* Sends the queued events (listener thread), batched: "ev:" then as
 * many events as fit in FARM_BATCH_MAX bytes, FARM_SEP between them, per
 * NOTIFY. False when the connection broke. */
static bool send_events(tf_engine_t *e, PGconn *c)
{
    farm_ev_t *ev, *next = NULL;
    char drain[64];
    char batch[FARM_BATCH_MAX + 1];

    while (read(e->wake[0], drain, sizeof(drain)) > 0)
        ;
    for (;;) {
        size_t o = 3, n = 0;
        memcpy(batch, "ev:", 3);
        while ((ev = next ? next
                          : ev_pop(e, &e->out_head, &e->out_tail,
                                   &e->out_bytes)) != NULL) {
            next = NULL;
            if (o + (n ? 1 : 0) + ev->len > FARM_BATCH_MAX) {
                if (n) {
                    next = ev; /* the next batch's first */
                    break;
                }
                free(ev); /* cannot happen: farm_send caps an event */
                atomic_fetch_add(&e->ev_dropped_out, 1);
                continue;
            }
            if (n)
                batch[o++] = FARM_SEP;
            memcpy(batch + o, ev->text, ev->len);
            o += ev->len;
            n++;
            free(ev);
        }
        if (!n)
            return true;
        batch[o] = '\0';
        if (e->relay_delay_ms) { /* the test hook: a relay held once */
            usleep(e->relay_delay_ms * 1000u);
            e->relay_delay_ms = 0;
        }
        const char *v[1] = {batch};
        PGresult *res = PQexecParams(c, "SELECT pg_notify('tf_farm', $1)",
                                     1, NULL, v, NULL, NULL, 0);
        bool ok = res && PQresultStatus(res) == PGRES_TUPLES_OK;
        PQclear(res);
        if (!ok) {
            free(next);
            atomic_fetch_add(&e->ev_dropped_out, n + (next ? 1 : 0));
            return PQstatus(c) == CONNECTION_OK;
        }
        atomic_fetch_add(&e->ev_sent, n);
        atomic_fetch_add(&e->ev_notifies, 1);
    }
}

/* One turn of the listener: the duty lock if it is free, then whatever
 * notifications came. Returns false when the connection broke. */
static bool listen_turn(tf_engine_t *e, PGconn *c, bool *notified,
                        unsigned *what)
{
    PGnotify *n;

    if (!atomic_load(&e->duty)) {
        PGresult *res = PQexec(c, "SELECT pg_try_advisory_lock("
                                  DUTY_LOCK_KEY ")");
        bool got = res && PQresultStatus(res) == PGRES_TUPLES_OK &&
                   strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
            PQclear(res);
            return false;
        }
        PQclear(res);
        if (got) {
            tf_info(SUB, "%s: this master now runs mail, pollers and "
                    "periodic schedulers (the duty lease)", e->shown);
            atomic_store(&e->duty, true);
            *notified = true;
            *what |= TF_FARM_QUEUE | TF_FARM_MAIL | TF_FARM_DUTY;
        }
    }
    if (!PQconsumeInput(c))
        return false;
    while ((n = PQnotifies(c)) != NULL) {
        if (n->extra && strncmp(n->extra, "ev:", 3) == 0) {
            /* a batch: events separated by FARM_SEP */
            const char *p = n->extra + 3;
            while (n->be_pid != PQbackendPID(c) && *p) {
                const char *end = strchr(p, FARM_SEP);
                size_t len = end ? (size_t)(end - p) : strlen(p);
                atomic_fetch_add(&e->ev_received, 1);
                if (len && ev_push(e, &e->in_head, &e->in_tail, &e->in_bytes,
                                   p, len) == 0)
                    *what |= TF_FARM_EVENT, *notified = true;
                p += len + (end ? 1 : 0);
            }
            PQfreemem(n);
            continue;
        }
        if (n->be_pid == atomic_load(&e->wpid)) {
            PQfreemem(n);
            continue;
        }
        *notified = true;
        *what |= TF_FARM_COMMIT; /* every batch of a writer sends one */
        if (n->extra && strcmp(n->extra, "queue") == 0)
            *what |= TF_FARM_QUEUE;
        else if (n->extra && strcmp(n->extra, "mail") == 0)
            *what |= TF_FARM_MAIL;
        PQfreemem(n);
    }
    return PQstatus(c) == CONNECTION_OK;
}

static void *listener_main(void *arg)
{
    tf_engine_t *e = arg;
    PGconn *c = NULL;
    char why[256];

    while (!atomic_load(&e->stop)) {
        bool notified = false;
        unsigned what = 0;
        if (!c) {
            c = connect_url(e->url, why, sizeof(why));
            PGresult *res = c ? PQexec(c, "LISTEN tf_farm") : NULL;
            bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
            PQclear(res);
            if (!ok) {
                if (c)
                    PQfinish(c);
                c = NULL;
                usleep(DUTY_POLL_US);
                continue;
            }
            /* what happened while not listening */
            e->beat_since_us = 0;
            notified = true;
            what = TF_FARM_QUEUE | TF_FARM_MAIL | TF_FARM_COMMIT;
        }
        if (!listen_turn(e, c, &notified, &what)) {
            if (atomic_exchange(&e->duty, false))
                tf_warn(SUB, "%s: the listener lost its connection: this "
                        "master gives up the duty lease", e->shown);
            PQfinish(c);
            c = NULL;
            continue;
        }
        if (notified && e->farm_cb)
            e->farm_cb(e->farm_arg, what);
        if ((mono_us() - e->beat_at_us >= BEAT_US && !beat(e, c, false)) ||
            !fetch_ids(e, c) || !send_events(e, c)) {
            PQfinish(c);
            c = NULL;
            continue;
        }
        int fd = PQsocket(c);
        fd_set rd;
        struct timeval tv = {.tv_sec = 0, .tv_usec = DUTY_POLL_US};
        FD_ZERO(&rd);
        if (fd >= 0 && fd < FD_SETSIZE && e->wake[0] < FD_SETSIZE) {
            FD_SET(fd, &rd);
            FD_SET(e->wake[0], &rd);
            select((fd > e->wake[0] ? fd : e->wake[0]) + 1, &rd, NULL, NULL,
                   &tv);
        } else {
            usleep(DUTY_POLL_US);
        }
    }
    if (c)
        PQfinish(c);
    return NULL;
}

/* The engine's watch (engine.h): starts the listener. */
static int watch(tf_engine_t *e, void (*cb)(void *arg, unsigned what),
                 void *arg)
{
    if (!e->shared)
        return 0;
    e->farm_cb = cb;
    e->farm_arg = arg;
    e->farm_queue_max = FARM_QUEUE_MAX;
    const char *qmax = getenv("TF_TEST_PG_FARM_QUEUE_BYTES");
    if (qmax && *qmax) {
        long b = strtol(qmax, NULL, 10);
        if (b > 0 && b < (long)FARM_QUEUE_MAX)
            e->farm_queue_max = (size_t)b;
        tf_warn(SUB, "test hook: the live relay's queues hold %zu bytes",
                e->farm_queue_max);
    }
    const char *drop = getenv("TF_TEST_PG_DROP_RELAY");
    if (drop && *drop) {
        snprintf(e->drop_topic, sizeof(e->drop_topic), "%s", drop);
        tf_warn(SUB, "test hook: outgoing live events of topic \"%s\" are "
                "dropped (counted in relay.dropped_out)", e->drop_topic);
    }
    const char *delay = getenv("TF_TEST_PG_IDS_DELAY_MS");
    if (delay && *delay) {
        long ms = strtol(delay, NULL, 10);
        e->ids_delay_ms = ms > 0 && ms < 60000 ? (unsigned)ms : 0;
        tf_warn(SUB, "test hook: each block of ids is reserved %u ms late",
                e->ids_delay_ms);
    }
    const char *rdelay = getenv("TF_TEST_PG_RELAY_DELAY_MS");
    if (rdelay && *rdelay) {
        long ms = strtol(rdelay, NULL, 10);
        e->relay_delay_ms = ms > 0 && ms < 60000 ? (unsigned)ms : 0;
        tf_warn(SUB, "test hook: the first NOTIFY of live events is sent "
                "%u ms late", e->relay_delay_ms);
    }
    if (pipe2(e->wake, O_NONBLOCK | O_CLOEXEC) != 0)
        return TF_EIO;
    pthread_mutex_init(&e->ev_mu, NULL);
    if (pthread_create(&e->listener, NULL, listener_main, e) != 0) {
        close(e->wake[0]);
        close(e->wake[1]);
        pthread_mutex_destroy(&e->ev_mu);
        return TF_ENOMEM;
    }
    e->listening = true;
    return 0;
}

/* The engine's farm_stats (engine.h). */
static void farm_stats(tf_engine_t *e, tf_store_farm_stats_t *out)
{
    out->sent = atomic_load(&e->ev_sent);
    out->notifies = atomic_load(&e->ev_notifies);
    out->received = atomic_load(&e->ev_received);
    out->dropped_out = atomic_load(&e->ev_dropped_out);
    out->dropped_in = atomic_load(&e->ev_dropped_in);
}

static bool has_duty(tf_engine_t *e)
{
    return !e->shared || atomic_load(&e->duty);
}

static const char *owner_of(tf_engine_t *e)
{
    return e->owner;
}

/* A write connection that works, reconnecting when the last one broke. */
static bool writer_ready(tf_engine_t *e)
{
    char why[256];

    if (e->w && PQstatus(e->w) == CONNECTION_OK)
        return true;
    if (e->w) {
        PQfinish(e->w);
        e->w = NULL;
        stmts_clear(e);
    }
    e->w = connect_url(e->url, why, sizeof(why));
    if (!e->w) {
        fmt_trunc(e->msg, sizeof(e->msg), "cannot connect to %s: %s",
                  e->shown, why);
        return false;
    }
    if (e->claimed && take_master_lock(e) != 0) {
        /* Another master took the database while this one was cut off:
         * writing now would mix two masters' state. Keep failing (the
         * writes stay queued) and say why. */
        PQfinish(e->w);
        e->w = NULL;
        return false;
    }
    atomic_store(&e->wpid, PQbackendPID(e->w));
    tf_info(SUB, "%s: write connection (re)established", e->shown);
    return true;
}

static int apply_group(tf_engine_t *e, const tf_wgroup_t *g)
{
    for (const tf_op_t *op = g->head; op; op = op->next) {
        int r = op_apply(e, op);
        if (r != PG_OK)
            return r;
    }
    return PG_OK;
}

static const char SQL_TXID_STATUS[] = "SELECT txid_status(?1)";

/* BEGIN, and the transaction's id in e->xid (one round trip). */
static int begin(tf_engine_t *e)
{
    PGresult *res = PQexec(e->w, "BEGIN; SELECT txid_current()");

    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK ||
        PQntuples(res) != 1)
        return fail_with(e, res, "BEGIN");
    e->xid = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return PG_OK;
}

/* The batch whose COMMIT got no answer is run again (store.c retries the
 * same groups): PG_OK when it did commit (the groups keep the outcomes
 * that run gave them), PG_FAIL_GROUP when it did not (run it again),
 * PG_FAIL_DB when the server cannot say yet (still committing). */
static int commit_outcome(tf_engine_t *e, const tf_wgroup_t *first,
                          size_t n)
{
    tf_sqlval_t v[] = {I(e->unknown_xid)};
    PGresult *res = NULL;
    const char *st;
    int r;

    if (first != e->unknown_first || n != e->unknown_n) {
        tf_warn(SUB, "%s: a batch whose COMMIT got no answer was not "
                "retried as it was; its outcome is not checked", e->shown);
        e->unknown_xid = 0;
        return PG_FAIL_GROUP;
    }
    r = exec_rows(e, SQL_TXID_STATUS, v, 1, &res);
    if (r != PG_OK)
        return PG_FAIL_DB;
    st = PQntuples(res) < 1 || PQgetisnull(res, 0, 0)
             ? "unknown"
             : PQgetvalue(res, 0, 0);
    if (strcmp(st, "in progress") == 0) {
        fmt_trunc(e->msg, sizeof(e->msg), "transaction %" PRId64 " (a "
                  "COMMIT that got no answer) is still in progress",
                  e->unknown_xid);
        PQclear(res);
        return PG_FAIL_DB;
    }
    tf_warn(SUB, "%s: the batch of %zu writes whose COMMIT got no answer "
            "%s", e->shown, n, strcmp(st, "committed") == 0
            ? "did commit: not applied again"
            : "did not commit: applying it again");
    r = strcmp(st, "committed") == 0 ? PG_OK : PG_FAIL_GROUP;
    PQclear(res);
    e->unknown_xid = 0;
    return r;
}

static int apply_batch(tf_engine_t *e, tf_wgroup_t *first, size_t n,
                       char *err, size_t errlen)
{
    tf_wgroup_t *g = first;
    int r;

    if (!writer_ready(e))
        goto fail;
    e->contended = false;
    if (e->unknown_xid) {
        r = commit_outcome(e, first, n);
        if (r == PG_FAIL_DB)
            goto fail;
        if (r == PG_OK)
            return TF_ENG_OK;
    }
    if (begin(e) != PG_OK)
        goto fail;
    e->batch_claims = e->batch_ends = false;
    e->notify = e->notify_mail = false;
    for (size_t i = 0; i < n; i++, g = g->next) {
        g->rc = 0;
        if (g->poisoned) {
            g->rc = TF_ESTORE;
            continue;
        }
        if (ctl(e, "SAVEPOINT tf_op") != PG_OK)
            goto fail;
        r = apply_group(e, g);
        if (r == PG_FAIL_DB)
            goto fail;
        if (r == PG_FAIL_GROUP || r == PG_FAIL_CLAIM) {
            if (r == PG_FAIL_CLAIM)
                tf_info(SUB, "%s", e->msg);
            else
                tf_warn(SUB, "write failed alone: %s; in: %.200s", e->msg,
                        tf__wgroup_what(g));
            g->rc = r == PG_FAIL_CLAIM ? TF_ESTATE : TF_ESTORE;
            if (ctl(e, "ROLLBACK TO SAVEPOINT tf_op") != PG_OK)
                goto fail;
        }
        if (ctl(e, "RELEASE SAVEPOINT tf_op") != PG_OK)
            goto fail;
    }
    /* Delivered to every listener at the commit, never before: "queue"
     * when requests were added or put back, "state" for anything else
     * (the other masters' cached answers are stale). */
    if (e->shared &&
        ((e->notify && ctl(e, "NOTIFY tf_farm, 'queue'") != PG_OK) ||
         (e->notify_mail && ctl(e, "NOTIFY tf_farm, 'mail'") != PG_OK) ||
         (!e->notify && !e->notify_mail &&
          ctl(e, "NOTIFY tf_farm, 'state'") != PG_OK)))
        goto fail;
    if (ctl(e, "COMMIT") != PG_OK) {
        /* Did it commit? Only the server knows: it may have before the
         * connection went (a backend ended while it waited in COMMIT).
         * The retry asks before it applies anything again. */
        if (!e->w || PQstatus(e->w) != CONNECTION_OK) {
            e->unknown_xid = e->xid;
            e->unknown_first = first;
            e->unknown_n = n;
        }
        goto fail;
    }
    if (e->lose_commit && ((e->lose_commit == 1 && e->batch_claims) ||
                           (e->lose_commit == 2 && e->batch_ends))) {
        e->lose_commit = 0;
        tf_warn(SUB, "test hook: the answer to this COMMIT is lost (the "
                "connection is closed)");
        PQfinish(e->w);
        e->w = NULL;
        stmts_clear(e);
        e->unknown_xid = e->xid;
        e->unknown_first = first;
        e->unknown_n = n;
        fmt_trunc(e->msg, sizeof(e->msg), "COMMIT: no answer (test hook)");
        goto fail;
    }
    e->rerun = 0;
    return TF_ENG_OK;

fail:
    if (e->w && PQstatus(e->w) == CONNECTION_OK &&
        PQtransactionStatus(e->w) != PQTRANS_IDLE) {
        PGresult *res = PQexec(e->w, "ROLLBACK");
        PQclear(res);
    }
    /* Masters sharing the database deadlock now and then on rows they
     * all touch (a builder's counters): the batch runs again at once, a
     * few times, before it counts as the database failing. */
    if (e->contended && e->rerun < CONTENDED_RERUNS && e->w &&
        PQstatus(e->w) == CONNECTION_OK) {
        e->rerun++;
        tf_info(SUB, "%s: %s; running the batch again", e->shown, e->msg);
        return TF_ENG_RETRY_NOW;
    }
    e->rerun = 0;
    fmt_trunc(err, errlen, "PostgreSQL: %s", e->msg);
    return TF_ENG_DB_FAILED;
}

static void set_max_pages(tf_engine_t *e, long pages)
{
    (void)e;
    (void)pages;
}

/* ---- Idle work: sealing old logs and retention (engine.h, maintain),
 * the same units as store/sqlite.c's ----
 *
 * One unit removes a batch of one build's logs: at most RET_BLOCKS blocks
 * and RET_CHUNKS chunks. The build whose logs are all gone gets
 * logs_removed_ms. */
#define RET_BLOCKS 16
#define RET_CHUNKS 256

static const char SQL_RET_BUILDERS[] =
    "SELECT builder FROM builds WHERE logs_removed_ms IS NULL "
    "AND state = 'finished' AND builder > ?1 ORDER BY builder LIMIT 1";
/* The first build, newest first, past which the builder's logs sum to
 * more than ?2 bytes. */
static const char SQL_RET_BY_SIZE[] =
    "SELECT id FROM (SELECT b.id, sum((SELECT coalesce(sum(log_bytes), 0) "
    "FROM steps WHERE build_id = b.id)) OVER (ORDER BY b.number DESC) AS "
    "total FROM builds b WHERE b.builder = ?1 AND b.logs_removed_ms IS NULL "
    "AND b.state = 'finished') t WHERE total > ?2 LIMIT 1";
static const char SQL_RET_DROP_BLOCKS[] =
    "DELETE FROM log_blocks WHERE (build_id, step, offset) IN (SELECT "
    "build_id, step, offset FROM log_blocks WHERE build_id = ?1 LIMIT ?2)";
static const char SQL_RET_DROP_CHUNKS[] =
    "DELETE FROM log_chunks WHERE (build_id, step, offset) IN (SELECT "
    "build_id, step, offset FROM log_chunks WHERE build_id = ?1 LIMIT ?2)";

/* The oldest build of builder whose logs the rule no longer keeps, or 0. */
static int expired_build(tf_engine_t *e, const char *builder,
                         const tf_retention_rule_t *r, int64_t now_ms,
                         uint64_t *id)
{
    int64_t v[1] = {0};
    bool found = false;
    int rc = PG_OK;

    *id = 0;
    if (r->log_builds > 0)
        rc = query_ints(e, tf__sql_ret_by_count,
                        (tf_sqlval_t[]){T(builder), I(r->log_builds - 1)}, 2,
                        v, 1, &found);
    if (rc == PG_OK && !found && r->log_days > 0)
        rc = query_ints(e, tf__sql_ret_by_age,
                        (tf_sqlval_t[]){T(builder),
                                        I(now_ms - r->log_days * 86400000)},
                        2, v, 1, &found);
    if (rc == PG_OK && !found && r->log_bytes > 0)
        rc = query_ints(e, SQL_RET_BY_SIZE,
                        (tf_sqlval_t[]){T(builder), I(r->log_bytes)}, 2, v, 1,
                        &found);
    if (rc == PG_OK && found)
        *id = (uint64_t)v[0];
    return rc;
}

/* Removes a batch of the logs of the next build retention expires, in the
 * open transaction. *did: something was removed or marked. */
static int retention_step(tf_engine_t *e, const tf_retention_t *ret,
                          int64_t now_ms, bool *did)
{
    *did = false;
    /* Walk the builders from the cursor; wrap once. */
    for (int pass = 0; pass < 2; pass++) {
        for (;;) {
            char builder[TF_NAME_MAX + 1];
            PGresult *res = NULL;
            tf_sqlval_t v[] = {T(e->ret_builder)};
            int r = exec_rows(e, SQL_RET_BUILDERS, v, 1, &res);
            if (r != PG_OK)
                return r;
            bool have = PQntuples(res) > 0;
            if (have)
                snprintf(builder, sizeof(builder), "%s",
                         PQgetvalue(res, 0, 0));
            PQclear(res);
            if (!have)
                break;
            const tf_retention_rule_t *rule = tf__retention_rule_for(ret, builder);
            uint64_t id = 0;
            if (tf__retention_limits(rule)) {
                r = expired_build(e, builder, rule, now_ms, &id);
                if (r != PG_OK)
                    return r;
            }
            if (!id) {
                snprintf(e->ret_builder, sizeof(e->ret_builder), "%s",
                         builder);
                continue;
            }
            EXEC(SQL_RET_DROP_BLOCKS, I(id), I(RET_BLOCKS));
            int64_t gone = e->changes;
            EXEC(SQL_RET_DROP_CHUNKS, I(id), I(RET_CHUNKS));
            gone += e->changes;
            if (gone == 0) {
                EXEC(tf__sql_ret_mark, I(now_ms), I(id));
                EXEC(tf__sql_ret_mark_steps, I(id));
                tf_debug(SUB, "build %" PRIu64 " of %s: logs removed by "
                              "retention", id, builder);
            }
            *did = true;
            return PG_OK; /* the same builder again next time */
        }
        e->ret_builder[0] = '\0';
    }
    return PG_OK;
}

/* One unit of idle work in a transaction of its own: a block of a
 * finished step's tail still open, else a batch of retention. */
static int maintain_unit(tf_engine_t *e, const tf_retention_t *ret,
                         int64_t now_ms, bool *removed, bool *did)
{
    int64_t v[2];
    bool found;
    uint64_t to = 0;
    int r = query_ints(e, tf__sql_log_unsealed,
                       (tf_sqlval_t[]){I(e->maint_build), I(e->maint_step)},
                       2, v, 2, &found);

    if (r != PG_OK)
        return r;
    if (!found) {
        e->maint_build = 0;
        e->maint_step = 0;
        tf__engine_holes_report(&e->maint_holes);
        r = retention_step(e, ret, now_ms, did);
        *removed = *did;
        return r;
    }
    uint64_t build_id = (uint64_t)v[0];
    unsigned step = (unsigned)v[1];
    r = query_ints(e, tf__sql_log_step, (tf_sqlval_t[]){I(build_id), I(step)}, 2,
                   v, 2, &found);
    if (r == PG_OK && found)
        r = seal_block(e, build_id, step, (uint64_t)v[0], &to);
    if (r != PG_OK)
        return r;
    *did = true;
    e->maint_build = build_id;
    e->maint_step = step;
    if (!found || to == (uint64_t)v[0] || to >= (uint64_t)v[1]) {
        /* Sealed to its end, or nothing more can be: the next step. */
        e->maint_step = step + 1;
        if (!found || to == (uint64_t)v[0])
            tf__engine_hole(&e->maint_holes, build_id, step, found ? (uint64_t)v[0] : 0);
    }
    return PG_OK;
}

static int maintain(tf_engine_t *e, const tf_retention_t *ret,
                    int64_t now_ms, bool *removed, char *err, size_t errlen)
{
    bool did = false;
    int r;

    *removed = false;
    if (!writer_ready(e)) {
        fmt_trunc(err, errlen, "sealing old logs: %s", e->msg);
        return TF_ESTORE;
    }
    r = ctl(e, "BEGIN");
    if (r == PG_OK)
        r = maintain_unit(e, ret, now_ms, removed, &did);
    if (r == PG_OK)
        r = ctl(e, "COMMIT");
    if (r != PG_OK) {
        char keep[sizeof(e->msg)];
        memcpy(keep, e->msg, sizeof(keep));
        if (e->w && PQtransactionStatus(e->w) != PQTRANS_IDLE)
            ctl(e, "ROLLBACK");
        memcpy(e->msg, keep, sizeof(keep));
        *removed = false;
        fmt_trunc(err, errlen, "sealing old logs: %s", e->msg);
        return TF_ESTORE;
    }
    return did ? 1 : 0;
}

static void close_writer(tf_engine_t *e)
{
    if (!e->w)
        return;
    PQfinish(e->w);
    e->w = NULL;
    stmts_clear(e);
    tf_logpacker_free(e->packer);
    e->packer = NULL;
    free(e->sealbuf);
    e->sealbuf = NULL;
    e->sealcap = 0;
}

/* ------------------------------------------------------------------ */
/* Reads                                                               */
/* ------------------------------------------------------------------ */

static PGconn **reader_acquire(tf_engine_t *e)
{
    PGconn **slot;

    pthread_mutex_lock(&e->pool_mu);
    while (e->nfree == 0)
        pthread_cond_wait(&e->pool_cond, &e->pool_mu);
    slot = &e->readers[e->free_rd[--e->nfree]];
    pthread_mutex_unlock(&e->pool_mu);
    return slot;
}

static void reader_release(tf_engine_t *e, PGconn **slot)
{
    pthread_mutex_lock(&e->pool_mu);
    e->free_rd[e->nfree++] = (unsigned)(slot - e->readers);
    pthread_cond_signal(&e->pool_cond);
    pthread_mutex_unlock(&e->pool_mu);
}

static bool reader_ready(tf_engine_t *e, PGconn **c)
{
    char why[256];

    if (*c && PQstatus(*c) == CONNECTION_OK)
        return true;
    if (*c)
        PQfinish(*c);
    *c = connect_url(e->url, why, sizeof(why));
    if (!*c) {
        tf_warn(SUB, "%s: a read connection failed: %s", e->shown, why);
        return false;
    }
    return true;
}

static bool simple(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);
    bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;

    if (!ok)
        tf_warn(SUB, "%s: %s", sql,
                res ? PQresultErrorMessage(res) : PQerrorMessage(c));
    PQclear(res);
    return ok;
}

static int query(tf_engine_t *e, tf_query_t *q)
{
    PGconn **c = reader_acquire(e);
    tf_db_t d;
    int rc;

    if (!reader_ready(e, c)) {
        reader_release(e, c);
        return TF_ESTORE;
    }
    if (!simple(*c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")) {
        /* A connection that died while idle (the server restarted) only
         * says so when used: reconnect once and try again. */
        bool again = PQstatus(*c) != CONNECTION_OK;
        if (again) {
            PQfinish(*c);
            *c = NULL;
            again = reader_ready(e, c) &&
                    simple(*c, "BEGIN ISOLATION LEVEL REPEATABLE READ "
                               "READ ONLY");
        }
        if (!again) {
            reader_release(e, c);
            return TF_ESTORE;
        }
    }
    memset(&d, 0, sizeof(d));
    d.kind = TF_DB_KIND_PG;
    d.pg = *c;
    rc = tf__reads_query(&d, q);
    if (d.err[0] && rc != 0)
        tf_warn(SUB, "query: %s", d.err);
    if (PQstatus(*c) == CONNECTION_OK)
        simple(*c, PQtransactionStatus(*c) == PQTRANS_INERROR ? "ROLLBACK"
                                                               : "COMMIT");
    reader_release(e, c);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Opening and closing                                                 */
/* ------------------------------------------------------------------ */

static int run_logged(tf_engine_t *e, const char *sql, PGresult **rows)
{
    PGresult *res = PQexec(e->w, sql);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        tf_error(SUB, "%s: %.80s: %s", e->shown, sql,
                 res ? PQresultErrorMessage(res) : PQerrorMessage(e->w));
        PQclear(res);
        return TF_ESTORE;
    }
    if (rows)
        *rows = res;
    else
        PQclear(res);
    return 0;
}

/* The schema version (0 for a database TestFarm has never used). */
static int read_version(tf_engine_t *e, long long *version)
{
    PGresult *res = NULL;
    int rc = run_logged(e,
                        "CREATE TABLE IF NOT EXISTS tf_schema(version "
                        "INTEGER NOT NULL)",
                        NULL);

    if (rc == 0)
        rc = run_logged(e, "SELECT max(version) FROM tf_schema", &res);
    if (rc != 0)
        return rc;
    *version = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)
                   ? strtoll(PQgetvalue(res, 0, 0), NULL, 10)
                   : 0;
    PQclear(res);
    return 0;
}

static int migrate(tf_engine_t *e, long long from)
{
    size_t known = tf_pg_schema_count();

    for (size_t v = (size_t)from + 1; v <= known; v++) {
        char bump[96];
        int rc;

        snprintf(bump, sizeof(bump),
                 "DELETE FROM tf_schema; INSERT INTO tf_schema VALUES(%zu)",
                 v);
        rc = run_logged(e, "BEGIN", NULL);
        if (rc == 0)
            rc = run_logged(e, tf_pg_schema_migration(v), NULL);
        if (rc == 0)
            rc = run_logged(e, bump, NULL);
        if (rc == 0)
            rc = run_logged(e, "COMMIT", NULL);
        if (rc != 0) {
            PQclear(PQexec(e->w, "ROLLBACK"));
            tf_error(SUB, "%s: migration to schema version %zu failed",
                     e->shown, v);
            return rc;
        }
        tf_info(SUB, "%s: migrated to schema version %zu", e->shown, v);
    }
    return 0;
}

/* Checks the version and migrates under an advisory lock, so masters
 * starting together on one database migrate it once. */
static int prepare_schema(tf_engine_t *e)
{
    long long version = 0;
    size_t known = tf_pg_schema_count();
    int rc = run_logged(e, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")",
                        NULL);

    if (rc != 0)
        return rc;
    rc = read_version(e, &version);
    if (rc == 0 &&
        (version < 0 || (unsigned long long)version > known)) {
        tf_error(SUB,
                 "%s is at schema version %lld but this tf-master knows "
                 "versions up to %zu only: refusing to open it (run the "
                 "tf-master that wrote it, or restore a backup)",
                 e->shown, version, known);
        rc = TF_EVERSION;
    }
    if (rc == 0)
        rc = migrate(e, version);
    PQclear(PQexec(e->w, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
    return rc;
}

static void destroy(tf_engine_t *e)
{
    if (!e)
        return;
    if (e->listening) {
        atomic_store(&e->stop, true);
        if (write(e->wake[1], "", 1) < 0) {
            /* full: it wakes anyway */
        }
        pthread_join(e->listener, NULL);
        e->listening = false;
        close(e->wake[0]);
        close(e->wake[1]);
        ev_free_all(e->out_head);
        ev_free_all(e->in_head);
        pthread_mutex_destroy(&e->ev_mu);
    }
    close_writer(e);
    for (unsigned i = 0; i < e->nreaders; i++)
        if (e->readers[i])
            PQfinish(e->readers[i]);
    free(e->readers);
    free(e->free_rd);
    pthread_mutex_destroy(&e->pool_mu);
    pthread_cond_destroy(&e->pool_cond);
    free(e->url);
    free(e);
}

static int engine_open(const char *url, unsigned nreaders, tf_engine_t **out,
                       int *schema_version)
{
    tf_engine_t *e;
    char why[256];
    int rc;

    if (tf_pg_schema_count() != tf_schema_count()) {
        tf_error(SUB, "internal: the PostgreSQL schema is at version %zu "
                      "but sqlite's at %zu",
                 tf_pg_schema_count(), tf_schema_count());
        return TF_ESTORE;
    }
    if (!PQisthreadsafe()) {
        tf_error(SUB, "this libpq is built without thread support");
        return TF_ESTORE;
    }
    e = calloc(1, sizeof(*e));
    if (!e)
        return TF_ENOMEM;
    pthread_mutex_init(&e->pool_mu, NULL);
    pthread_cond_init(&e->pool_cond, NULL);
    e->url = strdup(url);
    if (!e->url) {
        destroy(e);
        return TF_ENOMEM;
    }
    hide_password(url, e->shown, sizeof(e->shown));
    e->w = connect_url(url, why, sizeof(why));
    if (!e->w) {
        tf_error(SUB, "cannot connect to %s: %s", e->shown, why);
        destroy(e);
        return TF_ESTORE;
    }
    rc = prepare_schema(e);
    if (rc != 0) {
        destroy(e);
        return rc;
    }
    nreaders = nreaders ? nreaders : 1;
    e->readers = calloc(nreaders, sizeof(*e->readers));
    e->free_rd = calloc(nreaders, sizeof(*e->free_rd));
    if (!e->readers || !e->free_rd) {
        destroy(e);
        return TF_ENOMEM;
    }
    e->nreaders = nreaders;
    for (unsigned i = 0; i < nreaders; i++) {
        e->readers[i] = connect_url(url, why, sizeof(why));
        if (!e->readers[i]) {
            tf_error(SUB, "cannot connect to %s: %s", e->shown, why);
            destroy(e);
            return TF_ESTORE;
        }
        e->free_rd[e->nfree++] = i;
    }
    *schema_version = (int)tf_pg_schema_count();
    *out = e;
    return 0;
}

const tf_engine_vt_t tf_engine_pg = {
    .name = "postgresql",
    .open = engine_open,
    .apply_batch = apply_batch,
    .query = query,
    .claim = claim,
    .reserve_ids = reserve_ids,
    .watch = watch,
    .has_duty = has_duty,
    .owner = owner_of,
    .farm_send = farm_send,
    .farm_take = farm_take,
    .farm_stats = farm_stats,
    .set_max_pages = set_max_pages,
    .maintain = maintain,
    .close_writer = close_writer,
    .destroy = destroy,
};

/* ------------------------------------------------------------------ */
/* Copying an sqlite database (tf-master migrate --to)                 */
/* ------------------------------------------------------------------ */

/* Every table of the schema, parents before children. The farm keeps its
 * id (the empty database's own, made by its migration 9, is dropped
 * first), so slaves resume their builds across the move. */
static const char *const copy_tables[] = {
    "farm", "slaves", "slave_events", "builders", "users", "patches", "changes",
    "try_jobs", "build_requests", "request_changes", "builds", "steps",
    "build_changes", "log_chunks", "log_blocks", "test_results", "stats", "mail_outbox", "pollers",
    "scheduler_state",
};

/* Tables whose id the database assigns: their identity goes on after the
 * copied ids. */
static const char *const identity_tables[] = {
    "slave_events", "users", "patches", "changes", "mail_outbox",
};

static int copy_table(tf_engine_t *e, sqlite3 *src, const char *table,
                      uint64_t *rows, char *msg, size_t msglen)
{
    char sql[SQL_MAX], sel[TF_NAME_MAX * 2 + 32], qt[TF_NAME_MAX * 2 + 3];
    char qc[TF_NAME_MAX * 2 + 3];
    sqlite3_stmt *st = NULL;
    int ncols, rc = 0, s;
    size_t o;

    /* Names from the sqlite file are quoted as identifiers, quotes in
     * them doubled: an odd column name is refused by PostgreSQL by its
     * name, never read as SQL. */
    if (tf__db_quote_ident(table, qt, sizeof(qt)) != 0) {
        fmt_trunc(msg, msglen, "table name too long: %.80s", table);
        return TF_ESTORE;
    }
    snprintf(sel, sizeof(sel), "SELECT * FROM %s", qt);
    if (sqlite3_prepare_v2(src, sel, -1, &st, NULL) != SQLITE_OK) {
        fmt_trunc(msg, msglen, "%s: %s", sel, sqlite3_errmsg(src));
        return TF_ESTORE;
    }
    ncols = sqlite3_column_count(st);
    if (ncols < 1 || ncols > MAX_PARAMS) {
        sqlite3_finalize(st);
        fmt_trunc(msg, msglen, "%s: %d columns", table, ncols);
        return TF_ESTORE;
    }
    o = (size_t)snprintf(sql, sizeof(sql), "INSERT INTO %s(", qt);
    for (int i = 0; i < ncols && o < sizeof(sql); i++) {
        const char *col = sqlite3_column_name(st, i);
        if (tf__db_quote_ident(col, qc, sizeof(qc)) != 0) {
            sqlite3_finalize(st);
            fmt_trunc(msg, msglen, "%s: a column name is empty or too "
                      "long: %.80s", table, col ? col : "");
            return TF_ESTORE;
        }
        o += (size_t)snprintf(sql + o, sizeof(sql) - o, "%s%s",
                              i ? ", " : "", qc);
    }
    for (int i = 0; i < ncols && o < sizeof(sql); i++)
        o += (size_t)snprintf(sql + o, sizeof(sql) - o, "%s$%d",
                              i ? ", " : ") VALUES(", i + 1);
    if (o + 2 >= sizeof(sql)) {
        sqlite3_finalize(st);
        fmt_trunc(msg, msglen, "%s: statement too long", table);
        return TF_ESTORE;
    }
    snprintf(sql + o, sizeof(sql) - o, ")");
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *vals[MAX_PARAMS];
        int lens[MAX_PARAMS], fmts[MAX_PARAMS];
        Oid types[MAX_PARAMS];
        char nums[MAX_PARAMS][32];

        for (int i = 0; i < ncols; i++) {
            vals[i] = NULL;
            lens[i] = 0;
            fmts[i] = 0;
            types[i] = 0;
            switch (sqlite3_column_type(st, i)) {
            case SQLITE_INTEGER:
                snprintf(nums[i], sizeof(nums[i]), "%lld",
                         (long long)sqlite3_column_int64(st, i));
                vals[i] = nums[i];
                break;
            case SQLITE_FLOAT:
                snprintf(nums[i], sizeof(nums[i]), "%.17g",
                         sqlite3_column_double(st, i));
                vals[i] = nums[i];
                break;
            case SQLITE_TEXT:
                vals[i] = (const char *)sqlite3_column_text(st, i);
                break;
            case SQLITE_BLOB:
                vals[i] = sqlite3_column_blob(st, i);
                lens[i] = sqlite3_column_bytes(st, i);
                if (!vals[i])
                    vals[i] = "";
                fmts[i] = 1;
                types[i] = 17;
                break;
            default:
                break;
            }
        }
        PGresult *res = PQexecParams(e->w, sql, ncols, types, vals, lens,
                                     fmts, 0);
        if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
            fmt_trunc(msg, msglen, "%s: %s", table,
                      res ? PQresultErrorMessage(res)
                          : PQerrorMessage(e->w));
            PQclear(res);
            rc = TF_ESTORE;
            break;
        }
        PQclear(res);
        (*rows)++;
    }
    if (rc == 0 && s != SQLITE_DONE) {
        fmt_trunc(msg, msglen, "reading %s: %s", table, sqlite3_errmsg(src));
        rc = TF_ESTORE;
    }
    sqlite3_finalize(st);
    return rc;
}

static bool pg_is_empty(tf_engine_t *e)
{
    PGresult *res = PQexec(e->w,
                           "SELECT (SELECT count(*) FROM builds) + (SELECT "
                           "count(*) FROM build_requests) + (SELECT count(*) "
                           "FROM users) + (SELECT count(*) FROM try_jobs) + "
                           "(SELECT count(*) FROM changes)");
    bool empty = res && PQresultStatus(res) == PGRES_TUPLES_OK &&
                 strcmp(PQgetvalue(res, 0, 0), "0") == 0;

    PQclear(res);
    return empty;
}

int tf_store_copy_sqlite(const char *sqlite_path, const char *url,
                         uint64_t *rows, char *msg, size_t msglen)
{
    sqlite3 *src = NULL;
    tf_engine_t *e = NULL;
    int version = 0, rc;
    long long from = -1;
    sqlite3_stmt *st = NULL;

    *rows = 0;
    msg[0] = '\0';
    if (sqlite3_open_v2(sqlite_path, &src, SQLITE_OPEN_READONLY, NULL) !=
        SQLITE_OK) {
        fmt_trunc(msg, msglen, "cannot open %s: %s", sqlite_path,
                  src ? sqlite3_errmsg(src) : "out of memory");
        sqlite3_close(src);
        return TF_ESTORE;
    }
    if (sqlite3_prepare_v2(src, "PRAGMA user_version", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        from = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (from != (long long)tf_schema_count()) {
        fmt_trunc(msg, msglen,
                  "%s is at schema version %lld, this tf-master's is %zu: "
                  "run this tf-master on it once (it migrates the file), "
                  "then copy it",
                  sqlite_path, from, tf_schema_count());
        sqlite3_close(src);
        return TF_EVERSION;
    }
    rc = engine_open(url, 1, &e, &version);
    if (rc != 0) {
        fmt_trunc(msg, msglen, "cannot open %s (see the log above)", url);
        sqlite3_close(src);
        return rc;
    }
    if (claim(e, false, false) != 0) {
        fmt_trunc(msg, msglen, "%s", e->msg);
        rc = TF_EEXIST;
        goto out;
    }
    if (!pg_is_empty(e)) {
        fmt_trunc(msg, msglen,
                  "%s already holds builds, requests, jobs, changes or "
                  "committers: refusing to copy into it (give an empty "
                  "database)",
                  e->shown);
        rc = TF_EEXIST;
        goto out;
    }
    /* One snapshot of the file, one transaction in PostgreSQL: the copy
     * is all or nothing. */
    sqlite3_exec(src, "BEGIN", NULL, NULL, NULL);
    rc = ctl(e, "BEGIN") == PG_OK && ctl(e, "DELETE FROM farm") == PG_OK
             ? 0
             : TF_ESTORE;
    if (rc)
        fmt_trunc(msg, msglen, "%s", e->msg);
    for (size_t i = 0; rc == 0 && i < sizeof(copy_tables) /
                                         sizeof(copy_tables[0]); i++)
        rc = copy_table(e, src, copy_tables[i], rows, msg, msglen);
    for (size_t i = 0; rc == 0 && i < sizeof(identity_tables) /
                                         sizeof(identity_tables[0]); i++) {
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "SELECT setval(pg_get_serial_sequence('%s', 'id'), "
                 "coalesce(max(id), 0) + 1, false) FROM %s",
                 identity_tables[i], identity_tables[i]);
        PGresult *res = PQexec(e->w, sql);
        if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
            fmt_trunc(msg, msglen, "%s: %s", identity_tables[i],
                      res ? PQresultErrorMessage(res) : "no answer");
            rc = TF_ESTORE;
        }
        PQclear(res);
    }
    if (rc == 0 && ctl(e, "COMMIT") != PG_OK) {
        fmt_trunc(msg, msglen, "%s", e->msg);
        rc = TF_ESTORE;
    }
    if (rc != 0 && e->w && PQtransactionStatus(e->w) != PQTRANS_IDLE)
        PQclear(PQexec(e->w, "ROLLBACK"));
    sqlite3_exec(src, "COMMIT", NULL, NULL, NULL);
out:
    destroy(e);
    sqlite3_close(src);
    return rc;
}
