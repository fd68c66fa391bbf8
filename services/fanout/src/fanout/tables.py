"""fanout's schema: its tables as SQLModel table classes (the store's statements use them).

The tables live in schema ``fanout``; a deployment with another ``DATABASE_SCHEMA`` maps it with
SQLAlchemy's ``schema_translate_map`` (see ``FanoutStore``). The migrations create the same
columns; ``tests/test_store.py`` compares these classes with a migrated database. fanout keeps no
copy of notes-api's data: a chunk's children live in its outbox only until they are published
(and purged with it); these tables are the note-event handlers' own state.
"""

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, DateTime, Integer, Text, Uuid, func
from sqlmodel import Field, SQLModel

from contracts import Service

SCHEMA = str(Service.FANOUT)
"""The schema the tables are declared in: fanout owns the schema named after it."""

_TIMESTAMP = DateTime(timezone=True)


def _inserted_at() -> Any:
    """A timestamp PostgreSQL sets when the row is inserted (None on a row not yet inserted)."""
    return Field(
        default=None,
        sa_type=_TIMESTAMP,
        nullable=False,
        sa_column_kwargs={"server_default": func.now()},
    )


class NoteChangeRow(SQLModel, table=True):
    """The audit trail: one row per note event, keyed by the event's id."""

    __tablename__ = "note_changes"
    __table_args__ = {"schema": SCHEMA}

    event_id: UUID = Field(sa_type=Uuid, primary_key=True)
    change: str = Field(sa_type=Text)
    """The event type: ``notes.created.v1``, ``notes.updated.v1`` or ``notes.deleted.v1``."""
    note_id: UUID = Field(sa_type=Uuid)
    owner_id: str = Field(sa_type=Text)
    version: int = Field(sa_type=Integer)
    occurred_at: datetime = Field(sa_type=_TIMESTAMP)
    recorded_at: datetime | None = _inserted_at()


class OwnerActivityRow(SQLModel, table=True):
    """How many note changes each owner made, and when the last one happened."""

    __tablename__ = "owner_activity"
    __table_args__ = {"schema": SCHEMA}

    owner_id: str = Field(sa_type=Text, primary_key=True)
    changes: int = Field(sa_type=BigInteger)
    last_change_at: datetime = Field(sa_type=_TIMESTAMP)
