"""Deterministic ids and the wrappers services build jobs and ticks with."""

from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import pytest
from pydantic import ValidationError

from contracts import (
    ArchiveRequested,
    AutoArchiveRequested,
    BulkArchiveChunk,
    ChunkItem,
    DelayedJobRequested,
    JobType,
    NoteCopyCompleted,
    Priority,
    ScheduleFired,
    copy_note_id,
)

TICK = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)


def test_copy_note_id_is_stable_per_job_and_enforced() -> None:
    job_id = uuid4()
    assert copy_note_id(job_id) == copy_note_id(job_id) != copy_note_id(uuid4())
    fields = {
        "producer": "archiver",
        "owner_id": "o",
        "job_id": job_id,
        "source_note_id": uuid4(),
        "source_version": 2,
        "title": "t",
        "body": "b",
        "tags": [],
    }
    assert NoteCopyCompleted(**fields, new_note_id=copy_note_id(job_id)).new_note_id
    with pytest.raises(ValidationError):
        NoteCopyCompleted(**fields, new_note_id=uuid4())


def test_bulk_child_job_ids_are_stable_per_parent_and_note() -> None:
    item = ChunkItem(note_id=uuid4(), version=1)
    parent = uuid4()
    chunks = [
        BulkArchiveChunk(
            producer="notes-api", owner_id="o", job_id=uuid4(), parent_job_id=parent,
            chunk_no=0, items=[item],
        )
        for _ in range(2)
    ]  # fmt: skip
    assert chunks[0].child_job_id(item) == chunks[1].child_job_id(item)


def test_delayed_request_wraps_a_job_for_its_priority_stream() -> None:
    request = ArchiveRequested(
        producer="notes-api", owner_id="o", job_id=uuid4(), note_id=uuid4(), version=3
    )
    delayed = DelayedJobRequested.for_request(
        request, run_at=TICK, priority=Priority.LOW, producer="notes-api"
    )
    assert delayed.stream == "jobs.archive.low"
    assert delayed.job_type is JobType.ARCHIVE
    assert ArchiveRequested.model_validate(delayed.payload) == request
    assert delayed.causation_id == str(request.event_id)


def test_delayed_request_to_another_job_types_stream_is_rejected() -> None:
    with pytest.raises(ValidationError):
        DelayedJobRequested(
            producer="notes-api", job_id=uuid4(), job_type="copy", run_at=TICK,
            stream="jobs.archive.low", payload={},
        )  # fmt: skip


def test_replicas_derive_the_same_event_id_for_the_same_tick() -> None:
    same_instant = TICK.astimezone(timezone(timedelta(hours=2)))
    first = AutoArchiveRequested.for_tick(
        schedule="nightly", tick_at=TICK, producer="scheduler", not_updated_for_days=30
    )
    second = AutoArchiveRequested.for_tick(
        schedule="nightly", tick_at=same_instant, producer="scheduler", not_updated_for_days=30
    )
    fired = ScheduleFired.for_tick(
        schedule="nightly", tick_at=TICK, producer="scheduler", command_type=first.type
    )
    later = AutoArchiveRequested.for_tick(
        schedule="nightly", tick_at=TICK + timedelta(days=1), producer="scheduler",
        not_updated_for_days=30,
    )  # fmt: skip
    assert first.event_id == second.event_id
    assert len({first.event_id, fired.event_id, later.event_id}) == 3
