"""Ack after effect, permanent vs transient errors, retries with backoff, dead letters."""

import asyncio
import itertools
import time

from redis.asyncio import Redis

from servicekit import PermanentError, SkipJob
from servicekit.jobs import JobRouter, publish
from servicekit.operations import list_dead_letters
from servicekit.testing import eventually
from servicekit.wire import DATA_FIELD

from .conftest import Harness, Pinged, fast

STREAM = "test.pinged.v1"


async def pending_count(redis: Redis, key: str) -> int:
    return int((await redis.xpending(key, "g"))["pending"])


async def test_entry_is_acked_only_after_handler_succeeded(harness: Harness) -> None:
    router = JobRouter(group="g")
    gate = asyncio.Event()
    seen: list[int] = []

    @router.event(Pinged, stream=STREAM, **fast())
    async def record_ping(event: Pinged) -> None:
        await gate.wait()
        seen.append(event.n)

    key = harness.keys.stream(STREAM)
    async with harness.running(harness.worker(router)):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=1))
        await eventually(lambda: pending_count(harness.redis, key))
        assert await pending_count(harness.redis, key) == 1  # running, not acked
        gate.set()
        await eventually(lambda: seen == [1])
        await eventually(lambda: harness.counted(STREAM, "succeeded") == 1)
        assert await eventually(lambda: _is_zero(pending_count(harness.redis, key)))


async def _is_zero(value: "asyncio.Future[int] | object") -> bool:
    return (await value) == 0  # type: ignore[misc]


async def test_poison_entry_is_dead_lettered_on_first_delivery_and_next_is_processed(
    harness: Harness,
) -> None:
    router = JobRouter(group="g")
    seen: list[int] = []

    @router.event(Pinged, stream=STREAM, **fast())
    async def record_ping(event: Pinged) -> None:
        seen.append(event.n)

    key = harness.keys.stream(STREAM)
    await harness.redis.xadd(key, {DATA_FIELD: b"\xff\xfe not json"})
    await harness.redis.xadd(key, {DATA_FIELD: b'{"headers":{},"body":{"type":"test.pinged.v1"}}'})
    await harness.redis.xadd(key, {"unexpected": b"field"})
    await harness.redis.xadd(
        key, {DATA_FIELD: b'{"headers":{"event_type":"other.v1"},"body":{"type":"other.v1"}}'}
    )
    async with harness.running(harness.worker(router)):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=7))
        await eventually(lambda: seen == [7])
        letters = await eventually(
            lambda: _at_least(list_dead_letters(harness.redis, harness.keys, STREAM), 4)
        )
        await eventually(lambda: _is_zero(pending_count(harness.redis, key)))
    letters.sort(key=lambda letter: letter.meta["source_id"])  # handled concurrently
    reasons = [letter.meta["error_message"] for letter in letters]
    assert "undecodable" in reasons[0]
    assert "invalid test.pinged.v1" in reasons[1]
    assert "no __data__ field" in reasons[2]
    assert "unknown event type 'other.v1'" in reasons[3]
    assert all(letter.meta["attempts"] == "1" for letter in letters)
    assert letters[0].data == b"\xff\xfe not json"  # the original payload is kept verbatim
    assert harness.counted(STREAM, "dead") == 4


async def _at_least(listing: "asyncio.Future[list]", n: int) -> list | None:  # type: ignore[type-arg]
    items = await listing
    return items if len(items) >= n else None


async def test_permanent_error_goes_to_dead_letters_without_retry(harness: Harness) -> None:
    router = JobRouter(group="g")
    calls: list[int] = []

    @router.event(Pinged, stream=STREAM, **fast())
    async def reject_ping(event: Pinged) -> None:
        calls.append(event.n)
        raise PermanentError("owner mismatch")

    async with harness.running(harness.worker(router)):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=1))
        letters = await eventually(
            lambda: _at_least(list_dead_letters(harness.redis, harness.keys, STREAM), 1)
        )
    assert calls == [1]
    assert letters[0].meta["error_class"] == "PermanentError"
    assert letters[0].meta["error_message"] == "owner mismatch"
    assert letters[0].meta["source_stream"] == STREAM
    assert letters[0].meta["group"] == "g"
    assert letters[0].meta["trace_id"]


async def test_transient_failures_below_the_cap_end_in_one_success(harness: Harness) -> None:
    router = JobRouter(group="g")
    attempts: list[float] = []
    done: list[int] = []

    @router.event(Pinged, stream=STREAM, **fast(max_attempts=5))
    async def flaky_ping(event: Pinged) -> None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError("dependency down")
        done.append(event.n)

    async with harness.running(harness.worker(router)):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=1))
        await eventually(lambda: done == [1])
        await eventually(lambda: harness.counted(STREAM, "succeeded") == 1)
    assert len(attempts) == 3
    assert harness.counted(STREAM, "retrying") == 2
    assert await harness.redis.xlen(harness.keys.dead_letters(STREAM)) == 0


async def test_exhausted_retries_dead_letter_after_exactly_max_attempts_with_growing_gaps(
    harness: Harness,
) -> None:
    router = JobRouter(group="g")
    attempts: list[float] = []

    @router.event(Pinged, stream=STREAM, **fast(max_attempts=4, backoff_base=0.1))
    async def always_failing(event: Pinged) -> None:
        attempts.append(time.monotonic())
        raise TimeoutError("still down")

    async with harness.running(harness.worker(router)):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=1))
        letters = await eventually(
            lambda: _at_least(list_dead_letters(harness.redis, harness.keys, STREAM), 1)
        )
    assert len(attempts) == 4
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # Each gap is at least its backoff (0.1, 0.2, 0.4 s); the claim poll (0.1 s) may add to any,
    # so consecutive gaps are not compared with each other.
    assert [round(g, 2) >= d for g, d in zip(gaps, (0.1, 0.2, 0.4), strict=True)] == [True] * 3
    assert gaps[2] > gaps[0]
    assert letters[0].meta["attempts"] == "4"
    assert letters[0].meta["error_class"] == "TimeoutError"
    assert [e["attempt"] for e in letters[0].errors][-1] == 4


async def test_handler_timeout_is_transient(harness: Harness) -> None:
    router = JobRouter(group="g")
    calls: list[int] = []

    @router.event(Pinged, stream=STREAM, **fast(timeout=0.05))
    async def slow_first_time(event: Pinged) -> None:
        calls.append(event.n)
        if len(calls) == 1:
            await asyncio.sleep(1)

    async with harness.running(harness.worker(router)):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=1))
        await eventually(lambda: harness.counted(STREAM, "succeeded") == 1)
    assert calls == [1, 1]
    assert harness.counted(STREAM, "retrying") == 1


async def test_skipped_job_is_acked_and_counted_as_skipped(harness: Harness) -> None:
    router = JobRouter(group="g")

    @router.event(Pinged, stream=STREAM, **fast())
    async def skip_ping(event: Pinged) -> None:
        raise SkipJob("note deleted")

    async with harness.running(harness.worker(router)):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=1))
        await eventually(lambda: harness.counted(STREAM, "skipped") == 1)
    assert await harness.redis.xlen(harness.keys.dead_letters(STREAM)) == 0
