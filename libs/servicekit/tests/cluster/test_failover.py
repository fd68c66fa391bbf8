"""A Redis Cluster master killed under load: its replica takes over and the runtime carries on.

A private cluster (3 masters, one replica each, ``servicekit.local_cluster``) serves two event
streams whose slots the same master owns. Two producers publish steadily, one entry every few
milliseconds, retrying an entry until it is acknowledged (as the outbox relay does):

- ``plain``: XADD through the cluster client; acknowledged when Redis answers;
- ``waited``: XADD then ``WAIT 1`` on the same connection to the slot's master; acknowledged only
  when WAIT says one replica has it.

A worker (the job runtime, in this process, on a cluster client) handles both streams and records
each entry it handles. Mid-load the master is SIGKILLed; after the cluster's node timeout its
replica is promoted. The figures printed: entries acknowledged, handled, lost (acknowledged, never
handled) and duplicated (handled twice), per producer, and the seconds without service.

What is asserted is what the design guarantees (docs/async-jobs.md, "Redis Cluster and
failover"): the runtime recovers on the promoted replica without a restart (every entry published
after the failover is handled); an entry acknowledged after ``WAIT 1`` is never lost (the only
replica had it, and it is the one promoted). Entries only acknowledged by the master may be lost
(asynchronous replication), and deliveries or acks the replica had not received come back as
duplicates: both are printed, neither asserted, since their number depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError

from contracts import Event
from servicekit import ServiceSettings, StreamKeys, setup_telemetry
from servicekit.connections import redis_client_from_url
from servicekit.jobs import JobOptions, JobRouter, Worker
from servicekit.jobs._codec import encode_event
from servicekit.local_cluster import LocalCluster
from servicekit.testing import eventually

pytestmark = pytest.mark.chaos

PREFIX = "failover:"


class Ticked(Event):
    """One producer's numbered entry."""

    type: Literal["test.ticked.v1"] = "test.ticked.v1"
    producer: str = "failover-test"
    n: int


@dataclass
class Produced:
    """What one producer had acknowledged, and when the failover happened in its sequence."""

    acknowledged: list[int] = field(default_factory=list)
    refused: int = 0
    after_failover: list[int] = field(default_factory=list)


def _streams_on_one_master(cluster: RedisCluster, keys: StreamKeys) -> tuple[str, str, int]:
    """Two stream names whose slots the same master owns; and that master's port."""
    by_port: dict[int, list[str]] = {}
    for i in range(200):
        name = f"failover.s{i}"
        node = cluster.get_node_from_key(keys.stream(name))
        by_port.setdefault(int(node.port), []).append(name)
        if len(by_port[int(node.port)]) == 2:
            first, second = by_port[int(node.port)]
            return first, second, int(node.port)
    raise AssertionError("no two streams on one master in 200 names")


async def _master_port_of(cluster_nodes: list[int], slot: int) -> int | None:
    """The port of the live node serving ``slot`` as master, per CLUSTER SLOTS of any node."""
    for port in cluster_nodes:
        client = Redis(port=port, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            ranges = await client.execute_command("CLUSTER SLOTS")
        except (RedisError, OSError):
            continue
        finally:
            await client.aclose()
        for start, end, master, *_ in ranges:
            if int(start) <= slot <= int(end):
                return int(master[1])
    return None


async def _produce_plain(
    redis: RedisCluster, key: str, stop: asyncio.Event, failed_over: asyncio.Event, out: Produced
) -> None:
    n = 0
    while not stop.is_set():
        try:
            await redis.xadd(key, encode_event(Ticked(n=n)))  # type: ignore[arg-type]
        except (RedisError, OSError):
            out.refused += 1
            await asyncio.sleep(0.05)
            continue  # the same entry again, as the outbox relay would
        out.acknowledged.append(n)
        if failed_over.is_set():
            out.after_failover.append(n)
        n += 1
        await asyncio.sleep(0.004)


async def _produce_waited(
    ports: list[int], key: str, stop: asyncio.Event, failed_over: asyncio.Event, out: Produced
) -> None:
    slot = key_slot(key.encode())
    n, client = 0, None
    while not stop.is_set():
        try:
            if client is None:
                port = await _master_port_of(ports, slot)
                if port is None:
                    raise ConnectionError("no master serves the slot yet")
                client = Redis(port=port, socket_connect_timeout=0.5, socket_timeout=2)
            async with client.pipeline(transaction=False) as pipe:
                pipe.xadd(key, encode_event(Ticked(n=n)))  # type: ignore[arg-type]
                pipe.wait(1, 1000)
                _, replicas = await pipe.execute()
            if int(replicas) < 1:
                raise ConnectionError("WAIT 1: no replica acknowledged")
        except (RedisError, OSError):
            out.refused += 1
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
            client = None
            await asyncio.sleep(0.05)
            continue
        out.acknowledged.append(n)
        if failed_over.is_set():
            out.after_failover.append(n)
        n += 1
        await asyncio.sleep(0.004)
    if client is not None:
        await client.aclose()


async def test_a_master_killed_under_load_fails_over_and_nothing_waited_for_is_lost(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with LocalCluster(
        masters=3, replicas_per_master=1, node_timeout_ms=1000, appendonly=True
    ) as cluster:
        redis = redis_client_from_url(cluster.url, socket_connect_timeout=1, socket_timeout=5)
        assert isinstance(redis, RedisCluster)
        keys = StreamKeys(PREFIX)
        await redis.initialize()  # the slot map, to find the master of the streams
        plain, waited, port = _streams_on_one_master(redis, keys)
        handled: dict[str, Counter[int]] = {plain: Counter(), waited: Counter()}
        router = JobRouter(
            group="failover",
            defaults=JobOptions(block_ms=50, visibility_timeout=2.0, backoff_base=0.05,
                                backoff_cap=0.5, jitter=0.0, timeout=5.0),
        )  # fmt: skip

        @router.event(Ticked, stream=plain)
        async def handle_plain(event: Ticked) -> None:
            handled[plain][event.n] += 1

        @router.event(Ticked, stream=waited)
        async def handle_waited(event: Ticked) -> None:
            handled[waited][event.n] += 1

        settings = ServiceSettings(otel_service_name="failover-test", stream_prefix=PREFIX)
        worker = Worker(
            router.routes, redis=redis, keys=keys, consumer="c1",
            telemetry=setup_telemetry(settings), maintenance_interval=0.2, grace=5.0,
        )  # fmt: skip
        await worker.ensure_groups()
        stop_worker, stop_producers, failed_over = asyncio.Event(), asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(worker.run(stop_worker))
        produced = {plain: Produced(), waited: Produced()}
        ports = [node.port for node in cluster.nodes]
        producers = [
            asyncio.create_task(_produce_plain(redis, keys.stream(plain), stop_producers,
                                               failed_over, produced[plain])),
            asyncio.create_task(_produce_waited(ports, keys.stream(waited), stop_producers,
                                                failed_over, produced[waited])),
        ]  # fmt: skip
        try:
            await eventually(lambda: all(len(p.acknowledged) >= 200 for p in produced.values()),
                             within=60)  # fmt: skip
            [victim] = [node for node in cluster.nodes if node.port == port]
            killed_at = time.monotonic()
            victim.kill()
            slot = key_slot(keys.stream(plain).encode())

            async def replica_promoted() -> int | None:
                master = await _master_port_of(ports, slot)
                return master if master not in (None, port) else None

            promoted = await eventually(replica_promoted, within=60, every=0.05)
            await asyncio.to_thread(cluster.wait_ok, 60)
            failed_over.set()
            outage = time.monotonic() - killed_at
            # The promoted replica has no replica of its own: WAIT 1 refuses until the old master
            # is back (it rejoins as the new master's replica), as an operator would bring it.
            victim.restart()
            # Load after the failover, then let the worker catch up.
            try:
                await eventually(
                    lambda: all(len(p.after_failover) >= 200 for p in produced.values()),
                    within=60,
                )
            except AssertionError:
                seen = {s: (len(p.acknowledged), len(p.after_failover), p.refused)
                        for s, p in produced.items()}  # fmt: skip
                raise AssertionError(
                    f"producers stalled after the failover (acked, after, refused): {seen}"
                ) from None
            stop_producers.set()
            await asyncio.gather(*producers)

            def caught_up() -> bool:
                return all(set(p.after_failover) <= set(handled[s]) for s, p in produced.items())

            try:
                await eventually(caught_up, within=60)
            except AssertionError:
                missing = {s: sorted(set(p.after_failover) - set(handled[s]))[:20]
                           for s, p in produced.items()}  # fmt: skip
                raise AssertionError(
                    f"the worker did not recover: entries published after the failover not "
                    f"handled within 60 s (first missing per stream): {missing}"
                ) from None
            # Entries lost in the failover never come; redeliveries of un-replicated deliveries
            # and acks come after the visibility timeout: wait out a quiet spell, then count.
            await _quiet(handled, seconds=4.0)
        finally:
            stop_producers.set()
            stop_worker.set()
            await asyncio.gather(*producers, return_exceptions=True)
            code = await asyncio.wait_for(running, 30)
            await redis.aclose()

        figures, lines = {}, []
        for label, stream in (("plain (no WAIT)", plain), ("WAIT 1", waited)):
            acked = set(produced[stream].acknowledged)
            lost = sorted(acked - set(handled[stream]))
            duplicated = sum(1 for count in handled[stream].values() if count > 1)
            figures[label] = (len(acked), len(lost), duplicated)
            lines.append(
                f"failover figures [{label}]: acknowledged {len(acked)}, handled "
                f"{len(handled[stream])}, lost {len(lost)} {lost[:10]}, duplicated {duplicated}, "
                f"refused while failing over {produced[stream].refused}"
            )
        lines.append(
            f"failover figures: master :{port} killed, replica :{promoted} promoted, cluster ok "
            f"again after {outage:.1f} s (node timeout 1.0 s), worker exit {code}"
        )
        with capsys.disabled():  # the scenario's figures, shown by `make chaos` when it passes
            print("\n" + "\n".join(lines), flush=True)
        assert promoted is not None
        assert promoted != port
        assert code == 0
        acked_waited, lost_waited, _ = figures["WAIT 1"]
        assert lost_waited == 0, f"an entry acknowledged after WAIT 1 was lost: {figures}"
        assert acked_waited >= 400


async def _quiet(handled: dict[str, Counter[int]], *, seconds: float) -> None:
    """Return once no entry has been handled for ``seconds`` (bounded at 60 s)."""
    deadline = time.monotonic() + 60
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        total = sum(sum(c.values()) for c in handled.values())
        if total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
        await asyncio.sleep(0.1)
