"""Bulk parents' progress, counted in rounds instead of by every child.

A child's result only writes the child's row (`WorkerStore`); the store remembers which parents
those committed results touched, and this loop counts them every `JOB_PROGRESS_EVERY_SECONDS`:
per parent one locked update and one `jobs.lifecycle.progress.v1`, however many children finished
in the round, and its completion when all are done. So the children of one bulk archive never
queue on the parent's row, and its progress events are at most one per round. At start and every
`JOB_PROGRESS_SWEEP_SECONDS` every unfinished bulk parent is counted too: one whose last children
a stopped process handled, before it could count them, finishes as well.
"""

import asyncio
import contextlib
import time

from notes_api.worker.store import WorkerStore
from servicekit import BackgroundLoop, get_logger

_log = get_logger("notes_api.worker")


def progress_counter(store: WorkerStore, *, every: float, sweep_every: float) -> BackgroundLoop:
    """The background loop that counts parents' progress every ``every`` seconds."""

    async def count(stop: asyncio.Event) -> None:
        next_sweep = 0.0  # at start: parents a previous process may have left uncounted
        while not stop.is_set():
            try:
                if time.monotonic() >= next_sweep:
                    store.count_later(await store.open_bulk_parents())
                    next_sweep = time.monotonic() + sweep_every
                await store.count_parents()
            except Exception as exc:  # the database is away: the parents wait for the next round
                _log.warning("job_progress.count_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)

    return count
