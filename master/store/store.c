/*
 * store.c - the master's sqlite store: one writer thread fed by a bounded
 * queue, a pool of read-only connections, completions back on the loop.
 *
 * Threads and who owns what:
 *
 *   loop thread      submits writes (any thread may, in fact), runs every
 *                    done callback and the congestion callback, owns the
 *                    uv_async_t, counts in-flight reads, tears down.
 *   writer thread    owns the write connection and its statement cache
 *                    from tf_store_open() until it exits; nobody else
 *                    touches them until it has been joined.
 *   pool threads     borrow a read-only connection for one read job.
 *
 * Everything the threads share (the pending and done lists, the byte count,
 * the health fields, the closing flag) is under s->mu. No thread but the
 * loop thread touches the loop, and the others reach it only through
 * uv_async_send(&s->async).
 *
 * Life of a write operation (op):
 *
 *   tf_store_write ──> pending ──> (writer) batch ──> done ──> (loop) cb, free
 *                                     │    ^
 *                                     └────┘ database-wide failure: the same
 *                                            batch is retried with backoff
 *
 * An op is counted in queued_ops/queued_bytes from submission until the
 * loop thread frees it, because until then its memory is held: that is the
 * number the caps bound. Ops keep their submission order through every
 * list, so done callbacks run in submission order.
 *
 * Why one transaction per drained batch: with synchronous=NORMAL a commit
 * costs a WAL append and no fsync, but still a fixed per-transaction price;
 * batching makes the cost per op a few microseconds however many slaves
 * stream at once. Each op runs under its own SAVEPOINT so that an op that
 * fails on its own (a constraint, a bad statement) is rolled back alone and
 * its batch-mates still commit.
 *
 * Errors of the whole database (disk full, I/O error, busy, out of memory,
 * corruption) roll the batch back and the writer retries the same batch,
 * 0.1 s doubling to 10 s, until it commits. Nothing is dropped: the queue
 * fills, tf_store_write returns TF_EFULL, the master stops reading from
 * slaves. The only path that loses writes is a tf_store_close() while the
 * database keeps failing: after a grace period (30 s) the writer gives up
 * and logs, at ERROR, how many writes were lost.
 */
#include "store/store.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "store/store_internal.h"
#include "store/store_schema.h"
#include "tf_err.h"

#define SUB "store"

#define DEFAULT_SOFT_BYTES ((size_t)32 << 20)
#define DEFAULT_HARD_BYTES ((size_t)256 << 20)
#define DEFAULT_READERS 4u
#define MAX_READERS 64u

/* A batch is everything queued, up to these caps: big enough that the
 * per-transaction cost vanishes, small enough that one transaction (and the
 * WAL it writes) stays bounded and callbacks are not held back for long. */
#define BATCH_MAX_OPS 10000u
#define BATCH_MAX_BYTES ((size_t)64 << 20)

#define BACKOFF_MIN_MS 100u
#define BACKOFF_MAX_MS 10000u
#define CLOSE_GRACE_MS 30000u
#define BUSY_TIMEOUT_MS 5000
#define JOURNAL_SIZE_LIMIT "67108864" /* truncate the WAL back to 64 MiB */

/* The batch_try() answer meaning "an op killed the transaction by itself;
 * it has been excluded, run the batch again right away". Not an sqlite
 * code. */
#define BATCH_RETRY_NOW (-1)

/* Control statements, prepared once through the statement cache. */
static const char SQL_BEGIN[] = "BEGIN IMMEDIATE";
static const char SQL_COMMIT[] = "COMMIT";
static const char SQL_ROLLBACK[] = "ROLLBACK";
static const char SQL_SAVEPOINT[] = "SAVEPOINT tf_op";
static const char SQL_RELEASE[] = "RELEASE tf_op";
static const char SQL_ROLLBACK_TO[] = "ROLLBACK TO tf_op";

typedef enum { OP_SQL, OP_FN, OP_MULTI } op_kind_t;

typedef struct store_op {
    struct store_op *next;
    op_kind_t kind;
    int rc;         /* outcome, written by the writer before the op is done */
    bool poisoned;  /* it rolled back the whole transaction by itself */
    size_t cost;    /* what it counts against the queue caps */
    tf_store_done_cb cb;
    void *arg;      /* for cb, and for fn */
    const char *sql;
    tf_store_txn_fn fn;
    size_t nvals;
    tf_sqlval_t *vals; /* in the same allocation, followed by copied bytes */
    struct store_op **subs; /* OP_MULTI: its statements, each an OP_SQL */
    size_t nsubs;
} store_op_t;

typedef struct op_list {
    store_op_t *head;
    store_op_t *tail;
} op_list_t;

/* The writer's prepared statements, keyed by the address of their SQL
 * (open addressing; SQL texts have static storage, so there are only as
 * many keys as there are statements in the program). */
typedef struct stmt_slot {
    const char *sql;
    sqlite3_stmt *st;
} stmt_slot_t;

typedef struct stmt_cache {
    stmt_slot_t *slots;
    size_t cap; /* 0 or a power of two */
    size_t n;
} stmt_cache_t;

struct tf_store {
    /* Set at open, read-only afterwards. */
    uv_loop_t *loop;
    char *path;
    size_t soft_bytes;
    size_t hard_bytes;
    tf_store_congestion_cb congestion_cb;
    void *congestion_arg;
    int schema_version;
    unsigned close_grace_ms;

    /* Loop thread only. */
    uv_async_t async;
    bool congestion_reported;
    size_t reads_inflight;
    bool close_requested;
    bool finishing;
    void (*close_cb)(void *arg);
    void *close_arg;

    /* Writer thread only (the loop thread takes them over after join). */
    pthread_t writer;
    sqlite3 *db;
    stmt_cache_t cache;
    char werr[256]; /* the message of the last failure */

    /* Shared, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t wake; /* writer: ops queued, closing, hook changed */
    op_list_t pending;
    op_list_t done;
    size_t queued_ops;
    size_t queued_bytes;
    bool congested;
    bool closing;
    uint64_t close_deadline_ms;
    bool writer_exited;
    bool gave_up;
    uint64_t batches;
    uint64_t ops_committed;
    bool failing;
    uint64_t failing_since_ms;
    char last_error[256];
    bool hook_pending;
    long hook_max_pages;

    /* The read pool, under pool_mu. */
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cond;
    sqlite3 **readers;   /* all of them, for closing */
    sqlite3 **free_rd;   /* the idle ones (a stack) */
    unsigned nreaders;
    unsigned nfree;
};

typedef struct read_req {
    uv_work_t work;
    tf_store_t *s;
    tf_store_read_fn fn;
    tf_store_done_cb done;
    void *arg;
    int rc;
} read_req_t;

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Errors that say nothing about the op that hit them but about the
 * database as a whole: the batch is rolled back and retried. Corruption is
 * in the list because a retry costs nothing and the cause may be an I/O
 * fault that goes away; it is logged at ERROR on every attempt. */
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

/* snprintf for messages where cutting the tail is fine (and expected). */
static void fmt_trunc(char *dst, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fmt_trunc(char *dst, size_t len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(dst, len, fmt, ap);
    va_end(ap);
}

static void list_append(op_list_t *l, store_op_t *op)
{
    op->next = NULL;
    if (l->tail)
        l->tail->next = op;
    else
        l->head = op;
    l->tail = op;
}

static void list_splice(op_list_t *l, store_op_t *first, store_op_t *last)
{
    last->next = NULL;
    if (l->tail)
        l->tail->next = first;
    else
        l->head = first;
    l->tail = last;
}

static void free_owned_vals(const tf_sqlval_t *vals, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (vals[i].kind == TF_SQL_BLOB_OWNED)
            free((void *)vals[i].p);
}

static void op_free(store_op_t *op)
{
    if (!op)
        return;
    for (size_t i = 0; i < op->nsubs; i++)
        op_free(op->subs[i]);
    free(op->subs);
    free_owned_vals(op->vals, op->nvals);
    free(op);
}

/* ------------------------------------------------------------------ */
/* Values                                                              */
/* ------------------------------------------------------------------ */

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

/* Binds with SQLITE_TRANSIENT (sqlite copies), so vals may go away right
 * after. Fails with TF_EINVAL when there are more values than parameters,
 * TF_ESTORE when sqlite refuses one. */
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

/* ------------------------------------------------------------------ */
/* Ops: creation                                                       */
/* ------------------------------------------------------------------ */

static bool add_size(size_t *acc, size_t n)
{
    if (*acc > SIZE_MAX - n)
        return false;
    *acc += n;
    return true;
}

/* Makes an SQL op holding copies of vals (owned blobs are moved in).
 * Returns 0, TF_EINVAL or TF_ENOMEM; on failure the caller still owns
 * (and must free) the owned blobs. */
static int op_new_sql(const char *sql, const tf_sqlval_t *vals, size_t n,
                      store_op_t **out)
{
    size_t head = sizeof(store_op_t), data = 0, owned = 0;
    store_op_t *op;
    uint8_t *p;

    if (n > SIZE_MAX / sizeof(tf_sqlval_t) ||
        !add_size(&head, n * sizeof(tf_sqlval_t)))
        return TF_EINVAL;
    for (size_t i = 0; i < n; i++) {
        const tf_sqlval_t *v = &vals[i];
        bool ok = true;

        switch (v->kind) {
        case TF_SQL_NULL:
        case TF_SQL_INT:
            break;
        case TF_SQL_TEXT:
            if (v->p)
                ok = add_size(&data, strlen(v->p) + 1);
            break;
        case TF_SQL_BLOB:
            if (!v->p && v->n)
                return TF_EINVAL;
            ok = add_size(&data, v->n);
            break;
        case TF_SQL_BLOB_OWNED:
            if (!v->p && v->n)
                return TF_EINVAL;
            ok = add_size(&owned, v->n);
            break;
        default:
            return TF_EINVAL;
        }
        if (!ok)
            return TF_EINVAL;
    }
    size_t total = head;
    if (!add_size(&total, data))
        return TF_EINVAL;
    op = malloc(total);
    if (!op)
        return TF_ENOMEM;
    memset(op, 0, sizeof(*op));
    op->kind = OP_SQL;
    op->sql = sql;
    op->nvals = n;
    op->vals = (tf_sqlval_t *)(op + 1);
    p = (uint8_t *)op + head;
    for (size_t i = 0; i < n; i++) {
        tf_sqlval_t v = vals[i];

        if (v.kind == TF_SQL_TEXT && v.p) {
            size_t len = strlen(v.p) + 1;
            memcpy(p, v.p, len);
            v.p = p;
            p += len;
        } else if (v.kind == TF_SQL_BLOB && v.n) {
            memcpy(p, v.p, v.n);
            v.p = p;
            p += v.n;
        }
        op->vals[i] = v;
    }
    op->cost = total;
    if (!add_size(&op->cost, owned))
        op->cost = SIZE_MAX;
    *out = op;
    return 0;
}

/* Queues op, or refuses it (TF_ESTATE closing, TF_EFULL past the hard
 * cap). On refusal the caller frees op. */
static int enqueue(tf_store_t *s, store_op_t *op)
{
    bool wake_loop = false;
    int rc = 0;

    pthread_mutex_lock(&s->mu);
    if (s->closing) {
        rc = TF_ESTATE;
        goto out;
    }
    if (op->cost > s->hard_bytes ||
        s->queued_bytes > s->hard_bytes - op->cost) {
        rc = TF_EFULL;
        goto out;
    }
    list_append(&s->pending, op);
    s->queued_ops++;
    s->queued_bytes += op->cost;
    if (!s->congested && s->queued_bytes > s->soft_bytes) {
        s->congested = true;
        wake_loop = true; /* the loop thread reports it */
    }
    pthread_cond_signal(&s->wake);
out:
    pthread_mutex_unlock(&s->mu);
    if (wake_loop)
        uv_async_send(&s->async);
    return rc;
}

int tf_store_write(tf_store_t *s, const char *sql, const tf_sqlval_t *vals,
                   size_t nvals, tf_store_done_cb cb, void *arg)
{
    store_op_t *op = NULL;
    int rc;

    if (!s || !sql || (nvals && !vals)) {
        if (vals)
            free_owned_vals(vals, nvals);
        return TF_EINVAL;
    }
    rc = op_new_sql(sql, vals, nvals, &op);
    if (rc != 0) {
        free_owned_vals(vals, nvals);
        return rc;
    }
    op->cb = cb;
    op->arg = arg;
    rc = enqueue(s, op);
    if (rc != 0)
        op_free(op); /* frees the owned blobs it took */
    return rc;
}

int tf_store_write_fn(tf_store_t *s, tf_store_txn_fn fn, size_t cost_bytes,
                      tf_store_done_cb cb, void *arg)
{
    store_op_t *op;
    int rc;

    if (!s || !fn)
        return TF_EINVAL;
    op = calloc(1, sizeof(*op));
    if (!op)
        return TF_ENOMEM;
    op->kind = OP_FN;
    op->fn = fn;
    op->cb = cb;
    op->arg = arg;
    op->cost = sizeof(*op);
    if (!add_size(&op->cost, cost_bytes))
        op->cost = SIZE_MAX;
    rc = enqueue(s, op);
    if (rc != 0)
        free(op);
    return rc;
}

int tf_store_write_multi(tf_store_t *s, const tf_sqlstmt_t *stmts, size_t n,
                         tf_store_done_cb cb, void *arg)
{
    store_op_t *op = NULL;
    size_t made = 0;
    int rc = TF_EINVAL;

    if (!s || !stmts || n == 0)
        goto fail;
    rc = TF_ENOMEM;
    op = calloc(1, sizeof(*op));
    if (!op || !(op->subs = calloc(n, sizeof(*op->subs))))
        goto fail;
    op->kind = OP_MULTI;
    op->cost = sizeof(*op) + n * sizeof(*op->subs);
    for (; made < n; made++) {
        const tf_sqlstmt_t *t = &stmts[made];
        rc = TF_EINVAL;
        if (!t->sql || (t->nvals && !t->vals))
            goto fail;
        rc = op_new_sql(t->sql, t->vals, t->nvals, &op->subs[made]);
        if (rc != 0)
            goto fail;
        op->nsubs++;
        if (!add_size(&op->cost, op->subs[made]->cost))
            op->cost = SIZE_MAX;
    }
    op->cb = cb;
    op->arg = arg;
    rc = enqueue(s, op);
    if (rc == 0)
        return 0;
    op_free(op); /* frees every owned blob, all were moved in */
    return rc;
fail:
    /* Statements not yet moved into the op still own their blobs. */
    for (size_t i = made; stmts && i < n; i++)
        if (stmts[i].vals)
            free_owned_vals(stmts[i].vals, stmts[i].nvals);
    op_free(op);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Writer thread: statement cache                                      */
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
    size_t cap = c->cap ? c->cap * 2 : 32;
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
 * Returns an sqlite code; on failure s->werr says why. */
static int cache_get(tf_store_t *s, const char *sql, sqlite3_stmt **out)
{
    stmt_cache_t *c = &s->cache;
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
    src = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st,
                             &tail);
    if (src != SQLITE_OK) {
        snprintf(s->werr, sizeof(s->werr), "prepare: %s",
                 sqlite3_errmsg(s->db));
        return src;
    }
    if (!st || (tail && !only_space(tail))) {
        sqlite3_finalize(st);
        snprintf(s->werr, sizeof(s->werr), "%s",
                 st ? "SQL holds more than one statement"
                    : "SQL holds no statement");
        return SQLITE_MISUSE;
    }
    if ((c->n + 1) * 2 > c->cap && !cache_grow(c)) {
        sqlite3_finalize(st);
        snprintf(s->werr, sizeof(s->werr), "out of memory (statement cache)");
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
 * message in s->werr. */
static int stmt_run(tf_store_t *s, sqlite3_stmt *st)
{
    int src;

    while ((src = sqlite3_step(st)) == SQLITE_ROW)
        ;
    if (src != SQLITE_DONE)
        snprintf(s->werr, sizeof(s->werr), "%s", sqlite3_errmsg(s->db));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return src == SQLITE_DONE ? SQLITE_OK : src;
}

/* Runs one of the control statements (BEGIN, SAVEPOINT, ...). */
static int ctl(tf_store_t *s, const char *sql)
{
    sqlite3_stmt *st;
    int src = cache_get(s, sql, &st);

    if (src != SQLITE_OK)
        return src;
    src = stmt_run(s, st);
    if (src != SQLITE_OK) {
        char msg[sizeof(s->werr)];
        snprintf(msg, sizeof(msg), "%s", s->werr);
        fmt_trunc(s->werr, sizeof(s->werr), "%s: %s", sql, msg);
    }
    return src;
}

/* ------------------------------------------------------------------ */
/* Writer thread: running a batch                                      */
/* ------------------------------------------------------------------ */

/* Runs one op inside the current savepoint. Returns an sqlite code.
 *
 * The rule for fn ops: fn returns 0 or a negative code. When it fails, the
 * connection's last error (sqlite3_extended_errcode) decides what kind of
 * failure it was: if the sqlite call that made fn give up hit a
 * database-wide error (disk full, I/O, busy, locked, out of memory, ...),
 * so did the op, and the whole batch is retried; anything else (a
 * constraint, or fn's own decision) fails the op alone. So a fn must return
 * as soon as an sqlite call fails, finalizing or resetting its statements on
 * the way out (those keep the error code) but making no other sqlite call
 * that would overwrite it. A fn must not end the batch's transaction
 * (COMMIT, ROLLBACK, RELEASE of a savepoint it did not make). */
static int op_run(tf_store_t *s, store_op_t *op)
{
    sqlite3_stmt *st;
    int src;

    if (op->kind == OP_FN) {
        int r = op->fn(s->db, op->arg);
        if (r == 0)
            return SQLITE_OK;
        src = sqlite3_extended_errcode(s->db);
        if (is_db_wide(src)) {
            snprintf(s->werr, sizeof(s->werr), "%s", sqlite3_errmsg(s->db));
            return src;
        }
        if (src != SQLITE_OK && src != SQLITE_ROW && src != SQLITE_DONE)
            fmt_trunc(s->werr, sizeof(s->werr),
                      "write function returned %d (%s) after: %s", r,
                      tf_strerror(r), sqlite3_errmsg(s->db));
        else
            fmt_trunc(s->werr, sizeof(s->werr),
                      "write function returned %d (%s)", r, tf_strerror(r));
        return SQLITE_ERROR;
    }
    if (op->kind == OP_MULTI) {
        /* One savepoint around all of them (batch_try): all or nothing. */
        for (size_t i = 0; i < op->nsubs; i++) {
            src = op_run(s, op->subs[i]);
            if (src != SQLITE_OK)
                return src;
        }
        return SQLITE_OK;
    }
    src = cache_get(s, op->sql, &st);
    if (src != SQLITE_OK)
        return src;
    if ((size_t)sqlite3_bind_parameter_count(st) != op->nvals) {
        snprintf(s->werr, sizeof(s->werr),
                 "statement has %d parameters but %zu values were given",
                 sqlite3_bind_parameter_count(st), op->nvals);
        return SQLITE_RANGE;
    }
    /* SQLITE_STATIC: the op's copies outlive the statement's use of them
     * (stmt_run clears the bindings before returning). */
    src = bind_vals(st, op->vals, op->nvals, SQLITE_STATIC);
    if (src != SQLITE_OK) {
        snprintf(s->werr, sizeof(s->werr), "bind: %s", sqlite3_errmsg(s->db));
        sqlite3_clear_bindings(st);
        return src;
    }
    return stmt_run(s, st);
}

static const char *op_what(const store_op_t *op)
{
    if (op->kind == OP_MULTI)
        return op->nsubs ? op->subs[0]->sql : "(empty group)";
    return op->kind == OP_FN ? "(write function)" : op->sql;
}

/* Runs the batch once as one transaction. Returns SQLITE_OK once it has
 * committed (each op's rc says whether it failed alone), BATCH_RETRY_NOW,
 * or the database-wide error that made it roll back (message in s->werr). */
static int batch_try(tf_store_t *s, store_op_t *first, size_t n)
{
    store_op_t *op = first;
    int src;

    src = ctl(s, SQL_BEGIN);
    if (src != SQLITE_OK)
        goto fail;
    for (size_t i = 0; i < n; i++, op = op->next) {
        op->rc = 0;
        if (op->poisoned) {
            op->rc = TF_ESTORE;
            continue;
        }
        src = ctl(s, SQL_SAVEPOINT);
        if (src != SQLITE_OK)
            goto fail;
        src = op_run(s, op);
        if (src != SQLITE_OK && is_db_wide(src))
            goto fail;
        if (src == SQLITE_OK && sqlite3_get_autocommit(s->db)) {
            /* A write function ended the transaction (a bug). Failing it
             * alone and redoing the batch beats retrying it forever. */
            tf_error(SUB, "a write function ended the batch transaction; "
                          "failing it and redoing its batch");
            op->rc = TF_ESTORE;
            op->poisoned = true;
            return BATCH_RETRY_NOW;
        }
        if (src != SQLITE_OK) {
            tf_warn(SUB, "write failed alone: %s; in: %.200s", s->werr,
                    op_what(op));
            op->rc = TF_ESTORE;
            if (sqlite3_get_autocommit(s->db)) {
                /* e.g. INSERT OR ROLLBACK: the op rolled back the whole
                 * transaction. Leave it out and redo the others. */
                op->poisoned = true;
                return BATCH_RETRY_NOW;
            }
            src = ctl(s, SQL_ROLLBACK_TO);
            if (src != SQLITE_OK)
                goto fail;
        }
        src = ctl(s, SQL_RELEASE);
        if (src != SQLITE_OK)
            goto fail;
    }
    src = ctl(s, SQL_COMMIT);
    if (src != SQLITE_OK)
        goto fail;
    return SQLITE_OK;

fail:
    if (!is_db_wide(src)) {
        /* A control statement failed for a reason that is not the
         * database's: treat it as one anyway (retrying is safe), but keep
         * the message. */
        tf_error(SUB, "unexpected failure in a batch: %s (sqlite error %d)",
                 s->werr, src);
    }
    if (!sqlite3_get_autocommit(s->db)) {
        char keep[sizeof(s->werr)];
        memcpy(keep, s->werr, sizeof(keep));
        if (ctl(s, SQL_ROLLBACK) != SQLITE_OK)
            tf_error(SUB, "rollback failed: %s", s->werr);
        memcpy(s->werr, keep, sizeof(keep));
    }
    return src == SQLITE_OK ? SQLITE_ERROR : src;
}

/* Applies the test hooks, if one changed. */
static void writer_apply_hooks(tf_store_t *s)
{
    bool pending;
    long pages;

    pthread_mutex_lock(&s->mu);
    pending = s->hook_pending;
    pages = s->hook_max_pages;
    s->hook_pending = false;
    pthread_mutex_unlock(&s->mu);
    if (pending) {
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %ld", pages);
        if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
            tf_warn(SUB, "%s: %s", sql, sqlite3_errmsg(s->db));
    }
}

static void timespec_at(uint64_t deadline_ms, struct timespec *ts)
{
    ts->tv_sec = (time_t)(deadline_ms / 1000u);
    ts->tv_nsec = (long)(deadline_ms % 1000u) * 1000000L;
}

/* Sleeps ms between retries. Wakes early when close is requested (so the
 * drain starts at once) or a test hook changed. Returns whether the store
 * is closing. */
static bool writer_backoff(tf_store_t *s, unsigned ms)
{
    uint64_t until = mono_ms() + ms;
    struct timespec ts;
    bool was_closing, closing;

    pthread_mutex_lock(&s->mu);
    was_closing = s->closing;
    if (was_closing && until > s->close_deadline_ms)
        until = s->close_deadline_ms;
    timespec_at(until, &ts);
    while (!s->hook_pending && s->closing == was_closing &&
           mono_ms() < until) {
        if (pthread_cond_timedwait(&s->wake, &s->mu, &ts) == ETIMEDOUT)
            break;
    }
    closing = s->closing;
    pthread_mutex_unlock(&s->mu);
    return closing;
}

/* Runs the batch until it commits. Returns false only when the store is
 * closing, the database kept failing past the grace period, and the writer
 * gave up: then every op of the batch is marked TF_ESTORE. */
static bool batch_commit(tf_store_t *s, store_op_t *first, size_t n)
{
    unsigned backoff = BACKOFF_MIN_MS, attempts = 0;
    uint64_t started = 0;
    size_t ok = 0;
    store_op_t *op;
    int src;

    for (;;) {
        bool closing, past_deadline;

        writer_apply_hooks(s);
        src = batch_try(s, first, n);
        if (src == SQLITE_OK)
            break;
        if (src == BATCH_RETRY_NOW)
            continue;
        attempts++;
        pthread_mutex_lock(&s->mu);
        if (!s->failing) {
            s->failing = true;
            s->failing_since_ms = mono_ms();
        }
        started = s->failing_since_ms;
        fmt_trunc(s->last_error, sizeof(s->last_error), "%s (sqlite error %d)",
                  s->werr, src);
        closing = s->closing;
        past_deadline = closing && mono_ms() >= s->close_deadline_ms;
        pthread_mutex_unlock(&s->mu);

        if (attempts == 1 || (src & 0xff) == SQLITE_CORRUPT)
            tf_error(SUB,
                     "%s: a batch of %zu writes rolled back: %s (sqlite error "
                     "%d); retrying, writes queue up meanwhile",
                     s->path, n, s->werr, src);
        else
            tf_warn(SUB, "%s: still failing after %u attempts (%llu ms): %s",
                    s->path, attempts,
                    (unsigned long long)(mono_ms() - started), s->werr);
        if (past_deadline) {
            op = first;
            for (size_t i = 0; i < n; i++, op = op->next)
                op->rc = TF_ESTORE;
            return false;
        }
        writer_backoff(s, backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }

    op = first;
    for (size_t i = 0; i < n; i++, op = op->next)
        ok += op->rc == 0;
    pthread_mutex_lock(&s->mu);
    s->batches++;
    s->ops_committed += ok;
    s->failing = false;
    s->last_error[0] = '\0';
    pthread_mutex_unlock(&s->mu);
    if (attempts)
        tf_info(SUB, "%s: writes commit again after %u failed attempts "
                     "(%llu ms)",
                s->path, attempts, (unsigned long long)(mono_ms() - started));
    return true;
}

/* Takes the next batch off the pending list (under mu). */
static size_t take_batch(tf_store_t *s, store_op_t **first, store_op_t **last)
{
    store_op_t *op = s->pending.head, *prev = NULL;
    size_t n = 0, bytes = 0;

    while (op && n < BATCH_MAX_OPS &&
           (n == 0 || bytes + op->cost <= BATCH_MAX_BYTES)) {
        bytes += op->cost;
        n++;
        prev = op;
        op = op->next;
    }
    *first = s->pending.head;
    *last = prev;
    s->pending.head = op;
    if (!op)
        s->pending.tail = NULL;
    prev->next = NULL;
    return n;
}

/* Finalizes the cached statements and closes the write connection. A
 * statement still open at this point was leaked by a write function: it is
 * named and finalized so the connection really closes. */
static void writer_close_db(tf_store_t *s)
{
    sqlite3_stmt *st;
    int src;

    cache_clear(&s->cache);
    while ((st = sqlite3_next_stmt(s->db, NULL)) != NULL) {
        tf_error(SUB, "a write function leaked a statement: %.200s",
                 sqlite3_sql(st));
        sqlite3_finalize(st);
    }
    src = sqlite3_close(s->db);
    if (src != SQLITE_OK) {
        tf_error(SUB, "%s: closing the write connection failed: %s",
                 s->path, sqlite3_errstr(src));
        sqlite3_close_v2(s->db);
    }
    s->db = NULL;
}

static void *writer_main(void *arg)
{
    tf_store_t *s = arg;
    size_t lost = 0;

    for (;;) {
        store_op_t *first, *last;
        bool gave_up;
        size_t n;

        pthread_mutex_lock(&s->mu);
        while (!s->pending.head && !s->closing)
            pthread_cond_wait(&s->wake, &s->mu);
        if (!s->pending.head) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        n = take_batch(s, &first, &last);
        gave_up = s->gave_up;
        pthread_mutex_unlock(&s->mu);

        if (gave_up) {
            for (store_op_t *op = first; op; op = op->next)
                op->rc = TF_ESTORE;
            lost += n;
        } else if (!batch_commit(s, first, n)) {
            lost += n;
            gave_up = true;
        }

        pthread_mutex_lock(&s->mu);
        if (gave_up)
            s->gave_up = true;
        list_splice(&s->done, first, last);
        pthread_mutex_unlock(&s->mu);
        uv_async_send(&s->async);
    }

    if (lost)
        tf_error(SUB,
                 "%s: closing while the database keeps failing (%s): gave "
                 "up after %u ms and LOST %zu queued writes",
                 s->path, s->last_error, s->close_grace_ms, lost);
    writer_close_db(s);

    pthread_mutex_lock(&s->mu);
    s->writer_exited = true;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Loop thread: completions, congestion, teardown                      */
/* ------------------------------------------------------------------ */

static void report_congestion(tf_store_t *s)
{
    bool c;

    pthread_mutex_lock(&s->mu);
    c = s->congested;
    pthread_mutex_unlock(&s->mu);
    if (c != s->congestion_reported) {
        s->congestion_reported = c;
        tf_info(SUB, "write queue %s", c ? "congested" : "drained");
        if (s->congestion_cb)
            s->congestion_cb(s->congestion_arg, c);
    }
}

static void free_store(tf_store_t *s)
{
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->pool_mu);
    pthread_cond_destroy(&s->pool_cond);
    free(s->readers);
    free(s->free_rd);
    free(s->path);
    free(s);
}

static void on_async_closed(uv_handle_t *h)
{
    tf_store_t *s = h->data;
    void (*cb)(void *) = s->close_cb;
    void *arg = s->close_arg;

    free_store(s);
    if (cb)
        cb(arg);
}

static void close_readers(tf_store_t *s)
{
    for (unsigned i = 0; i < s->nreaders; i++) {
        int src = sqlite3_close(s->readers[i]);
        if (src != SQLITE_OK) {
            tf_error(SUB, "%s: closing a read connection failed: %s",
                     s->path, sqlite3_errstr(src));
            sqlite3_close_v2(s->readers[i]);
        }
        s->readers[i] = NULL;
    }
    s->nreaders = s->nfree = 0;
}

/* The last step of closing, once the writer has exited, every done
 * callback has run and no read is in flight. */
static void maybe_finish_close(tf_store_t *s)
{
    bool exited;

    if (!s->close_requested || s->finishing || s->reads_inflight)
        return;
    pthread_mutex_lock(&s->mu);
    exited = s->writer_exited && !s->done.head;
    pthread_mutex_unlock(&s->mu);
    if (!exited)
        return;
    s->finishing = true;
    pthread_join(s->writer, NULL);
    close_readers(s);
    uv_close((uv_handle_t *)&s->async, on_async_closed);
}

static void on_async(uv_async_t *h)
{
    tf_store_t *s = h->data;
    store_op_t *op, *next;
    size_t n = 0, bytes = 0;

    if (s->finishing)
        return;
    pthread_mutex_lock(&s->mu);
    op = s->done.head;
    s->done.head = s->done.tail = NULL;
    pthread_mutex_unlock(&s->mu);

    report_congestion(s); /* a rise seen by tf_store_write */

    /* Account for the whole list before the callbacks run, so writes they
     * submit see the room these ops leave. */
    for (next = op; next; next = next->next) {
        n++;
        bytes += next->cost;
    }
    pthread_mutex_lock(&s->mu);
    s->queued_ops -= n;
    s->queued_bytes -= bytes;
    if (s->congested && s->queued_bytes < s->soft_bytes / 2)
        s->congested = false;
    pthread_mutex_unlock(&s->mu);
    report_congestion(s);

    for (; op; op = next) {
        tf_store_done_cb cb = op->cb;
        void *arg = op->arg;
        int rc = op->rc;

        next = op->next;
        op_free(op);
        if (cb)
            cb(arg, rc);
    }
    report_congestion(s); /* callbacks may have queued more */
    maybe_finish_close(s);
}

void tf_store_close(tf_store_t *s, void (*cb)(void *arg), void *arg)
{
    assert(s && !s->close_requested);
    s->close_requested = true;
    s->close_cb = cb;
    s->close_arg = arg;
    pthread_mutex_lock(&s->mu);
    s->closing = true;
    s->close_deadline_ms = mono_ms() + s->close_grace_ms;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
    /* The writer drains, exits and wakes on_async, which finishes. */
}

/* ------------------------------------------------------------------ */
/* Health                                                              */
/* ------------------------------------------------------------------ */

void tf_store_health(tf_store_t *s, tf_store_health_t *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&s->mu);
    out->queued_ops = s->queued_ops;
    out->queued_bytes = s->queued_bytes;
    out->congested = s->congested;
    out->batches = s->batches;
    out->ops = s->ops_committed;
    if (s->failing) {
        uint64_t d = mono_ms() - s->failing_since_ms;
        /* Never 0 while failing: 0 means healthy. */
        out->failing_for_ms = d == 0 ? 1 : d > UINT_MAX ? UINT_MAX
                                                        : (unsigned)d;
    }
    snprintf(out->last_error, sizeof(out->last_error), "%s", s->last_error);
    pthread_mutex_unlock(&s->mu);
}

int tf_store_schema_version(tf_store_t *s)
{
    return s->schema_version;
}

/* ------------------------------------------------------------------ */
/* Reads                                                               */
/* ------------------------------------------------------------------ */

static sqlite3 *reader_acquire(tf_store_t *s)
{
    sqlite3 *db;

    pthread_mutex_lock(&s->pool_mu);
    while (s->nfree == 0)
        pthread_cond_wait(&s->pool_cond, &s->pool_mu);
    db = s->free_rd[--s->nfree];
    pthread_mutex_unlock(&s->pool_mu);
    return db;
}

static void reader_release(tf_store_t *s, sqlite3 *db)
{
    pthread_mutex_lock(&s->pool_mu);
    s->free_rd[s->nfree++] = db;
    pthread_cond_signal(&s->pool_cond);
    pthread_mutex_unlock(&s->pool_mu);
}

/* Runs fn inside one read transaction, so all its queries see the same
 * snapshot of the database. */
static int read_run(tf_store_t *s, tf_store_read_fn fn, void *arg)
{
    sqlite3 *db = reader_acquire(s);
    sqlite3_stmt *st;
    bool began;
    int rc;

    began = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
    rc = fn(db, arg);
    while ((st = sqlite3_next_stmt(db, NULL)) != NULL) {
        tf_error(SUB, "a read function leaked a statement: %.200s",
                 sqlite3_sql(st));
        sqlite3_finalize(st);
    }
    if (began && !sqlite3_get_autocommit(db) &&
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    reader_release(s, db);
    return rc;
}

static void read_work(uv_work_t *w)
{
    read_req_t *r = w->data;
    r->rc = read_run(r->s, r->fn, r->arg);
}

static void read_after(uv_work_t *w, int status)
{
    read_req_t *r = w->data;
    tf_store_t *s = r->s;
    tf_store_done_cb done = r->done;
    void *arg = r->arg;
    int rc = status == UV_ECANCELED ? TF_ESTATE : r->rc;

    free(r);
    s->reads_inflight--;
    if (done)
        done(arg, rc);
    maybe_finish_close(s);
}

int tf_store_read(tf_store_t *s, tf_store_read_fn fn, tf_store_done_cb done,
                  void *arg)
{
    read_req_t *r;
    int rc;

    if (!s || !fn)
        return UV_EINVAL;
    if (s->close_requested)
        return TF_ESTATE;
    r = calloc(1, sizeof(*r));
    if (!r)
        return UV_ENOMEM;
    r->work.data = r;
    r->s = s;
    r->fn = fn;
    r->done = done;
    r->arg = arg;
    rc = uv_queue_work(s->loop, &r->work, read_work, read_after);
    if (rc != 0) {
        free(r);
        return rc;
    }
    s->reads_inflight++;
    return 0;
}

int tf_store_read_sync(tf_store_t *s, tf_store_read_fn fn, void *arg)
{
    if (!s || !fn || s->nreaders == 0)
        return TF_EINVAL;
    return read_run(s, fn, arg);
}

/* ------------------------------------------------------------------ */
/* Opening                                                             */
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

static int exec_logged(tf_store_t *s, sqlite3 *db, const char *sql)
{
    char *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    tf_error(SUB, "%s: %.80s: %s", s->path, sql,
             msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return TF_ESTORE;
}

/* Runs a one-row query and copies its first column as text. */
static int query_text(tf_store_t *s, sqlite3 *db, const char *sql, char *out,
                      size_t outlen)
{
    sqlite3_stmt *st = NULL;
    int src, rc = TF_ESTORE;

    src = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (src == SQLITE_OK)
        src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(out, outlen, "%s", t ? (const char *)t : "");
        rc = 0;
    } else {
        tf_error(SUB, "%s: %s: %s", s->path, sql, sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return rc;
}

static int query_int(tf_store_t *s, sqlite3 *db, const char *sql,
                     long long *out)
{
    char buf[32], *end;
    int rc = query_text(s, db, sql, buf, sizeof(buf));

    if (rc != 0)
        return rc;
    errno = 0;
    *out = strtoll(buf, &end, 10);
    if (errno || end == buf || *end) {
        tf_error(SUB, "%s: %s: unexpected answer '%s'", s->path, sql, buf);
        return TF_ESTORE;
    }
    return 0;
}

/* Refuses a database from a newer binary before changing anything in it. */
static int check_version(tf_store_t *s, long long *version)
{
    size_t known = tf_schema_count();
    int rc = query_int(s, s->db, "PRAGMA user_version", version);

    if (rc != 0)
        return rc;
    if (*version < 0 || (unsigned long long)*version > known) {
        tf_error(SUB,
                 "%s is at schema version %lld but this tf-master knows "
                 "versions up to %zu only: refusing to open it (run the "
                 "tf-master that wrote it, or restore a backup)",
                 s->path, *version, known);
        return TF_EVERSION;
    }
    return 0;
}

/* WAL lets the readers read while the writer writes. synchronous=NORMAL
 * in WAL mode writes each commit to the WAL without an fsync (fsyncs happen
 * at checkpoints): a commit survives a crash of the process, which is what
 * an acknowledgement to a slave or to tf-try promises (a master restart
 * loses nothing acknowledged), while an OS crash or power loss may lose the
 * last transactions. FULL would add an fsync to every commit. */
static int configure_writer(tf_store_t *s)
{
    char mode[16];
    int rc = query_text(s, s->db, "PRAGMA journal_mode = WAL", mode,
                        sizeof(mode));

    if (rc != 0)
        return rc;
    if (strcmp(mode, "wal") != 0) {
        tf_error(SUB, "%s: cannot use WAL mode (got '%s'); the store needs "
                      "it for concurrent readers",
                 s->path, mode);
        return TF_ESTORE;
    }
    if ((rc = exec_logged(s, s->db, "PRAGMA synchronous = NORMAL")) != 0 ||
        (rc = exec_logged(s, s->db, "PRAGMA foreign_keys = ON")) != 0 ||
        (rc = exec_logged(s, s->db,
                          "PRAGMA journal_size_limit = " JOURNAL_SIZE_LIMIT)) !=
            0)
        return rc;
    return 0;
}

/* Each migration runs in its own transaction together with the version
 * bump, so a crash leaves the database at the previous version. */
static int migrate(tf_store_t *s, long long from)
{
    size_t known = tf_schema_count();

    for (size_t v = (size_t)from + 1; v <= known; v++) {
        char bump[64];
        int rc;

        snprintf(bump, sizeof(bump), "PRAGMA user_version = %zu", v);
        rc = exec_logged(s, s->db, "BEGIN IMMEDIATE");
        if (rc == 0)
            rc = exec_logged(s, s->db, tf_schema_migration(v));
        if (rc == 0)
            rc = exec_logged(s, s->db, bump);
        if (rc == 0)
            rc = exec_logged(s, s->db, "COMMIT");
        if (rc != 0) {
            if (!sqlite3_get_autocommit(s->db))
                sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            tf_error(SUB, "%s: migration to schema version %zu failed", s->path,
                     v);
            return rc;
        }
        tf_info(SUB, "%s: migrated to schema version %zu", s->path, v);
    }
    s->schema_version = (int)known;
    return 0;
}

static int open_readers(tf_store_t *s, unsigned n)
{
    s->readers = calloc(n, sizeof(*s->readers));
    s->free_rd = calloc(n, sizeof(*s->free_rd));
    if (!s->readers || !s->free_rd)
        return TF_ENOMEM;
    for (unsigned i = 0; i < n; i++) {
        int rc = open_conn(s->path, SQLITE_OPEN_READONLY, &s->readers[i]);
        if (rc != 0)
            return rc;
        s->nreaders++;
        s->free_rd[s->nfree++] = s->readers[i];
    }
    return 0;
}

static int start_writer(tf_store_t *s)
{
    sigset_t all, old;
    int err;

    /* Signals belong to the loop thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&s->writer, NULL, writer_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        tf_error(SUB, "cannot start the writer thread: %s", strerror(err));
        return -err;
    }
    return 0;
}

static int init_sync(tf_store_t *s)
{
    pthread_condattr_t ca;

    if (pthread_condattr_init(&ca) != 0)
        return TF_ENOMEM;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, &ca);
    pthread_mutex_init(&s->pool_mu, NULL);
    pthread_cond_init(&s->pool_cond, NULL);
    pthread_condattr_destroy(&ca);
    return 0;
}

static void on_failed_open_closed(uv_handle_t *h)
{
    free_store(h->data);
}

int tf_store_open(uv_loop_t *loop, const char *path,
                  const tf_store_opts_t *opts, tf_store_t **out)
{
    tf_store_t *s;
    long long version = 0;
    unsigned nreaders;
    int rc;

    if (!loop || !path || !out)
        return TF_EINVAL;
    if (!sqlite3_threadsafe()) {
        tf_error(SUB, "this sqlite library is built without thread support");
        return TF_ESTORE;
    }
    s = calloc(1, sizeof(*s));
    if (!s)
        return TF_ENOMEM;
    if (init_sync(s) != 0) {
        free(s);
        return TF_ENOMEM;
    }
    s->loop = loop;
    s->close_grace_ms = CLOSE_GRACE_MS;
    s->soft_bytes = opts && opts->queue_soft_bytes ? opts->queue_soft_bytes
                                                   : DEFAULT_SOFT_BYTES;
    s->hard_bytes = opts && opts->queue_hard_bytes ? opts->queue_hard_bytes
                                                   : DEFAULT_HARD_BYTES;
    if (s->soft_bytes > s->hard_bytes)
        s->soft_bytes = s->hard_bytes;
    nreaders = opts && opts->readers ? opts->readers : DEFAULT_READERS;
    if (nreaders > MAX_READERS)
        nreaders = MAX_READERS;
    if (opts) {
        s->congestion_cb = opts->congestion_cb;
        s->congestion_arg = opts->congestion_arg;
    }
    s->path = strdup(path);
    if (!s->path) {
        rc = TF_ENOMEM;
        goto out;
    }

    rc = open_conn(path,
                   SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &s->db);
    if (rc == 0)
        rc = check_version(s, &version);
    if (rc == 0)
        rc = configure_writer(s);
    if (rc == 0)
        rc = migrate(s, version);
    if (rc == 0)
        rc = open_readers(s, nreaders);
    if (rc != 0)
        goto out;

    rc = uv_async_init(loop, &s->async, on_async);
    if (rc != 0) {
        tf_error(SUB, "uv_async_init: %s", uv_strerror(rc));
        goto out;
    }
    s->async.data = s;
    rc = start_writer(s);
    if (rc != 0) {
        /* The handle is on the loop now: s is freed in its close cb. */
        sqlite3_close(s->db);
        s->db = NULL;
        close_readers(s);
        uv_close((uv_handle_t *)&s->async, on_failed_open_closed);
        return rc;
    }
    tf_info(SUB, "%s: open at schema version %d, %u readers", path,
            s->schema_version, s->nreaders);
    *out = s;
    return 0;

out:
    close_readers(s);
    if (s->db)
        sqlite3_close(s->db);
    free_store(s);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Test hooks                                                          */
/* ------------------------------------------------------------------ */

void tf__store_test_hook_set_max_pages(tf_store_t *s, long pages)
{
    pthread_mutex_lock(&s->mu);
    s->hook_max_pages = pages;
    s->hook_pending = true;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void tf__store_test_hook_set_close_grace_ms(tf_store_t *s, unsigned ms)
{
    s->close_grace_ms = ms;
}
