"""Stream names: one stream per domain event type, one per job type and priority.

These are *logical* names. servicekit builds the Redis keys from them (``servicekit.StreamKeys``):
every key is prefixed with ``STREAM_PREFIX`` (empty by default) and carries a hash tag, the stream's
name or, for a job type's three priority streams, ``jobs.<type>``, so a stream, its dead letters and
its per-group companion keys share one slot and the layout is Redis Cluster safe.
"""

from contracts.status import JobType, Priority

NOTES_CREATED = "notes.created.v1"
NOTES_UPDATED = "notes.updated.v1"
NOTES_DELETED = "notes.deleted.v1"
NOTES_ARCHIVED = "notes.archived.v1"
NOTES_COPY_COMPLETED = "notes.copy_completed.v1"
JOBS_LIFECYCLE = "jobs.lifecycle.v1"
JOBS_DELAYED = "jobs.delayed.v1"
SCHEDULES_FIRED = "schedules.fired.v1"
COMMANDS_AUTO_ARCHIVE = "commands.auto_archive.v1"
COMMANDS_PURGE_IDEMPOTENCY_KEYS = "commands.purge_idempotency_keys.v1"
COMMANDS_COMPLETED = "commands.completed.v1"

EVENT_STREAMS: tuple[str, ...] = (
    NOTES_CREATED,
    NOTES_UPDATED,
    NOTES_DELETED,
    NOTES_ARCHIVED,
    NOTES_COPY_COMPLETED,
    JOBS_LIFECYCLE,
    JOBS_DELAYED,
    SCHEDULES_FIRED,
    COMMANDS_AUTO_ARCHIVE,
    COMMANDS_PURGE_IDEMPOTENCY_KEYS,
    COMMANDS_COMPLETED,
)
"""Every stream that is not a job stream."""

QUEUED_JOB_TYPES: tuple[JobType, ...] = (
    JobType.ARCHIVE,
    JobType.COPY,
    JobType.BULK_ARCHIVE_CHUNK,
    # scaffold: new queued job types above this line
)
"""Job types with streams; a bulk archive parent is never queued, only its chunks."""

_PRIORITY_ORDER = (Priority.CRITICAL, Priority.DEFAULT, Priority.LOW)


def job_stream(job_type: JobType | str, priority: Priority | str) -> str:
    """Return the stream of one job type and priority, e.g. ``jobs.archive.critical``."""
    kind, level = JobType(job_type), Priority(priority)
    if kind not in QUEUED_JOB_TYPES:
        raise ValueError(f"{kind} jobs are not queued on a stream")
    return f"jobs.{kind}.{level}"


def job_streams(job_type: JobType | str) -> tuple[str, str, str]:
    """Return a job type's three streams, ordered critical, default, low."""
    critical, default, low = (job_stream(job_type, p) for p in _PRIORITY_ORDER)
    return critical, default, low


def dead_letter_stream(stream: str) -> str:
    """Return the dead-letter stream of ``stream``: ``<stream>.dlq``."""
    return f"{stream}.dlq"


KNOWN_STREAMS: frozenset[str] = frozenset(
    EVENT_STREAMS + tuple(s for t in QUEUED_JOB_TYPES for s in job_streams(t))
)
"""Every stream the platform publishes to, dead-letter streams excepted."""
