"""Idempotency-Key on POST (Stripe / IETF draft semantics), scoped per owner and route.

1. Claim the key in its own short transaction (``INSERT ... ON CONFLICT``): a second request with
   the key finds the claim and gets 409 while the first is in flight, 422 if its request differs,
   or the stored response once the first has finished.
2. Run the operation and store its response *in the operation's transaction*, so the effect, its
   outbox events and the stored response commit together: one note, one event, however many
   retries.
3. If the operation fails, the claim is released so a retry runs it again. A claim whose request
   died (process killed) is taken over after ``lock`` by a retry with the same request.
4. Each claim writes a fresh token, and only the holder of the current token may complete or
   release the record. A request that was merely slow when a retry took its claim over is still
   running: its final UPDATE finds another token, so it rolls back and answers 409, and only the
   retry's effect commits.
"""

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import and_, delete, func, or_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col, select

from notes_api.errors import Problem
from notes_api.models import IdempotencyRecord

REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True)
class Outcome:
    """A response to store and send: status, JSON body, headers."""

    status_code: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, self.status_code, headers=self.headers)


Operation = Callable[[AsyncConnection], Awaitable[Outcome]]
"""A POST's work, run in the transaction whose connection it is given."""


@dataclass(frozen=True)
class Claim:
    """One request's hold on an Idempotency-Key; ``token`` tells it from a retry's takeover."""

    owner: str
    route: str
    key: str
    token: UUID

    def record(self) -> tuple[Any, ...]:
        """Conditions matching the key's record, whoever holds it."""
        return (
            IdempotencyRecord.owner_id == self.owner,
            IdempotencyRecord.route == self.route,
            IdempotencyRecord.key == self.key,
        )

    def held(self) -> tuple[Any, ...]:
        """Conditions matching the record only while this claim still holds it."""
        return (*self.record(), IdempotencyRecord.claim_token == self.token)


def fingerprint(method: str, path: str, payload: BaseModel | None) -> str:
    """The request as validated, defaults applied: `{"title":"one"}` is `{"title":"one","body":""}`.

    Key order and whitespace never matter: the validated model is dumped with sorted keys.
    """
    body = payload.model_dump(mode="json") if payload is not None else None
    return _digest(method, path, body)


def legacy_fingerprint(method: str, path: str, payload: BaseModel | None) -> str:
    """The rule before issue 12 (fields the client sent only), still accepted for stored records.

    A record lives IDEMPOTENCY_TTL_HOURS; once every record written before the change has
    expired, this can go.
    """
    body = payload.model_dump(mode="json", exclude_unset=True) if payload is not None else None
    return _digest(method, path, body)


def _digest(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyStore:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        ttl: timedelta,
        lock: timedelta,
    ) -> None:
        self.engine = engine
        self.ttl = ttl
        self.lock = lock

    async def run(
        self,
        *,
        owner: str,
        route: str,
        key: str | None,
        request_hash: str,
        operation: Operation,
        earlier_hash: str | None = None,
    ) -> Outcome:
        """Run ``operation`` in a transaction, at most once per (owner, route, key).

        ``earlier_hash``: the same request under the earlier fingerprint rule, also accepted.
        """
        if key is None:
            async with self.engine.begin() as connection:
                return await operation(connection)
        claim = Claim(owner, route, key, uuid4())
        stored = await self._claim(claim, request_hash, earlier_hash)
        if stored is not None:
            return stored
        try:
            async with self.engine.begin() as connection:
                outcome = await operation(connection)
                completed = await connection.execute(
                    update(IdempotencyRecord)
                    .where(*claim.held())
                    .values(
                        status_code=outcome.status_code,
                        response_body=outcome.body,
                        response_headers=outcome.headers,
                        locked_at=None,
                        claim_token=None,
                    )
                )
                if completed.rowcount != 1:
                    raise _superseded()  # inside the transaction: the effect rolls back
            return outcome
        except BaseException:
            # Shielded: a cancelled request must still release its claim for the retry.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(claim))
            raise

    async def _claim(
        self, claim: Claim, request_hash: str, earlier_hash: str | None = None
    ) -> Outcome | None:
        """Take ``claim`` (return None) or return the stored response; raise 409/422."""
        same_request = {request_hash, earlier_hash or request_hash}
        now = func.now()
        claim_row = insert(IdempotencyRecord).values(
            owner_id=claim.owner,
            route=claim.route,
            key=claim.key,
            fingerprint=request_hash,
            created_at=now,
            locked_at=now,
            claim_token=claim.token,
            expires_at=now + self.ttl,
        )
        takeover = or_(
            col(IdempotencyRecord.expires_at) < now,  # an expired record is as good as none
            and_(
                col(IdempotencyRecord.status_code).is_(None),
                col(IdempotencyRecord.locked_at) < now - self.lock,
                col(IdempotencyRecord.fingerprint).in_(same_request),
            ),
        )
        statement = claim_row.on_conflict_do_update(
            index_elements=["owner_id", "route", "key"],
            set_={
                "fingerprint": claim_row.excluded.fingerprint,
                "created_at": now,
                "locked_at": now,
                "claim_token": claim.token,
                "expires_at": now + self.ttl,
                "status_code": None,
                "response_body": None,
                "response_headers": None,
            },
            where=takeover,
        ).returning(col(IdempotencyRecord.key))
        async with self.engine.begin() as connection:
            if (await connection.execute(statement)).first() is not None:
                return None
            record = (
                await connection.execute(select(IdempotencyRecord).where(*claim.record()))
            ).one()
        if record.fingerprint not in same_request:
            raise Problem(
                422, "This Idempotency-Key was used with a different request.",
                title="Idempotency-Key reused",
            )  # fmt: skip
        if record.status_code is None:
            raise Problem(
                409, "A request with this Idempotency-Key is still in progress; retry later.",
                title="Request in progress", headers={"Retry-After": "1"},
            )  # fmt: skip
        headers = {**(record.response_headers or {}), REPLAYED_HEADER: "true"}
        return Outcome(record.status_code, record.response_body, headers)

    async def _release(self, claim: Claim) -> None:
        """Delete the record if this claim still holds it (never a retry's takeover)."""
        async with self.engine.begin() as connection:
            await connection.execute(
                delete(IdempotencyRecord).where(
                    *claim.held(), col(IdempotencyRecord.status_code).is_(None)
                )
            )


def _superseded() -> Problem:
    return Problem(
        409,
        "A retry with this Idempotency-Key took this request over while it ran longer than "
        "IDEMPOTENCY_LOCK_SECONDS; this request's work was rolled back. Retry to get the "
        "retry's response.",
        title="Request superseded",
        headers={"Retry-After": "1"},
    )


async def purge_expired(connection: AsyncConnection, older_than: Any) -> int:
    """Delete records that expired and were created before ``older_than``; return how many."""
    result = await connection.execute(
        delete(IdempotencyRecord).where(
            col(IdempotencyRecord.created_at) < older_than,
            col(IdempotencyRecord.expires_at) < func.now(),
        )
    )
    return int(result.rowcount)
