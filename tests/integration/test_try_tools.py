"""tf-try completes the job (issue 12 point 6): `tf-try builders`, `-p
NAME=VALUE` properties checked by the master, `tf-try retry JOB
[--failed]` with the same patch and base, and the job line linking the
job's page. Real git repositories, a real master and slaves, and tf-try as
a committer runs it (exit status and output), as in test_try.py, whose
helpers these tests share.
"""

import re

import pytest

from test_try import (TF_TRY, add_user, explain, git, job_id_of, make_repos,
                      tf_try, try_config, wait_job_done)
from tfharness import REPO

pytestmark = pytest.mark.skipif(not TF_TRY.exists(),
                                reason=f"{TF_TRY} is not built")

FLAVOUR_STEP = {"name": "flavour",
                "command": "echo \"flavour=%(prop:flavour:-plain)s\""}


def farm_with(farm, up, **top):
    """b1 (check.sh, then prints the flavour property, which committers may
    set), b2 (check.sh) and ok (always passes)."""
    cfg = try_config(up, extra_builders=[
        {"name": "ok", "steps": [{"name": "check", "command": "true"}]}],
        **top)
    cfg["builders"][0]["steps"].append(FLAVOUR_STEP)
    cfg["builders"][0]["force_properties"] = ["flavour"]
    m = farm.master(cfg)
    for s in ("s1", "s2"):
        farm.slave(m, s)
    return m


@pytest.mark.timeout(120)
def test_builders_lists_state_last_build_and_properties(farm):
    up, work = make_repos(farm.tmp)
    m = farm_with(farm, up)
    b = m.run_build("b1")  # the base fails its check
    assert b["result"] == "FAILURE"

    r = tf_try(farm, m, work, "builders")
    assert r.returncode == 0, explain(r)
    lines = r.stdout.splitlines()
    assert re.match(r"^BUILDER +STATE +LAST BUILD +PROPERTIES \(-p\)$",
                    lines[0]), r.stdout
    rows = {ln.split()[0]: ln for ln in lines[1:]}
    assert sorted(rows) == ["b1", "b2", "ok"], r.stdout
    assert re.match(rf"^b1 +idle +#{b['number']} FAILURE since "
                    rf"#{b['number']} +flavour$", rows["b1"]), rows["b1"]
    assert re.match(r"^b2 +idle +none +none$", rows["b2"]), rows["b2"]
    # No token is needed; no URL is an error.
    r = tf_try(farm, m, work, "builders", url=False)
    assert r.returncode == 2 and "no master URL" in r.stderr, explain(r)
    r = tf_try(farm, m, work, "builders", "extra")
    assert r.returncode == 2 and "usage: tf-try builders" in r.stderr


@pytest.mark.timeout(180)
def test_properties_reach_the_build_or_are_refused(farm):
    up, work = make_repos(farm.tmp)
    m = farm_with(farm, up)
    token = add_user(farm, m, "ann@example.org", "Ann Example")
    (work / "verdict").write_text("pass\n")

    r = tf_try(farm, m, work, "-b", "b1", "-p", "flavour=spicy", "--wait",
               "--poll-ms", "200", token=token)
    assert r.returncode == 0, explain(r)
    job = m.get_json(f"/jobs/{job_id_of(r)}")
    build = m.build(job["builders"][0]["build"]["id"])
    assert build["properties"]["flavour"] == "spicy", build["properties"]
    assert b"flavour=spicy" in m.step_log(build["id"], 2)

    # b2 allows no property: the master refuses the whole job, and says
    # which property on which builder.
    r = tf_try(farm, m, work, "-b", "b1,b2", "-p", "flavour=spicy",
               token=token)
    assert r.returncode == 2, explain(r)
    assert "the master refused the job (HTTP 400): properties.flavour: " \
        "committers may not set this property on builder \"b2\" " \
        "(allowed: none)" in r.stderr, r.stderr
    assert len(m.get_json("/jobs")["jobs"]) == 1  # nothing queued

    for args, words in [
            (["-p", "flavour"], '-p wants NAME=VALUE, not "flavour"'),
            (["-p", "=x"], "-p wants NAME=VALUE"),
            (["-p", "bad name=1"], '"bad name" is not a property name'),
            (["-p", "a=1", "-p", "a=2"], "-p a is given twice"),
            (["-p", "a=" + "x" * 5000], "at most 4096 bytes"),
            (["list", "-p", "a=1"], "-p goes with submitting"),
    ]:
        r = tf_try(farm, m, work, "-b", "b1", *args, token=token)
        assert r.returncode == 2, (args, explain(r))
        assert words in r.stderr, (args, r.stderr)
    assert len(m.get_json("/jobs")["jobs"]) == 1


@pytest.mark.timeout(240)
def test_retry_reruns_the_failed_builders_with_the_same_patch(farm):
    up, work = make_repos(farm.tmp)
    m = farm_with(farm, up, web_root=str(REPO / "web"))
    token = add_user(farm, m, "bob@example.org", "Bob")
    (work / "verdict").write_text("still-broken\n")

    r = tf_try(farm, m, work, "-b", "b1,ok", "-m", "half right",
               token=token)
    assert r.returncode == 0, explain(r)
    first = job_id_of(r)
    # The job line links the job's page on a master that serves pages.
    assert f"job {first}: {m.url}/#/jobs/{first}\n" in r.stdout, r.stdout
    j1 = wait_job_done(m, first)
    res = {b["name"]: b["build"]["result"] for b in j1["builders"]}
    assert res == {"b1": "FAILURE", "ok": "SUCCESS"}, res

    # Outside the work tree: retry needs no git, only the master.
    r = tf_try(farm, m, farm.tmp, "retry", str(first), "--failed",
               token=token)
    assert r.returncode == 0, explain(r)
    second = job_id_of(r)
    assert second != first
    assert re.search(r"^  b1: request \d+", r.stdout, re.M), r.stdout
    assert "  ok:" not in r.stdout, r.stdout
    j2 = wait_job_done(m, second)
    assert [b["name"] for b in j2["builders"]] == ["b1"]
    assert j2["base_revision"] == j1["base_revision"]
    assert j2["patch"]["sha256"] == j1["patch"]["sha256"], (j1, j2)
    assert j2["description"] == f"retry of job {first}: half right"
    b1 = m.build(j2["builders"][0]["build"]["id"])
    assert b1["result"] == "FAILURE"
    assert b"verdict: still-broken" in m.step_log(b1["id"], 1)

    # Without --failed: every builder again, and --wait works as for a
    # submission (exit 1: a build failed).
    r = tf_try(farm, m, farm.tmp, "retry", str(first), "--wait",
               "--poll-ms", "200", token=token)
    assert r.returncode == 1, explain(r)
    j3 = m.get_json(f"/jobs/{job_id_of(r)}")
    assert sorted(b["name"] for b in j3["builders"]) == ["b1", "ok"]

    # Nothing failed: nothing to retry with --failed.
    (work / "verdict").write_text("pass\n")
    r = tf_try(farm, m, work, "-b", "b1", "--wait", "--poll-ms", "200",
               token=token)
    assert r.returncode == 0, explain(r)
    green = job_id_of(r)
    njobs = len(m.get_json("/jobs")["jobs"])
    r = tf_try(farm, m, work, "retry", str(green), "--failed", token=token)
    assert r.returncode == 2, explain(r)
    assert "nothing to retry: no builder of the job failed" in r.stderr
    assert len(m.get_json("/jobs")["jobs"]) == njobs

    for args, words, code in [
            (["retry", "9999"], f"there is no job 9999 on {m.url}/", 2),
            (["retry"], "usage: tf-try retry JOB [--failed]", 2),
            (["retry", "x"], "usage: tf-try retry JOB [--failed]", 2),
            (["list", "--failed"], "--failed goes with tf-try retry JOB", 2),
    ]:
        r = tf_try(farm, m, work, *args, token=token)
        assert r.returncode == code, (args, explain(r))
        assert words in r.stderr, (args, r.stderr)
    # retry needs a token (it submits a job).
    r = tf_try(farm, m, work, "retry", str(first))
    assert r.returncode == 2 and "token" in r.stderr, explain(r)
    git(work, "checkout", "-q", "verdict")


@pytest.mark.timeout(120)
def test_wait_and_status_link_the_pages_when_the_master_serves_them(farm):
    """Issue 12 point 5 in tf-try's tables: on a master with pages, the
    summary after --wait, `status` and a reused builder's line link the
    build's page (the JSON stays one `url:` line away in `status`); the
    failing step's tail still names its raw log, which curl can fetch."""
    up, work = make_repos(farm.tmp)
    m = farm_with(farm, up, web_root=str(REPO / "web"))
    token = add_user(farm, m, "ann@example.org", "Ann")
    (work / "verdict").write_text("pass\n")
    r = tf_try(farm, m, work, "-b", "ok,b2", "--wait", token=token)
    assert r.returncode == 0, explain(r)
    job = job_id_of(r)
    j = m.get_json(f"/jobs/{job}")
    ok = [b for b in j["builders"] if b["name"] == "ok"][0]["build"]
    assert re.search(rf"^  ok +SUCCESS +\S.* +s[12] +{re.escape(m.url)}/#/"
                     rf"builds/{ok['id']}$", r.stdout, re.M), r.stdout
    assert "/api/v1/builds/" not in r.stdout, r.stdout

    r = tf_try(farm, m, work, "status", str(job))
    assert r.returncode == 0, explain(r)
    assert f"  url:         {m.url}/api/v1/jobs/{job}\n" in r.stdout
    assert f"  page:        {m.url}/#/jobs/{job}\n" in r.stdout, r.stdout
    assert re.search(rf"^  ok +done +- +s[12] +SUCCESS +{re.escape(m.url)}"
                     rf"/#/builds/{ok['id']}$", r.stdout, re.M), r.stdout

    # The same request again is answered from that build: its page.
    r = tf_try(farm, m, work, "-b", "ok", "--wait", token=token)
    assert r.returncode == 0, explain(r)
    assert f"passed there: {m.url}/#/builds/{ok['id']}\n" in r.stdout, \
        r.stdout

    # A failing step's tail names the raw log.
    (work / "verdict").write_text("broken\n")
    r = tf_try(farm, m, work, "-b", "b2", "--wait", "--tail", "1",
               token=token)
    assert r.returncode == 1, explain(r)
    assert re.search(rf"^b2: step check ended FAILURE; the last 1 line of "
                     rf"its log \({re.escape(m.url)}/api/v1/builds/\d+/"
                     rf"steps/1/log\):$", r.stdout, re.M), r.stdout
    assert re.search(rf"^  b2 +FAILURE .* {re.escape(m.url)}/#/builds/\d+$",
                     r.stdout, re.M), r.stdout


@pytest.mark.timeout(180)
def test_reuse_needs_the_same_properties(farm):
    """Issue 12 point 7 with properties: the same patch, base and -p is
    answered from the passed build; another value of the property is a
    different request and builds."""
    up, work = make_repos(farm.tmp)
    m = farm_with(farm, up)
    token = add_user(farm, m, "ann@example.org", "Ann")
    (work / "verdict").write_text("pass\n")

    def run(flavour):
        r = tf_try(farm, m, work, "-b", "b1", "-p", f"flavour={flavour}",
                   "--wait", "--poll-ms", "200", token=token)
        assert r.returncode == 0, explain(r)
        return r, m.get_json(f"/jobs/{job_id_of(r)}")["builders"][0]

    _, first = run("spicy")
    assert not first["reused"], first
    bid = first["build"]["id"]
    assert b"flavour=spicy" in m.step_log(bid, 2)
    r, again = run("spicy")
    assert again["reused"] and again["build"]["id"] == bid, again
    assert f"b1: reused build {bid} (SUCCESS)" in r.stdout, r.stdout
    r, other = run("mild")
    assert not other["reused"] and other["build"]["id"] != bid, other
    assert "reused" not in r.stdout, r.stdout
    assert b"flavour=mild" in m.step_log(other["build"]["id"], 2)
