"""Unit tests: the handlers called with an in-memory store, no Redis or PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

import pytest

from archiver.handlers import archive_note, copy_note, record_note_deletion, store_note_version
from archiver.store import NoteChange, NoteVersion, StoredNote, content_checksum
from contracts import ArchiveRequested, Event
from contracts.notes import NoteArchived, NoteCopyCompleted, NoteDeleted, copy_note_id
from contracts.streams import NOTES_ARCHIVED, NOTES_COPY_COMPLETED
from servicekit import PermanentError, SkipJob, TransientError

from .conftest import archive_request, copy_request, note_created, note_deleted, note_updated


class FakeTransaction:
    def __init__(self, store: FakeArchiveStore, already_processed: bool) -> None:
        self.store = store
        self.already_processed = already_processed
        self.emitted: list[tuple[Event, str]] = []
        self.frozen: dict[tuple[UUID, int], NoteVersion] = {}
        self.saved: list[NoteChange] = []

    async def save_version(self, change: NoteChange) -> None:
        self.saved.append(change)

    async def find_note(self, note_id: UUID, version: int) -> StoredNote | None:
        versions = [v for (n, _), v in self.store.versions.items() if n == note_id]
        if not versions:
            return None
        return StoredNote(
            owner_id=versions[0].owner_id,
            deleted=note_id in self.store.deleted,
            version=self.store.versions.get((note_id, version)),
        )

    async def freeze_snapshot(self, version: NoteVersion, *, job_id: UUID) -> None:
        self.frozen.setdefault((version.note_id, version.version), version)

    async def emit(self, event: Event, *, stream: str, aggregate_id: str) -> None:
        self.emitted.append((event, stream))


class FakeBatch(FakeTransaction):
    def __init__(self, store: FakeArchiveStore, requests: list[ArchiveRequested]) -> None:
        super().__init__(store, already_processed=False)
        self.new_events = [r for r in requests if r.event_id not in store.processed]
        self.released: list[ArchiveRequested] = []

    async def release(self, request: ArchiveRequested) -> None:
        self.released.append(request)

    async def find_notes(
        self, wanted: Sequence[tuple[UUID, int]]
    ) -> dict[tuple[UUID, int], StoredNote]:
        found = {key: await self.find_note(*key) for key in wanted}
        return {key: note for key, note in found.items() if note is not None}

    async def freeze_snapshots(self, frozen: Sequence[tuple[NoteVersion, UUID]]) -> None:
        for version, job_id in frozen:
            await self.freeze_snapshot(version, job_id=job_id)

    async def emit_all(
        self, events: Sequence[Event], *, stream: str, aggregate_id: Callable[[Any], str]
    ) -> None:
        for event in events:
            await self.emit(event, stream=stream, aggregate_id=aggregate_id(event))


class FakeArchiveStore:
    """Keeps what a committed transaction did; drops what a failed one did, like PostgreSQL."""

    def __init__(self) -> None:
        self.versions: dict[tuple[UUID, int], NoteVersion] = {}
        self.deleted: set[UUID] = set()
        self.processed: set[UUID] = set()
        self.snapshots: dict[tuple[UUID, int], NoteVersion] = {}
        self.emitted: list[tuple[Event, str]] = []
        self.released: list[ArchiveRequested] = []

    def add(self, change: NoteChange) -> None:
        note = change.note
        self.versions[(change.note_id, change.version)] = NoteVersion(
            note.id, change.version, note.owner_id, note.title, note.body, list(note.tags),
            note.created_at, note.updated_at,
        )  # fmt: skip
        if isinstance(change, NoteDeleted):
            self.deleted.add(change.note_id)

    @asynccontextmanager
    async def transaction(self, event: Event) -> AsyncIterator[FakeTransaction]:
        tx = FakeTransaction(self, already_processed=event.event_id in self.processed)
        yield tx
        self.processed.add(event.event_id)
        for change in tx.saved:
            self.add(change)
        for key, version in tx.frozen.items():
            self.snapshots.setdefault(key, version)
        self.emitted.extend(tx.emitted)

    @asynccontextmanager
    async def transactions(self, requests: list[ArchiveRequested]) -> AsyncIterator[FakeBatch]:
        tx = FakeBatch(self, requests)
        yield tx
        released = {r.event_id for r in tx.released}
        self.processed.update(r.event_id for r in tx.new_events if r.event_id not in released)
        self.released.extend(tx.released)
        for key, version in tx.frozen.items():
            self.snapshots.setdefault(key, version)
        self.emitted.extend(tx.emitted)


async def archive_one(request: ArchiveRequested, store: FakeArchiveStore) -> None:
    """The batch handler with one request; its outcome raised, as the runtime would route it."""
    settled = await archive_note([request], store)  # type: ignore[arg-type]
    if request.event_id in settled:
        raise settled[request.event_id]


@pytest.fixture
def store() -> FakeArchiveStore:
    return FakeArchiveStore()


def emitted(store: FakeArchiveStore, stream: str) -> list[Any]:
    return [event for event, s in store.emitted if s == stream]


async def test_note_events_keep_every_version(store: FakeArchiveStore) -> None:
    created = note_created()
    await store_note_version(created, store)
    await store_note_version(note_updated(created.note_id, 2), store)
    await record_note_deletion(note_deleted(created.note_id, 3), store)

    assert sorted(v for n, v in store.versions if n == created.note_id) == [1, 2, 3]
    assert created.note_id in store.deleted


async def test_archive_freezes_the_version_and_emits_archived_with_checksum(
    store: FakeArchiveStore,
) -> None:
    created = note_created(title="Plan", body="Ship it", tags=["work"])
    store.add(created)
    request = archive_request(created.note_id)

    await archive_one(request, store)

    assert (created.note_id, 1) in store.snapshots
    [archived] = emitted(store, NOTES_ARCHIVED)
    assert isinstance(archived, NoteArchived)
    assert (archived.note_id, archived.version, archived.job_id) == (
        created.note_id,
        1,
        request.job_id,
    )
    assert archived.checksum == content_checksum("Plan", "Ship it", ["work"])
    assert archived.causation_id == str(request.event_id)


async def test_second_delivery_creates_no_second_snapshot_and_emits_nothing(
    store: FakeArchiveStore,
) -> None:
    created = note_created()
    store.add(created)
    request = archive_request(created.note_id)

    await archive_one(request, store)
    await archive_one(request, store)

    assert len(store.snapshots) == 1
    assert len(emitted(store, NOTES_ARCHIVED)) == 1


async def test_archive_of_a_version_not_received_yet_is_transient(
    store: FakeArchiveStore,
) -> None:
    created = note_created()
    store.add(created)

    with pytest.raises(TransientError, match="version 2"):
        await archive_one(archive_request(created.note_id, version=2), store)
    with pytest.raises(TransientError, match="not reached"):
        await archive_one(archive_request(uuid4()), store)
    assert store.emitted == []


async def test_archive_of_a_deleted_note_is_skipped(store: FakeArchiveStore) -> None:
    created = note_created()
    store.add(created)
    store.add(note_deleted(created.note_id, 2))

    with pytest.raises(SkipJob, match="note deleted"):
        await archive_one(archive_request(created.note_id), store)
    assert store.snapshots == {}


async def test_archive_for_another_owner_is_permanent(store: FakeArchiveStore) -> None:
    created = note_created()
    store.add(created)

    with pytest.raises(PermanentError, match="not owned by mallory"):
        await archive_one(archive_request(created.note_id, owner_id="mallory"), store)
    assert store.snapshots == {}


async def test_copy_emits_the_content_under_the_derived_note_id(store: FakeArchiveStore) -> None:
    created = note_created(title="Source", body="text", tags=["a"])
    store.add(created)
    request = copy_request(created.note_id)

    await copy_note(request, store)
    await copy_note(request, store)

    [completed] = emitted(store, NOTES_COPY_COMPLETED)
    assert isinstance(completed, NoteCopyCompleted)
    assert completed.new_note_id == copy_note_id(request.job_id)
    assert (completed.title, completed.body, completed.tags) == ("Source", "text", ["a"])


async def test_copy_uses_the_new_title_when_given(store: FakeArchiveStore) -> None:
    created = note_created(title="Source")
    store.add(created)

    await copy_note(copy_request(created.note_id, new_title="Copy"), store)

    [completed] = emitted(store, NOTES_COPY_COMPLETED)
    assert completed.title == "Copy"


async def test_copy_of_a_deleted_note_is_skipped(store: FakeArchiveStore) -> None:
    created = note_created()
    store.add(created)
    store.add(note_deleted(created.note_id, 2))

    with pytest.raises(SkipJob):
        await copy_note(copy_request(created.note_id), store)
    assert store.emitted == []


async def test_a_batch_settles_each_request_on_its_own(store: FakeArchiveStore) -> None:
    ready, deleted = note_created(), note_created()
    for change in (ready, deleted, note_deleted(deleted.note_id, 2)):
        store.add(change)
    requests = [archive_request(n) for n in (ready.note_id, deleted.note_id, uuid4())]

    settled = await archive_note(requests, store)  # type: ignore[arg-type]

    assert list(store.snapshots) == [(ready.note_id, 1)]
    assert [e.note_id for e in emitted(store, NOTES_ARCHIVED)] == [ready.note_id]
    assert isinstance(settled[requests[1].event_id], SkipJob)
    assert isinstance(settled[requests[2].event_id], TransientError)
    assert store.released == [requests[2]]  # its retry must find it new
    assert requests[0].event_id not in settled
