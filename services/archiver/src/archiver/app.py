"""Composition root: builds the archiver's resources from settings and runs its worker."""

import asyncio

from archiver.handlers import router
from archiver.settings import ArchiverSettings
from archiver.store import ArchiveStore
from servicekit import (
    OutboxRelay,
    StreamKeys,
    create_database_engine,
    create_redis,
    database_check,
    database_retention,
    redis_check,
    run_worker,
    setup_telemetry,
)
from servicekit.migrations import migrate as migrate_schema


async def run(settings: ArchiverSettings, stop: asyncio.Event) -> int:
    """Consume until ``stop``; publish and purge the outbox alongside; return the exit code."""
    telemetry = setup_telemetry(settings)
    redis = create_redis(settings)
    engine = create_database_engine(settings, registry=telemetry.registry)  # db_pool_* metrics
    relay = OutboxRelay(
        engine,
        redis,
        schema=settings.database_schema,
        keys=StreamKeys(settings.stream_prefix),
        tracer_provider=telemetry.tracer_provider,
        durability=settings.outbox_durability_policy(),
        registry=telemetry.registry,
    )
    try:
        return await run_worker(
            settings,
            stop,
            routes=router.routes,
            redis=redis,
            telemetry=telemetry,
            dependencies={"store": ArchiveStore(engine, schema=settings.database_schema)},
            checks={"postgres": database_check(engine), "redis": redis_check(redis)},
            facts={"outbox_durability": relay.durability_in_force},
            background=[
                relay.run,
                database_retention(engine, relay, schema=settings.database_schema),
            ],
        )
    finally:
        await engine.dispose()


async def migrate(settings: ArchiverSettings) -> int:
    """Apply the database migrations; return the exit code."""
    setup_telemetry(settings).shutdown()  # logging, so alembic's lines are JSON too
    await migrate_schema(settings, settings.database_schema, "archiver.migrations")
    return 0
