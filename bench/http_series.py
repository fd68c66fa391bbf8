"""Per-second series of an HTTP run: the client's latency and in-flight, the server's view beside.

A p99 over 30 s hides whether the tail is spread thin or one stall; a series by second shows it,
and what the server was doing meanwhile says why. While a run is recorded, :class:`Sampler`
collects, aligned on the run's start:

- at the end of each second, the API's ``/metrics`` on its ops port (pool occupancy and overflow,
  connections opened and closed, checkout waits; :mod:`servicekit.pool_metrics`), the CPU time
  of the API and worker processes from ``/proc``, and how long their event loop was runnable but
  waiting for a CPU (``/proc/<pid>/schedstat``: other work on the machine taking the cores);
- every 50 ms, PostgreSQL's ``pg_stat_activity`` for the bench database: how many backends are
  active and what they wait on (``IO:WALSync`` or ``LWLock:WALWrite`` would be commit flushes
  queueing, ``Lock:*`` row or relation locks).

:func:`build` joins them with the client's samples into one :class:`Second` per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.common import percentile
from bench.http_load import Load

PG_SAMPLE_SECONDS = 0.05
SLOW_CHECKOUT_SECONDS = 0.005  # a checkout over this waited for a connection (or opened one)
_TICKS = os.sysconf("SC_CLK_TCK")
_POOL_FIGURES = ("db_pool_checked_out", "db_pool_overflow", "db_pool_idle")
_POOL_COUNTERS = ("db_pool_connects_total", "db_pool_closes_total", "db_pool_checkouts_total")


@dataclass
class Second:
    """One second of a run (by scheduled send time)."""

    t: int
    sent: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    in_flight_peak: int
    server: dict[str, float] = field(default_factory=dict)
    """Pool gauges at the second's end; opens/closes/checkouts and slow checkouts in the second;
    CPU share of the API and worker processes (1.0 = one core), and the share of the second their
    main thread waited, runnable, for a CPU (``runq_*``)."""
    pg_active: float | None = None
    """Mean number of active backends of the bench database (sampled every 50 ms)."""
    pg_waits: dict[str, int] = field(default_factory=dict)
    """Samples of active backends by wait event (``CPU`` when not waiting)."""


def _scrape_values(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    slow_le = f"{SLOW_CHECKOUT_SECONDS:g}"
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _POOL_FIGURES or sample.name in _POOL_COUNTERS:
                values[sample.name] = sample.value
            elif sample.name == "db_pool_wait_seconds_bucket" and (
                f"{float(sample.labels['le']):g}" == slow_le
            ):
                values["fast_checkouts"] = sample.value
            elif sample.name == "db_pool_wait_seconds_count":
                values["checkouts"] = sample.value
    return values


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _runnable_wait_seconds(pid: int) -> float | None:
    """Time the process's main thread (the event loop) was ready to run but not given a CPU."""
    try:
        with open(f"/proc/{pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


class Sampler:
    """Samples the server side of a run each second (ops port, /proc) and PostgreSQL every 50 ms."""

    def __init__(
        self,
        *,
        ops_ports: tuple[int, ...],
        pids: dict[str, tuple[int, ...]],
        admin_url: str,
        database: str,
    ) -> None:
        self.ops_ports, self.pids = ops_ports, pids
        self.admin_url, self.database = admin_url, database
        self.scrapes: list[tuple[float, dict[str, float]]] = []
        self.pg: list[tuple[float, list[str]]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Sampler:
        self._tasks = [
            asyncio.create_task(self._each_second()),
            asyncio.create_task(self._postgres()),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _each_second(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            started = time.perf_counter()
            tick = 0
            while not self._stop.is_set():
                values: dict[str, float] = {}
                for port in self.ops_ports:  # one per serving process: their figures add up
                    # A missed or unreadable scrape leaves a gap in the series, not a failed run.
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        reply = await http.get(f"http://127.0.0.1:{port}/metrics")
                        for figure, value in _scrape_values(reply.text).items():
                            values[figure] = values.get(figure, 0.0) + value
                for name, pids in self.pids.items():
                    cpus = [cpu_seconds(pid) for pid in pids]
                    waits = [_runnable_wait_seconds(pid) for pid in pids]
                    if None not in cpus:
                        values[f"cpu_{name}"] = sum(c for c in cpus if c is not None)
                    if None not in waits:
                        values[f"runq_{name}"] = sum(w for w in waits if w is not None)
                self.scrapes.append((time.perf_counter(), values))
                tick += 1
                with contextlib.suppress(TimeoutError):
                    delay = max(0.0, started + tick - time.perf_counter())
                    await asyncio.wait_for(self._stop.wait(), delay)

    async def _postgres(self) -> None:
        connection = await asyncpg.connect(self.admin_url)
        try:
            while not self._stop.is_set():
                rows = await connection.fetch(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS wait"
                    " FROM pg_stat_activity"
                    " WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid()",
                    self.database,
                )
                self.pg.append((time.perf_counter(), [row["wait"] for row in rows]))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), PG_SAMPLE_SECONDS)
        finally:
            await connection.close()


def _server_second(
    before: dict[str, float], after: dict[str, float], span: float
) -> dict[str, float]:
    figures = {name[len("db_pool_") :]: after[name] for name in _POOL_FIGURES if name in after}
    for name, short in (("db_pool_connects_total", "connects"), ("db_pool_closes_total", "closes")):
        if name in after and name in before:
            figures[short] = after[name] - before[name]
    if {"checkouts", "fast_checkouts"} <= before.keys() & after.keys():
        checkouts = after["checkouts"] - before["checkouts"]
        fast = after["fast_checkouts"] - before["fast_checkouts"]
        figures["checkouts"] = checkouts
        figures["slow_checkouts"] = checkouts - fast
    for name in after:
        if name.startswith(("cpu_", "runq_")) and name in before and span > 0:
            figures[name] = round((after[name] - before[name]) / span, 3)
    return figures


def build(load: Load, sampler: Sampler | None) -> list[Second]:
    """One :class:`Second` per second of ``load``, with the sampler's figures when given."""
    seconds = max(1, int(load.seconds + 0.999))
    latencies: list[list[float]] = [[] for _ in range(seconds)]
    sent, failed = [0] * seconds, [0] * seconds
    for offset, latency in load.samples:
        s = min(seconds - 1, int(offset))
        sent[s] += 1
        if latency is None:
            failed[s] += 1
        else:
            latencies[s].append(latency)
    series = []
    for s in range(seconds):
        values = latencies[s]
        series.append(
            Second(
                t=s,
                sent=sent[s],
                failed=failed[s],
                p50_ms=round(percentile(values, 50), 2) if values else None,
                p99_ms=round(percentile(values, 99), 2) if values else None,
                max_ms=round(max(values), 2) if values else None,
                in_flight_peak=load.in_flight_peak.get(s, 0),
            )
        )
    if sampler is not None:
        _add_server(series, load.started, sampler)
    return series


def _add_server(series: list[Second], started: float, sampler: Sampler) -> None:
    scrapes = sampler.scrapes
    for (t0, before), (t1, after) in itertools.pairwise(scrapes):
        s = int(t1 - started - 0.5)  # the scrape at the end of second s (they start with the run)
        if 0 <= s < len(series):
            series[s].server = _server_second(before, after, t1 - t0)
    waits: dict[int, Counter[str]] = {}
    samples: dict[int, int] = {}
    for t, active in sampler.pg:
        s = int(t - started)
        if 0 <= s < len(series):
            waits.setdefault(s, Counter()).update(active)
            samples[s] = samples.get(s, 0) + 1
    for s, counter in waits.items():
        series[s].pg_active = round(sum(counter.values()) / samples[s], 2)
        series[s].pg_waits = dict(counter.most_common(4))


_BARS = ((5, "."), (10, "_"), (25, "-"), (50, "="), (100, "+"), (250, "#"))


def sparkline(series: list[Second]) -> str:
    """A character per second by p99: . <5 ms, _ <10, - <25, = <50, + <100, # <250, @ beyond."""
    out = []
    for second in series:
        if second.failed:
            out.append("x")
        elif second.p99_ms is None:
            out.append(" ")
        else:
            out.append(next((c for limit, c in _BARS if second.p99_ms < limit), "@"))
    return "".join(out)


def notable(series: list[Second], *, over_ms: float = 25.0) -> list[Second]:
    """The seconds worth a line: a p99 over ``over_ms``, failures, slow checkouts or new
    connections."""
    return [
        s
        for s in series
        if (s.p99_ms or 0) > over_ms
        or s.failed
        or s.server.get("slow_checkouts", 0) > 0
        or s.server.get("connects", 0) > 0
    ]


def describe(second: Second) -> str:
    """One compact line: the client's view, then the server's."""
    server = second.server
    parts = [
        f"t={second.t:>3}s p50/p99/max {second.p50_ms}/{second.p99_ms}/{second.max_ms} ms",
        f"in-flight {second.in_flight_peak}",
    ]
    if second.failed:
        parts.append(f"failed {second.failed}")
    if server:
        pool = "/".join(f"{server.get(k, 0):g}" for k in ("checked_out", "overflow"))
        parts.append(f"pool out/overflow {pool}")
        parts.append(
            f"opened {server.get('connects', 0):g} closed {server.get('closes', 0):g}"
            f" slow checkouts {server.get('slow_checkouts', 0):g}"
        )
        cpu = " ".join(f"{k[4:]} {v:.0%}" for k, v in server.items() if k.startswith("cpu_"))
        if cpu:
            parts.append(f"cpu {cpu}")
        runq = " ".join(f"{k[5:]} {v:.0%}" for k, v in server.items() if k.startswith("runq_"))
        if runq:
            parts.append(f"waiting for a CPU {runq}")
    if second.pg_waits:
        waits = ", ".join(f"{k} {v}" for k, v in second.pg_waits.items())
        parts.append(f"pg active {second.pg_active} ({waits})")
    return "; ".join(parts)


def as_json(series: list[Second]) -> list[dict[str, Any]]:
    return [asdict(s) for s in series]
