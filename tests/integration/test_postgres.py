"""The PostgreSQL engine (issue 15) with a real PostgreSQL: a master on
it runs builds and try jobs from real slaves and serves logs byte-exact;
state survives a restart; bad URLs are refused with a clear error.
The server comes from the pg_cluster fixture (tfpytest.py)."""

import os
import time

import pytest

from tfharness import BUILD_DIR, deterministic_bytes, sha256, wait_for

from test_try import add_user, job_id_of, make_repos, tf_try, try_config

TF_MASTER = BUILD_DIR / "master" / "tf-master"

# Bytes a step prints: every byte value, no trailing newline, CR LF and
# a lone CR; the log must come back exactly.
BINARY_STEP = ("printf 'a\\000b\\377\\r\\nlone\\rcr'; "
               "head -c 70000 /dev/urandom > blob; cat blob; "
               "sha256sum blob >&2")


def config(**top):
    cfg = {"name": "pg", "heartbeat_s": 1, "lost_after_s": 4,
           "slaves": [{"name": "s1"}],
           "builders": [
               {"name": "bytes", "steps": [
                   {"name": "out", "command": BINARY_STEP}]},
               {"name": "quick", "steps": [
                   {"name": "hi", "command": "echo hi $TF_BUILDER"}]}]}
    cfg.update(top)
    return cfg


def test_master_on_postgresql_serves_builds_byte_exact(farm, pg_url,
                                                       pg_cluster):
    m = farm.master(config(), store=pg_url)
    assert "open (postgresql)" in m.log_text()
    farm.slave(m, "s1")
    b = m.run_build("bytes")
    assert b["result"] == "SUCCESS", b
    log = m.step_log(b["id"], 0)
    assert log.startswith(b"a\x00b\xff\r\nlone\rcr"), log[:40]
    blob = log[len(b"a\x00b\xff\r\nlone\rcr"):]
    # stdout and stderr interleave in one log; the blob is 70000 bytes
    # followed by the sha256sum line.
    assert len(blob) >= 70000
    assert sha256(blob[:70000]) in blob[70000:].decode(), blob[70000:]
    # The rows are in PostgreSQL, not in a file.
    assert not m.db_path.exists()
    n = pg_cluster.psql("SELECT count(*) FROM builds WHERE result = 0",
                        db=pg_cluster.dbname(pg_url))
    assert n.strip() == "1", n
    # After a restart the same master serves the same bytes.
    m.stop()
    m.start()
    assert m.step_log(b["id"], 0) == log
    b2 = m.run_build("quick")
    assert b2["number"] == 1 and b2["result"] == "SUCCESS", b2
    assert m.step_log(b2["id"], 0) == b"hi quick\n"
    builders = {x["name"]: x for x in m.get_json("/builders")}
    assert builders["bytes"]["builds_total"] == 1, builders["bytes"]
    assert builders["bytes"]["last_complete"]["result"] == "SUCCESS"


@pytest.mark.timeout(180)
def test_try_job_on_postgresql(farm, pg_url):
    up, work = make_repos(farm.tmp)
    m = farm.master(try_config(up, slaves=("s1",)), store=pg_url)
    farm.slave(m, "s1")
    token = add_user(farm, m, "ann@example.org", "Ann Example")
    (work / "verdict").write_text("pass\n")
    (work / "new.bin").write_bytes(deterministic_bytes(3000, seed=7))
    r = tf_try(farm, m, work, "--builder", "b1", "--wait", token=token)
    assert r.returncode == 0, r.stdout + r.stderr
    jid = job_id_of(r)
    job = m.get_json(f"/jobs/{jid}")
    assert job["state"] == "finished" and job["result"] == "SUCCESS", job
    bid = job["builders"][0]["build"]["id"]
    steps = m.build(bid)["steps"]
    assert [x["result"] for x in steps] == ["SUCCESS"] * len(steps), steps
    log = m.step_log(bid, len(steps) - 1)
    assert b"verdict: pass\n" in log and b"noise line 40\n" in log, log
    r = farm.run([TF_MASTER, "user", "list", "-d", m.dir])
    assert r.returncode == 0 and "ann@example.org" in r.stdout, r


def test_the_password_of_the_url_never_reaches_the_log(farm, pg_cluster):
    """A URL with a password (the server trusts the role, so any password
    connects): the master's log and the offline commands' errors show
    "***" in its place."""
    db = pg_cluster.new_database()
    url = pg_cluster.url(db).replace("tf@", "tf:s3cr3t-pw@")
    m = farm.master(config(), store=url)
    farm.slave(m, "s1")
    assert m.run_build("quick")["result"] == "SUCCESS"
    text = m.log_text()
    assert "tf:***@" in text, text
    m.stop()
    assert "s3cr3t-pw" not in m.log_text()
    bad = url.replace(db, "no_such_db")
    m.write_config(dict(config(), store={"postgres": bad}))
    r = farm.run([TF_MASTER, "user", "list", "-d", m.dir])
    assert r.returncode != 0
    assert "no_such_db" in r.stderr and "s3cr3t-pw" not in r.stderr, r.stderr


def test_check_on_postgresql_points_to_its_tools(farm, pg_url):
    m = farm.master(config(), store=pg_url)
    r = farm.run([TF_MASTER, "check", m.dir])
    assert r.returncode == 1 and "pg_amcheck" in r.stderr, r


def test_logs_are_sealed_and_vacuum_is_refused_on_postgresql(farm, pg_url,
                                                            pg_cluster):
    m = farm.master(config(), store=pg_url)
    farm.slave(m, "s1")
    b = m.run_build("bytes")
    assert b["result"] == "SUCCESS", b
    log = m.step_log(b["id"], 0)
    db = pg_cluster.dbname(pg_url)
    # The ended step's log is sealed into a block (store/logblock.c), no
    # chunk left, and it reads back the same.
    rows = pg_cluster.psql("SELECT count(*), sum(raw_len) FROM log_blocks; "
                           "SELECT count(*) FROM log_chunks", db=db).split()
    assert rows == ["1|" + str(len(log)), "0"], rows
    m.stop()
    r = farm.run([TF_MASTER, "vacuum", m.dir])
    assert r.returncode == 2, r
    assert "not on PostgreSQL" in r.stderr and "VACUUM FULL" in r.stderr, r
    # Nothing was touched.
    m.start()
    assert m.step_log(b["id"], 0) == log


@pytest.mark.timeout(180)
def test_logs_are_stored_compressed_in_postgresql_for_every_master(
        farm, pg_url, pg_cluster):
    """Issue 15, point 1: logs are stored compressed in PostgreSQL as in
    sqlite. Two shared masters; a's slave prints a 4 MiB compiler-like
    log (tests/bench/compilerlog.py, what the sqlite figures are measured
    on). Once the step ended its log is sealed zstd blocks in log_blocks
    (no chunk left) taking at most 8% of the raw bytes, and it reads back
    byte-exact, whole and by range, from both masters."""
    import sys
    from tfharness import REPO
    sys.path.insert(0, str(REPO / "tests" / "bench"))
    import compilerlog
    path = farm.tmp / "compiler.log"
    compilerlog.generate(path, 4 * 1024 * 1024, 13)
    data = path.read_bytes()
    cfg = config()
    cfg["builders"].append({"name": "cc", "steps": [
        {"name": "compile", "command": f"cat {path}"}]})
    secret = farm.tmp / "s1-secret"
    secret.write_text("the-secret-of-s1\n")
    secret.chmod(0o600)
    cfg["slaves"] = [{"name": "s1", "secret_file": str(secret)}]
    cfg["store"] = {"postgres": pg_url, "shared": True}
    a = farm.master(cfg, name="a")
    b = farm.master(cfg, name="b")
    farm.slave(a, "s1", secret_file=secret)
    done = b.wait_request_done(b.force("cc"), 120)
    assert done["result"] == "SUCCESS", done
    db = pg_cluster.dbname(pg_url)

    def sealed():
        out = pg_cluster.psql(
            "SELECT (SELECT count(*) FROM log_chunks WHERE build_id = "
            f"{done['id']}), count(*), sum(raw_len), sum(length(data)) "
            f"FROM log_blocks WHERE build_id = {done['id']}", db=db).strip()
        chunks, blocks, raw, stored = (int(x or 0) for x in out.split("|"))
        return chunks == 0 and raw == len(data) and (blocks, stored)
    blocks, stored = wait_for(sealed, 30, "the log to be sealed", farm)
    assert blocks >= 4, blocks
    assert stored <= 0.08 * len(data), f"stored {stored} of {len(data)}"
    n = len(data)
    for m in (a, b):
        assert sha256(m.step_log(done["id"], 0)) == sha256(data), m.name
        lo, hi = n // 2 - 70000, n // 2 + 1100000  # across block ends
        r = m.api_get(f"/builds/{done['id']}/steps/0/log",
                      headers={"Range": f"bytes={lo}-{hi - 1}"})
        assert r.status == 206 and r.body == data[lo:hi], (m.name, r)


def test_unknown_database_url_is_refused(farm):
    m = farm.master(config(store={"postgres": "mysql://db/farm"}),
                    start=False)
    r = farm.run([TF_MASTER, "checkconfig", m.dir])
    assert r.returncode != 0
    assert "store.postgres" in r.stderr + r.stdout
    assert "postgresql://" in r.stderr + r.stdout


def test_unreachable_database_at_start_says_so(farm, pg_cluster):
    url = pg_cluster.url("no_such_database")
    m = farm.master(config(), store=url, start=False)
    m.start(wait=False)
    rc = m.proc.wait_exit(30)
    assert rc != 0
    text = m.log_text()
    assert "cannot connect to" in text and "no_such_database" in text, text


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_database_stopped_mid_build_pauses_and_loses_nothing(farm, mode):
    """PostgreSQL stops while a step streams 60 MiB (fast: a clean
    shutdown; immediate: the server crashes and recovers from its WAL at
    the next start): the master keeps the slave connected, retries, fills
    its write queue up to the cap, then stops reading from the slave
    (backpressure); the API and the log say what is wrong. When PostgreSQL
    is back everything commits and the log is byte-exact. Its own server
    (with fsync: a durability test)."""
    from tfharness import PgCluster, steps_summary
    pg = PgCluster(fsync=True)
    try:
        pg.initdb().start()
        url = pg.url(pg.new_database())
        size = 60 * 1024 * 1024
        data = deterministic_bytes(size, seed=11)
        big = farm.tmp / "big.bin"
        big.write_bytes(data)
        flag = farm.tmp / "go"
        m = farm.master({
            "name": "outage", "heartbeat_s": 2, "lost_after_s": 6,
            "slaves": [{"name": "s1"}],
            "builders": [{"name": "big", "steps": [
                {"name": "cat", "command":
                    f"printf started; while [ ! -e {flag} ]; do sleep 0.1; "
                    f"done; cat {big}"}]}]},
            store=url, log_level="info")
        farm.slave(m, "s1", log_level="info")
        req = m.force("big")
        bid = m.wait_build_started(req)
        m.wait_step_running(bid, 0, min_bytes=len("started"))
        pg.stop(mode)
        flag.write_text("go\n")

        def failing():
            st = m.get_json("/master")["store"]
            return st if "PostgreSQL" in st["last_error"] and \
                st["failing_for_ms"] > 0 else None
        st = wait_for(failing, 60, "the store to report the database down",
                      farm)
        st = wait_for(lambda: (lambda s: s if s["congested"] else None)(
            m.get_json("/master")["store"]), 120,
            "the write queue to be congested", farm)
        assert st["queued_bytes"] <= 256 * 1024 * 1024, st
        # Reading paused: the queue stays near its soft limit (32 MiB)
        # while the slave keeps the rest of the 60 MiB in its spool;
        # without the pause the master would queue all of it.
        peak = 0
        for _ in range(15):
            peak = max(peak, m.get_json("/master")["store"]["queued_bytes"])
            time.sleep(0.2)
        assert 32 * 1024 * 1024 < peak < 44 * 1024 * 1024, peak
        assert "PostgreSQL" in m.log_text()
        assert "pausing reads from slaves" in m.log_text()
        # The slave stays connected (the link is live state, not a row).
        info = m.get_json("/master")
        assert info["slaves_connected"] == 1 and \
            info["builds_running"] == 1, info
        assert m.running()

        pg.start()
        b = m.wait_request_done(req, timeout=240)
        assert b["result"] == "SUCCESS", steps_summary(b)
        st = m.get_json("/master")["store"]
        assert st["last_error"] == "" and st["failing_for_ms"] == 0, st
        log = m.step_log(b["id"], 0)
        assert len(log) == size + len("started")
        assert sha256(log) == sha256(b"started" + data), "the log differs"
        m.stop()
    finally:
        pg.destroy()


@pytest.mark.timeout(240)
def test_migrate_copies_an_sqlite_farm_to_postgresql(farm, pg_url,
                                                     pg_cluster):
    """A farm with builds (binary logs), a try job and committers on
    sqlite; `tf-master migrate --to URL` copies it; the same master on
    PostgreSQL then serves the same builds, logs byte-exact, jobs and
    users, and goes on numbering where sqlite stopped."""
    up, work = make_repos(farm.tmp)
    cfg = try_config(up, slaves=("s1",))
    cfg["builders"] += config()["builders"]
    m = farm.master(cfg)
    farm.slave(m, "s1")
    b1 = m.run_build("bytes")
    log1 = m.step_log(b1["id"], 0)
    token = add_user(farm, m, "ann@example.org", "Ann Example")
    add_user(farm, m, "bob@example.org", "Bob")
    (work / "verdict").write_text("pass\n")
    r = tf_try(farm, m, work, "--builder", "b1", "--wait", token=token)
    assert r.returncode == 0, r.stdout + r.stderr
    jid = job_id_of(r)
    job = m.get_json(f"/jobs/{jid}")
    builds_before = m.get_json("/builders/bytes/builds")
    farm_id = m.get_json("/master")["farm"]
    m.stop()

    # Bad input first: not a URL, and a database that is not empty.
    r = farm.run([TF_MASTER, "migrate", "--to", "/tmp/x.db", "-d", m.dir])
    assert r.returncode == 2 and "postgresql://" in r.stderr, r
    r = farm.run([TF_MASTER, "migrate", "-d", m.dir])
    assert r.returncode == 2 and "--to" in r.stderr, r

    r = farm.run([TF_MASTER, "migrate", "--to", pg_url, "-d", m.dir])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "copied" in r.stdout, r.stdout
    r2 = farm.run([TF_MASTER, "migrate", "--to", pg_url, "-d", m.dir])
    assert r2.returncode == 1 and "refusing" in r2.stderr, r2

    cfg["store"] = {"postgres": pg_url}
    m.write_config(cfg)
    m.start()
    assert "open (postgresql)" in m.log_text()
    # The same farm (its slaves' builds stay its own), not the empty
    # database's new id.
    assert m.get_json("/master")["farm"] == farm_id
    assert m.step_log(b1["id"], 0) == log1
    assert m.get_json("/builders/bytes/builds") == builds_before
    assert m.get_json(f"/jobs/{jid}") == job
    r = farm.run([TF_MASTER, "user", "list", "-d", m.dir])
    assert "ann@example.org" in r.stdout and "bob@example.org" in r.stdout
    # Ann's token still works: tf-try submits on PostgreSQL.
    r = tf_try(farm, m, work, "--builder", "b1", "--wait", token=token)
    assert r.returncode == 0, r.stdout + r.stderr
    assert job_id_of(r) == jid + 1
    b2 = m.run_build("bytes")
    assert b2["number"] == 2 and b2["id"] > b1["id"], b2


def test_a_second_master_on_the_same_database_is_refused(farm, pg_url):
    """One master per database in this version: a second one refuses to
    start and names the first (pg_stat_activity's application_name); a
    migration into a database a master uses is refused the same way."""
    m1 = farm.master(config(), store=pg_url)
    m2 = farm.master(config(), store=pg_url, name="second", start=False)
    m2.start(wait=False)
    assert m2.proc.wait_exit(30) != 0
    text = m2.log_text()
    assert "another master uses this database" in text, text
    assert f"pid {m1.proc.popen.pid}" in text, text
    # Offline commands work beside the running master.
    token = add_user(farm, m1, "ann@example.org", "Ann")
    assert token
    # Copying a sqlite farm into the database it uses is refused.
    sq = farm.master(config(), name="sq")
    sq.stop()
    r = farm.run([TF_MASTER, "migrate", "--to", pg_url, "-d", sq.dir])
    assert r.returncode == 1, r
    assert "another master uses this database" in r.stderr, r.stderr
    # The first one is unaffected.
    farm.slave(m1, "s1")
    assert m1.run_build("quick")["result"] == "SUCCESS"
    # Once the first stops, the second may start.
    m1.stop()
    m2.start()
    farm.slave(m2, "s1", basedir=farm.tmp / "slave-s1-second")
    assert m2.run_build("quick")["number"] == 2


@pytest.mark.timeout(180)
def test_a_standby_master_takes_over_and_the_running_build_finishes(farm,
                                                                     pg_url):
    """Two masters on one database, the second with store.standby: it
    waits, not listening, while the first serves. The slave knows both
    (--master A --master B). A is killed (-9) in the middle of a step: B
    takes the database over, the slave fails over to B, resumes the build
    from its spool, and the log is byte-exact (each line once)."""
    secret = farm.tmp / "s1-secret"
    secret.write_text("the-shared-secret-of-s1\n")
    secret.chmod(0o600)
    lines = 40
    cfg = config(slaves=[{"name": "s1", "secret_file": str(secret)}])
    cfg["builders"].append({"name": "long", "steps": [
        {"name": "count", "command":
            f"i=1; while [ $i -le {lines} ]; do echo line $i; sleep 0.1; "
            "i=$((i + 1)); done"}]})
    a = farm.master(cfg, store=pg_url, name="a")
    b = farm.master(dict(cfg, store={"postgres": pg_url, "standby": True}),
                    name="b", start=False)
    b.start(wait=False)
    wait_for(lambda: "standby:" in b.log_text(), 30,
             "b to wait as a standby", farm)
    assert "another master uses this database" in b.log_text()
    s = farm.slave(a, "s1", secret_file=secret,
                   args=["--master", b.ws_url])
    req = a.force("long")
    bid = a.wait_build_started(req)
    a.wait_step_running(bid, 0, min_bytes=len("line 1\nline 2\n"))
    a.kill9()
    b.wait_ready(timeout=30)
    assert "taking over" in b.log_text(), b.log_text()
    done = b.wait_build_finished(bid, 90)
    assert done["result"] == "SUCCESS", done
    want = "".join(f"line {i}\n" for i in range(1, lines + 1)).encode()
    assert b.step_log(bid, 0) == want
    # The farm goes on on b.
    assert b.run_build("quick")["result"] == "SUCCESS"
    assert s.running()


def test_migrate_quotes_odd_sqlite_column_names(farm, pg_url, pg_cluster):
    """Column names come from the sqlite file: one with a double quote in
    it (and SQL after it) stays one identifier, quote doubled, so
    PostgreSQL refuses it by its name (no such column) instead of reading
    the rest as SQL, and nothing is half copied."""
    import sqlite3
    m = farm.master(config(), name="sq")
    m.stop()
    con = sqlite3.connect(m.db_path)
    con.execute('ALTER TABLE users ADD COLUMN "x"") VALUES(1); --" TEXT')
    con.execute("INSERT INTO users(email, name, token_sha256, created_ms) "
                "VALUES('ann@example.org', 'Ann', 'h', 0)")
    con.commit()
    con.close()
    r = farm.run([TF_MASTER, "migrate", "--to", pg_url, "-d", m.dir])
    assert r.returncode == 1, r
    assert 'column "x") VALUES(1); --" of relation "users" does not exist' \
        in r.stderr, r.stderr
    assert "syntax error" not in r.stderr
    db = pg_cluster.dbname(pg_url)
    assert pg_cluster.psql("SELECT count(*) FROM users", db=db).strip() \
        == "0"


@pytest.mark.timeout(180)
def test_a_standby_reconnected_after_a_database_restart_takes_over(farm):
    """PostgreSQL restarts under a serving master a and a standby b (b's
    waiting connection dies with it); a dies while the server is down.
    When it is back, b reconnects, takes the database over on its new
    connection (the backend pid it logs is a live backend of b, not the
    one from before the restart), the slave fails over to it and builds
    run."""
    import re
    from tfharness import PgCluster
    pg = PgCluster()
    try:
        pg.initdb().start()
        url = pg.url(pg.new_database())
        secret = farm.tmp / "s1-secret"
        secret.write_text("the-shared-secret-of-s1\n")
        secret.chmod(0o600)
        cfg = config(slaves=[{"name": "s1", "secret_file": str(secret)}])
        a = farm.master(cfg, store=url, name="a")
        b = farm.master(dict(cfg, store={"postgres": url, "standby": True}),
                        name="b", start=False)
        b.start(wait=False)
        wait_for(lambda: "standby:" in b.log_text(), 30,
                 "b to wait as a standby", farm)
        before = pg.psql("SELECT pid FROM pg_stat_activity WHERE "
                         f"application_name LIKE '%pid {b.proc.popen.pid}'")
        assert before.split(), "b has no connection"
        farm.slave(a, "s1", secret_file=secret, args=["--master", b.ws_url])
        a.wait_slave_connected("s1")
        pg.stop("fast")
        a.kill9()
        pg.start()
        b.wait_ready(timeout=60)
        text = b.log_text()
        got = re.search(r"taking over \(write connection: backend pid "
                        r"(\d+)\)", text)
        assert got, text
        live = pg.psql("SELECT pid FROM pg_stat_activity WHERE "
                       f"application_name LIKE '%pid {b.proc.popen.pid}'")
        assert got.group(1) in live.split(), (got.group(1), live)
        assert got.group(1) not in before.split()
        b.wait_slave_connected("s1", timeout=60)
        assert b.run_build("quick")["result"] == "SUCCESS"
        b.stop()
    finally:
        pg.destroy()
