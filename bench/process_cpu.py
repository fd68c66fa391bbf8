"""CPU seconds a phase of a benchmark cost each process: the platform's, PostgreSQL's, Redis's.

CPU per unit of work barely moves when other programs share the machine, unlike wall time, so
it says what a run would cost on an idle one. A :class:`CpuMeter` samples ``/proc/<pid>/stat``
(utime + stime, every thread) of named processes, of the PostgreSQL backends connected to one
database (found in ``pg_stat_activity``, sampled every ``every`` seconds so a backend that
comes and goes is counted up to its last sample) and of the Redis server when it runs on this
host (``INFO server``'s ``process_id``; shared with whatever else uses it).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import asyncpg
from redis.asyncio import Redis

from bench.http_series import cpu_seconds


async def redis_pid(redis: Redis) -> int | None:
    """The Redis server's pid, if it runs on this host (its /proc entry is readable)."""
    pid = int((await redis.info("server"))["process_id"])
    return pid if cpu_seconds(pid) is not None else None


@dataclass
class CpuMeter:
    """CPU seconds of each named process between :meth:`start` and :meth:`stop`."""

    processes: dict[str, int]
    """Name to pid."""
    database_url: str
    """The database whose backends are counted as ``postgresql`` (the meter's own excepted)."""
    every: float = 0.25
    _connection: asyncpg.Connection | None = None
    _first: dict[tuple[str, int], float] = field(default_factory=dict)
    _last: dict[tuple[str, int], float] = field(default_factory=dict)
    _sampling: asyncio.Task[None] | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def _backends(self) -> list[int]:
        assert self._connection is not None
        rows = await self._connection.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [int(row["pid"]) for row in rows]

    async def _sample(self, *, starting: bool) -> None:
        named = [(name, pid) for name, pid in self.processes.items()]
        named += [("postgresql", pid) for pid in await self._backends()]
        for key in named:
            seconds = cpu_seconds(key[1])
            if seconds is None:
                continue
            # A backend first seen after the start was opened during the phase: all of it counts.
            self._first.setdefault(key, seconds if starting else 0.0)
            self._last[key] = seconds

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.every)
            await self._sample(starting=False)  # never cancelled mid-query: the connection lives on

    async def start(self) -> None:
        self._connection = await asyncpg.connect(self.database_url)
        await self._sample(starting=True)
        self._sampling = asyncio.create_task(self._loop())

    async def stop(self) -> dict[str, float]:
        """CPU seconds per name since :meth:`start` (PostgreSQL's backends summed)."""
        self._stopping.set()
        if self._sampling is not None:
            await self._sampling  # its last sample is taken now
        if self._connection is not None:
            await self._connection.close()
        spent: dict[str, float] = {}
        for key, last in self._last.items():
            spent[key[0]] = spent.get(key[0], 0.0) + last - self._first[key]
        return spent
