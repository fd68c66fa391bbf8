"""The inbox: which events a consumer group has already applied, in the service's own schema.

A database handler inserts ``(consumer_group, event_id)`` in the same transaction as its effect
(:func:`servicekit.transactional.handler_transaction` does it). The primary key makes a second
delivery of the event (a redelivery after a crash, a consumer that was paused and reclaimed) see
a conflict and skip the effect: exactly-once *effects* on top of at-least-once delivery.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from uuid import UUID

from sqlalchemy import Column, DateTime, MetaData, PrimaryKeyConstraint, Table, Text, Uuid, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = [
    "DEFAULT_INBOX_RETENTION",
    "INBOX_TABLE",
    "inbox_table",
    "purge_inbox",
    "record_deliveries",
    "record_delivery",
    "tables_for_schema",
]

INBOX_TABLE = "inbox"
DEFAULT_INBOX_RETENTION = timedelta(days=7)


def _qualified(metadata: MetaData, name: str) -> str:
    return f"{metadata.schema}.{name}" if metadata.schema else name


def inbox_table(metadata: MetaData) -> Table:
    """Return the inbox table in ``metadata``'s schema, defining it on first use."""
    existing = metadata.tables.get(_qualified(metadata, INBOX_TABLE))
    if existing is not None:
        return existing
    return Table(
        INBOX_TABLE,
        metadata,
        Column("consumer_group", Text, nullable=False),
        Column("event_id", Uuid, nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer_group", "event_id", name=f"{INBOX_TABLE}_pkey"),
    )


_METADATA: dict[str, MetaData] = {}


def tables_for_schema(schema: str) -> MetaData:
    """Return a shared ``MetaData`` for ``schema`` (the outbox module adds its table to it)."""
    metadata = _METADATA.get(schema)
    if metadata is None:
        metadata = _METADATA.setdefault(schema, MetaData(schema=schema))
    inbox_table(metadata)
    return metadata


def _inbox(schema: str) -> Table:
    return inbox_table(tables_for_schema(schema))


async def record_delivery(
    connection: AsyncConnection, schema: str, *, group: str, event_id: UUID
) -> bool:
    """Insert the inbox row for ``(group, event_id)``; return False if it already existed.

    Call it inside the effect's transaction, before the effect. A concurrent delivery of the same
    event blocks on the primary key until the first transaction ends, then sees the conflict (or,
    if the first rolled back, inserts the row itself).
    """
    table = _inbox(schema)
    statement = (
        insert(table)
        .values(consumer_group=group, event_id=event_id)
        .on_conflict_do_nothing(index_elements=["consumer_group", "event_id"])
        .returning(table.c.event_id)
    )
    result = await connection.execute(statement)
    return result.first() is not None


async def record_deliveries(
    connection: AsyncConnection, schema: str, *, group: str, event_ids: Iterable[UUID]
) -> set[UUID]:
    """Insert the inbox rows of a batch in one statement; return the ids that were new.

    One ``INSERT ... VALUES (...), (...) ON CONFLICT DO NOTHING RETURNING event_id``. The ids are
    inserted in sorted order, so two transactions recording overlapping batches lock the rows in
    the same order and wait for each other instead of deadlocking.
    """
    ids = sorted(set(event_ids))
    if not ids:
        return set()
    table = _inbox(schema)
    statement = (
        insert(table)
        .values([{"consumer_group": group, "event_id": event_id} for event_id in ids])
        .on_conflict_do_nothing(index_elements=["consumer_group", "event_id"])
        .returning(table.c.event_id)
    )
    result = await connection.execute(statement)
    return set(result.scalars())


async def forget_delivery(
    connection: AsyncConnection, schema: str, *, group: str, event_id: UUID
) -> None:
    """Delete the inbox row for ``(group, event_id)`` in the caller's transaction.

    For a batch handler that settles its events one by one: an event it did not apply (to be
    retried) must not look applied when it comes back.
    """
    table = _inbox(schema)
    await connection.execute(
        table.delete().where(table.c.consumer_group == group, table.c.event_id == event_id)
    )


async def purge_inbox(
    engine: AsyncEngine, schema: str, older_than: timedelta = DEFAULT_INBOX_RETENTION
) -> int:
    """Delete inbox rows processed more than ``older_than`` ago; return how many.

    Keep them longer than any event can still be redelivered (stream retention, retry horizon):
    a redelivery whose inbox row was purged would run its effect again.
    """
    table = _inbox(schema)
    async with engine.begin() as connection:
        result = await connection.execute(
            table.delete().where(table.c.processed_at < func.now() - older_than)
        )
    return result.rowcount
