"""The worker's store against PostgreSQL: what the handler unit tests take on trust from it."""

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import (
    JOBS_LIFECYCLE,
    AutoArchiveRequested,
    JobStatus,
    NoteArchived,
    NoteSnapshot,
    bulk_child_job_id,
    utc_now,
)
from notes_api.worker.store import WorkerStore

from .conftest import count, create_note, outbox


@pytest.fixture
def store(engine: AsyncEngine) -> WorkerStore:
    return WorkerStore(engine)


def an_event() -> NoteArchived:
    return NoteArchived(producer="archiver", owner_id="alice", note_id=uuid4(), version=1,
                        job_id=uuid4())  # fmt: skip


async def _row(engine: AsyncEngine, table: str, row_id: UUID) -> Any:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(f"SELECT * FROM notes.{table} WHERE id = :id"), {"id": row_id}
        )
        return result.one_or_none()


async def test_an_event_is_handled_once_and_a_failed_transaction_leaves_it_unhandled(
    store: WorkerStore, engine: AsyncEngine
) -> None:
    event = an_event()

    async def fail() -> None:
        async with store.transaction(event) as tx:
            assert not tx.already_processed
            raise RuntimeError("the effect failed")

    with pytest.raises(RuntimeError):
        await fail()
    assert await count(engine, "inbox") == 0  # rolled back with the effect: redelivered, retried

    async with store.transaction(event) as tx:
        assert not tx.already_processed
    async with store.transaction(event) as tx:
        assert tx.already_processed
    assert await count(engine, "inbox") == 1


async def test_the_reconcilers_transaction_records_no_inbox_row(
    store: WorkerStore, engine: AsyncEngine
) -> None:
    async with store.transaction(None) as tx:
        assert not tx.already_processed
    assert await count(engine, "inbox") == 0


async def test_a_command_is_handled_once(store: WorkerStore, engine: AsyncEngine) -> None:
    tick = AutoArchiveRequested.for_tick(schedule="auto-archive", tick_at=datetime.now(UTC),
                                         producer="scheduler", not_updated_for_days=1)  # fmt: skip
    async with store.command_transaction(tick) as tx:
        assert not tx.already_processed
    async with store.command_transaction(tick) as tx:
        assert tx.already_processed
    assert await count(engine, "inbox") == 1


async def test_a_note_is_inserted_once_and_its_archived_time_is_set_once(
    store: WorkerStore, engine: AsyncEngine
) -> None:
    now = utc_now()
    note = NoteSnapshot(id=uuid4(), owner_id="alice", title="t", body="", tags=[], version=1,
                        created_at=now, updated_at=now)  # fmt: skip
    async with store.transaction(an_event()) as tx:
        assert await tx.insert_note(note)
        assert not await tx.insert_note(note)
        await tx.mark_note_archived(note.id, "bob")  # not bob's: nothing
    assert (await _row(engine, "notes", note.id)).archived_at is None

    async with store.transaction(an_event()) as tx:
        await tx.mark_note_archived(note.id, "alice")
    first = (await _row(engine, "notes", note.id)).archived_at
    async with store.transaction(an_event()) as tx:
        await tx.mark_note_archived(note.id, "alice")
    assert first is not None
    assert (await _row(engine, "notes", note.id)).archived_at == first


async def test_a_child_without_a_known_parent_gets_no_row(
    store: WorkerStore, engine: AsyncEngine
) -> None:
    async with store.transaction(an_event()) as tx:
        assert await tx.find_or_add_bulk_child(uuid4(), uuid4(), "alice") is None
    assert await count(engine, "jobs") == 0


async def test_a_child_moves_forward_only_and_counts_once_on_its_parent_with_a_progress_event(
    store: WorkerStore,
    engine: AsyncEngine,
    client: httpx.AsyncClient,
    alice: dict[str, str],
) -> None:
    notes = [await create_note(client, alice, tags=["b"]) for _ in range(2)]
    response = await client.post("/v1/notes:bulk-archive", json={"tag": "b"}, headers=alice)
    parent = UUID(response.json()["job_id"])
    child_id = bulk_child_job_id(parent, UUID(notes[0]["id"]))

    async with store.transaction(an_event()) as tx:
        child = await tx.find_or_add_bulk_child(child_id, parent, None)
        assert child is not None
        assert (child.owner_id, child.status, child.parent_id) == ("alice", "accepted", parent)
        assert await tx.advance_job(child, JobStatus.SUCCEEDED, result={"ok": True})
    async with store.transaction(an_event()) as tx:
        child = await tx.find_job(child_id)
        assert child is not None
        assert not await tx.advance_job(child, JobStatus.DEAD)  # never leaves a final status
        assert not await tx.advance_job(child, JobStatus.RUNNING, attempt=9)

    stored = await _row(engine, "jobs", child_id)
    assert (stored.status, stored.result) == ("succeeded", {"ok": True})
    assert await store.count_parents() == 1  # the first transaction left the parent to count
    progress = (await _row(engine, "jobs", parent)).progress
    assert progress == {"total": 2, "succeeded": 1, "failed": 0, "skipped": 0}
    [event] = [row["payload"] for row in await outbox(engine, JOBS_LIFECYCLE)]
    assert (event["type"], event["job_id"], event["succeeded"]) == (
        "jobs.lifecycle.progress.v1", str(parent), 1,
    )  # fmt: skip


async def test_a_batch_of_results_adds_succeeds_and_archives_in_a_few_statements(
    store: WorkerStore,
    engine: AsyncEngine,
    client: httpx.AsyncClient,
    alice: dict[str, str],
) -> None:
    notes = [UUID((await create_note(client, alice, tags=["c"]))["id"]) for _ in range(3)]
    response = await client.post("/v1/notes:bulk-archive", json={"tag": "c"}, headers=alice)
    parent = UUID(response.json()["job_id"])
    children = [bulk_child_job_id(parent, note_id) for note_id in notes]
    stranger = uuid4()  # a child of no parent we know: no row

    async with store.transaction(an_event()) as tx:
        found = await tx.find_or_add_bulk_children(
            [*((child, parent, None) for child in children), (stranger, uuid4(), None)]
        )
        assert sorted(found) == sorted(children)
        assert {job.owner_id for job in found.values()} == {"alice"}
        assert await tx.find_or_add_bulk_children([(children[0], parent, None)]) == {
            children[0]: found[children[0]]
        }  # the second time: found, not added again
        results = [(found[child], {"n": i}) for i, child in enumerate(children[:2])]
        assert await tx.succeed_jobs([*results, results[0]]) == 2  # each once
        await tx.mark_notes_archived([(notes[0], "alice"), (notes[1], "bob")])  # not bob's
    async with store.transaction(an_event()) as tx:
        again = await tx.find_jobs(children)
        assert await tx.succeed_jobs([(again[children[0]], {"n": 9})]) == 0  # terminal already

    stored = [await _row(engine, "jobs", child) for child in children]
    assert [(row.status, row.result) for row in stored] == [
        ("succeeded", {"n": 0}), ("succeeded", {"n": 1}), ("accepted", None),
    ]  # fmt: skip
    assert await _row(engine, "jobs", stranger) is None
    archived = [(await _row(engine, "notes", note_id)).archived_at for note_id in notes[:2]]
    assert archived[0] is not None
    assert archived[1] is None  # not bob's note
    assert await store.count_parents() == 1
    assert (await _row(engine, "jobs", parent)).progress["succeeded"] == 2
