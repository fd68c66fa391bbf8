"""Unit tests: the handlers called with an in-memory store, no Redis or PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from uuid import UUID, uuid5

import pytest

from contracts import ArchiveRequested, Event, Priority, bulk_child_job_id
from fanout.handlers import count_owner_activity, expand_bulk_archive_chunk, record_note_change
from fanout.store import NoteChange

from .conftest import OWNER, bulk_chunk, note_created, note_deleted, note_updated


class FakeTransaction:
    def __init__(self, already_processed: bool) -> None:
        self.already_processed = already_processed
        self.submitted: list[tuple[ArchiveRequested, str]] = []
        self.changes: list[NoteChange] = []
        self.activity: list[tuple[str, datetime]] = []

    async def submit_jobs(self, requests: Sequence[ArchiveRequested], *, stream: str) -> int:
        self.submitted += [(r, stream) for r in requests]
        return len(requests)

    async def record_note_change(self, change: NoteChange) -> None:
        self.changes.append(change)

    async def count_owner_activity(self, owner_id: str, at: datetime) -> None:
        self.activity.append((owner_id, at))


class FakeFanoutStore:
    """Keeps what a committed transaction did, per consumer group, as the inbox would."""

    def __init__(self) -> None:
        self.processed: set[tuple[str, UUID]] = set()
        self.submitted: list[tuple[ArchiveRequested, str]] = []
        self.changes: list[NoteChange] = []
        self.activity: dict[str, int] = {}

    @asynccontextmanager
    async def transaction(self, event: Event, *, group: str) -> AsyncIterator[FakeTransaction]:
        tx = FakeTransaction(already_processed=(group, event.event_id) in self.processed)
        yield tx
        self.processed.add((group, event.event_id))
        self.submitted += tx.submitted
        self.changes += tx.changes
        for owner, _ in tx.activity:
            self.activity[owner] = self.activity.get(owner, 0) + 1


@pytest.fixture
def store() -> FakeFanoutStore:
    return FakeFanoutStore()


async def test_chunk_becomes_one_archive_job_per_item_with_derived_ids(
    store: FakeFanoutStore,
) -> None:
    chunk = bulk_chunk(3)
    await expand_bulk_archive_chunk(chunk, store)  # type: ignore[arg-type]

    assert [r.note_id for r, _ in store.submitted] == [i.note_id for i in chunk.items]
    for (request, stream), item in zip(store.submitted, chunk.items, strict=True):
        assert stream == "jobs.archive.low"
        assert request.job_id == bulk_child_job_id(chunk.parent_job_id, item.note_id)
        assert request.event_id == uuid5(request.job_id, "requested")
        assert (request.parent_job_id, request.owner_id) == (chunk.parent_job_id, OWNER)
        assert request.version == item.version
        assert request.causation_id == str(chunk.event_id)


async def test_children_go_to_the_priority_the_chunk_names(store: FakeFanoutStore) -> None:
    await expand_bulk_archive_chunk(bulk_chunk(2, priority=Priority.CRITICAL), store)  # type: ignore[arg-type]
    assert {stream for _, stream in store.submitted} == {"jobs.archive.critical"}


async def test_expanding_a_chunk_again_gives_the_same_children(store: FakeFanoutStore) -> None:
    chunk = bulk_chunk(5)
    again = chunk.model_copy(update={"event_id": UUID(int=7)})  # the same chunk, sent twice
    await expand_bulk_archive_chunk(chunk, store)  # type: ignore[arg-type]
    first = [r for r, _ in store.submitted]
    await expand_bulk_archive_chunk(again, store)  # type: ignore[arg-type]
    second = [r for r, _ in store.submitted[len(first) :]]
    assert [(r.job_id, r.event_id) for r in first] == [(r.job_id, r.event_id) for r in second]


async def test_redelivered_chunk_submits_nothing(store: FakeFanoutStore) -> None:
    chunk = bulk_chunk(4)
    await expand_bulk_archive_chunk(chunk, store)  # type: ignore[arg-type]
    await expand_bulk_archive_chunk(chunk, store)  # type: ignore[arg-type]
    assert len(store.submitted) == 4


async def test_every_note_change_is_audited_and_counted_once(store: FakeFanoutStore) -> None:
    created = note_created()
    events = [created, note_updated(created.note_id, 2), note_deleted(created.note_id, 3)]
    for event in [*events, events[0]]:  # the first one redelivered
        await record_note_change(event, store)  # type: ignore[arg-type]
        await count_owner_activity(event, store)  # type: ignore[arg-type]

    assert [c.type for c in store.changes] == [e.type for e in events]
    assert store.activity == {OWNER: 3}
