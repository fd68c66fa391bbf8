"""The platform's services and the (stream, consumer group) pairs each one reads.

This is the one declaration of the topology: the runtime creates these groups and never trims a
stream past what one of them still needs, the catalogue's consumers are derived from it, and each
service's tests check that its routes are exactly its rows here.
"""

from dataclasses import dataclass
from enum import StrEnum

from contracts import streams
from contracts.status import JobType
from contracts.streams import job_streams


class Service(StrEnum):
    """A deployable process; its value is also its default ``OTEL_SERVICE_NAME``."""

    NOTES_API = "notes-api"
    NOTES_API_WORKER = "notes-api-worker"
    ARCHIVER = "archiver"
    SCHEDULER = "scheduler"
    FANOUT = "fanout"
    # scaffold: new services above this line


@dataclass(frozen=True, slots=True)
class ConsumerGroup:
    """One consumer group on one stream, created at id ``0`` with MKSTREAM at service start."""

    stream: str
    group: str
    service: Service
    handler: str
    """Name of the handler function that serves the stream in this group.

    A service's tests hold its routes to these rows (``servicekit.testing.assert_routes_declared``),
    so a route nobody declared, or a declared group nobody serves, fails the build.
    """


def _reads(
    service: Service, handler: str, *stream_names: str, group: str | None = None
) -> tuple[ConsumerGroup, ...]:
    # A service's groups are named after it unless it runs several isolated handlers on one stream
    # (each then needs a group of its own, so one handler's failures never hold back another's).
    name = group or str(service)
    return tuple(ConsumerGroup(s, name, service, handler) for s in stream_names)


_NOTE_CHANGES = (streams.NOTES_CREATED, streams.NOTES_UPDATED, streams.NOTES_DELETED)

CONSUMER_GROUPS: tuple[ConsumerGroup, ...] = (
    *_reads(Service.ARCHIVER, "store_note_version", streams.NOTES_CREATED, streams.NOTES_UPDATED),
    *_reads(Service.ARCHIVER, "record_note_deletion", streams.NOTES_DELETED),
    *_reads(Service.ARCHIVER, "archive_note", *job_streams(JobType.ARCHIVE)),
    *_reads(Service.ARCHIVER, "copy_note", *job_streams(JobType.COPY)),
    *_reads(Service.FANOUT, "expand_bulk_archive_chunk", *job_streams(JobType.BULK_ARCHIVE_CHUNK)),
    *_reads(Service.FANOUT, "record_note_change", *_NOTE_CHANGES, group="fanout.audit"),
    *_reads(Service.FANOUT, "count_owner_activity", *_NOTE_CHANGES, group="fanout.activity"),
    *_reads(Service.NOTES_API_WORKER, "mark_note_archived", streams.NOTES_ARCHIVED),
    *_reads(Service.NOTES_API_WORKER, "insert_copied_note", streams.NOTES_COPY_COMPLETED),
    *_reads(Service.NOTES_API_WORKER, "record_job_status", streams.JOBS_LIFECYCLE),
    *_reads(Service.NOTES_API_WORKER, "auto_archive_notes", streams.COMMANDS_AUTO_ARCHIVE),
    *_reads(
        Service.NOTES_API_WORKER,
        "purge_expired_idempotency_keys",
        streams.COMMANDS_PURGE_IDEMPOTENCY_KEYS,
    ),
    *_reads(Service.SCHEDULER, "hold_delayed_job", streams.JOBS_DELAYED),
    *_reads(Service.SCHEDULER, "record_command_completed", streams.COMMANDS_COMPLETED),
    # scaffold: new groups above this line
)
"""Every (stream, group) pair on the platform."""


def groups_for(service: Service | str) -> tuple[ConsumerGroup, ...]:
    """Return the consumer groups a service must create and read."""
    wanted = Service(service)
    return tuple(g for g in CONSUMER_GROUPS if g.service is wanted)
