"""Unit tests: the worker's handlers called with an in-memory store, no Redis or PostgreSQL.

What the store does with a decision (forward-only status, parent progress, locks) is proven
against PostgreSQL in test_worker.py, test_bulk.py, test_reconciler.py and test_job_retention.py.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4, uuid5

import pytest

from contracts import (
    COMMANDS_COMPLETED,
    NOTES_CREATED,
    AutoArchiveRequested,
    ChunkItem,
    CommandCompleted,
    Event,
    JobDeadLettered,
    JobFailed,
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
    copy_note_id,
    utc_now,
)
from notes_api.jobs import moves_forward
from notes_api.models import Job
from notes_api.worker import handlers
from notes_api.worker.handlers import (
    auto_archive_notes,
    insert_copied_note,
    mark_note_archived,
    purge_expired_idempotency_keys,
    record_job_status,
    router,
)

TICK = datetime(2024, 1, 1, 3, 0, tzinfo=UTC)


class StoreError(Exception):
    """A database error, as the real store would raise it."""


class FakeTransaction:
    """Collects what the handler did; the store keeps it only if the block ends without error."""

    def __init__(self, store: FakeWorkerStore, already_processed: bool) -> None:
        self.store = store
        self.already_processed = already_processed
        self.jobs: dict[UUID, Job] = {}
        self.archived: list[tuple[UUID, str]] = []
        self.notes: dict[UUID, NoteSnapshot] = {}
        self.advanced: list[Advance] = []
        self.lost_chunks: list[tuple[UUID, UUID, JobStatus, str]] = []
        self.bulk_parents: dict[UUID, tuple[str, list[ChunkItem]]] = {}
        self.purged_before: list[datetime] = []
        self.emitted: list[tuple[Event, str]] = []
        self.new_events: list[Event] = []

    def _fail_on(self, operation: str) -> None:
        if self.store.fail_on == operation:
            raise StoreError(operation)

    async def mark_note_archived(self, note_id: UUID, owner_id: str) -> None:
        self.archived.append((note_id, owner_id))

    async def mark_notes_archived(self, notes: Sequence[tuple[UUID, str]]) -> None:
        self.archived += notes

    async def insert_note(self, note: NoteSnapshot) -> bool:
        if note.id in self.store.notes or note.id in self.notes:
            return False
        self.notes[note.id] = note
        return True

    async def find_job(self, job_id: UUID) -> Job | None:
        return self.jobs.get(job_id) or self.store.jobs.get(job_id)

    async def find_jobs(self, job_ids: Iterable[UUID]) -> dict[UUID, Job]:
        found = {job_id: await self.find_job(job_id) for job_id in job_ids}
        return {job_id: job for job_id, job in found.items() if job is not None}

    async def find_or_add_bulk_children(
        self, children: Sequence[tuple[UUID, UUID, str | None]]
    ) -> dict[UUID, Job]:
        found = {c[0]: await self.find_or_add_bulk_child(*c) for c in children}
        return {job_id: job for job_id, job in found.items() if job is not None}

    async def succeed_jobs(self, results: Sequence[tuple[Job, dict[str, Any]]]) -> int:
        moved = [await self.advance_job(job, JobStatus.SUCCEEDED, result=r) for job, r in results]
        return sum(moved)

    async def find_or_add_bulk_child(
        self, job_id: UUID, parent_id: UUID, owner_id: str | None
    ) -> Job | None:
        parent = await self.find_job(parent_id)
        if parent is None:
            return None
        child = await self.find_job(job_id)
        if child is None:
            child = job(owner_id or parent.owner_id, JobType.ARCHIVE, job_id=job_id,
                        parent_id=parent_id)  # fmt: skip
            self.jobs[job_id] = child
        return child

    async def advance_job(
        self,
        job: Job,
        status: JobStatus,
        *,
        attempt: int | None = None,
        attempt_record: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> bool:
        self._fail_on("advance_job")
        if not moves_forward(job, status, attempt):
            return False
        self.advanced.append(Advance(job.id, status, attempt, attempt_record, fields))
        self.jobs[job.id] = Job(**{**job.model_dump(), "status": str(status)})
        return True

    async def lose_chunk(
        self, chunk_id: UUID, parent_id: UUID, status: JobStatus, error: str
    ) -> int:
        self.lost_chunks.append((chunk_id, parent_id, status, error))
        return 1

    async def purge_expired_idempotency_keys(self, older_than: datetime) -> int:
        self.purged_before.append(older_than)
        return 3

    async def emit(self, event: Event, *, stream: str, aggregate_id: str) -> None:
        assert not self.already_processed
        self.emitted.append((event, stream))


@dataclass(frozen=True)
class Advance:
    """One status move the handler asked the store for."""

    job_id: UUID
    status: JobStatus
    attempt: int | None
    record: Mapping[str, Any] | None
    fields: dict[str, Any]


class FakeWorkerStore:
    """Keeps what a committed transaction did; drops what a failed one did, like PostgreSQL."""

    def __init__(self) -> None:
        self.jobs: dict[UUID, Job] = {}
        self.notes: dict[UUID, NoteSnapshot] = {}
        self.archived: list[tuple[UUID, str]] = []
        self.advanced: list[Advance] = []
        self.lost_chunks: list[tuple[UUID, UUID, JobStatus, str]] = []
        self.bulk_parents: dict[UUID, tuple[str, list[ChunkItem]]] = {}
        self.purged_before: list[datetime] = []
        self.emitted: list[tuple[Event, str]] = []
        self.processed: set[UUID] = set()
        self.transactions = 0
        self.candidates: dict[str, list[ChunkItem]] = {}
        """Owner → the notes an auto-archive filter would match."""
        self.queries: list[tuple[Any, ...]] = []
        self.fail_on: str | None = None

    def add(self, job: Job) -> Job:
        self.jobs[job.id] = job
        return job

    @asynccontextmanager
    async def transaction(self, event: Event | None) -> AsyncIterator[FakeTransaction]:
        self.transactions += 1
        processed = event is not None and event.event_id in self.processed
        tx = FakeTransaction(self, already_processed=processed)
        yield tx
        if event is not None:
            self.processed.add(event.event_id)
        self._keep(tx)

    @asynccontextmanager
    async def batch_transaction(self, events: list[Event]) -> AsyncIterator[FakeTransaction]:
        self.transactions += 1
        tx = FakeTransaction(self, already_processed=False)
        tx.new_events = [e for e in events if e.event_id not in self.processed]
        yield tx
        self.processed.update(e.event_id for e in events)
        self._keep(tx)

    def _keep(self, tx: FakeTransaction) -> None:
        self.jobs.update(tx.jobs)
        self.notes.update(tx.notes)
        self.archived += tx.archived
        self.advanced += tx.advanced
        self.lost_chunks += tx.lost_chunks
        self.bulk_parents.update(tx.bulk_parents)
        self.purged_before += tx.purged_before
        self.emitted += tx.emitted

    command_transaction = transaction

    async def command_handled(self, event: Event) -> bool:
        return event.event_id in self.processed

    async def owners_with_notes_to_archive(
        self, tag: str | None, not_updated_for_days: int | None, now: datetime
    ) -> list[str]:
        self.queries.append(("owners", tag, not_updated_for_days, now))
        return sorted(self.candidates)

    async def archive_owner(
        self,
        owner: str,
        tag: str | None,
        not_updated_for_days: int | None,
        now: datetime,
        *,
        first_job_id: UUID,
    ) -> int:
        """One parent with the owner's candidates, none without (the split into parts, each
        committed alone, is the real store's, proven against PostgreSQL in test_bulk.py)."""
        self.queries.append((owner, tag, not_updated_for_days, now))
        items = list(self.candidates.get(owner, []))
        if not items:
            return 0
        if self.fail_on == f"archive_owner:{owner}":
            raise StoreError(self.fail_on)
        self.bulk_parents[first_job_id] = (owner, items)
        return 1


def job(
    owner: str = "alice",
    job_type: JobType = JobType.ARCHIVE,
    status: JobStatus = JobStatus.ACCEPTED,
    *,
    job_id: UUID | None = None,
    **fields: Any,
) -> Job:
    now = utc_now()
    values = {"id": job_id or uuid4(), "owner_id": owner, "type": str(job_type),
              "status": str(status), "attempt": 0, "attempts": [], "created_at": now,
              "updated_at": now, **fields}  # fmt: skip
    return Job(**values)


def archived(job_id: UUID, **fields: Any) -> NoteArchived:
    values = {"producer": "archiver", "owner_id": "alice", "note_id": uuid4(), "version": 2,
              "job_id": job_id, **fields}  # fmt: skip
    return NoteArchived(**values)


def copy_completed(job_id: UUID) -> NoteCopyCompleted:
    return NoteCopyCompleted(
        producer="archiver", owner_id="alice", job_id=job_id, source_note_id=uuid4(),
        source_version=1, new_note_id=copy_note_id(job_id), title="copy", body="text", tags=["t"],
    )  # fmt: skip


def lifecycle(cls: type[Any], job_id: UUID, n: int = 1, **fields: Any) -> Any:
    values = {"producer": "archiver", "job_id": job_id, "job_type": "archive", "attempt": n,
              "stream": "jobs.archive.default", **fields}  # fmt: skip
    return cls(**values)


def failure(**fields: Any) -> dict[str, Any]:
    return {"error_class": "PermanentError", "error_message": "not owned", **fields}


def dead_letter(**fields: Any) -> dict[str, Any]:
    return failure(attempts=5, dead_letter_stream="jobs.archive.default.dlq",
                   dead_letter_id="1-0", **fields)  # fmt: skip


@pytest.fixture
def store() -> FakeWorkerStore:
    return FakeWorkerStore()


# ---- archive results ----------------------------------------------------------------------------


async def test_an_archive_result_marks_the_note_archived_and_the_job_succeeded(
    store: FakeWorkerStore,
) -> None:
    request = store.add(job())
    event = archived(request.id)

    await mark_note_archived([event], store)

    assert store.archived == [(event.note_id, "alice")]
    [advance] = store.advanced
    assert (advance.job_id, advance.status) == (request.id, JobStatus.SUCCEEDED)
    assert advance.fields == {"result": {"note_id": str(event.note_id), "version": 2}}
    assert store.emitted == []  # a parent's progress is the store's to emit, not the handler's


async def test_a_second_delivery_of_an_archive_result_changes_nothing(
    store: FakeWorkerStore,
) -> None:
    event = archived(store.add(job()).id)

    await mark_note_archived([event], store)
    await mark_note_archived([event], store)

    assert len(store.archived) == len(store.advanced) == 1


async def test_a_cancelled_jobs_archive_result_is_ignored_but_counts_as_handled(
    store: FakeWorkerStore,
) -> None:
    event = archived(store.add(job(status=JobStatus.CANCELLED)).id)

    await mark_note_archived([event], store)

    assert (store.archived, store.advanced) == ([], [])
    assert event.event_id in store.processed  # acknowledged, never retried


async def test_an_archive_result_of_a_bulk_child_creates_its_row_and_succeeds_it(
    store: FakeWorkerStore,
) -> None:
    parent = store.add(job(job_type=JobType.BULK_ARCHIVE, status=JobStatus.RUNNING))
    child_id = uuid4()

    await mark_note_archived([archived(child_id, parent_job_id=parent.id)], store)

    child = store.jobs[child_id]
    assert (child.parent_id, child.type, child.owner_id) == (parent.id, "archive", "alice")
    assert [(a.job_id, a.status) for a in store.advanced] == [(child_id, JobStatus.SUCCEEDED)]


async def test_an_archive_result_without_a_job_row_still_archives_the_note(
    store: FakeWorkerStore,
) -> None:
    event = archived(uuid4())  # e.g. purged by retention since

    await mark_note_archived([event], store)

    assert store.archived == [(event.note_id, "alice")]
    assert store.advanced == []


# ---- copy results -------------------------------------------------------------------------------


async def test_a_copy_result_inserts_the_copy_and_emits_its_created_event(
    store: FakeWorkerStore,
) -> None:
    request = store.add(job(job_type=JobType.COPY))
    event = copy_completed(request.id)

    await insert_copied_note(event, store)

    copy = store.notes[copy_note_id(request.id)]
    assert (copy.owner_id, copy.title, copy.body, copy.tags, copy.version) == (
        "alice", "copy", "text", ["t"], 1,
    )  # fmt: skip
    [(created, stream)] = store.emitted
    assert stream == NOTES_CREATED
    assert isinstance(created, NoteCreated)
    assert (created.note_id, created.version, created.note) == (copy.id, 1, copy)
    assert created.producer == str(Service.NOTES_API_WORKER)
    assert created.causation_id == str(event.event_id)
    [advance] = store.advanced
    assert (advance.job_id, advance.status) == (request.id, JobStatus.SUCCEEDED)
    assert advance.fields == {"result": {"note_id": str(copy.id)}}


async def test_a_second_copy_result_for_the_job_inserts_and_emits_nothing_more(
    store: FakeWorkerStore,
) -> None:
    request = store.add(job(job_type=JobType.COPY))
    event = copy_completed(request.id)

    await insert_copied_note(event, store)
    await insert_copied_note(event.model_copy(update={"event_id": uuid4()}), store)

    assert len(store.notes) == 1
    assert len(store.emitted) == 1
    assert len(store.advanced) == 1  # the job is terminal after the first


async def test_a_cancelled_jobs_copy_result_inserts_nothing(store: FakeWorkerStore) -> None:
    request = store.add(job(job_type=JobType.COPY, status=JobStatus.CANCELLED))

    await insert_copied_note(copy_completed(request.id), store)

    assert (store.notes, store.emitted, store.advanced) == ({}, [], [])


# ---- lifecycle events ---------------------------------------------------------------------------

PROGRESS = JobProgress(
    producer=str(Service.NOTES_API_WORKER), job_id=uuid4(), job_type="bulk_archive", total=2,
    succeeded=1, failed=0, skipped=0,
)  # fmt: skip


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(lifecycle(JobSucceeded, uuid4()), id="archive succeeded"),
        pytest.param(lifecycle(JobSucceeded, uuid4(), job_type="copy"), id="copy succeeded"),
        pytest.param(PROGRESS, id="progress"),
    ],
)
async def test_lifecycle_events_the_worker_does_not_record_open_no_transaction(
    store: FakeWorkerStore, event: Any
) -> None:
    await record_job_status([event], store)

    assert store.transactions == 0  # not even an inbox row


async def test_an_attempt_start_moves_the_job_to_running_with_the_attempt_recorded(
    store: FakeWorkerStore,
) -> None:
    request = store.add(job())
    started = lifecycle(JobStarted, request.id, 1)

    await record_job_status([started], store)

    [advance] = store.advanced
    assert (advance.status, advance.attempt, advance.fields) == (JobStatus.RUNNING, 1, {})
    assert advance.record == {"attempt": 1, "status": "running",
                              "at": started.occurred_at.isoformat(), "error": None}  # fmt: skip


async def test_a_retry_records_its_error_on_the_attempt_not_on_the_job(
    store: FakeWorkerStore,
) -> None:
    request = store.add(job(status=JobStatus.RUNNING, attempt=1))
    retrying = lifecycle(JobRetrying, request.id, 1, next_attempt_at=utc_now(), **failure())

    await record_job_status([retrying], store)

    [advance] = store.advanced
    assert advance.status == JobStatus.RETRYING
    assert advance.record is not None
    assert advance.record["error"] == "PermanentError: not owned"
    assert advance.fields == {}


@pytest.mark.parametrize(
    ("cls", "fields", "status", "error"),
    [
        (JobDeadLettered, dead_letter(), JobStatus.DEAD, "PermanentError: not owned"),
        (JobFailed, failure(), JobStatus.FAILED, "PermanentError: not owned"),
        (JobSkipped, {"reason": "note deleted"}, JobStatus.SKIPPED, "note deleted"),
    ],
)
async def test_a_final_attempt_sets_the_status_and_the_jobs_error(
    store: FakeWorkerStore, cls: type[Any], fields: dict[str, Any], status: JobStatus, error: str
) -> None:
    request = store.add(job(status=JobStatus.RUNNING, attempt=1))

    await record_job_status([lifecycle(cls, request.id, 1, **fields)], store)

    [advance] = store.advanced
    assert (advance.status, advance.fields) == (status, {"error": error})


async def test_a_skipped_bulk_child_without_a_row_gets_one_owned_by_the_parents_owner(
    store: FakeWorkerStore,
) -> None:
    parent = store.add(job("bob", JobType.BULK_ARCHIVE, JobStatus.RUNNING))
    child_id = uuid4()
    skipped = lifecycle(JobSkipped, child_id, reason="note deleted", parent_job_id=parent.id)

    await record_job_status([skipped], store)

    assert store.jobs[child_id].owner_id == "bob"
    assert [(a.job_id, a.status) for a in store.advanced] == [(child_id, JobStatus.SKIPPED)]


@pytest.mark.parametrize(
    ("cls", "fields", "status"),
    [(JobDeadLettered, dead_letter(), JobStatus.DEAD), (JobFailed, failure(), JobStatus.FAILED)],
)
async def test_a_lost_bulk_chunk_counts_its_items_on_the_parent_with_its_status(
    store: FakeWorkerStore, cls: type[Any], fields: dict[str, Any], status: JobStatus
) -> None:
    chunk_id, parent_id = uuid4(), uuid4()
    lost = lifecycle(cls, chunk_id, 5, job_type="bulk_archive_chunk", parent_job_id=parent_id,
                     **fields)  # fmt: skip

    await record_job_status([lost], store)

    assert store.lost_chunks == [(chunk_id, parent_id, status, "PermanentError: not owned")]
    assert store.advanced == []


async def test_a_bulk_childs_start_is_not_recorded_its_outcome_is(
    store: FakeWorkerStore,
) -> None:
    parent = store.add(job("bob", JobType.BULK_ARCHIVE, JobStatus.RUNNING))
    child_id = uuid4()

    await record_job_status([lifecycle(JobStarted, child_id, parent_job_id=parent.id)], store)
    assert (store.transactions, store.advanced) == (0, [])  # not even an inbox row

    await mark_note_archived([archived(child_id, parent_job_id=parent.id)], store)
    assert [(a.job_id, a.status) for a in store.advanced] == [(child_id, JobStatus.SUCCEEDED)]


async def test_a_lifecycle_event_about_no_job_of_ours_changes_nothing_but_counts_as_handled(
    store: FakeWorkerStore,
) -> None:
    chunk_started = lifecycle(JobStarted, uuid4(), job_type="bulk_archive_chunk")

    await record_job_status([chunk_started], store)

    assert store.advanced == []
    assert chunk_started.event_id in store.processed


async def test_a_second_delivery_of_a_lifecycle_event_changes_nothing(
    store: FakeWorkerStore,
) -> None:
    request = store.add(job())
    started = lifecycle(JobStarted, request.id, 1)

    await record_job_status([started], store)
    store.jobs[request.id] = request  # even were the status still `accepted`
    await record_job_status([started], store)

    assert len(store.advanced) == 1


# ---- scheduled commands -------------------------------------------------------------------------


def items(n: int) -> list[ChunkItem]:
    return [ChunkItem(note_id=uuid4(), version=1) for _ in range(n)]


def tick(**fields: Any) -> AutoArchiveRequested:
    return AutoArchiveRequested.for_tick(schedule="auto-archive", tick_at=TICK,
                                         producer="scheduler", **fields)  # fmt: skip


async def test_auto_archive_creates_one_parent_per_owner_with_notes_under_ids_from_the_tick(
    store: FakeWorkerStore,
) -> None:
    store.candidates = {"alice": items(2), "bob": items(1), "carol": []}
    event = tick(not_updated_for_days=30, tag="t")

    await auto_archive_notes(event, store)

    assert store.bulk_parents == {
        uuid5(event.event_id, "alice"): ("alice", store.candidates["alice"]),
        uuid5(event.event_id, "bob"): ("bob", store.candidates["bob"]),
    }  # no empty parent for carol
    assert ("owners", "t", 30, TICK) in store.queries  # the cutoff counts from the tick
    assert completions(store) == [(event.event_id, "auto-archive")]


async def test_auto_archive_for_one_owner_looks_at_that_owner_only(
    store: FakeWorkerStore,
) -> None:
    store.candidates = {"alice": items(1), "bob": items(1)}

    await auto_archive_notes(tick(owner_id="bob", not_updated_for_days=1), store)

    assert [owner for owner, _ in store.bulk_parents.values()] == ["bob"]
    assert [query[0] for query in store.queries] == ["bob"]


async def test_the_same_tick_from_another_replica_creates_nothing_more(
    store: FakeWorkerStore,
) -> None:
    store.candidates = {"alice": items(1)}

    await auto_archive_notes(tick(not_updated_for_days=30), store)
    await auto_archive_notes(tick(not_updated_for_days=30), store)

    assert len(store.bulk_parents) == 1
    assert len(store.queries) == 2  # owners, then alice's notes: once
    assert len(completions(store)) == 1  # the completion goes out with the one handling


async def test_an_owner_that_fails_keeps_the_others_parents_and_the_retry_finishes_it(
    store: FakeWorkerStore,
) -> None:
    store.candidates = {"alice": items(1), "bob": items(1), "carol": items(1)}
    store.fail_on = "archive_owner:bob"
    event = tick(not_updated_for_days=30)

    with pytest.raises(StoreError):  # the runtime retries the command
        await auto_archive_notes(event, store)
    assert sorted(owner for owner, _ in store.bulk_parents.values()) == ["alice", "carol"]
    assert completions(store) == []  # not handled yet: no inbox row, no completion

    store.fail_on = None
    await auto_archive_notes(event, store)
    assert sorted(owner for owner, _ in store.bulk_parents.values()) == ["alice", "bob", "carol"]
    assert completions(store) == [(event.event_id, "auto-archive")]


async def test_purge_deletes_idempotency_keys_created_before_the_commands_time_once(
    store: FakeWorkerStore,
) -> None:
    older_than = TICK - timedelta(hours=24)
    event = PurgeExpiredIdempotencyKeys.for_tick(
        schedule="purge", tick_at=TICK, producer="scheduler", older_than=older_than
    )

    await purge_expired_idempotency_keys(event, store)
    await purge_expired_idempotency_keys(event, store)

    assert store.purged_before == [older_than]
    assert completions(store) == [(event.event_id, "purge")]


async def test_a_tick_with_nothing_to_archive_still_reports_its_run_completed(
    store: FakeWorkerStore,
) -> None:
    event = tick(not_updated_for_days=30)

    await auto_archive_notes(event, store)

    assert store.bulk_parents == {}
    assert completions(store) == [(event.event_id, "auto-archive")]


def completions(store: FakeWorkerStore) -> list[tuple[UUID, str]]:
    """The commands.completed.v1 events emitted: (command id, schedule)."""
    return [
        (event.command_id, event.schedule)
        for event, stream in store.emitted
        if isinstance(event, CommandCompleted) and stream == COMMANDS_COMPLETED
    ]


# ---- failures and shape -------------------------------------------------------------------------


async def test_a_store_error_propagates_and_nothing_of_the_transaction_is_kept(
    store: FakeWorkerStore,
) -> None:
    request = store.add(job())
    event = archived(request.id)
    store.fail_on = "advance_job"

    with pytest.raises(StoreError):  # the runtime retries it
        await mark_note_archived([event], store)
    assert (store.archived, store.processed) == ([], set())

    store.fail_on = None
    await mark_note_archived([event], store)  # the retry applies it
    assert len(store.archived) == len(store.advanced) == 1


def test_every_handler_takes_its_event_and_the_store_only() -> None:
    for route in router.routes:
        parameters = list(inspect.signature(route.handler).parameters)
        assert parameters[1:] == ["store"], route.name


def test_handlers_hold_no_sql_and_no_engine() -> None:
    tree = ast.parse(Path(inspect.getfile(handlers)).read_text())
    imported = {
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else [a.name for a in node.names]
        )
    }
    assert not {m for m in imported if m.split(".")[0] in {"sqlalchemy", "sqlmodel", "asyncpg"}}
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not names & {"engine", "AsyncEngine", "handler_transaction"}


def test_the_group_and_producer_are_the_services_name() -> None:
    assert router.group == str(Service.NOTES_API_WORKER)
    assert str(Service.NOTES_API_WORKER) == handlers.PRODUCER
