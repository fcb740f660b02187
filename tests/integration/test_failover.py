"""A slave with several masters (tf-slave --master A --master B, or
"master": [A, B] in its config file; docs/slave-operators.md, "Several
masters"): it serves whichever it reaches, fails over when one is down or
killed, never tries a down master faster than the backoff allows, names a
bad URL in the list at startup, and drops a master that refuses its secret
while it goes on with the others.

The masters here are separate farms (each its own sqlite file); the slave
is configured on each with the same secret, as it would be on masters that
share one database.
"""

import json
import re
import shutil
import subprocess
import time

import pytest

from tfharness import scaled, wait_for


def config(name):
    return {"name": name, "heartbeat_s": 2, "lost_after_s": 6,
            "slaves": [{"name": "s1"}],
            "builders": [{"name": "quick", "slaves": ["s1"], "steps": [
                {"name": "hi", "command": ["echo", f"built on {name}"]}]}]}


def shared_secret(farm):
    """One secret file for s1, given to every master of the test."""
    p = farm.tmp / "s1-secret"
    if not p.exists():
        p.write_text("the-shared-secret-of-s1\n")
        p.chmod(0o600)
    return p


def master(farm, name, start=True, secret=True):
    cfg = config(name)
    if secret:
        cfg["slaves"][0]["secret_file"] = str(shared_secret(farm))
    return farm.master(cfg, name=name, start=start)


def slave(farm, first, urls, connected_to=None, **kw):
    """s1 with --master for each of urls (in order); waits until it is
    connected to connected_to when given."""
    args = list(kw.pop("args", []))
    for u in urls[1:]:
        args += ["--master", u]
    s = farm.slave(connected_to or first, "s1", start=False, url=urls[0],
                   secret_file=shared_secret(farm), args=args, **kw)
    s.start(wait_connected=connected_to is not None)
    return s


def attempts(s, url):
    return s.log_text().count(f"connecting to {url}/slave (attempt")


def wait_log(farm, s, pattern, what):
    """Waits for a line of the slave's log (the master may see the login a
    moment before the slave logs the welcome)."""
    return wait_for(lambda: re.search(pattern, s.log_text()), scaled(10),
                    what, farm)


def build_on(m, word):
    b = m.run_build("quick")
    assert b["result"] == "SUCCESS" and b["slave"] == "s1", b
    assert f"built on {word}".encode() in m.step_log(b["id"], 0), b
    return b


@pytest.mark.timeout(120)
def test_slave_serves_the_master_it_reaches_and_fails_over(farm):
    a = master(farm, "ma", start=False)   # down at the start
    b = master(farm, "mb")
    s = slave(farm, a, [a.ws_url, b.ws_url], connected_to=b)

    log = s.log_text()
    assert f"masters (in failover order) {a.ws_url}, {b.ws_url}" in log, log
    assert re.search(rf"connecting to {re.escape(a.ws_url)}/slave failed: "
                     r"connection refused; failing over to "
                     rf"{re.escape(b.ws_url)}/slave \(master 2 of 2\)",
                     log), log
    wait_log(farm, s, rf"connected to {re.escape(b.ws_url)}/slave as s1 "
             r"\(heartbeat \d+ s, 0 builds to resume, 0 to abandon; "
             r"master 2 of 2\)", "the slave to log its login to B")
    build_on(b, "mb")

    # A comes up meanwhile; the slave stays where it is until B dies.
    a.start()
    time.sleep(scaled(1))
    assert not a.slave_connected("s1")
    assert b.slave_connected("s1")

    b.kill9()
    a.wait_slave_connected("s1", timeout=scaled(15))
    log = s.log_text()
    assert re.search(rf"link to {re.escape(b.ws_url)}/slave closed.*; "
                     rf"failing over to {re.escape(a.ws_url)}/slave "
                     r"\(master 1 of 2\) in \d+ ms", log), log
    wait_log(farm, s, rf"connected to {re.escape(a.ws_url)}/slave as s1 "
             r"\(.*; master 1 of 2\)", "the slave to log its login to A")
    build_on(a, "ma")
    assert s.running()
    s.stop()


@pytest.mark.timeout(90)
def test_masters_all_down_each_is_tried_at_its_own_backoff(farm):
    a = master(farm, "ma", start=False)
    b = master(farm, "mb", start=False)
    # Backoff 100 ms doubling to 1000 ms (the harness's settings).
    s = slave(farm, a, [a.ws_url, b.ws_url])
    window = 4.0
    time.sleep(window)
    na, nb = attempts(s, a.ws_url), attempts(s, b.ws_url)
    # Per master, delays of at least 75, 150, 300, 600, 750, 750... ms:
    # at most 8 attempts in 4 s, whatever the other master does. A slave
    # that simply moved to the next master at once would make dozens.
    assert 2 <= na <= 8 and 2 <= nb <= 8, (na, nb, s.log_text())
    # Round robin: the attempts alternate between the two.
    order = re.findall(r"connecting to (\S+)/slave \(attempt", s.log_text())
    assert order[:4] == [a.ws_url, b.ws_url, a.ws_url, b.ws_url], order
    assert s.running()

    b.start()
    b.wait_slave_connected("s1", timeout=scaled(10))
    build_on(b, "mb")
    s.stop()


def test_bad_url_in_the_list_is_a_clear_error_at_start(farm):
    b = master(farm, "mb")
    s = slave(farm, b, [b.ws_url, "ws//typo:8010"])
    assert s.wait_exit(10) == 2, s.log_text()
    out = s.log_text()
    assert 'tf-slave: --master: URL 2 of 2: master URL "ws//typo:8010" must ' \
        "start with ws:// or wss://" in out, out
    assert "connecting" not in out, out

    s = slave(farm, b, [b.ws_url, "ws://127.0.0.1:99999"])
    assert s.wait_exit(10) == 2, s.log_text()
    assert 'URL 2 of 2: master URL "ws://127.0.0.1:99999": port must be ' \
        "1..65535" in s.log_text(), s.log_text()

    # The same master twice is a typo too.
    s = slave(farm, b, [b.ws_url, b.ws_url + "/slave"])
    assert s.wait_exit(10) == 2, s.log_text()
    assert "names the same master as URL 1" in s.log_text(), s.log_text()

    # In the config file: the file, the line, the key and the element.
    cfgfile = farm.tmp / "slave.json"
    cfgfile.write_text('{"name": "s1",\n "master": ["%s",\n  "wss:/x"]}\n'
                       % b.ws_url)
    s = farm.slave(b, "s1", start=False, url=b.ws_url,
                   secret_file=shared_secret(farm))
    argv = s.argv()
    i = argv.index("--master")
    del argv[i:i + 2]
    r = farm.run(argv + ["--config", str(cfgfile)], timeout=10)
    assert r.returncode == 2, r
    assert re.search(r'slave\.json:2:\d+: "master": URL 2 of 2: master URL '
                     r'"wss:/x" must start with ws:// or wss://', r.stderr), \
        r.stderr


@pytest.mark.timeout(120)
def test_master_refusing_the_secret_is_reported_and_skipped(farm):
    wrong = master(farm, "mwrong", secret=False)  # its own secret for s1
    b = master(farm, "mb")
    s = slave(farm, wrong, [wrong.ws_url, b.ws_url], connected_to=b)
    log = s.log_text()
    assert (f"authentication failed: the master {wrong.ws_url}/slave "
            "rejected our secret for slave s1") in log, log
    assert (f"the master {wrong.ws_url}/slave (master 1 of 2) refused this "
            "slave for good (bad_auth): not trying it again until tf-slave "
            "restarts; going on with the 1 other master") in log, log
    assert "bad_auth" in wrong.log_text() or "secret" in wrong.log_text()
    build_on(b, "mb")

    # B goes away: the slave retries B only, never the refusing master.
    b.kill9()
    wait_for(lambda: attempts(s, b.ws_url) >= 4, scaled(15),
             "the slave to retry B a few times", farm)
    assert attempts(s, wrong.ws_url) == 1, s.log_text()
    assert s.running()
    b.start()
    b.wait_slave_connected("s1", timeout=scaled(15))
    build_on(b, "mb")
    s.stop()


def test_every_master_refusing_the_slave_stops_it(farm):
    w1 = master(farm, "mw1", secret=False)
    w2 = master(farm, "mw2", secret=False)
    s = slave(farm, w1, [w1.ws_url, w2.ws_url])
    assert s.wait_exit(20) == 3, s.log_text()
    log = s.log_text()
    assert (f"every master in the list refused this slave for good (the "
            f"last, {w2.ws_url}/slave: bad_auth): stopping") in log, log
    assert attempts(s, w1.ws_url) == 1 and attempts(s, w2.ws_url) == 1, log


@pytest.mark.timeout(120)
def test_build_running_when_the_slave_moves_to_a_master_of_another_farm(farm):
    """With separate databases the other master does not know the build:
    it abandons it (protocol.md, welcome.abandon), the slave kills the step
    and drops its spool, and serves the new master. (On masters sharing one
    database the new master resumes it instead.)"""
    marker = farm.tmp / "long-step-started"
    a = master(farm, "ma", start=False)
    b = farm.master(config("mb"), name="mb", start=False)
    cfg = b.config
    cfg["slaves"][0]["secret_file"] = str(shared_secret(farm))
    cfg["builders"][0]["steps"] = [{"name": "long", "command":
                                    f"touch {marker}; sleep 300"}]
    b.write_config(cfg)
    b.start()
    s = slave(farm, a, [a.ws_url, b.ws_url], connected_to=b)
    req = b.force("quick")
    bid = b.wait_build_started(req)
    wait_for(marker.exists, scaled(20), "the long step to start", farm)
    a.start()
    b.kill9()
    a.wait_slave_connected("s1", timeout=scaled(15))
    wait_for(lambda: f"build {bid}" in s.log_text() and
             not list((s.basedir / ".spool").glob(f"{bid}.*")), scaled(15),
             "the slave to drop the abandoned build and its spool", farm)
    assert re.search(rf"connected to {re.escape(a.ws_url)}/slave as s1 "
                     r"\(heartbeat \d+ s, 0 builds to resume, 1 to abandon",
                     s.log_text()), s.log_text()
    build_on(a, "ma")
    s.stop()


@pytest.mark.timeout(120)
def test_wss_and_ws_masters_in_one_list(farm):
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command")
    certs = farm.tmp / "certs"
    certs.mkdir()
    key, crt = certs / "m.key", certs / "m.crt"
    r = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "2", "-keyout", str(key), "-out", str(crt),
         "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    t = master(farm, "mtls", start=False)
    cfg = t.config
    cfg["listen"] = {"host": "127.0.0.1", "port": t.port,
                     "tls": {"cert": str(crt), "key": str(key)}}
    t.write_config(cfg)
    t.start(wait=False)
    b = master(farm, "mb", start=False)
    wss = f"wss://127.0.0.1:{t.port}"
    s = slave(farm, t, [wss, b.ws_url], args=["--ca-file", str(crt)])

    def on_tls():
        return f"connected to {wss}/slave as s1" in s.log_text()
    wait_for(on_tls, scaled(20), "the slave to log in over wss://", farm)
    assert "ca_file is ignored" not in s.log_text()

    b.start()
    t.kill9()
    b.wait_slave_connected("s1", timeout=scaled(15))
    build_on(b, "mb")
    assert f"; failing over to {b.ws_url}/slave (master 2 of 2)" in \
        s.log_text(), s.log_text()
    s.stop()


def long_master(farm, name, start=True):
    """A master whose builder runs one long step that says which farm ran
    it and leaves a marker."""
    cfg = config(name)
    cfg["slaves"][0]["secret_file"] = str(shared_secret(farm))
    marker = farm.tmp / f"running-on-{name}"
    cfg["builders"][0]["steps"] = [{"name": "long", "command":
                                    f"echo step of farm {name}; "
                                    f"touch {marker}; sleep 300"}]
    return farm.master(cfg, name=name, start=start), marker


@pytest.mark.timeout(180)
def test_a_build_id_of_another_farm_is_never_taken_for_ours(farm):
    """Separate farms number builds alike: A's build 1 and B's build 1 are
    different builds. The slave runs B's build 1, fails over to A (which
    abandons it: unknown there), runs A's build 1, and fails back to B,
    which still waits for its own build 1 on this slave. The slave reports
    build 1 with A's farm id (welcome.farm, hello.running[].farm): B
    abandons it instead of resuming A's output into its build 1, and ends
    its own build 1 RETRY (the slave came back without it), so it runs
    again."""
    a, marker_a = long_master(farm, "ma", start=False)
    b, marker_b = long_master(farm, "mb")
    s = slave(farm, a, [a.ws_url, b.ws_url], connected_to=b)
    req_b = b.force("quick")
    bid = b.wait_build_started(req_b)
    wait_for(marker_b.exists, scaled(20), "B's long step to start", farm)
    b.wait_step_running(bid, 0, min_bytes=1)

    a.start()
    farm_a = a.get_json("/master")["farm"]
    farm_b = b.get_json("/master")["farm"]
    assert re.fullmatch(r"[0-9a-f]{32}", farm_a) and farm_a != farm_b, \
        (farm_a, farm_b)
    b.kill9()
    a.wait_slave_connected("s1", timeout=scaled(15))
    wait_log(farm, s, rf"connected to {re.escape(a.ws_url)}/slave as s1 "
             r"\(heartbeat \d+ s, 0 builds to resume, 1 to abandon",
             "A to abandon B's build")
    wait_for(lambda: not list((s.basedir / ".spool").glob(f"{bid}.*")),
             scaled(15), "the slave to drop B's build", farm)
    req_a = a.force("quick")
    aid = a.wait_build_started(req_a)
    assert aid == bid, (aid, bid)  # the same id in both farms
    wait_for(marker_a.exists, scaled(20), "A's long step to start", farm)
    a.wait_step_running(aid, 0, min_bytes=1)
    meta = (s.basedir / ".spool" / f"{aid}.meta").read_text()
    assert f'"farm":"{farm_a}"' in meta.replace(" ", ""), meta

    # Back to B, which still has its build 1 on s1, waiting for it.
    b.start()
    assert b.build(bid)["state"] != "finished"
    a.kill9()
    b.wait_slave_connected("s1", timeout=scaled(15))
    wait_log(farm, s, rf"connected to {re.escape(b.ws_url)}/slave as s1 "
             r"\(heartbeat \d+ s, 0 builds to resume, 1 to abandon",
             "B to abandon A's build")
    assert (f"slave s1 reports build {bid} of farm {farm_a}, not this one "
            f"({farm_b}): abandoned") in b.log_text(), b.log_text()
    mine = b.wait_build_finished(bid, timeout=scaled(20))
    assert mine["result"] == "RETRY", mine
    assert "the slave came back without this build" in \
        json.dumps(mine), mine
    log = b.step_log(bid, 0)
    assert b"step of farm mb" in log and b"farm ma" not in log, log
    # B's request runs again, on s1, as a new build.
    wait_for(lambda: b.request_info(req_b)["build_id"] not in (None, bid),
             scaled(30), "B's request to run again", farm)
    s.kill9()  # its build sleeps for minutes: no graceful wait
