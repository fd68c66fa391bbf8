"""Stream names, consumer groups and the catalogue agree with each other."""

import pytest

from contracts import (
    CATALOGUE,
    CONSUMER_GROUPS,
    EVENT_TYPES,
    KNOWN_STREAMS,
    NOTES_CREATED,
    PRIORITY_WEIGHTS,
    JobType,
    NoteArchived,
    Priority,
    ScheduleFired,
    Service,
    dead_letter_stream,
    groups_for,
    job_stream,
    job_streams,
)
from contracts.groups import _NOTE_CHANGES as NOTE_CHANGES
from contracts.groups import _reads


def test_job_stream_names_carry_type_and_priority() -> None:
    assert job_stream(JobType.ARCHIVE, Priority.CRITICAL) == "jobs.archive.critical"
    assert job_stream("bulk_archive_chunk", "low") == "jobs.bulk_archive_chunk.low"


def test_job_streams_are_ordered_critical_default_low() -> None:
    assert job_streams(JobType.COPY) == ("jobs.copy.critical", "jobs.copy.default", "jobs.copy.low")


def test_bulk_archive_parent_has_no_stream() -> None:
    with pytest.raises(ValueError, match="not queued"):
        job_stream(JobType.BULK_ARCHIVE, Priority.DEFAULT)


def test_unknown_priority_is_rejected() -> None:
    with pytest.raises(ValueError, match="urgent"):
        job_stream(JobType.ARCHIVE, "urgent")


def test_dead_letter_stream_appends_dlq() -> None:
    assert dead_letter_stream("jobs.archive.low") == "jobs.archive.low.dlq"


def test_priority_weights_are_six_three_one() -> None:
    assert [PRIORITY_WEIGHTS[p] for p in Priority] == [6, 3, 1]


def test_every_declared_group_reads_a_known_stream() -> None:
    unknown = [g for g in CONSUMER_GROUPS if g.stream not in KNOWN_STREAMS]
    assert unknown == []


def test_stream_group_pairs_are_unique() -> None:
    pairs = [(g.stream, g.group) for g in CONSUMER_GROUPS]
    assert len(pairs) == len(set(pairs))


def test_every_event_in_the_catalogue_has_a_unique_type() -> None:
    names = [spec.type_name for spec in CATALOGUE]
    assert len(names) == len(set(names)) == len(EVENT_TYPES)
    assert all(name.endswith(".v1") for name in names)


def test_catalogue_streams_are_known_streams() -> None:
    assert {s for spec in CATALOGUE for s in spec.streams} <= KNOWN_STREAMS


def test_the_catalogue_reads_its_consumers_from_the_declared_groups() -> None:
    by_type = {spec.event: spec for spec in CATALOGUE}
    assert by_type[NoteArchived].consumers == (Service.NOTES_API_WORKER,)
    assert by_type[ScheduleFired].consumers == ()  # observability only: no group reads it
    catalogued = {(s, c) for spec in CATALOGUE for s in spec.streams for c in spec.consumers}
    assert catalogued == {(g.stream, g.service) for g in CONSUMER_GROUPS}


def test_a_service_may_read_one_stream_in_several_isolated_groups() -> None:
    isolated = (
        *_reads(Service.FANOUT, "index_note", NOTES_CREATED, group="fanout.index"),
        *_reads(Service.FANOUT, "notify_owner", NOTES_CREATED, group="fanout.notify"),
    )
    assert [(g.stream, g.group, g.handler) for g in isolated] == [
        (NOTES_CREATED, "fanout.index", "index_note"),
        (NOTES_CREATED, "fanout.notify", "notify_owner"),
    ]
    assert {g.group for g in _reads(Service.ARCHIVER, "h", NOTES_CREATED)} == {"archiver"}


def test_groups_for_a_service_lists_only_its_groups() -> None:
    scheduler = groups_for("scheduler")
    assert [(g.stream, g.group) for g in scheduler] == [
        ("jobs.delayed.v1", "scheduler"),
        ("commands.completed.v1", "scheduler"),
    ]
    assert {(g.stream, g.group) for g in groups_for(Service.FANOUT)} == {
        *((s, "fanout") for s in job_streams(JobType.BULK_ARCHIVE_CHUNK)),
        *((s, g) for s in NOTE_CHANGES for g in ("fanout.audit", "fanout.activity")),
    }
    # Its own handlers' rows (not a count: `make new-job service=archiver` adds rows).
    assert {g.handler for g in groups_for(Service.ARCHIVER)} >= {
        "store_note_version", "record_note_deletion", "archive_note", "copy_note",
    }  # fmt: skip
    assert groups_for(Service.NOTES_API) == ()
