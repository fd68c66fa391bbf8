"""FastStream's in-memory TestRedisBroker serves wiring tests, with the platform's headers."""

from typing import Annotated

from faststream import Context
from faststream.redis import TestRedisBroker

from contracts import NoteArchived
from servicekit import ServiceSettings, StreamKeys, setup_telemetry
from servicekit.broker import create_broker, publish_event


async def test_handlers_can_be_unit_tested_without_redis() -> None:
    settings = ServiceSettings(otel_service_name="unit")
    broker = create_broker(settings, setup_telemetry(settings))
    received: list[tuple[NoteArchived, dict[str, str]]] = []

    @broker.subscriber(stream=StreamKeys().stream("notes.archived.v1"))  # the Redis key
    async def record_archived(
        event: NoteArchived, headers: Annotated[dict[str, str], Context("message.headers")]
    ) -> None:
        received.append((event, headers))

    event = NoteArchived(
        producer="t", owner_id="o", note_id="00000000-0000-0000-0000-000000000001", version=1,
        job_id="00000000-0000-0000-0000-000000000002", correlation_id="c-1",
    )  # fmt: skip
    async with TestRedisBroker(broker):
        await publish_event(broker, event, stream="notes.archived.v1", keys=StreamKeys())
    [(got, headers)] = received
    assert got == event
    assert headers["event_type"] == "notes.archived.v1"
    assert headers["event_id"] == str(event.event_id)
    assert headers["correlation_id"] == "c-1"
