"""Finished jobs, their children and bulk chunks are purged after the retention period."""

from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import NoteArchived, bulk_child_job_id
from notes_api.worker.handlers import mark_note_archived
from notes_api.worker.retention import PurgedJobs, purge_finished_jobs
from notes_api.worker.store import WorkerStore

from .conftest import count, create_note

KEEP = timedelta(days=30)


@pytest.fixture
def store(engine: AsyncEngine) -> WorkerStore:
    return WorkerStore(engine)


async def _archive(client: httpx.AsyncClient, headers: dict[str, str], tag: str) -> str:
    note = await create_note(client, headers, tags=[tag])
    response = await client.post(f"/v1/notes/{note['id']}/archive", headers=headers)
    return str(response.json()["job_id"])


async def _bulk(client: httpx.AsyncClient, headers: dict[str, str], tag: str, n: int) -> UUID:
    for _ in range(n):
        await create_note(client, headers, tags=[tag])
    response = await client.post("/v1/notes:bulk-archive", json={"tag": tag}, headers=headers)
    assert response.status_code == 202, response.text
    return UUID(response.json()["job_id"])


async def _archive_child(store: WorkerStore, parent: UUID, note_id: UUID) -> None:
    child = bulk_child_job_id(parent, note_id)
    event = NoteArchived(producer="archiver", owner_id="alice", note_id=note_id, version=1,
                         job_id=child, parent_job_id=parent)  # fmt: skip
    await mark_note_archived([event], store)


async def _chunk_notes(engine: AsyncEngine, parent: UUID) -> list[UUID]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT unnest(note_ids) FROM notes.bulk_chunks WHERE parent_id = :p"),
            {"p": parent},
        )
        return [row[0] for row in rows]


async def _set(engine: AsyncEngine, sql: str, **params: Any) -> None:
    async with engine.begin() as connection:
        await connection.execute(text(sql), params)


async def _statuses(engine: AsyncEngine) -> dict[UUID, str]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT id, status FROM notes.jobs"))
        return {row.id: row.status for row in rows}


async def test_jobs_finished_longer_ago_than_the_retention_period_are_purged_with_their_data(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, store: WorkerStore
) -> None:
    old_done = await _archive(client, alice, "a")
    recent_done = await _archive(client, alice, "b")
    old_running = await _archive(client, alice, "c")
    await _set(engine, "UPDATE notes.jobs SET status = 'succeeded' WHERE id IN (:a, :b)",
               a=old_done, b=recent_done)  # fmt: skip
    await _set(engine, "UPDATE notes.jobs SET status = 'running' WHERE id = :c", c=old_running)
    done_bulk = await _bulk(client, alice, "done", 3)
    for note_id in await _chunk_notes(engine, done_bulk):  # every child finishes: parent too
        await _archive_child(store, done_bulk, note_id)
    running_bulk = await _bulk(client, alice, "half", 2)
    finished_child_of_running = (await _chunk_notes(engine, running_bulk))[0]
    await _archive_child(store, running_bulk, finished_child_of_running)
    await store.count_parents()
    statuses = await _statuses(engine)
    assert statuses[done_bulk] == "succeeded"
    assert statuses[running_bulk] == "running"
    assert len(statuses) == 3 + 1 + 3 + 1 + 1  # three jobs, two parents, four children
    # Everything was last updated 31 days ago, except the recent job.
    await _set(engine, "UPDATE notes.jobs SET updated_at = now() - interval '31 days'"
               " WHERE id <> :b", b=recent_done)  # fmt: skip

    purged = await purge_finished_jobs(engine, KEEP, batch_size=2)  # several batches

    left = await _statuses(engine)
    assert set(left) == {UUID(recent_done), UUID(old_running), running_bulk}
    assert purged == PurgedJobs(jobs=1 + 1 + 3 + 1, chunks=1)
    assert await _chunk_notes(engine, running_bulk)  # a running parent keeps its chunks
    assert await count(engine, "bulk_chunks") == 1
    gone = await client.get(f"/v1/jobs/{old_done}", headers=alice)
    assert gone.status_code == 404
    assert await purge_finished_jobs(engine, KEEP) == PurgedJobs()  # nothing more to do


async def test_jobs_within_the_retention_period_are_kept(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    job = await _archive(client, alice, "a")
    await _set(engine, "UPDATE notes.jobs SET status = 'succeeded',"
               " updated_at = now() - interval '29 days'")  # fmt: skip
    assert await purge_finished_jobs(engine, KEEP) == PurgedJobs()
    assert (await client.get(f"/v1/jobs/{job}", headers=alice)).status_code == 200
