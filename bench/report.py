"""Result rows, the printed table, the issue's targets, and ``.bench/results.json``."""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(".bench/results.json")


@dataclass
class Row:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    detail: dict[str, Any] | None = None
    """What stands behind the figure (runs, per-second series, search steps); not printed."""

    @classmethod
    def against(
        cls,
        name: str,
        value: float,
        unit: str,
        baseline: float | None,
        *,
        detail: dict[str, Any] | None = None,
    ) -> Row:
        ratio = value / baseline if baseline else None
        return cls(name, value, unit, baseline, ratio, detail)


@dataclass
class Target:
    label: str
    met: bool
    detail: str


def _num(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "msgs/s" or abs(value) >= 1000:
        return f"{value:,.0f}"
    if unit == "x":
        return f"{value:.2f}"
    return f"{value:.2f}"


def table(rows: list[Row]) -> str:
    header = ("name", "value", "unit", "baseline", "ratio")
    body = [
        (
            r.name,
            _num(r.value, r.unit),
            r.unit,
            _num(r.baseline, r.unit),
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(5)]
    aligns = ["<", ">", "<", ">", ">"]
    lines = []
    for line in [header, *body]:
        lines.append(
            "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(line, aligns, widths, strict=True))
        )
        if line is header:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write(rows: list[Row], path: Path = RESULTS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = []
    for row in rows:
        item = asdict(row)
        for k, v in item.items():
            if isinstance(v, float) and math.isnan(v):
                item[k] = None
        clean.append(item)
    path.write_text(json.dumps(clean, indent=2) + "\n")
    return path


def targets_text(targets: list[Target]) -> str:
    return "\n".join(f"  {'PASS' if t.met else 'MISS'}  {t.label}: {t.detail}" for t in targets)


def merge(rows: list[Row], path: Path = RESULTS) -> Path:
    """Replace these rows in an existing results file (the other scenarios' rows stay)."""
    existing: list[dict[str, Any]] = []
    if path.exists():
        existing = json.loads(path.read_text())
    names = {r.name for r in rows}
    kept = [Row(**item) for item in existing if item.get("name") not in names]
    return write([*kept, *rows], path)


Scenario = Callable[[Callable[[str], None]], Coroutine[Any, Any, tuple[list[Row], list[Target]]]]


def run_alone(scenario: Scenario) -> int:
    """`python -m bench.<scenario>`: run it, print its table, merge its rows into the results."""
    from bench import machine  # it imports Row from this module

    def say(line: str) -> None:
        print(line, flush=True)

    async def measured() -> list[Row]:
        redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("REDIS_URL")
        host = await machine.describe(
            redis_url or "redis://127.0.0.1:6379/0", os.environ.get("DATABASE_URL")
        )
        say(machine.summary(host))
        rows, _ = await scenario(say)
        return [machine.row(host), *rows]

    rows = asyncio.run(measured())
    say("")
    say(table(rows))
    say(f"\nwrote {merge(rows)}")
    return 0
