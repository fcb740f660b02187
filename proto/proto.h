/*
 * proto.h - TestFarm slave protocol v1: message types, encoders, decoders.
 *
 * Pure functions, no I/O: every decoder takes bytes and returns either a
 * fully validated message or an error with a sentence saying what is wrong,
 * so each one can be fuzzed. docs/protocol.md is the specification; this is
 * its one implementation, shared by tf-master and tf-slave.
 *
 * Control messages are JSON objects in text frames; step output travels in
 * binary frames with a 24-byte big-endian header. Decoded messages own their
 * strings and arrays; tf_msg_clear() frees them.
 */
#ifndef TF_PROTO_H
#define TF_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "result.h"
#include "testres.h"
#include "stepspec.h"

#define TF_PROTO_VERSION 1
#define TF_PROTO_SUBPROTOCOL "testfarm-slave"
#define TF_PROTO_WS_PATH "/slave"

#define TF_PROTO_MAX_TEXT (1024 * 1024)  /* control frame cap, bytes */
#define TF_PROTO_MAX_CHUNK 65536         /* output payload cap, bytes */
#define TF_PROTO_OUT_HDR 24              /* binary header size */
#define TF_PROTO_MAX_STEPS 1000
#define TF_PROTO_MAX_RUNNING 64
#define TF_PROTO_MAX_TEXTFIELD 4096      /* step_finished.text */
#define TF_PROTO_MAX_INFO 128            /* hello.version / platform */
#define TF_PROTO_NONCE_HEX 64
#define TF_PROTO_MAX_ID ((uint64_t)9007199254740991ULL) /* 2^53 - 1 */
#define TF_PROTO_HELLO_TIMEOUT_S 10

/* Command modifiers (docs/protocol.md, "Command modifiers"). */
#define TF_PROTO_MAX_MOD_RULES TF_STEP_MAX_RULES /* info, stats rules/step */
#define TF_PROTO_MAX_REGEX TF_STEP_MAX_REGEX     /* bytes of one regex */
#define TF_PROTO_MAX_STATS 64       /* step_finished.stats entries */
#define TF_PROTO_MAX_INFO_TEXT 4096 /* step_finished.info bytes */

/* Test results (docs/protocol.md, "test_results"). */
#define TF_PROTO_MAX_RESULTS 1000          /* results per test_results */
#define TF_PROTO_MAX_RESULTS_TEXT 65536    /* bytes of one test_results */

/* WebSocket close codes that go with error codes. */
#define TF_CLOSE_BAD_AUTH 4001
#define TF_CLOSE_UNKNOWN_SLAVE 4002
#define TF_CLOSE_PROTOCOL_VERSION 4003
#define TF_CLOSE_MALFORMED 4004
#define TF_CLOSE_REPLACED 4005
#define TF_CLOSE_TOO_BIG 4006
#define TF_CLOSE_TIMEOUT 4007
#define TF_CLOSE_RESYNC 4008
#define TF_CLOSE_SHUTDOWN 1001

typedef enum {
    TF_MSG_NONE = 0,
    TF_MSG_CHALLENGE,
    TF_MSG_HELLO,
    TF_MSG_WELCOME,
    TF_MSG_ERROR,
    TF_MSG_PING,
    TF_MSG_PONG,
    TF_MSG_BUILD_START,
    TF_MSG_BUILD_ABORT,
    TF_MSG_ACK,
    TF_MSG_STEP_STARTED,
    TF_MSG_STEP_FINISHED,
    TF_MSG_BUILD_FINISHED,
    TF_MSG_DRAIN, /* no fields */
    TF_MSG_TEST_RESULTS,
    TF_MSG__COUNT
} tf_msg_type_t;

typedef enum {
    TF_STREAM_STDOUT = 1,
    TF_STREAM_STDERR = 2,
} tf_stream_t;

/* A key/value pair of strings (env, properties). Both owned. */
typedef struct tf_kv {
    char *key;
    char *value;
} tf_kv_t;

/* A farm's id (welcome.farm, hello.running[].farm): 1 to 64 lower-case
 * hex digits, made once per farm by its database (docs/protocol.md). */
#define TF_PROTO_FARM_MAX 64

/* A build id with an event sequence number (hello.running, welcome.resume),
 * and in hello.running the farm whose master started it ("": not known,
 * an older slave or master; the field is left out). */
typedef struct tf_running {
    uint64_t build_id;
    uint64_t seq;
    char farm[TF_PROTO_FARM_MAX + 1];
} tf_running_t;

/* A stats rule: a regex whose capture 1 (or whole match) is the value of
 * stat `name`, or, when name is NULL, whose capture 1 is the name and
 * capture 2 the value. Strings owned. */
typedef struct tf_stat_rule {
    char *name;
    char *regex;
} tf_stat_rule_t;

/* A step's command modifiers (build_start.steps[].modifiers): what the
 * slave extracts from the output as it streams in. Regexes are POSIX
 * extended regular expressions, applied to each line. All owned. */
typedef struct tf_modifiers {
    bool markers;          /* honour @@@TF_STAT / @@@TF_INFO lines */
    char **info;           /* ninfo regexes */
    size_t ninfo;
    tf_stat_rule_t *stats; /* nstats rules */
    size_t nstats;
    char *pass_if;         /* NULL when absent */
    char *fail_if;         /* NULL when absent */
    char *warnings;        /* regex counting warning lines, or NULL */
    uint32_t warnings_max; /* WARNINGS when the count is above this */
} tf_modifiers_t;

/* One stat a step reported (step_finished.stats). */
typedef struct tf_stat {
    char name[64 + 1]; /* a valid name (names.h) */
    double value;      /* finite */
} tf_stat_t;

/* A step's declared test output (build_start.steps[].test_results): which
 * parser reads it and, for report files, their globs relative to the
 * step's directory. All owned. */
typedef struct tf_test_spec {
    tf_tr_format_t format;
    char **files;      /* nfiles globs (tf_tr_glob_valid), or NULL */
    size_t nfiles;     /* 0..TF_TR_MAX_FILES; >= 1 for junit */
} tf_test_spec_t;

/* One test's result in a test_results message. Strings owned. */
typedef struct tf_test_result {
    char *suite;         /* "" when none */
    char *name;          /* non-empty */
    tf_tr_status_t status;
    uint32_t attempts;   /* >= 1 */
    int64_t duration_ms; /* -1 when unknown (absent on the wire) */
    char *outcome;       /* the runner's word, or NULL */
    char *message;       /* or NULL */
    bool has_log;
    uint64_t log_offset; /* byte offset in the step's log */
    uint64_t log_line;   /* line number there, from 1 */
    uint64_t log_lines;  /* >= 1 */
} tf_test_result_t;

/* One step as sent in build_start. All pointers owned. */
typedef struct tf_step_spec {
    char *name;
    char **argv;       /* argc entries followed by NULL */
    size_t argc;       /* >= 1 */
    tf_kv_t *env;
    size_t nenv;
    char *workdir;     /* relative; "" = builder workdir */
    uint32_t timeout_s;  /* no-output timeout; 0 = none */
    uint32_t max_time_s; /* total time cap; 0 = none */
    tf_step_flags_t flags;
    char *builtin;     /* NULL, or "source" (docs/protocol.md) */
    tf_modifiers_t *modifiers; /* NULL when the step has none */
    tf_test_spec_t *test_results; /* NULL when the step declares none */
} tf_step_spec_t;

#define TF_BUILTIN_SOURCE "source"
#define TF_PROTO_MAX_PROPS 64

/* What the source step checks out (build_start.source). All owned. */
typedef struct tf_source {
    char *repository;
    char *branch;
    char *revision;    /* "" = head of branch */
    bool has_patch;
    char patch_sha256[TF_PROTO_NONCE_HEX + 1];
    uint64_t patch_size;
} tf_source_t;

typedef struct tf_msg {
    tf_msg_type_t type;
    union {
        struct {
            int protocol;
            char nonce[TF_PROTO_NONCE_HEX + 1];
            char *master;
        } challenge;
        struct {
            int protocol;
            char *slave;
            char auth[TF_PROTO_NONCE_HEX + 1];
            char *version;
            char *platform;
            char **tags;
            size_t ntags;
            uint32_t max_builds;
            tf_running_t *running;
            size_t nrunning;
        } hello;
        struct {
            char *slave;
            uint32_t heartbeat_s;
            tf_running_t *resume;
            size_t nresume;
            uint64_t *abandon;
            size_t nabandon;
            char farm[TF_PROTO_FARM_MAX + 1]; /* "": not sent */
        } welcome;
        struct {
            char *code;
            char *message;
        } error;
        struct {
            uint64_t id;
        } ping; /* also used for pong */
        struct {
            uint64_t build_id;
            char *builder;
            uint64_t number;
            char *workdir;
            tf_kv_t *props;
            size_t nprops;
            tf_step_spec_t *steps;
            size_t nsteps;
            tf_source_t *source; /* NULL when absent */
        } build_start;
        struct {
            uint64_t build_id;
            char *reason;
        } build_abort;
        struct {
            uint64_t build_id;
            uint64_t seq;
        } ack;
        struct {
            uint64_t build_id;
            uint64_t seq;
            uint32_t step;
            char *name;
            int64_t time_ms;
        } step_started;
        struct {
            uint64_t build_id;
            uint64_t seq;
            uint32_t step;
            tf_result_t result;
            bool has_exit_code;
            int exit_code;
            bool has_signal;
            int signal;
            bool timed_out;
            int64_t duration_ms;
            int64_t time_ms;
            char *text;
            tf_kv_t *props; /* step_finished.properties; may be empty */
            size_t nprops;
            char *info;      /* command modifiers' info text, or NULL */
            tf_stat_t *stats; /* nstats <= TF_PROTO_MAX_STATS; may be NULL */
            size_t nstats;
            bool has_warnings;
            uint64_t warnings; /* lines matching the warnings rule */
        } step_finished;
        struct {
            uint64_t build_id;
            uint64_t seq;
            tf_result_t result;
            int64_t time_ms;
        } build_finished;
        struct {
            uint64_t build_id;
            uint64_t seq;
            uint32_t step;
            tf_tr_format_t format;
            tf_test_result_t *results; /* nresults <= TF_PROTO_MAX_RESULTS */
            size_t nresults;
            bool last;         /* the step's last test_results message */
            bool has_total;
            uint64_t total;    /* results in all of the step's messages */
            uint64_t dropped;  /* tests the slave could not keep */
            char **problems;   /* nproblems <= TF_TR_MAX_PROBLEMS */
            size_t nproblems;
        } test_results;
    } u;
} tf_msg_t;

/* The header of a binary output frame. */
typedef struct tf_output_hdr {
    uint8_t stream; /* tf_stream_t */
    uint16_t step;
    uint32_t length; /* payload bytes, 1..TF_PROTO_MAX_CHUNK */
    uint64_t build_id;
    uint64_t seq;
} tf_output_hdr_t;

/* "challenge", "hello", ...; NULL for values out of range. */
const char *tf_msg_type_name(tf_msg_type_t t);

/* Encodes m as compact JSON into a malloc'd NUL-terminated string (caller
 * frees). Validates m the way the decoder would (names, caps, ids), so an
 * encoded message always decodes. Returns 0, TF_EINVAL, TF_E2BIG (the text
 * would pass TF_PROTO_MAX_TEXT) or TF_ENOMEM. */
int tf_msg_encode(const tf_msg_t *m, char **out, size_t *len_out);

/* tf_msg_encode that also says why it failed: a sentence naming the field
 * the validator refused ("build_start.source.revision: ... is not a valid
 * revision") or the size over the cap goes into err[errlen] when err is
 * non-NULL. */
int tf_msg_encode_err(const tf_msg_t *m, char **out, size_t *len_out,
                      char *err, size_t errlen);

/* Decodes and validates one text frame. On success fills *out (caller calls
 * tf_msg_clear) and returns 0. On failure returns TF_E2BIG (over
 * TF_PROTO_MAX_TEXT), TF_EINVAL (not JSON, not an object, unknown type,
 * missing or bad field) or TF_ENOMEM, leaves *out cleared, and writes a
 * sentence naming the problem ("hello.tags[2]: expected a string") into
 * err[errlen] when err is non-NULL. */
int tf_msg_decode(const char *text, size_t len, tf_msg_t *out, char *err,
                  size_t errlen);

/* Frees what m owns and sets it to TF_MSG_NONE; m may be NULL. */
void tf_msg_clear(tf_msg_t *m);

/* Writes the 24-byte header for h into out. Returns 0 or TF_EINVAL when h
 * is out of range (length 0 or over the cap, bad stream, ids too large). */
int tf_output_encode_hdr(const tf_output_hdr_t *h,
                         uint8_t out[TF_PROTO_OUT_HDR]);

/* Decodes a whole binary frame of len bytes. On success fills *h, points
 * *payload into frame (not copied) and returns 0. Errors: TF_ETRUNC (shorter
 * than the header or than header + length), TF_E2BIG (length over the cap),
 * TF_EINVAL (bad kind or stream, zero length, trailing bytes, ids out of
 * range), with a sentence in err when non-NULL. */
int tf_output_decode(const uint8_t *frame, size_t len, tf_output_hdr_t *h,
                     const uint8_t **payload, char *err, size_t errlen);

/* Deep copy of a step spec (for the slave, which keeps steps past the
 * message). Returns 0 or TF_ENOMEM; on failure dst is left cleared. */
int tf_step_spec_copy(tf_step_spec_t *dst, const tf_step_spec_t *src);
void tf_step_spec_clear(tf_step_spec_t *s);

/* Deep copy of modifiers into a new *dst (caller frees with
 * tf_modifiers_free); src NULL gives NULL. Returns 0 or TF_ENOMEM. */
int tf_modifiers_copy(tf_modifiers_t **dst, const tf_modifiers_t *src);
/* Frees m and what it owns; m may be NULL. */
void tf_modifiers_free(tf_modifiers_t *m);

/* Deep copy of a test spec into a new *dst (tf_test_spec_free); src NULL
 * gives NULL. Returns 0 or TF_ENOMEM. */
int tf_test_spec_copy(tf_test_spec_t **dst, const tf_test_spec_t *src);
/* Frees t and what it owns; t may be NULL. */
void tf_test_spec_free(tf_test_spec_t *t);

/* Frees what the n results own and the array; r may be NULL. */
void tf_test_results_free(tf_test_result_t *r, size_t n);

/* Deep copy and release of a source; copy returns 0 or TF_ENOMEM. */
int tf_source_copy(tf_source_t *dst, const tf_source_t *src);
void tf_source_clear(tf_source_t *s);

/* HMAC-SHA256(secret, nonce) as 64 hex chars + NUL into out[65]. */
void tf_proto_auth(const char *secret, const char nonce[TF_PROTO_NONCE_HEX + 1],
                   char out[TF_PROTO_NONCE_HEX + 1]);

#endif
