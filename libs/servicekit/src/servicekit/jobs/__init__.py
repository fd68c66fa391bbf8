"""The job runtime: at-least-once consumer groups with retries, dead letters and reclaim.

Declare routes with :class:`JobRouter`, run them with :class:`Worker`, enqueue with
:func:`enqueue`. Operators use :mod:`servicekit.jobs.deadletters`, the pause functions and
:mod:`servicekit.jobs.inspection` (where the runtime holds a job: read-only).
"""

from servicekit.jobs.codec import UndecodableEntry, decode_entry, encode_event
from servicekit.jobs.consumer import GroupLostError
from servicekit.jobs.deadletters import (
    DeadLetter,
    inspect_dead_letter,
    list_dead_letters,
    purge_dead_letters,
    redrive_dead_letters,
)
from servicekit.jobs.inspection import (
    HeldEntry,
    Holding,
    dead_lettered_entries,
    locate_jobs,
    pending_entries,
    unread_entries,
)
from servicekit.jobs.maintenance import RetentionPolicy, pause_key
from servicekit.jobs.options import JobOptions, backoff_delay
from servicekit.jobs.publishing import enqueue, pause_group, publish, resume_group
from servicekit.jobs.routing import JobRouter, Route, WeightedStream
from servicekit.jobs.worker import EXIT_GROUP_LOST, Worker, bind_dependencies

__all__ = [
    "EXIT_GROUP_LOST",
    "DeadLetter",
    "GroupLostError",
    "HeldEntry",
    "Holding",
    "JobOptions",
    "JobRouter",
    "RetentionPolicy",
    "Route",
    "UndecodableEntry",
    "WeightedStream",
    "Worker",
    "backoff_delay",
    "bind_dependencies",
    "dead_lettered_entries",
    "decode_entry",
    "encode_event",
    "enqueue",
    "inspect_dead_letter",
    "list_dead_letters",
    "locate_jobs",
    "pause_group",
    "pause_key",
    "pending_entries",
    "publish",
    "purge_dead_letters",
    "redrive_dead_letters",
    "resume_group",
    "unread_entries",
]
