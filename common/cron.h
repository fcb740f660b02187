/*
 * cron.h - cron expressions: parsing "MIN HOUR DOM MON DOW" and finding
 * the next time one fires, in UTC.
 *
 * Pure functions of their arguments (no clock, no locale), so periodic
 * schedulers are tested by passing times and the config loader can check
 * a spec without reaching into the schedulers. Fuzzed by
 * tests/fuzz/fuzz_cron.c.
 */
#ifndef TF_CRON_H
#define TF_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

#endif
