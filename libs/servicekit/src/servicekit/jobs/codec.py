"""Decoding stream entries into typed events, and encoding events as entries."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry import propagate
from pydantic import ValidationError

from contracts import Event
from servicekit.errors import PermanentError
from servicekit.wire import DATA_FIELD, decode_envelope, encode_envelope

__all__ = ["UndecodableEntry", "decode_entry", "encode_event"]

_DATA_KEY = DATA_FIELD.encode()


class UndecodableEntry(PermanentError):  # noqa: N818 - names the entry
    """The entry is not a message this route can read (bad framing, schema or event type)."""


def decode_entry(
    fields: dict[bytes, bytes], accepted: type[Event] | dict[str, type[Event]]
) -> tuple[Event, dict[str, Any]]:
    """Return the typed event and headers of an entry, or raise :class:`UndecodableEntry`.

    ``accepted`` is one event class, or several by type name for a stream carrying a union.
    """
    if isinstance(accepted, type):
        accepted = {accepted.type_name(): accepted}
    data = fields.get(_DATA_KEY)
    if data is None:
        raise UndecodableEntry(f"entry has no {DATA_FIELD} field")
    try:
        document = json.loads(data)
        headers = document["headers"]
        body = document["body"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        try:
            raw, headers = decode_envelope(data)
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UndecodableEntry(f"undecodable entry: {exc}") from exc
    if not isinstance(body, dict):
        raise UndecodableEntry("entry body is not a JSON object")
    declared = headers.get("event_type") or body.get("type")
    if len(accepted) == 1 and declared is None:
        declared = next(iter(accepted))
    event_type = accepted.get(declared) if isinstance(declared, str) else None
    if event_type is None:
        readable = ", ".join(repr(name) for name in accepted)
        raise UndecodableEntry(f"unknown event type {declared!r} (this route reads {readable})")
    expected = declared
    try:
        return event_type.model_validate(body), headers
    except ValidationError as exc:
        raise UndecodableEntry(f"invalid {expected}: {exc.errors(include_url=False)}") from exc


def encode_event(event: Event, *, headers: dict[str, str] | None = None) -> dict[str, bytes]:
    """Encode an event as stream entry fields, capturing the current trace context."""
    all_headers: dict[str, str] = {
        "content-type": "application/json",
        "event_type": event.type,
        "event_id": str(event.event_id),
        "correlation_id": event.correlation_id or str(event.event_id),
    }
    propagate.inject(all_headers)
    if headers:
        all_headers.update(headers)
    return {DATA_FIELD: encode_envelope(event.model_dump_json().encode(), all_headers)}
