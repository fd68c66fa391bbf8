"""``python -m bench.profile``: cProfile one consumer process draining the backlog.

Profiles the worker from GO to STOP (not imports or setup) and prints the top entries inside
``servicekit/jobs`` by cumulative and by own time, plus the overall top by own time.
Knobs: BENCH_MESSAGES (20000); the raw profile is kept in ``.bench/runtime_1c.prof``.
"""

from __future__ import annotations

import asyncio
import pstats
import sys
from pathlib import Path

from redis.asyncio import Redis

from bench import runtime
from bench.common import REDIS_URL, Config, delete_prefix, run_prefix

PROFILE = Path(".bench/runtime_1c.prof")


def _prepare() -> str:
    PROFILE.parent.mkdir(parents=True, exist_ok=True)
    return str(PROFILE.resolve())


async def main() -> int:
    config = Config.from_env()
    base = run_prefix()
    path = _prepare()
    redis = Redis.from_url(REDIS_URL)
    try:
        result = await runtime.drain_processes(base, config.messages, 1, 0, profile=path)
    finally:
        await delete_prefix(redis, base)
        await redis.aclose()
    n = config.messages
    print(f"profiled drain of {n}: {result.rate:,.0f} msgs/s under cProfile")
    print(f"CPU {result.cpu_us_per_msg:.1f} us/msg (profiler overhead included)")
    for problem in result.problems:
        print(f"anomaly: {problem}")
    stats = pstats.Stats(str(PROFILE))
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"total profiled time {total:.2f}s = {total / n * 1e6:.1f} us/msg\n")
    for order, title in (("cumulative", "cumulative"), ("tottime", "own time")):
        print(f"=== servicekit/jobs: top 15 by {title} ===")
        stats.sort_stats(order).print_stats(r"servicekit/jobs", 15)
    print("=== everything: top 25 by own time ===")
    stats.sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
