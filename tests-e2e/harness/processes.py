"""Subprocess helpers shared by the private servers and the platform."""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["die_with_parent", "tail"]

_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal() -> None:
    # Runs in the child between fork and exec: if pytest itself dies (a crashed xdist worker),
    # the kernel kills the child instead of leaving it holding ports and files.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child die with the test process (Linux; else None)."""
    return _set_parent_death_signal if sys.platform.startswith("linux") else None


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
