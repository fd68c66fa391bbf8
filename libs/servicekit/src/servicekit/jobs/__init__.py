"""The job runtime: at-least-once consumer groups with retries, dead letters and reclaim.

Declare routes with :class:`JobRouter`, run them with :class:`Worker` (through
``servicekit.run_worker`` in a service), put work on streams with :func:`publish` and
:func:`enqueue`, and ask where the runtime holds a job with :func:`locate_jobs` (read-only).
Operators' functions (dead letters, pausing a group) are in :mod:`servicekit.operations`. The
modules whose names start with ``_`` are the runtime's internals: nothing outside servicekit and
its tests imports them.
"""

from servicekit.jobs._consumer import GroupLostError
from servicekit.jobs._maintenance import RetentionPolicy
from servicekit.jobs._worker import EXIT_GROUP_LOST, Worker
from servicekit.jobs.inspection import (
    HeldEntry,
    Holding,
    dead_lettered_entries,
    locate_jobs,
    pending_entries,
    unread_entries,
)
from servicekit.jobs.options import JobOptions
from servicekit.jobs.publishing import enqueue, publish
from servicekit.jobs.routing import JobRouter, Route, WeightedStream

__all__ = [
    "EXIT_GROUP_LOST",
    "GroupLostError",
    "HeldEntry",
    "Holding",
    "JobOptions",
    "JobRouter",
    "RetentionPolicy",
    "Route",
    "WeightedStream",
    "Worker",
    "dead_lettered_entries",
    "enqueue",
    "locate_jobs",
    "pending_entries",
    "publish",
    "unread_entries",
]
