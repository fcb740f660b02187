"""Conformance: what the slave under test does on its own (docs/protocol.md
"error", "drain"): it stops with exit status 6 on the permanent refusals
instead of reconnecting forever, still reconnects after a timeout, and in
an abort-mode shutdown drains before it reports RETRY.

The slave under test is tf-slave, or $TF_CONFORMANCE_SLAVE: a command
(split on spaces) that takes tf-slave's flags (docs/testing.md)."""

import json
import os
import signal

import pytest

from tfharness import (TF_SLAVE, FakeMaster, OP_CLOSE, OP_TEXT, Slave,
                       wait_for, ws_accept_key, ws_encode_frame)


def config(**top):
    cfg = {"name": "conf", "heartbeat_s": 2, "lost_after_s": 30,
           "max_retries": 3, "slaves": [{"name": "s1"}],
           "builders": [{"name": "slow", "slaves": ["s1"], "steps": [
               {"name": "wait", "command": "echo started; sleep 60"},
               {"name": "after", "command": "echo after"}]}]}
    cfg.update(top)
    return cfg


def slave_command():
    """The slave under test: tf-slave, or $TF_CONFORMANCE_SLAVE (a command
    taking tf-slave's flags; see docs/testing.md)."""
    other = os.environ.get("TF_CONFORMANCE_SLAVE")
    return other.split() if other else [str(TF_SLAVE)]


class SlaveUnderTest(Slave):
    def argv(self):
        return slave_command() + [
            "--master", self.url, "--name", self.name,
            "--secret-file", self.secret_file, "--basedir", self.basedir,
            "--backoff-min-ms", "100", "--backoff-max-ms", "1000",
            "--log-level", self.log_level] + self.args


class RefusingMaster(FakeMaster):
    """Answers the first frame the slave sends after the challenge (its
    hello) with an error message and a close frame, like tf-master."""

    def __init__(self, farm, code, close_code):
        super().__init__(farm, {"type": "challenge", "protocol": 1,
                                "nonce": "ab" * 32, "master": "fake 1"})
        self.code, self.close_code = code, close_code

    def _handle(self, c):
        try:
            c.settimeout(30)
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = c.recv(65536)
                if not chunk:
                    return
                buf += chunk
            key = ""
            for line in buf.split(b"\r\n\r\n")[0].decode("latin-1") \
                    .split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "sec-websocket-key":
                    key = v.strip()
            self.connections += 1
            c.sendall(("HTTP/1.1 101 Switching Protocols\r\n"
                       "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Accept: {ws_accept_key(key)}\r\n"
                       "Sec-WebSocket-Protocol: testfarm-slave\r\n\r\n")
                      .encode())
            c.sendall(ws_encode_frame(OP_TEXT, json.dumps(self.challenge),
                                      mask=False))
            data = c.recv(65536)
            if not data:
                return
            self.received.append(data)
            err = {"type": "error", "code": self.code,
                   "message": f"conformance: refusing with {self.code}"}
            c.sendall(ws_encode_frame(OP_TEXT, json.dumps(err), mask=False))
            c.sendall(ws_encode_frame(
                OP_CLOSE, self.close_code.to_bytes(2, "big") +
                self.code.encode(), mask=False))
            while c.recv(65536):
                pass
        except OSError:
            return
        finally:
            c.close()


@pytest.mark.parametrize("code,close_code", [("malformed", 4004),
                                             ("too_big", 4006)])
def test_slave_stops_with_status_6_on_a_permanent_refusal(farm, code,
                                                          close_code):
    fake = RefusingMaster(farm, code, close_code)
    m = farm.master(config(), start=False)
    s = SlaveUnderTest(farm, m, "s1", url=f"ws://127.0.0.1:{fake.port}")
    s.start(wait_connected=False)
    rc = s.wait_exit(20)
    assert rc == 6, f"the slave exited {rc}, expected 6\n{s.log_text()}"
    assert fake.connections == 1, "the slave must not reconnect"
    log = s.log_text()
    assert f"conformance: refusing with {code}" in log, log


def test_slave_reconnects_after_a_timeout_error(farm):
    """The contrast: `timeout` is not permanent."""
    fake = RefusingMaster(farm, "timeout", 4007)
    m = farm.master(config(), start=False)
    s = SlaveUnderTest(farm, m, "s1", url=f"ws://127.0.0.1:{fake.port}")
    s.start(wait_connected=False)
    wait_for(lambda: fake.connections >= 2, 15, "a second connection", farm)
    assert s.running()
    s.stop()




def test_abort_shutdown_drains_before_reporting_retry(farm):
    """Stopped in abort mode mid-build, the slave's RETRY must not bring the
    request straight back to it: it drained first, so the request waits,
    having used exactly one retry, and runs once the slave is back."""
    m = farm.master(config())
    s = SlaveUnderTest(farm, m, "s1", args=["--on-sigterm", "abort"]).start()
    req = m.force("slow")
    bid = m.wait_build_started(req)
    m.wait_step_running(bid, 0, min_bytes=8)
    s.signal(signal.SIGTERM)
    assert s.wait_exit(30) == 0, s.log_text()
    b = m.wait_build_finished(bid, 20)
    assert b["result"] == "RETRY", b
    assert [x["result"] for x in b["steps"]] == ["RETRY", "SKIPPED"], b
    r = m.request_info(req)
    assert r["state"] == "pending" and r["retries"] == 1, r
    # Back, the slave gets the request again (then it is cancelled: its
    # first step sleeps for a minute).
    s2 = SlaveUnderTest(farm, m, "s1", basedir=s.basedir).start()
    again = wait_for(lambda: (lambda x: x["build_id"] != bid and
                              x["build_id"])(m.request_info(req)), 20,
                     "the request to start again", farm)
    assert again and m.request_info(req)["retries"] == 1
    m.api_post(f"/builds/{again}/cancel")
    m.wait_build_finished(again, 30)
    s2.stop()
