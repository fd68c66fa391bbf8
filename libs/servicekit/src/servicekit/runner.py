"""Running a consumer process: ops endpoint, worker, background loops, graceful stop.

A service's entry point builds its resources and calls :func:`run_worker` from the ``main``
that :func:`servicekit.run_until_stopped` runs; everything after that is the same for every
consumer service.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from functools import partial
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from servicekit.asyncapi import asyncapi_json
from servicekit.jobs._maintenance import RetentionPolicy
from servicekit.jobs._worker import Worker
from servicekit.jobs.routing import Route
from servicekit.keys import StreamKeys
from servicekit.ops import OpsServer, Readiness, ReadinessCheck
from servicekit.redis_client import RedisClient
from servicekit.settings import ServiceSettings
from servicekit.telemetry import Telemetry

__all__ = ["BackgroundLoop", "database_check", "redis_check", "run_worker"]

BackgroundLoop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""A coroutine function that runs until the event it is given is set (e.g. an outbox relay)."""

_log = structlog.stdlib.get_logger("servicekit.runner")


def redis_check(redis: RedisClient) -> ReadinessCheck:
    """Readiness check: Redis answers PING."""

    async def check() -> None:
        await redis.ping()

    return check


def database_check(engine: AsyncEngine) -> ReadinessCheck:
    """Readiness check: PostgreSQL answers ``SELECT 1``."""

    async def check() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    return check


async def run_worker(
    settings: ServiceSettings,
    stop: asyncio.Event,
    *,
    routes: Sequence[Route],
    redis: RedisClient,
    telemetry: Telemetry,
    dependencies: Mapping[str, object] | None = None,
    checks: Mapping[str, ReadinessCheck] | None = None,
    facts: Mapping[str, Callable[[], str | None]] | None = None,
    background: Sequence[BackgroundLoop] = (),
    required_groups: Mapping[str, set[str]] | None = None,
    retention: RetentionPolicy | None = None,
) -> int:
    """Serve ops, consume ``routes``, run ``background`` loops until ``stop``; return exit code."""
    readiness = Readiness(dict(checks or {"redis": redis_check(redis)}), facts=dict(facts or {}))
    worker = Worker(
        routes,
        redis=redis,
        keys=StreamKeys(settings.stream_prefix),
        consumer=settings.consumer_name,
        telemetry=telemetry,
        dependencies=dependencies,
        readiness=readiness,
        required_groups=required_groups,
        retention=retention,
        grace=settings.shutdown_grace_seconds,
    )
    halt = asyncio.Event()
    ops = OpsServer(
        registry=telemetry.registry,
        readiness=readiness,
        host=settings.ops_host,
        port=settings.ops_port,
        # Built from the routes on the first /asyncapi.json request: FastStream is not loaded
        # at start. The service is named by its OTEL_SERVICE_NAME, as in the contracts catalogue.
        asyncapi=partial(asyncapi_json, settings.otel_service_name, routes),
    )
    await ops.start()
    _log.info("process.started", ops_port=ops.port, consumer=settings.consumer_name)
    loops = [asyncio.create_task(loop(halt)) for loop in background]

    def report_crash(task: asyncio.Task[None]) -> None:
        # A background loop (the outbox relay) that dies would leave the process running green.
        if not task.cancelled() and task.exception() is not None:
            readiness.fail("background loop failed")  # the exception is in the log
            _log.error("process.background_failed", error=repr(task.exception()))

    for task in loops:
        task.add_done_callback(report_crash)
    try:
        exit_code = await worker.run(stop)
    finally:
        halt.set()
        for task in loops:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, settings.shutdown_grace_seconds)
        await ops.stop()
        await redis.aclose()
        telemetry.shutdown()
    _log.info("process.stopped", exit_code=exit_code)
    return exit_code
