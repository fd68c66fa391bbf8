"""The bare baseline of the HTTP benchmark: FastAPI + an asyncpg pool, one INSERT per request.

No auth, no ORM, no outbox, no middleware, no telemetry: what notes-api's `POST /v1/notes`
costs at the least on this stack. Served by uvicorn in a subprocess (``DATABASE_URL``):

    python -m uvicorn bench.http_baseline:app --port 8100
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=2, max_size=10)
    async with pool.acquire() as connection:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS bench_items "
            "(id uuid PRIMARY KEY, body jsonb NOT NULL, created_at timestamptz NOT NULL)"
        )
    app.state.pool = pool
    try:
        yield
    finally:
        await pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/items", status_code=201)
async def create_item(request: Request) -> JSONResponse:
    body: Any = await request.json()
    item_id = uuid.uuid4()
    async with request.app.state.pool.acquire() as connection:
        await connection.execute(
            "INSERT INTO bench_items (id, body, created_at) VALUES ($1, $2::jsonb, now())",
            item_id,
            json.dumps(body),
        )
    return JSONResponse({"id": str(item_id)}, status_code=201)
