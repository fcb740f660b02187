/*
 * pages.h - endpoints for the status pages: summary, waterfall, console.
 * The queries are pure functions from a read connection to JSON, testable
 * against any database file.
 */
#ifndef TF_PAGES_H
#define TF_PAGES_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <sqlite3.h>

#include "http.h"
#include "names.h"

void tf_api_summary(tf_http_req_t *r);
void tf_api_waterfall(tf_http_req_t *r);
void tf_api_console(tf_http_req_t *r);

/* Builds created before `before` (ms), newest first, at most limit, of the
 * given builders (all when nbuilders is 0), each with its steps.
 * *out: {"builds": [...], "next_before": ms|null}. */
int tf_q_waterfall(sqlite3 *db, const char *base_url, int64_t before,
                   unsigned limit, char (*builders)[TF_NAME_MAX + 1],
                   size_t nbuilders, json_t **out);

/* Try jobs submitted before `before`, newest first, as console rows.
 * *out: {"rows": [...], "next_before": ms|null}. */
int tf_q_console(sqlite3 *db, const char *base_url, int64_t before,
                 unsigned limit, json_t **out);

#endif
