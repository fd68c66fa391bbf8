"""Batched writes of the consumer: acknowledgements, lifecycle events and dead letters.

Successful entries are acknowledged in batches: one pipeline carries every XACK and lifecycle XADD
gathered since the last flush. It is flushed before each read and by a timer, so a burst pays one
round trip per batch instead of one per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from redis.exceptions import RedisError

from servicekit.jobs._delivery import AttemptHistory, Delivery
from servicekit.redis_client import RedisClient, is_cluster

__all__ = ["Outbound"]

_log = structlog.stdlib.get_logger("servicekit.jobs")


class Outbound:
    """Buffers acks and lifecycle entries; writes dead letters at once."""

    def __init__(self, redis: RedisClient, *, flush_interval: float = 0.01) -> None:
        self.redis = redis
        self.flush_interval = flush_interval
        self._acks: dict[tuple[str, str], list[bytes]] = {}
        self._clear: dict[str, list[bytes]] = {}
        self._unschedule: dict[str, list[bytes]] = {}
        self._entries: list[tuple[str, dict[str, bytes]]] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    def ack(
        self,
        stream_key: str,
        group: str,
        entry_id: bytes,
        *,
        clear_history: bool,
        attempts_key: str,
    ) -> None:
        """Queue an acknowledgement (and removal of the entry's failure history)."""
        self._acks.setdefault((stream_key, group), []).append(entry_id)
        if clear_history:
            self._clear.setdefault(attempts_key, []).append(entry_id)
        self._wake.set()

    def add_entry(self, stream_key: str, fields: dict[str, bytes]) -> None:
        """Queue an XADD (a lifecycle event) for the next flush."""
        self._entries.append((stream_key, fields))
        self._wake.set()

    @property
    def pending(self) -> int:
        """Buffered writes not yet sent."""
        return sum(len(v) for v in self._acks.values()) + len(self._entries)

    async def flush(self) -> None:
        """Send everything buffered in one pipeline; on return, what the caller buffered is sent.

        With nothing buffered it still waits for a flush in flight: that one may have taken the
        caller's writes (a dead letter's XACK) and not yet sent them.
        """
        if not (self._acks or self._entries) and not self._lock.locked():
            return
        async with self._lock:
            acks, clear, entries = self._acks, self._clear, self._entries
            unschedule = self._unschedule
            self._acks, self._clear, self._entries, self._unschedule = {}, {}, [], {}
            if not (acks or entries):
                return
            try:
                if entries and is_cluster(self.redis):
                    # A cluster pipeline sends each node its share at once, in no order across
                    # nodes, and the lifecycle stream has a slot of its own: the entries go in a
                    # round trip of their own first, so an ack never lands without its event.
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for key, fields in entries:
                            pipe.xadd(key, fields)  # type: ignore[arg-type]
                        await pipe.execute()
                    entries = []
                async with self.redis.pipeline(transaction=False) as pipe:
                    # Lifecycle entries first: a "succeeded" event is never lost behind its ack.
                    for key, fields in entries:
                        pipe.xadd(key, fields)  # type: ignore[arg-type]
                    for (key, group), ids in acks.items():
                        pipe.xack(key, group, *ids)
                    for key, ids in clear.items():
                        pipe.hdel(key, *ids)
                    for key, ids in unschedule.items():
                        pipe.zrem(key, *ids)
                    await pipe.execute()
            except BaseException:
                # Put them back: unacknowledged entries would otherwise wait for a reclaim.
                for pair, ids in acks.items():
                    self._acks.setdefault(pair, []).extend(ids)
                for key, ids in clear.items():
                    self._clear.setdefault(key, []).extend(ids)
                for key, ids in unschedule.items():
                    self._unschedule.setdefault(key, []).extend(ids)
                self._entries[:0] = entries
                raise

    async def run(self, stop: asyncio.Event) -> None:
        """Flush on a short timer until ``stop``; then flush what is left."""
        while not stop.is_set():
            self._wake.clear()
            if self.pending:
                try:
                    await self.flush()
                except (RedisError, OSError) as exc:
                    _log.warning("jobs.flush_failed", error=repr(exc))
                    await asyncio.sleep(0.5)
                await asyncio.sleep(self.flush_interval)
                continue
            waiter = asyncio.create_task(self._wake.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            await asyncio.sleep(self.flush_interval)
        with contextlib.suppress(Exception):
            await self.flush()

    async def dead_letter(
        self,
        delivery: Delivery,
        *,
        group: str,
        consumer: str,
        history: AttemptHistory,
        trace_id: str,
        span_id: str,
        dead_letters_key: str,
        retry_key: str,
        attempts_key: str,
        announce: Callable[[str], tuple[str, dict[str, bytes]] | None] = lambda _: None,
    ) -> str:
        """Write the entry to its dead-letter stream, then acknowledge it; return the DLQ id.

        Two steps, the acknowledgement only after Redis accepted the dead letter (a refused XADD,
        e.g. out of memory, must not be followed by an XACK). If the process dies between them the
        entry is redelivered and dead-lettered again: a duplicate dead letter, never a loss.
        The second step is one pipeline: the lifecycle entry ``announce`` builds from the dead
        letter's id first, then the XACK and cleanup, as on the success path, so a job is never
        acknowledged without its final status.
        """
        last = history.errors[-1] if history.errors else {}
        fields: dict[str, str | bytes] = {
            **{k.decode(errors="backslashreplace"): v for k, v in delivery.fields.items()},
            "source_stream": delivery.stream,
            "source_id": delivery.entry_id.decode(),
            "group": group,
            "consumer": consumer,
            "error_class": str(last.get("error_class", "")),
            "error_message": str(last.get("error_message", "")),
            "attempts": str(history.failures),
            "deliveries": str(delivery.deliveries),
            "first_failed_at": history.first_failed_at or "",
            "last_failed_at": history.last_failed_at or "",
            "dead_lettered_at": datetime.now(UTC).isoformat(),
            "errors": json.dumps(history.errors),
            "trace_id": trace_id,
            "span_id": span_id,
        }
        added = await self.redis.xadd(dead_letters_key, fields)  # type: ignore[arg-type]
        dead_letter_id = added.decode() if isinstance(added, bytes) else str(added)
        lifecycle_entry = announce(dead_letter_id)
        if lifecycle_entry is not None:
            self._entries.append(lifecycle_entry)
        self._acks.setdefault((delivery.stream_key, group), []).append(delivery.entry_id)
        self._clear.setdefault(attempts_key, []).append(delivery.entry_id)
        self._unschedule.setdefault(retry_key, []).append(delivery.entry_id)
        await self.flush()  # with what is buffered: the attempt's "started" precedes "dead"
        return dead_letter_id
