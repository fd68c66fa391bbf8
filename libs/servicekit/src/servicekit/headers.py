"""The headers every platform entry carries, whoever writes it (outbox relay, FastStream)."""

from __future__ import annotations

from contracts import Event

__all__ = ["event_headers"]


def event_headers(event: Event) -> dict[str, str]:
    """Headers that let a reader route and dedupe an entry without parsing its body."""
    return {"event_type": event.type, "event_id": str(event.event_id)}
