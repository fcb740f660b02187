/*
 * config.h - the master's configuration: loading, validation, diagnostics.
 *
 * The configuration is one JSON file (docs/config.md). Loading it is a pure
 * function of the file's text and the files it names (secret files): the
 * result is either a complete tf_config_t or a list of every error found,
 * each with file:line:col and the offending key, so `tf-master checkconfig`
 * shows all problems at once. A loaded config is immutable; SIGHUP loads a
 * new one and the master swaps it in when it is valid.
 */
#ifndef TF_CONFIG_H
#define TF_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

typedef struct tf_cfg_slave {
    char *name;
    char *secret;        /* the secret itself (inline or read from secret_file) */
    char **tags;
    size_t ntags;
    uint32_t max_builds; /* >= 1, default 1 */
} tf_cfg_slave_t;

/* A step: what is sent to the slave, plus how the command was written. */
typedef struct tf_cfg_step {
    tf_step_spec_t spec; /* argv is ["/bin/sh","-c",S] for a string command */
    bool shell;          /* the command was a shell string */
} tf_cfg_step_t;

/* Mail (docs/config.md, "mail"): how result mails are sent. */
typedef enum {
    TF_MAIL_SEC_NONE = 0, /* plain SMTP */
    TF_MAIL_SEC_STARTTLS, /* STARTTLS required */
    TF_MAIL_SEC_TLS,      /* implicit TLS (smtps) */
} tf_mail_security_t;

typedef struct tf_cfg_mail {
    bool enabled;          /* a "mail" section is present and enabled */
    char *from;            /* plain address; "testfarm@localhost" when absent */
    char *from_name;       /* default: the master's name */
    char *subject_prefix;  /* default "[NAME]" */
    char *smtp_host;       /* default "localhost" */
    uint16_t smtp_port;    /* default 25, 587 (starttls) or 465 (tls) */
    tf_mail_security_t smtp_security;
    char *smtp_username;   /* NULL: no AUTH */
    char *smtp_password;   /* read from smtp.password_file */
    char *smtp_ca_file;    /* absolute path, or NULL for the system CAs */
    char **sendmail;       /* argv of a sendmail-style command, or NULL */
    size_t nsendmail;
    uint32_t connect_timeout_s;  /* default 10 */
    uint32_t timeout_s;          /* a whole delivery; default 60 */
    uint32_t retry_initial_s;    /* default 30, doubling */
    uint32_t retry_max_s;        /* default 1800 */
    uint32_t retry_horizon_s;    /* give up after; default 172800 (2 d) */
    uint32_t excerpt_max_bytes;  /* default 65536 */
    uint32_t message_max_bytes;  /* default 1 MiB */
    uint32_t tail_lines;         /* default 30 */
    uint32_t context_after;      /* lines kept after a match; default 25 */
    char **error_patterns;       /* builders' default */
    size_t npatterns;
    bool try_jobs;               /* mail try job reports; default true */
} tf_cfg_mail_t;

/* Buildbot MailNotifier modes for continuous builds. */
typedef enum {
    TF_MAIL_MODE_NONE = 0, /* no notices (the default) */
    TF_MAIL_MODE_FAILING,  /* every failed build */
    TF_MAIL_MODE_PROBLEM,  /* a failure after a success */
    TF_MAIL_MODE_CHANGE,   /* broken or fixed */
    TF_MAIL_MODE_ALL,      /* every build */
} tf_mail_mode_t;

typedef struct tf_cfg_builder_mail {
    tf_mail_mode_t mode;
    char **extra_recipients;
    size_t nextra;
    char **error_patterns; /* used when has_patterns, else mail's */
    size_t npatterns;
    bool has_patterns;
} tf_cfg_builder_mail_t;

/* How long step logs are kept (docs/config.md, "retention"); build rows,
 * steps and test results stay. 0: no limit; in a builder, -1: the
 * top-level value. */
typedef struct tf_cfg_retention {
    int64_t log_days;   /* logs of builds finished longer ago go */
    int64_t log_builds; /* logs of all but the newest N builds go */
    int64_t log_mib;    /* logs beyond the newest N MiB of the builder go */
} tf_cfg_retention_t;

typedef struct tf_cfg_builder {
    char *name;
    char **slaves;       /* allowed slave names; may be empty */
    size_t nslaves;
    char **tags;         /* required tags: a slave must have all of them */
    size_t ntags;
    tf_cfg_step_t *steps;
    size_t nsteps;       /* >= 1 */
    tf_kv_t *props;      /* configured properties */
    size_t nprops;
    int priority;        /* default 0; higher runs first */
    char *repository;    /* git URL or absolute path, or NULL */
    char *branch;        /* default "main" when repository is set */
    tf_cfg_builder_mail_t mail; /* "mail": notices, error patterns */
    bool collapse_requests; /* default true: a newer continuous request
                               supersedes pending older ones */
    bool retry_without_patch; /* a failed try build is rerun without its
                                 patch, to tell old failures from new */
    /* Who may force or rebuild it besides the admin (docs/config.md,
     * "Who may force a builder"): committer emails, or "*" for every
     * committer; none by default. */
    char **force_allowed;
    size_t nforce_allowed;
    /* Properties a committer may set when forcing it; none by default
     * (the admin may set any). */
    char **force_properties;
    size_t nforce_properties;
    tf_cfg_retention_t retention; /* "retention"; -1: the top-level's */
    /* What a build of it runs: the hex SHA-256 of its build_start as
     * checked at load (steps with their commands, environments, limits,
     * modifiers and test specs; properties; repository; branch), so two
     * loads that run the same thing agree and any change to what runs
     * moves it. Result reuse matches on it. "" when not computed. */
    char recipe[65];
} tf_cfg_builder_t;

/* A scheduler (docs/config.md, "schedulers"): what turns changes or the
 * clock into build requests. */
typedef enum { TF_CFG_SCHED_CHANGE = 0, TF_CFG_SCHED_PERIODIC } tf_cfg_sched_type_t;

typedef struct tf_cfg_scheduler {
    char *name;
    tf_cfg_sched_type_t type;
    char **builders;     /* >= 1 configured builder names */
    size_t nbuilders;
    char *repository;    /* what it watches; NULL for a periodic scheduler
                            of builders without a repository */
    char *branch;        /* set when repository is */
    uint32_t tree_stable_s; /* change: default 15 */
    char **paths;        /* change: path prefixes or globs; none = all */
    size_t npaths;
    char *cron;          /* periodic: "MIN HOUR DOM MON DOW", UTC */
    bool only_if_changed; /* periodic: default true with a repository */
} tf_cfg_scheduler_t;

/* A repository branch to poll for changes. */
typedef struct tf_cfg_poller {
    char *repository;
    char *branch;
    uint32_t interval_s;
} tf_cfg_poller_t;

typedef struct tf_config {
    char *path;            /* the file it came from */
    char *dir;             /* its directory; relative paths resolve here */
    char *name;            /* master title, default "TestFarm" */
    char *listen_host;     /* default "127.0.0.1" */
    uint16_t listen_port;  /* default 8010 */
    char *tls_cert;        /* listen.tls.cert: PEM file, absolute; NULL:
                              plain HTTP */
    char *tls_key;         /* listen.tls.key: PEM file, absolute */
    char *public_url;      /* default "http://HOST:PORT/" ("https://" with
                              listen.tls; ends with '/') */
    char *database;        /* absolute path; default DIR/state.sqlite;
                            * or store.postgres's URL */
    int store_standby;     /* store.standby: wait for the database's
                            * master lock instead of refusing */
    int store_shared;      /* store.shared: one of several active masters
                            * on the database (issue 15) */
    int store_keepalive_idle_s;     /* store.keepalive_idle_s: TCP
                                     * keepalives of the PostgreSQL
                                     * connections, both ends */
    int store_keepalive_interval_s; /* store.keepalive_interval_s */
    int store_keepalive_count;      /* store.keepalive_count */
    int store_lease_timeout_s;      /* store.lease_timeout_s: a shared
                                     * master silent this long is dead */
    char *web_root;        /* directory of static pages, or NULL */
    char **cors_origins;   /* origins whose pages may read the API
                              (CORS); "*" = any; none by default */
    size_t ncors_origins;
    char *commit_url;      /* link template of a change, "{revision}"
                              replaced; NULL: no links */
    uint32_t heartbeat_s;  /* default 10 */
    uint32_t lost_after_s; /* default 30; > heartbeat_s */
    uint32_t build_lost_after_s; /* a build whose slave is gone this long is
                                    RETRY; default 600 */
    uint32_t max_retries;  /* RETRY results re-queued at most this often;
                              default 3 */
    uint64_t try_max_patch_bytes; /* try.max_patch_bytes, default 50 MiB */
    uint32_t try_max_builders;    /* try.max_builders, default 50 */
    bool fair_share;              /* scheduler.fair_share, default true */
    tf_cfg_slave_t *slaves;
    size_t nslaves;
    tf_cfg_builder_t *builders;
    size_t nbuilders;
    tf_cfg_scheduler_t *schedulers;
    size_t nschedulers;
    tf_cfg_poller_t *pollers; /* explicit ones; schedulers' sources are
                                 polled too, every poll_interval_s */
    size_t npollers;
    uint32_t poll_interval_s; /* default 60 */
    bool testing_clock;       /* testing.clock: POST /api/v1/master/clock */
    tf_cfg_mail_t mail;       /* "mail" */
    tf_cfg_retention_t retention; /* "retention": every builder's default */
} tf_config_t;

/* One diagnostic: "FILE:LINE:COL: KEY: MESSAGE". line/col are 0 when the
 * error is not tied to a place (e.g. the file cannot be read). */
typedef struct tf_cfg_diag {
    char *file;
    int line;
    int col;
    char *key;     /* JSON path in dotted form: "builders[0].steps[1].timeout" */
    char *message;
} tf_cfg_diag_t;

typedef struct tf_cfg_diags {
    tf_cfg_diag_t *items;
    size_t count;
} tf_cfg_diags_t;

/* Loads and validates path. On success returns 0 and *out (free with
 * tf_config_free). On failure returns TF_ECONFIG (or TF_ENOMEM), *out is
 * NULL and diags holds every error found (free with tf_cfg_diags_clear).
 * diags may be NULL when the caller only wants the verdict. */
int tf_config_load(const char *path, tf_config_t **out, tf_cfg_diags_t *diags);

/* Loads from text already in memory (tests); path is used in diagnostics
 * and as the base for relative paths. */
int tf_config_load_text(const char *path, const char *text, size_t len,
                        tf_config_t **out, tf_cfg_diags_t *diags);

/* Secret files kept across loads (master/config/secrets.c): a load through
 * a cache stats each secret file and reuses what it read before when the
 * file is the same, unchanged (device, inode, size, mtime and ctime), so a
 * reload with thousands of slaves does one stat per secret instead of
 * reading each file. The result is the same config as without the cache.
 * Owned by the caller: new returns NULL on OOM; free wipes the secrets and
 * takes NULL. One load at a time per cache. */
typedef struct tf_cfg_secrets tf_cfg_secrets_t;
tf_cfg_secrets_t *tf_cfg_secrets_new(void);
void tf_cfg_secrets_free(tf_cfg_secrets_t *s);
/* How many secret files loads through s have read (not reused). */
size_t tf_cfg_secrets_reads(const tf_cfg_secrets_t *s);
/* How many loads through s found the "slaves" written as in the last
 * successful one and copied them (tests). */
size_t tf_cfg_secrets_reuses(const tf_cfg_secrets_t *s);

/* Secrets read within the racy window of their file's ctime are read
 * again by the next load; settling does that beforehand, off the reload:
 * each such secret whose file is now past the window and still has the
 * identity it had is read again and trusted from then on (a changed
 * file is left to the next load). Returns how many racy entries are
 * left (not yet past the window, or skipped once *stop was set; stop
 * may be NULL). unsettled says whether there may be any; settled counts
 * the files settling read (tests). Not concurrently with a load. */
size_t tf_cfg_secrets_settle(tf_cfg_secrets_t *s, const atomic_bool *stop);
bool tf_cfg_secrets_unsettled(const tf_cfg_secrets_t *s);
size_t tf_cfg_secrets_settled(const tf_cfg_secrets_t *s);

/* tf_config_load and tf_config_load_text through secrets (borrowed; may be
 * NULL: every file is read). After a successful load the cache drops the
 * files that load did not name. */
int tf_config_load_cached(const char *path, tf_cfg_secrets_t *secrets,
                          tf_config_t **out, tf_cfg_diags_t *diags);
int tf_config_load_text_cached(const char *path, const char *text,
                               size_t len, tf_cfg_secrets_t *secrets,
                               tf_config_t **out, tf_cfg_diags_t *diags);

/* Formats one diagnostic as "FILE:LINE:COL: error: KEY: MESSAGE" into a
 * malloc'd string (caller frees). */
char *tf_cfg_diag_format(const tf_cfg_diag_t *d);

void tf_cfg_diags_clear(tf_cfg_diags_t *d);
void tf_config_free(tf_config_t *c);

/* Lookups; NULL when absent. */
const tf_cfg_slave_t *tf_config_slave(const tf_config_t *c, const char *name);
const tf_cfg_builder_t *tf_config_builder(const tf_config_t *c,
                                          const char *name);

/* Whether slave s may run builds of builder b: s is listed in b->slaves, or
 * b->tags is non-empty and s has every tag in it. (A builder with neither
 * slaves nor tags accepts any slave.) */
bool tf_config_slave_allowed(const tf_cfg_builder_t *b,
                             const tf_cfg_slave_t *s);

/* Whether slave s has every tag of b->tags (true when b has none). */
bool tf_config_slave_has_tags(const tf_cfg_builder_t *b,
                              const tf_cfg_slave_t *s);

const tf_cfg_scheduler_t *tf_config_scheduler(const tf_config_t *c,
                                              const char *name);

/* docs/config.md's reference tables are made from the loader's own key
 * tables (the unit test config_doc compares the page with them). Each
 * table has a name, "top", "listen", "builders", "steps", "mail.smtp"...:
 * tf_config_doc_name(i) is the i-th (NULL past the last), and
 * tf_config_doc_table(name) its markdown table, malloc'd (NULL for an
 * unknown name or when out of memory). */
const char *tf_config_doc_name(size_t i);
char *tf_config_doc_table(const char *name);

#endif
