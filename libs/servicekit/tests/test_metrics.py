"""The process registry: process figures for the dashboards, trace ids as exemplars."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import Histogram
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from servicekit.metrics import new_registry, observe_with_trace, render_metrics


def test_registry_exports_process_cpu_memory_and_start_time() -> None:
    text = render_metrics(new_registry()).decode()
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_start_time_seconds"):  # fmt: skip
        assert f"\n{name} " in text, name


def test_observation_inside_a_span_carries_its_trace_id_as_exemplar() -> None:
    registry = new_registry()
    histogram = Histogram("work_seconds", "Work.", registry=registry, buckets=(1.0,))
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        observe_with_trace(histogram, 0.5)
        trace_id = format(span.get_span_context().trace_id, "032x")
    observe_with_trace(histogram, 0.7)  # outside any span: counted, no exemplar to record

    text = generate_openmetrics(registry).decode()
    assert f'work_seconds_bucket{{le="1.0"}} 2.0 # {{trace_id="{trace_id}"}} 0.5' in text
