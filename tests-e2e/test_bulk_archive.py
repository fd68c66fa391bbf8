"""Bulk archive end to end: notes-api, its worker, fanout and the archiver as processes.

One platform per module (its own database and key prefix); each test uses owners of its own. A
request's notes are created through the API and reach the archiver before the bulk request, so
what is measured and judged is the fan-out: the chunk's children, their results and the parent's
progress. The 10,000-note run (fanout SIGKILLed half-way through publishing) is a chaos scenario:
chaos/test_fanout.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis import Redis

from contracts import ArchiveRequested, Priority, job_stream
from servicekit import StreamKeys
from servicekit.jobs._codec import decode_entry
from servicekit.testing import create_database, drop_database, with_database

BIN = Path(sys.executable).parent

TERMINAL = {"succeeded", "failed", "dead", "skipped", "cancelled"}
LOW_ARCHIVE = job_stream("archive", Priority.LOW)
PROCESSES: dict[str, list[str]] = {
    "notes-api": ["notes-api", "serve"],
    "notes-api-worker": ["notes-api-worker"],
    "archiver": ["archiver"],
    "fanout": ["fanout"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll(probe: Callable[[], Any], within: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(every)


@dataclass
class BulkPlatform:
    """The four processes on one database and prefix; fanout can be stopped, killed, restarted."""

    env: dict[str, str]
    database_url: str
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env['PORT']}"

    @property
    def keys(self) -> StreamKeys:
        return StreamKeys(self.env["STREAM_PREFIX"])

    def start(self, name: str, **extra_env: str) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [BIN / PROCESSES[name][0], *PROCESSES[name][1:]],
            env={**self.env, "CONSUMER_NAME": f"e2e-{name}", **extra_env},
            stdout=log,
            stderr=log,
        )

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> int:
        process = self.processes.pop(name)
        process.send_signal(sig)
        return process.wait(timeout=60)

    def client(self, owner: str) -> httpx.Client:
        out = subprocess.run(
            [BIN / "notes-api", "create-key", "--owner", owner],
            env=self.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        key = out.stdout.strip().splitlines()[-1]
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def sql(self, query: str, *args: Any) -> Any:
        async def run() -> Any:
            connection = await asyncpg.connect(self.database_url)
            try:
                return await connection.fetchval(query, *args)
            finally:
                await connection.close()

        return asyncio.run(run())

    def create_notes(self, owner: str, n: int, tag: str) -> list[str]:
        """``n`` notes through the API (16 at a time), once the archiver has every one of them."""
        headers = self.client(owner).headers

        async def create_all() -> list[str]:
            async with httpx.AsyncClient(
                base_url=self.base_url, headers=headers, timeout=30
            ) as client:
                gate = asyncio.Semaphore(16)

                async def create(i: int) -> str:
                    async with gate:
                        body = {"title": f"note {i}", "body": "text", "tags": [tag]}
                        response = await client.post("/v1/notes", json=body)
                        assert response.status_code == 201, response.text
                        return str(response.json()["id"])

                return list(await asyncio.gather(*(create(i) for i in range(n))))

        ids = asyncio.run(create_all())
        poll(lambda: self.archived_versions(owner) >= n, 60 + n / 50, "archiver has the notes")
        return ids

    def archived_versions(self, owner: str) -> int:
        query = "SELECT count(*) FROM archiver.note_versions WHERE owner_id = $1"
        return int(self.sql(query, owner))

    def snapshots(self, owner: str) -> int:
        query = "SELECT count(*) FROM archiver.snapshots WHERE owner_id = $1"
        return int(self.sql(query, owner))

    def children_published(self, parent: str) -> Counter[uuid.UUID]:
        """Child job ids on the low archive stream for ``parent``, with how often each appears."""
        redis = Redis.from_url(self.env["REDIS_URL"])
        try:
            entries = redis.xrange(self.keys.stream(LOW_ARCHIVE))
        finally:
            redis.close()
        requests = [decode_entry(fields, ArchiveRequested)[0] for _, fields in entries]
        return Counter(
            r.job_id
            for r in requests
            if str(r.parent_job_id) == parent  # type: ignore[attr-defined]
        )


@pytest.fixture(scope="module")
def bulk_platform(
    postgres_admin_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BulkPlatform]:
    name = f"e2e_bulk_{uuid.uuid4().hex[:12]}"
    database_url = asyncio.run(create_database(postgres_admin_url, name))
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    env = {
        **os.environ,
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "STREAM_PREFIX": prefix,
        "PORT": str(free_port()), "OPS_PORT": "0", "LOG_LEVEL": "INFO",
        "RATE_LIMITS_ENABLED": "false",  # the tests create notes as fast as the API takes them
    }  # fmt: skip
    for service in ("notes-api", "archiver", "fanout"):
        subprocess.run([BIN / service, "migrate"], env=env, check=True, capture_output=True)
    platform = BulkPlatform(
        env, with_database(postgres_admin_url, name), tmp_path_factory.mktemp("bulk")
    )
    try:
        for process in PROCESSES:
            platform.start(process)

        def api_up() -> bool:
            try:
                return httpx.get(f"{platform.base_url}/openapi.json", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        poll(api_up, 60, "notes-api answers")
        yield platform
        codes = {name: platform.stop(name) for name in list(platform.processes)}
        assert codes == dict.fromkeys(codes, 0), codes
    finally:
        for process in platform.processes.values():
            process.kill()
        redis = Redis.from_url(redis_url)
        for key in redis.scan_iter(match=f"*{prefix}*", count=1000):
            redis.unlink(key)
        redis.close()
        asyncio.run(drop_database(postgres_admin_url, name))


def bulk_archive(client: httpx.Client, tag: str, key: str | None = None) -> str:
    headers = {"Idempotency-Key": key} if key else {}
    response = client.post("/v1/notes:bulk-archive", json={"tag": tag}, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def finished(client: httpx.Client, job_id: str, within: float) -> dict[str, Any]:
    def job() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        return body if body["status"] in TERMINAL else None

    last: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        nonlocal last
        found = job()
        last = found or client.get(f"/v1/jobs/{job_id}").json()
        return found

    try:
        return poll(probe, within, f"parent {job_id} finished", every=0.2)  # type: ignore[no-any-return]
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; last seen: {last.get('status')} {last.get('progress')}"
        ) from None


def archive_with_fanout_killed_half_way(platform: BulkPlatform, owner: str, n: int) -> None:
    """Stop fanout, request, restart it publishing slowly, SIGKILL it half-way, start it again."""
    with platform.client(owner) as client:
        platform.create_notes(owner, n, "bulk")
        assert platform.stop("fanout") == 0
        parent = bulk_archive(client, "bulk")
        # Small relay rounds, so the kill lands while the children are being published.
        platform.start("fanout", RELAY_BATCH_SIZE=str(max(10, n // 100)))
        poll(lambda: sum(platform.children_published(parent).values()) >= n // 4, 120,
             "a quarter of the children published", every=0.01)  # fmt: skip
        assert platform.stop("fanout", signal.SIGKILL) == -signal.SIGKILL
        published = len(platform.children_published(parent))
        assert published < n, "killed too late to be half-way"
        platform.start("fanout")

        job = finished(client, parent, within=60 + n / 20)
        children = platform.children_published(parent)
        assert len(children) == n  # every child published; a re-sent one is the same event id
        assert job["status"] == "succeeded", job
        assert job["progress"] == {"total": n, "succeeded": n, "failed": 0, "skipped": 0}
        assert platform.snapshots(owner) == n


def test_bulk_archive_completes_with_progress_n_of_n_and_one_snapshot_each(
    bulk_platform: BulkPlatform,
) -> None:
    with bulk_platform.client("bulk-n") as client:
        bulk_platform.create_notes("bulk-n", 1000, "bulk")
        parent = bulk_archive(client, "bulk")
        job = finished(client, parent, within=120)

        assert job["status"] == "succeeded", job
        assert job["progress"] == {"total": 1000, "succeeded": 1000, "failed": 0, "skipped": 0}
        assert bulk_platform.snapshots("bulk-n") == 1000
        assert set(bulk_platform.children_published(parent).values()) == {1}
        listed = client.get("/v1/notes", params={"limit": 100}).json()["items"]
        assert all(note["archived_at"] is not None for note in listed)


def test_bulk_archive_completes_after_fanout_is_killed_half_way(
    bulk_platform: BulkPlatform,
) -> None:
    archive_with_fanout_killed_half_way(bulk_platform, "bulk-killed", 1000)


def test_notes_deleted_after_the_request_are_counted_skipped(bulk_platform: BulkPlatform) -> None:
    owner = "bulk-deleted"
    with bulk_platform.client(owner) as client:
        ids = bulk_platform.create_notes(owner, 20, "bulk")
        assert bulk_platform.stop("fanout") == 0  # the chunk waits while notes are deleted
        parent = bulk_archive(client, "bulk")
        for note_id in ids[:5]:
            assert client.delete(f"/v1/notes/{note_id}").status_code == 204
        deleted = "SELECT count(*) FROM archiver.note_versions WHERE owner_id = $1 AND deleted"
        poll(lambda: bulk_platform.sql(deleted, owner) == 5, 30, "the archiver has the deletions")
        bulk_platform.start("fanout")

        job = finished(client, parent, within=60)
        assert job["status"] == "succeeded", job
        assert job["progress"] == {"total": 20, "succeeded": 15, "failed": 0, "skipped": 5}
        assert bulk_platform.snapshots(owner) == 15


def test_a_filter_matching_nothing_succeeds_with_total_zero(bulk_platform: BulkPlatform) -> None:
    with bulk_platform.client("bulk-empty") as client:
        job = client.get(f"/v1/jobs/{bulk_archive(client, 'no-such-tag')}").json()
        assert job["status"] == "succeeded"
        assert job["progress"] == {"total": 0, "succeeded": 0, "failed": 0, "skipped": 0}


def test_the_same_idempotency_key_gives_the_same_parent(bulk_platform: BulkPlatform) -> None:
    owner = "bulk-idem"
    with bulk_platform.client(owner) as client:
        bulk_platform.create_notes(owner, 10, "bulk")
        first = bulk_archive(client, "bulk", key="bulk-once")
        second = bulk_archive(client, "bulk", key="bulk-once")
        assert first == second
        job = finished(client, first, within=60)
        assert job["progress"] == {"total": 10, "succeeded": 10, "failed": 0, "skipped": 0}
        assert bulk_platform.snapshots(owner) == 10
        jobs = client.get("/v1/jobs").json()["items"]
        assert [j["id"] for j in jobs if j["type"] == "bulk_archive"] == [first]
