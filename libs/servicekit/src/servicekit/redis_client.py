"""The type of a Redis client the platform uses: one server, or a Redis Cluster.

``servicekit.create_redis`` returns a ``redis.asyncio.Redis`` for ``redis://`` / ``rediss://`` /
``unix://`` URLs and a ``redis.asyncio.RedisCluster`` for ``redis+cluster://`` /
``rediss+cluster://`` (see :mod:`servicekit.connections`). Both share redis-py's command mixins,
so code that takes either is annotated with this union and calls the commands both offer; the
few calls that differ (cluster-wide scans, WAIT) check which one they hold.
"""

from __future__ import annotations

from typing import TypeAlias

from redis.asyncio import Redis, RedisCluster

__all__ = ["RedisClient", "is_cluster"]

RedisClient: TypeAlias = Redis | RedisCluster
"""A client for one Redis server or for a Redis Cluster."""


def is_cluster(redis: RedisClient) -> bool:
    """Whether ``redis`` talks to a Redis Cluster."""
    return isinstance(redis, RedisCluster)
