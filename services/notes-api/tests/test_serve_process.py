"""`notes-api serve` as a process (uvloop, its own signal handling) keeps the connection limits;
with `SERVE_PROCESSES`, its servers share the port and stop with their supervisor."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from notes_api.settings import NotesApiSettings

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(
    settings: NotesApiSettings, tmp_path: Path, **extra: str
) -> tuple[int, subprocess.Popen[bytes]]:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url,
        "STREAM_PREFIX": settings.stream_prefix,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "OPS_PORT": "0",
        **extra,
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
    return port, process


@pytest.fixture
def serve(
    settings: NotesApiSettings, tmp_path: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port, process = _start(settings, tmp_path, HTTP_RECEIVE_TIMEOUT_SECONDS="1")
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


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_until(condition: Callable[[], bool], what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for: {what}"
        time.sleep(0.1)


def _ops_base() -> int:
    """A free port whose next one is free too (server i takes `OPS_PORT + i`)."""
    for _ in range(50):
        base = _free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
        return base
    raise AssertionError("no two consecutive free ports")


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_processes_share_one_port_each_with_its_ops_port_and_stop_together(
    settings: NotesApiSettings, tmp_path: Path
) -> None:
    base = _ops_base()
    port, supervisor = _start(settings, tmp_path, SERVE_PROCESSES="2", OPS_PORT=str(base))
    try:
        _wait_until(lambda: len(_children(supervisor.pid)) == 2, "two serving processes")
        servers = _children(supervisor.pid)
        _wait_until(lambda: _healthy(base) and _healthy(base + 1), "both ops ports healthy")
        for _ in range(20):  # new connections, accepted by either server
            assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").status_code == 200
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
        _wait_until(lambda: not any(_alive(pid) for pid in servers), "servers exited")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()


def test_a_serving_process_that_dies_stops_the_rest_and_the_supervisor_exits_1(
    settings: NotesApiSettings, tmp_path: Path
) -> None:
    _, supervisor = _start(settings, tmp_path, SERVE_PROCESSES="2")
    try:
        _wait_until(lambda: len(_children(supervisor.pid)) == 2, "two serving processes")
        first, second = _children(supervisor.pid)
        os.kill(first, signal.SIGKILL)
        assert supervisor.wait(timeout=60) == 1
        _wait_until(lambda: not _alive(second), "the other server exited")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
