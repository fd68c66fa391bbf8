"""Trimming, tracing across retries and redrives, lifecycle events, pause, health, dead letters."""

import asyncio

from opentelemetry.trace import SpanKind

from contracts import JOBS_LIFECYCLE, ArchiveRequested, JobDeadLettered, JobRetrying, JobStarted
from servicekit import PermanentError
from servicekit.jobs import JobRouter, RetentionPolicy, enqueue, publish
from servicekit.jobs._codec import decode_entry
from servicekit.jobs._maintenance import StreamMaintenance
from servicekit.operations import (
    inspect_dead_letter,
    list_dead_letters,
    pause_group,
    purge_dead_letters,
    redrive_dead_letters,
    resume_group,
)
from servicekit.testing import eventually

from .conftest import Harness, Pinged, archive_request, fast

STREAM = "test.pinged.v1"


async def test_trimming_never_removes_entries_a_lagging_group_has_not_processed(
    harness: Harness,
) -> None:
    key = harness.keys.stream(STREAM)
    await harness.redis.xgroup_create(key, "fast", id="0", mkstream=True)
    await harness.redis.xgroup_create(key, "slow", id="0")
    ids = [
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=n))
        for n in range(10)
    ]
    # "fast" processed everything; "slow" acked 3 and holds entry 3 pending, 4.. undelivered.
    fast_read = await harness.redis.xreadgroup("fast", "f", {key: ">"}, count=100)
    await harness.redis.xack(key, "fast", *[e[0] for e in fast_read[0][1]])
    slow_read = await harness.redis.xreadgroup("slow", "s", {key: ">"}, count=4)
    await harness.redis.xack(key, "slow", *[e[0] for e in slow_read[0][1][:3]])
    maintenance = StreamMaintenance(
        harness.redis,
        harness.keys,
        harness.worker(JobRouter(group="g")).metrics,
        streams={STREAM: {"fast", "slow"}},
        retention=RetentionPolicy(processed_for=0),
    )
    assert await maintenance.trim(STREAM) == 3
    remaining = [e[0].decode() for e in await harness.redis.xrange(key)]
    assert remaining == ids[3:]
    # Nothing at all is trimmed while a group the platform declares does not exist yet.
    maintenance.required_groups = {STREAM: {"fast", "slow", "not-started-yet"}}
    await harness.redis.xack(key, "slow", slow_read[0][1][3][0])
    assert await maintenance.trim(STREAM) == 0


async def test_retry_and_redrive_stay_in_the_producers_trace(harness: Harness) -> None:
    router = JobRouter(group="g")
    calls: list[int] = []
    fail_permanently = asyncio.Event()
    fail_permanently.set()

    @router.event(Pinged, stream=STREAM, **fast())
    async def flaky_ping(event: Pinged) -> None:
        calls.append(event.n)
        if len(calls) == 1:
            raise ConnectionError("transient")
        if fail_permanently.is_set():
            raise PermanentError("bad until fixed")

    tracer = harness.telemetry.tracer_provider.get_tracer("test")
    async with harness.running(harness.worker(router)):
        with tracer.start_as_current_span("producer") as producer:
            await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=1))
        letters = await eventually(
            lambda: _nonempty(list_dead_letters(harness.redis, harness.keys, STREAM))
        )
        fail_permanently.clear()
        await redrive_dead_letters(harness.redis, harness.keys, STREAM)
        await eventually(lambda: harness.counted(STREAM, "succeeded") == 1)
    trace_id = producer.get_span_context().trace_id
    consumer_spans = [s for s in harness.spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert len(consumer_spans) == 3  # failed, retried-and-dead, redriven
    assert all(s.context.trace_id == trace_id for s in consumer_spans)
    assert [s.attributes["job.attempt"] for s in consumer_spans] == [1, 2, 1]
    redriven = consumer_spans[-1]
    assert redriven.links
    assert redriven.links[0].context.span_id == consumer_spans[1].context.span_id
    assert letters[0].meta["trace_id"] == format(trace_id, "032x")


async def _nonempty(listing: "asyncio.Future[list]") -> list | None:  # type: ignore[type-arg]
    items = await listing
    return items or None


async def test_job_messages_emit_lifecycle_events(harness: Harness) -> None:
    router = JobRouter(group="g")
    calls: list[int] = []

    @router.job(ArchiveRequested, **fast(max_attempts=2))
    async def archive_note(request: ArchiveRequested) -> None:
        calls.append(1)
        raise ConnectionError("archive store down")

    request = archive_request()
    async with harness.running(harness.worker(router)):
        await enqueue(harness.redis, harness.keys, request)
        await eventually(lambda: len(calls) == 2)
        lifecycle_key = harness.keys.stream(JOBS_LIFECYCLE)
        entries = await eventually(lambda: _at_least_entries(harness, lifecycle_key, 4))
    accepted = {c.type_name(): c for c in (JobStarted, JobRetrying, JobDeadLettered)}
    events = [decode_entry(fields, accepted)[0] for _, fields in entries]
    assert [e.type for e in events] == [
        "jobs.lifecycle.started.v1",
        "jobs.lifecycle.retrying.v1",
        "jobs.lifecycle.started.v1",
        "jobs.lifecycle.dead_lettered.v1",
    ]
    assert all(e.job_id == request.job_id for e in events)  # type: ignore[attr-defined]
    assert events[-1].attempts == 2  # type: ignore[attr-defined]
    assert events[-1].dead_letter_stream.endswith("jobs.archive.default.dlq")  # type: ignore[attr-defined]


async def _at_least_entries(harness: Harness, key: str, n: int) -> list | None:  # type: ignore[type-arg]
    entries = await harness.redis.xrange(key)
    return entries if len(entries) >= n else None


async def test_paused_group_takes_no_new_work_until_resumed(harness: Harness) -> None:
    router = JobRouter(group="g")
    seen: list[int] = []

    @router.event(Pinged, stream=STREAM, **fast())
    async def record_ping(event: Pinged) -> None:
        seen.append(event.n)

    await pause_group(harness.redis, harness.keys, STREAM, "g")
    async with harness.running(harness.worker(router)):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=1))
        await eventually(
            lambda: (
                harness.telemetry.registry.get_sample_value("stream_length", {"stream": STREAM})
                == 1
            )
        )
        await asyncio.sleep(0.5)  # a window in which a running group would have handled it
        assert seen == []
        await resume_group(harness.redis, harness.keys, STREAM, "g")
        await eventually(lambda: seen == [1])


async def test_health_gauges_are_sampled_from_redis(harness: Harness) -> None:
    router = JobRouter(group="g")
    gate = asyncio.Event()

    @router.event(Pinged, stream=STREAM, **fast(concurrency=1))
    async def blocked_ping(event: Pinged) -> None:
        await gate.wait()

    def gauge(name: str) -> float | None:
        return harness.telemetry.registry.get_sample_value(name, {"stream": STREAM, "group": "g"})

    await harness.redis.xadd(harness.keys.dead_letters(STREAM), {"x": "1"})
    async with harness.running(harness.worker(router)):
        for n in range(3):
            await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=n))
        await eventually(lambda: gauge("stream_group_pending") == 3)
        await eventually(lambda: (gauge("stream_group_oldest_pending_age_seconds") or 0) > 0)
        assert gauge("stream_group_lag") == 0
        assert (
            harness.telemetry.registry.get_sample_value("stream_dead_letters", {"stream": STREAM})
            == 1
        )
        gate.set()
        await eventually(lambda: gauge("stream_group_pending") == 0)


async def test_dead_letters_can_be_inspected_redriven_and_purged(harness: Harness) -> None:
    key = harness.keys.dead_letters(STREAM)
    router = JobRouter(group="g")
    healed = asyncio.Event()
    seen: list[int] = []

    @router.event(Pinged, stream=STREAM, **fast())
    async def picky_ping(event: Pinged) -> None:
        if not healed.is_set():
            raise PermanentError(f"cannot take {event.n}")
        seen.append(event.n)

    async with harness.running(harness.worker(router)):
        for n in range(3):
            await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=n))
        letters = await eventually(
            lambda: _at_least(list_dead_letters(harness.redis, harness.keys, STREAM), 3)
        )
        one = await inspect_dead_letter(harness.redis, harness.keys, STREAM, letters[0].id)
        assert one is not None
        assert one.meta["error_message"].startswith("cannot take")
        assert one.headers["event_type"] == STREAM
        healed.set()
        await redrive_dead_letters(harness.redis, harness.keys, STREAM, [letters[0].id])
        await eventually(lambda: len(seen) == 1)
        assert await harness.redis.xlen(key) == 2
        assert await purge_dead_letters(harness.redis, harness.keys, STREAM, [letters[1].id]) == 1
        assert await purge_dead_letters(harness.redis, harness.keys, STREAM) == 1
        assert await harness.redis.xlen(key) == 0


async def _at_least(listing: "asyncio.Future[list]", n: int) -> list | None:  # type: ignore[type-arg]
    items = await listing
    return items if len(items) >= n else None


async def test_long_handler_keeps_its_lease_past_the_visibility_timeout(harness: Harness) -> None:
    router = JobRouter(group="g")
    runs: list[str] = []

    @router.event(Pinged, stream=STREAM, **fast(visibility_timeout=0.6))
    async def long_ping(event: Pinged) -> None:
        runs.append("start")
        await asyncio.sleep(1.5)

    other = JobRouter(group="g")

    @other.event(Pinged, stream=STREAM, **fast(visibility_timeout=0.6))
    async def would_steal(event: Pinged) -> None:
        runs.append("stolen")

    first = harness.worker(router, consumer="owner")
    async with harness.running(first):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=1))
        await eventually(lambda: runs == ["start"])
        async with harness.running(harness.worker(other, consumer="thief")):
            await eventually(lambda: harness.counted(STREAM, "succeeded") == 1, within=5)
    assert runs == ["start"]
