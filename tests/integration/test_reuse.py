"""Result reuse (issue 12, point 7): a try request whose builder, base
revision (a commit id), patch, tests and properties match a build that
passed is answered from that build, marked reused with a link to it, and
nothing runs; unless the job says `reuse: false` (`tf-try --no-reuse`).
A failed build, other tests, another patch or a base given as a ref are
never reused. Real master, slaves, git repositories and tf-try."""

import base64
import re

import pytest
from tfharness import wait_for

from test_try import (add_user, explain, git, job_id_of, make_repos,
                      start_farm, tf_try, wait_job_done)


def builds_of(m, builder):
    return [b["id"] for b in m.get_json(f"/builders/{builder}/builds")
            ["builds"]]


def submit(m, token, builders, patch, **fields):
    body = {"builders": builders,
            "patch": base64.b64encode(patch).decode()}
    body.update(fields)
    return m.request("POST", "/api/v1/jobs", body=body, token=token)


@pytest.mark.timeout(180)
def test_an_identical_passed_request_is_answered_from_its_build(farm):
    up, work = make_repos(farm.tmp)
    m = start_farm(farm, up)
    token = add_user(farm, m, "ann@example.org", "Ann Example")
    base = git(work, "rev-parse", "origin/main")
    (work / "verdict").write_text("pass\n")

    r = tf_try(farm, m, work, "-b", "b1", "--wait", "--poll-ms", "200",
               token=token)
    assert r.returncode == 0, explain(r)
    first = m.get_json(f"/jobs/{job_id_of(r)}")
    original = first["builders"][0]["build"]["id"]
    assert first["builders"][0]["reused"] is False, first
    before = builds_of(m, "b1")

    # The same patch on the same base: answered at once from that build.
    r = tf_try(farm, m, work, "-b", "b1", "--wait", "--poll-ms", "200",
               token=token)
    assert r.returncode == 0, explain(r)
    job = job_id_of(r)
    assert re.search(rf"^  b1: request \d+, answered from build {original} "
                     r"\(reused\)$", r.stdout, re.M), r.stdout
    assert (f"b1: reused build {original} (SUCCESS): the same base, patch, "
            f"tests and properties passed there: {m.url}/api/v1/builds/"
            f"{original}\n") in r.stdout, r.stdout
    assert f"job {job}: SUCCESS (every build passed)" in r.stdout, r.stdout
    j = m.get_json(f"/jobs/{job}")
    assert j["state"] == "finished" and j["result"] == "SUCCESS", j
    entry = j["builders"][0]
    assert entry["reused"] is True and entry["state"] == "done", entry
    assert entry["build"]["id"] == original, entry
    assert builds_of(m, "b1") == before, "a reused request ran a build"
    req = m.get_json(f"/requests/{entry['request_id']}")
    assert req["state"] == "done" and req["build_id"] == original, req

    # --no-reuse runs it again.
    r = tf_try(farm, m, work, "-b", "b1", "--wait", "--poll-ms", "200",
               "--no-reuse", token=token)
    assert r.returncode == 0, explain(r)
    again = m.get_json(f"/jobs/{job_id_of(r)}")["builders"][0]
    assert again["reused"] is False and again["build"]["id"] not in before, \
        again
    assert "reused" not in r.stdout, r.stdout

    # Other tests: not the same request.
    r = tf_try(farm, m, work, "-b", "b1", "--test", "unit", "--wait",
               "--poll-ms", "200", token=token)
    assert r.returncode == 0, explain(r)
    assert m.get_json(f"/jobs/{job_id_of(r)}")["builders"][0]["reused"] \
        is False

    # The base as a ref (it moves): never reused, through the API too.
    got = m.request("GET", f"/api/v1/patches/{first['patch']['sha256']}",
                    token=token)
    assert got.status == 200, got
    patch = got.body
    resp = submit(m, token, ["b1"], patch, base_revision="main")
    assert resp.status == 201, resp
    assert resp.json()["requests"][0]["reused"] is False, resp.json()
    wait_job_done(m, resp.json()["job_id"])
    # The same patch bytes on the commit id are reused, the answer says
    # which build.
    resp = submit(m, token, ["b1"], patch, base_revision=base)
    assert resp.status == 201, resp
    rq = resp.json()["requests"][0]
    assert rq["reused"] is True and rq["position"] is None, rq
    assert rq["build"]["url"] == f"{m.url}/api/v1/builds/{rq['build']['id']}"


@pytest.mark.timeout(120)
def test_a_failed_build_is_never_reused_and_reuse_must_be_a_bool(farm):
    up, work = make_repos(farm.tmp)
    m = start_farm(farm, up)
    token = add_user(farm, m, "ann@example.org", "Ann Example")
    (work / "verdict").write_text("still broken\n")
    ids = []
    for _ in range(2):
        r = tf_try(farm, m, work, "-b", "b1", "--wait", "--poll-ms", "200",
                   token=token)
        assert r.returncode == 1, explain(r)
        entry = m.get_json(f"/jobs/{job_id_of(r)}")["builders"][0]
        assert entry["reused"] is False, entry
        ids.append(entry["build"]["id"])
    assert ids[0] != ids[1], ids
    resp = submit(m, token, ["b1"], b"", reuse="yes")
    assert resp.status == 400 and \
        resp.error_message() == "reuse: expected true or false", resp
    assert m.get_json("/jobs")["jobs"][0]["id"] == job_id_of(r)


def reload(farm, m, cfg):
    """Writes cfg and SIGHUPs m; waits for the reload to be logged."""
    n = m.log_text().count("config reloaded")
    m.write_config(cfg)
    m.sighup()
    wait_for(lambda: m.log_text().count("config reloaded") > n, 20,
             "the config reload", farm)


@pytest.mark.timeout(240)
def test_a_change_to_what_the_builder_runs_is_never_answered_by_old_builds(
        farm):
    """The reuse key holds the builder's recipe (its steps, properties,
    repository and branch as the config makes them): after a reload that
    changes the steps, the same patch runs again; a reload that changes
    nothing the builder runs (its priority) keeps reusing."""
    up, work = make_repos(farm.tmp)
    m = start_farm(farm, up)
    token = add_user(farm, m, "ann@example.org", "Ann Example")
    (work / "verdict").write_text("pass\n")

    def run():
        r = tf_try(farm, m, work, "-b", "b1", "--wait", "--poll-ms", "200",
                   token=token)
        assert r.returncode == 0, explain(r)
        return m.get_json(f"/jobs/{job_id_of(r)}")["builders"][0]

    first = run()
    assert first["reused"] is False, first
    second = run()
    assert second["reused"] is True, second
    assert second["build"]["id"] == first["build"]["id"], second

    # Not what runs: the priority. The recipe stays, reuse goes on.
    cfg = m.config
    cfg["builders"][0]["priority"] = 5
    reload(farm, m, cfg)
    third = run()
    assert third["reused"] is True, third
    assert third["build"]["id"] == first["build"]["id"], third

    # The steps change: the old build is no answer; the new one runs and
    # is then the answer for the new steps.
    cfg["builders"][0]["steps"].append({"name": "more",
                                        "command": "echo more checks"})
    reload(farm, m, cfg)
    fourth = run()
    assert fourth["reused"] is False, fourth
    assert fourth["build"]["id"] != first["build"]["id"], fourth
    steps = m.get_json(f"/builds/{fourth['build']['id']}")["steps"]
    assert [s["name"] for s in steps][-1] == "more", steps
    fifth = run()
    assert fifth["reused"] is True, fifth
    assert fifth["build"]["id"] == fourth["build"]["id"], fifth

    # A changed command in a step (same names) runs again too, and so does
    # a changed builder property.
    cfg["builders"][0]["steps"][-1]["command"] = "echo other checks"
    reload(farm, m, cfg)
    sixth = run()
    assert sixth["reused"] is False, sixth
    cfg["builders"][0]["properties"] = {"flavour": "debug"}
    reload(farm, m, cfg)
    seventh = run()
    assert seventh["reused"] is False, seventh
    assert len({first["build"]["id"], fourth["build"]["id"],
                sixth["build"]["id"], seventh["build"]["id"]}) == 4
