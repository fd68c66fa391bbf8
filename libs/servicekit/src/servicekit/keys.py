"""Redis key layout: ``STREAM_PREFIX`` namespacing and Redis Cluster hash slots.

A stream's companion keys (retry and delay sets, locks, pause flags) wrap the stream's full key in a
hash tag, ``{<stream key>}:retry``. The stream key itself has no braces, so Redis Cluster hashes it
whole, which is exactly the tag's content: both land in one slot and a Lua script may touch both.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StreamKeys"]


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """Key names for one deployment, namespaced by ``STREAM_PREFIX``."""

    prefix: str = ""

    def stream(self, name: str) -> str:
        """Return the Redis key of the stream called ``name`` in contracts."""
        return f"{self.prefix}{name}"

    def dead_letters(self, name: str) -> str:
        """Return the key of ``name``'s dead-letter stream (``<stream>.dlq``)."""
        return f"{self.prefix}{name}.dlq"

    def companion(self, name: str, role: str) -> str:
        """Return a key stored in the same hash slot as the stream ``name``."""
        return f"{{{self.prefix}{name}}}:{role}"

    def unprefixed(self, key: str) -> str:
        """Return the contracts name of a prefixed stream key."""
        return key[len(self.prefix) :] if key.startswith(self.prefix) else key
