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

from notes_api.auth import owner_for_key, well_formed
from notes_api.errors import Problem
from notes_api.idempotency import (
    IdempotencyStore,
    Operation,
    fingerprint,
    legacy_fingerprint,
)
from notes_api.settings import NotesApiSettings

_bearer = HTTPBearer(auto_error=False, description="An API key from `notes-api create-key`.")


async def get_settings(request: Request) -> NotesApiSettings:
    settings: NotesApiSettings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


def _unauthorized(*, had_credentials: bool) -> Problem:
    # RFC 6750 §3.1: a request without authentication information gets no error code.
    challenge = 'Bearer realm="notes-api"'
    if had_credentials:
        challenge += ', error="invalid_token"'
    return Problem(
        401, "A valid API key is required: `Authorization: Bearer <key>`.",
        headers={"WWW-Authenticate": challenge},
    )  # fmt: skip


async def get_api_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The bearer key if it has a key's shape; 401 otherwise, before any database work."""
    if credentials is None:
        raise _unauthorized(had_credentials=False)
    if not well_formed(credentials.credentials):
        raise _unauthorized(had_credentials=True)
    return credentials.credentials


ApiKeyDep = Annotated[str, Depends(get_api_key)]


async def get_reader(request: Request, _: ApiKeyDep) -> AsyncIterator[AsyncConnection]:
    # Depends on the key's shape check, so a request without a usable key is rejected without
    # borrowing a connection (401, not 503, while PostgreSQL is down).
    async with request.app.state.readers.connect() as connection:
        yield connection


SettingsDep = Annotated[NotesApiSettings, Depends(get_settings)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
"""For a write outside Idempotency-Key: `async with engine.begin() as connection` (the connection
goes back to the pool at commit, before the response is sent)."""
ReaderDep = Annotated[AsyncConnection, Depends(get_reader)]
"""A connection in autocommit for the route's single-statement reads."""


async def get_owner(request: Request, key: ApiKeyDep) -> str:
    # A connection of its own, returned before the route's work: a POST that kept it while its
    # transaction waits for a second one starves the pool in a burst (503s; issue 12's tail).
    async with request.app.state.readers.connect() as reader:
        owner = await owner_for_key(reader, key)
    if owner is None:
        raise _unauthorized(had_credentials=True)
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
        method, path = self.request.method, self.request.url.path
        route = getattr(self.request.scope.get("route"), "path", path)
        keyed = self.key is not None  # without a key there is nothing to compare: no hashing
        outcome = await self.store.run(
            owner=self.owner,
            route=f"{method} {route}",
            key=self.key,
            request_hash=fingerprint(method, path, payload) if keyed else "",
            earlier_hash=legacy_fingerprint(method, path, payload) if keyed else None,
            operation=operation,
        )
        return outcome.response()


async def get_idempotent_call(
    request: Request, owner: OwnerDep, key: IdempotencyKeyHeader = None
) -> IdempotentCall:
    return IdempotentCall(request.app.state.idempotency, owner=owner, request=request, key=key)


IdempotentDep = Annotated[IdempotentCall, Depends(get_idempotent_call)]
