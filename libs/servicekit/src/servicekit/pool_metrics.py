"""Prometheus figures of a SQLAlchemy pool: occupancy, churn and the wait for a connection.

A request that waits for a pooled connection, or for one to be opened (tens of milliseconds:
authentication and the driver's type introspection), shows it only as latency. These figures say
which: ``db_pool_wait_seconds`` is the time each checkout took (queueing and opening included),
``db_pool_connects_total`` / ``db_pool_closes_total`` count connections opened and closed (a
steady rise of both under a steady load is overflow churn), and the gauges give the pool's state
at scrape time.

The wait is timed around :meth:`Pool.connect`, which SQLAlchemy's pool events do not bracket (they
fire once a connection is in hand), hence the pool subclass :class:`TimedQueuePool`;
:func:`create_database_engine <servicekit.connections.create_database_engine>` uses it when given
a registry.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolProxiedConnection

__all__ = ["TimedQueuePool", "instrument_pool"]

WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds: a checkout from an idle pool takes tens of microseconds, opening a connection tens of
milliseconds, a pool timeout seconds."""


class TimedQueuePool(AsyncAdaptedQueuePool):
    """The asyncio queue pool, observing how long each checkout waited on ``wait_histogram``."""

    wait_histogram: Histogram | None = None

    def connect(self) -> PoolProxiedConnection:
        """Check a connection out, timing the wait (for a free one, or for one to be opened)."""
        started = time.perf_counter()
        try:
            return super().connect()
        finally:
            if self.wait_histogram is not None:
                self.wait_histogram.observe(time.perf_counter() - started)

    def recreate(self) -> TimedQueuePool:
        """The fresh pool ``engine.dispose()`` swaps in keeps reporting to the same histogram."""
        pool = super().recreate()
        assert isinstance(pool, TimedQueuePool)
        pool.wait_histogram = self.wait_histogram
        return pool


def instrument_pool(engine: AsyncEngine, registry: CollectorRegistry) -> None:
    """Export ``engine``'s pool figures on ``registry`` (one engine per registry).

    The gauges read the engine's current pool at scrape time, so they follow a pool that
    ``dispose()`` replaced; the wait histogram is observed only by a :class:`TimedQueuePool`.
    """
    sync_engine = engine.sync_engine

    def pool() -> Any:
        return sync_engine.pool  # a QueuePool's checkedout() / checkedin() / size()

    Gauge("db_pool_size", "Connections the pool keeps open.", registry=registry).set_function(
        lambda: pool().size()
    )
    Gauge(
        "db_pool_checked_out", "Connections in use by a request or task.", registry=registry
    ).set_function(lambda: pool().checkedout())
    Gauge("db_pool_idle", "Open connections waiting in the pool.", registry=registry).set_function(
        lambda: pool().checkedin()
    )
    Gauge(
        "db_pool_overflow", "Open connections beyond the pool size.", registry=registry
    ).set_function(lambda: max(0, pool().checkedin() + pool().checkedout() - pool().size()))
    connects = Counter("db_pool_connects", "Connections opened.", registry=registry)
    closes = Counter("db_pool_closes", "Connections closed.", registry=registry)
    checkouts = Counter("db_pool_checkouts", "Connections checked out.", registry=registry)
    wait = Histogram(
        "db_pool_wait_seconds",
        "Time to check a connection out, waiting for a free one or for a new one to open.",
        registry=registry,
        buckets=WAIT_BUCKETS,
    )
    current = sync_engine.pool
    if isinstance(current, TimedQueuePool):
        current.wait_histogram = wait
    # Pool events registered on the engine apply to every pool it gets, a recreated one included.
    event.listen(sync_engine, "connect", lambda *_: connects.inc())
    event.listen(sync_engine, "checkout", lambda *_: checkouts.inc())
    event.listen(sync_engine, "close", lambda *_: closes.inc())
    event.listen(sync_engine, "close_detached", lambda *_: closes.inc())
