"""Retention of job data in schema `notes`: finished jobs, their children and bulk chunks.

A job answers `GET /v1/jobs/{id}` for `JOB_RETENTION_DAYS` after it finished (its last update),
then its row is deleted: a finished parent takes its children and its `bulk_chunks` rows with it,
and a finished child goes on its own even while its parent runs (a bulk of 10,000 notes adds
10,000 child rows; the parent keeps their count in `progress`). A job that has not finished is
never purged here: finishing stale jobs is the reconciler's work.
"""

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from contracts import TERMINAL_STATUSES
from notes_api.models import BulkChunk, Job
from servicekit import BackgroundLoop, get_logger

_TERMINAL = [str(s) for s in TERMINAL_STATUSES]
# One purger at a time across worker replicas: two would only wait on each other's row locks.
_PURGE_LOCK = 0x6E6F7465735F6A62  # "notes_jb"
_log = get_logger("notes_api.worker")


@dataclass(frozen=True)
class PurgedJobs:
    jobs: int = 0
    chunks: int = 0

    def __add__(self, other: "PurgedJobs") -> "PurgedJobs":
        return PurgedJobs(self.jobs + other.jobs, self.chunks + other.chunks)


async def purge_finished_jobs(
    engine: AsyncEngine, older_than: timedelta, *, batch_size: int = 1000
) -> PurgedJobs:
    """Delete jobs finished more than ``older_than`` ago, with their children and chunks.

    Works in batches of ``batch_size`` jobs, one short transaction each, so the worker's
    handlers never wait long on a purge. Returns what was deleted (nothing if another replica
    is purging).
    """
    purged = PurgedJobs()
    while True:
        batch = await _purge_batch(engine, older_than, batch_size)
        if batch is None:
            return purged
        purged += batch
        if batch.jobs == 0:
            return purged


async def _purge_batch(
    engine: AsyncEngine, older_than: timedelta, batch_size: int
) -> PurgedJobs | None:
    async with engine.begin() as connection:
        if not await connection.scalar(select(func.pg_try_advisory_xact_lock(_PURGE_LOCK))):
            return None
        # No index on updated_at, on purpose: every status update changes it, and an index on it
        # would make those updates non-HOT; a scan once an hour costs less than that.
        expired = [
            row.id
            for row in await connection.execute(
                select(Job.id)
                .where(
                    col(Job.status).in_(_TERMINAL), col(Job.updated_at) < func.now() - older_than
                )
                .limit(batch_size)
            )
        ]
        if not expired:
            return PurgedJobs()
        chunks = await connection.execute(
            delete(BulkChunk).where(col(BulkChunk.parent_id).in_(expired))
        )
        # Chunks, then children, then parents: the order the handlers lock them in (the store's
        # `lose_chunk`: chunk, children, parent; a result: child, parent), so a purge and a late
        # event wait for each other instead of deadlocking.
        children = await connection.execute(delete(Job).where(col(Job.parent_id).in_(expired)))
        jobs = await connection.execute(delete(Job).where(col(Job.id).in_(expired)))
        return PurgedJobs(children.rowcount + jobs.rowcount, chunks.rowcount)


def job_retention(
    engine: AsyncEngine, keep_for: timedelta, *, every: float = 3600.0
) -> BackgroundLoop:
    """A loop purging finished jobs older than ``keep_for`` every ``every`` s, first at start."""

    async def purge_old_jobs(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                purged = await purge_finished_jobs(engine, keep_for)
                if purged.jobs or purged.chunks:
                    _log.info("jobs.purged", jobs=purged.jobs, chunks=purged.chunks)
            except Exception as exc:  # a database outage must not stop the worker
                _log.warning("jobs.purge_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    return purge_old_jobs
