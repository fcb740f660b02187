/*
 * stepres.h - a step's test results on the slave: the declared parser fed
 * from the step's output as it streams, report files read when the step
 * ends, and the test_results messages that carry what was found.
 *
 * A step opts in with build_start.steps[].test_results; without it nothing
 * here runs and no test_results message is sent, so a master that does
 * not know the message never gets one.
 *
 * Report files are found by globs relative to the step's directory and
 * read through directory descriptors opened one component at a time with
 * O_NOFOLLOW from the builder's workdir: no symbolic link is followed, so
 * whatever a build leaves behind, nothing outside the workdir is read. A
 * file is read whole only when it is a regular file within the caps
 * (TF_STEPRES_FILE_MAX each, TF_STEPRES_TOTAL_MAX in all,
 * TF_STEPRES_MAX_MATCHES files, TF_STEPRES_MAX_VISIT directory entries
 * looked at); what is refused or malformed becomes a problem sentence in
 * the step's last test_results message and a warning in the slave's log.
 */
#ifndef TF_STEPRES_H
#define TF_STEPRES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

#define TF_STEPRES_FILE_MAX (32u << 20)  /* bytes of one report file */
#define TF_STEPRES_TOTAL_MAX (64u << 20) /* bytes of report files per step */
#define TF_STEPRES_MAX_MATCHES 256       /* report files per step */
#define TF_STEPRES_MAX_VISIT 100000      /* directory entries looked at */
#define TF_STEPRES_MAX_DEPTH 32          /* directories deep below the step */
/* What the slave packs into one test_results message, below the protocol's
 * cap with room for the envelope. */
#define TF_STEPRES_BATCH_BYTES 56000

typedef struct tf_stepres tf_stepres_t;

/* A new collector for a step declaring spec (borrowed; copied as needed).
 * The caller owns *out (tf_stepres_free). Returns 0 or TF_ENOMEM. */
int tf_stepres_new(const tf_test_spec_t *spec, tf_stepres_t **out);

/* n bytes the step wrote on one stream (borrowed for the call). */
void tf_stepres_feed(tf_stepres_t *x, tf_stream_t stream,
                     const uint8_t *data, size_t n);

/* The step is over: finishes the console parser and, when read_files is
 * true, reads the report files (the spec's globs, and the logs the console
 * named) under root (the builder's workdir) / stepdir (the step's workdir,
 * relative, "" for root). */
void tf_stepres_finish(tf_stepres_t *x, const char *root, const char *stepdir,
                       bool read_files);

/* Sends the results as test_results messages (each within
 * TF_PROTO_MAX_RESULTS_TEXT bytes and TF_PROTO_MAX_RESULTS results; at
 * least one, the last with last=true, total, dropped and problems)
 * through cb, every field set except seq; the message is borrowed for the
 * call. Returns how many messages went out. */
size_t tf_stepres_emit(tf_stepres_t *x, uint64_t build_id, uint32_t step,
                       void (*cb)(void *arg, tf_msg_t *msg), void *arg);

/* "215 tests: 212 pass, 1 fail, 1 flaky, 1 skip" (and problems) for
 * logs. */
void tf_stepres_summary(const tf_stepres_t *x, char *buf, size_t len);

/* The merged results (for tests). */
const tf_tr_collect_t *tf_stepres_collected(const tf_stepres_t *x);

/* Frees x; x may be NULL. */
void tf_stepres_free(tf_stepres_t *x);

#endif
