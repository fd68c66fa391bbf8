"""archiver: keeps every version of every note, and freezes or copies one on request.

Consumes: notes.created.v1, notes.updated.v1, notes.deleted.v1 (each carries the full note);
          jobs.archive.{critical,default,low}; jobs.copy.{critical,default,low}.
Emits:    notes.archived.v1, notes.copy_completed.v1 (through the outbox, with the effect).
Writes:   schema ``archiver``: note_versions, snapshots (plus servicekit's inbox and outbox).

Each handler runs in one handler transaction (archive jobs: one for the batch of ready requests),
so a redelivered event changes nothing and emits nothing. Failures are routed by type:
TransientError is retried with backoff, PermanentError is dead-lettered, SkipJob is acknowledged
and reported as skipped (a batch reports them per request).
"""

from uuid import UUID

from archiver.store import ArchiveStore, ArchiveTransaction, NoteChange, NoteVersion, StoredNote
from contracts import ArchiveRequested, CopyRequested, Service
from contracts.notes import (
    NoteArchived,
    NoteCopyCompleted,
    NoteCreated,
    NoteDeleted,
    NoteUpdated,
    copy_note_id,
)
from contracts.streams import (
    NOTES_ARCHIVED,
    NOTES_COPY_COMPLETED,
    NOTES_CREATED,
    NOTES_DELETED,
    NOTES_UPDATED,
)
from servicekit import PermanentError, SkipJob, TransientError, get_logger
from servicekit.jobs import JobOptions, JobRouter

PRODUCER = str(Service.ARCHIVER)

# A job may arrive before the note event it names (they travel on different streams): retry for
# about four minutes (1 + 2 + 4 + … s, capped at 60 s) before giving up.
router = JobRouter(group=str(Service.ARCHIVER), defaults=JobOptions(max_attempts=10))
# Archive jobs come by the thousand from a bulk archive: one transaction for what is ready (4 such
# transactions at a time: each holds a pooled connection, and fewer make fuller batches).
ARCHIVE_BATCH = 100
log = get_logger(__name__)


@router.event(NoteUpdated, stream=NOTES_UPDATED)
@router.event(NoteCreated, stream=NOTES_CREATED)
async def store_note_version(change: NoteChange, store: ArchiveStore) -> None:
    """Keep the version the event carries."""
    async with store.transaction(change) as tx:
        if tx.already_processed:
            return
        await tx.save_version(change)


@router.event(NoteDeleted, stream=NOTES_DELETED)
async def record_note_deletion(deletion: NoteDeleted, store: ArchiveStore) -> None:
    """Keep the note's last state, marked deleted: later archive and copy jobs are skipped."""
    await store_note_version(deletion, store)


@router.job(ArchiveRequested, batch=ARCHIVE_BATCH, concurrency=4)
async def archive_note(
    requests: list[ArchiveRequested], store: ArchiveStore
) -> dict[UUID, Exception]:
    """Freeze each requested version as a snapshot with a checksum and announce it.

    The ready requests (a bulk archive's children arrive by the thousand) in one transaction;
    one that cannot run now is settled on its own (its exception, returned by event id).
    """
    settled: dict[UUID, Exception] = {}
    async with store.transactions(requests) as tx:
        # A few statements per batch, not per request: the notes, the snapshots, the outbox.
        found = await tx.find_notes([(r.note_id, r.version) for r in tx.new_events])
        frozen: list[tuple[ArchiveRequested, NoteVersion]] = []
        for request in tx.new_events:
            try:
                frozen.append((request, _version_to_freeze(found.get(_key(request)), request)))
            except (TransientError, PermanentError, SkipJob) as exc:
                settled[request.event_id] = exc
                if not isinstance(exc, SkipJob):
                    await tx.release(request)  # not applied: its retry must find it new
        await tx.freeze_snapshots([(version, request.job_id) for request, version in frozen])
        await tx.emit_all(
            [
                NoteArchived.caused_by(
                    request,
                    producer=PRODUCER,
                    owner_id=request.owner_id,
                    note_id=request.note_id,
                    version=request.version,
                    job_id=request.job_id,
                    parent_job_id=request.parent_job_id,
                    checksum=version.checksum,
                )
                for request, version in frozen
            ],
            stream=NOTES_ARCHIVED,
            aggregate_id=lambda archived: str(archived.note_id),
        )
    log.info("notes.archived", requests=len(requests), settled_otherwise=len(settled))
    return settled


@router.job(CopyRequested)
async def copy_note(request: CopyRequested, store: ArchiveStore) -> None:
    """Announce the content of the new note; notes-api inserts it under copy_note_id(job_id)."""
    async with store.transaction(request) as tx:
        if tx.already_processed:
            return
        source = await _requested_version(tx, request)
        new_note_id = copy_note_id(request.job_id)
        completed = NoteCopyCompleted.caused_by(
            request,
            producer=PRODUCER,
            owner_id=request.owner_id,
            job_id=request.job_id,
            source_note_id=request.note_id,
            source_version=request.version,
            new_note_id=new_note_id,
            title=request.new_title or source.title,
            body=source.body,
            tags=source.tags,
        )
        await tx.emit(completed, stream=NOTES_COPY_COMPLETED, aggregate_id=str(new_note_id))
    log.info("note.copied", note_id=str(request.note_id), new_note_id=str(new_note_id))


def _key(request: ArchiveRequested) -> tuple[UUID, int]:
    return request.note_id, request.version


async def _requested_version(
    tx: ArchiveTransaction, request: ArchiveRequested | CopyRequested
) -> NoteVersion:
    """Return the stored version a job names, or raise what the runtime should do instead."""
    return _version_to_freeze(await tx.find_note(request.note_id, request.version), request)


def _version_to_freeze(
    note: StoredNote | None, request: ArchiveRequested | CopyRequested
) -> NoteVersion:
    """The version a job names, of what is stored (``note``), or raise what to do instead."""
    if note is None:
        raise TransientError(f"note {request.note_id} has not reached the archiver yet")
    if note.owner_id != request.owner_id:
        raise PermanentError(f"note {request.note_id} is not owned by {request.owner_id}")
    if note.deleted:
        raise SkipJob("note deleted")
    if note.version is None:
        raise TransientError(
            f"version {request.version} of note {request.note_id} has not reached the archiver yet"
        )
    return note.version
