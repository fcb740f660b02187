/*
 * test_store_logs.c - compressed log storage (store/logblock.h) against
 * real sqlite files: blocks pack and unpack byte-exact and refuse every
 * kind of damage (also the frames the sealer compresses while a step's
 * output arrives); a running step's log is sealed into blocks as it grows
 * while its open tail stays chunks, and every range reads back exactly,
 * before and after the step ends; a database of schema version 5 (logs
 * as uncompressed chunks only) upgrades, reads back byte-exact at once,
 * and is sealed by the writer when idle into logs that still read back
 * exactly; a corrupt block answers TF_ECORRUPT for its range, never
 * wrong bytes, while the rest of the log still reads.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>
#include <uv.h>

#include "store/logblock.h"
#include "store/db_impl.h"
#include "store/queries.h"
#include "store/store.h"
#include "store/store_schema.h"
#include "tf_err.h"
#include "tf_test.h"

/* ------------------------------------------------------------------ */
/* A compiler-like log, the same for the same seed                     */
/* ------------------------------------------------------------------ */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* n bytes of log-like text (malloc'd; the caller frees). */
static unsigned char *make_log(size_t n, uint64_t seed)
{
    static const char *const stems[] = {"parser", "lexer", "socket", "queue",
                                        "pager", "wal", "btree", "utf8"};
    unsigned char *b = malloc(n + 512);
    uint64_t s = seed | 1;
    size_t len = 0;
    unsigned i = 0;
    while (b && len < n) {
        uint64_t r = rng_next(&s);
        int k = snprintf((char *)b + len, 512,
                         "[%u/%u] gcc -O2 -Wall -c src/%s_%u.c -o "
                         "obj/%s.o\nsrc/%s.c:%u:%u: warning: unused "
                         "variable 'x%u'\n",
                         i, 9999, stems[r % 8], (unsigned)(r >> 40) % 50,
                         stems[(r >> 8) % 8], stems[(r >> 16) % 8],
                         (unsigned)(r >> 20) % 900, (unsigned)(r >> 30) % 80,
                         (unsigned)(r >> 50) % 100);
        len += (size_t)k;
        i++;
    }
    return b;
}

static uint64_t newlines(const unsigned char *p, size_t n)
{
    uint64_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += p[i] == '\n';
    return k;
}

/* ------------------------------------------------------------------ */
/* Blocks                                                              */
/* ------------------------------------------------------------------ */

TF_TEST(blocks_pack_and_unpack_exactly)
{
    size_t n = 300000;
    unsigned char *raw = make_log(n, 7);
    unsigned char *back = malloc(n);
    tf_logpacker_t *p = tf_logpacker_new();
    const void *blob;
    size_t blen;
    int codec;

    TF_CHECK(p && raw && back);
    TF_CHECK_INT(tf_logblock_pack(p, raw, n, &blob, &blen, &codec), 0);
    TF_CHECK_INT(codec, TF_LOGBLOCK_ZSTD);
    TF_CHECK(blen < n / 5); /* text like this packs well */
    TF_CHECK_INT(tf_logblock_unpack(codec, blob, blen, n, back), 0);
    TF_CHECK(memcmp(raw, back, n) == 0);

    /* Incompressible bytes are stored as they are. */
    uint64_t s = 99;
    for (size_t i = 0; i < 4096; i++)
        raw[i] = (unsigned char)rng_next(&s);
    TF_CHECK_INT(tf_logblock_pack(p, raw, 4096, &blob, &blen, &codec), 0);
    TF_CHECK_INT(codec, TF_LOGBLOCK_RAW);
    TF_CHECK_INT(blen, 4096);
    TF_CHECK_INT(tf_logblock_unpack(codec, blob, blen, 4096, back), 0);
    TF_CHECK(memcmp(raw, back, 4096) == 0);
    TF_CHECK_INT(tf_logblock_unpack(TF_LOGBLOCK_RAW, blob, 4095, 4096, back),
                 TF_ECORRUPT);
    TF_CHECK_INT(tf_logblock_pack(p, raw, TF_LOGBLOCK_MAX + 1, &blob, &blen,
                                  &codec),
                 TF_E2BIG);
    tf_logpacker_free(p);
    free(raw);
    free(back);
}

TF_TEST(damaged_blocks_are_refused)
{
    size_t n = 200000;
    unsigned char *raw = make_log(n, 3);
    unsigned char *back = malloc(n + 16);
    tf_logpacker_t *p = tf_logpacker_new();
    const void *blob;
    size_t blen;
    int codec;

    TF_CHECK_INT(tf_logblock_pack(p, raw, n, &blob, &blen, &codec), 0);
    unsigned char *z = malloc(blen + 8);
    memcpy(z, blob, blen);
    /* Every single flipped byte is caught: either the frame does not
     * decode, or the content checksum does not match. */
    unsigned wrong = 0;
    for (size_t i = 0; i < blen; i += 97) {
        z[i] ^= 0x20;
        int rc = tf_logblock_unpack(codec, z, blen, n, back);
        if (rc != TF_ECORRUPT)
            wrong++;
        z[i] ^= 0x20;
    }
    TF_CHECK_INT(wrong, 0);
    /* Cut short, with bytes after the frame, of another length, of an
     * unknown codec. */
    TF_CHECK_INT(tf_logblock_unpack(codec, z, blen - 1, n, back),
                 TF_ECORRUPT);
    memset(z + blen, 0, 8);
    TF_CHECK_INT(tf_logblock_unpack(codec, z, blen + 8, n, back),
                 TF_ECORRUPT);
    TF_CHECK_INT(tf_logblock_unpack(codec, z, blen, n - 1, back),
                 TF_ECORRUPT);
    TF_CHECK_INT(tf_logblock_unpack(7, z, blen, n, back), TF_ECORRUPT);
    TF_CHECK_INT(tf_logblock_unpack(codec, z, blen, n, back), 0);
    TF_CHECK(memcmp(raw, back, n) == 0);
    free(z);
    tf_logpacker_free(p);
    free(raw);
    free(back);
}

/* The sealer's streamed frames (compressed while fed, with no content
 * size in the header) unpack byte-exact and are refused when damaged,
 * cut, or of another length than the row says. */
TF_TEST(streamed_blocks_unpack_exactly_and_refuse_damage)
{
    size_t n = TF_LOGBLOCK_TARGET;
    unsigned char *raw = make_log(n, 11);
    unsigned char *back = malloc(n + 16);
    tf_logsealer_t *s = tf_logsealer_new();
    const void *blob;
    size_t blen;
    int codec;

    TF_CHECK(s && raw && back);
    TF_CHECK_INT(tf_logsealer_finish(s, 0, &blob, &blen, &codec),
                 TF_EINVAL); /* nothing fed */
    /* A frame dropped half way leaves nothing behind in the next. */
    TF_CHECK_INT(tf_logsealer_feed(s, 1, raw + 5000, 70000), 0);
    tf_logsealer_start(s, 1);
    for (size_t off = 0; off < n; off += 65536)
        TF_CHECK_INT(tf_logsealer_feed(s, 1, raw + off,
                                       n - off < 65536 ? n - off : 65536),
                     0);
    TF_CHECK_INT(tf_logsealer_finish(s, 1, &blob, &blen, &codec), 0);
    TF_CHECK_INT(codec, TF_LOGBLOCK_ZSTD);
    TF_CHECK_INT(tf_logblock_unpack(codec, blob, blen, n, back), 0);
    TF_CHECK(memcmp(raw, back, n) == 0);
    /* Compressing as a stream packs as well as at once (within 1%). */
    tf_logpacker_t *p = tf_logpacker_new();
    const void *once;
    size_t once_len;
    int once_codec;
    TF_CHECK(p != NULL);
    TF_CHECK_INT(tf_logblock_pack(p, raw, n, &once, &once_len, &once_codec),
                 0);
    TF_CHECK(blen * 100 <= once_len * 101);
    tf_logpacker_free(p);

    unsigned char *z = malloc(blen + 8);
    memcpy(z, blob, blen);
    unsigned wrong = 0;
    for (size_t i = 0; i < blen; i += 61) {
        z[i] ^= 0x20;
        if (tf_logblock_unpack(codec, z, blen, n, back) != TF_ECORRUPT)
            wrong++;
        z[i] ^= 0x20;
    }
    TF_CHECK_INT(wrong, 0);
    TF_CHECK_INT(tf_logblock_unpack(codec, z, blen - 1, n, back),
                 TF_ECORRUPT);
    memset(z + blen, 0, 8);
    TF_CHECK_INT(tf_logblock_unpack(codec, z, blen + 8, n, back),
                 TF_ECORRUPT);
    TF_CHECK_INT(tf_logblock_unpack(codec, z, blen, n - 1, back),
                 TF_ECORRUPT);
    TF_CHECK_INT(tf_logblock_unpack(codec, z, blen, n + 1, back),
                 TF_ECORRUPT);
    TF_CHECK_INT(tf_logblock_unpack(codec, z, blen, n, back), 0);
    TF_CHECK(memcmp(raw, back, n) == 0);

    /* The next frame of the same stream; a frame past the cap is
     * refused, not grown. */
    TF_CHECK_INT(tf_logsealer_feed(s, 1, raw, 1000), 0);
    TF_CHECK_INT(tf_logsealer_finish(s, 1, &blob, &blen, &codec), 0);
    TF_CHECK_INT(tf_logblock_unpack(codec, blob, blen, 1000, back), 0);
    TF_CHECK(memcmp(raw, back, 1000) == 0);
    TF_CHECK_INT(tf_logsealer_feed(s, 2, raw, n), 0);
    TF_CHECK_INT(tf_logsealer_feed(s, 2, raw, TF_LOGSTREAM_CAP - n + 1),
                 TF_E2BIG);
    free(z);
    tf_logsealer_free(s);
    free(raw);
    free(back);
}

/* ------------------------------------------------------------------ */
/* A store                                                             */
/* ------------------------------------------------------------------ */

typedef struct fx {
    uv_loop_t loop;
    char dir[256];
    char path[300];
    tf_store_t *s;
} fx_t;

static void fx_dir(fx_t *f)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/tf-logs-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir) || uv_loop_init(&f->loop) != 0)
        exit(2);
    snprintf(f->path, sizeof(f->path), "%s/tf.db", f->dir);
    f->s = NULL;
}

static void fx_open(fx_t *f)
{
    TF_CHECK_INT(tf_store_open(&f->loop, f->path, NULL, &f->s), 0);
    if (!f->s)
        exit(1);
}

static void closed_cb(void *arg)
{
    *(bool *)arg = true;
}

static void fx_close(fx_t *f)
{
    bool closed = false;
    if (f->s)
        tf_store_close(f->s, closed_cb, &closed);
    while (f->s && !closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    f->s = NULL;
}

static void fx_teardown(fx_t *f)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    char p[320];

    fx_close(f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    TF_CHECK_INT(uv_loop_close(&f->loop), 0);
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", f->path, suffixes[i]);
        unlink(p);
    }
    rmdir(f->dir);
}

typedef struct outcome {
    int rc;
    int calls;
} outcome_t;

static void outcome_cb(void *arg, int rc)
{
    outcome_t *o = arg;
    o->rc = rc;
    o->calls++;
}

static int commit(fx_t *f, tf_wgroup_t *g)
{
    outcome_t o = {.rc = 1};
    int rc = tf_store_submit(f->s, g, outcome_cb, &o);
    if (rc) {
        tf_wgroup_free(g);
        return rc;
    }
    uint64_t end = uv_hrtime() + 20000000000ull;
    while (o.calls == 0 && uv_hrtime() < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    TF_CHECK_INT(o.calls, 1);
    return o.rc;
}

static long long dint(fx_t *f, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;

    if (sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL) ==
            SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void make_build(fx_t *f, uint64_t build)
{
    tf_wgroup_t *g = tf_wgroup_new(0);
    tf_request_rec_t r = {
        .id = build, .builder = "b1", .reason = "test", .owner = "ann",
        .properties = "{}", .tests = "[]", .priority = 2,
        .submitted_ms = 1000,
    };
    tf_op_builder_activate(g, "b1");
    tf_op_slave_known(g, "s1");
    tf_op_request_create(g, &r);
    TF_CHECK_INT(commit(f, g), 0);
    tf_build_step_rec_t steps[] = {
        {.name = "compile", .command_json = "[\"make\"]", .flags = 0},
    };
    tf_build_rec_t b = {
        .id = build, .number = build, .request_id = build, .builder = "b1",
        .slave = "s1", .properties = "{}", .reason = "test",
        .created_ms = 2000, .steps = steps, .nsteps = 1,
    };
    g = tf_wgroup_new(0);
    tf_op_build_create(g, &b);
    tf_op_step_start(g, build, 0, 3000, true);
    TF_CHECK_INT(commit(f, g), 0);
}

/* Stores log[0, n) as output of step 0 of build in chunks of `chunk`
 * bytes, one event each from seq 1; *seq gets the next seq. */
static void store_output(fx_t *f, uint64_t build, const unsigned char *log,
                         size_t from, size_t n, size_t chunk, uint64_t *seq)
{
    for (size_t off = from; off < n; off += chunk) {
        size_t len = n - off < chunk ? n - off : chunk;
        tf_wgroup_t *g = tf_wgroup_new(len + 256);
        tf_op_build_seq(g, build, *seq);
        tf_output_rec_t o = {
            .build_id = build, .seq = *seq, .step = 0, .stream = 1,
            .offset = off, .line = newlines(log, off),
            .log_bytes = off + len, .log_lines = newlines(log, off + len),
        };
        tf_op_output(g, &o, log + off, len);
        TF_CHECK_INT(commit(f, g), 0);
        (*seq)++;
    }
}

static void finish_step(fx_t *f, uint64_t build, uint64_t seq)
{
    tf_wgroup_t *g = tf_wgroup_new(0);
    tf_op_build_seq(g, build, seq);
    tf_step_finish_rec_t fr = {.build_id = build, .step = 0, .result = 0,
                               .time_ms = 4000, .duration_ms = 1000};
    tf_op_step_finish(g, &fr);
    TF_CHECK_INT(commit(f, g), 0);
}

/* A sqlite connection lent as db.h's handle (store/db_impl.h), for the
 * read functions; one at a time (it is static). */
static tf_db_t *lite_db(sqlite3 *db)
{
    static tf_db_t d;
    memset(&d, 0, sizeof(d));
    d.kind = TF_DB_KIND_SQLITE;
    d.lite = db;
    return &d;
}

/* Reads [start, end) of the log through tf_q_log_read in pieces of
 * `piece` bytes, as the API streams it; checks it against want. Returns
 * the first error. */
static int read_range(fx_t *f, uint64_t build, uint64_t start, uint64_t end,
                      size_t piece, const unsigned char *want)
{
    sqlite3 *db = NULL;
    tf_logcache_t cache = {0};
    unsigned char *buf = malloc(piece);
    uint64_t pos = start;
    int rc = 0;

    TF_CHECK_INT(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL),
                 SQLITE_OK);
    while (pos < end) {
        size_t got = 0;
        rc = tf_q_log_read(lite_db(db), build, 0, pos, end, piece, buf, &got, &cache);
        if (rc)
            break;
        if (got == 0) {
            fprintf(stderr, "ran dry at %llu of [%llu, %llu)\n",
                    (unsigned long long)pos, (unsigned long long)start,
                    (unsigned long long)end);
            rc = TF_ENOENT; /* ran dry before the end */
            break;
        }
        if (memcmp(buf, want + pos, got) != 0) {
            fprintf(stderr, "wrong bytes at %llu\n", (unsigned long long)pos);
            rc = TF_EINVAL;
            break;
        }
        pos += got;
    }
    tf_logcache_clear(&cache);
    sqlite3_close(db);
    free(buf);
    return rc;
}

/* Checks a set of ranges of a log of n bytes: all of it, tails, ranges
 * across block ends, single bytes, in several piece sizes. */
static void check_ranges(fx_t *f, uint64_t build, const unsigned char *log,
                         size_t n)
{
    TF_CHECK_INT(read_range(f, build, 0, n, 256 * 1024, log), 0);
    TF_CHECK_INT(read_range(f, build, 0, n, 4093, log), 0);
    TF_CHECK_INT(read_range(f, build, n - 65536, n, 256 * 1024, log), 0);
    TF_CHECK_INT(read_range(f, build, n - 1, n, 16, log), 0);
    TF_CHECK_INT(read_range(f, build, TF_LOGBLOCK_TARGET - 10,
                            TF_LOGBLOCK_TARGET + 10, 7, log),
                 0);
    uint64_t s = 5;
    for (int i = 0; i < 40; i++) {
        uint64_t a = rng_next(&s) % n, b = a + rng_next(&s) % 300000;
        if (b > n)
            b = n;
        if (b > a)
            TF_CHECK_INT(read_range(f, build, a, b, 65536, log), 0);
    }
}

typedef struct visit_ctx {
    const unsigned char *log;
    uint64_t pos;
    unsigned bad;
} visit_ctx_t;

static bool visit_cb(void *arg, uint64_t offset, uint64_t line,
                     const void *data, size_t len)
{
    visit_ctx_t *v = arg;
    /* A piece starts where the last ended (or, for the first, at or
     * before where the visit began), with its line number right. */
    if (offset > v->pos || line != newlines(v->log, offset) ||
        memcmp(data, v->log + offset, len) != 0)
        v->bad++;
    v->pos = offset + len;
    return true;
}

static void check_visit(fx_t *f, uint64_t build, const unsigned char *log,
                        size_t n, uint64_t from)
{
    sqlite3 *db = NULL;
    visit_ctx_t v = {.log = log, .pos = from};
    TF_CHECK_INT(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL),
                 SQLITE_OK);
    TF_CHECK_INT(tf_q_log_visit(lite_db(db), build, 0, from, visit_cb, &v), 0);
    TF_CHECK_INT(v.bad, 0);
    TF_CHECK_INT(v.pos, n);
    sqlite3_close(db);
}

TF_TEST(a_growing_log_is_sealed_and_reads_back_exactly)
{
    fx_t f;
    size_t n = 3 * 1024 * 1024 + 12345;
    unsigned char *log = make_log(n, 11);
    uint64_t seq = 1;

    fx_dir(&f);
    fx_open(&f);
    make_build(&f, 1);
    /* Output in frames of 16 KiB, as a slave sends a fast step's. */
    store_output(&f, 1, log, 0, n, 16384, &seq);
    /* Running: sealed blocks of about TF_LOGBLOCK_TARGET, and a tail of
     * chunks shorter than that. */
    long long sealed = dint(&f, "SELECT log_sealed FROM steps");
    TF_CHECK(sealed >= (long long)(n - TF_LOGBLOCK_TARGET));
    TF_CHECK(sealed < (long long)n);
    TF_CHECK_INT(dint(&f, "SELECT sum(raw_len) FROM log_blocks"), sealed);
    TF_CHECK_INT(dint(&f, "SELECT min(offset) FROM log_chunks"), sealed);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM log_blocks WHERE raw_len < "
                          "1048576"),
                 0);
    check_ranges(&f, 1, log, n);
    check_visit(&f, 1, log, n, 0);
    check_visit(&f, 1, log, n, n - 100000);

    /* The step ends: the rest is sealed, no chunk is left. */
    finish_step(&f, 1, seq);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM log_chunks"), 0);
    TF_CHECK_INT(dint(&f, "SELECT log_sealed FROM steps"), n);
    TF_CHECK_INT(dint(&f, "SELECT sum(raw_len) FROM log_blocks"), n);
    /* Stored in a fraction of the raw size (this generator's numbers are
     * random; tests/bench/compilerlog.py's logs are the benchmark's). */
    long long stored = dint(&f, "SELECT sum(length(data)) FROM log_blocks");
    printf("# %zu bytes stored in %lld (%.1f%%)\n", n, stored,
           100.0 * (double)stored / (double)n);
    TF_CHECK(stored < (long long)(n / 5));
    check_ranges(&f, 1, log, n);
    check_visit(&f, 1, log, n, 0);
    check_visit(&f, 1, log, n, n - 1000);
    fx_teardown(&f);
    free(log);
}

/* Follows step 0 of build as net/live.c does: from `from` to the stored
 * size in pieces of 64 KiB through tf_q_log_follow, checking the bytes
 * against want. Returns the offset reached; *ended as the last read
 * said. */
static uint64_t follow(fx_t *f, uint64_t build, uint64_t from,
                       const unsigned char *want, bool *ended)
{
    sqlite3 *db = NULL;
    static unsigned char buf[65536];
    uint64_t size = 0;
    TF_CHECK_INT(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL),
                 SQLITE_OK);
    for (;;) {
        size_t got = 0;
        TF_CHECK_INT(tf_q_log_follow(lite_db(db), build, 0, from,
                                     sizeof(buf), buf, &got, &size, ended),
                     0);
        TF_CHECK(got <= sizeof(buf));
        TF_CHECK(memcmp(buf, want + from, got) == 0);
        from += got;
        if (got == 0 || from >= size)
            break;
    }
    TF_CHECK_INT(from, size);
    sqlite3_close(db);
    return from;
}

TF_TEST(a_follower_reads_a_growing_log_from_its_offset_to_the_end)
{
    fx_t f;
    size_t n = 2 * 1024 * 1024 + 777;
    unsigned char *log = make_log(n, 5);
    uint64_t seq = 1, size = 0;
    bool ended = true;
    size_t got = 1;
    sqlite3 *db = NULL;
    unsigned char one[16];

    fx_dir(&f);
    fx_open(&f);
    TF_CHECK_INT(sqlite3_open_v2(f.path, &db, SQLITE_OPEN_READONLY, NULL),
                 SQLITE_OK);
    /* No such step yet: not an error of the database. */
    TF_CHECK_INT(tf_q_log_follow(lite_db(db), 1, 0, 0, sizeof(one), one,
                                 &got, &size, &ended),
                 TF_ENOENT);
    make_build(&f, 1);
    store_output(&f, 1, log, 0, n / 3, 5000, &seq);
    /* The first read of a follower: the size only, no bytes. */
    TF_CHECK_INT(tf_q_log_follow(lite_db(db), 1, 0, UINT64_MAX, sizeof(one),
                                 one, &got, &size, &ended),
                 0);
    TF_CHECK_INT(got, 0);
    TF_CHECK_INT(size, n / 3);
    TF_CHECK(!ended);
    sqlite3_close(db);
    /* From 0 and from the middle of a chunk, as the log grows past
     * sealed blocks into the open tail; then to the end once it ended. */
    TF_CHECK_INT(follow(&f, 1, 0, log, &ended), n / 3);
    TF_CHECK(!ended);
    store_output(&f, 1, log, n / 3, n, 5000, &seq);
    TF_CHECK_INT(follow(&f, 1, n / 3 - 1234, log, &ended), n);
    TF_CHECK(!ended);
    finish_step(&f, 1, seq);
    TF_CHECK_INT(follow(&f, 1, n - 70000, log, &ended), n);
    TF_CHECK(ended);
    fx_teardown(&f);
    free(log);
}

/* Makes the database at f->path a schema version 5 one (before
 * compressed logs) holding build 1 (finished, its step's n bytes all in
 * chunks of `chunk`) and build 2 (running, half of it stored). */
static void make_v5_database(fx_t *f, const unsigned char *log, size_t n,
                             size_t chunk)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    TF_CHECK_INT(sqlite3_open(f->path, &db), SQLITE_OK);
    for (size_t v = 1; v <= 5; v++)
        TF_CHECK_INT(sqlite3_exec(db, tf_schema_migration(v), NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    TF_CHECK_INT(sqlite3_exec(db,
                              "PRAGMA user_version = 5;"
                              "INSERT INTO builders(name) VALUES('b1');"
                              "INSERT INTO builds(id, builder, number, "
                              "request_id, slave, state, created_ms, nsteps) "
                              "VALUES(1, 'b1', 1, 1, 's1', 'finished', 1, 1),"
                              "(2, 'b1', 2, 2, 's1', 'running', 1, 1);",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    TF_CHECK_INT(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    TF_CHECK_INT(sqlite3_prepare_v2(db,
                                    "INSERT INTO log_chunks(build_id, step, "
                                    "offset, seq, stream, line, data) "
                                    "VALUES(?, 0, ?, ?, 1, ?, ?)",
                                    -1, &st, NULL),
                 SQLITE_OK);
    uint64_t seq = 1;
    for (int b = 1; b <= 2; b++) {
        size_t upto = b == 1 ? n : n / 2;
        for (size_t off = 0; off < upto; off += chunk, seq++) {
            size_t len = upto - off < chunk ? upto - off : chunk;
            sqlite3_bind_int(st, 1, b);
            sqlite3_bind_int64(st, 2, (int64_t)off);
            sqlite3_bind_int64(st, 3, (int64_t)seq);
            sqlite3_bind_int64(st, 4, (int64_t)newlines(log, off));
            sqlite3_bind_blob(st, 5, log + off, (int)len, SQLITE_STATIC);
            TF_CHECK_INT(sqlite3_step(st), SQLITE_DONE);
            sqlite3_reset(st);
        }
        char sql[300];
        snprintf(sql, sizeof(sql),
                 "INSERT INTO steps(build_id, idx, name, state, log_bytes, "
                 "log_lines) VALUES(%d, 0, 'compile', '%s', %zu, %llu);"
                 "UPDATE builds SET last_seq = %llu WHERE id = %d",
                 b, b == 1 ? "done" : "running", upto,
                 (unsigned long long)newlines(log, upto),
                 (unsigned long long)seq - 1, b);
        TF_CHECK_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    }
    sqlite3_finalize(st);
    TF_CHECK_INT(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

TF_TEST(an_old_database_reads_back_exactly_after_the_upgrade)
{
    fx_t f;
    size_t n = 2 * 1024 * 1024 + 777;
    unsigned char *log = make_log(n, 21);

    fx_dir(&f);
    make_v5_database(&f, log, n, 8000);
    fx_open(&f);
    TF_CHECK_INT(tf_store_schema_version(f.s), tf_schema_count());
    /* Right after the upgrade, whatever the writer has sealed yet. */
    check_ranges(&f, 1, log, n);
    check_visit(&f, 1, log, n, 0);
    TF_CHECK_INT(read_range(&f, 2, 0, n / 2, 65536, log), 0);

    /* The writer seals the finished step's log while idle, one block at
     * a time; the running step's log stays a tail. */
    uint64_t end = uv_hrtime() + 20000000000ull;
    while (dint(&f, "SELECT count(*) FROM log_chunks WHERE build_id = 1") &&
           uv_hrtime() < end)
        usleep(20000);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM log_chunks WHERE "
                          "build_id = 1"),
                 0);
    TF_CHECK_INT(dint(&f, "SELECT log_sealed FROM steps WHERE build_id = 1"),
                 n);
    TF_CHECK(dint(&f, "SELECT count(*) FROM log_blocks WHERE build_id = 1") >=
             2);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM log_blocks WHERE "
                          "build_id = 2"),
                 0);
    check_ranges(&f, 1, log, n);
    check_visit(&f, 1, log, n, 0);
    check_visit(&f, 1, log, n, n - 50000);

    /* The running build goes on from where it was and ends: the old
     * chunks and the new output are sealed together. */
    uint64_t seq = (uint64_t)dint(&f, "SELECT last_seq FROM builds WHERE "
                                      "id = 2") + 1;
    store_output(&f, 2, log, n / 2, n, 8000, &seq);
    finish_step(&f, 2, seq);
    TF_CHECK_INT(dint(&f, "SELECT count(*) FROM log_chunks"), 0);
    TF_CHECK_INT(read_range(&f, 2, 0, n, 65536, log), 0);
    check_visit(&f, 2, log, n, 0);

    /* And it all survives a restart. */
    fx_close(&f);
    fx_open(&f);
    check_ranges(&f, 1, log, n);
    TF_CHECK_INT(read_range(&f, 2, 0, n, 100000, log), 0);
    fx_teardown(&f);
    free(log);
}

TF_TEST(a_corrupt_block_is_an_error_for_its_range_only)
{
    fx_t f;
    size_t n = 2 * 1024 * 1024;
    unsigned char *log = make_log(n, 31);
    uint64_t seq = 1;

    fx_dir(&f);
    fx_open(&f);
    make_build(&f, 1);
    store_output(&f, 1, log, 0, n, 32768, &seq);
    finish_step(&f, 1, seq);
    fx_close(&f);

    /* Damage the second block: one byte in the middle of its blob. */
    long long boff = dint(&f, "SELECT offset FROM log_blocks ORDER BY offset "
                              "LIMIT 1 OFFSET 1");
    long long blen = dint(&f, "SELECT raw_len FROM log_blocks ORDER BY "
                              "offset LIMIT 1 OFFSET 1");
    TF_CHECK(boff > 0 && blen > 0);
    sqlite3 *db = NULL;
    TF_CHECK_INT(sqlite3_open(f.path, &db), SQLITE_OK);
    char sql[300];
    snprintf(sql, sizeof(sql),
             "UPDATE log_blocks SET data = substr(data, 1, length(data) / 2)"
             " || x'5a' || substr(data, length(data) / 2 + 2) "
             "WHERE offset = %lld",
             boff);
    TF_CHECK_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    TF_CHECK_INT(sqlite3_changes(db), 1);
    sqlite3_close(db);

    fx_open(&f);
    /* Its range, a range running into it, all of it: errors. */
    TF_CHECK_INT(read_range(&f, 1, (uint64_t)boff + 10, (uint64_t)boff + 20,
                            4096, log),
                 TF_ECORRUPT);
    TF_CHECK_INT(read_range(&f, 1, (uint64_t)boff - 100, (uint64_t)boff + 100,
                            4096, log),
                 TF_ECORRUPT);
    TF_CHECK_INT(read_range(&f, 1, 0, n, 65536, log), TF_ECORRUPT);
    /* The blocks around it read exactly. */
    TF_CHECK_INT(read_range(&f, 1, 0, (uint64_t)boff, 65536, log), 0);
    TF_CHECK_INT(read_range(&f, 1, (uint64_t)(boff + blen), n, 65536, log),
                 0);
    /* A visit stops with the error too, never feeding wrong bytes. */
    sqlite3 *rd = NULL;
    TF_CHECK_INT(sqlite3_open_v2(f.path, &rd, SQLITE_OPEN_READONLY, NULL),
                 SQLITE_OK);
    visit_ctx_t v = {.log = log};
    TF_CHECK_INT(tf_q_log_visit(lite_db(rd), 1, 0, 0, visit_cb, &v), TF_ECORRUPT);
    TF_CHECK_INT(v.bad, 0);
    TF_CHECK_INT(v.pos, boff);
    sqlite3_close(rd);
    fx_teardown(&f);
    free(log);
}

TF_TEST_MAIN()
