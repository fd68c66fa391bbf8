"""HTTP benchmark of notes-api: paced mixed POST/GET on loopback, beside a bare FastAPI insert.

Issue 12's targets: p99 <= 50 ms at 200 requests/s in the worst of 3 runs of 30 s, with the load
generator on the same machine; and a capacity (the highest paced rate held at p99 <= 50 ms) at
least half the bare baseline's. Each run:

1. a fresh database (created here, dropped at the end), ``notes-api migrate``, and an API key
   from ``notes-api create-key``;
2. ``notes-api serve`` and ``notes-api-worker`` (its outbox relay publishes what the POSTs write,
   under a unique ``STREAM_PREFIX`` whose keys are deleted afterwards) as subprocesses;
3. an open-loop load (:mod:`bench.http_load`), alternately ``POST /v1/notes`` (a note, its
   outbox event, auth) and ``GET /v1/notes/{id}`` of a note created earlier, recorded with a
   per-second series of the client's and the server's view (:mod:`bench.http_series`);
4. the same schedule against ``bench.http_baseline`` (FastAPI + asyncpg, one INSERT a request).

The headline is the worst run by p99; every run's figures and series go to ``.bench/results.json``
(the ``detail`` of the ``notes_api_latency_p99`` row). Then the capacity search
(:mod:`bench.http_capacity`) runs against a fresh notes-api, a fresh baseline and the stack floor
(:mod:`bench.http_stack_floor`: FastAPI, pydantic and SQLAlchemy Core, one INSERT), one after the
other, each step measuring the serving processes' CPU per request: on two cores shared with the
load generator, PostgreSQL and the worker, that cost is what bounds capacity.

The generator is ``bench.http_client`` (keep-alive connections on raw asyncio streams), not httpx:
it shares the two cores with the server, and httpx's CPU per request starved the server.

Knobs: ``BENCH_HTTP=0`` skips it, ``BENCH_HTTP_RUNS`` (3), ``BENCH_HTTP_SECONDS`` (30),
``BENCH_HTTP_RATE`` (200), ``BENCH_HTTP_WARMUP_SECONDS`` (3), ``BENCH_HTTP_CAPACITY`` (1; 0 skips),
``BENCH_HTTP_CAPACITY_SECONDS`` (90: the search's budget per server),
``BENCH_HTTP_CAPACITY_STEP_SECONDS`` (8), ``BENCH_HTTP_CAPACITY_START`` (100 req/s),
``BENCH_DATABASE_URL`` / ``DATABASE_URL`` (an admin URL).
``python -m bench.http_api`` runs it alone and merges its rows into ``.bench/results.json``.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.asyncio import Redis

from bench import http_capacity, http_series, http_servers
from bench.common import REDIS_URL, delete_prefix, env_int
from bench.http_client import LoadClient
from bench.http_load import Load, Request, paced
from bench.report import Row, Target, run_alone, targets_text

TARGET_P99_MS = 50.0
TARGET_CAPACITY_RATIO = 0.5
SERVERS = (
    ("notes-api", http_servers.notes_api),
    ("bare", http_servers.bare),
    ("stack floor", http_servers.stack_floor),
)
"""The capacity search's servers, in this order (the stack floor says how much is the stack)."""
CONNECTIONS = 64  # keep-alive connections of the generator; more in flight wait for one
Say = Callable[[str], None]


def enabled() -> bool:
    return os.environ.get("BENCH_HTTP", "1") != "0"


def _load_avg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Measured:
    """One server's recorded load in one run, with its per-second series."""

    load: Load
    series: list[http_series.Second]

    def summary(self) -> dict[str, Any]:
        load = self.load
        return {
            "achieved": round(load.achieved, 1),
            **{f"p{q:g}_ms": round(load.pct(q), 2) for q in (50, 90, 99, 99.9)},
            "max_ms": round(max(load.latencies_ms, default=0.0), 2),
            "errors": load.errors,
            "generator_lag_max_ms": round(load.max_lag_ms, 1),
        }


async def _measure(
    server: http_servers.Server, database: str, rate: float, seconds: float
) -> Measured:
    """Warm the server up, then record ``seconds`` at ``rate`` with the server-side sampler."""
    async with LoadClient(
        "127.0.0.1", server.port, connections=CONNECTIONS, headers=server.headers
    ) as client:
        warmup = float(os.environ.get("BENCH_HTTP_WARMUP_SECONDS", "3"))
        await paced(client, server.request, rate, warmup)
        sampler = http_series.Sampler(
            ops_ports=server.ops_ports,
            pids=server.pids,
            admin_url=http_servers.ADMIN_URL,
            database=database,
        )
        async with sampler:
            load = await paced(client, server.request, rate, seconds)
    return Measured(load, http_series.build(load, sampler))


def _describe(label: str, measured: Measured) -> str:
    load = measured.load
    pcts = "/".join(f"{load.pct(q):.1f}" for q in (50, 90, 99, 99.9))
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(load.errors.items())) or "none"
    return (
        f"    {label}: {load.achieved:.1f} req/s ok of {load.rate:g} scheduled, "
        f"p50/p90/p99/p99.9 {pcts} ms, max {max(load.latencies_ms, default=0):.1f} ms, "
        f"errors {errors}, generator lag max {load.max_lag_ms:.1f} ms\n"
        f"      p99 by second: [{http_series.sparkline(measured.series)}]"
    )


@dataclass
class Run:
    number: int
    notes: Measured
    bare: Measured
    load_avg_before: str
    load_avg_after: str

    def as_json(self) -> dict[str, Any]:
        return {
            "run": self.number,
            "load_avg_before": self.load_avg_before,
            "load_avg_after": self.load_avg_after,
            "notes_api": {**self.notes.summary(), "series": http_series.as_json(self.notes.series)},
            "bare": {**self.bare.summary(), "series": http_series.as_json(self.bare.series)},
        }


async def _one_run(number: int, prefix: str, rate: float, seconds: float, say: Say) -> Run:
    before = _load_avg()
    async with http_servers.fresh_database(prefix) as database:
        async with http_servers.notes_api(database) as server:
            notes = await _measure(server, database.name, rate, seconds)
        async with http_servers.bare(database) as server:
            bare = await _measure(server, database.name, rate, seconds)
    run = Run(number, notes, bare, before, _load_avg())
    say(f"  run {number}: load avg {run.load_avg_before} before, {run.load_avg_after} after")
    say(_describe("notes-api (POST+GET)", notes))
    say(_describe("bare FastAPI+asyncpg INSERT", bare))
    for second in http_series.notable(notes.series)[:12]:
        say(f"      {http_series.describe(second)}")
    return run


def _cpu(pids: tuple[int, ...]) -> float:
    return sum(http_series.cpu_seconds(pid) or 0.0 for pid in pids)


async def _step(
    client: LoadClient, request: Request, pids: tuple[int, ...], rate: float, seconds: float
) -> Load:
    await paced(client, request, rate, 1.0)  # unrecorded lead-in
    before = _cpu(pids)
    load = await paced(client, request, rate, seconds)
    if load.latencies_ms:
        load.server_cpu_ms = (_cpu(pids) - before) * 1000 / len(load.latencies_ms)
    return load


async def _capacity(prefix: str, say: Say) -> tuple[http_capacity.Capacity, ...]:
    budget = float(os.environ.get("BENCH_HTTP_CAPACITY_SECONDS", "90"))
    step_seconds = float(os.environ.get("BENCH_HTTP_CAPACITY_STEP_SECONDS", "8"))
    start = float(env_int("BENCH_HTTP_CAPACITY_START", 100))
    results = []
    async with http_servers.fresh_database(prefix) as database:
        for label, serve in SERVERS:
            async with (
                serve(database) as server,
                LoadClient(
                    "127.0.0.1", server.port, connections=CONNECTIONS, headers=server.headers
                ) as client,
            ):
                found = await http_capacity.search(
                    partial(_step, client, server.request, server.pids["api"]),
                    target_ms=TARGET_P99_MS,
                    start=start,
                    step_seconds=step_seconds,
                    budget_seconds=budget,
                )
            cpu = found.cpu_ms_per_request()
            cpu_text = "-" if cpu is None else f"{cpu:.2f} ms"
            say(f"    capacity {label}: {found.text()}; serving CPU per request {cpu_text}, "
                f"load avg {_load_avg()}")  # fmt: skip
            results.append(found)
    return tuple(results)


async def run(say: Say) -> tuple[list[Row], list[Target]]:
    """Run the scenario ``BENCH_HTTP_RUNS`` times, then the capacity search; rows and targets."""
    rate = float(env_int("BENCH_HTTP_RATE", 200))
    seconds = float(os.environ.get("BENCH_HTTP_SECONDS", "30"))
    count = env_int("BENCH_HTTP_RUNS", 3)
    prefix = f"bench-http-{uuid.uuid4().hex[:10]}:"
    say(
        f"http: {count} runs of paced {rate:g} req/s for {seconds:g}s (mixed POST/GET with auth "
        f"and outbox; a fresh database each), key prefix {prefix!r}, load avg {_load_avg()}"
    )
    redis = Redis.from_url(REDIS_URL)
    runs: list[Run] = []
    capacity: tuple[http_capacity.Capacity, ...] = ()
    try:
        for number in range(1, count + 1):
            runs.append(await _one_run(number, prefix, rate, seconds, say))
        if os.environ.get("BENCH_HTTP_CAPACITY", "1") != "0":
            say(f"  capacity: highest paced rate with p99 <= {TARGET_P99_MS:g} ms")
            capacity = await _capacity(prefix, say)
    finally:
        await delete_prefix(redis, prefix)
        await redis.aclose()
    return _rows_and_targets(runs, capacity, rate, seconds, say)


def _rows_and_targets(
    runs: list[Run],
    capacity: tuple[http_capacity.Capacity, ...],
    rate: float,
    seconds: float,
    say: Say,
) -> tuple[list[Row], list[Target]]:
    worst = max(runs, key=lambda r: r.notes.load.pct(99))
    notes, bare = worst.notes.load, worst.bare.load
    p99s = ", ".join(f"{r.notes.load.pct(99):.1f}" for r in runs)
    bare_p99s = ", ".join(f"{r.bare.load.pct(99):.1f}" for r in runs)
    say(f"  worst of {len(runs)} runs: run {worst.number}")
    say(f"    notes-api p99 by run: {p99s} ms; bare p99 by run: {bare_p99s} ms")
    detail = {"runs": [r.as_json() for r in runs], "worst_run": worst.number}
    rows = [
        Row.against("notes_api_throughput", notes.achieved, "req/s", bare.achieved),
        Row.against("notes_api_latency_p50", notes.pct(50), "ms", bare.pct(50)),
        Row.against("notes_api_latency_p99", notes.pct(99), "ms", bare.pct(99), detail=detail),
        Row("bare_fastapi_latency_p99", bare.pct(99), "ms"),
    ]
    sustained = all(r.notes.load.sustained() for r in runs)
    targets = [
        Target(
            f"notes-api p99 <= {TARGET_P99_MS:g} ms at {rate:g} req/s, worst of {len(runs)} "
            f"runs of {seconds:g}s",
            sustained and notes.pct(99) <= TARGET_P99_MS,
            f"p99 {p99s} ms; {sum(sum(r.notes.load.errors.values()) for r in runs)} errors",
        )
    ]
    if capacity:
        api, base, floor = capacity
        ratio = api.held / base.held if base.held else 0.0
        steps = {"notes_api": api.steps, "bare": base.steps, "stack_floor": floor.steps}
        rows += [
            Row.against("notes_api_capacity_p99_50ms", api.held, "req/s", base.held, detail=steps),
            Row.against("stack_floor_capacity_p99_50ms", floor.held, "req/s", base.held),
        ]
        cpu = {
            label: c.cpu_ms_per_request()
            for label, c in zip(("api", "bare", "floor"), capacity, strict=True)
        }
        if None not in cpu.values():
            rows += [
                Row.against("notes_api_cpu_per_request", cpu["api"], "ms", cpu["bare"]),
                Row.against("stack_floor_cpu_per_request", cpu["floor"], "ms", cpu["bare"]),
            ]
        targets.append(
            Target(
                f"notes-api capacity >= {TARGET_CAPACITY_RATIO:g}x the bare baseline's",
                ratio >= TARGET_CAPACITY_RATIO,
                f"{api.held:g} vs {base.held:g} req/s = {ratio:.2f}x",
            )
        )
    say("  targets (issue 12; reported, never failing):")
    say(targets_text(targets))
    return rows, targets


if __name__ == "__main__":
    sys.exit(run_alone(run))
