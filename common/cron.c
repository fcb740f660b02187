/*
 * cron.c - cron expressions (see cron.h).
 *
 * A parsed expression is five bit sets; finding the next time walks
 * forward from the given minute, skipping a whole month, day or hour as
 * soon as that field cannot match, so the walk takes at most a few
 * thousand steps within its eight-year horizon.
 */
#include "cron.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "tf_err.h"

#define CRON_HORIZON_MS (8LL * 366 * 24 * 3600 * 1000)

typedef struct cron_field {
    const char *what;
    int lo, hi;
    const char *const *names; /* names[i] stands for lo + i; or NULL */
} cron_field_t;

static const char *const month_names[] = {"jan", "feb", "mar", "apr",
                                          "may", "jun", "jul", "aug",
                                          "sep", "oct", "nov", "dec", NULL};
static const char *const wday_names[] = {"sun", "mon", "tue", "wed", "thu",
                                         "fri", "sat", NULL};

static const cron_field_t cron_fields[5] = {
    {"minute", 0, 59, NULL},
    {"hour", 0, 23, NULL},
    {"day of month", 1, 31, NULL},
    {"month", 1, 12, month_names},
    {"day of week", 0, 7, wday_names},
};

/* Parses a number or a name at *s; advances *s. -1 when there is none. */
static int cron_value(const cron_field_t *f, const char **s)
{
    const char *p = *s;
    if (isdigit((unsigned char)*p)) {
        int v = 0;
        while (isdigit((unsigned char)*p) && v < 1000)
            v = v * 10 + (*p++ - '0');
        *s = p;
        return v;
    }
    for (int i = 0; f->names && f->names[i]; i++) {
        if (strncasecmp(p, f->names[i], 3) == 0 &&
            !isalpha((unsigned char)p[3])) {
            *s = p + 3;
            return f->lo + i;
        }
    }
    return -1;
}

/* One field (text [s, e)) into bits. Returns 0 or -1 with err set. */
static int cron_parse_field(const cron_field_t *f, int idx, const char *s,
                            const char *e, uint64_t *bits, char *err,
                            size_t errlen)
{
    char text[64];
    snprintf(text, sizeof(text), "%.*s", (int)(e - s), s);
    *bits = 0;
    const char *p = text;
    for (;;) {
        int a, b, step = 1;
        bool star = false;
        if (*p == '*') {
            star = true;
            a = f->lo;
            b = f->hi;
            p++;
        } else {
            a = cron_value(f, &p);
            if (a < 0)
                goto bad;
            b = a;
            if (*p == '-') {
                p++;
                b = cron_value(f, &p);
                if (b < 0)
                    goto bad;
            }
        }
        if (*p == '/') {
            p++;
            const char *q = p;
            step = cron_value(&(cron_field_t){"", 0, 0, NULL}, &p);
            if (step <= 0 || p == q) {
                snprintf(err, errlen, "field %d (%s): bad step in \"%s\"",
                         idx + 1, f->what, text);
                return -1;
            }
            if (!star && a == b)
                b = f->hi; /* N/S: from N to the end */
        }
        if (a < f->lo || b > f->hi || a > b) {
            snprintf(err, errlen, "field %d (%s): \"%s\" is out of range "
                     "%d..%d", idx + 1, f->what, text, f->lo, f->hi);
            return -1;
        }
        for (int v = a; v <= b; v += step)
            *bits |= 1ULL << v;
        if (*p == '\0')
            return 0;
        if (*p != ',')
            goto bad;
        p++;
    }
bad:
    snprintf(err, errlen, "field %d (%s): cannot read \"%s\": use *, N, "
             "A-B, lists with ',' and steps with '/'%s", idx + 1, f->what,
             text, f->names ? " (or names like jan, mon)" : "");
    return -1;
}

int tf_cron_parse(const char *spec, tf_cron_t *out, char *err, size_t errlen)
{
    const char *p = spec;
    uint64_t bits[5];
    bool star[5];
    int n = 0;
    memset(out, 0, sizeof(*out));
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ' ' && *e != '\t')
            e++;
        if (n == 5) {
            n++;
            break;
        }
        if (e - p > 60) {
            snprintf(err, errlen, "field %d (%s) is too long", n + 1,
                     cron_fields[n].what);
            return TF_EINVAL;
        }
        star[n] = *p == '*';
        if (cron_parse_field(&cron_fields[n], n, p, e, &bits[n], err,
                             errlen) != 0)
            return TF_EINVAL;
        n++;
        p = e;
    }
    if (n != 5) {
        snprintf(err, errlen, "expected 5 fields \"MINUTE HOUR DAY-OF-MONTH "
                 "MONTH DAY-OF-WEEK\" (UTC), e.g. \"0 3 * * *\"; got %s",
                 n > 5 ? "more" : "fewer");
        return TF_EINVAL;
    }
    out->minutes = bits[0];
    out->hours = (uint32_t)bits[1];
    out->mdays = (uint32_t)bits[2];
    out->months = (uint32_t)bits[3];
    out->wdays = (uint32_t)(bits[4] & 0x7f) | ((bits[4] >> 7) & 1); /* 7=0 */
    out->mday_star = star[2];
    out->wday_star = star[4];
    return 0;
}

static bool cron_day_ok(const tf_cron_t *c, const struct tm *tm)
{
    bool dom = (c->mdays >> tm->tm_mday) & 1;
    bool dow = (c->wdays >> tm->tm_wday) & 1;
    if (c->mday_star || c->wday_star)
        return dom && dow;
    return dom || dow;
}

int64_t tf_cron_next(const tf_cron_t *c, int64_t after_ms)
{
    if (after_ms < 0)
        after_ms = -60000;
    time_t t = (time_t)((after_ms / 60000 + 1) * 60);
    int64_t limit = after_ms + CRON_HORIZON_MS;
    struct tm tm;
    while ((int64_t)t * 1000 <= limit) {
        if (!gmtime_r(&t, &tm))
            return -1;
        if (!((c->months >> (tm.tm_mon + 1)) & 1)) {
            tm.tm_mon++;
            tm.tm_mday = 1;
            tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        } else if (!cron_day_ok(c, &tm)) {
            tm.tm_mday++;
            tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        } else if (!((c->hours >> tm.tm_hour) & 1)) {
            tm.tm_hour++;
            tm.tm_min = tm.tm_sec = 0;
        } else if (!((c->minutes >> tm.tm_min) & 1)) {
            tm.tm_min++;
            tm.tm_sec = 0;
        } else {
            return (int64_t)t * 1000;
        }
        t = timegm(&tm);
    }
    return -1;
}
