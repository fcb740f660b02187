"""Log retention (issue 13) with a real master and slave: old logs
disappear as each builder's policy says (newest N builds, N days on the
master's clock, N MiB), the API says a log was removed by retention (410,
not a failure) while the build, its steps and their sizes remain, the
other logs still read exactly; `tf-master vacuum` applies the policy
offline and gives the space back; bad config values are refused."""

import subprocess
import time

from tfharness import TF_MASTER, sha256, steps_summary, wait_for
import tfharness

from test_log_storage import compiler_log, db_rows, skip_on_postgresql


def config(builders, **top):
    cfg = {"name": "ret", "heartbeat_s": 2, "lost_after_s": 6,
           "slaves": [{"name": "s1"}], "builders": builders}
    cfg.update(top)
    return cfg


def cat_builder(name, path, **kw):
    b = {"name": name, "steps": [
        {"name": "out", "command": ["cat", str(path)]},
        {"name": "tail", "command": "echo done"}]}
    b.update(kw)
    return b


def removed(m, bid):
    return db_rows(m, "SELECT logs_removed_ms FROM builds WHERE id = ?",
                   bid)[0][0] is not None


def check_removed(m, b, size):
    r = m.api_get(f"/builds/{b['id']}/steps/0/log")
    assert r.status == 410, r
    assert "removed by the builder's retention" in r.error_message(), r
    assert int(r.headers["x-log-removed-ms"]) > 0, r.headers
    # The build and its steps remain, sizes included.
    j = m.get_json(f"/builds/{b['id']}")
    assert j["state"] == "finished" and j["result"] == "SUCCESS", j
    assert j["logs_removed_ms"] is not None
    assert j["steps"][0]["log"]["bytes"] == size, j["steps"][0]
    assert db_rows(m, "SELECT count(*) FROM log_blocks WHERE build_id = ?",
                   b["id"]) == [(0,)]
    assert db_rows(m, "SELECT count(*) FROM log_chunks WHERE build_id = ?",
                   b["id"]) == [(0,)]


def test_the_newest_builds_keep_their_logs(farm):
    path, data = compiler_log(farm, 2.5)
    m = farm.master(config([
        cat_builder("keep2", path, retention={"log_builds": 2}),
        cat_builder("all", path)], retention={"log_days": 0}))
    farm.slave(m, "s1")
    builds = [m.run_build("keep2", timeout=90) for _ in range(4)]
    kept = m.run_build("all", timeout=90)
    for b in builds + [kept]:
        assert b["result"] == "SUCCESS", steps_summary(b)
    wait_for(lambda: removed(m, builds[0]["id"]) and
             removed(m, builds[1]["id"]), 30,
             "the two oldest logs of keep2 to be removed", farm)
    for b in builds[:2]:
        check_removed(m, b, len(data))
    for b in builds[2:] + [kept]:
        assert not removed(m, b["id"])
        assert sha256(m.step_log(b["id"], 0)) == sha256(data)
        assert m.step_log(b["id"], 1) == b"done\n"
    # Another build: the oldest of the two kept goes, its rows stay.
    newest = m.run_build("keep2", timeout=90)
    wait_for(lambda: removed(m, builds[2]["id"]), 30,
             "the next oldest log to be removed", farm)
    check_removed(m, builds[2], len(data))
    assert sha256(m.step_log(newest["id"], 0)) == sha256(data)
    assert len(m.get_json("/builders/keep2/builds")["builds"]) == 5


def test_days_on_the_masters_clock_and_mib(farm):
    path, data = compiler_log(farm, 0.6, seed=3)
    m = farm.master(config([
        cat_builder("daily", path, retention={"log_days": 2}),
        cat_builder("small", path, retention={"log_mib": 1})],
        testing={"clock": True}))
    farm.slave(m, "s1")
    old = m.run_build("daily")
    small = [m.run_build("small") for _ in range(3)]
    # log_mib 1: the newest build's 0.6 MiB fits, the one before would
    # make 1.2: it and all older go.
    wait_for(lambda: removed(m, small[0]["id"]) and
             removed(m, small[1]["id"]), 30, "the small logs to go", farm)
    check_removed(m, small[0], len(data))
    assert sha256(m.step_log(small[2]["id"], 0)) == sha256(data)
    # Three days later on the master's clock, the daily log goes (the
    # reload makes the writer look again at once).
    assert not removed(m, old["id"])
    now = int(time.time() * 1000) + 3 * 86400 * 1000
    r = m.api_post("/master/clock", {"now_ms": now})
    assert r.status == 200, r
    m.sighup()
    wait_for(lambda: removed(m, old["id"]), 30, "the old daily log to go",
             farm)
    check_removed(m, old, len(data))


def test_vacuum_applies_the_policy_offline_and_shrinks_the_file(farm):
    path, data = compiler_log(farm, 2, seed=9)
    builders = [cat_builder("b", path)]
    m = farm.master(config(builders))
    skip_on_postgresql(m, "tf-master vacuum compacts the sqlite file "
                          "(on PostgreSQL it refuses: test_postgres.py)")
    farm.slave(m, "s1")
    builds = [m.run_build("b", timeout=90) for _ in range(5)]
    m.stop()
    # Keep only the newest build's log, applied offline.
    m.write_config(config([cat_builder("b", path,
                                       retention={"log_builds": 1})]))
    before = m.db_path.stat().st_size
    p = subprocess.run([TF_MASTER, "vacuum", str(m.dir)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "MiB ->" in p.stdout, p.stdout
    assert m.db_path.stat().st_size < before
    for b in builds[:4]:
        assert removed(m, b["id"])
    m.start()
    for b in builds[:4]:
        check_removed(m, b, len(data))
    assert sha256(m.step_log(builds[4]["id"], 0)) == sha256(data)


def test_bad_retention_values_and_vacuum_without_config(farm):
    m = farm.master(config([{"name": "b", "steps": [
        {"name": "s", "command": "true"}]}]), start=False)
    for bad, where in [({"retention": {"log_days": -1}}, "retention.log_days"),
                       ({"retention": {"log_mib": "lots"}},
                        "retention.log_mib"),
                       ({"retention": {"log_weeks": 2}}, "log_weeks")]:
        m.write_config(config([{"name": "b", "steps": [
            {"name": "s", "command": "true"}]}], **bad))
        p = subprocess.run([TF_MASTER, "checkconfig", str(m.config_path)],
                           capture_output=True, text=True)
        assert p.returncode == 1, (bad, p.stdout, p.stderr)
        assert where in p.stdout + p.stderr, (bad, p.stdout, p.stderr)
    m.write_config(config([{"name": "b", "retention": {"log_builds": -2},
                            "steps": [{"name": "s", "command": "true"}]}]))
    p = subprocess.run([TF_MASTER, "checkconfig", str(m.config_path)],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "builders[0].retention.log_builds" in \
        p.stdout + p.stderr, (p.stdout, p.stderr)
    empty = farm.tmp / "nothing-here"
    empty.mkdir()
    p = subprocess.run([TF_MASTER, "vacuum", str(empty)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "cannot load" in p.stderr, p.stderr
    assert tfharness  # the harness module is the one the farm uses


def test_vacuum_and_a_master_never_run_on_one_database_together(farm):
    """`tf-master vacuum` refuses while a master runs on the database (exit
    3, who holds it), changing nothing; a master refuses to start while
    vacuum runs (held here inside vacuum's own run: a transaction of this
    test keeps vacuum waiting on sqlite's busy timeout); once either is
    gone the other runs. A master killed with SIGKILL leaves no lock."""
    import sqlite3
    m = farm.master(config([{"name": "b", "steps": [
        {"name": "s", "command": "echo hi"}]}]))
    skip_on_postgresql(m, "the lock file is sqlite's (PostgreSQL: the "
                          "store's claim, test_postgres.py)")
    farm.slave(m, "s1")
    b = m.run_build("b")
    before = m.db_path.stat().st_mtime_ns
    p = subprocess.run([TF_MASTER, "vacuum", str(m.dir)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 3, (p.stdout, p.stderr)
    assert (f"tf-master vacuum: {m.db_path} is in use by tf-master run, "
            f"pid {m.proc.pid}: stop the master first") in p.stderr, p.stderr
    assert m.db_path.stat().st_mtime_ns == before
    assert m.get_json(f"/builds/{b['id']}")["result"] == "SUCCESS"

    # SIGKILL: the kernel drops the lock with the process.
    m.kill9()
    p = subprocess.run([TF_MASTER, "vacuum", str(m.dir)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr

    # Vacuum running (kept waiting by this transaction): no master.
    db = sqlite3.connect(str(m.db_path), isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    vac = subprocess.Popen([TF_MASTER, "vacuum", str(m.dir)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        wait_for(lambda: f"tf-master vacuum, pid {vac.pid}" in
                 (m.dir / "state.sqlite.lock").read_text(), 10,
                 "vacuum to hold the lock", farm)
        r = subprocess.run([TF_MASTER, "run", str(m.dir)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert (f"the database {m.db_path} is in use by tf-master vacuum, "
                f"pid {vac.pid}; a master or `tf-master vacuum` already "
                "runs on it: stop it first") in r.stdout + r.stderr, \
            r.stdout + r.stderr
    finally:
        db.execute("ROLLBACK")
        db.close()
        out, err = vac.communicate(timeout=60)
    assert vac.returncode == 0, (out, err)
    m.start()
    assert m.get_json(f"/builds/{b['id']}")["result"] == "SUCCESS"
