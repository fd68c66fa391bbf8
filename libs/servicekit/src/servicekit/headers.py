"""The headers of every platform entry, whoever writes it: the runtime, the outbox, FastStream.

One function, so a reader (the runtime's decoder, a non-Python consumer, redis-cli) finds the same
headers on every stream whichever path wrote the entry. It imports no broker: the outbox and the
runtime are on every service's start-up path, and FastStream costs a start about half a second.
"""

from __future__ import annotations

from opentelemetry import propagate

from contracts import Event

__all__ = ["CONTENT_TYPE", "event_headers"]

CONTENT_TYPE = "application/json"
"""Every body is the event's JSON (see :mod:`servicekit.wire`)."""


def event_headers(event: Event) -> dict[str, str]:
    """Headers that let a reader route, dedupe and trace an entry without parsing its body.

    ``content-type``, ``event_type``, ``event_id``, ``correlation_id`` (the event's, else its id),
    and the current W3C trace context (``traceparent``, ``tracestate``) when a span is active, so
    the consumer's span joins the producer's trace.
    """
    headers = {
        "content-type": CONTENT_TYPE,
        "event_type": event.type,
        "event_id": str(event.event_id),
        "correlation_id": event.correlation_id or str(event.event_id),
    }
    propagate.inject(headers)
    return headers
