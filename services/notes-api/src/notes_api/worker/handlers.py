"""notes-api-worker handlers: apply job results and lifecycle events to notes-api's own data.

Consumes (group `notes-api-worker`): `notes.archived.v1`, `notes.copy_completed.v1`,
`jobs.lifecycle.v1`, `commands.auto_archive.v1`, `commands.purge_idempotency_keys.v1`. Emits
through the outbox: the copy's `notes.created.v1`, a bulk parent's `jobs.lifecycle.progress.v1`
and `jobs.lifecycle.completed.v1`, and auto-archive's bulk chunks. Every handler runs in one
`handler_transaction` (inbox + effect + outbox), so a redelivery changes nothing.
"""

from typing import Any
from uuid import uuid5

from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from contracts import (
    COMMANDS_AUTO_ARCHIVE,
    COMMANDS_PURGE_IDEMPOTENCY_KEYS,
    JOBS_LIFECYCLE,
    NOTES_ARCHIVED,
    NOTES_COPY_COMPLETED,
    NOTES_CREATED,
    AutoArchiveRequested,
    JobAttemptEvent,
    JobCompleted,
    JobDeadLettered,
    JobFailed,
    JobLifecycle,
    JobProgress,
    JobRetrying,
    JobSkipped,
    JobStarted,
    JobStatus,
    JobSucceeded,
    JobType,
    NoteArchived,
    NoteCopyCompleted,
    NoteCreated,
    NoteSnapshot,
    PurgeExpiredIdempotencyKeys,
    Service,
    utc_now,
)
from notes_api.bulk import create_parent, matching_owners, resolve_items
from notes_api.idempotency import purge_expired
from notes_api.models import Note
from notes_api.settings import SCHEMA
from notes_api.worker.store import PRODUCER, advance, child_job, load_job, lose_chunk
from servicekit import get_logger, handler_transaction
from servicekit.jobs import JobRouter

GROUP = str(Service.NOTES_API_WORKER)
router = JobRouter(group=GROUP)
_log = get_logger("notes_api.worker")
_NOTES = Note.__table__  # type: ignore[attr-defined]
LIFECYCLE_EVENTS: tuple[type[JobLifecycle], ...] = (
    JobStarted, JobRetrying, JobSucceeded, JobFailed, JobDeadLettered, JobSkipped, JobProgress,
    JobCompleted,
)  # fmt: skip
# Jobs whose result event (not the runtime's "handler finished") sets `succeeded`.
_RESULT_JOBS = {str(JobType.ARCHIVE), str(JobType.COPY)}


@router.event(NoteArchived, stream=NOTES_ARCHIVED)
async def mark_note_archived(event: NoteArchived, engine: AsyncEngine) -> None:
    """Set the note's archived flag and the job `succeeded`, in one transaction."""
    async with handler_transaction(engine, schema=SCHEMA, group=GROUP, event=event) as tx:
        if tx.already_processed:
            return
        job = await load_job(tx.connection, event.job_id)
        if job is None and event.parent_job_id is not None:
            job = await child_job(tx.connection, event.job_id, event.parent_job_id, event.owner_id)
        if job is not None and job.status == JobStatus.CANCELLED:
            _log.info("job.result_ignored", job_id=str(event.job_id), status=job.status)
            return
        await tx.connection.execute(
            update(_NOTES)
            .where(_NOTES.c.id == event.note_id, _NOTES.c.owner_id == event.owner_id)
            .values(archived_at=func.coalesce(_NOTES.c.archived_at, func.now()))
        )
        if job is not None:
            result = {"note_id": str(event.note_id), "version": event.version}
            await advance(tx, job, JobStatus.SUCCEEDED, result=result)
        _log.info("note.archived", note_id=str(event.note_id), job_id=str(event.job_id))


@router.event(NoteCopyCompleted, stream=NOTES_COPY_COMPLETED)
async def insert_copied_note(event: NoteCopyCompleted, engine: AsyncEngine) -> None:
    """Insert the copy (id derived from the job, so never twice) and set the job `succeeded`."""
    async with handler_transaction(engine, schema=SCHEMA, group=GROUP, event=event) as tx:
        if tx.already_processed:
            return
        job = await load_job(tx.connection, event.job_id)
        if job is not None and job.status == JobStatus.CANCELLED:
            _log.info("job.result_ignored", job_id=str(event.job_id), status=job.status)
            return
        now = utc_now()
        snapshot = NoteSnapshot(
            id=event.new_note_id, owner_id=event.owner_id, title=event.title, body=event.body,
            tags=event.tags, version=1, created_at=now, updated_at=now,
        )  # fmt: skip
        inserted = await tx.connection.execute(
            insert(_NOTES)
            .values(**snapshot.model_dump())
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(_NOTES.c.id)
        )
        if inserted.first() is not None:
            created = NoteCreated.caused_by(
                event, producer=PRODUCER, owner_id=event.owner_id, note_id=snapshot.id,
                version=1, note=snapshot,
            )  # fmt: skip
            await tx.emit(created, stream=NOTES_CREATED, aggregate_id=str(snapshot.id))
        if job is not None:
            await advance(tx, job, JobStatus.SUCCEEDED, result={"note_id": str(event.new_note_id)})
        _log.info("note.copied", note_id=str(event.new_note_id), job_id=str(event.job_id))


@router.event(LIFECYCLE_EVENTS, stream=JOBS_LIFECYCLE)
async def record_job_status(event: JobLifecycle, engine: AsyncEngine) -> None:
    """Move the job's status forward (running, retrying with the error, failed, dead, skipped)."""
    status = event.implied_status()
    if status is None or isinstance(event, JobProgress):
        return  # progress is what this worker itself counts
    if isinstance(event, JobSucceeded) and event.job_type in _RESULT_JOBS:
        return  # the result event sets `succeeded`, with the effect
    async with handler_transaction(engine, schema=SCHEMA, group=GROUP, event=event) as tx:
        if tx.already_processed:
            return
        if (
            event.job_type == JobType.BULK_ARCHIVE_CHUNK
            and isinstance(event, JobDeadLettered | JobFailed)
            and event.parent_job_id is not None
        ):  # a lost chunk never expands: its items count as failed on the parent
            status = JobStatus.DEAD if isinstance(event, JobDeadLettered) else JobStatus.FAILED
            await lose_chunk(tx, event.job_id, event.parent_job_id, status, _error(event) or "")
            return
        job = await load_job(tx.connection, event.job_id)
        if job is None and event.parent_job_id is not None and event.job_type == JobType.ARCHIVE:
            job = await child_job(tx.connection, event.job_id, event.parent_job_id, None)
        if job is None:
            return  # not a job of ours (e.g. a bulk chunk)
        attempt = event.attempt if isinstance(event, JobAttemptEvent) else None
        error = _error(event)
        record: dict[str, Any] | None = None
        if isinstance(event, JobAttemptEvent):
            record = {"attempt": event.attempt, "status": str(status),
                      "at": event.occurred_at.isoformat(), "error": error}  # fmt: skip
        fields = {"error": error} if error and status != JobStatus.RETRYING else {}
        moved = await advance(tx, job, status, attempt=attempt, attempt_record=record, **fields)
        if moved:
            _log.info("job.status_changed", job_id=str(job.id), status=str(status))


def _error(event: JobLifecycle) -> str | None:
    if isinstance(event, JobRetrying | JobFailed | JobDeadLettered):
        return f"{event.error_class}: {event.error_message}"
    if isinstance(event, JobSkipped):
        return event.reason
    return None


@router.event(AutoArchiveRequested, stream=COMMANDS_AUTO_ARCHIVE)
async def auto_archive_notes(event: AutoArchiveRequested, engine: AsyncEngine) -> None:
    """Create a bulk archive parent job per owner with matching notes (the HTTP route's path).

    The cutoff counts from the tick's time; parent ids derive from the tick's event id and the
    owner, and the inbox absorbs the same tick from every scheduler replica.
    """
    async with handler_transaction(engine, schema=SCHEMA, group=GROUP, event=event) as tx:
        if tx.already_processed:
            return
        days, now = event.not_updated_for_days, event.tick_at
        async with AsyncSession(bind=tx.connection) as session:
            if event.owner_id is not None:
                owners = [event.owner_id]
            else:
                owners = await matching_owners(session, event.tag, days, now)
            created = 0
            for owner in owners:
                items = await resolve_items(session, owner, event.tag, days, now=now)
                if not items:
                    continue  # no empty parents from a tick
                job_id = uuid5(event.event_id, owner)
                await create_parent(session, owner, items, job_id=job_id)
                created += 1
        _log.info("auto_archive.done", schedule=event.schedule, owners=len(owners), jobs=created)


@router.event(PurgeExpiredIdempotencyKeys, stream=COMMANDS_PURGE_IDEMPOTENCY_KEYS)
async def purge_expired_idempotency_keys(
    event: PurgeExpiredIdempotencyKeys, engine: AsyncEngine
) -> None:
    """Delete expired idempotency records created before the command's `older_than`."""
    async with handler_transaction(engine, schema=SCHEMA, group=GROUP, event=event) as tx:
        if tx.already_processed:
            return
        async with AsyncSession(bind=tx.connection) as session:
            purged = await purge_expired(session, event.older_than)
        _log.info("idempotency_keys.purged", count=purged)
