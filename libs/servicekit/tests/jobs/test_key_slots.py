"""Every multi-key command and Lua script the runtime sends touches one Redis Cluster slot.

A real client subclass records each command a worker, the operator functions and the publishers
send while entries succeed, retry, dead-letter, are redriven, skipped, reclaimed from a dead
consumer, taken back by a restarted one and paused; then redis-py's ``key_slot`` checks them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.crc import key_slot

from contracts import ArchiveRequested, JobType, Priority, job_streams
from servicekit import PermanentError, SkipJob, TransientError
from servicekit.jobs import JobRouter, enqueue
from servicekit.keys import StreamKeys
from servicekit.operations import list_dead_letters, pause_group, redrive_dead_letters, resume_group
from servicekit.testing import eventually

from .conftest import Harness, archive_request, fast

Command = tuple[Any, ...]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def keys_of(command: Command) -> list[str]:
    """The keys of a command that may name several (others name one at most)."""
    name = _text(command[0]).upper()
    args = [_text(a) for a in command[1:]]
    if name in ("EVALSHA", "EVAL"):
        return args[2 : 2 + int(args[1])]
    if name in ("XREADGROUP", "XREAD"):
        streams = args[[a.upper() for a in args].index("STREAMS") + 1 :]
        return streams[: len(streams) // 2]
    if name in ("DEL", "UNLINK", "EXISTS", "MGET", "TOUCH", "WATCH"):
        return args
    if name in ("RENAME", "RENAMENX", "COPY", "LMOVE", "SMOVE"):
        return args[:2]
    return []


class RecordingPipeline(Pipeline):
    """Records each queued command; a transaction is recorded as one multi-key unit."""

    def __init__(self, *args: Any, record: list[Command], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record = record
        self.queued: list[Command] = []

    def pipeline_execute_command(self, *args: Any, **options: Any) -> Any:
        self.queued.append(args)
        return super().pipeline_execute_command(*args, **options)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.is_transaction:
            self.record.append(("MULTI", *[k for c in self.queued for k in _all_keys(c)]))
        else:
            self.record.extend(self.queued)
        self.queued = []
        return await super().execute(raise_on_error)


def _all_keys(command: Command) -> list[str]:
    return keys_of(command) or ([_text(command[1])] if len(command) > 1 else [])


class RecordingRedis(Redis):
    """A real client that remembers every command it sends."""

    record: list[Command]

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.record.append(args)
        return await super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return RecordingPipeline(
            self.connection_pool,
            self.response_callbacks,
            transaction,
            shard_hint,
            record=self.record,
        )


def crossing(commands: Sequence[Command]) -> list[tuple[str, list[str]]]:
    """Commands whose keys lie in more than one slot."""
    out = []
    for command in commands:
        keys = keys_of(command) if _text(command[0]).upper() != "MULTI" else list(command[1:])
        if len({key_slot(k.encode()) for k in keys}) > 1:
            out.append((_text(command[0]), keys))
    return out


def test_a_job_types_streams_dead_letters_and_group_keys_share_one_slot() -> None:
    keys = StreamKeys("p:")
    names = job_streams(JobType.ARCHIVE)
    derived = [
        k
        for n in names
        for k in (
            keys.stream(n),
            keys.dead_letters(n),
            keys.retry(n, "a"),
            keys.attempts(n, "b"),
            keys.paused(n, "a"),
        )
    ]
    assert len({key_slot(k.encode()) for k in derived}) == 1
    assert keys.stream(names[0]) == "{p:jobs.archive}.critical"
    assert keys.retry(names[0], "a") != keys.retry(names[0], "b")
    # Other job types and event streams hash elsewhere: a family is the unit, not the deployment.
    assert keys.stream(job_streams(JobType.COPY)[0]) == "{p:jobs.copy}.critical"
    assert keys.stream("notes.created.v1") == "{p:notes.created.v1}"


@pytest.mark.single_redis(
    "records through the one-server client; on a cluster every runtime test sends these commands, "
    "and the cluster refuses one whose keys span slots"
)
async def test_every_multi_key_command_of_the_runtime_touches_one_slot(
    harness: Harness, redis_url: str
) -> None:
    router = JobRouter(group="g")
    failed_once: set[int] = set()
    healed = asyncio.Event()

    @router.job(ArchiveRequested, **fast(visibility_timeout=0.5))
    async def archive_note(request: ArchiveRequested) -> None:
        kind = request.version % 4
        if kind == 1 and request.version not in failed_once:
            failed_once.add(request.version)
            raise TransientError("retry me")
        if kind == 2 and not healed.is_set():
            raise PermanentError("dead letter me")
        if kind == 3:
            raise SkipJob("skip me")

    redis = RecordingRedis.from_url(redis_url)
    redis.record = []
    keys = harness.keys
    streams = [keys.stream(s) for s in job_streams(JobType.ARCHIVE)]
    try:
        for n, priority in enumerate([*Priority] * 8):
            await enqueue(redis, keys, archive_request(n), priority)
        # One entry held by a dead consumer (reclaimed), one by this consumer's last incarnation.
        await redis.xgroup_create(streams[0], "g", id="0")
        await redis.xreadgroup("g", "dead", {streams[0]: ">"}, count=1)
        await redis.xreadgroup("g", "c1", {streams[0]: ">"}, count=1)
        async with harness.running(harness.worker(router, redis=redis)):
            await eventually(lambda: _settled(redis, streams), within=30)
            await pause_group(redis, keys, job_streams(JobType.ARCHIVE)[1], "g")
            await resume_group(redis, keys, job_streams(JobType.ARCHIVE)[1], "g")
            healed.set()
            for name in job_streams(JobType.ARCHIVE):
                await redrive_dead_letters(redis, keys, name)
            await eventually(lambda: _settled(redis, streams, dead_letters=False), within=30)
            assert [
                letter
                for name in job_streams(JobType.ARCHIVE)
                for letter in await list_dead_letters(redis, keys, name)
            ] == []
    finally:
        await redis.aclose()
    commands = {_text(c[0]).upper() for c in redis.record}
    multi = [c for c in redis.record if len(keys_of(c)) > 1]
    assert {"EVALSHA", "XREADGROUP"} <= commands
    assert any(_text(c[0]).upper() == "XREADGROUP" and len(keys_of(c)) == 3 for c in multi)
    assert any(_text(c[0]).upper() == "EVALSHA" and len(keys_of(c)) == 3 for c in multi)
    # The check itself sees a crossing when there is one.
    assert crossing([("XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", "b", ">", ">")])
    assert crossing(redis.record) == []


async def _settled(redis: Redis, streams: list[str], *, dead_letters: bool = True) -> bool:
    pending = sum([int((await redis.xpending(k, "g"))["pending"]) for k in streams])
    letters = sum([int(await redis.xlen(f"{k}.dlq")) for k in streams])
    return pending == 0 and (letters > 0) == dead_letters
