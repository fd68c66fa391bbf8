"""Capacity: the highest paced rate a server holds with p99 <= a target, by a short step-up search.

Steps of a few seconds against a running server: the rate doubles from ``start`` until a step
misses (p99 over the target, a failure, or fewer answers than scheduled), then bisects between the
last rate held and the first missed until they are within 10 % or the time budget is spent. Each
step is preceded by a second of unrecorded load at its rate (new connections, a cold plan cache).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.http_load import Load

Step = Callable[[float, float], Awaitable[Load]]
"""``step(rate, seconds)``: one recorded paced load at ``rate`` for ``seconds``."""


@dataclass
class Capacity:
    """The search's result: the highest rate held (0 when none was) and every step taken."""

    target_ms: float
    held: float = 0.0
    steps: list[dict[str, float | bool | None]] = field(default_factory=list)

    def cpu_ms_per_request(self) -> float | None:
        """The serving processes' CPU per request at the highest rate held (the first step's
        if none was held): the cost that bounds capacity on a machine the load shares."""
        held = [s for s in self.steps if s["held"]]
        step = max(held, key=lambda s: float(s["rate"] or 0)) if held else self.steps[0]
        cpu = step.get("cpu_ms_per_request") if step else None
        return float(cpu) if isinstance(cpu, int | float) else None

    def text(self) -> str:
        path = ", ".join(
            f"{s['rate']:g}:{_ms(s['p99_ms'])}{'' if s['held'] else '!'}" for s in self.steps
        )
        return f"{self.held:g} req/s (steps rate:p99, ! = missed: {path})"


def _ms(value: object) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.0f}ms"


def _held(load: Load, target_ms: float) -> bool:
    return load.sustained() and load.pct(99) <= target_ms


async def search(
    step: Step,
    *,
    target_ms: float,
    start: float,
    step_seconds: float,
    budget_seconds: float,
) -> Capacity:
    """Step the rate up from ``start`` (doubling, then bisecting) within ``budget_seconds``."""
    capacity = Capacity(target_ms)
    missed: float | None = None
    rate = start
    deadline = time.monotonic() + budget_seconds
    while time.monotonic() + step_seconds <= deadline:
        load = await step(rate, step_seconds)
        held = _held(load, target_ms)
        p99 = round(load.pct(99), 2) if load.latencies_ms else None
        cpu = None if load.server_cpu_ms is None else round(load.server_cpu_ms, 3)
        capacity.steps.append(
            {"rate": rate, "p99_ms": p99, "achieved": round(load.achieved, 1), "held": held,
             "cpu_ms_per_request": cpu}
        )  # fmt: skip
        if held:
            capacity.held = max(capacity.held, rate)
        else:
            missed = rate if missed is None else min(missed, rate)
        if missed is None:
            rate *= 2
            continue
        if missed - capacity.held <= 0.1 * max(capacity.held, start):
            break
        rate = round((capacity.held + missed) / 2)
    return capacity
