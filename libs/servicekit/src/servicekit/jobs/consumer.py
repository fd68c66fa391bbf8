"""The consumer loop of one route: fetch, run handlers, acknowledge, retry, dead-letter, reclaim.

Guarantees (see docs/async-jobs.md):

* an entry is acknowledged only after its handler succeeded (or skipped) or after it was written
  to the dead-letter stream;
* a transient failure stays pending on this consumer while ``{<stream>}:retry`` holds its due
  time; whichever consumer claims it when due runs the next attempt;
* entries of dead or stuck consumers are reclaimed after the visibility timeout; the leases of
  long-running handlers are extended meanwhile;
* acknowledgements and lifecycle events are batched into one pipeline per round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from contracts import Event, JobRequest
from servicekit.errors import ErrorKind, SkipJob, classify
from servicekit.jobs.codec import EntryDecoder, UndecodableEntry, parent_context
from servicekit.jobs.delivery import AttemptHistory, Delivery
from servicekit.jobs.lifecycle import LifecycleEmitter
from servicekit.jobs.metrics import JobMetrics
from servicekit.jobs.options import backoff_delay
from servicekit.jobs.outbound import Outbound
from servicekit.jobs.routing import Route
from servicekit.jobs.scripts import CLAIM_DUE, RECLAIM_IDLE, SET_IDLE
from servicekit.keys import StreamKeys

__all__ = ["GroupLostError", "RouteConsumer"]

_log = structlog.stdlib.get_logger("servicekit.jobs")
_RELEASED_IDLE_MS = 10 * 24 * 3600 * 1000


class GroupLostError(RuntimeError):
    """The consumer group (or its stream) vanished from Redis: nothing would be consumed."""


def _is_group_loss(exc: ResponseError) -> bool:
    text = str(exc)
    return "NOGROUP" in text or "no longer exists" in text


class RouteConsumer:
    """Consumes one route's streams as one consumer of its group."""

    def __init__(
        self,
        route: Route,
        handler: Callable[[Event], Awaitable[Any]],
        *,
        redis: Redis,
        keys: StreamKeys,
        consumer: str,
        tracer: trace.Tracer,
        metrics: JobMetrics,
        outbound: Outbound,
        lifecycle: LifecycleEmitter,
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
        self.streams = [(keys.stream(s.name), s.name, s.weight) for s in route.streams]
        self._contract_name = {key: name for key, name, _ in self.streams}
        self._span_names = {name: f"{name} process" for _, name, _ in self.streams}
        self._decode = EntryDecoder(route.accepted)
        # Resolved once: the hot path reads plain attributes, not properties.
        self._job_type = route.job_type
        self._carries_jobs = route.carries_jobs
        self._delivery_cap = self.options.delivery_cap
        self._timeout = self.options.timeout
        self._counters: dict[tuple[str, str], Counter] = {}
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._timed_out: set[asyncio.Task[Any]] = set()
        self._queue: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self._outstanding = 0
        self._space = asyncio.Event()
        self._space.set()
        self._inflight: dict[tuple[str, bytes], Delivery] = {}
        self.paused: set[str] = set()
        self._claim_due = redis.register_script(CLAIM_DUE)
        self._reclaim = redis.register_script(RECLAIM_IDLE)
        self._set_idle = redis.register_script(SET_IDLE)
        self._max_outstanding = self.options.concurrency + self.options.read_count

    # ---- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, grace: float) -> None:
        """Consume until ``stop`` is set, then drain within ``grace`` seconds."""
        await self._enqueue_own_pending()
        workers = [
            asyncio.create_task(self._work(), name=f"{self.route.name}-worker-{i}")
            for i in range(self.options.concurrency)
        ]
        housekeeping = asyncio.create_task(self._housekeep(stop), name=f"{self.route.name}-hk")
        watchdog_stop = asyncio.Event()
        watchdog = asyncio.create_task(self._watch_deadlines(watchdog_stop))
        try:
            await self._fetch_until(stop)
        finally:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            await self._drain(workers, grace)
            watchdog_stop.set()
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _fetch_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            capacity = self._max_outstanding - self._outstanding
            # Fetch whole batches only (workers still have up to `concurrency` entries meanwhile):
            # small reads would flatten the 6 : 3 : 1 priority split and cost more round trips.
            if capacity < self.options.read_count:
                self._space.clear()
                stopped = asyncio.create_task(stop.wait())
                space = asyncio.create_task(self._space.wait())
                await asyncio.wait({stopped, space}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                space.cancel()
                continue
            active = [s for s in self.streams if s[0] not in self.paused]
            if not active:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                continue
            try:
                batch = await self._read(active, min(capacity, self.options.read_count))
            except ResponseError as exc:
                if _is_group_loss(exc):
                    raise GroupLostError(f"{self.group} on {self.route.name}: {exc}") from exc
                raise
            for delivery in batch:
                self._put(delivery)

    async def _read(self, streams: list[tuple[str, str, int]], count: int) -> list[Delivery]:
        """Read new entries: weighted non-blocking reads first, then one blocking read."""
        await self.outbound.flush()
        if len(streams) > 1:
            total = sum(w for _, _, w in streams)
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, _, weight in streams:
                    pipe.xreadgroup(
                        self.group, self.consumer, {key: ">"}, count=max(1, count * weight // total)
                    )
                replies = await pipe.execute(raise_on_error=True)
            batch = [d for reply in replies for d in self._parse_read(reply)]
            if batch:
                return batch
        reply = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            {key: ">" for key, _, _ in streams},
            count=count,
            block=self.options.block_ms,
        )
        return self._parse_read(reply)

    def _parse_read(self, reply: Any) -> list[Delivery]:
        out: list[Delivery] = []
        for stream_key, entries in reply or ():
            key = stream_key.decode() if isinstance(stream_key, bytes) else stream_key
            name = self._contract_name[key]
            for entry_id, fields in entries:
                out.append(Delivery(key, name, entry_id, fields))
        return out

    def _put(self, delivery: Delivery) -> None:
        self._outstanding += 1
        self._queue.put_nowait(delivery)

    async def _work(self) -> None:
        while True:
            delivery = await self._queue.get()
            if delivery is None:
                return
            key = (delivery.stream_key, delivery.entry_id)
            self._inflight[key] = delivery
            try:
                await self._process(delivery)
            finally:
                del self._inflight[key]
                self._outstanding -= 1
                self._space.set()

    # ---- one delivery -------------------------------------------------------------------------

    async def _process(self, delivery: Delivery) -> None:
        stream = delivery.stream
        duration, wait = self.metrics.for_route(stream, self.group, self._job_type)
        delivery.started_at = time.time()
        wait.observe(max(0.0, delivery.started_at - delivery.ready_at))
        if delivery.deliveries > self._delivery_cap:
            error = RuntimeError(
                f"delivery cap exceeded: delivered {delivery.deliveries} times "
                f"(cap {self._delivery_cap}); its consumer probably crashed each time"
            )
            await self._dead_letter(delivery, error, None)
            return
        try:
            event, headers = self._decode(delivery.fields)
        except UndecodableEntry as exc:
            await self._dead_letter(delivery, exc, None)
            return
        span = self._start_span(delivery, event, headers)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self._run_handler(delivery, event, span, duration)
        finally:
            otel_context.detach(token)
            span.end()

    async def _run_handler(
        self, delivery: Delivery, event: Event, span: trace.Span, duration: Histogram
    ) -> None:
        carries_jobs = self._carries_jobs
        if carries_jobs:
            self.lifecycle.started(event, delivery, self.group)
        task = cast("asyncio.Task[Any]", asyncio.current_task())  # always inside a worker task
        started = time.perf_counter()
        try:
            self._deadlines[task] = time.monotonic() + self._timeout
            try:
                await self.handler(event)
            except asyncio.CancelledError:
                if task not in self._timed_out:
                    raise
                self._timed_out.discard(task)
                task.uncancel()
                raise TimeoutError(f"handler ran longer than {self._timeout} s") from None
            finally:
                self._deadlines.pop(task, None)
        except SkipJob as skip:
            duration.observe(time.perf_counter() - started)
            self._ack(delivery)
            if carries_jobs:
                self.lifecycle.skipped(event, delivery, self.group, str(skip))
            self._count(delivery.stream, "skipped")
            return
        except Exception as exc:
            duration.observe(time.perf_counter() - started)
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            await self._handle_failure(delivery, event, exc)
            return
        duration.observe(time.perf_counter() - started)
        self._ack(delivery)
        if carries_jobs:
            self.lifecycle.succeeded(event, delivery, self.group)
        self._count(delivery.stream, "succeeded")

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
        if failed:
            # A redrive stays in the producer's trace and links to the attempt that failed.
            failed_context = trace.get_current_span(parent_context(failed)).get_span_context()
            links.append(
                trace.Link(failed_context, {"job.redriven_from": headers.get("redriven_from", "")})
            )
        return self.tracer.start_span(
            self._span_names[delivery.stream],
            context=parent_context(headers.get("traceparent")),
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

    async def _watch_deadlines(self, stop: asyncio.Event) -> None:
        """Cancel handlers that overran the timeout (one timer for all, not one per message)."""
        tick = max(0.01, min(0.1, self._timeout / 2))
        while not stop.is_set() or self._deadlines:
            now = time.monotonic()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._timed_out:
                    self._timed_out.add(task)
                    task.cancel()
            await asyncio.sleep(tick)

    def _ack(self, delivery: Delivery) -> None:
        self.outbound.ack(
            delivery.stream_key,
            self.group,
            delivery.entry_id,
            clear_history=delivery.history is not None,
            attempts_key=self.keys.companion(delivery.stream, "attempts"),
        )

    async def _handle_failure(self, delivery: Delivery, event: Event, exc: Exception) -> None:
        permanent = classify(exc) is ErrorKind.PERMANENT
        if permanent or delivery.attempt >= self.options.max_attempts:
            await self._dead_letter(delivery, exc, event)
            return
        history = delivery.history or AttemptHistory()
        due = time.time() + backoff_delay(self.options, history.failures + 1)
        history.record(exc, due)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(
                self.keys.companion(delivery.stream, "attempts"),
                delivery.entry_id,
                history.to_json(),
            )
            pipe.zadd(
                self.keys.companion(delivery.stream, "retry"), {delivery.entry_id: int(due * 1000)}
            )
            await pipe.execute()
        self._count(delivery.stream, "retrying")
        if self.route.carries_jobs:
            self.lifecycle.retrying(event, delivery, self.group, exc, due)
        _log.warning(
            "job.retry_scheduled",
            stream=delivery.stream,
            entry_id=delivery.entry_id.decode(),
            attempt=history.failures,
            next_attempt_in=round(due - time.time(), 3),
            error_class=type(exc).__name__,
            error=str(exc),
        )

    async def _dead_letter(
        self, delivery: Delivery, exc: BaseException, event: Event | None
    ) -> None:
        history = delivery.history or AttemptHistory()
        history.record(exc, None)
        span_context = trace.get_current_span().get_span_context()
        trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else ""
        span_id = format(span_context.span_id, "016x") if span_context.is_valid else ""
        dead_letter_id = await self.outbound.dead_letter(
            delivery,
            group=self.group,
            consumer=self.consumer,
            history=history,
            trace_id=trace_id,
            span_id=span_id,
            dead_letters_key=self.keys.dead_letters(delivery.stream),
            retry_key=self.keys.companion(delivery.stream, "retry"),
            attempts_key=self.keys.companion(delivery.stream, "attempts"),
        )
        self._count(delivery.stream, "dead")
        if event is not None and isinstance(event, JobRequest):
            self.lifecycle.dead_lettered(
                event,
                delivery,
                self.group,
                exc,
                history.failures,
                self.keys.dead_letters(delivery.stream),
                dead_letter_id,
            )
        _log.error(
            "job.dead_lettered",
            stream=delivery.stream,
            entry_id=delivery.entry_id.decode(),
            attempts=history.failures,
            error_class=type(exc).__name__,
            error=str(exc),
        )

    # ---- pending entries ------------------------------------------------------------------------

    async def _enqueue_own_pending(self) -> None:
        """A restarted consumer first drains the entries it still owns."""
        for key, name, _ in self.streams:
            replies = await self._reclaim(
                keys=[
                    key,
                    self.keys.companion(name, "retry"),
                    self.keys.companion(name, "attempts"),
                ],
                args=[self.group, self.consumer, 0, 10_000, "1"],
            )
            self._enqueue_claimed(key, name, replies)

    def _enqueue_claimed(self, key: str, name: str, replies: Any) -> int:
        for entry_id, flat_fields, history, deliveries in replies or ():
            fields = dict(zip(flat_fields[::2], flat_fields[1::2], strict=True))
            self._put(
                Delivery(
                    key, name, entry_id, fields, int(deliveries), AttemptHistory.from_json(history)
                )
            )
        return len(replies or ())

    async def _housekeep(self, stop: asyncio.Event) -> None:
        """Claim due retries often, reclaim idle entries and extend leases less often."""
        reclaim_every = max(0.2, min(5.0, self.options.visibility_timeout / 4))
        lease_every = max(0.2, self.options.visibility_timeout / 3)
        last_reclaim = last_lease = 0.0
        while not stop.is_set():
            try:
                now = time.monotonic()
                await self._claim_due_retries()
                if now - last_reclaim >= reclaim_every:
                    last_reclaim = now
                    await self._reclaim_idle()
                if now - last_lease >= lease_every:
                    last_lease = now
                    await self._extend_leases()
            except ResponseError as exc:
                if _is_group_loss(exc):
                    return
                _log.warning("jobs.housekeeping_failed", error=str(exc))
            except (ConnectionError, OSError) as exc:
                _log.warning("jobs.housekeeping_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)

    async def _claim_due_retries(self) -> None:
        now_ms = int(time.time() * 1000)
        for key, name, _ in self.streams:
            room = self._max_outstanding - self._outstanding
            if room <= 0 or key in self.paused:
                return
            replies = await self._claim_due(
                keys=[
                    key,
                    self.keys.companion(name, "retry"),
                    self.keys.companion(name, "attempts"),
                ],
                args=[self.group, self.consumer, now_ms, room],
            )
            self._enqueue_claimed(key, name, replies)

    async def _reclaim_idle(self) -> None:
        min_idle = int(self.options.visibility_timeout * 1000)
        for key, name, _ in self.streams:
            room = self._max_outstanding - self._outstanding
            if room <= 0 or key in self.paused:
                return
            replies = await self._reclaim(
                keys=[
                    key,
                    self.keys.companion(name, "retry"),
                    self.keys.companion(name, "attempts"),
                ],
                args=[self.group, self.consumer, min_idle, room, "0"],
            )
            if self._enqueue_claimed(key, name, replies):
                _log.info("jobs.reclaimed", stream=name, count=len(replies))

    async def _extend_leases(self) -> None:
        threshold = time.time() - self.options.visibility_timeout / 3
        by_stream: dict[str, list[bytes]] = {}
        for (key, entry_id), delivery in list(self._inflight.items()):
            if delivery.started_at and delivery.started_at < threshold:
                by_stream.setdefault(key, []).append(entry_id)
        for key, ids in by_stream.items():
            await self._set_idle(keys=[key], args=[self.group, self.consumer, 0, *ids])

    # ---- shutdown -------------------------------------------------------------------------------

    async def _drain(self, workers: list[asyncio.Task[None]], grace: float) -> None:
        """Release queued entries, let running handlers finish within ``grace``, flush acks."""
        unstarted: list[Delivery] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                unstarted.append(item)
                self._outstanding -= 1
        for _ in workers:
            self._queue.put_nowait(None)
        _, still_running = await asyncio.wait(workers, timeout=grace)
        abandoned = list(self._inflight.values())
        for task in still_running:
            task.cancel()
        await asyncio.gather(*still_running, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.outbound.flush()
        await self._release([*unstarted, *abandoned])
        if abandoned:
            _log.warning("jobs.shutdown_abandoned", route=self.route.name, count=len(abandoned))

    async def _release(self, deliveries: list[Delivery]) -> None:
        """Make entries we will not finish immediately reclaimable by other consumers."""
        by_stream: dict[str, list[bytes]] = {}
        for delivery in deliveries:
            by_stream.setdefault(delivery.stream_key, []).append(delivery.entry_id)
        for key, ids in by_stream.items():
            with contextlib.suppress(Exception):
                await self._set_idle(
                    keys=[key], args=[self.group, self.consumer, _RELEASED_IDLE_MS, *ids]
                )
