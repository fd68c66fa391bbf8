"""The archiver's alembic migrations, applied by ``archiver migrate``."""

from pathlib import Path

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine


def upgrade_to_head(connection: Connection, schema: str) -> None:
    """Apply every migration on ``connection``; the version table lives in ``schema``."""
    # Imported here, not at the top: alembic costs every worker start ~0.5 s of CPU, for a command
    # that only `archiver migrate` runs.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine, schema: str) -> None:
    """Bring ``schema`` to the newest version, in one transaction."""
    async with engine.begin() as connection:
        await connection.run_sync(upgrade_to_head, schema)
