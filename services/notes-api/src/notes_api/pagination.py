"""Keyset pages, newest first by (created_at, id), with signed cursors (`notes_api.cursors`).

`read_page` is the one place a list is paged: up to `limit` rows after the cursor, and, when a
size is given, no more rows once the page's bytes pass a budget (the first row always comes, so
a page never stalls on one large item). A listing that reads its rows its own way (search,
`notes_api.search.newest_matches`) passes `fetch`; cursors and the budget stay the same.
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Row, Select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col

from notes_api.cursors import CursorCodec
from notes_api.models import Job, Note

Paged = TypeVar("Paged", bound=Select[Any])
Fetch = Callable[[AsyncConnection, Select[Any], int], Awaitable[Sequence[Row[Any]]]]
"""Reads up to ``count`` rows of a statement (already after the cursor), newest first."""


def within_budget(
    rows: Sequence[Row[Any]], size: Callable[[Row[Any]], int], max_bytes: int
) -> Sequence[Row[Any]]:
    """The leading ``rows`` whose sizes add up to ``max_bytes`` at most (at least one row)."""
    total = 0
    for count, row in enumerate(rows):
        total += size(row)
        if total > max_bytes and count > 0:
            return rows[:count]
    return rows


async def read_page(
    connection: AsyncConnection,
    statement: Paged,
    table: type[Note] | type[Job],
    *,
    cursor: str | None,
    limit: int,
    cursors: CursorCodec,
    size: Callable[[Row[Any]], int] | None = None,
    max_bytes: int = 0,
    fetch: Fetch | None = None,
) -> tuple[Sequence[Row[Any]], str | None]:
    """A page of ``statement`` (a select of ``table``) newest first, and the next page's cursor.

    Up to ``limit`` rows after ``cursor`` (and, with ``size``, up to ``max_bytes``); the next
    cursor is None on the last page. ``fetch`` reads the rows instead of one ordered statement.
    """
    listing = str(table.__tablename__)
    created_at, item_id = col(table.created_at), col(table.id)
    if cursor is not None:
        after = cursors.decode(listing, cursor)
        statement = statement.where(tuple_(created_at, item_id) < tuple_(*after))
    if fetch is not None:
        rows = await fetch(connection, statement, limit + 1)
    else:
        statement = statement.order_by(created_at.desc(), item_id.desc()).limit(limit + 1)
        rows = (await connection.execute(statement)).all()
    page = rows[:limit]
    if size is not None:
        page = within_budget(page, size, max_bytes)
    more = len(rows) > len(page)
    return page, cursors.encode(listing, page[-1].created_at, page[-1].id) if more else None
