/*
 * runner.h - runs the steps of one build as child processes on the loop.
 *
 * A runner takes a decoded build_start and runs its steps in order, each in
 * its own session (so its own process group: pgid == pid), with stdin from
 * /dev/null and stdout/stderr read through two pipes. It reports what
 * happens as protocol events through callbacks; it knows nothing about the
 * spool or the link, so it can be driven and tested on its own.
 *
 * Every step ends with SIGKILL sent to its whole process group: nothing a
 * step started survives it (daemons that call setsid() themselves escape,
 * as they would from any process-group based supervisor).
 *
 * While a step runs, BASEDIR/.run/BUILDID.pid holds "PGID STARTTIME" (the
 * start time is field 22 of /proc/PGID/stat) so that a slave restarted
 * after being killed can kill the group a previous instance left behind
 * (tf_runner_reap_leftovers).
 */
#ifndef TF_RUNNER_H
#define TF_RUNNER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "proto.h"
#include "source.h"

/* Grace between SIGTERM and SIGKILL for timeouts and aborts. */
#define TF_RUNNER_KILL_GRACE_MS 5000
/* How long to keep reading after the main process exited when a grandchild
 * still holds a pipe open. */
#define TF_RUNNER_DRAIN_MS 2000

typedef struct tf_runner tf_runner_t;

typedef struct tf_runner_ops {
    /* A control event: step_started, test_results, step_finished or
     * build_finished with every field set except seq. The callee numbers and stores it; msg is
     * only borrowed for the call. */
    void (*event_cb)(void *arg, tf_msg_t *msg);
    /* n (1..TF_PROTO_MAX_CHUNK) bytes a step wrote on one stream, borrowed
     * for the call. The callee may call tf_runner_pause from here. */
    void (*output_cb)(void *arg, uint32_t step, tf_stream_t stream,
                      const uint8_t *data, size_t n);
    /* The build is over; build_finished was the last event. The callee must
     * not destroy the runner from inside this call. */
    void (*done_cb)(void *arg, tf_result_t result);
} tf_runner_ops_t;

/* Creates a runner for the build described by bs (a TF_MSG_BUILD_START,
 * deep-copied; the caller keeps bs). Builds run in BASEDIR/WORKDIR, where
 * workdir (copied) is bs.workdir or bs.workdir followed by "@N" (the
 * caller picks it so concurrent builds never share a directory); pid
 * files go to BASEDIR/.run (which must exist). ops is copied; src_ctx
 * (borrowed, must outlive the runner) serves builtin source steps. The
 * caller owns *out and frees it with tf_runner_destroy. Returns 0,
 * TF_EINVAL (bad workdir) or TF_ENOMEM. */
int tf_runner_new(uv_loop_t *loop, const char *basedir, const char *workdir,
                  const tf_msg_t *bs,
                  const tf_source_ctx_t *src_ctx, const tf_runner_ops_t *ops,
                  void *arg, tf_runner_t **out);

/* Starts the first step (or reports everything, if nothing can run). */
void tf_runner_start(tf_runner_t *r);

/* Stops the build: the running step's group gets SIGTERM, then SIGKILL
 * after TF_RUNNER_KILL_GRACE_MS, and that step ends with step_result and
 * text; later steps are reported SKIPPED when report_rest is true (a
 * build_abort) or not at all (the slave shutting down), alwaysRun or not;
 * the build ends with step_result. Asynchronous: the events come from the
 * loop later. A second call, or a call on a finished build, does nothing. */
void tf_runner_abort(tf_runner_t *r, tf_result_t step_result,
                     const char *text, bool report_rest);

/* Backpressure: stops reading the running step's pipes (and its no-output
 * timer, which would otherwise blame the step for our slowness) until
 * tf_runner_resume. Idempotent. */
void tf_runner_pause(tf_runner_t *r);
void tf_runner_resume(tf_runner_t *r);

bool tf_runner_done(const tf_runner_t *r);

/* Frees the runner; r may be NULL. Meant for finished runners: a step still
 * running is killed with SIGKILL and abandoned. Handles still closing are
 * freed by their close callbacks. */
void tf_runner_destroy(tf_runner_t *r);

/* At startup: for every BASEDIR/.run/ID.pid left by a slave that died, kill
 * the recorded process group if it is still the one recorded (same start
 * time) and delete the file; other files there (a source step's patch and
 * properties) are deleted too. Returns how many groups were killed. */
int tf_runner_reap_leftovers(const char *run_dir);

#endif
