"""A delivered stream entry and the failure history the runtime keeps for it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["AttemptHistory", "Delivery", "entry_time"]

_KEEP_ERRORS = 5


def entry_time(entry_id: bytes | str) -> float:
    """Return the UNIX time (seconds) a stream entry was added, from its id."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0]) / 1000


@dataclass(slots=True)
class AttemptHistory:
    """Handled failures of one entry, kept in ``<stream key>:attempts:<group>`` between retries."""

    failures: int = 0
    first_failed_at: str | None = None
    last_failed_at: str | None = None
    due_at: float | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    def record(self, error: BaseException, due_at: float | None) -> None:
        """Add a failure (keeping the last few errors)."""
        now = datetime.now(UTC).isoformat()
        self.failures += 1
        self.first_failed_at = self.first_failed_at or now
        self.last_failed_at = now
        self.due_at = due_at
        self.errors.append(
            {
                "attempt": self.failures,
                "error_class": type(error).__name__,
                "error_message": str(error)[:2000],
                "at": now,
            }
        )
        del self.errors[:-_KEEP_ERRORS]

    def to_json(self) -> str:
        """Serialise for Redis."""
        return json.dumps(
            {
                "failures": self.failures,
                "first_failed_at": self.first_failed_at,
                "last_failed_at": self.last_failed_at,
                "due_at": self.due_at,
                "errors": self.errors,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> AttemptHistory | None:
        """Parse a stored history (``None`` when the entry never failed)."""
        if not raw:
            return None
        data = json.loads(raw)
        return cls(
            failures=int(data.get("failures", 0)),
            first_failed_at=data.get("first_failed_at"),
            last_failed_at=data.get("last_failed_at"),
            due_at=data.get("due_at"),
            errors=list(data.get("errors", [])),
        )


@dataclass(slots=True)
class Delivery:
    """One entry handed to this consumer."""

    stream_key: str
    stream: str
    entry_id: bytes
    fields: dict[bytes, bytes]
    deliveries: int = 1
    history: AttemptHistory | None = None
    started_at: float = 0.0
    leased_at: float = 0.0
    """``time.monotonic()`` of the claim or of the last lease extension."""

    @property
    def attempt(self) -> int:
        """The number of this attempt: handled failures so far plus one."""
        return (self.history.failures if self.history else 0) + 1

    @property
    def ready_at(self) -> float:
        """When the entry became ready to run: its retry due time, else its enqueue time."""
        if self.history and self.history.due_at:
            return self.history.due_at
        return entry_time(self.entry_id)
