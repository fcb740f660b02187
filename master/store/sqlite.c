/*
 * sqlite.c - the sqlite engine of the storage interface: every write
 * operation applied with the statements store/writes.c shares with the
 * PostgreSQL engine and sqlite's own where the dialects differ, one write
 * connection owned by the writer thread, a pool of read-only connections.
 *
 * Writing: apply_batch runs a batch as
 *
 *   BEGIN IMMEDIATE
 *     SAVEPOINT tf_op; <the group's ops>; RELEASE tf_op      (each group)
 *       ... a group failing alone: ROLLBACK TO tf_op; RELEASE tf_op
 *   COMMIT
 *
 * Every statement is prepared once (SQLITE_PREPARE_PERSISTENT) into a
 * cache keyed by the address of its static SQL text, and values are bound
 * SQLITE_STATIC straight from the group's memory (output bytes are never
 * copied again on their way to the WAL). WAL mode with synchronous=NORMAL:
 * a commit is a WAL append without an fsync; it survives a crash of the
 * process, which is what an ack to a slave or tf-try promises, while an
 * OS crash or power loss may lose the last transactions (FULL would add
 * an fsync per commit). Checkpoints (the fsyncs) run on a thread of
 * their own with a connection of its own (the checkpointer, below), not
 * on the writer: a checkpoint after the commit that passed sqlite's
 * 1,000 pages held the writer, and every build_start behind it, 20 to 50
 * ms five times in a burst of 5,000 starts; one in the writer's idle work
 * still met the burst's first batch now and then (the writer goes idle
 * between the reload's writes and the first start batch). At 16,384 pages
 * (64 MiB) of WAL a commit still checkpoints, should the checkpointer
 * fall that far behind.
 *
 * The checkpointer: a PASSIVE checkpoint copies what the WAL holds into
 * the database file while the writer goes on appending to the WAL (sqlite
 * lets one checkpointer and one writer run at once); the next write after
 * a complete one starts the WAL over. The writer wakes it after a commit
 * (one atomic flag, a signal only when it was clear), and it checkpoints
 * CKPT_DELAY_MS later, so a stream of commits costs one checkpoint a
 * second, not one per commit. While the store's writer holds commits that
 * are awaited (ckpt_hold: a burst's start batches), checkpoints wait for
 * them, within bounds. It starts with the writer's first batch (offline
 * tools that open the store, vacuum and migrate, have none) and stops
 * before the closing checkpoint.
 *
 * Which failures fail a group alone and which fail the batch: an sqlite
 * error that says something about the database as a whole (full, I/O,
 * busy, locked, out of memory, corrupt: is_db_wide) rolls the batch back
 * and store.c retries it; any other (a constraint, a broken event chain,
 * a raw statement's bug) rolls back only that group's savepoint.
 *
 * Reading: a query borrows a reader connection and runs inside one read
 * transaction, so all its statements see one snapshot.
 */
#include "store/engine.h"
#include "store/db_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "clock.h"
#include "log.h"
#include "result.h"
#include "store/logblock.h"
#include "store/mail.h"
#include "store/store_schema.h"
#include "store/reads.h"
#include "store/store_sqlite.h"
#include "store/writes.h"
#include "tf_err.h"

#define SUB "store"

#define BUSY_TIMEOUT_MS 5000
#define JOURNAL_SIZE_LIMIT "67108864" /* truncate the WAL back to 64 MiB */
#define WAL_AUTOCHECKPOINT "16384"     /* pages: 64 MiB of WAL (see above) */
#define CKPT_DELAY_MS 1000 /* from a commit to the checkpoint after it */
#define CKPT_EARLY_FRAMES 4096 /* a WAL this long is checkpointed at once */
#define WAL_AUTOCHECKPOINT_FRAMES 16384 /* WAL_AUTOCHECKPOINT's number */
/* While the store's writer has commits that are awaited queued (a burst's
 * start batches: ckpt_hold), checkpoints wait, at most this long and
 * until this many frames are not yet copied. */
#define CKPT_HOLD_MAX_MS 1000
#define CKPT_HOLD_MAX_FRAMES (3 * CKPT_EARLY_FRAMES)
#define BUILDER_TALLY 32 /* builders counted at once (builder_tally_add) */

/* The prepared statements of the write connection, keyed by the address
 * of their SQL (open addressing; SQL texts have static storage, so there
 * are only as many keys as there are statements in the program). */
typedef struct stmt_slot {
    const char *sql;
    sqlite3_stmt *st;
} stmt_slot_t;

typedef struct stmt_cache {
    stmt_slot_t *slots;
    size_t cap; /* 0 or a power of two */
    size_t n;
} stmt_cache_t;

struct tf_engine {
    char *path;

    /* Writer thread only (after open). */
    sqlite3 *db;
    stmt_cache_t cache;
    char *werr;     /* apply_batch's err buffer while it runs */
    size_t werrlen;
    char msg[256];  /* the message of the last failure */
    bool opened;    /* open succeeded: closing checkpoints the WAL */
    tf_logpacker_t *packer; /* sealing log blocks (created on first use) */
    unsigned char *sealbuf; /* the tail being sealed, sealcap bytes */
    size_t sealcap;
    tf_logsealer_t *sealer; /* compresses streamed blocks (lazily) */
    bool sealer_failed;     /* could not start one: seal here */
    struct {
        bool used;
        uint64_t build_id;
        unsigned step;
        uint64_t from, pos, line; /* fed [from, pos), from at line */
        uint64_t last_feed;       /* feeds when it was last fed */
    } streams[TF_LOGSEALER_STREAMS];
    uint64_t feeds; /* chunks fed to streams, ever */
    uint64_t maint_build; /* where the idle sealing walk is */
    unsigned maint_step;
    tf_engine_holes_t maint_holes; /* steps the walk left unsealed */
    char ret_builder[TF_NAME_MAX + 1]; /* where the retention walk is */
    /* The builders of the build starts applied since the last other op
     * of the group (builder_tally_flush): their builders rows are
     * updated once per builder, not once per build. */
    struct {
        const char *builder; /* the op's, in the group being applied */
        uint64_t last_id;
        unsigned n;
    } tally[BUILDER_TALLY];
    size_t ntally;

    /* The checkpointer (see the header): its connection and thread are
     * its own; the rest is under ckpt_mu, but for ckpt_dirty, which the
     * writer sets after a commit. */
    pthread_mutex_t ckpt_mu;
    pthread_cond_t ckpt_cond;
    pthread_t ckpt_thread;
    sqlite3 *ckpt_db;
    bool ckpt_started;      /* writer thread only */
    bool ckpt_stop;
    bool ckpt_failing;      /* the last checkpoint failed (said once) */
    int ckpt_dirty;         /* atomic: commits since the last checkpoint */
    bool ckpt_urgent;       /* the WAL is long: no delay this time */
    int ckpt_copied;        /* atomic: WAL frames in the database file as
                               the last checkpoint left them */
    int wal_frames;         /* writer thread only: the WAL's length at the
                               last commit (wal_hook) */
    bool ckpt_hold;         /* checkpoints wait (ckpt_hold) */
    bool ckpt_held_w;       /* writer thread only: ckpt_hold's value */
    bool ckpt_put_off;      /* writer thread only: an early checkpoint
                               waits for the hold's end */

    /* The read pool, under pool_mu. */
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cond;
    sqlite3 **readers;   /* all of them, for closing */
    sqlite3 **free_rd;   /* the idle ones (a stack) */
    unsigned nreaders;
    unsigned nfree;
};

static int open_conn(const char *path, int flags, sqlite3 **out);
static void ckpt_kick(tf_engine_t *e);

/* Control statements, prepared once through the statement cache. */
static const char SQL_BEGIN[] = "BEGIN IMMEDIATE";
static const char SQL_COMMIT[] = "COMMIT";
static const char SQL_ROLLBACK[] = "ROLLBACK";
static const char SQL_SAVEPOINT[] = "SAVEPOINT tf_op";
static const char SQL_RELEASE[] = "RELEASE tf_op";
static const char SQL_ROLLBACK_TO[] = "ROLLBACK TO tf_op";

static void fmt_trunc(char *dst, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fmt_trunc(char *dst, size_t len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(dst, len, fmt, ap);
    va_end(ap);
}

/* Errors that say nothing about the group that hit them but about the
 * database as a whole: the batch is rolled back and retried. Corruption
 * is in the list because a retry costs nothing and the cause may be an
 * I/O fault that goes away. */
static bool is_db_wide(int src)
{
    switch (src & 0xff) {
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_NOMEM:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_PROTOCOL:
        return true;
    default:
        return false;
    }
}

/* ------------------------------------------------------------------ */
/* Binding                                                             */
/* ------------------------------------------------------------------ */

/* Binds vals to parameters 1..n with the given destructor for text and
 * blobs. A zero-length blob binds as an empty blob, not as NULL (sqlite
 * binds NULL for a NULL pointer). Returns an sqlite code. */
static int bind_vals(sqlite3_stmt *st, const tf_sqlval_t *vals, size_t n,
                     sqlite3_destructor_type how)
{
    for (size_t i = 0; i < n; i++) {
        const tf_sqlval_t *v = &vals[i];
        int col = (int)i + 1, src;

        switch (v->kind) {
        case TF_SQL_INT:
            src = sqlite3_bind_int64(st, col, v->i);
            break;
        case TF_SQL_TEXT:
            src = v->p ? sqlite3_bind_text(st, col, v->p, -1, how)
                       : sqlite3_bind_null(st, col);
            break;
        case TF_SQL_BLOB:
        case TF_SQL_BLOB_OWNED:
            if (v->n == 0)
                src = sqlite3_bind_zeroblob(st, col, 0);
            else if (v->n > INT_MAX)
                src = SQLITE_TOOBIG;
            else
                src = sqlite3_bind_blob(st, col, v->p, (int)v->n, how);
            break;
        case TF_SQL_NULL:
            src = sqlite3_bind_null(st, col);
            break;
        default:
            src = SQLITE_MISMATCH;
            break;
        }
        if (src != SQLITE_OK)
            return src;
    }
    return SQLITE_OK;
}

int tf_store_bind(sqlite3_stmt *st, const tf_sqlval_t *vals, size_t nvals)
{
    if (!st || (nvals && !vals))
        return TF_EINVAL;
    if (nvals > (size_t)sqlite3_bind_parameter_count(st))
        return TF_EINVAL;
    return bind_vals(st, vals, nvals, SQLITE_TRANSIENT) == SQLITE_OK
               ? 0
               : TF_ESTORE;
}

/* Short names for the value constructors in the appliers below. */
#define I(x) tf_sql_int((int64_t)(x))
#define T(x) tf_sql_text(x)

/* ------------------------------------------------------------------ */
/* Writer: statement cache                                             */
/* ------------------------------------------------------------------ */

static size_t ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static stmt_slot_t *cache_slot(stmt_slot_t *slots, size_t cap, const char *sql)
{
    size_t i = ptr_hash(sql) & (cap - 1);
    while (slots[i].sql && slots[i].sql != sql)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

static bool cache_grow(stmt_cache_t *c)
{
    size_t cap = c->cap ? c->cap * 2 : 64;
    stmt_slot_t *slots = calloc(cap, sizeof(*slots));

    if (!slots)
        return false;
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i].sql)
            *cache_slot(slots, cap, c->slots[i].sql) = c->slots[i];
    free(c->slots);
    c->slots = slots;
    c->cap = cap;
    return true;
}

static void cache_clear(stmt_cache_t *c)
{
    for (size_t i = 0; i < c->cap; i++)
        sqlite3_finalize(c->slots[i].st);
    free(c->slots);
    memset(c, 0, sizeof(*c));
}

static bool only_space(const char *p)
{
    for (; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != ';')
            return false;
    return true;
}

/* Returns the cached statement for sql, preparing it on first use.
 * Returns an sqlite code; on failure e->msg says why. */
static int cache_get(tf_engine_t *e, const char *sql, sqlite3_stmt **out)
{
    stmt_cache_t *c = &e->cache;
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int src;

    if (c->cap) {
        stmt_slot_t *slot = cache_slot(c->slots, c->cap, sql);
        if (slot->sql) {
            *out = slot->st;
            return SQLITE_OK;
        }
    }
    src = sqlite3_prepare_v3(e->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st,
                             &tail);
    if (src != SQLITE_OK) {
        snprintf(e->msg, sizeof(e->msg), "prepare: %s",
                 sqlite3_errmsg(e->db));
        return src;
    }
    if (!st || (tail && !only_space(tail))) {
        sqlite3_finalize(st);
        snprintf(e->msg, sizeof(e->msg), "%s",
                 st ? "SQL holds more than one statement"
                    : "SQL holds no statement");
        return SQLITE_MISUSE;
    }
    if ((c->n + 1) * 2 > c->cap && !cache_grow(c)) {
        sqlite3_finalize(st);
        snprintf(e->msg, sizeof(e->msg), "out of memory (statement cache)");
        return SQLITE_NOMEM;
    }
    stmt_slot_t *slot = cache_slot(c->slots, c->cap, sql);
    slot->sql = sql;
    slot->st = st;
    c->n++;
    *out = st;
    return SQLITE_OK;
}

/* Steps st to the end (rows of RETURNING or pragmas are ignored), resets
 * it and clears its bindings. Returns SQLITE_OK or the error, with the
 * message in e->msg. */
static int stmt_run(tf_engine_t *e, sqlite3_stmt *st)
{
    int src;

    while ((src = sqlite3_step(st)) == SQLITE_ROW)
        ;
    if (src != SQLITE_DONE)
        snprintf(e->msg, sizeof(e->msg), "%s", sqlite3_errmsg(e->db));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return src == SQLITE_DONE ? SQLITE_OK : src;
}

/* Runs one cached statement with n values bound from memory that
 * outlives the call. */
static int exec(tf_engine_t *e, const char *sql, const tf_sqlval_t *v,
                size_t n)
{
    sqlite3_stmt *st;
    int src = cache_get(e, sql, &st);

    if (src != SQLITE_OK)
        return src;
    if ((size_t)sqlite3_bind_parameter_count(st) != n) {
        snprintf(e->msg, sizeof(e->msg),
                 "statement has %d parameters but %zu values were given",
                 sqlite3_bind_parameter_count(st), n);
        return SQLITE_RANGE;
    }
    /* SQLITE_STATIC: the values live in the group, which outlives the
     * statement's use of them (stmt_run clears the bindings). */
    src = bind_vals(st, v, n, SQLITE_STATIC);
    if (src != SQLITE_OK) {
        snprintf(e->msg, sizeof(e->msg), "bind: %s", sqlite3_errmsg(e->db));
        sqlite3_clear_bindings(st);
        return src;
    }
    return stmt_run(e, st);
}

#define EXEC(sql, ...)                                                         \
    do {                                                                       \
        tf_sqlval_t v_[] = {__VA_ARGS__};                                      \
        int src_ = exec(e, sql, v_, sizeof(v_) / sizeof(v_[0]));               \
        if (src_ != SQLITE_OK)                                                 \
            return src_;                                                       \
    } while (0)

/* Runs one of the control statements (BEGIN, SAVEPOINT, ...). */
static int ctl(tf_engine_t *e, const char *sql)
{
    int src = exec(e, sql, NULL, 0);

    if (src != SQLITE_OK) {
        char m[sizeof(e->msg)];
        snprintf(m, sizeof(m), "%s", e->msg);
        fmt_trunc(e->msg, sizeof(e->msg), "%s: %s", sql, m);
    }
    return src;
}

/* ------------------------------------------------------------------ */
/* Writer: the operations                                              */
/* ------------------------------------------------------------------ */

/* Runs the statement a builder of store/writes.h fills. */
#define EXEC_W(builder, ...) TF__WRITES_EXEC(e, exec, builder, __VA_ARGS__)

/* The statements this engine's dialect writes its own way (store/pg.c has
 * PostgreSQL's). */
static const char SQL_SLAVE_CONNECTED[] =
    "INSERT INTO slaves(name, connected, platform, version, tags, "
    "first_seen_ms, last_seen_ms, connected_ms) "
    "VALUES(?1, 1, ?2, ?3, ?4, ?5, ?5, ?5) "
    "ON CONFLICT(name) DO UPDATE SET connected = 1, platform = ?2, "
    "version = ?3, tags = ?4, first_seen_ms = coalesce(first_seen_ms, ?5), "
    "last_seen_ms = ?5, connected_ms = ?5, last_error = NULL, draining = 0";

static int op_slave_connected(tf_engine_t *e,
                              const tf_op_slave_connected_t *o)
{
    EXEC(SQL_SLAVE_CONNECTED, T(o->name), T(o->platform), T(o->version),
         T(o->tags_json), I(o->time_ms));
    return SQLITE_OK;
}

static const char SQL_REQUEST_CHANGE[] =
    "INSERT OR IGNORE INTO request_changes(request_id, change_id) "
    "VALUES(?1, ?2)";
static const char SQL_REQUEST_COLLAPSE_CHANGES[] =
    "INSERT OR IGNORE INTO request_changes(request_id, change_id) "
    "SELECT ?1, change_id FROM request_changes WHERE request_id = ?2";

static int op_request_create(tf_engine_t *e,
                             const tf_op_request_create_t *o)
{
    EXEC_W(tf__writes_request_create, o);
    for (size_t i = 0; i < o->nchanges; i++)
        EXEC(SQL_REQUEST_CHANGE, I(o->id), I(o->changes[i]));
    return SQLITE_OK;
}

static int op_request_end(tf_engine_t *e, tf_op_kind_t kind,
                          const tf_op_request_end_t *o)
{
    EXEC_W(tf__writes_request_end, kind, o);
    if (kind == TF_OP_REQUEST_COLLAPSE)
        EXEC(SQL_REQUEST_COLLAPSE_CHANGES, I(o->into), I(o->id));
    return SQLITE_OK;
}

static const char SQL_BUILD_CREATE[] =
    "INSERT INTO builds(id, builder, number, request_id, slave, state, "
    "created_ms, nsteps, properties, reason, repository, branch, revision, "
    "recipe, kind) "
    "VALUES(?1, ?2, ?3, ?4, ?5, 'starting', ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
    "?13, "
    "coalesce(?14, (SELECT CASE WHEN job_id IS NOT NULL OR patch_sha256 IS "
    "NOT NULL THEN 'try' ELSE 'ci' END FROM build_requests WHERE id = ?4), "
    "'ci'))";
static const char SQL_BUILD_CHANGES[] =
    "INSERT OR IGNORE INTO build_changes(build_id, change_id) "
    "SELECT ?1, change_id FROM request_changes WHERE request_id = ?2";
static const char SQL_OUTPUT_CHUNK[] =
    "INSERT INTO log_chunks(build_id, step, offset, seq, stream, line, data) "
    "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)";
static const char SQL_OUTPUT_STEP[] =
    "UPDATE steps SET log_bytes = ?1, log_lines = ?2 "
    "WHERE build_id = ?3 AND idx = ?4 RETURNING log_sealed";
static const char SQL_LOG_TAIL[] =
    "SELECT offset, line, data FROM log_chunks "
    "WHERE build_id = ?1 AND step = ?2 AND offset >= ?3 ORDER BY offset";
static const char SQL_BUILD_PROP[] =
    "UPDATE builds SET properties = json_set(properties, ?1, ?2) "
    "WHERE id = ?3";
static const char SQL_STAT[] =
    "INSERT OR REPLACE INTO stats(builder, build_id, step, name, value) "
    "VALUES(?1, ?2, ?3, ?4, ?5)";

/* Writes the builders rows of the tallied build starts (one UPDATE per
 * builder) and empties the tally. Returns an sqlite code. */
static int builder_tally_flush(tf_engine_t *e)
{
    int src = SQLITE_OK;

    for (size_t i = 0; i < e->ntally && src == SQLITE_OK; i++) {
        tf_sqlstmt_t st;
        tf_sqlval_t v[TF_WRITES_MAX_VALS];
        tf__writes_builder_builds(&st, v, e->tally[i].builder,
                                  e->tally[i].last_id, e->tally[i].n);
        src = tf__writes_run(e, exec, &st, 1);
    }
    e->ntally = 0;
    return src;
}

/* Counts a build start into its builder's tally, flushing the tally
 * first when it has no room for another builder. Returns an sqlite
 * code. */
static int builder_tally_add(tf_engine_t *e, const tf_op_build_create_t *o)
{
    size_t i;
    int src;

    for (i = 0; i < e->ntally; i++)
        if (strcmp(e->tally[i].builder, o->builder) == 0)
            break;
    if (i == BUILDER_TALLY) {
        if ((src = builder_tally_flush(e)) != SQLITE_OK)
            return src;
        i = 0;
    }
    if (i == e->ntally) {
        e->tally[i].builder = o->builder;
        e->tally[i].n = 0;
        e->ntally++;
    }
    e->tally[i].last_id = o->id;
    e->tally[i].n++;
    return SQLITE_OK;
}

/* A build's rows; its builder's row is counted in the tally (written by
 * apply_group when the run of build starts ends): a start batch's 256
 * builds update their builders' rows once per builder. */
static int op_build_create(tf_engine_t *e, const tf_op_build_create_t *o)
{
    EXEC(SQL_BUILD_CREATE, I(o->id), T(o->builder), I(o->number),
         I(o->request_id), T(o->slave), I(o->created_ms), I(o->nsteps),
         T(o->properties), T(o->reason), T(o->repository), T(o->branch),
         T(o->revision), T(o->recipe), T(o->kind));
    for (size_t i = 0; i < o->nsteps; i++)
        EXEC_W(tf__writes_build_step, o, i);
    /* The blamelist: the changes the request stands for, those of the
     * requests collapsed into it included. The one master of this
     * database holds every open request's changes in memory (it stores
     * each change of them it makes), so when it says there are none, the
     * lookup (a statement per build, most starts have no changes) is
     * skipped. */
    if (!o->no_changes)
        EXEC(SQL_BUILD_CHANGES, I(o->id), I(o->request_id));
    EXEC_W(tf__writes_build_request, o);
    return builder_tally_add(e, o);
}

/* A run of build starts (the consecutive build_create ops of a start
 * batch, each with its kind told) writes its builds rows, and its steps
 * rows, RUN_ROWS to a statement: a statement opens and closes a cursor on
 * the table and on each of its indexes, which, one row at a time, cost
 * about as much as the rows (tf-bench-store under callgrind: 603.6 to
 * 509.6 million instructions for 5,000 starts and their setup). The rest
 * of a start (its blamelist, its request, its builder's tally) stays one
 * op at a time, after the run's rows; none of it reads what they write.
 * The statements are INSERT OR FAIL: a failure stops the statement and
 * leaves its earlier rows, which the group's savepoint then rolls back
 * with the rest of the group (apply_batch), so sqlite keeps no statement
 * journal for them (OR ABORT's would copy every page they touch: 527.5
 * million). The builds rows take the kind as told (no lookup of the
 * request: a scalar subquery in a multi-row VALUES made it cost more
 * than it saved). A run that fails fails its group, whose units (one
 * build each) are then applied alone (store.c, split_group), one row at
 * a time. */
#define RUN_ROWS 32
#define BUILD_COLS 14 /* SQL_BUILD_CREATE's values */
#define STEP_COLS 5   /* tf__writes_build_step's */

static char sql_builds_run[RUN_ROWS * 200 + 256];
static char sql_steps_run[RUN_ROWS * 48 + 128];
static char sql_requests_run[RUN_ROWS * 32 + 256];
static pthread_once_t run_sql_once = PTHREAD_ONCE_INIT;

/* Writes the two statements of RUN_ROWS rows each (numbered parameters,
 * BUILD_COLS and STEP_COLS per row, as the one-row statements have). */
static void run_sql_make(void)
{
    size_t n = (size_t)snprintf(
        sql_builds_run, sizeof(sql_builds_run),
        "INSERT OR FAIL INTO builds(id, builder, number, request_id, slave, "
        "state, created_ms, nsteps, properties, reason, repository, branch, "
        "revision, recipe, kind) VALUES");
    for (unsigned r = 0; r < RUN_ROWS && n < sizeof(sql_builds_run); r++) {
        unsigned b = r * BUILD_COLS;
        n += (size_t)snprintf(
            sql_builds_run + n, sizeof(sql_builds_run) - n,
            "%s(?%u, ?%u, ?%u, ?%u, ?%u, 'starting', ?%u, ?%u, ?%u, ?%u, "
            "?%u, ?%u, ?%u, ?%u, ?%u)",
            r ? ", " : "", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7,
            b + 8, b + 9, b + 10, b + 11, b + 12, b + 13, b + 14);
    }
    n = (size_t)snprintf(sql_steps_run, sizeof(sql_steps_run),
                         "INSERT OR FAIL INTO steps(build_id, idx, name, "
                         "state, command, flags) VALUES");
    for (unsigned r = 0; r < RUN_ROWS && n < sizeof(sql_steps_run); r++) {
        unsigned b = r * STEP_COLS;
        n += (size_t)snprintf(sql_steps_run + n, sizeof(sql_steps_run) - n,
                              "%s(?%u, ?%u, ?%u, 'pending', ?%u, ?%u)",
                              r ? ", " : "", b + 1, b + 2, b + 3, b + 4,
                              b + 5);
    }
    n = (size_t)snprintf(sql_requests_run, sizeof(sql_requests_run),
                         "UPDATE OR FAIL build_requests SET state = 'running', "
                         "build_id = v.column1, started_ms = "
                         "coalesce(started_ms, v.column2) FROM (VALUES");
    for (unsigned r = 0; r < RUN_ROWS && n < sizeof(sql_requests_run); r++)
        n += (size_t)snprintf(sql_requests_run + n,
                              sizeof(sql_requests_run) - n,
                              "%s(?%u, ?%u, ?%u)", r ? ", " : "", r * 3 + 1,
                              r * 3 + 2, r * 3 + 3);
    if (n < sizeof(sql_requests_run))
        snprintf(sql_requests_run + n, sizeof(sql_requests_run) - n,
                 ") AS v WHERE build_requests.id = v.column3");
}

/* The number of build_create ops from op on whose kind is told (op's
 * run; one whose kind is not takes the one-row statement, which reads it
 * from the request's row). */
static size_t run_length(const tf_op_t *op)
{
    size_t n = 0;
    for (; op && op->kind == TF_OP_BUILD_CREATE && op->u.build_create.kind;
         op = op->next)
        n++;
    return n;
}

/* Applies the nchunks * RUN_ROWS build starts from *op and moves *op past
 * them. Returns an sqlite code. */
static int build_create_run(tf_engine_t *e, const tf_op_t **op,
                            size_t nchunks)
{
    tf_sqlval_t v[RUN_ROWS * BUILD_COLS];
    int src;

    pthread_once(&run_sql_once, run_sql_make);
    for (size_t c = 0; c < nchunks; c++) {
        const tf_op_t *first = *op, *p = first;
        size_t k = 0, nsv = 0;

        for (unsigned r = 0; r < RUN_ROWS; r++, p = p->next) {
            const tf_op_build_create_t *o = &p->u.build_create;
            tf_sqlval_t row[BUILD_COLS] = {
                I(o->id), T(o->builder), I(o->number), I(o->request_id),
                T(o->slave), I(o->created_ms), I(o->nsteps),
                T(o->properties), T(o->reason), T(o->repository),
                T(o->branch), T(o->revision), T(o->recipe), T(o->kind),
            };
            memcpy(&v[k], row, sizeof(row));
            k += BUILD_COLS;
        }
        if ((src = exec(e, sql_builds_run, v, k)) != SQLITE_OK)
            return src;
        /* The steps, RUN_ROWS rows to a statement, the rest one by one. */
        p = first;
        for (unsigned r = 0; r < RUN_ROWS; r++, p = p->next) {
            const tf_op_build_create_t *o = &p->u.build_create;
            for (size_t i = 0; i < o->nsteps; i++) {
                tf_sqlval_t row[STEP_COLS] = {
                    I(o->id), I(i), T(o->steps[i].name),
                    T(o->steps[i].command_json), I(o->steps[i].flags),
                };
                memcpy(&v[nsv * STEP_COLS], row, sizeof(row));
                if (++nsv == RUN_ROWS) {
                    src = exec(e, sql_steps_run, v, nsv * STEP_COLS);
                    if (src != SQLITE_OK)
                        return src;
                    nsv = 0;
                }
            }
        }
        for (size_t i = 0; i < nsv; i++) {
            src = exec(e, tf__sql_build_step, &v[i * STEP_COLS], STEP_COLS);
            if (src != SQLITE_OK)
                return src;
        }
        /* The requests: one statement, unless one request has two starts
         * in the chunk (none does: a started request leaves the queue),
         * where UPDATE ... FROM would pick either; one by one then, in
         * order, as the one-row path writes them. */
        bool twice = false;
        p = first;
        for (unsigned r = 0; r < RUN_ROWS; r++, p = p->next) {
            const tf_op_build_create_t *o = &p->u.build_create;
            if (!o->no_changes)
                EXEC(SQL_BUILD_CHANGES, I(o->id), I(o->request_id));
            tf_sqlval_t row[3] = {I(o->id), I(o->created_ms),
                                  I(o->request_id)};
            memcpy(&v[r * 3], row, sizeof(row));
            for (unsigned q = 0; q < r && !twice; q++)
                twice = v[q * 3 + 2].i == v[r * 3 + 2].i;
            if ((src = builder_tally_add(e, o)) != SQLITE_OK)
                return src;
        }
        const tf_op_t *next = p;
        p = first;
        for (unsigned r = 0; twice && r < RUN_ROWS; r++, p = p->next)
            EXEC_W(tf__writes_build_request, &p->u.build_create);
        if (!twice &&
            (src = exec(e, sql_requests_run, v, RUN_ROWS * 3)) != SQLITE_OK)
            return src;
        *op = next;
    }
    return SQLITE_OK;
}

/* The event chain (store.h, tf_op_build_seq): nothing after a hole. */
static int op_build_seq(tf_engine_t *e, const tf_op_build_seq_t *o)
{
    EXEC(tf__sql_build_seq, I(o->seq), I(o->build_id), I(o->seq - 1));
    if (sqlite3_changes(e->db) != 1) {
        snprintf(e->msg, sizeof(e->msg),
                 "build %" PRIu64 ": event %" PRIu64 " does not follow the "
                 "last stored event (an earlier one was not stored)",
                 o->build_id, o->seq);
        return SQLITE_CONSTRAINT;
    }
    return SQLITE_OK;
}

/* ---- Log blocks (store/logblock.h) ----
 *
 * The open tail of a step's log is its chunks from log_sealed on. Sealing
 * takes whole chunks from there, at least TF_LOGBLOCK_TARGET bytes when
 * the tail has them, packs them into one block, stores it and drops the
 * chunks, and moves log_sealed past them: inside the transaction of the
 * group that caused it, so readers see either the chunks or the block. */

/* Runs a cached statement that returns one row of integers into out[n]
 * (no row: *found false). */
static int query_ints(tf_engine_t *e, const char *sql, const tf_sqlval_t *v,
                      size_t nv, int64_t *out, size_t n, bool *found)
{
    sqlite3_stmt *st;
    int src = cache_get(e, sql, &st);

    *found = false;
    if (src != SQLITE_OK)
        return src;
    src = bind_vals(st, v, nv, SQLITE_STATIC);
    if (src != SQLITE_OK) {
        snprintf(e->msg, sizeof(e->msg), "bind: %s", sqlite3_errmsg(e->db));
        sqlite3_clear_bindings(st);
        return src;
    }
    src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        *found = true;
        for (size_t i = 0; i < n; i++)
            out[i] = sqlite3_column_int64(st, (int)i);
        while ((src = sqlite3_step(st)) == SQLITE_ROW)
            ;
    }
    if (src != SQLITE_DONE)
        snprintf(e->msg, sizeof(e->msg), "%s", sqlite3_errmsg(e->db));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return src == SQLITE_DONE ? SQLITE_OK : src;
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

/* Stores the block [from, to) of (build_id, step), starting at line,
 * and drops the chunks it replaces. */
static int block_store(tf_engine_t *e, uint64_t build_id, unsigned step,
                       uint64_t from, uint64_t to, uint64_t line,
                       const void *blob, size_t blen, int codec)
{
    EXEC(tf__sql_log_block_put, I(build_id), I(step), I(from), I(line),
         I(to - from), I(codec), tf_sql_blob(blob, blen));
    EXEC(tf__sql_log_tail_drop, I(build_id), I(step), I(from), I(to));
    EXEC(tf__sql_log_sealed, I(to), I(build_id), I(step));
    return SQLITE_OK;
}

/* Seals one block of the tail of (build_id, step) from byte `from`: the
 * chunks from there, until they hold TF_LOGBLOCK_TARGET bytes or run out
 * (or a hole, which is left as it is). *to gets the new log_sealed (from
 * when nothing was sealed). */
static int seal_block(tf_engine_t *e, uint64_t build_id, unsigned step,
                      uint64_t from, uint64_t *to)
{
    sqlite3_stmt *st;
    uint64_t pos = from, line = 0;
    size_t n = 0;
    int src;

    *to = from;
    src = cache_get(e, SQL_LOG_TAIL, &st);
    if (src != SQLITE_OK)
        return src;
    sqlite3_bind_int64(st, 1, (int64_t)build_id);
    sqlite3_bind_int(st, 2, (int)step);
    sqlite3_bind_int64(st, 3, (int64_t)from);
    while (n < TF_LOGBLOCK_TARGET && (src = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t off = (uint64_t)sqlite3_column_int64(st, 0);
        const void *d = sqlite3_column_blob(st, 2);
        size_t len = (size_t)sqlite3_column_bytes(st, 2);
        if (off != pos || n + len > TF_LOGBLOCK_MAX)
            break; /* a hole, or a block would grow past its cap */
        if (n == 0)
            line = (uint64_t)sqlite3_column_int64(st, 1);
        if (!seal_room(e, n + len)) {
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            snprintf(e->msg, sizeof(e->msg), "out of memory sealing a log");
            return SQLITE_NOMEM;
        }
        if (len)
            memcpy(e->sealbuf + n, d, len);
        n += len;
        pos += len;
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE) {
        snprintf(e->msg, sizeof(e->msg), "%s", sqlite3_errmsg(e->db));
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return src;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (n == 0)
        return SQLITE_OK;
    if (!e->packer && !(e->packer = tf_logpacker_new())) {
        snprintf(e->msg, sizeof(e->msg), "out of memory sealing a log");
        return SQLITE_NOMEM;
    }
    const void *blob;
    size_t blen;
    int codec;
    int rc = tf_logblock_pack(e->packer, e->sealbuf, n, &blob, &blen, &codec);
    if (rc != 0) {
        snprintf(e->msg, sizeof(e->msg), "packing a log block: %s",
                 tf_strerror(rc));
        return rc == TF_ENOMEM ? SQLITE_NOMEM : SQLITE_ERROR;
    }
    src = block_store(e, build_id, step, from, pos, line, blob, blen, codec);
    if (src == SQLITE_OK)
        *to = pos;
    return src;
}

/* ---- Streamed blocks (logblock.h, the sealer) ----
 *
 * A step whose log has filled a block gets a stream, when one of the
 * sealer's TF_LOGSEALER_STREAMS is free: from the block's end on, each
 * chunk it stores is also fed to the stream, and when the tail holds
 * TF_LOGBLOCK_TARGET bytes the stream's frame is the block, stored as
 * seal_block would. The stream is only used when it holds exactly the
 * tail ([log_sealed, log_bytes), fed in order); anything else (a hole, a
 * chunk out of order, a group rolled back after it fed the stream) drops
 * the stream and the tail is sealed on this thread as before. Streams
 * are released when their step ends, or taken by another step once not
 * fed for STREAM_IDLE_FEEDS chunks (so a step that never ends does not
 * hold one for good). */
#define STREAM_IDLE_FEEDS 4096u

static int stream_find(tf_engine_t *e, uint64_t build_id, unsigned step)
{
    for (int i = 0; i < TF_LOGSEALER_STREAMS; i++)
        if (e->streams[i].used && e->streams[i].build_id == build_id &&
            e->streams[i].step == step)
            return i;
    return -1;
}

static void stream_drop(tf_engine_t *e, int i)
{
    e->streams[i].used = false;
    tf_logsealer_start(e->sealer, (unsigned)i);
}

/* Every stream: a batch or group was rolled back, so what they were fed
 * may not be stored. */
static void streams_drop_all(tf_engine_t *e)
{
    for (int i = 0; i < TF_LOGSEALER_STREAMS; i++)
        if (e->streams[i].used)
            stream_drop(e, i);
}

/* Gives (build_id, step) a stream starting at byte `from` (its tail is
 * empty) when one is free. */
static void stream_claim(tf_engine_t *e, uint64_t build_id, unsigned step,
                         uint64_t from)
{
    if (!e->sealer && !e->sealer_failed) {
        e->sealer = tf_logsealer_new();
        if (!e->sealer) {
            e->sealer_failed = true;
            tf_warn(SUB, "no thread to compress logs on: the writer "
                         "compresses them itself");
        }
    }
    if (!e->sealer)
        return;
    /* A stream not fed for STREAM_IDLE_FEEDS chunks (its step went quiet,
     * or never ended cleanly) is given to the new step. */
    int idle = -1;
    for (int i = 0; i < TF_LOGSEALER_STREAMS; i++)
        if (e->streams[i].used &&
            e->feeds - e->streams[i].last_feed > STREAM_IDLE_FEEDS &&
            (idle < 0 || e->streams[i].last_feed < e->streams[idle].last_feed))
            idle = i;
    for (int i = 0; i < TF_LOGSEALER_STREAMS; i++) {
        if (e->streams[i].used && i != idle)
            continue;
        if (e->streams[i].used)
            stream_drop(e, i);
        e->streams[i].used = true;
        e->streams[i].build_id = build_id;
        e->streams[i].step = step;
        e->streams[i].from = e->streams[i].pos = from;
        e->streams[i].line = 0;
        e->streams[i].last_feed = e->feeds;
        tf_logsealer_start(e->sealer, (unsigned)i);
        return;
    }
}

/* Feeds o's chunk to its step's stream, if it has one; returns the
 * stream or -1. */
static int stream_feed(tf_engine_t *e, const tf_op_output_t *o)
{
    int i = stream_find(e, o->build_id, o->step);
    if (i < 0)
        return -1;
    if (e->streams[i].pos != o->offset ||
        tf_logsealer_feed(e->sealer, (unsigned)i, o->data, o->len) != 0) {
        stream_drop(e, i);
        return -1;
    }
    if (e->streams[i].pos == e->streams[i].from)
        e->streams[i].line = o->line;
    e->streams[i].pos += o->len;
    e->streams[i].last_feed = ++e->feeds;
    return i;
}

/* Stores stream i's frame as the block [sealed, bytes) when it holds
 * exactly that tail (else drops the stream). *done tells whether it
 * did; the stream then goes on from bytes. */
static int stream_seal(tf_engine_t *e, int i, uint64_t sealed,
                       uint64_t bytes, bool *done)
{
    const void *blob;
    size_t blen;
    int codec;

    *done = false;
    if (e->streams[i].from != sealed || e->streams[i].pos != bytes ||
        bytes == sealed) {
        stream_drop(e, i);
        return SQLITE_OK;
    }
    int rc = tf_logsealer_finish(e->sealer, (unsigned)i, &blob, &blen,
                                 &codec);
    if (rc != 0) {
        tf_warn(SUB, "build %" PRIu64 " step %u: compressing a log block "
                     "off the writer failed (%s); sealing it here",
                e->streams[i].build_id, e->streams[i].step,
                tf_strerror(rc));
        stream_drop(e, i);
        return SQLITE_OK;
    }
    int src = block_store(e, e->streams[i].build_id, e->streams[i].step,
                          sealed, bytes, e->streams[i].line, blob, blen,
                          codec);
    if (src != SQLITE_OK)
        return src;
    e->streams[i].from = bytes;
    *done = true;
    return SQLITE_OK;
}

/* Seals the whole tail of a step that ended (several blocks for a log
 * of an older version that was never sealed). */
static int seal_rest(tf_engine_t *e, uint64_t build_id, unsigned step)
{
    int64_t v[2];
    bool found;
    int src = query_ints(e, tf__sql_log_step, (tf_sqlval_t[]){I(build_id),
                         I(step)}, 2, v, 2, &found);
    if (src != SQLITE_OK || !found)
        return src;
    uint64_t sealed = (uint64_t)v[0], bytes = (uint64_t)v[1];
    int i = stream_find(e, build_id, step);
    if (i >= 0) {
        bool done;
        src = stream_seal(e, i, sealed, bytes, &done);
        if (src != SQLITE_OK)
            return src;
        if (done)
            sealed = bytes;
        stream_drop(e, i);
    }
    while (sealed < bytes) {
        uint64_t to;
        src = seal_block(e, build_id, step, sealed, &to);
        if (src != SQLITE_OK || to == sealed)
            return src; /* done, or a hole that stays a tail */
        sealed = to;
    }
    return SQLITE_OK;
}

static int op_output(tf_engine_t *e, const tf_op_output_t *o)
{
    int64_t sealed;
    bool found;
    uint64_t to;

    EXEC(SQL_OUTPUT_CHUNK, I(o->build_id), I(o->step), I(o->offset),
         I(o->seq), I(o->stream), I(o->line), tf_sql_blob(o->data, o->len));
    int src = query_ints(e, SQL_OUTPUT_STEP,
                         (tf_sqlval_t[]){I(o->log_bytes), I(o->log_lines),
                                         I(o->build_id), I(o->step)},
                         4, &sealed, 1, &found);
    if (src != SQLITE_OK || !found)
        return src;
    int i = stream_feed(e, o);
    if (o->log_bytes - (uint64_t)sealed < TF_LOGBLOCK_TARGET)
        return SQLITE_OK;
    if (i >= 0) {
        bool done;
        src = stream_seal(e, i, (uint64_t)sealed, o->log_bytes, &done);
        if (src != SQLITE_OK || done)
            return src;
    }
    src = seal_block(e, o->build_id, o->step, (uint64_t)sealed, &to);
    if (src == SQLITE_OK && to == o->log_bytes &&
        stream_find(e, o->build_id, o->step) < 0)
        stream_claim(e, o->build_id, o->step, to);
    return src;
}

static int op_step_finish(tf_engine_t *e, const tf_op_step_finish_t *o)
{
    EXEC_W(tf__writes_step_finish, o);
    return seal_rest(e, o->build_id, o->step);
}

static int op_build_prop(tf_engine_t *e, const tf_op_build_prop_t *o)
{
    char path[300];

    fmt_trunc(path, sizeof(path), "$.%s", o->key ? o->key : "");
    EXEC(SQL_BUILD_PROP, T(path), T(o->value), I(o->build_id));
    if (o->key && strcmp(o->key, "got_revision") == 0)
        EXEC(tf__sql_build_got_revision, T(o->value), I(o->build_id));
    return SQLITE_OK;
}

static int op_stat(tf_engine_t *e, const tf_op_stat_t *o)
{
    sqlite3_stmt *st;
    int src = cache_get(e, SQL_STAT, &st);

    if (src != SQLITE_OK)
        return src;
    tf_sqlval_t v[] = {T(o->builder), I(o->build_id), I(o->step),
                       T(o->name)};
    src = bind_vals(st, v, 4, SQLITE_STATIC);
    if (src == SQLITE_OK)
        src = sqlite3_bind_double(st, 5, o->value);
    if (src != SQLITE_OK) {
        snprintf(e->msg, sizeof(e->msg), "bind: %s", sqlite3_errmsg(e->db));
        sqlite3_clear_bindings(st);
        return src;
    }
    return stmt_run(e, st);
}

static int op_test_result(tf_engine_t *e, const tf_op_test_result_t *o)
{
    const char *status = o->status;

    if (strcmp(status, "pass") == 0) {
        EXEC(tf__sql_test_flaky, I(o->build_id), T(o->suite), T(o->name));
        if (sqlite3_changes(e->db) > 0)
            status = "flaky";
    }
    EXEC_W(tf__writes_test_result, o, status);
    return SQLITE_OK;
}

static int op_step_force_end(tf_engine_t *e,
                             const tf_op_step_force_end_t *o)
{
    EXEC_W(tf__writes_step_force_end, o);
    return seal_rest(e, o->build_id, o->step);
}

static int op_build_finish(tf_engine_t *e, const tf_op_build_finish_t *o)
{
    tf_sqlstmt_t st[TF_WRITES_MAX_STMTS];
    tf_sqlval_t v[TF_WRITES_MAX_VALS];

    EXEC(tf__sql_build_finish, I(o->result), I(o->time_ms), T(o->text),
         I(o->build_id));
    return tf__writes_run(e, exec, st, tf__writes_build_finish_rest(st, v, o));
}



/* Outbox rows, with the mail statements of store/mail.c (one copy of
 * them: the rules deciding whether a mail is due live there). */
static int op_mail(tf_engine_t *e, const tf_op_t *op)
{
    tf_sqlval_t v[TF_STORE_MAIL_MAX_VALS];
    tf_sqlstmt_t st;

    if (op->kind == TF_OP_MAIL_JOB) {
        tf_store_mail_queue_job(&st, v, op->u.mail_job.job_id,
                                op->u.mail_job.time_ms);
    } else {
        const tf_op_mail_build_t *o = &op->u.mail_build;
        tf_store_mail_queue_build(&st, v, o->build_id, o->builder,
                                  (int)o->result, (int)o->mode,
                                  o->recipients_json, o->time_ms);
    }
    return exec(e, st.sql, st.vals, st.nvals);
}

static int op_job(tf_engine_t *e, const tf_op_t *op)
{
    switch (op->kind) {
    case TF_OP_MAIL_JOB:
    case TF_OP_MAIL_BUILD:
        return op_mail(e, op);
    case TF_OP_USER_ADD:
    case TF_OP_USER_REMOVE:
        EXEC_W(tf__writes_user, op->kind, &op->u.user);
        if (op->u.user.changed)
            *op->u.user.changed = sqlite3_changes(e->db) > 0;
        break;
    default:
        snprintf(e->msg, sizeof(e->msg), "unknown operation %d", op->kind);
        return SQLITE_MISUSE;
    }
    return SQLITE_OK;
}


/* Inserts each change (a known one keeps its id), reads its id back, and
 * moves the poller's last revision. */
static int op_changes_record(tf_engine_t *e,
                             const tf_op_changes_record_t *o)
{
    for (size_t i = 0; i < o->n; i++) {
        const tf_change_rec_t *c = &o->changes[i];
        sqlite3_stmt *sel;
        int src;

        EXEC_W(tf__writes_change_insert, o, i);
        if (o->fresh_out)
            o->fresh_out[i] = sqlite3_changes(e->db) == 1;
        src = cache_get(e, tf__sql_change_id, &sel);
        if (src != SQLITE_OK)
            return src;
        tf_sqlval_t v[] = {T(o->repository), T(o->branch), T(c->revision)};
        src = bind_vals(sel, v, 3, SQLITE_STATIC);
        if (src == SQLITE_OK) {
            src = sqlite3_step(sel);
            if (src == SQLITE_ROW && o->ids_out)
                o->ids_out[i] = (uint64_t)sqlite3_column_int64(sel, 0);
        }
        if (src != SQLITE_ROW)
            snprintf(e->msg, sizeof(e->msg), "change id: %s",
                     src == SQLITE_DONE ? "not found after its insert"
                                        : sqlite3_errmsg(e->db));
        sqlite3_reset(sel);
        sqlite3_clear_bindings(sel);
        if (src != SQLITE_ROW)
            return src == SQLITE_DONE ? SQLITE_CONSTRAINT : src;
    }
    EXEC(tf__sql_poller_head, T(o->repository), T(o->branch), T(o->head),
         I(o->time_ms));
    return SQLITE_OK;
}

/* A raw write function (store_sqlite.h). fn returns 0 or a negative code.
 * When it fails, the connection's last error decides what kind of failure
 * it was: if the sqlite call that made fn give up hit a database-wide
 * error, so did the group, and the whole batch is retried; anything else
 * fails the group alone. So a fn must return as soon as an sqlite call
 * fails, finalizing or resetting its statements on the way out but
 * making no other call that would overwrite the error. */
static int op_sql_fn(tf_engine_t *e, const tf_op_sql_fn_t *o)
{
    int r = o->fn(e->db, o->arg), src;

    if (r == 0)
        return SQLITE_OK;
    src = sqlite3_extended_errcode(e->db);
    if (is_db_wide(src)) {
        snprintf(e->msg, sizeof(e->msg), "%s", sqlite3_errmsg(e->db));
        return src;
    }
    if (src != SQLITE_OK && src != SQLITE_ROW && src != SQLITE_DONE)
        fmt_trunc(e->msg, sizeof(e->msg),
                  "write function returned %d (%s) after: %s", r,
                  tf_strerror(r), sqlite3_errmsg(e->db));
    else
        fmt_trunc(e->msg, sizeof(e->msg), "write function returned %d (%s)",
                  r, tf_strerror(r));
    return SQLITE_ERROR;
}

/* Applies one op. Returns an sqlite code, the message in e->msg. */
static int op_apply(tf_engine_t *e, const tf_op_t *op)
{
    tf_sqlstmt_t st[TF_WRITES_MAX_STMTS];
    tf_sqlval_t v[TF_WRITES_MAX_VALS];
    size_t n = tf__writes_op(op, st, v);

    if (n > 0)
        return tf__writes_run(e, exec, st, n);
    switch (op->kind) {
    case TF_OP_SLAVE_CONNECTED:
        return op_slave_connected(e, &op->u.slave_connected);
    case TF_OP_REQUEST_CREATE:
        return op_request_create(e, &op->u.request_create);
    case TF_OP_REQUEST_REQUEUE:
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
    case TF_OP_STEP_FORCE_END:
        return op_step_force_end(e, &op->u.step_force_end);
    case TF_OP_TEST_RESULT:
        return op_test_result(e, &op->u.test_result);
    case TF_OP_BUILD_FINISH:
        return op_build_finish(e, &op->u.build_finish);
    case TF_OP_BUILD_ADOPT:
        return SQLITE_OK; /* one master owns every build (store.h) */
    case TF_OP_CANCEL_MARK:
        return SQLITE_OK; /* one master cancels in memory (store.h) */
    case TF_OP_CHANGES_RECORD:
        return op_changes_record(e, &op->u.changes_record);
    case TF_OP_SQL:
        return exec(e, op->u.sql.sql, op->u.sql.vals, op->u.sql.nvals);
    case TF_OP_SQL_FN:
        return op_sql_fn(e, &op->u.sql_fn);
    default:
        return op_job(e, op);
    }
}

/* ------------------------------------------------------------------ */
/* Writer: a batch                                                     */
/* ------------------------------------------------------------------ */

/* Applies g's ops in order. The builders rows of a run of build starts
 * are written where the run ends (before the next op of another kind, or
 * at the group's end), so every op sees what it would have seen had each
 * start written its own. */
static int apply_group(tf_engine_t *e, const tf_wgroup_t *g)
{
    int src = SQLITE_OK;

    e->ntally = 0;
    for (const tf_op_t *op = g->head; op && src == SQLITE_OK;) {
        if (op->kind != TF_OP_BUILD_CREATE && e->ntally)
            src = builder_tally_flush(e);
        if (src != SQLITE_OK)
            break;
        size_t n = op->kind == TF_OP_BUILD_CREATE ? run_length(op) : 0;
        if (n >= RUN_ROWS) {
            src = build_create_run(e, &op, n / RUN_ROWS); /* moves op */
            continue;
        }
        src = op_apply(e, op);
        op = op->next;
    }
    if (src == SQLITE_OK)
        src = builder_tally_flush(e);
    e->ntally = 0;
    return src;
}

static int apply_batch(tf_engine_t *e, tf_wgroup_t *first, size_t n,
                       char *err, size_t errlen)
{
    tf_wgroup_t *g = first;
    int src;

    src = ctl(e, SQL_BEGIN);
    if (src != SQLITE_OK)
        goto fail;
    for (size_t i = 0; i < n; i++, g = g->next) {
        g->rc = 0;
        if (g->poisoned) {
            g->rc = TF_ESTORE;
            continue;
        }
        src = ctl(e, SQL_SAVEPOINT);
        if (src != SQLITE_OK)
            goto fail;
        src = apply_group(e, g);
        if (src != SQLITE_OK && is_db_wide(src))
            goto fail;
        if (src != SQLITE_OK)
            streams_drop_all(e); /* they may hold what rolls back */
        if (src == SQLITE_OK && sqlite3_get_autocommit(e->db)) {
            /* A write function ended the transaction (a bug). Failing it
             * alone and redoing the batch beats retrying it forever. */
            streams_drop_all(e);
            tf_error(SUB, "a write function ended the batch transaction; "
                          "failing it and redoing its batch");
            g->rc = TF_ESTORE;
            g->poisoned = true;
            return TF_ENG_RETRY_NOW;
        }
        if (src != SQLITE_OK) {
            tf_warn(SUB, "write failed alone: %s; in: %.200s", e->msg,
                    tf__wgroup_what(g));
            g->rc = TF_ESTORE;
            if (sqlite3_get_autocommit(e->db)) {
                /* e.g. INSERT OR ROLLBACK: the group rolled back the whole
                 * transaction. Leave it out and redo the others. */
                g->poisoned = true;
                return TF_ENG_RETRY_NOW;
            }
            src = ctl(e, SQL_ROLLBACK_TO);
            if (src != SQLITE_OK)
                goto fail;
        }
        src = ctl(e, SQL_RELEASE);
        if (src != SQLITE_OK)
            goto fail;
    }
    src = ctl(e, SQL_COMMIT);
    if (src != SQLITE_OK)
        goto fail;
    ckpt_kick(e);
    return TF_ENG_OK;

fail:
    streams_drop_all(e);
    if (!is_db_wide(src)) {
        /* A control statement failed for a reason that is not the
         * database's: treat it as one anyway (retrying is safe), but keep
         * the message. */
        tf_error(SUB, "unexpected failure in a batch: %s (sqlite error %d)",
                 e->msg, src);
    }
    if (!sqlite3_get_autocommit(e->db)) {
        char keep[sizeof(e->msg)];
        memcpy(keep, e->msg, sizeof(keep));
        if (ctl(e, SQL_ROLLBACK) != SQLITE_OK)
            tf_error(SUB, "rollback failed: %s", e->msg);
        memcpy(e->msg, keep, sizeof(keep));
    }
    if ((src & 0xff) == SQLITE_CORRUPT)
        tf_error(SUB, "%s: the database reports corruption: %s", e->path,
                 e->msg);
    fmt_trunc(err, errlen, "%s (sqlite error %d)", e->msg,
              src == SQLITE_OK ? SQLITE_ERROR : src);
    return TF_ENG_DB_FAILED;
}

/* ---- Retention (store.h, tf_retention_t) ----
 *
 * One unit removes a batch of one build's logs: at most RET_BLOCKS blocks
 * and RET_CHUNKS chunks, so a transaction frees about a MiB of pages and
 * never keeps the writer from a waiting group for long. The build whose
 * logs are all gone gets logs_removed_ms. Candidates are found through
 * builds_logs_kept (a builder's finished builds that still have logs,
 * by number), one builder after another. */
#define RET_BLOCKS 16
#define RET_CHUNKS 256

static const char SQL_RET_BUILDERS[] =
    "SELECT DISTINCT builder FROM builds WHERE logs_removed_ms IS NULL "
    "AND state = 'finished' AND builder > ?1 ORDER BY builder LIMIT 1";
static const char SQL_RET_BY_SIZE[] =
    "SELECT id, (SELECT coalesce(sum(log_bytes), 0) FROM steps "
    "WHERE build_id = b.id) FROM builds b WHERE builder = ?1 "
    "AND logs_removed_ms IS NULL AND state = 'finished' "
    "ORDER BY number DESC";
static const char SQL_RET_DROP_BLOCKS[] =
    "DELETE FROM log_blocks WHERE rowid IN (SELECT rowid FROM log_blocks "
    "WHERE build_id = ?1 LIMIT ?2)";
static const char SQL_RET_DROP_CHUNKS[] =
    "DELETE FROM log_chunks WHERE rowid IN (SELECT rowid FROM log_chunks "
    "WHERE build_id = ?1 LIMIT ?2)";

/* The oldest build of builder whose logs the rule no longer keeps, or 0. */
static int expired_build(tf_engine_t *e, const char *builder,
                         const tf_retention_rule_t *r, int64_t now_ms,
                         uint64_t *id)
{
    int64_t v[1];
    bool found = false;
    int src;

    *id = 0;
    if (r->log_builds > 0) {
        src = query_ints(e, tf__sql_ret_by_count,
                         (tf_sqlval_t[]){T(builder), I(r->log_builds - 1)},
                         2, v, 1, &found);
        if (src != SQLITE_OK || found)
            goto out;
    }
    if (r->log_days > 0) {
        src = query_ints(e, tf__sql_ret_by_age,
                         (tf_sqlval_t[]){T(builder),
                                         I(now_ms - r->log_days * 86400000)},
                         2, v, 1, &found);
        if (src != SQLITE_OK || found)
            goto out;
    }
    if (r->log_bytes > 0) {
        sqlite3_stmt *st;
        src = cache_get(e, SQL_RET_BY_SIZE, &st);
        if (src != SQLITE_OK)
            return src;
        sqlite3_bind_text(st, 1, builder, -1, SQLITE_STATIC);
        int64_t sum = 0;
        while ((src = sqlite3_step(st)) == SQLITE_ROW) {
            sum += sqlite3_column_int64(st, 1);
            if (sum > r->log_bytes) {
                v[0] = sqlite3_column_int64(st, 0);
                found = true;
                break;
            }
        }
        if (src != SQLITE_ROW && src != SQLITE_DONE)
            snprintf(e->msg, sizeof(e->msg), "%s", sqlite3_errmsg(e->db));
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (src != SQLITE_ROW && src != SQLITE_DONE)
            return src;
    }
    src = SQLITE_OK;
out:
    if (src == SQLITE_OK && found)
        *id = (uint64_t)v[0];
    return src;
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
            sqlite3_stmt *st;
            char builder[TF_NAME_MAX + 1];
            int src = cache_get(e, SQL_RET_BUILDERS, &st);
            if (src != SQLITE_OK)
                return src;
            sqlite3_bind_text(st, 1, e->ret_builder, -1, SQLITE_STATIC);
            src = sqlite3_step(st);
            bool have = src == SQLITE_ROW;
            if (have)
                snprintf(builder, sizeof(builder), "%s",
                         (const char *)sqlite3_column_text(st, 0));
            if (src != SQLITE_ROW && src != SQLITE_DONE)
                snprintf(e->msg, sizeof(e->msg), "%s",
                         sqlite3_errmsg(e->db));
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            if (src != SQLITE_ROW && src != SQLITE_DONE)
                return src;
            if (!have)
                break;
            const tf_retention_rule_t *r = tf__retention_rule_for(ret, builder);
            uint64_t id = 0;
            if (tf__retention_limits(r)) {
                src = expired_build(e, builder, r, now_ms, &id);
                if (src != SQLITE_OK)
                    return src;
            }
            if (!id) {
                snprintf(e->ret_builder, sizeof(e->ret_builder), "%s",
                         builder);
                continue;
            }
            EXEC(SQL_RET_DROP_BLOCKS, I(id), I(RET_BLOCKS));
            int gone = sqlite3_changes(e->db);
            EXEC(SQL_RET_DROP_CHUNKS, I(id), I(RET_CHUNKS));
            gone += sqlite3_changes(e->db);
            if (gone == 0) {
                EXEC(tf__sql_ret_mark, I(now_ms), I(id));
                EXEC(tf__sql_ret_mark_steps, I(id));
                tf_debug(SUB, "build %" PRIu64 " of %s: logs removed by "
                              "retention", id, builder);
            }
            *did = true;
            return SQLITE_OK; /* the same builder again next time */
        }
        e->ret_builder[0] = '\0';
    }
    return SQLITE_OK;
}

/* Idle work (engine.h, maintain): seals one block of a finished step's
 * tail that is still open (a log stored by an older version, or a step
 * whose end came without its output sealed), in a transaction of its
 * own. The walk goes through steps_unsealed in order and skips a step
 * it cannot seal (a hole in its chunks), so it always ends. */
static int maintain(tf_engine_t *e, const tf_retention_t *ret,
                    int64_t now_ms, bool *removed, char *err, size_t errlen)
{
    int64_t v[2];
    bool found, did = false;
    uint64_t to = 0;
    int src;

    src = ctl(e, SQL_BEGIN);

    *removed = false;
    if (src != SQLITE_OK)
        goto fail;
    src = query_ints(e, tf__sql_log_unsealed,
                     (tf_sqlval_t[]){I(e->maint_build), I(e->maint_step)},
                     2, v, 2, &found);
    if (src != SQLITE_OK)
        goto fail;
    if (!found) {
        e->maint_build = 0;
        e->maint_step = 0;
        tf__engine_holes_report(&e->maint_holes);
        src = retention_step(e, ret, now_ms, &did);
        if (src != SQLITE_OK)
            goto fail;
        src = ctl(e, SQL_COMMIT);
        if (src != SQLITE_OK)
            goto fail;
        if (did && e->ckpt_started)
            ckpt_kick(e); /* the master's writer, not tf-master vacuum */
        *removed = did;
        return did ? 1 : 0;
    }
    uint64_t build_id = (uint64_t)v[0];
    unsigned step = (unsigned)v[1];
    src = query_ints(e, tf__sql_log_step,
                     (tf_sqlval_t[]){I(build_id), I(step)}, 2, v, 2, &found);
    if (src == SQLITE_OK && found)
        src = seal_block(e, build_id, step, (uint64_t)v[0], &to);
    if (src != SQLITE_OK)
        goto fail;
    src = ctl(e, SQL_COMMIT);
    if (src != SQLITE_OK)
        goto fail;
    if (e->ckpt_started)
        ckpt_kick(e);
    e->maint_build = build_id;
    e->maint_step = step;
    if (!found || to == (uint64_t)v[0] || to >= (uint64_t)v[1]) {
        /* Sealed to its end, or nothing more can be: the next step. */
        e->maint_step = step + 1;
        if (!found || to == (uint64_t)v[0])
            tf__engine_hole(&e->maint_holes, build_id, step, found ? (uint64_t)v[0] : 0);
    }
    return 1;

fail:
    if (!sqlite3_get_autocommit(e->db)) {
        char keep[sizeof(e->msg)];
        memcpy(keep, e->msg, sizeof(keep));
        ctl(e, SQL_ROLLBACK);
        memcpy(e->msg, keep, sizeof(keep));
    }
    fmt_trunc(err, errlen, "sealing old logs: %s (sqlite error %d)", e->msg,
              src);
    return TF_ESTORE;
}

static int vacuum(tf_engine_t *e, char *err, size_t errlen)
{
    char *msg = NULL;
    /* VACUUM copies the whole database into a temporary one: on disk,
     * not in memory as the writer's small temporary files are
     * (configure_writer). */
    if (sqlite3_exec(e->db, "PRAGMA temp_store = FILE; "
                            "PRAGMA wal_checkpoint(TRUNCATE); VACUUM; "
                            "PRAGMA wal_checkpoint(TRUNCATE)",
                     NULL, NULL, &msg) != SQLITE_OK) {
        fmt_trunc(err, errlen, "VACUUM: %s", msg ? msg : "failed");
        sqlite3_free(msg);
        return TF_ESTORE;
    }
    return 0;
}

static void set_max_pages(tf_engine_t *e, long pages)
{
    char sql[64];

    snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %ld", pages);
    if (sqlite3_exec(e->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        tf_warn(SUB, "%s: %s", sql, sqlite3_errmsg(e->db));
}

/* Copies everything in the WAL into the database file and empties the
 * WAL, so after a clean stop the database file alone is a complete copy
 * (the readers are idle by now: the store has drained). */
static void checkpoint(tf_engine_t *e)
{
    int src = sqlite3_wal_checkpoint_v2(e->db, NULL, SQLITE_CHECKPOINT_TRUNCATE,
                                        NULL, NULL);

    if (src == SQLITE_OK)
        tf_info(SUB, "%s: checkpointed: the database file alone is complete",
                e->path);
    else
        tf_warn(SUB, "%s: the closing checkpoint did not complete (%s): the "
                     "database file needs its -wal file beside it",
                e->path, sqlite3_errmsg(e->db));
}

/* ---- The checkpointer (see the file's header) ---- */

/* Absolute CLOCK_MONOTONIC time ms from now (ckpt_cond runs on it). */
static void ckpt_deadline(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000u;
    ts->tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* One PASSIVE checkpoint on the checkpointer's connection. Readers or
 * the writer in the way make it stop short (SQLITE_BUSY is no error: the
 * next one goes on). A failure is said once, and again only after a
 * checkpoint succeeded. */
static void ckpt_run(tf_engine_t *e)
{
    int nlog = 0, nckpt = 0;
    int src = sqlite3_wal_checkpoint_v2(e->ckpt_db, NULL,
                                        SQLITE_CHECKPOINT_PASSIVE, &nlog,
                                        &nckpt);
    bool failed = src != SQLITE_OK && src != SQLITE_BUSY &&
                  src != SQLITE_LOCKED;

    if (!failed && nckpt >= 0)
        __atomic_store_n(&e->ckpt_copied, nckpt, __ATOMIC_RELEASE);

    pthread_mutex_lock(&e->ckpt_mu);
    if (failed && !e->ckpt_failing)
        tf_warn(SUB, "%s: checkpoint: %s (the WAL keeps what it holds; the "
                     "next commit tries again)",
                e->path, sqlite3_errmsg(e->ckpt_db));
    e->ckpt_failing = failed;
    pthread_mutex_unlock(&e->ckpt_mu);
    tf_debug(SUB, "%s: checkpoint: %d of %d WAL frames in the file (%s)",
             e->path, nckpt, nlog, sqlite3_errstr(src));
}

/* The checkpointer thread: sleeps until a commit wakes it, lets
 * CKPT_DELAY_MS of further commits gather, checkpoints, and again; at
 * stop it returns without a last one (close_writer's closing checkpoint
 * follows on the write connection). */
static void *ckpt_main(void *arg)
{
    tf_engine_t *e = arg;

    pthread_setname_np(pthread_self(), "tf-checkpoint");
    pthread_mutex_lock(&e->ckpt_mu);
    for (;;) {
        while (!e->ckpt_stop &&
               !__atomic_load_n(&e->ckpt_dirty, __ATOMIC_ACQUIRE))
            pthread_cond_wait(&e->ckpt_cond, &e->ckpt_mu);
        if (e->ckpt_stop)
            break;
        struct timespec ts;
        ckpt_deadline(&ts, CKPT_DELAY_MS);
        while (!e->ckpt_stop && !e->ckpt_urgent &&
               pthread_cond_timedwait(&e->ckpt_cond, &e->ckpt_mu, &ts) !=
                   ETIMEDOUT)
            ;
        /* The writer has awaited commits queued (ckpt_hold): a
         * checkpoint now would take a core from them. An urgent wake
         * during the hold is the WAL past CKPT_HOLD_MAX_FRAMES: no wait. */
        ckpt_deadline(&ts, CKPT_HOLD_MAX_MS);
        while (!e->ckpt_stop && e->ckpt_hold && !e->ckpt_urgent &&
               pthread_cond_timedwait(&e->ckpt_cond, &e->ckpt_mu, &ts) !=
                   ETIMEDOUT)
            ;
        if (e->ckpt_stop)
            break;
        /* Commits from here on wake the next round. */
        e->ckpt_urgent = false;
        __atomic_store_n(&e->ckpt_dirty, 0, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&e->ckpt_mu);
        ckpt_run(e);
        pthread_mutex_lock(&e->ckpt_mu);
    }
    pthread_mutex_unlock(&e->ckpt_mu);
    return NULL;
}

/* Wakes the checkpointer without its delay (writer thread). */
static void ckpt_wake_now(tf_engine_t *e)
{
    pthread_mutex_lock(&e->ckpt_mu);
    if (!e->ckpt_urgent) {
        e->ckpt_urgent = true;
        __atomic_store_n(&e->ckpt_dirty, 1, __ATOMIC_RELEASE);
        pthread_cond_signal(&e->ckpt_cond);
    }
    pthread_mutex_unlock(&e->ckpt_mu);
}

/* sqlite's WAL hook on the write connection (after each commit, on the
 * writer thread), in place of its autocheckpoint: CKPT_EARLY_FRAMES of
 * WAL not yet copied to the database wake the checkpointer without its
 * delay, so the WAL is copied long before the writer would checkpoint it
 * itself. What counts is the frames since the last checkpoint, not the
 * WAL's length: while the writer keeps committing, a WAL the checkpointer
 * has copied whole does not start over (the writer's next transaction
 * began before the copy ended), and a hook on the length woke a
 * checkpoint, with its two fsyncs, after every commit from 4,096 frames
 * on: about 900 while a burst's 5,000 requests were queued, and one after
 * each of the burst's start batches, each stalling the writer's next
 * commit. A burst released after 5,000 requests were queued (61 MiB of
 * WAL, one transaction each) otherwise crossed the autocheckpoint's
 * 16,384 pages in the middle of its start batches, and the commit that
 * did held every build_start behind it about 50 ms. Past those 16,384
 * frames the writer still checkpoints, as sqlite's own hook did. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int nframes)
{
    tf_engine_t *e = arg;

    /* A WAL that started over is new from its first frame. */
    if (nframes < e->wal_frames)
        __atomic_store_n(&e->ckpt_copied, 0, __ATOMIC_RELEASE);
    e->wal_frames = nframes;
    if (nframes >= WAL_AUTOCHECKPOINT_FRAMES) {
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL,
                                  NULL);
        return SQLITE_OK;
    }
    int copied = __atomic_load_n(&e->ckpt_copied, __ATOMIC_ACQUIRE);
    int fresh = nframes >= copied ? nframes - copied : nframes;
    if (fresh >= CKPT_EARLY_FRAMES) {
        if (e->ckpt_held_w && fresh < CKPT_HOLD_MAX_FRAMES)
            e->ckpt_put_off = true; /* at the hold's end */
        else
            ckpt_wake_now(e);
    }
    return SQLITE_OK;
}

/* engine.h, ckpt_hold (writer thread): while hold, the checkpoints the
 * checkpointer would start on its own wait (CKPT_HOLD_MAX_MS and
 * CKPT_HOLD_MAX_FRAMES bound the wait; the WAL's hard bound in wal_hook
 * does not wait). A burst's start batches are awaited commits: a
 * checkpoint among them, 5 to 20 ms of a core, was taken from the writer
 * and the loop while the builds waited for their rows. At the hold's end
 * an early checkpoint put off runs at once. */
static void ckpt_hold(tf_engine_t *e, bool hold)
{
    /* Kept before the checkpointer starts too (its first round then
     * finds it). */
    if (hold == e->ckpt_held_w)
        return;
    e->ckpt_held_w = hold;
    pthread_mutex_lock(&e->ckpt_mu);
    e->ckpt_hold = hold;
    if (!hold)
        pthread_cond_signal(&e->ckpt_cond);
    pthread_mutex_unlock(&e->ckpt_mu);
    if (!hold && e->ckpt_put_off) {
        e->ckpt_put_off = false;
        ckpt_wake_now(e);
    }
}

/* Starts the checkpointer (writer thread, first batch). Without it (no
 * connection, no thread) checkpoints come from the WAL's size alone
 * (WAL_AUTOCHECKPOINT), as sqlite would: said, not fatal. */
static void ckpt_start(tf_engine_t *e)
{
    e->ckpt_started = true;
    if (open_conn(e->path, SQLITE_OPEN_READWRITE, &e->ckpt_db) != 0)
        goto fail;
    /* Its own autocheckpoint would never fire (it commits nothing), but
     * its close would checkpoint: the writer's closing one is the one. */
    sqlite3_wal_autocheckpoint(e->ckpt_db, 0);
    /* A connection learns the database is in WAL mode when it first
     * reads it; until then a checkpoint on it does nothing. */
    if (sqlite3_exec(e->ckpt_db, "PRAGMA journal_mode", NULL, NULL, NULL) !=
        SQLITE_OK) {
        sqlite3_close(e->ckpt_db);
        e->ckpt_db = NULL;
        goto fail;
    }
    if (pthread_create(&e->ckpt_thread, NULL, ckpt_main, e) == 0) {
        sqlite3_wal_hook(e->db, wal_hook, e);
        return;
    }
    sqlite3_close(e->ckpt_db);
    e->ckpt_db = NULL;
fail:
    tf_warn(SUB, "%s: no checkpointer thread: the WAL is checkpointed by "
                 "the commits that pass %s pages",
            e->path, WAL_AUTOCHECKPOINT);
}

/* After a commit on the write connection: wakes the checkpointer unless
 * it is already due to run. */
static void ckpt_kick(tf_engine_t *e)
{
    if (!e->ckpt_started)
        ckpt_start(e);
    if (!e->ckpt_db ||
        __atomic_exchange_n(&e->ckpt_dirty, 1, __ATOMIC_ACQ_REL))
        return;
    pthread_mutex_lock(&e->ckpt_mu);
    pthread_cond_signal(&e->ckpt_cond);
    pthread_mutex_unlock(&e->ckpt_mu);
}

/* Stops and joins the checkpointer and closes its connection (before the
 * writer's closing checkpoint). */
static void ckpt_stop(tf_engine_t *e)
{
    if (!e->ckpt_db)
        return;
    pthread_mutex_lock(&e->ckpt_mu);
    e->ckpt_stop = true;
    pthread_cond_signal(&e->ckpt_cond);
    pthread_mutex_unlock(&e->ckpt_mu);
    pthread_join(e->ckpt_thread, NULL);
    if (e->db)
        sqlite3_wal_hook(e->db, NULL, NULL);
    sqlite3_close(e->ckpt_db);
    e->ckpt_db = NULL;
}

/* Finalizes the cached statements and closes the write connection. A
 * statement still open at this point was leaked by a write function: it
 * is named and finalized so the connection really closes. */
static void close_writer(tf_engine_t *e)
{
    sqlite3_stmt *st;
    int src;

    tf_logsealer_free(e->sealer);
    e->sealer = NULL;
    memset(e->streams, 0, sizeof(e->streams));
    tf_logpacker_free(e->packer);
    e->packer = NULL;
    free(e->sealbuf);
    e->sealbuf = NULL;
    e->sealcap = 0;
    ckpt_stop(e);
    if (!e->db)
        return;
    cache_clear(&e->cache);
    while ((st = sqlite3_next_stmt(e->db, NULL)) != NULL) {
        tf_error(SUB, "a write function leaked a statement: %.200s",
                 sqlite3_sql(st));
        sqlite3_finalize(st);
    }
    if (e->opened)
        checkpoint(e);
    src = sqlite3_close(e->db);
    if (src != SQLITE_OK) {
        tf_error(SUB, "%s: closing the write connection failed: %s",
                 e->path, sqlite3_errstr(src));
        sqlite3_close_v2(e->db);
    }
    e->db = NULL;
}

/* ------------------------------------------------------------------ */
/* Raw writes (store_sqlite.h)                                         */
/* ------------------------------------------------------------------ */

static void free_owned_vals(const tf_sqlval_t *vals, size_t n)
{
    for (size_t i = 0; vals && i < n; i++)
        if (vals[i].kind == TF_SQL_BLOB_OWNED)
            free((void *)vals[i].p);
}

/* Room for one statement's copied values (the group then needs no second
 * block). */
static size_t vals_bytes(const tf_sqlval_t *vals, size_t n)
{
    size_t b = n * (sizeof(tf_sqlval_t) + 8) + 256;

    for (size_t i = 0; i < n; i++) {
        if (vals[i].kind == TF_SQL_TEXT && vals[i].p)
            b += strlen(vals[i].p) + 8;
        else if (vals[i].kind == TF_SQL_BLOB && vals[i].n < (1u << 20))
            b += vals[i].n + 8;
    }
    return b;
}

int tf_store_write(tf_store_t *s, const char *sql, const tf_sqlval_t *vals,
                   size_t nvals, tf_store_done_cb cb, void *arg)
{
    tf_wgroup_t *g;
    int rc;

    if (!s || !sql || (nvals && !vals)) {
        free_owned_vals(vals, nvals);
        return TF_EINVAL;
    }
    g = tf_wgroup_new(vals_bytes(vals, nvals));
    if (!g) {
        free_owned_vals(vals, nvals);
        return TF_ENOMEM;
    }
    rc = tf_op_sql(g, sql, vals, nvals); /* takes the owned blobs */
    if (rc == 0)
        rc = tf_store_submit(s, g, cb, arg);
    if (rc)
        tf_wgroup_free(g);
    return rc;
}

int tf_store_write_multi(tf_store_t *s, const tf_sqlstmt_t *stmts, size_t n,
                         tf_store_done_cb cb, void *arg)
{
    tf_wgroup_t *g = NULL;
    size_t made = 0;
    int rc = TF_EINVAL;

    if (!s || !stmts || n == 0)
        goto fail;
    rc = TF_ENOMEM;
    g = tf_wgroup_new(0);
    if (!g)
        goto fail;
    for (; made < n; made++) {
        const tf_sqlstmt_t *t = &stmts[made];
        rc = tf_op_sql(g, t->sql, t->vals, t->nvals);
        if (rc) {
            made++; /* tf_op_sql took this one's blobs */
            goto fail;
        }
    }
    rc = tf_store_submit(s, g, cb, arg);
    if (rc)
        tf_wgroup_free(g); /* with the owned blobs it took */
    return rc;
fail:
    /* Statements not yet added still own their blobs. */
    for (size_t i = made; stmts && i < n; i++)
        free_owned_vals(stmts[i].vals, stmts[i].nvals);
    tf_wgroup_free(g);
    return rc;
}

int tf_store_write_fn(tf_store_t *s, tf_store_txn_fn fn, size_t cost_bytes,
                      tf_store_done_cb cb, void *arg)
{
    tf_wgroup_t *g;
    int rc;

    if (!s || !fn)
        return TF_EINVAL;
    g = tf_wgroup_new(0);
    if (!g)
        return TF_ENOMEM;
    rc = tf_op_sql_fn(g, fn, arg, cost_bytes);
    if (rc == 0)
        rc = tf_store_submit(s, g, cb, arg);
    if (rc)
        tf_wgroup_free(g);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Reads                                                               */
/* ------------------------------------------------------------------ */

static sqlite3 *reader_acquire(tf_engine_t *e)
{
    sqlite3 *db;

    pthread_mutex_lock(&e->pool_mu);
    while (e->nfree == 0)
        pthread_cond_wait(&e->pool_cond, &e->pool_mu);
    db = e->free_rd[--e->nfree];
    pthread_mutex_unlock(&e->pool_mu);
    return db;
}

static void reader_release(tf_engine_t *e, sqlite3 *db)
{
    pthread_mutex_lock(&e->pool_mu);
    e->free_rd[e->nfree++] = db;
    pthread_cond_signal(&e->pool_cond);
    pthread_mutex_unlock(&e->pool_mu);
}

static void lend(sqlite3 *db, tf_db_t *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = TF_DB_KIND_SQLITE;
    out->lite = db;
}

/* Runs the query inside one read transaction, so all its statements see
 * the same snapshot of the database. */
static int query(tf_engine_t *e, tf_query_t *q)
{
    sqlite3 *db = reader_acquire(e);
    sqlite3_stmt *st;
    tf_db_t d;
    bool began;
    int rc;

    began = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
    /* The reads are the engines' shared ones (store/reads.c, through
     * db.h), as PostgreSQL's. */
    lend(db, &d);
    rc = tf__reads_query(&d, q);
    while ((st = sqlite3_next_stmt(db, NULL)) != NULL) {
        tf_error(SUB, "a read function leaked a statement: %.200s",
                 sqlite3_sql(st));
        sqlite3_finalize(st);
    }
    if (began && !sqlite3_get_autocommit(db) &&
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    reader_release(e, db);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Opening and closing                                                 */
/* ------------------------------------------------------------------ */

static int open_conn(const char *path, int flags, sqlite3 **out)
{
    sqlite3 *db = NULL;
    int src = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL);

    if (src != SQLITE_OK) {
        tf_error(SUB, "cannot open %s: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(src));
        sqlite3_close(db);
        return TF_ESTORE;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    *out = db;
    return 0;
}

static int exec_logged(tf_engine_t *e, const char *sql)
{
    char *msg = NULL;

    if (sqlite3_exec(e->db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    tf_error(SUB, "%s: %.80s: %s", e->path, sql,
             msg ? msg : sqlite3_errmsg(e->db));
    sqlite3_free(msg);
    return TF_ESTORE;
}

/* Runs a one-row query and copies its first column as text. */
static int query_text(tf_engine_t *e, const char *sql, char *out,
                      size_t outlen)
{
    sqlite3_stmt *st = NULL;
    int src, rc = TF_ESTORE;

    src = sqlite3_prepare_v2(e->db, sql, -1, &st, NULL);
    if (src == SQLITE_OK)
        src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(out, outlen, "%s", t ? (const char *)t : "");
        rc = 0;
    } else {
        tf_error(SUB, "%s: %s: %s", e->path, sql, sqlite3_errmsg(e->db));
    }
    sqlite3_finalize(st);
    return rc;
}

static int query_int(tf_engine_t *e, const char *sql, long long *out)
{
    char buf[32], *end;
    int rc = query_text(e, sql, buf, sizeof(buf));

    if (rc != 0)
        return rc;
    errno = 0;
    *out = strtoll(buf, &end, 10);
    if (errno || end == buf || *end) {
        tf_error(SUB, "%s: %s: unexpected answer '%s'", e->path, sql, buf);
        return TF_ESTORE;
    }
    return 0;
}

/* Refuses a database from a newer binary before changing anything in it. */
static int check_version(tf_engine_t *e, long long *version)
{
    size_t known = tf_schema_count();
    int rc = query_int(e, "PRAGMA user_version", version);

    if (rc != 0)
        return rc;
    if (*version < 0 || (unsigned long long)*version > known) {
        tf_error(SUB,
                 "%s is at schema version %lld but this tf-master knows "
                 "versions up to %zu only: refusing to open it (run the "
                 "tf-master that wrote it, or restore a backup)",
                 e->path, *version, known);
        return TF_EVERSION;
    }
    return 0;
}

/* WAL lets the readers read while the writer writes; see the file's
 * header for synchronous=NORMAL. Temporary files in memory: the
 * savepoint of every group (apply_batch) keeps a sub-journal, which
 * sqlite spilled past 64 KiB to a new file in /var/tmp, one per start
 * batch of a burst (created, written, deleted: 0.6 us of the writer's
 * CPU per started build, and a file system call the commit waits for);
 * in memory it grows in 1 KiB chunks and goes with the transaction. Set
 * once the migrations have run (engine_open: their index builds sort
 * whole tables); VACUUM, whose temporary database is a copy of the whole
 * file, sets it back to FILE (vacuum). */
static int configure_writer(tf_engine_t *e)
{
    char mode[16];
    int rc = query_text(e, "PRAGMA journal_mode = WAL", mode, sizeof(mode));

    if (rc != 0)
        return rc;
    if (strcmp(mode, "wal") != 0) {
        tf_error(SUB, "%s: cannot use WAL mode (got '%s'); the store needs "
                      "it for concurrent readers",
                 e->path, mode);
        return TF_ESTORE;
    }
    if ((rc = exec_logged(e, "PRAGMA synchronous = NORMAL")) != 0 ||
        (rc = exec_logged(e, "PRAGMA foreign_keys = ON")) != 0 ||
        (rc = exec_logged(e, "PRAGMA journal_size_limit = "
                             JOURNAL_SIZE_LIMIT)) != 0 ||
        (rc = exec_logged(e, "PRAGMA wal_autocheckpoint = "
                             WAL_AUTOCHECKPOINT)) != 0)
        return rc;
    return 0;
}

/* Each migration runs in its own transaction together with the version
 * bump, so a crash leaves the database at the previous version. */
static int migrate(tf_engine_t *e, long long from)
{
    size_t known = tf_schema_count();

    for (size_t v = (size_t)from + 1; v <= known; v++) {
        char bump[64];
        int rc;

        snprintf(bump, sizeof(bump), "PRAGMA user_version = %zu", v);
        rc = exec_logged(e, "BEGIN IMMEDIATE");
        if (rc == 0)
            rc = exec_logged(e, tf_schema_migration(v));
        if (rc == 0)
            rc = exec_logged(e, bump);
        if (rc == 0)
            rc = exec_logged(e, "COMMIT");
        if (rc != 0) {
            if (!sqlite3_get_autocommit(e->db))
                sqlite3_exec(e->db, "ROLLBACK", NULL, NULL, NULL);
            tf_error(SUB, "%s: migration to schema version %zu failed",
                     e->path, v);
            return rc;
        }
        tf_info(SUB, "%s: migrated to schema version %zu", e->path, v);
    }
    return 0;
}

/* sqlite's own error log, for every connection: a damaged page, an I/O
 * error or a recovered WAL is logged even when the caller only sees a
 * failed statement. Errors the code handles itself (constraints, a busy
 * retry, a statement to prepare again) stay quiet. */
static _Thread_local bool checking; /* run_check reports itself */

static void sqlite_log(void *arg, int code, const char *msg)
{
    (void)arg;
    if (checking)
        return;
    switch (code & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_IOERR:
    case SQLITE_NOTADB:
    case SQLITE_CANTOPEN:
    case SQLITE_FULL:
    case SQLITE_NOMEM:
    case SQLITE_READONLY:
        tf_error("sqlite", "%s (%s)", msg, sqlite3_errstr(code));
        break;
    case SQLITE_NOTICE:
    case SQLITE_WARNING:
        tf_info("sqlite", "%s", msg);
        break;
    default:
        break;
    }
}

static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void install_log(void)
{
    /* Only possible before sqlite initialises: the first open does it. */
    if (sqlite3_config(SQLITE_CONFIG_LOG, sqlite_log, NULL) != SQLITE_OK)
        tf_debug(SUB, "sqlite's error log was already set up");
    /* No memory statistics: with them every allocation sqlite makes
     * takes a process-wide mutex to count itself, a few percent of the
     * writer's time per started build; nothing here reads them. */
    if (sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) != SQLITE_OK)
        tf_debug(SUB, "sqlite's memory statistics were already set up");
}

/* Hands text to line one line at a time (a row of integrity_check may
 * hold several). */
static void report_lines(const char *text,
                         void (*line)(void *arg, const char *text), void *arg)
{
    char buf[512];

    if (!line)
        return;
    while (*text) {
        size_t n = strcspn(text, "\n");
        if (n > 0) {
            snprintf(buf, sizeof(buf), "%.*s", (int)(n < 511 ? n : 511),
                     text);
            line(arg, buf);
        }
        text += n;
        if (*text == '\n')
            text++;
    }
}

static int run_check_quiet(sqlite3 *db, bool full,
                           void (*line)(void *arg, const char *text),
                           void *arg);

/* PRAGMA quick_check or integrity_check on db: each line that is not "ok"
 * goes to line. 0 when sound, TF_ECORRUPT when not, TF_ESTORE when the
 * check itself failed for another reason. sqlite's own error log stays
 * quiet meanwhile: the findings are the report. */
static int run_check(sqlite3 *db, bool full,
                     void (*line)(void *arg, const char *text), void *arg)
{
    int rc;

    checking = true;
    rc = run_check_quiet(db, full, line, arg);
    checking = false;
    return rc;
}

static int run_check_quiet(sqlite3 *db, bool full,
                           void (*line)(void *arg, const char *text),
                           void *arg)
{
    sqlite3_stmt *st = NULL;
    int src, problems = 0;

    src = sqlite3_prepare_v2(db, full ? "PRAGMA integrity_check(1000)"
                                      : "PRAGMA quick_check(100)",
                             -1, &st, NULL);
    if (src != SQLITE_OK) {
        report_lines(sqlite3_errmsg(db), line, arg);
        sqlite3_finalize(st);
        return (src & 0xff) == SQLITE_CORRUPT || (src & 0xff) == SQLITE_NOTADB
                   ? TF_ECORRUPT
                   : TF_ESTORE;
    }
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        if (t && strcmp(t, "ok") == 0)
            continue;
        problems++;
        report_lines(t ? t : "(no text)", line, arg);
    }
    if (src != SQLITE_DONE) {
        report_lines(sqlite3_errmsg(db), line, arg);
        problems++;
        src = (src & 0xff) == SQLITE_CORRUPT || (src & 0xff) == SQLITE_NOTADB
                  ? TF_ECORRUPT
                  : TF_ESTORE;
    } else
        src = 0;
    sqlite3_finalize(st);
    if (src)
        return src;
    return problems ? TF_ECORRUPT : 0;
}

static int engine_check(const char *path, bool full,
                        void (*line)(void *arg, const char *text), void *arg)
{
    sqlite3 *db = NULL;
    int rc;

    pthread_once(&log_once, install_log);
    rc = open_conn(path, SQLITE_OPEN_READONLY, &db);
    if (rc != 0)
        return rc;
    rc = run_check(db, full, line, arg);
    sqlite3_close(db);
    return rc;
}

typedef struct open_problems {
    const char *path;
    unsigned n;
} open_problems_t;

static void open_problem(void *arg, const char *text)
{
    open_problems_t *p = arg;
    if (p->n++ < 20)
        tf_error(SUB, "%s: %s", p->path, text);
}

/* The quick structural check every start runs before touching anything:
 * a damaged database is refused, not served with wrong answers. */
static int check_at_open(tf_engine_t *e)
{
    open_problems_t p = {.path = e->path};
    int64_t t0 = tf_mono_ms();
    int rc = run_check(e->db, false, open_problem, &p);

    if (rc == 0) {
        tf_info(SUB, "%s: quick_check passed in %" PRId64 " ms", e->path,
                tf_mono_ms() - t0);
        return 0;
    }
    tf_error(SUB, "%s is damaged (PRAGMA quick_check found %u problem%s): "
                  "refusing to serve from it. Run `tf-master check DIR` for "
                  "the full report, then restore a backup or recover it "
                  "(docs/admins.md, \"A damaged database\")",
             e->path, p.n, p.n == 1 ? "" : "s");
    return TF_ECORRUPT;
}

static int open_readers(tf_engine_t *e, unsigned n)
{
    e->readers = calloc(n, sizeof(*e->readers));
    e->free_rd = calloc(n, sizeof(*e->free_rd));
    if (!e->readers || !e->free_rd)
        return TF_ENOMEM;
    for (unsigned i = 0; i < n; i++) {
        int rc = open_conn(e->path, SQLITE_OPEN_READONLY, &e->readers[i]);
        if (rc != 0)
            return rc;
        e->nreaders++;
        e->free_rd[e->nfree++] = e->readers[i];
    }
    return 0;
}

static void destroy(tf_engine_t *e)
{
    if (!e)
        return;
    close_writer(e);
    for (unsigned i = 0; i < e->nreaders; i++) {
        int src = sqlite3_close(e->readers[i]);
        if (src != SQLITE_OK) {
            tf_error(SUB, "%s: closing a read connection failed: %s",
                     e->path, sqlite3_errstr(src));
            sqlite3_close_v2(e->readers[i]);
        }
    }
    free(e->readers);
    free(e->free_rd);
    pthread_mutex_destroy(&e->pool_mu);
    pthread_cond_destroy(&e->pool_cond);
    pthread_mutex_destroy(&e->ckpt_mu);
    pthread_cond_destroy(&e->ckpt_cond);
    free(e->path);
    free(e);
}

static int engine_open(const char *path, unsigned nreaders, tf_engine_t **out,
                       int *schema_version)
{
    tf_engine_t *e;
    pthread_condattr_t ca;
    long long version = 0;
    int rc;

    if (!sqlite3_threadsafe()) {
        tf_error(SUB, "this sqlite library is built without thread support");
        return TF_ESTORE;
    }
    pthread_once(&log_once, install_log);
    e = calloc(1, sizeof(*e));
    if (!e)
        return TF_ENOMEM;
    pthread_mutex_init(&e->pool_mu, NULL);
    pthread_cond_init(&e->pool_cond, NULL);
    pthread_mutex_init(&e->ckpt_mu, NULL);
    if (pthread_condattr_init(&ca) != 0) {
        destroy(e);
        return TF_ENOMEM;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->ckpt_cond, &ca);
    pthread_condattr_destroy(&ca);
    e->path = strdup(path);
    if (!e->path) {
        destroy(e);
        return TF_ENOMEM;
    }
    rc = open_conn(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &e->db);
    if (rc == 0)
        rc = check_version(e, &version);
    if (rc == 0)
        rc = configure_writer(e);
    if (rc == 0 && version > 0)
        rc = check_at_open(e);
    if (rc == 0)
        rc = migrate(e, version);
    /* After the migrations, whose index builds sort whole tables. */
    if (rc == 0)
        rc = exec_logged(e, "PRAGMA temp_store = MEMORY");
    if (rc == 0)
        rc = open_readers(e, nreaders ? nreaders : 1);
    if (rc != 0) {
        destroy(e);
        return rc;
    }
    e->opened = true;
    *schema_version = (int)tf_schema_count();
    *out = e;
    return 0;
}

const tf_engine_vt_t tf_engine_sqlite = {
    .name = "sqlite",
    .open = engine_open,
    .apply_batch = apply_batch,
    .query = query,
    .set_max_pages = set_max_pages,
    .maintain = maintain,
    .ckpt_hold = ckpt_hold,
    .vacuum = vacuum,
    .close_writer = close_writer,
    .destroy = destroy,
    .check = engine_check,
};
