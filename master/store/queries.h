/*
 * queries.h - read-only queries behind the JSON API.
 *
 * Each function turns rows into a jansson value and nothing else: no
 * sockets, no loop state, so it runs on a thread-pool thread with a
 * read-only connection and can be tested against any database file. The
 * caller overlays live state it keeps in memory (who is connected, queue
 * positions) on the loop thread afterwards.
 *
 * Ids and times are integers; results are names ("SUCCESS") or null.
 * base_url is the master's public URL ending in '/', used for links.
 */
#ifndef TF_QUERIES_H
#define TF_QUERIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include "store/db.h"

#include "names.h"
#include "store/logblock.h"
#include "store/store_sqlite.h"

/* A column of the current row as JSON: an integer, a string, a result
 * name ("SUCCESS"), or parsed JSON text; null for SQL NULL (and for text
 * that is not JSON). The row builders of every query use these. */
json_t *tf_col_int(tf_dbst_t *st, int col);
json_t *tf_col_text(tf_dbst_t *st, int col);
json_t *tf_col_result(tf_dbst_t *st, int col);
json_t *tf_col_json(tf_dbst_t *st, int col);

/* A row's columns by the table: column first + i becomes the member
 * cols[i].key of o, converted as cols[i].kind says; the table ends at a
 * NULL key (a column with kind TF_COL_SKIP is passed over). Returns o. */
typedef enum {
    TF_COL_SKIP,
    TF_COL_INT,
    TF_COL_TEXT,
    TF_COL_RESULT,
    TF_COL_JSON,
    TF_COL_BOOL,
} tf_col_kind_t;
typedef struct tf_col {
    const char *key;
    tf_col_kind_t kind;
} tf_col_t;
json_t *tf_row_set(json_t *o, tf_dbst_t *st, int first,
                   const tf_col_t *cols);

/* Who broke builder o (a builder object with its "last_complete"): when
 * its last complete continuous build is red (FAILURE, EXCEPTION), sets
 * "failing_since" (the first red build after the last green one: {id,
 * number, finished_ms, url, page_url}), "suspects" (the authors, {author,
 * email}, of the changes built since the last green build, at most 50)
 * and "failed_step" ({index, name, result} of the last build's first red
 * step); else null, [] and null. Try builds never count. */
int tf_q_builder_failing(tf_db_t *db, const char *base_url,
                         const char *builder, json_t *o);

/* All builders with their summary rows (and tf_q_builder_failing's
 * fields). *out: JSON array. */
int tf_q_builders(tf_db_t *db, const char *base_url, json_t **out);

/* The row of a builder the store does not hold yet (one just configured,
 * whose row the writer has not committed): no builds, green. Returns a
 * new object, the shape of tf_q_builder's, or NULL without memory. */
json_t *tf_q_builder_unstored(const char *base_url, const char *name);

/* One builder, or TF_ENOENT. */
int tf_q_builder(tf_db_t *db, const char *base_url, const char *name,
                 json_t **out);

/* Builds of a builder, newest first, numbers below `before` (0 = no
 * bound), at most limit, of one kind ("try" or "ci"; NULL: both).
 * *out: {"builds": [...], "next_before": N|null}. */
int tf_q_builds(tf_db_t *db, const char *base_url, const char *builder,
                const char *kind, uint64_t before, unsigned limit,
                json_t **out);

/* One build with its steps, or TF_ENOENT. */
int tf_q_build(tf_db_t *db, const char *base_url, uint64_t id, json_t **out);

/* The same, by builder and number. */
int tf_q_build_by_number(tf_db_t *db, const char *base_url,
                         const char *builder, uint64_t number, json_t **out);

/* The slaves by name, limit of them from offset. *out: array. */
int tf_q_slaves(tf_db_t *db, const char *base_url, uint64_t offset,
                uint64_t limit, json_t **out);

/* One slave with its last `events` connection events, or TF_ENOENT. */
int tf_q_slave(tf_db_t *db, const char *base_url, const char *name,
               unsigned events, json_t **out);

/* One build request, or TF_ENOENT. */
int tf_q_request(tf_db_t *db, const char *base_url, uint64_t id,
                 json_t **out);

/* One try job with its builders (and their current builds with steps), or
 * TF_ENOENT. Positions are left for the caller to add. */
int tf_q_job(tf_db_t *db, const char *base_url, uint64_t id, json_t **out);

/* Jobs newest first, ids below before (0 = no bound), of one author when
 * email is non-NULL. *out: {"jobs": [...], "next_before": N|null}. */
int tf_q_jobs(tf_db_t *db, const char *base_url, const char *email,
              uint64_t before, unsigned limit, json_t **out);

/* Size in bytes and lines of a step's log so far, and when retention
 * removed the build's logs (0: not removed), or TF_ENOENT when the step
 * does not exist. */
int tf_q_log_size(tf_db_t *db, uint64_t build_id, unsigned step,
                  uint64_t *bytes, uint64_t *lines, int64_t *removed_ms);

/* Copies into dst the log bytes in [start, end) of a step, at most max
 * bytes, from its sealed blocks and its open tail. cache (caller's, may
 * be NULL) keeps the last block unpacked between calls. Returns 0 and
 * the number of bytes copied in *got, or TF_ECORRUPT (logged) when a
 * block in the way is damaged (*got bytes before it are good),
 * TF_ESTORE or TF_ENOMEM. */
int tf_q_log_read(tf_db_t *db, uint64_t build_id, unsigned step,
                  uint64_t start, uint64_t end, size_t max, unsigned char *dst,
                  size_t *got, tf_logcache_t *cache);

/* What a master following another master's step (net/live.c) reads at
 * once, in one snapshot: the step's stored size (*size), whether it can
 * grow no more (*ended: the step is done or its build finished), and
 * when from < *size the bytes from `from` on, at most max, into dst
 * (*got). from == UINT64_MAX reads no bytes (the size only). Returns 0,
 * TF_ENOENT when the step does not exist (yet), TF_ECORRUPT (logged),
 * TF_ESTORE or TF_ENOMEM. */
int tf_q_log_follow(tf_db_t *db, uint64_t build_id, unsigned step,
                    uint64_t from, size_t max, unsigned char *dst,
                    size_t *got, uint64_t *size, bool *ended);

/* The log of a step from byte `from` on, in order, in pieces: visit gets
 * each piece's byte offset, line number and bytes (borrowed for the
 * call) and returns true to go on. Returns 0, TF_ECORRUPT (logged),
 * TF_ESTORE or TF_ENOMEM. */
int tf_q_log_visit(tf_db_t *db, uint64_t build_id, unsigned step,
                   uint64_t from,
                   bool (*visit)(void *arg, uint64_t offset, uint64_t line,
                                 const void *data, size_t len),
                   void *arg);

/* The series behind a builder's plots: its last `limit` finished builds,
 * oldest first ({id, number, result, started_ms, duration_ms}), and for
 * each stat name the values its steps reported in those builds (of one
 * kind, "try" or "ci"; NULL: both) ({build_id,
 * number, step, value}, oldest first). TF_ENOENT for an unknown builder.
 * *out: {"builds": [...], "stats": {"NAME": [...]}}. */
int tf_q_builder_stats(tf_db_t *db, const char *base_url, const char *builder,
                       const char *kind, unsigned limit, json_t **out);

/* Changes newest first, ids below before (0 = no bound), at most limit,
 * of one repository and one branch when they are non-NULL. Messages are
 * cut to their first line. *out: {"changes": [...], "next_before": id or
 * null}. */
int tf_q_changes(tf_db_t *db, const char *base_url, const char *repository,
                 const char *branch, uint64_t before, unsigned limit,
                 json_t **out);

/* One change with its whole message and "builds", the builds whose
 * blamelist holds it (oldest first), or TF_ENOENT. */
int tf_q_change(tf_db_t *db, const char *base_url, uint64_t id,
                json_t **out);

/* Builds created before `before` (ms), or in that millisecond with an id
 * below before_id, newest first, at most limit, of the given builders (all
 * when nbuilders is 0) and of one kind ("try", "ci"; NULL: both), each
 * with its steps, its kind, owner (of its request) and author (the try
 * job's, or the authors of its blamelist).
 * *out: {"builds": [...], "next_before": ms|null, "next_before_id":
 * id|null}. */
int tf_q_waterfall(tf_db_t *db, const char *base_url, const char *kind,
                   int64_t before, int64_t before_id, unsigned limit,
                   char (*builders)[TF_NAME_MAX + 1], size_t nbuilders,
                   json_t **out);

/* Where a console page starts: rows before the millisecond `before`, and
 * in it try jobs with an id below before_job and changes with an id below
 * before_change. */
typedef struct tf_console_cursor {
    int64_t before;
    int64_t before_job;
    int64_t before_change;
    const char *kind; /* "try": try job rows only; "ci": changes only;
                         NULL: both */
} tf_console_cursor_t;

/* Try jobs submitted and changes recorded after the cursor, newest first,
 * as console rows (kind "job" or "change").
 * *out: {"rows": [...], "next_before": ms|null, "next_before_job":
 * id|null, "next_before_change": id|null}. */
int tf_q_console(tf_db_t *db, const char *base_url,
                 const tf_console_cursor_t *cursor, unsigned limit,
                 json_t **out);

/* The owner (the committer whose request it ran; "" for none) and the
 * state ("starting", "running", "finished") of build id, copied into the
 * caller's buffers, or TF_ENOENT. */
int tf_q_build_owner(tf_db_t *db, uint64_t id, char *owner, size_t owner_len,
                     char *state, size_t state_len);

/* The owner ("" for none), the state ("pending", "running", "done", ...),
 * the build id (0 for none) and the try job (0 for none) of request id,
 * or TF_ENOENT. */
int tf_q_request_owner(tf_db_t *db, uint64_t id, char *owner,
                       size_t owner_len, char *state, size_t state_len,
                       uint64_t *build_id, uint64_t *job_id);

/* The author's email and the state ("pending", "running", "finished",
 * "cancelled") of try job id, copied into the caller's buffers, or
 * TF_ENOENT. */
int tf_q_job_owner(tf_db_t *db, uint64_t id, char *email, size_t email_len,
                   char *state, size_t state_len);

/* Several masters: each slave the database says is connected (to any
 * master: the column the slaves view reads), how many open builds it has
 * and whether it drains, for the farm-wide counts of the summary and the
 * builders (api/api.c, tf_api_slave_state). *out: {name: [builds,
 * draining], ...} for the connected slaves only. */
int tf_q_farm_slaves(tf_db_t *db, json_t **out);

/* Several masters: every open build of the farm (whichever master runs
 * it), read with tf_q_farm_slaves for the farm-wide running builds of the
 * builders, the summary and the slaves (api/api.c,
 * tf_api_farm_build_elsewhere). *out (new): {key: [[id, builder, number,
 * slave, started_ms (created_ms until it starts), "ci"|"try"], ...]} by
 * id, key the builder, or the slave when by_slave (one lookup per
 * builder or slave of an answer, not a walk of every open build). */
int tf_q_farm_builds(tf_db_t *db, bool by_slave, json_t **out);

/* Several masters: every running request of the farm (whichever master
 * runs it), of builder only unless NULL, by id, for the farm-wide queue
 * of GET /api/v1/requests (api/api.c). *out (new): [[id, builder,
 * reason or null, owner or null, priority, submitted_ms, retries,
 * build_id (0: none), job_id (0: none), is_try], ...]. */
int tf_q_farm_running(tf_db_t *db, const char *builder, json_t **out);

/* Several masters (PostgreSQL only): the name of the master holding the
 * duty lease (mail, pollers, periodic schedulers), as in tf_masters and
 * its sessions' application_name ("tf-master HOST TAG pid N"), copied
 * into name (at most len bytes); "" when no master holds it now. */
int tf_q_duty_holder(tf_db_t *db, char *name, size_t len);

/* Runs a store query (store.h, tf_query_t) on db, within the caller's
 * read (one snapshot with the caller's other reads): a reader thread's
 * way to combine it with queries of this file. */
int tf_q_run(tf_db_t *db, tf_query_t *q);

/* Several masters: how many requests of each builder wait in the farm's
 * queue (stored pending, whichever master queued them; a master's own
 * copy of one another master claimed is not counted). *out (new):
 * {builder: count, ...}, builders with none left out. */
int tf_q_farm_pending(tf_db_t *db, json_t **out);

/* The row id and size of the patch with this SHA-256 (64 lower-case
 * hex), or TF_ENOENT. */
int tf_q_patch_find(tf_db_t *db, const char *sha256, int64_t *rowid,
                    uint64_t *size);

/* Copies n bytes of patch rowid from offset pos into dst (an incremental
 * blob read: the patch is never loaded whole). */
int tf_q_patch_read(tf_db_t *db, int64_t rowid, uint64_t pos,
                    unsigned char *dst, size_t n);

/* What a build was asked to build, for a rebuild: its builder and number,
 * the revision it asked for (or, when it built the branch head, the one
 * it got), the properties, tests and patch of its request, the owner of
 * that request, and its blamelist. Strings and the array are malloc'd
 * (NULL when empty); free with tf_q_build_source_clear. */
typedef struct tf_q_build_source {
    char builder[TF_NAME_MAX + 1];
    char owner[256];
    uint64_t number;
    char *revision;
    char *properties;
    char *tests;
    char *patch_sha256;
    uint64_t patch_size;
    uint64_t *changes;
    size_t nchanges;
} tf_q_build_source_t;

/* Result reuse (docs/api.md, POST /api/v1/jobs "reuse"): the newest build
 * that ended SUCCESS for a request of builder with the same revision (a
 * commit id), patch (patch_sha256, "" for none), tests and properties
 * (JSON text as requests store them), not itself a reuse, that ran the
 * builder's current recipe (config.h, tf_cfg_builder_t.recipe: its
 * steps, properties, repository and branch). *build_id is 0 when there
 * is none, and always when recipe is NULL or "". */
int tf_q_reusable_build(tf_db_t *db, const char *builder,
                        const char *revision, const char *patch_sha256,
                        const char *tests, const char *properties,
                        const char *recipe, uint64_t *build_id);

/* Fills *out for build build_id, or returns TF_ENOENT (then *out is
 * empty). */
int tf_q_build_source(tf_db_t *db, uint64_t build_id,
                      tf_q_build_source_t *out);
void tf_q_build_source_clear(tf_q_build_source_t *s);

#endif
