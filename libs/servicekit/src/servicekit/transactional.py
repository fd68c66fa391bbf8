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

A batch handler opens one transaction for all its events; the inbox rows are written in one
statement and ``tx.new_events`` holds the events this group has not applied yet:

.. code-block:: python

    async with handler_transaction_batch(
        engine, schema="archiver", group="archiver", events=requests
    ) as tx:
        for request in tx.new_events:
            await tx.connection.execute(...)  # the effect of each new event
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.envelope import Event
from servicekit.inbox import forget_delivery, record_deliveries, record_delivery
from servicekit.outbox import add_all_to_outbox, add_to_outbox

__all__ = [
    "BatchTransaction",
    "HandlerTransaction",
    "handler_transaction",
    "handler_transaction_batch",
]

E = TypeVar("E", bound=Event)


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

    async def emit_all(self, events: Sequence[Event], *, stream: str, linked: bool = False) -> int:
        """Add a fan-out's ``events`` to the outbox in one statement; return how many were new.

        See :func:`~servicekit.outbox.add_all_to_outbox` (``linked``: each starts its own trace,
        linked to the current span).
        """
        if self.already_processed:
            raise RuntimeError("an event that was already processed must not emit again")
        return await add_all_to_outbox(
            self.connection, self.schema, events, stream=stream, linked=linked
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


@dataclass(frozen=True, slots=True)
class BatchTransaction(Generic[E]):
    """An open transaction for handling a batch of events in one consumer group."""

    connection: AsyncConnection
    """The transaction's connection; run the effects' statements on it."""
    schema: str
    new_events: list[E]
    """The batch's events this group has not applied yet, in batch order, each once."""
    _new_ids: frozenset[UUID] = field(repr=False)
    _group: str = field(default="", repr=False)

    def already_processed(self, event: Event) -> bool:
        """True when this group applied ``event`` before this batch: leave it alone."""
        return event.event_id not in self._new_ids

    async def emit(self, event: Event, *, stream: str, aggregate_id: str) -> None:
        """Add ``event`` to the outbox in this transaction (published after commit)."""
        if not self.new_events:
            raise RuntimeError("a batch whose events were all processed must not emit again")
        await add_to_outbox(
            self.connection, self.schema, event, stream=stream, aggregate_id=aggregate_id
        )

    async def release(self, event: E) -> None:
        """Record ``event`` as not applied: the handler settles it as retried (or skipped).

        A batch handler that returns a per-event outcome (``{event_id: exception}``) releases
        the events it did not apply, so a redelivery finds them new.
        """
        await forget_delivery(
            self.connection, self.schema, group=self._group, event_id=event.event_id
        )


@asynccontextmanager
async def handler_transaction_batch(
    engine: AsyncEngine, *, schema: str, group: str, events: Sequence[E]
) -> AsyncIterator[BatchTransaction[E]]:
    """Open a transaction, record every event of the batch in ``group``'s inbox, and yield it.

    The inbox rows are inserted in one statement; an event recorded before (a redelivered batch,
    or one that shares events with another) is left out of ``new_events``, so nothing is applied
    twice. A rollback removes the batch's inbox rows with its effects: a retried batch finds its
    events new again.
    """
    async with engine.begin() as connection:
        new_ids = await record_deliveries(
            connection, schema, group=group, event_ids=(e.event_id for e in events)
        )
        new_events: list[E] = []
        taken: set[UUID] = set()
        for event in events:
            if event.event_id in new_ids and event.event_id not in taken:
                taken.add(event.event_id)
                new_events.append(event)
        yield BatchTransaction(connection, schema, new_events, frozenset(new_ids), group)
