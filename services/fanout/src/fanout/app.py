"""Composition root: builds fanout's resources from settings and runs its worker."""

import asyncio

from fanout.handlers import routes
from fanout.settings import FanoutSettings
from fanout.store import FanoutStore
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


async def run(settings: FanoutSettings, stop: asyncio.Event) -> int:
    """Consume until ``stop``; publish and purge the outbox alongside; return the exit code."""
    telemetry = setup_telemetry(settings)
    redis = create_redis(settings)
    engine = create_database_engine(settings)
    relay = OutboxRelay(
        engine,
        redis,
        schema=settings.database_schema,
        keys=StreamKeys(settings.stream_prefix),
        batch_size=settings.relay_batch_size,  # a chunk's children in one pipeline
        poll_interval=settings.relay_poll_seconds,
        tracer_provider=telemetry.tracer_provider,
        durability=settings.outbox_durability_policy(),
        registry=telemetry.registry,
    )
    try:
        return await run_worker(
            settings,
            stop,
            routes=routes,
            redis=redis,
            telemetry=telemetry,
            dependencies={"store": FanoutStore(engine, schema=settings.database_schema)},
            checks={"postgres": database_check(engine), "redis": redis_check(redis)},
            facts={"outbox_durability": relay.durability_in_force},
            background=[
                relay.run,
                database_retention(engine, relay, schema=settings.database_schema),
            ],
        )
    finally:
        await engine.dispose()


async def migrate(settings: FanoutSettings) -> int:
    """Apply the database migrations; return the exit code."""
    setup_telemetry(settings).shutdown()  # logging, so alembic's lines are JSON too
    await migrate_schema(settings, settings.database_schema, "fanout.migrations")
    return 0
