"""The handler unit of work: effect, inbox row and outbox rows commit (or roll back) together."""

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from contracts.notes import NoteArchived
from contracts.streams import NOTES_ARCHIVED
from servicekit.inbox import purge_inbox
from servicekit.outbox import ensure_outbox_tables
from servicekit.settings import asyncpg_url
from servicekit.transactional import handler_transaction

SCHEMA = "archiver"
GROUP = "archiver"


def archived(note_id: UUID | None = None, version: int = 1) -> NoteArchived:
    return NoteArchived(
        producer="archiver",
        owner_id="alice",
        note_id=note_id or uuid4(),
        version=version,
        job_id=uuid4(),
    )


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(asyncpg_url(database_url))
    await ensure_outbox_tables(engine, SCHEMA)
    async with engine.begin() as connection:
        await connection.execute(
            text(f"CREATE TABLE {SCHEMA}.snapshots (note_id uuid, version int)")
        )
    yield engine
    await engine.dispose()


async def counts(engine: AsyncEngine) -> tuple[int, int, int]:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(
                f"SELECT (SELECT count(*) FROM {SCHEMA}.snapshots),"
                f" (SELECT count(*) FROM {SCHEMA}.inbox),"
                f" (SELECT count(*) FROM {SCHEMA}.outbox)"
            )
        )
        snapshots, inbox, outbox = result.one()
    return snapshots, inbox, outbox


async def archive_note(engine: AsyncEngine, request: NoteArchived) -> bool:
    """A handler shaped like a real one; returns whether it applied the effect."""
    async with handler_transaction(engine, schema=SCHEMA, group=GROUP, event=request) as tx:
        if tx.already_processed:
            return False
        await tx.connection.execute(
            text(f"INSERT INTO {SCHEMA}.snapshots VALUES (:note_id, :version)"),
            {"note_id": request.note_id, "version": request.version},
        )
        await tx.emit(
            NoteArchived.caused_by(
                request,
                producer="archiver",
                owner_id="alice",
                note_id=request.note_id,
                version=request.version,
                job_id=request.job_id,
            ),
            stream=NOTES_ARCHIVED,
            aggregate_id=str(request.note_id),
        )
    return True


async def test_effect_inbox_and_outbox_rows_commit_together(engine: AsyncEngine) -> None:
    assert await archive_note(engine, archived())
    assert await counts(engine) == (1, 1, 1)


async def archive_then_fail(engine: AsyncEngine, request: NoteArchived) -> None:
    async with handler_transaction(engine, schema=SCHEMA, group=GROUP, event=request) as tx:
        await tx.connection.execute(
            text(f"INSERT INTO {SCHEMA}.snapshots VALUES (:note_id, 1)"),
            {"note_id": request.note_id},
        )
        await tx.emit(request, stream=NOTES_ARCHIVED, aggregate_id=str(request.note_id))
        raise RuntimeError("boom")


async def test_exception_inside_rolls_back_effect_inbox_and_outbox(engine: AsyncEngine) -> None:
    request = archived()
    with pytest.raises(RuntimeError, match="boom"):
        await archive_then_fail(engine, request)
    assert await counts(engine) == (0, 0, 0)
    # The failed attempt left no inbox row, so the retry applies the effect.
    assert await archive_note(engine, request)
    assert await counts(engine) == (1, 1, 1)


async def test_second_delivery_is_already_processed_and_writes_nothing(
    engine: AsyncEngine,
) -> None:
    request = archived()
    assert await archive_note(engine, request)
    assert not await archive_note(engine, request)
    assert await counts(engine) == (1, 1, 1)


async def test_other_group_processes_the_same_event(engine: AsyncEngine) -> None:
    request = archived()
    async with handler_transaction(engine, schema=SCHEMA, group="a", event=request) as tx:
        assert not tx.already_processed
    async with handler_transaction(engine, schema=SCHEMA, group="b", event=request) as tx:
        assert not tx.already_processed
    async with handler_transaction(engine, schema=SCHEMA, group="a", event=request) as tx:
        assert tx.already_processed


async def wait_for_lock_waiter(engine: AsyncEngine, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        async with engine.connect() as connection:
            waiting = (
                await connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            ).scalar_one()
        if waiting:
            return
        if time.monotonic() > deadline:
            raise AssertionError("the second delivery never waited on the inbox row")
        await asyncio.sleep(0.02)


async def test_concurrent_deliveries_of_one_event_apply_one_effect(engine: AsyncEngine) -> None:
    request = archived()
    first_inside = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> bool:
        async with handler_transaction(engine, schema=SCHEMA, group=GROUP, event=request) as tx:
            assert not tx.already_processed
            await tx.connection.execute(
                text(f"INSERT INTO {SCHEMA}.snapshots VALUES (:note_id, 1)"),
                {"note_id": request.note_id},
            )
            first_inside.set()
            await release_first.wait()
        return True

    first_task = asyncio.create_task(first())
    await first_inside.wait()
    second_task = asyncio.create_task(archive_note(engine, request))
    # The second delivery blocks on the inbox primary key while the first is uncommitted.
    await wait_for_lock_waiter(engine)
    assert not second_task.done()
    release_first.set()
    assert await asyncio.wait_for(first_task, 10)
    assert not await asyncio.wait_for(second_task, 10)
    assert await counts(engine) == (1, 1, 0)


async def test_emit_after_already_processed_is_refused(engine: AsyncEngine) -> None:
    request = archived()
    assert await archive_note(engine, request)
    with pytest.raises(RuntimeError, match="already processed"):
        async with handler_transaction(engine, schema=SCHEMA, group=GROUP, event=request) as tx:
            await tx.emit(request, stream=NOTES_ARCHIVED, aggregate_id="x")


async def test_purge_inbox_deletes_only_old_rows(engine: AsyncEngine) -> None:
    old, recent = archived(), archived()
    assert await archive_note(engine, old)
    assert await archive_note(engine, recent)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                f"UPDATE {SCHEMA}.inbox SET processed_at = now() - interval '8 days'"
                " WHERE event_id = :event_id"
            ),
            {"event_id": old.event_id},
        )
    assert await purge_inbox(engine, SCHEMA, timedelta(days=7)) == 1
    async with engine.connect() as connection:
        remaining = (
            await connection.execute(text(f"SELECT event_id FROM {SCHEMA}.inbox"))
        ).scalars()
        assert list(remaining) == [recent.event_id]
