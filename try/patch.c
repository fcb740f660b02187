/*
 * patch.c - git as a child process, and the patch of a try job.
 *
 * Children are started with posix_spawnp: no shell ever sees a revision or
 * a path, so nothing the user or a repository holds is interpreted twice.
 * Their stdout is read as bytes into a capped buffer (patches are binary
 * and may be large); when the cap is passed the child is killed at once
 * rather than left to write into a full pipe. Stdin is written from memory
 * in the same poll loop, so a child that writes before it has read all its
 * input (git apply --stat of a large patch) cannot deadlock us.
 *
 * Every git command gets fixed options that neutralise user settings which
 * would make the patch unappliable elsewhere: prefixes, colour, external
 * diff drivers, textconv and relative diffs.
 */
#include "patch.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tf_err.h"
#include "util.h"

extern char **environ;

#define PROC_ERR_MAX (64 * 1024)
#define GIT_SMALL_OUT (1024 * 1024)

void tf_try_proc_free(tf_try_proc_t *p)
{
    if (!p)
        return;
    tf_buf_free(&p->out);
    tf_buf_free(&p->err);
}

/* The environment of a child: ours without GIT_INDEX_FILE, plus
 * GIT_INDEX_FILE=index_file when given. The array is malloc'd; its strings
 * are borrowed from environ except the last, which *owned holds. */
static char **proc_env(const char *index_file, char **owned)
{
    size_t n = 0, j = 0;
    char **env;

    *owned = NULL;
    while (environ[n])
        n++;
    env = calloc(n + 2, sizeof(*env));
    if (!env)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "GIT_INDEX_FILE=", 15) != 0)
            env[j++] = environ[i];
    if (index_file) {
        size_t len = strlen(index_file) + 16;
        *owned = malloc(len);
        if (!*owned) {
            free(env);
            return NULL;
        }
        snprintf(*owned, len, "GIT_INDEX_FILE=%s", index_file);
        env[j++] = *owned;
    }
    env[j] = NULL;
    return env;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Reads what fd has into b, up to b's cap; at the cap, reads the rest into
 * nowhere when discard is set and reports *over otherwise. Returns 1 at
 * EOF, 0 when more may come, or a negative errno. */
static int drain(int fd, tf_buf_t *b, bool discard, bool *over)
{
    char chunk[65536];
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -errno;
    if (n == 0)
        return 1;
    size_t room = b->max > b->len ? b->max - b->len : 0;
    size_t take = (size_t)n < room ? (size_t)n : room;
    if (take > 0 && tf_buf_append(b, chunk, take) < 0)
        return TF_ENOMEM;
    if ((size_t)n > take && !discard)
        *over = true;
    return 0;
}

int tf_try_proc_run(const char *const *argv, const char *index_file,
                    const void *in, size_t inlen, size_t max_out,
                    tf_try_proc_t *p)
{
    int rc;
    int inp[2] = {-1, -1}, outp[2] = {-1, -1}, errp[2] = {-1, -1};
    pid_t pid = -1;
    char *owned = NULL;
    char **env = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    bool fa_ok = false, attr_ok = false;
    sigset_t defsigs;
    size_t written = 0;

    memset(p, 0, sizeof(*p));
    tf_buf_init(&p->out, max_out);
    tf_buf_init(&p->err, PROC_ERR_MAX);

    if (pipe2(outp, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0 ||
        (in && pipe2(inp, O_CLOEXEC) != 0)) {
        rc = -errno;
        goto out;
    }
    env = proc_env(index_file, &owned);
    if (!env) {
        rc = TF_ENOMEM;
        goto out;
    }
    if ((rc = posix_spawn_file_actions_init(&fa)) != 0) {
        rc = -rc;
        goto out;
    }
    fa_ok = true;
    if (in)
        rc = posix_spawn_file_actions_adddup2(&fa, inp[0], 0);
    else
        rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
    if (rc != 0) {
        rc = -rc;
        goto out;
    }
    /* tf-try ignores SIGPIPE (it writes to sockets and pipes); git must
     * get the default back, and a Ctrl-C meant for us reaches it too. */
    if ((rc = posix_spawnattr_init(&attr)) != 0) {
        rc = -rc;
        goto out;
    }
    attr_ok = true;
    sigemptyset(&defsigs);
    sigaddset(&defsigs, SIGPIPE);
    sigaddset(&defsigs, SIGINT);
    sigaddset(&defsigs, SIGTERM);
    posix_spawnattr_setsigdefault(&attr, &defsigs);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    rc = posix_spawnp(&pid, argv[0], &fa, &attr, (char *const *)argv, env);
    if (rc != 0) {
        pid = -1;
        rc = -rc;
        goto out;
    }
    close_fd(&outp[1]);
    close_fd(&errp[1]);
    close_fd(&inp[0]);
    if (inp[1] >= 0) {
        fcntl(inp[1], F_SETFL, O_NONBLOCK);
        if (inlen == 0)
            close_fd(&inp[1]);
    }

    while (outp[0] >= 0 || errp[0] >= 0) {
        struct pollfd fds[3];
        int nf = 0, io = -1, ie = -1, ii = -1;
        if (outp[0] >= 0) {
            io = nf;
            fds[nf++] = (struct pollfd){.fd = outp[0], .events = POLLIN};
        }
        if (errp[0] >= 0) {
            ie = nf;
            fds[nf++] = (struct pollfd){.fd = errp[0], .events = POLLIN};
        }
        if (inp[1] >= 0) {
            ii = nf;
            fds[nf++] = (struct pollfd){.fd = inp[1], .events = POLLOUT};
        }
        if (poll(fds, (nfds_t)nf, -1) < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto out;
        }
        if (ii >= 0 && fds[ii].revents) {
            ssize_t n = write(inp[1], (const char *)in + written,
                              inlen - written);
            if (n > 0)
                written += (size_t)n;
            /* EPIPE: the child does not want the rest; that is its call. */
            if ((n < 0 && errno != EAGAIN && errno != EINTR) ||
                written == inlen)
                close_fd(&inp[1]);
        }
        if (io >= 0 && fds[io].revents) {
            rc = drain(outp[0], &p->out, false, &p->out_over);
            if (rc < 0)
                goto out;
            if (rc == 1)
                close_fd(&outp[0]);
            if (p->out_over) {
                kill(pid, SIGKILL);
                break;
            }
        }
        if (ie >= 0 && fds[ie].revents) {
            bool ignored = false;
            rc = drain(errp[0], &p->err, true, &ignored);
            if (rc < 0)
                goto out;
            if (rc == 1)
                close_fd(&errp[0]);
        }
    }
    rc = 0;
out:
    close_fd(&inp[0]);
    close_fd(&inp[1]);
    close_fd(&outp[0]);
    close_fd(&outp[1]);
    close_fd(&errp[0]);
    close_fd(&errp[1]);
    if (pid > 0) {
        int st = 0;
        if (rc < 0)
            kill(pid, SIGKILL);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        p->status = WIFEXITED(st) ? WEXITSTATUS(st)
                  : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 255;
    }
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (attr_ok)
        posix_spawnattr_destroy(&attr);
    free(env);
    free(owned);
    return rc;
}

/* The first line of git's stderr (or "exit N"), for an error message. */
static void git_reason(const tf_try_proc_t *p, char *out, size_t n)
{
    const char *s = p->err.data ? (const char *)p->err.data : "";
    size_t len = 0;
    while (*s == '\n')
        s++;
    while (s[len] && s[len] != '\n' && len + 1 < n)
        len++;
    if (len == 0) {
        snprintf(out, n, "exit status %d", p->status);
        return;
    }
    for (size_t i = 0; i < len; i++)
        out[i] = ((unsigned char)s[i] < 0x20 && s[i] != '\t') ? '?' : s[i];
    out[len] = '\0';
}

/* Runs git with args after "git -C top" and stores its stdout without the
 * trailing newline into *out (malloc'd) when out is non-NULL. Returns 0,
 * TF_EIO (git failed; err says why, `what` names the action), or the
 * status in *status when status is non-NULL (then a non-zero exit is not
 * an error). */
static int git_capture(const char *top, const char *const *args,
                       const char *index_file, const char *what, char **out,
                       int *status, tf_try_err_t *err)
{
    const char *argv[32];
    size_t n = 0;
    tf_try_proc_t p;
    int rc;

    argv[n++] = "git";
    if (top) {
        argv[n++] = "-C";
        argv[n++] = top;
    }
    for (size_t i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    if (out)
        *out = NULL;
    rc = tf_try_proc_run(argv, index_file, NULL, 0, GIT_SMALL_OUT, &p);
    if (rc < 0) {
        tf_try_errf(err, "cannot run git (%s): %s", what,
                    rc > -4096 ? strerror(-rc) : tf_strerror(rc));
        rc = TF_EIO;
        goto out;
    }
    if (p.out_over) {
        tf_try_errf(err, "git printed more than expected (%s)", what);
        rc = TF_EIO;
        goto out;
    }
    if (status)
        *status = p.status;
    else if (p.status != 0) {
        char reason[512];
        git_reason(&p, reason, sizeof(reason));
        tf_try_errf(err, "%s failed: %s", what, reason);
        rc = TF_EIO;
        goto out;
    }
    if (out) {
        size_t len = p.out.len;
        while (len > 0 && (p.out.data[len - 1] == '\n' ||
                           p.out.data[len - 1] == '\r'))
            len--;
        *out = strndup(p.out.data ? (const char *)p.out.data : "", len);
        if (!*out) {
            rc = TF_ENOMEM;
            goto out;
        }
    }
    rc = 0;
out:
    tf_try_proc_free(&p);
    return rc;
}

int tf_try_git_toplevel(char **out, tf_try_err_t *err)
{
    const char *args[] = {"rev-parse", "--show-toplevel", NULL};
    int status = 0;
    int rc = git_capture(NULL, args, NULL, "git rev-parse --show-toplevel",
                         out, &status, err);
    if (rc < 0)
        return rc;
    if (status != 0 || !*out || !**out) {
        free(*out);
        *out = NULL;
        tf_try_errf(err, "not inside a git work tree (run tf-try in your "
                         "clone, or give --diff FILE and --base REV)");
        return TF_ENOENT;
    }
    return 0;
}

int tf_try_git_commit(const char *top, const char *rev, char **out,
                      tf_try_err_t *err)
{
    char spec[TF_TRY_MAX_REV + 16];
    int status = 0;
    int rc;

    *out = NULL;
    if (!tf_try_rev_valid(rev)) {
        tf_try_errf(err, "\"%.200s\" is not a revision TestFarm accepts "
                         "(letters, digits and ._/^~-, not starting with -)",
                    rev);
        return TF_EINVAL;
    }
    snprintf(spec, sizeof(spec), "%s^{commit}", rev);
    const char *args[] = {"rev-parse", "--verify", "--quiet", "--end-of-options",
                          spec, NULL};
    rc = git_capture(top, args, NULL, "git rev-parse", out, &status, err);
    if (rc < 0)
        return rc;
    if (status != 0 || !**out) {
        free(*out);
        *out = NULL;
        tf_try_errf(err, "%s does not name a commit in this repository", rev);
        return TF_ENOENT;
    }
    return 0;
}

int tf_try_git_upstream(const char *top, const char *upstream, char **ref_out,
                        char **commit_out, tf_try_err_t *err)
{
    static const char *const fallbacks[] = {"@{upstream}", "origin/HEAD",
                                            "origin/main", "origin/master",
                                            NULL};
    int rc;

    *ref_out = NULL;
    *commit_out = NULL;
    if (upstream) {
        rc = tf_try_git_commit(top, upstream, commit_out, err);
        if (rc < 0)
            return rc;
        *ref_out = strdup(upstream);
        return *ref_out ? 0 : TF_ENOMEM;
    }
    for (size_t i = 0; fallbacks[i]; i++) {
        /* "@{upstream}" is not in the validator's alphabet; it is ours, not
         * the user's, so it goes to git directly. */
        char spec[64];
        int status = 0;
        snprintf(spec, sizeof(spec), "%s^{commit}", fallbacks[i]);
        const char *args[] = {"rev-parse", "--verify", "--quiet", spec, NULL};
        rc = git_capture(top, args, NULL, "git rev-parse", commit_out, &status,
                         err);
        if (rc < 0)
            return rc;
        if (status == 0 && **commit_out) {
            *ref_out = strdup(fallbacks[i]);
            return *ref_out ? 0 : TF_ENOMEM;
        }
        free(*commit_out);
        *commit_out = NULL;
    }
    tf_try_errf(err, "cannot find the upstream branch: the current branch has "
                     "no upstream and there is no origin/HEAD, origin/main or "
                     "origin/master; set one (git branch --set-upstream-to "
                     "origin/BRANCH) or pass --upstream REF or --base REV");
    return TF_ENOENT;
}

int tf_try_git_merge_base(const char *top, const char *other, char **out,
                          tf_try_err_t *err)
{
    const char *args[] = {"merge-base", "HEAD", other, NULL};
    int status = 0;
    int rc = git_capture(top, args, NULL, "git merge-base", out, &status, err);
    if (rc < 0)
        return rc;
    if (status != 0 || !**out) {
        free(*out);
        *out = NULL;
        tf_try_errf(err, "HEAD and %s have no common ancestor; pass --base "
                         "REV", other);
        return TF_ENOENT;
    }
    return 0;
}

int tf_try_git_subject(const char *top, char **out, tf_try_err_t *err)
{
    const char *args[] = {"log", "-1", "--no-color", "--format=%s", "HEAD",
                          NULL};
    return git_capture(top, args, NULL, "git log", out, NULL, err);
}

/* Copies the user's index to tmp, keeping its mtime so git's racy-entry
 * check behaves exactly as with the original. Returns 0, or TF_ENOENT
 * when the repository has no index yet. */
static int copy_index(const char *src, const char *dst, tf_try_err_t *err)
{
    int rc;
    int in = -1, out = -1;
    struct stat st;
    char chunk[65536];

    in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        rc = errno == ENOENT ? TF_ENOENT : TF_EIO;
        if (rc == TF_EIO)
            tf_try_errf(err, "cannot read git's index %s: %s", src,
                        strerror(errno));
        goto out;
    }
    if (fstat(in, &st) != 0) {
        rc = TF_EIO;
        tf_try_errf(err, "cannot stat git's index %s: %s", src,
                    strerror(errno));
        goto out;
    }
    out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        rc = TF_EIO;
        tf_try_errf(err, "cannot create %s: %s", dst, strerror(errno));
        goto out;
    }
    for (;;) {
        ssize_t n = read(in, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = TF_EIO;
            tf_try_errf(err, "cannot read git's index %s: %s", src,
                        strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, chunk + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                rc = TF_EIO;
                tf_try_errf(err, "cannot write %s: %s", dst, strerror(errno));
                goto out;
            }
            off += w;
        }
    }
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    futimens(out, times);
    rc = 0;
out:
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out) != 0 && rc == 0) {
        rc = TF_EIO;
        tf_try_errf(err, "cannot write %s: %s", dst, strerror(errno));
    }
    return rc;
}

int tf_try_make_patch(const char *top, const char *base, bool include_untracked,
                      size_t max_bytes, tf_buf_t *patch, bool *dirty,
                      tf_try_err_t *err)
{
    int rc;
    char dir[] = "/tmp/tf-try.XXXXXX";
    char *tmpdir = NULL, *index = NULL, *user_index = NULL;
    const char *tmp = getenv("TMPDIR");
    bool made_dir = false;
    int status = 0;
    tf_try_proc_t p;

    memset(&p, 0, sizeof(p));
    *dirty = false;
    /* A private directory for the temporary index (and git's index.lock
     * next to it), so nobody else can race us for the name. */
    if (tmp && tmp[0] == '/') {
        size_t n = strlen(tmp) + sizeof("/tf-try.XXXXXX");
        tmpdir = malloc(n);
        if (!tmpdir) {
            rc = TF_ENOMEM;
            goto out;
        }
        snprintf(tmpdir, n, "%s/tf-try.XXXXXX", tmp);
    } else {
        tmpdir = strdup(dir);
        if (!tmpdir) {
            rc = TF_ENOMEM;
            goto out;
        }
    }
    if (!mkdtemp(tmpdir)) {
        tf_try_errf(err, "cannot create a temporary directory %s: %s", tmpdir,
                    strerror(errno));
        rc = TF_EIO;
        goto out;
    }
    made_dir = true;
    index = tf_path_join(tmpdir, "index");
    if (!index) {
        rc = TF_ENOMEM;
        goto out;
    }

    const char *gp_args[] = {"rev-parse", "--path-format=absolute",
                             "--git-path", "index", NULL};
    if ((rc = git_capture(top, gp_args, NULL, "git rev-parse --git-path",
                          &user_index, NULL, err)) < 0)
        goto out;
    rc = copy_index(user_index, index, err);
    if (rc == TF_ENOENT) {
        const char *rt_args[] = {"read-tree", "HEAD", NULL};
        rc = git_capture(top, rt_args, index, "git read-tree HEAD", NULL, NULL,
                         err);
    }
    if (rc < 0)
        goto out;

    const char *add_args[] = {"add", include_untracked ? "-A" : "-u", NULL};
    if ((rc = git_capture(top, add_args, index,
                          include_untracked ? "git add -A" : "git add -u", NULL,
                          NULL, err)) < 0)
        goto out;

    const char *dirty_args[] = {"diff", "--cached", "--quiet", "--no-ext-diff",
                                "--ignore-submodules=none", "HEAD", "--", NULL};
    if ((rc = git_capture(top, dirty_args, index, "git diff --quiet", NULL,
                          &status, err)) < 0)
        goto out;
    *dirty = status == 1;

    const char *argv[] = {
        "git", "-C", top, "diff", "--cached", "--binary", "--full-index",
        "-M", "--no-color", "--no-ext-diff", "--no-textconv", "--no-relative",
        "--src-prefix=a/", "--dst-prefix=b/", base, "--", NULL,
    };
    rc = tf_try_proc_run(argv, index, NULL, 0, max_bytes, &p);
    if (rc < 0) {
        tf_try_errf(err, "cannot run git diff: %s",
                    rc > -4096 ? strerror(-rc) : tf_strerror(rc));
        rc = TF_EIO;
        goto out;
    }
    if (p.out_over) {
        tf_try_errf(err, "the patch is larger than %zu MiB; make it smaller "
                         "or raise the limit with --max-patch-mb N",
                    max_bytes / (1024 * 1024));
        rc = TF_E2BIG;
        goto out;
    }
    if (p.status != 0) {
        char reason[512];
        git_reason(&p, reason, sizeof(reason));
        tf_try_errf(err, "git diff failed: %s", reason);
        rc = TF_EIO;
        goto out;
    }
    if (patch->len == 0 && p.out.len <= patch->max) {
        /* Hand the bytes over instead of copying up to 50 MiB. */
        tf_buf_t mine = *patch;
        *patch = p.out;
        patch->max = mine.max;
        p.out = mine;
    } else if (p.out.len > 0 &&
               (rc = tf_buf_append(patch, p.out.data, p.out.len)) < 0) {
        if (rc == TF_E2BIG)
            tf_try_errf(err, "the patch is larger than %zu MiB; make it "
                             "smaller or raise the limit with --max-patch-mb N",
                        max_bytes / (1024 * 1024));
        goto out;
    }
    rc = 0;
out:
    tf_try_proc_free(&p);
    if (index) {
        char *lock = NULL;
        size_t n = strlen(index) + 6;
        unlink(index);
        lock = malloc(n);
        if (lock) {
            snprintf(lock, n, "%s.lock", index);
            unlink(lock);
            free(lock);
        }
    }
    if (made_dir)
        rmdir(tmpdir);
    free(index);
    free(tmpdir);
    free(user_index);
    return rc;
}

int tf_try_diffstat(const uint8_t *patch, size_t len, tf_buf_t *out,
                    tf_try_err_t *err)
{
    const char *argv[] = {"git", "apply", "--stat", "-", NULL};
    tf_try_proc_t p;
    int rc;

    if (len == 0)
        return 0;
    rc = tf_try_proc_run(argv, NULL, patch, len, GIT_SMALL_OUT, &p);
    if (rc < 0) {
        tf_try_errf(err, "cannot run git apply --stat: %s",
                    rc > -4096 ? strerror(-rc) : tf_strerror(rc));
        rc = TF_EIO;
        goto out;
    }
    if (p.status != 0) {
        char reason[512];
        git_reason(&p, reason, sizeof(reason));
        tf_try_errf(err, "git apply --stat failed: %s", reason);
        rc = TF_EIO;
        goto out;
    }
    if (p.out.len > 0)
        rc = tf_buf_append(out, p.out.data, p.out.len);
out:
    tf_try_proc_free(&p);
    return rc;
}

int tf_try_read_patch(const char *path, tf_buf_t *patch, tf_try_err_t *err)
{
    int rc;
    int fd = strcmp(path, "-") == 0 ? 0 : open(path, O_RDONLY | O_CLOEXEC);
    const char *name = fd == 0 ? "standard input" : path;
    char chunk[65536];

    if (fd < 0) {
        tf_try_errf(err, "cannot open the patch %s: %s", path, strerror(errno));
        return TF_EIO;
    }
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            tf_try_errf(err, "cannot read the patch from %s: %s", name,
                        strerror(errno));
            rc = TF_EIO;
            goto out;
        }
        if (n == 0)
            break;
        rc = tf_buf_append(patch, chunk, (size_t)n);
        if (rc == TF_E2BIG) {
            tf_try_errf(err, "the patch in %s is larger than %zu MiB; raise "
                             "the limit with --max-patch-mb N",
                        name, patch->max / (1024 * 1024));
            goto out;
        }
        if (rc < 0)
            goto out;
    }
    rc = 0;
out:
    if (fd > 0)
        close(fd);
    return rc;
}
