"""Job rows and the forward-only status rule shared by the API (creation, cancel) and the worker.

Status only moves forward: a terminal status is never left, and within a job's life an event
applies only if its (attempt, phase) comes after the job's current one (running of attempt 2
follows retrying of attempt 1). One exception: a `dead` job whose result is applied after all
becomes `succeeded`. An operator redrives a dead letter once its cause is fixed; the result event
then carries the effect that happened (the note is archived, the copy exists), and a job row
still saying `dead` would contradict it.
"""

from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import Row, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import TERMINAL_STATUSES, JobStatus, JobType, Priority, utc_now
from notes_api.models import Attempt, Job, JobPublic, Progress
from notes_api.outbox import current_trace_id

_PHASE = {
    JobStatus.ACCEPTED: 0,
    JobStatus.SCHEDULED: 0,
    JobStatus.RUNNING: 1,
    JobStatus.RETRYING: 2,
}
CANCELLABLE = frozenset({JobStatus.ACCEPTED, JobStatus.SCHEDULED})


def moves_forward(job: Job, status: JobStatus, attempt: int | None) -> bool:
    """Whether moving ``job`` to ``status`` (reported for ``attempt``) is a step forward."""
    current = JobStatus(job.status)
    if current == JobStatus.DEAD and status == JobStatus.SUCCEEDED:
        return True  # redriven, and its result applied: the effect happened
    if current in TERMINAL_STATUSES:
        return False
    if status in TERMINAL_STATUSES:
        return True
    attempt = job.attempt if attempt is None else attempt
    return (attempt, _PHASE[status]) > (job.attempt, _PHASE[current])


def new_job(
    owner: str, job_type: JobType, status: JobStatus, *, job_id: UUID | None = None, **fields: Any
) -> Job:
    """A new job row (not yet inserted: `add_job`), carrying the current trace id."""
    now = utc_now()
    return Job(
        id=job_id or uuid4(), owner_id=owner, type=str(job_type), status=str(status), attempts=[],
        trace_id=current_trace_id(), created_at=now, updated_at=now, **fields,
    )  # fmt: skip


async def add_job(connection: AsyncConnection, job: Job) -> None:
    """Insert ``job``'s row in ``connection``'s transaction."""
    # Values as parameters, not `.values(...)`: the statement's compiled form is then cached.
    await connection.execute(insert(Job), job.model_dump())


def empty_progress(total: int) -> dict[str, int]:
    return {"total": total, "succeeded": 0, "failed": 0, "skipped": 0}


def job_public(job: Job | Row[Any]) -> JobPublic:
    """The API view of a job: a `Job` or a row read with `select(Job)`."""
    attempts = [Attempt.model_validate(a) for a in job.attempts]
    progress = Progress.model_validate(job.progress) if job.progress is not None else None
    return JobPublic(
        id=job.id, type=job.type, status=JobStatus(job.status), note_id=job.note_id,
        run_at=job.run_at, attempts=attempts, created_at=job.created_at,
        updated_at=job.updated_at, result=job.result, error=job.error, progress=progress,
        trace_id=job.trace_id, priority=Priority(job.priority),
    )  # fmt: skip
