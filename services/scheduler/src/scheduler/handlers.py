"""scheduler: holds delayed jobs until due and learns when a scheduled command's run finished.

Consumes: jobs.delayed.v1 (jobs.delayed.requested.v1, jobs.delayed.cancelled.v1);
          commands.completed.v1.
Emits:    held jobs on their job streams when due, and each schedule's command events on its
          tick (both from the background loops in ``scheduler.ticker``, not from these handlers).
Writes:   Redis keys only (``scheduler.store``; no database).

Both handlers are idempotent by key (a job id, a fire id), so a redelivery changes nothing and
they need no dedupe record. A delayed request whose payload is not a job request is a
PermanentError (dead-lettered: notes-api sent something no worker could run); Redis errors
propagate and the runtime retries.
"""

from contracts import (
    COMMANDS_COMPLETED,
    JOBS_DELAYED,
    DelayedJobCancelled,
    DelayedJobRequested,
    Service,
)
from contracts.schedules import CommandCompleted
from scheduler.schedules import command_types
from scheduler.store import DELAYED_JOB_TYPES, SchedulerStore, job_entry
from servicekit import PermanentError, get_logger
from servicekit.jobs import JobRouter

router = JobRouter(group=str(Service.SCHEDULER))
log = get_logger(__name__)


@router.event((DelayedJobRequested, DelayedJobCancelled), stream=JOBS_DELAYED)
async def hold_delayed_job(
    event: DelayedJobRequested | DelayedJobCancelled, store: SchedulerStore
) -> None:
    """Hold a delayed job until its ``run_at`` (released by the ticker), or drop a cancelled one.

    One handler for the stream's two events: the cancellation's order relative to the request
    matters, and one group reading one stream keeps them in order.
    """
    if isinstance(event, DelayedJobCancelled):
        await _cancel_delayed_job(event, store)
        return
    try:
        data = job_entry(event.payload)
    except ValueError as exc:
        raise PermanentError(f"delayed job {event.job_id}: payload is not a job: {exc}") from exc
    held = await store.hold(event.job_type, event.job_id, event.run_at, event.stream, data)
    log.info("delayed_job.held", job_id=str(event.job_id), run_at=event.run_at.isoformat(),
             stream=event.stream, new=held)  # fmt: skip


async def _cancel_delayed_job(event: DelayedJobCancelled, store: SchedulerStore) -> None:
    """The cancellation does not say the job's type: drop it from whichever type holds it."""
    dropped = [await store.cancel(job_type, event.job_id) for job_type in DELAYED_JOB_TYPES]
    log.info("delayed_job.cancelled", job_id=str(event.job_id), was_held=any(dropped))


@router.event(CommandCompleted, stream=COMMANDS_COMPLETED)
async def record_command_completed(event: CommandCompleted, store: SchedulerStore) -> None:
    """Mark the schedule's run finished, so an overlap=skip schedule fires its next tick."""
    command = command_types().get(event.command_type)
    if command is None:
        return  # a command this scheduler does not publish: nothing of ours is running
    _, stream = command
    finished = await store.finish_run(stream, event.schedule, event.command_id)
    log.info("schedule.run_finished", schedule=event.schedule, tick_at=event.tick_at.isoformat(),
             cleared=finished)  # fmt: skip
