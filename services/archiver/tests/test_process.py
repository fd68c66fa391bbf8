"""Process tests: `archiver migrate` and `archiver` as subprocesses, stopped and killed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from archiver.handlers import archive_note
from archiver.store import SCHEMA, ArchiveStore
from contracts.notes import NoteArchived
from contracts.streams import NOTES_ARCHIVED, NOTES_CREATED, job_stream
from servicekit import StreamKeys
from servicekit.jobs import enqueue, publish
from servicekit.settings import asyncpg_url
from servicekit.testing import ServiceProcess, eventually, free_port, read_events

from .conftest import archive_request, note_created


@pytest.fixture
def archiver_process(
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
    process = ServiceProcess("archiver", env, tmp_path / "archiver.log")
    process.migrate()
    yield process
    process.stop()


@pytest.fixture
async def engine(database_url: str, archiver_process: ServiceProcess) -> AsyncIterator[AsyncEngine]:
    """An engine on the database `archiver migrate` prepared (overrides conftest's)."""
    engine = create_async_engine(asyncpg_url(database_url))
    yield engine
    await engine.dispose()


async def archived_events(redis: Redis, keys: StreamKeys) -> list[NoteArchived]:
    return await read_events(redis, keys, NOTES_ARCHIVED, NoteArchived)


async def count_rows(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as connection:
        result = await connection.execute(text(f"SELECT count(*) FROM {SCHEMA}.{table}"))
        return int(result.scalar_one())


async def test_process_serves_ops_archives_and_exits_zero_on_sigterm(
    archiver_process: ServiceProcess, redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    archiver_process.start("archiver-1")
    await archiver_process.ready()
    assert archiver_process.status("/healthz") == 200
    metrics = await asyncio.to_thread(archiver_process.metrics)
    assert "db_pool_checked_out" in metrics  # the pool's saturation, for the service dashboard
    assert "process_cpu_seconds_total" in metrics

    created = note_created()
    await publish(redis_client, keys, NOTES_CREATED, created)
    await enqueue(redis_client, keys, archive_request(created.note_id))
    [archived] = await eventually(lambda: archived_events(redis_client, keys))
    assert archived.note_id == created.note_id

    assert await asyncio.to_thread(archiver_process.signal, signal.SIGTERM) == 0


async def test_ops_port_listens_on_ops_host_only(archiver_process: ServiceProcess) -> None:
    # servicekit's runner binds the ops port for every worker process (notes-api-worker too).
    archiver_process.env["OPS_HOST"] = "127.0.0.2"
    archiver_process.ops = archiver_process.ops.replace("127.0.0.1", "127.0.0.2")
    archiver_process.start("archiver-ops-host")
    await archiver_process.ready()
    with socket.socket() as probe:
        refused = probe.connect_ex(("127.0.0.1", int(archiver_process.env["OPS_PORT"])))
    assert refused != 0, "the ops port answered on an address other than OPS_HOST"
    assert await asyncio.to_thread(archiver_process.signal, signal.SIGTERM) == 0


async def test_crash_between_commit_and_publish_still_emits_exactly_once(
    archiver_process: ServiceProcess, engine: AsyncEngine, redis_client: Redis, stream_prefix: str
) -> None:
    # A process that committed the snapshot and died before its relay ran: the effect and the
    # outbox row are in PostgreSQL, nothing reached Redis, and the request will come again.
    keys = StreamKeys(stream_prefix)
    created = note_created()
    request = archive_request(created.note_id)
    store = ArchiveStore(engine)
    async with store.transaction(created) as tx:
        await tx.save_version(created)
    await archive_note([request], store)
    assert await archived_events(redis_client, keys) == []

    archiver_process.start("archiver-2")
    await enqueue(redis_client, keys, request)  # the redelivery

    async def request_handled() -> bool:
        groups = await redis_client.xinfo_groups(keys.stream(job_stream("archive", "default")))
        return bool(groups) and groups[0]["entries-read"] == 1 and groups[0]["pending"] == 0

    await eventually(request_handled, within=30)
    [archived] = await eventually(lambda: archived_events(redis_client, keys))
    assert archived.job_id == request.job_id
    assert await count_rows(engine, "snapshots") == 1
    assert len(await archived_events(redis_client, keys)) == 1


@pytest.mark.chaos
@pytest.mark.timeout(240)
async def test_sigkill_mid_batch_then_restart_leaves_one_snapshot_and_event_per_job(
    archiver_process: ServiceProcess, engine: AsyncEngine, redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    total = 300
    notes = [note_created() for _ in range(total)]
    requests = [archive_request(n.note_id) for n in notes]
    for note in notes:
        await publish(redis_client, keys, NOTES_CREATED, note)
    for request in requests:
        await enqueue(redis_client, keys, request)

    archiver_process.start("archiver-killed")
    await eventually(lambda: _snapshots_reach(engine, total // 5), within=60)
    assert await asyncio.to_thread(archiver_process.signal, signal.SIGKILL) == -signal.SIGKILL
    assert await count_rows(engine, "snapshots") < total, "killed too late to be mid-batch"

    # The new consumer reclaims the dead one's entries after the visibility timeout (60 s).
    archiver_process.start("archiver-restarted")
    await eventually(lambda: _every_job_announced(redis_client, keys, total), within=150)

    assert await count_rows(engine, "snapshots") == total
    events = await archived_events(redis_client, keys)
    # The relay may send a row twice if it dies between XADD and marking it published (consumers
    # dedupe by event_id); what must hold is one event per job.
    per_job = Counter(e.job_id for e in {e.event_id: e for e in events}.values())
    assert set(per_job) == {r.job_id for r in requests}
    assert set(per_job.values()) == {1}


async def _snapshots_reach(engine: AsyncEngine, wanted: int) -> bool:
    return await count_rows(engine, "snapshots") >= wanted


async def _every_job_announced(redis: Redis, keys: StreamKeys, jobs: int) -> bool:
    return len({e.job_id for e in await archived_events(redis, keys)}) >= jobs
