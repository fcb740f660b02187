"""test_browser.py - the status pages in a real browser, against a real
master with real slaves.

One master (web_root = the repository's web/) and two slaves are started
once for this module and given a history: a 200 MB log, a log with ANSI
colours and HTML, a failing build, two dozen quick builds, try jobs (one
with a patch and a review URL, one waiting for a slave that never comes),
twelve builders (four with long names, so the waterfall's fit is
measured with 8 and with 12), a 3000-line log with compiler, sanitizer,
GoogleTest and pytest errors at known lines, and two commits by two
authors that a poller records and a change scheduler builds (a build
with a blamelist, change pages).
Each test then runs one group of tests/browser/run.mjs, which drives
Debian's Chromium headless through playwright-core (from web/node_modules,
installed by `npm ci --prefix web`) and prints a JSON report of its checks
and measurements; the test asserts every check passed and prints the
measurements (live latency, bytes fetched for the 200 MB log).

Screenshots of every page go to the test's tmp directory, and into
docs/images/ when TF_DOCS_IMAGES=1 (how the committed ones were made).

Needs: node, /usr/bin/chromium (scripts/deps installs both) and
web/node_modules with playwright-core, uPlot and axe-core (scripts/test
runs `npm ci --prefix web`). Without them
the tests fail with a message saying what is missing: they are part of
the suite, not optional.
"""

import base64
import contextlib
import json
import os
import pathlib
import queue
import shutil
import subprocess
import threading
import time

import pytest

import tfharness
from test_testresults import c_project
from tfharness import REPO, BUILD_DIR, scaled, wait_for

WEB = REPO / "web"
RUNNER = REPO / "tests" / "browser" / "run.mjs"
CHROMIUM = os.environ.get("TF_CHROMIUM", "/usr/bin/chromium")
BIG_MB = int(os.environ.get("TF_BROWSER_BIG_MB", "200"))
QUICK_BUILDS = 24

GIT_ENV = {"GIT_AUTHOR_NAME": "Ann Author", "GIT_AUTHOR_EMAIL":
           "ann@example.org", "GIT_COMMITTER_NAME": "Ann Author",
           "GIT_COMMITTER_EMAIL": "ann@example.org",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}

# What the "colours" step prints: colours of every kind, escapes that must
# vanish, HTML that must stay text, and a byte that is not UTF-8.
COLOURS = (
    r"printf '\033[31mRED-TEXT\033[0m plain \033[1;32mBOLD-GREEN\033[0m\n'; "
    r"printf '\033[38;5;208mORANGE-208\033[0m \033[38;2;10;20;30mTRUE-COLOUR\033[0m"
    r" \033[94mBRIGHT-BLUE\033[39m \033[41mRED-BACK\033[49m\n'; "
    r"printf '\033[2Kerased\033]0;a window title\007 line\n'; "
    r"""printf '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">\n'; """
    r"printf 'bad byte: \377 end\n'; "
    r"echo COLOURS-DONE"
)


# The "errors" builder's log: 3000 numbered lines with errors at these
# lines (and a line that only says nothing failed, which is no error).
ERROR_LINES = {
    40: 'src/parser.c:12:5: error: expected ";" before "return"',
    1500: "==4242==ERROR: AddressSanitizer: heap-use-after-free on address "
          "0x602000000010",
    2600: "[  FAILED  ] ParserTest.HandlesEmptyInput (3 ms)",
    2900: "FAILED tests/test_io.py::test_roundtrip - AssertionError",
}
NOT_ERROR_LINE = (2950, "100% tests passed, 0 tests failed out of 5")
ERRORS_LOG_LINES = 3000


def errors_command():
    cases = "".join(f"{n}) echo '{t}';; " for n, t in ERROR_LINES.items())
    cases += f"{NOT_ERROR_LINE[0]}) echo '{NOT_ERROR_LINE[1]}';; "
    return (f"i=1; while [ $i -le {ERRORS_LOG_LINES} ]; do case $i in "
            f"{cases}*) echo \"filler line $i of the log: the quick brown "
            "fox jumps over the lazy dog\";; esac; i=$((i+1)); done; exit 1")


def git(cwd, *args, env_extra=None):
    env = dict(os.environ)
    env.update(GIT_ENV)
    env.update(env_extra or {})
    r = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, f"git {args}: {r.stdout} {r.stderr}"
    return r.stdout.strip()


def make_repo(tmp):
    """A bare repository with one commit and a patch against it."""
    up = tmp / "upstream.git"
    work = tmp / "work"
    git(tmp, "init", "-q", "--bare", "-b", "main", str(up))
    git(tmp, "clone", "-q", str(up), str(work))
    git(work, "checkout", "-q", "-b", "main")
    (work / "hello.txt").write_text("hello\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "first")
    git(work, "push", "-q", "-u", "origin", "main")
    (work / "hello.txt").write_text("HELLO, LOUDER\n")
    patch = subprocess.run(["git", "diff", "--binary"], cwd=work,
                           capture_output=True, check=True).stdout
    git(work, "checkout", "-q", "--", "hello.txt")
    return up, work, patch


def commit_as(work, name, email, path, text, message):
    """Commits one file as author name <email>; returns the revision."""
    (work / path).parent.mkdir(parents=True, exist_ok=True)
    (work / path).write_text(text)
    who = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email}
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message, env_extra=who)
    return git(work, "rev-parse", "HEAD")


def config(tmp, up):
    sig = tmp / "signals"
    sig.mkdir(exist_ok=True)
    live_cmd = (
        f"while [ ! -e {sig}/go ]; do sleep 0.005; done; "
        "for i in 1 2 3 4 5; do "
        "echo \"MARK-$i $(date +%s%3N)\"; sleep 0.3; done; "
        f"while [ ! -e {sig}/end ]; do sleep 0.005; done; echo finished")
    big_cmd = (
        "yes 'the quick brown fox jumps over the lazy dog 0123456789 "
        f"abcdefghijklmnopqrstuvwxyz' | head -c {BIG_MB * 1024 * 1024}; "
        "echo; echo END-OF-BIG-LOG")
    three_steps = [
        {"name": "configure-with-all-options", "command": "echo configured"},
        {"name": "compile-everything-twice", "command": "echo compiled"},
        {"name": "run-the-whole-test-suite", "command": "echo 5 tests pass"}]
    return {
        "name": "Browser test farm",
        "web_root": str(WEB),
        "heartbeat_s": 2,
        "lost_after_s": 6,
        "poll_interval_s": 1,
        "commit_url": "https://git.example.org/app/commit/{revision}",
        "schedulers": [{"name": "on-main", "type": "change",
                        "builders": ["app"], "tree_stable_s": 1}],
        "slaves": [{"name": "s1", "tags": ["linux"]},
                   {"name": "s2", "tags": ["linux"]},
                   {"name": "mac1", "tags": ["macos"]}],
        "builders": [
            {"name": "quick", "tags": ["linux"], "steps": [
                {"name": "compile", "command": "echo compiling; sleep 0.1"},
                {"name": "test", "command":
                 "echo 3 tests pass; "
                 "echo \"@@@TF_STAT tests_run=$((TF_BUILD_NUMBER % 7 + 10))@@@\""}]},
            # Its own error pattern: the log viewer marks what it says
            # (a word of the first line), not the defaults.
            {"name": "colours", "slaves": ["s1"],
             "mail": {"error_patterns": ["plain"]}, "steps": [
                {"name": "ansi", "command": COLOURS}]},
            {"name": "flaky", "slaves": ["s1"], "steps": [
                {"name": "build", "command": "echo building"},
                {"name": "test", "command":
                 "echo 'test_io ... \033[31mFAILED\033[0m'; exit 1"}]},
            {"name": "live", "slaves": ["s2"], "steps": [
                {"name": "prepare", "command": "echo preparing"},
                {"name": "stream", "command": live_cmd}]},
            {"name": "slow", "tags": ["linux"], "steps": [
                {"name": "wait", "command": "echo waiting; sleep 120"}]},
            {"name": "big", "slaves": ["s1"], "steps": [
                {"name": "spew", "command": big_cmd, "timeout": 600}]},
            {"name": "app", "tags": ["linux"], "repository": str(up),
             "branch": "main", "steps": [
                 {"name": "check", "command": "cat hello.txt"}]},
            {"name": "mac-only", "slaves": ["mac1"], "steps": [
                {"name": "test", "command": "true"}]},
            {"name": "errors", "slaves": ["s1"], "steps": [
                {"name": "prepare", "command": "echo preparing"},
                {"name": "compile", "command": errors_command()}]},
            {"name": "linux-x86_64-sanitizers", "tags": ["linux"],
             "steps": three_steps},
            {"name": "documentation-and-website", "tags": ["linux"],
             "steps": three_steps},
            {"name": "lint-and-format-checks", "tags": ["linux"],
             "steps": three_steps},
        ],
    }


def add_user(farm, m, email, name):
    r = farm.run([BUILD_DIR / "master" / "tf-master", "user", "add", email,
                  "--name", name, "-d", m.dir])
    assert r.returncode == 0, f"user add: {r.stdout} {r.stderr}"
    return r.stdout.strip().splitlines()[-1].strip()


def submit_job(m, token, builders, patch=b"", **kw):
    body = {"builders": builders,
            "patch": base64.b64encode(patch).decode()}
    body.update(kw)
    r = m.request("POST", "/api/v1/jobs", body=body, token=token)
    assert r.status == 201, f"job submission: {r!r}"
    return r.json()["job_id"]


def missing_tools():
    out = []
    if not shutil.which("node"):
        out.append("node (scripts/deps installs nodejs)")
    else:
        v = subprocess.run(["node", "--version"], capture_output=True,
                           text=True).stdout.strip()
        major = int(v.lstrip("v").split(".")[0] or 0) if v else 0
        if major < 20:
            out.append(f"Node.js 20 or newer for playwright-core (found "
                       f"{v or 'none'}; Debian 12's nodejs is 18: install "
                       f"Node.js 20, e.g. from NodeSource)")
    if not os.access(CHROMIUM, os.X_OK):
        out.append(f"{CHROMIUM} (scripts/deps installs chromium)")
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        out.append("web/node_modules (run: npm ci --prefix web)")
    if not (WEB / "node_modules" / "axe-core" / "axe.min.js").is_file():
        out.append("web/node_modules/axe-core (run: npm ci --prefix web)")
    if not (WEB / "vendor" / "uPlot.esm.js").is_file():
        out.append("web/vendor/uPlot.esm.js (run: npm ci --prefix web)")
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    missing = missing_tools()
    if missing:
        pytest.fail("the browser tests need: " + "; ".join(missing))
    tmp = tmp_path_factory.mktemp("browser")
    farm = tfharness.Farm(tmp)
    try:
        up, work, patch = make_repo(tmp)
        m = farm.master(config(tmp, up))
        farm.slave(m, "s1")
        farm.slave(m, "s2")
        user = add_user(farm, m, "ann@example.org", "Ann Author")

        big = m.run_build("big", timeout=300, reason="a 200 MB log")
        colours_req = m.force(
            "colours", reason="<b>bold</b><img src=x onerror=window.__xss=3>")
        flaky_req = m.force("flaky", reason="nightly")
        quick = [m.force("quick", reason=f"quick build {i}")
                 for i in range(QUICK_BUILDS)]
        colours = m.wait_request_done(colours_req, 60)
        flaky = m.wait_request_done(flaky_req, 60)
        for q in quick:
            m.wait_request_done(q, 120)
        errors = m.run_build("errors", timeout=60, reason="errors at known "
                             "lines")
        for name in ("linux-x86_64-sanitizers", "documentation-and-website",
                     "lint-and-format-checks"):
            m.run_build(name, timeout=60, reason=f"first {name} build")
        # Two commits by two authors, pushed at once: the poller records
        # them (its first poll knew only the first commit) and the change
        # scheduler builds them in one build of "app", its blamelist.
        wait_for(lambda: any(p["state"] == "ok" for p in
                             m.get_json("/pollers")["pollers"]), 30,
                 "the first poll", farm)
        bob = commit_as(work, "Bob Coder", "bob@example.org",
                        "src/parser.c", "int parse(void) { return 0; }\n",
                        "Fix the parser on empty input\n\nIt returned -1.")
        carol = commit_as(work, "Carol Writer", "carol@example.org",
                          "docs/api.md", "# API\n", "Document the API")
        git(work, "push", "-q", "origin", "main")

        def blamed():
            for b in m.get_json("/builders/app/builds")["builds"]:
                full = m.build(b["id"])
                if (full["state"] == "finished" and
                        len(full.get("changes") or []) == 2):
                    return full
            return None
        blame_build = wait_for(blamed, 60, "a build of both commits", farm,
                               interval=0.3)
        job_patch = submit_job(
            m, user, ["app", "quick"], patch,
            description="Make hello louder", review_url=
            "https://review.example.org/c/42", patchset="3")
        job_waiting = submit_job(m, user, ["mac-only"],
                                 description="Needs a Mac")

        def job_done():
            j = m.get_json(f"/jobs/{job_patch}")
            return j["state"] == "finished" and j

        job = wait_for(job_done, 120, "the try job with a patch to finish",
                       farm)
        app_build = [b for b in job["builders"] if b["name"] == "app"][0]
        # Then a commit that breaks "app" (its step reads hello.txt): the
        # change scheduler builds it, "app" turns red with Dave as the
        # suspect (the only author since the last green build).
        git(work, "rm", "-q", "hello.txt")
        git(work, "commit", "-q", "-m", "Remove the greeting",
            env_extra={"GIT_AUTHOR_NAME": "Dave Breaker",
                       "GIT_AUTHOR_EMAIL": "dave@example.org"})
        git(work, "push", "-q", "origin", "main")
        app_red = wait_for(
            lambda: m.get_json("/builders/app").get("failing_since"), 60,
            "app to turn red after Dave's commit", farm, interval=0.3)
        scenario = {
            "base": m.url,
            "token": m.token(),
            "user_token": user,
            "signals": str(tmp / "signals"),
            "shots": str(tmp / "shots"),
            "docs_images": str(REPO / "docs" / "images")
            if os.environ.get("TF_DOCS_IMAGES") == "1" else None,
            "timeout_scale": tfharness.TIMEOUT_SCALE,
            "big": {"build": big["id"], "size": big["steps"][0]["log"]
                    ["bytes"]},
            "colours": {"build": colours["id"]},
            "flaky": {"build": flaky["id"]},
            "quick_builds": QUICK_BUILDS,
            "job_patch": job_patch,
            "job_waiting": job_waiting,
            "app_build": app_build["build"]["id"],
            "errors": {"build": errors["id"], "step": 1,
                       "lines": ERRORS_LOG_LINES,
                       "error_lines": sorted(ERROR_LINES),
                       "not_error_line": NOT_ERROR_LINE[0]},
            "blame": {"build": blame_build["id"],
                      "changes": [c["id"] for c in blame_build["changes"]],
                      "revisions": [bob, carol],
                      "authors": ["Bob Coder", "Carol Writer"]},
            "broken": {"builder": "app", "since": app_red["id"],
                       "suspect": "Dave Breaker", "step": "check"},
            "builders8": ["quick", "colours", "flaky", "live", "slow", "big",
                          "app", "mac-only"],
        }
        (tmp / "scenario.json").write_text(json.dumps(scenario, indent=1))
        yield {"farm": farm, "master": m, "dir": tmp,
               "scenario": tmp / "scenario.json", "data": scenario}
    finally:
        farm.cleanup()


@contextlib.contextmanager
def own_master(tmp_path_factory, name):
    """The frame of a fixture whose tests need a master of their own:
    fails when the browser tools are missing, yields (tmp, farm) and
    cleans the farm up after."""
    missing = missing_tools()
    if missing:
        pytest.fail("the browser tests need: " + "; ".join(missing))
    tmp = tmp_path_factory.mktemp(name)
    farm = tfharness.Farm(tmp)
    try:
        yield tmp, farm
    finally:
        farm.cleanup()


def site_of(farm, m, tmp, scenario):
    """Writes scenario.json for run.mjs; the fixture's value."""
    (tmp / "scenario.json").write_text(json.dumps(scenario, indent=1))
    return {"farm": farm, "master": m, "dir": tmp,
            "scenario": tmp / "scenario.json", "data": scenario}


@pytest.fixture(scope="module")
def tests_site(tmp_path_factory):
    """A master of its own (the main site's waterfall counts exactly 12
    builders) with one builder running a real C project's ctest: one
    failing assertion (test_pack.c:89) and one flaky test."""
    with own_master(tmp_path_factory, "browser-tests") as (tmp, farm):
        proj = tmp / "minipack"
        c_project(proj)
        m = farm.master({
            "name": "Browser test farm", "web_root": str(WEB),
            "heartbeat_s": 2, "lost_after_s": 6,
            "slaves": [{"name": "s1"}],
            "builders": [{"name": "ctests", "slaves": ["s1"], "steps": [
                {"name": "configure",
                 "command": ["cmake", "-S", str(proj), "-B", "build"]},
                {"name": "compile", "command": ["cmake", "--build", "build"]},
                {"name": "ctest",
                 "command": "cd build && rm -f flaky.state && ctest "
                            "--output-on-failure --repeat until-pass:2",
                 "test_results": {"format": "ctest"}}]}]})
        farm.slave(m, "s1")
        ctests = m.run_build("ctests", timeout=120)
        yield site_of(farm, m, tmp, {
            "base": m.url, "token": m.token(),
            "shots": str(tmp / "shots"),
            "docs_images": str(REPO / "docs" / "images")
            if os.environ.get("TF_DOCS_IMAGES") == "1" else None,
            "timeout_scale": tfharness.TIMEOUT_SCALE,
            "signals": str(tmp),
            "ctests": {"build": ctests["id"], "step": 2},
        })


@pytest.fixture(scope="module")
def stale_site(tmp_path_factory):
    """A master of its own for the stale-answer test (stale.mjs): builder
    "gate" on s1, whose step waits for SIGNALS/open-NUMBER, and builder
    "noise", whose only slave never connects (forcing it queues a request:
    an event that makes every kept answer stale)."""
    with own_master(tmp_path_factory, "browser-stale") as (tmp, farm):
        sig = tmp / "signals"
        sig.mkdir()
        m = farm.master({
            "name": "Browser test farm", "web_root": str(WEB),
            "heartbeat_s": 2, "lost_after_s": 6,
            "slaves": [{"name": "s1"}, {"name": "ghost"}],
            "builders": [
                {"name": "gate", "slaves": ["s1"], "steps": [
                    {"name": "wait", "command":
                     f"while [ ! -e {sig}/open-$TF_BUILD_NUMBER ]; do "
                     "sleep 0.005; done; echo opened"}]},
                {"name": "noise", "slaves": ["ghost"], "steps": [
                    {"name": "never", "command": "true"}]}]})
        farm.slave(m, "s1")
        yield site_of(farm, m, tmp, {
            "base": m.url, "token": m.token(),
            "shots": str(tmp / "shots"), "docs_images": None,
            "timeout_scale": tfharness.TIMEOUT_SCALE,
            "signals": str(sig),
        })


def run_with_actions(argv, env, timeout, actions, signals):
    """Runs argv like subprocess.run, and meanwhile does what it asks: a
    line "ACTION NAME" on its output runs actions[NAME]() here (stopping
    the master, say), then writes signals/ack-NAME, which the browser
    test waits for."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                         stdin=subprocess.DEVNULL)
    lines = queue.Queue()
    reader = threading.Thread(
        target=lambda: ([lines.put(ln) for ln in p.stdout], lines.put(None)),
        daemon=True)
    reader.start()
    out = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            ln = lines.get(timeout=max(0.01, left))
        except queue.Empty:
            p.kill()
            p.wait()
            raise subprocess.TimeoutExpired(argv, timeout,
                                            output="".join(out))
        if ln is None:
            break
        out.append(ln)
        if ln.startswith("ACTION "):
            name = ln.split()[1]
            actions[name]()
            (pathlib.Path(signals) / f"ack-{name}").write_text("done\n")
    p.wait()
    err = p.stderr.read()
    return subprocess.CompletedProcess(argv, p.returncode, "".join(out), err)


def run_group(site, group, capsys, timeout=150, actions=None):
    """Runs one group of run.mjs; returns its report, asserting it
    passed. actions: what the group may ask this side to do (see
    run_with_actions)."""
    farm = site["farm"]
    env = dict(os.environ)
    env[farm.marker_key] = farm.marker_value
    t0 = time.monotonic()
    argv = ["node", str(RUNNER), "--scenario", str(site["scenario"]),
            "--only", group]
    try:
        if actions:
            p = run_with_actions(argv, env, scaled(timeout), actions,
                                 site["data"]["signals"])
        else:
            p = subprocess.run(
                argv, capture_output=True, text=True, env=env,
                timeout=scaled(timeout), cwd=REPO, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"")
        out = out.decode() if isinstance(out, bytes) else out
        pytest.fail(f"run.mjs --only {group} did not finish within "
                    f"{scaled(timeout):g} s:\n{out[-6000:]}\n"
                    + farm.dump_logs(40))
    elapsed = time.monotonic() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, (f"run.mjs --only {group} printed no RESULT line "
                   f"(exit {p.returncode}):\n{p.stdout[-6000:]}\n"
                   f"{p.stderr[-4000:]}")
    report = json.loads(lines[-1][len("RESULT "):])
    with capsys.disabled():
        for k, v in report["measures"].items():
            print(f"\n    browser {group}: {k} = {v}", end="")
        for n in report["notes"]:
            print(f"\n    browser {group}: note: {n}", end="")
        print(f"\n    browser {group}: {len(report['checks'])} checks in "
              f"{elapsed:.1f} s", end="")
    failed = [c for c in report["checks"] if not c["ok"]]
    assert report["checks"], f"group {group} checked nothing:\n{p.stdout}"
    assert not failed and p.returncode == 0, (
        f"{len(failed)} of {len(report['checks'])} browser checks failed "
        f"in group {group}:\n"
        + "\n".join(f"- {c['name']}: {c['detail']}" for c in failed)
        + f"\n--- run.mjs output ---\n{p.stdout[-8000:]}\n{p.stderr[-4000:]}")
    return report


def test_js_units():
    """The pure modules (ANSI parser, formatting) under node's test runner."""
    p = subprocess.run(["node", "--test", str(REPO / "tests" / "browser" /
                                              "unit.test.mjs")],
                       capture_output=True, text=True, timeout=scaled(60),
                       cwd=REPO, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"node --test:\n{p.stdout}\n{p.stderr}"


def test_every_page_loads_and_shows_the_data(site, capsys):
    run_group(site, "pages", capsys, timeout=180)


def test_live_output_and_waterfall_within_200ms(site, capsys):
    report = run_group(site, "live", capsys)
    assert report["measures"]["log_latency_max_ms"] <= 200 * max(
        1, tfharness.TIMEOUT_SCALE)


def test_ansi_colours_and_html_shown_as_text(site, capsys):
    run_group(site, "ansi", capsys)


def test_builder_page_draws_plots(site, capsys):
    run_group(site, "plot", capsys)


def test_waterfall_pages_back_through_history(site, capsys):
    run_group(site, "paging", capsys)


def test_actions_need_a_token(site, capsys):
    run_group(site, "actions", capsys, timeout=180)


def test_200mb_log_loads_only_its_tail(site, capsys):
    report = run_group(site, "biglog", capsys)
    assert report["measures"]["initial_bytes_fetched"] <= 128 * 1024


def test_build_page_log_lines_errors_and_blamelist(site, capsys):
    run_group(site, "buildpage", capsys)


def test_build_page_failing_tests_first(tests_site, capsys):
    run_group(tests_site, "tests", capsys)


def test_stale_hot_answer_is_fetched_again(stale_site, capsys):
    """A page whose fetch got a stale hot answer (X-TF-Stale: 1) after the
    last event that changed it shows the fresh state without a reload:
    web/lib/api.js asks again 150 ms later (stale.mjs says how the test
    makes that happen)."""
    run_group(stale_site, "stale", capsys, timeout=240)


def test_waterfall_fits_8_and_12_builders(site, capsys):
    report = run_group(site, "waterfallfit", capsys)
    for size in ("1440", "390"):
        assert report["measures"][f"page_overflow_12_builders_{size}_px"] == 0


def test_console_links_and_change_page(site, capsys):
    run_group(site, "changes", capsys)


def test_builder_plots_axes_and_point_links(site, capsys):
    run_group(site, "plotaxes", capsys)


def test_every_page_fits_a_phone_and_passes_axe(site, capsys):
    run_group(site, "layout", capsys, timeout=300)


def test_master_down_banner_clears_itself(site, capsys):
    """Last in this file: it stops the master and starts it again."""
    m = site["master"]
    run_group(site, "down", capsys, timeout=180, actions={
        "stop-master": lambda: m.stop(),
        "start-master": lambda: m.start(timeout=scaled(30)),
    })
