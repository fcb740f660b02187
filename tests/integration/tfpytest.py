"""tfpytest.py - the pytest fixtures and hooks of the suites that run real
processes (tests/integration and tests/conformance); each suite's
conftest.py imports them with `from tfpytest import *`.

- `farm`: a tfharness.Farm in the test's tmp directory; everything it
  started is killed at teardown, pass or fail.
- A per-test time limit (our own, pytest-timeout is not in Debian's
  python3-pytest): SIGALRM fails the test after 120 s, or N s with
  @pytest.mark.timeout(N); scaled by $TF_TIMEOUT_SCALE.
- `pg_cluster` (session): a real PostgreSQL started once in a temp dir
  (tfharness.PgCluster: initdb + pg_ctl, unix socket, as the postgres
  user when root) and stopped at the end; skipped when PostgreSQL is
  not installed unless $TF_REQUIRE_POSTGRESQL=1 (CI), where it fails.
- `pg_url`: a fresh database on it for one test, as a URL for
  Master(store=...) / "store": {"postgres": URL}.
- On failure, the tail of every log the test's processes wrote is attached
  to the report (shown by -rfE), with the full paths.
"""

import os
import signal

import pytest

import tfharness

__all__ = ["DEFAULT_TIMEOUT", "pytest_configure", "pytest_sessionstart",
           "HarnessTimeout", "_time_limit", "farm", "pg_cluster", "pg_url",
           "pytest_runtest_makereport"]

DEFAULT_TIMEOUT = 120


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "timeout(seconds): the test's time limit (default "
        f"{DEFAULT_TIMEOUT} s, times $TF_TIMEOUT_SCALE)")
    config.addinivalue_line(
        "markers", "valgrind: runs the daemons under valgrind (scripts/test "
        "runs these separately)")


def pytest_sessionstart(session):
    missing = [str(p) for p in (tfharness.TF_MASTER, tfharness.TF_SLAVE)
               if not os.access(p, os.X_OK)]
    if missing:
        raise pytest.UsageError(
            "integration tests need built binaries; missing: "
            + ", ".join(missing) + f" (TF_BUILD_DIR={tfharness.BUILD_DIR}; "
            "build with: ninja -C " + str(tfharness.BUILD_DIR) + ")")


class HarnessTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _time_limit(request):
    marker = request.node.get_closest_marker("timeout")
    limit = marker.args[0] if marker else DEFAULT_TIMEOUT
    limit = max(1, int(tfharness.scaled(limit)))

    def expired(signum, frame):
        raise HarnessTimeout(f"test exceeded its time limit of {limit} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def farm(tmp_path, request):
    f = tfharness.Farm(tmp_path)
    request.node._tf_farm = f
    try:
        yield f
    finally:
        f.cleanup()


@pytest.fixture(scope="session")
def pg_cluster():
    if not tfharness.pg_bindir():
        if os.environ.get("TF_REQUIRE_POSTGRESQL") == "1":
            pytest.fail("PostgreSQL is required (TF_REQUIRE_POSTGRESQL=1) "
                        "but initdb was not found")
        pytest.skip("PostgreSQL is not installed (scripts/deps installs it)")
    c = tfharness.PgCluster()
    try:
        c.initdb().start()
        yield c
    finally:
        c.destroy()


@pytest.fixture
def pg_url(pg_cluster):
    return pg_cluster.url(pg_cluster.new_database())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    f = getattr(item, "_tf_farm", None)
    if f is None or not rep.failed:
        return
    for label, path in f.logs():
        try:
            text = path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            text = "(no log file)"
        rep.sections.append((f"{rep.when}: log of {label} ({path})",
                             tfharness.tail(text, 120)))
