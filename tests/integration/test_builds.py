"""Builds end to end: results, step flags, timeouts, big and binary output,
log ranges, max_builds. Each test runs a real master and real slaves."""

import itertools
import os

import pytest

from tfharness import (deterministic_bytes, live_pids_in_group, pgid_of,
                       pid_alive, sha256, steps_summary, wait_for)


def two_slave_config(builders, **top):
    cfg = {"name": "it", "heartbeat_s": 2, "lost_after_s": 6,
           "slaves": [{"name": "s1"}, {"name": "s2"}],
           "builders": builders}
    cfg.update(top)
    return cfg


def test_passing_build_on_two_slaves(farm):
    m = farm.master(two_slave_config([{
        "name": "pass",
        "slaves": ["s1", "s2"],
        "steps": [
            {"name": "hello",
             "command": "echo hello from $TF_BUILDER number "
                        "$TF_BUILD_NUMBER step $TF_STEP_NAME; sleep 1"},
            {"name": "env", "command": "printf '%s\\n' \"$GREETING\"",
             "env": {"GREETING": "hi there"}},
            {"name": "argv", "command": ["printf", "%s|%s|\\n", "a b", ""]},
            {"name": "workdir", "command": "pwd", "workdir": "sub/dir"},
        ]}]))
    s1 = farm.slave(m, "s1")
    s2 = farm.slave(m, "s2")
    master = m.get_json("/master")
    assert master["slaves_connected"] == 2, master

    # Two requests, two idle slaves: both run at once, one each.
    reqs = [m.force("pass"), m.force("pass")]
    builds = [m.wait_request_done(r) for r in reqs]
    assert sorted(b["slave"] for b in builds) == ["s1", "s2"], builds
    for b in builds:
        assert b["result"] == "SUCCESS", steps_summary(b)
        assert b["state"] == "finished"
        assert [s["name"] for s in b["steps"]] == \
            ["hello", "env", "argv", "workdir"]
        for s in b["steps"]:
            assert s["result"] == "SUCCESS", s
            assert s["exit_code"] == 0, s
            assert s["timed_out"] is False, s
            assert s["state"] == "done", s
        slave = s1 if b["slave"] == "s1" else s2
        assert m.step_log(b["id"], 0) == \
            f"hello from pass number {b['number']} step hello\n".encode()
        assert m.step_log(b["id"], 1) == b"hi there\n"
        assert m.step_log(b["id"], 2) == b"a b||\n"
        assert m.step_log(b["id"], 3) == \
            f"{slave.basedir}/pass/sub/dir\n".encode()
        assert b["steps"][1]["log"]["bytes"] == 9
        assert b["steps"][1]["log"]["lines"] == 1
        assert b["steps"][2]["command"] == ["printf", "%s|%s|\\n", "a b", ""]

    builder = m.get_json("/builders/pass")
    assert builder["builds_total"] == 2, builder
    assert builder["last_complete"]["result"] == "SUCCESS", builder
    assert sorted(b["number"] for b in builds) == [1, 2]
    for name in ("s1", "s2"):
        info = m.slave_info(name)
        assert info["connected"] is True
        assert info["builds_done"] == 1, info
        # Configured slaves have a row before they first connect; the
        # first connection stamps first_seen_ms.
        assert isinstance(info["first_seen_ms"], int), info
        assert info["first_seen_ms"] <= info["last_seen_ms"], info


def test_failing_build_halts_and_always_run_runs(farm):
    m = farm.master(two_slave_config([
        {"name": "fails", "steps": [
            {"name": "ok", "command": "echo fine"},
            {"name": "breaks", "command": "echo about to fail; exit 3",
             "haltOnFailure": True},
            {"name": "never", "command": "echo SHOULD NOT RUN"},
            {"name": "cleanup", "command": "echo cleaning up",
             "alwaysRun": True},
            {"name": "never2", "command": "echo SHOULD NOT RUN EITHER"},
        ]},
        {"name": "warns", "steps": [
            {"name": "lint", "command": "exit 1", "flunkOnFailure": False,
             "warnOnFailure": True},
            {"name": "after", "command": "echo still runs"},
        ]},
        {"name": "missing", "steps": [
            {"name": "nosuch", "command": ["/nonexistent/program"]},
            {"name": "after", "command": "echo SHOULD NOT RUN"},
        ]},
    ], slaves=[{"name": "s1"}]))
    farm.slave(m, "s1")

    b = m.run_build("fails")
    assert b["result"] == "FAILURE", steps_summary(b)
    assert steps_summary(b) == [("ok", "SUCCESS"), ("breaks", "FAILURE"),
                                ("never", "SKIPPED"), ("cleanup", "SUCCESS"),
                                ("never2", "SKIPPED")]
    brk = b["steps"][1]
    assert brk["exit_code"] == 3 and brk["timed_out"] is False, brk
    assert "3" in (brk["text"] or ""), brk
    assert m.step_log(b["id"], 1) == b"about to fail\n"
    assert m.step_log(b["id"], 3) == b"cleaning up\n"
    for i in (2, 4):
        assert b["steps"][i]["log"]["bytes"] in (0, None)
        assert b["steps"][i]["exit_code"] is None, b["steps"][i]
        r = m.api_get(f"/builds/{b['id']}/steps/{i}/log")
        assert r.status in (200, 404) and r.body.find(b"SHOULD") < 0, r

    w = m.run_build("warns")
    assert steps_summary(w) == [("lint", "FAILURE"), ("after", "SUCCESS")]
    assert w["result"] == "WARNINGS", w

    x = m.run_build("missing")
    assert steps_summary(x) == [("nosuch", "EXCEPTION"),
                                ("after", "SKIPPED")], x
    assert x["result"] == "EXCEPTION"
    assert x["steps"][0]["text"], "an EXCEPTION step should say why"

    builder = m.get_json("/builders/fails")
    assert builder["last_complete"]["result"] == "FAILURE", builder


def _read_pids(path, n):
    def ok():
        try:
            lines = path.read_text().split()
        except FileNotFoundError:
            return None
        return len(lines) >= n and [int(x) for x in lines]
    return ok


@pytest.mark.timeout(90)
def test_step_timeout_kills_the_whole_process_group(farm):
    pids = farm.tmp / "pids"
    m = farm.master(two_slave_config([{"name": "hangs", "steps": [
        {"name": "hang", "timeout": 2, "command":
            f"sleep 1000 & echo $! >> {pids}; sleep 1000 & echo $! >> {pids};"
            f" echo $$ >> {pids}; echo started; exec sleep 1000"},
        {"name": "next", "command": "echo next"},
    ]}], slaves=[{"name": "s1"}]))
    farm.slave(m, "s1")
    req = m.force("hangs")
    got = wait_for(_read_pids(pids, 3), 20, "the step to write its pids",
                   farm)
    pgid = pgid_of(got[2])
    assert pgid != os.getpgid(farm._procs[-1].pid), \
        "the step should run in its own process group"
    assert all(pgid_of(p) == pgid for p in got if pid_alive(p))

    b = m.wait_request_done(req, 40)
    step = b["steps"][0]
    assert step["result"] == "FAILURE", step
    assert step["timed_out"] is True, step
    assert "time" in (step["text"] or "").lower(), step
    assert b["result"] == "FAILURE"
    assert m.step_log(b["id"], 0) == b"started\n"
    # The later step still ran: a timeout is a FAILURE, not a halt.
    assert b["steps"][1]["result"] == "SUCCESS"
    wait_for(lambda: not [p for p in got if pid_alive(p)], 10,
             f"step processes {got} to be gone", farm)
    wait_for(lambda: not live_pids_in_group(pgid), 10,
             f"process group {pgid} to be empty", farm)


@pytest.mark.timeout(90)
def test_step_max_time_kills_children_that_ignore_sigterm(farm):
    pids = farm.tmp / "pids"
    m = farm.master(two_slave_config([{"name": "chatty", "steps": [
        {"name": "forever", "maxTime": 2, "timeout": 0, "command":
            f"(trap '' TERM; exec sleep 1000) & echo $! >> {pids}; "
            f"echo $$ >> {pids}; while :; do echo tick; sleep 0.2; done"},
    ]}], slaves=[{"name": "s1"}]))
    farm.slave(m, "s1")
    req = m.force("chatty")
    got = wait_for(_read_pids(pids, 2), 20, "the step to write its pids",
                   farm)
    pgid = pgid_of(got[1])
    b = m.wait_request_done(req, 40)
    step = b["steps"][0]
    assert step["result"] == "FAILURE" and step["timed_out"] is True, step
    assert b["result"] == "FAILURE"
    assert 1800 <= step["duration_ms"] <= 15000, step
    log = m.step_log(b["id"], 0)
    assert log.startswith(b"tick\n") and set(log.split()) == {b"tick"}, log
    # The TERM-ignoring child needs the SIGKILL that follows the grace.
    wait_for(lambda: not [p for p in got if pid_alive(p)], 15,
             f"step processes {got} (one ignores SIGTERM) to be gone", farm)
    wait_for(lambda: not live_pids_in_group(pgid), 10,
             f"process group {pgid} to be empty", farm)


@pytest.mark.timeout(300)
def test_50_megabytes_of_output_are_stored_exactly(farm):
    size = 50 * 1024 * 1024
    data = deterministic_bytes(size, seed=50)
    big = farm.tmp / "big.bin"
    big.write_bytes(data)
    m = farm.master(two_slave_config([{"name": "big", "steps": [
        {"name": "cat", "command": ["cat", str(big)]}]}],
        slaves=[{"name": "s1"}]), log_level="info")
    farm.slave(m, "s1", log_level="info")
    b = m.run_build("big", timeout=240)
    assert b["result"] == "SUCCESS", steps_summary(b)
    assert b["steps"][0]["log"]["bytes"] == size, b["steps"][0]
    r = m.api_get(f"/builds/{b['id']}/steps/0/log", timeout=180)
    assert r.status == 200, r
    assert r.headers.get("x-log-size") == str(size), r.headers
    assert len(r.body) == size
    assert sha256(r.body) == sha256(data), "the stored log differs"
    # A range deep inside, across chunk boundaries.
    a, z = 30_000_000, 30_200_000
    r = m.api_get(f"/builds/{b['id']}/steps/0/log",
                  headers={"Range": f"bytes={a}-{z - 1}"})
    assert r.status == 206 and r.body == data[a:z], r


def test_invalid_utf8_and_nul_bytes_are_stored_exactly(farm):
    every = bytes(range(256)) * 4
    f = farm.tmp / "every.bin"
    f.write_bytes(every)
    m = farm.master(two_slave_config([{"name": "bytes", "steps": [
        {"name": "mixed", "command":
            "printf 'A\\377\\376\\000B\\n'; sleep 0.3; "
            "printf 'E\\000\\377err\\n' >&2; sleep 0.3; "
            "printf '\\300\\200tail\\000'"},
        {"name": "stdout", "command": ["cat", str(f)]},
        {"name": "stderr", "command": f"cat {f} >&2"},
        {"name": "nonewline", "command": "printf 'no newline at end'"},
    ]}], slaves=[{"name": "s1"}]))
    farm.slave(m, "s1")
    b = m.run_build("bytes")
    assert b["result"] == "SUCCESS", steps_summary(b)
    assert m.step_log(b["id"], 0) == \
        b"A\xff\xfe\x00B\n" + b"E\x00\xfferr\n" + b"\xc0\x80tail\x00"
    assert m.step_log(b["id"], 1) == every
    assert m.step_log(b["id"], 2) == every
    assert m.step_log(b["id"], 3) == b"no newline at end"
    assert b["steps"][1]["log"]["bytes"] == 1024


def test_log_byte_ranges(farm):
    data = bytes(range(256)) * 4
    f = farm.tmp / "data.bin"
    f.write_bytes(data)
    m = farm.master(two_slave_config([{"name": "r", "steps": [
        {"name": "out", "command": ["cat", str(f)]},
        {"name": "empty", "command": ["true"]}]}],
        slaves=[{"name": "s1"}]))
    farm.slave(m, "s1")
    b = m.run_build("r")
    assert b["result"] == "SUCCESS"
    path = f"/builds/{b['id']}/steps/0/log"

    def get(rng=None, query=""):
        return m.api_get(path + query,
                         headers={"Range": rng} if rng else None)

    full = get()
    assert full.status == 200 and full.body == data
    assert full.headers.get("accept-ranges") == "bytes"
    assert full.headers.get("x-log-size") == "1024"

    for rng, lo, hi in [("bytes=10-19", 10, 20), ("bytes=0-0", 0, 1),
                        ("bytes=1000-", 1000, 1024), ("bytes=-24", 1000, 1024),
                        ("bytes=1023-1023", 1023, 1024),
                        ("bytes=0-99999", 0, 1024),
                        ("bytes=-5000", 0, 1024)]:
        r = get(rng)
        assert r.status == 206, (rng, r)
        assert r.body == data[lo:hi], rng
        assert r.headers.get("content-range") == \
            f"bytes {lo}-{hi - 1}/1024", (rng, r.headers)

    for rng in ("bytes=1024-1030", "bytes=5000-"):
        r = get(rng)
        assert r.status == 416, (rng, r)
        assert r.headers.get("content-range") == "bytes */1024", r.headers

    for rng in ("bytes=abc", "bytes=5-2", "items=1-2", "bytes=1-2,4-5",
                "bytes=-", "bytes=x-5"):
        r = get(rng)
        assert r.status == 400, (rng, r)
        assert r.error_message(), r

    r = get(query="?start=100&end=200")
    assert r.status == 206 and r.body == data[100:200], r
    r = get(query="?start=1000")
    assert r.status == 206 and r.body == data[1000:], r

    empty = m.api_get(f"/builds/{b['id']}/steps/1/log")
    assert empty.status == 200 and empty.body == b"", empty
    assert m.api_get(f"/builds/{b['id']}/steps/7/log").status == 404
    assert m.api_get(f"/builds/{b['id'] + 100}/steps/0/log").status == 404


def _step_intervals(m, build_ids):
    out = []
    for i in build_ids:
        b = m.build(i)
        s = b["steps"][0]
        out.append((s["started_ms"], s["finished_ms"], i))
    return sorted(out)


def _watch_concurrency(m, slave, reqs, timeout):
    """Polls the slave's current_builds until every request is done;
    returns the most builds seen running at once."""
    peak = 0

    def done():
        nonlocal peak
        info = m.slave_info(slave)
        peak = max(peak, len(info["current_builds"]))
        return all(m.request_info(r)["state"] == "done" for r in reqs)
    wait_for(done, timeout, f"requests {reqs} to be done", m.farm,
             interval=0.05)
    return peak


@pytest.mark.timeout(90)
def test_max_builds_1_runs_one_build_at_a_time(farm):
    m = farm.master(two_slave_config(
        [{"name": "slow", "steps": [{"name": "nap", "command": "sleep 1.5"}]}],
        slaves=[{"name": "s1", "max_builds": 1}]))
    farm.slave(m, "s1", args=["--max-builds", "4"])
    reqs = [m.force("slow") for _ in range(3)]
    peak = _watch_concurrency(m, "s1", reqs, 40)
    assert peak == 1, f"saw {peak} builds at once on a max_builds 1 slave"
    builds = [m.wait_request_done(r) for r in reqs]
    assert all(b["result"] == "SUCCESS" for b in builds)
    iv = _step_intervals(m, [b["id"] for b in builds])
    for (s1, e1, i1), (s2, e2, i2) in itertools.pairwise(iv):
        assert s2 >= e1, f"builds {i1} and {i2} overlapped: {iv}"


@pytest.mark.timeout(90)
def test_max_builds_2_runs_two_builds_at_once(farm):
    m = farm.master(two_slave_config(
        [{"name": "slow", "steps": [{"name": "nap", "command": "sleep 3"}]}],
        slaves=[{"name": "s1", "max_builds": 2}]))
    farm.slave(m, "s1", args=["--max-builds", "2"])
    reqs = [m.force("slow") for _ in range(3)]
    peak = _watch_concurrency(m, "s1", reqs, 40)
    assert peak == 2, f"saw at most {peak} builds at once, expected 2"
    builds = [m.wait_request_done(r) for r in reqs]
    assert all(b["result"] == "SUCCESS" for b in builds)
    iv = _step_intervals(m, [b["id"] for b in builds])
    (s1, e1, _), (s2, e2, _), (s3, e3, _) = iv
    assert s2 < e1, f"the first two builds should overlap: {iv}"
    assert s3 >= min(e1, e2), f"a third build ran alongside two: {iv}"


@pytest.mark.timeout(120)
def test_concurrent_builds_of_one_builder_get_their_own_workdirs(farm):
    """max_builds 2 on one slave: two builds of one builder with a
    repository run at once, each in its own checkout (WORKDIR and
    WORKDIR@2, protocol.md "build_start"), and a later build reuses one of
    them instead of making a third."""
    from test_try import make_repos
    up, _ = make_repos(farm.tmp)
    m = farm.master(two_slave_config(
        [{"name": "co", "repository": str(up), "branch": "main", "steps": [
            {"name": "where", "command": "pwd; git status --short | wc -l;"
                                         " sleep 2"}]}],
        slaves=[{"name": "s1", "max_builds": 2}]))
    sl = farm.slave(m, "s1", args=["--max-builds", "2"])
    reqs = [m.force("co") for _ in range(3)]
    builds = [m.wait_request_done(r, 90) for r in reqs]
    assert [b["result"] for b in builds] == ["SUCCESS"] * 3, \
        [steps_summary(b) for b in builds]
    dirs = [m.step_log(b["id"], 1).decode().split("\n")[0] for b in builds]
    base = str(sl.basedir)
    assert sorted(set(dirs)) == [f"{base}/co", f"{base}/co@2"], dirs
    iv = sorted((s["started_ms"], s["finished_ms"]) for s in
                (m.build(b["id"])["steps"][1] for b in builds))
    assert iv[1][0] < iv[0][1], f"two builds should have overlapped: {iv}"
    for b in builds:
        assert m.step_log(b["id"], 1).decode().split("\n")[1] == "0", \
            "the checkout was not clean"
