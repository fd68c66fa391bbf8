"""Scheduler output: a record of each tick, and the commands the data-owning service executes.

``CommandCompleted`` is the executor's word that it has handled one (the overlap policy's signal).
"""

from datetime import UTC
from typing import Any, Literal, Self
from uuid import UUID, uuid5

from pydantic import AwareDatetime, Field

from contracts.envelope import Event
from contracts.notes import NoteTag

TICK_NAMESPACE = UUID("83ed7822-f4be-44f3-9522-4db260b2b760")
"""Namespace of tick event ids; fixed forever, or replicas would stop deduplicating."""


def tick_event_id(type_name: str, schedule: str, tick_at: AwareDatetime) -> UUID:
    """Return the event id of one schedule tick: every replica derives the same one."""
    return uuid5(TICK_NAMESPACE, f"{type_name}|{schedule}|{tick_at.astimezone(UTC).isoformat()}")


class ScheduledEvent(Event):
    """An event emitted for one tick of a schedule; ``(schedule, tick_at)`` identifies the tick."""

    schedule: str = Field(description="Name of the schedule entry.")
    tick_at: AwareDatetime = Field(description="The scheduled time (not when it ran).")

    @classmethod
    def for_tick(
        cls, *, schedule: str, tick_at: AwareDatetime, producer: str, **fields: Any
    ) -> Self:
        """Build the event of a tick with a deterministic ``event_id``, so replicas dedupe."""
        return cls(
            event_id=tick_event_id(cls.type_name(), schedule, tick_at),
            schedule=schedule,
            tick_at=tick_at,
            producer=producer,
            **fields,
        )


class ScheduleFired(ScheduledEvent):
    """A schedule ticked and its command was emitted."""

    type: Literal["schedules.fired.v1"] = "schedules.fired.v1"
    command_type: str = Field(description="Type name of the command emitted for this tick.")


class AutoArchiveRequested(ScheduledEvent):
    """Archive notes not updated for some days, as bulk archive jobs per owner."""

    type: Literal["commands.auto_archive.v1"] = "commands.auto_archive.v1"
    owner_id: str | None = Field(default=None, description="One owner, or every owner if null.")
    not_updated_for_days: int = Field(ge=1)
    tag: NoteTag | None = Field(default=None, description="Only notes with this tag, if set.")


class PurgeExpiredIdempotencyKeys(ScheduledEvent):
    """Delete idempotency records older than ``older_than``."""

    type: Literal["commands.purge_idempotency_keys.v1"] = "commands.purge_idempotency_keys.v1"
    older_than: AwareDatetime


class CommandCompleted(ScheduledEvent):
    """The executor committed its handling of a scheduled command (not the work it started).

    Emitted in the same transaction as the handling, so it is sent exactly when the handling
    took effect; the scheduler reads it to know a schedule's previous run has finished.
    """

    type: Literal["commands.completed.v1"] = "commands.completed.v1"
    command_type: str = Field(description="Type name of the command that was handled.")
    command_id: UUID = Field(description="`event_id` of the command that was handled.")

    @classmethod
    def for_command(cls, command: ScheduledEvent, *, producer: str) -> Self:
        """Announce that ``command`` was handled; one id per command, so a repeat dedupes."""
        return cls.caused_by(
            command,
            producer=producer,
            event_id=uuid5(TICK_NAMESPACE, f"completed|{command.event_id}"),
            schedule=command.schedule,
            tick_at=command.tick_at,
            command_type=command.type,
            command_id=command.event_id,
        )
