"""A worker process for kill/stop tests: applies a database effect once per event, via the inbox.

Configured by environment variables (see test_process_faults.py). Run as ``python chaos_worker.py``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Literal

from sqlalchemy import text

from contracts import Event
from servicekit import (
    OutboxRelay,
    ServiceSettings,
    StreamKeys,
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
    router = JobRouter(group="g")

    @router.event(
        Pinged,
        stream="test.pinged.v1",
        visibility_timeout=float(os.environ.get("VISIBILITY", "1")),
        block_ms=50,
        concurrency=int(os.environ.get("CONCURRENCY", "4")),
    )
    async def apply_ping(event: Pinged) -> None:
        async with handler_transaction(engine, schema=SCHEMA, group="g", event=event) as tx:
            if tx.already_processed:
                return
            await tx.connection.execute(
                text("INSERT INTO chaos.effects (n, pid) VALUES (:n, :pid)"),
                {"n": event.n, "pid": os.getpid()},
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
            routes=router.routes,
            redis=redis,
            telemetry=telemetry,
            background=background,
        )
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(run_until_stopped(main))
