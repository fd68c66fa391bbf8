"""The schedules file: what is refused (naming the schedule), and the ticks a schedule has."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts import AutoArchiveRequested, Priority, PurgeExpiredIdempotencyKeys
from scheduler.schedules import (
    CatchUp,
    Overlap,
    ScheduleError,
    load_schedules,
    parse_schedules,
)

VALID = """
[[schedule]]
name = "nightly"
cron = "0 30 2 * * *"
timezone = "Europe/Berlin"
event = "commands.auto_archive.v1"
payload = { not_updated_for_days = 7 }
priority = "low"
overlap = "skip"
catch_up = "all"
catch_up_window_seconds = 600
"""


def entry(**fields: str) -> str:
    base = {"name": '"broken"', "cron": '"* * * * *"', "event": '"commands.auto_archive.v1"',
            "payload": "{ not_updated_for_days = 1 }"}  # fmt: skip
    base.update(fields)
    return "[[schedule]]\n" + "\n".join(f"{k} = {v}" for k, v in base.items())


def test_a_valid_entry_is_read_with_its_policies() -> None:
    [nightly] = parse_schedules(VALID)
    assert nightly.event is AutoArchiveRequested
    assert nightly.stream == "commands.auto_archive.v1"
    assert (nightly.priority, nightly.overlap, nightly.catch_up) == (
        Priority.LOW, Overlap.SKIP, CatchUp.ALL,
    )  # fmt: skip
    assert nightly.catch_up_window.total_seconds() == 600
    assert not nightly.paused


def test_defaults_are_utc_default_priority_skip_overlap_and_latest_catch_up() -> None:
    [s] = parse_schedules(entry())
    assert (s.timezone, s.priority, s.overlap, s.catch_up) == (
        "UTC", Priority.DEFAULT, Overlap.SKIP, CatchUp.LATEST,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": '"61 * * * *"'}, "schedule 'broken': invalid cron expression '61 * * * *'"),
        ({"cron": '"* * *"'}, "schedule 'broken': invalid cron expression"),
        ({"cron": '"* * * * * * * *"'}, "schedule 'broken': invalid cron expression"),
        ({"event": '"notes.created.v1"'}, "schedule 'broken': unknown event 'notes.created.v1'"),
        ({"event": '"commands.completed.v1"'}, "schedule 'broken': unknown event"),
        ({"timezone": '"Mars/Olympus"'}, "schedule 'broken': unknown timezone 'Mars/Olympus'"),
        ({"payload": "{ not_updated_for_days = 0 }"}, "schedule 'broken': invalid payload"),
        ({"payload": "{ }"}, "schedule 'broken': invalid payload"),
        ({"overlap": '"sometimes"'}, "schedule 'broken': 'sometimes' is not a valid Overlap"),
        ({"catch_up": '"never"'}, "schedule 'broken': 'never' is not a valid CatchUp"),
        ({"priority": '"urgent"'}, "schedule 'broken': 'urgent' is not a valid Priority"),
        ({"paused": '"yes"'}, "schedule 'broken': 'paused' must be true or false"),
        ({"catch_up_window_seconds": "0"}, "schedule 'broken': 'catch_up_window_seconds'"),
        ({"colour": '"blue"'}, "schedule 'broken': unknown keys ['colour']"),
    ],
)
def test_an_invalid_entry_is_refused_naming_the_schedule(
    fields: dict[str, str], message: str
) -> None:
    with pytest.raises(ScheduleError, match="^.*" + _escape(message)):
        parse_schedules(entry(**fields))


def test_a_name_declared_twice_is_refused() -> None:
    with pytest.raises(ScheduleError, match="schedule 'broken' is declared twice"):
        parse_schedules(entry() + "\n" + entry())


def test_an_unreadable_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError, match="cannot read it"):
        load_schedules(str(tmp_path / "missing.toml"))


def test_the_packaged_default_file_loads_and_archives_notes_idle_for_at_least_a_day() -> None:
    schedules = {s.name: s for s in load_schedules(None)}
    assert set(schedules) == {"auto-archive", "purge-idempotency-keys"}
    archive = schedules["auto-archive"].command(datetime.now(UTC), producer="scheduler")
    assert isinstance(archive, AutoArchiveRequested)
    assert archive.not_updated_for_days >= 1
    tick = datetime(2026, 1, 1, 4, 15, tzinfo=UTC)
    purge = schedules["purge-idempotency-keys"].command(tick, producer="scheduler")
    assert isinstance(purge, PurgeExpiredIdempotencyKeys)
    assert purge.older_than == tick  # seconds_before_tick = 0


def test_six_fields_put_seconds_first() -> None:
    [s] = parse_schedules(entry(cron='"*/15 * * * * *"'))
    start = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)
    ticks = s.ticks(start)
    assert [next(ticks).second for _ in range(4)] == [15, 30, 45, 0]


def test_the_same_tick_gives_the_same_command_id_on_every_replica() -> None:
    [s] = parse_schedules(entry())
    tick = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert s.command(tick, producer="a").event_id == s.command(tick, producer="b").event_id
    assert s.command(tick, producer="a") != s.command(tick.replace(minute=1), producer="a")


def test_a_fixed_time_in_the_autumn_repeated_hour_fires_once() -> None:
    [s] = parse_schedules(VALID)  # 02:30 Berlin; 2026-10-25 has 02:30 twice
    ticks = s.ticks(datetime(2026, 10, 24, 12, tzinfo=UTC))
    assert [next(ticks).isoformat() for _ in range(2)] == [
        "2026-10-25T00:30:00+00:00",  # 02:30 CEST, the first of the two
        "2026-10-26T01:30:00+00:00",  # 02:30 CET the next day
    ]
    assert s.last_tick_at_or_before(datetime(2026, 10, 25, 3, tzinfo=UTC)) == datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC
    )


def test_a_wildcard_hour_runs_in_both_autumn_hours() -> None:
    [s] = parse_schedules(entry(cron='"0 30 * * * *"', timezone='"Europe/Berlin"'))
    ticks = s.ticks(datetime(2026, 10, 24, 23, 45, tzinfo=UTC))
    assert [next(ticks).isoformat() for _ in range(3)] == [
        "2026-10-25T00:30:00+00:00", "2026-10-25T01:30:00+00:00", "2026-10-25T02:30:00+00:00",
    ]  # fmt: skip


def test_a_time_in_the_spring_gap_fires_right_after_it() -> None:
    [s] = parse_schedules(VALID)  # 2026-03-29 has no 02:30 in Berlin
    ticks = s.ticks(datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert next(ticks).isoformat() == "2026-03-29T01:00:00+00:00"  # 03:00 CEST


def _escape(text: str) -> str:
    import re

    return re.escape(text)
