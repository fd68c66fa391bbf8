"""The transactional outbox: events are written with the effect and published afterwards.

A service never publishes from inside a transaction. It adds the event to its schema's ``outbox``
table in the same transaction as the change (:func:`add_to_outbox`), and :class:`OutboxRelay`
copies committed rows to Redis Streams. A crash between commit and publish loses nothing: the
rows stay unpublished until a relay sends them. Delivery is at least once (a relay that dies after
XADD and before its commit sends the rows again), which consumers absorb with the inbox.

A row is marked published only once its write is as durable as ``OUTBOX_DURABILITY`` asks
(:mod:`servicekit.durability`: WAITAOF / WAIT in the XADDs' pipeline, where the server offers them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, NamedTuple
from uuid import UUID

from opentelemetry import propagate
from opentelemetry.trace import (
    Link,
    Span,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
    get_current_span,
    set_span_in_context,
)
from prometheus_client import CollectorRegistry
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Index,
    MetaData,
    Table,
    Text,
    Uuid,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateSchema
from sqlalchemy.sql.elements import ColumnElement

from contracts.envelope import Event
from servicekit.durability import DurabilityGuard, DurabilityPolicy
from servicekit.headers import CONTENT_TYPE, LINK_TRACEPARENT, event_headers, linked_event_headers
from servicekit.inbox import tables_for_schema
from servicekit.keys import StreamKeys
from servicekit.logs import get_logger
from servicekit.redis_client import RedisClient
from servicekit.wire import DATA_FIELD, encode_envelope

__all__ = [
    "DEFAULT_OUTBOX_RETENTION",
    "OUTBOX_TABLE",
    "OutboxRelay",
    "add_all_to_outbox",
    "add_to_outbox",
    "create_outbox_tables",
    "ensure_outbox_tables",
    "outbox_table",
]

OUTBOX_TABLE = "outbox"
DEFAULT_OUTBOX_RETENTION = timedelta(days=7)
"""How long published rows are kept (for inspection and replay) before :meth:`purge_published`."""

_log = get_logger("servicekit.outbox")


def outbox_table(metadata: MetaData) -> Table:
    """Return the outbox table in ``metadata``'s schema, defining it on first use."""
    key = f"{metadata.schema}.{OUTBOX_TABLE}" if metadata.schema else OUTBOX_TABLE
    existing = metadata.tables.get(key)
    if existing is not None:
        return existing
    table = Table(
        OUTBOX_TABLE,
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("aggregate_id", Text, nullable=False),
        Column("stream", Text, nullable=False),
        Column("event_id", Uuid, nullable=False, unique=True),
        Column("event_type", Text, nullable=False),
        Column("payload", JSONB, nullable=False),
        Column("headers", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), nullable=True),
    )
    # The relay's scan: only unpublished rows, in id order; stays small however large the table.
    Index(
        "ix_outbox_unpublished",
        table.c.id,
        postgresql_where=table.c.published_at.is_(None),
    )
    # The relay's ordering check: earlier unpublished rows of the same aggregate.
    Index(
        "ix_outbox_unpublished_aggregate",
        table.c.aggregate_id,
        table.c.id,
        postgresql_where=table.c.published_at.is_(None),
    )
    return table


def _outbox(schema: str) -> Table:
    return outbox_table(tables_for_schema(schema))


def create_outbox_tables(connection: Connection, schema: str) -> None:
    """Create ``schema`` (if missing), the outbox and inbox tables and their indexes; idempotent.

    Call it from a service's alembic migration: ``create_outbox_tables(op.get_bind(), "notes")``.
    """
    metadata = tables_for_schema(schema)
    outbox_table(metadata)
    connection.execute(CreateSchema(schema, if_not_exists=True))
    metadata.create_all(connection, checkfirst=True)


async def ensure_outbox_tables(engine: AsyncEngine, schema: str) -> None:
    """Create the outbox and inbox tables of ``schema`` if missing (tests and development)."""
    async with engine.begin() as connection:
        await connection.run_sync(create_outbox_tables, schema)


async def add_to_outbox(
    connection: AsyncConnection, schema: str, event: Event, *, stream: str, aggregate_id: str
) -> None:
    """Add ``event`` to the outbox in the caller's transaction, for the contracts ``stream``.

    ``aggregate_id`` is the ordering key: the relay publishes one aggregate's events in the order
    they were written. The current W3C trace context is captured now, so the consumer's span
    continues the trace of the request that wrote the event.
    """
    headers = event_headers(event)
    # Values as parameters, not `.values(...)`: the statement's compiled form is then cached.
    await connection.execute(
        _outbox(schema).insert(),
        {
            "aggregate_id": aggregate_id,
            "stream": stream,
            "event_id": event.event_id,
            "event_type": event.type,
            "payload": event.model_dump(mode="json"),
            "headers": headers,
        },
    )


async def add_each_to_outbox(
    connection: AsyncConnection,
    schema: str,
    events: Sequence[tuple[Event, str]],
    *,
    stream: str,
) -> None:
    """:func:`add_to_outbox` for each ``(event, aggregate_id)``: one statement, one round trip.

    For a batch handler's results (one event per handled event, each of its own aggregate): the
    rows are the same as one call each would write, the current trace context in each.
    """
    if not events:
        return
    rows = [
        {
            "aggregate_id": aggregate_id,
            "stream": stream,
            "event_id": event.event_id,
            "event_type": event.type,
            "payload": event.model_dump(mode="json"),
            "headers": event_headers(event),
        }
        for event, aggregate_id in events
    ]
    await connection.execute(_outbox(schema).insert(), rows)


async def add_all_to_outbox(
    connection: AsyncConnection,
    schema: str,
    events: Sequence[Event],
    *,
    stream: str,
    linked: bool = False,
) -> int:
    """Add ``events`` to the outbox in one statement; return how many rows were new.

    For a fan-out (one event causing hundreds): each event is its own aggregate (its
    ``event_id``), and an event whose ``event_id`` is already in the outbox is left out, so a
    fan-out with deterministic event ids written twice adds nothing the second time. With
    ``linked`` each entry starts a trace of its own that links to the current span
    (:func:`~servicekit.headers.linked_event_headers`), so thousands of children do not make
    one trace of thousands of spans.
    """
    if not events:
        return 0
    headers_for = linked_event_headers if linked else event_headers
    table = _outbox(schema)
    rows = [
        {
            "aggregate_id": str(event.event_id),
            "stream": stream,
            "event_id": event.event_id,
            "event_type": event.type,
            "payload": event.model_dump(mode="json"),
            "headers": headers_for(event),
        }
        for event in events
    ]
    added = await connection.execute(
        pg_insert(table)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(table.c.id)
    )
    return len(added.all())


class _Pending(NamedTuple):
    id: int
    aggregate_id: str
    stream: str
    event_id: UUID
    payload: Any
    headers: dict[str, Any]


def _pending_columns(table: Table) -> tuple[ColumnElement[Any], ...]:
    """The columns a relayed row is read with, in ``_Pending``'s field order."""
    c = table.c
    return (c.id, c.aggregate_id, c.stream, c.event_id, c.payload, c.headers)


class OutboxRelay:
    """Publishes committed outbox rows to Redis Streams, in order per aggregate.

    Several relays may run on one schema: each locks its batch with ``FOR UPDATE SKIP LOCKED`` and
    holds back rows whose aggregate has an earlier row locked by another relay.

    ``poll_interval`` is the pause after a round that found less than a full batch;
    ``max_backoff`` caps the pause after failures; ``publish_timeout`` bounds one pipeline, so a
    hung Redis does not keep the batch locked. With ``tracer_provider``, each entry is published
    in a PRODUCER span that continues the trace captured when the row was written.

    ``durability`` says what each batch waits for before its rows are marked published (default
    ``auto``: whatever the server offers); each wait is bounded by its ``timeout_ms`` and by half
    of ``publish_timeout``. The durability in force is logged when first detected (at the start of
    :meth:`run`) and exported on ``registry`` (``outbox_durability_in_force``,
    ``outbox_durability_shortfalls_total``).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        redis: RedisClient,
        *,
        schema: str,
        keys: StreamKeys,
        batch_size: int = 100,
        poll_interval: float = 0.2,
        tracer_provider: TracerProvider | None = None,
        max_backoff: float = 30.0,
        publish_timeout: float = 10.0,
        durability: DurabilityPolicy | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        durability = durability or DurabilityPolicy()
        # The wait must end, with its count, before publish_timeout abandons the whole pipeline.
        bound = max(1, int(publish_timeout * 1000 / 2))
        durability = replace(durability, timeout_ms=min(durability.timeout_ms, bound))
        self._engine = engine
        self._redis = redis
        self._schema = schema
        self._keys = keys
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._publish_timeout = publish_timeout
        self._table = _outbox(schema)
        self._tracer = tracer_provider.get_tracer("servicekit.outbox") if tracer_provider else None
        self._durability = DurabilityGuard(durability, schema=schema, registry=registry)

    def durability_in_force(self) -> str | None:
        """The durability the relay waits for, and what a Redis loss costs (a ``/readyz`` fact)."""
        return self._durability.in_force()

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished rows; return how many were published.

        Raises when Redis or PostgreSQL fails, or the batch is not as durable as configured
        (:class:`~servicekit.durability.DurabilityShortfallError`,
        :class:`~servicekit.durability.DurabilityUnavailableError`); the transaction then rolls back
        and the rows stay unpublished for the next round.
        """
        table = self._table
        async with self._engine.begin() as connection:
            batch = (
                await connection.execute(
                    select(*_pending_columns(table))
                    .where(table.c.published_at.is_(None))
                    .order_by(table.c.id)
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            pending = [_Pending(*row) for row in batch]
            rows = await self._in_aggregate_order(connection, pending)
            if not rows:
                return 0
            await self._xadd(rows)
            await connection.execute(
                update(table)
                .where(table.c.id.in_([row.id for row in rows]))
                .values(published_at=func.now())
            )
        return len(rows)

    async def _in_aggregate_order(
        self, connection: AsyncConnection, batch: Sequence[_Pending]
    ) -> list[_Pending]:
        """Drop rows whose aggregate has an earlier unpublished row outside this batch."""
        if not batch:
            return []
        table = self._table
        ids = [row.id for row in batch]
        earliest_elsewhere = await connection.execute(
            select(table.c.aggregate_id, func.min(table.c.id))
            .where(
                table.c.published_at.is_(None),
                table.c.aggregate_id.in_(sorted({row.aggregate_id for row in batch})),
                table.c.id < max(ids),
                table.c.id.not_in(ids),
            )
            .group_by(table.c.aggregate_id)
        )
        blocked_from: dict[str, int] = {aggregate: first for aggregate, first in earliest_elsewhere}
        return [
            row
            for row in batch
            if row.aggregate_id not in blocked_from or row.id < blocked_from[row.aggregate_id]
        ]

    async def _xadd(self, rows: Sequence[_Pending]) -> None:
        spans: list[Span] = []
        pipeline = self._redis.pipeline(transaction=False)
        for row in rows:
            headers = {str(k): str(v) for k, v in row.headers.items()}
            # Rows written before the headers carried it (event_headers adds it now).
            headers.setdefault("content-type", CONTENT_TYPE)
            key = self._keys.stream(row.stream)
            if self._tracer is not None:
                linked = headers.get(LINK_TRACEPARENT)
                link = propagate.extract({"traceparent": linked}) if linked else None
                span = self._tracer.start_span(
                    f"{key} publish",
                    context=propagate.extract(headers),
                    kind=SpanKind.PRODUCER,
                    links=[Link(get_current_span(link).get_span_context())] if link else None,
                    attributes={
                        "messaging.system": "redis",
                        "messaging.operation.type": "publish",
                        "messaging.destination.name": key,
                        "messaging.message.id": str(row.event_id),
                    },
                )
                spans.append(span)
                headers.pop("traceparent", None)
                headers.pop("tracestate", None)
                propagate.inject(headers, context=set_span_in_context(span))
            body = json.dumps(row.payload, separators=(",", ":")).encode()
            pipeline.xadd(key, {DATA_FIELD: encode_envelope(body, headers)})
        try:
            async with asyncio.timeout(self._publish_timeout):
                # Detected once (again after a failure); inside the try so the spans record it.
                plan = await self._durability.plan(self._redis)
                waits = plan.add_waits(pipeline)
                replies = await pipeline.execute()
            self._durability.check(plan, replies[len(replies) - waits :], len(rows))
        except BaseException as exc:
            # The server may have restarted or been reconfigured: see what it offers next round.
            self._durability.forget()
            for span in spans:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            for span in spans:
                span.end()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set; log failures and back off, never give up on rows."""
        try:
            await self._durability.plan(self._redis)  # say at start what "published" will mean
        except Exception as exc:  # asked again with the first batch; the loop reports failures
            _log.warning("outbox.durability_unknown", schema=self._schema, error=repr(exc))
        failures = 0
        while not stop.is_set():
            try:
                published = await self.publish_pending()
            except Exception as exc:
                failures += 1
                delay = min(self._poll_interval * 2**failures, self._max_backoff)
                _log.warning(
                    "outbox.publish_failed",
                    schema=self._schema,
                    error=repr(exc),
                    failures=failures,
                    retry_in=delay,
                )
                await _wait(stop, delay)
                continue
            if failures:
                _log.info("outbox.publish_recovered", schema=self._schema, failures=failures)
                failures = 0
            if published < self._batch_size:
                await _wait(stop, self._poll_interval)

    async def replay_published(self, since: timedelta) -> int:
        """Publish again every row published within the last ``since``; return how many.

        For recovery after Redis lost writes it had acknowledged (no AOF, or a failover to a
        replica that had not received them): PostgreSQL says those events were sent, and this
        sends them again. It is safe because every consumer dedupes by event id (the inbox, or
        the Redis variant), so an entry that did survive is applied once. Rows go out in id
        order (per aggregate as first published), a batch at a time, and keep their
        ``published_at``; the window is measured on PostgreSQL's clock, which set that column.
        """
        table = self._table
        columns = _pending_columns(table)
        async with self._engine.connect() as connection:
            cutoff = (await connection.execute(select(func.now() - since))).scalar_one()
        replayed, after = 0, 0
        while True:
            async with self._engine.connect() as connection:
                batch = (
                    await connection.execute(
                        select(*columns)
                        .where(table.c.published_at >= cutoff, table.c.id > after)
                        .order_by(table.c.id)
                        .limit(self._batch_size)
                    )
                ).all()
            if not batch:
                break
            rows = [_Pending(*row) for row in batch]
            await self._xadd(rows)
            replayed += len(rows)
            after = rows[-1].id
        _log.info("outbox.replayed", schema=self._schema, since=str(since), count=replayed)
        return replayed

    async def purge_published(self, older_than: timedelta = DEFAULT_OUTBOX_RETENTION) -> int:
        """Delete rows published more than ``older_than`` ago; return how many."""
        table = self._table
        async with self._engine.begin() as connection:
            result = await connection.execute(
                table.delete().where(
                    table.c.published_at.is_not(None),
                    table.c.published_at < func.now() - older_than,
                )
            )
        return result.rowcount


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
