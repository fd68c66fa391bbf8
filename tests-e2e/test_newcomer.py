"""A newcomer's first minutes: clone, `make run`, paste the printed lines, `make test`.

The repository (its committed HEAD) is cloned into a temporary directory and driven as a person
would, with Redis/PostgreSQL variables unset. The local addresses are pointed at a dead port, so the
embedded servers (Valkey, PostgreSQL 18 from PyPI wheels) are exercised even where local servers
run. `make test` in the clone runs a smoke subset; NOTES_PLATFORM_NEWCOMER stops it from running
this test again inside itself. Slow (a fresh virtualenv), so it runs in `make chaos`.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.workspace import services

ROOT = Path(__file__).resolve().parents[1]
GUARD = "NOTES_PLATFORM_NEWCOMER"

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.timeout(900),
    pytest.mark.skipif(bool(os.environ.get(GUARD)), reason="inside the newcomer's own make test"),
]


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _newcomer_environment(home: Path) -> dict[str, str]:
    """What a fresh shell has: no server variables; a dead local address forces embedded servers."""
    keep = ("PATH", "HOME", "LANG", "TERM", "USER", "UV_CACHE_DIR", "TMPDIR")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    dead = _dead_port()
    env.update(
        {
            GUARD: "1",
            "DEVSTACK_LOCAL_REDIS_URL": f"redis://127.0.0.1:{dead}/0",
            "DEVSTACK_LOCAL_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{dead}/postgres",
            # Beside a developer's own `make run` on the default ports.
            # Every port stays below the ephemeral range (32768+) that free ports come from.
            "DEVSTACK_PORT_OFFSET": str(10000 + dead % 10000),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.setdefault("HOME", str(home))
    return env


class _Output:
    """Reads a process's output on a thread, so the pipe never fills and waits have deadlines."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._arrived: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._arrived.put(line)
        self._arrived.put(None)

    def wait_for(self, start: str, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                line = self._arrived.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            if line.startswith(start):
                return
        tail = "\n".join(self.lines[-60:])
        msg = f"waited {within:.0f} s for a line starting {start!r}; make run printed:\n{tail}"
        raise AssertionError(msg)

    def join(self) -> str:
        self._thread.join(timeout=60)
        return "\n".join(self.lines)


@pytest.fixture
def home() -> Iterator[Path]:
    """Where a person clones: not under pytest's base temporary directory, which the clone's own
    `make test` (pytest again) sets back to mode 0700 as it starts, so that the embedded
    PostgreSQL's unprivileged user could no longer reach its own files in the clone (its
    extensions: "extension pg_trgm is not available")."""
    path = Path(tempfile.mkdtemp(prefix="newcomer-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_clone_make_run_paste_the_printed_lines_and_make_test(home: Path) -> None:
    clone = home / "notes-platform"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = _newcomer_environment(home)

    run = subprocess.Popen(
        ["make", "run"],
        cwd=clone, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so "Ctrl-C" reaches make and devstack
    )  # fmt: skip
    output = _Output(run)
    try:
        output.wait_for("More in docs/api.md", within=600)
        lines = list(output.lines)
        block = lines[next(i for i, line in enumerate(lines) if "is up" in line) :]
        assert any("Valkey 8.1" in line for line in block), block
        assert any("PostgreSQL 18" in line for line in block), block
        key_line = next(line.strip() for line in block if "make -s key" in line)
        curl_line = next(line.strip() for line in block if line.strip().startswith("curl "))

        pasted = subprocess.run(
            ["bash", "-c", f"{key_line} && {curl_line}"],
            cwd=clone, env=env, text=True, capture_output=True, timeout=300, check=False,
        )  # fmt: skip
        seen = f"{key_line}\n{curl_line}\n{pasted.stdout}\n{pasted.stderr}\n" + "\n".join(
            output.lines[-60:]
        )
        assert pasted.returncode == 0, seen
        note = json.loads(pasted.stdout)
        assert (note.get("title"), note.get("version")) == ("hello", 1), seen
    finally:
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C at the terminal does
        run.wait(timeout=120)
    stopped = output.join()
    # Every process the services' [tool.devstack] tables name (fanout made it four).
    expected = sum(len(service.processes) for service in services(ROOT))
    assert f"stopping {expected} processes" in stopped, stopped[-3000:]
    assert not re.search(r"did not stop|killing it", stopped), stopped[-3000:]
    state = clone / ".local"
    assert not (state / "valkey" / "server.json").exists(), "make run left Valkey running"
    assert not (state / "postgres" / "server.json").exists(), "make run left PostgreSQL running"

    smoke = "tests-e2e/test_archive_and_copy.py libs/servicekit/tests/test_testing_fixtures.py"
    tested = subprocess.run(
        ["make", "test", f"PYTEST_ARGS={smoke}"],
        cwd=clone, env=env, text=True, capture_output=True, timeout=600, check=False,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-2000:]
    assert re.search(r"servers: Redis .*embedded \(throw-away\), Valkey 8\.1", tested.stdout)
    assert re.search(r"\d+ passed", tested.stdout)
