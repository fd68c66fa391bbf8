"""Bulk archive: write the parent jobs and their chunks for the notes `bulk_selection` selects.

One code path for `POST /v1/notes:bulk-archive` and the scheduled auto-archive command (run by the
worker), in the transaction of the caller's connection:

- Full chunks (`MAX_CHUNK_ITEMS`, the last one less) are written as the selection's pages come in:
  each its outbox row on `jobs.bulk_archive_chunk.<priority>` (saying the children's priority)
  and its `bulk_chunks` row, so a lost chunk can be counted as failed on the parent. The event
  loop gets a turn between pages; memory stays at about two pages whatever the run's size.
- The parent is written before its chunks and gets its total at the end; one with nothing to do
  (HTTP only: a tick makes no empty parents) succeeds at once and says so.
- The HTTP route refuses a filter matching more than its cap before it calls in
  (`routes/jobs.py`); the auto-archive instead splits its run into parents of at most that many,
  each parent in a transaction of its own (`write_auto_archive_part`), so a large owner never
  holds one huge transaction: part k+1 starts after part k's last note (notes walk in id order),
  and a part already written (a redelivered tick, a retry after a failure) is read back, not
  written again.
"""

import asyncio
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid5

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select

from contracts import (
    JOBS_LIFECYCLE,
    MAX_CHUNK_ITEMS,
    BulkArchiveChunk,
    ChunkItem,
    JobCompleted,
    JobStatus,
    JobType,
    Priority,
    job_stream,
)
from notes_api.bulk_selection import BulkFilter, lock_owner, matching_pages
from notes_api.jobs import add_job, empty_progress, new_job
from notes_api.models import BulkChunk, Job
from notes_api.outbox import PRODUCER, emit


def chunk_job_id(parent_id: UUID, chunk_no: int) -> UUID:
    return uuid5(parent_id, f"chunk:{chunk_no}")


def part_job_id(first_id: UUID, part: int) -> UUID:
    """The id of a split run's ``part``-th parent: the first keeps ``first_id``."""
    return first_id if part == 0 else uuid5(first_id, f"part:{part}")


class _Parent:
    """One parent job being written: its row first, then its chunks, then its total."""

    def __init__(
        self, connection: AsyncConnection, owner: str, job_id: UUID, priority: Priority
    ) -> None:
        self._connection, self._priority = connection, priority
        self.job = new_job(
            owner, JobType.BULK_ARCHIVE, JobStatus.ACCEPTED, job_id=job_id,
            progress=empty_progress(0), priority=str(priority),
        )  # fmt: skip
        self.total = 0
        self._chunks = 0

    async def start(self) -> None:
        await add_job(self._connection, self.job)

    async def add_chunk(self, items: list[ChunkItem]) -> None:
        chunk_no, parent_id = self._chunks, self.job.id
        chunk = BulkArchiveChunk(
            producer=PRODUCER, owner_id=self.job.owner_id, job_id=chunk_job_id(parent_id, chunk_no),
            parent_job_id=parent_id, chunk_no=chunk_no, items=items,
            child_priority=self._priority,
        )  # fmt: skip
        stream = job_stream(JobType.BULK_ARCHIVE_CHUNK, self._priority)
        await emit(self._connection, chunk, stream=stream, aggregate_id=parent_id)
        record: dict[str, Any] = {
            "id": chunk.job_id, "parent_id": parent_id, "chunk_no": chunk_no,
            "item_count": len(items), "note_ids": [item.note_id for item in items], "lost_at": None,
        }  # fmt: skip
        await self._connection.execute(insert(BulkChunk), record)
        self._chunks += 1
        self.total += len(items)

    async def finish(self) -> Job:
        """Write the total; a parent with nothing to do succeeds at once, and says so."""
        progress = empty_progress(self.total)
        status = JobStatus.ACCEPTED if self.total else JobStatus.SUCCEEDED
        await self._connection.execute(
            update(Job)
            .where(col(Job.id) == self.job.id)
            .values(progress=progress, status=str(status))
        )
        self.job.progress, self.job.status = progress, str(status)
        if not self.total:
            completed = JobCompleted(
                producer=PRODUCER, job_id=self.job.id, job_type=self.job.type,
                trace_id=self.job.trace_id, total=0, succeeded=0, failed=0, skipped=0,
                status=JobStatus.SUCCEEDED,
            )  # fmt: skip
            await emit(self._connection, completed, stream=JOBS_LIFECYCLE, aggregate_id=self.job.id)
        return self.job


async def _write_parts(
    connection: AsyncConnection,
    owner: str,
    match: BulkFilter,
    *,
    first_id: UUID,
    priority: Priority,
    items_per_parent: int,
    max_parts: int | None,
    keep_empty: bool,
    after: UUID | None = None,
) -> list[Job]:
    """Walk the matching notes after note ``after`` into parents of ``items_per_parent`` at most."""
    await lock_owner(connection, owner)
    jobs: list[Job] = []
    parent: _Parent | None = None
    waiting: list[ChunkItem] = []  # at most two pages: what the next chunk is taken from

    async def write_ready(*, last: bool) -> bool:
        """Write every full chunk (every chunk, when ``last``); False once no more parents fit."""
        nonlocal parent, waiting
        while waiting:
            room = items_per_parent - (parent.total if parent else 0)
            size = min(MAX_CHUNK_ITEMS, room)
            if len(waiting) < size and not last:
                return True
            if parent is None:
                parent = _Parent(connection, owner, part_job_id(first_id, len(jobs)), priority)
                await parent.start()
            await parent.add_chunk(waiting[:size])
            waiting = waiting[size:]
            if parent.total >= items_per_parent:
                jobs.append(await parent.finish())
                parent = None
                if max_parts is not None and len(jobs) >= max_parts:
                    return False
        return True

    async with aclosing(matching_pages(connection, owner, match, after=after)) as pages:
        async for page in pages:
            waiting += page
            if not await write_ready(last=False):
                return jobs
            # The statements above awaited the database, but that need not have let the loop's
            # other tasks run for long: give every other request a turn between two pages.
            await asyncio.sleep(0)
    await write_ready(last=True)
    if parent is None and keep_empty and not jobs:
        parent = _Parent(connection, owner, first_id, priority)
        await parent.start()
    if parent is not None:
        jobs.append(await parent.finish())
    return jobs


async def create_bulk_archive(
    connection: AsyncConnection,
    owner: str,
    match: BulkFilter,
    *,
    job_id: UUID,
    priority: Priority,
    max_items: int,
) -> Job:
    """One parent of at most ``max_items`` notes (none matching: it succeeds at once)."""
    [job] = await _write_parts(
        connection, owner, match, first_id=job_id, priority=priority,
        items_per_parent=max_items, max_parts=1, keep_empty=True,
    )  # fmt: skip
    return job


@dataclass(frozen=True)
class Part:
    """One parent of a split auto-archive run, as written now or found written before."""

    job_id: UUID
    total: int
    last_note_id: UUID
    """The part's last note in id order: where the next part's walk starts."""
    written_now: bool


async def write_auto_archive_part(
    connection: AsyncConnection,
    owner: str,
    match: BulkFilter,
    *,
    job_id: UUID,
    after: UUID | None,
    items_per_parent: int,
    priority: Priority = Priority.LOW,
) -> Part | None:
    """Part ``job_id`` of an owner's run; None when no note is left (no empty parent).

    The part takes the matching notes after note ``after``, at most ``items_per_parent``.

    Idempotent: under the owner's lock, a part already written is read back (its total and last
    note) instead. The notes a parent in flight carries are left out as for any bulk archive.
    """
    await lock_owner(connection, owner)
    progress: dict[str, int] | None = (
        await connection.execute(select(col(Job.progress)).where(col(Job.id) == job_id))
    ).scalar_one_or_none()
    written_now = progress is None
    if progress is None:
        jobs = await _write_parts(
            connection, owner, match, first_id=job_id, priority=priority,
            items_per_parent=items_per_parent, max_parts=1, keep_empty=False, after=after,
        )  # fmt: skip
        if not jobs:
            return None
        progress = jobs[0].progress
    assert progress is not None  # a bulk parent always has its counts
    last_chunk = select(col(BulkChunk.note_ids)[col(BulkChunk.item_count)]).where(
        col(BulkChunk.parent_id) == job_id
    )
    last = (
        await connection.execute(last_chunk.order_by(col(BulkChunk.chunk_no).desc()).limit(1))
    ).scalar_one()
    return Part(job_id, int(progress["total"]), last, written_now=written_now)
