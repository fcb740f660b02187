/*
 * test_lsmsg.c - tf-loadslaves' fast writers and readers (lsmsg.h)
 * against proto/: the writers' bytes are tf_msg_encode's, the ack reader
 * takes exactly the canonical acks tf_msg_decode takes and leaves
 * everything else to it, and the build_start reader, on generated and
 * mutated build_starts, either declines or reads what tf_msg_decode
 * reads (lsmsg.c lists the one thing it does not judge: what a step's or
 * the source's members mean; the differential check below allows
 * exactly that and nothing else).
 */
#include <jansson.h>

#include "lsmsg.h"
#include "tf_err.h"
#include "tf_test.h"
#include "util.h"

static bool parse(const char *s, uint64_t *b, uint64_t *q)
{
    return ls_ack_parse((const uint8_t *)s, strlen(s), b, q);
}

TF_TEST(selftest_passes)
{
    char err[512] = "";
    int rc = ls_msg_selftest(err, sizeof(err));
    if (rc)
        fprintf(stderr, "%s\n", err);
    TF_CHECK(rc == 0);
}

TF_TEST(ack_reader_takes_the_canonical_form)
{
    uint64_t b = 0, q = 0;
    TF_CHECK(parse("{\"type\":\"ack\",\"build_id\":1,\"seq\":0}", &b, &q));
    TF_CHECK(b == 1 && q == 0);
    TF_CHECK(parse("{\"type\":\"ack\",\"build_id\":9007199254740991,"
                   "\"seq\":9007199254740991}", &b, &q));
    TF_CHECK(b == TF_PROTO_MAX_ID && q == TF_PROTO_MAX_ID);
}

TF_TEST(ack_reader_leaves_the_rest_to_the_decoder)
{
    static const char *other[] = {
        "{\"type\":\"ack\",\"build_id\":0,\"seq\":1}",  /* id out of range */
        "{\"type\":\"ack\",\"build_id\":9007199254740992,\"seq\":1}",
        "{\"type\":\"ack\",\"build_id\":99999999999999999999999,\"seq\":1}",
        "{\"type\":\"ack\",\"build_id\":01,\"seq\":1}", /* leading zero */
        "{\"type\":\"ack\",\"build_id\":-1,\"seq\":1}",
        "{\"type\":\"ack\",\"build_id\":1.0,\"seq\":1}",
        "{\"type\":\"ack\",\"build_id\":1e3,\"seq\":1}",
        "{\"type\":\"ack\",\"build_id\":1,\"seq\":}",
        "{\"type\":\"ack\",\"build_id\":1,\"seq\":2,\"seq\":3}",
        "{\"type\":\"ack\",\"build_id\":1,\"seq\":2} ",
        "{\"type\":\"ack\", \"build_id\":1,\"seq\":2}",
        "{\"type\":\"ack\",\"build_id\":1,\"seq\":2",
        "{\"type\":\"ack\",\"seq\":2,\"build_id\":1}", /* valid, other order */
        "{\"type\":\"ackx\",\"build_id\":1,\"seq\":2}",
        "",
    };
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        uint64_t b = 7, q = 7;
        TF_CHECK(!parse(other[i], &b, &q));
        TF_CHECK(b == 7 && q == 7);
    }
}

TF_TEST(writers_refuse_what_the_decoder_refuses)
{
    char out[LS_MSG_MAX];
    size_t len = 1;
    tf_msg_t m = {.type = TF_MSG_STEP_STARTED};
    m.u.step_started.build_id = 1;
    m.u.step_started.seq = 0; /* event numbers start at 1 */
    m.u.step_started.name = "step";
    TF_CHECK(ls_msg_encode(&m, out, sizeof(out), &len) == TF_EINVAL);
    TF_CHECK(len == 0);
    m.u.step_started.seq = 1;
    m.u.step_started.name = "not a name";
    TF_CHECK(ls_msg_encode(&m, out, sizeof(out), &len) == TF_EINVAL);
    m.u.step_started.name = "step";
    TF_CHECK(ls_msg_encode(&m, out, 10, &len) == TF_E2BIG);
    TF_CHECK(ls_msg_encode(&m, out, sizeof(out), &len) == 0 && len > 10);
    tf_msg_t f = {.type = TF_MSG_STEP_FINISHED};
    f.u.step_finished.build_id = 1;
    f.u.step_finished.seq = 2;
    f.u.step_finished.text = "bad \xff UTF-8";
    TF_CHECK(ls_msg_encode(&f, out, sizeof(out), &len) == TF_EINVAL);
    f.u.step_finished.text = "ok";
    f.u.step_finished.has_warnings = true; /* left to tf_msg_encode */
    TF_CHECK(ls_msg_encode(&f, out, sizeof(out), &len) == TF_ESTATE);
    tf_msg_t h = {.type = TF_MSG_HELLO};
    TF_CHECK(ls_msg_encode(&h, out, sizeof(out), &len) == TF_ESTATE);
}

/* ---- the build_start reader against tf_msg_decode ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

typedef struct counts {
    size_t total, fast, unjudged;
} counts_t;

static int bs_failures;

/* What the jansson tree says of the fields ls_bstart_parse extracts (for
 * the texts tf_msg_decode refuses for a step's or the source's meaning). */
static bool tree_fields(const char *text, size_t len, ls_bstart_t *out)
{
    json_error_t je;
    json_t *root = json_loadb(text, len,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    bool ok = false;
    memset(out, 0, sizeof(*out));
    if (!root)
        return false;
    json_t *id = json_object_get(root, "build_id");
    json_t *b = json_object_get(root, "builder");
    json_t *st = json_object_get(root, "steps");
    json_t *pr = json_object_get(root, "properties");
    if (json_is_integer(id) && json_is_string(b) && json_is_array(st) &&
        json_is_object(pr) && strlen(json_string_value(b)) <= TF_NAME_MAX) {
        out->build_id = (uint64_t)json_integer_value(id);
        snprintf(out->builder, sizeof(out->builder), "%s",
                 json_string_value(b));
        out->nsteps = json_array_size(st);
        json_t *t0 = json_object_get(pr, LS_T0_PROP);
        uint64_t v;
        if (json_is_string(t0) &&
            tf_parse_u64(json_string_value(t0), &v) == 0) {
            out->has_t0 = true;
            out->t0 = v;
        }
        ok = true;
    }
    json_decref(root);
    return ok;
}

static bool same_fields(const ls_bstart_t *a, const ls_bstart_t *b)
{
    return a->build_id == b->build_id && strcmp(a->builder, b->builder) == 0 &&
           a->nsteps == b->nsteps && a->has_t0 == b->has_t0 &&
           a->t0 == b->t0;
}

/* True for an error sentence about a member of one step or of the
 * source: the part of a build_start the fast reader walks but does not
 * judge. */
static bool unjudged_error(const char *err)
{
    const char *p = err;
    if (strncmp(p, "build_start.source.", 19) == 0)
        return true;
    if (strncmp(p, "build_start.steps[", 18) != 0)
        return false;
    p += 18;
    if (*p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9')
        p++;
    return p[0] == ']' && p[1] == '.';
}

/* Reads text both ways. The fast reader may decline anything; when it
 * accepts, tf_msg_decode must accept too and agree on every field, or
 * refuse only a step's or the source's member while jansson parses the
 * text and agrees on the fields. Returns whether the fast reader took it. */
static bool bs_diff(const char *text, size_t len, counts_t *c, int line)
{
    ls_bstart_t fast, slow;
    tf_msg_t m;
    char err[512];
    memset(&fast, 0x5a, sizeof(fast));
    bool took = ls_bstart_parse((const uint8_t *)text, len, &fast);
    int rc = tf_msg_decode(text, len, &m, err, sizeof(err));
    bool ok = true;
    c->total++;
    if (took) {
        c->fast++;
        if (rc == 0) {
            ok = m.type == TF_MSG_BUILD_START;
            if (ok) {
                ls_bstart_from_msg(&m, &slow);
                ok = same_fields(&fast, &slow);
            }
        } else {
            c->unjudged++;
            ok = unjudged_error(err) && tree_fields(text, len, &slow) &&
                 same_fields(&fast, &slow);
        }
    }
    if (rc == 0)
        tf_msg_clear(&m);
    if (!ok) {
        if (bs_failures++ < 20)
            fprintf(stderr, "test_lsmsg.c:%d: fast %d, rc %d \"%.200s\" on "
                    "%.*s\n", line, took, rc, rc ? err : "",
                    (int)(len < 400 ? len : 400), text);
        tf__failed_checks++;
    }
    return took;
}

/* Strings that need escapes, UTF-8 of 2..4 bytes, and plain ones. */
static const char *const odd[] = {
    "a", "b0", "\"", "\\", "/", "\n", "\t", "\r", "\b", "\f", "\x01",
    "\x1f", "\x7f", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", " ",
    "\\u0041", "{}", "[", ":", ",", "0", "-1", "true", "null",
};

static void odd_str(char *out, size_t cap, int parts)
{
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < parts; i++) {
        const char *s = odd[rnd(sizeof(odd) / sizeof(odd[0]))];
        size_t n = strlen(s);
        if (o + n + 1 > cap)
            break;
        memcpy(out + o, s, n + 1);
        o += n;
    }
}

static void rnd_name(char *out, size_t cap)
{
    static const char first[] = "abcXYZ019";
    static const char rest[] = "abz09._-";
    size_t n = 1 + rnd(cap - 1 < 12 ? (uint32_t)cap - 1 : 12);
    out[0] = first[rnd(sizeof(first) - 1)];
    for (size_t i = 1; i < n; i++)
        out[i] = rest[rnd(sizeof(rest) - 1)];
    out[n] = '\0';
}

#define GEN_STEPS_MAX 40
#define GEN_PROPS_MAX 6

/* One generated build_start and the storage its pointers use. */
typedef struct gen {
    tf_msg_t m;
    tf_step_spec_t steps[GEN_STEPS_MAX];
    char names[GEN_STEPS_MAX][16];
    char *argv[GEN_STEPS_MAX][4];
    char args[GEN_STEPS_MAX][3][64];
    tf_kv_t env[GEN_STEPS_MAX][2];
    char envv[GEN_STEPS_MAX][2][64];
    tf_modifiers_t mods[GEN_STEPS_MAX];
    char *info[1];
    tf_test_spec_t tr;
    tf_kv_t props[GEN_PROPS_MAX];
    char pkeys[GEN_PROPS_MAX][32];
    char pvals[GEN_PROPS_MAX][64];
    char builder[16];
    tf_source_t src;
    bool plain_keys; /* no key needs an escape: the reader must take it */
} gen_t;

static void gen_build_start(gen_t *g)
{
    static const char *t0s[] = {"1780000000123456", "0", "007", "",
                                "-1", "12x", "18446744073709551615",
                                "18446744073709551616", " 5", "99"};
    static char *envkeys[] = {"CC", "PATH", "\xc3\xa9t\xc3\xa9"};
    memset(g, 0, sizeof(*g));
    g->plain_keys = true;
    tf_msg_t *m = &g->m;
    m->type = TF_MSG_BUILD_START;
    m->u.build_start.build_id = rnd(4) ? 1 + rnd(1000000)
                                       : TF_PROTO_MAX_ID - rnd(3);
    rnd_name(g->builder, sizeof(g->builder));
    m->u.build_start.builder = g->builder;
    m->u.build_start.number = rnd(2) ? rnd(100) : TF_PROTO_MAX_ID;
    m->u.build_start.workdir = g->builder;
    size_t nsteps = rnd(3) ? 1 + rnd(3) : 1 + rnd(GEN_STEPS_MAX);
    g->info[0] = "^info: (.*)$";
    g->tr.format = TF_TR_FMT_CTEST;
    for (size_t i = 0; i < nsteps; i++) {
        tf_step_spec_t *s = &g->steps[i];
        snprintf(g->names[i], sizeof(g->names[i]), "s%zu", i);
        s->name = g->names[i];
        s->argc = 1 + rnd(3);
        for (size_t k = 0; k < s->argc; k++) {
            odd_str(g->args[i][k], sizeof(g->args[i][k]), 1 + (int)rnd(5));
            g->argv[i][k] = g->args[i][k];
        }
        if (!g->args[i][0][0])
            g->argv[i][0] = "true";
        s->argv = g->argv[i];
        s->workdir = rnd(2) ? "" : "sub/d";
        s->flags = tf_step_flags_default();
        s->flags.always_run = rnd(2);
        s->timeout_s = rnd(2) ? 1200 : rnd(100000);
        if (rnd(3) == 0) {
            s->nenv = 1 + rnd(2);
            s->env = g->env[i];
            for (size_t k = 0; k < s->nenv; k++) {
                g->env[i][k].key = envkeys[(k + i) % 3];
                odd_str(g->envv[i][k], sizeof(g->envv[i][k]), (int)rnd(4));
                g->env[i][k].value = g->envv[i][k];
            }
        }
        if (rnd(4) == 0) {
            g->mods[i].markers = rnd(2);
            g->mods[i].info = g->info;
            g->mods[i].ninfo = 1;
            g->mods[i].warnings = "warning: \\w+";
            g->mods[i].warnings_max = rnd(10);
            s->modifiers = &g->mods[i];
        }
        if (rnd(6) == 0)
            s->test_results = &g->tr;
        if (i == 0 && rnd(3) == 0)
            s->builtin = TF_BUILTIN_SOURCE;
    }
    m->u.build_start.steps = g->steps;
    m->u.build_start.nsteps = nsteps;
    size_t np = rnd(GEN_PROPS_MAX + 1);
    for (size_t i = 0; i < np; i++) {
        if (i == 0 && rnd(3)) {
            snprintf(g->pkeys[i], sizeof(g->pkeys[i]), "%s", LS_T0_PROP);
            snprintf(g->pvals[i], sizeof(g->pvals[i]), "%s",
                     t0s[rnd(sizeof(t0s) / sizeof(t0s[0]))]);
        } else {
            snprintf(g->pkeys[i], sizeof(g->pkeys[i]), "p%zu", i);
            if (rnd(5) == 0) {
                /* a key needing escapes: the reader declines it */
                odd_str(g->pkeys[i] + 2, sizeof(g->pkeys[i]) - 2, 2);
                for (const char *k = g->pkeys[i]; *k; k++)
                    if ((unsigned char)*k < 0x20 || *k == '"' || *k == '\\')
                        g->plain_keys = false;
            }
            odd_str(g->pvals[i], sizeof(g->pvals[i]), (int)rnd(6));
        }
        g->props[i].key = g->pkeys[i];
        g->props[i].value = g->pvals[i];
    }
    m->u.build_start.props = g->props;
    m->u.build_start.nprops = np;
    if (rnd(3) == 0) {
        g->src.repository = "https://example.org/r.git";
        g->src.branch = "main";
        g->src.revision = rnd(2) ? "" : "0123456789abcdef0123";
        g->src.has_patch = rnd(2);
        memset(g->src.patch_sha256, 'a', TF_PROTO_NONCE_HEX);
        g->src.patch_size = rnd(1000);
        m->u.build_start.source = &g->src;
    }
}

TF_TEST(bstart_reader_reads_what_the_decoder_reads)
{
    counts_t c = {0};
    size_t must = 0;
    bs_failures = 0;
    for (int i = 0; i < 3000; i++) {
        gen_t g;
        char *text = NULL;
        size_t len = 0;
        gen_build_start(&g);
        int rc = tf_msg_encode(&g.m, &text, &len);
        TF_CHECK(rc == 0);
        if (rc)
            continue;
        bool took = bs_diff(text, len, &c, __LINE__);
        if (g.plain_keys) {
            must++;
            TF_CHECK(took); /* the master's own spelling is read fast */
        }
        /* The same message indented: whitespace between every token. */
        json_t *root = json_loadb(text, len, 0, NULL);
        char *ind = root ? json_dumps(root, JSON_INDENT(1 + i % 3)) : NULL;
        TF_CHECK(ind != NULL);
        if (ind) {
            bool t2 = bs_diff(ind, strlen(ind), &c, __LINE__);
            TF_CHECK(t2 == took);
        }
        free(ind);
        json_decref(root);
        free(text);
    }
    fprintf(stderr, "fast build_start reader took %zu of %zu generated "
            "(%zu with plain keys), %zu unjudged\n", c.fast, c.total, must,
            c.unjudged);
    TF_CHECK(must > 1000);
    TF_CHECK(c.unjudged == 0);
}

/* Every member order but tf_msg_encode's is declined (and none read
 * wrongly). */
TF_TEST(bstart_reader_declines_other_orders)
{
    static const char *keys[] = {"type", "build_id", "builder", "number",
                                 "workdir", "properties", "steps"};
    counts_t c = {0};
    bs_failures = 0;
    for (int i = 0; i < 200; i++) {
        gen_t g;
        char *text = NULL;
        size_t len = 0;
        gen_build_start(&g);
        g.m.u.build_start.source = NULL;
        TF_CHECK(tf_msg_encode(&g.m, &text, &len) == 0);
        json_t *root = json_loadb(text, len, 0, NULL);
        json_t *o = json_object();
        size_t a = rnd(7), b = (a + 1 + rnd(6)) % 7;
        for (size_t k = 0; k < 7; k++) {
            size_t j = k == a ? b : k == b ? a : k;
            json_object_set(o, keys[j], json_object_get(root, keys[j]));
        }
        char *re = json_dumps(o, JSON_COMPACT);
        TF_CHECK(re != NULL);
        if (re)
            TF_CHECK(!bs_diff(re, strlen(re), &c, __LINE__));
        free(re);
        json_decref(o);
        json_decref(root);
        free(text);
    }
}

/* Truncations, byte deletions, doublings and substitutions, and
 * whitespace inserted, of a few generated build_starts. */
TF_TEST(bstart_reader_agrees_on_mutations)
{
    static const char subst[] = {'"', '\\', ',', '}', '{', '[', ']', ':',
                                 '0', '1', '9', '-', '.', 'e', ' ', '\t',
                                 'x', 'n', 't', 'u', '\0', '\x7f', '\x80',
                                 '\xc3', '\x01'};
    static const char wsp[] = {' ', '\n', '\t', '\r'};
    counts_t c = {0};
    bs_failures = 0;
    rng = 12345;
    for (int seed = 0; seed < 12; seed++) {
        gen_t g;
        char *text = NULL;
        size_t n = 0;
        do {
            gen_build_start(&g);
            if (g.m.u.build_start.nsteps > 3)
                g.m.u.build_start.nsteps = 3;
        } while (!g.plain_keys);
        TF_CHECK(tf_msg_encode(&g.m, &text, &n) == 0);
        if (!text)
            continue;
        char *buf = malloc(n + 2);
        TF_CHECK(buf != NULL);
        if (!buf) {
            free(text);
            continue;
        }
        TF_CHECK(bs_diff(text, n, &c, __LINE__));
        for (size_t i = 0; i < n; i++) {
            bs_diff(text, i, &c, __LINE__);
            memcpy(buf, text, i);
            memcpy(buf + i, text + i + 1, n - i - 1);
            bs_diff(buf, n - 1, &c, __LINE__);
            memcpy(buf, text, i + 1);
            memcpy(buf + i + 1, text + i, n - i);
            bs_diff(buf, n + 1, &c, __LINE__);
            memcpy(buf, text, i);
            buf[i] = wsp[i % 4];
            memcpy(buf + i + 1, text + i, n - i);
            bs_diff(buf, n + 1, &c, __LINE__);
            for (size_t k = 0; k < sizeof(subst); k++) {
                memcpy(buf, text, n);
                if (buf[i] == subst[k])
                    continue;
                buf[i] = subst[k];
                bs_diff(buf, n, &c, __LINE__);
            }
        }
        free(buf);
        free(text);
    }
    fprintf(stderr, "fast build_start reader took %zu of %zu mutated, "
            "%zu of them refused by tf_msg_decode for a step's or the "
            "source's member\n", c.fast, c.total, c.unjudged);
    TF_CHECK(c.fast > 0);
    TF_CHECK(c.fast < c.total);
}

/* Hand-written shapes, one per rule of the reader: each is declined. */
TF_TEST(bstart_reader_declines_the_odd_shapes)
{
#define HEAD "{\"type\":\"build_start\",\"build_id\":7,\"builder\":\"b\","
#define MID "\"number\":1,\"workdir\":\"b\",\"properties\":{},"
#define STEP                                                                  \
    "{\"name\":\"s\",\"command\":[\"true\"],\"env\":{},\"workdir\":\"\","    \
    "\"timeout_s\":1200,\"max_time_s\":0,\"haltOnFailure\":false,"            \
    "\"flunkOnFailure\":true,\"warnOnFailure\":false,"                        \
    "\"flunkOnWarnings\":false,\"warnOnWarnings\":true,\"alwaysRun\":false}"
    static const char *good = HEAD MID "\"steps\":[" STEP "]}";
    static const char *declined[] = {
        HEAD MID "\"steps\":[]}",                         /* no step */
        HEAD MID "\"steps\":[1]}",                        /* not an object */
        HEAD MID "\"steps\":[" STEP "],\"source\":null}", /* not an object */
        HEAD MID "\"steps\":[" STEP "],\"x\":1}",         /* unknown member */
        HEAD MID "\"steps\":[" STEP "],\"steps\":[]}",    /* repeated */
        HEAD "\"number\":-1,\"workdir\":\"b\",\"properties\":{},"
             "\"steps\":[" STEP "]}",
        HEAD "\"number\":1.0,\"workdir\":\"b\",\"properties\":{},"
             "\"steps\":[" STEP "]}",
        "{\"type\":\"build_start\",\"build_id\":0,\"builder\":\"b\","
            MID "\"steps\":[" STEP "]}",
        "{\"type\":\"build_start\",\"build_id\":9007199254740992,"
            "\"builder\":\"b\"," MID "\"steps\":[" STEP "]}",
        "{\"type\":\"build_start\",\"build_id\":07,\"builder\":\"b\","
            MID "\"steps\":[" STEP "]}",
        "{\"type\":\"build_start\",\"build_id\":7,\"builder\":\"\\u0062\","
            MID "\"steps\":[" STEP "]}",
        "{\"type\":\"build_start\",\"build_id\":7,\"builder\":\"b c\","
            MID "\"steps\":[" STEP "]}",
        HEAD "\"number\":1,\"workdir\":\"b\",\"properties\":{\"bench_t0_us\":"
             "\"\\u0031\"},\"steps\":[" STEP "]}",
        HEAD "\"number\":1,\"workdir\":\"b\",\"properties\":{\"bench_t0_us\":"
             "\"1\",\"bench_t0_us\":\"2\"},\"steps\":[" STEP "]}",
        HEAD "\"number\":1,\"workdir\":\"b\",\"properties\":{\"a\":\"1\","
             "\"\\u0061\":\"2\"},\"steps\":[" STEP "]}",
        HEAD "\"number\":1,\"workdir\":\"b\",\"properties\":{\"\":\"1\"},"
             "\"steps\":[" STEP "]}",
        HEAD "\"number\":1,\"workdir\":\"b\",\"properties\":{\"a\":1},"
             "\"steps\":[" STEP "]}",
        HEAD MID "\"steps\":[{\"name\":\"s\",\"name\":\"t\"}]}",
        HEAD MID "\"steps\":[{\"a\":\"\\u0000\"}]}",
        HEAD MID "\"steps\":[{\"a\":\"\\ud83d\\ude00\"}]}",
        HEAD MID "\"steps\":[{\"a\":\"\xc0\xaf\"}]}",
        HEAD MID "\"steps\":[{\"a\":\"\xed\xa0\x80\"}]}",
        HEAD MID "\"steps\":[{\"a\":1.5}]}",
        HEAD MID "\"steps\":[{\"a\":1e3}]}",
        HEAD MID "\"steps\":[{\"a\":1234567890123456789}]}",
        HEAD MID "\"steps\":[{\"a\":[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]}]}",
        HEAD MID "\"steps\":[{\"a\":truex}]}",
        HEAD MID "\"steps\":[{\"a\":\"\\x\"}]}",
        HEAD MID "\"steps\":[" STEP "]}x",
        "{\"builder\":\"b\",\"type\":\"build_start\",\"build_id\":7,"
            MID "\"steps\":[" STEP "]}",
    };
    counts_t c = {0};
    bs_failures = 0;
    TF_CHECK(bs_diff(good, strlen(good), &c, __LINE__));
    for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++) {
        bool took = bs_diff(declined[i], strlen(declined[i]), &c, __LINE__);
        if (took)
            fprintf(stderr, "fast build_start reader took odd shape %zu\n",
                    i);
        TF_CHECK(!took);
    }
    /* A step's members are not judged: this one, which tf_msg_decode
     * refuses (no command), is read (lsmsg.c). */
    const char *unjudged = HEAD MID "\"steps\":[{\"name\":\"s\"}]}";
    TF_CHECK(bs_diff(unjudged, strlen(unjudged), &c, __LINE__));
    TF_CHECK(c.unjudged == 1);
#undef HEAD
#undef MID
#undef STEP
}

TF_TEST_MAIN()
