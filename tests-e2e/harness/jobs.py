"""Waiting on a job through the public API."""

from __future__ import annotations

from typing import Any

import httpx

from harness.polling import poll

__all__ = ["TERMINAL", "wait_finished"]

TERMINAL = frozenset({"succeeded", "failed", "dead", "skipped", "cancelled"})


def wait_finished(client: httpx.Client, job_id: str, within: float = 60.0) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until the job is terminal; return it (fail with its state)."""
    last: dict[str, Any] = {}

    def terminal() -> dict[str, Any] | None:
        nonlocal last
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        last = response.json()
        return last if last["status"] in TERMINAL else None

    return poll(  # type: ignore[no-any-return]
        terminal, within, f"job {job_id} finished", every=0.1,
        seen=lambda: f"{last.get('status')} progress={last.get('progress')}",
    )  # fmt: skip
