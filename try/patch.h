/*
 * patch.h - running git and making the patch a try job carries.
 *
 * Git runs as a child process started with posix_spawnp (never a shell),
 * its output captured as bytes with a cap. The patch is made against a
 * temporary index so the user's index is never modified:
 *
 *   cp  $(git rev-parse --git-path index)  TMP   (or: git read-tree HEAD)
 *   GIT_INDEX_FILE=TMP git add -u     (-A with --include-untracked)
 *   GIT_INDEX_FILE=TMP git diff --cached --binary --full-index -M BASE
 *
 * Starting from a copy of the user's index (rather than from HEAD) keeps
 * files that were staged with "git add" but never committed, and keeps
 * git's stat cache so "git add -u" does not rehash the whole tree.
 */
#ifndef TF_TRY_PATCH_H
#define TF_TRY_PATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "try.h"

/* What a finished child did. */
typedef struct tf_try_proc {
    tf_buf_t out;      /* stdout, capped by max_out */
    tf_buf_t err;      /* stderr, the first 64 KiB */
    int status;        /* exit status, or 128 + signal */
    bool out_over;     /* stdout passed max_out: the child was killed */
} tf_try_proc_t;

/* Runs argv[0] (looked up in PATH) with argv, stdin fed from in[0..inlen)
 * (or /dev/null when in is NULL), the environment plus
 * GIT_INDEX_FILE=index_file when index_file is non-NULL. Returns 0 when
 * the child ran to the end (whatever its status) or was stopped for
 * passing max_out (p->out_over), or a negative code when it could not be
 * started. The caller frees p with tf_try_proc_free. */
int tf_try_proc_run(const char *const *argv, const char *index_file,
                    const void *in, size_t inlen, size_t max_out,
                    tf_try_proc_t *p);

/* Frees p's buffers; p may be NULL. */
void tf_try_proc_free(tf_try_proc_t *p);

/* The top of the work tree (git rev-parse --show-toplevel), malloc'd.
 * TF_ENOENT when the current directory is not in a git work tree. */
int tf_try_git_toplevel(char **out, tf_try_err_t *err);

/* Resolves rev to a full commit id (malloc'd) in the repository at top.
 * TF_ENOENT when it names no commit. */
int tf_try_git_commit(const char *top, const char *rev, char **out,
                      tf_try_err_t *err);

/* Finds the upstream: `upstream` when non-NULL (must resolve), else
 * @{upstream}, origin/HEAD, origin/main, origin/master in that order.
 * *ref_out gets the name that worked, *commit_out its commit (malloc'd). */
int tf_try_git_upstream(const char *top, const char *upstream, char **ref_out,
                        char **commit_out, tf_try_err_t *err);

/* git merge-base HEAD other, as a full commit id (malloc'd). */
int tf_try_git_merge_base(const char *top, const char *other, char **out,
                          tf_try_err_t *err);

/* The subject of HEAD's commit (malloc'd, may be ""). */
int tf_try_git_subject(const char *top, char **out, tf_try_err_t *err);

/* Makes the patch of the work tree (tracked files, plus untracked ones
 * that .gitignore does not exclude when include_untracked) against base,
 * into *patch (whose cap the caller sets: TF_E2BIG when the patch is
 * bigger). *dirty says whether the work tree differs from HEAD. */
int tf_try_make_patch(const char *top, const char *base, bool include_untracked,
                      size_t max_bytes, tf_buf_t *patch, bool *dirty,
                      tf_try_err_t *err);

/* git apply --stat of the patch (works outside a repository too). */
int tf_try_diffstat(const uint8_t *patch, size_t len, tf_buf_t *out,
                    tf_try_err_t *err);

/* Reads a patch file as bytes ("-" is stdin) into *patch (capped by its
 * max: TF_E2BIG when bigger). */
int tf_try_read_patch(const char *path, tf_buf_t *patch, tf_try_err_t *err);

#endif
