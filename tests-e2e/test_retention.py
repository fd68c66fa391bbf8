"""Every schema with an inbox is purged by some running process of the platform.

Generic over services: the schemas are found in the database (every one with servicekit's
`inbox`), not listed here, so a new service whose processes forget `database_retention` fails
this test as soon as the `platform` fixture migrates and starts it.
"""

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from servicekit.testing import eventually

EXPIRED = "now() - interval '30 days'"  # past every default retention period
_SEED = (
    "INSERT INTO {schema}.inbox (consumer_group, event_id, processed_at)"
    f" VALUES ('e2e-old', gen_random_uuid(), {EXPIRED}), ('e2e-new', gen_random_uuid(), now())",
    "INSERT INTO {schema}.outbox"
    " (aggregate_id, stream, event_id, event_type, payload, headers, created_at, published_at)"
    " VALUES ('e2e', 'e2e.v1', gen_random_uuid(), 'e2e.v1', jsonb_build_object(),"
    f" jsonb_build_object(), {EXPIRED}, {EXPIRED})",
)
_LEFT = (
    "SELECT (SELECT count(*) FROM {schema}.inbox WHERE consumer_group = 'e2e-old')"
    " + (SELECT count(*) FROM {schema}.outbox WHERE stream = 'e2e.v1'),"
    " (SELECT count(*) FROM {schema}.inbox WHERE consumer_group = 'e2e-new')"
)


def _asyncpg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


async def test_every_schema_with_an_inbox_has_its_expired_rows_purged_by_a_running_process(
    migrated: dict[str, str], request: pytest.FixtureRequest
) -> None:
    engine = create_async_engine(_asyncpg(migrated["DATABASE_URL"]))
    try:
        async with engine.begin() as connection:
            found = await connection.execute(
                text(
                    "SELECT table_schema FROM information_schema.tables WHERE table_name = 'inbox'"
                )
            )
            schemas = sorted(row.table_schema for row in found)
            assert {"notes", "archiver"} <= set(schemas)
            for schema in schemas:
                for statement in _SEED:
                    await connection.execute(text(statement.format(schema=schema)))

        request.getfixturevalue("platform")  # start every process only now

        async def left() -> dict[str, Any]:
            async with engine.connect() as connection:
                counts = [await connection.execute(text(_LEFT.format(schema=s))) for s in schemas]
                return {schema: tuple(c.one()) for schema, c in zip(schemas, counts, strict=True)}

        async def purged() -> bool:
            return all(expired == 0 for expired, _ in (await left()).values())

        try:
            await eventually(purged, within=30)
        except AssertionError as timeout:
            left_over = await left()
            raise AssertionError(f"expired rows left (expired, recent): {left_over}") from timeout
        assert all(recent == 1 for _, recent in (await left()).values())  # recent rows stay
    finally:
        await engine.dispose()
