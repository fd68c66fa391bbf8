"""Decoding stream entries into typed events, and encoding events as entries."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from pydantic import BaseModel, ValidationError

from contracts import Event
from servicekit.errors import PermanentError
from servicekit.headers import event_headers
from servicekit.wire import DATA_FIELD, decode_envelope, encode_envelope

__all__ = [
    "FOR_GROUP_FIELD",
    "EntryDecoder",
    "UndecodableEntry",
    "decode_entry",
    "encode_event",
    "parent_context",
]

_DATA_KEY = DATA_FIELD.encode()

FOR_GROUP_FIELD = "for_group"
"""An entry field naming the one consumer group the entry is for (a redrive, a migrated entry).

Every other group reading the stream acknowledges the entry without running it. It is a plain
stream field, beside ``__data__``, so it is checked before decoding and readable with redis-cli.
"""


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
    try:
        return _decode(fields, accepted)
    except UndecodableEntry:
        raise
    except Exception as exc:  # any other surprise in a foreign entry is still a poison entry
        raise UndecodableEntry(f"undecodable entry: {type(exc).__name__}: {exc}") from exc


def _decode(
    fields: dict[bytes, bytes], accepted: dict[str, type[Event]]
) -> tuple[Event, dict[str, Any]]:
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
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise UndecodableEntry("entry headers are not an object of strings")
    declared = headers.get("event_type") or body.get("type")
    if len(accepted) == 1 and declared is None:
        declared = next(iter(accepted))
    event_type = accepted.get(declared) if isinstance(declared, str) else None
    if event_type is None:
        readable = ", ".join(repr(name) for name in accepted)
        raise UndecodableEntry(f"unknown event type {declared!r} (this route reads {readable})")
    try:
        return event_type.model_validate(body), headers
    except ValidationError as exc:
        raise UndecodableEntry(f"invalid {declared}: {exc.errors(include_url=False)}") from exc


class EntryDecoder:
    """Decodes a route's entries: one pydantic pass for the common case, precise errors else.

    The fast path validates the whole ``{"headers", "body"}`` document against the route's event
    class in one ``model_validate_json`` call; anything it rejects goes through
    :func:`decode_entry`, which says exactly why.
    """

    def __init__(self, accepted: dict[str, type[Event]]) -> None:
        self.accepted = accepted
        self._envelope: type[BaseModel] | None = None
        if len(accepted) == 1:
            (event_type,) = accepted.values()

            class _Envelope(BaseModel):
                headers: dict[str, str] = {}
                body: event_type  # type: ignore[valid-type]

            self._envelope = _Envelope

    def __call__(self, fields: dict[bytes, bytes]) -> tuple[Event, dict[str, Any]]:
        """Return the typed event and headers, or raise :class:`UndecodableEntry`."""
        if self._envelope is not None:
            data = fields.get(_DATA_KEY)
            if data is not None:
                try:
                    document = self._envelope.model_validate_json(data)
                except ValueError:
                    pass
                else:
                    return document.body, document.headers  # type: ignore[attr-defined]
        return decode_entry(fields, self.accepted)


def parent_context(traceparent: str | None) -> Context | None:
    """Return the remote parent context of a W3C ``traceparent`` (``None`` if absent/invalid).

    Parsed directly: it is the only header the runtime propagates, and the generic propagator
    costs several times more per message.
    """
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        span_context = SpanContext(
            trace_id=int(parts[1], 16),
            span_id=int(parts[2], 16),
            is_remote=True,
            trace_flags=TraceFlags(int(parts[3][:2], 16)),
        )
    except ValueError:
        return None
    if not span_context.is_valid:
        return None
    return set_span_in_context(NonRecordingSpan(span_context))


def encode_event(event: Event, *, headers: dict[str, str] | None = None) -> dict[str, bytes]:
    """Encode an event as stream entry fields, capturing the current trace context.

    The headers are :func:`servicekit.headers.event_headers`, plus ``headers`` over them.
    """
    all_headers = event_headers(event)
    if headers:
        all_headers.update(headers)
    return {DATA_FIELD: encode_envelope(event.model_dump_json().encode(), all_headers)}
