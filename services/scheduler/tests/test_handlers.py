"""The handlers against an in-memory store: holding, cancelling, and runs reported finished."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from contracts import (
    ArchiveRequested,
    DelayedJobCancelled,
    DelayedJobRequested,
    JobType,
    Priority,
)
from contracts.schedules import AutoArchiveRequested, CommandCompleted
from scheduler.handlers import hold_delayed_job, record_command_completed
from servicekit import PermanentError

RUN_AT = datetime(2030, 1, 1, tzinfo=UTC)


class FakeStore:
    def __init__(self) -> None:
        self.held: dict[UUID, tuple[str, datetime, str, bytes]] = {}
        self.cancelled: list[tuple[str, UUID]] = []
        self.finished: list[tuple[str, str, UUID]] = []

    async def hold(
        self, job_type: str, job_id: UUID, run_at: datetime, stream: str, data: bytes
    ) -> bool:
        if job_id in self.held:
            return False
        self.held[job_id] = (str(job_type), run_at, stream, data)
        return True

    async def cancel(self, job_type: str, job_id: UUID) -> bool:
        self.cancelled.append((str(job_type), job_id))
        return self.held.pop(job_id, None) is not None

    async def finish_run(self, stream: str, name: str, fire_id: UUID) -> bool:
        self.finished.append((stream, name, fire_id))
        return True


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def delayed(job_id: UUID | None = None, **overrides: object) -> DelayedJobRequested:
    request = ArchiveRequested(producer="notes-api", owner_id="alice", job_id=job_id or uuid4(),
                               note_id=uuid4(), version=1)  # fmt: skip
    event = DelayedJobRequested.for_request(
        request, run_at=RUN_AT, priority=Priority.DEFAULT, producer="notes-api"
    )
    return event.model_copy(update=overrides) if overrides else event


async def test_a_delayed_request_is_held_on_its_stream_until_run_at(store: FakeStore) -> None:
    event = delayed()
    await hold_delayed_job(event, store)  # type: ignore[arg-type]
    job_type, run_at, stream, data = store.held[event.job_id]
    assert (job_type, run_at, stream) == ("archive", RUN_AT, "jobs.archive.default")
    assert str(event.job_id).encode() in data  # the job request itself, in the wire format


async def test_a_redelivered_request_holds_nothing_more(store: FakeStore) -> None:
    event = delayed()
    await hold_delayed_job(event, store)  # type: ignore[arg-type]
    await hold_delayed_job(event, store)  # type: ignore[arg-type]
    assert list(store.held) == [event.job_id]


async def test_a_cancellation_drops_the_held_job_whatever_its_type(store: FakeStore) -> None:
    event = delayed()
    await hold_delayed_job(event, store)  # type: ignore[arg-type]
    await hold_delayed_job(
        DelayedJobCancelled(producer="notes-api", job_id=event.job_id),
        store,  # type: ignore[arg-type]
    )
    assert store.held == {}
    assert {job_type for job_type, _ in store.cancelled} == {str(t) for t in
        (JobType.ARCHIVE, JobType.COPY, JobType.BULK_ARCHIVE_CHUNK)}  # fmt: skip


async def test_a_payload_that_is_no_job_request_is_dead_lettered(store: FakeStore) -> None:
    event = delayed(payload={"type": "notes.nothing.v1"})
    with pytest.raises(PermanentError, match="payload is not a job"):
        await hold_delayed_job(event, store)  # type: ignore[arg-type]
    assert store.held == {}


async def test_a_completed_command_clears_its_schedules_run(store: FakeStore) -> None:
    command = AutoArchiveRequested.for_tick(
        schedule="auto-archive", tick_at=RUN_AT - timedelta(days=1), producer="scheduler",
        not_updated_for_days=3,
    )  # fmt: skip
    completed = CommandCompleted.for_command(command, producer="notes-api-worker")
    await record_command_completed(completed, store)  # type: ignore[arg-type]
    assert store.finished == [("commands.auto_archive.v1", "auto-archive", command.event_id)]
