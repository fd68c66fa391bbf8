"""The first traced hop: one contracts event crosses a Redis consumer group in a single trace."""

import asyncio
import io
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar
from uuid import uuid4

import pytest
from faststream.redis import StreamSub
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis

from contracts.notes import NoteCreated, NoteSnapshot
from contracts.streams import NOTES_CREATED
from servicekit import ServiceSettings, StreamKeys, get_logger, setup_telemetry
from servicekit.broker import create_broker, publish_event

T = TypeVar("T")


async def eventually(probe: Callable[[], T | None], within: float = 10.0) -> T:
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


def make_note_created() -> NoteCreated:
    now = datetime.now(UTC)
    note_id = uuid4()
    note = NoteSnapshot(
        id=note_id,
        owner_id="alice",
        title="hello",
        body="first traced hop",
        tags=["demo"],
        version=1,
        created_at=now,
        updated_at=now,
        archived_at=None,
    )
    return NoteCreated(
        producer="notes-api", owner_id="alice", note_id=note_id, version=1, note=note
    )


@pytest.mark.single_redis("a connected FastStream RedisBroker: it has no cluster client")
async def test_event_crosses_consumer_group_in_one_trace(
    redis_url: str, stream_prefix: str, redis_client: Redis
) -> None:
    exporter = InMemorySpanExporter()
    log = io.StringIO()
    settings = ServiceSettings(
        otel_service_name="hop-test", redis_url=redis_url, stream_prefix=stream_prefix
    )
    telemetry = setup_telemetry(
        settings, span_processors=[SimpleSpanProcessor(exporter)], log_stream=log
    )
    keys = StreamKeys(stream_prefix)
    stream = keys.stream(NOTES_CREATED)
    await redis_client.xgroup_create(stream, "archiver", id="0", mkstream=True)
    broker = create_broker(settings, telemetry)
    received: list[NoteCreated] = []

    @broker.subscriber(stream=StreamSub(stream, group="archiver", consumer="hop-1"))
    async def record_note(event: NoteCreated) -> None:
        get_logger("hop").info("note.received", note_id=str(event.note_id))
        received.append(event)

    sent = make_note_created()
    tracer = telemetry.tracer_provider.get_tracer("test")
    async with broker:
        await broker.start()
        with tracer.start_as_current_span("POST /v1/notes") as request_span:
            await publish_event(broker, sent, stream=NOTES_CREATED, keys=keys)
        trace_id = request_span.get_span_context().trace_id
        await eventually(lambda: received)
        consumer_span = await eventually(
            lambda: next(
                (s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER), None
            )
        )

        def processed() -> float | None:
            return telemetry.registry.get_sample_value(
                "faststream_received_processed_messages_total",
                {"app_name": "hop-test", "broker": "redis", "handler": stream, "status": "acked"},
            )

        assert await eventually(processed) == 1.0

    assert received == [sent]
    assert consumer_span.context.trace_id == trace_id
    lines = [json.loads(line) for line in log.getvalue().splitlines() if line.startswith("{")]
    note_lines = [line for line in lines if line["event"] == "note.received"]
    assert note_lines, log.getvalue()
    assert note_lines[0]["trace_id"] == format(trace_id, "032x")
    assert note_lines[0]["service"] == "hop-test"
    entries = await redis_client.xrange(stream)
    document = json.loads(entries[0][1][b"__data__"])
    assert document["headers"]["event_type"] == "notes.created.v1"
    assert document["headers"]["traceparent"].split("-")[1] == format(trace_id, "032x")
    assert document["body"]["note_id"] == str(sent.note_id)
    telemetry.shutdown()
