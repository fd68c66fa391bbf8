"""A fan-out's child entry: its consumer starts a trace of its own, linked to the creator's span."""

from servicekit.headers import linked_event_headers
from servicekit.jobs import JobRouter
from servicekit.testing import eventually
from servicekit.wire import DATA_FIELD, encode_envelope

from .conftest import Harness, Pinged, fast

STREAM = "test.pinged.v1"


async def test_a_fanned_out_entry_starts_its_own_trace_linked_to_its_creator(
    harness: Harness,
) -> None:
    router = JobRouter(group="g")

    @router.event(Pinged, stream=STREAM, **fast())
    async def record_ping(event: Pinged) -> None:
        pass

    tracer = harness.telemetry.tracer_provider.get_tracer("test")
    event = Pinged(producer="t", n=1)
    with tracer.start_as_current_span("expand chunk") as creator:
        fields = {DATA_FIELD: encode_envelope(event.model_dump_json().encode(),
                                              linked_event_headers(event))}  # fmt: skip
    await harness.redis.xadd(harness.keys.stream(STREAM), fields)  # type: ignore[arg-type]
    async with harness.running(harness.worker(router)):
        await eventually(lambda: harness.counted(STREAM, "succeeded") == 1)
    (span,) = [s for s in harness.spans.get_finished_spans() if s.name == f"{STREAM} process"]
    created = creator.get_span_context()
    assert span.context.trace_id != created.trace_id  # not one trace of every child
    assert [(link.context.trace_id, link.context.span_id) for link in span.links] == [
        (created.trace_id, created.span_id)
    ]
