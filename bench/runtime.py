"""(c) The job runtime with every guarantee on, in 1 or 2 consumer processes (bench.worker).

The parent fills the stream (pipelined XADDs of ``encode_event``, the bytes ``jobs.publish``
writes, inside a producer span so entries carry a traceparent), starts the consumers, waits until
each has printed READY, then sends GO and polls ``XINFO GROUPS`` every 5 ms until every entry was
read and none is pending. Throughput is N over that wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.common import (
    GROUP,
    REDIS_URL,
    STREAM,
    create_group,
    delete_prefix,
    group_state,
    make_pinged,
    percentile,
    wait_drained,
)
from servicekit import ServiceSettings, StreamKeys
from servicekit.jobs import publish
from servicekit.jobs._codec import encode_event
from servicekit.tracing import configure_tracing

LOG_DIR = Path(".bench/logs")
_tracer = configure_tracing(ServiceSettings(otel_service_name="bench-producer")).get_tracer("bench")


@contextlib.contextmanager
def producer_span() -> Iterator[None]:
    """Publish inside a sampled span, as a real producer does (entries carry a traceparent)."""
    with _tracer.start_as_current_span("bench publish"):
        yield


async def fill(redis: Redis, keys: StreamKeys, n: int, *, sent_at: float = 0.0) -> None:
    key = keys.stream(STREAM)
    with producer_span():
        for start in range(0, n, 1000):
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(min(1000, n - start)):
                    pipe.xadd(key, encode_event(make_pinged(sent_at)))  # type: ignore[arg-type]
                await pipe.execute()


def _make_log_dir() -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)


@dataclass
class ConsumerProcess:
    """One ``python -m bench.worker`` child and its line protocol."""

    prefix: str
    consumer: str
    mode: str = "drain"
    profile: str = ""
    proc: asyncio.subprocess.Process | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        _make_log_dir()
        args = ["--prefix", self.prefix, "--consumer", self.consumer, "--mode", self.mode]
        if self.profile:
            args += ["--profile", self.profile]
        with (LOG_DIR / f"{self.consumer}.log").open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.worker",
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                limit=64 * 1024 * 1024,
            )
        line = await asyncio.wait_for(self._readline(), 60)
        if line != "READY":
            raise RuntimeError(f"{self.consumer} did not start: {line!r} (see {LOG_DIR})")

    async def _readline(self) -> str:
        assert self.proc is not None
        assert self.proc.stdout is not None
        return (await self.proc.stdout.readline()).decode().strip()

    def send(self, word: str) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(word.encode() + b"\n")

    async def stop(self, within: float = 60.0) -> dict[str, Any]:
        assert self.proc is not None
        self.send("STOP")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            assert self.proc.stdin is not None
            await self.proc.stdin.drain()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(self._readline(), deadline - time.monotonic())
            if line.startswith("RESULT "):
                self.result = json.loads(line[len("RESULT ") :])
                break
            if not line and self.proc.stdout is not None and self.proc.stdout.at_eof():
                break
        code = await asyncio.wait_for(self.proc.wait(), within)
        self.result.setdefault("exit_code", code)
        self.result["process_exit"] = code
        return self.result


@contextlib.asynccontextmanager
async def consumers(
    prefix: str, names: list[str], *, mode: str = "drain", profile: str = ""
) -> AsyncIterator[list[ConsumerProcess]]:
    procs = [ConsumerProcess(prefix, name, mode, profile) for name in names]
    try:
        await asyncio.gather(*(p.start() for p in procs))
        yield procs
    finally:
        for p in procs:
            if p.proc is not None and p.proc.returncode is None:
                if not p.result:
                    with contextlib.suppress(Exception):
                        await p.stop(within=30)
                if p.proc.returncode is None:
                    p.proc.kill()
                    await p.proc.wait()


def _check(results: list[dict[str, Any]], expected: int, label: str) -> list[str]:
    """Return anomalies: non-zero exits, duplicates or losses across consumers."""
    problems = []
    handled = sum(int(r.get("handled", 0)) for r in results)
    if handled != expected:
        problems.append(f"{label}: handlers ran {handled} times for {expected} entries")
    for r in results:
        if r.get("process_exit") != 0:
            problems.append(f"{label}: consumer {r.get('consumer')} exited {r.get('process_exit')}")
    return problems


@dataclass
class Throughput:
    rate: float
    per_consumer: list[int]
    cpu_us_per_msg: float
    problems: list[str]


async def drain_processes(
    base: str, n: int, processes: int, run: int, profile: str = ""
) -> Throughput:
    prefix = f"{base}rt{processes}c-{run}:"
    keys = StreamKeys(prefix)
    key = keys.stream(STREAM)
    redis = Redis.from_url(REDIS_URL)
    try:
        await create_group(redis, key, GROUP)
        await fill(redis, keys, n)
        names = [f"bench-{processes}c-{run}-{i}" for i in range(processes)]
        async with consumers(prefix, names, profile=profile) as procs:
            started = time.perf_counter()
            for p in procs:
                p.send("GO")
            finished = await wait_drained(redis, key, GROUP, n, within=max(120.0, n / 200))
            results = [await p.stop() for p in procs]
        rate = n / (finished - started)
        label = f"runtime {processes}c run {run}"
        cpu = sum(float(r.get("cpu_seconds", 0.0)) for r in results)
        return Throughput(
            rate,
            [int(r.get("handled", 0)) for r in results],
            cpu / n * 1e6,
            _check(results, n, label),
        )
    finally:
        await delete_prefix(redis, prefix)
        await redis.aclose()


@dataclass
class Latency:
    burst_ms: list[float]
    paced_ms: list[float]
    paced_rate: float
    problems: list[str]


async def latency(
    base: str, burst: int, rate: int, seconds: float, mode: str = "latency"
) -> Latency:
    """Enqueue -> handler start with one consumer: a burst at once, then a paced stream.

    ``mode="raw-latency"`` runs the same schedule against a raw XREADGROUP BLOCK loop instead.
    """
    prefix = f"{base}{mode}:"
    keys = StreamKeys(prefix)
    key = keys.stream(STREAM)
    redis = Redis.from_url(REDIS_URL)
    try:
        await create_group(redis, key, GROUP)
        async with consumers(prefix, [f"bench-{mode}"], mode=mode) as procs:
            procs[0].send("GO")
            await asyncio.sleep(0.5)  # let it reach its blocking read
            # Burst: every entry encoded first, then one pipeline; enqueue time = when it is sent.
            with producer_span():
                fields = [encode_event(make_pinged(0.0)) for _ in range(burst)]
                async with redis.pipeline(transaction=False) as pipe:
                    for f in fields:
                        pipe.xadd(key, f)  # type: ignore[arg-type]
                    burst_at = time.time()
                    await pipe.execute()
            await wait_drained(redis, key, GROUP, burst, within=60)
            await asyncio.sleep(0.2)
            # Paced: one awaited jobs.publish per message at `rate` msgs/s, on an absolute schedule.
            total = int(rate * seconds)
            begin = time.perf_counter()
            for i in range(total):
                delay = begin + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                with producer_span():
                    await publish(redis, keys, STREAM, make_pinged(time.time()))
            achieved = total / (time.perf_counter() - begin)
            await wait_drained(redis, key, GROUP, burst + total, within=60)
            result = await procs[0].stop()
        samples = result.get("samples", [])
        burst_ms = [(started - burst_at) * 1000 for sent, started in samples if sent == 0.0]
        paced_ms = [(started - sent) * 1000 for sent, started in samples if sent != 0.0]
        return Latency(burst_ms, paced_ms, achieved, _check([result], burst + total, "latency"))
    finally:
        await delete_prefix(redis, prefix)
        await redis.aclose()


def summarize(values: list[float]) -> tuple[float, float]:
    return percentile(values, 50), percentile(values, 99)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class Memory:
    start_mb: float
    after_10pct_mb: float
    peak_mb: float
    end_mb: float
    rate: float
    samples: int
    problems: list[str]

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.after_10pct_mb


async def memory(base: str, backlog: int) -> Memory:
    """Peak RSS of one consumer draining ``backlog`` entries, sampled every 50 ms."""
    prefix = f"{base}mem:"
    keys = StreamKeys(prefix)
    key = keys.stream(STREAM)
    redis = Redis.from_url(REDIS_URL)
    try:
        await create_group(redis, key, GROUP)
        await fill(redis, keys, backlog)
        async with consumers(prefix, ["bench-memory"]) as procs:
            pid = procs[0].pid
            start_kb = rss_kb(pid)
            series: list[tuple[int, int]] = []  # (entries read, rss kB)
            started = time.perf_counter()
            procs[0].send("GO")
            deadline = started + max(300.0, backlog / 100)
            while True:
                read, pending, _ = await group_state(redis, key, GROUP)
                series.append((read, rss_kb(pid)))
                if read >= backlog and pending == 0:
                    break
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"memory drain stuck at {read}/{backlog}, pending {pending}")
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            end_kb = rss_kb(pid)
            result = await procs[0].stop()
        after10 = next((rss for read, rss in series if read >= backlog // 10), series[-1][1])
        peak = max([start_kb, end_kb, *(rss for _, rss in series)])
        return Memory(
            start_kb / 1024,
            after10 / 1024,
            peak / 1024,
            end_kb / 1024,
            backlog / elapsed,
            len(series),
            _check([result], backlog, "memory"),
        )
    finally:
        await delete_prefix(redis, prefix)
        await redis.aclose()
