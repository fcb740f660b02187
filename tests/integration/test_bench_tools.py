"""The benchmark tools work: tf-loadslaves runs real builds on a real master
(output stored byte for byte, aborts honoured, refusals reported with the
master's own message, bad arguments refused), and the benchmark scripts in
tests/bench run end to end on a small scale. No figure is asserted: the
benchmarks measure, these tests only keep the tools from rotting."""

import json
import os
import re
import subprocess
import sys

import pytest

from tfharness import BUILD_DIR, REPO, scaled, wait_for

LOADSLAVES = BUILD_DIR / "tests" / "bench" / "tf-loadslaves"
BENCH = REPO / "tests" / "bench"

pytestmark = pytest.mark.skipif(
    not os.access(LOADSLAVES, os.X_OK),
    reason=f"{LOADSLAVES} is not built")


def names(n):
    return ["load%05d" % i for i in range(1, n + 1)]


def run_loadslaves(m, *args, timeout=60, stdin=None):
    """Runs tf-loadslaves against master m; returns (exit status, stdout,
    stderr, the JSON events by kind)."""
    argv = [str(LOADSLAVES), "--url", "ws://127.0.0.1:%d/slave" % m.port,
            "--secret-dir", str(m.dir / "secrets"), "--json",
            "--master-pid", str(m.proc.pid)] + [str(a) for a in args]
    p = subprocess.run(argv, capture_output=True, text=True, input=stdin,
                       timeout=scaled(timeout))
    events = {}
    for line in p.stdout.splitlines():
        if line.startswith("JSON "):
            ev = json.loads(line[5:])
            events[ev["event"]] = ev
    return p.returncode, p.stdout, p.stderr, events


def test_loadslaves_runs_builds_with_output(farm, tmp_path):
    """40 builds of two steps on 20 emulated slaves (2 builds each at a
    time), forced before the slaves connect: every build SUCCESS, each
    step's log exactly the first 70,000 bytes of the output file repeated
    (it is 50,000 bytes long), and the summary counts them."""
    m = farm.master({
        "slaves": [{"name": n, "max_builds": 2} for n in names(20)],
        "builders": [{"name": "emu", "steps": [
            {"name": "one", "command": "make"},
            {"name": "two", "command": "make check"}]}]},
        log_level="info")
    content = bytes((i * 7 + i // 256) % 251 for i in range(50000))
    (tmp_path / "out.bin").write_bytes(content)
    reqs = [m.force("emu") for _ in range(40)]
    rc, out, err, ev = run_loadslaves(
        m, "--slaves", 20, "--max-builds", 2, "--expect", 40,
        "--output-bytes", 70000, "--chunk", 8192,
        "--output-file", tmp_path / "out.bin")
    assert rc == 0, out + err
    assert ev["ready"]["ready"] == 20 and ev["ready"]["failed"] == 0, out
    s = ev["summary"]
    assert (s["started"], s["done"], s["failed"]) == (40, 40, 0), out
    assert s["output_bytes"] == 40 * 2 * 70000, out
    assert s["master_rss_kb"] > 0, out
    expect = (content * 2)[:70000]
    for req in reqs:
        r = m.request_info(req)
        assert r["state"] == "done" and r["result"] == "SUCCESS", r
    b = m.build(m.request_info(reqs[-1])["build_id"])
    assert [st["log"]["bytes"] for st in b["steps"]] == [70000, 70000]
    assert m.step_log(b["id"], 0) == expect
    assert m.step_log(b["id"], 1) == expect


def test_loadslaves_honours_an_abort(farm):
    """A build cancelled through the API while its step runs (--step-ms)
    ends CANCELLED; tf-loadslaves counts it as aborted and ends the run."""
    m = farm.master({"slaves": [{"name": "load00001"}],
                     "builders": [{"name": "slow", "steps": [
                         {"name": "a", "command": "sleep 60"},
                         {"name": "b", "command": "true"}]}]},
                    log_level="info")
    req = m.force("slow")
    argv = [str(LOADSLAVES), "--url", "ws://127.0.0.1:%d/slave" % m.port,
            "--secret-dir", str(m.dir / "secrets"), "--json",
            "--step-ms", "60000", "--expect", "1"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        bid = m.wait_build_started(req)
        m.wait_step_running(bid, 0)
        r = m.api_post(f"/builds/{bid}/cancel")
        assert r.status == 202, r
        out, err = p.communicate(timeout=scaled(30))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, out + err
    summary = [json.loads(l[5:]) for l in out.splitlines()
               if l.startswith("JSON ") and '"summary"' in l][0]
    assert (summary["aborted"], summary["done"]) == (1, 0), out
    b = m.wait_build_finished(bid)
    assert b["result"] == "CANCELLED"
    assert [st["result"] for st in b["steps"]] == ["CANCELLED", "SKIPPED"]


def test_loadslaves_reports_refusals_with_the_masters_message(farm):
    """A wrong secret and an unknown name: exit 1 before anything is
    measured, each failure printed with the close code and the master's
    own sentence."""
    m = farm.master({"slaves": [{"name": "load00001"},
                                {"name": "load00002"}],
                     "builders": [{"name": "x", "steps": [
                         {"name": "s", "command": "true"}]}]},
                    log_level="info")
    m.secret_path("load00002").write_text("not-the-secret\n")
    m.secret_path("load00003").write_text("whatever\n")
    rc, out, err, ev = run_loadslaves(m, "--slaves", 3, "--expect", 0)
    assert rc == 1, out + err
    assert ev["ready"]["ready"] == 1 and ev["ready"]["failed"] == 2, out
    assert "4001 bad_auth" in out and \
        'authentication failed for slave "NAME"' in out, out
    assert "4002 unknown_slave" in out and \
        'no slave named "NAME" is configured' in out, out
    assert "nothing measured" in out


def test_loadslaves_refuses_bad_arguments(tmp_path):
    """Each bad argument: exit 2 and a message naming it, no connection."""
    (tmp_path / "load00001").write_text("s\n")
    (tmp_path / "load00002").write_text("\n")
    base = [str(LOADSLAVES), "--url", "ws://127.0.0.1:1/slave",
            "--secret-dir", str(tmp_path)]
    cases = [
        (base + ["--slaves", "0"], "--slaves: expected an integer from 1 "
         "to 10000"),
        (base + ["--slaves", "10001"], "--slaves: expected an integer"),
        (base + ["--chunk", "65537"], "--chunk: expected an integer from 1 "
         "to 65536"),
        (base + ["--max-builds", "65"], "--max-builds: expected an integer"),
        (base + ["--timeout", "-3"], "--timeout: expected seconds"),
        (base + ["--tags", "ok,bad tag"], '"bad tag" is not a valid name'),
        (base + ["--prefix", "../x"], "is not a valid slave name"),
        (base + ["--bogus"], 'unknown or incomplete option "--bogus"'),
        (base + ["--slaves", "3"], "cannot read the secret of slave "
         "load00002 from %s/load00002: empty first line" % tmp_path),
        (base + ["--output-bytes", "10", "--output-file",
                 str(tmp_path / "missing")], "cannot read --output-file"),
        ([str(LOADSLAVES), "--url", "http://127.0.0.1:1/slave",
          "--secret-dir", str(tmp_path)], "--url must be ws://HOST:PORT/PATH"),
        ([str(LOADSLAVES), "--url", "ws://127.0.0.1/slave",
          "--secret-dir", str(tmp_path)], "--url: expected ws://HOST:PORT"),
        ([str(LOADSLAVES), "--secret-dir", str(tmp_path)],
         "--url and --secret-dir are required"),
    ]
    for argv, message in cases:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, (argv, p.stdout, p.stderr)
        assert message in p.stderr, (argv, p.stderr)
        assert "links ready" not in p.stdout, (argv, p.stdout)


def run_script(name, *args, timeout=240):
    p = subprocess.run([sys.executable, str(BENCH / name),
                        "--build-dir", str(BUILD_DIR)] +
                       [str(a) for a in args],
                       capture_output=True, text=True, timeout=scaled(timeout))
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


@pytest.mark.timeout(300)
def test_bench_sched_runs_small():
    """Both release modes of bench_sched.py on 20 slaves and 60 builds."""
    out = run_script("bench_sched.py", "--slaves", 20, "--requests", 60,
                     "--builders", 3)
    assert "20 of 20 links ready" in out, out
    assert "run 1: start latency after the release p50" in out, out
    assert "config reload" in out, out
    assert re.search(r"master loop thread CPU over the burst .* [\d.]+ us "
                     r"per build", out), out
    out = run_script("bench_sched.py", "--slaves", 20, "--requests", 60,
                     "--builders", 3, "--on", "tag", "--release", "api")
    assert "run 1: start latency after each request's submission p50" \
        in out, out


@pytest.mark.timeout(300)
def test_bench_reload_runs_small():
    """bench_reload.py on 50 slaves: every reload reported, the touched
    secrets read again by each reload."""
    out = run_script("bench_reload.py", "--slaves", 50, "--builders", 3,
                     "--reloads", 3)
    assert "3 reloads, 50 slaves, 3 builders" in out, out
    assert "secret files read per reload: median 0.00" in out, out
    assert re.search(r"loop thread CPU per reload \(the swap\): median "
                     r"[\d.]+ ms", out), out
    out = run_script("bench_reload.py", "--slaves", 50, "--builders", 3,
                     "--reloads", 2, "--touch")
    assert "secret files read per reload: median 50.00" in out, out


@pytest.mark.timeout(300)
def test_bench_ingest_runs_small():
    """bench_ingest.py on a 2 MiB log: ingest, sizes, byte-exact check,
    range reads, then the start latency."""
    out = run_script("bench_ingest.py", "--mib", 2, "--runs", 1,
                     "--tail-reads", 3, "--latency-runs", 3)
    assert "log read back byte-exact" in out, out
    assert "last 64 KiB, Range: bytes=-65536 (ms)" in out, out
    assert "POST .../force -> step started (ms)" in out, out


@pytest.mark.timeout(120)
def test_bench_tests_runs_small():
    """bench_tests.py on 2 builds of 1200 results: ingest and the reads,
    with the counts it reads back checked."""
    out = run_script("bench_tests.py", "--builds", 2, "--tests", 1200,
                     "--reads", 2)
    assert "ingest: median" in out and "results/s" in out, out
    assert "(24 failing of 1200)" in out, out
    assert "GET /builders/bench/tests/history (one test, 2 builds)" in out, out


@pytest.mark.timeout(300)
def test_bench_api_runs_small_with_slaves_and_builds_running():
    """bench_api.py --slaves --busy on a small store: a wrk pass without
    slaves, then one with 20 emulated slaves connected and builds forced
    and running throughout; and its refusals of bad option sets."""
    out = run_script("bench_api.py", "--builds", 500, "--requests", 3,
                     "--wrk", 1, "--slaves", 20, "--busy", 10,
                     "--step-ms", 1000)
    assert "round 1: no slaves" in out, out
    m = re.search(r"round 1: 20 slaves connected, (\d+) builds running", out)
    assert m and int(m.group(1)) > 0, out
    m = re.search(r"after: 20 slaves connected, \d+ builds running; "
                  r"(\d+) builds forced during the pass", out)
    assert m and int(m.group(1)) > 0, out
    for args, message in [(["--slaves", "5"], "--slaves needs --wrk"),
                          (["--wrk", "1", "--busy", "5"],
                           "--busy needs --slaves"),
                          (["--wrk", "1", "--slaves", "-1"],
                           "--slaves from 0 to 10000")]:
        p = subprocess.run([sys.executable, str(BENCH / "bench_api.py")] +
                           args, capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and message in p.stderr, (args, p.stderr)


@pytest.mark.timeout(180)
def test_bench_try_live_runs_small():
    """bench_try_live.py with one job of 3 steps per mode: tf-try on the
    live feed and polling, every step line read and timed."""
    out = run_script("bench_try_live.py", "--runs", 1, "--steps", 3,
                     "--sleep", 0.2, "--poll-ms", 500)
    assert "1 runs of 3 steps (ms; poll every 500 ms)" in out, out
    assert re.search(r"^  live +p50 +[\d.]+ +p90", out, re.M), out
    assert re.search(r"^  poll +p50 +[\d.]+ +p90", out, re.M), out


def test_bench_decode_runs_small():
    """tf-bench-decode: a row per message type, and -t keeps one."""
    exe = BUILD_DIR / "tests" / "bench" / "tf-bench-decode"
    p = subprocess.run([str(exe), "-n", "200", "-r", "3"], capture_output=True,
                       text=True, timeout=scaled(60))
    assert p.returncode == 0, p.stderr
    for name in ("step_started", "step_finished", "build_finished", "ack"):
        assert re.search(r"^%s +\d+( +\d+){4}$" % name, p.stdout, re.M), \
            p.stdout
    p = subprocess.run([str(exe), "-n", "200", "-r", "1", "-t", "ack"],
                       capture_output=True, text=True, timeout=scaled(60))
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 2, p.stdout
    p = subprocess.run([str(exe), "-r", "0"], capture_output=True, text=True,
                       timeout=scaled(60))
    assert p.returncode == 2 and "usage" in p.stderr, (p.returncode, p.stderr)
