"""The consumer loop of one route: fetch, run handlers, acknowledge, retry, dead-letter, reclaim.

Guarantees (see docs/async-jobs.md):

* an entry is acknowledged only after its handler succeeded (or skipped) or after it was written
  to the dead-letter stream;
* a transient failure stays pending on this consumer while the group's retry set
  (``<stream key>:retry:<group>``) holds its due time (Redis server time); whichever consumer
  claims it when due runs the next attempt;
* entries of dead or stuck consumers are reclaimed after the visibility timeout; the leases of
  long-running handlers are extended meanwhile;
* acknowledgements and lifecycle events are batched into one pipeline per round trip.

A batch route (``batch=N``) runs in :class:`BatchRouteConsumer`: each worker takes up to N queued
entries, calls the handler once with their events, and acknowledges, skips or routes every entry's
failure as one; see docs/async-jobs.md, "Batch handlers".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError, ResponseError

from contracts import Event
from servicekit.errors import SkipJob
from servicekit.headers import LINK_TRACEPARENT
from servicekit.jobs._codec import FOR_GROUP_FIELD, EntryDecoder, UndecodableEntry, parent_context
from servicekit.jobs._delivery import Delivery
from servicekit.jobs._failures import FailureRouter
from servicekit.jobs._lifecycle import LifecycleEmitter
from servicekit.jobs._metrics import JobMetrics
from servicekit.jobs._outbound import Outbound
from servicekit.jobs._pending import PendingEntries, first_of, is_group_loss
from servicekit.jobs.routing import Route
from servicekit.keys import StreamKeys
from servicekit.metrics import observe_with_trace
from servicekit.redis_client import RedisClient

__all__ = ["BatchRouteConsumer", "GroupLostError", "RouteConsumer"]

_log = structlog.stdlib.get_logger("servicekit.jobs")
_FOR_GROUP = FOR_GROUP_FIELD.encode()


# An admitted entry: its delivery, decoded event and headers.
_Admitted = tuple[Delivery, Event, dict[str, Any]]


class GroupLostError(RuntimeError):
    """The consumer group (or its stream) vanished from Redis: nothing would be consumed."""


class HandlerCancelledError(Exception):
    """The handler was cancelled by something other than the runtime (retried as transient)."""


class RouteConsumer:
    """Consumes one route's streams as one consumer of its group."""

    def __init__(
        self,
        route: Route,
        handler: Callable[[Any], Awaitable[Any]],
        *,
        redis: RedisClient,
        keys: StreamKeys,
        consumer: str,
        tracer: trace.Tracer,
        metrics: JobMetrics,
        outbound: Outbound,
        lifecycle: LifecycleEmitter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.route = route
        self.handler = handler
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.tracer = tracer
        self.metrics = metrics
        self.outbound = outbound
        self.lifecycle = lifecycle
        self.options = route.options
        self.group = route.group
        self._group_name = route.group.encode()
        self.streams = [(keys.stream(s.name), s.name, s.weight) for s in route.streams]
        self._contract_name = {key: name for key, name, _ in self.streams}
        self._attempts_key = {name: keys.attempts(name, self.group) for _, name, _ in self.streams}
        self._span_names = {name: f"{name} process" for _, name, _ in self.streams}
        self._decode = EntryDecoder(route.accepted)
        # Resolved once: the hot path reads plain attributes, not properties.
        self._job_type = route.job_type
        self._carries_jobs = route.carries_jobs
        self._delivery_cap = self.options.delivery_cap
        self._timeout = self.options.timeout
        self._visibility = self.options.visibility_timeout
        self._counters: dict[tuple[str, str], Counter] = {}
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._timed_out: set[asyncio.Task[Any]] = set()
        self._queue: asyncio.Queue[Delivery | None] = asyncio.Queue()
        # Every entry this consumer holds, queued or running; its lease is kept alive and it is
        # never queued twice (a reclaim of an entry we still hold would run it twice).
        self._held: dict[tuple[str, bytes], Delivery] = {}
        self._space = asyncio.Event()
        self._space.set()
        self.paused: set[str] = set()
        self.pending = PendingEntries(
            redis,
            keys,
            group=self.group,
            consumer=consumer,
            streams=self.streams,
            visibility_timeout=self.options.visibility_timeout,
            held=self._held,
            put=self._put,
            room=self._room,
            paused=lambda: self.paused,
        )
        self.failures = FailureRouter(
            redis,
            keys,
            group=self.group,
            consumer=consumer,
            options=self.options,
            outbound=outbound,
            lifecycle=lifecycle,
            carries_jobs=self._carries_jobs,
            count=self._count,
            clock=clock,
        )
        self._max_outstanding = self.options.concurrency + self.options.read_count

    # ---- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, grace: float) -> None:
        """Consume until ``stop`` is set, then drain within ``grace`` seconds."""
        await self.pending.snapshot_own()
        await self.pending.enqueue_own()
        workers = [
            asyncio.create_task(self._work(), name=f"{self.route.name}-worker-{i}")
            for i in range(self.options.concurrency)
        ]
        drained = asyncio.Event()
        housekeeping = asyncio.create_task(
            self.pending.run(stop, drained), name=f"{self.route.name}-housekeeping"
        )
        watchdog = asyncio.create_task(self._watch_deadlines(drained))
        try:
            await self._fetch_until(stop)
        finally:
            try:
                await self._drain(workers, grace)
            finally:
                drained.set()
                for task in (housekeeping, watchdog):
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await asyncio.wait_for(task, 5)

    async def _fetch_until(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            capacity = self._max_outstanding - len(self._held)
            # Fetch whole batches only (workers still have up to `concurrency` entries meanwhile):
            # small reads would flatten the 6 : 3 : 1 priority split and cost more round trips.
            if capacity < self.options.read_count:
                self._space.clear()
                await first_of(stop.wait(), self._space.wait())
                continue
            active = [s for s in self.streams if s[0] not in self.paused]
            if not active:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                continue
            try:
                await self._read(active, min(capacity, self.options.read_count))
                failures = 0
            except ResponseError as exc:
                if is_group_loss(exc):
                    raise GroupLostError(f"{self.group} on {self.route.name}: {exc}") from exc
                failures += 1
                await self._back_off(stop, failures, exc)
            except (RedisError, OSError) as exc:
                failures += 1
                await self._back_off(stop, failures, exc)

    async def _back_off(self, stop: asyncio.Event, failures: int, exc: BaseException) -> None:
        delay = min(5.0, 0.1 * 2**failures)
        _log.warning("jobs.read_failed", route=self.route.name, error=repr(exc), retry_in=delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

    async def _read(self, streams: list[tuple[str, str, int]], count: int) -> None:
        """Read new entries: weighted non-blocking reads first, then one blocking read."""
        await self.outbound.flush()
        if len(streams) > 1:
            total = sum(w for _, _, w in streams)
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, _, weight in streams:
                    pipe.xreadgroup(
                        self.group, self.consumer, {key: ">"}, count=max(1, count * weight // total)
                    )
                replies = await pipe.execute(raise_on_error=False)
            # Queue what was delivered before raising: those entries are ours now.
            errors = [r for r in replies if isinstance(r, Exception)]
            got = sum(self._queue_read(r) for r in replies if not isinstance(r, Exception))
            if errors:
                raise errors[0]
            if got:
                return
        # Redis applies COUNT to each stream: over several streams the blocking read is only a
        # wake-up (one entry a stream, at most len(streams) <= read_count); the weighted reads
        # above take the rest 6 : 3 : 1 on the next pass.
        reply = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            {key: ">" for key, _, _ in streams},
            count=count if len(streams) == 1 else 1,
            block=self.options.block_ms,
        )
        self._queue_read(reply)

    def _queue_read(self, reply: Any) -> int:
        queued = 0
        for stream_key, entries in reply or ():
            key = stream_key.decode() if isinstance(stream_key, bytes) else stream_key
            name = self._contract_name[key]
            for entry_id, fields in entries:
                queued += self._put(Delivery(key, name, entry_id, fields))
        return queued

    def _put(self, delivery: Delivery) -> int:
        held = (delivery.stream_key, delivery.entry_id)
        if held in self._held:
            return 0  # already queued or running here
        delivery.leased_at = time.monotonic()
        self._held[held] = delivery
        self._queue.put_nowait(delivery)
        return 1

    async def _work(self) -> None:
        while True:
            delivery = await self._queue.get()
            if delivery is None:
                return
            try:
                await self._process(delivery)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the worker must survive; the entry stays pending
                _log.exception(
                    "jobs.delivery_failed",
                    stream=delivery.stream,
                    entry_id=delivery.entry_id.decode(),
                    error=repr(exc),
                )
            finally:
                self._held.pop((delivery.stream_key, delivery.entry_id), None)
                self._space.set()

    # ---- one delivery -------------------------------------------------------------------------

    async def _process(self, delivery: Delivery) -> None:
        delivery.started_at = time.time()
        admitted = await self._admit(delivery)
        if admitted is None:
            return
        _, event, headers = admitted
        duration, _ = self.metrics.for_route(delivery.stream, self.group, self._job_type)
        span = self._start_span(delivery, event, headers)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self._run_handler(delivery, event, span, duration)
        finally:
            otel_context.detach(token)
            span.end()

    async def _admit(self, delivery: Delivery) -> _Admitted | None:
        """Decode an entry for the handler, or settle it here and return None.

        Settled here: a redrive for another group (acknowledged), an undecodable entry and one
        past the delivery cap (dead-lettered). The single and the batch path share it.
        """
        target = delivery.fields.get(_FOR_GROUP)
        if target is not None and target != self._group_name:
            self._ack(delivery)  # another group's redrive: this group has processed it already
            return None
        _, wait = self.metrics.for_route(delivery.stream, self.group, self._job_type)
        wait.observe(max(0.0, delivery.started_at - delivery.ready_at))
        try:
            event, headers = self._decode(delivery.fields)
        except UndecodableEntry as exc:
            await self.failures.dead_letter(delivery, exc, None)
            return None
        if delivery.deliveries > self._delivery_cap:
            error = RuntimeError(
                f"delivery cap exceeded: delivered {delivery.deliveries} times "
                f"(cap {self._delivery_cap}); its consumer probably crashed each time"
            )
            await self.failures.dead_letter(delivery, error, event)
            return None
        return delivery, event, headers

    async def _run_handler(
        self, delivery: Delivery, event: Event, span: trace.Span, duration: Histogram
    ) -> None:
        carries_jobs = self._carries_jobs
        if carries_jobs:
            self.lifecycle.started(event, delivery, self.group)
        started = time.perf_counter()
        try:
            await self._call_handler(event)
        except SkipJob as skip:
            observe_with_trace(duration, time.perf_counter() - started)
            self._ack(delivery)
            if carries_jobs:
                self.lifecycle.skipped(event, delivery, self.group, str(skip))
            self._count(delivery.stream, "skipped")
            return
        except Exception as exc:
            observe_with_trace(duration, time.perf_counter() - started)
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            await self.failures.handle(delivery, event, exc)
            return
        observe_with_trace(duration, time.perf_counter() - started)
        self._ack(delivery)
        if carries_jobs:
            self.lifecycle.succeeded(event, delivery, self.group)
        self._count(delivery.stream, "succeeded")

    async def _call_handler(self, event: Event | list[Event]) -> Any:
        """Run the handler under the deadline watchdog; turn its cancellation into errors."""
        task = cast("asyncio.Task[Any]", asyncio.current_task())  # always a worker task
        timed_out = False
        try:
            try:
                self._deadlines[task] = time.monotonic() + self._timeout
                return await self.handler(event)
            finally:
                self._deadlines.pop(task, None)
                if task in self._timed_out:
                    # Whatever the handler made of the watchdog's cancel, undo it here, so the
                    # worker's next await is not cancelled and the next deadline is enforced.
                    self._timed_out.discard(task)
                    task.uncancel()
                    timed_out = True
        except asyncio.CancelledError:
            if timed_out:
                raise TimeoutError(f"handler ran longer than {self._timeout} s") from None
            if task.cancelling() == 0:
                raise HandlerCancelledError("the handler was cancelled") from None
            raise  # the runtime itself is stopping this worker

    def _start_span(self, delivery: Delivery, event: Event, headers: dict[str, Any]) -> trace.Span:
        attributes: dict[str, str | int] = {
            "messaging.destination.name": delivery.stream,
            "messaging.message.id": delivery.entry_id.decode(),
            "event.type": event.type,
            "job.attempt": delivery.attempt,
            "job.delivery_count": delivery.deliveries,
        }
        if self._carries_jobs:
            attributes["job.id"] = str(getattr(event, "job_id", ""))
        links = []
        failed = headers.get("failed_traceparent")
        if isinstance(failed, str):
            # A redrive stays in the producer's trace and links to the attempt that failed.
            failed_context = trace.get_current_span(parent_context(failed)).get_span_context()
            links.append(
                trace.Link(
                    failed_context, {"job.redriven_from": str(headers.get("redriven_from", ""))}
                )
            )
        linked = headers.get(LINK_TRACEPARENT)
        if isinstance(linked, str):
            # A fan-out's child: its own trace, linked to the span that created it.
            linked_context = trace.get_current_span(parent_context(linked)).get_span_context()
            links.append(trace.Link(linked_context, {"job.fanout_link": True}))
        traceparent = headers.get("traceparent")
        return self.tracer.start_span(
            self._span_names[delivery.stream],
            context=parent_context(traceparent if isinstance(traceparent, str) else None),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )

    def _count(self, stream: str, status: str) -> None:
        key = (stream, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.processed.labels(
                self.metrics.service, stream, self.group, self._job_type, status
            )
        counter.inc()

    async def _watch_deadlines(self, done: asyncio.Event) -> None:
        """Cancel handlers that overran the timeout (one timer for all, not one per message)."""
        tick = max(0.01, min(0.1, self._timeout / 2))
        while not done.is_set():
            now = time.monotonic()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._timed_out:
                    self._timed_out.add(task)
                    task.cancel()
            await asyncio.sleep(tick)

    def _room(self) -> int:
        return self._max_outstanding - len(self._held)

    def _ack(self, delivery: Delivery) -> None:
        self.outbound.ack(
            delivery.stream_key,
            self.group,
            delivery.entry_id,
            clear_history=delivery.history is not None,
            attempts_key=self._attempts_key[delivery.stream],
        )

    # ---- shutdown -------------------------------------------------------------------------------

    async def _drain(self, workers: list[asyncio.Task[None]], grace: float) -> None:
        """Release queued entries at once, let running handlers finish within ``grace``.

        Unstarted entries are released before waiting, so another consumer takes them over at its
        next reclaim instead of after this drain. Acks of handlers that finish meanwhile are flushed
        as they come (the worker keeps its flusher running until every route has drained).
        """
        # A claim finishing after the release would take the released entries back.
        await self.pending.stop_claiming()
        unstarted: list[Delivery] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                unstarted.append(item)
                self._held.pop((item.stream_key, item.entry_id), None)
        for _ in workers:
            self._queue.put_nowait(None)
        await self.pending.release(unstarted)
        _, still_running = await asyncio.wait(workers, timeout=grace)
        abandoned = [d for d in self._held.values() if d.started_at]
        for task in still_running:
            task.cancel()
        if still_running:
            # A handler that ignores cancellation must not hang the shutdown.
            await asyncio.wait(still_running, timeout=5)
        with contextlib.suppress(Exception):
            await self.outbound.flush()
        await self.pending.release(abandoned)
        if abandoned:
            _log.warning("jobs.shutdown_abandoned", route=self.route.name, count=len(abandoned))


class BatchRouteConsumer(RouteConsumer):
    """Consumes a batch route: each worker hands up to ``route.batch`` ready entries to one call.

    A worker takes what is queued when it is free, never waiting for more. Undecodable entries and
    entries past the delivery cap are dead-lettered alone and left out of the batch. The handler's
    outcome applies to every entry: success acknowledges all, SkipJob skips all, any other error
    goes through the failure routing entry by entry (a retry or a dead letter each), so a failed
    batch never loses or acknowledges an entry.
    """

    def __init__(self, route: Route, handler: Callable[[Any], Awaitable[Any]], **kwargs: Any):
        super().__init__(route, handler, **kwargs)
        self._batch = route.batch or 1
        # Read at least a batch at a time; hold a batch for every worker besides one read.
        self.options = replace(self.options, read_count=max(self.options.read_count, self._batch))
        self._max_outstanding = self.options.concurrency * self._batch + self.options.read_count
        names = {name for _, name, _ in self.streams}
        self._batch_span_name = (
            f"{names.pop()} process" if len(names) == 1 else f"{self._job_type} process"
        )

    async def _work(self) -> None:
        queue, limit = self._queue, self._batch
        while True:
            first = await queue.get()
            if first is None:
                return
            taken, last = [first], False
            while len(taken) < limit and not queue.empty():
                item = queue.get_nowait()
                if item is None:  # the drain's stop signal for this worker: finish the batch
                    last = True
                    break
                taken.append(item)
            now = time.time()
            for delivery in taken:
                delivery.started_at = now  # a drain releases them if this batch is abandoned
            try:
                await self._process_batch(taken)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the worker must survive; the entries stay pending
                _log.exception(
                    "jobs.batch_failed", route=self.route.name, entries=len(taken), error=repr(exc)
                )
            finally:
                for delivery in taken:
                    self._held.pop((delivery.stream_key, delivery.entry_id), None)
                self._space.set()
            if last:
                return

    async def _process_batch(self, deliveries: list[Delivery]) -> None:
        admitted: list[_Admitted] = []
        for delivery in deliveries:
            entry = await self._admit(delivery)
            if entry is not None:
                admitted.append(entry)
        if not admitted:
            return
        span = self._start_batch_span(admitted)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self._run_batch(admitted, span)
        finally:
            otel_context.detach(token)
            span.end()

    async def _run_batch(self, admitted: list[_Admitted], span: trace.Span) -> None:
        carries_jobs = self._carries_jobs
        if carries_jobs:
            for delivery, event, _ in admitted:
                self.lifecycle.started(event, delivery, self.group)
        # One observation per call, labelled with the first entry's stream.
        duration, _ = self.metrics.for_route(admitted[0][0].stream, self.group, self._job_type)
        started = time.perf_counter()
        try:
            outcome = await self._call_handler([event for _, event, _ in admitted])
        except SkipJob as skip:
            observe_with_trace(duration, time.perf_counter() - started)
            for delivery, event, _ in admitted:
                self._ack(delivery)
                if carries_jobs:
                    self.lifecycle.skipped(event, delivery, self.group, str(skip))
                self._count(delivery.stream, "skipped")
            return
        except Exception as exc:
            observe_with_trace(duration, time.perf_counter() - started)
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            await self._route_failures([(entry, exc) for entry in admitted])
            return
        observe_with_trace(duration, time.perf_counter() - started)
        # A handler may settle entries one by one: it returns {event_id: exception} for the
        # entries that did not succeed (SkipJob: skipped; any other: retried or dead-lettered).
        settled: Mapping[Any, BaseException] = outcome if isinstance(outcome, Mapping) else {}
        failed: list[tuple[_Admitted, Exception]] = []
        for entry in admitted:
            delivery, event, _ = entry
            problem = settled.get(event.event_id)
            if isinstance(problem, SkipJob):
                self._ack(delivery)
                if carries_jobs:
                    self.lifecycle.skipped(event, delivery, self.group, str(problem))
                self._count(delivery.stream, "skipped")
            elif isinstance(problem, Exception):
                failed.append((entry, problem))
            else:
                self._ack(delivery)
                if carries_jobs:
                    self.lifecycle.succeeded(event, delivery, self.group)
                self._count(delivery.stream, "succeeded")
        if failed:
            await self._route_failures(failed)

    async def _route_failures(self, failed: Sequence[tuple[_Admitted, Exception]]) -> None:
        """Retry or dead-letter each entry; one that cannot be routed stays pending (reclaimed)."""
        outcomes = await asyncio.gather(
            *(self.failures.handle(delivery, event, exc) for (delivery, event, _), exc in failed),
            return_exceptions=True,
        )
        for ((delivery, _, _), _), outcome in zip(failed, outcomes, strict=True):
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            if isinstance(outcome, BaseException):
                _log.error(
                    "jobs.delivery_failed",
                    stream=delivery.stream,
                    entry_id=delivery.entry_id.decode(),
                    error=repr(outcome),
                )

    def _start_batch_span(self, admitted: list[_Admitted]) -> trace.Span:
        """One consumer span per call, linked to every entry's producer span.

        As OpenTelemetry's messaging conventions advise: a batch of one is a child of its producer
        (as on the single path); a larger batch starts its own trace, and each producer's trace
        reaches it through its link.
        """
        links = []
        parent = None
        for delivery, event, headers in admitted:
            traceparent = headers.get("traceparent")
            producer = parent_context(traceparent if isinstance(traceparent, str) else None)
            attributes: dict[str, str | int] = {
                "messaging.destination.name": delivery.stream,
                "messaging.message.id": delivery.entry_id.decode(),
                "job.attempt": delivery.attempt,
                "job.delivery_count": delivery.deliveries,
            }
            if self._carries_jobs:
                attributes["job.id"] = str(getattr(event, "job_id", ""))
            if producer is not None:
                parent = producer
                links.append(
                    trace.Link(trace.get_current_span(producer).get_span_context(), attributes)
                )
            failed = headers.get("failed_traceparent")
            if isinstance(failed, str):
                failed_context = trace.get_current_span(parent_context(failed)).get_span_context()
                links.append(
                    trace.Link(
                        failed_context, {"job.redriven_from": str(headers.get("redriven_from", ""))}
                    )
                )
            linked = headers.get(LINK_TRACEPARENT)
            if isinstance(linked, str):
                linked_context = trace.get_current_span(parent_context(linked)).get_span_context()
                links.append(trace.Link(linked_context, {"job.fanout_link": True}))
        first = admitted[0][0]
        return self.tracer.start_span(
            self._batch_span_name,
            context=parent if len(admitted) == 1 else otel_context.Context(),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.destination.name": first.stream,
                "messaging.batch.message_count": len(admitted),
            },
            links=links,
        )
