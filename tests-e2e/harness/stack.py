"""A whole private platform: its own Redis, PostgreSQL and OTLP receiver, every process on them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from harness.otlp import OtlpReceiver
from harness.platform import Platform
from harness.postgres_server import PrivatePostgres
from harness.redis_server import PrivateRedis

__all__ = ["DEFAULT_ENV", "private_platform"]

DEFAULT_ENV = {
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "json",
    "PYTHONUNBUFFERED": "1",  # a log's tail is current when a test fails
    # Spans leave each process within 0.1 s (the SDK's default batch delay is 5 s).
    "OTEL_BSP_SCHEDULE_DELAY": "100",
    # The tests create notes as fast as the API takes them.
    "RATE_LIMITS_ENABLED": "false",
}


@contextlib.contextmanager
def private_platform(
    directory: Path,
    *,
    env: Mapping[str, str] | None = None,
    processes: Iterable[str] | None = None,
    redis: PrivateRedis | None = None,
    service_env: Mapping[str, Mapping[str, str]] | None = None,
    start: bool = True,
) -> Iterator[Platform]:
    """Start a private redis-server (or use ``redis``, not yet started), a private PostgreSQL
    cluster and an OTLP receiver; migrate; start ``processes`` (all by default; none if not
    ``start``); yield the platform; tear everything down, also on failure.

    The Redis is the platform's alone, so ``STREAM_PREFIX`` is empty: the key layout of the
    deploy stack, which its ACL patterns are written for.
    """
    redis = redis or PrivateRedis(directory / "redis")
    postgres = PrivatePostgres(directory)
    with contextlib.ExitStack() as stack:
        otlp = stack.enter_context(OtlpReceiver())
        stack.callback(postgres.remove)
        stack.callback(redis.stop)
        redis.start()
        postgres.start()
        base = {
            **DEFAULT_ENV,
            "REDIS_URL": redis.url,
            "DATABASE_URL": postgres.create_database("platform"),
            "STREAM_PREFIX": "",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        }
        if redis.ca_cert:
            base["REDIS_CA_CERT"] = redis.ca_cert
        platform = Platform(
            {**base, **(env or {})},
            directory / "logs",
            service_env=service_env,
            redis=redis,
            postgres=postgres,
            otlp=otlp,
        )
        with platform:
            platform.migrate()
            if start:
                platform.start_all(processes)
            yield platform
