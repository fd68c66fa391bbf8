"""`notes-api serve` as a process (uvloop, its own signal handling) keeps the connection limits."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from notes_api.settings import NotesApiSettings

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def serve(
    settings: NotesApiSettings, tmp_path: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url,
        "STREAM_PREFIX": settings.stream_prefix,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "OPS_PORT": "0",
        "HTTP_RECEIVE_TIMEOUT_SECONDS": "1",
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([BIN / "notes-api", "serve"], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        assert time.monotonic() < deadline, "notes-api serve did not start"
        time.sleep(0.1)
    yield port, process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_served_process_closes_idle_sockets_answers_problems_and_exits_0_on_sigterm(
    serve: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, process = serve
    with socket.create_connection(("127.0.0.1", port), timeout=20) as idle:
        assert idle.recv(65536).startswith(b"HTTP/1.1 408 ")  # closed at the receive deadline
    with socket.create_connection(("127.0.0.1", port), timeout=20) as malformed:
        malformed.sendall(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
        answer = malformed.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/problem+json" in answer.lower()
    held = socket.create_connection(("127.0.0.1", port), timeout=20)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    held.close()
