"""Composition root of notes-api-worker: engine, Redis, store, relay, retention, reconciler."""

import asyncio
from datetime import timedelta

from notes_api.settings import SCHEMA, WorkerSettings
from notes_api.worker.handlers import router
from notes_api.worker.progress import progress_counter
from notes_api.worker.reconciler import JobReconciler
from notes_api.worker.retention import job_retention
from notes_api.worker.store import WorkerStore
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
    engine = create_database_engine(settings, registry=telemetry.registry)  # db_pool_* metrics
    redis = create_redis(settings)
    keys = StreamKeys(settings.stream_prefix)
    relay = OutboxRelay(
        engine, redis, schema=SCHEMA, keys=keys,
        poll_interval=settings.relay_poll_seconds, tracer_provider=telemetry.tracer_provider,
        durability=settings.outbox_durability_policy(), registry=telemetry.registry,
    )  # fmt: skip
    store = WorkerStore(engine, bulk_archive_max_items=settings.bulk_archive_max_items)
    reconciler = JobReconciler(
        engine, redis, keys, stale_after=timedelta(seconds=settings.job_stale_after_seconds),
        registry=telemetry.registry, store=store,
    )  # fmt: skip
    try:
        return await run_worker(
            settings, stop, routes=router.routes, redis=redis, telemetry=telemetry,
            dependencies={"store": store},
            checks={"postgresql": database_check(engine), "redis": redis_check(redis)},
            facts={"outbox_durability": relay.durability_in_force},
            background=[
                relay.run,
                database_retention(engine, relay, schema=SCHEMA),
                job_retention(engine, timedelta(days=settings.job_retention_days)),
                reconciler.loop(settings.job_reconcile_every_seconds),
                progress_counter(
                    store, every=settings.job_progress_every_seconds,
                    sweep_every=settings.job_progress_sweep_seconds,
                ),
            ],
        )  # fmt: skip
    finally:
        await engine.dispose()
