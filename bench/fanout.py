"""Bulk archive end to end through fanout, beside the archiver alone: ``python -m bench.fanout``.

Issue 14's figures, per run, on a fresh database and key prefix:

1. ``BENCH_FANOUT_NOTES`` (10,000) notes for each of two owners, written with one ``INSERT ...
   SELECT`` each, and their ``notes.created.v1`` events published in pipelines; the archiver and
   fanout (whose audit trail reads them too) run until they have every one.
2. **archiver alone**: ``N`` plain archive jobs (no parent) for the first owner's notes enqueued
   on ``jobs.archive.low`` at once; the time until the archiver has frozen all ``N`` (its
   snapshots) is the drain rate. Its results and lifecycle events are then deleted, so the
   worker started next does not replay them.
3. **end to end**: notes-api (serve) and its worker start; ``POST /v1/notes:bulk-archive``
   with ``{"all": true}`` for the second owner, then ``GET /v1/jobs/{parent}`` every 50 ms until
   it is ``succeeded``: ``N`` over that time is the end-to-end rate. **Children published**: ``N``
   over the time from the request to the last child's entry on ``jobs.archive.low`` (its id is
   Redis's clock). Also counted: the parent's progress events (how coalesced the counting was).

**CPU per note**: each process's CPU seconds over each phase (``bench.process_cpu``: the
archiver, fanout, notes-api and its worker, the PostgreSQL backends of the run's database, and
Redis, which other programs on the host share) divided by ``N``, in milliseconds. Unlike the
rates it barely moves when the machine is shared: their sum says what ``N``/s needs in cores.

Each run is on a shared machine; figures are per run and the worst (and median) of
``BENCH_FANOUT_RUNS`` (3) runs. ``BENCH_FANOUT=0`` skips it in ``make bench``.
``BENCH_FANOUT_PROFILE`` (e.g. ``archiver,notes-api-worker``) runs those processes under
cProfile on CPU time (``bench.profiled``), writing ``.bench/fanout-logs/<name>.prof`` (CPU
figures then include its overhead).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from bench.common import REDIS_URL, env_int
from bench.http_api import Say
from bench.http_servers import _free_port, _stop, fresh_database
from bench.process_cpu import CpuMeter, redis_pid
from bench.report import Row, Target, run_alone
from contracts import (
    JOBS_LIFECYCLE,
    NOTES_ARCHIVED,
    NOTES_CREATED,
    ArchiveRequested,
    NoteCreated,
    NoteSnapshot,
    Priority,
    job_stream,
)
from servicekit import StreamKeys
from servicekit.jobs._codec import encode_event

TARGET_NOTES_PER_SECOND = 1000.0
DRAIN_OWNER, BULK_OWNER = "bench-drain", "bench"  # `fresh_database` makes bench's key
LOW_ARCHIVE = job_stream("archive", Priority.LOW)


LOGS = Path(".bench/fanout-logs")


def _spawn(module: str, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """``python -m module``, its output in .bench/fanout-logs/ (a pipe nobody reads fills).

    Under cProfile when BENCH_FANOUT_PROFILE names it (and this is not a one-off command).
    """
    LOGS.mkdir(parents=True, exist_ok=True)
    name = module.replace("notes_api.worker", "notes-api-worker").replace("_", "-")
    profiled = os.environ.get("BENCH_FANOUT_PROFILE", "").split(",")
    argv = [sys.executable, "-m", module, *args]
    if name in profiled and args in {(), ("serve",)}:
        profile = LOGS / f"{name}.prof"
        argv = [sys.executable, "-m", "bench.profiled", str(profile), module, *args]
    with (LOGS / f"{name}.log").open("ab") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=log)


def enabled() -> bool:
    return os.environ.get("BENCH_FANOUT", "1") != "0"


@dataclass
class Run:
    archiver_alone: float
    """Notes/s: the archiver draining N plain archive jobs."""
    end_to_end: float
    """Notes/s: bulk request to parent succeeded."""
    children: float
    """Children/s: request to the last child on the archive stream."""
    progress_events: int
    """Progress events the parent's counting sent (one per count)."""
    cpu_ms_alone: dict[str, float]
    """CPU milliseconds per job of each process while the archiver drained alone."""
    cpu_ms_end_to_end: dict[str, float]
    """CPU milliseconds per note of each process from the bulk request to the parent's end."""


async def _fill(connection: asyncpg.Connection, redis: Redis, keys: StreamKeys, n: int) -> None:
    for owner in (DRAIN_OWNER, BULK_OWNER):
        await connection.execute(
            "INSERT INTO notes.notes (id, owner_id, title, body, tags, version, created_at, "
            "updated_at) SELECT gen_random_uuid(), $1, 'n', 'bench', ARRAY['t'], 1, now(), now() "
            "FROM generate_series(1, $2)",
            owner, n,
        )  # fmt: skip
    rows = await connection.fetch(
        "SELECT id, owner_id, title, body, tags, version, created_at, updated_at FROM notes.notes"
    )
    stream = keys.stream(NOTES_CREATED)
    for start in range(0, len(rows), 1000):
        pipeline = redis.pipeline(transaction=False)
        for row in rows[start : start + 1000]:
            note = NoteSnapshot(
                id=row["id"], owner_id=row["owner_id"], title=row["title"], body=row["body"],
                tags=list(row["tags"]), version=row["version"],
                created_at=row["created_at"].astimezone(UTC),
                updated_at=row["updated_at"].astimezone(UTC),
            )  # fmt: skip
            event = NoteCreated(
                producer="bench", owner_id=note.owner_id, note_id=note.id, version=1, note=note
            )
            pipeline.xadd(stream, encode_event(event))  # type: ignore[arg-type]
        await pipeline.execute()


async def _count(connection: asyncpg.Connection, sql: str, *args: Any) -> int:
    return int(await connection.fetchval(sql, *args))


async def _until(probe: Any, within: float, what: str, every: float = 0.05) -> float:
    """Poll the async ``probe`` until truthy; return the monotonic time it first was."""
    deadline = time.monotonic() + within
    while not await probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {within} s: {what}")
        await asyncio.sleep(every)
    return time.monotonic()


async def _ready(port: int, path: str = "/readyz", within: float = 60) -> None:
    async def answers() -> bool:
        try:
            async with httpx.AsyncClient(timeout=1) as client:
                return (await client.get(f"http://127.0.0.1:{port}{path}")).status_code == 200
        except httpx.HTTPError:
            return False

    await _until(answers, within, f"port {port} answers {path}", every=0.1)


async def one_run(n: int, say: Say) -> Run:
    prefix = f"bench-fanout:{uuid.uuid4().hex[:8]}:"
    keys = StreamKeys(prefix)
    redis = Redis.from_url(REDIS_URL)
    processes = []
    try:
        async with fresh_database(prefix) as database:
            env = {**database.env, "LOG_LEVEL": "WARNING"}
            for service in ("archiver", "fanout"):
                migrate = _spawn(service, env, "migrate")
                if await asyncio.to_thread(migrate.wait) != 0:
                    raise RuntimeError(f"{service} migrate failed")
            connection = await asyncpg.connect(env["DATABASE_URL"])
            try:
                await _fill(connection, redis, keys, n)
                ops = {name: _free_port() for name in ("archiver", "worker", "fanout", "api")}
                pids: dict[str, int] = {}
                for service in ("archiver", "fanout"):  # fanout audits the note events too
                    processes.append(_spawn(service, {**env, "OPS_PORT": str(ops[service])}))
                    pids[service] = processes[-1].pid
                found = await redis_pid(redis)
                if found is not None:
                    pids["redis"] = found

                async def ingested() -> bool:
                    """Every group reading the note events (fanout has two) has handled all."""
                    versions = "SELECT count(*) FROM archiver.note_versions"
                    if await _count(connection, versions) < 2 * n:
                        return False
                    notes_stream = keys.stream(NOTES_CREATED)
                    last = (await redis.xinfo_stream(notes_stream))["last-generated-id"]
                    groups = await redis.xinfo_groups(notes_stream)
                    return len(groups) >= 3 and all(
                        g["last-delivered-id"] == last and g["pending"] == 0 for g in groups
                    )

                await _until(ingested, 120 + n / 10, "every group has every note event", every=0.2)

                # The archiver alone, draining N plain archive jobs.
                notes = await connection.fetch(
                    "SELECT id FROM notes.notes WHERE owner_id = $1", DRAIN_OWNER
                )
                stream = keys.stream(LOW_ARCHIVE)
                meter = CpuMeter(pids, env["DATABASE_URL"])
                await meter.start()
                started = time.monotonic()
                for start in range(0, n, 1000):
                    pipeline = redis.pipeline(transaction=False)
                    for row in notes[start : start + 1000]:
                        request = ArchiveRequested(
                            producer="bench", owner_id=DRAIN_OWNER, job_id=uuid.uuid4(),
                            note_id=row["id"], version=1,
                        )  # fmt: skip
                        pipeline.xadd(stream, encode_event(request))  # type: ignore[arg-type]
                    await pipeline.execute()

                async def drained() -> bool:
                    sql = "SELECT count(*) FROM archiver.snapshots WHERE owner_id = $1"
                    return await _count(connection, sql, DRAIN_OWNER) >= n

                alone = n / (await _until(drained, 120 + n / 20, "archiver drain") - started)
                cpu_alone = _per_unit(await meter.stop(), n)
                # The drain's results would reach the worker started next: not part of the run.
                await redis.delete(keys.stream(NOTES_ARCHIVED), keys.stream(JOBS_LIFECYCLE))

                api_port = _free_port()
                starts = {"worker": ("notes_api.worker",), "api": ("notes_api", "serve")}
                for port, (module, *args) in starts.items():
                    extra = {"OPS_PORT": str(ops[port]), "PORT": str(api_port)}
                    processes.append(_spawn(module, {**env, **extra}, *args))
                    pids[f"notes-api-{port}" if port == "worker" else "notes-api"] = processes[
                        -1
                    ].pid
                for port in ("worker", "api"):
                    await _ready(ops[port])

                headers = {"Authorization": f"Bearer {database.key}"}
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{api_port}", headers=headers, timeout=30
                ) as client:
                    clock_ms = await _redis_ms(redis)
                    meter = CpuMeter(pids, env["DATABASE_URL"])
                    await meter.start()
                    requested = time.monotonic()
                    response = await client.post("/v1/notes:bulk-archive", json={"all": True})
                    response.raise_for_status()
                    parent = response.json()["job_id"]
                    last: dict[str, Any] = {}

                    async def finished() -> bool:
                        nonlocal last
                        last = (await client.get(f"/v1/jobs/{parent}")).json()
                        return last["status"] in {"succeeded", "failed"}

                    done = await _until(finished, 120 + n / 10, "the parent finished")
                    cpu_end_to_end = _per_unit(await meter.stop(), n)
                if last["status"] != "succeeded" or last["progress"]["succeeded"] != n:
                    raise RuntimeError(f"bulk archive ended {last['status']} {last['progress']}")
                end_to_end = n / (done - requested)
                last_child_ms = int((await redis.xrevrange(stream, count=1))[0][0].split(b"-")[0])
                children = n / max(0.001, (last_child_ms - clock_ms) / 1000)
                progress = await _progress_events(redis, keys, parent)
            finally:
                await connection.close()
            for process in reversed(processes):
                await _stop(process)
            processes.clear()
    finally:
        for process in processes:
            await _stop(process)
        keys_left = [k async for k in redis.scan_iter(match=f"*{prefix}*", count=1000)]
        if keys_left:
            await redis.unlink(*keys_left)
        await redis.aclose()
    run = Run(alone, end_to_end, children, progress, cpu_alone, cpu_end_to_end)
    say(
        f"  fanout run: {n:,} notes; archiver alone {alone:,.0f} notes/s; end to end "
        f"{end_to_end:,.0f} notes/s; children published {children:,.0f}/s; "
        f"{progress:,} progress events; load avg {os.getloadavg()[0]:.2f}"
    )
    say(f"    CPU ms per job, archiver alone: {_cpu_text(cpu_alone)}")
    say(f"    CPU ms per note, end to end:    {_cpu_text(cpu_end_to_end)}")
    return run


def _per_unit(seconds: dict[str, float], n: int) -> dict[str, float]:
    """CPU milliseconds per unit of work, by process; ``total`` their sum."""
    per = {name: round(spent * 1000 / n, 4) for name, spent in sorted(seconds.items())}
    return {**per, "total": round(sum(per.values()), 4)}


def _cpu_text(per: dict[str, float]) -> str:
    return ", ".join(f"{name} {ms:.3f}" for name, ms in per.items())


async def _redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def _progress_events(redis: Redis, keys: StreamKeys, parent: str) -> int:
    count = 0
    async for _, fields in _entries(redis, keys.stream(JOBS_LIFECYCLE)):
        body = json.loads(fields[b"__data__"])["body"]
        if body["type"] == "jobs.lifecycle.progress.v1" and body["job_id"] == parent:
            count += 1
    return count


async def _entries(redis: Redis, key: str) -> Any:
    start = "-"
    while True:
        batch = await redis.xrange(key, min=start, count=5000)
        if not batch:
            return
        for entry in batch:
            yield entry
        start = "(" + batch[-1][0].decode()


async def run(say: Say) -> tuple[list[Row], list[Target]]:
    """``BENCH_FANOUT_RUNS`` runs of ``BENCH_FANOUT_NOTES`` notes; rows of the worst run."""
    n = env_int("BENCH_FANOUT_NOTES", 10_000)
    runs = [await one_run(n, say) for _ in range(env_int("BENCH_FANOUT_RUNS", 3))]
    worst = min(runs, key=lambda r: r.end_to_end)
    detail = {"runs": [vars(r) for r in runs], "notes": n}
    rows = [
        Row.against(
            "fanout: bulk archive end to end (worst run)", worst.end_to_end, "notes/s",
            worst.archiver_alone, detail=detail,
        ),
        Row("fanout: bulk archive end to end (median)",
            statistics.median(r.end_to_end for r in runs), "notes/s"),
        Row("fanout: archiver alone drain (worst run)",
            min(r.archiver_alone for r in runs), "notes/s"),
        Row("fanout: children published (worst run)", min(r.children for r in runs), "msgs/s"),
        Row("fanout: parent progress events (most)",
            max(r.progress_events for r in runs), "events"),
    ]  # fmt: skip
    # CPU per note, the median over runs of each process (its sum, "total", x 1,000 notes/s is
    # the cores the goal needs); the archiver's per job alone beside its per note end to end.
    for name in worst.cpu_ms_end_to_end:
        per_note = statistics.median(r.cpu_ms_end_to_end.get(name, 0.0) for r in runs)
        alone = statistics.median(r.cpu_ms_alone.get(name, 0.0) for r in runs)
        label = f"fanout: CPU per note end to end, {name} (median)"
        if name in {"archiver", "postgresql", "redis", "total"}:
            rows.append(Row.against(label, per_note, "ms", alone))  # baseline: alone, per job
        else:
            rows.append(Row(label, per_note, "ms"))
    target = Target(
        f"bulk archive of {n:,} notes end to end >= {TARGET_NOTES_PER_SECOND:,.0f} notes/s",
        worst.end_to_end >= TARGET_NOTES_PER_SECOND,
        f"worst {worst.end_to_end:,.0f} notes/s (archiver alone {worst.archiver_alone:,.0f})",
    )
    return rows, [target]


if __name__ == "__main__":
    sys.exit(run_alone(run))
