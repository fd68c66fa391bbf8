"""The catch-up and pause policies as a pure plan: which due ticks fire, which are passed over."""

from datetime import UTC, datetime, timedelta

from scheduler.schedules import CatchUp
from scheduler.ticker import plan_ticks

from .conftest import schedule

NOW = datetime(2026, 1, 1, 12, 0, 0, 400_000, tzinfo=UTC)
LATE = timedelta(seconds=5)


def s(seconds: int) -> datetime:
    return NOW.replace(microsecond=0) - timedelta(seconds=seconds)


def test_nothing_is_due_right_after_the_last_decided_tick() -> None:
    plan = plan_ticks(schedule(), s(0), NOW, late_after=LATE)
    assert (plan.fire, plan.passed_over) == ([], None)


def test_on_time_each_policy_fires_the_one_due_tick() -> None:
    for policy in CatchUp:
        plan = plan_ticks(schedule(catch_up=policy), s(1), NOW, late_after=LATE)
        assert (plan.fire, plan.passed_over) == ([s(0)], None), policy


def test_all_fires_every_missed_tick_within_the_window() -> None:
    plan = plan_ticks(schedule(catch_up=CatchUp.ALL), s(10), NOW, late_after=LATE)
    assert plan.fire == [s(n) for n in range(9, -1, -1)]
    assert plan.passed_over is None


def test_all_passes_over_ticks_older_than_the_window_first_as_one_record() -> None:
    window = timedelta(seconds=4)
    plan = plan_ticks(schedule(catch_up=CatchUp.ALL, catch_up_window=window), s(10), NOW,
                      late_after=LATE)  # fmt: skip
    assert (plan.fire, plan.passed_over, plan.passed_over_count) == ([], s(4), 6)
    rest = plan_ticks(schedule(catch_up=CatchUp.ALL, catch_up_window=window), s(4), NOW,
                      late_after=LATE)  # fmt: skip
    assert rest.fire == [s(3), s(2), s(1), s(0)]


def test_latest_fires_only_the_latest_and_passes_over_the_rest() -> None:
    plan = plan_ticks(schedule(catch_up=CatchUp.LATEST), s(10), NOW, late_after=LATE)
    assert (plan.fire, plan.passed_over, plan.passed_over_count) == ([s(0)], s(1), 9)


def test_skip_fires_the_latest_only_if_it_is_not_late() -> None:
    plan = plan_ticks(schedule(catch_up=CatchUp.SKIP), s(10), NOW, late_after=LATE)
    assert (plan.fire, plan.passed_over, plan.passed_over_count) == ([s(0)], s(1), 9)
    minutely = schedule(catch_up=CatchUp.SKIP, cron="0 * * * * *")
    late = plan_ticks(minutely, NOW - timedelta(hours=1), NOW + timedelta(seconds=20),
                      late_after=LATE)  # fmt: skip
    assert (late.fire, late.passed_over, late.passed_over_count) == ([], s(0), 60)


def test_a_paused_schedule_fires_nothing_and_passes_over_its_ticks_as_skipped() -> None:
    plan = plan_ticks(schedule(paused=True), s(3), NOW, late_after=LATE)
    assert (plan.fire, plan.passed_over, plan.passed_over_count) == ([], s(0), 3)


def test_a_long_outage_is_counted_up_to_ten_thousand_ticks() -> None:
    plan = plan_ticks(schedule(catch_up=CatchUp.LATEST), s(86_400), NOW, late_after=LATE)
    assert (plan.fire, plan.passed_over, plan.passed_over_count) == ([s(0)], s(1), 10_000)
