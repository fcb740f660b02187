#!/usr/bin/python3
"""Log ingest, storage size and tail reads; forced build -> step start.

Two benchmarks against the real tf-master and tf-slave of a build
directory on 127.0.0.1 (the storage baseline for issue 13 and the build
path figures of issue 11):

  ingest   a step that runs `cat FILE` on a real tf-slave, FILE being
           --mib MiB of compiler and ctest output (tests/bench/
           compilerlog.py, the same bytes every time, cached in the build
           directory). For each of --runs builds: MiB/s from the step's
           start to the moment the whole log is stored and the build has
           ended (polled every 20 ms); how much the database grew per raw
           byte, as sqlite sees it (page_count x page_size from a read-only
           connection, i.e. after a checkpoint) and on disk with the WAL
           (the database and -wal files); the stored log checked byte-exact
           (length and SHA-256); then the time to read the last 64 KiB
           through the API (`Range: bytes=-65536`, and `?start=SIZE-65536`)
           and 64 KiB from the middle, each --tail-reads times; the CPU
           time per MiB of the master and the slave (all threads), and of
           the master's loop, storage writer and log sealer threads. After the
           master stops (its last connection checkpoints the WAL), the
           database file's size.
  latency  a forced build of one `true` step on one idle real tf-slave,
           --latency-runs times one after another: the time from the
           client's POST .../force to the step's started_ms (the slave's
           clock, the same machine), and from the request's submitted_ms
           (the master's clock) to it; p50, p90, p99, max.

    tests/bench/bench_ingest.py [--only ingest|latency] [--mib 200]
        [--runs 3] [--tail-reads 50] [--latency-runs 50]
        [--build-dir build] [--keep DIR] [--log FILE]

The master and slave log at "info". The figures are recorded in
docs/release-engineers.md ("Speed"). This is a benchmark, not a test: it
prints numbers and exits 0 unless the farm cannot run, a build fails or a
log does not read back exactly.
"""
import argparse
import hashlib
import http.client
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import compilerlog  # noqa: E402

TAIL = 65536


def harness(build_dir):
    """Imports tests/integration/tfharness.py for build_dir's binaries."""
    os.environ["TF_BUILD_DIR"] = str(Path(build_dir).resolve())
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    import tfharness  # noqa: E402 - after the environment is set
    return tfharness


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round((len(v) - 1) * p)))]


def dist(values):
    return "p50 %.2f  p90 %.2f  p99 %.2f  max %.2f" % (
        pct(values, 0.5), pct(values, 0.9), pct(values, 0.99), max(values))


def thread_cpu(pid):
    """CPU seconds per thread name of process pid: the master names its
    storage writer "tf-writer" and its log sealer "tf-sealer"; its loop
    thread keeps the process's name. Threads of one name are added up."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                head, rest = f.read().rsplit(")", 1)
        except OSError:
            continue  # the thread ended meanwhile
        name = head.split("(", 1)[1]
        fields = rest.split()
        out[name] = out.get(name, 0.0) + (
            int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


MASTER_THREADS = (("tf-master", "loop"), ("tf-writer", "writer"),
                  ("tf-sealer", "sealer"))


def cpu_seconds(pid):
    """CPU time (user + system, all threads) process pid has used."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_avg():
    return "%.2f %.2f %.2f" % os.getloadavg()


def log_file(a):
    """The generated log (made once per size and kept in the build
    directory) or --log; returns (path, size, sha256)."""
    if a.log:
        h = hashlib.sha256()
        size = 0
        with open(a.log, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
                size += len(block)
        return Path(a.log).resolve(), size, h.hexdigest()
    cache = Path(a.build_dir).resolve() / "bench-cache"
    cache.mkdir(exist_ok=True)
    path = cache / ("compilerlog-%gMiB-seed13.log" % a.mib)
    meta = path.with_suffix(".sha256")
    if path.exists() and meta.exists():
        size, digest = meta.read_text().split()
        if path.stat().st_size == int(size):
            return path, int(size), digest
    t = time.time()
    size, digest = compilerlog.generate(path, int(a.mib * 1024 * 1024), 13)
    meta.write_text("%d %s\n" % (size, digest))
    print("generated %s (%d bytes) in %.1f s" % (path, size,
                                                 time.time() - t))
    return path, size, digest


def db_sizes(db):
    """(logical bytes as sqlite sees the database, bytes on disk of the
    database file and its WAL)."""
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    psize = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    disk = 0
    for suffix in ("", "-wal"):
        try:
            disk += os.path.getsize(str(db) + suffix)
        except FileNotFoundError:
            pass
    return pages * psize, disk


def read_log(port, build_id, headers=None, query=""):
    """GET a step log; returns (status, body, seconds)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t = time.perf_counter()
    c.request("GET", "/api/v1/builds/%d/steps/0/log%s" % (build_id, query),
              headers=headers or {})
    r = c.getresponse()
    body = r.read()
    secs = time.perf_counter() - t
    c.close()
    return r.status, body, secs


def log_sha256(port, build_id):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("GET", "/api/v1/builds/%d/steps/0/log" % build_id)
    r = c.getresponse()
    if r.status != 200:
        sys.exit("bench_ingest: the log answered %d" % r.status)
    h = hashlib.sha256()
    n = 0
    for block in iter(lambda: r.read(1 << 20), b""):
        h.update(block)
        n += len(block)
    c.close()
    return n, h.hexdigest()


def time_reads(port, build_id, n, expect, **kw):
    """Times n reads on one fresh connection each (as a page opening a
    log does); checks the first answer's bytes."""
    times = []
    for i in range(n):
        status, body, secs = read_log(port, build_id, **kw)
        if status not in (200, 206):
            sys.exit("bench_ingest: log range answered %d: %r"
                     % (status, body[:200]))
        if i == 0 and body != expect:
            sys.exit("bench_ingest: a log range read back %d bytes that "
                     "differ from the file's" % len(body))
        times.append(secs * 1000)
    return times


def bench_ingest(th, farm, a):
    path, size, digest = log_file(a)
    with open(path, "rb") as f:
        f.seek(size - TAIL)
        tail = f.read()
        f.seek(size // 2)
        middle = f.read(TAIL)
    m = farm.master({
        "name": "bench-ingest", "slaves": [{"name": "s1"}],
        "builders": [
            {"name": "big", "steps": [{"name": "cat",
                                       "command": ["cat", str(path)]}]},
            {"name": "quick", "steps": [{"name": "noop",
                                         "command": ["true"]}]}]},
        log_level="info")
    sl = farm.slave(m, "s1", log_level="info")
    m.run_build("quick", timeout=60)  # warm up: workdir made
    print("ingest of a %.0f MiB compiler-like log from a file-fed step "
          "(cat), %d runs; load average %s"
          % (size / 1048576, a.runs, load_avg()))
    first_logical, first_disk = db_sizes(m.db_path)
    rates, grow_logical, grow_disk, mcpu, scpu = [], [], [], [], []
    tcpu = {}  # master thread label -> CPU ms per MiB of each run
    tails, tails_start, middles = [], [], []
    for run in range(1, a.runs + 1):
        before_logical, before_disk = db_sizes(m.db_path)
        m_cpu0, s_cpu0 = cpu_seconds(m.proc.pid), cpu_seconds(sl.proc.pid)
        m_thr0 = thread_cpu(m.proc.pid)
        req = m.force("big")
        bid = m.wait_build_started(req, timeout=60)

        def stored():
            b = m.build(bid)
            s = (b.get("steps") or [{}])[0]
            return (b["state"] == "finished" and
                    (s.get("log") or {}).get("bytes") == size and b)
        b = th.wait_for(stored, 900, "the whole log stored", farm,
                        interval=0.02)
        t_end = time.time() * 1000
        mcpu.append((cpu_seconds(m.proc.pid) - m_cpu0) * 1000 /
                    (size / 1048576))
        scpu.append((cpu_seconds(sl.proc.pid) - s_cpu0) * 1000 /
                    (size / 1048576))
        m_thr = thread_cpu(m.proc.pid)
        for name, label in MASTER_THREADS:
            tcpu.setdefault(label, []).append(
                (m_thr.get(name, 0.0) - m_thr0.get(name, 0.0)) * 1000 /
                (size / 1048576))
        if b["result"] != "SUCCESS":
            sys.exit("bench_ingest: the build failed: %s"
                     % json.dumps(b)[:500])
        secs = (t_end - b["steps"][0]["started_ms"]) / 1000
        rates.append(size / 1048576 / secs)
        after_logical, after_disk = db_sizes(m.db_path)
        grow_logical.append((after_logical - before_logical) / size)
        grow_disk.append((after_disk - before_disk) / size)
        n, got = log_sha256(m.port, bid)
        if n != size or got != digest:
            sys.exit("bench_ingest: the stored log (%d bytes, %s) differs "
                     "from the file (%d bytes, %s)" % (n, got, size, digest))
        tails += time_reads(m.port, bid, a.tail_reads, tail,
                            headers={"Range": "bytes=-%d" % TAIL})
        tails_start += time_reads(m.port, bid, a.tail_reads, tail,
                                  query="?start=%d" % (size - TAIL))
        middles += time_reads(m.port, bid, a.tail_reads, middle,
                              headers={"Range": "bytes=%d-%d"
                                       % (size // 2, size // 2 + TAIL - 1)})
        print("  run %d: %.1f MiB/s (%.2f s); database +%.1f%% of the raw "
              "log (logical), +%.1f%% on disk with the WAL; log read back "
              "byte-exact; CPU per MiB: master %.1f ms, slave %.1f ms"
              % (run, rates[-1], secs, 100 * grow_logical[-1],
                 100 * grow_disk[-1], mcpu[-1], scpu[-1]))
    last_logical, last_disk = db_sizes(m.db_path)
    wal = os.path.getsize(str(m.db_path) + "-wal") \
        if os.path.exists(str(m.db_path) + "-wal") else 0
    m.stop()
    closed = os.path.getsize(m.db_path)
    raw = size * a.runs
    print("  MiB/s: median %.1f  min %.1f  max %.1f"
          % (pct(rates, 0.5), min(rates), max(rates)))
    print("  CPU ms per MiB (all threads; far less disturbed by other load "
          "than MiB/s): master median %.1f, slave median %.1f"
          % (pct(mcpu, 0.5), pct(scpu, 0.5)))
    print("  master CPU ms per MiB by thread (median): %s"
          % ", ".join("%s %.1f" % (label, pct(tcpu[label], 0.5))
                      for _, label in MASTER_THREADS))
    print("  database growth per raw byte: logical %.1f%% (median of runs), "
          "on disk with the WAL %.1f%% (median), %.1f%% for the first run"
          % (100 * pct(grow_logical, 0.5), 100 * pct(grow_disk, 0.5),
             100 * grow_disk[0]))
    print("  after %d runs (%.0f MiB raw): database %.1f MiB + WAL %.1f MiB "
          "= %.1f%% of raw; after the master stopped: %.1f MiB (%.1f%% of "
          "raw; the empty farm's database was %.2f MiB)"
          % (a.runs, raw / 1048576, (last_disk - wal) / 1048576,
             wal / 1048576, 100 * (last_disk - first_disk) / raw,
             closed / 1048576, 100 * (closed - first_logical) / raw,
             first_logical / 1048576))
    print("  last 64 KiB, Range: bytes=-65536 (ms):      %s" % dist(tails))
    print("  last 64 KiB, ?start=SIZE-65536 (ms):        %s"
          % dist(tails_start))
    print("  64 KiB from the middle, Range (ms):         %s" % dist(middles))
    print("  load average after: %s" % load_avg())


def bench_latency(th, farm, a):
    m = farm.master({
        "name": "bench-latency", "slaves": [{"name": "s1"}],
        "builders": [{"name": "quick", "steps": [
            {"name": "noop", "command": ["true"]}]}]}, log_level="info")
    farm.slave(m, "s1", log_level="info")
    m.run_build("quick", timeout=60)  # warm up: workdir made
    print("forced build -> first step started, %d builds one after another "
          "on one idle slave; load average %s" % (a.latency_runs, load_avg()))
    client, master_side = [], []
    for _ in range(a.latency_runs):
        t0 = time.time() * 1000
        req = m.force("quick")
        b = m.wait_request_done(req, timeout=60)
        if b["result"] != "SUCCESS":
            sys.exit("bench_ingest: a build failed: %s"
                     % json.dumps(b)[:500])
        started = b["steps"][0]["started_ms"]
        client.append(started - t0)
        master_side.append(started - m.request_info(req)["submitted_ms"])
    print("  POST .../force -> step started (ms):     %s" % dist(client))
    print("  request queued -> step started (ms):     %s" % dist(master_side))
    print("  load average after: %s" % load_avg())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["ingest", "latency"])
    ap.add_argument("--build-dir", default=str(ROOT / "build"))
    ap.add_argument("--keep", help="keep the farm's directory here")
    ap.add_argument("--log", help="ingest this file instead of the "
                    "generated log")
    ap.add_argument("--mib", type=float, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tail-reads", type=int, default=50)
    ap.add_argument("--latency-runs", type=int, default=50)
    a = ap.parse_args()
    if a.mib <= 0.0625 or a.runs < 1 or a.tail_reads < 1 or \
            a.latency_runs < 1:
        ap.error("--mib must be over 0.0625 (64 KiB) and the counts at "
                 "least 1")
    th = harness(a.build_dir)
    for what, fn in (("ingest", bench_ingest), ("latency", bench_latency)):
        if a.only and a.only != what:
            continue
        if a.keep:
            d = Path(a.keep) / what
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
        else:
            d = Path(tempfile.mkdtemp(prefix="tf-bench-%s-" % what))
        farm = th.Farm(d)
        try:
            fn(th, farm, a)
        finally:
            farm.cleanup()
            if not a.keep:
                shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
