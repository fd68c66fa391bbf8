"""``redis+cluster://`` gives a Redis Cluster client; what it changes, checked without a server.

The cluster itself is exercised by the cluster leg of `.ci/run` (every runtime and service test
on a 3-master cluster) and by `tests/cluster/test_failover.py` (`make chaos`).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError

from servicekit import ServiceSettings, create_redis
from servicekit.connections import cluster_url, redis_client_from_url
from servicekit.durability import (
    DurabilityPolicy,
    DurabilityUnavailableError,
    ServerPersistence,
    plan_durability,
)
from servicekit.redis_client import is_cluster


def test_cluster_schemes_name_a_seed_node_and_others_do_not() -> None:
    assert cluster_url("redis+cluster://10.0.0.5:7000") == "redis://10.0.0.5:7000"
    assert cluster_url("rediss+cluster://u:p@h:7000") == "rediss://u:p@h:7000"
    assert cluster_url("redis://127.0.0.1:6379/0") is None


async def test_a_cluster_url_gives_a_cluster_client_and_a_plain_one_a_plain_client() -> None:
    settings = ServiceSettings(redis_url="redis+cluster://127.0.0.1:7000")
    cluster = create_redis(settings)  # no connection is opened until a command
    plain = create_redis(ServiceSettings(redis_url="redis://127.0.0.1:6379/0"))
    try:
        assert isinstance(cluster, RedisCluster)
        assert is_cluster(cluster)
        assert isinstance(plain, Redis)
        assert not is_cluster(plain)
    finally:
        await cluster.aclose()
        await plain.aclose()


def test_an_unknown_scheme_is_refused_naming_the_cluster_ones() -> None:
    with pytest.raises(ValidationError, match=r"redis\+cluster://"):
        ServiceSettings(redis_url="cluster://127.0.0.1:7000")


async def test_xreadgroup_slot_comes_from_its_streams_keys_without_asking_a_server() -> None:
    client = redis_client_from_url("redis+cluster://127.0.0.1:1")  # nothing listens there
    assert isinstance(client, RedisCluster)
    try:
        args = ("GROUP", "g", "c", "COUNT", 5, "STREAMS", "{p:jobs.a}.low", "{p:jobs.a}.default",
                ">", ">")  # fmt: skip
        slot = await client._determine_slot("XREADGROUP", *args)
        assert slot == key_slot(b"{p:jobs.a}.low")
        with pytest.raises(ClusterCrossSlotError, match="different slots"):
            await client._determine_slot("XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", "b",
                                         ">", ">")  # fmt: skip
    finally:
        await client.aclose()


def test_the_relay_waits_for_nothing_on_a_cluster_and_refuses_an_explicit_wait() -> None:
    cluster = ServerPersistence("redis 7.0.15 cluster", waitaof=False, aof=True, replicas=0,
                                cluster=True)  # fmt: skip
    plan = plan_durability(DurabilityPolicy("auto"), cluster)
    assert plan.mode == "none"
    for setting in ("aof", "replicas"):
        with pytest.raises(DurabilityUnavailableError, match="Redis Cluster"):
            plan_durability(DurabilityPolicy(setting), cluster)  # type: ignore[arg-type]
