"""servicekit.migrations on real PostgreSQL: lock, schema, alembic's version table in the schema."""

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from servicekit.migrations import migrate
from servicekit.settings import ServiceSettings, asyncpg_url

REVISION = '''
"""{doc}"""

import sqlalchemy as sa
from alembic import context, op

revision = "{revision}"
down_revision = {down_revision!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    {before}
    op.create_table("{table}", sa.Column("id", sa.Integer, primary_key=True), schema=schema)
'''


def write_revisions(directory: Path, *, before_first: str = "pass", second: str = "pass") -> Path:
    """Two revisions: 0001 creates table ``items``, 0002 table ``tags``."""
    directory.mkdir(parents=True, exist_ok=True)
    for revision, down, table, before in (
        ("0001", None, "items", before_first),
        ("0002", "0001", "tags", second),
    ):
        source = REVISION.format(
            doc=f"Table {table}.", revision=revision, down_revision=down, table=table, before=before
        )
        (directory / f"{revision}_{table}.py").write_text(textwrap.dedent(source))
    return directory


@pytest.fixture
def settings(database_url: str) -> ServiceSettings:
    return ServiceSettings(database_url=database_url, log_format="console")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(asyncpg_url(database_url))
    yield engine
    await engine.dispose()


async def tables(engine: AsyncEngine, schema: str) -> set[str]:
    async with engine.connect() as connection:
        result = await connection.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = :schema"),
            {"schema": schema},
        )
        return set(result.scalars())


async def version(engine: AsyncEngine, schema: str) -> str:
    async with engine.connect() as connection:
        quoted = connection.dialect.identifier_preparer.quote_schema(schema)
        result = await connection.execute(text(f"SELECT version_num FROM {quoted}.alembic_version"))
        return str(result.scalar_one())


async def test_fresh_schema_is_created_and_brought_to_head_with_its_own_version_table(
    settings: ServiceSettings, engine: AsyncEngine, tmp_path: Path
) -> None:
    applied = await migrate(settings, "inventory", write_revisions(tmp_path))

    assert applied == ["0001", "0002"]
    assert await tables(engine, "inventory") == {"items", "tags", "alembic_version"}
    assert await version(engine, "inventory") == "0002"
    assert await tables(engine, "public") == set()


async def test_second_run_applies_nothing(
    settings: ServiceSettings, engine: AsyncEngine, tmp_path: Path
) -> None:
    versions = write_revisions(tmp_path)
    await migrate(settings, "inventory", versions)

    assert await migrate(settings, "inventory", versions) == []
    assert await version(engine, "inventory") == "0002"


async def test_a_new_revision_is_applied_on_top_of_a_migrated_schema(
    settings: ServiceSettings, engine: AsyncEngine, tmp_path: Path
) -> None:
    versions = write_revisions(tmp_path)
    (versions / "0002_tags.py").rename(tmp_path / "held_back")
    assert await migrate(settings, "inventory", versions) == ["0001"]
    (tmp_path / "held_back").rename(versions / "0002_tags.py")

    assert await migrate(settings, "inventory", versions) == ["0002"]
    assert await tables(engine, "inventory") == {"items", "tags", "alembic_version"}


async def test_concurrent_migrations_of_one_schema_both_succeed_and_one_applies(
    settings: ServiceSettings, engine: AsyncEngine, tmp_path: Path
) -> None:
    # The first revision holds its transaction long enough for the second migrate to queue on
    # the lock; without the lock, the second would fail creating the schema or the tables.
    versions = write_revisions(tmp_path, before_first='op.execute("SELECT pg_sleep(0.5)")')

    results = await asyncio.gather(
        migrate(settings, "inventory", versions), migrate(settings, "inventory", versions)
    )

    assert sorted(results) == [[], ["0001", "0002"]]
    assert await version(engine, "inventory") == "0002"


async def test_custom_schema_names_are_migrated_independently(
    settings: ServiceSettings, engine: AsyncEngine, tmp_path: Path
) -> None:
    versions = write_revisions(tmp_path)
    # Two services' worth of schemas in one database, one with a name that needs quoting.
    await migrate(settings, "inventory", versions)

    assert await migrate(settings, "Tenant B-2", versions) == ["0001", "0002"]
    assert await tables(engine, "Tenant B-2") == {"items", "tags", "alembic_version"}
    assert await version(engine, "Tenant B-2") == "0002"


async def test_a_failing_revision_leaves_nothing_behind(
    settings: ServiceSettings, engine: AsyncEngine, tmp_path: Path
) -> None:
    versions = write_revisions(tmp_path, second='raise RuntimeError("broken revision")')

    with pytest.raises(RuntimeError, match="broken revision"):
        await migrate(settings, "inventory", versions)

    async with engine.connect() as connection:
        found = await connection.scalar(
            text("SELECT count(*) FROM pg_namespace WHERE nspname = 'inventory'")
        )
    assert found == 0  # one transaction: not even the schema stays


async def test_versions_may_be_named_as_a_package(
    settings: ServiceSettings, engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = write_revisions(tmp_path / "inventory_migrations")
    (package / "__init__.py").write_text('"""Revisions."""\n')
    monkeypatch.syspath_prepend(str(tmp_path))

    assert await migrate(settings, "inventory", "inventory_migrations") == ["0001", "0002"]
