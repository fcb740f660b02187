"""Several active masters on one PostgreSQL database (issue 15, point 2):
`"store": {"postgres": URL, "shared": true}`. Each master claims
requests for its own slaves only (SKIP LOCKED in the claim), ids come
from one sequence, new requests reach every master through LISTEN/NOTIFY,
and mail, pollers and periodic schedulers run on the holder of the duty
lease, which another master takes within seconds when it dies. The
server comes from the pg_cluster fixture (tfpytest.py)."""

import concurrent.futures
import time

import pytest

from tfharness import BUILD_DIR, wait_for

TF_MASTER = BUILD_DIR / "master" / "tf-master"
DUTY = "the duty lease"


def config(slaves, **top):
    cfg = {"name": "multi", "heartbeat_s": 1, "lost_after_s": 4,
           "slaves": [{"name": s} for s in slaves],
           "builders": [
               {"name": "quick", "steps": [
                   {"name": "hi", "command": "echo hi $TF_BUILDER"}]}]}
    cfg.update(top)
    return cfg


def shared(cfg, url):
    return dict(cfg, store={"postgres": url, "shared": True})


def start_masters(farm, cfg, url, n):
    return [farm.master(shared(cfg, url), name=f"m{i}") for i in range(n)]


def duty_holders(masters):
    return [m for m in masters if DUTY in m.log_text()]


def test_shared_needs_postgres_and_excludes_standby(farm, pg_url):
    m = farm.master(config(["s1"], store={"shared": True}), start=False)
    r = farm.run([TF_MASTER, "checkconfig", m.dir])
    assert r.returncode != 0
    assert "store.shared" in r.stderr and "needs `postgres`" in r.stderr, r
    m.write_config(config(["s1"], store={"postgres": pg_url, "shared": True,
                                         "standby": True}))
    r = farm.run([TF_MASTER, "checkconfig", m.dir])
    assert r.returncode != 0
    assert "exclude each other" in r.stderr, r.stderr


def test_shared_and_lone_masters_never_mix(farm, pg_url):
    """A master without `shared` refuses a database shared masters use,
    and a shared master refuses one a lone master holds."""
    cfg = config(["s1"])
    a = farm.master(shared(cfg, pg_url), name="a")
    lone = farm.master(cfg, store=pg_url, name="lone", start=False)
    lone.start(wait=False)
    assert lone.proc.wait_exit(30) != 0
    assert "another master uses this database" in lone.log_text()
    a.stop()
    lone.start()
    b = farm.master(shared(cfg, pg_url), name="b", start=False)
    b.start(wait=False)
    assert b.proc.wait_exit(30) != 0
    text = b.log_text()
    assert "a master without store.shared uses this database" in text, text


@pytest.mark.timeout(300)
def test_a_burst_across_three_masters_runs_each_request_once(farm, pg_url,
                                                             pg_cluster):
    """Three masters, two slaves on each; 1,000 requests forced through
    all three at once. Every request ends with exactly one build, the
    builds ran on the slaves of every master, ids never collide, and each
    master's API shows builds another master ran."""
    slaves = [f"s{i}" for i in range(6)]
    cfg = config(slaves)
    ms = start_masters(farm, cfg, pg_url, 3)
    for i, s in enumerate(slaves):
        farm.slave(ms[i % 3], s)
    for i, s in enumerate(slaves):
        ms[i % 3].wait_slave_connected(s)
    n = 1000
    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        ids = list(ex.map(lambda i: ms[i % 3].force("quick"), range(n)))
    assert len(set(ids)) == n, "request ids repeat across masters"
    db = pg_cluster.dbname(pg_url)

    def all_done():
        out = pg_cluster.psql("SELECT count(*) FROM build_requests WHERE "
                              "state <> 'done'", db=db)
        return out.strip() == "0"
    wait_for(all_done, 240, "1,000 requests to be done", farm, interval=1)
    rows = pg_cluster.psql("SELECT count(*), count(DISTINCT request_id), "
                           "count(DISTINCT slave), count(*) FILTER (WHERE "
                           "result <> 0) FROM builds", db=db).strip()
    assert rows == f"{n}|{n}|6|0", rows
    # Each master's slaves ran some of them.
    per_slave = pg_cluster.psql("SELECT slave, count(*) FROM builds GROUP "
                                "BY slave ORDER BY slave", db=db).split()
    assert len(per_slave) == 6 and all(
        int(x.split("|")[1]) > 0 for x in per_slave), per_slave
    # A build another master ran reads the same from every master.
    last = int(pg_cluster.psql("SELECT max(id) FROM builds", db=db))
    views = [m.build(last) for m in ms]
    assert all(v["result"] == "SUCCESS" for v in views), views
    assert len({v["slave"] for v in views}) == 1
    logs = {m.step_log(last, 0) for m in ms}
    assert logs == {b"hi quick\n"}, logs


@pytest.mark.timeout(180)
def test_a_request_forced_on_one_master_runs_on_anothers_slave(farm,
                                                              pg_url):
    """The only slave is on b; the request is forced through a: b hears of
    it (NOTIFY), claims it, runs it; a's API follows it to the end."""
    cfg = config(["s1"])
    a, b = start_masters(farm, cfg, pg_url, 2)
    farm.slave(b, "s1")
    b.wait_slave_connected("s1")
    t0 = time.monotonic()
    req = a.force("quick")
    done = a.wait_request_done(req, 30)
    assert done["result"] == "SUCCESS" and done["slave"] == "s1", done
    assert time.monotonic() - t0 < 10
    assert a.step_log(done["id"], 0) == b"hi quick\n"
    assert b.build(done["id"])["number"] == done["number"]


@pytest.mark.timeout(120)
def test_the_duty_lease_is_held_once_and_taken_over_when_its_master_dies(
        farm, pg_url):
    """Mail, pollers and periodic schedulers run on one master: the one
    that logs taking the duty lease. Killed (-9), another takes it within
    seconds."""
    cfg = config(["s1"])
    ms = start_masters(farm, cfg, pg_url, 3)
    wait_for(lambda: len(duty_holders(ms)) == 1, 15, "one duty holder",
             farm)
    time.sleep(1.5)  # the others keep trying and keep failing
    holders = duty_holders(ms)
    assert len(holders) == 1, [m.name for m in holders]
    first = holders[0]
    first.kill9()
    rest = [m for m in ms if m is not first]
    t0 = time.monotonic()
    wait_for(lambda: len(duty_holders(rest)) == 1, 15,
             "another master to take the duty lease", farm, interval=0.1)
    assert time.monotonic() - t0 < 5
    time.sleep(1.5)
    assert len(duty_holders(rest)) == 1


@pytest.mark.timeout(240)
def test_try_jobs_spread_over_masters_end_once_with_one_mail_each(
        farm, pg_url, pg_cluster):
    """Three masters with mail to one SMTP server (aiosmtpd); the slaves
    are on m1 and m2 only, the jobs are submitted to m0 and m1 and
    followed on m2. Each job's builders run on whichever master's slave
    is free, the job ends once (the database settles it with its last
    request) and exactly one mail per job goes out, from the holder of
    the duty lease."""
    from test_mail import Smtpd, add_user, assert_stays, mail_config, submit
    smtp = Smtpd(farm).start()
    cfg = {"name": "it", "heartbeat_s": 1, "lost_after_s": 4,
           "slaves": [{"name": s, "max_builds": 2} for s in ("s1", "s2")],
           "builders": [
               {"name": "pass", "steps": [{"name": "ok",
                                            "command": "echo all good"}]},
               {"name": "fail", "steps": [{"name": "no",
                                            "command": "echo bad; exit 1"}]}],
           "mail": mail_config(smtp.port)}
    ms = start_masters(farm, cfg, pg_url, 3)
    farm.slave(ms[1], "s1")
    farm.slave(ms[2], "s2")
    ms[1].wait_slave_connected("s1")
    ms[2].wait_slave_connected("s2")
    token = add_user(farm, ms[0], "ann@example.org", "Ann Example")
    jobs = [submit(ms[i % 2], token, ["pass", "fail"] if i % 3 else
                   ["pass"], description=f"change {i}") for i in range(8)]
    assert len(set(jobs)) == 8

    def finished(j):
        x = ms[2].get_json(f"/jobs/{j}")
        return x["state"] == "finished" and x
    for i, j in enumerate(jobs):
        x = wait_for(lambda: finished(j), 60, f"job {j} on m2", farm,
                     interval=0.2)
        want = "FAILURE" if i % 3 else "SUCCESS"
        assert x["result"] == want, x
        # The master it was submitted to says the same.
        assert ms[i % 2].get_json(f"/jobs/{j}")["result"] == want
    msgs = smtp.wait_count(8, 60)
    assert_stays(lambda: len(smtp.messages()) == 8, 3,
                 "more than one mail per job")
    per_job = sorted(int(m["X-TestFarm-Job"]) for m, _, _ in msgs)
    assert per_job == sorted(jobs), per_job
    db = pg_cluster.dbname(pg_url)
    slaves = pg_cluster.psql("SELECT DISTINCT b.slave FROM builds b JOIN "
                             "build_requests r ON r.id = b.request_id WHERE "
                             "r.job_id IS NOT NULL ORDER BY 1", db=db).split()
    assert slaves == ["s1", "s2"], slaves
    states = pg_cluster.psql("SELECT count(*) FROM try_jobs WHERE state = "
                             "'finished'", db=db).strip()
    assert states == "8", states


@pytest.mark.timeout(180)
def test_kill9_of_a_master_mid_stream_its_slaves_move_and_builds_finish(
        farm, pg_url, pg_cluster):
    """Masters a and b share the database; slaves s1 and s2 start on a
    and know b too (--master a --master b), s3 is b's. a is killed (-9)
    in the middle of both builds' steps: s1 and s2 fail over to b, which
    loads their builds from the database and resumes them from the
    slaves' spools. Each build finishes once (no rerun: one build per
    request), its log byte-exact, and the farm goes on."""
    lines = 40
    slaves = ["s1", "s2", "s3"]
    secrets = {}
    for s in slaves:
        p = farm.tmp / f"{s}-secret"
        p.write_text(f"the-shared-secret-of-{s}\n")
        p.chmod(0o600)
        secrets[s] = p
    cfg = config([])
    cfg["slaves"] = [{"name": s, "secret_file": str(secrets[s])}
                     for s in slaves]
    cfg["builders"].append({"name": "long", "slaves": ["s1", "s2"],
                            "steps": [{"name": "count", "command":
        f"i=1; while [ $i -le {lines} ]; do echo line $i; sleep 0.1; "
        "i=$((i + 1)); done"}]})
    a, b = start_masters(farm, cfg, pg_url, 2)
    for s in ("s1", "s2"):
        farm.slave(a, s, secret_file=secrets[s], args=["--master", b.ws_url])
    farm.slave(b, "s3", secret_file=secrets["s3"])
    reqs = [a.force("long"), b.force("long")]
    bids = [a.wait_build_started(r) for r in reqs]
    for bid in bids:
        a.wait_step_running(bid, 0, min_bytes=len("line 1\nline 2\n"))
    a.kill9()
    want = "".join(f"line {i}\n" for i in range(1, lines + 1)).encode()
    for bid in bids:
        done = b.wait_build_finished(bid, 90)
        assert done["result"] == "SUCCESS", done
        assert b.step_log(bid, 0) == want
    assert "another master ran: this master takes it over" in b.log_text()
    db = pg_cluster.dbname(pg_url)
    rows = pg_cluster.psql("SELECT count(*), count(DISTINCT request_id) "
                           "FROM builds WHERE builder = 'long'", db=db)
    assert rows.strip() == "2|2", rows
    for r in reqs:
        assert b.request_info(r)["state"] == "done"
    # The moved slaves and b's own take new work.
    for _ in range(3):
        assert b.run_build("long")["result"] == "SUCCESS"
    assert b.run_build("quick")["result"] == "SUCCESS"


@pytest.mark.timeout(120)
def test_the_live_feed_of_one_master_shows_builds_run_on_another(farm,
                                                                 pg_url):
    """A viewer of a's /live feed (builds, requests, slaves) sees b's
    slave connect and b's build from start to finish with its steps, as
    b's own viewers do; the log is read from a's log endpoint."""
    from test_live import live_client, subscribe
    cfg = config(["s1"])
    a, b = start_masters(farm, cfg, pg_url, 2)
    ws = live_client(farm, a)
    subscribe(ws, ["builds", "requests", "slaves"])
    farm.slave(b, "s1")
    b.wait_slave_connected("s1")
    req = b.force("quick")
    events = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = ws.recv_json(timeout=30)
        events.append(msg)
        if msg["type"] == "build" and msg["event"] == "finished":
            break
    kinds = [(e["type"], e.get("event")) for e in events]
    assert ("slave", "connected") in kinds, kinds
    assert ("request", "queued") in kinds, kinds
    assert kinds[-1] == ("build", "finished"), kinds
    fin = events[-1]["build"]
    assert fin["result"] == "SUCCESS" and fin["request_id"] == req, fin
    steps = [(e["step"]["index"], e["step"]["state"]) for e in events
             if e["type"] == "step"]
    assert (0, "done") in steps, steps
    assert a.step_log(fin["id"], 0) == b"hi quick\n"


def force_retrying(m, builder, deadline_s=60):
    """Forces a build, trying again while the master says 503 (no ids
    ready: backpressure); returns (request id, 503s seen)."""
    busy = 0
    end = time.monotonic() + deadline_s
    while True:
        r = m.api_post(f"/builders/{builder}/force", {"reason": "burst"})
        if r.status == 201:
            return r.json()["request_id"], busy
        assert r.status == 503 and "no ids ready" in r.error_message(), r
        busy += 1
        assert time.monotonic() < end, "no ids for too long"
        time.sleep(0.05)


@pytest.mark.timeout(300)
def test_a_burst_past_two_blocks_of_ids_on_one_master_keeps_ids_unique(
        farm, pg_url, pg_cluster):
    """Ids come in blocks of 1000, the next one reserved ahead off the
    loop. 2,200 requests forced on m0 (more than two blocks) while m1 and
    m2 take 200 each: every request is stored once, no id repeats, and
    m0's ids span at least three blocks."""
    cfg = config([])
    ms = start_masters(farm, cfg, pg_url, 3)
    plan = [0] * 2200 + [1] * 200 + [2] * 200
    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        got = list(ex.map(lambda i: (i, force_retrying(ms[i], "quick")[0]),
                          plan))
    ids = [rid for _, rid in got]
    assert len(set(ids)) == len(plan), "request ids repeat"
    m0_blocks = {(rid - 1) // 1000 for i, rid in got if i == 0}
    assert len(m0_blocks) >= 3, m0_blocks
    db = pg_cluster.dbname(pg_url)
    rows = pg_cluster.psql("SELECT count(*), count(DISTINCT id) FROM "
                           "build_requests", db=db).strip()
    assert rows == f"{len(plan)}|{len(plan)}", rows


@pytest.mark.timeout(180)
def test_no_block_of_ids_ready_is_backpressure_not_a_wait(farm, pg_url):
    """The test hook TF_TEST_PG_IDS_DELAY_MS makes each reservation
    ahead take 8 s. The first block is ready at the start; once it is
    used up and the next is not there, a force is answered at once with
    503 "no ids ready ... try again" (the loop does not wait: the API
    keeps answering), the log says so once, and when the block comes the
    same force succeeds, and a slave then runs the waiting builds."""
    cfg = config(["s1"])
    m = farm.master(shared(cfg, pg_url), name="m0",
                    env={"TF_TEST_PG_IDS_DELAY_MS": "8000"})
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        first = list(ex.map(lambda i: m.force("quick"), range(1000)))
    assert len(set(first)) == 1000
    if time.monotonic() - t0 > 7:
        pytest.skip("the first 1,000 forces took longer than the delay")
    r = m.api_post("/builders/quick/force", {"reason": "one more"})
    assert r.status == 503 and "no ids ready" in r.error_message(), r
    # The loop is free meanwhile.
    assert m.get_json("/master")["name"] == "multi"
    rid, busy = force_retrying(m, "quick", 30)
    assert busy > 0 and rid not in first
    text = m.log_text()
    assert text.count("no block of ids ready") == 1, text
    assert "a block of ids is ready again" in text
    farm.slave(m, "s1")
    assert m.wait_request_done(rid, 120)["result"] == "SUCCESS"


def keepalive_timers(port, side):
    """The keepalive timers (seconds to the next probe) of the established
    TCP sockets on 127.0.0.1:port, the server's side ("sport") or the
    clients' ("dport"), from ss; None for a socket without one."""
    import re
    import subprocess
    out = subprocess.run(["ss", "-tnoH", "state", "established",
                          f"( {side} = :{port} )"], capture_output=True,
                         text=True, timeout=30).stdout
    timers = []
    for line in out.splitlines():
        m = re.search(r"timer:\(keepalive,(?:(\d+)min)?([\d.]+)(m?s)", line)
        if not m:
            timers.append(None)
            continue
        secs = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
        timers.append(int(m.group(1) or 0) * 60 + secs)
    return timers


@pytest.fixture
def pg_tcp():
    """A PostgreSQL server of its own on 127.0.0.1 (TCP: keepalives exist
    only there), with fsync."""
    from tfharness import PgCluster, pg_bindir
    if not pg_bindir():
        pytest.skip("PostgreSQL is not installed")
    pg = PgCluster(tcp=True, fsync=True)
    try:
        pg.initdb().start()
        yield pg
    finally:
        pg.destroy()


@pytest.mark.timeout(120)
def test_tcp_keepalives_are_set_on_both_ends_of_every_connection(farm,
                                                                  pg_tcp):
    """store.keepalive_* reach both ends of each of a master's TCP
    connections to PostgreSQL (writer, readers, the listener holding the
    lease): every server-side socket probes within keepalive_idle_s (the
    server's default would be 2 hours), and so does every client side.
    The sessions are the master's (pg_stat_activity)."""
    url = pg_tcp.url(pg_tcp.new_database())
    cfg = config(["s1"])
    cfg["store"] = {"postgres": url, "shared": True, "keepalive_idle_s": 7,
                    "keepalive_interval_s": 2, "keepalive_count": 2}
    m = farm.master(cfg, name="m0")
    wait_for(lambda: DUTY in m.log_text(), 15, "the duty lease", farm)
    n = int(pg_tcp.psql("SELECT count(*) FROM pg_stat_activity WHERE "
                        f"application_name LIKE '%pid {m.proc.popen.pid}' "
                        "AND client_addr IS NOT NULL"))
    assert n >= 3, n  # writer, listener, readers
    for side in ("sport", "dport"):
        # A socket with data in flight shows its retransmission timer
        # instead (ss prints one timer): read again until none has.
        for _ in range(50):
            timers = keepalive_timers(pg_tcp.port, side)
            if None not in timers:
                break
            time.sleep(0.1)
        assert len(timers) == n, (side, timers, n)
        assert all(t is not None and t <= 7 for t in timers), (side, timers)


@pytest.mark.timeout(180)
def test_a_frozen_master_loses_the_lease_and_its_slaves_within_the_timeout(
        farm, pg_tcp):
    """The duty holder is frozen (SIGSTOP), as a machine that vanished
    looks to the others: its kernel still answers TCP keepalives on
    loopback, so keepalives alone would never end its sessions (a true
    network vanish cannot be made on one machine without packet
    filtering). Its heartbeat stops instead: after store.lease_timeout_s
    (3 s here) another master ends its sessions, takes the duty lease,
    and marks its slave disconnected in every master's API. Then it is
    killed."""
    url = pg_tcp.url(pg_tcp.new_database())
    cfg = config(["s1", "s2"])
    ms = [farm.master(dict(cfg, store={"postgres": url, "shared": True,
                                       "lease_timeout_s": 3}), name=f"m{i}")
          for i in range(2)]
    wait_for(lambda: len(duty_holders(ms)) == 1, 15, "one duty holder",
             farm)
    holder = duty_holders(ms)[0]
    other = ms[1] if holder is ms[0] else ms[0]
    farm.slave(holder, "s1")
    farm.slave(other, "s2")
    holder.wait_slave_connected("s1")
    other.wait_slave_connected("s2")
    assert other.slave_connected("s1")  # the farm's view
    import signal
    holder.proc.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        wait_for(lambda: DUTY in other.log_text(), 30,
                 "the other master to take the duty lease", farm,
                 interval=0.1)
        took = time.monotonic() - t0
        assert took < 3 + 1 + 3, took  # timeout + a beat + slack
        assert "it is taken for dead" in other.log_text()
        wait_for(lambda: not other.slave_connected("s1"), 10,
                 "s1 to show disconnected", farm)
        assert other.slave_connected("s2")
    finally:
        holder.proc.signal(signal.SIGKILL)
        holder.proc.wait_exit(10)
    assert other.run_build("quick")["result"] == "SUCCESS"


@pytest.mark.timeout(180)
def test_a_dead_masters_slaves_show_disconnected_after_its_lease_timeout(
        farm, pg_url):
    """a runs s1, b runs s2; a is killed (-9): its sessions go at once,
    its heartbeat row stays. Once it is older than lease_timeout_s, b
    marks s1 (and only s1) disconnected. A master started later (c) finds
    a dead master's slaves marked already: its sweep at the start does
    it even when no other master ran meanwhile."""
    cfg = config(["s1", "s2", "s3"])

    def start(name):
        return farm.master(dict(cfg, store={"postgres": pg_url,
                                            "shared": True,
                                            "lease_timeout_s": 3}),
                           name=name)
    a, b = start("a"), start("b")
    farm.slave(a, "s1")
    farm.slave(b, "s2")
    a.wait_slave_connected("s1")
    b.wait_slave_connected("s2")
    assert b.slave_connected("s1")
    a.kill9()
    t0 = time.monotonic()
    wait_for(lambda: not b.slave_connected("s1"), 15,
             "s1 to show disconnected on b", farm, interval=0.2)
    assert time.monotonic() - t0 >= 2, "marked before the lease timeout"
    assert b.slave_connected("s2")
    # Alone: b dies too, with s2 connected; c starts after the timeout.
    b.kill9()
    time.sleep(4)
    c = start("c")
    r = c.api_get("/slaves/s2")
    assert r.status == 200 and r.json()["connected"] is False, r
    assert "it is taken for dead" in c.log_text()


@pytest.mark.timeout(180)
def test_a_new_lease_holder_polls_on_from_the_stored_state(farm, pg_url,
                                                          pg_cluster):
    """a holds the duty lease and polls; b started when the branch was at
    its base. a sees a new commit (one change, one request), then dies.
    b takes the lease and reads the pollers' state again from the
    database: it knows the commit a saw, so the commit is neither
    recorded nor built again; the next commit is, once."""
    from test_continuous import builder, commit, make_repos, wait_polled
    up, work = make_repos(farm.tmp)
    cfg = config(["s1"], poll_interval_s=1)
    cfg["builders"] = [builder("b1", up)]
    cfg["schedulers"] = [{"name": "on-main", "type": "change",
                          "builders": ["b1"], "tree_stable_s": 1}]
    db = pg_cluster.dbname(pg_url)

    def count(sql):
        return int(pg_cluster.psql(sql, db=db))
    a = farm.master(shared(cfg, pg_url), name="a")
    wait_for(lambda: DUTY in a.log_text(), 15, "a to hold the lease", farm)
    base = wait_polled(a, up)["last_revision"]
    b = farm.master(shared(cfg, pg_url), name="b")
    rev1 = commit(work, "README", "one\n", "one")
    wait_polled(a, up, rev1)
    wait_for(lambda: count("SELECT count(*) FROM build_requests") == 1, 20,
             "the request for the first commit", farm)
    a.kill9()
    wait_for(lambda: "the pollers' state is read again" in b.log_text(), 20,
             "b to take the lease and read the pollers again", farm)
    p = wait_polled(b, up, rev1)
    assert p["last_revision"] != base
    time.sleep(3)  # b polls (1 s) and its scheduler would fire (1 s)
    # From a's state it finds nothing to record (from its own start's, it
    # would walk base..rev1 again: "0 new changes").
    assert "new change" not in b.log_text()
    assert count("SELECT count(*) FROM build_requests") == 1
    assert count(f"SELECT count(*) FROM changes WHERE revision = "
                 f"'{rev1}'") == 1
    rev2 = commit(work, "README", "two\n", "two")
    wait_for(lambda: count("SELECT count(*) FROM build_requests") == 2, 20,
             "the request for the second commit", farm)
    time.sleep(2)
    assert count("SELECT count(*) FROM build_requests") == 2
    assert "1 new change" in b.log_text()
    assert count(f"SELECT count(*) FROM changes WHERE revision = "
                 f"'{rev2}'") == 1


def relay(m):
    return m.get_json("/master")["relay"]


@pytest.mark.timeout(180)
def test_a_burst_of_live_events_crosses_masters_batched_and_counted(
        farm, pg_url):
    """300 requests forced on a at once: a viewer of b's live feed gets
    the "queued" event of every one (nothing dropped at normal sizes),
    a sent them in batches (no more NOTIFYs than events) and both count
    no drops in /api/v1/master's "relay"."""
    from test_live import live_client, subscribe
    cfg = config([])
    a, b = start_masters(farm, cfg, pg_url, 2)
    ws = live_client(farm, b)
    subscribe(ws, ["requests"])
    n = 300
    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        ids = set(ex.map(lambda i: a.force("quick"), range(n)))
    seen = set()
    deadline = time.monotonic() + 60
    while seen != ids and time.monotonic() < deadline:
        msg = ws.recv_json(timeout=30)
        if msg["type"] == "request" and msg["event"] == "queued":
            seen.add(msg["request"]["id"])
    assert seen == ids, f"{len(ids - seen)} queued events never came"
    wait_for(lambda: relay(a)["sent"] >= n, 10, "a to count its sends",
             farm)
    ra, rb = relay(a), relay(b)
    assert ra["dropped_out"] == 0 and rb["dropped_in"] == 0, (ra, rb)
    assert ra["sent"] >= n and 0 < ra["notifies"] <= ra["sent"], ra
    assert rb["received"] >= n, rb
    assert "live events" not in a.log_text() + b.log_text()


@pytest.mark.timeout(180)
def test_a_relay_queue_too_small_counts_and_logs_its_drops(farm, pg_url):
    """With the relay queue forced down to 600 bytes (test hook
    TF_TEST_PG_FARM_QUEUE_BYTES) a burst overflows it: the drops are
    counted in /api/v1/master's "relay", logged once when the burst
    starts and once with their count when the queue has room again;
    the farm itself is unaffected (every request is stored)."""
    cfg = config([])
    a = farm.master(shared(cfg, pg_url), name="a",
                    env={"TF_TEST_PG_FARM_QUEUE_BYTES": "600"})
    b = farm.master(shared(cfg, pg_url), name="b")
    from test_live import live_client, subscribe
    ws = live_client(farm, a)  # a publishes (and relays) request events
    subscribe(ws, ["requests"])
    n = 200
    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        ids = set(ex.map(lambda i: a.force("quick"), range(n)))
    assert len(ids) == n
    wait_for(lambda: relay(a)["dropped_out"] > 0, 20, "drops counted",
             farm)
    def bursts():
        t = a.log_text()
        starts = t.count("live events for the other masters are dropped")
        ends = t.count("dropped in that burst")
        return starts >= 1 and starts == ends and (starts, t)
    # each burst's start and its count, once each, once all is sent
    _, text = wait_for(bursts, 20, "each burst's count in the log", farm)
    import re
    logged = sum(int(x) for x in re.findall(
        r"(\d+) live events? for the other masters dropped in that burst",
        text))
    assert logged == relay(a)["dropped_out"], (logged, relay(a))
    ra = relay(a)
    assert ra["sent"] + ra["dropped_out"] >= n, ra
    assert b.get_json("/master")["relay"]["dropped_in"] == 0


def test_bad_keepalive_and_lease_settings_are_refused(farm, pg_url):
    """store.keepalive_* and lease_timeout_s out of range or of the wrong
    type: checkconfig names the key and its range."""
    m = farm.master(config(["s1"]), start=False)
    for key, val, want in [("keepalive_idle_s", 0, "between 1 and 7200 (got 0)"),
                           ("keepalive_interval_s", 601, "between 1 and 600"),
                           ("keepalive_count", "3", "store.keepalive_count"),
                           ("lease_timeout_s", 1, "between 2 and 3600")]:
        m.write_config(config(["s1"], store={"postgres": pg_url,
                                             "shared": True, key: val}))
        r = farm.run([TF_MASTER, "checkconfig", m.dir])
        assert r.returncode != 0, (key, r)
        assert f"store.{key}" in r.stderr and want in r.stderr, r.stderr


@pytest.mark.timeout(180)
def test_a_database_outage_longer_than_the_lease_timeout_kills_no_master(
        farm, pg_tcp):
    """PostgreSQL is down for longer than the lease timeout (3 s), and b
    comes back 2 s after a (frozen meanwhile): every master's heartbeat
    is old when the server is back, but a master counts another's silence
    only once it has beaten a whole timeout itself, so a takes b for dead
    neither at once nor later, and each master's slave still shows
    connected on the other."""
    url = pg_tcp.url(pg_tcp.new_database())
    cfg = config(["s1", "s2"])
    a, b = [farm.master(dict(cfg, store={"postgres": url, "shared": True,
                                         "lease_timeout_s": 3}), name=n)
            for n in ("a", "b")]
    farm.slave(a, "s1")
    farm.slave(b, "s2")
    a.wait_slave_connected("s1")
    b.wait_slave_connected("s2")
    wait_for(lambda: b.slave_connected("s1") and a.slave_connected("s2"),
             10, "each slave shown on the other master", farm)
    import signal
    pg_tcp.stop()
    # b comes back 2 s after a: a alone beats for those, with b's beat
    # (and its own old one) older than the timeout.
    b.proc.signal(signal.SIGSTOP)
    try:
        time.sleep(6)
        pg_tcp.start()
        time.sleep(2)
    finally:
        b.proc.signal(signal.SIGCONT)
    wait_for(lambda: len(duty_holders([a, b])) >= 1 and
             a.get_json("/master")["store"]["failing_for_ms"] == 0, 60,
             "the masters to be back", farm)
    time.sleep(6)  # two lease timeouts of beating again
    text = a.log_text() + b.log_text()
    assert "taken for dead" not in text
    assert b.slave_connected("s1") and a.slave_connected("s2")
    assert a.running() and b.running()
