"""The shared vocabularies: job status, priority and job type."""

from enum import StrEnum


class JobStatus(StrEnum):
    """A job's status, as the API, lifecycle events and metrics all spell it."""

    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.DEAD,
        JobStatus.CANCELLED,
        JobStatus.SKIPPED,
    }
)
"""Statuses a job never leaves (status only moves forward)."""


class Priority(StrEnum):
    """A job's priority; each priority has its own stream per job type."""

    CRITICAL = "critical"
    DEFAULT = "default"
    LOW = "low"


PRIORITY_WEIGHTS: dict[Priority, int] = {
    Priority.CRITICAL: 6,
    Priority.DEFAULT: 3,
    Priority.LOW: 1,
}
"""How many messages a worker takes from each priority's stream per round (6 : 3 : 1)."""


class JobType(StrEnum):
    """Kinds of job; a bulk archive is a parent whose chunks and children do the work."""

    ARCHIVE = "archive"
    COPY = "copy"
    BULK_ARCHIVE = "bulk_archive"
    BULK_ARCHIVE_CHUNK = "bulk_archive_chunk"
    # scaffold: new job types above this line
