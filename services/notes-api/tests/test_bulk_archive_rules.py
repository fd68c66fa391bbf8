"""POST /v1/notes:bulk-archive's rules (issue 12, finding 3): an explicit filter, a cap per request,
no note resolved twice while a bulk job still carries it, and resolution a page at a time."""

import asyncio
from typing import Any
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import MAX_CHUNK_ITEMS, BulkArchiveChunk, JobType, Priority, job_stream
from notes_api.settings import NotesApiSettings

from .conftest import count, create_note, outbox

CHUNKS = job_stream(JobType.BULK_ARCHIVE_CHUNK, Priority.LOW)
CAP = 2500  # small, so the cap is cheap to reach here; the default is checked on its own


@pytest.fixture
def settings(settings: NotesApiSettings, request: pytest.FixtureRequest) -> NotesApiSettings:
    cap = getattr(request, "param", CAP)  # a test may ask for another cap (indirect)
    return settings.model_copy(update={"bulk_archive_max_items": cap})


async def _notes(engine: AsyncEngine, owner: str, n: int, *, tag: str = "t") -> None:
    """``n`` unarchived notes of ``owner`` with ``tag``, in one statement (fast at 20k)."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO notes.notes (id, owner_id, title, body, tags, version, created_at, "
                "updated_at) SELECT gen_random_uuid(), :owner, 'n', '', ARRAY[:tag], 1, now(), "
                "now() FROM generate_series(1, :n)"
            ),
            {"owner": owner, "tag": tag, "n": n},
        )


async def _bulk(client: httpx.AsyncClient, headers: dict[str, str], body: Any) -> httpx.Response:
    return await client.post("/v1/notes:bulk-archive", json=body, headers=headers)


async def _total(client: httpx.AsyncClient, headers: dict[str, str], job_id: str) -> int:
    job = (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
    return int(job["progress"]["total"])


def test_the_default_cap_stays_above_the_10000_note_bulk_the_fanout_benchmarks() -> None:
    assert NotesApiSettings.model_fields["bulk_archive_max_items"].default >= 50_000


@pytest.mark.parametrize(
    "body",
    [None, {}, {"all": False}, {"priority": "low"}],
    ids=["no body", "empty", "all false", "priority only"],
)
async def test_a_bulk_archive_without_a_filter_is_422_and_archives_nothing(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, body: Any
) -> None:
    await create_note(client, alice)
    kwargs: dict[str, Any] = {"headers": alice}
    if body is not None:
        kwargs["json"] = body
    response = await client.post("/v1/notes:bulk-archive", **kwargs)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert '"all": true' in response.json()["detail"]
    assert await count(engine, "jobs") == 0
    assert await outbox(engine, CHUNKS) == []


async def test_all_true_archives_every_unarchived_note_and_does_not_mix_with_a_filter(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    await _notes(engine, "alice", 3, tag="a")
    await _notes(engine, "alice", 2, tag="b")
    mixed = await _bulk(client, alice, {"all": True, "tag": "a"})
    assert mixed.status_code == 422
    response = await _bulk(client, alice, {"all": True})
    assert response.status_code == 202
    assert await _total(client, alice, response.json()["job_id"]) == 5


async def test_a_bulk_archive_matching_more_than_the_cap_is_422_stating_the_cap(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    await _notes(engine, "alice", CAP + 1)
    response = await _bulk(client, alice, {"tag": "t"})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["max_items"] == CAP
    assert f"{CAP:,}" in problem["detail"]
    assert await count(engine, "jobs") == 0
    assert await outbox(engine, CHUNKS) == []
    async with engine.begin() as connection:  # one fewer: exactly the cap is allowed
        await connection.execute(text(
            "DELETE FROM notes.notes WHERE id = (SELECT min(id::text)::uuid FROM notes.notes)"
        ))  # fmt: skip
    accepted = await _bulk(client, alice, {"tag": "t"})
    assert accepted.status_code == 202
    assert await _total(client, alice, accepted.json()["job_id"]) == CAP


async def test_the_same_bulk_request_sent_three_times_resolves_each_note_once(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    await _notes(engine, "alice", 1500)
    ids = [(await _bulk(client, alice, {"tag": "t"})).json()["job_id"] for _ in range(3)]
    assert [await _total(client, alice, job_id) for job_id in ids] == [1500, 0, 0]
    chunks = [BulkArchiveChunk.model_validate(r["payload"]) for r in await outbox(engine, CHUNKS)]
    assert sum(len(c.items) for c in chunks) == 1500
    assert {str(c.parent_job_id) for c in chunks} == {ids[0]}


async def test_concurrent_bulk_requests_of_one_owner_share_the_notes_out(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    await _notes(engine, "alice", 1500)
    responses = await asyncio.gather(*(_bulk(client, alice, {"tag": "t"}) for _ in range(3)))
    totals = [await _total(client, alice, r.json()["job_id"]) for r in responses]
    assert sorted(totals) == [0, 0, 1500]


async def test_notes_of_a_lost_chunk_or_a_finished_parent_are_resolved_again(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    await _notes(engine, "alice", 1500)
    first = (await _bulk(client, alice, {"tag": "t"})).json()["job_id"]
    lose = "UPDATE notes.bulk_chunks SET lost_at = now() WHERE parent_id = :p AND chunk_no = 1"
    async with engine.begin() as connection:  # the second chunk (500 notes) was lost
        await connection.execute(text(lose), {"p": first})
    second = (await _bulk(client, alice, {"tag": "t"})).json()["job_id"]
    assert await _total(client, alice, second) == 500
    async with engine.begin() as connection:  # both finished, their notes still not archived
        await connection.execute(text("UPDATE notes.jobs SET status = 'failed'"))
    third = (await _bulk(client, alice, {"tag": "t"})).json()["job_id"]
    assert await _total(client, alice, third) == 1500


@pytest.mark.parametrize("settings", [50_000], indirect=True)
async def test_a_big_bulk_archive_is_resolved_a_chunk_at_a_time_while_other_requests_run(
    app: FastAPI,
    client: httpx.AsyncClient,
    alice: dict[str, str],
    bob: dict[str, str],
    engine: AsyncEngine,
) -> None:
    n = 20_000
    await _notes(engine, "alice", n)
    note = await create_note(client, bob)
    timeline: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM notes.notes" in statement and "ORDER BY notes.notes.id" in statement:
            timeline.append(("resolve", statement))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        bulk = asyncio.create_task(_bulk(client, alice, {"tag": "t"}))
        answered = 0
        while not bulk.done():  # an unrelated reader keeps asking while the bulk is created
            response = await client.get(f"/v1/notes/{note['id']}", headers=bob)
            assert response.status_code == 200
            if not bulk.done():
                timeline.append(("answered", None))
                answered += 1
        response = await bulk
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert response.status_code == 202, response.text
    assert await _total(client, alice, response.json()["job_id"]) == n
    pages = [i for i, (kind, _) in enumerate(timeline) if kind == "resolve"]
    # One page per chunk (the cap's count is one more statement), never the whole set at once.
    assert len(pages) >= n // MAX_CHUNK_ITEMS
    answered_between = [
        i for i, (kind, _) in enumerate(timeline) if kind == "answered" and pages[0] < i < pages[-1]
    ]
    assert answered_between, f"no request was answered during the bulk's {len(pages)} pages"
    chunks = [BulkArchiveChunk.model_validate(r["payload"]) for r in await outbox(engine, CHUNKS)]
    assert [len(c.items) for c in chunks] == [MAX_CHUNK_ITEMS] * (n // MAX_CHUNK_ITEMS)
    assert len({i.note_id for c in chunks for i in c.items}) == n
    assert all(isinstance(c.parent_job_id, UUID) for c in chunks)


async def test_a_second_filter_takes_only_the_notes_the_first_bulk_left(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    await _notes(engine, "alice", 1700, tag="a")  # ids interleave with the b notes: the in-flight
    await _notes(engine, "alice", 1300, tag="b")  # chunks span every page's id range
    first = (await _bulk(client, alice, {"tag": "a"})).json()["job_id"]
    second = (await _bulk(client, alice, {"all": True})).json()["job_id"]
    assert [await _total(client, alice, j) for j in (first, second)] == [1700, 1300]
    chunks = [BulkArchiveChunk.model_validate(r["payload"]) for r in await outbox(engine, CHUNKS)]
    by_parent: dict[str, set[UUID]] = {first: set(), second: set()}
    for chunk in chunks:
        by_parent[str(chunk.parent_job_id)] |= {i.note_id for i in chunk.items}
    assert len(by_parent[first] | by_parent[second]) == 3000
    assert [len(c.items) for c in chunks if str(c.parent_job_id) == second] == [1000, 300]
