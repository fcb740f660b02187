"""Conformance: command modifiers, table-driven (docs/protocol.md, "Command
modifiers"). One table, modifier_cases.json, of (modifiers, output chunks
on stdout/stderr, exit status) -> (result, text, info, stats, warnings),
and three things that must agree with it over the same inputs:

1. modifiers_model.py, the rules written from the protocol page alone
   (the scripted slave's expectations);
2. the slave under test (tf-slave, or $TF_CONFORMANCE_SLAVE), running
   each case as a real step whose command writes the chunks in the
   table's order, pausing between them so the slave reads them apart;
3. the master: the scripted slave, given the same builder's build_start,
   must find the table's modifiers in it, and what it reports from the
   model is stored and served exactly as the table says.
"""

import json
import sys
from pathlib import Path

import pytest

import modifiers_model
from emit_output import chunks_of
from scripted_slave import ScriptedSlave
from test_conformance_slave import SlaveUnderTest

HERE = Path(__file__).resolve().parent
TABLE_PATH = HERE / "modifier_cases.json"
TABLE = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
CASES = TABLE["cases"]


def streams(case):
    chunks = chunks_of(case)
    return (b"".join(d for fd, d in chunks if fd == 1),
            b"".join(d for fd, d in chunks if fd == 2))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_model_gives_the_table(case):
    out, err = streams(case)
    assert modifiers_model.run(case["modifiers"], out, err,
                               case["exit"]) == case["expect"]


def step_name(i):
    return f"c{i:02d}"


def steps_config():
    """One step per case; the command writes the case's output."""
    steps = []
    for i, c in enumerate(CASES):
        st = {"name": step_name(i),
              "command": [sys.executable, str(HERE / "emit_output.py"),
                          str(TABLE_PATH), c["name"]],
              "timeout": 60}
        st.update(c["modifiers"])
        steps.append(st)
    return steps


def config():
    steps = steps_config()
    return {"name": "conf", "heartbeat_s": 2, "lost_after_s": 30,
            "slaves": [{"name": "s1"}, {"name": "hand"}],
            "builders": [{"name": "table", "slaves": ["s1"],
                          "steps": steps},
                         {"name": "table-hand", "slaves": ["hand"],
                          "steps": steps}]}


def served(step):
    """The table's expect fields of a step as the API serves it."""
    return {"result": step["result"], "text": step["text"],
            "info": step["info"], "stats": step["stats"],
            "warnings": step["warnings"]}


def mismatches(build):
    bad = []
    for i, c in enumerate(CASES):
        got = served(build["steps"][i])
        if got != c["expect"]:
            short = {k: (v[:200] + "..." if isinstance(v, str) and
                         len(v) > 200 else v) for k, v in got.items()}
            bad.append(f"{c['name']}: got {short}")
    return bad


@pytest.mark.timeout(240)
def test_slave_under_test_gives_the_table(farm):
    m = farm.master(config())
    SlaveUnderTest(farm, m, "s1").start()
    b = m.run_build("table", timeout=180)
    assert len(b["steps"]) == len(CASES)
    bad = mismatches(b)
    assert not bad, "\n".join(bad)


def protocol_form(mods):
    """The modifiers as build_start carries them: markers always there
    (default true), warnings as {regex, max} (max default 0)."""
    want = dict(mods)
    want["markers"] = mods.get("markers", True)
    w = mods.get("warnings")
    if w is not None:
        w = {"regex": w} if isinstance(w, str) else dict(w)
        w.setdefault("max", 0)
        want["warnings"] = w
    return want


@pytest.mark.timeout(120)
def test_scripted_slave_reports_the_table_through_the_master(farm):
    m = farm.master(config())
    ss = ScriptedSlave(m, "hand")
    ss.hello()
    m.wait_slave_connected("hand")
    req = m.force("table-hand")
    bs = ss.recv_type("build_start")
    bid = bs["build_id"]
    assert len(bs["steps"]) == len(CASES)
    for i, c in enumerate(CASES):
        st = bs["steps"][i]
        # Absent modifiers mean none: the same as {"markers": false}.
        assert st.get("modifiers", {"markers": False}) == \
            protocol_form(c["modifiers"]), c["name"]
        out, err = streams(c)
        got = modifiers_model.run(c["modifiers"], out, err, c["exit"])
        ss.step_started(bid, i, st["name"])
        for fd, data in chunks_of(c):
            for at in range(0, len(data), 65536):
                ss.output(bid, i, data[at:at + 65536],
                          stream=1 if fd == 1 else 2)
        extra = {k: got[k] for k in ("info", "stats", "warnings")
                 if got[k] not in (None, {})}
        ss.step_finished(bid, i, got["result"], c["exit"], text=got["text"],
                         **extra)
    last = ss.build_finished(bid)
    ss.wait_acked(bid, last, timeout=60)
    b = m.wait_request_done(req, 60)
    bad = mismatches(b)
    assert not bad, "\n".join(bad)
