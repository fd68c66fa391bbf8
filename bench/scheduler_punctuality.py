"""Scheduler punctuality: how late ticks and delayed jobs go out, with three replicas running.

Per run: three ``scheduler`` processes on a fresh key prefix, a one-second schedule, and one
delayed archive job due each second at a random fraction of it, for ``BENCH_SCHEDULER_SECONDS``
(20). Then, from Redis alone (server clock on both sides):

- tick punctuality: a fire record's actual time minus its scheduled time (``scheduler history``);
- delayed-job lateness: the job's stream entry id (ms, Redis clock) minus its ``run_at``;
- ticks fired twice or skipped between the first and the last (must be 0).

Figures are the worst run's percentiles (``BENCH_SCHEDULER_RUNS``, 3; ``BENCH_SCHEDULER=0``
skips it in ``make bench``). ``python -m
bench.scheduler_punctuality`` (under ``devstack exec``, or with ``REDIS_URL``) runs it alone and
merges its rows into ``.bench/results.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.common import REDIS_URL, delete_prefix, env_int
from bench.report import Row, Target, run_alone
from contracts import (
    JOBS_DELAYED,
    ArchiveRequested,
    DelayedJobRequested,
    JobType,
    Priority,
    job_stream,
)
from scheduler.store import SchedulerStore
from servicekit import StreamKeys
from servicekit.jobs import publish

Say = Any
SCHEDULE = """
[[schedule]]
name = "bench-every-second"
cron = "* * * * * *"
event = "commands.purge_idempotency_keys.v1"
payload = { older_than = { seconds_before_tick = 0 } }
overlap = "allow"
"""
COMMANDS = "commands.purge_idempotency_keys.v1"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
            return int(answer.status) == 200
    except OSError:
        return False


async def _one_run(seconds: int, say: Say) -> dict[str, Any]:
    prefix = f"bench:sched:{uuid.uuid4().hex[:8]}:"
    keys = StreamKeys(prefix)
    redis = Redis.from_url(REDIS_URL)
    store = SchedulerStore(redis, keys)
    with tempfile.TemporaryDirectory() as tmp:
        schedules = Path(tmp) / "schedules.toml"
        schedules.write_text(SCHEDULE)
        ports = [19300 + random.randrange(600) for _ in range(3)]
        env = {**os.environ, "REDIS_URL": REDIS_URL, "STREAM_PREFIX": prefix,
               "SCHEDULES_FILE": str(schedules), "LOG_LEVEL": "WARNING"}  # fmt: skip
        processes = [
            subprocess.Popen(  # noqa: ASYNC220 - started once per run, not on a hot path
                [sys.executable, "-m", "scheduler"],
                env={**env, "OPS_PORT": str(port), "CONSUMER_NAME": f"bench-{i}"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i, port in enumerate(ports)
        ]
        try:
            deadline = time.monotonic() + 60
            while not all(_ready(p) for p in ports):
                assert time.monotonic() < deadline, "scheduler replicas did not start"
                await asyncio.sleep(0.1)
            due: dict[uuid.UUID, float] = {}
            start = await store.now()
            for n in range(seconds):
                run_at = start + timedelta(seconds=n + 1 + random.random())
                request = ArchiveRequested(producer="bench", owner_id="bench", job_id=uuid.uuid4(),
                                           note_id=uuid.uuid4(), version=1)  # fmt: skip
                delayed = DelayedJobRequested.for_request(
                    request, run_at=run_at, priority=Priority.DEFAULT, producer="bench"
                )
                await publish(redis, keys, JOBS_DELAYED, delayed)
                due[request.job_id] = run_at.timestamp() * 1000
            await asyncio.sleep(seconds + 2.5)  # the measured interval itself, not a sync
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=30)
        history = await store.history(COMMANDS, "bench-every-second", limit=10_000)
        ticks = [r.tick_at for r in history if r.outcome in ("fired", "late")]
        lateness = [(r.at - r.tick_at).total_seconds() * 1000 for r in history
                    if r.outcome in ("fired", "late")]  # fmt: skip
        span = int((max(ticks) - min(ticks)).total_seconds()) + 1 if ticks else 0
        entries = await redis.xrange(keys.stream(job_stream(JobType.ARCHIVE, Priority.DEFAULT)))
        delays = []
        for entry_id, fields in entries:
            job_id = uuid.UUID(_job_id(fields))
            delays.append(int(entry_id.split(b"-")[0]) - due[job_id])
        await delete_prefix(redis, prefix)
        await redis.aclose()
    result = {
        "ticks": len(ticks), "duplicates": len(ticks) - len(set(ticks)),
        "missing": span - len(set(ticks)), "tick_p50_ms": _pct(lateness, 0.5),
        "tick_p99_ms": _pct(lateness, 0.99), "tick_max_ms": max(lateness, default=float("nan")),
        "delayed": len(delays), "delayed_expected": len(due),
        "delayed_p50_ms": _pct(delays, 0.5), "delayed_p99_ms": _pct(delays, 0.99),
        "delayed_max_ms": max(delays, default=float("nan")),
        "delayed_early": sum(1 for d in delays if d < 0),
    }  # fmt: skip
    say("  " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in result.items()))  # fmt: skip
    return result


def _job_id(fields: dict[bytes, bytes]) -> str:
    document = json.loads(fields[b"__data__"])
    return str(document["body"]["job_id"])


def enabled() -> bool:
    return os.environ.get("BENCH_SCHEDULER", "1") != "0"


async def run(say: Say) -> tuple[list[Row], list[Target]]:
    runs_n, seconds = env_int("BENCH_SCHEDULER_RUNS", 3), env_int("BENCH_SCHEDULER_SECONDS", 20)
    say(f"scheduler punctuality: {runs_n} runs x {seconds} s, 3 replicas, load "
        f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    runs = [await _one_run(seconds, say) for _ in range(runs_n)]
    worst = {k: max(r[k] for r in runs) for k in runs[0]}
    rows = [
        Row("scheduler tick punctuality p99 (worst run)", worst["tick_p99_ms"], "ms",
            detail={"runs": runs}),
        Row("scheduler tick punctuality max (worst run)", worst["tick_max_ms"], "ms"),
        Row("scheduler delayed job lateness p99 (worst run)", worst["delayed_p99_ms"], "ms"),
        Row("scheduler delayed job lateness max (worst run)", worst["delayed_max_ms"], "ms"),
    ]  # fmt: skip
    targets = [
        Target("every tick once", worst["duplicates"] == 0 and worst["missing"] == 0,
               f"duplicates {worst['duplicates']}, missing {worst['missing']}"),
        Target("no delayed job early or lost",
               worst["delayed_early"] == 0
               and all(r["delayed"] == r["delayed_expected"] for r in runs),
               f"early {worst['delayed_early']}"),
    ]  # fmt: skip
    return rows, targets


if __name__ == "__main__":
    sys.exit(run_alone(run))
