"""Per-key token buckets (GCRA) in Redis, with an in-process fallback while Redis is down.

GCRA (the generic cell rate algorithm) is a token bucket kept as one number per bucket, the
"theoretical arrival time" (TAT) of the next request: a request is allowed while TAT is at most
``burst`` intervals ahead of now, and each allowed request moves TAT one interval on. One Lua
script reads and moves it atomically, on Redis's clock (so processes with skewed clocks share one
bucket), in one round trip, and the key expires when the bucket is full again.

Chosen over the `limits` library: it has fixed, moving and sliding windows but no token bucket, a
hit plus its remaining quota are two round trips there, and a window allows twice the rate across
its boundary. redis-cell and `throttled` implement this same algorithm.

While Redis fails, decisions come from the same arithmetic in process memory (each process then
allows the full rate itself); the first failure is logged, then at most one line per
``log_every`` seconds, and every local decision is counted (``rate_limit_local_decisions_total``).
"""

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import RedisError

from servicekit import get_logger
from servicekit.redis_client import RedisClient

_log = get_logger("notes_api.ratelimit")

# KEYS[1] bucket; ARGV interval (ms per request), burst. Returns allowed, remaining,
# retry-after (ms), reset (ms until the bucket is full again).
_GCRA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat + interval - burst * interval
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.3f', next_tat), 'PX', math.ceil(next_tat - now))
return {1, math.floor((now - (next_tat - burst * interval)) / interval + 1e-9), 0,
        math.ceil(next_tat - now)}
"""


@dataclass(frozen=True)
class Limit:
    """A route class's bucket: ``burst`` requests at once, refilled at ``per_second``."""

    name: str
    per_second: float
    burst: int

    @property
    def interval_ms(self) -> float:
        return 1000.0 / self.per_second

    def policy(self) -> str:
        """`RateLimit-Policy` value: quota ``q`` over window ``w`` (the time to refill it)."""
        return f'"{self.name}";q={self.burst};w={math.ceil(self.burst / self.per_second)}'


@dataclass(frozen=True)
class Decision:
    limit: Limit
    allowed: bool
    remaining: int
    retry_after: float
    """Seconds until one request is allowed again (0 when allowed)."""
    reset: float
    """Seconds until the bucket is full again."""

    def retry_after_seconds(self) -> int:
        """`Retry-After`: whole seconds, at least 1."""
        return max(1, _seconds(self.retry_after))

    def headers(self) -> list[tuple[bytes, bytes]]:
        """draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` and `RateLimit` (+ 429's)."""
        state = f'"{self.limit.name}";r={self.remaining};t={_seconds(self.reset)}'
        values = [
            (b"ratelimit-policy", self.limit.policy().encode()),
            (b"ratelimit", state.encode()),
        ]
        if not self.allowed:
            values.append((b"retry-after", str(self.retry_after_seconds()).encode()))
        return values


def _seconds(value: float) -> int:
    return math.ceil(value - 1e-9)


def gcra(tat_ms: float | None, now_ms: float, limit: Limit) -> tuple[float | None, Decision]:
    """The script's arithmetic: the bucket's next TAT (None: unchanged) and the decision."""
    interval, burst = limit.interval_ms, limit.burst
    tat = max(tat_ms if tat_ms is not None else now_ms, now_ms)
    allow_at = tat + interval - burst * interval
    if now_ms < allow_at:
        return None, Decision(limit, False, 0, (allow_at - now_ms) / 1000, (tat - now_ms) / 1000)
    next_tat = tat + interval
    remaining = math.floor((now_ms - (next_tat - burst * interval)) / interval + 1e-9)
    return next_tat, Decision(limit, True, remaining, 0.0, (next_tat - now_ms) / 1000)


class LocalBuckets:
    """GCRA buckets in this process's memory: the fallback while Redis cannot be reached."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self._clock, self._max_keys = clock, max_keys
        self._tats: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._tats)

    def take(self, key: str, limit: Limit) -> Decision:
        now = self._clock() * 1000
        if len(self._tats) >= self._max_keys:
            # A full bucket is the same as no bucket: forget those, as Redis's expiry does.
            self._tats = {k: tat for k, tat in self._tats.items() if tat > now}
        tat, decision = gcra(self._tats.get(key), now, limit)
        if tat is not None:
            self._tats[key] = tat
        return decision


class RateLimiter:
    """Take a token for a key from Redis, or from local buckets while Redis fails."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str,
        registry: CollectorRegistry,
        timeout: float,
        retry_redis_after: float = 1.0,
        log_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_GCRA)
        self._prefix, self._timeout, self._clock = prefix, timeout, clock
        self._retry_redis_after, self._log_every = retry_redis_after, log_every
        self._local = LocalBuckets(clock=clock)
        self._redis_back_at = 0.0  # after a failure, Redis is not asked again before this
        self._logged_at: float | None = None
        self._unlogged = 0
        self.local_decisions = Counter(
            "rate_limit_local_decisions",
            "Rate-limit decisions made in process memory because Redis failed.",
            registry=registry,
        )

    async def take(self, key: str, limit: Limit) -> Decision:
        """Spend one of ``key``'s tokens of ``limit``; the decision says whether it had one."""
        if self._clock() >= self._redis_back_at:
            bucket = f"{self._prefix}ratelimit:{limit.name}:{key}"
            try:
                async with asyncio.timeout(self._timeout):
                    reply = await self._script(keys=[bucket], args=[limit.interval_ms, limit.burst])
            except (RedisError, OSError, TimeoutError) as error:
                self._redis_failed(error)
            else:
                allowed, remaining, retry_ms, reset_ms = (int(v) for v in reply)
                return Decision(limit, bool(allowed), remaining, retry_ms / 1000, reset_ms / 1000)
        self.local_decisions.inc()
        return self._local.take(f"{limit.name}:{key}", limit)

    async def close(self) -> None:
        await self._redis.aclose()

    def _redis_failed(self, error: BaseException) -> None:
        now = self._clock()
        self._redis_back_at = now + self._retry_redis_after
        self._unlogged += 1
        if self._logged_at is None or now - self._logged_at >= self._log_every:
            _log.warning(
                "rate_limit.redis_unavailable", error=repr(error), failures=self._unlogged,
                fallback="local buckets, per process",
            )  # fmt: skip
            self._logged_at, self._unlogged = now, 0
