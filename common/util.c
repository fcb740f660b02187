/*
 * util.c - whole-file reads with a cap, atomic writes, secrets, mkdir -p,
 * strict number parsing and path joining.
 *
 * File functions return 0, a TF_E* code or a negated errno. Atomic writes
 * go through PATH.tmp.PID: write, fsync, rename over PATH, then fsync the
 * directory so the rename itself survives a crash; a reader therefore sees
 * either the old file or the whole new one.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tf_err.h"
#include "util.h"

#define TF__SECRET_MAX 4096

int tf_read_file(const char *path, size_t max, char **out, size_t *len_out)
{
    int rc = 0;
    int fd = -1;
    char *data = NULL;
    size_t len = 0, cap;
    struct stat st;

    *out = NULL;
    if (len_out)
        *len_out = 0;
    if (max >= SIZE_MAX / 2)
        max = SIZE_MAX / 2 - 1;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        goto out;
    }
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max) {
        rc = TF_E2BIG;
        goto out;
    }
    /* The size from fstat is a hint only (pipes, /proc, growing files): read
     * until EOF, but never more than max + 1 bytes. */
    cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 4096;
    if (cap > max + 1)
        cap = max + 1;
    data = malloc(cap + 1);
    if (!data) {
        rc = TF_ENOMEM;
        goto out;
    }
    for (;;) {
        if (len == cap) {
            if (cap > max) {
                rc = TF_E2BIG;
                goto out;
            }
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *p = realloc(data, ncap + 1);
            if (!p) {
                rc = TF_ENOMEM;
                goto out;
            }
            data = p;
            cap = ncap;
        }
        ssize_t n = read(fd, data + len, cap - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len > max) {
        rc = TF_E2BIG;
        goto out;
    }
    data[len] = '\0';
    *out = data;
    data = NULL;
    if (len_out)
        *len_out = len;
out:
    free(data);
    if (fd >= 0)
        close(fd);
    return rc;
}

static int tf_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* fsyncs the directory holding path so a rename into it is durable. */
static int tf_fsync_parent(const char *path)
{
    int rc = 0;
    char *dir = strdup(path);
    if (!dir)
        return TF_ENOMEM;
    char *slash = strrchr(dir, '/');
    const char *d = ".";
    if (slash == dir)
        d = "/";
    else if (slash) {
        *slash = '\0';
        d = dir;
    }
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    if (fsync(fd) != 0 && errno != EINVAL)
        rc = -errno;
    close(fd);
out:
    free(dir);
    return rc;
}

int tf_write_file_atomic(const char *path, const void *data, size_t len,
                         unsigned mode)
{
    int rc = 0;
    int fd = -1;
    bool tmp_exists = false;
    char tmp[PATH_MAX];

    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp)
        return -ENAMETOOLONG;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)mode);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    tmp_exists = true;
    /* The umask must not widen or narrow what the caller asked for: secret
     * files depend on it. */
    if (fchmod(fd, (mode_t)mode) != 0) {
        rc = -errno;
        goto out;
    }
    rc = tf_write_all(fd, data, len);
    if (rc)
        goto out;
    if (fsync(fd) != 0) {
        rc = -errno;
        goto out;
    }
    int crc = close(fd);
    fd = -1;
    if (crc != 0) {
        rc = -errno;
        goto out;
    }
    if (rename(tmp, path) != 0) {
        rc = -errno;
        goto out;
    }
    tmp_exists = false;
    rc = tf_fsync_parent(path);
out:
    if (fd >= 0)
        close(fd);
    if (tmp_exists)
        unlink(tmp);
    return rc;
}

int tf_read_secret(const char *path, char **out)
{
    char *data = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = tf_read_file(path, TF__SECRET_MAX, &data, &len);
    if (rc)
        return rc;
    size_t n = 0;
    while (n < len && data[n] != '\n')
        n++;
    while (n > 0 && (data[n - 1] == ' ' || data[n - 1] == '\t' ||
                     data[n - 1] == '\r' || data[n - 1] == '\n'))
        n--;
    /* An embedded NUL would silently shorten the secret. */
    if (n == 0 || memchr(data, '\0', n) != NULL) {
        rc = TF_EINVAL;
        goto out;
    }
    char *s = malloc(n + 1);
    if (!s) {
        rc = TF_ENOMEM;
        goto out;
    }
    memcpy(s, data, n);
    s[n] = '\0';
    *out = s;
out:
    explicit_bzero(data, len);
    free(data);
    return rc;
}

static int tf_mkdir_one(const char *path, mode_t mode)
{
    if (mkdir(path, mode) == 0)
        return 0;
    int e = errno;
    struct stat st;
    if (e == EEXIST) {
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            return 0;
        return -ENOTDIR;
    }
    return -e;
}

int tf_mkdir_p(const char *path, unsigned mode)
{
    if (!path || !*path)
        return TF_EINVAL;
    int rc = 0;
    char *p = strdup(path);
    if (!p)
        return TF_ENOMEM;
    /* Create each prefix ending before a '/', then the whole path. */
    for (char *s = p + 1; *s; s++) {
        if (*s != '/' || s[-1] == '/')
            continue;
        *s = '\0';
        rc = tf_mkdir_one(p, (mode_t)mode);
        *s = '/';
        if (rc)
            goto out;
    }
    rc = tf_mkdir_one(p, (mode_t)mode);
out:
    free(p);
    return rc;
}

/* Accumulates the digits of s (all of it, at least one) into *out, failing
 * when the value would pass limit. */
static int tf_parse_digits(const char *s, uint64_t limit, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0')
        return TF_EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return TF_EINVAL;
        unsigned d = (unsigned)(*s - '0');
        if (v > (limit - d) / 10)
            return TF_EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int tf_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v;
    if (!s || tf_parse_digits(s, UINT64_MAX, &v))
        return TF_EINVAL;
    *out = v;
    return 0;
}

int tf_parse_i64(const char *s, int64_t *out)
{
    uint64_t v;
    bool neg = false;
    if (!s)
        return TF_EINVAL;
    if (*s == '-' || *s == '+') {
        neg = *s == '-';
        s++;
    }
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    if (tf_parse_digits(s, limit, &v))
        return TF_EINVAL;
    if (neg)
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    else
        *out = (int64_t)v;
    return 0;
}

char *tf_path_join(const char *dir, const char *name)
{
    if (!dir || !name)
        return NULL;
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    while (*name == '/')
        name++;
    size_t nl = strlen(name);
    if (dl == 0)
        return strdup(name);
    bool root = dl == 1 && dir[0] == '/';
    size_t total = dl + (root ? 0 : 1) + nl + 1;
    char *p = malloc(total);
    if (!p)
        return NULL;
    memcpy(p, dir, dl);
    size_t o = dl;
    if (!root)
        p[o++] = '/';
    memcpy(p + o, name, nl);
    p[o + nl] = '\0';
    return p;
}
