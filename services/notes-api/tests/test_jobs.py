from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import (
    JOBS_DELAYED,
    JOBS_LIFECYCLE,
    ArchiveRequested,
    BulkArchiveChunk,
    CopyRequested,
    DelayedJobCancelled,
    DelayedJobRequested,
    JobStatus,
    JobType,
    Priority,
    job_stream,
)

from .conftest import create_note, outbox

ARCHIVE_DEFAULT = job_stream(JobType.ARCHIVE, Priority.DEFAULT)


async def test_archive_answers_202_with_location_and_writes_the_request(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice)
    response = await client.post(f"/v1/notes/{note['id']}/archive", headers=alice)
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    [row] = await outbox(engine, ARCHIVE_DEFAULT)
    request = ArchiveRequested.model_validate(row["payload"])
    assert str(request.job_id) == job_id
    assert (str(request.note_id), request.version, request.owner_id) == (note["id"], 1, "alice")
    job = (await client.get(f"/v1/jobs/{job_id}", headers=alice)).json()
    assert job["status"] == "accepted"
    assert job["type"] == "archive"
    assert len(job["trace_id"]) == 32
    assert job["progress"] is None
    assert job["attempts"] == []


async def test_archive_with_a_future_run_at_is_scheduled_through_the_delayed_stream(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice)
    run_at = datetime.now(UTC) + timedelta(hours=2)
    response = await client.post(
        f"/v1/notes/{note['id']}/archive", json={"run_at": run_at.isoformat()}, headers=alice
    )
    assert response.status_code == 202
    assert response.json()["status"] == "scheduled"
    [row] = await outbox(engine, JOBS_DELAYED)
    delayed = DelayedJobRequested.model_validate(row["payload"])
    assert delayed.run_at == run_at
    assert delayed.stream == ARCHIVE_DEFAULT
    assert await outbox(engine, ARCHIVE_DEFAULT) == []


async def test_a_past_run_at_means_now_and_beyond_the_horizon_is_422(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice)
    url = f"/v1/notes/{note['id']}/archive"
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    response = await client.post(url, json={"run_at": past}, headers=alice)
    assert response.json()["status"] == "accepted"
    assert len(await outbox(engine, ARCHIVE_DEFAULT)) == 1
    far = (datetime.now(UTC) + timedelta(days=31)).isoformat()
    assert (await client.post(url, json={"run_at": far}, headers=alice)).status_code == 422
    naive = await client.post(url, json={"run_at": "2030-01-01T00:00:00"}, headers=alice)
    assert naive.status_code == 422


async def test_copy_answers_202_and_writes_a_copy_request_with_the_new_title(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice)
    response = await client.post(
        f"/v1/notes/{note['id']}/copy", json={"title": "the copy"}, headers=alice
    )
    assert response.status_code == 202
    [row] = await outbox(engine, job_stream(JobType.COPY, Priority.DEFAULT))
    request = CopyRequested.model_validate(row["payload"])
    assert request.new_title == "the copy"
    assert str(request.job_id) == response.json()["job_id"]


async def test_bulk_archive_resolves_matching_notes_into_chunks_of_at_most_1000(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    await create_note(client, alice, tags=["keep"])
    async with engine.begin() as connection:  # 1,001 old tagged notes, fast
        await connection.execute(text(
            "INSERT INTO notes.notes (id, owner_id, title, body, tags, version, created_at, "
            "updated_at) SELECT gen_random_uuid(), 'alice', 'old', '', ARRAY['old'], 3, "
            "now() - interval '40 days', now() - interval '40 days' FROM generate_series(1, 1001)"
        ))  # fmt: skip
    response = await client.post(
        "/v1/notes:bulk-archive", json={"tag": "old", "not_updated_for_days": 30}, headers=alice
    )
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    rows = await outbox(engine, job_stream(JobType.BULK_ARCHIVE_CHUNK, Priority.LOW))
    chunks = [BulkArchiveChunk.model_validate(row["payload"]) for row in rows]
    assert [len(c.items) for c in chunks] == [1000, 1]
    assert {str(c.parent_job_id) for c in chunks} == {job_id}
    assert {item.version for c in chunks for item in c.items} == {3}
    job = (await client.get(f"/v1/jobs/{job_id}", headers=alice)).json()
    assert job["progress"] == {"total": 1001, "succeeded": 0, "failed": 0, "skipped": 0}


async def test_bulk_archive_with_nothing_to_do_succeeds_at_once(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    response = await client.post("/v1/notes:bulk-archive", json={"tag": "none"}, headers=alice)
    job = (await client.get(f"/v1/jobs/{response.json()['job_id']}", headers=alice)).json()
    assert job["status"] == "succeeded"
    [completed] = await outbox(engine, JOBS_LIFECYCLE)
    assert completed["payload"]["type"] == "jobs.lifecycle.completed.v1"


async def test_jobs_are_owner_scoped(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    note = await create_note(client, alice)
    job_id = (await client.post(f"/v1/notes/{note['id']}/archive", headers=alice)).json()["job_id"]
    assert (await client.get(f"/v1/jobs/{job_id}", headers=bob)).status_code == 404
    assert (await client.post(f"/v1/jobs/{job_id}/cancel", headers=bob)).status_code == 404
    assert (await client.get("/v1/jobs", headers=bob)).json()["items"] == []
    unknown = await client.get(f"/v1/jobs/{uuid4()}", headers=alice)
    assert unknown.status_code == 404


async def test_list_jobs_filters_by_status_and_pages(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    note = await create_note(client, alice)
    ids = [
        (await client.post(f"/v1/notes/{note['id']}/archive", headers=alice)).json()["job_id"]
        for _ in range(5)
    ]
    await client.post(f"/v1/jobs/{ids[0]}/cancel", headers=alice)
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "status": "accepted"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/jobs", params=params, headers=alice)).json()
        seen += [job["id"] for job in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == list(reversed(ids[1:]))
    cancelled = (await client.get("/v1/jobs?status=cancelled", headers=alice)).json()["items"]
    assert [job["id"] for job in cancelled] == [ids[0]]
    assert (await client.get("/v1/jobs?status=bogus", headers=alice)).status_code == 422


async def test_cancel_stops_a_waiting_job_and_tells_the_scheduler_about_delayed_ones(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    url = f"/v1/notes/{note['id']}/archive"
    job_id = (await client.post(url, json={"run_at": later}, headers=alice)).json()["job_id"]
    response = await client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)
    assert response.status_code == 200
    assert response.json()["status"] == JobStatus.CANCELLED
    rows = await outbox(engine, JOBS_DELAYED)
    assert [row["event_type"] for row in rows] == [
        "jobs.delayed.requested.v1", "jobs.delayed.cancelled.v1"
    ]  # fmt: skip
    assert str(DelayedJobCancelled.model_validate(rows[1]["payload"]).job_id) == job_id
    assert rows[0]["aggregate_id"] == rows[1]["aggregate_id"]  # published in that order
    again = await client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)
    assert again.status_code == 409


async def test_a_running_job_cannot_be_cancelled(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice)
    job_id = (await client.post(f"/v1/notes/{note['id']}/archive", headers=alice)).json()["job_id"]
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE notes.jobs SET status = 'running' WHERE id = :id"), {"id": job_id}
        )
    assert (await client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)).status_code == 409
