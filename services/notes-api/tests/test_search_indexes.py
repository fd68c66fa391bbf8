"""The search indexes: built after the revisions, concurrently, so writes to `notes` go on."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from notes_api.search_indexes import SEARCH_INDEXES, ensure_search_indexes, migrate_notes
from notes_api.settings import SCHEMA, NotesApiSettings
from servicekit import create_database_engine
from servicekit.migrations import migrate
from servicekit.testing import fresh_database

_INSERT = (
    "INSERT INTO notes.notes (id, owner_id, title, body, tags, version, created_at, updated_at) "
    "VALUES (gen_random_uuid(), :owner, 'a title', 'a body', '{}', 1, now(), now())"
)


@pytest.fixture
async def empty_settings(postgres_admin_url: str) -> AsyncIterator[NotesApiSettings]:
    """A database of its own, not migrated."""
    async with fresh_database(postgres_admin_url, prefix="notes_ix") as url:
        yield NotesApiSettings(database_url=url)


async def _indexes(engine: AsyncEngine) -> dict[str, bool]:
    """Search index name → valid, as PostgreSQL has them."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT c.relname, i.indisvalid FROM pg_index AS i "
                "JOIN pg_class AS c ON c.oid = i.indexrelid "
                "WHERE c.relnamespace = 'notes'::regnamespace AND c.relname LIKE '%trgm'"
            )
        )
        return {row.relname: row.indisvalid for row in rows}


async def test_the_revisions_build_no_search_index_and_migrate_builds_both_once(
    empty_settings: NotesApiSettings,
) -> None:
    await migrate(empty_settings, SCHEMA, "notes_api.migrations")
    engine = create_database_engine(empty_settings)
    try:
        assert await _indexes(engine) == {}  # nothing built inside the migration's transaction
        await migrate_notes(empty_settings)
        assert await _indexes(engine) == dict.fromkeys(SEARCH_INDEXES, True)
        assert await ensure_search_indexes(empty_settings) == []  # valid: left alone
    finally:
        await engine.dispose()


async def test_an_index_left_invalid_by_a_failed_build_is_dropped_and_built_again(
    empty_settings: NotesApiSettings,
) -> None:
    await migrate(empty_settings, SCHEMA, "notes_api.migrations")
    engine = create_database_engine(empty_settings).execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for _ in range(2):
                await connection.execute(text(_INSERT), {"owner": "alice"})
            # A concurrent build that fails (a duplicate) leaves its index behind, INVALID.
            with pytest.raises(Exception, match="could not create unique index"):
                await connection.execute(
                    text(
                        "CREATE UNIQUE INDEX CONCURRENTLY ix_notes_body_trgm "
                        "ON notes.notes (owner_id)"
                    )
                )
        assert await _indexes(engine) == {"ix_notes_body_trgm": False}
        assert await ensure_search_indexes(empty_settings) == list(SEARCH_INDEXES)
        assert await _indexes(engine) == dict.fromkeys(SEARCH_INDEXES, True)
        async with engine.connect() as connection:
            definition = await connection.scalar(
                text("SELECT pg_get_indexdef('notes.ix_notes_body_trgm'::regclass)")
            )
        assert "gin_trgm_ops" in definition, definition
        assert "UNIQUE" not in definition, definition
    finally:
        await engine.dispose()


async def test_writes_to_notes_go_on_while_the_indexes_are_built(
    empty_settings: NotesApiSettings,
) -> None:
    await migrate(empty_settings, SCHEMA, "notes_api.migrations")
    engine = create_database_engine(empty_settings)
    build: asyncio.Task[list[str]] | None = None
    try:
        async with engine.connect() as writer, engine.connect() as other:
            # An open transaction that wrote: the build must wait for it (either kind does).
            await writer.execute(text(_INSERT), {"owner": "alice"})
            build = asyncio.create_task(ensure_search_indexes(empty_settings))
            seen = await _wait_for_build_waiting(other)
            # A plain CREATE INDEX would now hold a lock every insert queues behind.
            await other.execute(text("SET lock_timeout = '3s'"))
            await other.execute(text(_INSERT), {"owner": "bob"})
            await other.commit()
            assert not build.done(), seen
            await writer.commit()
            assert await asyncio.wait_for(build, 60) == list(SEARCH_INDEXES)
        assert await _indexes(engine) == dict.fromkeys(SEARCH_INDEXES, True)
    finally:
        if build is not None and not build.done():
            build.cancel()
        await engine.dispose()


async def _wait_for_build_waiting(connection: AsyncConnection) -> list[tuple[str, str]]:
    """Poll until the index build is waiting for the open writer (deadline 30 s)."""
    deadline = time.monotonic() + 30
    seen: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        rows = await connection.execute(
            text(
                "SELECT query, coalesce(wait_event_type, '') AS waiting FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'CREATE INDEX%'"
            )
        )
        await connection.rollback()
        seen = [(row.query, row.waiting) for row in rows]
        if any(waiting == "Lock" for _, waiting in seen):
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"the index build never waited for the open writer; saw {seen}")
