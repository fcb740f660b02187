"""Builds and requests over their whole life: cancelling, a slave that
shuts down (finish or abort), a slave that never comes back, requests
that survive a master restart, properties of a forced build."""

import json
import signal
import sqlite3

import pytest

from tfharness import live_pids_in_group, pgid_of, pid_alive, \
    steps_summary, wait_for


def config(**top):
    cfg = {"name": "it", "heartbeat_s": 1, "lost_after_s": 4,
           "slaves": [{"name": "s1"}, {"name": "s2"}],
           "builders": [
               {"name": "quick", "steps": [
                   {"name": "hi", "command": "echo hi $TF_BUILDER"}]},
               {"name": "slow", "slaves": ["s1"], "steps": [
                   {"name": "first", "command": "echo first"},
                   {"name": "nap", "command": "echo napping; sleep 4; "
                                              "echo woke"},
                   {"name": "last", "command": "echo last",
                    "alwaysRun": True}]}]}
    cfg.update(top)
    return cfg


@pytest.mark.timeout(90)
def test_cancel_a_running_build(farm):
    pids = farm.tmp / "pids"
    cfg = config()
    cfg["builders"].append({"name": "hang", "slaves": ["s1"], "steps": [
        {"name": "hang", "command":
            f"sleep 1000 & echo $! >> {pids}; echo $$ >> {pids}; "
            "echo hanging; exec sleep 1000"},
        {"name": "later", "command": "echo SHOULD NOT RUN"},
        {"name": "cleanup", "command": "echo SHOULD NOT RUN", "alwaysRun":
            True}]})
    m = farm.master(cfg)
    farm.slave(m, "s1")
    req = m.force("hang")
    bid = m.wait_build_started(req)
    m.wait_step_running(bid, 0, min_bytes=len("hanging\n"))
    got = wait_for(lambda: pids.exists() and
                   len(pids.read_text().split()) >= 2 and
                   [int(x) for x in pids.read_text().split()], 10,
                   "the step's pids", farm)
    pgid = pgid_of(got[1])

    assert m.api_post(f"/builds/{bid}/cancel", token=None).status == 401
    r = m.api_post(f"/builds/{bid}/cancel")
    assert r.status == 202 and r.json()["state"] == "cancelling", r
    b = m.wait_build_finished(bid, 30)
    assert b["result"] == "CANCELLED", steps_summary(b)
    assert steps_summary(b) == [("hang", "CANCELLED"), ("later", "SKIPPED"),
                                ("cleanup", "SKIPPED")]
    assert m.step_log(bid, 0) == b"hanging\n"
    wait_for(lambda: not [p for p in got if pid_alive(p)] and
             not live_pids_in_group(pgid), 10,
             "the cancelled step's processes to be gone", farm)
    req_info = m.request_info(req)
    assert req_info["state"] in ("done", "cancelled"), req_info
    assert req_info["result"] == "CANCELLED", req_info
    assert m.api_post(f"/builds/{bid}/cancel").status == 409
    # The slave is free again.
    assert m.run_build("quick")["result"] == "SUCCESS"


def test_cancel_a_pending_request(farm):
    m = farm.master(config())
    req = m.force("quick")
    assert m.request_info(req)["state"] == "pending"
    q = m.get_json("/requests")["requests"]
    assert [x["id"] for x in q] == [req] and q[0]["position"] == 1, q
    r = m.api_post(f"/requests/{req}/cancel")
    assert r.status == 200 and r.json()["state"] == "cancelled", r
    assert m.get_json("/requests")["requests"] == []
    assert m.request_info(req)["state"] == "cancelled"
    farm.slave(m, "s1")
    # Nothing runs: the only request was cancelled.
    b = m.run_build("quick")
    assert b["number"] == 1, "the cancelled request must not have run"


def test_the_queue_is_paged(farm):
    """GET /api/v1/requests answers at most `limit` rows (default and
    most 5000) from `offset`, with the queue's `total` and the next page's
    `next_offset` (null on the last); the pages together are the whole
    queue in order, positions included; bad values are 400."""
    m = farm.master(config())
    reqs = [m.force("quick") for _ in range(7)]
    whole = m.get_json("/requests")
    assert [x["id"] for x in whole["requests"]] == reqs, whole
    assert whole["total"] == 7 and whole["next_offset"] is None, whole
    got, offset, pages = [], 0, 0
    while offset is not None:
        page = m.get_json(f"/requests?limit=3&offset={offset}")
        assert page["total"] == 7, page
        assert len(page["requests"]) == (3 if pages < 2 else 1), page
        got += page["requests"]
        offset = page["next_offset"]
        pages += 1
    assert pages == 3 and got == whole["requests"], got
    assert [x["position"] for x in got] == list(range(1, 8))
    page = m.get_json("/requests?builder=quick&kind=ci&limit=2&offset=5")
    assert [x["id"] for x in page["requests"]] == reqs[5:], page
    assert page["next_offset"] is None
    past = m.get_json("/requests?offset=50")
    assert past["requests"] == [] and past["total"] == 7 and \
        past["next_offset"] is None, past
    assert m.get_json("/requests?kind=try")["total"] == 0
    for q, what in [("limit=0", "limit"), ("limit=5001", "limit"),
                    ("limit=many", "limit"), ("offset=-1", "offset"),
                    ("offset=x", "offset")]:
        r = m.get(f"/api/v1/requests?{q}")
        assert r.status == 400, (q, r)
        assert f"parameter {what}=" in r.error_message(), (q, r)


@pytest.mark.timeout(90)
def test_slave_sigterm_finishes_the_running_build_then_exits_0(farm):
    m = farm.master(config())
    s1 = farm.slave(m, "s1")
    req = m.force("slow")
    bid = m.wait_build_started(req)
    m.wait_step_running(bid, 1, min_bytes=len("napping\n"))
    s1.signal(signal.SIGTERM)
    wait_for(lambda: m.slave_info("s1")["draining"], 5,
             "s1 to be shown draining", farm)
    # No new work goes to a draining slave.
    other = m.force("slow")
    b = m.wait_build_finished(bid, 30)
    assert b["result"] == "SUCCESS", steps_summary(b)
    assert m.step_log(bid, 1) == b"napping\nwoke\n"
    assert s1.wait_exit(30) == 0
    assert m.request_info(other)["state"] == "pending"
    assert m.request_info(other)["build_id"] is None


@pytest.mark.timeout(90)
def test_slave_sigterm_abort_mode_retries_the_build(farm):
    m = farm.master(config())
    s1 = farm.slave(m, "s1", args=["--on-sigterm", "abort"])
    req = m.force("slow")
    bid = m.wait_build_started(req)
    m.wait_step_running(bid, 1, min_bytes=len("napping\n"))
    s1.signal(signal.SIGTERM)
    assert s1.wait_exit(30) == 0
    b = m.wait_build_finished(bid, 20)
    assert b["result"] == "RETRY", steps_summary(b)
    assert b["steps"][1]["result"] == "RETRY", steps_summary(b)
    # Back in the queue, waiting for a slave; not handed again to the
    # slave that is shutting down, not given up.
    wait_for(lambda: m.request_info(req)["state"] == "pending", 5,
             f"request {req} to be pending again", farm)
    farm.slave(m, "s1")
    final = m.wait_request_done(req, 40)
    assert final["result"] == "SUCCESS", final
    numbers = [x["number"] for x in
               m.get_json("/builders/slow/builds")["builds"]]
    assert numbers == [2, 1], (
        "expected build 1 (RETRY) and build 2 (SUCCESS) only; builds "
        f"{numbers} exist: the master sent builds to the slave that was "
        "shutting down")


@pytest.mark.timeout(90)
def test_build_of_a_slave_that_never_returns_is_retried_elsewhere(farm):
    cfg = config(build_lost_after_s=3)
    cfg["builders"].append({"name": "either", "slaves": ["s1", "s2"],
                            "steps": [{"name": "nap", "command":
                                       "echo on $TF_BUILD_ID; sleep 3"}]})
    m = farm.master(cfg)
    s1 = farm.slave(m, "s1")
    req = m.force("either")
    bid = m.wait_build_started(req)
    m.wait_step_running(bid, 0, min_bytes=1)
    first_slave = m.build(bid)["slave"]
    assert first_slave == "s1"
    s1.kill9()
    farm.slave(m, "s2")
    b = m.wait_build_finished(bid, 20)
    assert b["result"] == "RETRY", b
    assert "s1" in (b["text"] or ""), b
    final = m.wait_request_done(req, 30)
    assert final["slave"] == "s2" and final["result"] == "SUCCESS", final


@pytest.mark.timeout(60)
def test_pending_requests_survive_a_master_restart(farm):
    m = farm.master(config())
    reqs = [m.force("quick", reason=f"r{i}") for i in range(3)]
    m.stop()
    m.start()
    q = m.get_json("/requests")["requests"]
    assert [x["id"] for x in q] == reqs, q
    assert [x["position"] for x in q] == [1, 2, 3], q
    farm.slave(m, "s1")
    builds = [m.wait_request_done(r, 30) for r in reqs]
    assert [b["result"] for b in builds] == ["SUCCESS"] * 3
    assert [b["reason"] for b in builds] == ["r0", "r1", "r2"]
    assert [b["number"] for b in builds] == [1, 2, 3]


def test_forced_properties_reach_the_build(farm):
    m = farm.master(config())
    farm.slave(m, "s1")
    req = m.force("quick", reason="with props",
                  properties={"branch": "feature-x"})
    b = m.wait_request_done(req)
    assert b["result"] == "SUCCESS"
    props = b["properties"]
    assert props["branch"] == "feature-x", props
    assert props["builder"] == "quick" and props["slave"] == "s1", props
    assert props["buildnumber"] == str(b["number"]), props
    assert m.step_log(b["id"], 0) == b"hi quick\n"
    assert b["reason"] == "with props"


@pytest.mark.timeout(90)
def test_property_values_never_run_as_shell_code(farm):
    """A property is data: in a shell-string command each value is one
    shell word whatever its quoting context (config.md, "Properties"), in
    an argv command it stays one argv element, and neither runs."""
    canary = farm.tmp / "injected"
    cfg = config()
    cfg["builders"].append({"name": "inj", "steps": [
        {"name": "bare", "command": "echo extra=%(prop:extra:-none)s"},
        {"name": "quoted", "command":
            "printf '[%s]' \"%(prop:extra)s\" '%(prop:extra)s'"},
        {"name": "argv", "command": ["printf", "[%s]",
                                     "%(prop:extra)s"]}]})
    m = farm.master(cfg)
    farm.slave(m, "s1")
    for value in ["x; echo INJECTED-$((6*7)); echo",
                  f"$(touch {canary})' \"`touch {canary}`\" '"]:
        b = m.wait_request_done(m.force("inj", properties={"extra": value}))
        assert b["result"] == "SUCCESS", steps_summary(b)
        assert m.step_log(b["id"], 0) == f"extra={value}\n".encode()
        assert m.step_log(b["id"], 1) == f"[{value}][{value}]".encode()
        assert m.step_log(b["id"], 2) == f"[{value}]".encode()
    assert not canary.exists()


@pytest.mark.timeout(120)
def test_build_start_template_follows_each_build_and_each_reload(farm):
    """A builder's build_start is rendered once and then spliced per build
    (master/core/build.c): every build still gets its own number and
    slave, and a reload that changes how a property is quoted (the same
    text as a shell string, then as the script of an explicit
    /bin/sh -c argv) or its value changes what the next build runs."""
    shell = "printf '[%s]' %(prop:q)s"
    cfg = config()
    cfg["builders"].append({"name": "tpl", "properties": {"q": "a  b"},
                            "steps": [{"name": "p", "command": shell}]})
    m = farm.master(cfg)
    farm.slave(m, "s1")
    farm.slave(m, "s2")
    seen = set()
    for _ in range(3):
        b = m.wait_request_done(m.force("tpl"))
        assert b["result"] == "SUCCESS", steps_summary(b)
        props = b["properties"]
        assert props["buildnumber"] == str(b["number"]), props
        assert props["slave"] == b["slave"], props
        assert m.step_log(b["id"], 0) == b"[a  b]"  # one shell word
        seen.add(b["number"])
    assert len(seen) == 3

    n = m.log_text().count("config reloaded")
    cfg["builders"][-1]["steps"] = [
        {"name": "p", "command": ["/bin/sh", "-c", shell]}]
    m.write_config(cfg)
    m.sighup()
    wait_for(lambda: m.log_text().count("config reloaded") > n, 20,
             "the first reload", farm)
    b = m.wait_request_done(m.force("tpl"))
    # An argv element is not quoted: the shell splits the value.
    assert m.step_log(b["id"], 0) == b"[a][b]", steps_summary(b)

    cfg["builders"][-1]["properties"] = {"q": "c"}
    m.write_config(cfg)
    m.sighup()
    wait_for(lambda: m.log_text().count("config reloaded") > n + 1, 20,
             "the second reload", farm)
    b = m.wait_request_done(m.force("tpl"))
    assert m.step_log(b["id"], 0) == b"[c]", steps_summary(b)


@pytest.mark.timeout(90)
def test_rows_of_a_template_shaped_build_are_stored_as_computed(farm):
    """A forced build without properties takes its rows (the builds row's
    properties, each step's name, command and flags) from its builder's
    rows template (master/core/build.c); one with a property of its own
    computes them through jansson. Both store compact JSON with sorted
    keys, the commands with the builder's properties interpolated, the
    same steps rows, and each build its own number and slave."""
    cfg = config()
    cfg["builders"].append({
        "name": "rows", "properties": {"cc": "gcc -O2", "q": "it's \"q\""},
        "steps": [
            {"name": "cfg", "command": "echo CC=%(prop:cc)s %(prop:builder)s",
             "haltOnFailure": True},
            {"name": "argv", "command": ["echo", "%(prop:q)s", "x/y"],
             "env": {"Q": "%(prop:q)s"}, "flunkOnWarnings": True},
            {"name": "last", "command": "true", "alwaysRun": True}]})
    m = farm.master(cfg)
    farm.slave(m, "s1")
    farm.slave(m, "s2")
    builds = [m.wait_request_done(m.force("rows")) for _ in range(3)]
    builds.append(m.wait_request_done(m.force("rows",
                                              properties={"x": "y"})))
    assert [b["result"] for b in builds] == ["SUCCESS"] * 4, \
        [steps_summary(b) for b in builds]
    assert "builder rows: build_start template for shape" in m.log_text()
    assert "rows made" in m.log_text()
    if not m.db_path.exists():
        pytest.skip("the steps' commands are read from an sqlite database")
    con = sqlite3.connect(f"file:{m.db_path}?mode=ro", uri=True)
    try:
        stored = {b["id"]: con.execute(
            "SELECT properties FROM builds WHERE id = ?",
            (b["id"],)).fetchone()[0] for b in builds}
        steps = {b["id"]: con.execute(
            "SELECT idx, name, command, flags FROM steps WHERE build_id = ? "
            "ORDER BY idx", (b["id"],)).fetchall() for b in builds}
    finally:
        con.close()
    for b in builds:
        props = json.loads(stored[b["id"]])
        assert stored[b["id"]] == json.dumps(
            props, sort_keys=True, separators=(",", ":"),
            ensure_ascii=False), stored[b["id"]]
        assert props["buildnumber"] == str(b["number"]), props
        assert props["slave"] == b["slave"], props
        assert props["builder"] == "rows" and props["q"] == "it's \"q\""
        assert props.get("x") == ("y" if b is builds[-1] else None), props
    want = [(0, "cfg", json.dumps(["/bin/sh", "-c",
                                   "echo CC='gcc -O2' 'rows'"],
                                  separators=(",", ":"))),
            (1, "argv", json.dumps(["echo", "it's \"q\"", "x/y"],
                                   separators=(",", ":"))),
            (2, "last", json.dumps(["/bin/sh", "-c", "true"],
                                   separators=(",", ":")))]
    for b in builds:
        assert [row[:3] for row in steps[b["id"]]] == want, steps[b["id"]]
        # The template's steps rows are the jansson path's, flags too.
        assert steps[b["id"]] == steps[builds[-1]["id"]]
    assert steps[builds[0]["id"]][0][3] & 1  # haltOnFailure
    assert steps[builds[0]["id"]][1][3] & 8  # flunkOnWarnings
    assert steps[builds[0]["id"]][2][3] & 32  # alwaysRun
