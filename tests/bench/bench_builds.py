#!/usr/bin/python3
"""How fast builds start, stream and end, with real processes.

Three benchmarks, one command each, against the real tf-master and
tf-slave of a build directory on 127.0.0.1:

    tests/bench/bench_builds.py latency    [--runs 50]
    tests/bench/bench_builds.py ingest     [--mib 200] [--runs 3]
    tests/bench/bench_builds.py throughput [--builds 2000] [--slaves 4]
                                           [--max-builds 2]

  latency     a forced build's first step starts this long after the
              POST .../force is sent (the client's clock against the
              step's started_ms, both on this machine), one idle slave,
              one build at a time; p50, p90 and max in ms.
  ingest      a step that cats a file of compiler-like output (--mib MiB,
              generated once, deterministic) into the master: MiB/s from
              the step's start to the moment the whole log is stored and
              the build has ended (polled every 20 ms), and the stored
              log checked byte-exact by its length and SHA-256.
  throughput  --builds trivial builds (one step: `true`) queued while
              the --slaves slaves (of --max-builds builds each) are
              stopped (SIGSTOP), then released (SIGCONT): builds per
              second from the release to the last build's end (its
              finished_ms on the master's clock).

Common options: --build-dir DIR (default build/), --keep DIR (keep the
farm's directory). With TF_TEST_STORE=postgresql in the environment the
master stores into a fresh database on a PostgreSQL server the harness
starts in a temp dir (tfharness.PgCluster; fsync off, as for every test
server), instead of sqlite. The master and slaves log at "info". The figures go to
docs/internals.md ("Speed of the storage path"). This is a benchmark, not
a test: it prints numbers and exits 0 unless the farm cannot run or a
build fails.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def harness(build_dir):
    """Imports tests/integration/tfharness.py for build_dir's binaries."""
    os.environ["TF_BUILD_DIR"] = str(Path(build_dir).resolve())
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    import tfharness  # noqa: E402 - after the environment is set
    return tfharness


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


def compiler_log(path, mib):
    """Writes mib MiB of compiler-like output (commands, warnings, notes),
    the same bytes every time; returns (size, sha256)."""
    rnd = random.Random(11)
    dirs = ["src/core", "src/net", "src/io", "lib/util", "tests/unit"]
    words = ["buffer", "index", "count", "state", "node", "len", "ptr",
             "result", "value", "entry", "flags", "offset"]
    h = hashlib.sha256()
    size = 0
    want = mib * 1024 * 1024
    with open(path, "wb") as f:
        while size < want:
            lines = []
            for _ in range(200):
                d = rnd.choice(dirs)
                name = "%s_%d" % (rnd.choice(words), rnd.randrange(400))
                r = rnd.random()
                if r < 0.7:
                    lines.append("gcc -O2 -g -Wall -Wextra -I include -c "
                                 "%s/%s.c -o build/%s/%s.o\n"
                                 % (d, name, d, name))
                elif r < 0.9:
                    lines.append("%s/%s.c:%d:%d: warning: unused variable "
                                 "'%s' [-Wunused-variable]\n"
                                 % (d, name, rnd.randrange(2000),
                                    rnd.randrange(80), rnd.choice(words)))
                else:
                    lines.append("%s/%s.c:%d:%d: note: in expansion of macro "
                                 "'CHECK_%s'\n"
                                 % (d, name, rnd.randrange(2000),
                                    rnd.randrange(80),
                                    rnd.choice(words).upper()))
            block = "".join(lines).encode()
            block = block[:want - size]
            f.write(block)
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def step0_started_ms(m, build_id):
    b = m.build(build_id)
    s = (b.get("steps") or [{}])[0]
    return s.get("started_ms")


def bench_latency(th, farm, a):
    m = farm.master({
        "name": "bench", "slaves": [{"name": "s1"}],
        "builders": [{"name": "quick", "steps": [
            {"name": "noop", "command": ["true"]}]}]}, log_level="info")
    farm.slave(m, "s1", log_level="info")
    m.run_build("quick", timeout=60)  # warm up: workdir made, paths cached
    lat, master_side = [], []
    for _ in range(a.runs):
        t0 = time.time() * 1000
        req = m.force("quick")
        b = m.wait_request_done(req, timeout=60)
        if b["result"] != "SUCCESS":
            sys.exit("a build failed: %s" % json.dumps(b)[:500])
        started = step0_started_ms(m, b["id"])
        lat.append(started - t0)
        r = m.request_info(req)
        master_side.append(started - r["submitted_ms"])
    print("forced build -> first step started, %d runs (ms):" % a.runs)
    print("  client POST -> step start: p50 %.1f  p90 %.1f  max %.1f"
          % (pct(lat, 0.5), pct(lat, 0.9), max(lat)))
    print("  request queued -> step start: p50 %.1f  p90 %.1f  max %.1f"
          % (pct(master_side, 0.5), pct(master_side, 0.9),
             max(master_side)))


def bench_ingest(th, farm, a):
    data = farm.tmp / "compiler.log"
    size, digest = compiler_log(data, a.mib)
    m = farm.master({
        "name": "bench", "slaves": [{"name": "s1"}],
        "builders": [{"name": "big", "steps": [
            {"name": "cat", "command": ["cat", str(data)]}]}]},
        log_level="info")
    farm.slave(m, "s1", log_level="info")
    rates = []
    for _ in range(a.runs):
        req = m.force("big")
        bid = m.wait_build_started(req, timeout=60)

        def stored():
            b = m.build(bid)
            s = (b.get("steps") or [{}])[0]
            return (b["state"] == "finished" and
                    (s.get("log") or {}).get("bytes") == size and b)
        b = th.wait_for(stored, 600, "the whole log stored", farm,
                        interval=0.02)
        t1 = time.time() * 1000
        if b["result"] != "SUCCESS":
            sys.exit("the build failed: %s" % json.dumps(b)[:500])
        started = b["steps"][0]["started_ms"]
        secs = (t1 - started) / 1000
        rates.append(size / (1024 * 1024) / secs)
        log = m.step_log(bid, 0)
        if len(log) != size or hashlib.sha256(log).hexdigest() != digest:
            sys.exit("the stored log differs from the file")
    if m.store:
        # PostgreSQL (TF_TEST_STORE=postgresql): the database's own size.
        c = th.shared_pg_cluster()
        dbsize = int(c.psql("SELECT pg_database_size(current_database())",
                            db=c.dbname(m.store)))
    else:
        dbsize = os.path.getsize(m.db_path)
    print("ingest of a %d MiB compiler-like log from a file-fed step, "
          "%d runs (%s):" % (a.mib, a.runs,
                             "postgresql" if m.store else "sqlite"))
    print("  MiB/s: median %.1f  min %.1f  max %.1f"
          % (pct(rates, 0.5), min(rates), max(rates)))
    print("  database %.0f MiB after %d runs (%.0f%% of the raw logs)"
          % (dbsize / 1048576, a.runs, 100.0 * dbsize / (size * a.runs)))


def bench_throughput(th, farm, a):
    names = ["s%d" % i for i in range(1, a.slaves + 1)]
    m = farm.master({
        "name": "bench", "slaves": [{"name": n, "max_builds": a.max_builds}
                                    for n in names],
        "builders": [{"name": "t", "steps": [
            {"name": "noop", "command": ["true"]}]}]}, log_level="info")
    slaves = [farm.slave(m, n, log_level="info") for n in names]
    m.run_build("t", timeout=60)  # warm up
    import http.client
    import signal
    c = http.client.HTTPConnection("127.0.0.1", m.port, timeout=60)
    hdr = {"Content-Type": "application/json",
           "Authorization": "Bearer " + m.token()}
    body = json.dumps({"reason": "bench"})
    # Queue everything with the slaves stopped, so the figure is the
    # farm's and not the rate this client posts at.
    for s in slaves:
        os.kill(s.pid, signal.SIGSTOP)
    try:
        for _ in range(a.builds):
            c.request("POST", "/api/v1/builders/t/force", body, hdr)
            r = c.getresponse()
            out = r.read()
            if r.status != 201:
                sys.exit("force answered %d: %s" % (r.status, out[:200]))
    finally:
        t0 = time.time() * 1000
        for s in slaves:
            os.kill(s.pid, signal.SIGCONT)

    def drained():
        b = m.get_json("/builders/t")
        return b["pending"] == 0 and b["running"] == 0 and b
    th.wait_for(drained, 900, "every build to end", farm, interval=0.05)
    last = m.get_json("/builders/t/builds?limit=1")["builds"][0]
    builds = m.get_json("/builders/t/builds?limit=200")["builds"]
    bad = [b for b in builds if b["result"] != "SUCCESS"]
    if bad:
        sys.exit("builds failed: %s" % json.dumps(bad[:3])[:500])
    secs = (last["finished_ms"] - t0) / 1000
    print("%d trivial builds queued, then run on %d slaves x %d builds "
          "each:" % (a.builds, a.slaves, a.max_builds))
    print("  %.0f builds/s (%.2f s from the slaves' release to the last "
          "build's end)" % (a.builds / secs, secs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["latency", "ingest", "throughput"])
    ap.add_argument("--build-dir", default=str(ROOT / "build"))
    ap.add_argument("--keep", help="keep the farm's directory here")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--builds", type=int, default=2000)
    ap.add_argument("--slaves", type=int, default=4)
    ap.add_argument("--max-builds", type=int, default=2)
    a = ap.parse_args()
    if a.runs is None:
        a.runs = 50 if a.what == "latency" else 3
    th = harness(a.build_dir)
    if a.keep:
        d = Path(a.keep)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    else:
        d = Path(tempfile.mkdtemp(prefix="tf-bench-"))
    farm = th.Farm(d)
    try:
        {"latency": bench_latency, "ingest": bench_ingest,
         "throughput": bench_throughput}[a.what](th, farm, a)
    finally:
        farm.cleanup()
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
