"""Bulk archive: resolve a filter to `(note_id, version)` page by page; write parents and chunks.

One code path for `POST /v1/notes:bulk-archive` and the scheduled auto-archive command (run by the
worker), in the transaction of the caller's connection:

- The owner's unarchived notes are walked in id order (`ix_notes_owner_unarchived`), one page of
  at most `MAX_CHUNK_ITEMS` per query; full chunks (`MAX_CHUNK_ITEMS`, the last one less) are
  written as pages come in (each its outbox row on `jobs.bulk_archive_chunk.<priority>` and its
  `bulk_chunks` row, so a lost chunk can be counted as failed on the parent). Memory, and each
  stretch of work between two turns of the event loop, stay at about one page whatever the run's
  size.
- A note already carried by a chunk of a bulk parent that has not finished, and that chunk not
  lost, is left out: the same request sent again does not archive it twice. Each page is checked
  against those chunks' ids in its range, one pass per page; with no parent in flight (the usual
  case) nothing is checked.
- One bulk creation per owner at a time (`lock_owner`): a second one waits for the first to
  commit, then sees its chunks.
- The HTTP route refuses a filter matching more than its cap before it calls in
  (`routes/jobs.py`); the auto-archive instead splits its run into parents of at most that many
  (`create_bulk_archive_parts`).
"""

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from sqlalchemy import ColumnElement, func, insert, true, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select

from contracts import (
    JOBS_LIFECYCLE,
    MAX_CHUNK_ITEMS,
    TERMINAL_STATUSES,
    BulkArchiveChunk,
    ChunkItem,
    JobCompleted,
    JobStatus,
    JobType,
    Priority,
    job_stream,
    utc_now,
)
from notes_api.jobs import add_job, empty_progress, new_job
from notes_api.models import BulkChunk, Job, Note
from notes_api.outbox import PRODUCER, emit

UNFINISHED = [str(s) for s in JobStatus if s not in TERMINAL_STATUSES]
"""A job with one of these statuses is still in flight (`ix_jobs_bulk_unfinished` lists them)."""


def chunk_job_id(parent_id: UUID, chunk_no: int) -> UUID:
    return uuid5(parent_id, f"chunk:{chunk_no}")


def part_job_id(first_id: UUID, part: int) -> UUID:
    """The id of a split run's ``part``-th parent: the first keeps ``first_id``."""
    return first_id if part == 0 else uuid5(first_id, f"part:{part}")


@dataclass(frozen=True)
class BulkFilter:
    """Which unarchived notes a bulk archive takes.

    ``tag`` and/or not updated for ``not_updated_for_days`` before ``now``; neither means every
    unarchived note of the owner.
    """

    tag: str | None = None
    not_updated_for_days: int | None = None
    now: datetime = field(default_factory=utc_now)

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = [col(Note.archived_at).is_(None)]
        if self.tag is not None:
            conditions.append(col(Note.tags).contains([self.tag]))
        if self.not_updated_for_days is not None:
            cutoff = self.now - timedelta(days=self.not_updated_for_days)
            conditions.append(col(Note.updated_at) < cutoff)
        return conditions


def _owner_matches(owner: str, match: BulkFilter) -> list[ColumnElement[bool]]:
    return [col(Note.owner_id) == owner, *match.conditions()]


async def lock_owner(connection: AsyncConnection, owner: str) -> None:
    """Hold the owner's bulk-archive lock until the transaction ends (re-entrant)."""
    key = func.hashtextextended(f"notes.bulk_archive:{owner}", 0)
    await connection.execute(select(func.pg_advisory_xact_lock(key)))


async def matching_owners(connection: AsyncConnection, match: BulkFilter) -> list[str]:
    """Owners with at least one note the filter matches (for an every-owner auto-archive)."""
    statement = select(Note.owner_id).where(*match.conditions()).distinct()
    return list((await connection.execute(statement.order_by(col(Note.owner_id)))).scalars())


async def _parents_in_flight(connection: AsyncConnection, owner: str) -> list[UUID]:
    """The owner's bulk parents that have not finished (`ix_jobs_bulk_unfinished`)."""
    statement = select(col(Job.id)).where(
        col(Job.owner_id) == owner,
        col(Job.type) == str(JobType.BULK_ARCHIVE),
        col(Job.status).in_(UNFINISHED),
    )
    return list((await connection.execute(statement)).scalars())


async def _carried(
    connection: AsyncConnection, parents: list[UUID], after: UUID | None, last: UUID
) -> set[UUID]:
    """Notes in ``(after, last]`` that a chunk (not lost) of one of ``parents`` carries."""
    note_ids = col(BulkChunk.note_ids)
    note_id = func.unnest(note_ids).table_valued("note_id").render_derived()
    statement = (
        select(note_id.c.note_id)
        .select_from(BulkChunk)
        .join(note_id, true())
        .where(
            col(BulkChunk.parent_id).in_(parents),
            col(BulkChunk.lost_at).is_(None),
            note_ids[1] <= last,  # a chunk's ids are in id order: skip chunks out of range
            note_id.c.note_id <= last,
        )
    )
    if after is not None:
        statement = statement.where(
            note_ids[col(BulkChunk.item_count)] > after, note_id.c.note_id > after
        )
    return set((await connection.execute(statement)).scalars())


async def _pages(
    connection: AsyncConnection, owner: str, match: BulkFilter
) -> AsyncGenerator[list[ChunkItem], None]:
    """The matching notes in id order, a page of at most `MAX_CHUNK_ITEMS` at a time.

    Keyset pages (no OFFSET), without the notes a bulk parent in flight carries (a page may then
    come out short, or empty).
    """
    in_flight = await _parents_in_flight(connection, owner)
    after: UUID | None = None
    while True:
        statement = select(Note.id, Note.version).where(*_owner_matches(owner, match))
        if after is not None:
            statement = statement.where(col(Note.id) > after)
        statement = statement.order_by(col(Note.id)).limit(MAX_CHUNK_ITEMS)
        rows = (await connection.execute(statement)).all()
        if not rows:
            return
        last = rows[-1][0]
        # Per page, not per note: one pass over the in-flight chunks' ids in this page's range.
        carried = await _carried(connection, in_flight, after, last) if in_flight else set()
        yield [ChunkItem(note_id=id_, version=v) for id_, v in rows if id_ not in carried]
        after = last


async def count_matching(
    connection: AsyncConnection, owner: str, match: BulkFilter, *, up_to: int
) -> int:
    """How many of the owner's notes the filter would resolve now, up to ``up_to``.

    Counting stops there: enough to tell a cap was passed without reading the rest. With no bulk
    parent in flight it is one statement; otherwise the pages are walked (ids only are kept).
    """
    if not await _parents_in_flight(connection, owner):
        matching = select(col(Note.id)).where(*_owner_matches(owner, match)).limit(up_to)
        return int(
            await connection.scalar(select(func.count()).select_from(matching.subquery())) or 0
        )
    found = 0
    async with aclosing(_pages(connection, owner, match)) as pages:
        async for page in pages:
            found += len(page)
            if found >= up_to:
                return up_to
    return found


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
) -> list[Job]:
    """Walk the matching notes into full chunks, in parents of at most ``items_per_parent``."""
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

    async with aclosing(_pages(connection, owner, match)) as pages:
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


async def create_bulk_archive_parts(
    connection: AsyncConnection,
    owner: str,
    match: BulkFilter,
    *,
    first_id: UUID,
    items_per_parent: int,
    priority: Priority = Priority.LOW,
) -> list[Job]:
    """Every matching note, in parents of at most ``items_per_parent``; none if nothing matches.

    The first parent's id is ``first_id``, the others' derive from it (`part_job_id`).
    """
    return await _write_parts(
        connection, owner, match, first_id=first_id, priority=priority,
        items_per_parent=items_per_parent, max_parts=None, keep_empty=False,
    )  # fmt: skip
