"""Each of the store's scripts touches one Redis Cluster slot: the stream it publishes to."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from contracts import ArchiveRequested, JobType
from scheduler.store import SchedulerStore, encode_entry
from servicekit import StreamKeys

from .conftest import schedule, whole_second


class RecordingRedis(Redis):
    """A real client that keeps the keys of every script it sends."""

    scripts: list[list[str]]

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if str(args[0]).upper() in ("EVALSHA", "EVAL"):
            count = int(args[2])
            self.scripts.append([_text(k) for k in args[3 : 3 + count]])
        return await super().execute_command(*args, **options)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.mark.single_redis(
    "records through the one-server client; on a cluster every scheduler test runs these "
    "scripts, and the cluster refuses one whose keys span slots"
)
async def test_every_script_call_names_keys_of_one_slot(redis_url: str, stream_prefix: str) -> None:
    redis = RecordingRedis.from_url(redis_url)
    redis.scripts = []
    keys = StreamKeys(stream_prefix)
    store = SchedulerStore(redis, keys)
    s = schedule()
    tick = whole_second(await store.now())
    command = s.command(tick, producer="scheduler")
    await store.decide(s.stream, s.name, tick, fire_id=command.event_id, mode="fire",
                       overlap="skip", command=command)  # fmt: skip
    await store.finish_run(s.stream, s.name, command.event_id)
    request = ArchiveRequested(producer="t", owner_id="a", job_id=uuid4(), note_id=uuid4(),
                               version=1)  # fmt: skip
    await store.hold(JobType.ARCHIVE, request.job_id, tick - timedelta(seconds=1),
                     "jobs.archive.low", encode_entry(request))  # fmt: skip
    await store.release_due(JobType.ARCHIVE)
    await store.cancel(JobType.COPY, uuid4())
    try:
        # Five calls (a script not yet cached on the server is sent again after NOSCRIPT).
        assert len({tuple(named) for named in redis.scripts}) == 5
        for named in redis.scripts:
            assert len({key_slot(k.encode()) for k in named}) == 1, named
        # The release script declares every key it writes: the "gone" set among them.
        [release] = {tuple(named) for named in redis.scripts if len(named) == 6}
        assert release[2].endswith(":delayed:gone"), release
    finally:
        async for key in redis.scan_iter(match=f"*{stream_prefix}*"):
            await redis.unlink(key)
        await redis.aclose()
