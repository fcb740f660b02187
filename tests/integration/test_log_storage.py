"""Compressed log storage end to end (issue 13): a real master and slave
store a step's output as sealed zstd blocks plus an open tail, and the log
endpoint answers byte-exact whatever the range, while the step runs and
after; a database from before compressed logs (schema version 5, its
schema as the previous tf-master made it) is upgraded by the new master,
reads back byte-exact at once and after the master has sealed it; a
corrupt block answers an error for its range, logged, and never wrong
bytes, while the rest of the log still reads."""

import re
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from tfharness import (REPO, sha256, shared_pg_cluster, steps_summary,
                       wait_for)

sys.path.insert(0, str(REPO / "tests" / "bench"))
import compilerlog  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BLOCK = 1024 * 1024  # store/logblock.h, TF_LOGBLOCK_TARGET


def config(builders):
    return {"name": "logs", "heartbeat_s": 2, "lost_after_s": 6,
            "slaves": [{"name": "s1"}], "builders": builders}


def db_rows(m, sql, *args):
    """Rows of sql on the master's database, on either engine (integer
    arguments and columns: on PostgreSQL through psql)."""
    if m.store:
        c = shared_pg_cluster()
        for a in args:
            assert isinstance(a, int), a
            sql = sql.replace("?", str(a), 1)
        sql = re.sub(r"\boffset\b", '"offset"', sql)
        out = c.psql(sql, db=c.dbname(m.store))
        return [tuple(None if v == "" else int(v) for v in line.split("|"))
                for line in out.splitlines()]
    con = sqlite3.connect(f"file:{m.db_path}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def skip_on_postgresql(m, why):
    if m.store:
        pytest.skip(f"sqlite only: {why}")


def compiler_log(farm, mib, seed=13):
    path = farm.tmp / f"compiler-{mib}.log"
    compilerlog.generate(path, int(mib * 1024 * 1024), seed)
    return path, path.read_bytes()


def check_ranges(m, build_id, data, step=0):
    """The whole log, tails, ranges across block ends, by Range and by
    start/end: all byte-exact."""
    path = f"/builds/{build_id}/steps/{step}/log"
    n = len(data)
    r = m.api_get(path, timeout=120)
    assert r.status == 200 and r.headers.get("x-log-size") == str(n), r
    assert sha256(r.body) == sha256(data), "the stored log differs"
    for lo, hi in [(n - 65536, n), (n - 1, n), (0, 1), (BLOCK - 5, BLOCK + 5),
                   (BLOCK * 2 - 100, BLOCK * 3 + 100), (12345, 400000),
                   (n // 2, n // 2 + 300000)]:
        lo, hi = max(0, lo), min(n, hi)
        r = m.api_get(path, headers={"Range": f"bytes={lo}-{hi - 1}"})
        assert r.status == 206 and r.body == data[lo:hi], (lo, hi, r)
        r = m.api_get(path + f"?start={lo}&end={hi}")
        assert r.status == 206 and r.body == data[lo:hi], (lo, hi, r)
    r = m.api_get(path, headers={"Range": "bytes=-65536"})
    assert r.status == 206 and r.body == data[-65536:], r


@pytest.mark.timeout(240)
def test_logs_are_stored_compressed_and_read_back_exactly(farm):
    path, data = compiler_log(farm, 6)
    # Not a multiple of the block size: a block can be sealed as soon as
    # it holds exactly BLOCK bytes, so a half of exactly 3 blocks could
    # be all sealed with no open tail left (seen under load).
    half = len(data) // 2 + 1000
    # The first half's last 100 bytes come alone, a moment later: a block
    # is sealed from whole chunks once they reach its target size, so a
    # half written at once could end exactly on a sealed block and leave
    # no open tail to read (seen once in a full run).
    first = farm.tmp / "first.log"
    first.write_bytes(data[:half - 100])
    last = farm.tmp / "last.log"
    last.write_bytes(data[half - 100:half])
    rest = farm.tmp / "rest.log"
    rest.write_bytes(data[half:])
    gate = farm.tmp / "gate"
    m = farm.master(config([{"name": "cc", "steps": [
        {"name": "compile", "command":
            f"cat {first}; sleep 0.3; cat {last}; "
            f"while [ ! -e {gate} ]; do sleep 0.05; done; "
            f"cat {rest}"}]}]), log_level="info")
    farm.slave(m, "s1", log_level="info")
    req = m.force("cc")
    bid = m.wait_build_started(req)
    m.wait_step_running(bid, 0, min_bytes=half)
    wait_for(lambda: db_rows(m, "SELECT log_bytes FROM steps WHERE "
                                "build_id = ?", bid) == [(half,)],
             30, "the first half to be stored", farm)

    # Running: sealed blocks and an open tail, both read through the API.
    sealed, nbytes = db_rows(m, "SELECT log_sealed, log_bytes FROM steps "
                                "WHERE build_id = ?", bid)[0]
    assert nbytes == half and half - BLOCK < sealed < half, (sealed, half)
    assert db_rows(m, "SELECT count(*) FROM log_chunks WHERE build_id = ?",
                   bid)[0][0] > 0
    check_ranges(m, bid, data[:half])

    gate.write_text("go")
    b = m.wait_request_done(req, timeout=120)
    assert b["result"] == "SUCCESS", steps_summary(b)
    # Ended: all of it sealed, no chunk left, a few percent of the raw size.
    assert db_rows(m, "SELECT count(*) FROM log_chunks")[0][0] == 0
    raw, stored, blocks = db_rows(
        m, "SELECT sum(raw_len), sum(length(data)), count(*) FROM log_blocks "
           "WHERE build_id = ?", b["id"])[0]
    assert raw == len(data) and blocks >= len(data) // BLOCK, (raw, blocks)
    assert stored <= 0.08 * raw, f"stored {stored} of {raw} bytes"
    check_ranges(m, b["id"], data)

    # And after a restart.
    m.restart()
    check_ranges(m, b["id"], data)


def make_v5_database(db, logs):
    """A database of schema version 5 as the previous tf-master made it
    (fixtures/schema_v5.sql is its schema, dumped from that binary's
    database), holding builds whose logs are uncompressed chunks.
    logs: {build_id: (bytes, finished)}."""
    con = sqlite3.connect(db)
    con.executescript((FIXTURES / "schema_v5.sql").read_text())
    con.execute("PRAGMA user_version = 5")
    con.execute("INSERT INTO builders(name, active) VALUES('old', 1)")
    seq = 1
    for bid, (data, finished) in logs.items():
        con.execute("INSERT INTO build_requests(id, builder, state, reason, "
                    "submitted_ms, build_id) VALUES(?, 'old', ?, 'test', 1, "
                    "?)", (bid, "done" if finished else "running", bid))
        first = seq
        lines = 0
        for off in range(0, len(data), 16384):
            chunk = data[off:off + 16384]
            con.execute("INSERT INTO log_chunks(build_id, step, offset, seq, "
                        "stream, line, data) VALUES(?, 0, ?, ?, 1, ?, ?)",
                        (bid, off, seq, lines, chunk))
            lines += chunk.count(b"\n")
            seq += 1
        con.execute("INSERT INTO builds(id, builder, number, request_id, "
                    "slave, state, result, created_ms, started_ms, "
                    "finished_ms, last_seq, nsteps) VALUES(?, 'old', ?, ?, "
                    "'s1', 'finished', 0, 1, 1, 2, ?, 1)",
                    (bid, bid, bid, seq - first))
        con.execute("INSERT INTO steps(build_id, idx, name, state, result, "
                    "started_ms, finished_ms, log_bytes, log_lines) "
                    "VALUES(?, 0, 'compile', 'done', 0, 1, 2, ?, ?)",
                    (bid, len(data), lines))
    con.commit()
    con.close()


@pytest.mark.timeout(240)
def test_an_old_database_reads_back_exactly_after_the_upgrade(farm):
    _, big = compiler_log(farm, 3, seed=5)
    small = b"line one\n\x00\xff binary\nno newline at end"
    m = farm.master(config([{"name": "old", "steps": [
        {"name": "compile", "command": ["true"]}]}]), start=False,
        log_level="info")
    skip_on_postgresql(m, "a schema-5 sqlite file upgraded in place (a "
                          "PostgreSQL database starts at the current schema)")
    make_v5_database(m.db_path, {1: (big, True), 2: (small, True)})
    assert db_rows(m, "PRAGMA user_version")[0][0] == 5
    assert db_rows(m, "SELECT count(*) FROM sqlite_master WHERE name = "
                      "'builds_by_builder'")[0][0] == 1
    m.start()
    assert db_rows(m, "PRAGMA user_version")[0][0] >= 8
    # Schema 12 dropped the index that duplicated UNIQUE(builder, number).
    assert db_rows(m, "SELECT count(*) FROM sqlite_master WHERE name = "
                      "'builds_by_builder'")[0][0] == 0
    # At once, whatever the master has sealed yet.
    check_ranges(m, 1, big)
    assert m.step_log(2, 0) == small
    # The master seals old logs while idle, a block at a time.
    wait_for(lambda: db_rows(m, "SELECT count(*) FROM log_chunks")[0][0] == 0,
             60, "the old logs to be sealed", m.farm)
    assert db_rows(m, "SELECT log_sealed FROM steps WHERE build_id = 1") == \
        [(len(big),)]
    assert db_rows(m, "SELECT sum(raw_len) FROM log_blocks "
                      "WHERE build_id = 1") == [(len(big),)]
    check_ranges(m, 1, big)
    assert m.step_log(2, 0) == small
    r = m.api_get("/builds/1")
    assert r.status == 200 and r.json()["steps"][0]["log"]["bytes"] == \
        len(big), r
    m.restart()
    check_ranges(m, 1, big)


@pytest.mark.timeout(180)
def test_a_corrupt_block_answers_an_error_never_wrong_bytes(farm):
    path, data = compiler_log(farm, 3, seed=7)
    m = farm.master(config([{"name": "cc", "steps": [
        {"name": "compile", "command": ["cat", str(path)]}]}]),
        log_level="info")
    farm.slave(m, "s1", log_level="info")
    b = m.run_build("cc", timeout=120)
    assert b["result"] == "SUCCESS", steps_summary(b)
    blocks = db_rows(m, "SELECT offset, raw_len FROM log_blocks "
                        "WHERE build_id = ? ORDER BY offset", b["id"])
    assert len(blocks) >= 3, blocks
    off, raw = blocks[1]
    m.stop()
    if m.store:
        c = shared_pg_cluster()
        c.psql("UPDATE log_blocks SET data = substr(data, 1, length(data) "
               "/ 2) || '\\x5a'::bytea || substr(data, length(data) / 2 + 2) "
               f"WHERE build_id = {b['id']} AND \"offset\" = {off}",
               db=c.dbname(m.store))
    else:
        con = sqlite3.connect(m.db_path)
        con.execute("UPDATE log_blocks SET data = substr(data, 1, "
                    "length(data) / 2) || x'5a' || substr(data, "
                    "length(data) / 2 + 2) WHERE build_id = ? AND "
                    "offset = ?", (b["id"], off))
        con.commit()
        con.close()
    m.start()
    path = f"/builds/{b['id']}/steps/0/log"

    # A range inside the damaged block, one running into it, from its
    # start: a clear error, no bytes.
    for lo, hi in [(off + 100, off + 200), (off - 50, off + 50),
                   (off, off + raw - 1)]:
        r = m.api_get(path, headers={"Range": f"bytes={lo}-{hi}"})
        assert r.status == 500, (lo, hi, r)
        assert "damaged" in r.error_message(), r
    wait_for(lambda: f"the log block at bytes {off}-{off + raw} is corrupt"
             in m.log_text(), 10, "the corrupt block to be logged", farm)
    # The whole log: the stream stops short before the damage rather than
    # sending wrong bytes (the first piece is good, so the status is 200).
    try:
        r = m.api_get(path, timeout=60)
        body = r.body
    except Exception:  # the connection is cut: no body at all
        body = b""
    assert len(body) < len(data)
    assert data.startswith(body), "bytes before the damage must be right"
    # Around it, the log reads as before.
    r = m.api_get(path, headers={"Range": f"bytes=0-{off - 1}"})
    assert r.status == 206 and r.body == data[:off], r
    r = m.api_get(path, headers={"Range": "bytes=-65536"})
    assert r.status == 206 and r.body == data[-65536:], r
    assert m.running()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_many_slow_log_readers_hold_bounded_memory(farm):
    """Each log stream unpacks the sealed block it reads; N clients that
    stall in the middle of big logs must not each keep their block
    (1 MiB, up to 16 MiB) unpacked: the blocks kept between pieces are
    capped for all streams together (api/api.c, LOG_KEEP_MAX), and a
    stream over the cap unpacks its block again for its next piece. The
    figure: the master's RSS growth with N stalled streams. Meanwhile a
    full read of the same log is byte-exact."""
    import socket
    n_streams = 100
    path, data = compiler_log(farm, 8, seed=5)
    m = farm.master(config([{"name": "cc", "steps": [
        {"name": "out", "command": ["cat", str(path)]}]}]), log_level="info")
    farm.slave(m, "s1", log_level="info")
    b = m.run_build("cc", timeout=120)
    assert b["result"] == "SUCCESS", steps_summary(b)
    wait_for(lambda: db_rows(m, "SELECT count(*) FROM log_chunks")[0][0] == 0,
             30, "the log to be sealed", farm)
    log = f"/api/v1/builds/{b['id']}/steps/0/log"
    assert sha256(m.get(log, timeout=120).body) == sha256(data)
    time.sleep(0.5)
    before = rss_kib(m.proc.pid)
    socks = []
    try:
        for i in range(n_streams):
            s = socket.create_connection(("127.0.0.1", m.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            # Each starts in another block, so none shares a piece.
            start = (i % 8) * BLOCK + 1000
            s.sendall(f"GET {log}?start={start} HTTP/1.1\r\nHost: x\r\n\r\n"
                      .encode())
            socks.append(s)
        for s in socks:
            assert s.recv(1024).startswith(b"HTTP/1.1 206"), "no answer"
        time.sleep(2)
        during = rss_kib(m.proc.pid)
        # Another client reads it all while they stall.
        assert sha256(m.get(log, timeout=120).body) == sha256(data)
    finally:
        for s in socks:
            s.close()
    grown_mib = (during - before) / 1024
    print(f"\nmaster RSS: {before / 1024:.1f} MiB before, "
          f"{during / 1024:.1f} MiB with {n_streams} stalled log streams "
          f"(+{grown_mib:.1f} MiB)")
    # Measured on 100 streams: +130 MiB when each kept its block; +77 to
    # +84 MiB with the 16 MiB cap; +55 MiB with no block kept at all (each
    # stream's piece buffer and the answer being written, 2 x 256 KiB).
    # Under AddressSanitizer (quarantine, shadow memory) resident sizes
    # mean nothing; the streams and the exact read are still checked.
    from test_limits import sanitized
    if not sanitized(m.proc.pid):
        assert grown_mib < 105, \
            f"+{grown_mib:.1f} MiB for {n_streams} streams"
    assert m.get("/api/v1/master").status == 200


@pytest.mark.timeout(120)
def test_logs_with_holes_are_warned_once_per_walk_not_once_per_step(farm):
    """The idle sealing walk skips a step whose stored output has a hole;
    a store of many such steps (the API bench's has a million) must not
    get one warning line per step: one line per walk, with the count."""
    m = farm.master(config([{"name": "old", "steps": [
        {"name": "compile", "command": ["true"]}]}]), start=False,
        log_level="info")
    skip_on_postgresql(m, "a schema-5 sqlite file made by hand")
    holes = 300
    make_v5_database(m.db_path, {1: (b"a good log\n" * 100, True)})
    con = sqlite3.connect(m.db_path)
    for bid in range(2, holes + 2):
        con.execute("INSERT INTO build_requests(id, builder, state, reason, "
                    "submitted_ms, build_id) VALUES(?, 'old', 'done', "
                    "'test', 1, ?)", (bid, bid))
        con.execute("INSERT INTO builds(id, builder, number, request_id, "
                    "slave, state, result, created_ms, started_ms, "
                    "finished_ms, last_seq, nsteps) VALUES(?, 'old', ?, ?, "
                    "'s1', 'finished', 0, 1, 1, 2, 0, 1)", (bid, bid, bid))
        con.execute("INSERT INTO steps(build_id, idx, name, state, result, "
                    "started_ms, finished_ms, log_bytes, log_lines) "
                    "VALUES(?, 0, 'compile', 'done', 0, 1, 2, 1000, 20)",
                    (bid,))
    con.commit()
    con.close()
    m.start()
    said = "the idle sealing walk left %d step logs unsealed" % holes
    wait_for(lambda: said in m.log_text(), 60, "the walk's one warning",
             m.farm)
    assert db_rows(m, "SELECT log_sealed FROM steps WHERE build_id = 1") == \
        [(1100,)]
    # A second walk (TF_STORE_MAINT_IDLE_MS, 10 s, later) finds the same
    # holes and says nothing more.
    time.sleep(12)
    text = m.log_text()
    assert text.count(said) == 1, th_tail(text)
    assert "has a hole" not in text, th_tail(text)
    assert "(the first: build 2 step 0 at byte 0)" in text, th_tail(text)
    assert len(text.splitlines()) < 100, th_tail(text)


def th_tail(text, n=30):
    return "\n".join(text.splitlines()[-n:])
