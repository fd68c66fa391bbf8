"""Job endpoints: archive, copy and bulk archive requests (202), job status, list and cancel.

Requests go out through the outbox in the transaction that creates the job row, on the stream of
the priority asked for: `jobs.archive.<priority>`, `jobs.copy.<priority>` (default `default`),
chunks on `jobs.bulk_archive_chunk.<priority>` (default `low`; see `notes_api.bulk`), and delayed
requests (`run_at`) as `jobs.delayed.requested.v1` on `jobs.delayed.v1` for the scheduler, which
publishes them on that stream when due.
"""

from datetime import timedelta
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from sqlalchemy import Row, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from contracts import (
    JOBS_DELAYED,
    ArchiveRequested,
    CopyRequested,
    DelayedJobCancelled,
    DelayedJobRequested,
    JobRequest,
    JobStatus,
    JobType,
    Priority,
    job_stream,
    utc_now,
)
from notes_api.bulk import create_bulk_archive
from notes_api.bulk_selection import BulkFilter, count_matching, lock_owner
from notes_api.cursors import CursorsDep
from notes_api.deps import IdempotentDep, OwnerDep, ReaderDep, SettingsDep
from notes_api.errors import PROBLEMS, Problem
from notes_api.idempotency import Outcome
from notes_api.jobs import CANCELLABLE, add_job, job_public, new_job
from notes_api.models import (
    ArchiveJobCreate,
    BulkArchiveCreate,
    CopyJobCreate,
    Job,
    JobAccepted,
    JobPage,
    JobPublic,
)
from notes_api.notes import owned_note
from notes_api.outbox import PRODUCER, emit
from notes_api.pagination import read_page

router = APIRouter(prefix="/v1", tags=["jobs"])


def accepted(job: Job) -> Outcome:
    body = JobAccepted(job_id=job.id, status=JobStatus(job.status)).model_dump(mode="json")
    return Outcome(202, body, {"Location": f"/v1/jobs/{job.id}"})


async def submit(
    connection: AsyncConnection, job: Job, request: JobRequest, aggregate: UUID
) -> None:
    """Store the job row and its request on the job's priority stream.

    A job with a `run_at` goes to the scheduler, which publishes it on that stream when due.
    """
    await add_job(connection, job)
    priority = Priority(job.priority)
    stream = job_stream(request.JOB_TYPE, priority)
    if job.run_at is None:
        await emit(connection, request, stream=stream, aggregate_id=aggregate)
        return
    delayed = DelayedJobRequested.for_request(
        request, run_at=job.run_at, priority=priority, producer=PRODUCER
    )
    await emit(connection, delayed, stream=JOBS_DELAYED, aggregate_id=aggregate)


@router.post(
    "/notes/{note_id}/archive", status_code=202, response_model=JobAccepted, responses=PROBLEMS
)
async def archive_note(
    note_id: UUID,
    call: IdempotentDep,
    settings: SettingsDep,
    payload: Annotated[ArchiveJobCreate | None, Body()] = None,
) -> JSONResponse:
    """Archive the note's current version (202 + job); `run_at` delays it (≤ 30 days ahead)."""
    criteria = payload or ArchiveJobCreate()
    run_at = criteria.run_at
    now = utc_now()
    if run_at is not None and run_at > now + timedelta(days=settings.delay_horizon_days):
        raise Problem(422, f"run_at is more than {settings.delay_horizon_days} days ahead.")
    delayed = run_at is not None and run_at > now  # a past run_at means now

    async def create(connection: AsyncConnection) -> Outcome:
        note = await owned_note(connection, call.owner, note_id, lock=False)
        status = JobStatus.SCHEDULED if delayed else JobStatus.ACCEPTED
        job = new_job(call.owner, JobType.ARCHIVE, status, note_id=note_id,
                      run_at=run_at if delayed else None,
                      priority=str(criteria.priority))  # fmt: skip
        request = ArchiveRequested(
            producer=PRODUCER, owner_id=call.owner, job_id=job.id, note_id=note_id,
            version=note.version,
        )  # fmt: skip
        await submit(connection, job, request, note_id)
        return accepted(job)

    return await call.respond(payload, create)


@router.post(
    "/notes/{note_id}/copy", status_code=202, response_model=JobAccepted, responses=PROBLEMS
)
async def copy_note(
    note_id: UUID, call: IdempotentDep, payload: Annotated[CopyJobCreate | None, Body()] = None
) -> JSONResponse:
    """Copy the note's current version into a new note of the same owner (job result: note_id)."""
    criteria = payload or CopyJobCreate()

    async def create(connection: AsyncConnection) -> Outcome:
        note = await owned_note(connection, call.owner, note_id, lock=False)
        job = new_job(call.owner, JobType.COPY, JobStatus.ACCEPTED, note_id=note_id,
                      priority=str(criteria.priority))  # fmt: skip
        request = CopyRequested(
            producer=PRODUCER, owner_id=call.owner, job_id=job.id, note_id=note_id,
            version=note.version, new_title=criteria.title,
        )  # fmt: skip
        await submit(connection, job, request, note_id)
        return accepted(job)

    return await call.respond(payload, create)


NO_FILTER = (
    'A bulk archive needs a filter (`tag` and/or `not_updated_for_days`), or `"all": true` '
    "to archive every unarchived note; not both."
)


@router.post("/notes:bulk-archive", status_code=202, response_model=JobAccepted, responses=PROBLEMS)
async def bulk_archive(
    call: IdempotentDep,
    settings: SettingsDep,
    payload: Annotated[BulkArchiveCreate | None, Body()] = None,
) -> JSONResponse:
    """Archive the unarchived notes the filter (or `all`) matches, as one parent job.

    At most `BULK_ARCHIVE_MAX_ITEMS` notes (more → 422); notes in a bulk job still running are
    left out.
    """
    if payload is None or payload.all == payload.has_filter():
        raise Problem(422, NO_FILTER)
    criteria, cap = payload, settings.bulk_archive_max_items
    match = BulkFilter(tag=criteria.tag, not_updated_for_days=criteria.not_updated_for_days)

    async def create(connection: AsyncConnection) -> Outcome:
        await lock_owner(connection, call.owner)  # the count holds until the chunks are written
        if await count_matching(connection, call.owner, match, up_to=cap + 1) > cap:
            raise Problem(
                422, f"The request matches more than {cap:,} notes, the most one bulk archive "
                "takes (BULK_ARCHIVE_MAX_ITEMS); narrow the filter (tag, not_updated_for_days).",
                title="Too many notes", max_items=cap,
            )  # fmt: skip
        job = await create_bulk_archive(
            connection, call.owner, match, job_id=uuid4(), priority=criteria.priority,
            max_items=cap,
        )  # fmt: skip
        return accepted(job)

    return await call.respond(payload, create)


NOT_FOUND = "No job with this id."


def _owned_jobs(owner: str) -> SelectOfScalar[Job]:
    """The owner's jobs as the API shows them: a bulk archive's chunks are not jobs of their own."""
    return select(Job).where(Job.owner_id == owner, col(Job.parent_id).is_(None))


async def owned_job(
    connection: AsyncConnection, owner: str, job_id: UUID, *, lock: bool
) -> Row[Any]:
    """The owner's job (``lock``: FOR UPDATE, in ``connection``'s transaction); 404 otherwise."""
    statement = _owned_jobs(owner).where(Job.id == job_id)
    job = (await connection.execute(statement.with_for_update() if lock else statement)).first()
    if job is None:
        raise Problem(404, NOT_FOUND)
    return job


@router.get("/jobs/{job_id}", response_model=JobPublic, responses=PROBLEMS)
async def get_job(job_id: UUID, owner: OwnerDep, connection: ReaderDep) -> JobPublic:
    """A job's status, attempts, result or error, and progress for bulk archives."""
    return job_public(await owned_job(connection, owner, job_id, lock=False))


@router.get("/jobs", response_model=JobPage, responses=PROBLEMS)
async def list_jobs(
    owner: OwnerDep,
    connection: ReaderDep,
    cursors: CursorsDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobPage:
    """The owner's jobs, newest first, optionally by status, a page at a time."""
    statement = _owned_jobs(owner)
    if status is not None:
        statement = statement.where(Job.status == str(status))
    page, next_cursor = await read_page(
        connection, statement, Job, cursor=cursor, limit=limit, cursors=cursors
    )
    return JobPage(items=[job_public(j) for j in page], next_cursor=next_cursor)


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic, responses=PROBLEMS)
async def cancel_job(job_id: UUID, call: IdempotentDep) -> JSONResponse:
    """Cancel a job that is not running yet (a delayed one too: the scheduler drops it)."""

    async def cancel(connection: AsyncConnection) -> Outcome:
        job = await owned_job(connection, call.owner, job_id, lock=True)
        if job.type == JobType.BULK_ARCHIVE:
            raise Problem(409, "A bulk archive cannot be cancelled: its chunks are already out.")
        if JobStatus(job.status) not in CANCELLABLE:
            raise Problem(409, f"The job is {job.status}; only accepted or scheduled jobs cancel.")
        cancelled = await connection.execute(
            update(Job)
            .where(col(Job.id) == job.id)
            .values(status=str(JobStatus.CANCELLED), updated_at=utc_now())
            .returning(Job)
        )
        if job.status == JobStatus.SCHEDULED:
            dropped = DelayedJobCancelled(producer=PRODUCER, job_id=job.id)
            await emit(connection, dropped, stream=JOBS_DELAYED, aggregate_id=job.note_id or job.id)
        return Outcome(200, job_public(cancelled.one()).model_dump(mode="json"))

    return await call.respond(None, cancel)
