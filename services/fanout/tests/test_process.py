"""Process tests: `fanout migrate` and `fanout` as subprocesses, stopped and killed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from contracts import ArchiveRequested, Priority, job_stream
from servicekit import StreamKeys
from servicekit.jobs import enqueue
from servicekit.testing import eventually, read_events

from .conftest import bulk_chunk


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FanoutProcess:
    """Runs ``python -m fanout`` with the test's Redis prefix and database."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.ops = f"http://127.0.0.1:{env['OPS_PORT']}"
        self.process: subprocess.Popen[bytes] | None = None

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "fanout", "migrate"], env=self.env, check=True, timeout=60
        )

    def start(self, consumer: str) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fanout"],
                env={**self.env, "CONSUMER_NAME": consumer},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.ops + path, timeout=1) as response:
                return int(response.status)
        except OSError:
            return 0

    async def ready(self) -> None:
        async def answers() -> bool:
            return await asyncio.to_thread(self.status, "/readyz") == 200

        await eventually(answers, within=30)

    def signal(self, sig: signal.Signals) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def fanout_process(
    tmp_path: Path, redis_url: str, database_url: str, stream_prefix: str
) -> Iterator[FanoutProcess]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "STREAM_PREFIX": stream_prefix,
        "OPS_PORT": str(free_port()),
        "LOG_LEVEL": "WARNING",
    }
    process = FanoutProcess(env, tmp_path / "fanout.log")
    process.migrate()
    yield process
    process.stop()


async def test_process_serves_ops_expands_a_chunk_and_exits_zero_on_sigterm(
    fanout_process: FanoutProcess, redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    fanout_process.start("fanout-1")
    await fanout_process.ready()
    assert fanout_process.status("/healthz") == 200
    assert fanout_process.status("/metrics") == 200

    chunk = bulk_chunk(10)
    await enqueue(redis_client, keys, chunk, Priority.LOW)

    async def children() -> list[ArchiveRequested]:
        found = await read_events(
            redis_client, keys, job_stream("archive", Priority.LOW), ArchiveRequested
        )
        return found if len(found) == 10 else []

    await eventually(children, within=30)
    assert await asyncio.to_thread(fanout_process.signal, signal.SIGTERM) == 0
