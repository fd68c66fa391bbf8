"""pytest plugin: a test run without ``REDIS_URL`` / ``DATABASE_URL`` gets them resolved.

Registered through the ``pytest11`` entry point, so ``make test`` (and a bare ``uv run pytest``)
finds the local servers, or starts throw-away embedded ones, before any fixture reads the
environment. The choice is printed in the session header. Subprocesses the tests start, and
pytest-xdist workers, inherit the variables; only the controlling process resolves.
"""

from __future__ import annotations

import os

import pytest

from devstack.resolution import Resolved, ServerStack

_STACK = pytest.StashKey[ServerStack]()
_RESOLVED = pytest.StashKey[Resolved]()


def pytest_configure(config: pytest.Config) -> None:
    """Resolve the servers once per test run and export them to the environment."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller has exported them
        return
    stack = ServerStack.for_test_run()
    config.add_cleanup(stack.close)
    resolved = stack.resolve()
    os.environ.update(resolved.environment())
    config.stash[_STACK] = stack
    config.stash[_RESOLVED] = resolved


def pytest_sessionstart(session: pytest.Session) -> None:
    """Say once which servers this run uses (passwords hidden), even under ``-q``."""
    resolved = session.config.stash.get(_RESOLVED, None)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if resolved and reporter is not None:
        reporter.write_line(f"servers: {resolved.describe()}")
