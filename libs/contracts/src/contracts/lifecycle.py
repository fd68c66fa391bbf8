"""Job lifecycle events, all on one stream (``jobs.lifecycle.v1``).

One stream keeps a job's events in order for the single status writer (notes-api's worker). The
job runtime emits the attempt events; notes-api's worker emits a parent's progress and completion.
Status only moves forward: the writer ignores an event whose status would move it back.
"""

from typing import Annotated, ClassVar, Literal, Self
from uuid import UUID

from pydantic import AwareDatetime, Field, TypeAdapter, model_validator

from contracts.envelope import Event
from contracts.status import TERMINAL_STATUSES, JobStatus


class JobLifecycle(Event):
    """Base of the lifecycle events: which job, and the status the event implies."""

    STATUS: ClassVar[JobStatus | None] = None

    job_id: UUID
    job_type: str = Field(description="A `JobType` value (a string, so new types are additive).")
    parent_job_id: UUID | None = None
    trace_id: str | None = None

    def implied_status(self) -> JobStatus | None:
        """Return the job status this event moves the job to, if any."""
        return self.STATUS


class JobAttemptEvent(JobLifecycle):
    """An event about one attempt of a job, emitted by the job runtime."""

    attempt: int = Field(ge=1, description="1 for the first delivery, then one more per retry.")
    stream: str = Field(description="The job stream the attempt read from.")
    group: str | None = None


class JobStarted(JobAttemptEvent):
    """An attempt began."""

    STATUS: ClassVar[JobStatus | None] = JobStatus.RUNNING
    type: Literal["jobs.lifecycle.started.v1"] = "jobs.lifecycle.started.v1"


class JobRetrying(JobAttemptEvent):
    """An attempt failed with a transient error; another is scheduled."""

    STATUS: ClassVar[JobStatus | None] = JobStatus.RETRYING
    type: Literal["jobs.lifecycle.retrying.v1"] = "jobs.lifecycle.retrying.v1"
    error_class: str
    error_message: str
    next_attempt_at: AwareDatetime


class JobSucceeded(JobAttemptEvent):
    """The handler finished; for jobs with a result event, the result sets ``succeeded``."""

    STATUS: ClassVar[JobStatus | None] = JobStatus.SUCCEEDED
    type: Literal["jobs.lifecycle.succeeded.v1"] = "jobs.lifecycle.succeeded.v1"


class JobFailed(JobAttemptEvent):
    """The job failed permanently (a non-retryable error, or the handler reported failure)."""

    STATUS: ClassVar[JobStatus | None] = JobStatus.FAILED
    type: Literal["jobs.lifecycle.failed.v1"] = "jobs.lifecycle.failed.v1"
    error_class: str
    error_message: str


class JobDeadLettered(JobAttemptEvent):
    """Retries ran out; the message was moved to the dead-letter stream."""

    STATUS: ClassVar[JobStatus | None] = JobStatus.DEAD
    type: Literal["jobs.lifecycle.dead_lettered.v1"] = "jobs.lifecycle.dead_lettered.v1"
    attempts: int = Field(ge=1)
    error_class: str
    error_message: str
    dead_letter_stream: str
    dead_letter_id: str = Field(description="The entry id in the dead-letter stream.")


class JobSkipped(JobAttemptEvent):
    """The job had nothing to do (e.g. its note was deleted); counts as skipped, not failed."""

    STATUS: ClassVar[JobStatus | None] = JobStatus.SKIPPED
    type: Literal["jobs.lifecycle.skipped.v1"] = "jobs.lifecycle.skipped.v1"
    reason: str


class _JobCounts(JobLifecycle):
    """A parent job's child counts."""

    total: int = Field(ge=0)
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    skipped: int = Field(ge=0)

    @model_validator(mode="after")
    def _counts_fit_total(self) -> Self:
        if self.succeeded + self.failed + self.skipped > self.total:
            raise ValueError("more children counted than the total")
        return self


class JobProgress(_JobCounts):
    """A parent job's progress after a child result was applied."""

    STATUS: ClassVar[JobStatus | None] = JobStatus.RUNNING
    type: Literal["jobs.lifecycle.progress.v1"] = "jobs.lifecycle.progress.v1"


class JobCompleted(_JobCounts):
    """A parent job finished: every child has a terminal status."""

    type: Literal["jobs.lifecycle.completed.v1"] = "jobs.lifecycle.completed.v1"
    status: JobStatus = Field(description="The parent's final status (a terminal one).")

    @model_validator(mode="after")
    def _status_is_terminal(self) -> Self:
        if self.status not in TERMINAL_STATUSES:
            raise ValueError(f"{self.status} is not a terminal status")
        return self

    def implied_status(self) -> JobStatus | None:
        """Return the parent's final status."""
        return self.status


JobLifecycleEvent = Annotated[
    JobStarted
    | JobRetrying
    | JobSucceeded
    | JobFailed
    | JobDeadLettered
    | JobSkipped
    | JobProgress
    | JobCompleted,
    Field(discriminator="type"),
]
"""Any event on ``jobs.lifecycle.v1``, told apart by ``type``."""

JOB_LIFECYCLE_ADAPTER: TypeAdapter[JobLifecycleEvent] = TypeAdapter(JobLifecycleEvent)
"""Parses any lifecycle event: ``JOB_LIFECYCLE_ADAPTER.validate_json(raw)``."""
