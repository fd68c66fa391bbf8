"""The envelope: immutable, tolerant of unknown fields, strict about what producers send."""

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from contracts import (
    MAX_CHUNK_ITEMS,
    BulkArchiveChunk,
    ChunkItem,
    JobRequest,
    NoteArchived,
    NoteCreated,
    NoteSnapshot,
    event_class_for,
)

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def snapshot(note_id: UUID | None = None, version: int = 1, **changes: object) -> NoteSnapshot:
    fields: dict[str, object] = {
        "id": note_id or uuid4(),
        "owner_id": "owner-1",
        "title": "Groceries",
        "body": "milk, eggs",
        "tags": ["home"],
        "version": version,
        "created_at": WHEN,
        "updated_at": WHEN,
        **changes,
    }
    return NoteSnapshot.model_validate(fields)


def note_created(**changes: object) -> NoteCreated:
    note = snapshot()
    fields: dict[str, object] = {
        "producer": "notes-api",
        "owner_id": note.owner_id,
        "note_id": note.id,
        "version": note.version,
        "note": note,
        **changes,
    }
    return NoteCreated.model_validate(fields)


def chunk(items: int) -> BulkArchiveChunk:
    return BulkArchiveChunk(
        producer="notes-api",
        owner_id="owner-1",
        job_id=uuid4(),
        parent_job_id=uuid4(),
        chunk_no=0,
        items=[ChunkItem(note_id=uuid4(), version=1) for _ in range(items)],
    )


def test_event_is_frozen() -> None:
    event = note_created()
    with pytest.raises(ValidationError):
        event.producer = "someone-else"  # type: ignore[misc]


def test_unknown_fields_from_a_newer_producer_are_ignored() -> None:
    payload = note_created().model_dump(mode="json") | {"added_in_a_later_release": 1}
    payload["note"]["also_new"] = "x"
    event = NoteCreated.model_validate(payload)
    assert not hasattr(event, "added_in_a_later_release")


def test_type_name_defaults_and_cannot_be_forged() -> None:
    event = note_created()
    assert event.type == "notes.created.v1" == NoteCreated.type_name()
    with pytest.raises(ValidationError):
        note_created(type="notes.updated.v1")


def test_abstract_event_has_no_type_name() -> None:
    with pytest.raises(TypeError):
        JobRequest.type_name()


def test_json_round_trip_preserves_the_event() -> None:
    event = note_created(correlation_id="req-1")
    assert NoteCreated.model_validate_json(event.model_dump_json()) == event


def test_registry_finds_the_class_of_a_type_name() -> None:
    assert event_class_for("notes.created.v1") is NoteCreated
    assert event_class_for("notes.created.v9") is None


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValidationError):
        note_created(occurred_at=datetime(2025, 1, 1))
    with pytest.raises(ValidationError):
        snapshot(created_at=datetime(2025, 1, 1))


def test_occurred_at_defaults_to_an_aware_now() -> None:
    assert note_created().occurred_at.tzinfo is not None


def test_caused_by_propagates_correlation_and_causation() -> None:
    cause = note_created(correlation_id="req-1")
    effect = NoteArchived.caused_by(
        cause,
        producer="archiver",
        owner_id=cause.owner_id,
        note_id=cause.note_id,
        version=cause.version,
        job_id=uuid4(),
    )
    assert effect.correlation_id == "req-1"
    assert effect.causation_id == str(cause.event_id)
    assert effect.event_id != cause.event_id


def test_caused_by_starts_a_correlation_from_an_uncorrelated_cause() -> None:
    cause = note_created()
    effect = NoteArchived.caused_by(
        cause, producer="archiver", owner_id="o", note_id=uuid4(), version=1, job_id=uuid4()
    )
    assert effect.correlation_id == str(cause.event_id)


def test_chunk_of_the_maximum_size_is_accepted_and_one_more_rejected() -> None:
    assert len(chunk(MAX_CHUNK_ITEMS).items) == MAX_CHUNK_ITEMS
    with pytest.raises(ValidationError):
        chunk(MAX_CHUNK_ITEMS + 1)
    with pytest.raises(ValidationError):
        chunk(0)


@pytest.mark.parametrize(
    "changes",
    [
        {"title": "x" * 201},
        {"tags": ["t"] * 21},
        {"tags": ["x" * 33]},
        {"version": 0},
    ],
)
def test_invalid_note_snapshots_are_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        snapshot(**changes)


def test_note_event_must_carry_its_own_snapshot() -> None:
    with pytest.raises(ValidationError):
        note_created(note_id=uuid4())
    with pytest.raises(ValidationError):
        note_created(version=2)
    assert note_created().note.updated_at == WHEN
