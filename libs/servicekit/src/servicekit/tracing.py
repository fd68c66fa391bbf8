"""OpenTelemetry tracing: ``service.name`` resource, W3C propagation, OTLP export if configured.

With no ``OTEL_EXPORTER_OTLP_ENDPOINT`` the provider still creates real spans, so trace ids reach
the logs and message headers, and nothing is exported.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from servicekit.settings import ServiceSettings

__all__ = ["build_sampler", "configure_tracing", "shutdown_tracing"]


def build_sampler(name: str, arg: float | None = None) -> Sampler:
    """Build the sampler named by ``OTEL_TRACES_SAMPLER`` (the specification's names)."""
    ratio = 1.0 if arg is None else arg
    samplers: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
        "parentbased_always_on": ParentBased(ALWAYS_ON),
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": ParentBased(TraceIdRatioBased(ratio)),
    }
    try:
        return samplers[name.lower()]
    except KeyError:
        known = ", ".join(sorted(samplers))
        msg = f"OTEL_TRACES_SAMPLER={name!r} is not supported; use one of {known}"
        raise ValueError(msg) from None


def _otlp_exporter(endpoint: str, protocol: str) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    # The HTTP exporter wants the full signal path; OTEL_EXPORTER_OTLP_ENDPOINT is the base URL.
    return HttpExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")


def configure_tracing(
    settings: ServiceSettings, *, extra_processors: Iterable[SpanProcessor] = ()
) -> TracerProvider:
    """Build this process's tracer provider (pass it to whatever creates spans).

    The provider is not made the global one: tests build several in one process, and every
    instrumentation here takes the provider explicitly.
    """
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.otel_service_name}),
        sampler=build_sampler(settings.otel_traces_sampler, settings.otel_traces_sampler_arg),
    )
    if settings.otel_exporter_otlp_endpoint:
        exporter = _otlp_exporter(
            settings.otel_exporter_otlp_endpoint, settings.otel_exporter_otlp_protocol
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    for processor in extra_processors:
        provider.add_span_processor(processor)
    return provider


def shutdown_tracing(provider: TracerProvider) -> None:
    """Flush buffered spans and stop the exporters (call once, on shutdown)."""
    provider.force_flush()
    provider.shutdown()
