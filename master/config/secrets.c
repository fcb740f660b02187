/*
 * secrets.c - secret files, and the slaves, kept across config loads.
 *
 * A reload reads every slave's secret file again: with thousands of
 * slaves, opening and reading them was most of a reload's CPU (issue 13,
 * a burst of builds released by a reload). The master keeps one
 * tf_cfg_secrets_t for its lifetime; a load through it stats each secret
 * file and reuses the secret read before when the file is the same one,
 * unchanged: same device and inode, size, modification and status-change
 * times (nanoseconds). Anything else (a new file, an edit, a file
 * replaced by rename, a touch, chmod) reads the file again, so a load
 * through the cache gives the same config as one without it.
 *
 * File times have a granularity (a clock tick, a few ms, on Linux's local
 * file systems; whole seconds on some others): a file rewritten with the
 * same size within the tick of our read would keep its times. A secret
 * read less than SECRETS_RACY_NS after the file's ctime (2 s when the
 * ctime has no sub-second part) is therefore not trusted: the next load
 * reads it again, as git does with its racily clean index, unless a
 * settle (tf_cfg_secrets_settle, the master's tick) has read it again
 * first, once past that window, with the file's identity unchanged.
 * Entries no load has used since the last successful one are dropped
 * after it; the secrets are wiped when dropped. A load stats its files
 * relative to a descriptor of their directory, opened once per load.
 *
 * The cache also keeps the last successful load's top-level "slaves":
 * the value's text as written and the slaves it gave (cfg_slaves_kept_t,
 * config_int.h). A load whose "slaves" are the same bytes copies them
 * instead of parsing and checking them again (config.c), and reads
 * their secret files through the cache like any load.
 *
 * Not thread-safe: one load (or settle) at a time per cache (the
 * master's reloads and settles are serialized, each on a thread-pool
 * thread).
 */
#include "config/config_int.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "map.h"
#include "tf_err.h"
#include "util.h"

#define SECRETS_RACY_NS 100000000LL        /* 100 ms: ns timestamps */
#define SECRETS_RACY_COARSE_NS 2000000000LL /* whole-second timestamps */

typedef struct secret_entry {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
    uint64_t gen;  /* the load that last used it */
    bool racy;     /* read too close to its ctime: read again next time */
    char *secret;  /* owned; wiped when freed */
} secret_entry_t;

struct tf_cfg_secrets {
    tf_map_t *by_path; /* resolved path -> secret_entry_t (owned) */
    uint64_t gen;      /* the current load */
    size_t reads;      /* files read (not reused), for tests */
    size_t reuses;     /* loads that copied the kept slaves, for tests */
    size_t settled;    /* racy secrets read again by settle, for tests */
    bool unsettled;    /* an entry may be racy (set when one is stored
                          racy, cleared by a settle that left none) */
    cfg_slaves_kept_t kept; /* the last successful load's slaves */
    /* The directory of the last secret this load stat'ed, and an O_PATH
     * descriptor of it (-1: it could not be opened, paths are used). */
    char *dir;
    int dir_fd;
};

static void kept_clear(cfg_slaves_kept_t *k)
{
    for (size_t i = 0; k->slaves && i < k->n; i++)
        cfg_slave_clear(&k->slaves[i]);
    free(k->slaves);
    cfg_strv_free(k->files, k->n);
    if (k->text) {
        explicit_bzero(k->text, k->len); /* it may hold inline secrets */
        free(k->text);
    }
    memset(k, 0, sizeof(*k));
}

static void entry_free(secret_entry_t *e)
{
    if (!e)
        return;
    if (e->secret) {
        explicit_bzero(e->secret, strlen(e->secret));
        free(e->secret);
    }
    free(e);
}

tf_cfg_secrets_t *tf_cfg_secrets_new(void)
{
    tf_cfg_secrets_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->dir_fd = -1;
    s->by_path = tf_map_new();
    if (!s->by_path) {
        free(s);
        return NULL;
    }
    return s;
}

void tf_cfg_secrets_free(tf_cfg_secrets_t *s)
{
    if (!s)
        return;
    size_t pos = 0;
    void *v;
    while (tf_map_next(s->by_path, &pos, NULL, NULL, &v) == 0)
        entry_free(v);
    tf_map_free(s->by_path);
    kept_clear(&s->kept);
    cfg_secrets_end(s);
    free(s);
}

size_t tf_cfg_secrets_reuses(const tf_cfg_secrets_t *s)
{
    return s ? s->reuses : 0;
}

const cfg_slaves_kept_t *cfg_secrets_kept(tf_cfg_secrets_t *s,
                                          const char *v, size_t n)
{
    if (!s || !s->kept.text || s->kept.len != n ||
        memcmp(s->kept.text, v, n) != 0)
        return NULL;
    return &s->kept;
}

void cfg_secrets_reused(tf_cfg_secrets_t *s)
{
    if (s)
        s->reuses++;
}

void cfg_secrets_keep(tf_cfg_secrets_t *s, const char *v, size_t n,
                      const tf_config_t *c, json_t *arr)
{
    cfg_slaves_kept_t k = {0};
    if (!s)
        return;
    kept_clear(&s->kept);
    if (!json_is_array(arr) || json_array_size(arr) != c->nslaves ||
        c->nslaves == 0)
        return;
    k.slaves = calloc(c->nslaves, sizeof(*k.slaves));
    k.files = calloc(c->nslaves, sizeof(*k.files));
    k.text = malloc(n);
    if (!k.slaves || !k.files || !k.text)
        goto nomem;
    memcpy(k.text, v, n);
    k.len = n;
    for (; k.n < c->nslaves; k.n++) {
        const char *file = json_string_value(
            json_object_get(json_array_get(arr, k.n), "secret_file"));
        if (cfg_slave_copy(&k.slaves[k.n], &c->slaves[k.n], !file) != 0)
            goto nomem;
        if (file && !(k.files[k.n] = strdup(file))) {
            cfg_slave_clear(&k.slaves[k.n]);
            goto nomem;
        }
    }
    s->kept = k;
    return;
nomem:
    kept_clear(&k);
}

size_t tf_cfg_secrets_reads(const tf_cfg_secrets_t *s)
{
    return s ? s->reads : 0;
}

void cfg_secrets_begin(tf_cfg_secrets_t *s)
{
    if (s)
        s->gen++;
}

void cfg_secrets_end(tf_cfg_secrets_t *s)
{
    if (!s)
        return;
    if (s->dir_fd >= 0)
        close(s->dir_fd);
    s->dir_fd = -1;
    free(s->dir);
    s->dir = NULL;
}

/* stat(path) for a resolved path, by its last component relative to a
 * descriptor of its directory, opened once per directory and load: the
 * kernel then walks one component instead of the whole path (the walk
 * was most of 5,000 stats). A path without a directory part, or whose
 * directory cannot be opened, is stat'ed by its name, which gives the
 * same answer. */
static int stat_in_dir(tf_cfg_secrets_t *s, const char *path,
                       struct stat *st)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path || slash[1] == '\0')
        return stat(path, st);
    size_t n = (size_t)(slash - path);
    if (!s->dir || strlen(s->dir) != n || memcmp(s->dir, path, n) != 0) {
        cfg_secrets_end(s);
        s->dir = strndup(path, n);
        if (!s->dir)
            return stat(path, st);
        s->dir_fd = open(s->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    }
    if (s->dir_fd < 0)
        return stat(path, st);
    return fstatat(s->dir_fd, slash + 1, st, 0);
}

void cfg_secrets_prune(tf_cfg_secrets_t *s)
{
    if (!s)
        return;
    size_t pos = 0;
    const char *key;
    void *v;
    while (tf_map_next(s->by_path, &pos, NULL, &key, &v) == 0) {
        secret_entry_t *e = v;
        if (e->gen != s->gen)
            entry_free(tf_map_del_str(s->by_path, key));
    }
}

static bool same_time(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/* Whether now is far enough past ctime that a change after a read at
 * now would move the file's times. */
static bool past_racy(const struct timespec *now, const struct timespec *ctime)
{
    long long age = (long long)(now->tv_sec - ctime->tv_sec) * 1000000000LL +
                    (now->tv_nsec - ctime->tv_nsec);
    return age >= (ctime->tv_nsec ? SECRETS_RACY_NS : SECRETS_RACY_COARSE_NS);
}

int cfg_secrets_read(tf_cfg_secrets_t *s, const char *path, char **out)
{
    struct stat st;
    struct timespec now;
    *out = NULL;
    if (!s)
        return tf_read_secret(path, out);
    /* Before the stat and the read: an age measured from here is never
     * longer than the read's own. */
    bool have_now = clock_gettime(CLOCK_REALTIME, &now) == 0;
    /* A file that cannot be stat'ed is read, for the reader's message. */
    if (stat_in_dir(s, path, &st) != 0 || !S_ISREG(st.st_mode))
        return tf_read_secret(path, out);
    secret_entry_t *e = tf_map_get_str(s->by_path, path);
    if (e && !e->racy && e->dev == st.st_dev && e->ino == st.st_ino &&
        e->size == st.st_size && same_time(&e->mtime, &st.st_mtim) &&
        same_time(&e->ctime, &st.st_ctim)) {
        e->gen = s->gen;
        *out = strdup(e->secret);
        return *out ? 0 : TF_ENOMEM;
    }
    /* Stat'ed before the read: a change in between makes the next load
     * see other times and read the file again. */
    s->reads++;
    int rc = tf_read_secret(path, out);
    if (rc)
        return rc;
    char *copy = strdup(*out);
    if (!copy)
        goto nomem;
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e || tf_map_put_str(s->by_path, path, e) != 0) {
            free(e);
            explicit_bzero(copy, strlen(copy));
            free(copy);
            goto nomem;
        }
    } else if (e->secret) {
        explicit_bzero(e->secret, strlen(e->secret));
        free(e->secret);
    }
    e->secret = copy;
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    e->size = st.st_size;
    e->mtime = st.st_mtim;
    e->ctime = st.st_ctim;
    e->gen = s->gen;
    e->racy = !have_now || !past_racy(&now, &st.st_ctim);
    if (e->racy)
        s->unsettled = true;
    return 0;
nomem:
    explicit_bzero(*out, strlen(*out));
    free(*out);
    *out = NULL;
    return TF_ENOMEM;
}

bool tf_cfg_secrets_unsettled(const tf_cfg_secrets_t *s)
{
    return s && s->unsettled;
}

size_t tf_cfg_secrets_settled(const tf_cfg_secrets_t *s)
{
    return s ? s->settled : 0;
}

/* One racy entry whose file's ctime is now past the window: read again
 * when the file still has the identity it had, which makes the entry
 * trusted. A file that changed (or cannot be read) is left racy: the
 * next load's stat or read tells, as it would have. */
static void settle_one(tf_cfg_secrets_t *s, const char *path,
                       secret_entry_t *e)
{
    struct stat st;
    char *secret = NULL;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
        e->dev != st.st_dev || e->ino != st.st_ino ||
        e->size != st.st_size || !same_time(&e->mtime, &st.st_mtim) ||
        !same_time(&e->ctime, &st.st_ctim))
        return;
    /* Stat'ed before the read, as cfg_secrets_read does: a change in
     * between gives the file other times, which the next load sees. */
    if (tf_read_secret(path, &secret) != 0)
        return;
    if (e->secret) {
        explicit_bzero(e->secret, strlen(e->secret));
        free(e->secret);
    }
    e->secret = secret;
    e->racy = false;
    s->settled++;
}

size_t tf_cfg_secrets_settle(tf_cfg_secrets_t *s, const atomic_bool *stop)
{
    struct timespec now;
    size_t pos = 0, left = 0;
    const char *key;
    void *v;
    if (!s || !s->unsettled)
        return 0;
    /* Before any stat: an age measured from here is never longer than
     * the one at the read below. */
    if (clock_gettime(CLOCK_REALTIME, &now) != 0)
        return 1;
    while (tf_map_next(s->by_path, &pos, NULL, &key, &v) == 0) {
        secret_entry_t *e = v;
        if (!e->racy)
            continue;
        if ((stop && atomic_load(stop)) || !past_racy(&now, &e->ctime)) {
            left++;
            continue;
        }
        settle_one(s, key, e);
    }
    s->unsettled = left > 0;
    return left;
}
