import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
from fastapi import FastAPI
from sqlalchemy import func, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import NOTES_CREATED
from notes_api.app import create_app
from notes_api.auth import create_key
from notes_api.idempotency import purge_expired
from notes_api.settings import NotesApiSettings
from servicekit import setup_telemetry
from servicekit.testing import eventually

from .conftest import count, create_note, outbox


async def test_same_key_and_body_replays_the_first_response_with_one_note_and_one_event(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    headers = {**alice, "Idempotency-Key": "create-1"}
    body = {"title": "once", "tags": ["a"]}
    first = await client.post("/v1/notes", json=body, headers=headers)
    again = await client.post("/v1/notes", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert await count(engine, "notes") == 1
    assert len(await outbox(engine, NOTES_CREATED)) == 1


async def test_same_key_with_a_different_body_is_422(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    headers = {**alice, "Idempotency-Key": "k"}
    assert (await client.post("/v1/notes", json={"title": "a"}, headers=headers)).status_code == 201
    other = await client.post("/v1/notes", json={"title": "b"}, headers=headers)
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert await count(engine, "notes") == 1


async def test_a_retry_while_the_first_is_in_flight_is_409(
    client: httpx.AsyncClient, alice: dict[str, str], app: FastAPI, engine: AsyncEngine
) -> None:
    from notes_api.idempotency import Claim, fingerprint
    from notes_api.models import NoteCreate

    request_hash = fingerprint("POST", "/v1/notes", NoteCreate(title="slow"))
    claim = Claim("alice", "POST /v1/notes", "busy", uuid4())
    claimed = await app.state.idempotency._claim(claim, request_hash)
    assert claimed is None  # the first request holds the key and has not finished
    headers = {**alice, "Idempotency-Key": "busy"}
    retry = await client.post("/v1/notes", json={"title": "slow"}, headers=headers)
    assert retry.status_code == 409
    assert "retry-after" in retry.headers
    assert await count(engine, "notes") == 0


async def test_keys_are_scoped_per_owner_and_route(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str], engine: AsyncEngine
) -> None:
    body = {"title": "same"}
    for headers in (alice, bob):
        response = await client.post(
            "/v1/notes", json=body, headers={**headers, "Idempotency-Key": "k"}
        )
        assert response.status_code == 201
        assert "idempotent-replayed" not in response.headers
    note = (await client.get("/v1/notes", headers=alice)).json()["items"][0]
    archive = await client.post(
        f"/v1/notes/{note['id']}/archive", headers={**alice, "Idempotency-Key": "k"}
    )
    assert archive.status_code == 202
    assert await count(engine, "notes") == 2


async def test_records_are_kept_for_at_least_24_hours_and_purged_after_expiry(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    await client.post("/v1/notes", json={"title": "a"}, headers={**alice, "Idempotency-Key": "old"})
    await client.post("/v1/notes", json={"title": "b"}, headers={**alice, "Idempotency-Key": "new"})
    async with engine.begin() as connection:
        ttl = (
            await connection.execute(
                text("SELECT min(expires_at - created_at) FROM notes.idempotency_keys")
            )
        ).scalar_one()
        assert ttl >= timedelta(hours=24)
        await connection.execute(text(
            "UPDATE notes.idempotency_keys SET created_at = now() - interval '25 hours', "
            "expires_at = now() - interval '1 hour' WHERE key = 'old'"))  # fmt: skip
    async with engine.begin() as connection:
        purged = await purge_expired(connection, datetime.now(UTC) - timedelta(hours=24))
    assert purged == 1
    replay = await client.post(
        "/v1/notes", json={"title": "b"}, headers={**alice, "Idempotency-Key": "new"}
    )
    assert replay.headers["idempotent-replayed"] == "true"


async def test_a_failed_request_releases_its_key_for_the_retry(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice)
    headers = {**alice, "Idempotency-Key": "del", "If-Match": '"9"'}
    url = f"/v1/notes/{note['id']}/archive"
    missing = await client.post(url.replace(note["id"], "00000000-0000-0000-0000-000000000000"),
                                headers={**alice, "Idempotency-Key": "x"})  # fmt: skip
    assert missing.status_code == 404
    assert await count(engine, "idempotency_keys") == 0
    assert (await client.post(url, headers=headers)).status_code == 202


async def _waiting_on_outbox(engine: AsyncEngine, sessions: int) -> bool:
    """Whether ``sessions`` sessions of this database wait for a lock on `notes.outbox`."""
    async with engine.connect() as connection:
        waiting = await connection.execute(text(
            "SELECT count(*) FROM pg_locks WHERE NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND relation = 'notes.outbox'::regclass"))  # fmt: skip
        return int(waiting.scalar_one()) == sessions


async def _claim_is_older_than(engine: AsyncEngine, key: str, lock: timedelta) -> bool:
    async with engine.connect() as connection:
        stale = await connection.execute(
            text(
                "SELECT locked_at < now() - CAST(:lock AS interval)"
                " FROM notes.idempotency_keys WHERE key = :key"
            ),
            {"lock": lock, "key": key},
        )
        return bool(stale.scalar_one_or_none())


async def test_a_request_whose_key_was_taken_over_rolls_back_and_only_the_retry_commits(
    settings: NotesApiSettings, engine_direct: AsyncEngine
) -> None:
    """Two live requests with one key: the slow first one loses its claim to a retry.

    The first is held inside its transaction (its outbox insert waits for a table lock the test
    holds) past IDEMPOTENCY_LOCK_SECONDS, so the retry takes the key over and runs too. Only the
    retry may commit: the first must roll back and answer 409, else there are two notes.
    """
    lock = timedelta(seconds=0.3)
    settings = settings.model_copy(update={"idempotency_lock_seconds": lock.total_seconds()})
    application = create_app(settings, setup_telemetry(settings))
    async with application.router.lifespan_context(application):
        _, api_key = await create_key(application.state.engine, "alice")
        headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": "slow"}
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://notes.test") as client:
            async with engine_direct.begin() as blocker:
                await blocker.execute(text("LOCK TABLE notes.outbox IN EXCLUSIVE MODE"))
                post = client.post("/v1/notes", json={"title": "once"}, headers=headers)
                first = asyncio.create_task(post)
                await eventually(lambda: _waiting_on_outbox(engine_direct, 1))
                await eventually(lambda: _claim_is_older_than(engine_direct, "slow", lock))
                post = client.post("/v1/notes", json={"title": "once"}, headers=headers)
                retry = asyncio.create_task(post)
                await eventually(lambda: _waiting_on_outbox(engine_direct, 2))
            first_response, retry_response = await asyncio.gather(first, retry)
            replay = await client.post("/v1/notes", json={"title": "once"}, headers=headers)

    assert retry_response.status_code == 201, retry_response.text
    assert first_response.status_code == 409, first_response.text
    assert first_response.headers["content-type"] == "application/problem+json"
    assert await count(engine_direct, "notes") == 1
    assert len(await outbox(engine_direct, NOTES_CREATED)) == 1
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == retry_response.json()


async def test_a_superseded_request_that_fails_leaves_the_retrys_claim_in_place(
    client: httpx.AsyncClient, alice: dict[str, str], app: FastAPI, engine: AsyncEngine
) -> None:
    from notes_api.idempotency import Claim, fingerprint
    from notes_api.models import NoteCreate

    store = app.state.idempotency
    request_hash = fingerprint("POST", "/v1/notes", NoteCreate(title="slow"))
    first = Claim("alice", "POST /v1/notes", "k", uuid4())
    assert await store._claim(first, request_hash) is None
    async with engine.begin() as connection:
        await connection.execute(text(
            "UPDATE notes.idempotency_keys SET locked_at = now() - interval '1 hour'"))  # fmt: skip
    retry = Claim("alice", "POST /v1/notes", "k", uuid4())
    assert await store._claim(retry, request_hash) is None  # taken over
    await store._release(first)  # the first request fails after the takeover
    headers = {**alice, "Idempotency-Key": "k"}
    third = await client.post("/v1/notes", json={"title": "slow"}, headers=headers)
    assert third.status_code == 409  # the retry still holds the key
    assert await count(engine, "idempotency_keys") == 1


async def test_a_retry_that_spells_out_the_defaults_or_reorders_the_body_is_the_same_request(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    headers = {**alice, "Idempotency-Key": "defaults", "Content-Type": "application/json"}
    first = await client.post("/v1/notes", content=b'{"title":"one"}', headers=headers)
    assert first.status_code == 201
    for spelled_out in (
        b'{"title":"one","body":""}',
        b'{"title": "one", "tags": [], "body": ""}',
        b'{ "body" : "" ,\n "title" : "one" }',
    ):
        again = await client.post("/v1/notes", content=spelled_out, headers=headers)
        assert again.status_code == 201, (spelled_out, again.text)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
    different = await client.post("/v1/notes", json={"title": "one", "body": "x"}, headers=headers)
    assert different.status_code == 422
    assert await count(engine, "notes") == 1


async def test_a_record_stored_with_the_earlier_fingerprint_still_replays(
    client: httpx.AsyncClient, alice: dict[str, str], app: FastAPI, engine: AsyncEngine
) -> None:
    from notes_api.idempotency import legacy_fingerprint
    from notes_api.models import IdempotencyRecord, NoteCreate

    # A record written before the fingerprint covered defaults (set fields only).
    payload = NoteCreate.model_validate({"title": "old"})
    async with engine.begin() as connection:
        await connection.execute(
            insert(IdempotencyRecord).values(
                owner_id="alice", route="POST /v1/notes", key="old",
                fingerprint=legacy_fingerprint("POST", "/v1/notes", payload),
                created_at=func.now(), expires_at=func.now() + timedelta(days=1),
                status_code=201, response_body={"stored": True}, response_headers={},
            )
        )  # fmt: skip
    headers = {**alice, "Idempotency-Key": "old"}
    replay = await client.post("/v1/notes", json={"title": "old"}, headers=headers)
    assert replay.status_code == 201
    assert replay.json() == {"stored": True}
    assert await count(engine, "notes") == 0
