/*
 * test_build_start.c - the build_start a master sends is the same bytes
 * whether it comes from the builder's template (master/core/build.c,
 * common/tpl.h) or from the encoder, for awkward builders (quotes,
 * backslashes, control characters and unicode in properties, commands and
 * environments; a long property; a repository) and awkward requests (a
 * revision, an owner, properties, tests, a patch, a try job, values the
 * encoder escapes); requests and builders the template cannot serve take
 * the encoder (TF_ENOENT from the template way), and a builder whose
 * recipe changes gets a new template. The rows such a build stores (the
 * builds row's properties, each step's name, command and flags) are the
 * same whether they come from the builder's rows template or from
 * jansson, for the same builders and for builders whose steps interpolate
 * properties, use shell strings, environments and flags. tf_tpl itself:
 * counts, overlaps, the cap.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/master.h"
#include "proto.h"
#include "tf_err.h"
#include "tf_test.h"
#include "tpl.h"

/* Builders of every kind the template meets; "long" gets a 200 KB
 * property value below. */
static const char config_text[] =
    "{\"name\": \"t\", \"slaves\": [], \"builders\": [\n"
    " {\"name\": \"plain\", \"steps\": [{\"name\": \"noop\", "
    "\"command\": [\"true\"]}]},\n"
    " {\"name\": \"awkward\", \"properties\": {\"q\": \"say \\\"hi\\\"\", "
    "\"bs\": \"C:\\\\dir\\\\\", \"ctl\": \"a\\nb\\tc\\u0001d\\u001f\", "
    "\"uni\": \"Zo\\u00eb \\u2603 \\ud83d\\ude00\", \"slash\": \"a/b</\"},\n"
    "  \"steps\": [{\"name\": \"s1\", \"command\": [\"printf\", "
    "\"%s\\\\n\", \"\\\"quoted\\\" \\u00e9\"], \"env\": {\"E\": "
    "\"\\u2603\\\"x\\\\\"}},\n"
    "   {\"name\": \"sh\", \"command\": \"echo 'it''s' \\\"$HOME\\\" "
    "\\u00fc\"}]},\n"
    " {\"name\": \"repo\", \"repository\": \"https://example.com/r.git\", "
    "\"branch\": \"main\", \"steps\": [{\"name\": \"make\", "
    "\"command\": [\"make\"]}]},\n"
    " {\"name\": \"interp\", \"steps\": [{\"name\": \"n\", \"command\": "
    "[\"echo\", \"%(prop:buildnumber)s\", \"%(prop:slave)s\"]}]},\n"
    " {\"name\": \"interpenv\", \"repository\": \"https://example.com/r.git\","
    " \"branch\": \"main\", \"steps\": [{\"name\": \"n\", \"command\": "
    "\"echo $R\", \"env\": {\"R\": \"%(prop:revision)s\"}}]},\n"
    " {\"name\": \"long\", \"properties\": {\"big\": \"@BIG@\"}, "
    "\"steps\": [{\"name\": \"noop\", \"command\": [\"true\"]}]},\n"
    /* Steps that interpolate the values every build of a shape shares,
     * shell strings, environments, flags, a branch with a '/'. */
    " {\"name\": \"steps\", \"repository\": \"https://example.com/s.git\", "
    "\"branch\": \"release/2.x\", \"properties\": {\"cc\": \"gcc -O2\", "
    "\"target\": \"all\", \"q\": \"it's \\\"q\\\"\"},\n"
    "  \"steps\": [{\"name\": \"configure\", \"command\": \"./configure "
    "CC=%(prop:cc)s --prefix=/opt/%(prop:builder)s\", \"haltOnFailure\": "
    "true, \"env\": {\"BR\": \"%(prop:branch)s\", \"Q\": \"%(prop:q)s\"}},\n"
    "   {\"name\": \"build\", \"command\": [\"make\", \"%(prop:target)s\", "
    "\"Q=%(prop:q)s\", \"%(prop:tests)s\"], \"flunkOnWarnings\": true, "
    "\"warnOnFailure\": true, \"timeout\": 60},\n"
    "   {\"name\": \"report\", \"command\": \"echo %(prop:missing:-none)s "
    "%(prop:repository)s '%(prop:q)s'\", \"workdir\": \"out\"},\n"
    "   {\"name\": \"cleanup\", \"command\": [\"git\", \"clean\", \"-fdx\"], "
    "\"alwaysRun\": true}]}\n"
    "]}\n";

static tf_config_t *load(void)
{
    size_t big = 200 * 1024;
    const char *at = strstr(config_text, "@BIG@");
    size_t head = (size_t)(at - config_text), n = strlen(config_text);
    char *text = malloc(n + big);
    tf_config_t *c = NULL;
    tf_cfg_diags_t d = {0};

    TF_CHECK(text != NULL);
    if (!text)
        return NULL;
    memcpy(text, config_text, head);
    memset(text + head, 'x', big);
    memcpy(text + head + big, at + 5, n - head - 5);
    size_t len = head + big + n - head - 5;
    int rc = tf_config_load_text("/t.json", text, len, &c, &d);
    for (size_t i = 0; i < d.count; i++)
        fprintf(stderr, "config: %s: %s\n", d.items[i].key,
                d.items[i].message);
    TF_CHECK_INT(rc, 0);
    tf_cfg_diags_clear(&d);
    free(text);
    return c;
}

/* A builder object as the master keeps it, for cfg's builder name. */
static tf_mbuilder_t *mbuilder(const tf_config_t *c, const char *name)
{
    tf_mbuilder_t *mb = calloc(1, sizeof(*mb));
    if (!mb)
        return NULL;
    snprintf(mb->name, sizeof(mb->name), "%s", name);
    mb->cfg = tf_config_builder(c, name);
    TF_CHECK(mb->cfg != NULL);
    TF_CHECK(mb->cfg && mb->cfg->recipe[0]);
    return mb;
}

static void mbuilder_free(tf_mbuilder_t *mb)
{
    tf_build_templates_free(mb);
    free(mb);
}

/* Renders build (id, number) on slave both ways; the template way must
 * give the encoder's bytes (want_tpl) or TF_ENOENT (!want_tpl). Returns
 * whether it matched what was expected. */
static bool same_both_ways(tf_mbuilder_t *mb, const tf_reqspec_t *spec,
                           uint64_t id, uint64_t number, const char *slave,
                           bool want_tpl)
{
    tf_request_t *r = tf_request_make(spec, 1, 0);
    char *enc = NULL, *tpl = NULL;
    size_t enc_len = 0, tpl_len = 0;
    bool ok = false;

    TF_CHECK(r != NULL);
    if (!r)
        return false;
    int erc = tf_build_render_start(mb, r, id, number, slave, false, &enc,
                                    &enc_len);
    int trc = tf_build_render_start(mb, r, id, number, slave, true, &tpl,
                                    &tpl_len);
    TF_CHECK_INT(erc, 0);
    if (want_tpl) {
        TF_CHECK_INT(trc, 0);
        ok = erc == 0 && trc == 0 && enc_len == tpl_len &&
             memcmp(enc, tpl, enc_len) == 0;
        if (!ok)
            fprintf(stderr, "builder %s: template\n%.*s\nencoder\n%.*s\n",
                    mb->name, (int)(tpl_len < 2000 ? tpl_len : 2000),
                    tpl ? tpl : "", (int)(enc_len < 2000 ? enc_len : 2000),
                    enc ? enc : "");
        /* And what the slave decodes is the build asked for. */
        tf_msg_t m = {0};
        char why[300];
        TF_CHECK_INT(tf_msg_decode(tpl, tpl_len, &m, why, sizeof(why)), 0);
        TF_CHECK_INT(m.type, TF_MSG_BUILD_START);
        TF_CHECK_INT(m.u.build_start.build_id, id);
        TF_CHECK_INT(m.u.build_start.number, number);
        tf_msg_clear(&m);
    } else {
        TF_CHECK_INT(trc, TF_ENOENT);
        ok = erc == 0 && trc == TF_ENOENT && tpl == NULL;
    }
    TF_CHECK(ok);
    free(enc);
    free(tpl);
    tf_request_free(r);
    return ok;
}

/* Prints the two ways' rows of builder name when they differ. */
static void rows_dump(const char *name, const tf_build_rows_t *t,
                      const tf_build_rows_t *j)
{
    fprintf(stderr, "builder %s: template properties\n%.2000s\njansson\n"
            "%.2000s\n", name, t->properties ? t->properties : "",
            j->properties ? j->properties : "");
    for (size_t i = 0; i < t->nsteps || i < j->nsteps; i++)
        fprintf(stderr, "step %zu: template %s %s %d; jansson %s %s %d\n", i,
                i < t->nsteps ? t->steps[i].name : "-",
                i < t->nsteps ? t->steps[i].command_json : "-",
                i < t->nsteps ? t->steps[i].flags : -1,
                i < j->nsteps ? j->steps[i].name : "-",
                i < j->nsteps ? j->steps[i].command_json : "-",
                i < j->nsteps ? j->steps[i].flags : -1);
}

/* Computes build (id, number) on slave's rows both ways; the template
 * way must give jansson's bytes (want_tpl) or TF_ENOENT (!want_tpl).
 * Returns whether it matched what was expected. */
static bool same_rows_both_ways(tf_mbuilder_t *mb, const tf_reqspec_t *spec,
                                uint64_t id, uint64_t number,
                                const char *slave, bool want_tpl)
{
    tf_request_t *r = tf_request_make(spec, 1, 0);
    tf_build_rows_t j = {0}, t = {0};
    bool ok = false;

    TF_CHECK(r != NULL);
    if (!r)
        return false;
    int jrc = tf_build_render_rows(mb, r, id, number, slave, false, &j);
    int trc = tf_build_render_rows(mb, r, id, number, slave, true, &t);
    TF_CHECK_INT(jrc, 0);
    if (want_tpl) {
        TF_CHECK_INT(trc, 0);
        ok = jrc == 0 && trc == 0 && t.nsteps == j.nsteps &&
             strcmp(t.properties, j.properties) == 0;
        for (size_t i = 0; ok && i < t.nsteps; i++)
            ok = strcmp(t.steps[i].name, j.steps[i].name) == 0 &&
                 strcmp(t.steps[i].command_json, j.steps[i].command_json) ==
                     0 &&
                 t.steps[i].flags == j.steps[i].flags;
        if (!ok)
            rows_dump(mb->name, &t, &j);
    } else {
        TF_CHECK_INT(trc, TF_ENOENT);
        ok = jrc == 0 && trc == TF_ENOENT && t.text == NULL;
    }
    TF_CHECK(ok);
    tf_build_rows_clear(&t);
    tf_build_rows_clear(&j);
    tf_request_free(r);
    return ok;
}

TF_TEST(template_equals_encoder_for_awkward_builders)
{
    tf_config_t *c = load();
    if (!c)
        return;
    static const char *const names[] = {"plain", "awkward", "repo", "long"};
    tf_reqspec_t plain = {.builder = "x"};
    tf_reqspec_t owned = {.builder = "x", .owner = "alice@example.com",
                          .reason = "forced \"by\" \\ me \u00e9"};
    tf_reqspec_t rev = {.builder = "x", .owner = "bob",
                        .revision = "0123456789abcdef0123456789abcdef01234567"};
    tf_reqspec_t ref = {.builder = "x", .revision = "release/1.2-rc3"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        tf_mbuilder_t *mb = mbuilder(c, names[i]);
        if (!mb)
            continue;
        /* Each shape twice: made, then reused with other values. */
        same_both_ways(mb, &plain, 1, 0, "s1", true);
        same_both_ways(mb, &plain, 9007199254740991ULL, 123456, "zz-9.x",
                       true);
        same_both_ways(mb, &owned, 42, 7, "s1", true);
        same_both_ways(mb, &owned, 43, 8, "slave_2", true);
        same_both_ways(mb, &rev, 44, 9, "s1", true);
        same_both_ways(mb, &ref, 45, 10, "s1", true);
        same_both_ways(mb, &ref, 46, 11, "s2", true);
        mbuilder_free(mb);
    }
    tf_config_free(c);
}

/* The rows of a template-shaped build (properties text, each step's name,
 * command and flags) are jansson's bytes, for every shape and several
 * builds of each, whichever way the template was made first. */
TF_TEST(rows_from_the_template_equal_jansson)
{
    tf_config_t *c = load();
    if (!c)
        return;
    static const char *const names[] = {"plain", "awkward", "repo", "long",
                                        "steps", "interpenv"};
    const tf_reqspec_t specs[] = {
        {.builder = "x"},
        {.builder = "x", .owner = "alice@example.com",
         .reason = "forced \"by\" \\ me \u00e9"},
        {.builder = "x", .owner = "bob",
         .revision = "0123456789abcdef0123456789abcdef01234567"},
        {.builder = "x", .revision = "release/1.2-rc3"},
    };
    static const char *const slaves[] = {"s1", "zz-9.x", "slave_2", "s"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        tf_mbuilder_t *mb = mbuilder(c, names[i]);
        bool interpenv = strcmp(names[i], "interpenv") == 0;
        for (size_t k = 0; mb && k < sizeof(specs) / sizeof(specs[0]); k++) {
            /* interpenv's env holds the revision: with one, its start
             * (and so its rows) takes the encoder. */
            bool want = !(interpenv && specs[k].revision);
            /* Rows first (the rows make the templates), then the start,
             * then rows of other builds of the shape. */
            same_rows_both_ways(mb, &specs[k], 100 + k, k, slaves[k], want);
            same_both_ways(mb, &specs[k], 200 + k, 10 + k, slaves[k], want);
            same_rows_both_ways(mb, &specs[k], 300 + k, 12345678901ULL + k,
                                slaves[(k + 1) % 4], want);
            same_rows_both_ways(mb, &specs[k], 18446744073709551615ULL,
                                18446744073709551615ULL, "a", want);
        }
        mbuilder_free(mb);
    }
    /* What jansson writes, so that both ways cannot be wrong alike. */
    tf_mbuilder_t *mb = mbuilder(c, "steps");
    tf_request_t *r = tf_request_make(&specs[2], 1, 0);
    tf_build_rows_t t = {0};
    if (mb && r &&
        tf_build_render_rows(mb, r, 5, 6, "s1", true, &t) == 0) {
        TF_CHECK_STR(t.properties,
                     "{\"branch\":\"release/2.x\",\"builder\":\"steps\","
                     "\"buildnumber\":\"6\",\"cc\":\"gcc -O2\","
                     "\"owner\":\"bob\",\"q\":\"it's \\\"q\\\"\","
                     "\"repository\":\"https://example.com/s.git\","
                     "\"revision\":\"0123456789abcdef0123456789abcdef01234567\","
                     "\"slave\":\"s1\",\"target\":\"all\",\"tests\":\"\"}");
        TF_CHECK_INT(t.nsteps, 5);
        if (t.nsteps == 5) {
            TF_CHECK_STR(t.steps[0].name, "source");
            TF_CHECK_STR(t.steps[0].command_json,
                         "[\"git\",\"checkout\","
                         "\"0123456789abcdef0123456789abcdef01234567\"]");
            /* haltOnFailure, and the defaults flunkOnFailure and
             * warnOnWarnings */
            TF_CHECK_INT(t.steps[0].flags, 1 | 2 | 16);
            TF_CHECK_STR(t.steps[1].name, "configure");
            TF_CHECK_STR(t.steps[1].command_json,
                         "[\"/bin/sh\",\"-c\",\"./configure CC='gcc -O2' "
                         "--prefix=/opt/'steps'\"]");
            TF_CHECK_INT(t.steps[1].flags & 1, 1);
            TF_CHECK_STR(t.steps[2].command_json,
                         "[\"make\",\"all\",\"Q=it's \\\"q\\\"\",\"\"]");
            TF_CHECK_INT(t.steps[2].flags & (4 | 8), 4 | 8);
            TF_CHECK_STR(t.steps[4].name, "cleanup");
            TF_CHECK_INT(t.steps[4].flags & 32, 32);
        }
    }
    tf_build_rows_clear(&t);
    /* Without a revision the source step checks out origin/<branch>. */
    tf_request_free(r);
    r = tf_request_make(&specs[0], 1, 0);
    if (mb && r &&
        tf_build_render_rows(mb, r, 7, 8, "s1", true, &t) == 0 &&
        t.nsteps == 5)
        TF_CHECK_STR(t.steps[0].command_json,
                     "[\"git\",\"checkout\",\"origin/release/2.x\"]");
    tf_build_rows_clear(&t);
    tf_request_free(r);
    mbuilder_free(mb);
    tf_config_free(c);
}

/* Requests of any other shape compute their rows (TF_ENOENT from the
 * template way), and a builder whose recipe changes gets new rows. */
TF_TEST(rows_of_other_shapes_and_changed_builders)
{
    tf_config_t *c = load();
    if (!c)
        return;
    tf_mbuilder_t *mb = mbuilder(c, "steps");
    static const uint64_t changes[] = {3, 4};
    const tf_reqspec_t specs[] = {
        {.builder = "x", .properties = "{\"p\": \"v\"}"},
        {.builder = "x", .tests = "[\"t1\", \"t 2\"]"},
        {.builder = "x", .job_id = 5},
        {.builder = "x",
         .patch_sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         .patch_size = 1234},
        {.builder = "x", .scheduler = "nightly", .changes = changes,
         .nchanges = 2},
        {.builder = "x", .owner = "Zo\u00eb"},
    };
    for (size_t i = 0; mb && i < sizeof(specs) / sizeof(specs[0]); i++)
        same_rows_both_ways(mb, &specs[i], 50 + i, 3, "s1", false);
    tf_reqspec_t plain = {.builder = "x"};
    if (mb)
        same_rows_both_ways(mb, &plain, 60, 3, "a\"b", false);
    mbuilder_free(mb);
    mb = mbuilder(c, "interp");
    if (mb)
        same_rows_both_ways(mb, &plain, 61, 3, "s1", false);
    mbuilder_free(mb);

    static const char a[] = "{\"name\": \"t\", \"slaves\": [], \"builders\": "
                            "[{\"name\": \"b\", \"steps\": [{\"name\": \"s\", "
                            "\"command\": [\"true\"]}]}]}";
    static const char b[] = "{\"name\": \"t\", \"slaves\": [], \"builders\": "
                            "[{\"name\": \"b\", \"steps\": [{\"name\": \"s\", "
                            "\"command\": [\"false\"], \"alwaysRun\": true}, "
                            "{\"name\": \"t\", \"command\": \"true\"}]}]}";
    tf_config_t *ca = NULL, *cb = NULL;
    TF_CHECK_INT(tf_config_load_text("/a.json", a, strlen(a), &ca, NULL), 0);
    TF_CHECK_INT(tf_config_load_text("/b.json", b, strlen(b), &cb, NULL), 0);
    mb = ca && cb ? mbuilder(ca, "b") : NULL;
    if (mb) {
        same_rows_both_ways(mb, &plain, 1, 1, "s1", true);
        mb->cfg = tf_config_builder(cb, "b");
        same_rows_both_ways(mb, &plain, 2, 2, "s1", true);
        tf_request_t *r = tf_request_make(&plain, 1, 0);
        tf_build_rows_t t = {0};
        TF_CHECK_INT(tf_build_render_rows(mb, r, 3, 3, "s1", true, &t), 0);
        TF_CHECK_INT(t.nsteps, 2);
        if (t.nsteps == 2) {
            TF_CHECK_STR(t.steps[0].command_json, "[\"false\"]");
            TF_CHECK_INT(t.steps[0].flags & 32, 32);
            TF_CHECK_STR(t.steps[1].name, "t");
        }
        tf_build_rows_clear(&t);
        tf_request_free(r);
    }
    mbuilder_free(mb);
    tf_config_free(ca);
    tf_config_free(cb);
    tf_config_free(c);
}

TF_TEST(requests_the_template_cannot_serve_take_the_encoder)
{
    tf_config_t *c = load();
    if (!c)
        return;
    tf_mbuilder_t *mb = mbuilder(c, "repo");
    static const uint64_t changes[] = {3, 4};
    const tf_reqspec_t specs[] = {
        {.builder = "x", .properties = "{\"p\": \"v \\\"q\\\" \\u00e9\"}"},
        {.builder = "x", .tests = "[\"t1\", \"t 2\"]"},
        {.builder = "x", .job_id = 5},
        {.builder = "x",
         .patch_sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         .patch_size = 1234},
        {.builder = "x", .scheduler = "nightly", .changes = changes,
         .nchanges = 2},
        /* Values the encoder escapes or the template would not check. */
        {.builder = "x", .owner = "Zo\u00eb"},
        {.builder = "x", .owner = "a\"b"},
        {.builder = "x", .owner = "a\\b"},
    };
    for (size_t i = 0; mb && i < sizeof(specs) / sizeof(specs[0]); i++)
        same_both_ways(mb, &specs[i], 50 + i, 3, "s1", false);
    /* A revision with a quote: only in the properties without a
     * repository (the encoder escapes it there); with one, the protocol
     * refuses it either way and the template does not hide that. */
    tf_reqspec_t quoted = {.builder = "x", .revision = "tag\"q"};
    tf_mbuilder_t *plain_mb = mbuilder(c, "plain");
    if (plain_mb)
        same_both_ways(plain_mb, &quoted, 58, 3, "s1", false);
    mbuilder_free(plain_mb);
    tf_request_t *r = tf_request_make(&quoted, 1, 0);
    char *text = NULL;
    size_t len = 0;
    if (mb && r) {
        TF_CHECK_INT(tf_build_render_start(mb, r, 59, 3, "s1", true, &text,
                                           &len), TF_ENOENT);
        TF_CHECK_INT(tf_build_render_start(mb, r, 59, 3, "s1", false, &text,
                                           &len), TF_EINVAL);
        TF_CHECK(text == NULL);
    }
    free(text);
    tf_request_free(r);
    /* A slave name the encoder would escape (never a configured one). */
    tf_reqspec_t plain = {.builder = "x"};
    if (mb)
        same_both_ways(mb, &plain, 60, 3, "a\"b", false);
    mbuilder_free(mb);
    tf_config_free(c);
}

/* A property interpolated into a command or an environment repeats the
 * sentinel: that shape is unusable and every build of it takes the
 * encoder, with the same result as before. */
TF_TEST(interpolated_values_make_the_shape_take_the_encoder)
{
    tf_config_t *c = load();
    if (!c)
        return;
    tf_reqspec_t plain = {.builder = "x"};
    tf_reqspec_t rev = {.builder = "x", .revision = "v1.0"};
    tf_mbuilder_t *mb = mbuilder(c, "interp");
    if (mb) {
        same_both_ways(mb, &plain, 70, 1, "s1", false);
        same_both_ways(mb, &plain, 71, 2, "s1", false);
    }
    mbuilder_free(mb);
    mb = mbuilder(c, "interpenv");
    if (mb) {
        /* Without a revision the env holds "": nothing repeats. */
        same_both_ways(mb, &plain, 72, 1, "s1", true);
        same_both_ways(mb, &rev, 73, 2, "s1", false);
    }
    mbuilder_free(mb);
    tf_config_free(c);
}

/* A reload that changes what a builder runs changes its recipe: the
 * template is made again, not reused. */
TF_TEST(changed_builder_gets_a_new_template)
{
    static const char a[] = "{\"name\": \"t\", \"slaves\": [], \"builders\": "
                            "[{\"name\": \"b\", \"steps\": [{\"name\": \"s\", "
                            "\"command\": [\"true\"]}]}]}";
    static const char b[] = "{\"name\": \"t\", \"slaves\": [], \"builders\": "
                            "[{\"name\": \"b\", \"steps\": [{\"name\": \"s\", "
                            "\"command\": [\"false\"]}]}]}";
    tf_config_t *ca = NULL, *cb = NULL;
    TF_CHECK_INT(tf_config_load_text("/a.json", a, strlen(a), &ca, NULL), 0);
    TF_CHECK_INT(tf_config_load_text("/b.json", b, strlen(b), &cb, NULL), 0);
    if (!ca || !cb)
        goto out;
    tf_mbuilder_t *mb = mbuilder(ca, "b");
    tf_reqspec_t plain = {.builder = "b"};
    if (!mb)
        goto out;
    same_both_ways(mb, &plain, 1, 1, "s1", true);
    mb->cfg = tf_config_builder(cb, "b");
    same_both_ways(mb, &plain, 2, 2, "s1", true);
    tf_request_t *r = tf_request_make(&plain, 1, 0);
    char *text = NULL;
    size_t len = 0;
    TF_CHECK_INT(tf_build_render_start(mb, r, 3, 3, "s1", true, &text, &len),
                 0);
    TF_CHECK(text && strstr(text, "\"false\"") && !strstr(text, "\"true\""));
    free(text);
    tf_request_free(r);
    mbuilder_free(mb);
out:
    tf_config_free(ca);
    tf_config_free(cb);
}

TF_TEST(tpl_counts_overlaps_and_cap)
{
    static const char *const sent[] = {"AA", "BB"};
    tf_tpl_t t;
    char *out = NULL;
    size_t len = 0;
    const unsigned two_one[] = {2, 1};
    const char *const vals[] = {"x", "\"long\""};

    TF_CHECK_INT(tf_tpl_make(&t, "{AA,BB,AA}", 10, sent, two_one, 2), 0);
    TF_CHECK_INT(tf_tpl_render(&t, vals, 100, &out, &len), 0);
    TF_CHECK_STR(out, "{x,\"long\",x}");
    TF_CHECK_INT(len, 12);
    free(out);
    /* Exactly at the cap passes, one byte over is refused. */
    TF_CHECK_INT(tf_tpl_render(&t, vals, 12, &out, &len), 0);
    free(out);
    TF_CHECK_INT(tf_tpl_render(&t, vals, 11, &out, &len), TF_E2BIG);
    TF_CHECK(out == NULL);
    tf_tpl_clear(&t);
    /* A sentinel more or less often than said. */
    const unsigned one_one[] = {1, 1};
    TF_CHECK_INT(tf_tpl_make(&t, "{AA,BB,AA}", 10, sent, one_one, 2),
                 TF_EINVAL);
    TF_CHECK(t.text == NULL);
    const unsigned three_one[] = {3, 1};
    TF_CHECK_INT(tf_tpl_make(&t, "{AA,BB,AA}", 10, sent, three_one, 2),
                 TF_EINVAL);
    /* Overlapping sentinels ("AAB" holds AA and AB) are ambiguous. */
    static const char *const ovl[] = {"AA", "AB"};
    TF_CHECK_INT(tf_tpl_make(&t, "xAABx", 5, ovl, one_one, 2), TF_EINVAL);
    /* No holes: the text as it is. */
    const unsigned none[] = {0, 0};
    TF_CHECK_INT(tf_tpl_make(&t, "plain", 5, sent, none, 2), 0);
    TF_CHECK_INT(tf_tpl_render(&t, vals, 5, &out, &len), 0);
    TF_CHECK_STR(out, "plain");
    free(out);
    tf_tpl_clear(&t);
    tf_tpl_clear(NULL);
}

TF_TEST_MAIN()
