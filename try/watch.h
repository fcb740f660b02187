/*
 * watch.h - everything tf-try prints about a job, as pure functions from
 * the job's JSON (GET /api/v1/jobs/ID) to lines of text.
 *
 * `--wait` hands every snapshot of the job to tf_try_watch_update and
 * every event of the live feed to tf_try_watch_live; both share one
 * memory of what has been said, so each line appears once whichever
 * source brings the news first, and a snapshot after a dropped feed fills
 * in what the feed missed:
 *
 *   linux: position 2 in queue
 *   linux: build 12 started on slave s1
 *   linux: step compile started
 *   linux: step compile: SUCCESS (3.2 s)
 *   linux: build 12: FAILURE (14.0 s)
 *
 * Fetching a failing step's log is I/O, so the watcher only asks for it
 * (a tail request); tf_try_render_tail turns the fetched bytes into lines.
 * No function here does I/O or reads the clock, so the unit tests feed
 * snapshots and compare the exact text.
 */
#ifndef TF_TRY_WATCH_H
#define TF_TRY_WATCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct tf_try_watch tf_try_watch_t;

/* A new watcher that has said nothing yet; NULL on OOM. */
tf_try_watch_t *tf_try_watch_new(void);

/* Frees w; w may be NULL. */
void tf_try_watch_free(tf_try_watch_t *w);

/* Records that builder's queue position was already printed (at
 * submission), so the first snapshot does not repeat it. */
int tf_try_watch_seed(tf_try_watch_t *w, const char *builder,
                      long long position);

/* Appends to out one "\n"-terminated line per change between the previous
 * snapshot and job. For each builder that has just finished without
 * passing, appends to tails (a JSON array) an object
 * {"builder", "step", "result", "url", "at", "build_id", "tests_url"}
 * (tests_url:
 * the build's failing tests, present when it reported tests) naming the
 * first step that did
 * not pass, its log URL, and the length of out just after that builder's
 * result line (where its tail belongs when printed). Returns 0, TF_ENOMEM
 * or TF_E2BIG (out's cap). */
int tf_try_watch_update(tf_try_watch_t *w, const json_t *job, tf_buf_t *out,
                        json_t *tails);

/* Applies one event of the master's live feed (docs/api.md, "Live
 * feed": the topics builds and requests) to the same memory: appends a
 * line for a step of a followed build that starts or ends, or for a build
 * of one of the job's requests that starts, unless that was already said
 * (by a snapshot or an earlier event). Events of other jobs' builds are
 * ignored. Sets *want_snapshot when the job's snapshot has news the event
 * does not carry (a queue position, a build's end with its result and
 * failing tests, a build of a request not known yet); it leaves it alone
 * otherwise. Returns 0, TF_ENOMEM or TF_E2BIG. */
int tf_try_watch_live(tf_try_watch_t *w, const json_t *event, tf_buf_t *out,
                      bool *want_snapshot);

/* True while the live feed has said a followed build finished and no
 * snapshot has shown its end yet (the feed runs ahead of the store's
 * commits), or every builder has ended (only the job's own end is still
 * to come): the caller asks again soon. */
bool tf_try_watch_settling(const tf_try_watch_t *w);

/* Whether build build_id of job has a rerun without its patch
 * (retry_without_patch) that has not finished: its failing tests are
 * marked only once it has. */
bool tf_try_rerun_pending(const json_t *job, long long build_id);

/* True when the job is over: its state is "finished" or "cancelled" and no
 * build of it is still running. */
bool tf_try_job_done(const json_t *job);

/* True when a builder's result counts as passed: SUCCESS or WARNINGS. */
bool tf_try_result_passed(const char *result);

/* 0 when every builder of the job passed, 1 otherwise. With
 * new_failures_only, 0 unless a build failed with a new failure: one of
 * its failing tests is not also failing without the patch, or it failed
 * with no failing test to explain it (the job's "new_failures"). */
int tf_try_job_exit_code(const json_t *job, bool new_failures_only);

/* The failing tests of a failed build, before its log tail: a header
 * line ("linux: 2 failing tests (1 new), 1 flaky:"), then for each test
 * (at most max_tests) its status and name, whether it is new or also
 * failing without the patch, its message and its own lines of the log,
 * indented. answer is GET /api/v1/builds/ID/tests?status=fail,flaky;
 * tail is one of tf_try_watch_update's tails. Nothing is appended when
 * the build reported no failing or flaky test. */
int tf_try_render_failed_tests(const json_t *tail, const json_t *answer,
                               unsigned max_tests, tf_buf_t *out);

/* The tail of a failing step's log: a header line naming the step and the
 * log's URL, then the last nlines lines of log[0..len), each indented by
 * four spaces, made safe for a terminal (invalid UTF-8 and control
 * characters other than tab become U+FFFD; a CR before LF is dropped).
 * from_start says whether log begins at the log's first byte; when it does
 * not, the partial first line is dropped. tail is one object from
 * tf_try_watch_update's tails. */
int tf_try_render_tail(const json_t *tail, const uint8_t *log, size_t len,
                       bool from_start, unsigned nlines, tf_buf_t *out);

/* The table printed when the job is over: "job ID: RESULT" and one row per
 * builder (result, duration, slave, build URL). */
int tf_try_render_summary(const json_t *job, tf_buf_t *out);

/* What `tf-try status` prints: the job's facts and one row per builder
 * (state, queue position, slave, result, link). */
int tf_try_render_status(const json_t *job, tf_buf_t *out);

/* What `tf-try list` prints for {"jobs": [...]} (a table, newest first). */
int tf_try_render_list(const json_t *list, tf_buf_t *out);

/* "0.4 s", "59.9 s", "2 min 05 s", "1 h 02 min"; "-" for negative ms. */
void tf_try_format_duration(int64_t ms, char *out, size_t n);

/* Appends p[0..n) to out made safe for a terminal, as for the tail lines
 * (newlines kept when keep_newlines, else turned into U+FFFD too). */
int tf_try_sanitize(const uint8_t *p, size_t n, bool keep_newlines,
                    tf_buf_t *out);

#endif
