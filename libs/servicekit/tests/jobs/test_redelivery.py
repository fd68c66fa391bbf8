"""Redelivery defects of issue 10: each test fails on the code before its fix."""

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from contracts import (
    JOBS_LIFECYCLE,
    ArchiveRequested,
    JobDeadLettered,
    JobType,
    Priority,
    job_stream,
    job_streams,
)
from servicekit import PermanentError, TransientError
from servicekit.connections import redis_client_from_url
from servicekit.jobs import JobOptions, JobRouter, enqueue, publish
from servicekit.jobs._codec import encode_event
from servicekit.jobs._delivery import Delivery
from servicekit.jobs._failures import FailureRouter
from servicekit.jobs._lifecycle import LifecycleEmitter
from servicekit.jobs._outbound import Outbound
from servicekit.operations import list_dead_letters
from servicekit.redis_client import RedisClient
from servicekit.testing import eventually
from servicekit.wire import DATA_FIELD, decode_envelope

from .conftest import Harness, Pinged, archive_request, fast

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


async def test_dead_lettered_job_has_its_final_status_on_the_stream_when_it_is_acked(
    harness: Harness,
) -> None:
    """Nothing flushes the outbound buffer here: the process 'dies' as dead_letter returns."""
    redis, keys = harness.redis, harness.keys
    request = archive_request()
    await enqueue(redis, keys, request)
    stream = job_stream(request.JOB_TYPE, Priority.DEFAULT)
    key = keys.stream(stream)
    await redis.xgroup_create(key, "g", id="0")
    [[_, [(entry_id, fields)]]] = await redis.xreadgroup("g", "c1", {key: ">"}, count=1)
    outbound = Outbound(redis)
    failures = FailureRouter(
        redis,
        keys,
        group="g",
        consumer="c1",
        options=JobOptions(),
        outbound=outbound,
        lifecycle=LifecycleEmitter(outbound, keys, producer="test"),
        carries_jobs=True,
        count=lambda stream, status: None,
    )
    await failures.dead_letter(
        Delivery(key, stream, entry_id, fields), PermanentError("owner mismatch"), request
    )
    assert await _no_pending(redis, key)  # acknowledged ...
    announced = await redis.xrange(keys.stream(JOBS_LIFECYCLE))
    types = [decode_envelope(f[DATA_FIELD.encode()])[1].get("event_type") for _, f in announced]
    assert types == [JobDeadLettered.type_name()]  # ... so its final status went out first


async def test_sigterm_releases_unstarted_entries_at_once_and_acks_each_handler_as_it_finishes(
    harness: Harness,
) -> None:
    router = JobRouter(group="g")
    gates = {0: asyncio.Event(), 1: asyncio.Event()}
    started: set[int] = set()

    @router.event(Pinged, stream=STREAM, **fast(concurrency=2, read_count=4, visibility_timeout=30))
    async def wait_for_gate(event: Pinged) -> None:
        started.add(event.n)
        await gates[event.n].wait()

    redis, key = harness.redis, harness.keys.stream(STREAM)
    ids = [
        (await publish(redis, harness.keys, STREAM, Pinged(producer="t", n=n))).encode()
        for n in range(6)
    ]
    worker = harness.worker(router, consumer="leaving", grace=10)
    await worker.ensure_groups()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await eventually(lambda: started == {0, 1})
    await eventually(lambda: _pending_ids(redis, key, ids[:4]))
    stop.set()

    async def released(entry_ids: list[bytes]) -> bool:
        rows = await redis.xpending_range(key, "g", "-", "+", 10)
        idle = {row["message_id"]: row["time_since_delivered"] for row in rows}
        return all(idle.get(i, 0) >= 30_000 for i in entry_ids)

    await eventually(lambda: released(ids[2:4]), within=3)  # while both handlers still run
    gates[0].set()
    await eventually(lambda: _pending_ids(redis, key, [ids[1], *ids[2:4]]), within=3)
    assert not task.done()  # entry 0 was acknowledged while entry 1 still runs
    gates[1].set()
    assert await asyncio.wait_for(task, 10) == 0
    assert await _pending_ids(redis, key, ids[2:4])


async def _pending_ids(redis: Redis, key: str, expected: list[bytes]) -> bool:
    rows = await redis.xpending_range(key, "g", "-", "+", 100)
    return [row["message_id"] for row in rows] == expected


async def test_retry_waits_its_backoff_whatever_the_clock_of_the_host_that_failed(
    harness: Harness,
) -> None:
    """A host 30 s behind schedules the retry; a host with the right clock must not run it early."""
    attempts: list[float] = []

    async def fail_first_attempt(event: Pinged) -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise TransientError("first attempt fails")

    options = fast(backoff_base=1.0, visibility_timeout=30)
    behind, right = JobRouter(group="g"), JobRouter(group="g")
    behind.event(Pinged, stream=STREAM, **options)(fail_first_attempt)
    right.event(Pinged, stream=STREAM, **options)(fail_first_attempt)
    await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=1))
    slow_clock = harness.worker(behind, consumer="behind", clock=lambda: time.time() - 30)
    async with harness.running(slow_clock):
        await eventually(lambda: len(attempts) == 1)
    async with harness.running(harness.worker(right, consumer="right")):
        await eventually(lambda: len(attempts) == 2)
    assert attempts[1] - attempts[0] >= 0.9  # backoff_base 1 s, no jitter


def fills_before_it_blocks(redis_url: str, fill: Callable[[], Awaitable[None]]) -> RedisClient:
    """A real client (one server or a cluster) that runs ``fill`` once, just before the
    consumer's first blocking read.

    Entries that arrive between the weighted non-blocking reads (all empty) and the blocking read
    make that read return at once, from every stream.
    """
    client = redis_client_from_url(redis_url)
    read = client.xreadgroup
    pending: list[Callable[[], Awaitable[None]]] = [fill]

    async def xreadgroup(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("block") and pending:
            await pending.pop()()
        return await read(*args, **kwargs)

    client.xreadgroup = xreadgroup  # type: ignore[method-assign]
    return client


async def test_blocking_read_over_three_priority_streams_holds_no_more_than_the_limit(
    harness: Harness, redis_url: str
) -> None:
    router = JobRouter(group="g")
    gate, started = asyncio.Event(), asyncio.Event()

    @router.job(ArchiveRequested, **fast(concurrency=1, read_count=12))
    async def archive_note(request: ArchiveRequested) -> None:
        started.set()
        await gate.wait()

    streams = [harness.keys.stream(s) for s in job_streams(JobType.ARCHIVE)]

    async def fill() -> None:
        async with harness.redis.pipeline(transaction=False) as pipe:
            for key in streams:
                for _ in range(30):
                    pipe.xadd(key, encode_event(archive_request()))  # type: ignore[arg-type]
            await pipe.execute()

    reader = fills_before_it_blocks(redis_url, fill)
    try:
        async with harness.running(harness.worker(router, redis=reader)):
            await eventually(started.is_set)
            assert await _pending_in(harness.redis, streams) <= 12 + 1  # read_count + concurrency
            gate.set()
    finally:
        await reader.aclose()


async def _pending_in(redis: Redis, keys: list[str]) -> int:
    return sum([int((await redis.xpending(key, "g"))["pending"]) for key in keys])
