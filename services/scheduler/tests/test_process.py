"""Process tests: ``scheduler`` replicas as subprocesses, stopped, killed, paused and restarted."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from contracts import (
    JOBS_DELAYED,
    ArchiveRequested,
    DelayedJobRequested,
    JobType,
    Priority,
    job_stream,
)
from scheduler.store import SchedulerStore
from servicekit import StreamKeys
from servicekit.jobs import publish
from servicekit.testing import eventually, read_events

from .conftest import SchedulerProcess, commands

STREAM = "commands.purge_idempotency_keys.v1"


async def _fired_ticks(redis: Redis, keys: StreamKeys, at_least: int) -> bool:
    return len(await commands(redis, keys)) >= at_least


async def _wait_for_ticks(redis: Redis, keys: StreamKeys, at_least: int) -> None:
    await eventually(lambda: _fired_ticks(redis, keys, at_least), within=90, every=0.2)


async def assert_each_tick_fired_once(redis: Redis, keys: StreamKeys) -> int:
    """Every tick from the first to the last fired exactly once, none missed; return how many."""
    fired = await commands(redis, keys)
    ticks = [c.tick_at for c in fired]
    repeated = sorted({t for t in ticks if ticks.count(t) > 1})
    assert not repeated, f"ticks fired more than once: {repeated}"
    expected = int((max(ticks) - min(ticks)).total_seconds()) + 1
    gaps = sorted({min(ticks) + timedelta(seconds=n) for n in range(expected)} - set(ticks))
    assert not gaps, f"ticks never fired: {gaps}"
    history = await SchedulerStore(redis, keys).history(STREAM, "every-second", limit=1000)
    outcomes = {r.outcome for r in history if min(ticks) <= r.tick_at <= max(ticks)}
    assert outcomes <= {"fired", "late"}, outcomes
    return len(ticks)


async def test_three_replicas_fire_each_of_ten_one_second_ticks_exactly_once(
    replicas: list[SchedulerProcess], redis_client: Redis, keys: StreamKeys
) -> None:
    for replica in replicas:
        replica.start()
    for replica in replicas:
        await replica.ready()
    await eventually(lambda: _fired_ticks(redis_client, keys, 10), within=40)
    for replica in replicas:
        replica.signal(signal.SIGTERM)
    assert [await asyncio.to_thread(r.wait) for r in replicas] == [0, 0, 0]
    assert await assert_each_tick_fired_once(redis_client, keys) >= 10


async def test_ops_port_serves_health_and_the_schedule_metrics(
    replicas: list[SchedulerProcess], redis_client: Redis, keys: StreamKeys
) -> None:
    replica = replicas[0]
    replica.start()
    await replica.ready()
    assert replica.status("/healthz") == 200
    await eventually(lambda: _fired_ticks(redis_client, keys, 2), within=20)
    metrics = await asyncio.to_thread(replica.get, "/metrics")
    assert 'scheduler_fires_total{outcome="fired",schedule="every-second"}' in metrics
    assert 'scheduler_next_fire_timestamp_seconds{schedule="every-second"}' in metrics
    assert "scheduler_punctuality_seconds_bucket" in metrics
    shown = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "scheduler", "history", "every-second", "2"],
        env=replica.env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    records = [json.loads(line) for line in shown.stdout.splitlines()]
    assert len(records) == 2
    assert {r["outcome"] for r in records} <= {"fired", "late"}
    assert records[0]["tick_at"] > records[1]["tick_at"]  # newest first


async def test_a_delayed_job_survives_a_restart_and_is_published_once(
    replicas: list[SchedulerProcess], redis_client: Redis, keys: StreamKeys
) -> None:
    store = SchedulerStore(redis_client, keys)
    first, second = replicas[0], replicas[1]
    first.start()
    await first.ready()
    request = ArchiveRequested(producer="notes-api", owner_id="alice", job_id=uuid4(),
                               note_id=uuid4(), version=1)  # fmt: skip
    run_at = await store.now() + timedelta(seconds=4)
    delayed = DelayedJobRequested.for_request(
        request, run_at=run_at, priority=Priority.LOW, producer="notes-api"
    )
    await publish(redis_client, keys, JOBS_DELAYED, delayed)
    await eventually(lambda: store.held_jobs(JobType.ARCHIVE), within=20)
    first.signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.wait) == 0

    second.start()
    stream = job_stream(JobType.ARCHIVE, Priority.LOW)
    [published] = await eventually(
        lambda: read_events(redis_client, keys, stream, ArchiveRequested), within=30
    )
    assert published.job_id == request.job_id
    [(entry_id, _)] = await redis_client.xrange(keys.stream(stream))
    assert int(entry_id.split(b"-")[0]) >= run_at.timestamp() * 1000  # not before its time
    await publish(redis_client, keys, JOBS_DELAYED, delayed)  # redelivered: held no more
    await eventually(lambda: _group_caught_up(redis_client, keys), within=20)
    assert await store.held_jobs(JobType.ARCHIVE) == []
    assert len(await read_events(redis_client, keys, stream, ArchiveRequested)) == 1


async def _group_caught_up(redis: Redis, keys: StreamKeys) -> bool:
    groups = await redis.xinfo_groups(keys.stream(JOBS_DELAYED))
    return bool(groups) and groups[0]["lag"] == 0 and groups[0]["pending"] == 0


@pytest.mark.parametrize(
    ("cron", "event", "message"),
    [
        ("61 * * * * *", "commands.auto_archive.v1", "schedule 'nightly': invalid cron"),
        ("0 0 3 * * *", "commands.make_tea.v1", "schedule 'nightly': unknown event"),
    ],
)
def test_an_invalid_schedules_file_stops_the_service_naming_the_schedule(
    scheduler_env: dict[str, str], tmp_path: Path, cron: str, event: str, message: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        f'[[schedule]]\nname = "nightly"\ncron = "{cron}"\nevent = "{event}"\n'
        "payload = { not_updated_for_days = 2 }\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "scheduler"], env={**scheduler_env, "SCHEDULES_FILE": str(bad)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr


def test_the_schedules_command_lists_each_schedule_with_its_next_fire(
    scheduler_env: dict[str, str],
) -> None:
    env = {k: v for k, v in scheduler_env.items() if k != "SCHEDULES_FILE"}
    result = subprocess.run(
        [sys.executable, "-m", "scheduler", "schedules"], env=env, capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[0] for row in rows] == ["auto-archive", "purge-idempotency-keys"]
    assert all(row[4].endswith("+00:00") for row in rows)


@pytest.mark.chaos
@pytest.mark.timeout(420)
async def test_three_replicas_over_200_ticks_one_killed_or_paused_every_20_fire_each_once(
    replicas: list[SchedulerProcess], redis_client: Redis, keys: StreamKeys
) -> None:
    chance = random.Random(13)
    for replica in replicas:
        replica.start()
    for replica in replicas:
        await replica.ready()
    await eventually(lambda: _fired_ticks(redis_client, keys, 1), within=30)
    start = len(await commands(redis_client, keys))
    for round_no in range(10):
        await _wait_for_ticks(redis_client, keys, start + 20 * (round_no + 1))
        victim = chance.choice(replicas)
        if round_no % 2 == 0:  # killed mid-whatever, restarted under a new consumer name
            victim.signal(signal.SIGKILL)
            await asyncio.to_thread(victim.wait)
            victim.env["CONSUMER_NAME"] = f"{victim.name}-{round_no}"
            victim.start()
        else:  # paused past any lease, then resumed: its stale ticks must not fire again
            victim.signal(signal.SIGSTOP)
            await _wait_for_ticks(redis_client, keys, start + 20 * round_no + 25)
            victim.signal(signal.SIGCONT)
    for replica in replicas:
        replica.signal(signal.SIGTERM)
    assert [await asyncio.to_thread(r.wait) for r in replicas] == [0, 0, 0]
    assert await assert_each_tick_fired_once(redis_client, keys) >= 200
