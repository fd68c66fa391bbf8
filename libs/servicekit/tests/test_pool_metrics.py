"""An engine built with a registry exports its pool's occupancy, churn and checkout waits."""

import asyncio

from prometheus_client import CollectorRegistry
from sqlalchemy import text

from servicekit import ServiceSettings, create_database_engine
from servicekit.testing import eventually


def _value(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_pool_figures_count_checkouts_opens_closes_and_a_wait_for_a_busy_pool(
    database_url: str,
) -> None:
    registry = CollectorRegistry()
    engine = create_database_engine(
        ServiceSettings(database_url=database_url),
        pool_size=1,
        max_overflow=1,
        pool_timeout=30,
        registry=registry,
    )
    try:
        async with engine.connect() as first, engine.connect() as second:
            await first.execute(text("SELECT 1"))
            await second.execute(text("SELECT 1"))
            assert _value(registry, "db_pool_checked_out") == 2
            assert _value(registry, "db_pool_overflow") == 1
        # The overflow connection is closed on return: churn a steady load should not show.
        assert _value(registry, "db_pool_connects_total") == 2
        assert _value(registry, "db_pool_closes_total") == 1
        assert _value(registry, "db_pool_idle") == 1
        assert _value(registry, "db_pool_size") == 1

        async with engine.connect() as held, engine.connect() as also_held:
            await held.execute(text("SELECT 1"))
            await also_held.execute(text("SELECT 1"))

            async def third() -> None:
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))

            waiting = asyncio.create_task(third())  # the pool is full: it waits for a return
            await eventually(lambda: _value(registry, "db_pool_checkouts_total") == 4 or None)
            assert not waiting.done()
        await waiting
        assert _value(registry, "db_pool_checkouts_total") == 5
        assert _value(registry, "db_pool_wait_seconds_count") == 5
        assert _value(registry, "db_pool_wait_seconds_sum") > 0
    finally:
        await engine.dispose()


async def test_an_engine_without_a_registry_exports_nothing(database_url: str) -> None:
    engine = create_database_engine(ServiceSettings(database_url=database_url))
    try:
        assert type(engine.sync_engine.pool).__name__ == "AsyncAdaptedQueuePool"
    finally:
        await engine.dispose()
