/*
 * modifiers.c - command modifiers: a line splitter per stream feeding a
 * fixed set of matchers (see modifiers.h for the rules).
 *
 * Each stream is matched on its own and keeps its own results (info
 * pieces, stats, the first line fail_if matched); tf_mods_finish combines
 * them as if all of stdout's lines had come first and then stderr's. How
 * the two pipes' reads interleave depends on scheduling, so nothing may
 * depend on it: this way it does not.
 *
 * Everything a step can make us hold has a cap fixed when the matcher is
 * created: per stream a line buffer of TF_MODS_LINE_MAX + 1 bytes
 * (allocated on the first byte of the stream), an info buffer of
 * TF_PROTO_MAX_INFO_TEXT bytes, TF_PROTO_MAX_STATS stats and one excerpt
 * of the line fail_if matched. Output past those caps is still matched
 * (counts keep counting) but adds nothing to hold.
 *
 * Lines (docs/protocol.md, "Command modifiers"): a line ends at "\n", and
 * a "\r" right before that "\n" belongs to the line end; any other "\r"
 * is content, an unterminated last line's included. A '\r' is therefore
 * held back (cr_held) until the next byte says which it is. A line whose
 * content passes TF_MODS_LINE_MAX bytes is matched in pieces of that
 * size: a piece goes out only when the byte after it arrives, so a line
 * of exactly TF_MODS_LINE_MAX bytes is one line, whatever ends it and
 * however the reads fall.
 */
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modifiers.h"
#include "names.h"
#include "tf_err.h"
#include "utf8.h"

#define TF__EXCERPT_MAX 120 /* bytes of the fail_if line quoted in a note */
#define TF__NUM_MAX 64      /* longest number text we parse */

/* What one stream's lines yielded so far. */
typedef struct tf__found {
    char info[TF_PROTO_MAX_INFO_TEXT + 1];
    size_t info_len;
    bool info_full;
    tf_stat_t stats[TF_PROTO_MAX_STATS];
    size_t nstats;
    bool fail_matched;
    char fail_excerpt[TF__EXCERPT_MAX + 1];
} tf__found_t;

typedef struct tf__stream {
    uint8_t *buf;   /* TF_MODS_LINE_MAX + 1 bytes, or NULL before use */
    size_t len;     /* content of the current line held, <= LINE_MAX */
    bool cr_held;   /* a '\r' arrived last and is not placed yet */
    bool pieces;    /* the current line already went out in a piece */
    bool counted;   /* the current line counted as a warning: a long line
                     * is one line, however many pieces match */
    tf__found_t found;
} tf__stream_t;

typedef struct tf__stat_rx {
    regex_t re;
    char *name;     /* NULL: capture 1 is the name, capture 2 the value */
} tf__stat_rx_t;

struct tf_mods {
    bool markers;
    regex_t *info_re;
    size_t ninfo;
    tf__stat_rx_t *stats;
    size_t nstats;
    regex_t pass_if, fail_if, warn;
    bool has_pass, has_fail, has_warn;
    uint32_t warn_max;
    bool finished;

    tf__stream_t streams[2];
    bool pass_matched;
    uint64_t warnings;
    tf__found_t all;   /* the streams combined, set by tf_mods_finish */
};

/* ---- matching one line ------------------------------------------------ */

/* Runs re over line[0..len). With REG_STARTEND the line may hold NUL
 * bytes; without it the line is NUL-terminated by the caller and ends, for
 * the matcher, at its first NUL. */
static bool tf__match(const regex_t *re, const uint8_t *line, size_t len,
                      regmatch_t *pm, size_t npm)
{
    regmatch_t whole;
    if (!pm) {
        pm = &whole;
        npm = 1;
    }
#ifdef REG_STARTEND
    pm[0].rm_so = 0;
    pm[0].rm_eo = (regoff_t)len;
    return regexec(re, (const char *)line, npm, pm, REG_STARTEND) == 0;
#else
    (void)len;
    return regexec(re, (const char *)line, npm, pm, 0) == 0;
#endif
}

/* Copies src[0..n) into dst (room bytes, NUL included) as valid UTF-8:
 * invalid bytes and control characters other than tab become U+FFFD.
 * Stops before a sequence that would not fit. Returns the bytes written
 * (without the NUL) and sets *all when everything fit. */
static size_t tf__sanitize(char *dst, size_t room, const uint8_t *src,
                           size_t n, bool *all)
{
    static const char repl[] = "\xef\xbf\xbd";
    size_t o = 0, i = 0;
    *all = false;
    if (room == 0)
        return 0;
    while (i < n) {
        size_t l = tf_utf8_len(src + i, n - i);
        bool bad = l == 0 || (l == 1 && ((src[i] < 0x20 && src[i] != '\t') ||
                                         src[i] == 0x7f));
        const char *piece = bad ? repl : (const char *)src + i;
        size_t plen = bad ? 3 : l;
        if (o + plen >= room)
            break;
        memcpy(dst + o, piece, plen);
        o += plen;
        i += bad ? (l ? l : 1) : l;
    }
    dst[o] = '\0';
    *all = i == n;
    return o;
}

/* Adds a piece of info text, on its own line after what is there. A
 * piece of which not even one character fits adds nothing, not even its
 * separator; after a piece that did not fit whole nothing more is added. */
static void tf__info_add(tf__found_t *f, const uint8_t *p, size_t n)
{
    bool all;
    if (f->info_full || n == 0)
        return;
    size_t room = sizeof f->info - f->info_len;
    size_t sep = f->info_len ? 1 : 0;
    if (room <= sep + 1) {
        f->info_full = true;
        return;
    }
    size_t got = tf__sanitize(f->info + f->info_len + sep, room - sep, p, n,
                              &all);
    if (got) {
        if (sep)
            f->info[f->info_len] = '\n';
        f->info_len += sep + got;
    }
    f->info[f->info_len] = '\0';
    if (!all)
        f->info_full = true;
}

static bool tf__is_space(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* Parses a whole decimal number ("12", "-3.5", "1e6", ".5"), spaces around
 * it allowed; no hex, inf or nan. Returns false when s[0..n) is not one. */
static bool tf__number(const uint8_t *s, size_t n, double *out)
{
    char buf[TF__NUM_MAX + 1];
    size_t i = 0, digits = 0;
    while (n && tf__is_space(s[0])) {
        s++;
        n--;
    }
    while (n && tf__is_space(s[n - 1]))
        n--;
    if (n == 0 || n > TF__NUM_MAX)
        return false;
    if (s[i] == '+' || s[i] == '-')
        i++;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
        digits++;
    if (i < n && s[i] == '.') {
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            digits++;
    }
    if (digits == 0)
        return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t e = ++i;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            e = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == e)
            return false;
    }
    if (i != n)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    double v = strtod(buf, &end);
    if (end != buf + n || !isfinite(v)) /* 1e999 overflows to inf */
        return false;
    *out = v;
    return true;
}

/* Records stat name = value (the last value of a name wins). A name that
 * is not valid, or a new one past the cap, is dropped. */
static void tf__stat_set(tf__found_t *f, const uint8_t *name, size_t nlen,
                         double value)
{
    char nm[TF_NAME_MAX + 1];
    if (nlen == 0 || nlen > TF_NAME_MAX)
        return;
    memcpy(nm, name, nlen);
    nm[nlen] = '\0';
    if (!tf_name_valid(nm))
        return;
    for (size_t i = 0; i < f->nstats; i++) {
        if (strcmp(f->stats[i].name, nm) == 0) {
            f->stats[i].value = value;
            return;
        }
    }
    if (f->nstats == TF_PROTO_MAX_STATS)
        return;
    snprintf(f->stats[f->nstats].name, sizeof f->stats[f->nstats].name, "%s",
             nm);
    f->stats[f->nstats].value = value;
    f->nstats++;
}

/* Handles "@@@TF_STAT name=value@@@" and "@@@TF_INFO text@@@": the whole
 * line, spaces around it aside. Anything else is left alone. */
static void tf__marker(tf__found_t *f, const uint8_t *p, size_t n)
{
    const size_t kl = sizeof TF_MODS_MARK_STAT - 1; /* both are as long */
    const size_t el = sizeof TF_MODS_MARK_END - 1;
    while (n && tf__is_space(p[0])) {
        p++;
        n--;
    }
    while (n && tf__is_space(p[n - 1]))
        n--;
    if (n < kl + el + 1 || memcmp(p + n - el, TF_MODS_MARK_END, el) != 0 ||
        !tf__is_space(p[kl]))
        return;
    bool stat = memcmp(p, TF_MODS_MARK_STAT, kl) == 0;
    bool info = memcmp(p, TF_MODS_MARK_INFO, kl) == 0;
    if (!stat && !info)
        return;
    const uint8_t *body = p + kl;
    size_t blen = n - kl - el;
    while (blen && tf__is_space(body[0])) {
        body++;
        blen--;
    }
    while (blen && tf__is_space(body[blen - 1]))
        blen--;
    if (info) {
        tf__info_add(f, body, blen);
        return;
    }
    const uint8_t *eq = memchr(body, '=', blen);
    double v;
    if (!eq)
        return;
    size_t nlen = (size_t)(eq - body);
    while (nlen && tf__is_space(body[nlen - 1]))
        nlen--;
    if (tf__number(eq + 1, blen - (size_t)(eq + 1 - body), &v))
        tf__stat_set(f, body, nlen, v);
}

/* The text of capture g of a match, or the whole match when the group is
 * absent or did not take part. */
static void tf__capture(const regmatch_t *pm, size_t g, const uint8_t *line,
                        const uint8_t **p, size_t *n)
{
    const regmatch_t *m = pm[g].rm_so >= 0 ? &pm[g] : &pm[0];
    *p = line + m->rm_so;
    *n = (size_t)(m->rm_eo - m->rm_so);
}

/* Matches one line (or a piece of a long one) of stream sb, which the
 * caller NUL-terminated at line[len]. */
static void tf__line(tf_mods_t *x, tf__stream_t *sb, const uint8_t *line,
                     size_t len)
{
    tf__found_t *f = &sb->found;
    regmatch_t pm[3];
    const uint8_t *p;
    size_t n;

    if (x->markers)
        tf__marker(f, line, len);
    for (size_t i = 0; i < x->ninfo; i++) {
        if (f->info_full)
            break;
        memset(pm, -1, sizeof pm);
        if (!tf__match(&x->info_re[i], line, len, pm, 2))
            continue;
        tf__capture(pm, x->info_re[i].re_nsub >= 1 ? 1 : 0, line, &p, &n);
        tf__info_add(f, p, n);
        break; /* one piece per line */
    }
    for (size_t i = 0; i < x->nstats; i++) {
        const tf__stat_rx_t *s = &x->stats[i];
        double v;
        memset(pm, -1, sizeof pm);
        if (!tf__match(&s->re, line, len, pm, 3))
            continue;
        if (s->name) {
            tf__capture(pm, s->re.re_nsub >= 1 ? 1 : 0, line, &p, &n);
            if (tf__number(p, n, &v))
                tf__stat_set(f, (const uint8_t *)s->name, strlen(s->name), v);
        } else if (pm[1].rm_so >= 0 && pm[2].rm_so >= 0) {
            tf__capture(pm, 2, line, &p, &n);
            if (tf__number(p, n, &v))
                tf__stat_set(f, line + pm[1].rm_so,
                             (size_t)(pm[1].rm_eo - pm[1].rm_so), v);
        }
    }
    if (x->has_pass && !x->pass_matched)
        x->pass_matched = tf__match(&x->pass_if, line, len, NULL, 0);
    if (x->has_fail && !f->fail_matched &&
        tf__match(&x->fail_if, line, len, NULL, 0)) {
        bool all;
        f->fail_matched = true;
        /* Whole characters only: the excerpt ends before a character that
         * would pass TF__EXCERPT_MAX bytes. */
        tf__sanitize(f->fail_excerpt, sizeof f->fail_excerpt, line, len,
                     &all);
    }
    if (x->has_warn && !sb->counted &&
        tf__match(&x->warn, line, len, NULL, 0)) {
        x->warnings++;
        sb->counted = true;
    }
}

/* Hands the held content to the matchers: a whole line (line_ends) or a
 * piece of a long one. */
static void tf__flush(tf_mods_t *x, tf__stream_t *sb, bool line_ends)
{
    sb->buf[sb->len] = '\0';
    tf__line(x, sb, sb->buf, sb->len);
    sb->len = 0;
    sb->pieces = !line_ends;
    if (line_ends)
        sb->counted = false;
}

/* Appends one content byte, sending the held piece out first when the
 * line already fills the buffer. */
static void tf__put(tf_mods_t *x, tf__stream_t *sb, uint8_t c)
{
    if (sb->len == TF_MODS_LINE_MAX)
        tf__flush(x, sb, false);
    sb->buf[sb->len++] = c;
}

/* The current line ends (at "\n" or at the end of the stream). A line
 * that was cut and whose last piece already went out makes no empty
 * piece of its own. */
static void tf__line_end(tf_mods_t *x, tf__stream_t *sb)
{
    if (sb->len > 0 || !sb->pieces)
        tf__flush(x, sb, true);
    sb->pieces = false;
    sb->counted = false;
}

void tf_mods_feed(tf_mods_t *x, tf_stream_t stream, const uint8_t *data,
                  size_t n)
{
    if (!x || x->finished || n == 0 ||
        (stream != TF_STREAM_STDOUT && stream != TF_STREAM_STDERR))
        return;
    tf__stream_t *sb = &x->streams[stream == TF_STREAM_STDOUT ? 0 : 1];
    if (!sb->buf && !(sb->buf = malloc(TF_MODS_LINE_MAX + 1)))
        return; /* no memory: this stream goes unmatched */
    const uint8_t *end = data + n;
    const uint8_t *cr = NULL; /* the next '\r' at or after data, or end */
    while (data < end) {
        if (sb->cr_held) {
            sb->cr_held = false;
            if (*data == '\n') {
                data++;
                tf__line_end(x, sb); /* "\r\n": the '\r' ends the line too */
                continue;
            }
            tf__put(x, sb, '\r');
        }
        /* Copy a run of plain bytes at once; stop at '\r' or '\n'. The
         * searches are memchr's (a byte loop here was most of the slave's
         * CPU on a step streaming output); '\r' is rare, so its search
         * runs once per read unless one is found. */
        if (!cr || cr < data) {
            cr = memchr(data, '\r', (size_t)(end - data));
            if (!cr)
                cr = end;
        }
        const uint8_t *p = memchr(data, '\n', (size_t)(cr - data));
        if (!p)
            p = cr;
        while (data < p) {
            size_t room = TF_MODS_LINE_MAX - sb->len;
            if (room == 0) {
                tf__flush(x, sb, false);
                room = TF_MODS_LINE_MAX;
            }
            size_t take = (size_t)(p - data) < room ? (size_t)(p - data)
                                                    : room;
            memcpy(sb->buf + sb->len, data, take);
            sb->len += take;
            data += take;
        }
        if (data == end)
            break;
        if (*data == '\r')
            sb->cr_held = true;
        else
            tf__line_end(x, sb);
        data++;
    }
}

/* Adds the stats of from to into, as if from's lines came after into's:
 * a name both have takes from's value; new names are added while there is
 * room. */
static void tf__stats_merge(tf__found_t *into, const tf__found_t *from)
{
    for (size_t i = 0; i < from->nstats; i++)
        tf__stat_set(into, (const uint8_t *)from->stats[i].name,
                     strlen(from->stats[i].name), from->stats[i].value);
}

/* Adds the info pieces of from after into's. Pieces never hold a '\n'
 * (it is a control character, shown as U+FFFD), so from's text splits
 * back into them; from's own cap cut nothing that the combined text can
 * still hold. */
static void tf__info_merge(tf__found_t *into, const tf__found_t *from)
{
    const char *p = from->info, *end = from->info + from->info_len;
    while (p < end && !into->info_full) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        tf__info_add(into, (const uint8_t *)p, (size_t)(e - p));
        p = e + 1;
    }
}

void tf_mods_finish(tf_mods_t *x)
{
    if (!x || x->finished)
        return;
    for (int i = 0; i < 2; i++) {
        tf__stream_t *sb = &x->streams[i];
        if (!sb->buf)
            continue;
        if (sb->cr_held) {
            sb->cr_held = false;
            tf__put(x, sb, '\r'); /* no "\n" follows: it is content */
        }
        if (sb->len > 0)
            tf__line_end(x, sb);
    }
    x->finished = true;
    /* stdout first, then stderr: never the order the reads came in. */
    x->all = x->streams[0].found;
    const tf__found_t *err = &x->streams[1].found;
    tf__info_merge(&x->all, err);
    tf__stats_merge(&x->all, err);
    if (!x->all.fail_matched && err->fail_matched) {
        x->all.fail_matched = true;
        memcpy(x->all.fail_excerpt, err->fail_excerpt,
               sizeof x->all.fail_excerpt);
    }
}

/* ---- results ---------------------------------------------------------- */

/* Writes s into out[outlen] with backslashes and '"' escaped by a
 * backslash, so a quoted excerpt says unambiguously where it ends. */
static void tf__escape(char *out, size_t outlen, const char *s)
{
    size_t o = 0;
    for (; *s && o + 2 < outlen; s++) {
        if (*s == '\\' || *s == '"')
            out[o++] = '\\';
        out[o++] = *s;
    }
    out[o] = '\0';
}

tf_result_t tf_mods_verdict(const tf_mods_t *x, tf_result_t result,
                            bool exited, char *note, size_t notelen)
{
    char quoted[2 * TF__EXCERPT_MAX + 1];
    tf_result_t verdict = result;
    if (notelen)
        note[0] = '\0';
    if (!x)
        return result;
    /* A rule says why only when it changed the result. */
    if (exited && x->has_fail && x->all.fail_matched) {
        verdict = TF_FAILURE;
        tf__escape(quoted, sizeof quoted, x->all.fail_excerpt);
        if (verdict != result)
            snprintf(note, notelen, "fail_if matched \"%s\"", quoted);
    } else if (exited && x->has_pass) {
        verdict = x->pass_matched ? TF_SUCCESS : TF_FAILURE;
        if (verdict != result)
            snprintf(note, notelen, "pass_if %s",
                     x->pass_matched ? "matched" : "did not match");
    }
    if (verdict == TF_SUCCESS && x->has_warn && x->warnings > x->warn_max) {
        size_t used = strlen(note);
        snprintf(note + used, notelen - used, "%s%llu warning%s%s",
                 used ? "; " : "", (unsigned long long)x->warnings,
                 x->warnings == 1 ? "" : "s", x->warn_max ? " (over max)" : "");
        return TF_WARNINGS;
    }
    return verdict;
}

const char *tf_mods_info(const tf_mods_t *x)
{
    return x && x->all.info_len ? x->all.info : NULL;
}

const tf_stat_t *tf_mods_stats(const tf_mods_t *x, size_t *n)
{
    *n = x ? x->all.nstats : 0;
    return x && x->all.nstats ? x->all.stats : NULL;
}

bool tf_mods_warnings(const tf_mods_t *x, uint64_t *count)
{
    *count = x ? x->warnings : 0;
    return x && x->has_warn;
}

/* ---- life --------------------------------------------------------------- */

/* Compiles one regex; on failure writes "what: ..." into err. */
static int tf__compile(regex_t *re, const char *src, int flags,
                       const char *what, char *err, size_t errlen)
{
    int rc = regcomp(re, src, REG_EXTENDED | flags);
    if (rc == 0)
        return 0;
    if (rc == REG_ESPACE)
        return TF_ENOMEM;
    char why[160];
    regerror(rc, re, why, sizeof why);
    snprintf(err, errlen, "%s: invalid regular expression \"%.200s\": %s",
             what, src, why);
    return TF_EINVAL;
}

int tf_mods_new(const tf_modifiers_t *spec, tf_mods_t **out, char *err,
                size_t errlen)
{
    char what[64];
    int rc = TF_ENOMEM;
    tf_mods_t *x;

    *out = NULL;
    if (errlen)
        err[0] = '\0';
    if (!(x = calloc(1, sizeof *x)))
        return TF_ENOMEM;
    x->markers = spec->markers;
    x->warn_max = spec->warnings_max;
    if ((spec->ninfo && !(x->info_re = calloc(spec->ninfo, sizeof *x->info_re))) ||
        (spec->nstats && !(x->stats = calloc(spec->nstats, sizeof *x->stats))))
        goto out;
    for (size_t i = 0; i < spec->ninfo; i++, x->ninfo++) {
        snprintf(what, sizeof what, "info[%zu]", i);
        if ((rc = tf__compile(&x->info_re[i], spec->info[i], 0, what, err,
                              errlen)))
            goto out;
    }
    for (size_t i = 0; i < spec->nstats; i++) {
        tf__stat_rx_t *s = &x->stats[i];
        snprintf(what, sizeof what, "stats[%zu]", i);
        if ((rc = tf__compile(&s->re, spec->stats[i].regex, 0, what, err,
                              errlen)))
            goto out;
        x->nstats++;
        if (spec->stats[i].name && !(s->name = strdup(spec->stats[i].name))) {
            rc = TF_ENOMEM;
            goto out;
        }
        if (!s->name && s->re.re_nsub < 2) {
            snprintf(err, errlen, "%s: a stats rule without a name needs "
                     "two groups in its regex (the name, then the value)",
                     what);
            rc = TF_EINVAL;
            goto out;
        }
    }
    struct {
        const char *src;
        regex_t *re;
        bool *has;
        const char *what;
    } one[] = {
        {spec->pass_if, &x->pass_if, &x->has_pass, "success.pass_if"},
        {spec->fail_if, &x->fail_if, &x->has_fail, "success.fail_if"},
        {spec->warnings, &x->warn, &x->has_warn, "warnings.regex"},
    };
    for (size_t i = 0; i < sizeof one / sizeof one[0]; i++) {
        if (!one[i].src)
            continue;
        if ((rc = tf__compile(one[i].re, one[i].src, REG_NOSUB, one[i].what,
                              err, errlen)))
            goto out;
        *one[i].has = true;
    }
    *out = x;
    x = NULL;
    rc = 0;
out:
    tf_mods_free(x);
    return rc;
}

void tf_mods_free(tf_mods_t *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->ninfo; i++)
        regfree(&x->info_re[i]);
    free(x->info_re);
    for (size_t i = 0; i < x->nstats; i++) {
        regfree(&x->stats[i].re);
        free(x->stats[i].name);
    }
    free(x->stats);
    if (x->has_pass)
        regfree(&x->pass_if);
    if (x->has_fail)
        regfree(&x->fail_if);
    if (x->has_warn)
        regfree(&x->warn);
    free(x->streams[0].buf);
    free(x->streams[1].buf);
    free(x);
}
