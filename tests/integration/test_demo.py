"""scripts/demo, the README's first command, in --check mode: it must
build, run the demo build to SUCCESS and stop both daemons cleanly."""

import os
import socket

import pytest

from tfharness import BUILD_DIR, REPO, free_port, pids_with_env

DEMO = REPO / "scripts" / "demo"


def demo_env():
    env = dict(os.environ)
    env["TF_BUILD_DIR"] = str(BUILD_DIR)
    return env


@pytest.mark.timeout(300)
def test_demo_check(farm):
    port = free_port()
    d = farm.tmp / "demo"
    r = farm.run([DEMO, "--check", "--port", port, "--dir", d],
                 timeout=240, env=demo_env())
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "demo check passed" in r.stdout, out
    assert f"http://127.0.0.1:{port}/api/v1/builders" in r.stdout
    assert f"http://127.0.0.1:{port}/api/v1/builds/1" in r.stdout
    assert ": SUCCESS" in r.stdout
    assert "tf-master stopped (exit status 0)" in r.stdout
    assert "tf-slave stopped (exit status 0)" in r.stdout
    assert (d / "master.log").exists() and (d / "slave.log").exists()
    assert (d / "state.sqlite").exists()
    assert not pids_with_env(f"{farm.marker_key}={farm.marker_value}"), \
        "the demo left processes behind"

    # Again on the same directory: it reuses it and builds number 2.
    r = farm.run([DEMO, "--check", "--port", port, "--dir", d],
                 timeout=240, env=demo_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "using the existing" in r.stdout
    assert "/api/v1/builds/2" in r.stdout


def test_demo_refuses_a_port_in_use(farm):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        r = farm.run([DEMO, "--check", "--port", port, "--dir",
                      farm.tmp / "demo"], timeout=120, env=demo_env())
    finally:
        s.close()
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"port {port}" in r.stderr and "in use" in r.stderr, r.stderr
    assert not (farm.tmp / "demo" / "master.json").exists()


def test_demo_rejects_bad_options(farm):
    r = farm.run([DEMO, "--port", "http"], env=demo_env())
    assert r.returncode == 2 and "--port" in r.stderr, r.stderr
    r = farm.run([DEMO, "--frobnicate"], env=demo_env())
    assert r.returncode == 2, r.stderr
