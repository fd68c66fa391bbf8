"""Several consumer groups on one stream: each keeps its own retries, history and redrives."""

import asyncio
import collections

from redis.asyncio import Redis

from servicekit import TransientError
from servicekit.jobs import JobRouter, publish
from servicekit.operations import list_dead_letters, redrive_dead_letters
from servicekit.testing import eventually

from .conftest import Harness, Pinged, fast

STREAM = "test.pinged.v1"


async def _no_pending(redis: Redis, key: str, group: str) -> bool:
    return int((await redis.xpending(key, group))["pending"]) == 0


async def test_each_group_keeps_its_own_retries_and_attempt_history(harness: Harness) -> None:
    """Group a fails every entry 3 times; group b succeeds at once; neither disturbs the other."""
    runs = {"a": collections.Counter[int](), "b": collections.Counter[int]()}
    healed = asyncio.Event()
    failing, succeeding = JobRouter(group="a"), JobRouter(group="b")

    @failing.event(Pinged, stream=STREAM, **fast(max_attempts=3, visibility_timeout=30))
    async def fail_until_healed(event: Pinged) -> None:
        runs["a"][event.n] += 1
        if not healed.is_set():
            raise TransientError("still down")

    @succeeding.event(Pinged, stream=STREAM, **fast(visibility_timeout=30))
    async def record_ping(event: Pinged) -> None:
        runs["b"][event.n] += 1

    total = 12
    key = harness.keys.stream(STREAM)
    workers = (harness.worker(failing, consumer="ca"), harness.worker(succeeding, consumer="cb"))
    async with harness.running(*workers):
        for n in range(total):
            await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=n))
        letters = await eventually(lambda: _dead_letters(harness, total), within=30)
        await eventually(lambda: _no_pending(harness.redis, key, "a"))
        await eventually(lambda: _no_pending(harness.redis, key, "b"))
        assert runs["a"] == {n: 3 for n in range(total)}
        assert runs["b"] == {n: 1 for n in range(total)}
        assert {letter.meta["group"] for letter in letters} == {"a"}

        # A redrive reaches only the group that failed.
        healed.set()
        await redrive_dead_letters(harness.redis, harness.keys, STREAM)
        await eventually(lambda: runs["a"] == {n: 4 for n in range(total)})
        await eventually(lambda: _no_pending(harness.redis, key, "a"))
        await eventually(lambda: _no_pending(harness.redis, key, "b"))
    assert runs["b"] == {n: 1 for n in range(total)}
    assert await list_dead_letters(harness.redis, harness.keys, STREAM) == []


async def _dead_letters(harness: Harness, n: int) -> list | None:  # type: ignore[type-arg]
    letters = await list_dead_letters(harness.redis, harness.keys, STREAM)
    return letters if len(letters) >= n else None
