"""Notes: create, list (keyset pages, filters), read, update (If-Match), delete.

Every change writes its event (`notes.created|updated|deleted.v1`, with the full note) to the
outbox in the change's transaction. Another owner's note answers 404, exactly like a missing one.
"""

from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Row, delete, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select

from contracts import (
    NOTES_CREATED,
    NOTES_DELETED,
    NOTES_UPDATED,
    NoteCreated,
    NoteDeleted,
    NoteSnapshot,
    NoteUpdated,
    utc_now,
)
from notes_api.cursors import CursorsDep
from notes_api.deps import EngineDep, IdempotentDep, OwnerDep, ReaderDep, SettingsDep
from notes_api.errors import PROBLEMS, Problem
from notes_api.idempotency import Outcome
from notes_api.models import Note, NoteCreate, NotePage, NotePublic, NoteUpdate, Tag, Text_
from notes_api.notes import owned_note, public, read_note, snapshot
from notes_api.outbox import PRODUCER, emit
from notes_api.pagination import read_page
from notes_api.search import SEARCH_RULE, newest_matches, require_indexable

router = APIRouter(prefix="/v1", tags=["notes"])

IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=200)]
_INSERT_NOTE = insert(Note)


def etag(version: int) -> str:
    return f'"{version}"'


def note_outcome(note: NotePublic, status_code: int = 200) -> Outcome:
    headers = {"ETag": etag(note.version)}
    if status_code == 201:
        headers["Location"] = f"/v1/notes/{note.id}"
    return Outcome(status_code, note.model_dump(mode="json"), headers)


def check_if_match(version: int, if_match: str | None) -> None:
    """412 unless ``if_match`` is `*` or lists the current ETag.

    The strong comparison (RFC 9110 section 13.1.1): a weak tag (`W/"2"`) never matches.
    """
    if if_match is None:
        return
    tags = {t.strip() for t in if_match.split(",")}
    current = etag(version)
    if "*" not in tags and current not in tags:
        raise Problem(412, f"The note changed; its ETag is now {current}.")


_NOTE_JSON_OVERHEAD = 300
"""Bytes of a listed note's JSON besides its text: keys, id, version, three timestamps."""


def note_bytes(row: Row[Any]) -> int:
    """About how many bytes a listed note adds to the page (UTF-8, escapes aside)."""
    text = len(row.title.encode()) + len(row.body.encode())
    return text + sum(len(tag.encode()) + 3 for tag in row.tags) + _NOTE_JSON_OVERHEAD


@router.post("/notes", status_code=201, response_model=NotePublic, responses=PROBLEMS)
async def create_note(payload: NoteCreate, call: IdempotentDep) -> JSONResponse:
    """Create a note (201, `Location`, `ETag`); emits notes.created.v1."""

    async def create(connection: AsyncConnection) -> Outcome:
        now = utc_now()
        note = NoteSnapshot(
            id=uuid4(), owner_id=call.owner, title=payload.title, body=payload.body,
            tags=payload.tags, version=1, created_at=now, updated_at=now, archived_at=None,
        )  # fmt: skip
        # Values as parameters, not `.values(...)`: the statement's compiled form is then cached.
        await connection.execute(_INSERT_NOTE, note.model_dump())
        event = NoteCreated(
            producer=PRODUCER, owner_id=note.owner_id, note_id=note.id, version=1, note=note
        )
        await emit(connection, event, stream=NOTES_CREATED, aggregate_id=note.id)
        return note_outcome(public(note), 201)

    return await call.respond(payload, create)


@router.get("/notes", response_model=NotePage, responses=PROBLEMS)
async def list_notes(
    owner: OwnerDep,
    connection: ReaderDep,
    settings: SettingsDep,
    cursors: CursorsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    tag: Annotated[Tag | None, Query()] = None,
    archived: bool | None = None,
    q: Annotated[Text_ | None, Query(min_length=1, max_length=200, description=SEARCH_RULE)] = None,
) -> NotePage:
    """The owner's notes, newest first, a page at a time (`next_cursor`); `q` matches literally.

    A page holds up to `limit` notes and stops early past `LIST_PAGE_MAX_BYTES`.
    """
    statement = select(Note).where(Note.owner_id == owner)
    if tag is not None:
        statement = statement.where(col(Note.tags).contains([tag]))
    if archived is not None:
        archived_at = col(Note.archived_at)
        statement = statement.where(archived_at.is_not(None) if archived else archived_at.is_(None))
    if q is not None:
        require_indexable(q)
    page, next_cursor = await read_page(
        connection, statement, Note, cursor=cursor, limit=limit, cursors=cursors,
        size=note_bytes, max_bytes=settings.list_page_max_bytes,
        fetch=None if q is None else newest_matches(q),
    )  # fmt: skip
    return NotePage(items=[public(n) for n in page], next_cursor=next_cursor)


@router.get("/notes/{note_id}", response_model=NotePublic, responses=PROBLEMS)
async def get_note(note_id: UUID, owner: OwnerDep, connection: ReaderDep) -> JSONResponse:
    """One note, with its `ETag`."""
    return note_outcome(await read_note(connection, owner, note_id)).response()


@router.patch("/notes/{note_id}", response_model=NotePublic, responses=PROBLEMS)
async def update_note(
    note_id: UUID,
    payload: NoteUpdate,
    owner: OwnerDep,
    engine: EngineDep,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Change title, body or tags; `If-Match` with a stale ETag → 412. Emits notes.updated.v1."""
    changes = payload.model_dump(exclude_unset=True, exclude_none=True)
    async with engine.begin() as connection:
        note = await owned_note(connection, owner, note_id, lock=True)
        check_if_match(note.version, if_match)
        if changes:
            changed = await connection.execute(
                update(Note)
                .where(col(Note.id) == note_id)
                .values(**changes, version=note.version + 1, updated_at=utc_now())
                .returning(Note)
            )
            note = changed.one()
            event = NoteUpdated(
                producer=PRODUCER, owner_id=owner, note_id=note_id, version=note.version,
                note=snapshot(note),
            )  # fmt: skip
            await emit(connection, event, stream=NOTES_UPDATED, aggregate_id=note_id)
    return note_outcome(public(note)).response()


@router.delete("/notes/{note_id}", status_code=204, responses=PROBLEMS)
async def delete_note(
    note_id: UUID, owner: OwnerDep, engine: EngineDep, if_match: IfMatch = None
) -> Response:
    """Delete a note (204); emits notes.deleted.v1 with its last state."""
    async with engine.begin() as connection:
        row = await owned_note(connection, owner, note_id, lock=True)
        check_if_match(row.version, if_match)
        note = snapshot(row)
        await connection.execute(delete(Note).where(col(Note.id) == note_id))
        event = NoteDeleted(
            producer=PRODUCER, owner_id=owner, note_id=note_id, version=note.version + 1,
            note=note,
        )  # fmt: skip
        await emit(connection, event, stream=NOTES_DELETED, aggregate_id=note_id)
    return Response(status_code=204)
