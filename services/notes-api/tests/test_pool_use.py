"""How requests use the connection pool: one connection at a time, and no connection churn.

A request that holds one pooled connection while it waits for a second starves the pool under
a burst: with every connection held by a request waiting for another, all of them wait until the
pool timeout (503s for seconds, issue 12's tail). And a pool that opens overflow connections in a
burst and closes them as they return pays tens of milliseconds per opening, in the burst.
"""

import asyncio

import httpx
from fastapi import FastAPI
from sqlalchemy import event

from notes_api.settings import NotesApiSettings


def _track_checked_out(app: FastAPI) -> list[int]:
    """The pool's checked-out count at every checkout, from now on."""
    engine = app.state.engine.sync_engine
    seen: list[int] = []
    event.listen(engine, "checkout", lambda *_: seen.append(engine.pool.checkedout()))
    return seen


async def test_each_request_holds_at_most_one_connection_at_a_time(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    seen = _track_checked_out(app)
    created = await client.post("/v1/notes", json={"title": "one"}, headers=alice)
    assert created.status_code == 201
    read = await client.get(f"/v1/notes/{created.json()['id']}", headers=alice)
    assert read.status_code == 200
    listed = await client.get("/v1/notes", headers=alice)
    assert listed.status_code == 200
    assert seen, "no checkout was seen"
    assert max(seen) == 1, seen


async def test_a_burst_wider_than_the_pool_waits_for_connections_instead_of_opening_more(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str], settings: NotesApiSettings
) -> None:
    engine = app.state.engine.sync_engine
    opened: list[object] = []
    closed: list[object] = []
    event.listen(engine, "connect", lambda *_: opened.append(None))
    event.listen(engine, "close", lambda *_: closed.append(None))
    burst = 3 * settings.database_pool_size
    replies = await asyncio.gather(
        *(client.post("/v1/notes", json={"title": f"n{i}"}, headers=alice) for i in range(burst))
    )
    assert [r.status_code for r in replies] == [201] * burst
    assert len(opened) <= settings.database_pool_size
    assert closed == []  # what was opened stays open for the next burst
