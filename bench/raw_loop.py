"""(a) The ceiling: a raw redis-py loop, XREADGROUP COUNT 100 and one XACK per batch (hiredis)."""

from __future__ import annotations

import time

import redis
from redis.asyncio import Redis

from bench.common import GROUP, REDIS_URL, STREAM, Drain, create_group, make_pinged
from servicekit.jobs._codec import encode_event

BATCH = 100


def entry_fields() -> dict[str, bytes]:
    """The same bytes the runtime reads (an encoded bench event), so sizes match."""
    return encode_event(make_pinged())  # type: ignore[return-value]


async def fill(client: Redis, key: str, n: int, fields: dict[str, bytes]) -> None:
    for start in range(0, n, 1000):
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(min(1000, n - start)):
                pipe.xadd(key, fields)  # type: ignore[arg-type]
            await pipe.execute()


async def drain_async(prefix: str, n: int, run: int) -> Drain:
    """Drain ``n`` entries with redis.asyncio (the runtime's client); return msgs/s."""
    client = Redis.from_url(REDIS_URL)
    key = f"{prefix}raw-async-{run}:{STREAM}"
    try:
        await create_group(client, key, GROUP)
        await fill(client, key, n, entry_fields())
        await client.ping()
        done = 0
        started = time.perf_counter()
        cpu = time.process_time()
        while done < n:
            reply = await client.xreadgroup(GROUP, "raw", {key: ">"}, count=BATCH, block=100)
            if not reply:
                continue
            ids = [entry_id for entry_id, _ in reply[0][1]]
            await client.xack(key, GROUP, *ids)
            done += len(ids)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        await client.unlink(key)
        return Drain(n / elapsed, cpu / n * 1e6)
    finally:
        await client.aclose()


async def drain_sync(prefix: str, n: int, run: int) -> Drain:
    """The same loop with the blocking client (what a plain script would write); return msgs/s."""
    setup = Redis.from_url(REDIS_URL)
    key = f"{prefix}raw-sync-{run}:{STREAM}"
    try:
        await create_group(setup, key, GROUP)
        await fill(setup, key, n, entry_fields())
    finally:
        await setup.aclose()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
        done = 0
        started = time.perf_counter()
        cpu = time.process_time()
        while done < n:
            reply = client.xreadgroup(GROUP, "raw", {key: ">"}, count=BATCH, block=100)
            if not reply:
                continue
            ids = [entry_id for entry_id, _ in reply[0][1]]
            client.xack(key, GROUP, *ids)
            done += len(ids)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        client.unlink(key)
        return Drain(n / elapsed, cpu / n * 1e6)
    finally:
        client.close()
