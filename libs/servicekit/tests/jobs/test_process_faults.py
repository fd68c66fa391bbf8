"""Kill, stop and terminate real worker processes: effects stay exactly-once, nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from servicekit import ServiceSettings, StreamKeys, create_database_engine
from servicekit.jobs import publish
from servicekit.outbox import ensure_outbox_tables
from servicekit.testing import eventually

from .chaos_worker import Pinged

PROGRAM = Path(__file__).with_name("chaos_worker.py")
STREAM = "test.pinged.v1"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_database_engine(ServiceSettings(database_url=database_url))
    await ensure_outbox_tables(engine, "chaos")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE chaos.effects (grp text, n int, pid int)"))
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


async def effects(engine: AsyncEngine, group: str = "g") -> list[int]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT n FROM chaos.effects WHERE grp = :grp ORDER BY n"), {"grp": group}
        )
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
            from servicekit.jobs._codec import encode_event

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

    from servicekit.jobs._codec import encode_event

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


async def _pending_of(redis: Redis, key: str, groups: tuple[str, ...], consumer: str) -> set[Any]:
    return {
        (group, row["message_id"])
        for group in groups
        for row in await redis.xpending_range(key, group, "-", "+", 10_000, consumer)
    }


async def _time_to_recover(
    redis: Redis, key: str, stranded: set[Any], killed_at: float, within: float = 120
) -> float:
    """Seconds from the kill until no entry the killed consumer held is pending any more."""
    groups = {group for group, _ in stranded}
    while True:
        still = {
            (group, row["message_id"])
            for group in groups
            for row in await redis.xpending_range(key, group, "-", "+", 10_000)
        } & stranded
        if not still:
            return time.monotonic() - killed_at
        assert time.monotonic() - killed_at < within, f"{len(still)} stranded entries left"
        await _sleep(0.05)  # polling for the measurement, not synchronising


@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_two_groups_keep_every_effect_once_through_sigkills_and_same_name_restarts(
    engine: AsyncEngine, spawn: object, redis_client: Redis, stream_prefix: str
) -> None:
    """Three consumers read one stream in groups a and b; b fails every third entry once.

    A consumer holding entries in both groups is SIGKILLed about every second and restarted under
    the same name (a container restarted in place: same hostname, PID 1), so the restart takes its
    own entries back. Prints the time to recover: from the kill to the last entry it held done.
    """
    import random
    import statistics

    from servicekit.jobs._codec import encode_event
    from servicekit.operations import list_dead_letters

    keys = StreamKeys(stream_prefix)
    key = keys.stream(STREAM)
    groups = ("a", "b")
    total = 5000
    async with redis_client.pipeline(transaction=False) as pipe:
        for n in range(total):
            pipe.xadd(key, encode_event(Pinged(producer="t", n=n)))  # type: ignore[arg-type]
        await pipe.execute()
    for group in groups:  # as the workers would; the first kill may come before they start
        await redis_client.xgroup_create(key, group, id="0")
    env = {
        "GROUPS": ",".join(groups),
        "FAIL_EVERY_THIRD_IN": "b",
        "BACKOFF": "0.2",
        "SLEEP_AFTER_TX": "0.05",
        "VISIBILITY": "default",
    }
    workers = {f"w{i}": spawn(f"w{i}", **env) for i in range(3)}  # type: ignore[operator]
    rng = random.Random(11)
    recoveries: list[float] = []
    start_ups: list[float] = []
    deadline = time.monotonic() + 600
    for _ in range(8):
        await _sleep(1.0)
        name = rng.choice(sorted(workers))
        # Kill it while it holds entries in both groups (a process takes a while to start).
        if not await _wait_holding(redis_client, key, groups, name):
            print(f"\n{name} held nothing for 60 s: {await _progress(redis_client, key, groups)}")
            break
        workers[name].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        workers[name].wait()
        stranded = await _pending_of(redis_client, key, groups, name)
        workers[name] = spawn(name, **env)  # type: ignore[operator]
        restarted_at = time.monotonic()
        if stranded:
            start_up = await _seconds_to_first_command(redis_client, key, "a", name, restarted_at)
            recoveries.append(
                await _time_to_recover(redis_client, key, stranded, killed_at, within=300)
            )
            start_ups.append(start_up)
            assert workers[name].poll() is None, f"restarted {name} exited {workers[name].poll()}"
            print(
                f"\nkilled {name} holding {len(stranded)}: recovered in {recoveries[-1]:.2f} s "
                f"(the restarted process needed {start_up:.2f} s to start)"
            )
    for group in groups:
        while len(await effects(engine, group)) < total:
            got = len(await effects(engine, group))
            assert time.monotonic() < deadline, f"group {group}: {got} of {total} effects"
            await _sleep(0.5)
        await eventually(lambda g=group: _group_drained(redis_client, key, g), within=120)
    for group in groups:
        assert await effects(engine, group) == list(range(total)), group
    assert await list_dead_letters(redis_client, keys, STREAM) == []
    after_start = [r - s for r, s in zip(recoveries, start_ups, strict=True)]
    print(
        f"\ntime to recover after SIGKILL + same-name restart over {len(recoveries)} kills: "
        f"median {statistics.median(recoveries):.2f} s, max {max(recoveries):.2f} s; "
        f"of which process start-up median {statistics.median(start_ups):.2f} s; "
        f"after start-up median {statistics.median(after_start):.2f} s"
    )


async def _wait_holding(redis: Redis, key: str, groups: tuple[str, ...], consumer: str) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await _holds_in_each(redis, key, groups, consumer):
            return True
        await _sleep(0.05)  # polling for the moment to kill, not synchronising
    return False


async def _progress(redis: Redis, key: str, groups: tuple[str, ...]) -> dict[str, Any]:
    return {
        group: {_text(c["name"]): c["pending"] for c in await redis.xinfo_consumers(key, group)}
        for group in groups
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _seconds_to_first_command(
    redis: Redis, key: str, group: str, consumer: str, restarted_at: float
) -> float:
    """When a restarted consumer first spoke to Redis (its idle time drops below its age)."""
    while True:
        age = time.monotonic() - restarted_at
        idle = {_text(c["name"]): c["idle"] / 1000 for c in await redis.xinfo_consumers(key, group)}
        if idle.get(consumer, age) < age - 0.1:
            return age - idle[consumer]
        if age > 300:
            return float("nan")  # not a verdict: recovery itself is awaited (and bounded) next
        await _sleep(0.05)  # polling for the measurement, not synchronising


async def _holds_in_each(redis: Redis, key: str, groups: tuple[str, ...], consumer: str) -> bool:
    held = await _pending_of(redis, key, groups, consumer)
    return {group for group, _ in held} == set(groups)


async def _group_drained(redis: Redis, key: str, group: str) -> bool:
    return int((await redis.xpending(key, group))["pending"]) == 0


@pytest.mark.chaos
@pytest.mark.timeout(300)
async def test_entries_of_a_consumer_killed_for_good_are_done_within_the_default_visibility(
    engine: AsyncEngine, spawn: object, redis_client: Redis, stream_prefix: str
) -> None:
    """No restart (the replica went elsewhere): a live consumer reclaims the killed one's entries.

    The default visibility timeout is 15 s and leases are extended every 5 s, so the entries are
    reclaimed 10-15 s after the kill, plus at most one reclaim scan (15 / 4 s).
    """
    from servicekit.jobs import JobOptions
    from servicekit.jobs._codec import encode_event

    keys = StreamKeys(stream_prefix)
    key = keys.stream(STREAM)
    total = 400
    async with redis_client.pipeline(transaction=False) as pipe:
        for n in range(total):
            pipe.xadd(key, encode_event(Pinged(producer="t", n=n)))  # type: ignore[arg-type]
        await pipe.execute()
    env = {"VISIBILITY": "default", "SLEEP_AFTER_TX": "0.05"}
    doomed = spawn("doomed", **env)  # type: ignore[operator]
    spawn("survivor", **env)  # type: ignore[operator]
    await eventually(lambda: _count_at_least(effects(engine), 40), within=60)
    doomed.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    doomed.wait()
    stranded = await _pending_of(redis_client, key, ("g",), "doomed")
    assert stranded, "the killed consumer held nothing: the load is too light to measure"
    recovered = await _time_to_recover(redis_client, key, stranded, killed_at)
    visibility = JobOptions().visibility_timeout
    print(
        f"\ntime to recover {len(stranded)} entries of a consumer killed for good: "
        f"{recovered:.2f} s"
    )
    assert visibility <= 15
    assert recovered <= visibility + visibility / 4 + 10  # slack for a busy 2-core machine
    await eventually(lambda: _count_at_least(effects(engine), total), within=120)
    assert await effects(engine) == list(range(total))
