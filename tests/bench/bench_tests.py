#!/usr/bin/python3
"""Test results at scale: storing them and reading them back.

A real tf-master on 127.0.0.1 and a hand-written slave (the harness's
websocket client, tests/integration/tfharness.py) that runs --builds
builds of one step, each sending --tests test results in test_results
messages of 500 (under the 64 KiB cap of one), --fail-pct of them failing with a
message and a log position. Figures:

  ingest   results stored per second, from the first test_results message
           to the acknowledgement of the last (the master acks after the
           commit that stores the rows);
  reads    p50 / max over --reads requests of: a build's failing tests
           (GET /builds/ID/tests?status=fail), a page of 1000 tests, one
           test's history over the builds (GET /builders/NAME/tests/
           history?name=...), the builder's failing and flaky tests.

    tests/bench/bench_tests.py [--builds 5] [--tests 20000] [--fail-pct 2]
        [--reads 20] [--build-dir build]

A benchmark, not a test: it prints numbers and exits 0 unless the farm
cannot run or a count read back is wrong.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BATCH = 500  # results per message: well under its 64 KiB cap


def harness(build_dir):
    os.environ["TF_BUILD_DIR"] = str(Path(build_dir).resolve())
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    import tfharness  # noqa: E402 - after the environment is set
    return tfharness


def run_build(m, hs, n, fail_pct, number):
    """One build of n tests through hs; returns (build id, seconds from
    the first results message to the last ack)."""
    m.force("bench")
    start = hs.recv_json(30)
    while start["type"] != "build_start":
        start = hs.recv_json(30)
    bid = start["build_id"]
    hs.send_json({"type": "step_started", "build_id": bid, "seq": 1,
                  "step": 0, "name": "t", "time_ms": 1795000000000})
    seq = 1
    every = max(1, int(100 / fail_pct)) if fail_pct else 0
    t0 = time.monotonic()
    for first in range(0, n, BATCH):
        seq += 1
        results = []
        for i in range(first, min(n, first + BATCH)):
            failing = every and (i + number) % every == 0
            r = {"suite": f"suite{i // 100}", "name": f"test_{i}",
                 "status": "fail" if failing else "pass", "attempts": 1,
                 "duration_ms": i % 50}
            if failing:
                r["message"] = f"t{i}.c:{i % 90}: assertion failed"
                r["log"] = {"offset": 0, "line": 1, "lines": 1}
            results.append(r)
        hs.send_json({"type": "test_results", "build_id": bid, "seq": seq,
                      "step": 0, "format": "ctest", "results": results,
                      "last": first + BATCH >= n, "total": n})
    top = 0
    while top < seq:
        msg = hs.recv_json(60)
        if msg["type"] == "ack":
            top = msg["seq"]
        elif msg["type"] == "error":
            raise SystemExit(f"the master refused: {msg}")
    took = time.monotonic() - t0
    hs.send_json({"type": "step_finished", "build_id": bid, "seq": seq + 1,
                  "step": 0, "result": "FAILURE", "exit_code": 1,
                  "signal": None, "timed_out": False, "duration_ms": 5,
                  "time_ms": 1795000000005, "text": "exit 1"})
    hs.send_json({"type": "build_finished", "build_id": bid, "seq": seq + 2,
                  "result": "FAILURE", "time_ms": 1795000000006})
    while top < seq + 2:
        msg = hs.recv_json(60)
        if msg["type"] == "ack":
            top = msg["seq"]
    return bid, took


def timed(m, path, reads):
    ms = []
    for _ in range(reads):
        t0 = time.monotonic()
        r = m.api_get(path)
        ms.append((time.monotonic() - t0) * 1000)
        assert r.status == 200, (path, r)
    return statistics.median(ms), max(ms), r.json()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--builds", type=int, default=5)
    ap.add_argument("--tests", type=int, default=20000)
    ap.add_argument("--fail-pct", type=float, default=2)
    ap.add_argument("--reads", type=int, default=20)
    ap.add_argument("--build-dir", default=str(ROOT / "build"))
    a = ap.parse_args()
    th = harness(a.build_dir)
    tmp = Path(tempfile.mkdtemp(prefix="bench-tests-"))
    farm = th.Farm(tmp)
    try:
        m = farm.master({"name": "bench", "heartbeat_s": 5,
                         "lost_after_s": 60, "slaves": [{"name": "hand"}],
                         "builders": [{"name": "bench", "slaves": ["hand"],
                                       "steps": [{"name": "t",
                                                  "command": "ctest",
                                                  "test_results": {
                                                      "format": "ctest"}}]}]},
                        log_level="info")
        hs = th.HandSlave(m, "hand").handshake()
        m.wait_slave_connected("hand")
        rates = []
        ids = []
        for k in range(a.builds):
            bid, took = run_build(m, hs, a.tests, a.fail_pct, k)
            ids.append(bid)
            rates.append(a.tests / took)
            print(f"build {bid}: {a.tests} results stored in {took:.2f} s "
                  f"= {a.tests / took:,.0f} results/s")
        print(f"ingest: median {statistics.median(rates):,.0f} results/s")
        last = ids[-1]
        p50, mx, j = timed(m, f"/builds/{last}/tests?status=fail", a.reads)
        want = j["counts"]["fail"]
        assert len(j["tests"]) == min(want, 1000) and want > 0, j["counts"]
        print(f"GET /builds/{last}/tests?status=fail ({want} failing of "
              f"{j['counts']['total']}): p50 {p50:.1f} ms, max {mx:.1f} ms")
        p50, mx, j = timed(m, f"/builds/{last}/tests?limit=1000", a.reads)
        print(f"GET /builds/{last}/tests?limit=1000: p50 {p50:.1f} ms, "
              f"max {mx:.1f} ms")
        name = j["tests"][0]["name"]
        suite = j["tests"][0]["suite"]
        p50, mx, j = timed(m, f"/builders/bench/tests/history?name={name}"
                              f"&suite={suite}&limit=50", a.reads)
        assert len(j["builds"]) == a.builds, j
        print(f"GET /builders/bench/tests/history (one test, "
              f"{a.builds} builds): p50 {p50:.1f} ms, max {mx:.1f} ms")
        p50, mx, j = timed(m, "/builders/bench/tests", a.reads)
        print(f"GET /builders/bench/tests ({len(j['failing'])} failing): "
              f"p50 {p50:.1f} ms, max {mx:.1f} ms")
        db = Path(m.db_path)
        print(f"database: {db.stat().st_size / 1048576:.1f} MiB for "
              f"{a.builds * a.tests} results (+WAL)")
    finally:
        farm.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
