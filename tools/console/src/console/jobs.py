"""Looking a job up in notes-api, which owns the job rows: `GET /v1/operator/jobs/{id}` over HTTP.

The console never reads notes-api's schema (ARCHITECTURE.md, data ownership); notes-api serves
operators a read-only view of any owner's job for an operator token (`OPERATOR_TOKENS` there,
`NOTES_API_OPERATOR_TOKEN` here), and this is its one client.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx


class JobLookupError(Exception):
    """notes-api did not answer with a job or a 404 (down, refused the token, a bad answer)."""


class JobLookup:
    """Finds jobs by id through notes-api's operator endpoint."""

    def __init__(
        self, base_url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 5.0,
    ) -> None:  # fmt: skip
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), transport=transport, timeout=timeout,
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip

    async def find(self, job_id: UUID) -> dict[str, Any] | None:
        """The job as notes-api's operator view shows it, or None when there is no such job."""
        try:
            response = await self._http.get(f"/v1/operator/jobs/{job_id}")
        except httpx.HTTPError as exc:
            raise JobLookupError(f"notes-api did not answer: {type(exc).__name__}") from exc
        if response.status_code == 404:
            return None
        if response.status_code == 401:
            raise JobLookupError(
                "notes-api refused the console's operator token "
                "(NOTES_API_OPERATOR_TOKEN is not one of its OPERATOR_TOKENS)"
            )
        if response.status_code != 200:
            raise JobLookupError(f"notes-api answered {response.status_code}")
        job: dict[str, Any] = response.json()
        return job

    async def aclose(self) -> None:
        """Close the HTTP client's connections."""
        await self._http.aclose()
