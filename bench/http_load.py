"""The open-loop paced load of the HTTP benchmark, and what each run records.

Requests are *scheduled* at a fixed rate and latency counts from the scheduled time, so a slow
server cannot slow the generator down and hide its own queueing (no coordinated omission). Each
request is kept as (scheduled offset, latency or failure), and the in-flight count's peak is kept
per second, so a run can be cut into a per-second series (:mod:`bench.http_series`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.common import percentile
from bench.http_client import HttpError, LoadClient, Reply

DRAIN_SECONDS = 10.0
Request = Callable[[LoadClient, int], Awaitable[Reply]]


@dataclass
class Load:
    """One paced run: per request its scheduled offset and latency (None when it failed)."""

    rate: float
    seconds: float
    started: float = 0.0
    """``time.perf_counter()`` at the first scheduled send: samplers align their seconds on it."""
    samples: list[tuple[float, float | None]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    in_flight_peak: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    max_lag_ms: float = 0.0
    server_cpu_ms: float | None = None
    """The serving processes' CPU time per answered request, when the caller measured it."""

    @property
    def latencies_ms(self) -> list[float]:
        return [latency for _, latency in self.samples if latency is not None]

    @property
    def achieved(self) -> float:
        """Successful responses per second over the run (schedule start to last response)."""
        return len(self.latencies_ms) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def sustained(self, share: float = 0.98) -> bool:
        """Every request answered with 2xx, at (nearly) the scheduled rate."""
        return not self.errors and self.achieved >= share * self.rate


async def paced(client: LoadClient, request: Request, rate: float, seconds: float) -> Load:
    """Send ``request(client, i)`` at ``rate``/s for ``seconds`` (open loop); gather latencies."""
    load = Load(rate, seconds)
    total = int(rate * seconds)
    start = load.started = time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    last_end = start
    in_flight = 0

    async def one(i: int, scheduled: float) -> None:
        nonlocal last_end, in_flight
        try:
            response = await request(client, i)
            ok = 200 <= response.status_code < 300
            kind = str(response.status_code)
        except HttpError as exc:
            ok, kind = False, type(exc).__name__
        finally:
            in_flight -= 1
        end = time.perf_counter()
        last_end = max(last_end, end)
        load.samples.append((scheduled - start, (end - scheduled) * 1000 if ok else None))
        if not ok:
            load.errors[kind] = load.errors.get(kind, 0) + 1

    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            load.max_lag_ms = max(load.max_lag_ms, -delay * 1000)
        in_flight += 1
        second = int(i / rate)
        load.in_flight_peak[second] = max(load.in_flight_peak.get(second, 0), in_flight)
        task = asyncio.create_task(one(i, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:  # an overloaded server would take minutes to drain: what is left then is an error
        _, unfinished = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        if unfinished:
            load.errors[f"unfinished after +{DRAIN_SECONDS:g}s"] = len(unfinished)
    load.elapsed = max(last_end, start + total / rate) - start
    return load
