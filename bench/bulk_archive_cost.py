"""What one bulk archive request costs: ``python -m bench.bulk_archive_cost``.

For BENCH_BULK_NOTES (10,000 and 50,000) tagged notes of one owner, in a throw-away database from
DATABASE_URL: the time of `POST /v1/notes:bulk-archive` in-process (median of BENCH_BULK_REPEATS
runs, 3, each on fresh notes), the rows and bytes it writes (outbox payloads as JSON and as
stored, compressed; `bulk_chunks`), the
WAL it generates (the server's whole WAL: other work on the same server counts too), the worst
wait of an unrelated GET sent in a loop meanwhile, and the time of the same request sent again
while the first is in flight (every note is then left out, each after one index probe).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from notes_api.app import create_app
from notes_api.auth import create_key
from notes_api.search_indexes import migrate_notes
from notes_api.settings import NotesApiSettings
from servicekit import setup_telemetry
from servicekit.testing import fresh_database

SIZES = [int(n) for n in os.environ.get("BENCH_BULK_NOTES", "10000,50000").split(",")]
REPEATS = int(os.environ.get("BENCH_BULK_REPEATS", "3"))


async def _fill(engine: AsyncEngine, owner: str, n: int) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO notes.notes (id, owner_id, title, body, tags, version, created_at, "
                "updated_at) SELECT gen_random_uuid(), :owner, 'n', '', ARRAY['t'], 1, now(), "
                "now() FROM generate_series(1, :n)"
            ),
            {"owner": owner, "n": n},
        )


async def _scalar(engine: AsyncEngine, sql: str) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(text(sql))).scalar_one()


async def _written(engine: AsyncEngine) -> dict[str, int]:
    sql = (
        "SELECT (SELECT count(*) FROM notes.outbox), "
        "(SELECT coalesce(sum(octet_length(o.payload::text)), 0) FROM notes.outbox o), "
        "(SELECT count(*) FROM notes.bulk_chunks), "
        "(SELECT coalesce(sum(pg_column_size(c.*)), 0) FROM notes.bulk_chunks c), "
        "(SELECT coalesce(sum(pg_column_size(o.*)), 0) FROM notes.outbox o)"
    )
    async with engine.connect() as connection:
        row = (await connection.execute(text(sql))).one()
    names = ("outbox_rows", "outbox_bytes", "chunk_rows", "chunk_bytes", "outbox_stored_bytes")
    return dict(zip(names, row, strict=True))


async def _longest_stall(until: asyncio.Task[Any]) -> float:
    """The longest the event loop went without running this task, while ``until`` runs."""
    longest = 0.0
    while not until.done():
        before = time.perf_counter()
        await asyncio.sleep(0)
        longest = max(longest, time.perf_counter() - before)
    return longest


async def _one_run(
    client: httpx.AsyncClient, engine: AsyncEngine, n: int, run: int
) -> dict[str, float]:
    owner = f"bench-{n}-{run}"
    _, key = await create_key(engine, owner)
    headers = {"Authorization": f"Bearer {key}"}
    await _fill(engine, owner, n)
    async with engine.begin() as connection:
        await connection.execute(text("ANALYZE notes.notes"))
    note = (await client.post("/v1/notes", json={"title": "x"}, headers=headers)).json()
    before = await _written(engine)
    wal_before = await _scalar(engine, "SELECT pg_current_wal_lsn()::text")
    started = time.perf_counter()
    bulk = asyncio.create_task(
        client.post("/v1/notes:bulk-archive", json={"tag": "t"}, headers=headers)
    )
    stall = asyncio.create_task(_longest_stall(bulk))
    worst_get = 0.0
    while not bulk.done():
        sent = time.perf_counter()
        await client.get(f"/v1/notes/{note['id']}", headers=headers)
        worst_get = max(worst_get, time.perf_counter() - sent)
    response = await bulk
    took = time.perf_counter() - started
    longest_stall = await stall
    assert response.status_code == 202, response.text
    wal = await _scalar(engine, f"SELECT pg_current_wal_lsn() - '{wal_before}'::pg_lsn")
    after = await _written(engine)
    again = time.perf_counter()
    repeat = await client.post("/v1/notes:bulk-archive", json={"tag": "t"}, headers=headers)
    again_took = time.perf_counter() - again
    assert repeat.status_code == 202, repeat.text
    repeat_id = repeat.json()["job_id"]
    job = (await client.get(f"/v1/jobs/{repeat_id}", headers=headers)).json()
    assert job["progress"]["total"] == 0, job
    written = {k: after[k] - before[k] for k in after}
    return {"seconds": took, "worst_get_seconds": worst_get, "wal_bytes": float(wal),
            "stall_seconds": longest_stall,
            "again_seconds": again_took, **{k: float(v) for k, v in written.items()}}  # fmt: skip


async def main() -> None:
    admin = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    async with fresh_database(admin, prefix="bench_bulk") as url:
        settings = NotesApiSettings(database_url=url, ops_port=0, log_level="WARNING")
        await migrate_notes(settings)  # what `notes-api migrate` does
        app = create_app(settings, setup_telemetry(settings))
        async with app.router.lifespan_context(app):
            engine: AsyncEngine = app.state.engine
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                for n in SIZES:
                    runs = [await _one_run(client, engine, n, run) for run in range(REPEATS)]
                    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                    per_10k = 10_000 / n
                    print(
                        f"bulk archive of {n:,} notes (median of {REPEATS}): "
                        f"{median['seconds'] * 1000:.0f} ms "
                        f"({median['seconds'] * 1000 * per_10k:.0f} ms per 10k); "
                        f"outbox {median['outbox_rows']:.0f} rows, "
                        f"{median['outbox_bytes'] / 1e6:.2f} MB of JSON "
                        f"({median['outbox_stored_bytes'] / 1e6:.2f} MB stored); "
                        f"bulk_chunks {median['chunk_rows']:.0f} rows, "
                        f"{median['chunk_bytes'] / 1e6:.2f} MB; "
                        f"WAL {median['wal_bytes'] / 1e6:.1f} MB; "
                        f"worst unrelated GET meanwhile {median['worst_get_seconds'] * 1000:.0f} ms"
                        f" (longest loop stall {median['stall_seconds'] * 1000:.0f} ms);"
                        f" sent again in flight: {median['again_seconds'] * 1000:.0f} ms"
                    )


if __name__ == "__main__":
    asyncio.run(main())
