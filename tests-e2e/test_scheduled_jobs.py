"""Delayed and scheduled work end to end: notes-api → scheduler → the job streams → back.

Punctuality (how late a delayed job runs) is a `make bench` figure, not asserted here: these
tests say that a job waits for its time, runs once after it, and that a cancelled one never runs.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from harness import Platform, poll, wait_finished

ONE_SECOND_AUTO_ARCHIVE = """
[[schedule]]
name = "auto-archive-e2e"
cron = "* * * * * *"
event = "commands.auto_archive.v1"
payload = { not_updated_for_days = 1 }
overlap = "skip"
catch_up = "latest"
"""


@pytest.fixture(scope="module")
def platform_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The module's scheduler fires an auto-archive every second (notes stale after one day):
    only a note the test backdates is stale, so the other tests' notes are never taken."""
    schedules = tmp_path_factory.mktemp("schedules") / "schedules.toml"
    schedules.write_text(ONE_SECOND_AUTO_ARCHIVE)
    return {"SCHEDULES_FILE": str(schedules)}


def _archive_at(client: httpx.Client, note_id: str, run_at: datetime) -> dict[str, Any]:
    accepted = client.post(f"/v1/notes/{note_id}/archive", json={"run_at": run_at.isoformat()})
    assert accepted.status_code == 202, accepted.text
    return dict(accepted.json())


def test_a_delayed_archive_waits_for_its_time_then_succeeds(platform: Platform) -> None:
    with platform.client(platform.create_key("alice")) as client:
        note = client.post("/v1/notes", json={"title": "later", "body": "b"}).json()
        run_at = datetime.now(UTC) + timedelta(seconds=3)
        job_id = _archive_at(client, note["id"], run_at)["job_id"]
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "scheduled"
        assert client.get(f"/v1/notes/{note['id']}").json()["archived_at"] is None

        job = wait_finished(client, job_id)

        assert job["status"] == "succeeded", job
        archived_at = client.get(f"/v1/notes/{note['id']}").json()["archived_at"]
        assert datetime.fromisoformat(archived_at) >= run_at  # not before its time


def test_a_delayed_archive_cancelled_before_its_time_never_runs(platform: Platform) -> None:
    with platform.client(platform.create_key("bob")) as client:
        kept = client.post("/v1/notes", json={"title": "kept", "body": "b"}).json()
        dropped = client.post("/v1/notes", json={"title": "dropped", "body": "b"}).json()
        run_at = datetime.now(UTC) + timedelta(seconds=3)
        dropped_job = _archive_at(client, dropped["id"], run_at)["job_id"]
        # Due after the cancelled one: the scheduler publishes in due-time order, so once this
        # one has run, the cancelled one would have run too had it not been dropped.
        kept_job = _archive_at(client, kept["id"], run_at + timedelta(seconds=1))["job_id"]
        cancelled = client.post(f"/v1/jobs/{dropped_job}/cancel")
        assert cancelled.status_code == 200, cancelled.text

        assert wait_finished(client, kept_job)["status"] == "succeeded"

        assert client.get(f"/v1/jobs/{dropped_job}").json()["status"] == "cancelled"
        assert client.get(f"/v1/notes/{dropped['id']}").json()["archived_at"] is None


def test_a_one_second_auto_archive_schedule_takes_a_stale_note(platform: Platform) -> None:
    with platform.client(platform.create_key("carol")) as client:
        stale = client.post("/v1/notes", json={"title": "stale", "body": "b"}).json()
        fresh = client.post("/v1/notes", json={"title": "fresh", "body": "b"}).json()
        platform.sql(
            "UPDATE notes.notes SET updated_at = now() - interval '2 days' WHERE id = $1::uuid",
            stale["id"],
        )

        def bulk_job_for_the_stale_note() -> dict[str, Any] | None:
            jobs = client.get("/v1/jobs", params={"limit": 100}).json()["items"]
            return next((j for j in jobs if j["type"] == "bulk_archive"), None)

        job = poll(bulk_job_for_the_stale_note, 60, "a bulk_archive job from the schedule")
        assert job["progress"]["total"] == 1  # the stale note only, not the fresh one
        assert wait_finished(client, job["id"])["status"] == "succeeded"
        # fanout expanded the chunk into an archive job for the note
        assert client.get(f"/v1/notes/{stale['id']}").json()["archived_at"] is not None
        assert client.get(f"/v1/notes/{fresh['id']}").json()["archived_at"] is None
