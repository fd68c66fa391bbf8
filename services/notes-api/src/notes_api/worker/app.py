"""Composition root of notes-api-worker: engine, Redis, outbox relay and retention, routes."""

import asyncio
from datetime import timedelta

from notes_api.settings import SCHEMA, WorkerSettings
from notes_api.worker.handlers import router
from notes_api.worker.retention import job_retention
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


async def run(stop: asyncio.Event) -> int:
    settings = WorkerSettings()
    telemetry = setup_telemetry(settings)
    engine = create_database_engine(settings)
    redis = create_redis(settings)
    relay = OutboxRelay(
        engine, redis, schema=SCHEMA, keys=StreamKeys(settings.stream_prefix),
        poll_interval=settings.relay_poll_seconds, tracer_provider=telemetry.tracer_provider,
        durability=settings.outbox_durability_policy(), registry=telemetry.registry,
    )  # fmt: skip
    try:
        return await run_worker(
            settings, stop, routes=router.routes, redis=redis, telemetry=telemetry,
            dependencies={"engine": engine},
            checks={"postgresql": database_check(engine), "redis": redis_check(redis)},
            background=[
                relay.run,
                database_retention(engine, relay, schema=SCHEMA),
                job_retention(engine, timedelta(days=settings.job_retention_days)),
            ],
        )  # fmt: skip
    finally:
        await engine.dispose()
