"""Bulk archive: resolve a filter to `(note_id, version)` and create the parent job and its chunks.

One code path for `POST /v1/notes:bulk-archive` and the scheduled auto-archive command (run by the
worker): the filter is resolved in the transaction that creates the parent job, the chunks
(≤ `MAX_CHUNK_ITEMS` items) go to the outbox on `jobs.bulk_archive_chunk.low`, and each chunk's
notes are recorded in `bulk_chunks` so a lost chunk can be counted as failed on the parent.

Each function takes the connection of the transaction it writes in.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from sqlalchemy import ColumnElement, insert
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
    utc_now,
)
from notes_api.jobs import add_job, empty_progress, new_job
from notes_api.models import BulkChunk, Job, Note
from notes_api.outbox import PRODUCER, emit

CHUNK_STREAM = job_stream(JobType.BULK_ARCHIVE_CHUNK, Priority.LOW)


def chunk_job_id(parent_id: UUID, chunk_no: int) -> UUID:
    return uuid5(parent_id, f"chunk:{chunk_no}")


def _filters(
    tag: str | None, not_updated_for_days: int | None, now: datetime | None
) -> list[ColumnElement[bool]]:
    """Unarchived notes with ``tag``, not updated for N days before ``now``."""
    filters: list[ColumnElement[bool]] = [col(Note.archived_at).is_(None)]
    if tag is not None:
        filters.append(col(Note.tags).contains([tag]))
    if not_updated_for_days is not None:
        cutoff = (now or utc_now()) - timedelta(days=not_updated_for_days)
        filters.append(col(Note.updated_at) < cutoff)
    return filters


async def matching_owners(
    connection: AsyncConnection, tag: str | None, not_updated_for_days: int | None, now: datetime
) -> list[str]:
    """Owners with at least one note the filter matches (for an every-owner auto-archive)."""
    statement = select(Note.owner_id).where(*_filters(tag, not_updated_for_days, now)).distinct()
    return list((await connection.execute(statement.order_by(col(Note.owner_id)))).scalars())


async def resolve_items(
    connection: AsyncConnection,
    owner: str,
    tag: str | None,
    not_updated_for_days: int | None,
    *,
    now: datetime | None = None,
) -> list[ChunkItem]:
    """The owner's matching notes as `(note_id, version)`, in id order (``now``: cutoff base)."""
    statement = select(Note.id, Note.version).where(
        Note.owner_id == owner, *_filters(tag, not_updated_for_days, now)
    )
    rows = await connection.execute(statement.order_by(col(Note.id)))
    return [ChunkItem(note_id=note_id, version=version) for note_id, version in rows]


async def create_parent(
    connection: AsyncConnection,
    owner: str,
    items: Sequence[ChunkItem],
    *,
    job_id: UUID | None = None,
) -> Job:
    """Write the parent job, its chunks (outbox and `bulk_chunks`); empty → succeeded at once."""
    status = JobStatus.ACCEPTED if items else JobStatus.SUCCEEDED
    job = new_job(
        owner, JobType.BULK_ARCHIVE, status, job_id=job_id, progress=empty_progress(len(items))
    )
    await add_job(connection, job)
    records: list[dict[str, Any]] = []
    for chunk_no, start in enumerate(range(0, len(items), MAX_CHUNK_ITEMS)):
        chunk_items = list(items[start : start + MAX_CHUNK_ITEMS])
        chunk = BulkArchiveChunk(
            producer=PRODUCER, owner_id=owner, job_id=chunk_job_id(job.id, chunk_no),
            parent_job_id=job.id, chunk_no=chunk_no, items=chunk_items,
        )  # fmt: skip
        records.append(
            BulkChunk(
                id=chunk.job_id, parent_id=job.id, chunk_no=chunk_no, item_count=len(chunk_items),
                note_ids=[item.note_id for item in chunk_items], lost_at=None,
            ).model_dump()
        )  # fmt: skip
        await emit(connection, chunk, stream=CHUNK_STREAM, aggregate_id=job.id)
    if records:
        await connection.execute(insert(BulkChunk), records)
    if not items:  # nothing to do: complete at once, and say so like any parent
        completed = JobCompleted(
            producer=PRODUCER, job_id=job.id, job_type=job.type, trace_id=job.trace_id,
            total=0, succeeded=0, failed=0, skipped=0, status=JobStatus.SUCCEEDED,
        )  # fmt: skip
        await emit(connection, completed, stream=JOBS_LIFECYCLE, aggregate_id=job.id)
    return job


async def create_bulk_archive(
    connection: AsyncConnection,
    owner: str,
    tag: str | None,
    not_updated_for_days: int | None,
    *,
    now: datetime | None = None,
    job_id: UUID | None = None,
) -> Job:
    """Resolve the filter now; create the parent and its chunks in ``connection``'s transaction."""
    items = await resolve_items(connection, owner, tag, not_updated_for_days, now=now)
    return await create_parent(connection, owner, items, job_id=job_id)
