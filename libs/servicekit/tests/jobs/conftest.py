"""Helpers for job runtime tests: a worker running in-process on the test's Redis prefix."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from uuid import uuid4

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import ArchiveRequested, Event
from servicekit import Readiness, ServiceSettings, StreamKeys, Telemetry, setup_telemetry
from servicekit.connections import redis_client_from_url
from servicekit.jobs import JobRouter, RetentionPolicy, Worker
from servicekit.redis_client import RedisClient

T = TypeVar("T")


class Pinged(Event):
    """A small event used by runtime tests."""

    type: Literal["test.pinged.v1"] = "test.pinged.v1"
    n: int


def archive_request(n: int = 0) -> ArchiveRequested:
    return ArchiveRequested(
        producer="test", owner_id="alice", job_id=uuid4(), note_id=uuid4(), version=n + 1
    )


@dataclass
class Harness:
    redis: RedisClient
    keys: StreamKeys
    telemetry: Telemetry
    spans: InMemorySpanExporter

    def worker(
        self,
        router: JobRouter,
        *,
        consumer: str = "c1",
        dependencies: dict[str, object] | None = None,
        retention: RetentionPolicy | None = None,
        required_groups: dict[str, set[str]] | None = None,
        readiness: Readiness | None = None,
        grace: float = 5.0,
        clock: Callable[[], float] = time.time,
        redis: RedisClient | None = None,
    ) -> Worker:
        return Worker(
            router.routes,
            redis=redis or self.redis,
            keys=self.keys,
            consumer=consumer,
            telemetry=self.telemetry,
            dependencies=dependencies,
            retention=retention,
            required_groups=required_groups,
            readiness=readiness,
            maintenance_interval=0.2,
            grace=grace,
            clock=clock,
        )

    @contextlib.asynccontextmanager
    async def running(self, *workers: Worker) -> AsyncIterator[asyncio.Event]:
        stop = asyncio.Event()
        for worker in workers:
            await worker.ensure_groups()
        tasks = [asyncio.create_task(w.run(stop)) for w in workers]
        try:
            yield stop
        finally:
            stop.set()
            codes = await asyncio.wait_for(asyncio.gather(*tasks), 30)
            assert all(code == 0 for code in codes), codes

    def counted(
        self, stream: str, status: str, group: str = "g", job_type: str = "test.pinged.v1"
    ) -> float:
        value = self.telemetry.registry.get_sample_value(
            "job_processed_total",
            {
                "service": "jobs-test",
                "stream": stream,
                "group": group,
                "job_type": job_type,
                "status": status,
            },
        )
        return value or 0.0


@pytest.fixture
async def harness(
    redis_url: str, stream_prefix: str, redis_client: RedisClient
) -> AsyncIterator[Harness]:
    spans = InMemorySpanExporter()
    settings = ServiceSettings(
        otel_service_name="jobs-test", redis_url=redis_url, stream_prefix=stream_prefix
    )
    telemetry = setup_telemetry(settings, span_processors=[SimpleSpanProcessor(spans)])
    redis = redis_client_from_url(redis_url)
    yield Harness(redis, StreamKeys(stream_prefix), telemetry, spans)
    await redis.aclose()


def fast(**overrides: Any) -> dict[str, Any]:
    """Options that keep tests quick: short blocks, tiny backoff, no jitter."""
    options: dict[str, Any] = {
        "block_ms": 50,
        "backoff_base": 0.05,
        "backoff_cap": 1.0,
        "jitter": 0.0,
        "visibility_timeout": 1.0,
        "timeout": 5.0,
    }
    options.update(overrides)
    return options


def ids(entries: Sequence[Any]) -> list[str]:
    return [e[0].decode() for e in entries]
