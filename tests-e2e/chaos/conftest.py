"""Chaos fixtures and the suite's summary: one line per scenario with its figures, then the total.

Scenarios use the e2e `platform` fixture (the harness's private Redis and PostgreSQL, which they
kill and stop; one platform per module, every process required to exit 0 at the end). Here its
environment adds a per-second schedule, so the scheduler and notes-api-worker's command handling
work the whole time, and a short idempotency claim lock, so a request killed mid-way is retried
within seconds rather than a minute.

`pytest_terminal_summary` prints, even under `-q`, a line for every test marked `chaos` in the
session (its figures when it recorded some with the `figures` fixture, else its outcome and
duration) and `chaos: N passed, N failed`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _pytest.terminal import TerminalReporter

FIGURES = "chaos-figures"
MARKED = "chaos-marked"
PER_SECOND_SCHEDULE = """
[[schedule]]
name = "chaos-every-second"
cron = "* * * * * *"
event = "commands.purge_idempotency_keys.v1"
payload = { older_than = { seconds_before_tick = 0 } }
overlap = "allow"
catch_up = "all"
catch_up_window_seconds = 300
"""


@pytest.fixture(scope="module")
def platform_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The e2e `platform` fixture's environment here: the per-second schedule, a 10 s claim lock."""
    schedules = tmp_path_factory.mktemp("chaos") / "schedules.toml"
    schedules.write_text(PER_SECOND_SCHEDULE)
    return {"SCHEDULES_FILE": str(schedules), "IDEMPOTENCY_LOCK_SECONDS": "10"}


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record the scenario's figures line (printed in the chaos summary, passed or failed)."""

    def record(line: str) -> None:
        request.node.user_properties.append((FIGURES, line))

    return record


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The report's keywords also hold node names (this folder is `chaos`): mark by the marker.
    for item in items:
        if item.get_closest_marker("chaos") is not None:
            item.user_properties.append((MARKED, True))


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    outcomes: dict[str, str] = {}
    lines: dict[str, str] = {}
    durations: dict[str, float] = {}
    for status in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(status, []):
            properties = dict(getattr(report, "user_properties", []))
            if MARKED not in properties:
                continue
            node = report.nodeid
            durations[node] = durations.get(node, 0.0) + getattr(report, "duration", 0.0)
            if status in ("failed", "error") or node not in outcomes:
                outcomes[node] = "failed" if status == "error" else status
            if FIGURES in properties:
                lines[node] = properties[FIGURES]
    if not outcomes:
        return
    terminalreporter.section("chaos")
    for node, outcome in outcomes.items():
        taken = f"{durations[node]:.0f} s"
        detail = f"{lines[node]}; {taken} in all" if node in lines else taken
        terminalreporter.write_line(f"{outcome.upper():7} {node.rsplit('::', 1)[-1]}: {detail}")
    passed = sum(1 for o in outcomes.values() if o == "passed")
    failed = sum(1 for o in outcomes.values() if o == "failed")
    skipped = len(outcomes) - passed - failed
    total = f"chaos: {passed} passed, {failed} failed"
    terminalreporter.write_line(total + (f", {skipped} skipped" if skipped else ""))
