"""The envelope every event shares: identity, time, origin and causality.

Each concrete event narrows ``type`` to a ``Literal`` whose default is its versioned type name
(``notes.created.v1``). That name is the *schema* version; note events also carry the note's own
``version``. Changes to a type are additive only; a breaking change is a new ``.v2`` type.
"""

from datetime import UTC, datetime
from typing import Any, Self
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every event on the platform: immutable, and tolerant of fields it does not know."""

    # extra="ignore": a consumer on an older schema accepts events from a newer, additive one.
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: UUID = Field(
        default_factory=uuid4, description="Unique per event; consumers dedupe on it."
    )
    type: str = Field(description="Versioned event type name, e.g. `notes.created.v1`.")
    occurred_at: AwareDatetime = Field(
        default_factory=utc_now, description="When the fact happened (timezone-aware)."
    )
    producer: str = Field(description="Name of the service that emitted the event.")
    correlation_id: str | None = Field(
        default=None, description="Shared by every event of one logical operation."
    )
    causation_id: str | None = Field(
        default=None, description="`event_id` of the event that caused this one."
    )

    @classmethod
    def type_name(cls) -> str:
        """Return the versioned type name of a concrete event class."""
        default = cls.model_fields["type"].default
        if not isinstance(default, str):
            raise TypeError(f"{cls.__name__} is not a concrete event: it has no type name")
        return default

    @classmethod
    def caused_by(cls, cause: "Event", *, producer: str, **fields: Any) -> Self:
        """Build an event caused by ``cause``, carrying its correlation id forward."""
        return cls(
            producer=producer,
            correlation_id=cause.correlation_id or str(cause.event_id),
            causation_id=str(cause.event_id),
            **fields,
        )


class OwnedEvent(Event):
    """An event about one owner's data."""

    owner_id: str = Field(description="The owner (tenant) whose data the event concerns.")
