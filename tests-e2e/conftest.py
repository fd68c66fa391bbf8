"""End-to-end fixtures: the real processes (notes-api, its worker, archiver, scheduler, fanout)
on a fresh database.

Each test run gets its own PostgreSQL database and Redis key prefix, so it can run beside the
other suites. Processes are started as a user would (console scripts) and stopped with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Platform:
    base_url: str
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]]
    logs: Path

    def create_key(self, owner: str) -> str:
        out = subprocess.run(
            [BIN / "notes-api", "create-key", "--owner", owner],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1]

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )


@pytest.fixture
def migrated(database_url: str, redis_url: str, stream_prefix: str) -> dict[str, str]:
    """The platform's environment, every schema migrated, no process started yet."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "STREAM_PREFIX": stream_prefix,
        "PORT": str(free_port()),
        "OPS_PORT": "0",
        "LOG_LEVEL": "INFO",
    }
    for service in ("notes-api", "archiver", "fanout"):
        subprocess.run([BIN / service, "migrate"], env=env, check=True, capture_output=True)
    return env


@contextmanager
def running_platform(env: dict[str, str], logs: Path) -> Iterator[Platform]:
    """Start every process, wait for the API, and stop them all with SIGTERM (each exits 0)."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    commands = {
        "notes-api": [BIN / "notes-api", "serve"],
        "notes-api-worker": [BIN / "notes-api-worker"],
        "archiver": [BIN / "archiver"],
        "scheduler": [BIN / "scheduler"],
        "fanout": [BIN / "fanout"],
    }
    for name, command in commands.items():
        log = (logs / f"{name}.log").open("wb")
        processes[name] = subprocess.Popen(
            command, env={**env, "CONSUMER_NAME": f"e2e-{name}"}, stdout=log, stderr=log
        )
    base_url = f"http://127.0.0.1:{env['PORT']}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base_url}/openapi.json", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "notes-api did not start"
        time.sleep(0.1)
    yield Platform(base_url, env, processes, logs)
    for process in processes.values():
        process.send_signal(signal.SIGTERM)
    codes = {name: p.wait(timeout=30) for name, p in processes.items()}
    assert codes == dict.fromkeys(processes, 0), codes


@pytest.fixture
def platform(migrated: dict[str, str], tmp_path: Path) -> Iterator[Platform]:
    """The running platform (a test may prepare data first with `migrated`, then request this)."""
    with running_platform(migrated, tmp_path) as running:
        yield running
