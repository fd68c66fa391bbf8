"""The event catalogue: every event type, where it flows, who sends and who reads it."""

from dataclasses import dataclass
from typing import Any

from contracts import streams
from contracts.envelope import Event
from contracts.groups import CONSUMER_GROUPS, Service
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
from contracts.schedules import (
    AutoArchiveRequested,
    CommandCompleted,
    PurgeExpiredIdempotencyKeys,
    ScheduleFired,
)
from contracts.status import JobType
from contracts.streams import job_streams


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One catalogue row: an event class and how it travels."""

    event: type[Event]
    streams: tuple[str, ...]
    producers: tuple[Service, ...]
    purpose: str

    @property
    def consumers(self) -> tuple[Service, ...]:
        """Services with a consumer group on one of the event's streams (from contracts.groups)."""
        reading = {g.service for g in CONSUMER_GROUPS if g.stream in self.streams}
        return tuple(s for s in Service if s in reading)

    @property
    def type_name(self) -> str:
        """The event's versioned type name."""
        return self.event.type_name()


_API, _WORKER = Service.NOTES_API, Service.NOTES_API_WORKER
_ARCHIVER, _SCHEDULER, _FANOUT = Service.ARCHIVER, Service.SCHEDULER, Service.FANOUT
_RUNTIME = (  # services whose job runtime emits attempt events
    _ARCHIVER,
    _FANOUT,
    # scaffold: new job runtimes above this line
)


def _lifecycle(event: type[Event], producers: tuple[Service, ...], purpose: str) -> EventSpec:
    return EventSpec(event, (streams.JOBS_LIFECYCLE,), producers, purpose)


CATALOGUE: tuple[EventSpec, ...] = (
    EventSpec(
        NoteCreated, (streams.NOTES_CREATED,), (_API, _WORKER),
        "A note was created; carries the full note.",
    ),
    EventSpec(
        NoteUpdated, (streams.NOTES_UPDATED,), (_API,),
        "A note changed; carries the new full note.",
    ),
    EventSpec(
        NoteDeleted, (streams.NOTES_DELETED,), (_API,),
        "A note was deleted; carries its last state.",
    ),
    EventSpec(
        NoteArchived, (streams.NOTES_ARCHIVED,), (_ARCHIVER,),
        "Result of an archive job: a version was frozen.",
    ),
    EventSpec(
        NoteCopyCompleted, (streams.NOTES_COPY_COMPLETED,), (_ARCHIVER,),
        "Result of a copy job: the content of the new note.",
    ),
    EventSpec(
        ArchiveRequested, job_streams(JobType.ARCHIVE), (_API, _FANOUT, _SCHEDULER),
        "Archive job: freeze a version of a note.",
    ),
    EventSpec(
        CopyRequested, job_streams(JobType.COPY), (_API, _SCHEDULER),
        "Copy job: copy a stored version into a new note.",
    ),
    EventSpec(
        BulkArchiveChunk, job_streams(JobType.BULK_ARCHIVE_CHUNK), (_API, _WORKER),
        "Up to 1,000 resolved (note, version) pairs of a bulk archive.",
    ),
    EventSpec(
        DelayedJobRequested, (streams.JOBS_DELAYED,), (_API,),
        "Publish a job request on its stream when due.",
    ),
    EventSpec(
        DelayedJobCancelled, (streams.JOBS_DELAYED,), (_API,),
        "Drop a delayed job that is not yet due.",
    ),
    _lifecycle(JobStarted, _RUNTIME, "An attempt of a job began."),
    _lifecycle(JobRetrying, _RUNTIME, "An attempt failed transiently; retry scheduled."),
    _lifecycle(JobSucceeded, _RUNTIME, "A job's handler finished."),
    _lifecycle(JobFailed, _RUNTIME, "A job failed permanently."),
    _lifecycle(JobDeadLettered, _RUNTIME, "Retries ran out; moved to the dead-letter stream."),
    _lifecycle(JobSkipped, _RUNTIME, "A job had nothing to do (e.g. note deleted)."),
    _lifecycle(JobProgress, (_WORKER,), "A parent job's child counts changed."),
    _lifecycle(JobCompleted, (_API, _WORKER), "A parent job finished, with final counts."),
    EventSpec(
        ScheduleFired, (streams.SCHEDULES_FIRED,), (_SCHEDULER,),
        "A schedule ticked (audit and observability).",
    ),
    EventSpec(
        AutoArchiveRequested, (streams.COMMANDS_AUTO_ARCHIVE,), (_SCHEDULER,),
        "Bulk-archive notes not updated for N days.",
    ),
    EventSpec(
        PurgeExpiredIdempotencyKeys, (streams.COMMANDS_PURGE_IDEMPOTENCY_KEYS,), (_SCHEDULER,),
        "Delete expired idempotency records.",
    ),
    EventSpec(
        CommandCompleted, (streams.COMMANDS_COMPLETED,), (_WORKER,),
        "A scheduled command's handling committed (the scheduler's overlap policy).",
    ),
    # scaffold: new catalogue rows above this line
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
