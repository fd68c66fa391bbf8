"""The reconciler finishes stale jobs the runtime no longer holds, and leaves held ones alone."""

import asyncio
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import (
    JOBS_LIFECYCLE,
    JobStarted,
    JobType,
    Priority,
    Service,
    bulk_child_job_id,
    job_stream,
    utc_now,
)
from notes_api.settings import SCHEMA
from notes_api.worker.reconciler import LOST_REASON, JobReconciler
from notes_api.worker.store import WorkerStore
from servicekit import OutboxRelay, StreamKeys
from servicekit.jobs import publish

from .conftest import create_note

ARCHIVE = job_stream(JobType.ARCHIVE, Priority.DEFAULT)
ARCHIVER = str(Service.ARCHIVER)
STALE_AFTER = timedelta(hours=1)


@pytest.fixture
def keys(stream_prefix: str) -> StreamKeys:
    return StreamKeys(stream_prefix)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def reconciler(
    engine: AsyncEngine, redis_client: Redis, keys: StreamKeys, registry: CollectorRegistry
) -> JobReconciler:
    return JobReconciler(engine, redis_client, keys, stale_after=STALE_AFTER, registry=registry)


def reconciled(registry: CollectorRegistry, outcome: str, job_type: str = "archive") -> float:
    labels = {"job_type": job_type, "outcome": outcome}
    return registry.get_sample_value("jobs_reconciled_total", labels) or 0.0


async def _archive_job(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, redis: Redis,
    keys: StreamKeys,
) -> UUID:  # fmt: skip
    """An archive job whose request the relay has published to `jobs.archive.default`."""
    note = await create_note(client, alice)
    response = await client.post(f"/v1/notes/{note['id']}/archive", headers=alice)
    assert response.status_code == 202, response.text
    await OutboxRelay(engine, redis, schema=SCHEMA, keys=keys).publish_pending()
    return UUID(response.json()["job_id"])


async def _make_stale(engine: AsyncEngine, job_id: UUID, status: str = "running") -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE notes.jobs SET status = :s, updated_at = now() - interval '2 hours'"
                 " WHERE id = :id"),
            {"s": status, "id": job_id},
        )  # fmt: skip


async def _job(engine: AsyncEngine, job_id: UUID) -> Any:
    async with engine.connect() as connection:
        result = await connection.execute(
            text("SELECT * FROM notes.jobs WHERE id = :id"), {"id": job_id}
        )
        return result.one()


async def _deliver_to_archiver(redis: Redis, keys: StreamKeys) -> list[str]:
    """Deliver every entry of the archive stream to the archiver's group (now pending)."""
    key = keys.stream(ARCHIVE)
    await redis.xgroup_create(key, ARCHIVER, id="0", mkstream=True)
    replies: Any = await redis.xreadgroup(ARCHIVER, "archiver-1", {key: ">"})
    return [entry_id.decode() for entry_id, _ in replies[0][1]]


async def _acknowledge(redis: Redis, keys: StreamKeys, entry_ids: list[str]) -> None:
    await redis.xack(keys.stream(ARCHIVE), ARCHIVER, *entry_ids)


async def _dead_letter(redis: Redis, keys: StreamKeys, entry_id: str, message: str) -> None:
    """Write the dead letter the runtime writes (then acks): as if its lifecycle event was lost."""
    entries: Any = await redis.xrange(keys.stream(ARCHIVE), entry_id, entry_id)
    await redis.xadd(
        keys.dead_letters(ARCHIVE),
        {
            "__data__": entries[0][1][b"__data__"], "source_stream": ARCHIVE,
            "source_id": entry_id, "group": ARCHIVER, "consumer": "archiver-1",
            "error_class": "PermanentError", "error_message": message, "attempts": "1",
        },
    )  # fmt: skip
    await _acknowledge(redis, keys, [entry_id])


async def test_a_stale_job_the_runtime_holds_nothing_for_is_finished_dead_as_lost_and_counted(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, redis_client: Redis,
    keys: StreamKeys, reconciler: JobReconciler, registry: CollectorRegistry,
) -> None:  # fmt: skip
    job_id = await _archive_job(client, alice, engine, redis_client, keys)
    await _acknowledge(redis_client, keys, await _deliver_to_archiver(redis_client, keys))
    await _make_stale(engine, job_id)

    report = await reconciler.reconcile_batch()

    assert report.finished == {job_id: "lost"}
    job = await _job(engine, job_id)
    assert (job.status, job.error) == ("dead", LOST_REASON)
    assert reconciled(registry, "lost") == 1
    shown = (await client.get(f"/v1/jobs/{job_id}", headers=alice)).json()
    assert (shown["status"], shown["error"]) == ("dead", LOST_REASON)
    assert (await reconciler.reconcile_batch()).examined == 0  # final now: never looked at again


async def test_a_stale_job_whose_dead_letter_exists_is_finished_dead_with_the_dead_letters_reason(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, redis_client: Redis,
    keys: StreamKeys, reconciler: JobReconciler, registry: CollectorRegistry,
) -> None:  # fmt: skip
    job_id = await _archive_job(client, alice, engine, redis_client, keys)
    [entry_id] = await _deliver_to_archiver(redis_client, keys)
    await _dead_letter(redis_client, keys, entry_id, "note is not owned by alice")
    await _make_stale(engine, job_id)

    report = await reconciler.reconcile_batch()

    assert report.finished == {job_id: "dead_lettered"}
    job = await _job(engine, job_id)
    assert (job.status, job.error) == ("dead", "PermanentError: note is not owned by alice")
    assert reconciled(registry, "dead_lettered") == 1
    assert reconciled(registry, "lost") == 0


async def test_a_stale_job_still_unread_in_its_stream_is_left_alone(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, redis_client: Redis,
    keys: StreamKeys, reconciler: JobReconciler,
) -> None:  # fmt: skip
    job_id = await _archive_job(client, alice, engine, redis_client, keys)
    await redis_client.xgroup_create(keys.stream(ARCHIVE), ARCHIVER, id="0", mkstream=True)
    await _make_stale(engine, job_id, status="accepted")

    report = await reconciler.reconcile_batch()

    assert (report.examined, report.finished) == (1, {})
    assert (await _job(engine, job_id)).status == "accepted"


async def test_a_stale_job_pending_in_the_group_is_left_alone(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, redis_client: Redis,
    keys: StreamKeys, reconciler: JobReconciler,
) -> None:  # fmt: skip
    job_id = await _archive_job(client, alice, engine, redis_client, keys)
    await _deliver_to_archiver(redis_client, keys)  # its consumer died: pending until reclaimed
    await _make_stale(engine, job_id)

    report = await reconciler.reconcile_batch()

    assert (report.examined, report.finished) == (1, {})
    assert (await _job(engine, job_id)).status == "running"


async def test_a_stale_job_waiting_in_the_retry_set_is_left_alone(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, redis_client: Redis,
    keys: StreamKeys, reconciler: JobReconciler,
) -> None:  # fmt: skip
    job_id = await _archive_job(client, alice, engine, redis_client, keys)
    [entry_id] = await _deliver_to_archiver(redis_client, keys)
    await redis_client.zadd(keys.retry(ARCHIVE, ARCHIVER), {entry_id: 1})
    await _make_stale(engine, job_id, status="retrying")

    report = await reconciler.reconcile_batch()

    assert (report.examined, report.finished) == (1, {})
    assert (await _job(engine, job_id)).status == "retrying"


async def test_a_stale_job_whose_request_is_still_in_the_outbox_is_left_alone(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine,
    reconciler: JobReconciler,
) -> None:  # fmt: skip
    note = await create_note(client, alice)
    response = await client.post(f"/v1/notes/{note['id']}/archive", headers=alice)
    job_id = UUID(response.json()["job_id"])  # not published: Redis was down for hours
    await _make_stale(engine, job_id, status="accepted")

    report = await reconciler.reconcile_batch()

    assert (report.examined, report.finished) == (1, {})
    assert (await _job(engine, job_id)).status == "accepted"


async def test_a_stale_job_whose_lifecycle_event_waits_for_this_worker_is_left_alone(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, redis_client: Redis,
    keys: StreamKeys, reconciler: JobReconciler,
) -> None:  # fmt: skip
    job_id = await _archive_job(client, alice, engine, redis_client, keys)
    await _acknowledge(redis_client, keys, await _deliver_to_archiver(redis_client, keys))
    worker_group = str(Service.NOTES_API_WORKER)
    await redis_client.xgroup_create(keys.stream(JOBS_LIFECYCLE), worker_group, id="0",
                                     mkstream=True)  # fmt: skip
    started = JobStarted(producer="archiver", job_id=job_id, job_type="archive", attempt=1,
                         stream=ARCHIVE, group=ARCHIVER)  # fmt: skip
    await publish(redis_client, keys, JOBS_LIFECYCLE, started)  # this worker is behind
    await _make_stale(engine, job_id, status="accepted")

    report = await reconciler.reconcile_batch()

    assert (report.examined, report.finished) == (1, {})


async def test_jobs_updated_within_the_bound_and_scheduled_jobs_are_untouched(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, redis_client: Redis,
    keys: StreamKeys, reconciler: JobReconciler,
) -> None:  # fmt: skip
    fresh = await _archive_job(client, alice, engine, redis_client, keys)
    note = await create_note(client, alice)
    later = {"run_at": (utc_now() + timedelta(days=1)).isoformat()}
    response = await client.post(f"/v1/notes/{note['id']}/archive", json=later, headers=alice)
    assert response.json()["status"] == "scheduled", response.text
    scheduled = UUID(response.json()["job_id"])
    await _acknowledge(redis_client, keys, await _deliver_to_archiver(redis_client, keys))
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE notes.jobs SET status = 'running' WHERE id = :id"), {"id": fresh}
        )
        await connection.execute(  # a delayed job waits for the scheduler, however long
            text("UPDATE notes.jobs SET updated_at = now() - interval '2 days'"
                 " WHERE status = 'scheduled'")
        )  # fmt: skip

    report = await reconciler.reconcile_batch()

    assert (report.examined, report.finished) == (0, {})
    assert (await _job(engine, fresh)).status == "running"
    assert (await _job(engine, scheduled)).status == "scheduled"


async def _lost_bulk_child(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> tuple[UUID, UUID]:
    """A bulk archive of two notes with one child `running` for hours, held nowhere."""
    for _ in range(2):
        await create_note(client, alice, tags=["old"])
    response = await client.post("/v1/notes:bulk-archive", json={"tag": "old"}, headers=alice)
    parent = UUID(response.json()["job_id"])
    async with engine.begin() as connection:
        note_ids = (
            await connection.execute(
                text("SELECT unnest(note_ids) FROM notes.bulk_chunks WHERE parent_id = :p"),
                {"p": parent},
            )
        ).scalars()
        child = bulk_child_job_id(parent, next(iter(note_ids)))
        await connection.execute(
            text("INSERT INTO notes.jobs (id, owner_id, type, status, parent_id, attempt,"
                 " attempts, created_at, updated_at) VALUES (:id, 'alice', 'archive', 'running',"
                 " :p, 1, '[]', now(), now() - interval '2 hours')"),
            {"id": child, "p": parent},
        )  # fmt: skip
    return parent, child


async def _count_open_parents(engine: AsyncEngine) -> int:
    """What the worker's progress sweep does (the reconciler's store here is its own)."""
    store = WorkerStore(engine)
    store.count_later(await store.open_bulk_parents())
    return await store.count_parents()


async def test_a_lost_bulk_child_counts_once_as_failed_on_its_parent(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine,
    reconciler: JobReconciler, registry: CollectorRegistry,
) -> None:  # fmt: skip
    parent, child = await _lost_bulk_child(client, alice, engine)

    first = await reconciler.reconcile_batch()
    again = await reconciler.reconcile_batch()

    assert first.finished == {child: "lost"}
    assert again.finished == {}
    assert (await _job(engine, child)).status == "dead"
    progress = (await _job(engine, parent)).progress
    assert progress == {"total": 2, "succeeded": 0, "failed": 0, "skipped": 0}  # not yet counted
    assert await _count_open_parents(engine) == 1
    progress = (await _job(engine, parent)).progress
    assert progress == {"total": 2, "succeeded": 0, "failed": 1, "skipped": 0}
    assert reconciled(registry, "lost") == 1


async def test_two_reconcilers_at_once_finish_and_count_a_lost_job_once(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, redis_client: Redis,
    keys: StreamKeys,
) -> None:  # fmt: skip
    parent, child = await _lost_bulk_child(client, alice, engine)
    registries = [CollectorRegistry(), CollectorRegistry()]
    replicas = [
        JobReconciler(engine, redis_client, keys, stale_after=STALE_AFTER, registry=registry)
        for registry in registries
    ]

    reports = await asyncio.gather(*(replica.reconcile_batch() for replica in replicas))

    assert [r.finished for r in reports if r.finished] == [{child: "lost"}]
    assert sum(reconciled(registry, "lost") for registry in registries) == 1
    await _count_open_parents(engine)
    progress = (await _job(engine, parent)).progress
    assert progress["failed"] == 1


async def test_a_stale_job_changed_since_the_reconciler_looked_is_left_to_the_event(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, redis_client: Redis,
    keys: StreamKeys,
) -> None:  # fmt: skip
    job_id = await _archive_job(client, alice, engine, redis_client, keys)
    await _acknowledge(redis_client, keys, await _deliver_to_archiver(redis_client, keys))
    await _make_stale(engine, job_id)

    class LateEvent(JobReconciler):
        async def _finish(self, stale: Any, reason: str) -> bool:
            async with engine.begin() as connection:  # the result arrives just now
                await connection.execute(
                    text("UPDATE notes.jobs SET status = 'succeeded', updated_at = now()"
                         " WHERE id = :id"), {"id": job_id},
                )  # fmt: skip
            return await super()._finish(stale, reason)

    late = LateEvent(engine, redis_client, keys, stale_after=STALE_AFTER)
    assert (await late.reconcile_batch()).finished == {}
    assert (await _job(engine, job_id)).status == "succeeded"
