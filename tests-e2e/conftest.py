"""End-to-end fixtures: the real processes (notes-api, its worker, archiver, scheduler, fanout)
on a private Redis and a private PostgreSQL, started once per module (see README.md).

``platform`` is module-scoped: every test of a module shares one platform and uses owners of its
own. A module changes the processes' environment by overriding ``platform_env``. A failed test's
report carries the tail of every log of each platform still running.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests-e2e is not a package (pytest imports it in importlib mode): the harness is imported from
# this folder, by these fixtures and by every module beside them.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from harness import Platform, private_platform


@pytest.fixture(scope="module")
def platform_env() -> dict[str, str]:
    """Extra environment for every process of the module's platform (override in a module)."""
    return {}


@pytest.fixture(scope="module")
def platform(
    platform_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """Every process on a private Redis + PostgreSQL + OTLP receiver, ready; one per module.

    At the end every process is stopped with SIGTERM and must exit 0 (graceful shutdown).
    """
    with private_platform(tmp_path_factory.mktemp("platform"), env=platform_env) as running:
        yield running
        codes = running.close()
        assert codes == dict.fromkeys(codes, 0), f"unclean shutdown {codes}:\n{running.log_tails()}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.failed:
        for live in list(Platform.live):
            report.sections.append((f"platform logs ({live.logs})", live.log_tails()))
    return report
