"""fanout's one adapter: its outbox (a chunk's children), the audit trail and owner activity.

The tables are the SQLModel classes in ``fanout.tables``; the statements here are written against
them and run on the handler transaction's connection (Core, no ORM session). Every write happens
in a :class:`FanoutTransaction`, which is servicekit's handler transaction for one consumer group:
the effect, the inbox row of the event being handled and the events it emits commit together.
fanout's handlers read in several groups (one per isolated handler), so the group is named by the
handler that opens the transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from contracts import ArchiveRequested, Event
from contracts.notes import NoteCreated, NoteDeleted, NoteUpdated
from fanout.tables import SCHEMA, NoteChangeRow, OwnerActivityRow
from servicekit import HandlerTransaction, handler_transaction

NoteChange = NoteCreated | NoteUpdated | NoteDeleted


class FanoutTransaction:
    """One handler's unit of work on fanout's schema."""

    def __init__(self, tx: HandlerTransaction) -> None:
        self._tx = tx
        self.already_processed = tx.already_processed

    async def submit_jobs(self, requests: Sequence[ArchiveRequested], *, stream: str) -> int:
        """Put child job requests in the outbox (one statement); return how many were new.

        Each child starts its own trace, linked to the current span (the chunk's), so a fan-out
        of 10,000 children is not one trace of 10,000 spans. A request whose event id is already
        in the outbox is left out.
        """
        return await self._tx.emit_all(requests, stream=stream, linked=True)

    async def record_note_change(self, change: NoteChange) -> None:
        """Add the event to the audit trail (once per event id)."""
        await self._tx.connection.execute(
            insert(NoteChangeRow)
            .values(
                event_id=change.event_id,
                change=change.type,
                note_id=change.note_id,
                owner_id=change.owner_id,
                version=change.version,
                occurred_at=change.occurred_at,
            )
            .on_conflict_do_nothing(index_elements=[col(NoteChangeRow.event_id)])
        )

    async def count_owner_activity(self, owner_id: str, at: datetime) -> None:
        """Add one change to the owner's count; keep the latest change time."""
        statement = insert(OwnerActivityRow).values(owner_id=owner_id, changes=1, last_change_at=at)
        excluded = statement.excluded
        await self._tx.connection.execute(
            statement.on_conflict_do_update(
                index_elements=[col(OwnerActivityRow.owner_id)],
                set_={
                    "changes": col(OwnerActivityRow.changes) + 1,
                    "last_change_at": func.greatest(
                        col(OwnerActivityRow.last_change_at), excluded.last_change_at
                    ),
                },
            )
        )


class FanoutStore:
    """Opens handler transactions on fanout's schema, each for one consumer group."""

    def __init__(self, engine: AsyncEngine, *, schema: str = SCHEMA) -> None:
        self._schema = schema
        self._engine = engine.execution_options(schema_translate_map={SCHEMA: schema})

    @asynccontextmanager
    async def transaction(self, event: Event, *, group: str) -> AsyncIterator[FanoutTransaction]:
        """Handle ``event`` once for ``group``: commit on exit, roll back on error."""
        async with handler_transaction(
            self._engine, schema=self._schema, group=group, event=event
        ) as tx:
            yield FanoutTransaction(tx)
