"""Shared test helpers: schedules, the Redis store, and the scheduler as subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from contracts import COMMANDS_PURGE_IDEMPOTENCY_KEYS, PurgeExpiredIdempotencyKeys
from scheduler.schedules import CatchUp, Overlap, Schedule
from scheduler.store import SchedulerStore
from scheduler.ticker import SchedulerMetrics, Ticker
from servicekit import StreamKeys
from servicekit.testing import eventually, read_events

PER_SECOND_TOML = """
[[schedule]]
name = "every-second"
cron = "* * * * * *"
event = "commands.purge_idempotency_keys.v1"
payload = {{ older_than = {{ seconds_before_tick = 0 }} }}
overlap = "allow"
catch_up = "{catch_up}"
"""


def schedule(**fields: Any) -> Schedule:
    """A per-second schedule publishing the purge command (any command would do)."""
    values: dict[str, Any] = {
        "name": "every-second", "cron": "* * * * * *", "event": PurgeExpiredIdempotencyKeys,
        "stream": COMMANDS_PURGE_IDEMPOTENCY_KEYS,
        "payload": {"older_than": {"seconds_before_tick": 0}}, "overlap": Overlap.ALLOW,
        "catch_up": CatchUp.ALL, "catch_up_window": timedelta(minutes=5),
    }  # fmt: skip
    values.update(fields)
    return Schedule(**values)


@pytest.fixture
def keys(stream_prefix: str) -> StreamKeys:
    return StreamKeys(stream_prefix)


@pytest.fixture
def store(redis_client: Redis, keys: StreamKeys) -> SchedulerStore:
    return SchedulerStore(redis_client, keys)


def ticker(
    schedules: list[Schedule], store: SchedulerStore, redis: Redis, keys: StreamKeys
) -> Ticker:
    return Ticker(schedules, store, SchedulerMetrics(CollectorRegistry()), redis=redis, keys=keys)


async def commands(redis: Redis, keys: StreamKeys) -> list[PurgeExpiredIdempotencyKeys]:
    """Every command the per-second schedule published, oldest first."""
    return await read_events(
        redis, keys, COMMANDS_PURGE_IDEMPOTENCY_KEYS, PurgeExpiredIdempotencyKeys
    )


def whole_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SchedulerProcess:
    """``python -m scheduler`` with the test's Redis prefix, schedules file and a free ops port."""

    def __init__(self, env: dict[str, str], log: Path, name: str) -> None:
        self.env = {**env, "OPS_PORT": str(free_port()), "CONSUMER_NAME": name}
        self.log = log
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scheduler"], env=self.env, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def status(self, path: str) -> int:
        try:
            url = f"http://127.0.0.1:{self.env['OPS_PORT']}{path}"
            with urllib.request.urlopen(url, timeout=1) as response:
                return int(response.status)
        except OSError:
            return 0

    def get(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.env['OPS_PORT']}{path}"
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())

    async def ready(self) -> None:
        async def answers() -> bool:
            return await asyncio.to_thread(self.status, "/readyz") == 200

        await eventually(answers, within=30)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def scheduler_env(tmp_path: Path, redis_url: str, stream_prefix: str) -> dict[str, str]:
    schedules = tmp_path / "schedules.toml"
    schedules.write_text(PER_SECOND_TOML.format(catch_up="all"))
    return {
        **os.environ, "REDIS_URL": redis_url, "STREAM_PREFIX": stream_prefix,
        "SCHEDULES_FILE": str(schedules), "LOG_LEVEL": "WARNING", "DELAYED_POLL_SECONDS": "0.05",
    }  # fmt: skip


@pytest.fixture
def replicas(scheduler_env: dict[str, str], tmp_path: Path) -> Iterator[list[SchedulerProcess]]:
    made = [
        SchedulerProcess(scheduler_env, tmp_path / f"scheduler-{i}.log", f"scheduler-{i}")
        for i in range(3)
    ]
    yield made
    for process in made:
        process.stop()
