"""The shared fixtures give each test its own PostgreSQL database and Redis key prefix."""

import asyncpg
from redis.asyncio import Redis

from servicekit import ServiceSettings, create_database_engine


async def test_each_test_gets_a_fresh_database(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        tables = await connection.fetchval(
            "select count(*) from information_schema.tables where table_schema = 'public'"
        )
        name = await connection.fetchval("select current_database()")
    finally:
        await connection.close()
    assert tables == 0
    assert name.startswith("test_")


async def test_engine_from_settings_reaches_the_database(database_url: str) -> None:
    from sqlalchemy import text

    engine = create_database_engine(ServiceSettings(database_url=database_url))
    async with engine.connect() as connection:
        assert (await connection.execute(text("select 1"))).scalar() == 1
    await engine.dispose()


async def test_prefix_isolates_keys(redis_client: Redis, stream_prefix: str) -> None:
    await redis_client.set(f"{stream_prefix}k", "v")
    assert await redis_client.get(f"{stream_prefix}k") == b"v"
    assert stream_prefix.startswith("test:")
