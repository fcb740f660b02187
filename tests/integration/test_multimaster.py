"""Several active masters on one PostgreSQL database (issue 15, point 2):
`"store": {"postgres": URL, "shared": true}`. Each master claims
requests for its own slaves only (SKIP LOCKED in the claim), ids come
from one sequence, new requests reach every master through LISTEN/NOTIFY,
and mail, pollers and periodic schedulers run on the holder of the duty
lease, which another master takes within seconds when it dies. The
server comes from the pg_cluster fixture (tfpytest.py)."""

import base64
import concurrent.futures
import os
import re
import time

import pytest

from tfharness import BUILD_DIR, scaled, wait_for

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
def test_tf_try_wait_follows_a_job_run_by_another_masters_slave(
        farm, pg_url):
    """A committer's view across masters: the only slave is b's. tf-try
    submits a failing patch to a and waits there: it prints the build
    starting on b's slave, each step's start and end, the failing step's
    tail read from a's log endpoint, and exits 1. A passing job
    submitted to a (no --wait) is then followed with `tf-try status JOB
    --wait` on b, which prints both builders' ends and exits 0."""
    from test_try import (TF_TRY, add_user, job_id_of, make_repos, tf_try,
                          try_config)
    if not os.access(TF_TRY, os.X_OK):
        pytest.skip(f"{TF_TRY} is not built")
    up, work = make_repos(farm.tmp)
    sec = secret_files(farm, ["s1"])
    cfg = try_config(up, slaves=())
    cfg["slaves"] = [{"name": "s1", "secret_file": str(sec["s1"])}]
    a, b = [farm.master(shared(cfg, pg_url), name=n) for n in ("a", "b")]
    farm.slave(b, "s1", secret_file=sec["s1"])
    b.wait_slave_connected("s1")
    token = add_user(farm, a, "ann@example.org", "Ann Example")
    (work / "verdict").write_text("broken\n")
    r = tf_try(farm, a, work, "--builder", "b1", "--wait", token=token)
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    jid = job_id_of(r)
    bid = a.get_json(f"/jobs/{jid}")["builders"][0]["build"]["id"]
    assert f"b1: build {bid} started on slave s1" in out, out
    for line in ("b1: step check started", "b1: step check: FAILURE",
                 f"b1: build {bid}: FAILURE", "    verdict: broken",
                 "    the check FAILED", f"job {jid}: FAILURE"):
        assert line in out, (line, out)
    assert out.count("b1: step check started") == 1, out
    assert f"{a.url}api/v1/builds/{bid}/steps/1/log" in out or \
        f"{a.url}/api/v1/builds/{bid}/steps/1/log" in out, out
    (work / "verdict").write_text("pass\n")
    r = tf_try(farm, a, work, "--builder", "b1", "--builder", "b2",
               token=token)
    assert r.returncode == 0, r.stdout + r.stderr
    jid2 = job_id_of(r)
    r = tf_try(farm, b, work, "status", str(jid2), "--wait", token=token)
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ("b1: step check: SUCCESS", "b2: step check: SUCCESS",
                 f"job {jid2}: SUCCESS"):
        assert line in r.stdout, (line, r.stdout)
    assert b.get_json(f"/jobs/{jid2}")["result"] == "SUCCESS"


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


def secret_files(farm, slaves):
    """One secret file per slave, shared by every master's config (each
    master has its own directory, so generated secrets would differ)."""
    out = {}
    for s in slaves:
        p = farm.tmp / f"{s}-secret"
        p.write_text(f"the-shared-secret-of-{s}\n")
        p.chmod(0o600)
        out[s] = p
    return out


@pytest.mark.timeout(180)
def test_a_build_taken_over_from_a_live_master_is_never_ended_by_it(
        farm, pg_url, pg_cluster):
    """Masters a and b both stay alive. s1 runs a build for b through a
    TCP proxy; the proxy cuts the link mid-build (a network blip between
    s1 and b only) and s1 fails over to a (its second --master), which
    takes the build over: the build's owner moves from b to a in the
    database. b's build_lost_after_s then passes: b must not end the build
    as RETRY nor queue its request again (its guarded UPDATE finds a as
    the owner) and says it drops its copy. The request runs once, the
    build finishes once with SUCCESS on a, its log byte-exact, and b's API
    shows that same finished build."""
    lines = 90
    secrets = secret_files(farm, ["s1"])
    cfg = config([], build_lost_after_s=4)
    cfg["slaves"] = [{"name": "s1", "secret_file": str(secrets["s1"])}]
    cfg["builders"] = [{"name": "long", "steps": [{"name": "count",
        "command": f"i=1; while [ $i -le {lines} ]; do echo line $i; "
                   "sleep 0.1; i=$((i + 1)); done"}]}]
    a, b = start_masters(farm, cfg, pg_url, 2)
    proxy = farm.proxy(b.port)
    farm.slave(b, "s1", secret_file=secrets["s1"], url=proxy.ws_url,
               args=["--master", a.ws_url])
    b.wait_slave_connected("s1")
    req = b.force("long")
    bid = b.wait_build_started(req)
    b.wait_step_running(bid, 0, min_bytes=len("line 1\nline 2\n"))
    proxy.cut()
    t_cut = time.monotonic()
    wait_for(lambda: "another master ran: this master takes it over"
             in a.log_text(), 30, "a to take the build over", farm,
             interval=0.1)
    assert time.monotonic() - t_cut < 4, "the take-over came after b's " \
        "build_lost_after_s: the test would not test the race"
    db = pg_cluster.dbname(pg_url)
    owner = pg_cluster.psql(f"SELECT owner FROM builds WHERE id = {bid}",
                            db=db).strip()
    assert owner and owner in a.log_text() and owner not in b.log_text(), \
        owner
    # b's build_lost_after_s passes while a still runs the build.
    dropped = re.compile(rf"build {bid} \(long #\d+\) is another "
                         "master's now")
    wait_for(lambda: dropped.search(b.log_text()), 30,
             "b to drop its copy of the build", farm, interval=0.2)
    assert pg_cluster.psql(f"SELECT state FROM builds WHERE id = {bid}",
                           db=db).strip() != "finished", \
        "the build ended before b's timer: the test would not test the race"
    done = a.wait_build_finished(bid, 60)
    assert done["result"] == "SUCCESS", done
    want = "".join(f"line {i}\n" for i in range(1, lines + 1)).encode()
    assert a.step_log(bid, 0) == want
    assert b.step_log(bid, 0) == want
    time.sleep(2)  # anything b would still do, it has done by now
    rows = pg_cluster.psql("SELECT count(*), count(DISTINCT request_id), "
                           "min(result), max(result) FROM builds", db=db)
    assert rows.strip() == "1|1|0|0", rows
    r = pg_cluster.psql(f"SELECT state, result, build_id, retries FROM "
                        f"build_requests WHERE id = {req}", db=db).strip()
    assert r == f"done|0|{bid}|0", r
    for m in (a, b):
        v = m.build(bid)
        assert v["state"] == "finished" and v["result"] == "SUCCESS", v
        assert m.request_info(req)["state"] == "done"
    # b neither ended it (in memory or in the database) nor ran it again.
    text = b.log_text()
    assert not re.search(rf"build {bid} \(long #\d+\) on s1: RETRY", text)
    assert "queued again" not in text


def lines_upto(n):
    return "".join(f"line {i}\n" for i in range(1, n + 1)).encode()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("back", ["within_b_window", "after_b_lost",
                                  "after_end_on_b"])
def test_a_build_moved_a_to_b_and_back_to_a_lands_once(
        farm, pg_url, pg_cluster, back):
    """s1 runs build X for master a through proxy pa; pa cuts it and s1
    fails over to b (proxy pb), which takes X over (owner a -> b). Then
    pb cuts s1 and s1 comes back to a while a still holds its stale copy
    of X (a's build_lost_after_s is long). a must ask the database before
    resuming: X is b's, so a drops its stale copy (no RETRY, no requeue)
    and takes X over from b through the owner-guarded write; b's timer
    then finds X taken over and drops its copy. The step ran once, X
    ends once with SUCCESS, its log is byte-exact on both masters, one
    build row, one mail.

    back_after_b_lost: s1 stays away from both until b's (short)
    build_lost_after_s has ended X as RETRY and queued its request
    again; then it returns to a, which must not resume its stale copy
    (the build has ended): s1 drops X and the request's rerun (build Y)
    runs on s1 through a, once; X keeps what b stored (no line twice).

    after_end_on_b: X finishes on b before s1 comes back to a, without
    it: a must not end its stale copy as RETRY (a RETRY event after the
    SUCCESS) but find X is b's and drop its copy."""
    b_lost = back == "after_b_lost"
    from test_mail import Smtpd, assert_stays, mail_config
    lines = 150
    smtp = Smtpd(farm).start()
    secrets = secret_files(farm, ["s1"])
    runs = farm.tmp / "runs"
    cfg = config([], mail=mail_config(smtp.port))
    cfg["slaves"] = [{"name": "s1", "secret_file": str(secrets["s1"])}]
    cfg["builders"] = [{"name": "long", "mail": {
        "mode": "all", "extra_recipients": ["ci@example.org"]},
        "steps": [{"name": "count", "command":
                   f"echo run >> {runs}; i=1; while [ $i -le {lines} ]; "
                   "do echo line $i; sleep 0.1; i=$((i + 1)); done"}]}]
    a = farm.master(shared(dict(cfg, build_lost_after_s=120), pg_url),
                    name="a")
    b = farm.master(shared(dict(cfg, build_lost_after_s=3 if b_lost else 6),
                           pg_url), name="b")
    pa, pb = farm.proxy(a.port), farm.proxy(b.port)
    farm.slave(a, "s1", secret_file=secrets["s1"], url=pa.ws_url,
               args=["--master", pb.ws_url])
    a.wait_slave_connected("s1")
    db = pg_cluster.dbname(pg_url)

    def owner():
        return pg_cluster.psql(f"SELECT owner FROM builds WHERE id = {bid}",
                               db=db).strip()

    def stored():
        return len(a.step_log(bid, 0))
    req = a.force("long")
    bid = a.wait_build_started(req)
    a.wait_step_running(bid, 0, min_bytes=len(lines_upto(5)))
    owner_a = owner()
    assert owner_a and owner_a in a.log_text(), owner_a
    pa.cut()
    wait_for(lambda: "another master ran: this master takes it over"
             in b.log_text(), 30, "b to take X over", farm, interval=0.1)
    owner_b = owner()
    assert owner_b != owner_a and owner_b in b.log_text(), owner_b
    at_b = stored()
    wait_for(lambda: stored() >= at_b + len(b"line 10\n") * 5, 30,
             "b to store more of X", farm, interval=0.1)
    if back == "after_end_on_b":
        done = b.wait_build_finished(bid, 60)
        assert done["result"] == "SUCCESS", done
    pb.cut()
    if b_lost:
        ended = re.compile(rf"build {bid} \(long #\d+\) on s1: RETRY")
        wait_for(lambda: ended.search(b.log_text()), 30,
                 "b to end X as RETRY", farm, interval=0.2)
    a_before = len(a.log_text())
    pa.restore()
    a.wait_slave_connected("s1", timeout=30)
    def ran_once(want):
        """X ran once, SUCCESS, read the same on both masters with its
        lines byte-exact, no RETRY or requeue logged, exactly one mail."""
        rows = pg_cluster.psql("SELECT count(*), count(DISTINCT "
                               "request_id), min(result), max(result) "
                               "FROM builds", db=db)
        assert rows.strip() == "1|1|0|0", rows
        r = pg_cluster.psql(f"SELECT state, result, build_id, retries FROM "
                            f"build_requests WHERE id = {req}", db=db)
        assert r.strip() == f"done|0|{bid}|0", r
        for m in (a, b):
            v = m.build(bid)
            assert v["state"] == "finished" and v["result"] == "SUCCESS", v
            assert m.step_log(bid, 0) == want
            assert m.request_info(req)["state"] == "done"
            text = m.log_text()
            assert not re.search(rf"build {bid} \(long #\d+\) on s1: "
                                 "RETRY", text), m.name
            assert "queued again" not in text
        assert runs.read_text() == "run\n"
        msgs = smtp.wait_count(1, 30)
        assert_stays(lambda: len(smtp.messages()) == 1, 3, "a second mail")
        assert str(bid) in str(msgs[0][0]["X-TestFarm-Build"])

    if back == "after_end_on_b":
        dropped = re.compile(rf"build {bid} (\(long #\d+\) )?is another "
                             "master's now")
        wait_for(lambda: dropped.search(a.log_text()), 30,
                 "a to drop its stale copy of X", farm, interval=0.2)
        time.sleep(2)  # anything a would still do, it has done
        assert owner() == owner_b
        ran_once(lines_upto(lines))
        return
    if not b_lost:
        wait_for(lambda: owner() == owner_a, 30, "a to take X back",
                 farm, interval=0.1)
        done = a.wait_build_finished(bid, 60)
        assert done["result"] == "SUCCESS", done
        want = lines_upto(lines)
        assert a.step_log(bid, 0) == want
        assert b.step_log(bid, 0) == want
        # b's timer finds X taken over and drops its copy.
        dropped = re.compile(rf"build {bid} \(long #\d+\) is another "
                             "master's now")
        wait_for(lambda: dropped.search(b.log_text()), 30,
                 "b to drop its copy of X", farm, interval=0.2)
        time.sleep(2)  # anything a master would still do, it has done
        ran_once(want)
        return
    # b ended X; a drops its stale copy and runs the request again.
    wait_for(lambda: int(pg_cluster.psql(
        f"SELECT count(*) FROM builds WHERE request_id = {req} AND state = "
        "'finished'", db=db)) == 2, 60, "the rerun to finish", farm,
        interval=0.2)
    time.sleep(2)
    rows = pg_cluster.psql(f"SELECT id, result, owner FROM builds WHERE "
                           f"request_id = {req} ORDER BY result", db=db)
    (y, y_res, y_owner), (x, x_res, x_owner) = \
        [r.split("|") for r in rows.split()]
    assert int(x) == bid and x_res == "5" and x_owner == owner_b, rows
    assert y_res == "0" and y_owner == owner_a, rows
    y = int(y)
    want = lines_upto(lines)
    for m in (a, b):
        assert m.build(bid)["result"] == "RETRY"
        assert m.build(y)["result"] == "SUCCESS"
        assert m.step_log(y, 0) == want
        got = m.step_log(bid, 0)
        assert want.startswith(got) and len(got) >= at_b, got[-40:]
        assert m.request_info(req)["state"] == "done"
    r = pg_cluster.psql(f"SELECT state, result, build_id, retries FROM "
                        f"build_requests WHERE id = {req}", db=db)
    assert r.strip() == f"done|0|{y}|1", r
    text = a.log_text()
    assert not re.search(rf"build {bid} \(long #\d+\) on s1: RETRY", text)
    assert not re.search(rf"build {bid} resumes on slave", text[a_before:])
    assert runs.read_text() == "run\nrun\n"
    msgs = smtp.wait_count(1, 30)
    assert_stays(lambda: len(smtp.messages()) == 1, 3, "a second mail")


def lost_claims_per_request(masters):
    """How often each master lost the claim of each request (the store's
    info line), as {(master, request id): count}."""
    pat = re.compile(r"request (\d+) is not pending here: another master "
                     r"claimed it")
    out = {}
    for m in masters:
        for rid in pat.findall(m.log_text()):
            out[(m.name, int(rid))] = out.get((m.name, int(rid)), 0) + 1
    return out


@pytest.mark.timeout(300)
def test_cancels_racing_claims_across_three_masters_never_run_a_cancelled_request(
        farm, pg_url, pg_cluster):
    """Three masters, two slaves on each; 400 requests forced through all
    three, each cancelled at once through the next master, which holds
    its copy of the request as pending (NOTIFY) while another master may
    be claiming it. A shared master's cancel only moves a pending request
    (UPDATE ... AND state = 'pending'): when another master got it first
    the request runs once, and the cancel either answers 409 or (202)
    goes on to cancel the build that master runs. In the database no
    request is both cancelled and built, none is built twice, every 200
    is a cancelled request, every 409 a request built once with SUCCESS
    and every 202 a request built once; each master's API reads the
    same. Lost claims back off: no master loses
    the claim of one request more than a few times."""
    slaves = [f"s{i}" for i in range(6)]
    ms = start_masters(farm, config(slaves), pg_url, 3)
    for i, s in enumerate(slaves):
        farm.slave(ms[i % 3], s)
    for i, s in enumerate(slaves):
        ms[i % 3].wait_slave_connected(s)
    n = 400

    def force_and_cancel(i):
        rid = ms[i % 3].force("quick")
        r = ms[(i + 1) % 3].api_post(f"/requests/{rid}/cancel")
        return rid, r.status
    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        answers = dict(ex.map(force_and_cancel, range(n)))
    assert len(answers) == n
    codes = sorted(set(answers.values()))
    assert set(codes) <= {200, 202, 409}, codes
    db = pg_cluster.dbname(pg_url)

    def settled():
        out = pg_cluster.psql("SELECT count(*) FROM build_requests WHERE "
                              "state IN ('pending', 'running')", db=db)
        return out.strip() == "0"
    wait_for(settled, 120, "every request to end", farm, interval=0.5)
    rows = pg_cluster.psql(
        "SELECT r.id, r.state, count(b.id), coalesce(min(b.result), -1) "
        "FROM build_requests r LEFT JOIN builds b ON b.request_id = r.id "
        "GROUP BY r.id, r.state", db=db).split()
    got = {}
    for line in rows:
        rid, state, nbuilds, result = line.split("|")
        got[int(rid)] = (state, int(nbuilds), int(result))
    assert sorted(got) == sorted(answers)
    both = [r for r, (st, nb, _) in got.items() if st == "cancelled" and nb]
    assert not both, f"cancelled and run: {both}"
    twice = [r for r, (_, nb, _) in got.items() if nb > 1]
    assert not twice, f"run twice: {twice}"
    for rid, code in answers.items():
        st, nb, res = got[rid]
        if code == 200:
            assert (st, nb) == ("cancelled", 0), (rid, got[rid])
        elif code == 409:
            assert (st, nb, res) == ("done", 1, 0), (rid, got[rid])
        else:  # 202: its build was cancelled on the master running it
            assert (st, nb) == ("done", 1), (rid, got[rid])
    ncancelled = sum(1 for c in answers.values() if c == 200)
    nlost = sum(1 for c in answers.values() if c == 409)
    # Both sides of the race happened, or the test tested nothing.
    assert ncancelled > 0 and nlost > 0, (ncancelled, nlost)
    lost_cancels = sum(m.log_text().count("was not cancelled: another "
                                          "master started or ended it")
                       for m in ms)
    print(f"{ncancelled} cancelled, {nlost} ran (409), {lost_cancels} "
          "cancels lost to a claim")
    # Every master's API says what the database says.
    for rid in list(answers)[:: n // 40]:
        views = {m.request_info(rid)["state"] for m in ms}
        assert views == {got[rid][0]}, (rid, views, got[rid])
    lost = lost_claims_per_request(ms)
    print(f"lost claims: {sum(lost.values())}, at most "
          f"{max(lost.values(), default=0)} per request and master")
    assert max(lost.values(), default=0) <= 4, sorted(
        lost.items(), key=lambda kv: -kv[1])[:5]


def hold_row(pg_cluster, db, table, row_id, seconds, key="id"):
    """Holds a row lock from another transaction (psql) for `seconds` in
    a thread: what a master sees while another master's claim of that
    row is in flight, made long. The row is the one whose `key` column
    is row_id (an SQL literal). Returns the thread."""
    import threading
    sql = (f"BEGIN; SELECT {key} FROM {table} WHERE {key} = {row_id} FOR "
           f"UPDATE; SELECT pg_sleep({seconds}); COMMIT;")
    t = threading.Thread(target=pg_cluster.psql, args=(sql,),
                         kwargs={"db": db}, daemon=True)
    t.start()

    def sleeping():
        out = pg_cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE "
                              "state = 'active' AND query LIKE "
                              "'%pg_sleep(%' AND pid <> pg_backend_pid()",
                              db=db)
        return int(out.strip() or 0) > 0
    wait_for(sleeping, 10, "the row lock to be held", None, interval=0.05)
    time.sleep(0.2)  # the FOR UPDATE before the sleep has run
    return t


@pytest.mark.timeout(120)
def test_a_claim_lost_to_a_held_row_backs_off_instead_of_looping(
        farm, pg_url, pg_cluster):
    """A pending request's row is held by another transaction for 4 s
    (as a slow claim of another master would) while a's slave is idle: a
    loses the claim (SKIP LOCKED), reads the queue, loses again, and then
    backs off (250 ms doubling, read again at its 1 s tick) instead of
    claiming in a loop. Once the row is free the request runs, once."""
    cfg = config(["s1"])
    a, b = start_masters(farm, cfg, pg_url, 2)
    slave = farm.slave(a, "s1", start=False)
    req = b.force("quick")
    db = pg_cluster.dbname(pg_url)
    t = hold_row(pg_cluster, db, "build_requests", req, 4)
    slave.start()
    a.wait_slave_connected("s1")
    t.join(30)
    done = a.wait_request_done(req, 30)
    assert done["result"] == "SUCCESS", done
    lost = lost_claims_per_request([a, b])
    n = lost.get((a.name, req), 0)
    print(f"claims of request {req} lost on a while the row was held: {n}")
    assert n >= 2, lost  # the row really was held against a's claims
    assert n <= 7, f"{n} lost claims in 4 s: a hot loop"
    assert re.search(rf"request {req}: claim lost \d+ times in a row",
                     a.log_text())
    rows = pg_cluster.psql(f"SELECT count(*) FROM builds WHERE request_id = "
                           f"{req}", db=db).strip()
    assert rows == "1", rows


@pytest.mark.timeout(180)
def test_a_try_job_whose_claim_was_lost_settles_once_with_one_mail(
        farm, pg_url, pg_cluster):
    """A try job submitted to a, whose request's row is held while a's
    slave is idle: a loses the claim; that slave then leaves, b's comes,
    and b runs the request once the row is free. The job finishes once,
    with exactly one mail, and neither master keeps counting the request
    as open: cancelling the finished job says 409 "already finished" on
    both (a lost claim used to leave a's count of open requests at 1, and
    a took the cancel of a finished job)."""
    from test_mail import Smtpd, add_user, assert_stays, mail_config, submit
    smtp = Smtpd(farm).start()
    cfg = config(["s1", "s2"], mail=mail_config(smtp.port))
    cfg["builders"] = [{"name": "pass", "steps": [
        {"name": "ok", "command": "echo all good"}]}]
    a, b = start_masters(farm, cfg, pg_url, 2)
    s1 = farm.slave(a, "s1", start=False)
    s2 = farm.slave(b, "s2", start=False)
    token = add_user(farm, a, "ann@example.org", "Ann Example")
    db = pg_cluster.dbname(pg_url)
    job = submit(a, token, ["pass"], description="held")
    req = int(pg_cluster.psql(f"SELECT id FROM build_requests WHERE job_id "
                              f"= {job}", db=db))
    t = hold_row(pg_cluster, db, "build_requests", req, 4)
    s1.start()
    wait_for(lambda: lost_claims_per_request([a]).get((a.name, req)), 10,
             "a to lose the claim", farm)
    s1.stop()
    s2.start()
    t.join(30)

    def finished(m):
        x = m.get_json(f"/jobs/{job}")
        return x["state"] == "finished" and x
    for m in (a, b):
        x = wait_for(lambda: finished(m), 60, f"job {job} on {m.name}", farm,
                     interval=0.2)
        assert x["result"] == "SUCCESS", x
    assert pg_cluster.psql(f"SELECT slave FROM builds WHERE request_id = "
                           f"{req}", db=db).strip() == "s2"
    msgs = smtp.wait_count(1, 60)
    assert_stays(lambda: len(smtp.messages()) == 1, 3, "a second mail")
    assert int(msgs[0][0]["X-TestFarm-Job"]) == job
    for m in (a, b):
        r = m.api_post(f"/jobs/{job}/cancel")
        assert r.status == 409, r
        assert "already finished" in r.error_message(), r
    rows = pg_cluster.psql(f"SELECT count(*) FROM builds WHERE request_id = "
                           f"{req}", db=db).strip()
    assert rows == "1", rows


def timed_builder(name, lines=30, pause=1.5, gate=None):
    """A step that waits (pause seconds, or until the file gate exists),
    then prints a line every 100 ms, each carrying the time it was
    printed (the slave runs on this machine)."""
    wait = f"sleep {pause}" if gate is None else \
        f"while [ ! -e {gate} ]; do sleep 0.01; done"
    return {"name": name, "steps": [{"name": "talk", "command":
            f"{wait}; i=1; while [ $i -le {lines} ]; do "
            "echo \"line $i $(date +%s.%N)\"; sleep 0.1; i=$((i + 1)); "
            "done"}]}


def follow_log(ws, bid, step, until):
    """Reads ws until until(msg) holds; returns the log events of (bid,
    step) with the time each arrived, and the other messages."""
    logs, other = [], []
    deadline = time.monotonic() + scaled(60)
    while time.monotonic() < deadline:
        msg = ws.recv_json(timeout=30)
        now = time.time()
        if msg["type"] == "log":
            assert (msg["build_id"], msg["step"]) == (bid, step), msg
            logs.append((now, msg["offset"], base64.b64decode(msg["data"])))
        else:
            other.append((now, msg))
        if until(msg):
            break
    return logs, other


def contiguous(logs, start=0):
    """The bytes of log events that follow each other from start, with
    neither gap nor overlap."""
    out, pos = b"", start
    for _, off, data in logs:
        assert off == pos, f"event at {off}, expected {pos}"
        out += data
        pos += len(data)
    return out


@pytest.mark.timeout(180)
def test_a_step_running_on_another_masters_slave_streams_live_there(
        farm, pg_url):
    """s1 is b's; a viewer on a subscribes to log:B:0 of a build running
    on s1 before its step prints, and gets the output as log events while
    the step runs (each line within 1.5 s of being printed, the first
    long before the step ends, the last before the step's "done" event,
    which a holds until then), with the offsets a local viewer gets: the
    events put end to end are the stored log, byte-exact, in order, no
    gap, no overlap. A second viewer on a subscribing mid-step joins the
    same follower: its events start at or before the end of what the log
    endpoint gave it after "subscribed" (no gap) and run on to the end.
    Before, a had no log event at all for b's builds until the step
    ended (the output was not relayed between masters)."""
    cfg = config(["s1"])
    cfg["builders"].append(timed_builder("talk"))
    a, b = start_masters(farm, cfg, pg_url, 2)
    farm.slave(b, "s1")
    b.wait_slave_connected("s1")
    ws = live_client_of(farm, a)
    live_subscribe(ws, ["builds"])
    req = b.force("talk")
    bid = None
    while bid is None:
        msg = ws.recv_json(timeout=30)
        if msg["type"] == "build" and msg["build"]["request_id"] == req:
            bid = msg["build"]["id"]
    ws.send_json({"subscribe": [f"log:{bid}:0"]})
    b_batches = b.get_json("/master")["store"]["batches"]

    # The late viewer subscribes once about a third of the lines are out.
    late = {}

    def join_late(msg):
        if msg["type"] == "log" and "ws" not in late and \
                msg["offset"] + len(base64.b64decode(msg["data"])) > 200:
            w2 = live_client_of(farm, a)
            live_subscribe(w2, [f"log:{bid}:0"])
            late["ws"] = w2
            late["have"] = a.step_log(bid, 0)
            late["net"] = a.get_json("/master")["net"]
        return msg["type"] == "build" and msg["event"] == "finished"
    logs, other = follow_log(ws, bid, 0, join_late)
    # One follower for the two viewers; gone with the step's end though
    # both still subscribe; its reads bounded by b's commits meanwhile
    # (one per commit notice, plus the first and the held end's).
    assert late["net"]["live_followed"] == 1, late["net"]
    net = a.get_json("/master")["net"]
    commits = b.get_json("/master")["store"]["batches"] - b_batches
    print(f"a's follower: {net['live_follow_reads']} reads for {commits} "
          f"commits of b")
    assert net["live_followed"] == 0, net
    assert 5 <= net["live_follow_reads"] <= commits + 3, (net, commits)
    step_done = [t for t, m in other if m["type"] == "step" and
                 m["step"]["state"] == "done" and m["build_id"] == bid]
    assert step_done, [m for _, m in other]
    stored = a.step_log(bid, 0)
    assert stored == b.step_log(bid, 0)
    lines = stored.decode().splitlines()
    assert len(lines) == 30 and lines[0].startswith("line 1 "), stored
    assert contiguous(logs) == stored
    # Live: the lines arrived while the step ran, each soon after it was
    # printed (the time in the line is the slave's, on this machine).
    printed = {ln.split()[1]: float(ln.split()[2]) for ln in lines}
    seen, buf = {}, b""
    for t, _, data in logs:
        buf += data
        *done, buf = buf.split(b"\n")
        for ln in done:
            seen.setdefault(ln.decode().split()[1], t)
    lag = sorted(seen[n] - printed[n] for n in printed)
    print(f"a's viewer: {len(logs)} log events, line lag median "
          f"{lag[len(lag) // 2] * 1000:.0f} ms, max {lag[-1] * 1000:.0f} ms")
    assert logs[0][0] < step_done[0] - 1.5, (logs[0][0], step_done)
    # In a local viewer's order: the whole output, then the step's end.
    assert logs[-1][0] <= step_done[0], (logs[-1][0], step_done)
    assert len([t for t, _, _ in logs if t < step_done[0]]) >= 10, logs
    assert lag[-1] < scaled(1.5), lag
    # The late viewer: no gap between what it fetched and its events.
    w2 = late["ws"]
    logs2, _ = follow_log(w2, bid, 0, lambda m: m["type"] == "log" and
                          m["offset"] + len(base64.b64decode(m["data"])) >=
                          len(stored))
    have = late["have"]
    assert logs2 and logs2[0][1] <= len(have), (logs2[0][1], len(have))
    got = have[:logs2[0][1]] + contiguous(logs2, logs2[0][1])
    assert got == stored


@pytest.mark.timeout(180)
def test_a_build_page_on_another_master_shows_the_running_steps_lines(
        farm, pg_url):
    """The build page (Chromium, tests/browser/follow.mjs) opened on a
    for a build running on b's slave shows the step's lines as they come:
    "line 20" of 40 (one every 100 ms) is on the page while a's API still
    says the step runs, and the count of lines grew in several steps on
    the way. Before, the page showed nothing new until the step ended."""
    import json
    import shutil
    import subprocess
    from tfharness import REPO
    script = REPO / "tests" / "browser" / "follow.mjs"
    chromium = os.environ.get("TF_CHROMIUM", "/usr/bin/chromium")
    if not shutil.which("node") or not os.access(chromium, os.X_OK) or \
            not (REPO / "web" / "node_modules" / "playwright-core").is_dir():
        pytest.skip("node, Chromium or web/node_modules/playwright-core "
                    "missing (scripts/deps installs them)")
    gate = farm.tmp / "open-gate"
    cfg = config(["s1"], web_root=str(REPO / "web"))
    cfg["builders"].append(timed_builder("talk", lines=40, gate=gate))
    a, b = start_masters(farm, cfg, pg_url, 2)
    farm.slave(b, "s1")
    b.wait_slave_connected("s1")
    bid = a.wait_build_started(b.force("talk"))
    # The step prints once the page is drawn (follow.mjs says "OPEN").
    p = subprocess.Popen(["node", str(script), a.url.rstrip("/"), str(bid),
                          "0", "20"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        out = []
        for ln in p.stdout:
            out.append(ln)
            if ln.strip() == "OPEN":
                gate.write_text("open\n")
        err = p.stderr.read()
        p.wait(timeout=scaled(90))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    res = [ln for ln in out if ln.startswith("RESULT ")]
    assert res, "".join(out) + err
    r = json.loads(res[-1][len("RESULT "):])
    assert "error" not in r and p.returncode == 0, (r, err[-2000:])
    print(f"page on a: lines seen {r['seen']}")
    assert r["step_state"] == "running", r
    assert len([n for _, n in r["seen"] if 0 < n < 20]) >= 3, r
    assert r["problems"] == [], r


@pytest.mark.timeout(120)
def test_a_log_follower_stops_with_its_last_viewer_and_never_on_the_owner(
        farm, pg_url):
    """a follows b's running step only while a viewer of a subscribes:
    `net.live_followed` is 1 with a viewer, 0 once it unsubscribed, while
    the step still runs, and a's reads stop there. b, which runs the
    build, follows nothing for its own viewer (its output comes from the
    slave). a, stopped while following again, exits cleanly."""
    cfg = config(["s1"])
    cfg["builders"].append(timed_builder("talk", lines=60, pause=0))
    a, b = start_masters(farm, cfg, pg_url, 2)
    farm.slave(b, "s1")
    b.wait_slave_connected("s1")
    bid = a.wait_build_started(b.force("talk"))
    topic = f"log:{bid}:0"
    wb = live_client_of(farm, b)
    live_subscribe(wb, [topic])
    ws = live_client_of(farm, a)
    live_subscribe(ws, [topic])
    msg = ws.recv_json(timeout=10)
    assert msg["type"] == "log", msg
    assert a.get_json("/master")["net"]["live_followed"] == 1
    assert wb.recv_json(timeout=10)["type"] == "log"
    assert b.get_json("/master")["net"]["live_followed"] == 0
    ws.send_json({"unsubscribe": [topic]})
    while ws.recv_json(timeout=10)["type"] != "subscribed":
        pass
    net = wait_for(lambda: (lambda n: n["live_followed"] == 0 and n)(
        a.get_json("/master")["net"]), 5, "a to stop following", farm)
    time.sleep(1)
    assert a.get_json("/master")["net"]["live_follow_reads"] <= \
        net["live_follow_reads"] + 1
    assert b.get_json(f"/builds/{bid}")["state"] == "running"
    assert b.get_json("/master")["net"]["live_follow_reads"] == 0
    # Stopped while it follows again: a exits cleanly (under ASan, with
    # nothing leaked).
    live_subscribe(ws, [topic])
    assert ws.recv_json(timeout=10)["type"] == "log"
    assert a.get_json("/master")["net"]["live_followed"] == 1
    a.stop()


def live_client_of(farm, m):
    from test_live import live_client
    return live_client(farm, m)


def live_subscribe(ws, topics):
    from test_live import subscribe
    return subscribe(ws, topics)


def long_builder(name, lines=200, **extra):
    b = {"name": name, "steps": [{"name": "count", "command":
         f"i=1; while [ $i -le {lines} ]; do echo line $i; sleep 0.1; "
         "i=$((i + 1)); done"}]}
    b.update(extra)
    return b


@pytest.mark.timeout(120)
def test_cancelling_a_build_on_one_master_aborts_it_on_anothers_slave(
        farm, pg_url, pg_cluster):
    """s1 is b's; a build forced through a runs there. Cancelling it
    through a's API (which does not run it: the owner and state come
    from the database) answers 202; b hears the cancel on the farm's
    event channel and sends the abort to s1; the build ends CANCELLED
    long before its 20 s, on both masters' APIs. A second cancel, of the
    finished build, answers 409 on either. Cancelling a request that runs
    on b through a cancels its build the same way."""
    cfg = config(["s1"])
    cfg["builders"].append(long_builder("long"))
    a, b = start_masters(farm, cfg, pg_url, 2)
    s1 = farm.slave(b, "s1")
    b.wait_slave_connected("s1")
    req = a.force("long")
    bid = a.wait_build_started(req)
    a.wait_step_running(bid, 0, min_bytes=len("line 1\n"))
    t0 = time.monotonic()
    r = a.api_post(f"/builds/{bid}/cancel")
    assert r.status == 202 and r.json()["state"] == "cancelling", r
    done = a.wait_build_finished(bid, 30)
    assert done["result"] == "CANCELLED", done
    assert time.monotonic() - t0 < 10
    assert b.build(bid)["result"] == "CANCELLED"
    assert f"build {bid} cancelled through another master" in b.log_text()
    assert f"build {bid}: abort sent to s1" in b.log_text()
    assert "abort" in s1.log_text()
    for m in (a, b):
        r = m.api_post(f"/builds/{bid}/cancel")
        assert r.status == 409, r
    r = a.api_post("/builds/999999/cancel")
    assert r.status == 409, r
    db = pg_cluster.dbname(pg_url)
    assert pg_cluster.psql(f"SELECT count(*) FROM builds WHERE request_id "
                           f"= {req}", db=db).strip() == "1"
    # A request running on b, cancelled through a: its build is.
    req2 = a.force("long")
    bid2 = a.wait_build_started(req2)
    a.wait_step_running(bid2, 0, min_bytes=len("line 1\n"))
    r = a.api_post(f"/requests/{req2}/cancel")
    assert r.status == 202 and r.json()["build_id"] == bid2, r
    assert a.wait_build_finished(bid2, 30)["result"] == "CANCELLED"
    r = a.api_post(f"/requests/{req2}/cancel")
    assert r.status == 409, r


def job_build_running(farm, pg_cluster, pg_url, m, job):
    """The id of try job job's build once it runs (its first line seen
    through m)."""
    db = pg_cluster.dbname(pg_url)

    def running():
        return pg_cluster.psql(f"SELECT b.id FROM builds b JOIN "
                               f"build_requests r ON r.id = b.request_id "
                               f"WHERE r.job_id = {job}", db=db).strip()
    bid = int(wait_for(running, 30, "the job's build to start", farm))
    m.wait_step_running(bid, 0, min_bytes=len("line 1\n"))
    return bid


@pytest.mark.timeout(120)
def test_cancelling_a_try_job_on_one_master_reaches_its_build_on_another(
        farm, pg_url, pg_cluster):
    """A try job submitted to a has two builders: "long", whose only
    slave is b's, and "later", whose slave never connects (its request
    stays pending). Cancelled through a: b aborts the running build, the
    pending request is cancelled, and the job ends cancelled, once, the
    same on both masters; nothing of it is left to run."""
    from test_mail import add_user, submit
    cfg = config(["s1", "s9"])
    cfg["builders"] = [long_builder("long", slaves=["s1"]),
                       long_builder("later", slaves=["s9"])]
    a, b = start_masters(farm, cfg, pg_url, 2)
    farm.slave(b, "s1")
    b.wait_slave_connected("s1")
    token = add_user(farm, a, "ann@example.org", "Ann Example")
    job = submit(a, token, ["long", "later"], description="to cancel")
    db = pg_cluster.dbname(pg_url)
    bid = job_build_running(farm, pg_cluster, pg_url, a, job)
    r = a.request("POST", f"/api/v1/jobs/{job}/cancel", body={},
                  token=token)
    assert r.status == 202, r

    def ended(m):
        x = m.get_json(f"/jobs/{job}")
        return x["state"] in ("finished", "cancelled") and x
    for m in (a, b):
        x = wait_for(lambda: ended(m), 30, f"job {job} to end on {m.name}",
                     farm, interval=0.2)
        assert x["state"] == "cancelled" and x["result"] == "CANCELLED", x
    assert a.build(bid)["result"] == "CANCELLED"
    states = pg_cluster.psql(f"SELECT builder, state FROM build_requests "
                             f"WHERE job_id = {job} ORDER BY builder",
                             db=db).split()
    assert states == ["later|cancelled", "long|done"], states
    r = b.request("POST", f"/api/v1/jobs/{job}/cancel", body={},
                  token=token)
    assert r.status == 409, r


@pytest.mark.timeout(120)
def test_retry_without_patch_reruns_when_the_build_ran_on_another_master(
        farm, pg_url, pg_cluster):
    """A try job with a patch is submitted to a; its builder (with
    retry_without_patch) has only b's slave. The try build fails on b,
    which queues the rerun without the patch in the same job though the
    job is a's (the database keeps it open for the rerun); the job ends
    once, after the rerun, the same on both masters."""
    from test_mail import add_user, submit
    cfg = config(["s1"])
    cfg["builders"] = [{"name": "fail", "retry_without_patch": True,
                        "steps": [{"name": "no",
                                   "command": "echo bad; exit 1"}]}]
    a, b = start_masters(farm, cfg, pg_url, 2)
    farm.slave(b, "s1")
    b.wait_slave_connected("s1")
    token = add_user(farm, a, "ann@example.org", "Ann Example")
    patch = ("diff --git a/NOTES b/NOTES\nnew file mode 100644\n"
             "--- /dev/null\n+++ b/NOTES\n@@ -0,0 +1 @@\n+a note\n")
    job = submit(a, token, ["fail"], description="rerun",
                 patch=base64.b64encode(patch.encode()).decode())

    def finished(m):
        x = m.get_json(f"/jobs/{job}")
        return x["state"] == "finished" and x
    for m in (a, b):
        x = wait_for(lambda: finished(m), 60, f"job {job} on {m.name}",
                     farm, interval=0.2)
        assert x["result"] == "FAILURE", x
        assert [(e["name"], e["without_patch_of"] is not None)
                for e in x["builders"]] == [("fail", False),
                                            ("fail", True)], x
    tried, rerun = (e["build"]["id"] for e in x["builders"])
    assert x["builders"][1]["without_patch_of"] == tried
    assert "builds it again without the patch" in b.log_text()
    db = pg_cluster.dbname(pg_url)
    n = pg_cluster.psql(f"SELECT count(*) FROM build_requests WHERE job_id "
                        f"= {job}", db=db).strip()
    assert n == "2", n
    assert pg_cluster.psql(f"SELECT state FROM try_jobs WHERE id = {job}",
                           db=db).strip() == "finished"

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
    the farm itself is unaffected (every request is stored). The first
    NOTIFY goes 1 s late (TF_TEST_PG_RELAY_DELAY_MS): on a loaded
    machine the forces came slower than the relay sent them, and
    nothing overflowed."""
    cfg = config([])
    a = farm.master(shared(cfg, pg_url), name="a",
                    env={"TF_TEST_PG_FARM_QUEUE_BYTES": "600",
                         "TF_TEST_PG_RELAY_DELAY_MS": "1000"})
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


@pytest.mark.timeout(180)
def test_a_database_stall_longer_than_the_lease_timeout_kills_no_master(
        farm, pg_url, pg_cluster):
    """Every heartbeat waits 6 s behind a lock on tf_masters (what a
    PostgreSQL server stalled on its disk, or on a synchronous standby,
    does to every commit) with connections up all along. A beat stored
    after the stall carries the time its statement began, so each
    master's row looks 6 s old, twice the lease timeout: a master whose
    own beat was held up that long must not take the others for dead
    (it starts counting again, as after a reconnection)."""
    cfg = config(["s1", "s2"])
    a, b = [farm.master(dict(cfg, store={"postgres": pg_url,
                                         "shared": True,
                                         "lease_timeout_s": 3}), name=n)
            for n in ("a", "b")]
    farm.slave(a, "s1")
    farm.slave(b, "s2")
    a.wait_slave_connected("s1")
    b.wait_slave_connected("s2")
    time.sleep(5)  # both have beaten a whole lease timeout
    db = pg_cluster.dbname(pg_url)
    pg_cluster.psql("BEGIN; LOCK TABLE tf_masters IN EXCLUSIVE MODE; "
                    "SELECT pg_sleep(6); COMMIT;", db=db)
    time.sleep(6)  # two lease timeouts of beating again
    text = a.log_text() + b.log_text()
    assert "taken for dead" not in text
    assert b.slave_connected("s1") and a.slave_connected("s2")
    assert a.running() and b.running()


@pytest.mark.timeout(300)
def test_postgresql_crashing_mid_build_under_two_masters_loses_nothing(
        farm):
    """Issue 15, point 5, with several masters: PostgreSQL crashes
    (`pg_ctl -m immediate`, recovering from its WAL at the next start)
    while a step on a's slave streams 60 MiB of a request forced through
    b. Both masters keep their slaves connected and say what is wrong in
    /api/v1/master and the log; a queues the output up to its soft limit
    (32 MiB) and then stops reading from its slave (backpressure: the
    queue stays near the limit instead of taking the whole 60 MiB); b
    takes nobody for dead. When the server is back the build finishes
    once (one build row, its request done) with the log byte-exact on
    both masters. Its own server (with fsync: a durability test)."""
    from tfharness import PgCluster, deterministic_bytes, sha256
    pg = PgCluster(fsync=True)
    try:
        pg.initdb().start()
        db = pg.new_database()
        url = pg.url(db)
        size = 60 * 1024 * 1024
        data = deterministic_bytes(size, seed=11)
        big = farm.tmp / "big.bin"
        big.write_bytes(data)
        flag = farm.tmp / "go"
        sec = secret_files(farm, ["s1", "s2"])
        cfg = config([])
        cfg["slaves"] = [{"name": s, "secret_file": str(p)}
                         for s, p in sec.items()]
        cfg["builders"].append({"name": "big", "slaves": ["s1"], "steps": [
            {"name": "cat", "command":
             f"printf started; while [ ! -e {flag} ]; do sleep 0.1; "
             f"done; cat {big}"}]})
        a, b = [farm.master(dict(cfg, store={"postgres": url,
                                             "shared": True,
                                             "lease_timeout_s": 3}),
                            name=n) for n in ("a", "b")]
        farm.slave(a, "s1", secret_file=sec["s1"])
        farm.slave(b, "s2", secret_file=sec["s2"])
        a.wait_slave_connected("s1")
        b.wait_slave_connected("s2")
        req = b.force("big")
        bid = a.wait_build_started(req)
        a.wait_step_running(bid, 0, min_bytes=len("started"))
        pg.stop("immediate")
        flag.write_text("go\n")

        def store(m):
            return m.get_json("/master")["store"]
        st = wait_for(lambda: (lambda s: s if s["congested"] else None)(
            store(a)), 120, "a's write queue to be congested", farm)
        assert st["last_error"].startswith("PostgreSQL:"), st
        # Reading paused: over 5 s (twice the lease timeout and more) the
        # queue stays near its soft limit while the slave holds the rest
        # of the 60 MiB (without the pause it would take all of it).
        peak = 0
        for _ in range(25):
            peak = max(peak, store(a)["queued_bytes"])
            time.sleep(0.2)
        assert 32 * 1024 * 1024 < peak < 44 * 1024 * 1024, peak
        for m in (a, b):
            info = m.get_json("/master")
            assert info["slaves_connected"] == 1, (m.name, info)
            assert info["store"]["last_error"].startswith("PostgreSQL:") \
                and info["store"]["failing_for_ms"] > 0, (m.name, info)
        assert a.get_json("/master")["builds_running"] == 1
        text = a.log_text()
        assert "pausing reads from slaves" in text
        assert "still failing after" in text

        pg.start()
        done = a.wait_request_done(req, timeout=240)
        assert done["result"] == "SUCCESS" and done["id"] == bid, done
        want = sha256(b"started" + data)
        for m in (a, b):
            log = m.step_log(bid, 0)
            assert len(log) == size + len("started") and \
                sha256(log) == want, (m.name, len(log))
            assert m.request_info(req)["state"] == "done"
            st = store(m)
            assert st["last_error"] == "" and st["failing_for_ms"] == 0, st
        rows = pg.psql("SELECT count(*), min(result) FROM builds",
                       db=db).strip()
        assert rows == "1|0", rows
        text = a.log_text()
        assert "reading from slaves again" in text
        assert "writes commit again" in text
        time.sleep(4)  # more than a lease timeout of beating again
        text += b.log_text()
        assert "taken for dead" not in text
        assert a.slave_connected("s2") and b.slave_connected("s1")
        assert a.running() and b.running()
        # The farm goes on.
        assert b.run_build("quick")["result"] == "SUCCESS"
    finally:
        pg.destroy()


@pytest.mark.timeout(240)
def test_a_scheduler_firing_with_no_ids_ready_fires_later_not_never(
        farm, pg_url, pg_cluster):
    """Each block of ids takes 8 s to reserve ahead (test hook). The
    first block is used up by forces; a commit then makes the change
    scheduler fire while no ids are ready: it must fire once they are,
    with the commit's change, not drop the change (one request for b1,
    whose blamelist holds the commit)."""
    from test_continuous import builder, commit, make_repos, wait_polled
    up, work = make_repos(farm.tmp)
    cfg = config([], poll_interval_s=1)
    cfg["builders"].append(builder("b1", up))
    cfg["schedulers"] = [{"name": "on-main", "type": "change",
                          "builders": ["b1"], "tree_stable_s": 1}]
    db = pg_cluster.dbname(pg_url)
    m = farm.master(shared(cfg, pg_url), name="m0",
                    env={"TF_TEST_PG_IDS_DELAY_MS": "8000"})
    wait_for(lambda: DUTY in m.log_text(), 15, "the lease", farm)
    wait_polled(m, up)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda i: m.force("quick"), range(1000)))
    if time.monotonic() - t0 > 6:
        pytest.skip("the first 1,000 forces took longer than the delay")
    rev = commit(work, "README", "one\n", "one")
    wait_for(lambda: "no ids ready" in m.log_text() or
             "no block of ids ready" in m.log_text(), 20,
             "the scheduler to find no ids", farm)

    def b1_requests():
        return int(pg_cluster.psql("SELECT count(*) FROM build_requests "
                                   "WHERE builder = 'b1'", db=db))
    wait_for(lambda: b1_requests() == 1, 40, "the scheduler's request",
             farm)
    time.sleep(2)
    assert b1_requests() == 1
    assert "cannot queue a request for b1" not in m.log_text()
    assert int(pg_cluster.psql(f"SELECT count(*) FROM changes WHERE "
                               f"revision = '{rev}'", db=db)) == 1


@pytest.mark.parametrize("lost", ["claim", "end"])
def test_a_commit_whose_answer_was_lost_is_not_applied_again(
        farm, pg_url, pg_cluster, lost):
    """The answer to a COMMIT is lost with its connection after the
    server committed (test hook: the master closes the connection once
    COMMIT returned; what pg_terminate_backend does to a backend waiting
    in COMMIT). The retried batch must not run its guarded UPDATEs again
    (they would find the request running, or the build finished, and
    take it for another master's): the master asks the server whether
    that transaction committed (txid_status) and keeps its outcome. The
    build runs and finishes once with SUCCESS, its request done."""
    db = pg_cluster.dbname(pg_url)
    m = farm.master(shared(config(["s1"]), pg_url), name="m0",
                    env={"TF_TEST_PG_LOSE_COMMIT": lost})
    farm.slave(m, "s1")
    m.wait_slave_connected("s1")
    req = m.force("quick")
    bid = m.wait_build_started(req)
    done = m.wait_build_finished(bid, 60)
    assert done["result"] == "SUCCESS", done
    wait_for(lambda: "did commit: not applied again" in m.log_text(), 20,
             "the retry to find the batch committed", farm)
    time.sleep(1)  # anything the master would still do, it has done
    text = m.log_text()
    assert "the answer to this COMMIT is lost" in text
    assert "another master" not in text
    r = pg_cluster.psql(f"SELECT state, result, build_id FROM "
                        f"build_requests WHERE id = {req}", db=db).strip()
    assert r == f"done|0|{bid}", r
    rows = pg_cluster.psql("SELECT count(*), min(state), min(result) FROM "
                           "builds", db=db).strip()
    assert rows == "1|finished|0", rows
    assert m.request_info(req)["state"] == "done"


@pytest.mark.timeout(180)
def test_a_master_started_right_after_a_database_outage_kills_no_master(
        farm, pg_tcp):
    """PostgreSQL is down longer than the lease timeout (5 s) while a and
    b are frozen, so both heartbeats are old and neither has reconnected
    when c starts right after the server is back. c must not take them
    for dead at its start (silence counts from the server's start at the
    earliest) nor later once they beat again: no session ended, every
    slave still connected on c, a and b running."""
    url = pg_tcp.url(pg_tcp.new_database())
    cfg = config(["s1", "s2", "s3"])

    def start(name):
        return farm.master(dict(cfg, store={"postgres": url, "shared": True,
                                            "lease_timeout_s": 5}),
                           name=name)
    a, b = start("a"), start("b")
    farm.slave(a, "s1")
    farm.slave(b, "s2")
    a.wait_slave_connected("s1")
    b.wait_slave_connected("s2")
    import signal
    pg_tcp.stop()
    a.proc.signal(signal.SIGSTOP)
    b.proc.signal(signal.SIGSTOP)
    try:
        time.sleep(7)
        pg_tcp.start()
        c = start("c")
    finally:
        a.proc.signal(signal.SIGCONT)
        b.proc.signal(signal.SIGCONT)
    assert "taken for dead" not in c.log_text()
    wait_for(lambda: a.get_json("/master")["store"]["failing_for_ms"] == 0
             and b.get_json("/master")["store"]["failing_for_ms"] == 0, 60,
             "a and b to be back", farm)
    time.sleep(7)  # more than a lease timeout of c's beating
    text = a.log_text() + b.log_text() + c.log_text()
    assert "taken for dead" not in text
    assert c.slave_connected("s1") and c.slave_connected("s2")
    assert a.running() and b.running()


def test_a_masters_database_name_carries_its_random_tag(farm, pg_url,
                                                        pg_cluster):
    """A shared master's name in tf_masters and pg_stat_activity is
    "tf-master HOST TAG pid PID", TAG the random part of its owner name:
    two masters in containers with pid 1 and a long common host prefix
    still get different names (the host is cut to 30 bytes, the whole
    fits PostgreSQL's 63)."""
    import socket
    db = pg_cluster.dbname(pg_url)
    m = farm.master(shared(config([]), pg_url), name="m0")
    owner = re.search(r"owns the builds it runs as (\S+)", m.log_text())
    assert owner, "no owner name logged"
    tag = owner.group(1).rsplit("/", 1)[1]
    want = (f"tf-master {socket.gethostname()[:30]} {tag} "
            f"pid {m.proc.popen.pid}")
    assert len(want.encode()) <= 63
    wait_for(lambda: want in pg_cluster.psql(
        "SELECT name FROM tf_masters", db=db), 10, "the heartbeat", farm)
    sessions = pg_cluster.psql(
        f"SELECT count(*) FROM pg_stat_activity WHERE application_name = "
        f"'{want}'", db=db).strip()
    assert int(sessions) >= 2, sessions


def test_cancelling_a_request_in_lost_claim_backoff_cancels_it(
        farm, pg_url, pg_cluster):
    """a's claim of a pending request keeps losing (another transaction
    holds its row for 4 s), so a backs off and holds no copy of it. A
    cancel through a's API then finds it pending in the database only:
    a stores the guarded cancel (pending only; it waits for the row) and
    answers 200 cancelled, not 409. The request never runs."""
    a = farm.master(shared(config(["s1"]), pg_url), name="a")
    slave = farm.slave(a, "s1", start=False)
    req = a.force("quick")
    db = pg_cluster.dbname(pg_url)
    t = hold_row(pg_cluster, db, "build_requests", req, 4)
    slave.start()
    a.wait_slave_connected("s1")
    wait_for(lambda: re.search(rf"request {req}: claim lost \d+ times in a "
                               "row", a.log_text()), 10,
             "a to back off from the request", farm, interval=0.1)
    r = a.api_post(f"/requests/{req}/cancel")
    t.join(30)
    assert r.status == 200, r
    assert r.json()["state"] == "cancelled", r.json()
    time.sleep(2)  # a's backoff has passed: it reads the queue again
    st = pg_cluster.psql(f"SELECT state FROM build_requests WHERE id = "
                         f"{req}", db=db).strip()
    assert st == "cancelled", st
    rows = pg_cluster.psql(f"SELECT count(*) FROM builds WHERE request_id = "
                           f"{req}", db=db).strip()
    assert rows == "0", rows
    assert a.request_info(req)["state"] == "cancelled"


@pytest.mark.timeout(180)
def test_retry_without_patch_with_no_ids_ready_still_reruns(
        farm, pg_url, pg_cluster):
    """Each block of ids takes 8 s to reserve (test hook). A try build
    with a patch, on a builder with retry_without_patch, waits on a gate
    file while forces (of a builder no connected slave may run) use up
    the master's block: the build then fails while no ids are ready. Its
    rerun without the patch must still be queued in the same job (its id
    was kept at the build's start) and run once the next block comes:
    the job ends FAILURE once, after the rerun, with two requests."""
    from test_mail import add_user, submit
    gate = farm.tmp / "gate"
    cfg = config(["s1", "s2"])
    cfg["builders"] = [
        {"name": "fail", "retry_without_patch": True, "slaves": ["s1"],
         "steps": [{"name": "no", "command":
                    f"while [ ! -f {gate} ]; do sleep 0.1; done; exit 1"}]},
        {"name": "quick", "slaves": ["s2"],
         "steps": [{"name": "hi", "command": "echo hi"}]}]
    m = farm.master(shared(cfg, pg_url), name="m0",
                    env={"TF_TEST_PG_IDS_DELAY_MS": "8000"})
    farm.slave(m, "s1")
    m.wait_slave_connected("s1")
    token = add_user(farm, m, "ann@example.org", "Ann Example")
    patch = ("diff --git a/NOTES b/NOTES\nnew file mode 100644\n"
             "--- /dev/null\n+++ b/NOTES\n@@ -0,0 +1 @@\n+a note\n")
    job = submit(m, token, ["fail"], description="rerun",
                 patch=base64.b64encode(patch.encode()).decode())
    wait_for(lambda: m.get_json(f"/jobs/{job}")["state"] == "running", 30,
             "the try build to start", farm)
    t0 = time.monotonic()
    starved = False
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(lambda i: m.api_post(
            "/builders/quick/force", {"reason": "burst"}).status,
            range(1100)))
    starved = 503 in codes
    if not starved or time.monotonic() - t0 > 7:
        pytest.skip("the forces did not use up the block within the delay")
    gate.write_text("go\n")
    wait_for(lambda: "no block of ids ready" in m.log_text() and
             re.search(r"build \d+ \(fail #\d+\) on s1: FAILURE",
                       m.log_text()), 20, "the try build to fail", farm)
    x = wait_for(lambda: (lambda j: j["state"] == "finished" and j)(
        m.get_json(f"/jobs/{job}")), 60, f"job {job}", farm, interval=0.2)
    assert x["result"] == "FAILURE", x
    assert [(e["name"], e["without_patch_of"] is not None)
            for e in x["builders"]] == [("fail", False), ("fail", True)], x
    assert "no rerun without the patch" not in m.log_text()
    db = pg_cluster.dbname(pg_url)
    n = pg_cluster.psql(f"SELECT count(*) FROM build_requests WHERE job_id "
                        f"= {job}", db=db).strip()
    assert n == "2", n


def running_build(m, builder):
    """A request forced through m and its build, once its first line
    was seen."""
    req = m.force(builder)
    bid = m.wait_build_started(req)
    m.wait_step_running(bid, 0, min_bytes=len("line 1\n"))
    return req, bid


def cancel_mark(pg_cluster, pg_url, build_id):
    return pg_cluster.psql(f"SELECT coalesce(cancel_requested, '-') FROM "
                           f"builds WHERE id = {build_id}",
                           db=pg_cluster.dbname(pg_url)).strip()


@pytest.mark.timeout(180)
def test_a_cancel_whose_wakeup_is_lost_is_applied_from_the_database(
        farm, pg_url, pg_cluster):
    """a drops every cancel event it sends (test hook
    TF_TEST_PG_DROP_RELAY=cancel, counted in relay.dropped_out), so b,
    which runs the builds on s1, never hears of a cancel sent through a.
    Each cancel through a (a build, a request, a try job) answers 202
    only once it is stored (the build's row carries the reason), and b
    finds it in the database at its next tick: the build is aborted on
    s1 and ends CANCELLED within seconds on both masters' APIs, not after
    its 20 s. Without the stored cancel the builds ran to SUCCESS."""
    from test_mail import add_user, submit
    cfg = config(["s1"])
    cfg["builders"].append(long_builder("long"))
    a = farm.master(shared(cfg, pg_url), name="a",
                    env={"TF_TEST_PG_DROP_RELAY": "cancel"})
    b = farm.master(shared(cfg, pg_url), name="b")
    s1 = farm.slave(b, "s1")
    b.wait_slave_connected("s1")
    assert 'live events of topic "cancel" are dropped' in a.log_text()

    def cancelled_on_both(bid, t0):
        for m in (a, b):
            done = m.wait_build_finished(bid, 30)
            assert done["result"] == "CANCELLED", (m.name, done)
        took = time.monotonic() - t0
        print(f"build {bid}: CANCELLED on both {took:.2f} s after the "
              f"cancel, its wake-up lost")
        assert took < 12
        assert f"build {bid} cancelled through another master (its " \
               f"stored cancel)" in b.log_text()
        assert f"build {bid}: abort sent to s1" in b.log_text()

    req, bid = running_build(a, "long")
    t0 = time.monotonic()
    r = a.api_post(f"/builds/{bid}/cancel")
    assert r.status == 202 and r.json()["state"] == "cancelling", r
    assert cancel_mark(pg_cluster, pg_url, bid) == "cancelled through the API"
    cancelled_on_both(bid, t0)
    assert relay(a)["dropped_out"] >= 1, relay(a)
    assert "abort" in s1.log_text()
    # A request running on b, cancelled through a: its build is.
    req2, bid2 = running_build(a, "long")
    t0 = time.monotonic()
    r = a.api_post(f"/requests/{req2}/cancel")
    assert r.status == 202 and r.json()["build_id"] == bid2, r
    cancelled_on_both(bid2, t0)
    # A try job submitted to a whose build runs on b.
    token = add_user(farm, a, "ann@example.org", "Ann Example")
    job = submit(a, token, ["long"], description="to cancel")
    db = pg_cluster.dbname(pg_url)
    bid3 = job_build_running(farm, pg_cluster, pg_url, a, job)
    t0 = time.monotonic()
    r = a.request("POST", f"/api/v1/jobs/{job}/cancel", body={},
                  token=token)
    assert r.status == 202, r
    cancelled_on_both(bid3, t0)
    for m in (a, b):
        x = wait_for(lambda: m.get_json(f"/jobs/{job}")["state"] ==
                     "cancelled" and m.get_json(f"/jobs/{job}"), 30,
                     f"job {job} to end on {m.name}", farm, interval=0.2)
        assert x["result"] == "CANCELLED", x
    # Ended: a second cancel answers 409 and stores nothing.
    for m in (a, b):
        assert m.api_post(f"/builds/{bid}/cancel").status == 409
    assert pg_cluster.psql("SELECT count(*) FROM builds WHERE "
                           "cancel_requested IS NOT NULL AND state <> "
                           "'finished'", db=db).strip() == "0"


@pytest.mark.timeout(180)
def test_a_stored_cancel_is_applied_by_the_master_that_takes_the_build_over(
        farm, pg_url, pg_cluster):
    """s1 builds for b and knows a (--master b --master a). b is frozen
    (SIGSTOP) mid-build, the build is cancelled through a (202: stored;
    the event to b is lost with b), then b is killed -9: s1 fails over
    to a, which takes the build over and applies the stored cancel. The
    build ends CANCELLED once, long before its 20 s, with its one row."""
    cfg = config([])
    secrets = secret_files(farm, ["s1"])
    cfg["slaves"] = [{"name": "s1", "secret_file": str(secrets["s1"])}]
    cfg["builders"].append(long_builder("long"))
    a, b = start_masters(farm, cfg, pg_url, 2)
    farm.slave(b, "s1", secret_file=secrets["s1"],
               args=["--master", a.ws_url])
    b.wait_slave_connected("s1")
    req, bid = running_build(a, "long")
    import signal
    b.proc.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = a.api_post(f"/builds/{bid}/cancel")
        assert r.status == 202 and r.json()["state"] == "cancelling", r
        assert cancel_mark(pg_cluster, pg_url, bid) == \
            "cancelled through the API"
    finally:
        b.kill9()
    done = a.wait_build_finished(bid, 30)
    assert done["result"] == "CANCELLED", done
    assert time.monotonic() - t0 < 15
    log = a.log_text()
    assert "another master ran: this master takes it over" in log
    assert f"build {bid} cancelled through another master (its stored " \
           f"cancel)" in log
    db = pg_cluster.dbname(pg_url)
    assert pg_cluster.psql(f"SELECT count(*) FROM builds WHERE request_id "
                           f"= {req}", db=db).strip() == "1"
    assert a.request_info(req)["state"] in ("done", "cancelled")


def slave_counts(m):
    """The farm as m's summary and builders answers count it."""
    s = m.get_json("/summary")
    counts = {k: s["slaves"][k] for k in ("connected", "total", "idle",
                                          "building", "draining",
                                          "offline")}
    listed = {e["name"]: (e["state"], e["connected"])
              for e in s["slaves"]["list"]}
    per_builder = {b["name"]: (b["slave_counts"], b["connected_slaves"])
                   for b in s["builders"]}
    builders = {b["name"]: (b["slave_counts"], b["connected_slaves"],
                            sorted((x["name"], x["connected"])
                                   for x in b["slaves"]))
                for b in m.get_json("/builders?slaves=1")}
    return counts, listed, per_builder, builders


@pytest.mark.timeout(180)
def test_summary_and_builders_count_the_slaves_of_every_master(
        farm, pg_url):
    """s1 and s2 connect to a, s3 to b, s4 never: both masters' summary
    and builders answers count the same farm (3 connected, 1 offline),
    list the same connected flags and states, follow a build of s3 on b
    (building 1, busy 1 on both), s3 draining after a SIGTERM (stored by
    b: draining 1 on both) and, at once, s3 leaving b (its disconnect,
    stored by b, moves a's cached answers). A master counts the other
    masters' slaves from the database, as the slaves view does; with one
    master nothing changes (test_api_cache.py). Without the farm's view a
    counted only s1 and s2."""
    cfg = config(["s1", "s2", "s3", "s4"])
    cfg["builders"].append(long_builder("long", slaves=["s3"]))
    a, b = start_masters(farm, cfg, pg_url, 2)
    farm.slave(a, "s1")
    farm.slave(a, "s2")
    s3 = farm.slave(b, "s3")
    for m, s in ((a, "s1"), (a, "s2"), (b, "s3")):
        m.wait_slave_connected(s)

    def agree(want_counts):
        def same():
            ca, cb = slave_counts(a), slave_counts(b)
            return ca == cb and ca[0] == want_counts and ca
        return wait_for(same, 20, f"both masters to count {want_counts}",
                        farm, interval=0.2)
    counts, listed, per_builder, builders = agree(
        {"connected": 3, "total": 4, "idle": 3, "building": 0,
         "draining": 0, "offline": 1})
    assert listed == {"s1": ("idle", True), "s2": ("idle", True),
                      "s3": ("idle", True), "s4": ("offline", False)}
    assert per_builder["quick"] == ({"allowed": 4, "connected": 3,
                                     "idle": 3, "busy": 0}, 3)
    assert per_builder["long"] == ({"allowed": 1, "connected": 1,
                                    "idle": 1, "busy": 0}, 1)
    assert builders["long"][2] == [("s3", True)]
    assert builders["quick"][2] == [("s1", True), ("s2", True),
                                    ("s3", True), ("s4", False)]
    # s3 builds on b: both count it building.
    req, bid = running_build(a, "long")
    counts, listed, per_builder, _ = agree(
        {"connected": 3, "total": 4, "idle": 2, "building": 1,
         "draining": 0, "offline": 1})
    assert listed["s3"] == ("building", True)
    assert per_builder["long"][0]["busy"] == 1
    # SIGTERM: s3 drains (finishes its build, takes no new one), which b
    # stores; both count it draining.
    import signal
    s3.signal(signal.SIGTERM)
    counts, listed, per_builder, _ = agree(
        {"connected": 3, "total": 4, "idle": 2, "building": 0,
         "draining": 1, "offline": 1})
    assert listed["s3"] == ("draining", True)
    assert per_builder["long"][0] == {"allowed": 1, "connected": 1,
                                      "idle": 0, "busy": 1}
    # Cached on a (asked again and again), then s3's build is cancelled
    # and s3 leaves b: a's answers show it as soon as the database does.
    for _ in range(5):
        a.get_json("/summary")
        a.get_json("/builders?slaves=1")
    assert a.api_post(f"/builds/{bid}/cancel").status == 202
    wait_for(lambda: not a.slave_connected("s3"), 30, "s3 to be gone", farm,
             interval=0.1)
    counts, listed, per_builder, builders = slave_counts(a)
    assert counts == {"connected": 2, "total": 4, "idle": 2, "building": 0,
                      "draining": 0, "offline": 2}, counts
    assert listed["s3"] == ("offline", False)
    assert per_builder["long"] == ({"allowed": 1, "connected": 0,
                                    "idle": 0, "busy": 0}, 0)
    assert builders["long"][2] == [("s3", False)]
    assert slave_counts(b)[0] == counts
    assert s3.wait_exit(30) == 0


def running_view(m, builder, slave):
    """What m's /builders/{builder}, /builders, /summary and
    /slaves/{slave} say of the builder's running builds: (state, running,
    pending, [(build id, slave, kind, slave_connected)]) per answer, and
    the slave's [(build id, builder)]."""
    one = m.get_json(f"/builders/{builder}")
    listed = {b["name"]: b for b in m.get_json("/builders")}[builder]
    summ = {b["name"]: b for b in m.get_json("/summary")["builders"]}[builder]

    def view(o, key):
        return (o["state"], o["running"], o["pending"],
                [(c["id"], c["slave"], c["kind"], c.get("slave_connected"))
                 for c in o[key]])
    sl = m.get_json(f"/slaves/{slave}")
    return (view(one, "current_builds"), view(listed, "current_builds"),
            view(summ, "current"),
            [(c["id"], c["builder"]) for c in sl["current_builds"]])


def settled_view(m, want, timeout=20):
    """running_view(m, "long", "s2") once it is want, or the last one seen
    after timeout seconds (scaled)."""
    end = time.monotonic() + timeout * float(
        os.environ.get("TF_TIMEOUT_SCALE", "1"))
    while True:
        got = running_view(m, "long", "s2")
        if got == want or time.monotonic() > end:
            return got
        time.sleep(0.2)


@pytest.mark.timeout(180)
def test_every_master_shows_the_builds_running_on_another_masters_slave(
        farm, pg_url):
    """s1 is a's, s2 is b's and the only slave of builder "long". A build
    of long forced through a runs on s2 (b): a's /builders/long,
    /builders, /summary and /slaves/s2 show it as b's do (state building,
    running 1, the build's id, slave s2, kind ci in current_builds), read
    from the database in each answer's snapshot. A second request, queued
    through b while s2 is busy, is pending 1 on both (every master queues
    the others' requests). When both builds have finished, both masters
    show long idle with no current build. Without the farm's open builds a
    said idle (running 0, no current build) while b ran it."""
    cfg = config(["s1", "s2"])
    cfg["builders"].append(long_builder("long", lines=30, slaves=["s2"]))
    a, b = start_masters(farm, cfg, pg_url, 2)
    farm.slave(a, "s1")
    farm.slave(b, "s2")
    a.wait_slave_connected("s1")
    b.wait_slave_connected("s2")
    a.wait_slave_connected("s2")
    idle = ("idle", 0, 0, [])
    assert running_view(a, "long", "s2") == (idle, idle, idle, [])
    req, bid = running_build(a, "long")
    assert a.request_info(req)["build_id"] == bid
    busy = ("building", 1, 0, [(bid, "s2", "ci", True)])
    want = (busy, busy, busy[:3] + ([(bid, "s2", "ci", None)],),
            [(bid, "long")])
    for m in (a, b):
        assert settled_view(m, want) == want, m.name
    # Pending: a second request through b waits for s2, on both masters.
    req2 = b.force("long")
    for m in (a, b):
        wait_for(lambda: running_view(m, "long", "s2")[0][2] == 1, 20,
                 f"{m.name} to show 1 pending", farm, interval=0.2)
        view = running_view(m, "long", "s2")
        assert view[0][:3] == ("building", 1, 1), view
        assert view[2][:3] == ("building", 1, 1), view
    assert a.wait_build_finished(bid, 60)["result"] == "SUCCESS"
    bid2 = a.wait_build_started(req2)
    assert a.wait_build_finished(bid2, 60)["result"] == "SUCCESS"
    for m in (a, b):
        assert settled_view(m, (idle, idle, idle, [])) == \
            (idle, idle, idle, []), m.name


@pytest.mark.timeout(180)
def test_a_periodic_scheduler_fires_once_per_period_across_a_lease_move(
        farm, pg_url, pg_cluster):
    """A periodic scheduler (every minute, on the masters' test clocks)
    on masters a and b. a holds the duty lease and fires the periods
    before M1 and M1; b, which never held it, still has the next time it
    computed when it started (before M1). a is killed (-9); b takes the
    lease and must read the scheduler's state again from the database:
    M1 was fired, so nothing fires (its stale time would fire it again);
    M2 fires once when b's clock passes it (a stored M2 as the next
    time, so it is not skipped either). Counted as requests in the
    database."""
    from test_continuous import set_clock
    cfg = config([], testing={"clock": True})
    cfg["schedulers"] = [{"name": "every-minute", "type": "periodic",
                          "builders": ["quick"], "cron": "* * * * *",
                          "only_if_changed": False}]
    db = pg_cluster.dbname(pg_url)

    def fired():
        return int(pg_cluster.psql(
            "SELECT count(*) FROM build_requests WHERE scheduler = "
            "'every-minute'", db=db))
    a = farm.master(shared(cfg, pg_url), name="a")
    wait_for(lambda: DUTY in a.log_text(), 15, "a to hold the lease", farm)
    b = farm.master(shared(cfg, pg_url), name="b")
    assert DUTY not in b.log_text()
    # Minute boundaries well past real time, so only the clocks move.
    m1 = (int(time.time()) // 60 + 5) * 60 * 1000
    m2 = m1 + 60000
    for m in (a, b):
        set_clock(m, m1 - 2000)
    # The periods between real time and M1 are missed ones: a fires
    # once for them.
    wait_for(lambda: fired() == 1, 20, "a to fire once", farm)
    for m in (a, b):
        set_clock(m, m1 + 1000)
    wait_for(lambda: fired() == 2, 20, "a to fire M1", farm)
    time.sleep(1.5)
    assert fired() == 2
    stored = int(pg_cluster.psql("SELECT next_fire_ms FROM scheduler_state "
                                 "WHERE name = 'every-minute'", db=db))
    assert stored == m2, (stored, m2)
    a.kill9()
    wait_for(lambda: "every-minute: this master runs it now" in
             b.log_text(), 30, "b to take the lease and read the "
             "scheduler again", farm)
    time.sleep(3)  # b ticks every second: a stale time would fire now
    assert fired() == 2, "M1 fired twice across the lease move"
    set_clock(b, m2 + 1000)
    wait_for(lambda: fired() == 3, 20, "b to fire M2", farm)
    time.sleep(3)
    assert fired() == 3
    reasons = pg_cluster.psql("SELECT reason FROM build_requests WHERE "
                              "scheduler = 'every-minute'", db=db)
    assert reasons.count("periodic") == 3, reasons
    assert int(pg_cluster.psql("SELECT next_fire_ms FROM scheduler_state "
                               "WHERE name = 'every-minute'", db=db)) == \
        m2 + 60000


def queue_view(m, builder):
    """What m shows of builder's queue from its memory: the request ids
    of its page's pending_requests and of /requests?builder='s pending
    rows (sorted), and /master's requests_pending (every pending copy m
    holds)."""
    page = sorted(r["id"] for r in
                  m.get_json(f"/builders/{builder}")["pending_requests"])
    listed = sorted(r["id"] for r in
                    m.get_json(f"/requests?builder={builder}")["requests"]
                    if r["state"] == "pending")
    return page, listed, m.get_json("/master")["requests_pending"]


def settled_queue(farm, m, builder, want, timeout=15):
    """queue_view(m, builder) once it is want (within timeout seconds,
    scaled)."""
    return wait_for(lambda: queue_view(m, builder) == want and want, timeout,
                    f"{m.name}'s queue of {builder} to be {want} (it is "
                    f"{queue_view(m, builder)})", farm, interval=0.2)


@pytest.mark.timeout(240)
def test_a_master_with_no_slave_for_a_builder_drops_copies_others_ran(
        farm, pg_url, pg_cluster):
    """a has a slave (s1) but none for builders "x" (s2, b's) and
    "nowhere" (s3, never connected). A build of x forced through a runs
    on b: while it still runs, a's /builders/x pending_requests,
    /requests?builder=x and /master requests_pending no longer hold a's
    copy of the request (the database says it runs on another master's
    build), /master's builds_running is 1 on b and 0 on a (per master),
    and once it finished both masters show it SUCCESS with the request
    done and no queue position. A request of "nowhere" forced through a
    while the builder's row is held by another transaction for 5 s (so
    a's write creating it waits and the request has no row) stays in a's
    queue through the ticks that read it as absent; with 39 more forced
    at once, all 40 stay pending on both masters for 5 s (several
    ticks): a copy whose row is absent or pending is never dropped. One
    of them
    cancelled through b leaves a's queue too (it ended), the 39 others
    stay; the rest cancelled through b leave a with no pending copy at
    all. Without the tick's check a listed the x request and every
    cancelled one as pending forever (a never claims them: no slave)."""
    cfg = config(["s1", "s2", "s3"])
    cfg["builders"].append(long_builder("x", lines=60, slaves=["s2"]))
    cfg["builders"].append({"name": "nowhere", "slaves": ["s3"], "steps": [
        {"name": "hi", "command": "echo hi"}]})
    a, b = start_masters(farm, cfg, pg_url, 2)
    farm.slave(a, "s1")
    farm.slave(b, "s2")
    a.wait_slave_connected("s1")
    b.wait_slave_connected("s2")
    db = pg_cluster.dbname(pg_url)
    for m in (a, b):
        assert queue_view(m, "x") == ([], [], 0), m.name
    # Running on b: a's copy goes while the build still runs.
    req, bid = running_build(a, "x")
    settled_queue(farm, a, "x", ([], [], 0))
    assert a.build(bid)["state"] != "finished", \
        "the build ended before a's copy left: the check came too late"
    assert b.get_json("/master")["builds_running"] == 1
    assert a.get_json("/master")["builds_running"] == 0
    assert queue_view(b, "x") == ([], [], 0)
    for m in (a, b):
        assert m.wait_build_finished(bid, 60)["result"] == "SUCCESS", m.name
        info = m.request_info(req)
        assert info["state"] == "done" and info["position"] is None, info
        assert info["build_id"] == bid, info
        assert queue_view(m, "x") == ([], [], 0), m.name
    # A request nobody can run, forced through a while its creation
    # cannot commit (the builder's row is held by another transaction, so
    # a's write waits): the request is in a's queue but has no row yet,
    # and a keeps it through the ticks that read it as absent.
    held = hold_row(pg_cluster, db, "builders", "'nowhere'", 5, key="name")
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        first = ex.submit(a.force, "nowhere")
        wait_for(lambda: queue_view(a, "nowhere")[2] == 1, 10,
                 "a to queue its request", farm, interval=0.1)
        ticks = 0
        while held.is_alive():
            page, listed, held_n = queue_view(a, "nowhere")
            assert len(page) == 1 and listed == page and held_n == 1, \
                (page, listed, held_n)
            ticks += 1
            time.sleep(0.25)
        assert ticks >= 8, ticks  # 2 s and more: two ticks at least
        first = first.result(30)
    assert queue_view(a, "nowhere") == ([first], [first], 1)
    # More of them at once: a's own copies stay, and b's, whatever the
    # ticks read while their creations commit.
    n = 40
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        ids = sorted([first] + list(ex.map(lambda i: a.force("nowhere"),
                                           range(n - 1))))
    settled_queue(farm, b, "nowhere", (ids, ids, n))
    end = time.monotonic() + 5
    while time.monotonic() < end:
        for m in (a, b):
            assert queue_view(m, "nowhere") == (ids, ids, n), m.name
        time.sleep(0.5)
    assert pg_cluster.psql("SELECT count(*) FROM build_requests WHERE "
                           "builder = 'nowhere' AND state = 'pending'",
                           db=db).strip() == str(n)
    # One cancelled through b: it ended, so a drops its copy.
    r = b.api_post(f"/requests/{ids[0]}/cancel")
    assert r.status == 200, r
    rest = ids[1:]
    settled_queue(farm, a, "nowhere", (rest, rest, n - 1))
    info = a.request_info(ids[0])
    assert info["state"] == "cancelled" and info["position"] is None, info
    assert queue_view(b, "nowhere") == (rest, rest, n - 1)
    # The rest too: a holds no pending copy any more.
    for i in rest:
        r = b.api_post(f"/requests/{i}/cancel")
        assert r.status == 200, r
    for m in (a, b):
        settled_queue(farm, m, "nowhere", ([], [], 0))
    assert "dropped" in a.log_text() and "pending cop" in a.log_text()
    assert pg_cluster.psql(f"SELECT count(*) FROM builds WHERE request_id "
                           f"= {req}", db=db).strip() == "1"


def queue_rows(m, query=""):
    """m's /requests answer (with query) as {id: request} and its total."""
    o = m.get_json("/requests" + query)
    return {r["id"]: r for r in o["requests"]}, o["total"]


def without_urls(row):
    return {k: v for k, v in row.items() if k not in ("url", "page_url")}


@pytest.mark.timeout(180)
def test_every_masters_queue_lists_the_requests_running_on_another_master(
        farm, pg_url):
    """s2 is b's and the only slave of builder "long"; a has s1. A build
    of long forced through a runs on s2: while it runs, a's and b's
    /requests, /requests?builder=long and ?kind=ci list it once as
    running with its build_id, no position and the same fields (a reads
    it from the database, b from its memory), and neither lists it under
    ?builder=quick or ?kind=try; a's /requests/{id} says running with the
    build, no position; the build's slave is s2 on both. A second
    request queued through b while s2 is busy is listed first (pending,
    position 1) and pages with limit/offset the same on both; bad
    parameters are 400. Once both ended, neither lists them and both say
    done, no position. Without the farm's
    running requests a listed it as its own pending copy, then (when the
    copy was dropped) not at all, while b ran it."""
    cfg = config(["s1", "s2"])
    cfg["builders"].append(long_builder("long", lines=60, slaves=["s2"]))
    a, b = start_masters(farm, cfg, pg_url, 2)
    farm.slave(a, "s1")
    farm.slave(b, "s2")
    a.wait_slave_connected("s1")
    b.wait_slave_connected("s2")
    req, bid = running_build(a, "long")

    def listed(m, query):
        rows, total = queue_rows(m, query)
        r = rows.get(req)
        return r if r and r["state"] == "running" and \
            r["build_id"] == bid and total == len(rows) else None
    rows = {}
    for m in (a, b):
        for q in ("", "?builder=long", "?kind=ci", "?builder=long&kind=ci"):
            rows[m.name, q] = wait_for(
                lambda: listed(m, q), 10,
                f"{m.name}'s /requests{q} to list {req} running", farm,
                interval=0.2)
    assert a.build(bid)["state"] != "finished", \
        "the build ended before both queues were read"
    row = rows[a.name, ""]
    assert row["builder"] == "long" and row["position"] is None, row
    assert row["kind"] == "ci" and row["job_id"] is None, row
    assert row["url"].endswith(f"/api/v1/requests/{req}"), row
    # null without the pages (web/ not served by the test masters).
    assert row["page_url"] is None or \
        row["page_url"].endswith(f"#/builds/{bid}"), row
    for key, r in rows.items():
        assert without_urls(r) == without_urls(row), (key, r, row)
    for m in (a, b):
        assert req not in queue_rows(m, "?builder=quick")[0], m.name
        assert req not in queue_rows(m, "?kind=try")[0], m.name
        assert [r["id"] for r in queue_rows(m)[0].values()].count(req) == 1
        assert m.build(bid)["slave"] == "s2", m.name
        info = m.request_info(req)
        assert info["state"] == "running" and info["build_id"] == bid, info
        assert info["position"] is None, info
    # Paged: a request queued through b while s2 is busy comes first
    # (pending), the running one second, on both masters.
    req2 = b.force("long")
    for m in (a, b):
        wait_for(lambda: [(r["id"], r["state"], r["position"]) for r in
                          m.get_json("/requests?builder=long")["requests"]]
                 == [(req2, "pending", 1), (req, "running", None)], 10,
                 f"{m.name} to list {req2} pending, then {req}", farm,
                 interval=0.2)
        first = m.get_json("/requests?builder=long&limit=1")
        assert [r["id"] for r in first["requests"]] == [req2], first
        assert first["total"] == 2 and first["next_offset"] == 1, first
        second = m.get_json("/requests?builder=long&limit=1&offset=1")
        assert [r["id"] for r in second["requests"]] == [req], second
        assert second["total"] == 2 and second["next_offset"] is None
        for bad in ("?limit=0", "?offset=x", "?kind=nightly",
                    "?builder=../x"):
            r = m.api_get("/requests" + bad)
            assert r.status == 400 and r.error_message(), (bad, r)
    for m in (a, b):
        assert m.wait_build_finished(bid, 60)["result"] == "SUCCESS", m.name
    bid2 = a.wait_build_started(req2)
    for m in (a, b):
        assert m.wait_build_finished(bid2, 60)["result"] == "SUCCESS"
    for m in (a, b):
        wait_for(lambda: req not in queue_rows(m)[0], 10,
                 f"{m.name}'s /requests to leave {req} out", farm,
                 interval=0.2)
        assert queue_rows(m, "?builder=long") == ({}, 0), m.name
        for r in (req, req2):
            info = m.request_info(r)
            assert info["state"] == "done" and info["position"] is None, \
                info


@pytest.mark.timeout(180)
def test_pollers_and_schedulers_show_the_lease_holders_state_on_every_master(
        farm, pg_url):
    """a holds the duty lease (it polls and fires); b was started after
    it. A commit a records and builds (change scheduler "on-main"), one a
    "slow" change scheduler waits for (tree stable for an hour), and a
    periodic scheduler fired by a's test clock: b's /pollers and
    /schedulers show, within seconds, a's revision, poll times and
    state, each scheduler's last fired time, consumed revision and
    waiting changes, and the periodic one's next time, as a's do, and
    both name a as the master that runs them ("runs_on", its name in
    tf_masters; "runs_here" true on a only). Without it b answered from
    its memory: the base revision and never fired."""
    from test_continuous import builder, commit, make_repos, set_clock, \
        wait_polled
    import socket
    up, work = make_repos(farm.tmp)
    cfg = config(["s1"], poll_interval_s=1, testing={"clock": True})
    cfg["builders"] = [builder("b1", up)]
    cfg["schedulers"] = [
        {"name": "on-main", "type": "change", "builders": ["b1"],
         "tree_stable_s": 1},
        {"name": "slow", "type": "change", "builders": ["b1"],
         "tree_stable_s": 3600},
        {"name": "every-minute", "type": "periodic", "builders": ["b1"],
         "cron": "* * * * *", "only_if_changed": False}]
    a = farm.master(shared(cfg, pg_url), name="a")
    wait_for(lambda: DUTY in a.log_text(), 15, "a to hold the lease", farm)
    base = wait_polled(a, up)["last_revision"]
    b = farm.master(shared(cfg, pg_url), name="b")
    farm.slave(a, "s1")
    tag = re.search(r"owns the builds it runs as \S+/([0-9a-f]+)",
                    a.log_text()).group(1)
    holder = f"tf-master {socket.gethostname()[:30]} {tag} " \
             f"pid {a.proc.popen.pid}"
    for m, here in ((a, True), (b, False)):
        for path in ("/pollers", "/schedulers"):
            o = m.get_json(path)
            assert o["runs_on"] == holder and o["runs_here"] is here, \
                (m.name, path, o)
    assert b.get_json("/pollers")["pollers"][0]["last_revision"] == base
    rev1 = commit(work, "README", "one\n", "one")
    wait_polled(a, up, rev1)

    def sched(m, name):
        return {s["name"]: s for s in
                m.get_json("/schedulers")["schedulers"]}[name]
    wait_for(lambda: sched(a, "on-main")["last_revision"] == rev1, 20,
             "a's on-main to fire for the commit", farm)
    m1 = (int(time.time()) // 60 + 5) * 60 * 1000
    set_clock(a, m1 + 1000)
    wait_for(lambda: sched(a, "every-minute")["next_fire_ms"] ==
             m1 + 60000, 20, "a to fire every-minute", farm)

    def shown(m):
        p = m.get_json("/pollers")["pollers"][0]
        ss = {s["name"]: s for s in m.get_json("/schedulers")["schedulers"]}
        return ((p["repository"], p["branch"], p["state"],
                 p["last_revision"], p["last_ok_ms"] is not None,
                 p["last_error"]),
                {n: (s["last_fired_ms"], s["last_revision"],
                     s["pending_changes"], s["important_changes"],
                     s["next_fire_ms"] if s["type"] == "periodic" else
                     s["next_fire_ms"] is not None)
                 for n, s in ss.items()})
    want = shown(a)
    assert want[0][2:4] == ("ok", rev1), want
    assert want[1]["on-main"][0] is not None and \
        want[1]["on-main"][1:] == (rev1, 0, 0, False), want
    assert want[1]["slow"][0] is None and \
        want[1]["slow"][1:] == (base, 1, 1, True), want
    assert want[1]["every-minute"][0] is not None and \
        want[1]["every-minute"][4] == m1 + 60000, want
    got = wait_for(lambda: shown(b) == want and shown(b), 10,
                   f"b's /pollers and /schedulers to show a's state "
                   f"{want} (they show {shown(b)})", farm, interval=0.2)
    assert got == want
    p = b.get_json("/pollers")["pollers"][0]
    assert p["polling"] is False and p["failures"] is None and \
        p["next_poll_ms"] is None, p
    for m, here in ((a, True), (b, False)):
        for path in ("/pollers", "/schedulers"):
            o = m.get_json(path)
            assert o["runs_on"] == holder and o["runs_here"] is here, \
                (m.name, path, o)


@pytest.mark.timeout(120)
def test_pollers_and_schedulers_never_answer_stale_memory_in_an_outage(
        farm, pg_tcp):
    """With PostgreSQL stopped, /pollers and /schedulers on either master
    answer 503 naming the database ("cannot read the duty holder's ...
    state from the database") or, on a master that still holds the
    lease, its own memory with runs_on null; never a master's stale
    memory as if it were the holder's (200 with runs_here false). When
    the server is back both answer 200 naming the holder again."""
    from test_continuous import builder, make_repos
    up, _ = make_repos(farm.tmp)
    url = pg_tcp.url(pg_tcp.new_database())
    cfg = config([], poll_interval_s=1)
    cfg["builders"] = [builder("b1", up)]
    cfg["schedulers"] = [{"name": "on-main", "type": "change",
                          "builders": ["b1"], "tree_stable_s": 1}]
    a, b = [farm.master(dict(cfg, store={"postgres": url, "shared": True,
                                         "lease_timeout_s": 3}), name=n)
            for n in ("a", "b")]
    wait_for(lambda: len(duty_holders([a, b])) == 1, 15, "a holder", farm)
    pg_tcp.stop()
    try:
        seen = set()
        end = time.monotonic() + 4
        while time.monotonic() < end:
            for m in (a, b):
                for path in ("/pollers", "/schedulers"):
                    r = m.api_get(path)
                    if r.status == 503:
                        assert "cannot read the duty holder's" in \
                            r.error_message() and "database" in \
                            r.error_message(), r
                        seen.add(503)
                        continue
                    assert r.status == 200, r
                    o = r.json()
                    assert o["runs_here"] is True and \
                        o["runs_on"] is None, (m.name, path, o)
                    seen.add(200)
            time.sleep(0.3)
        assert 503 in seen, seen
    finally:
        pg_tcp.start()

    def named():
        for m in (a, b):
            for path in ("/pollers", "/schedulers"):
                r = m.api_get(path)
                if r.status != 200 or not r.json()["runs_on"]:
                    return False
        return True
    wait_for(named, 30, "both masters to name the holder again", farm)
