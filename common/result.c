/*
 * result.c - build results and Buildbot's step-flag semantics.
 *
 * The enum values are stable storage codes (they are written to the
 * database), not the severity order, so severity comes from a rank table:
 * SKIPPED < SUCCESS < WARNINGS < FAILURE < EXCEPTION < RETRY < CANCELLED,
 * as in Buildbot's worst_status. tf_result_fold() is a transcription of
 * Buildbot's computeResultAndTermination. Values outside the enum are
 * treated as EXCEPTION so a corrupt result can never look like success.
 */
#include <string.h>

#include "result.h"
#include "tf_err.h"

static const char *const tf_result_names[TF_RESULT_COUNT] = {
    [TF_SUCCESS] = "SUCCESS",     [TF_WARNINGS] = "WARNINGS",
    [TF_FAILURE] = "FAILURE",     [TF_SKIPPED] = "SKIPPED",
    [TF_EXCEPTION] = "EXCEPTION", [TF_RETRY] = "RETRY",
    [TF_CANCELLED] = "CANCELLED",
};

static const int tf_result_ranks[TF_RESULT_COUNT] = {
    [TF_SKIPPED] = 0,   [TF_SUCCESS] = 1, [TF_WARNINGS] = 2,
    [TF_FAILURE] = 3,   [TF_EXCEPTION] = 4, [TF_RETRY] = 5,
    [TF_CANCELLED] = 6,
};

static bool tf_result_known(tf_result_t r)
{
    return (int)r >= 0 && (int)r < TF_RESULT_COUNT;
}

static tf_result_t tf_result_sane(tf_result_t r)
{
    return tf_result_known(r) ? r : TF_EXCEPTION;
}

tf_step_flags_t tf_step_flags_default(void)
{
    return (tf_step_flags_t){
        .halt_on_failure = false,
        .flunk_on_failure = true,
        .warn_on_failure = false,
        .flunk_on_warnings = false,
        .warn_on_warnings = true,
        .always_run = false,
    };
}

const char *tf_result_name(tf_result_t r)
{
    return tf_result_known(r) ? tf_result_names[r] : "UNKNOWN";
}

int tf_result_parse(const char *s, tf_result_t *out)
{
    if (!s)
        return TF_EINVAL;
    for (int i = 0; i < TF_RESULT_COUNT; i++) {
        if (strcmp(s, tf_result_names[i]) == 0) {
            if (out)
                *out = (tf_result_t)i;
            return 0;
        }
    }
    return TF_EINVAL;
}

tf_result_t tf_result_worst(tf_result_t a, tf_result_t b)
{
    a = tf_result_sane(a);
    b = tf_result_sane(b);
    return tf_result_ranks[a] >= tf_result_ranks[b] ? a : b;
}

/* What a step with result `step` contributes to the build result, and
 * whether it halts the build (Buildbot's computeResultAndTermination).
 * alwaysRun plays no part here: it only decides whether a step runs. */
static tf_result_t tf_result_contribution(tf_result_t step,
                                          const tf_step_flags_t *f,
                                          bool *halts)
{
    *halts = false;
    switch (step) {
    case TF_FAILURE:
        *halts = f->halt_on_failure;
        if (f->flunk_on_failure)
            return TF_FAILURE;
        if (f->warn_on_failure)
            return TF_WARNINGS;
        return TF_SUCCESS;
    case TF_WARNINGS:
        if (f->flunk_on_warnings)
            return TF_FAILURE;
        if (f->warn_on_warnings)
            return TF_WARNINGS;
        return TF_SUCCESS;
    case TF_EXCEPTION:
    case TF_RETRY:
    case TF_CANCELLED:
        *halts = true;
        return step;
    case TF_SUCCESS:
    case TF_SKIPPED:
        return step;
    }
    *halts = true; /* unreachable for sane values */
    return TF_EXCEPTION;
}

tf_result_t tf_result_fold(tf_result_t build_so_far, tf_result_t step,
                           const tf_step_flags_t *flags, bool *terminate)
{
    tf_step_flags_t defaults = tf_step_flags_default();
    bool halts = false;
    tf_result_t c = tf_result_contribution(tf_result_sane(step),
                                           flags ? flags : &defaults, &halts);
    /* Termination is sticky: a later step never un-halts the build, so the
     * flag is only ever raised here. */
    if (halts && terminate)
        *terminate = true;
    return tf_result_worst(build_so_far, c);
}
