"""A build survives a dropped link and a master restart (SIGTERM or
kill -9): it goes on on the slave, the slave replays what the master has
not committed, and the stored log is byte-exact: nothing lost, nothing
duplicated."""

import time

import pytest

from tfharness import deterministic_bytes, steps_summary, wait_for

LINES = 300


def chatty_step(tmp):
    """A step printing for about 7 s, with two 512 KiB bursts; returns
    (step config, the exact bytes it prints)."""
    burst = deterministic_bytes(512 * 1024, seed=7)
    f = tmp / "burst.bin"
    f.write_bytes(burst)
    pad = "0123456789abcdefghijklmnopqrstuvwxyz" * 2
    cmd = (f"i=0; while [ $i -lt {LINES} ]; do "
           f"printf 'line %05d {pad}\\n' $i; "
           f"if [ $i -eq 100 ] || [ $i -eq 200 ]; then cat {f}; fi; "
           "i=$((i+1)); sleep 0.02; done; echo done")
    expected = b""
    for i in range(LINES):
        expected += f"line {i:05d} {pad}\n".encode()
        if i in (100, 200):
            expected += burst
    expected += b"done\n"
    return {"name": "chatty", "command": cmd}, expected


def config(step, **top):
    cfg = {"name": "it", "heartbeat_s": 1, "lost_after_s": 4,
           "slaves": [{"name": "s1"}],
           "builders": [{"name": "long", "steps": [
               {"name": "before", "command": "echo before"}, step,
               {"name": "after", "command": "echo after"}]}]}
    cfg.update(top)
    return cfg


def check_build(m, build, expected):
    assert build["result"] == "SUCCESS", steps_summary(build)
    assert steps_summary(build) == [("before", "SUCCESS"),
                                    ("chatty", "SUCCESS"),
                                    ("after", "SUCCESS")]
    log = m.step_log(build["id"], 1)
    if log != expected:
        # Say where it went wrong rather than dumping megabytes.
        n = next((i for i, (a, b) in enumerate(zip(log, expected)) if a != b),
                 min(len(log), len(expected)))
        raise AssertionError(
            f"log differs from what the step printed: {len(log)} bytes "
            f"stored, {len(expected)} printed, first difference at byte {n}:"
            f" stored {log[max(0, n - 40):n + 40]!r} printed "
            f"{expected[max(0, n - 40):n + 40]!r}")
    assert build["steps"][1]["log"]["bytes"] == len(expected)
    assert m.step_log(build["id"], 0) == b"before\n"
    assert m.step_log(build["id"], 2) == b"after\n"


@pytest.mark.timeout(120)
def test_dropped_link_mid_build(farm):
    step, expected = chatty_step(farm.tmp)
    m = farm.master(config(step))
    proxy = farm.proxy(m.port)
    s1 = farm.slave(m, "s1", url=proxy.ws_url)
    req = m.force("long")
    bid = m.wait_build_started(req)
    m.wait_step_running(bid, 1, min_bytes=2000)

    proxy.cut()
    wait_for(lambda: not m.slave_connected("s1"), 10,
             "the master to see the link drop", farm)
    time.sleep(3)
    mid = m.build(bid)
    assert mid["state"] != "finished", "the build must wait for the slave"
    assert s1.running()
    proxy.restore()

    m.wait_slave_connected("s1", 20)
    build = m.wait_request_done(req, 60)
    assert build["id"] == bid, "the same build must finish, not a retry"
    check_build(m, build, expected)
    assert proxy.accepted >= 2, "the slave should have reconnected"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_master_restart_mid_build(farm, how):
    step, expected = chatty_step(farm.tmp)
    m = farm.master(config(step))
    s1 = farm.slave(m, "s1")
    req = m.force("long")
    bid = m.wait_build_started(req)
    m.wait_step_running(bid, 1, min_bytes=2000)

    if how == "sigterm":
        m.stop(expect=0)
    else:
        m.kill9()
    time.sleep(1.5)  # the step keeps printing into the slave's spool
    assert s1.running(), "the slave must survive the master going away"
    m.start()

    build = m.wait_request_done(req, 60)
    assert build["id"] == bid, \
        f"build {bid} should resume, got build {build['id']}"
    check_build(m, build, expected)
    assert m.request_info(req)["retries"] == 0
    if how == "sigterm":
        assert "shutting down" in m.log_text()


@pytest.mark.timeout(60)
def test_slave_retries_promptly_when_the_peer_closes_during_the_handshake(
        farm):
    """A TCP proxy or load balancer whose backend is down accepts the
    connection and closes it before the upgrade answer. The slave must
    treat that as a failed attempt and retry with its backoff (at most
    1 s here), not wait for its 30 s handshake watchdog."""
    m = farm.master(config({"name": "x", "command": "true"}))
    proxy = farm.proxy(m.port)
    proxy.cut(accept=True)
    s1 = farm.slave(m, "s1", url=proxy.ws_url, start=False)
    s1.start(wait_connected=False)
    time.sleep(2)
    proxy.restore()
    # Backoff is at most 1 s: 6 s is plenty.
    wait_for(lambda: m.slave_connected("s1"), 6,
             "s1 to connect once the proxy forwards again (a slave stuck "
             "in CONNECTING until its 30 s handshake watchdog fails this)",
             farm)


def _abandoned_while_away(farm, dying_s):
    """A master whose only slave runs build X of request req, whose step
    takes dying_s seconds to die after its SIGTERM; the slave's link is cut
    until the master ends X as RETRY (build_lost_after_s 2), then comes
    back: the master abandons X and sends the rerun. Returns (master,
    slave, req, X's id, the file each run of the step appends a line
    to)."""
    runs = farm.tmp / "runs"
    step = {"name": "work", "command":
            f"trap 'sleep {dying_s}; exit 1' TERM; echo run >> {runs}; "
            f"[ $(wc -l < {runs}) -ge 2 ] || sleep 300; echo finished"}
    m = farm.master(config(step, build_lost_after_s=2))
    proxy = farm.proxy(m.port)
    s1 = farm.slave(m, "s1", url=proxy.ws_url)
    req = m.force("long")
    x = m.wait_build_started(req)
    wait_for(lambda: runs.exists(), 20, "X's step to start", farm)
    proxy.cut()
    wait_for(lambda: m.build(x)["state"] == "finished", 30,
             "the master to end X while the slave is away", farm)
    assert m.build(x)["result"] == "RETRY"
    proxy.restore()
    return m, s1, req, x, runs


@pytest.mark.timeout(120)
def test_a_rerun_sent_with_the_abandon_waits_for_the_killed_build(farm):
    """The slave stays away until the master ends its build X as RETRY
    (build_lost_after_s) and queues the request again; when it comes back
    the master abandons X (welcome.abandon) and at once sends the rerun Y
    to the same slave, its only one. X's step is still being killed then,
    holding the slave's one slot: Y waits for it instead of being refused
    (which was a second RETRY and a third build of one request)."""
    import sqlite3
    # X's step takes a second to die after its SIGTERM, so the rerun
    # arrives while it is still being killed, however slow the machine.
    m, s1, req, x, runs = _abandoned_while_away(farm, dying_s=1)

    y = m.wait_request_done(req, 60)
    assert y["result"] == "SUCCESS", y
    assert y["id"] != x
    db = sqlite3.connect(m.db_path)
    try:
        ids = [r[0] for r in db.execute(
            "SELECT id FROM builds WHERE request_id = ? ORDER BY id",
            (req,))]
    finally:
        db.close()
    assert ids == [x, y["id"]], ids  # X (RETRY) and Y only
    assert runs.read_text() == "run\nrun\n"
    log = s1.log_text()
    assert "the master abandoned it: killing it" in log, log
    assert (f"build {y['id']} (long #{y['number']}) waits for the build the "
            "master abandoned to be killed") in log, log
    assert "max_builds builds already running" not in log, log


@pytest.mark.timeout(120)
def test_a_held_rerun_cancelled_before_it_starts_never_runs(farm):
    """As above, but the abandoned step takes 5 s to die, and the rerun Y
    is cancelled while it waits for it: Y ends CANCELLED without running a
    step, then and later (the slave does not start it once the slot
    frees)."""
    import sqlite3
    m, s1, req, x, runs = _abandoned_while_away(farm, dying_s=5)
    wait_for(lambda: "waits for the build the master abandoned" in
             s1.log_text(), 20, "the rerun to wait on the slave", farm)
    db = sqlite3.connect(m.db_path)
    try:
        y = wait_for(lambda: db.execute(
            "SELECT max(id) FROM builds WHERE request_id = ? AND id != ?",
            (req, x)).fetchone()[0], 10, "the rerun's build row", farm)
    finally:
        db.close()
    r = m.api_post(f"/builds/{y}/cancel")
    assert r.status in (200, 202), r
    done = m.wait_build_finished(y, 30)
    assert done["result"] == "CANCELLED", done
    assert all(s.get("result") in (None, "SKIPPED", "CANCELLED")
               for s in done["steps"]), done["steps"]
    time.sleep(6)  # X has died: the slot is free, Y must stay unstarted
    assert runs.read_text() == "run\n"
    log = s1.log_text()
    assert f"build {y} (long #{done['number']}) not started: aborted by " \
        "the master while it waited: reporting CANCELLED" in log, log
    assert f"build {y} (long #{done['number']}) starting" not in log, log
