"""A redrive's pages: its progress while it runs (polled by `static/console.js`), what it moved.

The runs themselves are `console.redrives`; the button that starts one is the dead letters'.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from console.redrives import RedriveRun
from console.views import Operator, render
from servicekit.operations import AUDIT_STREAM

router = APIRouter()


def _run(request: Request, run_id: str) -> RedriveRun:
    run: RedriveRun | None = request.app.state.redrives.get(run_id)
    if run is None:
        raise HTTPException(404, f"no redrive {run_id} in this console (restarted since?)")
    return run


@router.get("/redrives", response_class=HTMLResponse)
async def redrive_runs(request: Request, who: Operator) -> HTMLResponse:
    """The redrives this console process started, newest first."""
    runs = request.app.state.redrives.recent()
    return render(request, "redrives.html", who, runs=runs)


@router.get("/redrives/{run_id}", response_class=HTMLResponse)
async def redrive_run(request: Request, who: Operator, run_id: str) -> HTMLResponse:
    """One redrive: its progress while it runs (the page polls), what it moved when done."""
    return render(request, "redrive_run.html", who, run=_run(request, run_id),
                  audit_stream=AUDIT_STREAM)  # fmt: skip


@router.get("/redrives/{run_id}/progress")
async def redrive_progress(request: Request, who: Operator, run_id: str) -> dict[str, Any]:
    """The run's figures as JSON (moved, done, total, gone, finished), for its page's poll."""
    return _run(request, run_id).progress()
