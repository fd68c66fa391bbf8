"""The worker's writes to schema `notes`, on the handler transaction's connection.

Job status only moves forward (`notes_api.jobs.moves_forward`); a parent's progress is counted
from its children's terminal statuses, each child once, and its completion goes to the outbox.
"""

from typing import Any
from uuid import UUID

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import select

from contracts import JOBS_LIFECYCLE, TERMINAL_STATUSES, JobCompleted, JobStatus, JobType, utc_now
from notes_api.jobs import moves_forward
from notes_api.models import Job
from servicekit import HandlerTransaction

PRODUCER = "notes-api-worker"
_BUCKET = {
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.SKIPPED: "skipped",
    JobStatus.FAILED: "failed",
    JobStatus.DEAD: "failed",
    JobStatus.CANCELLED: "failed",
}
_JOBS = Job.__table__  # type: ignore[attr-defined]


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
    parent = await load_job(tx.connection, parent_id)
    if parent is None or JobStatus(parent.status) in TERMINAL_STATUSES or parent.progress is None:
        return
    progress = dict(parent.progress)
    progress[_BUCKET[status]] += 1
    done = progress["succeeded"] + progress["failed"] + progress["skipped"]
    final = None
    if done >= progress["total"]:
        final = JobStatus.SUCCEEDED if progress["failed"] == 0 else JobStatus.FAILED
    await tx.connection.execute(
        update(_JOBS)
        .where(_JOBS.c.id == parent_id)
        .values(status=str(final or JobStatus.RUNNING), progress=progress, updated_at=utc_now())
    )
    if final is not None:
        completed = JobCompleted(
            producer=PRODUCER, job_id=parent_id, job_type=parent.type, trace_id=parent.trace_id,
            status=final, **progress,
        )  # fmt: skip
        await tx.emit(completed, stream=JOBS_LIFECYCLE, aggregate_id=str(parent_id))
