"""Conformance: a build's events between a slave and a real tf-master
(docs/protocol.md "welcome", "ack", "drain", "Build events", "Order of a
build's events"). Each test sends one documented case from the scripted
slave and checks the documented answer: on the wire, and in the API where
the case is about what the master records."""

import pytest

from scripted_slave import ScriptedSlave, still_serves, wait_link_gone
from tfharness import steps_summary, wait_for


def config(**top):
    cfg = {"name": "conf", "heartbeat_s": 2, "lost_after_s": 30,
           "build_lost_after_s": 60, "max_retries": 3,
           "slaves": [{"name": "hand"}, {"name": "other"}],
           "builders": [
               {"name": "two", "slaves": ["hand"], "steps": [
                   {"name": "one", "command": "make"},
                   {"name": "two", "command": "make check"}]},
               {"name": "three", "slaves": ["hand"], "steps": [
                   {"name": "a", "command": "a"},
                   {"name": "b", "command": "b"},
                   {"name": "c", "command": "c"}]},
               {"name": "theirs", "slaves": ["other"], "steps": [
                   {"name": "x", "command": "x"}]}]}
    cfg.update(top)
    return cfg


def start_build(m, ss, builder="two"):
    """Forces builder; returns (request id, build_start)."""
    req = m.force(builder)
    return req, ss.recv_type("build_start")


def connected(m, farm, name="hand", **kw):
    ss = ScriptedSlave(m, name)
    ss.hello(**kw)
    m.wait_slave_connected(name)
    return ss


def request_state(m, req):
    return m.request_info(req)


# --- welcome: builds the slave lists, and builds it does not (point 1, 2) ---

def test_build_left_out_of_hello_ends_retry_and_is_requeued(farm):
    """welcome covers only the builds the slave lists; a running build it
    leaves out is ended RETRY "the slave came back without this build",
    and its request runs again."""
    m = farm.master(config())
    ss = connected(m, farm)
    req, bs = start_build(m, ss)
    bid = bs["build_id"]
    ss.step_started(bid, 0, "one")
    ss.wait_acked(bid, 1)
    ss.abort()
    wait_link_gone(m, "hand", farm)

    ss2 = ScriptedSlave(m, "hand")
    w = ss2.hello(running=[])
    assert w["resume"] == [] and w["abandon"] == [], w
    b = m.wait_build_finished(bid, 20)
    assert b["result"] == "RETRY", b
    assert b["text"] == "the slave came back without this build", b
    # The running step takes the build's end; the rest did not run.
    assert steps_summary(b) == [("one", "RETRY"), ("two", "SKIPPED")]
    assert b["steps"][1]["text"] == "not run", b["steps"][1]
    # Requeued: the same request comes back as a new build.
    again = ss2.recv_type("build_start")
    assert again["build_id"] != bid and again["builder"] == "two"
    r = request_state(m, req)
    assert r["retries"] == 1 and r["build_id"] == again["build_id"], r


def test_resume_is_the_committed_event_and_numbering_goes_on(farm):
    """welcome.resume.seq is what the master committed (never above what
    the slave reported); the slave resends after it, the master drops
    what it already has, and the slave numbers new events after its own
    highest."""
    m = farm.master(config())
    ss = connected(m, farm)
    req, bs = start_build(m, ss)
    bid = bs["build_id"]
    ss.step_started(bid, 0, "one")
    ss.output(bid, 0, b"first\n")
    ss.wait_acked(bid, 2)
    ss.abort()
    wait_link_gone(m, "hand", farm)

    # The slave produced event 3 (more output) while the link was down.
    ss2 = ScriptedSlave(m, "hand")
    w = ss2.hello(running=[{"build_id": bid, "seq": 3}])
    assert w["resume"] == [{"build_id": bid, "seq": 2}], w
    assert w["abandon"] == [], w
    # A resent event the master already has is dropped, not stored twice.
    ss2.output(bid, 0, b"first\n", seq=2)
    ss2.output(bid, 0, b"second\n", seq=3)
    ss2.step_finished(bid, 0)
    ss2.skipped(bid, 1)
    last = ss2.build_finished(bid)
    assert last == 6
    ss2.wait_acked(bid, last)
    b = m.wait_request_done(req, 20)
    assert b["result"] == "SUCCESS", b
    assert m.step_log(bid, 0) == b"first\nsecond\n"


def test_master_ahead_of_the_slave_abandons_and_retries(farm):
    """The slave reports seq 1 but the master has seq 3: the build is
    abandoned and ended RETRY with a text saying so, and requeued."""
    m = farm.master(config())
    ss = connected(m, farm)
    req, bs = start_build(m, ss)
    bid = bs["build_id"]
    ss.step_started(bid, 0, "one")
    ss.output(bid, 0, b"x\n")
    ss.output(bid, 0, b"y\n")
    ss.wait_acked(bid, 3)
    ss.abort()
    wait_link_gone(m, "hand", farm)

    ss2 = ScriptedSlave(m, "hand")
    w = ss2.hello(running=[{"build_id": bid, "seq": 1}])
    assert w["abandon"] == [bid] and w["resume"] == [], w
    b = m.wait_build_finished(bid, 20)
    assert b["result"] == "RETRY", b
    assert b["text"] == ("the slave came back with event 1 as its last, but "
                         "the master had event 3: its record of the build "
                         "was lost"), b
    again = ss2.recv_type("build_start")
    assert again["build_id"] != bid
    assert request_state(m, req)["retries"] == 1


# --- acks (point 3) ---

def test_acks_never_go_backwards_and_cover_only_sent_events(farm):
    """Every ack of a whole build, duplicates included, is checked by the
    scripted slave's reader: never down, never above what was sent."""
    m = farm.master(config())
    ss = connected(m, farm)
    req, bs = start_build(m, ss)
    bid = bs["build_id"]
    ss.step_started(bid, 0, "one")
    for i in range(30):
        ss.output(bid, 0, f"line {i}\n".encode())
    # Duplicates of events the master has: dropped, still covered.
    ss.output(bid, 0, b"line 3\n", seq=5)
    ss.output(bid, 0, b"line 0\n", seq=2)
    ss.step_finished(bid, 0)
    ss.skipped(bid, 1)
    last = ss.build_finished(bid)
    ss.wait_acked(bid, last)
    assert ss.acks and ss.acks[-1] == (bid, last)
    b = m.wait_request_done(req, 20)
    assert m.step_log(bid, 0) == b"".join(f"line {i}\n".encode()
                                          for i in range(30))


@pytest.mark.parametrize("whose", ["unknown", "another slave's",
                                   "after build_finished",
                                   "duplicate after build_finished"])
def test_events_for_a_build_not_run_here_are_refused_without_ack(farm,
                                                                   whose):
    """An event for a build the master does not run on this slave is
    malformed (4004): no ack for it, and nothing is stored."""
    m = farm.master(config())
    ss = connected(m, farm)
    if whose == "unknown":
        bid = 999
        ss.step_started(bid, 0, "one")
    elif whose == "another slave's":
        other = connected(m, farm, "other")
        req = m.force("theirs")
        theirs = other.recv_type("build_start")
        bid = theirs["build_id"]
        ss.step_started(bid, 0, "x")
    else:
        req, bs = start_build(m, ss)
        bid = bs["build_id"]
        last = ss.run_steps(bid, bs["steps"])
        ss.wait_acked(bid, last)
        m.wait_request_done(req, 20)
        if whose == "after build_finished":
            ss.output(bid, 1, b"late\n")
        else:
            ss.output(bid, 0, b"one\n", seq=2)
    before = ss.acked.get(bid, 0)
    err = ss.expect_refused("malformed", 4004)
    assert f"build {bid}" in err["message"], err
    assert ss.acked.get(bid, 0) == before, \
        f"the refused event was acknowledged: {ss.acks}"
    if whose == "another slave's":
        # The other slave's build is not disturbed.
        last = other.run_steps(bid, theirs["steps"])
        other.wait_acked(bid, last)
        assert m.wait_request_done(req, 20)["result"] == "SUCCESS"
    if whose == "unknown":
        assert m.api_get("/builds/999").status == 404
    still_serves(m)


# --- drain before RETRY (point 4) ---

def test_drain_before_retry_keeps_the_request_off_the_stopping_slave(farm):
    """Abort-mode shutdown: drain first, then RETRY. The request goes back
    in the queue without coming back to this link; a new connection gets
    it, and it has used one retry."""
    m = farm.master(config())
    ss = connected(m, farm)
    req, bs = start_build(m, ss)
    bid = bs["build_id"]
    ss.step_started(bid, 0, "one")
    ss.send_json({"type": "drain"})
    ss.step_finished(bid, 0, "RETRY", None, text="slave shut down")
    last = ss.build_finished(bid, "RETRY")
    ss.wait_acked(bid, last)
    b = m.wait_build_finished(bid, 20)
    assert b["result"] == "RETRY", b
    assert steps_summary(b) == [("one", "RETRY"), ("two", "SKIPPED")]
    wait_for(lambda: request_state(m, req)["state"] == "pending", 10,
             "the request to be pending again", farm)
    got = ss.quiet_for(2)
    assert not [x for x in got if x["type"] == "build_start"], got
    ss.close()
    wait_link_gone(m, "hand", farm)

    ss2 = connected(m, farm)
    again = ss2.recv_type("build_start")
    last = ss2.run_steps(again["build_id"], again["steps"])
    ss2.wait_acked(again["build_id"], last)
    assert m.wait_request_done(req, 20)["result"] == "SUCCESS"
    assert request_state(m, req)["retries"] == 1


def test_without_drain_the_retried_request_comes_straight_back(farm):
    """Why drain comes first: the same RETRY without it, and the master
    hands the request back to the same, stopping, slave at once."""
    m = farm.master(config())
    ss = connected(m, farm)
    req, bs = start_build(m, ss)
    bid = bs["build_id"]
    ss.step_started(bid, 0, "one")
    ss.step_finished(bid, 0, "RETRY", None, text="slave shut down")
    ss.build_finished(bid, "RETRY")
    again = ss.recv_type("build_start")
    assert again["build_id"] != bid
    assert request_state(m, req)["retries"] == 1


# --- steps left unreported (point 5) ---

@pytest.mark.parametrize("said,report,want,text", [
    ("SUCCESS", 1, "SUCCESS", None),
    ("RETRY", 1, "RETRY", None),
    ("EXCEPTION", 0, "EXCEPTION", None),
    ("RETRY", 0, "RETRY", "the slave did not take the build"),
])
def test_unreported_steps_are_skipped_and_the_slaves_result_counts(
        farm, said, report, want, text):
    m = farm.master(config())
    ss = connected(m, farm)
    req, bs = start_build(m, ss, "three")
    bid = bs["build_id"]
    for i in range(report):
        ss.step_started(bid, i, bs["steps"][i]["name"])
        ss.step_finished(bid, i)
    last = ss.build_finished(bid, said)
    ss.wait_acked(bid, last)
    b = m.wait_build_finished(bid, 20)
    assert b["result"] == want, b
    assert b["text"] == text, b
    names = ["a", "b", "c"]
    assert steps_summary(b) == [(n, "SUCCESS" if i < report else "SKIPPED")
                                for i, n in enumerate(names)]
    for s in b["steps"][report:]:
        assert s["state"] == "done" and s["text"] == "not run", s
    r = request_state(m, req)
    if want == "RETRY":
        assert r["retries"] == 1 and r["state"] in ("pending", "running"), r
    else:
        assert r["state"] == "done" and r["result"] == want, r


# --- one ordering rule (point 6) ---

TEST_RESULTS_0 = {"type": "test_results", "step": 0, "format": "junit",
                  "results": [], "last": True, "total": 0}


def _ordering_case(ss, bid, case):
    """Sends the events of case; the last one breaks the rule."""
    if case == "step_finished FAILURE without step_started":
        ss.step_finished(bid, 0, "FAILURE", 1)
    elif case == "step 1 started before step 0":
        ss.step_started(bid, 1, "two")
    elif case == "step 1 skipped before step 0":
        ss.skipped(bid, 1)
    elif case == "the same step started twice":
        ss.step_started(bid, 0, "one")
        ss.step_started(bid, 0, "one")
    elif case == "a second step starts while the first runs":
        ss.step_started(bid, 0, "one")
        ss.step_started(bid, 1, "two")
    elif case == "step_finished for another step than the running one":
        ss.step_started(bid, 0, "one")
        ss.step_finished(bid, 1)
    elif case == "output for a step that is not running":
        ss.step_started(bid, 0, "one")
        ss.step_finished(bid, 0)
        ss.output(bid, 0, b"late\n")
    elif case == "output before any step_started":
        ss.output(bid, 0, b"early\n")
    elif case == "test_results for a step that is not running":
        ss.step_started(bid, 0, "one")
        ss.step_finished(bid, 0)
        ss.event(bid, TEST_RESULTS_0)
    elif case == "build_finished while a step runs":
        ss.step_started(bid, 0, "one")
        ss.build_finished(bid)
    elif case == "step_finished for a step past the last":
        ss.skipped(bid, 0)
        ss.skipped(bid, 1)
        ss.skipped(bid, 2)
    elif case == "a gap in seq":
        ss.step_started(bid, 0, "one")
        ss.output(bid, 0, b"x\n", seq=5)
    else:
        raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "step_finished FAILURE without step_started",
    "step 1 started before step 0",
    "step 1 skipped before step 0",
    "the same step started twice",
    "a second step starts while the first runs",
    "step_finished for another step than the running one",
    "output for a step that is not running",
    "output before any step_started",
    "test_results for a step that is not running",
    "build_finished while a step runs",
    "step_finished for a step past the last",
    "a gap in seq",
])
def test_events_out_of_order_are_malformed(farm, case):
    m = farm.master(config())
    ss = connected(m, farm)
    req, bs = start_build(m, ss)
    bid = bs["build_id"]
    _ordering_case(ss, bid, case)
    err = ss.expect_refused("malformed", 4004)
    want = "(gap)" if case == "a gap in seq" else "out of order"
    assert f"build {bid}" in err["message"] and want in err["message"], err
    still_serves(m)


def test_skipped_steps_need_no_step_started(farm):
    """The rule's other side: a step that did not run is one
    step_finished SKIPPED, and the next step may then run, its output and
    test_results coming between its step_started and step_finished."""
    m = farm.master(config())
    ss = connected(m, farm)
    req, bs = start_build(m, ss)
    bid = bs["build_id"]
    ss.skipped(bid, 0)
    ss.step_started(bid, 1, "two")
    ss.output(bid, 1, b"ok\n", stream=2)
    ss.event(bid, dict(TEST_RESULTS_0, step=1))
    ss.step_finished(bid, 1)
    last = ss.build_finished(bid)
    ss.wait_acked(bid, last)
    b = m.wait_request_done(req, 20)
    assert steps_summary(b) == [("one", "SKIPPED"), ("two", "SUCCESS")]
    assert b["result"] == "SUCCESS"
