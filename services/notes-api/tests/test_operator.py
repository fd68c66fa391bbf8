"""`GET /v1/operator/jobs/{id}`: any owner's job for an operator token, never for an API key."""

from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import (
    JobDeadLettered,
    JobRetrying,
    JobStarted,
    JobType,
    NoteArchived,
    Priority,
    bulk_child_job_id,
    job_stream,
    utc_now,
)
from notes_api.settings import NotesApiSettings
from notes_api.worker.handlers import mark_note_archived, record_job_status
from notes_api.worker.store import WorkerStore

from .conftest import attempt, create_note

OPERATOR_TOKEN = "operator-token-for-tests-0123456789abcdef"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
ARCHIVE_STREAM = job_stream(JobType.ARCHIVE, Priority.DEFAULT)


@pytest.fixture
def settings(settings: NotesApiSettings) -> NotesApiSettings:
    return settings.model_copy(update={"operator_tokens": [SecretStr(OPERATOR_TOKEN)]})


@pytest.fixture
def store(engine: AsyncEngine) -> WorkerStore:
    return WorkerStore(engine)


async def archive_job(client: httpx.AsyncClient, owner: dict[str, str]) -> tuple[Any, str]:
    """A note of ``owner``'s and the archive job asked for it."""
    note = await create_note(client, owner)
    response = await client.post(f"/v1/notes/{note['id']}/archive", headers=owner)
    return note, response.json()["job_id"]


def archived(note: Any, job_id: str) -> NoteArchived:
    """The archiver's result for the job."""
    return NoteArchived(producer="archiver", owner_id="alice", note_id=UUID(note["id"]),
                        version=1, job_id=UUID(job_id))  # fmt: skip


async def test_an_operator_reads_any_owners_job_with_its_timeline(
    client: httpx.AsyncClient, alice: dict[str, str], store: WorkerStore
) -> None:
    note, job_id = await archive_job(client, alice)
    await record_job_status([attempt(JobStarted, job_id, 1)], store)
    retrying = attempt(JobRetrying, job_id, 1, error_class="TransientError",
                       error_message="not stored yet", next_attempt_at=utc_now())  # fmt: skip
    await record_job_status([retrying], store)
    await record_job_status([attempt(JobStarted, job_id, 2)], store)
    await mark_note_archived([archived(note, job_id)], store)

    response = await client.get(f"/v1/operator/jobs/{job_id}", headers=OPERATOR)

    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["id"], job["owner_id"], job["status"], job["type"]) == (
        job_id, "alice", "succeeded", "archive")  # fmt: skip
    assert job["result"] == {"note_id": note["id"], "version": 1}
    assert len(job["trace_id"]) == 32
    steps = [(s["source"], s["status"], s["attempt"]) for s in job["timeline"]]
    assert steps == [("created", "accepted", None), ("attempt", "running", 1),
                     ("attempt", "retrying", 1), ("attempt", "running", 2),
                     ("last_update", "succeeded", None)]  # fmt: skip
    assert job["timeline"][2]["error"] == "TransientError: not stored yet"
    assert job["children"] is None
    # The owner's own view of the same job agrees.
    public = (await client.get(f"/v1/jobs/{job_id}", headers=alice)).json()
    assert {k: job[k] for k in public} == public


async def test_a_dead_job_redriven_and_applied_shows_succeeded_after_its_dead_attempt(
    client: httpx.AsyncClient, alice: dict[str, str], store: WorkerStore
) -> None:
    note, job_id = await archive_job(client, alice)
    await record_job_status([attempt(JobStarted, job_id, 1)], store)
    await record_job_status([attempt(JobDeadLettered, job_id, 1, attempts=1, error_class="E",
                            error_message="table missing", dead_letter_stream="d",
                            dead_letter_id="1-0")], store)  # fmt: skip
    await record_job_status([attempt(JobStarted, job_id, 1)], store)  # the redriven delivery
    assert (await client.get(f"/v1/jobs/{job_id}", headers=alice)).json()["status"] == "dead"

    await mark_note_archived([archived(note, job_id)], store)

    job = (await client.get(f"/v1/operator/jobs/{job_id}", headers=OPERATOR)).json()
    assert job["status"] == "succeeded"
    assert job["result"] == {"note_id": note["id"], "version": 1}
    steps = [(s["source"], s["status"]) for s in job["timeline"]]
    assert steps == [("created", "accepted"), ("attempt", "running"), ("attempt", "dead"),
                     ("last_update", "succeeded")]  # fmt: skip
    assert (await client.get(f"/v1/notes/{note['id']}", headers=alice)).json()["archived_at"]


async def test_a_bulk_parent_shows_its_children_as_their_rows_stand(
    client: httpx.AsyncClient, alice: dict[str, str], store: WorkerStore
) -> None:
    notes = [await create_note(client, alice, tags=["bulk"]) for _ in range(3)]
    parent = (await client.post("/v1/notes:bulk-archive", json={"tag": "bulk"},
                                headers=alice)).json()["job_id"]  # fmt: skip
    child = {n["id"]: str(bulk_child_job_id(UUID(parent), UUID(n["id"]))) for n in notes}
    first, _, third = notes
    await mark_note_archived([NoteArchived(
        producer="archiver", owner_id="alice", note_id=UUID(first["id"]), version=1,
        job_id=UUID(child[first["id"]]), parent_job_id=UUID(parent))], store)  # fmt: skip
    await record_job_status([attempt(JobDeadLettered, child[third["id"]], 5, attempts=5,
                            error_class="E", error_message="m", dead_letter_stream="d",
                            dead_letter_id="1-0", parent_job_id=UUID(parent))], store)  # fmt: skip
    await store.count_parents()

    job = (await client.get(f"/v1/operator/jobs/{parent}", headers=OPERATOR)).json()

    assert job["type"] == "bulk_archive"
    assert job["progress"] == {"total": 3, "succeeded": 1, "failed": 1, "skipped": 0}
    children = job["children"]
    assert (children["total"], children["chunks"], children["lost_chunks"]) == (2, 1, 0)
    assert children["by_status"] == {"succeeded": 1, "dead": 1}
    [dead] = children["not_succeeded"]
    assert (dead["id"], dead["status"], dead["error"]) == (child[third["id"]], "dead", "E: m")
    # A child is looked up like any job, with its parent named.
    looked_up = (await client.get(f"/v1/operator/jobs/{dead['id']}", headers=OPERATOR)).json()
    assert looked_up["parent_id"] == parent


async def test_without_an_operator_token_it_is_401_problem_json(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    _, job_id = await archive_job(client, alice)
    for headers in ({}, alice, {"Authorization": f"Bearer {OPERATOR_TOKEN[:-1]}x"},
                    {"Authorization": f"Basic {OPERATOR_TOKEN}"}):  # fmt: skip
        response = await client.get(f"/v1/operator/jobs/{job_id}", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")
    missing = await client.get(f"/v1/operator/jobs/{uuid4()}", headers=OPERATOR)
    assert missing.status_code == 404
    assert missing.json()["detail"] == "No job with this id."
    assert (await client.get("/v1/operator/jobs/not-a-uuid", headers=OPERATOR)).status_code == 422


async def test_with_no_operator_tokens_set_the_endpoint_refuses_everyone(
    settings: NotesApiSettings, client: httpx.AsyncClient
) -> None:
    settings.operator_tokens.clear()  # the app reads its settings per request
    response = await client.get(f"/v1/operator/jobs/{uuid4()}", headers=OPERATOR)
    assert response.status_code == 401


def test_operator_tokens_come_from_the_environment_short_ones_refused_and_are_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPERATOR_TOKENS", f"{OPERATOR_TOKEN}, {OPERATOR_TOKEN}-2")
    settings = NotesApiSettings()
    assert [t.get_secret_value() for t in settings.operator_tokens] == [
        OPERATOR_TOKEN, f"{OPERATOR_TOKEN}-2"]  # fmt: skip
    assert OPERATOR_TOKEN in settings.secrets()
    monkeypatch.setenv("OPERATOR_TOKENS", "short")
    with pytest.raises(ValidationError, match="OPERATOR_TOKENS must be at least 32"):
        NotesApiSettings()
