"""FastStream's in-memory TestRedisBroker serves unit tests of handlers."""

from faststream.redis import TestRedisBroker

from contracts import NoteArchived
from servicekit import ServiceSettings, StreamKeys, create_broker, publish_event, setup_telemetry


async def test_handlers_can_be_unit_tested_without_redis() -> None:
    settings = ServiceSettings(otel_service_name="unit")
    broker = create_broker(settings, setup_telemetry(settings))
    received: list[NoteArchived] = []

    @broker.subscriber(stream=StreamKeys().stream("notes.archived.v1"))  # the Redis key
    async def record_archived(event: NoteArchived) -> None:
        received.append(event)

    event = NoteArchived(
        producer="t", owner_id="o", note_id="00000000-0000-0000-0000-000000000001", version=1,
        job_id="00000000-0000-0000-0000-000000000002",
    )  # fmt: skip
    async with TestRedisBroker(broker):
        await publish_event(broker, event, stream="notes.archived.v1", keys=StreamKeys())
    assert received == [event]
