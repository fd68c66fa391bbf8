"""The archiver's one adapter: note versions and frozen snapshots in its PostgreSQL schema.

The tables are the SQLModel classes in ``archiver.tables``; the statements here are written
against them and run on the handler transaction's connection (Core, no ORM session).
Every write happens in a :class:`ArchiveTransaction`, which is servicekit's handler transaction:
the effect, the inbox row of the event being handled and the events it emits commit together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from uuid import UUID

from sqlalchemy import func, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from archiver.tables import SCHEMA, NoteVersionRow, SnapshotRow
from contracts import ArchiveRequested, Event, Service
from contracts.notes import NoteCreated, NoteDeleted, NoteUpdated
from servicekit import (
    BatchTransaction,
    HandlerTransaction,
    add_each_to_outbox,
    handler_transaction,
    handler_transaction_batch,
)

GROUP = str(Service.ARCHIVER)
"""The consumer group whose inbox the store's transactions record (the handlers' router's)."""

NoteChange = NoteCreated | NoteUpdated | NoteDeleted
E = TypeVar("E", bound=Event)


def content_checksum(title: str, body: str, tags: list[str]) -> str:
    """Return ``sha256:<hex>`` of the content, as canonical JSON (stable across languages)."""
    content = json.dumps(
        {"title": title, "body": body, "tags": tags},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return "sha256:" + hashlib.sha256(content.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class NoteVersion:
    note_id: UUID
    version: int
    owner_id: str
    title: str
    body: str
    tags: list[str]
    created_at: datetime
    updated_at: datetime

    @property
    def checksum(self) -> str:
        return content_checksum(self.title, self.body, self.tags)


@dataclass(frozen=True, slots=True)
class StoredNote:
    """What the archiver knows of a note: its owner, whether it was deleted, one version."""

    owner_id: str
    deleted: bool
    version: NoteVersion | None
    """The version asked for, or None if it has not arrived yet."""


_FREEZE = insert(SnapshotRow).on_conflict_do_nothing(
    index_elements=[col(SnapshotRow.note_id), col(SnapshotRow.version)]
)


class ArchiveTransaction:
    """One handler's unit of work on the archiver's schema."""

    def __init__(self, tx: HandlerTransaction) -> None:
        self._tx = tx
        self.already_processed = tx.already_processed

    async def save_version(self, change: NoteChange) -> None:
        """Keep the note as the event carried it; a deletion marks its version deleted."""
        note = change.note
        deleted = isinstance(change, NoteDeleted)
        statement = insert(NoteVersionRow).values(
            note_id=change.note_id,
            version=change.version,
            owner_id=change.owner_id,
            title=note.title,
            body=note.body,
            tags=list(note.tags),
            created_at=note.created_at,
            updated_at=note.updated_at,
            deleted=deleted,
        )
        key = [col(NoteVersionRow.note_id), col(NoteVersionRow.version)]
        # Created/updated and deleted may arrive in any order for the same version: the
        # deletion wins either way.
        if deleted:
            statement = statement.on_conflict_do_update(
                index_elements=key, set_={col(NoteVersionRow.deleted): True}
            )
        else:
            statement = statement.on_conflict_do_nothing(index_elements=key)
        await self._tx.connection.execute(statement)

    async def find_note(self, note_id: UUID, version: int) -> StoredNote | None:
        """Return what is stored about ``note_id`` and its ``version``; None if nothing arrived."""
        return (await self.find_notes([(note_id, version)])).get((note_id, version))

    async def find_notes(
        self, wanted: Sequence[tuple[UUID, int]]
    ) -> dict[tuple[UUID, int], StoredNote]:
        """:meth:`find_note` for each ``(note_id, version)``, in two statements however many.

        A note of which nothing arrived is left out.
        """
        note_ids = sorted({note_id for note_id, _ in wanted})
        if not note_ids:
            return {}
        summaries = {
            row.note_id: row
            for row in await self._tx.connection.execute(
                select(
                    NoteVersionRow.note_id,
                    NoteVersionRow.owner_id,
                    func.bool_or(NoteVersionRow.deleted).label("deleted"),
                )
                .where(col(NoteVersionRow.note_id).in_(note_ids))
                .group_by(col(NoteVersionRow.note_id), col(NoteVersionRow.owner_id))
            )
        }
        versions = {
            (row.note_id, row.version): NoteVersion(
                note_id=row.note_id,
                version=row.version,
                owner_id=row.owner_id,
                title=row.title,
                body=row.body,
                tags=list(row.tags),
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
            for row in await self._tx.connection.execute(
                select(NoteVersionRow).where(
                    tuple_(col(NoteVersionRow.note_id), col(NoteVersionRow.version)).in_(
                        sorted(set(wanted))
                    )
                )
            )
        }
        return {
            key: StoredNote(
                owner_id=summaries[key[0]].owner_id,
                deleted=bool(summaries[key[0]].deleted),
                version=versions.get(key),
            )
            for key in wanted
            if key[0] in summaries
        }

    async def freeze_snapshot(self, version: NoteVersion, *, job_id: UUID) -> None:
        """Store ``version`` as archived; a no-op if that version was frozen before."""
        await self.freeze_snapshots([(version, job_id)])

    async def freeze_snapshots(self, frozen: Sequence[tuple[NoteVersion, UUID]]) -> None:
        """:meth:`freeze_snapshot` for each ``(version, job_id)``, in one statement."""
        if not frozen:
            return
        rows = [
            {
                "note_id": version.note_id,
                "version": version.version,
                "owner_id": version.owner_id,
                "title": version.title,
                "body": version.body,
                "tags": version.tags,
                "created_at": version.created_at,
                "updated_at": version.updated_at,
                "checksum": version.checksum,
                "job_id": job_id,
            }
            for version, job_id in frozen
        ]
        # Parameters, not `.values(rows)`: one cached statement, its rows sent as one batch.
        await self._tx.connection.execute(_FREEZE, rows)

    async def emit(self, event: Event, *, stream: str, aggregate_id: str) -> None:
        """Add ``event`` to the outbox; the relay publishes it after commit."""
        await self._tx.emit(event, stream=stream, aggregate_id=aggregate_id)


class ArchiveBatch(ArchiveTransaction):
    """A batch's unit of work: :class:`ArchiveTransaction`'s statements, for ``new_events``.

    ``new_events`` are the batch's events the archiver has not applied before; all of them are
    handled in one transaction.
    """

    def __init__(self, tx: BatchTransaction[ArchiveRequested]) -> None:
        super().__init__(HandlerTransaction(tx.connection, tx.schema, already_processed=False))
        self._batch = tx
        self.new_events = tx.new_events

    async def emit(self, event: Event, *, stream: str, aggregate_id: str) -> None:
        """Add ``event`` to the outbox; the relay publishes it after commit."""
        await self._batch.emit(event, stream=stream, aggregate_id=aggregate_id)

    async def emit_all(
        self, events: Sequence[E], *, stream: str, aggregate_id: Callable[[E], str]
    ) -> None:
        """:meth:`emit` for each of ``events`` (each of the aggregate ``aggregate_id`` names).

        One statement: its rows sent as one batch.
        """
        entries = [(event, aggregate_id(event)) for event in events]
        await add_each_to_outbox(self._batch.connection, self._batch.schema, entries, stream=stream)

    async def release(self, request: ArchiveRequested) -> None:
        """Leave ``request`` unapplied: its retry finds it new."""
        await self._batch.release(request)


class ArchiveStore:
    """Opens handler transactions on the archiver's schema."""

    def __init__(self, engine: AsyncEngine, *, schema: str = SCHEMA) -> None:
        self._schema = schema
        self._engine = engine.execution_options(schema_translate_map={SCHEMA: schema})

    @asynccontextmanager
    async def transaction(self, event: Event) -> AsyncIterator[ArchiveTransaction]:
        """Handle ``event`` once for the archiver's group: commit on exit, roll back on error."""
        async with handler_transaction(
            self._engine, schema=self._schema, group=GROUP, event=event
        ) as tx:
            yield ArchiveTransaction(tx)

    @asynccontextmanager
    async def transactions(
        self, requests: Sequence[ArchiveRequested]
    ) -> AsyncIterator[ArchiveBatch]:
        """Handle a batch of requests once for the archiver's group, in one transaction."""
        async with handler_transaction_batch(
            self._engine, schema=self._schema, group=GROUP, events=requests
        ) as tx:
            yield ArchiveBatch(tx)
