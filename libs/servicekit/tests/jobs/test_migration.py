"""Upgrading from the earlier key layout: pending, retrying and dead entries each run once."""

import asyncio
import collections
import time

import pytest
from redis.asyncio import Redis

from servicekit.jobs import JobRouter, publish
from servicekit.jobs._codec import encode_event
from servicekit.jobs._delivery import AttemptHistory
from servicekit.jobs._migration import LegacyKeys, migrate_keys
from servicekit.keys import Companion
from servicekit.operations import redrive_dead_letters
from servicekit.testing import eventually
from servicekit.wire import DATA_FIELD

from .conftest import Harness, Pinged, fast

STREAM = "test.pinged.v1"


async def build_earlier_layout(redis: Redis, legacy: LegacyKeys) -> None:
    """Ten entries under the earlier names, as workers of groups a and b left them.

    a: 0-1 done, 2-3 waiting for a retry, 4-5 held by a dead consumer, 6-9 not read yet.
    b: everything done but 7, held by a dead consumer. One dead letter of group a (n = 10).
    """
    key = legacy.stream(STREAM)
    ids = [
        await redis.xadd(key, encode_event(Pinged(producer="t", n=n)))  # type: ignore[arg-type]
        for n in range(10)
    ]
    for group in ("a", "b"):
        await redis.xgroup_create(key, group, id="0")
    await redis.xreadgroup("a", "old-a", {key: ">"}, count=6)
    await redis.xack(key, "a", *ids[:2])
    history = AttemptHistory()
    history.record(RuntimeError("store down"), None)
    due_ms = int(time.time() * 1000) + 200
    await redis.zadd(legacy.companion(STREAM, Companion.RETRY), {ids[2]: due_ms, ids[3]: due_ms})
    await redis.hset(  # type: ignore[misc]
        legacy.companion(STREAM, Companion.ATTEMPTS),
        mapping={ids[2]: history.to_json(), ids[3]: history.to_json()},
    )
    await redis.xreadgroup("b", "old-b", {key: ">"}, count=10)
    await redis.xack(key, "b", *[i for n, i in enumerate(ids) if n != 7])
    letter = encode_event(Pinged(producer="t", n=10))
    await redis.xadd(
        legacy.dead_letters(STREAM),
        {**letter, "source_stream": STREAM, "group": "a", "attempts": "5", "errors": "[]"},  # type: ignore[dict-item]
    )


@pytest.mark.single_redis(
    "the earlier layout it moves from was never cluster-safe: a cluster never held it"
)
@pytest.mark.parametrize("new_stream_first", [False, True], ids=["renamed", "merged"])
async def test_entries_under_the_earlier_key_names_each_run_exactly_once(
    harness: Harness, new_stream_first: bool
) -> None:
    redis, keys = harness.redis, harness.keys
    legacy = LegacyKeys(keys.prefix)
    await build_earlier_layout(redis, legacy)
    expected = {"a": {2, 3, 4, 5, 6, 7, 8, 9, 10}, "b": {7}}
    if new_stream_first:  # an upgraded producer wrote before any upgraded worker started
        await publish(redis, keys, STREAM, Pinged(producer="t", n=100))
        expected = {"a": expected["a"] | {100}, "b": {7, 100}}
    runs = {"a": collections.Counter[int](), "b": collections.Counter[int]()}
    routers = {"a1": JobRouter(group="a"), "a2": JobRouter(group="a"), "b": JobRouter(group="b")}
    for replica, router in routers.items():
        group = replica[0]

        @router.event(Pinged, stream=STREAM, **fast(visibility_timeout=0.5))
        async def record_ping(event: Pinged, group: str = group) -> None:
            runs[group][event.n] += 1

    # Three replicas upgrade at once.
    await asyncio.gather(*(migrate_keys(redis, keys, [STREAM]) for _ in routers))
    workers = [harness.worker(r, consumer=f"new-{name}") for name, r in routers.items()]
    async with harness.running(*workers):
        await eventually(lambda: set(runs["a"]) == expected["a"] - {10}, within=20)
        await redrive_dead_letters(redis, keys, STREAM)
        await eventually(lambda: set(runs["a"]) == expected["a"], within=20)
        await eventually(lambda: set(runs["b"]) == expected["b"], within=20)
        for group in ("a", "b"):
            await eventually(lambda g=group: _no_pending(redis, keys.stream(STREAM), g))
    assert runs == {g: {n: 1 for n in expected[g]} for g in ("a", "b")}
    old_keys = [
        legacy.stream(STREAM),
        legacy.dead_letters(STREAM),
        legacy.companion(STREAM, Companion.RETRY),
        legacy.companion(STREAM, Companion.ATTEMPTS),
    ]
    assert await redis.exists(*old_keys) == 0


async def _no_pending(redis: Redis, key: str, group: str) -> bool:
    return int((await redis.xpending(key, group))["pending"]) == 0


@pytest.mark.single_redis(
    "the earlier layout it moves from was never cluster-safe: a cluster never held it"
)
async def test_a_dead_letter_moved_from_the_earlier_names_keeps_its_fields(
    harness: Harness,
) -> None:
    legacy = LegacyKeys(harness.keys.prefix)
    await build_earlier_layout(harness.redis, legacy)
    assert await migrate_keys(harness.redis, harness.keys, [STREAM]) == {STREAM: "renamed"}
    assert await migrate_keys(harness.redis, harness.keys, [STREAM]) == {}  # idempotent
    [(_, fields)] = await harness.redis.xrange(harness.keys.dead_letters(STREAM))
    assert fields[b"group"] == b"a"
    assert DATA_FIELD.encode() in fields
