/*
 * config.h - tf-indicator's settings: the masters to watch (from
 * --master flags or the config file), master URLs, command-line flags
 * and the reconnect backoff. Pure functions (no GTK, no sockets) so every
 * diagnostic has a unit test (indicator/tests/test_ind_config.c).
 */
#ifndef TF_IND_CONFIG_H
#define TF_IND_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TF_IND_MAX_MASTERS 16
#define TF_IND_URL_MAX 512     /* a master URL, bytes */
#define TF_IND_LABEL_MAX 64    /* a master's label, bytes */
#define TF_IND_CONFIG_MAX 65536 /* the config file, bytes */
#define TF_IND_ERR_MAX 512
#define TF_IND_BACKOFF_MAX_MS 60000

/* A master URL taken apart: http://HOST[:PORT][/PREFIX] or https://... */
typedef struct tf_ind_url {
    bool tls;
    char host[256];  /* a name or an IPv4 address; IPv6 without brackets */
    int port;
    char prefix[256]; /* "" or "/a/b": no trailing slash */
    char base[TF_IND_URL_MAX + 1]; /* normalised: scheme://host[:port]prefix */
} tf_ind_url_t;

typedef struct tf_ind_master_conf {
    tf_ind_url_t url;
    char label[TF_IND_LABEL_MAX + 1]; /* "" means: the master's own name */
} tf_ind_master_conf_t;

typedef struct tf_ind_conf {
    tf_ind_master_conf_t masters[TF_IND_MAX_MASTERS];
    size_t nmasters;
    bool notify;            /* desktop notifications (default true) */
    char *browser;          /* owned; NULL: the desktop's default browser */
    char *ca_file;          /* owned; CA certificates (PEM) for https
                               masters, NULL: the system's */
    char *config_path;      /* owned; the file read, or NULL */
    char *dump_path;        /* owned; --dump-state FILE, or NULL */
    char *icon_dir;         /* owned; --icon-dir DIR, or NULL: installed */
    char *log_level;        /* owned; --log-level, or NULL: info */
    int retry_max_ms;       /* cap of the reconnect backoff */
} tf_ind_conf_t;

/* Outcome of tf_ind_args_parse besides an error. */
typedef enum {
    TF_IND_ARGS_RUN = 0,
    TF_IND_ARGS_HELP,
    TF_IND_ARGS_VERSION,
    TF_IND_ARGS_IDLE, /* --autostart and no masters configured: exit 0 */
} tf_ind_args_action_t;

/* Parses URL ("http://host[:port][/prefix]" or https) into out. On error
 * returns TF_EINVAL and writes a sentence naming what is wrong to err. */
int tf_ind_url_parse(const char *url, tf_ind_url_t *out, char *err,
                     size_t errlen);

void tf_ind_conf_init(tf_ind_conf_t *c);
/* Frees what c owns (not c itself); c may be NULL. */
void tf_ind_conf_free(tf_ind_conf_t *c);

/* Loads the JSON config file at path into c (masters, notify, browser,
 * retry_max_s). Masters from the file replace none already in c when c
 * already has some (flags win). Errors name the file, line:column and key.
 * Returns 0, TF_ENOENT (missing file), TF_ECONFIG or TF_EINVAL. */
int tf_ind_conf_load(tf_ind_conf_t *c, const char *path, char *err,
                     size_t errlen);

/* The default config path: $XDG_CONFIG_HOME/testfarm/indicator.json, else
 * $HOME/.config/testfarm/indicator.json; NULL when neither is set.
 * Caller frees. xdg and home are the variables' values (may be NULL). */
char *tf_ind_conf_default_path(const char *xdg, const char *home);

/* Parses argv (flags only, see tf-indicator --help) into c, reading the
 * config file (--config FILE, which must exist, or the default path, which
 * may be missing). *action says whether to run or print help/version.
 * xdg and home as for tf_ind_conf_default_path. Returns 0 or TF_EINVAL /
 * TF_ECONFIG with err set; no masters at all is an error. */
int tf_ind_args_parse(tf_ind_conf_t *c, int argc, char **argv,
                      const char *xdg, const char *home,
                      tf_ind_args_action_t *action, char *err, size_t errlen);

/* The usage text (static). */
const char *tf_ind_usage(void);

/* Delay before reconnect attempt number attempt (0 = the first retry):
 * 1 s doubling up to max_ms, with up to 20% taken off by jitter01 in
 * [0, 1) so that indicators started together do not retry in step. */
int64_t tf_ind_backoff_ms(unsigned attempt, int max_ms, double jitter01);

#endif
