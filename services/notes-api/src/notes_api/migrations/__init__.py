"""Alembic migrations of schema `notes`; run with `notes-api migrate` (see `migrate()`)."""

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

HERE = Path(__file__).parent


def alembic_config(database_url: str) -> "Config":
    # Imported here, not at the top: alembic costs every process start ~0.5 s of CPU, for what
    # only `notes-api migrate` runs.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["database_url"] = database_url
    return config


def migrate(database_url: str, revision: str = "head") -> None:
    """Upgrade schema `notes` to ``revision``; safe to run concurrently with a running service."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


async def migrate_async(database_url: str) -> None:
    """`migrate` from inside a running event loop (alembic's env runs its own loop)."""
    await asyncio.to_thread(migrate, database_url)
