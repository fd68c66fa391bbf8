"""The FastStream Redis broker every service uses, and typed event publishing.

Middleware order (outermost first): Recovery → Tracing → Metrics → Logging; see
:mod:`servicekit.middlewares` for why.
"""

from __future__ import annotations

import logging

from faststream.redis import RedisBroker
from faststream.redis.opentelemetry import RedisTelemetryMiddleware
from faststream.redis.prometheus import RedisPrometheusMiddleware
from faststream.security import BaseSecurity

from contracts import Event
from servicekit.connections import redis_ssl_context
from servicekit.keys import StreamKeys
from servicekit.middlewares import LoggingMiddleware, RecoveryMiddleware
from servicekit.settings import ServiceSettings
from servicekit.telemetry import Telemetry
from servicekit.wire import JSONMessageFormat

__all__ = ["create_broker", "event_headers", "publish_event"]


def create_broker(settings: ServiceSettings, telemetry: Telemetry) -> RedisBroker:
    """Build a Redis broker with JSON messages, tracing, metrics, recovery and structured logs."""
    ssl_context = redis_ssl_context(settings)
    return RedisBroker(
        settings.redis_url,
        message_format=JSONMessageFormat,
        security=BaseSecurity(ssl_context=ssl_context) if ssl_context else None,
        middlewares=(
            RecoveryMiddleware,
            RedisTelemetryMiddleware(tracer_provider=telemetry.tracer_provider),
            RedisPrometheusMiddleware(registry=telemetry.registry, app_name=telemetry.service),
            LoggingMiddleware,
        ),
        logger=logging.getLogger("faststream"),
        graceful_timeout=settings.shutdown_grace_seconds,
    )


def event_headers(event: Event) -> dict[str, str]:
    """Headers that let a reader route and dedupe an entry without parsing its body."""
    return {"event_type": event.type, "event_id": str(event.event_id)}


async def publish_event(
    broker: RedisBroker, event: Event, *, stream: str, keys: StreamKeys
) -> None:
    """Publish ``event`` to the contracts stream ``stream`` (prefixed by ``keys``)."""
    await broker.publish(
        event.model_dump(mode="json"),
        stream=keys.stream(stream),
        headers=event_headers(event),
        correlation_id=event.correlation_id or str(event.event_id),
    )
