"""Whether ``make run`` may skip the migrate commands: nothing changed since they last ran.

Running every service's ``migrate`` costs a Python start and the service's imports each time,
most of ``make run``'s start on a synced checkout, to learn that the schemas are at head. This
records, after a successful migration, a fingerprint of every migration file (and of the
``*_SCHEMA`` settings) and the versions each ``alembic_version`` table in the database holds,
keyed by the cluster's system identifier and the database name (an embedded server's port changes
from run to run). The next start skips the commands only if
both are unchanged: a new migration, an edited one, a dropped schema or a database reset by hand
all make the commands run again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import asyncpg

__all__ = ["MigrationRecord"]


class MigrationRecord:
    """The last successful migration of each database, kept in ``path`` (under ``.local/``)."""

    def __init__(self, path: Path, migration_dirs: list[Path]) -> None:
        self.path = path
        self.migration_dirs = migration_dirs

    def fingerprint(self) -> str:
        """A digest of every migration file's name and content, and the schema settings."""
        digest = hashlib.sha256()
        # A service told to migrate another schema (ARCHIVER's DATABASE_SCHEMA) must migrate.
        for name in sorted(n for n in os.environ if n.endswith("_SCHEMA")):
            digest.update(f"{name}={os.environ[name]}\n".encode())
        for directory in sorted(self.migration_dirs):
            for file in sorted(directory.rglob("*")):
                if file.is_file() and "__pycache__" not in file.parts:
                    digest.update(str(file.relative_to(directory.parent)).encode())
                    digest.update(file.read_bytes())
        return digest.hexdigest()

    async def is_current(self, database_url: str) -> bool:
        """True when the files and the database's versions are what the last migration left."""
        try:
            identity, versions = await _identity_and_versions(database_url)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        entry = self._read().get(identity)
        return bool(
            entry
            and entry.get("fingerprint") == self.fingerprint()
            and entry.get("versions") == versions
        )

    async def remember(self, database_url: str) -> None:
        """Record the state a successful migration left."""
        identity, versions = await _identity_and_versions(database_url)
        records = self._read()
        records[identity] = {"fingerprint": self.fingerprint(), "versions": versions}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(records, indent=1))

    def _read(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


async def _identity_and_versions(database_url: str) -> tuple[str, dict[str, str]]:
    """The database (cluster id and name, stable across ports) and its schemas' alembic versions."""
    connection = await asyncpg.connect(database_url, timeout=5)
    try:
        identity = await connection.fetchval(
            "SELECT system_identifier::text || '/' || current_database() FROM pg_control_system()"
        )
        schemas = await connection.fetch(
            "SELECT table_schema FROM information_schema.tables"
            " WHERE table_name = 'alembic_version' ORDER BY 1"
        )
        versions = {}
        for row in schemas:
            schema = row["table_schema"]
            quoted = '"' + schema.replace('"', '""') + '"'
            query = f"SELECT string_agg(version_num, ',' ORDER BY version_num) FROM {quoted}.alembic_version"  # noqa: E501, S608
            versions[schema] = str(await connection.fetchval(query))
        return str(identity), versions
    finally:
        await connection.close()
