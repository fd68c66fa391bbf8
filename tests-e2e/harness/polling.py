"""Polling with a deadline: how the e2e tests wait (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["poll"]


def poll(
    probe: Callable[[], Any],
    within: float,
    what: str,
    *,
    every: float = 0.05,
    seen: Callable[[], object] | None = None,
) -> Any:
    """Call ``probe`` until it returns something truthy and return that; fail at the deadline.

    The failure says what was awaited (``what``) and, if ``seen`` is given, what it shows then.
    """
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"; seen: {seen()}" if seen is not None else ""
            raise AssertionError(f"not within {within} s: {what}{detail}")
        time.sleep(every)
