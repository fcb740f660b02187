/*
 * poller.h - change sources: git pollers.
 *
 * One poller per repository and branch (the config's "pollers" plus the
 * sources of its schedulers) keeps a bare mirror under DIR/mirrors, fetches
 * the branch into it every interval_s and records each new commit as a
 * change. git runs as child processes through uv_spawn, never on the loop
 * thread's time: the loop only collects their (capped) output. The changes
 * of one poll and the poller's new last_revision are stored by one function
 * on the writer thread, in one savepoint, so a restart resumes exactly
 * where the last committed poll stopped and never records a change twice.
 * The first poll of a branch records its head only (history is not news).
 *
 * A repository that cannot be reached is reported (GET /api/v1/pollers,
 * and one log line per state change, not per attempt) and retried with
 * exponential backoff up to max(interval, 10 minutes).
 */
#ifndef TF_POLLER_H
#define TF_POLLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "changes/gitlog.h"
#include "store/store.h"

struct tf_master;

/* The file name of a repository's mirror ("<sanitized>-<hash>.git"),
 * malloc'd, or NULL on OOM. Safe as one path component. */
char *tf_mirror_name(const char *repository);

/* Creates the pollers of the config, loads their state from the pollers
 * table (synchronous read, at startup) and starts polling. Returns 0 or a
 * negative code. */
int tf_pollers_start(struct tf_master *m);

/* Follows a new config: pollers that stay keep their state; removed ones
 * are dropped once their git has finished. */
void tf_pollers_reload(struct tf_master *m);

/* Several masters (store.shared): this master just took the duty lease;
 * the pollers' last revisions are read again from the database (the
 * master that polled until now moved them), and no poller polls until
 * they are in. Loop thread. */
void tf_pollers_reread(struct tf_master *m);

/* Stops polling for shutdown: kills running git processes and closes the
 * timer; their handles close through the loop. */
void tf_pollers_stop(struct tf_master *m);

/* Frees everything (after the loop ended). */
void tf_pollers_free(struct tf_master *m);

/* The newest revision recorded for (repository, branch), or NULL. Borrowed
 * until the next poll. */
const char *tf_pollers_head(struct tf_master *m, const char *repository,
                            const char *branch);

/* Every poller's state as GET /api/v1/pollers shows it (docs/api.md): a
 * new JSON array, from memory, on the loop thread. */
json_t *tf_pollers_status(struct tf_master *m);

/* The same from the stored state (q: TF_Q_POLLERS's rows, borrowed), for
 * a shared master that does not poll (it does not hold the duty lease):
 * the holder's revisions, times and errors; polling false, failures and
 * next_poll_ms null (the holder's, not stored). A new JSON array, loop
 * thread. */
json_t *tf_pollers_status_stored(struct tf_master *m,
                                 const tf_q_pollers_t *q);

#endif
