"""Batch routes: one handler call for several ready entries, every entry settled on its own."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from contracts import (
    JOBS_LIFECYCLE,
    ArchiveRequested,
    JobSkipped,
    JobStarted,
    JobSucceeded,
)
from servicekit import PermanentError, SkipJob, handler_transaction_batch
from servicekit.jobs import JobRouter, enqueue, publish
from servicekit.jobs._codec import decode_entry
from servicekit.operations import list_dead_letters
from servicekit.outbox import ensure_outbox_tables
from servicekit.settings import asyncpg_url
from servicekit.testing import eventually
from servicekit.wire import DATA_FIELD

from .conftest import Harness, Pinged, archive_request, fast

STREAM = "test.pinged.v1"
SCHEMA = "batches"


async def publish_pings(harness: Harness, *numbers: int) -> list[bytes]:
    """Publish before the worker starts, so its first read returns them all."""
    return [
        (await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=n))).encode()
        for n in numbers
    ]


async def pending_ids(redis: Redis, key: str) -> list[bytes]:
    rows = await redis.xpending_range(key, "g", "-", "+", 100)
    return [row["message_id"] for row in rows]


async def dead_letters(harness: Harness, n: int) -> list[Any] | None:
    letters = await list_dead_letters(harness.redis, harness.keys, STREAM)
    return letters if len(letters) >= n else None


async def test_a_batch_route_receives_the_ready_events_in_one_call(harness: Harness) -> None:
    router = JobRouter(group="g")
    calls: list[list[int]] = []

    @router.event(Pinged, stream=STREAM, batch=10, **fast(concurrency=1))
    async def record_pings(events: list[Pinged], tag: str) -> None:
        assert tag == "bound by name"
        calls.append([event.n for event in events])

    tracer = harness.telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("send pings") as producer:
        await publish_pings(harness, *range(5))
    key = harness.keys.stream(STREAM)
    async with harness.running(harness.worker(router, dependencies={"tag": "bound by name"})):
        await eventually(lambda: harness.counted(STREAM, "succeeded") == 5)
        await eventually(lambda: _empty(pending_ids(harness.redis, key)))
    assert calls == [[0, 1, 2, 3, 4]]
    duration_count = harness.telemetry.registry.get_sample_value(
        "job_duration_seconds_count",
        {"service": "jobs-test", "stream": STREAM, "group": "g", "job_type": STREAM},
    )
    assert duration_count == 1  # one observation per call; counts are per entry
    spans = [s for s in harness.spans.get_finished_spans() if s.name == f"{STREAM} process"]
    assert len(spans) == 1  # one consumer span for the call ...
    assert spans[0].attributes is not None
    assert spans[0].attributes["messaging.batch.message_count"] == 5
    # ... in its own trace, linked to each entry's producer
    assert spans[0].context.trace_id != producer.get_span_context().trace_id
    assert [link.context.span_id for link in spans[0].links] == [
        producer.get_span_context().span_id
    ] * 5


async def test_a_batch_of_one_stays_in_its_producers_trace(harness: Harness) -> None:
    router = JobRouter(group="g")

    @router.event(Pinged, stream=STREAM, batch=10, **fast())
    async def record_pings(events: list[Pinged]) -> None:
        pass

    tracer = harness.telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("send ping") as producer:
        await publish_pings(harness, 1)
    async with harness.running(harness.worker(router)):
        await eventually(lambda: harness.counted(STREAM, "succeeded") == 1)
    (span,) = [s for s in harness.spans.get_finished_spans() if s.name == f"{STREAM} process"]
    assert span.parent is not None
    assert span.parent.span_id == producer.get_span_context().span_id


async def test_a_batch_is_capped_at_its_size(harness: Harness) -> None:
    router = JobRouter(group="g")
    calls: list[list[int]] = []

    @router.event(Pinged, stream=STREAM, batch=2, **fast(concurrency=1))
    async def record_pings(events: list[Pinged]) -> None:
        calls.append([event.n for event in events])

    await publish_pings(harness, *range(5))
    async with harness.running(harness.worker(router)):
        await eventually(lambda: harness.counted(STREAM, "succeeded") == 5)
    assert calls == [[0, 1], [2, 3], [4]]


async def test_a_batch_past_its_timeout_is_retried_entry_by_entry(harness: Harness) -> None:
    router = JobRouter(group="g")
    calls: list[list[int]] = []
    never = asyncio.Event()

    @router.event(Pinged, stream=STREAM, batch=10, **fast(concurrency=1, timeout=0.2))
    async def hang_once(events: list[Pinged]) -> None:
        calls.append([event.n for event in events])
        if len(calls) == 1:
            await never.wait()  # the deadline watchdog cancels it

    await publish_pings(harness, 0, 1)
    async with harness.running(harness.worker(router)):
        await eventually(lambda: harness.counted(STREAM, "succeeded") == 2)
    assert calls[0] == [0, 1]
    assert harness.counted(STREAM, "retrying") == 2


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(asyncpg_url(database_url))
    await ensure_outbox_tables(engine, SCHEMA)
    async with engine.begin() as connection:
        await connection.execute(text(f"CREATE TABLE {SCHEMA}.effects (n int)"))
    yield engine
    await engine.dispose()


async def test_a_failing_batch_retries_every_entry_then_applies_each_once(
    harness: Harness, engine: AsyncEngine
) -> None:
    router = JobRouter(group="g")
    calls: list[list[int]] = []

    @router.event(Pinged, stream=STREAM, batch=10, **fast(concurrency=1, max_attempts=5))
    async def record_pings(events: list[Pinged]) -> None:
        calls.append([event.n for event in events])
        async with handler_transaction_batch(engine, schema=SCHEMA, group="g", events=events) as tx:
            for event in tx.new_events:
                await tx.connection.execute(
                    text(f"INSERT INTO {SCHEMA}.effects VALUES (:n)"), {"n": event.n}
                )
            if len(calls) == 1:
                raise ConnectionError("database went away mid-batch")  # rolled back
        if len(calls) == 2:
            raise ConnectionError("the reply was lost after the commit")  # committed

    await publish_pings(harness, *range(4))
    key = harness.keys.stream(STREAM)
    async with harness.running(harness.worker(router)):
        await eventually(lambda: harness.counted(STREAM, "succeeded") == 4)
        await eventually(lambda: _empty(pending_ids(harness.redis, key)))
    assert calls[0] == [0, 1, 2, 3]
    assert harness.counted(STREAM, "retrying") >= 4  # every entry of the first call was retried
    assert harness.counted(STREAM, "dead") == 0
    async with engine.connect() as connection:
        effects = (await connection.execute(text(f"SELECT n FROM {SCHEMA}.effects"))).scalars()
        assert sorted(effects) == [0, 1, 2, 3]  # each applied once, whatever the retries did


async def test_an_undecodable_entry_is_dead_lettered_alone(harness: Harness) -> None:
    router = JobRouter(group="g")
    calls: list[list[int]] = []

    @router.event(Pinged, stream=STREAM, batch=10, **fast(concurrency=1))
    async def record_pings(events: list[Pinged]) -> None:
        calls.append([event.n for event in events])

    key = harness.keys.stream(STREAM)
    await publish_pings(harness, 1)
    await harness.redis.xadd(key, {DATA_FIELD: b"\xff\xfe not json"})
    await publish_pings(harness, 2)
    async with harness.running(harness.worker(router)):
        letters = await eventually(lambda: dead_letters(harness, 1))
        await eventually(lambda: harness.counted(STREAM, "succeeded") == 2)
        await eventually(lambda: _empty(pending_ids(harness.redis, key)))
    assert calls == [[1, 2]]
    assert len(letters) == 1
    assert "undecodable" in letters[0].meta["error_message"]
    assert letters[0].data == b"\xff\xfe not json"


async def test_a_permanent_error_dead_letters_every_entry_with_the_reason(
    harness: Harness,
) -> None:
    router = JobRouter(group="g")
    calls: list[list[int]] = []

    @router.event(Pinged, stream=STREAM, batch=10, **fast(concurrency=1))
    async def reject_pings(events: list[Pinged]) -> None:
        calls.append([event.n for event in events])
        raise PermanentError("batch rejected")

    ids = await publish_pings(harness, *range(3))
    key = harness.keys.stream(STREAM)
    async with harness.running(harness.worker(router)):
        letters = await eventually(lambda: dead_letters(harness, 3))
        await eventually(lambda: _empty(pending_ids(harness.redis, key)))
    assert calls == [[0, 1, 2]]
    assert sorted(letter.meta["source_id"] for letter in letters) == [i.decode() for i in ids]
    assert {letter.meta["error_message"] for letter in letters} == {"batch rejected"}
    assert {letter.meta["error_class"] for letter in letters} == {"PermanentError"}
    assert harness.counted(STREAM, "dead") == 3


async def test_a_batch_handler_may_settle_entries_one_by_one(harness: Harness) -> None:
    router = JobRouter(group="g")
    calls: list[list[int]] = []

    @router.event(Pinged, stream=STREAM, batch=10, **fast(concurrency=1, max_attempts=2))
    async def sort_pings(events: list[Pinged]) -> dict[Any, BaseException]:
        calls.append([event.n for event in events])
        settled: dict[Any, BaseException] = {}
        for event in events:
            if event.n == 1:
                settled[event.event_id] = SkipJob("one is skipped")
            elif event.n == 2:
                settled[event.event_id] = PermanentError("two is refused")
        return settled  # the others succeeded

    await publish_pings(harness, 0, 1, 2, 3)
    key = harness.keys.stream(STREAM)
    async with harness.running(harness.worker(router)):
        [letter] = await eventually(lambda: dead_letters(harness, 1))
        await eventually(lambda: _empty(pending_ids(harness.redis, key)))
    assert calls == [[0, 1, 2, 3]]  # nothing retried: each entry settled by its own outcome
    assert letter.meta["error_message"] == "two is refused"
    assert (harness.counted(STREAM, "succeeded"), harness.counted(STREAM, "skipped")) == (2, 1)
    assert harness.counted(STREAM, "dead") == 1


@pytest.mark.parametrize("outcome", ["succeeded", "skipped"])
async def test_every_job_of_a_batch_gets_its_lifecycle_events(
    harness: Harness, outcome: str
) -> None:
    router = JobRouter(group="g")
    calls: list[int] = []

    @router.job(ArchiveRequested, batch=10, **fast(concurrency=1))
    async def archive_notes(requests: list[ArchiveRequested]) -> None:
        calls.append(len(requests))
        if outcome == "skipped":
            raise SkipJob("notes gone")

    requests = [archive_request(n) for n in range(3)]
    for request in requests:
        await enqueue(harness.redis, harness.keys, request)
    lifecycle_key = harness.keys.stream(JOBS_LIFECYCLE)
    async with harness.running(harness.worker(router)):
        entries = await eventually(lambda: _at_least_entries(harness.redis, lifecycle_key, 6))
    assert calls == [3]
    final = JobSucceeded if outcome == "succeeded" else JobSkipped
    accepted = {c.type_name(): c for c in (JobStarted, final)}
    by_job: dict[Any, list[str]] = {}
    for _, fields in entries:
        event = decode_entry(fields, accepted)[0]
        by_job.setdefault(event.job_id, []).append(event.type)  # type: ignore[attr-defined]
    assert by_job == {r.job_id: [JobStarted.type_name(), final.type_name()] for r in requests}


async def test_sigterm_releases_queued_entries_and_acks_the_running_batch(
    harness: Harness,
) -> None:
    router = JobRouter(group="g")
    gate = asyncio.Event()
    calls: list[list[int]] = []

    options = fast(concurrency=1, read_count=4, visibility_timeout=30)

    @router.event(Pinged, stream=STREAM, batch=2, **options)
    async def wait_for_gate(events: list[Pinged]) -> None:
        calls.append([event.n for event in events])
        await gate.wait()

    redis, key = harness.redis, harness.keys.stream(STREAM)
    ids = await publish_pings(harness, *range(5))
    worker = harness.worker(router, consumer="leaving", grace=10)
    await worker.ensure_groups()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await eventually(lambda: calls == [[0, 1]])
    await eventually(lambda: _equal(pending_ids(redis, key), ids[:4]))  # one read of 4
    stop.set()

    async def released(entry_ids: list[bytes]) -> bool:
        rows = await redis.xpending_range(key, "g", "-", "+", 10)
        idle = {row["message_id"]: row["time_since_delivered"] for row in rows}
        return all(idle.get(i, 0) >= 30_000 for i in entry_ids)

    await eventually(lambda: released(ids[2:4]), within=3)  # while the batch still runs
    assert not task.done()
    gate.set()
    assert await asyncio.wait_for(task, 10) == 0
    assert await pending_ids(redis, key) == ids[2:4]  # the batch was acknowledged, whole
    assert calls == [[0, 1]]


async def _empty(value: "asyncio.Future[list[bytes]] | Any") -> bool:
    return not await value


async def _equal(value: "asyncio.Future[list[bytes]] | Any", expected: list[bytes]) -> bool:
    return bool(await value == expected)


async def _at_least_entries(redis: Redis, key: str, n: int) -> list[Any] | None:
    entries = await redis.xrange(key)
    return entries if len(entries) >= n else None
