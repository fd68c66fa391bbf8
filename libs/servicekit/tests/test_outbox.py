"""The outbox relay: committed events reach Redis exactly once, in order, through outages."""

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from structlog.testing import capture_logs

from contracts.notes import NoteArchived
from contracts.streams import NOTES_ARCHIVED
from servicekit.keys import StreamKeys
from servicekit.outbox import (
    OutboxRelay,
    add_each_to_outbox,
    add_to_outbox,
    ensure_outbox_tables,
)
from servicekit.settings import asyncpg_url
from servicekit.wire import DATA_FIELD, decode_envelope

SCHEMA = "notes"
T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], within: float = 20.0) -> T:
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


def archived(note_id: UUID, version: int = 1) -> NoteArchived:
    return NoteArchived(
        producer="archiver", owner_id="alice", note_id=note_id, version=version, job_id=uuid4()
    )


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(asyncpg_url(database_url))
    await ensure_outbox_tables(engine, SCHEMA)
    yield engine
    await engine.dispose()


async def write(engine: AsyncEngine, events: list[NoteArchived]) -> None:
    async with engine.begin() as connection:
        for event in events:
            await add_to_outbox(
                connection, SCHEMA, event, stream=NOTES_ARCHIVED, aggregate_id=str(event.note_id)
            )


async def unpublished(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(f"SELECT count(*) FROM {SCHEMA}.outbox WHERE published_at IS NULL")
        )
        return int(result.scalar_one())


async def read_stream(
    redis: Redis, keys: StreamKeys
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    entries = await redis.xrange(keys.stream(NOTES_ARCHIVED))
    decoded = []
    for _, fields in entries:
        body, headers = decode_envelope(fields[DATA_FIELD.encode()])
        decoded.append((json.loads(body), headers))
    return decoded


async def test_relay_publishes_in_id_order_and_marks_rows_published(
    engine: AsyncEngine, redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    events = [archived(uuid4()) for _ in range(5)]
    await write(engine, events)
    relay = OutboxRelay(engine, redis_client, schema=SCHEMA, keys=keys)

    assert await relay.publish_pending() == 5
    assert await relay.publish_pending() == 0
    assert await unpublished(engine) == 0
    decoded = await read_stream(redis_client, keys)
    assert [body for body, _ in decoded] == [event.model_dump(mode="json") for event in events]
    _, headers = decoded[0]
    assert headers["content-type"] == "application/json"
    assert headers["event_type"] == NOTES_ARCHIVED
    assert headers["event_id"] == str(events[0].event_id)
    assert headers["correlation_id"] == str(events[0].event_id)


async def test_entries_carry_the_trace_context_captured_at_write_time(
    engine: AsyncEngine, redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    request_tracing = TracerProvider()
    with request_tracing.get_tracer("test").start_as_current_span("POST /notes") as request_span:
        await write(engine, [archived(uuid4())])
    request_context = request_span.get_span_context()

    await OutboxRelay(engine, redis_client, schema=SCHEMA, keys=keys).publish_pending()

    [(_, headers)] = await read_stream(redis_client, keys)
    _, trace_id, span_id, _ = headers["traceparent"].split("-")
    assert int(trace_id, 16) == request_context.trace_id
    assert int(span_id, 16) == request_context.span_id


async def test_a_batch_written_in_one_statement_is_the_rows_one_call_each_would_write(
    engine: AsyncEngine, redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    note_id = uuid4()
    events = [archived(note_id, 1), archived(uuid4()), archived(note_id, 2)]
    with TracerProvider().get_tracer("test").start_as_current_span("batch") as batch_span:
        async with engine.begin() as connection:
            entries = [(event, str(event.note_id)) for event in events]
            await add_each_to_outbox(connection, SCHEMA, entries, stream=NOTES_ARCHIVED)
            await add_each_to_outbox(connection, SCHEMA, [], stream=NOTES_ARCHIVED)  # nothing
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text(f"SELECT aggregate_id, event_id FROM {SCHEMA}.outbox ORDER BY id")
            )
        ).all()
    assert [(row.aggregate_id, row.event_id) for row in rows] == [
        (str(event.note_id), event.event_id) for event in events
    ]  # in order, each of its note's aggregate

    assert await OutboxRelay(engine, redis_client, schema=SCHEMA, keys=keys).publish_pending() == 3
    decoded = await read_stream(redis_client, keys)
    assert [body for body, _ in decoded] == [event.model_dump(mode="json") for event in events]
    trace_ids = {int(headers["traceparent"].split("-")[1], 16) for _, headers in decoded}
    assert trace_ids == {batch_span.get_span_context().trace_id}  # the writer's trace in each


async def test_relay_producer_span_continues_the_captured_trace(
    engine: AsyncEngine, redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    with TracerProvider().get_tracer("test").start_as_current_span("POST /notes") as request_span:
        await write(engine, [archived(uuid4())])
    exporter = InMemorySpanExporter()
    relay_tracing = TracerProvider()
    relay_tracing.add_span_processor(SimpleSpanProcessor(exporter))
    relay = OutboxRelay(
        engine, redis_client, schema=SCHEMA, keys=keys, tracer_provider=relay_tracing
    )

    assert await relay.publish_pending() == 1

    [producer] = exporter.get_finished_spans()
    assert producer.kind is SpanKind.PRODUCER
    assert producer.parent is not None
    assert producer.parent.span_id == request_span.get_span_context().span_id
    assert producer.context is not None
    assert producer.context.trace_id == request_span.get_span_context().trace_id
    [(_, headers)] = await read_stream(redis_client, keys)
    assert headers["traceparent"].split("-")[2] == format(producer.context.span_id, "016x")


async def test_rows_committed_before_a_crash_go_out_once_from_a_fresh_relay(
    database_url: str, redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    crashed = create_async_engine(asyncpg_url(database_url))
    await ensure_outbox_tables(crashed, SCHEMA)
    events = [archived(uuid4()) for _ in range(3)]
    await write(crashed, events)
    await crashed.dispose()  # the process died after commit, before any relay ran

    fresh = create_async_engine(asyncpg_url(database_url))
    try:
        relay = OutboxRelay(fresh, redis_client, schema=SCHEMA, keys=keys)
        assert await relay.publish_pending() == 3
        assert await relay.publish_pending() == 0
    finally:
        await fresh.dispose()
    published = [body["event_id"] for body, _ in await read_stream(redis_client, keys)]
    assert published == [str(event.event_id) for event in events]


class CountingRelay(OutboxRelay):
    published = 0

    async def publish_pending(self) -> int:
        count = await super().publish_pending()
        self.published += count
        return count


async def test_two_relays_publish_each_event_once_in_aggregate_order(
    engine: AsyncEngine, redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    aggregates = [uuid4() for _ in range(4)]
    events = [archived(aggregates[i % 4], version=i // 4 + 1) for i in range(200)]
    for start in range(0, 200, 10):
        await write(engine, events[start : start + 10])
    stop = asyncio.Event()
    relays = [
        CountingRelay(engine, redis_client, schema=SCHEMA, keys=keys, batch_size=7, poll_interval=0)
        for _ in range(2)
    ]
    tasks = [asyncio.create_task(relay.run(stop)) for relay in relays]
    try:

        async def all_published() -> bool:
            return await unpublished(engine) == 0

        await eventually(all_published)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)

    bodies = [body for body, _ in await read_stream(redis_client, keys)]
    assert sorted(body["event_id"] for body in bodies) == sorted(str(e.event_id) for e in events)
    for aggregate in aggregates:
        versions = [body["version"] for body in bodies if body["note_id"] == str(aggregate)]
        assert versions == list(range(1, 51))
    assert all(relay.published for relay in relays), "both relays should have taken a share"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server this test may stop and restart without touching the shared one."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            "redis-server",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            stdout=asyncio.subprocess.DEVNULL,
        )
        probe = Redis(port=self.port)

        async def answers() -> bool:
            try:
                return bool(await probe.ping())
            except RedisError:
                return False

        try:
            await eventually(answers, within=10)
        finally:
            await probe.aclose()

    def client(self) -> Redis:
        # No retries with backoff: an outage should surface at once in these tests.
        return Redis(
            port=self.port, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis()
    await server.start()
    yield server
    await server.stop()


async def test_redis_outage_loses_and_duplicates_nothing(
    engine: AsyncEngine, private_redis: PrivateRedis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    redis = private_redis.client()
    relay = OutboxRelay(engine, redis, schema=SCHEMA, keys=keys)
    try:
        await write(engine, [archived(uuid4()) for _ in range(2)])
        assert await relay.publish_pending() == 2
        await private_redis.stop()

        events = [archived(uuid4()) for _ in range(3)]
        await write(engine, events)
        with pytest.raises(RedisError):
            await relay.publish_pending()
        assert await unpublished(engine) == 3

        await private_redis.start()  # same port, empty: the earlier entries are gone with it
        assert await relay.publish_pending() == 3
        assert await unpublished(engine) == 0
        published = [body["event_id"] for body, _ in await read_stream(redis, keys)]
        assert published == [str(event.event_id) for event in events]
    finally:
        await redis.aclose()


async def test_running_relay_survives_an_outage_and_catches_up(
    engine: AsyncEngine, private_redis: PrivateRedis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    redis = private_redis.client()
    relay = OutboxRelay(
        engine, redis, schema=SCHEMA, keys=keys, poll_interval=0.02, max_backoff=0.2
    )
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(relay.run(stop))
        try:
            await private_redis.stop()
            events = [archived(uuid4()) for _ in range(5)]
            await write(engine, events)

            async def failed_at_least_once() -> bool:
                failures = [log for log in logs if log["event"] == "outbox.publish_failed"]
                return bool(failures) and await unpublished(engine) == 5 and not task.done()

            await eventually(failed_at_least_once)
            await private_redis.start()

            async def all_published() -> bool:
                return await unpublished(engine) == 0

            await eventually(all_published)
            published = [body["event_id"] for body, _ in await read_stream(redis, keys)]
            assert published == [str(event.event_id) for event in events]
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await redis.aclose()


async def test_purge_published_deletes_only_old_published_rows(
    engine: AsyncEngine, redis_client: Redis, stream_prefix: str
) -> None:
    relay = OutboxRelay(engine, redis_client, schema=SCHEMA, keys=StreamKeys(stream_prefix))
    old, recent, pending = (archived(uuid4()) for _ in range(3))
    await write(engine, [old, recent])
    assert await relay.publish_pending() == 2
    await write(engine, [pending])
    async with engine.begin() as connection:
        await connection.execute(
            text(
                f"UPDATE {SCHEMA}.outbox SET published_at = now() - interval '8 days',"
                " created_at = now() - interval '8 days' WHERE event_id = :old"
                " OR event_id = :pending"
            ),
            {"old": old.event_id, "pending": pending.event_id},
        )
        # The pending row is old but unpublished: it must survive.
        await connection.execute(
            text(f"UPDATE {SCHEMA}.outbox SET published_at = NULL WHERE event_id = :pending"),
            {"pending": pending.event_id},
        )

    assert await relay.purge_published(timedelta(days=7)) == 1
    async with engine.connect() as connection:
        remaining = (
            await connection.execute(text(f"SELECT event_id FROM {SCHEMA}.outbox ORDER BY id"))
        ).scalars()
        assert list(remaining) == [recent.event_id, pending.event_id]


async def test_rows_behind_a_row_locked_by_another_relay_wait_their_turn(
    engine: AsyncEngine, redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    held, free = uuid4(), uuid4()
    await write(engine, [archived(held, 1), archived(free, 1), archived(held, 2)])
    relay = OutboxRelay(engine, redis_client, schema=SCHEMA, keys=keys)

    async with engine.begin() as other_relay:
        # Another relay holds the aggregate's first row (it is between its XADD and its commit).
        await other_relay.execute(
            text(f"SELECT id FROM {SCHEMA}.outbox ORDER BY id LIMIT 1 FOR UPDATE")
        )
        assert await relay.publish_pending() == 1
        bodies = [body for body, _ in await read_stream(redis_client, keys)]
        assert [body["note_id"] for body in bodies] == [str(free)]

    assert await relay.publish_pending() == 2
    bodies = [body for body, _ in await read_stream(redis_client, keys)]
    assert [(body["note_id"], body["version"]) for body in bodies[1:]] == [
        (str(held), 1),
        (str(held), 2),
    ]
