"""Chaos scenarios on the assembled platform: a fault under a steady stream of writes and jobs.

Each scenario runs the workload (`workload.py`) for about 30 s, injects its fault meanwhile, then
waits (generously, bounded) until every acknowledged effect is there and judges with the checker
(`checker.py`): 0 lost, 0 duplicated, 0 unexpected, every job succeeded, every outbox drained,
no 500, no request given up on, no process dead that the scenario did not kill, and the
per-second schedule's ticks fired once each and handled, over the whole module so far. Outcomes
only: no assertion on how long anything took (a busy 2-core machine is slow, not wrong); the
figures line reports requests, acknowledgements, effects, findings, 503s and recovery times.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from contracts import (
    COMMANDS_COMPLETED,
    COMMANDS_PURGE_IDEMPOTENCY_KEYS,
    CommandCompleted,
    PurgeExpiredIdempotencyKeys,
)
from harness import Platform
from servicekit import StreamKeys
from servicekit.testing import read_events

from .checker import Verdict, collect_effects, judge, judge_ticks, settle
from .workload import Workload

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

WORKLOAD_SECONDS = 30.0
SETTLE_WITHIN = 300.0
Fault = Callable[[Platform, Workload], dict[str, str]]
"""Injects its fault while the workload runs; returns extra figures to print."""


def pause(seconds: float) -> None:
    """Let the workload run on (a duration of the scenario, not a wait for something)."""
    threading.Event().wait(seconds)


def ticks_verdict(platform: Platform, until: datetime) -> Verdict:
    """The per-second schedule since the module started: each tick fired once and handled."""

    async def read() -> tuple[list[datetime], list[datetime]]:
        redis = Redis.from_url(platform.env["REDIS_URL"])
        keys = StreamKeys(platform.env["STREAM_PREFIX"])
        try:
            fired = await read_events(
                redis, keys, COMMANDS_PURGE_IDEMPOTENCY_KEYS, PurgeExpiredIdempotencyKeys
            )
            done = await read_events(redis, keys, COMMANDS_COMPLETED, CommandCompleted)
        finally:
            await redis.aclose()
        return [c.tick_at for c in fired], list({c.tick_at for c in done})

    fired, handled = asyncio.run(read())
    return judge_ticks(fired, handled, until=until)


PAUSED = ("e2e-archiver", "e2e-notes-api-worker")


def pending_of(platform: Platform, consumers: tuple[str, ...]) -> int:
    """Entries pending on ``consumers`` in every group of every stream (XINFO CONSUMERS)."""
    held = 0
    with platform.redis_client() as redis:
        for key in redis.scan_iter(_type="stream", count=1000):
            for group in redis.xinfo_groups(key):
                for consumer in redis.xinfo_consumers(key, group["name"]):
                    if consumer["name"].decode() in consumers:
                        held += int(consumer["pending"])
    return held


def dead_processes(platform: Platform) -> dict[str, int]:
    return {
        pid: code
        for pid, running in platform.processes.items()
        if (code := running.process.poll()) is not None
    }


def run_scenario(
    platform: Platform,
    figures: Callable[[str], None],
    name: str,
    fault: Fault,
    *,
    seconds: float = WORKLOAD_SECONDS,
) -> None:
    owner = f"chaos-{name}-{uuid4().hex[:8]}"
    workload = Workload(platform.base_url, platform.create_key(owner))
    started = time.monotonic()
    extra: dict[str, str] = {}
    with workload:
        workload.wait_for_acknowledged(5, within=120)
        extra = fault(platform, workload)
        pause(seconds - (time.monotonic() - started))
    stopped_at = datetime.now(UTC)
    database = platform.env["DATABASE_URL"]

    ticks = Verdict()

    def check() -> Verdict:
        nonlocal ticks
        verdict = judge(workload.history, collect_effects(database, owner))
        ticks = ticks_verdict(platform, stopped_at)
        return verdict.merge(ticks)

    verdict, waited = settle(check, within=SETTLE_WITHIN)
    history = workload.history
    extra_text = "".join(f", {k} {v}" for k, v in extra.items())
    figures(
        f"requests {history.requests}, acknowledged {history.acknowledged}, effects "
        f"{verdict.effects - ticks.effects}, ticks {ticks.effects}, lost {len(verdict.lost)}, "
        f"duplicated {len(verdict.duplicated)}, "
        f"unexpected {len(verdict.unexpected)}, unfinished {len(verdict.unfinished)}, "
        f"503s {history.statuses[503]}, 500s {history.statuses[500]}, network errors "
        f"{sum(history.errors.values())}, given up {len(history.indeterminate)}{extra_text}, "
        f"settled in {waited:.0f} s"
    )
    assert verdict.clean, (
        f"{name}: waited up to {SETTLE_WITHIN:.0f} s ({waited:.0f} s) for every acknowledged "
        f"effect, each once, nothing else; saw {verdict.describe()}"
    )
    assert history.statuses[500] == 0, f"500 answers: {dict(history.statuses)}"
    assert not history.indeterminate, f"requests never answered: {history.indeterminate}"
    assert not dead_processes(platform), f"processes died: {dead_processes(platform)}"


def test_consumers_sigkilled_repeatedly_lose_and_duplicate_nothing(
    platform: Platform, figures: Callable[[str], None]
) -> None:
    def kill_consumers(platform: Platform, workload: Workload) -> dict[str, str]:
        kills = 0
        for round_no in range(6):
            pause(3)
            victim = "archiver" if round_no % 2 == 0 else "notes-api-worker"
            assert platform.kill(victim) == -signal.SIGKILL
            platform.start(victim)
            kills += 1
        return {"kills": str(kills)}

    run_scenario(platform, figures, "sigkill", kill_consumers)


def test_consumers_paused_past_the_visibility_timeout_lose_and_duplicate_nothing(
    platform: Platform, figures: Callable[[str], None]
) -> None:
    """A second replica takes over the paused one's entries (after 15 s, the runtime's default
    visibility timeout); the paused one then wakes holding entries it no longer owns."""
    second = [platform.start(name, replica=1) for name in ("archiver", "notes-api-worker")]

    def pause_consumers(platform: Platform, workload: Workload) -> dict[str, str]:
        for name in ("archiver", "notes-api-worker"):
            platform.pause(name)
        held = pending_of(platform, PAUSED)
        pause(20)
        left = pending_of(platform, PAUSED)
        for name in ("archiver", "notes-api-worker"):
            platform.resume(name)
        return {"paused": "20 s", "entries held when paused": str(held), "after 20 s": str(left)}

    try:
        run_scenario(platform, figures, "sigstop", pause_consumers, seconds=40)
    finally:
        codes = {replica: platform.stop(replica) for replica in second}
    assert set(codes.values()) == {0}, codes


def test_redis_killed_and_restarted_api_keeps_answering_and_the_outbox_drains(
    platform: Platform, figures: Callable[[str], None]
) -> None:
    outage: dict[str, float] = {}

    def kill_redis(platform: Platform, workload: Workload) -> dict[str, str]:
        assert platform.redis is not None
        pause(3)
        outage["start"] = time.monotonic()
        platform.redis.kill()
        pause(10)
        outage["end"] = time.monotonic()
        platform.redis.start()
        during = workload.history.statuses_between(outage["start"], outage["end"])
        assert during[201] > 0, f"no 201 while Redis was down; answers {dict(during)}"
        assert during[500] == 0, f"500s while Redis was down; answers {dict(during)}"
        return {"201s while Redis down": str(during[201])}

    run_scenario(platform, figures, "redis", kill_redis)


def test_postgres_stopped_and_started_api_answers_503_and_recovers_without_restart(
    platform: Platform, figures: Callable[[str], None]
) -> None:
    pids = {process_id: platform.pid(process_id) for process_id in platform.processes}

    def stop_postgres(platform: Platform, workload: Workload) -> dict[str, str]:
        assert platform.postgres is not None
        pause(3)
        down = time.monotonic()
        platform.postgres.stop()
        pause(10)
        up = time.monotonic()
        platform.postgres.start()
        during = workload.history.statuses_between(down, up)
        assert during[503] > 0, f"no 503 while PostgreSQL was down; answers {dict(during)}"
        assert during[500] == 0, f"500s while PostgreSQL was down; answers {dict(during)}"
        deadline = time.monotonic() + 120
        while (recovered := workload.history.recovery_after(up)) is None:
            assert time.monotonic() < deadline, "no success within 120 s of PostgreSQL's return"
            pause(0.2)
        return {"503s while down": str(during[503]), "recovery": f"{recovered:.1f} s"}

    run_scenario(platform, figures, "postgres", stop_postgres)
    after = {process_id: platform.pid(process_id) for process_id in platform.processes}
    assert after == pids, "a process was restarted; every one must recover in place"


def test_every_service_sigtermed_under_load_exits_0_and_loses_nothing(
    platform: Platform, figures: Callable[[str], None]
) -> None:
    def sigterm_everything(platform: Platform, workload: Workload) -> dict[str, str]:
        pause(3)
        process_ids = list(platform.processes)
        with ThreadPoolExecutor(len(process_ids)) as pool:  # SIGTERM to all at once
            codes = dict(zip(process_ids, pool.map(platform.stop, process_ids), strict=True))
        assert set(codes.values()) == {0}, f"exit codes after SIGTERM under load: {codes}"
        platform.start_all(process_ids)
        return {"stopped": str(len(codes))}

    run_scenario(platform, figures, "sigterm", sigterm_everything, seconds=40)


def test_scheduler_with_three_replicas_one_killed_fires_each_tick_once(
    platform: Platform, figures: Callable[[str], None]
) -> None:
    """Ticks are judged by every scenario; here two more replicas run and the first is killed."""
    extra = [platform.start("scheduler", replica=n) for n in (1, 2)]

    def kill_a_replica(platform: Platform, workload: Workload) -> dict[str, str]:
        pause(8)
        assert platform.kill("scheduler") == -signal.SIGKILL
        platform.start("scheduler")
        pause(8)
        assert platform.kill("scheduler.1") == -signal.SIGKILL
        platform.start("scheduler", replica=1)
        return {"replicas": "3", "killed": "2"}

    try:
        run_scenario(platform, figures, "scheduler", kill_a_replica)
    finally:
        codes = {replica: platform.stop(replica) for replica in extra}
    assert set(codes.values()) == {0}, codes
