/*
 * spool.c - append-only per-build event files (see spool.h for the format).
 *
 * The file is only ever appended to at `end` and read with pread at the
 * send cursor, so there is no seek position to get confused about and a
 * record is read back exactly as it was written. Only one record is held
 * in memory at a time, in a buffer the caller owns (the connection's send
 * buffer), which bounds memory whatever the amount of pending output.
 * Nothing here fsyncs: the spool protects against the slave process dying,
 * and an fsync per output chunk would make builds crawl.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool.h"
#include "tf_err.h"
#include "util.h"

#define TF__META_MAX 4096

static void tf__put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void tf__put_u64(uint8_t *p, uint64_t v)
{
    tf__put_u32(p, (uint32_t)(v >> 32));
    tf__put_u32(p + 4, (uint32_t)v);
}

static uint32_t tf__get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

static uint64_t tf__get_u64(const uint8_t *p)
{
    return (uint64_t)tf__get_u32(p) << 32 | tf__get_u32(p + 4);
}

/* pread that retries on EINTR and short reads; returns bytes read (less
 * than n only at end of file) or a negated errno. */
static ssize_t tf__pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Reads and checks the record header at off. Returns 1 with the fields, 0
 * at a clean end of file, TF_ETRUNC for a torn or invalid header. */
static int tf__read_hdr(int fd, uint64_t off, uint64_t file_end,
                        tf_rec_kind_t *kind, uint32_t *len, uint64_t *seq)
{
    uint8_t h[TF_SPOOL_REC_HDR];
    if (off == file_end)
        return 0;
    if (file_end - off < TF_SPOOL_REC_HDR)
        return TF_ETRUNC;
    ssize_t r = tf__pread_full(fd, h, sizeof h, off);
    if (r < 0)
        return (int)r;
    if ((size_t)r < sizeof h)
        return TF_ETRUNC;
    uint32_t k = tf__get_u32(h);
    *len = tf__get_u32(h + 4);
    *seq = tf__get_u64(h + 8);
    if ((k != TF_REC_TEXT && k != TF_REC_BINARY) || *len == 0 ||
        *len > TF_SPOOL_MAX_FRAME ||
        file_end - off - TF_SPOOL_REC_HDR < *len)
        return TF_ETRUNC;
    *kind = (tf_rec_kind_t)k;
    return 1;
}

static char *tf__spool_path(const char *dir, uint64_t id, const char *ext)
{
    char name[64];
    snprintf(name, sizeof name, "%llu.%s", (unsigned long long)id, ext);
    return tf_path_join(dir, name);
}

static tf_spool_t *tf__spool_alloc(const char *dir, uint64_t build_id)
{
    tf_spool_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fd = -1;
    s->build_id = build_id;
    s->path = tf__spool_path(dir, build_id, "spool");
    s->meta_path = tf__spool_path(dir, build_id, "meta");
    if (!s->path || !s->meta_path) {
        free(s->path);
        free(s->meta_path);
        free(s);
        return NULL;
    }
    return s;
}

static void tf__spool_free(tf_spool_t *s)
{
    if (s->fd >= 0)
        close(s->fd);
    free(s->path);
    free(s->meta_path);
    free(s);
}

/* The meta file is informational, so it is written plainly (no temp file,
 * no fsync): a torn one only costs a nicer log line after a crash. */
static int tf__write_meta(const tf_spool_t *s, const char *builder,
                          uint64_t number, const char *farm)
{
    int rc = 0;
    char *text = NULL;
    json_t *o = json_pack("{s:I, s:s, s:I}", "build_id",
                          (json_int_t)s->build_id, "builder", builder,
                          "number", (json_int_t)number);
    if (!o)
        return TF_ENOMEM;
    if (farm && farm[0] &&
        json_object_set_new(o, "farm", json_string(farm)) != 0) {
        json_decref(o);
        return TF_ENOMEM;
    }
    text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        return TF_ENOMEM;
    int fd = open(s->meta_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    if (w < 0 || (size_t)w != len)
        rc = w < 0 ? -errno : -EIO;
    close(fd);
out:
    free(text);
    return rc;
}

int tf_spool_create(const char *dir, uint64_t build_id, const char *builder,
                    uint64_t number, const char *farm, tf_spool_t **out)
{
    int rc = 0;
    tf_spool_t *s = tf__spool_alloc(dir, build_id);
    *out = NULL;
    if (!s)
        return TF_ENOMEM;
    s->fd = open(s->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (s->fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = tf__write_meta(s, builder, number, farm);
    if (rc) {
        unlink(s->path);
        goto out;
    }
    *out = s;
    s = NULL;
out:
    if (s)
        tf__spool_free(s);
    return rc;
}

int tf_spool_open(const char *dir, uint64_t build_id, tf_spool_scan_cb cb,
                  void *arg, bool *truncated, tf_spool_t **out)
{
    int rc = 0;
    char *buf = NULL;
    struct stat st;
    tf_spool_t *s = tf__spool_alloc(dir, build_id);

    *out = NULL;
    if (truncated)
        *truncated = false;
    if (!s)
        return TF_ENOMEM;
    s->fd = open(s->path, O_RDWR | O_CLOEXEC);
    if (s->fd < 0 || fstat(s->fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    buf = malloc(TF_SPOOL_MAX_FRAME + 1);
    if (!buf) {
        rc = TF_ENOMEM;
        goto out;
    }
    uint64_t file_end = (uint64_t)st.st_size, off = 0;
    for (;;) {
        tf_rec_kind_t kind;
        uint32_t len;
        uint64_t seq;
        int r = tf__read_hdr(s->fd, off, file_end, &kind, &len, &seq);
        if (r == 0)
            break;
        if (r == 1 && seq != s->last_seq + 1)
            r = TF_ETRUNC;
        if (r == TF_ETRUNC) {
            /* Keep the consistent prefix: what follows a torn record cannot
             * be trusted, and the master only ever needs a gap-free run. */
            if (ftruncate(s->fd, (off_t)off) != 0) {
                rc = -errno;
                goto out;
            }
            if (truncated)
                *truncated = true;
            break;
        }
        if (r < 0) {
            rc = r;
            goto out;
        }
        if (kind == TF_REC_TEXT && cb) {
            ssize_t n = tf__pread_full(s->fd, buf, len, off + TF_SPOOL_REC_HDR);
            if (n < 0 || (size_t)n != len) {
                rc = n < 0 ? (int)n : TF_EIO;
                goto out;
            }
            buf[len] = '\0';
            cb(arg, kind, seq, buf, len);
        } else if (cb)
            cb(arg, kind, seq, NULL, len);
        s->last_seq = seq;
        off += TF_SPOOL_REC_HDR + len;
    }
    s->end = off;
    s->send_off = 0;
    *out = s;
    s = NULL;
out:
    free(buf);
    if (s)
        tf__spool_free(s);
    return rc;
}

int tf_spool_append(tf_spool_t *s, tf_rec_kind_t kind, uint64_t seq,
                    const struct iovec *iov, int n)
{
    uint8_t hdr[TF_SPOOL_REC_HDR];
    struct iovec v[8];
    size_t len = 0;

    if (n < 1 || n > 7)
        return TF_EINVAL;
    if (seq != s->last_seq + 1)
        return TF_EINVAL;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    if (len == 0)
        return TF_EINVAL;
    if (len > TF_SPOOL_MAX_FRAME)
        return TF_E2BIG;
    tf__put_u32(hdr, (uint32_t)kind);
    tf__put_u32(hdr + 4, (uint32_t)len);
    tf__put_u64(hdr + 8, seq);
    v[0].iov_base = hdr;
    v[0].iov_len = sizeof hdr;
    memcpy(v + 1, iov, (size_t)n * sizeof *iov);

    /* One pwritev normally does it all; loop for the rare short write. */
    size_t total = sizeof hdr + len, done = 0;
    int cnt = n + 1, first = 0;
    while (done < total) {
        ssize_t w = pwritev(s->fd, v + first, cnt - first,
                            (off_t)(s->end + done));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            /* Leave no torn record behind: a later append would otherwise
             * follow garbage. */
            if (ftruncate(s->fd, (off_t)s->end) != 0) {
                /* Nothing more to do; the startup scan cuts it off. */
            }
            return e;
        }
        done += (size_t)w;
        while (first < cnt && (size_t)w >= v[first].iov_len) {
            w -= (ssize_t)v[first].iov_len;
            first++;
        }
        if (first < cnt) {
            v[first].iov_base = (char *)v[first].iov_base + w;
            v[first].iov_len -= (size_t)w;
        }
    }
    s->end += total;
    s->last_seq = seq;
    return 0;
}

int tf_spool_peek(tf_spool_t *s, uint8_t *buf, size_t cap, size_t *len,
                  tf_rec_kind_t *kind, uint64_t *seq)
{
    uint32_t l;
    int r = tf__read_hdr(s->fd, s->send_off, s->end, kind, &l, seq);
    if (r <= 0)
        return r == TF_ETRUNC ? TF_EIO : r;
    if (l > cap)
        return TF_E2BIG;
    ssize_t n = tf__pread_full(s->fd, buf, l, s->send_off + TF_SPOOL_REC_HDR);
    if (n < 0)
        return (int)n;
    if ((size_t)n != l)
        return TF_EIO;
    *len = l;
    return 1;
}

void tf_spool_advance(tf_spool_t *s, size_t len)
{
    s->send_off += TF_SPOOL_REC_HDR + len;
    if (s->send_off > s->end)
        s->send_off = s->end;
}

int tf_spool_seek_after(tf_spool_t *s, uint64_t seq)
{
    uint64_t off = 0;
    if (seq >= s->last_seq) {
        s->send_off = s->end;
        return 0;
    }
    /* Headers only: a few thousand preads even for a huge log. */
    for (;;) {
        tf_rec_kind_t kind;
        uint32_t len;
        uint64_t rseq;
        int r = tf__read_hdr(s->fd, off, s->end, &kind, &len, &rseq);
        if (r < 0)
            return r == TF_ETRUNC ? TF_EIO : r;
        if (r == 0 || rseq > seq)
            break;
        off += TF_SPOOL_REC_HDR + len;
    }
    s->send_off = off;
    return 0;
}

uint64_t tf_spool_unsent(const tf_spool_t *s)
{
    return s->end - s->send_off;
}

void tf_spool_close(tf_spool_t *s)
{
    if (s)
        tf__spool_free(s);
}

void tf_spool_remove(tf_spool_t *s)
{
    if (!s)
        return;
    unlink(s->path);
    unlink(s->meta_path);
    tf__spool_free(s);
}

static int tf__cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Parses "ID.EXT" into id when the extension matches. */
static bool tf__parse_name(const char *name, const char *ext, uint64_t *id)
{
    char digits[32];
    const char *dot = strchr(name, '.');
    if (!dot || strcmp(dot + 1, ext) != 0)
        return false;
    size_t n = (size_t)(dot - name);
    if (n == 0 || n >= sizeof digits)
        return false;
    memcpy(digits, name, n);
    digits[n] = '\0';
    return tf_parse_u64(digits, id) == 0 && *id > 0;
}

int tf_spool_list(const char *dir, uint64_t **ids, size_t *n)
{
    int rc = 0;
    uint64_t *v = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *de;
    DIR *d = opendir(dir);

    *ids = NULL;
    *n = 0;
    if (!d)
        return -errno;
    while ((de = readdir(d)) != NULL) {
        uint64_t id;
        if (tf__parse_name(de->d_name, "meta", &id)) {
            char *sp = tf__spool_path(dir, id, "spool");
            char *mp = tf_path_join(dir, de->d_name);
            if (sp && mp && access(sp, F_OK) != 0 && errno == ENOENT)
                unlink(mp);
            free(sp);
            free(mp);
            continue;
        }
        if (!tf__parse_name(de->d_name, "spool", &id))
            continue;
        if (cnt == TF_SPOOL_MAX_FILES) {
            rc = TF_E2BIG;
            goto out;
        }
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            uint64_t *nv = realloc(v, ncap * sizeof *nv);
            if (!nv) {
                rc = TF_ENOMEM;
                goto out;
            }
            v = nv;
            cap = ncap;
        }
        v[cnt++] = id;
    }
    if (cnt)
        qsort(v, cnt, sizeof *v, tf__cmp_u64);
    *ids = v;
    *n = cnt;
    v = NULL;
out:
    free(v);
    closedir(d);
    return rc;
}

int tf_spool_read_meta(const char *dir, uint64_t build_id, char **builder,
                       uint64_t *number, char farm[TF_PROTO_FARM_MAX + 1])
{
    int rc = 0;
    char *text = NULL;
    json_t *o = NULL;
    char *path = tf__spool_path(dir, build_id, "meta");

    *builder = NULL;
    *number = 0;
    farm[0] = '\0';
    if (!path)
        return TF_ENOMEM;
    rc = tf_read_file(path, TF__META_MAX, &text, NULL);
    if (rc)
        goto out;
    o = json_loads(text, 0, NULL);
    json_t *b = json_object_get(o, "builder");
    json_t *num = json_object_get(o, "number");
    if (!json_is_string(b) || !json_is_integer(num) ||
        json_integer_value(num) < 0) {
        rc = TF_EINVAL;
        goto out;
    }
    *builder = strdup(json_string_value(b));
    if (!*builder) {
        rc = TF_ENOMEM;
        goto out;
    }
    *number = (uint64_t)json_integer_value(num);
    /* The farm as the master sent it (proto checked it then); anything
     * else is left out, as if the slave were older. */
    const char *f = json_string_value(json_object_get(o, "farm"));
    size_t fl = f ? strlen(f) : 0;
    if (fl >= 1 && fl <= TF_PROTO_FARM_MAX &&
        strspn(f, "0123456789abcdef") == fl)
        memcpy(farm, f, fl + 1);
out:
    json_decref(o);
    free(text);
    free(path);
    return rc;
}
