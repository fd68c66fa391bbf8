"""Whether ``make run`` may skip the migrate commands: nothing changed since they last ran.

Running every service's ``migrate`` costs a Python start and the service's imports each time,
most of ``make run``'s start on a synced checkout, to learn that the schemas are at head. This
records, after a successful migration, a fingerprint of every migration file and the version
each ``alembic_version`` table in the database holds. The next start skips the commands only if
both are unchanged: a new migration, an edited one, a dropped schema or a database reset by hand
all make the commands run again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import asyncpg

__all__ = ["MigrationRecord"]


class MigrationRecord:
    """The last successful migration of each database, kept in ``path`` (under ``.local/``)."""

    def __init__(self, path: Path, migration_dirs: list[Path]) -> None:
        self.path = path
        self.migration_dirs = migration_dirs

    def fingerprint(self) -> str:
        """A digest of every migration file's name and content."""
        digest = hashlib.sha256()
        for directory in sorted(self.migration_dirs):
            for file in sorted(directory.rglob("*")):
                if file.is_file() and "__pycache__" not in file.parts:
                    digest.update(str(file.relative_to(directory.parent)).encode())
                    digest.update(file.read_bytes())
        return digest.hexdigest()

    async def is_current(self, database_url: str) -> bool:
        """True when the files and the database's versions are what the last migration left."""
        entry = self._read().get(database_url)
        if not entry or entry.get("fingerprint") != self.fingerprint():
            return False
        try:
            return bool(entry.get("versions") == await _versions(database_url))
        except (OSError, asyncpg.PostgresError):
            return False

    async def remember(self, database_url: str) -> None:
        """Record the state a successful migration left."""
        records = self._read()
        records[database_url] = {
            "fingerprint": self.fingerprint(),
            "versions": await _versions(database_url),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(records, indent=1))

    def _read(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


async def _versions(database_url: str) -> dict[str, str]:
    """Every schema's ``alembic_version`` row, e.g. ``{"notes": "0003", "archiver": "0001"}``."""
    connection = await asyncpg.connect(database_url, timeout=5)
    try:
        schemas = await connection.fetch(
            "SELECT table_schema FROM information_schema.tables"
            " WHERE table_name = 'alembic_version' ORDER BY 1"
        )
        versions = {}
        for row in schemas:
            schema = row["table_schema"]
            quoted = '"' + schema.replace('"', '""') + '"'
            query = f"SELECT version_num FROM {quoted}.alembic_version"  # noqa: S608
            versions[schema] = str(await connection.fetchval(query))
        return versions
    finally:
        await connection.close()
