"""The FastStream Redis broker (wiring tests, AsyncAPI), its JSON message format, typed publishing.

Imported only where FastStream is used: the services' start-up path (the job runtime, the outbox)
does not load FastStream.

Middleware order (outermost first): Recovery → Tracing → Metrics → Logging; see
:mod:`servicekit.middlewares` for why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from faststream.redis import RedisBroker
from faststream.redis.opentelemetry import RedisTelemetryMiddleware
from faststream.redis.parser import MessageFormat
from faststream.redis.prometheus import RedisPrometheusMiddleware
from faststream.security import BaseSecurity

from contracts import Event
from servicekit.connections import redis_ssl_context
from servicekit.headers import event_headers
from servicekit.keys import StreamKeys
from servicekit.middlewares import LoggingMiddleware, RecoveryMiddleware
from servicekit.settings import ServiceSettings
from servicekit.telemetry import Telemetry
from servicekit.wire import decode_envelope, encode_envelope

if TYPE_CHECKING:
    from fast_depends.library.serializer import SerializerProto
    from faststream._internal.basic_types import SendableMessage
    from faststream._internal.parser import CodecProto

__all__ = ["JSONMessageFormat", "create_broker", "event_headers", "publish_event"]


class JSONMessageFormat(MessageFormat):
    """FastStream message format that writes :func:`encode_envelope` frames."""

    __slots__ = ()

    @classmethod
    async def encode(
        cls,
        *,
        message: Sequence[SendableMessage] | SendableMessage,
        reply_to: str | None,
        headers: dict[str, Any] | None,
        correlation_id: str,
        serializer: SerializerProto | None = None,
        codec: CodecProto | None = None,
    ) -> bytes:
        """Encode a message the way FastStream's producer asks for."""
        built = await cls.build(
            message=message,
            reply_to=reply_to,
            headers=headers,
            correlation_id=correlation_id,
            serializer=serializer,
            codec=codec,
        )
        return encode_envelope(built.data, {k: str(v) for k, v in built.headers.items()})

    @classmethod
    def parse(cls, data: bytes) -> tuple[bytes, dict[str, Any]]:
        """Decode an entry's ``__data__`` field."""
        return decode_envelope(data)


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
