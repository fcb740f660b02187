#!/usr/bin/python3
"""Latency of the status-page endpoints on a large store.

Fills a master's sqlite store with BUILDS builds of STEPS steps each (by
default 100,000 builds and 1,000,000 steps, spread over 10 builders), starts
the real tf-master on it, and times each endpoint the pages use over
REQUESTS keep-alive requests, reporting p50 and p99 in milliseconds.

    tests/bench/bench_api.py [--build-dir build] [--builds 100000]
                             [--steps 10] [--requests 300] [--keep DIR]
                             [--wrk SECONDS] [--slaves N [--busy RATE]]
                             [--rounds R]

With --wrk, each hot endpoint is then loaded with wrk (Debian's `wrk`
package) for SECONDS at 1 and at 8 connections, reporting requests per
second and the p50 and p99 latency wrk measured (keep-alive; the answers
come from the master's cache of rendered answers after the first), and the
master's CPU time per answer (from /proc: user + system of all its
threads, over wrk's requests), which the machine's other load disturbs
far less than requests/s.

With --slaves N (and --wrk), N emulated slaves (tests/bench's
tf-loadslaves, as bench_sched.py drives it) are connected to the master
for a second wrk pass; with --busy RATE, RATE builds per second are forced
round robin over the builders from a thread of this script for as long as
the pass lasts, each one step that sends --output-bytes of compiler-like
output (in --chunk-byte frames) and lasts --step-ms, so about RATE x
step-ms / 1000 builds are running at any moment. The two passes (no
slaves; N slaves and builds running) alternate --rounds times on the same
store, so both see the same machine load as nearly as can be; the slaves
disconnect between rounds. The load average (`uptime`) is printed before
and after each pass.

The figures are recorded in docs/release-engineers.md ("Speed"). This is a
benchmark, not a test: it prints numbers and exits 0 unless the master
cannot be started or an endpoint answers an error.
"""
import argparse
import http.client
import json
import os
import queue
import random
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_master(exe, d, port):
    log = open(os.path.join(d, "master.log"), "ab")
    p = subprocess.Popen([exe, "run", d], stdout=log, stderr=log)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/api/v1/master")
            if c.getresponse().status == 200:
                return p
        except OSError:
            time.sleep(0.1)
    p.kill()
    sys.exit("tf-master did not start; see %s/master.log" % d)


def stop_master(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)


def fill(db, builders, nbuilds, nsteps):
    """The steps claim 1000 bytes of log but none is stored: log_sealed
    says it is all sealed, else the master's idle walk (store/sqlite.c,
    maintain) would spend the run trying to seal a million logs that are
    not there, on the writer thread, while the API is measured."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA synchronous=OFF")
    t0 = time.time()
    now = int(time.time() * 1000) - nbuilds * 60_000
    per = nbuilds // len(builders)
    rows, steps, reqs = [], [], []
    bid = 0
    for b in builders:
        for n in range(1, per + 1):
            bid += 1
            created = now + bid * 60_000
            result = 0 if random.random() < 0.8 else 2
            reqs.append((bid, b, "done", "bench", "admin", 0, created,
                         created, created + 50_000, result, bid))
            rows.append((bid, b, n, bid, "s%d" % (bid % 50), "finished",
                         result, "bench", created, created + 1000,
                         created + 50_000, bid * 10, nsteps))
            for i in range(nsteps):
                steps.append((bid, i, "step%d" % i, "done",
                              result if i == nsteps - 1 else 0,
                              created + 1000 + i * 4000,
                              created + 1000 + (i + 1) * 4000, 4000, 0,
                              "exit 0", "[\"make\"]", 2, 1000, 20, 1000))
        if len(steps) > 200_000 or b == builders[-1]:
            con.executemany("INSERT INTO build_requests(id, builder, state, "
                            "reason, owner, priority, submitted_ms, "
                            "started_ms, finished_ms, result, build_id) "
                            "VALUES(?,?,?,?,?,?,?,?,?,?,?)", reqs)
            con.executemany("INSERT INTO builds(id, builder, number, "
                            "request_id, slave, state, result, reason, "
                            "created_ms, started_ms, finished_ms, last_seq, "
                            "nsteps) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            con.executemany("INSERT INTO steps(build_id, idx, name, state, "
                            "result, started_ms, finished_ms, duration_ms, "
                            "exit_code, text, command, flags, log_bytes, "
                            "log_lines, log_sealed) "
                            "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                            steps)
            rows, steps, reqs = [], [], []
    # Try jobs and changes for the console: one of each per ten builds,
    # each change in the blamelist of one build.
    jobs, changes, blame = [], [], []
    for k in range(1, nbuilds // 10 + 1):
        t = now + k * 600_000
        jobs.append((k, 1, "Dev %d" % (k % 40), "dev%d@example.org" % (k % 40),
                     "try %d" % k, "done", 0, t, t + 300_000))
        changes.append((k, "/srv/git/project", "main", "%040x" % k,
                        "Author %d" % (k % 40), "a%d@example.org" % (k % 40),
                        t, "change %d\n\nbody" % k, t + 1))
        blame.append((min(k * 10, bid), k))
    con.executemany("INSERT INTO try_jobs(id, user_id, author, email, "
                    "description, state, result, submitted_ms, finished_ms) "
                    "VALUES(?,?,?,?,?,?,?,?,?)", jobs)
    con.executemany("INSERT INTO changes(id, repository, branch, revision, "
                    "author, email, committer_ms, message, created_ms) "
                    "VALUES(?,?,?,?,?,?,?,?,?)", changes)
    con.executemany("INSERT INTO build_changes(build_id, change_id) "
                    "VALUES(?,?)", blame)
    for b in builders:
        con.execute("UPDATE builders SET builds_total = ?1, "
                    "last_build_id = (SELECT max(id) FROM builds WHERE "
                    "builder = ?2), last_complete_build_id = (SELECT max(id) "
                    "FROM builds WHERE builder = ?2) WHERE name = ?2",
                    (per, b))
        con.execute("UPDATE builders SET last_complete_result = (SELECT "
                    "result FROM builds WHERE id = last_complete_build_id), "
                    "last_complete_ms = (SELECT finished_ms FROM builds WHERE "
                    "id = last_complete_build_id) WHERE name = ?", (b,))
    con.commit()
    con.execute("ANALYZE")
    con.close()
    return time.time() - t0


def measure(port, path, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        times.append((time.perf_counter() - t) * 1000)
        if r.status != 200:
            sys.exit("%s answered %d: %s" % (path, r.status, body[:200]))
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1,
                                             int(len(times) * 0.99))], len(body)


def wrk_unit_ms(v):
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit) and not (unit == "s" and v.endswith(("us", "ms"))):
            return float(v[:-len(unit)]) * f
    return float(v)


def cpu_seconds(pid):
    """The CPU time (user + system, all threads) process pid has used."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port, path, conns, secs, pid):
    """(requests/s, p50 ms, p99 ms, master CPU us per request) from wrk at
    conns connections. The CPU time the master spent per answer depends
    far less on what else runs on the machine than requests/s do."""
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(["wrk", "-t", str(min(conns, 2)), "-c", str(conns),
                          "-d", "%ds" % secs, "--latency",
                          "http://127.0.0.1:%d%s" % (port, path)],
                         check=True, capture_output=True, text=True).stdout
    cpu = cpu_seconds(pid) - cpu0
    rps = p50 = p99 = None
    total = 0
    for line in out.splitlines():
        f = line.split()
        if "requests in" in line:
            total = int(f[0])
        if line.startswith("Requests/sec:"):
            rps = float(f[1])
        elif len(f) == 2 and f[0] == "50%":
            p50 = wrk_unit_ms(f[1])
        elif len(f) == 2 and f[0] == "99%":
            p99 = wrk_unit_ms(f[1])
        elif "Non-2xx" in line:
            sys.exit("wrk: %s answered errors: %s" % (path, line))
    return rps, p50, p99, cpu * 1e6 / max(total, 1)


def raise_nofile(need):
    """Raises RLIMIT_NOFILE (inherited by the master and the client) to at
    least need when it can."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        hard = need
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def slave_names(n):
    return ["load%05d" % i for i in range(1, n + 1)]


class Slaves:
    """tf-loadslaves with --control --json connected to the master, and
    with --busy a thread forcing `rate` builds per second."""

    def __init__(self, a, d, port, pid):
        exe = os.path.join(a.build_dir, "tests", "bench", "tf-loadslaves")
        argv = [exe, "--url", "ws://127.0.0.1:%d/slave" % port,
                "--secret-dir", os.path.join(d, "secrets"),
                "--slaves", str(a.slaves), "--prefix", "load",
                "--max-builds", "4", "--output-bytes", str(a.output_bytes),
                "--chunk", str(a.chunk), "--step-ms", str(a.step_ms),
                "--timeout", "86400", "--master-pid", str(pid),
                "--records", os.path.join(d, "records.tsv"),
                "--control", "--json"]
        self.log = open(os.path.join(d, "loadslaves.log"), "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.log,
                                  start_new_session=True)
        self.events = queue.Queue()
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()
        self.port, self.rate, self.forced = port, a.busy, 0
        self.builders = ["builder%02d" % i for i in range(a.builders)]
        self.token = open(os.path.join(d, "admin.token")).read().split()[0]
        self.stopping = threading.Event()
        self.feeder = None
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                ev = self.events.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                break
            if ev is None:
                break
            if ev.get("event") == "ready":
                if ev.get("failed"):
                    self.stop()
                    sys.exit("bench_api: %d slave links failed; see %s"
                             % (ev["failed"], d))
                return
        self.stop()
        sys.exit("bench_api: tf-loadslaves did not connect; see %s/"
                 "loadslaves.log and master.log" % d)

    def _read(self):
        for raw in self.p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if line.startswith("JSON "):
                self.events.put(json.loads(line[5:]))
        self.events.put(None)

    def _feed(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        hdr = {"Content-Type": "application/json",
               "Authorization": "Bearer " + self.token}
        t0 = time.time()
        while not self.stopping.is_set():
            due = t0 + self.forced / self.rate
            if due > time.time():
                time.sleep(due - time.time())
                continue
            c.request("POST", "/api/v1/builders/%s/force" % self.builders[
                self.forced % len(self.builders)],
                json.dumps({"reason": "bench busy"}), hdr)
            r = c.getresponse()
            body = r.read()
            if r.status != 201:
                print("bench_api: force answered %d: %s" % (r.status,
                                                            body[:200]))
                return
            self.forced += 1

    def busy(self):
        """Starts forcing builds; returns once builds are running."""
        if not self.rate:
            return
        self.feeder = threading.Thread(target=self._feed, daemon=True)
        self.feeder.start()
        time.sleep(3)  # the stream reaches its steady state

    def running(self, port):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/api/v1/master")
        r = json.loads(c.getresponse().read())
        return r.get("slaves_connected"), r.get("builds_running")

    def stop(self):
        self.stopping.set()
        if self.feeder:
            self.feeder.join(timeout=60)
        if self.p.poll() is None:
            try:
                self.p.stdin.write(b"quit\n")
                self.p.stdin.flush()
            except OSError:
                pass
            try:
                self.p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def wrk_pass(a, port, pid, hot, title):
    print("\n%s; load average %.2f %.2f %.2f" % ((title,) + os.getloadavg()))
    print("wrk, %d s each: %-10s %10s %8s %8s %8s" % (
        a.wrk, "conns", "req/s", "p50 ms", "p99 ms", "CPU us"))
    for label, path in hot:
        for conns in (1, 8):
            rps, w50, w99, us = wrk(port, path, conns, a.wrk, pid)
            print("%-24s %5d %14.0f %8.2f %8.2f %8.1f" % (
                label, conns, rps, w50, w99, us), flush=True)
    print("load average %.2f %.2f %.2f" % os.getloadavg(), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--builds", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--builders", type=int, default=10)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--keep", help="keep the master directory here")
    ap.add_argument("--wrk", type=int, default=0, metavar="SECONDS",
                    help="load the hot endpoints with wrk for SECONDS each")
    ap.add_argument("--slaves", type=int, default=0,
                    help="a second wrk pass with N emulated slaves")
    ap.add_argument("--busy", type=float, default=0, metavar="RATE",
                    help="with --slaves: force RATE builds/s during it")
    ap.add_argument("--output-bytes", type=int, default=16384,
                    help="output of each busy build's step (bytes)")
    ap.add_argument("--chunk", type=int, default=1024,
                    help="output frame size of the emulated slaves")
    ap.add_argument("--step-ms", type=int, default=2000,
                    help="how long each busy build's step lasts")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with --slaves: alternate the passes R times")
    a = ap.parse_args()
    if a.slaves and not a.wrk:
        ap.error("--slaves needs --wrk")
    if a.busy and not a.slaves:
        ap.error("--busy needs --slaves")
    if a.slaves < 0 or a.slaves > 10000 or a.busy < 0 or a.rounds < 1:
        ap.error("--slaves from 0 to 10000, --busy >= 0, --rounds >= 1")
    if a.slaves:
        raise_nofile(2 * a.slaves + 1024)
    exe = os.path.join(a.build_dir, "master", "tf-master")
    d = a.keep or tempfile.mkdtemp(prefix="tf-bench-")
    if os.path.exists(os.path.join(d, "master.json")):
        shutil.rmtree(d)
    port = free_port()
    subprocess.run([exe, "create", d, "--port", str(port), "--force"],
                   check=True, stdout=subprocess.DEVNULL)
    cfg = json.load(open(os.path.join(d, "master.json")))
    builders = ["builder%02d" % i for i in range(a.builders)]
    cfg["builders"] = [{"name": b, "steps": [{"name": "s", "command": "true"}]}
                       for b in builders]
    cfg["slaves"] = []
    for n in slave_names(a.slaves):
        with open(os.path.join(d, "secrets", n), "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        cfg["slaves"].append({"name": n, "secret_file": "secrets/" + n,
                              "max_builds": 4})
    json.dump(cfg, open(os.path.join(d, "master.json"), "w"))
    p = start_master(exe, d, port)  # creates the schema and builder rows
    stop_master(p)
    secs = fill(os.path.join(d, "state.sqlite"), builders, a.builds, a.steps)
    size = os.path.getsize(os.path.join(d, "state.sqlite")) / 1e6
    print("filled %d builds, %d steps in %.1f s (database %.0f MB)"
          % (a.builds, a.builds * a.steps, secs, size))
    p = start_master(exe, d, port)
    try:
        mid = int(time.time() * 1000) - a.builds * 30_000
        paths = [
            ("summary", "/api/v1/summary"),
            ("summary, one builder", "/api/v1/summary?builder=builder03"),
            ("badge", "/badge/builder03.svg"),
            ("waterfall, first page", "/api/v1/waterfall?limit=100"),
            ("waterfall, deep page", "/api/v1/waterfall?limit=100&before=%d"
             % mid),
            ("waterfall, one builder",
             "/api/v1/waterfall?limit=100&builder=builder03"),
            ("console, first page", "/api/v1/console"),
            ("console, deep page", "/api/v1/console?before=%d" % mid),
            ("builders", "/api/v1/builders"),
            ("one builder", "/api/v1/builders/builder03"),
            ("builds of a builder", "/api/v1/builders/builder03/builds"),
            ("builds, deep page", "/api/v1/builders/builder03/builds?before=%d"
             % (a.builds // a.builders // 2)),
            ("builder stats", "/api/v1/builders/builder03/stats"),
            ("one build", "/api/v1/builds/%d" % (a.builds // 2)),
        ]
        print("%-24s %9s %9s %9s" % ("endpoint", "p50 ms", "p99 ms", "bytes"))
        for label, path in paths:
            try:
                measure(port, path, 5)  # warm up
            except SystemExit as e:
                if "404" in str(e):
                    print("%-24s (not available: %s)" % (label, e))
                    continue
                raise
            p50, p99, size = measure(port, path, a.requests)
            print("%-24s %9.2f %9.2f %9d" % (label, p50, p99, size))
        if a.wrk:
            hot = [("summary", "/api/v1/summary"),
                   ("builders", "/api/v1/builders"),
                   ("one builder", "/api/v1/builders/builder03"),
                   ("waterfall, 100 builds", "/api/v1/waterfall?limit=100"),
                   ("one finished build", "/api/v1/builds/%d"
                    % (a.builds // 2))]
            if not a.slaves:
                wrk_pass(a, port, p.pid, hot, "no slaves")
            for rnd in range(1, (a.rounds if a.slaves else 0) + 1):
                wrk_pass(a, port, p.pid, hot, "round %d: no slaves" % rnd)
                t = time.time()
                sl = Slaves(a, d, port, p.pid)
                try:
                    print("\n%d slaves connected in %.1f s" % (
                        a.slaves, time.time() - t))
                    sl.busy()
                    n, running = sl.running(port)
                    title = "round %d: %s slaves connected, %s builds " \
                            "running (%.0f builds/s forced, %d bytes each, " \
                            "%d ms)" % (rnd, n, running, a.busy,
                                        a.output_bytes, a.step_ms)
                    f0 = sl.forced
                    t0 = time.time()
                    wrk_pass(a, port, p.pid, hot, title)
                    n, running = sl.running(port)
                    print("after: %s slaves connected, %s builds running; "
                          "%d builds forced during the pass (%.1f/s)"
                          % (n, running, sl.forced - f0,
                             (sl.forced - f0) / (time.time() - t0)))
                finally:
                    sl.stop()
                time.sleep(2 * a.step_ms / 1000 + 2)  # the builds end
    finally:
        stop_master(p)
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
