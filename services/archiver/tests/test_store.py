"""The store against real PostgreSQL: its table classes match the migrations, in any schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel

from archiver.settings import ArchiverSettings
from archiver.store import SCHEMA, ArchiveStore, NoteChange
from archiver.tables import NoteVersionRow, SnapshotRow
from servicekit.migrations import migrate
from servicekit.settings import asyncpg_url

from .conftest import archive_request, note_created, note_deleted, note_updated

TABLES = {NoteVersionRow.__tablename__, SnapshotRow.__tablename__}


def differences(connection: Connection) -> list[Any]:
    """What alembic's autogenerate would change to make the database match the table classes."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def ours(name: str | None, type_: str, parent: Any) -> bool:
        """Only the archiver's schema, and only its own tables (not the outbox, not alembic's)."""
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
    """A database migrated the way DATABASE_SCHEMA=archiver_b migrates it (no `archiver` schema)."""
    settings = ArchiverSettings(database_url=database_url, database_schema="archiver_b")
    await migrate(settings, settings.database_schema, "archiver.migrations")
    engine = create_async_engine(asyncpg_url(database_url))
    yield engine
    await engine.dispose()


async def test_the_store_reads_and_writes_the_schema_it_is_given(
    other_schema_engine: AsyncEngine,
) -> None:
    store = ArchiveStore(other_schema_engine, schema="archiver_b")
    created = note_created(title="Plan", tags=["work"])
    async with store.transaction(created) as tx:
        await tx.save_version(created)
    request = archive_request(created.note_id)
    async with store.transaction(request) as tx:
        found = await tx.find_note(created.note_id, 1)
        assert found is not None
        assert found.version is not None
        await tx.freeze_snapshot(found.version, job_id=request.job_id)

    assert (found.version.title, found.version.tags) == ("Plan", ["work"])
    async with other_schema_engine.connect() as connection:
        snapshots = await connection.scalar(text("SELECT count(*) FROM archiver_b.snapshots"))
        schemas = await connection.scalar(
            text("SELECT count(*) FROM pg_namespace WHERE nspname = :name"), {"name": SCHEMA}
        )
    assert (snapshots, schemas) == (1, 0)


async def save(store: ArchiveStore, *changes: NoteChange) -> None:
    for change in changes:
        async with store.transaction(change) as tx:
            await tx.save_version(change)


async def test_a_deletion_wins_whichever_order_the_events_arrive_in(engine: AsyncEngine) -> None:
    store = ArchiveStore(engine)
    first, second = note_created(), note_created()
    await save(store, first, note_deleted(first.note_id, 2))
    # The deletion first, then an update of the same version: the version stays deleted.
    await save(store, note_deleted(second.note_id, 2), second, note_updated(second.note_id, 2))

    for note in (first, second):
        async with store.transaction(archive_request(note.note_id)) as tx:
            found = await tx.find_note(note.note_id, 1)
        assert found is not None
        assert found.version is not None
        assert (found.owner_id, found.deleted) == (note.owner_id, True)
    async with engine.connect() as connection:
        deleted = await connection.scalar(
            text(f"SELECT deleted FROM {SCHEMA}.note_versions WHERE note_id = :id AND version = 2"),
            {"id": second.note_id},
        )
    assert deleted is True


async def test_a_version_is_frozen_once_by_the_first_job(engine: AsyncEngine) -> None:
    store = ArchiveStore(engine)
    created = note_created()
    await save(store, created)
    first, second = archive_request(created.note_id), archive_request(created.note_id)
    for request in (first, second):
        async with store.transaction(request) as tx:
            found = await tx.find_note(created.note_id, 1)
            assert found is not None
            assert found.version is not None
            await tx.freeze_snapshot(found.version, job_id=request.job_id)

    async with engine.connect() as connection:
        jobs = await connection.execute(text(f"SELECT job_id FROM {SCHEMA}.snapshots"))
        assert list(jobs.scalars()) == [first.job_id]
