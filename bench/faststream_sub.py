"""(b) A bare FastStream per-message subscriber: RedisBroker + StreamSub, no-op handler.

Default settings except ``logger=None``: FastStream's access log writes two lines per message,
which would measure the terminal rather than the consumer (the runtime logs nothing per message).
Messages are published with FastStream's own ``broker.publish`` so the format matches.

A baseline is only fair at its best: besides the workspace's install (:func:`drain`, redis-py 8),
:func:`drain_isolated` runs ``bench/faststream_isolated.py`` in a throw-away environment
(``uv run --no-project --with ...``) on each of :data:`ISOLATED` (redis-py 5 with hiredis, larger
reads), and ``make bench`` takes the best median as the runtime's baseline, naming it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from faststream.redis import RedisBroker, StreamSub
from redis.asyncio import Redis

from bench.common import GROUP, REDIS_URL, STREAM, Drain, create_group, group_state, make_pinged

PUBLISH_CONCURRENCY = 8
FASTSTREAM = "faststream[redis]==0.7.8"  # the workspace's (uv.lock)
ISOLATED: dict[str, tuple[tuple[str, ...], int | None]] = {
    "faststream, redis-py 5.3.1 + hiredis, max_records=100": (
        (FASTSTREAM, "redis[hiredis]==5.3.1", "uvloop"),
        100,
    ),
}
"""Configurations measured in their own environments: label -> (requirements, max_records)."""
_SCRIPT = Path(__file__).with_name("faststream_isolated.py")


async def drain(prefix: str, n: int, run: int) -> Drain:
    """Publish ``n`` messages, start the subscriber, time until the last one is handled."""
    key = f"{prefix}fs-{run}:{STREAM}"
    admin = Redis.from_url(REDIS_URL)
    await create_group(admin, key, GROUP)
    broker = RedisBroker(REDIS_URL, logger=None)
    handled = 0
    finished = asyncio.Event()
    finished_at = 0.0
    finished_cpu = 0.0

    @broker.subscriber(stream=StreamSub(key, group=GROUP, consumer="fs"))
    async def handle(body: Any) -> None:
        nonlocal handled, finished_at, finished_cpu
        handled += 1
        if handled == n:
            finished_at = time.perf_counter()
            finished_cpu = time.process_time()
            finished.set()

    try:
        await broker.connect()
        body = make_pinged().model_dump(mode="json")
        for start in range(0, n, PUBLISH_CONCURRENCY):
            count = min(PUBLISH_CONCURRENCY, n - start)
            await asyncio.gather(*(broker.publish(body, stream=key) for _ in range(count)))
        started = time.perf_counter()
        cpu = time.process_time()
        await broker.start()
        await asyncio.wait_for(finished.wait(), timeout=max(60.0, n / 500))
        elapsed = finished_at - started
        await asyncio.sleep(0.05)
        _, pending, _ = await group_state(admin, key, GROUP)
        if pending:
            print(f"  note: faststream run {run}: {pending} entries still pending after drain")
        return Drain(n / elapsed, (finished_cpu - cpu) / n * 1e6)
    finally:
        await broker.stop()
        await admin.unlink(key)
        await admin.aclose()


async def drain_isolated(prefix: str, n: int, run: int, label: str) -> Drain:
    """Like :func:`drain`, in a throw-away environment with ``ISOLATED[label]``'s packages."""
    requirements, max_records = ISOLATED[label]
    key = f"{prefix}fsi-{run}:{STREAM}"
    body = json.dumps(make_pinged().model_dump(mode="json"))
    argv = [
        "uv",
        "run",
        "--no-project",
        "--quiet",
        "--python",
        f"{sys.version_info.major}.{sys.version_info.minor}",
    ]
    for requirement in requirements:
        argv += ["--with", requirement]
    argv += ["python", str(_SCRIPT), REDIS_URL, key, GROUP, str(n), body]
    argv += [str(max_records)] if max_records else []
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{label}: {err.decode()[-1000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return Drain(result["rate"], result["cpu_us_per_msg"])
