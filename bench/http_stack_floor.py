"""The stack floor of the HTTP benchmark: the chosen packages' least cost for one INSERT.

FastAPI with a pydantic request and response model, and SQLAlchemy Core on the asyncpg driver
(a SQLModel table class, one transaction, one INSERT), as notes-api writes a note: no auth, no
outbox, no middleware, no telemetry. Between the bare baseline (`bench.http_baseline`, asyncpg
alone) and notes-api, it shows how much of notes-api's cost per request is the stack itself:

    python -m uvicorn bench.http_stack_floor:app --port 8100
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from pydantic import BaseModel
from sqlalchemy import JSON, Column
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import Field, SQLModel, insert

from servicekit.settings import asyncpg_url


class FloorItem(SQLModel, table=True):
    __tablename__ = "bench_floor_items"

    id: uuid.UUID = Field(primary_key=True)
    title: str
    body: str
    tags: list[str] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime


class ItemIn(BaseModel):
    title: str
    body: str = ""
    tags: list[str] = []


class ItemOut(ItemIn):
    id: uuid.UUID
    created_at: datetime


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_async_engine(asyncpg_url(os.environ["DATABASE_URL"]), pool_size=10)
    async with engine.begin() as connection:
        await connection.run_sync(SQLModel.metadata.create_all)
    app.state.engine = engine
    try:
        yield
    finally:
        await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.post("/items", status_code=201)
async def create_item(item: ItemIn, request: Request) -> ItemOut:
    created = ItemOut(id=uuid.uuid4(), created_at=datetime.now(UTC), **item.model_dump())
    async with request.app.state.engine.begin() as connection:
        await connection.execute(insert(FloorItem).values(**created.model_dump()))
    return created
