#!/usr/bin/python3
"""Scheduler at scale: a burst of trivial builds on thousands of slaves.

Starts the real tf-master of a build directory with a generated config
(--slaves slaves, each with its own secret file, tagged "bench";
--builders builders of one trivial step, allowed on every slave or, with
--on tag, on the tag), connects that many emulated slaves with
tests/bench/tf-loadslaves, queues --requests forced builds and releases
them, and reports how soon each build_start reached its slave and how many
builds per second the master completed.

    tests/bench/bench_sched.py [--slaves 5000] [--requests 5000]
        [--builders 10] [--on all|tag] [--max-builds 1]
        [--release reload|api] [--props 0] [--runs 1] [--build-dir build]
        [--keep DIR] [--perf FILE]

Release modes:
  reload  (default) the requests are queued while every builder also needs
          the tag "held", which no slave has; then the config without it is
          written and the master gets SIGHUP: the whole burst becomes
          runnable at one instant. Latency is counted from the SIGHUP, so it
          includes the config reload (its duration, from the master's log,
          is printed too).
  api     the slaves are idle and the requests are forced through the API
          in a tight loop on one keep-alive connection; each carries its
          submission time as the property bench_t0_us. Latency is counted
          per request from its submission, and the time from the last
          request's acceptance to the last build's start is printed.

Figures: start latency p50/p90/p99/max (release -> build_start at the
slave), builds/s (release -> the last build's final event acknowledged,
i.e. committed), the time the build rows took to be created on the
master (its database), connection setup for all slaves, and the master's
RSS; with the reload release also the CPU time of the master's loop thread
(its main thread) and of its store writer thread ("tf-writer", which
commits every build's rows before its build_start goes out) from the
release to the summary, per build, which load on the machine skews far
less than the wall-clock figures, and the CPU the scheduler's passes took
per build they assigned (from the master's log).
With --props K each forced request carries K properties of its own
(bench_p0..), which keeps its build_start off the master's per-builder
template: every start then goes through the protocol's encoder, as a
request with properties, tests, a job or a patch does.
With --perf FILE the master is recorded with perf (DWARF call graphs) over
the same span; read it with perf report -i FILE --comm tf-master.
With --runs R the farm is built afresh R times and the best and the
median are printed as well.

The figures are recorded in docs/release-engineers.md ("Speed"). This is a
benchmark, not a test: it prints numbers and exits 0 unless the farm cannot
run or a build fails. It raises its file descriptor limit (the master
needs more than one per slave); as root it can raise the hard limit too.
"""
import argparse
import http.client
import json
import os
import queue
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def harness(build_dir):
    """Imports tests/integration/tfharness.py for build_dir's binaries."""
    os.environ["TF_BUILD_DIR"] = str(Path(build_dir).resolve())
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    import tfharness  # noqa: E402 - after the environment is set
    return tfharness


def raise_nofile(need):
    """Raises RLIMIT_NOFILE (inherited by the master and the client) to at
    least need; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft
    want_hard = hard
    if hard != resource.RLIM_INFINITY and hard < need:
        want_hard = need
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, want_hard))
    except (ValueError, OSError) as e:
        sys.exit(f"bench_sched: {need} file descriptors are needed and the "
                 f"limit is {soft} (hard {hard}): {e}; raise ulimit -n "
                 "(as root, or in limits.conf) and run again")
    return need


def writer_tid(pid):
    """The thread id of the master's store writer ("tf-writer"), or None."""
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                if f.read().strip() == "tf-writer":
                    return int(tid)
    except OSError:
        pass
    return None


def thread_cpu_s(pid, tid):
    """CPU seconds (user + system) one thread of pid has used so far: from
    schedstat in nanoseconds where the kernel has it, else from stat in
    clock ticks (10 ms, a tenth of a 5,000-build burst's writer time)."""
    try:
        with open("/proc/%d/task/%d/schedstat" % (pid, tid)) as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/%d/task/%d/stat" % (pid, tid)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def start_perf(a, pid, d):
    """With --perf FILE: perf record on the master over the burst."""
    if not a.perf:
        return None
    p = subprocess.Popen(["perf", "record", "-F", "2000", "--call-graph",
                          "dwarf,16384", "-o", a.perf, "-p", str(pid)],
                         stdout=subprocess.DEVNULL,
                         stderr=open(d / "perf.log", "ab"))
    time.sleep(2)  # perf attaches to every thread before the release
    return p


def stop_perf(p):
    if p:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=120)


def load_avg():
    return "%.2f %.2f %.2f" % os.getloadavg()


def slave_names(n):
    return ["load%05d" % i for i in range(1, n + 1)]


def farm_config(a, held):
    builders = []
    for i in range(a.builders):
        b = {"name": "b%03d" % i,
             "steps": [{"name": "noop", "command": ["true"]}]}
        tags = ["bench"] if a.on == "tag" else []
        if held:
            tags = tags + ["held"]
        if tags:
            b["tags"] = tags
        builders.append(b)
    return {"name": "bench-sched",
            "slaves": [{"name": n, "tags": ["bench"],
                        "max_builds": a.max_builds}
                       for n in slave_names(a.slaves)],
            "builders": builders}


class Client:
    """tf-loadslaves with --control --json: its JSON lines arrive on a
    queue read by a thread, so waits can time out."""

    def __init__(self, argv, log_path):
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.log,
                                  start_new_session=True)
        self.events = queue.Queue()
        self.lines = []
        self.shown = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if line.startswith("JSON "):
                self.events.put(json.loads(line[5:]))
        self.events.put(None)

    def wait_event(self, kind, timeout):
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                return None
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if ev is None:
                return None
            if ev.get("event") == kind:
                return ev

    def send(self, line):
        try:
            self.p.stdin.write((line + "\n").encode())
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def text(self):
        return "\n".join(l for l in self.lines if not l.startswith("JSON "))

    def new_text(self):
        """Its report lines not shown yet."""
        lines = self.lines[self.shown:]
        self.shown += len(lines)
        return "\n".join(l for l in lines if not l.startswith("JSON "))

    def stop(self):
        if self.p.poll() is None:
            self.send("quit")
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def force_all(m, builders, k, with_t0, nprops=0):
    """Forces k builds round robin over builders on one keep-alive
    connection, each with nprops properties of its own; returns (seconds,
    wall time after the last answer)."""
    c = http.client.HTTPConnection("127.0.0.1", m.port, timeout=120)
    hdr = {"Content-Type": "application/json",
           "Authorization": "Bearer " + m.token()}
    t0 = time.time()
    for i in range(k):
        body = {"reason": "bench"}
        props = {"bench_p%d" % j: "v%d-%d" % (j, i) for j in range(nprops)}
        if with_t0:
            props["bench_t0_us"] = str(int(time.time() * 1e6))
        if props:
            body["properties"] = props
        c.request("POST", "/api/v1/builders/%s/force" % builders[i % len(
            builders)], json.dumps(body), hdr)
        r = c.getresponse()
        out = r.read()
        if r.status != 201:
            sys.exit("bench_sched: force answered %d: %s" % (r.status,
                                                             out[:300]))
    t1 = time.time()
    c.close()
    return t1 - t0, t1


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")


def log_ms(line):
    mt = LOG_TIME.match(line)
    if not mt:
        return None
    t = time.strptime(mt.group(1)[:19], "%Y-%m-%dT%H:%M:%S")
    import calendar
    return calendar.timegm(t) * 1000 + int(mt.group(1)[20:23])


def reload_ms(log_text):
    """Duration of the last config reload, from the master's log lines."""
    start = end = None
    for line in log_text.splitlines():
        if "SIGHUP: reloading" in line:
            start, end = log_ms(line), None
        elif "config reloaded:" in line and start is not None:
            end = log_ms(line)
    return (end - start) if start is not None and end is not None else None


def pass_cpu(log_text):
    """(builds, CPU ms) of the scheduler passes the master logged (those
    that assigned at least 64 builds), summed."""
    n = ms = 0
    for m in re.finditer(r"pass assigned (\d+) builds in ([\d.]+) ms of CPU",
                         log_text):
        n += int(m.group(1))
        ms += float(m.group(2))
    return n, ms


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round((len(v) - 1) * p)))] if v else None


def db_figures(db, mark_ms):
    """From the stopped master's database: results, and when the build
    rows were created (the master's side of the start latency: scheduling,
    before the commit and the send), after mark_ms or, when mark_ms is
    None, after each request's submission."""
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    results = dict(con.execute(
        "SELECT coalesce(result, -1), count(*) FROM builds GROUP BY 1"))
    if mark_ms is None:
        created = [r[0] for r in con.execute(
            "SELECT b.created_ms - r.submitted_ms FROM builds b "
            "JOIN build_requests r ON r.id = b.request_id")]
    else:
        created = [r[0] - mark_ms for r in con.execute(
            "SELECT created_ms FROM builds")]
    con.close()
    return results, created


def records_span(path):
    """(first bench_t0_us, last done_us) of tf-loadslaves' records, in
    seconds."""
    first, last = None, 0
    with open(path) as f:
        next(f)
        for line in f:
            v = line.rstrip("\n").split("\t")
            t0, done = int(v[3]), int(v[7])
            if t0 and (first is None or t0 < first):
                first = t0
            last = max(last, done)
    return first / 1e6, last / 1e6


def one_run(th, a, run_no, exe):
    d = Path(a.keep) / ("run%d" % run_no) if a.keep else \
        Path(tempfile.mkdtemp(prefix="tf-bench-sched-"))
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    farm = th.Farm(d)
    client = None
    try:
        held = a.release == "reload"
        t = time.time()
        m = th.Master(farm, farm_config(a, held), log_level=a.log_level)
        print("run %d: config with %d slaves written in %.1f s; load "
              "average %s" % (run_no, a.slaves, time.time() - t, load_avg()))
        m.start(timeout=120)
        pid = m.proc.pid
        argv = [exe, "--url", "ws://127.0.0.1:%d/slave" % m.port,
                "--secret-dir", str(m.dir / "secrets"),
                "--slaves", str(a.slaves), "--prefix", "load",
                "--max-builds", str(a.max_builds), "--tags", "bench",
                "--parallel", str(a.parallel), "--expect", str(a.requests),
                "--timeout", str(a.timeout), "--master-pid", str(pid),
                "--records", str(d / "records.tsv"),
                "--output-bytes", str(a.output_bytes),
                "--control", "--json"]
        client = Client(argv, d / "loadslaves.log")
        ready = client.wait_event("ready", a.timeout)
        if not ready:
            sys.exit("bench_sched: tf-loadslaves did not report its links "
                     "ready:\n%s\n--- master log (end):\n%s"
                     % (client.text(), th.tail(m.log_text(), 40)))
        print(client.new_text())
        if ready["failed"]:
            sys.exit("bench_sched: %d of %d links failed (above); master "
                     "log (end):\n%s" % (ready["failed"], a.slaves,
                                         th.tail(m.log_text(), 40)))
        info = m.get_json("/master")
        if info["slaves_connected"] != a.slaves:
            sys.exit("bench_sched: the master counts %d connected slaves, "
                     "expected %d" % (info["slaves_connected"], a.slaves))
        builders = ["b%03d" % i for i in range(a.builders)]
        secs, t_last = force_all(m, builders, a.requests,
                                 a.release == "api", a.props)
        print("run %d: %d forced builds accepted in %.2f s (%.0f/s)"
              % (run_no, a.requests, secs, a.requests / secs))
        if a.release == "reload":
            pend = m.get_json("/master")["requests_pending"]
            if pend != a.requests:
                sys.exit("bench_sched: %d requests pending, expected %d"
                         % (pend, a.requests))
            m.write_config(farm_config(a, held=False))
            perf = start_perf(a, pid, d)
            cpu0 = thread_cpu_s(pid, pid)
            wtid = writer_tid(pid)
            wcpu0 = thread_cpu_s(pid, wtid) if wtid else None
            mark = time.time()
            m.sighup()
        else:
            mark = t_last
        client.send("mark %d" % int(mark * 1e6))
        summary = client.wait_event("summary", a.timeout + 60)
        # The loop thread is the master's main thread (tid == pid).
        loop_cpu_s = writer_cpu_s = None
        if a.release == "reload":
            cpu1 = thread_cpu_s(pid, pid)
            wcpu1 = thread_cpu_s(pid, wtid) if wtid else None
            stop_perf(perf)
            if cpu0 is not None and cpu1 is not None:
                loop_cpu_s = cpu1 - cpu0
            if wcpu0 is not None and wcpu1 is not None:
                writer_cpu_s = wcpu1 - wcpu0
        print(client.new_text())
        if not summary:
            sys.exit("bench_sched: no summary from tf-loadslaves")
        client.stop()
        if summary["done"] != a.requests or summary["failed"]:
            sys.exit("bench_sched: %d of %d builds done, %d failures"
                     % (summary["done"], a.requests, summary["failed"]))
        rl = reload_ms(m.log_text()) if a.release == "reload" else None
        pass_n, pass_ms = pass_cpu(m.log_text())
        m.stop()
        results, created = db_figures(
            m.db_path, int(mark * 1000) if a.release == "reload" else None)
        if set(results) != {0}:  # 0 is SUCCESS in the store's numbering
            sys.exit("bench_sched: build results %r, expected all SUCCESS"
                     % results)
        out = {
            "lat": summary["latency_after_mark"],
            "sub": summary["latency_after_submit"],
            "builds_per_s": summary["builds_per_s"],
            "done_s": summary["done_after_mark_s"],
            "last_start_s": summary["last_start_after_mark_s"],
            "reload_ms": rl,
            "created_p50": pct(created, 0.5), "created_p99": pct(created, 0.99),
            "setup_s": ready["setup_s"],
            "kb_per_link": ready["master_kb_per_link"],
            "rss_ready_kb": ready["master_rss_kb_ready"],
            "rss_end_kb": summary["master_rss_kb"],
            "master_cpu_s": summary["master_cpu_s"],
            "client_cpu_s": summary["client_cpu_s"],
            "load_after": load_avg(),
            "loop_cpu_s": loop_cpu_s,
            "writer_cpu_s": writer_cpu_s,
            "pass_us": pass_ms * 1000 / pass_n if pass_n else None,
        }
        if a.release == "api":
            # Builds start while requests are still being forced: count
            # from the first submission to the last acknowledgement.
            first_t0, last_done = records_span(d / "records.tsv")
            out["builds_per_s"] = a.requests / (last_done - first_t0)
            out["done_s"] = last_done - first_t0
            out["lat"] = out["sub"]
        lat = out["lat"]
        what = ("after the release" if a.release == "reload" else
                "after each request's submission")
        print("run %d: start latency %s p50 %.1f ms, p90 %.1f, p99 %.1f, "
              "max %.1f; %.0f builds/s (%d done %.2f s after the %s)"
              % (run_no, what, lat["p50_ms"], lat["p90_ms"], lat["p99_ms"],
                 lat["max_ms"], out["builds_per_s"], a.requests,
                 out["done_s"], "release" if a.release == "reload"
                 else "first submission"))
        if loop_cpu_s is not None:
            print("run %d: master loop thread CPU over the burst (reload, "
                  "starts, events, ends) %.3f s, %.1f us per build"
                  % (run_no, loop_cpu_s, loop_cpu_s * 1e6 / a.requests))
        if writer_cpu_s is not None:
            print("run %d: master store writer thread CPU over the burst "
                  "(the starts' rows, events, ends) %.3f s, %.1f us per "
                  "build" % (run_no, writer_cpu_s,
                             writer_cpu_s * 1e6 / a.requests))
        if pass_n:
            print("run %d: scheduler passes assigned %d builds in %.1f ms of "
                  "loop CPU, %.1f us each (the master's log)"
                  % (run_no, pass_n, pass_ms, out["pass_us"]))
        if a.release == "api":
            print("run %d: the last build started %.3f s after the last "
                  "request was accepted" % (run_no, out["last_start_s"]))
        print("run %d: build rows created after the %s p50 %s ms, p99 "
              "%s ms%s; master RSS %.1f MiB with %d links (%.1f KiB each), "
              "%.1f MiB at the end; load average after %s"
              % (run_no, "release" if a.release == "reload" else
                 "submission", out["created_p50"], out["created_p99"],
                 ", config reload %d ms" % rl if rl is not None else "",
                 out["rss_ready_kb"] / 1024, a.slaves, out["kb_per_link"],
                 out["rss_end_kb"] / 1024, out["load_after"]))
        return out
    finally:
        if client:
            client.stop()
        farm.cleanup()
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=str(ROOT / "build"))
    ap.add_argument("--slaves", type=int, default=5000)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--builders", type=int, default=10)
    ap.add_argument("--on", choices=["all", "tag"], default="all",
                    help="builders run on every slave, or on the tag bench")
    ap.add_argument("--max-builds", type=int, default=1)
    ap.add_argument("--release", choices=["reload", "api"], default="reload")
    ap.add_argument("--props", type=int, default=0,
                    help="properties of its own per request (default 0); "
                    "any keeps the build_start off the template")
    ap.add_argument("--output-bytes", type=int, default=0,
                    help="output bytes per build (default 0: trivial)")
    ap.add_argument("--parallel", type=int, default=256,
                    help="slave handshakes in flight at once")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--perf", help="reload release: record the master "
                    "with perf record (dwarf call graphs) into this file over the burst")
    ap.add_argument("--keep", help="keep each run's directory under here")
    a = ap.parse_args()
    if not 1 <= a.slaves <= 10000:
        ap.error("--slaves must be 1..10000")
    if a.requests < 1 or a.builders < 1 or a.runs < 1:
        ap.error("--requests, --builders and --runs must be at least 1")
    exe = str(Path(a.build_dir).resolve() / "tests" / "bench" /
              "tf-loadslaves")
    if not os.access(exe, os.X_OK):
        sys.exit("bench_sched: %s not found: build with ninja -C %s"
                 % (exe, a.build_dir))
    th = harness(a.build_dir)
    raise_nofile(a.slaves + 4096)
    print("bench_sched: %d slaves, %d requests over %d builders (on %s), "
          "max_builds %d, release by %s, %d run(s); load average %s"
          % (a.slaves, a.requests, a.builders, a.on, a.max_builds, a.release,
             a.runs, load_avg()))
    runs = [one_run(th, a, i + 1, exe) for i in range(a.runs)]
    if len(runs) > 1:
        def fig(key, sub=None):
            return [r[key][sub] if sub else r[key] for r in runs]
        for label, vals, best in (
                ("start latency p50 ms", fig("lat", "p50_ms"), min),
                ("start latency p99 ms", fig("lat", "p99_ms"), min),
                ("builds/s", fig("builds_per_s"), max),
                ("loop CPU us/build", [r["loop_cpu_s"] * 1e6 / a.requests
                                       if r["loop_cpu_s"] is not None
                                       else float("nan") for r in runs],
                 min),
                ("writer CPU us/build", [r["writer_cpu_s"] * 1e6 / a.requests
                                         if r["writer_cpu_s"] is not None
                                         else float("nan") for r in runs],
                 min),
                ("pass CPU us/build", [r["pass_us"] if r["pass_us"]
                                       else float("nan") for r in runs],
                 min)):
            print("%-22s best %8.1f  median %8.1f  (runs: %s)"
                  % (label, best(vals), statistics.median(vals),
                     ", ".join("%.1f" % v for v in vals)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
