"""A stream's page: the groups reading it, its length and its last entries decoded.

Entries come from `servicekit.operations.recent_entries` (XREVRANGE, decoded from the wire
format); payloads and headers are masked as log lines are (`views.shown`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from console.views import (
    Operator,
    declared_pairs,
    redis_and_keys,
    render,
    require_declared,
    shown,
    trace_link,
)
from servicekit.operations import StreamEntry, group_status, recent_entries

router = APIRouter()
ENTRIES_MAX = 200
_ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")


@dataclass(frozen=True)
class ShownEntry:
    """A stream entry as the page shows it: its figures, its payload pretty-printed and masked."""

    entry: StreamEntry
    added_at: str
    headers: str
    body: str
    trace_link: str | None


@router.get("/streams/{stream}", response_class=HTMLResponse)
async def stream_page(request: Request, who: Operator, stream: str, count: int = 20,
                      before: str | None = None) -> HTMLResponse:  # fmt: skip
    """One stream: the groups reading it, its length and its last entries decoded."""
    require_declared(stream)
    if not 1 <= count <= ENTRIES_MAX:
        raise HTTPException(400, f"count: 1 to {ENTRIES_MAX}")
    if before is not None and not _ENTRY_ID.fullmatch(before):
        raise HTTPException(400, f"before: an entry id (like 1733580000000-0), not {before!r}")
    redis, keys = redis_and_keys(request)
    groups = [await group_status(redis, keys, s, g) for s, g in declared_pairs() if s == stream]
    tempo = request.app.state.settings.tempo_url
    entries = [
        ShownEntry(e, datetime.fromtimestamp(e.added_at, UTC).isoformat(timespec="milliseconds"),
                   shown(request, e.headers), shown(request, e.body), trace_link(tempo, e.trace_id))
        for e in await recent_entries(redis, keys, stream, count=count, before=before)
    ]  # fmt: skip
    length = groups[0].length if groups else 0
    return render(request, "stream.html", who, stream=stream, groups=groups, length=length,
                  entries=entries, count=count, before=before)  # fmt: skip
