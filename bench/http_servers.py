"""The servers the HTTP benchmark measures, each on a fresh database: notes-api (with its worker)
and the bare FastAPI + asyncpg baseline, started as subprocesses and stopped afterwards.

:func:`fresh_database` creates a database, migrates it and makes an API key; :func:`notes_api`
and :func:`bare` yield a :class:`Server`: its port, its ops port (notes-api only), the pids whose
CPU the series reports, and the request it is loaded with.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from bench.common import REDIS_URL, env_int
from bench.http_client import LoadClient, Reply
from bench.http_load import Request

ADMIN_URL = os.environ.get(
    "BENCH_DATABASE_URL",
    os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _env(database_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        STREAM_PREFIX=prefix,
        LOG_LEVEL="INFO",
        LOG_FORMAT="json",
        # One key sends the whole load: limits far above it, so the limiter's cost is measured
        # (a Redis round trip per request) but no request is refused.
        **{
            f"RATE_LIMIT_{kind}_{knob}": "1000000"
            for kind in ("READS", "WRITES", "BULK")
            for knob in ("PER_SECOND", "BURST")
        },
        **extra,
    )
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)  # spans are made, not exported
    return env


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "notes_api", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"notes-api {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)
    if process.stderr is not None:
        process.stderr.close()


async def _wait_for(server: subprocess.Popen[bytes], port: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as probe:
        while True:
            if server.poll() is not None:
                err = server.stderr.read().decode(errors="replace") if server.stderr else ""
                raise RuntimeError(f"server exited with {server.returncode}: {err[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await probe.get("/openapi.json")).status_code < 500:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not answering after {within}s")
            await asyncio.sleep(0.1)


@dataclass
class Database:
    """A fresh database for one run, its environment and an API key."""

    name: str
    env: dict[str, str]
    key: str


@contextlib.asynccontextmanager
async def fresh_database(prefix: str) -> AsyncIterator[Database]:
    name = f"notes_bench_{uuid.uuid4().hex[:12]}"
    env = _env(_with_database(ADMIN_URL, name), prefix)
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        await asyncio.to_thread(_cli, env, "migrate")
        key = (await asyncio.to_thread(_cli, env, "create-key", "--owner", "bench")).splitlines()
        yield Database(name, env, key[-1].strip())
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Server:
    """A running server under test: its port, its ops port (notes-api only), and its processes."""

    port: int
    ops_ports: tuple[int, ...]
    pids: dict[str, tuple[int, ...]]
    """The processes of each part (the API's servers, not their supervisor)."""
    headers: dict[str, str]
    request: Request


class NotesTraffic:
    """Alternately create a note and read one created earlier."""

    def __init__(self) -> None:
        self.created: list[str] = []

    async def __call__(self, client: LoadClient, i: int) -> Reply:
        if i % 2 == 0 or not self.created:
            body = {"title": f"note {i}", "body": "bench " * 20, "tags": ["bench", f"t{i % 10}"]}
            response = await client.post("/v1/notes", json=body)
            if response.status_code == 201:
                self.created.append(response.json()["id"])
            return response
        return await client.get(f"/v1/notes/{self.created[(i * 7919) % len(self.created)]}")


async def _bare_insert(client: LoadClient, i: int) -> Reply:
    body = {"title": f"note {i}", "body": "bench " * 20, "tags": ["bench", f"t{i % 10}"]}
    return await client.post("/items", json=body)


@contextlib.asynccontextmanager
async def notes_api(database: Database) -> AsyncIterator[Server]:
    """notes-api on ``BENCH_HTTP_PROCESSES`` serving processes (`SERVE_PROCESSES`), its worker."""
    processes = env_int("BENCH_HTTP_PROCESSES", 2)
    port, worker_ops = _free_port(), _free_port()
    ops = _free_ports(processes)
    env = database.env
    server = _spawn(
        [sys.executable, "-m", "notes_api", "serve"],
        {**env, "HOST": "127.0.0.1", "PORT": str(port), "OPS_PORT": str(ops[0]),
         "SERVE_PROCESSES": str(processes)},
    )  # fmt: skip
    worker = _spawn(
        [sys.executable, "-m", "notes_api.worker"],
        {**env, "OPS_PORT": str(worker_ops), "CONSUMER_NAME": "bench-worker"},
    )
    try:
        await _wait_for(server, port)
        await _wait_ready(ops)
        headers = {"Authorization": f"Bearer {database.key}"}
        api = _children(server.pid) if processes > 1 else (server.pid,)
        pids = {"api": api, "worker": (worker.pid,)}
        yield Server(port, ops, pids, headers, NotesTraffic())
    finally:
        await _stop(server)
        await _stop(worker)


async def _wait_ready(ops_ports: tuple[int, ...], within: float = 60) -> None:
    """Every serving process answers `/readyz` on its ops port."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=1.0) as probe:
        for ops in ops_ports:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await probe.get(f"http://127.0.0.1:{ops}/readyz")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"notes-api's ops port {ops} did not get ready")
                await asyncio.sleep(0.1)


def _free_ports(count: int) -> tuple[int, ...]:
    """``count`` consecutive free ports (servers i of a supervisor take `OPS_PORT + i`)."""
    while True:
        first = _free_port()
        ports = tuple(range(first, first + count))
        if all(_bindable(p) for p in ports[1:]):
            return ports


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _children(pid: int) -> tuple[int, ...]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return tuple(int(child) for child in children.read().split())


@contextlib.asynccontextmanager
async def _uvicorn(app: str, database: Database) -> AsyncIterator[Server]:
    """``app`` on one uvicorn process, sent the bare baseline's inserts."""
    port = _free_port()
    argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    server = _spawn(argv, database.env)
    try:
        await _wait_for(server, port)
        yield Server(port, (), {"api": (server.pid,)}, {}, _bare_insert)
    finally:
        await _stop(server)


def bare(database: Database) -> contextlib.AbstractAsyncContextManager[Server]:
    """FastAPI + asyncpg, one INSERT a request (`bench.http_baseline`)."""
    return _uvicorn("bench.http_baseline:app", database)


def stack_floor(database: Database) -> contextlib.AbstractAsyncContextManager[Server]:
    """FastAPI + pydantic + SQLAlchemy Core, one INSERT a request (`bench.http_stack_floor`)."""
    return _uvicorn("bench.http_stack_floor:app", database)
