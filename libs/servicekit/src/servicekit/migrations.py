"""Bring a service's PostgreSQL schema to its newest alembic revision: ``await migrate(...)``.

A service keeps only its revision scripts (a package such as ``archiver.migrations``); no
``env.py`` and no ``alembic.ini``. One transaction does it all, in this order:

1. an advisory lock for the schema, so replicas that run ``migrate`` together take turns (the
   later ones find the schema at head and apply nothing);
2. ``CREATE SCHEMA IF NOT EXISTS`` (after the lock: two concurrent creations of one schema
   would otherwise fail the second);
3. alembic's upgrade to head, with the version table ``alembic_version`` in that schema.

A revision script reads the target schema from ``context.config.attributes["schema"]``, so one
set of scripts serves any ``DATABASE_SCHEMA`` (tests migrate a schema of their own).
Everything commits together, or nothing does (and the lock is held until then), so a statement
PostgreSQL refuses inside a transaction (``CREATE INDEX CONCURRENTLY``) cannot be a revision here.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from servicekit.logs import get_logger
from servicekit.settings import ServiceSettings, asyncpg_url

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationContext, MigrationInfo
    from sqlalchemy import Connection

__all__ = ["VERSION_TABLE", "migrate"]

VERSION_TABLE = "alembic_version"
"""The version table's name, created in the migrated schema (one per service schema)."""

_LOCK_NAMESPACE = 0x6D696772  # "migr": the first key of the two-key advisory lock
_log = get_logger("servicekit.migrations")


async def migrate(settings: ServiceSettings, schema: str, versions: str | Path) -> list[str]:
    """Upgrade ``schema`` to the newest revision in ``versions``; return the revisions applied.

    ``settings`` give ``DATABASE_URL``. ``versions`` is the package (``"archiver.migrations"``)
    or directory holding the service's revision scripts. Safe to run from several processes at
    once: they take turns, and all but the first apply nothing (an empty list).
    """
    directory = _directory(versions)
    # No pool and no command timeout: one connection, for as long as the migration takes.
    engine = create_async_engine(asyncpg_url(settings.require_database_url()), poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            applied: list[str] = await connection.run_sync(_upgrade, schema, directory)
    finally:
        await engine.dispose()
    _log.info("database.migrated", schema=schema, applied=applied)
    return applied


def _directory(versions: str | Path) -> Path:
    if isinstance(versions, Path):
        return versions
    resource = importlib.resources.files(versions)
    if not isinstance(resource, Path):  # a zipped package: alembic reads scripts from files
        msg = f"migrations package {versions!r} is not a directory on disk"
        raise TypeError(msg)
    return resource


def _upgrade(connection: Connection, schema: str, directory: Path) -> list[str]:
    # Imported here, not at the top: alembic costs a process ~0.5 s of CPU at start, for what only
    # a `migrate` command runs.
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    # Until this transaction ends. The two-key form: its keys never meet single-key locks.
    connection.execute(select(func.pg_advisory_xact_lock(_LOCK_NAMESPACE, func.hashtext(schema))))
    quoted = connection.dialect.identifier_preparer.quote_schema(schema)
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))

    config = Config()  # no file: only what the revision scripts may read
    config.attributes["schema"] = schema
    script = ScriptDirectory(directory, version_locations=[directory])
    applied: list[str] = []

    def upgrade_to_head(current: Any, _context: MigrationContext) -> Any:
        # What `alembic.command.upgrade` passes; the environment runs here instead of in env.py.
        return script._upgrade_revs("head", current)

    def record(
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        applied.extend(step.up_revision_ids)

    with EnvironmentContext(config, script, fn=upgrade_to_head, destination_rev="head") as env:
        env.configure(
            connection=connection,
            version_table=VERSION_TABLE,
            version_table_schema=schema,
            on_version_apply=record,
        )
        # The connection is already in a transaction (ours): alembic joins it.
        with env.begin_transaction():
            env.run_migrations()
    return applied
