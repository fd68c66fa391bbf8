"""What happens to an entry whose handler failed: a retry later, or the dead-letter stream."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from opentelemetry import trace

from contracts import Event, JobRequest, dead_letter_stream
from servicekit.errors import ErrorKind, classify
from servicekit.jobs._delivery import AttemptHistory, Delivery
from servicekit.jobs._lifecycle import LifecycleEmitter
from servicekit.jobs._outbound import Outbound
from servicekit.jobs._scripts import SCHEDULE_RETRY
from servicekit.jobs.options import JobOptions, backoff_delay
from servicekit.keys import StreamKeys
from servicekit.redis_client import RedisClient

__all__ = ["FailureRouter"]

_log = structlog.stdlib.get_logger("servicekit.jobs")


class FailureRouter:
    """Routes failed deliveries of one route to a retry or to the dead-letter stream."""

    def __init__(
        self,
        redis: RedisClient,
        keys: StreamKeys,
        *,
        group: str,
        consumer: str,
        options: JobOptions,
        outbound: Outbound,
        lifecycle: LifecycleEmitter,
        carries_jobs: bool,
        count: Callable[[str, str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.options = options
        self.outbound = outbound
        self.lifecycle = lifecycle
        self._carries_jobs = carries_jobs
        self._count = count
        self._clock = clock  # this host's clock: only for what is reported, never for due times
        self._schedule_retry = redis.register_script(SCHEDULE_RETRY)

    def _companions(self, delivery: Delivery) -> list[str]:
        stream, group = delivery.stream, self.group
        return [
            delivery.stream_key,
            self.keys.retry(stream, group),
            self.keys.attempts(stream, group),
        ]

    async def handle(self, delivery: Delivery, event: Event, exc: Exception) -> None:
        """Retry a transient failure with backoff, or dead-letter a permanent/exhausted one."""
        permanent = classify(exc) is ErrorKind.PERMANENT
        if permanent or delivery.attempt >= self.options.max_attempts:
            await self.dead_letter(delivery, exc, event)
            return
        history = delivery.history or AttemptHistory()
        delay = backoff_delay(self.options, history.failures + 1)
        due = self._clock() + delay  # as reported; Redis decides when it is due (the clock rule)
        history.record(exc, due)
        scheduled = await self._schedule_retry(
            keys=self._companions(delivery),
            args=[
                self.group,
                self.consumer,
                delivery.entry_id,
                int(delay * 1000),
                history.to_json(),
            ],
        )
        if not scheduled:
            _log.warning(
                "job.ownership_lost", stream=delivery.stream, entry_id=delivery.entry_id.decode()
            )
            return
        self._count(delivery.stream, "retrying")
        if self._carries_jobs:
            self.lifecycle.retrying(event, delivery, self.group, exc, due)
        _log.warning(
            "job.retry_scheduled",
            stream=delivery.stream,
            entry_id=delivery.entry_id.decode(),
            attempt=history.failures,
            next_attempt_in=round(delay, 3),
            error_class=type(exc).__name__,
            error=str(exc),
        )

    async def _owns(self, delivery: Delivery) -> bool:
        rows = await self.redis.xpending_range(
            delivery.stream_key, self.group, delivery.entry_id, delivery.entry_id, 1
        )
        owner = rows[0]["consumer"] if rows else b""
        return owner in (self.consumer, self.consumer.encode())

    async def dead_letter(
        self, delivery: Delivery, exc: BaseException, event: Event | None
    ) -> None:
        """Write the entry to ``<stream>.dlq`` with its history, then acknowledge it."""
        if not await self._owns(delivery):
            # Another consumer took it over (we were stopped past the visibility timeout).
            _log.warning(
                "job.ownership_lost", stream=delivery.stream, entry_id=delivery.entry_id.decode()
            )
            return
        history = delivery.history or AttemptHistory()
        history.record(exc, None)
        span_context = trace.get_current_span().get_span_context()
        trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else ""
        span_id = format(span_context.span_id, "016x") if span_context.is_valid else ""
        dead_letters_key = self.keys.dead_letters(delivery.stream)

        def announce(dead_letter_id: str) -> tuple[str, dict[str, bytes]] | None:
            if not isinstance(event, JobRequest):
                return None
            return self.lifecycle.dead_lettered_entry(
                event,
                delivery,
                self.group,
                exc,
                history.failures,
                dead_letter_stream(delivery.stream),  # the contracts name, not the Redis key
                dead_letter_id,
            )

        await self.outbound.dead_letter(
            delivery,
            group=self.group,
            consumer=self.consumer,
            history=history,
            trace_id=trace_id,
            span_id=span_id,
            dead_letters_key=dead_letters_key,
            retry_key=self.keys.retry(delivery.stream, self.group),
            attempts_key=self.keys.attempts(delivery.stream, self.group),
            announce=announce,
        )
        self._count(delivery.stream, "dead")
        _log.error(
            "job.dead_lettered",
            stream=delivery.stream,
            entry_id=delivery.entry_id.decode(),
            attempts=history.failures,
            error_class=type(exc).__name__,
            error=str(exc),
        )
