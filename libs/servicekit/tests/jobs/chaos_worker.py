"""A worker process for kill/stop tests: applies a database effect once per event, via the inbox.

Configured by environment variables (see test_process_faults.py). Run as ``python chaos_worker.py``.
``GROUPS`` (default ``g``) are the consumer groups it consumes the stream with, one route each;
``FAIL_EVERY_THIRD_IN`` names a group whose first attempt at every third entry fails (transient);
``VISIBILITY=default`` keeps the runtime's default visibility timeout.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, Literal

from sqlalchemy import text

from contracts import Event
from servicekit import (
    OutboxRelay,
    ServiceSettings,
    StreamKeys,
    TransientError,
    create_database_engine,
    create_redis,
    handler_transaction,
    run_until_stopped,
    run_worker,
    setup_telemetry,
)
from servicekit.jobs import JobRouter

SCHEMA = "chaos"


class Pinged(Event):
    type: Literal["test.pinged.v1"] = "test.pinged.v1"
    n: int


async def main(stop: asyncio.Event) -> int:
    settings = ServiceSettings(otel_service_name="chaos-worker", ops_port=0)
    telemetry = setup_telemetry(settings)
    redis = create_redis(settings)
    engine = create_database_engine(settings)
    sleep_in_tx = float(os.environ.get("SLEEP_IN_TX", "0"))
    sleep_after_tx = float(os.environ.get("SLEEP_AFTER_TX", "0"))
    failing_group = os.environ.get("FAIL_EVERY_THIRD_IN", "")
    visibility = os.environ.get("VISIBILITY", "1")
    options: dict[str, Any] = {
        "block_ms": 50,
        "concurrency": int(os.environ.get("CONCURRENCY", "4")),
        "backoff_base": float(os.environ.get("BACKOFF", "1")),
    }
    if visibility != "default":
        options["visibility_timeout"] = float(visibility)
    routes = []
    for group in os.environ.get("GROUPS", "g").split(","):
        router = JobRouter(group=group)

        async def apply_ping(event: Pinged, group: str = group) -> None:
            if group == failing_group and event.n % 3 == 0:
                first = await redis.set(
                    f"{settings.stream_prefix}failed:{group}:{event.n}", 1, nx=True
                )
                if first:
                    raise TransientError(f"first attempt at {event.n} fails in {group}")
            await apply_once(event, group)

        router.event(Pinged, stream="test.pinged.v1", **options)(apply_ping)
        routes += router.routes

    async def apply_once(event: Pinged, group: str) -> None:
        async with handler_transaction(engine, schema=SCHEMA, group=group, event=event) as tx:
            if tx.already_processed:
                return
            await tx.connection.execute(
                text("INSERT INTO chaos.effects (grp, n, pid) VALUES (:grp, :n, :pid)"),
                {"grp": group, "n": event.n, "pid": os.getpid()},
            )
            await tx.emit(
                Pinged(producer="chaos", n=event.n),
                stream="test.echoed.v1",
                aggregate_id=str(event.n),
            )
            await redis.set(f"{settings.stream_prefix}started:{event.n}:{os.getpid()}", 1)
            await asyncio.sleep(sleep_in_tx)
        await redis.set(f"{settings.stream_prefix}committed:{event.n}:{os.getpid()}", 1)
        await asyncio.sleep(sleep_after_tx)

    relay = OutboxRelay(
        engine,
        redis,
        schema=SCHEMA,
        keys=StreamKeys(settings.stream_prefix),
        poll_interval=float(os.environ.get("RELAY_INTERVAL", "0.05")),
    )
    background = [relay.run] if os.environ.get("RELAY", "1") == "1" else []
    try:
        return await run_worker(
            settings,
            stop,
            routes=routes,
            redis=redis,
            telemetry=telemetry,
            background=background,
        )
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(run_until_stopped(main))
