/*
 * dblock.h - one process at a time on a sqlite database: the running
 * master or `tf-master vacuum`.
 *
 * sqlite's own locks let two processes take turns, which is not enough
 * here: vacuum rewrites and compacts the file, seals logs and applies the
 * retention as if it were alone, and the master keeps state in memory
 * that vacuum's writes would silently contradict. So both take an
 * advisory lock (flock) on "<database>.lock" for as long as they run, and
 * refuse to start when the other holds it. The kernel drops the lock when
 * its holder exits, killed included, so a crash never leaves the farm
 * locked; the file's text (who holds it, its pid) only feeds the message.
 *
 * Offline commands that go through the database's own transactions
 * (user, mail preview, check) do not take it. A PostgreSQL database is
 * shared by design (the store's claim decides who is the master); the
 * lock is a no-op there.
 */
#ifndef TF_STORE_DBLOCK_H
#define TF_STORE_DBLOCK_H

#include <stddef.h>

typedef struct tf_dblock {
    int fd; /* -1: not held (or nothing to hold: PostgreSQL) */
} tf_dblock_t;

/* Takes the lock of database (a sqlite path, or a postgresql:// URL for
 * which it does nothing) for who ("master", "vacuum"). Returns 0 with
 * *lock held until tf_dblock_release; TF_EEXIST when another process
 * holds it, with its holder's line ("vacuum, pid 123") in
 * holder[holder_len] (caller's buffer); TF_EIO when the lock file cannot
 * be made (errno's text in holder). */
int tf_dblock_take(const char *database, const char *who, tf_dblock_t *lock,
                   char *holder, size_t holder_len);

/* Releases a lock taken by tf_dblock_take (a lock not held is fine). */
void tf_dblock_release(tf_dblock_t *lock);

#endif
