/*
 * log.c - one line per event with a UTC timestamp, program, pid, level and
 * subsystem.
 *
 * The whole line is formatted into a stack buffer first and written with a
 * single fprintf under a mutex, so lines from different threads never
 * interleave and tf_log_init() can swap the stream while others log. The
 * threshold is an atomic so tf_debug() costs one load when disabled.
 * Control characters in messages (which often quote client input) are
 * escaped as \xNN so one event always stays one line.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "tf_err.h"

#define TF__LOG_MSG_MAX 4096

static pthread_mutex_t tf_log_mutex = PTHREAD_MUTEX_INITIALIZER;
static const char *tf_log_prog;  /* guarded by tf_log_mutex */
static FILE *tf_log_stream;      /* guarded by tf_log_mutex; NULL = stderr */
static _Atomic int tf_log_threshold = TF_LOG_INFO;

static const char *const tf_log_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void tf_log_init(const char *prog, tf_log_level_t level, FILE *stream)
{
    pthread_mutex_lock(&tf_log_mutex);
    tf_log_prog = prog;
    tf_log_stream = stream;
    pthread_mutex_unlock(&tf_log_mutex);
    atomic_store(&tf_log_threshold, (int)level);
}

int tf_log_parse_level(const char *s, tf_log_level_t *out)
{
    if (!s || !out)
        return TF_EINVAL;
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, tf_log_names[i]) == 0) {
            *out = (tf_log_level_t)i;
            return 0;
        }
    }
    return TF_EINVAL;
}

tf_log_level_t tf_log_level(void)
{
    return (tf_log_level_t)atomic_load(&tf_log_threshold);
}

/* Copies src into dst[dstlen], escaping control bytes; always terminates. */
static void tf_log_escape(char *dst, size_t dstlen, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            if (o + 4 >= dstlen)
                break;
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[*p >> 4];
            dst[o++] = hex[*p & 15];
        } else {
            if (o + 1 >= dstlen)
                break;
            dst[o++] = (char)*p;
        }
    }
    dst[o] = '\0';
}

void tf_log(tf_log_level_t level, const char *subsys, const char *fmt, ...)
{
    if ((int)level < atomic_load(&tf_log_threshold))
        return;
    int saved_errno = errno;
    char raw[TF__LOG_MSG_MAX];
    char msg[TF__LOG_MSG_MAX];
    char when[40];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    tf_log_escape(msg, sizeof msg, raw);
    tf_time_iso(tf_now_ms(), when, sizeof when);
    const char *lvl = (level >= TF_LOG_DEBUG && level <= TF_LOG_ERROR)
                          ? tf_log_names[level]
                          : "?";

    pthread_mutex_lock(&tf_log_mutex);
    FILE *f = tf_log_stream ? tf_log_stream : stderr;
    const char *prog = tf_log_prog ? tf_log_prog : program_invocation_short_name;
    fprintf(f, "%s %s[%ld] %s %s: %s\n", when, prog, (long)getpid(), lvl,
            subsys ? subsys : "-", msg);
    fflush(f);
    pthread_mutex_unlock(&tf_log_mutex);
    errno = saved_errno;
}
