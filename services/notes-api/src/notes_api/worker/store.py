"""The worker's writes to schema `notes`, on the handler transaction's connection.

Job status only moves forward (`notes_api.jobs.moves_forward`); a parent's progress is counted
from its children's terminal statuses, each child once; every count sends the parent's progress,
and its completion, through the outbox. A lost bulk chunk (dead-lettered or failed, so never
expanded) moves its children that have no terminal status yet to the chunk's status, and counts
them as failed, so the parent completes.
"""

from typing import Any
from uuid import UUID

from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import select

from contracts import (
    JOBS_LIFECYCLE,
    TERMINAL_STATUSES,
    JobCompleted,
    JobProgress,
    JobStatus,
    JobType,
    bulk_child_job_id,
    utc_now,
)
from notes_api.jobs import moves_forward
from notes_api.models import BulkChunk, Job
from servicekit import HandlerTransaction, get_logger

PRODUCER = "notes-api-worker"
_BUCKET = {
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.SKIPPED: "skipped",
    JobStatus.FAILED: "failed",
    JobStatus.DEAD: "failed",
    JobStatus.CANCELLED: "failed",
}
_JOBS = Job.__table__  # type: ignore[attr-defined]
_CHUNKS = BulkChunk.__table__  # type: ignore[attr-defined]
_TERMINAL = [str(s) for s in TERMINAL_STATUSES]
_log = get_logger("notes_api.worker")


async def load_job(connection: AsyncConnection, job_id: UUID) -> Job | None:
    row = (await connection.execute(select(Job).where(Job.id == job_id).with_for_update())).first()
    return Job.model_validate(row._mapping) if row is not None else None


async def child_job(
    connection: AsyncConnection, job_id: UUID, parent_id: UUID, owner_id: str | None
) -> Job | None:
    """The row of a bulk archive's child, created on its first event (fanout made the job)."""
    parent = (await connection.execute(select(Job.owner_id).where(Job.id == parent_id))).first()
    if parent is None:
        return None
    now = utc_now()
    await connection.execute(
        insert(_JOBS)
        .values(
            id=job_id,
            owner_id=owner_id or parent.owner_id,
            type=str(JobType.ARCHIVE),
            status=str(JobStatus.ACCEPTED),
            parent_id=parent_id,
            attempt=0,
            attempts=[],
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    return await load_job(connection, job_id)


async def advance(
    tx: HandlerTransaction,
    job: Job,
    status: JobStatus,
    *,
    attempt: int | None = None,
    attempt_record: dict[str, Any] | None = None,
    **fields: Any,
) -> bool:
    """Move ``job`` to ``status`` if that is forward; count it in its parent; return if moved."""
    if not moves_forward(job, status, attempt):
        return False
    values: dict[str, Any] = {"status": str(status), "updated_at": utc_now(), **fields}
    if attempt is not None:
        values["attempt"] = max(job.attempt, attempt)
    if attempt_record is not None:
        values["attempts"] = [*job.attempts, attempt_record]
    await tx.connection.execute(update(_JOBS).where(_JOBS.c.id == job.id).values(**values))
    if status in TERMINAL_STATUSES and job.parent_id is not None:
        await count_child(tx, job.parent_id, status)
    return True


async def count_child(tx: HandlerTransaction, parent_id: UUID, status: JobStatus) -> None:
    await count_children(tx, parent_id, {_BUCKET[status]: 1})


async def count_children(tx: HandlerTransaction, parent_id: UUID, counts: dict[str, int]) -> None:
    """Add ``counts`` (bucket → children) to the parent; emit its progress, and completion."""
    parent = await load_job(tx.connection, parent_id)
    if parent is None or JobStatus(parent.status) in TERMINAL_STATUSES or parent.progress is None:
        return
    progress = dict(parent.progress)
    for bucket, n in counts.items():
        remaining = progress["total"] - progress["succeeded"] - progress["failed"]
        remaining -= progress["skipped"]
        if n > remaining:  # never count past the total (each child is counted once anyway)
            _log.warning("job.progress_overflow", job_id=str(parent_id), bucket=bucket, count=n)
            n = remaining
        progress[bucket] += n
    done = progress["succeeded"] + progress["failed"] + progress["skipped"]
    final = None
    if done >= progress["total"]:
        final = JobStatus.SUCCEEDED if progress["failed"] == 0 else JobStatus.FAILED
    await tx.connection.execute(
        update(_JOBS)
        .where(_JOBS.c.id == parent_id)
        .values(status=str(final or JobStatus.RUNNING), progress=progress, updated_at=utc_now())
    )
    common = {"producer": PRODUCER, "job_id": parent_id, "job_type": parent.type,
              "trace_id": parent.trace_id, **progress}  # fmt: skip
    await tx.emit(JobProgress(**common), stream=JOBS_LIFECYCLE, aggregate_id=str(parent_id))
    if final is not None:
        completed = JobCompleted(**common, status=final)
        await tx.emit(completed, stream=JOBS_LIFECYCLE, aggregate_id=str(parent_id))


async def lose_chunk(
    tx: HandlerTransaction, chunk_id: UUID, parent_id: UUID, status: JobStatus, error: str
) -> int:
    """Count a dead or failed chunk's items as failed on its parent, once; return how many.

    Children the chunk never produced get a row with the chunk's status; children that exist
    without a terminal status (it died after publishing some) move to it; children already
    terminal were counted by their own result. So every item is counted exactly once.
    """
    connection = tx.connection
    chunk = (
        await connection.execute(
            _CHUNKS.select()
            .where(_CHUNKS.c.id == chunk_id, _CHUNKS.c.parent_id == parent_id)
            .with_for_update()
        )
    ).first()
    if chunk is None or chunk.lost_at is not None:
        return 0  # not a chunk of ours, or already counted
    owner = (await connection.execute(select(Job.owner_id).where(Job.id == parent_id))).first()
    if owner is None:
        return 0
    await connection.execute(
        update(_CHUNKS).where(_CHUNKS.c.id == chunk_id).values(lost_at=func.now())
    )
    child_ids = [bulk_child_job_id(parent_id, note_id) for note_id in chunk.note_ids]
    values = {"status": str(status), "error": f"bulk chunk {chunk.chunk_no} lost: {error}",
              "updated_at": utc_now()}  # fmt: skip
    moved = await connection.execute(
        update(_JOBS)
        .where(_JOBS.c.id.in_(child_ids), _JOBS.c.status.not_in(_TERMINAL))
        .values(**values)
        .returning(_JOBS.c.id)
    )
    failed = len(moved.all())
    rows = [{"id": child_id, "owner_id": owner.owner_id, "type": str(JobType.ARCHIVE),
             "parent_id": parent_id, "attempt": 0, "attempts": [],
             "created_at": values["updated_at"], **values} for child_id in child_ids]  # fmt: skip
    inserted = await connection.execute(
        insert(_JOBS)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(_JOBS.c.id)
    )
    failed += len(inserted.all())
    _log.info("bulk_chunk.lost", chunk_id=str(chunk_id), parent_id=str(parent_id), failed=failed)
    if failed:
        await count_children(tx, parent_id, {"failed": failed})
    return failed
