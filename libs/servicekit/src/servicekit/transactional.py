"""The unit of work of a database handler: effect, inbox row and emitted events in one commit.

.. code-block:: python

    async with handler_transaction(
        engine, schema="archiver", group="archiver", event=request
    ) as tx:
        if tx.already_processed:
            return
        await tx.connection.execute(...)  # the effect
        await tx.emit(NoteArchived(...), stream=NOTES_ARCHIVED, aggregate_id=str(note_id))

The block commits on exit and rolls back on an exception, so either the effect, the inbox row and
the outbox rows all exist or none does. A redelivery of the event finds the inbox row and skips.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.envelope import Event
from servicekit.inbox import record_delivery
from servicekit.outbox import add_to_outbox

__all__ = ["HandlerTransaction", "handler_transaction"]


@dataclass(frozen=True, slots=True)
class HandlerTransaction:
    """An open transaction for handling one event in one consumer group."""

    connection: AsyncConnection
    """The transaction's connection; run the effect's statements on it."""
    schema: str
    already_processed: bool
    """True when this group already applied the event: do nothing and return."""

    async def emit(self, event: Event, *, stream: str, aggregate_id: str) -> None:
        """Add ``event`` to the outbox in this transaction (published after commit)."""
        if self.already_processed:
            raise RuntimeError("an event that was already processed must not emit again")
        await add_to_outbox(
            self.connection, self.schema, event, stream=stream, aggregate_id=aggregate_id
        )


@asynccontextmanager
async def handler_transaction(
    engine: AsyncEngine, *, schema: str, group: str, event: Event
) -> AsyncIterator[HandlerTransaction]:
    """Open a transaction, record ``event`` in ``group``'s inbox first, and yield it.

    A concurrent delivery of the same event waits on the inbox row's primary key until this
    transaction ends, then sees ``already_processed`` (or proceeds if this one rolled back).
    """
    async with engine.begin() as connection:
        first = await record_delivery(connection, schema, group=group, event_id=event.event_id)
        yield HandlerTransaction(connection, schema, already_processed=not first)
