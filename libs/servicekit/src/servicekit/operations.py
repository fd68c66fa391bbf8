"""What operators and their tools do to a running platform: groups, dead letters, consumers.

The one module for tools (the operator CLI `jobsctl`, the console); services never call it.
Groups: status (length, lag, pending, oldest pending age, consumers, dead letters, paused), pause
and resume (a worker reads the flags every second: a paused group takes no new entries from then,
at most one blocking read later; what it holds finishes). Dead letters: list with filters,
inspect, redrive (dry run, rate, audit record), purge. Consumers: prune those gone and empty.

A dead letter keeps the original entry (its ``__data__`` field, headers included) plus why and
when it failed, and which consumer group failed it. Redrive appends the original payload to the
source stream as a new entry, with headers that link the new attempt's span to the failed one and
a ``for_group`` field naming that group (every other group reading the stream acknowledges the
entry without running it: it has processed it already), then deletes the dead letter.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis.asyncio import RedisCluster
from redis.exceptions import ResponseError

from servicekit.jobs._codec import FOR_GROUP_FIELD
from servicekit.jobs._delivery import entry_time
from servicekit.jobs._maintenance import pause_key
from servicekit.jobs._scripts import PRUNE_CONSUMER, REDRIVE_DEAD_LETTER
from servicekit.keys import StreamKeys
from servicekit.redis_client import RedisClient
from servicekit.wire import DATA_FIELD, decode_envelope, encode_envelope

__all__ = [
    "AUDIT_STREAM",
    "ConsumerStatus",
    "DeadLetter",
    "DeadLetterFilter",
    "GroupStatus",
    "Redrive",
    "StreamEntry",
    "find_dead_letters",
    "group_status",
    "inspect_dead_letter",
    "list_dead_letters",
    "pause_group",
    "prune_consumers",
    "purge",
    "purge_dead_letters",
    "recent_entries",
    "record_audit",
    "redrive",
    "redrive_dead_letters",
    "resume_group",
]

AUDIT_STREAM = "ops.audit.v1"
"""Where operator actions that change the platform are recorded (who, when, what, how many)."""
_AUDIT_MAX_LENGTH = 100_000

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

    @property
    def dead_lettered_at(self) -> float:
        """When it was dead-lettered (seconds since the epoch), from its id in ``<stream>.dlq``."""
        return entry_time(self.id)


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters an operation takes; every condition given must hold."""

    group: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    """Dead-lettered at or after this (aware) time."""
    until: datetime | None = None
    """Dead-lettered before this (aware) time."""
    ids: frozenset[str] | None = None

    def takes(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` passes the filter."""
        at = letter.dead_lettered_at
        return (
            (self.group is None or letter.meta.get("group") == self.group)
            and (self.error_class is None or letter.meta.get("error_class") == self.error_class)
            and (self.since is None or at >= self.since.timestamp())
            and (self.until is None or at < self.until.timestamp())
            and (self.ids is None or letter.id in self.ids)
        )

    def start_id(self) -> str:
        """The first dead-letter id that can pass (ids are times: a window skips older ones)."""
        return f"{int(self.since.timestamp() * 1000)}-0" if self.since else "-"


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
    redis: RedisClient, keys: StreamKeys, stream: str, *, count: int = 100, start: str = "-"
) -> list[DeadLetter]:
    """Return up to ``count`` dead letters of ``stream``, oldest first."""
    entries: Any = await redis.xrange(keys.dead_letters(stream), min=start, count=count)
    return [_parse(stream, entry_id, fields) for entry_id, fields in entries]


async def inspect_dead_letter(
    redis: RedisClient, keys: StreamKeys, stream: str, dead_letter_id: str
) -> DeadLetter | None:
    """Return one dead letter, or ``None``."""
    entries: Any = await redis.xrange(keys.dead_letters(stream), dead_letter_id, dead_letter_id)
    return _parse(stream, *entries[0]) if entries else None


async def find_dead_letters(
    redis: RedisClient,
    keys: StreamKeys,
    stream: str,
    where: DeadLetterFilter | None = None,
    *,
    limit: int | None = None,
    page: int = 500,
) -> list[DeadLetter]:
    """Return the dead letters of ``stream`` that pass ``where``, oldest first (up to ``limit``)."""
    where = where or DeadLetterFilter()
    found: list[DeadLetter] = []
    start = where.start_id()
    while limit is None or len(found) < limit:
        batch = await list_dead_letters(redis, keys, stream, count=page, start=start)
        found += [letter for letter in batch if where.takes(letter)]
        if len(batch) < page:
            break
        start = f"({batch[-1].id}"  # exclusive: the next page starts after the last one read
    return found if limit is None else found[:limit]


def _redriven_fields(letter: DeadLetter) -> dict[str, bytes]:
    body, headers = decode_envelope(letter.data)
    trace_id, span_id = letter.meta.get("trace_id"), letter.meta.get("span_id")
    headers = {**headers, "redriven_from": letter.id}
    if trace_id and span_id:
        headers["failed_traceparent"] = f"00-{trace_id}-{span_id}-01"
    fields = {DATA_FIELD: encode_envelope(body, {k: str(v) for k, v in headers.items()})}
    if letter.meta.get("group"):
        fields[FOR_GROUP_FIELD] = letter.meta["group"].encode()
    return fields


async def _redrive_one(redis: RedisClient, keys: StreamKeys, letter: DeadLetter) -> str | None:
    """Move one dead letter back to its stream; ``None`` if it was gone (redriven or purged).

    One script copies and deletes (the stream and its dead letters share a hash slot): a crash
    leaves it moved or not, never both, and two operators redriving at once move it once.
    """
    fields = [part for pair in _redriven_fields(letter).items() for part in pair]
    new_id = await redis.register_script(REDRIVE_DEAD_LETTER)(
        keys=[keys.dead_letters(letter.stream), keys.stream(letter.stream)],
        args=[letter.id, *fields],
    )
    return None if new_id is None else _text(new_id)


@dataclass
class Redrive:
    """What one redrive did (or, dry, would do)."""

    stream: str
    matched: list[DeadLetter]
    moved: list[str] = field(default_factory=list)
    """New entry ids on the source stream (empty on a dry run)."""
    dry_run: bool = False


async def redrive(
    redis: RedisClient,
    keys: StreamKeys,
    stream: str,
    where: DeadLetterFilter | None = None,
    *,
    operator: str,
    dry_run: bool = False,
    per_second: float | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_letter: Callable[[DeadLetter, str | None], None] | None = None,
) -> Redrive:
    """Put the dead letters of ``stream`` that pass ``where`` back on it, once each.

    ``per_second`` paces the moves (a redrive of thousands must not flood the consumers), and
    ``progress(done, total)`` is told after each, ``on_letter(letter, new_id)`` too (``new_id``
    is None for a letter gone meanwhile: redriven or purged by someone else). A real redrive
    appends an audit record to :data:`AUDIT_STREAM` (who, when, what, how many); a dry run moves
    and records nothing.
    """
    letters = await find_dead_letters(redis, keys, stream, where, limit=limit)
    result = Redrive(stream, letters, dry_run=dry_run)
    if dry_run:
        return result
    started = time.monotonic()
    for done, letter in enumerate(letters, start=1):
        if per_second:
            delay = started + (done - 1) / per_second - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing, not synchronisation
        new_id = await _redrive_one(redis, keys, letter)
        if new_id is not None:
            result.moved.append(new_id)
        if on_letter is not None:
            on_letter(letter, new_id)
        if progress is not None:
            progress(done, len(letters))
    await record_audit(
        redis, keys, operator=operator, action="dlq.redrive", stream=stream,
        count=len(result.moved), detail=_describe(where),
    )  # fmt: skip
    return result


async def redrive_dead_letters(
    redis: RedisClient, keys: StreamKeys, stream: str, ids: Sequence[str] | None = None
) -> list[str]:
    """Put dead letters (all, or ``ids``) back on their source stream; return the new entry ids.

    No audit record: for code (tests, tools with their own records); operators use :func:`redrive`.
    """
    where = DeadLetterFilter(ids=frozenset(ids)) if ids is not None else None
    letters = await find_dead_letters(redis, keys, stream, where)
    moved = [await _redrive_one(redis, keys, letter) for letter in letters]
    return [new_id for new_id in moved if new_id is not None]


def _describe(where: DeadLetterFilter | None) -> dict[str, str]:
    if where is None:
        return {}
    described = {
        "group": where.group,
        "error_class": where.error_class,
        "since": where.since.isoformat() if where.since else None,
        "until": where.until.isoformat() if where.until else None,
        "ids": ",".join(sorted(where.ids)) if where.ids is not None else None,
    }
    return {k: v for k, v in described.items() if v is not None}


async def record_audit(
    redis: RedisClient,
    keys: StreamKeys,
    *,
    operator: str,
    action: str,
    stream: str | None = None,
    count: int,
    detail: dict[str, str] | None = None,
) -> str:
    """Append an operator action to :data:`AUDIT_STREAM` (bounded); return its entry id."""
    record = {
        "operator": operator,
        "action": action,
        "at": datetime.now().astimezone().isoformat(),
        "count": str(count),
        "stream": stream or "",
        "detail": json.dumps(detail or {}, sort_keys=True),
    }
    entry_id = await redis.xadd(
        keys.stream(AUDIT_STREAM),
        record,  # type: ignore[arg-type]
        maxlen=_AUDIT_MAX_LENGTH,
        approximate=True,
    )
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def purge_dead_letters(
    redis: RedisClient, keys: StreamKeys, stream: str, ids: Sequence[str] | None = None
) -> int:
    """Delete dead letters (all, or ``ids``); return how many were removed."""
    if ids is None:
        count = int(await redis.xlen(keys.dead_letters(stream)))
        await redis.delete(keys.dead_letters(stream))
        return count
    return int(await redis.xdel(keys.dead_letters(stream), *ids)) if ids else 0


async def purge(
    redis: RedisClient,
    keys: StreamKeys,
    stream: str,
    where: DeadLetterFilter | None = None,
    *,
    operator: str,
) -> int:
    """Delete the dead letters of ``stream`` that pass ``where``, with an audit record."""
    ids = [letter.id for letter in await find_dead_letters(redis, keys, stream, where)]
    removed = await purge_dead_letters(redis, keys, stream, ids)
    await record_audit(
        redis, keys, operator=operator, action="dlq.purge", stream=stream, count=removed,
        detail=_describe(where),
    )  # fmt: skip
    return removed


async def pause_group(redis: RedisClient, keys: StreamKeys, stream: str, group: str) -> None:
    """Pause ``group`` on ``stream``: its workers take no new entries within seconds."""
    await redis.set(pause_key(keys, stream, group), "1")


async def resume_group(redis: RedisClient, keys: StreamKeys, stream: str, group: str) -> None:
    """Resume a paused group."""
    await redis.delete(pause_key(keys, stream, group))


@dataclass(frozen=True)
class ConsumerStatus:
    """One consumer of a group, as Redis sees it."""

    name: str
    pending: int
    idle_seconds: float
    """Since its last read or claim."""


@dataclass(frozen=True)
class GroupStatus:
    """One (stream, group) pair: what it holds and how far behind it is."""

    stream: str
    group: str
    exists: bool
    """False when the stream or the group has not been created yet (every figure is then 0)."""
    length: int
    lag: int | None
    """Entries not yet delivered to the group; None when Redis cannot tell (after deletions)."""
    pending: int
    oldest_pending_age_seconds: float | None
    """Age of the oldest delivered, unacknowledged entry (from its id); None when none is."""
    consumers: tuple[ConsumerStatus, ...]
    dead_letters: int
    """Entries in ``<stream>.dlq`` (every group's: the stream's dead letters)."""
    paused: bool


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def group_status(
    redis: RedisClient, keys: StreamKeys, stream: str, group: str
) -> GroupStatus:
    """Return the status of ``group`` on ``stream``, read from XINFO and XPENDING."""
    key = keys.stream(stream)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(key)
        pipe.xlen(keys.dead_letters(stream))
        pipe.exists(pause_key(keys, stream, group))
        if not isinstance(redis, RedisCluster):
            pipe.time()
        length, dead_letters, paused, *clock = await pipe.execute()
    if isinstance(redis, RedisCluster):
        # A cluster pipeline refuses keyless commands: ask the master that wrote the entry ids.
        clock = [await redis.time(target_nodes=redis.get_node_from_key(key))]
    seconds, micros = clock[0]
    now = int(seconds) + int(micros) / 1e6  # Redis's clock, as the entry ids are
    try:
        infos = await redis.xinfo_groups(key)
    except ResponseError:
        infos = []  # no such stream yet
    info = next((i for i in infos if _text(i["name"]) == group), None)
    if info is None:
        return GroupStatus(stream, group, False, int(length), None, 0, None, (), int(dead_letters),
                           bool(paused))  # fmt: skip
    summary = await redis.xpending(key, group)
    oldest = summary.get("min")
    consumers = tuple(
        ConsumerStatus(_text(c["name"]), int(c["pending"]), float(c["idle"]) / 1000)
        for c in await redis.xinfo_consumers(key, group)
    )
    return GroupStatus(
        stream=stream,
        group=group,
        exists=True,
        length=int(length),
        lag=None if info.get("lag") is None else int(info["lag"]),
        pending=int(info["pending"]),
        oldest_pending_age_seconds=max(0.0, now - entry_time(oldest)) if oldest else None,
        consumers=consumers,
        dead_letters=int(dead_letters),
        paused=bool(paused),
    )


async def prune_consumers(
    redis: RedisClient, keys: StreamKeys, stream: str, group: str, *, idle_for: float
) -> list[str]:
    """Delete ``group``'s consumers idle for ``idle_for`` seconds that own no entry.

    Each is checked again inside one script before it is deleted: DELCONSUMER drops the entries
    a consumer owns, so one that read something meanwhile is kept. Returns the names deleted.
    """
    key = keys.stream(stream)
    try:
        consumers = await redis.xinfo_consumers(key, group)
    except ResponseError:
        return []
    script = redis.register_script(PRUNE_CONSUMER)
    pruned = []
    for consumer in consumers:
        name = _text(consumer["name"])
        idle_and_empty = (
            int(consumer["pending"]) == 0 and float(consumer["idle"]) >= idle_for * 1000
        )
        if idle_and_empty and await script(keys=[key], args=[group, name]):
            pruned.append(name)
    return pruned


@dataclass(frozen=True)
class StreamEntry:
    """One entry of a stream, decoded for reading (never for handling: nothing is validated)."""

    id: str
    stream: str
    headers: dict[str, Any]
    body: Any
    """The message body: parsed JSON when it is JSON, else its text."""
    fields: dict[str, str]
    """The entry's other fields (``for_group`` on a redriven entry), beside ``__data__``."""
    problem: str | None = None
    """Why the entry could not be decoded (it is shown raw in ``body``), or None."""

    @property
    def event_type(self) -> str | None:
        """The ``event_type`` header, else the body's ``type``."""
        declared = self.headers.get("event_type")
        if declared is None and isinstance(self.body, dict):
            declared = self.body.get("type")
        return None if declared is None else str(declared)

    @property
    def trace_id(self) -> str | None:
        """The trace id of the entry's ``traceparent`` header."""
        parts = str(self.headers.get("traceparent", "")).split("-")
        return parts[1] if len(parts) >= 4 and len(parts[1]) == 32 else None

    @property
    def added_at(self) -> float:
        """When the entry was added (seconds since the epoch), from its id."""
        return entry_time(self.id)


def _decode_entry(stream: str, entry_id: Any, fields: Any) -> StreamEntry:
    text = {_text(k): v for k, v in fields.items()}
    others = {k: v.decode(errors="replace") for k, v in text.items() if k != DATA_FIELD}
    data = text.get(DATA_FIELD)
    if data is None:
        return StreamEntry(_text(entry_id), stream, {}, None, others, f"no {DATA_FIELD} field")
    raw, headers = decode_envelope(data)
    try:
        body: Any = json.loads(raw)
        problem = None
    except (ValueError, UnicodeDecodeError) as exc:
        body, problem = raw.decode(errors="replace"), f"body is not JSON: {exc}"
    return StreamEntry(_text(entry_id), stream, headers, body, others, problem)


async def recent_entries(
    redis: RedisClient, keys: StreamKeys, stream: str, *, count: int = 20, before: str | None = None
) -> list[StreamEntry]:
    """Return the last ``count`` entries of ``stream`` (before id ``before``), newest first.

    Read with XREVRANGE and decoded from the platform's wire format (headers and JSON body);
    an entry that does not decode is returned with its raw text and the reason.
    """
    end = f"({before}" if before else "+"
    entries: Any = await redis.xrevrange(keys.stream(stream), max=end, min="-", count=count)
    return [_decode_entry(stream, entry_id, fields) for entry_id, fields in entries]
