"""Retention for a service's transactional tables: published outbox rows and inbox records.

Streams and dead letters are trimmed by the job runtime's maintenance; this loop does the same
for PostgreSQL, so no table grows without bound. Add it to ``run_worker``'s ``background``.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from servicekit.inbox import DEFAULT_INBOX_RETENTION, purge_inbox
from servicekit.outbox import DEFAULT_OUTBOX_RETENTION, OutboxRelay
from servicekit.runner import BackgroundLoop

__all__ = ["database_retention"]

_log = structlog.stdlib.get_logger("servicekit.retention")


def database_retention(
    engine: AsyncEngine,
    relay: OutboxRelay,
    *,
    schema: str,
    outbox_for: timedelta = DEFAULT_OUTBOX_RETENTION,
    inbox_for: timedelta = DEFAULT_INBOX_RETENTION,
    every: float = 3600.0,
) -> BackgroundLoop:
    """Return a loop that purges old published outbox rows and inbox records every ``every`` s.

    Inbox records must outlive any possible redelivery (stream retention plus the retry horizon),
    which the defaults (7 days each against 24 h of stream retention) respect.
    """

    async def purge_old_rows(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                outbox = await relay.purge_published(outbox_for)
                inbox = await purge_inbox(engine, schema, inbox_for)
                if outbox or inbox:
                    _log.info("retention.purged", schema=schema, outbox=outbox, inbox=inbox)
            except Exception as exc:  # a database outage must not stop the process
                _log.warning("retention.failed", schema=schema, error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    return purge_old_rows
