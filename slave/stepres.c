/*
 * stepres.c - a step's test results on the slave (see stepres.h).
 *
 * Output feeds the console parser read by read, so nothing of the log is
 * held here; the collector keeps the merged results until the step ends,
 * because a later attempt (a rerun) can still turn a failure into a flaky
 * test. Then report files are read and everything leaves as a series of
 * test_results events, each spooled and acknowledged like any other event
 * (slave.c), so results survive a dropped link or a master restart exactly
 * as output does.
 *
 * File access never follows a symbolic link: directories are opened one
 * component at a time with openat(O_DIRECTORY | O_NOFOLLOW) starting from
 * the builder's workdir, and files with O_NOFOLLOW, then checked to be
 * regular files within the caps before a byte is read.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "stepres.h"
#include "tf_err.h"

struct tf_stepres {
    tf_test_spec_t *spec;
    tf_tr_collect_t *col;
    tf_tr_console_t *con; /* NULL when only files are read */
    uint64_t bytes_read;
    char **matches;       /* report files found, relative to the step */
    size_t nmatches;
    size_t visited;
    bool visit_capped;
    bool matches_capped;
};

int tf_stepres_new(const tf_test_spec_t *spec, tf_stepres_t **out)
{
    tf_stepres_t *x = calloc(1, sizeof *x);
    int rc = TF_ENOMEM;
    *out = NULL;
    if (!x)
        return TF_ENOMEM;
    if (tf_test_spec_copy(&x->spec, spec) || !x->spec ||
        tf_tr_collect_new(&x->col))
        goto out;
    /* TAP is read from files when files are given, else from the
     * output; automake reads both (lines, then its logs). */
    bool console = tf_tr_format_console(spec->format) &&
                   !(spec->format == TF_TR_FMT_TAP && spec->nfiles);
    if (console && (rc = tf_tr_console_new(spec->format, tf_tr_collect_add,
                                           x->col, &x->con)))
        goto out;
    *out = x;
    x = NULL;
    rc = 0;
out:
    tf_stepres_free(x);
    return rc;
}

void tf_stepres_free(tf_stepres_t *x)
{
    if (!x)
        return;
    tf_test_spec_free(x->spec);
    tf_tr_collect_free(x->col);
    tf_tr_console_free(x->con);
    for (size_t i = 0; i < x->nmatches; i++)
        free(x->matches[i]);
    free(x->matches);
    free(x);
}

void tf_stepres_feed(tf_stepres_t *x, tf_stream_t stream,
                     const uint8_t *data, size_t n)
{
    if (x && x->con)
        tf_tr_console_feed(x->con, (int)stream, data, n);
}

const tf_tr_collect_t *tf_stepres_collected(const tf_stepres_t *x)
{
    return x ? x->col : NULL;
}

/* ---- paths --------------------------------------------------------------- */

/* Opens the directory rel (components separated by '/', "" = base itself)
 * below base without following links. Returns an fd or -errno. */
static int tf__open_dir(int base, const char *rel)
{
    int fd = openat(base, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    char comp[NAME_MAX + 1];
    if (fd < 0)
        return -errno;
    for (const char *p = rel; *p;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || n > NAME_MAX) {
            close(fd);
            return -EINVAL;
        }
        memcpy(comp, p, n);
        comp[n] = '\0';
        if (strcmp(comp, ".") == 0 || strcmp(comp, "..") == 0) {
            close(fd);
            return -EINVAL;
        }
        int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                        O_CLOEXEC);
        int err = errno;
        close(fd);
        if (next < 0)
            return -err;
        fd = next;
        p += n;
        if (*p == '/')
            p++;
    }
    return fd;
}

static bool tf__has_magic(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

/* What kind of entry name is in dir, without following links. */
static int tf__entry_type(int dir, const struct dirent *de)
{
    struct stat st;
    if (de->d_type != DT_UNKNOWN)
        return de->d_type;
    if (fstatat(dir, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return DT_UNKNOWN;
    return S_ISDIR(st.st_mode) ? DT_DIR : S_ISLNK(st.st_mode) ? DT_LNK
                                     : S_ISREG(st.st_mode) ? DT_REG
                                                           : DT_UNKNOWN;
}

static void tf__add_match(tf_stepres_t *x, const char *rel)
{
    for (size_t i = 0; i < x->nmatches; i++)
        if (strcmp(x->matches[i], rel) == 0)
            return;
    if (x->nmatches >= TF_STEPRES_MAX_MATCHES) {
        if (!x->matches_capped)
            tf_tr_collect_problem(x->col, "more than %d report files "
                                  "matched: the rest were not read",
                                  TF_STEPRES_MAX_MATCHES);
        x->matches_capped = true;
        return;
    }
    char **m = realloc(x->matches, (x->nmatches + 1) * sizeof *m);
    if (!m)
        return;
    x->matches = m;
    if ((m[x->nmatches] = strdup(rel)))
        x->nmatches++;
}

typedef struct {
    tf_stepres_t *x;
    char **comps;
    size_t ncomps;
    size_t found;
} tf__walk_t;

static void tf__walk(tf__walk_t *w, int dir, const char *rel, size_t ci,
                     int depth);

static void tf__walk_entry(tf__walk_t *w, int dir, const char *rel,
                           const char *name, int type, size_t ci, int depth)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s%s%s", rel, *rel ? "/" : "",
                     name);
    if (n < 0 || (size_t)n >= sizeof path)
        return;
    bool last = ci + 1 == w->ncomps;
    if (type == DT_LNK) {
        /* Named by the glob (under "**" links are skipped silently). */
        tf_tr_collect_problem(w->x->col, "%s: a symbolic link: not followed",
                              path);
        return;
    }
    if (last) {
        if (type == DT_REG) {
            tf__add_match(w->x, path);
            w->found++;
        }
        return;
    }
    if (type != DT_DIR)
        return;
    int sub = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                    O_CLOEXEC);
    if (sub < 0)
        return;
    tf__walk(w, sub, path, ci + 1, depth + 1);
    close(sub);
}

/* Matches comps[ci..] in dir (rel names it, relative to the step). */
static void tf__walk(tf__walk_t *w, int dir, const char *rel, size_t ci,
                     int depth)
{
    tf_stepres_t *x = w->x;
    if (ci >= w->ncomps || depth > TF_STEPRES_MAX_DEPTH || x->visit_capped)
        return;
    const char *comp = w->comps[ci];
    bool stars = strcmp(comp, "**") == 0;
    if (stars) {
        /* "**" matches no directory at all, too. */
        tf__walk(w, dir, rel, ci + 1, depth);
    } else if (!tf__has_magic(comp)) {
        /* A plain name: look it up without listing the directory. */
        struct stat st;
        if (fstatat(dir, comp, &st, AT_SYMLINK_NOFOLLOW) != 0)
            return;
        int type = S_ISLNK(st.st_mode) ? DT_LNK : S_ISDIR(st.st_mode) ? DT_DIR
                   : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
        tf__walk_entry(w, dir, rel, comp, type, ci, depth);
        return;
    }
    int dup = openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dup >= 0 ? fdopendir(dup) : NULL;
    if (!d) {
        if (dup >= 0)
            close(dup);
        return;
    }
    /* Names are sorted so results come in a stable order. */
    char **names = NULL;
    int *types = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (++x->visited > TF_STEPRES_MAX_VISIT) {
            x->visit_capped = true;
            tf_tr_collect_problem(x->col, "stopped looking for report files "
                                  "after %d directory entries",
                                  TF_STEPRES_MAX_VISIT);
            break;
        }
        bool want = stars ? de->d_name[0] != '.'
                          : tf_tr_glob_match(comp, de->d_name);
        if (!want)
            continue;
        int type = tf__entry_type(dirfd(d), de);
        if (stars && type != DT_DIR)
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nn = realloc(names, nc * sizeof *nn);
            int *nt = nn ? realloc(types, nc * sizeof *nt) : NULL;
            if (nn)
                names = nn;
            if (!nn || !nt)
                break;
            types = nt;
            cap = nc;
        }
        if (!(names[n] = strdup(de->d_name)))
            break;
        types[n++] = type;
    }
    for (size_t i = 1; i < n; i++)
        for (size_t k = i; k > 0 && strcmp(names[k - 1], names[k]) > 0; k--) {
            char *t = names[k];
            names[k] = names[k - 1];
            names[k - 1] = t;
            int tt = types[k];
            types[k] = types[k - 1];
            types[k - 1] = tt;
        }
    for (size_t i = 0; i < n; i++) {
        if (stars) {
            /* Down one directory, still matching "**". */
            char path[PATH_MAX];
            int len = snprintf(path, sizeof path, "%s%s%s", rel,
                               *rel ? "/" : "", names[i]);
            int sub = openat(dirfd(d), names[i], O_RDONLY | O_DIRECTORY |
                                                     O_NOFOLLOW | O_CLOEXEC);
            if (len > 0 && (size_t)len < sizeof path && sub >= 0)
                tf__walk(w, sub, path, ci, depth + 1);
            if (sub >= 0)
                close(sub);
        } else {
            tf__walk_entry(w, dirfd(d), rel, names[i], types[i], ci, depth);
        }
        free(names[i]);
    }
    free(names);
    free(types);
    closedir(d);
}

/* Finds the files glob matches below the step's directory. */
static void tf__glob(tf_stepres_t *x, int stepfd, const char *glob)
{
    char *copy = strdup(glob);
    char *comps[TF_TR_MAX_GLOB];
    size_t nc = 0;
    if (!copy)
        return;
    for (char *save = NULL, *c = strtok_r(copy, "/", &save); c && nc <
         TF_TR_MAX_GLOB; c = strtok_r(NULL, "/", &save))
        comps[nc++] = c;
    tf__walk_t w = {.x = x, .comps = comps, .ncomps = nc};
    if (nc)
        tf__walk(&w, stepfd, "", 0, 0);
    if (w.found == 0)
        tf_tr_collect_problem(x->col, "%s: no file matched", glob);
    free(copy);
}

/* Reads base/rel (no links followed) into a malloc'd buffer within the
 * caps. Returns 0, or a negative code with the reason in why. */
static int tf__read_rel(tf_stepres_t *x, int base, const char *rel,
                        char **out, size_t *len, char *why, size_t whylen)
{
    char dirpart[PATH_MAX];
    const char *slash = strrchr(rel, '/');
    const char *name = slash ? slash + 1 : rel;
    int rc = 0, dir = -1, fd = -1;
    char *buf = NULL;
    struct stat st;
    *out = NULL;
    snprintf(dirpart, sizeof dirpart, "%.*s",
             slash ? (int)(slash - rel) : 0, rel);
    dir = tf__open_dir(base, dirpart);
    if (dir < 0) {
        snprintf(why, whylen, "%s", dir == -ELOOP || dir == -ENOTDIR
                                        ? "a symbolic link in its path: not "
                                          "followed"
                                        : strerror(-dir));
        return dir;
    }
    fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        snprintf(why, whylen, "%s", errno == ELOOP ? "a symbolic link: not "
                                                     "followed"
                                                   : strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "not a regular file");
        rc = TF_EINVAL;
        goto out;
    }
    if ((uint64_t)st.st_size > TF_STEPRES_FILE_MAX) {
        snprintf(why, whylen, "%lld bytes is over the %u-byte cap for a "
                 "report file: not read", (long long)st.st_size,
                 TF_STEPRES_FILE_MAX);
        rc = TF_E2BIG;
        goto out;
    }
    if (x->bytes_read + (uint64_t)st.st_size > TF_STEPRES_TOTAL_MAX) {
        snprintf(why, whylen, "over the %u-byte cap for all of a step's "
                 "report files: not read", TF_STEPRES_TOTAL_MAX);
        rc = TF_E2BIG;
        goto out;
    }
    size_t want = (size_t)st.st_size, got = 0;
    if (!(buf = malloc(want + 1))) {
        snprintf(why, whylen, "out of memory");
        rc = TF_ENOMEM;
        goto out;
    }
    while (got < want) {
        ssize_t r = read(fd, buf + got, want - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break; /* shrank while we read: take what is there */
        got += (size_t)r;
    }
    buf[got] = '\0';
    x->bytes_read += got;
    *out = buf;
    *len = got;
    buf = NULL;
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    close(dir);
    return rc;
}

static void tf__parse_file(tf_stepres_t *x, const char *rel, const char *buf,
                           size_t len, tf_tr_format_t fmt)
{
    char err[TF_TR_MAX_PROBLEM];
    if (fmt == TF_TR_FMT_JUNIT) {
        int rc = tf_tr_junit_parse(buf, len, rel, tf_tr_collect_add, x->col,
                                   err, sizeof err);
        if (rc == TF_EINVAL)
            tf_tr_collect_problem(x->col, "%s", err);
        else if (rc)
            tf_tr_collect_problem(x->col, "%s: %s", rel, tf_strerror(rc));
    } else if (fmt == TF_TR_FMT_TAP) {
        tf_tr_console_t *c = NULL;
        if (tf_tr_console_new(TF_TR_FMT_TAP, tf_tr_collect_add, x->col, &c) ||
            tf_tr_console_file_mode(c, rel)) {
            tf_tr_console_free(c);
            return;
        }
        tf_tr_console_feed(c, 1, (const uint8_t *)buf, len);
        tf_tr_console_finish(c);
        tf_tr_console_free(c);
    } else if (fmt == TF_TR_FMT_AUTOMAKE) {
        tf_tr_automake_log_parse(buf, len, tf_tr_collect_add, x->col);
    }
}

static void tf__read_and_parse(tf_stepres_t *x, int base, const char *rel,
                               bool quiet_missing)
{
    char *buf = NULL;
    size_t len = 0;
    char why[256];
    int rc = tf__read_rel(x, base, rel, &buf, &len, why, sizeof why);
    if (rc) {
        if (!(quiet_missing && rc == -ENOENT))
            tf_tr_collect_problem(x->col, "%s: %s", rel, why);
        return;
    }
    tf__parse_file(x, rel, buf, len, x->spec->format);
    free(buf);
}

/* Resolves a log the console named (automake's "See DIR/test-suite.log")
 * to a path relative to root; false when it is outside. */
static bool tf__hint_path(const char *root_real, const char *stepdir,
                          const char *hint, const char *dir, char *out,
                          size_t cap)
{
    char joined[PATH_MAX];
    const char *base = strrchr(hint, '/');
    if (dir) {
        /* The log is in the directory make was in. */
        size_t rl = strlen(root_real);
        if (strncmp(dir, root_real, rl) != 0 ||
            (dir[rl] != '/' && dir[rl] != '\0'))
            return false;
        const char *sub = dir[rl] == '/' ? dir + rl + 1 : "";
        snprintf(joined, sizeof joined, "%s%s%s", sub, *sub ? "/" : "",
                 base ? base + 1 : hint);
    } else {
        snprintf(joined, sizeof joined, "%s%s%s", stepdir,
                 *stepdir ? "/" : "", hint);
    }
    /* Drop "./" components; anything with ".." stays refused below. */
    size_t o = 0;
    for (const char *p = joined; *p;) {
        if (p[0] == '.' && (p[1] == '/' || p[1] == '\0')) {
            p += p[1] ? 2 : 1;
            continue;
        }
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) + 1 : strlen(p);
        if (o + n >= cap)
            return false;
        memcpy(out + o, p, n);
        o += n;
        p += n;
    }
    while (o > 0 && out[o - 1] == '/')
        o--;
    out[o] = '\0';
    return tf_tr_glob_valid(out);
}

void tf_stepres_finish(tf_stepres_t *x, const char *root, const char *stepdir,
                       bool read_files)
{
    if (!x)
        return;
    tf_tr_console_finish(x->con);
    bool hints = x->con && tf_tr_console_hint(x->con, 0, NULL);
    if (!read_files || (!x->spec->nfiles && !hints))
        return;
    int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        tf_tr_collect_problem(x->col, "cannot open the workdir: %s",
                              strerror(errno));
        return;
    }
    int stepfd = tf__open_dir(rootfd, stepdir ? stepdir : "");
    if (stepfd < 0) {
        tf_tr_collect_problem(x->col, "cannot open the step's directory "
                              "\"%s\": %s", stepdir, strerror(-stepfd));
        close(rootfd);
        return;
    }
    for (size_t i = 0; i < x->spec->nfiles; i++)
        tf__glob(x, stepfd, x->spec->files[i]);
    for (size_t i = 0; i < x->nmatches; i++)
        tf__read_and_parse(x, stepfd, x->matches[i], false);
    if (hints) {
        char real[PATH_MAX], rel[PATH_MAX];
        const char *dir;
        if (!realpath(root, real))
            snprintf(real, sizeof real, "%s", root);
        for (size_t i = 0; tf_tr_console_hint(x->con, i, &dir); i++) {
            const char *hint = tf_tr_console_hint(x->con, i, &dir);
            if (!tf__hint_path(real, stepdir ? stepdir : "", hint, dir, rel,
                               sizeof rel)) {
                tf_tr_collect_problem(x->col, "the output names %s%s%s, "
                                      "which is not inside the workdir: not "
                                      "read", dir ? dir : "", dir ? "/" : "",
                                      hint);
                continue;
            }
            /* rel is relative to root here. */
            tf__read_and_parse(x, rootfd, rel, true);
        }
    }
    close(stepfd);
    close(rootfd);
}

/* ---- messages ------------------------------------------------------------ */

static size_t tf__est(const tf_tr_entry_t *e)
{
    /* JSON escaping at most doubles cleaned text (no control bytes are
     * left but tab and newline); the rest is field names and numbers. */
    size_t n = strlen(e->suite) + strlen(e->name);
    if (e->outcome)
        n += strlen(e->outcome);
    if (e->message)
        n += strlen(e->message);
    return 2 * n + 220;
}

static void tf__fill(tf_test_result_t *r, const tf_tr_entry_t *e)
{
    memset(r, 0, sizeof *r);
    r->suite = e->suite;
    r->name = e->name;
    r->status = e->status;
    r->attempts = e->attempts ? e->attempts : 1;
    r->duration_ms = e->duration_ms;
    r->outcome = e->outcome;
    r->message = e->message;
    r->has_log = e->log.has;
    r->log_offset = e->log.offset;
    r->log_line = e->log.line;
    r->log_lines = e->log.lines ? e->log.lines : 1;
}

/* Sends entries [from, to) as one message, halving when the encoder says
 * it is too big (the estimate makes that rare). */
static size_t tf__send(tf_stepres_t *x, tf_test_result_t *tmp, size_t from,
                       size_t to, bool last, uint64_t build_id, uint32_t step,
                       void (*cb)(void *, tf_msg_t *), void *arg)
{
    tf_msg_t m;
    char *text = NULL;
    size_t len = 0, nprob = 0;
    char *const *probs = tf_tr_collect_problems(x->col, &nprob);
    memset(&m, 0, sizeof m);
    m.type = TF_MSG_TEST_RESULTS;
    m.u.test_results.build_id = build_id;
    m.u.test_results.seq = 1; /* the caller's event_cb numbers it */
    m.u.test_results.step = step;
    m.u.test_results.format = x->spec->format;
    for (size_t i = from; i < to; i++)
        tf__fill(&tmp[i - from], tf_tr_collect_get(x->col, i));
    m.u.test_results.results = tmp;
    m.u.test_results.nresults = to - from;
    m.u.test_results.last = last;
    if (last) {
        m.u.test_results.has_total = true;
        m.u.test_results.total = tf_tr_collect_count(x->col);
        m.u.test_results.dropped = tf_tr_collect_dropped(x->col);
        m.u.test_results.problems = (char **)probs;
        m.u.test_results.nproblems = nprob;
    }
    int rc = tf_msg_encode(&m, &text, &len);
    free(text);
    if (rc == TF_E2BIG && to - from > 1) {
        size_t mid = from + (to - from) / 2;
        size_t a = tf__send(x, tmp, from, mid, false, build_id, step, cb,
                            arg);
        return a + tf__send(x, tmp, mid, to, last, build_id, step, cb, arg);
    }
    if (rc) {
        tf_error("tests", "build %llu step %u: cannot encode test results: "
                 "%s", (unsigned long long)build_id, step, tf_strerror(rc));
        return 0;
    }
    m.u.test_results.seq = 0;
    cb(arg, &m);
    return 1;
}

size_t tf_stepres_emit(tf_stepres_t *x, uint64_t build_id, uint32_t step,
                       void (*cb)(void *arg, tf_msg_t *msg), void *arg)
{
    size_t n = tf_tr_collect_count(x->col), sent = 0, from = 0;
    size_t nprob = 0;
    bool last_sent = false;
    char *const *probs = tf_tr_collect_problems(x->col, &nprob);
    size_t reserve = 400; /* total, dropped and the problems */
    for (size_t i = 0; i < nprob; i++)
        reserve += 2 * strlen(probs[i]) + 8;
    tf_test_result_t *tmp = calloc(TF_PROTO_MAX_RESULTS, sizeof *tmp);
    if (!tmp)
        return 0;
    while (from < n) {
        size_t to = from, bytes = 0;
        while (to < n && to - from < TF_PROTO_MAX_RESULTS) {
            size_t e = tf__est(tf_tr_collect_get(x->col, to));
            if (to > from && bytes + e > TF_STEPRES_BATCH_BYTES)
                break;
            bytes += e;
            to++;
        }
        bool last = to == n && bytes + reserve <= TF_STEPRES_BATCH_BYTES;
        sent += tf__send(x, tmp, from, to, last, build_id, step, cb, arg);
        from = to;
        last_sent = last;
    }
    /* No results, or no room left for the summary: an empty last one. */
    if (!last_sent)
        sent += tf__send(x, tmp, n, n, true, build_id, step, cb, arg);
    free(tmp);
    return sent;
}

void tf_stepres_summary(const tf_stepres_t *x, char *buf, size_t len)
{
    uint64_t c[5];
    size_t nprob = 0;
    tf_tr_collect_counts(x->col, c);
    tf_tr_collect_problems(x->col, &nprob);
    snprintf(buf, len, "%zu tests: %llu pass, %llu fail, %llu flaky, "
             "%llu skip%s; %zu problems", tf_tr_collect_count(x->col),
             (unsigned long long)c[TF_TR_PASS],
             (unsigned long long)c[TF_TR_FAIL],
             (unsigned long long)c[TF_TR_FLAKY],
             (unsigned long long)c[TF_TR_SKIP],
             tf_tr_collect_dropped(x->col) ? " (some dropped)" : "", nprob);
}
