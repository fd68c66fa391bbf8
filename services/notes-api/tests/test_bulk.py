"""Scheduled auto-archive (bulk parents per owner) and lost bulk chunks counted on the parent."""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4, uuid5

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import (
    COMMANDS_COMPLETED,
    JOBS_LIFECYCLE,
    AutoArchiveRequested,
    BulkArchiveChunk,
    JobDeadLettered,
    JobFailed,
    JobType,
    NoteArchived,
    Priority,
    bulk_child_job_id,
    job_stream,
)
from notes_api.bulk import part_job_id
from notes_api.worker.handlers import auto_archive_notes, mark_note_archived, record_job_status
from notes_api.worker.store import WorkerStore

from .conftest import count, create_note, outbox

CHUNKS = job_stream(JobType.BULK_ARCHIVE_CHUNK, Priority.LOW)
TICK = datetime(2024, 1, 1, 3, 0, tzinfo=UTC)  # cutoffs count from the tick, not the clock


@pytest.fixture
def store(engine: AsyncEngine) -> WorkerStore:
    return WorkerStore(engine)


async def _old_notes(engine: AsyncEngine, owner: str, n: int, *, days: int, tag: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO notes.notes (id, owner_id, title, body, tags, version, created_at, "
                "updated_at) SELECT gen_random_uuid(), :owner, 'old', '', ARRAY[:tag], 2, "
                ":at, :at FROM generate_series(1, :n)"
            ),
            {"owner": owner, "tag": tag, "n": n, "at": TICK - timedelta(days=days)},
        )


def _tick(**fields: Any) -> AutoArchiveRequested:
    return AutoArchiveRequested.for_tick(
        schedule="auto-archive", tick_at=TICK, producer="scheduler", **fields
    )


async def _chunks(engine: AsyncEngine) -> list[BulkArchiveChunk]:
    return [BulkArchiveChunk.model_validate(r["payload"]) for r in await outbox(engine, CHUNKS)]


async def _parent(engine: AsyncEngine, parent_id: UUID) -> dict[str, Any]:
    async with engine.connect() as connection:
        row = await connection.execute(
            text("SELECT * FROM notes.jobs WHERE id = :id"), {"id": parent_id}
        )
        return dict(row.one()._mapping)


async def test_auto_archive_creates_one_bulk_parent_per_owner_with_matching_notes(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, store: WorkerStore
) -> None:
    await _old_notes(engine, "alice", 1001, days=40, tag="t")
    await _old_notes(engine, "bob", 2, days=40, tag="t")
    await _old_notes(engine, "carol", 3, days=10, tag="t")  # too recent
    await _old_notes(engine, "dave", 1, days=40, tag="other")  # not the tag
    await create_note(client, alice, tags=["t"])  # updated now: after the tick, never matches
    tick = _tick(not_updated_for_days=30, tag="t")
    await auto_archive_notes(tick, store)
    replica = _tick(not_updated_for_days=30, tag="t")  # the same tick from another replica
    assert replica.event_id == tick.event_id
    await auto_archive_notes(replica, store)
    chunks = await _chunks(engine)
    by_owner = {(c.owner_id, c.chunk_no): len(c.items) for c in chunks}
    assert by_owner == {("alice", 0): 1000, ("alice", 1): 1, ("bob", 0): 2}
    parents = {c.owner_id: c.parent_job_id for c in chunks}
    assert parents == {o: uuid5(tick.event_id, o) for o in ("alice", "bob")}
    alice_job = await _parent(engine, parents["alice"])
    assert (alice_job["type"], alice_job["status"]) == ("bulk_archive", "accepted")
    assert alice_job["progress"] == {"total": 1001, "succeeded": 0, "failed": 0, "skipped": 0}
    assert {item.version for c in chunks for item in c.items} == {2}
    assert await count(engine, "bulk_chunks") == 3  # each chunk's notes, for a lost chunk
    listed = (await client.get("/v1/jobs", headers=alice)).json()["items"]
    assert [j["id"] for j in listed] == [str(parents["alice"])]


async def test_auto_archive_for_one_owner_without_a_tag_and_no_empty_parents(
    engine: AsyncEngine,
    store: WorkerStore,
) -> None:
    await _old_notes(engine, "alice", 2, days=40, tag="a")
    await _old_notes(engine, "alice", 1, days=40, tag="b")
    await _old_notes(engine, "bob", 5, days=40, tag="a")
    await auto_archive_notes(_tick(owner_id="alice", not_updated_for_days=30), store)
    [chunk] = await _chunks(engine)
    assert (chunk.owner_id, len(chunk.items)) == ("alice", 3)
    await auto_archive_notes(_tick(owner_id="erin", not_updated_for_days=1), store)
    assert await count(engine, "jobs") == 1  # an owner with nothing to archive gets no job


def _lost(cls: type, chunk: BulkArchiveChunk, **fields: Any) -> Any:
    return cls(producer="fanout", job_id=chunk.job_id, job_type="bulk_archive_chunk", attempt=5,
               stream=CHUNKS, parent_job_id=chunk.parent_job_id, error_class="E",
               error_message="fanout gave up", **fields)  # fmt: skip


async def test_a_dead_chunk_counts_its_items_as_failed_once_and_the_parent_completes(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, store: WorkerStore
) -> None:
    notes = [await create_note(client, alice, tags=["bulk"]) for _ in range(3)]
    response = await client.post("/v1/notes:bulk-archive", json={"tag": "bulk"}, headers=alice)
    parent = UUID(response.json()["job_id"])
    [chunk] = await _chunks(engine)
    first = chunk.items[0]  # fanout published this child before the chunk died; it succeeded
    archived = NoteArchived(producer="archiver", owner_id="alice", note_id=first.note_id,
                            version=1, job_id=bulk_child_job_id(parent, first.note_id),
                            parent_job_id=parent)  # fmt: skip
    await mark_note_archived([archived], store)
    await store.count_parents()
    dead = _lost(JobDeadLettered, chunk, attempts=5, dead_letter_stream=f"{CHUNKS}.dlq",
                 dead_letter_id="1-0")  # fmt: skip
    await record_job_status([dead], store)
    await record_job_status([dead.model_copy(update={"event_id": uuid4()})], store)  # counted once
    await store.count_parents()
    job = (await client.get(f"/v1/jobs/{parent}", headers=alice)).json()
    assert job["progress"] == {"total": 3, "succeeded": 1, "failed": 2, "skipped": 0}
    assert job["status"] == "failed"
    events = [row["payload"] for row in await outbox(engine, JOBS_LIFECYCLE)]
    assert [(e["type"], e["succeeded"], e["failed"]) for e in events] == [
        ("jobs.lifecycle.progress.v1", 1, 0),
        ("jobs.lifecycle.progress.v1", 1, 2),
        ("jobs.lifecycle.completed.v1", 1, 2),
    ]
    assert events[-1]["status"] == "failed"
    async with engine.connect() as connection:
        children = await connection.execute(
            text("SELECT status, error FROM notes.jobs WHERE parent_id = :p ORDER BY status"),
            {"p": parent},
        )
        rows = [tuple(r) for r in children]
    assert [r[0] for r in rows] == ["dead", "dead", "succeeded"]
    assert rows[0][1] == "bulk chunk 0 lost: E: fanout gave up"
    # A late result of a child the dead chunk had published changes no count.
    late = notes[1] if UUID(notes[1]["id"]) != first.note_id else notes[2]
    late_archived = archived.model_copy(update={
        "event_id": uuid4(), "note_id": UUID(late["id"]),
        "job_id": bulk_child_job_id(parent, UUID(late["id"])),
    })  # fmt: skip
    await mark_note_archived([late_archived], store)
    assert await store.count_parents() == 0
    job = (await client.get(f"/v1/jobs/{parent}", headers=alice)).json()
    assert job["progress"] == {"total": 3, "succeeded": 1, "failed": 2, "skipped": 0}


async def test_a_failed_chunk_of_several_counts_only_its_own_items(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, store: WorkerStore
) -> None:
    await _old_notes(engine, "alice", 1001, days=40, tag="t")
    response = await client.post("/v1/notes:bulk-archive", json={"tag": "t"}, headers=alice)
    parent = response.json()["job_id"]
    _, second = await _chunks(engine)
    await record_job_status([_lost(JobFailed, second)], store)
    await store.count_parents()
    job = (await client.get(f"/v1/jobs/{parent}", headers=alice)).json()
    assert job["progress"] == {"total": 1001, "succeeded": 0, "failed": 1, "skipped": 0}
    assert job["status"] == "running"  # the first chunk's 1,000 children are still to come


async def test_auto_archive_splits_a_run_over_the_cap_into_several_parents(
    engine: AsyncEngine,
) -> None:
    store = WorkerStore(engine, bulk_archive_max_items=2500)
    await _old_notes(engine, "alice", 6001, days=40, tag="t")
    await _old_notes(engine, "bob", 2, days=40, tag="t")
    tick = _tick(not_updated_for_days=30, tag="t")
    await auto_archive_notes(tick, store)
    await auto_archive_notes(tick, store)  # the same tick again: nothing more
    chunks = await _chunks(engine)
    per_parent: dict[UUID, int] = {}
    for chunk in chunks:
        per_parent[chunk.parent_job_id] = per_parent.get(chunk.parent_job_id, 0) + len(chunk.items)
    first = uuid5(tick.event_id, "alice")
    alice_parents = [p for p in per_parent if (await _parent(engine, p))["owner_id"] == "alice"]
    assert alice_parents[0] == first  # the first part keeps the id a tick always gave
    assert [per_parent[p] for p in alice_parents] == [2500, 2500, 1001]
    assert len(set(alice_parents)) == 3
    assert per_parent[uuid5(tick.event_id, "bob")] == 2
    assert len({i.note_id for c in chunks for i in c.items}) == 6003
    for parent_id in alice_parents:
        job = await _parent(engine, parent_id)
        assert (job["status"], job["priority"]) == ("accepted", "low")
        assert job["progress"]["total"] == per_parent[parent_id]
    assert max(len(c.items) for c in chunks) <= 1000
    completed = await outbox(engine, COMMANDS_COMPLETED)  # once, committed with the handling
    assert [row["payload"]["command_id"] for row in completed] == [str(tick.event_id)]


async def _fail_job_inserts(engine: AsyncEngine, condition: str) -> None:
    """Make PostgreSQL refuse a `jobs` row matching ``condition`` (an expression over NEW)."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE FUNCTION notes.refuse_job() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF {condition} THEN RAISE EXCEPTION 'refused job %', NEW.id; END IF; "
                "RETURN NEW; END $$"
            )
        )
        await connection.execute(
            text(
                "CREATE TRIGGER refuse_job BEFORE INSERT ON notes.jobs FOR EACH ROW "
                "EXECUTE FUNCTION notes.refuse_job()"
            )
        )


async def _stop_failing(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("DROP TRIGGER refuse_job ON notes.jobs"))


async def _completions(engine: AsyncEngine) -> int:
    return len(await outbox(engine, COMMANDS_COMPLETED))


async def test_auto_archive_commits_each_owner_alone_and_a_retry_writes_only_what_failed(
    engine: AsyncEngine, store: WorkerStore
) -> None:
    for owner in ("alice", "bob", "carol"):
        await _old_notes(engine, owner, 3, days=40, tag="t")
    await _fail_job_inserts(engine, "NEW.owner_id = 'bob'")
    tick = _tick(not_updated_for_days=30)
    with pytest.raises(Exception, match="refused job"):
        await auto_archive_notes(tick, store)
    # Alice's and carol's parents committed on their own; bob's rolled back, and the command
    # is not recorded as handled (no completion), so the runtime retries it.
    assert sorted(c.owner_id for c in await _chunks(engine)) == ["alice", "carol"]
    assert await _completions(engine) == 0

    await _stop_failing(engine)
    await auto_archive_notes(tick, store)  # the retry
    await auto_archive_notes(tick, store)  # and a late redelivery: nothing more
    chunks = await _chunks(engine)
    assert sorted(c.owner_id for c in chunks) == ["alice", "bob", "carol"]
    assert {c.parent_job_id for c in chunks} == {
        uuid5(tick.event_id, o) for o in ("alice", "bob", "carol")
    }
    assert len({i.note_id for c in chunks for i in c.items}) == 9
    assert await _completions(engine) == 1


async def test_auto_archive_commits_each_part_of_a_large_owner_alone_and_resumes_after_it(
    engine: AsyncEngine,
) -> None:
    store = WorkerStore(engine, bulk_archive_max_items=1500)
    await _old_notes(engine, "alice", 4001, days=40, tag="t")
    tick = _tick(not_updated_for_days=30, tag="t")
    third = part_job_id(uuid5(tick.event_id, "alice"), 2)
    await _fail_job_inserts(engine, f"NEW.id = '{third}'")
    with pytest.raises(Exception, match="refused job"):
        await auto_archive_notes(tick, store)
    committed = await _chunks(engine)
    assert sum(len(c.items) for c in committed) == 3000  # two parts, each its own commit

    await _stop_failing(engine)
    await auto_archive_notes(tick, store)
    chunks = await _chunks(engine)
    per_parent: dict[UUID, int] = {}
    for chunk in chunks:
        per_parent[chunk.parent_job_id] = per_parent.get(chunk.parent_job_id, 0) + len(chunk.items)
    assert list(per_parent.values()) == [1500, 1500, 1001]
    assert list(per_parent)[2] == third
    assert len({i.note_id for c in chunks for i in c.items}) == 4001  # none taken twice
    assert await _completions(engine) == 1


async def test_auto_archive_leaves_out_notes_a_bulk_archive_in_flight_already_carries(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    store = WorkerStore(engine, bulk_archive_max_items=1500)
    await _old_notes(engine, "alice", 1200, days=40, tag="t")
    await _old_notes(engine, "alice", 2000, days=40, tag="u")
    response = await client.post("/v1/notes:bulk-archive", json={"tag": "t"}, headers=alice)
    http_parent = UUID(response.json()["job_id"])
    tick = _tick(not_updated_for_days=30)  # every old note of alice: tags t and u
    await auto_archive_notes(tick, store)
    chunks = await _chunks(engine)
    by_http = {i.note_id for c in chunks if c.parent_job_id == http_parent for i in c.items}
    by_tick = [i.note_id for c in chunks if c.parent_job_id != http_parent for i in c.items]
    assert (len(by_http), len(by_tick), len(set(by_tick))) == (1200, 2000, 2000)
    assert not by_http & set(by_tick)
