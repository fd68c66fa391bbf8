"""Tables of schema `notes` (SQLModel table classes) and the API's request/response models.

Tables: `notes`, `api_keys`, `idempotency_keys`, `jobs`, `bulk_chunks` (the outbox and inbox
tables belong to servicekit and are created by the first migration). The table classes are the
schema, and the one way notes-api reaches PostgreSQL: statements are built against them
(`select(Note)`, `insert(Job)`, `update(Note)`, ...) and run on an `AsyncConnection`, a write
transaction's or the request's autocommit reader; rows are validated into the API shapes. No ORM
unit of work and no `__table__`. They match the migrations. The non-table models are the API's
shapes.
"""

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import Column, DateTime, Integer, Text, Uuid
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from contracts import MAX_TAG_LENGTH, MAX_TAGS, MAX_TITLE_LENGTH, JobStatus, Priority
from notes_api.settings import SCHEMA

# ---- tables --------------------------------------------------------------------------------------


def _timestamp(nullable: bool = False) -> Any:
    return SQLField(sa_column=Column(DateTime(timezone=True), nullable=nullable))


class Note(SQLModel, table=True):
    __tablename__ = "notes"
    __table_args__ = {"schema": SCHEMA}

    id: UUID = SQLField(primary_key=True)
    owner_id: str = SQLField(sa_column=Column(Text, nullable=False))
    title: str = SQLField(sa_column=Column(Text, nullable=False))
    body: str = SQLField(sa_column=Column(Text, nullable=False))
    tags: list[str] = SQLField(sa_column=Column(ARRAY(Text), nullable=False))
    version: int = SQLField(sa_column=Column(Integer, nullable=False))
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()
    archived_at: datetime | None = _timestamp(nullable=True)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"
    __table_args__ = {"schema": SCHEMA}

    id: UUID = SQLField(primary_key=True)
    owner_id: str = SQLField(sa_column=Column(Text, nullable=False))
    key_hash: str = SQLField(sa_column=Column(Text, nullable=False, unique=True))
    created_at: datetime = _timestamp()
    revoked_at: datetime | None = _timestamp(nullable=True)


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    __table_args__ = {"schema": SCHEMA}

    owner_id: str = SQLField(sa_column=Column(Text, primary_key=True))
    route: str = SQLField(sa_column=Column(Text, primary_key=True))
    key: str = SQLField(sa_column=Column(Text, primary_key=True))
    fingerprint: str = SQLField(sa_column=Column(Text, nullable=False))
    status_code: int | None = SQLField(sa_column=Column(Integer, nullable=True))
    response_body: Any = SQLField(sa_column=Column(JSONB, nullable=True))
    response_headers: dict[str, str] | None = SQLField(sa_column=Column(JSONB, nullable=True))
    created_at: datetime = _timestamp()
    locked_at: datetime | None = _timestamp(nullable=True)
    claim_token: UUID | None = None
    """Written by each claim (first or takeover); the final UPDATE requires it."""
    expires_at: datetime = _timestamp()


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = {"schema": SCHEMA}

    id: UUID = SQLField(primary_key=True)
    owner_id: str = SQLField(sa_column=Column(Text, nullable=False))
    type: str = SQLField(sa_column=Column(Text, nullable=False))
    status: str = SQLField(sa_column=Column(Text, nullable=False))
    note_id: UUID | None = None
    parent_id: UUID | None = None
    run_at: datetime | None = _timestamp(nullable=True)
    attempt: int = SQLField(default=0, sa_column=Column(Integer, nullable=False))
    attempts: list[dict[str, Any]] = SQLField(sa_column=Column(JSONB, nullable=False))
    result: dict[str, Any] | None = SQLField(sa_column=Column(JSONB, nullable=True))
    error: str | None = SQLField(sa_column=Column(Text, nullable=True))
    progress: dict[str, int] | None = SQLField(sa_column=Column(JSONB, nullable=True))
    trace_id: str | None = SQLField(sa_column=Column(Text, nullable=True))
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()
    priority: str = SQLField(
        default=str(Priority.DEFAULT),
        sa_column=Column(Text, nullable=False, server_default=str(Priority.DEFAULT)),
    )
    """The priority stream the job went to; a bulk parent's is its chunks' and children's."""


class BulkChunk(SQLModel, table=True):
    """One chunk of a bulk archive parent: its notes, and when it was lost (dead or failed)."""

    __tablename__ = "bulk_chunks"
    __table_args__ = {"schema": SCHEMA}

    id: UUID = SQLField(primary_key=True)
    """The chunk's job id (`uuid5(parent, "chunk:<n>")`)."""
    parent_id: UUID
    chunk_no: int = SQLField(sa_column=Column(Integer, nullable=False))
    item_count: int = SQLField(sa_column=Column(Integer, nullable=False))
    note_ids: list[UUID] = SQLField(sa_column=Column(ARRAY(Uuid), nullable=False))
    lost_at: datetime | None = _timestamp(nullable=True)


# ---- API models ----------------------------------------------------------------------------------


def _storable(value: str) -> str:
    """Reject what PostgreSQL text cannot hold: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


# The pattern tells clients (and the OpenAPI document) that NUL is refused; the validator also
# refuses lone surrogates, which JSON Schema cannot express.
Text_ = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$"), AfterValidator(_storable)]
Title = Annotated[Text_, StringConstraints(min_length=1, max_length=MAX_TITLE_LENGTH)]
Tag = Annotated[Text_, StringConstraints(min_length=1, max_length=MAX_TAG_LENGTH)]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoteCreate(_Strict):
    title: Title
    body: Text_ = ""
    tags: Tags = Field(default_factory=list)


class NoteUpdate(_Strict):
    """A partial update; absent fields keep their value (null is not a value)."""

    title: Title | None = None
    body: Text_ | None = None
    tags: Tags | None = None


class NotePublic(BaseModel):
    id: UUID
    title: str
    body: str
    tags: list[str]
    version: int
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None


class NotePage(BaseModel):
    items: list[NotePublic]
    next_cursor: str | None


_JOB_PRIORITY = "The job's stream: workers read critical, default and low 6 : 3 : 1."


class ArchiveJobCreate(_Strict):
    run_at: AwareDatetime | None = Field(
        default=None,
        description="Run later (a delayed job, reported `scheduled`); past times mean now; "
        "at most 30 days ahead (DELAY_HORIZON_DAYS).",
    )
    priority: Priority = Field(default=Priority.DEFAULT, description=_JOB_PRIORITY)


class CopyJobCreate(_Strict):
    title: Title | None = None
    priority: Priority = Field(default=Priority.DEFAULT, description=_JOB_PRIORITY)


class BulkArchiveCreate(_Strict):
    """Which notes to archive: a filter (`tag`, `not_updated_for_days`, both ANDed) or `all`."""

    tag: Tag | None = None
    not_updated_for_days: int | None = Field(default=None, ge=0, le=36500)
    all: bool = Field(
        default=False,
        description="Every unarchived note of the owner; required when no filter is given, "
        "refused with one.",
    )
    priority: Priority = Field(
        default=Priority.LOW,
        description="The priority of its chunks and child archive jobs (and the parent's "
        "`priority`); low unless given.",
    )

    def has_filter(self) -> bool:
        return self.tag is not None or self.not_updated_for_days is not None


class JobAccepted(BaseModel):
    job_id: UUID
    status: JobStatus


class Progress(BaseModel):
    total: int
    succeeded: int
    failed: int
    skipped: int


class Attempt(BaseModel):
    attempt: int
    status: JobStatus
    at: datetime
    error: str | None = None


class JobPublic(BaseModel):
    id: UUID
    type: str
    status: JobStatus
    note_id: UUID | None
    run_at: datetime | None
    attempts: list[Attempt]
    created_at: datetime
    updated_at: datetime
    result: dict[str, Any] | None
    error: str | None
    progress: Progress | None
    trace_id: str | None
    priority: Priority


class TimelineEntry(BaseModel):
    """One step of a job's life: its creation, an attempt's transition, or its last status."""

    at: datetime
    status: JobStatus
    attempt: int | None = None
    error: str | None = None
    source: Literal["created", "attempt", "last_update"]
    """`created` and `last_update` come from the row's times; `attempt` from its attempt log."""


class ChildJob(BaseModel):
    id: UUID
    status: JobStatus
    note_id: UUID | None
    error: str | None
    updated_at: datetime


class Children(BaseModel):
    """A bulk parent's children as their rows stand (its `progress` is counted from them)."""

    total: int
    by_status: dict[str, int]
    chunks: int
    lost_chunks: int
    not_succeeded: list[ChildJob]
    """Up to 20 children not succeeded or skipped, most recently updated first."""


class OperatorJob(JobPublic):
    """A job as an operator sees it: any owner's, with its timeline and its children."""

    owner_id: str
    parent_id: UUID | None
    timeline: list[TimelineEntry]
    children: Children | None


class JobPage(BaseModel):
    items: list[JobPublic]
    next_cursor: str | None
