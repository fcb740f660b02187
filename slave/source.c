/*
 * source.c - the builtin "source" step (see source.h for the design).
 *
 * The script is plain POSIX sh so it runs on any slave with git; every
 * command it runs is echoed ("+ git fetch ...") so the step's log reads
 * like a transcript, and git's own messages land in the log unchanged.
 * The download helper runs in the step's process group, not in the
 * daemon: it may block, and it dies with the step on a timeout or abort.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "crypto.h"
#include "source.h"
#include "tf_err.h"
#include "util.h"

const char tf_source_script[] =
    "set -u\n"
    "step() { printf '+ %s\\n' \"$*\"; \"$@\"; }\n"
    "if [ ! -d .git ]; then\n"
    "  step git init -q . || exit 20\n"
    "fi\n"
    "if git remote get-url origin >/dev/null 2>&1; then\n"
    "  step git remote set-url origin \"$TF_SRC_REPOSITORY\" || exit 20\n"
    "else\n"
    "  step git remote add origin \"$TF_SRC_REPOSITORY\" || exit 20\n"
    "fi\n"
    "step git fetch --no-tags origin "
    "\"+refs/heads/$TF_SRC_BRANCH:refs/remotes/origin/$TF_SRC_BRANCH\" "
    "|| exit 21\n"
    "if [ -n \"$TF_SRC_REVISION\" ]; then\n"
    "  target=$TF_SRC_REVISION\n"
    "  if ! git cat-file -e \"$target^{commit}\" 2>/dev/null; then\n"
    "    step git fetch --no-tags origin \"$target\" || exit 22\n"
    "  fi\n"
    "else\n"
    "  target=origin/$TF_SRC_BRANCH\n"
    "fi\n"
    "if ! git cat-file -e \"$target^{commit}\" 2>/dev/null; then\n"
    "  echo \"error: revision $target not found\" >&2\n"
    "  exit 22\n"
    "fi\n"
    "step git checkout -q -f --detach \"$target\" || exit 23\n"
    "step git reset -q --hard || exit 23\n"
    "step git clean -q -ffd || exit 23\n"
    "if [ -n \"$TF_SRC_PATCH_SHA256\" ]; then\n"
    "  step \"$TF_SLAVE_EXE\" --fetch-patch --url \"$TF_SRC_MASTER\" "
    "--name \"$TF_SRC_SLAVE\" --secret-file \"$TF_SRC_SECRET_FILE\" "
    "--sha256 \"$TF_SRC_PATCH_SHA256\" --size \"$TF_SRC_PATCH_SIZE\" "
    "--out \"$TF_SRC_PATCH_FILE\" "
    "${TF_SRC_CA_FILE:+--ca-file \"$TF_SRC_CA_FILE\"} || exit 24\n"
    "  if ! step git apply --index --binary \"$TF_SRC_PATCH_FILE\"; then\n"
    "    rm -f \"$TF_SRC_PATCH_FILE\"\n"
    "    echo 'error: patch does not apply' >&2\n"
    "    exit 25\n"
    "  fi\n"
    "  rm -f \"$TF_SRC_PATCH_FILE\"\n"
    "fi\n"
    "rev=$(git rev-parse HEAD) || exit 23\n"
    "printf '%s\\n' \"$rev\" > \"$TF_SRC_PROPS_FILE\" || exit 23\n"
    "echo \"got_revision: $rev\"\n";

const char *tf_source_exit_text(int status)
{
    switch (status) {
    case TF_SOURCE_EREPO: return "cannot set up the git repository";
    case TF_SOURCE_EFETCH: return "git fetch of the branch failed";
    case TF_SOURCE_EREVISION: return "revision not found";
    case TF_SOURCE_ECHECKOUT: return "git checkout failed";
    case TF_SOURCE_EDOWNLOAD: return "cannot download the patch";
    case TF_SOURCE_EAPPLY: return "patch does not apply";
    default: return NULL;
    }
}

static int tf__env_put(char **env, size_t *n, size_t max, const char *key,
                       const char *value)
{
    if (*n >= max)
        return TF_E2BIG;
    size_t kl = strlen(key), vl = strlen(value);
    char *e = malloc(kl + vl + 2);
    if (!e)
        return TF_ENOMEM;
    memcpy(e, key, kl);
    e[kl] = '=';
    memcpy(e + kl + 1, value, vl + 1);
    env[(*n)++] = e;
    return 0;
}

int tf_source_env(const tf_source_ctx_t *ctx, const tf_source_t *src,
                  const char *patch_path, const char *props_path, char **env,
                  size_t *n, size_t max)
{
    char size[32];
    snprintf(size, sizeof size, "%llu", (unsigned long long)src->patch_size);
    const char *kv[][2] = {
        {"TF_SRC_REPOSITORY", src->repository},
        {"TF_SRC_BRANCH", src->branch},
        {"TF_SRC_REVISION", src->revision ? src->revision : ""},
        {"TF_SRC_PATCH_SHA256", src->has_patch ? src->patch_sha256 : ""},
        {"TF_SRC_PATCH_SIZE", size},
        {"TF_SRC_PATCH_FILE", patch_path},
        {"TF_SRC_PROPS_FILE", props_path},
        {"TF_SRC_MASTER", ctx->http_base},
        {"TF_SRC_SLAVE", ctx->name},
        {"TF_SRC_SECRET_FILE", ctx->secret_file},
        {"TF_SRC_CA_FILE", ctx->ca_file ? ctx->ca_file : ""},
        {"TF_SLAVE_EXE", ctx->self_exe},
        /* Never wait for a password nobody will type. */
        {"GIT_TERMINAL_PROMPT", "0"},
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        int rc = tf__env_put(env, n, max, kv[i][0], kv[i][1] ? kv[i][1] : "");
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- tf-slave --fetch-patch ------------------------------------------- */

typedef struct {
    int fd;
    uint64_t got;
    uint64_t want;
    tf_sha256_t *sha;
    bool too_big;
    int write_errno;
} tf__dl_t;

static size_t tf__dl_write(char *p, size_t size, size_t nmemb, void *arg)
{
    tf__dl_t *d = arg;
    size_t n = size * nmemb;
    if (d->got + n > d->want) {
        d->too_big = true;
        return 0; /* makes curl stop with a write error */
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(d->fd, p + off, n - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            d->write_errno = errno;
            return 0;
        }
        off += (size_t)w;
    }
    tf_sha256_update(d->sha, p, n);
    d->got += n;
    return n;
}

static bool tf__is_hex64(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return i == TF_SHA256_HEX_LEN;
}

int tf_source_fetch_main(int argc, char **argv)
{
    const char *url = NULL, *name = NULL, *secret_file = NULL, *sha = NULL,
               *size_s = NULL, *out_path = NULL, *ca = NULL;
    char *secret = NULL, *full = NULL, errbuf[CURL_ERROR_SIZE] = "";
    char path[128], msg[256], sig[TF_SHA256_HEX_LEN + 1], hdr[512], got[65];
    struct curl_slist *headers = NULL;
    CURL *h = NULL;
    tf__dl_t d = {.fd = -1};
    uint64_t size = 0;
    int status = 1;

    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--url") == 0) url = v;
        else if (strcmp(k, "--name") == 0) name = v;
        else if (strcmp(k, "--secret-file") == 0) secret_file = v;
        else if (strcmp(k, "--sha256") == 0) sha = v;
        else if (strcmp(k, "--size") == 0) size_s = v;
        else if (strcmp(k, "--out") == 0) out_path = v;
        else if (strcmp(k, "--ca-file") == 0) ca = v;
    }
    if (!url || !name || !secret_file || !sha || !size_s || !out_path ||
        !tf__is_hex64(sha) || tf_parse_u64(size_s, &size)) {
        fprintf(stderr, "error: --fetch-patch: bad or missing arguments\n");
        return 1;
    }
    if (tf_read_secret(secret_file, &secret)) {
        fprintf(stderr, "error: cannot read the secret from %s\n",
                secret_file);
        return 1;
    }
    snprintf(path, sizeof path, "/api/v1/patches/%s", sha);
    size_t ul = strlen(url);
    full = malloc(ul + strlen(path) + 1);
    if (!full)
        goto out;
    memcpy(full, url, ul);
    memcpy(full + ul, path, strlen(path) + 1);
    /* Signed now, not when the step started: the master allows a few
     * minutes of skew and a fetch can take longer than that. */
    long long now = (long long)time(NULL);
    int mlen = snprintf(msg, sizeof msg, "GET %s\n%lld", path, now);
    tf_hmac_sha256_hex(secret, strlen(secret), msg, (size_t)mlen, sig);
    snprintf(hdr, sizeof hdr, "Authorization: TF-Slave name=%s,time=%lld,"
             "sig=%s", name, now, sig);

    d.fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    d.want = size;
    d.sha = tf_sha256_new();
    if (d.fd < 0 || !d.sha) {
        fprintf(stderr, "error: cannot create %s: %s\n", out_path,
                strerror(errno));
        goto out;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || !(h = curl_easy_init())) {
        fprintf(stderr, "error: cannot initialise libcurl\n");
        goto out;
    }
    headers = curl_slist_append(NULL, hdr);
    curl_easy_setopt(h, CURLOPT_URL, full);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, tf__dl_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &d);
    curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "tf-slave/" TF_VERSION);
    if (ca && *ca)
        curl_easy_setopt(h, CURLOPT_CAINFO, ca);
    fprintf(stderr, "downloading patch %s (%llu bytes) from %s\n", sha,
            (unsigned long long)size, full);
    CURLcode cc = curl_easy_perform(h);
    if (d.too_big) {
        fprintf(stderr, "error: the master sent more than the %llu bytes of "
                "the patch\n", (unsigned long long)size);
        goto out;
    }
    if (d.write_errno) {
        fprintf(stderr, "error: writing %s: %s\n", out_path,
                strerror(d.write_errno));
        goto out;
    }
    if (cc != CURLE_OK) {
        fprintf(stderr, "error: cannot download the patch from %s: %s\n", full,
                errbuf[0] ? errbuf : curl_easy_strerror(cc));
        goto out;
    }
    tf_sha256_final_hex(d.sha, got);
    d.sha = NULL;
    if (d.got != size || strcmp(got, sha) != 0) {
        fprintf(stderr, "error: the patch from %s has %llu bytes and SHA-256 "
                "%s, expected %llu bytes and %s\n", full,
                (unsigned long long)d.got, got, (unsigned long long)size, sha);
        goto out;
    }
    status = 0;
out:
    if (d.sha)
        tf_sha256_final_hex(d.sha, got); /* frees it */
    if (d.fd >= 0)
        close(d.fd);
    if (status)
        unlink(out_path);
    curl_slist_free_all(headers);
    if (h)
        curl_easy_cleanup(h);
    curl_global_cleanup();
    if (secret) {
        explicit_bzero(secret, strlen(secret));
        free(secret);
    }
    free(full);
    return status;
}
