/*
 * clock.c - the one source of "now", adjustable for tests.
 *
 * The offset and the frozen value are atomics so a test driver (or the
 * master's controllable clock) may move time from any thread while the loop
 * thread reads it, without a lock on the hot path. A frozen value of -1
 * means "not frozen".
 */
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "clock.h"

static _Atomic int64_t tf_clock_offset_ms;
static _Atomic int64_t tf_clock_frozen_ms = -1;

static int64_t tf_clock_read(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tf_now_ms(void)
{
    int64_t frozen = atomic_load(&tf_clock_frozen_ms);
    if (frozen >= 0)
        return frozen;
    return tf_clock_read(CLOCK_REALTIME) + atomic_load(&tf_clock_offset_ms);
}

int64_t tf_mono_ms(void)
{
    return tf_clock_read(CLOCK_MONOTONIC);
}

void tf_clock_set_offset(int64_t offset_ms)
{
    atomic_store(&tf_clock_offset_ms, offset_ms);
}

void tf_clock_freeze(int64_t ms)
{
    atomic_store(&tf_clock_frozen_ms, ms < 0 ? -1 : ms);
}

void tf_time_iso(int64_t ms, char *out, unsigned long outlen)
{
    if (!out || outlen == 0)
        return;
    /* Floor division so that times before 1970 keep a positive fraction. */
    int64_t sec = ms / 1000;
    int64_t frac = ms % 1000;
    if (frac < 0) {
        frac += 1000;
        sec -= 1;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(out, outlen, "(invalid time %lld)", (long long)ms);
        return;
    }
    snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)frac);
}
