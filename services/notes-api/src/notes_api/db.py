"""How notes-api reaches PostgreSQL: one way.

Statements are built against the SQLModel table classes of `notes_api.models` (`select(Note)`,
`insert(Job)`, `update(Note)`, ...) and run on an `AsyncConnection`: a write transaction's
(`engine.begin()`, servicekit's handler transaction) or the request's autocommit reader. Rows are
read by attribute and validated into the API shapes (`NotePublic.model_validate(row,
from_attributes=True)`); no ORM unit of work, no `__table__`.

Two transitional admissions, so callers outside this package keep working while they move:
`Connectable` lets the worker still pass a SQLModel session to `bulk.*` and
`idempotency.purge_expired` (it should pass its handler transaction's connection), and
`engine_of` takes the sessionmaker `app.py` builds (it should pass its engine).
"""

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

Connectable = AsyncConnection | AsyncSession


async def connection_of(connectable: Connectable) -> AsyncConnection:
    """The connection to run statements on (a session's own, in its transaction)."""
    if isinstance(connectable, AsyncSession):
        return await connectable.connection()
    return connectable


def engine_of(database: AsyncEngine | async_sessionmaker[Any]) -> AsyncEngine:
    """The engine itself, or the one a sessionmaker is bound to."""
    if isinstance(database, AsyncEngine):
        return database
    engine = database.kw.get("bind")
    if not isinstance(engine, AsyncEngine):
        raise TypeError("the sessionmaker is not bound to an AsyncEngine")
    return engine
