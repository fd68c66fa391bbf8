"""make run skips the migrate commands only when neither the files nor the database changed."""

from pathlib import Path

import asyncpg

from devstack.migrations import MigrationRecord


async def _versioned_schema(url: str, schema: str, version: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await connection.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".alembic_version (version_num text)'
        )
        await connection.execute(f'DELETE FROM "{schema}".alembic_version')
        await connection.execute(f"INSERT INTO \"{schema}\".alembic_version VALUES ('{version}')")
    finally:
        await connection.close()


def _record(tmp_path: Path) -> tuple[MigrationRecord, Path]:
    versions = tmp_path / "svc" / "migrations" / "versions"
    versions.mkdir(parents=True)
    (versions / "0001_initial.py").write_text("revision = '0001'\n")
    return MigrationRecord(tmp_path / "migrations.json", [versions.parent]), versions


async def test_nothing_is_current_before_a_first_migration(tmp_path: Path, database_url: str):
    record, _ = _record(tmp_path)
    assert not await record.is_current(database_url)


async def test_unchanged_files_and_versions_are_current(tmp_path: Path, database_url: str):
    record, _ = _record(tmp_path)
    await _versioned_schema(database_url, "svc", "0001")
    await record.remember(database_url)
    assert await record.is_current(database_url)


async def test_a_new_migration_file_makes_it_stale(tmp_path: Path, database_url: str):
    record, versions = _record(tmp_path)
    await _versioned_schema(database_url, "svc", "0001")
    await record.remember(database_url)
    (versions / "0002_more.py").write_text("revision = '0002'\n")
    assert not await record.is_current(database_url)


async def test_a_database_changed_by_hand_makes_it_stale(tmp_path: Path, database_url: str):
    record, _ = _record(tmp_path)
    await _versioned_schema(database_url, "svc", "0001")
    await record.remember(database_url)
    await _versioned_schema(database_url, "svc", "0000")  # downgraded by hand
    assert not await record.is_current(database_url)
    connection = await asyncpg.connect(database_url)
    await connection.execute('DROP SCHEMA "svc" CASCADE')
    await connection.close()
    assert not await record.is_current(database_url)
