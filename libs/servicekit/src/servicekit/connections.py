"""Clients for the platform's two stores, built from settings."""

from __future__ import annotations

import ssl
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterPipeline
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from servicekit.pool_metrics import TimedQueuePool, instrument_pool
from servicekit.redis_client import RedisClient
from servicekit.settings import ServiceSettings, asyncpg_url

__all__ = [
    "CLUSTER_SCHEMES",
    "cluster_url",
    "create_database_engine",
    "create_redis",
    "redis_client_from_url",
    "redis_ssl_context",
]

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
"""``REDIS_URL`` schemes that name a Redis Cluster (any one node; the client finds the rest)."""


def cluster_url(url: str) -> str | None:
    """Return a cluster URL's seed node as ``redis://`` / ``rediss://``; None if not a cluster."""
    for scheme in CLUSTER_SCHEMES:
        if url.startswith(scheme):
            return scheme.replace("+cluster", "") + url[len(scheme) :]
    return None


def _closed_under_us(exc: AttributeError) -> RedisConnectionError | None:
    """The ConnectionError a command met, when redis-py reports it as an AttributeError.

    In a failover the cluster client closes every connection of a node that failed, including
    those other tasks are sending on; their writer is then None and the send raises
    ``AttributeError: 'NoneType' object has no attribute 'writelines'`` (redis-py 8.1). Callers
    retry connection errors; an AttributeError would crash them.
    """
    if "'NoneType' object has no attribute" not in str(exc):
        return None
    return RedisConnectionError(f"connection closed during a cluster failover: {exc}")


class _ClusterPipeline(ClusterPipeline):
    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except AttributeError as exc:
            error = _closed_under_us(exc)
            if error is None:
                raise
            raise error from exc


class _StreamsAwareCluster(RedisCluster):
    """redis-py's cluster client with two repairs for the job runtime (both on its cluster path).

    - XREAD/XREADGROUP's slot comes from their STREAMS keys. Those commands have "movable keys",
      and redis-py asks a server for them (``COMMAND GETKEYS``) before each one: a second round
      trip on every read, on one connection that every task shares.
    - A connection closed under a command by a failover surfaces as a ConnectionError, not an
      AttributeError (:func:`_closed_under_us`), so the runtime's loops back off and retry.
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except AttributeError as exc:
            error = _closed_under_us(exc)
            if error is None:
                raise
            raise error from exc

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        """A cluster pipeline (split by slot; no transaction) that reports closed connections."""
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused by redis-py, as it says
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py builds it

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if str(command).upper() in ("XREAD", "XREADGROUP"):
            words = [a.upper() if isinstance(a, str) else a for a in args]
            if "STREAMS" in words:
                start = words.index("STREAMS") + 1
                named = args[start:]
                keys = named[: len(named) // 2]
                slots = {key_slot(k.encode() if isinstance(k, str) else k) for k in keys}
                if len(slots) == 1:
                    return slots.pop()
                msg = f"{command} keys in different slots: {keys!r}"
                raise ClusterCrossSlotError(msg)
        return await super()._determine_slot(command, *args)


def redis_client_from_url(url: str, **options: Any) -> RedisClient:
    """A client for ``url``: a ``RedisCluster`` for a ``redis+cluster://`` URL, else a ``Redis``.

    The cluster client routes each command to its slot's master, follows MOVED/ASK, re-reads the
    slot map after a failover, and splits a non-transactional pipeline by node. A cluster has one
    database, so a ``/<db>`` path other than ``/0`` is refused by redis-py.
    """
    seed = cluster_url(url)
    if seed is not None:
        cluster: RedisCluster = _StreamsAwareCluster.from_url(seed, **options)
        return cluster
    client: Redis = Redis.from_url(url, **options)
    return client


def redis_ssl_context(settings: ServiceSettings) -> ssl.SSLContext | None:
    """Return a TLS context for ``rediss://`` URLs, trusting ``REDIS_CA_CERT`` when set."""
    if not settings.redis_url.startswith(("rediss://", "rediss+cluster://")):
        return None
    return ssl.create_default_context(cafile=settings.redis_ca_cert)


def create_redis(settings: ServiceSettings, *, timeout: float = 5.0) -> RedisClient:
    """Create an asyncio Redis client (hiredis parser when installed) for ``REDIS_URL``.

    ``redis+cluster://host:port`` (or ``rediss+cluster://``) names a Redis Cluster by any of its
    nodes and gives a ``redis.asyncio.RedisCluster`` (see :func:`redis_client_from_url`).
    """
    extra: dict[str, Any] = {}
    if settings.redis_url.startswith(("rediss://", "rediss+cluster://")) and settings.redis_ca_cert:
        extra["ssl_ca_certs"] = settings.redis_ca_cert
    return redis_client_from_url(
        settings.redis_url,
        socket_connect_timeout=timeout,
        # Longer than any blocking read (JobOptions.block_ms), so only a dead link times out.
        socket_timeout=30.0,
        health_check_interval=30,
        **extra,
    )


def create_database_engine(
    settings: ServiceSettings,
    *,
    pool_timeout: float = 2.0,
    pre_ping: bool = True,
    pool_size: int = 5,
    max_overflow: int = 10,
    registry: CollectorRegistry | None = None,
) -> AsyncEngine:
    """Create an asyncpg-backed SQLAlchemy engine that fails fast when PostgreSQL is down.

    ``pool_timeout`` and the connect timeout bound how long a request waits, so an outage is
    answered with an error in seconds instead of a hanging pool.

    ``pre_ping`` tests each connection as it leaves the pool (three round trips with asyncpg:
    BEGIN, a no-op, ROLLBACK), so a worker never fails a message on a connection PostgreSQL
    dropped. A request path that answers a lost connection with a retryable error can turn it
    off: the first failure on a dropped connection invalidates every older pooled connection.

    ``pool_size`` connections stay open; up to ``max_overflow`` more are opened for a burst and
    closed when returned. Opening one costs tens of milliseconds (TLS probe, authentication, the
    driver's type introspection), so size the pool for the usual concurrency, not the mean.

    Statement parameters are kept out of exception messages (``hide_parameters``): they hold
    what clients sent and what the database stores, and an exception's text reaches the logs.
    With ``registry``, the pool's occupancy, churn and checkout waits are exported on it
    (:mod:`servicekit.pool_metrics`).
    """
    engine = create_async_engine(
        asyncpg_url(settings.require_database_url()),
        pool_pre_ping=pre_ping,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        hide_parameters=True,
        connect_args={"timeout": pool_timeout, "command_timeout": 30},
        **({"poolclass": TimedQueuePool} if registry is not None else {}),
    )
    if registry is not None:
        instrument_pool(engine, registry)
    return engine
