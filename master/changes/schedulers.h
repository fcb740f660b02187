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
 * Cron expressions (common/cron.h) and path filters (common/glob.h) are
 * pure and live in common/; everything here runs on the loop thread.
 */
#ifndef TF_SCHEDULERS_H
#define TF_SCHEDULERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cron.h"
#include "glob.h"
#include "names.h"
#include "store/store.h"

struct tf_master;

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

/* Evaluates every scheduler against tf_now_ms() now, on the holder of
 * the duty lease only (several masters); a master that just took it
 * reads their state again from the database first. */
void tf_schedulers_tick(struct tf_master *m);

/* Every scheduler's state as GET /api/v1/schedulers shows it (docs/api.md):
 * a new JSON array, on the loop thread. */
json_t *tf_schedulers_status(struct tf_master *m);

/* Several masters: a master without the duty lease answers with the
 * holder's stored state. tf_schedulers_stored_prepare (loop thread)
 * makes one TF_Q_SCHEDULER query per scheduler (*out, n of them, owned:
 * tf_schedulers_stored_free), which the caller runs on a reader
 * (tf_q_run, in one snapshot); tf_schedulers_status_stored (loop thread)
 * then renders them as tf_schedulers_status does, a scheduler without a
 * stored row (or added by a reload meanwhile) from memory. */
typedef struct tf_sched_stored {
    tf_q_scheduler_t q;
    char name[TF_NAME_MAX + 1];
    char *repository, *branch; /* the query's, copied */
} tf_sched_stored_t;
int tf_schedulers_stored_prepare(struct tf_master *m,
                                 tf_sched_stored_t **out, size_t *n);
void tf_schedulers_stored_free(tf_sched_stored_t *v, size_t n);
json_t *tf_schedulers_status_stored(struct tf_master *m,
                                    const tf_sched_stored_t *v, size_t n);

#endif
