"""From an HTTP request to a finished job, across notes-api, Redis Streams, archiver and back."""

import json
import time
from typing import Any

from redis import Redis

from contracts import JOBS_LIFECYCLE
from servicekit import StreamKeys

Platform = Any  # the `platform` fixture of conftest.py


def poll(probe, within: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.05)


def finished(client, job_id: str):  # type: ignore[no-untyped-def]
    job = client.get(f"/v1/jobs/{job_id}").json()
    return job if job["status"] in {"succeeded", "failed", "dead", "skipped", "cancelled"} else None


def test_archive_job_runs_end_to_end_in_one_trace(platform: Platform, redis_url: str) -> None:
    with platform.client(platform.create_key("alice")) as client:
        note = client.post("/v1/notes", json={"title": "hello", "body": "world", "tags": ["e2e"]})
        assert note.status_code == 201
        accepted = client.post(f"/v1/notes/{note.json()['id']}/archive", json={})
        assert accepted.status_code == 202
        job = poll(lambda: finished(client, accepted.json()["job_id"]))
        assert job["status"] == "succeeded"
        assert client.get(f"/v1/notes/{note.json()['id']}").json()["archived_at"] is not None
    # The archiver's consumer span joined the trace of the HTTP request that created the job.
    lifecycle = Redis.from_url(redis_url).xrange(
        StreamKeys(platform.env["STREAM_PREFIX"]).stream(JOBS_LIFECYCLE)
    )
    bodies = [json.loads(fields[b"__data__"])["body"] for _, fields in lifecycle]
    started = [b for b in bodies if b["type"] == "jobs.lifecycle.started.v1"]
    assert started
    assert started[0]["trace_id"] == job["trace_id"]


def test_copy_job_creates_exactly_one_copy_for_the_same_owner(platform: Platform) -> None:
    with platform.client(platform.create_key("bob")) as client:
        source = client.post("/v1/notes", json={"title": "original", "body": "text"}).json()
        accepted = client.post(f"/v1/notes/{source['id']}/copy", json={"title": "copy"}).json()
        job = poll(lambda: finished(client, accepted["job_id"]))
        assert job["status"] == "succeeded"
        copy = client.get(f"/v1/notes/{job['result']['note_id']}")
        assert copy.status_code == 200
        assert (copy.json()["title"], copy.json()["body"]) == ("copy", "text")
        titles = [n["title"] for n in client.get("/v1/notes").json()["items"]]
        assert sorted(titles) == ["copy", "original"]
