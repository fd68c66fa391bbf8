"""What operators and their tools do to a running platform: dead letters and paused groups.

The one module for tools (the operator CLI, the console); services never call it. Dead letters:
list, inspect, redrive, purge. Groups: pause and resume (workers see the flag within seconds).

A dead letter keeps the original entry (its ``__data__`` field, headers included) plus why and
when it failed, and which consumer group failed it. Redrive appends the original payload to the
source stream as a new entry, with headers that link the new attempt's span to the failed one and
a ``for_group`` field naming that group (every other group reading the stream acknowledges the
entry without running it: it has processed it already), then deletes the dead letter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from servicekit.jobs._codec import FOR_GROUP_FIELD
from servicekit.jobs._maintenance import pause_key
from servicekit.keys import StreamKeys
from servicekit.wire import DATA_FIELD, decode_envelope, encode_envelope

__all__ = [
    "DeadLetter",
    "inspect_dead_letter",
    "list_dead_letters",
    "pause_group",
    "purge_dead_letters",
    "redrive_dead_letters",
    "resume_group",
]

_META = (
    "source_stream",
    "source_id",
    "group",
    "consumer",
    "error_class",
    "error_message",
    "attempts",
    "deliveries",
    "first_failed_at",
    "last_failed_at",
    "dead_lettered_at",
    "trace_id",
    "span_id",
)


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered entry."""

    id: str
    stream: str
    data: bytes
    meta: dict[str, str]
    errors: list[dict[str, Any]]

    @property
    def headers(self) -> dict[str, Any]:
        """The original message's headers."""
        return decode_envelope(self.data)[1]

    @property
    def body(self) -> bytes:
        """The original message's body."""
        return decode_envelope(self.data)[0]


def _parse(stream: str, entry_id: Any, fields: Any) -> DeadLetter:
    text = {k.decode(): v for k, v in fields.items()}
    return DeadLetter(
        id=entry_id.decode(),
        stream=stream,
        data=text.get(DATA_FIELD, b""),
        meta={k: text[k].decode() for k in _META if k in text},
        errors=json.loads(text.get("errors", b"[]")),
    )


async def list_dead_letters(
    redis: Redis, keys: StreamKeys, stream: str, *, count: int = 100, start: str = "-"
) -> list[DeadLetter]:
    """Return up to ``count`` dead letters of ``stream``, oldest first."""
    entries: Any = await redis.xrange(keys.dead_letters(stream), min=start, count=count)
    return [_parse(stream, entry_id, fields) for entry_id, fields in entries]


async def inspect_dead_letter(
    redis: Redis, keys: StreamKeys, stream: str, dead_letter_id: str
) -> DeadLetter | None:
    """Return one dead letter, or ``None``."""
    entries: Any = await redis.xrange(keys.dead_letters(stream), dead_letter_id, dead_letter_id)
    return _parse(stream, *entries[0]) if entries else None


async def redrive_dead_letters(
    redis: Redis, keys: StreamKeys, stream: str, ids: Sequence[str] | None = None
) -> list[str]:
    """Put dead letters (all, or ``ids``) back on their source stream; return the new entry ids."""
    letters = (
        [x for x in [await inspect_dead_letter(redis, keys, stream, i) for i in ids] if x]
        if ids is not None
        else await list_dead_letters(redis, keys, stream, count=10_000)
    )
    new_ids: list[str] = []
    for letter in letters:
        body, headers = decode_envelope(letter.data)
        trace_id, span_id = letter.meta.get("trace_id"), letter.meta.get("span_id")
        headers = {**headers, "redriven_from": letter.id}
        if trace_id and span_id:
            headers["failed_traceparent"] = f"00-{trace_id}-{span_id}-01"
        data = encode_envelope(body, {k: str(v) for k, v in headers.items()})
        fields = {DATA_FIELD: data}
        if letter.meta.get("group"):
            fields[FOR_GROUP_FIELD] = letter.meta["group"].encode()
        new_id = await redis.xadd(keys.stream(stream), fields)  # type: ignore[arg-type]
        await redis.xdel(keys.dead_letters(stream), letter.id)  # only once the copy is safe
        new_ids.append(new_id.decode() if isinstance(new_id, bytes) else str(new_id))
    return new_ids


async def purge_dead_letters(
    redis: Redis, keys: StreamKeys, stream: str, ids: Sequence[str] | None = None
) -> int:
    """Delete dead letters (all, or ``ids``); return how many were removed."""
    if ids is None:
        count = int(await redis.xlen(keys.dead_letters(stream)))
        await redis.delete(keys.dead_letters(stream))
        return count
    return int(await redis.xdel(keys.dead_letters(stream), *ids)) if ids else 0


async def pause_group(redis: Redis, keys: StreamKeys, stream: str, group: str) -> None:
    """Pause ``group`` on ``stream``: its workers take no new entries within seconds."""
    await redis.set(pause_key(keys, stream, group), "1")


async def resume_group(redis: Redis, keys: StreamKeys, stream: str, group: str) -> None:
    """Resume a paused group."""
    await redis.delete(pause_key(keys, stream, group))
