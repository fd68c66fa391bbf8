"""A FastStream Redis broker that speaks the platform's wire format, for in-memory wiring tests.

No service consumes or publishes through FastStream: the job runtime (:mod:`servicekit.jobs`) and
the outbox relay write and read every entry. What FastStream still does here:

- ``TestRedisBroker`` wiring tests: a broker from :func:`create_broker` publishes (with
  :func:`publish_event`) and reads entries in the platform's JSON format with the platform's
  headers, so a test can check that a typed subscriber decodes what the runtime writes;
- the AsyncAPI documents, from a throwaway broker (:mod:`servicekit.asyncapi`).

Imported only where FastStream is used: nothing on a service's start-up path imports this module.

Redis Cluster: FastStream's ``RedisBroker`` (0.7) has no cluster client; connected to a cluster
it would talk to the one node its URL names and fail on every key another node owns. Nothing on
the message path uses it, so for a ``redis+cluster://`` URL :func:`create_broker` builds the broker
on the seed node's plain URL: enough for ``TestRedisBroker`` and AsyncAPI, which never connect.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from faststream.redis import RedisBroker
from faststream.redis.opentelemetry import RedisTelemetryMiddleware
from faststream.redis.parser import MessageFormat
from faststream.redis.prometheus import RedisPrometheusMiddleware
from faststream.security import BaseSecurity
from faststream.types import SendableMessage

from contracts import Event
from servicekit.connections import cluster_url, redis_ssl_context
from servicekit.headers import event_headers
from servicekit.keys import StreamKeys
from servicekit.settings import ServiceSettings
from servicekit.telemetry import Telemetry
from servicekit.wire import decode_envelope, encode_envelope

__all__ = ["JSONMessageFormat", "create_broker", "publish_event"]


class JSONMessageFormat(MessageFormat):
    """FastStream message format that writes :func:`~servicekit.wire.encode_envelope` frames."""

    __slots__ = ()

    @classmethod
    async def encode(
        cls,
        *,
        message: Sequence[SendableMessage] | SendableMessage,
        reply_to: str | None,
        headers: dict[str, Any] | None,
        correlation_id: str,
        serializer: Any = None,  # FastStream types these with private (_internal) protocols
        codec: Any = None,
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
    """Build a Redis broker with JSON messages and FastStream's own tracing and metrics."""
    ssl_context = redis_ssl_context(settings)
    return RedisBroker(
        cluster_url(settings.redis_url) or settings.redis_url,
        message_format=JSONMessageFormat,
        security=BaseSecurity(ssl_context=ssl_context) if ssl_context else None,
        middlewares=(
            RedisTelemetryMiddleware(tracer_provider=telemetry.tracer_provider),
            RedisPrometheusMiddleware(registry=telemetry.registry, app_name=telemetry.service),
        ),
        logger=logging.getLogger("faststream"),
        graceful_timeout=settings.shutdown_grace_seconds,
    )


async def publish_event(
    broker: RedisBroker, event: Event, *, stream: str, keys: StreamKeys
) -> None:
    """Publish ``event`` to the contracts stream ``stream`` (prefixed by ``keys``).

    With :func:`~servicekit.headers.event_headers`, the headers the runtime and the outbox write.
    """
    headers = event_headers(event)
    await broker.publish(
        event.model_dump(mode="json"),
        stream=keys.stream(stream),
        headers=headers,
        correlation_id=headers["correlation_id"],
    )
