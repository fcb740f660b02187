"""The master's own TLS (listen.tls, docs/config.md): with a self-signed
certificate made by openssl for this test, tf-slave connects over wss://
and builds, tf-try talks https://, both verifying the certificate given
with --ca-file, and both refuse a master whose certificate they were not
given. Plain HTTP gets nothing on the TLS port.
"""

import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import time

import pytest

from tfharness import BUILD_DIR, scaled, wait_for

TF_TRY = BUILD_DIR / "try" / "tf-try"


def make_cert(d, name, cn="localhost"):
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    r = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "2", "-keyout", str(key), "-out", str(crt),
         "-subj", f"/CN={cn}",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return crt, key


def https(port, method, path, cafile, body=None, token=None, timeout=10):
    ctx = ssl.create_default_context(cafile=str(cafile))
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx,
                                    timeout=scaled(timeout))
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = json.dumps(body).encode() if body is not None else None
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


@pytest.fixture
def tls_master(farm):
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command")
    certs = farm.tmp / "certs"
    certs.mkdir()
    crt, key = make_cert(certs, "master")
    m = farm.master({
        "name": "tls",
        "slaves": [{"name": "s1"}],
        "builders": [{"name": "quick", "slaves": ["s1"], "steps": [
            {"name": "hi", "command": ["echo", "over tls"]}]}]},
        start=False)
    cfg = m.config
    cfg["listen"] = {"host": "127.0.0.1", "port": m.port,
                     "tls": {"cert": str(crt), "key": str(key)}}
    m.write_config(cfg)
    m.start(wait=False)

    def up():
        assert m.proc.running(), farm.dump_logs()
        try:
            return https(m.port, "GET", "/api/v1/master", crt, timeout=2)[0] \
                == 200
        except OSError:
            return False
    wait_for(up, 20, "the master to answer over https", farm)
    return m, crt, certs


def test_slave_connects_over_wss_and_builds(tls_master, farm):
    m, crt, certs = tls_master
    st, body = https(m.port, "GET", "/api/v1/master", crt)
    master = json.loads(body)
    assert master["url"].startswith("https://"), master
    farm.slave(m, "s1", url=f"wss://127.0.0.1:{m.port}",
               args=["--ca-file", str(crt)],
               start=False).start(wait_connected=False)

    def connected():
        st, body = https(m.port, "GET", "/api/v1/slaves/s1", crt)
        return st == 200 and json.loads(body)["connected"]
    wait_for(connected, 20, "s1 to connect over wss", farm)
    st, body = https(m.port, "POST", "/api/v1/builders/quick/force", crt,
                     body={"reason": "tls"}, token=m.token())
    assert st == 201, body
    rid = json.loads(body)["request_id"]

    def done():
        st, body = https(m.port, "GET", f"/api/v1/requests/{rid}", crt)
        r = json.loads(body)
        return r["state"] == "done" and r
    req = wait_for(done, 30, "the build over wss", farm)
    st, body = https(m.port, "GET", f"/api/v1/builds/{req['build_id']}", crt)
    assert json.loads(body)["result"] == "SUCCESS"
    st, log = https(m.port, "GET",
                    f"/api/v1/builds/{req['build_id']}/steps/0/log", crt)
    assert st == 200 and log == b"over tls\n"


def test_slave_refuses_a_master_it_cannot_verify(tls_master, farm):
    m, crt, certs = tls_master
    other, _ = make_cert(certs, "other")
    # The wrong CA, then none (the system's, which never signed it).
    for args in (["--ca-file", str(other)], []):
        s = farm.slave(m, "s1", url=f"wss://127.0.0.1:{m.port}", args=args,
                       start=False).start(wait_connected=False)
        wait_for(lambda s=s: "TLS" in s.log_text() or "certificate" in
                 s.log_text(), 20, "the slave to report the TLS failure",
                 farm)
        time.sleep(1)
        st, body = https(m.port, "GET", "/api/v1/slaves/s1", crt)
        assert json.loads(body)["connected"] is False
        s.proc.kill_group()


def test_tf_try_verifies_the_master(tls_master, farm):
    if not os.access(TF_TRY, os.X_OK):
        pytest.skip("tf-try is not built")
    m, crt, certs = tls_master
    token = farm.run([BUILD_DIR / "master" / "tf-master", "user", "add",
                      "ann@example.org", "--name", "Ann", "-d", m.dir])
    assert token.returncode == 0, token.stderr
    token = token.stdout.strip().splitlines()[-1].strip()
    home = farm.tmp / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), TF_TRY_TOKEN=token)
    env.pop("XDG_CONFIG_HOME", None)
    url = f"https://127.0.0.1:{m.port}/"
    r = farm.run([TF_TRY, "--url", url, "--ca-file", crt, "whoami"],
                 env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "ann@example.org" in r.stdout
    other, _ = make_cert(certs, "other")
    for extra in (["--ca-file", other], []):
        r = farm.run([TF_TRY, "--url", url] + extra + ["whoami"], env=env)
        assert r.returncode != 0, (extra, r.stdout)
        assert "certificate" in (r.stderr + r.stdout).lower(), r.stderr
    r = farm.run([TF_TRY, "--url", url, "--ca-file", farm.tmp / "nope.pem",
                  "whoami"], env=env)
    assert r.returncode != 0 and "nope.pem" in r.stderr, r.stderr
    # The CA file may come from the config file instead.
    (home / ".config" / "tf-try").mkdir(parents=True)
    (home / ".config" / "tf-try" / "config.json").write_text(
        json.dumps({"url": url, "ca_file": str(crt)}))
    r = farm.run([TF_TRY, "whoami"], env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)


def test_plain_http_gets_nothing_on_the_tls_port(tls_master, farm):
    m, crt, certs = tls_master
    with pytest.raises((http.client.HTTPException, OSError)):
        c = http.client.HTTPConnection("127.0.0.1", m.port,
                                       timeout=scaled(5))
        c.request("GET", "/api/v1/master")
        r = c.getresponse()
        r.read()
        raise AssertionError(f"plain http answered {r.status}")


def test_tls_config_errors(farm):
    m = farm.master({"slaves": [], "builders": []}, start=False)
    cfg = m.config
    cfg["listen"] = {"host": "127.0.0.1", "port": m.port,
                     "tls": {"cert": "missing.crt"}}
    m.write_config(cfg)
    r = farm.run([BUILD_DIR / "master" / "tf-master", "checkconfig", m.dir])
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "listen.tls.cert" in out and "missing.crt" in out, out
    assert "listen.tls" in out and "key" in out, out
    cfg["listen"]["tls"] = {"cert": "a", "key": "b", "ca": "c"}
    m.write_config(cfg)
    r = farm.run([BUILD_DIR / "master" / "tf-master", "checkconfig", m.dir])
    assert r.returncode != 0 and "ca" in r.stdout + r.stderr


def test_tf_try_wait_follows_the_live_feed_over_wss(tls_master, farm):
    """tf-try --wait against an https:// master opens the live feed over
    wss://, verified with the same --ca-file, and follows the job to its
    end: the slave connects only once tf-try waits, so the build's lines
    come from the feed (-v says it came up)."""
    if not os.access(TF_TRY, os.X_OK):
        pytest.skip("tf-try is not built")
    m, crt, certs = tls_master
    r = farm.run([BUILD_DIR / "master" / "tf-master", "user", "add",
                  "ann@example.org", "--name", "Ann", "-d", m.dir])
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip().splitlines()[-1].strip()
    home = farm.tmp / "home"
    home.mkdir()
    # Outside any git work tree (the test's directory may be inside the
    # project's checkout): the empty diff goes without a base.
    outside = farm.tmp / "outside"
    outside.mkdir()
    env = dict(os.environ, HOME=str(home), TF_TRY_TOKEN=token,
               GIT_CEILING_DIRECTORIES=str(farm.tmp))
    env.pop("XDG_CONFIG_HOME", None)
    (farm.tmp / "empty.diff").write_bytes(b"")
    out_path, err_path = farm.tmp / "try.out", farm.tmp / "try.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        p = subprocess.Popen(
            [str(TF_TRY), "--url", f"https://127.0.0.1:{m.port}/",
             "--ca-file", str(crt), "-b", "quick", "--diff",
             str(farm.tmp / "empty.diff"), "--allow-empty", "--wait", "-v",
             "--poll-ms", "60000"],
            env=env, cwd=outside, stdout=out, stderr=err,
            stdin=subprocess.DEVNULL)

    def subscribed():
        assert p.poll() is None, (out_path.read_text(), err_path.read_text())
        return b"SUBSCRIBING -> UP" in err_path.read_bytes()
    try:
        wait_for(subscribed, 20, "tf-try's live feed over wss", farm)
        farm.slave(m, "s1", url=f"wss://127.0.0.1:{m.port}",
                   args=["--ca-file", str(crt)],
                   start=False).start(wait_connected=False)
        p.wait(timeout=scaled(60))
    finally:
        if p.poll() is None:
            p.kill()
    text = out_path.read_text()
    assert re.search(r"^quick: build \d+ started on slave s1$", text,
                     re.M), text
    assert re.search(r"^quick: step hi: SUCCESS \(", text, re.M), text
    assert re.search(r"^job \d+: SUCCESS \(every build passed\)", text,
                     re.M), text
    assert p.returncode == 0, (text, err_path.read_text())
