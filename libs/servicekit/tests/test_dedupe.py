"""Redis dedupe: marks completion only after success, and fails closed (or open) on outages."""

import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import cast
from uuid import uuid4

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from servicekit.dedupe import RedisDedupe
from servicekit.errors import TransientError
from servicekit.keys import StreamKeys


class Effect:
    """A fake side effect that fails the first ``failures`` times it runs."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.runs = 0

    async def __call__(self) -> str:
        self.runs += 1
        if self.runs <= self.failures:
            raise ConnectionError("downstream unavailable")
        return "sent"


@pytest.fixture
async def unreachable_redis() -> AsyncIterator[Redis]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port was just released and nothing listens on it.
    client = Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    yield client
    await client.aclose()


async def test_failed_first_attempt_is_retried_and_third_delivery_skipped(
    redis_client: Redis, stream_prefix: str
) -> None:
    dedupe = RedisDedupe(redis_client, StreamKeys(stream_prefix), "mailer")
    event_id = uuid4()
    effect = Effect(failures=1)

    with pytest.raises(ConnectionError):
        await dedupe.run_once(event_id, effect)
    assert not await dedupe.already_done(event_id)

    assert await dedupe.run_once(event_id, effect) == "sent"
    assert await dedupe.run_once(event_id, effect) is None
    assert effect.runs == 2


async def test_mark_is_namespaced_by_prefix_and_group_and_expires(
    redis_client: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    dedupe = RedisDedupe(redis_client, keys, "mailer", ttl=timedelta(hours=1))
    event_id = uuid4()
    await dedupe.mark_done(event_id)

    key = f"{stream_prefix}dedupe:mailer:{event_id}"
    assert 0 < await redis_client.ttl(key) <= 3600
    assert not await RedisDedupe(redis_client, keys, "indexer").already_done(event_id)


async def test_fail_closed_raises_transient_error_when_redis_is_unreachable(
    unreachable_redis: Redis,
) -> None:
    dedupe = RedisDedupe(unreachable_redis, StreamKeys("test:"), "mailer")
    effect = Effect()

    with pytest.raises(TransientError):
        await dedupe.run_once(uuid4(), effect)
    with pytest.raises(TransientError):
        await dedupe.mark_done(uuid4())
    assert effect.runs == 0


async def test_fail_open_runs_the_effect_when_redis_is_unreachable(
    unreachable_redis: Redis,
) -> None:
    dedupe = RedisDedupe(unreachable_redis, StreamKeys("test:"), "mailer", fail_mode="open")
    effect = Effect()

    assert await dedupe.run_once(uuid4(), effect) == "sent"
    assert effect.runs == 1


class RedisThatLosesWrites:
    """Answers reads, fails writes: Redis went away between the check and the mark."""

    async def exists(self, *_: object) -> int:
        return 0

    async def set(self, *_: object, **__: object) -> None:
        raise RedisConnectionError("connection lost")


async def test_mark_failure_after_success_returns_the_result_instead_of_raising() -> None:
    redis = cast(Redis, RedisThatLosesWrites())
    dedupe = RedisDedupe(redis, StreamKeys("test:"), "mailer")
    effect = Effect()

    # Raising here would make the runtime retry and repeat the effect for certain.
    assert await dedupe.run_once(uuid4(), effect) == "sent"
    assert effect.runs == 1
