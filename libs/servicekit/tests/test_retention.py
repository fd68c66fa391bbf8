"""The retention loop purges old published outbox rows and old inbox records, nothing else."""

import asyncio
import time
from uuid import uuid4

from redis.asyncio import Redis
from sqlalchemy import text

from contracts import NoteArchived
from servicekit import (
    OutboxRelay,
    ServiceSettings,
    StreamKeys,
    add_to_outbox,
    create_database_engine,
)
from servicekit.inbox import record_delivery
from servicekit.outbox import ensure_outbox_tables
from servicekit.retention import database_retention


async def test_old_published_rows_and_inbox_records_are_purged(
    database_url: str, redis_client: Redis, stream_prefix: str
) -> None:
    engine = create_database_engine(ServiceSettings(database_url=database_url))
    await ensure_outbox_tables(engine, "svc")
    event = NoteArchived(producer="t", owner_id="o", note_id=uuid4(), version=1, job_id=uuid4())
    async with engine.begin() as connection:
        await add_to_outbox(connection, "svc", event, stream="notes.archived.v1", aggregate_id="a")
        await record_delivery(connection, "svc", group="g", event_id=uuid4())
        await record_delivery(connection, "svc", group="g", event_id=uuid4())
        await connection.execute(
            text(
                "UPDATE svc.inbox SET processed_at = now() - interval '8 days' WHERE ctid IN "
                "(SELECT ctid FROM svc.inbox LIMIT 1)"
            )
        )
    relay = OutboxRelay(engine, redis_client, schema="svc", keys=StreamKeys(stream_prefix))
    assert await relay.publish_pending() == 1
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE svc.outbox SET published_at = now() - interval '8 days'")
        )
        await add_to_outbox(
            connection,
            "svc",
            event.model_copy(update={"event_id": uuid4()}),
            stream="notes.archived.v1",
            aggregate_id="a",
        )
    stop = asyncio.Event()
    loop = asyncio.create_task(database_retention(engine, relay, schema="svc", every=0.05)(stop))

    async def counts() -> tuple[int, int]:
        async with engine.connect() as connection:
            outbox = (await connection.execute(text("SELECT count(*) FROM svc.outbox"))).scalar()
            inbox = (await connection.execute(text("SELECT count(*) FROM svc.inbox"))).scalar()
        return int(outbox or 0), int(inbox or 0)

    deadline = time.monotonic() + 10
    while await counts() != (1, 1):
        assert time.monotonic() < deadline, await counts()
        await asyncio.sleep(0.05)
    stop.set()
    await loop
    await engine.dispose()
