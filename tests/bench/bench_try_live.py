#!/usr/bin/python3
"""How soon `tf-try --wait` tells a step has ended: live feed vs polling.

A real tf-master and tf-slave on 127.0.0.1, a git repository, and a
builder of --steps steps (`sleep --sleep`); a committer's tf-try submits a
small patch with --wait (and --no-reuse, so every job builds), --runs times
per mode:

  live   the default: tf-try follows the master's live feed (/live);
  poll   --no-live: tf-try asks for the job every --poll-ms (default 1000,
         tf-try's default).

The figure per step is the time from the step's end (its finished_ms, the
slave's clock, on this machine) to the moment this script reads tf-try's
"NAME: step X: RESULT" line from its stdout (tf-try flushes every line);
p50, p90 and max in ms over all steps of all runs, per mode.

    tests/bench/bench_try_live.py [--runs 3] [--steps 10] [--sleep 0.3]
        [--poll-ms 1000] [--build-dir build]

The figures go to docs/committers.md ("Following a job"). A benchmark,
not a test: it prints numbers and exits 0 unless the farm cannot run or a
job fails.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def harness(build_dir):
    """Imports tests/integration/tfharness.py (and test_try.py's git and
    user helpers) for build_dir's binaries."""
    os.environ["TF_BUILD_DIR"] = str(Path(build_dir).resolve())
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    import tfharness  # noqa: E402 - after the environment is set
    import test_try  # noqa: E402
    return tfharness, test_try


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


def run_job(tt, th, m, work, token, mode, a, n):
    """One tf-try --wait; returns the latencies (ms) of its step lines."""
    (work / "verdict").write_text("pass %s %d\n" % (mode, n))
    env = dict(os.environ)
    env.update(tt.GIT_ENV)
    env.update({"HOME": str(work.parent / "home"), "TF_TRY_TOKEN": token})
    env.pop("XDG_CONFIG_HOME", None)
    (work.parent / "home").mkdir(exist_ok=True)
    argv = [str(tt.TF_TRY), "--url", m.url, "-b", "bench", "--wait",
            "--no-reuse", "--poll-ms", str(a.poll_ms)]
    if mode == "poll":
        argv.append("--no-live")
    p = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    seen = []  # (wall ms when read, line)

    def reader():
        for raw in p.stdout:
            seen.append((time.time() * 1000, raw.decode(errors="replace")))
    t = threading.Thread(target=reader)
    t.start()
    p.wait(timeout=600)
    t.join()
    err = p.stderr.read().decode(errors="replace")
    text = "".join(line for _, line in seen)
    if p.returncode != 0:
        sys.exit("tf-try failed (%d):\n%s\n%s" % (p.returncode, text, err))
    job = int(re.search(r"^job (\d+):", text, re.M).group(1))
    build = m.get_json("/jobs/%d" % job)["builders"][0]["build"]
    ends = {s["name"]: s["finished_ms"] for s in build["steps"]}
    lat = []
    for at, line in seen:
        mm = re.match(r"bench: step (s\d+): SUCCESS", line)
        if mm:
            lat.append(at - ends[mm.group(1)])
    if len(lat) != a.steps:
        sys.exit("expected %d step lines, got %d:\n%s"
                 % (a.steps, len(lat), text))
    return lat


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=str(ROOT / "build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--sleep", type=float, default=0.3)
    ap.add_argument("--poll-ms", type=int, default=1000)
    a = ap.parse_args()
    th, tt = harness(a.build_dir)
    d = Path(tempfile.mkdtemp(prefix="tf-bench-"))
    farm = th.Farm(d)
    try:
        up, work = tt.make_repos(d)
        steps = [{"name": "s%d" % i, "command": "sleep %s" % a.sleep}
                 for i in range(a.steps)]
        m = farm.master({
            "name": "bench", "slaves": [{"name": "s1"}],
            "builders": [{"name": "bench", "repository": str(up),
                          "branch": "main", "steps": steps}]},
            log_level="info")
        farm.slave(m, "s1", log_level="info")
        token = tt.add_user(farm, m, "ann@example.org", "Ann")
        print("step end -> tf-try prints it, %d runs of %d steps "
              "(ms; poll every %d ms):" % (a.runs, a.steps, a.poll_ms))
        for mode in ("live", "poll"):
            lat = []
            for n in range(a.runs):
                lat += run_job(tt, th, m, work, token, mode, a, n)
            print("  %-5s p50 %7.1f  p90 %7.1f  max %7.1f"
                  % (mode, pct(lat, 0.5), pct(lat, 0.9), max(lat)))
    finally:
        farm.cleanup()
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
