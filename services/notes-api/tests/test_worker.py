import asyncio
import json
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import (
    JOBS_LIFECYCLE,
    NOTES_ARCHIVED,
    NOTES_CREATED,
    JobDeadLettered,
    JobRetrying,
    JobSkipped,
    JobStarted,
    JobType,
    NoteArchived,
    NoteCopyCompleted,
    Priority,
    bulk_child_job_id,
    copy_note_id,
    job_stream,
    utc_now,
)
from notes_api.settings import SCHEMA
from notes_api.worker.handlers import (
    insert_copied_note,
    mark_note_archived,
    record_job_status,
    router,
)
from notes_api.worker.store import WorkerStore
from servicekit import OutboxRelay, ServiceSettings, StreamKeys, setup_telemetry
from servicekit.jobs import JobOptions, Worker, publish
from servicekit.testing import eventually

from .conftest import attempt, count, create_note, outbox

ARCHIVE_STREAM = job_stream(JobType.ARCHIVE, Priority.DEFAULT)


@pytest.fixture
def store(engine: AsyncEngine) -> WorkerStore:
    return WorkerStore(engine)


async def _job(client: httpx.AsyncClient, headers: dict[str, str], job_id: str) -> Any:
    return (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()


async def _archive(client: httpx.AsyncClient, headers: dict[str, str], note: Any) -> str:
    response = await client.post(f"/v1/notes/{note['id']}/archive", headers=headers)
    return str(response.json()["job_id"])


def archived(note: Any, job_id: str, **fields: Any) -> NoteArchived:
    return NoteArchived(producer="archiver", owner_id="alice", note_id=UUID(note["id"]),
                        version=note["version"], job_id=UUID(job_id), **fields)  # fmt: skip


async def test_an_archive_result_sets_the_flag_and_the_job_succeeded_once(
    client: httpx.AsyncClient, alice: dict[str, str], store: WorkerStore
) -> None:
    note = await create_note(client, alice)
    job_id = await _archive(client, alice, note)
    event = archived(note, job_id)
    await mark_note_archived([event], store)
    await mark_note_archived([event], store)  # redelivery: the inbox absorbs it
    job = await _job(client, alice, job_id)
    assert job["status"] == "succeeded"
    assert job["result"] == {"note_id": note["id"], "version": 1}
    fetched = (await client.get(f"/v1/notes/{note['id']}", headers=alice)).json()
    assert fetched["archived_at"] is not None
    assert fetched["version"] == 1


async def test_a_copy_result_inserts_the_copy_once_with_its_created_event(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, store: WorkerStore
) -> None:
    note = await create_note(client, alice, title="source", tags=["t"])
    job_id = (await client.post(f"/v1/notes/{note['id']}/copy", json={}, headers=alice)).json()[
        "job_id"
    ]
    new_id = copy_note_id(UUID(job_id))
    event = NoteCopyCompleted(
        producer="archiver", owner_id="alice", job_id=UUID(job_id), source_note_id=UUID(note["id"]),
        source_version=1, new_note_id=new_id, title="source", body="text", tags=["t"],
    )  # fmt: skip
    await insert_copied_note(event, store)
    redelivered = event.model_copy(update={"event_id": uuid4()})  # a second result event
    await insert_copied_note(redelivered, store)
    job = await _job(client, alice, job_id)
    assert job["status"] == "succeeded"
    assert job["result"] == {"note_id": str(new_id)}
    copy = (await client.get(f"/v1/notes/{new_id}", headers=alice)).json()
    assert (copy["title"], copy["tags"], copy["version"]) == ("source", ["t"], 1)
    created = await outbox(engine, NOTES_CREATED)
    assert [row["payload"]["note_id"] for row in created] == [note["id"], str(new_id)]


async def test_lifecycle_events_move_status_forward_only_and_record_attempt_errors(
    client: httpx.AsyncClient, alice: dict[str, str], store: WorkerStore
) -> None:
    note = await create_note(client, alice)
    job_id = await _archive(client, alice, note)
    started_1 = attempt(JobStarted, job_id, 1)
    await record_job_status([started_1], store)
    assert (await _job(client, alice, job_id))["status"] == "running"
    await record_job_status([attempt(JobRetrying, job_id, 1, error_class="TransientError",
                            error_message="version not stored yet",
                            next_attempt_at=utc_now())], store)  # fmt: skip
    assert (await _job(client, alice, job_id))["status"] == "retrying"
    late_start = started_1.model_copy(update={"event_id": uuid4()})  # attempt 1 again, late
    await record_job_status([late_start], store)
    assert (await _job(client, alice, job_id))["status"] == "retrying"
    await record_job_status([attempt(JobStarted, job_id, 2)], store)
    assert (await _job(client, alice, job_id))["status"] == "running"
    await record_job_status([attempt(JobDeadLettered, job_id, 2, attempts=2, error_class="Boom",
                            error_message="gave up", dead_letter_stream=f"{ARCHIVE_STREAM}.dlq",
                            dead_letter_id="1-0")], store)  # fmt: skip
    await record_job_status([attempt(JobStarted, job_id, 3)], store)  # never leaves dead
    job = await _job(client, alice, job_id)
    assert job["status"] == "dead"
    assert job["error"] == "Boom: gave up"
    assert [(a["attempt"], a["status"]) for a in job["attempts"]] == [
        (1, "running"), (1, "retrying"), (2, "running"), (2, "dead")
    ]  # fmt: skip
    assert job["attempts"][1]["error"] == "TransientError: version not stored yet"


async def test_a_cancelled_jobs_result_changes_nothing(
    client: httpx.AsyncClient, alice: dict[str, str], store: WorkerStore
) -> None:
    note = await create_note(client, alice)
    job_id = await _archive(client, alice, note)
    await client.post(f"/v1/jobs/{job_id}/cancel", headers=alice)
    await mark_note_archived([archived(note, job_id)], store)
    assert (await _job(client, alice, job_id))["status"] == "cancelled"
    fetched = (await client.get(f"/v1/notes/{note['id']}", headers=alice)).json()
    assert fetched["archived_at"] is None


async def test_bulk_children_count_into_parent_progress_with_progress_and_completion_events(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, store: WorkerStore
) -> None:
    notes = [await create_note(client, alice, tags=["bulk"]) for _ in range(3)]
    parent = (await client.post("/v1/notes:bulk-archive", json={"tag": "bulk"},
                                headers=alice)).json()["job_id"]  # fmt: skip
    child = {n["id"]: str(bulk_child_job_id(UUID(parent), UUID(n["id"]))) for n in notes}
    first, second, third = notes
    success = archived(first, child[first["id"]], parent_job_id=UUID(parent))
    await mark_note_archived([success], store)
    await mark_note_archived([success.model_copy(update={"event_id": uuid4()})], store)
    assert (await _job(client, alice, parent))["progress"]["succeeded"] == 0  # not yet counted
    assert await store.count_parents() == 1
    progress = (await _job(client, alice, parent))["progress"]
    assert progress == {"total": 3, "succeeded": 1, "failed": 0, "skipped": 0}
    assert (await _job(client, alice, parent))["status"] == "running"
    await record_job_status([attempt(JobSkipped, child[second["id"]], 1, reason="note deleted",
                                    parent_job_id=UUID(parent))], store)  # fmt: skip
    await record_job_status([attempt(JobDeadLettered, child[third["id"]], 5, attempts=5,
                            error_class="E", error_message="m", dead_letter_stream="d",
                            dead_letter_id="1-0", parent_job_id=UUID(parent))], store)  # fmt: skip
    assert await store.count_parents() == 1  # both children in one round
    assert await store.count_parents() == 0  # nothing new
    job = await _job(client, alice, parent)
    assert job["progress"] == {"total": 3, "succeeded": 1, "failed": 1, "skipped": 1}
    assert job["status"] == "failed"
    *progress_events, completed = await outbox(engine, JOBS_LIFECYCLE)
    counts = [tuple(e["payload"][k] for k in ("succeeded", "failed", "skipped"))
              for e in progress_events]  # fmt: skip
    assert counts == [(1, 0, 0), (1, 1, 1)]  # one progress event per round of counting
    assert {e["payload"]["type"] for e in progress_events} == {"jobs.lifecycle.progress.v1"}
    assert {(e["payload"]["job_id"], e["payload"]["total"]) for e in progress_events} == {
        (parent, 3)
    }
    assert completed["payload"]["type"] == "jobs.lifecycle.completed.v1"
    assert completed["payload"]["status"] == "failed"
    assert completed["payload"]["job_id"] == parent
    listed = (await client.get("/v1/jobs", headers=alice)).json()["items"]
    assert [j["id"] for j in listed] == [parent]  # children are not listed on their own


async def test_the_worker_applies_results_from_streams_and_the_relay_publishes_the_outbox(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    engine: AsyncEngine,
    store: WorkerStore,
    redis_url: str,
    redis_client: Redis,
    stream_prefix: str,
) -> None:
    keys = StreamKeys(stream_prefix)
    settings = ServiceSettings(otel_service_name="notes-api-worker", redis_url=redis_url,
                               stream_prefix=stream_prefix, log_level="WARNING")  # fmt: skip
    telemetry = setup_telemetry(settings)
    fast = JobOptions(block_ms=50, backoff_base=0.05, jitter=0.0, visibility_timeout=1.0)
    routes = [route.__class__(**{**route.__dict__, "options": fast}) for route in router.routes]
    worker = Worker(routes, redis=redis_client, keys=keys, consumer="w1", telemetry=telemetry,
                    dependencies={"store": store}, maintenance_interval=0.2)  # fmt: skip
    relay = OutboxRelay(engine, redis_client, schema=SCHEMA, keys=keys, poll_interval=0.05)
    stop = asyncio.Event()
    await worker.ensure_groups()
    tasks = [asyncio.create_task(worker.run(stop)), asyncio.create_task(relay.run(stop))]
    try:
        note = await create_note(client, alice)
        job_id = await _archive(client, alice, note)

        async def requested() -> list[Any]:
            return list(await redis_client.xrange(keys.stream(ARCHIVE_STREAM)))

        [(_, fields)] = await eventually(requested)
        request = json.loads(fields[b"__data__"])["body"]
        assert request["job_id"] == job_id
        # The archiver's side, simulated: lifecycle and result events on their streams.
        await publish(redis_client, keys, JOBS_LIFECYCLE, attempt(JobStarted, job_id, 1))

        async def running() -> bool:
            return (await _job(client, alice, job_id))["status"] == "running"

        await eventually(running)  # two streams have no order between them; the test sets one
        await publish(redis_client, keys, NOTES_ARCHIVED, archived(note, job_id))

        async def succeeded() -> bool:
            return (await _job(client, alice, job_id))["status"] == "succeeded"

        await eventually(succeeded)
        assert (await _job(client, alice, job_id))["attempts"][0]["status"] == "running"
        assert await count(engine, "inbox") == 2
    finally:
        stop.set()
        codes = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert codes[0] == 0
