/*
 * test_result.c - result names, Buildbot's worst order and the fold of step
 * results into a build result (docs/protocol.md, "Build results").
 *
 * The fold table is checked row by row for every step result against every
 * one of the 64 flag combinations, with the expectation written out from the
 * specification's table rather than computed by the code under test.
 */
#include "result.h"
#include "tf_err.h"

#include "tf_test.h"

static const tf_result_t all[TF_RESULT_COUNT] = {
    TF_SUCCESS, TF_WARNINGS, TF_FAILURE, TF_SKIPPED,
    TF_EXCEPTION, TF_RETRY, TF_CANCELLED,
};

/* Best to worst, as the specification lists them. */
static const tf_result_t order[TF_RESULT_COUNT] = {
    TF_SKIPPED, TF_SUCCESS, TF_WARNINGS, TF_FAILURE,
    TF_EXCEPTION, TF_RETRY, TF_CANCELLED,
};

static int position(tf_result_t r)
{
    for (int i = 0; i < TF_RESULT_COUNT; i++)
        if (order[i] == r)
            return i;
    return -1;
}

static tf_step_flags_t flags_from_bits(unsigned bits)
{
    return (tf_step_flags_t){
        .halt_on_failure = bits & 1,
        .flunk_on_failure = bits & 2,
        .warn_on_failure = bits & 4,
        .flunk_on_warnings = bits & 8,
        .warn_on_warnings = bits & 16,
        .always_run = bits & 32,
    };
}

TF_TEST(names_and_parse)
{
    const char *names[] = {"SUCCESS", "WARNINGS", "FAILURE", "SKIPPED",
                           "EXCEPTION", "RETRY", "CANCELLED"};
    for (int i = 0; i < TF_RESULT_COUNT; i++) {
        TF_CHECK_STR(tf_result_name(all[i]), names[i]);
        tf_result_t r = (tf_result_t)99;
        TF_CHECK_INT(tf_result_parse(names[i], &r), 0);
        TF_CHECK_INT(r, all[i]);
    }
    TF_CHECK_INT(TF_SUCCESS, 0);
    TF_CHECK_INT(TF_CANCELLED, 6);
    TF_CHECK_STR(tf_result_name((tf_result_t)7), "UNKNOWN");
    TF_CHECK_STR(tf_result_name((tf_result_t)-1), "UNKNOWN");
    tf_result_t r = TF_SUCCESS;
    const char *bad[] = {"success", "Success", "", "UNKNOWN", "FAILURE ",
                         "FAIL", "SUCCESSX"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        TF_CHECK_INT(tf_result_parse(bad[i], &r), TF_EINVAL);
        TF_CHECK_INT(r, TF_SUCCESS);
    }
    TF_CHECK_INT(tf_result_parse(NULL, &r), TF_EINVAL);
}

TF_TEST(worst_order)
{
    for (int i = 0; i < TF_RESULT_COUNT; i++)
        for (int j = 0; j < TF_RESULT_COUNT; j++) {
            tf_result_t a = all[i], b = all[j];
            tf_result_t want = position(a) >= position(b) ? a : b;
            TF_CHECK_INT(tf_result_worst(a, b), want);
            TF_CHECK_INT(tf_result_worst(b, a), want);
        }
    /* Spot checks where the enum order and the worst order disagree. */
    TF_CHECK_INT(tf_result_worst(TF_SKIPPED, TF_SUCCESS), TF_SUCCESS);
    TF_CHECK_INT(tf_result_worst(TF_SKIPPED, TF_FAILURE), TF_FAILURE);
    TF_CHECK_INT(tf_result_worst(TF_RETRY, TF_EXCEPTION), TF_RETRY);
    TF_CHECK_INT(tf_result_worst(TF_CANCELLED, TF_RETRY), TF_CANCELLED);
    /* A corrupt value never looks better than EXCEPTION. */
    TF_CHECK_INT(tf_result_worst((tf_result_t)42, TF_SUCCESS), TF_EXCEPTION);
}

TF_TEST(default_flags)
{
    tf_step_flags_t f = tf_step_flags_default();
    TF_CHECK(!f.halt_on_failure);
    TF_CHECK(f.flunk_on_failure);
    TF_CHECK(!f.warn_on_failure);
    TF_CHECK(!f.flunk_on_warnings);
    TF_CHECK(f.warn_on_warnings);
    TF_CHECK(!f.always_run);
}

/* What the specification's table says a step contributes. */
static tf_result_t spec_contribution(tf_result_t step, const tf_step_flags_t *f)
{
    switch (step) {
    case TF_SUCCESS:
    case TF_SKIPPED:
        return TF_SKIPPED; /* "nothing": the best result changes nothing */
    case TF_WARNINGS:
        return f->flunk_on_warnings ? TF_FAILURE
               : f->warn_on_warnings ? TF_WARNINGS
                                     : TF_SKIPPED;
    case TF_FAILURE:
        return f->flunk_on_failure ? TF_FAILURE
               : f->warn_on_failure ? TF_WARNINGS
                                    : TF_SKIPPED;
    default:
        return step;
    }
}

static bool spec_terminates(tf_result_t step, const tf_step_flags_t *f)
{
    if (step == TF_FAILURE)
        return f->halt_on_failure;
    return step == TF_EXCEPTION || step == TF_RETRY || step == TF_CANCELLED;
}

TF_TEST(fold_table_all_flags)
{
    /* Build results a fold can start from: the initial SUCCESS and every
     * result a previous fold can produce. */
    const tf_result_t so_far[] = {TF_SUCCESS, TF_WARNINGS, TF_FAILURE,
                                  TF_EXCEPTION, TF_RETRY, TF_CANCELLED};
    for (unsigned bits = 0; bits < 64; bits++) {
        tf_step_flags_t f = flags_from_bits(bits);
        for (int s = 0; s < TF_RESULT_COUNT; s++) {
            for (size_t b = 0; b < sizeof so_far / sizeof *so_far; b++) {
                tf_result_t c = spec_contribution(all[s], &f);
                tf_result_t want =
                    position(c) > position(so_far[b]) ? c : so_far[b];
                bool term = false;
                tf_result_t got = tf_result_fold(so_far[b], all[s], &f, &term);
                if (got != want || term != spec_terminates(all[s], &f)) {
                    fprintf(stderr,
                            "fold(%s, %s, flags %02x) = %s/%d, want %s/%d\n",
                            tf_result_name(so_far[b]), tf_result_name(all[s]),
                            bits, tf_result_name(got), term,
                            tf_result_name(want), spec_terminates(all[s], &f));
                    TF_CHECK(0);
                }
            }
        }
    }
}

TF_TEST(fold_rows)
{
    tf_step_flags_t d = tf_step_flags_default();
    tf_step_flags_t none = flags_from_bits(0);
    tf_step_flags_t f;
    bool t = false;

    /* SUCCESS and SKIPPED contribute nothing and never halt. */
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, TF_SUCCESS, &d, &t), TF_SUCCESS);
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, TF_SKIPPED, &d, &t), TF_SUCCESS);
    TF_CHECK_INT(tf_result_fold(TF_WARNINGS, TF_SKIPPED, &d, &t), TF_WARNINGS);
    TF_CHECK_INT(tf_result_fold(TF_FAILURE, TF_SUCCESS, &d, &t), TF_FAILURE);
    TF_CHECK(!t);

    /* WARNINGS. */
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, TF_WARNINGS, &d, &t), TF_WARNINGS);
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, TF_WARNINGS, &none, &t), TF_SUCCESS);
    f = none;
    f.flunk_on_warnings = true;
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, TF_WARNINGS, &f, &t), TF_FAILURE);
    f.warn_on_warnings = true; /* flunk wins over warn */
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, TF_WARNINGS, &f, &t), TF_FAILURE);
    TF_CHECK(!t);

    /* FAILURE. */
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, TF_FAILURE, &d, &t), TF_FAILURE);
    TF_CHECK(!t);
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, TF_FAILURE, &none, &t), TF_SUCCESS);
    f = none;
    f.warn_on_failure = true;
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, TF_FAILURE, &f, &t), TF_WARNINGS);
    f.flunk_on_failure = true;
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, TF_FAILURE, &f, &t), TF_FAILURE);
    TF_CHECK(!t);
    f = none;
    f.halt_on_failure = true; /* halts even when it contributes nothing */
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, TF_FAILURE, &f, &t), TF_SUCCESS);
    TF_CHECK(t);

    /* EXCEPTION, RETRY, CANCELLED contribute themselves and always halt,
     * whatever the flags say. */
    const tf_result_t hard[] = {TF_EXCEPTION, TF_RETRY, TF_CANCELLED};
    for (int i = 0; i < 3; i++) {
        t = false;
        TF_CHECK_INT(tf_result_fold(TF_SUCCESS, hard[i], &none, &t), hard[i]);
        TF_CHECK(t);
        t = false;
        TF_CHECK_INT(tf_result_fold(TF_FAILURE, hard[i], &d, &t), hard[i]);
        TF_CHECK(t);
    }
    t = false;
    TF_CHECK_INT(tf_result_fold(TF_CANCELLED, TF_EXCEPTION, &d, &t),
                 TF_CANCELLED);
    TF_CHECK_INT(tf_result_fold(TF_RETRY, TF_EXCEPTION, &d, &t), TF_RETRY);
    TF_CHECK_INT(tf_result_fold(TF_EXCEPTION, TF_RETRY, &d, &t), TF_RETRY);

    /* The build never gets better. */
    TF_CHECK_INT(tf_result_fold(TF_FAILURE, TF_WARNINGS, &d, &t), TF_FAILURE);
    TF_CHECK_INT(tf_result_fold(TF_EXCEPTION, TF_FAILURE, &d, &t),
                 TF_EXCEPTION);
}

TF_TEST(fold_always_run_is_irrelevant)
{
    for (unsigned bits = 0; bits < 32; bits++) {
        tf_step_flags_t a = flags_from_bits(bits);
        tf_step_flags_t b = flags_from_bits(bits | 32);
        for (int s = 0; s < TF_RESULT_COUNT; s++)
            for (int p = 0; p < TF_RESULT_COUNT; p++) {
                bool ta = false, tb = false;
                TF_CHECK_INT(tf_result_fold(all[p], all[s], &a, &ta),
                             tf_result_fold(all[p], all[s], &b, &tb));
                TF_CHECK_INT(ta, tb);
            }
    }
}

TF_TEST(fold_terminate_is_sticky_and_optional)
{
    tf_step_flags_t d = tf_step_flags_default();
    tf_step_flags_t halt = d;
    halt.halt_on_failure = true;
    tf_step_flags_t ar = d;
    ar.always_run = true;

    /* A build: compile fails with haltOnFailure, then an alwaysRun cleanup
     * succeeds: the build stays FAILURE and stays terminated. */
    bool term = false;
    tf_result_t r = TF_SUCCESS;
    r = tf_result_fold(r, TF_SUCCESS, &d, &term);
    TF_CHECK(!term);
    r = tf_result_fold(r, TF_FAILURE, &halt, &term);
    TF_CHECK(term);
    r = tf_result_fold(r, TF_SKIPPED, &d, &term);
    r = tf_result_fold(r, TF_SUCCESS, &ar, &term);
    TF_CHECK(term);
    TF_CHECK_INT(r, TF_FAILURE);

    /* A SKIPPED step changes nothing, not even from SKIPPED. */
    term = false;
    TF_CHECK_INT(tf_result_fold(TF_SKIPPED, TF_SKIPPED, &d, &term),
                 TF_SKIPPED);
    TF_CHECK(!term);

    /* NULL flags mean the defaults; NULL terminate is allowed. */
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, TF_WARNINGS, NULL, NULL),
                 TF_WARNINGS);
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, TF_FAILURE, NULL, NULL),
                 TF_FAILURE);
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, TF_CANCELLED, &d, NULL),
                 TF_CANCELLED);

    /* An out-of-range step result is treated as EXCEPTION. */
    term = false;
    TF_CHECK_INT(tf_result_fold(TF_SUCCESS, (tf_result_t)77, &d, &term),
                 TF_EXCEPTION);
    TF_CHECK(term);
}

TF_TEST_MAIN()
