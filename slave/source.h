/*
 * source.h - the builtin "source" step: a clean git checkout of
 * build_start.source, with the try job's patch applied.
 *
 * The step runs like any other step, as a child process group, so its
 * timeouts, aborts, log streaming and "nothing survives a step" rule are
 * the runner's: the child is /bin/sh running tf_source_script (git commands
 * echoed into the step's log), and the patch is downloaded by this same
 * binary in a helper mode (tf-slave --fetch-patch ...) that signs the
 * request at download time, so a long fetch never outlives the master's
 * allowed clock skew. The script tells which stage failed by its exit
 * status (TF_SOURCE_E*), which tf_source_exit_text turns into the step's
 * EXCEPTION text; the checked-out commit comes back through a file as the
 * step property got_revision.
 */
#ifndef TF_SOURCE_H
#define TF_SOURCE_H

#include <stddef.h>

#include "proto.h"

/* Exit statuses of the source script, one per stage. */
#define TF_SOURCE_EREPO 20      /* git init / remote setup failed */
#define TF_SOURCE_EFETCH 21     /* fetching the branch failed */
#define TF_SOURCE_EREVISION 22  /* the revision cannot be found */
#define TF_SOURCE_ECHECKOUT 23  /* checkout / reset / clean failed */
#define TF_SOURCE_EDOWNLOAD 24  /* the patch could not be downloaded */
#define TF_SOURCE_EAPPLY 25     /* the patch does not apply */

/* What a source step needs besides the build. Borrowed strings. */
typedef struct tf_source_ctx {
    const char *self_exe;    /* this binary, for --fetch-patch */
    const char *http_base;   /* "http://host:port" or "https://..." */
    const char *name;        /* slave name, for the patch request */
    const char *secret_file; /* read by the helper, never put in env */
    const char *ca_file;     /* NULL: the system's CAs */
} tf_source_ctx_t;

/* The script run as `/bin/sh -c tf_source_script`. */
extern const char tf_source_script[];

/* Appends the TF_SRC_* variables the script reads to env[*n] (malloc'd
 * "K=V" strings, at most max entries in all). Returns 0, TF_E2BIG or
 * TF_ENOMEM. */
int tf_source_env(const tf_source_ctx_t *ctx, const tf_source_t *src,
                  const char *patch_path, const char *props_path, char **env,
                  size_t *n, size_t max);

/* The EXCEPTION text for a script exit status, or NULL when the status is
 * not one of TF_SOURCE_E*. */
const char *tf_source_exit_text(int status);

/* main() of `tf-slave --fetch-patch --url U --name N --secret-file F
 * --sha256 HEX --size N --out PATH [--ca-file F]` (argv[0] is
 * "--fetch-patch"). Downloads, checks size and SHA-256, writes PATH.
 * Returns the process exit status: 0, or 1 with a sentence on stderr. */
int tf_source_fetch_main(int argc, char **argv);

#endif
