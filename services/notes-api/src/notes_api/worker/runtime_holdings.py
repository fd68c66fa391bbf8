"""Where a job's request, or an event about it, still waits: outbox, job streams, our own backlog.

A job row does not record its stream entry (priority, entry id), so the reconciler asks by job id,
for a bounded batch of stale jobs at a time, in the order a request travels: notes-api's outbox
(not yet published), then each group reading the job type's three streams (unread, pending,
retrying, dead-lettered), then this worker's own unread and pending results and lifecycle events.
Looking in that order, a request that moves on while we look is found in a later place.
"""

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import (
    CONSUMER_GROUPS,
    JOBS_LIFECYCLE,
    NOTES_ARCHIVED,
    NOTES_COPY_COMPLETED,
    job_streams,
)
from notes_api.settings import SCHEMA
from notes_api.worker.store import GROUP
from servicekit import StreamKeys
from servicekit.inbox import tables_for_schema
from servicekit.jobs import HeldEntry, Holding, locate_jobs
from servicekit.outbox import outbox_table
from servicekit.redis_client import RedisClient

_OUTBOX = outbox_table(tables_for_schema(SCHEMA))
_OWN_GROUP = GROUP
# What this worker consumes about a job: its result, and the runtime's lifecycle events.
_OWN_STREAMS = (NOTES_ARCHIVED, NOTES_COPY_COMPLETED, JOBS_LIFECYCLE)


@dataclass(frozen=True, slots=True)
class Holdings:
    """What the platform still holds for a batch of jobs."""

    live: dict[str, str]
    """Job id → where it waits (``outbox``, ``<stream>/<group>: pending``, ...): leave it alone."""
    dead_letters: dict[str, HeldEntry]
    """Job id → its dead letter, for jobs held nowhere live."""


async def _unpublished(engine: AsyncEngine, job_ids: Collection[str]) -> set[str]:
    job_id = _OUTBOX.c.payload["job_id"].astext
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(func.distinct(job_id)).where(
                _OUTBOX.c.published_at.is_(None), job_id.in_(list(job_ids))
            )
        )
        return {row[0] for row in rows}


def _request_groups(job_type: str) -> Iterable[tuple[str, str]]:
    streams = set(job_streams(job_type))
    return ((g.stream, g.group) for g in CONSUMER_GROUPS if g.stream in streams)


async def find_holdings(
    engine: AsyncEngine,
    redis: RedisClient,
    keys: StreamKeys,
    job_type: str,
    job_ids: Collection[UUID],
) -> Holdings:
    """Return where the platform holds each of ``job_ids`` (all of one ``job_type``)."""
    wanted = {str(job_id) for job_id in job_ids}
    live = dict.fromkeys(await _unpublished(engine, wanted), "outbox")
    dead_letters: dict[str, HeldEntry] = {}
    for stream, group in _request_groups(job_type):
        for job_id, held in (await locate_jobs(redis, keys, stream, group, wanted)).items():
            if held.holding is Holding.DEAD_LETTERED:
                dead_letters.setdefault(job_id, held)
            else:
                live.setdefault(job_id, f"{stream}/{group}: {held.holding}")
    for stream in _OWN_STREAMS:
        for job_id, held in (await locate_jobs(redis, keys, stream, _OWN_GROUP, wanted)).items():
            if held.holding is not Holding.DEAD_LETTERED:  # our own dead letters never apply
                live.setdefault(job_id, f"{stream}/{_OWN_GROUP}: {held.holding}")
    return Holdings(live, {k: v for k, v in dead_letters.items() if k not in live})
