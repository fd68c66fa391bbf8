"""Redrives running in the background of the console process, with their progress.

A redrive paced at a few letters a second can take minutes: longer than a request should wait.
The console starts it as a task here and answers at once with its page, which polls the progress
(`RedriveRun.progress`) until it is done. The run is `servicekit.operations.redrive` itself, so
the moves and the audit record are the ones `jobsctl` makes; a run that fails or is stopped
part-way (the console shutting down) records what it moved, with the reason, in the same audit
stream. Runs live in this process only: the last `KEEP` are kept to be looked at, and a console
restarted mid-run loses the page (not the letters: each is moved or not, never both).
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from servicekit import RedisClient, StreamKeys, get_logger
from servicekit.operations import DeadLetter, DeadLetterFilter, record_audit, redrive

log = get_logger("console")
KEEP = 100
"""Finished runs kept for their pages (the oldest are forgotten first)."""


@dataclass
class RedriveRun:
    """One redrive: who started it, what it takes, how far it is."""

    id: str
    stream: str
    operator: str
    per_second: float | None
    total: int
    """Letters it takes (the previewed ones); corrected once the redrive has read them."""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    done: int = 0
    moved: list[str] = field(default_factory=list)
    """New entry ids on the stream."""
    gone: int = 0
    """Letters no longer there when their turn came (redriven or purged by someone else)."""
    error: str | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """Whether it has ended (done, failed or stopped)."""
        return self.finished_at is not None

    def progress(self) -> dict[str, Any]:
        """What the page polls."""
        return {
            "id": self.id, "stream": self.stream, "operator": self.operator,
            "total": self.total, "done": self.done, "moved": len(self.moved), "gone": self.gone,
            "error": self.error, "finished": self.finished,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }  # fmt: skip

    def _counted(self, done: int, total: int) -> None:
        self.done = done
        self.total = max(self.total, total)  # the previewed count, or what it found

    def _moved(self, _letter: DeadLetter, new_id: str | None) -> None:
        if new_id is None:
            self.gone += 1
        else:
            self.moved.append(new_id)


class Redrives:
    """The console's redrive runs: start one, look one up, stop them all at shutdown."""

    def __init__(self, keys: StreamKeys) -> None:
        self._keys = keys
        self._runs: OrderedDict[str, RedriveRun] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(
        self, redis: RedisClient, stream: str, where: DeadLetterFilter, *, operator: str,
        per_second: float | None,
    ) -> RedriveRun:  # fmt: skip
        """Start redriving what ``where`` takes from ``stream``; return its run at once."""
        total = len(where.ids) if where.ids is not None else 0
        run = RedriveRun(secrets.token_hex(8), stream, operator, per_second, total)
        self._runs[run.id] = run
        while len(self._runs) > KEEP:
            oldest = next(iter(self._runs.values()))
            if not oldest.finished:
                break
            self._runs.popitem(last=False)
        task = asyncio.create_task(self._run(redis, run, where), name=f"redrive-{run.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("console.redrive_started", operator=operator, stream=stream, run=run.id,
                 total=total, per_second=per_second)  # fmt: skip
        return run

    def get(self, run_id: str) -> RedriveRun | None:
        """The run with this id, if this process has it."""
        return self._runs.get(run_id)

    def recent(self) -> list[RedriveRun]:
        """Every run this process keeps, newest first."""
        return list(reversed(self._runs.values()))

    async def _run(self, redis: RedisClient, run: RedriveRun, where: DeadLetterFilter) -> None:
        try:
            result = await redrive(redis, self._keys, run.stream, where, operator=run.operator,
                                   per_second=run.per_second, progress=run._counted,
                                   on_letter=run._moved)  # fmt: skip
            # Previewed letters no longer there when it started were redriven or purged since.
            run.gone += max(0, run.total - len(result.matched))
        except asyncio.CancelledError:
            run.error = "stopped: the console shut down"
            await self._record_partial(redis, run)
            raise
        except Exception as exc:  # a Redis failure part-way: say so, record what moved
            run.error = f"{type(exc).__name__}: {exc}"
            log.exception("console.redrive_failed", operator=run.operator, run=run.id)
            await self._record_partial(redis, run)
        finally:
            run.finished_at = datetime.now(UTC)
            log.info("console.redrove", operator=run.operator, stream=run.stream, run=run.id,
                     moved=len(run.moved), total=run.total, error=run.error)  # fmt: skip

    async def _record_partial(self, redis: RedisClient, run: RedriveRun) -> None:
        """The audit record `redrive` did not get to write: what moved before it ended."""
        try:
            await record_audit(
                redis, self._keys, operator=run.operator, action="dlq.redrive",
                stream=run.stream, count=len(run.moved),
                detail={"run": run.id, "ended": run.error or "", "done": str(run.done)},
            )  # fmt: skip
        except Exception:  # Redis is what failed: the log line above is the record then
            log.exception("console.redrive_unaudited", operator=run.operator, run=run.id)

    async def stop(self) -> None:
        """Stop every running redrive (each records what it moved) and wait for them."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
