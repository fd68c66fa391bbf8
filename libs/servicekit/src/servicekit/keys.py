"""Redis key layout: ``STREAM_PREFIX`` namespacing and Redis Cluster hash slots, in one place.

Every key the platform writes for a stream is derived here. The layout:

| key | example (prefix ``p:``) |
|---|---|
| event stream | ``{p:notes.created.v1}`` |
| job stream, one per priority | ``{p:jobs.archive}.critical`` |
| dead letters | ``{p:jobs.archive}.critical.dlq`` |
| per-group companion | ``{p:jobs.archive}.critical:retry:<group>``, also ``attempts``, ``paused`` |

The hash tag (the part in braces) is the stream's *family*: the stream itself for an event stream,
``jobs.<type>`` for a job type's three priority streams. So a job type's three streams, their dead
letters and every companion key hash to one slot, and the weighted multi-stream read, the Lua
scripts and the dead-letter pipeline each touch one slot on Redis Cluster. Keys that belong to one
consumer group (its retry set, attempt history and pause flag) carry the group's name: two groups
reading one stream never share them. ``servicekit.jobs._migration`` moves the earlier layout over.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from contracts import Priority

__all__ = ["Companion", "StreamKeys"]

_PRIORITIES = frozenset(f".{p.value}" for p in Priority)


class Companion(StrEnum):
    """What a per-group companion key of a stream holds."""

    RETRY = "retry"
    """Sorted set: entries waiting for their next attempt, scored by due time (server ms)."""
    ATTEMPTS = "attempts"
    """Hash: entry id to its failure history (JSON)."""
    PAUSED = "paused"
    """Flag: while it exists the group takes no new entries from the stream."""


def family(name: str) -> str:
    """Return the part of a stream name that is its hash tag: ``jobs.<type>`` or the name."""
    if name.startswith("jobs."):
        base, dot, level = name.rpartition(".")
        if dot and f".{level}" in _PRIORITIES and base.count(".") == 1:
            return base
    return name


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """Key names for one deployment, namespaced by ``STREAM_PREFIX``."""

    prefix: str = ""

    def tag(self, name: str) -> str:
        """Return the hash tag (braces included) shared by ``name`` and its family's keys."""
        return f"{{{self.prefix}{family(name)}}}"

    def stream(self, name: str) -> str:
        """Return the Redis key of the stream called ``name`` in contracts."""
        base = family(name)
        return f"{{{self.prefix}{base}}}{name[len(base) :]}"

    def dead_letters(self, name: str) -> str:
        """Return the key of ``name``'s dead-letter stream (``<stream>.dlq``)."""
        return f"{self.stream(name)}.dlq"

    def companion(self, name: str, role: Companion, group: str) -> str:
        """Return ``group``'s ``role`` key for the stream ``name`` (same hash slot)."""
        return f"{self.companion_base(name, role)}{group}"

    def companion_base(self, name: str, role: Companion) -> str:
        """Return what every group's ``role`` key of ``name`` starts with (the group follows)."""
        return f"{self.stream(name)}:{role.value}:"

    def retry(self, name: str, group: str) -> str:
        """Return ``group``'s retry set for ``name``."""
        return self.companion(name, Companion.RETRY, group)

    def attempts(self, name: str, group: str) -> str:
        """Return ``group``'s attempt history for ``name``."""
        return self.companion(name, Companion.ATTEMPTS, group)

    def paused(self, name: str, group: str) -> str:
        """Return the flag that pauses ``group`` on ``name``."""
        return self.companion(name, Companion.PAUSED, group)
