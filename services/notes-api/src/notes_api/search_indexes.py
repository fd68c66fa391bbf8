"""The trigram indexes `q` is served from, built with `CREATE INDEX CONCURRENTLY` after migrating.

`notes-api migrate` runs the alembic revisions first (servicekit's runner: one transaction, which
PostgreSQL refuses `CREATE INDEX CONCURRENTLY` inside), then `ensure_search_indexes` on a
connection in autocommit. A concurrent build takes a lock that lets inserts and updates of `notes`
go on (a plain `CREATE INDEX` holds them for the whole build: 30-90 s per 100k notes of 1 KB on
the development machine); it waits for the transactions open when it starts, and reads the table
twice.

Why not a revision: servicekit's runner (`servicekit.migrations`) runs every revision in the one
transaction it opens, holding a transaction-scoped advisory lock, so alembic's
`op.get_context().autocommit_block()` cannot work there (alembic did not start that transaction).
The smallest change that would allow it: take the advisory lock at session level
(`pg_advisory_lock`, released in a `finally`) on a connection left outside a transaction, and
let alembic own the transactions (`transaction_per_migration=True` in `env.configure`); a
revision could then build its index in an autocommit block. Until then, this step.

Idempotent and safe for several replicas at once: a session-level advisory lock makes them take
turns, an index already valid is left alone, and an index left INVALID by an interrupted or
failed build (PostgreSQL keeps it, unused for reads but still updated by writes) is dropped
concurrently and built again.

Databases migrated before this step existed got the same two indexes from revision 0005, inside
its transaction; they are valid, so nothing is rebuilt.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from notes_api.settings import SCHEMA
from servicekit import get_logger
from servicekit.migrations import migrate
from servicekit.settings import ServiceSettings, asyncpg_url

SEARCH_INDEXES = {"ix_notes_title_trgm": "title", "ix_notes_body_trgm": "body"}
"""Index name → its column, indexed with pg_trgm's `gin_trgm_ops` (for `notes_api.search`)."""
_LOCK_NAMESPACE = 0x74726769  # "trgi": the first key of the two-key advisory lock
_log = get_logger("notes_api.search_indexes")


async def migrate_notes(settings: ServiceSettings) -> list[str]:
    """Everything `notes-api migrate` does: the revisions, then the search indexes."""
    applied = await migrate(settings, SCHEMA, "notes_api.migrations")
    await ensure_search_indexes(settings)
    return applied


async def ensure_search_indexes(settings: ServiceSettings) -> list[str]:
    """Build each search index that is missing or invalid, concurrently; return those built."""
    engine = create_async_engine(
        asyncpg_url(settings.require_database_url()),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",  # CREATE INDEX CONCURRENTLY refuses a transaction
    )
    built: list[str] = []
    try:
        async with engine.connect() as connection:
            key = (_LOCK_NAMESPACE, func.hashtext(SCHEMA))
            await connection.execute(select(func.pg_advisory_lock(*key)))
            try:
                opclass_schema = await _trigram_schema(connection)
                for name, column in SEARCH_INDEXES.items():
                    if await _build(connection, name, column, opclass_schema):
                        built.append(name)
            finally:
                await connection.execute(select(func.pg_advisory_unlock(*key)))
    finally:
        await engine.dispose()
    if built:
        _log.info("search_indexes.built", indexes=built)
    return built


async def _trigram_schema(connection: AsyncConnection) -> str:
    """The schema holding pg_trgm (revision 0005 installs it): its operator class is named in it."""
    found = await connection.scalar(
        text("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'")
    )
    if found is None:
        msg = "pg_trgm is not installed: run the revisions first (revision 0005 creates it)"
        raise RuntimeError(msg)
    return str(found)


async def _build(connection: AsyncConnection, name: str, column: str, opclass_schema: str) -> bool:
    valid = await connection.scalar(
        text(
            "SELECT i.indisvalid FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
            "WHERE c.relnamespace = CAST(:schema AS regnamespace) AND c.relname = :name"
        ),
        {"schema": SCHEMA, "name": name},
    )
    if valid:
        return False
    if valid is not None:  # INVALID: left by a build that failed or was interrupted
        _log.warning("search_indexes.rebuilding_invalid", index=name)
        await connection.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {SCHEMA}.{name}"))
    await connection.execute(
        text(
            f"CREATE INDEX CONCURRENTLY {name} ON {SCHEMA}.notes "
            f"USING gin ({column} {opclass_schema}.gin_trgm_ops)"
        )
    )
    return True
