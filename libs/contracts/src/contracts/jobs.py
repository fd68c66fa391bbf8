"""Job requests: what the job streams carry, and the delayed-job requests the scheduler holds."""

from typing import Annotated, Any, ClassVar, Literal, Self
from uuid import UUID, uuid5

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from contracts.envelope import Event, OwnedEvent
from contracts.notes import NoteTitle
from contracts.status import JobType, Priority
from contracts.streams import job_stream, job_streams

MAX_CHUNK_ITEMS = 1000


def bulk_child_job_id(parent_job_id: UUID, note_id: UUID) -> UUID:
    """Return a bulk archive child's job id, ``uuid5(parent, note_id)``: re-expansion is safe."""
    return uuid5(parent_job_id, str(note_id))


class JobRequest(OwnedEvent):
    """Base of the requests published on job streams (``jobs.<type>.<priority>``)."""

    JOB_TYPE: ClassVar[JobType]

    job_id: UUID
    parent_job_id: UUID | None = None


class ArchiveRequested(JobRequest):
    """Freeze a given version of a note."""

    JOB_TYPE: ClassVar[JobType] = JobType.ARCHIVE

    type: Literal["jobs.archive.requested.v1"] = "jobs.archive.requested.v1"
    note_id: UUID
    version: int = Field(ge=1)


class CopyRequested(JobRequest):
    """Copy a stored version of a note into a new note (``new_title`` or the source's title)."""

    JOB_TYPE: ClassVar[JobType] = JobType.COPY

    type: Literal["jobs.copy.requested.v1"] = "jobs.copy.requested.v1"
    note_id: UUID
    version: int = Field(ge=1)
    new_title: NoteTitle | None = None


class ChunkItem(BaseModel):
    """One note version to archive within a bulk chunk."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    note_id: UUID
    version: int = Field(ge=1)


class BulkArchiveChunk(JobRequest):
    """A slice of a bulk archive, resolved by notes-api; fanout expands it into archive jobs."""

    JOB_TYPE: ClassVar[JobType] = JobType.BULK_ARCHIVE_CHUNK

    type: Literal["jobs.bulk_archive_chunk.requested.v1"] = "jobs.bulk_archive_chunk.requested.v1"
    parent_job_id: UUID = Field(description="The bulk archive job; `job_id` is the chunk's own.")
    chunk_no: int = Field(ge=0)
    items: Annotated[list[ChunkItem], Field(min_length=1, max_length=MAX_CHUNK_ITEMS)]
    child_priority: Priority = Field(
        default=Priority.LOW,
        description="The priority the chunk's archive jobs are submitted at "
        "(`jobs.archive.<priority>`): low unless the bulk request asked for another.",
    )

    def child_job_id(self, item: ChunkItem) -> UUID:
        """Return the deterministic id of the archive job for one item."""
        return bulk_child_job_id(self.parent_job_id, item.note_id)


class DelayedJobRequested(Event):
    """Hold a job request until ``run_at``, then publish ``payload`` on ``stream``."""

    type: Literal["jobs.delayed.requested.v1"] = "jobs.delayed.requested.v1"
    job_id: UUID
    job_type: JobType
    run_at: AwareDatetime
    stream: str = Field(description="The job stream `payload` is published on when due.")
    payload: dict[str, Any] = Field(description="The job request, as JSON.")

    @model_validator(mode="after")
    def _stream_serves_job_type(self) -> Self:
        if self.stream not in job_streams(self.job_type):
            raise ValueError(f"{self.stream} is not a stream of {self.job_type} jobs")
        return self

    @classmethod
    def for_request(
        cls, request: JobRequest, *, run_at: AwareDatetime, priority: Priority, producer: str
    ) -> Self:
        """Wrap a job request to be published on its priority's stream at ``run_at``."""
        return cls.caused_by(
            request,
            producer=producer,
            job_id=request.job_id,
            job_type=request.JOB_TYPE,
            run_at=run_at,
            stream=job_stream(request.JOB_TYPE, priority),
            payload=request.model_dump(mode="json"),
        )


class DelayedJobCancelled(Event):
    """Drop a held delayed job; a no-op if it was already published."""

    type: Literal["jobs.delayed.cancelled.v1"] = "jobs.delayed.cancelled.v1"
    job_id: UUID
