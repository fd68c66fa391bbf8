"""The headers of every platform entry, whoever writes it: the runtime, the outbox, FastStream.

One function, so a reader (the runtime's decoder, a non-Python consumer, redis-cli) finds the same
headers on every stream whichever path wrote the entry. It imports no broker: the outbox and the
runtime are on every service's start-up path, and FastStream costs a start about half a second.
"""

from __future__ import annotations

from opentelemetry import propagate

from contracts import Event

__all__ = ["CONTENT_TYPE", "LINK_TRACEPARENT", "event_headers", "linked_event_headers"]

CONTENT_TYPE = "application/json"
"""Every body is the event's JSON (see :mod:`servicekit.wire`)."""

LINK_TRACEPARENT = "link_traceparent"
"""A header naming a span the entry's consumer *links* to instead of continuing its trace.

A fan-out writes it on each of its (possibly thousands of) children: each child is then a small
trace of its own that links back to the span that created it, instead of all of them filling one
trace (docs/async-jobs.md, "Tracing rule").
"""


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


def linked_event_headers(event: Event) -> dict[str, str]:
    """Like :func:`event_headers`, but the current span is a link, not the consumer's parent.

    The entry carries no ``traceparent``: its consumer starts a trace of its own, with a span link
    to the current span (``link_traceparent``).
    """
    headers = event_headers(event)
    headers.pop("tracestate", None)
    parent = headers.pop("traceparent", None)
    if parent is not None:
        headers[LINK_TRACEPARENT] = parent
    return headers
