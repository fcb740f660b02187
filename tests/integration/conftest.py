"""conftest.py - fixtures and hooks for the integration suite: the shared
ones of tfpytest.py (`farm`, per-test time limits, logs attached to
failures)."""

from tfpytest import *  # noqa: F401,F403 (pytest finds them by name)
