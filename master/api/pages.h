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

#include "net/http.h"
#include "names.h"

void tf_api_summary(tf_http_req_t *r);
void tf_api_waterfall(tf_http_req_t *r);
void tf_api_console(tf_http_req_t *r);

/* Builds created before `before` (ms), or in that millisecond with an id
 * below before_id, newest first, at most limit, of the given builders (all
 * when nbuilders is 0), each with its steps.
 * *out: {"builds": [...], "next_before": ms|null, "next_before_id":
 * id|null}. */
int tf_q_waterfall(sqlite3 *db, const char *base_url, int64_t before,
                   int64_t before_id, unsigned limit, char (*builders)[TF_NAME_MAX + 1],
                   size_t nbuilders, json_t **out);

/* Where a console page starts: rows before the millisecond `before`, and
 * in it try jobs with an id below before_job and changes with an id below
 * before_change. */
typedef struct tf_console_cursor {
    int64_t before;
    int64_t before_job;
    int64_t before_change;
} tf_console_cursor_t;

/* Try jobs submitted and changes recorded after the cursor, newest first,
 * as console rows (kind "job" or "change").
 * *out: {"rows": [...], "next_before": ms|null, "next_before_job":
 * id|null, "next_before_change": id|null}. */
int tf_q_console(sqlite3 *db, const char *base_url,
                 const tf_console_cursor_t *cursor, unsigned limit,
                 json_t **out);

#endif
