"""`notes-api-worker replay-outbox --since`: after Redis lost published events, every effect once.

On a private redis-server started for the test (FLUSHALL on the shared one would wipe every
parallel test's keys). A consumer group with its own inbox stands for any platform consumer; its
effect (a plain INSERT) is not idempotent by itself, so a second application would show.
"""

import argparse
import asyncio
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import NOTES_CREATED, NOTES_UPDATED, NoteCreated, NoteUpdated
from notes_api.app import create_app
from notes_api.auth import create_key
from notes_api.settings import SCHEMA, NotesApiSettings
from notes_api.worker.cli import duration
from servicekit import OutboxRelay, StreamKeys, handler_transaction, setup_telemetry
from servicekit.jobs import JobOptions, JobRouter, Worker
from servicekit.outbox import ensure_outbox_tables
from servicekit.testing import eventually

CHECK = "replay_check"
"""The stand-in consumer's schema and group."""
FAST = JobOptions(block_ms=50, backoff_base=0.05, jitter=0.0, visibility_timeout=1.0)
router = JobRouter(group=CHECK, defaults=FAST)


@router.event(NoteCreated, stream=NOTES_CREATED)
@router.event(NoteUpdated, stream=NOTES_UPDATED)
async def record_note_seen(event: NoteCreated | NoteUpdated, engine: AsyncEngine) -> None:
    async with handler_transaction(engine, schema=CHECK, group=CHECK, event=event) as tx:
        if tx.already_processed:
            return
        await tx.connection.execute(
            text(f"INSERT INTO {CHECK}.effects (event_id, note_id) VALUES (:e, :n)"),
            {"e": event.event_id, "n": event.note_id},
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def private_redis_url(tmp_path: Path) -> AsyncIterator[str]:
    """A redis-server of this test's own: FLUSHALL here touches no one else's keys."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(tmp_path), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)

    async def answers() -> bool:
        try:
            return bool(await client.ping())
        except RedisConnectionError:
            return False

    try:
        await eventually(answers)
        yield url
    finally:
        await client.aclose()
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def _effects(engine: AsyncEngine) -> list[UUID]:
    async with engine.connect() as connection:
        rows = await connection.execute(text(f"SELECT event_id FROM {CHECK}.effects"))
        return [row.event_id for row in rows]


async def _consumed_everything(redis: Redis, keys: StreamKeys) -> bool:
    """Every entry of both streams delivered to the group and acknowledged."""
    for stream in (NOTES_CREATED, NOTES_UPDATED):
        [group] = await redis.xinfo_groups(keys.stream(stream))
        if group["lag"] != 0 or group["pending"] != 0:
            return False
    return True


async def _replay_outbox(settings: NotesApiSettings, since: str) -> str:
    """Run `notes-api-worker replay-outbox` as an operator would; return its output."""
    env = {**os.environ, "DATABASE_URL": settings.database_url or "",
           "REDIS_URL": settings.redis_url, "STREAM_PREFIX": settings.stream_prefix,
           "LOG_LEVEL": "WARNING"}  # fmt: skip
    script = Path(sys.executable).parent / "notes-api-worker"
    process = await asyncio.create_subprocess_exec(
        script, "replay-outbox", "--since", since, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_replaying_the_outbox_after_redis_lost_its_data_applies_every_effect_exactly_once(
    settings: NotesApiSettings, engine_direct: AsyncEngine, private_redis_url: str
) -> None:
    settings = settings.model_copy(update={"redis_url": private_redis_url})
    redis = Redis.from_url(private_redis_url)
    keys = StreamKeys(settings.stream_prefix)
    telemetry = setup_telemetry(settings)
    await ensure_outbox_tables(engine_direct, CHECK)
    async with engine_direct.begin() as connection:  # no unique key: a repeat would show
        await connection.execute(
            text(f"CREATE TABLE {CHECK}.effects (event_id uuid, note_id uuid)")
        )
    relay = OutboxRelay(engine_direct, redis, schema=SCHEMA, keys=keys, poll_interval=0.05)

    async def consumer(name: str) -> Worker:
        worker = Worker(
            router.routes, redis=redis, keys=keys, consumer=name, telemetry=telemetry,
            dependencies={"engine": engine_direct}, maintenance_interval=0.2,
        )  # fmt: skip
        await worker.ensure_groups()  # at id 0, as every service does at start
        return worker

    application = create_app(settings, telemetry)
    async with application.router.lifespan_context(application):
        _, api_key = await create_key(application.state.engine, "alice")
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://notes.test",
            headers={"Authorization": f"Bearer {api_key}"},
        ) as client:  # fmt: skip
            # 1. Four events published and consumed: each effect once.
            async with Running((await consumer("c1")).run, relay.run):
                notes = [(await client.post("/v1/notes", json={"title": f"n{i}"})).json()
                         for i in range(3)]  # fmt: skip
                patch = await client.patch(f"/v1/notes/{notes[0]['id']}", json={"title": "n0'"})
                assert patch.status_code == 200
                await eventually(lambda: _effects_are(engine_direct, 4))
            # 2. With the consumer down, one more event is published; it waits in Redis.
            async with Running(relay.run):
                await client.post("/v1/notes", json={"title": "published, never consumed"})
                await eventually(lambda: _all_published(engine_direct))

    # 3. Redis loses everything (no AOF, a failover...): the streams and the groups are gone.
    await redis.flushall()
    # An event published before the window is not replayed (its effect was applied long ago).
    async with engine_direct.begin() as connection:
        await connection.execute(text(
            "UPDATE notes.outbox SET published_at = now() - interval '1 hour'"
            " WHERE id = (SELECT min(id) FROM notes.outbox)"))  # fmt: skip

    # 4. The consumer restarts (its groups recreated) and the operator replays the last 10 min.
    try:
        async with Running((await consumer("c2")).run):
            output = await _replay_outbox(settings, "10m")
            assert "replayed 4 event(s)" in output, output
            await eventually(lambda: _effects_are(engine_direct, 5))  # the lost one, now
            await eventually(lambda: _consumed_everything(redis, keys))
        streams = [keys.stream(s) for s in (NOTES_CREATED, NOTES_UPDATED)]
        assert sum([await redis.xlen(stream) for stream in streams]) == 4  # all but the old one
    finally:
        await redis.aclose()
    effects = await _effects(engine_direct)
    assert len(effects) == len(set(effects)) == 5  # every event's effect, each exactly once


class Running:
    """Run loops (``loop(stop)``) for the block's duration; set stop and await them on exit."""

    def __init__(self, *loops: Callable[[asyncio.Event], Awaitable[object]]) -> None:
        self.loops = loops
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[object]] = []

    async def __aenter__(self) -> None:
        self.tasks = [asyncio.ensure_future(loop(self.stop)) for loop in self.loops]

    async def __aexit__(self, *_: object) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 30)


async def _effects_are(engine: AsyncEngine, n: int) -> bool:
    return len(await _effects(engine)) == n


async def _all_published(engine: AsyncEngine) -> bool:
    async with engine.connect() as connection:
        left = await connection.execute(
            text("SELECT count(*) FROM notes.outbox WHERE published_at IS NULL")
        )
        return left.scalar_one() == 0


def test_replay_window_is_a_number_with_a_unit() -> None:
    assert duration("90s") == timedelta(seconds=90)
    assert duration("10m") == timedelta(minutes=10)
    assert duration("1.5h") == timedelta(minutes=90)
    assert duration("1d") == timedelta(days=1)
    for wrong in ("10", "m", "-1m", "10 minutes"):
        with pytest.raises(argparse.ArgumentTypeError):
            duration(wrong)
