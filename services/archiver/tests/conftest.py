"""Shared test helpers: note events, a migrated database, the archiver running in-process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from archiver.handlers import router
from archiver.store import SCHEMA, ArchiveStore
from contracts import ArchiveRequested, CopyRequested, Event
from contracts.notes import NoteCreated, NoteDeleted, NoteSnapshot, NoteUpdated
from servicekit import OutboxRelay, ServiceSettings, StreamKeys, setup_telemetry
from servicekit.connections import redis_client_from_url
from servicekit.jobs import Worker
from servicekit.migrations import migrate
from servicekit.redis_client import RedisClient
from servicekit.settings import asyncpg_url
from servicekit.testing import read_events

E = TypeVar("E", bound=Event)
OWNER = "alice"


def snapshot(note_id: UUID, version: int, *, owner_id: str = OWNER, **content: Any) -> NoteSnapshot:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {"title": f"title v{version}", "body": f"body v{version}", "tags": []}
    fields.update(content)
    return NoteSnapshot(
        id=note_id, owner_id=owner_id, version=version, created_at=now, updated_at=now, **fields
    )


def note_created(note_id: UUID | None = None, **content: Any) -> NoteCreated:
    note = snapshot(note_id or uuid4(), 1, **content)
    return NoteCreated(
        producer="notes-api", owner_id=note.owner_id, note_id=note.id, version=1, note=note
    )


def note_updated(note_id: UUID, version: int, **content: Any) -> NoteUpdated:
    note = snapshot(note_id, version, **content)
    return NoteUpdated(
        producer="notes-api", owner_id=OWNER, note_id=note_id, version=version, note=note
    )


def note_deleted(note_id: UUID, version: int) -> NoteDeleted:
    note = snapshot(note_id, version - 1)
    return NoteDeleted(
        producer="notes-api", owner_id=OWNER, note_id=note_id, version=version, note=note
    )


def archive_request(note_id: UUID, version: int = 1, owner_id: str = OWNER) -> ArchiveRequested:
    return ArchiveRequested(
        producer="notes-api", owner_id=owner_id, job_id=uuid4(), note_id=note_id, version=version
    )


def copy_request(note_id: UUID, version: int = 1, new_title: str | None = None) -> CopyRequested:
    return CopyRequested(
        producer="notes-api",
        owner_id=OWNER,
        job_id=uuid4(),
        note_id=note_id,
        version=version,
        new_title=new_title,
    )


# Quick retries and short blocking reads, so the suite waits milliseconds, not seconds.
FAST = {"block_ms": 50, "backoff_base": 0.05, "backoff_cap": 0.5, "jitter": 0.0}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh database that `archiver migrate` has brought to head."""
    await migrate(ServiceSettings(database_url=database_url), SCHEMA, "archiver.migrations")
    engine = create_async_engine(asyncpg_url(database_url))
    yield engine
    await engine.dispose()


@dataclasses.dataclass
class Archiver:
    """The archiver's worker and outbox relay running in this process, on the test's prefix."""

    redis: RedisClient
    keys: StreamKeys
    engine: AsyncEngine

    async def events(self, stream: str, event_type: type[E]) -> list[E]:
        return await read_events(self.redis, self.keys, stream, event_type)

    async def count(self, table: str, note_id: UUID) -> int:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                text(f"SELECT count(*) FROM {SCHEMA}.{table} WHERE note_id = :id"), {"id": note_id}
            )
            return int(result.scalar_one())


@pytest.fixture
async def archiver(
    engine: AsyncEngine, redis_url: str, stream_prefix: str, redis_client: RedisClient
) -> AsyncIterator[Archiver]:
    settings = ServiceSettings(
        otel_service_name="archiver-test", redis_url=redis_url, stream_prefix=stream_prefix
    )
    telemetry = setup_telemetry(settings)
    keys = StreamKeys(stream_prefix)
    redis = redis_client_from_url(redis_url)
    routes = [
        dataclasses.replace(r, options=dataclasses.replace(r.options, **FAST))
        for r in router.routes
    ]
    worker = Worker(
        routes,
        redis=redis,
        keys=keys,
        consumer="test-archiver",
        telemetry=telemetry,
        dependencies={"store": ArchiveStore(engine)},
        maintenance_interval=0.2,
        grace=5.0,
    )
    relay = OutboxRelay(engine, redis, schema=SCHEMA, keys=keys, poll_interval=0.05)
    await worker.ensure_groups()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop)), asyncio.create_task(relay.run(stop))]
    try:
        yield Archiver(redis_client, keys, engine)
    finally:
        stop.set()
        code, _ = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        with contextlib.suppress(Exception):
            await redis.aclose()
        telemetry.shutdown()
    assert code == 0
