"""Test results as data (issue 12, point 1), end to end: a real tf-master
and tf-slave; a builder builds a small C project with cmake whose ctest
has one failing assertion and one flaky test (ctest --repeat
until-pass:2), then runs Python tests under pytest, unittest and as JUnit
XML. The slave parses what each step declares and sends test_results
events; the master stores one row per test with the event and serves
them at GET /api/v1/builds/{id}/tests, which is what these tests read.
Each result's log position is checked against the log the master
stored.

Bad input: malformed, oversized and escaping report files, binary garbage
in the output, a results message over the cap from a hand-written slave,
a glob escaping the workdir in the config. And results survive a master
restart like output does."""

import json
import os
import re
import time

import pytest

from tfharness import HandSlave, output_frame, steps_summary, wait_for

PY = "/usr/bin/python3"

def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def c_project(root):
    """A small C library's tests: test_pack fails an assertion at line 89
    of test_pack.c, test_flaky fails its first run and passes the next."""
    write(root / "CMakeLists.txt", """\
cmake_minimum_required(VERSION 3.13)
project(minipack C)
enable_testing()
add_executable(test_pack test_pack.c)
add_executable(test_ok test_ok.c)
add_executable(test_flaky test_flaky.c)
add_test(NAME test_pack COMMAND test_pack)
add_test(NAME test_ok COMMAND test_ok)
add_test(NAME test_flaky COMMAND test_flaky ${CMAKE_BINARY_DIR}/flaky.state)
""")
    lines = ["#include <stdio.h>",
             "#define check(c, msg) do { if (!(c)) { printf(\"%s:%d: %s\\n\","
             " \"test_pack.c\", __LINE__, msg); return 1; } } while (0)",
             "static int pack(int v) { return v + 1; }",
             "int main(void)", "{", "    printf(\"testing json_pack\\n\");"]
    while len(lines) < 88:
        lines.append("    check(pack(%d) == %d, \"json_pack ok\");"
                     % (len(lines), len(lines) + 1))
    lines.append("    check(pack(1) == 3, \"json_pack integer failed\");")
    lines += ["    return 0;", "}"]
    write(root / "test_pack.c", "\n".join(lines) + "\n")
    write(root / "test_ok.c",
          "#include <stdio.h>\nint main(void) { puts(\"fine\"); return 0; }\n")
    write(root / "test_flaky.c", """\
#include <stdio.h>
int main(int argc, char **argv)
{
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        f = fopen(argv[1], "w");
        fputs("1", f);
        fclose(f);
        printf("test_flaky.c:9: first run fails\\n");
        return 1;
    }
    fclose(f);
    return 0;
}
""")
    write(root / "py" / "test_calc.py", """\
import unittest


class TestCalc(unittest.TestCase):
    def test_add(self):
        self.assertEqual(1 + 1, 2)

    def test_pack_integer(self):
        self.assertEqual(3, 2, "json_pack integer failed")

    @unittest.skip("not on this platform")
    def test_skipped(self):
        pass
""")


def config(builders, **top):
    cfg = {"name": "it", "heartbeat_s": 2, "lost_after_s": 10,
           "slaves": [{"name": "s1"}, {"name": "hand"}],
           "builders": builders}
    cfg.update(top)
    return cfg


def results(m, bid, step=None):
    """The test results the master stored for a build (and step), as its
    API serves them, keyed by (suite, name)."""
    out = {}
    for r in m.get_json(f"/builds/{bid}/tests")["tests"]:
        if step is not None and r["step"] != step:
            continue
        key = (r["suite"], r["name"])
        assert key not in out, f"{key} reported twice: {r} and {out[key]}"
        out[key] = r
    return out


def check_log_position(m, bid, step, r, starts_with):
    """The result's log pointer names the line of the stored log that
    starts with starts_with."""
    log = m.step_log(bid, step)
    off = r["log"]["offset"]
    assert log[off:].startswith(starts_with.encode()), \
        (r, log[off:off + 200])
    assert off == 0 or log[off - 1:off] == b"\n", r
    assert log[:off].count(b"\n") + 1 == r["log"]["line"], r
    assert r["log"]["lines"] >= 1


def lib_builder(proj):
    return {"name": "lib", "slaves": ["s1"], "steps": [
        {"name": "configure",
         "command": ["cmake", "-S", str(proj), "-B", "build"]},
        {"name": "compile", "command": ["cmake", "--build", "build"]},
        {"name": "ctest",
         "command": "cd build && rm -f flaky.state && "
                    "ctest --output-on-failure --repeat until-pass:2",
         "test_results": {"format": "ctest"}},
        {"name": "pytest",
         "command": f"cd {proj / 'py'} && {PY} -m pytest -v -p "
                    "no:cacheprovider --junitxml=\"$OLDPWD/reports/py.xml\" "
                    "test_calc.py",
         "test_results": {"format": "pytest"}},
        {"name": "unittest",
         "command": f"cd {proj / 'py'} && {PY} -m unittest -v test_calc",
         "test_results": {"format": "unittest"}},
        {"name": "junit", "command": "ls reports",
         "test_results": {"format": "junit", "files": ["reports/*.xml"]}},
    ]}


@pytest.mark.timeout(180)
def test_a_cmake_project_reports_failing_flaky_and_python_tests(farm):
    proj = farm.tmp / "proj"
    c_project(proj)
    m = farm.master(config([lib_builder(proj)]))
    farm.slave(m, "s1")
    b = m.run_build("lib", timeout=150)
    bid = b["id"]
    assert steps_summary(b) == [
        ("configure", "SUCCESS"), ("compile", "SUCCESS"),
        ("ctest", "FAILURE"), ("pytest", "FAILURE"),
        ("unittest", "FAILURE"), ("junit", "SUCCESS")], steps_summary(b)
    # Steps that declare nothing send nothing.
    assert results(m, bid, 0) == {} and results(m, bid, 1) == {}

    ct = results(m, bid, 2)
    assert set(ct) == {("", "test_pack"), ("", "test_ok"),
                       ("", "test_flaky")}, ct
    pack = ct[("", "test_pack")]
    assert pack["status"] == "fail" and pack["attempts"] == 2, pack
    assert "test_pack.c:89: json_pack integer failed" in pack["message"], pack
    assert pack["outcome"] == "Failed", pack
    check_log_position(m, bid, 2, pack, "1/3 Test #1: test_pack ")
    flaky = ct[("", "test_flaky")]
    assert flaky["status"] == "flaky" and flaky["attempts"] == 2, flaky
    assert "test_flaky.c:9: first run fails" in flaky["message"], flaky
    check_log_position(m, bid, 2, flaky, "3/3 Test #3: test_flaky ")
    assert ct[("", "test_ok")]["status"] == "pass"
    assert ct[("", "test_ok")]["message"] is None

    py = results(m, bid, 3)
    suite = "test_calc.py::TestCalc"
    assert {k[1]: v["status"] for k, v in py.items() if k[0] == suite} == {
        "test_add": "pass", "test_pack_integer": "fail",
        "test_skipped": "skip"}, py
    fail = py[(suite, "test_pack_integer")]
    assert "AssertionError: 3 != 2 : json_pack integer failed" in \
        fail["message"], fail
    check_log_position(m, bid, 3, fail, "_____")

    ut = results(m, bid, 4)
    assert {k: v["status"] for k, v in ut.items()} == {
        ("test_calc.TestCalc", "test_add"): "pass",
        ("test_calc.TestCalc", "test_pack_integer"): "fail",
        ("test_calc.TestCalc", "test_skipped"): "skip"}, ut
    # unittest writes on stderr: positions still index the stored log.
    fail = ut[("test_calc.TestCalc", "test_pack_integer")]
    check_log_position(m, bid, 4, fail, "FAIL: test_pack_integer")

    ju = results(m, bid, 5)
    assert ju[("test_calc.TestCalc", "test_pack_integer")]["status"] == "fail"
    assert "json_pack integer failed" in \
        ju[("test_calc.TestCalc", "test_pack_integer")]["message"]
    assert ju[("test_calc.TestCalc", "test_add")]["status"] == "pass"
    assert ju[("test_calc.TestCalc", "test_add")]["log"] is None

    log = m.log_text()
    assert f"build {bid} step 2: test_results (ctest): 3 results: 1 pass, " \
           "1 fail, 1 flaky, 0 skip; last, total 3" in log, log[-3000:]
    assert "malformed" not in log


@pytest.mark.timeout(120)
def test_bad_report_files_become_problems_not_reads(farm):
    outside = write(farm.tmp / "outside" / "secret.xml",
                    '<testsuite><testcase name="stolen"/></testsuite>')
    script = f"""
mkdir -p reports
printf '<testsuite name="s"><testcase name="ok"/></testsuite>' > reports/good.xml
printf '<testsuite>\\n<testcase name="a">\\n</testsuite>\\n' > reports/bad.xml
printf '<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>' > reports/bomb.xml
ln -sf {outside} reports/evil.xml
truncate -s 40M reports/huge.xml
"""
    m = farm.master(config([{"name": "rep", "slaves": ["s1"], "steps": [
        {"name": "make", "command": script,
         "test_results": {"format": "junit",
                          "files": ["reports/*.xml", "absent/*.xml"]}}]}]))
    farm.slave(m, "s1")
    b = m.run_build("rep")
    # Report problems do not change the step's result: its exit does.
    assert steps_summary(b) == [("make", "SUCCESS")], steps_summary(b)
    got = results(m, b["id"], 0)
    assert list(got) == [("s", "ok")], got
    log = m.log_text()
    for problem in [
            "reports/bad.xml: not well-formed XML at line 3: </testsuite> "
            "does not close <testcase>",
            "reports/bomb.xml: not well-formed XML at line 1: a DOCTYPE with "
            "an internal subset (entity declarations) is refused",
            "reports/evil.xml: a symbolic link: not followed",
            "reports/huge.xml: 41943040 bytes is over the 33554432-byte cap "
            "for a report file: not read",
            "absent/*.xml: no file matched"]:
        assert f"build {b['id']} step 0: test results: {problem}" in log, \
            (problem, log[-4000:])
    assert "stolen" not in log


@pytest.mark.timeout(120)
def test_binary_garbage_output_is_harmless(farm):
    m = farm.master(config([{"name": "junk", "slaves": ["s1"], "steps": [
        {"name": "noise",
         "command": "head -c 3000000 /dev/urandom; echo; "
                    "echo '1/1 Test #1: survivor ........   Passed    0.01 sec'",
         "test_results": {"format": "ctest"}}]}]))
    farm.slave(m, "s1")
    b = m.run_build("junk")
    assert steps_summary(b) == [("noise", "SUCCESS")]
    got = results(m, b["id"], 0)
    assert got[("", "survivor")]["status"] == "pass", got
    r = got[("", "survivor")]
    check_log_position(m, b["id"], 0, r, "1/1 Test #1: survivor")
    assert "malformed" not in m.log_text()


def test_a_glob_escaping_the_workdir_is_a_config_error(farm):
    m = farm.master(config([{"name": "esc", "slaves": ["s1"], "steps": [
        {"name": "t", "command": "true",
         "test_results": {"format": "junit",
                          "files": ["../../etc/*.xml"]}}]}]), start=False)
    m.start(wait=False)
    rc = m.proc.wait_exit(20)
    assert rc != 0
    assert 'builders[0].steps[0].test_results.files[0]: invalid glob ' \
           '"../../etc/*.xml"' in m.log_text(), m.log_text()


def hand_config():
    return config([{"name": "byhand", "slaves": ["hand"], "steps": [
        {"name": "one", "command": "ctest",
         "test_results": {"format": "ctest"}}]}])


def one_result(i, msg="x"):
    return {"suite": "", "name": f"t{i}", "status": "fail", "attempts": 1,
            "message": msg}


def test_the_master_acks_test_results_and_refuses_one_over_the_cap(farm):
    m = farm.master(hand_config())
    hs = HandSlave(m, "hand").handshake()
    m.wait_slave_connected("hand")
    m.force("byhand")
    start = hs.recv_json(15)
    while start["type"] != "build_start":
        start = hs.recv_json(15)
    bid = start["build_id"]
    # The step spec carries the declaration.
    assert start["steps"][0]["test_results"] == {"format": "ctest"}, start
    hs.send_json({"type": "step_started", "build_id": bid, "seq": 1,
                  "step": 0, "name": "one", "time_ms": 1795000000000})
    hs.send_binary(output_frame(bid, 0, 2, b"1/1 Test #1: t0 ...\n"))
    hs.send_json({"type": "test_results", "build_id": bid, "seq": 3,
                  "step": 0, "format": "ctest",
                  "results": [one_result(0, "t.c:1: boom")],
                  "last": False})
    top = 0
    while top < 3:
        msg = hs.recv_json(15)
        if msg["type"] == "ack":
            top = msg["seq"]
    assert m.slave_connected("hand")
    assert results(m, bid, 0)[("", "t0")]["message"] == "t.c:1: boom"
    # Now one of 20 x 4000-byte messages: each field fits, the whole is
    # over 64 KiB: the link is closed with a sentence saying so.
    big = {"type": "test_results", "build_id": bid, "seq": 4, "step": 0,
           "format": "ctest",
           "results": [one_result(i, "m" * 4000) for i in range(1, 21)],
           "last": True}
    hs.send_json(big)
    msg = hs.recv_json(15)
    while msg["type"] == "ack":
        msg = hs.recv_json(15)
    assert msg["type"] == "error" and msg["code"] == "malformed", msg
    assert "test_results message of" in msg["message"] and \
        "is over the 65536-byte limit" in msg["message"], msg


@pytest.mark.timeout(150)
def test_results_survive_a_master_restart(farm):
    out = "\\n".join(f"{i}/3 Test #{i}: t{i} ......   Passed    0.0{i} sec"
                     for i in (1, 2, 3))
    m = farm.master(config([{"name": "slow", "slaves": ["s1"], "steps": [
        {"name": "t", "command": f"printf '{out}\\n'; sleep 4",
         "test_results": {"format": "ctest"}}]}]))
    farm.slave(m, "s1")
    req = m.force("slow")
    bid = m.wait_build_started(req)
    m.wait_step_running(bid, 0, min_bytes=10)
    m.kill9()
    time.sleep(5)  # the step ends; its results wait in the slave's spool
    m.start()
    b = m.wait_request_done(req, 60)
    assert b["id"] == bid and steps_summary(b) == [("t", "SUCCESS")]
    got = results(m, bid, 0)
    assert {k[1]: v["status"] for k, v in got.items()} == {
        "t1": "pass", "t2": "pass", "t3": "pass"}, got
    assert got[("", "t3")]["duration_ms"] == 30


def ctest_lines(results):
    """ctest console lines for [(name, passed), ...] (the failing ones
    print an assertion after their line, as --output-on-failure does)."""
    n = len(results)
    out = []
    for i, (name, ok) in enumerate(results, 1):
        word = "   Passed" if ok else "***Failed"
        out.append(f"{i}/{n} Test #{i}: {name} ........{word}    0.01 sec")
        if not ok:
            out.append(f"{name}.c:{10 + i}: {name} assertion failed")
    return "\n".join(out) + "\n"


def printf_step(name, text, **kw):
    step = {"name": name,
            "command": ["printf", "%s", text],
            "test_results": {"format": "ctest"}}
    step.update(kw)
    return step


@pytest.mark.timeout(120)
def test_failing_tests_come_first_with_their_lines(farm):
    m = farm.master(config([{"name": "order", "slaves": ["s1"], "steps": [
        printf_step("t", ctest_lines([("alpha", True), ("beta", False),
                                      ("gamma", True), ("delta", False)]))
    ]}]))
    farm.slave(m, "s1")
    b = m.run_build("order")
    got = m.get_json(f"/builds/{b['id']}/tests")
    assert [t["name"] for t in got["tests"]] == [
        "beta", "delta", "alpha", "gamma"], got
    assert got["counts"] == {"total": 4, "pass": 2, "fail": 2, "skip": 0,
                             "flaky": 0}, got
    assert got["try"] is False and got["new_failures"] is None, got
    beta = got["tests"][0]
    assert beta["status"] == "fail" and beta["step_name"] == "t", beta
    assert "beta.c:12: beta assertion failed" in beta["message"], beta
    # The failure's own lines of the log come with it.
    assert "beta.c:12: beta assertion failed" in beta["log"]["excerpt"], beta
    assert "alpha" not in beta["log"]["excerpt"], beta
    assert got["tests"][2]["log"].get("excerpt") is None, got["tests"][2]
    only = m.get_json(f"/builds/{b['id']}/tests?status=pass")
    assert [t["name"] for t in only["tests"]] == ["alpha", "gamma"], only
    assert only["counts"]["fail"] == 2, only
    one = m.get_json(f"/builds/{b['id']}/tests?status=fail&limit=1")
    assert [t["name"] for t in one["tests"]] == ["beta"] and \
        one["truncated"] is True, one


@pytest.mark.timeout(120)
def test_a_failure_a_later_step_passes_is_flaky(farm):
    """A test failing in one step and passing when a later step reruns it
    is flaky in that build, both rows; one failing in both stays fail."""
    m = farm.master(config([{"name": "rerun", "slaves": ["s1"], "steps": [
        printf_step("first", ctest_lines([("shaky", False), ("broken", False),
                                          ("fine", True)])),
        printf_step("rerun", ctest_lines([("shaky", True),
                                          ("broken", False)])),
    ]}]))
    farm.slave(m, "s1")
    b = m.run_build("rerun")
    got = m.get_json(f"/builds/{b['id']}/tests")["tests"]
    status = {(t["step"], t["name"]): t["status"] for t in got}
    assert status == {(0, "shaky"): "flaky", (1, "shaky"): "flaky",
                      (0, "broken"): "fail", (1, "broken"): "fail",
                      (0, "fine"): "pass"}, status
    fails = m.get_json(f"/builds/{b['id']}/tests?status=fail")["tests"]
    assert {t["name"] for t in fails} == {"broken"}, fails


@pytest.mark.timeout(150)
def test_history_and_a_builders_failing_and_flaky_tests(farm):
    """Three builds: t1 passes, then fails, then fails and passes on a
    rerun (flaky); t2 fails throughout. The history of t1 says so newest
    first; the builder's failing tests are its latest build's, its flaky
    ones those flaky in its last builds."""
    state = farm.tmp / "runs"
    script = f"""
n=$(cat {state} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {state}
case $n in
1) printf '%s' '{ctest_lines([("t1", True), ("t2", False)])}' ;;
2) printf '%s' '{ctest_lines([("t1", False), ("t2", False)])}' ;;
*) printf '%s' '{ctest_lines([("t1", False), ("t2", False)])}'
   printf '%s' '{ctest_lines([("t1", True)])}' ;;
esac
"""
    m = farm.master(config([{"name": "hist", "slaves": ["s1"], "steps": [
        {"name": "t", "command": script,
         "test_results": {"format": "ctest"}}]}]))
    farm.slave(m, "s1")
    ids = [m.run_build("hist")["id"] for _ in range(3)]
    h = m.get_json("/builders/hist/tests/history?name=t1&limit=10")
    assert [(x["build_id"], x["status"]) for x in h["builds"]] == [
        (ids[2], "flaky"), (ids[1], "fail"), (ids[0], "pass")], h
    assert h["counts"]["fail"] == 1 and h["counts"]["flaky"] == 1, h
    assert "t1.c:11: t1 assertion failed" in h["builds"][1]["message"], h
    assert h["builds"][0]["try"] is False
    two = m.get_json("/builders/hist/tests/history?name=t1&suite=&limit=2")
    assert [x["build_id"] for x in two["builds"]] == ids[:0:-1], two
    none = m.get_json("/builders/hist/tests/history?name=never")
    assert [x["status"] for x in none["builds"]] == [None] * 3, none
    assert none["counts"]["absent"] == 3, none
    cur = m.get_json("/builders/hist/tests")
    assert cur["latest_build"]["id"] == ids[2], cur
    assert [t["name"] for t in cur["failing"]] == ["t2"], cur
    assert "t2.c:12: t2 assertion failed" in cur["failing"][0]["message"]
    assert [(t["name"], t["builds"], t["last_build_id"])
            for t in cur["flaky"]] == [("t1", 1, ids[2])], cur


def test_bad_test_queries_are_refused_with_a_reason(farm):
    m = farm.master(config([{"name": "q", "slaves": ["s1"], "steps": [
        {"name": "t", "command": "true"}]}]))
    cases = [
        ("/builds/1/tests?status=broken", 400, 'invalid status "broken"'),
        ("/builds/1/tests?limit=0", 400, "limit"),
        ("/builds/999/tests", 404, "no such build"),
        ("/builders/nope/tests", 404, "no such builder"),
        ("/builders/q/tests?last=0", 400, "last"),
        ("/builders/q/tests/history", 400,
         'missing query parameter "name"'),
        ("/builders/q/tests/history?name=" + "x" * 1025, 400,
         "is 1025 bytes, over the 1024-byte limit"),
        ("/builders/q/tests/history?name=%FF%FE", 400,
         'query parameter "name" is not valid UTF-8'),
        ("/builders/q/tests/history?name=a&suite=%C3", 400,
         'query parameter "suite" is not valid UTF-8'),
        ("/builders/nope/tests/history?name=a", 404, "no such builder"),
    ]
    for path, status, text in cases:
        r = m.api_get(path)
        assert r.status == status and text in r.error_message(), (path, r)


def started_hand_build(m):
    hs = HandSlave(m, "hand").handshake()
    m.wait_slave_connected("hand")
    m.force("byhand")
    start = hs.recv_json(15)
    while start["type"] != "build_start":
        start = hs.recv_json(15)
    bid = start["build_id"]
    hs.send_json({"type": "step_started", "build_id": bid, "seq": 1,
                  "step": 0, "name": "one", "time_ms": 1795000000000})
    return hs, bid


def refused(hs):
    msg = hs.recv_json(15)
    while msg["type"] == "ack":
        msg = hs.recv_json(15)
    assert msg["type"] == "error" and msg["code"] == "malformed", msg
    return msg["message"]


@pytest.mark.parametrize("case", ["too_many", "name_too_long",
                                  "invalid_utf8"])
def test_bad_test_results_from_a_slave_are_refused(farm, case):
    m = farm.master(hand_config())
    hs, bid = started_hand_build(m)
    msg = {"type": "test_results", "build_id": bid, "seq": 2, "step": 0,
           "format": "ctest", "results": [], "last": True}
    if case == "too_many":
        msg["results"] = [{"suite": "", "name": f"t{i}", "status": "pass",
                           "attempts": 1} for i in range(1001)]
        hs.send_json(msg)
        text = refused(hs)
        assert "test_results.results" in text and "1000" in text, text
    elif case == "name_too_long":
        msg["results"] = [one_result(0)]
        msg["results"][0]["name"] = "n" * 1025
        hs.send_json(msg)
        text = refused(hs)
        assert "test_results.results[0].name" in text and "1024" in text, \
            text
    else:
        msg["results"] = [one_result(0)]
        raw = json.dumps(msg).replace('"t0"', '"t\\udc80"')
        hs.send_text(raw)
        text = refused(hs)
        assert "UTF-8" in text or "Unicode" in text, text
    # Nothing of it was stored.
    assert m.get_json(f"/builds/{bid}/tests")["tests"] == []
