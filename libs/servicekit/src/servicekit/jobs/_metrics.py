"""Prometheus metrics of the job runtime.

Counters and histograms are counted in-process. Stream health gauges are sampled from Redis by
:mod:`servicekit.jobs._maintenance`; they carry no instance label, so every replica reports the same
value and dashboards take ``max by (stream, group)``.
"""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["JobMetrics"]

_DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, JobMetrics] = weakref.WeakKeyDictionary()


class JobMetrics:
    """The runtime's collectors, registered with one process registry."""

    @classmethod
    def for_registry(cls, registry: CollectorRegistry, service: str) -> JobMetrics:
        """Return the registry's job metrics, creating them once (several workers may share)."""
        if registry not in _BY_REGISTRY:
            _BY_REGISTRY[registry] = cls(registry, service)
        return _BY_REGISTRY[registry]

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.service = service
        labels = ("service", "stream", "group", "job_type")
        self.processed = Counter(
            "job_processed",
            "Messages handled, by outcome (status from the contracts' vocabulary).",
            (*labels, "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "job_duration_seconds",
            "Handler run time per delivery (exemplar: the trace id).",
            labels,
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "job_queue_wait_seconds",
            "Time from enqueue (or retry due time) to handler start.",
            labels,
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        health = ("stream", "group")
        self.stream_length = Gauge(
            "stream_length", "Entries in the stream (XLEN).", ("stream",), registry=registry
        )
        self.group_lag = Gauge(
            "stream_group_lag", "Entries not yet delivered to the group.", health, registry=registry
        )
        self.pending = Gauge(
            "stream_group_pending",
            "Entries delivered but not acknowledged.",
            health,
            registry=registry,
        )
        self.oldest_pending_age = Gauge(
            "stream_group_oldest_pending_age_seconds",
            "Age of the oldest unacknowledged entry (0 when none).",
            health,
            registry=registry,
        )
        self.consumer_idle = Gauge(
            "stream_consumer_idle_seconds",
            "Seconds since each consumer last read.",
            (*health, "consumer"),
            registry=registry,
        )
        self.dead_letters = Gauge(
            "stream_dead_letters",
            "Entries in the dead-letter stream.",
            ("stream",),
            registry=registry,
        )
        self.paused = Gauge(
            "stream_group_paused",
            "1 while the group is paused on this stream.",
            health,
            registry=registry,
        )
        self._children: dict[tuple[str, ...], tuple[Counter, Histogram, Histogram]] = {}

    def for_route(self, stream: str, group: str, job_type: str) -> tuple[Histogram, Histogram]:
        """Return the (duration, queue wait) children for a stream, resolved once."""
        key = (stream, group, job_type)
        if key not in self._children:
            labels = (self.service, stream, group, job_type)
            self._children[key] = (
                self.processed,
                self.duration.labels(*labels),
                self.queue_wait.labels(*labels),
            )
        _, duration, wait = self._children[key]
        return duration, wait

    def count(self, stream: str, group: str, job_type: str, status: str, n: int = 1) -> None:
        """Count ``n`` messages that ended with ``status``."""
        self.processed.labels(self.service, stream, group, job_type, status).inc(n)
