"""Redis dedupe for handlers without a database: remember finished events for a window.

The key is written only *after* the effect succeeded. The system this replaces set it before
running the effect, so a failed first attempt made its retry look like a duplicate and the work
was silently lost. The price of marking afterwards: if the process dies between the effect and the
mark, a redelivery runs the effect again, so the effect must tolerate a rare repeat. Handlers whose
effect lives in PostgreSQL use the inbox (:mod:`servicekit.transactional`) instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Literal, TypeVar
from uuid import UUID

from redis.exceptions import RedisError

from servicekit.errors import TransientError
from servicekit.keys import StreamKeys
from servicekit.logs import get_logger
from servicekit.redis_client import RedisClient

__all__ = ["FailMode", "RedisDedupe"]

T = TypeVar("T")
FailMode = Literal["closed", "open"]
"""What to do when Redis is unreachable: raise ``TransientError`` or run the effect anyway."""

_log = get_logger("servicekit.dedupe")
_UNREACHABLE = (RedisError, OSError)


class RedisDedupe:
    """Per-group record of processed event ids in Redis, with a TTL (the dedupe window).

    ``fail_mode="closed"`` (the default) raises :class:`~servicekit.errors.TransientError` when
    Redis cannot answer, so the runtime retries later; ``"open"`` logs a warning and lets the
    effect run, accepting a possible repeat.
    """

    def __init__(
        self,
        redis: RedisClient,
        keys: StreamKeys,
        group: str,
        *,
        ttl: timedelta = timedelta(days=7),
        fail_mode: FailMode = "closed",
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._group = group
        self._ttl = ttl
        self._fail_mode = fail_mode

    def key(self, event_id: UUID | str) -> str:
        """Return the Redis key recording that ``event_id`` was processed by this group."""
        return f"{self._keys.prefix}dedupe:{self._group}:{event_id}"

    async def already_done(self, event_id: UUID | str) -> bool:
        """Return True if this group finished ``event_id`` within the window."""
        try:
            return bool(await self._redis.exists(self.key(event_id)))
        except _UNREACHABLE as exc:
            self._unreachable(exc, "dedupe.check_failed", event_id)
            return False

    async def mark_done(self, event_id: UUID | str) -> None:
        """Record that this group finished ``event_id``; call it only after the effect succeeded."""
        try:
            await self._redis.set(self.key(event_id), b"1", ex=self._ttl)
        except _UNREACHABLE as exc:
            self._unreachable(exc, "dedupe.mark_failed", event_id)

    async def run_once(self, event_id: UUID | str, effect: Callable[[], Awaitable[T]]) -> T | None:
        """Run ``effect`` unless ``event_id`` is already done; mark it done after success.

        Returns the effect's result, or None when the event was skipped as a duplicate. An effect
        that raises leaves no mark, so the retry runs it again. If marking fails after the effect
        succeeded, the failure is logged and the result returned: raising would make the runtime
        retry and so repeat the effect for certain.
        """
        if await self.already_done(event_id):
            _log.info("dedupe.duplicate_skipped", group=self._group, event_id=str(event_id))
            return None
        result = await effect()
        try:
            await self.mark_done(event_id)
        except TransientError as exc:
            _log.error(
                "dedupe.mark_failed", group=self._group, event_id=str(event_id), error=str(exc)
            )
        return result

    def _unreachable(self, exc: BaseException, event: str, event_id: UUID | str) -> None:
        if self._fail_mode == "closed":
            raise TransientError(f"dedupe store unreachable: {exc!r}") from exc
        _log.warning(
            event, group=self._group, event_id=str(event_id), error=repr(exc), fail_mode="open"
        )
