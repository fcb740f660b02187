#!/usr/bin/python3
"""Several masters on one PostgreSQL database against one master, with
real processes (issue 15, point 4).

    tests/bench/bench_masters.py throughput --masters 3 [--builds 2000]
                                 [--slaves 6] [--max-builds 2]
    tests/bench/bench_masters.py ingest --masters 3 [--mib 100]
                                 [--slaves 3]
    (--store sqlite: one master on sqlite, --masters must be 1)

  throughput  --builds trivial builds (one step: `true`) forced through
              the masters in turn while the --slaves slaves (spread over
              the masters, --max-builds builds each) are stopped
              (SIGSTOP), then released (SIGCONT): builds per second from
              the release to the last build's end (finished_ms, read from
              the database), and a check that every request ran once.
  ingest      each of --slaves slaves (spread over the masters) runs a
              step that cats a --mib MiB compiler-like log at the same
              time: MiB/s of all logs together from the first step's
              start to the moment every log is stored, each checked
              byte-exact.

The masters share a fresh database of a PostgreSQL server the harness
starts in a temp dir (tfharness.PgCluster, fsync off as for every test
server) with "store": {"postgres": URL, "shared": true}; with --store
sqlite the one master stores into its sqlite file. Everything runs on
this machine: the masters, the slaves, PostgreSQL and this client share
its cores, so the figure says what the design costs, not what machines
apart would add (docs/admins.md, "Several masters"). --build-dir DIR
(default build/), --keep DIR. A benchmark, not a test: it prints figures
and exits 0 unless the farm cannot run or a build fails.
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "bench"))
from bench_builds import compiler_log, harness  # noqa: E402


def start(th, farm, a, builders, slaves):
    cfg = {"name": "bench", "heartbeat_s": 5,
           "slaves": [{"name": s, "max_builds": a.max_builds}
                      for s in slaves],
           "builders": builders}
    if a.store == "sqlite":
        ms = [farm.master(cfg, log_level="info")]
        return ms, None
    c = th.shared_pg_cluster()
    url = c.url(c.new_database())
    ms = [farm.master(dict(cfg, store={"postgres": url, "shared": True}),
                      name="m%d" % i, log_level="info")
          for i in range(a.masters)]
    return ms, url


def db_rows(th, ms, url, sql):
    if url is None:
        import sqlite3
        con = sqlite3.connect(str(ms[0].db_path))
        try:
            return [tuple(str(x) for x in r) for r in con.execute(sql)]
        finally:
            con.close()
    c = th.shared_pg_cluster()
    out = c.psql(sql, db=c.dbname(url)).strip()
    return [tuple(line.split("|")) for line in out.splitlines() if line]


def bench_throughput(th, farm, a):
    names = ["s%d" % i for i in range(1, a.slaves + 1)]
    ms, url = start(th, farm, a, [{"name": "t", "steps": [
        {"name": "noop", "command": ["true"]}]}], names)
    slaves = [farm.slave(ms[i % len(ms)], n, log_level="info")
              for i, n in enumerate(names)]
    ms[0].run_build("t", timeout=60)  # warm up
    import http.client
    conns = []
    for m in ms:
        conns.append((http.client.HTTPConnection("127.0.0.1", m.port,
                                                 timeout=60),
                      {"Content-Type": "application/json",
                       "Authorization": "Bearer " + m.token()}))
    body = json.dumps({"reason": "bench"})
    for s in slaves:
        os.kill(s.pid, signal.SIGSTOP)
    try:
        for i in range(a.builds):
            c, hdr = conns[i % len(conns)]
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
        rows = db_rows(th, ms, url, "SELECT count(*) FROM build_requests "
                       "WHERE state IN ('pending', 'running')")
        return rows[0][0] == "0"
    th.wait_for(drained, 900, "every build to end", farm, interval=0.1)
    rows = db_rows(th, ms, url, "SELECT count(*), count(DISTINCT "
                   "request_id), max(finished_ms), sum(CASE WHEN result = 0 "
                   "THEN 0 ELSE 1 END) FROM builds")
    n, distinct, last, bad = rows[0]
    if int(n) != int(distinct) or int(n) != a.builds + 1 or int(bad):
        sys.exit("builds %s for %s requests (%d forced), %s failed"
                 % (n, distinct, a.builds + 1, bad))
    secs = (int(last) - t0) / 1000
    print("%d trivial builds forced through %d master(s) (%s), run on %d "
          "slaves x %d builds:" % (a.builds, len(ms), a.store, a.slaves,
                                   a.max_builds))
    print("  %.0f builds/s (%.2f s from the release to the last build's "
          "end); every request ran once" % (a.builds / secs, secs))


def bench_ingest(th, farm, a):
    data = farm.tmp / "compiler.log"
    size, digest = compiler_log(data, a.mib)
    names = ["s%d" % i for i in range(1, a.slaves + 1)]
    builders = [{"name": "big-" + n, "slaves": [n], "steps": [
        {"name": "cat", "command": ["cat", str(data)]}]} for n in names]
    ms, url = start(th, farm, a, builders, names)
    for i, n in enumerate(names):
        farm.slave(ms[i % len(ms)], n, log_level="info")
    for i, n in enumerate(names):
        ms[i % len(ms)].wait_slave_connected(n)
    reqs = [(ms[i % len(ms)], ms[i % len(ms)].force("big-" + n))
            for i, n in enumerate(names)]
    bids = [(m, m.wait_build_started(r, timeout=60)) for m, r in reqs]

    def stored():
        for m, bid in bids:
            b = m.build(bid)
            s = (b.get("steps") or [{}])[0]
            if b["state"] != "finished" or \
                    (s.get("log") or {}).get("bytes") != size:
                return False
        return True
    th.wait_for(stored, 900, "every log stored", farm, interval=0.05)
    t1 = time.time() * 1000
    first = min(m.build(bid)["steps"][0]["started_ms"] for m, bid in bids)
    for m, bid in bids:
        log = m.step_log(bid, 0)
        if len(log) != size or hashlib.sha256(log).hexdigest() != digest:
            sys.exit("a stored log differs from the file")
    secs = (t1 - first) / 1000
    print("ingest of %d x %d MiB compiler-like logs at once through %d "
          "master(s) (%s):" % (a.slaves, a.mib, len(ms), a.store))
    print("  %.1f MiB/s together (%.2f s); every log byte-exact"
          % (a.slaves * size / 1048576 / secs, secs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["throughput", "ingest"])
    ap.add_argument("--masters", type=int, default=1)
    ap.add_argument("--store", choices=["postgresql", "sqlite"],
                    default="postgresql")
    ap.add_argument("--build-dir", default=str(ROOT / "build"))
    ap.add_argument("--keep", help="keep the farm's directory here")
    ap.add_argument("--builds", type=int, default=2000)
    ap.add_argument("--slaves", type=int, default=6)
    ap.add_argument("--max-builds", type=int, default=2)
    ap.add_argument("--mib", type=int, default=100)
    a = ap.parse_args()
    if a.masters < 1 or (a.store == "sqlite" and a.masters != 1):
        ap.error("--masters: at least 1, and 1 with --store sqlite")
    if a.slaves < 1 or a.builds < 1 or a.mib < 1:
        ap.error("--slaves, --builds and --mib must be at least 1")
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
        {"throughput": bench_throughput, "ingest": bench_ingest}[a.what](
            th, farm, a)
    finally:
        farm.cleanup()
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
