"""Integration: the archiver's worker and outbox relay on real Redis and PostgreSQL."""

from __future__ import annotations

import json
from uuid import UUID, uuid4

from archiver.store import content_checksum
from contracts import JOBS_LIFECYCLE, ArchiveRequested
from contracts.notes import NoteArchived, NoteCopyCompleted, copy_note_id
from contracts.streams import (
    NOTES_ARCHIVED,
    NOTES_COPY_COMPLETED,
    NOTES_CREATED,
    NOTES_DELETED,
    NOTES_UPDATED,
    job_stream,
)
from servicekit.jobs import enqueue, publish
from servicekit.operations import list_dead_letters
from servicekit.testing import eventually
from servicekit.wire import DATA_FIELD, decode_envelope, encode_envelope

from .conftest import (
    Archiver,
    archive_request,
    copy_request,
    note_created,
    note_deleted,
    note_updated,
)


async def reported(archiver: Archiver, job_id: UUID, lifecycle_type: str) -> bool:
    """Whether the runtime put a lifecycle event of ``lifecycle_type`` for the job."""
    entries = await archiver.redis.xrange(archiver.keys.stream(JOBS_LIFECYCLE))
    for _, fields in entries:
        body = json.loads(decode_envelope(fields[DATA_FIELD.encode()])[0])
        if body["job_id"] == str(job_id) and body["type"] == lifecycle_type:
            return True
    return False


async def test_archive_flow_stores_a_snapshot_and_emits_note_archived(archiver: Archiver) -> None:
    created = note_created(title="Plan", body="Ship it", tags=["work"])
    await publish(archiver.redis, archiver.keys, NOTES_CREATED, created)
    request = archive_request(created.note_id)
    await enqueue(archiver.redis, archiver.keys, request)

    [archived] = await eventually(lambda: archiver.events(NOTES_ARCHIVED, NoteArchived))

    assert (archived.note_id, archived.version, archived.job_id) == (
        created.note_id,
        1,
        request.job_id,
    )
    assert archived.checksum == content_checksum("Plan", "Ship it", ["work"])
    assert archived.correlation_id == str(request.event_id)
    assert await archiver.count("snapshots", created.note_id) == 1


async def test_archive_requested_before_the_note_arrives_succeeds_once_it_does(
    archiver: Archiver,
) -> None:
    created = note_created()
    request = archive_request(created.note_id, version=2)
    await enqueue(archiver.redis, archiver.keys, request)
    await eventually(lambda: reported(archiver, request.job_id, "jobs.lifecycle.retrying.v1"))

    await publish(archiver.redis, archiver.keys, NOTES_CREATED, created)
    await publish(archiver.redis, archiver.keys, NOTES_UPDATED, note_updated(created.note_id, 2))

    [archived] = await eventually(lambda: archiver.events(NOTES_ARCHIVED, NoteArchived))
    assert (archived.note_id, archived.version) == (created.note_id, 2)


async def test_archive_of_a_deleted_note_is_reported_skipped(archiver: Archiver) -> None:
    created = note_created()
    await publish(archiver.redis, archiver.keys, NOTES_CREATED, created)
    await publish(archiver.redis, archiver.keys, NOTES_DELETED, note_deleted(created.note_id, 2))

    async def deletion_stored() -> bool:  # both versions: the deletion must be known first
        return await archiver.count("note_versions", created.note_id) == 2

    await eventually(deletion_stored)
    request = archive_request(created.note_id)
    await enqueue(archiver.redis, archiver.keys, request)

    await eventually(lambda: reported(archiver, request.job_id, "jobs.lifecycle.skipped.v1"))
    assert await archiver.count("snapshots", created.note_id) == 0
    assert await archiver.events(NOTES_ARCHIVED, NoteArchived) == []


async def test_copy_flow_emits_one_copy_completed_with_the_derived_id(archiver: Archiver) -> None:
    created = note_created(title="Source", body="text", tags=["a"])
    await publish(archiver.redis, archiver.keys, NOTES_CREATED, created)
    request = copy_request(created.note_id, new_title="Copy")
    await enqueue(archiver.redis, archiver.keys, request)

    [completed] = await eventually(lambda: archiver.events(NOTES_COPY_COMPLETED, NoteCopyCompleted))
    assert completed.new_note_id == copy_note_id(request.job_id)
    assert (completed.title, completed.body, completed.tags) == ("Copy", "text", ["a"])


async def test_duplicate_deliveries_make_one_snapshot_one_archived_and_one_copy(
    archiver: Archiver,
) -> None:
    created = note_created()
    archive, copy = archive_request(created.note_id), copy_request(created.note_id)
    for _ in range(2):
        await publish(archiver.redis, archiver.keys, NOTES_CREATED, created)
        await enqueue(archiver.redis, archiver.keys, archive)
        await enqueue(archiver.redis, archiver.keys, copy)

    # Both copies of each job have been handled once every entry is acknowledged.
    async def all_acknowledged() -> bool:
        for stream in (job_stream("archive", "default"), job_stream("copy", "default")):
            groups = await archiver.redis.xinfo_groups(archiver.keys.stream(stream))
            if groups[0]["entries-read"] != 2 or groups[0]["pending"] != 0:
                return False
        return True

    await eventually(all_acknowledged)
    await eventually(lambda: archiver.events(NOTES_COPY_COMPLETED, NoteCopyCompleted))
    await eventually(lambda: archiver.events(NOTES_ARCHIVED, NoteArchived))
    assert await archiver.count("note_versions", created.note_id) == 1
    assert await archiver.count("snapshots", created.note_id) == 1
    assert len(await archiver.events(NOTES_ARCHIVED, NoteArchived)) == 1
    assert len(await archiver.events(NOTES_COPY_COMPLETED, NoteCopyCompleted)) == 1


async def test_archive_for_another_owner_is_dead_lettered_with_its_reason(
    archiver: Archiver,
) -> None:
    created = note_created()
    await publish(archiver.redis, archiver.keys, NOTES_CREATED, created)
    await enqueue(archiver.redis, archiver.keys, archive_request(created.note_id, owner_id="eve"))
    stream = job_stream("archive", "default")

    [letter] = await eventually(lambda: list_dead_letters(archiver.redis, archiver.keys, stream))
    assert letter.meta["error_class"] == "PermanentError"
    assert "not owned by eve" in letter.meta["error_message"]
    assert await archiver.count("snapshots", created.note_id) == 0


async def test_schema_invalid_archive_request_is_dead_lettered_with_its_reason(
    archiver: Archiver,
) -> None:
    body = archive_request(uuid4()).model_dump(mode="json") | {"version": 0}
    headers = {"content-type": "application/json", "event_type": ArchiveRequested.type_name()}
    stream = job_stream("archive", "default")
    data = encode_envelope(json.dumps(body).encode(), headers)
    await archiver.redis.xadd(archiver.keys.stream(stream), {DATA_FIELD: data})

    [letter] = await eventually(lambda: list_dead_letters(archiver.redis, archiver.keys, stream))
    assert letter.meta["error_class"] == "UndecodableEntry"
    assert "version" in letter.meta["error_message"]
