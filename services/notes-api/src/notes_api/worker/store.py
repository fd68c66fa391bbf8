"""The worker's one adapter: notes, jobs and bulk chunks in schema `notes`.

Every write happens in a :class:`WorkerTransaction`, the unit of work of one handled event: the
effect, the event's inbox row (group `notes-api-worker`) and the events it emits commit together,
so a redelivery changes nothing. Statements are written against the SQLModel classes of
`notes_api.models` and run as Core statements on the transaction's connection (no ORM unit of work
on the hot path: results and lifecycle events). A scheduled command runs in a
:class:`CommandTransaction` instead (the same handler transaction), because it writes through the
helpers the HTTP routes use (bulk archive, idempotency records).

Job status only moves forward (`notes_api.jobs.moves_forward`). A child's result writes the
child's row only: it never locks its parent, so 10,000 children of one bulk archive do not queue
on one row. The parent's progress is counted afterwards from its children's rows
(`count_progress`, by `notes_api.worker.progress` every few hundred milliseconds): one locked
update and one progress event per parent per round, however many children finished in it, and its
completion through the outbox when every child is done. A lost bulk chunk (dead-lettered or
failed, so never expanded) moves its children that have no terminal status yet to the chunk's
status, so they count as failed and the parent completes.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from sqlalchemy import bindparam, func, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col, select

from contracts import (
    JOBS_LIFECYCLE,
    TERMINAL_STATUSES,
    Event,
    JobCompleted,
    JobProgress,
    JobStatus,
    JobType,
    NoteSnapshot,
    Service,
    bulk_child_job_id,
    utc_now,
)
from notes_api.bulk import part_job_id, write_auto_archive_part
from notes_api.bulk_selection import BulkFilter, matching_owners
from notes_api.idempotency import purge_expired
from notes_api.jobs import moves_forward
from notes_api.models import BulkChunk, Job, Note
from notes_api.settings import SCHEMA, NotesApiSettings
from servicekit import (
    BatchTransaction,
    HandlerTransaction,
    get_logger,
    handler_transaction,
    handler_transaction_batch,
)
from servicekit.inbox import inbox_table, tables_for_schema

GROUP = str(Service.NOTES_API_WORKER)
"""The worker's consumer group on every stream it reads; its inbox rows carry it."""
PRODUCER = str(Service.NOTES_API_WORKER)
"""The producer of the events the worker emits (a copy's created event, a parent's progress)."""

_BUCKET = {
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.SKIPPED: "skipped",
    JobStatus.FAILED: "failed",
    JobStatus.DEAD: "failed",
    JobStatus.CANCELLED: "failed",
}
_TERMINAL = [str(s) for s in TERMINAL_STATUSES]
_BULK_ARCHIVE_MAX_ITEMS: int = NotesApiSettings.model_fields["bulk_archive_max_items"].default
_log = get_logger("notes_api.worker")
E = TypeVar("E", bound=Event)


_SUCCEED = (
    update(Job)
    .where(col(Job.id) == bindparam("b_id"))
    .values(status=str(JobStatus.SUCCEEDED), result=bindparam("b_result"),
            updated_at=bindparam("b_updated_at"))
)  # fmt: skip
"""A job's success with its result; executed with one parameter set per job (bound names
must differ from the columns')."""


def _job(row: Any) -> Job:
    """A `jobs` row read on the connection, as the table class (for the status rule)."""
    return Job.model_validate(row._mapping)


class WorkerTransaction:
    """One handler's unit of work on schema `notes`; commits when its block ends."""

    def __init__(self, tx: HandlerTransaction) -> None:
        self._tx = tx
        self._connection: AsyncConnection = tx.connection
        self.already_processed = tx.already_processed
        """True when the worker's group already handled this event: do nothing and return."""
        self.parents_to_count: set[UUID] = set()
        """Parents whose children this transaction finished: counted once it commits."""

    # ---- notes ---------------------------------------------------------------------------------

    async def mark_note_archived(self, note_id: UUID, owner_id: str) -> None:
        """Set the note's archived time, unless it is set already (or the note is gone)."""
        await self._connection.execute(
            update(Note)
            .where(col(Note.id) == note_id, col(Note.owner_id) == owner_id)
            .values(archived_at=func.coalesce(col(Note.archived_at), func.now()))
        )

    async def mark_notes_archived(self, notes: Sequence[tuple[UUID, str]]) -> None:
        """:meth:`mark_note_archived` for each ``(note_id, owner_id)``, in one statement."""
        if not notes:
            return
        await self._connection.execute(
            update(Note)
            .where(tuple_(col(Note.id), col(Note.owner_id)).in_(list(notes)))
            .values(archived_at=func.coalesce(col(Note.archived_at), func.now()))
        )

    async def insert_note(self, note: NoteSnapshot) -> bool:
        """Insert ``note`` unless its id exists; return whether it was inserted."""
        inserted = await self._connection.execute(
            insert(Note)
            .values(**note.model_dump())
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(col(Note.id))
        )
        return inserted.first() is not None

    # ---- jobs ----------------------------------------------------------------------------------

    async def find_job(self, job_id: UUID) -> Job | None:
        """The job's row, locked until the transaction ends; None if there is none."""
        row = (
            await self._connection.execute(
                select(Job).where(col(Job.id) == job_id).with_for_update()
            )
        ).first()
        return _job(row) if row is not None else None

    async def find_jobs(self, job_ids: Iterable[UUID]) -> dict[UUID, Job]:
        """:meth:`find_job` for many, in one statement (locked in id order, as batches sort)."""
        ids = sorted(set(job_ids))
        if not ids:
            return {}
        rows = await self._connection.execute(
            select(Job).where(col(Job.id).in_(ids)).order_by(col(Job.id)).with_for_update()
        )
        return {job.id: job for job in map(_job, rows)}

    async def find_or_add_bulk_child(
        self, job_id: UUID, parent_id: UUID, owner_id: str | None
    ) -> Job | None:
        """The row of a bulk archive's child, created on its first event (fanout made the job).

        None if the parent is unknown (purged, or not a job of ours).
        """
        return (await self.find_or_add_bulk_children([(job_id, parent_id, owner_id)])).get(job_id)

    async def find_or_add_bulk_children(
        self, children: Sequence[tuple[UUID, UUID, str | None]]
    ) -> dict[UUID, Job]:
        """:meth:`find_or_add_bulk_child` for each ``(job_id, parent_id, owner_id)``.

        Three statements however many: the parents, one insert, the rows (locked). A child
        whose parent is unknown is left out.
        """
        parent_ids = sorted({parent_id for _, parent_id, _ in children})
        parents = {
            row.id: row
            for row in await self._connection.execute(
                select(Job.id, Job.owner_id, Job.priority).where(col(Job.id).in_(parent_ids))
            )
        }
        now = utc_now()
        rows = [
            {
                "id": job_id,
                "owner_id": owner_id or parents[parent_id].owner_id,
                "type": str(JobType.ARCHIVE),
                "status": str(JobStatus.ACCEPTED),
                "parent_id": parent_id,
                "attempt": 0,
                "attempts": [],
                "created_at": now,
                "updated_at": now,
                "priority": parents[parent_id].priority,  # children run at their parent's
            }
            for job_id, parent_id, owner_id in children
            if parent_id in parents
        ]
        if not rows:
            return {}
        # Parameters, not `.values(rows)`: one cached statement, its rows sent as one batch.
        await self._connection.execute(
            insert(Job).on_conflict_do_nothing(index_elements=["id"]), rows
        )
        return await self.find_jobs(row["id"] for row in rows)

    async def advance_job(
        self,
        job: Job,
        status: JobStatus,
        *,
        attempt: int | None = None,
        attempt_record: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> bool:
        """Move ``job`` to ``status`` if that is forward; count it in its parent; return if moved.

        ``attempt_record`` is appended to the job's attempts; ``fields`` (``error``, ``result``)
        are written with the status.
        """
        if not moves_forward(job, status, attempt):
            return False
        values: dict[str, Any] = {"status": str(status), "updated_at": utc_now(), **fields}
        if attempt is not None:
            values["attempt"] = max(job.attempt, attempt)
        if attempt_record is not None:
            values["attempts"] = [*job.attempts, dict(attempt_record)]
        await self._connection.execute(update(Job).where(col(Job.id) == job.id).values(**values))
        if status in TERMINAL_STATUSES and job.parent_id is not None:
            self.parents_to_count.add(job.parent_id)
        return True

    async def succeed_jobs(self, results: Sequence[tuple[Job, dict[str, Any]]]) -> int:
        """:meth:`advance_job` to `succeeded` with its result, for each ``(job, result)``.

        One statement (its rows sent as one batch) for the jobs that move; returns how many.
        """
        now, moving, seen = utc_now(), [], set()
        for job, result in results:
            if job.id in seen or not moves_forward(job, JobStatus.SUCCEEDED, None):
                continue
            seen.add(job.id)
            moving.append({"b_id": job.id, "b_result": result, "b_updated_at": now})
            if job.parent_id is not None:
                self.parents_to_count.add(job.parent_id)
        if moving:
            await self._connection.execute(_SUCCEED, moving)
        return len(moving)

    async def lose_chunk(
        self, chunk_id: UUID, parent_id: UUID, status: JobStatus, error: str
    ) -> int:
        """Finish a dead or failed chunk's unfinished items with its status, once; return how many.

        Children the chunk never produced get a row with the chunk's status; children that exist
        without a terminal status (it died after publishing some) move to it; children already
        terminal keep their own result. The parent counts them (as failed) from their rows.
        """
        chunk = (
            await self._connection.execute(
                select(BulkChunk)
                .where(col(BulkChunk.id) == chunk_id, col(BulkChunk.parent_id) == parent_id)
                .with_for_update()
            )
        ).first()
        if chunk is None or chunk.lost_at is not None:
            return 0  # not a chunk of ours, or already counted
        parent = await self._parent(parent_id)
        if parent is None:
            return 0
        await self._connection.execute(
            update(BulkChunk).where(col(BulkChunk.id) == chunk_id).values(lost_at=func.now())
        )
        child_ids = [bulk_child_job_id(parent_id, note_id) for note_id in chunk.note_ids]
        values = {"status": str(status), "error": f"bulk chunk {chunk.chunk_no} lost: {error}",
                  "updated_at": utc_now()}  # fmt: skip
        moved = await self._connection.execute(
            update(Job)
            .where(col(Job.id).in_(child_ids), col(Job.status).not_in(_TERMINAL))
            .values(**values)
            .returning(col(Job.id))
        )
        failed = len(moved.all())
        new_child = {
            "owner_id": parent.owner_id, "type": str(JobType.ARCHIVE), "parent_id": parent_id,
            "attempt": 0, "attempts": [], "created_at": values["updated_at"],
            "priority": parent.priority, **values,
        }  # fmt: skip
        rows = [{"id": child_id, **new_child} for child_id in child_ids]
        inserted = await self._connection.execute(
            insert(Job)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(col(Job.id))
        )
        failed += len(inserted.all())
        _log.info("bulk_chunk.lost", chunk_id=str(chunk_id), parent_id=str(parent_id),
                  failed=failed)  # fmt: skip
        if failed:
            self.parents_to_count.add(parent_id)
        return failed

    async def _parent(self, parent_id: UUID) -> Any:
        """The parent's owner and priority (a row), or None if there is no such job."""
        return (
            await self._connection.execute(
                select(Job.owner_id, Job.priority).where(col(Job.id) == parent_id)
            )
        ).first()

    async def count_progress(self, parent_id: UUID) -> bool:
        """Count the parent's children from their rows; emit its progress (and completion).

        Under the parent's row lock, so replicas counting the same parent take turns and the
        completion goes out once. Nothing is written or sent when the counts did not change.
        Returns whether they did.
        """
        parent = await self.find_job(parent_id)
        if parent is None or JobStatus(parent.status) in TERMINAL_STATUSES:
            return False
        if parent.progress is None:
            return False
        rows = await self._connection.execute(
            select(Job.status, func.count())
            .where(col(Job.parent_id) == parent_id, col(Job.status).in_(_TERMINAL))
            .group_by(col(Job.status))
        )
        progress = {"total": parent.progress["total"], "succeeded": 0, "failed": 0, "skipped": 0}
        for status, n in rows:
            progress[_BUCKET[JobStatus(status)]] += n
        if progress == parent.progress:
            return False
        done = progress["succeeded"] + progress["failed"] + progress["skipped"]
        final = None
        if done >= progress["total"]:
            final = JobStatus.SUCCEEDED if progress["failed"] == 0 else JobStatus.FAILED
        await self._connection.execute(
            update(Job)
            .where(col(Job.id) == parent_id)
            .values(status=str(final or JobStatus.RUNNING), progress=progress, updated_at=utc_now())
        )
        common = {"producer": PRODUCER, "job_id": parent_id, "job_type": parent.type,
                  "trace_id": parent.trace_id, **progress}  # fmt: skip
        await self.emit(JobProgress(**common), stream=JOBS_LIFECYCLE, aggregate_id=str(parent_id))
        if final is not None:
            completed = JobCompleted(**common, status=final)
            await self.emit(completed, stream=JOBS_LIFECYCLE, aggregate_id=str(parent_id))
        return True

    # ---- events ----------------------------------------------------------------------------------

    async def emit(self, event: Event, *, stream: str, aggregate_id: str) -> None:
        """Add ``event`` to the outbox; the relay publishes it after commit."""
        await self._tx.emit(event, stream=stream, aggregate_id=aggregate_id)


class WorkerBatch(WorkerTransaction, Generic[E]):
    """A batch handler's unit of work: :class:`WorkerTransaction` for each of ``new_events``.

    ``new_events`` are the batch's events the worker's group has not handled before; they are
    all handled in one transaction, in job-id order (so two batches lock rows in one order).
    """

    def __init__(self, batch: BatchTransaction[E]) -> None:
        super().__init__(HandlerTransaction(batch.connection, SCHEMA, already_processed=False))
        self.new_events: list[E] = sorted(batch.new_events, key=_job_id_of)


def _job_id_of(event: Event) -> str:
    return str(getattr(event, "job_id", ""))


class CommandTransaction:
    """One scheduled command's unit of work: inbox row, effect (a purge) and completion event.

    It writes through the helpers the HTTP routes use (`idempotency.py`). An auto-archive writes
    its parents before, each in a transaction of its own (`WorkerStore.archive_owner`), and only
    its completion here.
    """

    def __init__(self, tx: HandlerTransaction, *, bulk_archive_max_items: int) -> None:
        self._tx = tx
        self._connection = tx.connection
        self._items_per_parent = bulk_archive_max_items
        self.already_processed = tx.already_processed
        """True when the worker's group already handled this command: do nothing and return."""

    async def purge_expired_idempotency_keys(self, older_than: datetime) -> int:
        """Delete idempotency records that expired and were created before ``older_than``."""
        return await purge_expired(self._connection, older_than)

    async def emit(self, event: Event, *, stream: str, aggregate_id: str) -> None:
        """Add ``event`` to the outbox; the relay publishes it after commit."""
        await self._tx.emit(event, stream=stream, aggregate_id=aggregate_id)


class WorkerStore:
    """Opens the worker's transactions on schema `notes`."""

    def __init__(
        self, engine: AsyncEngine, *, bulk_archive_max_items: int = _BULK_ARCHIVE_MAX_ITEMS
    ) -> None:
        self._engine = engine
        self._bulk_archive_max_items = bulk_archive_max_items
        self._parents_to_count: set[UUID] = set()

    def count_later(self, parent_ids: Iterable[UUID]) -> None:
        """Leave these parents to the next `count_parents`."""
        self._parents_to_count.update(parent_ids)

    async def count_parents(self) -> int:
        """Count the progress of every parent left to count; return how many changed.

        Each parent in a transaction of its own (its row locked for that one statement's
        while); a parent whose count fails stays left to count.
        """
        waiting, self._parents_to_count = self._parents_to_count, set()
        changed = 0
        for parent_id in sorted(waiting):
            try:
                async with self.transaction(None) as tx:
                    changed += await tx.count_progress(parent_id)
            except Exception:
                self._parents_to_count.update(p for p in waiting if p >= parent_id)
                raise
        return changed

    async def open_bulk_parents(self) -> list[UUID]:
        """Bulk archive parents not finished yet (a sweep: ones a lost process left uncounted)."""
        async with self._engine.connect() as connection:
            found = await connection.execute(
                select(Job.id).where(
                    col(Job.type) == str(JobType.BULK_ARCHIVE),
                    col(Job.status).in_([str(JobStatus.ACCEPTED), str(JobStatus.RUNNING)]),
                )
            )
            return list(found.scalars())

    @asynccontextmanager
    async def batch_transaction(self, events: Sequence[E]) -> AsyncIterator[WorkerBatch[E]]:
        """Handle a batch once for the worker's group, in one transaction; roll back on error.

        The hot path of a bulk archive: its children's results and lifecycle events.
        """
        async with handler_transaction_batch(
            self._engine, schema=SCHEMA, group=GROUP, events=events
        ) as batch:
            work = WorkerBatch(batch)
            yield work
        self.count_later(work.parents_to_count)

    @asynccontextmanager
    async def transaction(self, event: Event | None) -> AsyncIterator[WorkerTransaction]:
        """Handle ``event`` once for the worker's group: commit on exit, roll back on error.

        Core statements on one connection (no ORM unit of work): results and lifecycle events
        are the worker's hot path. With ``event`` None (the reconciler's own decision) no inbox
        row is written.
        """
        if event is None:
            async with self._engine.begin() as connection:
                work = WorkerTransaction(
                    HandlerTransaction(connection, SCHEMA, already_processed=False)
                )
                yield work
        else:
            async with handler_transaction(
                self._engine, schema=SCHEMA, group=GROUP, event=event
            ) as tx:
                work = WorkerTransaction(tx)
                yield work
        self.count_later(work.parents_to_count)  # committed: their children's rows are final

    async def command_handled(self, event: Event) -> bool:
        """Whether the worker's group already handled this command (its inbox row committed)."""
        inbox = inbox_table(tables_for_schema(SCHEMA))
        async with self._engine.connect() as connection:
            found = await connection.execute(
                select(inbox.c.event_id).where(
                    inbox.c.consumer_group == GROUP, inbox.c.event_id == event.event_id
                )
            )
            return found.first() is not None

    async def owners_with_notes_to_archive(
        self, tag: str | None, not_updated_for_days: int | None, now: datetime
    ) -> list[str]:
        """Owners with at least one unarchived note the filter matches (cutoff from ``now``)."""
        async with self._engine.connect() as connection:
            return await matching_owners(connection, BulkFilter(tag, not_updated_for_days, now))

    async def archive_owner(
        self,
        owner: str,
        tag: str | None,
        not_updated_for_days: int | None,
        now: datetime,
        *,
        first_job_id: UUID,
    ) -> int:
        """Archive the owner's matching notes as bulk parents; return how many were written now.

        Each parent holds at most BULK_ARCHIVE_MAX_ITEMS notes (the HTTP route's path, `bulk.py`)
        and commits in a transaction of its own, so one owner of a million notes never holds one
        huge transaction, and a failure keeps the parts written before it. Run again (the same
        tick redelivered, or retried), it reads back the parts written and writes only the rest:
        parts keep their ids (`part_job_id`), and a note a parent in flight carries is never
        taken twice.
        """
        match = BulkFilter(tag, not_updated_for_days, now)
        after: UUID | None = None
        written = 0
        for number in itertools.count():
            async with self._engine.begin() as connection:
                part = await write_auto_archive_part(
                    connection, owner, match, job_id=part_job_id(first_job_id, number),
                    after=after, items_per_parent=self._bulk_archive_max_items,
                )  # fmt: skip
            if part is None:
                break
            written += part.written_now
            if part.total < self._bulk_archive_max_items:
                break
            after = part.last_note_id
        return written

    @asynccontextmanager
    async def command_transaction(self, event: Event) -> AsyncIterator[CommandTransaction]:
        """Handle a scheduled command once for the worker's group; roll back on error.

        A concurrent delivery of the same command waits on its inbox row, then sees
        ``already_processed``.
        """
        async with handler_transaction(self._engine, schema=SCHEMA, group=GROUP, event=event) as tx:
            yield CommandTransaction(tx, bulk_archive_max_items=self._bulk_archive_max_items)
