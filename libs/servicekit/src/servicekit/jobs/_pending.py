"""Entries that are already pending: due retries, idle reclaims, leases, release on shutdown.

A consumer holds entries it read (queued or running). This module keeps their leases alive, takes
over the entries of dead consumers after the visibility timeout, claims retries when they are due,
drains a restarted consumer's own entries first, and releases what it will not finish. Claims are
the Lua scripts of :mod:`servicekit.jobs._scripts`, so racing consumers never both take an entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from servicekit.jobs._delivery import AttemptHistory, Delivery
from servicekit.jobs._scripts import CLAIM_DUE, CLAIM_OWN, RECLAIM_IDLE, SET_IDLE
from servicekit.keys import StreamKeys
from servicekit.redis_client import RedisClient

__all__ = ["PendingEntries", "first_of", "is_group_loss"]

_log = structlog.stdlib.get_logger("servicekit.jobs")
_RELEASED_IDLE_MS = 10 * 24 * 3600 * 1000


def is_group_loss(exc: ResponseError) -> bool:
    """Whether Redis says the consumer group or its stream is gone."""
    text = str(exc)
    return "NOGROUP" in text or "no longer exists" in text


async def first_of(*awaitables: Any) -> None:
    """Wait until the first of ``awaitables`` completes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


class PendingEntries:
    """Claims, leases and releases pending entries for one consumer of one route."""

    def __init__(
        self,
        redis: RedisClient,
        keys: StreamKeys,
        *,
        group: str,
        consumer: str,
        streams: list[tuple[str, str, int]],
        visibility_timeout: float,
        held: dict[tuple[str, bytes], Delivery],
        put: Callable[[Delivery], int],
        room: Callable[[], int],
        paused: Callable[[], set[str]],
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.streams = streams
        self._visibility = visibility_timeout
        self._held = held
        self._put = put
        self._room = room
        self._paused = paused
        # The entries a previous incarnation of this consumer (same name) left pending, in id
        # order, taken once at start: walking this snapshot, rather than asking Redis again, never
        # re-queues an entry this incarnation already ran and whose ack is still buffered.
        self._own: dict[str, dict[bytes, None]] = {}
        self._own_pending_left = False
        # Held while claiming: the drain takes it to know no claim is under way once it stops.
        self._claiming = asyncio.Lock()
        self._claims_stopped = False
        self._claim_own = redis.register_script(CLAIM_OWN)
        self._claim_due = redis.register_script(CLAIM_DUE)
        self._reclaim = redis.register_script(RECLAIM_IDLE)
        self._set_idle = redis.register_script(SET_IDLE)

    @property
    def paused(self) -> set[str]:
        """Stream keys of this route that are paused now."""
        return self._paused()

    def script_keys(self, key: str, name: str) -> list[str]:
        """The stream and this group's companion keys its Lua scripts touch (one hash slot)."""
        group = self.group
        return [key, self.keys.retry(name, group), self.keys.attempts(name, group)]

    async def snapshot_own(self, page: int = 1000) -> None:
        """Record the ids still pending on this consumer's name (a previous incarnation's)."""
        for key, _, _ in self.streams:
            ids: dict[bytes, None] = {}
            start = "-"
            while True:
                rows: Any = await self.redis.xpending_range(
                    key, self.group, start, "+", page, self.consumer
                )
                ids.update((row["message_id"], None) for row in rows)
                if len(rows) < page:
                    break
                start = "(" + rows[-1]["message_id"].decode()
            if ids:
                self._own[key] = ids
        self._own_pending_left = bool(self._own)

    async def enqueue_own(self) -> None:
        """Queue the next entries of the start-up snapshot, as room allows.

        Each snapshot id is offered once; ids this consumer holds already, or took meanwhile by
        another claim, are skipped, and only entries the claim script accepted are counted.
        """
        for key, name, _ in self.streams:
            own = self._own.get(key)
            room = self._room()
            if not own or room <= 0:
                continue
            batch: list[bytes] = []
            while own and len(batch) < room:
                entry_id = next(iter(own))
                del own[entry_id]
                if (key, entry_id) not in self._held:
                    batch.append(entry_id)
            if batch:
                replies = await self._claim_own(
                    keys=self.script_keys(key, name), args=[self.group, self.consumer, *batch]
                )
                self._enqueue_claimed(key, name, replies)
        self._own = {key: ids for key, ids in self._own.items() if ids}
        self._own_pending_left = bool(self._own)

    def _enqueue_claimed(self, key: str, name: str, replies: Any) -> int:
        own = self._own.get(key)
        for entry_id, flat_fields, history, deliveries in replies or ():
            if own:
                own.pop(entry_id, None)  # taken by another claim: the snapshot walk skips it
            fields = dict(zip(flat_fields[::2], flat_fields[1::2], strict=True))
            self._put(
                Delivery(
                    key, name, entry_id, fields, int(deliveries), AttemptHistory.from_json(history)
                )
            )
        return len(replies or ())

    async def run(self, stop: asyncio.Event, drained: asyncio.Event) -> None:
        """Claim due retries often, reclaim idle entries, and keep the leases of held entries.

        After ``stop`` it only keeps leases alive, until the drain is over.
        """
        reclaim_every = max(0.2, min(5.0, self._visibility / 4))
        last_reclaim = 0.0
        failures = 0
        while not drained.is_set():
            try:
                await self._extend_leases()
                async with self._claiming:
                    if not stop.is_set() and not self._claims_stopped:
                        if self._own_pending_left:
                            await self.enqueue_own()
                        await self._claim_due_retries()
                        if time.monotonic() - last_reclaim >= reclaim_every:
                            last_reclaim = time.monotonic()
                            await self._reclaim_idle()
                failures = 0
            except ResponseError as exc:
                if is_group_loss(exc):
                    return  # the fetch loop and the maintenance check report it
                failures += 1
                _log.warning("jobs.housekeeping_failed", error=repr(exc))
            except (RedisError, OSError) as exc:
                failures += 1
                _log.warning("jobs.housekeeping_failed", error=repr(exc))
            pause = 0.1 if not failures else min(5.0, 0.1 * 2**failures)
            await first_of(drained.wait(), asyncio.sleep(pause))

    async def stop_claiming(self) -> None:
        """Return once no claim is under way and none will start (the drain is beginning)."""
        async with self._claiming:
            self._claims_stopped = True

    async def _claim_due_retries(self) -> None:
        await self._claim_from_each_stream(self._claim_due, lambda room: [room])

    async def _reclaim_idle(self) -> None:
        min_idle = int(self._visibility * 1000)
        # Scan more than we claim: entries parked in the retry set must not hide a dead
        # consumer's entries behind them.
        reclaimed = await self._claim_from_each_stream(
            self._reclaim, lambda room: [min_idle, room * 4 + 16, room]
        )
        if reclaimed:
            _log.info("jobs.reclaimed", group=self.group, count=reclaimed)

    async def _claim_from_each_stream(
        self, script: AsyncScript, args_for_room: Callable[[int], list[str | int]]
    ) -> int:
        """Run a claim script on each unpaused stream while there is room; return claims."""
        claimed = 0
        for key, name, _ in self.streams:
            room = self._room()
            if room <= 0:
                break
            if key in self.paused:
                continue
            replies = await script(
                keys=self.script_keys(key, name),
                args=[self.group, self.consumer, *args_for_room(room)],
            )
            claimed += self._enqueue_claimed(key, name, replies)
        return claimed

    async def _extend_leases(self) -> None:
        """Reset the idle time of every held entry (queued or running) older than a third of v."""
        threshold = time.monotonic() - self._visibility / 3
        by_stream: dict[str, list[bytes]] = {}
        stale = [d for d in list(self._held.values()) if d.leased_at < threshold]
        for delivery in stale:
            by_stream.setdefault(delivery.stream_key, []).append(delivery.entry_id)
        for key, ids in by_stream.items():
            await self._set_idle(keys=[key], args=[self.group, self.consumer, 0, *ids])
        now = time.monotonic()
        for delivery in stale:
            delivery.leased_at = now

    async def release(self, deliveries: list[Delivery]) -> None:
        """Make entries we will not finish immediately reclaimable by other consumers."""
        by_stream: dict[str, list[bytes]] = {}
        for delivery in deliveries:
            by_stream.setdefault(delivery.stream_key, []).append(delivery.entry_id)
        for key, ids in by_stream.items():
            with contextlib.suppress(Exception):
                await self._set_idle(
                    keys=[key], args=[self.group, self.consumer, _RELEASED_IDLE_MS, *ids]
                )
