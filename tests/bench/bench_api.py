#!/usr/bin/python3
"""Latency of the status-page endpoints on a large store.

Fills a master's sqlite store with BUILDS builds of STEPS steps each (by
default 100,000 builds and 1,000,000 steps, spread over 10 builders), starts
the real tf-master on it, and times each endpoint the pages use over
REQUESTS keep-alive requests, reporting p50 and p99 in milliseconds.

    tests/bench/bench_api.py [--build-dir build] [--builds 100000]
                             [--steps 10] [--requests 300] [--keep DIR]
                             [--wrk SECONDS]

With --wrk, each hot endpoint is then loaded with wrk (Debian's `wrk`
package) for SECONDS at 1 and at 8 connections, reporting requests per
second and the p50 and p99 latency wrk measured (keep-alive; the answers
come from the master's cache of rendered answers after the first), and the
master's CPU time per answer (from /proc: user + system of all its
threads, over wrk's requests), which the machine's other load disturbs
far less than requests/s.

The figures are recorded in docs/release-engineers.md ("Speed"). This is a
benchmark, not a test: it prints numbers and exits 0 unless the master
cannot be started or an endpoint answers an error.
"""
import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
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
    a = ap.parse_args()
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
            print("\nload average %.2f %.2f %.2f" % os.getloadavg())
            print("wrk, %d s each: %-10s %10s %8s %8s %8s" % (
                a.wrk, "conns", "req/s", "p50 ms", "p99 ms", "CPU us"))
            for label, path in hot:
                for conns in (1, 8):
                    rps, w50, w99, us = wrk(port, path, conns, a.wrk, p.pid)
                    print("%-24s %5d %14.0f %8.2f %8.2f %8.1f" % (
                        label, conns, rps, w50, w99, us))
            print("load average %.2f %.2f %.2f" % os.getloadavg())
    finally:
        stop_master(p)
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
