"""The job runtime: at-least-once consumer groups with retries, dead letters and reclaim.

Declare routes with :class:`JobRouter`, run them with :class:`Worker`, enqueue with
:func:`enqueue`. Operators use :mod:`servicekit.jobs.deadletters` and the pause functions.
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
from servicekit.jobs.maintenance import RetentionPolicy, pause_key
from servicekit.jobs.options import JobOptions, backoff_delay
from servicekit.jobs.publishing import enqueue, pause_group, publish, resume_group
from servicekit.jobs.routing import JobRouter, Route, WeightedStream
from servicekit.jobs.worker import EXIT_GROUP_LOST, Worker, bind_dependencies

__all__ = [
    "EXIT_GROUP_LOST",
    "DeadLetter",
    "GroupLostError",
    "JobOptions",
    "JobRouter",
    "RetentionPolicy",
    "Route",
    "UndecodableEntry",
    "WeightedStream",
    "Worker",
    "backoff_delay",
    "bind_dependencies",
    "decode_entry",
    "encode_event",
    "enqueue",
    "inspect_dead_letter",
    "list_dead_letters",
    "pause_group",
    "pause_key",
    "publish",
    "purge_dead_letters",
    "redrive_dead_letters",
    "resume_group",
]
