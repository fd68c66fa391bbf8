"""Delayed and scheduled work end to end: notes-api → scheduler → the job streams → back.

Punctuality (how late a delayed job runs) is a `make bench` figure, not asserted here: these
tests say that a job waits for its time, runs once after it, and that a cancelled one never runs.
"""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from .conftest import BIN, running_platform
from .test_archive_and_copy import finished, poll

Platform = Any  # the `platform` fixture of conftest.py

ONE_SECOND_AUTO_ARCHIVE = """
[[schedule]]
name = "auto-archive-e2e"
cron = "* * * * * *"
event = "commands.auto_archive.v1"
payload = { not_updated_for_days = 1 }
overlap = "skip"
catch_up = "latest"
"""


def _archive_at(client, note_id: str, run_at: datetime) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    accepted = client.post(f"/v1/notes/{note_id}/archive", json={"run_at": run_at.isoformat()})
    assert accepted.status_code == 202, accepted.text
    return accepted.json()


def test_a_delayed_archive_waits_for_its_time_then_succeeds(platform: Platform) -> None:
    with platform.client(platform.create_key("alice")) as client:
        note = client.post("/v1/notes", json={"title": "later", "body": "b"}).json()
        run_at = datetime.now(UTC) + timedelta(seconds=3)
        job_id = _archive_at(client, note["id"], run_at)["job_id"]
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "scheduled"
        assert client.get(f"/v1/notes/{note['id']}").json()["archived_at"] is None

        job = poll(lambda: finished(client, job_id), within=60)

        assert job["status"] == "succeeded"
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

        assert poll(lambda: finished(client, kept_job), within=60)["status"] == "succeeded"

        assert client.get(f"/v1/jobs/{dropped_job}").json()["status"] == "cancelled"
        assert client.get(f"/v1/notes/{dropped['id']}").json()["archived_at"] is None


def test_a_one_second_auto_archive_schedule_takes_a_stale_note(
    migrated: dict[str, str], tmp_path: Path
) -> None:
    schedules = tmp_path / "schedules.toml"
    schedules.write_text(ONE_SECOND_AUTO_ARCHIVE)
    env = {**migrated, "SCHEDULES_FILE": str(schedules)}
    with (
        running_platform(env, tmp_path) as platform,
        platform.client(platform.create_key("carol")) as client,
    ):
        stale = client.post("/v1/notes", json={"title": "stale", "body": "b"}).json()
        fresh = client.post("/v1/notes", json={"title": "fresh", "body": "b"}).json()
        _backdate(migrated["DATABASE_URL"], stale["id"], days=2)

        def bulk_job_for_the_stale_note() -> dict[str, Any] | None:
            jobs = client.get("/v1/jobs", params={"limit": 100}).json()["items"]
            return next((j for j in jobs if j["type"] == "bulk_archive"), None)

        job = poll(bulk_job_for_the_stale_note, within=60)
        assert job["progress"]["total"] == 1  # the stale note only, not the fresh one
        if (BIN / "fanout").exists():  # the chunk is expanded into an archive job
            poll(lambda: client.get(f"/v1/notes/{stale['id']}").json()["archived_at"], within=60)
        assert client.get(f"/v1/notes/{fresh['id']}").json()["archived_at"] is None


def _backdate(database_url: str, note_id: str, *, days: int) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(
                "UPDATE notes.notes SET updated_at = now() - make_interval(days => $2)"
                " WHERE id = $1::uuid",
                note_id, days,
            )  # fmt: skip
        finally:
            await connection.close()

    asyncio.run(run())
