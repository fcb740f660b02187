/*
 * modifiers.h - TestFarm's command modifiers, applied on the slave while a
 * step's output streams in.
 *
 * A step's modifiers (build_start.steps[].modifiers, docs/protocol.md) say
 * what to extract from its output: info text, named numbers (stats), a
 * count of warning lines, and rules that override the exit status
 * (pass_if, fail_if). They run here, on the slave, line by line as the
 * bytes arrive, because the step's result decides haltOnFailure here: the
 * slave stays the one authority for a step's result, and nothing ever
 * re-reads a stored log.
 *
 * Each stream (stdout, stderr) is matched on its own, with its own line
 * buffer of at most TF_MODS_LINE_MAX bytes: a line ends at "\n" (a "\r"
 * right before it belongs to the line end; any other "\r" is content) or
 * at the end of the step; a longer line is matched in pieces of
 * TF_MODS_LINE_MAX bytes. Memory per step is therefore bounded whatever
 * the step prints. The warnings count still counts a cut line once,
 * however many of its pieces match. At the end the two streams' results
 * are combined as if stdout's lines had all come before stderr's, so the
 * timing of reads on the two pipes never shows in a result.
 *
 * Lines are bytes; regexes run in the C locale (one byte, one character)
 * with REG_STARTEND where the C library has it, so NUL bytes and invalid
 * UTF-8 in the output are matched like any other byte. Text that leaves
 * the slave (info) is made valid UTF-8 first.
 */
#ifndef TF_MODIFIERS_H
#define TF_MODIFIERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "result.h"

/* The longest line the matchers see; longer lines are split. */
#define TF_MODS_LINE_MAX (64 * 1024)

/* Marker lines a step prints to report data itself. */
#define TF_MODS_MARK_STAT "@@@TF_STAT"
#define TF_MODS_MARK_INFO "@@@TF_INFO"
#define TF_MODS_MARK_END "@@@"

typedef struct tf_mods tf_mods_t;

/* Compiles spec's regexes (POSIX extended) into a new matcher; spec is
 * only read, not kept. The caller owns *out and frees it with
 * tf_mods_free. Returns 0, TF_ENOMEM, or TF_EINVAL when a regex does not
 * compile or a stats rule without a name lacks its two groups, with a
 * sentence naming the rule in err[errlen]. */
int tf_mods_new(const tf_modifiers_t *spec, tf_mods_t **out, char *err,
                size_t errlen);

/* Feeds n bytes a step wrote on one stream (borrowed for the call). Any
 * split of the output into calls gives the same results. */
void tf_mods_feed(tf_mods_t *x, tf_stream_t stream, const uint8_t *data,
                  size_t n);

/* The output is over: the unterminated last line of each stream, if any,
 * is matched now, and the two streams' results are combined (stdout's
 * first). Later feeds are ignored. */
void tf_mods_finish(tf_mods_t *x);

/* The step's result after the rules, from `result`, the one its end gave.
 * Call after tf_mods_finish. exited says the command ended by itself with
 * an exit status (not killed, timed out, aborted, or never started); only
 * then do pass_if and fail_if apply:
 *   fail_if matched a line                 -> FAILURE, whatever the exit;
 *   else pass_if given and matched a line  -> SUCCESS, whatever the exit;
 *   else pass_if given and matched nothing -> FAILURE;
 * then, a SUCCESS with more warning lines than the rule's max becomes
 * WARNINGS. Each rule that changed the result says so in note ("fail_if
 * matched \"LINE\"" with '\\' and '"' of the line escaped, "pass_if
 * matched", "pass_if did not match", "N warning(s)[ (over max)]", joined
 * by "; "); note is "" when nothing changed. x may be NULL (result comes
 * back). */
tf_result_t tf_mods_verdict(const tf_mods_t *x, tf_result_t result,
                            bool exited, char *note, size_t notelen);

/* The info text, once tf_mods_finish ran (valid UTF-8, at most
 * TF_PROTO_MAX_INFO_TEXT bytes), or NULL when nothing was extracted.
 * Owned by x. */
const char *tf_mods_info(const tf_mods_t *x);

/* The stats, once tf_mods_finish ran (owned by x), in the order their
 * names first showed up (stdout's, then stderr's new ones), at most
 * TF_PROTO_MAX_STATS; a name seen again keeps its last value (stderr's
 * when both streams set it). */
const tf_stat_t *tf_mods_stats(const tf_mods_t *x, size_t *n);

/* Whether the step has a warnings rule, and how many lines matched it. */
bool tf_mods_warnings(const tf_mods_t *x, uint64_t *count);

/* Frees x; x may be NULL. */
void tf_mods_free(tf_mods_t *x);

#endif
