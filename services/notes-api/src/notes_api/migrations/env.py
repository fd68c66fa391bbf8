"""Alembic environment: asyncpg, version table in schema `notes`."""

import asyncio

from alembic import context
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from notes_api.settings import SCHEMA
from servicekit import asyncpg_url


def _run(connection: Connection) -> None:
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    context.configure(
        connection=connection,
        version_table_schema=SCHEMA,
        include_schemas=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        # Serialises concurrent `migrate` runs (several replicas starting at once).
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('notes-api-migrate'))"))
        context.run_migrations()


async def _main() -> None:
    engine = create_async_engine(asyncpg_url(context.config.attributes["database_url"]))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


asyncio.run(_main())
