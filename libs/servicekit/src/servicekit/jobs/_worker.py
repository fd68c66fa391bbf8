"""The worker: runs a service's routes, keeps its streams healthy, and stops gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

import structlog
from redis.exceptions import ResponseError

from contracts import CONSUMER_GROUPS, KNOWN_STREAMS, Event
from servicekit.jobs._consumer import BatchRouteConsumer, GroupLostError, RouteConsumer
from servicekit.jobs._lifecycle import LifecycleEmitter
from servicekit.jobs._maintenance import RetentionPolicy, StreamMaintenance
from servicekit.jobs._metrics import JobMetrics
from servicekit.jobs._migration import migrate_keys
from servicekit.jobs._outbound import Outbound
from servicekit.jobs.routing import Route
from servicekit.keys import StreamKeys
from servicekit.ops import Readiness
from servicekit.redis_client import RedisClient
from servicekit.telemetry import Telemetry

__all__ = ["EXIT_GROUP_LOST", "Worker", "bind_dependencies"]

_log = structlog.stdlib.get_logger("servicekit.jobs")
EXIT_GROUP_LOST = 3
# Streams the platform publishes and no declared group reads: every worker trims them by age and
# length (idempotent, so replicas and services may all do it).
UNREAD_STREAMS = tuple(sorted(KNOWN_STREAMS - {pair.stream for pair in CONSUMER_GROUPS}))


def bind_dependencies(
    handler: Callable[..., Awaitable[Any]], dependencies: Mapping[str, object]
) -> Callable[[Event], Awaitable[Any]]:
    """Bind a handler's parameters after the first (the event) by name, failing fast if missing."""
    parameters = list(inspect.signature(handler).parameters.values())[1:]
    missing = [p.name for p in parameters if p.name not in dependencies and p.default is p.empty]
    if missing:
        name = getattr(handler, "__name__", repr(handler))
        msg = f"handler {name} needs {', '.join(missing)}: pass them in the worker's dependencies"
        raise TypeError(msg)
    bound = {p.name: dependencies[p.name] for p in parameters if p.name in dependencies}
    return functools.partial(handler, **bound) if bound else handler


class Worker:
    """Consumes a service's routes with every guarantee of the job runtime."""

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        redis: RedisClient,
        keys: StreamKeys,
        consumer: str,
        telemetry: Telemetry,
        dependencies: Mapping[str, object] | None = None,
        readiness: Readiness | None = None,
        required_groups: Mapping[str, set[str]] | None = None,
        retention: RetentionPolicy | None = None,
        unread_streams: Collection[str] | None = None,
        maintenance_interval: float = 5.0,
        grace: float = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.routes = list(routes)
        self.grace = grace
        self.readiness = readiness or Readiness()
        self.maintenance_interval = maintenance_interval
        self.metrics = JobMetrics.for_registry(telemetry.registry, telemetry.service)
        self.outbound = Outbound(redis)
        lifecycle = LifecycleEmitter(self.outbound, keys, producer=telemetry.service)
        tracer = telemetry.tracer_provider.get_tracer("servicekit.jobs")
        self.consumers = [
            (BatchRouteConsumer if route.batch else RouteConsumer)(
                route,
                bind_dependencies(route.handler, dependencies or {}),
                redis=redis,
                keys=keys,
                consumer=consumer,
                tracer=tracer,
                metrics=self.metrics,
                outbound=self.outbound,
                lifecycle=lifecycle,
                clock=clock,
            )
            for route in self.routes
        ]
        streams: dict[str, set[str]] = {}
        for route in self.routes:
            for stream in route.streams:
                streams.setdefault(stream.name, set()).add(route.group)
        if required_groups is None:
            # Trim nothing a group the platform declares still needs, even before it first runs.
            declared: dict[str, set[str]] = {}
            for pair in CONSUMER_GROUPS:
                if pair.stream in streams:
                    declared.setdefault(pair.stream, set()).add(pair.group)
            required_groups = declared
        self.maintenance = StreamMaintenance(
            redis,
            keys,
            self.metrics,
            streams=streams,
            required_groups=dict(required_groups or {}),
            retention=retention,
            unread_streams=unread_streams if unread_streams is not None else UNREAD_STREAMS,
        )

    async def ensure_groups(self) -> None:
        """Create every consumed group at id 0 with MKSTREAM (events sent earlier are delivered).

        Streams still under the earlier key names are moved first (see ``jobs.migration``).
        """
        await self._migrate_keys()
        for route in self.routes:
            for stream in route.streams:
                try:
                    await self.redis.xgroup_create(
                        self.keys.stream(stream.name), route.group, id="0", mkstream=True
                    )
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    async def _migrate_keys(self) -> None:
        streams = [*self.maintenance.streams, *self.maintenance.unread_streams]
        await migrate_keys(self.redis, self.keys, streams)

    async def run(self, stop: asyncio.Event) -> int:
        """Consume until ``stop``; return the process exit code (non-zero if a group vanished)."""
        await self.ensure_groups()
        await self._refresh_pauses()  # a group paused before start takes nothing
        halt = asyncio.Event()
        # Acks keep flowing until every route has drained: a handler that finishes during the
        # shutdown grace is acknowledged at once, not after the last one (or never, if killed).
        drained = asyncio.Event()
        flusher = asyncio.create_task(self.outbound.run(drained), name="jobs-outbound")
        flusher.add_done_callback(self._fail_if_crashed)
        upkeep = asyncio.create_task(self._maintain(halt), name="jobs-maintenance")
        consumers = [
            asyncio.create_task(c.run(halt, self.grace), name=f"jobs-{c.route.name}")
            for c in self.consumers
        ]
        stopper = asyncio.create_task(stop.wait())
        exit_code = 0
        pending: set[asyncio.Task[Any]] = {stopper, upkeep, *consumers}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is stopper or task.cancelled():
                    continue
                error = task.exception()
                if isinstance(error, GroupLostError):
                    exit_code = EXIT_GROUP_LOST
                    self.readiness.fail(str(error))
                    _log.error("jobs.group_lost", error=str(error))
                elif error is not None:
                    exit_code = 1
                    self.readiness.fail(f"{task.get_name()} failed: {error!r}")
                    _log.error(
                        "jobs.task_failed", task=task.get_name(), error=repr(error), exc_info=error
                    )
            if stop.is_set() or exit_code:
                halt.set()
                stopper.cancel()
                pending.discard(stopper)
            if halt.is_set() and pending <= {upkeep}:
                upkeep.cancel()
        halt.set()
        drained.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await flusher
        _log.info("jobs.stopped", exit_code=exit_code)
        return exit_code

    def _fail_if_crashed(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.readiness.fail(f"{task.get_name()} failed: {task.exception()!r}")
            _log.error("jobs.task_failed", task=task.get_name(), error=repr(task.exception()))

    async def _refresh_pauses(self) -> None:
        paused = await self.maintenance.paused()
        for consumer in self.consumers:
            consumer.paused = {self.keys.stream(s) for s, g in paused if g == consumer.group}
            for stream, group in self.maintenance.pairs():
                self.metrics.paused.labels(stream, group).set(1 if (stream, group) in paused else 0)

    async def _maintain(self, halt: asyncio.Event) -> None:
        last_trim = 0.0
        while not halt.is_set():
            try:
                await self._refresh_pauses()
                missing = await self.maintenance.missing_groups()
                if missing:
                    raise GroupLostError(f"consumer groups vanished: {', '.join(missing)}")
                await self.maintenance.sample()
                if time.monotonic() - last_trim >= self.maintenance_interval:
                    last_trim = time.monotonic()
                    # An old producer may still write under the earlier names mid-upgrade.
                    await self._migrate_keys()
                    for stream in self.maintenance.streams:
                        await self.maintenance.trim(stream)
                    for stream in self.maintenance.unread_streams:
                        await self.maintenance.trim_unread(stream)
                    await self.maintenance.prune_consumers()
            except GroupLostError:
                raise
            except Exception as exc:  # upkeep must not stop consumption; it retries next tick
                _log.warning("jobs.maintenance_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), min(1.0, self.maintenance_interval))
