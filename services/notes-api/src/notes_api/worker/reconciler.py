"""The stale-job reconciler: finish jobs the platform no longer holds, honestly, as `dead`.

A job is stale when it is `accepted`, `running` or `retrying` and was last updated more than
`JOB_STALE_AFTER_SECONDS` ago. (`scheduled` jobs wait for the scheduler, and a bulk parent's
status follows its children.) For a batch of stale jobs, `runtime_holdings` says where each still
waits; a job held anywhere live is left alone. One held nowhere is finished `dead` through the
worker's status path (the store's `advance_job`: forward only, a bulk child counted once on its
parent), with its dead letter's reason if the runtime dead-lettered it (its lifecycle event was
lost), else `LOST_REASON`; each counts in `jobs_reconciled_total{job_type,outcome}`.

One replica reconciles at a time (a PostgreSQL advisory lock); each job is finished in its own
transaction after re-reading its row under lock, so an event applied meanwhile wins.
"""

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import func, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from contracts import JobStatus, JobType
from notes_api.models import Job
from notes_api.worker.runtime_holdings import find_holdings
from notes_api.worker.store import WorkerStore
from servicekit import BackgroundLoop, StreamKeys, get_logger
from servicekit.redis_client import RedisClient

LOST_REASON = "lost: the runtime holds no record of this job"
_STALE_STATUSES = [str(s) for s in (JobStatus.ACCEPTED, JobStatus.RUNNING, JobStatus.RETRYING)]
# One reconciler at a time across worker replicas: two would scan Redis twice for nothing.
_RECONCILE_LOCK = 0x6E6F7465735F726A  # "notes_rj"
_log = get_logger("notes_api.worker")


@dataclass(frozen=True, slots=True)
class _Stale:
    id: UUID
    type: str
    status: str
    updated_at: datetime


@dataclass
class ReconcileReport:
    """What one batch found: stale jobs looked at, and those finished (job id → outcome)."""

    examined: int = 0
    finished: dict[UUID, str] = field(default_factory=dict)
    locked_out: bool = False
    """Another replica holds the lock: nothing was looked at."""


class JobReconciler:
    """Finds stale jobs a batch at a time (a cursor walks past the ones still held)."""

    def __init__(
        self,
        engine: AsyncEngine,
        redis: RedisClient,
        keys: StreamKeys,
        *,
        stale_after: timedelta,
        registry: CollectorRegistry | None = None,
        batch_size: int = 100,
        store: WorkerStore | None = None,
    ) -> None:
        self._engine, self._redis, self._keys = engine, redis, keys
        # The worker's store: a lost bulk child's parent is then counted in its next round.
        self._store = store or WorkerStore(engine)
        self._stale_after = stale_after
        self._batch_size = batch_size
        self._after: tuple[datetime, UUID] | None = None
        self.reconciled = Counter(
            "jobs_reconciled_total",
            "Stale jobs the runtime no longer held, finished dead by the reconciler.",
            ("job_type", "outcome"),
            registry=registry,
        )

    async def reconcile_batch(self) -> ReconcileReport:
        """Look at the next batch of stale jobs and finish those held nowhere."""
        async with self._engine.connect() as lock_connection:
            autocommit = await lock_connection.execution_options(isolation_level="AUTOCOMMIT")
            locked = await autocommit.scalar(select(func.pg_try_advisory_lock(_RECONCILE_LOCK)))
            if not locked:
                return ReconcileReport(locked_out=True)
            try:
                return await self._reconcile_batch()
            finally:
                await autocommit.execute(select(func.pg_advisory_unlock(_RECONCILE_LOCK)))

    async def _reconcile_batch(self) -> ReconcileReport:
        batch = await self._stale_batch()
        full = len(batch) == self._batch_size
        self._after = (batch[-1].updated_at, batch[-1].id) if full else None  # else start over
        report = ReconcileReport(examined=len(batch))
        for job_type in sorted({job.type for job in batch}):
            of_type = {job.id: job for job in batch if job.type == job_type}
            held = await find_holdings(self._engine, self._redis, self._keys, job_type, of_type)
            for job in of_type.values():
                where = held.live.get(str(job.id))
                if where is not None:
                    _log.info("job.stale_but_held", job_id=str(job.id), status=job.status,
                              updated_at=job.updated_at.isoformat(), held=where)  # fmt: skip
                    continue
                letter = held.dead_letters.get(str(job.id))
                outcome, reason = ("dead_lettered", letter.reason) if letter else ("lost", None)
                if await self._finish(job, reason or LOST_REASON):
                    report.finished[job.id] = outcome
                    self.reconciled.labels(job_type=job_type, outcome=outcome).inc()
                    _log.warning("job.reconciled", job_id=str(job.id), job_type=job_type,
                                 outcome=outcome, reason=reason or LOST_REASON)  # fmt: skip
        return report

    async def _stale_batch(self) -> list[_Stale]:
        statement = (
            select(Job.id, Job.type, Job.status, Job.updated_at)
            .where(
                col(Job.status).in_(_STALE_STATUSES),
                Job.type != str(JobType.BULK_ARCHIVE),
                col(Job.updated_at) < func.now() - self._stale_after,
            )
            .order_by(col(Job.updated_at), col(Job.id))
            .limit(self._batch_size)
        )
        if self._after is not None:
            statement = statement.where(tuple_(Job.updated_at, Job.id) > tuple_(*self._after))
        async with self._engine.connect() as connection:
            return [_Stale(*row) for row in await connection.execute(statement)]

    async def _finish(self, stale: _Stale, reason: str) -> bool:
        async with self._store.transaction(None) as tx:  # the reconciler's own decision
            job = await tx.find_job(stale.id)  # locked until commit
            if job is None or (job.status, job.updated_at) != (stale.status, stale.updated_at):
                return False  # an event was applied since we looked: it decides
            return await tx.advance_job(job, JobStatus.DEAD, error=reason)

    def loop(self, every: float) -> BackgroundLoop:
        """A loop reconciling every ``every`` s (batch after batch while batches are full)."""

        async def reconcile_stale_jobs(stop: asyncio.Event) -> None:
            while not stop.is_set():
                try:
                    while not (await self.reconcile_batch()).locked_out and self._after:
                        if stop.is_set():
                            break
                except Exception as exc:  # an outage of either server must not stop the worker
                    _log.warning("jobs.reconcile_failed", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)

        return reconcile_stale_jobs
