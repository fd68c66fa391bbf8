"""fanout: one request into many child jobs, and one event into many isolated handlers.

Consumes: jobs.bulk_archive_chunk.{critical,default,low} (group ``fanout``);
          notes.created.v1, notes.updated.v1, notes.deleted.v1, once in each of the groups
          ``fanout.audit`` and ``fanout.activity``.
Emits:    jobs.archive.<the chunk's child_priority> (one archive job per chunk item, through the
          outbox, with the chunk's inbox row).
Writes:   schema ``fanout``: note_changes (audit trail), owner_activity (plus servicekit's inbox
          and outbox).

A chunk's children are written in the transaction that records the chunk, so a fanout killed at
any point either expanded the chunk whole or not at all; the relay then publishes the children,
each at least once, with ids derived from the parent and the note (a re-published child is the
same job and the same event to the archiver's inbox). Each note-event handler reads in a group of
its own (its own pending list, retries, dead letters and metrics), so one that fails or
dead-letters never holds back another. Failures are routed by type as everywhere (TransientError
retried, PermanentError dead-lettered); a database error propagates and is retried.
"""

from uuid import uuid5

from contracts import ArchiveRequested, BulkArchiveChunk, JobType, Service, job_stream
from contracts.notes import NoteCreated, NoteDeleted, NoteUpdated
from contracts.streams import NOTES_CREATED, NOTES_DELETED, NOTES_UPDATED
from fanout.store import FanoutStore, NoteChange
from servicekit import get_logger
from servicekit.jobs import JobRouter, Route

PRODUCER = str(Service.FANOUT)

chunks = JobRouter(group=str(Service.FANOUT))
audit = JobRouter(group="fanout.audit")
activity = JobRouter(group="fanout.activity")
log = get_logger(__name__)


@chunks.job(BulkArchiveChunk)
async def expand_bulk_archive_chunk(chunk: BulkArchiveChunk, store: FanoutStore) -> None:
    """Submit one archive job per item, ``uuid5(parent, note_id)``, at the chunk's priority."""
    async with store.transaction(chunk, group=chunks.group) as tx:
        if tx.already_processed:
            return
        children = [
            ArchiveRequested.caused_by(
                chunk,
                producer=PRODUCER,
                # Derived, like the job id: a child written twice is one outbox row, one event.
                event_id=uuid5(chunk.child_job_id(item), "requested"),
                owner_id=chunk.owner_id,
                job_id=chunk.child_job_id(item),
                parent_job_id=chunk.parent_job_id,
                note_id=item.note_id,
                version=item.version,
            )
            for item in chunk.items
        ]
        stream = job_stream(JobType.ARCHIVE, chunk.child_priority)
        submitted = await tx.submit_jobs(children, stream=stream)
    log.info(
        "bulk_chunk.expanded",
        parent_job_id=str(chunk.parent_job_id),
        chunk_no=chunk.chunk_no,
        children=submitted,
    )


@audit.event(NoteDeleted, stream=NOTES_DELETED)
@audit.event(NoteUpdated, stream=NOTES_UPDATED)
@audit.event(NoteCreated, stream=NOTES_CREATED)
async def record_note_change(change: NoteChange, store: FanoutStore) -> None:
    """Keep the note event in the audit trail."""
    async with store.transaction(change, group=audit.group) as tx:
        if tx.already_processed:
            return
        await tx.record_note_change(change)


@activity.event(NoteDeleted, stream=NOTES_DELETED)
@activity.event(NoteUpdated, stream=NOTES_UPDATED)
@activity.event(NoteCreated, stream=NOTES_CREATED)
async def count_owner_activity(change: NoteChange, store: FanoutStore) -> None:
    """Count the change against its owner."""
    async with store.transaction(change, group=activity.group) as tx:
        if tx.already_processed:
            return
        await tx.count_owner_activity(change.owner_id, change.occurred_at)


routes: list[Route] = [*chunks.routes, *audit.routes, *activity.routes]
"""Every route fanout serves, one consumer group per isolated handler."""
