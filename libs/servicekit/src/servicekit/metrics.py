"""Prometheus registry per process.

One ``CollectorRegistry`` per process (not the global default) so tests build several services in
one interpreter without colliding metric names, and each ops server exposes only its own process.
Each registry carries the process collector (``process_cpu_seconds_total``,
``process_resident_memory_bytes``, ``process_start_time_seconds``: CPU, memory and restarts on the
dashboards). :func:`observe_with_trace` records the current trace id as the observation's exemplar,
so a latency panel links to the trace behind a slow bucket.
"""

from __future__ import annotations

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "new_registry", "observe_with_trace", "render_metrics"]


def new_registry() -> CollectorRegistry:
    """Create the registry this process's collectors register with (process collector included)."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    return registry


def observe_with_trace(histogram: Histogram, value: float) -> None:
    """Observe ``value``, with the current span's trace id as exemplar when one is sampled.

    Exemplars appear only in the OpenMetrics exposition (the ops server serves it to a scraper
    that asks, as Prometheus does); the plain text format drops them.
    """
    context = trace.get_current_span().get_span_context()
    if context.is_valid and context.trace_flags.sampled:
        histogram.observe(value, exemplar={"trace_id": format(context.trace_id, "032x")})
    else:
        histogram.observe(value)


def render_metrics(registry: CollectorRegistry) -> bytes:
    """Render the registry in the Prometheus text format."""
    return generate_latest(registry)
