"""Stream upkeep shared by replicas: health gauges, safe trimming, pause flags, dead consumers.

Trimming never removes an entry some group has not processed: the cut-off is the oldest id that is
still pending or not yet delivered, across every group of the stream (and nothing is trimmed while
a group the platform declares for the stream does not exist yet). Streams no group reads
(``schedules.fired.v1``, audit streams) are trimmed by age and length instead.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import structlog
from redis.exceptions import ResponseError

from servicekit.jobs._delivery import entry_time
from servicekit.jobs._metrics import JobMetrics
from servicekit.jobs._scripts import PRUNE_CONSUMER
from servicekit.keys import StreamKeys
from servicekit.redis_client import RedisClient

__all__ = ["RetentionPolicy", "StreamMaintenance", "pause_key", "safe_trim_id"]

_log = structlog.stdlib.get_logger("servicekit.jobs")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long processed entries are kept (0 trims them as soon as every group is done)."""

    processed_for: float = 24 * 3600.0
    dead_letters_for: float = 14 * 24 * 3600.0
    prune_consumers_after: float = 3600.0
    unread_for: float = 7 * 24 * 3600.0
    """Age after which entries of a stream no group reads are trimmed."""
    unread_max_length: int = 100_000
    """Entries kept at most in a stream no group reads (the newest)."""


def pause_key(keys: StreamKeys, stream: str, group: str) -> str:
    """The flag that pauses ``group`` on ``stream`` while it exists."""
    return keys.paused(stream, group)


def _next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def safe_trim_id(
    groups: Iterable[dict[str, object]], pending_min: dict[str, str | None]
) -> str | None:
    """Return the lowest id some group still needs (``None``: keep everything).

    For each group that is the oldest pending id, or else the id after its last delivered one.
    """
    candidates: list[str] = []
    for info in groups:
        name = _text(info["name"])
        oldest = pending_min.get(name)
        candidates.append(oldest if oldest else _next_id(_text(info["last-delivered-id"])))
    if not candidates:
        return None
    return min(candidates, key=_id_key)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class StreamMaintenance:
    """Samples and maintains the streams one worker consumes."""

    def __init__(
        self,
        redis: RedisClient,
        keys: StreamKeys,
        metrics: JobMetrics,
        *,
        streams: dict[str, set[str]],
        required_groups: dict[str, set[str]] | None = None,
        retention: RetentionPolicy | None = None,
        unread_streams: Collection[str] = (),
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.metrics = metrics
        self.streams = streams  # contracts stream name -> groups this worker consumes it with
        self.required_groups = required_groups or {}
        self.retention = retention or RetentionPolicy()
        self.unread_streams = tuple(unread_streams)  # no group of the platform reads these
        self._prune = redis.register_script(PRUNE_CONSUMER)

    def pairs(self) -> list[tuple[str, str]]:
        """Return every (stream, group) this worker consumes."""
        return [(s, g) for s, groups in self.streams.items() for g in groups]

    async def paused(self) -> set[tuple[str, str]]:
        """Return the (stream, group) pairs whose pause flag is set."""
        pairs = self.pairs()
        if not pairs:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, group in pairs:
                pipe.exists(pause_key(self.keys, stream, group))
            flags = await pipe.execute()
        return {pair for pair, flag in zip(pairs, flags, strict=True) if flag}

    async def missing_groups(self) -> list[str]:
        """Return ``stream/group`` for each consumed group that no longer exists."""
        missing = []
        for stream, groups in self.streams.items():
            try:
                infos = await self.redis.xinfo_groups(self.keys.stream(stream))
            except ResponseError as exc:
                if "no such key" not in str(exc).lower():
                    continue  # a failover hiccup (MASTERDOWN, BUSY …) is not a lost group
                infos = []
            present = {_text(i["name"]) for i in infos}
            missing += [f"{stream}/{g}" for g in sorted(groups - present)]
        return missing

    async def sample(self) -> None:
        """Update the stream health gauges from Redis."""
        now = time.time()
        for stream, groups in self.streams.items():
            key = self.keys.stream(stream)
            self.metrics.stream_length.labels(stream).set(await self.redis.xlen(key))
            self.metrics.dead_letters.labels(stream).set(
                await self.redis.xlen(self.keys.dead_letters(stream))
            )
            try:
                infos = await self.redis.xinfo_groups(key)
            except ResponseError:
                continue
            for info in infos:
                group = _text(info["name"])
                if group not in groups:
                    continue
                lag = info.get("lag")
                # Redis reports lag as unknown (nil) after some deletions: say so, do not show 0.
                lag_value = float(lag) if lag is not None else float("nan")
                self.metrics.group_lag.labels(stream, group).set(lag_value)
                self.metrics.pending.labels(stream, group).set(float(info["pending"]))
                summary = await self.redis.xpending(key, group)
                oldest = summary.get("min")
                age = now - entry_time(oldest) if oldest else 0.0
                self.metrics.oldest_pending_age.labels(stream, group).set(max(0.0, age))
                for consumer in await self.redis.xinfo_consumers(key, group):
                    self.metrics.consumer_idle.labels(stream, group, _text(consumer["name"])).set(
                        float(consumer["idle"]) / 1000
                    )

    async def trim(self, stream: str) -> int:
        """Trim processed entries older than the retention; return how many were removed."""
        key = self.keys.stream(stream)
        try:
            infos = await self.redis.xinfo_groups(key)
        except ResponseError:
            return 0
        present = {_text(i["name"]) for i in infos}
        if not self.required_groups.get(stream, set()) <= present:
            return 0  # a declared group has not been created yet: it needs every entry
        pending_min: dict[str, str | None] = {}
        for info in infos:
            if int(info["pending"]) > 0:
                summary = await self.redis.xpending(key, _text(info["name"]))
                if summary.get("min"):
                    pending_min[_text(info["name"])] = _text(summary["min"])
        needed = safe_trim_id(infos, pending_min)
        cutoff_ms = int((time.time() - self.retention.processed_for) * 1000)
        cutoff = f"{cutoff_ms}-0"
        min_id = cutoff if needed is None or _id_key(cutoff) < _id_key(needed) else needed
        removed = int(await self.redis.xtrim(key, minid=min_id, approximate=False))
        dlq_cutoff = int((time.time() - self.retention.dead_letters_for) * 1000)
        await self.redis.xtrim(self.keys.dead_letters(stream), minid=f"{dlq_cutoff}-0")
        return removed

    async def trim_unread(self, stream: str) -> int:
        """Trim a stream no group reads by age and length; return how many entries were removed.

        Entries older than ``unread_for`` go, then the oldest beyond ``unread_max_length``. If some
        group does read it after all (an operator's), the safe trim applies instead.
        """
        key = self.keys.stream(stream)
        try:
            infos = await self.redis.xinfo_groups(key)
        except ResponseError:
            return 0  # no such stream yet
        if infos:
            return await self.trim(stream)
        cutoff_ms = int((time.time() - self.retention.unread_for) * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xtrim(key, minid=f"{cutoff_ms}-0", approximate=False)
            pipe.xtrim(key, maxlen=self.retention.unread_max_length, approximate=False)
            by_age, by_length = await pipe.execute()
        return int(by_age) + int(by_length)

    async def prune_consumers(self) -> int:
        """Delete consumers that own nothing and have been idle past the prune threshold."""
        pruned = 0
        limit_ms = self.retention.prune_consumers_after * 1000
        for stream, groups in self.streams.items():
            key = self.keys.stream(stream)
            for group in groups:
                try:
                    consumers = await self.redis.xinfo_consumers(key, group)
                except ResponseError:
                    continue
                for consumer in consumers:
                    name = _text(consumer["name"])
                    idle_and_empty = (
                        int(consumer["pending"]) == 0 and float(consumer["idle"]) > limit_ms
                    )
                    # The script re-checks atomically: DELCONSUMER drops entries just read.
                    if idle_and_empty and await self._prune(keys=[key], args=[group, name]):
                        pruned += 1
                        with contextlib.suppress(KeyError):
                            self.metrics.consumer_idle.remove(stream, group, name)
        return pruned
