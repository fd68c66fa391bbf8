"""Kill, stop and terminate real worker processes: effects stay exactly-once, nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from servicekit import ServiceSettings, StreamKeys, create_database_engine, ensure_outbox_tables
from servicekit.jobs import publish
from servicekit.testing import eventually

from .chaos_worker import Pinged

PROGRAM = Path(__file__).with_name("chaos_worker.py")
STREAM = "test.pinged.v1"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_database_engine(ServiceSettings(database_url=database_url))
    await ensure_outbox_tables(engine, "chaos")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE chaos.effects (n int, pid int)"))
    yield engine
    await engine.dispose()


@pytest.fixture
def spawn(redis_url: str, database_url: str, stream_prefix: str) -> Iterator[object]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, **env: str) -> subprocess.Popen[bytes]:
        environment = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "STREAM_PREFIX": stream_prefix,
            "CONSUMER_NAME": name,
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(PROGRAM.parents[4]),
            **env,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "libs.servicekit.tests.jobs.chaos_worker"],
            env=environment,
            cwd=PROGRAM.parents[4],
            stdout=subprocess.DEVNULL,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


async def effects(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT n FROM chaos.effects ORDER BY n"))
        return [row[0] for row in rows]


async def marker(redis: Redis, pattern: str) -> bool:
    return bool([key async for key in redis.scan_iter(match=pattern)])


async def test_sigkill_mid_handler_is_reclaimed_and_applied_once(
    engine: AsyncEngine, spawn: object, redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    doomed = spawn("doomed", SLEEP_IN_TX="30")  # type: ignore[operator]
    await publish(redis_client, keys, STREAM, Pinged(producer="t", n=1))
    await eventually(lambda: marker(redis_client, f"{stream_prefix}started:1:*"), within=20)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    spawn("survivor")  # type: ignore[operator]
    await eventually(lambda: _equals(effects(engine), [1]), within=20)
    echoed = await eventually(lambda: redis_client.xlen(keys.stream("test.echoed.v1")), within=20)
    assert echoed == 1


async def test_sigkill_after_commit_before_ack_gives_no_second_effect(
    engine: AsyncEngine, spawn: object, redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    doomed = spawn("doomed", SLEEP_AFTER_TX="30", RELAY="0")  # type: ignore[operator]
    await publish(redis_client, keys, STREAM, Pinged(producer="t", n=1))
    await eventually(lambda: marker(redis_client, f"{stream_prefix}committed:1:*"), within=20)
    doomed.send_signal(signal.SIGKILL)  # committed, event still in the outbox, entry unacked
    doomed.wait()
    spawn("survivor")  # type: ignore[operator]
    await eventually(
        lambda: _equals(redis_client.xlen(keys.stream("test.echoed.v1")), 1), within=20
    )
    await eventually(lambda: _pending_is_zero(redis_client, keys.stream(STREAM)), within=20)
    assert await effects(engine) == [1]
    assert await redis_client.xlen(keys.stream("test.echoed.v1")) == 1


async def test_sigstop_past_visibility_then_sigcont_gives_no_duplicate_effect(
    engine: AsyncEngine, spawn: object, redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    sleepy = spawn("sleepy", SLEEP_IN_TX="2")  # type: ignore[operator]
    await publish(redis_client, keys, STREAM, Pinged(producer="t", n=1))
    await eventually(lambda: marker(redis_client, f"{stream_prefix}started:1:*"), within=20)
    sleepy.send_signal(signal.SIGSTOP)
    spawn("other")  # type: ignore[operator]
    # The other consumer reclaims it after the visibility timeout and blocks on the inbox row.
    await eventually(lambda: _owned_by(redis_client, keys.stream(STREAM), "other"), within=20)
    sleepy.send_signal(signal.SIGCONT)
    await eventually(lambda: _pending_is_zero(redis_client, keys.stream(STREAM)), within=20)
    assert await effects(engine) == [1]


async def test_sigterm_under_load_loses_nothing_and_exits_zero(
    engine: AsyncEngine, spawn: object, redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    total = 300
    async with redis_client.pipeline(transaction=False) as pipe:
        for n in range(total):
            from servicekit.jobs import encode_event

            pipe.xadd(keys.stream(STREAM), encode_event(Pinged(producer="t", n=n)))  # type: ignore[arg-type]
        await pipe.execute()
    first = spawn("first", SLEEP_AFTER_TX="0.01")  # type: ignore[operator]
    await eventually(lambda: _count_at_least(effects(engine), 20), within=20)
    started = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=25) == 0
    assert time.monotonic() - started < 25
    spawn("second")  # type: ignore[operator]
    await eventually(lambda: _count_at_least(effects(engine), total), within=40)
    await eventually(lambda: _pending_is_zero(redis_client, keys.stream(STREAM)), within=20)
    assert await effects(engine) == list(range(total))


async def _equals(value: object, expected: object) -> bool:
    return (await value) == expected  # type: ignore[misc]


async def _count_at_least(value: object, n: int) -> bool:
    return len(await value) >= n  # type: ignore[misc, arg-type]


async def _pending_is_zero(redis: Redis, key: str) -> bool:
    info = await redis.xpending(key, "g")
    return bool(info["pending"] == 0 and await redis.xlen(key) > 0)


async def _owned_by(redis: Redis, key: str, consumer: str) -> bool:
    rows = await redis.xpending_range(key, "g", "-", "+", 10)
    return any(row["consumer"] == consumer.encode() for row in rows)


@pytest.mark.chaos
@pytest.mark.timeout(600)
async def test_sigkill_soak_keeps_every_effect_exactly_once(
    engine: AsyncEngine, spawn: object, redis_client: Redis, stream_prefix: str
) -> None:
    """Three workers share a backlog while one of them is SIGKILLed every second."""
    import random

    from servicekit.jobs import encode_event

    keys = StreamKeys(stream_prefix)
    total = 3000
    async with redis_client.pipeline(transaction=False) as pipe:
        for n in range(total):
            pipe.xadd(keys.stream(STREAM), encode_event(Pinged(producer="t", n=n)))  # type: ignore[arg-type]
        await pipe.execute()
    rng = random.Random(7)
    workers = {
        f"w{i}": spawn(f"w{i}", SLEEP_AFTER_TX="0.002", VISIBILITY="2")  # type: ignore[operator]
        for i in range(3)
    }
    kills = 0
    deadline = time.monotonic() + 300
    while len(await effects(engine)) < total:
        assert time.monotonic() < deadline, f"{len(await effects(engine))} of {total}"
        await _sleep(1.0)
        if kills < 20:
            name = rng.choice(sorted(workers))
            workers[name].send_signal(signal.SIGKILL)
            workers[name].wait()
            kills += 1
            workers[name] = spawn(f"{name}-{kills}", SLEEP_AFTER_TX="0.002", VISIBILITY="2")  # type: ignore[operator]
    await eventually(lambda: _pending_is_zero(redis_client, keys.stream(STREAM)), within=120)
    assert await effects(engine) == list(range(total))
    echoed = keys.stream("test.echoed.v1")
    await eventually(lambda: _count_at_least_xlen(redis_client, echoed, total), within=60)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)  # pacing the kills, not synchronising


async def _count_at_least_xlen(redis: Redis, key: str, n: int) -> bool:
    return int(await redis.xlen(key)) >= n
