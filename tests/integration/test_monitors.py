"""What watchers of the farm see (issue 12 points 4 and 5, issue 14 point
5): try builds kept apart from the tree's state, links to the status pages
beside the JSON ones, the summary for monitors (failing builders, since
when, suspects, the failed step, per-slave state, ?builder= filters), CORS
for pages on another origin, and the status badge.

Real tf-master and tf-slave processes on 127.0.0.1, real git repositories
polled by the master for the tests about changes and their authors, and
the live feed read as a tool reads it.
"""

import email
import email.policy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfharness import (REPO, TF_MASTER, WSClient, scaled, wait_for)

WEB = REPO / "web"
SENDMAIL = Path(__file__).resolve().parent / "mail" / "fake_sendmail.py"

GIT_ENV = {"GIT_AUTHOR_NAME": "Ann Example",
           "GIT_AUTHOR_EMAIL": "ann@example.org",
           "GIT_COMMITTER_NAME": "Ann Example",
           "GIT_COMMITTER_EMAIL": "ann@example.org",
           "GIT_CONFIG_NOSYSTEM": "1"}


# --- helpers ---

def config(flag, **top):
    """fragile fails while the file flag exists; slow waits for gate."""
    cfg = {"name": "it", "heartbeat_s": 2, "lost_after_s": 6,
           "slaves": [{"name": "s1", "max_builds": 2}],
           "builders": [
               {"name": "fragile", "slaves": ["s1"],
                "steps": [{"name": "prep", "command": "echo prep"},
                          {"name": "test", "command": f"test ! -e {flag}"}]},
               {"name": "slow", "slaves": ["s1"],
                "steps": [{"name": "wait", "command": "sleep 60"}]},
           ]}
    cfg.update(top)
    return cfg


def add_user(farm, m, email_addr, name):
    r = farm.run([TF_MASTER, "user", "add", email_addr, "--name", name,
                  "-d", m.dir])
    assert r.returncode == 0, f"user add: {r.stdout} {r.stderr}"
    return r.stdout.strip().splitlines()[-1].strip()


def submit(m, token, builders, **fields):
    body = {"builders": builders, "patch": ""}
    body.update(fields)
    r = m.request("POST", "/api/v1/jobs", body=body, token=token)
    assert r.status == 201, f"submit: {r!r}"
    return r.json()


def wait_job(m, job_id, timeout=60):
    def done():
        j = m.get_json(f"/jobs/{job_id}")
        return j["state"] in ("finished", "cancelled") and all(
            b["build"] is None or b["build"]["state"] == "finished"
            for b in j["builders"]) and j
    return wait_for(done, timeout, f"job {job_id} to finish", m.farm,
                    interval=0.2)


def live_client(farm, m):
    ws = WSClient(m.port, path="/live", protocol="testfarm-live", farm=farm)
    ws.connect()
    assert ws.status == 101, ws.status
    ws.send_json({"subscribe": ["builds"]})
    assert ws.recv_json()["type"] == "subscribed"
    return ws


def build_events(ws, until_ids, timeout=60):
    """Build events until each id in until_ids has finished."""
    events, done = [], set()
    deadline = time.monotonic() + scaled(timeout)
    while not set(until_ids) <= done and time.monotonic() < deadline:
        msg = ws.recv_json(timeout=scaled(30))
        if msg.get("type") != "build":
            continue
        events.append(msg)
        if msg["event"] == "finished":
            done.add(msg["build"]["id"])
    assert set(until_ids) <= done, events
    return events


def git(cwd, *args, env=None):
    e = dict(os.environ)
    e.update(GIT_ENV)
    e["HOME"] = str(cwd)
    e.update(env or {})
    r = subprocess.run(["git", *args], cwd=cwd, env=e, capture_output=True,
                       timeout=scaled(60))
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout.decode().strip()


def commit(work, path, text, message, author):
    (work / path).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message,
        env={"GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1]})
    git(work, "push", "-q", "origin", "main")
    return git(work, "rev-parse", "HEAD")


# --- try builds apart from the tree ---

@pytest.mark.timeout(180)
def test_try_builds_leave_the_tree_state_alone(farm):
    flag = farm.tmp / "make-it-fail"
    m = farm.master(config(flag))
    ws = live_client(farm, m)
    farm.slave(m, "s1")
    token = add_user(farm, m, "ann@example.org", "Ann Example")

    ci = m.run_build("fragile")
    assert ci["result"] == "SUCCESS" and ci["kind"] == "ci", ci

    # A try job fails on fragile: the tree stays green.
    flag.write_text("fail")
    job = submit(m, token, ["fragile"], description="a broken patch")
    j = wait_job(m, job["job_id"])
    assert j["result"] == "FAILURE", j
    tb = j["builders"][0]["build"]
    tbuild = m.get_json(f"/builds/{tb['id']}")
    assert tbuild["kind"] == "try" and tbuild["result"] == "FAILURE"

    s = m.get_json("/summary")
    assert s["verdict"] == "ok", s
    assert s["failing"] == [], s
    frag = [b for b in s["builders"] if b["name"] == "fragile"][0]
    assert frag["last"]["id"] == ci["id"], frag
    assert frag["failing_since"] is None and frag["suspects"] == []
    b = m.get_json("/builders/fragile")
    assert b["last_complete"]["id"] == ci["id"], b
    assert b["failing_since"] is None and b["failed_step"] is None

    # ?kind= on the lists.
    def ids(path, key="builds"):
        return [x["id"] for x in m.get_json(path)[key]]
    assert ids("/builders/fragile/builds?kind=try") == [tb["id"]]
    assert ids("/builders/fragile/builds?kind=ci") == [ci["id"]]
    assert ids("/builders/fragile/builds") == [tb["id"], ci["id"]]
    assert ids("/waterfall?kind=try") == [tb["id"]]
    assert ids("/waterfall?kind=ci&builder=fragile") == [ci["id"]]
    wf = m.get_json("/waterfall?kind=try")["builds"][0]
    assert wf["kind"] == "try" and wf["owner"] == "ann@example.org"
    assert wf["author"] == "Ann Example", wf
    rows = m.get_json("/console?kind=try")["rows"]
    assert [(r["kind"], r["id"]) for r in rows] == [("job", job["job_id"])]
    assert m.get_json("/console?kind=ci")["rows"] == []
    # The plots are the tree's unless asked.
    assert [x["id"] for x in
            m.get_json("/builders/fragile/stats")["builds"]] == [ci["id"]]
    assert [x["id"] for x in m.get_json(
        "/builders/fragile/stats?kind=try")["builds"]] == [tb["id"]]

    # A cancelled try build is never a builder's last complete build.
    slow = submit(m, token, ["slow"])
    req = slow["requests"][0]["request_id"]
    wait_for(lambda: m.request_info(req)["build_id"], 30,
             "the slow try build to start", farm)
    running = m.get_json("/requests?kind=try")["requests"]
    assert [r["id"] for r in running] == [req], running
    assert running[0]["kind"] == "try"
    assert m.get_json("/requests?kind=ci")["requests"] == []
    cur = m.get_json("/builders/slow")["current_builds"]
    assert cur[0]["kind"] == "try", cur
    r = m.api_post(f"/jobs/{slow['job_id']}/cancel", token=token)
    assert r.status == 202, r
    sj = wait_job(m, slow["job_id"])
    sb = sj["builders"][0]["build"]
    assert sb["result"] == "CANCELLED", sj
    assert m.get_json("/builders/slow")["last_complete"] is None
    assert m.get_json("/summary")["verdict"] == "ok"

    # The live feed says which builds are which; created says why.
    evs = build_events(ws, [ci["id"], tb["id"], sb["id"]])
    kinds = {(e["build"]["id"], e["build"]["kind"]) for e in evs}
    assert kinds == {(ci["id"], "ci"), (tb["id"], "try"),
                     (sb["id"], "try")}, evs
    created = [e["build"] for e in evs if e["event"] == "created"]
    by_id = {c["id"]: c for c in created}
    assert by_id[ci["id"]]["reason"] == "integration test"
    assert by_id[ci["id"]]["request_id"] == ci["request_id"]
    assert by_id[tb["id"]]["reason"] == \
        f"try job {job['job_id']} by ann@example.org"
    assert by_id[tb["id"]]["owner"] == "ann@example.org"
    ws.close()

    # A later continuous failure is the tree's.
    red = m.run_build("fragile")
    assert red["result"] == "FAILURE"
    s = m.get_json("/summary")
    assert s["verdict"] == "failing"
    assert [f["name"] for f in s["failing"]] == ["fragile"]
    assert s["failing"][0]["since"]["id"] == red["id"]
    assert s["failing"][0]["failed_step"] == {"index": 1, "name": "test",
                                              "result": "FAILURE"}

    # A kind that is neither is refused, naming the parameter.
    for path in ("/builders/fragile/builds?kind=all", "/waterfall?kind=TRY",
                 "/console?kind=x", "/builders/fragile/stats?kind=",
                 "/requests?kind=both"):
        r = m.api_get(path)
        assert r.status == 400, (path, r)
        assert "kind=" in r.error_message() and '"try"' in \
            r.error_message(), (path, r.error_message())


@pytest.mark.timeout(180)
def test_a_try_build_from_an_older_database_is_told_apart(farm):
    """Migration 6 marks the try builds of a database written before it
    and recomputes each builder's last complete build without them."""
    flag = farm.tmp / "make-it-fail"
    m = farm.master(config(flag))
    farm.slave(m, "s1")
    token = add_user(farm, m, "ann@example.org", "Ann Example")
    ci = m.run_build("fragile")
    flag.write_text("fail")
    j = wait_job(m, submit(m, token, ["fragile"])["job_id"])
    tb = j["builders"][0]["build"]["id"]
    m.stop()
    # Back to schema 5 as an older master left it: no kind column, and the
    # try build as the builder's last complete build (and nothing of the
    # migrations after 6: migration 7's test results go too, schema 8's
    # compressed logs: the logs go back into chunks, schema 9's farm,
    # recipes and indexes, schema 10's build owners and schema 11's stored
    # cancels and draining flags; schema 12 dropped builds_by_builder, which
    # schema 5 had).
    import sqlite3
    db = sqlite3.connect(m.db_path)
    db.executescript(
        "DROP INDEX builds_cancel_open;"
        "ALTER TABLE builds DROP COLUMN cancel_requested;"
        "ALTER TABLE try_jobs DROP COLUMN cancel_requested;"
        "ALTER TABLE slaves DROP COLUMN draining;"
        "ALTER TABLE builds DROP COLUMN owner;"
        "DROP TABLE farm;"
        "DROP INDEX changes_by_revision;"
        "DROP INDEX builds_by_request;"
        "ALTER TABLE builds DROP COLUMN recipe;"
        "DROP INDEX builds_logs_kept;"
        "ALTER TABLE builds DROP COLUMN logs_removed_ms;"
        "DROP INDEX steps_unsealed;"
        "ALTER TABLE steps DROP COLUMN log_sealed;"
        "DROP TABLE log_blocks;"
        "DROP TABLE test_results;"
        "DROP INDEX build_requests_without_patch;"
        "DROP INDEX build_requests_by_revision;"
        "ALTER TABLE build_requests DROP COLUMN without_patch_of;"
        "ALTER TABLE build_requests DROP COLUMN reused;"
        "ALTER TABLE try_jobs DROP COLUMN new_failures_only;"
        "DROP INDEX builds_by_builder_kind;"
        "ALTER TABLE builds DROP COLUMN kind;"
        "CREATE INDEX builds_by_builder ON builds(builder, number);"
        f"UPDATE builders SET last_complete_build_id = {tb}, "
        "last_complete_result = 2 WHERE name = 'fragile';"
        "PRAGMA user_version = 5;")
    db.close()
    m.start()
    assert m.get_json("/master")["store"]["schema_version"] >= 6
    b = m.get_json("/builders/fragile")
    assert b["last_complete"]["id"] == ci["id"], b
    assert b["last_complete"]["result"] == "SUCCESS"
    assert m.get_json(f"/builds/{tb}")["kind"] == "try"
    assert m.get_json("/summary")["verdict"] == "ok"


# --- who broke it: failing since, suspects, the failed step ---

CHECK = 'v=$(cat verdict); echo "verdict: $v"; [ "$v" = pass ]\n'


@pytest.mark.timeout(240)
def test_failing_since_suspects_badge_and_commit_links(farm):
    up = farm.tmp / "upstream.git"
    work = farm.tmp / "work"
    git(farm.tmp, "init", "-q", "--bare", "-b", "main", str(up))
    git(farm.tmp, "clone", "-q", str(up), str(work))
    git(work, "checkout", "-q", "-b", "main")
    (work / "check.sh").write_text(CHECK)
    commit(work, "verdict", "pass\n", "base", ("Ann Example",
                                                "ann@example.org"))
    cfg = {"name": "it", "heartbeat_s": 2, "lost_after_s": 600,
           "poll_interval_s": 1,
           "commit_url": "https://git.example.org/app/commit/{revision}",
           "slaves": [{"name": "s1"}],
           "builders": [
               {"name": "unit", "repository": str(up), "branch": "main",
                "steps": [{"name": "compile", "command": "echo cc"},
                          {"name": "check", "command": "sh check.sh"}]},
               {"name": "idle", "slaves": ["s1"],
                "steps": [{"name": "x", "command": "true"}]}],
           "schedulers": [{"name": "on-main", "type": "change",
                           "builders": ["unit"], "tree_stable_s": 0}]}
    m = farm.master(cfg)
    farm.slave(m, "s1")

    def builds():
        return m.get_json("/builders/unit/builds?kind=ci")["builds"]

    def wait_builds(n):
        return wait_for(lambda: len(builds()) >= n and all(
            b["state"] == "finished" for b in builds()) and builds(), 60,
            f"{n} finished builds of unit", farm, interval=0.2)

    # The first build (the base) is green.
    first = m.run_build("unit")
    assert first["result"] == "SUCCESS", first
    assert first["kind"] == "ci"
    badge = m.get("/badge/unit.svg")
    assert badge.status == 200, badge
    assert badge.headers["content-type"] == "image/svg+xml"
    assert badge.headers["cache-control"] == "max-age=30"
    svg = badge.body.decode()
    assert svg.startswith("<svg ") and 'role="img"' in svg
    assert 'aria-label="unit: passing"' in svg
    assert "<title>unit: passing</title>" in svg
    assert "#2e7d32" in svg  # green

    # Bob breaks it, Cy adds to the pile: red since Bob's build.
    commit(work, "verdict", "fail\n", "switch the verdict",
           ("Bob Breaker", "bob@example.org"))
    red1 = wait_builds(2)[0]
    assert red1["result"] == "FAILURE", red1
    rev_cy = commit(work, "notes.txt", "unrelated\n", "add notes",
                    ("Cy Bystander", "cy@example.org"))
    red2 = wait_builds(3)[0]
    assert red2["result"] == "FAILURE", red2

    b = m.get_json("/builders/unit")
    assert b["failing_since"]["id"] == red1["id"], b
    assert b["failing_since"]["number"] == red1["number"]
    assert b["suspects"] == [
        {"author": "Bob Breaker", "email": "bob@example.org"},
        {"author": "Cy Bystander", "email": "cy@example.org"}], b
    assert b["failed_step"] == {"index": 2, "name": "check",
                                "result": "FAILURE"}

    s = m.get_json("/summary?builder=unit")
    assert [x["name"] for x in s["builders"]] == ["unit"]
    assert s["verdict"] == "failing"
    f = s["failing"]
    assert len(f) == 1 and f[0]["name"] == "unit", f
    assert f[0]["since"]["number"] == red1["number"]
    assert [x["author"] for x in f[0]["suspects"]] == ["Bob Breaker",
                                                      "Cy Bystander"]
    assert f[0]["failed_step"]["name"] == "check"
    assert f[0]["last"]["id"] == red2["id"]
    assert m.get_json("/summary?builder=idle")["verdict"] == "unknown"
    both = m.get_json("/summary?builder=idle&builder=unit")
    assert sorted(x["name"] for x in both["builders"]) == ["idle", "unit"]
    # Per-slave state.
    sl = s["slaves"]
    assert sl["connected"] == 1 and sl["total"] == 1
    assert sl["list"][0]["name"] == "s1"
    assert sl["list"][0]["state"] == "idle" and sl["list"][0]["connected"]

    svg = m.get("/badge/unit.svg").body.decode()
    assert 'aria-label="unit: failing"' in svg and "#c62828" in svg
    assert 'aria-label="idle: unknown"' in \
        m.get("/badge/idle.svg").body.decode()

    # The waterfall's boxes say whose changes they built.
    wf = {x["id"]: x for x in m.get_json("/waterfall?builder=unit")["builds"]}
    assert wf[red1["id"]]["author"] == "Bob Breaker", wf[red1["id"]]
    assert wf[red2["id"]]["author"] == "Cy Bystander"

    # Changes link their commit when the config says how.
    red2_full = m.get_json(f"/builds/{red2['id']}")
    ch = red2_full["changes"][0]
    assert ch["commit_url"] == \
        f"https://git.example.org/app/commit/{rev_cy}", ch
    one = m.get_json(f"/changes/{ch['id']}")
    assert one["commit_url"] == ch["commit_url"]
    listed = m.get_json("/changes")["changes"]
    assert listed[0]["commit_url"] == ch["commit_url"]
    rows = m.get_json("/console?kind=ci")["rows"]
    assert rows[0]["commit_url"] == ch["commit_url"], rows[0]

    # Dee fixes it: green, nobody suspected.
    commit(work, "verdict", "pass\n", "fix the verdict",
           ("Dee Fixer", "dee@example.org"))
    green = wait_builds(4)[0]
    assert green["result"] == "SUCCESS", green
    b = m.get_json("/builders/unit")
    assert b["failing_since"] is None and b["suspects"] == [] and \
        b["failed_step"] is None, b
    assert m.get_json("/summary")["failing"] == []
    assert 'aria-label="unit: passing"' in \
        m.get("/badge/unit.svg").body.decode()



@pytest.mark.timeout(120)
def test_badge_and_summary_refuse_bad_input(farm):
    flag = farm.tmp / "make-it-fail"
    m = farm.master(config(flag))
    farm.slave(m, "s1")
    # Building: a continuous build runs and none finished yet.
    req = m.force("slow")
    m.wait_build_started(req)
    svg = m.get("/badge/slow.svg").body.decode()
    assert 'aria-label="slow: building"' in svg, svg
    assert "<title>slow: building</title>" in svg
    r = m.api_post(f"/requests/{req}/cancel")
    assert r.status in (200, 202), r

    for path, status, words in [
            ("/badge/nope.svg", 404, 'no such builder "nope"'),
            ("/badge/fragile.png", 400, "expected BUILDER.svg"),
            ("/badge/.svg", 400, "BUILDER.svg"),
            ("/badge/bad%20name.svg", 400, "invalid builder name"),
            ("/badge/fragile.svg?style=flat", 400,
             'unknown parameter "style"'),
            ("/api/v1/summary?builder=nope", 400,
             'builder="nope": no such builder in the config'),
            ("/api/v1/summary?builder=", 400, "no such builder"),
            ("/api/v1/summary?buildr=fragile", 400,
             'unknown parameter "buildr": this endpoint takes builder'),
    ]:
        r = m.get(path)
        assert r.status == status, (path, r)
        assert words in r.error_message(), (path, r.error_message())
    r = m.request("POST", "/badge/fragile.svg", body=b"")
    assert r.status == 405, r


# --- CORS ---

@pytest.mark.timeout(60)
def test_cors_for_configured_origins_only(farm):
    flag = farm.tmp / "make-it-fail"
    m = farm.master(config(flag, cors_origins=["https://dash.example.org",
                                               "http://127.0.0.1:9999"]))
    dash = {"Origin": "https://dash.example.org"}

    # The preflight a browser sends before a POST with a token.
    r = m.request("OPTIONS", "/api/v1/builders/fragile/force", headers={
        **dash, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status == 204, r
    assert r.headers["access-control-allow-origin"] == \
        "https://dash.example.org"
    assert r.headers["access-control-allow-methods"] == "POST"
    assert "Authorization" in r.headers["access-control-allow-headers"]
    assert r.headers["access-control-max-age"] == "600"
    assert "origin" in r.headers["vary"].lower()
    r = m.request("OPTIONS", "/api/v1/summary", headers=dash)
    assert r.status == 204 and \
        r.headers["access-control-allow-methods"] == "GET", r

    # Reads from the allowed origin carry the header, errors included.
    r = m.get("/api/v1/summary", headers=dash)
    assert r.status == 200
    assert r.headers["access-control-allow-origin"] == \
        "https://dash.example.org"
    r = m.get("/api/v1/builders/nope", headers=dash)
    assert r.status == 404
    assert r.headers["access-control-allow-origin"] == \
        "https://dash.example.org"
    assert m.get("/badge/fragile.svg", headers={
        "Origin": "http://127.0.0.1:9999"}).headers[
            "access-control-allow-origin"] == "http://127.0.0.1:9999"

    # A foreign origin gets no header and its preflight is refused.
    evil = {"Origin": "https://evil.example"}
    r = m.get("/api/v1/summary", headers=evil)
    assert r.status == 200 and "access-control-allow-origin" not in \
        r.headers, r.headers
    r = m.request("OPTIONS", "/api/v1/summary", headers={
        **evil, "Access-Control-Request-Method": "GET"})
    assert r.status == 403, r
    assert "https://evil.example may not call" in r.error_message()
    assert "cors_origins" in r.error_message()
    assert "access-control-allow-origin" not in r.headers
    # OPTIONS without an Origin is not a preflight; unknown paths are 404.
    r = m.request("OPTIONS", "/api/v1/summary")
    assert r.status == 405 and r.headers["allow"] == "GET", r
    r = m.request("OPTIONS", "/api/v1/nothing", headers=dash)
    assert r.status == 404, r


@pytest.mark.timeout(60)
def test_vary_origin_whenever_cors_is_configured(farm):
    """With cors_origins set, every API answer says it varies by Origin,
    whether the request's Origin is allowed, foreign or absent, cached
    answers (200 and 304) included: a shared cache must not serve one
    origin's answer to another. Without cors_origins nothing varies."""
    flag = farm.tmp / "make-it-fail"
    m = farm.master(config(flag, cors_origins=["https://dash.example.org"]))
    for headers in ({"Origin": "https://dash.example.org"},
                    {"Origin": "https://evil.example"}, {}):
        for _ in range(2):  # computed, then from the cache
            r = m.get("/api/v1/summary", headers=headers)
            assert r.status == 200, r
            assert "origin" in r.headers.get("vary", "").lower(), \
                (headers, r.headers)
        tag = r.headers["etag"]
        r = m.get("/api/v1/summary", headers={**headers,
                                              "If-None-Match": tag})
        assert r.status == 304, r
        assert "origin" in r.headers.get("vary", "").lower(), \
            (headers, r.headers)
    r = m.get("/api/v1/builders/nope", headers={"Origin": "https://x.example"})
    assert r.status == 404 and "origin" in r.headers.get("vary", "").lower()
    m.stop()
    plain = farm.master(config(flag), name="plain")
    r = plain.get("/api/v1/summary", headers={"Origin": "https://x.example"})
    assert r.status == 200 and "vary" not in r.headers, r.headers


@pytest.mark.timeout(60)
def test_cors_is_off_by_default_and_bad_origins_are_refused(farm):
    flag = farm.tmp / "make-it-fail"
    m = farm.master(config(flag))
    r = m.request("OPTIONS", "/api/v1/summary", headers={
        "Origin": "https://dash.example.org",
        "Access-Control-Request-Method": "GET"})
    assert r.status == 403, r
    r = m.get("/api/v1/summary", headers={"Origin": "https://x.example"})
    assert "access-control-allow-origin" not in r.headers

    path = farm.tmp / "bad.json"
    path.write_text(json.dumps(config(flag, cors_origins=[
        "https://ok.example.org", "https://dash.example.org/pages"],
        commit_url="https://git.example.org/commit/")))
    r = farm.run([TF_MASTER, "checkconfig", path])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert 'cors_origins: "https://dash.example.org/pages" is not an ' \
        'origin' in r.stderr, r.stderr
    assert "commit_url" in r.stderr and "{revision}" in r.stderr, r.stderr


# --- links to the pages ---

@pytest.mark.timeout(180)
def test_answers_mails_and_pages_link_the_status_pages(farm):
    flag = farm.tmp / "make-it-fail"
    out = farm.tmp / "sendmail-out"
    mail = {"from": "ci@example.org",
            "sendmail": [sys.executable, str(SENDMAIL), str(out)],
            "retry_initial_s": 1, "retry_max_s": 2}
    m = farm.master(config(flag, web_root=str(WEB), mail=mail))
    farm.slave(m, "s1")
    token = add_user(farm, m, "ann@example.org", "Ann Example")
    base = m.url

    r = m.api_post("/builders/fragile/force", {"reason": "links"})
    assert r.status == 201
    assert r.json()["page_url"] == f"{base}/#/builders/fragile"
    b = m.wait_request_done(r.json()["request_id"])
    bid = b["id"]
    assert b["page_url"] == f"{base}/#/builds/{bid}"
    assert b["url"] == f"{base}/api/v1/builds/{bid}"
    assert b["steps"][1]["log"]["page_url"] == f"{base}/#/builds/{bid}/steps/1"
    bl = m.get_json("/builders/fragile")
    assert bl["page_url"] == f"{base}/#/builders/fragile"
    assert bl["last_complete"]["page_url"] == f"{base}/#/builds/{bid}"
    assert m.get_json("/builders/fragile/builds")["builds"][0]["page_url"] \
        == f"{base}/#/builds/{bid}"
    assert m.get_json("/slaves/s1")["page_url"] == f"{base}/#/slaves/s1"
    req = m.get_json(f"/requests/{b['request_id']}")
    assert req["page_url"] == f"{base}/#/builds/{bid}", req
    s = m.get_json("/summary")
    assert s["page_url"] == f"{base}/#/"
    fr = [x for x in s["builders"] if x["name"] == "fragile"][0]
    assert fr["page_url"] == f"{base}/#/builders/fragile"
    assert fr["last"]["page_url"] == f"{base}/#/builds/{bid}"
    assert s["slaves"]["list"][0]["page_url"] == f"{base}/#/slaves/s1"
    wf = m.get_json("/waterfall")["builds"][0]
    assert wf["page_url"] == f"{base}/#/builds/{bid}"

    flag.write_text("fail")
    job = submit(m, token, ["fragile"], description="page links")
    assert job["page_url"] == f"{base}/#/jobs/{job['job_id']}"
    j = wait_job(m, job["job_id"])
    assert j["page_url"] == f"{base}/#/jobs/{job['job_id']}"
    jb = j["builders"][0]["build"]
    assert jb["page_url"] == f"{base}/#/builds/{jb['id']}"
    jreq = m.get_json(f"/requests/{j['builders'][0]['request_id']}")
    assert jreq["page_url"] == f"{base}/#/jobs/{job['job_id']}"
    row = m.get_json("/console")["rows"][0]
    assert row["page_url"] == f"{base}/#/jobs/{job['job_id']}"
    assert row["builds"]["fragile"]["page_url"] == \
        f"{base}/#/builds/{jb['id']}"
    # The page behind the link is served, and the badge beside the pages.
    page = m.get("/")
    assert page.status == 200 and b"<html" in page.body.lower()
    badge = m.get("/badge/fragile.svg")
    assert badge.status == 200 and b'aria-label="fragile: passing"' in \
        badge.body, badge

    # The try job's mail links the pages, not JSON.
    wait_for(lambda: len(list(out.glob("*.eml"))) == 1, 30,
             "the job's mail", farm)
    msg = email.message_from_bytes(sorted(out.glob("*.eml"))[0].read_bytes(),
                                   policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()
    assert f"{base}/#/jobs/{job['job_id']}" in text, text
    assert f"{base}/#/builds/{jb['id']}" in text, text
    assert "/api/v1/" not in text, text
    html = msg.get_body(("html",)).get_content()
    assert f'href="{base}/#/builds/{jb["id"]}"' in html, html


@pytest.mark.timeout(60)
def test_without_pages_page_url_is_null(farm):
    flag = farm.tmp / "make-it-fail"
    m = farm.master(config(flag))
    farm.slave(m, "s1")
    b = m.run_build("fragile")
    assert b["page_url"] is None and b["url"].endswith(f"/builds/{b['id']}")
    assert m.get_json("/builders/fragile")["page_url"] is None
    assert m.get_json("/summary")["page_url"] is None


@pytest.mark.timeout(60)
def test_builders_say_their_error_patterns_and_properties(farm):
    flag = farm.tmp / "make-it-fail"
    cfg = config(flag)
    cfg["builders"][1]["mail"] = {"error_patterns": ["^boom", "panic:"]}
    cfg["builders"][1]["force_properties"] = ["flavour", "sanitizer"]
    m = farm.master(cfg)
    by = {b["name"]: b for b in m.get_json("/builders")}
    # fragile has none of its own: the mail section's defaults.
    assert "error:" in by["fragile"]["error_patterns"], by["fragile"]
    assert by["fragile"]["force_properties"] == []
    assert by["slow"]["error_patterns"] == ["^boom", "panic:"]
    assert by["slow"]["force_properties"] == ["flavour", "sanitizer"]
    one = m.get_json("/builders/slow")
    assert one["error_patterns"] == ["^boom", "panic:"]


@pytest.mark.timeout(60)
def test_create_sets_web_root_to_the_pages(farm):
    d = farm.tmp / "created"
    r = farm.run([TF_MASTER, "create", d, "--port", "18010"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    cfg = json.loads((d / "master.json").read_text())
    web = Path(cfg["web_root"])
    assert (web / "index.html").is_file(), cfg
    assert f"  status pages: {web}\n" in r.stdout, r.stdout
