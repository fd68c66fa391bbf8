"""Which notes a bulk archive takes: the filter, the notes in flight left out, pages in id order.

Shared by `POST /v1/notes:bulk-archive` and the scheduled auto-archive (through `notes_api.bulk`,
which writes what these functions select), on the caller's transaction:

- The owner's unarchived notes are read in id order, `MAX_CHUNK_ITEMS` per query (keyset pages on
  `ix_notes_owner_unarchived`), so the caller holds about one page at a time.
- A note that a chunk (not lost) of a bulk parent still in flight carries is left out: the same
  request sent again does not archive it twice. Each page is checked against those chunks' ids in
  its own id range, one pass per page; an owner with no parent in flight (the usual case) costs
  nothing more.
- `lock_owner` serialises one owner's bulk creations, so a second one sees the first's chunks.
"""

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import ColumnElement, func, true
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select

from contracts import MAX_CHUNK_ITEMS, TERMINAL_STATUSES, ChunkItem, JobStatus, JobType, utc_now
from notes_api.models import BulkChunk, Job, Note

UNFINISHED = [str(s) for s in JobStatus if s not in TERMINAL_STATUSES]
"""A job with one of these statuses is still in flight (`ix_jobs_bulk_unfinished` lists them)."""


@dataclass(frozen=True)
class BulkFilter:
    """Which unarchived notes a bulk archive takes.

    ``tag`` and/or not updated for ``not_updated_for_days`` before ``now``; neither means every
    unarchived note of the owner.
    """

    tag: str | None = None
    not_updated_for_days: int | None = None
    now: datetime = field(default_factory=utc_now)

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = [col(Note.archived_at).is_(None)]
        if self.tag is not None:
            conditions.append(col(Note.tags).contains([self.tag]))
        if self.not_updated_for_days is not None:
            cutoff = self.now - timedelta(days=self.not_updated_for_days)
            conditions.append(col(Note.updated_at) < cutoff)
        return conditions


def _owner_matches(owner: str, match: BulkFilter) -> list[ColumnElement[bool]]:
    return [col(Note.owner_id) == owner, *match.conditions()]


async def lock_owner(connection: AsyncConnection, owner: str) -> None:
    """Hold the owner's bulk-archive lock until the transaction ends (re-entrant)."""
    key = func.hashtextextended(f"notes.bulk_archive:{owner}", 0)
    await connection.execute(select(func.pg_advisory_xact_lock(key)))


async def matching_owners(connection: AsyncConnection, match: BulkFilter) -> list[str]:
    """Owners with at least one note the filter matches (for an every-owner auto-archive)."""
    statement = select(Note.owner_id).where(*match.conditions()).distinct()
    return list((await connection.execute(statement.order_by(col(Note.owner_id)))).scalars())


async def _parents_in_flight(connection: AsyncConnection, owner: str) -> list[UUID]:
    """The owner's bulk parents that have not finished (`ix_jobs_bulk_unfinished`)."""
    statement = select(col(Job.id)).where(
        col(Job.owner_id) == owner,
        col(Job.type) == str(JobType.BULK_ARCHIVE),
        col(Job.status).in_(UNFINISHED),
    )
    return list((await connection.execute(statement)).scalars())


async def _carried(
    connection: AsyncConnection, parents: list[UUID], after: UUID | None, last: UUID
) -> set[UUID]:
    """Notes in ``(after, last]`` that a chunk (not lost) of one of ``parents`` carries."""
    note_ids = col(BulkChunk.note_ids)
    note_id = func.unnest(note_ids).table_valued("note_id").render_derived()
    statement = (
        select(note_id.c.note_id)
        .select_from(BulkChunk)
        .join(note_id, true())
        .where(
            col(BulkChunk.parent_id).in_(parents),
            col(BulkChunk.lost_at).is_(None),
            note_ids[1] <= last,  # a chunk's ids are in id order: skip chunks out of range
            note_id.c.note_id <= last,
        )
    )
    if after is not None:
        statement = statement.where(
            note_ids[col(BulkChunk.item_count)] > after, note_id.c.note_id > after
        )
    return set((await connection.execute(statement)).scalars())


async def matching_pages(
    connection: AsyncConnection, owner: str, match: BulkFilter, *, after: UUID | None = None
) -> AsyncGenerator[list[ChunkItem], None]:
    """The matching notes in id order (after note ``after``), `MAX_CHUNK_ITEMS` at most a page.

    Keyset pages (no OFFSET), without the notes a bulk parent in flight carries (a page may then
    come out short, or empty).
    """
    in_flight = await _parents_in_flight(connection, owner)
    while True:
        statement = select(Note.id, Note.version).where(*_owner_matches(owner, match))
        if after is not None:
            statement = statement.where(col(Note.id) > after)
        statement = statement.order_by(col(Note.id)).limit(MAX_CHUNK_ITEMS)
        rows = (await connection.execute(statement)).all()
        if not rows:
            return
        last = rows[-1][0]
        # Per page, not per note: one pass over the in-flight chunks' ids in this page's range.
        carried = await _carried(connection, in_flight, after, last) if in_flight else set()
        yield [ChunkItem(note_id=id_, version=v) for id_, v in rows if id_ not in carried]
        after = last


async def count_matching(
    connection: AsyncConnection, owner: str, match: BulkFilter, *, up_to: int
) -> int:
    """How many of the owner's notes the filter would resolve now, up to ``up_to``.

    Counting stops there: enough to tell a cap was passed without reading the rest. With no bulk
    parent in flight it is one statement; otherwise the pages are walked.
    """
    if not await _parents_in_flight(connection, owner):
        matching = select(col(Note.id)).where(*_owner_matches(owner, match)).limit(up_to)
        return int(
            await connection.scalar(select(func.count()).select_from(matching.subquery())) or 0
        )
    found = 0
    async with aclosing(matching_pages(connection, owner, match)) as pages:
        async for page in pages:
            found += len(page)
            if found >= up_to:
                return up_to
    return found
