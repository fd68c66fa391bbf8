"""The archiver's schema: its tables as SQLModel table classes (the store's statements use them).

The tables live in schema ``archiver``; a deployment with another ``DATABASE_SCHEMA`` maps it with
SQLAlchemy's ``schema_translate_map`` (see ``ArchiveStore``). The migrations create the same
columns; ``tests/test_store.py`` compares these classes with a migrated database.
"""

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Boolean, DateTime, Integer, Text, Uuid, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel

from contracts import Service

SCHEMA = str(Service.ARCHIVER)
"""The schema the tables are declared in: the archiver owns the schema named after it."""

_TIMESTAMP = DateTime(timezone=True)


def _inserted_at() -> Any:
    """A timestamp PostgreSQL sets when the row is inserted (None on a row not yet inserted)."""
    return Field(
        default=None,
        sa_type=_TIMESTAMP,
        nullable=False,
        sa_column_kwargs={"server_default": func.now()},
    )


class _NoteColumns(SQLModel):
    """The note as a note event carries it; keyed by (note_id, version) in both tables."""

    note_id: UUID = Field(sa_type=Uuid, primary_key=True)
    version: int = Field(sa_type=Integer, primary_key=True)
    owner_id: str = Field(sa_type=Text)
    title: str = Field(sa_type=Text)
    body: str = Field(sa_type=Text)
    tags: list[str] = Field(sa_type=ARRAY(Text))
    created_at: datetime = Field(sa_type=_TIMESTAMP)
    updated_at: datetime = Field(sa_type=_TIMESTAMP)


class NoteVersionRow(_NoteColumns, table=True):
    """Every version of every note, as the note events carried it; ``deleted`` marks a deletion."""

    __tablename__ = "note_versions"
    __table_args__ = {"schema": SCHEMA}

    deleted: bool = Field(sa_type=Boolean)
    received_at: datetime | None = _inserted_at()


class SnapshotRow(_NoteColumns, table=True):
    """Archived versions, frozen once; ``job_id`` is the job that froze it first."""

    __tablename__ = "snapshots"
    __table_args__ = {"schema": SCHEMA}

    checksum: str = Field(sa_type=Text)
    job_id: UUID = Field(sa_type=Uuid)
    archived_at: datetime | None = _inserted_at()
