/*
 * log.h - one line per event, to stderr (or a file), with a UTC timestamp,
 * the program name, pid, level and subsystem:
 *
 *   2026-11-22T10:00:00.123Z tf-master[4242] INFO link: slave s1 connected
 *
 * The level threshold comes from tf_log_init(); TF_LOG_DEBUG lines cost one
 * comparison when disabled. Logging is thread-safe (one fprintf per line).
 */
#ifndef TF_LOG_H
#define TF_LOG_H

#include <stdio.h>

typedef enum {
    TF_LOG_DEBUG = 0,
    TF_LOG_INFO = 1,
    TF_LOG_WARN = 2,
    TF_LOG_ERROR = 3,
} tf_log_level_t;

/* Sets the program name (borrowed: must outlive logging), the threshold and
 * the stream (NULL means stderr). */
void tf_log_init(const char *prog, tf_log_level_t level, FILE *stream);

/* Parses "debug", "info", "warn", "error"; returns 0 or TF_EINVAL. */
int tf_log_parse_level(const char *s, tf_log_level_t *out);

tf_log_level_t tf_log_level(void);

void tf_log(tf_log_level_t level, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define tf_debug(sub, ...)                                                     \
    do {                                                                       \
        if (tf_log_level() <= TF_LOG_DEBUG)                                    \
            tf_log(TF_LOG_DEBUG, sub, __VA_ARGS__);                            \
    } while (0)
#define tf_info(sub, ...) tf_log(TF_LOG_INFO, sub, __VA_ARGS__)
#define tf_warn(sub, ...) tf_log(TF_LOG_WARN, sub, __VA_ARGS__)
#define tf_error(sub, ...) tf_log(TF_LOG_ERROR, sub, __VA_ARGS__)

#endif
