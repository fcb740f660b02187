/*
 * main.c - tf-try, the committer's command: options, the configuration
 * layers, and the commands (submit, status, list, cancel, whoami).
 *
 * A run is a straight line: parse the command line, load the
 * configuration (tryconf.c), then one command. Submitting makes or reads
 * the patch (patch.c), posts it (client.c) and, with --wait, polls the job
 * and prints what changed (watch.c) until the job is over. Everything the
 * user reads goes to stdout; problems go to stderr as "tf-try: SENTENCE".
 * The exit status says how it went (try.h; docs/committers.md).
 *
 * SIGINT and SIGTERM only set a flag: the transfer in progress is aborted
 * through curl's progress callback and the wait loop notices between
 * polls, so the job on the master is never touched by an interrupt.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "client.h"
#include "clock.h"
#include "crypto.h"
#include "email.h"
#include "names.h"
#include "patch.h"
#include "tf_err.h"
#include "live.h"
#include "try.h"
#include "tryconf.h"
#include "utf8.h"
#include "util.h"
#include "watch.h"

#define DEFAULT_POLL_MS 1000
#define DEFAULT_TAIL 30
#define DEFAULT_MAX_PATCH_MB 50
#define LIST_LIMIT 20
#define LOG_TAIL_BYTES 65536
#define MAX_FAILED_TESTS 20 /* failing tests shown per build */
#define RETRY_FOR_MS 60000
#define RETRY_MAX_DELAY_MS 10000
#define LIVE_SAFETY_POLLS 5 /* with the live feed up: a snapshot every 5 polls */

typedef enum {
    CMD_SUBMIT,
    CMD_STATUS,
    CMD_LIST,
    CMD_CANCEL,
    CMD_WHOAMI,
    CMD_BUILDERS,
    CMD_RETRY,
} cmd_t;

typedef struct opts {
    cmd_t cmd;
    long long job_id;
    const char *url;
    tf_try_strv_t builders;      /* from -b; has_builders when given */
    bool has_builders;
    tf_try_strv_t tests_all;     /* --test: for every builder */
    json_t *tests_by;            /* --tests B=T1,T2: builder -> array */
    json_t *props;               /* -p NAME=VALUE: name -> value */
    bool failed_only;            /* retry --failed */
    const char *base;
    const char *upstream;
    const char *diff;
    const char *description;
    const char *review_url;
    const char *patchset;
    const char *email;
    const char *config;
    const char *token_file;
    const char *ca_file;
    bool include_untracked;
    bool no_email;
    bool dry_run;
    bool wait;
    bool new_failures_only;
    bool no_reuse;
    bool no_live;                /* --no-live: poll only */
    bool quiet;
    bool verbose;
    bool allow_empty;
    bool all;
    long long poll_ms;
    long long tail;
    long long max_patch_mb;
} opts_t;

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
    va_list ap;
    char msg[2048];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "tf-try: %s\n", msg);
}

static void emit(tf_buf_t *b)
{
    if (b->len > 0) {
        fwrite(b->data, 1, b->len, stdout);
        fflush(stdout);
    }
    tf_buf_reset(b);
}

static const char usage_text[] =
    "usage: tf-try [OPTIONS]            submit the work tree's changes as a try job\n"
    "       tf-try status JOB [--wait]  show a job (and follow it with --wait)\n"
    "       tf-try list [--all]         your recent jobs (--all: everybody's)\n"
    "       tf-try cancel JOB           cancel a job's pending and running builds\n"
    "       tf-try whoami               check the URL and token\n"
    "       tf-try builders             the builders you may use, with their state\n"
    "       tf-try retry JOB [--failed] run a job's builders again (--failed: only\n"
    "                                   those that did not pass), same patch and base\n"
    "\n"
    "Where and what:\n"
    "  --url URL               the master, e.g. http://127.0.0.1:8010/\n"
    "  -b, --builder NAME      a builder to run on (repeatable; NAME,NAME...)\n"
    "  --test TEST             a test to run on every chosen builder (repeatable)\n"
    "  --tests BUILDER=T1,T2   tests to run on one builder (repeatable)\n"
    "  -p, --property NAME=VALUE  a build property (repeatable); the builders\n"
    "                          must allow it (tf-try builders lists which)\n"
    "The patch:\n"
    "  --base REV              the commit to apply the patch to (default: the\n"
    "                          merge-base of HEAD and the upstream branch)\n"
    "  --upstream REF          the upstream branch (default: @{upstream}, then\n"
    "                          origin/HEAD, origin/main, origin/master)\n"
    "  --diff FILE             send FILE as the patch, as is ('-': stdin)\n"
    "  --include-untracked     also send untracked files not in .gitignore\n"
    "  --allow-empty           submit even when there are no changes\n"
    "  --max-patch-mb N        refuse patches over N MiB (default 50)\n"
    "About the job:\n"
    "  -m, --description TEXT  default: the last commit's subject\n"
    "  --review-url URL        the code review the patch belongs to\n"
    "  --patchset N            the review's patchset\n"
    "  --email ADDR            send the result mail here\n"
    "  --no-email              send no result mail\n"
    "Running:\n"
    "  --dry-run               show what would be sent; send nothing\n"
    "  --wait                  follow the job until it is over; exit 0 when\n"
    "                          every build passed, 1 when one did not\n"
    "  --no-reuse              run even when an identical request (base,\n"
    "                          patch, tests, properties) already passed\n"
    "  --new-failures-only     the verdict (--wait's exit status, the mail's\n"
    "                          subject) counts only failures that are not\n"
    "                          also failing without the patch\n"
    "  --poll-ms N             how often --wait asks while the live feed is\n"
    "                          down (default 1000)\n"
    "  --no-live               --wait polls the job instead of following the\n"
    "                          master's live feed\n"
    "  --tail N                log lines of a failing step to show (default 30)\n"
    "  --config FILE           use FILE instead of ~/.config/tf-try/config.json\n"
    "  --token-file FILE       default ~/.config/tf-try/token (mode 600)\n"
    "  --ca-file FILE          CA bundle to verify an https:// master (e.g.\n"
    "                          its self-signed certificate)\n"
    "  -q, --quiet             print only the job line (and the summary)\n"
    "  -v, --verbose           trace the HTTP requests (never the token)\n"
    "  -h, --help, -V, --version\n"
    "\n"
    "Exit status: 0 submitted, or every build passed (--wait); 1 a build did\n"
    "not pass (--wait; with --new-failures-only: a build failed with a new\n"
    "failure); 2 usage, configuration, git, network, authentication\n"
    "or submission error; 130 interrupted. See docs/committers.md.\n";

enum {
    OPT_URL = 256,
    OPT_TEST,
    OPT_TESTS,
    OPT_BASE,
    OPT_UPSTREAM,
    OPT_DIFF,
    OPT_INCLUDE_UNTRACKED,
    OPT_REVIEW_URL,
    OPT_PATCHSET,
    OPT_EMAIL,
    OPT_NO_EMAIL,
    OPT_DRY_RUN,
    OPT_WAIT,
    OPT_NEW_FAILURES_ONLY,
    OPT_NO_REUSE,
    OPT_NO_LIVE,
    OPT_POLL_MS,
    OPT_TAIL,
    OPT_CONFIG,
    OPT_TOKEN_FILE,
    OPT_CA_FILE,
    OPT_MAX_PATCH_MB,
    OPT_ALLOW_EMPTY,
    OPT_ALL,
    OPT_FAILED,
};

static const struct option long_opts[] = {
    {"url", required_argument, NULL, OPT_URL},
    {"builder", required_argument, NULL, 'b'},
    {"test", required_argument, NULL, OPT_TEST},
    {"tests", required_argument, NULL, OPT_TESTS},
    {"base", required_argument, NULL, OPT_BASE},
    {"upstream", required_argument, NULL, OPT_UPSTREAM},
    {"diff", required_argument, NULL, OPT_DIFF},
    {"include-untracked", no_argument, NULL, OPT_INCLUDE_UNTRACKED},
    {"description", required_argument, NULL, 'm'},
    {"review-url", required_argument, NULL, OPT_REVIEW_URL},
    {"patchset", required_argument, NULL, OPT_PATCHSET},
    {"email", required_argument, NULL, OPT_EMAIL},
    {"no-email", no_argument, NULL, OPT_NO_EMAIL},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {"wait", no_argument, NULL, OPT_WAIT},
    {"new-failures-only", no_argument, NULL, OPT_NEW_FAILURES_ONLY},
    {"no-reuse", no_argument, NULL, OPT_NO_REUSE},
    {"no-live", no_argument, NULL, OPT_NO_LIVE},
    {"poll-ms", required_argument, NULL, OPT_POLL_MS},
    {"tail", required_argument, NULL, OPT_TAIL},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
    {"ca-file", required_argument, NULL, OPT_CA_FILE},
    {"max-patch-mb", required_argument, NULL, OPT_MAX_PATCH_MB},
    {"allow-empty", no_argument, NULL, OPT_ALLOW_EMPTY},
    {"all", no_argument, NULL, OPT_ALL},
    {"failed", no_argument, NULL, OPT_FAILED},
    {"property", required_argument, NULL, 'p'},
    {"quiet", no_argument, NULL, 'q'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

/* Parses a number option within [lo, hi]. */
static bool parse_num(const char *opt, const char *s, long long lo,
                      long long hi, long long *out)
{
    int64_t v;
    if (tf_parse_i64(s, &v) < 0 || v < lo || v > hi) {
        fail("%s wants a whole number from %lld to %lld, not \"%.64s\"", opt,
             lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

/* --tests BUILDER=T1,T2: adds the tests to o->tests_by[BUILDER]. */
static bool parse_tests_opt(opts_t *o, const char *arg)
{
    const char *eq = strchr(arg, '=');
    char name[TF_NAME_MAX + 1];
    tf_try_strv_t tests = {0};
    bool ok = false;

    if (!eq || (size_t)(eq - arg) > TF_NAME_MAX) {
        fail("--tests wants BUILDER=TEST1,TEST2, not \"%.100s\"", arg);
        return false;
    }
    memcpy(name, arg, (size_t)(eq - arg));
    name[eq - arg] = '\0';
    if (!tf_name_valid(name)) {
        fail("--tests: \"%s\" is not a builder name (1-64 of A-Z a-z 0-9 . _ -)",
             name);
        return false;
    }
    if (tf_try_strv_push_split(&tests, eq + 1, ',') < 0 || tests.n == 0) {
        fail("--tests %s= names no tests", name);
        goto out;
    }
    json_t *list = json_object_get(o->tests_by, name);
    if (!list) {
        list = json_array();
        if (!list || json_object_set_new(o->tests_by, name, list) < 0)
            goto out;
    }
    for (size_t i = 0; i < tests.n; i++)
        if (json_array_append_new(list, json_string(tests.v[i])) < 0)
            goto out;
    ok = true;
out:
    tf_try_strv_clear(&tests);
    return ok;
}

/* -p NAME=VALUE: adds the property to o->props. */
static bool parse_prop_opt(opts_t *o, const char *arg)
{
    const char *eq = strchr(arg, '=');
    char name[TF_NAME_MAX + 1];
    if (!eq || eq == arg || (size_t)(eq - arg) > TF_NAME_MAX) {
        fail("-p wants NAME=VALUE, not \"%.100s\"", arg);
        return false;
    }
    memcpy(name, arg, (size_t)(eq - arg));
    name[eq - arg] = '\0';
    if (!tf_name_valid(name)) {
        fail("-p: \"%s\" is not a property name (1-64 of A-Z a-z 0-9 . _ -)",
             name);
        return false;
    }
    if (strlen(eq + 1) > 4096 || !tf_utf8_valid(eq + 1,
                                                 strlen(eq + 1))) {
        fail("-p %s: the value must be UTF-8 text of at most 4096 bytes",
             name);
        return false;
    }
    if (json_object_get(o->props, name)) {
        fail("-p %s is given twice", name);
        return false;
    }
    return json_object_set_new(o->props, name, json_string(eq + 1)) == 0;
}

/* Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, opts_t *o)
{
    int c;
    o->poll_ms = DEFAULT_POLL_MS;
    o->tail = DEFAULT_TAIL;
    o->max_patch_mb = DEFAULT_MAX_PATCH_MB;
    o->tests_by = json_object();
    o->props = json_object();
    if (!o->tests_by || !o->props)
        return TF_TRY_EXIT_ERROR;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":b:m:p:qvhV", long_opts, NULL)) !=
           -1) {
        switch (c) {
        case OPT_URL: o->url = optarg; break;
        case 'b':
            o->has_builders = true;
            if (tf_try_strv_push_split(&o->builders, optarg, ',') < 0) {
                fail("too many builders");
                return TF_TRY_EXIT_ERROR;
            }
            break;
        case OPT_TEST:
            if (tf_try_strv_push(&o->tests_all, optarg) < 0) {
                fail("too many tests");
                return TF_TRY_EXIT_ERROR;
            }
            break;
        case OPT_TESTS:
            if (!parse_tests_opt(o, optarg))
                return TF_TRY_EXIT_ERROR;
            break;
        case OPT_BASE: o->base = optarg; break;
        case OPT_UPSTREAM: o->upstream = optarg; break;
        case OPT_DIFF: o->diff = optarg; break;
        case OPT_INCLUDE_UNTRACKED: o->include_untracked = true; break;
        case 'm': o->description = optarg; break;
        case OPT_REVIEW_URL: o->review_url = optarg; break;
        case OPT_PATCHSET: o->patchset = optarg; break;
        case OPT_EMAIL: o->email = optarg; break;
        case OPT_NO_EMAIL: o->no_email = true; break;
        case OPT_DRY_RUN: o->dry_run = true; break;
        case OPT_WAIT: o->wait = true; break;
        case OPT_NEW_FAILURES_ONLY: o->new_failures_only = true; break;
        case OPT_NO_REUSE: o->no_reuse = true; break;
        case OPT_NO_LIVE: o->no_live = true; break;
        case OPT_POLL_MS:
            if (!parse_num("--poll-ms", optarg, 100, 600000, &o->poll_ms))
                return TF_TRY_EXIT_ERROR;
            break;
        case OPT_TAIL:
            if (!parse_num("--tail", optarg, 0, 10000, &o->tail))
                return TF_TRY_EXIT_ERROR;
            break;
        case OPT_MAX_PATCH_MB:
            if (!parse_num("--max-patch-mb", optarg, 1, 1024, &o->max_patch_mb))
                return TF_TRY_EXIT_ERROR;
            break;
        case OPT_CONFIG: o->config = optarg; break;
        case OPT_TOKEN_FILE: o->token_file = optarg; break;
        case OPT_CA_FILE: o->ca_file = optarg; break;
        case OPT_ALLOW_EMPTY: o->allow_empty = true; break;
        case OPT_ALL: o->all = true; break;
        case OPT_FAILED: o->failed_only = true; break;
        case 'p':
            if (!parse_prop_opt(o, optarg))
                return TF_TRY_EXIT_ERROR;
            break;
        case 'q': o->quiet = true; break;
        case 'v': o->verbose = true; break;
        case 'h':
            fputs(usage_text, stdout);
            return TF_TRY_EXIT_OK;
        case 'V':
            printf("tf-try %s\n", TF_VERSION);
            return TF_TRY_EXIT_OK;
        case ':':
            fail("%s needs a value (see tf-try --help)", argv[optind - 1]);
            return TF_TRY_EXIT_ERROR;
        default:
            if (optopt)
                fail("unknown option -%c (see tf-try --help)", optopt);
            else
                fail("unknown option %s (see tf-try --help)",
                     argv[optind - 1]);
            return TF_TRY_EXIT_ERROR;
        }
    }

    int npos = argc - optind;
    const char *cmd = npos > 0 ? argv[optind] : NULL;
    if (!cmd) {
        o->cmd = CMD_SUBMIT;
    } else if (strcmp(cmd, "status") == 0 || strcmp(cmd, "cancel") == 0 ||
               strcmp(cmd, "retry") == 0) {
        o->cmd = strcmp(cmd, "status") == 0   ? CMD_STATUS
                 : strcmp(cmd, "cancel") == 0 ? CMD_CANCEL
                                              : CMD_RETRY;
        uint64_t id;
        if (npos != 2 || tf_parse_u64(argv[optind + 1], &id) < 0 || id == 0 ||
            id > INT64_MAX) {
            fail("usage: tf-try %s JOB%s (JOB is the job's number)", cmd,
                 o->cmd == CMD_RETRY ? " [--failed]" : "");
            return TF_TRY_EXIT_ERROR;
        }
        o->job_id = (long long)id;
    } else if (strcmp(cmd, "list") == 0 || strcmp(cmd, "whoami") == 0 ||
               strcmp(cmd, "builders") == 0) {
        o->cmd = strcmp(cmd, "list") == 0     ? CMD_LIST
                 : strcmp(cmd, "whoami") == 0 ? CMD_WHOAMI
                                              : CMD_BUILDERS;
        if (npos != 1) {
            fail("usage: tf-try %s%s", cmd, o->cmd == CMD_LIST ? " [--all]" : "");
            return TF_TRY_EXIT_ERROR;
        }
    } else {
        fail("unknown command \"%.64s\" (commands: status, list, cancel, "
             "whoami, builders, retry; none submits; see tf-try --help)",
             cmd);
        return TF_TRY_EXIT_ERROR;
    }
    if (o->failed_only && o->cmd != CMD_RETRY) {
        fail("--failed goes with tf-try retry JOB");
        return TF_TRY_EXIT_ERROR;
    }
    if (json_object_size(o->props) > 0 && o->cmd != CMD_SUBMIT &&
        o->cmd != CMD_RETRY) {
        fail("-p goes with submitting or with tf-try retry JOB");
        return TF_TRY_EXIT_ERROR;
    }
    if (o->all && o->cmd != CMD_LIST) {
        fail("--all goes with tf-try list");
        return TF_TRY_EXIT_ERROR;
    }
    if (o->wait && o->cmd != CMD_SUBMIT && o->cmd != CMD_STATUS &&
        o->cmd != CMD_RETRY) {
        fail("--wait goes with submitting, tf-try status JOB or tf-try retry "
             "JOB");
        return TF_TRY_EXIT_ERROR;
    }
    if (o->no_email && o->email) {
        fail("--email and --no-email exclude each other");
        return TF_TRY_EXIT_ERROR;
    }
    if (o->dry_run && o->wait) {
        fail("--dry-run sends nothing, so there is nothing to --wait for");
        return TF_TRY_EXIT_ERROR;
    }
    return -1;
}

/* ---- context shared by the commands ---- */

typedef struct ctx {
    opts_t *o;
    tf_try_conf_t conf;
    char *toplevel;          /* NULL outside a work tree */
    char *conf_dir;          /* ~/.config/tf-try or NULL */
    char *base_url;          /* the master, ending in '/' */
    char *token;             /* loaded on demand; wiped at the end */
    tf_try_client_t client;
} ctx_t;

/* The master URL from the layers; prints why when missing. */
static bool need_url(ctx_t *c)
{
    const char *url = c->o->url ? c->o->url : c->conf.url;
    if (!url) {
        fail("no master URL: pass --url URL, or set \"url\" in %s/config.json "
             "or in the repository's .tf-try.json",
             c->conf_dir ? c->conf_dir : "~/.config/tf-try");
        return false;
    }
    if (!tf_try_http_url_valid(url)) {
        fail("the master URL \"%.200s\" must start with http:// or https:// "
             "and name a host", url);
        return false;
    }
    c->base_url = tf_try_base_url(url);
    if (!c->base_url)
        return false;
    c->client.base = c->base_url;
    const char *ca = c->o->ca_file ? c->o->ca_file : c->conf.ca_file;
    if (ca && access(ca, R_OK) != 0) {
        fail("cannot read the CA file %.200s: %s", ca, strerror(errno));
        return false;
    }
    c->client.ca_file = ca;
    return true;
}

static bool need_token(ctx_t *c)
{
    tf_try_err_t err = {{0}};
    char *path = NULL;
    const char *file = c->o->token_file ? c->o->token_file : c->conf.token_file;
    if (!file && c->conf_dir) {
        path = tf_path_join(c->conf_dir, "token");
        file = path;
    }
    int rc = tf_try_token_load(getenv("TF_TRY_TOKEN"), file, &c->token, &err);
    free(path);
    if (rc < 0) {
        fail("%s", err.msg[0] ? err.msg : tf_strerror(rc));
        return false;
    }
    c->client.token = c->token;
    return true;
}

static json_t *resp_json(const tf_try_resp_t *r)
{
    if (r->body.len == 0)
        return NULL;
    return json_loadb((const char *)r->body.data, r->body.len, 0, NULL);
}

/* Reports a non-2xx answer: "the master refused WHAT (HTTP 400): ...". */
static void report_refusal(const char *what, const tf_try_resp_t *r)
{
    char msg[512];
    tf_try_resp_error(r, msg, sizeof(msg));
    fail("the master refused %s (HTTP %ld): %s%s", what, r->status, msg,
         r->status == 401 ? " (check your token with: tf-try whoami)" : "");
}

/* One request; prints the failure. Returns 0 with resp filled (any
 * status), -EINTR, or another negative code (already reported). */
static int request(ctx_t *c, const char *method, const char *url, bool auth,
                   const void *body, size_t len, long timeout_s,
                   tf_try_resp_t *resp)
{
    tf_try_err_t err = {{0}};
    tf_try_req_t r = {
        .method = method, .url = url, .auth = auth, .body = body,
        .body_len = len, .timeout_s = timeout_s,
        .max_body = TF_TRY_MAX_JSON_BYTES,
    };
    int rc = tf_try_http(&c->client, &r, resp, &err);
    if (rc < 0 && rc != -EINTR)
        fail("%s", err.msg[0] ? err.msg : tf_strerror(rc));
    return rc;
}

/* ---- watching a job ---- */

/* The log URL to fetch: the master builds links from its configured
 * "url", which may differ from the address we reach it at; the path from
 * "api/v1/" on is joined to ours. */
static char *log_url(const ctx_t *c, const char *url)
{
    const char *p = strstr(url, "/api/v1/");
    if (p)
        return tf_try_url(c->base_url, "%s", p + 1);
    return strdup(url);
}

/* Fetches the end of a failing step's log and prints its last lines. */
static void print_tail(ctx_t *c, const json_t *tail, tf_buf_t *out)
{
    tf_try_err_t err = {{0}};
    tf_try_resp_t resp;
    char range[32];
    char *url = log_url(c, json_string_value(json_object_get(tail, "url")));
    bool from_start = true;
    int rc;

    if (!url)
        return;
    snprintf(range, sizeof(range), "bytes=-%d", LOG_TAIL_BYTES);
    tf_try_req_t r = {
        .method = "GET", .url = url, .auth = false, .range = range,
        .timeout_s = TF_TRY_GET_TIMEOUT_S, .max_body = 2 * LOG_TAIL_BYTES,
    };
    rc = tf_try_http(&c->client, &r, &resp, &err);
    if (rc == 0 && resp.status == 416) {
        /* A suffix range of an empty log cannot be satisfied. */
        tf_buf_reset(&resp.body);
        resp.status = 206;
    }
    if (rc == 0 && (resp.status == 200 || resp.status == 206)) {
        const uint8_t *data = resp.body.data;
        size_t len = resp.body.len;
        if (resp.status == 206)
            from_start = strncmp(resp.content_range, "bytes 0-", 8) == 0 ||
                         len == 0;
        if (len > LOG_TAIL_BYTES) { /* a master that ignored Range */
            data += len - LOG_TAIL_BYTES;
            len = LOG_TAIL_BYTES;
            from_start = false;
        }
        tf_try_render_tail(tail, data ? data : (const uint8_t *)"", len,
                           from_start, (unsigned)c->o->tail, out);
    } else {
        char msg[256] = "";
        if (rc == 0)
            snprintf(msg, sizeof(msg), "HTTP %ld", resp.status);
        tf_buf_printf(out, "%s: (cannot fetch the log of step %s: %s)\n",
                      json_string_value(json_object_get(tail, "builder")),
                      json_string_value(json_object_get(tail, "step")),
                      rc == 0 ? msg : err.msg);
    }
    if (rc == 0)
        tf_try_resp_free(&resp);
    free(url);
}

/* Fetches a failed build's failing tests and prints them (before its
 * log tail): the author sees the test, its message and its lines first. */
static void print_failed_tests(ctx_t *c, const json_t *tail, tf_buf_t *out)
{
    const char *tests_url = json_string_value(json_object_get(tail,
                                                              "tests_url"));
    tf_try_err_t err = {{0}};
    tf_try_resp_t resp;
    char *url, *full;
    json_t *answer;
    int rc;

    if (!tests_url)
        return;
    url = log_url(c, tests_url);
    if (!url)
        return;
    size_t n = strlen(url) + 64;
    full = malloc(n);
    if (!full) {
        free(url);
        return;
    }
    snprintf(full, n, "%s?status=fail,flaky&limit=%d", url,
             MAX_FAILED_TESTS + 1);
    free(url);
    tf_try_req_t r = {.method = "GET", .url = full,
                      .timeout_s = TF_TRY_GET_TIMEOUT_S,
                      .max_body = TF_TRY_MAX_JSON_BYTES};
    rc = tf_try_http(&c->client, &r, &resp, &err);
    if (rc == 0 && resp.status == 200) {
        answer = resp_json(&resp);
        tf_try_render_failed_tests(tail, answer, MAX_FAILED_TESTS, out);
        json_decref(answer);
    } else {
        char msg[256] = "";
        if (rc == 0)
            snprintf(msg, sizeof(msg), "HTTP %ld", resp.status);
        tf_buf_printf(out, "%s: (cannot fetch the failing tests: %s)\n",
                      json_string_value(json_object_get(tail, "builder")),
                      rc == 0 ? msg : err.msg);
    }
    if (rc == 0)
        tf_try_resp_free(&resp);
    free(full);
}

/* Prints a failed build's failing tests and its step's tail. */
static void print_failure(ctx_t *c, const json_t *t)
{
    tf_buf_t tail;
    tf_buf_init(&tail, 1024 * 1024);
    print_failed_tests(c, t, &tail);
    print_tail(c, t, &tail);
    emit(&tail);
    tf_buf_free(&tail);
}

/* Prints the lines of one snapshot with each failing step's tail right
 * after its builder's result line. A build being rerun without its patch
 * (retry_without_patch) has its failures put off into deferred until the
 * rerun has ended, so they are marked against it. */
static void print_changes(ctx_t *c, const tf_buf_t *lines, const json_t *tails,
                          const json_t *job, json_t *deferred)
{
    size_t i, done = 0;
    json_t *t;

    json_array_foreach(tails, i, t) {
        json_int_t at = json_integer_value(json_object_get(t, "at"));
        if (at > (json_int_t)done && at <= (json_int_t)lines->len) {
            fwrite(lines->data + done, 1, (size_t)at - done, stdout);
            done = (size_t)at;
        }
        json_int_t bid = json_integer_value(json_object_get(t, "build_id"));
        if (tf_try_rerun_pending(job, (long long)bid)) {
            printf("%s: build %lld failed; it is being built again without "
                   "the patch, its failing tests follow then\n",
                   json_string_value(json_object_get(t, "builder")),
                   (long long)bid);
            json_array_append(deferred, t);
            continue;
        }
        print_failure(c, t);
    }
    if (lines->len > done)
        fwrite(lines->data + done, 1, lines->len - done, stdout);
    fflush(stdout);
    for (i = 0; i < json_array_size(deferred);) {
        t = json_array_get(deferred, i);
        json_int_t bid = json_integer_value(json_object_get(t, "build_id"));
        if (tf_try_rerun_pending(job, (long long)bid)) {
            i++;
            continue;
        }
        print_failure(c, t);
        json_array_remove(deferred, i);
    }
}

/* Sleeps ms, waking early when a signal set stop_flag. */
static void nap(long long ms)
{
    int64_t until = tf_mono_ms() + ms;
    while (!stop_flag) {
        int64_t left = until - tf_mono_ms();
        if (left <= 0)
            break;
        struct timespec ts = {.tv_sec = 0,
                              .tv_nsec = (left > 100 ? 100 : left) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int interrupted(ctx_t *c, long long job_id)
{
    fprintf(stderr, "\ntf-try: stopped watching job %lld; it keeps running on "
                    "the master. Watch it again with: tf-try status %lld "
                    "--wait%s%s\n",
            job_id, job_id, c->o->url ? " --url " : "",
            c->o->url ? c->o->url : "");
    return TF_TRY_EXIT_INTERRUPTED;
}

/* What --wait does between two looks at the job: follow the live feed
 * (when it is up) or sleep, until the next snapshot is due. */
typedef struct waiter {
    ctx_t *c;
    tf_try_live_t *live;        /* NULL while polling */
    int64_t live_retry_at;      /* when to open the feed again */
    long long live_backoff;
    int64_t next_fetch;         /* when to fetch the job's snapshot */
    long long settle_delay;     /* while a finish is not in a snapshot yet */
} waiter_t;

/* Opens the live feed; on failure polling goes on and a new try is due
 * after a growing delay. */
static void waiter_open_live(waiter_t *wt)
{
    tf_try_err_t err = {{0}};
    json_t *topics = json_pack("[s,s]", "builds", "requests");
    int rc = topics ? tf_try_live_open(wt->c->base_url, wt->c->client.ca_file,
                                       topics, wt->c->o->verbose, &wt->live,
                                       &err)
                    : TF_ENOMEM;
    json_decref(topics);
    if (rc < 0) {
        if (wt->c->o->verbose)
            fprintf(stderr, "tf-try: %s; polling\n",
                    err.msg[0] ? err.msg : tf_strerror(rc));
        wt->live = NULL;
        wt->live_retry_at = tf_mono_ms() + wt->live_backoff;
    }
}

/* The live feed dropped or never came up: poll now (the snapshot fills in
 * what the feed missed) and open it again later. */
static void waiter_live_lost(waiter_t *wt)
{
    if (wt->c->o->verbose)
        fprintf(stderr, "tf-try: %s; polling until it is back\n",
                tf_try_live_why(wt->live));
    tf_try_live_free(wt->live);
    wt->live = NULL;
    wt->live_retry_at = tf_mono_ms() + wt->live_backoff;
    wt->live_backoff = wt->live_backoff * 2 > RETRY_MAX_DELAY_MS
                           ? RETRY_MAX_DELAY_MS
                           : wt->live_backoff * 2;
    if (wt->next_fetch > tf_mono_ms())
        wt->next_fetch = tf_mono_ms();
}

/* Waits until the next snapshot is due, printing what the live feed says
 * meanwhile. Returns 0, or -EINTR when a signal asked to stop. */
static int waiter_wait(waiter_t *wt, tf_try_watch_t *w, tf_buf_t *out)
{
    for (;;) {
        int64_t now = tf_mono_ms();
        if (stop_flag)
            return -EINTR;
        if (!wt->live && !wt->c->o->no_live && now >= wt->live_retry_at)
            waiter_open_live(wt);
        if (now >= wt->next_fetch)
            return 0;
        int64_t until = wt->next_fetch;
        if (!wt->live) {
            if (!wt->c->o->no_live && wt->live_retry_at < until)
                until = wt->live_retry_at;
            nap(until - now);
            continue;
        }
        bool was_up = tf_try_live_state(wt->live) == TF_TRY_LIVE_UP;
        tf_try_live_service(wt->live, (int)(until - now > 200 ? 200
                                                              : until - now));
        bool want = false;
        json_t *ev;
        while ((ev = tf_try_live_next(wt->live)) != NULL) {
            int rc = tf_try_watch_live(w, ev, out, &want);
            json_decref(ev);
            if (rc < 0)
                return rc;
        }
        if (!wt->c->o->quiet)
            emit(out);
        tf_buf_reset(out);
        tf_try_live_state_t st = tf_try_live_state(wt->live);
        if (st == TF_TRY_LIVE_UP && !was_up) {
            /* Subscribed: from now on no event is missed; one snapshot
             * covers what happened before. */
            wt->live_backoff = 1000;
            want = true;
        }
        if (st == TF_TRY_LIVE_DOWN) {
            waiter_live_lost(wt);
            continue;
        }
        if (want && wt->next_fetch > tf_mono_ms())
            wt->next_fetch = tf_mono_ms();
    }
}

/* With --wait, the live feed is opened and subscribed to before the job
 * is submitted: a build that starts at once, with a step that runs and
 * ends within the milliseconds tf-try took to open the feed after the
 * master's answer, is then followed from its first event, not only seen
 * ended in the first snapshot. Waits for the subscription up to
 * LIVE_EARLY_MS; NULL when it does not come up by then (watch_job opens
 * the feed after the submit, as without this). The caller owns what is
 * returned (watch_job takes it). */
#define LIVE_EARLY_MS 2000
static tf_try_live_t *live_before_submit(ctx_t *c)
{
    waiter_t wt = {.c = c, .live_backoff = 1000};
    int64_t until = tf_mono_ms() + LIVE_EARLY_MS;

    if (!c->o->wait || c->o->no_live)
        return NULL;
    waiter_open_live(&wt);
    while (wt.live && !stop_flag) {
        tf_try_live_state_t st = tf_try_live_state(wt.live);
        int64_t left = until - tf_mono_ms();
        if (st == TF_TRY_LIVE_UP)
            return wt.live;
        if (st == TF_TRY_LIVE_DOWN || left <= 0)
            break;
        tf_try_live_service(wt.live, left > 50 ? 50 : (int)left);
    }
    tf_try_live_free(wt.live);
    return NULL;
}

/* Follows the job until it is over, printing each change once: from the
 * live feed as it happens, from a snapshot of the job (GET
 * /api/v1/jobs/ID) when the feed says there is news it does not carry,
 * and from a snapshot every --poll-ms while the feed is down (--no-live:
 * always). Both sources update one memory (watch.c), so a line is never
 * printed twice nor lost when the feed drops. A network failure or a 5xx
 * is retried with a growing delay for up to 60 s. */
static int watch_job(ctx_t *c, tf_try_watch_t *w, long long job_id,
                     tf_try_live_t *live)
{
    int rc, exit_code = TF_TRY_EXIT_ERROR;
    char *url = tf_try_url(c->base_url, "api/v1/jobs/%lld", job_id);
    tf_buf_t out;
    json_t *job = NULL, *tails = NULL;
    json_t *deferred = json_array();
    int64_t failing_since = 0;
    long long delay = c->o->poll_ms;
    waiter_t wt = {.c = c, .live = live, .live_backoff = 1000,
                   .next_fetch = 0, .settle_delay = 20};

    tf_buf_init(&out, 1024 * 1024);
    if (!url)
        goto out;
    if (!wt.live && !c->o->no_live)
        waiter_open_live(&wt);
    for (;;) {
        tf_try_resp_t resp;
        tf_try_err_t err = {{0}};
        tf_try_req_t r = {.method = "GET", .url = url,
                          .timeout_s = TF_TRY_GET_TIMEOUT_S,
                          .max_body = TF_TRY_MAX_JSON_BYTES};
        rc = waiter_wait(&wt, w, &out);
        if (rc == -EINTR || stop_flag) {
            exit_code = interrupted(c, job_id);
            goto out;
        }
        if (rc < 0) {
            fail("out of memory");
            goto out;
        }
        rc = tf_try_http(&c->client, &r, &resp, &err);
        if (rc == -EINTR || stop_flag) {
            if (rc == 0)
                tf_try_resp_free(&resp);
            exit_code = interrupted(c, job_id);
            goto out;
        }
        if (rc == TF_EIO || (rc == 0 && resp.status >= 500)) {
            if (rc == 0) {
                char msg[512];
                tf_try_resp_error(&resp, msg, sizeof(msg));
                tf_try_errf(&err, "the master answered HTTP %ld: %s",
                            resp.status, msg);
                tf_try_resp_free(&resp);
            }
            int64_t now = tf_mono_ms();
            if (failing_since == 0) {
                failing_since = now;
                fail("%s; retrying for up to %d s", err.msg,
                     RETRY_FOR_MS / 1000);
            } else if (now - failing_since >= RETRY_FOR_MS) {
                fail("gave up after %d s: %s; the job may still be running: "
                     "tf-try status %lld", RETRY_FOR_MS / 1000, err.msg,
                     job_id);
                goto out;
            }
            wt.next_fetch = now + delay;
            delay = delay * 2 > RETRY_MAX_DELAY_MS ? RETRY_MAX_DELAY_MS
                                                   : delay * 2;
            continue;
        }
        if (rc < 0) {
            fail("%s", err.msg[0] ? err.msg : tf_strerror(rc));
            goto out;
        }
        if (failing_since) {
            fail("the master answers again");
            failing_since = 0;
            delay = c->o->poll_ms;
        }
        if (resp.status != 200) {
            report_refusal("to show the job", &resp);
            tf_try_resp_free(&resp);
            goto out;
        }
        json_decref(job);
        job = resp_json(&resp);
        tf_try_resp_free(&resp);
        if (!json_is_object(job)) {
            fail("the master's answer about job %lld is not JSON", job_id);
            goto out;
        }
        json_decref(tails);
        tails = json_array();
        if (!tails || tf_try_watch_update(w, job, &out, tails) < 0) {
            fail("out of memory");
            goto out;
        }
        if (!c->o->quiet)
            print_changes(c, &out, tails, job, deferred);
        tf_buf_reset(&out);
        if (tf_try_job_done(job)) {
            if (tf_try_render_summary(job, &out) < 0) {
                fail("out of memory");
                goto out;
            }
            emit(&out);
            bool new_only =
                c->o->new_failures_only ||
                json_is_true(json_object_get(job, "new_failures_only"));
            exit_code = tf_try_job_exit_code(job, new_only) == 0
                            ? TF_TRY_EXIT_OK
                            : TF_TRY_EXIT_FAILED;
            goto out;
        }
        int64_t now = tf_mono_ms();
        if (tf_try_live_state(wt.live) != TF_TRY_LIVE_UP) {
            wt.next_fetch = now + c->o->poll_ms;
        } else if (tf_try_watch_settling(w)) {
            /* The feed said a build ended and the store has not shown it
             * yet: ask again soon, then less and less often. */
            wt.next_fetch = now + wt.settle_delay;
            wt.settle_delay = wt.settle_delay * 2 > c->o->poll_ms
                                  ? c->o->poll_ms
                                  : wt.settle_delay * 2;
        } else {
            /* Live: a snapshot now and then in case an event fell between
             * the feed and a commit. */
            wt.settle_delay = 20;
            wt.next_fetch = now + LIVE_SAFETY_POLLS * c->o->poll_ms;
        }
    }
out:
    tf_try_live_free(wt.live);
    json_decref(job);
    json_decref(tails);
    json_decref(deferred);
    tf_buf_free(&out);
    free(url);
    return exit_code;
}

/* ---- submit ---- */

/* The tests of one builder: --test and --tests when either was given, else
 * the configuration's tests for that builder. Returns a new array. */
static json_t *tests_for(const ctx_t *c, const char *builder)
{
    json_t *arr = json_array();
    const opts_t *o = c->o;
    bool from_cli = o->tests_all.n > 0 || json_object_size(o->tests_by) > 0;
    size_t i;
    json_t *t;
    tf_try_strv_t seen = {0};

    if (!arr)
        return NULL;
    if (from_cli) {
        for (i = 0; i < o->tests_all.n; i++)
            if (!tf_try_strv_has(&seen, o->tests_all.v[i]) &&
                (tf_try_strv_push(&seen, o->tests_all.v[i]) < 0 ||
                 json_array_append_new(arr, json_string(o->tests_all.v[i])) < 0))
                goto fail;
        json_array_foreach(json_object_get(o->tests_by, builder), i, t)
            if (!tf_try_strv_has(&seen, json_string_value(t)) &&
                (tf_try_strv_push(&seen, json_string_value(t)) < 0 ||
                 json_array_append(arr, t) < 0))
                goto fail;
    } else {
        json_array_foreach(json_object_get(c->conf.tests, builder), i, t)
            if (!tf_try_strv_has(&seen, json_string_value(t)) &&
                (tf_try_strv_push(&seen, json_string_value(t)) < 0 ||
                 json_array_append(arr, t) < 0))
                goto fail;
    }
    tf_try_strv_clear(&seen);
    return arr;
fail:
    tf_try_strv_clear(&seen);
    json_decref(arr);
    return NULL;
}

/* Checks the builders and tests and builds their part of the metadata. */
static bool build_targets(ctx_t *c, json_t *meta, const tf_try_strv_t **out_b)
{
    const opts_t *o = c->o;
    const tf_try_strv_t *b = o->has_builders ? &o->builders : &c->conf.builders;
    json_t *arr = json_array(), *tests = json_object();
    const char *key;
    json_t *v;
    bool ok = false;

    if (!arr || !tests)
        goto out;
    if (b->n == 0) {
        fail("no builders: pass -b NAME, or set \"builders\" in %s/config.json "
             "or in the repository's .tf-try.json",
             c->conf_dir ? c->conf_dir : "~/.config/tf-try");
        goto out;
    }
    for (size_t i = 0; i < b->n; i++) {
        if (!tf_name_valid(b->v[i])) {
            fail("\"%.100s\" is not a builder name (1-64 of A-Z a-z 0-9 . _ -, "
                 "starting with a letter or digit)", b->v[i]);
            goto out;
        }
        bool dup = false;
        for (size_t j = 0; j < i; j++)
            dup = dup || strcmp(b->v[j], b->v[i]) == 0;
        if (!dup && json_array_append_new(arr, json_string(b->v[i])) < 0)
            goto out;
    }
    if (json_array_size(arr) > TF_TRY_MAX_BUILDERS) {
        fail("%zu builders: a job runs on at most %d", json_array_size(arr),
             TF_TRY_MAX_BUILDERS);
        goto out;
    }
    for (size_t i = 0; i < o->tests_all.n; i++)
        if (!tf_try_test_name_valid(o->tests_all.v[i])) {
            fail("--test \"%.100s\" is not a test name (1-200 of A-Z a-z 0-9 . "
                 "_ / : * = + , -)", o->tests_all.v[i]);
            goto out;
        }
    json_object_foreach(o->tests_by, key, v) {
        size_t i;
        json_t *t;
        bool chosen = false;
        for (size_t j = 0; j < b->n; j++)
            chosen = chosen || strcmp(b->v[j], key) == 0;
        if (!chosen) {
            fail("--tests names builder %s, which is not among the chosen "
                 "builders (add -b %s)", key, key);
            goto out;
        }
        json_array_foreach(v, i, t)
            if (!tf_try_test_name_valid(json_string_value(t))) {
                fail("--tests %s: \"%.100s\" is not a test name (1-200 of A-Z "
                     "a-z 0-9 . _ / : * = + , -)", key, json_string_value(t));
                goto out;
            }
    }
    size_t i;
    json_t *name;
    json_array_foreach(arr, i, name) {
        json_t *list = tests_for(c, json_string_value(name));
        if (!list)
            goto out;
        if (json_array_size(list) > TF_TRY_MAX_TESTS) {
            fail("%zu tests for builder %s: at most %d", json_array_size(list),
                 json_string_value(name), TF_TRY_MAX_TESTS);
            json_decref(list);
            goto out;
        }
        if (json_array_size(list) == 0)
            json_decref(list);
        else if (json_object_set_new(tests, json_string_value(name), list) < 0)
            goto out;
    }
    if (json_object_set(meta, "builders", arr) < 0 ||
        (json_object_size(tests) > 0 &&
         json_object_set(meta, "tests", tests) < 0))
        goto out;
    *out_b = b;
    ok = true;
out:
    json_decref(arr);
    json_decref(tests);
    return ok;
}

/* Cuts s to at most max bytes at a UTF-8 boundary (in place). */
static void cut_utf8(char *s, size_t max)
{
    s[tf_utf8_cut(s, strlen(s), max)] = '\0';
}

/* The optional text fields of the metadata. */
static bool build_about(ctx_t *c, json_t *meta, const char *description)
{
    const opts_t *o = c->o;
    const char *email = o->email ? o->email : c->conf.email;

    if (strlen(description) > TF_TRY_MAX_DESCRIPTION ||
        !tf_utf8_text_clean(description, true)) {
        fail("the description must be at most %d bytes of text without control "
             "characters", TF_TRY_MAX_DESCRIPTION);
        return false;
    }
    if (o->review_url && (!tf_try_http_url_valid(o->review_url) ||
                          strlen(o->review_url) > TF_TRY_MAX_REVIEW_URL)) {
        fail("--review-url must be an http:// or https:// URL of at most %d "
             "bytes", TF_TRY_MAX_REVIEW_URL);
        return false;
    }
    if (o->patchset && (!*o->patchset ||
                        strlen(o->patchset) > TF_TRY_MAX_PATCHSET ||
                        !tf_utf8_text_clean(o->patchset, true))) {
        fail("--patchset must be 1 to %d bytes of text", TF_TRY_MAX_PATCHSET);
        return false;
    }
    if (email && !o->no_email && !tf_email_valid(email)) {
        fail("\"%.100s\" is not an email address", email);
        return false;
    }
    if (*description &&
        json_object_set_new(meta, "description", json_string(description)) < 0)
        return false;
    if (o->review_url &&
        json_object_set_new(meta, "review_url", json_string(o->review_url)) < 0)
        return false;
    if (o->patchset &&
        json_object_set_new(meta, "patchset", json_string(o->patchset)) < 0)
        return false;
    if (o->new_failures_only &&
        json_object_set_new(meta, "new_failures_only", json_true()) < 0)
        return false;
    if (o->no_reuse && json_object_set_new(meta, "reuse", json_false()) < 0)
        return false;
    if (o->no_email)
        return json_object_set_new(meta, "notify", json_false()) == 0;
    if (email && json_object_set_new(meta, "email", json_string(email)) < 0)
        return false;
    return true;
}

/* What the patch is made against and how we found it. */
typedef struct base_info {
    char *rev;       /* the commit id (or the user's text outside a repo);
                        NULL: the builders' branch heads */
    char label[512]; /* how it was chosen, for --dry-run */
} base_info_t;

static bool find_base(ctx_t *c, base_info_t *b)
{
    tf_try_err_t err = {{0}};
    const opts_t *o = c->o;
    char *ref = NULL, *up = NULL;
    bool ok = false;

    if (o->base) {
        if (!tf_try_rev_valid(o->base)) {
            fail("--base \"%.200s\" is not a revision TestFarm accepts (letters, "
                 "digits and ._/^~-, not starting with -)", o->base);
            return false;
        }
        if (!c->toplevel) {
            b->rev = strdup(o->base);
            snprintf(b->label, sizeof(b->label), "(--base, as given)");
            return b->rev != NULL;
        }
        if (tf_try_git_commit(c->toplevel, o->base, &b->rev, &err) < 0) {
            fail("--base: %s", err.msg);
            return false;
        }
        snprintf(b->label, sizeof(b->label), "(--base %s)", o->base);
        return true;
    }
    if (!c->toplevel) {
        if (o->diff) {
            snprintf(b->label, sizeof(b->label),
                     "(none: the head of each builder's branch)");
            return true;
        }
        fail("not inside a git work tree (run tf-try in your clone, or give "
             "--diff FILE)");
        return false;
    }
    const char *upstream = o->upstream ? o->upstream : c->conf.upstream;
    if (tf_try_git_upstream(c->toplevel, upstream, &ref, &up, &err) < 0 ||
        tf_try_git_merge_base(c->toplevel, ref, &b->rev, &err) < 0) {
        fail("%s", err.msg);
        goto out;
    }
    snprintf(b->label, sizeof(b->label), "(merge-base of HEAD and %s)", ref);
    ok = true;
out:
    free(ref);
    free(up);
    return ok;
}

/* The default description: HEAD's subject, plus a note when the work tree
 * has changes that are not committed. */
static char *default_description(ctx_t *c, bool dirty)
{
    tf_try_err_t err = {{0}};
    char *subject = NULL;
    static const char note[] = " (+ uncommitted changes)";

    if (!c->toplevel || tf_try_git_subject(c->toplevel, &subject, &err) < 0) {
        free(subject);
        return strdup(dirty ? "uncommitted changes" : "");
    }
    cut_utf8(subject, TF_TRY_MAX_DESCRIPTION - sizeof(note));
    if (!dirty)
        return subject;
    size_t n = strlen(subject) + sizeof(note);
    char *d = malloc(n);
    if (d)
        snprintf(d, n, "%s%s", subject, note);
    free(subject);
    return d;
}

static void print_dry_run(ctx_t *c, const json_t *meta, const base_info_t *b,
                          const tf_buf_t *patch)
{
    char sha[65];
    size_t i;
    json_t *name;
    tf_buf_t stat, out;
    tf_try_err_t err = {{0}};
    const json_t *tests = json_object_get(meta, "tests");

    tf_buf_init(&out, 8 * 1024 * 1024);
    tf_buf_init(&stat, 1024 * 1024);
    tf_buf_printf(&out, "tf-try: dry run: nothing is sent\n");
    tf_buf_printf(&out, "  url:         %sapi/v1/jobs\n", c->base_url);
    tf_buf_printf(&out, "  builders:    ");
    json_array_foreach(json_object_get(meta, "builders"), i, name)
        tf_buf_printf(&out, "%s%s", i ? ", " : "", json_string_value(name));
    tf_buf_printf(&out, "\n");
    /* One line per builder with tests, aligned under the first. */
    const char *lead = "  tests:       ";
    if (json_object_size(tests) == 0)
        tf_buf_printf(&out, "%s(none)\n", lead);
    json_array_foreach(json_object_get(meta, "builders"), i, name) {
        json_t *list = json_object_get(tests, json_string_value(name));
        size_t j;
        json_t *t;
        if (!list)
            continue;
        tf_buf_printf(&out, "%s%s:", lead, json_string_value(name));
        json_array_foreach(list, j, t)
            tf_buf_printf(&out, " %s", json_string_value(t));
        tf_buf_printf(&out, "\n");
        lead = "               ";
    }
    tf_buf_printf(&out, "  base:        %s %s\n", b->rev ? b->rev : "-",
                  b->label);
    const char *desc = json_string_value(json_object_get(meta, "description"));
    tf_buf_printf(&out, "  description: %s\n", desc ? desc : "(none)");
    const char *rv = json_string_value(json_object_get(meta, "review_url"));
    const char *ps = json_string_value(json_object_get(meta, "patchset"));
    if (rv || ps)
        tf_buf_printf(&out, "  review:      %s%s%s%s\n", rv ? rv : "-",
                      ps ? " (patchset " : "", ps ? ps : "", ps ? ")" : "");
    const char *email = json_string_value(json_object_get(meta, "email"));
    tf_buf_printf(&out, "  email:       %s\n",
                  json_is_false(json_object_get(meta, "notify"))
                      ? "none (--no-email)"
                      : email ? email : "your account's address");
    tf_sha256_hex(patch->data ? patch->data : (const uint8_t *)"", patch->len,
                  sha);
    if (patch->len == 0)
        tf_buf_printf(&out, "  patch:       empty: the base revision is "
                            "tested as it is (sha256 %s)\n", sha);
    else
        tf_buf_printf(&out, "  patch:       %zu bytes, sha256 %s\n", patch->len,
                      sha);
    emit(&out);
    if (patch->len > 0) {
        if (tf_try_diffstat(patch->data, patch->len, &stat, &err) < 0)
            tf_buf_printf(&out, "  (no diffstat: %s)\n", err.msg);
        else
            tf_try_sanitize(stat.data, stat.len, true, &out);
        emit(&out);
    }
    tf_buf_free(&stat);
    tf_buf_free(&out);
}

/* Prints the 201 answer: the job line, then each builder's request. */
static long long print_submitted(ctx_t *c, const json_t *ans, tf_try_watch_t *w)
{
    tf_buf_t out;
    json_t *id = json_object_get(ans, "job_id");
    /* The job's page when the master serves pages, else its JSON. */
    const char *url = json_string_value(json_object_get(ans, "page_url"));
    if (!url)
        url = json_string_value(json_object_get(ans, "url"));
    const json_t *patch = json_object_get(ans, "patch");
    size_t i;
    json_t *r;

    if (!json_is_integer(id) || json_integer_value(id) <= 0)
        return 0;
    tf_buf_init(&out, 1024 * 1024);
    tf_buf_printf(&out, "job %lld: ", (long long)json_integer_value(id));
    tf_try_sanitize((const uint8_t *)(url ? url : "-"), strlen(url ? url : "-"),
                    false, &out);
    tf_buf_printf(&out, "\n");
    json_array_foreach(json_object_get(ans, "requests"), i, r) {
        const char *b = json_string_value(json_object_get(r, "builder"));
        json_t *pos = json_object_get(r, "position");
        json_t *rid = json_object_get(r, "request_id");
        if (!b || !tf_name_valid(b))
            continue;
        if (json_is_integer(pos))
            tf_try_watch_seed(w, b, (long long)json_integer_value(pos));
        if (c->o->quiet)
            continue;
        tf_buf_printf(&out, "  %s: request %lld", b,
                      (long long)json_integer_value(rid));
        if (json_is_integer(pos))
            tf_buf_printf(&out, ", position %lld in queue",
                          (long long)json_integer_value(pos));
        if (json_is_true(json_object_get(r, "reused")))
            tf_buf_printf(&out, ", answered from build %lld (reused)",
                          (long long)json_integer_value(json_object_get(
                              json_object_get(r, "build"), "id")));
        tf_buf_printf(&out, "\n");
    }
    const char *sha = json_string_value(json_object_get(patch, "sha256"));
    json_t *size = json_object_get(patch, "size");
    if (!c->o->quiet && sha && strlen(sha) == 64 && json_is_integer(size)) {
        tf_buf_printf(&out, "  patch: %lld bytes, sha256 ",
                      (long long)json_integer_value(size));
        tf_try_sanitize((const uint8_t *)sha, 64, false, &out);
        tf_buf_printf(&out, "\n");
    }
    emit(&out);
    tf_buf_free(&out);
    return (long long)json_integer_value(id);
}

static int cmd_submit(ctx_t *c)
{
    const opts_t *o = c->o;
    int rc, exit_code = TF_TRY_EXIT_ERROR;
    tf_try_err_t err = {{0}};
    json_t *meta = json_object(), *ans = NULL;
    const tf_try_strv_t *builders = NULL;
    base_info_t base = {0};
    tf_buf_t patch, body;
    char *desc = NULL, *b64 = NULL, *url = NULL;
    size_t b64_len = 0;
    bool dirty = false;
    tf_try_resp_t resp;
    bool have_resp = false;
    tf_try_watch_t *w = NULL;
    tf_try_live_t *early = NULL;

    tf_buf_init(&patch, (size_t)o->max_patch_mb * 1024 * 1024);
    tf_buf_init(&body, 0);
    if (!meta)
        goto out;
    if (!need_url(c) || !build_targets(c, meta, &builders))
        goto out;
    if (!o->dry_run && !need_token(c))
        goto out;
    if (!find_base(c, &base))
        goto out;
    if (o->diff)
        rc = tf_try_read_patch(o->diff, &patch, &err);
    else
        rc = tf_try_make_patch(c->toplevel, base.rev, o->include_untracked,
                               patch.max, &patch, &dirty, &err);
    if (stop_flag) {
        fail("interrupted; nothing was submitted");
        exit_code = TF_TRY_EXIT_INTERRUPTED;
        goto out;
    }
    if (rc < 0) {
        fail("%s", err.msg[0] ? err.msg : tf_strerror(rc));
        goto out;
    }
    if (patch.len == 0 && !o->allow_empty) {
        fail("nothing to try: no changes against %s %s (use --allow-empty to "
             "test the base revision as it is)",
             base.rev ? base.rev : "the builders' branches", base.label);
        goto out;
    }
    if (o->description)
        desc = strdup(o->description);
    else if (o->diff)
        desc = strdup("");
    else
        desc = default_description(c, dirty);
    if (!desc || !build_about(c, meta, desc))
        goto out;
    if (base.rev &&
        json_object_set_new(meta, "base_revision", json_string(base.rev)) < 0)
        goto out;
    if (json_object_size(o->props) > 0 &&
        json_object_set(meta, "properties", o->props) < 0)
        goto out;
    if (o->dry_run) {
        print_dry_run(c, meta, &base, &patch);
        exit_code = TF_TRY_EXIT_OK;
        goto out;
    }

    if (tf_try_base64_encode(patch.data ? patch.data : (const uint8_t *)"",
                             patch.len, &b64, &b64_len) < 0 ||
        tf_try_job_body(meta, b64, b64_len, &body) < 0) {
        fail("out of memory making the request");
        goto out;
    }
    free(b64);
    b64 = NULL;
    tf_buf_free(&patch);
    url = tf_try_url(c->base_url, "api/v1/jobs");
    if (!url)
        goto out;
    early = live_before_submit(c);
    if (stop_flag) {
        fail("interrupted; nothing was submitted");
        exit_code = TF_TRY_EXIT_INTERRUPTED;
        goto out;
    }
    rc = request(c, "POST", url, true, body.data, body.len,
                 TF_TRY_SUBMIT_TIMEOUT_S, &resp);
    if (rc == -EINTR || stop_flag) {
        if (rc == 0)
            tf_try_resp_free(&resp);
        fail("interrupted before the master answered; see whether the job "
             "was queued with: tf-try list");
        exit_code = TF_TRY_EXIT_INTERRUPTED;
        goto out;
    }
    if (rc < 0)
        goto out;
    have_resp = true;
    if (resp.status != 201 && resp.status != 200) {
        report_refusal("the job", &resp);
        goto out;
    }
    ans = resp_json(&resp);
    w = tf_try_watch_new();
    if (!w)
        goto out;
    long long job_id = print_submitted(c, ans, w);
    if (job_id <= 0) {
        fail("the master accepted the job but its answer has no job_id");
        goto out;
    }
    exit_code = o->wait ? watch_job(c, w, job_id, early) : TF_TRY_EXIT_OK;
    early = NULL; /* watch_job freed it */
out:
    tf_try_live_free(early);
    if (have_resp)
        tf_try_resp_free(&resp);
    tf_try_watch_free(w);
    json_decref(ans);
    json_decref(meta);
    free(base.rev);
    free(desc);
    free(b64);
    free(url);
    tf_buf_free(&patch);
    tf_buf_free(&body);
    return exit_code;
}

/* ---- status, list, cancel, whoami ---- */

/* One call to the master for a subcommand: method on url (taken), then
 * the answer's JSON (json_null() when it has none). NULL after telling
 * the user why: no answer, a 404 (notfound, when given), or any other
 * status outside 2xx (the master refused `what`). */
static json_t *call_master(ctx_t *c, const char *method, char *url,
                           bool auth, const char *what, const char *notfound)
{
    tf_try_resp_t resp;
    json_t *answer = NULL;
    bool post = strcmp(method, "POST") == 0;
    if (!url || request(c, method, url, auth, post ? "{}" : NULL,
                        post ? 2 : 0, TF_TRY_GET_TIMEOUT_S, &resp) < 0) {
        free(url);
        return NULL;
    }
    if (resp.status == 404 && notfound) {
        fail("%s", notfound);
    } else if (resp.status < 200 || resp.status > 299) {
        report_refusal(what, &resp);
    } else {
        answer = resp_json(&resp);
        if (!answer)
            answer = json_null();
    }
    tf_try_resp_free(&resp);
    free(url);
    return answer;
}

static void no_such_job(const ctx_t *c, char *msg, size_t n)
{
    snprintf(msg, n, "there is no job %lld on %s", c->o->job_id,
             c->base_url);
}

static int cmd_status(ctx_t *c)
{
    int exit_code = TF_TRY_EXIT_ERROR;
    json_t *job = NULL;
    tf_buf_t out;
    char notfound[600];

    tf_buf_init(&out, 4 * 1024 * 1024);
    if (!need_url(c))
        goto out;
    if (c->o->wait) {
        /* Watching from scratch replays the job's history so far, then
         * follows it: the same lines a --wait from submission printed. */
        tf_try_watch_t *w = tf_try_watch_new();
        exit_code = w ? watch_job(c, w, c->o->job_id, NULL)
                       : TF_TRY_EXIT_ERROR;
        tf_try_watch_free(w);
        goto out;
    }
    no_such_job(c, notfound, sizeof(notfound));
    job = call_master(c, "GET",
                      tf_try_url(c->base_url, "api/v1/jobs/%lld",
                                 c->o->job_id),
                      false, "to show the job", notfound);
    if (!job)
        goto out;
    if (!json_is_object(job) || tf_try_render_status(job, &out) < 0) {
        fail("the master's answer about job %lld is not what tf-try expects",
             c->o->job_id);
        goto out;
    }
    emit(&out);
    exit_code = TF_TRY_EXIT_OK;
out:
    json_decref(job);
    tf_buf_free(&out);
    return exit_code;
}

static int cmd_list(ctx_t *c)
{
    int exit_code = TF_TRY_EXIT_ERROR;
    json_t *list = NULL;
    tf_buf_t out;

    tf_buf_init(&out, 4 * 1024 * 1024);
    if (!need_url(c) || (!c->o->all && !need_token(c)))
        goto out;
    list = call_master(c, "GET",
                       c->o->all ? tf_try_url(c->base_url,
                                              "api/v1/jobs?limit=%d",
                                              LIST_LIMIT)
                                 : tf_try_url(c->base_url,
                                              "api/v1/jobs?mine=1&limit=%d",
                                              LIST_LIMIT),
                       !c->o->all, "to list the jobs", NULL);
    if (!list)
        goto out;
    if (!json_is_object(list) || tf_try_render_list(list, &out) < 0) {
        fail("the master's list of jobs is not what tf-try expects");
        goto out;
    }
    emit(&out);
    exit_code = TF_TRY_EXIT_OK;
out:
    json_decref(list);
    tf_buf_free(&out);
    return exit_code;
}

static int cmd_cancel(ctx_t *c)
{
    char notfound[600];
    if (!need_url(c) || !need_token(c))
        return TF_TRY_EXIT_ERROR;
    no_such_job(c, notfound, sizeof(notfound));
    json_t *ans = call_master(c, "POST",
                              tf_try_url(c->base_url,
                                         "api/v1/jobs/%lld/cancel",
                                         c->o->job_id),
                              true, "to cancel the job", notfound);
    if (!ans)
        return TF_TRY_EXIT_ERROR;
    json_decref(ans);
    printf("job %lld: cancelling (see: tf-try status %lld)\n", c->o->job_id,
           c->o->job_id);
    return TF_TRY_EXIT_OK;
}

static int cmd_whoami(ctx_t *c)
{
    tf_buf_t out;
    if (!need_url(c) || !need_token(c))
        return TF_TRY_EXIT_ERROR;
    json_t *me = call_master(c, "GET",
                             tf_try_url(c->base_url, "api/v1/whoami"), true,
                             "your token", NULL);
    if (!me)
        return TF_TRY_EXIT_ERROR;
    tf_buf_init(&out, 64 * 1024);
    const char *name = json_string_value(json_object_get(me, "name"));
    const char *email = json_string_value(json_object_get(me, "email"));
    if (json_is_true(json_object_get(me, "admin")))
        tf_buf_printf(&out, "admin (the master's admin token)");
    else {
        tf_try_sanitize((const uint8_t *)(name ? name : ""),
                        strlen(name ? name : ""), false, &out);
        tf_buf_printf(&out, " <");
        tf_try_sanitize((const uint8_t *)(email ? email : "?"),
                        strlen(email ? email : "?"), false, &out);
        tf_buf_printf(&out, ">");
    }
    tf_buf_printf(&out, " on %s\n", c->base_url);
    emit(&out);
    json_decref(me);
    tf_buf_free(&out);
    return TF_TRY_EXIT_OK;
}

/* tf-try builders: every builder a committer may send try jobs to (all
 * the master's active builders), its state, its last continuous build
 * and the properties -p may set on it. */
static int cmd_builders(ctx_t *c)
{
    int exit_code = TF_TRY_EXIT_ERROR;
    json_t *list = NULL;
    tf_buf_t out;
    size_t i;
    json_t *b;

    tf_buf_init(&out, 4 * 1024 * 1024);
    if (!need_url(c))
        goto out;
    list = call_master(c, "GET", tf_try_url(c->base_url, "api/v1/builders"),
                       false, "to list the builders", NULL);
    if (!list)
        goto out;
    if (!json_is_array(list)) {
        fail("the master's list of builders is not what tf-try expects");
        goto out;
    }
    tf_buf_printf(&out, "%-24s %-9s %-22s %s\n", "BUILDER", "STATE",
                  "LAST BUILD", "PROPERTIES (-p)");
    json_array_foreach(list, i, b)
    {
        const char *name = json_string_value(json_object_get(b, "name"));
        const char *state = json_string_value(json_object_get(b, "state"));
        if (!name || !tf_name_valid(name) ||
            !json_is_true(json_object_get(b, "active")))
            continue;
        char last[64] = "none";
        json_t *lc = json_object_get(b, "last_complete");
        const char *res = json_string_value(json_object_get(lc, "result"));
        if (res && strlen(res) < 20)
            snprintf(last, sizeof(last), "#%lld %s",
                     (long long)json_integer_value(
                         json_object_get(lc, "number")),
                     res);
        json_t *since = json_object_get(b, "failing_since");
        if (json_is_object(since))
            snprintf(last + strlen(last), sizeof(last) - strlen(last),
                     " since #%lld",
                     (long long)json_integer_value(
                         json_object_get(since, "number")));
        tf_buf_printf(&out, "%-24s ", name);
        tf_try_sanitize((const uint8_t *)(state ? state : "?"),
                        strlen(state ? state : "?"), false, &out);
        tf_buf_printf(&out, "%*s %-22s ",
                      (int)(state && strlen(state) < 9 ? 9 - strlen(state)
                                                       : 0),
                      "", last);
        size_t k;
        json_t *p;
        json_t *props = json_object_get(b, "force_properties");
        if (json_array_size(props) == 0)
            tf_buf_printf(&out, "none");
        json_array_foreach(props, k, p)
        {
            const char *pn = json_string_value(p);
            if (pn && tf_name_valid(pn))
                tf_buf_printf(&out, "%s%s", k ? ", " : "", pn);
        }
        tf_buf_printf(&out, "\n");
    }
    emit(&out);
    exit_code = TF_TRY_EXIT_OK;
out:
    json_decref(list);
    tf_buf_free(&out);
    return exit_code;
}

/* Whether a builder of a finished job did not pass. */
static bool builder_failed(const json_t *b)
{
    const char *res = json_string_value(json_object_get(b, "result"));
    const char *state = json_string_value(json_object_get(b, "state"));
    if (!res)
        return state && strcmp(state, "cancelled") == 0;
    return strcmp(res, "SUCCESS") != 0 && strcmp(res, "WARNINGS") != 0 &&
           strcmp(res, "SKIPPED") != 0;
}

/* Fetches patch sha256 of a job (the committer's token) into *out. */
static bool fetch_patch(ctx_t *c, const char *sha, tf_buf_t *out)
{
    tf_try_err_t err = {{0}};
    tf_try_resp_t resp;
    char *url = tf_try_url(c->base_url, "api/v1/patches/%s", sha);
    tf_try_req_t r = {
        .method = "GET", .url = url, .auth = true,
        .timeout_s = TF_TRY_SUBMIT_TIMEOUT_S,
        .max_body = (size_t)c->o->max_patch_mb * 1024 * 1024,
    };
    bool ok = false;
    if (!url)
        return false;
    int rc = tf_try_http(&c->client, &r, &resp, &err);
    free(url);
    if (rc < 0) {
        fail("cannot fetch the job's patch: %s",
             err.msg[0] ? err.msg : tf_strerror(rc));
        return false;
    }
    if (resp.status != 200)
        report_refusal("to send the job's patch", &resp);
    else
        ok = tf_buf_append(out, resp.body.data, resp.body.len) == 0;
    tf_try_resp_free(&resp);
    return ok;
}

/* tf-try retry JOB [--failed]: a new job on the same base with the same
 * patch and tests, on the job's builders (--failed: those that did not
 * pass). */
static int cmd_retry(ctx_t *c)
{
    const opts_t *o = c->o;
    int exit_code = TF_TRY_EXIT_ERROR;
    json_t *job = NULL, *meta = json_object(), *builders = json_array(),
           *tests = json_object(), *ans = NULL;
    tf_buf_t patch, body;
    char notfound[600], *b64 = NULL, *url = NULL;
    size_t b64_len = 0, i;
    json_t *b;
    tf_try_resp_t resp;
    bool have_resp = false;
    tf_try_watch_t *w = NULL;
    tf_try_live_t *early = NULL;

    tf_buf_init(&patch, (size_t)o->max_patch_mb * 1024 * 1024);
    tf_buf_init(&body, 0);
    if (!meta || !builders || !tests || !need_url(c) || !need_token(c))
        goto out;
    no_such_job(c, notfound, sizeof(notfound));
    job = call_master(c, "GET",
                      tf_try_url(c->base_url, "api/v1/jobs/%lld", o->job_id),
                      false, "to show the job", notfound);
    if (!job)
        goto out;
    json_array_foreach(json_object_get(job, "builders"), i, b)
    {
        const char *name = json_string_value(json_object_get(b, "name"));
        if (!name || !tf_name_valid(name))
            continue;
        if (o->failed_only && !builder_failed(b))
            continue;
        json_array_append_new(builders, json_string(name));
        json_t *t = json_object_get(b, "tests");
        if (json_array_size(t) > 0)
            json_object_set(tests, name, t);
    }
    if (json_array_size(builders) == 0) {
        fail("nothing to retry: %s", o->failed_only
                                         ? "no builder of the job failed "
                                           "(yet): use tf-try retry JOB to "
                                           "run them all again"
                                         : "the job has no builders");
        goto out;
    }
    const char *sha =
        json_string_value(json_object_get(json_object_get(job, "patch"),
                                          "sha256"));
    if (sha && (strlen(sha) != 64 || !fetch_patch(c, sha, &patch)))
        goto out;
    const char *desc = json_string_value(json_object_get(job, "description"));
    char about[4096];
    snprintf(about, sizeof(about), "retry of job %lld%s%.3900s", o->job_id,
             desc && *desc ? ": " : "", desc ? desc : "");
    cut_utf8(about, sizeof(about) - 1);
    json_object_set_new(meta, "builders", builders);
    builders = NULL;
    if (json_object_size(tests) > 0)
        json_object_set(meta, "tests", tests);
    json_object_set_new(meta, "description", json_string(about));
    static const char *const copied[] = {"base_revision", "review_url",
                                         "patchset", NULL};
    for (size_t k = 0; copied[k]; k++) {
        json_t *v = json_object_get(job, copied[k]);
        if (json_is_string(v))
            json_object_set(meta, copied[k], v);
    }
    if (o->no_email)
        json_object_set_new(meta, "notify", json_false());
    else if (o->email)
        json_object_set_new(meta, "email", json_string(o->email));
    if (json_object_size(o->props) > 0)
        json_object_set(meta, "properties", o->props);
    /* A retry runs the builders again: never answered from the builds it
     * retries (result reuse). */
    json_object_set_new(meta, "reuse", json_false());
    if (json_is_true(json_object_get(job, "new_failures_only")) ||
        o->new_failures_only)
        json_object_set_new(meta, "new_failures_only", json_true());
    if (tf_try_base64_encode(patch.data ? patch.data : (const uint8_t *)"",
                             patch.len, &b64, &b64_len) < 0 ||
        tf_try_job_body(meta, b64, b64_len, &body) < 0) {
        fail("out of memory making the request");
        goto out;
    }
    url = tf_try_url(c->base_url, "api/v1/jobs");
    if (url)
        early = live_before_submit(c);
    if (stop_flag) {
        fail("interrupted; nothing was submitted");
        exit_code = TF_TRY_EXIT_INTERRUPTED;
        goto out;
    }
    if (!url || request(c, "POST", url, true, body.data, body.len,
                        TF_TRY_SUBMIT_TIMEOUT_S, &resp) < 0)
        goto out;
    have_resp = true;
    if (resp.status != 201 && resp.status != 200) {
        report_refusal("the job", &resp);
        goto out;
    }
    ans = resp_json(&resp);
    w = tf_try_watch_new();
    if (!w)
        goto out;
    long long job_id = print_submitted(c, ans, w);
    if (job_id <= 0) {
        fail("the master accepted the job but its answer has no job_id");
        goto out;
    }
    exit_code = o->wait ? watch_job(c, w, job_id, early) : TF_TRY_EXIT_OK;
    early = NULL; /* watch_job freed it */
out:
    tf_try_live_free(early);
    if (have_resp)
        tf_try_resp_free(&resp);
    tf_try_watch_free(w);
    json_decref(job);
    json_decref(meta);
    json_decref(builders);
    json_decref(tests);
    json_decref(ans);
    free(b64);
    free(url);
    tf_buf_free(&patch);
    tf_buf_free(&body);
    return exit_code;
}

/* ---- main ---- */

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_signal; /* no SA_RESTART: sleeps end at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int main(int argc, char **argv)
{
    opts_t o;
    ctx_t c;
    tf_try_err_t err = {{0}};
    int exit_code;

    memset(&o, 0, sizeof(o));
    memset(&c, 0, sizeof(c));
    tf_try_conf_init(&c.conf);
    c.o = &o;
    exit_code = parse_args(argc, argv, &o);
    if (exit_code >= 0)
        goto out;
    exit_code = TF_TRY_EXIT_ERROR;
    install_signals();

    /* The work tree matters for the repository's .tf-try.json and for the
     * patch; outside one, status, list, cancel and whoami still work. */
    {
        tf_try_err_t ignored;
        if (tf_try_git_toplevel(&c.toplevel, &ignored) < 0)
            c.toplevel = NULL;
    }
    tf_try_conf_dir(getenv("XDG_CONFIG_HOME"), getenv("HOME"), &c.conf_dir,
                    NULL);
    if (tf_try_conf_load(&c.conf, o.config, c.toplevel,
                         getenv("XDG_CONFIG_HOME"), getenv("HOME"), &err) < 0) {
        fail("%s", err.msg);
        goto out;
    }
    if (tf_try_client_global_init() < 0) {
        fail("cannot initialise libcurl");
        goto out;
    }
    c.client.verbose = o.verbose;
    c.client.trace = stderr;
    c.client.stop = &stop_flag;
    switch (o.cmd) {
    case CMD_SUBMIT: exit_code = cmd_submit(&c); break;
    case CMD_STATUS: exit_code = cmd_status(&c); break;
    case CMD_LIST: exit_code = cmd_list(&c); break;
    case CMD_CANCEL: exit_code = cmd_cancel(&c); break;
    case CMD_WHOAMI: exit_code = cmd_whoami(&c); break;
    case CMD_BUILDERS: exit_code = cmd_builders(&c); break;
    case CMD_RETRY: exit_code = cmd_retry(&c); break;
    }
    if (stop_flag && exit_code == TF_TRY_EXIT_ERROR)
        exit_code = TF_TRY_EXIT_INTERRUPTED;
    tf_try_client_global_cleanup();
out:
    if (c.token) {
        explicit_bzero(c.token, strlen(c.token));
        free(c.token);
    }
    free(c.toplevel);
    free(c.conf_dir);
    free(c.base_url);
    tf_try_conf_free(&c.conf);
    tf_try_strv_clear(&o.builders);
    tf_try_strv_clear(&o.tests_all);
    json_decref(o.tests_by);
    json_decref(o.props);
    return exit_code;
}
