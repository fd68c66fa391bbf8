"""Process tests: `fanout migrate` and `fanout` as subprocesses, stopped and killed."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from contracts import ArchiveRequested, Priority, job_stream
from servicekit import StreamKeys
from servicekit.jobs import enqueue
from servicekit.testing import ServiceProcess, eventually, free_port, read_events

from .conftest import bulk_chunk


@pytest.fixture
def fanout_process(
    tmp_path: Path, redis_url: str, database_url: str, stream_prefix: str
) -> Iterator[ServiceProcess]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "STREAM_PREFIX": stream_prefix,
        "OPS_PORT": str(free_port()),
        "LOG_LEVEL": "WARNING",
    }
    process = ServiceProcess("fanout", env, tmp_path / "fanout.log")
    process.migrate()
    yield process
    process.stop()


async def test_process_serves_ops_expands_a_chunk_and_exits_zero_on_sigterm(
    fanout_process: ServiceProcess, redis_client: Redis, stream_prefix: str
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
