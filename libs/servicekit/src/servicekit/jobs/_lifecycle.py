"""Job lifecycle events (started, retrying, succeeded, skipped, dead-lettered) on one stream.

The runtime emits them for every message that carries a job id, so notes-api's worker can keep
job status without each handler writing it. They ride the consumer's ack pipeline.
"""

from __future__ import annotations

from datetime import UTC, datetime

from opentelemetry import trace

from contracts import (
    JOBS_LIFECYCLE,
    Event,
    JobDeadLettered,
    JobLifecycle,
    JobRetrying,
    JobSkipped,
    JobStarted,
    JobSucceeded,
)
from servicekit.jobs._codec import encode_event
from servicekit.jobs._delivery import Delivery
from servicekit.jobs._outbound import Outbound
from servicekit.keys import StreamKeys

__all__ = ["LifecycleEmitter"]


class LifecycleEmitter:
    """Builds lifecycle events for job messages and queues them on the outbound buffer."""

    def __init__(self, outbound: Outbound, keys: StreamKeys, producer: str) -> None:
        self.outbound = outbound
        self.stream_key = keys.stream(JOBS_LIFECYCLE)
        self.producer = producer

    def _common(self, request: Event, delivery: Delivery, group: str) -> dict[str, object]:
        context = trace.get_current_span().get_span_context()
        return {
            "producer": self.producer,
            "correlation_id": request.correlation_id or str(request.event_id),
            "causation_id": str(request.event_id),
            "job_id": getattr(request, "job_id"),  # noqa: B009 - only JobRequests get here
            "job_type": str(getattr(request, "JOB_TYPE", request.type)),
            "parent_job_id": getattr(request, "parent_job_id", None),
            "trace_id": format(context.trace_id, "032x") if context.is_valid else None,
            "attempt": delivery.attempt,
            "stream": delivery.stream,
            "group": group,
        }

    def _emit(self, event: JobLifecycle) -> None:
        self.outbound.add_entry(self.stream_key, encode_event(event))

    def started(self, request: Event, delivery: Delivery, group: str) -> None:
        """An attempt began."""
        self._emit(JobStarted.model_validate(self._common(request, delivery, group)))

    def succeeded(self, request: Event, delivery: Delivery, group: str) -> None:
        """The handler finished without error."""
        self._emit(JobSucceeded.model_validate(self._common(request, delivery, group)))

    def skipped(self, request: Event, delivery: Delivery, group: str, reason: str) -> None:
        """The handler reported the job no longer applies."""
        self._emit(
            JobSkipped.model_validate({**self._common(request, delivery, group), "reason": reason})
        )

    def retrying(
        self, request: Event, delivery: Delivery, group: str, error: BaseException, due: float
    ) -> None:
        """An attempt failed transiently; the next runs at ``due``."""
        self._emit(
            JobRetrying.model_validate(
                {
                    **self._common(request, delivery, group),
                    "error_class": type(error).__name__,
                    "error_message": str(error)[:2000],
                    "next_attempt_at": datetime.fromtimestamp(due, UTC),
                }
            )
        )

    def dead_lettered_entry(
        self,
        request: Event,
        delivery: Delivery,
        group: str,
        error: BaseException,
        attempts: int,
        dead_letter_stream: str,
        dead_letter_id: str,
    ) -> tuple[str, dict[str, bytes]]:
        """The entry went to its dead-letter stream: the lifecycle entry, not buffered.

        The caller writes it in the pipeline that acknowledges the entry, ahead of the XACK, so a
        job is never acknowledged without its final status on the lifecycle stream.
        """
        return self.stream_key, encode_event(
            JobDeadLettered.model_validate(
                {
                    **self._common(request, delivery, group),
                    "attempts": max(1, attempts),
                    "error_class": type(error).__name__,
                    "error_message": str(error)[:2000],
                    "dead_letter_stream": dead_letter_stream,
                    "dead_letter_id": dead_letter_id,
                }
            )
        )
