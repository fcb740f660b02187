/*
 * clock.h - the one source of "now".
 *
 * Every timestamp TestFarm stores or compares comes from tf_now_ms(), wall
 * clock milliseconds since the Unix epoch. Tests move it: tf_clock_set_offset
 * adds a fixed offset (the master's controllable clock uses this), and
 * tf_clock_freeze pins it to one value for unit tests.
 * Durations that must not jump use tf_mono_ms().
 */
#ifndef TF_CLOCK_H
#define TF_CLOCK_H

#include <stdint.h>

int64_t tf_now_ms(void);

/* Milliseconds from a monotonic clock (for timeouts and durations). */
int64_t tf_mono_ms(void);

/* From now on tf_now_ms() returns real time + offset_ms. */
void tf_clock_set_offset(int64_t offset_ms);

/* Pins tf_now_ms() to ms (unit tests); a negative value unpins it. */
void tf_clock_freeze(int64_t ms);

/* Formats ms as "2026-11-22T10:00:00.123Z" into out (at least 32 bytes). */
void tf_time_iso(int64_t ms, char *out, unsigned long outlen);

#endif
