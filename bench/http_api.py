"""HTTP benchmark of notes-api: paced mixed POST/GET on loopback, beside a bare FastAPI insert.

Issue 4's target: p99 <= 100 ms at 200 requests/s sustained for 30 s on this machine, with the
load generator on it. Steps:

1. a fresh database (created here, dropped at the end), ``notes-api migrate``, and an API key
   from ``notes-api create-key``;
2. ``notes-api serve`` and ``notes-api-worker`` (its outbox relay publishes what the POSTs write,
   under a unique ``STREAM_PREFIX`` whose keys are deleted afterwards) as subprocesses;
3. an open-loop load: requests are *scheduled* at a fixed rate, alternately ``POST /v1/notes``
   (a note, its outbox event, auth) and ``GET /v1/notes/{id}`` of a note created earlier;
   latency counts from the scheduled time, so a slow server cannot slow the generator down and
   hide its own queueing (no coordinated omission);
4. the same schedule against ``bench.http_baseline`` (FastAPI + asyncpg, one INSERT a request).

The generator is ``bench.http_client`` (keep-alive connections on raw asyncio streams), not httpx:
it shares the two cores with the server, and httpx's CPU per request starved the server.

Knobs: ``BENCH_HTTP=0`` skips it, ``BENCH_HTTP_SECONDS`` (30), ``BENCH_HTTP_RATE`` (200),
``BENCH_HTTP_WARMUP_SECONDS`` (3), ``BENCH_DATABASE_URL`` / ``DATABASE_URL`` (an admin URL).
``python -m bench.http_api`` runs it alone and merges its rows into ``.bench/results.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from redis.asyncio import Redis

from bench.common import REDIS_URL, delete_prefix, env_int, percentile
from bench.http_client import HttpError, LoadClient, Reply
from bench.report import RESULTS, Row, Target, table, targets_text, write

ADMIN_URL = os.environ.get(
    "BENCH_DATABASE_URL",
    os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
)
TARGET_P99_MS = 100.0
CONNECTIONS = 64  # keep-alive connections of the generator; more in flight wait for one
DRAIN_SECONDS = 10.0
Say = Callable[[str], None]


def enabled() -> bool:
    return os.environ.get("BENCH_HTTP", "1") != "0"


@dataclass
class Load:
    """One paced run: per request its latency from the scheduled time, and what failed."""

    rate: float
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    completed: int = 0
    elapsed: float = 0.0
    max_lag_ms: float = 0.0

    @property
    def achieved(self) -> float:
        """Successful responses per second over the run (schedule start to last response)."""
        return len(self.latencies_ms) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


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


async def _wait_up(
    process: subprocess.Popen[bytes], client: httpx.AsyncClient, path: str, within: float = 30
) -> None:
    deadline = time.monotonic() + within
    while True:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"server exited with {process.returncode}: {err[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(path)).status_code < 500:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"server not answering {path} after {within}s")
        await asyncio.sleep(0.1)


Request = Callable[[LoadClient, int], Awaitable[Reply]]


async def paced(
    client: LoadClient, request: Request, rate: float, seconds: float, *, record: bool
) -> Load:
    """Send ``request(client, i)`` at ``rate``/s for ``seconds`` (open loop); gather latencies."""
    load = Load(rate, seconds)
    total = int(rate * seconds)
    start = time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    last_end = start

    async def one(i: int, scheduled: float) -> None:
        nonlocal last_end
        try:
            response = await request(client, i)
            ok = 200 <= response.status_code < 300
            kind = str(response.status_code)
        except HttpError as exc:
            ok, kind = False, type(exc).__name__
        end = time.perf_counter()
        last_end = max(last_end, end)
        load.completed += 1
        if ok:
            load.latencies_ms.append((end - scheduled) * 1000)
        else:
            load.errors[kind] = load.errors.get(kind, 0) + 1

    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            load.max_lag_ms = max(load.max_lag_ms, -delay * 1000)
        task = asyncio.create_task(one(i, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:  # an overloaded server would take minutes to drain: what is left then is an error
        _, unfinished = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        if unfinished:
            load.errors[f"unfinished after +{DRAIN_SECONDS:g}s"] = len(unfinished)
    load.elapsed = max(last_end, start + total / rate) - start
    if not record:
        load.latencies_ms.clear()
    return load


def _client(port: int, headers: dict[str, str] | None = None) -> LoadClient:
    return LoadClient("127.0.0.1", port, connections=CONNECTIONS, headers=headers)


async def _wait_for(server: subprocess.Popen[bytes], port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as probe:
        await _wait_up(server, probe, "/openapi.json")


async def _notes_api(env: dict[str, str], key: str, rate: float, seconds: float, say: Say) -> Load:
    port, ops, worker_ops = _free_port(), _free_port(), _free_port()
    server = _spawn(
        [sys.executable, "-m", "notes_api", "serve"],
        {**env, "HOST": "127.0.0.1", "PORT": str(port), "OPS_PORT": str(ops)},
    )
    worker = _spawn(
        [sys.executable, "-m", "notes_api.worker"],
        {**env, "OPS_PORT": str(worker_ops), "CONSUMER_NAME": "bench-worker"},
    )
    created: list[str] = []

    async def request(client: LoadClient, i: int) -> Reply:
        if i % 2 == 0 or not created:
            body = {"title": f"note {i}", "body": "bench " * 20, "tags": ["bench", f"t{i % 10}"]}
            response = await client.post("/v1/notes", json=body)
            if response.status_code == 201:
                created.append(response.json()["id"])
            return response
        return await client.get(f"/v1/notes/{created[(i * 7919) % len(created)]}")

    try:
        await _wait_for(server, port)
        async with _client(port, {"Authorization": f"Bearer {key}"}) as client:
            warmup = float(os.environ.get("BENCH_HTTP_WARMUP_SECONDS", "3"))
            await paced(client, request, rate, warmup, record=False)
            load = await paced(client, request, rate, seconds, record=True)
        say(f"  notes-api: {len(created)} notes created; worker relayed the outbox meanwhile")
        return load
    finally:
        await _stop(server)
        await _stop(worker)


async def _bare(env: dict[str, str], rate: float, seconds: float) -> Load:
    port = _free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.http_baseline:app", "--host", "127.0.0.1"]
    server = _spawn([*argv, "--port", str(port), "--no-access-log", "--log-level", "warning"], env)

    async def request(client: LoadClient, i: int) -> Reply:
        body = {"title": f"note {i}", "body": "bench " * 20, "tags": ["bench", f"t{i % 10}"]}
        return await client.post("/items", json=body)

    try:
        await _wait_for(server, port)
        async with _client(port) as client:
            warmup = float(os.environ.get("BENCH_HTTP_WARMUP_SECONDS", "3"))
            await paced(client, request, rate, warmup, record=False)
            return await paced(client, request, rate, seconds, record=True)
    finally:
        await _stop(server)


def _describe(label: str, load: Load) -> str:
    pcts = "/".join(f"{load.pct(q):.1f}" for q in (50, 90, 99, 99.9))
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(load.errors.items())) or "none"
    return (
        f"    {label}: {load.achieved:.1f} req/s ok of {load.rate:g} scheduled, "
        f"p50/p90/p99/p99.9 {pcts} ms, max {max(load.latencies_ms, default=0):.1f} ms, "
        f"errors {errors}, generator lag max {load.max_lag_ms:.1f} ms"
    )


async def run(say: Say) -> tuple[list[Row], list[Target]]:
    """Run both loads on a fresh database; return the rows and the issue's target."""
    rate = float(env_int("BENCH_HTTP_RATE", 200))
    seconds = float(os.environ.get("BENCH_HTTP_SECONDS", "30"))
    name = f"notes_bench_{uuid.uuid4().hex[:12]}"
    prefix = f"bench-http-{uuid.uuid4().hex[:10]}:"
    database_url = _with_database(ADMIN_URL, name)
    env = _env(database_url, prefix)
    say(
        f"http: paced {rate:g} req/s for {seconds:g}s (mixed POST/GET with auth and outbox), "
        f"database {name}, key prefix {prefix!r}"
    )
    await _admin(f'CREATE DATABASE "{name}"')
    redis = Redis.from_url(REDIS_URL)
    try:
        await asyncio.to_thread(_cli, env, "migrate")
        key = (await asyncio.to_thread(_cli, env, "create-key", "--owner", "bench")).splitlines()
        notes = await _notes_api(env, key[-1].strip(), rate, seconds, say)
        bare = await _bare(env, rate, seconds)
    finally:
        await delete_prefix(redis, prefix)
        await redis.aclose()
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    say(_describe("notes-api (POST+GET)", notes))
    say(_describe("bare FastAPI+asyncpg INSERT", bare))
    p50, p99 = notes.pct(50), notes.pct(99)
    rows = [
        Row.against("notes_api_throughput", notes.achieved, "req/s", bare.achieved),
        Row.against("notes_api_latency_p50", p50, "ms", bare.pct(50)),
        Row.against("notes_api_latency_p99", p99, "ms", bare.pct(99)),
        Row("bare_fastapi_latency_p99", bare.pct(99), "ms"),
    ]
    sustained = notes.achieved >= 0.98 * rate and not notes.errors
    target = Target(
        f"notes-api p99 <= {TARGET_P99_MS:g} ms at {rate:g} req/s for {seconds:g}s",
        sustained and p99 <= TARGET_P99_MS,
        f"p99 {p99:.1f} ms at {notes.achieved:.1f} req/s, "
        f"{sum(notes.errors.values())} errors; {p99 / bare.pct(99):.2f}x the bare p99",
    )
    say("  target (issue 4; reported, never failing):")
    say(targets_text([target]))
    return rows, [target]


def _merge(rows: list[Row], path: Path = RESULTS) -> Path:
    """Replace these rows in an existing results file (the other scenarios' rows stay)."""
    existing: list[dict[str, Any]] = []
    if path.exists():
        existing = json.loads(path.read_text())
    names = {r.name for r in rows}
    kept = [Row(**item) for item in existing if item.get("name") not in names]
    return write([*kept, *rows], path)


async def _main() -> int:
    def say(text: str) -> None:
        print(text, flush=True)

    rows, _ = await run(say)
    say("")
    say(table(rows))
    say(f"\nwrote {_merge(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
