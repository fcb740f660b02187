/*
 * fuzz_cron.c - libFuzzer driver for tf_cron_parse() and tf_cron_next().
 *
 * The input is a cron spec (cut at 255 bytes) followed, after a NUL, by
 * eight bytes of a start time. Beyond "no crash", it checks the contract:
 * a refused spec has a sentence; an accepted one has at least one bit in
 * each field; a next time is a whole minute strictly after the start,
 * within the eight-year horizon, matches every field (days by cron's
 * either-or rule), and asking again from the minute before gives the same
 * time.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cron.h"
#include "tf_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_cron: invariant violated: %s\n", what);
        abort();
    }
}

static bool matches(const tf_cron_t *c, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return false;
    bool dom = (c->mdays >> tm.tm_mday) & 1;
    bool dow = (c->wdays >> tm.tm_wday) & 1;
    bool day = c->mday_star || c->wday_star ? dom && dow : dom || dow;
    return ((c->minutes >> tm.tm_min) & 1) && ((c->hours >> tm.tm_hour) & 1) &&
           ((c->months >> (tm.tm_mon + 1)) & 1) && day && tm.tm_sec == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char spec[256], err[200];
    tf_cron_t c;
    size_t n = 0;
    while (n < size && n < sizeof spec - 1 && data[n])
        n++;
    memcpy(spec, data, n);
    spec[n] = '\0';
    /* A start between 1970 and about 2100, from the bytes after the NUL. */
    uint64_t raw = 0;
    for (size_t i = n + 1; i < size && i < n + 9; i++)
        raw = raw << 8 | data[i];
    int64_t after = (int64_t)(raw % (4102444800ULL * 1000));

    err[0] = 'X';
    err[1] = '\0';
    if (tf_cron_parse(spec, &c, err, sizeof err) != 0) {
        check(err[0] != 'X' && err[0] != '\0', "refusal has a sentence");
        return 0;
    }
    check(c.minutes && c.hours && c.mdays && c.months && c.wdays,
          "every field has a value");
    check(!(c.minutes >> 60) && !(c.hours >> 24) && !(c.mdays & 1) &&
              !(c.months & 1) && !(c.months >> 13) &&
              !(c.wdays >> 7),
          "bits within each field's range");
    int64_t next = tf_cron_next(&c, after);
    if (next < 0)
        return 0;
    check(next > after, "next is after the start");
    check(next % 60000 == 0, "next is a whole minute");
    check(next - after <= 8LL * 366 * 24 * 3600 * 1000 + 60000,
          "next is within the horizon");
    check(matches(&c, next), "next matches the expression");
    check(tf_cron_next(&c, next - 1) == next, "next is the first match");
    return 0;
}
