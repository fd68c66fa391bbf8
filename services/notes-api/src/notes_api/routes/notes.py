"""Notes: create, list (keyset pages, filters), read, update (If-Match), delete.

Every change writes its event (`notes.created|updated|deleted.v1`, with the full note) to the
outbox in the change's transaction. Another owner's note answers 404, exactly like a missing one.
"""

from typing import Annotated
from uuid import UUID, uuid4

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy import bindparam, or_, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

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
from notes_api.deps import IdempotentDep, OwnerDep, ReaderDep, SessionDep
from notes_api.errors import Problem
from notes_api.idempotency import Outcome
from notes_api.models import NOTES, Note, NoteCreate, NotePage, NotePublic, NoteUpdate, Tag, Text_
from notes_api.outbox import PRODUCER, emit
from notes_api.pagination import decode_cursor, encode_cursor

router = APIRouter(prefix="/v1", tags=["notes"])

NOT_FOUND = "No note with this id."
IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=200)]
_PROBLEM_CODES = (400, 401, 404, 409, 412, 413, 415, 422, 503)
PROBLEMS: dict[int | str, dict[str, object]] = {
    code: {"description": "problem+json"} for code in _PROBLEM_CODES
}


def etag(version: int) -> str:
    return f'"{version}"'


def public(note: object) -> NotePublic:
    """The API view of a note: an ORM `Note`, a row of `notes`, or a `NoteSnapshot`."""
    return NotePublic.model_validate(note, from_attributes=True)


def note_outcome(note: NotePublic, status_code: int = 200) -> Outcome:
    headers = {"ETag": etag(note.version)}
    if status_code == 201:
        headers["Location"] = f"/v1/notes/{note.id}"
    return Outcome(status_code, note.model_dump(mode="json"), headers)


def check_if_match(note: Note, if_match: str | None) -> None:
    if if_match is None:
        return
    tags = {t.strip().removeprefix("W/") for t in if_match.split(",")}
    current = etag(note.version)
    if "*" not in tags and current not in tags:
        raise Problem(412, f"The note changed; its ETag is now {current}.")


# Built once with bound parameters, so SQLAlchemy reuses the compiled statement per request.
_OWNED_NOTE = NOTES.select().where(
    NOTES.c.id == bindparam("note_id"), NOTES.c.owner_id == bindparam("owner")
)


async def read_note(connection: AsyncConnection, owner: str, note_id: UUID) -> NotePublic:
    """The owner's note, read with one statement (no transaction); 404 for anyone else's."""
    row = (await connection.execute(_OWNED_NOTE, {"note_id": note_id, "owner": owner})).first()
    if row is None:
        raise Problem(404, NOT_FOUND)
    return public(row)


async def owned_note(session: AsyncSession, owner: str, note_id: UUID, *, lock: bool) -> Note:
    statement = select(Note).where(Note.id == note_id, Note.owner_id == owner)
    note = (await session.exec(statement.with_for_update() if lock else statement)).first()
    if note is None:
        raise Problem(404, NOT_FOUND)
    return note


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@router.post("/notes", status_code=201, response_model=NotePublic, responses=PROBLEMS)
async def create_note(payload: NoteCreate, call: IdempotentDep) -> JSONResponse:
    """Create a note (201, `Location`, `ETag`); emits notes.created.v1."""

    async def create(session: AsyncSession) -> Outcome:
        now = utc_now()
        note = NoteSnapshot(
            id=uuid4(), owner_id=call.owner, title=payload.title, body=payload.body,
            tags=payload.tags, version=1, created_at=now, updated_at=now, archived_at=None,
        )  # fmt: skip
        # A Core insert, not `session.add`: the ORM flush cost more than the rest of the request.
        connection = await session.connection()
        await connection.execute(NOTES.insert(), note.model_dump())
        event = NoteCreated(
            producer=PRODUCER, owner_id=note.owner_id, note_id=note.id, version=1, note=note
        )
        await emit(session, event, stream=NOTES_CREATED, aggregate_id=note.id)
        return note_outcome(public(note), 201)

    return await call.respond(payload, create)


@router.get("/notes", response_model=NotePage, responses=PROBLEMS)
async def list_notes(
    owner: OwnerDep,
    connection: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    tag: Annotated[Tag | None, Query()] = None,
    archived: bool | None = None,
    q: Annotated[Text_ | None, Query(min_length=1, max_length=200)] = None,
) -> NotePage:
    """The owner's notes, newest first, a page at a time (`next_cursor`); `q` matches literally."""
    statement = select(Note).where(Note.owner_id == owner)
    if tag is not None:
        statement = statement.where(col(Note.tags).contains([tag]))
    if archived is not None:
        archived_at = col(Note.archived_at)
        statement = statement.where(archived_at.is_not(None) if archived else archived_at.is_(None))
    if q is not None:
        pattern = f"%{escape_like(q)}%"
        statement = statement.where(
            or_(
                col(Note.title).ilike(pattern, escape="\\"),
                col(Note.body).ilike(pattern, escape="\\"),
            )
        )
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        statement = statement.where(tuple_(Note.created_at, Note.id) < tuple_(created_at, last_id))
    statement = statement.order_by(col(Note.created_at).desc(), col(Note.id).desc()).limit(
        limit + 1
    )
    notes = list((await connection.execute(statement)).all())
    page, more = notes[:limit], len(notes) > limit
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if more else None
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
    session: SessionDep,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Change title, body or tags; `If-Match` with a stale ETag → 412. Emits notes.updated.v1."""
    changes = payload.model_dump(exclude_unset=True, exclude_none=True)
    async with session.begin():
        note = await owned_note(session, owner, note_id, lock=True)
        check_if_match(note, if_match)
        if changes:
            for name, value in changes.items():
                setattr(note, name, value)
            note.version += 1
            note.updated_at = utc_now()
            await session.flush()
            event = NoteUpdated(
                producer=PRODUCER, owner_id=owner, note_id=note.id, version=note.version,
                note=note.snapshot(),
            )  # fmt: skip
            await emit(session, event, stream=NOTES_UPDATED, aggregate_id=note.id)
        outcome = note_outcome(public(note))
    return outcome.response()


@router.delete("/notes/{note_id}", status_code=204, responses=PROBLEMS)
async def delete_note(
    note_id: UUID, owner: OwnerDep, session: SessionDep, if_match: IfMatch = None
) -> Response:
    """Delete a note (204); emits notes.deleted.v1 with its last state."""
    async with session.begin():
        note = await owned_note(session, owner, note_id, lock=True)
        check_if_match(note, if_match)
        snapshot = note.snapshot()
        await session.delete(note)
        event = NoteDeleted(
            producer=PRODUCER, owner_id=owner, note_id=note_id, version=snapshot.version + 1,
            note=snapshot,
        )  # fmt: skip
        await emit(session, event, stream=NOTES_DELETED, aggregate_id=note_id)
    return Response(status_code=204)
