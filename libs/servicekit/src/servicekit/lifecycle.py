"""Process lifecycle: run until SIGTERM or SIGINT, then shut down gracefully."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

__all__ = ["event_loop_factory", "run_until_stopped"]


def run_until_stopped(main: Callable[[asyncio.Event], Awaitable[int | None]]) -> int:
    """Run ``main(stop)`` in a new event loop; SIGTERM/SIGINT set ``stop``.

    ``main`` owns the graceful part (stop fetching, finish in-flight work, flush spans) and returns
    the exit code. A second signal cancels it, for an operator who will not wait.
    """

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal() -> None:
            if stop.is_set() and task is not None:
                task.cancel()
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            return (await main(stop)) or 0
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as loop_runner:
            return loop_runner.run(runner())
    except asyncio.CancelledError:
        return 130


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return uvloop's loop factory when installed: sockets and timers at a fraction of the CPU."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return None
    return uvloop.new_event_loop
