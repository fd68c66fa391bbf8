"""A bare FastStream subscriber draining one stream, runnable outside the workspace.

``bench.faststream_sub`` runs this file under ``uv run --no-project --with ...`` to measure
FastStream on other redis-py majors than the workspace's (FastStream's best is not necessarily on
the newest client), so it imports nothing from the workspace. It publishes ``n`` bodies of
``body`` (JSON) with FastStream's own ``broker.publish``, starts one subscriber in ``group`` and
prints one JSON line: ``{"rate": msgs/s, "cpu_us_per_msg": ..., "redis": version, ...}``.

    python bench/faststream_isolated.py REDIS_URL KEY GROUP N BODY_JSON [MAX_RECORDS]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from importlib.metadata import version
from typing import Any

from faststream.redis import RedisBroker, StreamSub
from redis.asyncio import Redis


async def drain(
    url: str, key: str, group: str, n: int, body: Any, max_records: int | None
) -> dict[str, Any]:
    admin = Redis.from_url(url)
    await admin.xgroup_create(key, group, id="0", mkstream=True)
    broker = RedisBroker(url, logger=None)
    handled, finished = 0, asyncio.Event()
    finished_at = finished_cpu = 0.0

    @broker.subscriber(stream=StreamSub(key, group=group, consumer="fs", max_records=max_records))
    async def handle(_: Any) -> None:
        nonlocal handled, finished_at, finished_cpu
        handled += 1
        if handled == n:
            finished_at, finished_cpu = time.perf_counter(), time.process_time()
            finished.set()

    try:
        await broker.connect()
        for start in range(0, n, 8):
            await asyncio.gather(
                *(broker.publish(body, stream=key) for _ in range(min(8, n - start)))
            )
        started, cpu = time.perf_counter(), time.process_time()
        await broker.start()
        await asyncio.wait_for(finished.wait(), timeout=max(60.0, n / 500))
        return {
            "rate": n / (finished_at - started),
            "cpu_us_per_msg": (finished_cpu - cpu) / n * 1e6,
            "redis": version("redis"),
            "hiredis": _installed("hiredis"),
            "faststream": version("faststream"),
            "max_records": max_records,
        }
    finally:
        await broker.stop()
        await admin.unlink(key)
        await admin.aclose()


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except Exception:  # PackageNotFoundError: the parser is optional
        return None


def main() -> None:
    url, key, group, n, body = sys.argv[1:6]
    max_records = int(sys.argv[6]) if len(sys.argv) > 6 else None
    try:
        import uvloop  # the loop the services and the other contenders run on

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        result = runner.run(drain(url, key, group, int(n), json.loads(body), max_records))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
