/*
 * jsonpos.h - where each value of a JSON document is, by JSON Pointer.
 *
 * jansson tells where a syntax error is but not where a well-formed value
 * sits, and configuration errors must say file:line:col. tf_jsonpos_index()
 * scans the same text once more and records, for every value, its RFC 6901
 * pointer ("/builders/0/steps/2/timeout"), the line and column where the
 * value starts and, for object members, where the key starts. Lines and
 * columns count from 1; columns count bytes.
 *
 * The index is only built for well-formed documents (parse with jansson
 * first); on malformed text tf_jsonpos_index returns TF_EINVAL.
 */
#ifndef TF_JSONPOS_H
#define TF_JSONPOS_H

#include <stddef.h>

typedef struct tf_jsonpos tf_jsonpos_t;

/* Builds the index over text[0..len). Returns 0, TF_EINVAL or TF_ENOMEM.
 * The caller frees *out with tf_jsonpos_free. */
int tf_jsonpos_index(const char *text, size_t len, tf_jsonpos_t **out);

/* Looks up a pointer. Returns 0 and fills line/col of the value (and of its
 * key when key_line is non-NULL and the value is an object member; 0 when it
 * has no key), or TF_ENOENT. */
int tf_jsonpos_find(const tf_jsonpos_t *idx, const char *pointer, int *line,
                    int *col, int *key_line, int *key_col);

void tf_jsonpos_free(tf_jsonpos_t *idx);

#endif
