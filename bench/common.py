"""Shared helpers: settings from the environment, key prefixes, cleanup, the bench event."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from contracts import Event

REDIS_URL = os.environ.get(
    "BENCH_REDIS_URL", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
)
STREAM = "bench.pinged"
GROUP = "bench"
BODY_BYTES = 200  # target size of each message body (the event's JSON)


@dataclass(frozen=True)
class Drain:
    """One drain run: throughput and the consumer's CPU time per message."""

    rate: float
    cpu_us_per_msg: float


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class Config:
    messages: int
    repeats: int
    backlog: int
    burst: int
    paced_rate: int
    paced_seconds: float

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            messages=env_int("BENCH_MESSAGES", 20_000),
            repeats=env_int("BENCH_REPEATS", 3),
            backlog=env_int("BENCH_BACKLOG", 100_000),
            burst=env_int("BENCH_BURST", 1_000),
            paced_rate=env_int("BENCH_PACED_RATE", 500),
            paced_seconds=float(os.environ.get("BENCH_PACED_SECONDS", "5")),
        )


class Pinged(Event):
    """The bench message: a no-op job with a send timestamp and padding to ~200 bytes."""

    type: Literal["bench.pinged.v1"] = "bench.pinged.v1"
    sent_at: float = 0.0
    pad: str = ""


_PAD: list[str] = []


def make_pinged(sent_at: float = 0.0) -> Pinged:
    """A bench event whose JSON body is about ``BODY_BYTES`` long."""
    if not _PAD:
        size = len(Pinged(producer="bench", sent_at=time.time()).model_dump_json())
        _PAD.append("x" * max(0, BODY_BYTES - size))
    return Pinged(producer="bench", sent_at=sent_at, pad=_PAD[0])


def run_prefix() -> str:
    """A key prefix unique to one bench run (everything it writes lives under it)."""
    return f"bench-{uuid.uuid4().hex[:10]}:"


async def delete_prefix(redis: Redis, prefix: str) -> int:
    """Delete every key of this run: stream keys start with the prefix, companions with `{`."""
    deleted = 0
    for pattern in (f"{prefix}*", f"{{{prefix}*"):
        batch: list[Any] = []
        async for key in redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await redis.unlink(*batch)
                batch = []
        if batch:
            deleted += await redis.unlink(*batch)
    return deleted


async def create_group(redis: Redis, key: str, group: str) -> None:
    await redis.xgroup_create(key, group, id="0", mkstream=True)


async def group_state(redis: Redis, key: str, group: str) -> tuple[int, int, bytes]:
    """Return (entries read, pending, last delivered id) of ``group`` on ``key``."""
    for info in await redis.xinfo_groups(key):
        name = info["name"]
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return (
                int(info.get("entries-read") or 0),
                int(info["pending"]),
                info["last-delivered-id"],
            )
    raise RuntimeError(f"group {group} not found on {key}")


async def wait_drained(
    redis: Redis, key: str, group: str, total: int, *, within: float, interval: float = 0.005
) -> float:
    """Poll XINFO GROUPS until ``total`` entries were read and none is pending; return the time."""
    deadline = time.perf_counter() + within
    while True:
        read, pending, _ = await group_state(redis, key, group)
        if read >= total and pending == 0:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(
                f"not drained after {within}s: read {read}/{total}, pending {pending}"
            )
        await asyncio.sleep(interval)


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def repeat(times: int, once: Callable[[], Awaitable[float]]) -> list[float]:
    return [await once() for _ in range(times)]
