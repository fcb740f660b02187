#!/usr/bin/python3
"""The config reload alone, with thousands of slaves (issue 13, item 4).

Starts the real tf-master of a build directory with bench_sched.py's
config (--slaves slaves, each with its own secret file, --builders
builders), waits until its secrets are past the racy window and settled,
then sends --reloads SIGHUPs one after another, each after rewriting the
config with the builders' "held" tag added or taken away (what
bench_sched.py's release does), and reports per reload: the wall time
from "SIGHUP: reloading" to "config reloaded" (the master's log, ms
resolution), the CPU of the whole master and of its loop thread (the
main thread) from /proc/PID/task/TID/schedstat (nanoseconds), and how
many secret files each reload read.

    tests/bench/bench_reload.py [--slaves 5000] [--builders 10]
        [--reloads 40] [--touch] [--build-dir build] [--keep DIR]

With --touch every secret file is touched (its times move, its content
stays) before each reload, so every reload reads every file: the cost
of the secrets when they all changed. The CPU figures include what the
master does while idle between reloads (its 1 s tick), about the same
for any build; interleave builds to compare them. This is a benchmark,
not a test: it prints numbers and exits 0 unless the master fails.
"""
import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sched  # noqa: E402 - next to this file


def schedstat_s(pid, tid):
    """CPU seconds one thread of pid has run so far (schedstat, ns)."""
    try:
        with open("/proc/%d/task/%d/schedstat" % (pid, tid)) as f:
            return int(f.read().split()[0]) / 1e9
    except OSError:
        return 0.0


def process_cpu_s(pid):
    """CPU seconds of every thread pid has now (threads that ended are
    not counted: the master's threads live as long as it does)."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0.0
    return sum(schedstat_s(pid, int(t)) for t in tids)


def wait_reloads(m, n, timeout):
    deadline = time.monotonic() + timeout
    while m.log_text().count("config reloaded") < n:
        if "not reloaded" in m.log_text():
            sys.exit("bench_reload: a reload failed:\n%s" % m.log_text()[-3000:])
        if time.monotonic() > deadline:
            sys.exit("bench_reload: reload %d did not finish" % n)
        time.sleep(0.002)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slaves", type=int, default=5000)
    ap.add_argument("--builders", type=int, default=10)
    ap.add_argument("--reloads", type=int, default=40)
    ap.add_argument("--touch", action="store_true",
                    help="touch every secret file before each reload")
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--keep", help="keep the farm in this directory")
    a = ap.parse_args()
    th = bench_sched.harness(a.build_dir)
    # farm_config's other settings: every builder on every slave.
    a.on, a.max_builds = "all", 1
    d = Path(a.keep) if a.keep else \
        Path(tempfile.mkdtemp(prefix="tf-bench-reload-"))
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    farm = th.Farm(d)
    try:
        m = th.Master(farm, bench_sched.farm_config(a, held=True),
                      log_level="info")
        m.start(timeout=120)
        pid = m.proc.pid
        # Past the racy window, and the tick's settle done (secrets.c).
        time.sleep(2.5)
        secrets = sorted((m.dir / "secrets").iterdir())
        walls, cpus, loops, reads = [], [], [], []
        rx = re.compile(r"(\d+) secret file\(s\) read")
        for i in range(1, a.reloads + 1):
            m.write_config(bench_sched.farm_config(a, held=i % 2 == 0))
            if a.touch:
                for p in secrets:
                    os.utime(p)
            time.sleep(0.15)  # the tick's work is not the reload's
            c0, l0 = process_cpu_s(pid), schedstat_s(pid, pid)
            m.sighup()
            wait_reloads(m, i, 60)
            time.sleep(0.02)  # the old config is freed off the loop
            cpus.append((process_cpu_s(pid) - c0) * 1000)
            loops.append((schedstat_s(pid, pid) - l0) * 1000)
            text = m.log_text()
            walls.append(bench_sched.reload_ms(text))
            last = text[text.rindex("config reloaded"):].split("\n")[0]
            mt = rx.search(last)
            reads.append(int(mt.group(1)) if mt else -1)
        m.stop()
    finally:
        farm.cleanup()
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)

    def fig(v, unit):
        return "median %.2f %s (min %.2f, max %.2f)" % (
            statistics.median(v), unit, min(v), max(v))
    print("%d reloads, %d slaves, %d builders%s; load average %s"
          % (a.reloads, a.slaves, a.builders,
             ", every secret touched" if a.touch else "",
             bench_sched.load_avg()))
    print("  SIGHUP to \"config reloaded\" (log): " + fig(walls, "ms"))
    print("  master CPU per reload (all threads): " + fig(cpus, "ms"))
    print("  loop thread CPU per reload (the swap): " + fig(loops, "ms"))
    print("  secret files read per reload: " + fig(reads, ""))


if __name__ == "__main__":
    main()
