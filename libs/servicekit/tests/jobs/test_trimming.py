"""Streams no consumer group reads (schedules.fired.v1, audit streams) are trimmed too."""

import time

from redis.asyncio import Redis

from contracts import SCHEDULES_FIRED
from servicekit.jobs import JobRouter, RetentionPolicy
from servicekit.jobs._codec import encode_event
from servicekit.testing import eventually

from .conftest import Harness, Pinged, fast

STREAM = "test.pinged.v1"


async def test_a_stream_no_group_reads_is_trimmed_by_age_and_length(harness: Harness) -> None:
    router = JobRouter(group="g")

    @router.event(Pinged, stream=STREAM, **fast())
    async def record_ping(event: Pinged) -> None:
        return None

    redis, key = harness.redis, harness.keys.stream(SCHEDULES_FIRED)
    two_days_ago = int((time.time() - 2 * 24 * 3600) * 1000)
    for n in range(5):  # older than the retention
        await redis.xadd(key, encode_event(Pinged(producer="t", n=n)), id=f"{two_days_ago}-{n}")  # type: ignore[arg-type]
    for n in range(30):  # recent, but more than the length allows
        await redis.xadd(key, encode_event(Pinged(producer="t", n=n)))  # type: ignore[arg-type]
    retention = RetentionPolicy(unread_for=24 * 3600, unread_max_length=10)
    async with harness.running(harness.worker(router, retention=retention)):
        await eventually(lambda: _length_is(redis, key, 10))
    first = await redis.xrange(key, count=1)
    assert int(first[0][0].split(b"-")[0]) > two_days_ago  # the old ones went first


async def _length_is(redis: Redis, key: str, n: int) -> bool:
    return int(await redis.xlen(key)) == n
