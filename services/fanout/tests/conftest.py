"""Shared test helpers: note events and bulk chunks, a migrated database, fanout in-process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from contracts import BulkArchiveChunk, ChunkItem, Event, Priority
from contracts.notes import NoteCreated, NoteDeleted, NoteSnapshot, NoteUpdated
from fanout.handlers import routes
from fanout.store import FanoutStore
from fanout.tables import SCHEMA
from servicekit import OutboxRelay, ServiceSettings, StreamKeys, setup_telemetry
from servicekit.connections import redis_client_from_url
from servicekit.jobs import Route, Worker
from servicekit.migrations import migrate
from servicekit.redis_client import RedisClient
from servicekit.settings import asyncpg_url
from servicekit.testing import read_events

E = TypeVar("E", bound=Event)
OWNER = "alice"


def snapshot(note_id: UUID, version: int, *, owner_id: str = OWNER) -> NoteSnapshot:
    now = datetime.now(UTC)
    return NoteSnapshot(
        id=note_id, owner_id=owner_id, version=version, created_at=now, updated_at=now,
        title=f"title v{version}", body="", tags=[],
    )  # fmt: skip


def note_created(note_id: UUID | None = None, owner_id: str = OWNER) -> NoteCreated:
    note = snapshot(note_id or uuid4(), 1, owner_id=owner_id)
    return NoteCreated(
        producer="notes-api", owner_id=owner_id, note_id=note.id, version=1, note=note
    )


def note_updated(note_id: UUID, version: int, owner_id: str = OWNER) -> NoteUpdated:
    note = snapshot(note_id, version, owner_id=owner_id)
    return NoteUpdated(
        producer="notes-api", owner_id=owner_id, note_id=note_id, version=version, note=note
    )


def note_deleted(note_id: UUID, version: int) -> NoteDeleted:
    note = snapshot(note_id, version - 1)
    return NoteDeleted(
        producer="notes-api", owner_id=OWNER, note_id=note_id, version=version, note=note
    )


def bulk_chunk(
    items: int, *, parent: UUID | None = None, chunk_no: int = 0,
    priority: Priority = Priority.LOW,
) -> BulkArchiveChunk:  # fmt: skip
    parent = parent or uuid4()
    return BulkArchiveChunk(
        producer="notes-api", owner_id=OWNER, job_id=uuid4(), parent_job_id=parent,
        chunk_no=chunk_no, items=[ChunkItem(note_id=uuid4(), version=1) for _ in range(items)],
        child_priority=priority,
    )  # fmt: skip


# Quick retries and short blocking reads, so the suite waits milliseconds, not seconds.
FAST = {"block_ms": 50, "backoff_base": 0.05, "backoff_cap": 0.2, "jitter": 0.0}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh database that `fanout migrate` has brought to head."""
    await migrate(ServiceSettings(database_url=database_url), SCHEMA, "fanout.migrations")
    engine = create_async_engine(asyncpg_url(database_url))
    yield engine
    await engine.dispose()


@dataclasses.dataclass
class Fanout:
    """fanout's worker and outbox relay running in this process, on the test's prefix."""

    redis: RedisClient
    keys: StreamKeys
    engine: AsyncEngine

    async def events(self, stream: str, event_type: type[E]) -> list[E]:
        return await read_events(self.redis, self.keys, stream, event_type)

    async def count(self, table: str) -> int:
        async with self.engine.connect() as connection:
            result = await connection.execute(text(f"SELECT count(*) FROM {SCHEMA}.{table}"))
            return int(result.scalar_one())


@contextlib.asynccontextmanager
async def running_fanout(
    engine: AsyncEngine,
    redis_url: str,
    stream_prefix: str,
    redis_client: RedisClient,
    *,
    adjust: Callable[[Route], Route] = lambda route: route,
) -> AsyncIterator[Fanout]:
    """fanout in-process; ``adjust`` may swap a route's handler or options (fault injection)."""
    settings = ServiceSettings(
        otel_service_name="fanout-test", redis_url=redis_url, stream_prefix=stream_prefix
    )
    telemetry = setup_telemetry(settings)
    keys = StreamKeys(stream_prefix)
    redis = redis_client_from_url(redis_url)
    fast: Sequence[Route] = [
        adjust(dataclasses.replace(r, options=dataclasses.replace(r.options, **FAST)))
        for r in routes
    ]
    worker = Worker(
        fast, redis=redis, keys=keys, consumer="test-fanout", telemetry=telemetry,
        dependencies={"store": FanoutStore(engine)}, maintenance_interval=0.2, grace=5.0,
    )  # fmt: skip
    relay = OutboxRelay(engine, redis, schema=SCHEMA, keys=keys, batch_size=1000,
                        poll_interval=0.05)  # fmt: skip
    await worker.ensure_groups()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop)), asyncio.create_task(relay.run(stop))]
    try:
        yield Fanout(redis_client, keys, engine)
    finally:
        stop.set()
        code, _ = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        with contextlib.suppress(Exception):
            await redis.aclose()
        telemetry.shutdown()
    assert code == 0


@pytest.fixture
async def fanout(
    engine: AsyncEngine, redis_url: str, stream_prefix: str, redis_client: RedisClient
) -> AsyncIterator[Fanout]:
    async with running_fanout(engine, redis_url, stream_prefix, redis_client) as running:
        yield running
