#!/usr/bin/env python3
"""with_pg.py - runs a unit test binary against a real PostgreSQL.

Starts a server in a temp dir with the integration harness's PgCluster
(initdb + pg_ctl; as the postgres user when run as root; unix socket in
the temp dir), runs the binary with TF_TEST_PG_URL set to the server's
"postgres" database (tests/unit/tf_pg.h makes a fresh database per test
from it), stops the server, and exits with the binary's status. Exits 77
(meson's "skipped") when PostgreSQL is not installed, unless
TF_REQUIRE_POSTGRESQL=1 (CI), where that is a failure.

usage: with_pg.py BINARY [ARGS...]
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import tfharness  # noqa: E402


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    if not tfharness.pg_bindir():
        if os.environ.get("TF_REQUIRE_POSTGRESQL") == "1":
            print("with_pg.py: PostgreSQL is required but not installed",
                  file=sys.stderr)
            return 1
        print("with_pg.py: PostgreSQL is not installed: skipped")
        return 77
    c = tfharness.PgCluster()
    try:
        c.initdb().start()
        env = dict(os.environ)
        env["TF_TEST_PG_URL"] = c.url("postgres")
        return subprocess.run(sys.argv[1:], env=env).returncode
    finally:
        c.destroy()


if __name__ == "__main__":
    sys.exit(main())
