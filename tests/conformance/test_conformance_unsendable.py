"""Conformance: a request whose build_start the protocol cannot carry
(docs/protocol.md, "build_start"; issue 10's queue wedge). It must end at
once as EXCEPTION with the reason in the API, never reach a slave, never
block the requests behind it, and stay ended across a restart;
`tf-master checkconfig` refuses a builder that can never fit; a revision
a slave reports is checked before it is stored, and one stored before
that check existed cannot wedge a rebuild."""

import re
import sqlite3

import pytest

from scripted_slave import ScriptedSlave
from tfharness import TF_MASTER, steps_summary, wait_for

LIMIT = 1024 * 1024


def big_config():
    # Ten steps of 3 KB commands: about 31 KB, far below the cap alone.
    return {"name": "conf", "heartbeat_s": 2, "lost_after_s": 30,
            "slaves": [{"name": "hand"}],
            "builders": [
                {"name": "big", "slaves": ["hand"], "steps": [
                    {"name": f"s{i}", "command": "echo " + "c" * 3000}
                    for i in range(10)]},
                {"name": "src", "slaves": ["hand"],
                 "repository": "/nonexistent/repo.git", "branch": "main",
                 "steps": [{"name": "x", "command": "make"}]}]}


def huge_properties():
    # 250 properties of 4096 bytes: the API takes them (1 MiB body cap),
    # build_start cannot (about 1.06 MB with the steps).
    return {f"p{i:03d}": chr(ord("a") + i % 26) * 4096 for i in range(250)}


def test_a_request_over_the_cap_ends_exception_and_the_next_starts(farm):
    m = farm.master(big_config())
    big = m.force("big", properties=huge_properties())
    small = m.force("big")
    # Both wait for a slave; the first one used to block the second
    # forever ("cannot encode build_start ... over a size limit").
    ss = ScriptedSlave(m, "hand")
    ss.hello()
    bs = ss.recv_type("build_start", timeout=10)
    r = m.request_info(small)
    assert r["build_id"] == bs["build_id"], (r, bs["build_id"])

    req = m.request_info(big)
    assert req["state"] == "done" and req["result"] == "EXCEPTION", req
    b = m.build(req["build_id"])
    assert b["result"] == "EXCEPTION" and b["state"] == "finished", b
    assert b["slave"] is None, b
    assert b["text"].startswith(
        "the master cannot send this build to a slave: build_start would "
        "be "), b["text"]
    size = int(re.search(r"would be (\d+) bytes", b["text"]).group(1))
    assert size > LIMIT, b["text"]
    assert f"over the limit of {LIMIT} bytes" in b["text"], b["text"]
    assert steps_summary(b) == [(f"s{i}", "SKIPPED") for i in range(10)]
    assert all(s["text"] == "not run" for s in b["steps"]), b["steps"]

    # The small one runs normally; nothing of the big one reached a slave.
    last = ss.run_steps(bs["build_id"], bs["steps"])
    ss.wait_acked(bs["build_id"], last)
    assert m.wait_request_done(small, 20)["result"] == "SUCCESS"
    assert [s["build_id"] for s in ss.starts] == [bs["build_id"]]

    # A restart does not bring it back as pending.
    ss.close()
    m.restart()
    req = m.request_info(big)
    assert req["state"] == "done" and req["result"] == "EXCEPTION", req
    ss2 = ScriptedSlave(m, "hand")
    ss2.hello()
    got = ss2.quiet_for(1.5)
    assert not [x for x in got if x["type"] == "build_start"], got
    assert m.get_json("/builders/big")["pending"] == 0, \
        m.get_json("/builders/big")


def test_a_stored_bad_revision_cannot_wedge_a_rebuild(farm):
    m = farm.master(big_config())
    ss = ScriptedSlave(m, "hand")
    ss.hello()
    req = m.force("src")
    bs = ss.recv_type("build_start")
    bid = bs["build_id"]
    assert bs["steps"][0].get("builtin") == "source", bs["steps"][0]
    ss.step_started(bid, 0, "source")
    ss.step_finished(bid, 0, properties={"got_revision": "0123abcd"},
                     text="checked out 0123abcd")
    ss.step_started(bid, 1, "x")
    ss.step_finished(bid, 1)
    last = ss.build_finished(bid)
    ss.wait_acked(bid, last)
    assert m.wait_request_done(req, 20)["result"] == "SUCCESS"
    ss.close()

    # A value stored before slaves' revisions were checked (the decoder
    # refuses it now: test_conformance_link.py).
    m.stop()
    con = sqlite3.connect(m.db_path)
    con.execute("UPDATE builds SET got_revision = ? WHERE id = ?",
                ("--upload-pack=touch X", bid))
    con.commit()
    con.close()
    m.start()

    r = m.api_post(f"/builds/{bid}/rebuild")
    assert r.status in (200, 201, 202), r
    rebuilt = r.json()["request_id"]
    after = m.force("src")
    ss2 = ScriptedSlave(m, "hand")
    ss2.hello()
    bs2 = ss2.recv_type("build_start", timeout=10)
    assert m.request_info(after)["build_id"] == bs2["build_id"]
    assert bs2["source"]["revision"] == "", bs2["source"]
    req = wait_for(lambda: (lambda x: x["state"] == "done" and x)(
        m.request_info(rebuilt)), 10, "the rebuild to end", farm)
    assert req["result"] == "EXCEPTION", req
    text = m.build(req["build_id"])["text"]
    assert "build_start.source.revision" in text and \
        "is not a valid revision" in text, text


@pytest.mark.parametrize("what,builder,words", [
    ("long steps", {"name": "long", "steps": [
        {"name": f"s{i}", "command": "echo " + "y" * 1100}
        for i in range(999)]},
     ["builders[0].steps", "build_start would be",
      "over the limit of 1048576 bytes"]),
    ("1000 steps and a repository", {
        "name": "many", "repository": "/srv/repo.git",
        "steps": [{"name": f"s{i}", "command": "true"}
                  for i in range(1000)]},
     ["builders[0].steps", "1000 steps and the source step",
      "limit of 1000 steps"]),
])
def test_checkconfig_refuses_a_builder_whose_build_start_cannot_fit(
        farm, what, builder, words):
    m = farm.master({"name": "conf", "slaves": [{"name": "hand"}],
                     "builders": [builder]}, start=False)
    r = farm.run([TF_MASTER, "checkconfig", m.dir])
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    # And the master will not run with it.
    r = farm.run([TF_MASTER, "run", m.dir], timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])


def test_checkconfig_accepts_a_builder_just_under_the_cap(farm):
    """The check measures, it does not guess: 900 steps of 1 KB fit."""
    m = farm.master({"name": "conf", "slaves": [{"name": "hand"}],
                     "builders": [{"name": "fits", "steps": [
                         {"name": f"s{i}", "command": "echo " + "y" * 900}
                         for i in range(900)]}]}, start=False)
    r = farm.run([TF_MASTER, "checkconfig", m.dir])
    assert r.returncode == 0, r.stderr
