"""A large backlog drains completely with flat memory (10k here; 100k in `make chaos`)."""

import asyncio
import os

import pytest

from servicekit import ServiceSettings, setup_telemetry
from servicekit.jobs import JobRouter
from servicekit.jobs._codec import encode_event
from servicekit.testing import eventually

from .conftest import Harness, Pinged, fast

STREAM = "test.pinged.v1"


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def drain_backlog(harness: Harness, size: int) -> tuple[float, float]:
    key = harness.keys.stream(STREAM)
    for start in range(0, size, 5000):
        async with harness.redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(size, start + 5000)):
                pipe.xadd(key, encode_event(Pinged(producer="t", n=n)))  # type: ignore[arg-type]
            await pipe.execute()
    handled = 0

    router = JobRouter(group="g")

    @router.event(Pinged, stream=STREAM, **fast())
    async def count_ping(event: Pinged) -> None:
        nonlocal handled
        handled += 1

    samples: list[float] = []

    async def sample() -> None:
        while True:
            samples.append(rss_mb())
            await asyncio.sleep(0.05)

    # No in-memory span exporter here: it would keep every span and hide a real leak.
    harness.telemetry = setup_telemetry(
        ServiceSettings(otel_service_name="jobs-test", stream_prefix=harness.keys.prefix)
    )
    sampler = asyncio.create_task(sample())
    async with harness.running(harness.worker(router)):
        await eventually(lambda: handled >= size // 10, within=60)
        baseline = rss_mb()
        await eventually(lambda: handled >= size, within=300)
    sampler.cancel()
    pending = await harness.redis.xpending(key, "g")
    assert pending["pending"] == 0
    assert handled == size
    return baseline, max(samples)


async def test_backlog_drains_with_flat_memory(harness: Harness) -> None:
    baseline, peak = await drain_backlog(harness, int(os.environ.get("BACKLOG_SIZE", "10000")))
    assert peak - baseline < 40, (baseline, peak)


@pytest.mark.chaos
@pytest.mark.timeout(600)
async def test_backlog_of_100k_drains_with_flat_memory(harness: Harness) -> None:
    baseline, peak = await drain_backlog(harness, 100_000)
    assert peak - baseline < 40, (baseline, peak)
