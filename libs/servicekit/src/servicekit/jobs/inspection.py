"""Read-only inspection: where the runtime holds a job for one consumer group on one stream.

An entry of a job moves forward through four places, and leaves the runtime when acknowledged:

| holding | where |
|---|---|
| ``unread`` | in the stream, after the group's last-delivered id |
| ``pending`` | in the group's pending entries list (being handled, or held by a dead consumer) |
| ``retrying`` | pending, and waiting in the group's retry set for its next attempt |
| ``dead_lettered`` | in ``<stream>.dlq``, recorded for this group (acknowledged in the stream) |

:func:`locate_jobs` looks in that order, so an entry that moves on during the look is still
found in the next place (the runtime writes each place before it leaves the previous one: the
dead letter before the ack). Nothing here writes to Redis. Entries are matched on the ``job_id``
of their body; an entry tagged ``for_group`` with another group is not this group's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.exceptions import ResponseError

from servicekit.jobs._codec import FOR_GROUP_FIELD
from servicekit.keys import StreamKeys
from servicekit.redis_client import RedisClient
from servicekit.wire import DATA_FIELD, decode_envelope

__all__ = [
    "HeldEntry",
    "Holding",
    "dead_lettered_entries",
    "locate_jobs",
    "pending_entries",
    "unread_entries",
]

_DATA = DATA_FIELD.encode()
_FOR_GROUP = FOR_GROUP_FIELD.encode()


class Holding(StrEnum):
    """Where the runtime holds an entry for a group."""

    UNREAD = "unread"
    """In the stream, not yet delivered to the group."""
    PENDING = "pending"
    """Delivered and not acknowledged: running, or held by a consumer that is gone."""
    RETRYING = "retrying"
    """Pending, and waiting in the group's retry set for its next attempt."""
    DEAD_LETTERED = "dead_lettered"
    """Written to the stream's dead letters by this group (and acknowledged)."""


@dataclass(frozen=True, slots=True)
class HeldEntry:
    """One entry of a job that the runtime holds for a group."""

    job_id: str
    stream: str
    """The stream's name in contracts (not its Redis key)."""
    group: str
    entry_id: str
    """The entry's id in the stream, or the dead letter's id in ``<stream>.dlq``."""
    holding: Holding
    reason: str | None = None
    """For a dead letter: ``<error class>: <error message>``, as the lifecycle event says it."""


def job_id_of(fields: dict[bytes, bytes]) -> str | None:
    """Return the ``job_id`` in an entry's body, or ``None`` (not a job, or not decodable)."""
    data = fields.get(_DATA)
    if data is None:
        return None
    try:
        body = json.loads(decode_envelope(data)[0])
    except (ValueError, UnicodeDecodeError):
        return None
    job_id = body.get("job_id") if isinstance(body, dict) else None
    return str(job_id) if job_id is not None else None


def _for_other_group(fields: dict[bytes, bytes], group: str) -> bool:
    target = fields.get(_FOR_GROUP)
    return target is not None and target.decode() != group


async def _last_delivered_id(redis: RedisClient, key: str, group: str) -> str:
    try:
        groups: Any = await redis.xinfo_groups(key)
    except ResponseError:  # no such stream: nothing in it
        return "+"
    for info in groups:
        name = info["name"]
        if (name.decode() if isinstance(name, bytes) else name) == group:
            last = info["last-delivered-id"]
            return str(last.decode() if isinstance(last, bytes) else last)
    # A declared group that is missing is created at id 0 at service start: it will read it all.
    return "0-0"


async def unread_entries(
    redis: RedisClient, keys: StreamKeys, stream: str, group: str, *, page: int = 500
) -> AsyncIterator[HeldEntry]:
    """Yield the job entries of ``stream`` that ``group`` has not been delivered yet.

    A missing group counts as one that will start at id ``0`` (groups are created there).
    """
    key = keys.stream(stream)
    start = await _last_delivered_id(redis, key, group)
    if start == "+":
        return
    async for entry_id, fields in _entries_after(redis, key, f"({start}", page):
        job_id = job_id_of(fields)
        if job_id is not None and not _for_other_group(fields, group):
            yield HeldEntry(job_id, stream, group, entry_id, Holding.UNREAD)


async def pending_entries(
    redis: RedisClient, keys: StreamKeys, stream: str, group: str, *, page: int = 500
) -> AsyncIterator[HeldEntry]:
    """Yield the job entries pending in ``group`` on ``stream``: ``retrying`` or ``pending``."""
    key = keys.stream(stream)
    start = "-"
    while True:
        try:
            rows: Any = await redis.xpending_range(key, group, start, "+", page)
        except ResponseError:  # no such stream or group: nothing pending
            return
        if not rows:
            return
        ids = [row["message_id"].decode() for row in rows]
        async with redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xrange(key, entry_id, entry_id)
                pipe.zscore(keys.retry(stream, group), entry_id)
            replies: list[Any] = await pipe.execute()
        for entry_id, entries, due in zip(ids, replies[::2], replies[1::2], strict=True):
            job_id = job_id_of(entries[0][1]) if entries else None
            if job_id is not None:
                holding = Holding.PENDING if due is None else Holding.RETRYING
                yield HeldEntry(job_id, stream, group, entry_id, holding)
        if len(rows) < page:
            return
        start = f"({ids[-1]}"


async def dead_lettered_entries(
    redis: RedisClient, keys: StreamKeys, stream: str, group: str, *, page: int = 500
) -> AsyncIterator[HeldEntry]:
    """Yield the job entries ``group`` dead-lettered from ``stream``, with the reason."""
    async for entry_id, fields in _entries_after(redis, keys.dead_letters(stream), "-", page):
        recorded = fields.get(b"group")
        job_id = job_id_of(fields)
        if job_id is None or (recorded is not None and recorded.decode() != group):
            continue
        reason = (
            f"{fields.get(b'error_class', b'').decode()}: "
            f"{fields.get(b'error_message', b'').decode()}"
        )
        yield HeldEntry(job_id, stream, group, entry_id, Holding.DEAD_LETTERED, reason)


async def _entries_after(
    redis: RedisClient, key: str, start: str, page: int
) -> AsyncIterator[tuple[str, dict[bytes, bytes]]]:
    """Every entry of ``key`` from ``start`` on, read ``page`` at a time."""
    while True:
        entries: Any = await redis.xrange(key, min=start, max="+", count=page)
        for entry_id, fields in entries:
            yield entry_id.decode(), fields
        if len(entries) < page:
            return
        start = f"({entries[-1][0].decode()}"


async def locate_jobs(
    redis: RedisClient,
    keys: StreamKeys,
    stream: str,
    group: str,
    job_ids: Collection[str],
    *,
    page: int = 500,
) -> dict[str, HeldEntry]:
    """Return where ``group`` holds each of ``job_ids`` on ``stream``; absent ids are not held.

    Looks unread, then pending (and retrying), then dead-lettered, and stops early once every id
    was found. The first place found wins: an entry held live and also dead-lettered (redriven)
    is reported live. Cost: one pass over the group's unread entries, pending list and dead
    letters of the stream, ``page`` entries a round trip.
    """
    wanted = {str(job_id) for job_id in job_ids}
    found: dict[str, HeldEntry] = {}
    for scan in (unread_entries, pending_entries, dead_lettered_entries):
        if not wanted - found.keys():
            break
        async for held in scan(redis, keys, stream, group, page=page):
            if held.job_id in wanted and held.job_id not in found:
                found[held.job_id] = held
    return found
