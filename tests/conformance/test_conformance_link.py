"""Conformance: the link itself (docs/protocol.md "Transport", "error",
"Limits"). Upgrades the master will not take get a readable HTTP answer,
and every limit is enforced with the documented error and close code (the
slave's side of those errors: test_conformance_slave.py)."""

import socket
import threading

import pytest

from scripted_slave import ScriptedSlave, T0, still_serves
from tfharness import (OP_TEXT, HandSlave, WSClient, hello_auth, scaled,
                       ws_encode_frame)


def config(**top):
    cfg = {"name": "conf", "heartbeat_s": 2, "lost_after_s": 30,
           "slaves": [{"name": "hand"}],
           "builders": [{"name": "two", "slaves": ["hand"], "steps": [
               {"name": "one", "command": "make"},
               {"name": "two", "command": "make check"}]}]}
    cfg.update(top)
    return cfg


# --- upgrades the master will not take (point 8) ---

def raw_upgrade(port, path, protocol):
    """Sends a websocket upgrade by hand; returns (status, headers, body),
    or None when the server just dropped the connection."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13"]
    if protocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                hdrs = {}
                for h in head.decode("latin-1").split("\r\n")[1:]:
                    k, _, v = h.partition(":")
                    hdrs[k.strip().lower()] = v.strip()
                n = int(hdrs.get("content-length", "-1"))
                if n >= 0 and len(body) >= n:
                    break
                if head.startswith(b"HTTP/1.1 101"):
                    break
    except ConnectionResetError:
        pass
    finally:
        s.close()
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *hl = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for h in hl:
        k, _, v = h.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(status_line.split()[1]), hdrs, body.decode("utf-8")


@pytest.mark.parametrize("path,protocol,status,words", [
    ("/slave", None, 400, ["testfarm-slave", "named no subprotocol"]),
    ("/slave", "chat", 400, ["testfarm-slave", '"chat"']),
    ("/slave", "testfarm-live", 400, ["testfarm-slave", '"testfarm-live"']),
    ("/live", "testfarm-slave", 400, ["testfarm-live"]),
    ("/nowhere", "testfarm-slave", 404, ["/nowhere", "/slave"]),
])
def test_refused_upgrades_get_a_readable_http_answer(farm, path, protocol,
                                                     status, words):
    m = farm.master(config())
    got = raw_upgrade(m.port, path, protocol)
    assert got is not None, "the master dropped the connection without " \
        "an HTTP answer"
    st, hdrs, body = got
    assert st == status, got
    assert hdrs.get("content-type", "").startswith("text/plain"), hdrs
    for w in words:
        assert w in body, (w, body)
    # The right pair still upgrades.
    ws = WSClient(m.port, farm=farm).connect()
    assert ws.recv_json()["type"] == "challenge"
    still_serves(m)


# --- every limit (point 7) ---

def _hello(ss, **over):
    ss.connect()
    ch = ss.recv_json()
    hello = {"type": "hello", "protocol": 1, "slave": ss.name,
             "auth": hello_auth(ss.secret, ch["nonce"]),
             "version": "conformance", "platform": "python", "tags": [],
             "max_builds": 1, "running": []}
    hello.update(over)
    for k in [k for k, v in hello.items() if v is _DROP]:
        del hello[k]
    ss.send_json(hello)


_DROP = object()


@pytest.mark.parametrize("what,over", [
    ("auth in upper case", "UPPER"),
    ("max_builds 0", {"max_builds": 0}),
    ("max_builds 2^32", {"max_builds": 2 ** 32}),
    ("65 running builds", {"running": [{"build_id": i, "seq": 1}
                                       for i in range(1, 66)]}),
    ("version over 128 bytes", {"version": "v" * 129}),
    ("a tag that is not a name", {"tags": ["no spaces"]}),
    ("running seq over 2^53-1", {"running": [{"build_id": 1,
                                              "seq": 2 ** 53}]}),
])
def test_hello_over_a_limit_is_malformed_and_permanent(farm, what, over):
    m = farm.master(config())
    ss = ScriptedSlave(m, "hand")
    if over == "UPPER":
        ss.connect()
        ch = ss.recv_json()
        ss.send_json({"type": "hello", "protocol": 1, "slave": "hand",
                      "auth": hello_auth(ss.secret, ch["nonce"]).upper(),
                      "version": "c", "platform": "p", "tags": [],
                      "max_builds": 1, "running": []})
    else:
        _hello(ss, **over)
    err = ss.expect_refused("malformed", 4004)
    assert err["message"].startswith("cannot decode message: hello."), err
    assert not m.slave_connected("hand")
    still_serves(m)


def _finished(**over):
    ev = {"type": "step_finished", "step": 0, "result": "FAILURE",
          "exit_code": 1, "signal": None, "timed_out": False,
          "duration_ms": 1, "time_ms": T0 + 1, "text": "exit 1"}
    ev.update(over)
    return ev


@pytest.mark.parametrize("what,ev,field", [
    ("a negative exit code", _finished(exit_code=-1), "exit_code"),
    ("an exit code of 2^31", _finished(exit_code=2 ** 31), "exit_code"),
    ("signal 0", _finished(exit_code=None, signal=0), "signal"),
    ("step 1000", _finished(step=1000), "step"),
    ("text over 4096 bytes", _finished(text="x" * 4097), "text"),
    ("time_ms over 2^53-1", _finished(time_ms=2 ** 53), "time_ms"),
    ("65 properties", _finished(properties={f"p{i}": "v"
                                            for i in range(65)}),
     "properties"),
    ("got_revision that is an option", _finished(
        result="SUCCESS", exit_code=0,
        properties={"got_revision": "--upload-pack=touch X"}),
     "got_revision"),
    ("an empty got_revision", _finished(
        result="SUCCESS", exit_code=0, properties={"got_revision": ""}),
     "got_revision"),
    ("65 stats", _finished(stats={f"s{i}": i for i in range(65)}), "stats"),
    ("info over 4096 bytes", _finished(info="i" * 4097), "info"),
    ("an unknown result", _finished(result="MAYBE"), "result"),
])
def test_events_over_a_limit_are_malformed(farm, what, ev, field):
    m = farm.master(config())
    ss = ScriptedSlave(m, "hand")
    ss.hello()
    m.force("two")
    bid = ss.recv_type("build_start")["build_id"]
    ss.step_started(bid, 0, "one")
    ss.event(bid, ev)
    err = ss.expect_refused("malformed", 4004)
    assert field in err["message"], err
    assert ss.acked.get(bid, 0) <= 1, ss.acks
    still_serves(m)


def test_a_frame_over_its_cap_is_too_big_and_permanent(farm):
    m = farm.master(config())
    ss = ScriptedSlave(m, "hand")
    ss.hello()

    def go():
        try:
            ss.send_raw(ws_encode_frame(
                OP_TEXT, b'{"type":"pong","id":1,"pad":"' +
                b"x" * (1 << 20) + b'"}'))
        except OSError:
            pass
    threading.Thread(target=go, daemon=True).start()
    ss.expect_refused("too_big", 4006)
    still_serves(m)


def test_scripted_slave_and_hand_slave_agree_on_the_handshake(farm):
    """The two Python slaves of the suites speak the same handshake (the
    scripted one adds its checks)."""
    m = farm.master(config())
    w = ScriptedSlave(m, "hand").hello()
    assert w["slave"] == "hand" and w["heartbeat_s"] == 2
    HandSlave(m, "hand").handshake()
