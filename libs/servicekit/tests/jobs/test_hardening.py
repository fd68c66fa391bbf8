"""Regressions found in review: poison shapes, duplicate runs, refused writes, cancellations."""

import asyncio
import collections
import json

from servicekit import PermanentError
from servicekit.jobs import JobRouter, publish
from servicekit.operations import list_dead_letters, pause_group
from servicekit.testing import eventually
from servicekit.wire import DATA_FIELD

from .conftest import Harness, Pinged, fast

STREAM = "test.pinged.v1"


async def _pending(harness: Harness, stream: str = STREAM) -> int:
    return int((await harness.redis.xpending(harness.keys.stream(stream), "g"))["pending"])


async def _pending_is(harness: Harness, expected: int) -> bool:
    return await _pending(harness) == expected


async def test_odd_entry_shapes_are_dead_lettered_and_workers_survive(harness: Harness) -> None:
    router = JobRouter(group="g")
    seen: list[int] = []

    @router.event(Pinged, stream=STREAM, **fast(concurrency=1))
    async def record_ping(event: Pinged) -> None:
        seen.append(event.n)

    key = harness.keys.stream(STREAM)
    body = {"type": STREAM, "producer": "t", "n": 0}
    await harness.redis.xadd(key, {b"\xff\xfe": b"x", DATA_FIELD: b"{}"})
    await harness.redis.xadd(key, {DATA_FIELD: json.dumps({"headers": [], "body": body})})
    await harness.redis.xadd(
        key, {DATA_FIELD: json.dumps({"headers": {"traceparent": 5}, "body": body})}
    )
    await harness.redis.xadd(key, {DATA_FIELD: b"[" * 100_000})
    async with harness.running(harness.worker(router)):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=1))
        await eventually(lambda: seen == [1])
        await eventually(lambda: harness.counted(STREAM, "dead") == 4)
        # The last acknowledgement may follow the counter by a flush of the ack batch.
        await eventually(lambda: _pending_is(harness, 0))


async def test_queued_entries_keep_their_lease_and_run_once(harness: Harness) -> None:
    router = JobRouter(group="g")
    runs: collections.Counter[int] = collections.Counter()

    @router.event(Pinged, stream=STREAM, **fast(concurrency=2, read_count=8, visibility_timeout=1))
    async def slow_ping(event: Pinged) -> None:
        runs[event.n] += 1
        await asyncio.sleep(0.4)

    for n in range(10):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=n))
    async with harness.running(harness.worker(router)):
        await eventually(lambda: len(runs) == 10, within=20)
        await eventually(lambda: harness.counted(STREAM, "succeeded") == 10, within=20)
    assert set(runs.values()) == {1}


async def test_refused_dead_letter_write_leaves_the_entry_pending(harness: Harness) -> None:
    router = JobRouter(group="g")
    calls: list[int] = []

    @router.event(Pinged, stream=STREAM, **fast(concurrency=1, read_count=1))
    async def reject_ping(event: Pinged) -> None:
        calls.append(event.n)
        raise PermanentError("nope")

    await harness.redis.set(harness.keys.dead_letters(STREAM), "not a stream")  # XADD refused
    async with harness.running(harness.worker(router)):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=1))
        await eventually(lambda: calls == [1])
        await asyncio.sleep(0.3)  # a window for a wrong XACK to land
        assert await _pending(harness) == 1  # not acknowledged: nothing is lost
        await harness.redis.delete(harness.keys.dead_letters(STREAM))


async def test_handler_cancelled_from_outside_is_retried(harness: Harness) -> None:
    router = JobRouter(group="g")
    calls: list[int] = []

    @router.event(Pinged, stream=STREAM, **fast())
    async def flaky_ping(event: Pinged) -> None:
        calls.append(event.n)
        if len(calls) == 1:
            helper = asyncio.ensure_future(asyncio.sleep(10))
            asyncio.get_running_loop().call_later(0.05, helper.cancel)
            await helper  # raises CancelledError that the runtime did not ask for

    async with harness.running(harness.worker(router)):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=1))
        await eventually(lambda: harness.counted(STREAM, "succeeded") == 1)
    assert calls == [1, 1]


async def test_timeout_is_enforced_even_when_a_handler_converts_the_cancellation(
    harness: Harness,
) -> None:
    router = JobRouter(group="g")
    durations: list[float] = []

    @router.event(Pinged, stream=STREAM, **fast(concurrency=1, timeout=0.2, max_attempts=1))
    async def stubborn_ping(event: Pinged) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await asyncio.sleep(2)
        except asyncio.CancelledError:
            raise RuntimeError("driver turned the cancel into its own error") from None
        finally:
            durations.append(loop.time() - started)

    async with harness.running(harness.worker(router)):
        for n in range(2):
            await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=n))
        await eventually(lambda: harness.counted(STREAM, "dead") == 2)
    assert len(durations) == 2
    assert max(durations) < 1.0  # the second handler was cut off too


async def test_pausing_one_stream_does_not_hold_back_retries_on_another(harness: Harness) -> None:
    router = JobRouter(group="g")
    calls: list[int] = []

    @router.event(Pinged, stream=["test.a.v1", "test.b.v1"], **fast(concurrency=1, read_count=2))
    async def flaky_ping(event: Pinged) -> None:
        calls.append(event.n)
        if len(calls) == 1:
            raise ConnectionError("once")

    await pause_group(harness.redis, harness.keys, "test.a.v1", "g")
    async with harness.running(harness.worker(router)):
        await publish(harness.redis, harness.keys, "test.b.v1", Pinged(producer="t", n=7))
        await eventually(lambda: calls == [7, 7])


async def test_json_error_inside_a_handler_is_transient(harness: Harness) -> None:
    router = JobRouter(group="g")
    calls: list[int] = []

    @router.event(Pinged, stream=STREAM, **fast())
    async def parse_dependency_reply(event: Pinged) -> None:
        calls.append(event.n)
        if len(calls) == 1:
            json.loads("<html>502 Bad Gateway</html>")

    async with harness.running(harness.worker(router)):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=1))
        await eventually(lambda: harness.counted(STREAM, "succeeded") == 1)
    assert calls == [1, 1]
    assert await list_dead_letters(harness.redis, harness.keys, STREAM) == []
