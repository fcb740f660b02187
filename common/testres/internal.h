/*
 * internal.h - what the test-result parsers share inside common/testres:
 * the line a console parser sees, the parser table, and the failure
 * message builder.
 *
 * A console parser is a state machine over lines: console.c splits the
 * streams, strips colour codes and gives each format's line() function one
 * complete line with its position in the step's log. Parsers keep no more
 * than a few messages' worth of state, so a step's output never has to be
 * held.
 */
#ifndef TF_TESTRES_INTERNAL_H
#define TF_TESTRES_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "testres.h"

/* One console line: at most TF_TR_LINE_MAX bytes, NUL-terminated, without
 * its "\n" (or "\r\n"), colour codes removed and NUL bytes turned into
 * '?'. `cut` says the line was longer. */
typedef struct tf__line {
    const char *s;
    size_t len;
    int stream;      /* 1 stdout, 2 stderr */
    uint64_t offset; /* of its first byte in the step's log */
    uint64_t lineno; /* its line number there, from 1 */
    bool cut;
} tf__line_t;

typedef struct tf__parser {
    tf_tr_format_t fmt;
    size_t state_size;
    void (*line)(tf_tr_console_t *c, void *st, const tf__line_t *ln);
    void (*finish)(tf_tr_console_t *c, void *st);
    void (*fini)(void *st); /* frees what the state owns; may be NULL */
} tf__parser_t;

extern const tf__parser_t tf__ctest_parser, tf__gtest_parser,
    tf__pytest_parser, tf__unittest_parser, tf__automake_parser,
    tf__tap_parser;

/* Reports a result through the console's callback (file mode applies its
 * prefix and drops the log position there). */
void tf__emit(tf_tr_console_t *c, tf_tr_kind_t kind, const tf_tr_res_t *r);

/* Records a report file the output named (automake); dir may be NULL. */
void tf__hint(tf_tr_console_t *c, const char *path, const char *dir);

/* ---- failure message builder ---------------------------------------- */

#define TF__KEY_MAX 512

/* Collects a failure's output lines into a message of at most
 * TF_TR_MAX_MESSAGE bytes, and the span of log lines they cover. When the
 * output is longer than the cap, the head is kept, and the key line (the
 * first "file:line:" assertion-looking line, or one the parser names) is
 * appended after a "[...]" marker if it was not in the head. */
typedef struct tf__msg {
    char buf[TF_TR_MAX_MESSAGE + 1];
    size_t len;
    uint64_t dropped;   /* bytes of output that did not fit */
    char key[TF__KEY_MAX + 1];
    bool has_key;
    bool key_in_head;
    bool key_fixed;     /* set by the parser: automatic keys do not replace */
    tf_tr_loc_t loc;
    char out[TF_TR_MAX_MESSAGE + 1];
} tf__msg_t;

void tf__msg_reset(tf__msg_t *m);
/* Appends a line of text (n bytes, no newline). */
void tf__msg_add(tf__msg_t *m, const char *s, size_t n);
/* Extends the log span to cover ln (which need not be in the message). */
void tf__msg_span(tf__msg_t *m, const tf__line_t *ln);
/* Both: the line's text and its position. */
void tf__msg_line(tf__msg_t *m, const tf__line_t *ln);
/* Names s as the key line (replaces an automatic one; a later call
 * replaces an earlier one when `last` is true). */
void tf__msg_key(tf__msg_t *m, const char *s, size_t n, bool last);
/* The message (NULL when empty), valid until the next change. */
const char *tf__msg_text(tf__msg_t *m);
bool tf__msg_empty(const tf__msg_t *m);

/* ---- small string helpers ------------------------------------------- */

bool tf__starts(const char *s, const char *prefix);
/* Skips spaces and tabs. */
const char *tf__skip_ws(const char *s);
/* Copies at most cap-1 bytes of s[0..n) into out, trimming spaces at both
 * ends, and terminates it. */
void tf__copy_trim(char *out, size_t cap, const char *s, size_t n);
/* Appends n bytes of src to the string in dst[cap] as far as they fit;
 * returns the new length. */
size_t tf__cat(char *dst, size_t cap, const char *src, size_t n);
/* Whether a line looks like a compiler-style "file:line:" location. */
bool tf__looks_like_location(const char *s);
/* Parses "12.5" seconds into ms (rounded); -1 when not a number. */
int64_t tf__seconds_to_ms(const char *s, size_t n);
/* Parses a non-negative decimal integer of s[0..n); -1 when not one. */
int64_t tf__parse_uint(const char *s, size_t n);

#endif
