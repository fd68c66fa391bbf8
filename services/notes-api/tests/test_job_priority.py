"""Job priorities (issue 12, finding 8): accepted on archive, copy and bulk requests, submitted to
that priority's stream through the outbox, stored on the job row and shown in the job resource."""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import (
    JOBS_DELAYED,
    ArchiveRequested,
    BulkArchiveChunk,
    CopyRequested,
    DelayedJobRequested,
    JobType,
    NoteArchived,
    Priority,
    bulk_child_job_id,
    job_stream,
)
from notes_api.worker.handlers import mark_note_archived
from notes_api.worker.store import WorkerStore

from .conftest import count, create_note, outbox


async def _job(client: httpx.AsyncClient, headers: dict[str, str], job_id: str) -> Any:
    return (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()


async def _stored_priority(engine: AsyncEngine, job_id: str | UUID) -> str:
    async with engine.connect() as connection:
        row = await connection.execute(
            text("SELECT priority FROM notes.jobs WHERE id = :id"), {"id": job_id}
        )
        return str(row.scalar_one())


@pytest.mark.parametrize("priority", list(Priority))
async def test_an_archive_goes_to_its_prioritys_stream_and_the_job_shows_it(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, priority: Priority
) -> None:
    note = await create_note(client, alice)
    response = await client.post(
        f"/v1/notes/{note['id']}/archive", json={"priority": priority}, headers=alice
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    [row] = await outbox(engine, job_stream(JobType.ARCHIVE, priority))
    assert str(ArchiveRequested.model_validate(row["payload"]).job_id) == job_id
    job_rows = [r for r in await outbox(engine) if r["stream"].startswith("jobs.archive.")]
    assert len(job_rows) == 1  # on that stream only
    assert (await _job(client, alice, job_id))["priority"] == priority
    assert await _stored_priority(engine, job_id) == priority


async def test_without_a_priority_archive_and_copy_are_default(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice)
    archive = (await client.post(f"/v1/notes/{note['id']}/archive", headers=alice)).json()
    copy = (await client.post(f"/v1/notes/{note['id']}/copy", headers=alice)).json()
    assert (await _job(client, alice, archive["job_id"]))["priority"] == "default"
    assert (await _job(client, alice, copy["job_id"]))["priority"] == "default"
    listed = (await client.get("/v1/jobs", headers=alice)).json()["items"]
    assert {job["priority"] for job in listed} == {"default"}


async def test_a_copy_goes_to_its_prioritys_stream(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice)
    response = await client.post(
        f"/v1/notes/{note['id']}/copy", json={"title": "c", "priority": "critical"}, headers=alice
    )
    assert response.status_code == 202, response.text
    [row] = await outbox(engine, job_stream(JobType.COPY, Priority.CRITICAL))
    assert CopyRequested.model_validate(row["payload"]).new_title == "c"
    assert (await _job(client, alice, response.json()["job_id"]))["priority"] == "critical"


async def test_a_delayed_archive_carries_its_priority_to_the_scheduler(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice)
    run_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    response = await client.post(
        f"/v1/notes/{note['id']}/archive", json={"run_at": run_at, "priority": "low"},
        headers=alice,
    )  # fmt: skip
    [row] = await outbox(engine, JOBS_DELAYED)
    delayed = DelayedJobRequested.model_validate(row["payload"])
    assert delayed.stream == job_stream(JobType.ARCHIVE, Priority.LOW)
    job = await _job(client, alice, response.json()["job_id"])
    assert (job["status"], job["priority"]) == ("scheduled", "low")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("archive", {"priority": "urgent"}),
        ("archive", {"priority": None}),
        ("copy", {"priority": "HIGH"}),
        ("bulk", {"tag": "t", "priority": 1}),
    ],
)
async def test_an_unknown_priority_is_422_and_writes_nothing(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, path: str, body: Any
) -> None:
    note = await create_note(client, alice, tags=["t"])
    url = "/v1/notes:bulk-archive" if path == "bulk" else f"/v1/notes/{note['id']}/{path}"
    response = await client.post(url, json=body, headers=alice)
    assert response.status_code == 422, response.text
    assert ["body", "priority"] in [e["loc"] for e in response.json()["errors"]]
    assert await count(engine, "jobs") == 0


async def test_a_bulk_archive_runs_low_unless_a_priority_is_given(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    await create_note(client, alice, tags=["a"])
    await create_note(client, alice, tags=["b"])
    plain = (await client.post("/v1/notes:bulk-archive", json={"tag": "a"}, headers=alice)).json()
    asked = await client.post(
        "/v1/notes:bulk-archive", json={"tag": "b", "priority": "critical"}, headers=alice
    )
    asked_id = asked.json()["job_id"]
    [low] = await outbox(engine, job_stream(JobType.BULK_ARCHIVE_CHUNK, Priority.LOW))
    [critical] = await outbox(engine, job_stream(JobType.BULK_ARCHIVE_CHUNK, Priority.CRITICAL))
    low_chunk = BulkArchiveChunk.model_validate(low["payload"])
    critical_chunk = BulkArchiveChunk.model_validate(critical["payload"])
    assert (str(low_chunk.parent_job_id), low_chunk.child_priority) == (plain["job_id"], "low")
    assert (str(critical_chunk.parent_job_id), critical_chunk.child_priority) == (
        asked_id, "critical",
    )  # fmt: skip
    assert (await _job(client, alice, plain["job_id"]))["priority"] == "low"
    assert (await _job(client, alice, asked_id))["priority"] == "critical"


async def test_a_bulk_childs_row_takes_its_parents_priority(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice, tags=["b"])
    response = await client.post(
        "/v1/notes:bulk-archive", json={"tag": "b", "priority": "critical"}, headers=alice
    )
    parent = UUID(response.json()["job_id"])
    child = bulk_child_job_id(parent, UUID(note["id"]))
    archived = NoteArchived(producer="archiver", owner_id="alice", note_id=UUID(note["id"]),
                            version=1, job_id=child, parent_job_id=parent)  # fmt: skip
    await mark_note_archived([archived], WorkerStore(engine))
    assert await _stored_priority(engine, child) == "critical"
