"""The store against real PostgreSQL: its table classes match the migrations, in any schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel

from fanout.handlers import expand_bulk_archive_chunk
from fanout.settings import FanoutSettings
from fanout.store import FanoutStore
from fanout.tables import SCHEMA, NoteChangeRow, OwnerActivityRow
from servicekit.migrations import migrate
from servicekit.settings import asyncpg_url

from .conftest import OWNER, bulk_chunk, note_created, note_updated

TABLES = {NoteChangeRow.__tablename__, OwnerActivityRow.__tablename__}


def differences(connection: Connection) -> list[Any]:
    """What alembic's autogenerate would change to make the database match the table classes."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def ours(name: str | None, type_: str, parent: Any) -> bool:
        """Only the fanout's schema, and only its own tables (not the outbox, not alembic's)."""
        if type_ == "schema":
            return name == SCHEMA
        return type_ != "table" or name in TABLES

    def declared_here(item: Any, name: str | None, type_: str, *_: Any) -> bool:
        # SQLModel's metadata holds every table class imported (notes-api's too, in one run).
        return type_ != "table" or (item.schema == SCHEMA and name in TABLES)

    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_name": ours,
            "include_object": declared_here,
            "compare_type": True,
            "compare_server_default": True,
        },
    )
    return list(compare_metadata(context, SQLModel.metadata))


async def test_table_classes_match_the_migrated_schema(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        assert await connection.run_sync(differences) == []


@pytest.fixture
async def other_schema_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A database migrated the way DATABASE_SCHEMA=fanout_b migrates it (no `fanout` schema)."""
    settings = FanoutSettings(database_url=database_url, database_schema="fanout_b")
    await migrate(settings, settings.database_schema, "fanout.migrations")
    engine = create_async_engine(asyncpg_url(database_url))
    yield engine
    await engine.dispose()


async def outbox_rows(engine: AsyncEngine, schema: str = SCHEMA) -> list[Any]:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(f"SELECT event_id, stream, headers FROM {schema}.outbox ORDER BY id")
        )
        return list(result)


async def test_a_chunk_is_written_to_the_outbox_once_whatever_delivers_it(
    engine: AsyncEngine,
) -> None:
    store = FanoutStore(engine)
    chunk = bulk_chunk(1000)
    await expand_bulk_archive_chunk(chunk, store)
    await expand_bulk_archive_chunk(chunk, store)  # redelivered: the inbox has it
    resent = chunk.model_copy(update={"event_id": chunk.job_id})  # the chunk sent again
    await expand_bulk_archive_chunk(resent, store)  # derived event ids: no new rows

    rows = await outbox_rows(engine)
    assert len(rows) == 1000
    assert {row.stream for row in rows} == {"jobs.archive.low"}


async def test_children_link_to_the_chunks_span_instead_of_joining_its_trace(
    engine: AsyncEngine,
) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("chunk") as span:
        await expand_bulk_archive_chunk(bulk_chunk(3), FanoutStore(engine))
    chunk_trace = f"{span.get_span_context().trace_id:032x}"

    for row in await outbox_rows(engine):
        assert "traceparent" not in row.headers
        assert row.headers["link_traceparent"].split("-")[1] == chunk_trace


async def test_the_store_writes_the_schema_it_is_given(other_schema_engine: AsyncEngine) -> None:
    store = FanoutStore(other_schema_engine, schema="fanout_b")
    created = note_created()
    async with store.transaction(created, group="fanout.audit") as tx:
        await tx.record_note_change(created)
    await expand_bulk_archive_chunk(bulk_chunk(2), store)

    async with other_schema_engine.connect() as connection:
        changes = await connection.scalar(text("SELECT count(*) FROM fanout_b.note_changes"))
        schemas = await connection.scalar(
            text("SELECT count(*) FROM pg_namespace WHERE nspname = :name"), {"name": SCHEMA}
        )
    assert (changes, schemas) == (1, 0)
    assert len(await outbox_rows(other_schema_engine, "fanout_b")) == 2


async def test_activity_counts_each_change_and_keeps_the_latest_time(engine: AsyncEngine) -> None:
    store = FanoutStore(engine)
    created = note_created()
    updated = note_updated(created.note_id, 2)
    for change in (updated, created):  # arrival order need not be time order
        async with store.transaction(change, group="fanout.activity") as tx:
            await tx.count_owner_activity(change.owner_id, change.occurred_at)

    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(f"SELECT changes, last_change_at FROM {SCHEMA}.owner_activity")
            )
        ).one()
    assert row.changes == 2
    assert row.last_change_at == max(created.occurred_at, updated.occurred_at)
    assert created.owner_id == OWNER
