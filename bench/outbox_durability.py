"""Cost of the outbox relay's durability wait per batch: ``python -m bench.outbox_durability``.

Times ``OutboxRelay.publish_pending`` (select, XADD pipeline, wait, mark published) for batches of
BENCH_OUTBOX_BATCH rows (100), BENCH_OUTBOX_ROUNDS times (40), against private servers only: a
Valkey 8.1 with AOF (``appendfsync everysec``, then ``always``) under ``none`` and ``auto``
(WAITAOF), and a Redis 7.0 with one replica under ``none`` and ``auto`` (WAIT). PostgreSQL comes
from DATABASE_URL (a throw-away database is created and dropped).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from uuid import uuid4

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from contracts.notes import NoteArchived
from contracts.streams import NOTES_ARCHIVED
from devstack.embedded import EmbeddedValkey, free_port
from servicekit import StreamKeys, add_to_outbox
from servicekit.durability import (
    DurabilityPolicy,
    DurabilitySetting,
    detect_persistence,
    plan_durability,
)
from servicekit.outbox import OutboxRelay, ensure_outbox_tables
from servicekit.settings import asyncpg_url
from servicekit.testing import fresh_database

BATCH = int(os.environ.get("BENCH_OUTBOX_BATCH", "100"))
ROUNDS = int(os.environ.get("BENCH_OUTBOX_ROUNDS", "40"))
SCHEMA = "bench"


async def _fill(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        for _ in range(BATCH):
            event = NoteArchived(
                producer="bench", owner_id="o", note_id=uuid4(), version=1, job_id=uuid4()
            )
            await add_to_outbox(
                connection, SCHEMA, event, stream=NOTES_ARCHIVED, aggregate_id=str(event.note_id)
            )


async def _batch_times(
    engine: AsyncEngine, redis: Redis, setting: DurabilitySetting
) -> tuple[str, list[float]]:
    prefix = f"bench:{uuid4().hex[:8]}:"
    policy = DurabilityPolicy(setting)
    relay = OutboxRelay(
        engine, redis, schema=SCHEMA, keys=StreamKeys(prefix), batch_size=BATCH,
        durability=policy,
    )  # fmt: skip
    plan = plan_durability(policy, await detect_persistence(redis))
    times = []
    for _ in range(ROUNDS):
        await _fill(engine)
        started = time.perf_counter()
        assert await relay.publish_pending() == BATCH
        times.append(time.perf_counter() - started)
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.unlink(key)
    return plan.wait, times


def _say(server: str, setting: str, wait: str, times: list[float]) -> None:
    ms = [t * 1000 for t in times]
    p90 = statistics.quantiles(ms, n=10)[-1]
    print(
        f"{server:<28} {setting:<5} {wait:<12} median {statistics.median(ms):7.2f} ms"
        f"  p90 {p90:7.2f} ms  ({len(ms)} batches of {BATCH})",
        flush=True,
    )


@asynccontextmanager
async def _redis_with_replica() -> AsyncIterator[Redis]:
    primary_port, replica_port = free_port(), free_port()
    # Its own directory: a replica's full sync writes an RDB file.
    directory = tempfile.mkdtemp(prefix="bench-redis-")
    common = ["--bind", "127.0.0.1", "--dir", directory, "--save", "", "--appendonly", "no"]
    primary = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(primary_port), *common, "--repl-diskless-sync-delay", "0",
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    replica = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(replica_port), *common,
        "--replicaof", "127.0.0.1", str(primary_port), stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    client = Redis(port=primary_port)
    try:
        for _ in range(500):
            try:
                info = await client.info("replication")
                if info.get("slave0", {}).get("state") == "online":
                    break
            except OSError:
                pass
            await asyncio.sleep(0.02)
        yield client
    finally:
        await client.aclose()
        for process in (replica, primary):
            process.terminate()
            await process.wait()


async def main() -> None:
    """Print the per-batch figures, one line per server and setting."""
    admin = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    async with fresh_database(admin, prefix="bench_outbox") as url:
        engine = create_async_engine(asyncpg_url(url))
        await ensure_outbox_tables(engine, SCHEMA)
        valkey = EmbeddedValkey(Path(tempfile.mkdtemp(prefix="bench-valkey-")), durable=True)
        redis = Redis.from_url(valkey.start())
        try:
            for fsync in ("everysec", "always"):
                await redis.config_set("appendfsync", fsync)
                for setting in ("none", "auto", "none", "auto"):  # alternate: same load for both
                    wait, times = await _batch_times(engine, redis, setting)
                    _say(f"valkey 8.1 AOF {fsync}", setting, wait, times)
        finally:
            await redis.aclose()
            valkey.stop()
        async with _redis_with_replica() as primary:
            for setting in ("none", "auto", "none", "auto"):
                wait, times = await _batch_times(engine, primary, setting)
                _say("redis 7.0 + 1 replica", setting, wait, times)
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
