"""``make run``'s start: from the command to every process ready, on a synced checkout.

The figure is the worst of BENCH_STARTUP_RUNS (3) runs of ``make run`` (make's sync check,
bytecode check, migrations, three processes answering ``/readyz``). The baseline, measured in the
same run, is one process alone (``notes-api serve`` from spawn to ``/readyz``): what Python
and the imports cost before any orchestration. Target (issue 9): ready in under 5 s.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bench.report import Row, Target

ROOT = Path(__file__).resolve().parents[1]
_READY_LINE = "notes-platform is up"


def enabled() -> bool:
    return os.environ.get("BENCH_STARTUP", "1") != "0"


def _runs() -> int:
    return int(os.environ.get("BENCH_STARTUP_RUNS", "3"))


def _port_offset() -> int:
    return 30000 + os.getpid() % 1000


def time_make_run(timeout: float = 120.0) -> float:
    """Seconds from ``make run`` to its ready line; stops it (Ctrl-C) before returning."""
    env = {**os.environ, "DEVSTACK_PORT_OFFSET": str(_port_offset())}
    started = time.monotonic()
    run = subprocess.Popen(
        ["make", "run"],
        cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert run.stdout is not None
        for line in run.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=max(0.1, started + timeout - time.monotonic()))
            if line is None:
                msg = f"make run exited ({run.wait()}) before it was ready"
                raise RuntimeError(msg)
            if line.startswith(_READY_LINE):
                return time.monotonic() - started
    finally:
        os.killpg(run.pid, signal.SIGINT)
        run.wait(timeout=60)


def time_one_process(timeout: float = 60.0) -> float:
    """Seconds from spawning ``notes-api serve`` alone to its ``/readyz`` answering 200."""
    ops_port = _port_offset() + 9200
    env = {**os.environ, "PORT": str(ops_port + 1), "OPS_PORT": str(ops_port)}
    started = time.monotonic()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "notes-api"), "serve"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while time.monotonic() < started + timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/readyz", timeout=1):
                    return time.monotonic() - started
            except OSError:
                time.sleep(0.01)
        msg = "notes-api serve was not ready in time"
        raise RuntimeError(msg)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def run(say: Callable[[str], None]) -> tuple[list[Row], list[Target]]:
    """Time both, print each run, return the worst of each as rows and the issue's target."""
    make_run = [time_make_run() for _ in range(_runs())]
    alone = [time_one_process() for _ in range(_runs())]
    say(f"  make run ready in {', '.join(f'{t:.2f}' for t in make_run)} s")
    say(f"  notes-api serve alone ready in {', '.join(f'{t:.2f}' for t in alone)} s")
    worst, baseline = max(make_run), max(alone)
    rows = [Row.against("make_run_ready_s", worst, "s", baseline)]
    target = Target("make run ready < 5 s (worst run)", worst < 5.0, f"{worst:.2f} s")
    return rows, [target]
