"""Continuous builds end to end: real git repositories in the test's tmp
directory, polled by path by a real master (poll_interval_s 1), real slaves
that check the revisions out, and the API saying what happened.

Every test makes a bare "upstream" repository and a clone ("work") where
commits are made and pushed. The builders check upstream out and print the
revision they built, so a test can tell which commit a build saw.
"""

import calendar
import os
import subprocess
import time

import pytest

from tfharness import TF_MASTER, scaled, wait_for

GIT_ENV = {"GIT_AUTHOR_NAME": "Ann Example",
           "GIT_AUTHOR_EMAIL": "ann@example.org",
           "GIT_COMMITTER_NAME": "Ann Example",
           "GIT_COMMITTER_EMAIL": "ann@example.org",
           "GIT_CONFIG_NOSYSTEM": "1"}


# --- helpers (the harness knows nothing about git) ---

def git(cwd, *args, check=True, env=None):
    e = dict(os.environ)
    e.update(GIT_ENV)
    e["HOME"] = str(cwd)  # no ~/.gitconfig of whoever runs the tests
    e.update(env or {})
    r = subprocess.run(["git", *args], cwd=cwd, env=e, capture_output=True,
                       timeout=scaled(60))
    if check and r.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: "
                             f"{r.stderr.decode(errors='replace')}")
    return r.stdout.decode().strip()


def make_repos(tmp, name="upstream"):
    """A bare upstream repository with one commit on main and a clone to
    work in. Returns (upstream path, work path)."""
    up = tmp / f"{name}.git"
    work = tmp / f"{name}-work"
    git(tmp, "init", "-q", "--bare", "-b", "main", str(up))
    git(tmp, "clone", "-q", str(up), str(work))
    git(work, "checkout", "-q", "-b", "main")
    (work / "src").mkdir()
    (work / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (work / "README").write_text("base\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base")
    git(work, "push", "-q", "-u", "origin", "main")
    return up, work


def commit(work, path, text, message, author=None, push=True):
    """Writes path (relative to work), commits it and pushes; returns the
    new revision."""
    p = work / path
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    env = {}
    if author:
        env = {"GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1]}
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message, env=env)
    if push:
        git(work, "push", "-q", "origin", "main")
    return git(work, "rev-parse", "HEAD")


SHOW_STEP = {"name": "show", "command": "git rev-parse HEAD"}


def builder(name, up, **kw):
    b = {"name": name, "repository": str(up), "branch": "main",
         "steps": [dict(SHOW_STEP)]}
    b.update(kw)
    return b


def config(builders, schedulers, slaves=("s1",), **top):
    cfg = {"name": "it", "heartbeat_s": 2, "lost_after_s": 600,
           "poll_interval_s": 1,
           "slaves": [{"name": s} for s in slaves],
           "builders": builders, "schedulers": schedulers}
    cfg.update(top)
    return cfg


def start(farm, cfg, slaves=("s1",)):
    m = farm.master(cfg)
    for s in slaves:
        farm.slave(m, s)
    return m


def poller(m, repo, branch="main"):
    for p in m.get_json("/pollers")["pollers"]:
        if p["repository"] == str(repo) and p["branch"] == branch:
            return p
    raise AssertionError(f"no poller for {repo} {branch}: "
                         f"{m.get_json('/pollers')}")


def wait_polled(m, repo, revision=None, timeout=30):
    """Waits until the poller of repo has a successful poll that knows
    revision (any revision when None); returns the poller."""
    def ok():
        p = poller(m, repo)
        if p["state"] != "ok" or p["polling"]:
            return False
        return (revision is None or p["last_revision"] == revision) and p
    return wait_for(ok, timeout, f"poller of {repo} to know "
                    f"{revision or 'its head'}", m.farm)


def builds_of(m, name):
    return m.get_json(f"/builders/{name}/builds")["builds"]


def wait_builds(m, name, count, timeout=40):
    """Waits until builder name has at least count builds, all finished;
    returns them oldest first."""
    def ok():
        bs = builds_of(m, name)
        return (len(bs) >= count and
                all(b["state"] == "finished" for b in bs) and bs)
    bs = wait_for(ok, timeout, f"{count} finished builds of {name}", m.farm,
                  interval=0.2)
    return [m.build(b["id"]) for b in reversed(bs)]


def scheduler_info(m, name):
    for s in m.get_json("/schedulers")["schedulers"]:
        if s["name"] == name:
            return s
    raise AssertionError(f"no scheduler {name}")


def revision_built(m, build):
    """The revision the show step printed."""
    return m.step_log(build["id"], 1).decode().strip().splitlines()[-1]


def set_clock(m, now_ms):
    r = m.api_post("/master/clock", {"now_ms": now_ms})
    assert r.status == 200, r
    return r.json()


# --- the tests ---

@pytest.mark.timeout(120)
def test_new_commit_triggers_a_build_with_its_change(farm):
    up, work = make_repos(farm.tmp)
    base = git(work, "rev-parse", "HEAD")
    m = start(farm, config([builder("b1", up)],
                           [{"name": "on-main", "type": "change",
                             "builders": ["b1"], "tree_stable_s": 2}]))
    # The first poll records the head only and builds nothing.
    wait_polled(m, up, base)
    changes = m.get_json("/changes")["changes"]
    assert [c["revision"] for c in changes] == [base], changes
    time.sleep(3.5)
    assert builds_of(m, "b1") == []
    assert scheduler_info(m, "on-main")["last_revision"] == base

    t0 = time.monotonic()
    rev = commit(work, "src/main.c", "int main(void) { return 1; }\n",
                 "Fix the exit status\n\nA longer explanation.\n",
                 author=("Bob Coder", "bob@example.org"))
    [b] = wait_builds(m, "b1", 1, timeout=30)
    # Poll interval (1 s) + tree-stable time (2 s) + the build itself.
    assert time.monotonic() - t0 < scaled(20)
    assert b["result"] == "SUCCESS", b
    assert revision_built(m, b) == rev
    props = b["properties"]
    assert props["revision"] == rev and props["got_revision"] == rev, props
    assert props["scheduler"] == "on-main" and props["changes"] == "1", props
    assert props["branch"] == "main" and props["repository"] == str(up)
    assert b["reason"].startswith("scheduler on-main: 1 change"), b
    [c] = b["changes"]
    assert c["revision"] == rev and c["author"] == "Bob Coder", c
    assert c["email"] == "bob@example.org"
    assert c["message"] == "Fix the exit status", c  # first line in lists
    assert c["files"] == ["src/main.c"], c
    assert isinstance(c["committer_ms"], int) and c["committer_ms"] > 0
    assert c["url"].endswith(f"/api/v1/changes/{c['id']}")

    one = m.get_json(f"/changes/{c['id']}")
    assert one["message"] == ("Fix the exit status\n\nA longer "
                              "explanation.\n"), one
    assert [x["id"] for x in one["builds"]] == [b["id"]], one
    page = m.get_json("/changes?limit=1")
    assert [x["id"] for x in page["changes"]] == [c["id"]]
    assert page["next_before"] == c["id"]
    older = m.get_json(f"/changes?limit=1&before={page['next_before']}")
    assert [x["revision"] for x in older["changes"]] == [base]
    assert older["next_before"] is None
    assert m.get_json("/changes?branch=other")["changes"] == []
    assert len(m.get_json(f"/changes?branch=main&repository={up}")
               ["changes"]) == 2
    assert m.api_get("/changes/999999").status == 404
    assert m.api_get("/changes?limit=0").status == 400
    # The console has a row per change, with the builds that include it.
    rows = [r for r in m.get_json("/console")["rows"]
            if r["kind"] == "change"]
    assert [r["revision"] for r in rows] == [rev, base], rows
    assert rows[0]["title"] == "Fix the exit status"
    assert rows[0]["author"] == "Bob Coder"
    assert rows[0]["builds"]["b1"]["build_id"] == b["id"], rows[0]
    assert rows[0]["builds"]["b1"]["result"] == "SUCCESS"
    assert rows[1]["builds"] == {}
    first = m.get_json("/console?limit=1")
    assert [r["id"] for r in first["rows"]] == [c["id"]], first
    second = m.get_json(f"/console?limit=1&before={first['next_before']}"
                        f"&before_job={first['next_before_job']}"
                        f"&before_change={first['next_before_change']}")
    assert [r["revision"] for r in second["rows"]] == [base], second
        # The request carries the revision and the scheduler.
    req = m.request_info(b["request_id"])
    assert req["revision"] == rev and req["scheduler"] == "on-main", req
    # No second build for the same change.
    time.sleep(3)
    assert len(builds_of(m, "b1")) == 1


@pytest.mark.timeout(120)
def test_three_quick_commits_give_one_build(farm):
    up, work = make_repos(farm.tmp)
    m = start(farm, config([builder("b1", up)],
                           [{"name": "on-main", "type": "change",
                             "builders": ["b1"], "tree_stable_s": 4}]))
    wait_polled(m, up)
    revs = []
    for i in range(3):
        revs.append(commit(work, f"src/f{i}.c", f"int f{i};\n",
                           f"commit {i}"))
        time.sleep(0.7)  # separate pushes, each seen by its own poll
    [b] = wait_builds(m, "b1", 1)
    assert [c["revision"] for c in b["changes"]] == revs, b["changes"]
    assert [c["message"] for c in b["changes"]] == \
        ["commit 0", "commit 1", "commit 2"]
    assert b["properties"]["changes"] == "3"
    assert revision_built(m, b) == revs[-1]
    time.sleep(5)
    assert len(builds_of(m, "b1")) == 1


@pytest.mark.timeout(120)
def test_path_filters_skip_unrelated_commits(farm):
    up, work = make_repos(farm.tmp)
    m = start(farm, config(
        [builder("code", up), builder("docs", up)],
        [{"name": "code", "type": "change", "builders": ["code"],
          "tree_stable_s": 1, "paths": ["src/", "*.mk"]},
         {"name": "docs", "type": "change", "builders": ["docs"],
          "tree_stable_s": 1, "paths": ["docs/**/*.md"]}]))
    wait_polled(m, up)
    doc = commit(work, "docs/guide/intro.md", "hello\n", "Document things")
    [d] = wait_builds(m, "docs", 1)
    assert [c["revision"] for c in d["changes"]] == [doc]
    wait_polled(m, up, doc)
    time.sleep(3)
    assert builds_of(m, "code") == []
    s = scheduler_info(m, "code")
    assert s["pending_changes"] == 1 and s["important_changes"] == 0, s

    code = commit(work, "src/util.c", "int util;\n", "Add util")
    [c] = wait_builds(m, "code", 1)
    # The unimportant change waited and joins the blamelist.
    assert [x["revision"] for x in c["changes"]] == [doc, code]
    assert revision_built(m, c) == code
    wait_polled(m, up, code)
    time.sleep(2.5)
    assert len(builds_of(m, "docs")) == 1  # src/ does not concern docs


@pytest.mark.timeout(120)
def test_unreachable_repository_is_reported_and_master_keeps_serving(farm):
    up, work = make_repos(farm.tmp)
    missing = farm.tmp / "later.git"
    m = start(farm, config(
        [builder("good", up), builder("bad", missing)],
        [{"name": "good", "type": "change", "builders": ["good"],
          "tree_stable_s": 1},
         {"name": "bad", "type": "change", "builders": ["bad"],
          "tree_stable_s": 1}]))

    def failing():
        p = poller(m, missing)
        return p["state"] == "failing" and p
    p = wait_for(failing, 20, "the poller of the missing repository to "
                 "fail", farm)
    assert "later.git' does not appear to be a git repository" in \
        p["last_error"], p
    assert p["failing_since_ms"] and p["last_revision"] is None
    # Retried with backoff (1, 2, 4, 8 s ...), not every tick.
    time.sleep(6)
    p = poller(m, missing)
    assert 2 <= p["failures"] <= 5, p
    # The other builder builds, the API answers.
    rev = commit(work, "src/a.c", "int a;\n", "Add a")
    [b] = wait_builds(m, "good", 1)
    assert revision_built(m, b) == rev
    assert m.api_get("/master").status == 200
    # Reported once in the log, not per attempt.
    log = m.log_text()
    assert log.count(f"cannot poll {missing} branch main") == 1, log[-3000:]

    # The repository appears: the poller recovers on its next try.
    git(farm.tmp, "clone", "-q", "--bare", str(up), str(missing))
    p = wait_for(lambda: poller(m, missing)["state"] == "ok" and
                 poller(m, missing), 40, "the poller to recover", farm)
    assert p["last_error"] is None and p["failures"] == 0
    assert p["last_revision"] == rev
    assert "can be polled again" in m.log_text()
    assert builds_of(m, "bad") == []  # its first poll is history


@pytest.mark.timeout(150)
def test_periodic_scheduler_fires_on_the_test_clock(farm):
    up, work = make_repos(farm.tmp)
    base = git(work, "rev-parse", "HEAD")
    # A time a few minutes ahead, so real time does not reach it.
    t = time.gmtime(time.time() + 240)
    cron = f"{t.tm_min} {t.tm_hour} * * *"
    m = start(farm, config(
        [builder("always", up), builder("ifchanged", up)],
        [{"name": "nightly-always", "type": "periodic",
          "builders": ["always"], "cron": cron, "only_if_changed": False},
         {"name": "nightly", "type": "periodic", "builders": ["ifchanged"],
          "cron": cron}],
        testing={"clock": True}))
    wait_polled(m, up, base)
    s = scheduler_info(m, "nightly")
    fire = s["next_fire_ms"]
    want = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour,
                            t.tm_min, 0)) * 1000
    assert fire == want and s["only_if_changed"] is True, s
    assert scheduler_info(m, "nightly-always")["next_fire_ms"] == fire

    # The clock is for the admin only.
    r = m.api_post("/master/clock", {"now_ms": fire}, token=False)
    assert r.status == 401, r
    assert m.api_post("/master/clock", {"now": 1}).status == 400

    set_clock(m, fire - 2000)
    assert builds_of(m, "always") == []
    [a] = wait_builds(m, "always", 1, timeout=30)
    assert a["properties"]["scheduler"] == "nightly-always", a
    assert a["properties"]["changes"] == "0"
    assert a["changes"] == []
    assert revision_built(m, a) == base
    assert "periodic" in a["reason"]
    # Nothing changed on the branch: the other one did not build.
    s = scheduler_info(m, "nightly")
    assert s["last_fired_ms"] is None, s
    assert s["next_fire_ms"] == fire + 86400 * 1000, s
    assert builds_of(m, "ifchanged") == []
    assert "nightly: nothing changed on main" in m.log_text()

    # A change, and the same time again (the clock moved back a little).
    rev = commit(work, "src/x.c", "int x;\n", "Change something")
    wait_polled(m, up, rev)
    set_clock(m, fire - 2000)
    [b] = wait_builds(m, "ifchanged", 1, timeout=30)
    assert [c["revision"] for c in b["changes"]] == [rev]
    assert revision_built(m, b) == rev
    assert scheduler_info(m, "nightly")["last_revision"] == rev
    assert len(builds_of(m, "always")) == 2  # fires whatever changed


def test_clock_endpoint_is_off_by_default(farm):
    up, _ = make_repos(farm.tmp)
    m = farm.master(config([builder("b1", up)], []))
    r = m.api_post("/master/clock", {"now_ms": 1})
    assert r.status == 404 and "testing" in r.error_message(), r


@pytest.mark.timeout(120)
def test_collapsing_keeps_the_blamelist_whole(farm):
    up, work = make_repos(farm.tmp)
    gate = farm.tmp / "gate"
    wait_gate = (f"while [ ! -e {gate} ]; do sleep 0.1; done; "
                 "git rev-parse HEAD")
    m = start(farm, config(
        [builder("b1", up, steps=[{"name": "gated",
                                   "command": wait_gate}])],
        [{"name": "on-main", "type": "change", "builders": ["b1"],
          "tree_stable_s": 0}]))
    wait_polled(m, up)
    forced = m.force("b1")
    m.wait_build_started(forced)

    def pending():
        return [r for r in m.get_json("/requests?builder=b1")["requests"]
                if r["state"] == "pending"]
    rev1 = commit(work, "src/one.c", "1\n", "one")
    [r1] = wait_for(lambda: len(pending()) == 1 and pending(), 20,
                    "a request for the first commit", farm)
    rev2 = commit(work, "src/two.c", "2\n", "two")
    rev3 = commit(work, "src/three.c", "3\n", "three")
    wait_polled(m, up, rev3)

    def collapsed():
        p = pending()
        return len(p) == 1 and p[0]["id"] != r1["id"] and p
    [r3] = wait_for(collapsed, 20, "the newer request to supersede the "
                    "older one", farm)
    old = m.request_info(r1["id"])
    assert old["state"] == "collapsed", old
    assert old["collapsed_into"] in (r3["id"], r3["id"] - 1), old
    gate.write_text("go\n")
    builds = wait_builds(m, "b1", 2)
    assert len(builds) == 2, builds
    b = builds[1]
    assert b["request_id"] == r3["id"]
    assert [c["revision"] for c in b["changes"]] == [rev1, rev2, rev3]
    assert b["properties"]["changes"] == "3"
    assert m.step_log(b["id"], 1).decode().split()[-1] == rev3
    time.sleep(2)
    assert len(builds_of(m, "b1")) == 2


@pytest.mark.timeout(120)
def test_collapse_requests_off_builds_every_request(farm):
    up, work = make_repos(farm.tmp)
    gate = farm.tmp / "gate"
    m = start(farm, config(
        [builder("b1", up, collapse_requests=False,
                 steps=[{"name": "gated", "command":
                         f"while [ ! -e {gate} ]; do sleep 0.1; done; "
                         "git rev-parse HEAD"}])],
        [{"name": "on-main", "type": "change", "builders": ["b1"],
          "tree_stable_s": 0}]))
    wait_polled(m, up)
    m.wait_build_started(m.force("b1"))
    rev1 = commit(work, "src/one.c", "1\n", "one")
    wait_polled(m, up, rev1)
    time.sleep(1.5)
    rev2 = commit(work, "src/two.c", "2\n", "two")
    wait_polled(m, up, rev2)
    wait_for(lambda: len(m.get_json("/requests?builder=b1")["requests"])
             == 3, 20, "two pending requests and a running one", farm)
    gate.write_text("go\n")
    builds = wait_builds(m, "b1", 3)
    assert [[c["revision"] for c in b["changes"]] for b in builds[1:]] == \
        [[rev1], [rev2]]


@pytest.mark.timeout(120)
def test_rebuild_of_a_past_build(farm):
    up, work = make_repos(farm.tmp)
    m = start(farm, config(
        [builder("b1", up, steps=[
            dict(SHOW_STEP),
            {"name": "prop", "command": "echo flavour=%(prop:flavour:-none)s"}
        ])],
        [{"name": "on-main", "type": "change", "builders": ["b1"],
          "tree_stable_s": 1}]))
    wait_polled(m, up)
    rev = commit(work, "src/a.c", "int a;\n", "Add a")
    [b] = wait_builds(m, "b1", 1)
    # The branch moves on; the rebuild still builds the old revision.
    commit(work, "README", "newer\n", "Newer", push=False)
    assert m.api_post(f"/builds/{b['id']}/rebuild", token=False).status == 401
    assert m.api_post("/builds/999999/rebuild").status == 404
    assert m.api_get(f"/builds/{b['id']}/rebuild").status == 405
    r = m.api_post(f"/builds/{b['id']}/rebuild")
    assert r.status == 201, r
    body = r.json()
    assert body["builder"] == "b1" and body["position"] in (1, None), body
    assert body["url"].endswith(f"/api/v1/requests/{body['request_id']}")
    nb = m.wait_request_done(body["request_id"])
    assert nb["id"] != b["id"] and nb["result"] == "SUCCESS", nb
    assert revision_built(m, nb) == rev
    assert [c["revision"] for c in nb["changes"]] == [rev]
    assert nb["reason"] == f"rebuild of build {b['id']} (b1 #1)", nb

    # A forced build of the branch head with a property: the rebuild gets
    # the same property and the revision the first one got.
    fb = m.run_build("b1", properties={"flavour": "sweet"})
    assert b"flavour=sweet" in m.step_log(fb["id"], 2)
    r = m.api_post(f"/builds/{fb['id']}/rebuild")
    assert r.status == 201, r
    rb = m.wait_request_done(r.json()["request_id"])
    assert b"flavour=sweet" in m.step_log(rb["id"], 2)
    assert rb["properties"]["revision"] == fb["properties"]["got_revision"]
    assert "scheduler" not in rb["properties"]


@pytest.mark.timeout(150)
def test_restart_does_not_record_changes_again(farm):
    up, work = make_repos(farm.tmp)
    cfg = config([builder("b1", up)],
                 [{"name": "on-main", "type": "change", "builders": ["b1"],
                   "tree_stable_s": 1}])
    m = start(farm, cfg)
    wait_polled(m, up)
    rev1 = commit(work, "src/a.c", "int a;\n", "Add a")
    wait_builds(m, "b1", 1)
    before = m.get_json("/changes")["changes"]
    assert len(before) == 2

    m.stop()
    # A commit while the master is down is recorded once it is back.
    rev2 = commit(work, "src/b.c", "int b;\n", "Add b")
    m.start()
    wait_polled(m, up, rev2)
    builds = wait_builds(m, "b1", 2)
    assert [c["revision"] for c in builds[1]["changes"]] == [rev2]
    m.restart()
    wait_for(lambda: poller(m, up)["last_poll_ms"] and
             poller(m, up)["state"] == "ok", 20, "a poll after the restart",
             farm)
    time.sleep(3)
    after = m.get_json("/changes")["changes"]
    assert [c["revision"] for c in after] == [rev2, rev1] + \
        [c["revision"] for c in before[1:]], after
    assert len(builds_of(m, "b1")) == 2


@pytest.mark.timeout(120)
def test_scheduled_change_survives_a_restart_before_it_fires(farm):
    up, work = make_repos(farm.tmp)
    cfg = config([builder("b1", up)],
                 [{"name": "on-main", "type": "change", "builders": ["b1"],
                   "tree_stable_s": 600}])
    m = start(farm, cfg)
    wait_polled(m, up)
    rev = commit(work, "src/a.c", "int a;\n", "Add a")
    wait_polled(m, up, rev)
    assert scheduler_info(m, "on-main")["pending_changes"] == 1
    cfg["schedulers"][0]["tree_stable_s"] = 1
    m.write_config(cfg)
    m.restart()
    [b] = wait_builds(m, "b1", 1)
    assert [c["revision"] for c in b["changes"]] == [rev]


def test_config_errors_for_schedulers(farm):
    up, _ = make_repos(farm.tmp)
    cfg = config([builder("b1", up), {"name": "plain", "steps": [
        {"name": "x", "command": "true"}]}], [
        {"name": "a", "type": "change", "builders": ["b2"]},
        {"name": "b", "type": "periodic", "builders": ["b1"],
         "cron": "0 25 * * *"},
        {"name": "c", "type": "change", "builders": ["plain"]},
        {"name": "d", "type": "nightly", "builders": ["b1"]},
        {"name": "e", "type": "periodic", "builders": ["plain"],
         "cron": "0 3 * * *", "only_if_changed": True},
        {"name": "f", "type": "change", "builders": ["b1"],
         "cron": "0 3 * * *"},
        {"name": "a", "type": "change", "builders": ["b1"]},
        {"name": "g", "type": "periodic", "builders": ["b1"],
         "cron": "0 0 30 2 *"}],
        pollers=[{"repository": str(up)}, {"repository": str(up),
                                           "branch": "main"}],
        testing={"clock": "yes"})
    m = farm.master(cfg, start=False)
    r = farm.run([TF_MASTER, "checkconfig", m.config_path])
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    for want in ['schedulers[0].builders[0]: no builder named "b2"; did you '
                 'mean "b1"?',
                 "schedulers[1].cron: field 2 (hour)",
                 "schedulers[2]: a change scheduler needs a repository",
                 'schedulers[3].type: expected "change" or "periodic"',
                 "schedulers[4].only_if_changed: needs a repository",
                 'schedulers[5].cron: unknown key "cron"',
                 'duplicate scheduler name "a"',
                 "pollers[1]: duplicate poller of branch \"main\"",
                 "testing.clock: expected true or false",
                 'schedulers[7].cron: "0 0 30 2 *" never fires']:
        assert want in out, f"{want!r} not in:\n{out}"


@pytest.mark.timeout(120)
def test_a_queued_request_keeps_its_blamelist_across_a_restart(farm):
    """A continuous request still queued when the master restarts comes
    back with its scheduler and its changes once each."""
    up, work = make_repos(farm.tmp)
    cfg = config([builder("b1", up)],
                 [{"name": "on-main", "type": "change", "builders": ["b1"],
                   "tree_stable_s": 1}])
    m = farm.master(cfg)  # no slave: the request waits
    wait_polled(m, up)
    rev = commit(work, "src/a.c", "int a;\n", "Add a")
    wait_for(lambda: m.get_json("/builders/b1")["pending"] == 1, 30,
             "the scheduler's request to be queued", farm)
    m.restart()
    assert m.get_json("/builders/b1")["pending"] == 1
    farm.slave(m, "s1")
    [b] = wait_builds(m, "b1", 1)
    assert b["result"] == "SUCCESS", b
    assert b["properties"]["scheduler"] == "on-main", b["properties"]
    assert b["properties"]["changes"] == "1", b["properties"]
    assert [c["revision"] for c in b["changes"]] == [rev]


@pytest.mark.timeout(120)
def test_sighup_adds_a_poller_and_a_scheduler_read_off_the_loop(farm):
    """A reload that adds a branch to poll and a scheduler reads their
    stored state off the loop thread (the master asserts no synchronous
    read runs on it once serving), and both work at once."""
    up, work = make_repos(farm.tmp)
    up2, work2 = make_repos(farm.tmp, "second")
    cfg = config([builder("b1", up), builder("b2", up2)],
                 [{"name": "on-main", "type": "change", "builders": ["b1"],
                   "tree_stable_s": 1}])
    m = start(farm, cfg)
    wait_polled(m, up)
    cfg["schedulers"].append({"name": "on-second", "type": "change",
                              "builders": ["b2"], "tree_stable_s": 1})
    m.write_config(cfg)
    m.sighup()
    wait_for(lambda: "config reloaded" in m.log_text(), 20, "the reload",
             farm)
    wait_polled(m, up2)
    assert scheduler_info(m, "on-second")["last_revision"] == \
        git(work2, "rev-parse", "HEAD")
    rev = commit(work2, "src/b.c", "int b;\n", "Add b")
    [b] = wait_builds(m, "b2", 1)
    assert revision_built(m, b) == rev
    # And once more, with the first branch's scheduler dropped and added
    # back: its stored state (what it consumed) is read again.
    rev1 = commit(work, "src/a.c", "int a;\n", "Add a")
    wait_builds(m, "b1", 1)
    cfg["schedulers"] = cfg["schedulers"][1:]
    m.write_config(cfg)
    m.sighup()
    wait_for(lambda: m.log_text().count("config reloaded") == 2, 20,
             "the second reload", farm)
    cfg["schedulers"].append({"name": "on-main", "type": "change",
                              "builders": ["b1"], "tree_stable_s": 1})
    m.write_config(cfg)
    m.sighup()
    wait_for(lambda: m.log_text().count("config reloaded") == 3, 20,
             "the third reload", farm)
    time.sleep(3)
    assert len(builds_of(m, "b1")) == 1  # rev1 is not built again
    assert scheduler_info(m, "on-main")["last_revision"] == rev1
    assert m.running()
    assert "synchronous read" not in m.log_text()
