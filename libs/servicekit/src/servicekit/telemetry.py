"""One call that sets up a process's logging, tracing and metrics from its settings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from prometheus_client import CollectorRegistry

from servicekit.logs import SecretRedactor, configure_logging
from servicekit.metrics import new_registry
from servicekit.settings import ServiceSettings
from servicekit.tracing import configure_tracing, shutdown_tracing

__all__ = ["Telemetry", "setup_telemetry"]


@dataclass(frozen=True)
class Telemetry:
    """The process's observability handles, passed to whatever records spans or metrics."""

    service: str
    tracer_provider: TracerProvider
    registry: CollectorRegistry
    redactor: SecretRedactor

    def shutdown(self) -> None:
        """Flush spans; call once as the process exits."""
        shutdown_tracing(self.tracer_provider)


def setup_telemetry(
    settings: ServiceSettings,
    *,
    span_processors: Iterable[SpanProcessor] = (),
    log_stream: TextIO | None = None,
) -> Telemetry:
    """Configure logging (with the settings' secrets registered), tracing and a metrics registry."""
    redactor = configure_logging(
        service=settings.otel_service_name,
        level=settings.log_level,
        fmt=settings.log_format,
        secrets=settings.secrets(),
        stream=log_stream,
    )
    return Telemetry(
        service=settings.otel_service_name,
        tracer_provider=configure_tracing(settings, extra_processors=span_processors),
        registry=new_registry(),
        redactor=redactor,
    )
