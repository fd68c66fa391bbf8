"""``make bench``: drain throughput, latency and memory of the job runtime vs its baselines.

Knobs (environment): BENCH_MESSAGES (20000), BENCH_REPEATS (3), BENCH_BACKLOG (100000),
BENCH_BURST (1000), BENCH_PACED_RATE (500), BENCH_PACED_SECONDS (5), BENCH_REDIS_URL/REDIS_URL;
the notes-api HTTP scenario (``bench.http_api``): BENCH_HTTP (1; 0 skips), BENCH_HTTP_RUNS (3),
BENCH_HTTP_SECONDS (30), BENCH_HTTP_CAPACITY (1; 0 skips the capacity search) and the rest in
``bench/http_api.py``;
``make run``'s start (``bench.startup``): BENCH_STARTUP (1; 0 skips), BENCH_STARTUP_RUNS (3);
``q`` over 100k notes (``bench.search``): BENCH_SEARCH (1; 0 skips) and its knobs there;
the scheduler's punctuality (``bench.scheduler_punctuality``): BENCH_SCHEDULER (1; 0 skips);
a bulk archive through fanout (``bench.fanout``): BENCH_FANOUT (1; 0 skips), BENCH_FANOUT_NOTES
(10000), BENCH_FANOUT_RUNS (3); job streams on one node vs a 3-master Redis Cluster
(``bench.cluster_scaleout``): BENCH_CLUSTER (1; 0 skips), BENCH_CLUSTER_MESSAGES (20000),
BENCH_CLUSTER_STREAMS (8), BENCH_CLUSTER_ROUNDS (3).

Scenarios run in rounds (raw, FastStream, runtime 1c, runtime 2c, then again), so background load
on the machine hits every scenario alike; each figure is the median of its rounds. Every contender
(raw loop, FastStream, runtime workers) runs on the services' event loop, uvloop.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from bench import (
    cluster_scaleout,
    fanout,
    faststream_sub,
    http_api,
    machine,
    raw_loop,
    runtime,
    scheduler_punctuality,
    search,
    startup,
)
from bench.common import REDIS_URL, Config, Drain, delete_prefix, median, run_prefix
from bench.report import Row, Target, table, targets_text, write
from servicekit.lifecycle import event_loop_factory

Say = Callable[[str], None]


@dataclass(frozen=True)
class Scenario:
    """A scenario after the runtime's: rows and targets of its own, skipped by its knob."""

    name: str
    enabled: Callable[[], bool]
    run: Callable[[Say], Awaitable[tuple[list[Row], list[Target]]]]


async def _startup(say: Say) -> tuple[list[Row], list[Target]]:
    return await asyncio.to_thread(startup.run, say)  # it times subprocesses, blocking


SCENARIOS = (
    # issue 12: notes-api's worst-of-3 tail and capacity (BENCH_HTTP=0 skips)
    Scenario("http", http_api.enabled, http_api.run),
    # issue 12: `GET /v1/notes?q=` over 100k notes, p99 <= 50 ms (BENCH_SEARCH=0 skips)
    Scenario("search", search.enabled, search.run),
    # issue 13: tick punctuality and delayed-job lateness, three replicas (BENCH_SCHEDULER=0)
    Scenario("scheduler", scheduler_punctuality.enabled, scheduler_punctuality.run),
    # issue 14: a 10,000-note bulk archive end to end vs the archiver alone (BENCH_FANOUT=0)
    Scenario("fanout", fanout.enabled, fanout.run),
    # issue 18: job streams drained on 1 node vs a 3-master cluster, 1 and 2 processes
    # (BENCH_CLUSTER=0 skips)
    Scenario("cluster", cluster_scaleout.enabled, cluster_scaleout.run),
    # issue 9: `make run` ready in < 5 s on a synced checkout (BENCH_STARTUP=0 skips)
    Scenario("startup", startup.enabled, _startup),
)


def _say(text: str) -> None:
    print(text, flush=True)


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _rates(values: list[Drain]) -> str:
    return (
        ", ".join(f"{d.rate:,.0f}" for d in values)
        + " msgs/s; CPU "
        + ", ".join(f"{d.cpu_us_per_msg:.0f}" for d in values)
        + " us/msg"
    )


async def main() -> int:
    config = Config.from_env()
    base = run_prefix()
    n, repeats = config.messages, config.repeats
    host = await machine.describe(REDIS_URL, os.environ.get("DATABASE_URL"))
    _say(machine.summary(host))
    _say(
        f"bench: {n} messages x {repeats} rounds, backlog {config.backlog}, key prefix {base!r}, "
        f"redis {REDIS_URL}, {os.cpu_count()} CPUs, load avg {_load()}"
    )
    entry = raw_loop.entry_fields()
    _say(f"  entry size: {sum(len(k) + len(v) for k, v in entry.items())} bytes (runtime and raw)")
    problems: list[str] = []
    runs: dict[str, list[Drain]] = {k: [] for k in ("raw", "raw_sync", "fs", "1c", "2c")}
    isolated: dict[str, list[Drain]] = {label: [] for label in faststream_sub.ISOLATED}
    splits: list[list[int]] = []
    redis = Redis.from_url(REDIS_URL)
    try:
        for r in range(repeats):
            runs["raw"].append(await raw_loop.drain_async(base, n, r))
            runs["raw_sync"].append(await raw_loop.drain_sync(base, n, r))
            runs["fs"].append(await faststream_sub.drain(base, n, r))
            for label in isolated:
                try:
                    isolated[label].append(await faststream_sub.drain_isolated(base, n, r, label))
                except Exception as exc:  # no network for its packages: the workspace's stands
                    problems.append(f"{label}: {exc!r}")
            for processes in (1, 2):
                result = await runtime.drain_processes(base, n, processes, r)
                runs[f"{processes}c"].append(Drain(result.rate, result.cpu_us_per_msg))
                problems += result.problems
                if processes == 2:
                    splits.append(result.per_consumer)
            _say(f"  round {r + 1}/{repeats} done, load avg {_load()}")
        for key, label in (
            ("raw", "raw loop (redis.asyncio)"),
            ("raw_sync", "raw loop (sync redis-py)"),
            ("fs", "faststream subscriber"),
            ("1c", "runtime 1 process"),
            ("2c", "runtime 2 processes"),
        ):
            _say(f"  {label}: {_rates(runs[key])}")
        for label, values in isolated.items():
            if values:
                _say(f"  {label}: {_rates(values)}")
        _say(f"  runtime 2 processes, entries handled per consumer: {splits}")

        raw_lat = await runtime.latency(
            base, config.burst, config.paced_rate, config.paced_seconds, mode="raw-latency"
        )
        lat = await runtime.latency(base, config.burst, config.paced_rate, config.paced_seconds)
        problems += raw_lat.problems + lat.problems
        _say(
            f"  latency: burst of {config.burst}, then paced {config.paced_rate}/s for "
            f"{config.paced_seconds:g}s (achieved {lat.paced_rate:.0f}/s, "
            f"{len(lat.paced_ms)} samples; baseline = raw XREADGROUP BLOCK loop, same schedule)"
        )
        for label, values in (("runtime paced", lat.paced_ms), ("raw paced", raw_lat.paced_ms)):
            pcts = "/".join(f"{runtime.percentile(values, q):.2f}" for q in (50, 90, 99, 99.9))
            _say(f"    {label} p50/p90/p99/p99.9: {pcts} ms, max {max(values):.2f} ms")
        mem = await runtime.memory(base, config.backlog)
        problems += mem.problems
        _say(
            f"  memory: {config.backlog} entries drained at {mem.rate:,.0f} msgs/s, "
            f"{mem.samples} RSS samples, load avg {_load()}"
        )
    finally:
        await delete_prefix(redis, base)
        await redis.aclose()

    rate = {k: median([d.rate for d in v]) for k, v in runs.items()}
    cpu = {k: median([d.cpu_us_per_msg for d in v]) for k, v in runs.items()}
    # The runtime's baseline is FastStream at its best: the workspace's install or a better
    # configuration measured apart (bench.faststream_sub.ISOLATED), whichever drained faster.
    fs_label = "faststream, workspace install (redis-py 8)"
    for label, values in isolated.items():
        if values and median([d.rate for d in values]) > rate["fs"]:
            fs_label = label
            rate["fs"] = median([d.rate for d in values])
            cpu["fs"] = median([d.cpu_us_per_msg for d in values])
    _say(f"  runtime's FastStream baseline: {fs_label} ({rate['fs']:,.0f} msgs/s)")
    raw_m, fs_m, one_m, two_m = rate["raw"], rate["fs"], rate["1c"], rate["2c"]
    burst50, burst99 = runtime.summarize(lat.burst_ms)
    paced50, paced99 = runtime.summarize(lat.paced_ms)
    rburst50, rburst99 = runtime.summarize(raw_lat.burst_ms)
    rpaced50, rpaced99 = runtime.summarize(raw_lat.paced_ms)
    rows = [
        machine.row(host),
        Row("raw_loop_throughput", raw_m, "msgs/s"),
        Row.against("raw_loop_sync_throughput", rate["raw_sync"], "msgs/s", raw_m),
        Row.against(
            "faststream_subscriber_throughput", fs_m, "msgs/s", raw_m, detail={"config": fs_label}
        ),
        Row.against("runtime_throughput_1c", one_m, "msgs/s", fs_m),
        Row.against("runtime_throughput_2c", two_m, "msgs/s", one_m),
        Row("runtime_vs_raw_ratio", one_m / raw_m, "x"),
        Row("raw_loop_cpu_per_msg", cpu["raw"], "us"),
        Row.against("faststream_cpu_per_msg", cpu["fs"], "us", cpu["raw"]),
        Row.against("runtime_cpu_per_msg_1c", cpu["1c"], "us", cpu["fs"]),
        Row.against("runtime_cpu_per_msg_2c", cpu["2c"], "us", cpu["1c"]),
        Row.against("runtime_latency_p50_burst", burst50, "ms", rburst50),
        Row.against("runtime_latency_p99_burst", burst99, "ms", rburst99),
        Row.against("runtime_latency_p50_paced", paced50, "ms", rpaced50),
        Row.against("runtime_latency_p99_paced", paced99, "ms", rpaced99),
        Row.against("runtime_throughput_backlog", mem.rate, "msgs/s", one_m),
        Row("runtime_rss_start_mb", mem.start_mb, "MB"),
        Row("runtime_rss_peak_mb", mem.peak_mb, "MB"),
        Row("runtime_rss_end_mb", mem.end_mb, "MB"),
        Row("runtime_rss_growth_mb", mem.growth_mb, "MB"),
    ]
    targets = [
        Target("runtime 1c >= 3x faststream", one_m >= 3 * fs_m, f"{one_m / fs_m:.2f}x"),
        Target("2nd process adds >= 40%", two_m >= 1.4 * one_m, f"{two_m / one_m - 1:+.0%}"),
        Target("paced p99 < 2 ms", paced99 < 2.0, f"{paced99:.2f} ms"),
        Target(
            "RSS flat while draining (peak - RSS at 10% < 30 MB)",
            mem.growth_mb < 30,
            f"{mem.growth_mb:.1f} MB",
        ),
        Target("stretch: runtime >= 0.2x raw loop", one_m >= 0.2 * raw_m, f"{one_m / raw_m:.3f}x"),
    ]
    for scenario in SCENARIOS:
        if not scenario.enabled():
            continue
        try:
            found_rows, found_targets = await scenario.run(_say)
        except Exception as exc:  # the other scenarios' rows are still written
            problems.append(f"{scenario.name} benchmark failed: {exc!r}")
        else:
            rows += found_rows
            targets += found_targets
    path = write(rows)
    _say("")
    _say(table(rows))
    _say("")
    _say("targets (issues 3, 9, 12, 13 and 14; reported, never failing):")
    _say(targets_text(targets))
    _say(f"load avg at end {_load()} (other work on this machine skews throughput)")
    if problems:
        _say("anomalies:")
        for problem in problems:
            _say(f"  {problem}")
    _say(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    # The services' event loop (uvloop), so every contender runs as a service would.
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        sys.exit(runner.run(main()))
