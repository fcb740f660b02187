"""tf-try --wait on the master's live feed (docs/committers.md, "Following
a job"): real master, real slaves, real git repositories, tf-try as a
committer runs it.

With --poll-ms 60000 a poller would see a 3-step job at most once or twice;
lines that appear as each step starts and ends, in a few seconds, can only
come from the live feed. The feed is then taken away in three ways, and
the output must still hold every line exactly once and in order: a TCP
proxy between tf-try and the master that refuses the /live upgrade (the
feed cannot be opened: tf-try polls), one that cuts every connection while
a step runs (the feed drops: tf-try polls, then opens it again), and a
master restart.
"""

import os
import re
import select
import socket
import subprocess
import threading
import time

import pytest

from tfharness import BUILD_DIR, scaled, wait_for
from test_try import (GIT_ENV, add_user, explain, job_id_of, make_repos,
                      start_farm, tf_try)

TF_TRY = BUILD_DIR / "try" / "tf-try"

pytestmark = pytest.mark.skipif(not os.access(TF_TRY, os.X_OK),
                                reason=f"{TF_TRY} is not built")

STEPS = [{"name": "one", "command": "echo one; sleep 1"},
         {"name": "two", "command": "echo two; sleep 1"},
         {"name": "three", "command": "echo three; sleep 1"}]
SLOW_STEPS = [{"name": "one", "command": "echo one; sleep 1"},
              {"name": "two", "command": "echo two; sleep 4"},
              {"name": "three", "command": "echo three; sleep 1"}]


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of the master. refuse_live: a
    connection whose first bytes ask for /live is closed at once (as a
    firewall or a proxy without websocket support would). cut() closes
    every connection open now (new ones still pass)."""

    def __init__(self, port, refuse_live=False, live_delay=0.0):
        self.target = port
        self.refuse_live = refuse_live
        self.live_delay = live_delay
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.conns = []
        self.lock = threading.Lock()
        self.live_seen = 0
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,),
                             daemon=True).start()

    def _serve(self, c):
        try:
            first = c.recv(65536)
        except OSError:
            c.close()
            return
        if first.startswith(b"GET /live"):
            self.live_seen += 1
            if self.refuse_live:
                c.close()
                return
            time.sleep(self.live_delay)
        try:
            u = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            c.close()
            return
        with self.lock:
            self.conns.append((c, u))
        u.sendall(first)
        socks = [c, u]
        try:
            while True:
                r, _, _ = select.select(socks, [], [], 0.5)
                if self.stopped:
                    break
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    (u if s is c else c).sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            for s in (c, u):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def cut(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for pair in conns:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.stopped = True
        self.sock.close()
        self.cut()


def farm_with(farm, steps):
    up, work = make_repos(farm.tmp)
    m = start_farm(farm, up, slaves=("s1",),
                   extra_builders=[{"name": "live", "steps": steps}])
    token = add_user(farm, m, "ann@example.org", "Ann")
    (work / "verdict").write_text("pass\n")
    return m, work, token


def popen_try(farm, work, url, token, *args):
    env = dict(os.environ)
    env.update(GIT_ENV)
    env.update({"HOME": str(farm.tmp / "home"), "TF_TRY_TOKEN": token,
                farm.marker_key: farm.marker_value})
    env.pop("XDG_CONFIG_HOME", None)
    (farm.tmp / "home").mkdir(exist_ok=True)
    out_path = farm.tmp / "tf-try.out"
    err_path = farm.tmp / "tf-try.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        p = subprocess.Popen([str(TF_TRY), "--url", url, "-b", "live",
                              "--wait", "-v", *args], cwd=work, env=env,
                             stdout=out, stderr=err,
                             stdin=subprocess.DEVNULL)
    return p, out_path, err_path


def expected_lines(build):
    """Every line a follower of the job must print, in order."""
    b = build
    return [f"live: build {b} started on slave s1",
            "live: step source started",
            "live: step source: SUCCESS",
            "live: step one started",
            "live: step one: SUCCESS",
            "live: step two started",
            "live: step two: SUCCESS",
            "live: step three started",
            "live: step three: SUCCESS",
            f"live: build {b}: SUCCESS"]


def assert_each_once_in_order(text, build, may_miss=()):
    """Every progress line once, in order; lines in may_miss may be absent
    (a step that started and ended while nothing was watching)."""
    progress = [ln for ln in text.splitlines() if ln.startswith("live: ")]
    want = [w for w in expected_lines(build)
            if not any(w.startswith(x) for x in may_miss)
            or any(p.startswith(w) for p in progress)]
    got = []
    for w in want:
        hits = [i for i, p in enumerate(progress) if p.startswith(w)
                and (p == w or p[len(w)] in " (")]
        assert len(hits) == 1, (w, progress)
        got.append(hits[0])
    assert got == sorted(got), progress
    assert len(progress) == len(want), (want, progress)


@pytest.mark.timeout(120)
def test_wait_follows_the_live_feed_as_steps_end(farm):
    """With polls a minute apart, each step's start and end appear as they
    happen: they come from the live feed. Durations are the slave's own,
    the same the API gives, and tf-try exits 0 right after the end."""
    m, work, token = farm_with(farm, STEPS)
    t0 = time.monotonic()
    r = tf_try(farm, m, work, "-b", "live", "--wait", "--poll-ms", "60000",
               "-v", token=token)
    took = time.monotonic() - t0
    assert r.returncode == 0, explain(r)
    job = m.get_json(f"/jobs/{job_id_of(r)}")
    build = job["builders"][0]["build"]
    assert_each_once_in_order(r.stdout, build["id"])
    for s in build["steps"]:
        secs = s["duration_ms"] // 100 / 10
        assert f"live: step {s['name']}: SUCCESS ({secs:.1f} s)\n" in \
            r.stdout, (s, r.stdout)
    assert f"job {job['id']}: SUCCESS (every build passed)" in r.stdout
    assert "live feed SUBSCRIBING -> UP" in r.stderr, r.stderr
    assert took < scaled(30), (took, r.stdout)


@pytest.mark.timeout(120)
def test_wait_subscribes_before_submitting(farm):
    """The live feed takes half a second to come up (a slow proxy), longer
    than the build takes to start and its first step to run: tf-try
    subscribes before it submits, so it still prints every step's start
    and end, each once, in order."""
    m, work, token = farm_with(farm, STEPS)
    port = int(m.url.rsplit(":", 1)[1])
    proxy = Proxy(port, live_delay=0.5)
    try:
        r = tf_try(farm, None, work, "--url", proxy.url, "-b", "live",
                   "--wait", "--poll-ms", "60000", "-v", token=token,
                   url=False)
        assert r.returncode == 0, explain(r)
        build = m.get_json(f"/jobs/{job_id_of(r)}")["builders"][0]["build"]
        assert_each_once_in_order(r.stdout, build["id"])
        assert proxy.live_seen == 1, proxy.live_seen
        assert "live feed SUBSCRIBING -> UP" in r.stderr, r.stderr
    finally:
        proxy.close()


@pytest.mark.timeout(120)
def test_wait_polls_when_the_live_feed_cannot_be_opened(farm):
    """A proxy that will not pass /live: tf-try says so with -v, polls at
    --poll-ms and prints every line once; without -v nothing extra is on
    stderr."""
    m, work, token = farm_with(farm, STEPS)
    port = int(m.url.rsplit(":", 1)[1])
    proxy = Proxy(port, refuse_live=True)
    try:
        r = tf_try(farm, None, work, "--url", proxy.url, "-b", "live",
                   "--wait", "--poll-ms", "200", "-v", token=token,
                   url=False)
        assert r.returncode == 0, explain(r)
        build = m.get_json(f"/jobs/{job_id_of(r)}")["builders"][0]["build"]
        # A 200 ms poll may miss a start, never an end.
        assert_each_once_in_order(r.stdout, build["id"],
                                  may_miss=("live: step source started",))
        assert proxy.live_seen >= 1
        assert "cannot open the live feed" in r.stderr or \
            "the live feed closed" in r.stderr, r.stderr
        assert "polling" in r.stderr, r.stderr
        assert "-> UP" not in r.stderr, r.stderr
        r = tf_try(farm, None, work, "--url", proxy.url, "status",
                   str(job_id_of(r)), "--wait", token=token, url=False)
        assert r.returncode == 0 and r.stderr == "", explain(r)
    finally:
        proxy.close()


@pytest.mark.timeout(120)
def test_wait_resumes_when_the_live_link_drops(farm):
    """The link is cut while step two runs: tf-try polls, opens the feed
    again and goes on; no line is lost or printed twice."""
    m, work, token = farm_with(farm, SLOW_STEPS)
    port = int(m.url.rsplit(":", 1)[1])
    proxy = Proxy(port)
    try:
        p, out_path, err_path = popen_try(farm, work, proxy.url, token,
                                          "--poll-ms", "300")
        try:
            wait_for(lambda: b"step two started" in out_path.read_bytes(),
                     60, "tf-try to show step two running", farm)
            proxy.cut()
            p.wait(timeout=scaled(60))
        finally:
            if p.poll() is None:
                p.kill()
        text = out_path.read_text(errors="replace")
        err = err_path.read_text(errors="replace")
        assert p.returncode == 0, (text, err)
        build = m.get_json(f"/jobs/{job_id_of_text(text)}")[
            "builders"][0]["build"]
        assert_each_once_in_order(text, build["id"],
                                  may_miss=("live: step three started",))
        assert "polling until it is back" in err, err
        assert err.count("SUBSCRIBING -> UP") >= 2, err
        assert proxy.live_seen >= 2
    finally:
        proxy.close()


def job_id_of_text(text):
    return int(re.search(r"^job (\d+):", text, re.M).group(1))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["stop", "kill9"])
def test_wait_on_the_live_feed_survives_a_master_restart(farm, how):
    """The master stops (SIGTERM) or is killed (SIGKILL) while step two
    runs and starts again: the HTTP retry message, then the feed again;
    every line once, in order."""
    m, work, token = farm_with(farm, SLOW_STEPS)
    p, out_path, err_path = popen_try(farm, work, m.url, token,
                                      "--poll-ms", "300")
    try:
        wait_for(lambda: b"step two started" in out_path.read_bytes(), 60,
                 "tf-try to show step two running", farm)
        getattr(m, how)()
        time.sleep(1)
        m.start()
        p.wait(timeout=scaled(60))
    finally:
        if p.poll() is None:
            p.kill()
    text = out_path.read_text(errors="replace")
    err = err_path.read_text(errors="replace")
    assert p.returncode == 0, (text, err)
    build = m.get_json(f"/jobs/{job_id_of_text(text)}")["builders"][0][
        "build"]
    assert_each_once_in_order(text, build["id"],
                              may_miss=("live: step three started",))
    assert "retrying for up to 60 s" in err, err
    assert err.count("SUBSCRIBING -> UP") >= 2, err


@pytest.mark.timeout(120)
def test_no_live_polls_only(farm):
    """--no-live never opens the feed (the proxy sees no /live request),
    and the job is followed to its end by polls alone."""
    m, work, token = farm_with(farm, STEPS)
    port = int(m.url.rsplit(":", 1)[1])
    proxy = Proxy(port)
    try:
        r = tf_try(farm, None, work, "--url", proxy.url, "-b", "live",
                   "--wait", "--no-live", "--poll-ms", "2000", token=token,
                   url=False)
        assert r.returncode == 0, explain(r)
        assert proxy.live_seen == 0
        build = m.get_json(f"/jobs/{job_id_of(r)}")["builders"][0]["build"]
        assert_each_once_in_order(r.stdout, build["id"], may_miss=(
            "live: step source started", "live: step one started",
            "live: step two started", "live: step three started"))
        assert "live feed" not in r.stderr, r.stderr
    finally:
        proxy.close()
