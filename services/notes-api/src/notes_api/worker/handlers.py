"""notes-api-worker: applies job results and lifecycle events to notes-api's own data.

Consumes (group `notes-api-worker`): notes.archived.v1, notes.copy_completed.v1, jobs.lifecycle.v1,
          commands.auto_archive.v1, commands.purge_idempotency_keys.v1.
Emits:    a copy's notes.created.v1; a bulk parent's jobs.lifecycle.progress.v1 and
          jobs.lifecycle.completed.v1; auto-archive's bulk chunks; commands.completed.v1 for each
          scheduled command handled (through the outbox, with the effect).
Writes:   schema `notes`: notes (archived flag, copies), jobs, bulk_chunks, idempotency_keys
          (through `WorkerStore`).

Each handler runs in one store transaction (inbox + effect + outbox; `command_transaction` for
the scheduled commands; results and lifecycle events a batch at a time, `batch_transaction`), so
a redelivered event changes nothing and emits nothing. The auto-archive is the exception: each
bulk parent it writes commits alone (`WorkerStore.archive_owner`, idempotent by the parents'
derived ids), and its inbox row and completion commit last. No handler
raises to route a message: a result of a cancelled job, or a lifecycle event about a job that is
not ours, is recorded as handled and changes nothing (decided in `_result_applies` and
`_status_to_record`); a database error propagates and the runtime retries it.
"""

from typing import Any
from uuid import uuid5

from contracts import (
    COMMANDS_AUTO_ARCHIVE,
    COMMANDS_COMPLETED,
    COMMANDS_PURGE_IDEMPOTENCY_KEYS,
    JOBS_LIFECYCLE,
    NOTES_ARCHIVED,
    NOTES_COPY_COMPLETED,
    NOTES_CREATED,
    AutoArchiveRequested,
    CommandCompleted,
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
    ScheduledEvent,
    utc_now,
)
from notes_api.models import Job
from notes_api.worker.store import (
    GROUP,
    PRODUCER,
    CommandTransaction,
    WorkerStore,
    WorkerTransaction,
)
from servicekit import get_logger
from servicekit.jobs import JobRouter

router = JobRouter(group=GROUP)
_log = get_logger("notes_api.worker")
LIFECYCLE_EVENTS: tuple[type[JobLifecycle], ...] = (
    JobStarted, JobRetrying, JobSucceeded, JobFailed, JobDeadLettered, JobSkipped, JobProgress,
    JobCompleted,
)  # fmt: skip
# Results and lifecycle events come by the thousand from a bulk archive: one transaction for
# what is ready (a child's result never locks its parent; see `notes_api.worker.progress`). Each
# running batch holds a database connection: 16 concurrent batches of two routes exhausted the
# pool (15) and timed out; 4 each leave room for the others and make fuller batches.
RESULTS_BATCHES: dict[str, Any] = {"batch": 100, "concurrency": 4}
# Jobs whose result event (not the runtime's "handler finished") sets `succeeded`.
_RESULT_JOBS = {str(JobType.ARCHIVE), str(JobType.COPY)}


@router.event(NoteArchived, stream=NOTES_ARCHIVED, **RESULTS_BATCHES)
async def mark_note_archived(events: list[NoteArchived], store: WorkerStore) -> None:
    """Set each note's archived flag and its job `succeeded`; the batch in one transaction."""
    async with store.batch_transaction(events) as tx:
        # A few statements per batch, not per result: a bulk archive's 10,000 results pass here.
        jobs = await tx.find_jobs(event.job_id for event in tx.new_events)
        children = [
            (event.job_id, event.parent_job_id, event.owner_id)
            for event in tx.new_events
            if event.job_id not in jobs and event.parent_job_id is not None
        ]
        if children:
            jobs.update(await tx.find_or_add_bulk_children(children))
        applied = [
            event for event in tx.new_events if _result_applies(jobs.get(event.job_id), event)
        ]
        await tx.mark_notes_archived([(event.note_id, event.owner_id) for event in applied])
        await tx.succeed_jobs(
            [
                (jobs[event.job_id], {"note_id": str(event.note_id), "version": event.version})
                for event in applied
                if event.job_id in jobs
            ]
        )
    _log.info("notes.archived", results=len(events))


@router.event(NoteCopyCompleted, stream=NOTES_COPY_COMPLETED)
async def insert_copied_note(event: NoteCopyCompleted, store: WorkerStore) -> None:
    """Insert the copy (id derived from the job, so never twice) and set the job `succeeded`."""
    async with store.transaction(event) as tx:
        if tx.already_processed:
            return
        job = await tx.find_job(event.job_id)
        if not _result_applies(job, event):
            return
        now = utc_now()
        copy = NoteSnapshot(
            id=event.new_note_id, owner_id=event.owner_id, title=event.title, body=event.body,
            tags=event.tags, version=1, created_at=now, updated_at=now,
        )  # fmt: skip
        if await tx.insert_note(copy):
            created = NoteCreated.caused_by(
                event, producer=PRODUCER, owner_id=event.owner_id, note_id=copy.id, version=1,
                note=copy,
            )  # fmt: skip
            await tx.emit(created, stream=NOTES_CREATED, aggregate_id=str(copy.id))
        if job is not None:
            result = {"note_id": str(event.new_note_id)}
            await tx.advance_job(job, JobStatus.SUCCEEDED, result=result)
    _log.info("note.copied", note_id=str(event.new_note_id), job_id=str(event.job_id))


@router.event(LIFECYCLE_EVENTS, stream=JOBS_LIFECYCLE, **RESULTS_BATCHES)
async def record_job_status(events: list[JobLifecycle], store: WorkerStore) -> None:
    """Move each job's status forward (running, retrying with the error, failed, dead, skipped).

    The batch in one transaction; events the worker does not record are left out of it (and
    out of the inbox).
    """
    recorded = [event for event in events if _status_to_record(event) is not None]
    if not recorded:
        return
    async with store.batch_transaction(recorded) as tx:
        for event in tx.new_events:
            await _record_status(tx, event)


async def _record_status(tx: WorkerTransaction, event: JobLifecycle) -> None:
    status = _status_to_record(event)
    assert status is not None  # left out of the batch otherwise
    if (
        event.job_type == JobType.BULK_ARCHIVE_CHUNK
        and isinstance(event, JobDeadLettered | JobFailed)
        and event.parent_job_id is not None
    ):  # a lost chunk never expands: its items take its status, counted failed on the parent
        await tx.lose_chunk(event.job_id, event.parent_job_id, status, _error(event) or "")
        return
    job = await tx.find_job(event.job_id)
    if job is None and event.parent_job_id is not None and event.job_type == JobType.ARCHIVE:
        job = await tx.find_or_add_bulk_child(event.job_id, event.parent_job_id, None)
    if job is None:
        return  # not a job of ours (e.g. a bulk chunk)
    attempt = event.attempt if isinstance(event, JobAttemptEvent) else None
    error = _error(event)
    record: dict[str, Any] | None = None
    if isinstance(event, JobAttemptEvent):
        record = {"attempt": event.attempt, "status": str(status),
                  "at": event.occurred_at.isoformat(), "error": error}  # fmt: skip
    fields = {"error": error} if error and status != JobStatus.RETRYING else {}
    if await tx.advance_job(job, status, attempt=attempt, attempt_record=record, **fields):
        _log.debug("job.status_changed", job_id=str(job.id), status=str(status))


@router.event(AutoArchiveRequested, stream=COMMANDS_AUTO_ARCHIVE)
async def auto_archive_notes(event: AutoArchiveRequested, store: WorkerStore) -> None:
    """Create bulk archive parent jobs per owner with matching notes (the HTTP route's path).

    An owner's run is split into parents of at most BULK_ARCHIVE_MAX_ITEMS notes (no cap is
    refused here, unlike the HTTP route), each committed in a transaction of its own: no owner,
    however large, holds one transaction for the whole run. The cutoff counts from the tick's
    time; the first parent's id derives from the tick's event id and the owner, the others from
    the first, so a redelivered or retried tick finds the parts written and writes only the
    rest. An owner that fails does not stop the others: the error is raised after them, and the
    runtime's retry resumes it. The command's inbox row and completion commit last, once every
    owner is done (the inbox also absorbs the same tick from every scheduler replica).
    """
    if await store.command_handled(event):
        return
    days, now = event.not_updated_for_days, event.tick_at
    if event.owner_id is not None:
        owners = [event.owner_id]
    else:
        owners = await store.owners_with_notes_to_archive(event.tag, days, now)
    created, failed = 0, []
    for owner in owners:  # no empty parents from a tick
        try:
            created += await store.archive_owner(
                owner, event.tag, days, now, first_job_id=uuid5(event.event_id, owner)
            )
        except Exception as error:  # the others still run; the retry resumes this one
            _log.warning("auto_archive.owner_failed", owner_id=owner, error=repr(error))
            failed.append(error)
    if failed:
        raise failed[0]
    async with store.command_transaction(event) as tx:
        if not tx.already_processed:
            await _report_completed(tx, event)
    _log.info("auto_archive.done", schedule=event.schedule, owners=len(owners), jobs=created)


@router.event(PurgeExpiredIdempotencyKeys, stream=COMMANDS_PURGE_IDEMPOTENCY_KEYS)
async def purge_expired_idempotency_keys(
    event: PurgeExpiredIdempotencyKeys, store: WorkerStore
) -> None:
    """Delete expired idempotency records created before the command's `older_than`."""
    async with store.command_transaction(event) as tx:
        if tx.already_processed:
            return
        purged = await tx.purge_expired_idempotency_keys(event.older_than)
        await _report_completed(tx, event)
    _log.info("idempotency_keys.purged", count=purged)


async def _report_completed(tx: CommandTransaction, command: ScheduledEvent) -> None:
    """Tell the scheduler the command's run finished: in its transaction, so exactly when it did.

    Finished means handled and committed here, not the work it started (bulk parents run on).
    """
    completed = CommandCompleted.for_command(command, producer=PRODUCER)
    await tx.emit(completed, stream=COMMANDS_COMPLETED, aggregate_id=command.schedule)


def _result_applies(job: Job | None, event: NoteArchived | NoteCopyCompleted) -> bool:
    """Whether a job's result is applied: not if the job was cancelled (then it is ignored)."""
    if job is not None and job.status == JobStatus.CANCELLED:
        _log.info("job.result_ignored", job_id=str(event.job_id), status=job.status)
        return False
    return True


def _status_to_record(event: JobLifecycle) -> JobStatus | None:
    """The status a lifecycle event sets on its job; None for events this worker ignores."""
    status = event.implied_status()
    if status is None or isinstance(event, JobProgress):
        return None  # progress is what this worker itself counts
    if isinstance(event, JobStarted) and event.parent_job_id is not None:
        # A bulk child's start: its row records its outcome (and retries), not each start; the
        # 10,000 starts of a bulk archive would double the worker's work for a passing status.
        return None
    if isinstance(event, JobSucceeded) and event.job_type in _RESULT_JOBS:
        return None  # the result event sets `succeeded`, with the effect
    return status


def _error(event: JobLifecycle) -> str | None:
    if isinstance(event, JobRetrying | JobFailed | JobDeadLettered):
        return f"{event.error_class}: {event.error_message}"
    if isinstance(event, JobSkipped):
        return event.reason
    return None
