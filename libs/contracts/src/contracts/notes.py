"""Note events: the full note on every change, and the results of archive and copy jobs."""

from typing import Annotated, Literal, Self
from uuid import UUID, uuid5

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from contracts.envelope import OwnedEvent

MAX_TITLE_LENGTH = 200
MAX_TAGS = 20
MAX_TAG_LENGTH = 32

NoteTitle = Annotated[str, Field(max_length=MAX_TITLE_LENGTH)]
"""A note's title (at most 200 characters)."""
NoteTag = Annotated[str, Field(max_length=MAX_TAG_LENGTH)]
"""One tag (at most 32 characters)."""
NoteTags = Annotated[list[NoteTag], Field(max_length=MAX_TAGS)]
"""A note's tags (at most 20)."""

COPY_NOTE_NAMESPACE = UUID("4e447b92-3996-429e-a562-35553f261d90")
"""Namespace of copied notes' ids; fixed forever, or redelivered copies would duplicate."""


def copy_note_id(job_id: UUID) -> UUID:
    """Return the id of the note a copy job creates: deterministic, so a retry inserts nothing."""
    return uuid5(COPY_NOTE_NAMESPACE, str(job_id))


class NoteSnapshot(BaseModel):
    """The full state of one version of a note."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: UUID
    owner_id: str
    title: NoteTitle
    body: str
    tags: NoteTags
    version: int = Field(ge=1)
    created_at: AwareDatetime
    updated_at: AwareDatetime
    archived_at: AwareDatetime | None = None


class _NoteChange(OwnedEvent):
    """A change to a note, carrying the full note so the archiver needs no other source."""

    note_id: UUID
    version: int = Field(ge=1, description="The note's version after the change.")
    note: NoteSnapshot

    @model_validator(mode="after")
    def _snapshot_is_this_note(self) -> Self:
        if self.note.id != self.note_id or self.note.owner_id != self.owner_id:
            raise ValueError("note snapshot belongs to another note or owner")
        return self


class NoteCreated(_NoteChange):
    """A note was created."""

    type: Literal["notes.created.v1"] = "notes.created.v1"

    @model_validator(mode="after")
    def _version_matches(self) -> Self:
        if self.version != self.note.version:
            raise ValueError("version differs from the snapshot's version")
        return self


class NoteUpdated(_NoteChange):
    """A note was changed; ``note`` is its new state."""

    type: Literal["notes.updated.v1"] = "notes.updated.v1"

    @model_validator(mode="after")
    def _version_matches(self) -> Self:
        if self.version != self.note.version:
            raise ValueError("version differs from the snapshot's version")
        return self


class NoteDeleted(_NoteChange):
    """A note was deleted; ``note`` is its last state and ``version`` the deletion's version."""

    type: Literal["notes.deleted.v1"] = "notes.deleted.v1"

    @model_validator(mode="after")
    def _version_not_before_snapshot(self) -> Self:
        if self.version < self.note.version:
            raise ValueError("deletion version precedes the snapshot's version")
        return self


class NoteArchived(OwnedEvent):
    """The archiver froze a version of a note (the result of an archive job)."""

    type: Literal["notes.archived.v1"] = "notes.archived.v1"
    note_id: UUID
    version: int = Field(ge=1)
    job_id: UUID
    parent_job_id: UUID | None = None
    checksum: str | None = Field(default=None, description="Checksum of the frozen snapshot.")


class NoteCopyCompleted(OwnedEvent):
    """The archiver read a stored version for a copy job; notes-api inserts the new note."""

    type: Literal["notes.copy_completed.v1"] = "notes.copy_completed.v1"
    job_id: UUID
    source_note_id: UUID
    source_version: int = Field(ge=1)
    new_note_id: UUID = Field(description="Always `copy_note_id(job_id)`.")
    title: NoteTitle
    body: str
    tags: NoteTags

    @model_validator(mode="after")
    def _new_note_id_is_derived(self) -> Self:
        if self.new_note_id != copy_note_id(self.job_id):
            raise ValueError("new_note_id must be copy_note_id(job_id)")
        return self
