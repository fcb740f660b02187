"""Command modifiers end to end (docs/config.md, "Command modifiers"): a
real master and slave; steps whose output carries info, stats, warnings and
marker lines; success rules overriding exit statuses; the builder's stats
API; and a 50 MB step with modifiers, stored byte-exact while the slave's
memory stays bounded."""

import os
import sqlite3

import pytest

from tfharness import (TF_MASTER, deterministic_bytes, sha256, steps_summary,
                       wait_for)


def config(builders):
    return {"name": "it", "heartbeat_s": 2, "lost_after_s": 6,
            "slaves": [{"name": "s1"}], "builders": builders}


def db_rows(master, sql, *args):
    """Rows from the master's database, read-only (WAL lets us read while
    the master writes)."""
    con = sqlite3.connect(f"file:{master.db_path}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def step(build, name):
    for s in build["steps"]:
        if s["name"] == name:
            return s
    raise AssertionError(f"no step {name}: {steps_summary(build)}")


TEST_SCRIPT = r"""
n=$((100 + TF_BUILD_NUMBER))
echo "configure: ok"
echo "Ran $n tests in 3.5s"
echo "time: compile 12.25"
echo "time: link 0.$TF_BUILD_NUMBER" >&2
echo "@@@TF_STAT binary_bytes=$((1000 * TF_BUILD_NUMBER))@@@"
"""


def test_stats_are_stored_and_served_by_the_builder_stats_api(farm):
    m = farm.master(config([{"name": "plots", "steps": [
        {"name": "test", "command": TEST_SCRIPT,
         "info": ["^(Ran [0-9]+ tests)"],
         "stats": [{"name": "tests", "regex": "^Ran ([0-9]+) tests"},
                   {"name": "seconds", "regex": "in ([0-9.]+)s$"},
                   {"regex": "^time: ([a-z]+) ([0-9.]+)$"}]},
        {"name": "size", "command": "echo '@@@TF_STAT size_kb=-2.5@@@'"},
    ]}]))
    farm.slave(m, "s1")
    builds = [m.run_build("plots") for _ in range(3)]
    for b in builds:
        assert b["result"] == "SUCCESS", steps_summary(b)
        n = b["number"]
        t = step(b, "test")
        assert t["info"] == f"Ran {100 + n} tests", t
        assert t["stats"] == {"tests": 100 + n, "seconds": 3.5,
                              "compile": 12.25, "link": float(f"0.{n}"),
                              "binary_bytes": 1000 * n}, t
        assert t["warnings"] is None, t  # no warnings rule
        assert step(b, "size")["stats"] == {"size_kb": -2.5}
        assert step(b, "size")["info"] is None

    # Stored per build and step, with the right numbers.
    rows = db_rows(m, "SELECT build_id, step, name, value FROM stats "
                   "WHERE builder = ? ORDER BY build_id, step, name", "plots")
    want = []
    for b in builds:
        n = b["number"]
        want += sorted([(b["id"], 0, "binary_bytes", 1000.0 * n),
                        (b["id"], 0, "compile", 12.25),
                        (b["id"], 0, "link", float(f"0.{n}")),
                        (b["id"], 0, "seconds", 3.5),
                        (b["id"], 0, "tests", 100.0 + n)])
        want.append((b["id"], 1, "size_kb", -2.5))
    assert rows == want

    # The builder's series, oldest first.
    s = m.get_json("/builders/plots/stats")
    assert [x["id"] for x in s["builds"]] == [b["id"] for b in builds]
    for x, b in zip(s["builds"], builds):
        assert x["number"] == b["number"] and x["result"] == "SUCCESS", x
        assert isinstance(x["duration_ms"], int) and x["duration_ms"] >= 0, x
        assert x["started_ms"] == b["started_ms"], (x, b)
    assert sorted(s["stats"]) == ["binary_bytes", "compile", "link",
                                  "seconds", "size_kb", "tests"]
    assert s["stats"]["tests"] == [
        {"build_id": b["id"], "number": b["number"], "step": 0,
         "value": 100 + b["number"]} for b in builds]
    assert [p["value"] for p in s["stats"]["size_kb"]] == [-2.5] * 3
    assert [p["step"] for p in s["stats"]["size_kb"]] == [1] * 3
    # limit keeps the newest builds.
    s = m.get_json("/builders/plots/stats?limit=2")
    assert [x["id"] for x in s["builds"]] == [b["id"] for b in builds[1:]]
    assert [p["build_id"] for p in s["stats"]["tests"]] == \
        [b["id"] for b in builds[1:]]
    # Errors.
    assert m.api_get("/builders/nope/stats").status == 404
    assert m.api_get("/builders/plots/stats?limit=0").status == 400
    assert m.api_get("/builders/plots/stats?limit=1001").status == 400
    assert m.api_post("/builders/plots/stats").status == 405
    assert "GET /api/v1/builders/{name}/stats" in \
        m.get_json("")["endpoints"]


def test_success_rules_override_the_exit_status(farm):
    m = farm.master(config([
        {"name": "zero-fails", "steps": [
            {"name": "run", "command": "echo 'running'; "
             "echo 'ERROR: disk full' >&2; exit 0",
             "success": {"fail_if": "^ERROR:"}, "haltOnFailure": True},
            {"name": "after", "command": "echo should not run"}]},
        {"name": "nonzero-passes", "steps": [
            {"name": "run", "command": "echo '12 passed, 0 failed'; exit 3",
             "success": {"pass_if": "^[0-9]+ passed, 0 failed$"}}]},
        {"name": "no-pass-line", "steps": [
            {"name": "run", "command": "echo '11 passed, 1 failed'",
             "success": {"pass_if": "^[0-9]+ passed, 0 failed$"}}]},
        {"name": "plain", "steps": [
            {"name": "run", "command": "echo 'ERROR: harmless'; exit 0"}]},
    ]))
    farm.slave(m, "s1")

    b = m.run_build("zero-fails")
    run = step(b, "run")
    assert run["exit_code"] == 0, run
    assert run["result"] == "FAILURE", run
    assert run["text"] == 'exit 0; fail_if matched "ERROR: disk full"', run
    # The slave decided: haltOnFailure skipped the next step there.
    assert step(b, "after")["result"] == "SKIPPED", steps_summary(b)
    assert b["result"] == "FAILURE"

    b = m.run_build("nonzero-passes")
    run = step(b, "run")
    assert (run["exit_code"], run["result"]) == (3, "SUCCESS"), run
    assert run["text"] == "exit 3; pass_if matched", run
    assert b["result"] == "SUCCESS"

    b = m.run_build("no-pass-line")
    run = step(b, "run")
    assert (run["exit_code"], run["result"]) == (0, "FAILURE"), run
    assert run["text"] == "exit 0; pass_if did not match", run

    b = m.run_build("plain")
    assert step(b, "run")["result"] == "SUCCESS"
    assert step(b, "run")["text"] == "exit 0"


def test_info_shows_for_passing_and_failing_steps(farm):
    m = farm.master(config([{"name": "info", "steps": [
        {"name": "pass", "command": "echo 'version: 1.2.3'; "
         "echo '@@@TF_INFO built with gcc@@@'",
         "info": ["^version: (.*)$"]},
        {"name": "fail", "command": "echo 'FAILED: test_io (2 of 40)'; exit 1",
         "info": ["^FAILED: (.*)$"], "flunkOnFailure": True},
    ]}]))
    farm.slave(m, "s1")
    b = m.run_build("info")
    assert step(b, "pass")["result"] == "SUCCESS"
    assert step(b, "pass")["info"] == "1.2.3\nbuilt with gcc"
    assert step(b, "fail")["result"] == "FAILURE"
    assert step(b, "fail")["info"] == "test_io (2 of 40)"
    assert b["result"] == "FAILURE"


def test_warnings_are_counted_and_give_warnings(farm):
    warn = ("echo 'a.c:1: warning: unused'; echo 'ok'; "
            "echo 'b.c:7: warning: shadow' >&2")
    m = farm.master(config([
        {"name": "warn", "steps": [
            {"name": "cc", "command": warn, "warnings": "warning:"}]},
        {"name": "flunk", "steps": [
            {"name": "cc", "command": warn, "warnings": "warning:",
             "flunkOnWarnings": True}]},
        {"name": "under-max", "steps": [
            {"name": "cc", "command": warn,
             "warnings": {"regex": "warning:", "max": 2}}]},
        {"name": "ignored", "steps": [
            {"name": "cc", "command": warn, "warnings": "warning:",
             "warnOnWarnings": False}]},
        {"name": "clean", "steps": [
            {"name": "cc", "command": "echo fine", "warnings": "warning:"}]},
    ]))
    farm.slave(m, "s1")
    b = m.run_build("warn")
    cc = step(b, "cc")
    assert (cc["result"], cc["warnings"]) == ("WARNINGS", 2), cc
    assert cc["text"] == "exit 0; 2 warnings", cc
    assert b["result"] == "WARNINGS"

    b = m.run_build("flunk")
    assert step(b, "cc")["result"] == "WARNINGS"
    assert b["result"] == "FAILURE"

    b = m.run_build("under-max")
    cc = step(b, "cc")
    assert (cc["result"], cc["warnings"]) == ("SUCCESS", 2), cc
    assert b["result"] == "SUCCESS"

    b = m.run_build("ignored")
    assert step(b, "cc")["result"] == "WARNINGS"
    assert b["result"] == "SUCCESS"

    b = m.run_build("clean")
    cc = step(b, "cc")
    assert (cc["result"], cc["warnings"]) == ("SUCCESS", 0), cc


def test_marker_lines_split_across_writes_and_streams(farm):
    # Each marker reaches the slave in pieces (separate writes with pauses
    # in between), interleaved with the other stream's partial lines.
    script = "; sleep 0.2; ".join([
        "printf '@@@TF_ST'", "printf 'AT a=1'",
        "printf '@@@TF_INFO from ' >&2", "printf '@@@\\n'",
        "printf 'stderr@@@\\n' >&2", "printf '@@@TF_STAT b=2@@@\\r\\n'",
        "printf '@@@TF_STAT a=3@@@'"])  # no newline: the step's end ends it
    m = farm.master(config([{"name": "markers", "steps": [
        {"name": "on", "command": script},
        {"name": "off", "command": script, "markers": False},
    ]}]))
    farm.slave(m, "s1")
    b = m.run_build("markers")
    on = step(b, "on")
    assert on["stats"] == {"a": 3, "b": 2}, on
    assert on["info"] == "from stderr", on
    off = step(b, "off")
    assert off["stats"] == {} and off["info"] is None, off
    # The log itself is untouched.
    assert m.step_log(b["id"], 0) == (
        b"@@@TF_STAT a=1@@@TF_INFO from @@@\nstderr@@@\n"
        b"@@@TF_STAT b=2@@@\r\n@@@TF_STAT a=3@@@")


def test_checkconfig_reports_a_bad_regex_at_its_position(farm):
    text = ('{"slaves": [{"name": "s1", "secret": "x"}],\n'
            ' "builders": [{"name": "b", "steps": [\n'
            '  {"name": "t", "command": "true", "info": ["ok", "(oops"]}]}]}\n')
    path = farm.tmp / "master.json"
    path.write_text(text)
    r = farm.run([TF_MASTER, "checkconfig", path])
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    col = text.splitlines()[2].index('"(oops"') + 1
    assert f"{path}:3:{col}: error: builders[0].steps[0].info[1]: invalid " \
        "regular expression" in r.stderr, r.stderr


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.timeout(300)
def test_50_megabytes_with_modifiers_stored_exactly_memory_bounded(
        farm, monkeypatch):
    # Under ASan, freed memory sits in its quarantine (256 MB by default)
    # and would count as ours: the slave runs without one here.
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") +
                       "quarantine_size_mb=0:thread_local_quarantine_size_kb=0")
    size = 50 * 1024 * 1024
    data = bytearray(deterministic_bytes(size, seed=51))
    # Markers and matching lines buried in random bytes, one of them across
    # the 64 KiB read boundary, plus a 1 MiB line with no newline at all.
    for at, line in ((1000, b"\n@@@TF_STAT early=1@@@\n"),
                     (65536 - 9, b"\nRan 4242 tests\n"),
                     (size // 2, b"\n" + b"x" * (1 << 20) + b"\n"),
                     (size - 5000, b"\n@@@TF_STAT late=2.5@@@\n")):
        data[at:at + len(line)] = line
    data = bytes(data)
    big = farm.tmp / "big.bin"
    big.write_bytes(data)
    m = farm.master(config([{"name": "big", "steps": [
        {"name": "cat", "command": ["cat", str(big)],
         "info": ["^(Ran [0-9]+ tests)$"],
         "stats": [{"name": "tests", "regex": "^Ran ([0-9]+) tests$"}],
         "warnings": "^xxxxxxxxxxxxxxxxxxxx+$",
         "success": {"fail_if": "^NEVER PRINTED$"}}]}]), log_level="info")
    s = farm.slave(m, "s1", log_level="info")
    before = vm_hwm_kib(s.pid)
    b = m.run_build("big", timeout=240)
    after = vm_hwm_kib(s.pid)
    cat = b["steps"][0]
    assert b["result"] == "WARNINGS", steps_summary(b)  # the 1 MiB x-line
    assert cat["stats"] == {"early": 1, "tests": 4242, "late": 2.5}, cat
    assert cat["info"] == "Ran 4242 tests", cat
    # The 1 MiB line is matched in 64 KiB pieces, but it is one line: one
    # warning.
    assert cat["warnings"] == 1, cat
    assert cat["log"]["bytes"] == size, cat
    r = m.api_get(f"/builds/{b['id']}/steps/0/log", timeout=180)
    assert r.status == 200 and len(r.body) == size, r
    assert sha256(r.body) == sha256(data), "the stored log differs"
    # The slave's peak memory grew by far less than the output.
    assert after - before < 32 * 1024, (before, after)
    wait_for(lambda: s.running(), 5, "the slave to keep running", farm)
