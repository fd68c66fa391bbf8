"""SIGTERM stops a process gracefully: the main coroutine finishes its work and exits 0."""

import os
import signal
import subprocess
import sys
import textwrap
import time

PROGRAM = textwrap.dedent(
    """
    import asyncio, sys
    from servicekit import run_until_stopped

    async def main(stop):
        print("ready", flush=True)
        await stop.wait()
        await asyncio.sleep(0.1)  # in-flight work finishing
        print("drained", flush=True)
        return 0

    sys.exit(run_until_stopped(main))
    """
)


def test_sigterm_lets_main_finish_and_exit_zero() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", PROGRAM], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert process.stdout.read().strip() == "drained"
    assert time.monotonic() - started < 5
