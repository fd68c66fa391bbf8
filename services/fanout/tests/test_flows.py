"""Integration: fanout's worker and outbox relay on real Redis and PostgreSQL."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import ArchiveRequested, Priority, bulk_child_job_id, job_stream
from contracts.streams import NOTES_CREATED, NOTES_UPDATED
from fanout.tables import SCHEMA
from servicekit import TransientError
from servicekit.jobs import Route, enqueue, publish
from servicekit.operations import list_dead_letters
from servicekit.testing import eventually

from .conftest import Fanout, bulk_chunk, note_created, note_updated, running_fanout

LOW_ARCHIVE = job_stream("archive", Priority.LOW)


async def test_a_chunk_becomes_its_archive_jobs_on_the_low_stream_once(fanout: Fanout) -> None:
    chunk = bulk_chunk(1000)
    await enqueue(fanout.redis, fanout.keys, chunk, Priority.LOW)

    async def published() -> list[ArchiveRequested]:
        children = await fanout.events(LOW_ARCHIVE, ArchiveRequested)
        return children if len(children) >= 1000 else []

    children = await eventually(published, within=60)
    expected = {bulk_child_job_id(chunk.parent_job_id, i.note_id) for i in chunk.items}
    assert Counter(c.job_id for c in children) == Counter(expected)
    assert {c.parent_job_id for c in children} == {chunk.parent_job_id}

    await enqueue(fanout.redis, fanout.keys, chunk, Priority.LOW)  # the same chunk delivered again
    chunk_stream = fanout.keys.stream(job_stream("bulk_archive_chunk", Priority.LOW))

    async def both_handled() -> bool:
        [group] = await fanout.redis.xinfo_groups(chunk_stream)
        return bool(group["entries-read"] == 2 and group["pending"] == 0)

    await eventually(both_handled)
    assert len(await fanout.events(LOW_ARCHIVE, ArchiveRequested)) == 1000


async def _audited(engine: AsyncEngine, owner: str) -> int:
    async with engine.connect() as connection:
        found = await connection.scalar(
            text(f"SELECT count(*) FROM {SCHEMA}.note_changes WHERE owner_id = :owner"),
            {"owner": owner},
        )
    return int(found or 0)


async def _audit_time(
    engine: AsyncEngine, redis_url: str, prefix: str, redis: Redis, owner: str, *, fail: bool
) -> float:
    """Seconds the audit handler takes to record 100 note events; ``fail``: activity fails."""

    async def always_failing(change: object) -> None:
        raise TransientError("activity store unavailable")

    def inject(route: Route) -> Route:
        if fail and route.name == "count_owner_activity":
            options = dataclasses.replace(route.options, max_attempts=3)
            return dataclasses.replace(route, handler=always_failing, options=options)
        return route

    async with running_fanout(engine, redis_url, prefix, redis, adjust=inject) as fanout:
        notes = [note_created(owner_id=owner) for _ in range(50)]
        started = time.monotonic()
        for note in notes:
            await publish(redis, fanout.keys, NOTES_CREATED, note)
            await publish(redis, fanout.keys, NOTES_UPDATED, note_updated(note.note_id, 2, owner))
        await eventually(lambda: _wanted(engine, owner, 100), within=60)
        elapsed = time.monotonic() - started
        if fail:  # the failing handler was really failing all along, into its own dead letters
            async with engine.connect() as connection:
                counted = await connection.scalar(
                    text(f"SELECT count(*) FROM {SCHEMA}.owner_activity WHERE owner_id = :o"),
                    {"o": owner},
                )
            assert counted == 0

            async def dead_lettered() -> bool:
                letters = await list_dead_letters(redis, fanout.keys, NOTES_CREATED)
                return len(letters) >= 1

            await eventually(dead_lettered, within=30)
    return elapsed


async def _wanted(engine: AsyncEngine, owner: str, count: int) -> bool:
    return await _audited(engine, owner) >= count


async def test_a_failing_handler_does_not_slow_the_other_one(
    engine: AsyncEngine, redis_url: str, stream_prefix: str, redis_client: Redis
) -> None:
    healthy = await _audit_time(
        engine, redis_url, stream_prefix + "a:", redis_client, "healthy", fail=False
    )
    failing = await _audit_time(
        engine, redis_url, stream_prefix + "b:", redis_client, "failing", fail=True
    )
    # Generous for a busy shared machine: what matters is not waiting on the other's retries.
    assert failing < 3 * healthy + 2.0, (healthy, failing)
