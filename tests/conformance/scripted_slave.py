"""scripted_slave.py - a build slave written from docs/protocol.md alone, for
the conformance suite.

A test drives it one message at a time: it numbers each build's events
itself (or sends the seq the test asks for, to break the rules on
purpose), and everything it receives goes through one reader that checks
what the protocol promises of every message whatever the test is about:

- acks for a build never go down and never pass the highest seq this
  slave sent or reported for it (docs/protocol.md, "ack");
- welcome.resume never passes the seq the hello reported, and every
  reported build is in exactly one of resume and abandon.

It knows nothing of tf-master's sources or database: what it checks is
what any slave would see on the wire. A second slave implementation can
be compared against it case by case (docs/protocol.md, "Conformance").
"""

import json
import socket
import time

from tfharness import (TIMEOUT_SCALE, HandSlave, WaitTimeout, WSClosed,
                       output_frame, scaled)

T0 = 1795000000000  # a fixed clock for event times (milliseconds)


class ScriptedSlave(HandSlave):
    """A HandSlave that keeps per-build sequence numbers and checks every
    ack and welcome it receives."""

    def __init__(self, master, name, **kw):
        super().__init__(master, name, **kw)
        self.sent = {}      # build_id -> highest seq sent or reported
        self.acked = {}     # build_id -> highest ack received
        self.acks = []      # every ack, in order: (build_id, seq)
        self.starts = []    # every build_start received
        self.aborts = []    # every build_abort received
        self.unread = []    # messages read while waiting for others

    # --- the handshake ---

    def hello(self, running=(), **kw):
        """Connects, answers the challenge, returns the welcome (checked
        against the running builds reported)."""
        for r in running:
            self.sent[r["build_id"]] = max(self.sent.get(r["build_id"], 0),
                                           r["seq"])
        self.handshake(running=list(running), **kw)
        w = self.welcome
        reported = {r["build_id"]: r["seq"] for r in running}
        resumed = {r["build_id"]: r["seq"] for r in w["resume"]}
        for bid, seq in resumed.items():
            assert bid in reported, f"welcome resumes build {bid}, which " \
                f"the hello did not report: {w}"
            assert seq <= reported[bid], \
                f"welcome resumes build {bid} after seq {seq}, above the " \
                f"{reported[bid]} the slave reported: {w}"
            assert seq >= self.acked.get(bid, 0), \
                f"welcome.resume seq {seq} for build {bid} is below an " \
                f"ack already received ({self.acked[bid]})"
            self.acked[bid] = seq
        both = set(resumed) & set(w["abandon"])
        assert not both, f"builds both resumed and abandoned: {both}"
        missing = set(reported) - set(resumed) - set(w["abandon"])
        assert not missing, f"reported builds in neither list: {missing}"
        return w

    # --- sending build events ---

    def _seq(self, bid, seq):
        if seq is None:
            seq = self.sent.get(bid, 0) + 1
        self.sent[bid] = max(self.sent.get(bid, 0), seq)
        return seq

    def event(self, bid, ev, seq=None):
        """Sends a control event (a dict without build_id and seq)."""
        msg = dict(ev, build_id=bid, seq=self._seq(bid, seq))
        self.send_json(msg)
        return msg["seq"]

    def step_started(self, bid, step, name="step", seq=None):
        return self.event(bid, {"type": "step_started", "step": step,
                                "name": name, "time_ms": T0 + step}, seq)

    def step_finished(self, bid, step, result="SUCCESS", exit_code=0,
                      seq=None, text=None, **extra):
        ev = {"type": "step_finished", "step": step, "result": result,
              "exit_code": exit_code, "signal": None, "timed_out": False,
              "duration_ms": 1, "time_ms": T0 + step + 1,
              "text": text if text is not None else
              (f"exit {exit_code}" if exit_code is not None else result)}
        ev.update(extra)
        return self.event(bid, ev, seq)

    def skipped(self, bid, step, seq=None):
        return self.step_finished(bid, step, "SKIPPED", None, seq,
                                  text="skipped", duration_ms=0)

    def output(self, bid, step, data, stream=1, seq=None):
        seq = self._seq(bid, seq)
        self.send_binary(output_frame(bid, step, seq, data, stream=stream))
        return seq

    def build_finished(self, bid, result="SUCCESS", seq=None):
        return self.event(bid, {"type": "build_finished", "result": result,
                                "time_ms": T0 + 999}, seq)

    def run_steps(self, bid, steps, result="SUCCESS"):
        """Reports every step of a build_start's steps list with result."""
        for i, st in enumerate(steps):
            self.step_started(bid, i, st["name"])
            self.output(bid, i, f"{st['name']}\n".encode())
            self.step_finished(bid, i, result,
                               0 if result == "SUCCESS" else 1)
        return self.build_finished(bid, result)

    # --- receiving ---

    def _note(self, msg):
        t = msg["type"]
        if t == "ack":
            bid, seq = msg["build_id"], msg["seq"]
            assert seq >= self.acked.get(bid, 0), \
                f"acks went backwards for build {bid}: {seq} after " \
                f"{self.acked[bid]}"
            assert seq <= self.sent.get(bid, 0), \
                f"ack {seq} for build {bid} is above the highest event " \
                f"sent ({self.sent.get(bid, 0)})"
            self.acked[bid] = seq
            self.acks.append((bid, seq))
        elif t == "build_start":
            self.starts.append(msg)
        elif t == "build_abort":
            self.aborts.append(msg)
        return msg

    def recv(self, timeout=15):
        """The next message (protocol pings answered and skipped), checked.
        timeout (scaled) bounds the whole wait, pings included: the
        master's heartbeat must not keep extending it."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no message within the time limit")
            kind, data = self.recv_message(left / TIMEOUT_SCALE)
            assert kind == "text", f"expected a text frame, got {kind} " \
                f"{data[:100]!r}"
            msg = json.loads(data)
            if msg.get("type") == "ping":
                self.send_json({"type": "pong", "id": msg["id"]})
                continue
            return self._note(msg)

    def recv_type(self, want, timeout=15, skip=("ack",)):
        """The next message of type want (one read earlier while waiting
        for acks first); messages of the types in skip may come first,
        anything else fails."""
        for i, msg in enumerate(self.unread):
            if msg["type"] == want:
                return self.unread.pop(i)
        deadline = time.monotonic() + scaled(timeout)
        while True:
            left = max(0.05, deadline - time.monotonic())
            msg = self.recv(left / TIMEOUT_SCALE)
            if msg["type"] == want:
                return msg
            assert msg["type"] in skip, f"expected {want}, got {msg}"

    def wait_acked(self, bid, seq, timeout=15):
        """Reads until build bid is acknowledged up to seq. A build_start
        or build_abort read meanwhile is kept for recv_type; anything else
        fails."""
        while self.acked.get(bid, 0) < seq:
            msg = self.recv(timeout)
            if msg["type"] in ("build_start", "build_abort"):
                self.unread.append(msg)
                continue
            assert msg["type"] == "ack", f"waiting for ack {seq}: {msg}"
        return self.acked[bid]

    def quiet_for(self, seconds):
        """Reads for `seconds` (scaled) and returns what came: pings are
        answered, acks checked. For asserting that something does NOT
        happen, there being no event to wait for instead."""
        got = []
        deadline = time.monotonic() + scaled(seconds)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            try:
                got.append(self.recv(left / TIMEOUT_SCALE))
            except socket.timeout:
                return got

    def expect_refused(self, code, close_code, timeout=10):
        """The next message that is not an ack must be an error with this
        code, followed by a close frame with close_code (not just EOF).
        Returns the error message."""
        while True:
            msg = self.recv(timeout)
            if msg["type"] != "ack":
                break
        assert msg["type"] == "error", msg
        assert msg["code"] == code, msg
        assert isinstance(msg.get("message"), str) and msg["message"], msg
        got = self.wait_closed(timeout)
        assert got == close_code, \
            f"close code {got}, expected {close_code} after error {code}"
        return msg


def wait_link_gone(master, name, farm, timeout=10):
    from tfharness import wait_for
    return wait_for(lambda: not master.slave_connected(name), timeout,
                    f"the master to notice slave {name} left", farm)


def still_serves(master):
    """The master answers its API: a refused slave must never take it
    down."""
    r = master.get("/api/v1/master")
    assert r.status == 200, r


__all__ = ["ScriptedSlave", "T0", "WSClosed", "WaitTimeout",
           "wait_link_gone", "still_serves", "json"]
