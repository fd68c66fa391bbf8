"""Request dependencies as `Annotated` aliases.

They are all `async def`: FastAPI runs a plain `def` dependency in a thread pool, a thread hop per
dependency per request that cost more CPU than the request's own work.

The engine for a route's own write transaction, the autocommit reader, the owner from the bearer
key, and the Idempotency-Key wrapper every POST runs its work through (in its transaction).
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from notes_api.auth import owner_for_key
from notes_api.errors import Problem
from notes_api.idempotency import IdempotencyStore, Operation, fingerprint
from notes_api.settings import NotesApiSettings

_bearer = HTTPBearer(auto_error=False, description="An API key from `notes-api create-key`.")


async def get_settings(request: Request) -> NotesApiSettings:
    settings: NotesApiSettings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


async def get_reader(request: Request) -> AsyncIterator[AsyncConnection]:
    async with request.app.state.readers.connect() as connection:
        yield connection


SettingsDep = Annotated[NotesApiSettings, Depends(get_settings)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
"""For a write outside Idempotency-Key: `async with engine.begin() as connection` (the connection
goes back to the pool at commit, before the response is sent)."""
ReaderDep = Annotated[AsyncConnection, Depends(get_reader)]
"""A connection in autocommit for the route's single-statement reads."""


async def get_owner(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    # A connection of its own, returned before the route's work: a POST that kept it while its
    # transaction waits for a second one starves the pool in a burst (503s; issue 12's tail).
    owner = None
    if credentials:
        async with request.app.state.readers.connect() as reader:
            owner = await owner_for_key(reader, credentials.credentials)
    if owner is None:
        error = "invalid_token" if credentials else "invalid_request"
        raise Problem(
            401, "A valid API key is required: `Authorization: Bearer <key>`.",
            headers={"WWW-Authenticate": f'Bearer realm="notes-api", error="{error}"'},
        )  # fmt: skip
    return owner


OwnerDep = Annotated[str, Depends(get_owner)]

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Retry-safe POST: the same key and request replay the first response (24 h).",
    ),
]


class IdempotentCall:
    """Runs one POST's work at most once per Idempotency-Key (or plainly without one)."""

    def __init__(
        self, store: IdempotencyStore, *, owner: str, request: Request, key: str | None
    ) -> None:
        self.store, self.owner, self.request, self.key = store, owner, request, key

    async def respond(self, payload: BaseModel | None, operation: Operation) -> JSONResponse:
        route = getattr(self.request.scope.get("route"), "path", self.request.url.path)
        outcome = await self.store.run(
            owner=self.owner,
            route=f"{self.request.method} {route}",
            key=self.key,
            request_hash=fingerprint(self.request.method, self.request.url.path, payload),
            operation=operation,
        )
        return outcome.response()


async def get_idempotent_call(
    request: Request, owner: OwnerDep, key: IdempotencyKeyHeader = None
) -> IdempotentCall:
    return IdempotentCall(request.app.state.idempotency, owner=owner, request=request, key=key)


IdempotentDep = Annotated[IdempotentCall, Depends(get_idempotent_call)]
