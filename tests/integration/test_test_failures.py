"""The author sees what broke (issue 12, points 2 and 3), end to end: a
real git repository holding a small C project built with cmake whose
ctest has one failing assertion (test_pack.c:89) and one flaky test, a
real master and slave, tf-try as a committer, and a real SMTP server.

The project's base revision already fails test_pack: the continuous
build of the base says so. A try job whose patch also breaks test_ok
gets test_ok marked new and test_pack "also failing without the patch",
in the API, in tf-try --wait's output (before the log tail) and in the
result mail (before the excerpt); --new-failures-only fails it (a new
failure). A second job whose patch breaks nothing new passes under
--new-failures-only, and its mail's subject says there is no new
failure."""

import os
import re

import pytest

from test_mail import Smtpd, mail_config, parts
from test_testresults import c_project
from test_try import TF_TRY, add_user, explain, git, tf_try

pytestmark = pytest.mark.skipif(not os.access(TF_TRY, os.X_OK),
                                reason=f"{TF_TRY} is not built")

CTEST = ("cd build && rm -f flaky.state && "
         "ctest --output-on-failure --repeat until-pass:2")


def make_project_repos(tmp):
    """A bare upstream holding the C project (base: test_pack fails) and
    a clone to work in."""
    up = tmp / "upstream.git"
    work = tmp / "work"
    git(tmp, "init", "-q", "--bare", "-b", "main", str(up))
    git(tmp, "clone", "-q", str(up), str(work))
    git(work, "checkout", "-q", "-b", "main")
    c_project(work)
    (work / ".gitignore").write_text("build/\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base: test_pack fails")
    git(work, "push", "-q", "-u", "origin", "main")
    return up, work


def farm_config(up, smtp_port):
    return {"name": "it", "heartbeat_s": 2, "lost_after_s": 10,
            "slaves": [{"name": "s1"}],
            "mail": mail_config(smtp_port),
            "builders": [{
                "name": "lib", "slaves": ["s1"], "repository": str(up),
                "branch": "main", "steps": [
                    {"name": "configure",
                     "command": ["cmake", "-S", ".", "-B", "build"]},
                    {"name": "compile",
                     "command": ["cmake", "--build", "build"]},
                    {"name": "ctest", "command": CTEST,
                     "test_results": {"format": "ctest"}}]}]}


def job_mail(smtp, job_id, count):
    for msg, _raw, _env in smtp.wait_count(count, timeout=60):
        if int(msg["X-TestFarm-Job"] or 0) == job_id:
            return msg
    raise AssertionError(f"no mail for job {job_id}")


@pytest.mark.timeout(300)
def test_failing_tests_first_new_or_also_failing_without_the_patch(farm):
    up, work = make_project_repos(farm.tmp)
    smtp = Smtpd(farm).start()
    m = farm.master(farm_config(up, smtp.port))
    farm.slave(m, "s1")
    token = add_user(farm, m, "ann@example.org", "Ann Example")

    # The continuous build of the base: test_pack fails there already.
    ci = m.run_build("lib", timeout=150)
    ci_tests = m.get_json(f"/builds/{ci['id']}/tests")
    assert [(t["name"], t["status"]) for t in ci_tests["tests"]] == [
        ("test_pack", "fail"), ("test_flaky", "flaky"),
        ("test_ok", "pass")], ci_tests
    assert ci_tests["try"] is False and ci_tests["new_failures"] is None

    # A patch that breaks test_ok too.
    (work / "test_ok.c").write_text(
        "#include <stdio.h>\nint main(void)\n{\n"
        "    printf(\"test_ok.c:4: ok is broken by the patch\\n\");\n"
        "    return 1;\n}\n")
    r = tf_try(farm, m, work, "-b", "lib", "--wait", "--poll-ms", "200",
               "--new-failures-only", "-m", "break test_ok", token=token,
               timeout=200)
    assert r.returncode == 1, explain(r)
    out = r.stdout
    job = int(re.search(r"^job (\d+): http", out, re.M).group(1))
    header = ("lib: 2 failing tests (1 new, 1 also failing without the "
              "patch), 1 flaky:\n")
    assert header in out, out
    tests_at = out.index(header)
    tail_at = out.index("lib: step ctest ended FAILURE; the last")
    assert tests_at < tail_at, out
    shown = out[tests_at:tail_at]
    assert re.search(r"^  FAIL  test_ok  \[new\]\n"
                     r"      log of step ctest, from line \d+:\n"
                     r"(      \| .*\n)*"
                     r"      \| test_ok\.c:4: ok is broken by the patch\n",
                     shown, re.M), shown
    assert re.search(r"^  FAIL  test_pack  \[also failing without the "
                     r"patch\]\n(      .*\n)*"
                     r"      \| test_pack\.c:89: json_pack integer failed\n",
                     shown, re.M), shown
    assert "  FLAKY test_flaky  (passed on a retry)\n" in shown, shown
    assert f"job {job}: FAILURE (new failures)" in out, out

    # The API says the same.
    jj = m.get_json(f"/jobs/{job}")
    assert jj["new_failures_only"] is True, jj
    assert jj["new_failures"] == {"builds": 1, "tests": 1}, jj
    bid = jj["builders"][0]["build"]["id"]
    summary = jj["builders"][0]["build"]["tests"]
    assert (summary["fail"], summary["flaky"], summary["new_failures"],
            summary["reference_build"]) == (2, 1, 1, ci["id"]), summary
    tt = m.get_json(f"/builds/{bid}/tests?status=fail")
    assert tt["try"] is True and tt["reference_build"]["id"] == ci["id"]
    assert {t["name"]: t["failure"] for t in tt["tests"]} == {
        "test_ok": "new", "test_pack": "also_failing_without_patch"}, tt
    pack = [t for t in tt["tests"] if t["name"] == "test_pack"][0]
    assert "test_pack.c:89: json_pack integer failed" in pack["message"]
    assert "test_pack.c:89: json_pack integer failed" in \
        pack["log"]["excerpt"], pack

    # The mail: the failing tests before the step's excerpt.
    msg = job_mail(smtp, job, 1)
    assert msg["Subject"] == f"[it] FAIL: try job {job}: break test_ok", \
        msg["Subject"]
    text, html = parts(msg)
    assert ("lib: 2 failing tests (1 new, 1 also failing without the "
            "patch), 1 flaky\n") in text, text
    t_at = text.index("lib: 2 failing tests")
    assert t_at < text.index("lib: FAILURE in step"), text
    assert "\n  FAIL  test_ok  [new]\n" \
           "      test_ok.c:4: ok is broken by the patch\n" in text, text
    assert re.search(r"\n  FAIL  test_pack  \[also failing without the "
                     r"patch\]\n(      [^|].*\n)*"
                     r"      test_pack\.c:89: json_pack integer failed\n",
                     text), text
    assert re.search(r"      log of step ctest, from line \d+:\n"
                     r"(      \| .*\n)*"
                     r"      \| test_pack\.c:89: json_pack integer failed\n",
                     text), text
    assert "FLAKY test_flaky  (flaky: passed on a retry)" in text, text
    assert "test_pack.c:89: json_pack integer failed" in html
    assert "[also failing without the patch]" in html

    # A patch that breaks nothing new: no new failure, exit 0, and the
    # mail's subject says so.
    git(work, "checkout", "--", "test_ok.c")
    (work / "NOTES").write_text("a harmless change\n")
    git(work, "add", "NOTES")
    r = tf_try(farm, m, work, "-b", "lib", "--wait", "--poll-ms", "200",
               "--new-failures-only", "-m", "harmless", token=token,
               timeout=200)
    assert r.returncode == 0, explain(r)
    job2 = int(re.search(r"^job (\d+): http", r.stdout, re.M).group(1))
    assert ("lib: 1 failing test (0 new, 1 also failing without the "
            "patch), 1 flaky:\n") in r.stdout, r.stdout
    assert f"job {job2}: FAILURE (no new failures)" in r.stdout, r.stdout
    assert m.get_json(f"/jobs/{job2}")["new_failures"] == {
        "builds": 0, "tests": 0}
    msg = job_mail(smtp, job2, 2)
    assert msg["Subject"] == \
        f"[it] NO NEW FAILURES: try job {job2}: harmless", msg["Subject"]

    # The job remembers that it asked: following it again without the
    # option gives the same verdict.
    r = tf_try(farm, m, work, "status", str(job2), "--wait")
    assert r.returncode == 0 and \
        f"job {job2}: FAILURE (no new failures)" in r.stdout, explain(r)


@pytest.mark.timeout(300)
def test_retry_without_patch_marks_the_failures_from_its_rerun(farm):
    """No continuous build to compare with: a builder with
    retry_without_patch builds a failed try build again without the
    patch, in the same job, and the rerun's failures mark the try
    build's."""
    up, work = make_project_repos(farm.tmp)
    smtp = Smtpd(farm).start()
    cfg = farm_config(up, smtp.port)
    cfg["builders"][0]["retry_without_patch"] = True
    m = farm.master(cfg)
    farm.slave(m, "s1")
    token = add_user(farm, m, "ann@example.org", "Ann Example")
    (work / "test_ok.c").write_text(
        "#include <stdio.h>\nint main(void)\n{\n"
        "    printf(\"test_ok.c:4: ok is broken by the patch\\n\");\n"
        "    return 1;\n}\n")
    r = tf_try(farm, m, work, "-b", "lib", "--wait", "--poll-ms", "200",
               "--new-failures-only", "-m", "break test_ok", token=token,
               timeout=200)
    assert r.returncode == 1, explain(r)
    out = r.stdout
    job = int(re.search(r"^job (\d+): http", out, re.M).group(1))
    j = m.get_json(f"/jobs/{job}")
    assert [(b["name"], b["without_patch_of"] is not None)
            for b in j["builders"]] == [("lib", False), ("lib", True)], j
    tried, rerun = (b["build"]["id"] for b in j["builders"])
    assert j["builders"][1]["without_patch_of"] == tried, j
    # Built without the patch: test_ok passes there.
    all_rerun = m.get_json(f"/builds/{rerun}/tests")["tests"]
    assert {t["name"]: t["status"] for t in all_rerun}["test_ok"] == \
        "pass", all_rerun
    # The rerun failed test_pack (the base's failure), not test_ok.
    rt = m.get_json(f"/builds/{rerun}/tests?status=fail")
    assert [t["name"] for t in rt["tests"]] == ["test_pack"], rt
    assert rt["try"] is False, rt
    tt = m.get_json(f"/builds/{tried}/tests?status=fail")
    assert tt["reference_build"]["id"] == rerun and \
        tt["reference_build"]["without_patch"] is True, tt
    assert {t["name"]: t["failure"] for t in tt["tests"]} == {
        "test_ok": "new", "test_pack": "also_failing_without_patch"}, tt
    assert j["new_failures"] == {"builds": 1, "tests": 1}, j
    # tf-try waited for the rerun before marking the failures.
    assert (f"lib: build {tried} failed; it is being built again without "
            "the patch, its failing tests follow then\n") in out, out
    header = ("lib: 2 failing tests (1 new, 1 also failing without the "
              "patch), 1 flaky:\n")
    assert header in out, out
    assert out.index(f"lib (without the patch): build {rerun}: FAILURE") < \
        out.index(header), out
    assert re.search(r"^  lib \(without the patch\) +FAILURE ", out, re.M), \
        out
    assert f"job {job}: FAILURE (new failures)" in out, out
    # The mail names the rerun and marks the failures from it.
    msg = job_mail(smtp, job, 1)
    text, _html = parts(msg)
    assert "lib (without the patch)" in text, text
    assert "\n  FAIL  test_pack  [also failing without the patch]\n" in \
        text, text
    assert "\n  FAIL  test_ok  [new]\n" in text, text

    # A harmless patch: only the base's failure, no new one: exit 0.
    git(work, "checkout", "--", "test_ok.c")
    (work / "NOTES").write_text("a harmless change\n")
    git(work, "add", "NOTES")
    r = tf_try(farm, m, work, "-b", "lib", "--wait", "--poll-ms", "200",
               "--new-failures-only", "-m", "harmless", token=token,
               timeout=200)
    assert r.returncode == 0, explain(r)
    assert "(0 new, 1 also failing without the patch)" in r.stdout, r.stdout

    # A failed continuous build is never rerun.
    ci = m.run_build("lib", timeout=150)
    assert ci["result"] == "FAILURE"
    pending = m.get_json("/requests")["requests"]
    assert pending == [], pending
