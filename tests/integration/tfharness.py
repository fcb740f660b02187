"""tfharness.py - real tf-master and tf-slave processes for integration tests.

Everything here runs real binaries on 127.0.0.1 with a free port each, in a
pytest tmp directory, and talks to them the way a user does: the JSON API,
the command line, exit codes and log files. It is stdlib-only on purpose
(Debian's python3 plus python3-pytest is all CI has).

Pieces:

- Farm: one per test (the `farm` fixture in conftest.py). It owns the tmp
  directory and every process, proxy and socket the test made, and kills
  them all at teardown even when the test failed. Processes run in their
  own process group (start_new_session) and with a marker in their
  environment, so teardown also finds and kills step processes that left
  the group (the slave runs each step with setsid()).
- Master, Slave: one process each; start/stop/kill9/restart, their logs,
  and API helpers on Master.
- wait_for(): every wait in the suite goes through it; it always has a
  timeout and its failure message says what was awaited and shows the
  logs.
- WSClient: a minimal RFC 6455 client (masked frames, fragments, close
  codes) to act as a hand-written slave in protocol tests.
- FakeMaster: a minimal websocket server that sends whatever challenge a
  test wants, to see how tf-slave reacts.
- Proxy: a threaded TCP proxy to put between a slave and the master; cut()
  drops every connection and refuses new ones until restore().

Binaries come from $TF_BUILD_DIR (default "build", relative to the repo
root). $TF_TIMEOUT_SCALE (default 1) stretches every timeout, for slow
builds (sanitizers, valgrind).
"""

import base64
import errno
import hashlib
import hmac
import http.client
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _build_dir():
    d = Path(os.environ.get("TF_BUILD_DIR", "build"))
    return d if d.is_absolute() else REPO / d


BUILD_DIR = _build_dir()
TF_MASTER = BUILD_DIR / "master" / "tf-master"
TF_SLAVE = BUILD_DIR / "slave" / "tf-slave"
TIMEOUT_SCALE = float(os.environ.get("TF_TIMEOUT_SCALE", "1") or "1")

# What a test should expect from the protocol (docs/protocol.md).
PROTOCOL_VERSION = 1
MAX_TEXT_FRAME = 1024 * 1024

RESULTS = ("SUCCESS", "WARNINGS", "FAILURE", "SKIPPED", "EXCEPTION",
           "RETRY", "CANCELLED")


def scaled(seconds):
    """A timeout stretched by $TF_TIMEOUT_SCALE."""
    return seconds * TIMEOUT_SCALE


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on right now.

    Ports are drawn at random from a range the kernel does not hand out
    for outgoing connections (below ip_local_port_range), so a port picked
    for one process is not taken by a client socket a moment later."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        return port
    raise RuntimeError("no free TCP port found")


def tail(text, lines=150, chars=20000):
    """The end of a log, for failure messages."""
    t = "\n".join(text.splitlines()[-lines:])
    return t[-chars:]


def pid_alive(pid):
    """True when pid exists and is not a zombie (a zombie runs nothing; in
    containers whose init does not reap, killed orphans stay zombies)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return False
    # Field 3 follows the parenthesised command name, which may hold spaces.
    state = stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3]
    return state not in (b"Z", b"X")


def pgid_of(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    rest = stat[stat.rindex(b")") + 2:].split()
    return int(rest[2])


def live_pids_in_group(pgid):
    """Non-zombie processes whose process group is pgid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rindex(b")") + 2:].split()
        if rest[0] in (b"Z", b"X"):
            continue
        if int(rest[2]) == pgid:
            out.append(int(d))
    return out


def pids_with_env(marker):
    """Processes whose environment holds the string marker ("K=V")."""
    want = marker.encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if want in env:
            out.append(int(d))
    return out


class WaitTimeout(AssertionError):
    pass


def wait_for(predicate, timeout, what, farm=None, interval=0.1,
             ignore=(ConnectionError, http.client.HTTPException)):
    """Calls predicate() until it returns something truthy and returns that.

    Fails after timeout seconds (scaled by $TF_TIMEOUT_SCALE) with a message
    naming `what`, the last value seen and, when farm is given, the tails of
    its logs. Exceptions of the classes in `ignore` count as "not yet"."""
    deadline = time.monotonic() + scaled(timeout)
    last = None
    last_exc = None
    while True:
        try:
            last = predicate()
            last_exc = None
        except ignore as e:  # noqa: PERF203 - polling
            last, last_exc = None, e
        if last:
            return last
        if farm is not None:
            dead = farm.unexpected_exits()
            if dead:
                raise AssertionError(
                    f"{', '.join(dead)} while waiting for {what}\n"
                    + farm.dump_logs())
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    msg = f"timed out after {scaled(timeout):g} s waiting for {what}"
    if last_exc is not None:
        msg += f"\nlast error: {last_exc!r}"
    else:
        msg += f"\nlast value: {str(last)[:2000]}"
    if farm is not None:
        msg += "\n" + farm.dump_logs()
    raise WaitTimeout(msg)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body

    def json(self):
        return json.loads(self.body)

    def error_message(self):
        try:
            return self.json()["error"]["message"]
        except Exception:  # noqa: BLE001 - for messages only
            return None

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r}>"


def http_request(port, method, path, body=None, headers=None, timeout=30,
                 host="127.0.0.1"):
    """One HTTP request on a fresh connection; never raises on 4xx/5xx."""
    conn = http.client.HTTPConnection(host, port, timeout=scaled(timeout))
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = dict(headers or {})
            headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()},
                        data)
    finally:
        conn.close()


class Proc:
    """A process started by the harness, logging to a file."""

    def __init__(self, farm, label, argv, log_path, env=None, cwd=None):
        self.farm = farm
        self.label = label
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.popen = None
        self.returncode = None
        # False while an exit would be a failure (waits then fail at once
        # instead of timing out); the harness sets it when it stops the
        # process or when the test expects it to exit by itself.
        self.may_exit = False

    def start(self):
        assert self.popen is None or self.popen.poll() is not None, \
            f"{self.label} is already running"
        env = dict(os.environ if self.env is None else self.env)
        env[self.farm.marker_key] = self.farm.marker_value
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"=== harness: starting {' '.join(self.argv)}\n"
                      .encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
                start_new_session=True)
        self.returncode = None
        self.farm._procs.append(self)
        return self

    @property
    def pid(self):
        return self.popen.pid

    def running(self):
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig):
        assert self.running(), f"{self.label} is not running\n" + \
            self.farm.dump_logs()
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL,
                   signal.SIGQUIT):
            self.may_exit = True
        os.kill(self.popen.pid, sig)

    def wait_exit(self, timeout=30):
        """Waits for the process to exit; returns its exit status (negative
        for a signal, as subprocess reports it)."""
        self.may_exit = True
        try:
            self.returncode = self.popen.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            raise WaitTimeout(
                f"{self.label} did not exit within {scaled(timeout):g} s\n"
                + self.farm.dump_logs()) from None
        return self.returncode

    def kill9(self):
        """SIGKILL to the process (only the process: its step children, if
        any, are left alone, as when a machine's OOM killer strikes)."""
        self.signal(signal.SIGKILL)
        return self.wait_exit(10)

    def kill_group(self):
        if self.popen is None:
            return
        self.may_exit = True
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def log_text(self):
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


def secret_hex():
    return os.urandom(32).hex()


class Master:
    """A tf-master with its own directory, config and port."""

    def __init__(self, farm, config=None, name="master", port=None,
                 wrapper=None, log_level="debug", env=None, store=None):
        self.farm = farm
        # A PostgreSQL URL for "store": {"postgres": ...} (None: sqlite,
        # or with TF_TEST_STORE=postgresql a fresh database on the shared
        # test cluster, so any suite runs on the PostgreSQL engine).
        if store is None and os.environ.get("TF_TEST_STORE") == "postgresql":
            c = shared_pg_cluster()
            store = c.url(c.new_database())
        self.store = store
        self.name = name
        # Extra environment variables for the process (test hooks such as
        # TF_TEST_STORE_FAIL).
        self.env = dict(env or {})
        self.dir = farm.tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "secrets").mkdir(exist_ok=True)
        self.port = port or free_port()
        self.wrapper = list(wrapper or [])
        self.log_level = log_level
        self.config = None
        self.proc = None
        if config is not None:
            self.write_config(config)

    # --- configuration ---

    def secret_path(self, slave):
        return self.dir / "secrets" / slave

    def write_config(self, config):
        """Writes master.json from a dict. listen defaults to 127.0.0.1 and
        this master's port; slaves without secret or secret_file get a
        random secret in secrets/NAME (kept across rewrites)."""
        cfg = json.loads(json.dumps(config))
        cfg.setdefault("listen", {"host": "127.0.0.1", "port": self.port})
        if self.store and "store" not in cfg:
            cfg["store"] = {"postgres": self.store}
        for s in cfg.get("slaves", []):
            if "secret" not in s and "secret_file" not in s:
                p = self.secret_path(s["name"])
                if not p.exists():
                    p.write_text(secret_hex() + "\n")
                    p.chmod(0o600)
                s["secret_file"] = f"secrets/{s['name']}"
        self.config = cfg
        (self.dir / "master.json").write_text(json.dumps(cfg, indent=2) +
                                              "\n")

    @property
    def config_path(self):
        return self.dir / "master.json"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.port}"

    @property
    def db_path(self):
        return self.dir / "state.sqlite"

    @property
    def log_path(self):
        return self.dir / "master.log"

    def token(self):
        return (self.dir / "admin.token").read_text().split("\n")[0].strip()

    # --- process ---

    def start(self, wait=True, timeout=20):
        argv = self.wrapper + [TF_MASTER, "--log-level", self.log_level,
                               "run", self.dir]
        env = None
        if self.env:
            env = dict(os.environ)
            env.update(self.env)
        self.proc = Proc(self.farm, f"master {self.name}", argv,
                         self.log_path, env=env)
        self.proc.start()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=20):
        def ready():
            if not self.proc.running():
                raise AssertionError(
                    f"tf-master exited with status {self.proc.popen.poll()} "
                    "while starting\n" + self.farm.dump_logs())
            try:
                return self.get("/api/v1/master", timeout=2).status == 200
            except OSError:
                return False
        wait_for(ready, timeout, f"master {self.name} to answer "
                 "GET /api/v1/master", self.farm)

    def running(self):
        return self.proc is not None and self.proc.running()

    def sighup(self):
        self.proc.signal(signal.SIGHUP)

    def stop(self, expect=0, timeout=30):
        """SIGTERM, wait, and check the exit status."""
        self.proc.signal(signal.SIGTERM)
        rc = self.proc.wait_exit(timeout)
        if expect is not None:
            assert rc == expect, (
                f"tf-master exited with {rc} after SIGTERM, expected "
                f"{expect}\n" + self.farm.dump_logs())
        return rc

    def kill9(self):
        return self.proc.kill9()

    def restart(self, timeout=20):
        if self.running():
            self.stop()
        return self.start(timeout=timeout)

    def log_text(self):
        return self.proc.log_text() if self.proc else ""

    # --- HTTP ---

    def request(self, method, path, body=None, headers=None, token=None,
                timeout=30):
        """token: None/False = no Authorization, True = the admin token,
        a string = that token."""
        headers = dict(headers or {})
        if token is True:
            token = self.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return http_request(self.port, method, path, body, headers, timeout)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def api_get(self, path, **kw):
        """GET under /api/v1; returns a Response."""
        return self.get("/api/v1" + path, **kw)

    def api_post(self, path, body=None, token=True, **kw):
        """POST under /api/v1 with a JSON body ({} when None: see
        test_cli_api.py's test of an empty POST for why)."""
        return self.request("POST", "/api/v1" + path,
                            body={} if body is None else body, token=token,
                            **kw)

    def get_json(self, path, **kw):
        """GET /api/v1+path, asserting 200; returns the parsed body."""
        r = self.api_get(path, **kw)
        assert r.status == 200, f"GET /api/v1{path}: {r!r}"
        return r.json()

    def force(self, builder, reason="integration test", properties=None):
        """Forces a build; returns the request id."""
        body = {"reason": reason}
        if properties:
            body["properties"] = properties
        r = self.api_post(f"/builders/{builder}/force", body)
        assert r.status == 201, f"force {builder}: {r!r}"
        return r.json()["request_id"]

    def slave_info(self, name):
        return self.get_json(f"/slaves/{name}")

    def slave_connected(self, name):
        r = self.api_get(f"/slaves/{name}")
        return r.status == 200 and r.json().get("connected") is True

    def wait_slave_connected(self, name, timeout=20):
        return wait_for(lambda: self.slave_connected(name), timeout,
                        f"slave {name} to be connected", self.farm)

    def request_info(self, req_id):
        return self.get_json(f"/requests/{req_id}")

    def build(self, build_id):
        return self.get_json(f"/builds/{build_id}")

    def wait_build_started(self, req_id, timeout=30):
        """Waits until request req_id has a build; returns the build id."""
        def started():
            r = self.api_get(f"/requests/{req_id}")
            return r.status == 200 and r.json().get("build_id")
        return wait_for(started, timeout, f"request {req_id} to start a "
                        "build", self.farm)

    def wait_step_running(self, build_id, step, min_bytes=0, timeout=30):
        """Waits until step `step` of the build runs (or ran) and its log
        holds at least min_bytes."""
        def ok():
            r = self.api_get(f"/builds/{build_id}")
            if r.status != 200:
                return False
            steps = r.json().get("steps") or []
            if len(steps) <= step:
                return False
            s = steps[step]
            return (s["state"] in ("running", "done") and
                    (s["log"]["bytes"] or 0) >= min_bytes and s)
        return wait_for(ok, timeout, f"build {build_id} step {step} running "
                        f"with >= {min_bytes} log bytes", self.farm)

    def wait_build_finished(self, build_id, timeout=60):
        def done():
            r = self.api_get(f"/builds/{build_id}")
            return (r.status == 200 and r.json()["state"] == "finished"
                    and r.json())
        return wait_for(done, timeout, f"build {build_id} to finish",
                        self.farm, interval=0.2)

    def wait_request_done(self, req_id, timeout=60):
        """Waits until the request is done; returns its last build."""
        def done():
            r = self.api_get(f"/requests/{req_id}")
            return (r.status == 200 and r.json()["state"] == "done"
                    and r.json())
        req = wait_for(done, timeout, f"request {req_id} to be done",
                       self.farm, interval=0.2)
        assert req["build_id"], f"request done without a build: {req}"
        return self.wait_build_finished(req["build_id"], 30)

    def run_build(self, builder, timeout=60, **kw):
        """Forces builder and waits for the build; returns it."""
        return self.wait_request_done(self.force(builder, **kw), timeout)

    def step_log(self, build_id, step, headers=None):
        """The raw log of a step (asserting 200)."""
        r = self.api_get(f"/builds/{build_id}/steps/{step}/log",
                         headers=headers, timeout=120)
        assert r.status == 200, f"log of {build_id}/{step}: {r!r}"
        return r.body


class Slave:
    """A tf-slave process."""

    def __init__(self, farm, master, name, secret_file=None, basedir=None,
                 args=(), url=None, wrapper=None, log_level="debug"):
        self.farm = farm
        self.master = master
        self.name = name
        self.secret_file = Path(secret_file) if secret_file else \
            master.secret_path(name)
        self.basedir = Path(basedir) if basedir else \
            farm.tmp / f"slave-{name}"
        self.url = url or master.ws_url
        self.args = list(args)
        self.wrapper = list(wrapper or [])
        self.log_level = log_level
        self.log_path = farm.tmp / f"slave-{name}.log"
        self.proc = None

    def argv(self):
        return self.wrapper + [
            TF_SLAVE, "--master", self.url, "--name", self.name,
            "--secret-file", self.secret_file, "--basedir", self.basedir,
            "--backoff-min-ms", "100", "--backoff-max-ms", "1000",
            "--log-level", self.log_level] + self.args

    def start(self, wait_connected=True, timeout=20):
        self.proc = Proc(self.farm, f"slave {self.name}", self.argv(),
                         self.log_path)
        self.proc.may_exit = not wait_connected
        self.proc.start()
        if wait_connected:
            def up():
                if not self.proc.running():
                    raise AssertionError(
                        f"tf-slave {self.name} exited with status "
                        f"{self.proc.popen.poll()}\n" + self.farm.dump_logs())
                return self.master.slave_connected(self.name)
            wait_for(up, timeout, f"slave {self.name} to connect", self.farm)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.running()

    def signal(self, sig):
        self.proc.signal(sig)

    def stop(self, expect=0, timeout=30):
        self.proc.signal(signal.SIGTERM)
        rc = self.proc.wait_exit(timeout)
        if expect is not None:
            assert rc == expect, (
                f"tf-slave {self.name} exited with {rc} after SIGTERM, "
                f"expected {expect}\n" + self.farm.dump_logs())
        return rc

    def kill9(self):
        return self.proc.kill9()

    def wait_exit(self, timeout=30):
        return self.proc.wait_exit(timeout)

    def log_text(self):
        return self.proc.log_text() if self.proc else ""


# --- websocket client ---

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def ws_accept_key(key):
    return base64.b64encode(
        hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_encode_frame(opcode, payload, fin=True, mask=True, rsv=0,
                    length=None):
    """One frame. length overrides the advertised payload length (to lie
    about it in tests)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        key = os.urandom(4)
        head += key
        payload = _ws_mask(payload, key)
    return head + payload


def _ws_mask(data, key):
    if not data:
        return b""
    # XOR through big integers: fast enough for megabytes.
    k = (key * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")) \
        .to_bytes(len(data), "big")


class WSClosed(Exception):
    """The peer closed the connection (code and reason when it said so)."""

    def __init__(self, code=None, reason=""):
        super().__init__(f"websocket closed: {code} {reason!r}")
        self.code = code
        self.reason = reason


class WSClient:
    """A websocket client speaking just enough RFC 6455 for the tests."""

    def __init__(self, port, host="127.0.0.1", path="/slave",
                 protocol="testfarm-slave", timeout=10, farm=None,
                 rcvbuf=None):
        self.host, self.port, self.path = host, port, path
        # A fixed receive buffer (bytes) turns off the kernel's autotuning,
        # which on loopback can let one socket take 32 MiB (tcp_rmem): a
        # client that reads nothing then really is slow.
        self.rcvbuf = rcvbuf
        self.protocol = protocol
        self.timeout = scaled(timeout)
        self.sock = None
        self.buf = b""
        self.response_headers = {}
        self.status = None
        self.close_code = None
        self.close_reason = ""
        self.closed = False
        if farm is not None:
            farm._closers.append(self.abort)

    def connect(self):
        if self.rcvbuf:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                 self.rcvbuf)
            self.sock.settimeout(self.timeout)
            self.sock.connect((self.host, self.port))
        else:
            self.sock = socket.create_connection((self.host, self.port),
                                                 timeout=self.timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {self.path} HTTP/1.1",
                 f"Host: {self.host}:{self.port}",
                 "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if self.protocol:
            lines.append(f"Sec-WebSocket-Protocol: {self.protocol}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WSClosed(None, "connection closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *hdrs = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for h in hdrs:
            k, _, v = h.partition(":")
            self.response_headers[k.strip().lower()] = v.strip()
        if self.status != 101:
            raise AssertionError(f"websocket upgrade refused: {status_line}")
        assert self.response_headers.get("sec-websocket-accept") == \
            ws_accept_key(key), "bad Sec-WebSocket-Accept"
        return self

    # sending
    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, opcode, payload, **kw):
        self.send_raw(ws_encode_frame(opcode, payload, **kw))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text)

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def send_binary(self, data):
        self.send_frame(OP_BINARY, data)

    def close(self, code=1000, reason=""):
        try:
            self.send_frame(OP_CLOSE, struct.pack("!H", code) +
                            reason.encode())
        except OSError:
            pass
        self.abort()

    def abort(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.closed = True

    # receiving
    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("websocket read timed out")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                raise WSClosed(self.close_code, self.close_reason)
            self.buf += chunk

    def _take(self, n, deadline):
        self._fill(n, deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, timeout=None):
        """(opcode, payload, fin) of the next frame."""
        deadline = time.monotonic() + (scaled(timeout) if timeout
                                       else self.timeout)
        b0, b1 = self._take(2, deadline)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8, deadline))[0]
        key = self._take(4, deadline) if b1 & 0x80 else None
        payload = self._take(n, deadline)
        if key:
            payload = _ws_mask(payload, key)
        return b0 & 0x0F, payload, bool(b0 & 0x80)

    def recv_message(self, timeout=None, auto_pong=True):
        """("text", str) / ("binary", bytes); raises WSClosed on a close
        frame (answering it) or EOF. WebSocket pings are answered."""
        deadline = time.monotonic() + (scaled(timeout) if timeout
                                       else self.timeout)
        parts, kind = [], None
        while True:
            op, payload, fin = self.recv_frame(
                max(0.01, deadline - time.monotonic()) / TIMEOUT_SCALE)
            if op == OP_CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] \
                    if len(payload) >= 2 else None
                self.close_reason = payload[2:].decode("utf-8", "replace")
                try:
                    self.send_frame(OP_CLOSE, payload[:2])
                except OSError:
                    pass
                raise WSClosed(self.close_code, self.close_reason)
            if op == OP_PING:
                if auto_pong:
                    self.send_frame(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op in (OP_TEXT, OP_BINARY):
                kind = "text" if op == OP_TEXT else "binary"
                parts = [payload]
            else:
                parts.append(payload)
            if fin:
                data = b"".join(parts)
                return (kind, data.decode()) if kind == "text" else \
                    (kind, data)

    def recv_json(self, timeout=None, skip_pings=True):
        """The next control message as a dict; protocol pings are answered
        with pongs and skipped when skip_pings."""
        while True:
            kind, data = self.recv_message(timeout)
            assert kind == "text", f"expected a text frame, got {kind} " \
                f"{data[:100]!r}"
            msg = json.loads(data)
            if skip_pings and msg.get("type") == "ping":
                self.send_json({"type": "pong", "id": msg["id"]})
                continue
            return msg

    def wait_closed(self, timeout=10):
        """Reads until the peer closes; returns the close code (None when it
        just dropped the TCP connection). Other messages are discarded."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout("the websocket peer did not close")
            try:
                self.recv_message(left / TIMEOUT_SCALE)
            except WSClosed as e:
                return e.code
            except socket.timeout:
                raise WaitTimeout("the websocket peer did not close within "
                                  f"{scaled(timeout):g} s") from None


def hello_auth(secret, nonce):
    """hex(HMAC-SHA256(secret, nonce)) as the protocol says."""
    return hmac.new(secret.encode(), nonce.encode(), hashlib.sha256) \
        .hexdigest()


def output_frame(build_id, step, seq, payload, stream=1, kind=1,
                 length=None):
    """A binary output frame (docs/protocol.md, "Binary frames")."""
    n = len(payload) if length is None else length
    return struct.pack("!BBHIQQ", kind, stream, step, n, build_id, seq) + \
        payload


class HandSlave(WSClient):
    """A slave written from docs/protocol.md alone, driven by the test."""

    def __init__(self, master, name, secret=None, **kw):
        super().__init__(master.port, farm=master.farm, **kw)
        self.name = name
        self.secret = secret if secret is not None else \
            master.secret_path(name).read_text().split("\n")[0].strip()
        self.challenge = None
        self.welcome = None

    def handshake(self, protocol=PROTOCOL_VERSION, running=(), max_builds=1,
                  expect_welcome=True, **extra):
        self.connect()
        self.challenge = self.recv_json()
        assert self.challenge["type"] == "challenge", self.challenge
        hello = {"type": "hello", "protocol": protocol, "slave": self.name,
                 "auth": hello_auth(self.secret, self.challenge["nonce"]),
                 "version": "handslave 1", "platform": "python",
                 "tags": [], "max_builds": max_builds,
                 "running": list(running)}
        hello.update(extra)
        self.send_json(hello)
        if expect_welcome:
            self.welcome = self.recv_json()
            assert self.welcome["type"] == "welcome", self.welcome
        return self


# --- a fake master, to see how tf-slave reacts ---

class FakeMaster:
    """Accepts websocket connections and sends each one `challenge` (a dict)
    as its first message, then records what the client sends."""

    def __init__(self, farm, challenge):
        self.challenge = challenge
        self.received = []
        self.connections = 0
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        farm._closers.append(self.stop)

    def _serve(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c,),
                             daemon=True).start()

    def _handle(self, c):
        try:
            c.settimeout(30)
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = c.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            key = ""
            for line in head.split("\r\n")[1:]:
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
            while True:
                data = c.recv(65536)
                if not data:
                    return
                self.received.append(data)
        except OSError:
            return
        finally:
            c.close()

    def stop(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass


# --- TCP proxy ---

class Proxy:
    """Forwards 127.0.0.1:self.port to 127.0.0.1:target_port.

    cut() closes every open connection; until restore(), new connections
    are refused (the port stops listening: what a slave sees when the
    network or the master is down), or with cut(accept=True) accepted and
    closed at once (what a TCP load balancer with no backend does)."""

    def __init__(self, farm, target_port):
        self.target_port = target_port
        self.up = True
        self.lock = threading.Lock()
        self.pairs = []
        self.accepted = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.stopping = False
        self.lsock = None
        self.port = 0
        self._listen()
        farm._closers.append(self.stop)

    def _listen(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self.lsock = s
        threading.Thread(target=self._accept_loop, args=(s,),
                         daemon=True).start()

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.port}"

    def _accept_loop(self, lsock):
        while not self.stopping:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            with self.lock:
                up = self.up
            if not up:
                _hard_close(c)
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.target_port),
                                             timeout=5)
            except OSError:
                _hard_close(c)
                continue
            u.settimeout(None)
            with self.lock:
                if not self.up:
                    _hard_close(c)
                    _hard_close(u)
                    continue
                self.pairs.append((c, u))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(c, u, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, False),
                             daemon=True).start()

    def _pump(self, src, dst, upstream):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                if upstream:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
        except OSError:
            pass
        _hard_close(src)
        _hard_close(dst)

    def cut(self, accept=False):
        with self.lock:
            self.up = False
            pairs, self.pairs = self.pairs, []
            lsock = None if accept else self.lsock
            if lsock is not None:
                self.lsock = None
        if lsock is not None:
            _hard_close(lsock)
        for c, u in pairs:
            _hard_close(c)
            _hard_close(u)

    def restore(self):
        with self.lock:
            self.up = True
            relisten = self.lsock is None and not self.stopping
        if relisten:
            self._listen()

    def stop(self):
        self.stopping = True
        self.cut()


def _hard_close(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


# --- PostgreSQL ---

PG_BINDIR_DEFAULT = "/usr/lib/postgresql/15/bin"


def pg_bindir():
    """Where initdb and pg_ctl are: $TF_PG_BINDIR, `pg_config --bindir`
    or Debian 12's folder; None when PostgreSQL is not installed."""
    cands = [os.environ.get("TF_PG_BINDIR")]
    try:
        cands.append(subprocess.run(["pg_config", "--bindir"],
                                    capture_output=True, text=True,
                                    timeout=10).stdout.strip())
    except OSError:
        pass
    cands.append(PG_BINDIR_DEFAULT)
    for c in cands:
        if c and os.access(os.path.join(c, "initdb"), os.X_OK):
            return c
    return None


class PgCluster:
    """A real PostgreSQL server in a temp dir (initdb + pg_ctl), for the
    tests of the PostgreSQL engine. initdb refuses root, so as root the
    server runs as the `postgres` system user (runuser) in a directory it
    owns; its unix socket is in that directory (no port clash between
    parallel runs) and, with tcp=True, it listens on 127.0.0.1 too. The
    role `tf` is its superuser; no password (trust). One cluster per test
    session; new_database() gives each test a fresh database."""

    def __init__(self, tcp=False, fsync=False):
        self.bindir = pg_bindir()
        if not self.bindir:
            raise RuntimeError("PostgreSQL is not installed (apt-get install "
                               "postgresql; scripts/deps does)")
        import tempfile
        self.dir = Path(tempfile.mkdtemp(prefix="tf-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = free_port() if tcp else 5432 + random.randrange(20000)
        self.tcp = tcp
        self.fsync = fsync
        self.user = "tf"
        self._n = 0
        self.as_user = []
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, argv, timeout=60, check=True):
        r = subprocess.run(self.as_user + argv, capture_output=True,
                           text=True, timeout=scaled(timeout),
                           stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({r.returncode}): "
                               f"{r.stdout}{r.stderr}\n" + self.log_tail())
        return r

    def log_tail(self, lines=40):
        try:
            return tail(self.log.read_text(errors="replace"), lines)
        except OSError:
            return "(no server log)"

    def initdb(self):
        self._run([os.path.join(self.bindir, "initdb"), "-D", str(self.data),
                   "-A", "trust", "-U", self.user, "--no-sync", "-E", "UTF8",
                   "--locale", "C"])
        return self

    def start(self):
        opts = [f"-k {self.dir}", f"-p {self.port}",
                "-c listen_addresses='" + ("127.0.0.1" if self.tcp else "")
                + "'", "-c max_connections=200"]
        if not self.fsync:
            opts.append("-c fsync=off")
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", str(self.data),
                   "-l", str(self.log), "-w", "-t", "60", "-o",
                   " ".join(opts), "start"], timeout=90)
        return self

    def stop(self, mode="fast"):
        r = self._run([os.path.join(self.bindir, "pg_ctl"), "-D",
                       str(self.data), "-m", mode, "-w", "stop"],
                      check=False)
        if r.returncode != 0:
            # By its pid, never by name.
            try:
                pid = int((self.data / "postmaster.pid").read_text()
                          .split("\n")[0])
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass

    def destroy(self):
        self.stop()
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db="postgres"):
        """The URL a master is given: the unix socket, or 127.0.0.1."""
        if self.tcp:
            return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"
        return (f"postgresql://{self.user}@/{db}?host={self.dir}"
                f"&port={self.port}")

    @staticmethod
    def dbname(url):
        """The database name of a URL url() made."""
        return url.split("?")[0].rsplit("/", 1)[1]

    def psql(self, sql, db="postgres"):
        """Runs sql with psql; returns its output (unaligned, no headers)."""
        r = subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-q",
                            "-At", "-v", "ON_ERROR_STOP=1", "-h",
                            str(self.dir), "-p", str(self.port), "-U",
                            self.user, "-d", db, "-c", sql],
                           capture_output=True, text=True,
                           timeout=scaled(60), stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"psql: {sql}: {r.stderr}")
        return r.stdout

    def new_database(self, prefix="t"):
        """A fresh empty database; returns its name."""
        self._n += 1
        name = f"{prefix}_{os.getpid()}_{self._n}"
        self.psql(f"CREATE DATABASE {name}")
        return name


_SHARED_PG = None


def shared_pg_cluster():
    """One PgCluster for the whole process (TF_TEST_STORE=postgresql),
    started on first use and destroyed at exit."""
    global _SHARED_PG
    if _SHARED_PG is None:
        import atexit
        c = PgCluster()
        c.initdb().start()
        atexit.register(c.destroy)
        _SHARED_PG = c
    return _SHARED_PG


# --- the farm ---

class Farm:
    """Everything one test starts; cleaned up by cleanup()."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self._procs = []
        self._closers = []
        self.marker_key = "TF_HARNESS_RUN"
        self.marker_value = f"{os.getpid()}-{os.urandom(6).hex()}"

    # factories
    def master(self, config=None, start=True, **kw):
        m = Master(self, config, **kw)
        if start:
            m.start()
        return m

    def slave(self, master, name, start=True, **kw):
        s = Slave(self, master, name, **kw)
        if start:
            s.start()
        return s

    def proxy(self, target_port):
        return Proxy(self, target_port)

    def run(self, argv, timeout=60, **kw):
        """Runs a command to completion (with the harness marker in its
        environment) and returns the CompletedProcess (text mode)."""
        env = dict(kw.pop("env", None) or os.environ)
        env[self.marker_key] = self.marker_value
        try:
            return subprocess.run([str(a) for a in argv], capture_output=True,
                                  text=True, timeout=scaled(timeout), env=env,
                                  stdin=subprocess.DEVNULL, **kw)
        except subprocess.TimeoutExpired as e:
            raise WaitTimeout(f"{argv} did not finish within "
                              f"{scaled(timeout):g} s: {e.stdout!r} "
                              f"{e.stderr!r}") from None

    def unexpected_exits(self):
        """Descriptions of processes that exited although nobody stopped
        them and the test did not expect it."""
        out = []
        for p in self._procs:
            if p.may_exit or p.popen is None:
                continue
            rc = p.popen.poll()
            if rc is not None:
                p.may_exit = True  # report once
                out.append(f"{p.label} exited unexpectedly with status {rc}")
        return out

    # logs
    def logs(self):
        """(label, path) of every log file, without duplicates."""
        seen, out = set(), []
        for p in self._procs:
            if p.log_path not in seen:
                seen.add(p.log_path)
                out.append((p.label, p.log_path))
        return out

    def dump_logs(self, lines=80):
        parts = []
        for label, path in self.logs():
            try:
                text = path.read_bytes().decode("utf-8", "replace")
            except FileNotFoundError:
                text = "(no log)"
            parts.append(f"----- {label}: {path} (last {lines} lines) -----\n"
                         + tail(text, lines))
        return "\n".join(parts)

    # teardown
    def cleanup(self):
        for close in reversed(self._closers):
            try:
                close()
            except Exception:  # noqa: BLE001 - teardown must go on
                pass
        for p in self._procs:
            p.kill_group()
        # Step processes run in their own sessions; find them by the marker
        # every harness process passes down in its environment.
        for _ in range(3):
            pids = pids_with_env(f"{self.marker_key}={self.marker_value}")
            pids = [p for p in pids if pid_alive(p)]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError as e:
                    if e.errno != errno.ESRCH:
                        raise
            time.sleep(0.1)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def deterministic_bytes(n, seed=1):
    """n pseudo-random bytes, the same for the same seed."""
    return random.Random(seed).randbytes(n)


def steps_summary(build):
    """[(name, result)] of a build, for assertion messages."""
    return [(s["name"], s["result"]) for s in build["steps"]]


def simple_builder(name, steps, **kw):
    b = {"name": name, "steps": steps}
    b.update(kw)
    return b


def shell_step(name, command, **kw):
    s = {"name": name, "command": command}
    s.update(kw)
    return s


def poll_until_gone(pids, timeout, what, farm=None):
    return wait_for(lambda: not [p for p in pids if pid_alive(p)], timeout,
                    what, farm)


def select_readable(sock, timeout):
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)
