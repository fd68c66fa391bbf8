"""Composition root: the scheduler's schedules, Redis store and loops, on the shared runtime."""

import asyncio
from datetime import timedelta

from scheduler.handlers import router
from scheduler.schedules import Schedule
from scheduler.settings import SchedulerSettings
from scheduler.store import SchedulerStore
from scheduler.ticker import SchedulerMetrics, Ticker
from servicekit import StreamKeys, create_redis, redis_check, run_worker, setup_telemetry


async def run(settings: SchedulerSettings, schedules: list[Schedule], stop: asyncio.Event) -> int:
    """Fire schedules, release delayed jobs and consume until ``stop``; return the exit code."""
    telemetry = setup_telemetry(settings)
    redis = create_redis(settings)
    keys = StreamKeys(settings.stream_prefix)
    store = SchedulerStore(redis, keys)
    ticker = Ticker(
        schedules, store, SchedulerMetrics(telemetry.registry), redis=redis, keys=keys,
        late_after=timedelta(seconds=settings.late_after_seconds),
        running_ttl=timedelta(seconds=settings.running_timeout_seconds),
        delayed_poll=settings.delayed_poll_seconds,
    )  # fmt: skip
    return await run_worker(
        settings, stop, routes=router.routes, redis=redis, telemetry=telemetry,
        dependencies={"store": store}, checks={"redis": redis_check(redis)},
        background=[ticker.run_schedules, ticker.run_delayed],
    )  # fmt: skip
