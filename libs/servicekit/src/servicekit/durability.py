"""How durable the relay's writes must be before it marks outbox rows published.

Redis acknowledges an XADD once the entry is in memory. Without AOF, or after a failover to a
replica that had not received it, the entry is gone while PostgreSQL says it was published. So the
relay can wait, before its commit, for

- ``WAITAOF 1 0``: the local AOF has fsynced the writes (Redis >= 7.2 and Valkey, AOF on);
- ``WAIT n``: ``n`` replicas have received them (where replicas are connected).

``OUTBOX_DURABILITY`` chooses: ``auto`` (the default: every wait the server offers, none where it
offers neither), ``none``, ``aof`` or ``replicas`` (refused, rows kept, while the server cannot
honour it). What the server offers is detected, not assumed from its version: INFO for AOF and
replicas, and one ``WAITAOF`` that Redis 7.0 answers with "unknown command". If a wait returns fewer
acknowledgements than required, the rows are not marked published (they go out again; consumers
dedupe by event id) and ``outbox_durability_shortfalls_total`` counts it.

On a Redis Cluster (``redis+cluster://``) the relay does not wait: WAIT and WAITAOF count the
writes of the one connection they are sent on, and the cluster client splits a batch's pipeline
over the masters that own its streams, so no single wait covers the batch. ``auto`` is then
``none`` (logged as such), and ``aof`` / ``replicas`` are refused with that reason
(docs/async-jobs.md, "Redis Cluster and failover", says what a failover can lose).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio import RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.exceptions import ResponseError

from servicekit.logs import get_logger
from servicekit.redis_client import RedisClient

__all__ = [
    "DurabilityGuard",
    "DurabilityPlan",
    "DurabilityPolicy",
    "DurabilitySetting",
    "DurabilityShortfallError",
    "DurabilityUnavailableError",
    "ServerPersistence",
    "detect_persistence",
    "plan_durability",
]

DurabilitySetting = Literal["auto", "none", "aof", "replicas"]
"""The values of ``OUTBOX_DURABILITY``."""

_log = get_logger("servicekit.durability")


class DurabilityUnavailableError(RuntimeError):
    """The setting asks for a wait the server cannot give (no WAITAOF, AOF off, few replicas)."""


class DurabilityShortfallError(RuntimeError):
    """A wait returned fewer acknowledgements than required; the rows stay unpublished."""


@dataclass(frozen=True)
class DurabilityPolicy:
    """What the operator asked for: the setting, replicas to wait for, and the wait's bound."""

    setting: DurabilitySetting = "auto"
    replicas: int = 1
    """Replicas that must have received a batch (``auto`` caps it at those online)."""
    timeout_ms: int = 2000
    """Bound of each wait; above appendfsync everysec's one-second cadence."""

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.timeout_ms < 1:
            msg = f"replicas and timeout_ms must be positive: {self!r}"
            raise ValueError(msg)


@dataclass(frozen=True)
class ServerPersistence:
    """What a server offers: WAITAOF, AOF, connected replicas; ``server`` names it for logs."""

    server: str
    waitaof: bool
    aof: bool
    replicas: int
    cluster: bool = False
    """A Redis Cluster: no wait covers a batch spread over its masters."""


async def detect_persistence(redis: RedisClient) -> ServerPersistence:
    """Ask the server what it offers (three INFO sections and one immediate WAITAOF)."""
    if isinstance(redis, RedisCluster):
        return await _cluster_persistence(redis)
    server = await redis.info("server")
    persistence = await redis.info("persistence")
    replication = await redis.info("replication")
    try:
        # Thresholds of zero are met at once; 1 ms rather than 0, which would mean "forever".
        await redis.waitaof(0, 0, 1)
        waitaof = True
    except ResponseError:  # Redis < 7.2: unknown command (or an ACL that forbids it)
        waitaof = False
    return ServerPersistence(
        server=_server_name(server),
        waitaof=waitaof,
        aof=int(persistence.get("aof_enabled", 0)) == 1,
        replicas=_online_replicas(replication),
    )


async def _cluster_persistence(redis: RedisCluster) -> ServerPersistence:
    """What a cluster offers the relay: no wait; its server and AOF as one master reports them."""
    await redis.initialize()  # the client learns the nodes on its first command
    node = redis.get_primaries()[0]
    server = await redis.info("server", target_nodes=node)
    persistence = await redis.info("persistence", target_nodes=node)
    return ServerPersistence(
        server=f"{_server_name(server)} cluster",
        waitaof=False,
        aof=int(persistence.get("aof_enabled", 0)) == 1,
        replicas=0,
        cluster=True,
    )


def _server_name(server: dict[str, Any]) -> str:
    if server.get("server_name") == "valkey":
        return f"valkey {server.get('valkey_version', server['redis_version'])}"
    return f"redis {server['redis_version']}"


def _online_replicas(replication: dict[str, Any]) -> int:
    """Count replicas past their initial sync: one still loading acknowledges nothing."""
    # redis-py parses each `slave<n>:ip=…,state=online,…` line of INFO replication into a dict.
    replicas = [
        value
        for key, value in replication.items()
        if key.startswith("slave") and key[5:].isdigit() and isinstance(value, dict)
    ]
    return sum(1 for replica in replicas if replica.get("state") == "online")


@dataclass(frozen=True)
class DurabilityPlan:
    """The waits in force: WAITAOF's ``numlocal`` (0 or 1) and WAIT's ``numreplicas``."""

    setting: DurabilitySetting
    numlocal: int
    numreplicas: int
    timeout_ms: int
    aof: bool
    """Whether the server has AOF on (reported, since it decides what a restart loses)."""

    @property
    def mode(self) -> str:
        """``none``, ``aof``, ``replicas`` or ``aof+replicas``: what a published row has."""
        waited = (("aof", self.numlocal), ("replicas", self.numreplicas))
        return "+".join(name for name, count in waited if count) or "none"

    @property
    def wait(self) -> str:
        """The commands sent after each batch, for the start log."""
        commands = []
        if self.numlocal:
            commands.append(f"WAITAOF {self.numlocal} 0")
        if self.numreplicas:
            commands.append(f"WAIT {self.numreplicas}")
        return " + ".join(commands) or "none"

    @property
    def on_redis_loss(self) -> str:
        """What a Redis restart or failover means for rows marked published under this plan."""
        replay = "recover with `replay-outbox --since <window>`"
        if self.numlocal and self.numreplicas:
            return "nothing marked published is lost: fsynced to the AOF and held by a replica"
        if self.numlocal:
            return f"a restart loses nothing (AOF fsynced); a failover may lose the last: {replay}"
        if self.numreplicas:
            return f"a failover keeps them (a replica has them); lost if all restart: {replay}"
        if self.aof:
            return f"acknowledged in memory only; up to a second is lost on a crash: {replay}"
        return f"AOF off: everything since the last snapshot is lost on a restart: {replay}"

    def add_waits(self, pipeline: Pipeline | ClusterPipeline) -> int:
        """Queue the waits after the pipeline's writes; return how many replies they add.

        They must share the writes' connection: WAIT and WAITAOF count that connection's writes.
        A cluster's plan has no waits (:func:`plan_durability`), so nothing is queued there.
        """
        if isinstance(pipeline, ClusterPipeline) and (self.numlocal or self.numreplicas):
            msg = "a cluster pipeline cannot carry WAIT/WAITAOF: it spans connections"
            raise DurabilityUnavailableError(msg)
        if self.numlocal:
            pipeline.waitaof(self.numlocal, 0, self.timeout_ms)
        if self.numreplicas:
            pipeline.wait(self.numreplicas, self.timeout_ms)
        return bool(self.numlocal) + bool(self.numreplicas)

    def shortfall(self, replies: Sequence[Any]) -> str | None:
        """Describe what the waits' ``replies`` lack, or return None when they suffice."""
        replies = list(replies)
        missing = []
        if self.numlocal:
            local, _ = replies.pop(0)
            if int(local) < self.numlocal:
                missing.append(f"AOF fsync {local}/{self.numlocal}")
        if self.numreplicas:
            acknowledged = int(replies.pop(0))
            if acknowledged < self.numreplicas:
                missing.append(f"replicas {acknowledged}/{self.numreplicas}")
        return ", ".join(missing) or None


def plan_durability(policy: DurabilityPolicy, offered: ServerPersistence) -> DurabilityPlan:
    """Decide the waits for ``policy`` on a server that offers ``offered``.

    Raises :class:`DurabilityUnavailableError` when an explicit setting cannot be honoured.
    """
    numlocal, numreplicas = 0, 0
    if offered.cluster:
        if policy.setting in ("aof", "replicas"):
            msg = (
                f"OUTBOX_DURABILITY={policy.setting} cannot be honoured on a Redis Cluster "
                f"({offered.server}): WAIT/WAITAOF count one connection's writes and a batch "
                "spans the masters; use auto or none"
            )
            raise DurabilityUnavailableError(msg)
    elif policy.setting == "auto":
        numlocal = int(offered.waitaof and offered.aof)
        numreplicas = min(policy.replicas, offered.replicas)
    elif policy.setting == "aof":
        if not (offered.waitaof and offered.aof):
            lacks = "appendonly yes" if offered.waitaof else "WAITAOF (Redis >= 7.2 or Valkey)"
            msg = f"OUTBOX_DURABILITY=aof needs {lacks}; {offered.server} has none"
            raise DurabilityUnavailableError(msg)
        numlocal = 1
    elif policy.setting == "replicas":
        if offered.replicas < policy.replicas:
            msg = (
                f"OUTBOX_DURABILITY=replicas needs {policy.replicas} connected replica(s); "
                f"{offered.server} has {offered.replicas}"
            )
            raise DurabilityUnavailableError(msg)
        numreplicas = policy.replicas
    return DurabilityPlan(policy.setting, numlocal, numreplicas, policy.timeout_ms, offered.aof)


@dataclass(frozen=True)
class _Metrics:
    in_force: Gauge
    shortfalls: Counter


# One set per registry: several relays (schemas) in a process share the metric families.
_metrics: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics_for(registry: CollectorRegistry | None) -> _Metrics:
    registry = registry if registry is not None else CollectorRegistry()
    if registry not in _metrics:
        _metrics[registry] = _Metrics(
            in_force=Gauge(
                "outbox_durability_in_force",
                "1 for the durability the relay waits for (mode) and the server's AOF state",
                ["schema", "mode", "aof"],
                registry=registry,
            ),
            shortfalls=Counter(
                "outbox_durability_shortfalls",
                "Batches not marked published because a wait returned too few acknowledgements",
                ["schema"],
                registry=registry,
            ),
        )
    return _metrics[registry]


class DurabilityGuard:
    """The relay's side of durability: the plan in force, logged and gauged, and its checks.

    The plan is detected on first use and again after :meth:`forget` (the relay forgets it after
    any failed publish, so a restarted or reconfigured server is seen anew); a change is logged.
    """

    def __init__(
        self, policy: DurabilityPolicy, *, schema: str, registry: CollectorRegistry | None = None
    ) -> None:
        self.policy = policy
        self._schema = schema
        self._metrics = _metrics_for(registry)
        self._plan: DurabilityPlan | None = None
        self._reported: DurabilityPlan | None = None

    async def plan(self, redis: RedisClient) -> DurabilityPlan:
        """Return the plan in force, detecting it first if needed."""
        if self._plan is None:
            offered = await detect_persistence(redis)
            self._plan = plan_durability(self.policy, offered)
            if self._plan != self._reported:
                self._report(self._plan, offered)
        return self._plan

    def in_force(self) -> str | None:
        """One line for ``/readyz``: the durability in force and what a Redis loss costs."""
        plan = self._reported
        return None if plan is None else f"{plan.mode}: {plan.on_redis_loss}"

    def forget(self) -> None:
        """Detect the plan again before the next batch."""
        self._plan = None

    def check(self, plan: DurabilityPlan, replies: Sequence[Any], rows: int) -> None:
        """Raise :class:`DurabilityShortfallError` (and count it) if ``replies`` fall short."""
        missing = plan.shortfall(replies)
        if missing is None:
            return
        self._metrics.shortfalls.labels(self._schema).inc()
        msg = f"{rows} row(s) not marked published: {missing} within {plan.timeout_ms} ms"
        raise DurabilityShortfallError(msg)

    def _report(self, plan: DurabilityPlan, offered: ServerPersistence) -> None:
        aof = "on" if plan.aof else "off"
        if self._reported is not None:
            self._metrics.in_force.remove(
                self._schema, self._reported.mode, "on" if self._reported.aof else "off"
            )
        self._metrics.in_force.labels(self._schema, plan.mode, aof).set(1)
        self._reported = plan
        # A durability the operator did not choose to give up is worth a warning.
        level = _log.warning if plan.mode == "none" and plan.setting != "none" else _log.info
        level(
            "outbox.durability_in_force",
            schema=self._schema,
            setting=plan.setting,
            in_force=plan.mode,
            wait=plan.wait,
            aof=aof,
            replicas=offered.replicas,
            server=offered.server,
            on_redis_loss=plan.on_redis_loss,
        )
