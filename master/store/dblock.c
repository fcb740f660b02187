/*
 * dblock.c - the lock file of a sqlite database (dblock.h).
 *
 * flock, not fcntl: sqlite's own locks are fcntl locks, which are per
 * process and dropped when any descriptor of the file closes; a separate
 * file with flock cannot interfere with them. The holder rewrites the
 * file's text after it has the lock, so a reader that loses the race
 * reads the winner's line (or an empty file, shown as "another process").
 */
#include "store/dblock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "tf_err.h"

#define DBLOCK_TEXT_MAX 200

/* The holder's line from fd, trimmed, into out. */
static void holder_of(int fd, char *out, size_t cap)
{
    char text[DBLOCK_TEXT_MAX + 1];
    ssize_t n = pread(fd, text, DBLOCK_TEXT_MAX, 0);
    size_t len = n > 0 ? (size_t)n : 0;
    text[len] = '\0';
    text[strcspn(text, "\n")] = '\0';
    snprintf(out, cap, "%s", text[0] ? text : "another process");
}

int tf_dblock_take(const char *database, const char *who, tf_dblock_t *lock,
                   char *holder, size_t holder_len)
{
    char path[4096];
    lock->fd = -1;
    if (holder_len)
        holder[0] = '\0';
    if (strstr(database, "://"))
        return 0;
    if ((size_t)snprintf(path, sizeof(path), "%s.lock", database) >=
        sizeof(path)) {
        snprintf(holder, holder_len, "the database path is too long");
        return TF_EIO;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(holder, holder_len, "%s: %s", path, strerror(errno));
        return TF_EIO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            holder_of(fd, holder, holder_len);
            close(fd);
            return TF_EEXIST;
        }
        snprintf(holder, holder_len, "%s: %s", path, strerror(e));
        close(fd);
        return TF_EIO;
    }
    char text[DBLOCK_TEXT_MAX];
    int n = snprintf(text, sizeof(text), "%s, pid %ld\n", who,
                     (long)getpid());
    if (ftruncate(fd, 0) != 0 || n < 0 ||
        pwrite(fd, text, (size_t)n, 0) != n) {
        /* The lock holds; only the message for others is lost. */
    }
    lock->fd = fd;
    return 0;
}

void tf_dblock_release(tf_dblock_t *lock)
{
    if (!lock || lock->fd < 0)
        return;
    /* The file stays: removing it would let a third process lock a new
     * file while a second still waits on the old one's inode. */
    if (ftruncate(lock->fd, 0) != 0) {
        /* Only the text is stale: the next holder rewrites it. */
    }
    flock(lock->fd, LOCK_UN);
    close(lock->fd);
    lock->fd = -1;
}
