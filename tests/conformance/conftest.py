"""conftest.py - the conformance suite (tests/conformance, see
docs/testing.md and docs/protocol.md "Conformance") runs on the
integration suite's harness: tests/integration goes on sys.path, and its
shared fixtures and hooks (tfpytest.py: `farm`, time limits, logs attached
to failures) apply here too."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from tfpytest import *  # noqa: E402,F401,F403 (pytest finds them by name)
