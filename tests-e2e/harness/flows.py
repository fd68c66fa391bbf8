"""The archive flow every platform variant runs: key → note → archive job → succeeded, archived."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.jobs import wait_finished

if TYPE_CHECKING:
    from harness.platform import Platform

__all__ = ["archive_a_note"]


def archive_a_note(platform: Platform, owner: str) -> dict[str, Any]:
    """Create a key for ``owner`` and a note, archive it, wait; return the finished job.

    Fails unless every step answers as documented and the job succeeded with the note archived.
    """
    with platform.client(platform.create_key(owner)) as client:
        note = client.post("/v1/notes", json={"title": "hello", "body": "world", "tags": ["e2e"]})
        assert note.status_code == 201, note.text
        accepted = client.post(f"/v1/notes/{note.json()['id']}/archive", json={})
        assert accepted.status_code == 202, accepted.text

        job = wait_finished(client, accepted.json()["job_id"])

        assert job["status"] == "succeeded", job
        assert job["note_id"] == note.json()["id"]
        assert client.get(f"/v1/notes/{note.json()['id']}").json()["archived_at"] is not None
        return job
