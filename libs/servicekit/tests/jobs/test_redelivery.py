"""Redelivery defects of issue 10: each test fails on the code before its fix."""

import asyncio
import collections

from redis.asyncio import Redis

from servicekit.jobs import JobRouter, list_dead_letters, publish
from servicekit.testing import eventually

from .conftest import Harness, Pinged, fast

STREAM = "test.pinged.v1"


async def _no_pending(redis: Redis, key: str, group: str = "g") -> bool:
    return int((await redis.xpending(key, group))["pending"]) == 0


async def test_restarted_consumer_with_the_same_name_runs_each_pending_entry_once(
    harness: Harness,
) -> None:
    """The previous incarnation of ``same-name`` died holding 400 entries; each runs once."""
    router = JobRouter(group="g")
    runs: collections.Counter[int] = collections.Counter()

    @router.event(Pinged, stream=STREAM, **fast(visibility_timeout=60))
    async def record_ping(event: Pinged) -> None:
        await asyncio.sleep(0.001 * (event.n % 50))
        runs[event.n] += 1

    key = harness.keys.stream(STREAM)
    total = 400
    for n in range(total):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=n))
    await harness.redis.xgroup_create(key, "g", id="0")
    await harness.redis.xreadgroup("g", "same-name", {key: ">"}, count=total)
    async with harness.running(harness.worker(router, consumer="same-name")):
        await eventually(lambda: len(runs) == total, within=30)
        await eventually(lambda: _no_pending(harness.redis, key), within=30)
    assert [n for n, count in runs.items() if count != 1] == []
    assert await list_dead_letters(harness.redis, harness.keys, STREAM) == []
