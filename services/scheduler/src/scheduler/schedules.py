"""The schedules file: loading, validation, and each schedule's ticks (cron with croniter).

A schedules file is TOML, one ``[[schedule]]`` table per schedule::

    [[schedule]]
    name = "auto-archive"                  # unique; names the fire history and the metrics
    cron = "0 0 3 * * *"                   # 5 fields, or 6 with seconds FIRST (Quartz order)
    timezone = "UTC"                       # an IANA zone; UTC when omitted
    event = "commands.auto_archive.v1"     # a command event of contracts.schedules
    payload = { not_updated_for_days = 30 }  # a field's value may be { seconds_before_tick = N }
    priority = "low"                       # critical | default | low: firing order at one instant
    overlap = "skip"                       # skip | allow
    catch_up = "latest"                    # all | latest | skip (after downtime)
    catch_up_window_seconds = 3600
    paused = false

A file that fails validation stops the service at start with a message naming the schedule.

The cron library is croniter, chosen over cronsim: both parse standard expressions and take
zoneinfo time zones, and both are maintained (croniter by pallets-eco since 2025, cronsim by
Healthchecks), but cronsim leaves out the seconds field by design and the schedules need seconds
precision. On DST, croniter runs a tick that falls in the hour skipped in spring at the first
instant after it (as Vixie cron does); in autumn it returns a fixed-time tick in the repeated hour
twice, so :meth:`Schedule.ticks` drops the second occurrence unless the hour field is ``*`` (again
as Vixie cron does: wildcard-hour jobs run in both hours, fixed-time jobs once).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter
from pydantic import ValidationError

from contracts import CATALOGUE, Priority, ScheduledEvent, Service
from contracts.schedules import CommandCompleted, ScheduleFired

DEFAULT_SCHEDULES_FILE = "schedules.toml"
"""The package data file used when ``SCHEDULES_FILE`` is unset (shipped inside the package)."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_PRIORITY_ORDER = {Priority.CRITICAL: 0, Priority.DEFAULT: 1, Priority.LOW: 2}
_NOT_COMMANDS = {ScheduleFired, CommandCompleted}


class Overlap(StrEnum):
    SKIP = "skip"
    """A tick while the previous run has not finished is recorded skipped, not fired."""
    ALLOW = "allow"


class CatchUp(StrEnum):
    ALL = "all"
    """Fire each missed tick once, those within the catch-up window; older ones are missed."""
    LATEST = "latest"
    """Fire only the latest missed tick (if within the window); the others are missed."""
    SKIP = "skip"
    """Fire nothing that is late: only a tick fired on time (within LATE_AFTER_SECONDS)."""


class ScheduleError(ValueError):
    """The schedules file is invalid; the message names the schedule."""


def command_types() -> dict[str, tuple[type[ScheduledEvent], str]]:
    """Command events a schedule may publish, with their stream: the scheduler's in contracts."""
    return {
        spec.type_name: (spec.event, spec.streams[0])
        for spec in CATALOGUE
        if Service.SCHEDULER in spec.producers
        and issubclass(spec.event, ScheduledEvent)
        and spec.event not in _NOT_COMMANDS
    }


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str
    event: type[ScheduledEvent]
    stream: str
    payload: dict[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    priority: Priority = Priority.DEFAULT
    overlap: Overlap = Overlap.SKIP
    catch_up: CatchUp = CatchUp.LATEST
    catch_up_window: timedelta = timedelta(hours=1)
    paused: bool = False

    @property
    def order(self) -> tuple[int, str]:
        """Firing order of schedules due at one instant: priority, then name."""
        return _PRIORITY_ORDER[self.priority], self.name

    def ticks(self, after: datetime) -> Iterator[datetime]:
        """Yield the scheduled times strictly after ``after``, in UTC, forever."""
        zone = ZoneInfo(self.timezone)
        start = after.astimezone(zone)
        it = croniter(self.cron, start, second_at_beginning=True)
        fixed_hour = self._fields()[-4] != "*"
        while True:
            tick: datetime = it.get_next(datetime)
            if tick.tzinfo is None:  # croniter keeps the start's zone; be sure of it
                tick = tick.replace(tzinfo=zone)
            if fixed_hour and tick.fold == 1 and _ambiguous(tick):
                continue
            yield tick.astimezone(UTC)

    def last_tick_at_or_before(self, moment: datetime) -> datetime | None:
        """The latest scheduled time at or before ``moment`` (UTC), or None if there is none."""
        zone = ZoneInfo(self.timezone)
        start = (moment + timedelta(microseconds=1)).astimezone(zone)
        it = croniter(self.cron, start, second_at_beginning=True)
        fixed_hour = self._fields()[-4] != "*"
        for _ in range(3):  # at most one dropped repeat in a row
            try:
                tick: datetime = it.get_prev(datetime)
            except CroniterBadDateError:
                return None
            if tick.tzinfo is None:
                tick = tick.replace(tzinfo=zone)
            if not (fixed_hour and tick.fold == 1 and _ambiguous(tick)):
                return tick.astimezone(UTC)
        return None

    def next_tick(self, after: datetime) -> datetime:
        """The first scheduled time strictly after ``after`` (UTC)."""
        return next(self.ticks(after))

    def command(self, tick_at: datetime, *, producer: str) -> ScheduledEvent:
        """The command for one tick: its id derives from (event type, schedule, tick)."""
        fields = {key: _resolve(value, tick_at) for key, value in self.payload.items()}
        return self.event.for_tick(
            schedule=self.name, tick_at=tick_at, producer=producer, occurred_at=tick_at, **fields
        )

    def _fields(self) -> list[str]:
        fields = self.cron.split()
        return fields if len(fields) == 6 else ["0", *fields]


def _resolve(value: Any, tick_at: datetime) -> Any:
    """A payload value; ``{seconds_before_tick = N}`` is the time N seconds before the tick."""
    if isinstance(value, dict) and set(value) == {"seconds_before_tick"}:
        return tick_at - timedelta(seconds=value["seconds_before_tick"])
    return value


def _ambiguous(tick: datetime) -> bool:
    """Whether the wall time of ``tick`` occurs twice (the autumn DST hour)."""
    return tick.replace(fold=0).utcoffset() != tick.replace(fold=1).utcoffset()


def parse_schedules(text: str, *, source: str = "schedules file") -> list[Schedule]:
    """Validate a schedules file's text; raise :class:`ScheduleError` naming the schedule."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScheduleError(f"{source}: not valid TOML: {exc}") from exc
    unknown = set(document) - {"schedule"}
    if unknown:
        raise ScheduleError(f"{source}: unknown top-level keys {sorted(unknown)}")
    entries = document.get("schedule", [])
    if not isinstance(entries, list):
        raise ScheduleError(f"{source}: 'schedule' must be an array of tables ([[schedule]])")
    schedules: list[Schedule] = []
    for index, entry in enumerate(entries):
        schedule = _parse_entry(entry, label=f"{source}: schedule #{index + 1}")
        if any(s.name == schedule.name for s in schedules):
            raise ScheduleError(f"{source}: schedule {schedule.name!r} is declared twice")
        schedules.append(schedule)
    return sorted(schedules, key=lambda s: s.order)


_KEYS = {
    "name", "cron", "timezone", "event", "payload", "priority", "overlap", "catch_up",
    "catch_up_window_seconds", "paused",
}  # fmt: skip


def _parse_entry(entry: Any, *, label: str) -> Schedule:
    if not isinstance(entry, dict):
        raise ScheduleError(f"{label}: must be a table")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ScheduleError(f"{label}: 'name' must match {_NAME.pattern}, not {name!r}")
    where = f"schedule {name!r}"
    unknown = set(entry) - _KEYS
    if unknown:
        raise ScheduleError(f"{where}: unknown keys {sorted(unknown)}")
    cron = entry.get("cron")
    if (
        not isinstance(cron, str)
        or len(cron.split()) not in (5, 6)
        or not croniter.is_valid(cron, second_at_beginning=True)
    ):
        raise ScheduleError(
            f"{where}: invalid cron expression {cron!r} (5 fields, or 6 with seconds first)"
        )
    timezone = entry.get("timezone", "UTC")
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"{where}: unknown timezone {timezone!r}") from exc
    commands = command_types()
    event_name = entry.get("event")
    if event_name not in commands:
        raise ScheduleError(
            f"{where}: unknown event {event_name!r}; a schedule publishes one of "
            f"{', '.join(sorted(commands))}"
        )
    event, stream = commands[event_name]
    payload = entry.get("payload", {})
    if not isinstance(payload, dict):
        raise ScheduleError(f"{where}: 'payload' must be a table")
    try:
        priority = Priority(entry.get("priority", Priority.DEFAULT))
        overlap = Overlap(entry.get("overlap", Overlap.SKIP))
        catch_up = CatchUp(entry.get("catch_up", CatchUp.LATEST))
    except ValueError as exc:
        raise ScheduleError(f"{where}: {exc}") from exc
    window = entry.get("catch_up_window_seconds", 3600)
    if not isinstance(window, int | float) or window <= 0:
        raise ScheduleError(f"{where}: 'catch_up_window_seconds' must be a positive number")
    paused = entry.get("paused", False)
    if not isinstance(paused, bool):
        raise ScheduleError(f"{where}: 'paused' must be true or false")
    schedule = Schedule(
        name=name, cron=cron, event=event, stream=stream, payload=payload, timezone=str(timezone),
        priority=priority, overlap=overlap, catch_up=catch_up,
        catch_up_window=timedelta(seconds=window), paused=paused,
    )  # fmt: skip
    try:  # the payload must make a valid command (checked now, not at the first tick)
        schedule.command(datetime.now(UTC), producer=str(Service.SCHEDULER))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise ScheduleError(f"{where}: invalid payload for {event_name}: {problems}") from exc
    except TypeError as exc:
        raise ScheduleError(f"{where}: invalid payload for {event_name}: {exc}") from exc
    return schedule


def load_schedules(path: str | None) -> list[Schedule]:
    """Load ``path``, or the package's own file when ``path`` is None."""
    if path is None:
        source = resources.files("scheduler").joinpath(DEFAULT_SCHEDULES_FILE)
        return parse_schedules(source.read_text(), source=f"scheduler/{DEFAULT_SCHEDULES_FILE}")
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ScheduleError(f"SCHEDULES_FILE {path}: cannot read it: {exc}") from exc
    return parse_schedules(text, source=str(file))
