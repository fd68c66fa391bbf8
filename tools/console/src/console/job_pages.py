"""The job page: a job looked up by id (any owner's) in notes-api, with its timeline and children.

A search box on every job page; an id that is no job shows "no such job" (404); a lookup that is
not configured or fails says why (503).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console.jobs import JobLookup, JobLookupError
from console.views import Operator, render, shown, trace_link

router = APIRouter()
NOT_CONFIGURED = (
    "Job lookup is not configured: set NOTES_API_URL and NOTES_API_OPERATOR_TOKEN (one of "
    "notes-api's OPERATOR_TOKENS)."
)


@router.get("/jobs", response_class=HTMLResponse)
async def job_search(request: Request, who: Operator, id: str | None = None) -> Response:
    """The search box; with ``id``, that job's page."""
    if id and id.strip():
        return RedirectResponse(f"/jobs/{id.strip()}", status_code=303)
    return render(request, "job.html", who, job=None, query="")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, who: Operator, job_id: str) -> HTMLResponse:
    """One job: status, timeline, attempts, result or error, progress and children, trace."""
    try:
        wanted = UUID(job_id)
    except ValueError:
        return render(request, "job.html", who, 400, job=None, query=job_id,
                      problem=f"not a job id (a UUID): {job_id!r}")  # fmt: skip
    lookup: JobLookup | None = request.app.state.jobs
    if lookup is None:
        return render(request, "job.html", who, 503, job=None, query=job_id, problem=NOT_CONFIGURED)
    try:
        job = await lookup.find(wanted)
    except JobLookupError as exc:
        return render(request, "job.html", who, 503, job=None, query=job_id, problem=str(exc))
    if job is None:
        return render(request, "job.html", who, 404, job=None, query=job_id,
                      problem=f"no such job: {wanted}")  # fmt: skip
    return render(request, "job.html", who, job=job, query=job_id, **_shown(request, job))


def _shown(request: Request, job: dict[str, Any]) -> dict[str, Any]:
    progress = job.get("progress")
    settled = 0
    if progress:
        settled = progress["succeeded"] + progress["failed"] + progress["skipped"]
    return {
        "result": None if job.get("result") is None else shown(request, job["result"]),
        "error": None if job.get("error") is None else shown(request, job["error"]),
        "settled": settled,
        "trace_link": trace_link(request.app.state.settings.tempo_url, job.get("trace_id")),
    }
