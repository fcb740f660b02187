/*
 * mail_render.h - result mails as pure functions from data to bytes.
 *
 * Everything here is a function of its arguments (ARCHITECTURE.md: "every
 * piece of rendering is a function from data to a string"): no clock, no
 * randomness, no files, no database. The caller (mail.c) reads the rows,
 * picks the Message-ID, the MIME boundary and "now", and hands them in, so
 * unit tests can render a mail byte for byte and the outbox can store the
 * exact message before its first delivery attempt.
 *
 * The pieces, each usable on its own:
 *   - header encodings: RFC 2047 encoded words for UTF-8 subjects and
 *     display names, addresses, RFC 5322 dates, threading Message-IDs;
 *   - quoted-printable (RFC 2045) with CRLF line ends;
 *   - the log excerpt: a streaming selector fed with a step's log bytes,
 *     keeping the first lines that match the builder's error patterns and
 *     the last N lines, each line cleaned (valid UTF-8, no control or
 *     colour sequences) and the whole capped in bytes;
 *   - whole messages: a try job report and a continuous build notice, as
 *     multipart/alternative (text and HTML, UTF-8, quoted-printable) under
 *     a cap on the whole message's size.
 *
 * Strings passed in are UTF-8 (invalid bytes are replaced) and borrowed;
 * NULL means "unknown" wherever a field is optional.
 */
#ifndef TF_MAIL_RENDER_H
#define TF_MAIL_RENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "result.h"

#define TF_MAIL_LINE_KEEP 4096    /* bytes of a log line kept for matching */
#define TF_MAIL_LINE_SHOW 1000    /* bytes of a log line shown in a mail */
#define TF_MAIL_MAX_MATCHES 200   /* matching lines kept per excerpt */
#define TF_MAIL_DATE_LEN 40

/* --- header pieces --- */

/* Appends text as the value of an unstructured header (Subject): as is
 * when it is printable ASCII without "=?", otherwise as RFC 2047 "B"
 * encoded words of at most 75 characters, never splitting a UTF-8
 * character, folded with CRLF SP between words. Control characters become
 * spaces first. Returns 0, TF_ENOMEM or TF_E2BIG (out's cap). */
int tf_mail_header_text(tf_buf_t *out, const char *text);

/* Appends one mailbox: `"Name" <addr>` for a printable ASCII name,
 * `=?UTF-8?B?...?= <addr>` otherwise, or `<addr>` alone when name is NULL
 * or empty. addr must already be a valid plain address. */
int tf_mail_header_address(tf_buf_t *out, const char *name, const char *addr);

/* Formats ms (Unix epoch, UTC) as an RFC 5322 date:
 * "Sun, 22 Nov 2026 10:00:00 +0000". out holds TF_MAIL_DATE_LEN bytes. */
void tf_mail_date(int64_t ms, char out[TF_MAIL_DATE_LEN]);

/* The Message-ID every mail about one review refers to (In-Reply-To and
 * References), so mail clients thread a review's try jobs together:
 * "<tf-review.HEX@domain>" where HEX is the first 32 hex digits of the
 * SHA-256 of the URL. Returns a malloc'd string (caller frees) or NULL. */
char *tf_mail_thread_id(const char *kind, const char *key,
                        const char *domain);

/* The domain of an address ("example.org" for "ci@example.org"), or
 * "localhost" when it has none. Borrowed from addr. */
const char *tf_mail_domain(const char *addr);

/* --- bodies --- */

/* Appends data as quoted-printable: '\n' is a hard line break (CRLF),
 * every other byte outside printable ASCII, '=' and whitespace before a
 * line end are =XX, a '.' or "From " starting a line is encoded so no
 * transport mangles it, and lines are at most 76 characters with soft
 * breaks. */
int tf_mail_qp_encode(tf_buf_t *out, const void *data, size_t n);

/* Appends s with & < > " ' escaped for HTML. */
int tf_mail_html_escape(tf_buf_t *out, const char *s);

/* Appends bytes[0..n) as one clean line of at most max_bytes bytes: invalid
 * UTF-8 becomes U+FFFD, ANSI escape sequences go, a '\r' inside the line
 * keeps only what follows it (progress bars), other control characters
 * except tab go, and a cut line ends with " [...]". */
int tf_mail_clean_line(tf_buf_t *out, const void *bytes, size_t n,
                       size_t max_bytes);

/* Appends a duration as "850 ms", "12.3 s", "4 min 05 s" or "2 h 03 min". */
int tf_mail_duration(tf_buf_t *out, int64_t ms);

/* --- log excerpts --- */

typedef struct tf_excerpt tf_excerpt_t;

/* A selector keeping, of the lines fed to it, the first ones containing
 * any of patterns (plain substrings, matched without regard to ASCII case;
 * copied), each with the context_after lines that follow it (see
 * tf_excerpt_set_context_after; 0 by default), and the last
 * tail_lines lines; the excerpt it returns is at most max_bytes long.
 * Returns NULL when out of memory. */
tf_excerpt_t *tf_excerpt_new(const char *const *patterns, size_t npatterns,
                             unsigned tail_lines, size_t max_bytes);

/* Keeps, after each matching line, the next lines too (a sanitizer's
 * stack after "ERROR: LeakSanitizer"), counted against the same caps as
 * the matches. Call before feeding. */
void tf_excerpt_set_context_after(tf_excerpt_t *e, unsigned lines);

/* Feeds the next bytes of the log. Lines end with '\n'; any bytes are
 * fine. */
void tf_excerpt_feed(tf_excerpt_t *e, const void *data, size_t n);

/* Skips ahead: the next byte fed starts line number line (0-based; for a
 * log too long to read whole, the tail is read from a later chunk whose
 * first line number is known). A partial line is dropped. */
void tf_excerpt_jump(tf_excerpt_t *e, uint64_t line);

/* Ends the log and returns the excerpt (malloc'd, caller frees; NULL when
 * out of memory): a section of matching lines outside the tail, then the
 * tail, each line prefixed by its 1-based number. A log without lines
 * gives "". */
char *tf_excerpt_finish(tf_excerpt_t *e);

/* Lines seen so far (a last line without '\n' counts after finish). */
uint64_t tf_excerpt_lines(const tf_excerpt_t *e);

void tf_excerpt_free(tf_excerpt_t *e);

/* Shortens an excerpt to at most max bytes by cutting whole lines from
 * its middle and saying so, keeping its first and last lines (the first
 * error and the end of the step). Returns a malloc'd string (caller
 * frees) or NULL when out of memory. */
char *tf_excerpt_shrink(const char *excerpt, size_t max);

/* --- whole messages --- */

/* What every message needs besides its content. */
typedef struct tf_mail_env {
    const char *master_name;    /* "TestFarm"; shown in the footer */
    const char *base_url;       /* the master's public URL ending in '/' */
    const char *from_addr;      /* plain address */
    const char *from_name;      /* display name; NULL = none */
    const char *subject_prefix; /* "[TestFarm]"; NULL or "" = none */
    const char *message_id;     /* "<...>", chosen by the caller */
    const char *boundary;       /* MIME boundary, chosen by the caller;
                                   starting with "=_" keeps it out of any
                                   quoted-printable text */
    int64_t now_ms;             /* the Date header */
    size_t max_bytes;           /* cap on the whole message */
} tf_mail_env_t;

typedef struct tf_mail_rcpt {
    const char *name; /* display name or NULL */
    const char *addr;
} tf_mail_rcpt_t;

/* The step that failed a build, with what the mail shows of its log. */
typedef struct tf_mail_step {
    unsigned index;
    const char *name;
    tf_result_t result;
    const char *text;    /* the step's text ("exit 1"), or NULL */
    const char *info;    /* info extracted from its log, or NULL */
    const char *log_url; /* the full log */
    uint64_t log_lines;
    const char *excerpt; /* tf_excerpt_finish's output, or NULL */
} tf_mail_step_t;

/* A failing (or flaky) test of a build, shown before the log excerpt. */
typedef struct tf_mail_test {
    const char *suite;   /* "" or NULL: none */
    const char *name;
    bool flaky;          /* failed, then passed on a retry */
    int known;           /* -1: not a try build; 0: new; 1: also failing
                            without the patch */
    const char *message; /* the failure message, or NULL */
    const char *step;    /* its step's name, or NULL */
    uint64_t log_line;   /* its first line in that step's log; 0: unknown */
    const char *lines;   /* its own lines of the log, or NULL */
} tf_mail_test_t;

/* One builder's build (a try job's builder, or the build of a notice). */
typedef struct tf_mail_build {
    const char *builder;
    bool has_build;             /* a build ran (or started) */
    uint64_t build_id;
    uint64_t number;
    const char *slave;
    bool has_result;
    tf_result_t result;
    const char *state;          /* the request's state when no result */
    int64_t started_ms;         /* 0 = unknown */
    int64_t finished_ms;        /* 0 = unknown */
    const char *url;            /* link to the build */
    const char *text;           /* the build's text, or NULL */
    const tf_mail_step_t *failed; /* NULL when no step failed */
    /* Its failing tests (fail first, then flaky), at most a few: */
    const tf_mail_test_t *tests;
    size_t ntests;
    uint64_t tests_fail, tests_flaky; /* how many in all */
    bool is_try;
    uint64_t new_failures;      /* try: failing tests that are new */
} tf_mail_build_t;

typedef struct tf_mail_job {
    uint64_t id;
    const char *author;       /* display name */
    const char *author_email;
    const char *description;
    const char *review_url;
    const char *patchset;
    const char *base_revision;
    const char *state;        /* "finished" or "cancelled" */
    bool has_result;
    tf_result_t result;
    int64_t submitted_ms;
    int64_t finished_ms;
    const char *url;          /* the job */
    const tf_mail_rcpt_t *to;
    size_t nto;
    const tf_mail_build_t *builds;
    size_t nbuilds;
    bool new_failures_only;   /* the subject counts new failures only */
    uint64_t new_failure_builds; /* failed builds with a new failure (or
                                    with no failing test explaining it) */
} tf_mail_job_t;

/* A change of a continuous build's blamelist. */
typedef struct tf_mail_change {
    const char *revision;
    const char *author;
    const char *email;
    const char *message;
} tf_mail_change_t;

/* What a continuous build notice is about. */
typedef struct tf_mail_notice {
    tf_mail_build_t build;
    bool has_prev;           /* the builder's previous build had a result */
    tf_result_t prev;
    const char *repository;
    const char *branch;
    const char *revision;    /* got_revision, else the requested one */
    const char *reason;
    const tf_mail_step_t *steps; /* every step, for the summary; may be 0 */
    size_t nsteps;
    const tf_mail_change_t *changes;
    size_t nchanges;
    const tf_mail_rcpt_t *to;
    size_t nto;
} tf_mail_notice_t;

/* A rendered message. */
typedef struct tf_mail_msg {
    char *subject;   /* the subject as text (UTF-8, not encoded) */
    char *data;      /* the whole RFC 5322 message, CRLF line ends */
    size_t len;
} tf_mail_msg_t;

/* "PASS" (SUCCESS, WARNINGS), "FAIL" (FAILURE, EXCEPTION) or the result's
 * name. */
const char *tf_mail_verdict(tf_result_t r);

/* Renders the report of a finished try job into *out (free with
 * tf_mail_msg_clear). Excerpts are shortened as much as needed to keep
 * the message within env->max_bytes. Returns 0, TF_ENOMEM, TF_EINVAL
 * (no recipient) or TF_E2BIG (too big even without excerpts). */
int tf_mail_render_job(const tf_mail_env_t *env, const tf_mail_job_t *job,
                       tf_mail_msg_t *out);

/* The same for a continuous build notice. */
int tf_mail_render_notice(const tf_mail_env_t *env, const tf_mail_notice_t *n,
                          tf_mail_msg_t *out);

void tf_mail_msg_clear(tf_mail_msg_t *m);

#endif
