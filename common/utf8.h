/*
 * utf8.h - the one UTF-8 decoder of TestFarm.
 *
 * Everything that judges or cuts UTF-8 (the protocol encoder, the config
 * positions index, the git log parser, the mail renderer, the slave's
 * command modifiers, tf-try's text checks, user names) asks this module,
 * so that "valid" means the same thing everywhere: RFC 3629, the rule
 * jansson applies too: shortest form only, no surrogates (U+D800..DFFF),
 * nothing above U+10FFFF. Pure functions (only tf_utf8_dup_lossy
 * allocates); fuzzed through the decoders that use them.
 */
#ifndef TF_UTF8_H
#define TF_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length (1..4) of the well-formed sequence at p, with n >= 1 bytes
 * available, or 0 when the bytes there are not one (a stray continuation
 * byte, an overlong form, a surrogate, a value above U+10FFFF, or a
 * sequence cut short by n). A NUL byte is a valid sequence of length 1. */
size_t tf_utf8_len(const unsigned char *p, size_t n);

/* Whether s[0..n) is well-formed UTF-8 throughout. */
bool tf_utf8_valid(const char *s, size_t n);

/* Whether the NUL-terminated s is well-formed UTF-8 without control
 * characters (C0 and DEL); tab is allowed when allow_tab is set. */
bool tf_utf8_text_clean(const char *s, bool allow_tab);

/* The largest n' <= max such that s[0..n') does not end inside a
 * sequence (n is the length of s); s itself need not be valid: only
 * continuation bytes are stepped back over, at most three. */
size_t tf_utf8_cut(const char *s, size_t n, size_t max);

/* The length of s[0..n) without a sequence cut short at its end, as a
 * byte-capped copy (snprintf's) leaves one: a trailing lead byte followed
 * by fewer continuation bytes than it announces is dropped with them.
 * What comes before is not judged. */
size_t tf_utf8_trim(const char *s, size_t n);

/* A malloc'd copy of s[0..n) as valid UTF-8: each byte that does not
 * start a valid sequence, and each NUL, becomes '?'. The copy is cut at
 * max bytes on a character boundary. NULL when out of memory. */
char *tf_utf8_dup_lossy(const char *s, size_t n, size_t max);

/* Encodes cp (<= 0x10FFFF; surrogates are encoded as-is, for lone JSON
 * \uD800 escapes) into out; returns its length, or 0 when cp is above
 * U+10FFFF. */
size_t tf_utf8_put(uint32_t cp, unsigned char out[4]);

#endif
