"""The relay marks rows published only once the write is as durable as configured.

Real servers: a private ``redis-server`` 7.0 (no WAITAOF; with and without a replica) and a private
Valkey 8.1 with AOF on (WAITAOF). The shared Redis is only read and written under a test prefix.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, get_args
from uuid import UUID, uuid4

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from structlog.testing import capture_logs

from contracts.notes import NoteArchived
from contracts.streams import NOTES_ARCHIVED
from devstack.embedded import EmbeddedValkey, free_port
from servicekit.durability import (
    DurabilityPolicy,
    DurabilitySetting,
    DurabilityShortfallError,
    DurabilityUnavailableError,
    ServerPersistence,
    detect_persistence,
    plan_durability,
)
from servicekit.keys import StreamKeys
from servicekit.metrics import new_registry
from servicekit.outbox import OutboxRelay, add_to_outbox, ensure_outbox_tables
from servicekit.settings import asyncpg_url
from servicekit.testing import eventually
from servicekit.wire import DATA_FIELD, decode_envelope

SCHEMA = "notes"


def archived(note_id: UUID) -> NoteArchived:
    return NoteArchived(
        producer="archiver", owner_id="alice", note_id=note_id, version=1, job_id=uuid4()
    )


async def write(engine: AsyncEngine, events: list[NoteArchived]) -> None:
    async with engine.begin() as connection:
        for event in events:
            await add_to_outbox(
                connection, SCHEMA, event, stream=NOTES_ARCHIVED, aggregate_id=str(event.note_id)
            )


async def unpublished(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(f"SELECT count(*) FROM {SCHEMA}.outbox WHERE published_at IS NULL")
        )
        return int(result.scalar_one())


async def read_stream(redis: Redis, keys: StreamKeys) -> list[tuple[dict[str, Any], object]]:
    entries = await redis.xrange(keys.stream(NOTES_ARCHIVED))
    decoded = []
    for _, fields in entries:
        body, headers = decode_envelope(fields[DATA_FIELD.encode()])
        decoded.append((json.loads(body), headers))
    return decoded


# What each server shape is offered, and what "auto" makes of it.
REDIS_7_0 = ServerPersistence(server="redis 7.0.15", waitaof=False, aof=False, replicas=0)
REDIS_7_0_AOF = ServerPersistence(server="redis 7.0.15", waitaof=False, aof=True, replicas=0)
REDIS_7_0_REPLICA = ServerPersistence(server="redis 7.0.15", waitaof=False, aof=False, replicas=1)
VALKEY_AOF = ServerPersistence(server="valkey 8.1.0", waitaof=True, aof=True, replicas=0)
VALKEY_NO_AOF = ServerPersistence(server="valkey 8.1.0", waitaof=True, aof=False, replicas=0)
VALKEY_AOF_REPLICAS = ServerPersistence(server="valkey 8.1.0", waitaof=True, aof=True, replicas=2)


@pytest.mark.parametrize(
    ("server", "mode", "numlocal", "numreplicas"),
    [
        (REDIS_7_0, "none", 0, 0),
        (REDIS_7_0_AOF, "none", 0, 0),  # AOF on, but no WAITAOF to wait for its fsync
        (REDIS_7_0_REPLICA, "replicas", 0, 1),
        (VALKEY_AOF, "aof", 1, 0),
        (VALKEY_NO_AOF, "none", 0, 0),
        (VALKEY_AOF_REPLICAS, "aof+replicas", 1, 1),
    ],
)
def test_auto_waits_for_the_strongest_durability_the_server_offers(
    server: ServerPersistence, mode: str, numlocal: int, numreplicas: int
) -> None:
    plan = plan_durability(DurabilityPolicy("auto"), server)
    assert (plan.mode, plan.numlocal, plan.numreplicas) == (mode, numlocal, numreplicas)


@pytest.mark.parametrize(
    ("policy", "server"),
    [
        (DurabilityPolicy("aof"), REDIS_7_0_AOF),  # no WAITAOF
        (DurabilityPolicy("aof"), VALKEY_NO_AOF),  # nothing to fsync
        (DurabilityPolicy("replicas"), VALKEY_AOF),  # no replica
        (DurabilityPolicy("replicas", replicas=2), REDIS_7_0_REPLICA),  # too few replicas
    ],
)
def test_a_setting_the_server_cannot_honour_is_refused(
    policy: DurabilityPolicy, server: ServerPersistence
) -> None:
    with pytest.raises(DurabilityUnavailableError, match=policy.setting):
        plan_durability(policy, server)


def test_none_never_waits_even_where_the_server_could() -> None:
    plan = plan_durability(DurabilityPolicy("none"), VALKEY_AOF_REPLICAS)
    assert (plan.mode, plan.numlocal, plan.numreplicas) == ("none", 0, 0)


def test_a_plan_without_aof_says_what_a_redis_restart_loses() -> None:
    assert "lost" in plan_durability(DurabilityPolicy("auto"), REDIS_7_0).on_redis_loss
    assert "lost" in plan_durability(DurabilityPolicy("auto"), REDIS_7_0_REPLICA).on_redis_loss
    assert "lost" not in plan_durability(DurabilityPolicy("auto"), VALKEY_AOF).on_redis_loss


# --- real servers -----------------------------------------------------------------------------


class RedisServer:
    """A private ``redis-server`` (Debian's 7.0) on a free port; stopped, paused at will."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.port = free_port()
        self.directory = directory  # a replica's full sync writes an RDB file there
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--save", "", "--appendonly", "no", *self.args,
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        probe = self.client()

        async def answers() -> bool:
            try:
                return bool(await probe.ping())
            except RedisError:
                return False

        try:
            await eventually(answers, within=10)
        finally:
            await probe.aclose()

    def client(self) -> Redis:
        return Redis(port=self.port, socket_timeout=5)

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.resume()  # a paused server would not act on SIGTERM
            self.process.terminate()
            await self.process.wait()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(asyncpg_url(database_url))
    await ensure_outbox_tables(engine, SCHEMA)
    yield engine
    await engine.dispose()


@pytest.fixture
async def redis_7_0(tmp_path: Path) -> AsyncIterator[Redis]:
    server = RedisServer(tmp_path)
    await server.start()
    client = server.client()
    yield client
    await client.aclose()
    await server.stop()


@pytest.fixture
async def primary_and_replica(tmp_path: Path) -> AsyncIterator[tuple[Redis, RedisServer]]:
    (tmp_path / "primary").mkdir()
    (tmp_path / "replica").mkdir()
    primary = RedisServer(tmp_path / "primary", "--repl-diskless-sync-delay", "0")
    await primary.start()
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary.port))
    await replica.start()
    client = primary.client()

    async def replica_online() -> bool:
        return (await detect_persistence(client)).replicas == 1

    await eventually(replica_online, within=20)
    yield client, replica
    await client.aclose()
    await replica.stop()
    await primary.stop()


def _valkey(directory: Path) -> Iterator[Redis]:
    server = EmbeddedValkey(directory, durable=True)  # appendonly yes
    client = Redis.from_url(server.start(), socket_timeout=5)
    yield client
    server.stop()


@pytest.fixture(scope="module")
def valkey_aof(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A private Valkey 8.1 with AOF on, shared by this module's tests (keys are prefixed)."""
    yield from _valkey(tmp_path_factory.mktemp("valkey-aof"))


@pytest.fixture
def own_valkey_aof(tmp_path: Path) -> Iterator[Redis]:
    """A private Valkey 8.1 with AOF on, for a test that reconfigures it."""
    yield from _valkey(tmp_path)


async def command_calls(redis: Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def durability_logs(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [log for log in logs if log["event"] == "outbox.durability_in_force"]


def relay_for(
    engine: AsyncEngine,
    redis: Redis,
    stream_prefix: str,
    policy: DurabilityPolicy,
    registry: CollectorRegistry | None = None,
) -> OutboxRelay:
    return OutboxRelay(
        engine,
        redis,
        schema=SCHEMA,
        keys=StreamKeys(stream_prefix),
        durability=policy,
        registry=registry,
    )


async def test_redis_7_0_has_no_waitaof_so_auto_marks_published_without_waiting_and_says_so(
    engine: AsyncEngine, redis_7_0: Redis, stream_prefix: str
) -> None:
    assert not (await detect_persistence(redis_7_0)).waitaof
    registry = new_registry()
    relay = relay_for(engine, redis_7_0, stream_prefix, DurabilityPolicy("auto"), registry)
    await write(engine, [archived(uuid4()) for _ in range(3)])

    with capture_logs() as logs:
        assert await relay.publish_pending() == 3
        await write(engine, [archived(uuid4())])
        assert await relay.publish_pending() == 1

    [start] = durability_logs(logs)  # once, not per batch
    assert start["setting"] == "auto"
    assert start["in_force"] == "none"
    assert start["aof"] == "off"
    assert "lost" in str(start["on_redis_loss"])
    assert await command_calls(redis_7_0, "wait") == 0
    assert await unpublished(engine) == 0
    labels = {"schema": SCHEMA, "mode": "none", "aof": "off"}
    assert registry.get_sample_value("outbox_durability_in_force", labels) == 1


async def test_the_shared_server_durability_is_logged_at_relay_start(
    engine: AsyncEngine, redis_client: Redis, stream_prefix: str
) -> None:
    offered = await detect_persistence(redis_client)
    relay = relay_for(engine, redis_client, stream_prefix, DurabilityPolicy("auto"))
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(relay.run(stop))
        try:
            await eventually(lambda: durability_logs(logs))
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    [start] = durability_logs(logs)
    assert start["in_force"] == plan_durability(DurabilityPolicy("auto"), offered).mode


async def test_the_relay_states_its_durability_as_a_readiness_fact_once_it_knows_it(
    engine: AsyncEngine, redis_client: Redis, stream_prefix: str
) -> None:
    offered = await detect_persistence(redis_client)
    expected = plan_durability(DurabilityPolicy("auto"), offered)
    relay = relay_for(engine, redis_client, stream_prefix, DurabilityPolicy("auto"))
    assert relay.durability_in_force() is None  # nothing detected yet: no fact rather than a guess
    await write(engine, [archived(uuid4())])
    await relay.publish_pending()
    assert relay.durability_in_force() == f"{expected.mode}: {expected.on_redis_loss}"


async def test_aof_required_on_redis_7_0_publishes_nothing_and_keeps_the_rows(
    engine: AsyncEngine, redis_7_0: Redis, stream_prefix: str
) -> None:
    relay = relay_for(engine, redis_7_0, stream_prefix, DurabilityPolicy("aof"))
    await write(engine, [archived(uuid4()) for _ in range(2)])

    with pytest.raises(DurabilityUnavailableError, match="WAITAOF"):
        await relay.publish_pending()

    assert await unpublished(engine) == 2
    assert await read_stream(redis_7_0, StreamKeys(stream_prefix)) == []


async def test_on_valkey_with_aof_each_batch_waits_for_the_fsync_before_rows_are_marked(
    engine: AsyncEngine, valkey_aof: Redis, stream_prefix: str
) -> None:
    relay = relay_for(engine, valkey_aof, stream_prefix, DurabilityPolicy("auto"))
    events = [archived(uuid4()) for _ in range(5)]
    await write(engine, events)
    waits_before = await command_calls(valkey_aof, "waitaof")

    with capture_logs() as logs:
        assert await relay.publish_pending() == 5

    [start] = durability_logs(logs)
    assert (start["in_force"], start["aof"], start["wait"]) == ("aof", "on", "WAITAOF 1 0")
    # One WAITAOF for the batch (plus the one-off probe of the feature detection).
    assert await command_calls(valkey_aof, "waitaof") == waits_before + 2
    assert await unpublished(engine) == 0
    entries = await read_stream(valkey_aof, StreamKeys(stream_prefix))
    published = [body["event_id"] for body, _ in entries]
    assert published == [str(event.event_id) for event in events]


async def test_aof_turned_off_under_a_running_relay_fails_the_batch_then_auto_says_none(
    engine: AsyncEngine, own_valkey_aof: Redis, stream_prefix: str
) -> None:
    relay = relay_for(engine, own_valkey_aof, stream_prefix, DurabilityPolicy("auto"))
    await write(engine, [archived(uuid4())])
    assert await relay.publish_pending() == 1
    await own_valkey_aof.config_set("appendonly", "no")
    await write(engine, [archived(uuid4())])

    with capture_logs() as logs:
        with pytest.raises(RedisError):  # WAITAOF 1 refuses to run without AOF: not marked
            await relay.publish_pending()
        assert await unpublished(engine) == 1
        assert await relay.publish_pending() == 1  # detected again: nothing left to wait for

    [change] = durability_logs(logs)
    assert (change["in_force"], change["aof"]) == ("none", "off")
    assert await unpublished(engine) == 0


async def test_auto_on_redis_7_0_with_a_replica_waits_for_the_replica(
    engine: AsyncEngine, primary_and_replica: tuple[Redis, RedisServer], stream_prefix: str
) -> None:
    primary, _ = primary_and_replica
    relay = relay_for(engine, primary, stream_prefix, DurabilityPolicy("auto"))
    await write(engine, [archived(uuid4()) for _ in range(3)])

    with capture_logs() as logs:
        assert await relay.publish_pending() == 3

    [start] = durability_logs(logs)
    assert (start["in_force"], start["wait"]) == ("replicas", "WAIT 1")
    assert await command_calls(primary, "wait") == 1
    assert await unpublished(engine) == 0


async def test_rows_stay_unpublished_when_the_replica_does_not_acknowledge_in_time(
    engine: AsyncEngine, primary_and_replica: tuple[Redis, RedisServer], stream_prefix: str
) -> None:
    primary, replica = primary_and_replica
    registry = new_registry()
    relay = relay_for(
        engine, primary, stream_prefix, DurabilityPolicy("replicas", timeout_ms=200), registry
    )
    events = [archived(uuid4()) for _ in range(3)]
    await write(engine, events)

    replica.pause()
    try:
        with pytest.raises(DurabilityShortfallError):
            await relay.publish_pending()
        assert await unpublished(engine) == 3
        shortfalls = registry.get_sample_value(
            "outbox_durability_shortfalls_total", {"schema": SCHEMA}
        )
        assert shortfalls == 1
    finally:
        replica.resume()

    async def published_once_acknowledged() -> bool:
        try:
            return await relay.publish_pending() == 3  # sent again; consumers dedupe by event id
        except DurabilityShortfallError:  # the resumed replica is still catching up
            return False

    await eventually(published_once_acknowledged)
    assert await unpublished(engine) == 0
    entries = await read_stream(primary, StreamKeys(stream_prefix))
    published = [body["event_id"] for body, _ in entries]
    assert set(published) == {str(event.event_id) for event in events}


def test_the_docs_name_every_durability_setting_and_signal() -> None:
    docs = Path(__file__).parents[3] / "docs"
    for page in ("idempotency.md", "async-jobs.md"):
        text = (docs / page).read_text()
        for name in (
            "OUTBOX_DURABILITY",
            "OUTBOX_DURABILITY_REPLICAS",
            "OUTBOX_DURABILITY_TIMEOUT_MS",
            "outbox.durability_in_force",
            "outbox_durability_in_force",
            "outbox_durability_shortfalls_total",
            *(f"`{setting}`" for setting in get_args(DurabilitySetting)),
        ):
            assert name in text, f"{page} does not mention {name}"


async def test_a_wait_longer_than_the_publish_timeout_is_cut_to_fit_inside_it(
    engine: AsyncEngine, primary_and_replica: tuple[Redis, RedisServer], stream_prefix: str
) -> None:
    primary, replica = primary_and_replica
    relay = OutboxRelay(
        engine, primary, schema=SCHEMA, keys=StreamKeys(stream_prefix), publish_timeout=0.6,
        durability=DurabilityPolicy("replicas", timeout_ms=60_000),
    )  # fmt: skip
    await write(engine, [archived(uuid4())])

    replica.pause()
    try:
        # WAIT returns its count (0) after 0.3 s, rather than the pipeline being abandoned.
        with pytest.raises(DurabilityShortfallError, match="within 300 ms"):
            await relay.publish_pending()
    finally:
        replica.resume()
    assert await unpublished(engine) == 1
