"""Leak check: tf-master and tf-slave under valgrind run one build to
SUCCESS and shut down cleanly on SIGTERM. valgrind's exit status 99 means
it found memory errors or definite/indirect leaks; its report is shown.

scripts/test runs this file as its own stage ("valgrind"), and skips it
in the --sanitize pass (ASan/LSan cover the same ground there). It needs
a build without sanitizers: valgrind cannot run ASan binaries."""

import json
import shutil

import pytest

from tfharness import REPO, BUILD_DIR, steps_summary

pytestmark = [pytest.mark.valgrind, pytest.mark.timeout(300)]

SUPP = REPO / "tests" / "valgrind.supp"


def valgrind(log):
    vg = shutil.which("valgrind")
    assert vg, "valgrind is not installed (scripts/deps installs it)"
    return [vg, "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=99", f"--suppressions={SUPP}",
            "--num-callers=30", f"--log-file={log}"]


def report(path):
    """The interesting part of a valgrind log: every error record and the
    leak summary."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no valgrind log at {path})"
    lines = text.splitlines()
    return "\n".join(lines[-250:])


def test_one_build_under_valgrind_leaks_nothing(farm):
    opts = BUILD_DIR / "meson-info" / "intro-buildoptions.json"
    if opts.exists():
        san = next((o["value"] for o in json.loads(opts.read_text())
                    if o["name"] == "b_sanitize"), "none")
        if san != "none":
            pytest.skip(f"{BUILD_DIR} is built with -Db_sanitize={san}; "
                        "valgrind cannot run sanitized binaries")
    # %p: forked step processes (before their exec) get their own file.
    mlog = farm.tmp / "valgrind-master.%p.log"
    slog = farm.tmp / "valgrind-slave.%p.log"
    m = farm.master({"name": "vg", "heartbeat_s": 10, "lost_after_s": 120,
                     "slaves": [{"name": "s1"}],
                     "builders": [{"name": "b", "steps": [
                         {"name": "hello", "command": "echo hello"},
                         {"name": "fails", "command": "exit 1",
                          "flunkOnFailure": False},
                         {"name": "out", "command":
                             "seq 1 20000; echo err >&2"}]}]},
                    wrapper=valgrind(mlog), log_level="info", start=False)
    m.start(timeout=90)
    s = farm.slave(m, "s1", wrapper=valgrind(slog), log_level="info",
                   start=False)
    s.start(timeout=90)
    b = m.run_build("b", timeout=180)
    assert b["result"] == "SUCCESS", steps_summary(b)
    assert m.step_log(b["id"], 0) == b"hello\n"
    # Exercise the API's read paths too, so their frees are checked.
    m.get_json("/builders")
    m.get_json(f"/builds/{b['id']}")
    m.get_json("/slaves/s1")
    r = m.api_get(f"/builds/{b['id']}/steps/2/log",
                  headers={"Range": "bytes=-100"})
    assert r.status == 206
    assert m.api_get("/nope").status == 404

    srv = s.stop(expect=None, timeout=120)
    mrv = m.stop(expect=None, timeout=120)
    slog = farm.tmp / f"valgrind-slave.{s.pid}.log"
    mlog = farm.tmp / f"valgrind-master.{m.proc.pid}.log"
    problems = []
    if srv != 0:
        problems.append(f"tf-slave exited {srv} under valgrind"
                        + (" (99: valgrind found errors)" if srv == 99
                           else "") + "\n" + report(slog))
    if mrv != 0:
        problems.append(f"tf-master exited {mrv} under valgrind"
                        + (" (99: valgrind found errors)" if mrv == 99
                           else "") + "\n" + report(mlog))
    assert not problems, "\n\n".join(problems)
    for log in (mlog, slog):
        text = log.read_text()
        assert "ERROR SUMMARY: 0 errors" in text, report(log)


def test_a_shared_master_under_valgrind_leaks_nothing(farm, pg_url):
    """Two masters on one PostgreSQL database (store.shared), the first
    under valgrind: a build of its own slave, a request forced on it that
    the other master's slave runs (its new-request notifications, relayed
    live events, claims lost and won, the duty lease), then a clean
    SIGTERM: the listener thread and its queues are gone without a
    leak."""
    opts = BUILD_DIR / "meson-info" / "intro-buildoptions.json"
    if opts.exists():
        san = next((o["value"] for o in json.loads(opts.read_text())
                    if o["name"] == "b_sanitize"), "none")
        if san != "none":
            pytest.skip(f"{BUILD_DIR} is built with -Db_sanitize={san}")
    mlog = farm.tmp / "valgrind-shared.%p.log"
    cfg = {"name": "vg", "heartbeat_s": 10, "lost_after_s": 120,
           "slaves": [{"name": "s1"}, {"name": "s2"}],
           "builders": [{"name": "b", "slaves": ["s1"], "steps": [
                            {"name": "hello", "command": "echo hello"}]},
                        {"name": "c", "slaves": ["s2"], "steps": [
                            {"name": "hi", "command": "echo hi"}]}],
           "store": {"postgres": pg_url, "shared": True}}
    m = farm.master(cfg, wrapper=valgrind(mlog), log_level="info",
                    start=False)
    m.start(timeout=90)
    other = farm.master(cfg, name="other", log_level="info")
    farm.slave(m, "s1")
    farm.slave(other, "s2")
    assert m.run_build("b", timeout=180)["result"] == "SUCCESS"
    assert m.run_build("c", timeout=180)["result"] == "SUCCESS"
    m.get_json("/builders")
    mrv = m.stop(expect=None, timeout=120)
    mlog = farm.tmp / f"valgrind-shared.{m.proc.pid}.log"
    assert mrv == 0, f"tf-master exited {mrv} under valgrind\n" + \
        report(mlog)
    assert "ERROR SUMMARY: 0 errors" in mlog.read_text(), report(mlog)
