"""The store's scripts and the ticker on real Redis: ticks decided once, policies, delayed jobs."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from redis.asyncio import Redis

from contracts import (
    ArchiveRequested,
    DelayedJobCancelled,
    DelayedJobRequested,
    JobType,
    Priority,
    job_stream,
)
from contracts.schedules import CommandCompleted
from scheduler.handlers import hold_delayed_job, record_command_completed
from scheduler.schedules import CatchUp, Overlap
from scheduler.store import SchedulerStore
from servicekit import StreamKeys
from servicekit.testing import read_events

from .conftest import commands, schedule, ticker, whole_second

STREAM = "commands.purge_idempotency_keys.v1"


async def _down_since(store: SchedulerStore, seconds: int) -> None:
    """The scheduler last decided a tick ``seconds`` ago, then was down."""
    last = whole_second(await store.now()) - timedelta(seconds=seconds)
    decision = await store.decide(STREAM, "every-second", last, fire_id=uuid4(), mode="missed")
    assert decision.outcome == "missed"


async def _outcomes(store: SchedulerStore) -> list[tuple[str, int]]:
    history = await store.history(STREAM, "every-second")
    return [(r.outcome, r.count) for r in reversed(history)]


async def test_a_tick_is_decided_once_however_many_replicas_ask(
    store: SchedulerStore, redis_client: Redis, keys: StreamKeys
) -> None:
    s = schedule()
    tick = whole_second(await store.now())
    command = s.command(tick, producer="scheduler")
    asks = [
        await store.decide(
            STREAM, s.name, tick, fire_id=command.event_id, mode="fire", command=command
        )
        for _ in range(3)
    ]
    assert [a.outcome for a in asks] == ["fired", "duplicate", "duplicate"]
    assert [c.event_id for c in await commands(redis_client, keys)] == [command.event_id]
    earlier = tick - timedelta(seconds=1)  # a replica paused since before the last tick
    late_ask = await store.decide(STREAM, s.name, earlier, fire_id=uuid4(), mode="fire",
                                  command=s.command(earlier, producer="scheduler"))  # fmt: skip
    assert late_ask.outcome == "duplicate"
    assert len(await commands(redis_client, keys)) == 1


async def test_a_tick_ahead_of_redis_clock_is_not_decided(store: SchedulerStore) -> None:
    future = whole_second(await store.now()) + timedelta(seconds=5)
    decision = await store.decide(STREAM, "every-second", future, fire_id=uuid4(), mode="fire")
    assert decision.outcome == "early"
    assert await store.last_tick(STREAM, "every-second") is None


async def test_catch_up_all_fires_each_missed_tick_once(
    store: SchedulerStore, redis_client: Redis, keys: StreamKeys
) -> None:
    await _down_since(store, 6)
    now = await store.now()
    await ticker([schedule(catch_up=CatchUp.ALL)], store, redis_client, keys).advance(
        schedule(catch_up=CatchUp.ALL), now
    )
    fired = await commands(redis_client, keys)
    assert len(fired) == len({c.tick_at for c in fired}) >= 6
    outcomes = await _outcomes(store)
    assert outcomes[0] == ("missed", 1)
    assert {o for o, _ in outcomes[1:]} <= {"fired", "late"}


async def test_catch_up_latest_fires_once_and_records_the_rest_missed(
    store: SchedulerStore, redis_client: Redis, keys: StreamKeys
) -> None:
    await _down_since(store, 6)
    s = schedule(catch_up=CatchUp.LATEST)
    await ticker([s], store, redis_client, keys).advance(s, await store.now())
    [fired] = await commands(redis_client, keys)
    outcomes = await _outcomes(store)
    assert outcomes[1][0] == "missed"
    assert outcomes[1][1] >= 5
    assert outcomes[2][0] == "fired"
    assert fired.tick_at == (await store.history(STREAM, s.name))[0].tick_at


async def test_catch_up_skip_fires_nothing_late(
    store: SchedulerStore, redis_client: Redis, keys: StreamKeys
) -> None:
    await _down_since(store, 6)
    s = schedule(catch_up=CatchUp.SKIP)
    strict = ticker([s], store, redis_client, keys)
    strict.late_after = timedelta(microseconds=1)  # so even the latest tick is late
    await strict.advance(s, await store.now())
    assert await commands(redis_client, keys) == []
    [(outcome, count)] = (await _outcomes(store))[1:]
    assert outcome == "missed"
    assert count >= 6


async def test_overlap_skip_waits_for_the_previous_run_to_complete(
    store: SchedulerStore, redis_client: Redis, keys: StreamKeys
) -> None:
    s = schedule(overlap=Overlap.SKIP)
    t = ticker([s], store, redis_client, keys)
    now = whole_second(await store.now())
    first, second, third = (now - timedelta(seconds=n) for n in (2, 1, 0))
    await t.fire(s, first)
    await t.fire(s, second)  # the first run has not reported completion
    [command] = await commands(redis_client, keys)
    await record_command_completed(
        CommandCompleted.for_command(command, producer="notes-api-worker"), store
    )
    await t.fire(s, third)
    assert [c.tick_at for c in await commands(redis_client, keys)] == [first, third]
    history = {r.tick_at: r for r in await store.history(STREAM, s.name)}
    assert history[second].outcome == "skipped"
    assert history[second].reason == "previous run not finished"


async def test_a_paused_schedule_fires_nothing_and_records_its_ticks_skipped(
    store: SchedulerStore, redis_client: Redis, keys: StreamKeys
) -> None:
    await _down_since(store, 3)
    s = schedule(paused=True)
    await ticker([s], store, redis_client, keys).advance(s, await store.now())
    assert await commands(redis_client, keys) == []
    [(outcome, count)] = (await _outcomes(store))[1:]
    assert outcome == "skipped"
    assert count >= 3
    assert (await store.history(STREAM, s.name))[0].reason == "paused"


async def test_fire_history_is_bounded(redis_client: Redis, keys: StreamKeys) -> None:
    store = SchedulerStore(redis_client, keys, history_size=5)
    now = whole_second(await store.now())
    for n in range(8, -1, -1):
        await store.decide(STREAM, "every-second", now - timedelta(seconds=n), fire_id=uuid4(),
                           mode="missed")  # fmt: skip
    history = await store.history(STREAM, "every-second", limit=100)
    assert [r.tick_at for r in history] == [now - timedelta(seconds=n) for n in range(5)]


def _delayed(run_at_offset: float, now: object) -> DelayedJobRequested:
    request = ArchiveRequested(producer="notes-api", owner_id="alice", job_id=uuid4(),
                               note_id=uuid4(), version=1)  # fmt: skip
    return DelayedJobRequested.for_request(
        request, run_at=now + timedelta(seconds=run_at_offset),  # type: ignore[operator]
        priority=Priority.DEFAULT, producer="notes-api",
    )  # fmt: skip


async def _published(redis: Redis, keys: StreamKeys) -> list[ArchiveRequested]:
    return await read_events(
        redis, keys, job_stream(JobType.ARCHIVE, Priority.DEFAULT), ArchiveRequested
    )


async def test_due_jobs_are_published_once_in_due_time_order(
    store: SchedulerStore, redis_client: Redis, keys: StreamKeys
) -> None:
    now = await store.now()
    later, sooner, future = _delayed(-1, now), _delayed(-2, now), _delayed(3600, now)
    for event in (later, sooner, future, later):  # the last one a redelivery
        await hold_delayed_job(event, store)
    released, next_due = await store.release_due(JobType.ARCHIVE)
    assert released == 2
    assert next_due is not None
    assert 3590 < next_due <= 3600  # the future one, in seconds
    assert (await store.release_due(JobType.ARCHIVE))[0] == 0
    await hold_delayed_job(later, store)  # redelivered after it was published: nothing
    assert (await store.release_due(JobType.ARCHIVE))[0] == 0
    assert [j.job_id for j in await _published(redis_client, keys)] == [
        sooner.job_id, later.job_id,
    ]  # fmt: skip
    assert [job_id for job_id, _ in await store.held_jobs(JobType.ARCHIVE)] == [str(future.job_id)]


async def test_a_job_cancelled_before_it_is_due_is_never_published(
    store: SchedulerStore, redis_client: Redis, keys: StreamKeys
) -> None:
    now = await store.now()
    kept, dropped = _delayed(-1, now), _delayed(-1, now)
    cancel = DelayedJobCancelled(producer="notes-api", job_id=dropped.job_id)
    await hold_delayed_job(kept, store)
    await hold_delayed_job(dropped, store)
    await hold_delayed_job(cancel, store)
    await hold_delayed_job(dropped, store)  # a redelivered request after the cancellation
    assert await store.release_due(JobType.ARCHIVE) == (1, None)
    assert [j.job_id for j in await _published(redis_client, keys)] == [kept.job_id]
