"""FastStream middlewares that servicekit adds around every handler.

The broker factory stacks them as Recovery → Tracing → Metrics → Logging (outermost first):
Recovery sees every failure, including the other middlewares'; Logging runs inside the span, so
its lines carry the trace id.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from faststream import BaseMiddleware
from faststream.message import StreamMessage

from servicekit.errors import classify

__all__ = ["LoggingMiddleware", "RecoveryMiddleware"]

_log = structlog.stdlib.get_logger("servicekit.messages")


def _source(msg: StreamMessage[Any]) -> dict[str, Any]:
    raw = msg.raw_message if isinstance(msg.raw_message, dict) else {}
    channel = raw.get("channel")
    message_ids = raw.get("message_ids") or []
    return {
        "stream": channel.decode() if isinstance(channel, bytes) else channel,
        "message_id": (
            message_ids[0].decode() if message_ids and isinstance(message_ids[0], bytes) else None
        ),
        "event_type": msg.headers.get("event_type"),
        "correlation_id": msg.correlation_id,
    }


class RecoveryMiddleware(BaseMiddleware):
    """Classify a handler's exception as permanent or transient, record it, and re-raise it.

    It never swallows: an exception that stopped here would be acknowledged as a success. The job
    runtime (servicekit.jobs) routes by the same classification to retry or dead letter.
    """

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        """Run the handler; on failure log the classification and re-raise."""
        try:
            return await call_next(msg)
        except Exception as exc:
            _log.warning(
                "message.failed",
                error_kind=classify(exc).value,
                error_class=type(exc).__name__,
                error=str(exc),
                **_source(msg),
            )
            raise


class LoggingMiddleware(BaseMiddleware):
    """Bind the message's identity to every log line its handler writes, and log the outcome."""

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        """Run the handler with the message's ids bound to the logging context."""
        source = _source(msg)
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(**source):
            result = await call_next(msg)
            _log.info(
                "message.handled", duration_ms=round((time.perf_counter() - started) * 1e3, 3)
            )
            return result
