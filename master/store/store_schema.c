/*
 * store_schema.c - the master's database schema as a list of forward
 * migrations.
 *
 * Migration N takes a database at version N-1 to version N. They only ever
 * get appended: a released migration is never edited, because databases in
 * the field have already run it. The version lives in PRAGMA user_version
 * and each migration runs in its own transaction together with the bump, so
 * a crash mid-migration leaves the previous version intact.
 *
 * Summary rows (builders.last_*, builders.pending/running, slaves.*) are kept
 * up to date by the writes that change them, so the cheap questions the
 * status pages ask ("what is the state of every builder?") never scan builds.
 */
#include "store/store_schema.h"

#include <stddef.h>

static const char *const migrations[] = {
    /* 1: the walking skeleton. */
    "CREATE TABLE slaves("
    "  name TEXT PRIMARY KEY,"
    "  connected INTEGER NOT NULL DEFAULT 0,"
    "  platform TEXT, version TEXT, tags TEXT NOT NULL DEFAULT '[]',"
    "  first_seen_ms INTEGER, last_seen_ms INTEGER,"
    "  connected_ms INTEGER, disconnected_ms INTEGER,"
    "  builds_done INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT);"
    "CREATE TABLE slave_events("
    "  id INTEGER PRIMARY KEY,"
    "  slave TEXT NOT NULL, time_ms INTEGER NOT NULL,"
    "  event TEXT NOT NULL, detail TEXT);"
    "CREATE INDEX slave_events_by_slave ON slave_events(slave, id);"
    "CREATE TABLE builders("
    "  name TEXT PRIMARY KEY,"
    "  active INTEGER NOT NULL DEFAULT 1,"
    "  config TEXT,"
    "  builds_total INTEGER NOT NULL DEFAULT 0,"
    "  pending INTEGER NOT NULL DEFAULT 0,"
    "  running INTEGER NOT NULL DEFAULT 0,"
    "  last_build_id INTEGER,"
    "  last_complete_build_id INTEGER,"
    "  last_complete_result INTEGER,"
    "  last_complete_ms INTEGER);"
    "CREATE TABLE build_requests("
    "  id INTEGER PRIMARY KEY,"
    "  builder TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  reason TEXT, owner TEXT,"
    "  priority INTEGER NOT NULL DEFAULT 0,"
    "  submitted_ms INTEGER NOT NULL,"
    "  started_ms INTEGER, finished_ms INTEGER,"
    "  result INTEGER, build_id INTEGER,"
    "  retries INTEGER NOT NULL DEFAULT 0,"
    "  properties TEXT NOT NULL DEFAULT '{}');"
    "CREATE INDEX build_requests_open ON build_requests(state, builder)"
    "  WHERE state IN ('pending','running');"
    "CREATE INDEX build_requests_by_builder ON build_requests(builder, id);"
    "CREATE TABLE builds("
    "  id INTEGER PRIMARY KEY,"
    "  builder TEXT NOT NULL, number INTEGER NOT NULL,"
    "  request_id INTEGER NOT NULL,"
    "  slave TEXT,"
    "  state TEXT NOT NULL,"
    "  result INTEGER, text TEXT, reason TEXT,"
    "  created_ms INTEGER NOT NULL, started_ms INTEGER, finished_ms INTEGER,"
    "  last_seq INTEGER NOT NULL DEFAULT 0,"
    "  nsteps INTEGER NOT NULL DEFAULT 0,"
    "  properties TEXT NOT NULL DEFAULT '{}',"
    "  UNIQUE(builder, number));"
    "CREATE INDEX builds_by_builder ON builds(builder, number);"
    "CREATE INDEX builds_by_slave ON builds(slave, id);"
    "CREATE INDEX builds_open ON builds(state) WHERE state != 'finished';"
    "CREATE TABLE steps("
    "  build_id INTEGER NOT NULL, idx INTEGER NOT NULL,"
    "  name TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  result INTEGER,"
    "  started_ms INTEGER, finished_ms INTEGER, duration_ms INTEGER,"
    "  exit_code INTEGER, signal INTEGER, timed_out INTEGER NOT NULL DEFAULT 0,"
    "  text TEXT,"
    "  command TEXT NOT NULL DEFAULT '[]',"
    "  flags INTEGER NOT NULL DEFAULT 0,"
    "  log_bytes INTEGER NOT NULL DEFAULT 0,"
    "  log_lines INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY(build_id, idx)) WITHOUT ROWID;"
    "CREATE TABLE log_chunks("
    "  build_id INTEGER NOT NULL, step INTEGER NOT NULL,"
    "  offset INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL, stream INTEGER NOT NULL,"
    "  line INTEGER NOT NULL,"
    "  data BLOB NOT NULL,"
    "  PRIMARY KEY(build_id, step, offset));",

    /* 2: committers, patches and try jobs. */
    "CREATE TABLE users("
    "  id INTEGER PRIMARY KEY,"
    "  email TEXT NOT NULL UNIQUE,"
    "  name TEXT NOT NULL,"
    "  token_sha256 TEXT NOT NULL UNIQUE,"
    "  created_ms INTEGER NOT NULL,"
    "  last_used_ms INTEGER);"
    "CREATE TABLE patches("
    "  id INTEGER PRIMARY KEY,"
    "  sha256 TEXT NOT NULL UNIQUE,"
    "  size INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  data BLOB NOT NULL);"
    "CREATE TABLE try_jobs("
    "  id INTEGER PRIMARY KEY,"
    "  user_id INTEGER NOT NULL,"
    "  author TEXT NOT NULL, email TEXT NOT NULL,"
    "  notify INTEGER NOT NULL DEFAULT 1, notify_email TEXT,"
    "  description TEXT, review_url TEXT, patchset TEXT,"
    "  base_revision TEXT,"
    "  patch_sha256 TEXT, patch_size INTEGER NOT NULL DEFAULT 0,"
    "  state TEXT NOT NULL,"
    "  result INTEGER,"
    "  submitted_ms INTEGER NOT NULL, finished_ms INTEGER);"
    "CREATE INDEX try_jobs_by_email ON try_jobs(email, id);"
    "CREATE INDEX try_jobs_open ON try_jobs(state)"
    "  WHERE state IN ('pending', 'running');"
    "ALTER TABLE build_requests ADD COLUMN job_id INTEGER;"
    "ALTER TABLE build_requests ADD COLUMN tests TEXT NOT NULL DEFAULT '[]';"
    "ALTER TABLE build_requests ADD COLUMN revision TEXT;"
    "ALTER TABLE build_requests ADD COLUMN patch_sha256 TEXT;"
    "ALTER TABLE build_requests ADD COLUMN patch_size INTEGER;"
    "CREATE INDEX build_requests_by_job ON build_requests(job_id)"
    "  WHERE job_id IS NOT NULL;"
    "ALTER TABLE builds ADD COLUMN repository TEXT;"
    "ALTER TABLE builds ADD COLUMN branch TEXT;"
    "ALTER TABLE builds ADD COLUMN revision TEXT;"
    "ALTER TABLE builds ADD COLUMN got_revision TEXT;",

    /* 3: the mail outbox. A row is the intention to mail, committed with
     * the event that causes it; the mail worker renders it (rendered is
     * kept so a retry sends the same message), sends it and records the
     * outcome. */
    "CREATE TABLE mail_outbox("
    "  id INTEGER PRIMARY KEY,"
    "  kind TEXT NOT NULL,"
    "  ref_id INTEGER NOT NULL,"
    "  recipients TEXT NOT NULL DEFAULT '[]',"
    "  subject TEXT,"
    "  message_id TEXT,"
    "  message BLOB,"
    "  state TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL,"
    "  next_attempt_ms INTEGER NOT NULL,"
    "  sent_ms INTEGER,"
    "  last_error TEXT);"
    "CREATE INDEX mail_outbox_due ON mail_outbox(next_attempt_ms)"
    "  WHERE state = 'pending';"
    "CREATE INDEX mail_outbox_by_ref ON mail_outbox(kind, ref_id);",

    /* 4: continuous builds and build data: changes from pollers, the
     * changes each request and build stands for (the blamelist), poller
     * and scheduler state, and what command modifiers extract. */
    "CREATE TABLE changes("
    "  id INTEGER PRIMARY KEY,"
    "  repository TEXT NOT NULL, branch TEXT NOT NULL,"
    "  revision TEXT NOT NULL,"
    "  author TEXT, email TEXT, committer_ms INTEGER,"
    "  message TEXT, files TEXT NOT NULL DEFAULT '[]',"
    "  created_ms INTEGER NOT NULL,"
    "  UNIQUE(repository, branch, revision));"
    "CREATE TABLE request_changes("
    "  request_id INTEGER NOT NULL, change_id INTEGER NOT NULL,"
    "  PRIMARY KEY(request_id, change_id)) WITHOUT ROWID;"
    "CREATE TABLE build_changes("
    "  build_id INTEGER NOT NULL, change_id INTEGER NOT NULL,"
    "  PRIMARY KEY(build_id, change_id)) WITHOUT ROWID;"
    "CREATE INDEX build_changes_by_change ON build_changes(change_id);"
    "CREATE TABLE pollers("
    "  repository TEXT NOT NULL, branch TEXT NOT NULL,"
    "  last_revision TEXT, last_poll_ms INTEGER, last_ok_ms INTEGER,"
    "  last_error TEXT, failing_since_ms INTEGER,"
    "  PRIMARY KEY(repository, branch)) WITHOUT ROWID;"
    "CREATE TABLE scheduler_state("
    "  name TEXT PRIMARY KEY,"
    "  last_fired_ms INTEGER, last_revision TEXT, next_fire_ms INTEGER);"
    "CREATE TABLE stats("
    "  builder TEXT NOT NULL, build_id INTEGER NOT NULL,"
    "  step INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,"
    "  PRIMARY KEY(build_id, step, name)) WITHOUT ROWID;"
    "CREATE INDEX stats_by_builder ON stats(builder, name, build_id);"
    "ALTER TABLE steps ADD COLUMN info TEXT;"
    "ALTER TABLE steps ADD COLUMN warnings INTEGER;"
    "ALTER TABLE build_requests ADD COLUMN collapsed_into INTEGER;"
    "ALTER TABLE build_requests ADD COLUMN scheduler TEXT;"
    "CREATE INDEX builds_by_created ON builds(created_ms);",

    /* 5: the waterfall of chosen builders and the console page by time
     * through indexes (the rowid, i.e. the id, ends each index). */
    "CREATE INDEX builds_by_builder_created ON builds(builder, created_ms);"
    "CREATE INDEX changes_by_created ON changes(created_ms);"
    "CREATE INDEX try_jobs_by_submitted ON try_jobs(submitted_ms);",

    /* 6: try builds apart from the tree. A build's kind is "try" when its
     * request carries a patch or belongs to a try job (a rebuild of a try
     * build too), else "ci"; a builder's last complete build counts
     * continuous builds only, so it is recomputed without the try ones. */
    "ALTER TABLE builds ADD COLUMN kind TEXT NOT NULL DEFAULT 'ci';"
    "UPDATE builds SET kind = 'try' WHERE request_id IN ("
    "  SELECT id FROM build_requests"
    "  WHERE job_id IS NOT NULL OR patch_sha256 IS NOT NULL);"
    "CREATE INDEX builds_by_builder_kind ON builds(builder, kind, number);"
    "UPDATE builders SET"
    "  last_complete_build_id = (SELECT id FROM builds x"
    "    WHERE x.builder = builders.name AND x.kind = 'ci'"
    "    AND x.state = 'finished' AND x.result IS NOT NULL AND x.result != 5"
    "    ORDER BY x.finished_ms DESC, x.id DESC LIMIT 1);"
    "UPDATE builders SET"
    "  last_complete_result = (SELECT result FROM builds"
    "    WHERE id = builders.last_complete_build_id),"
    "  last_complete_ms = (SELECT finished_ms FROM builds"
    "    WHERE id = builders.last_complete_build_id);",

    /* 7: test results as data (issue 12): one row per test per step of a
     * build, written with the test_results event that carries it. status
     * is the row's status after the build's retries: a failure that a
     * later attempt in the same build passed is 'flaky' (ops.h,
     * test_result). The key leads with (build, suite, name), so the
     * flaky rule's lookup of a test's other rows in its build is a seek;
     * the history index serves "this test over the last N builds of this
     * builder" without touching other tests' rows. A try
     * job remembers whether its verdict counts new failures only; a try
     * request answered from an earlier identical build is done at once,
     * its build_id that build's, and marked reused. A builder's
     * retry_without_patch request names the try build it reruns. */
    "CREATE TABLE test_results("
    "  build_id INTEGER NOT NULL, step INTEGER NOT NULL,"
    "  suite TEXT NOT NULL, name TEXT NOT NULL,"
    "  builder TEXT NOT NULL,"
    "  status TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 1,"
    "  duration_ms INTEGER, outcome TEXT, message TEXT,"
    "  log_offset INTEGER, log_line INTEGER, log_lines INTEGER,"
    "  PRIMARY KEY(build_id, suite, name, step)) WITHOUT ROWID;"
    "CREATE INDEX test_results_history"
    "  ON test_results(builder, suite, name, build_id);"
    "ALTER TABLE try_jobs ADD COLUMN new_failures_only INTEGER NOT NULL"
    "  DEFAULT 0;"
    "ALTER TABLE build_requests ADD COLUMN reused INTEGER NOT NULL"
    "  DEFAULT 0;"
    "ALTER TABLE build_requests ADD COLUMN without_patch_of INTEGER;"
    "CREATE INDEX build_requests_without_patch"
    "  ON build_requests(without_patch_of) WHERE without_patch_of IS NOT NULL;"
    "CREATE INDEX build_requests_by_revision"
    "  ON build_requests(builder, revision) WHERE revision IS NOT NULL;",
    /* 8: compressed logs (store/logblock.h). A step's log is its sealed
     * blocks, which cover bytes [0, log_sealed), then its open tail of
     * chunks in log_chunks. Logs of older versions are all tail (their
     * log_sealed is 0), read as they are, and get sealed by the writer
     * when idle: steps_unsealed finds the finished steps left. */
    "CREATE TABLE log_blocks("
    "  build_id INTEGER NOT NULL, step INTEGER NOT NULL,"
    "  offset INTEGER NOT NULL,"
    "  line INTEGER NOT NULL,"
    "  raw_len INTEGER NOT NULL,"
    "  codec INTEGER NOT NULL,"
    "  data BLOB NOT NULL,"
    "  PRIMARY KEY(build_id, step, offset));"
    "ALTER TABLE steps ADD COLUMN log_sealed INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX steps_unsealed ON steps(build_id, idx) "
    "WHERE log_sealed < log_bytes;"
    /* Retention: a build whose logs were removed keeps its rows and says
     * when; builds_logs_kept walks a builder's builds that still have
     * theirs, oldest first. */
    "ALTER TABLE builds ADD COLUMN logs_removed_ms INTEGER;"
    "CREATE INDEX builds_logs_kept ON builds(builder, number) "
    "WHERE logs_removed_ms IS NULL;",
    /* 9: a request's builds by an index (result reuse and the rerun
     * without the patch join them on request_id); a build's recipe, the
     * SHA-256 of its builder's build_start as the config made it (steps,
     * properties, repository, branch: config.h, tf_cfg_builder_t.recipe),
     * so result reuse only answers from a build that ran what the builder
     * runs now (builds of older versions have none and are not reused);
     * changes by revision (the reference build's floor); the farm's
     * identity, made once, which slaves echo when they resume a build so
     * a master never takes another farm's build for its own. */
    "CREATE INDEX builds_by_request ON builds(request_id);"
    "ALTER TABLE builds ADD COLUMN recipe TEXT;"
    "CREATE INDEX changes_by_revision ON changes(revision);"
    "CREATE TABLE farm(id TEXT NOT NULL);"
    "INSERT INTO farm(id) VALUES(lower(hex(randomblob(16))));",
    /* 10: a build's owner, the master that runs it. One master uses a
     * sqlite database, so it stays '' here; PostgreSQL's shared masters
     * (pg_schema.c, migration 10) write and guard it. Kept in both so a
     * database migrated to PostgreSQL has the column. */
    "ALTER TABLE builds ADD COLUMN owner TEXT NOT NULL DEFAULT '';",
    /* 11: a cancel stored for a build or a try job (its reason; NULL for
     * none). Shared masters (pg_schema.c, migration 11) answer a cancel
     * of what another master runs once the mark is committed, and the
     * master running it (or the one that takes it over) finds the mark
     * by itself within a second, whether the event that wakes it arrives
     * or not. One master on sqlite cancels in memory and stores no mark;
     * kept in both so a database migrated to PostgreSQL has the columns.
     * The index holds the open builds with a mark only. */
    "ALTER TABLE builds ADD COLUMN cancel_requested TEXT;"
    "ALTER TABLE try_jobs ADD COLUMN cancel_requested TEXT;"
    "CREATE INDEX builds_cancel_open ON builds(id) "
    "WHERE cancel_requested IS NOT NULL AND state <> 'finished';"
    /* And whether a connected slave drains (no new builds): shared
     * masters count every master's slaves by state (api/pages.c). */
    "ALTER TABLE slaves ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;",
    /* 12: builds_by_builder goes: it indexed (builder, number), which the
     * table's UNIQUE(builder, number) already indexes, so every build
     * started paid for one B-tree insert more than its reads need (the
     * queries that walked it walk the unique index the same way). */
    "DROP INDEX IF EXISTS builds_by_builder;",
    /* 13: builds_logs_kept and builds_by_builder_kind hold finished
     * builds only. Retention only ever removes a finished build's logs,
     * and the red streak and the reference build for new failures only
     * look at finished builds (every query of them says state =
     * 'finished'), so a build enters both when it finishes, not when it
     * starts: a burst's start rows, which every build_start waits for,
     * update two B-trees fewer. */
    "DROP INDEX IF EXISTS builds_logs_kept;"
    "CREATE INDEX builds_logs_kept ON builds(builder, number) "
    "WHERE logs_removed_ms IS NULL AND state = 'finished';"
    "DROP INDEX IF EXISTS builds_by_builder_kind;"
    "CREATE INDEX builds_by_builder_kind ON builds(builder, kind, number) "
    "WHERE state = 'finished';",
};

size_t tf_schema_count(void)
{
    return sizeof(migrations) / sizeof(migrations[0]);
}

const char *tf_schema_migration(size_t version)
{
    if (version < 1 || version > tf_schema_count())
        return NULL;
    return migrations[version - 1];
}
