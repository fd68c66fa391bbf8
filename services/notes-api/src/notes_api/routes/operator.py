"""Operator endpoints: read-only, across owners, for the operations console (`OPERATOR_TOKENS`).

`GET /v1/operator/jobs/{job_id}`: any owner's job with its timeline (creation, each attempt's
transitions from the row's attempt log, the last status), result or error, trace id and, for a
bulk archive, its children as their rows stand. The console calls it over HTTP: job rows are
notes-api's, and no other process reads its schema.

A bearer of one of `OPERATOR_TOKENS` only (compared in constant time with every one); a notes API
key, no token or a wrong one is 401; unset tokens disable the endpoint (401 for all).
"""

import hmac
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Row, func
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select

from contracts import JobStatus, JobType
from notes_api.deps import SettingsDep
from notes_api.errors import PROBLEMS, Problem
from notes_api.jobs import job_public
from notes_api.models import BulkChunk, ChildJob, Children, Job, OperatorJob, TimelineEntry
from servicekit import get_logger

router = APIRouter(prefix="/v1/operator", tags=["operator"])
_bearer = HTTPBearer(auto_error=False, description="An operator token (`OPERATOR_TOKENS`).")
_log = get_logger("notes_api.operator")
SHOWN_CHILDREN = 20


async def operator_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the bearer token is one of `OPERATOR_TOKENS` (every one compared)."""
    given = (credentials.credentials if credentials else "").encode()
    known = [token.get_secret_value().encode() for token in settings.operator_tokens]
    matched = False
    for token in known:
        matched |= hmac.compare_digest(given, token)
    if not matched:
        raise Problem(
            401, "An operator token is required: `Authorization: Bearer <token>` "
            "(OPERATOR_TOKENS; a notes API key is not one).",
            headers={"WWW-Authenticate": 'Bearer realm="notes-api-operator"'},
        )  # fmt: skip


async def operator_reader(
    request: Request, _: Annotated[None, Depends(operator_token)]
) -> AsyncIterator[AsyncConnection]:
    # After the token check: a request without one borrows no connection.
    async with request.app.state.readers.connect() as connection:
        yield connection


OperatorReader = Annotated[AsyncConnection, Depends(operator_reader)]


def timeline(job: Row[Any]) -> list[TimelineEntry]:
    """Creation, each recorded attempt transition, and the last status if no attempt says it."""
    created = JobStatus.SCHEDULED if job.run_at is not None else JobStatus.ACCEPTED
    steps = [TimelineEntry(at=job.created_at, status=created, source="created")]
    steps += [
        TimelineEntry(at=a["at"], status=JobStatus(a["status"]), attempt=a.get("attempt"),
                      error=a.get("error"), source="attempt")
        for a in job.attempts
    ]  # fmt: skip
    if JobStatus(job.status) != steps[-1].status:
        steps.append(TimelineEntry(at=job.updated_at, status=JobStatus(job.status),
                                   error=job.error, source="last_update"))  # fmt: skip
    return steps


async def children(connection: AsyncConnection, parent_id: UUID) -> Children:
    counts = await connection.execute(
        select(Job.status, func.count()).where(col(Job.parent_id) == parent_id).group_by(Job.status)
    )
    by_status = {str(status): int(n) for status, n in counts}
    chunks = (await connection.execute(
        select(func.count(), func.count(col(BulkChunk.lost_at)))
        .where(col(BulkChunk.parent_id) == parent_id)
    )).one()  # fmt: skip
    settled = [str(JobStatus.SUCCEEDED), str(JobStatus.SKIPPED)]
    unsettled = await connection.execute(
        select(Job)
        .where(col(Job.parent_id) == parent_id, col(Job.status).not_in(settled))
        .order_by(col(Job.updated_at).desc())
        .limit(SHOWN_CHILDREN)
    )  # fmt: skip
    return Children(
        total=sum(by_status.values()), by_status=by_status, chunks=int(chunks[0]),
        lost_chunks=int(chunks[1]),
        not_succeeded=[ChildJob.model_validate(row, from_attributes=True) for row in unsettled],
    )  # fmt: skip


@router.get("/jobs/{job_id}", response_model=OperatorJob, responses=PROBLEMS)
async def operator_job(job_id: UUID, connection: OperatorReader) -> OperatorJob:
    """Any owner's job: status, timeline, attempts, result or error, trace id, children."""
    job = (await connection.execute(select(Job).where(Job.id == job_id))).first()
    if job is None:
        raise Problem(404, "No job with this id.")
    is_bulk = job.type == JobType.BULK_ARCHIVE
    _log.info("operator.job_read", job_id=str(job_id))
    return OperatorJob(
        **job_public(job).model_dump(), owner_id=job.owner_id, parent_id=job.parent_id,
        timeline=timeline(job), children=await children(connection, job.id) if is_bulk else None,
    )  # fmt: skip
