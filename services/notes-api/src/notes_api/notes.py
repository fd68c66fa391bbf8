"""Note rows as the routes read them: the owner's note and its API view.

Another owner's note is not found, exactly like a missing one (404).
"""

from typing import Any
from uuid import UUID

from sqlalchemy import Row, bindparam
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import select

from contracts import NoteSnapshot
from notes_api.errors import Problem
from notes_api.models import Note, NotePublic

NOT_FOUND = "No note with this id."

# Built once with bound parameters, so SQLAlchemy reuses the compiled statement per request.
_OWNED_NOTE = select(Note).where(
    Note.id == bindparam("note_id"), Note.owner_id == bindparam("owner")
)
_OWNED_NOTE_LOCKED = _OWNED_NOTE.with_for_update()


def public(note: object) -> NotePublic:
    """The API view of a note: a row read with `select(Note)`, a `Note` or a `NoteSnapshot`."""
    return NotePublic.model_validate(note, from_attributes=True)


async def read_note(connection: AsyncConnection, owner: str, note_id: UUID) -> NotePublic:
    """The owner's note, read with one statement (no transaction); 404 for anyone else's."""
    row = (await connection.execute(_OWNED_NOTE, {"note_id": note_id, "owner": owner})).first()
    if row is None:
        raise Problem(404, NOT_FOUND)
    return public(row)


async def owned_note(
    connection: AsyncConnection, owner: str, note_id: UUID, *, lock: bool
) -> Row[Any]:
    """The owner's note in ``connection``'s transaction (``lock``: FOR UPDATE); 404 otherwise."""
    statement = _OWNED_NOTE_LOCKED if lock else _OWNED_NOTE
    row = (await connection.execute(statement, {"note_id": note_id, "owner": owner})).first()
    if row is None:
        raise Problem(404, NOT_FOUND)
    return row


def snapshot(note: object) -> NoteSnapshot:
    """The note as events carry it: a row read with `select(Note)` (or `returning(Note)`)."""
    return NoteSnapshot.model_validate(note, from_attributes=True)
