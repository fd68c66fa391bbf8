"""Keyset pages, newest first by (created_at, id), and their opaque cursors.

`read_page` is the one place a list is paged. The cursor carries (created_at, id) of the last item
with a checksum against tampering. It is not a security token (every query is owner-scoped
whatever it says); the checksum only turns an edited or truncated cursor into a clear 400 instead
of a silently different page.
"""

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import Row, Select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col

from notes_api.errors import Problem
from notes_api.models import Job, Note

Paged = TypeVar("Paged", bound=Select[Any])


def _digest(payload: bytes) -> str:
    return hashlib.sha256(b"notes-api-cursor:" + payload).hexdigest()[:16]


def encode_cursor(created_at: datetime, item_id: UUID) -> str:
    payload = json.dumps([created_at.isoformat(), str(item_id)], separators=(",", ":")).encode()
    document = json.dumps({"p": payload.decode(), "s": _digest(payload)}).encode()
    return base64.urlsafe_b64encode(document).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(raw)
        payload = document["p"].encode()
        if document["s"] != _digest(payload):
            raise ValueError("checksum mismatch")
        created, item_id = json.loads(payload)
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("naive time")
        return moment, UUID(item_id)
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError, AttributeError):
        raise Problem(400, "The cursor is invalid; start again without one.") from None


async def read_page(
    connection: AsyncConnection,
    statement: Paged,
    table: type[Note] | type[Job],
    *,
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[Row[Any]], str | None]:
    """A page of ``statement`` (a select of ``table``) newest first, and the next page's cursor.

    Up to ``limit`` rows after ``cursor``; the next cursor is None on the last page.
    """
    created_at, item_id = col(table.created_at), col(table.id)
    if cursor is not None:
        after = decode_cursor(cursor)
        statement = statement.where(tuple_(created_at, item_id) < tuple_(*after))
    statement = statement.order_by(created_at.desc(), item_id.desc()).limit(limit + 1)
    rows = (await connection.execute(statement)).all()
    page = rows[:limit]
    more = len(rows) > limit
    return page, encode_cursor(page[-1].created_at, page[-1].id) if more else None
