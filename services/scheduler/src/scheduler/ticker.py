"""The two loops every replica runs: fire due schedule ticks, and release due delayed jobs.

Replicas do not elect a leader: each one wakes at each tick and asks the store's fire script to
decide it, and the script decides each tick once (``scheduler.store``). So a replica that is
killed, or paused past any lease and resumed, neither loses a tick (another decides it) nor
repeats one (its late call finds it decided).

Per schedule and pass, the ticks due are those after the latest decided one (or after this
process started, for a schedule never decided) up to Redis's "now". The catch-up policy says
which of them fire; the others are recorded missed (or skipped, while paused) as one record.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice, takewhile

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.exceptions import RedisError

from contracts import SCHEDULES_FIRED, Service
from contracts.schedules import ScheduleFired
from scheduler.schedules import CatchUp, Schedule
from scheduler.store import DELAYED_JOB_TYPES, SchedulerStore
from servicekit import StreamKeys, get_logger
from servicekit.jobs import publish
from servicekit.redis_client import RedisClient

PRODUCER = str(Service.SCHEDULER)
_MAX_ENUMERATED = 10_000  # ticks listed per pass; an older backlog is one "missed" record
_PUNCTUALITY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600)
log = get_logger(__name__)


class SchedulerMetrics:
    """Fires by schedule and outcome, punctuality, next fire time (one set per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.fires = Counter(
            "scheduler_fires", "Ticks decided by this replica, by outcome "
            "(fired, late, missed, skipped).", ("schedule", "outcome"), registry=registry,
        )  # fmt: skip
        self.punctuality = Histogram(
            "scheduler_punctuality_seconds", "Actual minus scheduled time of fired ticks "
            "(Redis clock).", ("schedule",), buckets=_PUNCTUALITY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.next_fire = Gauge(
            "scheduler_next_fire_timestamp_seconds", "When the schedule fires next (Unix time).",
            ("schedule",), registry=registry,
        )  # fmt: skip
        self.delayed_released = Counter(
            "scheduler_delayed_jobs_released", "Delayed jobs published when due.", ("job_type",),
            registry=registry,
        )  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """What one pass does for one schedule: fire these ticks, record the rest as one."""

    fire: list[datetime]
    passed_over: datetime | None = None
    """The latest tick not fired (missed, or skipped while paused), if any."""
    passed_over_count: int = 0


def plan_ticks(
    schedule: Schedule, after: datetime, now: datetime, *, late_after: timedelta
) -> Plan:
    """Decide which ticks in (after, now] fire, by the schedule's pause flag and catch-up policy.

    Pure: the store's script still has the last word (a tick decided meanwhile, a deadline
    passed, the previous run not finished). With ``all``, ticks older than the window are passed
    over first, as one record, and the following plan fires the rest (at most 10,000 a plan).
    """
    latest = schedule.last_tick_at_or_before(now)
    if latest is None or latest <= after:
        return Plan([])
    if schedule.paused:
        return Plan([], latest, _count(schedule, after, latest))
    if schedule.catch_up == CatchUp.ALL:
        older = schedule.last_tick_at_or_before(now - schedule.catch_up_window)
        if older is not None and older > after:
            return Plan([], older, _count(schedule, after, older))
        due = takewhile(lambda tick: tick <= now, schedule.ticks(after))
        return Plan(list(islice(due, _MAX_ENUMERATED)))
    before = schedule.last_tick_at_or_before(latest - timedelta(microseconds=1))
    passed = before if before is not None and before > after else None
    count = 0 if passed is None else _count(schedule, after, passed)
    if schedule.catch_up == CatchUp.SKIP and now - latest > late_after:
        return Plan([], latest, count + 1)
    return Plan([latest], passed, count)


def _count(schedule: Schedule, after: datetime, until: datetime) -> int:
    """Ticks in (after, until], counted up to 10,000."""
    due = takewhile(lambda tick: tick <= until, schedule.ticks(after))
    return sum(1 for _ in islice(due, _MAX_ENUMERATED))


class Ticker:
    """Fires the schedules' due ticks through the store, and releases due delayed jobs."""

    def __init__(
        self,
        schedules: list[Schedule],
        store: SchedulerStore,
        metrics: SchedulerMetrics,
        *,
        redis: RedisClient,
        keys: StreamKeys,
        late_after: timedelta = timedelta(seconds=5),
        running_ttl: timedelta = timedelta(hours=1),
        delayed_poll: float = 0.1,
        idle_cap: float = 1.0,
    ) -> None:
        self.schedules = sorted(schedules, key=lambda s: s.order)
        self.store = store
        self.metrics = metrics
        self._redis = redis
        self._keys = keys
        self.late_after = late_after
        self.running_ttl = running_ttl
        self.delayed_poll = delayed_poll
        self.idle_cap = idle_cap
        self._started: datetime | None = None

    async def run_schedules(self, stop: asyncio.Event) -> None:
        """Fire ticks until ``stop``; sleep until the next tick (at most ``idle_cap``)."""
        while not stop.is_set():
            try:
                now = await self.store.now()
                if self._started is None:
                    self._started = now
                for schedule in self.schedules:
                    await self.advance(schedule, now)
                wait = self._until_next(await self.store.now())
            except (RedisError, OSError) as exc:
                log.warning("scheduler.redis_failed", error=repr(exc))
                wait = 0.5
            await _sleep_or_stop(stop, wait)

    async def advance(self, schedule: Schedule, now: datetime) -> None:
        """Decide every tick of ``schedule`` due by ``now``."""
        last = await self.store.last_tick(schedule.stream, schedule.name)
        after = last if last is not None else (self._started or now)
        while True:
            plan = plan_ticks(schedule, after, now, late_after=self.late_after)
            if plan.passed_over is None and not plan.fire:
                break
            await self._carry_out(schedule, plan)
            after = max([*plan.fire, *([plan.passed_over] if plan.passed_over else [])])
        self.metrics.next_fire.labels(schedule.name).set(schedule.next_tick(now).timestamp())

    async def _carry_out(self, schedule: Schedule, plan: Plan) -> None:
        if plan.passed_over is not None:
            mode = "skipped" if schedule.paused else "missed"
            reason = "paused" if schedule.paused else f"catch_up={schedule.catch_up}"
            command = schedule.command(plan.passed_over, producer=PRODUCER)
            decision = await self.store.decide(
                schedule.stream, schedule.name, plan.passed_over, fire_id=command.event_id,
                mode=mode, reason=reason, count=plan.passed_over_count,
            )  # fmt: skip
            if decision.outcome == mode:
                self.metrics.fires.labels(schedule.name, mode).inc(plan.passed_over_count)
        for tick in plan.fire:
            await self.fire(schedule, tick)

    async def fire(self, schedule: Schedule, tick: datetime) -> None:
        """Ask the store to fire one tick; it decides: fired, late, missed, skipped, not ours."""
        command = schedule.command(tick, producer=PRODUCER)
        deadline = tick + (
            self.late_after if schedule.catch_up == CatchUp.SKIP else schedule.catch_up_window
        )
        decision = await self.store.decide(
            schedule.stream, schedule.name, tick, fire_id=command.event_id, mode="fire",
            deadline=deadline, overlap=str(schedule.overlap), running_ttl=self.running_ttl,
            late_after=self.late_after, command=command,
        )  # fmt: skip
        if decision.outcome in ("duplicate", "early"):
            return  # another replica decided it, or our clock ran ahead of Redis's: next pass
        self.metrics.fires.labels(schedule.name, decision.outcome).inc()
        if decision.outcome in ("fired", "late"):
            lateness = (decision.at - tick).total_seconds()
            self.metrics.punctuality.labels(schedule.name).observe(max(lateness, 0.0))
            await self._announce(schedule, tick, command.type)
        log.info("schedule.tick_decided", schedule=schedule.name, tick_at=tick.isoformat(),
                 outcome=decision.outcome, at=decision.at.isoformat())  # fmt: skip

    async def _announce(self, schedule: Schedule, tick: datetime, command_type: str) -> None:
        # Audit only, and best effort: the fire record in Redis is the authority.
        fired = ScheduleFired.for_tick(
            schedule=schedule.name, tick_at=tick, producer=PRODUCER, command_type=command_type
        )
        try:
            await publish(self._redis, self._keys, SCHEDULES_FIRED, fired)
        except (RedisError, OSError) as exc:
            log.warning("schedule.fired_not_announced", schedule=schedule.name, error=repr(exc))

    def _until_next(self, now: datetime) -> float:
        upcoming = [s.next_tick(now) for s in self.schedules if not s.paused]
        if not upcoming:
            return self.idle_cap
        # A few ms past the tick: Redis's clock must have reached it when the script runs.
        wait = (min(upcoming) - now).total_seconds() + 0.002
        return min(max(wait, 0.001), self.idle_cap)

    async def run_delayed(self, stop: asyncio.Event) -> None:
        """Publish due delayed jobs until ``stop``.

        It sleeps until the next held job is due, at most ``delayed_poll`` seconds (a job held
        meanwhile may be due sooner), and not at all while a batch came back full.
        """
        while not stop.is_set():
            wait = self.delayed_poll
            try:
                for job_type in DELAYED_JOB_TYPES:
                    released, next_due = await self.store.release_due(job_type)
                    if released:
                        self.metrics.delayed_released.labels(str(job_type)).inc(released)
                        log.info("delayed_jobs.released", job_type=str(job_type), count=released)
                    if released >= 100:
                        wait = 0.0
                    elif next_due is not None:
                        wait = min(wait, next_due + 0.001)
            except (RedisError, OSError) as exc:
                log.warning("scheduler.redis_failed", error=repr(exc))
            if wait > 0:
                await _sleep_or_stop(stop, wait)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
