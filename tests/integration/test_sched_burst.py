"""A burst of builds released at once onto many slaves: the scheduler's
pass starts hundreds of builds in one go (in start batches of 256 builds,
then twice as many, one write group each), and still runs each request
exactly once,
only on a slave that serves its builder, never more builds at once on a
slave than its max_builds.

The slaves are emulated by tests/bench/tf-loadslaves (real websocket
links, the real protocol, each slave with its own secret), which refuses
and reports as a failure any build_start over its --max-builds; the master
is the real tf-master; the results are read back from its database."""

import os
import re
import sqlite3
import subprocess
import time

import pytest

from tfharness import BUILD_DIR, scaled, wait_for

LOADSLAVES = BUILD_DIR / "tests" / "bench" / "tf-loadslaves"

pytestmark = pytest.mark.skipif(
    not os.access(LOADSLAVES, os.X_OK),
    reason=f"{LOADSLAVES} is not built")

NSLAVES = 300        # load00001..load00300; the first 150 have tag "a"
MAX_BUILDS = 2
NAMED = ["load00151", "load00152"]  # untagged, named by builder "named"
COUNTS = {"ta": 500, "named": 40, "any": 300}


def burst_config(held):
    """Builders "ta" (tag a), "named" (two slaves by name) and "any" (every
    slave); held: each also needs the tag "held", which no slave has."""
    def tags(t):
        return t + (["held"] if held else [])
    builders = [
        {"name": "ta", "tags": tags(["a"]),
         "steps": [{"name": "noop", "command": ["true"]}]},
        {"name": "named", "slaves": NAMED,
         "steps": [{"name": "noop", "command": ["true"]}]},
        {"name": "any", "steps": [{"name": "noop", "command": ["true"]}]},
    ]
    if held:
        # Named slaves may run a builder whatever its tags: held, it names
        # none and needs the tag instead.
        del builders[1]["slaves"]
        builders[1]["tags"] = ["held"]
        builders[2]["tags"] = ["held"]
    slaves = []
    for i in range(1, NSLAVES + 1):
        s = {"name": "load%05d" % i, "max_builds": MAX_BUILDS}
        if i <= NSLAVES // 2:
            s["tags"] = ["a"]
        slaves.append(s)
    return {"name": "burst", "slaves": slaves, "builders": builders}


def allowed(builder, slave):
    n = int(slave[4:])
    if builder == "ta":
        return n <= NSLAVES // 2
    if builder == "named":
        return slave in NAMED
    return builder == "any"


@pytest.mark.timeout(300)
def test_burst_runs_each_request_once_on_an_allowed_slave(farm):
    m = farm.master(burst_config(held=True))
    total = sum(COUNTS.values())
    client = subprocess.Popen(
        [str(LOADSLAVES), "--url", "ws://127.0.0.1:%d/slave" % m.port,
         "--secret-dir", str(m.dir / "secrets"), "--slaves", str(NSLAVES),
         "--prefix", "load", "--max-builds", str(MAX_BUILDS),
         "--expect", str(total), "--timeout", str(int(scaled(120))),
         "--master-pid", str(m.proc.pid)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        deadline = time.time() + scaled(60)
        while m.get_json("/master")["slaves_connected"] < NSLAVES:
            assert client.poll() is None, client.stdout.read()
            assert time.time() < deadline, "the slaves did not all connect"
            time.sleep(0.2)
        reqs = {}
        for builder, n in COUNTS.items():
            for _ in range(n):
                reqs[m.force(builder)] = builder
        assert m.get_json("/master")["requests_pending"] == total
        # The release: every builder becomes runnable at one instant.
        m.write_config(burst_config(held=False))
        m.sighup()
        out, _ = client.communicate(timeout=scaled(180))
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    # tf-loadslaves exits 1 if a build_start came over max_builds, a
    # build did not finish, or the master broke the protocol.
    assert client.returncode == 0, out
    assert "%d of %d expected builds done" % (total, total) in out, out
    # The release's pass starts its first 256 builds in one start batch,
    # so they go out early, and the rest in bigger ones (fewer commits).
    batches = [int(n) for n in re.findall(
        r"\d+ of (\d+) builds \(ids \d+ to \d+\) sent to their slaves",
        m.log_text())]
    assert batches and batches[0] == 256, batches
    assert any(n > 256 for n in batches), batches
    m.stop()

    con = sqlite3.connect("file:%s?mode=ro" % m.db_path, uri=True)
    rows = con.execute("SELECT request_id, builder, slave, result FROM "
                       "builds").fetchall()
    states = dict(con.execute("SELECT id, state FROM build_requests"))
    con.close()
    per_request = {}
    for req, builder, slave, result in rows:
        per_request.setdefault(req, []).append((builder, slave, result))
    assert set(per_request) == set(reqs), \
        "requests without a build: %s; builds of unknown requests: %s" % (
            sorted(set(reqs) - set(per_request))[:10],
            sorted(set(per_request) - set(reqs))[:10])
    twice = {r: b for r, b in per_request.items() if len(b) != 1}
    assert not twice, f"requests run more than once: {list(twice.items())[:5]}"
    wrong = [(r, b[0]) for r, b in per_request.items()
             if b[0][0] != reqs[r] or not allowed(b[0][0], b[0][1])]
    assert not wrong, f"builds on slaves that do not serve their " \
                      f"builder: {wrong[:10]}"
    assert {b[0][2] for b in per_request.values()} == {0}, \
        "not every build succeeded (0 is SUCCESS in the store)"
    used = {b[0][1] for r, b in per_request.items() if reqs[r] == "named"}
    assert used <= set(NAMED) and used, used
    assert {states[r] for r in reqs} == {"done"}, \
        "requests not done: %s" % sorted({states[r] for r in reqs})


def _defer_config(held):
    """150 emulated slaves (2 builds each, tag "any") for builder "any" and
    one real tf-slave, "real", named by builder "log", whose two steps
    print output; held: each builder needs the tag "held" instead, which
    no slave has."""
    printer = ("i=0; while [ $i -lt 400 ]; do echo \"line $i of the "
               "put-off log\"; i=$((i+1)); done")
    slaves = [{"name": "load%05d" % i, "max_builds": 2, "tags": ["any"]}
              for i in range(1, 151)]
    slaves.append({"name": "real", "max_builds": 1})
    log = {"name": "log",
           "steps": [{"name": "print", "command": printer},
                     {"name": "second", "command": "echo second step"}]}
    if held:
        log["tags"] = ["held"]
    else:
        log["slaves"] = ["real"]
    return {"name": "defer", "slaves": slaves, "builders": [
        {"name": "any", "tags": ["held"] if held else ["any"],
         "steps": [{"name": "noop", "command": ["true"]}]},
        log]}


@pytest.mark.timeout(300)
def test_messages_put_off_during_a_burst_are_handled_in_order(farm):
    """While a burst's start batches are written the master puts off what
    the slaves send (core/master.h, tf_master_defer_slaves) and handles it
    afterwards, each slave's messages in the order they came. The test
    hook TF_TEST_DEFER_MS makes the deferral last 4 s, long enough for a
    real tf-slave to run a whole build of two steps and 400 lines of
    output meanwhile: the master shows none of it until the deferral
    ends, then all of it, byte for byte, both steps in order."""
    m = farm.master(_defer_config(held=True), env={"TF_TEST_DEFER_MS": str(int(scaled(4000)))})
    real = farm.slave(m, "real")
    client = subprocess.Popen(
        [str(LOADSLAVES), "--url", "ws://127.0.0.1:%d/slave" % m.port,
         "--secret-dir", str(m.dir / "secrets"), "--slaves", "150",
         "--prefix", "load", "--max-builds", "2", "--expect", "300",
         "--timeout", str(int(scaled(120))), "--master-pid",
         str(m.proc.pid)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        deadline = time.time() + scaled(60)
        while m.get_json("/master")["slaves_connected"] < 151:
            assert client.poll() is None, client.stdout.read()
            assert time.time() < deadline, "the slaves did not all connect"
            time.sleep(0.2)
        # The real slave's request first: it is in the first start batch.
        req = m.force("log")
        for _ in range(300):
            m.force("any")
        m.write_config(_defer_config(held=False))
        m.sighup()
        bid = m.wait_build_started(req, timeout=scaled(30))
        # The slave runs the whole build while the master puts off what
        # it sends: the build is still at its start on the master.
        wait_for(lambda: re.search(r"build %d \(log #1\) finished: SUCCESS"
                                   % bid, real.log_text()),
                 scaled(30), "the real slave to finish its build",
                 farm=farm)
        seen = m.build(bid)
        assert seen["state"] != "finished", seen
        assert not any(s["state"] == "done" for s in seen["steps"]), seen
        assert sum(s["log"]["bytes"] or 0 for s in seen["steps"]) == 0, seen
        out, _ = client.communicate(timeout=scaled(180))
        done = m.wait_build_finished(bid, timeout=scaled(30))
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, out
    assert done["result"] == "SUCCESS", done
    assert [s["name"] for s in done["steps"]] == ["print", "second"]
    assert [s["result"] for s in done["steps"]] == ["SUCCESS", "SUCCESS"]
    expect = "".join("line %d of the put-off log\n" % i for i in range(400))
    assert m.step_log(bid, 0).decode() == expect
    assert m.step_log(bid, 1).decode() == "second step\n"
    # The master says what it put off, the real slave's messages among
    # them (its build's events and output frames, after its build_start).
    handled = [int(n) for n in re.findall(
        r"(\d+) messages \(\d+ bytes\) from \d+ slaves handled after the "
        r"start batches", m.log_text())]
    assert handled and max(handled) >= 6, handled
    real.stop()
    m.stop()
