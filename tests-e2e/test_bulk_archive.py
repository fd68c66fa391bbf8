"""Bulk archive end to end: notes-api, its worker, fanout and the archiver as processes.

One platform per module (its own database and key prefix); each test uses owners of its own. A
request's notes are created through the API and reach the archiver before the bulk request, so
what is measured and judged is the fan-out: the chunk's children, their results and the parent's
progress. The 10,000-note run (fanout SIGKILLed half-way through publishing) is a chaos scenario:
chaos/test_fanout.py.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter

import httpx
import pytest

from contracts import ArchiveRequested, Priority, job_stream
from harness import Platform, poll
from harness import wait_finished as finished
from servicekit import StreamKeys
from servicekit.jobs._codec import decode_entry

LOW_ARCHIVE = job_stream("archive", Priority.LOW)
# Above the sum of a 1,000-note test's deadlines (creating, the archiver catching up, the parent
# finishing), so a slow run fails on the deadline that says what it waited for.
pytestmark = pytest.mark.timeout(400)


def create_notes(
    platform: Platform, client: httpx.Client, owner: str, n: int, tag: str
) -> list[str]:
    """``n`` notes through the API as ``client`` (owner ``owner``, 16 at a time), once the
    archiver has every one of them."""

    async def create_all() -> list[str]:
        async with httpx.AsyncClient(
            base_url=platform.base_url, headers=client.headers, timeout=30
        ) as async_client:
            gate = asyncio.Semaphore(16)

            async def create(i: int) -> str:
                async with gate:
                    body = {"title": f"note {i}", "body": "text", "tags": [tag]}
                    response = await async_client.post("/v1/notes", json=body)
                    assert response.status_code == 201, response.text
                    return str(response.json()["id"])

            return list(await asyncio.gather(*(create(i) for i in range(n))))

    ids = asyncio.run(create_all())
    poll(lambda: archived_versions(platform, owner) >= n, 60 + n / 50, "archiver has the notes",
         seen=lambda: archived_versions(platform, owner))  # fmt: skip
    return ids


def archived_versions(platform: Platform, owner: str) -> int:
    query = "SELECT count(*) FROM archiver.note_versions WHERE owner_id = $1"
    return int(platform.sql(query, owner))


def snapshots(platform: Platform, owner: str) -> int:
    query = "SELECT count(*) FROM archiver.snapshots WHERE owner_id = $1"
    return int(platform.sql(query, owner))


def children_published(platform: Platform, parent: str) -> Counter[uuid.UUID]:
    """Child job ids on the low archive stream for ``parent``, with how often each appears."""
    with platform.redis_client() as redis:
        entries = redis.xrange(StreamKeys(platform.env["STREAM_PREFIX"]).stream(LOW_ARCHIVE))
    requests = [decode_entry(fields, ArchiveRequested)[0] for _, fields in entries]
    return Counter(
        r.job_id
        for r in requests
        if str(r.parent_job_id) == parent  # type: ignore[attr-defined]
    )


def bulk_archive(client: httpx.Client, tag: str, key: str | None = None) -> str:
    headers = {"Idempotency-Key": key} if key else {}
    response = client.post("/v1/notes:bulk-archive", json={"tag": tag}, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def archive_with_fanout_killed_half_way(platform: Platform, owner: str, n: int) -> None:
    """Stop fanout, request, restart it publishing slowly, SIGKILL it half-way, start it again."""
    with platform.client(platform.create_key(owner)) as client:
        create_notes(platform, client, owner, n, "bulk")
        assert platform.stop("fanout") == 0
        parent = bulk_archive(client, "bulk")
        # Small relay rounds, so the kill lands while the children are being published.
        platform.start("fanout", RELAY_BATCH_SIZE=str(max(10, n // 100)))
        poll(lambda: sum(children_published(platform, parent).values()) >= n // 4, 120,
             "a quarter of the children published", every=0.01)  # fmt: skip
        assert platform.kill("fanout") == -signal.SIGKILL
        published = len(children_published(platform, parent))
        assert published < n, "killed too late to be half-way"
        platform.start("fanout")

        job = finished(client, parent, within=60 + n / 20)
        children = children_published(platform, parent)
        assert len(children) == n  # every child published; a re-sent one is the same event id
        assert job["status"] == "succeeded", job
        assert job["progress"] == {"total": n, "succeeded": n, "failed": 0, "skipped": 0}
        assert snapshots(platform, owner) == n


def test_bulk_archive_completes_with_progress_n_of_n_and_one_snapshot_each(
    platform: Platform,
) -> None:
    with platform.client(platform.create_key("bulk-n")) as client:
        create_notes(platform, client, "bulk-n", 1000, "bulk")
        parent = bulk_archive(client, "bulk")
        job = finished(client, parent, within=120)

        assert job["status"] == "succeeded", job
        assert job["progress"] == {"total": 1000, "succeeded": 1000, "failed": 0, "skipped": 0}
        assert snapshots(platform, "bulk-n") == 1000
        assert set(children_published(platform, parent).values()) == {1}
        listed = client.get("/v1/notes", params={"limit": 100}).json()["items"]
        assert all(note["archived_at"] is not None for note in listed)


def test_bulk_archive_completes_after_fanout_is_killed_half_way(platform: Platform) -> None:
    archive_with_fanout_killed_half_way(platform, "bulk-killed", 1000)


def test_notes_deleted_after_the_request_are_counted_skipped(platform: Platform) -> None:
    owner = "bulk-deleted"
    with platform.client(platform.create_key(owner)) as client:
        ids = create_notes(platform, client, owner, 20, "bulk")
        assert platform.stop("fanout") == 0  # the chunk waits while notes are deleted
        parent = bulk_archive(client, "bulk")
        for note_id in ids[:5]:
            assert client.delete(f"/v1/notes/{note_id}").status_code == 204
        deleted = "SELECT count(*) FROM archiver.note_versions WHERE owner_id = $1 AND deleted"
        poll(lambda: platform.sql(deleted, owner) == 5, 30, "the archiver has the deletions")
        platform.start("fanout")

        job = finished(client, parent, within=60)
        assert job["status"] == "succeeded", job
        assert job["progress"] == {"total": 20, "succeeded": 15, "failed": 0, "skipped": 5}
        assert snapshots(platform, owner) == 15


def test_a_filter_matching_nothing_succeeds_with_total_zero(platform: Platform) -> None:
    with platform.client(platform.create_key("bulk-empty")) as client:
        job = client.get(f"/v1/jobs/{bulk_archive(client, 'no-such-tag')}").json()
        assert job["status"] == "succeeded"
        assert job["progress"] == {"total": 0, "succeeded": 0, "failed": 0, "skipped": 0}


def test_the_same_idempotency_key_gives_the_same_parent(platform: Platform) -> None:
    owner = "bulk-idem"
    with platform.client(platform.create_key(owner)) as client:
        create_notes(platform, client, owner, 10, "bulk")
        first = bulk_archive(client, "bulk", key="bulk-once")
        second = bulk_archive(client, "bulk", key="bulk-once")
        assert first == second
        job = finished(client, first, within=60)
        assert job["progress"] == {"total": 10, "succeeded": 10, "failed": 0, "skipped": 0}
        assert snapshots(platform, owner) == 10
        jobs = client.get("/v1/jobs").json()["items"]
        assert [j["id"] for j in jobs if j["type"] == "bulk_archive"] == [first]
