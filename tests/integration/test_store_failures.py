"""When a write group fails, nothing is acknowledged over it.

The master's test hook TF_TEST_STORE_FAIL (store/store_internal.h; honoured
by builds with test hooks, the debug and debugoptimized builds the suite
uses) makes the Nth write group holding a given operation fail: in the
writer ("store": TF_ESTORE, the group rolled back alone), or at submit
("full": the queue past its hard cap, TF_EFULL; "nomem": TF_ENOMEM). Each
test first checks the hook fired (the master logs it), so a build that
ignores the variable fails the test instead of passing it vacuously.

- A failed group of output mid-build: the master never acknowledges that
  chunk or any after it (the store's event chain refuses every later
  group of the build), resyncs (closes the link with "resync"), and the
  slave resends from its spool: the stored log is byte-exact and the
  build ends SUCCESS.
- A failed group creating a build: the build is dropped and its slave's
  slot freed, the request runs again (max_builds 1: a held slot would
  stall it for good).
- A failed group ending a build: it is kept and stored again a second
  later; the build ends once, and stays ended after a restart.
- One build whose rows break a constraint in a start batch (a row another
  writer put in the database holds its builder and number: a real sqlite
  UNIQUE failure, no hook): its batch-mates start and end SUCCESS with no
  retry charged; only the bad one is dropped, with the constraint in the
  log, and its request runs again.
"""

import sqlite3

import pytest

from tfharness import deterministic_bytes, sha256, steps_summary, wait_for


def _farm(farm, fail, steps, **cfg):
    config = {"name": "fail", "slaves": [{"name": "s1", "max_builds": 1}],
              "builders": [{"name": "b", "steps": steps}]}
    config.update(cfg)
    m = farm.master(config, log_level="info",
                    env={"TF_TEST_STORE_FAIL": fail})
    s = farm.slave(m, "s1", log_level="info")
    return m, s


def _hook_fired(m, what):
    wait_for(lambda: "test hook: failing group" in m.log_text(), 60,
             f"the test hook to fail a group holding {what}", m.farm)


def _connects(m, name):
    events = m.get_json(f"/slaves/{name}").get("events") or []
    return sum(1 for e in events if e.get("event") == "connected")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["store", "full", "nomem"])
def test_a_failed_output_group_is_never_acked_over(farm, mode):
    size = 6 * 1024 * 1024
    data = deterministic_bytes(size, seed=11)
    f = farm.tmp / "out.bin"
    f.write_bytes(data)
    m, s = _farm(farm, f"output:25:{mode}",
                 [{"name": "cat", "command": ["cat", str(f)]},
                  {"name": "after", "command": ["true"]}])
    b = m.run_build("b", timeout=180)
    _hook_fired(m, "output")
    log = m.log_text()
    assert "could not be stored" in log and "the last stored" in log, \
        "the master did not say it resyncs"
    assert "resync" in s.log_text(), "the slave was not told to resync"
    assert b["result"] == "SUCCESS", steps_summary(b)
    assert [st["result"] for st in b["steps"]] == ["SUCCESS", "SUCCESS"]
    assert b["steps"][0]["log"]["bytes"] == size, b["steps"][0]
    stored = m.step_log(b["id"], 0)
    assert len(stored) == size
    assert sha256(stored) == sha256(data), "the stored log differs"
    # The slave came back once more, to resend what was not stored.
    assert _connects(m, "s1") >= 2
    # Nothing was left behind: the build is over on both sides.
    assert m.get_json("/builders/b")["running"] == 0


@pytest.mark.timeout(180)
def test_a_failed_build_creation_frees_the_slave(farm):
    m, s = _farm(farm, "build_create:1",
                 [{"name": "hello", "command": ["echo", "hello"]}])
    req = m.force("b")
    b = m.wait_request_done(req, timeout=90)
    _hook_fired(m, "build_create")
    assert "its rows could not be stored" in m.log_text()
    assert b["result"] == "SUCCESS", steps_summary(b)
    r = m.request_info(req)
    assert r["retries"] == 1, r
    # The dropped build was never stored; the one that ran has its number.
    assert m.api_get(f"/builds/{b['id'] - 1}").status == 404
    assert b["number"] == 1, b
    # The slot is free: the next build runs too.
    b2 = m.run_build("b", timeout=60)
    assert b2["result"] == "SUCCESS" and b2["number"] == 2, b2
    assert m.get_json("/builders/b")["running"] == 0


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["store", "full"])
def test_a_failed_build_end_is_stored_again(farm, mode):
    m, s = _farm(farm, f"build_finish:1:{mode}",
                 [{"name": "hello", "command": ["echo", "hello"]}])
    req = m.force("b")
    b = m.wait_request_done(req, timeout=90)
    _hook_fired(m, "build_finish")
    assert "its end could not be stored" in m.log_text()
    assert b["result"] == "SUCCESS", steps_summary(b)
    m.restart()
    assert m.build(b["id"])["state"] == "finished"
    assert m.request_info(req)["state"] == "done"
    builds = m.get_json("/builders/b/builds")["builds"]
    assert len(builds) == 1, builds
    assert m.get_json("/builders/b")["running"] == 0


@pytest.mark.timeout(180)
def test_one_bad_build_fails_alone_in_its_start_batch(farm):
    n = 6
    step = [{"name": "hello", "command": ["echo", "hello"]}]

    def config(held):
        # Held: the builder needs a tag no slave has, so the requests wait
        # and are all released by one reload, into one scheduler pass.
        b = {"name": "b", "steps": step}
        if held:
            b["tags"] = ["held"]
        return {"name": "batch",
                "slaves": [{"name": "s%d" % i, "max_builds": 1}
                           for i in range(1, n + 1)],
                "builders": [b]}

    m = farm.master(config(held=True), log_level="info")
    if m.store:
        pytest.skip("the conflicting row is written with sqlite3")
    for i in range(1, n + 1):
        farm.slave(m, "s%d" % i, log_level="info")
    reqs = [m.force("b") for _ in range(n)]
    # Another writer takes b #3 first: the master's build numbered 3 in
    # the batch breaks UNIQUE(builder, number) when its rows are written.
    con = sqlite3.connect(m.db_path, timeout=30)
    with con:
        con.execute("INSERT INTO builds(id, builder, number, request_id, "
                    "state, created_ms) VALUES(900000, 'b', 3, 0, "
                    "'finished', 0)")
    con.close()
    m.write_config(config(held=False))
    m.sighup()
    builds = {r: m.wait_request_done(r, timeout=90) for r in reqs}
    log = m.log_text()
    assert "UNIQUE constraint failed: builds.builder, builds.number" in log
    assert "(b #3): its rows could not be stored" in log, log
    assert {b["result"] for b in builds.values()} == {"SUCCESS"}, builds
    retries = {r: m.request_info(r)["retries"] for r in reqs}
    bad = [r for r in reqs if retries[r]]
    assert len(bad) == 1 and retries[bad[0]] == 1, retries
    assert "a group of %d units failed: applying each alone" % n in log, log
    # The batch-mates kept their numbers; the bad one ran again after them.
    assert sorted(builds[r]["number"] for r in reqs if r not in bad) == \
        [1, 2, 4, 5, 6]
    assert builds[bad[0]]["number"] == 7, builds[bad[0]]
    assert m.get_json("/builders/b")["running"] == 0
