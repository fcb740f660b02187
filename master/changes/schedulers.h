/*
 * schedulers.h - what turns changes and the clock into build requests.
 *
 * A change scheduler collects the changes a poller records on the branch
 * it watches; once the tree has been stable (no new change) for
 * tree_stable_s and at least one collected change is important (touches
 * one of its paths, or any change when it has none), it queues one request
 * per builder for the newest revision, carrying every collected change (the
 * blamelist). A periodic scheduler fires at the times of a cron expression
 * (UTC), when something changed on its branch since it last fired unless
 * only_if_changed is off. Every decision reads tf_now_ms(), so the master's
 * controllable clock (testing.clock) moves schedulers as it moves time.
 *
 * The cron and path functions are pure and unit tested (test_cron.c); the
 * rest runs on the loop thread.
 */
#ifndef TF_SCHEDULERS_H
#define TF_SCHEDULERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tf_master;
struct tf_http_req;

/* --- cron expressions (pure) --- */

/* "MIN HOUR DOM MON DOW": each field is a comma-separated list of "*", N
 * or A-B, each optionally followed by "/S" (every S-th value; N/S runs from
 * N to the end of the range); months and weekdays also take English names
 * (jan, mon); weekday 7 is Sunday like 0. As in Vixie cron, when both day
 * fields are restricted (neither starts with "*"), a day matching either
 * one fires. */
typedef struct tf_cron {
    uint64_t minutes; /* bit m: minute m, 0..59 */
    uint32_t hours;   /* bits 0..23 */
    uint32_t mdays;   /* bits 1..31 */
    uint32_t months;  /* bits 1..12 */
    uint32_t wdays;   /* bits 0..6, Sunday 0 */
    bool mday_star;   /* the field started with '*' */
    bool wday_star;
} tf_cron_t;

/* Parses spec. Returns 0, or TF_EINVAL with a sentence in err naming the
 * field that is wrong. */
int tf_cron_parse(const char *spec, tf_cron_t *out, char *err, size_t errlen);

/* The first time (ms, a whole minute, UTC) strictly after after_ms that c
 * matches, or -1 when none comes within eight years (e.g. "0 0 30 2 *"). */
int64_t tf_cron_next(const tf_cron_t *c, int64_t after_ms);

/* --- path filters (pure) --- */

/* Whether a changed file matches a filter. A filter without glob
 * characters is a path prefix by whole components ("src" and "src/"
 * match "src/a.c" and "src", not "srcx/a.c"). With glob characters, "*"
 * and "?" match within one component, "[...]" a character class, "**" any
 * number of components; the glob must match the whole path or a leading
 * run of its components (the glob "doc" followed by "/" and "*" matches
 * "doc/a/b.txt"). A leading "/" or "./" is ignored. */
bool tf_path_match(const char *filter, const char *path);

/* Whether any of files matches any of filters; true when nfilters is 0. */
bool tf_paths_important(char *const *filters, size_t nfilters,
                        char *const *files, size_t nfiles);

/* --- the schedulers (loop thread) --- */

/* A change as pollers hand it to schedulers (borrowed for the call). */
typedef struct tf_change_note {
    uint64_t id;
    const char *revision;
    char *const *files;
    size_t nfiles;
} tf_change_note_t;

/* Loads the schedulers' state and the blamelists of open requests
 * (synchronous reads, at startup before serving) and starts the
 * one-second evaluation timer. Returns 0 or a negative code. */
int tf_schedulers_start(struct tf_master *m);

/* Follows a new config: keeps the state of schedulers that kept their
 * name, loads that of new ones. */
void tf_schedulers_reload(struct tf_master *m);

/* Closes the timer (shutdown). */
void tf_schedulers_stop(struct tf_master *m);

/* Frees everything (after the loop ended). */
void tf_schedulers_free(struct tf_master *m);

/* Called by pollers once changes on (repository, branch) are committed,
 * oldest first. initial: the first poll of the branch, which records the
 * head only; it triggers nothing and marks the head as seen. */
void tf_schedulers_on_changes(struct tf_master *m, const char *repository,
                              const char *branch,
                              const tf_change_note_t *changes, size_t n,
                              bool initial);

/* Evaluates every scheduler against tf_now_ms() now. */
void tf_schedulers_tick(struct tf_master *m);

/* GET /api/v1/schedulers. */
void tf_api_schedulers(struct tf_http_req *r);

/* POST /api/v1/master/clock (admin, testing.clock only). */
void tf_api_master_clock(struct tf_http_req *r);

/* POST /api/v1/builds/{id}/rebuild; the caller checked the token. */
void tf_api_rebuild(struct tf_http_req *r, uint64_t build_id);

#endif
