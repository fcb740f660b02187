"""tf-try end to end: a committer's clone of a real git repository, a real
master with real slaves that fetch the repository and apply the patch, and
tf-try as a committer runs it (its exit status, what it prints, and what
the API says happened).

Every test makes, in its tmp directory, a bare "upstream" repository and a
clone of it ("work") where the committer changes things. The base revision
of upstream fails its check (check.sh reads the file `verdict`), so a patch
that writes "pass" there fixes it.
"""

import base64
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time

import pytest

from tfharness import (BUILD_DIR, REPO, deterministic_bytes, http_request,
                       live_pids_in_group, pgid_of, pid_alive, scaled,
                       steps_summary, wait_for)

TF_TRY = BUILD_DIR / "try" / "tf-try"

pytestmark = pytest.mark.skipif(not os.access(TF_TRY, os.X_OK),
                                reason=f"{TF_TRY} is not built")

CHECK_SH = """\
echo "checking the verdict"
i=1
while [ $i -le 40 ]; do echo "noise line $i"; i=$((i + 1)); done
v=$(cat verdict)
if [ "$v" = pass ]; then echo "verdict: pass"; exit 0; fi
echo "verdict: $v"
echo "the check FAILED"
exit 1
"""

GIT_ENV = {"GIT_AUTHOR_NAME": "Ann Example",
           "GIT_AUTHOR_EMAIL": "ann@example.org",
           "GIT_COMMITTER_NAME": "Ann Example",
           "GIT_COMMITTER_EMAIL": "ann@example.org",
           "GIT_CONFIG_NOSYSTEM": "1"}


# --- helpers (the harness knows nothing about git or tf-try) ---

def git(cwd, *args, check=True):
    env = dict(os.environ)
    env.update(GIT_ENV)
    env["HOME"] = str(cwd)  # no ~/.gitconfig of whoever runs the tests
    r = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True,
                       timeout=scaled(60))
    if check and r.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: "
                             f"{r.stderr.decode(errors='replace')}")
    return r.stdout.decode().strip()


def make_repos(tmp, set_upstream=True):
    """A bare upstream repository with one commit on main, and a clone of
    it to work in. Returns (upstream path, work path)."""
    up = tmp / "upstream.git"
    work = tmp / "work"
    git(tmp, "init", "-q", "--bare", "-b", "main", str(up))
    git(tmp, "clone", "-q", str(up), str(work))
    git(work, "checkout", "-q", "-b", "main")
    (work / "check.sh").write_text(CHECK_SH)
    (work / "verdict").write_text("fail\n")
    (work / "old.txt").write_text("this file gets renamed\n" * 20)
    (work / ".gitignore").write_text("*.log\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base: the check fails")
    git(work, "push", "-q", *(["-u"] if set_upstream else []), "origin",
        "main")
    return up, work


def try_config(up, slaves=("s1", "s2"), extra_builders=(), **top):
    """A master whose builders b1 and b2 check out `up` and run check.sh."""
    def builder(name, steps, **kw):
        b = {"name": name, "repository": str(up), "branch": "main",
             "steps": steps}
        b.update(kw)
        return b
    cfg = {"name": "it", "heartbeat_s": 2, "lost_after_s": 6,
           "slaves": [{"name": s} for s in slaves],
           "builders": [builder("b1", [{"name": "check",
                                        "command": "sh check.sh"}]),
                        builder("b2", [{"name": "check",
                                        "command": "sh check.sh"}])] +
           [builder(**b) for b in extra_builders]}
    cfg.update(top)
    return cfg


def start_farm(farm, up, slaves=("s1", "s2"), **kw):
    m = farm.master(try_config(up, slaves=slaves, **kw))
    for s in slaves:
        farm.slave(m, s)
    return m


def add_user(farm, m, email, name):
    """`tf-master user add`; returns the token it prints (once)."""
    r = farm.run([BUILD_DIR / "master" / "tf-master", "user", "add", email,
                  "--name", name, "-d", m.dir])
    assert r.returncode == 0, f"user add: {r.stdout} {r.stderr}"
    token = r.stdout.strip().splitlines()[-1].strip()
    assert token and " " not in token, r.stdout
    return token


def tf_try(farm, m, cwd, *args, token=None, url=True, env=None, timeout=120):
    """Runs tf-try in cwd with a private HOME (no user config unless the
    test writes one) and the token in $TF_TRY_TOKEN when given."""
    e = dict(os.environ)
    e.update(GIT_ENV)
    home = farm.tmp / "home"
    home.mkdir(exist_ok=True)
    e["HOME"] = str(home)
    e.pop("XDG_CONFIG_HOME", None)
    e.pop("TF_TRY_TOKEN", None)
    if token:
        e["TF_TRY_TOKEN"] = token
    e.update(env or {})
    argv = [TF_TRY] + (["--url", m.url] if url and m else []) + list(args)
    return farm.run(argv, cwd=cwd, env=e, timeout=timeout)


def job_id_of(r):
    m = re.search(r"^job (\d+): http", r.stdout, re.M)
    assert m, f"no job line in tf-try's output:\n{r.stdout}\n{r.stderr}"
    return int(m.group(1))


def wait_job_done(m, job_id, timeout=90):
    def done():
        j = m.get_json(f"/jobs/{job_id}")
        return j["state"] in ("finished", "cancelled") and all(
            b["build"] is None or b["build"]["state"] == "finished"
            for b in j["builders"]) and j
    return wait_for(done, timeout, f"job {job_id} to finish", m.farm,
                    interval=0.2)


def assert_nothing_queued(m):
    assert m.get_json("/requests")["requests"] == [], \
        m.get_json("/requests")
    assert m.get_json("/jobs")["jobs"] == [], m.get_json("/jobs")


def explain(r):
    return f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n" \
           f"{r.stderr}"


# --- the tests ---

@pytest.mark.timeout(120)
def test_fixing_patch_passes_on_both_builders(farm):
    up, work = make_repos(farm.tmp)
    m = start_farm(farm, up)
    token = add_user(farm, m, "ann@example.org", "Ann Example")
    (work / "verdict").write_text("pass\n")

    r = tf_try(farm, m, work, "-b", "b1,b2", "--wait", "--poll-ms", "200",
               "-v", token=token)
    assert r.returncode == 0, explain(r)
    job_id = job_id_of(r)
    out = r.stdout
    assert f"job {job_id}: {m.url}/api/v1/jobs/{job_id}\n" in out, out
    for b in ("b1", "b2"):
        assert re.search(rf"^  {b}: request \d+, position \d+ in queue$", out,
                         re.M), out
        assert re.search(rf"^{b}: build \d+ started on slave s[12]$", out,
                         re.M), out
        assert re.search(rf"^{b}: step source: SUCCESS", out, re.M), out
        assert re.search(rf"^{b}: step check: SUCCESS \(\d+\.\d s\)$", out,
                         re.M), out
        assert re.search(rf"^{b}: build \d+: SUCCESS", out, re.M), out
        assert re.search(rf"^  {b} +SUCCESS +\S.* +s[12] +{m.url}/api/v1/"
                         r"builds/\d+$", out, re.M), out
    assert f"job {job_id}: SUCCESS (every build passed)\n" in out, out
    # -v traces requests on stderr, never the token.
    assert f"> POST {m.url}/api/v1/jobs with your token" in r.stderr

    job = m.get_json(f"/jobs/{job_id}")
    assert job["state"] == "finished" and job["result"] == "SUCCESS", job
    assert job["email"] == "ann@example.org"
    assert job["description"] == "base: the check fails (+ uncommitted " \
                                 "changes)", job
    assert job["base_revision"] == git(work, "rev-parse", "origin/main")
    for b in job["builders"]:
        build = m.build(b["build"]["id"])
        assert steps_summary(build) == [("source", "SUCCESS"),
                                        ("check", "SUCCESS")], build
        assert b"verdict: pass" in m.step_log(build["id"], 1)
    # The user's own index and work tree are as they were.
    assert git(work, "status", "--porcelain") == "M verdict"

    # The token is in no output and not in the master's log.
    assert token not in r.stdout + r.stderr
    assert token not in m.log_text()


@pytest.mark.timeout(120)
def test_breaking_patch_fails_and_shows_the_tail(farm):
    up, work = make_repos(farm.tmp)
    m = start_farm(farm, up)
    token = add_user(farm, m, "bob@example.org", "Bob")
    (work / "verdict").write_text("broken-by-the-patch\n")

    r = tf_try(farm, m, work, "-b", "b1", "-b", "b2", "--wait", "--poll-ms",
               "200", "--tail", "3", "-m", "break it", token=token)
    assert r.returncode == 1, explain(r)
    job_id = job_id_of(r)
    for b in ("b1", "b2"):
        assert re.search(rf"^{b}: step check: FAILURE \(\d+\.\d s; exit 1\)$",
                         r.stdout, re.M), r.stdout
        tail = re.search(
            rf"^{b}: step check ended FAILURE; the last 3 lines of its log "
            rf"\({re.escape(m.url)}/api/v1/builds/(\d+)/steps/1/log\):\n"
            r"    noise line 40\n"
            r"    verdict: broken-by-the-patch\n"
            r"    the check FAILED\n", r.stdout, re.M)
        assert tail, r.stdout
        assert re.search(rf"^  {b} +FAILURE ", r.stdout, re.M), r.stdout
    assert f"job {job_id}: FAILURE (not every build passed)" in r.stdout
    job = m.get_json(f"/jobs/{job_id}")
    assert job["result"] == "FAILURE" and job["description"] == "break it"


@pytest.mark.timeout(120)
def test_patch_that_does_not_apply_is_an_exception(farm):
    up, work = make_repos(farm.tmp)
    m = start_farm(farm, up)
    token = add_user(farm, m, "ann@example.org", "Ann")
    bad = farm.tmp / "other.patch"
    bad.write_text("diff --git a/check.sh b/check.sh\n"
                   "--- a/check.sh\n+++ b/check.sh\n"
                   "@@ -1,2 +1,2 @@\n"
                   "-this line is not in check.sh\n"
                   "-nor is this one\n"
                   "+replacement\n+lines\n")

    r = tf_try(farm, m, work, "-b", "b1", "--diff", str(bad), "--wait",
               "--poll-ms", "200", token=token)
    assert r.returncode == 1, explain(r)
    job_id = job_id_of(r)
    assert re.search(r"^b1: step source: EXCEPTION \(.*patch does not "
                     r"apply.*\)$", r.stdout, re.M), r.stdout
    assert re.search(r"^b1: step source ended EXCEPTION; the last \d+ lines? "
                     r"of its log", r.stdout, re.M), r.stdout
    job = m.get_json(f"/jobs/{job_id}")
    entry = job["builders"][0]
    assert entry["result"] == "EXCEPTION", job
    build = m.build(entry["build"]["id"])
    assert build["steps"][0]["result"] == "EXCEPTION", steps_summary(build)
    assert "patch does not apply" in build["steps"][0]["text"]
    log = m.step_log(build["id"], 0)
    # git's own message is in the source step's log.
    assert b"check.sh" in log and b"patch does not apply" in log, log
    assert b"error:" in log, log
    assert [s["result"] for s in build["steps"][1:]] in (["SKIPPED"], []), \
        steps_summary(build)


@pytest.mark.timeout(120)
def test_binary_file_rename_and_staged_files_apply_byte_exact(farm):
    up, work = make_repos(farm.tmp)
    sums = {"name": "sums", "steps": [{
        "name": "sums",
        "command": "sha256sum blob.bin extra.bin renamed.txt; "
                   "test ! -e old.txt && echo old-gone; "
                   "test ! -e ignored.log && echo ignored-not-sent"}]}
    m = start_farm(farm, up, extra_builders=[sums])
    token = add_user(farm, m, "ann@example.org", "Ann")
    # Random bytes with NULs, staged but never committed; an untracked
    # binary; a rename; an ignored file that must not travel.
    blob = b"\0\0\0" + deterministic_bytes(20000, seed=7) + b"\0\xff\0"
    extra = deterministic_bytes(3000, seed=8).replace(b"\n", b"\0")
    (work / "blob.bin").write_bytes(blob)
    git(work, "add", "blob.bin")
    (work / "extra.bin").write_bytes(extra)
    git(work, "mv", "old.txt", "renamed.txt")
    (work / "ignored.log").write_text("not for the master\n")

    r = tf_try(farm, m, work, "-b", "sums", "--include-untracked", "--wait",
               "--poll-ms", "200", token=token)
    assert r.returncode == 0, explain(r)
    job = m.get_json(f"/jobs/{job_id_of(r)}")
    build = m.build(job["builders"][0]["build"]["id"])
    log = m.step_log(build["id"], 1).decode()
    want_renamed = ("this file gets renamed\n" * 20).encode()
    assert f"{hashlib.sha256(blob).hexdigest()}  blob.bin" in log, log
    assert f"{hashlib.sha256(extra).hexdigest()}  extra.bin" in log, log
    assert f"{hashlib.sha256(want_renamed).hexdigest()}  renamed.txt" in log
    assert "old-gone" in log and "ignored-not-sent" in log, log
    # tf-try did not touch the user's index.
    assert git(work, "status", "--porcelain").splitlines() == [
        "A  blob.bin", "R  old.txt -> renamed.txt", "?? extra.bin"]


@pytest.mark.timeout(120)
def test_refused_submissions_exit_2_and_queue_nothing(farm):
    up, work = make_repos(farm.tmp)
    m = start_farm(farm, up, slaves=("s1",), **{"try": {"max_patch_bytes":
                                                          100000}})
    token = add_user(farm, m, "ann@example.org", "Ann")
    (work / "verdict").write_text("pass\n")

    # An unknown builder: the master names it and lists the known ones.
    r = tf_try(farm, m, work, "-b", "b1,nosuch", token=token)
    assert r.returncode == 2, explain(r)
    assert 'tf-try: the master refused the job (HTTP 400): unknown builder ' \
           '"nosuch"' in r.stderr, r.stderr
    assert "b1" in r.stderr and "b2" in r.stderr, r.stderr
    assert_nothing_queued(m)

    # A token the master does not know.
    r = tf_try(farm, m, work, "-b", "b1", token="tft_" + "0" * 40)
    assert r.returncode == 2, explain(r)
    assert "tf-try: the master refused the job (HTTP 401)" in r.stderr
    assert "0" * 40 not in r.stdout + r.stderr
    assert_nothing_queued(m)

    # Malformed metadata: tf-try and the master share one address rule
    # (common/email.h), so tf-try refuses what the master would, before
    # building or sending anything (the master's own refusal of the same
    # address is checked in test_submission_errors_raw_http).
    r = tf_try(farm, m, work, "-b", "b1", "--email", "semi;colon@example.org",
               "-v", token=token)
    assert r.returncode == 2, explain(r)
    assert 'tf-try: "semi;colon@example.org" is not an email address' in \
        r.stderr, r.stderr
    assert "> POST" not in r.stderr, r.stderr
    assert_nothing_queued(m)

    # A patch over the master's try.max_patch_bytes (100000).
    (work / "big.bin").write_bytes(deterministic_bytes(150000, seed=3))
    r = tf_try(farm, m, work, "-b", "b1", "--include-untracked", token=token)
    assert r.returncode == 2, explain(r)
    assert "tf-try: the master refused the job (HTTP 413)" in r.stderr, \
        r.stderr
    assert_nothing_queued(m)

    # tf-try's own cap (--max-patch-mb) stops it before anything is sent.
    (work / "big.bin").write_bytes(deterministic_bytes(1100000, seed=4))
    r = tf_try(farm, m, work, "-b", "b1", "--include-untracked",
               "--max-patch-mb", "1", token=token)
    assert r.returncode == 2, explain(r)
    assert "the patch is larger than 1 MiB" in r.stderr, r.stderr
    assert_nothing_queued(m)
    assert token not in m.log_text()


@pytest.mark.timeout(120)
def test_fair_share_between_committers(farm):
    up, work = make_repos(farm.tmp)
    slow = {"name": "q", "steps": [{"name": "nap", "command": "sleep 2"}]}
    # The one slave connects only once everything is queued: the order then
    # depends on the scheduler alone, not on how fast tf-try submits.
    m = farm.master(try_config(up, slaves=("s1",), extra_builders=[slow]))
    a = add_user(farm, m, "a@example.org", "A")
    b = add_user(farm, m, "b@example.org", "B")
    (work / "verdict").write_text("pass\n")

    a_jobs = []
    for i in range(10):
        r = tf_try(farm, m, work, "-b", "q", "-q", "-m", f"A {i}", token=a)
        assert r.returncode == 0, explain(r)
        a_jobs.append(job_id_of(r))
    r = tf_try(farm, m, work, "-b", "q", "-q", "-m", "B", token=b)
    assert r.returncode == 0, explain(r)
    b_job = job_id_of(r)
    # A's ten are ahead of B's in age; B's position says it runs second.
    j = m.get_json(f"/jobs/{b_job}")
    assert j["builders"][0]["position"] == 2, j
    # The queue shows each request's job; B's is second in it.
    queue = m.get_json("/requests?builder=q")["requests"]
    assert [q["job_id"] for q in queue[:2]] == [a_jobs[0], b_job], queue
    assert m.get_json(f"/requests/{queue[1]['id']}")["job_id"] == b_job
    farm.slave(m, "s1")

    def b_started():
        j = m.get_json(f"/jobs/{b_job}")
        return j["builders"][0]["build"]
    b_build = wait_for(b_started, 60, "B's build to start", farm)
    started_a = [j for j in a_jobs
                 if m.get_json(f"/jobs/{j}")["builders"][0]["build"]]
    a_builds = sorted(m.get_json(f"/jobs/{j}")["builders"][0]["build"]["id"]
                      for j in started_a)
    # B's build started before A's third: at most two of A's came first.
    assert len([x for x in a_builds if x < b_build["id"]]) <= 2, \
        (a_builds, b_build)

    # Cancel everything left (pending requests leave the queue).
    for j in a_jobs + [b_job]:
        r = tf_try(farm, m, work, "cancel", str(j), token=a if j != b_job
                   else b)
        assert r.returncode in (0, 2), explain(r)
        if r.returncode == 2:  # already finished
            assert "409" in r.stderr, r.stderr
    for j in a_jobs + [b_job]:
        wait_job_done(m, j, 60)


@pytest.mark.timeout(120)
def test_cancel_kills_the_running_step(farm):
    up, work = make_repos(farm.tmp)
    pids = farm.tmp / "pids"
    hang = {"name": "hang", "steps": [{
        "name": "hang",
        "command": f"sleep 1000 & echo $! >> {pids}; echo $$ >> {pids}; "
                   "echo hanging; exec sleep 1000"}]}
    m = start_farm(farm, up, slaves=("s1",), extra_builders=[hang])
    token = add_user(farm, m, "ann@example.org", "Ann")
    (work / "verdict").write_text("pass\n")
    r = tf_try(farm, m, work, "-b", "hang", token=token)
    assert r.returncode == 0, explain(r)
    job_id = job_id_of(r)
    got = wait_for(lambda: pids.exists() and
                   len(pids.read_text().split()) >= 2 and
                   [int(x) for x in pids.read_text().split()], 30,
                   "the step's pids", farm)
    pgid = pgid_of(got[1])
    assert live_pids_in_group(pgid)

    # Someone else's token may not cancel it.
    other = add_user(farm, m, "eve@example.org", "Eve")
    r = tf_try(farm, m, work, "cancel", str(job_id), token=other)
    assert r.returncode == 2, explain(r)
    r = tf_try(farm, m, work, "cancel", str(job_id), token=token)
    assert r.returncode == 0, explain(r)
    assert f"job {job_id}: cancelling" in r.stdout
    job = wait_job_done(m, job_id, 30)
    assert job["builders"][0]["result"] == "CANCELLED", job
    build = m.build(job["builders"][0]["build"]["id"])
    assert build["result"] == "CANCELLED", steps_summary(build)
    wait_for(lambda: not [p for p in got if pid_alive(p)] and
             not live_pids_in_group(pgid), 10,
             "every process of the step's group to be gone", farm)
    # status shows it; --wait on a finished job exits 1 (not passed).
    r = tf_try(farm, m, work, "status", str(job_id))
    assert r.returncode == 0, explain(r)
    assert re.search(r"^  hang +\S+ +- +s1 +CANCELLED ", r.stdout, re.M), \
        r.stdout
    r = tf_try(farm, m, work, "status", str(job_id), "--wait")
    assert r.returncode == 1, explain(r)
    assert "hang: build" in r.stdout and "CANCELLED" in r.stdout


@pytest.mark.timeout(120)
def test_same_patch_twice_is_stored_once(farm):
    up, work = make_repos(farm.tmp)
    m = start_farm(farm, up, slaves=("s1",))
    token = add_user(farm, m, "ann@example.org", "Ann")
    (work / "verdict").write_text("pass\n")
    jobs = []
    for _ in range(2):
        r = tf_try(farm, m, work, "-b", "b1", token=token)
        assert r.returncode == 0, explain(r)
        jobs.append(job_id_of(r))
    shas = [m.get_json(f"/jobs/{j}")["patch"]["sha256"] for j in jobs]
    assert shas[0] == shas[1] and re.fullmatch(r"[0-9a-f]{64}", shas[0])
    assert f"sha256 {shas[0]}" in r.stdout
    # Both ran on s1's one checkout of b1: the second apply worked only
    # because the source step cleaned the first one away.
    for j in jobs:
        job = wait_job_done(m, j)
        assert job["result"] == "SUCCESS", job
        build = m.build(job["builders"][0]["build"]["id"])
        assert build["slave"] == "s1"
        assert steps_summary(build) == [("source", "SUCCESS"),
                                        ("check", "SUCCESS")], build
    db = sqlite3.connect(f"file:{m.db_path}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM patches").fetchone()[0] == 1
    finally:
        db.close()


@pytest.mark.timeout(60)
def test_dry_run_sends_nothing(farm):
    up, work = make_repos(farm.tmp)
    m = start_farm(farm, up, slaves=("s1",))
    token = add_user(farm, m, "ann@example.org", "Ann")
    base = git(work, "rev-parse", "origin/main")
    # A clean work tree has nothing to try, unless --allow-empty.
    r = tf_try(farm, m, work, "-b", "b1", "--dry-run", token=token)
    assert r.returncode == 2, explain(r)
    assert f"tf-try: nothing to try: no changes against {base}" in r.stderr
    r = tf_try(farm, m, work, "-b", "b1", "--dry-run", "--allow-empty",
               token=token)
    assert r.returncode == 0, explain(r)
    assert "  patch:       empty: the base revision is tested as it is" \
        in r.stdout, r.stdout

    (work / "verdict").write_text("pass\n")
    r = tf_try(farm, m, work, "-b", "b1,b2", "--test", "unit", "--tests",
               "b2=slow,big", "--dry-run", "--review-url",
               "https://review.example.org/c/42", "--patchset", "3",
               "--no-email", token=token)
    assert r.returncode == 0, explain(r)
    out = r.stdout
    assert "tf-try: dry run: nothing is sent" in out
    assert f"  url:         {m.url}/api/v1/jobs\n" in out, out
    assert "  builders:    b1, b2\n" in out
    assert "  tests:       b1: unit\n               b2: unit slow big\n" \
        in out, out
    assert f"  base:        {base} (merge-base of HEAD and @{{upstream}})" \
        in out, out
    assert "  review:      https://review.example.org/c/42 (patchset 3)" in out
    assert "  email:       none (--no-email)" in out
    assert re.search(r"^  patch:       \d+ bytes, sha256 [0-9a-f]{64}$", out,
                     re.M), out
    assert re.search(r"^ verdict \| +2 \+-$", out, re.M), out
    assert token not in out + r.stderr
    assert_nothing_queued(m)
    assert "/api/v1/jobs" not in m.log_text().replace("GET /api/v1/jobs", "")


@pytest.mark.timeout(60)
def test_token_file_modes_and_whoami(farm):
    up, work = make_repos(farm.tmp)
    m = start_farm(farm, up, slaves=("s1",))
    token = add_user(farm, m, "ann@example.org", "Ann Example")
    cfg_dir = farm.tmp / "home" / ".config" / "tf-try"
    cfg_dir.mkdir(parents=True)
    tok = cfg_dir / "token"
    tok.write_text(f"  {token}  \n")
    tok.chmod(0o644)
    r = tf_try(farm, m, work, "whoami")
    assert r.returncode == 2, explain(r)
    assert f"the token file {tok} may be read by other users (mode 0644)" \
        in r.stderr, r.stderr
    assert f"chmod 600 {tok}" in r.stderr
    assert token not in r.stdout + r.stderr
    (work / "verdict").write_text("pass\n")
    r = tf_try(farm, m, work, "-b", "b1")
    assert r.returncode == 2, explain(r)
    assert_nothing_queued(m)

    tok.chmod(0o600)
    r = tf_try(farm, m, work, "whoami")
    assert r.returncode == 0, explain(r)
    assert r.stdout == f"Ann Example <ann@example.org> on {m.url}/\n"
    # $TF_TRY_TOKEN wins over the file.
    r = tf_try(farm, m, work, "whoami", token="tft_" + "1" * 40)
    assert r.returncode == 2, explain(r)
    assert "the master refused your token (HTTP 401)" in r.stderr and \
        "tf-try whoami" in r.stderr, r.stderr


@pytest.mark.timeout(120)
def test_config_files_list_and_status(farm):
    up, work = make_repos(farm.tmp, set_upstream=False)
    m = start_farm(farm, up)
    token = add_user(farm, m, "ann@example.org", "Ann")
    other = add_user(farm, m, "bob@example.org", "Bob")
    cfg_dir = farm.tmp / "home" / ".config" / "tf-try"
    cfg_dir.mkdir(parents=True)
    (cfg_dir / "config.json").write_text(
        f'{{"url": "{m.url}", "builders": ["b1", "b2"]}}')
    # The repository's file beats the user's for the keys it has.
    (work / ".tf-try.json").write_text(
        '{"builders": ["b2"], "tests": {"b2": ["from-repo"]}}')
    (work / "verdict").write_text("pass\n")

    # An unknown key is an error naming the file and the key.
    (work / ".tf-try.json").write_text('{"buidlers": ["b2"]}')
    r = tf_try(farm, m, work, "--dry-run", url=False)
    assert r.returncode == 2, explain(r)
    assert f'{work}/.tf-try.json:1:2: unknown key "buidlers"' in r.stderr, \
        r.stderr
    (work / ".tf-try.json").write_text(
        '{"builders": ["b2"], "tests": {"b2": ["from-repo"]}}')

    r = tf_try(farm, m, work, "--wait", "--poll-ms", "200", url=False,
               token=token)
    assert r.returncode == 0, explain(r)
    job_id = job_id_of(r)
    job = m.get_json(f"/jobs/{job_id}")
    assert [b["name"] for b in job["builders"]] == ["b2"], job
    assert job["builders"][0]["tests"] == ["from-repo"], job
    # No upstream configured: tf-try fell back to origin/main.
    assert job["base_revision"] == git(work, "rev-parse", "origin/main")

    r = tf_try(farm, m, work, "-b", "b1", "-q", url=False, token=other)
    assert r.returncode == 0, explain(r)
    assert r.stdout.count("\n") == 1, r.stdout
    other_job = job_id_of(r)

    r = tf_try(farm, m, work, "list", url=False, token=token)
    assert r.returncode == 0, explain(r)
    assert re.search(rf"^  {job_id} +finished +SUCCESS +\S+ \S+ UTC +b2 ",
                     r.stdout, re.M), r.stdout
    assert not re.search(rf"^  {other_job} ", r.stdout, re.M), r.stdout
    r = tf_try(farm, m, work, "list", "--all", url=False)
    assert r.returncode == 0, explain(r)
    assert re.search(rf"^  {other_job} ", r.stdout, re.M), r.stdout

    r = tf_try(farm, m, work, "status", str(job_id), url=False)
    assert r.returncode == 0, explain(r)
    assert r.stdout.startswith(f"job {job_id}: finished, SUCCESS\n"), r.stdout
    assert "  author:      Ann <ann@example.org>\n" in r.stdout
    assert re.search(rf"^  b2 +done +- +s[12] +SUCCESS +{m.url}/api/v1/"
                     r"builds/\d+$", r.stdout, re.M), r.stdout
    r = tf_try(farm, m, work, "status", "999", url=False)
    assert r.returncode == 2 and "there is no job 999" in r.stderr, explain(r)
    r = tf_try(farm, m, work, "cancel", "999", url=False, token=token)
    assert r.returncode == 2 and "there is no job 999" in r.stderr, explain(r)
    r = tf_try(farm, m, work, "list", url=False, token="tft_" + "2" * 40)
    assert r.returncode == 2, explain(r)
    assert "the master refused to list the jobs (HTTP 401)" in r.stderr, \
        r.stderr
    wait_job_done(m, other_job)


@pytest.mark.timeout(90)
def test_ctrl_c_stops_waiting_not_the_job(farm):
    up, work = make_repos(farm.tmp)
    slow = {"name": "slow", "steps": [{"name": "nap",
                                       "command": "echo napping; sleep 30"}]}
    m = start_farm(farm, up, slaves=("s1",), extra_builders=[slow])
    token = add_user(farm, m, "ann@example.org", "Ann")
    (work / "verdict").write_text("pass\n")
    env = dict(os.environ)
    env.update(GIT_ENV)
    env.update({"HOME": str(farm.tmp / "home"), "TF_TRY_TOKEN": token,
                farm.marker_key: farm.marker_value})
    (farm.tmp / "home").mkdir(exist_ok=True)
    out_path = farm.tmp / "tf-try.out"
    with open(out_path, "wb") as out:
        p = subprocess.Popen([str(TF_TRY), "--url", m.url, "-b", "slow",
                              "--wait", "--poll-ms", "200"], cwd=work,
                             env=env, stdout=out, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: b"step nap started" in out_path.read_bytes(), 60,
                 "tf-try to show the step running", farm)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=scaled(10))
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (p.returncode, err)
    job_id = int(re.search(rb"^job (\d+):", out_path.read_bytes(),
                           re.M).group(1))
    assert f"tf-try status {job_id} --wait".encode() in err, err
    job = m.get_json(f"/jobs/{job_id}")
    assert job["state"] == "running", job
    r = tf_try(farm, m, work, "cancel", str(job_id), token=token)
    assert r.returncode == 0, explain(r)
    wait_job_done(m, job_id, 30)


@pytest.mark.timeout(120)
def test_wait_survives_a_master_restart(farm):
    up, work = make_repos(farm.tmp)
    slow = {"name": "slow", "steps": [{"name": "nap",
                                       "command": "echo napping; sleep 4"}]}
    m = start_farm(farm, up, slaves=("s1",), extra_builders=[slow])
    token = add_user(farm, m, "ann@example.org", "Ann")
    (work / "verdict").write_text("pass\n")
    env = dict(os.environ)
    env.update(GIT_ENV)
    env.update({"HOME": str(farm.tmp / "home"), "TF_TRY_TOKEN": token,
                farm.marker_key: farm.marker_value})
    (farm.tmp / "home").mkdir(exist_ok=True)
    out_path = farm.tmp / "tf-try.out"
    with open(out_path, "wb") as out:
        p = subprocess.Popen([str(TF_TRY), "--url", m.url, "-b", "slow",
                              "--wait", "--poll-ms", "200"], cwd=work,
                             env=env, stdout=out, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: b"step nap started" in out_path.read_bytes(), 60,
                 "tf-try to show the step running", farm)
        m.stop()
        time.sleep(1)
        m.start()
        _, err = p.communicate(timeout=scaled(60))
    finally:
        if p.poll() is None:
            p.kill()
    text = out_path.read_bytes().decode(errors="replace")
    assert p.returncode == 0, (p.returncode, text, err)
    assert b"retrying for up to 60 s" in err, err
    assert re.search(r"^slow: build \d+: SUCCESS", text, re.M), text


def build_of_job(m, job_id):
    """The build of a one-builder job (None until it starts)."""
    return m.get_json(f"/jobs/{job_id}")["builders"][0]["build"]


@pytest.mark.timeout(90)
def test_priority_orders_requests(farm):
    up, work = make_repos(farm.tmp)
    quick = [{"name": "quick", "command": "echo quick"}]
    # The API has no per-request priority: a request takes its builder's
    # priority (config.md, "scheduler"), and positions count within one
    # builder's queue. So the high-priority builder's single request is
    # position 1 and runs before the two older low-priority ones.
    m = farm.master(try_config(up, slaves=("s1",), extra_builders=[
        {"name": "lo", "steps": quick, "priority": -5},
        {"name": "hi", "steps": quick, "priority": 10}]))
    token = add_user(farm, m, "ann@example.org", "Ann")
    (work / "verdict").write_text("pass\n")

    jobs = {}
    for label, builder in (("lo1", "lo"), ("lo2", "lo"), ("hi", "hi")):
        r = tf_try(farm, m, work, "-b", builder, "-m", label, token=token)
        assert r.returncode == 0, explain(r)
        jobs[label] = job_id_of(r)
        if label == "lo2":
            assert re.search(r"^  lo: request \d+, position 2 in queue$",
                             r.stdout, re.M), r.stdout
        if label == "hi":
            assert re.search(r"^  hi: request \d+, position 1 in queue$",
                             r.stdout, re.M), r.stdout

    entries = {k: m.get_json(f"/jobs/{j}")["builders"][0]
               for k, j in jobs.items()}
    assert [entries[k]["position"] for k in ("hi", "lo1", "lo2")] == \
        [1, 1, 2], entries
    for k, prio in (("hi", 10), ("lo1", -5), ("lo2", -5)):
        req = m.request_info(entries[k]["request_id"])
        assert req["state"] == "pending" and req["priority"] == prio, req
    hi_queue = m.get_json("/builders/hi")["pending_requests"]
    assert [(q["job_id"], q["position"], q["priority"]) for q in hi_queue] \
        == [(jobs["hi"], 1, 10)], hi_queue

    # One slave, one build at a time: the start order is the queue order.
    farm.slave(m, "s1")
    for j in jobs.values():
        job = wait_job_done(m, j, 60)
        assert job["result"] == "SUCCESS", job
    builds = {k: build_of_job(m, j) for k, j in jobs.items()}
    order = sorted(builds, key=lambda k: builds[k]["id"])
    assert order == ["hi", "lo1", "lo2"], builds
    assert builds["hi"]["started_ms"] <= builds["lo1"]["started_ms"], builds


@pytest.mark.timeout(120)
def test_request_prefers_the_warm_slave(farm):
    up, work = make_repos(farm.tmp)
    quick = [{"name": "quick", "command": "echo quick"}]
    m = farm.master(try_config(up, extra_builders=[
        {"name": "w1", "steps": quick}, {"name": "w2", "steps": quick}]))

    def slave_of(builder):
        return m.run_build(builder, timeout=60)["slave"]

    # Make s1 warm for w2 and s2 warm for w1, each while the other slave is
    # away, so that whatever order the master keeps its slaves in, one of
    # the two builders would land on the wrong slave without the rule.
    s1 = farm.slave(m, "s1")
    assert slave_of("w2") == "s1"
    s1.stop()
    farm.slave(m, "s2")
    assert slave_of("w1") == "s2"
    s1.start()
    for _ in range(3):
        assert slave_of("w1") == "s2"
        assert slave_of("w2") == "s1"

    # A restarted master remembers (from the builds in its database) which
    # slave built each builder last.
    m.stop()
    m.start()
    m.wait_slave_connected("s1")
    m.wait_slave_connected("s2")
    for _ in range(2):
        assert slave_of("w1") == "s2"
        assert slave_of("w2") == "s1"

    # "The slave that built its builder last" (config.md): s2 stays w1's
    # warm slave after it has built w2 too (it keeps a checkout per
    # builder), while s1 has never built w1.
    s1.stop()
    assert slave_of("w2") == "s2"
    s1.start()
    for _ in range(3):
        assert slave_of("w1") == "s2"
        assert slave_of("w2") == "s2"

    doc = " ".join((REPO / "docs" / "config.md").read_text().split())
    assert "A request prefers the slave that built its builder last (its " \
           "checkout is warm)." in doc


LOOK_SH = """\
for f in newfile.txt stray.txt straydir; do
  if [ -e "$f" ]; then echo "present: $f"; else echo "absent: $f"; fi
done
echo "status:"
git status --porcelain
test ! -e stray.txt && test ! -e straydir
"""


@pytest.mark.timeout(90)
def test_leftovers_of_a_patch_do_not_leak_into_the_next_build(farm):
    up, work = make_repos(farm.tmp)
    # "look" reports what the checkout holds and fails on litter; "litter"
    # leaves an untracked file and directory behind (not ignored ones:
    # those survive on purpose, config.md says so).
    (farm.tmp / "look.sh").write_text(LOOK_SH)
    leak = {"name": "leak", "steps": [
        {"name": "look", "command": f"sh {farm.tmp / 'look.sh'}"},
        {"name": "litter", "command": "echo litter > stray.txt; "
                                      "mkdir straydir; echo x > straydir/f"}]}
    m = start_farm(farm, up, slaves=("s1",), extra_builders=[leak])
    token = add_user(farm, m, "ann@example.org", "Ann")
    (work / "newfile.txt").write_text("added by the patch\n")
    (work / "verdict").write_text("pass\n")

    r = tf_try(farm, m, work, "-b", "leak", "--include-untracked", "--wait",
               "--poll-ms", "200", token=token)
    assert r.returncode == 0, explain(r)
    first = m.build(build_of_job(m, job_id_of(r))["id"])
    assert steps_summary(first) == [("source", "SUCCESS"), ("look", "SUCCESS"),
                                    ("litter", "SUCCESS")], first
    log = m.step_log(first["id"], 1).decode()
    assert "present: newfile.txt\nabsent: stray.txt\nabsent: straydir\n" \
        in log, log
    assert "A  newfile.txt" in log and "M  verdict" in log, log

    # The next build, without the patch, on the same slave and checkout.
    second = m.run_build("leak")
    assert second["slave"] == "s1" == first["slave"]
    assert steps_summary(second) == [("source", "SUCCESS"),
                                     ("look", "SUCCESS"),
                                     ("litter", "SUCCESS")], second
    log = m.step_log(second["id"], 1).decode()
    assert log.endswith("absent: newfile.txt\nabsent: stray.txt\n"
                        "absent: straydir\nstatus:\n"), log


def post_job(m, body, token=None, headers=None):
    """A raw POST /api/v1/jobs: body as bytes, or a dict sent as JSON."""
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    h.update(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return http_request(m.port, "POST", "/api/v1/jobs", body, h)


def assert_api_error(r, status, *words):
    assert r.status == status, r
    err = r.json()["error"]
    assert set(err) == {"status", "message"}, err
    assert err["status"] == status, err
    for w in words:
        assert w in err["message"], (w, err)


@pytest.mark.timeout(60)
def test_submission_errors_raw_http(farm):
    up, _ = make_repos(farm.tmp)
    m = farm.master(try_config(up, slaves=("s1",)))
    token = add_user(farm, m, "ann@example.org", "Ann")
    patch = base64.b64encode(b"diff --git a/verdict b/verdict\n").decode()
    good = {"builders": ["b1"], "patch": patch}

    r = post_job(m, good)
    assert_api_error(r, 401, "committer's token", "Authorization: Bearer")
    assert r.headers.get("www-authenticate") == "Bearer", r.headers
    for auth in ("Bearer tft_not-a-token", "Bearer " + "x" * 300,
                 f"Token {token}"):
        r = post_job(m, good, headers={"Authorization": auth})
        assert r.status == 401, (auth, r)
        assert_api_error(r, 401, "token")
    # The admin token is no committer's: it may not submit either.
    assert_api_error(post_job(m, good, token=m.token()), 401,
                     "admin token cannot submit")

    assert_api_error(post_job(m, b'{"builders": ["b1"], "patch": ', token),
                     400, "the body is not JSON")
    assert_api_error(post_job(m, b"", token), 400, "not JSON")
    assert_api_error(post_job(m, b'["b1"]', token), 400,
                     "must be a JSON object")
    assert_api_error(post_job(m, {"patch": patch}, token), 400,
                     "builders: required")
    for wrong in ("b1", {"b1": True}, [], [1], ["b1", "b1"]):
        r = post_job(m, {"builders": wrong, "patch": patch}, token)
        assert_api_error(r, 400, "builders")
    for wrong in (["unit"], "unit", {"b1": "unit"}, {"b2": ["unit"]},
                  {"b1": [7]}):
        r = post_job(m, dict(good, tests=wrong), token)
        assert_api_error(r, 400, "tests")
    assert_api_error(post_job(m, dict(good, builders=["nosuch"]), token),
                     400, 'unknown builder "nosuch"', "b1, b2")
    # Addresses outside the one rule tf-try applies too (common/email.h).
    for wrong in ("semi;colon@example.org", "a(b)@example.org",
                  "caf\u00e9@example.org", "a@example.org."):
        assert_api_error(post_job(m, dict(good, email=wrong), token), 400,
                         "email")

    assert m.get_json("/requests")["requests"] == []
    assert m.get_json("/jobs", token=token)["jobs"] == []
    assert m.get_json("/jobs?mine=1", token=token)["jobs"] == []
    assert m.get_json("/master")["requests_pending"] == 0
    # The same body with everything right is taken: the refusals above
    # were about what they named, not about the master.
    r = post_job(m, good, token)
    assert r.status == 201, r
    assert [j["id"] for j in m.get_json("/jobs")["jobs"]] == \
        [r.json()["job_id"]]


@pytest.mark.timeout(60)
def test_user_list_and_remove(farm):
    up, _ = make_repos(farm.tmp)
    m = farm.master(try_config(up, slaves=("s1",)))
    tf_master = BUILD_DIR / "master" / "tf-master"
    ann = add_user(farm, m, "ann@example.org", "Ann Example")
    bob = add_user(farm, m, "bob@example.org", "Bob")

    r = farm.run([tf_master, "user", "list", "-d", m.dir])
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    assert re.match(r"EMAIL +NAME +ADDED +LAST USED$", lines[0]), lines
    assert re.match(r"ann@example\.org +Ann Example +\d{4}-\d\d-\d\dT",
                    lines[1]), lines
    assert re.match(r"bob@example\.org +Bob +\d{4}-", lines[2]), lines
    assert len(lines) == 3, lines
    for t in (ann, bob):
        assert t not in r.stdout + r.stderr
        assert t[4:] not in r.stdout + r.stderr
    assert "tft_" not in r.stdout + r.stderr

    assert m.get_json("/whoami", token=ann) == {
        "email": "ann@example.org", "name": "Ann Example", "admin": False}
    r = farm.run([tf_master, "user", "remove", "ann@example.org", "-d",
                  m.dir])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "removed ann@example.org: their token no longer works" in r.stderr
    # At once, with the master running.
    r = m.api_get("/whoami", token=ann)
    assert_api_error(r, 401, "invalid token")
    assert m.get_json("/whoami", token=bob)["email"] == "bob@example.org"
    r = farm.run([tf_master, "user", "list", "-d", m.dir])
    assert "ann@example.org" not in r.stdout and "bob@example.org" in r.stdout
    # Removing someone who is not there says so.
    r = farm.run([tf_master, "user", "remove", "ann@example.org", "-d",
                  m.dir])
    assert r.returncode != 0 and "no user ann@example.org" in r.stderr, \
        (r.returncode, r.stderr)


@pytest.mark.timeout(90)
def test_properties_and_tests_reach_the_steps(farm):
    """A try job's tests and the build's built-in properties are
    interpolated into a step's command and environment (release-
    engineers.md, "Properties"); got_revision is recorded after source."""
    up, work = make_repos(farm.tmp)
    show = {"name": "show", "properties": {"channel": "beta"}, "steps": [
        {"name": "props",
         "env": {"WHO": "%(prop:owner)s", "CHAN": "%(prop:channel)s"},
         "command": "echo tests=[%(prop:tests)s] env_tests=[$TF_TESTS] "
                    "builder=%(prop:builder)s number=%(prop:buildnumber)s "
                    "slave=%(prop:slave)s revision=%(prop:revision)s "
                    "job=%(prop:job_id)s who=$WHO chan=$CHAN "
                    "missing=%(prop:nope:-fallback)s"}]}
    m = start_farm(farm, up, slaves=("s1",), extra_builders=[show])
    token = add_user(farm, m, "ann@example.org", "Ann")
    (work / "verdict").write_text("pass\n")
    r = tf_try(farm, m, work, "-b", "show", "--tests",
               "show=test_io,test_net", "--wait", "--poll-ms", "200",
               token=token)
    assert r.returncode == 0, explain(r)
    job_id = job_id_of(r)
    build = m.build(m.get_json(f"/jobs/{job_id}")["builders"][0]["build"]
                    ["id"])
    base = git(work, "rev-parse", "origin/main")
    log = m.step_log(build["id"], 1).decode()
    assert log == (f"tests=[test_io test_net] env_tests=[test_io test_net] "
                   f"builder=show number={build['number']} slave=s1 "
                   f"revision={base} job={job_id} who=ann@example.org "
                   f"chan=beta missing=fallback\n"), log
    props = build["properties"]
    assert props["got_revision"] == base, props
    assert props["tests"] == "test_io test_net" and props["channel"] == \
        "beta", props
