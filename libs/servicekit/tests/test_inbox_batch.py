"""The batch unit of work: one transaction, one inbox statement, only new events applied."""

from collections.abc import AsyncIterator, Sequence

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from contracts.notes import NoteArchived
from contracts.streams import NOTES_ARCHIVED
from servicekit import handler_transaction_batch
from servicekit.outbox import ensure_outbox_tables
from servicekit.settings import asyncpg_url

from .test_inbox import GROUP, SCHEMA, archived, counts


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


async def archive_notes(
    engine: AsyncEngine, requests: Sequence[NoteArchived]
) -> list[NoteArchived]:
    """A batch handler shaped like a real one; returns the events it applied."""
    async with handler_transaction_batch(engine, schema=SCHEMA, group=GROUP, events=requests) as tx:
        for request in tx.new_events:
            await tx.connection.execute(
                text(f"INSERT INTO {SCHEMA}.snapshots VALUES (:note_id, :version)"),
                {"note_id": request.note_id, "version": request.version},
            )
            await tx.emit(request, stream=NOTES_ARCHIVED, aggregate_id=str(request.note_id))
        return tx.new_events


async def test_a_batch_records_every_event_and_applies_each_once(engine: AsyncEngine) -> None:
    batch = [archived(version=n) for n in range(1, 4)]
    assert await archive_notes(engine, batch) == batch
    assert await counts(engine) == (3, 3, 3)


async def test_a_redelivered_batch_reports_only_the_new_events(engine: AsyncEngine) -> None:
    done, fresh = [archived(), archived()], [archived(), archived()]
    assert await archive_notes(engine, done) == done
    redelivered = [fresh[0], done[0], fresh[1], done[1], fresh[0]]  # a duplicate entry too
    async with handler_transaction_batch(
        engine, schema=SCHEMA, group=GROUP, events=redelivered
    ) as tx:
        assert tx.new_events == fresh
        assert [tx.already_processed(e) for e in redelivered] == [False, True, False, True, False]
    assert await archive_notes(engine, redelivered) == []  # now all of them are recorded
    assert await counts(engine) == (2, 4, 2)


async def archive_then_fail(engine: AsyncEngine, batch: Sequence[NoteArchived]) -> None:
    async with handler_transaction_batch(engine, schema=SCHEMA, group=GROUP, events=batch) as tx:
        for request in tx.new_events:
            await tx.connection.execute(
                text(f"INSERT INTO {SCHEMA}.snapshots VALUES (:note_id, 1)"),
                {"note_id": request.note_id},
            )
        raise RuntimeError("boom")


async def test_a_failed_batch_rolls_back_every_inbox_row(engine: AsyncEngine) -> None:
    batch = [archived(), archived()]
    with pytest.raises(RuntimeError, match="boom"):
        await archive_then_fail(engine, batch)
    assert await counts(engine) == (0, 0, 0)
    # The retried batch finds every event new again.
    assert await archive_notes(engine, batch) == batch


async def test_emit_from_a_fully_processed_batch_is_refused(engine: AsyncEngine) -> None:
    batch = [archived()]
    await archive_notes(engine, batch)
    with pytest.raises(RuntimeError, match="all processed"):
        async with handler_transaction_batch(
            engine, schema=SCHEMA, group=GROUP, events=batch
        ) as tx:
            await tx.emit(batch[0], stream=NOTES_ARCHIVED, aggregate_id="x")


async def test_an_empty_batch_opens_a_transaction_with_nothing_new(engine: AsyncEngine) -> None:
    async with handler_transaction_batch(engine, schema=SCHEMA, group=GROUP, events=[]) as tx:
        assert tx.new_events == []
