/*
 * result.h - build and step results and Buildbot's step-flag semantics.
 *
 * Both daemons use this: the slave to decide whether a failed step halts the
 * build, the master to compute the authoritative build result from the step
 * results it stored. Results order from best to worst as Buildbot's
 * worst_status does: SKIPPED < SUCCESS < WARNINGS < FAILURE < EXCEPTION <
 * RETRY < CANCELLED.
 */
#ifndef TF_RESULT_H
#define TF_RESULT_H

#include <stdbool.h>

typedef enum {
    TF_SUCCESS = 0,
    TF_WARNINGS = 1,
    TF_FAILURE = 2,
    TF_SKIPPED = 3,
    TF_EXCEPTION = 4,
    TF_RETRY = 5,
    TF_CANCELLED = 6,
} tf_result_t;

#define TF_RESULT_COUNT 7

/* The flags of one step, with Buildbot's names. Defaults (tf_step_flags_default):
 * flunkOnFailure and warnOnWarnings true, the rest false. */
typedef struct tf_step_flags {
    bool halt_on_failure;
    bool flunk_on_failure;
    bool warn_on_failure;
    bool flunk_on_warnings;
    bool warn_on_warnings;
    bool always_run;
} tf_step_flags_t;

tf_step_flags_t tf_step_flags_default(void);

/* "SUCCESS", "WARNINGS", ... ; "UNKNOWN" for out-of-range values. */
const char *tf_result_name(tf_result_t r);

/* Parses an upper-case result name. Returns 0 or TF_EINVAL. */
int tf_result_parse(const char *s, tf_result_t *out);

/* The worse of a and b in Buildbot's order. */
tf_result_t tf_result_worst(tf_result_t a, tf_result_t b);

/* Folds one finished step into the build result so far (Buildbot's
 * computeResultAndTermination). *terminate is set when later steps that are
 * not alwaysRun must be skipped: a FAILURE with haltOnFailure, or any
 * EXCEPTION, RETRY or CANCELLED. A SKIPPED step changes nothing. */
tf_result_t tf_result_fold(tf_result_t build_so_far, tf_result_t step,
                           const tf_step_flags_t *flags, bool *terminate);

#endif
