"""The live feed (/live, subprotocol testfarm-live) as a tool would use it,
without a browser: subscribing, the events of a build from queueing to its
end, a step's output as log events that rebuild the stored log, and the
errors for bad frames (docs/api.md, "Live feed")."""

import base64
import time

from tfharness import WSClient, scaled, shell_step, simple_builder


def config():
    return {"name": "live", "slaves": [{"name": "s1"}],
            "builders": [simple_builder("talk", [
                shell_step("count", "for i in $(seq 1 40); do echo line $i; "
                           "sleep 0.05; done; printf 'no newline'"),
                shell_step("after", "echo done")])]}


def live_client(farm, m):
    ws = WSClient(m.port, path="/live", protocol="testfarm-live", farm=farm)
    ws.connect()
    assert ws.status == 101, ws.status
    return ws


def subscribe(ws, topics):
    ws.send_json({"subscribe": topics})
    msg = ws.recv_json()
    assert msg == {"type": "subscribed", "topics": msg["topics"]}, msg
    for t in topics:
        assert t in msg["topics"], (t, msg)
    return msg


def test_build_events_and_log_events_rebuild_the_log(farm):
    m = farm.master(config())
    ws = live_client(farm, m)
    subscribe(ws, ["builds", "requests", "slaves"])
    farm.slave(m, "s1")
    req = m.force("talk")

    events, build_id, log = [], None, {}
    deadline = time.monotonic() + scaled(60)
    while time.monotonic() < deadline:
        msg = ws.recv_json(timeout=scaled(30))
        events.append(msg)
        if msg["type"] == "build" and build_id is None:
            build_id = msg["build"]["id"]
            # The answer comes among the events: the loop reads it.
            ws.send_json({"subscribe": [f"log:{build_id}:0"]})
        if msg["type"] == "log":
            assert msg["build_id"] == build_id and msg["step"] == 0, msg
            log[msg["offset"]] = base64.b64decode(msg["data"])
        if msg["type"] == "build" and msg["event"] == "finished":
            break
    answers = [e for e in events if e["type"] == "subscribed"]
    assert len(answers) == 1 and f"log:{build_id}:0" in \
        answers[0]["topics"], answers
    kinds = [(e["type"], e.get("event")) for e in events]
    assert ("slave", "connected") in kinds, kinds
    assert ("request", "queued") in kinds, kinds
    assert ("request", "started") in kinds, kinds
    order = [k for k in kinds if k[0] == "build"]
    assert order[0] in (("build", "created"), ("build", "started")), order
    assert order[-1] == ("build", "finished"), order
    fin = [e for e in events if e["type"] == "build"][-1]["build"]
    assert fin["result"] == "SUCCESS" and fin["id"] == build_id, fin
    reqs = [e["request"] for e in events if e["type"] == "request"]
    assert all(r["id"] == req for r in reqs), reqs
    steps = [(e["step"]["index"], e["step"]["state"]) for e in events
             if e["type"] == "step"]
    assert (0, "running") in steps and (1, "done") in steps, steps
    done1 = [e["step"] for e in events
             if e["type"] == "step" and e["step"]["state"] == "done"]
    assert all(s["result"] == "SUCCESS" for s in done1), done1

    # The log events, placed at their offsets, are the stored log from the
    # first offset seen on (the subscription began after the step did).
    assert log, "no log events arrived"
    stored = m.step_log(build_id, 0)
    start = min(log)
    rebuilt = bytearray(stored[:start])
    for off in sorted(log):
        assert off <= len(rebuilt), (off, len(rebuilt))
        rebuilt[off:off + len(log[off])] = log[off]
    assert bytes(rebuilt) == stored, (len(rebuilt), len(stored))
    assert stored.endswith(b"line 40\nno newline"), stored[-40:]
    ws.close()


def test_bad_frames_get_errors_and_the_link_stays(farm):
    m = farm.master(config())
    ws = live_client(farm, m)

    ws.send_text("this is not json")
    err = ws.recv_json()
    assert err["type"] == "error" and err["message"], err
    ws.send_json({"subscribe": ["no-such-topic"]})
    err = ws.recv_json()
    assert err["type"] == "error" and "no-such-topic" in err["message"], err
    ws.send_json({"subscribe": ["log:x:0"]})
    err = ws.recv_json()
    assert err["type"] == "error" and "log:x:0" in err["message"], err
    ws.send_json({"subscribe": "builds"})
    err = ws.recv_json()
    assert err["type"] == "error", err

    # At most 64 topics per connection.
    many = [f"log:{i}:0" for i in range(1, 66)]
    ws.send_json({"subscribe": many})
    err = ws.recv_json()
    assert err["type"] == "error" and "64" in err["message"], err

    # Still up, and unsubscribing works: after unsubscribing "requests",
    # a forced build's request events no longer come, its build events do.
    # The refused 65 added none of theirs.
    assert subscribe(ws, ["builds", "requests"])["topics"] == \
        ["builds", "requests"]
    ws.send_json({"unsubscribe": ["requests"]})
    msg = ws.recv_json()
    assert msg["type"] == "subscribed" and "requests" not in msg["topics"], \
        msg
    farm.slave(m, "s1")
    m.force("talk")
    seen = []
    while True:
        msg = ws.recv_json(timeout=scaled(30))
        seen.append(msg["type"])
        if msg["type"] == "build" and msg["event"] == "finished":
            break
    assert "request" not in seen and "build" in seen, seen
    ws.close()
