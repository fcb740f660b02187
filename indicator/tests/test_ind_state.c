/*
 * test_ind_state.c - tf-indicator's state logic (indicator/state.c): the
 * snapshot and live-feed rules, levels and the worst of all masters, which
 * changes notify, the menu's items and the title. The JSON fed in has the
 * shapes docs/api.md documents for /api/v1/summary, /api/v1/builders and
 * the live feed's build events.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state.h"
#include "tf_err.h"
#include "tf_test.h"

#define BASE "http://127.0.0.1:8010"

static const char SUMMARY[] = "{\"name\": \"Main farm\", \"verdict\": \"ok\"}";

/* A builder element of GET /api/v1/builders. result NULL: no last build;
 * running_id 0: nothing running. */
static void builder_json(char *out, size_t n, const char *name,
                         const char *result, int number, int running_id,
                         int running_number)
{
    char last[200] = "null", cur[200] = "[]";
    if (result)
        snprintf(last, sizeof(last),
                 "{\"id\": %d, \"number\": %d, \"result\": \"%s\", "
                 "\"finished_ms\": 1, \"url\": \"x\"}",
                 number * 10, number, result);
    if (running_id)
        snprintf(cur, sizeof(cur),
                 "[{\"id\": %d, \"builder\": \"%s\", \"number\": %d}]",
                 running_id, name, running_number);
    snprintf(out, n,
             "{\"name\": \"%s\", \"state\": \"idle\", \"active\": true, "
             "\"last_complete\": %s, \"current_builds\": %s}",
             name, last, cur);
}

static int sync_master(tf_ind_master_t *m, const char *builders)
{
    char err[300] = "";
    tf_ind_master_link_up(m);
    int rc = tf_ind_master_apply_snapshot(m, SUMMARY, strlen(SUMMARY),
                                          builders, strlen(builders), err,
                                          sizeof(err));
    if (rc < 0)
        fprintf(stderr, "snapshot: %s\n", err);
    return rc;
}

static int event(tf_ind_master_t *m, const char *what, const char *builder,
                 int id, int number, const char *result)
{
    char buf[512];
    snprintf(buf, sizeof(buf),
             "{\"type\": \"build\", \"event\": \"%s\", \"build\": {\"id\": "
             "%d, \"builder\": \"%s\", \"number\": %d, \"slave\": \"s1\", "
             "\"state\": \"x\", \"result\": %s%s%s}}",
             what, id, builder, number, result ? "\"" : "",
             result ? result : "null", result ? "\"" : "");
    return tf_ind_master_apply_event(m, buf, strlen(buf));
}

static const tf_ind_builder_t *has(const tf_ind_master_t *m, const char *n)
{
    for (size_t i = 0; i < m->nbuilders; i++)
        if (strcmp(m->builders[i].name, n) == 0)
            return &m->builders[i];
    return NULL;
}

/* The builder n, which must exist (the test stops here otherwise). */
static const tf_ind_builder_t *find(const tf_ind_master_t *m, const char *n)
{
    const tf_ind_builder_t *b = has(m, n);
    if (!b) {
        fprintf(stderr, "builder %s missing\n", n);
        abort();
    }
    return b;
}

/* A master synced with linux (SUCCESS #3) and mac (FAILURE #7). */
static void two_builders(tf_ind_master_t *m)
{
    char a[512], b[512], all[1200];
    tf_ind_master_init(m, BASE, NULL);
    builder_json(a, sizeof(a), "linux", "SUCCESS", 3, 0, 0);
    builder_json(b, sizeof(b), "mac", "FAILURE", 7, 0, 0);
    snprintf(all, sizeof(all), "[%s, %s]", a, b);
    TF_CHECK_INT(sync_master(m, all), 0);
}

TF_TEST(levels_are_ordered_worst_last)
{
    TF_CHECK(TF_IND_PASSING < TF_IND_BUILDING);
    TF_CHECK(TF_IND_BUILDING < TF_IND_UNKNOWN);
    TF_CHECK(TF_IND_UNKNOWN < TF_IND_FAILING);
    TF_CHECK_STR(tf_ind_level_icon(TF_IND_FAILING), "testfarm-failing");
    TF_CHECK_STR(tf_ind_level_icon(TF_IND_PASSING), "testfarm-passing");
    TF_CHECK_STR(tf_ind_level_icon(TF_IND_BUILDING), "testfarm-building");
    TF_CHECK_STR(tf_ind_level_icon(TF_IND_UNKNOWN), "testfarm-unknown");
    TF_CHECK_STR(tf_ind_level_name(TF_IND_FAILING), "failing");
}

TF_TEST(new_master_is_unknown_until_synced)
{
    tf_ind_master_t m;
    tf_ind_master_init(&m, BASE, NULL);
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_UNKNOWN);
    tf_ind_master_link_up(&m);
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_UNKNOWN);
    TF_CHECK_INT(sync_master(&m, "[]"), 0);
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_PASSING);
    TF_CHECK_INT(m.link, TF_IND_LINK_LIVE);
    TF_CHECK_STR(tf_ind_master_label(&m), "Main farm");
    tf_ind_master_free(&m);
}

TF_TEST(snapshot_reads_builders)
{
    tf_ind_master_t m;
    char a[512], b[512], c[512], all[2000];
    tf_ind_master_init(&m, BASE, NULL);
    builder_json(a, sizeof(a), "linux", "SUCCESS", 3, 41, 4);
    builder_json(b, sizeof(b), "mac", "EXCEPTION", 7, 0, 0);
    builder_json(c, sizeof(c), "win", NULL, 0, 0, 0);
    snprintf(all, sizeof(all),
             "[%s, %s, %s, {\"name\": \"old\", \"active\": false, "
             "\"last_complete\": {\"id\": 1, \"number\": 1, \"result\": "
             "\"FAILURE\"}}]",
             a, b, c);
    TF_CHECK_INT(sync_master(&m, all), 0);
    TF_CHECK_INT(m.nbuilders, 3); /* "old" was removed from the config */
    const tf_ind_builder_t *l = find(&m, "linux");
    TF_CHECK(l->nrunning == 1 && l->running[0] == 41);
    TF_CHECK(l->last_number == 3);
    TF_CHECK(tf_ind_builder_failing(find(&m, "mac")));
    TF_CHECK(find(&m, "win")->last_result[0] == '\0');
    TF_CHECK(has(&m, "old") == NULL);
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_FAILING);
    tf_ind_master_free(&m);
}

TF_TEST(malformed_snapshots_change_nothing)
{
    tf_ind_master_t m;
    char err[300];
    two_builders(&m);
    const char *bad[] = {
        "not json",
        "{\"builders\": []}",
        "[{\"name\": \"../etc\"}]",
        "[{\"nom\": \"x\"}]",
        "[{\"name\": \"x\", \"last_complete\": {\"id\": 1}}]",
        "[{\"name\": \"x\", \"last_complete\": {\"id\": 1, \"number\": 2, "
        "\"result\": \"GREAT\"}}]",
        "[{\"name\": \"x\", \"last_complete\": 5}]",
        "[{\"name\": \"x\", \"current_builds\": {}}]",
        "[{\"name\": \"x\", \"current_builds\": [{\"id\": -1}]}]",
        NULL,
    };
    for (size_t i = 0; bad[i]; i++) {
        tf_ind_master_link_up(&m);
        err[0] = '\0';
        TF_CHECK_INT(tf_ind_master_apply_snapshot(&m, SUMMARY, strlen(SUMMARY),
                                                  bad[i], strlen(bad[i]), err,
                                                  sizeof(err)),
                     TF_EINVAL);
        TF_CHECK(err[0] != '\0');
        TF_CHECK_INT(m.nbuilders, 2);
        TF_CHECK_INT(m.link, TF_IND_LINK_SYNCING);
    }
    err[0] = '\0';
    TF_CHECK_INT(tf_ind_master_apply_snapshot(&m, "[1]", 3, "[]", 2, err,
                                              sizeof(err)),
                 TF_EINVAL);
    TF_CHECK(strstr(err, "summary") != NULL);
    tf_ind_master_free(&m);
}

TF_TEST(events_move_builders)
{
    tf_ind_master_t m;
    tf_ind_note_t notes[8];
    two_builders(&m);
    TF_CHECK_INT(tf_ind_master_notes(&m, notes, 8), 0); /* first sync */
    /* mac passes: green everywhere, and the user is told. */
    TF_CHECK_INT(event(&m, "created", "mac", 80, 8, NULL), 0);
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_FAILING);
    TF_CHECK_INT(event(&m, "started", "mac", 80, 8, NULL), 0);
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_FAILING);
    TF_CHECK_INT(event(&m, "finished", "mac", 80, 8, "SUCCESS"), 0);
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_PASSING);
    TF_CHECK_INT(tf_ind_master_notes(&m, notes, 8), 1);
    TF_CHECK(!notes[0].failing);
    TF_CHECK_STR(notes[0].summary, "mac passes again");
    TF_CHECK_STR(notes[0].body, "Main farm: build #8 SUCCESS");
    TF_CHECK_STR(notes[0].url, BASE "/#/builders/mac");
    TF_CHECK_INT(tf_ind_master_notes(&m, notes, 8), 0); /* told once */
    /* linux builds: amber; then fails: red and told. */
    TF_CHECK_INT(event(&m, "started", "linux", 40, 4, NULL), 0);
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_BUILDING);
    TF_CHECK_INT(tf_ind_master_notes(&m, notes, 8), 0);
    TF_CHECK_INT(event(&m, "finished", "linux", 40, 4, "FAILURE"), 0);
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_FAILING);
    TF_CHECK_INT(tf_ind_master_notes(&m, notes, 8), 1);
    TF_CHECK(notes[0].failing);
    TF_CHECK_STR(notes[0].summary, "linux is failing");
    TF_CHECK_STR(notes[0].body, "Main farm: build #4 FAILURE");
    /* A new builder (config reload) appears through its first event. */
    TF_CHECK_INT(event(&m, "started", "arm", 5, 1, NULL), 0);
    TF_CHECK(find(&m, "arm")->nrunning == 1);
    tf_ind_master_free(&m);
}

/* A build event with its kind, as masters since issue 12 send it. */
static int kind_event(tf_ind_master_t *m, const char *what, const char *kind,
                      const char *builder, int id, int number,
                      const char *result)
{
    char buf[512];
    snprintf(buf, sizeof(buf),
             "{\"type\": \"build\", \"event\": \"%s\", \"build\": {\"id\": "
             "%d, \"builder\": \"%s\", \"number\": %d, \"kind\": \"%s\", "
             "\"state\": \"x\", \"result\": %s%s%s}}",
             what, id, builder, number, kind, result ? "\"" : "",
             result ? result : "null", result ? "\"" : "");
    return tf_ind_master_apply_event(m, buf, strlen(buf));
}

TF_TEST(try_builds_never_turn_a_builder_red)
{
    tf_ind_master_t m;
    tf_ind_note_t notes[8];
    two_builders(&m);
    TF_CHECK_INT(event(&m, "finished", "mac", 80, 8, "SUCCESS"), 0);
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_PASSING);
    (void)tf_ind_master_notes(&m, notes, 8);
    /* A try build runs and fails: the tray stays green, nobody is told. */
    TF_CHECK_INT(kind_event(&m, "started", "try", "linux", 90, 9, NULL), 0);
    TF_CHECK_INT(find(&m, "linux")->nrunning, 0);
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_PASSING);
    TF_CHECK_INT(kind_event(&m, "finished", "try", "linux", 90, 9,
                            "FAILURE"), 0);
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_PASSING);
    TF_CHECK_STR(find(&m, "linux")->last_result, "SUCCESS");
    TF_CHECK_INT(tf_ind_master_notes(&m, notes, 8), 0);
    /* A continuous build numbered below the try build still counts. */
    TF_CHECK_INT(kind_event(&m, "finished", "ci", "linux", 85, 8,
                            "FAILURE"), 0);
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_FAILING);
    TF_CHECK_INT(tf_ind_master_notes(&m, notes, 8), 1);
    TF_CHECK_STR(notes[0].summary, "linux is failing");
    tf_ind_master_free(&m);
}

TF_TEST(retry_cancel_warnings_and_old_builds)
{
    tf_ind_master_t m;
    two_builders(&m);
    /* RETRY is not a result of the builder (the request runs again). */
    TF_CHECK_INT(event(&m, "started", "linux", 40, 4, NULL), 0);
    TF_CHECK_INT(event(&m, "finished", "linux", 40, 4, "RETRY"), 0);
    TF_CHECK_STR(find(&m, "linux")->last_result, "SUCCESS");
    TF_CHECK_INT(find(&m, "linux")->nrunning, 0);
    /* A late event about an older build does not override a newer one. */
    TF_CHECK_INT(event(&m, "finished", "linux", 20, 2, "FAILURE"), 0);
    TF_CHECK_STR(find(&m, "linux")->last_result, "SUCCESS");
    /* WARNINGS and CANCELLED are not red (as the summary's verdict). */
    TF_CHECK_INT(event(&m, "finished", "linux", 50, 5, "WARNINGS"), 0);
    TF_CHECK_INT(event(&m, "finished", "mac", 90, 9, "CANCELLED"), 0);
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_PASSING);
    /* An unknown result is ignored. */
    TF_CHECK_INT(event(&m, "finished", "linux", 60, 6, "PURPLE"), 0);
    TF_CHECK_STR(find(&m, "linux")->last_result, "WARNINGS");
    /* A started event for a build already known finished adds nothing. */
    TF_CHECK_INT(event(&m, "started", "linux", 50, 5, NULL), 0);
    TF_CHECK_INT(find(&m, "linux")->nrunning, 0);
    tf_ind_master_free(&m);
}

TF_TEST(malformed_events_are_refused)
{
    tf_ind_master_t m;
    two_builders(&m);
    const char *bad[] = {
        "nope",
        "[]",
        "{\"event\": \"started\"}",
        "{\"type\": \"build\", \"event\": \"started\"}",
        "{\"type\": \"build\", \"event\": \"started\", \"build\": {\"id\": 1, "
        "\"builder\": \"a b\", \"number\": 1}}",
        "{\"type\": \"build\", \"event\": \"started\", \"build\": {\"id\": "
        "\"1\", \"builder\": \"x\", \"number\": 1}}",
        "{\"type\": \"build\", \"event\": \"started\", \"build\": {\"id\": 0, "
        "\"builder\": \"x\", \"number\": 1}}",
        NULL,
    };
    for (size_t i = 0; bad[i]; i++)
        TF_CHECK_INT(tf_ind_master_apply_event(&m, bad[i], strlen(bad[i])),
                     TF_EINVAL);
    TF_CHECK_INT(m.nbuilders, 2);
    /* Other topics' events and answers are not errors, and change nothing. */
    const char *other = "{\"type\": \"slave\", \"event\": \"connected\"}";
    TF_CHECK_INT(tf_ind_master_apply_event(&m, other, strlen(other)), 0);
    tf_ind_master_free(&m);
}

TF_TEST(events_while_syncing_are_replayed_over_the_snapshot)
{
    tf_ind_master_t m;
    char a[512], b[512], all[1200];
    tf_ind_note_t notes[8];
    two_builders(&m);
    tf_ind_master_link_down(&m, "connection refused");
    TF_CHECK_INT(tf_ind_master_level(&m), TF_IND_UNKNOWN);
    /* Events of a link that is down are dropped. */
    TF_CHECK_INT(event(&m, "finished", "linux", 90, 9, "FAILURE"), 0);
    TF_CHECK_STR(find(&m, "linux")->last_result, "SUCCESS");

    tf_ind_master_link_up(&m);
    /* Arrive before the snapshot: one it already holds (#4 on linux), one
     * it misses (#8 on mac finishing), one build starting after it. */
    TF_CHECK_INT(event(&m, "finished", "linux", 40, 4, "FAILURE"), 0);
    TF_CHECK_INT(event(&m, "finished", "mac", 80, 8, "SUCCESS"), 0);
    TF_CHECK_INT(event(&m, "started", "linux", 50, 5, NULL), 0);
    TF_CHECK_INT(m.npending, 3);
    TF_CHECK_INT(tf_ind_master_notes(&m, notes, 8), 0); /* not LIVE yet */
    builder_json(a, sizeof(a), "linux", "FAILURE", 4, 0, 0);
    builder_json(b, sizeof(b), "mac", "FAILURE", 7, 80, 8);
    snprintf(all, sizeof(all), "[%s, %s]", a, b);
    char err[200];
    TF_CHECK_INT(tf_ind_master_apply_snapshot(&m, SUMMARY, strlen(SUMMARY),
                                              all, strlen(all), err,
                                              sizeof(err)),
                 0);
    TF_CHECK_INT(m.npending, 0);
    TF_CHECK_STR(find(&m, "linux")->last_result, "FAILURE");
    TF_CHECK_INT(find(&m, "linux")->nrunning, 1);
    TF_CHECK_STR(find(&m, "mac")->last_result, "SUCCESS");
    TF_CHECK_INT(find(&m, "mac")->nrunning, 0);
    /* What changed while we were away is news: linux red, mac green. */
    TF_CHECK_INT(tf_ind_master_notes(&m, notes, 8), 2);
    TF_CHECK(notes[0].failing && strcmp(notes[0].summary, "linux is failing")
                                     == 0);
    TF_CHECK(!notes[1].failing &&
             strcmp(notes[1].summary, "mac passes again") == 0);
    tf_ind_master_free(&m);
}

TF_TEST(too_many_events_while_syncing_ask_for_a_resync)
{
    tf_ind_master_t m;
    int rc = 0;
    two_builders(&m);
    tf_ind_master_link_up(&m);
    for (int i = 0; i < TF_IND_MAX_PENDING + 5 && rc == 0; i++)
        rc = event(&m, "started", "linux", 100 + i, 10 + i, NULL);
    TF_CHECK_INT(rc, TF_EFULL);
    TF_CHECK_INT(m.npending, TF_IND_MAX_PENDING);
    tf_ind_master_link_down(&m, "resync");
    TF_CHECK_INT(m.npending, 0);
    tf_ind_master_free(&m);
}

TF_TEST(running_builds_are_capped_per_builder)
{
    tf_ind_master_t m;
    two_builders(&m);
    for (int i = 0; i < TF_IND_MAX_RUNNING + 10; i++)
        TF_CHECK_INT(event(&m, "started", "linux", 100 + i, 10 + i, NULL), 0);
    TF_CHECK_INT(find(&m, "linux")->nrunning, TF_IND_MAX_RUNNING);
    tf_ind_master_free(&m);
}

TF_TEST(builders_are_capped_per_master)
{
    tf_ind_master_t m;
    tf_ind_master_init(&m, BASE, NULL);
    size_t cap = (TF_IND_MAX_BUILDERS + 5) * 60 + 10;
    char *all = malloc(cap);
    size_t len = 0;
    len += (size_t)snprintf(all + len, cap - len, "[");
    for (int i = 0; i < TF_IND_MAX_BUILDERS + 5; i++)
        len += (size_t)snprintf(all + len, cap - len, "%s{\"name\": \"b%04d\"}",
                                i ? "," : "", i);
    snprintf(all + len, cap - len, "]");
    TF_CHECK_INT(sync_master(&m, all), 0);
    TF_CHECK_INT(m.nbuilders, TF_IND_MAX_BUILDERS);
    free(all);
    tf_ind_master_free(&m);
}

TF_TEST(overall_is_the_worst_master)
{
    tf_ind_master_t ms[3];
    two_builders(&ms[0]); /* failing */
    tf_ind_master_init(&ms[1], "http://b:1", "B");
    TF_CHECK_INT(sync_master(&ms[1], "[]"), 0); /* passing */
    tf_ind_master_init(&ms[2], "http://c:1", "C"); /* unknown */
    TF_CHECK_INT(tf_ind_overall(&ms[1], 1), TF_IND_PASSING);
    TF_CHECK_INT(tf_ind_overall(&ms[1], 2), TF_IND_UNKNOWN);
    TF_CHECK_INT(tf_ind_overall(ms, 3), TF_IND_FAILING);
    TF_CHECK_INT(event(&ms[1], "started", "x", 1, 1, NULL), 0);
    TF_CHECK_INT(tf_ind_overall(&ms[1], 1), TF_IND_BUILDING);
    TF_CHECK_INT(tf_ind_overall(NULL, 0), TF_IND_UNKNOWN);
    /* A master that goes away turns unknown, whatever it was. */
    tf_ind_master_link_down(&ms[0], "connection refused");
    TF_CHECK_INT(tf_ind_master_level(&ms[0]), TF_IND_UNKNOWN);
    TF_CHECK_INT(tf_ind_overall(ms, 2), TF_IND_UNKNOWN);
    for (int i = 0; i < 3; i++)
        tf_ind_master_free(&ms[i]);
}

TF_TEST(menu_lists_failing_builders_per_master)
{
    tf_ind_master_t ms[2];
    tf_ind_item_t items[32];
    two_builders(&ms[0]);
    tf_ind_master_init(&ms[1], "https://ci.example.org/tf", "Other");
    tf_ind_master_link_down(&ms[1], "connection refused");
    size_t n = tf_ind_menu_build(ms, 2, items, 32);
    TF_CHECK_INT(n, 8);
    TF_CHECK_INT(items[0].kind, TF_IND_ITEM_HEADER);
    TF_CHECK_STR(items[0].label, "Main farm: 1 failing");
    TF_CHECK_INT(items[1].kind, TF_IND_ITEM_LINK);
    TF_CHECK_STR(items[1].label, "mac: FAILURE (#7)");
    TF_CHECK_STR(items[1].url, BASE "/#/builders/mac");
    TF_CHECK_STR(items[2].label, "Open waterfall");
    TF_CHECK_STR(items[2].url, BASE "/#/waterfall");
    TF_CHECK_INT(items[3].kind, TF_IND_ITEM_SEPARATOR);
    TF_CHECK_STR(items[4].label,
                 "Other: unreachable (connection refused), retrying");
    TF_CHECK_STR(items[5].url, "https://ci.example.org/tf/#/waterfall");
    TF_CHECK_INT(items[6].kind, TF_IND_ITEM_SEPARATOR);
    TF_CHECK_INT(items[7].kind, TF_IND_ITEM_QUIT);
    TF_CHECK_STR(items[7].label, "Quit");

    /* Down: the last known failing builders stay, marked as such. */
    tf_ind_master_link_down(&ms[0], "timed out");
    n = tf_ind_menu_build(ms, 1, items, 32);
    TF_CHECK_STR(items[0].label, "Main farm: unreachable (timed out), "
                                 "retrying");
    TF_CHECK_STR(items[1].label, "mac: FAILURE (#7), last known");

    /* Building and passing headers. */
    tf_ind_master_link_up(&ms[0]);
    n = tf_ind_menu_build(ms, 1, items, 32);
    TF_CHECK_STR(items[0].label, "Main farm: reconnecting");
    for (int i = 0; i < 2; i++)
        tf_ind_master_free(&ms[i]);

    tf_ind_master_init(&ms[0], BASE, "Solo");
    n = tf_ind_menu_build(ms, 1, items, 32);
    TF_CHECK_STR(items[0].label, "Solo: connecting");
    TF_CHECK_INT(sync_master(&ms[0], "[]"), 0);
    TF_CHECK_INT(event(&ms[0], "started", "x", 1, 1, NULL), 0);
    n = tf_ind_menu_build(ms, 1, items, 32);
    TF_CHECK_STR(items[0].label, "Solo: all passing, 1 building");
    TF_CHECK_INT(event(&ms[0], "finished", "x", 1, 1, "SUCCESS"), 0);
    n = tf_ind_menu_build(ms, 1, items, 32);
    TF_CHECK_STR(items[0].label, "Solo: all passing");
    TF_CHECK_INT(n, 4);
    tf_ind_master_free(&ms[0]);
}

TF_TEST(menu_caps)
{
    tf_ind_master_t m;
    tf_ind_item_t items[64];
    tf_ind_master_init(&m, BASE, "Big");
    TF_CHECK_INT(sync_master(&m, "[]"), 0);
    for (int i = 0; i < 25; i++) {
        char name[16];
        snprintf(name, sizeof(name), "b%02d", i);
        TF_CHECK_INT(event(&m, "finished", name, 100 + i, 1, "FAILURE"), 0);
    }
    size_t n = tf_ind_menu_build(&m, 1, items, 64);
    /* header, 20 builders, "... and 5 more", waterfall, separator, quit */
    TF_CHECK_INT(n, 25);
    TF_CHECK_STR(items[0].label, "Big: 25 failing");
    TF_CHECK_STR(items[21].label, "... and 5 more failing");
    TF_CHECK_STR(items[21].url, BASE "/#/");
    TF_CHECK_INT(items[24].kind, TF_IND_ITEM_QUIT);
    /* A tiny array still ends with Quit. */
    n = tf_ind_menu_build(&m, 1, items, 3);
    TF_CHECK_INT(n, 3);
    TF_CHECK_INT(items[2].kind, TF_IND_ITEM_QUIT);
    TF_CHECK_INT(tf_ind_menu_build(&m, 1, items, 0), 0);
    tf_ind_master_free(&m);
}

TF_TEST(labels_and_title)
{
    tf_ind_master_t ms[2];
    char title[256];
    tf_ind_master_init(&ms[0], BASE, NULL);
    TF_CHECK_STR(tf_ind_master_label(&ms[0]), BASE); /* nothing else known */
    /* The master's own name, cleaned of control characters. */
    const char *sum = "{\"name\": \"evil\\u001b[31mname\"}";
    char err[200];
    tf_ind_master_link_up(&ms[0]);
    TF_CHECK_INT(tf_ind_master_apply_snapshot(&ms[0], sum, strlen(sum), "[]",
                                              2, err, sizeof(err)),
                 0);
    TF_CHECK_STR(tf_ind_master_label(&ms[0]), "evil [31mname");
    tf_ind_master_free(&ms[0]);

    two_builders(&ms[0]);
    tf_ind_master_init(&ms[1], "http://b:1", "B");
    tf_ind_title(ms, 2, title, sizeof(title));
    TF_CHECK_STR(title, "TestFarm: failing - Main farm: 1 failing (mac); B: "
                        "connecting");
    TF_CHECK_INT(event(&ms[0], "finished", "linux", 40, 4, "FAILURE"), 0);
    tf_ind_master_link_down(&ms[1], "refused");
    tf_ind_title(ms, 2, title, sizeof(title));
    TF_CHECK_STR(title, "TestFarm: failing - Main farm: 2 failing (linux, "
                        "mac); B: unreachable");
    tf_ind_title(ms, 2, title, 20); /* cut, still a string */
    TF_CHECK_INT(strlen(title), 19);
    for (int i = 0; i < 2; i++)
        tf_ind_master_free(&ms[i]);
}

TF_TEST(long_utf8_labels_are_cut_on_a_character)
{
    tf_ind_master_t m;
    char label[200] = "";
    /* 70 bytes of two-byte characters: the cut may not split one. */
    for (int i = 0; i < 35; i++)
        strcat(label, "\xc3\xa9");
    tf_ind_master_init(&m, BASE, label);
    TF_CHECK(strlen(m.label) <= TF_IND_LABEL_MAX);
    TF_CHECK_INT(strlen(m.label) % 2, 0);
    tf_ind_master_free(&m);
}

TF_TEST(cut_titles_stay_utf8)
{
    tf_ind_master_t m;
    char title[40];
    char label[64] = "";
    for (int i = 0; i < 20; i++)
        strcat(label, "\xe2\x82\xac"); /* a euro sign, 3 bytes */
    tf_ind_master_init(&m, BASE, label);
    TF_CHECK_INT(sync_master(&m, "[]"), 0);
    for (size_t cut = 22; cut < sizeof(title); cut++) {
        tf_ind_title(&m, 1, title, cut);
        /* "TestFarm: passing - " is 20 bytes; then whole euro signs. */
        TF_CHECK((strlen(title) - 20) % 3 == 0);
    }
    tf_ind_master_free(&m);
}

TF_TEST_MAIN()
