"""Bulk parents' progress is counted in rounds: children never wait on their parent's row."""

from __future__ import annotations

import asyncio
from uuid import UUID

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import JOBS_LIFECYCLE, BulkArchiveChunk, NoteArchived, bulk_child_job_id
from notes_api.worker.handlers import mark_note_archived
from notes_api.worker.progress import progress_counter
from notes_api.worker.store import WorkerStore
from servicekit.testing import eventually

from .conftest import outbox

CHUNKS = "jobs.bulk_archive_chunk.low"


async def _bulk_of(
    client: httpx.AsyncClient, headers: dict[str, str], engine: AsyncEngine, n: int
) -> tuple[UUID, list[NoteArchived]]:
    """A bulk archive of ``n`` notes, and the archiver's result for each of its children."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO notes.notes (id, owner_id, title, body, tags, version, created_at, "
                "updated_at) SELECT gen_random_uuid(), 'alice', 'n', '', ARRAY['p'], 1, now(), "
                "now() FROM generate_series(1, :n)"
            ),
            {"n": n},
        )
    response = await client.post("/v1/notes:bulk-archive", json={"tag": "p"}, headers=headers)
    parent = UUID(response.json()["job_id"])
    chunks = [BulkArchiveChunk.model_validate(r["payload"]) for r in await outbox(engine, CHUNKS)]
    results = [
        NoteArchived(producer="archiver", owner_id="alice", note_id=item.note_id, version=1,
                     job_id=bulk_child_job_id(parent, item.note_id), parent_job_id=parent)
        for chunk in chunks for item in chunk.items
    ]  # fmt: skip
    return parent, results


async def _apply(results: list[NoteArchived], store: WorkerStore) -> None:
    gate = asyncio.Semaphore(16)  # the worker's default concurrency

    async def one(result: NoteArchived) -> None:
        async with gate:
            await mark_note_archived([result], store)

    await asyncio.gather(*(one(r) for r in results))


async def _parent(engine: AsyncEngine, parent: UUID) -> tuple[str, dict[str, int]]:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT status, progress FROM notes.jobs WHERE id = :id"), {"id": parent}
            )
        ).one()
    return row.status, row.progress


async def test_children_finish_while_their_parent_row_is_locked_and_count_in_one_event(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    store = WorkerStore(engine)
    parent, results = await _bulk_of(client, alice, engine, 300)

    async with engine.begin() as holder:  # someone holds the parent's row the whole time
        await holder.execute(
            text("SELECT 1 FROM notes.jobs WHERE id = :id FOR UPDATE"), {"id": parent}
        )
        await asyncio.wait_for(_apply(results, store), timeout=60)

    assert await store.count_parents() == 1
    status, progress = await _parent(engine, parent)
    assert (status, progress) == (
        "succeeded", {"total": 300, "succeeded": 300, "failed": 0, "skipped": 0},
    )  # fmt: skip
    events = [row["payload"]["type"] for row in await outbox(engine, JOBS_LIFECYCLE)]
    assert events == ["jobs.lifecycle.progress.v1", "jobs.lifecycle.completed.v1"]


async def test_the_progress_loop_finishes_parents_including_ones_another_process_left(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    parent, results = await _bulk_of(client, alice, engine, 50)
    await _apply(results, WorkerStore(engine))  # a process that stopped before counting

    store = WorkerStore(engine)
    stop = asyncio.Event()
    loop = asyncio.create_task(progress_counter(store, every=0.05, sweep_every=60)(stop))
    try:

        async def finished() -> bool:
            return (await _parent(engine, parent))[0] == "succeeded"

        await eventually(finished)  # the sweep at start found it
    finally:
        stop.set()
        await loop
