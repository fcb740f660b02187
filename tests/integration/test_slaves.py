"""Slaves coming and going: refused slaves, kill -9, a stopped slave,
a config reload, while the master keeps serving everyone else."""

import signal
import time

import pytest

from tfharness import pid_alive, steps_summary, wait_for


def config(**top):
    cfg = {"name": "it", "heartbeat_s": 2, "lost_after_s": 6,
           "slaves": [{"name": "s1"}, {"name": "s2"}],
           "builders": [{"name": "quick", "slaves": ["s1", "s2"],
                         "steps": [{"name": "hi", "command": "echo hi"}]}]}
    cfg.update(top)
    return cfg


def events(m, name):
    return m.slave_info(name)["events"]


def test_wrong_secret_is_refused_and_master_keeps_serving(farm):
    m = farm.master(config())
    good = farm.slave(m, "s1")
    wrong = farm.tmp / "wrong-secret"
    wrong.write_text("not-the-secret\n")
    bad = farm.slave(m, "s2", secret_file=wrong, start=False)
    bad.start(wait_connected=False)
    rc = bad.wait_exit(20)
    assert rc == 3, f"tf-slave with a wrong secret exited {rc}, expected 3"
    log = bad.log_text().lower()
    assert "secret" in log or "bad_auth" in log, bad.log_text()

    mlog = m.log_text()
    assert "s2" in mlog and ("bad_auth" in mlog or "secret" in mlog.lower()
                             or "auth" in mlog.lower()), mlog
    refused = wait_for(lambda: [e for e in events(m, "s2")
                                if e["event"] == "refused"], 5,
                       "a refused event for s2", farm)
    evs = events(m, "s2")
    assert refused[0]["detail"], refused
    assert not [e for e in evs if e["event"] == "connected"], evs
    assert m.slave_info("s2")["connected"] is False

    # The master still answers and the good slave still builds.
    assert m.get_json("/master")["slaves_connected"] == 1
    b = m.run_build("quick")
    assert b["result"] == "SUCCESS" and b["slave"] == "s1", b
    assert good.running()


def test_unknown_slave_name_exits_4(farm):
    m = farm.master(config())
    secret = farm.tmp / "secret"
    secret.write_text("whatever\n")
    ghost = farm.slave(m, "ghost", secret_file=secret, start=False)
    ghost.start(wait_connected=False)
    rc = ghost.wait_exit(20)
    assert rc == 4, f"an unknown slave exited {rc}, expected 4"
    assert "ghost" in ghost.log_text(), ghost.log_text()
    assert m.get("/api/v1/master").status == 200
    r = m.api_get("/slaves/ghost")
    # Either not listed, or listed as not configured with a refusal.
    if r.status == 200:
        info = r.json()
        assert info["connected"] is False and info["configured"] is False
    else:
        assert r.status == 404, r


def test_bad_slave_settings_exit_2(farm):
    m = farm.master(config())
    s = farm.slave(m, "s1", start=False, args=["--max-builds", "zero"])
    s.start(wait_connected=False)
    assert s.wait_exit(10) == 2
    assert "max-builds" in s.log_text(), s.log_text()
    s = farm.slave(m, "s1", start=False, url="http://nope")
    s.start(wait_connected=False)
    assert s.wait_exit(10) == 2, s.log_text()


def test_slave_killed_while_idle_reconnects_and_builds(farm):
    m = farm.master(config())
    s1 = farm.slave(m, "s1")
    first = m.slave_info("s1")["connected_ms"]
    s1.kill9()
    wait_for(lambda: not m.slave_connected("s1"), 15,
             "the master to notice s1 is gone", farm)
    # Events are committed by the storage thread, a moment after the
    # live state changes.
    wait_for(lambda: any(e["event"] in ("disconnected", "lost")
                         for e in events(m, "s1")), 5,
             "a disconnected event for s1", farm)
    time.sleep(0.01)
    s1.start()
    info = m.slave_info("s1")
    assert info["connected_ms"] > first, info
    b = m.run_build("quick")
    assert b["result"] == "SUCCESS" and b["slave"] == "s1", b


@pytest.mark.timeout(120)
def test_slave_killed_mid_build_retries_the_request(farm):
    marker = farm.tmp / "first-run-happened"
    pidfile = farm.tmp / "first-run-pid"
    m = farm.master(config(builders=[{"name": "flaky", "slaves": ["s1"],
        "steps": [{"name": "work", "command":
            f"if [ -e {marker} ]; then echo second run; exit 0; fi; "
            f"touch {marker}; echo $$ > {pidfile}; echo first run; "
            "exec sleep 1000"}]}],
        build_lost_after_s=120))
    s1 = farm.slave(m, "s1")
    req = m.force("flaky")
    first = m.wait_build_started(req)
    m.wait_step_running(first, 0, min_bytes=len("first run\n"))
    orphan = int(pidfile.read_text())
    assert pid_alive(orphan)
    s1.kill9()
    assert pid_alive(orphan), "kill -9 of the slave leaves its step running"
    s1.start()
    # The restarted slave kills what its predecessor left running...
    wait_for(lambda: not pid_alive(orphan), 10,
             f"the restarted slave to kill the orphaned step (pid {orphan})",
             farm)
    # ...and reports the dead build; the master ends it RETRY and runs the
    # request again.
    b1 = m.wait_build_finished(first, 60)
    assert b1["result"] == "RETRY", steps_summary(b1)
    final = m.wait_request_done(req, 60)
    assert final["id"] != first, final
    assert final["result"] == "SUCCESS", steps_summary(final)
    assert m.step_log(final["id"], 0) == b"second run\n"
    assert m.request_info(req)["retries"] >= 1
    assert m.step_log(first, 0) == b"first run\n"


@pytest.mark.timeout(60)
def test_stopped_slave_is_marked_lost(farm):
    m = farm.master(config(heartbeat_s=1, lost_after_s=3))
    s1 = farm.slave(m, "s1")
    farm.slave(m, "s2")
    s1.signal(signal.SIGSTOP)
    t0 = time.monotonic()
    wait_for(lambda: not m.slave_connected("s1"), 3 + 4,
             "s1 (SIGSTOPped) to be marked lost within lost_after_s + 4 s",
             farm)
    took = time.monotonic() - t0
    assert took >= 2, f"s1 was dropped after {took:.1f} s, before " \
        "lost_after_s"
    evs = wait_for(lambda: [e for e in events(m, "s1")
                            if e["event"] != "connected"], 5,
                   "an event for s1 after it stopped answering", farm)
    assert evs[0]["event"] == "lost", evs
    assert "lost" in m.log_text()
    assert m.slave_connected("s2"), "the other slave must stay connected"
    s1.signal(signal.SIGCONT)
    m.wait_slave_connected("s1", 20)
    b = m.run_build("quick")
    assert b["result"] == "SUCCESS"


def test_sighup_adds_a_builder_without_dropping_links(farm):
    cfg = config()
    web = farm.tmp / "web"
    web.mkdir()
    (web / "index.html").write_text("<p>the pages</p>\n")
    cfg["web_root"] = str(web)
    m = farm.master(cfg)
    farm.slave(m, "s1")
    farm.slave(m, "s2")
    before = {n: m.slave_info(n) for n in ("s1", "s2")}
    assert m.api_get("/builders/added").status == 404

    cfg["builders"].append({"name": "added", "slaves": ["s2"], "steps": [
        {"name": "new", "command": "echo new builder"}]})
    m.write_config(cfg)
    m.sighup()
    wait_for(lambda: m.api_get("/builders/added").status == 200, 10,
             "builder 'added' to appear after SIGHUP", farm)
    assert "reloaded" in m.log_text(), m.log_text()
    names = [b["name"] for b in m.get_json("/builders")]
    assert names == ["added", "quick"], names

    # The pages are still served: the web server kept its own copy of
    # web_root when the old config was freed (ASan would catch a stale one).
    r = m.get("/")
    assert r.status == 200 and r.body == b"<p>the pages</p>\n", r
    b = m.run_build("added")
    assert b["result"] == "SUCCESS" and b["slave"] == "s2", b
    assert m.step_log(b["id"], 0) == b"new builder\n"
    for n in ("s1", "s2"):
        now = m.slave_info(n)
        assert now["connected"] is True, now
        assert now["connected_ms"] == before[n]["connected_ms"], (before[n],
                                                                  now)
        assert len(now["events"]) == len(before[n]["events"]), now["events"]
        assert now["events"][0]["event"] == "connected"


def test_slave_rows_written_once_and_again_after_a_lost_write(farm):
    """A reload writes the slaves row of a slave new to the config only
    (5,000 unchanged rows were rewritten at each reload), and all of them
    again after a group of them was lost: here the startup's, failed by
    the test hook, so no slave has a row until the reload."""
    import sqlite3

    m = farm.master(config(), log_level="info",
                    env={"TF_TEST_STORE_FAIL": "slave_known:1"})
    wait_for(lambda: "test hook: failing group" in m.log_text(), 20,
             "the hook to fail the slaves' rows", farm)

    def rows():
        con = sqlite3.connect("file:%s?mode=ro" % m.db_path, uri=True)
        try:
            return sorted(r[0] for r in con.execute("SELECT name FROM slaves"))
        finally:
            con.close()

    def reload(n):
        m.sighup()
        wait_for(lambda: m.log_text().count("config reloaded") == n, 10,
                 "reload %d" % n, farm)

    assert rows() == []
    reload(1)
    wait_for(lambda: rows() == ["s1", "s2"], 10, "the rows rewritten", farm)
    cfg = config()
    cfg["slaves"].append({"name": "s3"})
    m.write_config(cfg)
    reload(2)
    wait_for(lambda: rows() == ["s1", "s2", "s3"], 10, "the new row", farm)
    s = farm.slave(m, "s3")
    m.wait_slave_connected("s3")
    assert m.slave_info("s3")["connected"] is True
    s.stop()


def test_sighup_during_a_build_leaves_it_running(farm):
    """A reload that changes the running build's builder: the build runs
    on with the steps it started with, its log whole; the next build uses
    the new steps."""
    cfg = config(slaves=[{"name": "s1"}])
    cfg["builders"][0] = {"name": "quick", "steps": [
        {"name": "count", "command": "for i in 1 2 3 4 5 6; do echo tick $i; "
                                     "sleep 0.5; done"},
        {"name": "after", "command": "echo old second step"}]}
    m = farm.master(cfg)
    farm.slave(m, "s1")
    req = m.force("quick")
    bid = m.wait_build_started(req)
    m.wait_step_running(bid, 0, min_bytes=len("tick 1\n"))
    connected = m.slave_info("s1")["connected_ms"]

    cfg["builders"][0]["steps"] = [{"name": "new", "command": "echo new"}]
    m.write_config(cfg)
    m.sighup()
    wait_for(lambda: "config reloaded" in m.log_text(), 10, "the reload",
             farm)
    done = m.wait_build_finished(bid)
    assert done["result"] == "SUCCESS", steps_summary(done)
    assert [s["name"] for s in done["steps"]] == ["count", "after"]
    assert m.step_log(bid, 0) == b"".join(
        b"tick %d\n" % i for i in range(1, 7))
    assert m.step_log(bid, 1) == b"old second step\n"
    assert m.slave_info("s1")["connected_ms"] == connected

    nxt = m.run_build("quick")
    assert [s["name"] for s in nxt["steps"]] == ["new"], nxt
    assert nxt["result"] == "SUCCESS"


def test_sighup_with_a_broken_config_keeps_the_old_one(farm):
    m = farm.master(config())
    farm.slave(m, "s1")
    m.config_path.write_text('{"builders": [{"name": "x", "stepz": []}]}\n')
    m.sighup()
    wait_for(lambda: "not reloaded" in m.log_text(), 10,
             "the master to log that it kept the old config", farm)
    assert "stepz" in m.log_text()
    b = m.run_build("quick")
    assert b["result"] == "SUCCESS"
    assert m.slave_connected("s1")
