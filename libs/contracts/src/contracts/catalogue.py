"""The event catalogue: every event type, where it flows, who sends and who reads it."""

from dataclasses import dataclass
from typing import Any

from contracts import streams
from contracts.envelope import Event
from contracts.groups import Service
from contracts.jobs import (
    ArchiveRequested,
    BulkArchiveChunk,
    CopyRequested,
    DelayedJobCancelled,
    DelayedJobRequested,
)
from contracts.lifecycle import (
    JobCompleted,
    JobDeadLettered,
    JobFailed,
    JobProgress,
    JobRetrying,
    JobSkipped,
    JobStarted,
    JobSucceeded,
)
from contracts.notes import (
    NoteArchived,
    NoteCopyCompleted,
    NoteCreated,
    NoteDeleted,
    NoteUpdated,
)
from contracts.schedules import AutoArchiveRequested, PurgeExpiredIdempotencyKeys, ScheduleFired
from contracts.status import JobType
from contracts.streams import job_streams


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One catalogue row: an event class and how it travels."""

    event: type[Event]
    streams: tuple[str, ...]
    producers: tuple[Service, ...]
    consumers: tuple[Service, ...]
    purpose: str

    @property
    def type_name(self) -> str:
        """The event's versioned type name."""
        return self.event.type_name()


_API, _WORKER = Service.NOTES_API, Service.NOTES_API_WORKER
_ARCHIVER, _SCHEDULER, _FANOUT = Service.ARCHIVER, Service.SCHEDULER, Service.FANOUT
_RUNTIME = (_ARCHIVER, _FANOUT)  # services whose job runtime emits attempt events


def _lifecycle(event: type[Event], producers: tuple[Service, ...], purpose: str) -> EventSpec:
    return EventSpec(event, (streams.JOBS_LIFECYCLE,), producers, (_WORKER,), purpose)


CATALOGUE: tuple[EventSpec, ...] = (
    EventSpec(
        NoteCreated, (streams.NOTES_CREATED,), (_API,), (_ARCHIVER,),
        "A note was created; carries the full note.",
    ),
    EventSpec(
        NoteUpdated, (streams.NOTES_UPDATED,), (_API,), (_ARCHIVER,),
        "A note changed; carries the new full note.",
    ),
    EventSpec(
        NoteDeleted, (streams.NOTES_DELETED,), (_API,), (_ARCHIVER,),
        "A note was deleted; carries its last state.",
    ),
    EventSpec(
        NoteArchived, (streams.NOTES_ARCHIVED,), (_ARCHIVER,), (_WORKER,),
        "Result of an archive job: a version was frozen.",
    ),
    EventSpec(
        NoteCopyCompleted, (streams.NOTES_COPY_COMPLETED,), (_ARCHIVER,), (_WORKER,),
        "Result of a copy job: the content of the new note.",
    ),
    EventSpec(
        ArchiveRequested, job_streams(JobType.ARCHIVE), (_API, _FANOUT, _SCHEDULER), (_ARCHIVER,),
        "Archive job: freeze a version of a note.",
    ),
    EventSpec(
        CopyRequested, job_streams(JobType.COPY), (_API, _SCHEDULER), (_ARCHIVER,),
        "Copy job: copy a stored version into a new note.",
    ),
    EventSpec(
        BulkArchiveChunk, job_streams(JobType.BULK_ARCHIVE_CHUNK), (_API, _WORKER),
        (_FANOUT,),
        "Up to 1,000 resolved (note, version) pairs of a bulk archive.",
    ),
    EventSpec(
        DelayedJobRequested, (streams.JOBS_DELAYED,), (_API,), (_SCHEDULER,),
        "Publish a job request on its stream when due.",
    ),
    EventSpec(
        DelayedJobCancelled, (streams.JOBS_DELAYED,), (_API,), (_SCHEDULER,),
        "Drop a delayed job that is not yet due.",
    ),
    _lifecycle(JobStarted, _RUNTIME, "An attempt of a job began."),
    _lifecycle(JobRetrying, _RUNTIME, "An attempt failed transiently; retry scheduled."),
    _lifecycle(JobSucceeded, _RUNTIME, "A job's handler finished."),
    _lifecycle(JobFailed, _RUNTIME, "A job failed permanently."),
    _lifecycle(JobDeadLettered, _RUNTIME, "Retries ran out; moved to the dead-letter stream."),
    _lifecycle(JobSkipped, _RUNTIME, "A job had nothing to do (e.g. note deleted)."),
    _lifecycle(JobProgress, (_WORKER,), "A parent job's child counts changed."),
    _lifecycle(JobCompleted, (_WORKER,), "A parent job finished, with final counts."),
    EventSpec(
        ScheduleFired, (streams.SCHEDULES_FIRED,), (_SCHEDULER,), (),
        "A schedule ticked (audit and observability).",
    ),
    EventSpec(
        AutoArchiveRequested, (streams.COMMANDS_AUTO_ARCHIVE,), (_SCHEDULER,), (_WORKER,),
        "Bulk-archive notes not updated for N days.",
    ),
    EventSpec(
        PurgeExpiredIdempotencyKeys, (streams.COMMANDS_PURGE_IDEMPOTENCY_KEYS,), (_SCHEDULER,),
        (_WORKER,),
        "Delete expired idempotency records.",
    ),
)  # fmt: skip
"""Every event type on the platform, one row each."""

EVENT_TYPES: dict[str, type[Event]] = {spec.type_name: spec.event for spec in CATALOGUE}
"""Event class by type name."""


def event_class_for(type_name: str) -> type[Event] | None:
    """Return the class of an event type name, or ``None`` if it is unknown."""
    return EVENT_TYPES.get(type_name)


def json_schemas() -> dict[str, dict[str, Any]]:
    """Return the JSON Schema of every event, by type name.

    Validation mode: the schema says what a consumer accepts, which is what compatibility is about
    (a field with a default is optional to a reader, even though a producer always writes it).
    """
    return {
        spec.type_name: spec.event.model_json_schema(mode="validation")
        for spec in sorted(CATALOGUE, key=lambda s: s.type_name)
    }
