"""The slave protocol from the outside: a hand-written slave (tfharness's
websocket client, written from docs/protocol.md) talks to a real master,
and a fake master talks to a real tf-slave. Malformed input must get the
documented error and close code, and never take the master down."""

import json
import re
import socket
import threading
import time

import pytest

from tfharness import (OP_BINARY, OP_CONT, OP_TEXT, HandSlave, FakeMaster, WSClient,
                       WSClosed, output_frame, steps_summary, wait_for,
                       ws_encode_frame)


def config(**top):
    cfg = {"name": "it", "heartbeat_s": 2, "lost_after_s": 6,
           "slaves": [{"name": "s1"}, {"name": "hand"}],
           "builders": [
               {"name": "quick", "slaves": ["s1"],
                "steps": [{"name": "hi", "command": "echo hi"}]},
               {"name": "byhand", "slaves": ["hand"], "steps": [
                   {"name": "one", "command": "make check", "timeout": 30,
                    "haltOnFailure": True, "env": {"A": "b"}},
                   {"name": "two", "command": ["echo", "x y"],
                    "alwaysRun": True, "workdir": "sub"}]}]}
    cfg.update(top)
    return cfg


def expect_error(ws, code, close_code, timeout=10, strict=False):
    """Reads the next message, which must be an error with this code, then
    waits for the master to close the link. With strict, the close must be
    a WebSocket close frame carrying close_code (test_error_close_codes
    checks that for every code; the other tests only need the link gone).
    Returns the error message."""
    msg = ws.recv_json(timeout)
    while msg["type"] == "ack":  # for events sent before the bad one
        msg = ws.recv_json(timeout)
    assert msg["type"] == "error", msg
    assert msg["code"] == code, msg
    assert isinstance(msg.get("message"), str) and msg["message"], msg
    got = ws.wait_closed(timeout)
    if strict:
        assert got == close_code, \
            f"close code {got}, expected {close_code} after error {code}"
    else:
        assert got in (close_code, None), \
            f"close code {got}, expected {close_code} after error {code}"
    return msg


def master_still_serves(m, farm):
    assert m.get("/api/v1/master").status == 200
    if not m.slave_connected("s1"):
        farm.slave(m, "s1")
    b = m.run_build("quick")
    assert b["result"] == "SUCCESS", b


def recv_type(ws, want, timeout=15):
    """The next message of type want, skipping acks and pings."""
    while True:
        msg = ws.recv_json(timeout)
        if msg["type"] == want:
            return msg
        assert msg["type"] in ("ack",), f"expected {want}, got {msg}"


def wait_acked(ws, build_id, seq, timeout=15):
    top = 0
    while top < seq:
        msg = ws.recv_json(timeout)
        assert msg["type"] == "ack", msg
        assert msg["build_id"] == build_id, msg
        assert msg["seq"] >= top, f"acks went backwards: {msg}"
        top = msg["seq"]
    return top


def test_challenge_and_welcome(farm):
    m = farm.master(config())
    hs = HandSlave(m, "hand").handshake()
    ch = hs.challenge
    assert ch["protocol"] == 1
    assert re.fullmatch(r"[0-9a-f]{64}", ch["nonce"]), ch
    assert hs.response_headers.get("sec-websocket-protocol") == \
        "testfarm-slave"
    w = hs.welcome
    assert w["slave"] == "hand" and w["resume"] == [] and \
        w["abandon"] == [], w
    assert w["heartbeat_s"] == 2
    m.wait_slave_connected("hand")
    info = m.slave_info("hand")
    assert info["version"] == "handslave 1" and info["platform"] == "python"
    # A second connection gets a fresh nonce.
    hs2 = WSClient(m.port, farm=farm).connect()
    assert hs2.recv_json()["nonce"] != ch["nonce"]


def test_handwritten_slave_runs_a_build(farm):
    m = farm.master(config())
    hs = HandSlave(m, "hand").handshake()
    m.wait_slave_connected("hand")
    req = m.force("byhand")
    start = recv_type(hs, "build_start")
    bid = start["build_id"]
    assert start["builder"] == "byhand" and start["workdir"] == "byhand"
    assert start["number"] == 1
    assert start["properties"]["builder"] == "byhand", start
    one, two = start["steps"]
    assert one["name"] == "one"
    assert one["command"] == ["/bin/sh", "-c", "make check"]
    assert one["env"] == {"A": "b"} and one["workdir"] == ""
    assert one["timeout_s"] == 30 and one["max_time_s"] == 0
    assert one["haltOnFailure"] is True and one["flunkOnFailure"] is True
    assert one["alwaysRun"] is False
    assert two["command"] == ["echo", "x y"] and two["workdir"] == "sub"
    assert two["alwaysRun"] is True and two["timeout_s"] == 1200

    out1, out2 = b"compiling \xff\x00\n", b"warning: on stderr\n"
    hs.send_json({"type": "step_started", "build_id": bid, "seq": 1,
                  "step": 0, "name": "one", "time_ms": 1795000000000})
    hs.send_binary(output_frame(bid, 0, 2, out1, stream=1))
    hs.send_binary(output_frame(bid, 0, 3, out2, stream=2))
    # A duplicate (seq already accepted) is ignored, not stored twice.
    hs.send_binary(output_frame(bid, 0, 2, out1, stream=1))
    hs.send_json({"type": "step_finished", "build_id": bid, "seq": 4,
                  "step": 0, "result": "SUCCESS", "exit_code": 0,
                  "signal": None, "timed_out": False, "duration_ms": 5,
                  "time_ms": 1795000000005, "text": "exit 0"})
    hs.send_json({"type": "step_started", "build_id": bid, "seq": 5,
                  "step": 1, "name": "two", "time_ms": 1795000000006,
                  "unknown_field_is_ignored": True})
    hs.send_binary(output_frame(bid, 1, 6, b"x y\n"))
    hs.send_json({"type": "step_finished", "build_id": bid, "seq": 7,
                  "step": 1, "result": "SUCCESS", "exit_code": 0,
                  "signal": None, "timed_out": False, "duration_ms": 1,
                  "time_ms": 1795000000007, "text": "exit 0"})
    # The master recomputes the result; the slave's is informational.
    hs.send_json({"type": "build_finished", "build_id": bid, "seq": 8,
                  "result": "FAILURE", "time_ms": 1795000000008})
    wait_acked(hs, bid, 8)
    b = m.wait_request_done(req, 20)
    assert b["id"] == bid and b["slave"] == "hand"
    assert steps_summary(b) == [("one", "SUCCESS"), ("two", "SUCCESS")]
    assert b["result"] == "SUCCESS", b
    assert m.step_log(bid, 0) == out1 + out2
    assert m.step_log(bid, 1) == b"x y\n"
    assert b["steps"][0]["duration_ms"] == 5


def test_hand_slave_reports_a_halting_failure(farm):
    m = farm.master(config())
    hs = HandSlave(m, "hand").handshake()
    m.wait_slave_connected("hand")
    req = m.force("byhand")
    bid = recv_type(hs, "build_start")["build_id"]
    events = [
        {"type": "step_started", "step": 0, "name": "one",
         "time_ms": 1795000000000},
        {"type": "step_finished", "step": 0, "result": "FAILURE",
         "exit_code": 2, "signal": None, "timed_out": False,
         "duration_ms": 3, "time_ms": 1795000000003, "text": "exit 2"},
        {"type": "step_started", "step": 1, "name": "two",
         "time_ms": 1795000000004},
        {"type": "step_finished", "step": 1, "result": "SUCCESS",
         "exit_code": 0, "signal": None, "timed_out": False,
         "duration_ms": 1, "time_ms": 1795000000005, "text": "exit 0"},
        {"type": "build_finished", "result": "FAILURE",
         "time_ms": 1795000000006},
    ]
    for seq, ev in enumerate(events, 1):
        hs.send_json(dict(ev, build_id=bid, seq=seq))
    wait_acked(hs, bid, len(events))
    b = m.wait_request_done(req, 20)
    assert steps_summary(b) == [("one", "FAILURE"), ("two", "SUCCESS")]
    assert b["result"] == "FAILURE"
    assert b["steps"][0]["exit_code"] == 2


def test_protocol_version_mismatch(farm):
    m = farm.master(config())
    hs = HandSlave(m, "hand").handshake(protocol=2, expect_welcome=False)
    err = expect_error(hs, "protocol_version", 4003)
    assert re.search(r"\b1\b", err["message"]) and \
        re.search(r"\b2\b", err["message"]), err
    assert not m.slave_connected("hand")
    refused = wait_for(lambda: [e for e in m.slave_info("hand")["events"]
                                if e["event"] == "refused"], 5,
                       "a refused event", farm)
    assert "protocol" in (refused[0]["detail"] or ""), refused
    master_still_serves(m, farm)


def test_tf_slave_stops_on_a_master_speaking_another_version(farm):
    fake = FakeMaster(farm, {"type": "challenge", "protocol": 2,
                             "nonce": "ab" * 32, "master": "fake 9"})
    m = farm.master(config(), start=False)
    s = farm.slave(m, "s1", start=False,
                   url=f"ws://127.0.0.1:{fake.port}")
    s.start(wait_connected=False)
    rc = s.wait_exit(20)
    assert rc == 5, f"tf-slave exited {rc}, expected 5\n{s.log_text()}"
    log = s.log_text()
    line = [x for x in log.splitlines() if "protocol" in x.lower()]
    assert line and any(re.search(r"\b1\b", x) and re.search(r"\b2\b", x)
                        for x in line), log
    assert fake.connections == 1, "the slave must not retry"


@pytest.mark.parametrize("what,frame", [
    ("not JSON", "this is not json {"),
    ("a JSON array", "[1, 2, 3]"),
    ("no type", '{"protocol": 1}'),
    ("type not a string", '{"type": 7}'),
    ("unknown type", '{"type": "launch_missiles"}'),
    ("pong before hello", '{"type": "pong", "id": 1}'),
    ("hello without auth", '{"type": "hello", "protocol": 1, '
     '"slave": "hand", "version": "x", "platform": "y", "tags": [], '
     '"max_builds": 1, "running": []}'),
    ("hello with wrong field type", '{"type": "hello", "protocol": "1", '
     '"slave": "hand", "auth": "00", "version": "x", "platform": "y", '
     '"tags": [], "max_builds": 1, "running": []}'),
])
def test_malformed_first_message(farm, what, frame):
    m = farm.master(config())
    ws = WSClient(m.port, farm=farm).connect()
    assert ws.recv_json()["type"] == "challenge"
    ws.send_text(frame)
    expect_error(ws, "malformed", 4004)
    assert m.get("/api/v1/master").status == 200


def test_binary_frame_before_hello_is_malformed(farm):
    m = farm.master(config())
    ws = WSClient(m.port, farm=farm).connect()
    ws.recv_json()
    ws.send_binary(output_frame(1, 0, 1, b"x"))
    expect_error(ws, "malformed", 4004)


@pytest.mark.parametrize("what", [
    "unknown type", "not json", "bad kind", "truncated", "too long",
    "seq gap", "zero length"])
def test_malformed_messages_on_a_ready_link(farm, what):
    m = farm.master(config())
    hs = HandSlave(m, "hand").handshake()
    m.wait_slave_connected("hand")
    bid = None
    if what in ("bad kind", "truncated", "too long", "seq gap",
                "zero length"):
        m.force("byhand")
        bid = recv_type(hs, "build_start")["build_id"]
        hs.send_json({"type": "step_started", "build_id": bid, "seq": 1,
                      "step": 0, "name": "one", "time_ms": 1})
    if what == "unknown type":
        hs.send_json({"type": "bogus"})
    elif what == "not json":
        hs.send_text("{{{")
    elif what == "bad kind":
        hs.send_binary(output_frame(bid, 0, 2, b"abc", kind=2))
    elif what == "truncated":
        hs.send_binary(output_frame(bid, 0, 2, b"abc", length=10))
    elif what == "too long":
        hs.send_binary(output_frame(bid, 0, 2, b"abcdef", length=3))
    elif what == "zero length":
        hs.send_binary(output_frame(bid, 0, 2, b""))
    elif what == "seq gap":
        hs.send_binary(output_frame(bid, 0, 5, b"abc"))
    expect_error(hs, "malformed", 4004)
    assert not m.slave_connected("hand") or wait_for(
        lambda: not m.slave_connected("hand"), 5, "the link to drop", farm)
    master_still_serves(m, farm)


def _send_fragmented(ws, data, pieces=3):
    """One binary message sent as several websocket fragments (a binary
    frame without FIN, continuations, the last with FIN)."""
    cut = [len(data) * i // pieces for i in range(pieces + 1)]
    for i in range(pieces):
        ws.send_frame(OP_BINARY if i == 0 else OP_CONT, data[cut[i]:cut[i + 1]],
                      fin=i == pieces - 1)


@pytest.mark.parametrize("bad", [
    "short header", "length beyond the frame", "unknown stream",
    "step not running"])
@pytest.mark.parametrize("how", ["whole", "fragmented"])
def test_output_frames_whole_or_fragmented_stored_exactly(farm, bad, how):
    """Output from a client that frames its own websocket messages (as an
    independent slave would): a whole 64 KiB output frame (parsed where
    the websocket layer holds it) and fragmented ones (reassembled) are
    stored byte-exact, every byte value included; a malformed frame sent
    either way is refused as malformed with a message saying what is wrong,
    and what was accepted before it stays stored, unchanged."""
    m = farm.master(config())
    hs = HandSlave(m, "hand").handshake()
    m.wait_slave_connected("hand")
    m.force("byhand")
    bid = recv_type(hs, "build_start")["build_id"]
    hs.send_json({"type": "step_started", "build_id": bid, "seq": 1,
                  "step": 0, "name": "one", "time_ms": 1})
    a = bytes(range(256)) * 256                    # 65,536: the cap
    b = bytes((i * 7 + 3) % 256 for i in range(40000))
    c = b"\x00\r\nlast\xff"
    hs.send_binary(output_frame(bid, 0, 2, a))
    _send_fragmented(hs, output_frame(bid, 0, 3, b, stream=2))
    _send_fragmented(hs, output_frame(bid, 0, 4, c), pieces=2)
    wait_acked(hs, bid, 4)
    frame, want = {
        "short header": (output_frame(bid, 0, 5, b"")[:10],
                         "shorter than the 24-byte header"),
        "length beyond the frame": (output_frame(bid, 0, 5, b"abc", length=9),
                                    "header says 9"),
        "unknown stream": (output_frame(bid, 0, 5, b"abc", stream=3),
                           "stream"),
        "step not running": (output_frame(bid, 1, 5, b"abc"),
                             "out of order"),
    }[bad]
    if how == "whole":
        hs.send_binary(frame)
    else:
        _send_fragmented(hs, frame, pieces=2)
    msg = expect_error(hs, "malformed", 4004)
    assert want in msg["message"], msg
    r = m.api_get(f"/builds/{bid}/steps/0/log")
    assert r.status == 200 and r.body == a + b + c, (r.status, len(r.body))
    master_still_serves(m, farm)


def test_events_for_an_unknown_build_do_not_disturb_the_master(farm):
    """The protocol leaves this open: the master may refuse the link
    (malformed) or ignore the event; either way nothing is stored and the
    master goes on serving."""
    m = farm.master(config())
    hs = HandSlave(m, "hand").handshake()
    m.wait_slave_connected("hand")
    hs.send_json({"type": "step_started", "build_id": 999, "seq": 1,
                  "step": 0, "name": "one", "time_ms": 1})
    msg = hs.recv_json()
    assert msg["type"] in ("ack", "error"), msg
    if msg["type"] == "error":
        assert msg["code"] == "malformed", msg
    assert m.api_get("/builds/999").status == 404
    master_still_serves(m, farm)


def _send_in_background(ws, data):
    def go():
        try:
            ws.send_raw(data)
        except OSError:
            pass  # the master may close before we finish: that is the point
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_oversized_frame_is_refused(farm, opcode):
    m = farm.master(config())
    hs = HandSlave(m, "hand").handshake()
    m.wait_slave_connected("hand")
    size = 1024 * 1024 + 1 if opcode == OP_TEXT else 24 + 65536 + 1
    payload = b'{"type":"pong","id":1,"pad":"' + b"x" * size + b'"}'
    if opcode == OP_BINARY:
        payload = output_frame(1, 0, 1, b"y" * (size - 24))
    _send_in_background(hs, ws_encode_frame(opcode, payload))
    if opcode == OP_TEXT:
        expect_error(hs, "too_big", 4006)
    else:
        # Over the output cap: refused as too_big (or malformed: the
        # length field itself is out of range).
        msg = hs.recv_json()
        assert msg["type"] == "error" and \
            msg["code"] in ("too_big", "malformed"), msg
        assert hs.wait_closed() in (4006, 4004, None)
    wait_for(lambda: not m.slave_connected("hand"), 5, "the link to drop",
             farm)
    master_still_serves(m, farm)


def test_oversized_frame_is_refused_before_it_is_all_sent(farm):
    """The cap applies as soon as the length is known: a frame announcing
    2 MiB is refused although only its first bytes ever arrive."""
    m = farm.master(config())
    ws = WSClient(m.port, farm=farm).connect()
    ws.recv_json()
    head = ws_encode_frame(OP_TEXT, b"", length=2 * 1024 * 1024)
    # ws_encode_frame masked an empty payload; append part of a body.
    ws.send_raw(head + b"x" * 1000)
    expect_error(ws, "too_big", 4006)
    assert m.get("/api/v1/master").status == 200


def test_fragmented_oversized_message_is_refused(farm):
    m = farm.master(config())
    ws = WSClient(m.port, farm=farm).connect()
    ws.recv_json()
    piece = b"x" * (256 * 1024)

    def go():
        try:
            ws.send_frame(OP_TEXT, piece, fin=False)
            for _ in range(5):
                ws.send_frame(0, piece, fin=False)
            ws.send_frame(0, b"}", fin=True)
        except OSError:
            pass
    threading.Thread(target=go, daemon=True).start()
    expect_error(ws, "too_big", 4006)


def test_fragmented_hello_is_accepted(farm):
    m = farm.master(config())
    ws = WSClient(m.port, farm=farm).connect()
    ch = ws.recv_json()
    from tfharness import hello_auth
    secret = m.secret_path("hand").read_text().strip()
    text = json.dumps({"type": "hello", "protocol": 1, "slave": "hand",
                       "auth": hello_auth(secret, ch["nonce"]),
                       "version": "v", "platform": "p", "tags": [],
                       "max_builds": 1, "running": []}).encode()
    ws.send_frame(OP_TEXT, text[:10], fin=False)
    ws.send_frame(0, text[10:30], fin=False)
    ws.send_frame(0, text[30:], fin=True)
    assert ws.recv_json()["type"] == "welcome"


def test_bad_auth_and_unknown_slave_over_the_wire(farm):
    m = farm.master(config())
    hs = HandSlave(m, "hand", secret="wrong").handshake(expect_welcome=False)
    expect_error(hs, "bad_auth", 4001)
    hs = HandSlave(m, "nobody", secret="x").handshake(expect_welcome=False)
    expect_error(hs, "unknown_slave", 4002)
    master_still_serves(m, farm)



def test_reload_reads_only_changed_secret_files(farm):
    """A reload stats each secret file and reads only those that changed
    (issue 13: 5,000 slaves' files read again on each SIGHUP): an unchanged
    file keeps its secret, a file edited in place with a secret of the same
    length is read again and only the new secret is welcomed."""
    m = farm.master(config())

    def reload(n):
        m.sighup()
        return wait_for(lambda: m.log_text().count("config reloaded") == n,
                        10, "reload %d" % n, farm)

    # Files written just before a load are read again at the next one
    # (file times have a granularity): wait past that, once.
    time.sleep(0.3)
    reload(1)
    reload(2)
    assert "2 slaves, 2 builders; 0 secret file(s) read" in \
        m.log_text().split("SIGHUP")[-1], m.log_text()

    path = m.secret_path("hand")
    old = path.read_text().split("\n")[0].strip()
    new = "".join("a" if c != "a" else "b" for c in old)
    assert len(new) == len(old) and new != old
    with open(path, "r+") as f:  # in place: same inode, same size
        f.write(new + "\n")
    time.sleep(0.3)
    reload(3)
    assert "2 slaves, 2 builders; 1 secret file(s) read" in \
        m.log_text().split("SIGHUP")[-1], m.log_text()

    hs = HandSlave(m, "hand", secret=old).handshake(expect_welcome=False)
    expect_error(hs, "bad_auth", 4001)
    hs = HandSlave(m, "hand", secret=new).handshake()
    m.wait_slave_connected("hand")
    hs.close()
    master_still_serves(m, farm)

def test_newer_connection_replaces_the_older(farm):
    m = farm.master(config())
    old = HandSlave(m, "hand").handshake()
    m.wait_slave_connected("hand")
    first = m.slave_info("hand")["connected_ms"]
    new = HandSlave(m, "hand").handshake()
    expect_error(old, "replaced", 4005)
    assert m.slave_connected("hand")
    assert m.slave_info("hand")["connected_ms"] >= first
    new.close()


@pytest.mark.timeout(60)
def test_no_hello_in_time_is_a_timeout(farm):
    m = farm.master(config())
    ws = WSClient(m.port, farm=farm).connect()
    assert ws.recv_json()["type"] == "challenge"
    t0 = time.monotonic()
    expect_error(ws, "timeout", 4007, timeout=20)
    took = time.monotonic() - t0
    assert 9 <= took <= 15, f"closed after {took:.1f} s, expected 10 s"


def test_error_close_codes(farm):
    """docs/protocol.md: after an error the master closes with the
    WebSocket close code of that error (a close frame, not just EOF).
    One test for all codes, listing every code that came out wrong."""
    m = farm.master(config())
    wrong = []
    for code, close_code in [("bad_auth", 4001), ("unknown_slave", 4002),
                             ("protocol_version", 4003), ("malformed", 4004),
                             ("replaced", 4005), ("too_big", 4006)]:
        if code == "replaced":
            ws = HandSlave(m, "hand").handshake()
            newer = HandSlave(m, "hand").handshake()
        elif code in ("bad_auth", "unknown_slave", "protocol_version"):
            name = "nobody" if code == "unknown_slave" else "hand"
            secret = {"bad_auth": "wrong", "unknown_slave": "x"}.get(code)
            ws = HandSlave(m, name, secret=secret)
            ws.handshake(protocol=2 if code == "protocol_version" else 1,
                         expect_welcome=False)
        else:
            ws = WSClient(m.port, farm=farm).connect()
            ws.recv_json()
            if code == "malformed":
                ws.send_text("nonsense")
            else:
                ws.send_raw(ws_encode_frame(OP_TEXT, b"", length=2 << 20) +
                            b"x" * 100)
        expect_error(ws, code, close_code)  # right error, link closed
        if ws.close_code != close_code:
            wrong.append(f"{code}: expected close code {close_code}, got "
                         + ("no close frame (TCP closed)"
                            if ws.close_code is None else str(ws.close_code)))
        if code == "replaced":
            newer.close()
    assert not wrong, "; ".join(wrong)


@pytest.mark.timeout(60)
def test_websocket_without_the_subprotocol_is_refused(farm):
    """A client that does not ask for testfarm-slave must not get a link
    that sits there forever: it is refused at the upgrade, or gets an
    error, or is closed at the latest when a slave that never says hello
    would be (10 s)."""
    m = farm.master(config())
    ws = WSClient(m.port, protocol=None, farm=farm)
    try:
        ws.connect()
    except (AssertionError, WSClosed, OSError):
        return  # refused at the upgrade: fine
    try:
        msg = ws.recv_json(timeout=15)
    except WSClosed:
        return  # closed: fine
    except socket.timeout:
        pytest.fail("the master accepted a websocket without the "
                    "testfarm-slave subprotocol (101) and then sent nothing "
                    "and did not close it for 15 s")
    assert msg["type"] == "error", \
        f"got {msg} on a link without the subprotocol"
